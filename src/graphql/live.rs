//! The subscription root: live jobs, job events of a workspace, the jobs indicator and the
//! credit balance. Each resolver checks access once, then hands a stream from
//! `live::subscriptions` on, mapping its items to views.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use async_graphql::parser::types::{OperationType, Selection};
use async_graphql::{Context, Enum, ID, Request, SimpleObject, Subscription};
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
    /// Submitted, in the status it was submitted into: QUEUED, PENDING while its URL inputs
    /// download, or COMPLETED with the results of an earlier job it reused.
    Created,
    /// Changed: its status, stage, progress or another field.
    Updated,
    /// Deleted.
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

/// Where an execution of `workspaceJobEvents` stands in the live log: the `seq` of the last
/// event it yielded. Shared executions keep it (`http::websocket::shared`), so that a
/// subscriber that falls behind one goes on from there on its own.
#[derive(Clone, Default)]
pub struct Position(pub Arc<AtomicI64>);

/// Makes `workspaceJobEvents` without `after` resume after this `seq`: a subscriber leaving a
/// shared execution goes on from the last event it got.
pub struct ResumeAfter(pub i64);

/// Whether every subscriber of this parsed request gets the same results from the moment it
/// starts, whenever it starts, so that one execution can serve all who ask it as one audience:
/// a subscription of `workspaceJobEvents` alone, without `after`. Every other subscription
/// begins with what is there when it starts (the job, the counts, the balance, a replay), which
/// is each subscriber's own.
pub fn shared_from_start(request: &mut Request) -> bool {
    let variables = request.variables.clone();
    let asked = request.operation_name.clone();
    let Ok(document) = request.parsed_query() else {
        return false;
    };
    let Some(operation) = super::guard::operation(document, asked.as_deref()) else {
        return false;
    };
    let operation = &operation.node;
    let [selection] = operation.selection_set.node.items.as_slice() else {
        return false;
    };
    let Selection::Field(field) = &selection.node else {
        return false;
    };
    let field = &field.node;
    if operation.ty != OperationType::Subscription || field.name.node != "workspaceJobEvents" {
        return false;
    }
    // `after` given as null, or as a variable that is null or absent without a default,
    // is no `after`.
    field.arguments.iter().all(|(name, value)| {
        name.node != "after"
            || value.node.clone().into_const_with(|variable| {
                let default = operation
                    .variable_definitions
                    .iter()
                    .find(|definition| definition.node.name.node == variable)
                    .and_then(|definition| definition.node.default_value.clone());
                Ok::<_, ()>(match variables.get(&variable) {
                    Some(value) => value.clone(),
                    None => default.map_or(async_graphql::Value::Null, |value| value.node),
                })
            }) == Ok(async_graphql::Value::Null)
    })
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
        Ok(api_errors(stream).map(|item| item.map(|(job, standing)| JobView::new(job, standing))))
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
        let after = match after {
            Some(cursor) => Some(parse_cursor(&cursor)?),
            None => ctx.data_opt::<ResumeAfter>().map(|resume| resume.0),
        };
        let position = ctx.data_opt::<Position>().cloned();
        let stream = subscriptions::workspace_events(
            bus(ctx),
            viewer(ctx).clone(),
            workspace_id,
            filter,
            after,
        )
        .await?;
        Ok(api_errors(stream).map(move |item| {
            item.map(|event| {
                if let Some(Position(position)) = &position {
                    position.store(event.seq, Ordering::Release);
                }
                WorkspaceJobEvent {
                    cursor: cursor(event.seq),
                    kind: match event.kind {
                        LiveKind::Created => JobEventKind::Created,
                        LiveKind::Deleted => JobEventKind::Deleted,
                        _ => JobEventKind::Updated,
                    },
                    job_id: ids::encode(event.job_id),
                    status: event.status.map(Into::into),
                    job: event.job.map(|(job, standing)| JobView::new(job, standing)),
                }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn shared(query: &str, variables: serde_json::Value, operation: Option<&str>) -> bool {
        let mut request =
            Request::new(query).variables(async_graphql::Variables::from_json(variables));
        request.operation_name = operation.map(str::to_owned);
        request.set_parsed_query(async_graphql::parser::parse_query(query).unwrap());
        shared_from_start(&mut request)
    }

    #[test]
    fn only_workspace_events_from_now_on_are_shared() {
        use serde_json::json;
        let events = "subscription($ws: ID!, $after: String) {
            workspaceJobEvents(workspaceId: $ws, after: $after) { kind } }";
        assert!(shared(events, json!({"ws": "w"}), None));
        assert!(shared(events, json!({"ws": "w", "after": null}), None));
        assert!(!shared(events, json!({"ws": "w", "after": "ev3"}), None));
        let defaulted = "subscription($after: String = \"ev3\") {
            workspaceJobEvents(workspaceId: \"w\", after: $after) { kind } }";
        assert!(!shared(defaulted, json!({}), None));
        assert!(shared(defaulted, json!({"after": null}), None));
        let literal =
            "subscription { workspaceJobEvents(workspaceId: \"w\", after: \"ev3\") { kind } }";
        assert!(!shared(literal, json!({}), None));
        let null =
            "subscription { events: workspaceJobEvents(workspaceId: \"w\", after: null) { kind } }";
        assert!(shared(null, json!({}), None));
        // Other subscriptions start with what is there when they start.
        assert!(!shared(
            "subscription { jobUpdated(id: \"j\") { id } }",
            json!({}),
            None
        ));
        assert!(!shared(
            "subscription { creditBalance(workspaceId: \"w\") }",
            json!({}),
            None
        ));
        // The operation run decides, by name.
        let two = "subscription A { jobUpdated(id: \"j\") { id } }
            subscription B { workspaceJobEvents(workspaceId: \"w\") { kind } }";
        assert!(shared(two, json!({}), Some("B")));
        assert!(!shared(two, json!({}), Some("A")));
        assert!(!shared(two, json!({}), None));
        assert!(!shared(two, json!({}), Some("C")));
        // Queries, fragments at the root and a second root field are not.
        assert!(!shared("{ workspaceJobEvents { kind } }", json!({}), None));
        let fragment = "subscription { ...F } fragment F on Subscription { workspaceJobEvents(workspaceId: \"w\") { kind } }";
        assert!(!shared(fragment, json!({}), None));
        let both = "subscription { workspaceJobEvents(workspaceId: \"w\") { kind } creditBalance(workspaceId: \"w\") }";
        assert!(!shared(both, json!({}), None));
    }
}
