//! Recording the progress reports of running jobs in groups: the reports that arrive while one
//! group is being written go together into the next transaction.
//!
//! A command tool reports every progress line its program prints, and the built-in analyses
//! report each stage. One transaction per report would make each a commit of its own, and on
//! PostgreSQL every commit that writes live entries numbers them one committer at a time
//! (`docs/scaling.md`, the numbering lock): tools that report would then run at a fraction of
//! the rate of tools that do not. A group is one commit whatever its size. Within a group, a
//! report of progress alone that a later report of the same attempt follows is not written (the
//! later one carries the progress further); every stage is written, in order, as each is a
//! timeline row. No report waits for a timer: an idle worker writes one at once.

use std::collections::HashSet;

use entity::job;
use sea_orm::DatabaseConnection;
use tokio::sync::{mpsc, oneshot};
use tracing::Instrument as _;

use crate::db;
use crate::error::{Error, Result};
use crate::store;

/// Reports written in one transaction at most.
const MAX_GROUP: usize = 1000;

struct Request {
    job: job::Model,
    progress: Option<f64>,
    stage: Option<String>,
    reply: oneshot::Sender<Result<bool>>,
}

impl Request {
    /// The attempt the report is of.
    fn attempt(&self) -> (entity::ids::JobId, i32) {
        (self.job.id, self.job.attempt)
    }
}

/// The handle through which a worker's runs, or a serving process's remote workers, report
/// progress.
#[derive(Clone)]
pub struct Reports {
    sender: mpsc::UnboundedSender<Request>,
}

impl Reports {
    /// Starts the writer of `db`'s reports; it stops when the last handle is dropped.
    pub fn start(db: DatabaseConnection) -> Self {
        let sender = super::groups::start(MAX_GROUP, move |requests: Vec<Request>| {
            let db = db.clone();
            let span = tracing::debug_span!("report", reports = requests.len());
            async move { write_requests(&db, requests).instrument(span).await }
        });
        Reports { sender }
    }

    /// Records progress (0 to 1) and stage of `job`'s running attempt, as `queue::report`
    /// does; `false` when the attempt is no longer the job's.
    pub async fn report(
        &self,
        job: &job::Model,
        progress: Option<f64>,
        stage: Option<&str>,
    ) -> Result<bool> {
        let stopped = || Error::Internal(anyhow::anyhow!("the progress writer has stopped"));
        let (reply, answer) = oneshot::channel();
        self.sender
            .send(Request {
                job: job.clone(),
                progress,
                stage: stage.map(str::to_owned),
                reply,
            })
            .map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }
}

/// Which reports of a group are written, given each one's attempt and whether it names a
/// stage: all but a report of progress alone that a later report of the same attempt follows.
fn written<A: Eq + std::hash::Hash>(
    reports: impl DoubleEndedIterator<Item = (A, bool)>,
) -> Vec<bool> {
    let mut later = HashSet::new();
    let mut written: Vec<bool> = reports
        .rev()
        .map(|(attempt, staged)| later.insert(attempt) || staged)
        .collect();
    written.reverse();
    written
}

async fn write_requests(db: &DatabaseConnection, requests: Vec<Request>) {
    let written = written(requests.iter().map(|r| (r.attempt(), r.stage.is_some())));
    match write_group(db, &requests, &written).await {
        Ok(outcomes) => {
            // A superseded report is answered as the last report of its attempt was.
            let mut last = std::collections::HashMap::new();
            for (request, outcome) in requests.iter().zip(&outcomes).rev() {
                if let Some(still) = outcome {
                    last.entry(request.attempt()).or_insert(*still);
                }
            }
            for (request, outcome) in requests.into_iter().zip(outcomes) {
                let still = outcome.or_else(|| last.get(&request.attempt()).copied());
                let _ = request.reply.send(Ok(still.unwrap_or(false)));
            }
        }
        // Nothing of the group was written: each is tried alone, so that one report's failure
        // is that report's only.
        Err(err) => {
            tracing::warn!(error = %err, "recording a group of progress reports failed; recording them one by one");
            for request in requests {
                let outcome =
                    super::report(db, &request.job, request.progress, request.stage.as_deref())
                        .await;
                let _ = request.reply.send(outcome);
            }
        }
    }
}

/// Writes the `written` reports in one transaction, one UPDATE for the first written report
/// of each attempt, one more for the second ones, and so on; each outcome is whether the
/// report's attempt is still its job's, or nothing for a report left out.
async fn write_group(
    db: &DatabaseConnection,
    requests: &[Request],
    written: &[bool],
) -> Result<Vec<Option<bool>>> {
    let mut rounds: Vec<Vec<usize>> = Vec::new();
    let mut seen = std::collections::HashMap::new();
    for (i, request) in requests.iter().enumerate() {
        if written[i] {
            let round = seen.entry(request.attempt()).or_insert(0);
            if *round == rounds.len() {
                rounds.push(Vec::new());
            }
            rounds[*round].push(i);
            *round += 1;
        }
    }
    let tx = db::begin_write(db).await?;
    let mut outcomes = vec![None; requests.len()];
    for round in rounds {
        let reports: Vec<store::Report<'_>> = round
            .iter()
            .map(|&i| store::Report {
                job: &requests[i].job,
                progress: requests[i].progress,
                stage: requests[i].stage.as_deref(),
            })
            .collect();
        let jobs = store::report_all(&tx, &reports).await?;
        for (i, job) in round.into_iter().zip(jobs) {
            outcomes[i] = Some(job.is_some());
        }
    }
    tx.commit().await?;
    Ok(outcomes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_alone_is_written_only_when_no_later_report_of_its_attempt_follows() {
        // (job, attempt), and whether the report names a stage.
        let reports = [
            (("a", 1), false),
            (("b", 1), false),
            (("a", 1), true),
            (("a", 1), false),
            (("a", 2), false),
            (("a", 1), false),
            (("b", 1), true),
            (("a", 1), true),
        ];
        assert_eq!(
            written(reports.into_iter()),
            [false, false, true, false, true, false, true, true]
        );
    }
}
