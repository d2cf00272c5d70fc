//! One index write fewer for each timeline row and each live entry on PostgreSQL, where a
//! running queue writes two of each per job.
//!
//! - A live entry's `id` is now written equal to its `seq` (`live::write_at_commit`), so the
//!   primary key keeps the numbers unique and the separate unique index of `seq` goes. The
//!   sequence that numbers entries first moves past every `id` already written, so no new number
//!   meets an old row's `id`.
//! - The timeline's primary key is `(job_id, id)`, the order a job's timeline is read in, and
//!   the index that served those reads goes. An event's `id` is a UUIDv7 given by the writer.
//!
//! SQLite keeps both tables as they are: their unique constraints are part of the table there,
//! and changing them means rebuilding it.
#![expect(
    elided_lifetimes_in_paths,
    reason = "MigrationTrait elides the lifetime of SchemaManager in its signatures"
)]

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

const UP: &[&str] = &[
    "SELECT setval('live_events_seq', GREATEST( \
       (SELECT last_value FROM live_events_seq), \
       (SELECT coalesce(max(id), 0) FROM live_events), \
       (SELECT coalesce(max(seq), 0) FROM live_events), 1))",
    "ALTER TABLE live_events DROP CONSTRAINT live_events_seq_key",
    "CREATE UNIQUE INDEX job_events_job_id_id ON job_events (job_id, id)",
    "ALTER TABLE job_events DROP CONSTRAINT job_events_pkey, \
       ADD CONSTRAINT job_events_pkey PRIMARY KEY USING INDEX job_events_job_id_id",
    "DROP INDEX idx_job_events_job",
];

const DOWN: &[&str] = &[
    "CREATE INDEX idx_job_events_job ON job_events (job_id, id)",
    "ALTER TABLE job_events DROP CONSTRAINT job_events_pkey",
    "ALTER TABLE job_events ADD CONSTRAINT job_events_pkey PRIMARY KEY (id)",
    "ALTER TABLE live_events ADD CONSTRAINT live_events_seq_key UNIQUE (seq)",
];

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    fn use_transaction(&self) -> Option<bool> {
        Some(true)
    }

    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        crate::run_on_postgres(manager, UP).await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        crate::run_on_postgres(manager, DOWN).await
    }
}
