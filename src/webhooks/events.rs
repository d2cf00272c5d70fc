//! The events webhooks send, derived from the live event log: their names, their payloads,
//! their ids, and which of them an endpoint's filter lets through.
//!
//! A job's entry in the log says its status as of a change; an event is a job reaching a
//! status. Several entries can say the same status (progress, renames, sharing), so an event
//! is identified by what it tells, the job, the status and the attempt (`event_id`): the
//! entries that repeat it give the same id, which the endpoint's delivery of it already holds.
//! A balance entry names the ledger entries behind it; each is an event of its own.

use entity::credit_transaction::{self, TransactionKind};
use entity::ids::{JobId, TransactionId, UserId, WorkspaceId};
use entity::job::JobStatus;
use entity::live_event::{self, LiveKind};
use sea_orm::ActiveEnum as _;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};

use crate::ids;
use crate::jobs::state;

/// The event types an endpoint may subscribe to, as they are named in payloads.
pub const TYPES: [&str; 13] = [
    "job.pending",
    "job.queued",
    "job.started",
    "job.retrying",
    "job.completed",
    "job.failed",
    "job.timed_out",
    "job.cancelled",
    "job.deleted",
    "credits.granted",
    "credits.charged",
    "credits.refunded",
    "credits.adjusted",
];

/// The type of the event `sendTestEvent` sends, whatever the endpoint subscribes to.
pub const TEST: &str = "webhook.test";

/// The event type of a job reaching `status`.
pub fn job_type(status: JobStatus) -> &'static str {
    match status {
        JobStatus::Pending => "job.pending",
        JobStatus::Queued => "job.queued",
        JobStatus::Processing => "job.started",
        JobStatus::Retry => "job.retrying",
        JobStatus::Completed => "job.completed",
        JobStatus::Failed => "job.failed",
        JobStatus::Timeout => "job.timed_out",
        JobStatus::Cancelled => "job.cancelled",
    }
}

/// The event type of a ledger entry of `kind`.
pub fn credit_type(kind: TransactionKind) -> &'static str {
    match kind {
        TransactionKind::Grant => "credits.granted",
        TransactionKind::Charge => "credits.charged",
        TransactionKind::Refund => "credits.refunded",
        TransactionKind::Adjustment => "credits.adjusted",
    }
}

/// Which jobs' events an endpoint receives; an empty list lets every value through. Credit
/// events are not about one job's traits and always pass.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Filter {
    /// Tool names.
    pub tools: Vec<String>,
    /// Job statuses, as the API names them (`COMPLETED`).
    pub statuses: Vec<String>,
    /// Only the jobs this user submitted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub submitter_id: Option<UserId>,
}

impl Filter {
    fn lets_job(&self, tool: Option<&str>, status: JobStatus, submitter: Option<UserId>) -> bool {
        (self.tools.is_empty() || tool.is_some_and(|tool| self.tools.iter().any(|t| t == tool)))
            && (self.statuses.is_empty() || self.statuses.iter().any(|s| s == state::name(status)))
            && self.submitter_id.is_none_or(|id| submitter == Some(id))
    }
}

/// An event for one endpoint: its id (the `webhook-id` header), type and signed body.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub id: String,
    pub kind: &'static str,
    pub payload: String,
}

/// `msg_` and 32 hexadecimal digits of the SHA-256 of what the event tells.
fn event_id(fact: &str) -> String {
    let digest = Sha256::digest(fact.as_bytes());
    format!("msg_{}", &hex::encode(digest)[..32])
}

/// A new event id, for events told once (tests).
pub fn fresh_id() -> String {
    format!("msg_{}", uuid::Uuid::now_v7().simple())
}

/// The body of an event: `{type, timestamp, data}`.
pub fn payload(kind: &str, at: chrono::DateTime<chrono::Utc>, data: Value) -> String {
    json!({
        "type": kind,
        "timestamp": at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        "data": data,
    })
    .to_string()
}

/// The test event of a workspace's endpoint.
pub fn test_event(workspace_id: WorkspaceId, webhook: Value) -> Event {
    Event {
        id: fresh_id(),
        kind: TEST,
        payload: payload(
            TEST,
            chrono::Utc::now(),
            json!({ "workspaceId": ids::encode(workspace_id), "webhookId": webhook }),
        ),
    }
}

/// The job event a log entry tells, if it is a job's.
pub fn job_event(entry: &live_event::Model, filter: &Filter) -> Option<Event> {
    let job_id: JobId = entry.job_id?;
    let status = entry.status?;
    let (kind, fact) = match entry.kind {
        LiveKind::Created | LiveKind::Updated => (
            job_type(status),
            format!(
                "job/{}/{}/{}",
                job_id.simple(),
                state::name(status),
                entry.attempt.unwrap_or(0)
            ),
        ),
        LiveKind::Deleted => ("job.deleted", format!("job/{}/DELETED", job_id.simple())),
        _ => return None,
    };
    let facts = entry.data.as_ref().cloned().unwrap_or(Value::Null);
    let tool = facts["tool"].as_str();
    let submitter = facts["submitterId"]
        .as_str()
        .and_then(|id| uuid::Uuid::try_parse(id).ok())
        .map(UserId);
    if !filter.lets_job(tool, status, submitter) {
        return None;
    }
    let batch = facts["batchId"]
        .as_str()
        .and_then(|id| uuid::Uuid::try_parse(id).ok())
        .map(|id| ids::encode(entity::ids::BatchId(id)));
    let data = json!({
        "id": ids::encode(job_id),
        "workspaceId": ids::encode(entry.workspace_id),
        "status": state::name(status),
        "attempt": entry.attempt,
        "stage": entry.stage,
        "progress": entry.progress,
        "name": facts["name"],
        "tool": tool,
        "submitterId": submitter.map(ids::encode),
        "batchId": batch,
        "createdAt": facts["createdAt"],
    });
    Some(Event {
        id: event_id(&fact),
        kind,
        payload: payload(kind, entry.created_at, data),
    })
}

/// The ledger entries a balance entry of the log names.
pub fn credit_entries(entry: &live_event::Model) -> Vec<TransactionId> {
    if entry.kind != LiveKind::Credits {
        return Vec::new();
    }
    entry
        .data
        .as_ref()
        .and_then(|data| data.get("entries"))
        .and_then(|ids| serde_json::from_value(ids.clone()).ok())
        .unwrap_or_default()
}

/// The event of a ledger entry.
pub fn credit_event(record: &credit_transaction::Model) -> Event {
    let kind = credit_type(record.kind);
    let data = json!({
        "id": ids::encode(record.id),
        "workspaceId": ids::encode(record.workspace_id),
        "kind": record.kind.to_value(),
        "amount": record.amount,
        "balanceAfter": record.balance_after,
        "jobId": record.job_id.map(ids::encode),
        "note": record.note,
    });
    Event {
        id: format!("msg_{}", record.id.simple()),
        kind,
        payload: payload(kind, record.created_at, data),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(kind: LiveKind, status: JobStatus, attempt: i32, tool: &str) -> live_event::Model {
        live_event::Model {
            id: 1,
            seq: Some(1),
            workspace_id: WorkspaceId::new(),
            job_id: Some(JobId(uuid::Uuid::nil())),
            kind,
            status: Some(status),
            stage: None,
            progress: Some(0.5),
            attempt: Some(attempt),
            data: Some(json!({ "tool": tool, "name": "a job" })),
            created_at: chrono::Utc::now(),
        }
    }

    #[test]
    fn entries_repeating_a_status_tell_the_same_event() {
        let none = Filter::default();
        let progress = job_event(
            &entry(LiveKind::Updated, JobStatus::Processing, 1, "t"),
            &none,
        );
        let again = job_event(
            &entry(LiveKind::Updated, JobStatus::Processing, 1, "t"),
            &none,
        );
        let retried = job_event(
            &entry(LiveKind::Updated, JobStatus::Processing, 2, "t"),
            &none,
        );
        assert_eq!(progress.as_ref().unwrap().id, again.unwrap().id);
        assert_ne!(progress.as_ref().unwrap().id, retried.unwrap().id);
        assert_eq!(progress.unwrap().kind, "job.started");
    }

    #[test]
    fn filters_let_through_the_tools_statuses_and_submitter_they_name() {
        let filter = Filter {
            tools: vec!["fasta".into()],
            statuses: vec!["COMPLETED".into()],
            submitter_id: None,
        };
        let completed = |tool| entry(LiveKind::Updated, JobStatus::Completed, 1, tool);
        assert!(job_event(&completed("fasta"), &filter).is_some());
        assert!(job_event(&completed("sleep"), &filter).is_none());
        let failed = entry(LiveKind::Updated, JobStatus::Failed, 1, "fasta");
        assert!(job_event(&failed, &filter).is_none());
        let someone = Filter {
            submitter_id: Some(UserId::new()),
            ..Filter::default()
        };
        assert!(job_event(&completed("fasta"), &someone).is_none());
    }

    #[test]
    fn every_job_status_has_a_type_in_the_list() {
        for status in [
            JobStatus::Pending,
            JobStatus::Queued,
            JobStatus::Processing,
            JobStatus::Retry,
            JobStatus::Completed,
            JobStatus::Failed,
            JobStatus::Timeout,
            JobStatus::Cancelled,
        ] {
            assert!(TYPES.contains(&job_type(status)));
        }
    }
}
