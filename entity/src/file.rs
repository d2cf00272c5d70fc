//! A stored file: a job's input or output.

use sea_orm::entity::prelude::*;

use crate::ids::*;

#[derive(Debug, Clone, Copy, PartialEq, Eq, EnumIter, DeriveActiveEnum)]
#[sea_orm(rs_type = "String", db_type = "String(StringLen::N(16))")]
pub enum FileRole {
    #[sea_orm(string_value = "INPUT")]
    Input,
    #[sea_orm(string_value = "OUTPUT")]
    Output,
}

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "files")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: FileId,
    pub workspace_id: WorkspaceId,
    pub job_id: Option<JobId>,
    pub role: FileRole,
    pub name: String,
    pub size: i64,
    pub content_type: String,
    pub sha256: String,
    /// Where the storage backend keeps the bytes.
    pub storage_key: String,
    /// FASTA content: its residues, where they were counted (for pricing what it feeds).
    pub residues: Option<i64>,
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
    /// The files of one job.
    pub fn find_of_job(job_id: JobId) -> Select<Entity> {
        Self::find().filter(Column::JobId.eq(job_id))
    }
}
