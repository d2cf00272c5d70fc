//! Sign-in with the platform's own identity provider: JWTs from an OpenID Connect issuer.
//!
//! The issuer's discovery document and its keys (JWKS) are fetched when first needed and kept;
//! a token signed with a key not seen yet fetches the keys again (at most every
//! [`REFETCH_AFTER`]), so the issuer may rotate its keys at any time. A token is accepted when
//! it is signed by one of those keys with an asymmetric algorithm, was issued by the issuer
//! for the audience, and has not expired. Its user is found by the configured claim (`email` or
//! `sub`), and created on first sight unless that is turned off; an invited user becomes active.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use entity::ids::UserId;
use entity::user;
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use sea_orm::{ColumnTrait as _, ConnectionTrait, EntityTrait as _, QueryFilter as _};
use serde_json::Value;
use tokio::sync::Mutex;

use crate::access::Viewer;
use crate::error::{Error, Result};

/// A token signed with an unknown key fetches the issuer's keys again at most this often.
const REFETCH_AFTER: Duration = Duration::from_secs(1);
/// Keys are fetched again after this long even when every token's key is known.
const KEYS_MAX_AGE: Duration = Duration::from_secs(3600);
/// Clock skew tolerated on `exp` and `nbf`.
const LEEWAY_SECONDS: u64 = 30;

/// Which claim names the user.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum UserClaim {
    /// The `email` claim: the user with that e-mail (a token whose `email_verified` is false is
    /// refused).
    Email,
    /// The `sub` claim: the user first seen with that subject (linked then by `email`).
    Sub,
}

/// How tokens of one issuer are accepted.
#[derive(Debug, Clone)]
pub struct OidcSettings {
    pub issuer: String,
    pub audience: String,
    pub user_claim: UserClaim,
    /// Whether a user first seen is created; otherwise only existing users sign in.
    pub create_users: bool,
}

/// The issuer's keys, as last fetched.
struct Keys {
    set: JwkSet,
    fetched: Instant,
}

/// Checks JWTs of one OpenID Connect issuer.
pub struct Oidc {
    settings: OidcSettings,
    http: reqwest::Client,
    /// The issuer's `jwks_uri`, once discovered.
    jwks_uri: Mutex<Option<String>>,
    keys: Mutex<Option<Arc<Keys>>>,
}

/// A user signed in by a token, and when the token expires.
pub struct SignedIn {
    pub user: user::Model,
    pub expires_at: DateTime<Utc>,
}

/// Whether a bearer secret has the shape of a JWT (three base64url parts).
pub fn looks_like_jwt(secret: &str) -> bool {
    secret.split('.').count() == 3
        && secret
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

impl Oidc {
    pub fn new(settings: OidcSettings) -> Self {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .expect("an HTTP client with rustls");
        Oidc {
            settings,
            http,
            jwks_uri: Mutex::new(None),
            keys: Mutex::new(None),
        }
    }

    /// The user a token signs in. `InvalidToken` (401) for any token that is not a valid one of
    /// this issuer for this audience; FORBIDDEN for an unknown user when users are not created.
    pub async fn sign_in(&self, db: &impl ConnectionTrait, token: &str) -> Result<SignedIn> {
        let claims = self.verify(token).await?;
        let user = self.user_of(db, &claims).await?;
        let expires_at = claims
            .get("exp")
            .and_then(Value::as_i64)
            .and_then(|exp| DateTime::from_timestamp(exp, 0))
            .ok_or(Error::InvalidToken)?;
        Ok(SignedIn { user, expires_at })
    }

    /// The claims of a token whose signature, issuer, audience and times hold.
    async fn verify(&self, token: &str) -> Result<serde_json::Map<String, Value>> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| Error::InvalidToken)?;
        if matches!(
            header.alg,
            Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512
        ) {
            return Err(Error::InvalidToken);
        }
        let key = self.key(header.kid.as_deref(), header.alg).await?;
        let mut validation = Validation::new(header.alg);
        validation.set_issuer(&[&self.settings.issuer]);
        validation.set_audience(&[&self.settings.audience]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        validation.validate_nbf = true;
        validation.leeway = LEEWAY_SECONDS;
        let data = jsonwebtoken::decode::<serde_json::Map<String, Value>>(token, &key, &validation)
            .map_err(|err| {
                tracing::debug!(error = %err, "an OpenID Connect token was refused");
                Error::InvalidToken
            })?;
        Ok(data.claims)
    }

    /// The key that signed a token: by `kid`, or the only key for the algorithm without one.
    async fn key(&self, kid: Option<&str>, alg: Algorithm) -> Result<DecodingKey> {
        let mut refetched = false;
        loop {
            let keys = self.keys(refetched).await?;
            let usable = keys.set.keys.iter().find(|jwk| {
                kid.is_none_or(|kid| jwk.common.key_id.as_deref() == Some(kid))
                    && jwk
                        .common
                        .key_algorithm
                        .is_none_or(|declared| declared.to_string() == format!("{alg:?}"))
            });
            match usable {
                Some(jwk) => return DecodingKey::from_jwk(jwk).map_err(|_| Error::InvalidToken),
                None if !refetched && keys.fetched.elapsed() >= REFETCH_AFTER => refetched = true,
                None => return Err(Error::InvalidToken),
            }
        }
    }

    /// The issuer's keys: those kept, unless `again` or too old.
    async fn keys(&self, again: bool) -> Result<Arc<Keys>> {
        let mut kept = self.keys.lock().await;
        if let Some(keys) = kept.as_ref()
            && !(again && keys.fetched.elapsed() >= REFETCH_AFTER)
            && keys.fetched.elapsed() < KEYS_MAX_AGE
        {
            return Ok(keys.clone());
        }
        let uri = self.jwks_uri().await?;
        let set: JwkSet = serde_json::from_slice(&self.fetch(&uri).await?).map_err(|err| {
            unavailable(format!(
                "the issuer's keys at {uri} are not a JWK set: {err}"
            ))
        })?;
        let keys = Arc::new(Keys {
            set,
            fetched: Instant::now(),
        });
        *kept = Some(keys.clone());
        Ok(keys)
    }

    async fn jwks_uri(&self) -> Result<String> {
        let mut known = self.jwks_uri.lock().await;
        if let Some(uri) = known.as_ref() {
            return Ok(uri.clone());
        }
        let issuer = self.settings.issuer.trim_end_matches('/');
        let url = format!("{issuer}/.well-known/openid-configuration");
        let document: Value = serde_json::from_slice(&self.fetch(&url).await?)
            .map_err(|err| unavailable(format!("{url} is not JSON: {err}")))?;
        if document["issuer"].as_str() != Some(self.settings.issuer.as_str()) {
            return Err(unavailable(format!(
                "{url} names issuer {}, not {}",
                document["issuer"], self.settings.issuer
            )));
        }
        let uri = document["jwks_uri"]
            .as_str()
            .ok_or_else(|| unavailable(format!("{url} has no jwks_uri")))?
            .to_owned();
        *known = Some(uri.clone());
        Ok(uri)
    }

    async fn fetch(&self, url: &str) -> Result<bytes::Bytes> {
        let response = self
            .http
            .get(url)
            .send()
            .await
            .and_then(reqwest::Response::error_for_status)
            .map_err(|err| unavailable(format!("fetching {url}: {err}")))?;
        response
            .bytes()
            .await
            .map_err(|err| unavailable(format!("reading {url}: {err}")))
    }

    /// The user the claims name, created or activated on first sign-in.
    async fn user_of(
        &self,
        db: &impl ConnectionTrait,
        claims: &serde_json::Map<String, Value>,
    ) -> Result<user::Model> {
        let email = match claims.get("email").and_then(Value::as_str) {
            Some(_) if claims.get("email_verified") == Some(&Value::Bool(false)) => None,
            email => email,
        };
        let subject = claims
            .get("sub")
            .and_then(Value::as_str)
            .ok_or(Error::InvalidToken)?;
        let found = match self.settings.user_claim {
            UserClaim::Email => {
                let Some(email) = email else {
                    return Err(Error::InvalidToken);
                };
                user::Entity::find_by_email(email).one(db).await?
            }
            UserClaim::Sub => {
                let by_subject = user::Entity::find()
                    .filter(user::Column::Subject.eq(subject))
                    .one(db)
                    .await?;
                match (by_subject, email) {
                    (Some(user), _) => Some(user),
                    // First seen: the user invited or created with the token's e-mail.
                    (None, Some(email)) => user::Entity::find_by_email(email)
                        .one(db)
                        .await?
                        .filter(|user| user.subject.is_none()),
                    (None, None) => None,
                }
            }
        };
        let user = match found {
            Some(user) => user,
            None if !self.settings.create_users => {
                return Err(Error::forbidden(
                    "this identity has no user here, and users are not created on sign-in: \
                     ask an administrator",
                ));
            }
            None => {
                let Some(email) = email else {
                    return Err(Error::forbidden(
                        "the token carries no verified `email` claim to create a user with",
                    ));
                };
                let name = claims.get("name").and_then(Value::as_str);
                match super::sign_up(db, email, name).await {
                    Ok(user) => user,
                    // The e-mail is taken: by this user's own first sign-in in another
                    // request, or, when users are named by subject, by another identity.
                    Err(Error::Conflict(_)) => user::Entity::find_by_email(email)
                        .one(db)
                        .await?
                        .filter(|user| user.subject.as_deref().is_none_or(|s| s == subject))
                        .ok_or_else(|| {
                            Error::forbidden(
                                "a user with this e-mail signs in with another identity",
                            )
                        })?,
                    Err(err) => return Err(err),
                }
            }
        };
        self.settle(db, user, subject).await
    }

    /// Activates an invited user on first sign-in, and links the subject when users are
    /// named by it.
    async fn settle(
        &self,
        db: &impl ConnectionTrait,
        user: user::Model,
        subject: &str,
    ) -> Result<user::Model> {
        let link = self.settings.user_claim == UserClaim::Sub && user.subject.is_none();
        if !user.is_pending && !link {
            return Ok(user);
        }
        let id: UserId = user.id;
        super::activate(db, user, link.then_some(subject))
            .await
            .inspect_err(|err| {
                tracing::warn!(user = %id, error = %err, "settling a signed-in user failed");
            })
    }
}

/// The issuer could not be reached or answered nonsense, so the token cannot be checked: logged
/// with the details, answered with 503.
fn unavailable(message: String) -> Error {
    tracing::error!("OpenID Connect: {message}");
    Error::Unavailable("the identity provider")
}

/// The viewer a signed-in user acts as.
pub fn viewer(signed_in: SignedIn) -> Viewer {
    Viewer::User {
        user: signed_in.user,
        via: crate::access::Credential::Session {
            expires_at: signed_in.expires_at,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jwts_are_told_from_api_tokens() {
        assert!(looks_like_jwt("eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln"));
        assert!(!looks_like_jwt("jg_0123456789abcdef"));
        assert!(!looks_like_jwt("a.b"));
        assert!(!looks_like_jwt("a.b.c d"));
    }
}
