//! A worker: claims jobs up to its concurrency, runs each with its tool's executor under the
//! tool's time limit while the leases of all its runs are renewed together (`leases`), records
//! the outcome, and keeps the queue healthy (expired leases reclaimed, due retries queued
//! again).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use entity::job::{self, JobStatus};
use sea_orm::DatabaseConnection;
use serde_json::{Value, json};
use tokio::sync::Notify;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;

use crate::db;
use crate::error::Error;
use crate::executors::{self, Failure, Output, Progress, Usage};
use crate::files::{self, Files};
use crate::jobs::lifecycle::{self, Completion};
use crate::queue::completions::Completions;
use crate::queue::leases::Leases;
use crate::queue::reports::Reports;
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
        let mut runs = Runs::default();
        let tools = crate::queue::Tools::local(&worker.catalog);
        let limits =
            crate::queue::Limits::new(&worker.catalog, worker.config.workspace_max_running);
        let writers = Writers {
            completions: Completions::start(worker.db.clone()),
            leases: Leases::start(worker.db.clone(), worker.config.lease),
            reports: Reports::start(worker.db.clone()),
        };
        // Armed before the first claim, so nothing queued from now on goes unnoticed.
        if let Some(url) = worker.listen_url.clone() {
            tokio::spawn(crate::queue::listen(
                url,
                worker.wake.clone(),
                shutdown.clone(),
            ));
        }
        // The upkeep runs beside the claims, so that a claim never waits for it.
        let upkeep_stop = shutdown.child_token();
        let upkeep = tokio::spawn(worker.clone().upkeep(limits.workspace, upkeep_stop.clone()));
        loop {
            // Every run that ended frees its slot before the claim: short runs end in groups
            // (their completions are written together), and are claimed again in groups.
            while let Some(ended) = runs.running.try_join_next_with_id() {
                runs.ended(ended);
            }
            // Listening before the claim: jobs queued while it runs, which it may not see,
            // wake the next one.
            let woken = worker.wake.notified();
            tokio::pin!(woken);
            woken.as_mut().enable();
            worker
                .claim_into(&mut runs, &writers, &tools, &limits)
                .await;
            worker.metrics.set_running(&worker.name, runs.running.len());
            tokio::select! {
                _ = shutdown.cancelled() => break,
                Some(ended) = runs.running.join_next_with_id(), if !runs.running.is_empty() => {
                    runs.ended(ended);
                }
                _ = &mut woken => {}
                _ = tokio::time::sleep(worker.config.poll) => {}
            }
        }
        upkeep_stop.cancel();
        let _ = upkeep.await;
        worker.stop(runs).await;
    }

    /// The tools this worker runs: all but those of remote workers.
    fn local_tools(&self) -> Vec<String> {
        self.catalog
            .all()
            .iter()
            .filter(|tool| !tool.runs_remotely())
            .map(|tool| tool.name.clone())
            .collect()
    }

    /// Tells the register this worker is present, reclaims expired leases and queues due
    /// retries, every `maintenance`, until `stop`. Jobs it queues wake the claims.
    async fn upkeep(self: Arc<Self>, workspace_max_running: Option<u32>, stop: CancellationToken) {
        let tools = self.local_tools();
        let announcement = crate::queue::workers::Announcement {
            name: &self.name,
            kind: "local",
            tools: &tools,
            capacity: self.config.concurrency,
            workspace_max_running,
            user_id: None,
        };
        let mut announced = Instant::now() - ANNOUNCE_EVERY;
        let mut tick = tokio::time::interval(self.config.maintenance);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tick.tick() => {}
            }
            if announced.elapsed() >= ANNOUNCE_EVERY {
                announced = Instant::now();
                self.announce(announcement.clone()).await;
            }
            crate::queue::maintenance::leases_and_retries(&self.db, chrono::Utc::now()).await;
        }
    }

    /// Claims as many jobs as there are free slots, and starts running them.
    async fn claim_into(
        self: &Arc<Self>,
        runs: &mut Runs,
        writers: &Writers,
        tools: &crate::queue::Tools,
        limits: &crate::queue::Limits,
    ) {
        let free = self.config.concurrency.saturating_sub(runs.running.len());
        if free == 0 {
            return;
        }
        let claimed = crate::queue::claim(
            &self.db,
            &self.name,
            tools,
            limits,
            free as u64,
            self.config.lease,
        )
        .await;
        match claimed {
            Ok(jobs) => {
                self.metrics.claimed(&jobs);
                for job in jobs {
                    // Boxed: a run's future is large (it holds every executor's state), and a
                    // task's future is moved whole as the task is spawned, polled to its end
                    // and joined; a box moves as a pointer.
                    let run = execute(self.clone(), writers.clone(), job.clone());
                    let handle = runs.running.spawn(Box::pin(run));
                    runs.in_flight.insert(handle.id(), job);
                }
            }
            Err(err) => tracing::error!(error = %err, "claiming jobs failed"),
        }
    }

    /// Records in the register that this worker is alive, and forgets the silent ones.
    async fn announce(&self, announcement: crate::queue::workers::Announcement<'_>) {
        let now = chrono::Utc::now();
        let seen = crate::queue::workers::seen(&self.db, announcement).await;
        if let Err(err) = seen.and(crate::queue::workers::forget_silent(&self.db, now).await) {
            tracing::warn!(error = %err, "announcing the worker failed");
        }
    }

    /// Lets running jobs finish within the grace period, stops the rest and hands their jobs
    /// back to the queue, and leaves the register.
    async fn stop(&self, mut runs: Runs) {
        tracing::info!(worker = %self.name, running = runs.running.len(), "worker stopping");
        let _ = tokio::time::timeout(self.config.grace, async {
            while let Some(ended) = runs.running.join_next_with_id().await {
                runs.ended(ended);
            }
        })
        .await;
        // The rest are stopped, and gone (their programs killed) before their jobs go back.
        runs.running.abort_all();
        while let Some(ended) = runs.running.join_next_with_id().await {
            runs.ended(ended);
        }
        for job in runs.in_flight.into_values() {
            hand_back(self, &job).await;
        }
        if let Err(err) = crate::queue::workers::gone(&self.db, &self.name).await {
            tracing::warn!(error = %err, "removing the worker from the register failed");
        }
        tracing::info!(worker = %self.name, "worker stopped");
    }
}

/// A worker's runs under way, and the job each runs, so that those unfinished at shutdown can
/// be handed back.
#[derive(Default)]
struct Runs {
    running: JoinSet<()>,
    in_flight: HashMap<tokio::task::Id, job::Model>,
}

impl Runs {
    fn ended(&mut self, ended: Result<(tokio::task::Id, ()), tokio::task::JoinError>) {
        ended_run(&mut self.in_flight, ended);
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

/// Returns a job whose run was stopped at shutdown to the queue (`lifecycle::hand_back`), and
/// deletes what the stopped attempt stored.
async fn hand_back(worker: &Worker, job: &job::Model) {
    let result = async {
        let tx = db::begin_write(&worker.db).await?;
        lifecycle::hand_back(&tx, job).await?;
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

/// Where a worker's runs record what they do, each a writer that groups what arrives together
/// into one transaction.
#[derive(Clone)]
struct Writers {
    completions: Completions,
    leases: Leases,
    reports: Reports,
}

/// Runs one claimed job to its end, inside its `job` span.
async fn execute(worker: Arc<Worker>, writers: Writers, job: job::Model) {
    // Instrumented rather than entered: a span entered by a guard stays entered on the thread
    // while the run awaits, and other tasks' events then appear inside it (with enough runs,
    // the stack of spans entered on one thread overflowed the thread's stack).
    let span = tracing::info_span!(
        "job",
        job.id = %job.id,
        attempt = job.attempt,
        tool = %job.tool,
        otel.name = tracing::field::Empty,
    );
    if crate::telemetry::enabled() {
        // The run continues the trace of the request that submitted the job.
        span.record("otel.name", format!("run {}", job.tool));
        crate::telemetry::continue_from(&span, job.trace_parent.as_deref());
    }
    run_to_end(worker, writers, job).instrument(span).await;
}

/// Runs one claimed job to its end: the attempt, then its outcome recorded.
async fn run_to_end(worker: Arc<Worker>, writers: Writers, job: job::Model) {
    tracing::debug!("run started");
    let started = Instant::now();
    let (progress, usage) = Progress::new(&writers.reports, &job);
    let outcome = attempt(&worker, &writers.leases, &job, &progress).await;
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
    let result = record(&worker, &writers.completions, &job, outcome, resources).await;
    if !(completed && result.is_ok()) {
        worker
            .files
            .delete_prefix(&files::output_prefix(job.workspace_id, job.id, job.attempt))
            .await;
    }
    if let Ok(Some(status)) = result {
        worker.metrics.finished(&job.tool, status, seconds);
    }
    match result.map(drop) {
        Ok(()) => {}
        Err(Error::Conflict(message)) => tracing::info!(%message, "the job changed while it ran"),
        Err(err) => tracing::error!(error = %err, "recording a job's outcome failed"),
    }
}

/// Runs the tool on `job` under the tool's time limit, renewing the lease meanwhile.
async fn attempt(
    worker: &Worker,
    leases: &Leases,
    job: &job::Model,
    progress: &Progress<'_>,
) -> Outcome {
    let Some(tool) = worker.catalog.get(&job.tool).cloned() else {
        return Outcome::Failed(Failure::Permanent(format!(
            "the tool `{}` is no longer offered",
            job.tool
        )));
    };
    let limit = Duration::from_secs(tool.timeout_seconds);
    let lease = leases.hold(job);
    tokio::select! {
        result = tokio::time::timeout(limit, executors::run(&tool, job, progress, &worker.places, &worker.files)) => match result {
            Ok(Ok(value)) => Outcome::Done(value),
            Ok(Err(Failure::Abandoned)) => Outcome::Abandoned,
            Ok(Err(failure)) => Outcome::Failed(failure),
            Err(_) => Outcome::TimedOut(tool.timeout_seconds),
        },
        () = lease.lost() => Outcome::Abandoned,
    }
}

/// Records how a run ended; returns the job's status then, or nothing for a run that was
/// stopped (its job cancelled or reclaimed).
async fn record(
    worker: &Worker,
    completions: &Completions,
    job: &job::Model,
    outcome: Outcome,
    resources: Value,
) -> crate::error::Result<Option<JobStatus>> {
    let ended = |job: job::Model| Some(job.status);
    match outcome {
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
            .map(|()| Some(JobStatus::Completed)),
        Outcome::TimedOut(limit) => crate::queue::time_out(&worker.db, job, limit, Some(resources))
            .await
            .map(ended),
        Outcome::Failed(Failure::Transient(message)) => crate::queue::fail_attempt(
            &worker.db,
            job,
            message,
            "TRANSIENT_FAILURE",
            true,
            Some(resources),
        )
        .await
        .map(ended),
        Outcome::Failed(Failure::Permanent(message)) => {
            crate::queue::fail_attempt(&worker.db, job, message, "FAILED", false, Some(resources))
                .await
                .map(ended)
        }
        Outcome::Failed(Failure::Abandoned) | Outcome::Abandoned => {
            tracing::info!("the job was cancelled or reclaimed; the attempt stops");
            Ok(None)
        }
    }
}
