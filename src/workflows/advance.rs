//! How a workflow moves on: when a step's job ends, in the transaction of that ending, the step
//! takes the job's outcome, the steps that became ready get their jobs (charged against the
//! reservation), the steps that can no longer run are skipped, and a workflow whose last step
//! ended gives back what is left of its reservation. A crash at any moment therefore neither
//! loses nor doubles a step: the ending and its consequences commit together.
//!
//! Every change of a workflow holds its workspace's lock (`workspaces::lock`), which writers
//! that add jobs to a workspace take anyway: two steps of one workflow ending at once are
//! settled one after the other, the second seeing the first. A step's job that ends locks the
//! workspace before its own write (`jobs::lifecycle`), so `steps_ended` finds it held.

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::Utc;
use entity::ids::{JobId, WorkflowId};
use entity::job::{self, JobStatus};
use entity::workflow::{self, WorkflowStatus};
use entity::workflow_step::{self, StepStatus};
use sea_orm::sea_query::Expr;
use sea_orm::{ColumnTrait, EntityTrait, Iterable as _, QueryFilter};
use serde_json::Value;

use super::definition::{Checked, MAX_MAP_ITEMS, Source, Step};
use super::{StoredInputs, StoredValue};
use crate::credits::ledger;
use crate::db::Transaction;
use crate::error::{Error, Result};
use crate::files::NewFile;
use crate::jobs::lifecycle;
use crate::jobs::service::{self, Charging, NewJob, Planned, StepOf};
use crate::tools::pricing;
use crate::tools::{
    InputFormat, InputKind, InputSpec, OutputKind, Prepared, StoredInput, StoredInputKind,
};

/// A workflow with its steps, as read under its workspace's lock, and what changed.
pub(crate) struct Open {
    /// Its row, without its definition (null), which `checked` holds.
    pub workflow: workflow::Model,
    pub checked: Arc<Checked>,
    pub steps: BTreeMap<String, workflow_step::Model>,
    changed: Vec<String>,
    workflow_changed: bool,
    /// Mapped steps that failed or were cancelled: their items' jobs still running are
    /// cancelled once this state is saved.
    stop_items: Vec<String>,
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
            stop_items: Vec::new(),
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
        // The changed steps' progress, in one statement (`rows::update`).
        self.changed.sort();
        self.changed.dedup();
        let changed = std::mem::take(&mut self.changed);
        let rows: Vec<workflow_step::Model> = changed
            .iter()
            .map(|name| self.steps[name].clone())
            .collect();
        super::rows::update(tx, self.workflow.id, rows).await?;
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
        crate::live::workflow_changed(tx, self.workflow.workspace_id, self.workflow.id);
        Ok(())
    }

    /// Settles the workflow (`settle`) and writes it; cancels the running steps' jobs of a
    /// fast failure once that is written, and gives back the reservation of an ended workflow.
    /// Returns the workflow as it then is.
    pub(crate) async fn settle_and_save(mut self, tx: &Transaction) -> Result<workflow::Model> {
        let id = self.workflow.id;
        let cancel = self.settle(tx).await?;
        let stop_items = std::mem::take(&mut self.stop_items);
        self.save(tx).await?;
        if !stop_items.is_empty() {
            cancel_steps(
                tx,
                id,
                &stop_items,
                "the step stopped: another of its items did not complete",
            )
            .await?;
        }
        if !cancel.is_empty() {
            cancel_steps(tx, id, &cancel, "the workflow stopped: a step failed").await?;
        }
        if !cancel.is_empty() || !stop_items.is_empty() {
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
    pub(crate) async fn settle(&mut self, tx: &Transaction) -> Result<Vec<String>> {
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
    /// failure, cancelled by a user); the running ones are returned, their jobs to be
    /// cancelled (`cancel_steps`).
    pub(crate) fn stop(&mut self, status: WorkflowStatus, reason: &str) -> Vec<String> {
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
            .map(|s| s.name.clone())
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

    /// Writes the jobs of `ready` steps, charged against the reservation: one per step, or one
    /// per item of a mapped step (a mapped step over no item completes at once). A step whose
    /// inputs cannot be given (an upstream output missing, over its size or item limit) or whose
    /// price is above what is left of the reservation fails, without a job and unpaid.
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
            let planned = match self.plan(tx, &step, &inputs).await? {
                Ok(planned) => planned,
                Err(reason) => {
                    self.set_step(name, StepStatus::Failed, Some(reason));
                    continue;
                }
            };
            let cost = planned
                .iter()
                .try_fold(0i64, |sum, (_, p)| sum.checked_add(p.estimate.total.get()))
                .unwrap_or(i64::MAX);
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
            let items = step.map.as_ref().map(|_| planned.len() as i32);
            let first = planned.first().map(|(_, p)| p.id);
            started.push((name.clone(), first, items));
            for (item, planned) in planned {
                new.push(NewJob {
                    planned,
                    idempotency_key: None,
                    request_fingerprint: None,
                    batch_id: None,
                    lineage: None,
                    step: Some(StepOf {
                        workflow: self.workflow.id,
                        name: name.clone(),
                        item,
                    }),
                    reused: None,
                });
            }
        }
        if !new.is_empty() {
            service::insert_jobs(
                tx,
                self.workflow.submitter_id,
                self.workflow.workspace_id,
                new,
                Charging::Reservation,
            )
            .await?;
        }
        for (name, first, items) in started {
            if let Some(step) = self.steps.get_mut(&name) {
                match items {
                    Some(items) => {
                        step.items = Some(items);
                        step.items_left = items;
                    }
                    None => step.job_id = first,
                }
            }
            let status = if items == Some(0) {
                StepStatus::Completed
            } else {
                StepStatus::Running
            };
            self.set_step(&name, status, None);
        }
        self.workflow_changed = true;
        Ok(())
    }

    /// A ready step's jobs, with their items for a mapped step: their inputs from the
    /// workflow's inputs and the upstream steps' outputs (the same stored files, not copies),
    /// checked and priced. `Err` says why the step cannot run.
    async fn plan(
        &self,
        tx: &Transaction,
        step: &Step,
        inputs: &StoredInputs,
    ) -> Result<Result<Vec<(Option<i32>, Planned)>, String>> {
        // Each binding's value: one item, or a list.
        let mut bound: Vec<(&InputSpec, Resolved)> = Vec::with_capacity(step.bindings.len());
        for (input, source) in &step.bindings {
            let Some(spec) = step.input_specs.iter().find(|s| &s.name == input) else {
                return Ok(Err(format!("`{}` takes no input `{input}`", step.tool)));
            };
            let resolved = match source {
                Source::Input { name } => match inputs.get(name) {
                    Some(value) => Resolved::of_input(value),
                    // An optional workflow input that was not given.
                    None => continue,
                },
                Source::Output { step: up, output } => {
                    match self.upstream_output(tx, up, output).await? {
                        Ok(resolved) => resolved,
                        Err(reason) => return Ok(Err(reason)),
                    }
                }
            };
            bound.push((spec, resolved));
        }
        // The runs: one per item of the mapped input, or one.
        let runs = match &step.map {
            None => None,
            Some(map) => match bound.iter().find(|(spec, _)| &spec.name == map) {
                Some((_, Resolved::Many(items))) => Some(items.len()),
                Some((_, Resolved::One(_))) | None => Some(0),
            },
        };
        if let Some(runs) = runs
            && runs > MAX_MAP_ITEMS
        {
            return Ok(Err(format!(
                "it maps over {runs} items; a step maps over at most {MAX_MAP_ITEMS}"
            )));
        }
        let mut planned = Vec::with_capacity(runs.unwrap_or(1));
        for run in 0..runs.unwrap_or(1) {
            let mut stored = BTreeMap::new();
            let mut files = Vec::new();
            for (spec, resolved) in &bound {
                let input = spec.name.as_str();
                let values: Vec<(String, &Item)> = match resolved {
                    Resolved::Many(items) if step.map.as_deref() == Some(input) => {
                        vec![(input.to_owned(), &items[run])]
                    }
                    Resolved::Many(items) => {
                        if items.len() > spec.max_items {
                            return Ok(Err(format!(
                                "its input `{input}` gathers {} items; `{}` takes at most {}",
                                items.len(),
                                step.tool,
                                spec.max_items
                            )));
                        }
                        items
                            .iter()
                            .enumerate()
                            .map(|(i, item)| (crate::tools::item_key(input, i), item))
                            .collect()
                    }
                    Resolved::One(item) if spec.list => {
                        vec![(crate::tools::item_key(input, 0), item)]
                    }
                    Resolved::One(item) => vec![(input.to_owned(), item)],
                };
                if values.is_empty() && spec.required {
                    return Ok(Err(format!("its input `{input}` has no items")));
                }
                for (key, item) in values {
                    match item.stored(spec, &mut files) {
                        Ok(value) => stored.insert(key, value),
                        Err(reason) => return Ok(Err(reason)),
                    };
                }
            }
            let prepared = Prepared {
                inputs: stored,
                settings: step.settings.clone(),
            };
            let estimate = match step.price.estimate(&step.input_specs, &prepared) {
                Ok(estimate) => estimate,
                Err(err) => return Ok(Err(err.to_string())),
            };
            let item = runs.map(|_| run as i32);
            let name = super::service::step_job_name(&self.workflow.name, &step.name, item);
            let reuse_key =
                crate::jobs::reuse::key_of(&step.version.name, &step.version.version, &prepared);
            planned.push((
                item,
                Planned {
                    id: JobId::new(),
                    files,
                    tool: step.version.clone(),
                    name,
                    prepared,
                    estimate,
                    priority: 0,
                    reuse_key,
                },
            ));
        }
        Ok(Ok(planned))
    }

    /// The output `output` of the completed upstream step `up`: one item, or a list (every
    /// output of a mapped step, in item order; the files of a FILES output, in name order).
    async fn upstream_output(
        &self,
        tx: &Transaction,
        up: &str,
        output: &str,
    ) -> Result<Result<Resolved, String>> {
        use sea_orm::QuerySelect;
        let upstream = self.checked.step(up);
        let spec = upstream.and_then(|s| s.outputs.iter().find(|o| o.name == output));
        let (Some(upstream), Some(spec), Some(row)) = (upstream, spec, self.steps.get(up)) else {
            return Ok(Err(format!("the step `{up}` left no output `{output}`")));
        };
        let list = upstream.output_is_list(output);
        // Its jobs, in item order.
        let jobs: Vec<(JobId, Option<Value>)> = match (upstream.map.is_some(), row.job_id) {
            (true, _) => {
                job::Entity::find_items_of(self.workflow.id, up)
                    .select_only()
                    .column(job::Column::Id)
                    .column(job::Column::Result)
                    .into_tuple()
                    .all(tx)
                    .await?
            }
            (false, Some(id)) => {
                job::Entity::find_by_id(id)
                    .select_only()
                    .column(job::Column::Id)
                    .column(job::Column::Result)
                    .into_tuple()
                    .all(tx)
                    .await?
            }
            (false, None) => Vec::new(),
        };
        if upstream.map.is_none() && jobs.is_empty() {
            return Ok(Err(format!("the step `{up}` left no output `{output}`")));
        }
        let mut items = Vec::new();
        match spec.kind {
            OutputKind::File | OutputKind::Files => {
                let mut by_job: BTreeMap<JobId, Vec<entity::file::Model>> = BTreeMap::new();
                let ids: Vec<JobId> = jobs.iter().map(|(id, _)| *id).collect();
                for chunk in ids.chunks(500) {
                    let files = entity::file::Entity::find()
                        .filter(entity::file::Column::JobId.is_in(chunk.iter().copied()))
                        .filter(entity::file::Column::Role.eq(entity::file::FileRole::Output))
                        .all(tx)
                        .await?;
                    for file in files.into_iter().filter(|f| spec.matches(&f.name)) {
                        if let Some(job) = file.job_id {
                            by_job.entry(job).or_default().push(file);
                        }
                    }
                }
                let path = spec.path.clone().unwrap_or_default();
                for (id, _) in &jobs {
                    let mut files = by_job.remove(id).unwrap_or_default();
                    if spec.kind == OutputKind::File && files.is_empty() {
                        return Ok(Err(format!(
                            "the step `{up}` stored no file `{path}` (its output `{output}`)"
                        )));
                    }
                    files.sort_by(|a, b| a.name.cmp(&b.name).then(a.id.cmp(&b.id)));
                    if spec.kind == OutputKind::File {
                        files.truncate(1);
                    }
                    items.extend(
                        files
                            .iter()
                            .map(|file| Item::File(super::StoredFile::of_row(file))),
                    );
                }
            }
            OutputKind::Field => {
                let field = spec.field.clone().unwrap_or_default();
                for (_, result) in &jobs {
                    match super::reuse::field_text(result.as_ref().and_then(|r| r.get(&field))) {
                        Some(text) => items.push(Item::Text(text)),
                        None => {
                            return Ok(Err(format!(
                                "the result of the step `{up}` has no `{field}` (its output `{output}`)"
                            )));
                        }
                    }
                }
            }
        }
        if list {
            return Ok(Ok(Resolved::Many(items)));
        }
        Ok(match items.into_iter().next() {
            Some(item) => Ok(Resolved::One(item)),
            None => Err(format!("the step `{up}` left no output `{output}`")),
        })
    }
}

/// One value a step's input takes: a stored file or text.
enum Item {
    File(super::StoredFile),
    Text(String),
}

/// What a binding gives a step: one value, or a list.
enum Resolved {
    One(Item),
    Many(Vec<Item>),
}

impl Resolved {
    fn of_input(value: &StoredValue) -> Resolved {
        match value {
            StoredValue::Text { text } => Resolved::One(Item::Text(text.clone())),
            StoredValue::File(file) => Resolved::One(Item::File(file.clone())),
            StoredValue::List { items } => Resolved::Many(
                items
                    .iter()
                    .map(|item| match Resolved::of_input(item) {
                        Resolved::One(item) => item,
                        // Lists hold single values.
                        Resolved::Many(_) => Item::Text(String::new()),
                    })
                    .collect(),
            ),
        }
    }
}

impl Item {
    /// The item as a job's input of `spec`, checked; a file gets its own row in the job's
    /// `files` (the same stored bytes). `Err` says why the step cannot take it.
    fn stored(&self, spec: &InputSpec, files: &mut Vec<NewFile>) -> Result<StoredInput, String> {
        let input = &spec.name;
        let value = match self {
            Item::Text(text) => {
                if spec.format == Some(InputFormat::Fasta)
                    && let Err(message) = pricing::check_fasta(text)
                {
                    return Err(format!("its input `{input}` {message}"));
                }
                StoredInput::text(text.clone())
            }
            Item::File(file) => {
                let file = file.for_job();
                let value = StoredInput::file(&file, Some(file.id), Some(file.key.clone()));
                files.push(file);
                value
            }
        };
        if spec.kind == InputKind::Text && value.kind != StoredInputKind::Text {
            return Err(format!("its input `{input}` takes text"));
        }
        if value.bytes > spec.max_bytes {
            return Err(format!(
                "its input `{input}` is {} bytes; the limit is {} bytes",
                value.bytes, spec.max_bytes
            ));
        }
        Ok(value)
    }
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

/// Keeps the definition of a workflow being written, so that its settling, in the same
/// transaction, and every later change in this process do not read and parse it back.
pub(crate) fn remember(id: WorkflowId, checked: Checked) {
    definitions().insert(id, Arc::new(checked.indexed()));
}

/// Moves workflows on after jobs of their steps ended, in the transaction of those endings:
/// `jobs` as they now are. Jobs of no workflow are ignored. The caller holds the workflows'
/// workspaces, taken before the jobs' write (`jobs::lifecycle`).
pub(crate) async fn steps_ended(tx: &Transaction, jobs: &[job::Model]) -> Result<()> {
    let mut by_workflow: BTreeMap<WorkflowId, Vec<&job::Model>> = BTreeMap::new();
    for job in jobs.iter().filter(|job| job.status.is_final()) {
        if let Some(workflow_id) = job.workflow_id {
            by_workflow.entry(workflow_id).or_default().push(job);
        }
    }
    for (workflow_id, ended) in by_workflow {
        Box::pin(advance(tx, workflow_id, &ended)).await?;
    }
    Ok(())
}

async fn advance(tx: &Transaction, workflow_id: WorkflowId, ended: &[&job::Model]) -> Result<()> {
    // Completions are settled by one rule (`completed`); the other endings below.
    let (done, others): (Vec<&job::Model>, Vec<&job::Model>) = ended
        .iter()
        .partition(|job| job.status == JobStatus::Completed);
    if !done.is_empty() {
        completed(tx, workflow_id, &done).await?;
    }
    if others.is_empty() {
        return Ok(());
    }
    let Some(mut open) = Open::load(tx, workflow_id).await? else {
        return Ok(());
    };
    for job in others {
        // Every ended job of the workflow is counted once, whatever its step became.
        if job.refunded {
            open.workflow.credits_refunded += job.credit_cost;
            open.workflow_changed = true;
        }
        let Some(name) = &job.workflow_step else {
            continue;
        };
        let Some(step) = open.steps.get_mut(name) else {
            continue;
        };
        let mapped = step.items.is_some();
        if mapped {
            if job.workflow_item.is_none() {
                continue;
            }
            step.items_left = (step.items_left - 1).max(0);
            open.changed.push(name.clone());
        } else if step.job_id != Some(job.id) {
            continue;
        }
        let step = &open.steps[name];
        if step.status.is_final() {
            continue;
        }
        let item = match job.workflow_item {
            Some(item) if mapped => format!("its item {} ", item + 1),
            _ => String::new(),
        };
        let item = item.as_str();
        let (status, reason) = match job.status {
            JobStatus::Failed | JobStatus::Timeout => (
                StepStatus::Failed,
                Some(match (&job.error_message, mapped) {
                    (Some(message), true) => format!("{item}failed: {message}"),
                    (Some(message), false) => message.clone(),
                    (None, _) => format!(
                        "{}its job ended {}",
                        item,
                        crate::jobs::state::name(job.status)
                    ),
                }),
            ),
            JobStatus::Cancelled => (
                StepStatus::Cancelled,
                Some(match job.workflow_item {
                    Some(item) if mapped => {
                        format!("the job of its item {} was cancelled", item + 1)
                    }
                    _ => "its job was cancelled".to_owned(),
                }),
            ),
            _ => continue,
        };
        // A mapped step that failed or was cancelled stops its other items.
        if mapped {
            open.stop_items.push(name.clone());
        }
        open.set_step(name, status, reason);
    }
    if open.workflow.status != WorkflowStatus::Running {
        // Ended already (cancelled, or failing fast): the step only records its outcome.
        return open.save(tx).await;
    }
    open.settle_and_save(tx).await.map(drop)
}

/// Steps whose jobs completed, the usual case, settled from what they change alone: the
/// database records the completions and what they free (`rows::complete`); only the steps that
/// became ready are read, to start them, so the cost does not grow with the workflow. The whole
/// graph is settled (`Open::settle_and_save`) only when the last step ended or a ready step
/// could not start.
async fn completed(tx: &Transaction, workflow_id: WorkflowId, ended: &[&job::Model]) -> Result<()> {
    let checked = match definitions().get(&workflow_id) {
        Some(checked) => checked,
        // Read (and kept) with the workflow's row, without its steps.
        None => match Open::load_with(tx, workflow_id, Some(&[])).await? {
            Some(open) => open.checked,
            None => return Ok(()),
        },
    };
    let Some(done) = super::rows::complete(tx, workflow_id, &checked, ended, Utc::now()).await?
    else {
        return Ok(());
    };
    if done.status != WorkflowStatus::Running || (done.ready.is_empty() && done.steps_left > 0) {
        // Ended already (cancelled, or failing fast) the steps only record their outcome; or
        // nothing is to start yet.
        crate::live::workflow_changed(tx, done.workspace_id, workflow_id);
        return Ok(());
    }
    if !done.ready.is_empty() {
        // The ready steps, with the steps whose outputs they take (not every step they wait
        // for: a step that only runs after another needs nothing of it).
        let mut names = done.ready.clone();
        for name in &done.ready {
            if let Some(step) = checked.step(name) {
                names.extend(step.bindings.iter().filter_map(|(_, source)| match source {
                    Source::Output { step, .. } => Some(step.clone()),
                    Source::Input { .. } => None,
                }));
            }
        }
        names.sort();
        names.dedup();
        let Some(mut open) = Open::load_with(tx, workflow_id, Some(&names)).await? else {
            return Ok(());
        };
        open.start(tx, &done.ready).await?;
        let started = done
            .ready
            .iter()
            .all(|name| open.status_of(name) == Some(StepStatus::Running));
        open.save(tx).await?;
        if started {
            return Ok(());
        }
    }
    // The last step ended, or a ready step could not start (skipping what needed it takes the
    // whole graph).
    if let Some(open) = Open::load(tx, workflow_id).await?
        && open.workflow.status == WorkflowStatus::Running
    {
        open.settle_and_save(tx).await?;
    }
    Ok(())
}

/// Cancels the unfinished jobs of the steps `names` of a workflow (a mapped step has one per
/// item), as a user's cancel of each would.
pub(crate) async fn cancel_steps(
    tx: &Transaction,
    workflow_id: WorkflowId,
    names: &[String],
    message: &str,
) -> Result<()> {
    use sea_orm::QueryOrder;
    for names in names.chunks(500) {
        let jobs = job::Entity::find()
            .filter(job::Column::WorkflowId.eq(workflow_id))
            .filter(job::Column::WorkflowStep.is_in(names.iter().cloned()))
            .filter(job::Column::FinishedAt.is_null())
            .order_by_asc(job::Column::Id)
            .all(tx)
            .await?;
        for job in jobs {
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
    }
    Ok(())
}
