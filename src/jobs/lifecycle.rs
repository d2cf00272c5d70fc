//! The one writer of a job's status. Every change goes through `transition`: the state machine
//! is asked, the row is updated only if it still has the status (and attempt) the caller saw,
//! the timeline gets its event (and the live log its entry) and a due refund is booked, all in
//! the caller's transaction.
//! Two racing finishers therefore cannot both succeed, and a job is refunded at most once.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};
use entity::credit_transaction::TransactionKind;
use entity::job::{self, JobStatus};
use entity::live_event::LiveKind;
use entity::{job_event, job_key};
use sea_orm::{
    ActiveEnum as _, ActiveValue::NotSet, ColumnTrait, ConnectionTrait as _, DatabaseBackend,
    EntityTrait, QueryFilter, Set, Statement,
};
use serde_json::Value;
use uuid::Uuid;

use super::rows::Changed;
use super::state;
use crate::credits::ledger;
use crate::error::{Error, Result};

/// What else changes with a status.
#[derive(Debug, Clone, Default)]
pub struct Change {
    pub stage: Option<String>,
    pub message: Option<String>,
    pub progress: Option<f64>,
    pub result: Option<Value>,
    pub error_message: Option<String>,
    pub error_code: Option<String>,
    pub actor_id: Option<Uuid>,
    /// For RETRY: when the job may be queued again.
    pub run_after: Option<DateTime<Utc>>,
    /// Wall time, CPU and memory the run used.
    pub resources: Option<Value>,
}

/// Rows written by one multi-row INSERT: far below the parameter limits of both databases.
const ROWS_PER_INSERT: usize = 1000;

/// Records a timeline event.
pub async fn record_event(
    tx: &crate::db::Transaction,
    job: &job::Model,
    message: Option<String>,
) -> Result<()> {
    record_events(tx, std::slice::from_ref(job), message).await
}

/// Records the same timeline event for many jobs, as each now is: one INSERT for the timeline
/// and one for the live log (per thousand jobs).
pub async fn record_events(
    tx: &crate::db::Transaction,
    jobs: &[job::Model],
    message: Option<String>,
) -> Result<()> {
    let now = Utc::now();
    if tx.get_database_backend() == DatabaseBackend::Postgres {
        insert_events_postgres(tx, jobs, message, now).await?;
    } else {
        insert_events(tx, jobs, message, now).await?;
    }
    announce_changes(tx, jobs).await
}

/// Runs `update`, an UPDATE of jobs that returns the columns of `rows::returning`, and records
/// the timeline event `message` for each job it changed, as `record_events` would. Returns the
/// changed jobs (`Changed::into_jobs` reads them as they now are, best once the transaction has
/// committed). `at_most` bounds how many jobs it may change.
///
/// On PostgreSQL the statement writes the timeline rows and the live entries itself, from the
/// rows it changes: the queue changes a thousand jobs at a time this way (claims, completions),
/// and neither costs a round trip, a thousand rows sent back to the database, nor client-side
/// work while the transaction is open. Its live entries are numbered when the statement ends,
/// before any the transaction records later (`crate::live::jobs_changed`).
pub async fn update_recording(
    tx: &crate::db::Transaction,
    update: Statement,
    message: Option<String>,
    at_most: usize,
) -> Result<Changed> {
    recording(tx, update, message, at_most, "*").await
}

/// `update_recording` for a writer that needs only the ids of the changed jobs: on PostgreSQL
/// the jobs' rows are not sent back.
pub async fn update_recording_ids(
    tx: &crate::db::Transaction,
    update: Statement,
    message: Option<String>,
    at_most: usize,
) -> Result<Vec<Uuid>> {
    Ok(recording(tx, update, message, at_most, "id").await?.ids()?)
}

/// `update_recording`, returning the columns `returned` of the changed jobs on PostgreSQL.
async fn recording(
    tx: &crate::db::Transaction,
    update: Statement,
    message: Option<String>,
    at_most: usize,
    returned: &str,
) -> Result<Changed> {
    if tx.get_database_backend() != DatabaseBackend::Postgres {
        let jobs = super::rows::decode(tx.query_all_raw(update).await?)?;
        record_events(tx, &jobs, message).await?;
        return Ok(Changed::Jobs(jobs));
    }
    let statement = with_timeline(update, message, Utc::now(), at_most, returned);
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

/// `update` (PostgreSQL, numbered parameters) wrapped so that it also inserts a timeline row and
/// a live entry for each job it returns, and still returns those jobs. The event ids come from
/// here (UUIDv7, in the writer's order, as every timeline row's id does), paired with the
/// changed rows in the order they come. The statement returns the columns `returned` of them.
fn with_timeline(
    update: Statement,
    message: Option<String>,
    now: DateTime<Utc>,
    at_most: usize,
    returned: &str,
) -> Statement {
    let mut values = update.values.map(|values| values.0).unwrap_or_default();
    let first = values.len() + 1;
    let sql = format!(
        "WITH changed AS ({update}), \
         timeline AS (INSERT INTO job_events \
         (id, job_id, workspace_id, status, stage, message, progress, attempt, created_at) \
         SELECT e.id, c.id, c.workspace_id, c.status, c.stage, ${message}, c.progress, \
         c.attempt, ${now} \
         FROM (SELECT changed.id, changed.workspace_id, changed.status, changed.stage, \
         changed.progress, changed.attempt, row_number() OVER () AS n FROM changed) AS c \
         JOIN unnest(${ids}::uuid[]) WITH ORDINALITY AS e (id, n) ON e.n = c.n), \
         {live} \
         SELECT {returned} FROM changed",
        update = update.sql,
        message = first,
        now = first + 1,
        ids = first + 2,
        live = crate::live::entries_of_changed_jobs("changed", &format!("${}", first + 1)),
    );
    values.extend([
        message.into(),
        now.into(),
        crate::db::column((0..at_most).map(|_| Uuid::now_v7())),
    ]);
    Statement::from_sql_and_values(DatabaseBackend::Postgres, sql, values)
}

/// The live entries of jobs just created or changed.
async fn announce_changes(tx: &crate::db::Transaction, jobs: &[job::Model]) -> Result<()> {
    crate::live::jobs_changed(tx, jobs, |job| {
        if job.status == JobStatus::Pending {
            LiveKind::Created
        } else {
            LiveKind::Updated
        }
    })
    .await
}

/// The timeline rows of `jobs` in multi-row INSERTs.
async fn insert_events(
    tx: &crate::db::Transaction,
    jobs: &[job::Model],
    message: Option<String>,
    now: DateTime<Utc>,
) -> Result<()> {
    for chunk in jobs.chunks(ROWS_PER_INSERT) {
        job_event::Entity::insert_many(chunk.iter().map(|job| job_event::ActiveModel {
            id: Set(Uuid::now_v7()),
            job_id: Set(job.id),
            workspace_id: Set(job.workspace_id),
            status: Set(job.status),
            stage: Set(job.stage.clone()),
            message: Set(message.clone()),
            progress: Set(job.progress),
            attempt: Set(job.attempt),
            created_at: Set(now),
        }))
        .exec_without_returning(tx)
        .await?;
    }
    Ok(())
}

/// The timeline rows of `jobs` in one statement of fixed text (see `db::column`).
async fn insert_events_postgres(
    tx: &crate::db::Transaction,
    jobs: &[job::Model],
    message: Option<String>,
    now: DateTime<Utc>,
) -> Result<()> {
    use crate::db::column;
    tx.execute_raw(Statement::from_sql_and_values(
        DatabaseBackend::Postgres,
        "INSERT INTO job_events \
         (id, job_id, workspace_id, status, stage, message, progress, attempt, created_at) \
         SELECT e.id, e.job_id, e.workspace_id, e.status, CASE WHEN e.staged THEN e.stage END, \
         $1, e.progress, e.attempt, $2 \
         FROM unnest($3::uuid[], $4::uuid[], $5::uuid[], $6::text[], $7::bool[], $8::text[], \
         $9::float8[], $10::int4[]) \
         AS e (id, job_id, workspace_id, status, staged, stage, progress, attempt)",
        [
            message.into(),
            now.into(),
            column(jobs.iter().map(|_| Uuid::now_v7())),
            column(jobs.iter().map(|job| job.id)),
            column(jobs.iter().map(|job| job.workspace_id)),
            column(jobs.iter().map(|job| job.status.to_value())),
            column(jobs.iter().map(|job| job.stage.is_some())),
            column(jobs.iter().map(|job| job.stage.clone().unwrap_or_default())),
            column(jobs.iter().map(|job| job.progress)),
            column(jobs.iter().map(|job| job.attempt)),
        ],
    ))
    .await?;
    Ok(())
}

/// Deletes the timelines and the keys (`job_keys`) of the jobs `jobs` selects, in the
/// transaction that deletes them: no foreign key does it (see migrations 000070 and 000110).
pub async fn delete_records(tx: &crate::db::Transaction, jobs: sea_orm::Condition) -> Result<()> {
    use sea_orm::{QuerySelect as _, QueryTrait as _};
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

/// Inserts new jobs with their keys (`job_keys`), and returns the jobs as written. On
/// PostgreSQL one statement writes both, so a submission's keys cost no round trip of their own.
pub async fn insert_with_keys(
    tx: &crate::db::Transaction,
    rows: Vec<job::ActiveModel>,
) -> Result<Vec<job::Model>> {
    use sea_orm::QueryTrait as _;
    let backend = tx.get_database_backend();
    if backend != DatabaseBackend::Postgres {
        let jobs = job::Entity::insert_many(rows)
            .exec_with_returning(tx)
            .await?;
        for chunk in jobs.chunks(ROWS_PER_INSERT) {
            job_key::Entity::insert_many(chunk.iter().map(|job| job_key::ActiveModel {
                job_id: Set(job.id),
                workspace_id: Set(job.workspace_id),
                tool: Set(job.tool.clone()),
                submitter_id: Set(job.submitter_id),
            }))
            .exec_without_returning(tx)
            .await?;
        }
        return Ok(jobs);
    }
    let mut insert = job::Entity::insert_many(rows).into_query();
    insert.returning(sea_orm::sea_query::Query::returning().columns(super::rows::returning()));
    let insert = backend.build(&insert);
    let sql = format!(
        "WITH inserted AS ({}), \
         keys AS (INSERT INTO job_keys (job_id, workspace_id, tool, submitter_id) \
         SELECT id, workspace_id, tool, submitter_id FROM inserted) \
         SELECT * FROM inserted",
        insert.sql
    );
    let statement = Statement::from_sql_and_values(
        backend,
        sql,
        insert.values.map(|values| values.0).unwrap_or_default(),
    );
    Ok(super::rows::decode(tx.query_all_raw(statement).await?)?)
}

/// Moves `job` (as the caller last saw it) to `to`. CONFLICT if the state machine refuses, or
/// if the job changed meanwhile.
pub async fn transition(
    tx: &crate::db::Transaction,
    job: &job::Model,
    to: JobStatus,
    change: Change,
) -> Result<job::Model> {
    state::transition(job.status, to).map_err(|err| Error::conflict(err.to_string()))?;
    let refund = state::refunds(job.status, to) && job.credit_cost > 0 && !job.refunded;
    let actor_id = change.actor_id;
    let message = change.message.clone();
    let mut update = status_update(job.status, to, change, Utc::now());
    if refund {
        update.refunded = Set(true);
    }
    let updated = job::Entity::update_many()
        .set(update)
        .filter(job::Column::Id.eq(job.id))
        .filter(job::Column::Status.eq(job.status))
        .filter(job::Column::Attempt.eq(job.attempt))
        .exec_with_returning(tx)
        .await?;
    let Some(updated) = updated.into_iter().next() else {
        let now = job::Entity::find_by_id(job.id).one(tx).await?;
        return Err(changed_meanwhile(now.map(|now| now.status)));
    };
    record_event(tx, &updated, message).await?;
    if to == JobStatus::Queued {
        crate::queue::announce(tx).await?;
    }
    if refund {
        ledger::append(
            tx,
            ledger::Entry {
                workspace_id: job.workspace_id,
                kind: TransactionKind::Refund,
                amount: job.credit_cost,
                actor_id,
                job_id: Some(job.id),
                note: Some(format!("refund: job {}", state::name(to))),
            },
        )
        .await?;
    }
    Ok(updated)
}

/// CONFLICT for a job that no longer had the status and attempt its writer saw: it is now
/// `now`, or gone.
fn changed_meanwhile(now: Option<JobStatus>) -> Error {
    Error::conflict(match now {
        Some(status) => format!(
            "the job changed meanwhile: it is now {}",
            state::name(status)
        ),
        None => "the job was deleted meanwhile".to_owned(),
    })
}

/// The columns a move from `from` to `to` sets, with what else `change` brings; `refunded` is
/// the caller's.
fn status_update(
    from: JobStatus,
    to: JobStatus,
    change: Change,
    now: DateTime<Utc>,
) -> job::ActiveModel {
    let mut update = job::ActiveModel {
        status: Set(to),
        updated_at: Set(now),
        ..Default::default()
    };
    update.stage = match change.stage {
        Some(stage) => Set(Some(stage)),
        None if to.is_final() => Set(None),
        None => NotSet,
    };
    if let Some(progress) = change.progress {
        update.progress = Set(progress.clamp(0.0, 1.0));
    }
    match to {
        JobStatus::Queued => {
            // `queued_at` is the job's place in the claim order. A job back for another attempt
            // (after a retry's backoff, or from a run whose worker was lost or stopped) keeps
            // the place it waited for; one queued anew (by a user's retry) joins the end.
            if !matches!(from, JobStatus::Retry | JobStatus::Processing) {
                update.queued_at = Set(Some(now));
            }
            update.worker_id = Set(None);
            update.lease_expires_at = Set(None);
        }
        JobStatus::Processing => update.started_at = Set(Some(now)),
        JobStatus::Completed => update.progress = Set(1.0),
        _ => {}
    }
    if to.is_final() {
        update.finished_at = Set(Some(now));
        update.lease_expires_at = Set(None);
    }
    if let Some(result) = change.result {
        update.result = Set(Some(result));
    }
    if change.error_message.is_some() {
        update.error_message = Set(change.error_message);
        update.error_code = Set(change.error_code);
    }
    if let Some(run_after) = change.run_after {
        update.run_after = Set(Some(run_after));
    }
    if let Some(resources) = change.resources {
        update.resources = Set(Some(resources));
    }
    update
}

/// The status a new job is written with, and its `queued_at`: QUEUED at `now` when its inputs
/// are ready, PENDING while it waits for downloads. A ready job takes the state machine's
/// PENDING → QUEUED in its INSERT, rather than by an UPDATE of the row just written;
/// `record_submitted` gives it both events.
pub fn submitted_status(ready: bool, now: DateTime<Utc>) -> (JobStatus, Option<DateTime<Utc>>) {
    if ready && state::transition(JobStatus::Pending, JobStatus::Queued).is_ok() {
        (JobStatus::Queued, Some(now))
    } else {
        (JobStatus::Pending, None)
    }
}

/// Records the submission of new jobs written by the caller (with `submitted_status`): each
/// job's PENDING event, as it was submitted.
pub async fn record_submitted(tx: &crate::db::Transaction, jobs: &[job::Model]) -> Result<()> {
    let submitted: Vec<job::Model> = jobs
        .iter()
        .map(|job| job::Model {
            status: JobStatus::Pending,
            queued_at: None,
            ..job.clone()
        })
        .collect();
    record_events(tx, &submitted, Some("submitted".to_owned())).await
}

/// Records that the new jobs written QUEUED were queued (their QUEUED event, after their
/// PENDING one), and announces them to workers.
pub async fn record_queued_at_submission(
    tx: &crate::db::Transaction,
    jobs: &[job::Model],
) -> Result<()> {
    let queued: Vec<job::Model> = jobs
        .iter()
        .filter(|job| job.status == JobStatus::Queued)
        .cloned()
        .collect();
    if queued.is_empty() {
        return Ok(());
    }
    record_events(tx, &queued, Some("inputs ready".to_owned())).await?;
    crate::queue::announce(tx).await
}

/// What a successful run leaves on its job.
#[derive(Debug, Clone)]
pub struct Completion {
    /// The job as its runner last saw it.
    pub job: job::Model,
    pub result: Value,
    /// Wall time, CPU and memory the run used.
    pub resources: Value,
}

/// Many jobs to move to COMPLETED, as `transition` would one by one: one UPDATE (per thousand
/// on SQLite) fenced by the status and attempt each runner saw, with their timeline and live
/// entries. The statements are built by `new`, before the transaction that `write` runs them in
/// begins. Only the ids of the moved jobs come back: a completion changes nothing its runner
/// reads (COMPLETED gives no refund).
pub struct Completing<'a> {
    completions: &'a [Completion],
    /// The refusals of the state machine, by position; `None` for the jobs to move.
    refused: Vec<Option<Error>>,
    statements: Vec<Statement>,
}

impl<'a> Completing<'a> {
    pub fn new(backend: DatabaseBackend, completions: &'a [Completion]) -> Self {
        let refused: Vec<Option<Error>> = completions
            .iter()
            .map(|c| {
                // COMPLETED never gives the charge back: there is no refund to book here.
                debug_assert!(!state::refunds(c.job.status, JobStatus::Completed));
                state::transition(c.job.status, JobStatus::Completed)
                    .err()
                    .map(|err| Error::conflict(err.to_string()))
            })
            .collect();
        let allowed: Vec<usize> = (0..completions.len())
            .filter(|&i| refused[i].is_none())
            .collect();
        let statements = completing(backend, completions, &allowed, Utc::now());
        Completing {
            completions,
            refused,
            statements,
        }
    }

    /// Runs the UPDATEs in `tx`. Returns each completion's outcome in order: done, or CONFLICT
    /// for a job the state machine refused or that changed meanwhile, which is left untouched.
    pub async fn write(self, tx: &crate::db::Transaction) -> Result<Vec<Result<()>>> {
        let allowed = self.refused.iter().filter(|r| r.is_none()).count();
        let mut moved: HashSet<Uuid> = HashSet::with_capacity(allowed);
        for statement in self.statements {
            moved.extend(update_recording_ids(tx, statement, None, allowed).await?);
        }
        let missing: Vec<Uuid> = self
            .completions
            .iter()
            .zip(&self.refused)
            .filter(|(c, refused)| refused.is_none() && !moved.contains(&c.job.id))
            .map(|(c, _)| c.job.id)
            .collect();
        let mut now_as: HashMap<Uuid, JobStatus> = HashMap::new();
        for chunk in missing.chunks(ROWS_PER_INSERT) {
            for job in job::Entity::find()
                .filter(job::Column::Id.is_in(chunk.iter().copied()))
                .all(tx)
                .await?
            {
                now_as.insert(job.id, job.status);
            }
        }
        Ok(self
            .completions
            .iter()
            .zip(self.refused)
            .map(|(c, refused)| match refused {
                Some(err) => Err(err),
                None if moved.remove(&c.job.id) => Ok(()),
                None => Err(changed_meanwhile(now_as.get(&c.job.id).copied())),
            })
            .collect())
    }
}

/// The UPDATEs that move the jobs of `completions` at `chosen` to COMPLETED, each only if it
/// still has the status and attempt its runner saw, returning the rows they moved. PostgreSQL
/// gets one statement of fixed text (see `db::column`); SQLite a multi-row VALUES list per
/// thousand jobs.
fn completing(
    backend: sea_orm::DatabaseBackend,
    completions: &[Completion],
    chosen: &[usize],
    now: DateTime<Utc>,
) -> Vec<Statement> {
    const SET: &str = "UPDATE jobs SET status = 'COMPLETED', progress = 1.0, stage = NULL, \
         finished_at = $1, updated_at = $1, lease_expires_at = NULL, \
         result = done.result, resources = done.resources \
         FROM done WHERE jobs.id = done.id AND jobs.status = done.status \
         AND jobs.attempt = done.attempt";
    if backend == DatabaseBackend::Postgres {
        use crate::db::column;
        let chosen = || chosen.iter().map(|&i| &completions[i]);
        // `jobs.id = ANY(ARRAY(...))` reaches the group's jobs through the primary key. Seeing
        // how many rows the arrays hold, PostgreSQL would otherwise hash the whole `jobs` table
        // to join a thousand of them, until the table outgrows its random-read estimate: the
        // cost of every group grew with the history, to 30-50 ms at 40,000 jobs.
        let sql = format!(
            "WITH done AS (SELECT * FROM unnest($2::uuid[], $3::text[], $4::int4[], \
             $5::jsonb[], $6::jsonb[]) AS d (id, status, attempt, result, resources)) \
             {SET} AND jobs.id = ANY(ARRAY(SELECT id FROM done)) {}",
            super::rows::returning_sql("jobs")
        );
        return vec![Statement::from_sql_and_values(
            backend,
            sql,
            [
                now.into(),
                column(chosen().map(|c| c.job.id)),
                column(chosen().map(|c| c.job.status.to_value())),
                column(chosen().map(|c| c.job.attempt)),
                column(chosen().map(|c| c.result.clone())),
                column(chosen().map(|c| c.resources.clone())),
            ],
        )];
    }
    // SQLite: anonymous `?` (it looks numbered ones up in a list, once per parameter bound),
    // in the order of the text: the rows, then `now` twice.
    let set = SET.replace("$1", "?");
    chosen
        .chunks(ROWS_PER_INSERT)
        .map(|chunk| {
            let mut values: Vec<sea_orm::Value> = Vec::with_capacity(chunk.len() * 5 + 2);
            let mut rows = Vec::with_capacity(chunk.len());
            for &i in chunk {
                let c = &completions[i];
                rows.push("(?, ?, ?, ?, ?)");
                values.extend([
                    c.job.id.into(),
                    c.job.status.to_value().into(),
                    c.job.attempt.into(),
                    c.result.clone().into(),
                    c.resources.clone().into(),
                ]);
            }
            values.extend([now.into(), now.into()]);
            let sql = format!(
                "WITH done (id, status, attempt, result, resources) AS (VALUES {}) {set} \
                 RETURNING *",
                rows.join(", ")
            );
            Statement::from_sql_and_values(backend, sql, values)
        })
        .collect()
}
