//! The durable queue: claiming QUEUED jobs for a worker, renewing and reclaiming leases, and
//! bringing RETRY jobs back once their backoff has passed.
//!
//! A claim is one statement that moves jobs to PROCESSING, bumps their attempt and records the
//! worker and its lease: on PostgreSQL it selects candidates with `FOR UPDATE SKIP LOCKED`, so
//! any number of workers on any number of machines claim disjoint jobs; on SQLite the write
//! transaction is the lock. Every later write of a running job matches its attempt, so a worker
//! that lost its lease cannot touch the job again.

pub mod completions;
pub mod runner;

use std::time::Duration;

use chrono::{DateTime, Utc};
use entity::job::{self, JobStatus};
use entity::live_event::LiveKind;
use sea_orm::{
    ColumnTrait, ConnectionTrait, DatabaseBackend, DatabaseConnection, EntityTrait,
    FromQueryResult, QueryFilter, QueryOrder, QuerySelect, Set, Statement,
};
use uuid::Uuid;

use crate::db;
use crate::error::Result;
use crate::jobs::lifecycle::{self, Change};

/// The PostgreSQL channel on which queued jobs are announced to workers in every process.
pub const CHANNEL: &str = "jobgraph_jobs_queued";

/// Announces, when the transaction commits, that jobs were queued. PostgreSQL folds the
/// announcements of one transaction into one; SQLite serves one process, whose workers are
/// woken in memory.
pub async fn announce(tx: &impl ConnectionTrait) -> Result<()> {
    if tx.get_database_backend() == DatabaseBackend::Postgres {
        tx.execute_unprepared(&format!("NOTIFY {CHANNEL}")).await?;
    }
    Ok(())
}

/// Wakes `wake` whenever any process announces queued jobs, until `shutdown`. Reconnects after
/// a lost connection; the workers' slow poll covers the gap.
pub async fn listen(
    database_url: String,
    wake: std::sync::Arc<tokio::sync::Notify>,
    shutdown: tokio_util::sync::CancellationToken,
) {
    while !shutdown.is_cancelled() {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            Err(err) = listen_once(&database_url, &wake) => {
                tracing::warn!(error = %err, "listening for queued jobs failed; retrying");
            }
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

async fn listen_once(
    database_url: &str,
    wake: &tokio::sync::Notify,
) -> std::result::Result<(), sea_orm::sqlx::Error> {
    let mut listener = sea_orm::sqlx::postgres::PgListener::connect(database_url).await?;
    listener.listen(CHANNEL).await?;
    // Anything queued while nobody listened.
    wake.notify_waiters();
    loop {
        listener.recv().await?;
        wake.notify_waiters();
    }
}

/// Claims up to `limit` QUEUED jobs, highest priority then oldest first, for `worker`.
pub async fn claim(
    db: &DatabaseConnection,
    worker: &str,
    limit: u64,
    lease: Duration,
) -> Result<Vec<job::Model>> {
    if limit == 0 {
        return Ok(Vec::new());
    }
    let now = Utc::now();
    let expires = now + chrono::Duration::from_std(lease).unwrap_or(chrono::Duration::seconds(30));
    let backend = db.get_database_backend();
    // PostgreSQL numbers its parameters; SQLite takes them in order of appearance.
    let (sql, values): (&str, Vec<sea_orm::Value>) = match backend {
        DatabaseBackend::Postgres => (
            "UPDATE jobs SET status = 'PROCESSING', attempt = attempt + 1, worker_id = $1, \
             lease_expires_at = $2, heartbeat_at = $3, started_at = $3, updated_at = $3, \
             stage = NULL, run_after = NULL \
             WHERE id IN (SELECT id FROM jobs WHERE status = 'QUEUED' \
             ORDER BY priority DESC, queued_at ASC LIMIT $4 FOR UPDATE SKIP LOCKED) \
             RETURNING *",
            vec![
                worker.into(),
                expires.into(),
                now.into(),
                (limit as i64).into(),
            ],
        ),
        _ => (
            "UPDATE jobs SET status = 'PROCESSING', attempt = attempt + 1, worker_id = ?, \
             lease_expires_at = ?, heartbeat_at = ?, started_at = ?, updated_at = ?, \
             stage = NULL, run_after = NULL \
             WHERE id IN (SELECT id FROM jobs WHERE status = 'QUEUED' \
             ORDER BY priority DESC, queued_at ASC LIMIT ?) \
             RETURNING *",
            vec![
                worker.into(),
                expires.into(),
                now.into(),
                now.into(),
                now.into(),
                (limit as i64).into(),
            ],
        ),
    };
    let tx = db::begin_write(db).await?;
    let claimed =
        job::Model::find_by_statement(Statement::from_sql_and_values(backend, sql, values))
            .all(&tx)
            .await?;
    lifecycle::record_events(&tx, &claimed, Some(format!("claimed by {worker}"))).await?;
    tx.commit().await?;
    Ok(claimed)
}

/// Extends the lease of a job this worker runs. `false` when the job is no longer this
/// attempt's: cancelled, reclaimed or finished.
pub async fn renew(db: &impl ConnectionTrait, job: &job::Model, lease: Duration) -> Result<bool> {
    let now = Utc::now();
    let expires = now + chrono::Duration::from_std(lease).unwrap_or(chrono::Duration::seconds(30));
    let renewed = job::Entity::update_many()
        .col_expr(
            job::Column::LeaseExpiresAt,
            sea_orm::sea_query::Expr::value(expires),
        )
        .col_expr(
            job::Column::HeartbeatAt,
            sea_orm::sea_query::Expr::value(now),
        )
        .filter(job::Column::Id.eq(job.id))
        .filter(job::Column::Status.eq(JobStatus::Processing))
        .filter(job::Column::Attempt.eq(job.attempt))
        .exec(db)
        .await?;
    Ok(renewed.rows_affected == 1)
}

/// Reports progress and stage of a running attempt; `false` when it is no longer this
/// attempt's. A new stage is written to the timeline.
pub async fn report(
    db: &DatabaseConnection,
    job: &job::Model,
    progress: Option<f64>,
    stage: Option<&str>,
) -> Result<bool> {
    let tx = db::begin_write(db).await?;
    let mut update = job::ActiveModel {
        updated_at: Set(Utc::now()),
        ..Default::default()
    };
    if let Some(progress) = progress {
        update.progress = Set(progress.clamp(0.0, 1.0));
    }
    if let Some(stage) = stage {
        update.stage = Set(Some(stage.to_owned()));
    }
    let updated = job::Entity::update_many()
        .set(update)
        .filter(job::Column::Id.eq(job.id))
        .filter(job::Column::Status.eq(JobStatus::Processing))
        .filter(job::Column::Attempt.eq(job.attempt))
        .exec_with_returning(&tx)
        .await?;
    let Some(updated) = updated.into_iter().next() else {
        return Ok(false);
    };
    if stage.is_some() {
        lifecycle::record_event(&tx, &updated, None).await?;
    } else {
        crate::live::job_changed(&tx, &updated, LiveKind::Updated).await?;
    }
    tx.commit().await?;
    Ok(true)
}

/// The delay before attempt `attempt + 1`: exponential from 1 s, capped at 5 minutes, with up
/// to 25% jitter so that failed jobs do not come back all at once.
pub fn backoff(attempt: i32) -> chrono::Duration {
    let base = 1000i64
        .saturating_mul(1i64 << attempt.clamp(0, 20))
        .min(300_000);
    let jitter = rand::random_range(0..=base / 4);
    chrono::Duration::milliseconds(base + jitter)
}

/// Ends an attempt that failed: RETRY with backoff while attempts remain and the failure is
/// transient, FAILED (refunded) otherwise.
pub async fn fail_attempt(
    db: &DatabaseConnection,
    job: &job::Model,
    message: String,
    code: &str,
    transient: bool,
) -> Result<job::Model> {
    let tx = db::begin_write(db).await?;
    let retry = transient && job.attempt < job.max_attempts;
    let change = Change {
        message: Some(message.clone()),
        error_message: Some(message),
        error_code: Some(code.to_owned()),
        run_after: retry.then(|| Utc::now() + backoff(job.attempt)),
        ..Default::default()
    };
    let to = if retry {
        JobStatus::Retry
    } else {
        JobStatus::Failed
    };
    let moved = lifecycle::transition(&tx, job, to, change).await?;
    tx.commit().await?;
    Ok(moved)
}

/// Returns jobs whose worker stopped renewing its lease to the queue (as a transient
/// failure of that attempt). Returns how many were reclaimed.
pub async fn reclaim_expired(db: &DatabaseConnection, now: DateTime<Utc>) -> Result<usize> {
    let expired = job::Entity::find()
        .filter(job::Column::Status.eq(JobStatus::Processing))
        .filter(job::Column::LeaseExpiresAt.lt(now))
        .limit(500)
        .all(db)
        .await?;
    let mut reclaimed = 0;
    for job in expired {
        let worker = job.worker_id.clone().unwrap_or_default();
        match fail_attempt(
            db,
            &job,
            format!("worker {worker} stopped answering; its lease expired"),
            "LEASE_EXPIRED",
            true,
        )
        .await
        {
            Ok(_) => reclaimed += 1,
            // Finished or renewed meanwhile.
            Err(crate::error::Error::Conflict(_)) => {}
            Err(err) => return Err(err),
        }
    }
    Ok(reclaimed)
}

/// Queues again the RETRY jobs whose backoff has passed. Returns how many.
pub async fn requeue_due(db: &DatabaseConnection, now: DateTime<Utc>) -> Result<usize> {
    let due = job::Entity::find()
        .filter(job::Column::Status.eq(JobStatus::Retry))
        .filter(job::Column::RunAfter.lte(now))
        .order_by_asc(job::Column::RunAfter)
        .limit(500)
        .all(db)
        .await?;
    let mut requeued = 0;
    for job in due {
        let tx = db::begin_write(db).await?;
        let change = Change {
            message: Some(format!(
                "attempt {} of {}",
                job.attempt + 1,
                job.max_attempts
            )),
            ..Default::default()
        };
        match lifecycle::transition(&tx, &job, JobStatus::Queued, change).await {
            Ok(_) => {
                tx.commit().await?;
                requeued += 1;
            }
            Err(crate::error::Error::Conflict(_)) => {}
            Err(err) => return Err(err),
        }
    }
    Ok(requeued)
}

/// A stable name for this worker process.
pub fn worker_name() -> String {
    let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "worker".to_owned());
    format!(
        "{host}-{}-{}",
        std::process::id(),
        &Uuid::now_v7().simple().to_string()[24..]
    )
}
