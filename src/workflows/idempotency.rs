//! Idempotency keys of workflow submissions, by the rules of jobs' (`jobs::idempotency`): the
//! same key from the same workspace with the same request answers with the workflow it made,
//! writing and charging nothing more; with another request, IDEMPOTENCY_KEY_REUSED. Keys are
//! unique per workspace, apart from jobs' and batches' keys.

use entity::ids::WorkspaceId;
use entity::workflow;
use sea_orm::{ColumnTrait as _, ConnectionTrait, EntityTrait as _, QueryFilter as _};
use serde_json::json;

use super::WorkflowSubmission;
use crate::error::Result;
use crate::jobs::idempotency;

/// The fingerprint of a workflow request, once its uploads are stored: what it runs (a tools
/// file's workflow by name, or its definition), its name, parameters, inputs by content,
/// `failFast`, `maxCredits` and whether it reuses results.
pub(super) fn fingerprint(submission: &WorkflowSubmission) -> String {
    let mut form = json!({
        "workflow": submission.template,
        "definition": submission.definition,
        "name": submission.name,
        "parameters": submission.parameters,
        "inputs": idempotency::inputs_form(&submission.inputs),
        "failFast": submission.fail_fast,
        "maxCredits": submission.max_credits,
    });
    idempotency::with_reuse(&mut form, submission.reuse);
    idempotency::fingerprint(&form)
}

/// The workflow made with idempotency key `key` in workspace `workspace_id`, if any;
/// IDEMPOTENCY_KEY_REUSED if it was made by another request than the one of `fingerprint`.
pub(super) async fn find(
    db: &impl ConnectionTrait,
    workspace_id: WorkspaceId,
    key: &str,
    fingerprint: &str,
) -> Result<Option<workflow::Model>> {
    let workflow = workflow::Entity::find()
        .filter(workflow::Column::WorkspaceId.eq(workspace_id))
        .filter(workflow::Column::IdempotencyKey.eq(key))
        .one(db)
        .await?;
    if let Some(workflow) = &workflow {
        let made = format!("the workflow {}", crate::ids::encode(workflow.id).0);
        idempotency::check_same(workflow.request_fingerprint.as_deref(), fingerprint, &made)?;
    }
    Ok(workflow)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tools::InputValue;

    #[test]
    fn a_workflow_fingerprint_changes_with_anything_asked() {
        let base = WorkflowSubmission {
            template: Some("protein-profile".into()),
            parameters: Some(json!({"k": 3, "x": {"a": 1, "b": 2}})),
            inputs: vec![("dna".into(), InputValue::Text(">a\nACGT\n".into()))],
            ..Default::default()
        };
        let print = fingerprint(&base);
        assert_eq!(print.len(), 64);
        let reordered = WorkflowSubmission {
            parameters: Some(json!({"x": {"b": 2, "a": 1}, "k": 3})),
            ..base.clone()
        };
        assert_eq!(fingerprint(&reordered), print);
        for other in [
            WorkflowSubmission {
                template: Some("other".into()),
                ..base.clone()
            },
            WorkflowSubmission {
                name: Some("named".into()),
                ..base.clone()
            },
            WorkflowSubmission {
                parameters: Some(json!({"k": 4, "x": {"a": 1, "b": 2}})),
                ..base.clone()
            },
            WorkflowSubmission {
                inputs: vec![("dna".into(), InputValue::Text(">a\nACGG\n".into()))],
                ..base.clone()
            },
            WorkflowSubmission {
                fail_fast: Some(true),
                ..base.clone()
            },
            WorkflowSubmission {
                max_credits: Some(10),
                ..base.clone()
            },
            WorkflowSubmission {
                reuse: true,
                ..base.clone()
            },
            // The key itself is not part of the request.
        ] {
            assert_ne!(fingerprint(&other), print);
        }
        let keyed = WorkflowSubmission {
            idempotency_key: Some("k1".into()),
            ..base.clone()
        };
        assert_eq!(fingerprint(&keyed), print);
    }
}
