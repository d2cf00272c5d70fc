//! The read side: a workspace's history with filters, the per-status counts, batches, a job's
//! timeline and lineage.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use entity::job::{self, JobStatus};
use entity::{batch, job_event};
use sea_orm::sea_query::{Expr, ExprTrait as _, Func};
use sea_orm::{
    ColumnTrait, ConnectionTrait, EntityTrait, Order, QueryFilter, QueryOrder, QuerySelect,
};
use serde_json::Value;
use uuid::Uuid;

use crate::access::{self, JobStanding, Viewer, WorkspaceAccess};
use crate::error::{Error, Result};
use crate::pagination::{self, Page, PageArgs};
use crate::tools::Prepared;

/// Filters of the history list; all optional, combined with AND.
#[derive(Debug, Clone, Default)]
pub struct JobFilter {
    /// Any of these statuses.
    pub statuses: Vec<JobStatus>,
    pub tool: Option<String>,
    pub submitter_id: Option<Uuid>,
    pub batch_id: Option<Uuid>,
    pub created_after: Option<DateTime<Utc>>,
    pub created_before: Option<DateTime<Utc>>,
    /// A case-insensitive part of the job name.
    pub search: Option<String>,
}

impl JobFilter {
    fn apply(&self, mut select: sea_orm::Select<job::Entity>) -> sea_orm::Select<job::Entity> {
        if !self.statuses.is_empty() {
            select = select.filter(job::Column::Status.is_in(self.statuses.iter().copied()));
        }
        if let Some(tool) = &self.tool {
            select = select.filter(job::Column::Tool.eq(tool.as_str()));
        }
        if let Some(submitter) = self.submitter_id {
            select = select.filter(job::Column::SubmitterId.eq(submitter));
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
            let pattern = format!(
                "%{}%",
                search
                    .to_lowercase()
                    .replace('\\', "\\\\")
                    .replace('%', "\\%")
                    .replace('_', "\\_")
            );
            select = select.filter(
                Expr::expr(Func::lower(Expr::col(job::Column::Name)))
                    .like(sea_orm::sea_query::LikeExpr::new(pattern).escape('\\')),
            );
        }
        select
    }
}

/// A page of a workspace's jobs, newest first.
pub async fn list(
    db: &impl ConnectionTrait,
    access: &WorkspaceAccess,
    filter: &JobFilter,
    page: PageArgs,
) -> Result<Page<job::Model>> {
    let select = filter.apply(job::Entity::find_in_workspace(access.workspace.id));
    pagination::fetch(db, select, job::Column::Id, Order::Desc, page).await
}

/// The number of jobs per status, optionally of one submitter only.
pub async fn counts(
    db: &impl ConnectionTrait,
    access: &WorkspaceAccess,
    submitter_id: Option<Uuid>,
) -> Result<HashMap<JobStatus, i64>> {
    let mut select = job::Entity::find_in_workspace(access.workspace.id)
        .select_only()
        .column(job::Column::Status)
        .column_as(job::Column::Id.count(), "count")
        .group_by(job::Column::Status);
    if let Some(submitter) = submitter_id {
        select = select.filter(job::Column::SubmitterId.eq(submitter));
    }
    let rows: Vec<(JobStatus, i64)> = select.into_tuple().all(db).await?;
    Ok(rows.into_iter().collect())
}

/// A job's timeline, oldest first.
pub async fn timeline(db: &impl ConnectionTrait, job_id: Uuid) -> Result<Vec<job_event::Model>> {
    Ok(job_event::Entity::find_of_job(job_id)
        .order_by_asc(job_event::Column::Id)
        .all(db)
        .await?)
}

/// The jobs retried or duplicated from a job that the viewer may read, oldest first.
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

/// One difference between a job and its parent.
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

/// Loads a batch of a workspace the viewer can read. NOT_FOUND otherwise.
pub async fn batch(
    db: &impl ConnectionTrait,
    viewer: &Viewer,
    id: Uuid,
) -> Result<(BatchSummary, WorkspaceAccess)> {
    let found = batch::Entity::find_by_id(id)
        .one(db)
        .await?
        .ok_or(Error::NotFound("batch"))?;
    let access = WorkspaceAccess::load(db, viewer, found.workspace_id)
        .await
        .map_err(|_| Error::NotFound("batch"))?;
    let rows: Vec<(JobStatus, f64, i64)> = job::Entity::find()
        .select_only()
        .column(job::Column::Status)
        .column(job::Column::Progress)
        .column(job::Column::CreditCost)
        .filter(job::Column::BatchId.eq(id))
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

/// The status a batch shows: the least advanced of its jobs.
pub fn batch_status(statuses: &[JobStatus]) -> JobStatus {
    use JobStatus::*;
    let any = |s: JobStatus| statuses.contains(&s);
    if any(Processing) || any(Retry) {
        Processing
    } else if any(Queued) {
        Queued
    } else if any(Pending) {
        Pending
    } else if statuses.iter().all(|s| *s == Completed) {
        Completed
    } else if any(Failed) || any(Timeout) {
        Failed
    } else {
        Cancelled
    }
}
