//! The store: every statement that writes a job, its timeline and the live log, and the signals
//! that tell other components what was written.
//!
//! Domain modules decide (`jobs::lifecycle` which move is allowed and what it refunds, `queue`
//! which jobs to claim); the store writes. What each status sets (`sets`), the shape of a
//! timeline row (`TIMELINE`), of a job's live entry (`FACTS`) and the claim order (`CLAIM_ORDER`)
//! are defined here once, and the one-row and the many-row statements are derived from them.
//! The database-specific forms live in `postgres.rs` and `sqlite.rs`, behind `Dialect`.
//!
//! Effects that belong to the commit are registered on the transaction (`db::AtCommit`): the
//! live entries (`LiveEntries`, written last and numbered in commit order) and the announcement
//! of queued jobs (`Queued`: a PostgreSQL `NOTIFY` to every process, and this process's signal).

mod postgres;
pub mod rows;
mod sqlite;
mod writes;

use entity::ids::{JobId, UserId, WorkspaceId};
use std::sync::{Arc, LazyLock};

use chrono::{DateTime, Utc};
use entity::job::{self, JobStatus};
use entity::live_event::{self, LiveKind};
use entity::{job_event, job_key};
use sea_orm::sea_query::{Expr, SimpleExpr};
use sea_orm::{ConnectionTrait, DatabaseBackend, DatabaseTransaction, DbErr, Set};
use serde_json::Value;
use tokio::sync::{Notify, watch};
use uuid::Uuid;

pub(crate) use postgres::arrays;
pub use rows::Changed;
pub use writes::*;

use crate::db::{AtCommit, Transaction};

/// The PostgreSQL channel on which queued jobs are announced to workers in every process.
/// Each notification's payload is its sender's `process_mark`.
pub const QUEUED_CHANNEL: &str = "jobgraph_jobs_queued";

/// This process's mark on the notifications it sends on `QUEUED_CHANNEL`. Its own workers
/// are woken at commit already (`queued_signal`), so its listeners pass over these.
pub fn process_mark() -> &'static str {
    static MARK: LazyLock<String> = LazyLock::new(|| Uuid::new_v4().simple().to_string());
    &MARK
}

/// The PostgreSQL channel on which committing transactions announce their live entries.
pub const LIVE_CHANNEL: &str = "jobgraph_live";

/// Rows written by one multi-row INSERT: far below the parameter limits of both databases.
pub(crate) const ROWS_PER_INSERT: usize = 1000;

/// The database-specific statements, one implementation per database.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Dialect {
    Postgres,
    Sqlite,
}

impl Dialect {
    pub(crate) fn of(db: &impl ConnectionTrait) -> Self {
        match db.get_database_backend() {
            DatabaseBackend::Postgres => Dialect::Postgres,
            _ => Dialect::Sqlite,
        }
    }
}

// ---- What each status sets ----------------------------------------------------------------

/// What else changes with a status.
#[derive(Debug, Clone, Default)]
pub struct Change {
    pub stage: Option<String>,
    pub message: Option<String>,
    pub progress: Option<f64>,
    pub result: Option<Value>,
    pub error_message: Option<String>,
    pub error_code: Option<String>,
    pub actor_id: Option<UserId>,
    /// For RETRY: when the job may be queued again.
    pub run_after: Option<DateTime<Utc>>,
    /// Wall time, CPU and memory the run used.
    pub resources: Option<Value>,
    /// For PROCESSING: the worker that runs the attempt, and until when its lease holds.
    pub lease: Option<Lease>,
}

/// A worker's hold on a running attempt.
#[derive(Debug, Clone)]
pub struct Lease {
    pub worker: String,
    pub expires_at: DateTime<Utc>,
}

/// A move of a job from `from` to `to` at `now`; `refund` when it gives the charge back.
#[derive(Debug, Clone, Copy)]
pub struct Move {
    pub from: JobStatus,
    pub to: JobStatus,
    pub refund: bool,
    pub now: DateTime<Utc>,
}

/// The columns `step` sets, with what else `change` brings: the one definition of what each
/// status sets, from which the one-row UPDATE of a transition and the many-row UPDATEs of a
/// claim and a completion group are built.
pub fn sets(step: Move, change: &Change) -> Vec<(job::Column, SimpleExpr)> {
    use job::Column as C;
    let Move { from, to, now, .. } = step;
    let mut sets: Vec<(C, SimpleExpr)> = vec![
        (C::Status, Expr::value(to)),
        (C::UpdatedAt, Expr::value(now)),
    ];
    let mut set =
        |column: C, value: SimpleExpr| match sets.iter_mut().find(|(c, _)| same(c, &column)) {
            Some(existing) => existing.1 = value,
            None => sets.push((column, value)),
        };
    match (&change.stage, to) {
        (Some(stage), _) => set(C::Stage, Expr::value(Some(stage.clone()))),
        (None, to) if to.is_final() || to == JobStatus::Processing => {
            set(C::Stage, Expr::value(Option::<String>::None))
        }
        _ => {}
    }
    if let Some(progress) = change.progress {
        set(C::Progress, Expr::value(progress.clamp(0.0, 1.0)));
    }
    match to {
        JobStatus::Queued => {
            // `queued_at` is the job's place in the claim order. A job back for another attempt
            // (after a retry's backoff, or from a run whose worker was lost or stopped) keeps
            // the place it waited for; one queued anew (by a user's retry) joins the end.
            if !matches!(from, JobStatus::Retry | JobStatus::Processing) {
                set(C::QueuedAt, Expr::value(Some(now)));
            }
            set(C::WorkerId, Expr::value(Option::<String>::None));
            set(
                C::LeaseExpiresAt,
                Expr::value(Option::<DateTime<Utc>>::None),
            );
        }
        JobStatus::Processing => {
            // A new attempt: the token that fences every later write of the run.
            set(
                C::Attempt,
                sea_orm::sea_query::ExprTrait::add(Expr::col((job::Entity, C::Attempt)), 1),
            );
            set(C::StartedAt, Expr::value(Some(now)));
            set(C::HeartbeatAt, Expr::value(Some(now)));
            set(C::RunAfter, Expr::value(Option::<DateTime<Utc>>::None));
            if let Some(lease) = &change.lease {
                set(C::WorkerId, Expr::value(Some(lease.worker.clone())));
                set(C::LeaseExpiresAt, Expr::value(Some(lease.expires_at)));
            }
        }
        JobStatus::Completed => set(C::Progress, Expr::value(1.0)),
        _ => {}
    }
    if to.is_final() {
        set(C::FinishedAt, Expr::value(Some(now)));
        set(
            C::LeaseExpiresAt,
            Expr::value(Option::<DateTime<Utc>>::None),
        );
    }
    if step.refund {
        set(C::Refunded, Expr::value(true));
    }
    if let Some(result) = &change.result {
        set(C::Result, Expr::value(Some(result.clone())));
    }
    if change.error_message.is_some() {
        set(C::ErrorMessage, Expr::value(change.error_message.clone()));
        set(C::ErrorCode, Expr::value(change.error_code.clone()));
    }
    if let Some(run_after) = change.run_after {
        set(C::RunAfter, Expr::value(Some(run_after)));
    }
    if let Some(resources) = &change.resources {
        set(C::Resources, Expr::value(Some(resources.clone())));
    }
    sets
}

/// `sets` for a many-row UPDATE whose rows bring their own values of `per_row` from the
/// relation `from` (`done.result`, ...): those columns read it instead of a value.
pub(crate) fn sets_per_row(
    step: Move,
    change: &Change,
    from: &str,
    per_row: &[job::Column],
) -> Vec<(job::Column, SimpleExpr)> {
    use sea_orm::IdenStatic as _;
    let mut sets = sets(step, change);
    for column in per_row {
        let at = sets.iter().position(|(c, _)| same(c, column));
        debug_assert!(at.is_some(), "{} is not set by this move", column.as_str());
        if let Some(at) = at {
            sets[at].1 = Expr::cust(format!("{from}.{}", column.as_str()));
        }
    }
    sets
}

/// Whether two columns are the same one.
fn same(a: &job::Column, b: &job::Column) -> bool {
    std::mem::discriminant(a) == std::mem::discriminant(b)
}

/// `status = '<STATUS>'`, with the status written into the statement rather than bound: some
/// indexes of `jobs` hold the jobs of one status only (the queue's `idx_jobs_claim`,
/// `idx_jobs_lease`, `idx_jobs_retry`; `idx_jobs_reuse`), and a planner uses such an index only
/// for a query whose text names that status.
pub fn status_is(status: JobStatus) -> SimpleExpr {
    use sea_orm::ActiveEnum as _;
    use sea_orm::sea_query::ExprTrait as _;
    Expr::col((job::Entity, job::Column::Status)).eq(Expr::cust(format!("'{}'", status.to_value())))
}

// ---- The shapes derived by every form -----------------------------------------------------

/// A timeline row's columns taken from its job as the job now is; the row also has its own
/// id, the writer's message and the time.
pub const TIMELINE: [(job_event::Column, job::Column); 6] = [
    (job_event::Column::JobId, job::Column::Id),
    (job_event::Column::WorkspaceId, job::Column::WorkspaceId),
    (job_event::Column::Status, job::Column::Status),
    (job_event::Column::Stage, job::Column::Stage),
    (job_event::Column::Progress, job::Column::Progress),
    (job_event::Column::Attempt, job::Column::Attempt),
];

/// The timeline row of `job` as it now is.
pub fn timeline_row(
    job: &job::Model,
    message: Option<String>,
    now: DateTime<Utc>,
) -> job_event::ActiveModel {
    use sea_orm::{ActiveModelTrait as _, ModelTrait as _};
    let mut row = job_event::ActiveModel {
        id: Set(Uuid::now_v7()),
        message: Set(message),
        created_at: Set(now),
        ..Default::default()
    };
    for (event, from) in TIMELINE {
        row.set(event, job.get(from));
    }
    row
}

/// What subscription filters look at, kept in each job entry of the live log under these keys:
/// a job deleted before its entries are read is still filtered, and its changes still reported.
pub const FACTS: [(&str, job::Column); 6] = [
    ("name", job::Column::Name),
    ("tool", job::Column::Tool),
    ("submitterId", job::Column::SubmitterId),
    ("batchId", job::Column::BatchId),
    ("createdAt", job::Column::CreatedAt),
    ("workflowId", job::Column::WorkflowId),
];

/// The `FACTS` of `job`, as the live log keeps them.
pub fn facts(job: &job::Model) -> Value {
    facts_json(fact_values(job))
}

/// The values of `job`'s `FACTS`, in their order.
fn fact_values(job: &job::Model) -> Vec<sea_orm::Value> {
    use sea_orm::ModelTrait as _;
    FACTS.iter().map(|(_, column)| job.get(*column)).collect()
}

/// The JSON of `FACTS`' values (`fact_values`).
fn facts_json(values: Vec<sea_orm::Value>) -> Value {
    Value::Object(
        FACTS
            .iter()
            .zip(values)
            .map(|((key, _), value)| ((*key).to_owned(), fact_json(&value)))
            .collect(),
    )
}

/// One fact's value as JSON.
fn fact_json(value: &sea_orm::Value) -> Value {
    match value {
        // As PostgreSQL's `to_jsonb` writes a time, so both forms read alike.
        sea_orm::Value::ChronoDateTimeUtc(Some(at)) => {
            Value::String(at.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, false))
        }
        value => sea_orm::sea_query::sea_value_to_json_value(value),
    }
}

/// The live entry of `job` as it now is.
pub fn live_entry(job: &job::Model, kind: LiveKind) -> LiveEntry {
    let mut row = live_entry_of(job.workspace_id, Some(job.id), kind);
    row.status = Set(Some(job.status));
    if kind != LiveKind::Deleted {
        row.stage = Set(job.stage.clone());
        row.progress = Set(Some(job.progress));
        row.attempt = Set(Some(job.attempt));
    }
    LiveEntry {
        row,
        facts: Some(fact_values(job)),
    }
}

/// An empty live entry of `kind`.
pub fn live_entry_of(
    workspace_id: WorkspaceId,
    job_id: Option<JobId>,
    kind: LiveKind,
) -> live_event::ActiveModel {
    live_event::ActiveModel {
        seq: Set(None),
        workspace_id: Set(workspace_id),
        job_id: Set(job_id),
        kind: Set(kind),
        status: Set(None),
        stage: Set(None),
        progress: Set(None),
        attempt: Set(None),
        data: Set(None),
        created_at: Set(Utc::now()),
        ..Default::default()
    }
}

/// The claim order of QUEUED jobs: highest priority, then queued first, then (for jobs queued
/// together, as a batch's are) submitted first. `true` for descending.
pub const CLAIM_ORDER: [(job::Column, bool); 3] = [
    (job::Column::Priority, true),
    (job::Column::QueuedAt, false),
    (job::Column::Id, false),
];

// ---- Effects at commit, and the signals they send ------------------------------------------

/// This process's signal that jobs were queued, sent when a transaction that queued jobs
/// commits; workers of this process wait on it (and on `QUEUED_CHANNEL` for other processes').
pub fn queued_signal() -> Arc<Notify> {
    static QUEUED: LazyLock<Arc<Notify>> = LazyLock::new(Arc::default);
    QUEUED.clone()
}

/// Counts this process's commits of live entries on SQLite, where no `NOTIFY` wakes the buses.
fn live_written() -> &'static watch::Sender<u64> {
    static WRITTEN: LazyLock<watch::Sender<u64>> = LazyLock::new(|| watch::channel(0).0);
    &WRITTEN
}

/// A receiver that changes when this process commits live entries to a SQLite database.
pub fn live_signal() -> watch::Receiver<u64> {
    live_written().subscribe()
}

/// The announcement of queued jobs to this process's workers, after the commit. Other
/// processes' are told by `LiveEntries`, at commit.
#[derive(Default)]
pub(crate) struct Queued;

#[async_trait::async_trait]
impl AtCommit for Queued {
    fn after_commit(self: Box<Self>) {
        queued_signal().notify_waiters();
    }
}

/// Registers that `tx` queues jobs: workers are told when it commits.
pub(crate) fn announce_queued(tx: &Transaction) {
    tx.at_commit::<Queued>(|_| {});
    tx.at_commit::<LiveEntries>(|live| live.queued = true);
}

/// A transaction's live entries, written as its last statements, numbered in commit order,
/// and on PostgreSQL the notification of the jobs it queued (`QUEUED_CHANNEL`), sent with them
/// (or alone when there are none).
#[derive(Default)]
pub struct LiveEntries {
    entries: Vec<LiveEntry>,
    queued: bool,
    sqlite: bool,
}

#[async_trait::async_trait]
impl AtCommit for LiveEntries {
    /// After every other effect: the numbering lock is held from here to the commit.
    const ORDER: i32 = i32::MAX;

    async fn before_commit(&mut self, tx: &DatabaseTransaction) -> Result<(), DbErr> {
        let entries = std::mem::take(&mut self.entries);
        match Dialect::of(tx) {
            Dialect::Postgres if entries.is_empty() && self.queued => {
                postgres::announce_queued(tx).await
            }
            _ if entries.is_empty() => Ok(()),
            Dialect::Postgres => postgres::write_live(tx, entries, self.queued).await,
            Dialect::Sqlite => {
                self.sqlite = true;
                let rows = entries.into_iter().map(LiveEntry::into_row).collect();
                sqlite::write_live(tx, rows).await
            }
        }
    }

    fn after_commit(self: Box<Self>) {
        if self.sqlite {
            live_written().send_modify(|n| *n = n.wrapping_add(1));
        }
    }
}

/// A live entry to be written at commit. A job's entry keeps the values of the job's `FACTS`,
/// and its `data` is made of them where it is written: on PostgreSQL by the statement that
/// writes it, from values that the entries of one change mostly share.
pub struct LiveEntry {
    row: live_event::ActiveModel,
    facts: Option<Vec<sea_orm::Value>>,
}

impl From<live_event::ActiveModel> for LiveEntry {
    /// An entry that is not a job's, with the `data` it is given.
    fn from(row: live_event::ActiveModel) -> Self {
        LiveEntry { row, facts: None }
    }
}

impl LiveEntry {
    /// The row as written: a job's entry with its facts as `data`.
    fn into_row(self) -> live_event::ActiveModel {
        let mut row = self.row;
        if let Some(facts) = self.facts {
            row.data = Set(Some(facts_json(facts)));
        }
        row
    }
}

/// Keeps live entries to be written when `tx` commits. Entries recorded together are one
/// change and carry one time.
pub fn record_live(tx: &Transaction, entries: impl IntoIterator<Item = impl Into<LiveEntry>>) {
    let now = Utc::now();
    tx.at_commit::<LiveEntries>(|live| {
        live.entries.extend(entries.into_iter().map(|entry| {
            let mut entry = entry.into();
            entry.row.created_at = Set(now);
            entry
        }))
    });
}

/// The keys row of a new job (`job_keys`).
fn key_row(job: &job::Model) -> job_key::ActiveModel {
    job_key::ActiveModel {
        job_id: Set(job.id),
        workspace_id: Set(job.workspace_id),
        tool: Set(job.tool.clone()),
        submitter_id: Set(job.submitter_id),
    }
}
