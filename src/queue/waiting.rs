//! Where a waiting job stands: how many jobs will be claimed before it, what holds it back,
//! and when it will likely start.
//!
//! Everything is computed for a set of jobs at once (a page of a history list), with a fixed
//! number of statements whatever the set's size: one range count over the claim index up to
//! the set's last job, one count of running jobs, one read of the worker register, and the
//! recent run durations of each tool (kept for a short while).

use entity::ids::{JobId, WorkspaceId};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use entity::job::{self, JobStatus};
use sea_orm::{
    ColumnTrait, ConnectionTrait, DatabaseConnection, EntityTrait, FromQueryResult, QueryFilter,
    QueryOrder, QuerySelect, QueryTrait as _,
};

use super::{Limits, Running, workers};
use crate::cache::TtlCache;
use crate::error::Result;
use crate::store;
use crate::tools::Catalog;

/// Why a job has not started yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WaitReason {
    /// Jobs ahead of it in the queue will be claimed first.
    QueuedBehindOthers,
    /// It is next: the next free worker takes it.
    WaitingForWorker,
    /// Its workspace runs as many jobs as it may at once.
    WorkspaceLimit,
    /// Its tool runs as many jobs as it may at once.
    ToolLimit,
    /// No worker present runs its tool.
    NoWorkerForTool,
    /// A failed attempt waits out its backoff before it is queued again.
    RetryBackoff,
}

/// What a job's place in the queue is computed from.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Waiter {
    pub id: JobId,
    pub status: JobStatus,
    pub tool: String,
    pub workspace_id: WorkspaceId,
    pub priority: i32,
    pub queued_at: Option<DateTime<Utc>>,
    pub run_after: Option<DateTime<Utc>>,
}

impl From<&job::Model> for Waiter {
    fn from(job: &job::Model) -> Self {
        Waiter {
            id: job.id,
            status: job.status,
            tool: job.tool.clone(),
            workspace_id: job.workspace_id,
            priority: job.priority,
            queued_at: job.queued_at,
            run_after: job.run_after,
        }
    }
}

impl Waiter {
    /// The columns a waiter is read from: what a job's wait fields need loaded.
    pub const COLUMNS: [job::Column; 7] = [
        job::Column::Id,
        job::Column::Status,
        job::Column::Tool,
        job::Column::WorkspaceId,
        job::Column::Priority,
        job::Column::QueuedAt,
        job::Column::RunAfter,
    ];

    /// The value of a column of the claim order (`store::CLAIM_ORDER`).
    fn claim_value(&self, column: job::Column) -> Option<sea_orm::Value> {
        match column {
            job::Column::Priority => Some(self.priority.into()),
            job::Column::QueuedAt => Some(self.queued_at.into()),
            job::Column::Id => Some(self.id.into()),
            _ => None,
        }
    }

    /// How this job and `other` compare in claim order: `Less` when this one is claimed first.
    fn claim_cmp(&self, other: &Waiter) -> std::cmp::Ordering {
        use job::Column as C;
        store::CLAIM_ORDER
            .iter()
            .map(|&(column, descending)| {
                let order = match column {
                    C::Priority => self.priority.cmp(&other.priority),
                    C::QueuedAt => self.queued_at.cmp(&other.queued_at),
                    C::Id => self.id.cmp(&other.id),
                    _ => std::cmp::Ordering::Equal,
                };
                if descending { order.reverse() } else { order }
            })
            .find(|order| order.is_ne())
            .unwrap_or(std::cmp::Ordering::Equal)
    }

    /// The QUEUED jobs claimed before this one: ahead in the first column of the claim order,
    /// or equal in it and ahead in the next, and so on.
    fn ahead(&self) -> sea_orm::sea_query::SimpleExpr {
        use sea_orm::sea_query::{Expr, ExprTrait as _};
        let mut ahead: Option<sea_orm::sea_query::SimpleExpr> = None;
        for &(column, descending) in store::CLAIM_ORDER.iter().rev() {
            let value = self
                .claim_value(column)
                .unwrap_or(sea_orm::Value::Int(None));
            let col = Expr::col((job::Entity, column));
            let before = if descending {
                col.clone().gt(value.clone())
            } else {
                col.clone().lt(value.clone())
            };
            ahead = Some(match ahead {
                None => before,
                Some(rest) => before.or(col.eq(value).and(rest)),
            });
        }
        ahead.unwrap_or_else(|| Expr::value(false))
    }

    fn is_waiting(&self) -> bool {
        matches!(self.status, JobStatus::Queued | JobStatus::Retry)
    }
}

/// Where one waiting job stands. Every field is empty for a job that is not waiting.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Wait {
    /// QUEUED jobs that will be claimed before it.
    pub position: Option<u64>,
    pub reason: Option<WaitReason>,
    /// For RETRY_BACKOFF: when it is queued again.
    pub eligible_at: Option<DateTime<Utc>>,
    pub estimated_start_at: Option<DateTime<Utc>>,
}

/// How long a tool's recent runs took, kept a short while per tool.
const DURATIONS_KEPT: Duration = Duration::from_secs(30);
/// How many recent runs of a tool its typical duration is taken from.
const RECENT_RUNS: u64 = 20;

/// Answers where waiting jobs stand, for one process.
pub struct Queue {
    db: DatabaseConnection,
    catalog: Arc<Catalog>,
    limits: Limits,
    /// The mean duration in seconds of each tool's recent runs; none without any.
    durations: TtlCache<String, Option<f64>>,
}

impl Queue {
    pub fn new(db: DatabaseConnection, catalog: Arc<Catalog>, limits: Limits) -> Self {
        Queue {
            db,
            catalog,
            limits,
            durations: TtlCache::new(DURATIONS_KEPT),
        }
    }

    /// Where each of `jobs` stands, by id.
    pub async fn explain(&self, jobs: &[Waiter]) -> Result<HashMap<JobId, Wait>> {
        let waiting: Vec<&Waiter> = jobs.iter().filter(|job| job.is_waiting()).collect();
        let mut answers: HashMap<JobId, Wait> =
            jobs.iter().map(|job| (job.id, Wait::default())).collect();
        if waiting.is_empty() {
            return Ok(answers);
        }
        let now = Utc::now();
        let queued: Vec<&Waiter> = waiting
            .iter()
            .copied()
            .filter(|job| job.status == JobStatus::Queued && job.queued_at.is_some())
            .collect();
        let positions = positions(&self.db, &queued).await?;
        let running = Running::count(&self.db).await?;
        let present = workers::present(&self.db, now).await?;
        for job in waiting {
            let typical = self.typical_duration(&job.tool).await?;
            let answer = answers.entry(job.id).or_default();
            if job.status == JobStatus::Retry {
                answer.reason = Some(WaitReason::RetryBackoff);
                answer.eligible_at = job.run_after;
                answer.estimated_start_at = job.run_after.map(|at| at.max(now));
                continue;
            }
            let position = positions.get(&job.id).copied().unwrap_or(0);
            answer.position = Some(position);
            // The slots that can run this tool: the present workers that run it, within the
            // tool's own limit.
            let runners: Vec<&entity::worker::Model> = present
                .iter()
                .filter(|worker| {
                    worker
                        .tools
                        .as_array()
                        .is_some_and(|tools| tools.iter().any(|t| t.as_str() == Some(&job.tool)))
                })
                .collect();
            let mut slots: u64 = runners
                .iter()
                .map(|worker| worker.capacity.max(0) as u64)
                .sum();
            // Each worker claims under the workspace limit it recorded in the register: the
            // job waits on its workspace only when every worker that runs its tool is full.
            let workspace_limit = runners.iter().try_fold(0u64, |most, worker| {
                Some(most.max(worker.workspace_max_running?.max(0) as u64))
            });
            if let Some(&max) = self.limits.tools.get(&job.tool) {
                slots = slots.min(u64::from(max));
            }
            let in_workspace = running.by_workspace.get(&job.workspace_id).copied();
            let of_tool = running.by_tool.get(&job.tool).copied();
            answer.reason = Some(if slots == 0 {
                WaitReason::NoWorkerForTool
            } else if self.limits.tool_full(&job.tool, of_tool.unwrap_or(0)) {
                WaitReason::ToolLimit
            } else if workspace_limit.is_some_and(|limit| in_workspace.unwrap_or(0) >= limit) {
                WaitReason::WorkspaceLimit
            } else if position > 0 {
                WaitReason::QueuedBehindOthers
            } else {
                WaitReason::WaitingForWorker
            });
            if let (Some(seconds), true) = (typical, slots > 0) {
                // Each wave of `slots` runs ahead of it takes about one typical run.
                let waves = position / slots;
                let busy = running.by_tool.values().sum::<u64>() >= slots;
                let ahead = waves as f64 + if busy { 0.5 } else { 0.0 };
                let wait = chrono::Duration::milliseconds((ahead * seconds * 1000.0) as i64);
                answer.estimated_start_at = Some(now + wait);
            }
        }
        Ok(answers)
    }

    /// The mean duration of the tool's recent completed runs.
    async fn typical_duration(&self, tool: &str) -> Result<Option<f64>> {
        if let Some(known) = self.durations.get(&tool.to_owned()) {
            return Ok(known);
        }
        #[derive(FromQueryResult)]
        struct Run {
            started_at: Option<DateTime<Utc>>,
            finished_at: Option<DateTime<Utc>>,
        }
        let runs = job::Entity::find()
            .select_only()
            .column(job::Column::StartedAt)
            .column(job::Column::FinishedAt)
            .filter(job::Column::Tool.eq(tool))
            .filter(job::Column::FinishedAt.is_not_null())
            .filter(job::Column::Status.eq(JobStatus::Completed))
            // A job that reused another's results did not run.
            .filter(job::Column::ReusedFrom.is_null())
            .order_by_desc(job::Column::FinishedAt)
            .limit(RECENT_RUNS)
            .into_model::<Run>()
            .all(&self.db)
            .await?;
        let seconds: Vec<f64> = runs
            .iter()
            .filter_map(|run| Some((run.finished_at? - run.started_at?).as_seconds_f64()))
            .collect();
        let typical = (!seconds.is_empty())
            .then(|| seconds.iter().sum::<f64>() / seconds.len() as f64)
            .or_else(|| {
                // Never run yet: assume half the tool's limit.
                self.catalog
                    .get(tool)
                    .map(|tool| tool.timeout_seconds as f64 / 2.0)
            });
        self.durations.insert(tool.to_owned(), typical);
        Ok(typical)
    }
}

/// For QUEUED jobs, how many QUEUED jobs come before each in claim order
/// (`store::CLAIM_ORDER`): one count over the head of the queue up to the last of them, however
/// many they are.
async fn positions(db: &DatabaseConnection, jobs: &[&Waiter]) -> Result<HashMap<JobId, u64>> {
    use sea_orm::sea_query::{Expr, Func};
    let Some(last) = jobs.iter().copied().max_by(|a, b| a.claim_cmp(b)) else {
        return Ok(HashMap::new());
    };
    let mut select = job::Entity::find().select_only();
    for (i, job) in jobs.iter().enumerate() {
        let ahead = Expr::case(job.ahead(), 1).finally(0);
        select = select.expr_as(Func::sum(ahead), format!("p{i}"));
    }
    // The status in the text, for the claim index (see `status_is`).
    let select = select
        .filter(last.ahead())
        .filter(super::status_is(JobStatus::Queued));
    let row = db
        .query_one_raw(select.build(db.get_database_backend()))
        .await?;
    let mut positions = HashMap::new();
    for (i, job) in jobs.iter().enumerate() {
        let count = match &row {
            Some(row) => row
                .try_get::<Option<i64>>("", &format!("p{i}"))?
                .unwrap_or(0),
            None => 0,
        };
        positions.insert(job.id, Ord::max(count, 0) as u64);
    }
    Ok(positions)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_waiter_holds_every_column_of_the_claim_order() {
        let waiter = Waiter {
            id: JobId::new(),
            status: JobStatus::Queued,
            tool: "t".to_owned(),
            workspace_id: WorkspaceId::new(),
            priority: 0,
            queued_at: Some(Utc::now()),
            run_after: None,
        };
        for (column, _) in store::CLAIM_ORDER {
            assert!(waiter.claim_value(column).is_some());
        }
    }
}
