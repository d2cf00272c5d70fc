//! A person or integration known to jobgraph.

use sea_orm::entity::prelude::*;

use crate::ids::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "users")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: UserId,
    /// Lower-cased; unique.
    pub email: String,
    pub display_name: String,
    pub is_platform_admin: bool,
    /// Created by an invitation and not yet active: holds memberships but no tokens yet.
    pub is_pending: bool,
    pub created_at: DateTimeUtc,
    /// The `sub` of the identity provider's tokens that sign this user in, when users are
    /// named by it; unique.
    pub subject: Option<String>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {
    #[sea_orm(has_many = "super::membership::Entity")]
    Membership,
    #[sea_orm(has_many = "super::api_token::Entity")]
    ApiToken,
}

impl Related<super::membership::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::Membership.def()
    }
}

impl ActiveModelBehavior for ActiveModel {}

impl Entity {
    /// Finds a user by e-mail address, compared case-insensitively.
    pub fn find_by_email(email: &str) -> Select<Entity> {
        Self::find().filter(Column::Email.eq(email.trim().to_lowercase()))
    }
}
