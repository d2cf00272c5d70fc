//! The history's tool and submitter indexes move from `jobs` to `job_keys`, a table written once
//! per job and never updated.
//!
//! A job's status changes are not HOT updates (status is indexed), so each one writes a new entry
//! to every index of `jobs`, even to an index whose key did not change, and then PostgreSQL
//! tries to clean the index's duplicates up. A run changes its job's status twice (claimed,
//! completed): with `(workspace_id, tool, id)` and `(workspace_id, submitter_id, id)` on `jobs`,
//! that was four index entries per run for keys that never change. On `job_keys` they are
//! written once, when the job is submitted. The history reads the jobs of a tool or of a
//! submitter through them (`jobs::history`); deleting a job deletes its keys
//! (`jobs::lifecycle::delete_records`).
#![expect(
    elided_lifetimes_in_paths,
    reason = "MigrationTrait elides the lifetime of SchemaManager in its signatures"
)]

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::{string, uuid};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum JobKeys {
    Table,
    JobId,
    WorkspaceId,
    Tool,
    SubmitterId,
}

/// The same statements on SQLite and PostgreSQL, after the table is created.
const UP: &[&str] = &[
    "INSERT INTO job_keys (job_id, workspace_id, tool, submitter_id) \
     SELECT id, workspace_id, tool, submitter_id FROM jobs",
    "CREATE INDEX idx_job_keys_tool ON job_keys (workspace_id, tool, job_id)",
    "CREATE INDEX idx_job_keys_submitter ON job_keys (workspace_id, submitter_id, job_id)",
    "DROP INDEX idx_jobs_workspace_tool",
    "DROP INDEX idx_jobs_workspace_submitter",
];

const DOWN: &[&str] = &[
    "CREATE INDEX idx_jobs_workspace_tool ON jobs (workspace_id, tool, id)",
    "CREATE INDEX idx_jobs_workspace_submitter ON jobs (workspace_id, submitter_id, id)",
    "DROP TABLE job_keys",
];

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    fn use_transaction(&self) -> Option<bool> {
        Some(true)
    }

    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(JobKeys::Table)
                    .col(uuid(JobKeys::JobId).primary_key())
                    .col(uuid(JobKeys::WorkspaceId))
                    .col(string(JobKeys::Tool))
                    .col(uuid(JobKeys::SubmitterId))
                    .to_owned(),
            )
            .await?;
        crate::run_statements(manager, UP).await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        crate::run_statements(manager, DOWN).await
    }
}
