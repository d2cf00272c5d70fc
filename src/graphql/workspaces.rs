//! GraphQL for workspaces and their members.

use async_graphql::connection::Connection;
use entity::ids::{UserId, WorkspaceId};
use std::sync::Arc;

use async_graphql::{Context, Enum, ID, InputObject, Lookahead, Object, SimpleObject};
use chrono::{DateTime, Utc};
use entity::membership::{self, Role};
use entity::workspace;

use super::credits::CreditTransactionView;
use super::jobs::{JobCounts, JobFilterInput, job_connection};
use super::users::{UserView, load_user};
use super::{db, page_complexity, viewer};
use crate::access::{Standing, StandingCache, WorkspaceAccess, WorkspaceRef};
use crate::credits::ledger;
use crate::error::{ApiResult, Error};
use crate::ids::{self};
use crate::pagination::PageArgs;
use crate::workspaces::{self as service, members};

/// A member's role in a workspace.
#[derive(Enum, Clone, Copy, PartialEq, Eq)]
#[graphql(name = "Role")]
pub enum RoleView {
    /// Everything, including deleting the workspace and managing owners.
    Owner,
    /// Manages members (but not owners) and submits jobs.
    Admin,
    /// Submits jobs.
    Member,
    /// Reads only.
    Viewer,
}

impl From<Role> for RoleView {
    fn from(role: Role) -> Self {
        match role {
            Role::Owner => RoleView::Owner,
            Role::Admin => RoleView::Admin,
            Role::Member => RoleView::Member,
            Role::Viewer => RoleView::Viewer,
        }
    }
}

impl From<RoleView> for Role {
    fn from(role: RoleView) -> Self {
        match role {
            RoleView::Owner => Role::Owner,
            RoleView::Admin => Role::Admin,
            RoleView::Member => Role::Member,
            RoleView::Viewer => Role::Viewer,
        }
    }
}

/// A workspace: its members, credits and jobs. Read with its row, or known by its id and the
/// viewer's standing only, when the selection needs nothing else ([`needs_row`]).
pub enum WorkspaceView {
    Loaded(WorkspaceAccess),
    Known(WorkspaceRef),
}

impl From<WorkspaceAccess> for WorkspaceView {
    fn from(access: WorkspaceAccess) -> Self {
        WorkspaceView::Loaded(access)
    }
}

impl WorkspaceView {
    fn known(&self) -> WorkspaceRef {
        match self {
            WorkspaceView::Loaded(access) => access.known(),
            WorkspaceView::Known(known) => *known,
        }
    }

    fn loaded(&self) -> Option<&WorkspaceAccess> {
        match self {
            WorkspaceView::Loaded(access) => Some(access),
            WorkspaceView::Known(_) => None,
        }
    }

    /// What `read` takes from the workspace's row: the one read, or, for a workspace known by
    /// its id only, read now through the request's loader.
    async fn read_row<T>(
        &self,
        ctx: &Context<'_>,
        read: impl FnOnce(&workspace::Model) -> T,
    ) -> ApiResult<T> {
        match self {
            WorkspaceView::Loaded(access) => Ok(read(&access.workspace)),
            WorkspaceView::Known(known) => {
                let access = ctx
                    .data_unchecked::<super::Workspaces>()
                    .load_one(known.id)
                    .await
                    .map_err(|err| Error::Internal(anyhow::anyhow!("loading a workspace: {err}")))?
                    .ok_or(Error::NotFound("workspace"))?;
                Ok(read(&access.workspace))
            }
        }
    }
}

/// Whether a selection of `Workspace` reads the workspace's row, rather than only its id and
/// the viewer's standing: without, a known standing answers it with no lookup
/// ([`StandingCache::known`]).
fn needs_row(workspace: &Lookahead<'_>) -> bool {
    workspace.selection_fields().iter().any(|selection| {
        selection.selection_set().any(|field| match field.name() {
            "__typename"
            | "id"
            | "viewerRole"
            | "viewerCanManageMembers"
            | "viewerCanSubmit"
            | "viewerCanRename"
            | "viewerCanDelete"
            | "viewerCanManageWebhooks"
            | "webhooks"
            | "jobCounts" => false,
            // A page of jobs hands the workspace to the jobs' own `workspace` field.
            "jobs" => {
                let jobs = Lookahead::from(field);
                jobs.field("edges")
                    .field("node")
                    .field("workspace")
                    .exists()
                    || jobs.field("nodes").field("workspace").exists()
            }
            _ => true,
        })
    })
}

#[Object(name = "Workspace")]
impl WorkspaceView {
    pub async fn id(&self) -> ID {
        ids::encode(self.known().id)
    }

    async fn name(&self, ctx: &Context<'_>) -> ApiResult<String> {
        self.read_row(ctx, |workspace| workspace.name.clone()).await
    }

    async fn created_at(&self, ctx: &Context<'_>) -> ApiResult<DateTime<Utc>> {
        self.read_row(ctx, |workspace| workspace.created_at).await
    }

    async fn updated_at(&self, ctx: &Context<'_>) -> ApiResult<DateTime<Utc>> {
        self.read_row(ctx, |workspace| workspace.updated_at).await
    }

    /// Where the workspace's live events stand now. `workspaceJobEvents(after: eventCursor)`
    /// delivers every event from this moment on, none missed: read it with the jobs it goes
    /// with, then subscribe, and nothing changed between the two is lost.
    async fn event_cursor(&self, ctx: &Context<'_>) -> ApiResult<String> {
        self.read_row(ctx, |_| ()).await?;
        let seq = super::live::bus(ctx).last_committed().await?;
        Ok(super::live::cursor(seq))
    }

    /// The balance; always the sum of `creditTransactions`. 0 to 2,000,000,000. Part of it
    /// may be reserved by running workflows (`creditsReserved`).
    async fn credit_balance(&self, ctx: &Context<'_>) -> ApiResult<i64> {
        self.read_row(ctx, |workspace| workspace.credit_balance)
            .await
    }

    /// What running workflows hold of the balance for their steps: jobs and other workflows
    /// can use only the rest.
    async fn credits_reserved(&self, ctx: &Context<'_>) -> ApiResult<i64> {
        self.read_row(ctx, |workspace| workspace.credits_reserved)
            .await
    }

    /// The viewer's role; null when the viewer is a platform administrator but no member.
    async fn viewer_role(&self) -> Option<RoleView> {
        self.known().standing.role.map(Into::into)
    }

    async fn viewer_can_manage_members(&self) -> bool {
        self.known().standing.can_manage_members()
    }

    async fn viewer_can_submit(&self) -> bool {
        self.known().standing.can_submit()
    }

    async fn viewer_can_rename(&self) -> bool {
        self.known().standing.can_rename()
    }

    async fn viewer_can_delete(&self) -> bool {
        self.known().standing.can_delete()
    }

    async fn viewer_can_manage_webhooks(&self) -> bool {
        self.known().standing.can_manage_webhooks()
    }

    /// The webhook endpoints, oldest first (OWNER or ADMIN; FORBIDDEN otherwise).
    #[graphql(complexity = "page_complexity(first, child_complexity)")]
    async fn webhooks(
        &self,
        ctx: &Context<'_>,
        first: Option<i32>,
        after: Option<String>,
    ) -> ApiResult<Connection<String, super::webhooks::WebhookView>> {
        let page = PageArgs::new(first, after)?;
        let page = crate::webhooks::list(db(ctx), self.known(), page).await?;
        Ok(page.into_connection(|w| w.id, super::webhooks::WebhookView))
    }

    /// Members, oldest first.
    #[graphql(complexity = "page_complexity(first, child_complexity)")]
    async fn members(
        &self,
        ctx: &Context<'_>,
        first: Option<i32>,
        after: Option<String>,
    ) -> ApiResult<Connection<String, MembershipView>> {
        let page = PageArgs::new(first, after)?;
        let known = self.known();
        let page = members::list(db(ctx), known, page).await?;
        let standing = known.standing;
        Ok(page.into_connection(|m| m.id, |m| MembershipView(m, standing)))
    }

    /// The workspace's job history, newest first, filtered.
    #[graphql(complexity = "page_complexity(first, child_complexity)")]
    async fn jobs(
        &self,
        ctx: &Context<'_>,
        filter: Option<JobFilterInput>,
        first: Option<i32>,
        after: Option<String>,
    ) -> ApiResult<super::jobs::JobConnection> {
        let filter = filter
            .unwrap_or_default()
            .into_filter(viewer(ctx).user_id())?;
        job_connection(ctx, self.known(), self.loaded(), &filter, first, after).await
    }

    /// The workspace's workflows, newest first, filtered by status and submitter.
    #[graphql(complexity = "page_complexity(first, child_complexity)")]
    async fn workflows(
        &self,
        ctx: &Context<'_>,
        filter: Option<super::workflows::WorkflowFilterInput>,
        first: Option<i32>,
        after: Option<String>,
    ) -> ApiResult<Connection<String, super::workflows::WorkflowView>> {
        let filter = filter
            .unwrap_or_default()
            .into_filter(viewer(ctx).user_id())?;
        let page = PageArgs::new(first, after)?;
        let known = self.known();
        let page = crate::workflows::service::list(db(ctx), known, &filter, page).await?;
        let standing = crate::access::JobStanding {
            workspace: known.standing,
            viewer_id: viewer(ctx).user_id(),
        };
        Ok(page.into_connection(|w| w.id, |w| super::workflows::WorkflowView(w, standing)))
    }

    /// How many jobs are in each status; with `mine`, only the viewer's own.
    async fn job_counts(
        &self,
        ctx: &Context<'_>,
        #[graphql(default = false)] mine: bool,
    ) -> ApiResult<JobCounts> {
        let submitter = if mine {
            Some(viewer(ctx).require_user()?.id)
        } else {
            None
        };
        let counts = crate::jobs::history::counts(db(ctx), self.known(), submitter).await?;
        Ok(JobCounts::from_map(&counts))
    }

    /// The credit ledger, newest first.
    #[graphql(complexity = "page_complexity(first, child_complexity)")]
    async fn credit_transactions(
        &self,
        ctx: &Context<'_>,
        first: Option<i32>,
        after: Option<String>,
    ) -> ApiResult<Connection<String, CreditTransactionView>> {
        let page = PageArgs::new(first, after)?;
        let page = ledger::list(db(ctx), self.known(), page).await?;
        Ok(page.into_connection(|t| t.id, CreditTransactionView))
    }
}

/// A user's membership of a workspace, as seen by a viewer with a standing there.
pub struct MembershipView(pub membership::Model, pub Standing);

#[Object(name = "Membership")]
impl MembershipView {
    pub async fn id(&self) -> ID {
        ids::encode(self.0.id)
    }

    async fn role(&self) -> RoleView {
        self.0.role.into()
    }

    async fn user(&self, ctx: &Context<'_>) -> ApiResult<UserView> {
        load_user(ctx, self.0.user_id).await
    }

    async fn created_at(&self) -> DateTime<Utc> {
        self.0.created_at
    }

    /// Whether the viewer's role lets them change this member's role. (The last owner still
    /// cannot be demoted.)
    async fn viewer_can_change_role(&self) -> bool {
        self.1
            .can_change_member(Some(self.0.role), Some(self.0.role))
    }

    /// Whether the viewer's role lets them remove this member. (The last owner still cannot
    /// be removed.)
    async fn viewer_can_remove(&self) -> bool {
        self.1.can_change_member(Some(self.0.role), None)
    }
}

#[derive(Default)]
pub struct WorkspacesQuery;

#[Object]
impl WorkspacesQuery {
    /// A workspace the viewer can see; NOT_FOUND otherwise.
    async fn workspace(&self, ctx: &Context<'_>, id: ID) -> ApiResult<WorkspaceView> {
        let id = ids::decode::<WorkspaceId>("id", &id)?;
        let standings = ctx.data_unchecked::<Arc<StandingCache>>();
        if !needs_row(&ctx.look_ahead())
            && let Some(known) = standings.known(viewer(ctx), id)
        {
            return Ok(WorkspaceView::Known(known));
        }
        Ok(standings.load(db(ctx), viewer(ctx), id).await?.into())
    }
}

#[derive(InputObject)]
struct CreateWorkspaceInput {
    name: String,
}

#[derive(SimpleObject)]
struct WorkspacePayload {
    workspace: WorkspaceView,
}

#[derive(InputObject)]
struct RenameWorkspaceInput {
    workspace_id: ID,
    name: String,
}

#[derive(InputObject)]
struct DeleteWorkspaceInput {
    workspace_id: ID,
}

#[derive(SimpleObject)]
struct DeleteWorkspacePayload {
    deleted_workspace_id: ID,
}

#[derive(InputObject)]
struct AddMemberInput {
    workspace_id: ID,
    /// An unknown address is invited: a pending user is created for it.
    email: String,
    role: RoleView,
}

#[derive(InputObject)]
struct ChangeMemberRoleInput {
    workspace_id: ID,
    user_id: ID,
    role: RoleView,
}

#[derive(SimpleObject)]
struct MembershipPayload {
    membership: MembershipView,
}

#[derive(InputObject)]
struct RemoveMemberInput {
    workspace_id: ID,
    user_id: ID,
}

#[derive(InputObject)]
struct LeaveWorkspaceInput {
    workspace_id: ID,
}

#[derive(SimpleObject)]
struct RemoveMemberPayload {
    workspace_id: ID,
    removed_user_id: ID,
}

#[derive(Default)]
pub struct WorkspacesMutation;

async fn reload(ctx: &Context<'_>, id: WorkspaceId) -> ApiResult<WorkspaceView> {
    Ok(WorkspaceAccess::load(db(ctx), viewer(ctx), id)
        .await?
        .into())
}

async fn membership_view(
    ctx: &Context<'_>,
    membership: membership::Model,
) -> ApiResult<MembershipPayload> {
    let standing = crate::access::standing(db(ctx), viewer(ctx), membership.workspace_id).await?;
    Ok(MembershipPayload {
        membership: MembershipView(membership, standing),
    })
}

#[Object]
impl WorkspacesMutation {
    /// Creates a workspace; the viewer becomes its OWNER.
    async fn create_workspace(
        &self,
        ctx: &Context<'_>,
        input: CreateWorkspaceInput,
    ) -> ApiResult<WorkspacePayload> {
        let workspace = service::create(db(ctx), viewer(ctx), &input.name).await?;
        Ok(WorkspacePayload {
            workspace: reload(ctx, workspace.id).await?,
        })
    }

    /// Renames a workspace (OWNER or ADMIN).
    async fn rename_workspace(
        &self,
        ctx: &Context<'_>,
        input: RenameWorkspaceInput,
    ) -> ApiResult<WorkspacePayload> {
        let id = ids::decode::<WorkspaceId>("workspaceId", &input.workspace_id)?;
        service::rename(db(ctx), viewer(ctx), id, &input.name).await?;
        Ok(WorkspacePayload {
            workspace: reload(ctx, id).await?,
        })
    }

    /// Deletes a workspace with everything in it (OWNER only; no active jobs).
    async fn delete_workspace(
        &self,
        ctx: &Context<'_>,
        input: DeleteWorkspaceInput,
    ) -> ApiResult<DeleteWorkspacePayload> {
        let id = ids::decode::<WorkspaceId>("workspaceId", &input.workspace_id)?;
        service::delete(db(ctx), super::files(ctx), viewer(ctx), id).await?;
        forget_standings(ctx, id);
        Ok(DeleteWorkspacePayload {
            deleted_workspace_id: input.workspace_id,
        })
    }

    /// Adds a member by e-mail (OWNER or ADMIN; only an OWNER adds owners).
    async fn add_member(
        &self,
        ctx: &Context<'_>,
        input: AddMemberInput,
    ) -> ApiResult<MembershipPayload> {
        let id = ids::decode::<WorkspaceId>("workspaceId", &input.workspace_id)?;
        let membership =
            members::add(db(ctx), viewer(ctx), id, &input.email, input.role.into()).await?;
        forget_standings(ctx, id);
        membership_view(ctx, membership).await
    }

    /// Changes a member's role. The last owner cannot be demoted.
    async fn change_member_role(
        &self,
        ctx: &Context<'_>,
        input: ChangeMemberRoleInput,
    ) -> ApiResult<MembershipPayload> {
        let id = ids::decode::<WorkspaceId>("workspaceId", &input.workspace_id)?;
        let user_id = ids::decode::<UserId>("userId", &input.user_id)?;
        let membership =
            members::change_role(db(ctx), viewer(ctx), id, user_id, input.role.into()).await?;
        forget_standings(ctx, id);
        membership_view(ctx, membership).await
    }

    /// Removes a member. The last owner cannot be removed.
    async fn remove_member(
        &self,
        ctx: &Context<'_>,
        input: RemoveMemberInput,
    ) -> ApiResult<RemoveMemberPayload> {
        let id = ids::decode::<WorkspaceId>("workspaceId", &input.workspace_id)?;
        let user_id = ids::decode::<UserId>("userId", &input.user_id)?;
        members::remove(db(ctx), viewer(ctx), id, user_id).await?;
        forget_standings(ctx, id);
        Ok(RemoveMemberPayload {
            workspace_id: input.workspace_id,
            removed_user_id: input.user_id,
        })
    }

    /// The viewer leaves a workspace. The last owner cannot leave.
    async fn leave_workspace(
        &self,
        ctx: &Context<'_>,
        input: LeaveWorkspaceInput,
    ) -> ApiResult<RemoveMemberPayload> {
        let id = ids::decode::<WorkspaceId>("workspaceId", &input.workspace_id)?;
        let membership = members::leave(db(ctx), viewer(ctx), id).await?;
        forget_standings(ctx, id);
        Ok(RemoveMemberPayload {
            workspace_id: input.workspace_id,
            removed_user_id: ids::encode(membership.user_id),
        })
    }
}

/// After a member change: the workspace's standings are checked again.
fn forget_standings(ctx: &Context<'_>, workspace_id: WorkspaceId) {
    ctx.data_unchecked::<Arc<StandingCache>>()
        .forget_workspace(workspace_id);
}
