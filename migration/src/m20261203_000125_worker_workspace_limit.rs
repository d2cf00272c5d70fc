//! Each worker records in the register the per-workspace limit it claims under, so that every
//! process (the API answering `waitReason` among them) sees the limits in effect, whatever
//! flags it was itself started with.
#![expect(
    elided_lifetimes_in_paths,
    reason = "MigrationTrait elides the lifetime of SchemaManager in its signatures"
)]

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

const UP: &[&str] = &["ALTER TABLE workers ADD COLUMN workspace_max_running INTEGER"];
const DOWN: &[&str] = &["ALTER TABLE workers DROP COLUMN workspace_max_running"];

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        crate::run_statements(manager, UP).await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        crate::run_statements(manager, DOWN).await
    }
}
