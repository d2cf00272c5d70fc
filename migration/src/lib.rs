//! Database migrations of jobgraph, run on start and by `jobgraph migrate`.

pub use sea_orm_migration::prelude::*;

mod m20261123_000001_create_tables;
mod m20261123_000010_create_live_events;
mod m20261123_000020_claims_and_workers;
mod m20261123_000030_number_live_events_per_commit;
mod m20261123_000040_claim_ties_by_id;
mod m20261123_000050_fewer_index_writes;
mod m20261123_000060_live_entries_numbered_by_committer;
mod m20261123_000070_timeline_without_row_checks;
mod m20261123_000080_queue_indexes_of_one_status;
mod m20261124_000090_one_index_fewer_per_timeline_and_live_row;
mod m20261202_000100_batch_index_of_batched_jobs;
mod m20261202_000110_job_keys;
mod m20261203_000120_request_fingerprints;
mod m20261203_000125_worker_workspace_limit;
mod m20261203_000130_add_subject_to_users;
mod m20261204_000200_create_webhooks;
mod m20261204_000300_add_trace_parent_to_jobs;
mod m20261205_000100_add_reuse_to_jobs;
mod m20261205_000200_create_workflows;
mod m20261206_000100_create_workflow_shares;
mod m20261206_000300_add_items_to_workflow_steps;
mod m20261207_000100_references_checked_per_statement;

/// Every migration, in order.
pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(m20261123_000001_create_tables::Migration),
            Box::new(m20261123_000010_create_live_events::Migration),
            Box::new(m20261123_000020_claims_and_workers::Migration),
            Box::new(m20261123_000030_number_live_events_per_commit::Migration),
            Box::new(m20261123_000040_claim_ties_by_id::Migration),
            Box::new(m20261123_000050_fewer_index_writes::Migration),
            Box::new(m20261123_000060_live_entries_numbered_by_committer::Migration),
            Box::new(m20261123_000070_timeline_without_row_checks::Migration),
            Box::new(m20261123_000080_queue_indexes_of_one_status::Migration),
            Box::new(m20261124_000090_one_index_fewer_per_timeline_and_live_row::Migration),
            Box::new(m20261202_000100_batch_index_of_batched_jobs::Migration),
            Box::new(m20261202_000110_job_keys::Migration),
            Box::new(m20261203_000120_request_fingerprints::Migration),
            Box::new(m20261203_000125_worker_workspace_limit::Migration),
            Box::new(m20261203_000130_add_subject_to_users::Migration),
            Box::new(m20261204_000200_create_webhooks::Migration),
            Box::new(m20261204_000300_add_trace_parent_to_jobs::Migration),
            Box::new(m20261205_000100_add_reuse_to_jobs::Migration),
            Box::new(m20261205_000200_create_workflows::Migration),
            Box::new(m20261206_000100_create_workflow_shares::Migration),
            Box::new(m20261206_000300_add_items_to_workflow_steps::Migration),
            Box::new(m20261207_000100_references_checked_per_statement::Migration),
        ]
    }
}

/// Runs `statements` in order: for migrations that are the same plain statements on SQLite and
/// PostgreSQL.
pub(crate) async fn run_statements(
    manager: &SchemaManager<'_>,
    statements: &[&str],
) -> Result<(), DbErr> {
    let db = manager.get_connection();
    for statement in statements {
        db.execute_unprepared(statement).await?;
    }
    Ok(())
}

/// Runs `statements` in order on PostgreSQL, and nothing on SQLite: for migrations that change
/// only what PostgreSQL has.
pub(crate) async fn run_on_postgres(
    manager: &SchemaManager<'_>,
    statements: &[&str],
) -> Result<(), DbErr> {
    if manager.get_database_backend() == sea_orm_migration::sea_orm::DatabaseBackend::Postgres {
        run_statements(manager, statements).await?;
    }
    Ok(())
}
