//! Idempotency keys of workflow submissions: the same key with the same request answers with
//! the first workflow, writing and charging nothing more; with another request,
//! IDEMPOTENCY_KEY_REUSED; keys are per workspace, apart from jobs' keys.

use serde_json::{Value, json};

use crate::support::{TestApp, TestUser};
use crate::workflow_reuse::workflows;

const DNA: &str = ">gene1\nATGGCCATTGTAATGGGCCGCTGAAAGGGTGCCCGATAG\n";

const SUBMIT: &str = "mutation($input: SubmitWorkflowInput!) {
    submitWorkflow(input: $input) { replayed workflow { id credits { reserved } } } }";

/// No workers: a workflow keeps its reservation, so that each one written shows.
async fn spawn() -> TestApp {
    TestApp::spawn_with(|config| config.server.workers = 0).await
}

/// `protein-profile` with `k`, keyed `key`, reserving 40 credits.
fn keyed(ws: &str, key: &str, k: i64) -> Value {
    json!({
        "workspaceId": ws,
        "workflow": "protein-profile",
        "inputs": [{ "name": "dna", "text": DNA }],
        "parameters": { "k": k },
        "maxCredits": 40,
        "idempotencyKey": key,
    })
}

async fn post(app: &TestApp, user: &TestUser, input: Value) -> Value {
    app.post(Some(&user.token), SUBMIT, json!({ "input": input }))
        .await
        .1
}

async fn reserved(app: &TestApp, ws: &str) -> i64 {
    app.ok(
        Some(&app.admin_token),
        "query($id: ID!) { workspace(id: $id) { creditsReserved } }",
        json!({ "id": ws }),
    )
    .await["workspace"]["creditsReserved"]
        .as_i64()
        .unwrap()
}

#[tokio::test]
async fn the_same_key_and_request_return_the_first_workflow_and_another_request_is_refused() {
    let app = spawn().await;
    let (alice, ws) = app.setup("lab", 100).await;
    let first = post(&app, &alice, keyed(&ws, "run-1", 3)).await;
    assert!(first["errors"].is_null(), "{first}");
    let first = &first["data"]["submitWorkflow"];
    assert_eq!(first["replayed"], false);
    // 40 reserved, of which translate's 2 are charged as it is queued.
    assert_eq!(first["workflow"]["credits"]["reserved"], 38);
    assert_eq!(app.balance(&ws).await, 98);

    // The same request again, its parameters' keys in another order: the first workflow.
    let mut again = keyed(&ws, "run-1", 3);
    again["parameters"] = json!({ "k": 3 });
    let again = post(&app, &alice, again).await;
    assert_eq!(again["data"]["submitWorkflow"]["replayed"], true, "{again}");
    assert_eq!(
        again["data"]["submitWorkflow"]["workflow"]["id"],
        first["workflow"]["id"]
    );
    assert_eq!(workflows(&app).await, 1);
    assert_eq!(reserved(&app, &ws).await, 38);

    // Another request with that key: refused, nothing written.
    for other in [
        keyed(&ws, "run-1", 4),
        {
            let mut reusing = keyed(&ws, "run-1", 3);
            reusing["reuse"] = json!(true);
            reusing
        },
        {
            let mut named = keyed(&ws, "run-1", 3);
            named["name"] = json!("named");
            named
        },
    ] {
        let body = post(&app, &alice, other).await;
        assert_eq!(
            body["errors"][0]["extensions"]["code"], "IDEMPOTENCY_KEY_REUSED",
            "{body}"
        );
        assert!(body["data"].is_null(), "{body}");
    }
    assert_eq!(workflows(&app).await, 1);
    assert_eq!(reserved(&app, &ws).await, 38);
    assert_eq!(app.balance(&ws).await, 98);

    // A key out of bounds is refused before anything is written.
    for key in [String::new(), "k".repeat(201)] {
        let body = post(&app, &alice, keyed(&ws, &key, 3)).await;
        assert_eq!(body["errors"][0]["extensions"]["code"], "BAD_USER_INPUT");
        assert_eq!(body["errors"][0]["extensions"]["field"], "idempotencyKey");
    }
    assert_eq!(workflows(&app).await, 1);
}

#[tokio::test]
async fn keys_are_per_workspace_and_apart_from_jobs_keys() {
    let app = spawn().await;
    let (alice, ws) = app.setup("lab", 100).await;
    let other = app.workspace(&alice, "other").await;
    app.grant(&other, 100).await;
    let here = post(&app, &alice, keyed(&ws, "shared-key", 3)).await;
    let there = post(&app, &alice, keyed(&other, "shared-key", 3)).await;
    for body in [&here, &there] {
        assert!(body["errors"].is_null(), "{body}");
        assert_eq!(body["data"]["submitWorkflow"]["replayed"], false);
    }
    assert_ne!(
        here["data"]["submitWorkflow"]["workflow"]["id"],
        there["data"]["submitWorkflow"]["workflow"]["id"]
    );
    assert_eq!(workflows(&app).await, 2);
    // A job with the same key in the same workspace is a job of its own.
    let job = app
        .ok(
            Some(&alice.token),
            "mutation($ws: ID!) { submitJob(input: {workspaceId: $ws, tool: \"noop\",
                idempotencyKey: \"shared-key\"}) { replayed job { id } } }",
            json!({ "ws": ws }),
        )
        .await;
    assert_eq!(job["submitJob"]["replayed"], false, "{job}");
    assert_eq!(reserved(&app, &ws).await, 38);
    assert_eq!(reserved(&app, &other).await, 38);
}

#[tokio::test]
async fn twenty_concurrent_submissions_with_one_key_make_one_workflow() {
    let app = spawn().await;
    let (alice, ws) = app.setup("lab", 100).await;
    let requests = (0..20).map(|_| post(&app, &alice, keyed(&ws, "once", 3)));
    let answers = futures_util::future::join_all(requests).await;
    let mut ids = Vec::new();
    let mut first = 0;
    for body in &answers {
        assert!(body["errors"].is_null(), "{body}");
        let submitted = &body["data"]["submitWorkflow"];
        ids.push(submitted["workflow"]["id"].clone());
        if submitted["replayed"] == false {
            first += 1;
        }
    }
    assert!(ids.iter().all(|id| id == &ids[0]), "{ids:?}");
    assert_eq!(first, 1);
    assert_eq!(workflows(&app).await, 1);
    // Reserved and charged once: 40 of the 100, translate's 2 of them charged.
    assert_eq!(reserved(&app, &ws).await, 38);
    assert_eq!(app.balance(&ws).await, 98);
}

#[tokio::test]
async fn an_uploaded_input_is_compared_by_content_and_a_replay_stores_nothing() {
    let app = spawn().await;
    let (alice, ws) = app.setup("lab", 100).await;
    let query = "mutation($ws: ID!, $file: Upload!) { submitWorkflow(input: {workspaceId: $ws,
        workflow: \"protein-profile\", inputs: [{name: \"dna\", file: $file}], maxCredits: 40,
        idempotencyKey: \"upload\"}) { replayed workflow { id } } }";
    let send = |bytes: &str| {
        crate::files::upload(
            &app,
            Some(&alice.token),
            query,
            json!({ "ws": ws }),
            "dna.fasta",
            bytes.as_bytes().to_vec(),
        )
    };
    let (_, first) = send(DNA).await;
    assert_eq!(
        first["data"]["submitWorkflow"]["replayed"], false,
        "{first}"
    );
    let stored = crate::files::stored(&app, &ws).await;
    assert_eq!(stored.len(), 1, "{stored:?}");

    let (_, again) = send(DNA).await;
    assert_eq!(again["data"]["submitWorkflow"]["replayed"], true, "{again}");
    assert_eq!(
        again["data"]["submitWorkflow"]["workflow"]["id"],
        first["data"]["submitWorkflow"]["workflow"]["id"]
    );
    let (_, other) = send(">gene1\nATGAAACGC\n").await;
    assert_eq!(
        other["errors"][0]["extensions"]["code"], "IDEMPOTENCY_KEY_REUSED",
        "{other}"
    );
    // The second and third uploads were discarded.
    assert_eq!(crate::files::stored(&app, &ws).await, stored);
    assert_eq!(workflows(&app).await, 1);
}
