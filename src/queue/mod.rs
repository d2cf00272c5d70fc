//! The durable queue: claiming QUEUED jobs for a worker, renewing and reclaiming leases, and
//! bringing RETRY jobs back once their backoff has passed.
//!
//! A claim is one statement that moves jobs to PROCESSING, bumps their attempt and records the
//! worker and its lease: on PostgreSQL it selects candidates with `FOR UPDATE SKIP LOCKED`, so
//! any number of workers on any number of machines claim disjoint jobs; on SQLite the write
//! transaction is the lock. Every later write of a running job matches its attempt, so a worker
//! that lost its lease cannot touch the job again.

pub mod completions;
mod groups;
pub mod leases;
pub mod maintenance;
pub mod remote;
pub mod reports;
pub mod runner;
pub mod waiting;
pub mod workers;

use entity::ids::{JobId, WorkspaceId};
use std::collections::HashMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use entity::job::{self, JobStatus};
use sea_orm::sea_query::{LockBehavior, LockType};
use sea_orm::{
    ColumnTrait, ConnectionTrait, DatabaseConnection, EntityTrait, FromQueryResult, QueryFilter,
    QueryOrder, QuerySelect, QueryTrait as _,
};
use uuid::Uuid;

use crate::db;
use crate::error::Result;
use crate::jobs::lifecycle::{self, Change};
use crate::store;
pub use crate::store::status_is;
use crate::tools::Catalog;

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
    listener.listen(crate::store::QUEUED_CHANNEL).await?;
    // Anything queued while nobody listened.
    wake.notify_waiters();
    loop {
        // This process's own announcements woke its workers at commit.
        if listener.recv().await?.payload() != crate::store::process_mark() {
            wake.notify_waiters();
        }
    }
}

/// Which QUEUED jobs a worker may claim.
#[derive(Debug, Clone)]
pub enum Tools {
    /// Jobs of any tool but these: a jobgraph worker pool, which leaves the tools that run on
    /// remote workers alone (and ends jobs of tools no longer offered).
    Except(Vec<String>),
    /// Jobs of these tools only: a remote worker.
    Only(Vec<String>),
}

impl Tools {
    /// The jobs a worker pool of this process claims: all but the remote tools' ones.
    pub fn local(catalog: &Catalog) -> Self {
        Tools::Except(
            catalog
                .all()
                .iter()
                .filter(|tool| tool.runs_remotely())
                .map(|tool| tool.name.clone())
                .collect(),
        )
    }

    fn includes(&self, tool: &str) -> bool {
        match self {
            Tools::Except(names) => !names.iter().any(|name| name == tool),
            Tools::Only(names) => names.iter().any(|name| name == tool),
        }
    }

    fn condition(&self) -> sea_orm::Condition {
        let column = job::Column::Tool;
        sea_orm::Condition::all().add_option(match self {
            Tools::Except(names) if names.is_empty() => None,
            Tools::Except(names) => Some(column.is_not_in(names.clone())),
            Tools::Only(names) => Some(column.is_in(names.clone())),
        })
    }
}

/// How many jobs may run at once, across every worker: per workspace and per tool. The one
/// place that decides whether another run may start.
#[derive(Debug, Clone, Default)]
pub struct Limits {
    /// Runs of one workspace at once, so that one workspace's thousand jobs do not hold every
    /// worker while another's one job waits.
    pub workspace: Option<u32>,
    /// Runs of a tool at once, for the tools that declare `max_running`.
    pub tools: HashMap<String, u32>,
}

impl Limits {
    pub fn new(catalog: &Catalog, workspace: Option<u32>) -> Self {
        Limits {
            workspace: workspace.filter(|&n| n > 0),
            tools: catalog
                .all()
                .iter()
                .filter_map(|tool| Some((tool.name.clone(), tool.max_running?)))
                .collect(),
        }
    }

    /// Whether any limit can hold back a job of `tools`.
    fn bind(&self, tools: &Tools) -> bool {
        self.workspace.is_some() || self.tools.keys().any(|tool| tools.includes(tool))
    }

    /// Whether a workspace running `count` jobs is at its limit.
    pub fn workspace_full(&self, count: u64) -> bool {
        self.workspace.is_some_and(|max| count >= u64::from(max))
    }

    /// Whether a tool running `count` jobs is at its limit.
    pub fn tool_full(&self, tool: &str, count: u64) -> bool {
        self.tools
            .get(tool)
            .is_some_and(|&max| count >= u64::from(max))
    }
}

/// The jobs running now, counted by workspace and by tool.
#[derive(Debug, Clone, Default)]
pub struct Running {
    pub by_workspace: HashMap<WorkspaceId, u64>,
    pub by_tool: HashMap<String, u64>,
}

impl Running {
    pub async fn count(db: &impl ConnectionTrait) -> Result<Self> {
        #[derive(FromQueryResult)]
        struct Row {
            workspace_id: WorkspaceId,
            tool: String,
            running: i64,
        }
        let rows = job::Entity::find()
            .select_only()
            .column(job::Column::WorkspaceId)
            .column(job::Column::Tool)
            .column_as(job::Column::Id.count(), "running")
            .filter(status_is(JobStatus::Processing))
            .group_by(job::Column::WorkspaceId)
            .group_by(job::Column::Tool)
            .into_model::<Row>()
            .all(db)
            .await?;
        let mut running = Running::default();
        for row in rows {
            let n = row.running.max(0) as u64;
            *running.by_workspace.entry(row.workspace_id).or_default() += n;
            *running.by_tool.entry(row.tool).or_default() += n;
        }
        Ok(running)
    }
}

/// Claims up to `limit` QUEUED jobs of `tools`, in claim order (see `queued`), for
/// `worker`, within `limits`.
pub async fn claim(
    db: &DatabaseConnection,
    worker: &str,
    tools: &Tools,
    limits: &Limits,
    limit: u64,
    lease: Duration,
) -> Result<Vec<job::Model>> {
    if limit == 0 {
        return Ok(Vec::new());
    }
    let began = std::time::Instant::now();
    let tx = db::begin_write(db).await?;
    store::begin_claim(&tx).await?;
    let chosen = if limits.bind(tools) {
        let ids = choose_within_limits(&tx, tools, limits, limit).await?;
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        job::Column::Id.is_in(ids)
    } else {
        // No limit applies: the head of the queue.
        store::head_ids(&tx, head(tools, limit))
    };
    let claimed = store::claim(&tx, chosen, worker, lease, limit as usize).await?;
    tx.commit().await?;
    // Read once committed. Should that fail, the claimed jobs come back when their lease ends.
    let claimed = claimed.into_jobs()?;
    tracing::debug!(
        worker,
        asked = limit,
        jobs = claimed.len(),
        ms = began.elapsed().as_secs_f64() * 1e3,
        "claimed"
    );
    Ok(claimed)
}

/// The ids of up to `limit` QUEUED jobs of `tools` at the head of the queue, locked, skipping
/// the rows other claims hold (on PostgreSQL; on SQLite the write transaction is the lock).
pub fn head(tools: &Tools, limit: u64) -> sea_orm::sea_query::SelectStatement {
    queued(tools)
        .select_only()
        .column(job::Column::Id)
        .limit(limit)
        .lock_with_behavior(LockType::Update, LockBehavior::SkipLocked)
        .into_query()
}

/// QUEUED jobs of `tools` in claim order (`store::CLAIM_ORDER`).
fn queued(tools: &Tools) -> sea_orm::Select<job::Entity> {
    let mut select = job::Entity::find()
        .filter(status_is(JobStatus::Queued))
        .filter(tools.condition());
    for (column, descending) in store::CLAIM_ORDER {
        select = if descending {
            select.order_by_desc(column)
        } else {
            select.order_by_asc(column)
        };
    }
    select
}

/// The ids of up to `limit` jobs to claim without exceeding any limit: the head of the queue,
/// passing over workspaces and tools with no free slot.
async fn choose_within_limits(
    tx: &crate::db::Transaction,
    tools: &Tools,
    limits: &Limits,
    limit: u64,
) -> Result<Vec<JobId>> {
    store::claim_in_turn(tx).await?;
    let mut running = Running::count(tx).await?;
    let full_workspaces: Vec<WorkspaceId> = running
        .by_workspace
        .iter()
        .filter(|(_, n)| limits.workspace_full(**n))
        .map(|(&id, _)| id)
        .collect();
    let full_tools: Vec<String> = running
        .by_tool
        .iter()
        .filter(|(tool, n)| limits.tool_full(tool, **n))
        .map(|(tool, _)| tool.clone())
        .collect();
    #[derive(FromQueryResult)]
    struct Candidate {
        id: JobId,
        workspace_id: WorkspaceId,
        tool: String,
    }
    // Several candidates per slot, for those that a workspace's or tool's few free slots turn
    // away; the next claim looks again. They are locked, as the head of the queue is, so the
    // claim needs no second look at their status; other claims pass over them meanwhile.
    let candidates = queued(tools)
        .filter(job::Column::WorkspaceId.is_not_in(full_workspaces))
        .filter(job::Column::Tool.is_not_in(full_tools))
        .select_only()
        .column(job::Column::Id)
        .column(job::Column::WorkspaceId)
        .column(job::Column::Tool)
        .limit(limit.saturating_mul(4).max(64))
        .lock_with_behavior(LockType::Update, LockBehavior::SkipLocked)
        .into_model::<Candidate>()
        .all(tx)
        .await?;
    let mut chosen = Vec::new();
    for candidate in candidates {
        let in_workspace = running
            .by_workspace
            .get(&candidate.workspace_id)
            .copied()
            .unwrap_or(0);
        let of_tool = running.by_tool.get(&candidate.tool).copied().unwrap_or(0);
        if limits.workspace_full(in_workspace) || limits.tool_full(&candidate.tool, of_tool) {
            continue;
        }
        *running
            .by_workspace
            .entry(candidate.workspace_id)
            .or_default() += 1;
        *running.by_tool.entry(candidate.tool).or_default() += 1;
        chosen.push(candidate.id);
        if chosen.len() as u64 == limit {
            break;
        }
    }
    Ok(chosen)
}

/// Extends the lease of a job this worker runs. `false` when the job is no longer this
/// attempt's: cancelled, reclaimed or finished.
pub async fn renew(db: &impl ConnectionTrait, job: &job::Model, lease: Duration) -> Result<bool> {
    store::renew(db, job, lease).await
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
    if store::report(&tx, job, progress, stage).await?.is_none() {
        return Ok(false);
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

/// Records a run's ending, with the rows of its output files, in one transaction.
pub async fn finish(
    db: &DatabaseConnection,
    job: &job::Model,
    to: JobStatus,
    change: Change,
    outputs: &[crate::files::NewFile],
) -> Result<job::Model> {
    let tx = db::begin_write(db).await?;
    // The outputs first: a workflow step that ends here feeds them to the steps it starts in
    // the same transaction. A refused ending rolls them back with it.
    for file in outputs {
        file.insert(
            &tx,
            job.workspace_id,
            job.id,
            entity::file::FileRole::Output,
        )
        .await?;
    }
    let ended = lifecycle::transition(&tx, job, to, change).await?;
    tx.commit().await?;
    Ok(ended)
}

/// Ends a run that went past its tool's limit of `limit_seconds`: TIMEOUT, refunded.
pub async fn time_out(
    db: &DatabaseConnection,
    job: &job::Model,
    limit_seconds: u64,
    resources: Option<serde_json::Value>,
) -> Result<job::Model> {
    let message = format!("the run exceeded the tool's limit of {limit_seconds} s");
    let change = Change {
        message: Some(message.clone()),
        error_message: Some(message),
        error_code: Some("TIMEOUT".to_owned()),
        resources,
        ..Default::default()
    };
    finish(db, job, JobStatus::Timeout, change, &[]).await
}

/// Ends an attempt that failed: RETRY with backoff while attempts remain and the failure is
/// transient, FAILED (refunded) otherwise. `resources` is what the attempt used, when known.
pub async fn fail_attempt(
    db: &DatabaseConnection,
    job: &job::Model,
    message: String,
    code: &str,
    transient: bool,
    resources: Option<serde_json::Value>,
) -> Result<job::Model> {
    let tx = db::begin_write(db).await?;
    let retry = transient && job.attempt < job.max_attempts;
    let change = Change {
        message: Some(message.clone()),
        error_message: Some(message),
        error_code: Some(code.to_owned()),
        run_after: retry.then(|| Utc::now() + backoff(job.attempt)),
        resources,
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
        .filter(status_is(JobStatus::Processing))
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
            None,
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
        .filter(status_is(JobStatus::Retry))
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
