//! Workflow shares: the e-mails invited to see a workflow shared as INVITED, as `job_shares`
//! are for jobs. A workflow's sharing also lets its readers read its steps' jobs.
#![expect(
    elided_lifetimes_in_paths,
    reason = "MigrationTrait elides the lifetime of SchemaManager in its signatures"
)]

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum WorkflowShares {
    Table,
    Id,
    WorkflowId,
    Email,
    CreatedAt,
}

#[derive(DeriveIden)]
enum Workflows {
    Table,
    Id,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(WorkflowShares::Table)
                    .col(uuid(WorkflowShares::Id).primary_key())
                    .col(uuid(WorkflowShares::WorkflowId))
                    .col(string(WorkflowShares::Email))
                    .col(timestamp_with_time_zone(WorkflowShares::CreatedAt))
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_workflow_shares_workflow")
                            .from(WorkflowShares::Table, WorkflowShares::WorkflowId)
                            .to(Workflows::Table, Workflows::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("uq_workflow_shares_workflow_email")
                    .table(WorkflowShares::Table)
                    .col(WorkflowShares::WorkflowId)
                    .col(WorkflowShares::Email)
                    .unique()
                    .to_owned(),
            )
            .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(WorkflowShares::Table).to_owned())
            .await
    }
}
