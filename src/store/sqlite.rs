//! The SQLite forms of the store's statements: multi-row INSERTs and VALUES lists of at most
//! `ROWS_PER_INSERT` rows, with anonymous `?` parameters (SQLite looks numbered ones up in a
//! list, once per parameter bound). The write transaction holds the database's one write lock,
//! so a change and what it records are separate statements at no cost in concurrency.

use chrono::{DateTime, Utc};
use entity::job;
use entity::{job_event, job_key, live_event};
use sea_orm::sea_query::SimpleExpr;
use sea_orm::{
    ActiveEnum as _, DatabaseBackend, DatabaseTransaction, DbErr, EntityTrait as _, Statement,
};

use super::writes::Completion;
use super::{ROWS_PER_INSERT, key_row, rows, timeline_row};
use crate::db::Transaction;
use crate::error::Result;

/// Job rows written by one INSERT: within SQLite's limit of 32,766 parameters.
const JOBS_PER_INSERT: usize = 500;

/// Inserts new jobs, then their keys.
pub(super) async fn insert_jobs(
    tx: &Transaction,
    new: Vec<job::ActiveModel>,
    jobs: &[job::Model],
) -> Result<()> {
    for chunk in new.chunks(JOBS_PER_INSERT) {
        job::Entity::insert_many(chunk.to_vec())
            .exec_without_returning(tx)
            .await?;
    }
    for chunk in jobs.chunks(ROWS_PER_INSERT) {
        job_key::Entity::insert_many(chunk.iter().map(key_row))
            .exec_without_returning(tx)
            .await?;
    }
    Ok(())
}

/// The timeline rows of `jobs`, as each now is, each with its message.
/// The UPDATE of `store::renew_all`: each held attempt an equality on the primary key (and the
/// attempt), so that SQLite reaches each row by its key.
pub(super) fn renew_all(
    held: &[(entity::ids::JobId, i32)],
    now: DateTime<Utc>,
    expires: DateTime<Utc>,
) -> Statement {
    use sea_orm::{ColumnTrait as _, Condition};
    let attempts = held.iter().fold(Condition::any(), |any, (id, attempt)| {
        any.add(
            Condition::all()
                .add(job::Column::Id.eq(*id))
                .add(job::Column::Attempt.eq(*attempt)),
        )
    });
    let mut update = sea_orm::sea_query::Query::update();
    update
        .table(job::Entity)
        .value(job::Column::LeaseExpiresAt, expires)
        .value(job::Column::HeartbeatAt, now)
        .cond_where(attempts)
        .and_where(job::Column::Status.eq(job::JobStatus::Processing))
        .returning_col(job::Column::Id);
    DatabaseBackend::Sqlite.build(&update)
}

pub(super) async fn insert_timeline(
    tx: &Transaction,
    jobs: &[job::Model],
    messages: Vec<Option<String>>,
    now: DateTime<Utc>,
) -> Result<()> {
    let rows: Vec<job_event::ActiveModel> = jobs
        .iter()
        .zip(messages)
        .map(|(job, message)| timeline_row(job, message, now))
        .collect();
    for chunk in rows.chunks(ROWS_PER_INSERT) {
        job_event::Entity::insert_many(chunk.to_vec())
            .exec_without_returning(tx)
            .await?;
    }
    Ok(())
}

/// Writes a committing transaction's live entries; the log's trigger numbers each row with its
/// id, under the write lock the transaction holds.
pub(super) async fn write_live(
    tx: &DatabaseTransaction,
    entries: Vec<live_event::ActiveModel>,
) -> std::result::Result<(), DbErr> {
    for chunk in entries.chunks(ROWS_PER_INSERT) {
        live_event::Entity::insert_many(chunk.to_vec())
            .exec_without_returning(tx)
            .await?;
    }
    Ok(())
}

/// The UPDATEs that move `completions` to COMPLETED with `sets`, each only if it still has the
/// status and attempt its runner saw, returning the rows they moved: one per thousand, the rows
/// in a VALUES list `done`.
pub(super) fn completing(
    sets: Vec<(job::Column, SimpleExpr)>,
    completions: &[&Completion],
) -> Vec<Statement> {
    use sea_orm::sea_query::{Alias, Query, SqliteQueryBuilder};
    let mut update = Query::update();
    update
        .table(job::Entity)
        .values(sets)
        .from(Alias::new("done"));
    let (set_sql, set_values) = update.build(SqliteQueryBuilder);
    completions
        .chunks(ROWS_PER_INSERT)
        .map(|chunk| {
            // The parameters in the order of the text: the rows, then the SET's.
            let mut values: Vec<sea_orm::Value> =
                Vec::with_capacity(chunk.len() * 5 + set_values.0.len());
            for c in chunk {
                values.extend([
                    c.job.id.into(),
                    c.job.status.to_value().into(),
                    c.job.attempt.into(),
                    c.result.clone().into(),
                    c.resources.clone().into(),
                ]);
            }
            values.extend(set_values.0.iter().cloned());
            let sql = format!(
                "WITH done (id, status, attempt, result, resources) AS (VALUES {}) {set_sql} \
                 WHERE jobs.id = done.id AND jobs.status = done.status \
                 AND jobs.attempt = done.attempt {}",
                vec!["(?, ?, ?, ?, ?)"; chunk.len()].join(", "),
                rows::returning_sql("")
            );
            Statement::from_sql_and_values(DatabaseBackend::Sqlite, sql, values)
        })
        .collect()
}
