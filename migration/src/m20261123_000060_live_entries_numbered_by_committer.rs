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
use sea_orm_migration::sea_orm::{ConnectionTrait, DatabaseBackend};

#[derive(DeriveMigrationName)]
pub struct Migration;

const DROP_TRIGGER: &str = r#"
DROP TRIGGER live_events_number ON live_events;
DROP FUNCTION live_events_number();
"#;

/// The trigger as `m20261123_000030` left it.
const NUMBER_PER_COMMIT: &str = r#"
CREATE FUNCTION live_events_number() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
  numbered bigint := coalesce(nullif(current_setting('jobgraph.live_numbered', true), '')::bigint, 0);
  base bigint;
  last_seq bigint;
  last_id bigint;
BEGIN
  IF NEW.id <= numbered OR NEW.seq IS NOT NULL THEN
    RETURN NULL;
  END IF;
  PERFORM pg_advisory_xact_lock(7202611230010);
  base := nextval('live_events_seq') - 1;
  WITH numbered_rows AS (
    UPDATE live_events AS l SET seq = base + mine.n
    FROM (SELECT id, row_number() OVER (ORDER BY id) AS n
          FROM live_events WHERE id >= NEW.id AND coalesce(seq, 0) = 0) AS mine
    WHERE l.id = mine.id
    RETURNING l.id, l.seq
  )
  SELECT max(seq), max(id) INTO last_seq, last_id FROM numbered_rows;
  IF last_seq > base + 1 THEN
    PERFORM setval('live_events_seq', last_seq);
  END IF;
  IF last_id IS NOT NULL THEN
    PERFORM set_config('jobgraph.live_numbered', last_id::text, true);
  END IF;
  PERFORM pg_notify('jobgraph_live', '');
  RETURN NULL;
END $$;
CREATE CONSTRAINT TRIGGER live_events_number AFTER INSERT ON live_events
  DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION live_events_number();
"#;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let db = manager.get_connection();
        if db.get_database_backend() == DatabaseBackend::Postgres {
            db.execute_unprepared(DROP_TRIGGER).await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let db = manager.get_connection();
        if db.get_database_backend() == DatabaseBackend::Postgres {
            db.execute_unprepared(NUMBER_PER_COMMIT).await?;
        }
        Ok(())
    }
}
