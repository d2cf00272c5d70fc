//! Workflows: what a caller may do to a workflow, by the rules of jobs.

use entity::ids::WorkflowId;
use entity::workflow::{self, WorkflowStatus};
use sea_orm::{ConnectionTrait, EntityTrait};

use super::sharing::{self, Shared};
use super::{JobStanding, Standing, Viewer, standing};
use crate::error::{Error, Result};

/// What a user may do to a workflow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WorkflowAction {
    Cancel,
    Rename,
    /// Deleting it, ended, with its steps' jobs.
    Delete,
    /// Running it again as a new workflow: whoever may submit jobs in its workspace.
    Retry,
    /// Changing who may see it besides its workspace.
    Share,
    /// Copying it into a workspace where the viewer has standing `into` (its own by default):
    /// whoever may read a workflow, as a member or through its sharing, may copy it where they
    /// may submit jobs.
    Duplicate {
        into: Standing,
    },
}

impl JobStanding {
    /// Decides one action on one workflow the viewer may read, as for its jobs: its submitter
    /// and the workspace's owners and admins manage it. FORBIDDEN for the role, CONFLICT for
    /// the workflow's status.
    pub fn check_workflow(self, workflow: &workflow::Model, action: WorkflowAction) -> Result<()> {
        let allowed = match action {
            WorkflowAction::Retry => self.workspace.can_submit(),
            WorkflowAction::Duplicate { into } => into.can_submit(),
            WorkflowAction::Cancel
            | WorkflowAction::Rename
            | WorkflowAction::Delete
            | WorkflowAction::Share => self.manages_submitted_by(workflow.submitter_id),
        };
        if !allowed {
            let why = "only its submitter and the workspace's owners and admins may";
            return Err(Error::forbidden(match action {
                WorkflowAction::Cancel => format!("you cannot cancel this workflow: {why}"),
                WorkflowAction::Rename => format!("you cannot rename this workflow: {why}"),
                WorkflowAction::Delete => format!("you cannot delete this workflow: {why}"),
                WorkflowAction::Share => {
                    format!("you cannot change the sharing of this workflow: {why}")
                }
                WorkflowAction::Duplicate { .. } => "you cannot duplicate this workflow into \
                     that workspace: you may not submit jobs there"
                    .to_owned(),
                WorkflowAction::Retry => {
                    "you cannot retry this workflow: you may not submit jobs in its workspace"
                        .to_owned()
                }
            }));
        }
        match action {
            WorkflowAction::Delete if workflow.status == WorkflowStatus::Running => Err(
                Error::conflict("the workflow is RUNNING: cancel it before deleting it"),
            ),
            WorkflowAction::Retry
                if !matches!(
                    workflow.status,
                    WorkflowStatus::Failed | WorkflowStatus::Cancelled
                ) =>
            {
                Err(Error::conflict(format!(
                    "the workflow is {}: only FAILED or CANCELLED workflows can be retried",
                    status_name(workflow.status)
                )))
            }
            WorkflowAction::Cancel if workflow.status != WorkflowStatus::Running => {
                Err(Error::conflict(format!(
                    "the workflow is {} and can no longer be cancelled",
                    status_name(workflow.status)
                )))
            }
            _ => Ok(()),
        }
    }
}

/// The status as clients spell it.
pub fn status_name(status: WorkflowStatus) -> &'static str {
    match status {
        WorkflowStatus::Running => "RUNNING",
        WorkflowStatus::Completed => "COMPLETED",
        WorkflowStatus::Failed => "FAILED",
        WorkflowStatus::Cancelled => "CANCELLED",
    }
}

/// A workflow as one viewer sees it.
#[derive(Debug, Clone)]
pub struct WorkflowAccess {
    pub workflow: workflow::Model,
    pub standing: JobStanding,
}

impl WorkflowAccess {
    /// Loads a workflow the viewer may read: as a reader of its workspace, or through its
    /// sharing (`sharing::admits`), which shows nothing of the workspace
    /// (`JobStanding::sees_workspace`). NOT_FOUND otherwise, as for a missing one.
    pub async fn load(db: &impl ConnectionTrait, viewer: &Viewer, id: WorkflowId) -> Result<Self> {
        let not_found = || Error::NotFound("workflow");
        let workflow = workflow::Entity::find_by_id(id)
            .one(db)
            .await?
            .ok_or_else(not_found)?;
        let workspace = standing(db, viewer, workflow.workspace_id).await?;
        if !workspace.can_read()
            && !sharing::admits(db, viewer, workflow.visibility, Shared::Workflow(id)).await?
        {
            return Err(not_found());
        }
        Ok(WorkflowAccess {
            workflow,
            standing: JobStanding {
                workspace,
                viewer_id: viewer.user_id(),
            },
        })
    }

    pub fn check(&self, action: WorkflowAction) -> Result<()> {
        self.standing.check_workflow(&self.workflow, action)
    }
}
