//! Workspaces: creation, renaming, deletion and the viewer's list.

pub mod members;

use std::collections::HashMap;

use chrono::Utc;
use entity::job::{self, JobStatus};
use entity::membership::{self, Role};
use entity::workspace;
use sea_orm::sea_query::Expr;
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, DatabaseConnection, EntityTrait,
    IntoActiveModel, JoinType, Order, PaginatorTrait, QueryFilter, QuerySelect, RelationTrait, Set,
};
use uuid::Uuid;

use crate::access::{Standing, Viewer, WorkspaceAccess};
use crate::db;
use crate::error::{Error, Result};
use crate::pagination::{self, Page, PageArgs};

/// A workspace name: trimmed, 1 to 100 characters.
fn check_name(name: &str) -> Result<String> {
    let name = name.trim();
    if name.is_empty() || name.chars().count() > 100 {
        return Err(Error::bad_input("name", "must be 1 to 100 characters"));
    }
    Ok(name.to_owned())
}

/// Creates a workspace with the viewer as its OWNER.
pub async fn create(
    db: &DatabaseConnection,
    viewer: &Viewer,
    name: &str,
) -> Result<workspace::Model> {
    let user = viewer.require_user()?;
    let name = check_name(name)?;
    let now = Utc::now();
    let tx = db::begin_write(db).await?;
    let workspace = workspace::ActiveModel {
        id: Set(Uuid::now_v7()),
        name: Set(name),
        credit_balance: Set(0),
        created_at: Set(now),
        updated_at: Set(now),
    }
    .insert(&tx)
    .await?;
    membership::ActiveModel {
        id: Set(Uuid::now_v7()),
        workspace_id: Set(workspace.id),
        user_id: Set(user.id),
        role: Set(Role::Owner),
        created_at: Set(now),
    }
    .insert(&tx)
    .await?;
    tx.commit().await?;
    Ok(workspace)
}

/// Renames a workspace (OWNER or ADMIN).
pub async fn rename(
    db: &impl ConnectionTrait,
    viewer: &Viewer,
    id: Uuid,
    name: &str,
) -> Result<workspace::Model> {
    let access = WorkspaceAccess::load(db, viewer, id).await?;
    access.require(access.standing.can_rename(), "rename the workspace")?;
    let name = check_name(name)?;
    let mut active = access.workspace.into_active_model();
    active.name = Set(name);
    active.updated_at = Set(Utc::now());
    Ok(active.update(db).await?)
}

/// Deletes a workspace with its members, jobs and files (OWNER only). Refused while any of
/// its jobs is still active.
pub async fn delete(
    db: &DatabaseConnection,
    files: &crate::files::Files,
    viewer: &Viewer,
    id: Uuid,
) -> Result<()> {
    let tx = db::begin_write(db).await?;
    let access = WorkspaceAccess::load(&tx, viewer, id).await?;
    access.require(access.standing.can_delete(), "delete the workspace")?;
    let active_jobs = job::Entity::find_in_workspace(id)
        .filter(job::Column::Status.is_in(JobStatus::ACTIVE))
        .count(&tx)
        .await?;
    if active_jobs > 0 {
        return Err(Error::conflict(format!(
            "the workspace has {active_jobs} active job(s): cancel them or let them finish first"
        )));
    }
    crate::jobs::lifecycle::delete_records(
        &tx,
        sea_orm::Condition::all().add(job::Column::WorkspaceId.eq(id)),
    )
    .await?;
    workspace::Entity::delete_by_id(id).exec(&tx).await?;
    tx.commit().await?;
    files
        .delete_prefix(&crate::files::workspace_prefix(id))
        .await;
    Ok(())
}

/// The workspaces the viewer is a member of, newest first, each with the viewer's standing.
pub async fn list_for_viewer(
    db: &impl ConnectionTrait,
    viewer: &Viewer,
    page: PageArgs,
) -> Result<Page<WorkspaceAccess>> {
    let Some(user_id) = viewer.user_id() else {
        return Ok(Page {
            items: Vec::new(),
            has_next_page: false,
        });
    };
    let select = workspace::Entity::find()
        .join(JoinType::InnerJoin, workspace::Relation::Membership.def())
        .filter(membership::Column::UserId.eq(user_id));
    let page = pagination::fetch(db, select, workspace::Column::Id, Order::Desc, page).await?;
    let roles: HashMap<Uuid, Role> = membership::Entity::find()
        .filter(membership::Column::UserId.eq(user_id))
        .filter(membership::Column::WorkspaceId.is_in(page.items.iter().map(|w| w.id)))
        .all(db)
        .await?
        .into_iter()
        .map(|m| (m.workspace_id, m.role))
        .collect();
    let platform_admin = viewer.is_platform_admin();
    Ok(Page {
        has_next_page: page.has_next_page,
        items: page
            .items
            .into_iter()
            .map(|workspace| WorkspaceAccess {
                standing: Standing {
                    role: roles.get(&workspace.id).copied(),
                    platform_admin,
                },
                workspace,
            })
            .collect(),
    })
}

/// Takes the workspace row's write lock for the rest of the transaction, so that concurrent
/// changes to its members or balance happen one after the other. NOT_FOUND if it is gone.
pub(crate) async fn lock(db: &impl ConnectionTrait, id: Uuid) -> Result<()> {
    let updated = workspace::Entity::update_many()
        .col_expr(workspace::Column::UpdatedAt, Expr::value(Utc::now()))
        .filter(workspace::Column::Id.eq(id))
        .exec(db)
        .await?;
    if updated.rows_affected == 0 {
        return Err(Error::NotFound("workspace"));
    }
    Ok(())
}
