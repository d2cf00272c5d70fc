//! A worker: claims jobs up to its concurrency, runs each with its tool's executor under the
//! tool's time limit while a heartbeat renews the lease, records the outcome, and keeps the
//! queue healthy (expired leases reclaimed, due retries queued again).

use std::sync::Arc;
use std::time::{Duration, Instant};

use entity::job::{self, JobStatus};
use sea_orm::DatabaseConnection;
use serde_json::json;
use tokio::sync::Notify;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::db;
use crate::error::Error;
use crate::executors::{self, Failure, Output, Progress};
use crate::files::{self, Files, NewFile};
use crate::jobs::lifecycle::{self, Change, Completion};
use crate::queue::completions::Completions;
use crate::tools::Catalog;

/// How a worker runs.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// Jobs run at once.
    pub concurrency: usize,
    /// How long a claim holds without a heartbeat.
    pub lease: Duration,
    /// How often an idle worker looks for work when nobody wakes it.
    pub poll: Duration,
    /// How long running jobs may finish after shutdown begins.
    pub grace: Duration,
    /// How often expired leases are reclaimed and due retries queued.
    pub maintenance: Duration,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        WorkerConfig {
            concurrency: 2,
            lease: Duration::from_secs(30),
            poll: Duration::from_millis(500),
            grace: Duration::from_secs(10),
            maintenance: Duration::from_secs(1),
        }
    }
}

/// A worker over one database.
pub struct Worker {
    pub db: DatabaseConnection,
    pub catalog: Arc<Catalog>,
    pub name: String,
    pub config: WorkerConfig,
    /// Notified when jobs are queued in this process.
    pub wake: Arc<Notify>,
    /// Where `command` runs get their working directories.
    pub work_root: std::path::PathBuf,
    /// On PostgreSQL, the URL to listen on for jobs queued by other processes.
    pub listen_url: Option<String>,
    pub metrics: Arc<crate::metrics::Metrics>,
    /// Where inputs are read from and outputs stored.
    pub files: Arc<Files>,
}

impl Worker {
    /// Runs until `shutdown` is cancelled, then lets running jobs finish within the grace
    /// period and hands the rest back to the queue.
    pub async fn run(self, shutdown: CancellationToken) {
        let worker = Arc::new(self);
        tracing::info!(worker = %worker.name, concurrency = worker.config.concurrency, "worker started");
        let mut running: JoinSet<()> = JoinSet::new();
        let mut in_flight: Vec<(tokio::task::AbortHandle, job::Model)> = Vec::new();
        let mut maintenance = tokio::time::interval(worker.config.maintenance);
        let completions = Completions::start(worker.db.clone());
        // Armed before the first claim, so nothing queued from now on goes unnoticed.
        if let Some(url) = worker.listen_url.clone() {
            tokio::spawn(crate::queue::listen(
                url,
                worker.wake.clone(),
                shutdown.clone(),
            ));
        }
        loop {
            // Every run that ended frees its slot before the claim: short runs end in groups
            // (their completions are written together), and are claimed again in groups.
            while running.try_join_next().is_some() {}
            in_flight.retain(|(handle, _)| !handle.is_finished());
            let free = worker.config.concurrency.saturating_sub(running.len());
            if free > 0 {
                match crate::queue::claim(
                    &worker.db,
                    &worker.name,
                    free as u64,
                    worker.config.lease,
                )
                .await
                {
                    Ok(jobs) => {
                        worker.metrics.claimed(&jobs);
                        for job in jobs {
                            let handle = running.spawn(execute(
                                worker.clone(),
                                completions.clone(),
                                job.clone(),
                            ));
                            in_flight.push((handle, job));
                        }
                    }
                    Err(err) => tracing::error!(error = %err, "claiming jobs failed"),
                }
            }
            worker.metrics.set_running(&worker.name, running.len());
            tokio::select! {
                _ = shutdown.cancelled() => break,
                Some(_) = running.join_next(), if !running.is_empty() => {}
                _ = worker.wake.notified() => {}
                _ = tokio::time::sleep(worker.config.poll) => {}
                _ = maintenance.tick() => {
                    let now = chrono::Utc::now();
                    if let Err(err) = crate::queue::reclaim_expired(&worker.db, now).await {
                        tracing::error!(error = %err, "reclaiming expired leases failed");
                    }
                    if let Err(err) = crate::queue::requeue_due(&worker.db, now).await {
                        tracing::error!(error = %err, "queueing retries failed");
                    }
                }
            }
        }
        tracing::info!(worker = %worker.name, running = running.len(), "worker stopping");
        let _ = tokio::time::timeout(worker.config.grace, async {
            while running.join_next().await.is_some() {}
        })
        .await;
        running.abort_all();
        for (handle, job) in in_flight {
            if handle.is_finished() {
                continue;
            }
            hand_back(&worker.db, &job).await;
        }
        tracing::info!(worker = %worker.name, "worker stopped");
    }
}

/// Returns an unfinished job to the queue at shutdown.
async fn hand_back(db: &DatabaseConnection, job: &job::Model) {
    let result = async {
        let tx = db::begin_write(db).await?;
        lifecycle::transition(
            &tx,
            job,
            JobStatus::Queued,
            Change {
                message: Some("handed back: the worker shut down".to_owned()),
                ..Default::default()
            },
        )
        .await?;
        tx.commit().await?;
        Ok::<_, Error>(())
    }
    .await;
    match result {
        Ok(()) | Err(Error::Conflict(_)) => {}
        Err(err) => tracing::error!(job.id = %job.id, error = %err, "handing a job back failed"),
    }
}

enum Outcome {
    Done(Output),
    Failed(Failure),
    TimedOut(u64),
    Abandoned,
}

/// Runs one claimed job to its end.
async fn execute(worker: Arc<Worker>, completions: Completions, job: job::Model) {
    let span =
        tracing::info_span!("job", job.id = %job.id, attempt = job.attempt, tool = %job.tool);
    let _enter = span.enter();
    let started = Instant::now();
    let outcome = match worker.catalog.get(&job.tool).cloned() {
        None => Outcome::Failed(Failure::Permanent(format!(
            "the tool `{}` is no longer offered",
            job.tool
        ))),
        Some(tool) => {
            let progress = Progress {
                db: &worker.db,
                job: &job,
            };
            let limit = Duration::from_secs(tool.timeout_seconds);
            let heartbeat_every = (worker.config.lease / 3).min(Duration::from_secs(2));
            let heartbeat = async {
                loop {
                    tokio::time::sleep(heartbeat_every).await;
                    match crate::queue::renew(&worker.db, &job, worker.config.lease).await {
                        Ok(true) => {}
                        Ok(false) => return,
                        Err(err) => tracing::warn!(error = %err, "renewing a lease failed"),
                    }
                }
            };
            tokio::select! {
                result = tokio::time::timeout(limit, executors::run(&tool, &job, &progress, &worker.work_root, &worker.files)) => match result {
                    Ok(Ok(value)) => Outcome::Done(value),
                    Ok(Err(Failure::Abandoned)) => Outcome::Abandoned,
                    Ok(Err(failure)) => Outcome::Failed(failure),
                    Err(_) => Outcome::TimedOut(tool.timeout_seconds),
                },
                () = heartbeat => Outcome::Abandoned,
            }
        }
    };
    let seconds = started.elapsed().as_secs_f64();
    let resources = json!({ "wallSeconds": seconds });
    // Only a completed run keeps output files: any other ending, or a completion that cannot
    // be recorded, removes what this attempt stored.
    let completed = matches!(outcome, Outcome::Done(_));
    let result = match outcome {
        Outcome::Done(output) => completions
            .complete(
                Completion {
                    job: job.clone(),
                    result: output.result,
                    resources,
                },
                output.files,
            )
            .await
            .map(Some),
        Outcome::TimedOut(limit) => {
            let message = format!("the run exceeded the tool's limit of {limit} s");
            finish(
                &worker.db,
                &job,
                JobStatus::Timeout,
                Change {
                    message: Some(message.clone()),
                    error_message: Some(message),
                    error_code: Some("TIMEOUT".to_owned()),
                    resources: Some(resources),
                    ..Default::default()
                },
                &[],
            )
            .await
            .map(Some)
        }
        Outcome::Failed(Failure::Transient(message)) => {
            crate::queue::fail_attempt(&worker.db, &job, message, "TRANSIENT_FAILURE", true)
                .await
                .map(Some)
        }
        Outcome::Failed(Failure::Permanent(message)) => {
            crate::queue::fail_attempt(&worker.db, &job, message, "FAILED", false)
                .await
                .map(Some)
        }
        Outcome::Failed(Failure::Abandoned) | Outcome::Abandoned => {
            tracing::info!("the job was cancelled or reclaimed; the attempt stops");
            Ok(None)
        }
    };
    if !(completed && result.is_ok()) {
        worker
            .files
            .delete_prefix(&files::output_prefix(job.workspace_id, job.id, job.attempt))
            .await;
    }
    if let Ok(Some(ended)) = &result {
        worker.metrics.finished(
            &job.tool,
            ended.status,
            seconds,
            ended.refunded && !job.refunded,
        );
    }
    match result.map(drop) {
        Ok(()) => {}
        Err(Error::Conflict(message)) => tracing::info!(%message, "the job changed while it ran"),
        Err(err) => tracing::error!(error = %err, "recording a job's outcome failed"),
    }
}

/// Records a run's ending, with the rows of its output files, in one transaction.
async fn finish(
    db: &DatabaseConnection,
    job: &job::Model,
    to: JobStatus,
    change: Change,
    outputs: &[NewFile],
) -> Result<job::Model, Error> {
    let tx = db::begin_write(db).await?;
    let ended = lifecycle::transition(&tx, job, to, change).await?;
    for file in outputs {
        file.insert(
            &tx,
            job.workspace_id,
            job.id,
            entity::file::FileRole::Output,
        )
        .await?;
    }
    tx.commit().await?;
    Ok(ended)
}
