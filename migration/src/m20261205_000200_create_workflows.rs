//! Workflows: jobs connected as a graph of named steps, charged against one reservation.
//!
//! A workflow keeps its checked definition (`definition`: steps, bindings, dependencies) and
//! what it holds of its workspace's credits: `credits_reserved` is what is left of the
//! reservation taken at submission, which its steps are charged against as they are queued and
//! which is given back when it ends. `workspaces.credits_reserved` is the sum over a
//! workspace's running workflows: ordinary charges may not take the balance below it.
//!
//! A step is a row of `workflow_steps` from submission; its job (`job_id`) is written when its
//! upstream steps have completed, in the same transaction as the last of them. Step jobs name
//! their workflow and step (`jobs.workflow_id`, `jobs.workflow_step`). Stored files keep the
//! residues of FASTA content (`files.residues`), counted as they were written, so that a step
//! fed by an upstream output is priced as a job given that file would be.
#![expect(
    elided_lifetimes_in_paths,
    reason = "MigrationTrait elides the lifetime of SchemaManager in its signatures"
)]

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Workflows {
    Table,
    Id,
    WorkspaceId,
    SubmitterId,
    Name,
    Template,
    Definition,
    Parameters,
    Inputs,
    Status,
    FailFast,
    MaxCredits,
    CreditsEstimated,
    CreditsReserved,
    CreditsCharged,
    CreditsRefunded,
    StepsLeft,
    Visibility,
    IdempotencyKey,
    RequestFingerprint,
    ParentId,
    ParentKind,
    ErrorMessage,
    CreatedAt,
    UpdatedAt,
    FinishedAt,
}

#[derive(DeriveIden)]
enum WorkflowSteps {
    Table,
    WorkflowId,
    Name,
    Position,
    Tool,
    Status,
    DependsOn,
    WaitingOn,
    Estimate,
    EstimateKnown,
    JobId,
    Reason,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum Jobs {
    Table,
    WorkflowId,
    WorkflowStep,
}

#[derive(DeriveIden)]
enum Workspaces {
    Table,
    Id,
}

const STATEMENTS: &[&str] = &[
    "CREATE INDEX idx_workflows_workspace ON workflows (workspace_id, id)",
    "CREATE UNIQUE INDEX uq_workflows_idempotency_key ON workflows (workspace_id, idempotency_key) \
     WHERE idempotency_key IS NOT NULL",
    "CREATE INDEX idx_jobs_workflow ON jobs (workflow_id) WHERE workflow_id IS NOT NULL",
    "ALTER TABLE workspaces ADD COLUMN credits_reserved BIGINT NOT NULL DEFAULT 0",
    "ALTER TABLE files ADD COLUMN residues BIGINT",
];

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Workflows::Table)
                    .col(uuid(Workflows::Id).primary_key())
                    .col(uuid(Workflows::WorkspaceId))
                    .col(uuid(Workflows::SubmitterId))
                    .col(text(Workflows::Name))
                    .col(text_null(Workflows::Template))
                    .col(json_binary(Workflows::Definition))
                    .col(json_binary(Workflows::Parameters))
                    .col(json_binary(Workflows::Inputs))
                    .col(string_len(Workflows::Status, 16))
                    .col(boolean(Workflows::FailFast))
                    .col(big_integer_null(Workflows::MaxCredits))
                    .col(big_integer(Workflows::CreditsEstimated))
                    .col(big_integer(Workflows::CreditsReserved))
                    .col(big_integer(Workflows::CreditsCharged))
                    .col(big_integer(Workflows::CreditsRefunded))
                    .col(integer(Workflows::StepsLeft))
                    .col(string_len(Workflows::Visibility, 16))
                    .col(text_null(Workflows::IdempotencyKey))
                    .col(text_null(Workflows::RequestFingerprint))
                    .col(uuid_null(Workflows::ParentId))
                    .col(string_len_null(Workflows::ParentKind, 16))
                    .col(text_null(Workflows::ErrorMessage))
                    .col(timestamp_with_time_zone(Workflows::CreatedAt))
                    .col(timestamp_with_time_zone(Workflows::UpdatedAt))
                    .col(timestamp_with_time_zone_null(Workflows::FinishedAt))
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_workflows_workspace")
                            .from(Workflows::Table, Workflows::WorkspaceId)
                            .to(Workspaces::Table, Workspaces::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(WorkflowSteps::Table)
                    .col(uuid(WorkflowSteps::WorkflowId))
                    .col(text(WorkflowSteps::Name))
                    .col(integer(WorkflowSteps::Position))
                    .col(text(WorkflowSteps::Tool))
                    .col(string_len(WorkflowSteps::Status, 16))
                    .col(json_binary(WorkflowSteps::DependsOn))
                    .col(integer(WorkflowSteps::WaitingOn))
                    .col(big_integer(WorkflowSteps::Estimate))
                    .col(boolean(WorkflowSteps::EstimateKnown))
                    .col(uuid_null(WorkflowSteps::JobId))
                    .col(text_null(WorkflowSteps::Reason))
                    .col(timestamp_with_time_zone(WorkflowSteps::UpdatedAt))
                    .primary_key(
                        Index::create()
                            .col(WorkflowSteps::WorkflowId)
                            .col(WorkflowSteps::Name),
                    )
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_workflow_steps_workflow")
                            .from(WorkflowSteps::Table, WorkflowSteps::WorkflowId)
                            .to(Workflows::Table, Workflows::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        // One column per statement: SQLite adds one at a time.
        manager
            .alter_table(
                Table::alter()
                    .table(Jobs::Table)
                    .add_column(uuid_null(Jobs::WorkflowId))
                    .to_owned(),
            )
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(Jobs::Table)
                    .add_column(text_null(Jobs::WorkflowStep))
                    .to_owned(),
            )
            .await?;
        crate::run_statements(manager, STATEMENTS).await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        crate::run_statements(
            manager,
            &[
                "DROP INDEX idx_jobs_workflow",
                "ALTER TABLE jobs DROP COLUMN workflow_step",
                "ALTER TABLE jobs DROP COLUMN workflow_id",
                "ALTER TABLE workspaces DROP COLUMN credits_reserved",
                "ALTER TABLE files DROP COLUMN residues",
            ],
        )
        .await?;
        for table in ["workflow_steps", "workflows"] {
            manager
                .drop_table(Table::drop().table(Alias::new(table)).to_owned())
                .await?;
        }
        Ok(())
    }
}
