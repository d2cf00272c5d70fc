//! URL inputs: fetched before the job is queued, or the job fails refunded with the reason;
//! internal addresses refused unless allowed.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};

use super::*;

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
    let (alice, ws) = app.setup("Files lab", 100).await;
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
    let (alice, ws) = app.setup("Files lab", 100).await;
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
    let (alice, ws) = app.setup("Files lab", 100).await;
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
