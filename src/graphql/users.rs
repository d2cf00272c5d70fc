//! GraphQL for users, the viewer and API tokens.

use std::sync::Arc;

use async_graphql::connection::Connection;
use async_graphql::{Context, ID, InputObject, Object, SimpleObject};
use chrono::{DateTime, Utc};
use entity::api_token::{self, TokenKind};
use entity::ids::{TokenId, UserId};
use entity::user;

use super::workspaces::WorkspaceView;
use super::{db, page_complexity, viewer};
use crate::error::{ApiResult, Error};
use crate::ids::{self};
use crate::pagination::PageArgs;
use crate::users::{self as service, tokens};

/// A person or integration. Shared with the request's loader, which hands each job of a
/// page its submitter without copying it.
pub struct UserView(pub Arc<user::Model>);

impl From<user::Model> for UserView {
    fn from(user: user::Model) -> Self {
        UserView(Arc::new(user))
    }
}

#[Object(name = "User")]
impl UserView {
    pub async fn id(&self) -> ID {
        ids::encode(self.0.id)
    }

    async fn email(&self) -> &str {
        &self.0.email
    }

    async fn display_name(&self) -> &str {
        &self.0.display_name
    }

    /// Invited by e-mail and not yet active.
    async fn is_pending(&self) -> bool {
        self.0.is_pending
    }

    async fn is_platform_admin(&self) -> bool {
        self.0.is_platform_admin
    }

    async fn created_at(&self) -> DateTime<Utc> {
        self.0.created_at
    }
}

super::inline::inline_fields!(UserView {
    id(&self),
    email(&self),
    display_name(&self),
    is_pending(&self),
    is_platform_admin(&self),
    created_at(&self),
});

/// Loads a user through the request's batch loader.
pub(crate) async fn load_user(ctx: &Context<'_>, id: UserId) -> ApiResult<UserView> {
    let loader = ctx.data_unchecked::<super::Users>();
    let user = loader
        .load_one(id)
        .await
        .map_err(|err| Error::Internal(anyhow::anyhow!("loading user {id}: {err}")))?
        .ok_or(Error::NotFound("user"))?;
    Ok(UserView(user))
}

/// The caller of this request.
pub struct ViewerView;

#[Object(name = "Viewer")]
impl ViewerView {
    /// The authenticated user; null for an anonymous request.
    async fn user(&self, ctx: &Context<'_>) -> Option<UserView> {
        viewer(ctx).user().cloned().map(UserView::from)
    }

    async fn is_authenticated(&self, ctx: &Context<'_>) -> bool {
        viewer(ctx).user().is_some()
    }

    async fn is_platform_admin(&self, ctx: &Context<'_>) -> bool {
        viewer(ctx).is_platform_admin()
    }

    /// The workspaces the viewer is a member of, newest first.
    #[graphql(complexity = "page_complexity(first, child_complexity)")]
    async fn workspaces(
        &self,
        ctx: &Context<'_>,
        first: Option<i32>,
        after: Option<String>,
    ) -> ApiResult<Connection<String, WorkspaceView>> {
        let page = PageArgs::new(first, after)?;
        let page = crate::workspaces::list_for_viewer(db(ctx), viewer(ctx), page).await?;
        Ok(page.into_connection(|access| access.workspace.id, WorkspaceView::from))
    }

    /// The viewer's API tokens, newest first.
    #[graphql(complexity = "page_complexity(first, child_complexity)")]
    async fn api_tokens(
        &self,
        ctx: &Context<'_>,
        first: Option<i32>,
        after: Option<String>,
    ) -> ApiResult<Connection<String, ApiTokenView>> {
        let page = PageArgs::new(first, after)?;
        let page = tokens::list(db(ctx), viewer(ctx), page).await?;
        Ok(page.into_connection(|token| token.id, ApiTokenView))
    }
}

/// What a token is for.
#[derive(async_graphql::Enum, Clone, Copy, PartialEq, Eq)]
#[graphql(name = "TokenKind")]
pub enum TokenKindView {
    /// Acts as its user in the whole API.
    User,
    /// A remote worker's token.
    Worker,
}

impl From<TokenKindView> for TokenKind {
    fn from(kind: TokenKindView) -> Self {
        match kind {
            TokenKindView::User => TokenKind::User,
            TokenKindView::Worker => TokenKind::Worker,
        }
    }
}

impl From<TokenKind> for TokenKindView {
    fn from(kind: TokenKind) -> Self {
        match kind {
            TokenKind::User => TokenKindView::User,
            TokenKind::Worker => TokenKindView::Worker,
        }
    }
}

/// An API token. Its secret is shown only once, when it is created.
pub struct ApiTokenView(pub api_token::Model);

#[Object(name = "ApiToken")]
impl ApiTokenView {
    pub async fn id(&self) -> ID {
        ids::encode(self.0.id)
    }

    async fn name(&self) -> &str {
        &self.0.name
    }

    async fn kind(&self) -> TokenKindView {
        self.0.kind.into()
    }

    /// The first characters of the secret, to tell tokens apart.
    async fn display_prefix(&self) -> &str {
        &self.0.display_prefix
    }

    async fn created_at(&self) -> DateTime<Utc> {
        self.0.created_at
    }

    /// Refreshed at most once a minute.
    async fn last_used_at(&self) -> Option<DateTime<Utc>> {
        self.0.last_used_at
    }

    async fn expires_at(&self) -> Option<DateTime<Utc>> {
        self.0.expires_at
    }

    async fn revoked_at(&self) -> Option<DateTime<Utc>> {
        self.0.revoked_at
    }

    /// Neither revoked nor expired.
    async fn is_active(&self) -> bool {
        self.0.is_active(Utc::now())
    }
}

#[derive(Default)]
pub struct UsersQuery;

#[Object]
impl UsersQuery {
    /// The caller: their user, workspaces and tokens.
    async fn viewer(&self) -> ViewerView {
        ViewerView
    }
}

#[derive(InputObject)]
struct CreateUserInput {
    email: String,
    display_name: Option<String>,
    #[graphql(default = false)]
    is_platform_admin: bool,
}

#[derive(SimpleObject)]
struct CreateUserPayload {
    user: UserView,
}

#[derive(InputObject)]
struct CreateApiTokenInput {
    /// What the token is for, e.g. "laptop notebook".
    name: String,
    /// When the token stops working; never if omitted.
    expires_at: Option<DateTime<Utc>>,
    /// Platform administrators may create a token for another user.
    user_id: Option<ID>,
    /// WORKER tokens (platform administrators only) use the worker API and nothing else.
    #[graphql(default_with = "TokenKindView::User")]
    kind: TokenKindView,
}

#[derive(SimpleObject)]
struct CreateApiTokenPayload {
    token: ApiTokenView,
    /// The secret, shown only this once: send it as `Authorization: Bearer <secret>`.
    secret: String,
}

#[derive(InputObject)]
struct RevokeApiTokenInput {
    token_id: ID,
}

#[derive(SimpleObject)]
struct RevokeApiTokenPayload {
    token: ApiTokenView,
}

#[derive(Default)]
pub struct UsersMutation;

#[Object]
impl UsersMutation {
    /// Creates a user (platform administrators).
    async fn create_user(
        &self,
        ctx: &Context<'_>,
        input: CreateUserInput,
    ) -> ApiResult<CreateUserPayload> {
        let user = service::create_user(
            db(ctx),
            viewer(ctx),
            &input.email,
            input.display_name.as_deref(),
            input.is_platform_admin,
        )
        .await?;
        Ok(CreateUserPayload { user: user.into() })
    }

    /// Creates an API token and returns its secret, once.
    async fn create_api_token(
        &self,
        ctx: &Context<'_>,
        input: CreateApiTokenInput,
    ) -> ApiResult<CreateApiTokenPayload> {
        let user_id = input
            .user_id
            .map(|id| ids::decode::<UserId>("userId", &id))
            .transpose()?;
        let (token, secret) = tokens::create(
            db(ctx),
            viewer(ctx),
            user_id,
            &input.name,
            input.kind.into(),
            input.expires_at,
        )
        .await?;
        Ok(CreateApiTokenPayload {
            token: ApiTokenView(token),
            secret,
        })
    }

    /// Revokes an API token: requests with it fail from now on.
    async fn revoke_api_token(
        &self,
        ctx: &Context<'_>,
        input: RevokeApiTokenInput,
    ) -> ApiResult<RevokeApiTokenPayload> {
        let id = ids::decode::<TokenId>("tokenId", &input.token_id)?;
        let token = tokens::revoke(db(ctx), viewer(ctx), id).await?;
        ctx.data_unchecked::<std::sync::Arc<tokens::TokenCache>>()
            .forget(token.id);
        Ok(RevokeApiTokenPayload {
            token: ApiTokenView(token),
        })
    }
}
