//! Prices that cannot wrap or make a job free, and idempotency keys that cannot charge twice.

use entity::credit_transaction::{self, TransactionKind};
use sea_orm::{ColumnTrait, EntityTrait, PaginatorTrait, QueryFilter};
use serde_json::{Value, json};

use crate::support::TestApp;

/// A tool priced per unit of a setting its schema leaves unbounded.
const OPEN: &str = r#"
[[tools]]
name = "open"
title = "Open"
version = "1"
timeout_seconds = 60
settings_schema = { type = "object" }
executor = { kind = "builtin", function = "noop" }
price = { base = 1, settings = [{ name = "n", per_unit = 3 }] }
"#;

async fn spawn() -> TestApp {
    TestApp::spawn_with_tools(OPEN, |_| {}).await
}

const SUBMIT: &str =
    "mutation($ws: ID!, $tool: String!, $settings: JSON, $key: String, $max: Int) {
  submitJob(input: {workspaceId: $ws, tool: $tool, settings: $settings, idempotencyKey: $key,
                    maxCredits: $max}) { replayed job { id creditCost } } }";
const ESTIMATE: &str = "query($settings: JSON) {
  estimateJobCost(input: {tool: \"open\", settings: $settings}) { total breakdown { quantity amount } } }";
const BATCH: &str = "mutation($ws: ID!, $jobs: [BatchJobInput!]!, $key: String) {
  submitBatch(input: {workspaceId: $ws, jobs: $jobs, idempotencyKey: $key}) {
    replayed batch { id totalCost } jobs { id } } }";

async fn rows(app: &TestApp) -> (u64, u64, u64) {
    let jobs = entity::job::Entity::find().count(&app.db).await.unwrap();
    let batches = entity::batch::Entity::find().count(&app.db).await.unwrap();
    let charges = credit_transaction::Entity::find()
        .filter(credit_transaction::Column::Kind.eq(TransactionKind::Charge))
        .count(&app.db)
        .await
        .unwrap();
    (jobs, batches, charges)
}

fn refusal(body: &Value) -> (&str, &str) {
    let ext = &body["errors"][0]["extensions"];
    (
        ext["code"].as_str().unwrap_or_else(|| panic!("{body}")),
        ext["field"].as_str().unwrap_or_default(),
    )
}

#[tokio::test]
async fn a_huge_negative_or_non_numeric_setting_is_refused_and_charges_nothing() {
    let app = spawn().await;
    let (alice, ws) = app.setup("lab", 1000).await;
    for n in [
        json!(1e19),
        json!(u64::MAX),
        json!(666_666_667),
        json!(-1),
        json!(-0.5),
        json!("5"),
        json!(null),
    ] {
        let settings = json!({ "n": n });
        let (_, body) = app
            .post(
                Some(&alice.token),
                SUBMIT,
                json!({"ws": ws, "tool": "open", "settings": settings}),
            )
            .await;
        assert_eq!(refusal(&body), ("BAD_USER_INPUT", "settings.n"), "{n}");
        let (_, body) = app
            .post(Some(&alice.token), ESTIMATE, json!({"settings": settings}))
            .await;
        assert_eq!(refusal(&body), ("BAD_USER_INPUT", "settings.n"), "{n}");
    }
    assert_eq!(rows(&app).await, (0, 0, 0));
    assert_eq!(app.balance(&ws).await, 1000, "the ledger is unchanged");

    // A fraction is charged as whole units, rounded up; the largest price fits an Int.
    let data = app
        .ok(
            Some(&alice.token),
            ESTIMATE,
            json!({"settings": {"n": 666_666_666}}),
        )
        .await;
    assert_eq!(data["estimateJobCost"]["total"], 1_999_999_999);
    let data = app
        .ok(
            Some(&alice.token),
            SUBMIT,
            json!({"ws": ws, "tool": "open", "settings": {"n": 2.5}}),
        )
        .await;
    assert_eq!(data["submitJob"]["job"]["creditCost"], 1 + 3 * 3);
    assert_eq!(app.balance(&ws).await, 1000 - 10);
}

#[tokio::test]
async fn a_priced_tool_never_charges_zero() {
    let app = spawn().await;
    let (alice, ws) = app.setup("lab", 100).await;
    for (tool, settings) in [
        ("open", json!({})),
        ("open", json!({"n": 0})),
        ("sleep", json!({"seconds": 0})),
    ] {
        let data = app
            .ok(
                Some(&alice.token),
                SUBMIT,
                json!({"ws": ws, "tool": tool, "settings": settings}),
            )
            .await;
        assert_eq!(
            data["submitJob"]["job"]["creditCost"], 1,
            "{tool} {settings}"
        );
    }
    assert_eq!(rows(&app).await, (3, 0, 3), "each job has its CHARGE");
    assert_eq!(app.balance(&ws).await, 97);
}

#[tokio::test]
async fn a_batch_whose_total_overflows_the_ceiling_is_refused() {
    let app = spawn().await;
    let (alice, ws) = app.setup("lab", 1000).await;
    // Each job costs 1,500,000,001 credits; two are above the ceiling.
    let job = json!({"tool": "open", "settings": {"n": 500_000_000}});
    let (_, body) = app
        .post(
            Some(&alice.token),
            BATCH,
            json!({"ws": ws, "jobs": [job, job]}),
        )
        .await;
    assert_eq!(refusal(&body), ("BAD_USER_INPUT", "jobs"));
    let too_much = json!({"tool": "open", "settings": {"n": 1e19}});
    let (_, body) = app
        .post(
            Some(&alice.token),
            BATCH,
            json!({"ws": ws, "jobs": [job, too_much]}),
        )
        .await;
    assert_eq!(refusal(&body), ("BAD_USER_INPUT", "jobs.1.settings.n"));
    assert_eq!(rows(&app).await, (0, 0, 0));
    assert_eq!(app.balance(&ws).await, 1000);
}

#[tokio::test]
async fn credit_amounts_above_a_graphql_int_are_refused() {
    let app = spawn().await;
    let (alice, ws) = app.setup("lab", 100).await;
    let (_, body) = app
        .post(
            Some(&alice.token),
            SUBMIT,
            json!({"ws": ws, "tool": "open", "max": 2_147_483_648i64}),
        )
        .await;
    assert!(
        body["errors"].is_array() && body["data"].is_null(),
        "{body}"
    );
    let (_, body) = app
        .post(
            Some(&app.admin_token),
            "mutation($ws: ID!) { grantCredits(input: {workspaceId: $ws, amount: 2147483648}) { workspace { id } } }",
            json!({"ws": ws}),
        )
        .await;
    assert!(
        body["errors"].is_array() && body["data"].is_null(),
        "{body}"
    );
    assert_eq!(rows(&app).await, (0, 0, 0));
    assert_eq!(app.balance(&ws).await, 100);
}

#[tokio::test]
async fn one_key_with_another_request_is_refused() {
    let app = spawn().await;
    let (alice, ws) = app.setup("lab", 100).await;
    let submit = |tool: &str, settings: Value| json!({"ws": ws, "tool": tool, "settings": settings, "key": "cell-1"});
    let first = app
        .ok(
            Some(&alice.token),
            SUBMIT,
            submit("open", json!({"n": 1, "m": [1, 2]})),
        )
        .await;
    assert_eq!(first["submitJob"]["replayed"], false);
    // The same request, its keys in another order: the first job, uncharged.
    let again = app
        .ok(
            Some(&alice.token),
            SUBMIT,
            submit("open", json!({"m": [1, 2], "n": 1})),
        )
        .await;
    assert_eq!(again["submitJob"]["replayed"], true);
    assert_eq!(again["submitJob"]["job"], first["submitJob"]["job"]);
    for other in [
        submit("open", json!({"n": 2, "m": [1, 2]})),
        submit("sleep", json!({})),
        json!({"ws": ws, "tool": "open", "settings": {"n": 1, "m": [1, 2]}, "key": "cell-1", "max": 50}),
    ] {
        let (status, body) = app.post(Some(&alice.token), SUBMIT, other).await;
        assert_eq!(status, 200);
        assert_eq!(refusal(&body).0, "IDEMPOTENCY_KEY_REUSED", "{body}");
    }
    assert_eq!(rows(&app).await, (1, 0, 1));
    assert_eq!(app.balance(&ws).await, 100 - 4);
}

#[tokio::test]
async fn a_double_click_makes_one_job_and_one_charge() {
    let app = spawn().await;
    let (alice, ws) = app.setup("lab", 100).await;
    let vars = json!({"ws": ws, "tool": "open", "settings": {"n": 3}, "key": "double"});
    let (a, b) = tokio::join!(
        app.post(Some(&alice.token), SUBMIT, vars.clone()),
        app.post(Some(&alice.token), SUBMIT, vars.clone()),
    );
    let (a, b) = (&a.1["data"]["submitJob"], &b.1["data"]["submitJob"]);
    assert_eq!(a["job"]["id"], b["job"]["id"], "{a} {b}");
    assert_ne!(a["replayed"], b["replayed"]);
    assert_eq!(rows(&app).await, (1, 0, 1));
    assert_eq!(app.balance(&ws).await, 100 - 10);
}

#[tokio::test]
async fn a_double_click_on_retry_or_duplicate_charges_once() {
    let app = spawn().await;
    let (alice, ws) = app.setup("lab", 100).await;
    let data = app
        .ok(
            Some(&alice.token),
            SUBMIT,
            json!({"ws": ws, "tool": "open", "settings": {"n": 1}}),
        )
        .await;
    let id = data["submitJob"]["job"]["id"].as_str().unwrap().to_owned();
    app.ok(
        Some(&alice.token),
        "mutation($id: ID!) { cancelJob(input: {jobId: $id}) { job { status } } }",
        json!({"id": id}),
    )
    .await;
    assert_eq!(
        app.balance(&ws).await,
        100,
        "the cancelled job was refunded"
    );
    let retry = "mutation($id: ID!, $key: String) {
      retryJob(input: {jobId: $id, idempotencyKey: $key}) { replayed job { id } } }";
    let duplicate = "mutation($id: ID!, $key: String, $name: String) {
      duplicateJob(input: {jobId: $id, idempotencyKey: $key, name: $name}) { replayed job { id } } }";
    for (mutation, field) in [(retry, "retryJob"), (duplicate, "duplicateJob")] {
        let vars = json!({"id": id, "key": field});
        let (a, b) = tokio::join!(
            app.post(Some(&alice.token), mutation, vars.clone()),
            app.post(Some(&alice.token), mutation, vars.clone()),
        );
        let (a, b) = (&a.1["data"][field], &b.1["data"][field]);
        assert_eq!(a["job"]["id"], b["job"]["id"], "{a} {b}");
        assert_ne!(a["replayed"], b["replayed"]);
    }
    // The retry's key, sent with a duplicate of the same job, is another request.
    let (_, body) = app
        .post(
            Some(&alice.token),
            duplicate,
            json!({"id": id, "key": "retryJob"}),
        )
        .await;
    assert_eq!(refusal(&body).0, "IDEMPOTENCY_KEY_REUSED", "{body}");
    assert_eq!(rows(&app).await, (3, 0, 3));
    assert_eq!(app.balance(&ws).await, 100 - 4 - 4);
}

#[tokio::test]
async fn a_batch_key_names_the_whole_batch() {
    let app = spawn().await;
    let (alice, ws) = app.setup("lab", 100).await;
    let jobs =
        json!([{"tool": "open", "settings": {"n": 1}}, {"tool": "open", "settings": {"n": 2}}]);
    let vars = json!({"ws": ws, "jobs": jobs, "key": "sweep"});
    let (a, b) = tokio::join!(
        app.post(Some(&alice.token), BATCH, vars.clone()),
        app.post(Some(&alice.token), BATCH, vars.clone()),
    );
    let (a, b) = (&a.1["data"]["submitBatch"], &b.1["data"]["submitBatch"]);
    assert_eq!(a["batch"], b["batch"], "{a} {b}");
    assert_eq!(a["jobs"], b["jobs"]);
    assert_ne!(a["replayed"], b["replayed"]);
    assert_eq!(a["batch"]["totalCost"], 4 + 7);
    let other = json!({"ws": ws, "jobs": [{"tool": "open", "settings": {"n": 1}}], "key": "sweep"});
    let (_, body) = app.post(Some(&alice.token), BATCH, other).await;
    assert_eq!(refusal(&body).0, "IDEMPOTENCY_KEY_REUSED", "{body}");
    assert_eq!(rows(&app).await, (2, 1, 2));
    assert_eq!(app.balance(&ws).await, 100 - 11);
}
