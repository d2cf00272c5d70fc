//! What each subscription delivers, as streams of domain values, with the subscriber's
//! access checked again as events arrive.
//!
//! Access is the subscriber's current one: their standing in the workspace comes from the
//! process's standing cache (`access::StandingCache`, which requests use too), trusted for
//! `--auth-cache-seconds` and forgotten before a member change is broadcast, so a member who is
//! removed gets no event committed after the removal.

use entity::ids::{BatchId, JobId, UserId, WorkspaceId};
use std::collections::HashMap;

use chrono::{DateTime, Utc};
use entity::job::{self, JobStatus};
use entity::live_event::LiveKind;
use futures_util::Stream;
use sea_orm::DatabaseConnection;
use serde::Deserialize;

use super::Bus;
use super::feed::{Feed, Scope};
use crate::access::{self, JobAccess, JobStanding, Standing, Viewer, WorkspaceAccess};
use crate::error::{Error, Result};
use crate::jobs::history::{self, JobFacts, JobFilter};

/// A subscriber's standing in one workspace, as the process's standing cache has it.
struct Gate {
    bus: Bus,
    viewer: Viewer,
    workspace_id: WorkspaceId,
}

impl Gate {
    fn new(bus: &Bus, viewer: Viewer, workspace_id: WorkspaceId) -> Self {
        Gate {
            bus: bus.clone(),
            viewer,
            workspace_id,
        }
    }

    async fn standing(&self) -> Result<Standing> {
        self.bus.standing(&self.viewer, self.workspace_id).await
    }

    /// The viewer's standing towards `job`, or `None` when they may no longer read it.
    async fn job(&self, db: &DatabaseConnection, job: &job::Model) -> Result<Option<JobStanding>> {
        let standing = JobStanding {
            workspace: self.standing().await?,
            viewer_id: self.viewer.user_id(),
        };
        let readable =
            standing.workspace.can_read() || access::shared_with(db, &self.viewer, job).await?;
        Ok(readable.then_some(standing))
    }

    /// The viewer's standing towards `workflow`, or `None` when they may no longer read it:
    /// as a member, or through its sharing.
    async fn workflow(
        &self,
        db: &DatabaseConnection,
        workflow: &entity::workflow::Model,
    ) -> Result<Option<JobStanding>> {
        let standing = JobStanding {
            workspace: self.standing().await?,
            viewer_id: self.viewer.user_id(),
        };
        let readable = standing.workspace.can_read()
            || access::sharing_admits(
                db,
                &self.viewer,
                workflow.visibility,
                access::Shared::Workflow(workflow.id),
            )
            .await?;
        Ok(readable.then_some(standing))
    }

    /// NOT_FOUND once the viewer may no longer read the workspace.
    async fn require_workspace(&self) -> Result<Standing> {
        let standing = self.standing().await?;
        if standing.can_read() {
            Ok(standing)
        } else {
            Err(Error::NotFound("workspace"))
        }
    }
}

/// `jobUpdated`: the job now, then after each change, until it is deleted. Ends with
/// NOT_FOUND when the viewer loses access.
pub async fn job_updates(
    bus: &Bus,
    viewer: Viewer,
    id: JobId,
) -> Result<impl Stream<Item = Result<(job::Model, JobStanding)>> + use<>> {
    let db = bus.db().clone();
    // The load below reflects every entry up to `head`; later ones are replayed from the
    // log, so no change between the load and the feed is lost.
    let head = bus.last_committed().await?;
    let access = JobAccess::load(&db, &viewer, id).await?;
    let workspace_id = access.job.workspace_id;
    let mut feed = Feed::after(bus, Scope::Job { id, workspace_id }, head);
    let gate = Gate::new(bus, viewer, workspace_id);
    Ok(async_stream::stream! {
        yield Ok((access.job, access.standing));
        loop {
            let events = match feed.next().await {
                Ok(events) => events,
                Err(err) => { yield Err(err); return; }
            };
            for event in events {
                match event.entry.kind {
                    LiveKind::Deleted => return,
                    LiveKind::Created | LiveKind::Updated => {
                        // Deleted since: its DELETED entry follows.
                        let Some(job) = event.job_as_of_entry() else { continue };
                        match gate.job(&db, &job).await {
                            Ok(Some(standing)) => yield Ok((job, standing)),
                            Ok(None) => { yield Err(Error::NotFound("job")); return; }
                            Err(err) => { yield Err(err); return; }
                        }
                    }
                    LiveKind::Members
                    | LiveKind::Credits
                    | LiveKind::TokenRevoked
                    | LiveKind::Workflow => {}
                }
            }
        }
    })
}

/// `workflowUpdated`: the workflow now, then after each change of it or of its steps' jobs
/// (status, progress), the latest state once per batch of changes. Ends with NOT_FOUND when
/// the viewer loses access, and quietly when the workflow is deleted.
pub async fn workflow_updates(
    bus: &Bus,
    viewer: Viewer,
    id: entity::ids::WorkflowId,
) -> Result<impl Stream<Item = Result<(entity::workflow::Model, JobStanding)>> + use<>> {
    use sea_orm::EntityTrait as _;
    let db = bus.db().clone();
    let head = bus.last_committed().await?;
    let access = access::WorkflowAccess::load(&db, &viewer, id).await?;
    let workspace_id = access.workflow.workspace_id;
    let mut feed = Feed::after(bus, Scope::Workspace(workspace_id), head);
    let gate = Gate::new(bus, viewer, workspace_id);
    let about = move |entry: &entity::live_event::Model| -> bool {
        matches!(
            entry.kind,
            LiveKind::Workflow | LiveKind::Created | LiveKind::Updated
        ) && entry
            .data
            .as_ref()
            .and_then(|data| data.get("workflowId"))
            .and_then(|value| value.as_str())
            .and_then(|text| uuid::Uuid::try_parse(text).ok())
            == Some(id.0)
    };
    Ok(async_stream::stream! {
        yield Ok((access.workflow, access.standing));
        loop {
            let events = match feed.next().await {
                Ok(events) => events,
                Err(err) => { yield Err(err); return; }
            };
            if !events.iter().any(|event| about(&event.entry)) {
                continue;
            }
            let workflow = match entity::workflow::Entity::find_by_id(id).one(&db).await {
                Ok(Some(workflow)) => workflow,
                Ok(None) => return,
                Err(err) => { yield Err(err.into()); return; }
            };
            match gate.workflow(&db, &workflow).await {
                Ok(Some(standing)) => yield Ok((workflow, standing)),
                Ok(None) => { yield Err(Error::NotFound("workflow")); return; }
                Err(err) => { yield Err(err); return; }
            }
        }
    })
}

/// One change among a workspace's jobs.
#[derive(Debug, Clone)]
pub struct WorkspaceEvent {
    /// The position in the log: resume after it.
    pub seq: i64,
    pub kind: LiveKind,
    pub job_id: JobId,
    pub status: Option<JobStatus>,
    /// The job as of this change; `None` when it was deleted.
    pub job: Option<(job::Model, JobStanding)>,
}

/// `workspaceJobEvents`: created, updated and deleted jobs of a workspace that pass `filter`,
/// from now, or replayed from the log after `after` and then live.
pub async fn workspace_events(
    bus: &Bus,
    viewer: Viewer,
    workspace_id: WorkspaceId,
    filter: JobFilter,
    after: Option<i64>,
) -> Result<impl Stream<Item = Result<WorkspaceEvent>> + use<>> {
    let db = bus.db().clone();
    let head = bus.last_committed().await?;
    WorkspaceAccess::load(&db, &viewer, workspace_id).await?;
    if let Some(after) = after
        && !bus.still_kept(after).await?
    {
        return Err(Error::bad_input(
            "after",
            "the events after this cursor are no longer kept (7 days): reload, then subscribe without `after`",
        ));
    }
    let viewer_id = viewer.user_id();
    let mut feed = Feed::after(bus, Scope::Workspace(workspace_id), after.unwrap_or(head));
    let gate = Gate::new(bus, viewer, workspace_id);
    Ok(async_stream::stream! {
        loop {
            let events = match feed.next().await {
                Ok(events) => events,
                Err(err) => { yield Err(err); return; }
            };
            for event in events {
                let entry = &event.entry;
                let standing = match gate.require_workspace().await {
                    Ok(standing) => standing,
                    Err(err) => { yield Err(err); return; }
                };
                let Some(job_id) = entry.job_id else { continue };
                // The entry's own facts decide the filter when the job is gone: deleted before
                // its entries were read, it still reports each change, without the job.
                let kept = || {
                    entry
                        .data
                        .clone()
                        .and_then(|data| serde_json::from_value::<KeptFacts>(data).ok())
                };
                let job = match entry.kind {
                    LiveKind::Created | LiveKind::Updated => match event.job_as_of_entry() {
                        Some(job) if filter.matches(&JobFacts::of(&job)) => Some(job),
                        Some(_) => continue,
                        None => match kept() {
                            Some(kept) if filter.matches(&kept.facts(entry.status)) => None,
                            _ => continue,
                        },
                    },
                    LiveKind::Deleted => match kept() {
                        Some(kept) if filter.matches(&kept.facts(entry.status)) => None,
                        _ => continue,
                    },
                    _ => continue,
                };
                yield Ok(WorkspaceEvent {
                    seq: event.seq(),
                    kind: entry.kind,
                    job_id,
                    status: entry.status,
                    job: job.map(|job| (job, JobStanding { workspace: standing, viewer_id })),
                });
            }
        }
    })
}

/// `jobCounts`: the per-status counts now, then whenever they change.
pub async fn job_counts(
    bus: &Bus,
    viewer: Viewer,
    workspace_id: WorkspaceId,
    mine: bool,
) -> Result<impl Stream<Item = Result<HashMap<JobStatus, i64>>> + use<>> {
    let db = bus.db().clone();
    let mut feed = Feed::live(bus, Scope::Workspace(workspace_id));
    let access = WorkspaceAccess::load(&db, &viewer, workspace_id).await?;
    let submitter = if mine {
        Some(viewer.require_user()?.id)
    } else {
        None
    };
    let gate = Gate::new(bus, viewer, workspace_id);
    Ok(async_stream::stream! {
        let mut last = match history::counts(&db, access.known(), submitter).await {
            Ok(counts) => counts,
            Err(err) => { yield Err(err); return; }
        };
        yield Ok(last.clone());
        loop {
            let events = match feed.next().await {
                Ok(events) => events,
                Err(err) => { yield Err(err); return; }
            };
            if let Err(err) = gate.require_workspace().await {
                yield Err(err);
                return;
            }
            if !events.iter().any(|e| e.entry.job_id.is_some()) {
                continue;
            }
            match history::counts(&db, access.known(), submitter).await {
                Ok(counts) if counts != last => {
                    last = counts.clone();
                    yield Ok(counts);
                }
                Ok(_) => {}
                Err(err) => { yield Err(err); return; }
            }
        }
    })
}

/// `creditBalance`: the balance now, then after each ledger entry.
pub async fn credit_balance(
    bus: &Bus,
    viewer: Viewer,
    workspace_id: WorkspaceId,
) -> Result<impl Stream<Item = Result<i64>> + use<>> {
    let db = bus.db().clone();
    let head = bus.last_committed().await?;
    let access = WorkspaceAccess::load(&db, &viewer, workspace_id).await?;
    let mut feed = Feed::after(bus, Scope::Workspace(workspace_id), head);
    let gate = Gate::new(bus, viewer, workspace_id);
    Ok(async_stream::stream! {
        yield Ok(access.workspace.credit_balance);
        loop {
            let events = match feed.next().await {
                Ok(events) => events,
                Err(err) => { yield Err(err); return; }
            };
            for event in events {
                if !matches!(event.entry.kind, LiveKind::Members | LiveKind::Credits) {
                    continue;
                }
                if let Err(err) = gate.require_workspace().await {
                    yield Err(err);
                    return;
                }
                let balance = event
                    .entry
                    .data
                    .as_ref()
                    .and_then(|data| data["balance"].as_i64());
                if let Some(balance) = balance {
                    yield Ok(balance);
                }
            }
        }
    })
}

/// What a job's entries keep of the job for the filters.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct KeptFacts {
    name: String,
    tool: String,
    submitter_id: UserId,
    batch_id: Option<BatchId>,
    created_at: DateTime<Utc>,
}

impl KeptFacts {
    fn facts(&self, status: Option<JobStatus>) -> JobFacts<'_> {
        JobFacts {
            status,
            tool: &self.tool,
            name: &self.name,
            submitter_id: self.submitter_id,
            batch_id: self.batch_id,
            created_at: self.created_at,
        }
    }
}
