//! Metrics in the Prometheus text format at `/metrics`: jobs by status and tool, the queue's
//! depth and oldest job, retries and refunds, claim latency, run durations, running jobs per
//! worker, database statements, GraphQL requests by operation and outcome with their latency,
//! open websockets and their operations, rate-limit refusals, and the use of this process's
//! database pool.
//!
//! Counters and histograms count what this process did. Job and queue figures, retries and
//! refunds among them, are read from the database at each scrape, so every node reports the same
//! totals and a restart loses none of them.

use std::sync::Arc;

use chrono::Utc;
use entity::job::{self, JobStatus};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use sea_orm::sea_query::Expr;
use sea_orm::{ColumnTrait, DatabaseConnection, EntityTrait, QueryFilter, QueryOrder, QuerySelect};

use crate::db::QueryStats;
use crate::error::Result;
use crate::jobs::state;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StatusTool {
    status: String,
    tool: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ToolOutcome {
    tool: String,
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ToolLabel {
    tool: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct WorkerLabel {
    worker: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OperationOutcome {
    /// `query`, `mutation` or `subscription`, or `unknown` when none could be picked.
    kind: String,
    /// The operation's name, `anonymous` without one, `other` past [`MAX_OPERATION_NAMES`].
    operation: String,
    /// `ok`, `error` (some field failed) or `rejected` (nothing ran).
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Outcome {
    /// `ok` (the endpoint answered 2xx) or `failed`.
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ClientKind {
    /// `token` or `address`.
    client: String,
}

/// How an operation's (first) response ended, as the metrics count it: `rejected` when nothing
/// ran (a request error), `error` when some field failed, else `ok`.
pub fn outcome(response: &async_graphql::Response) -> &'static str {
    if crate::graphql::is_request_error(response) {
        "rejected"
    } else if response.errors.is_empty() {
        "ok"
    } else {
        "error"
    }
}

/// Distinct operation names counted apart; names clients choose past these count as `other`,
/// so that a client cannot grow the metrics without bound.
const MAX_OPERATION_NAMES: usize = 200;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PoolState {
    state: &'static str,
}

/// This process's metrics.
pub struct Metrics {
    registry: Registry,
    jobs: Family<StatusTool, Gauge>,
    queue_depth: Gauge,
    oldest_queued_seconds: Gauge<f64, std::sync::atomic::AtomicU64>,
    claim_latency: Histogram,
    run_duration: Family<ToolOutcome, Histogram>,
    running: Family<WorkerLabel, Gauge>,
    retries: Family<ToolLabel, Gauge>,
    refunded: Family<ToolLabel, Gauge>,
    db_statements: Counter,
    requests: Family<OperationOutcome, Counter>,
    request_seconds: Family<OperationOutcome, Histogram>,
    operation_names: std::sync::Mutex<std::collections::HashSet<String>>,
    rate_limited: Family<ClientKind, Counter>,
    webhook_deliveries: Family<Outcome, Counter>,
    websockets: Gauge,
    subscriptions: Gauge,
    pool_connections: Family<PoolState, Gauge>,
    pool_max: Gauge,
    stats: Arc<QueryStats>,
}

impl Metrics {
    pub fn new(stats: Arc<QueryStats>) -> Self {
        let mut registry = Registry::with_prefix("jobgraph");
        let jobs = Family::<StatusTool, Gauge>::default();
        registry.register("jobs", "Jobs by status and tool", jobs.clone());
        let queue_depth = Gauge::default();
        registry.register("queue_depth", "Jobs waiting in QUEUED", queue_depth.clone());
        let oldest_queued_seconds = Gauge::<f64, std::sync::atomic::AtomicU64>::default();
        registry.register(
            "queue_oldest_age_seconds",
            "Age of the oldest QUEUED job",
            oldest_queued_seconds.clone(),
        );
        let claim_latency = Histogram::new(exponential_buckets(0.001, 2.0, 16));
        registry.register(
            "claim_latency_seconds",
            "Time from QUEUED to the first claim, by a worker of this process",
            claim_latency.clone(),
        );
        let run_duration = Family::<ToolOutcome, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.01, 2.0, 20))
        });
        registry.register(
            "run_duration_seconds",
            "Run durations by tool and outcome",
            run_duration.clone(),
        );
        let running = Family::<WorkerLabel, Gauge>::default();
        registry.register(
            "running_jobs",
            "Jobs running on each worker of this process",
            running.clone(),
        );
        let retries = Family::<ToolLabel, Gauge>::default();
        registry.register(
            "job_retries",
            "Attempts that ended in RETRY, over the jobs kept, by tool",
            retries.clone(),
        );
        let refunded = Family::<ToolLabel, Gauge>::default();
        registry.register(
            "jobs_refunded",
            "Jobs whose charge was given back, over the jobs kept, by tool",
            refunded.clone(),
        );
        let db_statements = Counter::default();
        registry.register(
            "db_statements",
            "Database statements run by this process",
            db_statements.clone(),
        );
        let requests = Family::<OperationOutcome, Counter>::default();
        registry.register(
            "graphql_requests",
            "GraphQL operations run by this process (HTTP and websocket), by kind, name and outcome",
            requests.clone(),
        );
        let request_seconds = Family::<OperationOutcome, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.0005, 2.0, 16))
        });
        registry.register(
            "graphql_request_duration_seconds",
            "Time to answer a GraphQL request over HTTP, by kind, name and outcome",
            request_seconds.clone(),
        );
        let rate_limited = Family::<ClientKind, Counter>::default();
        registry.register(
            "rate_limited",
            "Requests and websocket operations refused by the rate limits",
            rate_limited.clone(),
        );
        let webhook_deliveries = Family::<Outcome, Counter>::default();
        registry.register(
            "webhook_deliveries",
            "Attempts to deliver webhook events by this process, by outcome",
            webhook_deliveries.clone(),
        );
        let websockets = Gauge::default();
        registry.register(
            "websockets",
            "Open websocket connections",
            websockets.clone(),
        );
        let subscriptions = Gauge::default();
        registry.register(
            "subscriptions",
            "Operations running on websockets",
            subscriptions.clone(),
        );
        let pool_connections = Family::<PoolState, Gauge>::default();
        registry.register(
            "db_pool_connections",
            "Open connections of this process's database pool, idle or used",
            pool_connections.clone(),
        );
        let pool_max = Gauge::default();
        registry.register(
            "db_pool_max",
            "The most connections this process's database pool opens",
            pool_max.clone(),
        );
        Metrics {
            registry,
            pool_connections,
            pool_max,
            requests,
            request_seconds,
            operation_names: Default::default(),
            rate_limited,
            webhook_deliveries,
            websockets,
            subscriptions,
            jobs,
            queue_depth,
            oldest_queued_seconds,
            claim_latency,
            run_duration,
            running,
            retries,
            refunded,
            db_statements,
            stats,
        }
    }

    /// Records claimed jobs' wait in the queue. Only first attempts: a job back for another
    /// attempt keeps the `queued_at` of its first (its place in the queue), so the time since
    /// then is not a wait.
    pub fn claimed(&self, jobs: &[job::Model]) {
        let now = Utc::now();
        for job in jobs.iter().filter(|job| job.attempt == 1) {
            if let Some(queued) = job.queued_at {
                self.claim_latency.observe(
                    ((now - queued).num_microseconds().unwrap_or(0) as f64 / 1e6).max(0.0),
                );
            }
        }
    }

    /// Records an attempt to deliver a webhook event: `ok` or `failed`.
    pub fn webhook_delivery(&self, outcome: &str) {
        self.webhook_deliveries
            .get_or_create(&Outcome {
                outcome: outcome.to_owned(),
            })
            .inc();
    }

    /// Records the end of an attempt.
    pub fn finished(&self, tool: &str, outcome: JobStatus, seconds: f64) {
        self.run_duration
            .get_or_create(&ToolOutcome {
                tool: tool.to_owned(),
                outcome: state::name(outcome).to_owned(),
            })
            .observe(seconds);
    }

    /// Records a GraphQL operation: its kind and name, its outcome, and for HTTP requests how
    /// long it took.
    pub fn operation(
        &self,
        kind: Option<&str>,
        name: Option<&str>,
        outcome: &str,
        seconds: Option<f64>,
    ) {
        let labels = OperationOutcome {
            kind: kind.unwrap_or("unknown").to_owned(),
            operation: self.operation_label(name),
            outcome: outcome.to_owned(),
        };
        self.requests.get_or_create(&labels).inc();
        if let Some(seconds) = seconds {
            self.request_seconds.get_or_create(&labels).observe(seconds);
        }
    }

    fn operation_label(&self, name: Option<&str>) -> String {
        let Some(name) = name else {
            return "anonymous".to_owned();
        };
        let mut names = self
            .operation_names
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if names.contains(name) {
            return name.to_owned();
        }
        if names.len() < MAX_OPERATION_NAMES && name.len() <= 64 {
            names.insert(name.to_owned());
            return name.to_owned();
        }
        "other".to_owned()
    }

    /// Records a request or websocket operation refused by the rate limits.
    pub fn rate_limited(&self, by_token: bool) {
        let client = if by_token { "token" } else { "address" };
        self.rate_limited
            .get_or_create(&ClientKind {
                client: client.to_owned(),
            })
            .inc();
    }

    /// Counts an open websocket until the guard drops.
    pub fn websocket_opened(self: &Arc<Self>) -> GaugeGuard {
        GaugeGuard::new(self.websockets.clone())
    }

    /// Counts a running websocket operation until the guard drops.
    pub fn subscription_started(self: &Arc<Self>) -> GaugeGuard {
        GaugeGuard::new(self.subscriptions.clone())
    }

    /// Sets how many jobs a worker runs now.
    pub fn set_running(&self, worker: &str, running: usize) {
        self.running
            .get_or_create(&WorkerLabel {
                worker: worker.to_owned(),
            })
            .set(running as i64);
    }

    /// Reads the job and queue gauges from the database, the pool's use from the pool, and
    /// encodes everything.
    pub async fn render(&self, db: &DatabaseConnection) -> Result<String> {
        // Read first, so that this scrape's own statements are not counted as use.
        let pool = crate::db::pool_use(db);
        for (state, count) in [("idle", pool.idle), ("used", pool.used)] {
            self.pool_connections
                .get_or_create(&PoolState { state })
                .set(i64::from(count));
        }
        self.pool_max.set(i64::from(pool.max));
        // One pass over the jobs: how many of each status and tool, the attempts before each
        // job's current one (each ended in RETRY), and the jobs refunded.
        let counts: Vec<(JobStatus, String, i64, i64, i64)> = job::Entity::find()
            .select_only()
            .column(job::Column::Status)
            .column(job::Column::Tool)
            .column_as(job::Column::Id.count(), "count")
            .column_as(Expr::cust("SUM(attempt - 1)"), "retried")
            .column_as(
                Expr::cust("SUM(CASE WHEN refunded THEN 1 ELSE 0 END)"),
                "refunded",
            )
            .group_by(job::Column::Status)
            .group_by(job::Column::Tool)
            .into_tuple()
            .all(db)
            .await?;
        self.jobs.clear();
        self.retries.clear();
        self.refunded.clear();
        let mut depth = 0;
        for (status, tool, count, retried, refunded) in counts {
            if status == JobStatus::Queued {
                depth += count;
            }
            // A job waiting in RETRY has its current attempt ended in RETRY as well.
            let retried = retried + if status == JobStatus::Retry { count } else { 0 };
            let label = ToolLabel { tool: tool.clone() };
            self.retries.get_or_create(&label).inc_by(retried);
            self.refunded.get_or_create(&label).inc_by(refunded);
            self.jobs
                .get_or_create(&StatusTool {
                    status: state::name(status).to_owned(),
                    tool,
                })
                .set(count);
        }
        self.queue_depth.set(depth);
        let oldest = job::Entity::find()
            .select_only()
            .column(job::Column::QueuedAt)
            .filter(crate::queue::status_is(JobStatus::Queued))
            .order_by_asc(job::Column::QueuedAt)
            .into_tuple::<Option<chrono::DateTime<Utc>>>()
            .one(db)
            .await?
            .flatten();
        self.oldest_queued_seconds.set(oldest.map_or(0.0, |at| {
            (Utc::now() - at).num_milliseconds().max(0) as f64 / 1000.0
        }));
        let seen = self.db_statements.get();
        self.db_statements
            .inc_by(self.stats.count().saturating_sub(seen));
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry)
            .map_err(|err| anyhow::anyhow!("encoding metrics: {err}"))?;
        Ok(text)
    }
}

/// Holds one unit of a gauge while it lives.
pub struct GaugeGuard(Gauge);

impl GaugeGuard {
    fn new(gauge: Gauge) -> Self {
        gauge.inc();
        GaugeGuard(gauge)
    }
}

impl Drop for GaugeGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}
