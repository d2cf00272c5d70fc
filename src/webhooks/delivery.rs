//! Turning the live event log into deliveries, and sending them.
//!
//! Each endpoint keeps a cursor into the log (`webhooks.live_cursor`): the last `seq` whose
//! entries became its deliveries. A serving process reads the entries of the endpoint's
//! workspace after the cursor, and in one transaction moves the cursor (a compare-and-swap on
//! its old value, so that of two processes only one does it) and inserts the deliveries. This
//! rather than delivery rows written with each change: the writers of jobs and ledger entries,
//! the queue's hottest statements among them, stay as they are and know nothing of webhooks,
//! and the log is already durable and numbered in commit order, so reading "after n" never
//! skips a late commit. Whatever commits while no server runs is read when one starts again.
//! The log is kept 7 days: an endpoint whose servers are all down for longer misses what was
//! pruned.
//!
//! Deliveries are sent at least once: a claim takes due deliveries (FOR UPDATE SKIP LOCKED on
//! PostgreSQL, so processes never take the same one; SQLite has one process) and pushes their
//! due time past the attempt's end, which is the claim's lease. Sending happens outside any
//! transaction, in a task per delivery, at most `--webhook-concurrency` per endpoint in each
//! process and under `--webhook-timeout-seconds`, so a slow endpoint holds up only itself.
//! Each attempt is recorded with what the endpoint answered; a failure is retried after the
//! next wait of `--webhook-retry-schedule`, and when none is left the delivery is FAILED and
//! the endpoint disabled, saying why.

use entity::ids::{TransactionId, WebhookId};
use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Mutex};
use std::time::{Duration, Instant};

use chrono::Utc;
use entity::credit_transaction;
use entity::live_event;
use entity::webhook;
use entity::webhook_attempt;
use entity::webhook_delivery::{self, DeliveryStatus};
use sea_orm::sea_query::{Expr, ExprTrait as _, LockBehavior, LockType, OnConflict};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, DatabaseConnection, EntityTrait, QueryFilter,
    QueryOrder, QuerySelect, QueryTrait, Set,
};
use tokio::sync::Notify;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::events::{self, Event};
use super::signing;
use crate::error::Result;
use crate::files::fetch::{self, Cidr};
use crate::metrics::Metrics;

/// Log entries read at once for one endpoint.
const BATCH: u64 = 500;

/// Deliveries claimed at once by a process.
const CLAIM: u64 = 64;

/// The least time between two reads of the log for new events: a busy queue broadcasts
/// thousands of live entries a second, and each burst of them is read once, not once each.
const FAN_OUT_GAP: Duration = Duration::from_millis(100);

/// How long deliveries that ended are kept in the log of their endpoint.
const RETENTION: chrono::Duration = chrono::Duration::days(30);

/// Woken when this process queues a delivery itself (a test event, a redelivery).
static WAKE: LazyLock<Notify> = LazyLock::new(Notify::new);

/// Wakes this process's sender: a delivery was queued.
pub fn wake() {
    WAKE.notify_one();
}

/// Queues `event` for an endpoint, unless it already has it; returns the delivery if new.
pub async fn insert(
    db: &impl ConnectionTrait,
    webhook_id: WebhookId,
    event: &Event,
) -> Result<Option<webhook_delivery::Model>> {
    let now = Utc::now();
    let row = new_row(webhook_id, event, now);
    let id = row.id.clone().unwrap();
    let inserted = webhook_delivery::Entity::insert(row)
        .on_conflict(
            OnConflict::columns([
                webhook_delivery::Column::WebhookId,
                webhook_delivery::Column::EventId,
            ])
            .do_nothing()
            .to_owned(),
        )
        .exec_without_returning(db)
        .await?;
    if inserted == 0 {
        return Ok(None);
    }
    Ok(webhook_delivery::Entity::find_by_id(id).one(db).await?)
}

fn new_row(
    webhook_id: WebhookId,
    event: &Event,
    now: chrono::DateTime<Utc>,
) -> webhook_delivery::ActiveModel {
    webhook_delivery::ActiveModel {
        id: Set(entity::ids::DeliveryId::new()),
        webhook_id: Set(webhook_id),
        event_id: Set(event.id.clone()),
        event_type: Set(event.kind.to_owned()),
        payload: Set(event.payload.clone()),
        status: Set(DeliveryStatus::Pending),
        attempts: Set(0),
        failures: Set(0),
        next_attempt_at: Set(Some(now)),
        last_status_code: Set(None),
        last_error: Set(None),
        last_duration_ms: Set(None),
        delivered_at: Set(None),
        created_at: Set(now),
        updated_at: Set(now),
    }
}

/// What the sender of a process needs.
#[derive(Clone)]
pub struct Deliverer {
    pub db: DatabaseConnection,
    /// The live bus of this process: its head bounds the log reads, and its moves wake them.
    pub bus: crate::live::Bus,
    /// Internal addresses endpoints may be at (`--fetch-allow`).
    pub allow: Vec<Cidr>,
    pub schedule: Vec<Duration>,
    pub timeout: Duration,
    pub concurrency: usize,
    pub metrics: Arc<Metrics>,
}

/// Deliveries in flight in this process, by endpoint.
type InFlight = Arc<Mutex<HashMap<WebhookId, usize>>>;

impl Deliverer {
    /// Fans the log out and sends due deliveries until `shutdown`. Sends in flight then are
    /// dropped; their claims lapse and they are sent again, by this process or another.
    pub async fn run(self, shutdown: CancellationToken) {
        let mut advanced = self.bus.advanced();
        let in_flight: InFlight = Arc::default();
        let mut sends = JoinSet::new();
        let mut last_prune = Instant::now();
        while !shutdown.is_cancelled() {
            if let Err(err) = self.fan_out().await {
                tracing::warn!(error = %err, "turning live events into webhook deliveries failed");
            }
            if let Err(err) = self.send_due(&mut sends, &in_flight).await {
                tracing::warn!(error = %err, "claiming webhook deliveries failed");
            }
            if last_prune.elapsed() > Duration::from_secs(3600) {
                last_prune = Instant::now();
                if let Err(err) = prune(&self.db).await {
                    tracing::warn!(error = %err, "pruning webhook deliveries failed");
                }
            }
            while sends.try_join_next().is_some() {}
            let woken_at = Instant::now();
            tokio::select! {
                _ = shutdown.cancelled() => break,
                Ok(()) = advanced.changed() => {
                    // New entries: wait out the gap, then read every entry that came meanwhile
                    // at once; the moves of the head since say nothing more.
                    let gap = FAN_OUT_GAP.saturating_sub(woken_at.elapsed());
                    tokio::select! {
                        _ = shutdown.cancelled() => break,
                        _ = tokio::time::sleep(gap) => {}
                    }
                    advanced.borrow_and_update();
                }
                _ = WAKE.notified() => {}
                Some(_) = sends.join_next() => {}
                _ = tokio::time::sleep(self.poll()) => {}
            }
        }
        sends.abort_all();
    }

    /// How often due deliveries are looked for without being woken: often enough for the
    /// shortest wait of the retry schedule.
    fn poll(&self) -> Duration {
        self.schedule
            .iter()
            .min()
            .map_or(Duration::from_secs(1), |wait| *wait / 2)
            .clamp(Duration::from_millis(50), Duration::from_secs(1))
    }

    /// Turns the log's new entries into the deliveries of every enabled endpoint behind it.
    pub async fn fan_out(&self) -> Result<()> {
        let head = self.bus.head();
        let behind = webhook::Entity::find()
            .filter(webhook::Column::Enabled.eq(true))
            .filter(webhook::Column::LiveCursor.lt(head))
            .all(&self.db)
            .await?;
        for endpoint in behind {
            if let Err(err) = self.fan_out_to(&endpoint, head).await {
                tracing::warn!(
                    error = %err,
                    webhook.id = %endpoint.id,
                    "turning live events into deliveries of a webhook failed"
                );
            }
        }
        Ok(())
    }

    /// Moves one endpoint's cursor up to `head`, a batch at a time, queuing its events.
    async fn fan_out_to(&self, endpoint: &webhook::Model, head: i64) -> Result<()> {
        let subscribed = super::events_of(endpoint);
        let filter = super::filter_of(endpoint);
        let mut cursor = endpoint.live_cursor;
        while cursor < head {
            let entries =
                live_event::Entity::find_in_workspace_after(endpoint.workspace_id, cursor)
                    .filter(live_event::Column::Seq.lte(head))
                    .limit(BATCH)
                    .all(&self.db)
                    .await?;
            if entries.is_empty() {
                // Nothing of its workspace: the cursor stays, and no write is made for the
                // entries of other workspaces. The next read starts from it by the index of
                // the log's workspace and `seq`.
                return Ok(());
            }
            let next = match entries.last() {
                Some(last) if entries.len() as u64 == BATCH => last.seq.unwrap_or(head),
                _ => head,
            };
            let events = self.events_of(&entries, &subscribed, &filter).await?;
            let tx = crate::db::begin_write(&self.db).await?;
            let moved = webhook::Entity::update_many()
                .col_expr(webhook::Column::LiveCursor, Expr::value(next))
                .filter(webhook::Column::Id.eq(endpoint.id))
                .filter(webhook::Column::LiveCursor.eq(cursor))
                .filter(webhook::Column::Enabled.eq(true))
                .exec(&tx)
                .await?;
            if moved.rows_affected == 0 {
                // Another process moved it, or the endpoint changed: its turn next time.
                return Ok(());
            }
            let now = Utc::now();
            let rows: Vec<_> = events
                .iter()
                .map(|event| new_row(endpoint.id, event, now))
                .collect();
            for chunk in rows.chunks(500) {
                webhook_delivery::Entity::insert_many(chunk.to_vec())
                    .on_conflict(
                        OnConflict::columns([
                            webhook_delivery::Column::WebhookId,
                            webhook_delivery::Column::EventId,
                        ])
                        .do_nothing()
                        .to_owned(),
                    )
                    .exec_without_returning(&tx)
                    .await?;
            }
            tx.commit().await?;
            cursor = next;
        }
        Ok(())
    }

    /// The events of `entries` an endpoint subscribes to, in log order.
    async fn events_of(
        &self,
        entries: &[live_event::Model],
        subscribed: &[String],
        filter: &events::Filter,
    ) -> Result<Vec<Event>> {
        let wanted = |kind: &str| subscribed.iter().any(|s| s == kind);
        let credit_ids: Vec<TransactionId> =
            entries.iter().flat_map(events::credit_entries).collect();
        let mut credits: HashMap<TransactionId, credit_transaction::Model> = HashMap::new();
        if subscribed.iter().any(|s| s.starts_with("credits.")) {
            for chunk in credit_ids.chunks(500) {
                for record in credit_transaction::Entity::find()
                    .filter(credit_transaction::Column::Id.is_in(chunk.iter().copied()))
                    .all(&self.db)
                    .await?
                {
                    credits.insert(record.id, record);
                }
            }
        }
        let mut found = Vec::new();
        for entry in entries {
            if let Some(event) = events::job_event(entry, filter) {
                if wanted(event.kind) {
                    found.push(event);
                }
                continue;
            }
            for id in events::credit_entries(entry) {
                if let Some(record) = credits.get(&id) {
                    let event = events::credit_event(record);
                    if wanted(event.kind) {
                        found.push(event);
                    }
                }
            }
        }
        Ok(found)
    }

    /// Claims due deliveries of endpoints with room, and sends each in a task of `sends`.
    async fn send_due(&self, sends: &mut JoinSet<()>, in_flight: &InFlight) -> Result<()> {
        let full: Vec<WebhookId> = in_flight
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, count)| **count >= self.concurrency)
            .map(|(id, _)| *id)
            .collect();
        let due = |locked: bool| {
            let mut select = webhook_delivery::Entity::find()
                .find_also_related(webhook::Entity)
                .filter(webhook_delivery::Column::Status.eq(DeliveryStatus::Pending))
                .filter(webhook_delivery::Column::NextAttemptAt.lte(Utc::now()))
                .filter(webhook::Column::Enabled.eq(true))
                .filter(webhook_delivery::Column::WebhookId.is_not_in(full.iter().copied()))
                .order_by_asc(webhook_delivery::Column::NextAttemptAt)
                .limit(CLAIM);
            if locked {
                // Only the deliveries are locked: another process skips them, not their
                // endpoint. SQLite has no row locks; its write transaction holds the database.
                QueryTrait::query(&mut select).lock_with_tables_behavior(
                    LockType::Update,
                    [webhook_delivery::Entity],
                    LockBehavior::SkipLocked,
                );
            }
            select
        };
        // A plain read first: most polls find nothing, and need no write transaction.
        if due(false).one(&self.db).await?.is_none() {
            return Ok(());
        }
        let tx = crate::db::begin_write(&self.db).await?;
        let candidates = due(true).all(&tx).await?;
        let mut room: HashMap<WebhookId, usize> = HashMap::new();
        let mut claimed = Vec::new();
        {
            let in_flight = in_flight.lock().unwrap();
            for (delivery, endpoint) in candidates {
                let Some(endpoint) = endpoint else { continue };
                let left = room.entry(endpoint.id).or_insert_with(|| {
                    self.concurrency
                        .saturating_sub(in_flight.get(&endpoint.id).copied().unwrap_or(0))
                });
                if *left > 0 {
                    *left -= 1;
                    claimed.push((delivery, endpoint));
                }
            }
        }
        if claimed.is_empty() {
            return Ok(());
        }
        let lease = Utc::now()
            + chrono::Duration::from_std(self.timeout * 2 + Duration::from_secs(30))
                .unwrap_or(chrono::Duration::minutes(10));
        webhook_delivery::Entity::update_many()
            .col_expr(webhook_delivery::Column::NextAttemptAt, Expr::value(lease))
            .filter(
                webhook_delivery::Column::Id.is_in(claimed.iter().map(|(delivery, _)| delivery.id)),
            )
            .exec(&tx)
            .await?;
        tx.commit().await?;
        for (delivery, endpoint) in claimed {
            *in_flight.lock().unwrap().entry(endpoint.id).or_default() += 1;
            let this = self.clone();
            let in_flight = in_flight.clone();
            sends.spawn(async move {
                let endpoint_id = endpoint.id;
                this.deliver(delivery, endpoint).await;
                let mut in_flight = in_flight.lock().unwrap();
                if let Some(count) = in_flight.get_mut(&endpoint_id) {
                    *count -= 1;
                    if *count == 0 {
                        in_flight.remove(&endpoint_id);
                    }
                }
            });
        }
        Ok(())
    }

    /// Sends one delivery and records the attempt.
    async fn deliver(&self, delivery: webhook_delivery::Model, endpoint: webhook::Model) {
        let started = Instant::now();
        let outcome = self.send(&delivery, &endpoint).await;
        let elapsed = started.elapsed();
        let ok = matches!(outcome, Ok(status) if (200..300).contains(&status));
        self.metrics
            .webhook_delivery(if ok { "ok" } else { "failed" });
        // A failed record (a lost connection, a deadlock the database broke) would send the
        // delivery again once its claim lapses: try a few times first.
        for tries in 1u64.. {
            match self
                .record(&delivery, &endpoint, outcome.clone(), elapsed)
                .await
            {
                Ok(()) => break,
                Err(err) if tries < 3 => {
                    tracing::debug!(error = %err, "recording a webhook attempt failed; trying again");
                    tokio::time::sleep(Duration::from_millis(100 * tries)).await;
                }
                Err(err) => {
                    tracing::warn!(
                        error = %err,
                        webhook.id = %endpoint.id,
                        delivery.id = %delivery.id,
                        "recording a webhook attempt failed; the delivery will be sent again"
                    );
                    break;
                }
            }
        }
    }

    /// One POST of the delivery, signed now: the status the endpoint answered, or what went
    /// wrong before it answered.
    async fn send(
        &self,
        delivery: &webhook_delivery::Model,
        endpoint: &webhook::Model,
    ) -> Result<u16, String> {
        let url = fetch::check_url(&endpoint.url)?;
        // Resolved and checked at every attempt, and the connection goes to the addresses
        // checked: a name that now points inside is refused.
        let (host, addresses) = tokio::time::timeout(
            self.timeout,
            fetch::resolve_checked(&self.allow, &url, "send webhooks to"),
        )
        .await
        .map_err(|_| "resolving the host timed out".to_owned())??;
        let timestamp = Utc::now().timestamp();
        let signature = signing::signatures(
            endpoint,
            &delivery.event_id,
            timestamp,
            &delivery.payload,
            Utc::now(),
        )
        .map_err(|err| err.to_string())?;
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(self.timeout)
            .resolve_to_addrs(&host, &addresses)
            .user_agent(concat!("jobgraph-webhooks/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|err| format!("the request could not start: {err}"))?;
        let response = client
            .post(url)
            .header("content-type", "application/json")
            .header("webhook-id", &delivery.event_id)
            .header("webhook-timestamp", timestamp.to_string())
            .header("webhook-signature", signature)
            .body(delivery.payload.clone())
            .send()
            .await
            .map_err(|err| {
                if err.is_timeout() {
                    format!("no answer within {} s", self.timeout.as_secs())
                } else if err.is_connect() {
                    "could not connect".to_owned()
                } else {
                    format!("the request failed: {err}")
                }
            })?;
        Ok(response.status().as_u16())
    }

    /// Records an attempt and what follows: delivered, retried later, or failed for good with
    /// the endpoint disabled. Fenced by the attempt count: a delivery recorded meanwhile (its
    /// claim lapsed and another attempt finished first) is left as it is.
    async fn record(
        &self,
        delivery: &webhook_delivery::Model,
        endpoint: &webhook::Model,
        outcome: Result<u16, String>,
        elapsed: Duration,
    ) -> Result<()> {
        let now = Utc::now();
        let attempt = delivery.attempts + 1;
        let duration_ms = elapsed.as_millis().min(i64::MAX as u128) as i64;
        let (status_code, error) = match &outcome {
            Ok(status) if (200..300).contains(status) => (Some(i32::from(*status)), None),
            Ok(status) => (
                Some(i32::from(*status)),
                Some(format!(
                    "the endpoint answered {}",
                    reqwest::StatusCode::from_u16(*status)
                        .map_or_else(|_| status.to_string(), |status| status.to_string())
                )),
            ),
            Err(err) => (None, Some(err.clone())),
        };
        let mut update = webhook_delivery::Entity::update_many()
            .col_expr(webhook_delivery::Column::Attempts, Expr::value(attempt))
            .col_expr(
                webhook_delivery::Column::LastStatusCode,
                Expr::value(status_code),
            )
            .col_expr(
                webhook_delivery::Column::LastError,
                Expr::value(error.clone()),
            )
            .col_expr(
                webhook_delivery::Column::LastDurationMs,
                Expr::value(duration_ms),
            )
            .col_expr(webhook_delivery::Column::UpdatedAt, Expr::value(now))
            .filter(webhook_delivery::Column::Id.eq(delivery.id))
            .filter(webhook_delivery::Column::Attempts.eq(delivery.attempts))
            .filter(webhook_delivery::Column::Status.eq(DeliveryStatus::Pending));
        let mut disable = None;
        if error.is_none() {
            update = update
                .col_expr(
                    webhook_delivery::Column::Status,
                    Expr::value(DeliveryStatus::Delivered),
                )
                .col_expr(webhook_delivery::Column::DeliveredAt, Expr::value(now))
                .col_expr(
                    webhook_delivery::Column::NextAttemptAt,
                    Expr::value(Option::<chrono::DateTime<Utc>>::None),
                );
        } else {
            let failures = delivery.failures + 1;
            update = update.col_expr(webhook_delivery::Column::Failures, Expr::value(failures));
            match self.schedule.get(delivery.failures as usize) {
                Some(wait) => {
                    let next = now + chrono::Duration::from_std(*wait).unwrap_or_default();
                    update =
                        update.col_expr(webhook_delivery::Column::NextAttemptAt, Expr::value(next));
                }
                None => {
                    update = update
                        .col_expr(
                            webhook_delivery::Column::Status,
                            Expr::value(DeliveryStatus::Failed),
                        )
                        .col_expr(
                            webhook_delivery::Column::NextAttemptAt,
                            Expr::value(Option::<chrono::DateTime<Utc>>::None),
                        );
                    disable = Some(format!(
                        "{failures} attempts to deliver event {} ({}) failed, the last: {}",
                        delivery.event_id,
                        delivery.event_type,
                        error.as_deref().unwrap_or_default()
                    ));
                }
            }
        }
        // The endpoint's row first, then the delivery's: the order the fan-out takes them
        // (its cursor, then the deliveries' unique index, which waits for a delivery being
        // recorded), so the two never wait for each other. A success changes the endpoint only
        // when it had failures to forget.
        let mut endpoint_update =
            webhook::Entity::update_many().filter(webhook::Column::Id.eq(endpoint.id));
        endpoint_update = if error.is_none() {
            endpoint_update
                .filter(webhook::Column::FailureCount.ne(0))
                .col_expr(webhook::Column::FailureCount, Expr::value(0))
        } else {
            endpoint_update.col_expr(
                webhook::Column::FailureCount,
                Expr::col(webhook::Column::FailureCount).add(1),
            )
        };
        if let Some(reason) = &disable {
            endpoint_update = endpoint_update
                .col_expr(webhook::Column::Enabled, Expr::value(false))
                .col_expr(webhook::Column::DisabledReason, Expr::value(reason.clone()))
                .col_expr(webhook::Column::DisabledAt, Expr::value(now))
                .col_expr(webhook::Column::UpdatedAt, Expr::value(now));
        }
        let tx = crate::db::begin_write(&self.db).await?;
        endpoint_update.exec(&tx).await?;
        if update.exec(&tx).await?.rows_affected == 0 {
            // Recorded meanwhile: this attempt changes nothing (the transaction rolls back).
            return Ok(());
        }
        webhook_attempt::ActiveModel {
            id: Set(Uuid::now_v7()),
            delivery_id: Set(delivery.id),
            attempt: Set(attempt),
            status_code: Set(status_code),
            duration_ms: Set(duration_ms),
            error: Set(error.clone()),
            created_at: Set(now),
        }
        .insert(&tx)
        .await?;
        tx.commit().await?;
        if let Some(reason) = &disable {
            tracing::warn!(
                webhook.id = %endpoint.id,
                reason = %reason,
                "a webhook endpoint is disabled after its retries failed"
            );
        }
        Ok(())
    }
}

/// Deletes deliveries that ended more than [`RETENTION`] ago.
async fn prune(db: &DatabaseConnection) -> Result<()> {
    webhook_delivery::Entity::delete_many()
        .filter(webhook_delivery::Column::Status.ne(DeliveryStatus::Pending))
        .filter(webhook_delivery::Column::UpdatedAt.lt(Utc::now() - RETENTION))
        .exec(db)
        .await?;
    Ok(())
}
