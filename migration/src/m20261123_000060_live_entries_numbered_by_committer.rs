//! Live entries are written once, already numbered, by the committing transaction.
//!
//! The trigger of `m20261123_000010` (numbering each transaction's rows at commit, as
//! `m20261123_000030` made it) wrote every entry twice: inserted without a number, then updated
//! with one. The application now keeps a transaction's entries until it commits and writes them
//! then, under the same advisory lock and with numbers reserved from the same sequence
//! (`live::write_at_commit`), so the PostgreSQL trigger goes. SQLite keeps its trigger, which
//! numbers each row with its id under the one write lock.
#![expect(
    elided_lifetimes_in_paths,
    reason = "MigrationTrait elides the lifetime of SchemaManager in its signatures"
)]

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

const DROP_TRIGGER: &str = r#"
DROP TRIGGER live_events_number ON live_events;
DROP FUNCTION live_events_number();
"#;

/// The trigger of `m20261123_000010`, whose function `m20261123_000030` replaced.
const CREATE_TRIGGER: &str = r#"
CREATE CONSTRAINT TRIGGER live_events_number AFTER INSERT ON live_events
  DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION live_events_number();
"#;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        crate::run_on_postgres(manager, &[DROP_TRIGGER]).await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        crate::run_on_postgres(
            manager,
            &[
                crate::m20261123_000030_number_live_events_per_commit::NUMBER_PER_COMMIT,
                CREATE_TRIGGER,
            ],
        )
        .await
    }
}
