//! Submitting a workflow (checked, estimated, its credits reserved and its first steps queued
//! in one transaction), estimating one, and cancelling one.

use std::collections::BTreeMap;

use chrono::Utc;
use entity::ids::{JobId, WorkflowId, WorkspaceId};
use entity::job::Visibility;
use entity::workflow::{self, WorkflowParentKind, WorkflowStatus};
use entity::workflow_step::{self, StepStatus};
use sea_orm::{ColumnTrait, DatabaseConnection, EntityTrait, QueryFilter, Set};
use serde_json::Value;

use super::advance::{self, Open};
use super::definition::{self, Checked, Definition, Source};
use super::reuse::{self, Known, ReusedStep};
use super::{StoredFile, StoredInputs, StoredValue, idempotency};
use crate::access::{
    JobStanding, Viewer, WorkflowAccess, WorkflowAction, WorkspaceAccess, WorkspaceAction,
};
use crate::credits::{Credits, ledger};
use crate::db;
use crate::error::{Error, Result, is_unique_violation};
use crate::files::{self, Checks, Files, NewFile};
use crate::jobs::idempotency as job_idempotency;
use crate::jobs::service::{self, Charging, NewJob, Planned, Reused, StepOf, Submitter};
use crate::tools::{Catalog, Estimate, InputFormat, InputKind, InputValue, Prepared, StoredInput};
use crate::workspaces::{self, Hold};

/// A workflow to submit: a tools file's workflow by name, or a definition.
#[derive(Debug, Clone, Default)]
pub struct WorkflowSubmission {
    pub template: Option<String>,
    pub definition: Option<Definition>,
    pub name: Option<String>,
    pub parameters: Option<Value>,
    pub inputs: Vec<(String, InputValue)>,
    /// Stop every step at the first failure; default: the tools file's, or false.
    pub fail_fast: Option<bool>,
    pub max_credits: Option<i64>,
    /// Steps whose inputs are known at submission take the results of a COMPLETED job of the
    /// workspace that computed the same, uncharged (`reuse`).
    pub reuse: bool,
    /// The same key from the same workspace returns the first workflow instead of a new one;
    /// with another request, IDEMPOTENCY_KEY_REUSED (`idempotency`).
    pub idempotency_key: Option<String>,
}

/// A submitted workflow, and whether it is an earlier one returned for a repeated idempotency
/// key.
#[derive(Debug, Clone)]
pub struct Submitted {
    pub workflow: workflow::Model,
    pub replayed: bool,
}

/// One step's part of a workflow's estimate.
#[derive(Debug, Clone)]
pub struct StepEstimate {
    pub step: String,
    pub tool: String,
    /// Its price, or the part of it known before its upstream steps run.
    pub estimate: Estimate,
    /// False when its price also depends on outputs of upstream steps (the size of an input
    /// they feed), not known yet.
    pub known: bool,
    /// The inputs whose size decides the unknown part.
    pub depends_on_outputs: Vec<String>,
    /// Whether it takes the results of an earlier job instead of running (`reuse`): then its
    /// estimate is nothing.
    pub reused: bool,
}

/// The price of a workflow: the known total, the steps' parts, and what it reserves.
#[derive(Debug, Clone)]
pub struct WorkflowEstimate {
    pub total: Credits,
    pub steps: Vec<StepEstimate>,
    /// Whether every step's price is known.
    pub complete: bool,
    /// What submission would reserve: the total when complete, else `maxCredits`.
    pub reservation: Option<Credits>,
    /// What the reused steps would have cost had they run.
    pub saved_by_reuse: Credits,
}

/// The definition a submission names.
fn definition_of(catalog: &Catalog, submission: &WorkflowSubmission) -> Result<Definition> {
    match (&submission.template, &submission.definition) {
        (Some(name), None) => catalog.require_workflow("workflow", name).cloned(),
        (None, Some(definition)) => Ok(definition.clone()),
        _ => Err(Error::bad_input(
            "workflow",
            "give either `workflow` (a workflow of the tools file, by name) or `definition`",
        )),
    }
}

/// The price of a checked workflow with its inputs, as far as known: the outputs of steps that
/// reuse earlier results (`known`) are known and those steps cost nothing; other upstream
/// outputs are counted as empty and marked.
pub(super) fn estimate_checked(
    checked: &Checked,
    inputs: &StoredInputs,
    known: &Known,
    max_credits: Option<i64>,
) -> Result<WorkflowEstimate> {
    let mut steps = Vec::with_capacity(checked.steps.len());
    let mut saved = Credits::ZERO;
    for step in &checked.steps {
        let mut stored = BTreeMap::new();
        let mut depends_on_outputs = Vec::new();
        // A mapped step: the items of the input it maps over, when known.
        let mut mapped: Option<Option<Vec<StoredInput>>> = None;
        for (input, source) in &step.bindings {
            let spec = step.input_specs.iter().find(|s| &s.name == input);
            let values = match source {
                Source::Input { name } => match inputs.get(name) {
                    Some(StoredValue::List { items }) => items.iter().map(estimated).collect(),
                    Some(value) => vec![estimated(value)],
                    None => continue,
                },
                Source::Output { step: up, output } if known.contains_key(up) => {
                    match known.get(up).and_then(|outputs| outputs.get(output)) {
                        Some(value) => vec![estimated(value)],
                        // An output the reused job did not make: the step fails when it runs.
                        None => continue,
                    }
                }
                Source::Output { .. } => {
                    let priced = step.price.per_kilobyte > Credits::ZERO
                        || (step.price.per_1k_residues > Credits::ZERO
                            && spec.is_some_and(|s| s.format == Some(InputFormat::Fasta)));
                    if priced {
                        depends_on_outputs.push(input.clone());
                    }
                    if step.map.as_ref() == Some(input) {
                        mapped = Some(None);
                        continue;
                    }
                    vec![estimated(&StoredValue::File(StoredFile {
                        name: String::new(),
                        size: 0,
                        content_type: String::new(),
                        sha256: String::new(),
                        key: String::new(),
                        residues: Some(0),
                    }))]
                }
            };
            if let Some(spec) = spec {
                for value in &values {
                    spec.check_size(&format!("steps.{}.inputs.{input}", step.name), value.bytes)?;
                }
            }
            if step.map.as_ref() == Some(input) {
                mapped = Some(Some(values));
            } else if spec.is_some_and(|s| s.list) {
                for (i, value) in values.into_iter().enumerate() {
                    stored.insert(crate::tools::item_key(input, i), value);
                }
            } else if let Some(value) = values.into_iter().next() {
                stored.insert(input.clone(), value);
            }
        }
        let price = |stored: BTreeMap<String, StoredInput>| {
            let prepared = Prepared {
                inputs: stored,
                settings: step.settings.clone(),
            };
            step.price
                .estimate(&step.input_specs, &prepared)
                .map_err(|err| match err {
                    Error::BadInput { field, message } => Error::BadInput {
                        field: format!("steps.{}.{field}", step.name),
                        message,
                    },
                    other => other,
                })
        };
        let mut estimate = match (mapped, &step.map) {
            (None, _) | (_, None) => price(stored)?,
            (Some(Some(items)), Some(map)) => {
                let mut sum = Estimate {
                    total: Credits::ZERO,
                    lines: Vec::new(),
                };
                for item in items {
                    let mut run = stored.clone();
                    run.insert(map.clone(), item);
                    sum = add_estimates(sum, price(run)?)
                        .ok_or_else(|| crate::tools::pricing::too_expensive("steps"))?;
                }
                sum
            }
            // Over the outputs of an upstream step: as many runs as it leaves items.
            (Some(None), Some(map)) => {
                if !step.price.is_free() && !depends_on_outputs.contains(map) {
                    depends_on_outputs.push(map.clone());
                }
                Estimate {
                    total: Credits::ZERO,
                    lines: Vec::new(),
                }
            }
        };
        let reused = known.contains_key(&step.name);
        if reused {
            saved = saved
                .checked_add(estimate.total)
                .ok_or_else(|| crate::tools::pricing::too_expensive("steps"))?;
            estimate = Estimate {
                total: Credits::ZERO,
                lines: Vec::new(),
            };
        }
        steps.push(StepEstimate {
            step: step.name.clone(),
            tool: step.tool.clone(),
            estimate,
            known: depends_on_outputs.is_empty(),
            depends_on_outputs,
            reused,
        });
    }
    let total = Credits::checked_sum(steps.iter().map(|s| s.estimate.total))
        .ok_or_else(|| crate::tools::pricing::too_expensive("steps"))?;
    let complete = steps.iter().all(|s| s.known);
    if let Some(max) = max_credits {
        if max < 0 {
            return Err(Error::bad_input("maxCredits", "must not be negative"));
        }
        if total.get() > max {
            return Err(Error::bad_input(
                "maxCredits",
                format!(
                    "the steps come to {total} credits{}, more than the {max} you allowed",
                    if complete {
                        ""
                    } else {
                        " before the parts not known yet"
                    }
                ),
            ));
        }
    }
    let reservation = reservation_for(total, complete, max_credits);
    Ok(WorkflowEstimate {
        total,
        steps,
        complete,
        reservation,
        saved_by_reuse: saved,
    })
}

/// A workflow input as a step's estimate reads it (a list's item at a time), and a value
/// known at submission as a step's input, for its key (`reuse`).
pub(super) fn estimated(value: &StoredValue) -> StoredInput {
    match value {
        StoredValue::Text { text } => StoredInput::text(text.clone()),
        StoredValue::File(file) => StoredInput::file(&file.for_job(), None, None),
        // Lists hold single values; an empty one is priced as nothing.
        StoredValue::List { items } => items
            .first()
            .map(estimated)
            .unwrap_or_else(|| StoredInput::text(String::new())),
    }
}

/// The sum of a mapped step's runs' prices: totals added, lines of one label merged.
fn add_estimates(mut sum: Estimate, run: Estimate) -> Option<Estimate> {
    sum.total = sum.total.checked_add(run.total)?;
    for line in run.lines {
        match sum.lines.iter_mut().find(|l| l.label == line.label) {
            Some(existing) => {
                existing.quantity = existing.quantity.checked_add(line.quantity)?;
                existing.amount = existing.amount.checked_add(line.amount)?;
            }
            None => sum.lines.push(line),
        }
    }
    Some(sum)
}

/// What a workflow of price `total` reserves: the total when every step's price is known
/// (`complete`), else its `maxCredits` (a cap above what any balance holds reserves the most a
/// balance may hold); none when neither is known.
fn reservation_for(total: Credits, complete: bool, max_credits: Option<i64>) -> Option<Credits> {
    match (complete, max_credits) {
        (true, _) => Some(total),
        (false, Some(max)) => Credits::new(max.min(Credits::MAX.get())),
        (false, None) => None,
    }
}

/// What a workflow reserves: its estimate when every step's price is known, else its
/// `maxCredits`, which is then required (BAD_USER_INPUT naming the steps whose price is not
/// known yet).
pub(super) fn required_reservation(estimate: &WorkflowEstimate) -> Result<Credits> {
    estimate.reservation.ok_or_else(|| {
        let unknown: Vec<_> = estimate
            .steps
            .iter()
            .filter(|s| !s.known)
            .map(|s| format!("`{}`", s.step))
            .collect();
        Error::bad_input(
            "maxCredits",
            format!(
                "is required: the price of {} depends on outputs of earlier steps; give the most the workflow may cost",
                unknown.join(", ")
            ),
        )
    })
}

/// The inputs of a submission as the estimate reads them, without storing anything: text as
/// given; files are not accepted here (an estimate takes no uploads).
pub(super) fn inline_inputs(
    checked: &Checked,
    given: Vec<(String, InputValue)>,
) -> Result<StoredInputs> {
    let mut stored = StoredInputs::new();
    for (name, value) in given {
        let field = format!("inputs.{name}");
        let spec = workflow_input(checked, &field, &name)?;
        if stored.contains_key(&name) && !spec.list {
            return Err(Error::bad_input(field, "given twice"));
        }
        let value = match value {
            InputValue::Text(text) => {
                if spec.format == Some(InputFormat::Fasta) {
                    crate::tools::pricing::check_fasta(&text)
                        .map_err(|message| Error::bad_input(&field, message))?;
                }
                StoredValue::Text { text }
            }
            InputValue::File(file) => {
                if spec.kind == InputKind::Text {
                    return Err(Error::bad_input(field, "takes text, not a file"));
                }
                StoredValue::File(StoredFile::of_new(&file))
            }
            InputValue::Url(_) => {
                return Err(Error::bad_input(
                    field,
                    "workflows take uploaded files and text, not URLs",
                ));
            }
            InputValue::Upload(_) => {
                return Err(Error::bad_input(
                    field,
                    "an estimate takes no uploads: give the content as text",
                ));
            }
            InputValue::Copy(..) => {
                return Err(Error::Internal(anyhow::anyhow!(
                    "the input `{name}` reached the checks before it was stored"
                )));
            }
        };
        if spec.list {
            let entry = stored
                .entry(name)
                .or_insert_with(|| StoredValue::List { items: Vec::new() });
            if let StoredValue::List { items } = entry {
                if items.len() == definition::MAX_MAP_ITEMS {
                    return Err(Error::bad_input(
                        field,
                        format!("takes at most {} items", definition::MAX_MAP_ITEMS),
                    ));
                }
                items.push(value);
            }
        } else {
            stored.insert(name, value);
        }
    }
    for spec in checked.inputs.iter().filter(|spec| spec.required) {
        if !stored.contains_key(&spec.name) {
            return Err(Error::bad_input(
                format!("inputs.{}", spec.name),
                "is required",
            ));
        }
    }
    Ok(stored)
}

pub(super) fn workflow_input<'a>(
    checked: &'a Checked,
    field: &str,
    name: &str,
) -> Result<&'a definition::WorkflowInput> {
    checked
        .inputs
        .iter()
        .find(|spec| spec.name == name)
        .ok_or_else(|| {
            let names: Vec<_> = checked.inputs.iter().map(|s| s.name.as_str()).collect();
            Error::bad_input(
                field,
                format!(
                    "the workflow has no input `{name}`; its inputs are: {}",
                    if names.is_empty() {
                        "none".to_owned()
                    } else {
                        names.join(", ")
                    }
                ),
            )
        })
}

/// `estimateWorkflowCost`: the price of a workflow, per step, without writing anything.
pub fn estimate(catalog: &Catalog, submission: WorkflowSubmission) -> Result<WorkflowEstimate> {
    if submission.reuse {
        return Err(Error::bad_input(
            "workspaceId",
            "is required with `reuse`: the workspace whose results would be reused",
        ));
    }
    let definition = definition_of(catalog, &submission)?;
    let checked = definition::check(catalog, &definition, submission.parameters.as_ref())?;
    let inputs = inline_inputs(&checked, submission.inputs)?;
    estimate_checked(&checked, &inputs, &Known::new(), submission.max_credits)
}

/// `estimateWorkflowCost` in workspace `workspace_id`, which the viewer must be able to read:
/// with `reuse`, the steps that would reuse results of its jobs the viewer may read cost
/// nothing, and the steps they feed are priced by those results.
pub async fn estimate_in(
    by: Submitter<'_>,
    workspace_id: WorkspaceId,
    submission: WorkflowSubmission,
) -> Result<WorkflowEstimate> {
    let access = WorkspaceAccess::load(by.db, by.viewer, workspace_id).await?;
    let definition = definition_of(by.catalog, &submission)?;
    let checked = definition::check(by.catalog, &definition, submission.parameters.as_ref())?;
    let inputs = inline_inputs(&checked, submission.inputs)?;
    let known = if submission.reuse {
        let lookup = reuse::Lookup {
            db: by.db,
            viewer: by.viewer,
            standing: JobStanding {
                workspace: access.standing,
                viewer_id: by.viewer.user_id(),
            },
            workspace_id,
        };
        reuse::find(&lookup, None, (&checked, &inputs), &mut Vec::new())
            .await?
            .known
    } else {
        Known::new()
    };
    estimate_checked(&checked, &inputs, &known, submission.max_credits)
}

/// Stores a submission's uploaded workflow inputs under the workflow's folder, each checked on
/// the way; every stored file is pushed to `staged`.
pub(super) async fn stage(
    files: &Files,
    checked: &Checked,
    inputs: &mut [(String, InputValue)],
    (workspace_id, workflow_id): (WorkspaceId, WorkflowId),
    staged: &mut Vec<NewFile>,
) -> Result<()> {
    for (name, value) in inputs.iter_mut() {
        let InputValue::Upload(upload) = value else {
            continue;
        };
        let field = format!("inputs.{name}");
        let spec = workflow_input(checked, &field, name)?;
        if spec.kind == InputKind::Text {
            return Err(Error::bad_input(field, "takes text, not a file"));
        }
        let id = entity::ids::FileId::new();
        let key = files::workflow_input_key(workspace_id, workflow_id, id);
        let checks = Checks {
            max_bytes: u64::MAX,
            fasta: spec.format == Some(InputFormat::Fasta),
            count_residues: false,
        };
        let stored = files
            .store_upload(upload, key, checks)
            .await
            .map_err(|err| err.into_input_error(&field))?;
        staged.push(stored.clone());
        *value = InputValue::File(stored);
    }
    Ok(())
}

/// Submits a workflow: checks it whole, stores its uploads, reserves its credits and queues
/// the steps that wait for nothing, in one transaction. Nothing is written, and no uploaded
/// file is left in storage, when any check fails.
pub async fn submit(
    by: Submitter<'_>,
    workspace_id: WorkspaceId,
    submission: WorkflowSubmission,
) -> Result<Submitted> {
    let mut staged = Vec::new();
    let result = submit_staged(by, workspace_id, submission, &mut staged).await;
    match &result {
        Ok(submitted) if !submitted.replayed => {}
        _ => by.files.discard(&staged).await,
    }
    result
}

async fn submit_staged(
    by: Submitter<'_>,
    workspace_id: WorkspaceId,
    mut submission: WorkflowSubmission,
    staged: &mut Vec<NewFile>,
) -> Result<Submitted> {
    let Submitter {
        db,
        catalog,
        files,
        viewer,
    } = by;
    let user = viewer.require_user()?;
    let access = WorkspaceAccess::load(db, viewer, workspace_id).await?;
    access.check(WorkspaceAction::SubmitJobs)?;
    job_idempotency::check_key(submission.idempotency_key.as_deref())?;
    let definition = definition_of(catalog, &submission)?;
    let checked = definition::check(catalog, &definition, submission.parameters.as_ref())?;
    let name = match submission.name.as_deref() {
        Some(name) => checked_name(name)?,
        None => {
            let title = match (&definition.title, &definition.name) {
                (title, _) if !title.is_empty() => title.clone(),
                (_, Some(name)) => name.clone(),
                _ => "Workflow".to_owned(),
            };
            format!("{title} {}", Utc::now().format("%Y-%m-%d %H:%M"))
        }
    };
    // Every input is checked by name and count before anything is stored.
    let mut given: BTreeMap<&str, usize> = BTreeMap::new();
    for (input, _) in &submission.inputs {
        let field = format!("inputs.{input}");
        let spec = workflow_input(&checked, &field, input)?;
        let count = given.entry(input).or_default();
        *count += 1;
        if !spec.list && *count > 1 {
            return Err(Error::bad_input(field, "given twice"));
        }
        if *count > definition::MAX_MAP_ITEMS {
            return Err(Error::bad_input(
                field,
                format!("takes at most {} items", definition::MAX_MAP_ITEMS),
            ));
        }
    }
    let workflow_id = WorkflowId::new();
    stage(
        files,
        &checked,
        &mut submission.inputs,
        (workspace_id, workflow_id),
        staged,
    )
    .await?;
    // Compared once uploads are stored: a file is part of the request by its content.
    let key = submission.idempotency_key.clone();
    let fingerprint = key.as_ref().map(|_| idempotency::fingerprint(&submission));
    if let (Some(key), Some(fingerprint)) = (&key, &fingerprint)
        && let Some(workflow) = idempotency::find(db, workspace_id, key, fingerprint).await?
    {
        return Ok(Submitted {
            workflow,
            replayed: true,
        });
    }
    let inputs = inline_inputs(&checked, std::mem::take(&mut submission.inputs))?;
    let found = if submission.reuse {
        let lookup = reuse::Lookup {
            db,
            viewer,
            standing: JobStanding {
                workspace: access.standing,
                viewer_id: viewer.user_id(),
            },
            workspace_id,
        };
        reuse::find(&lookup, Some(files), (&checked, &inputs), staged).await?
    } else {
        reuse::Found::default()
    };
    let estimate = estimate_checked(&checked, &inputs, &found.known, submission.max_credits)?;
    let reservation = required_reservation(&estimate)?;
    let new = NewWorkflow {
        id: workflow_id,
        workspace_id,
        submitter_id: user.id,
        name,
        template: submission.template.clone(),
        fail_fast: submission.fail_fast.unwrap_or(definition.fail_fast),
        max_credits: submission.max_credits,
        checked,
        inputs,
        estimate,
        reservation,
        parent: None,
        reused: found.steps,
        reused_items: BTreeMap::new(),
        idempotency: key.zip(fingerprint),
    };
    let tx = db::begin_write(db).await?;
    workspaces::hold(&tx, viewer, workspace_id, Hold::Change)
        .await?
        .check(WorkspaceAction::SubmitJobs)?;
    let idempotency = new.idempotency.clone();
    match write(&tx, new).await {
        Ok(workflow) => {
            tx.commit().await?;
            Ok(Submitted {
                workflow,
                replayed: false,
            })
        }
        // A concurrent request with the same key won the race: answer with its workflow.
        Err(Error::Database(err)) if is_unique_violation(&err) => {
            drop(tx);
            let Some((key, fingerprint)) = idempotency else {
                return Err(Error::Database(err));
            };
            let workflow = idempotency::find(db, workspace_id, &key, &fingerprint)
                .await?
                .ok_or_else(|| {
                    Error::conflict("a workflow with this idempotency key is being submitted")
                })?;
            Ok(Submitted {
                workflow,
                replayed: true,
            })
        }
        Err(err) => Err(err),
    }
}

/// A workflow to write, checked and priced.
pub(super) struct NewWorkflow {
    pub(super) id: WorkflowId,
    pub(super) workspace_id: WorkspaceId,
    pub(super) submitter_id: entity::ids::UserId,
    pub(super) name: String,
    pub(super) template: Option<String>,
    pub(super) fail_fast: bool,
    pub(super) max_credits: Option<i64>,
    pub(super) checked: Checked,
    pub(super) inputs: StoredInputs,
    pub(super) estimate: WorkflowEstimate,
    pub(super) reservation: Credits,
    pub(super) parent: Option<(WorkflowId, WorkflowParentKind)>,
    /// Steps that take the results of an earlier job (of an earlier run's completed step, or
    /// found by `reuse`) instead of running.
    pub(super) reused: BTreeMap<String, ReusedStep>,
    /// Its idempotency key and the fingerprint of its request.
    pub(super) idempotency: Option<(String, String)>,
    /// Mapped steps that take the results of an earlier run's completed mapped step, one job
    /// per item, in item order.
    pub(super) reused_items: BTreeMap<String, Vec<ReusedStep>>,
}

/// The job of a step (of its item `item`, for a mapped step) that takes the results of an
/// earlier run's job: COMPLETED at once, uncharged.
fn reused_job(
    workflow_id: WorkflowId,
    workflow_name: &str,
    (step, item): (&str, Option<i32>),
    reused: ReusedStep,
) -> NewJob {
    let ReusedStep {
        job_id: id,
        original,
        outputs,
        ..
    } = reused;
    let prepared = Prepared::from_stored(&original.inputs, &original.settings);
    let name = step_job_name(workflow_name, step, item);
    NewJob {
        planned: Planned {
            id,
            files: Vec::new(),
            tool: crate::jobs::ToolVersion {
                name: original.tool.clone(),
                version: original.tool_version.clone(),
                max_attempts: original.max_attempts.max(1) as u32,
            },
            name,
            reuse_key: original.reuse_key.clone(),
            estimate: Estimate {
                total: Credits::ZERO,
                lines: Vec::new(),
            },
            prepared,
            priority: 0,
        },
        idempotency_key: None,
        request_fingerprint: None,
        batch_id: None,
        lineage: None,
        step: Some(StepOf {
            workflow: workflow_id,
            name: step.to_owned(),
            item,
        }),
        reused: Some(Reused { original, outputs }),
    }
}

/// Writes a new workflow in the caller's transaction, which holds its workspace: the workflow,
/// its steps (those reusing an earlier job's results completed at once, uncharged), its
/// reservation, and the jobs of the steps that wait for nothing.
pub(super) async fn write(tx: &db::Transaction, new: NewWorkflow) -> Result<workflow::Model> {
    let now = Utc::now();
    let workflow_id = new.id;
    let row = workflow::ActiveModel {
        id: Set(workflow_id),
        workspace_id: Set(new.workspace_id),
        submitter_id: Set(new.submitter_id),
        name: Set(new.name.clone()),
        template: Set(new.template),
        definition: Set(serde_json::to_value(&new.checked).expect("a definition serializes")),
        parameters: Set(Value::Object(new.checked.parameters.clone())),
        inputs: Set(serde_json::to_value(&new.inputs).expect("inputs serialize")),
        status: Set(WorkflowStatus::Running),
        fail_fast: Set(new.fail_fast),
        max_credits: Set(new.max_credits),
        credits_estimated: Set(new.estimate.total.get()),
        credits_reserved: Set(new.reservation.get()),
        credits_charged: Set(0),
        credits_refunded: Set(0),
        steps_left: Set(
            (new.checked.steps.len() - new.reused.len() - new.reused_items.len()) as i32,
        ),
        visibility: Set(Visibility::Private),
        idempotency_key: Set(new.idempotency.as_ref().map(|(key, _)| key.clone())),
        request_fingerprint: Set(new.idempotency.map(|(_, fingerprint)| fingerprint)),
        parent_id: Set(new.parent.map(|(id, _)| id)),
        parent_kind: Set(new.parent.map(|(_, kind)| kind)),
        error_message: Set(None),
        created_at: Set(now),
        updated_at: Set(now),
        finished_at: Set(None),
    };
    // Not read back: its definition is large, and the settling below returns the row.
    workflow::Entity::insert(row)
        .exec_without_returning(tx)
        .await?;
    // The steps that reuse an earlier job's results: their jobs, written COMPLETED.
    let mut reused_jobs = BTreeMap::new();
    let mut reused_items = BTreeMap::new();
    let mut jobs = Vec::new();
    for (name, step) in new.reused {
        reused_jobs.insert(name.clone(), (step.job_id, step.reason.clone()));
        jobs.push(reused_job(workflow_id, &new.name, (&name, None), step));
    }
    for (name, items) in new.reused_items {
        reused_items.insert(name.clone(), items.len() as i32);
        for (item, reused) in items.into_iter().enumerate() {
            let step = (name.as_str(), Some(item as i32));
            jobs.push(reused_job(workflow_id, &new.name, step, reused));
        }
    }
    let done = |name: &str| reused_jobs.contains_key(name) || reused_items.contains_key(name);
    let rows: Vec<workflow_step::Model> = new
        .checked
        .steps
        .iter()
        .zip(&new.estimate.steps)
        .enumerate()
        .map(|(position, (step, priced))| {
            let reused = reused_jobs.get(&step.name);
            let items = reused_items.get(&step.name).copied();
            workflow_step::Model {
                workflow_id,
                name: step.name.clone(),
                position: position as i32,
                tool: step.tool.clone(),
                status: if done(&step.name) {
                    StepStatus::Completed
                } else {
                    StepStatus::Waiting
                },
                depends_on: serde_json::to_value(&step.depends_on).expect("names serialize"),
                waiting_on: step.depends_on.iter().filter(|up| !done(up)).count() as i32,
                estimate: priced.estimate.total.get(),
                estimate_known: priced.known,
                job_id: reused.map(|(id, _)| *id),
                reason: reused
                    .map(|(_, reason)| reason.clone())
                    .or_else(|| items.map(|_| "reused the results of the earlier run".to_owned())),
                updated_at: now,
                items,
                items_left: 0,
            }
        })
        .collect();
    super::rows::insert(tx, rows).await?;
    if !jobs.is_empty() {
        service::insert_jobs(
            tx,
            new.submitter_id,
            new.workspace_id,
            jobs,
            Charging::Balance,
        )
        .await?;
    }
    if new.reservation > Credits::ZERO {
        ledger::reserve(tx, new.workspace_id, new.reservation.get()).await?;
    }
    advance::remember(workflow_id, new.checked);
    Open::load(tx, workflow_id)
        .await?
        .ok_or_else(|| Error::Internal(anyhow::anyhow!("the workflow was just written")))?
        .settle_and_save(tx)
        .await
}

/// A workflow's name as given: trimmed, 1 to 200 characters.
pub(super) fn checked_name(name: &str) -> Result<String> {
    let name = name.trim();
    if name.is_empty() || name.chars().count() > 200 {
        return Err(Error::bad_input("name", "must be 1 to 200 characters"));
    }
    Ok(name.to_owned())
}

/// Copies a workflow input's stored file under the folder of the workflow `into` (a retry or a
/// duplicate, which must outlive the original), pointing `file` at the copy, which is pushed to
/// `staged`.
pub(super) async fn copy_input(
    files: &Files,
    file: &mut StoredFile,
    (workspace_id, workflow_id): (WorkspaceId, WorkflowId),
    staged: &mut Vec<NewFile>,
) -> Result<()> {
    let key = files::workflow_input_key(workspace_id, workflow_id, entity::ids::FileId::new());
    files.copy_key(&file.key, &key).await?;
    file.key = key;
    staged.push(file.for_job());
    Ok(())
}

/// The name of a step's job: the workflow's and the step's (with its item, from 1, for a mapped
/// step), at most 200 characters.
pub(crate) fn step_job_name(workflow: &str, step: &str, item: Option<i32>) -> String {
    match item {
        Some(item) => format!("{workflow} · {step} [{}]", item + 1),
        None => format!("{workflow} · {step}"),
    }
    .chars()
    .take(200)
    .collect()
}

/// `retryWorkflow`: runs a FAILED or CANCELLED workflow again as a new one (its `parent`), with
/// the same definition, parameters and inputs. Its steps that completed are not run again: the
/// new run's steps take their results (copies of their outputs), uncharged; the others run and
/// are charged as in any workflow, against a reservation of their price (or of the original's
/// `maxCredits` when some price is not known yet).
pub async fn retry(by: Submitter<'_>, id: WorkflowId) -> Result<Submitted> {
    let mut staged = Vec::new();
    let result = retry_staged(by, id, &mut staged).await;
    if result.is_err() {
        by.files.discard(&staged).await;
    }
    result
}

async fn retry_staged(
    by: Submitter<'_>,
    id: WorkflowId,
    staged: &mut Vec<NewFile>,
) -> Result<Submitted> {
    let Submitter {
        db, files, viewer, ..
    } = by;
    let user = viewer.require_user()?;
    let access = WorkflowAccess::load(db, viewer, id).await?;
    access.check(WorkflowAction::Retry)?;
    let original = access.workflow;
    let workspace_id = original.workspace_id;
    let checked: Checked = serde_json::from_value(original.definition.clone())
        .map_err(|err| Error::Internal(anyhow::anyhow!("a stored workflow: {err}")))?;
    let new_id = WorkflowId::new();
    // The inputs, copied under the new run's folder: deleting the original leaves them.
    let mut inputs: StoredInputs = serde_json::from_value(original.inputs.clone())
        .map_err(|err| Error::Internal(anyhow::anyhow!("a workflow's inputs: {err}")))?;
    for value in inputs.values_mut() {
        let files_of: Vec<&mut StoredFile> = match value {
            StoredValue::File(file) => vec![file],
            StoredValue::List { items } => items
                .iter_mut()
                .filter_map(|item| match item {
                    StoredValue::File(file) => Some(file),
                    _ => None,
                })
                .collect(),
            StoredValue::Text { .. } => Vec::new(),
        };
        for file in files_of {
            copy_input(files, file, (workspace_id, new_id), staged).await?;
        }
    }
    // The completed steps' results, copied for the new run's jobs.
    let steps = workflow_step::Entity::find()
        .filter(workflow_step::Column::WorkflowId.eq(id))
        .all(db)
        .await?;
    let mut reused = BTreeMap::new();
    let mut reused_items = BTreeMap::new();
    for step in steps.iter().filter(|s| s.status == StepStatus::Completed) {
        if let Some(items) = step.items {
            // A mapped step: every item's results, or none (the step runs again).
            let jobs = entity::job::Entity::find_items_of(id, &step.name)
                .all(db)
                .await?;
            if jobs.len() != items as usize {
                continue;
            }
            let mut copies = Vec::with_capacity(jobs.len());
            for job in jobs {
                let id = JobId::new();
                match crate::jobs::reuse::copy_outputs(db, files, &job, (workspace_id, id)).await? {
                    Some(outputs) => {
                        staged.extend(outputs.iter().cloned());
                        copies.push(ReusedStep {
                            job_id: id,
                            original: job,
                            outputs,
                            reason: "reused the results of the earlier run".to_owned(),
                        });
                    }
                    None => break,
                }
            }
            if copies.len() == items as usize {
                reused_items.insert(step.name.clone(), copies);
            }
            continue;
        }
        let Some(job_id) = step.job_id else { continue };
        let Some(job) = entity::job::Entity::find_by_id(job_id).one(db).await? else {
            continue;
        };
        let new_job = JobId::new();
        if let Some(outputs) =
            crate::jobs::reuse::copy_outputs(db, files, &job, (workspace_id, new_job)).await?
        {
            staged.extend(outputs.iter().cloned());
            let reused_step = ReusedStep {
                job_id: new_job,
                original: job,
                outputs,
                reason: "reused the results of the earlier run".to_owned(),
            };
            reused.insert(step.name.clone(), reused_step);
        }
    }
    let mut estimate = estimate_checked(&checked, &inputs, &Known::new(), original.max_credits)?;
    for step in estimate
        .steps
        .iter_mut()
        .filter(|s| reused.contains_key(&s.step) || reused_items.contains_key(&s.step))
    {
        step.estimate = Estimate {
            total: Credits::ZERO,
            lines: Vec::new(),
        };
        step.known = true;
        step.depends_on_outputs.clear();
        step.reused = true;
    }
    let total = Credits::checked_sum(estimate.steps.iter().map(|s| s.estimate.total))
        .ok_or_else(|| crate::tools::pricing::too_expensive("steps"))?;
    let complete = estimate.steps.iter().all(|s| s.known);
    let reservation = reservation_for(total, complete, original.max_credits).unwrap_or(total);
    estimate.total = total;
    estimate.complete = complete;
    estimate.reservation = Some(reservation);
    let new = NewWorkflow {
        id: new_id,
        workspace_id,
        submitter_id: user.id,
        name: original.name.clone(),
        template: original.template.clone(),
        fail_fast: original.fail_fast,
        max_credits: original.max_credits,
        checked,
        inputs,
        estimate,
        reservation,
        parent: Some((original.id, WorkflowParentKind::Retry)),
        reused,
        reused_items,
        idempotency: None,
    };
    let tx = db::begin_write(db).await?;
    workspaces::hold(&tx, viewer, workspace_id, Hold::Change)
        .await?
        .check(WorkspaceAction::SubmitJobs)?;
    let workflow = write(&tx, new).await?;
    tx.commit().await?;
    Ok(Submitted {
        workflow,
        replayed: false,
    })
}

/// `cancelWorkflow`: stops every unfinished step. Waiting steps are cancelled unpaid; running
/// steps' jobs are cancelled as a user's cancel of each would (refunded before they started);
/// what is left of the reservation is given back.
pub async fn cancel(
    db: &DatabaseConnection,
    viewer: &Viewer,
    id: WorkflowId,
) -> Result<workflow::Model> {
    let access = WorkflowAccess::load(db, viewer, id).await?;
    access.check(WorkflowAction::Cancel)?;
    let by = viewer
        .user()
        .map(|u| u.email.clone())
        .unwrap_or_else(|| "the system".into());
    // The running steps' jobs first, then the workspace: the order in which the execution
    // layer takes them. Steps that started meanwhile (written under the workspace's lock, so
    // none can start once it is held) have jobs not locked yet: taking them now would reverse
    // that order, so the locks are taken again, from the start.
    // A completion group or an ending of these jobs locks them too (in the order of their ids,
    // as here), then the workspace; should PostgreSQL still break a deadlock by failing this
    // side, it tries again too.
    let mut tries = 0;
    let tx = loop {
        let tx = db::begin_write(db).await?;
        let locked = match lock_jobs(&tx, id).await {
            Ok(locked) => Some(locked),
            Err(err) if format!("{err:?}").contains("deadlock detected") => None,
            Err(err) => return Err(err),
        };
        if let Some(locked) = locked {
            workspaces::lock(&tx, access.workflow.workspace_id, Hold::Change).await?;
            if unfinished_jobs(&tx, id)
                .await?
                .iter()
                .all(|job| locked.contains(job))
            {
                break tx;
            }
        }
        // Dropped: rolled back.
        drop(tx);
        tries += 1;
        if tries == 10 {
            return Err(Error::conflict(
                "the workflow's steps keep starting: try cancelling it again",
            ));
        }
    };
    let mut open = Open::load(&tx, id)
        .await?
        .ok_or(Error::NotFound("workflow"))?;
    let standing = WorkflowAccess::load(&tx, viewer, id).await?.standing;
    standing.check_workflow(&open.workflow, WorkflowAction::Cancel)?;
    let message = format!("cancelled by {by} with its workflow");
    let cancel = open.stop(WorkflowStatus::Cancelled, &message);
    open.save(&tx).await?;
    advance::cancel_steps(&tx, id, &cancel, &message).await?;
    let mut open = Open::load(&tx, id)
        .await?
        .ok_or(Error::NotFound("workflow"))?;
    open.release(&tx).await?;
    open.save(&tx).await?;
    tx.commit().await?;
    Ok(open.workflow)
}

/// `renameWorkflow`: 1 to 200 characters; its submitter and the workspace's owners and admins.
pub async fn rename(
    db: &DatabaseConnection,
    viewer: &Viewer,
    id: WorkflowId,
    name: &str,
) -> Result<workflow::Model> {
    let name = checked_name(name)?;
    let access = WorkflowAccess::load(db, viewer, id).await?;
    let tx = db::begin_write(db).await?;
    workspaces::lock(&tx, access.workflow.workspace_id, Hold::Change).await?;
    let access = WorkflowAccess::load(&tx, viewer, id).await?;
    access.check(WorkflowAction::Rename)?;
    let mut open = Open::load(&tx, id)
        .await?
        .ok_or(Error::NotFound("workflow"))?;
    open.workflow.name = name.to_owned();
    open.save(&tx).await?;
    tx.commit().await?;
    Ok(open.workflow)
}

/// `deleteWorkflow`: deletes an ended workflow with its steps' jobs (their timelines, shares
/// and files, rows and stored bytes) and its own inputs. Ledger entries stay.
pub async fn delete(
    db: &DatabaseConnection,
    files: &Files,
    viewer: &Viewer,
    id: WorkflowId,
) -> Result<workflow::Model> {
    use sea_orm::ColumnTrait as _;
    let access = WorkflowAccess::load(db, viewer, id).await?;
    let workspace_id = access.workflow.workspace_id;
    let tx = db::begin_write(db).await?;
    workspaces::lock(&tx, workspace_id, Hold::Change).await?;
    let access = WorkflowAccess::load(&tx, viewer, id).await?;
    access.check(WorkflowAction::Delete)?;
    let jobs = crate::store::delete_jobs(
        &tx,
        sea_orm::Condition::all().add(entity::job::Column::WorkflowId.eq(id)),
    )
    .await?;
    workflow::Entity::delete_by_id(id).exec(&tx).await?;
    crate::live::workflow_changed(&tx, access.workflow.workspace_id, access.workflow.id);
    tx.commit().await?;
    for job in &jobs {
        files
            .delete_prefix(&files::job_prefix(workspace_id, job.id))
            .await;
    }
    files
        .delete_prefix(&files::workflow_prefix(workspace_id, id))
        .await;
    Ok(access.workflow)
}

/// The unfinished jobs of a workflow's steps, without locking them.
async fn unfinished_jobs(tx: &db::Transaction, id: WorkflowId) -> Result<Vec<JobId>> {
    use sea_orm::QuerySelect;
    Ok(entity::job::Entity::find()
        .select_only()
        .column(entity::job::Column::Id)
        .filter(entity::job::Column::WorkflowId.eq(id))
        .filter(entity::job::Column::FinishedAt.is_null())
        .into_tuple()
        .all(tx)
        .await?)
}

/// Locks the unfinished jobs of a workflow's steps, in id order.
async fn lock_jobs(tx: &db::Transaction, id: WorkflowId) -> Result<Vec<JobId>> {
    use sea_orm::sea_query::LockType;
    use sea_orm::{QueryOrder, QuerySelect};
    let jobs = entity::job::Entity::find()
        .filter(entity::job::Column::WorkflowId.eq(id))
        .filter(entity::job::Column::FinishedAt.is_null())
        .order_by_asc(entity::job::Column::Id)
        .lock(LockType::NoKeyUpdate)
        .all(tx)
        .await?;
    Ok(jobs.into_iter().map(|job| job.id).collect())
}

/// Which workflows a list holds.
#[derive(Debug, Clone, Default)]
pub struct WorkflowFilter {
    pub statuses: Vec<WorkflowStatus>,
    pub submitter_id: Option<entity::ids::UserId>,
    pub search: Option<String>,
}

/// A page of a workspace's workflows, newest first: keyset pages by id.
pub async fn list(
    db: &DatabaseConnection,
    workspace: crate::access::WorkspaceRef,
    filter: &WorkflowFilter,
    page: crate::pagination::PageArgs,
) -> Result<crate::pagination::Page<workflow::Model>> {
    if !workspace.standing.can_read() {
        return Err(Error::NotFound("workspace"));
    }
    let mut select =
        workflow::Entity::find().filter(workflow::Column::WorkspaceId.eq(workspace.id));
    if !filter.statuses.is_empty() {
        select = select.filter(workflow::Column::Status.is_in(filter.statuses.iter().copied()));
    }
    if let Some(submitter) = filter.submitter_id {
        select = select.filter(workflow::Column::SubmitterId.eq(submitter));
    }
    if let Some(search) = &filter.search {
        select = select.filter(crate::pagination::name_contains(
            workflow::Column::Name,
            search,
        ));
    }
    crate::pagination::fetch(db, select, workflow::Column::Id, sea_orm::Order::Desc, page).await
}
