//! A job: one run of a tool in a workspace, with everything it recorded.

use sea_orm::QueryOrder as _;
use sea_orm::entity::prelude::*;

use crate::ids::*;

/// Where a job stands. The allowed transitions are decided in `jobgraph::jobs::state`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, EnumIter, DeriveActiveEnum)]
#[sea_orm(rs_type = "String", db_type = "String(StringLen::N(16))")]
pub enum JobStatus {
    #[sea_orm(string_value = "PENDING")]
    Pending,
    #[sea_orm(string_value = "QUEUED")]
    Queued,
    #[sea_orm(string_value = "PROCESSING")]
    Processing,
    #[sea_orm(string_value = "COMPLETED")]
    Completed,
    #[sea_orm(string_value = "FAILED")]
    Failed,
    #[sea_orm(string_value = "TIMEOUT")]
    Timeout,
    #[sea_orm(string_value = "CANCELLED")]
    Cancelled,
    #[sea_orm(string_value = "RETRY")]
    Retry,
}

/// Who may see a job besides the members of its workspace.
#[derive(Debug, Clone, Copy, PartialEq, Eq, EnumIter, DeriveActiveEnum)]
#[sea_orm(rs_type = "String", db_type = "String(StringLen::N(16))")]
pub enum Visibility {
    #[sea_orm(string_value = "PRIVATE")]
    Private,
    #[sea_orm(string_value = "PUBLIC")]
    Public,
    #[sea_orm(string_value = "LOGGED_IN")]
    LoggedIn,
    #[sea_orm(string_value = "INVITED")]
    Invited,
}

/// How a job came from another one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, EnumIter, DeriveActiveEnum)]
#[sea_orm(rs_type = "String", db_type = "String(StringLen::N(16))")]
pub enum ParentKind {
    #[sea_orm(string_value = "RETRY")]
    Retry,
    #[sea_orm(string_value = "DUPLICATE")]
    Duplicate,
}

#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "jobs")]
pub struct Model {
    /// A UUIDv7: ordering by id is ordering by creation time.
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: JobId,
    pub workspace_id: WorkspaceId,
    pub submitter_id: UserId,
    pub tool: String,
    pub tool_version: String,
    pub name: String,
    pub status: JobStatus,
    pub stage: Option<String>,
    /// From 0 to 1.
    pub progress: f64,
    pub inputs: Json,
    pub settings: Json,
    pub result: Option<Json>,
    pub error_message: Option<String>,
    pub error_code: Option<String>,
    pub attempt: i32,
    pub max_attempts: i32,
    pub credit_cost: i64,
    pub refunded: bool,
    pub visibility: Visibility,
    pub priority: i32,
    pub parent_id: Option<JobId>,
    pub parent_kind: Option<ParentKind>,
    pub batch_id: Option<BatchId>,
    pub idempotency_key: Option<String>,
    /// With an idempotency key: the SHA-256 (hex) of the request's canonical form, so that the
    /// key sent again with a different request is refused.
    pub request_fingerprint: Option<String>,
    /// Wall time, CPU and memory used by the run.
    pub resources: Option<Json>,
    pub created_at: DateTimeUtc,
    pub updated_at: DateTimeUtc,
    pub queued_at: Option<DateTimeUtc>,
    pub started_at: Option<DateTimeUtc>,
    pub finished_at: Option<DateTimeUtc>,
    /// A job in RETRY is not claimed before this time.
    pub run_after: Option<DateTimeUtc>,
    pub worker_id: Option<String>,
    pub lease_expires_at: Option<DateTimeUtc>,
    pub heartbeat_at: Option<DateTimeUtc>,
    /// The W3C `traceparent` of the request that submitted the job, when traces are exported:
    /// its runs continue that trace.
    pub trace_parent: Option<String>,
    /// The SHA-256 (hex) of what the job computes: its tool and tool version, settings and
    /// inputs by content (`jobgraph::jobs::reuse::key`). NULL while a URL input is not fetched.
    pub reuse_key: Option<String>,
    /// The earlier job whose results this one reused instead of running.
    pub reused_from: Option<JobId>,
    /// The workflow whose step this job runs, and the step's name.
    pub workflow_id: Option<WorkflowId>,
    pub workflow_step: Option<String>,
    /// A mapped step's job: its item's place in the step's list, from 0.
    pub workflow_item: Option<i32>,
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

impl JobStatus {
    /// Final statuses: nothing happens to the job after them.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            JobStatus::Completed | JobStatus::Failed | JobStatus::Timeout | JobStatus::Cancelled
        )
    }

    /// Every status that is not final.
    pub const ACTIVE: [JobStatus; 4] = [
        JobStatus::Pending,
        JobStatus::Queued,
        JobStatus::Processing,
        JobStatus::Retry,
    ];
}

impl Entity {
    /// The jobs of one workspace.
    pub fn find_in_workspace(workspace_id: WorkspaceId) -> Select<Entity> {
        Self::find().filter(Column::WorkspaceId.eq(workspace_id))
    }

    /// The jobs of a mapped workflow step, one per item, in item order.
    pub fn find_items_of(workflow_id: WorkflowId, step: &str) -> Select<Entity> {
        Self::find()
            .filter(Column::WorkflowId.eq(workflow_id))
            .filter(Column::WorkflowStep.eq(step))
            .filter(Column::WorkflowItem.is_not_null())
            .order_by_asc(Column::WorkflowItem)
    }
}
