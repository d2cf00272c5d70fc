//! The whole data model: users, tokens, workspaces, members, credits, jobs and their records.
#![expect(
    elided_lifetimes_in_paths,
    reason = "MigrationTrait elides the lifetime of SchemaManager in its signatures"
)]

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Users {
    Table,
    Id,
    Email,
    DisplayName,
    IsPlatformAdmin,
    IsPending,
    CreatedAt,
}

#[derive(DeriveIden)]
enum ApiTokens {
    Table,
    Id,
    UserId,
    Name,
    Kind,
    DisplayPrefix,
    SecretHash,
    CreatedAt,
    LastUsedAt,
    ExpiresAt,
    RevokedAt,
}

#[derive(DeriveIden)]
enum Workspaces {
    Table,
    Id,
    Name,
    CreditBalance,
    CreatedAt,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum Memberships {
    Table,
    Id,
    WorkspaceId,
    UserId,
    Role,
    CreatedAt,
}

#[derive(DeriveIden)]
enum CreditTransactions {
    Table,
    Id,
    WorkspaceId,
    Kind,
    Amount,
    BalanceAfter,
    ActorId,
    JobId,
    Note,
    CreatedAt,
}

#[derive(DeriveIden)]
enum Batches {
    Table,
    Id,
    WorkspaceId,
    SubmitterId,
    Name,
    CreatedAt,
}

#[derive(DeriveIden)]
enum Jobs {
    Table,
    Id,
    WorkspaceId,
    SubmitterId,
    Tool,
    ToolVersion,
    Name,
    Status,
    Stage,
    Progress,
    Inputs,
    Settings,
    Result,
    ErrorMessage,
    ErrorCode,
    Attempt,
    MaxAttempts,
    CreditCost,
    Refunded,
    Visibility,
    Priority,
    ParentId,
    ParentKind,
    BatchId,
    IdempotencyKey,
    Resources,
    CreatedAt,
    UpdatedAt,
    QueuedAt,
    StartedAt,
    FinishedAt,
    RunAfter,
    WorkerId,
    LeaseExpiresAt,
    HeartbeatAt,
}

#[derive(DeriveIden)]
enum JobEvents {
    Table,
    Id,
    JobId,
    WorkspaceId,
    Status,
    Stage,
    Message,
    Progress,
    Attempt,
    CreatedAt,
}

#[derive(DeriveIden)]
enum JobShares {
    Table,
    Id,
    JobId,
    Email,
    CreatedAt,
}

#[derive(DeriveIden)]
enum Files {
    Table,
    Id,
    WorkspaceId,
    JobId,
    Role,
    Name,
    Size,
    ContentType,
    Sha256,
    StorageKey,
    CreatedAt,
}

fn fk(
    name: &str,
    from: (impl IntoIden, impl IntoIden),
    to: (impl IntoIden, impl IntoIden),
    on_delete: ForeignKeyAction,
) -> ForeignKeyCreateStatement {
    ForeignKey::create()
        .name(name)
        .from(from.0, from.1)
        .to(to.0, to.1)
        .on_delete(on_delete)
        .to_owned()
}

fn index(name: &str, table: impl IntoIden, columns: &[&'static str]) -> IndexCreateStatement {
    let mut stmt = Index::create();
    stmt.name(name).table(table);
    for column in columns {
        stmt.col(Alias::new(*column));
    }
    stmt.to_owned()
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    /// SQLite and PostgreSQL both roll back DDL: a failed migration leaves nothing behind.
    fn use_transaction(&self) -> Option<bool> {
        Some(true)
    }

    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Users::Table)
                    .col(uuid(Users::Id).primary_key())
                    .col(string_uniq(Users::Email))
                    .col(string(Users::DisplayName))
                    .col(boolean(Users::IsPlatformAdmin).default(false))
                    .col(boolean(Users::IsPending).default(false))
                    .col(timestamp_with_time_zone(Users::CreatedAt))
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(ApiTokens::Table)
                    .col(uuid(ApiTokens::Id).primary_key())
                    .col(uuid(ApiTokens::UserId))
                    .col(string(ApiTokens::Name))
                    .col(string_len(ApiTokens::Kind, 16))
                    .col(string(ApiTokens::DisplayPrefix))
                    .col(string_uniq(ApiTokens::SecretHash))
                    .col(timestamp_with_time_zone(ApiTokens::CreatedAt))
                    .col(timestamp_with_time_zone_null(ApiTokens::LastUsedAt))
                    .col(timestamp_with_time_zone_null(ApiTokens::ExpiresAt))
                    .col(timestamp_with_time_zone_null(ApiTokens::RevokedAt))
                    .foreign_key(&mut fk(
                        "fk_api_tokens_user",
                        (ApiTokens::Table, ApiTokens::UserId),
                        (Users::Table, Users::Id),
                        ForeignKeyAction::Cascade,
                    ))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(index(
                "idx_api_tokens_user",
                ApiTokens::Table,
                &["user_id", "id"],
            ))
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(Workspaces::Table)
                    .col(uuid(Workspaces::Id).primary_key())
                    .col(string(Workspaces::Name))
                    .col(big_integer(Workspaces::CreditBalance).default(0))
                    .col(timestamp_with_time_zone(Workspaces::CreatedAt))
                    .col(timestamp_with_time_zone(Workspaces::UpdatedAt))
                    .check(Expr::col(Workspaces::CreditBalance).gte(0))
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(Memberships::Table)
                    .col(uuid(Memberships::Id).primary_key())
                    .col(uuid(Memberships::WorkspaceId))
                    .col(uuid(Memberships::UserId))
                    .col(string_len(Memberships::Role, 16))
                    .col(timestamp_with_time_zone(Memberships::CreatedAt))
                    .foreign_key(&mut fk(
                        "fk_memberships_workspace",
                        (Memberships::Table, Memberships::WorkspaceId),
                        (Workspaces::Table, Workspaces::Id),
                        ForeignKeyAction::Cascade,
                    ))
                    .foreign_key(&mut fk(
                        "fk_memberships_user",
                        (Memberships::Table, Memberships::UserId),
                        (Users::Table, Users::Id),
                        ForeignKeyAction::Cascade,
                    ))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                index(
                    "uq_memberships_workspace_user",
                    Memberships::Table,
                    &["workspace_id", "user_id"],
                )
                .unique()
                .to_owned(),
            )
            .await?;
        manager
            .create_index(index(
                "idx_memberships_user",
                Memberships::Table,
                &["user_id", "workspace_id"],
            ))
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(CreditTransactions::Table)
                    .col(uuid(CreditTransactions::Id).primary_key())
                    .col(uuid(CreditTransactions::WorkspaceId))
                    .col(string_len(CreditTransactions::Kind, 16))
                    .col(big_integer(CreditTransactions::Amount))
                    .col(big_integer(CreditTransactions::BalanceAfter))
                    .col(uuid_null(CreditTransactions::ActorId))
                    .col(uuid_null(CreditTransactions::JobId))
                    .col(text_null(CreditTransactions::Note))
                    .col(timestamp_with_time_zone(CreditTransactions::CreatedAt))
                    .check(Expr::col(CreditTransactions::BalanceAfter).gte(0))
                    .foreign_key(&mut fk(
                        "fk_credit_transactions_workspace",
                        (CreditTransactions::Table, CreditTransactions::WorkspaceId),
                        (Workspaces::Table, Workspaces::Id),
                        ForeignKeyAction::Cascade,
                    ))
                    .foreign_key(&mut fk(
                        "fk_credit_transactions_actor",
                        (CreditTransactions::Table, CreditTransactions::ActorId),
                        (Users::Table, Users::Id),
                        ForeignKeyAction::SetNull,
                    ))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(index(
                "idx_credit_transactions_workspace",
                CreditTransactions::Table,
                &["workspace_id", "id"],
            ))
            .await?;
        // A job is charged at most once and refunded at most once. Entries without a job
        // (grants, adjustments) have a NULL job_id, which never collides.
        manager
            .create_index(
                index(
                    "uq_credit_transactions_job_kind",
                    CreditTransactions::Table,
                    &["job_id", "kind"],
                )
                .unique()
                .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(Batches::Table)
                    .col(uuid(Batches::Id).primary_key())
                    .col(uuid(Batches::WorkspaceId))
                    .col(uuid(Batches::SubmitterId))
                    .col(string_null(Batches::Name))
                    .col(timestamp_with_time_zone(Batches::CreatedAt))
                    .foreign_key(&mut fk(
                        "fk_batches_workspace",
                        (Batches::Table, Batches::WorkspaceId),
                        (Workspaces::Table, Workspaces::Id),
                        ForeignKeyAction::Cascade,
                    ))
                    .foreign_key(&mut fk(
                        "fk_batches_submitter",
                        (Batches::Table, Batches::SubmitterId),
                        (Users::Table, Users::Id),
                        ForeignKeyAction::Restrict,
                    ))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(index(
                "idx_batches_workspace",
                Batches::Table,
                &["workspace_id", "id"],
            ))
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(Jobs::Table)
                    .col(uuid(Jobs::Id).primary_key())
                    .col(uuid(Jobs::WorkspaceId))
                    .col(uuid(Jobs::SubmitterId))
                    .col(string(Jobs::Tool))
                    .col(string(Jobs::ToolVersion))
                    .col(string(Jobs::Name))
                    .col(string_len(Jobs::Status, 16))
                    .col(text_null(Jobs::Stage))
                    .col(double(Jobs::Progress).default(0.0))
                    .col(json_binary(Jobs::Inputs))
                    .col(json_binary(Jobs::Settings))
                    .col(json_binary_null(Jobs::Result))
                    .col(text_null(Jobs::ErrorMessage))
                    .col(string_null(Jobs::ErrorCode))
                    .col(integer(Jobs::Attempt).default(0))
                    .col(integer(Jobs::MaxAttempts))
                    .col(big_integer(Jobs::CreditCost))
                    .col(boolean(Jobs::Refunded).default(false))
                    .col(string_len(Jobs::Visibility, 16))
                    .col(integer(Jobs::Priority).default(0))
                    .col(uuid_null(Jobs::ParentId))
                    .col(string_len_null(Jobs::ParentKind, 16))
                    .col(uuid_null(Jobs::BatchId))
                    .col(string_null(Jobs::IdempotencyKey))
                    .col(json_binary_null(Jobs::Resources))
                    .col(timestamp_with_time_zone(Jobs::CreatedAt))
                    .col(timestamp_with_time_zone(Jobs::UpdatedAt))
                    .col(timestamp_with_time_zone_null(Jobs::QueuedAt))
                    .col(timestamp_with_time_zone_null(Jobs::StartedAt))
                    .col(timestamp_with_time_zone_null(Jobs::FinishedAt))
                    .col(timestamp_with_time_zone_null(Jobs::RunAfter))
                    .col(string_null(Jobs::WorkerId))
                    .col(timestamp_with_time_zone_null(Jobs::LeaseExpiresAt))
                    .col(timestamp_with_time_zone_null(Jobs::HeartbeatAt))
                    .check(Expr::col(Jobs::Progress).between(0.0, 1.0))
                    .foreign_key(&mut fk(
                        "fk_jobs_workspace",
                        (Jobs::Table, Jobs::WorkspaceId),
                        (Workspaces::Table, Workspaces::Id),
                        ForeignKeyAction::Cascade,
                    ))
                    .foreign_key(&mut fk(
                        "fk_jobs_submitter",
                        (Jobs::Table, Jobs::SubmitterId),
                        (Users::Table, Users::Id),
                        ForeignKeyAction::Restrict,
                    ))
                    .foreign_key(&mut fk(
                        "fk_jobs_parent",
                        (Jobs::Table, Jobs::ParentId),
                        (Jobs::Table, Jobs::Id),
                        ForeignKeyAction::SetNull,
                    ))
                    .foreign_key(&mut fk(
                        "fk_jobs_batch",
                        (Jobs::Table, Jobs::BatchId),
                        (Batches::Table, Batches::Id),
                        ForeignKeyAction::SetNull,
                    ))
                    .to_owned(),
            )
            .await?;
        // The history list, newest first, and its filters.
        for (name, columns) in [
            ("idx_jobs_workspace", &["workspace_id", "id"][..]),
            (
                "idx_jobs_workspace_status",
                &["workspace_id", "status", "id"],
            ),
            ("idx_jobs_workspace_tool", &["workspace_id", "tool", "id"]),
            (
                "idx_jobs_workspace_submitter",
                &["workspace_id", "submitter_id", "id"],
            ),
            ("idx_jobs_batch", &["batch_id", "id"]),
            ("idx_jobs_parent", &["parent_id", "id"]),
            // The queue: claimable jobs by priority, then age; expired leases for the reaper.
            ("idx_jobs_queue", &["status", "priority", "queued_at"]),
            ("idx_jobs_lease", &["status", "lease_expires_at"]),
        ] {
            manager
                .create_index(index(name, Jobs::Table, columns))
                .await?;
        }
        manager
            .create_index(
                index(
                    "uq_jobs_workspace_idempotency_key",
                    Jobs::Table,
                    &["workspace_id", "idempotency_key"],
                )
                .unique()
                .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(JobEvents::Table)
                    .col(uuid(JobEvents::Id).primary_key())
                    .col(uuid(JobEvents::JobId))
                    .col(uuid(JobEvents::WorkspaceId))
                    .col(string_len(JobEvents::Status, 16))
                    .col(text_null(JobEvents::Stage))
                    .col(text_null(JobEvents::Message))
                    .col(double(JobEvents::Progress).default(0.0))
                    .col(integer(JobEvents::Attempt).default(0))
                    .col(timestamp_with_time_zone(JobEvents::CreatedAt))
                    .foreign_key(&mut fk(
                        "fk_job_events_job",
                        (JobEvents::Table, JobEvents::JobId),
                        (Jobs::Table, Jobs::Id),
                        ForeignKeyAction::Cascade,
                    ))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(index(
                "idx_job_events_job",
                JobEvents::Table,
                &["job_id", "id"],
            ))
            .await?;
        manager
            .create_index(index(
                "idx_job_events_workspace",
                JobEvents::Table,
                &["workspace_id", "id"],
            ))
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(JobShares::Table)
                    .col(uuid(JobShares::Id).primary_key())
                    .col(uuid(JobShares::JobId))
                    .col(string(JobShares::Email))
                    .col(timestamp_with_time_zone(JobShares::CreatedAt))
                    .foreign_key(&mut fk(
                        "fk_job_shares_job",
                        (JobShares::Table, JobShares::JobId),
                        (Jobs::Table, Jobs::Id),
                        ForeignKeyAction::Cascade,
                    ))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                index(
                    "uq_job_shares_job_email",
                    JobShares::Table,
                    &["job_id", "email"],
                )
                .unique()
                .to_owned(),
            )
            .await?;
        manager
            .create_index(index("idx_job_shares_email", JobShares::Table, &["email"]))
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(Files::Table)
                    .col(uuid(Files::Id).primary_key())
                    .col(uuid(Files::WorkspaceId))
                    .col(uuid_null(Files::JobId))
                    .col(string_len(Files::Role, 16))
                    .col(string(Files::Name))
                    .col(big_integer(Files::Size))
                    .col(string(Files::ContentType))
                    .col(string_len(Files::Sha256, 64))
                    .col(string(Files::StorageKey))
                    .col(timestamp_with_time_zone(Files::CreatedAt))
                    .foreign_key(&mut fk(
                        "fk_files_workspace",
                        (Files::Table, Files::WorkspaceId),
                        (Workspaces::Table, Workspaces::Id),
                        ForeignKeyAction::Cascade,
                    ))
                    .foreign_key(&mut fk(
                        "fk_files_job",
                        (Files::Table, Files::JobId),
                        (Jobs::Table, Jobs::Id),
                        ForeignKeyAction::Cascade,
                    ))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(index("idx_files_job", Files::Table, &["job_id", "id"]))
            .await?;
        manager
            .create_index(index(
                "idx_files_workspace",
                Files::Table,
                &["workspace_id", "id"],
            ))
            .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for table in [
            Files::Table.into_iden(),
            JobShares::Table.into_iden(),
            JobEvents::Table.into_iden(),
            Jobs::Table.into_iden(),
            Batches::Table.into_iden(),
            CreditTransactions::Table.into_iden(),
            Memberships::Table.into_iden(),
            Workspaces::Table.into_iden(),
            ApiTokens::Table.into_iden(),
            Users::Table.into_iden(),
        ] {
            manager
                .drop_table(Table::drop().table(table).to_owned())
                .await?;
        }
        Ok(())
    }
}
