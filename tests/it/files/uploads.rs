//! Uploads: stored, checked, priced and downloadable; refused ones leave nothing behind;
//! downloads under the jobs' access rules.

use std::time::Duration;

use reqwest::StatusCode;
use reqwest::multipart::Form;
use serde_json::{Value, json};

use super::*;

#[tokio::test]
async fn an_uploaded_input_is_stored_checked_priced_and_downloadable() {
    let app = spawn().await;
    let (alice, ws) = app.setup("Files lab", 100).await;
    let (status, body) = upload(
        &app,
        Some(&alice.token),
        &submit_upload_query("sequence-stats", "sequences"),
        json!({ "ws": ws }),
        "reads.fa",
        FASTA.as_bytes().to_vec(),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(body["errors"].is_null(), "{body}");
    let job = &body["data"]["submitJob"]["job"];
    // Base 1, plus 1 per started thousand residues: the 8 residues were counted on the way in.
    assert_eq!(job["creditCost"], 2);
    assert_eq!(job["inputs"][0]["kind"], "FILE");
    let file = &job["inputs"][0]["file"];
    assert_eq!(file["name"], "reads.fa");
    assert_eq!(file["size"], FASTA.len());
    assert_eq!(file["role"], "INPUT");
    assert_eq!(file["contentType"], "text/x-fasta");
    assert_eq!(file["sha256"], sha256_hex(FASTA.as_bytes()));
    assert_eq!(job["files"][0]["id"], file["id"]);
    let data = app
        .ok(
            Some(&alice.token),
            "query($id: ID!) { job(id: $id) { exportJson } }",
            json!({ "id": job["id"] }),
        )
        .await;
    let exported = &data["job"]["exportJson"]["inputs"]["sequences"];
    assert_eq!(exported["kind"], "FILE");
    assert_eq!(exported["fileId"], file["id"]);

    let url = file["downloadUrl"].as_str().unwrap();
    let response = download(&app, Some(&alice.token), url, None).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["content-type"], "text/x-fasta");
    assert_eq!(
        response.headers()["content-disposition"],
        "attachment; filename=\"reads.fa\"; filename*=UTF-8''reads.fa"
    );
    assert_eq!(response.headers()["accept-ranges"], "bytes");
    assert_eq!(response.text().await.unwrap(), FASTA);
    let response = download(&app, Some(&alice.token), url, Some("bytes=1-3")).await;
    assert_eq!(response.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(
        response.headers()["content-range"],
        format!("bytes 1-3/{}", FASTA.len()).as_str()
    );
    assert_eq!(response.text().await.unwrap(), &FASTA[1..4]);
    let response = download(&app, Some(&alice.token), url, Some("bytes=9999-")).await;
    assert_eq!(response.status(), StatusCode::RANGE_NOT_SATISFIABLE);

    // The built-in analysis reads the stored file and writes a table of the sequences.
    let id = job["id"].as_str().unwrap();
    let done = app
        .wait_final(&alice.token, id, Duration::from_secs(20))
        .await;
    assert_eq!(done["status"], "COMPLETED", "{done}");
    assert_eq!(done["result"]["count"], 2);
    let job = job_files(&app, &alice.token, id).await;
    let outputs: Vec<&Value> = job["files"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["role"] == "OUTPUT")
        .collect();
    assert_eq!(outputs.len(), 1, "{job}");
    assert_eq!(outputs[0]["name"], "sequences.tsv");
    assert_eq!(outputs[0]["contentType"], "text/tab-separated-values");
    let response = download(
        &app,
        Some(&alice.token),
        outputs[0]["downloadUrl"].as_str().unwrap(),
        None,
    )
    .await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response.text().await.unwrap(),
        "id\tlength\tgc_content\ns1\t4\t1.0\ns2\t4\t0.0\n"
    );
    assert_eq!(stored(&app, &ws).await.len(), 2);
}

#[tokio::test]
async fn a_job_takes_several_uploaded_files() {
    let app = spawn().await;
    let (alice, ws) = app.setup("Files lab", 100).await;
    let left = vec![b'l'; 1500];
    let right = b"right\n".to_vec();
    let (_, body) = upload_many(
        &app,
        Some(&alice.token),
        &format!("mutation($ws: ID!, $a: Upload!, $b: Upload!) {{ submitJob(input: {{workspaceId: $ws, tool: \"join\",
           inputs: [{{name: \"left\", file: $a}}, {{name: \"right\", file: $b}}]}}) {{ job {{ id creditCost files(role: INPUT) {{ {FILE_FIELDS} }} }} }} }}"),
        json!({ "ws": ws }),
        vec![("a", "left.txt", left.clone()), ("b", "right.txt", right.clone())],
    )
    .await;
    assert!(body["errors"].is_null(), "{body}");
    let job = &body["data"]["submitJob"]["job"];
    // Base 1, plus 1 per started kilobyte of both files (1506 bytes).
    assert_eq!(job["creditCost"], 3);
    let names: Vec<&str> = job["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["name"].as_str().unwrap())
        .collect();
    assert_eq!(names.len(), 2);
    assert!(
        names.contains(&"left.txt") && names.contains(&"right.txt"),
        "{names:?}"
    );
    let id = job["id"].as_str().unwrap();
    let done = app
        .wait_final(&alice.token, id, Duration::from_secs(20))
        .await;
    assert_eq!(done["status"], "COMPLETED", "{done}");
    let job = job_files(&app, &alice.token, id).await;
    let joined = job["files"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["name"] == "joined.txt")
        .unwrap_or_else(|| panic!("{job}"))
        .clone();
    let response = download(
        &app,
        Some(&alice.token),
        joined["downloadUrl"].as_str().unwrap(),
        None,
    )
    .await;
    let mut expected = left;
    expected.extend_from_slice(&right);
    assert_eq!(response.bytes().await.unwrap().to_vec(), expected);
}

#[tokio::test]
async fn a_multipart_request_needs_a_header_that_forms_cannot_send() {
    let app = spawn_with(|config| config.server.workers = 0).await;
    let query = "mutation { createWorkspace(input: {name: \"csrf\"}) { workspace { id } } }";
    let form = || {
        Form::new()
            .text("operations", json!({ "query": query }).to_string())
            .text("map", "{}")
    };
    let response = app
        .client()
        .post(app.url("/graphql"))
        .multipart(form())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let body: Value = response.json().await.unwrap();
    assert!(
        body["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("Apollo-Require-Preflight"),
        "{body}"
    );
    // With a preflight header the request is served (and, anonymous, refused by the resolver).
    let response = app
        .client()
        .post(app.url("/graphql"))
        .header("apollo-require-preflight", "true")
        .multipart(form())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["errors"][0]["extensions"]["code"], "UNAUTHENTICATED");
}

#[tokio::test]
async fn refused_uploads_leave_no_file_behind() {
    let app = spawn_with(|config| config.server.workers = 0).await;
    let (alice, ws) = app.setup("Files lab", 100).await;
    let poor = app.workspace(&alice, "No credits").await;
    let bad = |field: &str, body: &Value| {
        assert_eq!(
            body["errors"][0]["extensions"]["code"], "BAD_USER_INPUT",
            "{body}"
        );
        assert_eq!(body["errors"][0]["extensions"]["field"], field, "{body}");
    };
    // Not FASTA.
    let (_, body) = upload(
        &app,
        Some(&alice.token),
        &submit_upload_query("sequence-stats", "sequences"),
        json!({ "ws": ws }),
        "notes.fa",
        b"hello\n".to_vec(),
    )
    .await;
    bad("inputs.sequences", &body);
    // Over the tool's limit for the input (2048 bytes).
    let (_, body) = upload(
        &app,
        Some(&alice.token),
        &submit_upload_query("report", "data"),
        json!({ "ws": ws }),
        "big.txt",
        vec![b'x'; 4096],
    )
    .await;
    bad("inputs.data", &body);
    assert!(
        body["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("2048"),
        "{body}"
    );
    // A file for a text input.
    let (_, body) = upload(
        &app,
        Some(&alice.token),
        &submit_upload_query("report", "label"),
        json!({ "ws": ws }),
        "label.txt",
        b"x".to_vec(),
    )
    .await;
    bad("inputs.label", &body);
    // Stored, then refused for want of credits.
    let (_, body) = upload(
        &app,
        Some(&alice.token),
        &submit_upload_query("sequence-stats", "sequences"),
        json!({ "ws": poor }),
        "reads.fa",
        FASTA.as_bytes().to_vec(),
    )
    .await;
    assert_eq!(
        body["errors"][0]["extensions"]["code"], "INSUFFICIENT_CREDITS",
        "{body}"
    );
    // Over the server's upload limit (64 KiB): refused while it arrives.
    let (status, body) = upload(
        &app,
        Some(&alice.token),
        &submit_upload_query("sequence-stats", "sequences"),
        json!({ "ws": ws }),
        "huge.fa",
        format!(">a\n{}\n", "A".repeat(100 * 1024)).into_bytes(),
    )
    .await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(body["errors"][0]["extensions"]["code"], "PAYLOAD_TOO_LARGE");
    // More files than the server takes in one request (2).
    let (status, body) = upload_many(
        &app,
        Some(&alice.token),
        "mutation($ws: ID!, $a: Upload!, $b: Upload!, $c: Upload!) { submitJob(input: {workspaceId: $ws,
           tool: \"join\", inputs: [{name: \"left\", file: $a}, {name: \"right\", file: $b}, {name: \"x\", file: $c}]}) { job { id } } }",
        json!({ "ws": ws }),
        vec![("a", "a", b"a".to_vec()), ("b", "b", b"b".to_vec()), ("c", "c", b"c".to_vec())],
    )
    .await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{body}");
    assert_eq!(stored(&app, &ws).await, Vec::<String>::new());
    assert_eq!(stored(&app, &poor).await, Vec::<String>::new());
    assert_eq!(file_rows(&app).await, 0);
    assert_eq!(app.balance(&ws).await, 100);
}

#[tokio::test]
async fn outsiders_cannot_download_and_public_job_files_need_no_token() {
    let app = spawn_with(|config| config.server.workers = 0).await;
    let (alice, ws) = app.setup("Files lab", 100).await;
    let mallory = app.user("mallory@else.test").await;
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
    let url = job["files"][0]["downloadUrl"].as_str().unwrap();
    for token in [Some(mallory.token.as_str()), None] {
        let response = download(&app, token, url, None).await;
        assert_eq!(response.status(), StatusCode::NOT_FOUND);
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["errors"][0]["extensions"]["code"], "NOT_FOUND");
    }
    let response = download(&app, Some("jg_wrong"), url, None).await;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    app.ok(
        Some(&alice.token),
        "mutation($id: ID!) { setJobSharing(input: {jobId: $id, visibility: PUBLIC}) { job { id } } }",
        json!({ "id": job["id"] }),
    )
    .await;
    let response = download(&app, None, url, None).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.text().await.unwrap(), FASTA);
    let response = download(&app, None, &app.url("/files/file_nonsense"), None).await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
}
