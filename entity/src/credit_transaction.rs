//! One entry of a workspace's append-only credit ledger.

use sea_orm::entity::prelude::*;

use crate::ids::*;

#[derive(Debug, Clone, Copy, PartialEq, Eq, EnumIter, DeriveActiveEnum)]
#[sea_orm(rs_type = "String", db_type = "String(StringLen::N(16))")]
pub enum TransactionKind {
    /// Credits given to the workspace.
    #[sea_orm(string_value = "GRANT")]
    Grant,
    /// The price of a job, taken at submission.
    #[sea_orm(string_value = "CHARGE")]
    Charge,
    /// A job's charge given back after it failed, timed out or was cancelled before running.
    #[sea_orm(string_value = "REFUND")]
    Refund,
    /// A correction by a platform administrator, of either sign.
    #[sea_orm(string_value = "ADJUSTMENT")]
    Adjustment,
}

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "credit_transactions")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: TransactionId,
    pub workspace_id: WorkspaceId,
    pub kind: TransactionKind,
    /// Signed: positive adds credits, negative takes them.
    pub amount: i64,
    pub balance_after: i64,
    pub actor_id: Option<UserId>,
    /// The job charged or refunded. Not a foreign key: the entry outlives a deleted job.
    pub job_id: Option<JobId>,
    pub note: Option<String>,
    pub created_at: DateTimeUtc,
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

impl ActiveModelBehavior for ActiveModel {}

impl Entity {
    /// The ledger of one workspace.
    pub fn find_in_workspace(workspace_id: WorkspaceId) -> Select<Entity> {
        Self::find().filter(Column::WorkspaceId.eq(workspace_id))
    }
}
