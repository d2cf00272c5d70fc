//! Mapped workflow steps: a step that runs once per item of a list has one job per item.
//!
//! `workflow_steps.items` is how many items a mapped step runs over (NULL for a step of one
//! job, and before a mapped step starts) and `items_left` how many of their jobs have not
//! ended; `jobs.workflow_item` is a mapped step's job's place in its list, from 0 (NULL for
//! every other job), which orders the outputs a later step gathers.
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
        crate::run_statements(
            manager,
            &[
                "ALTER TABLE workflow_steps ADD COLUMN items INTEGER",
                "ALTER TABLE workflow_steps ADD COLUMN items_left INTEGER NOT NULL DEFAULT 0",
                "ALTER TABLE jobs ADD COLUMN workflow_item INTEGER",
            ],
        )
        .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        crate::run_statements(
            manager,
            &[
                "ALTER TABLE jobs DROP COLUMN workflow_item",
                "ALTER TABLE workflow_steps DROP COLUMN items_left",
                "ALTER TABLE workflow_steps DROP COLUMN items",
            ],
        )
        .await
    }
}
