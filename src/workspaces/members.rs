//! Members of a workspace: adding, changing roles, removing, leaving.
//!
//! Every change runs in a transaction that first holds the workspace (`super::hold`), so that
//! two concurrent changes can never leave a workspace without an owner, and a member removed
//! or demoted submits nothing after it.

use chrono::Utc;
use entity::ids::{MembershipId, UserId, WorkspaceId};
use entity::membership::{self, Role};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, DatabaseConnection, EntityTrait,
    IntoActiveModel, Order, PaginatorTrait, QueryFilter, Set,
};

use super::Hold;
use crate::access::{Viewer, WorkspaceAction, WorkspaceRef, role_name};
use crate::db;
use crate::error::{Error, Result};
use crate::pagination::{self, Page, PageArgs};
use crate::users;

/// The members of a workspace the viewer can read, oldest first.
pub async fn list(
    db: &impl ConnectionTrait,
    workspace: WorkspaceRef,
    page: PageArgs,
) -> Result<Page<membership::Model>> {
    pagination::fetch(
        db,
        membership::Entity::find_in_workspace(workspace.id),
        membership::Column::Id,
        Order::Asc,
        page,
    )
    .await
}

/// Adds someone by e-mail, inviting (creating a pending user for) an unknown address.
pub async fn add(
    db: &DatabaseConnection,
    viewer: &Viewer,
    workspace_id: WorkspaceId,
    email: &str,
    role: Role,
) -> Result<membership::Model> {
    let tx = db::begin_write(db).await?;
    let access = super::hold(&tx, viewer, workspace_id, Hold::Change).await?;
    access.check(WorkspaceAction::ChangeMember {
        current: None,
        new: Some(role),
    })?;
    let user = users::find_or_invite(&tx, email).await?;
    if let Some(existing) = membership::Entity::find_for(workspace_id, user.id)
        .one(&tx)
        .await?
    {
        return Err(Error::conflict(format!(
            "{} is already a member of this workspace, as {}",
            user.email,
            role_name(existing.role)
        )));
    }
    let membership = membership::ActiveModel {
        id: Set(MembershipId::new()),
        workspace_id: Set(workspace_id),
        user_id: Set(user.id),
        role: Set(role),
        created_at: Set(Utc::now()),
    }
    .insert(&tx)
    .await?;
    crate::live::members_changed(&tx, workspace_id).await?;
    tx.commit().await?;
    Ok(membership)
}

/// Changes a member's role. The last owner cannot be demoted.
pub async fn change_role(
    db: &DatabaseConnection,
    viewer: &Viewer,
    workspace_id: WorkspaceId,
    user_id: UserId,
    role: Role,
) -> Result<membership::Model> {
    let tx = db::begin_write(db).await?;
    let access = super::hold(&tx, viewer, workspace_id, Hold::Change).await?;
    let member = find_member(&tx, workspace_id, user_id).await?;
    access.check(WorkspaceAction::ChangeMember {
        current: Some(member.role),
        new: Some(role),
    })?;
    if member.role == role {
        return Ok(member);
    }
    if member.role == Role::Owner {
        ensure_another_owner(&tx, workspace_id, "demoted").await?;
    }
    let mut active = member.into_active_model();
    active.role = Set(role);
    let member = active.update(&tx).await?;
    crate::live::members_changed(&tx, workspace_id).await?;
    tx.commit().await?;
    Ok(member)
}

/// Removes a member. The last owner cannot be removed.
pub async fn remove(
    db: &DatabaseConnection,
    viewer: &Viewer,
    workspace_id: WorkspaceId,
    user_id: UserId,
) -> Result<membership::Model> {
    let tx = db::begin_write(db).await?;
    let access = super::hold(&tx, viewer, workspace_id, Hold::Change).await?;
    let member = find_member(&tx, workspace_id, user_id).await?;
    access.check(WorkspaceAction::ChangeMember {
        current: Some(member.role),
        new: None,
    })?;
    delete_member(&tx, member.clone()).await?;
    crate::live::members_changed(&tx, workspace_id).await?;
    tx.commit().await?;
    Ok(member)
}

/// The viewer leaves a workspace. The last owner cannot leave.
pub async fn leave(
    db: &DatabaseConnection,
    viewer: &Viewer,
    workspace_id: WorkspaceId,
) -> Result<membership::Model> {
    let user = viewer.require_user()?;
    let tx = db::begin_write(db).await?;
    super::hold(&tx, viewer, workspace_id, Hold::Change).await?;
    let member = membership::Entity::find_for(workspace_id, user.id)
        .one(&tx)
        .await?
        .ok_or(Error::NotFound("workspace"))?;
    delete_member(&tx, member.clone()).await?;
    crate::live::members_changed(&tx, workspace_id).await?;
    tx.commit().await?;
    Ok(member)
}

async fn find_member(
    db: &impl ConnectionTrait,
    workspace_id: WorkspaceId,
    user_id: UserId,
) -> Result<membership::Model> {
    membership::Entity::find_for(workspace_id, user_id)
        .one(db)
        .await?
        .ok_or(Error::NotFound("member"))
}

async fn delete_member(db: &impl ConnectionTrait, member: membership::Model) -> Result<()> {
    if member.role == Role::Owner {
        ensure_another_owner(db, member.workspace_id, "removed").await?;
    }
    membership::Entity::delete_by_id(member.id).exec(db).await?;
    Ok(())
}

/// CONFLICT unless the workspace has more than one owner. Callers hold the workspace lock.
async fn ensure_another_owner(
    db: &impl ConnectionTrait,
    workspace_id: WorkspaceId,
    verb: &str,
) -> Result<()> {
    let owners = membership::Entity::find_in_workspace(workspace_id)
        .filter(membership::Column::Role.eq(Role::Owner))
        .count(db)
        .await?;
    if owners <= 1 {
        return Err(Error::conflict(format!(
            "the last owner of a workspace cannot be {verb}: make another member OWNER first"
        )));
    }
    Ok(())
}
