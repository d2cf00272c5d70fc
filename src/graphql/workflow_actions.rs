//! GraphQL for what users do with a workflow besides running it: sharing it and duplicating
//! it with overrides.

use async_graphql::{Context, ID, InputObject, Json, Object, SimpleObject};
use entity::ids::{WorkflowId, WorkspaceId};
use serde_json::Value;

use super::jobs::{JobInputValue, VisibilityView, input_values};
use super::workflows::WorkflowView;
use super::{db, viewer};
use crate::access::WorkflowAccess;
use crate::error::{ApiResult, Error};
use crate::ids;
use crate::workflows::{duplicate, sharing};

#[derive(InputObject)]
struct SetWorkflowSharingInput {
    workflow_id: ID,
    visibility: VisibilityView,
    /// For INVITED: who may see the workflow and its steps' jobs, at most 100 e-mails.
    #[graphql(default)]
    invited_emails: Vec<String>,
}

#[derive(SimpleObject)]
struct SetWorkflowSharingPayload {
    workflow: WorkflowView,
}

/// New settings for one step of a duplicate.
#[derive(InputObject)]
struct StepSettingsInput {
    /// The step's name.
    step: String,
    /// Merged over the step's settings, key by key: a key given replaces the step's (a
    /// parameter's reference too), the others stay.
    settings: Json<Value>,
}

#[derive(InputObject)]
struct DuplicateWorkflowInput {
    workflow_id: ID,
    /// Default: the original's name with " (copy)".
    name: Option<String>,
    /// Merged over the original's parameters, name by name.
    parameters: Option<Json<Value>>,
    /// Replace the original's inputs of the same names (text or uploaded files); the others
    /// are copies of the original's.
    #[graphql(default)]
    inputs: Vec<JobInputValue>,
    /// New settings for some steps.
    #[graphql(default)]
    steps: Vec<StepSettingsInput>,
    /// Default: the original's.
    fail_fast: Option<bool>,
    /// Default: the original's. As in `submitWorkflow`.
    max_credits: Option<i64>,
    /// Where the copy goes; default the original's workspace. The viewer must be able to
    /// submit jobs there.
    workspace_id: Option<ID>,
}

#[derive(SimpleObject)]
struct DuplicateWorkflowPayload {
    workflow: WorkflowView,
}

#[derive(Default)]
pub struct WorkflowActionsMutation;

fn workflow_id(id: &ID) -> Result<WorkflowId, Error> {
    ids::decode::<WorkflowId>("workflowId", id)
}

#[Object]
impl WorkflowActionsMutation {
    /// Sets who may see a workflow, and its steps' jobs, besides its workspace: the levels of
    /// `setJobSharing`, by the same rules.
    async fn set_workflow_sharing(
        &self,
        ctx: &Context<'_>,
        input: SetWorkflowSharingInput,
    ) -> ApiResult<SetWorkflowSharingPayload> {
        let id = workflow_id(&input.workflow_id)?;
        sharing::set_sharing(
            db(ctx),
            viewer(ctx),
            id,
            input.visibility.into(),
            input.invited_emails,
        )
        .await?;
        Ok(SetWorkflowSharingPayload {
            workflow: WorkflowAccess::load(db(ctx), viewer(ctx), id).await?.into(),
        })
    }

    /// Submits a copy of a workflow of any status as a new run (its `parent`, kind
    /// DUPLICATE), with optional changes: checked whole, estimated, reserved and charged anew
    /// as a new submission; nothing is written when a check fails.
    async fn duplicate_workflow(
        &self,
        ctx: &Context<'_>,
        input: DuplicateWorkflowInput,
    ) -> ApiResult<DuplicateWorkflowPayload> {
        let id = workflow_id(&input.workflow_id)?;
        let mut steps = Vec::with_capacity(input.steps.len());
        for step in input.steps {
            match step.settings.0 {
                Value::Object(settings) => steps.push((step.step, settings)),
                _ => {
                    let field = format!("steps.{}.settings", step.step);
                    return Err(Error::bad_input(field, "must be an object").into());
                }
            }
        }
        let overrides = duplicate::Overrides {
            name: input.name,
            parameters: input.parameters.map(|p| p.0),
            inputs: input_values(ctx, input.inputs)?,
            steps,
            fail_fast: input.fail_fast,
            max_credits: input.max_credits,
            workspace_id: input
                .workspace_id
                .map(|id| ids::decode::<WorkspaceId>("workspaceId", &id))
                .transpose()?,
        };
        let by = super::job_actions::submitter(ctx);
        let submitted = duplicate::duplicate(by, id, overrides).await?;
        let access = WorkflowAccess::load(db(ctx), viewer(ctx), submitted.workflow.id).await?;
        Ok(DuplicateWorkflowPayload {
            workflow: access.into(),
        })
    }
}
