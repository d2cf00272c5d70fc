//! Live update delivery: thousands of websocket subscribers on one server process.
//!
//! Starts the real `jobgraph serve` (API only) on a fresh database, opens `BENCH_SUBSCRIBERS`
//! websockets that each subscribe to `workspaceJobEvents` of one workspace, then cancels
//! `BENCH_CHANGES` queued jobs one after the other through the API. Each cancellation is one
//! status change that every subscriber must receive. It reports the delivery latency from the
//! change (the job's `updatedAt`, taken in the transaction just before it commits) to each
//! client's receipt, and the server's resident memory per subscriber.
//!
//! `cargo bench --bench subscriptions`; see `docs/benchmarks.md` for the variables.

use std::process::{ExitCode, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, anyhow, bail};
use chrono::{DateTime, Utc};
use futures_util::{SinkExt as _, StreamExt as _};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt as _, BufReader};
use tokio::sync::Mutex;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;

fn main() -> ExitCode {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    match runtime.block_on(bench()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("subscriptions bench failed: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn setting(name: &str, default: usize) -> anyhow::Result<usize> {
    match std::env::var(name) {
        Ok(value) => value
            .parse()
            .with_context(|| format!("{name} must be a number")),
        Err(_) => Ok(default),
    }
}

/// The server process, killed when dropped.
struct Server {
    child: tokio::process::Child,
    pid: u32,
    base: String,
    token: String,
    _dir: tempfile::TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

async fn start_server() -> anyhow::Result<Server> {
    let dir = tempfile::tempdir()?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let database_url = match std::env::var("BENCH_DATABASE_URL") {
        Ok(url) if !url.is_empty() => url,
        _ => format!(
            "sqlite://{}?mode=rwc",
            dir.path().join("bench.db").display()
        ),
    };
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_jobgraph"))
        .args(["serve", "--workers", "0"])
        .env("DATABASE_URL", &database_url)
        .env("JOBGRAPH_DATA_DIR", dir.path())
        .env("JOBGRAPH_LISTEN", format!("127.0.0.1:{port}"))
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .context("starting jobgraph")?;
    let pid = child
        .id()
        .ok_or_else(|| anyhow!("the server exited at once"))?;
    let mut lines = BufReader::new(child.stdout.take().expect("piped")).lines();
    let token = tokio::time::timeout(Duration::from_secs(60), async {
        while let Some(line) = lines.next_line().await? {
            if let Some(token) = line.split_whitespace().find(|w| w.starts_with("jg_")) {
                return Ok(token.to_owned());
            }
        }
        bail!("the server printed no first-start token (is BENCH_DATABASE_URL a fresh database?)")
    })
    .await
    .context("waiting for the server")??;
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();
    for _ in 0..300 {
        if client
            .get(format!("{base}/readyz"))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
        {
            return Ok(Server {
                child,
                pid,
                base,
                token,
                _dir: dir,
            });
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bail!("the server did not become ready")
}

async fn graphql(server: &Server, query: &str, variables: Value) -> anyhow::Result<Value> {
    let body: Value = reqwest::Client::new()
        .post(format!("{}/graphql", server.base))
        .bearer_auth(&server.token)
        .json(&json!({ "query": query, "variables": variables }))
        .send()
        .await?
        .json()
        .await?;
    if body.get("errors").is_some() {
        bail!("GraphQL errors: {body}");
    }
    Ok(body["data"].clone())
}

/// Resident memory of a process, in KiB.
fn rss_kib(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
        .ok_or_else(|| anyhow!("no VmRSS for {pid}"))
}

/// What all clients record.
#[derive(Default)]
struct Received {
    /// Per job id, how many subscribers got its change.
    counts: std::sync::Mutex<std::collections::HashMap<String, usize>>,
    latencies_us: Mutex<Vec<i64>>,
    subscribed: AtomicUsize,
}

async fn subscriber(
    url: String,
    token: String,
    workspace: String,
    received: Arc<Received>,
) -> anyhow::Result<()> {
    let mut request = url.into_client_request()?;
    request
        .headers_mut()
        .insert("sec-websocket-protocol", "graphql-transport-ws".parse()?);
    let (mut socket, _) = tokio_tungstenite::connect_async(request).await?;
    let init =
        json!({"type": "connection_init", "payload": {"authorization": format!("Bearer {token}")}});
    socket.send(Message::text(init.to_string())).await?;
    let subscribe = json!({"id": "1", "type": "subscribe", "payload": {
        "query": "subscription($ws: ID!) { workspaceJobEvents(workspaceId: $ws) { kind status jobId job { updatedAt } } }",
        "variables": {"ws": workspace}}});
    socket.send(Message::text(subscribe.to_string())).await?;
    while let Some(message) = socket.next().await {
        let Message::Text(text) = message? else {
            continue;
        };
        let arrived = Utc::now();
        let value: Value = serde_json::from_str(&text)?;
        match value["type"].as_str() {
            Some("connection_ack") => {
                received.subscribed.fetch_add(1, Ordering::Relaxed);
            }
            Some("ping") => {
                socket
                    .send(Message::text(json!({"type": "pong"}).to_string()))
                    .await?;
            }
            Some("next") => {
                let event = &value["payload"]["data"]["workspaceJobEvents"];
                if event["status"] != "CANCELLED" {
                    continue;
                }
                let changed: DateTime<Utc> = event["job"]["updatedAt"]
                    .as_str()
                    .ok_or_else(|| anyhow!("no updatedAt in {value}"))?
                    .parse()?;
                let latency = (arrived - changed).num_microseconds().unwrap_or(i64::MAX);
                received.latencies_us.lock().await.push(latency);
                let id = event["jobId"].as_str().unwrap_or_default().to_owned();
                *received.counts.lock().unwrap().entry(id).or_default() += 1;
            }
            _ => {}
        }
    }
    Ok(())
}

fn percentile(sorted: &[i64], p: f64) -> f64 {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index] as f64 / 1000.0
}

async fn bench() -> anyhow::Result<()> {
    let subscribers = setting("BENCH_SUBSCRIBERS", 2000)?;
    let changes = setting("BENCH_CHANGES", 20)?;
    let server = start_server().await?;
    let workspace = graphql(
        &server,
        "mutation { createWorkspace(input: {name: \"bench\"}) { workspace { id } } }",
        json!({}),
    )
    .await?["createWorkspace"]["workspace"]["id"]
        .as_str()
        .ok_or_else(|| anyhow!("no workspace id"))?
        .to_owned();
    graphql(
        &server,
        "mutation($ws: ID!) { grantCredits(input: {workspaceId: $ws, amount: 1000000}) { workspace { id } } }",
        json!({ "ws": workspace }),
    )
    .await?;
    // One warm-up change, then the measured ones.
    let mut jobs = Vec::new();
    for _ in 0..=changes {
        let data = graphql(
            &server,
            "mutation($ws: ID!) { submitJob(input: {workspaceId: $ws, tool: \"sleep\", settings: {seconds: 1}}) { job { id } } }",
            json!({ "ws": workspace }),
        )
        .await?;
        jobs.push(data["submitJob"]["job"]["id"].as_str().unwrap().to_owned());
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss_before = rss_kib(server.pid)?;

    let received = Arc::new(Received::default());
    let url = format!("{}/graphql", server.base.replace("http://", "ws://"));
    let opening = Instant::now();
    let mut clients = tokio::task::JoinSet::new();
    for _ in 0..subscribers {
        clients.spawn(subscriber(
            url.clone(),
            server.token.clone(),
            workspace.clone(),
            received.clone(),
        ));
        // Open in waves, as a crowd of browsers would.
        if clients.len() % 100 == 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    while received.subscribed.load(Ordering::Relaxed) < subscribers {
        if opening.elapsed() > Duration::from_secs(120) {
            bail!(
                "only {} of {subscribers} connections were acknowledged",
                received.subscribed.load(Ordering::Relaxed)
            );
        }
        if let Some(Ok(Err(err))) = clients.try_join_next() {
            bail!("a subscriber failed: {err:#}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let opened_in = opening.elapsed();

    let cancel = "mutation($id: ID!) { cancelJob(input: {jobId: $id}) { job { id } } }";
    let wait_for_all = |job: String| {
        let received = received.clone();
        async move {
            let deadline = Instant::now() + Duration::from_secs(60);
            loop {
                let got = received.counts.lock().unwrap().get(&job).copied();
                if got == Some(subscribers) {
                    return Ok(());
                }
                if Instant::now() > deadline {
                    bail!(
                        "{} of {subscribers} subscribers got the change",
                        got.unwrap_or(0)
                    );
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
    };
    // Warm-up: every subscription is live once every client has seen a change.
    graphql(&server, cancel, json!({ "id": jobs[0] })).await?;
    wait_for_all(jobs[0].clone()).await?;
    let rss_after = rss_kib(server.pid)?;
    received.latencies_us.lock().await.clear();

    let measuring = Instant::now();
    for job in &jobs[1..] {
        graphql(&server, cancel, json!({ "id": job })).await?;
        wait_for_all(job.clone()).await?;
    }
    let measured_in = measuring.elapsed();
    let mut latencies = received.latencies_us.lock().await.clone();
    latencies.sort_unstable();
    clients.abort_all();

    println!(
        "subscribers: {subscribers}, opened in {:.1} s",
        opened_in.as_secs_f64()
    );
    println!(
        "status changes: {changes}, deliveries: {} (expected {}), in {:.1} s",
        latencies.len(),
        changes * subscribers,
        measured_in.as_secs_f64()
    );
    if latencies.is_empty() {
        bail!("nothing was delivered");
    }
    println!(
        "latency from the change to the client: median {:.1} ms, p90 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.9),
        percentile(&latencies, 0.99),
        percentile(&latencies, 1.0),
    );
    println!(
        "server memory: {:.1} MiB before, {:.1} MiB with the subscribers: {:.1} KiB per subscriber",
        rss_before as f64 / 1024.0,
        rss_after as f64 / 1024.0,
        rss_after.saturating_sub(rss_before) as f64 / subscribers as f64
    );
    Ok(())
}

/// The allocator the `jobgraph` binary runs with, so that the figures are the server's.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
