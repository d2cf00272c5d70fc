//! GraphQL over HTTP: media types, methods, CSRF protection, limits and health checks.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::support::TestApp;

const GRAPHQL_RESPONSE: &str = "application/graphql-response+json";

#[tokio::test]
async fn the_response_media_type_follows_accept() {
    let app = TestApp::spawn().await;
    for (accept, expected) in [
        (None, "application/json"),
        (Some("*/*"), "application/json"),
        (Some("application/json"), "application/json"),
        (Some(GRAPHQL_RESPONSE), GRAPHQL_RESPONSE),
    ] {
        let mut request = app
            .client()
            .post(app.url("/graphql"))
            .json(&json!({"query": "{ __typename }"}));
        if let Some(accept) = accept {
            request = request.header("accept", accept);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        let content_type = response.headers()["content-type"]
            .to_str()
            .unwrap()
            .to_owned();
        assert!(
            content_type.starts_with(expected),
            "{accept:?} -> {content_type}"
        );
    }
    let response = app
        .client()
        .post(app.url("/graphql"))
        .header("accept", "text/csv")
        .json(&json!({"query": "{ __typename }"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NOT_ACCEPTABLE);
}

async fn post_raw(app: &TestApp, accept: &str, body: &str) -> (StatusCode, Value) {
    let response = app
        .client()
        .post(app.url("/graphql"))
        .header("accept", accept)
        .header("content-type", "application/json")
        .body(body.to_owned())
        .send()
        .await
        .unwrap();
    (response.status(), response.json().await.unwrap())
}

#[tokio::test]
async fn request_errors_are_400_without_data_for_graphql_response_json_and_200_for_json() {
    let app = TestApp::spawn().await;
    for (body, code) in [
        (r#"{"query": "{"}"#, "GRAPHQL_PARSE_FAILED"),
        (
            r#"{"query": "{ noSuchField }"}"#,
            "GRAPHQL_VALIDATION_FAILED",
        ),
        (
            r#"{"query": "query Q($id: ID!) { __typename }", "variables": {"id": null}}"#,
            "GRAPHQL_VALIDATION_FAILED",
        ),
        (
            r#"{"query": "query A { __typename }", "operationName": "B"}"#,
            "GRAPHQL_VALIDATION_FAILED",
        ),
    ] {
        let (status, response) = post_raw(&app, GRAPHQL_RESPONSE, body).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}: {response}");
        assert!(response.get("data").is_none(), "{response}");
        assert_eq!(
            response["errors"][0]["extensions"]["code"], code,
            "{body}: {response}"
        );

        let (status, response) = post_raw(&app, "application/json", body).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(response["errors"][0]["extensions"]["code"], code);
    }
}

#[tokio::test]
async fn malformed_bodies_and_batches_are_400() {
    let app = TestApp::spawn().await;
    for body in [
        "{ not json",
        "[]",
        r#"[{"query": "{ __typename }"}]"#,
        r#"{"qeury": "{ __typename }"}"#,
        r#"{"query": 1}"#,
        r#"{"query": "{ __typename }", "variables": "x"}"#,
    ] {
        let (status, response) = post_raw(&app, "application/json", body).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        assert_eq!(
            response["errors"][0]["extensions"]["code"], "BAD_REQUEST",
            "{body}"
        );
    }
    let (_, response) =
        post_raw(&app, "application/json", r#"[{"query": "{ __typename }"}]"#).await;
    assert!(
        response["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("batched")
    );
}

#[tokio::test]
async fn gets_run_queries_and_refuse_mutations_with_405() {
    let app = TestApp::spawn().await;
    let response = app
        .client()
        .get(app.url("/graphql"))
        .query(&[
            ("query", "query($n: String) { __type(name: $n) { name } }"),
            ("variables", r#"{"n":"Query"}"#),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["data"]["__type"]["name"], "Query");

    let response = app
        .client()
        .get(app.url("/graphql"))
        .query(&[(
            "query",
            "mutation { createWorkspace(input: {name: \"x\"}) { workspace { id } } }",
        )])
        .bearer_auth(&app.admin_token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(response.headers()["allow"], "POST");
    // A document's only operation runs without its name being sent: named, it is still a
    // mutation.
    let response = app
        .client()
        .get(app.url("/graphql"))
        .query(&[(
            "query",
            "mutation M { createWorkspace(input: {name: \"x\"}) { workspace { id } } }",
        )])
        .bearer_auth(&app.admin_token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
    let data = app
        .ok(
            Some(&app.admin_token),
            "{ viewer { workspaces { edges { cursor } } } }",
            json!({}),
        )
        .await;
    assert_eq!(
        data["viewer"]["workspaces"]["edges"],
        json!([]),
        "the mutation did not run"
    );
}

#[tokio::test]
async fn posts_that_are_not_json_are_refused_against_csrf() {
    // Multipart uploads have their own rule, tested in `files`.
    let app = TestApp::spawn().await;
    let body = r#"{"query": "mutation { createWorkspace(input: {name: \"csrf\"}) { workspace { id } } }"}"#;
    for content_type in [
        Some("text/plain"),
        Some("application/x-www-form-urlencoded"),
        None,
    ] {
        let mut request = app
            .client()
            .post(app.url("/graphql"))
            .bearer_auth(&app.admin_token)
            .body(body);
        if let Some(content_type) = content_type {
            request = request.header("content-type", content_type);
        }
        let response = request.send().await.unwrap();
        assert_eq!(
            response.status(),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "{content_type:?}"
        );
    }
    let data = app
        .ok(
            Some(&app.admin_token),
            "{ viewer { workspaces { edges { cursor } } } }",
            json!({}),
        )
        .await;
    assert_eq!(data["viewer"]["workspaces"]["edges"], json!([]));
}

#[tokio::test]
async fn oversized_bodies_deep_and_complex_queries_are_refused_with_clear_errors() {
    let app = TestApp::spawn_with(|config| config.server.max_body_bytes = 4096).await;
    let padding = "x".repeat(5000);
    let (status, body) = post_raw(
        &app,
        "application/json",
        &json!({"query": "{ __typename }", "variables": {"pad": padding}}).to_string(),
    )
    .await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(body["errors"][0]["extensions"]["code"], "PAYLOAD_TOO_LARGE");

    let mut nested = "name".to_owned();
    for _ in 0..16 {
        nested = format!("ofType {{ {nested} }}");
    }
    let deep = format!("{{ __schema {{ types {{ fields {{ type {{ {nested} }} }} }} }} }}");
    let (_, body) = app.post(None, &deep, json!({})).await;
    assert_eq!(
        body["errors"][0]["message"], "Query is nested too deep.",
        "{body}"
    );

    let complex = "{ viewer { a: workspaces(first: 100) { edges { node { members(first: 100) { edges { node { user { email } } } } } } } } }";
    let (_, body) = app.post(Some(&app.admin_token), complex, json!({})).await;
    assert_eq!(
        body["errors"][0]["message"], "Query is too complex.",
        "{body}"
    );
}

#[tokio::test]
async fn health_and_readiness_answer() {
    let app = TestApp::spawn().await;
    for path in ["/healthz", "/readyz"] {
        let response = app.client().get(app.url(path)).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{path}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["status"], "ok");
    }
    let response = app.client().get(app.url("/nope")).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
}

/// An operation that passed validation once is checked on later requests only for what its
/// variables change: every value that is refused the first time must be refused alike then,
/// with the same status and errors, and every value let in the first time let in alike.
#[tokio::test]
async fn variables_are_checked_alike_before_and_after_their_operation_passed_validation() {
    let app = TestApp::spawn().await;
    let owner = app.user("owner@example.com").await;
    let ws = app.workspace(&owner, "variables").await;
    let query = "query($ws: ID!, $first: Int = 10, $filter: JobFilterInput) {
        workspace(id: $ws) { jobs(first: $first, filter: $filter) { edges { node { id } } } } }";
    let passes = json!({ "ws": ws });
    let data = app.ok(Some(&owner.token), query, passes.clone()).await;
    assert_eq!(data["workspace"]["jobs"]["edges"], json!([]));
    let document = app
        .state
        .documents
        .get(&query.to_owned())
        .expect("the document is kept");
    let validated = |variables: &Value| {
        document.validated(
            &app.state.registry,
            None,
            &async_graphql::Variables::from_json(variables.clone()),
        )
    };
    assert!(validated(&passes), "the operation passed validation once");

    let cases = [
        (json!({ "ws": null }), false),
        (json!({ "ws": true }), false),
        (json!({ "ws": [ws] }), false),
        (json!({}), true),
        (json!({ "ws": ws, "first": "ten" }), false),
        (json!({ "ws": ws, "first": 1.5 }), false),
        // Validation lets any integer through; the argument's parse refuses it.
        (json!({ "ws": ws, "first": 3_000_000_000_i64 }), true),
        // A null where the document gives a default: validated in full.
        (json!({ "ws": ws, "first": null }), false),
        (json!({ "ws": ws, "first": 2, "unused": 1 }), true),
        (
            json!({ "ws": ws, "filter": { "statuses": ["NOPE"] } }),
            false,
        ),
        (
            json!({ "ws": ws, "filter": { "statuses": "QUEUED" } }),
            true,
        ),
        (
            json!({ "ws": ws, "filter": { "statuses": ["QUEUED", null] } }),
            false,
        ),
        (json!({ "ws": ws, "filter": { "unknown": 1 } }), false),
        (json!({ "ws": ws, "filter": { "mine": null } }), false),
        (json!({ "ws": ws, "filter": { "mine": "yes" } }), false),
        (json!({ "ws": ws, "filter": "all" }), false),
        (
            json!({ "ws": ws, "filter": { "createdAfter": "yesterday" } }),
            true,
        ),
        (json!({ "ws": ws, "filter": { "search": 5 } }), false),
        (json!({ "ws": ws, "filter": null }), true),
    ];
    for (at, (variables, skips)) in cases.iter().enumerate() {
        // The same operation in a text not seen before is validated in full.
        let first_time = format!("{query}\n# {at}");
        let expected = app
            .post(Some(&owner.token), &first_time, variables.clone())
            .await;
        let answered = app.post(Some(&owner.token), query, variables.clone()).await;
        assert_eq!(answered, expected, "variables {variables}");
        assert_eq!(validated(variables), *skips, "variables {variables}");
    }
    // Some of them are refused, some let in: the comparison covers both.
    let (_, refused) = app
        .post(
            Some(&owner.token),
            query,
            json!({ "ws": ws, "first": "ten" }),
        )
        .await;
    assert_eq!(
        refused["errors"][0]["extensions"]["code"], "GRAPHQL_VALIDATION_FAILED",
        "{refused}"
    );
    assert!(refused.get("data").is_none_or(Value::is_null), "{refused}");
    let (_, let_in) = app
        .post(
            Some(&owner.token),
            query,
            json!({ "ws": ws, "filter": { "statuses": "QUEUED" } }),
        )
        .await;
    assert_eq!(
        let_in["data"]["workspace"]["jobs"]["edges"],
        json!([]),
        "{let_in}"
    );
}
