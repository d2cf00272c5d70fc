//! The subscription root: live jobs, job events of a workspace, the jobs indicator and the
//! credit balance. Each resolver checks access once, then hands a stream from
//! `live::subscriptions` on, mapping its items to views.

use async_graphql::{Context, Enum, ID, SimpleObject, Subscription};
use entity::ids::{JobId, WorkspaceId};
use futures_util::{Stream, StreamExt as _};

use super::jobs::{JobCounts, JobFilterInput, JobStatusView, JobView};
use super::viewer;
use crate::error::{ApiError, ApiResult, Error};
use crate::ids::{self};
use crate::live::{Bus, LiveKind, subscriptions};

#[derive(Default)]
pub struct LiveSubscription;

/// What happened to a job.
#[derive(Enum, Clone, Copy, PartialEq, Eq)]
pub enum JobEventKind {
    Created,
    Updated,
    Deleted,
}

/// A change among a workspace's jobs.
#[derive(SimpleObject)]
pub struct WorkspaceJobEvent {
    /// Pass as `after` to resume right after this event.
    cursor: String,
    kind: JobEventKind,
    job_id: ID,
    /// The job's status as of this event.
    status: Option<JobStatusView>,
    /// The job as of this event; null once deleted.
    job: Option<JobView>,
}

pub(crate) fn bus<'a>(ctx: &Context<'a>) -> &'a Bus {
    ctx.data_unchecked::<Bus>()
}

/// Maps a subscription's errors to API errors; its stream ends after the first one.
fn api_errors<T>(
    stream: impl Stream<Item = crate::error::Result<T>>,
) -> impl Stream<Item = ApiResult<T>> {
    stream.map(|item| item.map_err(Into::into))
}

/// The cursor of the live log's entry `seq`.
pub(crate) fn cursor(seq: i64) -> String {
    format!("ev{seq}")
}

fn parse_cursor(cursor: &str) -> Result<i64, Error> {
    cursor
        .strip_prefix("ev")
        .and_then(|n| n.parse::<i64>().ok())
        .filter(|n| *n >= 0)
        .ok_or_else(|| Error::bad_input("after", "not a cursor of workspaceJobEvents"))
}

#[Subscription]
impl LiveSubscription {
    /// The job now, then after each change of status, stage, progress, outputs, name or
    /// sharing; completes when the job is deleted. Anonymous viewers may watch PUBLIC jobs.
    async fn job_updated(
        &self,
        ctx: &Context<'_>,
        id: ID,
    ) -> Result<impl Stream<Item = ApiResult<JobView>> + use<>, ApiError> {
        let id = ids::decode::<JobId>("id", &id)?;
        let stream = subscriptions::job_updates(bus(ctx), viewer(ctx).clone(), id).await?;
        Ok(api_errors(stream).map(|item| item.map(|(job, standing)| JobView(job, standing))))
    }

    /// The workflow now, then after each change of it or of its steps' jobs (status, progress,
    /// credits), the latest state once per batch of changes.
    async fn workflow_updated(
        &self,
        ctx: &Context<'_>,
        id: ID,
    ) -> Result<impl Stream<Item = ApiResult<super::workflows::WorkflowView>> + use<>, ApiError>
    {
        let id = ids::decode::<entity::ids::WorkflowId>("id", &id)?;
        let stream = subscriptions::workflow_updates(bus(ctx), viewer(ctx).clone(), id).await?;
        Ok(api_errors(stream).map(|item| {
            item.map(|(workflow, standing)| super::workflows::WorkflowView(workflow, standing))
        }))
    }

    /// Created, updated and deleted jobs of a workspace that pass `filter` (as the history
    /// list). With `after` (a `cursor` of an earlier event), first the events since then, from
    /// the stored log, then live: none missed, none repeated.
    async fn workspace_job_events(
        &self,
        ctx: &Context<'_>,
        workspace_id: ID,
        filter: Option<JobFilterInput>,
        after: Option<String>,
    ) -> Result<impl Stream<Item = ApiResult<WorkspaceJobEvent>> + use<>, ApiError> {
        let workspace_id = ids::decode::<WorkspaceId>("workspaceId", &workspace_id)?;
        let filter = filter
            .unwrap_or_default()
            .into_filter(viewer(ctx).user_id())?;
        let after = after.as_deref().map(parse_cursor).transpose()?;
        let stream = subscriptions::workspace_events(
            bus(ctx),
            viewer(ctx).clone(),
            workspace_id,
            filter,
            after,
        )
        .await?;
        Ok(api_errors(stream).map(|item| {
            item.map(|event| WorkspaceJobEvent {
                cursor: cursor(event.seq),
                kind: match event.kind {
                    LiveKind::Created => JobEventKind::Created,
                    LiveKind::Deleted => JobEventKind::Deleted,
                    _ => JobEventKind::Updated,
                },
                job_id: ids::encode(event.job_id),
                status: event.status.map(Into::into),
                job: event.job.map(|(job, standing)| JobView(job, standing)),
            })
        }))
    }

    /// The jobs indicator: the per-status counts now, then each time they change. With
    /// `mine`, only the viewer's own jobs.
    async fn job_counts(
        &self,
        ctx: &Context<'_>,
        workspace_id: ID,
        #[graphql(default = false)] mine: bool,
    ) -> Result<impl Stream<Item = ApiResult<JobCounts>> + use<>, ApiError> {
        let workspace_id = ids::decode::<WorkspaceId>("workspaceId", &workspace_id)?;
        let stream =
            subscriptions::job_counts(bus(ctx), viewer(ctx).clone(), workspace_id, mine).await?;
        Ok(api_errors(stream).map(|item| item.map(|counts| JobCounts::from_map(&counts))))
    }

    /// The workspace's balance now, then after each ledger entry.
    async fn credit_balance(
        &self,
        ctx: &Context<'_>,
        workspace_id: ID,
    ) -> Result<impl Stream<Item = ApiResult<i64>> + use<>, ApiError> {
        let workspace_id = ids::decode::<WorkspaceId>("workspaceId", &workspace_id)?;
        Ok(api_errors(
            subscriptions::credit_balance(bus(ctx), viewer(ctx).clone(), workspace_id).await?,
        ))
    }
}
