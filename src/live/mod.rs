//! Live updates: the event log every writer appends to inside its transaction, and the bus
//! that tails the log and fans each committed entry out to this process's subscribers.
//!
//! Writers record entries in the transaction that makes the change (the store records a job's
//! with each write of it; `balance_moved`, `members_changed` and `token_revoked` the others),
//! which writes them as its last statements before it commits (`store::LiveEntries`), so an
//! entry exists exactly when the change committed. Entries get their `seq` in commit order,
//! which makes `seq` a cursor: "everything after n" is a plain range read, on any node. The bus of each API process reads new entries
//! when woken (PostgreSQL `NOTIFY jobgraph_live`, sent by the committing transaction; on SQLite,
//! an in-process wake after which it queues behind the writer) and at least
//! every second, loads the jobs they name once, and broadcasts them. A notification carries no
//! payload, so PostgreSQL's 8 KB limit never applies.

pub mod feed;
pub mod subscriptions;

use entity::ids::{JobId, TokenId, TransactionId, WorkflowId, WorkspaceId};
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use chrono::{DateTime, Utc};
use entity::job;
use entity::live_event;
pub use entity::live_event::LiveKind;
use sea_orm::{
    ColumnTrait, ConnectionTrait, DatabaseConnection, EntityTrait, QueryFilter, QuerySelect, Set,
};
use serde_json::json;
use tokio::sync::{Notify, broadcast, watch};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::access::{self, Standing, Viewer};
use crate::db::Transaction;
use crate::error::Result;
use crate::store;

/// The PostgreSQL channel on which committing transactions announce their live entries.
pub use crate::store::LIVE_CHANNEL as CHANNEL;

/// Entries read from the log at once.
const BATCH: u64 = 500;

/// Entries a subscriber may fall behind before it reads the log itself instead.
const BUFFER: usize = 4096;

/// Revocations a websocket may fall behind: revocations are rare, and a socket is checked
/// against each.
const REVOCATIONS: usize = 256;

/// How long entries are kept for resuming subscriptions.
const RETENTION: chrono::Duration = chrono::Duration::days(7);

/// Records a workspace's balance after ledger entries, and which entries moved it (what
/// webhooks tell of each).
pub async fn balance_moved(
    tx: &Transaction,
    workspace_id: WorkspaceId,
    balance: i64,
    entries: &[TransactionId],
) -> Result<()> {
    let mut entry = store::live_entry_of(workspace_id, None, LiveKind::Credits);
    entry.data = Set(Some(json!({ "balance": balance, "entries": entries })));
    store::record_live(tx, [entry]);
    Ok(())
}

/// Records that a workflow changed (its status, steps or credits).
pub fn workflow_changed(tx: &Transaction, workspace_id: WorkspaceId, workflow_id: WorkflowId) {
    let mut entry = store::live_entry_of(workspace_id, None, LiveKind::Workflow);
    entry.data = Set(Some(json!({ "workflowId": workflow_id })));
    store::record_live(tx, [entry]);
}

/// Records that an API token was revoked, so that every process stops trusting it at once.
pub async fn token_revoked(tx: &Transaction, token_id: TokenId) -> Result<()> {
    let mut entry = store::live_entry_of(WorkspaceId(Uuid::nil()), None, LiveKind::TokenRevoked);
    entry.data = Set(Some(json!({ "tokenId": token_id })));
    store::record_live(tx, [entry]);
    Ok(())
}

/// Records that a workspace's members changed, so subscribers check their access again.
pub async fn members_changed(tx: &Transaction, workspace_id: WorkspaceId) -> Result<()> {
    store::record_live(
        tx,
        [store::live_entry_of(workspace_id, None, LiveKind::Members)],
    );
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

/// The last `seq` of the log committed: everything up to it is visible to a read that starts
/// now, and an entry committed later has a greater `seq`.
pub async fn last_committed(db: &impl ConnectionTrait) -> Result<i64> {
    let seq: Option<Option<i64>> = live_event::Entity::bound(live_event::Bound::Last)
        .into_tuple()
        .one(db)
        .await?;
    Ok(seq.flatten().unwrap_or(0))
}

/// Loads the jobs that `entries` name, once each.
pub async fn resolve(
    db: &impl ConnectionTrait,
    entries: Vec<live_event::Model>,
) -> Result<Vec<Arc<Event>>> {
    let ids: Vec<JobId> = entries
        .iter()
        .filter(|e| matches!(e.kind, LiveKind::Created | LiveKind::Updated))
        .filter_map(|e| e.job_id)
        .collect();
    let mut jobs: HashMap<JobId, Arc<job::Model>> = HashMap::new();
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

/// `events` with the jobs of those that name a job and have none read: the bus sends its
/// entries without their jobs while nobody subscribes, and a subscriber may join meanwhile.
/// A job deleted since is not found again, and stays none.
pub async fn fill(db: &impl ConnectionTrait, events: Vec<Arc<Event>>) -> Result<Vec<Arc<Event>>> {
    let unread = |event: &Arc<Event>| {
        event.job.is_none()
            && event.entry.job_id.is_some()
            && matches!(event.entry.kind, LiveKind::Created | LiveKind::Updated)
    };
    if !events.iter().any(unread) {
        return Ok(events);
    }
    let (unread, read): (Vec<_>, Vec<_>) = events.into_iter().partition(|e| unread(e));
    let mut events = read;
    events.extend(resolve(db, unread.iter().map(|e| e.entry.clone()).collect()).await?);
    events.sort_by_key(|event| event.seq());
    Ok(events)
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
    revoked: broadcast::Sender<TokenId>,
    /// The head, for readers of the log that only need to know it moved (webhooks).
    advanced: watch::Sender<i64>,
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
                advanced: watch::channel(0).0,
            }),
        }
    }

    /// The head, told each time it moves: for a part of the process that reads the log itself
    /// and only needs waking (webhooks). A receiver of the broadcast would count as a
    /// subscriber, and keep the bus reading the jobs its entries name.
    pub fn advanced(&self) -> watch::Receiver<i64> {
        self.inner.advanced.subscribe()
    }

    /// The tokens revoked from now on, by any process.
    pub fn revocations(&self) -> broadcast::Receiver<TokenId> {
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
    pub async fn standing(&self, viewer: &Viewer, workspace_id: WorkspaceId) -> Result<Standing> {
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
        let mut local = store::live_signal();
        let mut last_prune = std::time::Instant::now();
        // Pruning runs beside the reads, so that deleting a day of entries delays no delivery.
        let mut pruning: Option<tokio::task::JoinHandle<()>> = None;
        while !shutdown.is_cancelled() {
            if let Err(err) = self.drain().await {
                tracing::warn!(error = %err, "reading the live event log failed");
            }
            if last_prune.elapsed() > Duration::from_secs(3600)
                && pruning.as_ref().is_none_or(|task| task.is_finished())
            {
                last_prune = std::time::Instant::now();
                let db = self.db().clone();
                pruning = Some(tokio::spawn(async move {
                    if let Err(err) = prune_before(&db, Utc::now() - RETENTION).await {
                        tracing::warn!(error = %err, "pruning the live event log failed");
                    }
                }));
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
        let oldest: Option<Option<i64>> = live_event::Entity::bound(live_event::Bound::First)
            .into_tuple()
            .one(self.db())
            .await?;
        Ok(oldest.flatten().is_none_or(|oldest| seq + 1 >= oldest))
    }

    /// The last `seq` committed: everything up to it is visible to a read that starts now.
    pub async fn last_committed(&self) -> Result<i64> {
        last_committed(self.db()).await
    }

    /// Broadcasts every entry committed after the head. With nobody subscribed, only the
    /// entries that this process's caches must hear of are read, and the head moves past the
    /// rest unread.
    async fn drain(&self) -> Result<()> {
        let mut from = self.head();
        loop {
            if self.inner.sender.receiver_count() == 0 {
                let (last, notable) = self.read_notable_after(from).await?;
                if last <= from {
                    return Ok(());
                }
                for entry in &notable {
                    self.tell_caches(entry);
                }
                self.inner.head.fetch_max(last, Ordering::AcqRel);
                // A subscriber that joined before the head moved may have started at `from`:
                // it is sent the entries as usual. One that joins later starts at `last`.
                if self.inner.sender.receiver_count() == 0 {
                    self.inner.advanced.send_replace(self.head());
                    return Ok(());
                }
            }
            let entries = self.read_after(from).await?;
            let full = entries.len() as u64 == BATCH;
            let Some(last) = entries.last().and_then(|entry| entry.seq) else {
                return Ok(());
            };
            // A subscriber that joins before these entries are sent reads their jobs itself
            // if they were not read (`fill`).
            let events = if self.inner.sender.receiver_count() > 0 {
                resolve(self.db(), entries).await?
            } else {
                entries
                    .into_iter()
                    .map(|entry| Arc::new(Event { entry, job: None }))
                    .collect()
            };
            for event in events {
                let seq = event.seq();
                self.tell_caches(&event.entry);
                // No receivers is not an error: nobody listens yet.
                let _ = self.inner.sender.send(event);
                self.inner.head.fetch_max(seq, Ordering::AcqRel);
            }
            self.inner.advanced.send_replace(self.head());
            from = last;
            if !full {
                return Ok(());
            }
        }
    }

    /// Tells this process's caches of a revocation or a member change that `entry` records.
    fn tell_caches(&self, entry: &live_event::Model) {
        match entry.kind {
            LiveKind::TokenRevoked => {
                let Some(token_id) = entry
                    .data
                    .as_ref()
                    .and_then(|data| data.get("tokenId"))
                    .and_then(|id| serde_json::from_value::<TokenId>(id.clone()).ok())
                else {
                    return;
                };
                for cache in &self.inner.caches {
                    cache.token_revoked(token_id);
                }
                let _ = self.inner.revoked.send(token_id);
            }
            LiveKind::Members => {
                for cache in &self.inner.caches {
                    cache.members_changed(entry.workspace_id);
                }
            }
            _ => {}
        }
    }

    /// The last `seq` committed, and the entries after `from` up to it that the caches must
    /// hear of.
    async fn read_notable_after(&self, from: i64) -> Result<(i64, Vec<live_event::Model>)> {
        async fn read(
            db: &impl ConnectionTrait,
            from: i64,
        ) -> Result<(i64, Vec<live_event::Model>)> {
            let last = last_committed(db).await?;
            if last <= from {
                return Ok((last, Vec::new()));
            }
            let notable = live_event::Entity::find_after(from)
                .filter(live_event::Column::Id.lte(last))
                .filter(live_event::Column::Kind.is_in([LiveKind::TokenRevoked, LiveKind::Members]))
                .all(db)
                .await?;
            Ok((last, notable))
        }
        // Behind the writer that woke us (SQLite), so that its entries are committed.
        match crate::db::behind_writers(self.db()).await? {
            Some(tx) => {
                let read = read(&tx, from).await?;
                tx.commit().await?;
                Ok(read)
            }
            None => read(self.db(), from).await,
        }
    }

    async fn read_after(&self, head: i64) -> Result<Vec<live_event::Model>> {
        let select = live_event::Entity::find_after(head).limit(BATCH);
        // Behind the writer that woke us (SQLite), so that its entries are committed.
        match crate::db::behind_writers(self.db()).await? {
            Some(tx) => {
                let entries = select.all(&tx).await?;
                tx.commit().await?;
                Ok(entries)
            }
            None => Ok(select.all(self.db()).await?),
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

/// Entries deleted by one statement of a prune.
const PRUNE_BATCH: i64 = 10_000;

/// Deletes the entries written before `cutoff`, oldest first, [`PRUNE_BATCH`] at a time, each
/// batch its own statement. Both reads go by the primary key from the oldest entry: where the
/// kept entries begin (the first one written at `cutoff` or later; every entry before it is
/// older), then each batch by its numbers. Neither reads the kept entries, however many.
pub async fn prune_before(db: &DatabaseConnection, cutoff: DateTime<Utc>) -> Result<()> {
    use sea_orm::QueryOrder as _;
    let first_kept: Option<i64> = live_event::Entity::find()
        .select_only()
        .column(live_event::Column::Id)
        .filter(live_event::Column::CreatedAt.gte(cutoff))
        .order_by_asc(live_event::Column::Id)
        .limit(1)
        .into_tuple()
        .one(db)
        .await?;
    let end = match first_kept {
        Some(id) => id,
        // Every entry is older: all of those there now go.
        None => match last_committed(db).await? {
            0 => return Ok(()),
            last => last + 1,
        },
    };
    loop {
        let oldest: Option<Option<i64>> = live_event::Entity::bound(live_event::Bound::First)
            .into_tuple()
            .one(db)
            .await?;
        let Some(oldest) = oldest.flatten().filter(|oldest| *oldest < end) else {
            return Ok(());
        };
        live_event::Entity::delete_many()
            .filter(live_event::Column::Id.lt(end.min(oldest + PRUNE_BATCH)))
            .exec(db)
            .await?;
    }
}
