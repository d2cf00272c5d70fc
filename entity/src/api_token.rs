//! An API token: a hashed bearer secret that authenticates its user.

use sea_orm::entity::prelude::*;

use crate::ids::*;

/// What a token may be used for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, EnumIter, DeriveActiveEnum)]
#[sea_orm(rs_type = "String", db_type = "String(StringLen::N(16))")]
pub enum TokenKind {
    /// Acts as its user in the whole API.
    #[sea_orm(string_value = "USER")]
    User,
    /// A remote worker's token: claims and reports jobs of the tools it serves.
    #[sea_orm(string_value = "WORKER")]
    Worker,
}

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "api_tokens")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: TokenId,
    pub user_id: UserId,
    pub name: String,
    pub kind: TokenKind,
    /// The first characters of the secret, shown in listings to tell tokens apart.
    pub display_prefix: String,
    /// SHA-256 of the secret, hex encoded; unique.
    pub secret_hash: String,
    pub created_at: DateTimeUtc,
    pub last_used_at: Option<DateTimeUtc>,
    pub expires_at: Option<DateTimeUtc>,
    pub revoked_at: Option<DateTimeUtc>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {
    #[sea_orm(
        belongs_to = "super::user::Entity",
        from = "Column::UserId",
        to = "super::user::Column::Id",
        on_delete = "Cascade"
    )]
    User,
}

impl Related<super::user::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::User.def()
    }
}

impl ActiveModelBehavior for ActiveModel {}

impl Model {
    /// Whether the token still authenticates at `now`: neither revoked nor expired.
    pub fn is_active(&self, now: DateTimeUtc) -> bool {
        self.revoked_at.is_none() && self.expires_at.is_none_or(|at| at > now)
    }
}

impl Entity {
    /// The tokens of one user.
    pub fn find_of_user(user_id: UserId) -> Select<Entity> {
        Self::find().filter(Column::UserId.eq(user_id))
    }
}
