//! Sharing: who outside a workspace may read one of its jobs or workflows. One rule for both,
//! at four levels; a workflow's sharing also opens its steps' jobs.

use entity::ids::{JobId, WorkflowId};
use entity::job::Visibility;
use entity::{job_share, workflow, workflow_share};
use sea_orm::{
    ColumnTrait, ConnectionTrait, EntityTrait, PaginatorTrait, QueryFilter, QuerySelect,
};

use super::Viewer;
use crate::error::Result;

/// What a sharing is of, each with its own invited e-mails.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shared {
    Job(JobId),
    /// A workflow, and with it its steps' jobs.
    Workflow(WorkflowId),
}

/// Whether sharing at `visibility` lets `viewer`, who is not a member of the workspace, read
/// `what`: PUBLIC anyone, LOGGED_IN any signed-in user, INVITED the users whose e-mail is
/// invited, PRIVATE no one.
pub async fn admits(
    db: &impl ConnectionTrait,
    viewer: &Viewer,
    visibility: Visibility,
    what: Shared,
) -> Result<bool> {
    Ok(match visibility {
        Visibility::Public => true,
        Visibility::LoggedIn => viewer.user().is_some(),
        Visibility::Invited => match viewer.user() {
            Some(user) => {
                let email = user.email.as_str();
                let invitations = match what {
                    Shared::Job(id) => {
                        job_share::Entity::find_of_job(id)
                            .filter(job_share::Column::Email.eq(email))
                            .count(db)
                            .await?
                    }
                    Shared::Workflow(id) => {
                        workflow_share::Entity::find_of_workflow(id)
                            .filter(workflow_share::Column::Email.eq(email))
                            .count(db)
                            .await?
                    }
                };
                invitations > 0
            }
            None => false,
        },
        Visibility::Private => false,
    })
}

/// Whether the sharing of the workflow `id` lets `viewer` read it (false when it is gone),
/// reading only its visibility.
pub async fn workflow_admits(
    db: &impl ConnectionTrait,
    viewer: &Viewer,
    id: WorkflowId,
) -> Result<bool> {
    let visibility: Option<Visibility> = workflow::Entity::find_by_id(id)
        .select_only()
        .column(workflow::Column::Visibility)
        .into_tuple()
        .one(db)
        .await?;
    match visibility {
        Some(visibility) => admits(db, viewer, visibility, Shared::Workflow(id)).await,
        None => Ok(false),
    }
}
