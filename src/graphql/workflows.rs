//! GraphQL for workflows: their definitions, estimates, submission, cancel and views.

use std::collections::BTreeMap;

use async_graphql::{Context, Enum, ID, InputObject, Json, Object, SimpleObject};
use chrono::{DateTime, Utc};
use entity::ids::{WorkflowId, WorkspaceId};
use entity::workflow::{self, WorkflowStatus};
use entity::workflow_step::{self, StepStatus};
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QueryOrder};
use serde_json::Value;

use super::jobs::{
    CostEstimate, JobChange, JobInputValue, JobView, VisibilityView, WaitReasonView, input_values,
    mirror_enum,
};
use super::users::{UserView, load_user};
use super::{catalog, db, files, viewer};
use crate::access::{JobAccess, JobStanding, WorkflowAccess, WorkflowAction};
use crate::error::{ApiResult, Error};
use crate::ids;
use crate::tools::{InputFormat, InputKind};
use crate::workflows::definition::{self, Checked, Definition, Source};
use crate::workflows::{self, StoredInputs, StoredValue, WorkflowSubmission};

mirror_enum!(
    WorkflowStatusView,
    "WorkflowStatus",
    WorkflowStatus,
    [Running, Completed, Failed, Cancelled]
);
mirror_enum!(
    StepStatusView,
    "WorkflowStepStatus",
    StepStatus,
    [Waiting, Running, Completed, Failed, Cancelled, Skipped]
);
mirror_enum!(InputKindView, "InputKind", InputKind, [Text, File]);
mirror_enum!(InputFormatView, "InputFormat", InputFormat, [Fasta]);

/// A workflow input a definition declares.
#[derive(InputObject)]
pub struct WorkflowInputSpecInput {
    name: String,
    kind: InputKindView,
    format: Option<InputFormatView>,
    #[graphql(default)]
    required: bool,
    /// Takes a list (an upload set): give the input's name once per item, at most 1,000.
    #[graphql(default)]
    list: bool,
    #[graphql(default)]
    description: String,
}

/// A parameter a definition declares: steps' settings refer to it as `{"$param": "<name>"}`.
#[derive(InputObject)]
pub struct WorkflowParameterInput {
    name: String,
    /// Used when the submission gives none; without it the parameter is required.
    default: Option<Json<Value>>,
    #[graphql(default)]
    description: String,
}

/// Where one input of a step comes from.
#[derive(InputObject)]
pub struct StepBindingInput {
    /// The tool's input name.
    input: String,
    /// `inputs.<workflow input>` or `<step>.<output>` (a named output of the step's tool).
    from: String,
}

/// One step of a definition.
#[derive(InputObject)]
pub struct WorkflowStepInput {
    /// 1 to 64 letters, digits, `-` or `_`; unique in the workflow.
    name: String,
    tool: String,
    /// The tool's settings; `{"$param": "<name>"}` anywhere stands for a parameter's value.
    settings: Option<Json<Value>>,
    #[graphql(default)]
    inputs: Vec<StepBindingInput>,
    /// Steps to wait for besides those its inputs come from.
    #[graphql(default)]
    after: Vec<String>,
    /// Runs the step once per item of the list bound to this input (a list input, a FILES
    /// output, or a mapped step's outputs), at most 1,000 items; its outputs are then lists.
    map: Option<String>,
}

/// A workflow's graph, as a tools file's `[[workflows]]` declares one.
#[derive(InputObject)]
pub struct WorkflowDefinitionInput {
    #[graphql(default)]
    title: String,
    #[graphql(default)]
    description: String,
    #[graphql(default)]
    inputs: Vec<WorkflowInputSpecInput>,
    #[graphql(default)]
    parameters: Vec<WorkflowParameterInput>,
    steps: Vec<WorkflowStepInput>,
    /// Stop every step at the first failure, instead of only the steps that needed it.
    #[graphql(default)]
    fail_fast: bool,
}

impl WorkflowDefinitionInput {
    fn into_definition(self) -> Result<Definition, Error> {
        let mut steps = Vec::with_capacity(self.steps.len());
        for step in self.steps {
            let mut inputs = BTreeMap::new();
            for binding in step.inputs {
                let field = format!("steps.{}.inputs.{}", step.name, binding.input);
                if inputs.insert(binding.input, binding.from).is_some() {
                    return Err(Error::bad_input(field, "bound twice"));
                }
            }
            steps.push(definition::StepDefinition {
                name: step.name,
                tool: step.tool,
                settings: step.settings.map(|s| s.0),
                inputs,
                after: step.after,
                map: step.map,
            });
        }
        Ok(Definition {
            name: None,
            title: self.title,
            description: self.description,
            inputs: self
                .inputs
                .into_iter()
                .map(|input| definition::WorkflowInput {
                    name: input.name,
                    kind: input.kind.into(),
                    format: input.format.map(Into::into),
                    required: input.required,
                    list: input.list,
                    description: input.description,
                })
                .collect(),
            parameters: self
                .parameters
                .into_iter()
                .map(|p| definition::Parameter {
                    name: p.name,
                    default: p.default.map(|d| d.0),
                    description: p.description,
                })
                .collect(),
            steps,
            fail_fast: self.fail_fast,
        })
    }
}

/// A workflow to run: a tools file's workflow by name (`workflow`), or a `definition`.
#[derive(InputObject)]
pub struct SubmitWorkflowInput {
    workspace_id: ID,
    /// The name of a workflow of the tools file (`workflowTemplates`).
    workflow: Option<String>,
    /// A workflow defined with its submission.
    definition: Option<WorkflowDefinitionInput>,
    /// Default: the workflow's title and the time.
    name: Option<String>,
    /// Parameter name to value; the definition's defaults fill the rest.
    parameters: Option<Json<Value>>,
    /// The workflow's inputs: text or uploaded files (not URLs).
    #[graphql(default)]
    inputs: Vec<JobInputValue>,
    /// Stop every step at the first failure; default: the definition's.
    fail_fast: Option<bool>,
    /// The most the workflow may cost. Required when some step's price depends on outputs of
    /// earlier steps; then it is what the workflow reserves.
    max_credits: Option<i64>,
    /// Reuse results: a step whose inputs are all known at submission (workflow inputs, or
    /// outputs of steps that are themselves reused) and which computes what a COMPLETED job of
    /// the workspace that the viewer may read computed (the same tool and version, settings
    /// and inputs by content, as `submitJob`'s `reuse`) completes at once with that job's
    /// result and copies of its output files, uncharged, naming it in `reusedFrom`. A step fed
    /// by a step that runs runs too.
    #[graphql(default = false)]
    reuse: bool,
    /// Sending the same key again from the same workspace returns the first workflow,
    /// uncharged; with a different request (workflow or definition, name, parameters, inputs,
    /// failFast, maxCredits or reuse), IDEMPOTENCY_KEY_REUSED. Workflows' keys are apart from
    /// jobs' and batches'. 1 to 200 characters.
    idempotency_key: Option<String>,
}

/// A workflow to estimate: as `SubmitWorkflowInput`, with text inputs only.
#[derive(InputObject)]
pub struct EstimateWorkflowCostInput {
    /// The workspace whose jobs' results `reuse` would take; required with `reuse`.
    workspace_id: Option<ID>,
    workflow: Option<String>,
    definition: Option<WorkflowDefinitionInput>,
    parameters: Option<Json<Value>>,
    #[graphql(default)]
    inputs: Vec<JobInputValue>,
    max_credits: Option<i64>,
    /// As in `submitWorkflow`: the steps that would reuse results cost nothing, and the steps
    /// they feed are priced by those results.
    #[graphql(default = false)]
    reuse: bool,
}

fn submission(
    ctx: &Context<'_>,
    template: Option<String>,
    definition: Option<WorkflowDefinitionInput>,
    parameters: Option<Json<Value>>,
    inputs: Vec<JobInputValue>,
    max_credits: Option<i64>,
) -> Result<WorkflowSubmission, Error> {
    Ok(WorkflowSubmission {
        template,
        definition: definition.map(|d| d.into_definition()).transpose()?,
        parameters: parameters.map(|p| p.0),
        inputs: input_values(ctx, inputs)?,
        max_credits,
        ..Default::default()
    })
}

/// A workflow's price: the known total, each step's part, and what submission reserves.
#[derive(SimpleObject)]
pub struct WorkflowCostEstimate {
    /// The sum of the steps' prices as known now.
    total: i64,
    /// Whether every step's price is known; if not, `total` leaves out what depends on
    /// outputs not known yet, and `maxCredits` is required.
    complete: bool,
    /// What submission would reserve: `total` when complete, else `maxCredits`.
    reservation: Option<i64>,
    /// What the steps that reuse results (`reuse`) would have cost had they run.
    saved_by_reuse: i64,
    steps: Vec<StepCostEstimate>,
}

#[derive(SimpleObject)]
pub struct StepCostEstimate {
    step: String,
    tool: String,
    estimate: CostEstimate,
    /// False when the price also depends on the size of inputs fed by upstream steps.
    known: bool,
    /// The inputs whose size, known only when their upstream step completes, prices the rest.
    depends_on_outputs: Vec<String>,
    /// Whether the step would take an earlier job's results instead of running (`reuse`); its
    /// estimate is then nothing.
    reused: bool,
}

impl From<workflows::WorkflowEstimate> for WorkflowCostEstimate {
    fn from(estimate: workflows::WorkflowEstimate) -> Self {
        WorkflowCostEstimate {
            total: estimate.total.get(),
            complete: estimate.complete,
            reservation: estimate.reservation.map(|r| r.get()),
            saved_by_reuse: estimate.saved_by_reuse.get(),
            steps: estimate
                .steps
                .into_iter()
                .map(|s| StepCostEstimate {
                    step: s.step,
                    tool: s.tool,
                    estimate: s.estimate.into(),
                    known: s.known,
                    depends_on_outputs: s.depends_on_outputs,
                    reused: s.reused,
                })
                .collect(),
        }
    }
}

/// A workflow of the tools file, to submit by name.
pub struct WorkflowTemplateView(Definition);

#[Object(name = "WorkflowTemplate")]
impl WorkflowTemplateView {
    async fn name(&self) -> &str {
        self.0.name.as_deref().unwrap_or_default()
    }
    async fn title(&self) -> &str {
        &self.0.title
    }
    async fn description(&self) -> &str {
        &self.0.description
    }
    /// The definition as JSON, in the shape of `WorkflowDefinitionInput`'s fields.
    async fn definition(&self) -> Json<Value> {
        Json(serde_json::to_value(&self.0).unwrap_or_default())
    }
}

#[derive(Default)]
pub struct WorkflowsQuery;

#[Object]
impl WorkflowsQuery {
    /// The workflows of the tools file.
    async fn workflow_templates(&self, ctx: &Context<'_>) -> Vec<WorkflowTemplateView> {
        catalog(ctx)
            .workflows()
            .iter()
            .cloned()
            .map(WorkflowTemplateView)
            .collect()
    }

    /// The price of a workflow, per step, without writing anything: what is known now, and
    /// which steps' prices depend on outputs not known yet.
    async fn estimate_workflow_cost(
        &self,
        ctx: &Context<'_>,
        input: EstimateWorkflowCostInput,
    ) -> ApiResult<WorkflowCostEstimate> {
        let mut submission = submission(
            ctx,
            input.workflow,
            input.definition,
            input.parameters,
            input.inputs,
            input.max_credits,
        )?;
        submission.reuse = input.reuse;
        let estimate = match input.workspace_id {
            Some(id) => {
                let workspace_id = ids::decode::<WorkspaceId>("workspaceId", &id)?;
                let by = super::job_actions::submitter(ctx);
                workflows::service::estimate_in(by, workspace_id, submission).await?
            }
            None => workflows::service::estimate(catalog(ctx), submission)?,
        };
        Ok(estimate.into())
    }

    /// A workflow the viewer may see; NOT_FOUND otherwise.
    async fn workflow(&self, ctx: &Context<'_>, id: ID) -> ApiResult<WorkflowView> {
        let id = ids::decode::<WorkflowId>("id", &id)?;
        Ok(WorkflowAccess::load(db(ctx), viewer(ctx), id).await?.into())
    }
}

#[derive(SimpleObject)]
pub struct SubmitWorkflowPayload {
    workflow: WorkflowView,
    /// True when an earlier workflow was returned for a repeated idempotency key.
    replayed: bool,
}

#[derive(SimpleObject)]
pub struct CancelWorkflowPayload {
    workflow: WorkflowView,
}

#[derive(SimpleObject)]
pub struct DeleteWorkflowPayload {
    deleted_workflow_id: ID,
}

#[derive(Default)]
pub struct WorkflowsMutation;

#[Object]
impl WorkflowsMutation {
    /// Runs a workflow: checked whole (every error names the step and field), its credits
    /// reserved, and the steps that wait for nothing queued, in one transaction; nothing is
    /// written when a check fails.
    async fn submit_workflow(
        &self,
        ctx: &Context<'_>,
        input: SubmitWorkflowInput,
    ) -> ApiResult<SubmitWorkflowPayload> {
        let workspace_id = ids::decode::<WorkspaceId>("workspaceId", &input.workspace_id)?;
        let mut submission = submission(
            ctx,
            input.workflow,
            input.definition,
            input.parameters,
            input.inputs,
            input.max_credits,
        )?;
        submission.name = input.name;
        submission.fail_fast = input.fail_fast;
        submission.reuse = input.reuse;
        submission.idempotency_key = input.idempotency_key;
        let by = super::job_actions::submitter(ctx);
        let submitted = workflows::service::submit(by, workspace_id, submission).await?;
        let access = WorkflowAccess::load(db(ctx), viewer(ctx), submitted.workflow.id).await?;
        Ok(SubmitWorkflowPayload {
            workflow: access.into(),
            replayed: submitted.replayed,
        })
    }

    /// Runs a FAILED or CANCELLED workflow again as a new one (its `parent`): the steps that
    /// completed are not run again (their results are reused, uncharged), the others run and
    /// are charged as in any workflow.
    async fn retry_workflow(&self, ctx: &Context<'_>, id: ID) -> ApiResult<SubmitWorkflowPayload> {
        let id = ids::decode::<WorkflowId>("id", &id)?;
        let by = super::job_actions::submitter(ctx);
        let submitted = workflows::service::retry(by, id).await?;
        let access = WorkflowAccess::load(db(ctx), viewer(ctx), submitted.workflow.id).await?;
        Ok(SubmitWorkflowPayload {
            workflow: access.into(),
            replayed: submitted.replayed,
        })
    }

    /// Renames a workflow (1 to 200 characters).
    async fn rename_workflow(
        &self,
        ctx: &Context<'_>,
        id: ID,
        name: String,
    ) -> ApiResult<CancelWorkflowPayload> {
        let id = ids::decode::<WorkflowId>("id", &id)?;
        workflows::service::rename(db(ctx), viewer(ctx), id, &name).await?;
        let access = WorkflowAccess::load(db(ctx), viewer(ctx), id).await?;
        Ok(CancelWorkflowPayload {
            workflow: access.into(),
        })
    }

    /// Deletes an ended workflow with its steps' jobs and files; ledger entries stay.
    async fn delete_workflow(&self, ctx: &Context<'_>, id: ID) -> ApiResult<DeleteWorkflowPayload> {
        let decoded = ids::decode::<WorkflowId>("id", &id)?;
        workflows::service::delete(db(ctx), files(ctx), viewer(ctx), decoded).await?;
        Ok(DeleteWorkflowPayload {
            deleted_workflow_id: id,
        })
    }

    /// Stops every unfinished step: waiting ones are never charged, running ones' jobs are
    /// cancelled as jobs are (their programs killed), and what is left of the reservation is
    /// given back.
    async fn cancel_workflow(&self, ctx: &Context<'_>, id: ID) -> ApiResult<CancelWorkflowPayload> {
        let id = ids::decode::<WorkflowId>("id", &id)?;
        workflows::service::cancel(db(ctx), viewer(ctx), id).await?;
        let access = WorkflowAccess::load(db(ctx), viewer(ctx), id).await?;
        Ok(CancelWorkflowPayload {
            workflow: access.into(),
        })
    }
}

/// A workflow as one viewer sees it.
pub struct WorkflowView(pub workflow::Model, pub JobStanding);

impl From<WorkflowAccess> for WorkflowView {
    fn from(access: WorkflowAccess) -> Self {
        WorkflowView(access.workflow, access.standing)
    }
}

/// The workflow `id` if the viewer may see it.
pub(super) async fn load_optional(
    ctx: &Context<'_>,
    id: WorkflowId,
) -> ApiResult<Option<WorkflowView>> {
    match WorkflowAccess::load(db(ctx), viewer(ctx), id).await {
        Ok(access) => Ok(Some(access.into())),
        Err(Error::NotFound(_)) => Ok(None),
        Err(err) => Err(err.into()),
    }
}

impl WorkflowView {
    fn checked(&self) -> ApiResult<Checked> {
        serde_json::from_value(self.0.definition.clone())
            .map_err(|err| Error::Internal(anyhow::anyhow!("a stored workflow: {err}")).into())
    }

    async fn step_rows(&self, ctx: &Context<'_>) -> ApiResult<Vec<workflow_step::Model>> {
        Ok(workflow_step::Entity::find()
            .filter(workflow_step::Column::WorkflowId.eq(self.0.id))
            .order_by_asc(workflow_step::Column::Position)
            .all(db(ctx))
            .await?)
    }
}

/// The credits of a workflow.
#[derive(SimpleObject)]
pub struct WorkflowCredits {
    /// The steps' prices known at submission.
    estimated: i64,
    /// What is left of the reservation; 0 once the workflow ended.
    reserved: i64,
    /// The charges of its steps' jobs.
    charged: i64,
    /// The refunds of its steps' jobs.
    refunded: i64,
    max_credits: Option<i64>,
}

#[Object(name = "Workflow")]
impl WorkflowView {
    pub async fn id(&self) -> ID {
        ids::encode(self.0.id)
    }
    async fn name(&self) -> &str {
        &self.0.name
    }
    /// The tools file's workflow it was made from; null for one defined with its submission.
    async fn template(&self) -> Option<&str> {
        self.0.template.as_deref()
    }
    async fn status(&self) -> WorkflowStatusView {
        self.0.status.into()
    }
    async fn fail_fast(&self) -> bool {
        self.0.fail_fast
    }
    /// Why it failed.
    async fn error_message(&self) -> Option<&str> {
        self.0.error_message.as_deref()
    }
    /// From 0 to 1: the share of its steps that ended, counting running steps by their jobs'
    /// progress.
    async fn progress(&self, ctx: &Context<'_>) -> ApiResult<f64> {
        let steps = self.step_rows(ctx).await?;
        if steps.is_empty() {
            return Ok(0.0);
        }
        let running: Vec<_> = steps
            .iter()
            .filter(|s| s.status == StepStatus::Running)
            .filter_map(|s| s.job_id)
            .collect();
        let mut progress: f64 = steps.iter().filter(|s| s.status.is_final()).count() as f64;
        if !running.is_empty() {
            for job in entity::job::Entity::find()
                .filter(entity::job::Column::Id.is_in(running))
                .all(db(ctx))
                .await?
            {
                progress += job.progress;
            }
        }
        Ok((progress / steps.len() as f64).clamp(0.0, 1.0))
    }
    async fn credits(&self) -> WorkflowCredits {
        WorkflowCredits {
            estimated: self.0.credits_estimated,
            reserved: self.0.credits_reserved,
            charged: self.0.credits_charged,
            refunded: self.0.credits_refunded,
            max_credits: self.0.max_credits,
        }
    }
    async fn created_at(&self) -> DateTime<Utc> {
        self.0.created_at
    }
    async fn updated_at(&self) -> DateTime<Utc> {
        self.0.updated_at
    }
    async fn finished_at(&self) -> Option<DateTime<Utc>> {
        self.0.finished_at
    }
    /// The parameters as used, with the definition's defaults.
    async fn parameters(&self) -> Json<Value> {
        Json(self.0.parameters.clone())
    }
    /// The workflow's inputs as given.
    async fn inputs(&self) -> ApiResult<Vec<WorkflowInputValue>> {
        let inputs: StoredInputs = serde_json::from_value(self.0.inputs.clone())
            .map_err(|err| Error::Internal(anyhow::anyhow!("a workflow's inputs: {err}")))?;
        let view = |name: &str, item: Option<i32>, value: StoredValue| match value {
            StoredValue::File(file) => WorkflowInputValue {
                name: name.to_owned(),
                item,
                kind: InputKindView::File,
                text: None,
                bytes: super::scalars::ByteCount(file.size),
                file_name: Some(file.name),
                sha256: Some(file.sha256),
            },
            StoredValue::Text { text } => WorkflowInputValue {
                name: name.to_owned(),
                item,
                kind: InputKindView::Text,
                bytes: super::scalars::ByteCount(text.len() as u64),
                text: Some(text),
                file_name: None,
                sha256: None,
            },
            // Lists hold single values.
            StoredValue::List { .. } => WorkflowInputValue {
                name: name.to_owned(),
                item,
                kind: InputKindView::Text,
                bytes: super::scalars::ByteCount(0),
                text: None,
                file_name: None,
                sha256: None,
            },
        };
        let mut values = Vec::with_capacity(inputs.len());
        for (name, value) in inputs {
            match value {
                StoredValue::List { items } => values.extend(
                    items
                        .into_iter()
                        .enumerate()
                        .map(|(i, item)| view(&name, Some(i as i32), item)),
                ),
                value => values.push(view(&name, None, value)),
            }
        }
        Ok(values)
    }
    /// The steps, in the definition's order, each with its job once it has one.
    async fn steps(&self, ctx: &Context<'_>) -> ApiResult<Vec<WorkflowStepView>> {
        let checked = self.checked()?;
        let rows = self.step_rows(ctx).await?;
        let status: BTreeMap<&str, StepStatus> =
            rows.iter().map(|r| (r.name.as_str(), r.status)).collect();
        // The steps' jobs in one read per 500 when they are asked for, not one read per step.
        let mut jobs = BTreeMap::new();
        let ahead = ctx.look_ahead();
        if ahead.field("job").exists() || ahead.field("waitReason").exists() {
            let ids: Vec<_> = rows.iter().filter_map(|r| r.job_id).collect();
            for chunk in ids.chunks(500) {
                for job in entity::job::Entity::find()
                    .filter(entity::job::Column::Id.is_in(chunk.iter().copied()))
                    .all(db(ctx))
                    .await?
                {
                    jobs.insert(job.id, job);
                }
            }
        }
        Ok(rows
            .iter()
            .filter_map(|row| {
                let step = checked.step(&row.name)?;
                let waiting_for = step
                    .depends_on
                    .iter()
                    .filter(|up| status.get(up.as_str()) != Some(&StepStatus::Completed))
                    .cloned()
                    .collect();
                Some(WorkflowStepView {
                    job: row.job_id.and_then(|id| jobs.remove(&id)),
                    row: row.clone(),
                    bindings: step.bindings.clone(),
                    settings: step.settings.clone(),
                    map: step.map.clone(),
                    waiting_for,
                    standing: self.1,
                })
            })
            .collect())
    }
    /// The graph's edges: one per binding to an upstream output, and one per `after`.
    async fn edges(&self) -> ApiResult<Vec<StepEdge>> {
        let checked = self.checked()?;
        let mut edges = Vec::new();
        for step in &checked.steps {
            let mut fed = std::collections::BTreeSet::new();
            for (input, source) in &step.bindings {
                if let Source::Output { step: from, output } = source {
                    fed.insert(from.clone());
                    edges.push(StepEdge {
                        from: from.clone(),
                        to: step.name.clone(),
                        output: Some(output.clone()),
                        input: Some(input.clone()),
                    });
                }
            }
            for from in step.depends_on.iter().filter(|d| !fed.contains(*d)) {
                edges.push(StepEdge {
                    from: from.clone(),
                    to: step.name.clone(),
                    output: None,
                    input: None,
                });
            }
        }
        Ok(edges)
    }
    /// Who submitted it; null for viewers who see the workflow only through its sharing.
    async fn submitter(&self, ctx: &Context<'_>) -> ApiResult<Option<UserView>> {
        if !self.1.sees_workspace() {
            return Ok(None);
        }
        load_user(ctx, self.0.submitter_id).await.map(Some)
    }
    /// Its workspace; null for viewers who see the workflow only through its sharing.
    async fn workspace_id(&self) -> Option<ID> {
        self.1
            .sees_workspace()
            .then(|| ids::encode(self.0.workspace_id))
    }
    /// Whether the viewer may cancel it now.
    async fn viewer_can_cancel(&self) -> bool {
        self.1
            .check_workflow(&self.0, WorkflowAction::Cancel)
            .is_ok()
    }
    /// Whether the viewer may retry it now.
    async fn viewer_can_retry(&self) -> bool {
        self.1
            .check_workflow(&self.0, WorkflowAction::Retry)
            .is_ok()
    }
    async fn viewer_can_rename(&self) -> bool {
        self.1
            .check_workflow(&self.0, WorkflowAction::Rename)
            .is_ok()
    }
    /// Whether the viewer may delete it now (ended).
    async fn viewer_can_delete(&self) -> bool {
        self.1
            .check_workflow(&self.0, WorkflowAction::Delete)
            .is_ok()
    }
    /// Whether the viewer may change who sees it (`setWorkflowSharing`).
    async fn viewer_can_share(&self) -> bool {
        self.1
            .check_workflow(&self.0, WorkflowAction::Share)
            .is_ok()
    }
    /// Who besides its workspace may see it and its steps' jobs.
    async fn visibility(&self) -> VisibilityView {
        self.0.visibility.into()
    }
    /// The e-mails a workflow shared as INVITED is shared with; null for viewers who may not
    /// change its sharing.
    async fn invited_emails(&self, ctx: &Context<'_>) -> ApiResult<Option<Vec<String>>> {
        if self
            .1
            .check_workflow(&self.0, WorkflowAction::Share)
            .is_err()
        {
            return Ok(None);
        }
        let shares = entity::workflow_share::Entity::find_of_workflow(self.0.id)
            .order_by_asc(entity::workflow_share::Column::Email)
            .all(db(ctx))
            .await?;
        Ok(Some(shares.into_iter().map(|s| s.email).collect()))
    }
    /// What differs from its parent (NAME, PARAMETER, INPUT, STEP_SETTING); empty without a
    /// parent the viewer may see.
    async fn changes_from_parent(&self, ctx: &Context<'_>) -> ApiResult<Vec<JobChange>> {
        let Some(parent) = self.0.parent_id else {
            return Ok(Vec::new());
        };
        let parent = match WorkflowAccess::load(db(ctx), viewer(ctx), parent).await {
            Ok(access) => access.workflow,
            Err(Error::NotFound(_)) => return Ok(Vec::new()),
            Err(err) => return Err(err.into()),
        };
        Ok(workflows::duplicate::changes(&parent, &self.0)?
            .into_iter()
            .map(Into::into)
            .collect())
    }
    /// The workflow this one retried or duplicated, if the viewer may still see it.
    async fn parent(&self, ctx: &Context<'_>) -> ApiResult<Option<WorkflowView>> {
        match self.0.parent_id {
            Some(parent) => load_optional(ctx, parent).await,
            None => Ok(None),
        }
    }
    /// RETRY for a workflow made by `retryWorkflow`, DUPLICATE for one made by
    /// `duplicateWorkflow`.
    async fn parent_kind(&self) -> Option<&'static str> {
        self.0.parent_kind.map(|kind| match kind {
            entity::workflow::WorkflowParentKind::Retry => "RETRY",
            entity::workflow::WorkflowParentKind::Duplicate => "DUPLICATE",
        })
    }
    /// The workflows made from this one by `retryWorkflow` that the viewer may see, oldest
    /// first.
    async fn retries(&self, ctx: &Context<'_>) -> ApiResult<Vec<WorkflowView>> {
        let children = workflow::Entity::find()
            .filter(workflow::Column::ParentId.eq(self.0.id))
            .filter(workflow::Column::ParentKind.eq(workflow::WorkflowParentKind::Retry))
            .order_by_asc(workflow::Column::Id)
            .all(db(ctx))
            .await?;
        let mut visible = Vec::with_capacity(children.len());
        for child in children {
            // A retry is of the same workspace; outsiders see those shared with them.
            let readable = self.1.sees_workspace()
                || crate::access::sharing_admits(
                    db(ctx),
                    viewer(ctx),
                    child.visibility,
                    crate::access::Shared::Workflow(child.id),
                )
                .await?;
            if readable {
                visible.push(WorkflowView(child, self.1));
            }
        }
        Ok(visible)
    }
    /// The workflow as one JSON document: its definition, parameters, credits and each step
    /// with its job's status, cost, result and error.
    async fn export_json(&self, ctx: &Context<'_>) -> ApiResult<Json<Value>> {
        let rows = self.step_rows(ctx).await?;
        let job_ids: Vec<_> = rows.iter().filter_map(|r| r.job_id).collect();
        let jobs: BTreeMap<_, _> = entity::job::Entity::find()
            .filter(entity::job::Column::Id.is_in(job_ids))
            .all(db(ctx))
            .await?
            .into_iter()
            .map(|job| (job.id, job))
            .collect();
        let steps: Vec<Value> = rows
            .iter()
            .map(|row| {
                let job = row.job_id.and_then(|id| jobs.get(&id));
                serde_json::json!({
                    "name": row.name,
                    "tool": row.tool,
                    "status": workflows::step_status_name(row.status),
                    "reason": row.reason,
                    "job": job.map(|job| serde_json::json!({
                        "id": ids::encode(job.id).as_str(),
                        "status": crate::jobs::state::name(job.status),
                        "creditCost": job.credit_cost,
                        "refunded": job.refunded,
                        "result": job.result,
                        "errorMessage": job.error_message,
                    })),
                })
            })
            .collect();
        Ok(Json(serde_json::json!({
            "id": ids::encode(self.0.id).as_str(),
            "name": self.0.name,
            "template": self.0.template,
            "status": crate::access::workflow_status_name(self.0.status),
            "definition": self.0.definition,
            "parameters": self.0.parameters,
            "credits": {
                "estimated": self.0.credits_estimated,
                "reserved": self.0.credits_reserved,
                "charged": self.0.credits_charged,
                "refunded": self.0.credits_refunded,
                "maxCredits": self.0.max_credits,
            },
            "steps": steps,
            "createdAt": self.0.created_at,
            "finishedAt": self.0.finished_at,
        })))
    }
}

/// Which workflows a list holds.
#[derive(InputObject, Default)]
pub struct WorkflowFilterInput {
    /// Any of these statuses; all when empty.
    #[graphql(default)]
    statuses: Vec<WorkflowStatusView>,
    /// Only those of this submitter.
    submitter_id: Option<ID>,
    /// Only the viewer's own.
    #[graphql(default)]
    mine: bool,
    /// A case-insensitive part of the name.
    search: Option<String>,
}

impl WorkflowFilterInput {
    pub fn into_filter(
        self,
        viewer_id: Option<entity::ids::UserId>,
    ) -> Result<workflows::service::WorkflowFilter, Error> {
        let submitter_id = match (self.submitter_id, self.mine) {
            (Some(id), _) => Some(ids::decode::<entity::ids::UserId>(
                "filter.submitterId",
                &id,
            )?),
            (None, true) => Some(viewer_id.ok_or(Error::Unauthenticated)?),
            (None, false) => None,
        };
        Ok(workflows::service::WorkflowFilter {
            statuses: self.statuses.into_iter().map(Into::into).collect(),
            submitter_id,
            search: self.search.filter(|s| !s.trim().is_empty()),
        })
    }
}

/// A workflow input's value.
#[derive(SimpleObject)]
pub struct WorkflowInputValue {
    name: String,
    /// A list input's item: its place in the list, from 0 (the list is given by repeating
    /// the name).
    item: Option<i32>,
    kind: InputKindView,
    text: Option<String>,
    bytes: super::scalars::ByteCount,
    file_name: Option<String>,
    sha256: Option<String>,
}

/// An edge of a workflow's graph: `to` waits for `from`, and takes its `output` as `input`
/// (both null for an ordering without data).
#[derive(SimpleObject)]
pub struct StepEdge {
    from: String,
    to: String,
    output: Option<String>,
    input: Option<String>,
}

/// Where one input of a step comes from.
#[derive(SimpleObject)]
pub struct StepBinding {
    input: String,
    /// `inputs.<workflow input>` or `<step>.<output>`.
    from: String,
}

/// A step of a workflow.
pub struct WorkflowStepView {
    row: workflow_step::Model,
    /// Its job, when read with the other steps'.
    job: Option<entity::job::Model>,
    bindings: Vec<(String, Source)>,
    settings: Value,
    /// The input it maps over, for a mapped step.
    map: Option<String>,
    waiting_for: Vec<String>,
    standing: JobStanding,
}

#[Object(name = "WorkflowStep")]
impl WorkflowStepView {
    async fn name(&self) -> &str {
        &self.row.name
    }
    async fn tool(&self) -> &str {
        &self.row.tool
    }
    async fn status(&self) -> StepStatusView {
        self.row.status.into()
    }
    /// The settings it runs with (parameters filled in).
    async fn settings(&self) -> Json<Value> {
        Json(self.settings.clone())
    }
    /// The steps it waits for.
    async fn depends_on(&self) -> ApiResult<Vec<String>> {
        Ok(serde_json::from_value(self.row.depends_on.clone()).unwrap_or_default())
    }
    async fn bindings(&self) -> Vec<StepBinding> {
        self.bindings
            .iter()
            .map(|(input, source)| StepBinding {
                input: input.clone(),
                from: source.spelled(),
            })
            .collect()
    }
    /// For a waiting step, the upstream steps that have not completed.
    async fn waiting_for(&self) -> Vec<String> {
        if self.row.status == StepStatus::Waiting {
            self.waiting_for.clone()
        } else {
            Vec::new()
        }
    }
    /// Why it has not started: WAITING_FOR_UPSTREAM while it has no job, then its job's
    /// reason while the job waits; null otherwise.
    async fn wait_reason(&self, ctx: &Context<'_>) -> ApiResult<Option<WaitReasonView>> {
        match (self.row.status, self.row.job_id) {
            (StepStatus::Waiting, _) => Ok(Some(WaitReasonView::WaitingForUpstream)),
            (StepStatus::Running, Some(job_id)) => {
                let job = match &self.job {
                    Some(job) => JobView::new(job.clone(), self.standing),
                    None => {
                        JobView::from_access(JobAccess::load(db(ctx), viewer(ctx), job_id).await?)
                    }
                };
                job.wait_reason_of(ctx).await
            }
            _ => Ok(None),
        }
    }
    /// Its price as estimated at submission.
    async fn estimate(&self) -> i64 {
        self.row.estimate
    }
    /// False when its price depended on upstream outputs at submission.
    async fn estimate_known(&self) -> bool {
        self.row.estimate_known
    }
    /// Why it failed, was skipped or was cancelled.
    async fn reason(&self) -> Option<&str> {
        self.row.reason.as_deref()
    }
    /// Its job, once its upstream steps completed.
    async fn job(&self, ctx: &Context<'_>) -> ApiResult<Option<JobView>> {
        let Some(job_id) = self.row.job_id else {
            return Ok(None);
        };
        let job = match &self.job {
            Some(job) => Some(job.clone()),
            None => entity::job::Entity::find_by_id(job_id).one(db(ctx)).await?,
        };
        Ok(job.map(|job| JobView::new(job, self.standing)))
    }
    /// For a mapped step: the input whose list it runs over, one job per item.
    async fn map(&self) -> Option<&str> {
        self.map.as_deref()
    }
    /// For a mapped step, once started: how many items it runs over.
    async fn items(&self) -> Option<i32> {
        self.row.items
    }
    /// For a mapped step, once started: how many of its items' jobs have not ended.
    async fn items_left(&self) -> Option<i32> {
        self.row.items.map(|_| self.row.items_left)
    }
    /// For a mapped step: its items' jobs in item order, `offset` first, at most `limit`
    /// (1 to 1,000).
    async fn item_jobs(
        &self,
        ctx: &Context<'_>,
        #[graphql(default = 0)] offset: i32,
        #[graphql(default = 100)] limit: i32,
    ) -> ApiResult<Vec<JobView>> {
        use sea_orm::QuerySelect;
        if !(1..=1000).contains(&limit) || offset < 0 {
            return Err(Error::bad_input(
                "limit",
                "`limit` is 1 to 1000 and `offset` not negative",
            )
            .into());
        }
        if self.row.items.is_none() {
            return Ok(Vec::new());
        }
        let jobs = entity::job::Entity::find_items_of(self.row.workflow_id, &self.row.name)
            .filter(entity::job::Column::WorkflowItem.gte(offset))
            .limit(limit as u64)
            .all(db(ctx))
            .await?;
        Ok(jobs
            .into_iter()
            .map(|job| JobView::new(job, self.standing))
            .collect())
    }
    async fn updated_at(&self) -> DateTime<Utc> {
        self.row.updated_at
    }
}
