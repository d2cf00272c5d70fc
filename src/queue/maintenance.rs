//! Queue upkeep that every serving process runs, with or without a worker pool of its own:
//! expired leases reclaimed, due retries queued again, overdue remote runs timed out. With
//! only remote workers (`serve --workers 0`) nothing else would do it.

use std::sync::Arc;
use std::time::Duration;

use sea_orm::DatabaseConnection;
use tokio_util::sync::CancellationToken;

use crate::tools::Catalog;

/// The upkeep of one process.
pub struct Maintenance {
    pub db: DatabaseConnection,
    pub catalog: Arc<Catalog>,
    /// How often it runs.
    pub every: Duration,
    /// Whether a worker pool of this process already reclaims leases and queues retries.
    pub local_pool: bool,
}

impl Maintenance {
    /// Runs until `shutdown` is cancelled.
    pub async fn run(self, shutdown: CancellationToken) {
        let mut tick = tokio::time::interval(self.every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tick.tick() => self.once(chrono::Utc::now()).await,
            }
        }
    }

    /// One round; failures are logged and retried on the next.
    pub async fn once(&self, now: chrono::DateTime<chrono::Utc>) {
        if !self.local_pool {
            leases_and_retries(&self.db, now).await;
        }
        if let Err(err) = super::remote::time_out_overdue(&self.db, &self.catalog, now).await {
            tracing::error!(error = %err, "timing out overdue remote runs failed");
        }
    }
}

/// Reclaims expired leases and queues due retries; failures are logged and retried on the next
/// round. Worker pools run it beside their claims, serving processes without one here.
pub async fn leases_and_retries(db: &DatabaseConnection, now: chrono::DateTime<chrono::Utc>) {
    if let Err(err) = super::reclaim_expired(db, now).await {
        tracing::error!(error = %err, "reclaiming expired leases failed");
    }
    if let Err(err) = super::requeue_due(db, now).await {
        tracing::error!(error = %err, "queueing retries failed");
    }
}
