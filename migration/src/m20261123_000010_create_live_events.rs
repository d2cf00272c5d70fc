//! The live event log: every change subscribers are told about, in commit order.
//!
//! `seq` is given when the writing transaction commits, so that reading `seq > n` never skips
//! a row that commits later with a smaller number: on SQLite the one writer makes insertion
//! order commit order; on PostgreSQL a deferred trigger numbers the rows at commit under a
//! transaction-scoped advisory lock and announces them with `NOTIFY jobgraph_live`.
#![expect(
    elided_lifetimes_in_paths,
    reason = "MigrationTrait elides the lifetime of SchemaManager in its signatures"
)]

use sea_orm_migration::sea_orm::{ConnectionTrait, DatabaseBackend};
use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum LiveEvents {
    Table,
    Id,
    Seq,
    WorkspaceId,
    JobId,
    Kind,
    Status,
    Stage,
    Progress,
    Attempt,
    Data,
    CreatedAt,
}

const POSTGRES_ORDERING: &str = r#"
CREATE SEQUENCE live_events_seq;
CREATE FUNCTION live_events_number() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  -- One committer at a time numbers its rows, so numbers follow commit order.
  PERFORM pg_advisory_xact_lock(7202611230010);
  UPDATE live_events SET seq = nextval('live_events_seq') WHERE id = NEW.id;
  PERFORM pg_notify('jobgraph_live', '');
  RETURN NULL;
END $$;
CREATE CONSTRAINT TRIGGER live_events_number AFTER INSERT ON live_events
  DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION live_events_number();
"#;

const SQLITE_ORDERING: &str = r#"
CREATE TRIGGER live_events_number AFTER INSERT ON live_events
BEGIN
  UPDATE live_events SET seq = NEW.id WHERE id = NEW.id;
END;
"#;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(LiveEvents::Table)
                    .col(big_integer(LiveEvents::Id).auto_increment().primary_key())
                    .col(big_integer_null(LiveEvents::Seq).unique_key())
                    .col(uuid(LiveEvents::WorkspaceId))
                    .col(uuid_null(LiveEvents::JobId))
                    .col(string_len(LiveEvents::Kind, 16))
                    .col(string_len_null(LiveEvents::Status, 16))
                    .col(text_null(LiveEvents::Stage))
                    .col(double_null(LiveEvents::Progress))
                    .col(integer_null(LiveEvents::Attempt))
                    .col(json_binary_null(LiveEvents::Data))
                    .col(timestamp_with_time_zone(LiveEvents::CreatedAt))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_live_events_workspace")
                    .table(LiveEvents::Table)
                    .col(LiveEvents::WorkspaceId)
                    .col(LiveEvents::Seq)
                    .to_owned(),
            )
            .await?;
        let db = manager.get_connection();
        match db.get_database_backend() {
            DatabaseBackend::Postgres => db.execute_unprepared(POSTGRES_ORDERING).await?,
            _ => db.execute_unprepared(SQLITE_ORDERING).await?,
        };
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(LiveEvents::Table).to_owned())
            .await?;
        let db = manager.get_connection();
        if db.get_database_backend() == DatabaseBackend::Postgres {
            db.execute_unprepared(
                "DROP FUNCTION IF EXISTS live_events_number(); DROP SEQUENCE IF EXISTS live_events_seq;",
            )
            .await?;
        }
        Ok(())
    }
}
