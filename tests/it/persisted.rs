//! Persisted documents: automatic persisted queries, and trusted documents only.

use reqwest::StatusCode;
use sea_orm::EntityTrait as _;
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};

use crate::support::TestApp;
use crate::support::ws::Ws;

const ME: &str = "query Me { viewer { user { email } } }";

fn sha256(text: &str) -> String {
    hex::encode(Sha256::digest(text.as_bytes()))
}

fn persisted(query: &str) -> Value {
    json!({"persistedQuery": {"version": 1, "sha256Hash": sha256(query)}})
}

/// POSTs `body` with `token`, asking for `accept`; status and body.
async fn post(app: &TestApp, token: &str, accept: &str, body: Value) -> (StatusCode, Value) {
    let response = app
        .client()
        .post(app.url("/graphql"))
        .bearer_auth(token)
        .header("accept", accept)
        .json(&body)
        .send()
        .await
        .unwrap();
    (response.status(), response.json().await.unwrap())
}

/// GETs `/graphql` with these query parameters.
async fn get(app: &TestApp, token: &str, params: &[(&str, String)]) -> (StatusCode, Value) {
    let response = app
        .client()
        .get(app.url("/graphql"))
        .bearer_auth(token)
        .header("accept", "application/json")
        .query(params)
        .send()
        .await
        .unwrap();
    (response.status(), response.json().await.unwrap())
}

fn code(body: &Value) -> &str {
    body["errors"][0]["extensions"]["code"]
        .as_str()
        .unwrap_or_else(|| panic!("no error code in {body}"))
}

#[tokio::test]
async fn a_hash_runs_the_document_sent_with_it_before() {
    let app = TestApp::spawn().await;
    let alice = app.user("alice@lab.test").await;
    let hash_only = json!({"extensions": persisted(ME)});
    // Not known yet: the code Apollo's and urql's links look for, as a request error.
    let (status, body) = post(&app, &alice.token, "application/json", hash_only.clone()).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(code(&body), "PERSISTED_QUERY_NOT_FOUND", "{body}");
    assert_eq!(body["errors"][0]["message"], "PersistedQueryNotFound");
    assert!(body.get("data").is_none(), "{body}");
    let (status, body) = post(
        &app,
        &alice.token,
        "application/graphql-response+json",
        hash_only.clone(),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(code(&body), "PERSISTED_QUERY_NOT_FOUND", "{body}");

    // A hash that is not the document's is refused, and registers nothing.
    let (status, body) = post(
        &app,
        &alice.token,
        "application/json",
        json!({"query": "{ viewer { id } }", "extensions": persisted(ME)}),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(code(&body), "BAD_REQUEST", "{body}");
    let (_, body) = post(&app, &alice.token, "application/json", hash_only.clone()).await;
    assert_eq!(code(&body), "PERSISTED_QUERY_NOT_FOUND", "{body}");

    // Sent with its hash, the document runs and is remembered.
    let (status, body) = post(
        &app,
        &alice.token,
        "application/json",
        json!({"query": ME, "extensions": persisted(ME)}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        body["data"]["viewer"]["user"]["email"], "alice@lab.test",
        "{body}"
    );
    let (status, body) = post(&app, &alice.token, "application/json", hash_only).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        body["data"]["viewer"]["user"]["email"], "alice@lab.test",
        "{body}"
    );

    // By GET with the hash alone (a short URL a CDN can cache), with variables; another
    // viewer's token answers for that viewer.
    let bob = app.user("bob@lab.test").await;
    let (status, body) = get(
        &app,
        &bob.token,
        &[("extensions", persisted(ME).to_string())],
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        body["data"]["viewer"]["user"]["email"], "bob@lab.test",
        "{body}"
    );

    // A mutation named by hash still does not run over GET.
    let mutation = "mutation M($name: String!) { createWorkspace(input: {name: $name}) { workspace { name } } }";
    let (_, body) = post(
        &app,
        &alice.token,
        "application/json",
        json!({"query": mutation, "variables": {"name": "a"}, "extensions": persisted(mutation)}),
    )
    .await;
    assert_eq!(body["data"]["createWorkspace"]["workspace"]["name"], "a");
    let (status, _) = get(
        &app,
        &alice.token,
        &[
            ("extensions", persisted(mutation).to_string()),
            ("variables", json!({"name": "b"}).to_string()),
        ],
    )
    .await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
}

#[tokio::test]
async fn malformed_persisted_query_extensions_are_bad_requests() {
    let app = TestApp::spawn().await;
    let alice = app.user("alice@lab.test").await;
    for extensions in [
        json!({"persistedQuery": {"version": 2, "sha256Hash": sha256(ME)}}),
        json!({"persistedQuery": {"version": 1, "sha256Hash": "not-a-hash"}}),
        json!({"persistedQuery": {"version": 1}}),
        json!({"persistedQuery": []}),
        json!({"documentId": sha256(ME)}),
    ] {
        let (status, body) = post(
            &app,
            &alice.token,
            "application/json",
            json!({"extensions": extensions}),
        )
        .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{extensions}: {body}");
        assert_eq!(code(&body), "BAD_REQUEST", "{extensions}: {body}");
    }
}

#[tokio::test]
async fn with_trusted_documents_only_they_run() {
    let dir = tempfile::tempdir().unwrap();
    let manifest = dir.path().join("manifest.json");
    let me_id = sha256(ME);
    std::fs::write(
        &manifest,
        json!({
            "format": "apollo-persisted-query-manifest",
            "version": 1,
            "operations": [{"id": me_id, "name": "Me", "type": "query", "body": ME}],
        })
        .to_string(),
    )
    .unwrap();
    let file = manifest.clone();
    let app = TestApp::spawn_with(move |config| config.server.trusted_documents = Some(file)).await;
    let alice = app.user("alice@lab.test").await;

    // By hash, by `documentId` and by its exact text, a trusted document runs.
    for body in [
        json!({"extensions": persisted(ME)}),
        json!({"extensions": {"documentId": format!("sha256:{me_id}")}}),
        json!({"query": ME}),
        json!({"query": ME, "extensions": persisted(ME)}),
    ] {
        let (status, answer) = post(&app, &alice.token, "application/json", body.clone()).await;
        assert_eq!(status, StatusCode::OK, "{body}: {answer}");
        assert_eq!(
            answer["data"]["viewer"]["user"]["email"], "alice@lab.test",
            "{body}: {answer}"
        );
    }
    // Anything else is refused before it runs, and cannot register itself.
    let other = "mutation { createWorkspace(input: {name: \"x\"}) { workspace { id } } }";
    for body in [
        json!({"query": other}),
        json!({"query": other, "extensions": persisted(other)}),
        json!({"extensions": persisted(other)}),
        json!({"query": other, "extensions": persisted(ME)}),
    ] {
        let (status, answer) = post(&app, &alice.token, "application/json", body.clone()).await;
        assert_eq!(status, StatusCode::OK, "{body}: {answer}");
        assert_eq!(code(&answer), "DOCUMENT_NOT_TRUSTED", "{body}: {answer}");
    }
    let (status, answer) = post(
        &app,
        &alice.token,
        "application/graphql-response+json",
        json!({"query": other}),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
    assert_eq!(code(&answer), "DOCUMENT_NOT_TRUSTED");
    let count: Value = app.ok(Some(&alice.token), ME, json!({})).await;
    assert_eq!(count["viewer"]["user"]["email"], "alice@lab.test");
    let workspaces = entity::workspace::Entity::find()
        .all(&app.db)
        .await
        .unwrap();
    assert!(
        workspaces.is_empty(),
        "an untrusted mutation ran: {workspaces:?}"
    );

    // Over a websocket too: an untrusted operation gets its error, and the connection goes on.
    let mut ws = Ws::connect(app.addr, Some(&alice.token)).await;
    ws.subscribe("1", other, json!({})).await;
    let refused = ws.message().await;
    assert_eq!(refused["type"], "error", "{refused}");
    assert_eq!(refused["id"], "1");
    assert_eq!(
        refused["payload"][0]["extensions"]["code"], "DOCUMENT_NOT_TRUSTED",
        "{refused}"
    );
    ws.send(json!({"id": "2", "type": "subscribe", "payload": {"extensions": persisted(ME)}}))
        .await;
    assert_eq!(
        ws.next_data("2").await["viewer"]["user"]["email"],
        "alice@lab.test"
    );
}

#[tokio::test]
async fn a_trusted_documents_file_that_cannot_be_read_stops_the_start() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("documents.json");
    std::fs::write(&path, r#"{"a": "query {"}"#).unwrap();
    let mut config = jobgraph::config::Config::defaults();
    config.database.data_dir = dir.path().to_owned();
    config.database.database_url = Some(crate::support::fresh_database_url(dir.path()).await);
    config.server.trusted_documents = Some(path);
    let err = jobgraph::App::build(config).await.err().expect("refused");
    assert!(
        format!("{err:#}").contains("--trusted-documents: document `a` does not parse"),
        "{err:#}"
    );
}
