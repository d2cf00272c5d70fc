//! Files: inputs uploaded (GraphQL multipart requests) or fetched from URLs, output files of
//! built-in and command tools, downloads under the jobs' access rules, and cleanup after
//! delete, cancel, failure and refused submissions. Storage is the local folder, or S3 when
//! `TEST_S3_ENDPOINT` is set (see `support`).

use std::net::SocketAddr;

use jobgraph::ids::{self};
use reqwest::StatusCode;
use reqwest::multipart::{Form, Part};
use sea_orm::{EntityTrait, PaginatorTrait};
use serde_json::{Value, json};

use crate::support::{TestApp, TestUser};

mod outputs;
mod uploads;
mod urls;

/// The built-in tools plus command tools that write output files.
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

pub(crate) const FASTA: &str = ">s1 first\nGGCC\n>s2\nAATT\n";

async fn spawn_with(tweak: impl FnOnce(&mut jobgraph::Config)) -> TestApp {
    TestApp::spawn_with_tools(TEST_TOOLS, |config| {
        config.server.workers = 1;
        config.server.lease_seconds = 3;
        config.server.max_upload_bytes = 64 * 1024;
        config.server.max_upload_files = 2;
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

const FILE_FIELDS: &str = "id name size contentType sha256 role downloadUrl";

pub(crate) fn submit_upload_query(tool: &str, input: &str) -> String {
    format!(
        "mutation($ws: ID!, $file: Upload!, $settings: JSON) {{ submitJob(input: {{workspaceId: $ws, tool: \"{tool}\", settings: $settings,
           inputs: [{{name: \"{input}\", file: $file}}]}}) {{
           job {{ id status creditCost inputs {{ name kind bytes file {{ {FILE_FIELDS} }} }} files {{ {FILE_FIELDS} }} }} }} }}"
    )
}

/// Sends a GraphQL multipart request with one file as `variables.file`.
pub(crate) async fn upload(
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
pub(crate) async fn stored(app: &TestApp, ws: &str) -> Vec<String> {
    let id = ids::decode::<entity::ids::WorkspaceId>("ws", ws).unwrap();
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
