//! Jobs queued at the same moment are claimed in the order they were submitted.
//!
//! A batch queues all its jobs in one statement, so they share `queued_at`. The claim order
//! becomes priority (highest first), then `queued_at`, then `id` (ids of one process grow in
//! submission order), and the claim index gets `id` as its last column, so a claim still reads
//! the head of the queue in order and a queue position is still one count over the index.
#![expect(
    elided_lifetimes_in_paths,
    reason = "MigrationTrait elides the lifetime of SchemaManager in its signatures"
)]

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Jobs {
    Table,
    Id,
    Status,
    Priority,
    QueuedAt,
}

fn claim_index(with_id: bool) -> IndexCreateStatement {
    let mut index = Index::create();
    index
        .name("idx_jobs_claim")
        .table(Jobs::Table)
        .col(Jobs::Status)
        .col((Jobs::Priority, IndexOrder::Desc))
        .col((Jobs::QueuedAt, IndexOrder::Asc));
    if with_id {
        index.col((Jobs::Id, IndexOrder::Asc));
    }
    index.to_owned()
}

async fn replace_claim_index(manager: &SchemaManager<'_>, with_id: bool) -> Result<(), DbErr> {
    manager
        .drop_index(
            Index::drop()
                .name("idx_jobs_claim")
                .table(Jobs::Table)
                .to_owned(),
        )
        .await?;
    manager.create_index(claim_index(with_id)).await
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    fn use_transaction(&self) -> Option<bool> {
        Some(true)
    }

    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        replace_claim_index(manager, true).await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        replace_claim_index(manager, false).await
    }
}
