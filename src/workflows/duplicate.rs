//! `duplicateWorkflow`: a copy of any workflow the viewer may read, with overrides, submitted
//! as a new run (its `parent`, kind DUPLICATE): checked, estimated, reserved and charged anew,
//! in the parent's workspace or another where the viewer may submit jobs. And what a workflow
//! changed from its parent (`changes`).

use std::collections::{BTreeMap, BTreeSet};

use entity::ids::{WorkflowId, WorkspaceId};
use entity::workflow::{self, WorkflowParentKind};
use serde_json::{Map, Value};

use super::definition::{self, Checked, Definition, Parameter, StepDefinition};
use super::service::{
    NewWorkflow, Submitted, estimate_checked, inline_inputs, stage, workflow_input, write,
};
use super::{StoredInputs, StoredValue};
use crate::access::{WorkflowAccess, WorkflowAction, WorkspaceAccess, WorkspaceAction};
use crate::db;
use crate::error::{Error, Result};
use crate::files::NewFile;
use crate::jobs::history::{Difference, DifferenceKind};
use crate::jobs::service::Submitter;
use crate::tools::InputValue;
use crate::workspaces::{self, Hold};

/// What a duplicate changes of its parent; everything else is the parent's.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    /// Default: the parent's name with " (copy)".
    pub name: Option<String>,
    /// Merged over the parent's parameters, name by name.
    pub parameters: Option<Value>,
    /// Replace the parent's inputs of the same names; the others are copies of the parent's.
    pub inputs: Vec<(String, InputValue)>,
    /// Per step, settings merged over the step's, key by key.
    pub steps: Vec<(String, Map<String, Value>)>,
    /// Default: the parent's.
    pub fail_fast: Option<bool>,
    /// Default: the parent's.
    pub max_credits: Option<i64>,
    /// Where the copy goes; the parent's workspace by default.
    pub workspace_id: Option<WorkspaceId>,
}

/// Submits a copy of the workflow `id` with `overrides`. Nothing is written, and no file is
/// left in storage, when any check fails.
pub async fn duplicate(
    by: Submitter<'_>,
    id: WorkflowId,
    overrides: Overrides,
) -> Result<Submitted> {
    let mut staged = Vec::new();
    let result = duplicate_staged(by, id, overrides, &mut staged).await;
    if result.is_err() {
        by.files.discard(&staged).await;
    }
    result
}

async fn duplicate_staged(
    by: Submitter<'_>,
    id: WorkflowId,
    mut overrides: Overrides,
    staged: &mut Vec<NewFile>,
) -> Result<Submitted> {
    let Submitter {
        db,
        catalog,
        files,
        viewer,
    } = by;
    let user = viewer.require_user()?;
    let access = WorkflowAccess::load(db, viewer, id).await?;
    let parent = &access.workflow;
    let target = overrides.workspace_id.unwrap_or(parent.workspace_id);
    // Another workspace must be readable: one that is not answers NOT_FOUND, as everywhere.
    let into = if target == parent.workspace_id {
        access.standing.workspace
    } else {
        WorkspaceAccess::load(db, viewer, target).await?.standing
    };
    access.check(WorkflowAction::Duplicate { into })?;

    let stored: Checked = serde_json::from_value(parent.definition.clone())
        .map_err(|err| Error::Internal(anyhow::anyhow!("a stored workflow: {err}")))?;
    let mut declared = declaration(&stored, parent.fail_fast);
    override_steps(&mut declared, std::mem::take(&mut overrides.steps))?;
    let checked = definition::check(catalog, &declared, overrides.parameters.as_ref())?;
    let name = match overrides.name.as_deref() {
        Some(name) => super::service::checked_name(name)?,
        None => format!("{} (copy)", parent.name)
            .chars()
            .take(200)
            .collect(),
    };
    let mut given = std::mem::take(&mut overrides.inputs);
    // Every input is checked by name before anything is stored.
    for (input, _) in &given {
        workflow_input(&checked, &format!("inputs.{input}"), input)?;
    }
    let new_id = WorkflowId::new();
    stage(files, &checked, &mut given, (target, new_id), staged).await?;
    // The parent's other inputs, copied under the new run's folder: deleting the parent, or
    // its workspace, leaves them.
    let replaced: BTreeSet<String> = given.iter().map(|(name, _)| name.clone()).collect();
    let kept: StoredInputs = serde_json::from_value(parent.inputs.clone())
        .map_err(|err| Error::Internal(anyhow::anyhow!("a workflow's inputs: {err}")))?;
    for (name, value) in kept {
        if replaced.contains(&name) {
            continue;
        }
        // A list is given again item by item, in its order, as a submission gives it.
        let items = match value {
            StoredValue::List { items } => items,
            single => vec![single],
        };
        for item in items {
            let value = match item {
                StoredValue::Text { text } => InputValue::Text(text),
                StoredValue::File(mut file) => {
                    super::service::copy_input(files, &mut file, (target, new_id), staged).await?;
                    InputValue::File(file.for_job())
                }
                StoredValue::List { .. } => {
                    return Err(Error::Internal(anyhow::anyhow!(
                        "the input `{name}` holds a list in a list"
                    )));
                }
            };
            given.push((name.clone(), value));
        }
    }
    let inputs = inline_inputs(&checked, given)?;
    let max_credits = overrides.max_credits.or(parent.max_credits);
    let estimate = estimate_checked(&checked, &inputs, &super::reuse::Known::new(), max_credits)?;
    let reservation = super::service::required_reservation(&estimate)?;
    let new = NewWorkflow {
        id: new_id,
        workspace_id: target,
        submitter_id: user.id,
        name,
        template: parent.template.clone(),
        fail_fast: overrides.fail_fast.unwrap_or(parent.fail_fast),
        max_credits,
        checked,
        inputs,
        estimate,
        reservation,
        parent: Some((parent.id, WorkflowParentKind::Duplicate)),
        reused: BTreeMap::new(),
        reused_items: BTreeMap::new(),
        idempotency: None,
    };
    let tx = db::begin_write(db).await?;
    workspaces::hold(&tx, viewer, target, Hold::Change)
        .await?
        .check(WorkspaceAction::SubmitJobs)?;
    let workflow = write(&tx, new).await?;
    tx.commit().await?;
    Ok(Submitted {
        workflow,
        replayed: false,
    })
}

/// A checked workflow declared again, to be checked anew: its inputs; its parameters, each
/// defaulting to the value it was run with; its steps with their settings as declared (those
/// that refer to parameters) or as run, their bindings and the steps they wait for.
fn declaration(checked: &Checked, fail_fast: bool) -> Definition {
    let steps = checked
        .steps
        .iter()
        .map(|step| {
            let inputs: BTreeMap<String, String> = step
                .bindings
                .iter()
                .map(|(input, source)| (input.clone(), source.spelled()))
                .collect();
            let fed: BTreeSet<&str> = step
                .bindings
                .iter()
                .filter_map(|(_, source)| match source {
                    definition::Source::Output { step, .. } => Some(step.as_str()),
                    definition::Source::Input { .. } => None,
                })
                .collect();
            StepDefinition {
                name: step.name.clone(),
                tool: step.tool.clone(),
                settings: Some(
                    step.declared_settings
                        .clone()
                        .unwrap_or_else(|| step.settings.clone()),
                ),
                inputs,
                after: step
                    .depends_on
                    .iter()
                    .filter(|up| !fed.contains(up.as_str()))
                    .cloned()
                    .collect(),
                map: step.map.clone(),
            }
        })
        .collect();
    Definition {
        name: None,
        title: String::new(),
        description: String::new(),
        inputs: checked.inputs.clone(),
        parameters: checked
            .parameters
            .iter()
            .map(|(name, value)| Parameter {
                name: name.clone(),
                default: Some(value.clone()),
                description: String::new(),
            })
            .collect(),
        steps,
        fail_fast,
    }
}

/// Merges each step's overriding settings over its declared ones, key by key: a key given
/// replaces the step's (a parameter's reference too), the others stay.
fn override_steps(
    definition: &mut Definition,
    overrides: Vec<(String, Map<String, Value>)>,
) -> Result<()> {
    let mut seen = BTreeSet::new();
    for (name, settings) in overrides {
        let field = format!("steps.{name}");
        if !seen.insert(name.clone()) {
            return Err(Error::bad_input(field, "given twice"));
        }
        let Some(position) = definition.steps.iter().position(|s| s.name == name) else {
            let known: Vec<&str> = definition.steps.iter().map(|s| s.name.as_str()).collect();
            return Err(Error::bad_input(
                field,
                format!(
                    "the workflow has no step `{name}`; its steps are: {}",
                    known.join(", ")
                ),
            ));
        };
        let step = &mut definition.steps[position];
        let mut merged = match step.settings.take() {
            Some(Value::Object(map)) => map,
            _ => Map::new(),
        };
        merged.extend(settings);
        step.settings = Some(Value::Object(merged));
    }
    Ok(())
}

/// What differs between a workflow and its parent: its name, its parameters, its inputs (text,
/// or a file's name, size and SHA-256, wherever it is stored) and its steps' settings
/// (`<step>.<setting>`), each with both values.
pub fn changes(parent: &workflow::Model, child: &workflow::Model) -> Result<Vec<Difference>> {
    let mut out = Vec::new();
    if parent.name != child.name {
        out.push(Difference {
            kind: DifferenceKind::Name,
            name: "name".to_owned(),
            old: Some(Value::String(parent.name.clone())),
            new: Some(Value::String(child.name.clone())),
        });
    }
    let empty = Map::new();
    let object = |value: &'_ Value| value.as_object().cloned().unwrap_or_else(|| empty.clone());
    differ(
        &mut out,
        DifferenceKind::Parameter,
        "",
        &object(&parent.parameters),
        &object(&child.parameters),
    );
    let inputs = |workflow: &workflow::Model| -> Result<Map<String, Value>> {
        let stored: StoredInputs = serde_json::from_value(workflow.inputs.clone())
            .map_err(|err| Error::Internal(anyhow::anyhow!("a workflow's inputs: {err}")))?;
        Ok(stored
            .into_iter()
            .map(|(name, value)| (name, content(value)))
            .collect())
    };
    differ(
        &mut out,
        DifferenceKind::Input,
        "",
        &inputs(parent)?,
        &inputs(child)?,
    );
    let steps = |workflow: &workflow::Model| -> Result<BTreeMap<String, Map<String, Value>>> {
        let checked: Checked = serde_json::from_value(workflow.definition.clone())
            .map_err(|err| Error::Internal(anyhow::anyhow!("a stored workflow: {err}")))?;
        Ok(checked
            .steps
            .into_iter()
            .map(|step| (step.name, object(&step.settings)))
            .collect())
    };
    let (old, new) = (steps(parent)?, steps(child)?);
    for (step, settings) in &new {
        let before = old.get(step).unwrap_or(&empty);
        differ(
            &mut out,
            DifferenceKind::StepSetting,
            &format!("{step}."),
            before,
            settings,
        );
    }
    Ok(out)
}

/// A stored input as a change shows it: text as it is; a file by name, size and SHA-256 (the
/// same content is the same input, wherever it is stored); a list as its items.
fn content(value: StoredValue) -> Value {
    match value {
        StoredValue::List { items } => serde_json::json!({
            "kind": "LIST",
            "items": items.into_iter().map(content).collect::<Vec<_>>(),
        }),
        StoredValue::Text { text } => serde_json::json!({ "kind": "TEXT", "text": text }),
        StoredValue::File(file) => serde_json::json!({
            "kind": "FILE",
            "name": file.name,
            "bytes": file.size,
            "sha256": file.sha256,
        }),
    }
}

/// Pushes one difference per key whose value differs between `old` and `new`, in key order.
fn differ(
    out: &mut Vec<Difference>,
    kind: DifferenceKind,
    prefix: &str,
    old: &Map<String, Value>,
    new: &Map<String, Value>,
) {
    let keys: BTreeSet<&String> = old.keys().chain(new.keys()).collect();
    for key in keys {
        if old.get(key) != new.get(key) {
            out.push(Difference {
                kind,
                name: format!("{prefix}{key}"),
                old: old.get(key).cloned(),
                new: new.get(key).cloned(),
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tools::Catalog;
    use serde_json::json;

    fn profile(catalog: &Catalog, parameters: Value) -> Checked {
        let template = catalog
            .require_workflow("workflow", "protein-profile")
            .unwrap();
        definition::check(catalog, template, Some(&parameters)).unwrap()
    }

    #[test]
    fn a_declaration_checks_again_into_the_same_workflow_and_takes_new_parameters() {
        let catalog = Catalog::builtin();
        let checked = profile(&catalog, json!({ "k": 5 }));
        let again = definition::check(&catalog, &declaration(&checked, false), None).unwrap();
        assert_eq!(
            serde_json::to_value(&again).unwrap(),
            serde_json::to_value(&checked).unwrap()
        );
        let other = definition::check(
            &catalog,
            &declaration(&checked, false),
            Some(&json!({ "k": 2 })),
        )
        .unwrap();
        assert_eq!(other.step("kmers").unwrap().settings["k"], 2);
        assert_eq!(other.parameters["k"], 2);
    }

    #[test]
    fn step_settings_are_merged_over_the_declared_ones() {
        let catalog = Catalog::builtin();
        let checked = profile(&catalog, json!({ "k": 5 }));
        let mut declared = declaration(&checked, false);
        let top = json!({ "top": 2 }).as_object().cloned().unwrap();
        override_steps(&mut declared, vec![("kmers".to_owned(), top)]).unwrap();
        let again = definition::check(&catalog, &declared, Some(&json!({ "k": 4 }))).unwrap();
        // The parameter's reference stays, and takes the new value.
        assert_eq!(
            again.step("kmers").unwrap().settings,
            json!({ "k": 4, "top": 2 })
        );
        let refused = override_steps(&mut declared, vec![("nope".to_owned(), Map::new())]);
        assert!(
            matches!(refused, Err(Error::BadInput { ref field, .. }) if field == "steps.nope"),
            "{refused:?}"
        );
    }
}
