//! A workflow: jobs of a workspace connected as a graph of named steps, charged against one
//! reservation of the workspace's credits.

use sea_orm::entity::prelude::*;

use crate::ids::*;
use crate::job::Visibility;

/// Where a workflow stands, from its steps. Decided in `jobgraph::workflows`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, EnumIter, DeriveActiveEnum)]
#[sea_orm(rs_type = "String", db_type = "String(StringLen::N(16))")]
pub enum WorkflowStatus {
    /// Some step has not ended.
    #[sea_orm(string_value = "RUNNING")]
    Running,
    /// Every step completed.
    #[sea_orm(string_value = "COMPLETED")]
    Completed,
    /// A step failed (or timed out); the steps that needed it did not run.
    #[sea_orm(string_value = "FAILED")]
    Failed,
    /// Cancelled by a user before every step ended.
    #[sea_orm(string_value = "CANCELLED")]
    Cancelled,
}

/// How a workflow came from another one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, EnumIter, DeriveActiveEnum)]
#[sea_orm(rs_type = "String", db_type = "String(StringLen::N(16))")]
pub enum WorkflowParentKind {
    #[sea_orm(string_value = "RETRY")]
    Retry,
    #[sea_orm(string_value = "DUPLICATE")]
    Duplicate,
}

#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "workflows")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: WorkflowId,
    pub workspace_id: WorkspaceId,
    pub submitter_id: UserId,
    pub name: String,
    /// The tools file's workflow it was made from; none for one defined with its submission.
    pub template: Option<String>,
    /// The checked definition: steps, their tools, settings, bindings and dependencies.
    pub definition: Json,
    /// The parameters as given, with their defaults filled in.
    pub parameters: Json,
    /// The workflow's inputs as stored (name to stored input).
    pub inputs: Json,
    pub status: WorkflowStatus,
    /// Stop every step at the first failure, instead of only the steps that needed it.
    pub fail_fast: bool,
    pub max_credits: Option<i64>,
    /// The price of the steps whose price was known at submission.
    pub credits_estimated: i64,
    /// What is left of the reservation: steps are charged against it, the rest is given back
    /// when the workflow ends.
    pub credits_reserved: i64,
    /// The charges of its steps.
    pub credits_charged: i64,
    /// The refunds of its steps.
    pub credits_refunded: i64,
    /// How many of its steps have not ended.
    pub steps_left: i32,
    pub visibility: Visibility,
    pub idempotency_key: Option<String>,
    pub request_fingerprint: Option<String>,
    pub parent_id: Option<WorkflowId>,
    pub parent_kind: Option<WorkflowParentKind>,
    /// Why it failed, when it did.
    pub error_message: Option<String>,
    pub created_at: DateTimeUtc,
    pub updated_at: DateTimeUtc,
    pub finished_at: Option<DateTimeUtc>,
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
