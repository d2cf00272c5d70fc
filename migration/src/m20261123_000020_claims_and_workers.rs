//! The claim order as an index, and the register of workers.
//!
//! Workers claim QUEUED jobs by priority (highest first), then age (oldest first). An index in
//! exactly that order lets a claim read the head of the queue instead of sorting it, and lets a
//! job's queue position be counted from the index alone.
//!
//! A tool's recent runs, newest first, give the typical run time that a waiting job's
//! estimated start is computed from.
//!
//! `workers` lists the processes and remote workers that claim jobs, with the tools each runs
//! and when it was last heard from, so that a waiting job can tell that nobody runs its tool.
#![expect(
    elided_lifetimes_in_paths,
    reason = "MigrationTrait elides the lifetime of SchemaManager in its signatures"
)]

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Jobs {
    Table,
    Status,
    Priority,
    QueuedAt,
    Tool,
    FinishedAt,
}

#[derive(DeriveIden)]
enum Workers {
    Table,
    Name,
    Kind,
    Tools,
    Capacity,
    UserId,
    StartedAt,
    SeenAt,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    fn use_transaction(&self) -> Option<bool> {
        Some(true)
    }

    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_index(
                Index::drop()
                    .name("idx_jobs_queue")
                    .table(Jobs::Table)
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_jobs_claim")
                    .table(Jobs::Table)
                    .col(Jobs::Status)
                    .col((Jobs::Priority, IndexOrder::Desc))
                    .col((Jobs::QueuedAt, IndexOrder::Asc))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_jobs_tool_finished")
                    .table(Jobs::Table)
                    .col(Jobs::Tool)
                    .col(Jobs::FinishedAt)
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(Workers::Table)
                    .col(string(Workers::Name).primary_key())
                    // `local` (a worker pool of jobgraph) or `remote` (the worker API).
                    .col(string(Workers::Kind))
                    // The tools it runs, as a JSON array of names.
                    .col(json(Workers::Tools))
                    .col(integer(Workers::Capacity))
                    .col(uuid_null(Workers::UserId))
                    .col(timestamp_with_time_zone(Workers::StartedAt))
                    .col(timestamp_with_time_zone(Workers::SeenAt))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_workers_seen")
                    .table(Workers::Table)
                    .col(Workers::SeenAt)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(Workers::Table).to_owned())
            .await?;
        manager
            .drop_index(
                Index::drop()
                    .name("idx_jobs_tool_finished")
                    .table(Jobs::Table)
                    .to_owned(),
            )
            .await?;
        manager
            .drop_index(
                Index::drop()
                    .name("idx_jobs_claim")
                    .table(Jobs::Table)
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_jobs_queue")
                    .table(Jobs::Table)
                    .col(Jobs::Status)
                    .col(Jobs::Priority)
                    .col(Jobs::QueuedAt)
                    .to_owned(),
            )
            .await
    }
}
