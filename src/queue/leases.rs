//! Renewing the leases of a worker's running jobs together: one statement per interval for all
//! of them (`store::renew_all`), instead of one per job. A worker running thousands of jobs
//! would otherwise commit thousands of renewals every interval.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::Duration;

use entity::ids::JobId;
use entity::job;
use sea_orm::DatabaseConnection;
use tokio_util::sync::CancellationToken;

use crate::store;

/// The running attempts whose leases a worker renews.
#[derive(Clone)]
pub struct Leases {
    held: Arc<Held>,
}

/// Each held job's attempt, and the token cancelled when its lease is lost.
type Held = Mutex<HashMap<JobId, (i32, CancellationToken)>>;

impl Leases {
    /// Starts renewing `db`'s leases of `lease` as runs hold them, every third of the lease (at
    /// most every 2 s). It stops once this handle and every `Lease` are dropped.
    pub fn start(db: DatabaseConnection, lease: Duration) -> Self {
        let held = Arc::new(Held::default());
        let every = (lease / 3).min(Duration::from_secs(2));
        tokio::spawn(renew(db, Arc::downgrade(&held), lease, every));
        Leases { held }
    }

    /// Renews the lease of `job`'s attempt until the returned `Lease` is dropped.
    pub fn hold(&self, job: &job::Model) -> Lease {
        let lost = CancellationToken::new();
        self.held
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(job.id, (job.attempt, lost.clone()));
        Lease {
            held: self.held.clone(),
            job: job.id,
            lost,
        }
    }
}

/// A running attempt's lease, renewed while this lives.
pub struct Lease {
    held: Arc<Held>,
    job: JobId,
    lost: CancellationToken,
}

impl Lease {
    /// Resolves when the attempt is no longer this run's: its job cancelled, reclaimed or
    /// finished elsewhere.
    pub async fn lost(&self) {
        self.lost.cancelled().await;
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.held
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&self.job);
    }
}

/// Renews every held lease each `every`, until nothing holds them any more.
async fn renew(db: DatabaseConnection, held: Weak<Held>, lease: Duration, every: Duration) {
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(held) = held.upgrade() else {
            return;
        };
        let attempts: Vec<(JobId, i32)> = held
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .map(|(job, (attempt, _))| (*job, *attempt))
            .collect();
        if attempts.is_empty() {
            continue;
        }
        match store::renew_all(&db, &attempts, lease).await {
            Ok(renewed) => {
                let held = held.lock().unwrap_or_else(PoisonError::into_inner);
                for (job, attempt) in attempts {
                    if renewed.contains(&job) {
                        continue;
                    }
                    // Unless its run ended meanwhile, or the job runs again in a new attempt.
                    if let Some((now_held, lost)) = held.get(&job)
                        && *now_held == attempt
                    {
                        lost.cancel();
                    }
                }
            }
            Err(err) => tracing::warn!(error = %err, "renewing leases failed"),
        }
    }
}
