//! A submission's idempotency key remembers the request it was first sent with.
//!
//! A job (and now a batch, whose key names the whole batch) keeps the SHA-256 of its request's
//! canonical form, so that the same key sent with a different request is refused instead of
//! answered with the first job. Batches get their key, unique per workspace where given, as jobs
//! have had since the first migration.
#![expect(
    elided_lifetimes_in_paths,
    reason = "MigrationTrait elides the lifetime of SchemaManager in its signatures"
)]

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

/// The same statements on SQLite and PostgreSQL (SQLite adds one column per statement).
const UP: &[&str] = &[
    "ALTER TABLE jobs ADD COLUMN request_fingerprint TEXT",
    "ALTER TABLE batches ADD COLUMN idempotency_key TEXT",
    "ALTER TABLE batches ADD COLUMN request_fingerprint TEXT",
    "CREATE UNIQUE INDEX uq_batches_workspace_idempotency_key ON batches \
     (workspace_id, idempotency_key) WHERE idempotency_key IS NOT NULL",
];

const DOWN: &[&str] = &[
    "DROP INDEX uq_batches_workspace_idempotency_key",
    "ALTER TABLE batches DROP COLUMN request_fingerprint",
    "ALTER TABLE batches DROP COLUMN idempotency_key",
    "ALTER TABLE jobs DROP COLUMN request_fingerprint",
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
