//! Submitting jobs, alone or as a batch: checked through `access`, priced, charged and queued
//! in one transaction, or completed at once with the results of an earlier job (`reuse`). What
//! users then do with a job is in `actions`.

use chrono::Utc;
use entity::batch;
use entity::credit_transaction::TransactionKind;
use entity::file::FileRole;
use entity::ids::{BatchId, FileId, JobId, UserId, WorkflowId, WorkspaceId};
use entity::job::{self, JobStatus, ParentKind, Visibility};
use sea_orm::{ActiveModelTrait, ColumnTrait, DatabaseConnection, QueryFilter, Set};
use serde_json::Value;

use super::lifecycle::{self};
use super::state::Start;
use super::{idempotency, reuse};
use crate::access::{JobStanding, Viewer, WorkspaceAccess, WorkspaceAction};
use crate::credits::{Credits, ledger};
use crate::db;
use crate::error::{Error, Result, is_unique_violation};
use crate::files::{self, Checks, Files, NewFile};
use crate::tools::{Catalog, Estimate, InputFormat, InputValue, Prepared, StoredInputKind, Tool};
use crate::workspaces::{self, Hold};

/// The most jobs one batch may hold.
pub const MAX_BATCH_JOBS: usize = 1000;

/// A job to submit.
#[derive(Debug, Clone, Default)]
pub struct Submission {
    pub tool: String,
    pub name: Option<String>,
    pub inputs: Vec<(String, InputValue)>,
    pub settings: Option<Value>,
    pub priority: i32,
}

/// Options that apply to a whole submission.
#[derive(Debug, Clone, Default)]
pub struct SubmitOptions {
    /// The same key from the same workspace returns the first job (or batch) instead of a new
    /// one; with another request, IDEMPOTENCY_KEY_REUSED.
    pub idempotency_key: Option<String>,
    /// Refuse, writing nothing, when the price is higher. A job that reuses an earlier job's
    /// results costs nothing, whatever its price would have been.
    pub max_credits: Option<i64>,
    /// Complete each job at once, uncharged, with the results of the newest COMPLETED job of
    /// the workspace that computed the same (`reuse`), when there is one.
    pub reuse: bool,
}

/// A submitted job, and whether it is an earlier one returned for a repeated idempotency key.
#[derive(Debug, Clone)]
pub struct Submitted {
    pub job: job::Model,
    pub replayed: bool,
}

/// The tool a job runs, as the job records it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ToolVersion {
    pub name: String,
    pub version: String,
    pub max_attempts: u32,
}

impl ToolVersion {
    pub fn of(tool: &Tool) -> Self {
        ToolVersion {
            name: tool.name.clone(),
            version: tool.version.clone(),
            max_attempts: tool.max_attempts,
        }
    }
}

/// A checked submission with its price: what will be written.
pub(crate) struct Planned {
    /// The job's id, chosen before its files are stored under it.
    pub(crate) id: JobId,
    /// Its stored input files, whose rows are written with the job.
    pub(crate) files: Vec<NewFile>,
    pub(crate) tool: ToolVersion,
    pub(crate) name: String,
    pub(crate) prepared: Prepared,
    pub(crate) estimate: Estimate,
    pub(crate) priority: i32,
    /// What it computes (`reuse::key`); `None` while a URL input is not fetched.
    pub(crate) reuse_key: Option<String>,
}

/// The earlier job whose results a new job reuses, with the copies of its output files made
/// for the new job.
pub(crate) struct Reused {
    pub(crate) original: job::Model,
    pub(crate) outputs: Vec<NewFile>,
}

impl Planned {
    /// What the job is charged: its price, or nothing when it reuses an earlier job's results.
    fn charge(&self, reused: &Option<Reused>) -> Credits {
        match reused {
            Some(_) => Credits::ZERO,
            None => self.estimate.total,
        }
    }
}

/// Stores a submission's uploads (and copies of an earlier job's files) under job `job_id`,
/// each checked against its input on the way; the submission then refers to the stored files.
/// Every stored file is pushed to `staged`, which the caller discards if the submission fails.
async fn stage(
    files: &Files,
    catalog: &Catalog,
    submission: &mut Submission,
    (workspace_id, job_id): (WorkspaceId, JobId),
    field: &str,
    staged: &mut Vec<NewFile>,
) -> Result<()> {
    let tool = catalog
        .require(&format!("{field}tool"), &submission.tool)?
        .clone();
    for (name, value) in submission.inputs.iter_mut() {
        let input_field = format!("{field}inputs.{name}");
        let id = FileId::new();
        let key = files::input_key(workspace_id, job_id, id);
        let stored = match value {
            InputValue::Upload(upload) => {
                let spec = tool.input(&input_field, name)?;
                spec.require_file(&input_field)?;
                let checks = Checks {
                    max_bytes: spec.max_bytes,
                    fasta: spec.format == Some(InputFormat::Fasta),
                    count_residues: false,
                };
                files
                    .store_upload(upload, key, checks)
                    .await
                    .map_err(|err| err.into_input_error(&input_field))?
            }
            InputValue::Copy(from, residues) => {
                let mut file = files.copy(from, id, key).await?;
                file.residues = *residues;
                file
            }
            _ => continue,
        };
        staged.push(stored.clone());
        *value = InputValue::File(stored);
    }
    Ok(())
}

/// Checks and prices a submission whose inputs are in storage (or inline), as job `id`.
/// BAD_USER_INPUT names the field, after `field`.
pub(crate) fn plan(
    catalog: &Catalog,
    submission: Submission,
    field: &str,
    id: JobId,
) -> Result<Planned> {
    let tool = catalog
        .require(&format!("{field}tool"), &submission.tool)?
        .clone();
    let files: Vec<NewFile> = submission
        .inputs
        .iter()
        .filter_map(|(_, value)| match value {
            InputValue::File(file) => Some(file.clone()),
            _ => None,
        })
        .collect();
    let prepared = tool
        .prepare(submission.inputs, submission.settings)
        .map_err(|err| prefix_field(err, field))?;
    let name = match submission.name.map(|n| n.trim().to_owned()) {
        Some(name) if name.is_empty() || name.chars().count() > 200 => {
            return Err(Error::bad_input(
                format!("{field}name"),
                "must be 1 to 200 characters",
            ));
        }
        Some(name) => name,
        None => format!("{} {}", tool.title, Utc::now().format("%Y-%m-%d %H:%M")),
    };
    if !(-100..=100).contains(&submission.priority) {
        return Err(Error::bad_input(
            format!("{field}priority"),
            "must be between -100 and 100",
        ));
    }
    let estimate = tool
        .estimate(&prepared)
        .map_err(|err| prefix_field(err, field))?;
    let reuse_key = reuse::key(&tool, &prepared);
    Ok(Planned {
        id,
        files,
        tool: ToolVersion::of(&tool),
        name,
        prepared,
        estimate,
        priority: submission.priority,
        reuse_key,
    })
}

fn prefix_field(err: Error, prefix: &str) -> Error {
    match err {
        Error::BadInput { field, message } if !prefix.is_empty() => Error::BadInput {
            field: format!("{prefix}{field}"),
            message,
        },
        other => other,
    }
}

/// The price of a submission, without writing anything. (GraphQL allows uploads in mutations
/// only, so an estimate's inputs are text and URLs.)
pub fn estimate(catalog: &Catalog, submission: Submission) -> Result<Estimate> {
    Ok(plan(catalog, submission, "", JobId::new())?.estimate)
}

fn check_max_credits(price: Credits, max_credits: Option<i64>) -> Result<()> {
    match max_credits {
        Some(max) if max < 0 => Err(Error::bad_input("maxCredits", "must not be negative")),
        Some(max) if price.get() > max => Err(Error::bad_input(
            "maxCredits",
            format!("the price is {price} credits, more than the {max} you allowed"),
        )),
        _ => Ok(()),
    }
}

/// The job made with idempotency key `key`, if any; IDEMPOTENCY_KEY_REUSED if it was made by
/// another request than the one of `fingerprint`.
async fn find_by_idempotency_key(
    db: &impl sea_orm::ConnectionTrait,
    workspace_id: WorkspaceId,
    key: &str,
    fingerprint: &str,
) -> Result<Option<job::Model>> {
    let job = job::Entity::find_in_workspace(workspace_id)
        .filter(job::Column::IdempotencyKey.eq(key))
        .one(db)
        .await?;
    if let Some(job) = &job {
        let made = format!("the job {}", crate::ids::encode(job.id).0);
        idempotency::check_same(job.request_fingerprint.as_deref(), fingerprint, &made)?;
    }
    Ok(job)
}

/// Where a new job comes from, for retries and duplicates.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Lineage {
    pub(super) parent_id: JobId,
    pub(super) kind: ParentKind,
}

/// A job to write: its plan, and what ties it to a key, a batch, an earlier job or a workflow.
pub(crate) struct NewJob {
    pub(crate) planned: Planned,
    pub(crate) idempotency_key: Option<String>,
    pub(crate) request_fingerprint: Option<String>,
    pub(crate) batch_id: Option<BatchId>,
    pub(crate) lineage: Option<Lineage>,
    /// The workflow step the job runs.
    pub(crate) step: Option<StepOf>,
    pub(crate) reused: Option<Reused>,
}

/// The workflow step a job runs: its workflow, its name, and for a mapped step the item.
#[derive(Debug, Clone)]
pub(crate) struct StepOf {
    pub(crate) workflow: WorkflowId,
    pub(crate) name: String,
    pub(crate) item: Option<i32>,
}

/// What new jobs are charged from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Charging {
    /// The workspace's balance, above what running workflows reserve.
    Balance,
    /// The reservation of the workflow whose steps they run (`credits::ledger::Source`).
    Reservation,
}

/// The earlier job whose results the planned job may reuse, with copies of its output files
/// (pushed to `staged`, discarded if the submission fails); `None` when there is none, or when
/// it was deleted while its files were copied.
async fn reuse_earlier(
    by: Submitter<'_>,
    standing: JobStanding,
    workspace_id: WorkspaceId,
    planned: &Planned,
    staged: &mut Vec<NewFile>,
) -> Result<Option<Reused>> {
    let Some(key) = &planned.reuse_key else {
        return Ok(None);
    };
    let place = (workspace_id, planned.id);
    let by_whom = (by.viewer, standing);
    let Some((original, outputs)) = reuse::earlier(by.db, by.files, by_whom, key, place).await?
    else {
        return Ok(None);
    };
    staged.extend(outputs.iter().cloned());
    Ok(Some(Reused { original, outputs }))
}

/// Writes jobs of one workspace, in the caller's transaction, which holds the workspace's lock
/// (`workspaces::hold` or `workspaces::lock`): their rows (QUEUED at once when their inputs are
/// ready, COMPLETED when they reuse an earlier job's results), stored files and PENDING events,
/// their charges (one balance move for all; none for a reused job), then the QUEUED and COMPLETED
/// events. A job with URL inputs stays PENDING at stage DOWNLOADING until they are fetched.
/// Set-based: a batch of a thousand jobs costs about a dozen statements, as one job does (and
/// one more per earlier job whose results some of them reuse).
/// Returns the jobs in the order given.
pub(crate) async fn insert_jobs(
    tx: &crate::db::Transaction,
    submitter_id: UserId,
    workspace_id: WorkspaceId,
    new: Vec<NewJob>,
    charging: Charging,
) -> Result<Vec<job::Model>> {
    // The rows are not read back: their times are the database's, to the microsecond.
    let now = db::now();
    // The trace of the submitting request, which the jobs' runs continue.
    let trace_parent = crate::telemetry::traceparent(&tracing::Span::current());
    let mut rows = Vec::with_capacity(new.len());
    let mut stored = Vec::new();
    for NewJob {
        planned,
        idempotency_key,
        request_fingerprint,
        batch_id,
        lineage,
        step,
        reused,
    } in new
    {
        let downloads = planned
            .prepared
            .inputs
            .values()
            .any(|input| input.kind == StoredInputKind::Url);
        let start = match (&reused, downloads) {
            (Some(_), _) => Start::Reused,
            (None, true) => Start::Downloading,
            (None, false) => Start::Ready,
        };
        let charge = planned.charge(&reused);
        let inputs = planned
            .files
            .into_iter()
            .map(|file| (FileRole::Input, file));
        let outputs = reused.iter().flat_map(|reused| {
            reused
                .outputs
                .iter()
                .map(|file| (FileRole::Output, file.clone()))
        });
        stored.extend(inputs.chain(outputs).map(|file| (planned.id, file)));
        let (status, queued_at) = lifecycle::submitted_status(start, now);
        let ran_at = reused.as_ref().map(|_| now);
        rows.push(job::ActiveModel {
            id: Set(planned.id),
            workspace_id: Set(workspace_id),
            submitter_id: Set(submitter_id),
            tool: Set(planned.tool.name.clone()),
            tool_version: Set(planned.tool.version.clone()),
            name: Set(planned.name),
            status: Set(status),
            stage: Set((start == Start::Downloading).then(|| super::downloads::STAGE.to_owned())),
            progress: Set(if reused.is_some() { 1.0 } else { 0.0 }),
            inputs: Set(planned.prepared.inputs_json()),
            settings: Set(planned.prepared.settings),
            result: Set(reused.as_ref().and_then(|r| r.original.result.clone())),
            error_message: Set(None),
            error_code: Set(None),
            attempt: Set(0),
            max_attempts: Set(planned.tool.max_attempts as i32),
            credit_cost: Set(charge.get()),
            refunded: Set(false),
            visibility: Set(Visibility::Private),
            priority: Set(planned.priority),
            parent_id: Set(lineage.map(|l| l.parent_id)),
            parent_kind: Set(lineage.map(|l| l.kind)),
            batch_id: Set(batch_id),
            idempotency_key: Set(idempotency_key),
            request_fingerprint: Set(request_fingerprint),
            resources: Set(None),
            created_at: Set(now),
            updated_at: Set(now),
            queued_at: Set(queued_at),
            started_at: Set(ran_at),
            finished_at: Set(ran_at),
            run_after: Set(None),
            worker_id: Set(None),
            lease_expires_at: Set(None),
            heartbeat_at: Set(None),
            trace_parent: Set(trace_parent.clone()),
            workflow_id: Set(step.as_ref().map(|step| step.workflow)),
            workflow_item: Set(step.as_ref().and_then(|step| step.item)),
            workflow_step: Set(step.map(|step| step.name)),
            reuse_key: Set(planned.reuse_key),
            reused_from: Set(reused.map(|r| r.original.id)),
        });
    }
    let jobs = lifecycle::write_submitted(tx, rows).await?;
    for (job_id, (role, file)) in &stored {
        file.insert(tx, workspace_id, *job_id, *role).await?;
    }
    let charges: Vec<ledger::Entry> = jobs
        .iter()
        .filter(|job| job.credit_cost > 0)
        .map(|job| ledger::Entry {
            workspace_id,
            kind: TransactionKind::Charge,
            amount: -job.credit_cost,
            actor_id: Some(submitter_id),
            job_id: Some(job.id),
            note: Some(format!("{}: {}", job.tool, job.name)),
        })
        .collect();
    if !charges.is_empty() {
        let source = match charging {
            Charging::Balance => ledger::Source::Balance,
            Charging::Reservation => ledger::Source::Reservation,
        };
        ledger::append_held(tx, charges, source).await?;
    }
    Ok(jobs)
}

/// The viewer's standing towards the jobs of the workspace they submit to: FORBIDDEN (NOT_FOUND
/// for a workspace they cannot read) unless they may submit jobs there.
async fn job_standing(
    db: &DatabaseConnection,
    viewer: &Viewer,
    workspace_id: WorkspaceId,
) -> Result<JobStanding> {
    let access = WorkspaceAccess::load(db, viewer, workspace_id).await?;
    access.check(WorkspaceAction::SubmitJobs)?;
    Ok(JobStanding {
        workspace: access.standing,
        viewer_id: viewer.user_id(),
    })
}

/// After a submission commits: starts the downloads of jobs that wait for them.
fn start_downloads<'a>(files: &Files, jobs: impl IntoIterator<Item = &'a job::Model>) {
    for job in jobs {
        if job.status == JobStatus::Pending {
            files.request_download(job.id);
        }
    }
}

/// Who submits, and what a submission uses: the database, the tool catalog and file storage.
#[derive(Clone, Copy)]
pub struct Submitter<'a> {
    pub db: &'a DatabaseConnection,
    pub catalog: &'a Catalog,
    pub files: &'a Files,
    pub viewer: &'a Viewer,
}

/// Submits a job: stores its uploads, checks, charges and queues it in one transaction.
/// Nothing is written, and no uploaded file is left in storage, when any check fails.
pub async fn submit(
    by: Submitter<'_>,
    workspace_id: WorkspaceId,
    submission: Submission,
    options: SubmitOptions,
) -> Result<Submitted> {
    submit_with_lineage(by, workspace_id, submission, options, None).await
}

/// `submit`, of a job made from another (`lineage`): the shared body of submit, retry and
/// duplicate.
pub(super) async fn submit_with_lineage(
    by: Submitter<'_>,
    workspace_id: WorkspaceId,
    submission: Submission,
    options: SubmitOptions,
    lineage: Option<Lineage>,
) -> Result<Submitted> {
    let mut staged = Vec::new();
    let result = submit_staged(by, workspace_id, submission, options, lineage, &mut staged).await;
    match &result {
        Ok(submitted) if !submitted.replayed => start_downloads(by.files, [&submitted.job]),
        _ => by.files.discard(&staged).await,
    }
    result
}

async fn submit_staged(
    by: Submitter<'_>,
    workspace_id: WorkspaceId,
    mut submission: Submission,
    options: SubmitOptions,
    lineage: Option<Lineage>,
    staged: &mut Vec<NewFile>,
) -> Result<Submitted> {
    let Submitter {
        db,
        catalog,
        files,
        viewer,
    } = by;
    let user = viewer.require_user()?;
    // Checked first so that nothing is stored for a refused submission, and again under the
    // workspace's lock, where the job is written.
    let standing = job_standing(db, viewer, workspace_id).await?;
    idempotency::check_key(options.idempotency_key.as_deref())?;
    let job_id = JobId::new();
    stage(
        files,
        catalog,
        &mut submission,
        (workspace_id, job_id),
        "",
        staged,
    )
    .await?;
    // Compared once uploads are stored: a file is part of the request by its content.
    let fingerprint = options.idempotency_key.as_ref().map(|_| {
        let parent = lineage.map(|l| (l.parent_id, sea_orm::ActiveEnum::to_value(&l.kind)));
        idempotency::job_fingerprint(&submission, parent, options.max_credits, options.reuse)
    });
    if let (Some(key), Some(fingerprint)) = (&options.idempotency_key, &fingerprint)
        && let Some(job) = find_by_idempotency_key(db, workspace_id, key, fingerprint).await?
    {
        return Ok(Submitted {
            job,
            replayed: true,
        });
    }
    let planned = plan(catalog, submission, "", job_id)?;
    let reused = if options.reuse {
        reuse_earlier(by, standing, workspace_id, &planned, staged).await?
    } else {
        None
    };
    check_max_credits(planned.charge(&reused), options.max_credits)?;
    let tx = db::begin_write(db).await?;
    workspaces::hold(&tx, viewer, workspace_id, Hold::Change)
        .await?
        .check(WorkspaceAction::SubmitJobs)?;
    let inserted = insert_jobs(
        &tx,
        user.id,
        workspace_id,
        vec![NewJob {
            planned,
            idempotency_key: options.idempotency_key.clone(),
            request_fingerprint: fingerprint.clone(),
            batch_id: None,
            lineage,
            step: None,
            reused,
        }],
        Charging::Balance,
    )
    .await
    .map(|mut jobs| jobs.pop().expect("one job was written"));
    match inserted {
        Ok(job) => {
            tx.commit().await?;
            Ok(Submitted {
                job,
                replayed: false,
            })
        }
        // A concurrent retry with the same key won the race: answer with its job.
        Err(Error::Database(err)) if is_unique_violation(&err) => {
            drop(tx);
            let (Some(key), Some(fingerprint)) = (&options.idempotency_key, &fingerprint) else {
                return Err(Error::Database(err));
            };
            let job = find_by_idempotency_key(db, workspace_id, key, fingerprint)
                .await?
                .ok_or_else(|| {
                    Error::conflict("a job with this idempotency key is being submitted")
                })?;
            Ok(Submitted {
                job,
                replayed: true,
            })
        }
        Err(err) => Err(err),
    }
}

/// A submitted batch with its jobs, and whether it is an earlier one returned for a repeated
/// idempotency key.
#[derive(Debug, Clone)]
pub struct SubmittedBatch {
    pub batch: batch::Model,
    pub jobs: Vec<job::Model>,
    pub replayed: bool,
    /// The submitter's standing towards the jobs.
    pub standing: JobStanding,
}

/// Submits many jobs as one batch: all or nothing, priced as their sum. An idempotency key
/// names the whole batch.
pub async fn submit_batch(
    by: Submitter<'_>,
    workspace_id: WorkspaceId,
    name: Option<String>,
    submissions: Vec<Submission>,
    options: SubmitOptions,
) -> Result<SubmittedBatch> {
    let mut staged = Vec::new();
    let result =
        submit_batch_staged(by, workspace_id, name, submissions, options, &mut staged).await;
    match &result {
        Ok(submitted) if !submitted.replayed => start_downloads(by.files, &submitted.jobs),
        _ => by.files.discard(&staged).await,
    }
    result
}

/// The batch made with idempotency key `key`, with its jobs, if any; IDEMPOTENCY_KEY_REUSED if
/// it was made by another request than the one of `fingerprint`.
async fn find_batch_by_idempotency_key(
    db: &impl sea_orm::ConnectionTrait,
    standing: JobStanding,
    workspace_id: WorkspaceId,
    key: &str,
    fingerprint: &str,
) -> Result<Option<SubmittedBatch>> {
    use sea_orm::QueryOrder as _;
    let Some(batch) = batch::Entity::find_in_workspace(workspace_id)
        .filter(batch::Column::IdempotencyKey.eq(key))
        .one(db)
        .await?
    else {
        return Ok(None);
    };
    let made = format!("the batch {}", crate::ids::encode(batch.id).0);
    idempotency::check_same(batch.request_fingerprint.as_deref(), fingerprint, &made)?;
    let jobs = super::history::batch_jobs(batch.id)
        .order_by_asc(job::Column::Id)
        .all(db)
        .await?;
    Ok(Some(SubmittedBatch {
        batch,
        jobs,
        replayed: true,
        standing,
    }))
}

async fn submit_batch_staged(
    by: Submitter<'_>,
    workspace_id: WorkspaceId,
    name: Option<String>,
    submissions: Vec<Submission>,
    options: SubmitOptions,
    staged: &mut Vec<NewFile>,
) -> Result<SubmittedBatch> {
    let Submitter {
        db,
        catalog,
        files,
        viewer,
    } = by;
    let user = viewer.require_user()?;
    // Checked first so that nothing is stored for a refused batch, and again under the
    // workspace's lock, where the batch is written.
    let standing = job_standing(db, viewer, workspace_id).await?;
    if submissions.is_empty() || submissions.len() > MAX_BATCH_JOBS {
        return Err(Error::bad_input(
            "jobs",
            format!("a batch holds 1 to {MAX_BATCH_JOBS} jobs"),
        ));
    }
    idempotency::check_key(options.idempotency_key.as_deref())?;
    let mut forms = Vec::new();
    let requested_name = name.clone();
    let name = name.map(|n| n.trim().to_owned()).filter(|n| !n.is_empty());
    let mut planned = Vec::with_capacity(submissions.len());
    for (i, mut submission) in submissions.into_iter().enumerate() {
        let field = format!("jobs.{i}.");
        let job_id = JobId::new();
        stage(
            files,
            catalog,
            &mut submission,
            (workspace_id, job_id),
            &field,
            staged,
        )
        .await?;
        if options.idempotency_key.is_some() {
            forms.push(idempotency::submission_form(&submission));
        }
        planned.push(plan(catalog, submission, &field, job_id)?);
    }
    let fingerprint = options.idempotency_key.as_ref().map(|_| {
        idempotency::batch_fingerprint(
            requested_name.as_deref(),
            forms,
            options.max_credits,
            options.reuse,
        )
    });
    if let (Some(key), Some(fingerprint)) = (&options.idempotency_key, &fingerprint)
        && let Some(earlier) =
            find_batch_by_idempotency_key(db, standing, workspace_id, key, fingerprint).await?
    {
        return Ok(earlier);
    }
    // One lookup per job that asks for reuse.
    let mut reused = Vec::with_capacity(planned.len());
    for planned in &planned {
        reused.push(if options.reuse {
            reuse_earlier(by, standing, workspace_id, planned, staged).await?
        } else {
            None
        });
    }
    let total = Credits::checked_sum(planned.iter().zip(&reused).map(|(p, r)| p.charge(r)))
        .ok_or_else(|| crate::tools::pricing::too_expensive("jobs"))?;
    check_max_credits(total, options.max_credits)?;
    let tx = db::begin_write(db).await?;
    workspaces::hold(&tx, viewer, workspace_id, Hold::Change)
        .await?
        .check(WorkspaceAction::SubmitJobs)?;
    let inserted = batch::ActiveModel {
        id: Set(BatchId::new()),
        workspace_id: Set(workspace_id),
        submitter_id: Set(user.id),
        name: Set(name),
        idempotency_key: Set(options.idempotency_key.clone()),
        request_fingerprint: Set(fingerprint.clone()),
        created_at: Set(Utc::now()),
    }
    .insert(&tx)
    .await;
    let batch = match inserted {
        Ok(batch) => batch,
        // A concurrent request with the same key won the race: answer with its batch.
        Err(err) if is_unique_violation(&err) => {
            drop(tx);
            let (Some(key), Some(fingerprint)) = (&options.idempotency_key, &fingerprint) else {
                return Err(err.into());
            };
            return find_batch_by_idempotency_key(db, standing, workspace_id, key, fingerprint)
                .await?
                .ok_or_else(|| {
                    Error::conflict("a batch with this idempotency key is being submitted")
                });
        }
        Err(err) => return Err(err.into()),
    };
    // Charged as one move of the whole batch's price: INSUFFICIENT_CREDITS names that price.
    let new = planned
        .into_iter()
        .zip(reused)
        .map(|(planned, reused)| NewJob {
            planned,
            idempotency_key: None,
            request_fingerprint: None,
            batch_id: Some(batch.id),
            lineage: None,
            step: None,
            reused,
        })
        .collect();
    let jobs = insert_jobs(&tx, user.id, workspace_id, new, Charging::Balance).await?;
    tx.commit().await?;
    Ok(SubmittedBatch {
        batch,
        jobs,
        replayed: false,
        standing,
    })
}
