//! A worker: a pool of jobgraph workers in one process, or a remote worker using the worker
//! API, with the tools it runs and when it was last heard from.

use sea_orm::entity::prelude::*;

use crate::ids::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "workers")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub name: String,
    /// `local` or `remote`.
    pub kind: String,
    /// The names of the tools it runs, as a JSON array.
    pub tools: Json,
    /// Jobs it runs at once.
    pub capacity: i32,
    /// Jobs of one workspace it lets run at once, across every worker, when it has a limit.
    pub workspace_max_running: Option<i32>,
    /// For a remote worker, the user whose worker token it uses.
    pub user_id: Option<UserId>,
    pub started_at: DateTimeUtc,
    pub seen_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
