//! Idempotency keys: a request sent again with its key (a double click, a retried call) answers
//! with what the first one made, a job or a batch, and charges nothing more.
//!
//! Keys are unique per workspace (a job's and a batch's separately). Each keyed job or batch
//! keeps the fingerprint of its request: the SHA-256 of a canonical form of what was asked (tool,
//! name, priority, settings, inputs by content, the job it retries or copies, `maxCredits`,
//! `reuse`). The
//! same key with another fingerprint is IDEMPOTENCY_KEY_REUSED, as Stripe answers.

use entity::ids::JobId;
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};

use super::service::Submission;
use crate::error::{Error, Result};
use crate::tools::InputValue;

/// What a job request asks for, in a canonical form: objects are compared whatever the order
/// of their keys, inputs by name and files by content.
pub(super) fn submission_form(submission: &Submission) -> Value {
    json!({
        "tool": submission.tool,
        "name": submission.name,
        "priority": submission.priority,
        "settings": submission.settings,
        "inputs": inputs_form(&submission.inputs),
    })
}

/// A request's inputs in a canonical form: by name, texts by their text, files by content.
pub(crate) fn inputs_form(inputs: &[(String, InputValue)]) -> Vec<(&str, Value)> {
    let mut inputs: Vec<(&str, Value)> = inputs
        .iter()
        .map(|(name, value)| {
            let value = match value {
                InputValue::Text(text) => json!({ "text": text }),
                InputValue::File(file) => json!({ "sha256": file.sha256 }),
                InputValue::Copy(file, _) => json!({ "sha256": file.sha256 }),
                InputValue::Url(url) => json!({ "url": url }),
                // Uploads are stored, and so hashed, before their request is compared.
                InputValue::Upload(upload) => json!({ "upload": upload.filename }),
            };
            (name.as_str(), value)
        })
        .collect();
    inputs.sort_by(|a, b| a.0.cmp(b.0));
    inputs
}

/// Refuses a key that is empty or longer than 200 characters.
pub(crate) fn check_key(key: Option<&str>) -> Result<()> {
    match key {
        Some(key) if key.is_empty() || key.len() > 200 => Err(Error::bad_input(
            "idempotencyKey",
            "must be 1 to 200 characters",
        )),
        _ => Ok(()),
    }
}

/// The fingerprint of a job request: its submission, what it comes from, its price limit and
/// whether it reuses results.
pub(super) fn job_fingerprint(
    submission: &Submission,
    parent: Option<(JobId, String)>,
    max_credits: Option<i64>,
    reuse: bool,
) -> String {
    let mut form = json!({
        "job": submission_form(submission),
        "parent": parent.map(|(id, kind)| json!({ "id": id, "kind": kind })),
        "maxCredits": max_credits,
    });
    with_reuse(&mut form, reuse);
    fingerprint(&form)
}

/// The fingerprint of a batch request from its jobs' `submission_form`s.
pub(super) fn batch_fingerprint(
    name: Option<&str>,
    jobs: Vec<Value>,
    max_credits: Option<i64>,
    reuse: bool,
) -> String {
    let mut form = json!({ "batch": name, "jobs": jobs, "maxCredits": max_credits });
    with_reuse(&mut form, reuse);
    fingerprint(&form)
}

/// Adds `reuse` to a request's form only when asked for, so that a request without it keeps
/// the fingerprint it had before submissions could reuse results.
pub(crate) fn with_reuse(form: &mut Value, reuse: bool) {
    if reuse {
        form["reuse"] = Value::Bool(true);
    }
}

/// IDEMPOTENCY_KEY_REUSED unless the request answered from a key is the one it was first sent
/// with. A job keyed before fingerprints were kept answers as before.
pub(crate) fn check_same(stored: Option<&str>, fingerprint: &str, made: &str) -> Result<()> {
    match stored {
        Some(stored) if stored != fingerprint => Err(Error::IdempotencyKeyReused(format!(
            "this idempotency key was already used in this workspace for another request (it \
             made {made}); send a new key for a new request"
        ))),
        _ => Ok(()),
    }
}

/// The SHA-256 (hex) of a value's canonical JSON.
pub(crate) fn fingerprint(value: &Value) -> String {
    let mut text = String::new();
    canonical(value, &mut text);
    hex::encode(Sha256::digest(text.as_bytes()))
}

/// JSON with object keys sorted, whatever order they came in, and no spaces.
fn canonical(value: &Value, out: &mut String) {
    match value {
        Value::Object(map) => {
            let mut entries: Vec<_> = map.iter().collect();
            entries.sort_by(|a, b| a.0.cmp(b.0));
            out.push('{');
            for (i, (key, value)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(key.clone()).to_string());
                out.push(':');
                canonical(value, out);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                canonical(item, out);
            }
            out.push(']');
        }
        scalar => out.push_str(&scalar.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use uuid::Uuid;

    use super::*;

    fn job(settings: Value, inputs: Vec<(&str, &str)>) -> Submission {
        Submission {
            tool: "kmer-count".into(),
            inputs: inputs
                .into_iter()
                .map(|(name, text)| (name.to_owned(), InputValue::Text(text.to_owned())))
                .collect(),
            settings: Some(settings),
            ..Default::default()
        }
    }

    #[test]
    fn a_fingerprint_ignores_the_order_of_keys_and_inputs_but_nothing_else() {
        let print = |s: &Submission| job_fingerprint(s, None, None, false);
        let a = job(
            json!({"k": 3, "opts": {"x": 1, "y": [1, 2]}}),
            vec![("a", ">a\nAC\n"), ("b", ">b\nGT\n")],
        );
        let reordered = job(
            json!({"opts": {"y": [1, 2], "x": 1}, "k": 3}),
            vec![("b", ">b\nGT\n"), ("a", ">a\nAC\n")],
        );
        assert_eq!(print(&a), print(&reordered));
        assert_eq!(print(&a).len(), 64);
        for other in [
            job(json!({"k": 4, "opts": {"x": 1, "y": [1, 2]}}), vec![]),
            job(
                json!({"k": 3, "opts": {"x": 1, "y": [2, 1]}}),
                vec![("a", ">a\nAC\n"), ("b", ">b\nGT\n")],
            ),
            job(
                json!({"k": 3, "opts": {"x": 1, "y": [1, 2]}}),
                vec![("a", ">a\nAC\n"), ("b", ">b\nGG\n")],
            ),
            Submission {
                tool: "other".into(),
                ..a.clone()
            },
            Submission {
                name: Some("named".into()),
                ..a.clone()
            },
            Submission {
                priority: 1,
                ..a.clone()
            },
        ] {
            assert_ne!(print(&a), print(&other));
        }
        assert_ne!(print(&a), job_fingerprint(&a, None, Some(10), false));
        assert_ne!(print(&a), job_fingerprint(&a, None, None, true));
        assert_ne!(
            print(&a),
            job_fingerprint(&a, Some((JobId(Uuid::nil()), "RETRY".into())), None, false)
        );
        let form = submission_form(&a);
        assert_ne!(
            batch_fingerprint(None, vec![form.clone()], None, false),
            batch_fingerprint(None, vec![form.clone(), form.clone()], None, false)
        );
        assert_ne!(
            batch_fingerprint(None, vec![form.clone()], None, false),
            batch_fingerprint(None, vec![form], None, true)
        );
    }
}
