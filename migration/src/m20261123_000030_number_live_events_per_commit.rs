//! Numbers a transaction's live entries all at once at commit, on PostgreSQL.
//!
//! The trigger of `m20261123_000010` numbered each row alone: per row, the advisory lock, a
//! `nextval` and an UPDATE by primary key, and a `pg_notify`. A worker that records hundreds of
//! changes in one transaction paid that hundreds of times while holding the lock that every
//! other committer waits for. Now the first row's trigger, under the same lock, numbers every
//! row the transaction inserted (in insertion order, with consecutive numbers) in one UPDATE and
//! notifies once; the other rows' triggers see, from a transaction-local setting holding the
//! highest id numbered, that they are done. The guarantee is unchanged: the lock is held until
//! the transaction's commit is visible, so numbers follow commit order and a reader of
//! `seq > n` never misses a row committed later with a smaller number.
//!
//! The transaction's rows are the unnumbered ones from the first row's id on: deferred triggers
//! fire in insertion order and ids grow within a session, every committed row has its number,
//! and other transactions' rows are not visible to this one. That range is read through the
//! primary key (`coalesce(seq, 0) = 0` rather than `seq IS NULL` keeps the planner off the
//! index of `seq`, where every row's first version left an entry for NULL); it holds what all
//! sessions inserted while this transaction ran, a few blocks.
#![expect(
    elided_lifetimes_in_paths,
    reason = "MigrationTrait elides the lifetime of SchemaManager in its signatures"
)]

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

pub(crate) const NUMBER_PER_COMMIT: &str = r#"
CREATE OR REPLACE FUNCTION live_events_number() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
  numbered bigint := coalesce(nullif(current_setting('jobgraph.live_numbered', true), '')::bigint, 0);
  base bigint;
  last_seq bigint;
  last_id bigint;
BEGIN
  -- Numbered with the transaction's first row.
  IF NEW.id <= numbered THEN
    RETURN NULL;
  END IF;
  -- One committer at a time numbers its rows, so numbers follow commit order.
  PERFORM pg_advisory_xact_lock(7202611230010);
  -- Only this trigger takes numbers, under the lock: the block after `base` is free.
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
"#;

/// The function as `m20261123_000010` created it.
const NUMBER_PER_ROW: &str = r#"
CREATE OR REPLACE FUNCTION live_events_number() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  -- One committer at a time numbers its rows, so numbers follow commit order.
  PERFORM pg_advisory_xact_lock(7202611230010);
  UPDATE live_events SET seq = nextval('live_events_seq') WHERE id = NEW.id;
  PERFORM pg_notify('jobgraph_live', '');
  RETURN NULL;
END $$;
"#;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // On SQLite the one writer makes insertion order commit order: nothing to change.
        crate::run_on_postgres(manager, &[NUMBER_PER_COMMIT]).await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        crate::run_on_postgres(manager, &[NUMBER_PER_ROW]).await
    }
}
