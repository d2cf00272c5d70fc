//! A batch: jobs submitted together.

use sea_orm::entity::prelude::*;

use crate::ids::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "batches")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: BatchId,
    pub workspace_id: WorkspaceId,
    pub submitter_id: UserId,
    pub name: Option<String>,
    /// Unique in its workspace: the same key sent again returns this batch.
    pub idempotency_key: Option<String>,
    /// With an idempotency key: the SHA-256 (hex) of the request's canonical form.
    pub request_fingerprint: Option<String>,
    pub created_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}

impl Entity {
    /// The batches of one workspace.
    pub fn find_in_workspace(workspace_id: WorkspaceId) -> Select<Entity> {
        Self::find().filter(Column::WorkspaceId.eq(workspace_id))
    }
}
