//! Batch loaders: a page of objects resolves its related users in one query.

use std::collections::HashMap;
use std::sync::Arc;

use async_graphql::dataloader::Loader;
use entity::{membership, user, workspace};
use sea_orm::{ColumnTrait, DatabaseConnection, DbErr, EntityTrait, QueryFilter};

use crate::access::{Standing, Viewer, WorkspaceAccess};
use uuid::Uuid;

/// Loads users by id.
pub struct UserLoader {
    db: DatabaseConnection,
}

impl UserLoader {
    pub fn new(db: DatabaseConnection) -> Self {
        UserLoader { db }
    }
}

impl Loader<Uuid> for UserLoader {
    type Value = user::Model;
    type Error = Arc<DbErr>;

    async fn load(&self, keys: &[Uuid]) -> Result<HashMap<Uuid, user::Model>, Self::Error> {
        let users = user::Entity::find()
            .filter(user::Column::Id.is_in(keys.iter().copied()))
            .all(&self.db)
            .await
            .map_err(Arc::new)?;
        Ok(users.into_iter().map(|user| (user.id, user)).collect())
    }
}

/// Loads the workspaces one viewer can read, with the viewer's standing in each.
pub struct WorkspaceAccessLoader {
    db: DatabaseConnection,
    viewer: Viewer,
}

impl WorkspaceAccessLoader {
    pub fn new(db: DatabaseConnection, viewer: Viewer) -> Self {
        WorkspaceAccessLoader { db, viewer }
    }
}

impl Loader<Uuid> for WorkspaceAccessLoader {
    type Value = WorkspaceAccess;
    type Error = Arc<DbErr>;

    async fn load(&self, keys: &[Uuid]) -> Result<HashMap<Uuid, WorkspaceAccess>, Self::Error> {
        let roles: HashMap<Uuid, membership::Model> = match self.viewer.user_id() {
            Some(user_id) => membership::Entity::find()
                .filter(membership::Column::UserId.eq(user_id))
                .filter(membership::Column::WorkspaceId.is_in(keys.iter().copied()))
                .all(&self.db)
                .await
                .map_err(Arc::new)?
                .into_iter()
                .map(|m| (m.workspace_id, m))
                .collect(),
            None => HashMap::new(),
        };
        let platform_admin = self.viewer.is_platform_admin();
        let readable: Vec<Uuid> = keys
            .iter()
            .copied()
            .filter(|id| platform_admin || roles.contains_key(id))
            .collect();
        let workspaces = workspace::Entity::find()
            .filter(workspace::Column::Id.is_in(readable))
            .all(&self.db)
            .await
            .map_err(Arc::new)?;
        Ok(workspaces
            .into_iter()
            .map(|workspace| {
                let standing = Standing {
                    role: roles.get(&workspace.id).map(|m| m.role),
                    platform_admin,
                };
                (
                    workspace.id,
                    WorkspaceAccess {
                        workspace,
                        standing,
                    },
                )
            })
            .collect())
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
