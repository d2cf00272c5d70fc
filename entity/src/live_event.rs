//! One entry of the live event log: a change that subscribers are told about.

use sea_orm::entity::prelude::*;
use sea_orm::{QueryOrder, QuerySelect};

use crate::ids::*;

use crate::job::JobStatus;

/// What changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, EnumIter, DeriveActiveEnum)]
#[sea_orm(rs_type = "String", db_type = "String(StringLen::N(16))")]
pub enum LiveKind {
    /// A job was submitted.
    #[sea_orm(string_value = "CREATED")]
    Created,
    /// A job's status, stage, progress, name or sharing changed.
    #[sea_orm(string_value = "UPDATED")]
    Updated,
    /// A job was deleted; `data` keeps what filters need.
    #[sea_orm(string_value = "DELETED")]
    Deleted,
    /// A ledger entry moved the balance; `data` holds it.
    #[sea_orm(string_value = "CREDITS")]
    Credits,
    /// Someone joined, left or changed role: access must be checked again.
    #[sea_orm(string_value = "MEMBERS")]
    Members,
    /// An API token was revoked: every process stops trusting it at once. Not about a
    /// workspace (`workspace_id` is nil); `data` holds `tokenId`.
    #[sea_orm(string_value = "TOKEN_REVOKED")]
    TokenRevoked,
    /// A workflow changed (its status, steps or credits); `data` holds `workflowId`. Its
    /// steps' jobs have entries of their own.
    #[sea_orm(string_value = "WORKFLOW")]
    Workflow,
}

#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "live_events")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    /// The position in commit order, given at commit; the cursor of resumable subscriptions.
    pub seq: Option<i64>,
    pub workspace_id: WorkspaceId,
    pub job_id: Option<JobId>,
    pub kind: LiveKind,
    /// The job's status, stage, progress and attempt as of this change.
    pub status: Option<JobStatus>,
    pub stage: Option<String>,
    pub progress: Option<f64>,
    pub attempt: Option<i32>,
    pub data: Option<Json>,
    pub created_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}

impl Entity {
    /// The entries committed after `seq`, in commit order. Read by the primary key: every
    /// entry's `id` is its `seq` (PostgreSQL's writers give both the same number, SQLite's
    /// trigger copies one into the other), and on PostgreSQL `seq` has no index of its own.
    pub fn find_after(seq: i64) -> Select<Entity> {
        Self::find()
            .filter(Column::Id.gt(seq))
            .order_by_asc(Column::Id)
    }

    /// The entries of `workspace_id` committed after `seq`, in commit order, through the
    /// index of the log's workspace and `seq`.
    pub fn find_in_workspace_after(workspace_id: WorkspaceId, seq: i64) -> Select<Entity> {
        Self::find()
            .filter(Column::WorkspaceId.eq(workspace_id))
            .filter(Column::Seq.gt(seq))
            .order_by_asc(Column::Seq)
    }

    /// The first or the last number of the log (as `seq`), by its primary key.
    pub fn bound(which: Bound) -> Select<Entity> {
        let id = Column::Id;
        Self::find().select_only().column_as(
            match which {
                Bound::First => id.min(),
                Bound::Last => id.max(),
            },
            "seq",
        )
    }
}

/// An end of the live log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bound {
    First,
    Last,
}
