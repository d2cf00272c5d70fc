//! One subscription's view of the bus: the entries in its scope, in commit order, each once.
//!
//! A feed subscribes to the bus before it reads anything from the log, and skips entries at or
//! before the last `seq` it delivered. Replaying from a cursor and then following the bus
//! therefore misses nothing and repeats nothing: an entry committed before the replay's read is
//! in the read, one committed after it is broadcast later. A feed that falls more than the
//! bus's buffer behind (a slow client) reads the log from where it was, the same way.

use entity::ids::{JobId, WorkspaceId};
use std::sync::Arc;

use entity::live_event::{self, LiveKind};
use sea_orm::sea_query::Condition;
use sea_orm::{ColumnTrait, QueryFilter, QuerySelect, Select};
use tokio::sync::broadcast::{self, error::RecvError, error::TryRecvError};

use super::{Bus, Event, resolve};
use crate::error::Result;

/// Which entries a feed delivers.
#[derive(Debug, Clone, Copy)]
pub enum Scope {
    /// Everything about one workspace.
    Workspace(WorkspaceId),
    /// One job, and the member changes of its workspace.
    Job {
        id: JobId,
        workspace_id: WorkspaceId,
    },
}

impl Scope {
    fn contains(&self, entry: &live_event::Model) -> bool {
        match *self {
            Scope::Workspace(ws) => entry.workspace_id == ws,
            Scope::Job { id, workspace_id } => {
                entry.workspace_id == workspace_id
                    && (entry.job_id == Some(id) || entry.kind == LiveKind::Members)
            }
        }
    }

    /// The entries in scope committed after `seq`, in commit order, read through the index of
    /// the log's workspace and `seq`: a job's entries are its workspace's, as a job never
    /// moves to another workspace.
    fn after(&self, seq: i64) -> Select<live_event::Entity> {
        match *self {
            Scope::Workspace(ws) => live_event::Entity::find_in_workspace_after(ws, seq),
            Scope::Job { id, workspace_id } => {
                live_event::Entity::find_in_workspace_after(workspace_id, seq).filter(
                    Condition::any()
                        .add(live_event::Column::JobId.eq(id))
                        .add(live_event::Column::Kind.eq(LiveKind::Members)),
                )
            }
        }
    }
}

/// Entries taken from the bus at once before they are coalesced.
const DRAIN: usize = 256;

pub struct Feed {
    bus: Bus,
    receiver: broadcast::Receiver<Arc<Event>>,
    scope: Scope,
    last: i64,
    replaying: bool,
}

impl Feed {
    /// Entries committed from now on.
    pub fn live(bus: &Bus, scope: Scope) -> Self {
        let (receiver, head) = bus.subscribe();
        Feed {
            bus: bus.clone(),
            receiver,
            scope,
            last: head,
            replaying: false,
        }
    }

    /// Entries committed after `seq` (from the log), then from now on.
    pub fn after(bus: &Bus, scope: Scope, seq: i64) -> Self {
        let (receiver, _) = bus.subscribe();
        Feed {
            bus: bus.clone(),
            receiver,
            scope,
            last: seq,
            replaying: true,
        }
    }

    /// The next entries in scope, in commit order; waits for at least one. Progress-only
    /// updates of a job that a later entry of the same batch supersedes are left out.
    pub async fn next(&mut self) -> Result<Vec<Arc<Event>>> {
        loop {
            if self.replaying {
                let entries = self
                    .scope
                    .after(self.last)
                    .limit(super::BATCH)
                    .all(self.bus.db())
                    .await?;
                let Some(last) = entries.last().and_then(|e| e.seq) else {
                    self.replaying = false;
                    continue;
                };
                self.last = last;
                return Ok(coalesce(resolve(self.bus.db(), entries).await?));
            }
            let first = match self.receiver.recv().await {
                Ok(event) => event,
                Err(RecvError::Lagged(_)) => {
                    self.replaying = true;
                    continue;
                }
                // The bus is gone: the server is stopping.
                Err(RecvError::Closed) => std::future::pending().await,
            };
            let mut batch = Vec::new();
            self.take(first, &mut batch);
            while batch.len() < DRAIN {
                match self.receiver.try_recv() {
                    Ok(event) => self.take(event, &mut batch),
                    Err(TryRecvError::Lagged(_)) => {
                        self.replaying = true;
                        break;
                    }
                    Err(_) => break,
                }
            }
            if !batch.is_empty() {
                return Ok(coalesce(super::fill(self.bus.db(), batch).await?));
            }
        }
    }

    fn take(&mut self, event: Arc<Event>, batch: &mut Vec<Arc<Event>>) {
        let seq = event.seq();
        if seq <= self.last {
            return;
        }
        self.last = seq;
        if self.scope.contains(&event.entry) {
            batch.push(event);
        }
    }
}

/// Drops each job update that the next entry of the same job in `events` repeats with the
/// same status: progress is coalesced, status changes are all kept, in order.
fn coalesce(events: Vec<Arc<Event>>) -> Vec<Arc<Event>> {
    let superseded = |i: usize| {
        let entry = &events[i].entry;
        entry.kind == LiveKind::Updated
            && events[i + 1..]
                .iter()
                .find(|later| later.entry.job_id.is_some() && later.entry.job_id == entry.job_id)
                .is_some_and(|next| {
                    next.entry.kind == LiveKind::Updated && next.entry.status == entry.status
                })
    };
    let keep: Vec<bool> = (0..events.len()).map(|i| !superseded(i)).collect();
    events
        .into_iter()
        .zip(keep)
        .filter_map(|(event, keep)| keep.then_some(event))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use entity::job::JobStatus;
    use uuid::Uuid;

    fn event(seq: i64, job: u128, kind: LiveKind, status: JobStatus) -> Arc<Event> {
        Arc::new(Event {
            entry: live_event::Model {
                id: seq,
                seq: Some(seq),
                workspace_id: WorkspaceId(Uuid::nil()),
                job_id: Some(JobId(Uuid::from_u128(job))),
                kind,
                status: Some(status),
                stage: None,
                progress: None,
                attempt: None,
                data: None,
                created_at: chrono::Utc::now(),
            },
            job: None,
        })
    }

    #[test]
    fn progress_is_coalesced_and_every_status_change_kept() {
        use JobStatus::*;
        use LiveKind::*;
        let events = vec![
            event(1, 1, Created, Pending),
            event(2, 1, Updated, Queued),
            event(3, 1, Updated, Processing),
            event(4, 2, Updated, Processing),
            event(5, 1, Updated, Processing),
            event(6, 1, Updated, Processing),
            event(7, 2, Updated, Processing),
            event(8, 1, Updated, Completed),
        ];
        let kept: Vec<i64> = coalesce(events).iter().map(|e| e.seq()).collect();
        assert_eq!(kept, vec![1, 2, 6, 7, 8]);
    }
}
