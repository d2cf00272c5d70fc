//! What the history filters a workspace's jobs by and what never changes: a job's tool and its
//! submitter. Written once with the job, never updated, so a job's changes of status add no
//! entries to the indexes that serve these filters.

use sea_orm::entity::prelude::*;

use crate::ids::*;

#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "job_keys")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub job_id: JobId,
    pub workspace_id: WorkspaceId,
    pub tool: String,
    pub submitter_id: UserId,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
