//! Reusing results: a job submitted with `reuse` that computes what an earlier COMPLETED job of
//! its workspace computed completes at once with that job's result and copies of its output
//! files, uncharged; anything else runs.

use std::time::Duration;

use entity::credit_transaction;
use entity::ids::{JobId, WorkspaceId};
use entity::live_event::LiveKind;
use jobgraph::ids::{self};
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QueryOrder};
use serde_json::{Value, json};

use crate::support::{TestApp, TestUser, fasta};

/// What these tests read of a job.
const FIELDS: &str = "id status creditCost progress result startedAt finishedAt
  reusedFrom { id } timeline { status message progress }
  files(role: OUTPUT) { name size sha256 downloadUrl }";

const SUBMIT: &str = "mutation($input: SubmitJobInput!) { submitJob(input: $input) { replayed job {
  id status creditCost progress result startedAt finishedAt
  reusedFrom { id } timeline { status message progress }
  files(role: OUTPUT) { name size sha256 downloadUrl } } } }";

/// A server whose worker runs the built-in tools, which store output files.
async fn spawn() -> TestApp {
    TestApp::spawn_with(|config| config.server.workers = 1).await
}

/// A k-mer count of `residues` residues with `k`, as the rest of a `SubmitJobInput`.
fn kmers(residues: usize, k: i64) -> Value {
    json!({
        "tool": "kmer-count",
        "inputs": [{"name": "sequences", "text": fasta(residues)}],
        "settings": {"k": k},
    })
}

/// Submits `input` to `ws` as `user`, with `reuse`; returns the payload's job.
async fn submit(app: &TestApp, user: &TestUser, ws: &str, input: &Value, reuse: bool) -> Value {
    let mut input = input.clone();
    input["workspaceId"] = json!(ws);
    input["reuse"] = json!(reuse);
    let data = app
        .ok(Some(&user.token), SUBMIT, json!({ "input": input }))
        .await;
    data["submitJob"]["job"].clone()
}

/// Submits `input` without reuse and waits until it completes; returns the job.
async fn completed(app: &TestApp, user: &TestUser, ws: &str, input: &Value) -> Value {
    let id = submit(app, user, ws, input, false).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let done = app
        .wait_final(&user.token, &id, Duration::from_secs(20))
        .await;
    assert_eq!(done["status"], "COMPLETED", "{done}");
    read(app, user, &id).await
}

async fn read(app: &TestApp, user: &TestUser, id: &str) -> Value {
    app.ok(
        Some(&user.token),
        &format!("query($id: ID!) {{ job(id: $id) {{ {FIELDS} }} }}"),
        json!({ "id": id }),
    )
    .await["job"]
        .clone()
}

/// The bytes of a stored file, downloaded as `user`.
async fn download(app: &TestApp, user: &TestUser, file: &Value) -> Vec<u8> {
    let response = app
        .client()
        .get(file["downloadUrl"].as_str().unwrap())
        .bearer_auth(&user.token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "{file}");
    response.bytes().await.unwrap().to_vec()
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}

/// The ledger entries of a job.
async fn ledger_of(app: &TestApp, id: &str) -> Vec<credit_transaction::Model> {
    let id = ids::decode::<JobId>("id", id).unwrap();
    credit_transaction::Entity::find()
        .filter(credit_transaction::Column::JobId.eq(id))
        .all(&app.db)
        .await
        .unwrap()
}

/// Asserts that `job` was not reused: it runs, charged. (A worker may have claimed it before
/// the answer was read.)
fn runs(job: &Value) {
    assert!(
        ["QUEUED", "PROCESSING", "COMPLETED"].contains(&job["status"].as_str().unwrap_or_default()),
        "{job}"
    );
    assert!(job["creditCost"].as_i64().unwrap() > 0, "{job}");
    assert_eq!(job["reusedFrom"], Value::Null, "{job}");
}

#[tokio::test]
async fn a_job_that_computes_what_a_completed_job_computed_reuses_its_results_uncharged() {
    let app = spawn().await;
    let (alice, ws) = app.setup("lab", 100).await;
    let original = completed(&app, &alice, &ws, &kmers(300, 3)).await;
    let outputs = original["files"].as_array().unwrap().clone();
    assert_eq!(outputs.len(), 1, "{original}");
    let balance = app.balance(&ws).await;

    let reused = submit(&app, &alice, &ws, &kmers(300, 3), true).await;
    assert_eq!(reused["status"], "COMPLETED", "{reused}");
    assert_eq!(reused["creditCost"], 0);
    assert_eq!(reused["progress"], 1.0);
    assert_eq!(reused["reusedFrom"]["id"], original["id"]);
    assert_eq!(reused["result"], original["result"]);
    assert!(reused["startedAt"].is_string() && reused["finishedAt"].is_string());
    let message = format!("reused the results of {}", original["id"].as_str().unwrap());
    assert_eq!(
        reused["timeline"],
        json!([
            {"status": "COMPLETED", "message": message, "progress": 1.0},
        ])
    );
    // Nothing charged: the balance, which equals the ledger's sum, is as it was.
    assert_eq!(app.balance(&ws).await, balance);
    assert!(
        ledger_of(&app, reused["id"].as_str().unwrap())
            .await
            .is_empty()
    );
    // The outputs are copies, with the same names and bytes.
    let copies = reused["files"].as_array().unwrap();
    assert_eq!(copies.len(), outputs.len());
    for (copy, output) in copies.iter().zip(&outputs) {
        assert_eq!(copy["name"], output["name"]);
        assert_eq!(copy["sha256"], output["sha256"]);
        assert_ne!(copy["downloadUrl"], output["downloadUrl"]);
        let bytes = download(&app, &alice, copy).await;
        assert_eq!(sha256_hex(&bytes), copy["sha256"].as_str().unwrap());
        assert_eq!(bytes, download(&app, &alice, output).await);
    }
    // Subscribers learn of it as of any job: created, here COMPLETED.
    let reused_id = ids::decode::<JobId>("id", reused["id"].as_str().unwrap()).unwrap();
    let entries = entity::live_event::Entity::find()
        .filter(entity::live_event::Column::JobId.eq(reused_id))
        .order_by_asc(entity::live_event::Column::Id)
        .all(&app.db)
        .await
        .unwrap();
    let kinds: Vec<_> = entries.iter().map(|e| (e.kind, e.status)).collect();
    assert_eq!(
        kinds,
        [(LiveKind::Created, Some(entity::job::JobStatus::Completed)),]
    );

    // Deleting the original leaves the reused job's outputs whole.
    app.ok(
        Some(&alice.token),
        "mutation($id: ID!) { deleteJob(input: {jobId: $id}) { deletedJobId } }",
        json!({ "id": original["id"] }),
    )
    .await;
    let after = read(&app, &alice, reused["id"].as_str().unwrap()).await;
    assert_eq!(after["reusedFrom"], Value::Null, "the original is gone");
    assert_eq!(after["result"], original["result"]);
    for (copy, output) in after["files"].as_array().unwrap().iter().zip(&outputs) {
        let bytes = download(&app, &alice, copy).await;
        assert_eq!(sha256_hex(&bytes), output["sha256"].as_str().unwrap());
    }
    // Once the original is gone, a job that reuses finds the reused one, the newest.
    let again = submit(&app, &alice, &ws, &kmers(300, 3), true).await;
    assert_eq!(again["status"], "COMPLETED");
    assert_eq!(again["reusedFrom"]["id"], reused["id"]);
    assert_eq!(app.balance(&ws).await, balance);
}

#[tokio::test]
async fn the_same_bytes_uploaded_twice_are_the_same_input() {
    let app = spawn().await;
    let (alice, ws) = app.setup("lab", 100).await;
    let query = |reuse: bool| {
        format!(
            "mutation($ws: ID!, $file: Upload!) {{ submitJob(input: {{workspaceId: $ws,
               tool: \"sequence-stats\", reuse: {reuse},
               inputs: [{{name: \"sequences\", file: $file}}]}}) {{ job {{ {FIELDS} }} }} }}"
        )
    };
    let bytes = fasta(2000).into_bytes();
    let (_, body) = crate::files::upload(
        &app,
        Some(&alice.token),
        &query(false),
        json!({ "ws": ws }),
        "first.fa",
        bytes.clone(),
    )
    .await;
    let id = body["data"]["submitJob"]["job"]["id"]
        .as_str()
        .unwrap_or_else(|| panic!("{body}"))
        .to_owned();
    let done = app
        .wait_final(&alice.token, &id, Duration::from_secs(20))
        .await;
    assert_eq!(done["status"], "COMPLETED", "{done}");
    let balance = app.balance(&ws).await;
    // The same content under another name is the same input.
    let (_, body) = crate::files::upload(
        &app,
        Some(&alice.token),
        &query(true),
        json!({ "ws": ws }),
        "second.fasta",
        bytes.clone(),
    )
    .await;
    let reused = &body["data"]["submitJob"]["job"];
    assert_eq!(reused["status"], "COMPLETED", "{body}");
    assert_eq!(reused["reusedFrom"]["id"], id);
    assert_eq!(reused["result"], done["result"]);
    assert_eq!(app.balance(&ws).await, balance);
    // Other bytes are not.
    let mut other = bytes;
    other.extend_from_slice(b">seq2\nACGT\n");
    let (_, body) = crate::files::upload(
        &app,
        Some(&alice.token),
        &query(true),
        json!({ "ws": ws }),
        "first.fa",
        other,
    )
    .await;
    let job = &body["data"]["submitJob"]["job"];
    assert_ne!(job["status"], "COMPLETED", "{body}");
    assert_eq!(job["reusedFrom"], Value::Null);
}

#[tokio::test]
async fn other_settings_other_inputs_an_unfinished_or_failed_original_and_no_reuse_run() {
    use entity::job::JobStatus;
    use jobgraph::jobs::lifecycle::Change;
    let app = TestApp::spawn().await;
    let (alice, ws) = app.setup("lab", 1000).await;
    // Without a worker, the original stays QUEUED: nothing to reuse yet.
    let original = submit(&app, &alice, &ws, &kmers(300, 3), true).await;
    runs(&original);
    let id = original["id"].as_str().unwrap();
    runs(&submit(&app, &alice, &ws, &kmers(300, 3), true).await);
    // Then it fails: a FAILED job's results are not reused.
    app.drive(id, JobStatus::Processing, Change::default())
        .await
        .unwrap();
    app.drive(id, JobStatus::Failed, Change::default())
        .await
        .unwrap();
    runs(&submit(&app, &alice, &ws, &kmers(300, 3), true).await);
    // A completed one is, but only for the same settings and inputs, and when asked.
    let twin = submit(&app, &alice, &ws, &kmers(300, 3), false).await;
    let twin_id = twin["id"].as_str().unwrap();
    app.drive(twin_id, JobStatus::Processing, Change::default())
        .await
        .unwrap();
    let result = json!({"kmers": [["AAA", 3]]});
    app.drive(
        twin_id,
        JobStatus::Completed,
        Change {
            result: Some(result.clone()),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    runs(&submit(&app, &alice, &ws, &kmers(300, 4), true).await);
    runs(&submit(&app, &alice, &ws, &kmers(301, 3), true).await);
    runs(&submit(&app, &alice, &ws, &kmers(300, 3), false).await);
    let reused = submit(&app, &alice, &ws, &kmers(300, 3), true).await;
    assert_eq!(reused["status"], "COMPLETED");
    assert_eq!(reused["reusedFrom"]["id"], twin_id);
    assert_eq!(reused["result"], result);
    app.balance(&ws).await;
}

#[tokio::test]
async fn a_job_of_another_workspace_is_never_reused_even_when_readable() {
    let app = spawn().await;
    let (alice, ws) = app.setup("lab", 100).await;
    let original = completed(&app, &alice, &ws, &kmers(300, 3)).await;
    // Shared with everyone, and its submitter owns the other workspace too.
    app.ok(
        Some(&alice.token),
        "mutation($id: ID!) { setJobSharing(input: {jobId: $id, visibility: PUBLIC}) { job { id } } }",
        json!({ "id": original["id"] }),
    )
    .await;
    let other = app.workspace(&alice, "elsewhere").await;
    app.grant(&other, 100).await;
    let job = submit(&app, &alice, &other, &kmers(300, 3), true).await;
    assert_eq!(job["reusedFrom"], Value::Null, "{job}");
    assert_ne!(job["creditCost"], 0);
}

#[tokio::test]
async fn only_jobs_the_viewer_may_read_are_found() {
    let app = TestApp::spawn().await;
    let (alice, ws) = app.setup("lab", 100).await;
    let original = submit(&app, &alice, &ws, &kmers(300, 3), false).await;
    let id = original["id"].as_str().unwrap();
    app.drive(id, entity::job::JobStatus::Processing, Default::default())
        .await
        .unwrap();
    app.drive(id, entity::job::JobStatus::Completed, Default::default())
        .await
        .unwrap();
    let job_id = ids::decode::<JobId>("id", id).unwrap();
    let ws_id = ids::decode::<WorkspaceId>("ws", &ws).unwrap();
    let key = entity::job::Entity::find_by_id(job_id)
        .one(&app.db)
        .await
        .unwrap()
        .unwrap()
        .reuse_key
        .expect("every job keeps its key");
    // Someone outside the workspace reads none of its jobs, unless shared with them.
    let bob = app.user("bob@elsewhere.test").await;
    let bob_id = ids::decode::<entity::ids::UserId>("id", &bob.id).unwrap();
    let bob_viewer = jobgraph::access::Viewer::User {
        user: entity::user::Entity::find_by_id(bob_id)
            .one(&app.db)
            .await
            .unwrap()
            .unwrap(),
        via: jobgraph::access::Credential::Session {
            expires_at: chrono::Utc::now() + chrono::Duration::hours(1),
        },
    };
    let standing = jobgraph::access::JobStanding {
        workspace: jobgraph::access::standing(&app.db, &bob_viewer, ws_id)
            .await
            .unwrap(),
        viewer_id: Some(bob_id),
    };
    let find = || jobgraph::jobs::reuse::find(&app.db, &bob_viewer, standing, ws_id, &key);
    assert_eq!(find().await.unwrap(), None);
    app.ok(
        Some(&alice.token),
        "mutation($id: ID!) { setJobSharing(input: {jobId: $id, visibility: LOGGED_IN}) { job { id } } }",
        json!({ "id": id }),
    )
    .await;
    assert_eq!(find().await.unwrap().map(|job| job.id), Some(job_id));
    // A workspace viewer reads it, but may not submit: nothing is reused, nothing written.
    let carol = app.user("carol@lab.test").await;
    app.add_member(&alice, &ws, &carol, "VIEWER").await;
    let mut input = kmers(300, 3);
    input["workspaceId"] = json!(ws);
    input["reuse"] = json!(true);
    let code = app
        .error_code(Some(&carol.token), SUBMIT, json!({ "input": input }))
        .await;
    assert_eq!(code, "FORBIDDEN");
}

#[tokio::test]
async fn a_repeated_idempotency_key_answers_the_reused_job_and_reuse_is_part_of_the_request() {
    let app = spawn().await;
    let (alice, ws) = app.setup("lab", 100).await;
    let original = completed(&app, &alice, &ws, &kmers(300, 3)).await;
    let mut input = kmers(300, 3);
    input["idempotencyKey"] = json!("once");
    let first = submit(&app, &alice, &ws, &input, true).await;
    assert_eq!(first["reusedFrom"]["id"], original["id"]);
    input["workspaceId"] = json!(ws);
    input["reuse"] = json!(true);
    let data = app
        .ok(Some(&alice.token), SUBMIT, json!({ "input": input }))
        .await;
    assert_eq!(data["submitJob"]["replayed"], true);
    assert_eq!(data["submitJob"]["job"]["id"], first["id"]);
    input["reuse"] = json!(false);
    let code = app
        .error_code(Some(&alice.token), SUBMIT, json!({ "input": input }))
        .await;
    assert_eq!(code, "IDEMPOTENCY_KEY_REUSED");
}

#[tokio::test]
async fn max_credits_limits_the_jobs_that_run_not_those_that_reuse() {
    let app = spawn().await;
    let (alice, ws) = app.setup("lab", 100).await;
    let original = completed(&app, &alice, &ws, &kmers(300, 3)).await;
    let mut input = kmers(300, 3);
    input["maxCredits"] = json!(0);
    let reused = submit(&app, &alice, &ws, &input, true).await;
    assert_eq!(reused["reusedFrom"]["id"], original["id"]);
    let mut other = kmers(300, 5);
    other["workspaceId"] = json!(ws);
    other["maxCredits"] = json!(0);
    other["reuse"] = json!(true);
    let code = app
        .error_code(Some(&alice.token), SUBMIT, json!({ "input": other }))
        .await;
    assert_eq!(code, "BAD_USER_INPUT");
}

#[tokio::test]
async fn a_batch_reuses_the_results_of_each_job_it_can_and_charges_the_rest() {
    let app = spawn().await;
    let (alice, ws) = app.setup("lab", 100).await;
    let original = completed(&app, &alice, &ws, &kmers(300, 3)).await;
    let balance = app.balance(&ws).await;
    let data = app
        .ok(
            Some(&alice.token),
            "mutation($ws: ID!, $jobs: [BatchJobInput!]!) {
               submitBatch(input: {workspaceId: $ws, jobs: $jobs, reuse: true}) {
                 batch { totalCost } jobs { status creditCost reusedFrom { id } } } }",
            json!({ "ws": ws, "jobs": [kmers(300, 3), kmers(300, 4)] }),
        )
        .await;
    let jobs = &data["submitBatch"]["jobs"];
    assert_eq!(jobs[0]["status"], "COMPLETED");
    assert_eq!(jobs[0]["creditCost"], 0);
    assert_eq!(jobs[0]["reusedFrom"]["id"], original["id"]);
    assert_eq!(jobs[1]["reusedFrom"], Value::Null);
    let charged = jobs[1]["creditCost"].as_i64().unwrap();
    assert!(charged > 0);
    assert_eq!(data["submitBatch"]["batch"]["totalCost"], charged);
    assert_eq!(app.balance(&ws).await, balance - charged);
}

/// The lookup reads the reuse index, which holds the COMPLETED jobs only (a job adds no entry
/// to it when it is submitted or claimed), not the workspace's jobs.
#[tokio::test]
async fn the_lookup_reads_one_range_of_the_reuse_index() {
    use sea_orm::{ConnectionTrait as _, QuerySelect as _, QueryTrait as _};
    let app = TestApp::spawn().await;
    let (alice, ws) = app.setup("lab", 10_000).await;
    let jobs: Vec<_> = (0..500)
        .map(|i| json!({"tool": "sleep", "settings": {"seconds": i % 10}}))
        .collect();
    for _ in 0..2 {
        app.submit_batch(&alice, &ws, &jobs).await;
    }
    app.db.execute_unprepared("ANALYZE").await.unwrap();
    let ws = ids::decode::<WorkspaceId>("ws", &ws).unwrap();
    let select = jobgraph::jobs::reuse::candidates(ws, &"0".repeat(64)).limit(20);
    let backend = app.db.get_database_backend();
    let plan = crate::support::plan(&app.db, backend.build(&select.into_query())).await;
    assert!(plan.contains("idx_jobs_reuse"), "{plan}");
    assert!(!plan.contains("Seq Scan"), "{plan}");
}

#[tokio::test]
async fn a_fetched_url_input_is_matched_by_its_content_once_fetched() {
    use axum::routing::get;
    let content = fasta(500);
    let served = content.clone();
    let router = axum::Router::new().route("/seqs.fa", get(move || async move { served }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/seqs.fa", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, router).await });
    let app = TestApp::spawn_with(|config| {
        config.server.workers = 1;
        config.server.fetch_allow = vec!["127.0.0.1".to_owned()];
    })
    .await;
    let (alice, ws) = app.setup("lab", 100).await;
    let by_url = json!({"tool": "sequence-stats", "inputs": [{"name": "sequences", "url": url}]});
    let fetched = submit(&app, &alice, &ws, &by_url, true).await;
    assert_eq!(fetched["status"], "PENDING", "{fetched}");
    let id = fetched["id"].as_str().unwrap();
    let done = app
        .wait_final(&alice.token, id, Duration::from_secs(20))
        .await;
    assert_eq!(done["status"], "COMPLETED", "{done}");
    // A URL's content is unknown at submission: the same URL again is fetched and run.
    let again = submit(&app, &alice, &ws, &by_url, true).await;
    assert_eq!(again["status"], "PENDING", "{again}");
    assert_eq!(again["reusedFrom"], Value::Null);
    // The same content pasted is another input (a text); uploaded, it is the fetched file.
    let pasted =
        json!({"tool": "sequence-stats", "inputs": [{"name": "sequences", "text": content}]});
    runs(&submit(&app, &alice, &ws, &pasted, true).await);
    let (_, body) = crate::files::upload(
        &app,
        Some(&alice.token),
        &format!(
            "mutation($ws: ID!, $file: Upload!) {{ submitJob(input: {{workspaceId: $ws,
               tool: \"sequence-stats\", reuse: true,
               inputs: [{{name: \"sequences\", file: $file}}]}}) {{ job {{ {FIELDS} }} }} }}"
        ),
        json!({ "ws": ws }),
        "local.fa",
        content.into_bytes(),
    )
    .await;
    let uploaded = &body["data"]["submitJob"]["job"];
    assert_eq!(uploaded["status"], "COMPLETED", "{body}");
    // The newest match: the first fetch, or the second once it has completed too.
    let from = &uploaded["reusedFrom"]["id"];
    assert!(from == id || *from == again["id"], "{body}");
}
