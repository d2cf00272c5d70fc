//! Remote workers: the rules of the worker API, through which programs outside jobgraph (a
//! Slurm cluster, a Kubernetes job, a GPU box, a notebook) run the jobs of `remote` tools.
//!
//! A remote worker claims jobs with a lease, renews it by heartbeat, reports progress and ends
//! each attempt by completing or failing it. Every claim hands out an attempt token that names
//! the job and the attempt and is signed with the worker token's key: every later call of that
//! attempt is fenced by it, so a worker that was presumed dead and comes back can neither
//! complete the job a second time nor touch the attempt that replaced its own.

use entity::ids::JobId;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use entity::file::{self, FileRole};
use entity::job::{self, JobStatus};
use hmac::{Hmac, Mac};
use sea_orm::{ColumnTrait, DatabaseConnection, EntityTrait, QueryFilter, QueryOrder};
use serde_json::{Value, json};
use sha2::Sha256;
use uuid::Uuid;

use super::{Limits, Tools, workers};
use crate::access::WorkerToken;
use crate::error::{Error, Result};
use crate::files::{self, Checks, Files, NewFile, Upload};
use crate::jobs::lifecycle::Change;
use crate::jobs::state;
use crate::tools::Catalog;

/// The start of every attempt token.
const ATTEMPT_PREFIX: &str = "jgat_";
/// Bytes of the signature kept in an attempt token.
const SIGNATURE_BYTES: usize = 16;
/// Most jobs one claim takes.
pub const MAX_CLAIM: u64 = 100;
/// Shortest and longest lease a remote worker may ask for.
pub const LEASE_SECONDS: std::ops::RangeInclusive<u64> = 3..=3600;
/// Longest failure message kept.
const MAX_MESSAGE_CHARS: usize = 10_000;

/// HMAC-SHA256 of `message` under `key`.
fn signer(key: &[u8], message: &[u8]) -> Hmac<Sha256> {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes keys of any length");
    mac.update(message);
    mac
}

/// The attempt token of `attempt` of a job, for the worker token whose key is `key`.
pub fn attempt_token(key: &str, job_id: JobId, attempt: i32) -> String {
    let mut bytes = Vec::with_capacity(20 + SIGNATURE_BYTES);
    bytes.extend_from_slice(job_id.uuid().as_bytes());
    bytes.extend_from_slice(&attempt.to_be_bytes());
    let signature = signer(key.as_bytes(), &bytes).finalize().into_bytes();
    bytes.extend_from_slice(&signature[..SIGNATURE_BYTES]);
    format!("{ATTEMPT_PREFIX}{}", URL_SAFE_NO_PAD.encode(bytes))
}

/// The job and attempt an attempt token names. BAD_USER_INPUT (field `attempt`) for anything
/// this worker token did not receive from a claim.
pub fn read_attempt_token(key: &str, token: &str) -> Result<(JobId, i32)> {
    let invalid = || {
        Error::bad_input(
            "attempt",
            "is not an attempt token that a claim gave this worker token",
        )
    };
    let bytes = token
        .trim()
        .strip_prefix(ATTEMPT_PREFIX)
        .and_then(|rest| URL_SAFE_NO_PAD.decode(rest).ok())
        .filter(|bytes| bytes.len() == 20 + SIGNATURE_BYTES)
        .ok_or_else(invalid)?;
    let (body, signature) = bytes.split_at(20);
    // In constant time, so that a signature cannot be guessed byte by byte.
    signer(key.as_bytes(), body)
        .verify_truncated_left(signature)
        .map_err(|_| invalid())?;
    let job_id = JobId(Uuid::from_slice(&body[..16]).map_err(|_| invalid())?);
    let attempt = i32::from_be_bytes(body[16..20].try_into().map_err(|_| invalid())?);
    Ok((job_id, attempt))
}

/// What a remote worker asks for.
#[derive(Debug, Clone)]
pub struct ClaimRequest {
    /// The worker's name, shown on the jobs it runs and in the register.
    pub worker: String,
    pub tools: Vec<String>,
    pub limit: u64,
    pub lease: Duration,
}

/// A job claimed by a remote worker, with what it needs to run it.
#[derive(Debug, Clone)]
pub struct Claimed {
    pub job: job::Model,
    /// The attempt token: the claim's fence, given with every later call of this attempt.
    pub attempt_token: String,
    /// The job's stored input files.
    pub files: Vec<file::Model>,
}

/// Checks a lease a worker asks for.
pub fn lease(seconds: Option<i32>, default_seconds: u64) -> Result<Duration> {
    let seconds = match seconds {
        None => default_seconds,
        Some(seconds) => u64::try_from(seconds).unwrap_or(0),
    };
    if !LEASE_SECONDS.contains(&seconds) {
        return Err(Error::bad_input(
            "leaseSeconds",
            format!(
                "must be from {} to {} seconds",
                LEASE_SECONDS.start(),
                LEASE_SECONDS.end()
            ),
        ));
    }
    Ok(Duration::from_secs(seconds))
}

/// Claims up to `request.limit` QUEUED jobs of the named remote tools, within `limits`, and
/// records the worker in the register.
pub async fn claim(
    db: &DatabaseConnection,
    catalog: &Catalog,
    limits: &Limits,
    worker: &WorkerToken,
    request: ClaimRequest,
) -> Result<Vec<Claimed>> {
    let name = request.worker.trim();
    if name.is_empty() || name.chars().count() > 100 {
        return Err(Error::bad_input("worker", "must be 1 to 100 characters"));
    }
    if request.tools.is_empty() {
        return Err(Error::bad_input("tools", "name at least one tool"));
    }
    for tool in &request.tools {
        let found = catalog.require("tools", tool)?;
        if !found.runs_remotely() {
            return Err(Error::bad_input(
                "tools",
                format!("the tool `{tool}` does not run on remote workers"),
            ));
        }
    }
    if !(1..=MAX_CLAIM).contains(&request.limit) {
        return Err(Error::bad_input(
            "limit",
            format!("must be from 1 to {MAX_CLAIM}"),
        ));
    }
    workers::seen(
        db,
        workers::Announcement {
            name,
            kind: "remote",
            tools: &request.tools,
            capacity: request.limit as usize,
            // This process claims for it, under this process's limit.
            workspace_max_running: limits.workspace,
            user_id: Some(worker.user_id),
        },
    )
    .await?;
    let jobs = super::claim(
        db,
        name,
        &Tools::Only(request.tools.clone()),
        limits,
        request.limit,
        request.lease,
    )
    .await?;
    if jobs.is_empty() {
        return Ok(Vec::new());
    }
    let mut inputs = file::Entity::find()
        .filter(file::Column::JobId.is_in(jobs.iter().map(|job| job.id)))
        .filter(file::Column::Role.eq(FileRole::Input))
        .order_by_asc(file::Column::Id)
        .all(db)
        .await?;
    Ok(jobs
        .into_iter()
        .map(|job| {
            let (files, rest) = inputs
                .drain(..)
                .partition(|file| file.job_id == Some(job.id));
            inputs = rest;
            Claimed {
                attempt_token: attempt_token(&worker.key, job.id, job.attempt),
                job,
                files,
            }
        })
        .collect())
}

/// Where a worker's attempt stands.
#[derive(Debug, Clone)]
pub enum Attempt {
    /// Still the job's running attempt.
    Running(job::Model),
    /// The job was cancelled during this attempt: the worker should stop.
    Cancelled(job::Model),
}

/// The attempt an attempt token names, as it stands now. STALE_ATTEMPT when the job has
/// moved on: reclaimed after its lease expired, timed out, already ended, or deleted.
pub async fn attempt(
    db: &DatabaseConnection,
    worker: &WorkerToken,
    token: &str,
) -> Result<Attempt> {
    let (job_id, attempt) = read_attempt_token(&worker.key, token)?;
    let job = job::Entity::find_by_id(job_id)
        .one(db)
        .await?
        .ok_or_else(|| Error::StaleAttempt("the job no longer exists".to_owned()))?;
    if job.attempt != attempt {
        return Err(Error::StaleAttempt(format!(
            "attempt {attempt} is stale: the job is on attempt {} now",
            job.attempt
        )));
    }
    match job.status {
        JobStatus::Processing => Ok(Attempt::Running(job)),
        JobStatus::Cancelled => Ok(Attempt::Cancelled(job)),
        JobStatus::Completed => Err(Error::StaleAttempt(format!(
            "attempt {attempt} already completed the job"
        ))),
        JobStatus::Retry | JobStatus::Queued | JobStatus::Pending => Err(Error::StaleAttempt(
            format!("attempt {attempt} is stale: its lease expired and the job was taken back"),
        )),
        status => Err(Error::StaleAttempt(format!(
            "attempt {attempt} is over: the job is {}{}",
            state::name(status),
            job.error_message
                .as_deref()
                .map(|message| format!(" ({message})"))
                .unwrap_or_default()
        ))),
    }
}

/// The job a remote worker's file download names by its attempt token, while that attempt
/// runs: none once it does not (cancelled, or stale), so that its files are as missing as any
/// other (`access::worker_readable_file`).
pub async fn running_for_download(
    db: &DatabaseConnection,
    worker: &WorkerToken,
    token: Option<&str>,
) -> Result<Option<job::Model>> {
    let token = token.ok_or_else(|| {
        Error::bad_input(
            "attempt",
            "a worker token downloads a file with the attempt token of the job it runs",
        )
    })?;
    match attempt(db, worker, token).await {
        Ok(Attempt::Running(job)) => Ok(Some(job)),
        Ok(Attempt::Cancelled(_)) | Err(Error::StaleAttempt(_)) => Ok(None),
        Err(err) => Err(err),
    }
}

/// The running job of an attempt; STALE_ATTEMPT once it is not running, cancelled included.
async fn running(db: &DatabaseConnection, worker: &WorkerToken, token: &str) -> Result<job::Model> {
    match attempt(db, worker, token).await? {
        Attempt::Running(job) => Ok(job),
        Attempt::Cancelled(_) => Err(Error::StaleAttempt(
            "the job was cancelled during this attempt".to_owned(),
        )),
    }
}

/// The answer to a heartbeat.
#[derive(Debug, Clone)]
pub struct Heartbeat {
    /// The job was cancelled: stop the run and report nothing more.
    pub cancelled: bool,
    /// Until when the lease now holds; none once cancelled.
    pub lease_expires_at: Option<DateTime<Utc>>,
}

/// Renews an attempt's lease, by `lease` or else by the length the claim asked for.
pub async fn heartbeat(
    db: &DatabaseConnection,
    worker: &WorkerToken,
    token: &str,
    lease: Option<Duration>,
) -> Result<Heartbeat> {
    // A renewal that misses (the job changed between the read and the write) looks again.
    for _ in 0..2 {
        let job = match attempt(db, worker, token).await? {
            Attempt::Cancelled(_) => {
                return Ok(Heartbeat {
                    cancelled: true,
                    lease_expires_at: None,
                });
            }
            Attempt::Running(job) => job,
        };
        let lease = lease.unwrap_or_else(|| claimed_lease(&job));
        let expires = Utc::now() + chrono::Duration::from_std(lease).unwrap_or_default();
        if super::renew(db, &job, lease).await? {
            announce(db, worker, &job).await?;
            return Ok(Heartbeat {
                cancelled: false,
                lease_expires_at: Some(expires),
            });
        }
    }
    Err(Error::StaleAttempt(
        "the job changed while the lease was renewed".to_owned(),
    ))
}

/// The lease length the last claim or renewal of a job used.
fn claimed_lease(job: &job::Model) -> Duration {
    match (job.heartbeat_at, job.lease_expires_at) {
        (Some(beat), Some(expires)) if expires > beat => {
            (expires - beat).to_std().unwrap_or(Duration::from_secs(30))
        }
        _ => Duration::from_secs(30),
    }
}

/// Tells the register that the worker running `job` is still there.
async fn announce(db: &DatabaseConnection, worker: &WorkerToken, job: &job::Model) -> Result<()> {
    let Some(name) = job.worker_id.as_deref() else {
        return Ok(());
    };
    let known = entity::worker::Entity::find_by_id(name.to_owned())
        .one(db)
        .await?;
    let (tools, capacity, workspace_max_running) = match known {
        Some(known) => (
            serde_json::from_value(known.tools).unwrap_or_default(),
            known.capacity.max(1) as usize,
            known.workspace_max_running.map(|n| n.max(0) as u32),
        ),
        None => (vec![job.tool.clone()], 1, None),
    };
    workers::seen(
        db,
        workers::Announcement {
            name,
            kind: "remote",
            tools: &tools,
            capacity,
            workspace_max_running,
            user_id: Some(worker.user_id),
        },
    )
    .await
}

/// Records progress (0 to 1) and a stage of a running attempt, through `reports` with the
/// other reports arriving meanwhile. `true` when the job was cancelled, so the worker should
/// stop.
pub async fn report(
    db: &DatabaseConnection,
    reports: &super::reports::Reports,
    worker: &WorkerToken,
    token: &str,
    progress: Option<f64>,
    stage: Option<&str>,
) -> Result<bool> {
    if progress.is_some_and(|p| !(0.0..=1.0).contains(&p)) {
        return Err(Error::bad_input("progress", "must be from 0 to 1"));
    }
    let stage = stage.map(str::trim).filter(|stage| !stage.is_empty());
    if stage.is_some_and(|stage| stage.chars().count() > 200) {
        return Err(Error::bad_input("stage", "must be at most 200 characters"));
    }
    let job = match attempt(db, worker, token).await? {
        Attempt::Cancelled(_) => return Ok(true),
        Attempt::Running(job) => job,
    };
    if reports.report(&job, progress, stage).await? {
        return Ok(false);
    }
    match attempt(db, worker, token).await? {
        Attempt::Cancelled(_) => Ok(true),
        Attempt::Running(_) => Err(Error::StaleAttempt(
            "the job changed while progress was recorded".to_owned(),
        )),
    }
}

/// Completes a running attempt with its result and output files. A stale or repeated
/// completion changes nothing and keeps none of its files.
pub async fn complete(
    db: &DatabaseConnection,
    files: &Files,
    worker: &WorkerToken,
    token: &str,
    result: Value,
    outputs: Vec<Upload>,
) -> Result<job::Model> {
    let job = running(db, worker, token).await?;
    let mut stored: Vec<NewFile> = Vec::with_capacity(outputs.len());
    for (i, upload) in outputs.iter().enumerate() {
        let key = format!(
            "{}/{}",
            files::output_prefix(job.workspace_id, job.id, job.attempt),
            Uuid::now_v7().simple()
        );
        let checks = Checks {
            max_bytes: files.max_upload_bytes,
            fasta: false,
            count_residues: crate::files::guess_content_type(&upload.filename) == "text/x-fasta",
        };
        match files.store_upload(upload, key, checks).await {
            Ok(file) => stored.push(file),
            Err(err) => {
                files.discard(&stored).await;
                return Err(err.into_input_error(&format!("outputs.{i}")));
            }
        }
    }
    let resources = wall_seconds(&job, Utc::now());
    let change = Change {
        result: Some(result),
        resources,
        message: job.worker_id.as_ref().map(|w| format!("completed by {w}")),
        ..Default::default()
    };
    match super::finish(db, &job, JobStatus::Completed, change, &stored).await {
        Ok(ended) => Ok(ended),
        Err(err) => {
            files.discard(&stored).await;
            match err {
                // Fenced out: the attempt ended or was replaced between the read and the write.
                Error::Conflict(_) => {
                    Err(running(db, worker, token).await.err().unwrap_or_else(|| {
                        Error::StaleAttempt("the job changed while it was completed".to_owned())
                    }))
                }
                other => Err(other),
            }
        }
    }
}

/// Fails a running attempt: a transient failure is retried with backoff while attempts
/// remain; a permanent one, or the last attempt, ends the job FAILED and refunds it.
pub async fn fail(
    db: &DatabaseConnection,
    worker: &WorkerToken,
    token: &str,
    message: &str,
    transient: bool,
) -> Result<job::Model> {
    let message: String = message.trim().chars().take(MAX_MESSAGE_CHARS).collect();
    if message.is_empty() {
        return Err(Error::bad_input("message", "say why the attempt failed"));
    }
    let job = running(db, worker, token).await?;
    let code = if transient {
        "TRANSIENT_FAILURE"
    } else {
        "FAILED"
    };
    let resources = wall_seconds(&job, Utc::now());
    match super::fail_attempt(db, &job, message, code, transient, resources).await {
        Ok(moved) => Ok(moved),
        Err(Error::Conflict(_)) => {
            Err(running(db, worker, token).await.err().unwrap_or_else(|| {
                Error::StaleAttempt("the job changed while it was failed".to_owned())
            }))
        }
        Err(err) => Err(err),
    }
}

/// The wall time of a remote run until `now`, as a job's `resources`: the only use jobgraph
/// can measure of a program it does not run.
fn wall_seconds(job: &job::Model, now: DateTime<Utc>) -> Option<Value> {
    let started = job.started_at?;
    let seconds = (now - started).num_milliseconds().max(0) as f64 / 1000.0;
    Some(json!({ "wallSeconds": seconds }))
}

/// Ends TIMEOUT (refunded) the remote runs that have gone past their tool's time limit:
/// jobgraph cannot stop a remote program, so the job ends and a late result is refused.
/// Runs on local workers time out in their runner. Returns how many ended.
pub async fn time_out_overdue(
    db: &DatabaseConnection,
    catalog: &Catalog,
    now: DateTime<Utc>,
) -> Result<usize> {
    let mut ended = 0;
    for tool in catalog.all().iter().filter(|tool| tool.runs_remotely()) {
        let limit =
            chrono::Duration::seconds(i64::try_from(tool.timeout_seconds).unwrap_or(i64::MAX));
        let overdue = job::Entity::find()
            .filter(super::status_is(JobStatus::Processing))
            .filter(job::Column::Tool.eq(tool.name.as_str()))
            .filter(job::Column::StartedAt.lt(now - limit))
            .all(db)
            .await?;
        for job in overdue {
            let resources = wall_seconds(&job, now);
            match super::time_out(db, &job, tool.timeout_seconds, resources).await {
                Ok(_) => ended += 1,
                // Finished or reclaimed meanwhile.
                Err(Error::Conflict(_)) => {}
                Err(err) => return Err(err),
            }
        }
    }
    Ok(ended)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attempt_tokens_name_job_and_attempt_for_their_key_only() {
        let job = JobId::new();
        let token = attempt_token("key-a", job, 3);
        assert!(token.starts_with(ATTEMPT_PREFIX));
        assert_eq!(read_attempt_token("key-a", &token).unwrap(), (job, 3));
        assert!(read_attempt_token("key-b", &token).is_err());
        assert!(read_attempt_token("key-a", "jgat_nonsense").is_err());
        assert!(read_attempt_token("key-a", "").is_err());
        // Another attempt's token differs, and no byte of a token can be changed unnoticed.
        assert_ne!(attempt_token("key-a", job, 4), token);
        let mut forged = token.clone().into_bytes();
        let last = forged.len() - 1;
        forged[last] = if forged[last] == b'A' { b'B' } else { b'A' };
        assert!(read_attempt_token("key-a", &String::from_utf8(forged).unwrap()).is_err());
    }
}
