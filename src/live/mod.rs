//! Live updates: the event log every writer appends to inside its transaction, and the bus
//! that tails the log and fans each committed entry out to this process's subscribers.
//!
//! Writers call `job_changed`, `job_deleted`, `balance_moved` or `members_changed` in the
//! transaction that makes the change (`db::Transaction`), which writes the entries as its last
//! statements before it commits, so an entry exists exactly when the change committed. Entries
//! get their `seq` in commit order (`write_at_commit`), which makes `seq` a cursor: "everything
//! after n" is a plain range read, on any node. The bus of each API process reads new entries
//! when woken (PostgreSQL `NOTIFY jobgraph_live`, sent by the committing transaction; on SQLite,
//! an in-process wake after which it queues behind the writer) and at least
//! every second, loads the jobs they name once, and broadcasts them. A notification carries no
//! payload, so PostgreSQL's 8 KB limit never applies.

pub mod feed;
pub mod subscriptions;

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use chrono::Utc;
use entity::job;
use entity::live_event;
pub use entity::live_event::LiveKind;
use sea_orm::{
    ColumnTrait, ConnectionTrait, DatabaseBackend, DatabaseConnection, DatabaseTransaction,
    EntityTrait, QueryFilter, QuerySelect, Set,
};
use serde_json::json;
use tokio::sync::{Notify, broadcast, watch};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::access::{self, Standing, Viewer};
use crate::db::Transaction;
use crate::error::Result;

/// The PostgreSQL channel on which committing transactions announce their live entries.
pub const CHANNEL: &str = "jobgraph_live";

/// Entries read from the log at once.
const BATCH: u64 = 500;

/// Entries a subscriber may fall behind before it reads the log itself instead.
const BUFFER: usize = 4096;

/// Revocations a websocket may fall behind: revocations are rare, and a socket is checked
/// against each.
const REVOCATIONS: usize = 256;

/// How long entries are kept for resuming subscriptions.
const RETENTION: chrono::Duration = chrono::Duration::days(7);

/// Wakes the buses of this process after a SQLite write (PostgreSQL wakes them by NOTIFY).
static LOCAL_WAKE: LazyLock<watch::Sender<u64>> = LazyLock::new(|| watch::channel(0).0);

/// The advisory lock under which a committing transaction numbers its live entries on
/// PostgreSQL: held until the commit is visible, so numbers follow commit order.
const NUMBERING_LOCK: i64 = 7_202_611_230_010;

/// Entries written by one INSERT on SQLite: far below its parameter limit.
const ENTRIES_PER_INSERT: usize = 1000;

/// Writes a committing transaction's live entries, as the last statements before its commit
/// (`db::Transaction::commit`), each row once and already numbered.
///
/// On PostgreSQL one statement (`numbered_insert`) takes the numbering lock, reserves a block of
/// consecutive numbers from `live_events_seq`, writes the rows with them (each row's number is
/// its `id` as well as its `seq`, so the primary key keeps numbers unique: migration 000090) and
/// notifies the buses;
/// the lock is held until the commit is visible, so a reader of `seq > n` never misses a row committed later
/// with a smaller number. On SQLite the transaction already holds the one write lock, and the
/// log's trigger numbers each row with its id.
pub(crate) async fn write_at_commit(
    tx: &DatabaseTransaction,
    entries: Vec<live_event::ActiveModel>,
) -> std::result::Result<(), sea_orm::DbErr> {
    if entries.is_empty() {
        return Ok(());
    }
    let backend = tx.get_database_backend();
    if backend == DatabaseBackend::Postgres {
        tx.execute_raw(numbered_insert(&entries)).await?;
    } else {
        for chunk in entries.chunks(ENTRIES_PER_INSERT) {
            live_event::Entity::insert_many(chunk.to_vec())
                .exec_without_returning(tx)
                .await?;
        }
    }
    if backend == DatabaseBackend::Sqlite {
        // The bus takes the write lock before reading, so it reads after this commits.
        LOCAL_WAKE.send_modify(|n| *n = n.wrapping_add(1));
    }
    Ok(())
}

/// On PostgreSQL, one statement that takes the numbering lock, reserves consecutive numbers,
/// queues the notification (sent at commit) and writes `entries` with their numbers, in order.
/// It is built before the lock is asked for, so the lock waits for no client-side work, and it is
/// one round trip. Its text is the same for any number of entries (their columns travel as
/// arrays, see `db::column`), so every connection parses and plans it once. The lock is
/// re-entrant: a transaction's later statements continue its numbers.
fn numbered_insert(entries: &[live_event::ActiveModel]) -> sea_orm::Statement {
    use sea_orm::ActiveEnum as _;
    use sea_orm::ActiveValue;
    /// Bits of `nulls`: which nullable columns of an entry are NULL.
    const JOB_ID: i32 = 1;
    const STATUS: i32 = 2;
    const STAGE: i32 = 4;
    const PROGRESS: i32 = 8;
    const ATTEMPT: i32 = 16;
    const DATA: i32 = 32;
    fn given<T: Clone>(column: &ActiveValue<Option<T>>) -> Option<T>
    where
        Option<T>: Into<sea_orm::Value>,
    {
        column.try_as_ref().cloned().flatten()
    }
    let now = Utc::now();
    let nulls = entries.iter().map(|entry| {
        [
            (given(&entry.job_id).is_none(), JOB_ID),
            (given(&entry.status).is_none(), STATUS),
            (given(&entry.stage).is_none(), STAGE),
            (given(&entry.progress).is_none(), PROGRESS),
            (given(&entry.attempt).is_none(), ATTEMPT),
            (given(&entry.data).is_none(), DATA),
        ]
        .into_iter()
        .filter(|(null, _)| *null)
        .fold(0, |row, (_, bit)| row | bit)
    });
    let values = vec![
        (entries.len() as i64).into(),
        crate::db::column(nulls),
        crate::db::column(
            entries
                .iter()
                .map(|e| e.workspace_id.try_as_ref().copied().unwrap_or_default()),
        ),
        crate::db::column(entries.iter().map(|e| given(&e.job_id).unwrap_or_default())),
        crate::db::column(entries.iter().map(|e| {
            e.kind
                .try_as_ref()
                .map(|kind| kind.to_value())
                .unwrap_or_default()
        })),
        crate::db::column(
            entries
                .iter()
                .map(|e| given(&e.status).map(|s| s.to_value()).unwrap_or_default()),
        ),
        crate::db::column(entries.iter().map(|e| given(&e.stage).unwrap_or_default())),
        crate::db::column(
            entries
                .iter()
                .map(|e| given(&e.progress).unwrap_or_default()),
        ),
        crate::db::column(
            entries
                .iter()
                .map(|e| given(&e.attempt).unwrap_or_default()),
        ),
        crate::db::column(
            entries
                .iter()
                .map(|e| given(&e.data).unwrap_or(serde_json::Value::Null)),
        ),
        crate::db::column(
            entries
                .iter()
                .map(|e| e.created_at.try_as_ref().copied().unwrap_or(now)),
        ),
    ];
    let sql = format!(
        "WITH numbering AS (SELECT pg_advisory_xact_lock({NUMBERING_LOCK})), \
         reserved AS (SELECT setval('live_events_seq', nextval('live_events_seq') + $1 - 1) - $1 \
         AS before, pg_notify('{CHANNEL}', '') FROM numbering) \
         INSERT INTO live_events \
         (id, seq, workspace_id, job_id, kind, status, stage, progress, attempt, data, created_at) \
         SELECT reserved.before + v.ord, reserved.before + v.ord, v.workspace_id, \
         CASE WHEN v.nulls & {JOB_ID} = 0 THEN v.job_id END, v.kind, \
         CASE WHEN v.nulls & {STATUS} = 0 THEN v.status END, \
         CASE WHEN v.nulls & {STAGE} = 0 THEN v.stage END, \
         CASE WHEN v.nulls & {PROGRESS} = 0 THEN v.progress END, \
         CASE WHEN v.nulls & {ATTEMPT} = 0 THEN v.attempt END, \
         CASE WHEN v.nulls & {DATA} = 0 THEN v.data END, v.created_at \
         FROM reserved, unnest($2::int4[], $3::uuid[], $4::uuid[], $5::text[], $6::text[], \
         $7::text[], $8::float8[], $9::int4[], $10::jsonb[], $11::timestamptz[]) WITH ORDINALITY \
         AS v (nulls, workspace_id, job_id, kind, status, stage, progress, attempt, data, \
         created_at, ord)"
    );
    sea_orm::Statement::from_sql_and_values(DatabaseBackend::Postgres, sql, values)
}

/// On PostgreSQL, the common table expressions that write the live entries of the jobs a
/// statement changes, from inside that statement: `changed` names its CTE of changed `jobs` rows
/// and `now` the parameter with the entries' time. They write what `jobs_changed` would for those
/// rows, numbered as `numbered_insert` numbers (under the numbering lock, held until commit),
/// and queue the notification. The lock is asked for once every changed row is counted, that is
/// once the change itself is done, so statements of other transactions change their rows in
/// parallel and take turns only for the numbering; no lock is taken when nothing changed.
pub(crate) fn entries_of_changed_jobs(changed: &str, now: &str) -> String {
    use sea_orm::ActiveEnum as _;
    let created = LiveKind::Created.to_value();
    let updated = LiveKind::Updated.to_value();
    let pending = job::JobStatus::Pending.to_value();
    format!(
        "live_counted AS (SELECT count(*) AS n FROM {changed}), \
         live_locked AS (SELECT n, pg_advisory_xact_lock({NUMBERING_LOCK}) FROM live_counted \
         WHERE n > 0), \
         live_reserved AS (SELECT setval('live_events_seq', nextval('live_events_seq') + n - 1) \
         - n AS before, pg_notify('{CHANNEL}', '') FROM live_locked), \
         live AS (INSERT INTO live_events \
         (id, seq, workspace_id, job_id, kind, status, stage, progress, attempt, data, created_at) \
         SELECT r.before + c.ord, r.before + c.ord, c.workspace_id, c.id, \
         CASE WHEN c.status = '{pending}' THEN '{created}' ELSE '{updated}' END, c.status, \
         c.stage, c.progress, c.attempt, jsonb_build_object('name', c.name, 'tool', c.tool, \
         'submitterId', c.submitter_id, 'batchId', c.batch_id, 'createdAt', c.created_at), {now} \
         FROM live_reserved AS r, (SELECT {changed}.*, row_number() OVER () AS ord \
         FROM {changed}) AS c)"
    )
}

fn entry(workspace_id: Uuid, job_id: Option<Uuid>, kind: LiveKind) -> live_event::ActiveModel {
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

/// What subscription filters look at, kept in each job entry: a job deleted before its entries
/// are read is still filtered, and its changes still reported. `entries_of_changed_jobs` builds
/// the same object in SQL.
fn filter_facts(job: &job::Model) -> serde_json::Value {
    json!({
        "name": job.name,
        "tool": job.tool,
        "submitterId": job.submitter_id,
        "batchId": job.batch_id,
        "createdAt": job.created_at,
    })
}

/// Records that a job was created or changed, as it now is.
pub async fn job_changed(tx: &Transaction, job: &job::Model, kind: LiveKind) -> Result<()> {
    jobs_changed(tx, std::slice::from_ref(job), |_| kind).await
}

/// Records that jobs were created or changed, as each now is.
pub async fn jobs_changed(
    tx: &Transaction,
    jobs: &[job::Model],
    kind: impl Fn(&job::Model) -> LiveKind,
) -> Result<()> {
    tx.record_live(jobs.iter().map(|job| {
        let mut entry = entry(job.workspace_id, Some(job.id), kind(job));
        entry.status = Set(Some(job.status));
        entry.stage = Set(job.stage.clone());
        entry.progress = Set(Some(job.progress));
        entry.attempt = Set(Some(job.attempt));
        entry.data = Set(Some(filter_facts(job)));
        entry
    }));
    Ok(())
}

/// Records that a job was deleted, keeping what subscription filters look at.
pub async fn job_deleted(tx: &Transaction, job: &job::Model) -> Result<()> {
    let mut entry = entry(job.workspace_id, Some(job.id), LiveKind::Deleted);
    entry.status = Set(Some(job.status));
    entry.data = Set(Some(filter_facts(job)));
    tx.record_live([entry]);
    Ok(())
}

/// Records a workspace's balance after a ledger entry.
pub async fn balance_moved(tx: &Transaction, workspace_id: Uuid, balance: i64) -> Result<()> {
    let mut entry = entry(workspace_id, None, LiveKind::Credits);
    entry.data = Set(Some(json!({ "balance": balance })));
    tx.record_live([entry]);
    Ok(())
}

/// Records that an API token was revoked, so that every process stops trusting it at once.
pub async fn token_revoked(tx: &Transaction, token_id: Uuid) -> Result<()> {
    let mut entry = entry(Uuid::nil(), None, LiveKind::TokenRevoked);
    entry.data = Set(Some(json!({ "tokenId": token_id })));
    tx.record_live([entry]);
    Ok(())
}

/// Records that a workspace's members changed, so subscribers check their access again.
pub async fn members_changed(tx: &Transaction, workspace_id: Uuid) -> Result<()> {
    tx.record_live([entry(workspace_id, None, LiveKind::Members)]);
    Ok(())
}

/// A committed entry, with the job it names as it is now (none when deleted).
#[derive(Debug)]
pub struct Event {
    pub entry: live_event::Model,
    pub job: Option<Arc<job::Model>>,
}

impl Event {
    pub fn seq(&self) -> i64 {
        self.entry.seq.unwrap_or_default()
    }

    /// The job with the status, stage, progress and attempt of this entry: a subscriber that
    /// reads late still sees every status in order.
    pub fn job_as_of_entry(&self) -> Option<job::Model> {
        let mut job = self.job.as_deref()?.clone();
        let entry = &self.entry;
        if let Some(status) = entry.status {
            job.status = status;
        }
        job.stage = entry.stage.clone();
        if let Some(progress) = entry.progress {
            job.progress = progress;
        }
        if let Some(attempt) = entry.attempt {
            job.attempt = attempt;
        }
        Some(job)
    }
}

/// Loads the jobs that `entries` name, once each.
pub async fn resolve(
    db: &impl ConnectionTrait,
    entries: Vec<live_event::Model>,
) -> Result<Vec<Arc<Event>>> {
    let ids: Vec<Uuid> = entries
        .iter()
        .filter(|e| matches!(e.kind, LiveKind::Created | LiveKind::Updated))
        .filter_map(|e| e.job_id)
        .collect();
    let mut jobs: HashMap<Uuid, Arc<job::Model>> = HashMap::new();
    for chunk in ids.chunks(500) {
        for job in job::Entity::find()
            .filter(job::Column::Id.is_in(chunk.iter().copied()))
            .all(db)
            .await?
        {
            jobs.insert(job.id, Arc::new(job));
        }
    }
    Ok(entries
        .into_iter()
        .map(|entry| {
            let job = match entry.kind {
                LiveKind::Created | LiveKind::Updated => {
                    entry.job_id.and_then(|id| jobs.get(&id).cloned())
                }
                _ => None,
            };
            Arc::new(Event { entry, job })
        })
        .collect())
}

/// This process's fan-out of committed entries.
#[derive(Clone)]
pub struct Bus {
    inner: Arc<Inner>,
}

struct Inner {
    db: DatabaseConnection,
    sender: broadcast::Sender<Arc<Event>>,
    /// The last `seq` broadcast.
    head: AtomicI64,
    wake: Notify,
    /// Cancelled when the server stops: subscriptions end and websockets close.
    stopping: CancellationToken,
    /// The standings subscribers are checked against: the process's one cache of them.
    standings: Arc<access::StandingCache>,
    /// This process's caches of access rules, told of member changes and revocations made by
    /// any process as the log brings them, before they are broadcast.
    caches: Vec<Arc<dyn access::Invalidate>>,
    /// Tokens revoked, as the log tells: websockets they opened close.
    revoked: broadcast::Sender<Uuid>,
}

impl Bus {
    /// A bus reading `db`'s log, checking subscribers against `standings`, and telling `caches`
    /// what the log says changed.
    pub fn new(
        db: DatabaseConnection,
        standings: Arc<access::StandingCache>,
        caches: Vec<Arc<dyn access::Invalidate>>,
    ) -> Self {
        Bus {
            inner: Arc::new(Inner {
                db,
                sender: broadcast::channel(BUFFER).0,
                head: AtomicI64::new(0),
                wake: Notify::new(),
                stopping: CancellationToken::new(),
                standings,
                caches,
                revoked: broadcast::channel(REVOCATIONS).0,
            }),
        }
    }

    /// The tokens revoked from now on, by any process.
    pub fn revocations(&self) -> broadcast::Receiver<Uuid> {
        self.inner.revoked.subscribe()
    }

    pub fn db(&self) -> &DatabaseConnection {
        &self.inner.db
    }

    /// A receiver of every entry broadcast from now on, and the last `seq` broadcast before.
    pub fn subscribe(&self) -> (broadcast::Receiver<Arc<Event>>, i64) {
        let receiver = self.inner.sender.subscribe();
        (receiver, self.head())
    }

    /// The last `seq` broadcast; entries after it are still to come.
    pub fn head(&self) -> i64 {
        self.inner.head.load(Ordering::Acquire)
    }

    /// The viewer's current standing in a workspace, as the process's standing cache has it.
    pub async fn standing(&self, viewer: &Viewer, workspace_id: Uuid) -> Result<Standing> {
        self.inner
            .standings
            .standing(self.db(), viewer, workspace_id)
            .await
    }

    /// Cancelled when the server stops.
    pub fn stopping(&self) -> CancellationToken {
        self.inner.stopping.clone()
    }

    /// Subscribers of this process.
    pub fn subscribers(&self) -> usize {
        self.inner.sender.receiver_count()
    }

    /// Tails the log until `shutdown`: wakes on notifications (PostgreSQL, when
    /// `listen_url` is given), on local writes (SQLite) and every second.
    pub async fn run(self, listen_url: Option<String>, shutdown: CancellationToken) {
        let stopping = self.inner.stopping.clone();
        let _stopping = stopping.drop_guard();
        if let Some(url) = listen_url {
            tokio::spawn(listen(url, self.clone(), shutdown.clone()));
        }
        let mut local = LOCAL_WAKE.subscribe();
        let mut last_prune = std::time::Instant::now();
        while !shutdown.is_cancelled() {
            if let Err(err) = self.drain().await {
                tracing::warn!(error = %err, "reading the live event log failed");
            }
            if last_prune.elapsed() > Duration::from_secs(3600) {
                last_prune = std::time::Instant::now();
                if let Err(err) = prune(self.db()).await {
                    tracing::warn!(error = %err, "pruning the live event log failed");
                }
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = self.inner.wake.notified() => {}
                _ = local.changed() => {}
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
        }
    }

    /// Starts the bus's head at the log's last entry. Call it before serving: a subscription
    /// starts from an entry at or after the head, and the bus broadcasts only what follows it,
    /// so a head read later could skip a subscriber's first changes.
    pub async fn start(&self) -> Result<()> {
        let start = self.last_committed().await?;
        self.inner.head.store(start, Ordering::Release);
        Ok(())
    }

    /// Whether the log still holds every entry after `seq`: older ones are pruned.
    pub async fn still_kept(&self, seq: i64) -> Result<bool> {
        let oldest: Option<Option<i64>> = live_event::Entity::find()
            .select_only()
            .column_as(live_event::Column::Seq.min(), "seq")
            .into_tuple()
            .one(self.db())
            .await?;
        Ok(oldest.flatten().is_none_or(|oldest| seq + 1 >= oldest))
    }

    /// The last `seq` committed: everything up to it is visible to a read that starts now.
    pub async fn last_committed(&self) -> Result<i64> {
        let seq: Option<Option<i64>> = live_event::Entity::find()
            .select_only()
            .column_as(live_event::Column::Seq.max(), "seq")
            .into_tuple()
            .one(self.db())
            .await?;
        Ok(seq.flatten().unwrap_or(0))
    }

    /// Broadcasts every entry committed after the head.
    async fn drain(&self) -> Result<()> {
        loop {
            let head = self.head();
            let entries = self.read_after(head).await?;
            let full = entries.len() as u64 == BATCH;
            if entries.is_empty() {
                return Ok(());
            }
            for event in resolve(self.db(), entries).await? {
                let seq = event.seq();
                if event.entry.kind == LiveKind::TokenRevoked
                    && let Some(token_id) = event
                        .entry
                        .data
                        .as_ref()
                        .and_then(|data| data.get("tokenId"))
                        .and_then(|id| serde_json::from_value::<Uuid>(id.clone()).ok())
                {
                    for cache in &self.inner.caches {
                        cache.token_revoked(token_id);
                    }
                    let _ = self.inner.revoked.send(token_id);
                }
                if event.entry.kind == LiveKind::Members {
                    for cache in &self.inner.caches {
                        cache.members_changed(event.entry.workspace_id);
                    }
                }
                // No receivers is not an error: nobody listens yet.
                let _ = self.inner.sender.send(event);
                self.inner.head.store(seq, Ordering::Release);
            }
            if !full {
                return Ok(());
            }
        }
    }

    async fn read_after(&self, head: i64) -> Result<Vec<live_event::Model>> {
        let select = live_event::Entity::find_after(head).limit(BATCH);
        if self.db().get_database_backend() == DatabaseBackend::Sqlite {
            // Queue behind the writer that woke us, so that its entries are committed.
            let tx = crate::db::begin_write(self.db()).await?;
            let entries = select.all(&tx).await?;
            tx.commit().await?;
            Ok(entries)
        } else {
            Ok(select.all(self.db()).await?)
        }
    }
}

/// Wakes `bus` on every notification of committed entries, reconnecting after failures; the
/// bus's one-second poll covers the gaps.
async fn listen(url: String, bus: Bus, shutdown: CancellationToken) {
    while !shutdown.is_cancelled() {
        let once = async {
            let mut listener = sea_orm::sqlx::postgres::PgListener::connect(&url).await?;
            listener.listen(CHANNEL).await?;
            bus.inner.wake.notify_one();
            loop {
                listener.recv().await?;
                bus.inner.wake.notify_one();
            }
            #[expect(unreachable_code, reason = "gives the async block its error type")]
            Ok::<(), sea_orm::sqlx::Error>(())
        };
        tokio::select! {
            _ = shutdown.cancelled() => return,
            Err(err) = once => {
                tracing::warn!(error = %err, "listening for live events failed; retrying");
            }
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

async fn prune(db: &DatabaseConnection) -> Result<()> {
    live_event::Entity::delete_many()
        .filter(live_event::Column::CreatedAt.lt(Utc::now() - RETENTION))
        .exec(db)
        .await?;
    Ok(())
}
