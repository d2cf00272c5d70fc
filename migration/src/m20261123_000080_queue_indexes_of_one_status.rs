//! The queue's indexes hold only the jobs of the status they serve.
//!
//! A job's status changes cannot be HOT updates (status is indexed), so every change adds an entry
//! to every index of `jobs` whose condition the new row meets. The claim index held every job
//! under its status, and the lease index every job too: a claim and a completion each added an
//! entry to both. Now the claim index holds the QUEUED jobs only, the lease index the PROCESSING
//! ones, and a new index the RETRY ones by the time they come back; a run adds one entry to them
//! (to the lease index, when it is claimed) instead of four. Queries name the status in their
//! text (`queue::status_is`), which is what lets the planner use such an index.
#![expect(
    elided_lifetimes_in_paths,
    reason = "MigrationTrait elides the lifetime of SchemaManager in its signatures"
)]

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

/// The same statements on SQLite and PostgreSQL.
const UP: &[&str] = &[
    "DROP INDEX idx_jobs_claim",
    "CREATE INDEX idx_jobs_claim ON jobs (priority DESC, queued_at, id) WHERE status = 'QUEUED'",
    "DROP INDEX idx_jobs_lease",
    "CREATE INDEX idx_jobs_lease ON jobs (lease_expires_at) WHERE status = 'PROCESSING'",
    "CREATE INDEX idx_jobs_retry ON jobs (run_after) WHERE status = 'RETRY'",
];

const DOWN: &[&str] = &[
    "DROP INDEX idx_jobs_retry",
    "DROP INDEX idx_jobs_lease",
    "CREATE INDEX idx_jobs_lease ON jobs (status, lease_expires_at)",
    "DROP INDEX idx_jobs_claim",
    "CREATE INDEX idx_jobs_claim ON jobs (status, priority DESC, queued_at, id)",
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
