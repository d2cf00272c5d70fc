//! Reusing results at submission (`submitWorkflow(reuse: true)`): a step whose inputs are all
//! known when the workflow is submitted, and which computes what a COMPLETED job of the
//! workspace computed, takes that job's results instead of running, as a retry's completed
//! steps do (`service::NewWorkflow::reused`).
//!
//! The steps are walked in dependency order. A step's inputs are known when each comes from a
//! workflow input or from an output of a step that is itself reused (whose outputs are then
//! stored files with their SHA-256, or a result's field). Its key is the one every job has
//! (`jobs::reuse::key_of`), and the earlier job is found and its outputs copied as for a job
//! (`jobs::reuse::earlier`). A step fed by a step that runs cannot be known before that step
//! runs, so it runs too.

use std::collections::{BTreeMap, HashMap, VecDeque};

use entity::ids::{JobId, WorkspaceId};
use entity::job;
use sea_orm::DatabaseConnection;
use serde_json::Value;

use super::definition::{Checked, Source, Step};
use super::{StoredFile, StoredInputs, StoredValue};
use crate::access::{JobStanding, Viewer};
use crate::error::Result;
use crate::files::{Files, NewFile};
use crate::jobs::reuse;
use crate::tools::{OutputKind, Prepared};

/// The steps whose results are known at submission, each with the values of its outputs by
/// name.
pub(super) type Known = BTreeMap<String, BTreeMap<String, StoredValue>>;

/// A step that takes an earlier job's results instead of running: the id of its new job, the
/// earlier job, copies of its output files made under the new job's folder, and what the step
/// says of it.
pub(super) struct ReusedStep {
    pub(super) job_id: JobId,
    pub(super) original: job::Model,
    pub(super) outputs: Vec<NewFile>,
    pub(super) reason: String,
}

/// What reuse found for a submission.
#[derive(Default)]
pub(super) struct Found {
    /// The reused steps' outputs.
    pub(super) known: Known,
    /// The reused steps, with copies of their outputs; none when only estimating.
    pub(super) steps: BTreeMap<String, ReusedStep>,
}

/// Where to look and as whom: the workspace, and the viewer with their standing there.
pub(super) struct Lookup<'a> {
    pub(super) db: &'a DatabaseConnection,
    pub(super) viewer: &'a Viewer,
    pub(super) standing: JobStanding,
    pub(super) workspace_id: WorkspaceId,
}

/// The steps of `checked`, with workflow inputs `inputs`, that may reuse results of earlier
/// jobs. With `files`, each reused step's outputs are copied for its new job (the copies pushed
/// to `staged`, for the caller to discard if the workflow is not written); without, nothing is
/// copied, for an estimate.
pub(super) async fn find(
    lookup: &Lookup<'_>,
    files: Option<&Files>,
    (checked, inputs): (&Checked, &StoredInputs),
    staged: &mut Vec<NewFile>,
) -> Result<Found> {
    let mut found = Found::default();
    for step in in_dependency_order(checked) {
        // A step reuses only when everything it waits for does: its inputs are then known, and
        // it does not complete before a step it is ordered after.
        if !step
            .depends_on
            .iter()
            .all(|up| found.known.contains_key(up))
        {
            continue;
        }
        let Some(prepared) = prepared(step, inputs, &found.known) else {
            continue;
        };
        let (name, version) = (&step.version.name, &step.version.version);
        let Some(key) = reuse::key_of(name, version, &prepared) else {
            continue;
        };
        let by = (lookup.viewer, lookup.standing);
        let (original, stored) = match files {
            Some(files) => {
                let job_id = JobId::new();
                let place = (lookup.workspace_id, job_id);
                let Some((original, copies)) =
                    reuse::earlier(lookup.db, files, by, &key, place).await?
                else {
                    continue;
                };
                staged.extend(copies.iter().cloned());
                let stored = copies.iter().map(StoredFile::of_new).collect();
                found.steps.insert(
                    step.name.clone(),
                    ReusedStep {
                        job_id,
                        reason: format!(
                            "reused the results of the job {}",
                            crate::ids::encode(original.id).0
                        ),
                        original: original.clone(),
                        outputs: copies,
                    },
                );
                (original, stored)
            }
            None => {
                let found = reuse::find(lookup.db, by.0, by.1, lookup.workspace_id, &key).await?;
                let Some(original) = found else { continue };
                let rows = reuse::outputs(lookup.db, original.id).await?;
                (original, rows.iter().map(StoredFile::of_row).collect())
            }
        };
        found
            .known
            .insert(step.name.clone(), outputs_of(step, &original, stored));
    }
    Ok(found)
}

/// The steps of a checked workflow, each after every step it waits for.
fn in_dependency_order(checked: &Checked) -> Vec<&Step> {
    let mut waiting: HashMap<&str, usize> = HashMap::new();
    let mut dependents: HashMap<&str, Vec<&Step>> = HashMap::new();
    for step in &checked.steps {
        waiting.insert(&step.name, step.depends_on.len());
        for up in &step.depends_on {
            dependents.entry(up.as_str()).or_default().push(step);
        }
    }
    let mut ready: VecDeque<&Step> = checked
        .steps
        .iter()
        .filter(|step| step.depends_on.is_empty())
        .collect();
    let mut order = Vec::with_capacity(checked.steps.len());
    while let Some(step) = ready.pop_front() {
        order.push(step);
        for down in dependents.get(step.name.as_str()).into_iter().flatten() {
            let left = waiting
                .get_mut(down.name.as_str())
                .expect("every step is counted");
            *left -= 1;
            if *left == 0 {
                ready.push_back(down);
            }
        }
    }
    order
}

/// A step's inputs and settings as its one job would have them, when every input is known: a
/// workflow input, or an output of a step in `known`. An optional workflow input not given is
/// left out, as when the step runs. None for a step that runs once per item (`map`) or takes a
/// list: it is not one job.
fn prepared(step: &Step, inputs: &StoredInputs, known: &Known) -> Option<Prepared> {
    if step.map.is_some() {
        return None;
    }
    let mut stored = BTreeMap::new();
    for (input, source) in &step.bindings {
        let value = match source {
            Source::Input { name } => match inputs.get(name) {
                Some(value) => value,
                None => continue,
            },
            Source::Output { step: up, output } => known.get(up)?.get(output)?,
        };
        if matches!(value, StoredValue::List { .. }) {
            return None;
        }
        stored.insert(input.clone(), super::service::estimated(value));
    }
    Some(Prepared {
        inputs: stored,
        settings: step.settings.clone(),
    })
}

/// The outputs step `step` declares, as the job `original` (with its output files `stored`)
/// made them. An output it did not make is left out, and so is a list (FILES): the steps they
/// feed are not known.
fn outputs_of(
    step: &Step,
    original: &job::Model,
    stored: Vec<StoredFile>,
) -> BTreeMap<String, StoredValue> {
    let mut outputs = BTreeMap::new();
    for spec in &step.outputs {
        let value = match spec.kind {
            OutputKind::File => stored
                .iter()
                .find(|file| spec.matches(&file.name))
                .map(|file| StoredValue::File(file.clone())),
            OutputKind::Field => {
                let field = spec.field.as_deref().unwrap_or_default();
                let value = original.result.as_ref().and_then(|r| r.get(field));
                field_text(value).map(|text| StoredValue::Text { text })
            }
            OutputKind::Files => None,
        };
        if let Some(value) = value {
            outputs.insert(spec.name.clone(), value);
        }
    }
    outputs
}

/// The text a field output passes on: a string as it is, any other value as JSON; none for a
/// missing or null field.
pub(super) fn field_text(value: Option<&Value>) -> Option<String> {
    match value {
        Some(Value::String(text)) => Some(text.clone()),
        Some(Value::Null) | None => None,
        Some(other) => Some(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn a_field_passes_on_a_string_as_it_is_and_other_values_as_json() {
        assert_eq!(field_text(Some(&json!("a b"))).as_deref(), Some("a b"));
        assert_eq!(field_text(Some(&json!(12))).as_deref(), Some("12"));
        assert_eq!(field_text(Some(&json!([1]))).as_deref(), Some("[1]"));
        assert_eq!(field_text(Some(&Value::Null)), None);
        assert_eq!(field_text(None), None);
    }
}
