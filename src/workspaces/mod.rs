//! Workspaces: creation, renaming, deletion and the viewer's list.

pub mod members;

use entity::ids::{MembershipId, WorkspaceId};
use std::collections::HashMap;

use chrono::Utc;
use entity::job::{self, JobStatus};
use entity::membership::{self, Role};
use entity::workspace;
use sea_orm::sea_query::LockType;
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, DatabaseConnection, EntityTrait,
    IntoActiveModel, JoinType, Order, PaginatorTrait, QueryFilter, QuerySelect, RelationTrait, Set,
};

use crate::access::{Standing, Viewer, WorkspaceAccess, WorkspaceAction};
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
        id: Set(WorkspaceId::new()),
        name: Set(name),
        credit_balance: Set(0),
        credits_reserved: Set(0),
        created_at: Set(now),
        updated_at: Set(now),
    }
    .insert(&tx)
    .await?;
    membership::ActiveModel {
        id: Set(MembershipId::new()),
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
    db: &DatabaseConnection,
    viewer: &Viewer,
    id: WorkspaceId,
    name: &str,
) -> Result<workspace::Model> {
    let tx = db::begin_write(db).await?;
    let access = hold(&tx, viewer, id, Hold::Change).await?;
    access.check(WorkspaceAction::Rename)?;
    let name = check_name(name)?;
    let mut active = access.workspace.into_active_model();
    active.name = Set(name);
    active.updated_at = Set(Utc::now());
    let workspace = active.update(&tx).await?;
    tx.commit().await?;
    Ok(workspace)
}

/// Deletes a workspace with its members, jobs and files (OWNER only). Refused while any of
/// its jobs is still active: under the workspace's lock, so no job is being added meanwhile.
pub async fn delete(
    db: &DatabaseConnection,
    files: &crate::files::Files,
    viewer: &Viewer,
    id: WorkspaceId,
) -> Result<()> {
    let tx = db::begin_write(db).await?;
    let access = hold(&tx, viewer, id, Hold::Delete).await?;
    access.check(WorkspaceAction::Delete)?;
    let active_jobs = job::Entity::find_in_workspace(id)
        .filter(job::Column::Status.is_in(JobStatus::ACTIVE))
        .count(&tx)
        .await?;
    if active_jobs > 0 {
        return Err(Error::conflict(format!(
            "the workspace has {active_jobs} active job(s): cancel them or let them finish first"
        )));
    }
    crate::store::delete_records(
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
    let roles: HashMap<WorkspaceId, Role> = membership::Entity::find()
        .filter(membership::Column::UserId.eq(user_id))
        .filter(membership::Column::WorkspaceId.is_in(page.items.iter().map(|w| w.id)))
        .all(db)
        .await?
        .into_iter()
        .map(|m| (m.workspace_id, m.role))
        .collect();
    Ok(Page {
        has_next_page: page.has_next_page,
        items: page
            .items
            .into_iter()
            .map(|workspace| WorkspaceAccess {
                standing: Standing::of(viewer, roles.get(&workspace.id).copied()),
                workspace,
            })
            .collect(),
    })
}

/// What a writer is about to do to a workspace, which decides the lock it takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Hold {
    /// Changing what it holds: adding jobs, changing members, renaming it.
    Change,
    /// Deleting it, with everything it holds.
    Delete,
}

/// Takes the workspace's lock for the rest of the write transaction, then reads it and the
/// viewer's standing in it as they are under that lock. NOT_FOUND if it is gone or the viewer
/// may not read it.
///
/// Every writer that adds jobs to a workspace (submissions, batches, retries, duplicates),
/// deletes its jobs, changes its members, or renames or deletes it starts here, so that they
/// happen one after the other and each decides on what the one before it left: a job is never
/// added to a workspace being deleted, nor by someone just removed from it, and a deletion
/// counts every job it would take with it. A job's status changes lock the job, not its
/// workspace: the execution layer locks a job before its workspace's balance, and a user's
/// change of a job must not take the two the other way round.
///
/// On PostgreSQL this is the row's lock, taken before the standing is read (a statement that
/// waited for the lock and then joined the members would see them as they were before the
/// wait): FOR NO KEY UPDATE, the lock a balance move takes too, or FOR UPDATE for a deletion,
/// which also waits for rows being added that refer to the workspace. On SQLite the write
/// transaction already holds the database's one write lock (BEGIN IMMEDIATE).
pub(crate) async fn hold(
    tx: &db::Transaction,
    viewer: &Viewer,
    id: WorkspaceId,
    hold: Hold,
) -> Result<WorkspaceAccess> {
    if matches!(viewer, Viewer::Anonymous) {
        return Err(Error::Unauthenticated);
    }
    let workspace = lock(tx, id, hold).await?;
    WorkspaceAccess::of(tx, viewer, workspace).await
}

/// The lock of [`hold`], for a writer that decides access by other means (a job's deletion,
/// by the job). NOT_FOUND if the workspace is gone.
pub(crate) async fn lock(
    tx: &db::Transaction,
    id: WorkspaceId,
    hold: Hold,
) -> Result<workspace::Model> {
    let lock = match hold {
        Hold::Change => LockType::NoKeyUpdate,
        Hold::Delete => LockType::Update,
    };
    workspace::Entity::find_by_id(id)
        .lock(lock)
        .one(tx)
        .await?
        .ok_or(Error::NotFound("workspace"))
}
