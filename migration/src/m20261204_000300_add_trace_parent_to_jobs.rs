//! A job keeps the trace context of the request that submitted it.
//!
//! When traces are exported (`--otlp-endpoint`), the `traceparent` (W3C Trace Context) of the
//! submitting request's span is stored with the job, so that its runs, local or remote, continue
//! that trace. NULL when traces are off.
#![expect(
    elided_lifetimes_in_paths,
    reason = "MigrationTrait elides the lifetime of SchemaManager in its signatures"
)]

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

/// The same statement on SQLite and PostgreSQL.
const UP: &[&str] = &["ALTER TABLE jobs ADD COLUMN trace_parent TEXT"];

const DOWN: &[&str] = &["ALTER TABLE jobs DROP COLUMN trace_parent"];

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
