//! Rate limits: each API token, and each client address without one, has its own bucket;
//! submissions and uploads cost more than reads; over the limit a request gets 429 with
//! `Retry-After` and `RATE_LIMITED`, and a websocket operation an `error` message, and the
//! bucket fills again with time.

use entity::api_token::TokenKind;
use jobgraph::Config;
use reqwest::StatusCode;
use reqwest::multipart::{Form, Part};
use sea_orm::{EntityTrait, PaginatorTrait};
use serde_json::{Value, json};
use tokio::sync::Mutex;

use crate::support::ws::Ws;
use crate::support::{TestApp, TestUser, WAIT, eventually, fasta};

const READ: &str = "{ viewer { isAuthenticated } }";

/// Limits every token and address to `rate` with a bucket of `burst`, submissions costing
/// `submission` and uploads `upload`.
fn limits(rate: &str, burst: u32, submission: u32, upload: u32) -> impl FnOnce(&mut Config) {
    let rate = rate.parse().unwrap();
    move |config| {
        let limits = &mut config.server.rate_limits;
        limits.rate_limit = Some(rate);
        limits.rate_limit_burst = Some(burst);
        limits.rate_limit_submission_cost = submission;
        limits.rate_limit_upload_cost = upload;
    }
}

/// A request as `token`, or without one from `forwarded_for` (an `X-Forwarded-For` value).
async fn read(
    app: &TestApp,
    token: Option<&str>,
    forwarded_for: Option<&str>,
) -> reqwest::Response {
    let mut request = app
        .client()
        .post(app.url("/graphql"))
        .json(&json!({ "query": READ }));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    if let Some(address) = forwarded_for {
        request = request.header("x-forwarded-for", address);
    }
    request.send().await.unwrap()
}

/// Asserts that `response` is a 429 saying RATE_LIMITED with a `Retry-After` of at most
/// `at_most` seconds; returns that.
async fn refused(response: reqwest::Response, at_most: u64) -> u64 {
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    let retry_after: u64 = response.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        (1..=at_most).contains(&retry_after),
        "Retry-After: {retry_after}"
    );
    let body: Value = response.json().await.unwrap();
    assert_eq!(
        body["errors"][0]["extensions"]["code"], "RATE_LIMITED",
        "{body}"
    );
    assert_eq!(body["errors"][0]["extensions"]["retryAfter"], retry_after);
    assert!(body["data"].is_null(), "{body}");
    retry_after
}

async fn jobs(app: &TestApp) -> u64 {
    entity::job::Entity::find().count(&app.db).await.unwrap()
}

#[tokio::test]
async fn a_token_over_its_limit_is_refused_and_its_submission_takes_nothing() {
    let app = TestApp::spawn_with(limits("1/min", 6, 5, 5)).await;
    let (alice, ws) = app.setup("Lab", 100).await; // alice's first request: 1
    let (status, body) = app.submit_sleep(&alice, &ws, 1).await; // 5: her bucket is empty
    assert_eq!(status, StatusCode::OK, "{body}");
    let balance = app.balance(&ws).await;
    assert_eq!(balance, 98, "the accepted submission was charged");
    let before = jobs(&app).await;

    let (status, body) = app.submit_sleep(&alice, &ws, 1).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");
    assert_eq!(body["errors"][0]["extensions"]["code"], "RATE_LIMITED");
    assert_eq!(
        app.balance(&ws).await,
        balance,
        "a refused submission takes no credits"
    );
    assert_eq!(jobs(&app).await, before, "and queues no job");
    // One request refills every minute.
    refused(read(&app, Some(&alice.token), None).await, 60).await;

    // Another token has its own bucket.
    let bob = app.user("bob@lab.test").await;
    for _ in 0..6 {
        assert_eq!(
            read(&app, Some(&bob.token), None).await.status(),
            StatusCode::OK
        );
    }
    refused(read(&app, Some(&bob.token), None).await, 60).await;
}

#[tokio::test]
async fn a_client_without_a_token_is_limited_by_its_address() {
    let app = TestApp::spawn_with(|config| {
        limits("1/min", 2, 1, 2)(config);
        config.server.rate_limits.trusted_proxies = vec!["127.0.0.1".to_owned()];
    })
    .await;
    let first = Some("203.0.113.1");
    for _ in 0..2 {
        assert_eq!(read(&app, None, first).await.status(), StatusCode::OK);
    }
    refused(read(&app, None, first).await, 60).await;
    // A client that forged an address ahead of the proxy's is still counted by the proxy's.
    refused(
        read(&app, None, Some("198.51.100.7, 203.0.113.1")).await,
        60,
    )
    .await;
    // A bad token is counted against the address too: guessing tokens is limited.
    refused(read(&app, Some("jg_guess"), first).await, 60).await;

    // Another address, and any token, have their own buckets.
    assert_eq!(
        read(&app, None, Some("203.0.113.2")).await.status(),
        StatusCode::OK
    );
    let alice = app.user("alice@lab.test").await;
    assert_eq!(
        read(&app, Some(&alice.token), first).await.status(),
        StatusCode::OK
    );
    // Health checks and metrics are not limited.
    for path in ["/healthz", "/metrics"] {
        let response = app
            .client()
            .get(app.url(path))
            .header("x-forwarded-for", "203.0.113.1")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{path}");
    }
}

#[tokio::test]
async fn a_forwarded_address_is_ignored_unless_the_proxy_is_trusted() {
    let app = TestApp::spawn_with(limits("1/min", 2, 1, 2)).await;
    assert_eq!(
        read(&app, None, Some("203.0.113.1")).await.status(),
        StatusCode::OK
    );
    assert_eq!(
        read(&app, None, Some("203.0.113.2")).await.status(),
        StatusCode::OK
    );
    // Both came from 127.0.0.1, whatever they claimed.
    refused(read(&app, None, Some("203.0.113.3")).await, 60).await;
    // File downloads and job exports are requests too.
    for path in [
        "/files/file_00000000000000000000000000",
        "/jobs/job_00000000000000000000000000/export.json",
    ] {
        let response = app.client().get(app.url(path)).send().await.unwrap();
        refused(response, 60).await;
    }
}

/// Submits `fasta` as an upload to `ws` as `user`.
async fn upload(app: &TestApp, user: &TestUser, ws: &str) -> (StatusCode, Value) {
    let query = "mutation($ws: ID!, $file: Upload!) { submitJob(input: {workspaceId: $ws,
        tool: \"sequence-stats\", inputs: [{name: \"sequences\", file: $file}]}) { job { id } } }";
    let form = Form::new()
        .text(
            "operations",
            json!({ "query": query, "variables": { "ws": ws, "file": null } }).to_string(),
        )
        .text("map", json!({ "0": ["variables.file"] }).to_string())
        .part(
            "0",
            Part::bytes(fasta(40).into_bytes()).file_name("reads.fa"),
        );
    let response = app
        .client()
        .post(app.url("/graphql"))
        .bearer_auth(&user.token)
        .multipart(form)
        .send()
        .await
        .unwrap();
    (response.status(), response.json().await.unwrap())
}

#[tokio::test]
async fn an_upload_costs_more_than_a_read() {
    let app = TestApp::spawn_with(limits("1/min", 10, 5, 10)).await;
    let (alice, ws) = app.setup("Lab", 100).await; // 1 of alice's 10
    let (status, body) = upload(&app, &alice, &ws).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");
    assert_eq!(body["errors"][0]["extensions"]["code"], "RATE_LIMITED");
    let files = entity::file::Entity::find().count(&app.db).await.unwrap();
    assert_eq!(files, 0, "a refused upload stores nothing");
    // What the upload would have cost is still there for reads.
    assert_eq!(
        read(&app, Some(&alice.token), None).await.status(),
        StatusCode::OK
    );

    // A full bucket pays for an upload, which empties it.
    let bob = app.user("bob@lab.test").await;
    app.add_member(&alice, &ws, &bob, "MEMBER").await;
    let (status, body) = upload(&app, &bob, &ws).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(body["errors"].is_null(), "{body}");
    refused(read(&app, Some(&bob.token), None).await, 60).await;
}

#[tokio::test]
async fn the_limit_recovers_after_its_period() {
    let app = TestApp::spawn_with(limits("2/s", 2, 1, 2)).await;
    let alice = app.user("alice@lab.test").await;
    let mut over = None;
    for _ in 0..50 {
        let response = read(&app, Some(&alice.token), None).await;
        if response.status() == StatusCode::TOO_MANY_REQUESTS {
            over = Some(response);
            break;
        }
    }
    let over = over.expect("a 429 within 50 requests at 2 a second");
    assert_eq!(refused(over, 1).await, 1);
    eventually(WAIT, "the bucket fills again", || async {
        match read(&app, Some(&alice.token), None).await.status() {
            StatusCode::OK => Ok(()),
            status => Err(status),
        }
    })
    .await;
}

#[tokio::test]
async fn a_websocket_operation_over_the_limit_gets_an_error_and_the_connection_stays_open() {
    let app = TestApp::spawn_with(limits("1/s", 3, 1, 3)).await;
    let alice = app.user("alice@lab.test").await;
    let mut ws = Ws::connect(app.addr, Some(&alice.token)).await;
    let mut error = None;
    for i in 0..50 {
        let id = format!("q{i}");
        ws.subscribe(&id, "{ __typename }", json!({})).await;
        let message = ws.message().await;
        if message["type"] == "error" {
            assert_eq!(message["id"], id);
            error = Some(message);
            break;
        }
        assert_eq!(message["type"], "next", "{message}");
        assert_eq!(ws.message().await["type"], "complete");
    }
    let error = error.expect("an operation refused within 50 at 1 a second");
    let payload = &error["payload"][0];
    assert_eq!(payload["extensions"]["code"], "RATE_LIMITED", "{error}");
    assert_eq!(payload["extensions"]["retryAfter"], 1, "{error}");

    // The same connection runs operations again once the bucket refills.
    let ws = Mutex::new(ws);
    eventually(WAIT, "an operation on the same connection", || async {
        let mut ws = ws.lock().await;
        ws.subscribe("again", "{ __typename }", json!({})).await;
        let message = ws.message().await;
        if message["type"] != "next" {
            return Err(message);
        }
        assert_eq!(message["payload"]["data"]["__typename"], "Query");
        assert_eq!(ws.message().await["type"], "complete");
        Ok(())
    })
    .await;
}

#[tokio::test]
async fn worker_tokens_are_not_limited() {
    let remote = r#"
[[tools]]
name = "align"
title = "Alignment on the cluster"
version = "1"
timeout_seconds = 60
executor = { kind = "remote" }
price = { base = 1 }
"#;
    let app = TestApp::spawn_with_tools(remote, limits("1/min", 2, 1, 2)).await;
    let user = admin_id(&app).await;
    let (_, worker) =
        jobgraph::users::tokens::issue(&app.db, user, "cluster", TokenKind::Worker, None)
            .await
            .unwrap();
    // A worker polls for jobs as often as it needs.
    let claim = "mutation { claimJobs(input: {worker: \"node-1\", tools: [\"align\"], limit: 1}) {
        jobs { id } } }";
    for _ in 0..5 {
        let data = app.ok(Some(&worker), claim, json!({})).await;
        assert_eq!(data["claimJobs"]["jobs"], json!([]));
    }
}

/// The platform administrator's user id.
async fn admin_id(app: &TestApp) -> entity::ids::UserId {
    entity::user::Entity::find()
        .one(&app.db)
        .await
        .unwrap()
        .expect("the first-start administrator")
        .id
}
