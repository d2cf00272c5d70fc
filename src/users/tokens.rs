//! API tokens: issued once in clear, stored as SHA-256 hashes, checked on every request.
//!
//! Secrets look like `jg_` followed by 40 base-62 characters, so that secret scanners can
//! recognise a leaked one.

use chrono::{DateTime, Duration, Utc};
use entity::api_token::{self, TokenKind};
use entity::ids::{TokenId, UserId};
use entity::user;
use rand::Rng as _;
use rand::distr::Alphanumeric;
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, EntityTrait, IntoActiveModel, Order,
    QueryFilter, Set,
};
use sha2::{Digest, Sha256};

use crate::access::{self, Credential, PlatformAction, Viewer};
use crate::cache::TtlCache;
use crate::error::{Error, Result};
use crate::pagination::{self, Page, PageArgs};

/// The start of every secret.
pub const SECRET_PREFIX: &str = "jg_";
const SECRET_RANDOM_CHARS: usize = 40;
const DISPLAY_PREFIX_CHARS: usize = 10;
/// How stale `last_used_at` may get before a request refreshes it: one write a minute per
/// token, not one per request.
const LAST_USED_RESOLUTION: Duration = Duration::seconds(60);

fn new_secret() -> String {
    let random: String = rand::rng()
        .sample_iter(Alphanumeric)
        .take(SECRET_RANDOM_CHARS)
        .map(char::from)
        .collect();
    format!("{SECRET_PREFIX}{random}")
}

fn hash_secret(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// Issues a token without permission checks: for the first start and the command line.
pub async fn issue(
    db: &impl ConnectionTrait,
    user_id: UserId,
    name: &str,
    kind: TokenKind,
    expires_at: Option<DateTime<Utc>>,
) -> Result<(api_token::Model, String)> {
    let name = name.trim();
    if name.is_empty() || name.chars().count() > 100 {
        return Err(Error::bad_input("name", "must be 1 to 100 characters"));
    }
    if expires_at.is_some_and(|at| at <= Utc::now()) {
        return Err(Error::bad_input("expiresAt", "must be in the future"));
    }
    let secret = new_secret();
    let token = api_token::ActiveModel {
        id: Set(TokenId::new()),
        user_id: Set(user_id),
        name: Set(name.to_owned()),
        kind: Set(kind),
        display_prefix: Set(secret[..DISPLAY_PREFIX_CHARS].to_owned()),
        secret_hash: Set(hash_secret(&secret)),
        created_at: Set(Utc::now()),
        last_used_at: Set(None),
        expires_at: Set(expires_at),
        revoked_at: Set(None),
    }
    .insert(db)
    .await?;
    Ok((token, secret))
}

/// Creates a token for the viewer, or, for a platform administrator, for any user. A token
/// for an invited (pending) user activates them.
pub async fn create(
    db: &impl ConnectionTrait,
    viewer: &Viewer,
    for_user: Option<UserId>,
    name: &str,
    kind: TokenKind,
    expires_at: Option<DateTime<Utc>>,
) -> Result<(api_token::Model, String)> {
    if kind == TokenKind::Worker {
        access::check_platform(viewer, PlatformAction::CreateWorkerTokens)?;
    }
    let me = match viewer {
        Viewer::System => None,
        _ => Some(viewer.require_user()?.id),
    };
    let user_id = match (for_user, me) {
        (Some(user_id), me) if Some(user_id) != me => {
            access::check_platform(viewer, PlatformAction::CreateTokensForOthers)?;
            user_id
        }
        (_, Some(me)) => me,
        (Some(user_id), None) => user_id,
        (None, None) => return Err(Error::bad_input("userId", "name the token's user")),
    };
    let user = user::Entity::find_by_id(user_id)
        .one(db)
        .await?
        .ok_or(Error::NotFound("user"))?;
    super::activate(db, user, None).await?;
    issue(db, user_id, name, kind, expires_at).await
}

/// The viewer behind a secret. INVALID_TOKEN for an unknown, revoked or expired one.
pub async fn authenticate(db: &impl ConnectionTrait, secret: &str) -> Result<Viewer> {
    let (viewer, _) = check(db, secret, &hash_secret(secret)).await?;
    Ok(viewer)
}

/// Checks a secret against the database: its viewer and the token's expiry.
async fn check(
    db: &impl ConnectionTrait,
    secret: &str,
    hash: &str,
) -> Result<(Viewer, Option<DateTime<Utc>>)> {
    if !secret.starts_with(SECRET_PREFIX) {
        return Err(Error::InvalidToken);
    }
    let found = api_token::Entity::find()
        .filter(api_token::Column::SecretHash.eq(hash))
        .find_also_related(user::Entity)
        .one(db)
        .await?;
    let Some((token, Some(user))) = found else {
        return Err(Error::InvalidToken);
    };
    let now = Utc::now();
    if !token.is_active(now) {
        return Err(Error::InvalidToken);
    }
    if token
        .last_used_at
        .is_none_or(|at| now - at > LAST_USED_RESOLUTION)
    {
        api_token::Entity::update_many()
            .col_expr(api_token::Column::LastUsedAt, now.into())
            .filter(api_token::Column::Id.eq(token.id))
            .exec(db)
            .await?;
    }
    let viewer = match token.kind {
        TokenKind::User => Viewer::User {
            user,
            via: Credential::Token(token.id),
        },
        TokenKind::Worker => Viewer::Worker(access::WorkerToken {
            user_id: user.id,
            token_id: token.id,
            key: token.secret_hash,
        }),
    };
    Ok((viewer, token.expires_at))
}

/// Whether a token is still neither revoked nor expired. A failed lookup counts as valid: the
/// token's next request is checked anyway.
pub async fn still_valid(db: &impl ConnectionTrait, token_id: TokenId) -> bool {
    match api_token::Entity::find_by_id(token_id).one(db).await {
        Ok(Some(token)) => token.is_active(Utc::now()),
        Ok(None) => false,
        Err(_) => true,
    }
}

/// When a token expires, if it does. A failed lookup tells nothing: the token's next request
/// is checked anyway.
pub async fn expires_at(db: &impl ConnectionTrait, token_id: TokenId) -> Option<DateTime<Utc>> {
    api_token::Entity::find_by_id(token_id)
        .one(db)
        .await
        .ok()
        .flatten()
        .and_then(|token| token.expires_at)
}

/// Tokens this process recently authenticated, so that a client's stream of requests costs one
/// token lookup every few seconds instead of one per request.
///
/// An entry lives `ttl`. A revoked token is dropped at once ([`TokenCache::forget`]): by the
/// revoking request in its own process, and by the live bus in every other process as soon as
/// it reads the revocation (within a second; `ttl` if no bus runs there), through
/// [`access::Invalidate`]. An expiry time is honoured to the second, cached or not. A zero `ttl`
/// turns the cache off.
pub struct TokenCache(TtlCache<String, (Viewer, Option<DateTime<Utc>>)>);

impl TokenCache {
    pub fn new(ttl: std::time::Duration) -> Self {
        TokenCache(TtlCache::new(ttl))
    }

    /// The viewer behind a secret, as [`authenticate`] decides, from the cache when fresh.
    pub async fn authenticate(&self, db: &impl ConnectionTrait, secret: &str) -> Result<Viewer> {
        if !self.0.is_enabled() {
            return authenticate(db, secret).await;
        }
        let hash = hash_secret(secret);
        if let Some((viewer, expires_at)) = self.0.get(&hash)
            && expires_at.is_none_or(|at| at > Utc::now())
        {
            return Ok(viewer);
        }
        // A revocation while the token is checked is not outlived by the check.
        let start = self.0.read_starts();
        let (viewer, expires_at) = check(db, secret, &hash).await?;
        self.0
            .insert_read_since(start, hash, (viewer.clone(), expires_at));
        Ok(viewer)
    }

    /// Drops a token, so that its next request is checked against the database.
    pub fn forget(&self, token_id: TokenId) {
        self.0.forget(|_, (viewer, _)| match viewer {
            Viewer::User {
                via: Credential::Token(id),
                ..
            } => *id == token_id,
            Viewer::Worker(worker) => worker.token_id == token_id,
            _ => false,
        });
    }
}

impl access::Invalidate for TokenCache {
    fn token_revoked(&self, token_id: TokenId) {
        self.forget(token_id);
    }
}

/// The viewer's own tokens, newest first.
pub async fn list(
    db: &impl ConnectionTrait,
    viewer: &Viewer,
    page: PageArgs,
) -> Result<Page<api_token::Model>> {
    let user = viewer.require_user()?;
    pagination::fetch(
        db,
        api_token::Entity::find_of_user(user.id),
        api_token::Column::Id,
        Order::Desc,
        page,
    )
    .await
}

/// Revokes a token: the viewer's own, or any for a platform administrator. Revoking twice
/// leaves the first revocation time.
///
/// The revocation goes on the live log, so that every process sharing the database stops
/// trusting the token at once, and closes the websockets it opened.
pub async fn revoke(
    db: &sea_orm::DatabaseConnection,
    viewer: &Viewer,
    token_id: TokenId,
) -> Result<api_token::Model> {
    let token = access::readable_token(db, viewer, token_id).await?;
    if token.revoked_at.is_some() {
        return Ok(token);
    }
    let mut active = token.into_active_model();
    active.revoked_at = Set(Some(Utc::now()));
    let tx = crate::db::begin_write(db).await?;
    let revoked = active.update(&tx).await?;
    crate::live::token_revoked(&tx, token_id).await?;
    tx.commit().await?;
    Ok(revoked)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_prefixed_random_and_hashed() {
        let a = new_secret();
        let b = new_secret();
        assert!(a.starts_with("jg_"));
        assert_eq!(a.len(), 3 + SECRET_RANDOM_CHARS);
        assert_ne!(a, b);
        assert_eq!(hash_secret(&a).len(), 64);
        assert_ne!(hash_secret(&a), hash_secret(&b));
    }
}
