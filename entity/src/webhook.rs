//! A webhook endpoint of a workspace: where events are sent, which, and how it fares.

use sea_orm::QueryOrder;
use sea_orm::entity::prelude::*;

use crate::ids::*;

#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "webhooks")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: WebhookId,
    pub workspace_id: WorkspaceId,
    pub url: String,
    pub description: String,
    /// The event types sent, as a JSON array of names.
    pub events: Json,
    /// Which jobs' events are sent: `{tools, statuses, submitterId}`, each optional.
    pub filter: Json,
    /// `whsec_` and the base64 of the signing key; kept to sign, never shown again.
    pub secret: SigningSecret,
    /// The secret before the last rotation: it signs too until `previous_secret_until`, so
    /// that receivers can change their secret without refusing a delivery.
    pub previous_secret: Option<SigningSecret>,
    pub previous_secret_until: Option<DateTimeUtc>,
    pub enabled: bool,
    pub disabled_reason: Option<String>,
    pub disabled_at: Option<DateTimeUtc>,
    /// Failed attempts since the last success.
    pub failure_count: i32,
    /// The last live log `seq` turned into deliveries.
    pub live_cursor: i64,
    pub created_by: Option<UserId>,
    pub created_at: DateTimeUtc,
    pub updated_at: DateTimeUtc,
}

/// An endpoint's signing secret. Its `Debug` hides it, so that no log of a row or a change
/// (the model's, the active model's) ever prints it.
#[derive(Clone, PartialEq, Eq, DeriveValueType)]
pub struct SigningSecret(pub String);

impl std::fmt::Debug for SigningSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SigningSecret(..)")
    }
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {
    #[sea_orm(
        belongs_to = "super::workspace::Entity",
        from = "Column::WorkspaceId",
        to = "super::workspace::Column::Id",
        on_delete = "Cascade"
    )]
    Workspace,
}

impl Related<super::workspace::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::Workspace.def()
    }
}

impl ActiveModelBehavior for ActiveModel {}

impl Entity {
    /// The endpoints of one workspace, oldest first.
    pub fn find_in_workspace(workspace_id: WorkspaceId) -> Select<Entity> {
        Self::find()
            .filter(Column::WorkspaceId.eq(workspace_id))
            .order_by_asc(Column::Id)
    }
}

#[cfg(test)]
mod tests {
    use sea_orm::Set;

    use super::*;

    #[test]
    fn a_secret_never_shows_in_debug_output() {
        let secret = SigningSecret("whsec_c2VjcmV0LXNpZ25pbmcta2V5LWJ5dGVz".to_owned());
        let change = ActiveModel {
            secret: Set(secret.clone()),
            ..Default::default()
        };
        for text in [format!("{secret:?}"), format!("{change:?}")] {
            assert!(!text.contains("whsec_"), "{text}");
            assert!(text.contains("SigningSecret(..)"), "{text}");
        }
    }
}
