//! Webhooks: a workspace's endpoints, which receive its job and credit events as signed HTTP
//! requests (Standard Webhooks), and the log of their deliveries.
//!
//! Those who manage a workspace's members manage its endpoints (`Standing::can_manage_webhooks`).
//! Events come from the live event log (`events`); `delivery` turns the log into deliveries,
//! one per event and endpoint, and sends them with retries.

pub mod delivery;
pub mod events;
pub mod signing;

use entity::ids::{DeliveryId, WebhookId, WorkspaceId};

use chrono::Utc;
use entity::webhook;
use entity::webhook_attempt;
use entity::webhook_delivery::{self, DeliveryStatus};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, DatabaseConnection, EntityTrait,
    IntoActiveModel, Order, PaginatorTrait, QueryFilter, QueryOrder, Set,
};

use crate::access::{Viewer, WorkspaceAccess, WorkspaceAction, WorkspaceRef};
use crate::db;
use crate::error::{Error, Result};
use crate::files::fetch::{self, Cidr};
use crate::pagination::{self, Page, PageArgs};

pub use events::Filter;

/// Endpoints one workspace may have.
pub const MAX_PER_WORKSPACE: u64 = 20;
const MAX_URL: usize = 2048;
const MAX_DESCRIPTION: usize = 500;
const MAX_FILTER_TOOLS: usize = 50;

/// A new endpoint, as a caller describes it.
#[derive(Debug, Clone)]
pub struct NewWebhook {
    pub url: String,
    pub events: Vec<String>,
    pub filter: Filter,
    pub description: Option<String>,
}

/// Changes to an endpoint; what is `None` stays.
#[derive(Debug, Clone, Default)]
pub struct WebhookChange {
    pub url: Option<String>,
    pub events: Option<Vec<String>>,
    pub filter: Option<Filter>,
    pub description: Option<String>,
    pub enabled: Option<bool>,
}

/// Checks an endpoint URL as URL inputs are checked: http or https, with a host none of whose
/// addresses is internal unless `allow` covers it. Sending checks the addresses again.
pub async fn check_url(allow: &[Cidr], url: &str) -> Result<String> {
    let bad = |message: String| Error::bad_input("url", message);
    if url.len() > MAX_URL {
        return Err(bad(format!("must be at most {MAX_URL} characters")));
    }
    if url.chars().any(char::is_control) {
        return Err(bad("may not contain control characters".into()));
    }
    let parsed = fetch::check_url(url).map_err(|err| bad(format!("`{url}` {err}")))?;
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err(bad(
            "may not carry a user name or password: endpoints are authenticated by signatures"
                .into(),
        ));
    }
    let resolving = fetch::resolve_checked(allow, &parsed, "send webhooks to");
    match tokio::time::timeout(std::time::Duration::from_secs(5), resolving).await {
        Err(_) => Err(bad(format!(
            "the host of `{url}` could not be resolved in time"
        ))),
        Ok(Err(err)) => Err(bad(err)),
        Ok(Ok(_)) => Ok(parsed.to_string()),
    }
}

fn check_events(events: Vec<String>) -> Result<Vec<String>> {
    if events.is_empty() {
        return Err(Error::bad_input(
            "events",
            format!("name at least one of {}", events::TYPES.join(", ")),
        ));
    }
    let mut checked: Vec<String> = Vec::new();
    for event in events {
        if !events::TYPES.contains(&event.as_str()) {
            let shown: String = event.chars().take(64).collect();
            return Err(Error::bad_input(
                "events",
                format!(
                    "`{shown}` is not an event type; the types are {}",
                    events::TYPES.join(", ")
                ),
            ));
        }
        if !checked.contains(&event) {
            checked.push(event);
        }
    }
    Ok(checked)
}

fn check_filter(filter: Filter) -> Result<Filter> {
    if filter.tools.len() > MAX_FILTER_TOOLS {
        return Err(Error::bad_input(
            "filter.tools",
            format!("at most {MAX_FILTER_TOOLS} tools"),
        ));
    }
    if filter
        .tools
        .iter()
        .any(|tool| tool.is_empty() || tool.len() > 100 || tool.chars().any(char::is_control))
    {
        return Err(Error::bad_input(
            "filter.tools",
            "each tool name must be 1 to 100 characters, without control characters",
        ));
    }
    Ok(filter)
}

fn check_description(description: Option<String>) -> Result<String> {
    let description = description.unwrap_or_default().trim().to_owned();
    if description.chars().count() > MAX_DESCRIPTION
        || description.chars().any(|c| c.is_control() && c != '\n')
    {
        return Err(Error::bad_input(
            "description",
            format!("must be at most {MAX_DESCRIPTION} characters, without control characters"),
        ));
    }
    Ok(description)
}

/// The workspace, if the viewer may manage its webhooks: NOT_FOUND if they cannot read it,
/// FORBIDDEN if they can but may not manage them.
async fn manageable(
    db: &impl ConnectionTrait,
    viewer: &Viewer,
    workspace_id: WorkspaceId,
) -> Result<WorkspaceAccess> {
    let access = WorkspaceAccess::load(db, viewer, workspace_id).await?;
    access.check(WorkspaceAction::ManageWebhooks)?;
    Ok(access)
}

/// An endpoint the viewer may manage: NOT_FOUND for one that does not exist or whose
/// workspace they cannot read, FORBIDDEN for one they can see but may not manage.
pub async fn load(
    db: &impl ConnectionTrait,
    viewer: &Viewer,
    id: WebhookId,
) -> Result<webhook::Model> {
    let found = webhook::Entity::find_by_id(id)
        .one(db)
        .await?
        .ok_or(Error::NotFound("webhook"))?;
    match manageable(db, viewer, found.workspace_id).await {
        Err(Error::NotFound(_)) => Err(Error::NotFound("webhook")),
        other => other.map(|_| found),
    }
}

/// A page of the endpoints of a workspace the caller reads, oldest first; FORBIDDEN unless
/// they may manage them.
pub async fn list(
    db: &impl ConnectionTrait,
    workspace: WorkspaceRef,
    page: PageArgs,
) -> Result<Page<webhook::Model>> {
    workspace.standing.check(WorkspaceAction::ManageWebhooks)?;
    pagination::fetch(
        db,
        webhook::Entity::find().filter(webhook::Column::WorkspaceId.eq(workspace.id)),
        webhook::Column::Id,
        Order::Asc,
        page,
    )
    .await
}

/// Registers an endpoint; returns it and its secret, which is never shown again. It receives
/// the events committed from now on.
pub async fn create(
    db: &DatabaseConnection,
    viewer: &Viewer,
    allow: &[Cidr],
    workspace_id: WorkspaceId,
    new: NewWebhook,
) -> Result<(webhook::Model, String)> {
    manageable(db, viewer, workspace_id).await?;
    // The checks that read nothing first; the URL's resolves its host.
    let events = check_events(new.events)?;
    let filter = check_filter(new.filter)?;
    let description = check_description(new.description)?;
    let url = check_url(allow, &new.url).await?;
    let secret = signing::new_secret();
    let now = Utc::now();
    let tx = db::begin_write(db).await?;
    // Under the workspace's lock (`workspaces::hold`): the standing is read again, and two
    // registrations at once cannot both pass the count.
    crate::workspaces::hold(&tx, viewer, workspace_id, crate::workspaces::Hold::Change)
        .await?
        .check(WorkspaceAction::ManageWebhooks)?;
    let count = webhook::Entity::find_in_workspace(workspace_id)
        .count(&tx)
        .await?;
    if count >= MAX_PER_WORKSPACE {
        return Err(Error::conflict(format!(
            "this workspace has {count} webhooks, the most it may have"
        )));
    }
    let created = webhook::ActiveModel {
        id: Set(WebhookId::new()),
        workspace_id: Set(workspace_id),
        url: Set(url),
        description: Set(description),
        events: Set(serde_json::json!(events)),
        filter: Set(serde_json::to_value(&filter).map_err(anyhow::Error::from)?),
        secret: Set(webhook::SigningSecret(secret.clone())),
        previous_secret: Set(None),
        previous_secret_until: Set(None),
        enabled: Set(true),
        disabled_reason: Set(None),
        disabled_at: Set(None),
        failure_count: Set(0),
        live_cursor: Set(crate::live::last_committed(&tx).await?),
        created_by: Set(viewer.user_id()),
        created_at: Set(now),
        updated_at: Set(now),
    }
    .insert(&tx)
    .await?;
    tx.commit().await?;
    Ok((created, secret))
}

/// Changes an endpoint. Enabling a disabled one clears why it was disabled; it receives the
/// events committed from then on, and its pending deliveries are sent again.
pub async fn update(
    db: &DatabaseConnection,
    viewer: &Viewer,
    allow: &[Cidr],
    id: WebhookId,
    change: WebhookChange,
) -> Result<webhook::Model> {
    load(db, viewer, id).await?;
    let events = change.events.map(check_events).transpose()?;
    let filter = change.filter.map(check_filter).transpose()?;
    let description = match change.description {
        Some(description) => Some(check_description(Some(description))?),
        None => None,
    };
    let url = match &change.url {
        Some(url) => Some(check_url(allow, url).await?),
        None => None,
    };
    let tx = db::begin_write(db).await?;
    let current = load(&tx, viewer, id).await?;
    let was_enabled = current.enabled;
    let mut active = current.into_active_model();
    if let Some(url) = url {
        active.url = Set(url);
    }
    if let Some(events) = events {
        active.events = Set(serde_json::json!(events));
    }
    if let Some(filter) = filter {
        active.filter = Set(serde_json::to_value(&filter).map_err(anyhow::Error::from)?);
    }
    if let Some(description) = description {
        active.description = Set(description);
    }
    match change.enabled {
        Some(true) if !was_enabled => {
            active.enabled = Set(true);
            active.disabled_reason = Set(None);
            active.disabled_at = Set(None);
            active.failure_count = Set(0);
            active.live_cursor = Set(crate::live::last_committed(&tx).await?);
        }
        Some(false) if was_enabled => {
            active.enabled = Set(false);
            active.disabled_reason = Set(Some("disabled by a user".into()));
            active.disabled_at = Set(Some(Utc::now()));
        }
        _ => {}
    }
    active.updated_at = Set(Utc::now());
    let updated = active.update(&tx).await?;
    tx.commit().await?;
    Ok(updated)
}

/// Removes an endpoint and its deliveries.
pub async fn delete(db: &DatabaseConnection, viewer: &Viewer, id: WebhookId) -> Result<()> {
    let tx = db::begin_write(db).await?;
    load(&tx, viewer, id).await?;
    webhook::Entity::delete_by_id(id).exec(&tx).await?;
    tx.commit().await?;
    Ok(())
}

/// How long a secret keeps signing after a rotation, beside the new one.
pub const ROTATION_GRACE: chrono::Duration = chrono::Duration::hours(24);

/// Gives an endpoint a new secret, returned once. The old one keeps signing beside it for
/// [`ROTATION_GRACE`], so that a receiver that still checks with it accepts every delivery.
pub async fn rotate_secret(
    db: &DatabaseConnection,
    viewer: &Viewer,
    id: WebhookId,
) -> Result<(webhook::Model, String)> {
    let tx = db::begin_write(db).await?;
    let endpoint = load(&tx, viewer, id).await?;
    let now = Utc::now();
    let previous = endpoint.secret.clone();
    let mut active = endpoint.into_active_model();
    let secret = signing::new_secret();
    active.secret = Set(webhook::SigningSecret(secret.clone()));
    active.previous_secret = Set(Some(previous));
    active.previous_secret_until = Set(Some(now + ROTATION_GRACE));
    active.updated_at = Set(now);
    let updated = active.update(&tx).await?;
    tx.commit().await?;
    Ok((updated, secret))
}

/// Queues a `webhook.test` event for an endpoint, sent as any delivery is (once the endpoint
/// is enabled again, if it is disabled).
pub async fn send_test(
    db: &DatabaseConnection,
    viewer: &Viewer,
    id: WebhookId,
) -> Result<webhook_delivery::Model> {
    let tx = db::begin_write(db).await?;
    let found = load(&tx, viewer, id).await?;
    let event = events::test_event(found.workspace_id, crate::ids::encode(id).0.into());
    let delivery = delivery::insert(&tx, found.id, &event).await?;
    tx.commit().await?;
    delivery::wake();
    delivery.ok_or_else(|| Error::Internal(anyhow::anyhow!("a fresh test event id was taken")))
}

/// Queues a delivery again, with its event id and body, for a new round of the retry schedule.
pub async fn redeliver(
    db: &DatabaseConnection,
    viewer: &Viewer,
    id: DeliveryId,
) -> Result<webhook_delivery::Model> {
    let tx = db::begin_write(db).await?;
    let found = readable_delivery(&tx, viewer, id).await?;
    let now = Utc::now();
    let mut active = found.into_active_model();
    active.status = Set(DeliveryStatus::Pending);
    active.failures = Set(0);
    active.next_attempt_at = Set(Some(now));
    active.updated_at = Set(now);
    let queued = active.update(&tx).await?;
    tx.commit().await?;
    delivery::wake();
    Ok(queued)
}

/// A delivery of an endpoint the viewer may manage; NOT_FOUND otherwise, like a missing one.
pub async fn readable_delivery(
    db: &impl ConnectionTrait,
    viewer: &Viewer,
    id: DeliveryId,
) -> Result<webhook_delivery::Model> {
    let found = webhook_delivery::Entity::find_by_id(id)
        .one(db)
        .await?
        .ok_or(Error::NotFound("webhook delivery"))?;
    match load(db, viewer, found.webhook_id).await {
        Err(Error::NotFound(_)) => Err(Error::NotFound("webhook delivery")),
        other => other.map(|_| found),
    }
}

/// An endpoint's deliveries, newest first.
pub async fn deliveries(
    db: &impl ConnectionTrait,
    webhook_id: WebhookId,
    page: PageArgs,
) -> Result<Page<webhook_delivery::Model>> {
    pagination::fetch(
        db,
        webhook_delivery::Entity::find().filter(webhook_delivery::Column::WebhookId.eq(webhook_id)),
        webhook_delivery::Column::Id,
        Order::Desc,
        page,
    )
    .await
}

/// A delivery's attempts, first first.
pub async fn attempts(
    db: &impl ConnectionTrait,
    delivery_id: DeliveryId,
) -> Result<Vec<webhook_attempt::Model>> {
    Ok(webhook_attempt::Entity::find()
        .filter(webhook_attempt::Column::DeliveryId.eq(delivery_id))
        .order_by_asc(webhook_attempt::Column::Attempt)
        .all(db)
        .await?)
}

/// The filter an endpoint stores.
pub fn filter_of(found: &webhook::Model) -> Filter {
    serde_json::from_value(found.filter.clone()).unwrap_or_default()
}

/// The event types an endpoint stores.
pub fn events_of(found: &webhook::Model) -> Vec<String> {
    serde_json::from_value(found.events.clone()).unwrap_or_default()
}
