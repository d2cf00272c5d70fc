//! Who may see a workflow besides its workspace, by the rules of jobs' sharing: the same four
//! levels (`access::sharing`) and the same invitations (`jobs::actions::invitations`). Whoever
//! may read a workflow through its sharing reads its steps' jobs too.

use chrono::Utc;
use entity::ids::WorkflowId;
use entity::job::Visibility;
use entity::{workflow, workflow_share};
use sea_orm::sea_query::Expr;
use sea_orm::{
    ActiveModelTrait as _, ColumnTrait, DatabaseConnection, EntityTrait, QueryFilter, Set,
};
use uuid::Uuid;

use crate::access::{Viewer, WorkflowAccess, WorkflowAction};
use crate::db;
use crate::error::Result;
use crate::jobs::actions::invitations;
use crate::workspaces::{self, Hold};

/// `setWorkflowSharing`: sets who may see a workflow besides its workspace; INVITED lists the
/// e-mails that may. Its submitter and the workspace's owners and admins.
pub async fn set_sharing(
    db: &DatabaseConnection,
    viewer: &Viewer,
    id: WorkflowId,
    visibility: Visibility,
    invited: Vec<String>,
) -> Result<workflow::Model> {
    let invited = invitations("workflow", visibility, &invited)?;
    let access = WorkflowAccess::load(db, viewer, id).await?;
    let tx = db::begin_write(db).await?;
    // Under the workspace's lock, as every change of a workflow is.
    workspaces::lock(&tx, access.workflow.workspace_id, Hold::Change).await?;
    let access = WorkflowAccess::load(&tx, viewer, id).await?;
    access.check(WorkflowAction::Share)?;
    workflow_share::Entity::delete_many()
        .filter(workflow_share::Column::WorkflowId.eq(id))
        .exec(&tx)
        .await?;
    let now = Utc::now();
    for email in invited {
        workflow_share::ActiveModel {
            id: Set(Uuid::now_v7()),
            workflow_id: Set(id),
            email: Set(email),
            created_at: Set(now),
        }
        .insert(&tx)
        .await?;
    }
    workflow::Entity::update_many()
        .col_expr(workflow::Column::Visibility, Expr::value(visibility))
        .col_expr(workflow::Column::UpdatedAt, Expr::value(now))
        .filter(workflow::Column::Id.eq(id))
        .exec(&tx)
        .await?;
    let mut workflow = access.workflow;
    workflow.visibility = visibility;
    workflow.updated_at = now;
    // Its subscribers read it again, and those who may no longer see it stop.
    crate::live::workflow_changed(&tx, workflow.workspace_id, workflow.id);
    tx.commit().await?;
    Ok(workflow)
}
