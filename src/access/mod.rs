//! Who is asking, and the one place each permission is decided.
//!
//! Mutations enforce these rules and the `viewerCan*` fields report them, from the same functions.
//! The rules read what they need through `entity` finders, or are given it; nothing here knows
//! of the queue, the live bus or the schema, which ask.

mod cache;
mod jobs;
mod sharing;
mod workflows;
mod workspaces;

pub use cache::{Invalidate, StandingCache};
pub use jobs::{
    JobAccess, JobAction, JobStanding, readable_file, shared_with, worker_readable_file,
};
pub use sharing::{Shared, admits as sharing_admits};
pub use workflows::{WorkflowAccess, WorkflowAction, status_name as workflow_status_name};
pub use workspaces::{
    Standing, WorkspaceAccess, WorkspaceAction, WorkspaceRef, readable_credit_transaction,
    readable_membership, standing,
};

use entity::ids::{TokenId, UserId};
use entity::membership::Role;
use entity::{api_token, membership, user};
use sea_orm::{ColumnTrait, ConnectionTrait, EntityTrait, PaginatorTrait, QueryFilter};
use sea_orm::{QuerySelect, QueryTrait};

use crate::error::{Error, Result};

/// The caller of a request.
#[derive(Debug, Clone)]
pub enum Viewer {
    /// No token: sees only what is public.
    Anonymous,
    /// A user, authenticated by one of their API tokens or signed in by their identity
    /// provider.
    User { user: user::Model, via: Credential },
    /// A remote worker, authenticated by a worker token: it may use the worker API and
    /// download the inputs of the jobs it runs, and nothing else.
    Worker(WorkerToken),
    /// The server itself or its command line, acting with platform-admin rights.
    System,
}

/// How a user proved who they are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Credential {
    /// One of their API tokens.
    Token(TokenId),
    /// A token of the platform's identity provider (OpenID Connect), valid until `expires_at`.
    Session {
        expires_at: chrono::DateTime<chrono::Utc>,
    },
}

/// The worker token behind a remote worker's request.
#[derive(Debug, Clone)]
pub struct WorkerToken {
    pub user_id: UserId,
    pub token_id: TokenId,
    /// The token's secret hash: the key that signs the attempt tokens of the jobs it claims,
    /// so that no other token can speak for them.
    pub key: String,
}

/// Who a viewer is to the access rules: viewers of one audience are let in and shown the same,
/// whatever credential each came with, so one execution of a subscription can serve them all.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Audience {
    Anonymous,
    User { id: UserId, platform_admin: bool },
}

impl Viewer {
    pub fn user(&self) -> Option<&user::Model> {
        match self {
            Viewer::User { user, .. } => Some(user),
            _ => None,
        }
    }

    /// The viewer's audience; `None` for workers and the server itself, who share nothing.
    pub fn audience(&self) -> Option<Audience> {
        match self {
            Viewer::Anonymous => Some(Audience::Anonymous),
            Viewer::User { user, .. } => Some(Audience::User {
                id: user.id,
                platform_admin: user.is_platform_admin,
            }),
            Viewer::Worker(_) | Viewer::System => None,
        }
    }

    pub fn user_id(&self) -> Option<UserId> {
        self.user().map(|user| user.id)
    }

    /// The API token this viewer authenticated with.
    pub fn token_id(&self) -> Option<TokenId> {
        match self {
            Viewer::User {
                via: Credential::Token(token_id),
                ..
            } => Some(*token_id),
            Viewer::User { .. } => None,
            Viewer::Worker(token) => Some(token.token_id),
            Viewer::Anonymous | Viewer::System => None,
        }
    }

    /// The worker token of a remote worker's request.
    pub fn worker(&self) -> Option<&WorkerToken> {
        match self {
            Viewer::Worker(token) => Some(token),
            _ => None,
        }
    }

    /// The worker token, for the worker API: FORBIDDEN for a user's token, UNAUTHENTICATED
    /// without one.
    pub fn require_worker(&self) -> Result<&WorkerToken> {
        match self {
            Viewer::Worker(token) => Ok(token),
            Viewer::Anonymous => Err(Error::Unauthenticated),
            Viewer::User { .. } | Viewer::System => Err(Error::forbidden(
                "the worker API takes a worker token; a platform administrator creates one \
                 with createApiToken(input: {kind: WORKER})",
            )),
        }
    }

    /// The user, or UNAUTHENTICATED.
    pub fn require_user(&self) -> Result<&user::Model> {
        self.user().ok_or(Error::Unauthenticated)
    }

    pub fn is_platform_admin(&self) -> bool {
        match self {
            Viewer::User { user, .. } => user.is_platform_admin,
            Viewer::System => true,
            Viewer::Anonymous | Viewer::Worker(_) => false,
        }
    }
}

/// The root fields of the worker API: the only ones a worker token may use.
pub const WORKER_API: [&str; 5] = [
    "claimJobs",
    "heartbeatJob",
    "reportJobProgress",
    "completeJob",
    "failJob",
];

/// Whether a worker token may ask for the root field `name`: the worker API's, and
/// introspection.
pub fn worker_may_call(name: &str) -> bool {
    name.starts_with("__") || WORKER_API.contains(&name)
}

/// The refusal of the field `field` (a root field, or what a worker token may not read) to a
/// worker token.
pub fn worker_token_refused(field: &str) -> Error {
    Error::forbidden(format!(
        "a worker token may use only the worker API ({}); `{field}` takes a user's token",
        WORKER_API.join(", "),
    ))
}

/// What only platform administrators may do, whatever their workspaces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PlatformAction {
    /// Give or adjust a workspace's credits.
    ManageCredits,
    /// Create users.
    CreateUsers,
    /// Create an API token for another user.
    CreateTokensForOthers,
    /// Create a worker token: a remote worker claims the jobs of every workspace.
    CreateWorkerTokens,
}

/// Whether the viewer may do `action`; FORBIDDEN, saying who may, otherwise.
pub fn check_platform(viewer: &Viewer, action: PlatformAction) -> Result<()> {
    if viewer.is_platform_admin() {
        return Ok(());
    }
    Err(Error::forbidden(match action {
        PlatformAction::ManageCredits => "only platform administrators manage credits",
        PlatformAction::CreateUsers => "only platform administrators create users",
        PlatformAction::CreateTokensForOthers => {
            "only platform administrators create tokens for other users"
        }
        PlatformAction::CreateWorkerTokens => "only platform administrators create worker tokens",
    }))
}

/// An API token the viewer may see and revoke: their own, or any for a platform administrator.
/// NOT_FOUND otherwise, exactly like a missing one.
pub async fn readable_token(
    db: &impl ConnectionTrait,
    viewer: &Viewer,
    id: TokenId,
) -> Result<api_token::Model> {
    api_token::Entity::find_by_id(id)
        .one(db)
        .await?
        .filter(|token| Some(token.user_id) == viewer.user_id() || viewer.is_platform_admin())
        .ok_or(Error::NotFound("API token"))
}

/// A user the viewer may see: themself, or someone sharing a workspace with them (any user
/// for a platform administrator). NOT_FOUND otherwise.
pub async fn readable_user(
    db: &impl ConnectionTrait,
    viewer: &Viewer,
    id: UserId,
) -> Result<user::Model> {
    let not_found = || Error::NotFound("user");
    let visible = if viewer.is_platform_admin() || viewer.user_id() == Some(id) {
        true
    } else if let Some(me) = viewer.user_id() {
        let mine = membership::Entity::find()
            .select_only()
            .column(membership::Column::WorkspaceId)
            .filter(membership::Column::UserId.eq(me))
            .into_query();
        membership::Entity::find()
            .filter(membership::Column::UserId.eq(id))
            .filter(membership::Column::WorkspaceId.in_subquery(mine))
            .count(db)
            .await?
            > 0
    } else {
        false
    };
    if !visible {
        return Err(not_found());
    }
    user::Entity::find_by_id(id)
        .one(db)
        .await?
        .ok_or_else(not_found)
}

/// The role with its article, as a sentence says it: "an OWNER", "a MEMBER".
pub fn a_role(role: Role) -> String {
    let article = match role {
        Role::Owner | Role::Admin => "an",
        Role::Member | Role::Viewer => "a",
    };
    format!("{article} {}", role_name(role))
}

/// The role as clients spell it.
pub fn role_name(role: Role) -> &'static str {
    match role {
        Role::Owner => "OWNER",
        Role::Admin => "ADMIN",
        Role::Member => "MEMBER",
        Role::Viewer => "VIEWER",
    }
}
