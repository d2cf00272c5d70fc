//! The job state machine: which status may follow which, and which endings give credits back.
//! Pure functions; every status change in jobgraph asks them first.

use entity::job::JobStatus;

/// A refused transition, naming both ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the job is {} and cannot become {}", name(*from), name(*to))]
pub struct InvalidTransition {
    pub from: JobStatus,
    pub to: JobStatus,
}

/// The status as clients spell it.
pub fn name(status: JobStatus) -> &'static str {
    use JobStatus::*;
    match status {
        Pending => "PENDING",
        Queued => "QUEUED",
        Processing => "PROCESSING",
        Completed => "COMPLETED",
        Failed => "FAILED",
        Timeout => "TIMEOUT",
        Cancelled => "CANCELLED",
        Retry => "RETRY",
    }
}

/// Whether `to` may follow `from`.
pub fn allowed(from: JobStatus, to: JobStatus) -> bool {
    use JobStatus::*;
    matches!(
        (from, to),
        (Pending, Queued | Failed | Cancelled)
            | (Queued, Processing | Cancelled)
            // Back to QUEUED when a worker's lease is lost.
            | (Processing, Completed | Failed | Timeout | Cancelled | Retry | Queued)
            | (Retry, Queued | Cancelled)
    )
}

/// How a new job begins.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    /// Its inputs are ready: it joins the queue.
    Ready,
    /// It waits for its URL inputs to be fetched.
    Downloading,
    /// It reuses the results of an earlier job that computed the same (`reusable`), instead of
    /// running.
    Reused,
}

/// The status a new job is written with, after its PENDING: QUEUED when ready, still PENDING
/// while downloading, COMPLETED when it reuses an earlier job's results. PENDING to COMPLETED is
/// a submission's outcome only, never a `transition`: a job once written completes only by
/// running.
pub fn submitted(start: Start) -> JobStatus {
    match start {
        Start::Ready => JobStatus::Queued,
        Start::Downloading => JobStatus::Pending,
        Start::Reused => JobStatus::Completed,
    }
}

/// Whether a job's results may be reused by a later job that computes the same: only those of
/// a COMPLETED job, whose run ended well.
pub fn reusable(status: JobStatus) -> bool {
    status == JobStatus::Completed
}

/// Checks a transition.
pub fn transition(from: JobStatus, to: JobStatus) -> Result<JobStatus, InvalidTransition> {
    if allowed(from, to) {
        Ok(to)
    } else {
        Err(InvalidTransition { from, to })
    }
}

/// Whether moving from `from` to `to` gives the job's charge back: a failed or timed-out run,
/// or a cancellation before the run used any compute.
pub fn refunds(from: JobStatus, to: JobStatus) -> bool {
    use JobStatus::*;
    match to {
        Failed | Timeout => true,
        Cancelled => from != Processing,
        _ => false,
    }
}

/// Statuses from which a user may cancel.
pub fn cancellable(status: JobStatus) -> bool {
    allowed(status, JobStatus::Cancelled)
}

/// Statuses from which a user may retry (into a new job).
pub fn retryable(status: JobStatus) -> bool {
    matches!(
        status,
        JobStatus::Failed | JobStatus::Timeout | JobStatus::Cancelled
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use JobStatus::*;
    use sea_orm::Iterable;

    #[test]
    fn exactly_the_documented_transitions_are_allowed() {
        let expected = [
            (Pending, Queued),
            (Pending, Failed),
            (Pending, Cancelled),
            (Queued, Processing),
            (Queued, Cancelled),
            (Processing, Completed),
            (Processing, Failed),
            (Processing, Timeout),
            (Processing, Cancelled),
            (Processing, Retry),
            (Processing, Queued),
            (Retry, Queued),
            (Retry, Cancelled),
        ];
        for from in JobStatus::iter() {
            for to in JobStatus::iter() {
                assert_eq!(
                    allowed(from, to),
                    expected.contains(&(from, to)),
                    "{} -> {}",
                    name(from),
                    name(to)
                );
            }
        }
    }

    #[test]
    fn final_statuses_go_nowhere() {
        for from in [Completed, Failed, Timeout, Cancelled] {
            assert!(from.is_final());
            assert!(JobStatus::iter().all(|to| !allowed(from, to)));
        }
        let err = transition(Completed, Cancelled).unwrap_err();
        assert_eq!(
            err.to_string(),
            "the job is COMPLETED and cannot become CANCELLED"
        );
    }

    #[test]
    fn a_new_job_is_queued_downloading_or_completed_by_reuse() {
        assert_eq!(submitted(Start::Ready), Queued);
        assert!(allowed(Pending, submitted(Start::Ready)));
        assert_eq!(submitted(Start::Downloading), Pending);
        assert_eq!(submitted(Start::Reused), Completed);
        // Only a submission completes a job without its run.
        assert!(!allowed(Pending, Completed));
        assert!(JobStatus::iter().filter(|s| reusable(*s)).eq([Completed]));
    }

    #[test]
    fn failures_timeouts_and_early_cancellations_refund() {
        assert!(refunds(Processing, Failed));
        assert!(refunds(Pending, Failed));
        assert!(refunds(Processing, Timeout));
        assert!(refunds(Queued, Cancelled));
        assert!(refunds(Pending, Cancelled));
        assert!(refunds(Retry, Cancelled));
        assert!(!refunds(Processing, Cancelled));
        assert!(!refunds(Processing, Completed));
        assert!(!refunds(Processing, Retry));
    }
}
