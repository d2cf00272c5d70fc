//! Users: creation, invitations by e-mail, the first-start administrator, and who a request's
//! bearer secret (an API token, or the identity provider's token) signs in.

pub mod oidc;
pub mod tokens;

use chrono::{DateTime, Utc};
use entity::ids::UserId;
use entity::user;
use sea_orm::{
    ActiveModelTrait, ConnectionTrait, EntityTrait, IntoActiveModel as _, PaginatorTrait, Set,
};

use crate::access::{self, Credential, PlatformAction, Viewer};
use crate::error::{Error, Result, is_unique_violation};

/// Trims and lower-cases an e-mail address; BAD_USER_INPUT unless it looks like one.
pub fn normalize_email(email: &str) -> Result<String> {
    let email = email.trim().to_lowercase();
    let valid = email.len() <= 254
        && !email.chars().any(char::is_whitespace)
        && matches!(email.split_once('@'), Some((local, domain))
            if !local.is_empty() && !domain.is_empty() && !domain.contains('@'));
    if !valid {
        return Err(Error::bad_input(
            "email",
            format!("`{email}` is not an e-mail address"),
        ));
    }
    Ok(email)
}

fn check_display_name(name: &str) -> Result<String> {
    let name = name.trim();
    if name.chars().count() > 100 {
        return Err(Error::bad_input(
            "displayName",
            "must be at most 100 characters",
        ));
    }
    Ok(name.to_owned())
}

/// Creates an active user. CONFLICT when the e-mail is taken.
pub async fn create_user(
    db: &impl ConnectionTrait,
    viewer: &Viewer,
    email: &str,
    display_name: Option<&str>,
    platform_admin: bool,
) -> Result<user::Model> {
    access::check_platform(viewer, PlatformAction::CreateUsers)?;
    let email = normalize_email(email)?;
    let display_name = match display_name {
        Some(name) => check_display_name(name)?,
        None => default_display_name(&email),
    };
    insert_user(db, email, display_name, platform_admin, false).await
}

/// Creates the active user of someone who signed in with the identity provider for the first
/// time. CONFLICT when the e-mail is taken.
pub async fn sign_up(
    db: &impl ConnectionTrait,
    email: &str,
    display_name: Option<&str>,
) -> Result<user::Model> {
    let email = normalize_email(email)?;
    let display_name = display_name
        .and_then(|name| check_display_name(name).ok())
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| default_display_name(&email));
    insert_user(db, email, display_name, false, false).await
}

/// The viewer a bearer secret stands for: an API token (`jg_...`), checked through `tokens`
/// (a cache of recent checks) or, without it, against the database; or a JWT of the identity
/// provider when one is configured. INVALID_TOKEN (401) for anything else.
pub async fn authenticate(
    db: &impl ConnectionTrait,
    tokens: Option<&tokens::TokenCache>,
    oidc: Option<&oidc::Oidc>,
    secret: &str,
) -> Result<Viewer> {
    match (oidc, tokens) {
        (Some(oidc), _) if oidc::looks_like_jwt(secret) => {
            oidc.sign_in(db, secret).await.map(oidc::viewer)
        }
        (_, Some(tokens)) => tokens.authenticate(db, secret).await,
        (_, None) => tokens::authenticate(db, secret).await,
    }
}

/// When the viewer's credential stops being valid, if it does.
pub async fn expires_at(db: &impl ConnectionTrait, viewer: &Viewer) -> Option<DateTime<Utc>> {
    match viewer {
        Viewer::User {
            via: Credential::Session { expires_at },
            ..
        } => Some(*expires_at),
        _ => tokens::expires_at(db, viewer.token_id()?).await,
    }
}

async fn insert_user(
    db: &impl ConnectionTrait,
    email: String,
    display_name: String,
    platform_admin: bool,
    pending: bool,
) -> Result<user::Model> {
    let model = user::ActiveModel {
        id: Set(UserId::new()),
        email: Set(email.clone()),
        display_name: Set(display_name),
        is_platform_admin: Set(platform_admin),
        is_pending: Set(pending),
        created_at: Set(Utc::now()),
        subject: Set(None),
    };
    model.insert(db).await.map_err(|err| {
        if is_unique_violation(&err) {
            Error::conflict(format!("a user with e-mail {email} already exists"))
        } else {
            err.into()
        }
    })
}

/// Accepts a user's invitation: a pending user becomes active, on their first token or first
/// sign-in. With `subject`, also links the identity provider's subject to the user.
pub async fn activate(
    db: &impl ConnectionTrait,
    user: user::Model,
    subject: Option<&str>,
) -> Result<user::Model> {
    if !user.is_pending && subject.is_none() {
        return Ok(user);
    }
    let mut active = user.into_active_model();
    active.is_pending = Set(false);
    if let Some(subject) = subject {
        active.subject = Set(Some(subject.to_owned()));
    }
    Ok(active.update(db).await?)
}

/// The user with this e-mail, or a new pending one (an invitation to someone not yet known).
pub async fn find_or_invite(db: &impl ConnectionTrait, email: &str) -> Result<user::Model> {
    let email = normalize_email(email)?;
    if let Some(user) = user::Entity::find_by_email(&email).one(db).await? {
        return Ok(user);
    }
    let name = default_display_name(&email);
    insert_user(db, email, name, false, true).await
}

fn default_display_name(email: &str) -> String {
    email.split('@').next().unwrap_or(email).to_owned()
}

/// The first-start administrator and their token, made only while there are no users at all.
pub struct FirstAdmin {
    pub user: user::Model,
    pub secret: String,
}

/// Creates the platform administrator and an API token on a database with no users.
pub async fn bootstrap_admin(db: &impl ConnectionTrait, email: &str) -> Result<Option<FirstAdmin>> {
    if user::Entity::find().count(db).await? > 0 {
        return Ok(None);
    }
    let user = match create_user(db, &Viewer::System, email, Some("Administrator"), true).await {
        Ok(user) => user,
        // Another node, starting at the same moment, made it first.
        Err(Error::Conflict(_)) => return Ok(None),
        Err(err) => return Err(err),
    };
    let (_, secret) = tokens::issue(
        db,
        user.id,
        "first start",
        entity::api_token::TokenKind::User,
        None,
    )
    .await?;
    Ok(Some(FirstAdmin { user, secret }))
}
