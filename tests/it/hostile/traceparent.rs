//! Hostile `traceparent` headers, on a served binary exporting its spans (named by the standard
//! `OTEL_EXPORTER_OTLP_ENDPOINT`): each request is answered as without the header, and its span
//! begins a trace of its own instead of joining a malformed one.

use serde_json::json;

use crate::cli::Served;
use crate::traces::{Receiver, attribute};

const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";

#[tokio::test]
async fn malformed_traceparents_are_ignored_and_start_new_traces() {
    let receiver = Receiver::default();
    let endpoint = receiver.start().await;
    let dir = tempfile::tempdir().unwrap();
    let served = Served::start(dir.path(), |command| {
        command
            .arg("serve")
            .env("JOBGRAPH_WORKERS", "1")
            .env_remove("JOBGRAPH_OTLP_ENDPOINT")
            .env("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint);
    })
    .await;
    let long = format!("00-{TRACE_ID}-00f067aa0ba902b7-01{}", "-0".repeat(4000));
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("garbage", b"not a trace".to_vec()),
        ("empty", Vec::new()),
        (
            "zero trace id",
            b"00-00000000000000000000000000000000-00f067aa0ba902b7-01".to_vec(),
        ),
        (
            "zero span id",
            format!("00-{TRACE_ID}-0000000000000000-01").into_bytes(),
        ),
        (
            "forbidden version",
            format!("ff-{TRACE_ID}-00f067aa0ba902b7-01").into_bytes(),
        ),
        (
            "short trace id",
            b"00-4bf92f35-00f067aa0ba902b7-01".to_vec(),
        ),
        (
            "not hex",
            format!("00-{}-00f067aa0ba902b7-01", "z".repeat(32)).into_bytes(),
        ),
        ("version 00 with more fields", long.into_bytes()),
        ("latin-1 bytes", b"00-\xe9\xe9-00f067aa0ba902b7-01".to_vec()),
    ];
    let client = reqwest::Client::new();
    for (name, header) in &cases {
        let response = client
            .post(format!("http://{}/graphql", served.listen))
            .bearer_auth(&served.token)
            .header(
                "x-request-id",
                format!("hostile-{}", name.replace(' ', "-")),
            )
            .header(
                "traceparent",
                reqwest::header::HeaderValue::from_bytes(header).unwrap(),
            )
            .json(&json!({ "query": "{ viewer { isAuthenticated } }" }))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{name}");
        let body: serde_json::Value = response.json().await.unwrap();
        assert_eq!(
            body["data"]["viewer"]["isAuthenticated"], true,
            "{name}: {body}"
        );
    }
    let (status, logs) = served.stop().await;
    assert!(status.success(), "{status:?}: {logs}");

    let spans = receiver.all();
    for (name, _) in &cases {
        let id = format!("hostile-{}", name.replace(' ', "-"));
        let request = spans
            .iter()
            .find(|span| attribute(span, "request.id") == json!(id))
            .unwrap_or_else(|| {
                panic!(
                    "{name}: no request span among {:?}",
                    spans
                        .iter()
                        .map(|s| (s.name.clone(), attribute(s, "request.id")))
                        .collect::<Vec<_>>()
                )
            });
        assert!(request.parent_span_id.is_empty(), "{name}: {request:?}");
        assert_eq!(request.trace_id.len(), 16, "{name}");
        assert!(request.trace_id.iter().any(|byte| *byte != 0), "{name}");
        assert_ne!(hex::encode(&request.trace_id), TRACE_ID, "{name}");
    }
}
