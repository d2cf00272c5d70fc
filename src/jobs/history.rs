//! The read side: a workspace's history with filters, the per-status counts, batches, a job's
//! timeline and lineage.

use entity::ids::{BatchId, JobId, UserId, WorkspaceId};
use std::collections::HashMap;
use std::sync::{Arc, LazyLock};

use chrono::{DateTime, Utc};
use entity::job::{self, JobStatus};
use entity::{batch, job_event, job_key, user};
use rustc_hash::FxHashMap;
use sea_orm::sea_query::Expr;
use sea_orm::{
    ColumnTrait, ConnectionTrait, EntityTrait, FromQueryResult, IdenStatic, Iterable, JoinType,
    Order, QueryFilter, QueryOrder, QuerySelect,
};
use serde_json::Value;

use crate::access::{self, JobStanding, Viewer, WorkspaceAccess, WorkspaceRef};
use crate::error::{Error, Result};
use crate::pagination::{self, Page, PageArgs};
use crate::tools::Prepared;

/// Filters of the history list; all optional, combined with AND.
#[derive(Debug, Clone, Default)]
pub struct JobFilter {
    /// Any of these statuses.
    pub statuses: Vec<JobStatus>,
    pub tool: Option<String>,
    pub submitter_id: Option<UserId>,
    pub batch_id: Option<BatchId>,
    pub created_after: Option<DateTime<Utc>>,
    pub created_before: Option<DateTime<Utc>>,
    /// A case-insensitive part of the job name.
    pub search: Option<String>,
}

impl JobFilter {
    /// `select`, jobs of one workspace with the filter's tool and submitter, narrowed by the
    /// rest of the filter.
    fn apply(&self, mut select: sea_orm::Select<job::Entity>) -> sea_orm::Select<job::Entity> {
        if !self.statuses.is_empty() {
            select = select.filter(job::Column::Status.is_in(self.statuses.iter().copied()));
        }
        if let Some(batch) = self.batch_id {
            select = select.filter(job::Column::BatchId.eq(batch));
        }
        if let Some(after) = self.created_after {
            select = select.filter(job::Column::CreatedAt.gte(after));
        }
        if let Some(before) = self.created_before {
            select = select.filter(job::Column::CreatedAt.lt(before));
        }
        if let Some(search) = self
            .search
            .as_deref()
            .map(str::trim)
            .filter(|s| !s.is_empty())
        {
            select = select.filter(crate::pagination::name_contains(job::Column::Name, search));
        }
        select
    }
}

/// `jobs.id` among the jobs of `workspace_id` with the tool `tool` and the submitter
/// `submitter_id` (those given), as `job_keys` holds them: its indexes serve these filters (see
/// migration 000110). None when neither is given.
fn keyed(
    workspace_id: WorkspaceId,
    tool: Option<&str>,
    submitter_id: Option<UserId>,
) -> Option<sea_orm::sea_query::SimpleExpr> {
    use sea_orm::sea_query::Query;
    if tool.is_none() && submitter_id.is_none() {
        return None;
    }
    let mut keys = Query::select();
    keys.column(job_key::Column::JobId)
        .from(job_key::Entity)
        .and_where(job_key::Column::WorkspaceId.eq(workspace_id));
    if let Some(tool) = tool {
        keys.and_where(job_key::Column::Tool.eq(tool));
    }
    if let Some(submitter) = submitter_id {
        keys.and_where(job_key::Column::SubmitterId.eq(submitter));
    }
    Some(job::Column::Id.in_subquery(keys))
}

/// What the history filters look at in a job: a loaded job, or what a live event kept of one.
pub struct JobFacts<'a> {
    pub status: Option<JobStatus>,
    pub tool: &'a str,
    pub name: &'a str,
    pub submitter_id: UserId,
    pub batch_id: Option<BatchId>,
    pub created_at: DateTime<Utc>,
}

impl<'a> JobFacts<'a> {
    pub fn of(job: &'a job::Model) -> Self {
        JobFacts {
            status: Some(job.status),
            tool: &job.tool,
            name: &job.name,
            submitter_id: job.submitter_id,
            batch_id: job.batch_id,
            created_at: job.created_at,
        }
    }
}

impl JobFilter {
    /// Whether a job passes the filters, as [`list`] would select it (`apply`'s SQL, in memory).
    pub fn matches(&self, job: &JobFacts<'_>) -> bool {
        let search = self
            .search
            .as_deref()
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_lowercase);
        (self.statuses.is_empty() || job.status.is_some_and(|s| self.statuses.contains(&s)))
            && self.tool.as_deref().is_none_or(|tool| tool == job.tool)
            && self.submitter_id.is_none_or(|id| id == job.submitter_id)
            && self.batch_id.is_none_or(|id| Some(id) == job.batch_id)
            && self.created_after.is_none_or(|t| job.created_at >= t)
            && self.created_before.is_none_or(|t| job.created_at < t)
            && search.is_none_or(|s| job.name.to_lowercase().contains(&s))
    }
}

/// Which of a job's columns a read loads.
#[derive(Debug, Clone)]
pub enum Detail {
    /// Every column.
    Full,
    /// These columns and the ones every read needs ([`Detail::ALWAYS`]). A history list that
    /// shows a few fields reads a few columns: most of a job's bytes, and of the work of
    /// reading a row, are in columns such a list never shows. The other fields of the loaded
    /// jobs hold placeholders, so only fields that read these columns may be shown.
    Columns(Vec<job::Column>),
}

impl Detail {
    /// What identifies a job and what the access rules read.
    pub const ALWAYS: [job::Column; 5] = [
        job::Column::Id,
        job::Column::WorkspaceId,
        job::Column::SubmitterId,
        job::Column::Status,
        job::Column::Visibility,
    ];
}

/// A page of jobs, each as its reader made it, and, when asked for, their submitters.
pub struct Listing<T> {
    pub page: Page<T>,
    pub submitters: Vec<Arc<user::Model>>,
}

/// The jobs of `workspace_id` that pass `filter`, in no order.
pub fn filtered(workspace_id: WorkspaceId, filter: &JobFilter) -> sea_orm::Select<job::Entity> {
    filtered_from(job::Entity::find(), workspace_id, filter)
}

/// [`filtered`] from `jobs`: every column of `job::Entity::find()`, or those of `columns_of`.
fn filtered_from(
    jobs: sea_orm::Select<job::Entity>,
    workspace_id: WorkspaceId,
    filter: &JobFilter,
) -> sea_orm::Select<job::Entity> {
    filter.apply(of_workspace(
        jobs,
        workspace_id,
        filter.tool.as_deref(),
        filter.submitter_id,
    ))
}

/// The jobs, with `columns` selected: from a statement with none, rather than from the 45
/// expressions of `job::Entity::find()` that `select_only` would drop again (building them
/// cost a history page as much as writing its SQL).
fn columns_of(columns: &[job::Column]) -> sea_orm::Select<job::Entity> {
    static NONE: LazyLock<sea_orm::Select<job::Entity>> =
        LazyLock::new(|| job::Entity::find().select_only());
    NONE.clone().columns(columns.iter().copied())
}

/// The jobs of `workspace_id`, of the tool `tool` and the submitter `submitter_id` when given.
///
/// A tool's or a submitter's jobs are found through their keys (`keyed`), which hold the
/// workspace: the jobs themselves are then reached by id only. With `jobs.workspace_id` as a
/// condition as well, a planner without statistics paired each key with a scan of the
/// workspace's jobs instead of looking its job up (a job never moves to another workspace).
fn of_workspace(
    jobs: sea_orm::Select<job::Entity>,
    workspace_id: WorkspaceId,
    tool: Option<&str>,
    submitter_id: Option<UserId>,
) -> sea_orm::Select<job::Entity> {
    match keyed(workspace_id, tool, submitter_id) {
        Some(keys) => jobs.filter(keys),
        None => jobs.filter(job::Column::WorkspaceId.eq(workspace_id)),
    }
}

/// The prefix of the submitter's columns in a listing's rows.
const SUBMITTER: &str = "submitter__";

/// A page of a workspace's jobs, newest first, with their submitters when `with_submitters`:
/// one statement either way. Each job is handed to `make` with its submitter as it is read,
/// and the page holds what `make` made of it (a job moved once, not again into what its
/// reader wraps it in).
#[tracing::instrument(
    target = "jobgraph::spans",
    level = "debug",
    name = "history.list",
    skip_all
)]
pub async fn list<T>(
    db: &impl ConnectionTrait,
    workspace: WorkspaceRef,
    filter: &JobFilter,
    page: PageArgs,
    detail: &Detail,
    with_submitters: bool,
    mut make: impl FnMut(job::Model, Option<&Arc<user::Model>>) -> T,
) -> Result<Listing<T>> {
    let (jobs, columns) = match detail {
        Detail::Full => (job::Entity::find(), None),
        Detail::Columns(extra) => {
            let mut columns = Detail::ALWAYS.to_vec();
            for column in extra {
                if !columns.iter().any(|c| c.as_str() == column.as_str()) {
                    columns.push(*column);
                }
            }
            (columns_of(&columns), Some(columns))
        }
    };
    let mut select = filtered_from(jobs, workspace.id, filter);
    if with_submitters {
        select = select.join(
            JoinType::InnerJoin,
            job::Entity::belongs_to(user::Entity)
                .from(job::Column::SubmitterId)
                .to(user::Column::Id)
                .into(),
        );
        for column in user::Column::iter() {
            select = select.column_as(
                Expr::col((user::Entity, column)),
                format!("{SUBMITTER}{}", column.as_str()),
            );
        }
    }
    // The submitter's columns follow the job's.
    let job_columns = job::Column::iter().count();
    let mut submitters: FxHashMap<UserId, Arc<user::Model>> = FxHashMap::default();
    let page = pagination::fetch_rows(db, select, job::Column::Id, Order::Desc, page, |row| {
        let job = match &columns {
            Some(columns) => crate::store::rows::read(row, columns)?,
            None => job::Model::from_query_result(row, "")?,
        };
        // A page has few submitters: each is read from the first of its rows.
        if !with_submitters {
            return Ok(make(job, None));
        }
        let submitter = match submitters.entry(job.submitter_id) {
            std::collections::hash_map::Entry::Occupied(held) => held.into_mut(),
            std::collections::hash_map::Entry::Vacant(new) => {
                let from = columns.as_ref().map_or(job_columns, Vec::len);
                new.insert(Arc::new(crate::store::rows::read_user(row, from)?))
            }
        };
        Ok(make(job, Some(submitter)))
    })
    .await?;
    Ok(Listing {
        page,
        submitters: submitters.into_values().collect(),
    })
}

/// The number of jobs per status, optionally of one submitter only.
#[tracing::instrument(
    target = "jobgraph::spans",
    level = "debug",
    name = "history.counts",
    skip_all
)]
pub async fn counts(
    db: &impl ConnectionTrait,
    workspace: WorkspaceRef,
    submitter_id: Option<UserId>,
) -> Result<HashMap<JobStatus, i64>> {
    let select = of_workspace(columns_of(&[]), workspace.id, None, submitter_id)
        .column(job::Column::Status)
        .column_as(job::Column::Id.count(), "count")
        .group_by(job::Column::Status);
    let rows: Vec<(JobStatus, i64)> = select.into_tuple().all(db).await?;
    Ok(rows.into_iter().collect())
}

/// A job's timeline, oldest first.
#[tracing::instrument(
    target = "jobgraph::spans",
    level = "debug",
    name = "history.timeline",
    skip_all
)]
pub async fn timeline(db: &impl ConnectionTrait, job_id: JobId) -> Result<Vec<job_event::Model>> {
    Ok(job_event::Entity::find_of_job(job_id)
        .order_by_asc(job_event::Column::Id)
        .all(db)
        .await?)
}

/// The jobs retried or duplicated from a job that the viewer may read, oldest first.
#[tracing::instrument(
    target = "jobgraph::spans",
    level = "debug",
    name = "history.derived",
    skip_all
)]
pub async fn derived(
    db: &impl ConnectionTrait,
    viewer: &Viewer,
    standing: JobStanding,
    parent: &job::Model,
) -> Result<Vec<job::Model>> {
    let children = job::Entity::find()
        .filter(job::Column::ParentId.eq(parent.id))
        .order_by_asc(job::Column::Id)
        .limit(100)
        .all(db)
        .await?;
    let mut visible = Vec::with_capacity(children.len());
    for child in children {
        let readable = if child.workspace_id == parent.workspace_id {
            standing.workspace.can_read()
        } else {
            access::standing(db, viewer, child.workspace_id)
                .await?
                .can_read()
        } || access::shared_with(db, viewer, &child).await?;
        if readable {
            visible.push(child);
        }
    }
    Ok(visible)
}

/// One difference between a job or a workflow and its parent.
#[derive(Debug, Clone, PartialEq)]
pub struct Difference {
    pub kind: DifferenceKind,
    pub name: String,
    pub old: Option<Value>,
    pub new: Option<Value>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DifferenceKind {
    Setting,
    Input,
    /// A workflow's name.
    Name,
    /// A workflow's parameter.
    Parameter,
    /// A setting of a workflow's step, named `<step>.<setting>`.
    StepSetting,
}

/// Which settings and inputs of `job` differ from `parent`'s, by name.
pub fn changes(parent: &job::Model, job: &job::Model) -> Vec<Difference> {
    let mut out = Vec::new();
    let empty = serde_json::Map::new();
    let old = parent.settings.as_object().unwrap_or(&empty);
    let new = job.settings.as_object().unwrap_or(&empty);
    let mut keys: Vec<&String> = old.keys().chain(new.keys()).collect();
    keys.sort();
    keys.dedup();
    for key in keys {
        if old.get(key) != new.get(key) {
            out.push(Difference {
                kind: DifferenceKind::Setting,
                name: key.clone(),
                old: old.get(key).cloned(),
                new: new.get(key).cloned(),
            });
        }
    }
    let old = Prepared::from_stored(&parent.inputs, &parent.settings).inputs;
    let new = Prepared::from_stored(&job.inputs, &job.settings).inputs;
    let mut names: Vec<&String> = old.keys().chain(new.keys()).collect();
    names.sort();
    names.dedup();
    for name in names {
        let (a, b) = (old.get(name), new.get(name));
        let same = match (a, b) {
            (Some(a), Some(b)) => a.same_content(b),
            (a, b) => a == b,
        };
        if !same {
            let value = |input: Option<&crate::tools::StoredInput>| {
                input.map(|i| serde_json::to_value(i).expect("inputs serialize"))
            };
            out.push(Difference {
                kind: DifferenceKind::Input,
                name: name.clone(),
                old: value(a),
                new: value(b),
            });
        }
    }
    out
}

/// A batch and its jobs' statuses and progress.
#[derive(Debug, Clone)]
pub struct BatchSummary {
    pub batch: batch::Model,
    pub statuses: Vec<JobStatus>,
    pub progress: f64,
    pub total_cost: i64,
}

/// The jobs of a batch, found through the batch index (which holds batched jobs only).
pub fn batch_jobs(id: BatchId) -> sea_orm::Select<job::Entity> {
    job::Entity::find().filter(job::Column::BatchId.eq(id))
}

/// Loads a batch of a workspace the viewer can read. NOT_FOUND otherwise.
#[tracing::instrument(
    target = "jobgraph::spans",
    level = "debug",
    name = "history.batch",
    skip_all
)]
pub async fn batch(
    db: &impl ConnectionTrait,
    viewer: &Viewer,
    id: BatchId,
) -> Result<(BatchSummary, WorkspaceAccess)> {
    let found = batch::Entity::find_by_id(id)
        .one(db)
        .await?
        .ok_or(Error::NotFound("batch"))?;
    let access = WorkspaceAccess::load(db, viewer, found.workspace_id)
        .await
        .map_err(|_| Error::NotFound("batch"))?;
    let rows: Vec<(JobStatus, f64, i64)> = batch_jobs(id)
        .select_only()
        .column(job::Column::Status)
        .column(job::Column::Progress)
        .column(job::Column::CreditCost)
        .into_tuple()
        .all(db)
        .await?;
    let progress = if rows.is_empty() {
        0.0
    } else {
        rows.iter()
            .map(|(status, progress, _)| {
                if *status == JobStatus::Completed {
                    1.0
                } else {
                    *progress
                }
            })
            .sum::<f64>()
            / rows.len() as f64
    };
    Ok((
        BatchSummary {
            batch: found,
            total_cost: rows.iter().map(|r| r.2).sum(),
            statuses: rows.into_iter().map(|r| r.0).collect(),
            progress,
        },
        access,
    ))
}

/// The status a batch shows: while any of its jobs is active, the least advanced of them
/// (PENDING, then QUEUED, then PROCESSING, which a job waiting to be retried counts as); once
/// all have ended, COMPLETED if all completed, else FAILED if any failed or timed out, else
/// CANCELLED.
pub fn batch_status(statuses: &[JobStatus]) -> JobStatus {
    use JobStatus::*;
    let any = |s: JobStatus| statuses.contains(&s);
    if any(Pending) {
        Pending
    } else if any(Queued) {
        Queued
    } else if any(Processing) || any(Retry) {
        Processing
    } else if statuses.iter().all(|s| *s == Completed) {
        Completed
    } else if any(Failed) || any(Timeout) {
        Failed
    } else {
        Cancelled
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_shows_its_least_advanced_active_job_then_its_outcome() {
        use JobStatus::*;
        for (statuses, expected) in [
            (vec![Processing, Queued, Completed], Queued),
            (vec![Retry, Pending, Processing], Pending),
            (vec![Retry, Completed], Processing),
            (vec![Processing, Failed], Processing),
            (vec![Completed, Completed], Completed),
            (vec![Completed, Timeout, Cancelled], Failed),
            (vec![Completed, Cancelled], Cancelled),
        ] {
            assert_eq!(batch_status(&statuses), expected, "{statuses:?}");
        }
    }
}
