//! Batch loaders: a page of objects resolves its related users in one query.

use entity::ids::{UserId, WorkspaceId};
use std::collections::HashMap;
use std::sync::Arc;

use async_graphql::dataloader::Loader;
use entity::user;
use sea_orm::{ColumnTrait, DatabaseConnection, DbErr, EntityTrait, QueryFilter};

use crate::access::{Viewer, WorkspaceAccess};

/// Loads users by id.
pub struct UserLoader {
    db: DatabaseConnection,
}

impl UserLoader {
    pub fn new(db: DatabaseConnection) -> Self {
        UserLoader { db }
    }
}

impl Loader<UserId> for UserLoader {
    type Value = Arc<user::Model>;
    type Error = Arc<DbErr>;

    async fn load(
        &self,
        keys: &[UserId],
    ) -> Result<HashMap<UserId, Arc<user::Model>>, Self::Error> {
        let users = user::Entity::find()
            .filter(user::Column::Id.is_in(keys.iter().copied()))
            .all(&self.db)
            .await
            .map_err(Arc::new)?;
        Ok(users
            .into_iter()
            .map(|user| (user.id, Arc::new(user)))
            .collect())
    }
}

/// Loads the workspaces one viewer can read, with the viewer's standing in each
/// ([`WorkspaceAccess::load_many`]).
pub struct WorkspaceAccessLoader {
    db: DatabaseConnection,
    viewer: Viewer,
}

impl WorkspaceAccessLoader {
    pub fn new(db: DatabaseConnection, viewer: Viewer) -> Self {
        WorkspaceAccessLoader { db, viewer }
    }
}

impl Loader<WorkspaceId> for WorkspaceAccessLoader {
    type Value = WorkspaceAccess;
    type Error = Arc<crate::error::Error>;

    async fn load(
        &self,
        keys: &[WorkspaceId],
    ) -> Result<HashMap<WorkspaceId, WorkspaceAccess>, Self::Error> {
        WorkspaceAccess::load_many(&self.db, &self.viewer, keys)
            .await
            .map_err(Arc::new)
    }
}

/// Loads where waiting jobs stand, a page at a time.
pub struct WaitLoader {
    queue: Arc<crate::queue::waiting::Queue>,
}

impl WaitLoader {
    pub fn new(queue: Arc<crate::queue::waiting::Queue>) -> Self {
        WaitLoader { queue }
    }
}

impl Loader<crate::queue::waiting::Waiter> for WaitLoader {
    type Value = crate::queue::waiting::Wait;
    type Error = Arc<crate::error::Error>;

    async fn load(
        &self,
        keys: &[crate::queue::waiting::Waiter],
    ) -> Result<HashMap<crate::queue::waiting::Waiter, Self::Value>, Self::Error> {
        let mut answers = self.queue.explain(keys).await.map_err(Arc::new)?;
        Ok(keys
            .iter()
            .map(|key| (key.clone(), answers.remove(&key.id).unwrap_or_default()))
            .collect())
    }
}
