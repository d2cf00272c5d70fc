//! Remote workers: worker tokens, the worker API (claim, heartbeat, progress, complete, fail),
//! attempt fencing, upkeep without local workers, and the Python example worker.

use std::time::Duration;

use entity::credit_transaction::{self, TransactionKind};
use jobgraph::ids::{self};
use reqwest::StatusCode;
use reqwest::multipart::{Form, Part};
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};
use serde_json::{Value, json};

use crate::support::{TestApp, TestUser};

/// The built-in tools plus two that run on remote workers.
const REMOTE_TOOLS: &str = r#"
[[tools]]
name = "align"
title = "Alignment on the cluster"
version = "2.1"
timeout_seconds = 600
max_attempts = 2
inputs = [{ name = "reads", kind = "file", required = true, max_bytes = 4096 }, { name = "label", kind = "text" }]
executor = { kind = "remote" }
price = { base = 5 }
settings_schema = { type = "object", properties = { mode = { type = "string", default = "fast" } } }

[[tools]]
name = "quick"
title = "A remote tool with a short time limit"
version = "1"
timeout_seconds = 1
max_attempts = 3
executor = { kind = "remote" }
price = { base = 3 }
"#;

const READS: &str = ">r1\nACGTACGT\n>r2\nTTGGCCAA\n";

/// A server without local workers, offering the remote tools.
async fn spawn() -> TestApp {
    TestApp::spawn_with_tools(REMOTE_TOOLS, |config| {
        config.server.workers = 0;
        config.server.lease_seconds = 5;
    })
    .await
}

/// A worker token, made by the platform administrator.
async fn worker_token(app: &TestApp) -> String {
    let data = app
        .ok(
            Some(&app.admin_token),
            "mutation { createApiToken(input: {name: \"cluster\", kind: WORKER}) { secret token { kind } } }",
            json!({}),
        )
        .await;
    assert_eq!(data["createApiToken"]["token"]["kind"], "WORKER");
    data["createApiToken"]["secret"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// Sends a GraphQL multipart request with files as `variables.<name>` (or list items).
async fn multipart(
    app: &TestApp,
    token: &str,
    query: &str,
    variables: Value,
    files: Vec<(&str, &str, Vec<u8>)>,
) -> Value {
    let mut map = serde_json::Map::new();
    for (i, (path, _, _)) in files.iter().enumerate() {
        map.insert(i.to_string(), json!([format!("variables.{path}")]));
    }
    let mut form = Form::new()
        .text(
            "operations",
            json!({ "query": query, "variables": variables }).to_string(),
        )
        .text("map", Value::Object(map).to_string());
    for (i, (_, filename, bytes)) in files.into_iter().enumerate() {
        form = form.part(
            i.to_string(),
            Part::bytes(bytes).file_name(filename.to_owned()),
        );
    }
    let response = app
        .client()
        .post(app.url("/graphql"))
        .bearer_auth(token)
        .multipart(form)
        .send()
        .await
        .unwrap();
    response.json().await.unwrap()
}

/// Submits an `align` job with uploaded reads; returns its id.
async fn submit_align(app: &TestApp, user: &TestUser, ws: &str) -> String {
    let body = multipart(
        app,
        &user.token,
        "mutation($ws: ID!, $file: Upload!) { submitJob(input: {workspaceId: $ws, tool: \"align\",
           inputs: [{name: \"reads\", file: $file}, {name: \"label\", text: \"sample 7\"}]}) { job { id status } } }",
        json!({ "ws": ws, "file": null }),
        vec![("file", "reads.fa", READS.as_bytes().to_vec())],
    )
    .await;
    assert!(body["errors"].is_null(), "{body}");
    assert_eq!(body["data"]["submitJob"]["job"]["status"], "QUEUED");
    body["data"]["submitJob"]["job"]["id"]
        .as_str()
        .unwrap()
        .to_owned()
}

const CLAIM: &str = "mutation($tools: [String!]!, $lease: Int) {
  claimJobs(input: {worker: \"node-17\", tools: $tools, limit: 5, leaseSeconds: $lease}) {
    jobs { id tool toolVersion name attempt maxAttempts attemptToken leaseExpiresAt startedAt
           timeoutSeconds settings inputs { name kind text file { id name size sha256 downloadUrl } } }
  }
}";

/// Claims jobs of `tools` as a worker; returns the claimed jobs.
async fn claim(app: &TestApp, worker: &str, tools: &[&str], lease: Option<i32>) -> Vec<Value> {
    let data = app
        .ok(
            Some(worker),
            CLAIM,
            json!({ "tools": tools, "lease": lease }),
        )
        .await;
    data["claimJobs"]["jobs"].as_array().unwrap().clone()
}

const HEARTBEAT: &str =
    "mutation($a: String!) { heartbeatJob(attempt: $a) { cancelled leaseExpiresAt } }";
const PROGRESS: &str = "mutation($a: String!, $p: Float, $s: String) {
  reportJobProgress(attempt: $a, progress: $p, stage: $s) { cancelled } }";
const COMPLETE: &str = "mutation($a: String!, $result: JSON, $outputs: [Upload!]) {
  completeJob(attempt: $a, result: $result, outputs: $outputs) { id status outputs { name size downloadUrl } } }";
const FAIL: &str = "mutation($a: String!, $m: String!, $t: Boolean!) {
  failJob(attempt: $a, message: $m, transient: $t) { id status } }";

/// The workspace's charges and refunds of one job.
async fn ledger_of(app: &TestApp, job: &str) -> (usize, usize) {
    let id = ids::decode::<entity::ids::JobId>("id", job).unwrap();
    let entries = credit_transaction::Entity::find()
        .filter(credit_transaction::Column::JobId.eq(id))
        .all(&app.db)
        .await
        .unwrap();
    let count = |kind| entries.iter().filter(|e| e.kind == kind).count();
    (
        count(TransactionKind::Charge),
        count(TransactionKind::Refund),
    )
}

/// Ends the lease of a job's running attempt now, as if its worker had vanished.
async fn expire_lease(app: &TestApp, job: &str) {
    let id = ids::decode::<entity::ids::JobId>("id", job).unwrap();
    entity::job::Entity::update_many()
        .col_expr(
            entity::job::Column::LeaseExpiresAt,
            sea_orm::sea_query::Expr::value(chrono::Utc::now() - chrono::Duration::seconds(1)),
        )
        .filter(entity::job::Column::Id.eq(id))
        .exec(&app.db)
        .await
        .unwrap();
}

#[tokio::test]
async fn a_remote_worker_claims_reports_and_completes_a_job_with_outputs() {
    let app = spawn().await;
    let (alice, ws) = app.setup("Cluster lab", 100).await;
    let worker = worker_token(&app).await;
    let job = submit_align(&app, &alice, &ws).await;
    assert_eq!(app.balance(&ws).await, 95);

    let claimed = claim(&app, &worker, &["align"], Some(60)).await;
    assert_eq!(claimed.len(), 1);
    let run = &claimed[0];
    assert_eq!(run["id"], job.as_str());
    assert_eq!(run["tool"], "align");
    assert_eq!(run["toolVersion"], "2.1");
    assert_eq!(run["attempt"], 1);
    assert_eq!(run["maxAttempts"], 2);
    assert_eq!(run["timeoutSeconds"], 600);
    assert_eq!(run["settings"], json!({ "mode": "fast" }));
    assert!(run["leaseExpiresAt"].is_string());
    let attempt = run["attemptToken"].as_str().unwrap().to_owned();
    let inputs = run["inputs"].as_array().unwrap();
    let label = inputs.iter().find(|i| i["name"] == "label").unwrap();
    assert_eq!(label["text"], "sample 7");
    let reads = inputs.iter().find(|i| i["name"] == "reads").unwrap();
    assert_eq!(reads["kind"], "FILE");
    let url = reads["file"]["downloadUrl"].as_str().unwrap();
    assert!(url.contains("?attempt="), "{url}");

    // The worker token downloads the input of the job it runs; nothing else does with it.
    let response = app
        .client()
        .get(url)
        .bearer_auth(&worker)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.text().await.unwrap(), READS);
    let bare = url.split('?').next().unwrap();
    let response = app
        .client()
        .get(bare)
        .bearer_auth(&worker)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);

    // Nothing else is left to claim.
    assert!(claim(&app, &worker, &["align"], None).await.is_empty());

    let data = app
        .ok(
            Some(&worker),
            PROGRESS,
            json!({ "a": attempt, "p": 0.4, "s": "Aligning" }),
        )
        .await;
    assert_eq!(data["reportJobProgress"]["cancelled"], false);
    let seen = app
        .wait_for(&alice.token, &job, Duration::from_secs(5), |job| {
            job["stage"] == "Aligning"
        })
        .await;
    assert_eq!(seen["status"], "PROCESSING");
    assert_eq!(seen["progress"], 0.4);
    let data = app
        .ok(Some(&worker), HEARTBEAT, json!({ "a": attempt }))
        .await;
    assert_eq!(data["heartbeatJob"]["cancelled"], false);
    assert!(data["heartbeatJob"]["leaseExpiresAt"].is_string());

    let body = multipart(
        &app,
        &worker,
        COMPLETE,
        json!({ "a": attempt, "result": { "aligned": 2 }, "outputs": [null] }),
        vec![("outputs.0", "alignment.sam", b"r1\t0\tchr1\n".to_vec())],
    )
    .await;
    assert!(body["errors"].is_null(), "{body}");
    let done = &body["data"]["completeJob"];
    assert_eq!(done["status"], "COMPLETED");
    assert_eq!(done["outputs"][0]["name"], "alignment.sam");

    let job_now = app
        .wait_final(&alice.token, &job, Duration::from_secs(5))
        .await;
    assert_eq!(job_now["status"], "COMPLETED");
    assert_eq!(job_now["result"], json!({ "aligned": 2 }));
    assert_eq!(job_now["progress"], 1.0);
    let output = done["outputs"][0]["downloadUrl"].as_str().unwrap();
    let response = app
        .client()
        .get(output)
        .bearer_auth(&alice.token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.text().await.unwrap(), "r1\t0\tchr1\n");

    // A second completion of the same attempt changes nothing and keeps no file.
    let body = multipart(
        &app,
        &worker,
        COMPLETE,
        json!({ "a": attempt, "result": { "aligned": 3 }, "outputs": [null] }),
        vec![("outputs.0", "again.sam", b"x".to_vec())],
    )
    .await;
    assert_eq!(
        body["errors"][0]["extensions"]["code"], "STALE_ATTEMPT",
        "{body}"
    );
    let files = entity::file::Entity::find().all(&app.db).await.unwrap();
    assert_eq!(files.len(), 2, "the input and one output");
    assert_eq!(app.balance(&ws).await, 95);
    assert_eq!(ledger_of(&app, &job).await, (1, 0));
    // The worker is in the register.
    let workers = entity::worker::Entity::find().all(&app.db).await.unwrap();
    assert!(
        workers
            .iter()
            .any(|w| w.name == "node-17" && w.kind == "remote")
    );
    // Remote claims and runs count in the metrics as local ones do.
    let text = app.metrics().await;
    for line in [
        "jobgraph_claim_latency_seconds_count 1",
        "jobgraph_run_duration_seconds_count{tool=\"align\",outcome=\"COMPLETED\"} 1",
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "missing `{line}` in:\n{text}"
        );
    }
}

#[tokio::test]
async fn a_stale_attempt_is_refused_after_its_lease_expired_and_the_job_was_claimed_again() {
    let app = spawn().await;
    let (alice, ws) = app.setup("Cluster lab", 100).await;
    let worker = worker_token(&app).await;
    let job = submit_align(&app, &alice, &ws).await;
    let first = claim(&app, &worker, &["align"], None).await;
    let stale = first[0]["attemptToken"].as_str().unwrap().to_owned();

    // The worker goes silent: with no local workers, the server's upkeep reclaims the job and
    // queues it again after its backoff.
    expire_lease(&app, &job).await;
    let retried = app
        .wait_for(&alice.token, &job, Duration::from_secs(10), |job| {
            job["status"] == "QUEUED"
        })
        .await;
    let reasons: Vec<&str> = retried["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["message"].as_str())
        .collect();
    assert!(
        reasons.iter().any(|m| m.contains("lease expired")),
        "{reasons:?}"
    );
    let second = claim(&app, &worker, &["align"], None).await;
    assert_eq!(second[0]["attempt"], 2);
    let fresh = second[0]["attemptToken"].as_str().unwrap().to_owned();

    // The old attempt comes back: everything it says is refused.
    for (query, variables) in [
        (HEARTBEAT, json!({ "a": stale })),
        (PROGRESS, json!({ "a": stale, "p": 0.9 })),
        (COMPLETE, json!({ "a": stale, "result": { "from": "old" } })),
        (FAIL, json!({ "a": stale, "m": "late", "t": false })),
    ] {
        assert_eq!(
            app.error_code(Some(&worker), query, variables).await,
            "STALE_ATTEMPT"
        );
    }
    app.ok(
        Some(&worker),
        COMPLETE,
        json!({ "a": fresh, "result": { "from": "new" } }),
    )
    .await;
    assert_eq!(
        app.error_code(Some(&worker), COMPLETE, json!({ "a": stale, "result": {} }))
            .await,
        "STALE_ATTEMPT"
    );
    let done = app
        .wait_final(&alice.token, &job, Duration::from_secs(5))
        .await;
    assert_eq!(done["status"], "COMPLETED");
    assert_eq!(done["result"], json!({ "from": "new" }));
    assert_eq!(done["refunded"], false);
    // Charged once, never refunded; the balance is the ledger's sum.
    assert_eq!(ledger_of(&app, &job).await, (1, 0));
    assert_eq!(app.balance(&ws).await, 95);
}

#[tokio::test]
async fn a_cancelled_job_is_reported_on_the_next_heartbeat() {
    let app = spawn().await;
    let (alice, ws) = app.setup("Cluster lab", 100).await;
    let worker = worker_token(&app).await;
    let job = submit_align(&app, &alice, &ws).await;
    let claimed = claim(&app, &worker, &["align"], None).await;
    let attempt = claimed[0]["attemptToken"].as_str().unwrap().to_owned();

    app.ok(
        Some(&alice.token),
        "mutation($id: ID!) { cancelJob(input: {jobId: $id}) { job { status } } }",
        json!({ "id": job }),
    )
    .await;
    let data = app
        .ok(Some(&worker), HEARTBEAT, json!({ "a": attempt }))
        .await;
    assert_eq!(
        data["heartbeatJob"],
        json!({ "cancelled": true, "leaseExpiresAt": null })
    );
    let data = app
        .ok(Some(&worker), PROGRESS, json!({ "a": attempt, "p": 0.5 }))
        .await;
    assert_eq!(data["reportJobProgress"]["cancelled"], true);
    assert_eq!(
        app.error_code(
            Some(&worker),
            COMPLETE,
            json!({ "a": attempt, "result": {} })
        )
        .await,
        "STALE_ATTEMPT"
    );
    let (_, body) = app.read_job(Some(&alice.token), &job).await;
    assert_eq!(body["data"]["job"]["status"], "CANCELLED");
    assert_eq!(
        ledger_of(&app, &job).await,
        (1, 0),
        "a run that started is not refunded"
    );
    app.balance(&ws).await;
}

#[tokio::test]
async fn a_transient_failure_is_retried_then_fails_with_one_refund() {
    let app = spawn().await;
    let (alice, ws) = app.setup("Cluster lab", 100).await;
    let worker = worker_token(&app).await;
    let job = submit_align(&app, &alice, &ws).await;

    let first = claim(&app, &worker, &["align"], None).await;
    let data = app
        .ok(
            Some(&worker),
            FAIL,
            json!({ "a": first[0]["attemptToken"], "m": "node lost its scratch disk", "t": true }),
        )
        .await;
    assert_eq!(data["failJob"]["status"], "RETRY");
    app.wait_for(&alice.token, &job, Duration::from_secs(10), |job| {
        job["status"] == "QUEUED"
    })
    .await;
    let second = claim(&app, &worker, &["align"], None).await;
    assert_eq!(second[0]["attempt"], 2);
    let data = app
        .ok(
            Some(&worker),
            FAIL,
            json!({ "a": second[0]["attemptToken"], "m": "node lost it again", "t": true }),
        )
        .await;
    assert_eq!(
        data["failJob"]["status"], "FAILED",
        "the last attempt ends the job"
    );
    let done = app
        .wait_final(&alice.token, &job, Duration::from_secs(5))
        .await;
    assert_eq!(done["errorMessage"], "node lost it again");
    assert_eq!(done["errorCode"], "TRANSIENT_FAILURE");
    assert_eq!(done["refunded"], true);
    assert_eq!(ledger_of(&app, &job).await, (1, 1));
    assert_eq!(app.balance(&ws).await, 100);

    // A permanent failure ends the job at once.
    let job = submit_align(&app, &alice, &ws).await;
    let claimed = claim(&app, &worker, &["align"], None).await;
    let data = app
        .ok(
            Some(&worker),
            FAIL,
            json!({ "a": claimed[0]["attemptToken"], "m": "the reads are not paired", "t": false }),
        )
        .await;
    assert_eq!(data["failJob"]["status"], "FAILED");
    assert_eq!(ledger_of(&app, &job).await, (1, 1));
    assert_eq!(app.balance(&ws).await, 100);
}

#[tokio::test]
async fn an_overdue_remote_run_times_out_and_is_refunded() {
    let app = spawn().await;
    let (alice, ws) = app.setup("Cluster lab", 100).await;
    let worker = worker_token(&app).await;
    let job = app.submit(&alice, &ws, json!({"tool": "quick"})).await;
    let claimed = claim(&app, &worker, &["quick"], Some(600)).await;
    assert_eq!(claimed[0]["timeoutSeconds"], 1);
    let attempt = claimed[0]["attemptToken"].as_str().unwrap().to_owned();
    let done = app
        .wait_final(&alice.token, &job, Duration::from_secs(10))
        .await;
    assert_eq!(done["status"], "TIMEOUT");
    assert_eq!(done["errorCode"], "TIMEOUT");
    assert_eq!(done["refunded"], true);
    assert_eq!(ledger_of(&app, &job).await, (1, 1));
    assert_eq!(app.balance(&ws).await, 100);
    assert_eq!(
        app.error_code(Some(&worker), HEARTBEAT, json!({ "a": attempt }))
            .await,
        "STALE_ATTEMPT"
    );
}

/// An attempt token with its last character changed.
fn forged(attempt: &str) -> String {
    let (head, last) = attempt.split_at(attempt.len() - 1);
    format!("{head}{}", if last == "A" { "B" } else { "A" })
}

#[tokio::test]
async fn worker_tokens_use_only_the_worker_api_and_user_tokens_not_it() {
    let app = spawn().await;
    let (alice, ws) = app.setup("Cluster lab", 100).await;
    let worker = worker_token(&app).await;

    // Only platform administrators make worker tokens.
    assert_eq!(
        app.error_code(
            Some(&alice.token),
            "mutation { createApiToken(input: {name: \"mine\", kind: WORKER}) { secret } }",
            json!({}),
        )
        .await,
        "FORBIDDEN"
    );
    // Users do not use the worker API.
    let claim_align = json!({ "tools": ["align"], "lease": null });
    assert_eq!(
        app.error_code(Some(&alice.token), CLAIM, claim_align.clone())
            .await,
        "FORBIDDEN"
    );
    assert_eq!(
        app.error_code(Some(&app.admin_token), CLAIM, claim_align.clone())
            .await,
        "FORBIDDEN"
    );
    assert_eq!(
        app.error_code(None, CLAIM, claim_align).await,
        "UNAUTHENTICATED"
    );
    // Worker tokens use nothing else.
    for query in [
        "{ viewer { user { id } } }",
        "{ tools { name } }",
        "mutation { createApiToken(input: {name: \"more\"}) { secret } }",
        "mutation { ...F } fragment F on Mutation { createApiToken(input: {name: \"x\"}) { secret } }",
        "mutation { ... on Mutation { createApiToken(input: {name: \"x\"}) { secret } } }",
        "mutation { failJob(attempt: \"x\", message: \"m\", transient: true) { id }
           createWorkspace(input: {name: \"w\"}) { workspace { id } } }",
    ] {
        let (status, body) = app.post(Some(&worker), query, json!({})).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
        assert_eq!(
            body["errors"][0]["extensions"]["code"], "FORBIDDEN",
            "{body}"
        );
    }
    assert_eq!(
        app.error_code(
            Some(&worker),
            "mutation($ws: ID!) { submitJob(input: {workspaceId: $ws, tool: \"quick\"}) { job { id } } }",
            json!({ "ws": ws }),
        )
        .await,
        "FORBIDDEN"
    );
    // Nor subscriptions.
    let mut socket = crate::support::ws::Ws::open(app.addr, "graphql-transport-ws", None).await;
    socket.init(Some(&worker)).await;
    assert_eq!(socket.close_code().await, Some(4403));

    // Only remote tools are claimed, and only by name.
    for tools in [json!(["sleep"]), json!(["nope"]), json!([])] {
        assert_eq!(
            app.error_code(Some(&worker), CLAIM, json!({ "tools": tools }))
                .await,
            "BAD_USER_INPUT"
        );
    }
    let (_, body) = app
        .post(Some(&worker), CLAIM, json!({ "tools": ["align", "sleep"] }))
        .await;
    let message = body["errors"][0]["message"].as_str().unwrap();
    assert!(message.contains("`sleep`"), "{message}");

    // An attempt token is the claiming worker token's: forged or borrowed ones are refused.
    app.submit(&alice, &ws, json!({"tool": "quick"})).await;
    let claimed = claim(&app, &worker, &["quick"], Some(600)).await;
    let attempt = claimed[0]["attemptToken"].as_str().unwrap().to_owned();
    let other = worker_token(&app).await;
    for (token, attempt) in [
        (&worker, "jgat_forged".to_owned()),
        (&worker, forged(&attempt)),
        (&other, attempt.clone()),
    ] {
        assert_eq!(
            app.error_code(Some(token), HEARTBEAT, json!({ "a": attempt }))
                .await,
            "BAD_USER_INPUT"
        );
    }
    app.ok(Some(&worker), HEARTBEAT, json!({ "a": attempt }))
        .await;
    // Nor job exports, not even of the jobs it runs.
    let export = format!("/jobs/{}/export.json", claimed[0]["id"].as_str().unwrap());
    let response = app
        .client()
        .get(app.url(&export))
        .bearer_auth(&worker)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn the_python_example_worker_runs_a_job() {
    let app = spawn().await;
    let (alice, ws) = app.setup("Cluster lab", 100).await;
    let worker = worker_token(&app).await;
    let job = submit_align(&app, &alice, &ws).await;
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/remote_worker.py");
    // The command counts the lines of the input and writes them to an output file.
    let output = tokio::process::Command::new("python3")
        .arg(example)
        .args(["--url", &app.url("/graphql")])
        .args(["--tool", "align", "--worker", "example-1", "--max-jobs", "1"])
        .args(["--poll-seconds", "0.2", "--lease-seconds", "3"])
        .args([
            "--",
            "sh",
            "-c",
            "echo 'progress: 0.5 Counting'; sleep 1.5; \
             wc -l < \"$JOBGRAPH_INPUT_READS\" > outputs/lines.txt && echo '{\"lines\": 4}' > result.json",
        ])
        .env("JOBGRAPH_TOKEN", &worker)
        .output()
        .await
        .expect("python3 runs");
    assert!(
        output.status.success(),
        "the example failed: {}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    let done = app
        .wait_final(&alice.token, &job, Duration::from_secs(10))
        .await;
    assert_eq!(done["status"], "COMPLETED", "{done}");
    assert_eq!(done["result"], json!({ "lines": 4 }));
    let stages: Vec<&str> = done["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["stage"].as_str())
        .collect();
    assert!(stages.contains(&"Counting"), "{done}");
    // The heartbeat thread kept the 3-second lease alive through the run.
    let id = ids::decode::<entity::ids::JobId>("id", &job).unwrap();
    let row = entity::job::Entity::find_by_id(id)
        .one(&app.db)
        .await
        .unwrap()
        .unwrap();
    assert!(row.heartbeat_at > row.started_at, "{row:?}");
    let data = app
        .ok(
            Some(&alice.token),
            "query($id: ID!) { job(id: $id) { files(role: OUTPUT) { name downloadUrl } } }",
            json!({ "id": job }),
        )
        .await;
    let file = &data["job"]["files"][0];
    assert_eq!(file["name"], "lines.txt");
    let text = app
        .client()
        .get(file["downloadUrl"].as_str().unwrap())
        .bearer_auth(&alice.token)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(text.trim(), "4");
}
