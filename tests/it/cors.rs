//! Pages of other origins: CORS on the routes they call, the websocket upgrade's `Origin`
//! check, the settings refused at start, and links into the frontend (`Job.url`).

use reqwest::header::HeaderMap;
use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::files::{FASTA, submit_upload_query, upload};
use crate::support::TestApp;
use crate::support::ws::Ws;

const APP: &str = "https://app.lab.test";
const OTHER: &str = "https://evil.test";

/// The routes pages call, with the method they use.
const ROUTES: [(&str, &str); 5] = [
    ("/graphql", "POST"),
    ("/files/file_0", "GET"),
    ("/jobs/job_0", "GET"),
    ("/jobs/job_0/export.json", "GET"),
    ("/jobs/job_0/export.csv", "GET"),
];

async fn spawn_allowing(origins: &[&str], credentials: bool) -> TestApp {
    let origins: Vec<String> = origins.iter().map(|o| (*o).to_owned()).collect();
    TestApp::spawn_with(move |config| {
        config.server.cors_origins = origins;
        config.server.cors_allow_credentials = credentials;
        config.server.cors_max_age = 120;
    })
    .await
}

/// A browser's preflight of `method` on `path` from `origin`, sending `Authorization`.
async fn preflight(app: &TestApp, path: &str, method: &str, origin: &str) -> reqwest::Response {
    app.client()
        .request(Method::OPTIONS, app.url(path))
        .header("origin", origin)
        .header("access-control-request-method", method)
        .header(
            "access-control-request-headers",
            "authorization,content-type",
        )
        .send()
        .await
        .unwrap()
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).map(|v| v.to_str().unwrap())
}

/// A comma-separated header's items, in lower case.
fn items(headers: &HeaderMap, name: &str) -> Vec<String> {
    header(headers, name)
        .unwrap_or("")
        .split(',')
        .map(|item| item.trim().to_ascii_lowercase())
        .filter(|item| !item.is_empty())
        .collect()
}

fn access_control(headers: &HeaderMap) -> Vec<String> {
    headers
        .keys()
        .map(|name| name.as_str().to_owned())
        .filter(|name| name.starts_with("access-control-"))
        .collect()
}

#[tokio::test]
async fn a_listed_origins_preflights_are_answered_on_every_route_pages_call() {
    let app = spawn_allowing(&[APP, "http://localhost:5173"], false).await;
    for (path, method) in ROUTES {
        let response = preflight(&app, path, method, APP).await;
        assert!(
            response.status().is_success(),
            "{path}: {}",
            response.status()
        );
        let headers = response.headers();
        assert_eq!(
            header(headers, "access-control-allow-origin"),
            Some(APP),
            "{path}"
        );
        assert!(
            items(headers, "access-control-allow-methods").contains(&method.to_lowercase()),
            "{path}: {headers:?}"
        );
        let allowed = items(headers, "access-control-allow-headers");
        for name in [
            "authorization",
            "content-type",
            "apollo-require-preflight",
            "x-apollo-operation-name",
        ] {
            assert!(allowed.contains(&name.to_owned()), "{path}: {allowed:?}");
        }
        assert_eq!(header(headers, "access-control-max-age"), Some("120"));
        assert_eq!(header(headers, "access-control-allow-credentials"), None);
        assert!(items(headers, "vary").contains(&"origin".to_owned()));
    }
    // Each listed origin is answered as itself.
    let response = preflight(&app, "/graphql", "POST", "http://localhost:5173").await;
    assert_eq!(
        header(response.headers(), "access-control-allow-origin"),
        Some("http://localhost:5173")
    );
}

#[tokio::test]
async fn a_listed_origin_reads_answers_and_the_name_of_a_download() {
    let app = spawn_allowing(&[APP], false).await;
    let (alice, ws) = app.setup("Cross-origin lab", 100).await;
    let response = app
        .client()
        .post(app.url("/graphql"))
        .header("origin", APP)
        .bearer_auth(&alice.token)
        .json(&json!({"query": "{ viewer { user { email } } }"}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        header(response.headers(), "access-control-allow-origin"),
        Some(APP)
    );
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["data"]["viewer"]["user"]["email"], "alice@lab.test");

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
    let job = &body["data"]["submitJob"]["job"];
    let download = job["inputs"][0]["file"]["downloadUrl"].as_str().unwrap();
    let export = app.url(&format!(
        "/jobs/{}/export.json",
        job["id"].as_str().unwrap()
    ));
    for url in [download, export.as_str()] {
        let response = app
            .client()
            .get(url)
            .header("origin", APP)
            .bearer_auth(&alice.token)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{url}");
        let headers = response.headers();
        assert_eq!(header(headers, "access-control-allow-origin"), Some(APP));
        let exposed = items(headers, "access-control-expose-headers");
        for name in [
            "content-disposition",
            "content-range",
            "etag",
            "x-request-id",
        ] {
            assert!(exposed.contains(&name.to_owned()), "{url}: {exposed:?}");
        }
        assert!(header(headers, "content-disposition").is_some());
    }
}

#[tokio::test]
async fn an_origin_not_listed_gets_no_cors_permission() {
    let app = spawn_allowing(&[APP], true).await;
    for (path, method) in ROUTES {
        let headers = preflight(&app, path, method, OTHER).await.headers().clone();
        assert_eq!(
            header(&headers, "access-control-allow-origin"),
            None,
            "{path}"
        );
        assert_eq!(header(&headers, "access-control-allow-credentials"), None);
    }
    // Nor a look-alike of a listed one.
    for origin in [
        "https://app.lab.test.evil.test",
        "http://app.lab.test",
        "null",
    ] {
        let response = preflight(&app, "/graphql", "POST", origin).await;
        assert_eq!(
            header(response.headers(), "access-control-allow-origin"),
            None,
            "{origin}"
        );
    }
    let response = app
        .client()
        .post(app.url("/graphql"))
        .header("origin", OTHER)
        .json(&json!({"query": "{ __typename }"}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        header(response.headers(), "access-control-allow-origin"),
        None
    );
}

#[tokio::test]
async fn without_origins_responses_carry_no_cors_headers() {
    let app = TestApp::spawn().await;
    let response = preflight(&app, "/graphql", "POST", APP).await;
    assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(access_control(response.headers()), Vec::<String>::new());
    let response = app
        .client()
        .post(app.url("/graphql"))
        .header("origin", APP)
        .json(&json!({"query": "{ __typename }"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(access_control(response.headers()), Vec::<String>::new());
}

#[tokio::test]
async fn credentials_are_allowed_to_listed_origins_only_when_asked_for() {
    let app = spawn_allowing(&[APP], true).await;
    let response = preflight(&app, "/graphql", "POST", APP).await;
    assert_eq!(
        header(response.headers(), "access-control-allow-credentials"),
        Some("true")
    );
    let response = app
        .client()
        .get(app.url("/graphql?query={__typename}"))
        .header("origin", APP)
        .send()
        .await
        .unwrap();
    assert_eq!(
        header(response.headers(), "access-control-allow-credentials"),
        Some("true")
    );
    assert_eq!(
        header(response.headers(), "access-control-allow-origin"),
        Some(APP)
    );
}

#[tokio::test]
async fn a_star_allows_every_origin_without_credentials() {
    let app = spawn_allowing(&["*"], false).await;
    for origin in [APP, OTHER] {
        let response = preflight(&app, "/graphql", "POST", origin).await;
        let headers = response.headers();
        assert_eq!(header(headers, "access-control-allow-origin"), Some("*"));
        assert_eq!(header(headers, "access-control-allow-credentials"), None);
    }
    let mut ws = Ws::open_from(app.addr, OTHER).await.unwrap();
    ws.init(None).await;
    assert_eq!(ws.message().await["type"], "connection_ack");
}

#[tokio::test]
async fn a_page_of_an_origin_not_listed_cannot_open_a_websocket() {
    let app = spawn_allowing(&[APP], false).await;
    let alice = app.user("alice@lab.test").await;
    let (status, body) = Ws::open_from(app.addr, OTHER).await.err().unwrap();
    assert_eq!(status, 403);
    let body: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(body["errors"][0]["extensions"]["code"], "FORBIDDEN");
    assert!(
        body["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("--cors-origins"),
        "{body}"
    );

    // A listed page, the server's own pages, and programs (no `Origin`) are accepted.
    let own = format!("http://{}", app.addr);
    for origin in [APP, own.as_str()] {
        let mut ws = Ws::open_from(app.addr, origin).await.unwrap();
        ws.init(Some(&alice.token)).await;
        assert_eq!(ws.message().await["type"], "connection_ack", "{origin}");
        ws.subscribe("1", "{ viewer { user { email } } }", json!({}))
            .await;
        assert_eq!(
            ws.next_data("1").await["viewer"]["user"]["email"],
            "alice@lab.test"
        );
    }
    Ws::connect(app.addr, Some(&alice.token)).await;
}

#[tokio::test]
async fn without_origins_only_the_servers_own_pages_open_websockets() {
    let app = TestApp::spawn().await;
    let (status, _) = Ws::open_from(app.addr, APP).await.err().unwrap();
    assert_eq!(status, 403);
    // Another port of the same host is another origin.
    let (status, _) = Ws::open_from(app.addr, "http://127.0.0.1:1")
        .await
        .err()
        .unwrap();
    assert_eq!(status, 403);
    let mut ws = Ws::open_from(app.addr, &format!("http://{}", app.addr))
        .await
        .unwrap();
    ws.init(None).await;
    assert_eq!(ws.message().await["type"], "connection_ack");
}

#[tokio::test]
async fn cors_settings_that_cannot_work_are_refused_at_start() {
    for (env, expected) in [
        (
            vec![
                ("JOBGRAPH_CORS_ORIGINS", "*"),
                ("JOBGRAPH_CORS_ALLOW_CREDENTIALS", "true"),
            ],
            "cannot be combined with --cors-allow-credentials",
        ),
        (
            vec![("JOBGRAPH_CORS_ORIGINS", "https://app.lab.test/jobs")],
            "--cors-origins `https://app.lab.test/jobs`: an origin has no path",
        ),
        (
            vec![("JOBGRAPH_CORS_ORIGINS", "app.lab.test")],
            "--cors-origins `app.lab.test`",
        ),
        (
            vec![("JOBGRAPH_CORS_ORIGINS", "https://*.lab.test")],
            "patterns are not supported",
        ),
        (
            vec![("JOBGRAPH_CORS_ALLOW_CREDENTIALS", "true")],
            "--cors-allow-credentials needs --cors-origins",
        ),
        (
            vec![("JOBGRAPH_JOB_URL_TEMPLATE", "https://app.lab.test/jobs")],
            "--job-url-template must contain `{id}`",
        ),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_jobgraph"))
            .args(["serve", "--listen", "127.0.0.1:0"])
            .env("JOBGRAPH_DATA_DIR", dir.path())
            .env_remove("DATABASE_URL")
            .env_remove("RUST_LOG")
            .envs(env.iter().copied())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{env:?} started");
        assert!(stderr.contains(expected), "{env:?}: {stderr}");
        assert!(
            !dir.path().join("jobgraph.db").exists(),
            "{env:?}: refused before touching the database"
        );
    }
}

const JOB_URL: &str = "{ job(id: $id) { url exportJson } }";

#[tokio::test]
async fn a_job_links_to_this_servers_record_by_default() {
    let app = TestApp::spawn().await;
    let (alice, ws) = app.setup("Links lab", 100).await;
    let id = app.job(&alice, &ws, 0).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let data = app
        .ok(
            Some(&alice.token),
            &format!("query($id: ID!) {JOB_URL}"),
            json!({ "id": id }),
        )
        .await;
    let url = data["job"]["url"].as_str().unwrap();
    assert_eq!(url, app.url(&format!("/jobs/{id}")));
    assert_eq!(data["job"]["exportJson"]["url"], url);
    let record: serde_json::Value = app
        .client()
        .get(url)
        .bearer_auth(&alice.token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(record["id"], id);
}

#[tokio::test]
async fn with_a_template_a_job_links_to_the_frontends_page() {
    let app = TestApp::spawn_with(|config| {
        config.server.job_url_template = Some("https://app.lab.test/#/jobs/{id}/view".to_owned());
    })
    .await;
    let (alice, ws) = app.setup("Links lab", 100).await;
    let id = app.job(&alice, &ws, 0).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let data = app
        .ok(
            Some(&alice.token),
            &format!("query($id: ID!) {JOB_URL}"),
            json!({ "id": id }),
        )
        .await;
    let url = format!("https://app.lab.test/#/jobs/{id}/view");
    assert_eq!(data["job"]["url"], url);
    assert_eq!(data["job"]["exportJson"]["url"], url);
    // The server keeps serving the record to API clients.
    let response = app
        .client()
        .get(app.url(&format!("/jobs/{id}")))
        .bearer_auth(&alice.token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let record: serde_json::Value = response.json().await.unwrap();
    assert_eq!(record["id"], id);
    assert_eq!(record["url"], url);
}
