//! GraphQL for webhooks: endpoints, their secrets (shown once), and their delivery logs.

use async_graphql::connection::Connection;
use entity::ids::{DeliveryId, UserId, WebhookId, WorkspaceId};

use async_graphql::{Context, Enum, ID, InputObject, Object, SimpleObject};
use chrono::{DateTime, Utc};
use entity::job::JobStatus;
use entity::webhook;
use entity::webhook_attempt;
use entity::webhook_delivery::{self, DeliveryStatus};

use super::jobs::JobStatusView;
use super::workspaces::WorkspaceView;
use super::{db, page_complexity, viewer};
use crate::access::WorkspaceAccess;
use crate::error::ApiResult;
use crate::ids;
use crate::jobs::state;
use crate::pagination::PageArgs;
use crate::webhooks::{self as service, Filter, NewWebhook, WebhookChange};

const STATUSES: [JobStatus; 8] = [
    JobStatus::Pending,
    JobStatus::Queued,
    JobStatus::Processing,
    JobStatus::Completed,
    JobStatus::Failed,
    JobStatus::Timeout,
    JobStatus::Cancelled,
    JobStatus::Retry,
];

/// An endpoint that receives a workspace's events, signed with its secret.
pub struct WebhookView(pub webhook::Model);

#[Object(name = "Webhook")]
impl WebhookView {
    pub async fn id(&self) -> ID {
        ids::encode(self.0.id)
    }

    async fn workspace(&self, ctx: &Context<'_>) -> ApiResult<WorkspaceView> {
        Ok(
            WorkspaceAccess::load(db(ctx), viewer(ctx), self.0.workspace_id)
                .await?
                .into(),
        )
    }

    async fn url(&self) -> &str {
        &self.0.url
    }

    async fn description(&self) -> &str {
        &self.0.description
    }

    /// The event types sent (`job.completed`...).
    async fn events(&self) -> Vec<String> {
        service::events_of(&self.0)
    }

    /// Which jobs' events are sent.
    async fn filter(&self) -> WebhookFilter {
        let filter = service::filter_of(&self.0);
        WebhookFilter {
            tools: filter.tools,
            statuses: filter
                .statuses
                .iter()
                .filter_map(|name| STATUSES.into_iter().find(|s| state::name(*s) == name))
                .map(Into::into)
                .collect(),
            submitter_id: filter.submitter_id.map(ids::encode),
        }
    }

    /// False when a user disabled it, or when a delivery failed every retry.
    async fn enabled(&self) -> bool {
        self.0.enabled
    }

    async fn disabled_reason(&self) -> Option<&str> {
        self.0.disabled_reason.as_deref()
    }

    async fn disabled_at(&self) -> Option<DateTime<Utc>> {
        self.0.disabled_at
    }

    /// Failed attempts since the last delivered one.
    /// Until when the secret before the last rotation still signs deliveries, beside the
    /// current one (24 hours after `rotateWebhookSecret`); null when it no longer does.
    async fn previous_secret_expires_at(&self) -> Option<DateTime<Utc>> {
        self.0
            .previous_secret_until
            .filter(|until| *until > Utc::now())
    }

    async fn failure_count(&self) -> i32 {
        self.0.failure_count
    }

    async fn created_at(&self) -> DateTime<Utc> {
        self.0.created_at
    }

    async fn updated_at(&self) -> DateTime<Utc> {
        self.0.updated_at
    }

    /// The delivery log: one delivery per event, newest first, each with its attempts.
    #[graphql(complexity = "page_complexity(first, child_complexity)")]
    async fn deliveries(
        &self,
        ctx: &Context<'_>,
        first: Option<i32>,
        after: Option<String>,
    ) -> ApiResult<Connection<String, WebhookDeliveryView>> {
        let page = PageArgs::new(first, after)?;
        let page = service::deliveries(db(ctx), self.0.id, page).await?;
        Ok(page.into_connection(|d| d.id, WebhookDeliveryView))
    }
}

/// Which jobs' events an endpoint receives; an empty list lets every value through.
#[derive(SimpleObject)]
struct WebhookFilter {
    tools: Vec<String>,
    statuses: Vec<JobStatusView>,
    submitter_id: Option<ID>,
}

/// Where a delivery stands.
#[derive(Enum, Clone, Copy, PartialEq, Eq)]
#[graphql(name = "WebhookDeliveryStatus")]
enum DeliveryStatusView {
    /// To be sent at `nextAttemptAt`.
    Pending,
    /// The endpoint answered 2xx.
    Delivered,
    /// Every retry failed; `redeliverWebhookDelivery` sends it again.
    Failed,
}

/// One event for one endpoint.
pub struct WebhookDeliveryView(pub webhook_delivery::Model);

#[Object(name = "WebhookDelivery")]
impl WebhookDeliveryView {
    pub async fn id(&self) -> ID {
        ids::encode(self.0.id)
    }

    /// The `webhook-id` header: the same on every attempt and redelivery.
    async fn event_id(&self) -> &str {
        &self.0.event_id
    }

    async fn event_type(&self) -> &str {
        &self.0.event_type
    }

    /// The JSON body sent.
    async fn payload(&self) -> &str {
        &self.0.payload
    }

    async fn status(&self) -> DeliveryStatusView {
        match self.0.status {
            DeliveryStatus::Pending => DeliveryStatusView::Pending,
            DeliveryStatus::Delivered => DeliveryStatusView::Delivered,
            DeliveryStatus::Failed => DeliveryStatusView::Failed,
        }
    }

    /// Attempts made so far.
    async fn attempt(&self) -> i32 {
        self.0.attempts
    }

    /// The status the endpoint answered last; null if it did not answer.
    async fn status_code(&self) -> Option<i32> {
        self.0.last_status_code
    }

    async fn duration_ms(&self) -> Option<i64> {
        self.0.last_duration_ms
    }

    async fn error(&self) -> Option<&str> {
        self.0.last_error.as_deref()
    }

    async fn created_at(&self) -> DateTime<Utc> {
        self.0.created_at
    }

    async fn updated_at(&self) -> DateTime<Utc> {
        self.0.updated_at
    }

    async fn delivered_at(&self) -> Option<DateTime<Utc>> {
        self.0.delivered_at
    }

    /// When it is next tried, while PENDING.
    async fn next_attempt_at(&self) -> Option<DateTime<Utc>> {
        match self.0.status {
            DeliveryStatus::Pending => self.0.next_attempt_at,
            _ => None,
        }
    }

    /// Every attempt, first first.
    async fn attempts(&self, ctx: &Context<'_>) -> ApiResult<Vec<WebhookAttemptView>> {
        Ok(service::attempts(db(ctx), self.0.id)
            .await?
            .into_iter()
            .map(WebhookAttemptView)
            .collect())
    }
}

/// One attempt of a delivery.
pub struct WebhookAttemptView(webhook_attempt::Model);

#[Object(name = "WebhookAttempt")]
impl WebhookAttemptView {
    /// 1 for the first.
    async fn attempt(&self) -> i32 {
        self.0.attempt
    }

    async fn status_code(&self) -> Option<i32> {
        self.0.status_code
    }

    async fn duration_ms(&self) -> i64 {
        self.0.duration_ms
    }

    async fn error(&self) -> Option<&str> {
        self.0.error.as_deref()
    }

    async fn created_at(&self) -> DateTime<Utc> {
        self.0.created_at
    }
}

#[derive(InputObject)]
struct WebhookFilterInput {
    /// Any of these tools.
    tools: Option<Vec<String>>,
    /// Jobs in any of these statuses (the status the event tells).
    statuses: Option<Vec<JobStatusView>>,
    /// Only the jobs this user submitted.
    submitter_id: Option<ID>,
}

impl WebhookFilterInput {
    fn into_filter(self) -> ApiResult<Filter> {
        Ok(Filter {
            tools: self.tools.unwrap_or_default(),
            statuses: self
                .statuses
                .unwrap_or_default()
                .into_iter()
                .map(|s| state::name(s.into()).to_owned())
                .collect(),
            submitter_id: self
                .submitter_id
                .map(|id| ids::decode::<UserId>("filter.submitterId", &id))
                .transpose()?,
        })
    }
}

#[derive(InputObject)]
struct CreateWebhookInput {
    workspace_id: ID,
    /// An http or https URL outside the server's own network.
    url: String,
    /// Event types to send, at least one (see the README's list).
    events: Vec<String>,
    filter: Option<WebhookFilterInput>,
    description: Option<String>,
}

#[derive(InputObject)]
struct UpdateWebhookInput {
    id: ID,
    url: Option<String>,
    events: Option<Vec<String>>,
    filter: Option<WebhookFilterInput>,
    description: Option<String>,
    /// Enabling a disabled endpoint clears why it was disabled; it then receives the events
    /// committed from then on, and its pending deliveries.
    enabled: Option<bool>,
}

#[derive(InputObject)]
struct WebhookInput {
    id: ID,
}

#[derive(InputObject)]
struct RedeliverWebhookDeliveryInput {
    delivery_id: ID,
}

#[derive(SimpleObject)]
struct WebhookSecretPayload {
    webhook: WebhookView,
    /// `whsec_...`: the signing secret, shown this once.
    secret: String,
}

#[derive(SimpleObject)]
struct WebhookPayload {
    webhook: WebhookView,
}

#[derive(SimpleObject)]
struct DeleteWebhookPayload {
    deleted_id: ID,
}

#[derive(SimpleObject)]
struct WebhookDeliveryPayload {
    delivery: WebhookDeliveryView,
}

fn allow<'a>(ctx: &Context<'a>) -> &'a [crate::files::fetch::Cidr] {
    &super::files(ctx).fetch.allow
}

#[derive(Default)]
pub struct WebhooksMutation;

#[Object]
impl WebhooksMutation {
    /// Registers an endpoint for a workspace's events (OWNER or ADMIN); returns its signing
    /// secret, which is never shown again.
    async fn create_webhook(
        &self,
        ctx: &Context<'_>,
        input: CreateWebhookInput,
    ) -> ApiResult<WebhookSecretPayload> {
        let workspace_id = ids::decode::<WorkspaceId>("workspaceId", &input.workspace_id)?;
        let new = NewWebhook {
            url: input.url,
            events: input.events,
            filter: match input.filter {
                Some(filter) => filter.into_filter()?,
                None => Filter::default(),
            },
            description: input.description,
        };
        let (webhook, secret) =
            service::create(db(ctx), viewer(ctx), allow(ctx), workspace_id, new).await?;
        Ok(WebhookSecretPayload {
            webhook: WebhookView(webhook),
            secret,
        })
    }

    /// Changes an endpoint's URL, events, filter or description, or enables or disables it.
    async fn update_webhook(
        &self,
        ctx: &Context<'_>,
        input: UpdateWebhookInput,
    ) -> ApiResult<WebhookPayload> {
        let id = ids::decode::<WebhookId>("id", &input.id)?;
        let change = WebhookChange {
            url: input.url,
            events: input.events,
            filter: input
                .filter
                .map(WebhookFilterInput::into_filter)
                .transpose()?,
            description: input.description,
            enabled: input.enabled,
        };
        let webhook = service::update(db(ctx), viewer(ctx), allow(ctx), id, change).await?;
        Ok(WebhookPayload {
            webhook: WebhookView(webhook),
        })
    }

    /// Removes an endpoint and its delivery log.
    async fn delete_webhook(
        &self,
        ctx: &Context<'_>,
        input: WebhookInput,
    ) -> ApiResult<DeleteWebhookPayload> {
        let id = ids::decode::<WebhookId>("id", &input.id)?;
        service::delete(db(ctx), viewer(ctx), id).await?;
        Ok(DeleteWebhookPayload {
            deleted_id: input.id,
        })
    }

    /// Gives an endpoint a new signing secret, returned this once.
    async fn rotate_webhook_secret(
        &self,
        ctx: &Context<'_>,
        input: WebhookInput,
    ) -> ApiResult<WebhookSecretPayload> {
        let id = ids::decode::<WebhookId>("id", &input.id)?;
        let (webhook, secret) = service::rotate_secret(db(ctx), viewer(ctx), id).await?;
        Ok(WebhookSecretPayload {
            webhook: WebhookView(webhook),
            secret,
        })
    }

    /// Queues a `webhook.test` event for an endpoint.
    async fn send_test_event(
        &self,
        ctx: &Context<'_>,
        input: WebhookInput,
    ) -> ApiResult<WebhookDeliveryPayload> {
        let id = ids::decode::<WebhookId>("id", &input.id)?;
        let delivery = service::send_test(db(ctx), viewer(ctx), id).await?;
        Ok(WebhookDeliveryPayload {
            delivery: WebhookDeliveryView(delivery),
        })
    }

    /// Sends a delivery again, with the same `webhook-id` and body, for a new round of
    /// retries.
    async fn redeliver_webhook_delivery(
        &self,
        ctx: &Context<'_>,
        input: RedeliverWebhookDeliveryInput,
    ) -> ApiResult<WebhookDeliveryPayload> {
        let id = ids::decode::<DeliveryId>("deliveryId", &input.delivery_id)?;
        let delivery = service::redeliver(db(ctx), viewer(ctx), id).await?;
        Ok(WebhookDeliveryPayload {
            delivery: WebhookDeliveryView(delivery),
        })
    }
}
