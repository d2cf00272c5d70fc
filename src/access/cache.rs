//! What this process trusts of the access rules for a few seconds, and how it is told to stop.

use entity::ids::{TokenId, UserId, WorkspaceId};
use std::time::Duration;

use entity::membership::Role;
use sea_orm::ConnectionTrait;

use super::{Standing, Viewer, WorkspaceAccess, WorkspaceRef};
use crate::cache::TtlCache;
use crate::error::Result;

/// A cache of an access rule, told of committed changes that end what it trusts: by the request
/// that made the change, at once, and by the live bus as it reads them from the log, for changes
/// made by any process.
pub trait Invalidate: Send + Sync {
    /// A workspace's members changed.
    fn members_changed(&self, _workspace_id: WorkspaceId) {}
    /// An API token was revoked.
    fn token_revoked(&self, _token_id: TokenId) {}
}

/// Users' roles in workspaces as this process read them a moment ago, which requests and live
/// subscriptions alike trust for `--auth-cache-seconds`: a stream of requests about a workspace,
/// or of events to its subscribers, checks membership once every few seconds.
///
/// A member change drops the workspace's entries ([`StandingCache::forget_workspace`]): at once
/// when made through this process, and before the live bus broadcasts it when made through any.
/// A role read before a change is not kept after it: it would outlive the change by the cache's
/// time to live. Only users' roles are kept: anonymous callers and workers are members of
/// nothing, and the system reads every workspace.
pub struct StandingCache(TtlCache<(UserId, WorkspaceId), Seen>);

#[derive(Debug, Clone, Copy)]
struct Seen {
    role: Option<Role>,
    /// Read with the workspace's row: the workspace then existed.
    with_row: bool,
}

/// Standings kept at most, a user's in a workspace each.
const CAPACITY: usize = 100_000;

impl StandingCache {
    pub fn new(ttl: Duration) -> Self {
        StandingCache(TtlCache::with_capacity(ttl, CAPACITY))
    }

    /// The viewer's standing in a workspace, as [`super::standing`] reads it, from the cache when
    /// fresh.
    pub async fn standing(
        &self,
        db: &impl ConnectionTrait,
        viewer: &Viewer,
        workspace_id: WorkspaceId,
    ) -> Result<Standing> {
        let Some(user_id) = viewer.user_id() else {
            return super::standing(db, viewer, workspace_id).await;
        };
        if let Some(seen) = self.0.get(&(user_id, workspace_id)) {
            return Ok(Standing::of(viewer, seen.role));
        }
        let start = self.0.read_starts();
        let standing = super::standing(db, viewer, workspace_id).await?;
        let seen = Seen {
            role: standing.role,
            with_row: false,
        };
        self.0
            .insert_read_since(start, (user_id, workspace_id), seen);
        Ok(standing)
    }

    /// A workspace the viewer could read a moment ago, known without reading it: when their
    /// standing there is cached, allows reading, and shows that the workspace exists (they are a
    /// member of it, or it was read with their standing).
    pub fn known(&self, viewer: &Viewer, workspace_id: WorkspaceId) -> Option<WorkspaceRef> {
        let seen = self.0.get(&(viewer.user_id()?, workspace_id))?;
        let standing = Standing::of(viewer, seen.role);
        (standing.can_read() && (seen.with_row || seen.role.is_some())).then_some(WorkspaceRef {
            id: workspace_id,
            standing,
        })
    }

    /// Loads a workspace as [`WorkspaceAccess::load`] does, keeping the viewer's standing there.
    pub async fn load(
        &self,
        db: &impl ConnectionTrait,
        viewer: &Viewer,
        id: WorkspaceId,
    ) -> Result<WorkspaceAccess> {
        let start = self.0.read_starts();
        let access = WorkspaceAccess::load(db, viewer, id).await?;
        if let Some(user_id) = viewer.user_id() {
            let seen = Seen {
                role: access.standing.role,
                with_row: true,
            };
            self.0.insert_read_since(start, (user_id, id), seen);
        }
        Ok(access)
    }

    /// Drops every viewer's standing in a workspace whose members changed (or that was deleted).
    pub fn forget_workspace(&self, workspace_id: WorkspaceId) {
        self.0
            .forget(|(_, workspace), _| *workspace == workspace_id);
    }
}

impl Invalidate for StandingCache {
    fn members_changed(&self, workspace_id: WorkspaceId) {
        self.forget_workspace(workspace_id);
    }
}
