//! One entry of a job's timeline: a change of status or stage, with its time.

use sea_orm::entity::prelude::*;

use crate::ids::*;

use crate::job::JobStatus;

#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "job_events")]
pub struct Model {
    /// A UUIDv7: ordering by id is ordering by time, also across a workspace.
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub job_id: JobId,
    pub workspace_id: WorkspaceId,
    pub status: JobStatus,
    pub stage: Option<String>,
    pub message: Option<String>,
    pub progress: f64,
    pub attempt: i32,
    pub created_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {
    #[sea_orm(
        belongs_to = "super::job::Entity",
        from = "Column::JobId",
        to = "super::job::Column::Id",
        on_delete = "Cascade"
    )]
    Job,
}

impl ActiveModelBehavior for ActiveModel {}

impl Entity {
    /// The timeline of one job.
    pub fn find_of_job(job_id: JobId) -> Select<Entity> {
        Self::find().filter(Column::JobId.eq(job_id))
    }
}
