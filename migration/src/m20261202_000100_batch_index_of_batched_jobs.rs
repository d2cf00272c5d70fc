//! The batch index holds only the jobs that belong to a batch.
//!
//! Every change of a job's status writes a new entry to each index whose condition the new row
//! meets (status is indexed, so these are not HOT updates). The batch index held every job, most
//! of them under an empty batch: a claim and a completion each added an entry for nothing. A
//! lookup by batch (`batch_id = $1`) implies `batch_id IS NOT NULL`, so both databases still
//! answer it from this index, and deleting a batch still finds its jobs through it.
#![expect(
    elided_lifetimes_in_paths,
    reason = "MigrationTrait elides the lifetime of SchemaManager in its signatures"
)]

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

/// The same statements on SQLite and PostgreSQL.
const UP: &[&str] = &[
    "DROP INDEX idx_jobs_batch",
    "CREATE INDEX idx_jobs_batch ON jobs (batch_id, id) WHERE batch_id IS NOT NULL",
];

const DOWN: &[&str] = &[
    "DROP INDEX idx_jobs_batch",
    "CREATE INDEX idx_jobs_batch ON jobs (batch_id, id)",
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
