//! GraphQL for stored files: a job's inputs and outputs, with their download links.

use entity::ids::JobId;
use std::sync::Arc;

use async_graphql::{Context, Enum, ID, Object};
use chrono::{DateTime, Utc};
use entity::file::{self, FileRole};
use sea_orm::{ColumnTrait, QueryFilter, QueryOrder};

use super::db;
use crate::config::ServerConfig;
use crate::error::ApiResult;
use crate::ids::{self};

/// Whether a file is a job's input or an output of its run.
#[derive(Enum, Clone, Copy, PartialEq, Eq)]
#[graphql(name = "FileRole")]
pub enum FileRoleView {
    Input,
    Output,
}

impl From<FileRoleView> for FileRole {
    fn from(value: FileRoleView) -> Self {
        match value {
            FileRoleView::Input => FileRole::Input,
            FileRoleView::Output => FileRole::Output,
        }
    }
}

/// A stored file.
pub struct FileView(pub file::Model);

#[Object(name = "File")]
impl FileView {
    pub async fn id(&self) -> ID {
        ids::encode(self.0.id)
    }
    async fn name(&self) -> &str {
        &self.0.name
    }
    /// In bytes.
    async fn size(&self) -> super::scalars::ByteCount {
        self.0.size.into()
    }
    async fn content_type(&self) -> &str {
        &self.0.content_type
    }
    /// The SHA-256 digest of the content, in hex.
    async fn sha256(&self) -> &str {
        &self.0.sha256
    }
    async fn role(&self) -> FileRoleView {
        match self.0.role {
            FileRole::Input => FileRoleView::Input,
            FileRole::Output => FileRoleView::Output,
        }
    }
    /// Where to download it, under the same access rules as its job.
    async fn download_url(&self, ctx: &Context<'_>) -> String {
        let config = ctx.data_unchecked::<Arc<ServerConfig>>();
        format!(
            "{}/files/{}",
            config.public_url(),
            ids::encode(self.0.id).as_str()
        )
    }
    async fn created_at(&self) -> DateTime<Utc> {
        self.0.created_at
    }
}

/// The files of a job the caller may already read, oldest first.
pub async fn job_files(
    ctx: &Context<'_>,
    job_id: JobId,
    role: Option<FileRoleView>,
) -> ApiResult<Vec<FileView>> {
    let mut query = file::Entity::find_of_job(job_id).order_by_asc(file::Column::Id);
    if let Some(role) = role {
        query = query.filter(file::Column::Role.eq(FileRole::from(role)));
    }
    Ok(query
        .all(db(ctx))
        .await?
        .into_iter()
        .map(FileView)
        .collect())
}
