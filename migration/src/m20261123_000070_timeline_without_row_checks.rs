//! The timeline without a per-row foreign-key check on PostgreSQL.
//!
//! A running queue writes a timeline row for every change of every job, and PostgreSQL checks
//! each row's foreign key with a query of its own (a quarter of a no-op job's cost in the
//! queue benchmark). Timeline rows are only written by `jobs::lifecycle`, in the transaction
//! that changes their job (whose row it has just written and still holds), and deleting a job or
//! a workspace deletes its timeline rows explicitly (`jobs::service::delete`,
//! `workspaces::delete`), so the check guards nothing these writers do not already ensure.
//! SQLite keeps the constraint: its check is a cheap lookup there, and dropping a constraint
//! means rebuilding the table.
#![expect(
    elided_lifetimes_in_paths,
    reason = "MigrationTrait elides the lifetime of SchemaManager in its signatures"
)]

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    fn use_transaction(&self) -> Option<bool> {
        Some(true)
    }

    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        crate::run_on_postgres(
            manager,
            &["ALTER TABLE job_events DROP CONSTRAINT fk_job_events_job"],
        )
        .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        crate::run_on_postgres(
            manager,
            &["ALTER TABLE job_events ADD CONSTRAINT fk_job_events_job \
               FOREIGN KEY (job_id) REFERENCES jobs (id) ON DELETE CASCADE"],
        )
        .await
    }
}
