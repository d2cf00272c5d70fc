//! A worker: claims jobs up to its concurrency, runs each with its tool's executor under the
//! tool's time limit while a heartbeat renews the lease, records the outcome, and keeps the
//! queue healthy (expired leases reclaimed, due retries queued again).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use entity::job::{self, JobStatus};
use sea_orm::sea_query::{Expr, ExprTrait as _};
use sea_orm::{ColumnTrait, DatabaseConnection, EntityTrait, QueryFilter};
use serde_json::{Value, json};
use tokio::sync::Notify;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;

use crate::db;
use crate::error::Error;
use crate::executors::{self, Failure, Output, Progress, Usage};
use crate::files::{self, Files};
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
    /// Runs of one workspace at once across every worker; none for no limit.
    pub workspace_max_running: Option<u32>,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        WorkerConfig {
            concurrency: 2,
            lease: Duration::from_secs(30),
            poll: Duration::from_millis(500),
            grace: Duration::from_secs(10),
            maintenance: Duration::from_secs(1),
            workspace_max_running: None,
        }
    }
}

/// How often a worker tells the register it is present.
const ANNOUNCE_EVERY: Duration = Duration::from_secs(10);

/// A worker over one database.
pub struct Worker {
    pub db: DatabaseConnection,
    pub catalog: Arc<Catalog>,
    pub name: String,
    pub config: WorkerConfig,
    /// Notified when jobs are queued in this process.
    pub wake: Arc<Notify>,
    /// Where `command` runs get their working directories and their supervisor.
    pub places: crate::executors::Places,
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
        // The job each running task runs, so those unfinished at shutdown can be handed back.
        let mut in_flight: HashMap<tokio::task::Id, job::Model> = HashMap::new();
        let mut maintenance = tokio::time::interval(worker.config.maintenance);
        let tools = crate::queue::Tools::local(&worker.catalog);
        let limits =
            crate::queue::Limits::new(&worker.catalog, worker.config.workspace_max_running);
        let runs: Vec<String> = worker
            .catalog
            .all()
            .iter()
            .filter(|tool| !tool.runs_remotely())
            .map(|tool| tool.name.clone())
            .collect();
        let announcement = crate::queue::workers::Announcement {
            name: &worker.name,
            kind: "local",
            tools: &runs,
            capacity: worker.config.concurrency,
            workspace_max_running: limits.workspace,
            user_id: None,
        };
        let mut announced = Instant::now() - ANNOUNCE_EVERY;
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
            while let Some(ended) = running.try_join_next_with_id() {
                ended_run(&mut in_flight, ended);
            }
            let free = worker.config.concurrency.saturating_sub(running.len());
            if free > 0 {
                match crate::queue::claim(
                    &worker.db,
                    &worker.name,
                    &tools,
                    &limits,
                    free as u64,
                    worker.config.lease,
                )
                .await
                {
                    Ok(jobs) => {
                        worker.metrics.claimed(&jobs);
                        for job in jobs {
                            // Boxed: a run's future is large (it holds every executor's state),
                            // and a task's future is moved whole as the task is spawned, polled
                            // to its end and joined; a box moves as a pointer.
                            let handle = running.spawn(Box::pin(execute(
                                worker.clone(),
                                completions.clone(),
                                job.clone(),
                            )));
                            in_flight.insert(handle.id(), job);
                        }
                    }
                    Err(err) => tracing::error!(error = %err, "claiming jobs failed"),
                }
            }
            worker.metrics.set_running(&worker.name, running.len());
            tokio::select! {
                _ = shutdown.cancelled() => break,
                Some(ended) = running.join_next_with_id(), if !running.is_empty() => {
                    ended_run(&mut in_flight, ended);
                }
                _ = worker.wake.notified() => {}
                _ = tokio::time::sleep(worker.config.poll) => {}
                _ = maintenance.tick() => {
                    let now = chrono::Utc::now();
                    if announced.elapsed() >= ANNOUNCE_EVERY {
                        announced = Instant::now();
                        let seen = crate::queue::workers::seen(&worker.db, announcement.clone()).await;
                        if let Err(err) = seen.and(crate::queue::workers::forget_silent(&worker.db, now).await) {
                            tracing::warn!(error = %err, "announcing the worker failed");
                        }
                    }
                    crate::queue::maintenance::leases_and_retries(&worker.db, now).await;
                }
            }
        }
        tracing::info!(worker = %worker.name, running = running.len(), "worker stopping");
        let _ = tokio::time::timeout(worker.config.grace, async {
            while let Some(ended) = running.join_next_with_id().await {
                ended_run(&mut in_flight, ended);
            }
        })
        .await;
        // The rest are stopped, and gone (their programs killed) before their jobs go back.
        running.abort_all();
        while let Some(ended) = running.join_next_with_id().await {
            ended_run(&mut in_flight, ended);
        }
        for job in in_flight.into_values() {
            hand_back(&worker, &job).await;
        }
        if let Err(err) = crate::queue::workers::gone(&worker.db, &worker.name).await {
            tracing::warn!(error = %err, "removing the worker from the register failed");
        }
        tracing::info!(worker = %worker.name, "worker stopped");
    }
}

/// Forgets a run that ended by itself. A run stopped by shutdown stays in `in_flight`, to be
/// handed back.
fn ended_run(
    in_flight: &mut HashMap<tokio::task::Id, job::Model>,
    ended: Result<(tokio::task::Id, ()), tokio::task::JoinError>,
) {
    match ended {
        Ok((id, ())) => {
            in_flight.remove(&id);
        }
        Err(err) if err.is_cancelled() => {}
        Err(err) => {
            let job = in_flight.remove(&err.id());
            tracing::error!(job.id = ?job.map(|job| job.id), error = %err, "a job's run panicked");
        }
    }
}

/// Returns a job whose run was stopped at shutdown to the queue, and deletes what the stopped
/// attempt stored.
///
/// A shutdown is not the job's failure, so the job is allowed one more attempt: the stopped one
/// does not use up `max_attempts`, while `attempt`, the token that fences every write of a
/// running job, still only grows.
async fn hand_back(worker: &Worker, job: &job::Model) {
    let result = async {
        let tx = db::begin_write(&worker.db).await?;
        job::Entity::update_many()
            .col_expr(
                job::Column::MaxAttempts,
                Expr::col(job::Column::MaxAttempts).add(1),
            )
            .filter(job::Column::Id.eq(job.id))
            .filter(job::Column::Status.eq(job.status))
            .filter(job::Column::Attempt.eq(job.attempt))
            .exec(&tx)
            .await?;
        lifecycle::transition(
            &tx,
            job,
            JobStatus::Queued,
            Change {
                message: Some(
                    "handed back: the worker shut down; this attempt does not count".to_owned(),
                ),
                ..Default::default()
            },
        )
        .await?;
        tx.commit().await?;
        Ok::<_, Error>(())
    }
    .await;
    match result {
        Ok(()) => {
            tracing::info!(job.id = %job.id, attempt = job.attempt, "handed a job back");
            worker
                .files
                .delete_prefix(&files::output_prefix(job.workspace_id, job.id, job.attempt))
                .await;
        }
        // Finished, cancelled or reclaimed meanwhile: no longer this attempt's to hand back.
        Err(Error::Conflict(_)) => {}
        Err(err) => tracing::error!(job.id = %job.id, error = %err, "handing a job back failed"),
    }
}

/// How long a run's outcome waits for its killed program to be reaped and its usage known.
const USAGE_WAIT: Duration = Duration::from_secs(2);

/// A run's `resources`: its wall time, and what its program used when one ran.
fn resources(wall_seconds: f64, usage: Option<Usage>) -> Value {
    let mut resources = json!({ "wallSeconds": wall_seconds });
    if let (Some(usage), Value::Object(map)) = (usage, &mut resources) {
        map.insert("cpuUserSeconds".to_owned(), json!(usage.cpu_user_seconds));
        map.insert(
            "cpuSystemSeconds".to_owned(),
            json!(usage.cpu_system_seconds),
        );
        map.insert("peakMemoryBytes".to_owned(), json!(usage.peak_memory_bytes));
    }
    resources
}

enum Outcome {
    Done(Output),
    Failed(Failure),
    TimedOut(u64),
    Abandoned,
}

/// Runs one claimed job to its end, inside its `job` span.
async fn execute(worker: Arc<Worker>, completions: Completions, job: job::Model) {
    // Instrumented rather than entered: a span entered by a guard stays entered on the thread
    // while the run awaits, and other tasks' events then appear inside it (with enough runs,
    // the stack of spans entered on one thread overflowed the thread's stack).
    let span =
        tracing::info_span!("job", job.id = %job.id, attempt = job.attempt, tool = %job.tool);
    run_to_end(worker, completions, job).instrument(span).await;
}

/// Runs one claimed job to its end.
async fn run_to_end(worker: Arc<Worker>, completions: Completions, job: job::Model) {
    tracing::debug!("run started");
    let started = Instant::now();
    let (progress, usage) = Progress::new(&worker.db, &job);
    let outcome = match worker.catalog.get(&job.tool).cloned() {
        None => Outcome::Failed(Failure::Permanent(format!(
            "the tool `{}` is no longer offered",
            job.tool
        ))),
        Some(tool) => {
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
                result = tokio::time::timeout(limit, executors::run(&tool, &job, &progress, &worker.places, &worker.files)) => match result {
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
    drop(progress);
    // Sent once the program is reaped: at once when it ended by itself, moments after the kill
    // of a timed-out or abandoned run; closed when no program was started.
    let usage = tokio::time::timeout(USAGE_WAIT, usage)
        .await
        .ok()
        .and_then(Result::ok);
    let resources = resources(seconds, usage);
    // Only a completed run keeps output files: any other ending, or a completion that cannot
    // be recorded, removes what this attempt stored.
    let completed = matches!(outcome, Outcome::Done(_));
    // How the run ended: the job's status, and whether it was refunded.
    let ended = |job: job::Model| Some((job.status, job.refunded));
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
            // COMPLETED gives no refund.
            .map(|()| Some((JobStatus::Completed, job.refunded))),
        Outcome::TimedOut(limit) => {
            crate::queue::time_out(&worker.db, &job, limit, Some(resources))
                .await
                .map(ended)
        }
        Outcome::Failed(Failure::Transient(message)) => crate::queue::fail_attempt(
            &worker.db,
            &job,
            message,
            "TRANSIENT_FAILURE",
            true,
            Some(resources),
        )
        .await
        .map(ended),
        Outcome::Failed(Failure::Permanent(message)) => {
            crate::queue::fail_attempt(&worker.db, &job, message, "FAILED", false, Some(resources))
                .await
                .map(ended)
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
    if let Ok(Some((status, refunded))) = result {
        worker
            .metrics
            .finished(&job.tool, status, seconds, refunded && !job.refunded);
    }
    match result.map(drop) {
        Ok(()) => {}
        Err(Error::Conflict(message)) => tracing::info!(%message, "the job changed while it ran"),
        Err(err) => tracing::error!(error = %err, "recording a job's outcome failed"),
    }
}
