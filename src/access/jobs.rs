//! Jobs: what a caller may do to a job, what they see of it, and the files they may read.

use entity::ids::{FileId, JobId, UserId};
use entity::job;
use entity::membership::Role;
use sea_orm::sea_query::LockType;
use sea_orm::{ConnectionTrait, EntityTrait, QuerySelect};

use super::sharing::{self, Shared};
use super::{Standing, Viewer, standing};
use crate::error::{Error, Result};

/// What a user may do to a job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobAction {
    Rename,
    Delete,
    Cancel,
    Retry,
    /// Copying it into a workspace where the viewer has standing `into` (the job's own by
    /// default): whoever may read a job may copy it where they may submit jobs.
    Duplicate {
        into: Standing,
    },
    Share,
}

/// A viewer's standing towards the jobs of one workspace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JobStanding {
    pub workspace: Standing,
    pub viewer_id: Option<UserId>,
}

impl JobStanding {
    /// Whether the viewer manages this job: owners and admins manage every job of their
    /// workspace, members the jobs they submitted.
    pub fn manages(self, job: &job::Model) -> bool {
        self.manages_submitted_by(job.submitter_id)
    }

    /// Whether the viewer manages what `submitter` submitted (a job, a workflow).
    pub fn manages_submitted_by(self, submitter: UserId) -> bool {
        let w = self.workspace;
        w.platform_admin
            || matches!(w.role, Some(Role::Owner | Role::Admin))
            || (w.role == Some(Role::Member) && self.viewer_id == Some(submitter))
    }

    /// Decides one action on one job the viewer may read: FORBIDDEN for the role, CONFLICT
    /// for the job's status. The mutations enforce this and `Job.viewerCan*` report it.
    pub fn check(self, job: &job::Model, action: JobAction) -> Result<()> {
        let allowed = match action {
            JobAction::Retry => self.workspace.can_submit(),
            JobAction::Duplicate { into } => into.can_submit(),
            _ => self.manages(job),
        };
        if !allowed {
            let why = "only its submitter and the workspace's owners and admins may";
            return Err(Error::forbidden(match action {
                JobAction::Rename => format!("you cannot rename this job: {why}"),
                JobAction::Delete => format!("you cannot delete this job: {why}"),
                JobAction::Cancel => format!("you cannot cancel this job: {why}"),
                JobAction::Share => format!("you cannot change the sharing of this job: {why}"),
                JobAction::Retry => {
                    "you cannot retry this job: you may not submit jobs in its workspace".to_owned()
                }
                JobAction::Duplicate { .. } => "you cannot duplicate this job into that \
                     workspace: you may not submit jobs there"
                    .to_owned(),
            }));
        }
        let status = crate::jobs::state::name(job.status);
        match action {
            JobAction::Delete if !job.status.is_final() => Err(Error::conflict(format!(
                "the job is {status}: cancel it before deleting it"
            ))),
            JobAction::Delete if job.workflow_id.is_some() => Err(Error::conflict(
                "the job is a step of a workflow: it is deleted with its workflow",
            )),
            JobAction::Cancel if !crate::jobs::state::cancellable(job.status) => {
                Err(Error::conflict(format!(
                    "the job is {status} and can no longer be cancelled"
                )))
            }
            JobAction::Retry if !crate::jobs::state::retryable(job.status) => {
                Err(Error::conflict(format!(
                    "the job is {status}: only FAILED, TIMEOUT or CANCELLED jobs can be retried"
                )))
            }
            _ => Ok(()),
        }
    }
}

impl JobStanding {
    /// Whether the viewer sees what a job tells of its workspace: the workspace itself, who
    /// submitted it, its batch, its idempotency key and who acted on it. Members do; viewers
    /// who read the job only through its sharing see the work (tool, inputs, settings, result,
    /// files, timeline) and nothing of the workspace behind it. Every representation of a job
    /// (GraphQL, exports, live updates) asks this.
    pub fn sees_workspace(self) -> bool {
        self.workspace.can_read()
    }

    /// Whether the viewer may read `job`, one of this workspace's: every job as a member, others
    /// through their sharing (`shared_with`).
    pub async fn reads(
        self,
        db: &impl ConnectionTrait,
        viewer: &Viewer,
        job: &job::Model,
    ) -> Result<bool> {
        Ok(self.workspace.can_read() || shared_with(db, viewer, job).await?)
    }

    /// A timeline entry's message as the viewer may read it: outsiders do not learn who
    /// cancelled a job, nor which worker ran it, which those entries' messages name.
    pub fn event_message(self, event: &entity::job_event::Model) -> Option<&str> {
        if !self.sees_workspace() {
            match event.status {
                job::JobStatus::Cancelled => return Some("cancelled"),
                job::JobStatus::Processing => return Some("started"),
                _ => {}
            }
        }
        event.message.as_deref()
    }
}

/// A job as one viewer sees it.
#[derive(Debug, Clone)]
pub struct JobAccess {
    pub job: job::Model,
    pub standing: JobStanding,
}

impl JobAccess {
    /// Loads a job the viewer may read: as a member of its workspace, or through its sharing.
    /// NOT_FOUND otherwise.
    pub async fn load(db: &impl ConnectionTrait, viewer: &Viewer, id: JobId) -> Result<Self> {
        Self::load_locked(db, viewer, id, None).await
    }

    /// [`JobAccess::load`] for a user's change of the job: its row stays locked for the rest of
    /// the write transaction (on PostgreSQL; SQLite's write transaction holds the database),
    /// so that the job is not deleted, with its workspace or alone, before the change is
    /// written.
    pub async fn load_to_change(
        tx: &crate::db::Transaction,
        viewer: &Viewer,
        id: JobId,
    ) -> Result<Self> {
        Self::load_locked(tx, viewer, id, Some(LockType::NoKeyUpdate)).await
    }

    async fn load_locked(
        db: &impl ConnectionTrait,
        viewer: &Viewer,
        id: JobId,
        lock: Option<LockType>,
    ) -> Result<Self> {
        let not_found = || Error::NotFound("job");
        let mut select = job::Entity::find_by_id(id);
        if let Some(lock) = lock {
            select = select.lock(lock);
        }
        let job = select.one(db).await?.ok_or_else(not_found)?;
        let workspace = standing(db, viewer, job.workspace_id).await?;
        let access = JobAccess {
            standing: JobStanding {
                workspace,
                viewer_id: viewer.user_id(),
            },
            job,
        };
        if access.standing.reads(db, viewer, &access.job).await? {
            Ok(access)
        } else {
            Err(not_found())
        }
    }

    pub fn check(&self, action: JobAction) -> Result<()> {
        self.standing.check(&self.job, action)
    }
}

/// A stored file the viewer may read: one of a job the viewer may read. NOT_FOUND otherwise,
/// exactly like a missing file.
pub async fn readable_file(
    db: &impl ConnectionTrait,
    viewer: &Viewer,
    id: FileId,
) -> Result<entity::file::Model> {
    let not_found = || Error::NotFound("file");
    let file = entity::file::Entity::find_by_id(id)
        .one(db)
        .await?
        .ok_or_else(not_found)?;
    let job_id = file.job_id.ok_or_else(not_found)?;
    JobAccess::load(db, viewer, job_id)
        .await
        .map_err(|err| match err {
            Error::NotFound(_) => not_found(),
            other => other,
        })?;
    Ok(file)
}

/// An input file that a remote worker may read: one of the job it runs, `running` being the job
/// whose running attempt its attempt token names (`queue::remote::running_for_download`), none
/// when that attempt is not running. NOT_FOUND otherwise, exactly like a missing file.
pub async fn worker_readable_file(
    db: &impl ConnectionTrait,
    running: Option<&job::Model>,
    id: FileId,
) -> Result<entity::file::Model> {
    let not_found = || Error::NotFound("file");
    let job = running.ok_or_else(not_found)?;
    entity::file::Entity::find_by_id(id)
        .one(db)
        .await?
        .filter(|file| file.job_id == Some(job.id) && file.role == entity::file::FileRole::Input)
        .ok_or_else(not_found)
}

/// Whether a job's sharing lets a viewer who is not a member read it: its own, or for a step
/// of a workflow, the workflow's (whoever may read a workflow reads its steps' jobs).
pub async fn shared_with(
    db: &impl ConnectionTrait,
    viewer: &Viewer,
    job: &job::Model,
) -> Result<bool> {
    if sharing::admits(db, viewer, job.visibility, Shared::Job(job.id)).await? {
        return Ok(true);
    }
    match job.workflow_id {
        Some(workflow_id) => sharing::workflow_admits(db, viewer, workflow_id).await,
        None => Ok(false),
    }
}
