//! GraphQL roots for jobs: reading tools, prices, jobs and batches; submitting and acting on jobs.

use async_graphql::{ComplexObject, Context, ID, InputObject, Json, Object, SimpleObject};
use entity::ids::{BatchId, JobId, WorkspaceId};
use serde_json::Value;

use super::jobs::{
    BatchView, CostEstimate, JobInputValue, JobView, ToolView, VisibilityView, input_values,
};
use super::{catalog, db, files, viewer};
use crate::access::JobAccess;
use crate::error::{ApiResult, Error};
use crate::ids::{self};
use crate::jobs::actions::{self, Overrides};
use crate::jobs::history;
use crate::jobs::service::{self, Submission, SubmitOptions, Submitted};

#[derive(Default)]
pub struct JobsQuery;

#[derive(InputObject)]
struct EstimateJobCostInput {
    tool: String,
    #[graphql(default)]
    inputs: Vec<JobInputValue>,
    settings: Option<Json<Value>>,
}

#[Object]
impl JobsQuery {
    /// The tools on offer.
    async fn tools(&self, ctx: &Context<'_>) -> Vec<ToolView> {
        catalog(ctx).all().iter().cloned().map(ToolView).collect()
    }

    /// One tool by name; null if there is none.
    async fn tool(&self, ctx: &Context<'_>, name: String) -> Option<ToolView> {
        catalog(ctx).get(&name).cloned().map(ToolView)
    }

    /// The price a submission would be charged, with its breakdown. Writes nothing.
    async fn estimate_job_cost(
        &self,
        ctx: &Context<'_>,
        input: EstimateJobCostInput,
    ) -> ApiResult<CostEstimate> {
        let submission = Submission {
            tool: input.tool,
            inputs: input_values(ctx, input.inputs)?,
            settings: input.settings.map(|s| s.0),
            ..Default::default()
        };
        Ok(service::estimate(catalog(ctx), submission)?.into())
    }

    /// A job the viewer may see; NOT_FOUND otherwise.
    async fn job(&self, ctx: &Context<'_>, id: ID) -> ApiResult<JobView> {
        let id = ids::decode::<JobId>("id", &id)?;
        Ok(JobView::from_access(
            JobAccess::load(db(ctx), viewer(ctx), id).await?,
        ))
    }

    /// A batch of a workspace the viewer can read; NOT_FOUND otherwise.
    async fn batch(&self, ctx: &Context<'_>, id: ID) -> ApiResult<BatchView> {
        let id = ids::decode::<BatchId>("id", &id)?;
        let (summary, access) = history::batch(db(ctx), viewer(ctx), id).await?;
        Ok(BatchView(summary, access))
    }
}

#[derive(InputObject)]
struct SubmitJobInput {
    workspace_id: ID,
    /// The tool's name.
    tool: String,
    /// Default: the tool's title and the time.
    name: Option<String>,
    #[graphql(default)]
    inputs: Vec<JobInputValue>,
    /// Checked against the tool's settings schema; its defaults are filled in.
    settings: Option<Json<Value>>,
    /// Higher runs first; -100 to 100.
    #[graphql(default = 0)]
    priority: i32,
    /// Sending the same key again from the same workspace returns the first job, uncharged;
    /// with a different request (tool, name, priority, settings, inputs, maxCredits or reuse),
    /// IDEMPOTENCY_KEY_REUSED. 1 to 200 characters.
    idempotency_key: Option<String>,
    /// Refuse, writing nothing, if the price is higher. A price is never above 2,000,000,000
    /// credits: a submission that would cost more is refused (BAD_USER_INPUT naming the field).
    /// A job that reuses an earlier job's results (`reuse`) costs nothing, so it is accepted
    /// whatever its price would have been; the limit applies when it runs.
    max_credits: Option<i32>,
    /// Reuse results: when the workspace holds a COMPLETED job that the viewer may read of the
    /// same tool and tool version, with the same settings (defaults filled in) and inputs of the
    /// same content (files by SHA-256, texts by their text), the job completes at once with
    /// that job's result and copies of its output files, uncharged, naming it in `reusedFrom`;
    /// the newest such job is reused. Otherwise it runs as any job. A job with URL inputs runs:
    /// their content is not known before they are fetched.
    #[graphql(default = false)]
    reuse: bool,
}

#[derive(SimpleObject)]
struct SubmitJobPayload {
    job: JobView,
    /// True when an earlier job was returned for a repeated idempotency key.
    replayed: bool,
}

#[derive(InputObject)]
struct BatchJobInput {
    tool: String,
    name: Option<String>,
    #[graphql(default)]
    inputs: Vec<JobInputValue>,
    settings: Option<Json<Value>>,
    #[graphql(default = 0)]
    priority: i32,
}

#[derive(InputObject)]
struct SubmitBatchInput {
    workspace_id: ID,
    name: Option<String>,
    jobs: Vec<BatchJobInput>,
    /// Refuse, writing nothing, if the batch's total price is higher. A batch's total is never
    /// above 2,000,000,000 credits.
    max_credits: Option<i32>,
    /// Names the whole batch: sending the same key again from the same workspace returns the
    /// first batch, uncharged; with a different request, IDEMPOTENCY_KEY_REUSED. Batches' keys
    /// are apart from single jobs' keys. 1 to 200 characters.
    idempotency_key: Option<String>,
    /// As in `submitJob`, for each job of the batch: those that reuse an earlier job's results
    /// complete at once and count nothing towards the total price.
    #[graphql(default = false)]
    reuse: bool,
}

#[derive(SimpleObject)]
#[graphql(complex)]
struct SubmitBatchPayload {
    jobs: Vec<JobView>,
    /// True when an earlier batch was returned for a repeated idempotency key.
    replayed: bool,
    #[graphql(skip)]
    batch_id: BatchId,
}

#[ComplexObject]
impl SubmitBatchPayload {
    /// The batch and the summary of its jobs, read when this field is asked for.
    async fn batch(&self, ctx: &Context<'_>) -> ApiResult<BatchView> {
        let (summary, access) = history::batch(db(ctx), viewer(ctx), self.batch_id).await?;
        Ok(BatchView(summary, access))
    }
}

#[derive(InputObject)]
struct JobIdInput {
    job_id: ID,
}

#[derive(InputObject)]
struct RenameJobInput {
    job_id: ID,
    name: String,
}

#[derive(SimpleObject)]
struct JobPayload {
    job: JobView,
}

#[derive(SimpleObject)]
struct DeleteJobPayload {
    deleted_job_id: ID,
}

#[derive(InputObject)]
struct RetryJobInput {
    job_id: ID,
    /// As in `submitJob`: the same key again returns the first retry, uncharged.
    idempotency_key: Option<String>,
    /// As in `submitJob`.
    max_credits: Option<i32>,
}

#[derive(InputObject)]
struct DuplicateJobInput {
    job_id: ID,
    name: Option<String>,
    /// Merged over the original's settings, key by key.
    settings: Option<Json<Value>>,
    /// Replace the original's inputs of the same names.
    #[graphql(default)]
    inputs: Vec<JobInputValue>,
    /// Where the copy goes; default the original's workspace.
    workspace_id: Option<ID>,
    /// As in `submitJob`, in the workspace of the copy: the same key again returns the first
    /// copy, uncharged.
    idempotency_key: Option<String>,
    /// As in `submitJob`.
    max_credits: Option<i32>,
}

#[derive(InputObject)]
struct SetJobSharingInput {
    job_id: ID,
    visibility: VisibilityView,
    /// For INVITED: who may see the job, at most 100 e-mails.
    #[graphql(default)]
    invited_emails: Vec<String>,
}

#[derive(Default)]
pub struct JobsMutation;

/// The request's viewer, submitting with the server's services.
pub(super) fn submitter<'a>(ctx: &Context<'a>) -> service::Submitter<'a> {
    service::Submitter {
        db: db(ctx),
        catalog: catalog(ctx),
        files: files(ctx),
        viewer: viewer(ctx),
    }
}

async fn job_view(ctx: &Context<'_>, job: entity::job::Model) -> ApiResult<JobView> {
    Ok(JobView::from_access(
        JobAccess::load(db(ctx), viewer(ctx), job.id).await?,
    ))
}

async fn submitted(ctx: &Context<'_>, submitted: Submitted) -> ApiResult<SubmitJobPayload> {
    Ok(SubmitJobPayload {
        job: job_view(ctx, submitted.job).await?,
        replayed: submitted.replayed,
    })
}

fn job_id(id: &ID) -> Result<JobId, Error> {
    ids::decode::<JobId>("jobId", id)
}

#[Object]
impl JobsMutation {
    /// Submits a job: checks it, charges its price and queues it, all or nothing.
    async fn submit_job(
        &self,
        ctx: &Context<'_>,
        input: SubmitJobInput,
    ) -> ApiResult<SubmitJobPayload> {
        let workspace_id = ids::decode::<WorkspaceId>("workspaceId", &input.workspace_id)?;
        let submission = Submission {
            tool: input.tool,
            name: input.name,
            inputs: input_values(ctx, input.inputs)?,
            settings: input.settings.map(|s| s.0),
            priority: input.priority,
        };
        let options = SubmitOptions {
            idempotency_key: input.idempotency_key,
            max_credits: input.max_credits.map(i64::from),
            reuse: input.reuse,
        };
        let result = service::submit(submitter(ctx), workspace_id, submission, options).await?;
        submitted(ctx, result).await
    }

    /// Submits many jobs as one batch: all or nothing, priced as their sum.
    async fn submit_batch(
        &self,
        ctx: &Context<'_>,
        input: SubmitBatchInput,
    ) -> ApiResult<SubmitBatchPayload> {
        let workspace_id = ids::decode::<WorkspaceId>("workspaceId", &input.workspace_id)?;
        let submissions = input
            .jobs
            .into_iter()
            .enumerate()
            .map(|(i, job)| {
                let inputs = input_values(ctx, job.inputs).map_err(|err| match err {
                    Error::BadInput { field, message } => Error::BadInput {
                        field: format!("jobs.{i}.{field}"),
                        message,
                    },
                    other => other,
                })?;
                Ok(Submission {
                    tool: job.tool,
                    name: job.name,
                    inputs,
                    settings: job.settings.map(|s| s.0),
                    priority: job.priority,
                })
            })
            .collect::<Result<Vec<_>, Error>>()?;
        let options = SubmitOptions {
            idempotency_key: input.idempotency_key,
            max_credits: input.max_credits.map(i64::from),
            reuse: input.reuse,
        };
        let submitted = service::submit_batch(
            submitter(ctx),
            workspace_id,
            input.name,
            submissions,
            options,
        )
        .await?;
        let standing = submitted.standing;
        Ok(SubmitBatchPayload {
            jobs: submitted
                .jobs
                .into_iter()
                .map(|job| JobView::new(job, standing))
                .collect(),
            replayed: submitted.replayed,
            batch_id: submitted.batch.id,
        })
    }

    /// Renames a job.
    async fn rename_job(&self, ctx: &Context<'_>, input: RenameJobInput) -> ApiResult<JobPayload> {
        let job =
            actions::rename(db(ctx), viewer(ctx), job_id(&input.job_id)?, &input.name).await?;
        Ok(JobPayload {
            job: job_view(ctx, job).await?,
        })
    }

    /// Deletes a finished job with its timeline, shares and files; its ledger entries stay.
    async fn delete_job(
        &self,
        ctx: &Context<'_>,
        input: JobIdInput,
    ) -> ApiResult<DeleteJobPayload> {
        actions::delete(db(ctx), files(ctx), viewer(ctx), job_id(&input.job_id)?).await?;
        Ok(DeleteJobPayload {
            deleted_job_id: input.job_id,
        })
    }

    /// Cancels a job; refunded if it had not started running.
    async fn cancel_job(&self, ctx: &Context<'_>, input: JobIdInput) -> ApiResult<JobPayload> {
        let job = actions::cancel(db(ctx), viewer(ctx), job_id(&input.job_id)?).await?;
        Ok(JobPayload {
            job: job_view(ctx, job).await?,
        })
    }

    /// Runs a failed, timed-out or cancelled job again as a new job, charged anew.
    async fn retry_job(
        &self,
        ctx: &Context<'_>,
        input: RetryJobInput,
    ) -> ApiResult<SubmitJobPayload> {
        let options = SubmitOptions {
            idempotency_key: input.idempotency_key,
            max_credits: input.max_credits.map(i64::from),
            reuse: false,
        };
        let result = actions::retry(
            db(ctx),
            catalog(ctx),
            files(ctx),
            viewer(ctx),
            job_id(&input.job_id)?,
            options,
        )
        .await?;
        submitted(ctx, result).await
    }

    /// Submits a copy of a job with optional changes, charged anew.
    async fn duplicate_job(
        &self,
        ctx: &Context<'_>,
        input: DuplicateJobInput,
    ) -> ApiResult<SubmitJobPayload> {
        let settings = match input.settings.map(|s| s.0) {
            None => None,
            Some(Value::Object(map)) => Some(map),
            Some(_) => return Err(Error::bad_input("settings", "must be an object").into()),
        };
        let overrides = Overrides {
            name: input.name,
            settings,
            inputs: input_values(ctx, input.inputs)?,
            workspace_id: input
                .workspace_id
                .map(|id| ids::decode::<WorkspaceId>("workspaceId", &id))
                .transpose()?,
        };
        let options = SubmitOptions {
            idempotency_key: input.idempotency_key,
            max_credits: input.max_credits.map(i64::from),
            reuse: false,
        };
        let result = actions::duplicate(
            db(ctx),
            catalog(ctx),
            files(ctx),
            viewer(ctx),
            job_id(&input.job_id)?,
            overrides,
            options,
        )
        .await?;
        submitted(ctx, result).await
    }

    /// Sets who may see a job besides its workspace.
    async fn set_job_sharing(
        &self,
        ctx: &Context<'_>,
        input: SetJobSharingInput,
    ) -> ApiResult<JobPayload> {
        let job = actions::set_sharing(
            db(ctx),
            viewer(ctx),
            job_id(&input.job_id)?,
            input.visibility.into(),
            input.invited_emails,
        )
        .await?;
        Ok(JobPayload {
            job: job_view(ctx, job).await?,
        })
    }
}
