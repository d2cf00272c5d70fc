//! The one writer of a job's status. Every change goes through `transition`: the state machine
//! is asked, the row is updated only if it still has the status (and attempt) the caller saw,
//! the timeline gets its event (and the live log its entry) and a due refund is booked, all in
//! the caller's transaction.
//! Two racing finishers therefore cannot both succeed, and a job is refunded at most once.

use chrono::{DateTime, Utc};
use entity::credit_transaction::TransactionKind;
use entity::job::{self, JobStatus};
use entity::job_event;
use entity::live_event::LiveKind;
use sea_orm::{
    ActiveModelTrait, ActiveValue::NotSet, ColumnTrait, DatabaseTransaction, EntityTrait,
    QueryFilter, Set,
};
use serde_json::Value;
use uuid::Uuid;

use super::state;
use crate::credits::ledger;
use crate::error::{Error, Result};

/// What else changes with a status.
#[derive(Debug, Clone, Default)]
pub struct Change {
    pub stage: Option<String>,
    pub message: Option<String>,
    pub progress: Option<f64>,
    pub result: Option<Value>,
    pub error_message: Option<String>,
    pub error_code: Option<String>,
    pub actor_id: Option<Uuid>,
    /// For RETRY: when the job may be queued again.
    pub run_after: Option<DateTime<Utc>>,
    /// Wall time, CPU and memory the run used.
    pub resources: Option<Value>,
}

/// Records a timeline event.
pub async fn record_event(
    tx: &DatabaseTransaction,
    job: &job::Model,
    message: Option<String>,
) -> Result<()> {
    job_event::ActiveModel {
        id: Set(Uuid::now_v7()),
        job_id: Set(job.id),
        workspace_id: Set(job.workspace_id),
        status: Set(job.status),
        stage: Set(job.stage.clone()),
        message: Set(message),
        progress: Set(job.progress),
        attempt: Set(job.attempt),
        created_at: Set(Utc::now()),
    }
    .insert(tx)
    .await?;
    let kind = if job.status == JobStatus::Pending {
        LiveKind::Created
    } else {
        LiveKind::Updated
    };
    crate::live::job_changed(tx, job, kind).await
}

/// Moves `job` (as the caller last saw it) to `to`. CONFLICT if the state machine refuses, or
/// if the job changed meanwhile.
pub async fn transition(
    tx: &DatabaseTransaction,
    job: &job::Model,
    to: JobStatus,
    change: Change,
) -> Result<job::Model> {
    state::transition(job.status, to).map_err(|err| Error::conflict(err.to_string()))?;
    let now = Utc::now();
    let refund = state::refunds(job.status, to) && job.credit_cost > 0 && !job.refunded;
    let mut update = job::ActiveModel {
        status: Set(to),
        updated_at: Set(now),
        ..Default::default()
    };
    update.stage = match change.stage {
        Some(stage) => Set(Some(stage)),
        None if to.is_final() => Set(None),
        None => NotSet,
    };
    if let Some(progress) = change.progress {
        update.progress = Set(progress.clamp(0.0, 1.0));
    }
    match to {
        JobStatus::Queued => {
            update.queued_at = Set(Some(now));
            update.worker_id = Set(None);
            update.lease_expires_at = Set(None);
        }
        JobStatus::Processing => update.started_at = Set(Some(now)),
        JobStatus::Completed => update.progress = Set(1.0),
        _ => {}
    }
    if to.is_final() {
        update.finished_at = Set(Some(now));
        update.lease_expires_at = Set(None);
    }
    if let Some(result) = change.result {
        update.result = Set(Some(result));
    }
    if change.error_message.is_some() {
        update.error_message = Set(change.error_message);
        update.error_code = Set(change.error_code);
    }
    if refund {
        update.refunded = Set(true);
    }
    if let Some(run_after) = change.run_after {
        update.run_after = Set(Some(run_after));
    }
    if let Some(resources) = change.resources {
        update.resources = Set(Some(resources));
    }
    let updated = job::Entity::update_many()
        .set(update)
        .filter(job::Column::Id.eq(job.id))
        .filter(job::Column::Status.eq(job.status))
        .filter(job::Column::Attempt.eq(job.attempt))
        .exec_with_returning(tx)
        .await?;
    let Some(updated) = updated.into_iter().next() else {
        let now = job::Entity::find_by_id(job.id).one(tx).await?;
        return Err(Error::conflict(match now {
            Some(now) => format!(
                "the job changed meanwhile: it is now {}",
                state::name(now.status)
            ),
            None => "the job was deleted meanwhile".to_owned(),
        }));
    };
    record_event(tx, &updated, change.message).await?;
    if to == JobStatus::Queued {
        crate::queue::announce(tx).await?;
    }
    if refund {
        ledger::append(
            tx,
            ledger::Entry {
                workspace_id: job.workspace_id,
                kind: TransactionKind::Refund,
                amount: job.credit_cost,
                actor_id: change.actor_id,
                job_id: Some(job.id),
                note: Some(format!("refund: job {}", state::name(to))),
            },
        )
        .await?;
    }
    Ok(updated)
}
