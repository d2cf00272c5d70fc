//! A step of a workflow: one tool run, waiting for its upstream steps until its job is written.

use sea_orm::entity::prelude::*;

use crate::ids::*;

/// Where a step stands. Decided in `jobgraph::workflows`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, EnumIter, DeriveActiveEnum)]
#[sea_orm(rs_type = "String", db_type = "String(StringLen::N(16))")]
pub enum StepStatus {
    /// Its upstream steps have not all completed; it has no job yet.
    #[sea_orm(string_value = "WAITING")]
    Waiting,
    /// Its job was written: queued, running or retrying.
    #[sea_orm(string_value = "RUNNING")]
    Running,
    #[sea_orm(string_value = "COMPLETED")]
    Completed,
    /// Its job failed or timed out, after its retries.
    #[sea_orm(string_value = "FAILED")]
    Failed,
    /// Its job was cancelled, or the workflow was before the step started.
    #[sea_orm(string_value = "CANCELLED")]
    Cancelled,
    /// It never ran: a step it needed did not complete. Never charged.
    #[sea_orm(string_value = "SKIPPED")]
    Skipped,
}

impl StepStatus {
    /// Whether the step has ended.
    pub fn is_final(self) -> bool {
        !matches!(self, StepStatus::Waiting | StepStatus::Running)
    }
}

#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "workflow_steps")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub workflow_id: WorkflowId,
    #[sea_orm(primary_key, auto_increment = false)]
    pub name: String,
    /// Its place in the definition.
    pub position: i32,
    pub tool: String,
    pub status: StepStatus,
    /// The names of the steps it waits for, as a JSON array.
    pub depends_on: Json,
    /// How many of the steps it waits for have not completed: it is ready at 0.
    pub waiting_on: i32,
    /// Its price as far as known at submission.
    pub estimate: i64,
    /// False when its price depends on outputs of upstream steps.
    pub estimate_known: bool,
    /// Its job, once written.
    pub job_id: Option<JobId>,
    /// Why it was skipped, cancelled or refused.
    pub reason: Option<String>,
    pub updated_at: DateTimeUtc,
    /// A mapped step, once started: how many items it runs over, one job each.
    pub items: Option<i32>,
    /// A mapped step: how many of its items' jobs have not ended.
    pub items_left: i32,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
