//! A job keeps the key of what it computes, and the job whose results it reused.
//!
//! `reuse_key` is the SHA-256 (hex) of a job's content form: its tool and tool version, its
//! settings and its inputs by content (`jobs::reuse::key`). A job submitted with `reuse` looks
//! for the newest COMPLETED job of its workspace with the same key; the index holds the
//! COMPLETED jobs with a key only, so a job adds one entry to it, when it completes, and none
//! on its way there. Queries name the status in their text (`store::status_is`), which is what
//! lets the planner use such an index. `reused_from` names the job whose results a job reused
//! (no foreign key: the original may be deleted, its copy's outputs stay). Both NULL for the
//! jobs written before.
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
        crate::run_statements(manager, &["ALTER TABLE jobs ADD COLUMN reuse_key TEXT"]).await?;
        // A UUID column as each database spells it (SQLite adds one column per statement).
        manager
            .alter_table(
                Table::alter()
                    .table(Alias::new("jobs"))
                    .add_column(ColumnDef::new(Alias::new("reused_from")).uuid().null())
                    .to_owned(),
            )
            .await?;
        crate::run_statements(
            manager,
            &[
                "CREATE INDEX idx_jobs_reuse ON jobs (workspace_id, reuse_key, id) \
               WHERE status = 'COMPLETED' AND reuse_key IS NOT NULL",
            ],
        )
        .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        crate::run_statements(
            manager,
            &[
                "DROP INDEX idx_jobs_reuse",
                "ALTER TABLE jobs DROP COLUMN reused_from",
                "ALTER TABLE jobs DROP COLUMN reuse_key",
            ],
        )
        .await
    }
}
