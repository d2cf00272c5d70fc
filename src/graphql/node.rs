//! The `Node` interface and `node(id)`: any object by its global id.

use async_graphql::{Context, ID, Interface, Object};
use entity::ids::{
    BatchId, DeliveryId, FileId, JobId, MembershipId, TokenId, TransactionId, UserId, WebhookId,
    WorkspaceId,
};

use super::credits::CreditTransactionView;
use super::files::FileView;
use super::jobs::{BatchView, JobView};
use super::users::{ApiTokenView, UserView};
use super::webhooks::{WebhookDeliveryView, WebhookView};
use super::workspaces::{MembershipView, WorkspaceView};
use super::{db, viewer};
use crate::access::{self, JobAccess, WorkspaceAccess};
use crate::error::ApiResult;
use crate::ids::{self, Kind};

/// An object with a global id.
#[derive(Interface)]
#[graphql(field(name = "id", ty = "ID"))]
pub enum Node {
    User(UserView),
    Workspace(WorkspaceView),
    Membership(MembershipView),
    ApiToken(ApiTokenView),
    CreditTransaction(CreditTransactionView),
    Job(Box<JobView>),
    Batch(Box<BatchView>),
    File(FileView),
    Webhook(WebhookView),
    WebhookDelivery(WebhookDeliveryView),
    Workflow(Box<super::workflows::WorkflowView>),
}

#[derive(Default)]
pub struct NodeQuery;

#[Object]
impl NodeQuery {
    /// Any object the viewer can see, by its global id; NOT_FOUND otherwise.
    async fn node(&self, ctx: &Context<'_>, id: ID) -> ApiResult<Node> {
        let (kind, uuid) = ids::decode_any("id", &id)?;
        let db = db(ctx);
        let viewer = viewer(ctx);
        let node = match kind {
            Kind::Workspace => Node::Workspace(
                WorkspaceAccess::load(db, viewer, WorkspaceId(uuid))
                    .await?
                    .into(),
            ),
            Kind::User => Node::User(
                access::readable_user(db, viewer, UserId(uuid))
                    .await?
                    .into(),
            ),
            Kind::Membership => {
                let (found, standing) =
                    access::readable_membership(db, viewer, MembershipId(uuid)).await?;
                Node::Membership(MembershipView(found, standing))
            }
            Kind::CreditTransaction => Node::CreditTransaction(CreditTransactionView(
                access::readable_credit_transaction(db, viewer, TransactionId(uuid)).await?,
            )),
            Kind::ApiToken => Node::ApiToken(ApiTokenView(
                access::readable_token(db, viewer, TokenId(uuid)).await?,
            )),
            Kind::Job => Node::Job(Box::new(JobView::from_access(
                JobAccess::load(db, viewer, JobId(uuid)).await?,
            ))),
            Kind::Batch => {
                let (summary, access) =
                    crate::jobs::history::batch(db, viewer, BatchId(uuid)).await?;
                Node::Batch(Box::new(BatchView(summary, access)))
            }
            Kind::File => Node::File(FileView(
                access::readable_file(db, viewer, FileId(uuid)).await?,
            )),
            Kind::Webhook => Node::Webhook(WebhookView(
                crate::webhooks::load(db, viewer, WebhookId(uuid)).await?,
            )),
            Kind::WebhookDelivery => Node::WebhookDelivery(WebhookDeliveryView(
                crate::webhooks::readable_delivery(db, viewer, DeliveryId(uuid)).await?,
            )),
            Kind::Workflow => Node::Workflow(Box::new(
                crate::access::WorkflowAccess::load(db, viewer, entity::ids::WorkflowId(uuid))
                    .await?
                    .into(),
            )),
        };
        Ok(node)
    }
}
