//! Output files of command tools; only completed runs keep them; deleting a job or a
//! workspace deletes its files.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};

use super::*;
use crate::support::{WAIT, eventually};

#[tokio::test]
async fn a_command_tool_s_output_files_are_stored_with_the_right_bytes() {
    let app = spawn().await;
    let (alice, ws) = app.setup("Files lab", 100).await;
    let data = b"one\ntwo\nthree\n".to_vec();
    let (_, body) = upload(
        &app,
        Some(&alice.token),
        &submit_upload_query("report", "data"),
        json!({ "ws": ws }),
        "lines.txt",
        data.clone(),
    )
    .await;
    assert!(body["errors"].is_null(), "{body}");
    let id = body["data"]["submitJob"]["job"]["id"].as_str().unwrap();
    let done = app
        .wait_final(&alice.token, id, Duration::from_secs(20))
        .await;
    assert_eq!(done["status"], "COMPLETED", "{done}");
    // The structured result stays, listing the outputs.
    assert_eq!(done["result"]["ok"], true);
    assert_eq!(
        done["result"]["outputFiles"],
        json!([{"name": "copy.bin", "bytes": data.len()}, {"name": "report.txt", "bytes": 9}])
    );
    let job = job_files(&app, &alice.token, id).await;
    let files = job["files"].as_array().unwrap();
    let output = |name: &str| {
        files
            .iter()
            .find(|f| f["name"] == name && f["role"] == "OUTPUT")
            .unwrap_or_else(|| panic!("no output {name}: {job}"))
            .clone()
    };
    let report = output("report.txt");
    assert_eq!(report["contentType"], "text/plain");
    let response = download(
        &app,
        Some(&alice.token),
        report["downloadUrl"].as_str().unwrap(),
        None,
    )
    .await;
    assert_eq!(response.text().await.unwrap(), "lines: 3\n");
    let copy = output("copy.bin");
    assert_eq!(copy["sha256"], sha256_hex(&data));
    assert_eq!(copy["contentType"], "application/octet-stream");
    let response = download(
        &app,
        Some(&alice.token),
        copy["downloadUrl"].as_str().unwrap(),
        None,
    )
    .await;
    assert_eq!(response.bytes().await.unwrap().to_vec(), data);
}

#[tokio::test]
async fn failed_and_cancelled_runs_leave_no_output_files() {
    let app = spawn().await;
    let (alice, ws) = app.setup("Files lab", 100).await;
    let submit = |settings: Value| {
        let app = &app;
        let alice = &alice;
        let ws = ws.clone();
        async move {
            let (_, body) = upload(
                app,
                Some(&alice.token),
                &submit_upload_query("report", "data"),
                json!({ "ws": ws, "settings": settings }),
                "lines.txt",
                b"a\nb\n".to_vec(),
            )
            .await;
            assert!(body["errors"].is_null(), "{body}");
            body["data"]["submitJob"]["job"]["id"]
                .as_str()
                .unwrap()
                .to_owned()
        }
    };
    // The program writes its outputs, then fails.
    let failed = submit(json!({ "exit": 3 })).await;
    let done = app
        .wait_final(&alice.token, &failed, Duration::from_secs(20))
        .await;
    assert_eq!(done["status"], "FAILED", "{done}");
    // The program writes its outputs, then is cancelled while it sleeps.
    let cancelled = submit(json!({ "sleep": 30 })).await;
    app.wait_for(&alice.token, &cancelled, Duration::from_secs(20), |job| {
        job["stage"] == "Writing"
    })
    .await;
    app.ok(
        Some(&alice.token),
        "mutation($id: ID!) { cancelJob(input: {jobId: $id}) { job { status } } }",
        json!({ "id": cancelled }),
    )
    .await;
    app.wait_final(&alice.token, &cancelled, Duration::from_secs(20))
        .await;
    // A stopped attempt cleans up after itself once its job has ended: only the two inputs
    // stay stored.
    eventually(
        WAIT,
        "the outputs of the stopped attempts are deleted",
        || async {
            let keys = stored(&app, &ws).await;
            if keys.len() == 2 && keys.iter().all(|k| k.contains("/inputs/")) {
                Ok(())
            } else {
                Err(keys)
            }
        },
    )
    .await;
    for id in [&failed, &cancelled] {
        let job = job_files(&app, &alice.token, id).await;
        let roles: Vec<&str> = job["files"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f["role"].as_str().unwrap())
            .collect();
        assert_eq!(roles, ["INPUT"], "{job}");
    }
}

#[tokio::test]
async fn deleting_a_job_removes_its_files_and_a_duplicate_keeps_its_own_copy() {
    let app = spawn().await;
    let (alice, ws) = app.setup("Files lab", 100).await;
    let id = finished_upload(&app, &alice, &ws).await;
    let data = app
        .ok(
            Some(&alice.token),
            &format!("mutation($id: ID!) {{ duplicateJob(input: {{jobId: $id}}) {{ job {{ id creditCost changesFromParent {{ name }} inputs {{ kind file {{ {FILE_FIELDS} }} }} }} }} }}"),
            json!({ "id": id }),
        )
        .await;
    let copy = &data["duplicateJob"]["job"];
    assert_eq!(
        copy["creditCost"], 2,
        "the copy is priced on the same residues"
    );
    assert_eq!(
        copy["changesFromParent"],
        json!([]),
        "the same content: {copy}"
    );
    let copied = &copy["inputs"][0]["file"];
    assert_eq!(copied["sha256"], sha256_hex(FASTA.as_bytes()));
    let job = job_files(&app, &alice.token, &id).await;
    assert_ne!(copied["id"], job["files"][0]["id"]);
    let urls: Vec<String> = job["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["downloadUrl"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(urls.len(), 2, "input and output: {job}");
    let copy_id = copy["id"].as_str().unwrap().to_owned();
    app.wait_final(&alice.token, &copy_id, Duration::from_secs(20))
        .await;
    let before = stored(&app, &ws).await.len();
    assert_eq!(before, 4);

    app.ok(
        Some(&alice.token),
        "mutation($id: ID!) { deleteJob(input: {jobId: $id}) { deletedJobId } }",
        json!({ "id": id }),
    )
    .await;
    for url in &urls {
        let response = download(&app, Some(&alice.token), url, None).await;
        assert_eq!(response.status(), StatusCode::NOT_FOUND);
    }
    let job_id = ids::decode::<entity::ids::JobId>("id", &id).unwrap();
    let ws_id = ids::decode::<entity::ids::WorkspaceId>("ws", &ws).unwrap();
    let left = app
        .state
        .files
        .storage
        .list(&jobgraph::files::job_prefix(ws_id, job_id))
        .await
        .unwrap();
    assert_eq!(left, Vec::<String>::new());
    assert_eq!(stored(&app, &ws).await.len(), 2);
    let response = download(
        &app,
        Some(&alice.token),
        copied["downloadUrl"].as_str().unwrap(),
        None,
    )
    .await;
    assert_eq!(response.text().await.unwrap(), FASTA);
}

#[tokio::test]
async fn deleting_a_workspace_removes_its_files_and_files_are_nodes() {
    let app = spawn_with(|config| config.server.workers = 0).await;
    let (alice, ws) = app.setup("Files lab", 100).await;
    let (_, body) = upload(
        &app,
        Some(&alice.token),
        &submit_upload_query("sequence-stats", "sequences"),
        json!({ "ws": ws }),
        "reads.fa",
        FASTA.as_bytes().to_vec(),
    )
    .await;
    let job = &body["data"]["submitJob"]["job"];
    let file_id = job["files"][0]["id"].as_str().unwrap();
    let query = "query($id: ID!) { node(id: $id) { id ... on File { name size } } }";
    let data = app
        .ok(Some(&alice.token), query, json!({ "id": file_id }))
        .await;
    assert_eq!(data["node"]["name"], "reads.fa");
    let outsider = app.user("out@else.test").await;
    assert_eq!(
        app.error_code(Some(&outsider.token), query, json!({ "id": file_id }))
            .await,
        "NOT_FOUND"
    );
    assert_eq!(stored(&app, &ws).await.len(), 1);
    app.ok(
        Some(&alice.token),
        "mutation($id: ID!) { cancelJob(input: {jobId: $id}) { job { status } } }",
        json!({ "id": job["id"] }),
    )
    .await;
    app.ok(
        Some(&alice.token),
        "mutation($ws: ID!) { deleteWorkspace(input: {workspaceId: $ws}) { deletedWorkspaceId } }",
        json!({ "ws": ws }),
    )
    .await;
    assert_eq!(stored(&app, &ws).await, Vec::<String>::new());
    assert_eq!(file_rows(&app).await, 0);
}

/// A duplicate (or retry) copies its original's stored inputs before its transaction; if they
/// go meanwhile (their job or workspace deleted), it answers NOT_FOUND, never an internal
/// error, and leaves nothing stored.
#[tokio::test]
async fn copying_inputs_that_are_no_longer_stored_is_not_found_and_stores_nothing() {
    let app = spawn().await;
    let (alice, ws) = app.setup("Files lab", 100).await;
    let id = finished_upload(&app, &alice, &ws).await;
    for key in stored(&app, &ws).await {
        app.state.files.storage.delete(&key).await.unwrap();
    }
    let balance = app.balance(&ws).await;
    let code = app
        .error_code(
            Some(&alice.token),
            "mutation($id: ID!) { duplicateJob(input: {jobId: $id}) { job { id } } }",
            json!({ "id": id }),
        )
        .await;
    assert_eq!(code, "NOT_FOUND");
    assert_eq!(stored(&app, &ws).await, Vec::<String>::new());
    assert_eq!(app.balance(&ws).await, balance, "nothing charged");
}

/// A finished job of `sequence-stats` on an uploaded FASTA file; returns its id.
async fn finished_upload(app: &TestApp, user: &TestUser, ws: &str) -> String {
    let (_, body) = upload(
        app,
        Some(&user.token),
        &submit_upload_query("sequence-stats", "sequences"),
        json!({ "ws": ws }),
        "reads.fa",
        FASTA.as_bytes().to_vec(),
    )
    .await;
    let id = body["data"]["submitJob"]["job"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    app.wait_final(&user.token, &id, Duration::from_secs(20))
        .await;
    id
}
