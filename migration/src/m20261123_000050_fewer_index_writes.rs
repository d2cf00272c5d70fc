//! Fewer index entries written per job change.
//!
//! A change of a job's status updates its row outside the page's HOT chain, so every index of
//! `jobs` gets a new entry, and a running queue changes every job several times. Indexes on
//! columns most jobs leave empty now hold only the jobs that have them: the lineage index
//! (retries and duplicates), the idempotency keys (still unique where given) and the finished
//! runs of a tool (a job enters it once, when it ends). The timeline's index by workspace had
//! no reader and is dropped.
#![expect(
    elided_lifetimes_in_paths,
    reason = "MigrationTrait elides the lifetime of SchemaManager in its signatures"
)]

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

/// The same statements on SQLite and PostgreSQL.
const UP: &[&str] = &[
    "DROP INDEX idx_jobs_parent",
    "CREATE INDEX idx_jobs_parent ON jobs (parent_id, id) WHERE parent_id IS NOT NULL",
    "DROP INDEX uq_jobs_workspace_idempotency_key",
    "CREATE UNIQUE INDEX uq_jobs_workspace_idempotency_key ON jobs (workspace_id, idempotency_key) \
     WHERE idempotency_key IS NOT NULL",
    "DROP INDEX idx_jobs_tool_finished",
    "CREATE INDEX idx_jobs_tool_finished ON jobs (tool, finished_at) WHERE finished_at IS NOT NULL",
    "DROP INDEX idx_job_events_workspace",
];

const DOWN: &[&str] = &[
    "DROP INDEX idx_jobs_parent",
    "CREATE INDEX idx_jobs_parent ON jobs (parent_id, id)",
    "DROP INDEX uq_jobs_workspace_idempotency_key",
    "CREATE UNIQUE INDEX uq_jobs_workspace_idempotency_key ON jobs (workspace_id, idempotency_key)",
    "DROP INDEX idx_jobs_tool_finished",
    "CREATE INDEX idx_jobs_tool_finished ON jobs (tool, finished_at)",
    "CREATE INDEX idx_job_events_workspace ON job_events (workspace_id, id)",
];

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    fn use_transaction(&self) -> Option<bool> {
        Some(true)
    }

    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        crate::run_statements(manager, UP).await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        crate::run_statements(manager, DOWN).await
    }
}
