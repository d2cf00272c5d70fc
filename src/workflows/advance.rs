//! How a workflow moves on: when a step's job ends, in the transaction of that ending, the step
//! takes the job's outcome, the steps that became ready get their jobs (charged against the
//! reservation), the steps that can no longer run are skipped, and a workflow whose last step
//! ended gives back what is left of its reservation. A crash at any moment therefore neither
//! loses nor doubles a step: the ending and its consequences commit together.
//!
//! Every change of a workflow holds its workspace's lock (`workspaces::lock`), which writers
//! that add jobs to a workspace take anyway: two steps of one workflow ending at once are
//! settled one after the other, the second seeing the first.

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::Utc;
use entity::ids::{JobId, WorkflowId, WorkspaceId};
use entity::job::{self, JobStatus};
use entity::workflow::{self, WorkflowStatus};
use entity::workflow_step::{self, StepStatus};
use sea_orm::sea_query::Expr;
use sea_orm::{ColumnTrait, EntityTrait, IntoActiveModel, Iterable as _, QueryFilter};
use serde_json::Value;

use super::definition::{Checked, Source, Step};
use super::{StoredInputs, StoredValue};
use crate::credits::ledger;
use crate::db::Transaction;
use crate::error::{Error, Result};
use crate::files::NewFile;
use crate::jobs::lifecycle;
use crate::jobs::service::{self, Charging, NewJob, Planned};
use crate::tools::pricing;
use crate::tools::{InputFormat, InputKind, OutputKind, Prepared, StoredInput, StoredInputKind};
use crate::workspaces::{self, Hold};

/// A workflow with its steps, as read under its workspace's lock, and what changed.
pub(crate) struct Open {
    /// Its row, without its definition (null), which `checked` holds.
    pub workflow: workflow::Model,
    pub checked: Arc<Checked>,
    pub steps: BTreeMap<String, workflow_step::Model>,
    changed: Vec<String>,
    workflow_changed: bool,
    /// Only some steps were read (`load_some`): their counts are kept by the caller, not
    /// recounted from every step.
    partial: bool,
}

impl Open {
    /// Reads a workflow and its steps; the caller holds the workspace's lock. The definition,
    /// which never changes once written, is parsed once per process (`definitions`) and not
    /// read again: `workflow.definition` is left null.
    pub(crate) async fn load(tx: &Transaction, id: WorkflowId) -> Result<Option<Open>> {
        Self::load_with(tx, id, None).await
    }

    /// `load`, reading only the steps named (and none other) when `names` is given.
    async fn load_with(
        tx: &Transaction,
        id: WorkflowId,
        names: Option<&[String]>,
    ) -> Result<Option<Open>> {
        use sea_orm::{IdenStatic as _, QuerySelect as _};
        let cached = definitions().get(&id);
        let columns = workflow::Column::iter()
            .filter(|c| cached.is_none() || !matches!(c, workflow::Column::Definition));
        let mut select = workflow::Entity::find_by_id(id).select_only();
        for column in columns {
            select = select.column(column);
        }
        if cached.is_some() {
            select = select.column_as(
                Expr::cust(json_null(tx)),
                workflow::Column::Definition.as_str(),
            );
        }
        let Some(mut workflow) = select.into_model::<workflow::Model>().one(tx).await? else {
            return Ok(None);
        };
        let checked = match cached {
            Some(checked) => checked,
            None => {
                let checked: Checked = serde_json::from_value(std::mem::take(
                    &mut workflow.definition,
                ))
                .map_err(|err| Error::Internal(anyhow::anyhow!("a stored workflow: {err}")))?;
                let checked = Arc::new(checked.indexed());
                definitions().insert(id, checked.clone());
                checked
            }
        };
        workflow.definition = Value::Null;
        // Without their dependencies, which the definition holds.
        let mut select = workflow_step::Entity::find()
            .select_only()
            .filter(workflow_step::Column::WorkflowId.eq(id));
        for column in workflow_step::Column::iter() {
            select = match column {
                workflow_step::Column::DependsOn => {
                    select.column_as(Expr::cust(json_null(tx)), column.as_str())
                }
                column => select.column(column),
            };
        }
        let steps = match names {
            None => select.into_model::<workflow_step::Model>().all(tx).await?,
            Some(names) => {
                let mut steps = Vec::with_capacity(names.len());
                for chunk in names.chunks(500) {
                    steps.extend(
                        select
                            .clone()
                            .filter(workflow_step::Column::Name.is_in(chunk.iter().cloned()))
                            .into_model::<workflow_step::Model>()
                            .all(tx)
                            .await?,
                    );
                }
                steps
            }
        };
        let steps = steps
            .into_iter()
            .map(|step| (step.name.clone(), step))
            .collect();
        Ok(Some(Open {
            workflow,
            checked,
            steps,
            changed: Vec::new(),
            workflow_changed: false,
            partial: names.is_some(),
        }))
    }

    fn set_step(&mut self, name: &str, status: StepStatus, reason: Option<String>) {
        if let Some(step) = self.steps.get_mut(name) {
            step.status = status;
            if reason.is_some() {
                step.reason = reason;
            }
            step.updated_at = Utc::now();
            self.changed.push(name.to_owned());
        }
    }

    fn status_of(&self, name: &str) -> Option<StepStatus> {
        self.steps.get(name).map(|step| step.status)
    }

    /// Writes the changed steps and the workflow, with the workflow's live entry: only what a
    /// workflow's progress changes (statuses, jobs, credits, times), never its definition.
    pub(crate) async fn save(&mut self, tx: &Transaction) -> Result<()> {
        if !self.partial {
            self.recount();
        }
        // The changed steps rewritten whole, two statements per thousand whatever their number.
        self.changed.sort();
        self.changed.dedup();
        let changed = std::mem::take(&mut self.changed);
        for names in changed.chunks(500) {
            workflow_step::Entity::delete_many()
                .filter(workflow_step::Column::WorkflowId.eq(self.workflow.id))
                .filter(workflow_step::Column::Name.is_in(names.iter().cloned()))
                .exec(tx)
                .await?;
            let rows: Vec<workflow_step::ActiveModel> = names
                .iter()
                .map(|name| {
                    let mut step = self.steps[name].clone();
                    step.depends_on = serde_json::to_value(
                        self.checked
                            .step(name)
                            .map(|s| s.depends_on.clone())
                            .unwrap_or_default(),
                    )
                    .expect("names serialize");
                    step.into_active_model()
                })
                .collect();
            workflow_step::Entity::insert_many(rows).exec(tx).await?;
        }
        use workflow::Column as W;
        let w = &mut self.workflow;
        w.updated_at = Utc::now();
        workflow::Entity::update_many()
            .col_expr(W::Name, Expr::value(w.name.clone()))
            .col_expr(W::Status, Expr::value(w.status))
            .col_expr(W::CreditsReserved, Expr::value(w.credits_reserved))
            .col_expr(W::CreditsCharged, Expr::value(w.credits_charged))
            .col_expr(W::CreditsRefunded, Expr::value(w.credits_refunded))
            .col_expr(W::StepsLeft, Expr::value(w.steps_left))
            .col_expr(W::ErrorMessage, Expr::value(w.error_message.clone()))
            .col_expr(W::UpdatedAt, Expr::value(w.updated_at))
            .col_expr(W::FinishedAt, Expr::value(w.finished_at))
            .filter(W::Id.eq(w.id))
            .exec(tx)
            .await?;
        self.workflow_changed = false;
        crate::live::workflow_changed(tx, &self.workflow);
        Ok(())
    }

    /// Settles the workflow (`settle`) and writes it; cancels the running steps' jobs of a
    /// fast failure once that is written, and gives back the reservation of an ended workflow.
    /// Returns the workflow as it then is.
    pub(crate) async fn settle_and_save(mut self, tx: &Transaction) -> Result<workflow::Model> {
        let id = self.workflow.id;
        let cancel = self.settle(tx).await?;
        self.save(tx).await?;
        if !cancel.is_empty() {
            cancel_jobs(tx, &cancel, "the workflow stopped: a step failed").await?;
            // The cancellations recorded their steps' outcomes and refunds: read them back.
            if let Some(reloaded) = Open::load(tx, id).await? {
                self = reloaded;
            }
        }
        self.release(tx).await?;
        if self.workflow_changed {
            self.save(tx).await?;
        }
        Ok(self.workflow)
    }

    /// Counts again, from every step, what each waits for and how many have not ended.
    fn recount(&mut self) {
        let completed: std::collections::HashSet<&str> = self
            .steps
            .values()
            .filter(|s| s.status == StepStatus::Completed)
            .map(|s| s.name.as_str())
            .collect();
        let mut recounted = Vec::new();
        for step in self.steps.values() {
            let waiting_on = self.checked.step(&step.name).map_or(0, |s| {
                s.depends_on
                    .iter()
                    .filter(|up| !completed.contains(up.as_str()))
                    .count() as i32
            });
            if waiting_on != step.waiting_on {
                recounted.push((step.name.clone(), waiting_on));
            }
        }
        for (name, waiting_on) in recounted {
            if let Some(step) = self.steps.get_mut(&name) {
                step.waiting_on = waiting_on;
            }
            self.changed.push(name);
        }
        self.workflow.steps_left =
            self.steps.values().filter(|s| !s.status.is_final()).count() as i32;
    }

    /// Settles a running workflow after its steps changed: skips the steps that can no longer
    /// run (every step when it fails fast), writes the jobs of the steps that became ready,
    /// and ends it when no step is left to run. Returns the jobs to cancel (a fast failure's
    /// running steps), which the caller cancels once this state is saved.
    pub(crate) async fn settle(&mut self, tx: &Transaction) -> Result<Vec<JobId>> {
        loop {
            self.skip_unreachable();
            if self.workflow.fail_fast && self.any(StepStatus::Failed) {
                return Ok(self.stop(
                    WorkflowStatus::Failed,
                    "a step failed and the workflow fails fast",
                ));
            }
            let ready: Vec<String> = self
                .checked
                .steps
                .iter()
                .filter(|step| self.status_of(&step.name) == Some(StepStatus::Waiting))
                .filter(|step| {
                    step.depends_on
                        .iter()
                        .all(|up| self.status_of(up) == Some(StepStatus::Completed))
                })
                .map(|step| step.name.clone())
                .collect();
            if ready.is_empty() {
                break;
            }
            self.start(tx, &ready).await?;
        }
        if self.steps.values().all(|step| step.status.is_final()) {
            let status = if self
                .steps
                .values()
                .all(|s| s.status == StepStatus::Completed)
            {
                WorkflowStatus::Completed
            } else if self.any(StepStatus::Failed) {
                WorkflowStatus::Failed
            } else {
                WorkflowStatus::Cancelled
            };
            self.end(status, None);
        }
        Ok(Vec::new())
    }

    fn any(&self, status: StepStatus) -> bool {
        self.steps.values().any(|step| step.status == status)
    }

    /// Skips every waiting step downstream of a step that ended without completing.
    /// (A skipped step's own dependents were skipped with it: only failed and cancelled steps
    /// start a walk, each walk stops at what is no longer waiting.)
    fn skip_unreachable(&mut self) {
        let ended: Vec<String> = self
            .steps
            .values()
            .filter(|s| matches!(s.status, StepStatus::Failed | StepStatus::Cancelled))
            .filter(|s| {
                self.checked
                    .dependents(&s.name)
                    .iter()
                    .any(|d| self.status_of(d) == Some(StepStatus::Waiting))
            })
            .map(|s| s.name.clone())
            .collect();
        for name in ended {
            for downstream in self.checked.downstream_of(&name) {
                if self.status_of(&downstream) == Some(StepStatus::Waiting) {
                    self.set_step(
                        &downstream,
                        StepStatus::Skipped,
                        Some(format!("the step `{name}` did not complete")),
                    );
                }
            }
        }
    }

    /// Ends the workflow as `status` at once: waiting steps will never run (skipped after a
    /// failure, cancelled by a user); the running ones' jobs are returned, to be cancelled.
    pub(crate) fn stop(&mut self, status: WorkflowStatus, reason: &str) -> Vec<JobId> {
        let waiting_as = match status {
            WorkflowStatus::Cancelled => StepStatus::Cancelled,
            _ => StepStatus::Skipped,
        };
        let waiting: Vec<String> = self
            .steps
            .values()
            .filter(|s| s.status == StepStatus::Waiting)
            .map(|s| s.name.clone())
            .collect();
        for name in waiting {
            self.set_step(&name, waiting_as, Some(reason.to_owned()));
        }
        let running = self
            .steps
            .values()
            .filter(|s| s.status == StepStatus::Running)
            .filter_map(|s| s.job_id)
            .collect();
        self.end(status, Some(reason.to_owned()));
        running
    }

    /// Marks the workflow ended; its reservation is given back by `release`.
    fn end(&mut self, status: WorkflowStatus, reason: Option<String>) {
        self.workflow.status = status;
        self.workflow.finished_at = Some(Utc::now());
        if status == WorkflowStatus::Failed && self.workflow.error_message.is_none() {
            self.workflow.error_message = reason.or_else(|| {
                self.steps
                    .values()
                    .find(|s| s.status == StepStatus::Failed)
                    .map(|s| match &s.reason {
                        Some(reason) => format!("the step `{}` failed: {reason}", s.name),
                        None => format!("the step `{}` failed", s.name),
                    })
            });
        }
        self.workflow_changed = true;
    }

    /// Gives back what is left of an ended workflow's reservation.
    pub(crate) async fn release(&mut self, tx: &Transaction) -> Result<()> {
        if self.workflow.status != WorkflowStatus::Running && self.workflow.credits_reserved > 0 {
            ledger::release(
                tx,
                self.workflow.workspace_id,
                self.workflow.credits_reserved,
            )
            .await?;
            self.workflow.credits_reserved = 0;
            self.workflow_changed = true;
        }
        Ok(())
    }

    /// Writes the jobs of `ready` steps, charged against the reservation. A step whose
    /// inputs cannot be given (an upstream output missing, over its size) or whose price is
    /// above what is left of the reservation fails, without a job and unpaid.
    async fn start(&mut self, tx: &Transaction, ready: &[String]) -> Result<()> {
        let inputs: StoredInputs = serde_json::from_value(self.workflow.inputs.clone())
            .map_err(|err| Error::Internal(anyhow::anyhow!("a workflow's inputs: {err}")))?;
        let mut new = Vec::new();
        let mut started = Vec::new();
        for name in ready {
            let step = self
                .checked
                .step(name)
                .cloned()
                .ok_or_else(|| Error::Internal(anyhow::anyhow!("no step `{name}`")))?;
            match self.plan(tx, &step, &inputs).await? {
                Ok(planned) => {
                    let cost = planned.estimate.total.get();
                    if cost > self.workflow.credits_reserved {
                        self.set_step(
                            name,
                            StepStatus::Failed,
                            Some(format!(
                                "its price, {cost} credits, is more than the {} left of the workflow's reservation",
                                self.workflow.credits_reserved
                            )),
                        );
                        continue;
                    }
                    self.workflow.credits_reserved -= cost;
                    self.workflow.credits_charged += cost;
                    started.push((name.clone(), planned.id));
                    new.push(NewJob {
                        planned,
                        idempotency_key: None,
                        request_fingerprint: None,
                        batch_id: None,
                        lineage: None,
                        step: Some((self.workflow.id, name.clone())),
                        reused: None,
                    });
                }
                Err(reason) => self.set_step(name, StepStatus::Failed, Some(reason)),
            }
        }
        if new.is_empty() {
            return Ok(());
        }
        service::insert_jobs(
            tx,
            self.workflow.submitter_id,
            self.workflow.workspace_id,
            new,
            Charging::Reservation,
        )
        .await?;
        for (name, job_id) in started {
            if let Some(step) = self.steps.get_mut(&name) {
                step.job_id = Some(job_id);
            }
            self.set_step(&name, StepStatus::Running, None);
        }
        self.workflow_changed = true;
        Ok(())
    }

    /// A ready step's job: its inputs from the workflow's inputs and its upstream steps'
    /// outputs (the same stored files, not copies), checked and priced. `Err` says why the step
    /// cannot run.
    async fn plan(
        &self,
        tx: &Transaction,
        step: &Step,
        inputs: &StoredInputs,
    ) -> Result<Result<Planned, String>> {
        let mut stored = BTreeMap::new();
        let mut files = Vec::new();
        for (input, source) in &step.bindings {
            let Some(spec) = step.input_specs.iter().find(|s| &s.name == input) else {
                return Ok(Err(format!("`{}` takes no input `{input}`", step.tool)));
            };
            let value = match source {
                Source::Input { name } => match inputs.get(name) {
                    Some(StoredValue::Text { text }) => Value::String(text.clone()),
                    Some(StoredValue::File(file)) => {
                        let file = file.for_job();
                        let value = file_input(&file);
                        files.push(file);
                        value
                    }
                    // An optional workflow input that was not given.
                    None => continue,
                },
                Source::Output { step: up, output } => {
                    match self.upstream_output(tx, step, up, output).await? {
                        Ok(Upstream::File(file)) => {
                            let value = file_input(&file);
                            files.push(file);
                            value
                        }
                        Ok(Upstream::Text(text)) => Value::String(text),
                        Err(reason) => return Ok(Err(reason)),
                    }
                }
            };
            let input_value = match value {
                Value::String(text) => {
                    if spec.format == Some(InputFormat::Fasta)
                        && let Err(message) = pricing::check_fasta(&text)
                    {
                        return Ok(Err(format!("its input `{input}` {message}")));
                    }
                    StoredInput {
                        kind: StoredInputKind::Text,
                        bytes: text.len() as u64,
                        text: Some(text),
                        file_id: None,
                        url: None,
                        residues: None,
                        sha256: None,
                        key: None,
                    }
                }
                other => serde_json::from_value(other)
                    .map_err(|err| Error::Internal(anyhow::anyhow!("a step's input: {err}")))?,
            };
            if spec.kind == InputKind::Text && input_value.kind != StoredInputKind::Text {
                return Ok(Err(format!("its input `{input}` takes text")));
            }
            if input_value.bytes > spec.max_bytes {
                return Ok(Err(format!(
                    "its input `{input}` is {} bytes; the limit is {} bytes",
                    input_value.bytes, spec.max_bytes
                )));
            }
            stored.insert(input.clone(), input_value);
        }
        let prepared = Prepared {
            inputs: stored,
            settings: step.settings.clone(),
        };
        let estimate = match step.price.estimate(&step.input_specs, &prepared) {
            Ok(estimate) => estimate,
            Err(err) => return Ok(Err(err.to_string())),
        };
        let name = super::service::step_job_name(&self.workflow.name, &step.name);
        let reuse_key =
            crate::jobs::reuse::key_of(&step.version.name, &step.version.version, &prepared);
        Ok(Ok(Planned {
            id: JobId::new(),
            files,
            tool: step.version.clone(),
            name,
            prepared,
            estimate,
            priority: 0,
            reuse_key,
        }))
    }

    /// The output `output` of the completed upstream step `up`.
    async fn upstream_output(
        &self,
        tx: &Transaction,
        step: &Step,
        up: &str,
        output: &str,
    ) -> Result<Result<Upstream, String>> {
        let upstream = self.checked.step(up);
        let spec = upstream.and_then(|s| s.outputs.iter().find(|o| o.name == output));
        let (Some(spec), Some(job_id)) = (spec, self.steps.get(up).and_then(|s| s.job_id)) else {
            return Ok(Err(format!("the step `{up}` left no output `{output}`")));
        };
        let _ = step;
        match spec.kind {
            OutputKind::File => {
                let path = spec.path.clone().unwrap_or_default();
                let file = entity::file::Entity::find_of_job(job_id)
                    .filter(entity::file::Column::Role.eq(entity::file::FileRole::Output))
                    .filter(entity::file::Column::Name.eq(path.clone()))
                    .one(tx)
                    .await?;
                Ok(match file {
                    Some(file) => Ok(Upstream::File(super::StoredFile::of_row(&file).for_job())),
                    None => Err(format!(
                        "the step `{up}` stored no file `{path}` (its output `{output}`)"
                    )),
                })
            }
            OutputKind::Field => {
                let field = spec.field.clone().unwrap_or_default();
                let job = job::Entity::find_by_id(job_id).one(tx).await?;
                let value = job
                    .and_then(|job| job.result)
                    .and_then(|r| r.get(&field).cloned());
                Ok(match value {
                    Some(Value::String(text)) => Ok(Upstream::Text(text)),
                    Some(Value::Null) | None => Err(format!(
                        "the result of the step `{up}` has no `{field}` (its output `{output}`)"
                    )),
                    Some(other) => Ok(Upstream::Text(other.to_string())),
                })
            }
        }
    }
}

enum Upstream {
    File(NewFile),
    Text(String),
}

/// A stored file as a job's input, as the job's `inputs` keep it.
fn file_input(file: &NewFile) -> Value {
    serde_json::to_value(StoredInput {
        kind: StoredInputKind::File,
        text: None,
        bytes: file.size,
        file_id: Some(file.id),
        url: None,
        residues: file.residues,
        sha256: Some(file.sha256.clone()),
        key: Some(file.key.clone()),
    })
    .expect("a stored input serializes")
}

/// JSON `null` in the type of a JSON column, read in place of what a load leaves out.
fn json_null(tx: &Transaction) -> &'static str {
    match sea_orm::ConnectionTrait::get_database_backend(tx) {
        sea_orm::DatabaseBackend::Postgres => "'null'::jsonb",
        _ => "'null'",
    }
}

/// The checked definitions of workflows, by id, as parsed once: a definition never changes.
fn definitions() -> &'static crate::cache::TtlCache<WorkflowId, Arc<Checked>> {
    static DEFINITIONS: std::sync::LazyLock<crate::cache::TtlCache<WorkflowId, Arc<Checked>>> =
        std::sync::LazyLock::new(|| {
            crate::cache::TtlCache::with_capacity(std::time::Duration::from_secs(3600), 256)
        });
    &DEFINITIONS
}

/// Moves workflows on after jobs of their steps ended, in the transaction of those endings:
/// `jobs` as they now are. Jobs of no workflow are ignored.
pub(crate) async fn steps_ended(tx: &Transaction, jobs: &[job::Model]) -> Result<()> {
    let mut by_workflow: BTreeMap<WorkflowId, (WorkspaceId, Vec<&job::Model>)> = BTreeMap::new();
    for job in jobs.iter().filter(|job| job.status.is_final()) {
        if let Some(workflow_id) = job.workflow_id {
            by_workflow
                .entry(workflow_id)
                .or_insert_with(|| (job.workspace_id, Vec::new()))
                .1
                .push(job);
        }
    }
    for (workflow_id, (workspace_id, ended)) in by_workflow {
        Box::pin(advance(tx, workflow_id, workspace_id, &ended)).await?;
    }
    Ok(())
}

async fn advance(
    tx: &Transaction,
    workflow_id: WorkflowId,
    workspace_id: WorkspaceId,
    ended: &[&job::Model],
) -> Result<()> {
    workspaces::lock(tx, workspace_id, Hold::Change).await?;
    if ended.iter().all(|job| job.status == JobStatus::Completed)
        && completed(tx, workflow_id, ended).await?
    {
        return Ok(());
    }
    let Some(mut open) = Open::load(tx, workflow_id).await? else {
        return Ok(());
    };
    for job in ended {
        let Some(name) = &job.workflow_step else {
            continue;
        };
        let Some(step) = open.steps.get(name) else {
            continue;
        };
        if step.job_id != Some(job.id) || step.status.is_final() {
            continue;
        }
        let (status, reason) = match job.status {
            JobStatus::Completed => (StepStatus::Completed, None),
            JobStatus::Failed | JobStatus::Timeout => (
                StepStatus::Failed,
                Some(job.error_message.clone().unwrap_or_else(|| {
                    format!("its job ended {}", crate::jobs::state::name(job.status))
                })),
            ),
            JobStatus::Cancelled => (StepStatus::Cancelled, Some("its job was cancelled".into())),
            _ => continue,
        };
        open.set_step(name, status, reason);
        if job.refunded {
            open.workflow.credits_refunded += job.credit_cost;
            open.workflow_changed = true;
        }
    }
    if open.workflow.status != WorkflowStatus::Running {
        // Ended already (cancelled, or failing fast): the step only records its outcome.
        return open.save(tx).await;
    }
    open.settle_and_save(tx).await.map(drop)
}

/// Steps whose jobs completed, settled from what they change alone: the ended steps, the steps
/// that wait for them (one count less each) and, for those now ready, what feeds them. The
/// usual case, and its cost does not grow with the workflow. `false` (nothing written) when
/// the workflow needs the full settle instead: it is not running, a ready step cannot start,
/// or its last step ended.
async fn completed(
    tx: &Transaction,
    workflow_id: WorkflowId,
    ended: &[&job::Model],
) -> Result<bool> {
    let names: Vec<String> = ended
        .iter()
        .filter_map(|job| job.workflow_step.clone())
        .collect();
    let Some(mut open) = Open::load_with(tx, workflow_id, Some(&names)).await? else {
        return Ok(true);
    };
    if open.workflow.status != WorkflowStatus::Running {
        return Ok(false);
    }
    let mut done = Vec::new();
    for job in ended {
        let Some(name) = &job.workflow_step else {
            continue;
        };
        if let Some(step) = open.steps.get(name)
            && step.job_id == Some(job.id)
            && step.status == StepStatus::Running
        {
            done.push(name.clone());
        }
    }
    // The steps that wait for them, and what feeds those that become ready.
    let checked = open.checked.clone();
    let mut dependents: Vec<String> = done
        .iter()
        .flat_map(|name| checked.dependents(name).iter().cloned())
        .collect();
    dependents.sort();
    dependents.dedup();
    let more: Vec<String> = dependents
        .iter()
        .filter(|name| !open.steps.contains_key(*name))
        .cloned()
        .collect();
    if let Some(extra) = Open::load_with(tx, workflow_id, Some(&more)).await? {
        open.steps.extend(extra.steps);
    }
    for name in &done {
        open.set_step(name, StepStatus::Completed, None);
    }
    open.workflow.steps_left -= done.len() as i32;
    let mut ready = Vec::new();
    for name in &dependents {
        let fed = checked.step(name).map_or(0, |s| {
            s.depends_on.iter().filter(|up| done.contains(up)).count()
        });
        if let Some(step) = open.steps.get_mut(name) {
            step.waiting_on -= fed as i32;
            if step.waiting_on == 0 && step.status == StepStatus::Waiting {
                ready.push(name.clone());
            }
        }
        open.changed.push(name.clone());
    }
    if open.workflow.steps_left == 0 {
        return Ok(false);
    }
    if !ready.is_empty() {
        let feeding: Vec<String> = ready
            .iter()
            .filter_map(|name| checked.step(name))
            .flat_map(|step| step.depends_on.iter().cloned())
            .filter(|up| !open.steps.contains_key(up))
            .collect();
        if let Some(extra) = Open::load_with(tx, workflow_id, Some(&feeding)).await? {
            open.steps.extend(extra.steps);
        }
        open.start(tx, &ready).await?;
        if ready
            .iter()
            .any(|name| open.status_of(name) != Some(StepStatus::Running))
        {
            // A step could not start: skipping what needed it takes the whole graph.
            open.save(tx).await?;
            return Ok(false);
        }
    }
    open.save(tx).await?;
    Ok(true)
}

/// Cancels the running jobs of an ended workflow's steps, as a user's cancel of each would.
pub(crate) async fn cancel_jobs(tx: &Transaction, ids: &[JobId], message: &str) -> Result<()> {
    for id in ids {
        let Some(job) = job::Entity::find_by_id(*id).one(tx).await? else {
            continue;
        };
        if !crate::jobs::state::cancellable(job.status) {
            continue;
        }
        lifecycle::transition(
            tx,
            &job,
            JobStatus::Cancelled,
            lifecycle::Change {
                message: Some(message.to_owned()),
                ..Default::default()
            },
        )
        .await?;
    }
    Ok(())
}
