//! The writes of jobs, as domain modules ask for them. Each takes the caller's transaction and
//! records the job's timeline row and live entry with the change, as `record` does.

use entity::ids::{JobId, WorkspaceId};
use std::time::Duration;

use chrono::{DateTime, Utc};
use entity::job::{self, JobStatus};
use entity::live_event::LiveKind;
use entity::{job_event, job_key};
use sea_orm::sea_query::{Expr, SimpleExpr};
use sea_orm::{
    ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QuerySelect as _, QueryTrait as _,
    Statement,
};

use super::rows::{self, Changed};
use super::{Change, Dialect, Lease, Move, postgres, sqlite};
use crate::db::Transaction;
use crate::error::{Error, Result};

/// Inserts new jobs with their keys (`job_keys`), a timeline row for each with the message
/// `message` gives it, and a CREATED live entry for each, and returns the jobs as written, in
/// the order given. On PostgreSQL that is one statement.
/// Every column is given (times in whole microseconds, as the database keeps them) and the
/// database adds nothing, so the rows are not read back.
#[tracing::instrument(
    target = "jobgraph::spans",
    level = "debug",
    name = "store.insert_jobs",
    skip_all
)]
pub async fn insert_jobs(
    tx: &Transaction,
    new: Vec<job::ActiveModel>,
    message: impl Fn(&job::Model) -> Option<String>,
) -> Result<Vec<job::Model>> {
    use sea_orm::TryIntoModel as _;
    let jobs = new
        .iter()
        .cloned()
        .map(|row| row.try_into_model())
        .collect::<std::result::Result<Vec<job::Model>, sea_orm::DbErr>>()?;
    let messages = jobs.iter().map(message).collect();
    let now = Utc::now();
    match Dialect::of(tx) {
        Dialect::Postgres => postgres::insert_jobs(tx, new, &jobs, messages, now).await?,
        Dialect::Sqlite => {
            sqlite::insert_jobs(tx, new, &jobs).await?;
            sqlite::insert_timeline(tx, &jobs, messages, now).await?;
        }
    }
    record_live_of(tx, &jobs, LiveKind::Created);
    Ok(jobs)
}

/// Records a timeline row with `message` and a live entry for each of `jobs`, as each now is.
#[tracing::instrument(
    target = "jobgraph::spans",
    level = "debug",
    name = "store.record",
    skip_all
)]
pub async fn record(tx: &Transaction, jobs: &[job::Model], message: Option<String>) -> Result<()> {
    record_each(tx, jobs, vec![message; jobs.len()]).await
}

/// Records a timeline row for each of `jobs` with its own message (`messages` in the same
/// order), in one statement, and a live entry for each, as each now is.
pub async fn record_each(
    tx: &Transaction,
    jobs: &[job::Model],
    messages: Vec<Option<String>>,
) -> Result<()> {
    debug_assert_eq!(jobs.len(), messages.len());
    let now = Utc::now();
    match Dialect::of(tx) {
        Dialect::Postgres => postgres::insert_timeline(tx, jobs, messages, now).await?,
        Dialect::Sqlite => sqlite::insert_timeline(tx, jobs, messages, now).await?,
    }
    record_live_of(tx, jobs, LiveKind::Updated);
    Ok(())
}

/// A live entry of `kind` for each of `jobs`, as each now is: CREATED for new jobs, UPDATED
/// for changes of jobs written before (with a timeline row, or a change the timeline does not
/// show).
fn record_live_of(tx: &Transaction, jobs: &[job::Model], kind: LiveKind) {
    super::record_live(tx, jobs.iter().map(|job| super::live_entry(job, kind)));
}

/// An UPDATE of jobs that sets `sets`.
fn setting(sets: Vec<(job::Column, SimpleExpr)>) -> sea_orm::UpdateMany<job::Entity> {
    sets.into_iter()
        .fold(job::Entity::update_many(), |update, (column, value)| {
            update.col_expr(column, value)
        })
}

/// `job` if it still has the status and attempt its writer saw: the fence of every write.
fn as_seen(job: &job::Model) -> sea_orm::Condition {
    sea_orm::Condition::all()
        .add(job::Column::Id.eq(job.id))
        .add(job::Column::Status.eq(job.status))
        .add(job::Column::Attempt.eq(job.attempt))
}

/// Moves `job` (as its writer last saw it) by `step`, with `change`: one UPDATE fenced by the
/// status and attempt the writer saw, its timeline row and live entry, and the announcement of
/// a queued job. `None` when the job no longer had that status and attempt.
#[tracing::instrument(
    target = "jobgraph::spans",
    level = "debug",
    name = "store.update_status",
    skip_all
)]
pub async fn update_status(
    tx: &Transaction,
    job: &job::Model,
    step: Move,
    change: &Change,
) -> Result<Option<job::Model>> {
    let updated = setting(super::sets(step, change))
        .filter(as_seen(job))
        .exec_with_returning(tx)
        .await?;
    let Some(updated) = updated.into_iter().next() else {
        return Ok(None);
    };
    record(tx, std::slice::from_ref(&updated), change.message.clone()).await?;
    if step.to == JobStatus::Queued {
        super::announce_queued(tx);
    }
    Ok(Some(updated))
}

/// Changes columns of `job` that no status decides (its name, its visibility, its inputs once
/// downloaded), if it still has the status it had; records its live entry. `None` when it
/// changed meanwhile.
#[tracing::instrument(
    target = "jobgraph::spans",
    level = "debug",
    name = "store.update_details",
    skip_all
)]
pub async fn update_details(
    tx: &Transaction,
    job: &job::Model,
    details: Vec<(job::Column, SimpleExpr)>,
) -> Result<Option<job::Model>> {
    let mut update =
        job::Entity::update_many().col_expr(job::Column::UpdatedAt, Expr::value(Utc::now()));
    for (column, value) in details {
        update = update.col_expr(column, value);
    }
    let updated = update
        .filter(job::Column::Id.eq(job.id))
        .filter(job::Column::Status.eq(job.status))
        .exec_with_returning(tx)
        .await?;
    let Some(updated) = updated.into_iter().next() else {
        return Ok(None);
    };
    record_live_of(tx, std::slice::from_ref(&updated), LiveKind::Updated);
    Ok(Some(updated))
}

/// Gives a running attempt stopped by its worker's shutdown one more attempt, so that the
/// stopped one does not use up `max_attempts`. `false` when it is no longer that attempt.
#[tracing::instrument(
    target = "jobgraph::spans",
    level = "debug",
    name = "store.add_attempt",
    skip_all
)]
pub async fn add_attempt(tx: &Transaction, job: &job::Model) -> Result<bool> {
    let added = job::Entity::update_many()
        .col_expr(
            job::Column::MaxAttempts,
            sea_orm::sea_query::ExprTrait::add(Expr::col(job::Column::MaxAttempts), 1),
        )
        .filter(as_seen(job))
        .exec(tx)
        .await?;
    Ok(added.rows_affected == 1)
}

/// Extends the lease of a running attempt (`renew_all` of one). `false` when the job is no
/// longer that attempt's.
#[tracing::instrument(
    target = "jobgraph::spans",
    level = "debug",
    name = "store.renew",
    skip_all
)]
pub async fn renew(db: &impl ConnectionTrait, job: &job::Model, lease: Duration) -> Result<bool> {
    let renewed = renew_all(db, &[(job.id, job.attempt)], lease).await?;
    Ok(renewed.contains(&job.id))
}

/// Extends the leases of the running attempts `held` (each a job and its attempt) that are
/// still theirs, in one statement per `ROWS_PER_INSERT` of them. Returns the jobs renewed; the
/// others are no longer those attempts': cancelled, reclaimed or finished.
pub async fn renew_all(
    db: &impl ConnectionTrait,
    held: &[(JobId, i32)],
    lease: Duration,
) -> Result<std::collections::HashSet<JobId>> {
    let now = Utc::now();
    let expires = lease_end(now, lease);
    let mut renewed = std::collections::HashSet::with_capacity(held.len());
    for chunk in held.chunks(super::ROWS_PER_INSERT) {
        let statement = match Dialect::of(db) {
            Dialect::Postgres => postgres::renew_all(chunk, now, expires),
            Dialect::Sqlite => sqlite::renew_all(chunk, now, expires),
        };
        for row in db.query_all_raw(statement).await? {
            renewed.insert(row.try_get::<JobId>("", "id")?);
        }
    }
    Ok(renewed)
}

/// When a lease of `lease` taken at `now` ends.
pub fn lease_end(now: DateTime<Utc>, lease: Duration) -> DateTime<Utc> {
    now + chrono::Duration::from_std(lease).unwrap_or(chrono::Duration::seconds(30))
}

/// A running attempt's report of its progress (0 to 1) and stage, for `report_all`.
#[derive(Debug, Clone, Copy)]
pub struct Report<'a> {
    /// The job as its runner saw it: the report is its attempt's.
    pub job: &'a job::Model,
    pub progress: Option<f64>,
    pub stage: Option<&'a str>,
}

/// Writes the progress and stage a running attempt reports (`report_all` of one). `None` when
/// the job is no longer that attempt's.
pub async fn report(
    tx: &Transaction,
    job: &job::Model,
    progress: Option<f64>,
    stage: Option<&str>,
) -> Result<Option<job::Model>> {
    let report = Report {
        job,
        progress,
        stage,
    };
    let mut written = report_all(tx, &[report]).await?;
    Ok(written.pop().flatten())
}

/// Writes the reports of running attempts, at most one per attempt, in one UPDATE per
/// `ROWS_PER_INSERT` of them (on SQLite one per report); returns each report's job as written,
/// or `None` when the job is no longer that attempt's. A new stage goes to the timeline;
/// progress alone only to the live log.
#[tracing::instrument(
    target = "jobgraph::spans",
    level = "debug",
    name = "store.report",
    skip_all
)]
pub async fn report_all(
    tx: &Transaction,
    reports: &[Report<'_>],
) -> Result<Vec<Option<job::Model>>> {
    let now = Utc::now();
    let mut written = std::collections::HashMap::with_capacity(reports.len());
    match Dialect::of(tx) {
        Dialect::Postgres => {
            for chunk in reports.chunks(super::ROWS_PER_INSERT) {
                let rows = tx.query_all_raw(postgres::reporting(chunk, now)).await?;
                written.extend(
                    rows::decode(rows)?
                        .into_iter()
                        .map(|job| ((job.id, job.attempt), job)),
                );
            }
        }
        Dialect::Sqlite => {
            for report in reports {
                let statement = rows::returning_statement(
                    sea_orm::DatabaseBackend::Sqlite,
                    reporting(report, now),
                );
                let rows = rows::decode(tx.query_all_raw(statement).await?)?;
                written.extend(rows.into_iter().map(|job| ((job.id, job.attempt), job)));
            }
        }
    }
    let outcomes: Vec<Option<job::Model>> = reports
        .iter()
        .map(|report| written.remove(&(report.job.id, report.job.attempt)))
        .collect();
    let (mut staged, mut unstaged) = (Vec::new(), Vec::new());
    for (report, job) in reports.iter().zip(&outcomes) {
        if let Some(job) = job {
            match report.stage {
                Some(_) => staged.push(job.clone()),
                None => unstaged.push(job.clone()),
            }
        }
    }
    if !staged.is_empty() {
        record(tx, &staged, None).await?;
    }
    record_live_of(tx, &unstaged, LiveKind::Updated);
    Ok(outcomes)
}

/// The UPDATE of one report, fenced by the attempt its runner saw (SQLite's form; PostgreSQL's
/// writes many at once, `postgres::reporting`).
fn reporting(report: &Report<'_>, now: DateTime<Utc>) -> sea_orm::UpdateMany<job::Entity> {
    let mut update = job::Entity::update_many().col_expr(job::Column::UpdatedAt, Expr::value(now));
    if let Some(progress) = report.progress {
        update = update.col_expr(job::Column::Progress, Expr::value(clamped(progress)));
    }
    if let Some(stage) = report.stage {
        update = update.col_expr(job::Column::Stage, Expr::value(Some(stage.to_owned())));
    }
    update
        .filter(job::Column::Id.eq(report.job.id))
        .filter(job::Column::Status.eq(JobStatus::Processing))
        .filter(job::Column::Attempt.eq(report.job.attempt))
}

/// Progress as it is kept: within 0 to 1, and a number (NaN, which no GraphQL `Float` can
/// carry, is kept as 0).
pub(super) fn clamped(progress: f64) -> f64 {
    if progress.is_nan() {
        return 0.0;
    }
    progress.clamp(0.0, 1.0)
}

/// Moves the `chosen` jobs (locked, QUEUED) to PROCESSING for `worker`, with their next attempt
/// and a lease of `lease`, recording their timeline rows and live entries; `at_most` bounds how
/// many it may move. The jobs come back as the database sent them: read them with
/// `Changed::into_jobs` once the transaction has committed.
#[tracing::instrument(
    target = "jobgraph::spans",
    level = "debug",
    name = "store.claim",
    skip_all
)]
pub async fn claim(
    tx: &Transaction,
    chosen: SimpleExpr,
    worker: &str,
    lease: Duration,
    at_most: usize,
) -> Result<Changed> {
    let update = claim_statement(tx, chosen, worker, lease);
    let message = Some(format!("claimed by {worker}"));
    recording(tx, update, message, at_most, rows::ALL).await
}

/// Locks the rows of the jobs `jobs` in `tx`, in the order of their ids, as a change of them
/// would, then the rows of the workspaces `workspaces` (`workspaces::lock`), in one statement.
/// SQLite's one writer needs no row locks: a transaction that writes holds the whole database.
pub async fn lock_jobs_then_workspaces(
    tx: &Transaction,
    jobs: &[JobId],
    workspaces: &[WorkspaceId],
) -> Result<()> {
    if Dialect::of(tx) == Dialect::Sqlite {
        return Ok(());
    }
    // The jobs' lock is the workspaces' filter, so it is taken before any workspace row.
    tx.execute_raw(Statement::from_sql_and_values(
        sea_orm::DatabaseBackend::Postgres,
        "WITH j AS (SELECT id FROM jobs WHERE id = ANY($1::uuid[]) ORDER BY id \
         FOR NO KEY UPDATE) \
         SELECT id FROM workspaces WHERE id = ANY($2::uuid[]) \
         AND (SELECT count(*) FROM j) >= 0 ORDER BY id FOR NO KEY UPDATE",
        [
            crate::db::column(jobs.iter().map(|id| id.uuid())),
            crate::db::column(workspaces.iter().map(|id| id.uuid())),
        ],
    ))
    .await?;
    Ok(())
}

/// The UPDATE of a claim (`claim`), returning the columns of `rows::returning`.
pub fn claim_statement(
    db: &impl ConnectionTrait,
    chosen: SimpleExpr,
    worker: &str,
    lease: Duration,
) -> Statement {
    // Read once the claim holds its locks, so a run never seems to start before the run that
    // freed its slot ended.
    let now = Utc::now();
    let step = Move {
        from: JobStatus::Queued,
        to: JobStatus::Processing,
        refund: false,
        now,
    };
    let change = Change {
        lease: Some(Lease {
            worker: worker.to_owned(),
            expires_at: lease_end(now, lease),
        }),
        ..Default::default()
    };
    let update = setting(super::sets(step, &change));
    // No status filter: it would offer the planner `idx_jobs_claim` (which holds only QUEUED
    // jobs) to find them by id.
    rows::returning_statement(db.get_database_backend(), update.filter(chosen))
}

/// `jobs.id` among the ids `head` selects, as a claim's `chosen`: see the dialects' forms.
pub fn head_ids(
    db: &impl ConnectionTrait,
    head: sea_orm::sea_query::SelectStatement,
) -> SimpleExpr {
    match Dialect::of(db) {
        Dialect::Postgres => postgres::head_ids(head),
        Dialect::Sqlite => job::Column::Id.in_subquery(head),
    }
}

/// Prepares a claim's transaction: how PostgreSQL plans its reads (`postgres::CLAIM_PLAN`).
pub async fn begin_claim(tx: &Transaction) -> Result<()> {
    if Dialect::of(tx) == Dialect::Postgres {
        tx.execute_unprepared(postgres::CLAIM_PLAN).await?;
    }
    Ok(())
}

/// Makes claims under limits take turns, so that two workers never both take a workspace's or
/// a tool's last free slot (PostgreSQL; SQLite's write transaction already does).
pub async fn claim_in_turn(tx: &Transaction) -> Result<()> {
    if Dialect::of(tx) == Dialect::Postgres {
        postgres::claim_in_turn(tx).await?;
    }
    Ok(())
}

/// `update`, an UPDATE of jobs returning `rows::returning`, run with the timeline rows
/// (`message`) and live entries of the jobs it changes; at most `at_most` of them.
async fn recording(
    tx: &Transaction,
    update: Statement,
    message: Option<String>,
    at_most: usize,
    returned: &str,
) -> Result<Changed> {
    if Dialect::of(tx) == Dialect::Sqlite {
        let jobs = rows::decode(tx.query_all_raw(update).await?)?;
        record(tx, &jobs, message).await?;
        return Ok(Changed::Jobs(jobs));
    }
    let statement = postgres::with_timeline(update, message, Utc::now(), at_most, returned);
    let rows = tx.query_all_raw(statement).await?;
    if rows.len() > at_most {
        // Some of them got no timeline row: the caller's transaction must not commit.
        return Err(Error::Internal(anyhow::anyhow!(
            "an update changed {} jobs where at most {at_most} were expected",
            rows.len()
        )));
    }
    Ok(Changed::Rows(rows))
}

/// A run's successful ending, for `complete`.
#[derive(Debug, Clone)]
pub struct Completion {
    /// The job as its runner last saw it.
    pub job: job::Model,
    pub result: serde_json::Value,
    /// Wall time, CPU and memory the run used.
    pub resources: serde_json::Value,
}

/// The columns of a completion each job brings itself.
const COMPLETION_ROW: [job::Column; 2] = [job::Column::Result, job::Column::Resources];

/// The statements that move `completions` to COMPLETED, each only if it still has the status
/// and attempt its runner saw. Built before the transaction that runs them (`complete`) begins.
pub fn completing(db: &impl ConnectionTrait, completions: &[&Completion]) -> Vec<Statement> {
    let now = Utc::now();
    let step = Move {
        from: JobStatus::Processing,
        to: JobStatus::Completed,
        refund: false,
        now,
    };
    // The values stand in for each row's own (`COMPLETION_ROW`).
    let change = Change {
        result: Some(serde_json::Value::Null),
        resources: Some(serde_json::Value::Null),
        ..Default::default()
    };
    let sets = super::sets_per_row(step, &change, "done", &COMPLETION_ROW);
    match Dialect::of(db) {
        Dialect::Postgres => vec![postgres::completing(sets, completions)],
        Dialect::Sqlite => sqlite::completing(sets, completions),
    }
}

/// Runs the `completing` statements; returns the ids of the jobs they moved, with their
/// timeline rows and live entries recorded. `at_most` bounds how many they may move.
#[tracing::instrument(
    target = "jobgraph::spans",
    level = "debug",
    name = "store.complete",
    skip_all
)]
pub async fn complete(
    tx: &Transaction,
    statements: Vec<Statement>,
    at_most: usize,
) -> Result<Vec<JobId>> {
    let mut moved = Vec::with_capacity(at_most);
    for statement in statements {
        moved.extend(recording(tx, statement, None, at_most, "id").await?.ids()?);
    }
    Ok(moved)
}

/// Deletes the jobs `jobs` selects in `tx`, with their timelines and keys (no foreign key
/// deletes those: see migrations 000070 and 000110), recording each deleted job's live entry.
/// Returns the jobs deleted.
#[tracing::instrument(
    target = "jobgraph::spans",
    level = "debug",
    name = "store.delete_jobs",
    skip_all
)]
pub async fn delete_jobs(tx: &Transaction, jobs: sea_orm::Condition) -> Result<Vec<job::Model>> {
    delete_records(tx, jobs.clone()).await?;
    let deleted = job::Entity::delete_many()
        .filter(jobs)
        .exec_with_returning(tx)
        .await?;
    super::record_live(
        tx,
        deleted
            .iter()
            .map(|job| super::live_entry(job, LiveKind::Deleted)),
    );
    Ok(deleted)
}

/// Deletes the timelines and keys of the jobs `jobs` selects, in the transaction that deletes
/// them (a workspace's deletion deletes its jobs by the foreign key).
#[tracing::instrument(
    target = "jobgraph::spans",
    level = "debug",
    name = "store.delete_records",
    skip_all
)]
pub async fn delete_records(tx: &Transaction, jobs: sea_orm::Condition) -> Result<()> {
    let ids = || {
        job::Entity::find()
            .select_only()
            .column(job::Column::Id)
            .filter(jobs.clone())
            .into_query()
    };
    job_event::Entity::delete_many()
        .filter(job_event::Column::JobId.in_subquery(ids()))
        .exec(tx)
        .await?;
    job_key::Entity::delete_many()
        .filter(job_key::Column::JobId.in_subquery(ids()))
        .exec(tx)
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::clamped;

    #[test]
    fn progress_is_kept_as_a_number_within_0_and_1() {
        assert_eq!(clamped(0.25), 0.25);
        assert_eq!(clamped(1.5), 1.0);
        assert_eq!(clamped(-2.0), 0.0);
        assert_eq!(clamped(f64::INFINITY), 1.0);
        assert_eq!(clamped(f64::NAN), 0.0);
    }
}
