//! The `Node` interface and `node(id)`: any object by its global id.

use async_graphql::{Context, ID, Interface, Object};
use entity::{api_token, credit_transaction, membership};
use sea_orm::EntityTrait;

use super::credits::CreditTransactionView;
use super::files::FileView;
use super::jobs::{BatchView, JobView};
use super::users::{ApiTokenView, UserView};
use super::workspaces::{MembershipView, WorkspaceView};
use super::{db, viewer};
use crate::access::{self, JobAccess, WorkspaceAccess};
use crate::error::{ApiResult, Error};
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
            Kind::Workspace => Node::Workspace(WorkspaceView(
                WorkspaceAccess::load(db, viewer, uuid).await?,
            )),
            Kind::User => Node::User(UserView(
                crate::users::find_visible(db, viewer, uuid).await?,
            )),
            Kind::Membership => {
                let found = membership::Entity::find_by_id(uuid)
                    .one(db)
                    .await?
                    .ok_or(Error::NotFound("membership"))?;
                let access = WorkspaceAccess::load(db, viewer, found.workspace_id)
                    .await
                    .map_err(|_| Error::NotFound("membership"))?;
                Node::Membership(MembershipView(found, access.standing))
            }
            Kind::CreditTransaction => {
                let found = credit_transaction::Entity::find_by_id(uuid)
                    .one(db)
                    .await?
                    .ok_or(Error::NotFound("credit transaction"))?;
                WorkspaceAccess::load(db, viewer, found.workspace_id)
                    .await
                    .map_err(|_| Error::NotFound("credit transaction"))?;
                Node::CreditTransaction(CreditTransactionView(found))
            }
            Kind::ApiToken => {
                let found = api_token::Entity::find_by_id(uuid)
                    .one(db)
                    .await?
                    .filter(|token| {
                        Some(token.user_id) == viewer.user_id() || access::can_manage_users(viewer)
                    })
                    .ok_or(Error::NotFound("API token"))?;
                Node::ApiToken(ApiTokenView(found))
            }
            Kind::Job => Node::Job(Box::new(JobView::from_access(
                JobAccess::load(db, viewer, uuid).await?,
            ))),
            Kind::Batch => {
                let (summary, access) = crate::jobs::history::batch(db, viewer, uuid).await?;
                Node::Batch(Box::new(BatchView(summary, access)))
            }
            Kind::File => Node::File(FileView(access::readable_file(db, viewer, uuid).await?)),
        };
        Ok(node)
    }
}
