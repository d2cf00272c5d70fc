//! What users do with a job once it exists: rename, delete, cancel, retry, duplicate and share.
//! Each checks the caller through `access` and writes in one transaction; a retry or duplicate
//! is submitted through `service`.

use entity::ids::{FileId, JobId, WorkspaceId};
use std::collections::BTreeMap;

use chrono::Utc;
use entity::job::{self, JobStatus, ParentKind, Visibility};
use entity::job_share;
use sea_orm::sea_query::Expr;
use sea_orm::{ActiveModelTrait, ColumnTrait, DatabaseConnection, EntityTrait, QueryFilter, Set};
use serde_json::{Map, Value};
use uuid::Uuid;

use super::lifecycle::{self, Change};
use super::service::{
    Lineage, Submission, SubmitOptions, Submitted, Submitter, submit_with_lineage,
};
use crate::access::{JobAccess, JobAction, Viewer, WorkspaceAccess};
use crate::db;
use crate::error::{Error, Result};
use crate::files::{self, Files};
use crate::store;
use crate::tools::{Catalog, InputValue, Prepared};
use crate::users;
use crate::workspaces::{self, Hold};

/// CONFLICT for a job that changed between its reading and its writing.
fn changed_meanwhile() -> Error {
    Error::conflict("the job changed meanwhile; reload it")
}

/// Renames a job.
pub async fn rename(
    db: &DatabaseConnection,
    viewer: &Viewer,
    id: JobId,
    name: &str,
) -> Result<job::Model> {
    let tx = db::begin_write(db).await?;
    let access = JobAccess::load_to_change(&tx, viewer, id).await?;
    access.check(JobAction::Rename)?;
    let name = name.trim();
    if name.is_empty() || name.chars().count() > 200 {
        return Err(Error::bad_input("name", "must be 1 to 200 characters"));
    }
    let name = vec![(job::Column::Name, Expr::value(name.to_owned()))];
    let job = store::update_details(&tx, &access.job, name)
        .await?
        .ok_or_else(changed_meanwhile)?;
    tx.commit().await?;
    Ok(job)
}

/// Deletes a finished job with its timeline, shares and files (rows and stored bytes). Its
/// ledger entries stay.
pub async fn delete(
    db: &DatabaseConnection,
    files: &Files,
    viewer: &Viewer,
    id: JobId,
) -> Result<job::Model> {
    let not_found = || Error::NotFound("job");
    let workspace_id = job::Entity::find_by_id(id)
        .one(db)
        .await?
        .ok_or_else(not_found)?
        .workspace_id;
    let tx = db::begin_write(db).await?;
    // Under the workspace's lock, as its deletion is, which would take the job with it.
    workspaces::lock(&tx, workspace_id, Hold::Change)
        .await
        .map_err(|_| not_found())?;
    let access = JobAccess::load(&tx, viewer, id).await?;
    access.check(JobAction::Delete)?;
    let this = sea_orm::Condition::all()
        .add(job::Column::Id.eq(id))
        .add(job::Column::Status.eq(access.job.status));
    if store::delete_jobs(&tx, this).await?.is_empty() {
        return Err(changed_meanwhile());
    }
    tx.commit().await?;
    files
        .delete_prefix(&files::job_prefix(access.job.workspace_id, id))
        .await;
    Ok(access.job)
}

/// Cancels a job. Before it runs, its charge is refunded; a running job keeps its charge and
/// is stopped by the execution layer, which sees the CANCELLED status.
pub async fn cancel(db: &DatabaseConnection, viewer: &Viewer, id: JobId) -> Result<job::Model> {
    let tx = db::begin_write(db).await?;
    let access = JobAccess::load_to_change(&tx, viewer, id).await?;
    access.check(JobAction::Cancel)?;
    let by = viewer
        .user()
        .map(|u| u.email.clone())
        .unwrap_or_else(|| "the system".into());
    let job = lifecycle::transition(
        &tx,
        &access.job,
        JobStatus::Cancelled,
        Change {
            message: Some(format!("cancelled by {by}")),
            actor_id: viewer.user_id(),
            ..Default::default()
        },
    )
    .await?;
    tx.commit().await?;
    Ok(job)
}

/// Runs a failed, timed-out or cancelled job again as a new job, charged anew.
pub async fn retry(
    db: &DatabaseConnection,
    catalog: &Catalog,
    files: &Files,
    viewer: &Viewer,
    id: JobId,
    options: SubmitOptions,
) -> Result<Submitted> {
    let access = JobAccess::load(db, viewer, id).await?;
    access.check(JobAction::Retry)?;
    let original = access.job;
    let submission = Submission {
        tool: original.tool.clone(),
        name: Some(original.name.clone()),
        inputs: stored_inputs(db, &original).await?,
        settings: Some(original.settings.clone()),
        priority: original.priority,
    };
    let lineage = Lineage {
        parent_id: original.id,
        kind: ParentKind::Retry,
    };
    let by = Submitter {
        db,
        catalog,
        files,
        viewer,
    };
    submit_with_lineage(
        by,
        original.workspace_id,
        submission,
        options,
        Some(lineage),
    )
    .await
}

/// Overrides for a duplicate.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    pub name: Option<String>,
    /// Merged over the original's settings, key by key.
    pub settings: Option<Map<String, Value>>,
    /// Replace the original's inputs of the same names.
    pub inputs: Vec<(String, InputValue)>,
    /// Where the copy goes; the original's workspace by default.
    pub workspace_id: Option<WorkspaceId>,
}

/// Submits a copy of any readable job, with overrides, charged anew.
pub async fn duplicate(
    db: &DatabaseConnection,
    catalog: &Catalog,
    files: &Files,
    viewer: &Viewer,
    id: JobId,
    overrides: Overrides,
    options: SubmitOptions,
) -> Result<Submitted> {
    let access = JobAccess::load(db, viewer, id).await?;
    let original = access.job.clone();
    let target = overrides.workspace_id.unwrap_or(original.workspace_id);
    // Another workspace must be readable: one that is not answers NOT_FOUND, as everywhere.
    let into = if target == original.workspace_id {
        access.standing.workspace
    } else {
        WorkspaceAccess::load(db, viewer, target).await?.standing
    };
    access.check(JobAction::Duplicate { into })?;
    let mut inputs: BTreeMap<String, InputValue> =
        stored_inputs(db, &original).await?.into_iter().collect();
    inputs.extend(overrides.inputs);
    let mut settings = original.settings.as_object().cloned().unwrap_or_default();
    settings.extend(overrides.settings.unwrap_or_default());
    let submission = Submission {
        tool: original.tool.clone(),
        name: Some(
            overrides
                .name
                .unwrap_or_else(|| format!("{} (copy)", original.name)),
        ),
        inputs: inputs.into_iter().collect(),
        settings: Some(Value::Object(settings)),
        priority: original.priority,
    };
    let lineage = Lineage {
        parent_id: original.id,
        kind: ParentKind::Duplicate,
    };
    let by = Submitter {
        db,
        catalog,
        files,
        viewer,
    };
    submit_with_lineage(by, target, submission, options, Some(lineage)).await
}

/// The inputs stored on a job, as values to submit again: text as it was, stored files as
/// copies, URLs not yet fetched as URLs.
async fn stored_inputs(
    db: &DatabaseConnection,
    job: &job::Model,
) -> Result<Vec<(String, InputValue)>> {
    let stored: BTreeMap<FileId, entity::file::Model> = entity::file::Entity::find_of_job(job.id)
        .all(db)
        .await?
        .into_iter()
        .map(|file| (file.id, file))
        .collect();
    Ok(Prepared::from_stored(&job.inputs, &job.settings)
        .inputs
        .into_iter()
        .filter_map(|(name, input)| {
            let value = match (input.text, input.file_id, input.url) {
                (Some(text), _, _) => InputValue::Text(text),
                (None, Some(id), _) => InputValue::Copy(stored.get(&id)?.clone(), input.residues),
                (None, None, Some(url)) => InputValue::Url(url),
                (None, None, None) => return None,
            };
            Some((name, value))
        })
        .collect())
}

/// The most e-mails a job or a workflow may be shared with.
pub const MAX_INVITED_EMAILS: usize = 100;

/// The e-mails a change of sharing invites, normalized, for a job or a workflow (`what`):
/// INVITED lists at least one and at most [`MAX_INVITED_EMAILS`], the other levels none.
/// BAD_USER_INPUT on `invitedEmails` otherwise.
pub fn invitations(
    what: &str,
    visibility: Visibility,
    invited: &[String],
) -> Result<std::collections::BTreeSet<String>> {
    if invited.len() > MAX_INVITED_EMAILS {
        return Err(Error::bad_input(
            "invitedEmails",
            format!("a {what} is shared with at most {MAX_INVITED_EMAILS} e-mails"),
        ));
    }
    let invited = invited
        .iter()
        .map(|email| {
            users::normalize_email(email).map_err(|_| {
                Error::bad_input(
                    "invitedEmails",
                    format!("`{email}` is not an e-mail address"),
                )
            })
        })
        .collect::<Result<std::collections::BTreeSet<_>>>()?;
    if visibility == Visibility::Invited && invited.is_empty() {
        return Err(Error::bad_input(
            "invitedEmails",
            "list at least one e-mail for INVITED",
        ));
    }
    if visibility != Visibility::Invited && !invited.is_empty() {
        return Err(Error::bad_input(
            "invitedEmails",
            "only INVITED sharing takes e-mails",
        ));
    }
    Ok(invited)
}

/// Sets who may see a job besides its workspace; INVITED lists the e-mails that may
/// ([`invitations`]).
pub async fn set_sharing(
    db: &DatabaseConnection,
    viewer: &Viewer,
    id: JobId,
    visibility: Visibility,
    invited: Vec<String>,
) -> Result<job::Model> {
    let invited = invitations("job", visibility, &invited)?;
    let tx = db::begin_write(db).await?;
    let access = JobAccess::load_to_change(&tx, viewer, id).await?;
    access.check(JobAction::Share)?;
    job_share::Entity::delete_many()
        .filter(job_share::Column::JobId.eq(id))
        .exec(&tx)
        .await?;
    let now = Utc::now();
    for email in invited {
        job_share::ActiveModel {
            id: Set(Uuid::now_v7()),
            job_id: Set(id),
            email: Set(email),
            created_at: Set(now),
        }
        .insert(&tx)
        .await?;
    }
    let visibility = vec![(job::Column::Visibility, Expr::value(visibility))];
    let job = store::update_details(&tx, &access.job, visibility)
        .await?
        .ok_or_else(changed_meanwhile)?;
    tx.commit().await?;
    Ok(job)
}
