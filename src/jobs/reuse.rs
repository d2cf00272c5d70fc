//! Reusing results: a job that computes what an earlier COMPLETED job of its workspace computed
//! (the same tool and tool version, settings and inputs by content) may take that job's result
//! and output files instead of running, as Galaxy's job cache and Nextflow's resume do.
//!
//! Every job is written with its key (`key`), so that any later submission finds it by one
//! index lookup (`find`). A submission asks for reuse with `SubmitOptions::reuse`
//! (`service`); the state machine decides which jobs may be reused (`state::reusable`) and that
//! a reusing job is written COMPLETED (`state::Start::Reused`). The original's output files are
//! copied under the new job (`copy_outputs`), so deleting the original later leaves them.
//!
//! A job with a URL input not yet fetched has no key: its content is unknown at submission, so
//! it neither reuses results nor is found until its downloads are done, when it gets its key
//! (`jobs::downloads`).

use entity::file::{self, FileRole};
use entity::ids::{FileId, JobId, WorkspaceId};
use entity::job::{self, JobStatus};
use sea_orm::{ColumnTrait, ConnectionTrait, QueryFilter, QueryOrder, QuerySelect, Select};
use serde_json::{Map, Value, json};

use super::{idempotency, state};
use crate::access::{JobStanding, Viewer};
use crate::error::{Error, Result};
use crate::files::{self, Files, NewFile};
use crate::tools::{Prepared, StoredInputKind, Tool};

/// The most candidates with one key that `find` reads for a viewer who may read only some of
/// them (through sharing); a member reads the first.
const CANDIDATES: u64 = 20;

/// The key of what a job of `tool` with `prepared` inputs and settings computes: the SHA-256
/// (hex) of the canonical JSON of the tool's name and version, the settings (with their
/// defaults filled in) and each input by content: a stored file (uploaded, copied or fetched)
/// by its SHA-256, a text by its text. `None` while a URL input is not fetched.
pub fn key(tool: &Tool, prepared: &Prepared) -> Option<String> {
    key_of(&tool.name, &tool.version, prepared)
}

/// `key`, of a tool known by its name and version.
pub(crate) fn key_of(tool: &str, version: &str, prepared: &Prepared) -> Option<String> {
    let mut inputs = Map::new();
    for (name, input) in &prepared.inputs {
        let content = match (input.kind, &input.sha256, &input.text) {
            (StoredInputKind::Text, _, Some(text)) => json!({ "text": text }),
            (StoredInputKind::File | StoredInputKind::Url, Some(sha256), _) => {
                json!({ "sha256": sha256 })
            }
            _ => return None,
        };
        inputs.insert(name.clone(), content);
    }
    Some(idempotency::fingerprint(&json!({
        "tool": tool,
        "version": version,
        "settings": prepared.settings,
        "inputs": Value::Object(inputs),
    })))
}

/// The newest job of workspace `workspace_id` whose results a job with key `key` may reuse: a
/// COMPLETED one with the same key that the viewer may read (`JobStanding::reads`), whose
/// standing there is `standing`.
pub async fn find(
    db: &impl ConnectionTrait,
    viewer: &Viewer,
    standing: JobStanding,
    workspace_id: WorkspaceId,
    key: &str,
) -> Result<Option<job::Model>> {
    let candidates = candidates(workspace_id, key)
        .limit(CANDIDATES)
        .all(db)
        .await?;
    for job in candidates {
        if state::reusable(job.status) && standing.reads(db, viewer, &job).await? {
            return Ok(Some(job));
        }
    }
    Ok(None)
}

/// The COMPLETED jobs of workspace `workspace_id` with key `key`, newest first: one range of
/// `idx_jobs_reuse`.
pub fn candidates(workspace_id: WorkspaceId, key: &str) -> Select<job::Entity> {
    // The status in the text, for the index (see `store::status_is`).
    debug_assert!(state::reusable(JobStatus::Completed));
    job::Entity::find_in_workspace(workspace_id)
        .filter(job::Column::ReuseKey.eq(key))
        .filter(crate::store::status_is(JobStatus::Completed))
        .order_by_desc(job::Column::Id)
}

/// The earlier job whose results a new job `job_id` of workspace `workspace_id` with key `key`
/// may reuse (`find`), with copies of its output files for that job (`copy_outputs`); `None`
/// when there is none, or when it was deleted while its files were copied. The caller discards
/// the copies if the job is not written.
pub(crate) async fn earlier(
    db: &impl ConnectionTrait,
    files: &Files,
    (viewer, standing): (&Viewer, JobStanding),
    key: &str,
    (workspace_id, job_id): (WorkspaceId, JobId),
) -> Result<Option<(job::Model, Vec<NewFile>)>> {
    let Some(original) = find(db, viewer, standing, workspace_id, key).await? else {
        return Ok(None);
    };
    let copies = copy_outputs(db, files, &original, (workspace_id, job_id)).await?;
    Ok(copies.map(|copies| (original, copies)))
}

/// The output files of job `job_id`, in the order they were stored.
pub(crate) async fn outputs(db: &impl ConnectionTrait, job_id: JobId) -> Result<Vec<file::Model>> {
    Ok(file::Entity::find_of_job(job_id)
        .filter(file::Column::Role.eq(FileRole::Output))
        .order_by_asc(file::Column::Id)
        .all(db)
        .await?)
}

/// Copies the output files of `original` in storage, under the output folder of job `job_id`
/// of workspace `workspace_id`, for their rows to be written with that job (role OUTPUT).
/// `None`, with nothing left stored, when the original's files are gone (it was deleted
/// meanwhile). The caller discards the copies if the job is not written.
pub async fn copy_outputs(
    db: &impl ConnectionTrait,
    files: &Files,
    original: &job::Model,
    (workspace_id, job_id): (WorkspaceId, JobId),
) -> Result<Option<Vec<NewFile>>> {
    let outputs = outputs(db, original.id).await?;
    let prefix = files::output_prefix(workspace_id, job_id, 0);
    let mut copies = Vec::with_capacity(outputs.len());
    for output in &outputs {
        let id = FileId::new();
        match files
            .copy(output, id, format!("{prefix}/{}", id.simple()))
            .await
        {
            Ok(copy) => copies.push(copy),
            Err(err) => {
                files.discard(&copies).await;
                return match err {
                    Error::NotFound(_) => Ok(None),
                    other => Err(other),
                };
            }
        }
    }
    Ok(Some(copies))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::tools::StoredInput;

    fn input(kind: StoredInputKind, text: Option<&str>, sha256: Option<&str>) -> StoredInput {
        StoredInput {
            kind,
            text: text.map(str::to_owned),
            bytes: 4,
            file_id: sha256.map(|_| FileId::new()),
            url: (kind == StoredInputKind::Url).then(|| "https://example.org/a.fa".to_owned()),
            residues: None,
            sha256: sha256.map(str::to_owned),
            key: None,
        }
    }

    fn prepared(settings: Value, inputs: Vec<(&str, StoredInput)>) -> Prepared {
        Prepared {
            inputs: inputs
                .into_iter()
                .map(|(name, input)| (name.to_owned(), input))
                .collect::<BTreeMap<_, _>>(),
            settings,
        }
    }

    #[test]
    fn a_key_is_the_tool_its_version_the_settings_and_the_inputs_by_content() {
        use StoredInputKind::*;
        let key = |version: &str, prepared: &Prepared| key_of("kmer-count", version, prepared);
        let file = prepared(
            json!({"k": 3, "top": 20}),
            vec![("sequences", input(File, None, Some("ab12")))],
        );
        let base = key("1", &file).unwrap();
        assert_eq!(base.len(), 64);
        // The same content stored elsewhere, its settings in another order, fetched from a URL.
        let again = prepared(
            json!({"top": 20, "k": 3}),
            vec![("sequences", input(File, None, Some("ab12")))],
        );
        assert_eq!(key("1", &again).as_deref(), Some(base.as_str()));
        let fetched = prepared(
            json!({"k": 3, "top": 20}),
            vec![("sequences", input(Url, None, Some("ab12")))],
        );
        assert_eq!(key("1", &fetched).as_deref(), Some(base.as_str()));
        for other in [
            key("2", &file),
            key_of("sequence-stats", "1", &file),
            key(
                "1",
                &prepared(
                    json!({"k": 4, "top": 20}),
                    vec![("sequences", input(File, None, Some("ab12")))],
                ),
            ),
            key(
                "1",
                &prepared(
                    json!({"k": 3, "top": 20}),
                    vec![("sequences", input(File, None, Some("cd34")))],
                ),
            ),
            key(
                "1",
                &prepared(
                    json!({"k": 3, "top": 20}),
                    vec![("reads", input(File, None, Some("ab12")))],
                ),
            ),
            key(
                "1",
                &prepared(
                    json!({"k": 3, "top": 20}),
                    vec![("sequences", input(Text, Some(">a\nACGT\n"), None))],
                ),
            ),
        ] {
            assert_ne!(other.as_deref(), Some(base.as_str()));
        }
        // A URL not yet fetched: its content is unknown.
        let unfetched = prepared(json!({}), vec![("sequences", input(Url, None, None))]);
        assert_eq!(key("1", &unfetched), None);
    }
}
