//! Traces over OTLP/HTTP: a served binary sends its spans to a receiver started here, which
//! decodes them. A client's `traceparent` becomes the parent of its request, whose GraphQL
//! operation and database work follow; a job's run, local or remote, continues the trace of the
//! request that submitted it.

use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value;
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message as _;
use serde_json::{Value, json};

use crate::cli::Served;
use crate::support::{WAIT, eventually};

/// A remote tool, beside the built-in ones.
const REMOTE_TOOL: &str = r#"
[[tools]]
name = "quick"
title = "A remote tool"
version = "1"
timeout_seconds = 60
max_attempts = 2
executor = { kind = "remote" }
price = { base = 0 }
"#;

/// An OTLP/HTTP receiver on a free port: the spans it was sent, with their service's name.
#[derive(Clone, Default)]
pub(crate) struct Receiver {
    spans: Arc<Mutex<Vec<(String, Span)>>>,
}

impl Receiver {
    /// Starts it; returns its base URL.
    pub(crate) async fn start(&self) -> String {
        let spans = self.spans.clone();
        let app = axum::Router::new().route(
            "/v1/traces",
            axum::routing::post(move |body: Bytes| async move {
                let request = ExportTraceServiceRequest::decode(body).expect("an OTLP request");
                let mut spans = spans.lock().unwrap();
                for resource in request.resource_spans {
                    let service = resource
                        .resource
                        .iter()
                        .flat_map(|resource| &resource.attributes)
                        .find(|attribute| attribute.key == "service.name")
                        .and_then(|attribute| text(attribute.value.as_ref()?.value.as_ref()?))
                        .unwrap_or_default();
                    for scope in resource.scope_spans {
                        spans.extend(scope.spans.into_iter().map(|span| (service.clone(), span)));
                    }
                }
                (
                    [("content-type", "application/x-protobuf")],
                    ExportTraceServiceResponse::default().encode_to_vec(),
                )
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        format!("http://{address}")
    }

    /// The spans received of the trace `trace_id` (hex).
    pub(crate) fn trace(&self, trace_id: &str) -> Vec<Span> {
        self.spans
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, span)| hex::encode(&span.trace_id) == trace_id)
            .map(|(_, span)| span.clone())
            .collect()
    }

    /// Every span received.
    pub(crate) fn all(&self) -> Vec<Span> {
        let spans = self.spans.lock().unwrap();
        spans.iter().map(|(_, span)| span.clone()).collect()
    }

    fn services(&self) -> Vec<String> {
        let spans = self.spans.lock().unwrap();
        spans.iter().map(|(service, _)| service.clone()).collect()
    }
}

fn text(value: &any_value::Value) -> Option<String> {
    match value {
        any_value::Value::StringValue(text) => Some(text.clone()),
        _ => None,
    }
}

/// The value of a span's attribute, as JSON.
pub(crate) fn attribute(span: &Span, key: &str) -> Value {
    let value = span
        .attributes
        .iter()
        .find(|attribute| attribute.key == key)
        .and_then(|attribute| attribute.value.as_ref()?.value.as_ref());
    match value {
        Some(any_value::Value::StringValue(text)) => json!(text),
        Some(any_value::Value::IntValue(number)) => json!(number),
        Some(any_value::Value::BoolValue(flag)) => json!(flag),
        Some(other) => json!(format!("{other:?}")),
        None => Value::Null,
    }
}

fn named<'a>(spans: &'a [Span], name: &str) -> Option<&'a Span> {
    spans.iter().find(|span| span.name == name)
}

fn names(spans: &[Span]) -> Vec<&str> {
    spans.iter().map(|span| span.name.as_str()).collect()
}

/// A `traceparent` header of a new trace, sampled: (header, trace id, parent span id).
fn new_traceparent(seed: u8) -> (String, String, String) {
    let trace_id = format!("4bf92f3577b34da6a3ce929d0e0e47{seed:02x}");
    let span_id = format!("00f067aa0ba902{seed:02x}");
    (format!("00-{trace_id}-{span_id}-01"), trace_id, span_id)
}

/// Posts a GraphQL request with `token` and, if given, a `traceparent` header.
async fn graphql(
    served: &Served,
    token: &str,
    traceparent: Option<&str>,
    query: &str,
    variables: Value,
) -> Result<Value, String> {
    let mut request = reqwest::Client::new()
        .post(format!("http://{}/graphql", served.listen))
        .bearer_auth(token)
        .json(&json!({ "query": query, "variables": variables }));
    if let Some(traceparent) = traceparent {
        request = request.header("traceparent", traceparent);
    }
    let body: Value = request
        .send()
        .await
        .map_err(|err| err.to_string())?
        .json()
        .await
        .map_err(|err| err.to_string())?;
    match body.get("errors") {
        Some(errors) => Err(errors.to_string()),
        None => Ok(body["data"].clone()),
    }
}

#[tokio::test]
async fn spans_continue_the_clients_trace_into_operations_and_job_runs_local_and_remote() {
    let receiver = Receiver::default();
    let endpoint = receiver.start().await;
    let dir = tempfile::tempdir().unwrap();
    let tools = dir.path().join("tools.toml");
    let builtin = include_str!("../../src/tools/default_tools.toml");
    std::fs::write(&tools, format!("{builtin}\n{REMOTE_TOOL}")).unwrap();
    let served = Served::start(dir.path(), |command| {
        command
            .args(["serve", "--otlp-endpoint", &endpoint])
            .env("JOBGRAPH_WORKERS", "1")
            .env("JOBGRAPH_TOOLS_FILE", &tools)
            .env("OTEL_SERVICE_NAME", "jobgraph-under-test");
    })
    .await;
    let admin = served.token.clone();

    // A request continues the client's trace: its span is the child of the client's, and the
    // GraphQL operation, named after the operation, and the database work are under it.
    let (header, created_trace, client_span) = new_traceparent(1);
    let created = eventually(WAIT, "the server answers", || {
        graphql(
            &served,
            &admin,
            Some(&header),
            "mutation CreateLab { createWorkspace(input: {name: \"traces\"}) { workspace { id } } }",
            json!({}),
        )
    })
    .await;
    let ws = created["createWorkspace"]["workspace"]["id"].clone();

    // A job submitted under another trace, run by the local worker.
    let (header, submit_trace, _) = new_traceparent(2);
    let submitted = graphql(
        &served,
        &admin,
        Some(&header),
        "mutation Submit($ws: ID!) { submitJob(input: {workspaceId: $ws, tool: \"noop\"}) { job { id } } }",
        json!({ "ws": ws }),
    )
    .await
    .unwrap();
    let job = submitted["submitJob"]["job"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    eventually(WAIT, "the job completes", || async {
        let read = graphql(
            &served,
            &admin,
            None,
            "query($id: ID!) { job(id: $id) { status } }",
            json!({ "id": job }),
        )
        .await?;
        match read["job"]["status"].as_str() {
            Some("COMPLETED") => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;

    // A job of a remote tool: its claim carries the submission's trace, which the worker's
    // calls for the attempt continue.
    let worker = graphql(
        &served,
        &admin,
        None,
        "mutation { createApiToken(input: {name: \"cluster\", kind: WORKER}) { secret } }",
        json!({}),
    )
    .await
    .unwrap()["createApiToken"]["secret"]
        .as_str()
        .unwrap()
        .to_owned();
    let (header, remote_trace, _) = new_traceparent(3);
    graphql(
        &served,
        &admin,
        Some(&header),
        "mutation SubmitRemote($ws: ID!) { submitJob(input: {workspaceId: $ws, tool: \"quick\"}) { job { id } } }",
        json!({ "ws": ws }),
    )
    .await
    .unwrap();
    let claimed = graphql(
        &served,
        &worker,
        None,
        "mutation Claim { claimJobs(input: {worker: \"node-1\", tools: [\"quick\"]}) { jobs { attemptToken attempt traceparent } } }",
        json!({}),
    )
    .await
    .unwrap();
    let claimed = &claimed["claimJobs"]["jobs"][0];
    let traceparent = claimed["traceparent"].as_str().unwrap().to_owned();
    assert!(
        traceparent.starts_with(&format!("00-{remote_trace}-")),
        "{traceparent}"
    );
    assert_eq!(claimed["attempt"], 1);
    graphql(
        &served,
        &worker,
        Some(&traceparent),
        "mutation Complete($attempt: String!) { completeJob(attempt: $attempt, result: {}) { status } }",
        json!({ "attempt": claimed["attemptToken"] }),
    )
    .await
    .unwrap();

    // The example worker hands the trace on with each call for its attempt.
    let (header, example_trace, _) = new_traceparent(5);
    graphql(
        &served,
        &admin,
        Some(&header),
        "mutation SubmitForExample($ws: ID!) { submitJob(input: {workspaceId: $ws, tool: \"quick\"}) { job { id } } }",
        json!({ "ws": ws }),
    )
    .await
    .unwrap();
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/remote_worker.py");
    let output = tokio::process::Command::new("python3")
        .arg(example)
        .args(["--url", &format!("http://{}/graphql", served.listen)])
        .args([
            "--tool",
            "quick",
            "--worker",
            "example-1",
            "--max-jobs",
            "1",
        ])
        .args(["--poll-seconds", "0.2", "--", "true"])
        .env("JOBGRAPH_TOKEN", &worker)
        .output()
        .await
        .expect("python3 runs");
    assert!(
        output.status.success(),
        "the example failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );

    // Stopping the server sends the spans still queued.
    let (status, logs) = served.stop().await;
    assert!(status.success(), "{status:?}: {logs}");

    let spans = receiver.trace(&created_trace);
    let request = named(&spans, "POST /graphql").unwrap_or_else(|| panic!("{:?}", names(&spans)));
    assert_eq!(hex::encode(&request.parent_span_id), client_span);
    assert_eq!(attribute(request, "http.response.status_code"), json!(200));
    assert_eq!(attribute(request, "path"), json!("/graphql"));
    let operation =
        named(&spans, "mutation CreateLab").unwrap_or_else(|| panic!("{:?}", names(&spans)));
    assert_eq!(operation.parent_span_id, request.span_id);
    assert_eq!(
        attribute(operation, "graphql.operation.type"),
        json!("mutation")
    );
    assert_eq!(
        attribute(operation, "graphql.operation.name"),
        json!("CreateLab")
    );
    let commit = named(&spans, "db.commit").unwrap_or_else(|| panic!("{:?}", names(&spans)));
    assert_eq!(commit.trace_id, operation.trace_id);
    // No span per field.
    assert!(
        !spans
            .iter()
            .any(|span| span.name.contains("createWorkspace")),
        "{:?}",
        names(&spans)
    );

    // The local run is in the submission's trace, under its operation, with its attempt.
    let spans = receiver.trace(&submit_trace);
    let submit = named(&spans, "mutation Submit").unwrap_or_else(|| panic!("{:?}", names(&spans)));
    assert!(
        named(&spans, "store.insert_jobs").is_some(),
        "{:?}",
        names(&spans)
    );
    let run = named(&spans, "run noop").unwrap_or_else(|| panic!("{:?}", names(&spans)));
    assert_eq!(run.parent_span_id, submit.span_id);
    assert_eq!(attribute(run, "attempt"), json!(1));
    let job_uuid = uuid::Uuid::try_parse(job.strip_prefix("job_").unwrap()).unwrap();
    assert_eq!(attribute(run, "job.id"), json!(job_uuid.to_string()));

    // The remote worker's call for the attempt is in the remote job's submission trace.
    let spans = receiver.trace(&remote_trace);
    let parent = traceparent.split('-').nth(2).unwrap();
    let complete = spans
        .iter()
        .find(|span| span.name == "POST /graphql" && hex::encode(&span.parent_span_id) == parent)
        .unwrap_or_else(|| panic!("{:?}", names(&spans)));
    assert!(
        spans
            .iter()
            .any(|span| span.name == "mutation Complete" && span.parent_span_id == complete.span_id),
        "{:?}",
        names(&spans)
    );

    let spans = receiver.trace(&example_trace);
    let submit =
        named(&spans, "mutation SubmitForExample").unwrap_or_else(|| panic!("{:?}", names(&spans)));
    let calls: Vec<&Span> = spans
        .iter()
        .filter(|span| span.name == "POST /graphql" && span.parent_span_id == submit.span_id)
        .collect();
    // Its completion at least, under the submission's operation.
    assert!(
        calls.iter().any(|call| spans
            .iter()
            .any(|span| span.name == "mutation" && span.parent_span_id == call.span_id)),
        "{:?}",
        names(&spans)
    );

    let services = receiver.services();
    assert!(
        services
            .iter()
            .all(|service| service == "jobgraph-under-test"),
        "{services:?}"
    );
}

#[tokio::test]
async fn without_an_endpoint_no_trace_is_kept_or_handed_to_workers() {
    let dir = tempfile::tempdir().unwrap();
    let served = Served::start(dir.path(), |command| {
        command
            .arg("serve")
            .env("JOBGRAPH_WORKERS", "0")
            .env_remove("JOBGRAPH_OTLP_ENDPOINT")
            .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT");
    })
    .await;
    let admin = served.token.clone();
    let (header, _, _) = new_traceparent(4);
    let created = eventually(WAIT, "the server answers", || {
        graphql(
            &served,
            &admin,
            Some(&header),
            "mutation { createWorkspace(input: {name: \"plain\"}) { workspace { id } } }",
            json!({}),
        )
    })
    .await;
    let ws = created["createWorkspace"]["workspace"]["id"].clone();
    graphql(
        &served,
        &admin,
        Some(&header),
        "mutation($ws: ID!) { submitJob(input: {workspaceId: $ws, tool: \"noop\"}) { job { id } } }",
        json!({ "ws": ws }),
    )
    .await
    .unwrap();
    // On SQLite the server keeps its database in its data directory.
    let url = match served.url.starts_with("postgres") {
        true => served.url.clone(),
        false => jobgraph::db::default_sqlite_url(&dir.path().join("data")),
    };
    let (status, logs) = served.stop().await;
    assert!(status.success(), "{status:?}: {logs}");
    let db = sea_orm::Database::connect(url).await.unwrap();
    use sea_orm::EntityTrait as _;
    let jobs = entity::job::Entity::find().all(&db).await.unwrap();
    assert_eq!(jobs.len(), 1);
    assert_eq!(jobs[0].trace_parent, None);
}
