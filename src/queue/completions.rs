//! Recording completed runs in groups: the completions that arrive while one group is being
//! written go together into the next transaction.
//!
//! Short jobs finish close together, and one transaction per job would make the commit the
//! queue's limit (SQLite has one writer; on PostgreSQL each commit waits for its WAL flush and
//! numbers its live entries one committer at a time). A group is written with set-based
//! statements (`lifecycle::Completing`): each job still moves only if it has the status and
//! attempt its runner saw, and only a job that changed meanwhile is reported as a conflict. No
//! completion waits for a timer: an idle worker writes one at once.

use entity::job::JobStatus;
use sea_orm::DatabaseConnection;
use tokio::sync::{mpsc, oneshot};
use tracing::Instrument as _;

use crate::db;
use crate::error::{Error, Result};
use crate::files::NewFile;
use crate::jobs::lifecycle::{self, Change, Completion};

/// Completions written in one transaction at most.
const MAX_GROUP: usize = 1000;

struct Request {
    completion: Completion,
    outputs: Vec<NewFile>,
    reply: oneshot::Sender<Result<()>>,
}

/// The handle through which a worker's runs record their completion.
#[derive(Clone)]
pub struct Completions {
    sender: mpsc::UnboundedSender<Request>,
}

impl Completions {
    /// Starts the writer of `db`'s completions; it stops when the last handle is dropped.
    pub fn start(db: DatabaseConnection) -> Self {
        let sender = super::groups::start(MAX_GROUP, move |requests: Vec<Request>| {
            let db = db.clone();
            let span = tracing::info_span!("complete", jobs = requests.len());
            async move { write_requests(&db, requests).instrument(span).await }
        });
        Completions { sender }
    }

    /// Records that `completion` ended its job, with the rows of its output files. CONFLICT if
    /// the job changed meanwhile.
    pub async fn complete(&self, completion: Completion, outputs: Vec<NewFile>) -> Result<()> {
        let (reply, answer) = oneshot::channel();
        self.sender
            .send(Request {
                completion,
                outputs,
                reply,
            })
            .map_err(|_| Error::Internal(anyhow::anyhow!("the completion writer has stopped")))?;
        answer
            .await
            .map_err(|_| Error::Internal(anyhow::anyhow!("the completion writer has stopped")))?
    }
}

async fn write_requests(db: &DatabaseConnection, requests: Vec<Request>) {
    let completions: Vec<Completion> = requests.iter().map(|r| r.completion.clone()).collect();
    match write_group(db, &completions, &requests).await {
        Ok(outcomes) => {
            for (request, outcome) in requests.into_iter().zip(outcomes) {
                let _ = request.reply.send(outcome);
            }
        }
        // Nothing of the group was written: each is tried alone, so that one job's failure
        // is that job's only.
        Err(err) => {
            tracing::warn!(error = %err, "recording a group of completions failed; recording them one by one");
            for request in requests {
                let outcome = write_one(db, &request).await;
                let _ = request.reply.send(outcome);
            }
        }
    }
}

async fn write_group(
    db: &DatabaseConnection,
    completions: &[Completion],
    requests: &[Request],
) -> Result<Vec<Result<()>>> {
    let began = std::time::Instant::now();
    let completing = lifecycle::Completing::new(db, completions);
    let tx = db::begin_write(db).await?;
    let outputs: Vec<&[crate::files::NewFile]> =
        requests.iter().map(|r| r.outputs.as_slice()).collect();
    let outcomes = completing.write(&tx, &outputs).await?;
    tx.commit().await?;
    tracing::debug!(
        jobs = completions.len(),
        ms = began.elapsed().as_secs_f64() * 1e3,
        "recorded completions"
    );
    Ok(outcomes)
}

/// One completion in its own transaction, as `lifecycle::transition` records any ending.
async fn write_one(db: &DatabaseConnection, request: &Request) -> Result<()> {
    let Completion {
        job,
        result,
        resources,
    } = &request.completion;
    super::finish(
        db,
        job,
        JobStatus::Completed,
        Change {
            result: Some(result.clone()),
            resources: Some(resources.clone()),
            ..Default::default()
        },
        &request.outputs,
    )
    .await
    .map(drop)
}
