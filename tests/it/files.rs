//! Files: inputs uploaded (GraphQL multipart requests) or fetched from URLs, output files of
//! built-in and command tools, downloads under the jobs' access rules, and cleanup after
//! delete, cancel, failure and refused submissions. Storage is the local folder, or S3 when
//! `TEST_S3_ENDPOINT` is set (see `support`).

use std::net::SocketAddr;
use std::time::Duration;

use jobgraph::ids::{self, Kind};
use reqwest::StatusCode;
use reqwest::multipart::{Form, Part};
use sea_orm::{EntityTrait, PaginatorTrait};
use serde_json::{Value, json};

use crate::support::{TestApp, TestUser};

/// The built-in tools plus a command tool that writes output files.
const TEST_TOOLS: &str = r##"
[[tools]]
name = "report"
title = "Report"
version = "1"
timeout_seconds = 20
max_attempts = 1
inputs = [{ name = "data", kind = "file", required = true, max_bytes = 2048 }, { name = "label", kind = "text" }]
executor = { kind = "command", program = "sh", args = ["-c", """
echo 'progress: 0.5 Writing'
cp "$1" outputs/copy.bin
printf 'lines: %s\n' $(wc -l < "$1") > outputs/report.txt
echo '{"ok": true}' > result.json
sleep "$2"
exit "$3"
""", "report", "{input:data}", "{setting:sleep}", "{setting:exit}"] }
price = { base = 1 }
settings_schema = { type = "object", properties = { sleep = { type = "number", default = 0 }, exit = { type = "integer", default = 0 } } }

[[tools]]
name = "join"
title = "Join two files"
version = "1"
timeout_seconds = 20
inputs = [{ name = "left", kind = "file", required = true }, { name = "right", kind = "file", required = true }]
executor = { kind = "command", program = "sh", args = ["-c", "cat \"$1\" \"$2\" > outputs/joined.txt", "join", "{input:left}", "{input:right}"] }
price = { base = 1, per_kilobyte = 1 }
"##;

const FASTA: &str = ">s1 first\nGGCC\n>s2\nAATT\n";

async fn spawn_with(tweak: impl FnOnce(&mut jobgraph::Config)) -> TestApp {
    TestApp::spawn_with(|config| {
        let tools = config.database.data_dir.join("tools.toml");
        let builtin = include_str!("../../src/tools/default_tools.toml");
        std::fs::write(&tools, format!("{builtin}\n{TEST_TOOLS}")).unwrap();
        config.server.tools_file = Some(tools);
        config.server.workers = 1;
        config.server.lease_seconds = 3;
        config.server.max_upload_bytes = 64 * 1024;
        config.server.fetch_allow = vec!["127.0.0.1".to_owned()];
        config.server.fetch_timeout_seconds = 1;
        config.server.max_fetch_bytes = 16 * 1024;
        tweak(config);
    })
    .await
}

async fn spawn() -> TestApp {
    spawn_with(|_| {}).await
}

async fn setup(app: &TestApp, credits: i64) -> (TestUser, String) {
    let alice = app.user("alice@lab.test").await;
    let ws = app.workspace(&alice, "Files lab").await;
    if credits > 0 {
        app.grant(&ws, credits).await;
    }
    (alice, ws)
}

const FILE_FIELDS: &str = "id name size contentType sha256 role downloadUrl";

fn submit_upload_query(tool: &str, input: &str) -> String {
    format!(
        "mutation($ws: ID!, $file: Upload!, $settings: JSON) {{ submitJob(input: {{workspaceId: $ws, tool: \"{tool}\", settings: $settings,
           inputs: [{{name: \"{input}\", file: $file}}]}}) {{
           job {{ id status creditCost inputs {{ name kind bytes file {{ {FILE_FIELDS} }} }} files {{ {FILE_FIELDS} }} }} }} }}"
    )
}

/// Sends a GraphQL multipart request with one file as `variables.file`.
async fn upload(
    app: &TestApp,
    token: Option<&str>,
    query: &str,
    variables: Value,
    filename: &str,
    bytes: Vec<u8>,
) -> (StatusCode, Value) {
    upload_many(
        app,
        token,
        query,
        variables,
        vec![("file", filename, bytes)],
    )
    .await
}

/// Sends a GraphQL multipart request with files as the named variables.
async fn upload_many(
    app: &TestApp,
    token: Option<&str>,
    query: &str,
    variables: Value,
    files: Vec<(&str, &str, Vec<u8>)>,
) -> (StatusCode, Value) {
    let mut variables = variables;
    let mut map = serde_json::Map::new();
    for (i, (variable, _, _)) in files.iter().enumerate() {
        variables[*variable] = Value::Null;
        map.insert(i.to_string(), json!([format!("variables.{variable}")]));
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
    let mut request = app.client().post(app.url("/graphql")).multipart(form);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.unwrap();
    let status = response.status();
    (status, response.json().await.unwrap())
}

async fn download(
    app: &TestApp,
    token: Option<&str>,
    url: &str,
    range: Option<&str>,
) -> reqwest::Response {
    let mut request = app.client().get(url);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    if let Some(range) = range {
        request = request.header("range", range);
    }
    request.send().await.unwrap()
}

/// The stored objects of a workspace.
async fn stored(app: &TestApp, ws: &str) -> Vec<String> {
    let id = ids::decode(Kind::Workspace, "ws", ws).unwrap();
    app.state
        .files
        .storage
        .list(&jobgraph::files::workspace_prefix(id))
        .await
        .unwrap()
}

async fn file_rows(app: &TestApp) -> u64 {
    entity::file::Entity::find().count(&app.db).await.unwrap()
}

async fn job_files(app: &TestApp, token: &str, id: &str) -> Value {
    let data = app
        .ok(
            Some(token),
            &format!("query($id: ID!) {{ job(id: $id) {{ status errorMessage errorCode refunded result inputs {{ name kind url bytes file {{ {FILE_FIELDS} }} }} files {{ {FILE_FIELDS} }} }} }}"),
            json!({ "id": id }),
        )
        .await;
    data["job"].clone()
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}

#[tokio::test]
async fn an_uploaded_input_is_stored_checked_priced_and_downloadable() {
    let app = spawn().await;
    let (alice, ws) = setup(&app, 100).await;
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
async fn a_command_tool_s_output_files_are_stored_with_the_right_bytes() {
    let app = spawn().await;
    let (alice, ws) = setup(&app, 100).await;
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
async fn a_job_takes_several_uploaded_files() {
    let app = spawn().await;
    let (alice, ws) = setup(&app, 100).await;
    let left = vec![b'l'; 1500];
    let right = b"right\n".to_vec();
    let (_, body) = upload_many(
        &app,
        Some(&alice.token),
        &format!("mutation($ws: ID!, $a: Upload!, $b: Upload!) {{ submitJob(input: {{workspaceId: $ws, tool: \"join\",
           inputs: [{{name: \"left\", file: $a}}, {{name: \"right\", file: $b}}]}}) {{ job {{ id creditCost files {{ {FILE_FIELDS} }} }} }} }}"),
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
async fn outsiders_cannot_download_and_public_job_files_need_no_token() {
    let app = spawn_with(|config| config.server.workers = 0).await;
    let (alice, ws) = setup(&app, 100).await;
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
    let (alice, ws) = setup(&app, 100).await;
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
    assert_eq!(stored(&app, &ws).await, Vec::<String>::new());
    assert_eq!(stored(&app, &poor).await, Vec::<String>::new());
    assert_eq!(file_rows(&app).await, 0);
    assert_eq!(app.balance(&ws).await, 100);
}

#[tokio::test]
async fn deleting_a_job_removes_its_files_and_a_duplicate_keeps_its_own_copy() {
    let app = spawn().await;
    let (alice, ws) = setup(&app, 100).await;
    let (_, body) = upload(
        &app,
        Some(&alice.token),
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
    app.wait_final(&alice.token, &id, Duration::from_secs(20))
        .await;
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
    let job_id = ids::decode(Kind::Job, "id", &id).unwrap();
    let ws_id = ids::decode(Kind::Workspace, "ws", &ws).unwrap();
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
async fn failed_and_cancelled_runs_leave_no_output_files() {
    let app = spawn().await;
    let (alice, ws) = setup(&app, 100).await;
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
    // Give the stopped attempt a moment to clean up after itself.
    tokio::time::sleep(Duration::from_millis(500)).await;
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
    let keys = stored(&app, &ws).await;
    assert_eq!(keys.len(), 2, "only the two inputs: {keys:?}");
    assert!(keys.iter().all(|k| k.contains("/inputs/")), "{keys:?}");
}

/// A local HTTP server to fetch from: a FASTA file, a redirect to it, a file over the cap sent
/// without a length, a slow answer, and 404 for anything else.
async fn file_server() -> SocketAddr {
    use axum::body::Body;
    use axum::response::Redirect;
    use axum::routing::get;
    let router = axum::Router::new()
        .route("/seqs.fa", get(|| async { FASTA }))
        .route("/moved", get(|| async { Redirect::temporary("/seqs.fa") }))
        .route(
            "/big.fa",
            get(|| async {
                let chunks = (0..64).map(|i| {
                    let chunk = if i == 0 {
                        format!(">big\n{}\n", "A".repeat(1000))
                    } else {
                        format!("{}\n", "A".repeat(1023))
                    };
                    Ok::<_, std::io::Error>(chunk)
                });
                Body::from_stream(futures_util::stream::iter(chunks))
            }),
        )
        .route(
            "/slow.fa",
            get(|| async {
                tokio::time::sleep(Duration::from_secs(5)).await;
                FASTA
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await });
    addr
}

async fn submit_url(app: &TestApp, user: &TestUser, ws: &str, url: &str) -> (StatusCode, Value) {
    app.post(
        Some(&user.token),
        "mutation($ws: ID!, $url: String!) { submitJob(input: {workspaceId: $ws, tool: \"sequence-stats\",
           inputs: [{name: \"sequences\", url: $url}]}) { job { id status creditCost } } }",
        json!({ "ws": ws, "url": url }),
    )
    .await
}

#[tokio::test]
async fn a_url_input_is_downloaded_before_the_job_is_queued() {
    let server = file_server().await;
    let app = spawn().await;
    let (alice, ws) = setup(&app, 100).await;
    let url = format!("http://{server}/seqs.fa");
    let (_, body) = submit_url(&app, &alice, &ws, &url).await;
    assert!(body["errors"].is_null(), "{body}");
    let id = body["data"]["submitJob"]["job"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let done = app
        .wait_final(&alice.token, &id, Duration::from_secs(20))
        .await;
    assert_eq!(done["status"], "COMPLETED", "{done}");
    assert_eq!(done["result"]["count"], 2);
    let timeline: Vec<(String, Value)> = done["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["status"].as_str().unwrap().to_owned(), e["stage"].clone()))
        .collect();
    assert_eq!(
        timeline[..2],
        [
            ("PENDING".to_owned(), json!("DOWNLOADING")),
            ("QUEUED".to_owned(), Value::Null)
        ]
    );
    let job = job_files(&app, &alice.token, &id).await;
    let input = &job["inputs"][0];
    assert_eq!(input["kind"], "URL");
    assert_eq!(input["url"], url);
    assert_eq!(input["bytes"], FASTA.len());
    assert_eq!(input["file"]["name"], "seqs.fa");
    assert_eq!(input["file"]["sha256"], sha256_hex(FASTA.as_bytes()));
    let response = download(
        &app,
        Some(&alice.token),
        input["file"]["downloadUrl"].as_str().unwrap(),
        None,
    )
    .await;
    assert_eq!(response.text().await.unwrap(), FASTA);

    // Redirects are followed, each hop checked.
    let (_, body) = submit_url(&app, &alice, &ws, &format!("http://{server}/moved")).await;
    let id = body["data"]["submitJob"]["job"]["id"].as_str().unwrap();
    let done = app
        .wait_final(&alice.token, id, Duration::from_secs(20))
        .await;
    assert_eq!(done["status"], "COMPLETED", "{done}");
}

#[tokio::test]
async fn a_failed_download_ends_the_job_failed_refunded_and_says_why() {
    let server = file_server().await;
    let app = spawn().await;
    let (alice, ws) = setup(&app, 100).await;
    for (path, reason) in [
        ("/missing.fa", "404 Not Found"),
        ("/big.fa", "larger than the limit of 16384 bytes"),
        ("/slow.fa", "did not finish within 1 s"),
    ] {
        let (_, body) = submit_url(&app, &alice, &ws, &format!("http://{server}{path}")).await;
        assert!(body["errors"].is_null(), "{body}");
        let id = body["data"]["submitJob"]["job"]["id"].as_str().unwrap();
        let done = app
            .wait_final(&alice.token, id, Duration::from_secs(20))
            .await;
        assert_eq!(done["status"], "FAILED", "{done}");
        assert_eq!(done["errorCode"], "DOWNLOAD_FAILED");
        assert_eq!(done["refunded"], true);
        let message = done["errorMessage"].as_str().unwrap();
        assert!(
            message.contains(reason) && message.contains("`sequences`"),
            "{path}: {message}"
        );
    }
    // A retry fetches the URL again, and fails again.
    let (_, body) = submit_url(&app, &alice, &ws, &format!("http://{server}/missing.fa")).await;
    let failed = body["data"]["submitJob"]["job"]["id"].as_str().unwrap();
    app.wait_final(&alice.token, failed, Duration::from_secs(20))
        .await;
    let data = app
        .ok(
            Some(&alice.token),
            "mutation($id: ID!) { retryJob(input: {jobId: $id}) { job { id } } }",
            json!({ "id": failed }),
        )
        .await;
    let retried = data["retryJob"]["job"]["id"].as_str().unwrap();
    let done = app
        .wait_final(&alice.token, retried, Duration::from_secs(20))
        .await;
    assert_eq!(done["status"], "FAILED", "{done}");
    assert!(
        done["errorMessage"].as_str().unwrap().contains("404"),
        "{done}"
    );
    assert_eq!(app.balance(&ws).await, 100);
    assert_eq!(stored(&app, &ws).await, Vec::<String>::new());
    assert_eq!(file_rows(&app).await, 0);
}

#[tokio::test]
async fn url_fetches_refuse_internal_addresses_unless_allowed() {
    let server = file_server().await;
    let app = spawn_with(|config| config.server.fetch_allow.clear()).await;
    let (alice, ws) = setup(&app, 100).await;
    for url in [
        format!("http://{server}/seqs.fa"),
        format!("http://localhost:{}/seqs.fa", server.port()),
    ] {
        let (_, body) = submit_url(&app, &alice, &ws, &url).await;
        let id = body["data"]["submitJob"]["job"]["id"].as_str().unwrap();
        let done = app
            .wait_final(&alice.token, id, Duration::from_secs(20))
            .await;
        assert_eq!(done["status"], "FAILED", "{done}");
        assert_eq!(done["refunded"], true);
        let message = done["errorMessage"].as_str().unwrap();
        assert!(
            message.contains("loopback, private or link-local"),
            "{message}"
        );
    }
    let (_, body) = submit_url(&app, &alice, &ws, "file:///etc/passwd").await;
    assert_eq!(body["errors"][0]["extensions"]["code"], "BAD_USER_INPUT");
    assert_eq!(body["errors"][0]["extensions"]["field"], "inputs.sequences");
    assert_eq!(app.balance(&ws).await, 100);
}

#[tokio::test]
async fn deleting_a_workspace_removes_its_files_and_files_are_nodes() {
    let app = spawn_with(|config| config.server.workers = 0).await;
    let (alice, ws) = setup(&app, 100).await;
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
