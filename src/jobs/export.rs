//! Exports of a job: the record and result as JSON, and the result as CSV when it is a table.

use entity::ids::FileId;
use entity::job;
use entity::job_event;
use serde_json::{Map, Value, json};

use crate::access::JobStanding;
use crate::ids::{self};
use crate::jobs::state;

/// The job record, its result and its timeline, as one JSON document, as `standing` may see
/// them: what it tells of the workspace is null for viewers who do not see the workspace
/// ([`JobStanding::sees_workspace`]), as in the API.
pub fn to_json(
    job: &job::Model,
    standing: JobStanding,
    timeline: &[job_event::Model],
    url: &str,
) -> Value {
    let sees_workspace = standing.sees_workspace();
    json!({
        "id": ids::encode(job.id).as_str(),
        "url": url,
        "name": job.name,
        "tool": job.tool,
        "toolVersion": job.tool_version,
        "workspaceId": sees_workspace.then(|| ids::encode(job.workspace_id).to_string()),
        "submitterId": sees_workspace.then(|| ids::encode(job.submitter_id).to_string()),
        "status": state::name(job.status),
        "stage": job.stage,
        "progress": job.progress,
        "inputs": public_inputs(&job.inputs),
        "settings": job.settings,
        "result": job.result,
        "error": job.error_message.as_ref().map(|message| json!({ "message": message, "code": job.error_code })),
        "attempt": job.attempt,
        "maxAttempts": job.max_attempts,
        "creditCost": job.credit_cost,
        "refunded": job.refunded,
        "resources": job.resources,
        "createdAt": job.created_at,
        "queuedAt": job.queued_at,
        "startedAt": job.started_at,
        "finishedAt": job.finished_at,
        "timeline": timeline.iter().map(|event| json!({
            "status": state::name(event.status),
            "stage": event.stage,
            "message": standing.event_message(event),
            "progress": event.progress,
            "attempt": event.attempt,
            "at": event.created_at,
        })).collect::<Vec<_>>(),
    })
}

/// The stored inputs, with stored files named by their global ids.
fn public_inputs(inputs: &Value) -> Value {
    let mut inputs = inputs.clone();
    if let Value::Object(inputs) = &mut inputs {
        for input in inputs.values_mut() {
            if let Value::Object(fields) = input {
                // Where storage keeps it is the server's business.
                fields.remove("key");
            }
            if let Some(id) = input
                .get("fileId")
                .and_then(Value::as_str)
                .and_then(|id| uuid::Uuid::try_parse(id).ok())
            {
                input["fileId"] = Value::String(ids::encode(FileId(id)).to_string());
            }
        }
    }
    inputs
}

/// The rows of a tabular result: the result itself when it is an array of flat objects, or the
/// one array of flat objects among its fields.
fn table(result: &Value) -> Option<&Vec<Value>> {
    let flat_rows = |rows: &Vec<Value>| {
        !rows.is_empty()
            && rows.iter().all(|row| {
                row.as_object()
                    .is_some_and(|o| o.values().all(|v| !v.is_object() && !v.is_array()))
            })
    };
    match result {
        Value::Array(rows) if flat_rows(rows) => Some(rows),
        Value::Object(fields) => {
            let mut tables = fields
                .values()
                .filter_map(|v| v.as_array().filter(|r| flat_rows(r)));
            let first = tables.next()?;
            tables.next().is_none().then_some(first)
        }
        _ => None,
    }
}

/// The result as CSV, when it is tabular. Columns are the union of the rows' keys in
/// alphabetical order: JSON objects carry no column order that survives every database.
pub fn to_csv(result: Option<&Value>) -> Option<String> {
    let rows = table(result?)?;
    let columns: std::collections::BTreeSet<&String> = rows
        .iter()
        .filter_map(Value::as_object)
        .flat_map(Map::keys)
        .collect();
    let mut writer = csv::Writer::from_writer(Vec::new());
    writer.write_record(&columns).ok()?;
    for row in rows {
        let cells = columns.iter().map(|column| match row.get(column.as_str()) {
            None | Some(Value::Null) => String::new(),
            Some(Value::String(s)) => s.clone(),
            Some(other) => other.to_string(),
        });
        writer.write_record(cells).ok()?;
    }
    String::from_utf8(writer.into_inner().ok()?).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arrays_of_flat_objects_become_csv() {
        let result =
            json!([{"kmer": "ACG", "count": 3}, {"kmer": "CG,T", "count": 1, "note": "x"}]);
        assert_eq!(
            to_csv(Some(&result)).unwrap(),
            "count,kmer,note\n3,ACG,\n1,\"CG,T\",x\n"
        );
        let wrapped = json!({"total": 4, "kmers": [{"kmer": "A", "count": 4}]});
        assert_eq!(to_csv(Some(&wrapped)).unwrap(), "count,kmer\n4,A\n");
    }

    #[test]
    fn other_results_are_not_tables() {
        for result in [
            json!({"n50": 10}),
            json!([1, 2]),
            json!([{"nested": {"a": 1}}]),
            json!({"a": [{"x": 1}], "b": [{"y": 2}]}),
            json!([]),
        ] {
            assert_eq!(to_csv(Some(&result)), None, "{result}");
        }
        assert_eq!(to_csv(None), None);
    }
}
