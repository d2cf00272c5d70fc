//! The register of workers: each worker pool and remote worker says, every few seconds, which
//! tools it runs. A QUEUED job whose tool no recently heard worker runs is waiting for nobody,
//! and says so.

use chrono::{DateTime, Utc};
use entity::ids::UserId;
use entity::worker;
use sea_orm::sea_query::OnConflict;
use sea_orm::{ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, Set};

use crate::error::Result;

/// How long a worker counts as present after it was last heard from.
pub const PRESENT_FOR: chrono::Duration = chrono::Duration::seconds(60);

/// A worker as it announces itself.
#[derive(Debug, Clone)]
pub struct Announcement<'a> {
    pub name: &'a str,
    /// `local` or `remote`.
    pub kind: &'a str,
    pub tools: &'a [String],
    pub capacity: usize,
    /// The per-workspace limit its claims keep, if any: recorded so that every process sees
    /// it.
    pub workspace_max_running: Option<u32>,
    pub user_id: Option<UserId>,
}

/// Records that a worker is present, with what it runs.
pub async fn seen(db: &impl ConnectionTrait, worker: Announcement<'_>) -> Result<()> {
    let now = Utc::now();
    let row = worker::ActiveModel {
        name: Set(worker.name.to_owned()),
        kind: Set(worker.kind.to_owned()),
        tools: Set(serde_json::json!(worker.tools)),
        capacity: Set(i32::try_from(worker.capacity).unwrap_or(i32::MAX)),
        workspace_max_running: Set(worker
            .workspace_max_running
            .map(|n| i32::try_from(n).unwrap_or(i32::MAX))),
        user_id: Set(worker.user_id),
        started_at: Set(now),
        seen_at: Set(now),
    };
    worker::Entity::insert(row)
        .on_conflict(
            OnConflict::column(worker::Column::Name)
                .update_columns([
                    worker::Column::Tools,
                    worker::Column::Capacity,
                    worker::Column::WorkspaceMaxRunning,
                    worker::Column::SeenAt,
                ])
                .to_owned(),
        )
        .exec_without_returning(db)
        .await?;
    Ok(())
}

/// Removes a worker that stops.
pub async fn gone(db: &impl ConnectionTrait, name: &str) -> Result<()> {
    worker::Entity::delete_by_id(name.to_owned())
        .exec(db)
        .await?;
    Ok(())
}

/// Forgets workers not heard from for a long time (a day): they are gone without saying so.
pub async fn forget_silent(db: &impl ConnectionTrait, now: DateTime<Utc>) -> Result<()> {
    worker::Entity::delete_many()
        .filter(worker::Column::SeenAt.lt(now - chrono::Duration::days(1)))
        .exec(db)
        .await?;
    Ok(())
}

/// The workers present now.
pub async fn present(db: &impl ConnectionTrait, now: DateTime<Utc>) -> Result<Vec<worker::Model>> {
    Ok(worker::Entity::find()
        .filter(worker::Column::SeenAt.gte(now - PRESENT_FOR))
        .all(db)
        .await?)
}
