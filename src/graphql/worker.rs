//! GraphQL for remote workers: claim jobs of remote tools, heartbeat, report progress, complete
//! or fail. Only worker tokens use these fields, and worker tokens use nothing else.

use std::sync::Arc;

use async_graphql::parser::types::{ExecutableDocument, Selection, SelectionSet};
use async_graphql::{Context, ID, InputObject, Json, Object, SimpleObject, Upload as UploadScalar};
use chrono::{DateTime, Utc};
use entity::file;

use super::files::FileView;
use super::jobs::JobStatusView;
use super::{catalog, db, files, viewer};
use crate::config::ServerConfig;
use crate::error::{ApiResult, Error};
use crate::files::Upload;
use crate::ids::{self};
use crate::queue::remote::{self, Claimed};
use crate::tools::{Prepared, StoredInputKind};

/// The first root field of a document that is not the worker API's, if any: a worker token
/// may ask for nothing else. Checked before execution, and only for worker tokens, so other
/// requests pay nothing for it.
pub fn other_than_worker_fields(document: &ExecutableDocument) -> Option<String> {
    fn first_other(
        document: &ExecutableDocument,
        selections: &SelectionSet,
        depth: usize,
    ) -> Option<String> {
        // Fragments nest only so deep; a cycle is refused by validation anyway.
        if depth > 8 {
            return Some("...".to_owned());
        }
        selections.items.iter().find_map(|item| match &item.node {
            Selection::Field(field) => {
                let name = field.node.name.node.as_str();
                (!crate::access::worker_may_call(name)).then(|| name.to_owned())
            }
            Selection::InlineFragment(fragment) => {
                first_other(document, &fragment.node.selection_set.node, depth + 1)
            }
            Selection::FragmentSpread(spread) => {
                match document.fragments.get(&spread.node.fragment_name.node) {
                    Some(fragment) => {
                        first_other(document, &fragment.node.selection_set.node, depth + 1)
                    }
                    None => Some(spread.node.fragment_name.node.to_string()),
                }
            }
        })
    }
    document
        .operations
        .iter()
        .find_map(|(_, operation)| first_other(document, &operation.node.selection_set.node, 0))
}

fn worker_of<'a>(ctx: &Context<'a>) -> Result<&'a crate::access::WorkerToken, Error> {
    viewer(ctx).require_worker()
}

/// An input of a claimed job.
#[derive(SimpleObject)]
struct ClaimedJobInput {
    name: String,
    /// TEXT, FILE or URL, as it was submitted.
    kind: String,
    /// The content, when given inline.
    text: Option<String>,
    /// The stored file, for uploaded and fetched content.
    file: Option<ClaimedFile>,
}

/// An input file of a claimed job.
#[derive(SimpleObject)]
struct ClaimedFile {
    id: ID,
    name: String,
    size: super::scalars::ByteCount,
    content_type: String,
    sha256: String,
    /// Where the worker downloads it with its worker token, while the attempt runs.
    download_url: String,
}

/// A job claimed by a remote worker, with everything it needs to run it.
pub struct ClaimedJobView(Claimed);

#[Object(name = "ClaimedJob")]
impl ClaimedJobView {
    /// The job's id, as the rest of the API names it.
    async fn id(&self) -> ID {
        ids::encode(self.0.job.id)
    }

    async fn tool(&self) -> &str {
        &self.0.job.tool
    }

    async fn tool_version(&self) -> &str {
        &self.0.job.tool_version
    }

    async fn name(&self) -> &str {
        &self.0.job.name
    }

    /// This attempt's number, from 1.
    async fn attempt(&self) -> i32 {
        self.0.job.attempt
    }

    async fn max_attempts(&self) -> i32 {
        self.0.job.max_attempts
    }

    /// The fence of this attempt: pass it to every later call about it.
    async fn attempt_token(&self) -> &str {
        &self.0.attempt_token
    }

    /// The lease ends then unless a heartbeat renews it; the job is then taken back.
    async fn lease_expires_at(&self) -> Option<DateTime<Utc>> {
        self.0.job.lease_expires_at
    }

    async fn started_at(&self) -> Option<DateTime<Utc>> {
        self.0.job.started_at
    }

    /// The run's time limit: past `startedAt` plus this, the job ends TIMEOUT.
    async fn timeout_seconds(&self, ctx: &Context<'_>) -> Option<i64> {
        catalog(ctx)
            .get(&self.0.job.tool)
            .map(|tool| i64::try_from(tool.timeout_seconds).unwrap_or(i64::MAX))
    }

    /// The W3C trace context of the request that submitted the job, when the server exports
    /// traces: send it as the `traceparent` header of this attempt's calls, and make the run's
    /// own spans its children, so the run continues the submission's trace.
    async fn traceparent(&self) -> Option<&str> {
        self.0.job.trace_parent.as_deref()
    }

    /// The settings, with the tool's defaults filled in.
    async fn settings(&self) -> Json<serde_json::Value> {
        Json(self.0.job.settings.clone())
    }

    async fn inputs(&self, ctx: &Context<'_>) -> Vec<ClaimedJobInput> {
        let config = ctx.data_unchecked::<Arc<ServerConfig>>();
        let prepared = Prepared::from_stored(&self.0.job.inputs, &self.0.job.settings);
        prepared
            .inputs
            .into_iter()
            .map(|(name, input)| {
                let file = input
                    .file_id
                    .and_then(|id| self.0.files.iter().find(|file| file.id == id))
                    .map(|file| claimed_file(config, file, &self.0.attempt_token));
                ClaimedJobInput {
                    name,
                    kind: match input.kind {
                        StoredInputKind::Text => "TEXT",
                        StoredInputKind::File => "FILE",
                        StoredInputKind::Url => "URL",
                    }
                    .to_owned(),
                    text: input.text,
                    file,
                }
            })
            .collect()
    }
}

fn claimed_file(config: &ServerConfig, file: &file::Model, attempt: &str) -> ClaimedFile {
    let id = ids::encode(file.id);
    ClaimedFile {
        download_url: format!(
            "{}/files/{}?attempt={attempt}",
            config.public_url(),
            id.as_str()
        ),
        id,
        name: file.name.clone(),
        size: file.size.into(),
        content_type: file.content_type.clone(),
        sha256: file.sha256.clone(),
    }
}

#[derive(InputObject)]
struct ClaimJobsInput {
    /// The worker's name, e.g. the host or the cluster job; shown on the jobs it runs.
    worker: String,
    /// The remote tools it runs.
    tools: Vec<String>,
    /// Most jobs to claim, from 1 to 100.
    #[graphql(default = 1)]
    limit: i32,
    /// How long each claim holds without a heartbeat; the server's lease by default.
    lease_seconds: Option<i32>,
}

#[derive(SimpleObject)]
struct ClaimJobsPayload {
    /// The claimed jobs, none when nothing waits.
    jobs: Vec<ClaimedJobView>,
}

#[derive(SimpleObject)]
struct HeartbeatPayload {
    /// The job was cancelled: stop the run; nothing more is accepted for it.
    cancelled: bool,
    /// Until when the lease holds now.
    lease_expires_at: Option<DateTime<Utc>>,
}

#[derive(SimpleObject)]
struct ReportJobProgressPayload {
    /// The job was cancelled: stop the run.
    cancelled: bool,
}

#[derive(SimpleObject)]
struct FinishJobPayload {
    /// The job's id.
    id: ID,
    /// The job's status now: COMPLETED, or RETRY or FAILED after a failure.
    status: JobStatusView,
    /// The stored output files.
    outputs: Vec<FileView>,
}

impl FinishJobPayload {
    fn new(job: &entity::job::Model, outputs: Vec<file::Model>) -> Self {
        FinishJobPayload {
            id: ids::encode(job.id),
            status: job.status.into(),
            outputs: outputs.into_iter().map(FileView).collect(),
        }
    }
}

#[derive(Default)]
pub struct WorkerMutation;

#[Object]
impl WorkerMutation {
    /// Claims QUEUED jobs of remote tools for a remote worker (worker tokens only).
    async fn claim_jobs(
        &self,
        ctx: &Context<'_>,
        input: ClaimJobsInput,
    ) -> ApiResult<ClaimJobsPayload> {
        let worker = worker_of(ctx)?;
        let config = ctx.data_unchecked::<Arc<ServerConfig>>();
        let lease = remote::lease(input.lease_seconds, config.lease_seconds)?;
        let limits = crate::queue::Limits::new(catalog(ctx), Some(config.workspace_max_running));
        let request = remote::ClaimRequest {
            worker: input.worker,
            tools: input.tools,
            limit: u64::try_from(input.limit).unwrap_or(0),
            lease,
        };
        let claimed = remote::claim(db(ctx), catalog(ctx), &limits, worker, request).await?;
        metrics(ctx).claimed(&claimed.iter().map(|c| c.job.clone()).collect::<Vec<_>>());
        Ok(ClaimJobsPayload {
            jobs: claimed.into_iter().map(ClaimedJobView).collect(),
        })
    }

    /// Renews the lease of a running attempt; says when the job was cancelled.
    async fn heartbeat_job(
        &self,
        ctx: &Context<'_>,
        attempt: String,
        lease_seconds: Option<i32>,
    ) -> ApiResult<HeartbeatPayload> {
        let worker = worker_of(ctx)?;
        let lease = lease_seconds
            .map(|seconds| remote::lease(Some(seconds), 0))
            .transpose()?;
        let beat = remote::heartbeat(db(ctx), worker, &attempt, lease).await?;
        Ok(HeartbeatPayload {
            cancelled: beat.cancelled,
            lease_expires_at: beat.lease_expires_at,
        })
    }

    /// Records the progress (0 to 1) and stage of a running attempt.
    async fn report_job_progress(
        &self,
        ctx: &Context<'_>,
        attempt: String,
        progress: Option<f64>,
        stage: Option<String>,
    ) -> ApiResult<ReportJobProgressPayload> {
        let worker = worker_of(ctx)?;
        let reports = ctx.data_unchecked::<crate::queue::reports::Reports>();
        let cancelled = remote::report(
            db(ctx),
            reports,
            worker,
            &attempt,
            progress,
            stage.as_deref(),
        )
        .await?;
        Ok(ReportJobProgressPayload { cancelled })
    }

    /// Completes a running attempt with its result and output files (GraphQL multipart
    /// request). STALE_ATTEMPT once the attempt is no longer the job's running one.
    async fn complete_job(
        &self,
        ctx: &Context<'_>,
        attempt: String,
        result: Option<Json<serde_json::Value>>,
        outputs: Option<Vec<UploadScalar>>,
    ) -> ApiResult<FinishJobPayload> {
        let worker = worker_of(ctx)?;
        let uploads = outputs
            .unwrap_or_default()
            .into_iter()
            .enumerate()
            .map(|(i, upload)| {
                let upload = upload.value(ctx).map_err(|err| {
                    Error::bad_input(
                        format!("outputs.{i}"),
                        format!("the upload cannot be read: {err}"),
                    )
                })?;
                Ok(Upload {
                    filename: upload.filename,
                    content_type: upload.content_type,
                    content: Arc::new(upload.content),
                })
            })
            .collect::<Result<Vec<_>, Error>>()?;
        let result = result.map_or_else(|| serde_json::json!({}), |Json(value)| value);
        let job = remote::complete(db(ctx), files(ctx), worker, &attempt, result, uploads).await?;
        ended(ctx, &job);
        let outputs =
            super::files::job_files(ctx, job.id, Some(super::files::FileRoleView::Output))
                .await?
                .into_iter()
                .map(|view| view.0)
                .collect();
        Ok(FinishJobPayload::new(&job, outputs))
    }

    /// Fails a running attempt. A transient failure is retried with backoff while attempts
    /// remain; a permanent one ends the job FAILED and refunds it.
    async fn fail_job(
        &self,
        ctx: &Context<'_>,
        attempt: String,
        message: String,
        transient: bool,
    ) -> ApiResult<FinishJobPayload> {
        let worker = worker_of(ctx)?;
        let job = remote::fail(db(ctx), worker, &attempt, &message, transient).await?;
        ended(ctx, &job);
        Ok(FinishJobPayload::new(&job, Vec::new()))
    }
}

fn metrics<'a>(ctx: &Context<'a>) -> &'a crate::metrics::Metrics {
    ctx.data_unchecked::<Arc<crate::metrics::Metrics>>()
}

/// Counts a remote attempt's ending in the metrics, as a local run's is.
fn ended(ctx: &Context<'_>, job: &entity::job::Model) {
    let seconds = match (job.started_at, job.finished_at) {
        (Some(started), Some(finished)) => (finished - started).as_seconds_f64(),
        (Some(started), None) => (chrono::Utc::now() - started).as_seconds_f64(),
        _ => 0.0,
    };
    metrics(ctx).finished(&job.tool, job.status, seconds);
}
