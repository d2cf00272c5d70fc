//! The rules of a job's status: every change goes through `transition`, which asks the state
//! machine, decides the refund, and has the store (`crate::store`) write the move only if the
//! job still has the status (and attempt) the caller saw, with its timeline row and live entry,
//! all in the caller's transaction. Two racing finishers therefore cannot both succeed, and a
//! job is refunded at most once.

use entity::ids::JobId;
use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};
use entity::credit_transaction::TransactionKind;
use entity::file::FileRole;
use entity::job::{self, JobStatus};
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};

use super::state::{self, Start};
use crate::credits::ledger;
use crate::error::{Error, Result};
use crate::store::{self, Move};
pub use crate::store::{Change, Completion};

/// Moves `job` (as the caller last saw it) to `to`. CONFLICT if the state machine refuses, or
/// if the job changed meanwhile.
pub async fn transition(
    tx: &crate::db::Transaction,
    job: &job::Model,
    to: JobStatus,
    change: Change,
) -> Result<job::Model> {
    state::transition(job.status, to).map_err(|err| Error::conflict(err.to_string()))?;
    let refund = state::refunds(job.status, to) && job.credit_cost > 0 && !job.refunded;
    let step = Move {
        from: job.status,
        to,
        refund,
        now: Utc::now(),
    };
    if to.is_final() {
        lock_for_workflows(tx, &[job]).await?;
    }
    let Some(updated) = store::update_status(tx, job, step, &change).await? else {
        let now = job::Entity::find_by_id(job.id).one(tx).await?;
        return Err(changed_meanwhile(now.map(|now| now.status)));
    };
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
    if updated.workflow_id.is_some() && to.is_final() {
        crate::workflows::advance::steps_ended(tx, std::slice::from_ref(&updated)).await?;
    }
    Ok(updated)
}

/// Returns a job whose run its worker stopped at shutdown to the queue. A shutdown is not the
/// job's failure, so the job is allowed one more attempt: the stopped one does not use up
/// `max_attempts`, while `attempt`, the token that fences every write of a running job, still
/// only grows. CONFLICT when it is no longer that attempt.
pub async fn hand_back(tx: &crate::db::Transaction, job: &job::Model) -> Result<job::Model> {
    store::add_attempt(tx, job).await?;
    let change = Change {
        message: Some("handed back: the worker shut down; this attempt does not count".to_owned()),
        ..Default::default()
    };
    transition(tx, job, JobStatus::Queued, change).await
}

/// Before jobs that may end a workflow's step are written: locks the jobs, then the workspaces
/// of their workflows, the order in which every writer takes them. Ending a step moves its
/// workflow on under its workspace's lock (`workflows::advance`); the write of the jobs numbers
/// their live entries, under a lock that writers holding a workspace take at their commit.
/// Asking for the workspace only after that numbering would reverse the order, and two such
/// transactions would wait for each other. Jobs of no workflow need none of this.
async fn lock_for_workflows(tx: &crate::db::Transaction, jobs: &[&job::Model]) -> Result<()> {
    let mut workspaces: Vec<_> = jobs
        .iter()
        .filter(|job| job.workflow_id.is_some())
        .map(|job| job.workspace_id)
        .collect();
    if workspaces.is_empty() {
        return Ok(());
    }
    workspaces.sort();
    workspaces.dedup();
    let ids: Vec<JobId> = jobs.iter().map(|job| job.id).collect();
    store::lock_jobs_then_workspaces(tx, &ids, &workspaces).await
}

/// CONFLICT for a job that no longer had the status and attempt its writer saw: it is now
/// `now`, or gone.
fn changed_meanwhile(now: Option<JobStatus>) -> Error {
    Error::conflict(match now {
        Some(status) => format!(
            "the job changed meanwhile: it is now {}",
            state::name(status)
        ),
        None => "the job was deleted meanwhile".to_owned(),
    })
}

/// The status a new job is written with (`state::submitted`), and its `queued_at`: QUEUED at
/// `now` when its inputs are ready, PENDING while it waits for downloads, COMPLETED when it
/// reuses an earlier job's results. A ready or reused job takes the state machine's move from
/// PENDING in its INSERT, rather than by an UPDATE of the row just written; `write_submitted`
/// gives it both events.
pub fn submitted_status(start: Start, now: DateTime<Utc>) -> (JobStatus, Option<DateTime<Utc>>) {
    let status = state::submitted(start);
    (status, (status == JobStatus::Queued).then_some(now))
}

/// Writes new jobs (with `submitted_status`) and records their submission: one timeline row
/// and one CREATED live entry per job, in the status it was submitted into: QUEUED (announced
/// to workers), PENDING while it waits for its URL inputs, or COMPLETED from an earlier job's
/// results, naming that job. On PostgreSQL the jobs and their timeline are one statement.
/// Returns the jobs in the order given.
pub async fn write_submitted(
    tx: &crate::db::Transaction,
    new: Vec<job::ActiveModel>,
) -> Result<Vec<job::Model>> {
    let jobs = store::insert_jobs(tx, new, submission_message).await?;
    if jobs.iter().any(|job| job.status == JobStatus::Queued) {
        store::announce_queued(tx);
    }
    Ok(jobs)
}

/// The message of a new job's timeline row: see `write_submitted`.
fn submission_message(job: &job::Model) -> Option<String> {
    Some(match (job.status, job.reused_from) {
        (JobStatus::Completed, Some(original)) => format!(
            "reused the results of {}",
            crate::ids::encode(original).as_str()
        ),
        _ => "submitted".to_owned(),
    })
}

/// Many jobs to move to COMPLETED, as `transition` would one by one: one UPDATE (per thousand
/// on SQLite) fenced by the status and attempt each runner saw, with their timeline and live
/// entries. The statements are built by `new`, before the transaction that `write` runs them in
/// begins. Only the ids of the moved jobs come back: a completion changes nothing its runner
/// reads (COMPLETED gives no refund).
pub struct Completing<'a> {
    completions: &'a [Completion],
    /// The refusals of the state machine, by position; `None` for the jobs to move.
    refused: Vec<Option<Error>>,
    statements: Vec<sea_orm::Statement>,
}

impl<'a> Completing<'a> {
    pub fn new(db: &impl sea_orm::ConnectionTrait, completions: &'a [Completion]) -> Self {
        let refused: Vec<Option<Error>> = completions
            .iter()
            .map(|c| {
                // COMPLETED never gives the charge back: there is no refund to book here.
                debug_assert!(!state::refunds(c.job.status, JobStatus::Completed));
                state::transition(c.job.status, JobStatus::Completed)
                    .err()
                    .map(|err| Error::conflict(err.to_string()))
            })
            .collect();
        let allowed: Vec<&Completion> = completions
            .iter()
            .zip(&refused)
            .filter(|(_, refused)| refused.is_none())
            .map(|(c, _)| c)
            .collect();
        let statements = store::completing(db, &allowed);
        Completing {
            completions,
            refused,
            statements,
        }
    }

    /// Runs the UPDATEs in `tx`, and writes the rows of each moved job's output files
    /// (`outputs`, by position). Returns each completion's outcome in order: done, or CONFLICT
    /// for a job the state machine refused or that changed meanwhile, which is left untouched.
    /// Workflows whose steps completed move on, in the same transaction.
    pub async fn write(
        self,
        tx: &crate::db::Transaction,
        outputs: &[&[crate::files::NewFile]],
    ) -> Result<Vec<Result<()>>> {
        let allowed = self.refused.iter().filter(|r| r.is_none()).count();
        let group: Vec<&job::Model> = self.completions.iter().map(|c| &c.job).collect();
        lock_for_workflows(tx, &group).await?;
        let mut moved: HashSet<JobId> = store::complete(tx, self.statements, allowed)
            .await?
            .into_iter()
            .collect();
        for (c, files) in self.completions.iter().zip(outputs) {
            if moved.contains(&c.job.id) {
                for file in *files {
                    file.insert(tx, c.job.workspace_id, c.job.id, FileRole::Output)
                        .await?;
                }
            }
        }
        // Steps of workflows move their workflows on, in this transaction.
        let steps: Vec<job::Model> = self
            .completions
            .iter()
            .filter(|c| c.job.workflow_id.is_some() && moved.contains(&c.job.id))
            .map(|c| job::Model {
                status: JobStatus::Completed,
                result: Some(c.result.clone()),
                ..c.job.clone()
            })
            .collect();
        if !steps.is_empty() {
            crate::workflows::advance::steps_ended(tx, &steps).await?;
        }
        let missing: Vec<JobId> = self
            .completions
            .iter()
            .zip(&self.refused)
            .filter(|(c, refused)| refused.is_none() && !moved.contains(&c.job.id))
            .map(|(c, _)| c.job.id)
            .collect();
        let mut now_as: HashMap<JobId, JobStatus> = HashMap::new();
        for chunk in missing.chunks(store::ROWS_PER_INSERT) {
            for job in job::Entity::find()
                .filter(job::Column::Id.is_in(chunk.iter().copied()))
                .all(tx)
                .await?
            {
                now_as.insert(job.id, job.status);
            }
        }
        Ok(self
            .completions
            .iter()
            .zip(self.refused)
            .map(|(c, refused)| match refused {
                Some(err) => Err(err),
                None if moved.remove(&c.job.id) => Ok(()),
                None => Err(changed_meanwhile(now_as.get(&c.job.id).copied())),
            })
            .collect())
    }
}
