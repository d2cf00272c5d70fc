//! Load benchmark of the job history: `workspace.jobs(first: 50)` over a workspace with a million
//! jobs on PostgreSQL, measured over HTTP with wrk.
//!
//! ```sh
//! cargo bench --bench history
//! ```
//!
//! It creates a fresh database on the `BENCH_DATABASE_URL` server, starts the real server on a
//! free port (as the integration tests do), seeds `BENCH_JOBS` jobs with a few `INSERT ... SELECT
//! FROM generate_series` statements, then runs wrk against the first page and against a page deep
//! in the history, prints requests/s and latency percentiles against the targets (3,000
//! requests/s for a page of 50; a deep page's p99 within 1.5x of the first page's), and drops
//! the database.
//!
//! Environment (all optional):
//!
//! | variable | default | |
//! |---|---|---|
//! | `BENCH_DATABASE_URL` | `postgres://postgres@127.0.0.1:5432/test?sslmode=disable` | a server where the user may create databases |
//! | `BENCH_JOBS` | `1000000` | jobs in the workspace |
//! | `BENCH_DEEP_OFFSET` | 90% of `BENCH_JOBS` | the deep page follows the `BENCH_DEEP_OFFSET + 1` newest jobs |
//! | `BENCH_CONNECTIONS` | `8,32` | wrk connections: each value in the list is a run of both pages |
//! | `BENCH_THREADS` | `2` | wrk threads |
//! | `BENCH_DURATION` | `15s` | each measured wrk run, after a `BENCH_WARMUP` (`3s`) run |
//! | `BENCH_WORKERS` | the number of cores | tokio worker threads of the server |
//! | `JOBGRAPH_DB_POOL_SIZE` | `32` | the server's database connections, as `jobgraph serve` reads it |
//! | `BENCH_KEEP_DB` | unset | `1` keeps the database (its URL is printed) |
//! | `BENCH_STRICT` | unset | `1` exits with status 1 when a target is missed |
//! | `RUST_LOG` | unset | logs of the server, e.g. `jobgraph=debug` |

#[path = "support/cpu.rs"]
mod cpu;

use cpu::{CpuSample, CpuUse};
use std::fmt::Write as _;
use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context as _, anyhow, bail, ensure};
use entity::ids::{JobId, UserId, WorkspaceId};
use entity::membership::Role;
use jobgraph::access::Viewer;
use jobgraph::config::Config;
use jobgraph::db::QueryStats;
use jobgraph::ids;
use jobgraph::{App, users, workspaces};
use sea_orm::{
    ColumnTrait as _, ConnectionTrait as _, Database, DatabaseConnection, EntityTrait as _,
    QueryFilter as _, QueryOrder as _, QuerySelect as _,
};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// PostgreSQL on this machine, reached without TLS as a co-located database is: encrypting
/// loopback traffic would only measure the cipher.
const DEFAULT_DATABASE_URL: &str = "postgres://postgres@127.0.0.1:5432/test?sslmode=disable";
const PAGE_SIZE: usize = 50;
/// Requests per second a page of 50 must reach.
const TARGET_RPS: f64 = 3000.0;
/// How much slower (p99) a deep page may be than the first.
const TARGET_DEEP_RATIO: f64 = 1.5;
/// Rows per seeding statement: a progress line each, and no single huge transaction.
const SEED_CHUNK: u64 = 250_000;
/// Milliseconds between two seeded jobs: a million jobs span about 23 days.
const SEED_STEP_MS: i64 = 2_000;

const HISTORY_QUERY: &str = "query($ws: ID!, $after: String) { workspace(id: $ws) { jobs(first: 50, after: $after) { edges { node { id name status toolName creditCost createdAt submitter { email } } } pageInfo { endCursor hasNextPage } } } }";

/// The submitters of the seeded jobs, besides the administrator who owns the workspace.
const SUBMITTERS: [&str; 5] = [
    "ada@bench.example",
    "barbara@bench.example",
    "claude@bench.example",
    "dorothy@bench.example",
    "edsger@bench.example",
];

struct Settings {
    database_url: String,
    jobs: u64,
    deep_offset: u64,
    connections: Vec<u32>,
    threads: u32,
    duration: String,
    warmup: String,
    workers: usize,
    keep_db: bool,
    strict: bool,
}

impl Settings {
    fn from_env() -> anyhow::Result<Self> {
        fn var(name: &str) -> Option<String> {
            std::env::var(name).ok().filter(|v| !v.trim().is_empty())
        }
        fn parsed<T: std::str::FromStr>(name: &str, default: T) -> anyhow::Result<T>
        where
            T::Err: std::fmt::Display,
        {
            match var(name) {
                None => Ok(default),
                Some(v) => v
                    .trim()
                    .replace('_', "")
                    .parse()
                    .map_err(|err| anyhow!("{name}={v}: {err}")),
            }
        }
        let jobs: u64 = parsed("BENCH_JOBS", 1_000_000)?;
        ensure!(
            jobs > PAGE_SIZE as u64 * 2,
            "BENCH_JOBS must be more than {}",
            PAGE_SIZE * 2
        );
        let deep_offset: u64 = parsed("BENCH_DEEP_OFFSET", jobs / 10 * 9)?;
        ensure!(
            deep_offset + PAGE_SIZE as u64 + 1 < jobs,
            "BENCH_DEEP_OFFSET must leave more than a page after it"
        );
        let connections = var("BENCH_CONNECTIONS")
            .unwrap_or_else(|| "8,32".to_owned())
            .split(',')
            .map(|c| {
                c.trim()
                    .parse::<u32>()
                    .map_err(|err| anyhow!("BENCH_CONNECTIONS: `{c}`: {err}"))
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        Ok(Settings {
            database_url: var("BENCH_DATABASE_URL").unwrap_or_else(|| DEFAULT_DATABASE_URL.into()),
            jobs,
            deep_offset,
            connections,
            threads: parsed("BENCH_THREADS", 2)?,
            duration: var("BENCH_DURATION").unwrap_or_else(|| "15s".into()),
            warmup: var("BENCH_WARMUP").unwrap_or_else(|| "3s".into()),
            workers: parsed("BENCH_WORKERS", cores)?,
            keep_db: var("BENCH_KEEP_DB").is_some_and(|v| v != "0"),
            strict: var("BENCH_STRICT").is_some_and(|v| v != "0"),
        })
    }
}

fn main() -> ExitCode {
    // `cargo bench` passes `--bench`; a filter argument would make no sense here.
    match real_main() {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(err) => {
            eprintln!("history bench failed: {err:#}");
            ExitCode::FAILURE
        }
    }
}

/// Runs the benchmark; `Ok(false)` when a target was missed under `BENCH_STRICT`.
fn real_main() -> anyhow::Result<bool> {
    let settings = Settings::from_env()?;
    if std::env::var_os("RUST_LOG").is_some() {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_writer(std::io::stderr)
            .init();
    }
    let wrk = find_wrk()?;
    // Two runs at once would share the cores and measure each other.
    let lock_path = std::env::temp_dir().join("jobgraph-history-bench.lock");
    let lock = std::fs::File::create(&lock_path)?;
    if lock.try_lock().is_err() {
        println!(
            "another history bench is running on this machine; waiting for it ({})",
            lock_path.display()
        );
        lock.lock()?;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(settings.workers)
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let (admin, name, url) = create_database(&settings.database_url).await?;
        // Interrupted, the run still drops its database.
        let outcome = tokio::select! {
            outcome = bench(&settings, &wrk, &url) => outcome,
            signal = interrupted() => Err(anyhow!("interrupted by {signal}")),
        };
        if settings.keep_db {
            println!("kept the database {url}");
        } else {
            let dropped = admin
                .execute_unprepared(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                .await;
            match dropped {
                Ok(_) => println!("dropped the database {name}"),
                Err(err) => eprintln!("could not drop the database {name}: {err}"),
            }
        }
        admin.close().await.ok();
        let met = outcome?;
        Ok(met || !settings.strict)
    })
}

/// Waits for Ctrl-C or SIGTERM; returns which.
async fn interrupted() -> &'static str {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("a SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => "Ctrl-C",
        _ = term.recv() => "SIGTERM",
    }
}

/// The wrk binary, or an error telling how to install it.
fn find_wrk() -> anyhow::Result<std::path::PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join("wrk"))
        .find(|candidate| candidate.is_file())
        .ok_or_else(|| {
            anyhow!(
                "wrk was not found on PATH: this benchmark drives the server with it. \
                 Install it (Debian/Ubuntu: `apt-get install wrk`) and run again"
            )
        })
}

/// Creates `jobgraph_bench_<random>` on the server of `base`; returns an administrative
/// connection, the database name and its URL.
async fn create_database(base: &str) -> anyhow::Result<(DatabaseConnection, String, String)> {
    ensure!(
        base.starts_with("postgres://") || base.starts_with("postgresql://"),
        "BENCH_DATABASE_URL must be a PostgreSQL URL, got {base}"
    );
    let admin = Database::connect(base)
        .await
        .with_context(|| format!("connecting to {}", jobgraph::db::redact(base)))?;
    let name = format!("jobgraph_bench_{}", Uuid::new_v4().simple());
    admin
        .execute_unprepared(&format!("CREATE DATABASE {name}"))
        .await
        .context("creating the bench database (may this user create databases?)")?;
    let (without_query, query) = match base.split_once('?') {
        Some((url, query)) => (url, Some(query)),
        None => (base, None),
    };
    let (server, _) = without_query
        .rsplit_once('/')
        .filter(|(server, _)| server.ends_with(|c: char| c != '/'))
        .ok_or_else(|| anyhow!("BENCH_DATABASE_URL must end in /database"))?;
    let mut url = format!("{server}/{name}");
    if let Some(query) = query {
        write!(url, "?{query}").unwrap();
    }
    println!("created the database {name}");
    Ok((admin, name, url))
}

/// Everything between creating and dropping the database; `Ok(met)` says whether every target
/// was met.
async fn bench(settings: &Settings, wrk: &Path, database_url: &str) -> anyhow::Result<bool> {
    // The server, built exactly as the integration tests build it.
    let dir = tempfile::tempdir()?;
    let mut config = Config::defaults();
    config.database.data_dir = dir.path().to_owned();
    config.database.database_url = Some(database_url.to_owned());
    config.server.listen = "127.0.0.1:0".parse().unwrap();
    // An API-only node, as in the integration tests: no worker pool polling the queue.
    config.server.workers = 0;
    let listener = TcpListener::bind(config.server.listen).await?;
    let addr = listener.local_addr()?;
    config.server.public_url = Some(format!("http://{addr}"));
    let app = App::build(config).await.context("building the app")?;
    let db = app.state.db.clone();
    let stats = app.state.query_stats.clone();
    let first = users::bootstrap_admin(&db, "admin@localhost")
        .await?
        .ok_or_else(|| anyhow!("a fresh database has no users"))?;
    let token = first.secret;
    let shutdown = CancellationToken::new();
    let server = tokio::spawn(app.serve(listener, shutdown.clone()));

    let outcome = seed_and_measure(settings, wrk, &db, &stats, &token, addr).await;

    shutdown.cancel();
    match tokio::time::timeout(Duration::from_secs(30), server).await {
        Ok(Ok(Ok(()))) => {}
        Ok(Ok(Err(err))) => eprintln!("the server stopped with an error: {err:#}"),
        Ok(Err(err)) => eprintln!("the server task failed: {err}"),
        Err(_) => eprintln!("the server did not stop within 30 s"),
    }
    outcome
}

async fn seed_and_measure(
    settings: &Settings,
    wrk: &Path,
    db: &DatabaseConnection,
    stats: &QueryStats,
    token: &str,
    addr: std::net::SocketAddr,
) -> anyhow::Result<bool> {
    let viewer = users::tokens::authenticate(db, token).await?;
    let workspace = workspaces::create(db, &viewer, "bench").await?;
    let mut submitters = Vec::with_capacity(SUBMITTERS.len());
    for email in SUBMITTERS {
        let user = users::create_user(db, &Viewer::System, email, None, false).await?;
        workspaces::members::add(db, &viewer, workspace.id, email, Role::Member).await?;
        submitters.push(user.id);
    }

    println!(
        "seeding {} jobs into workspace {} ...",
        settings.jobs,
        ids::encode(workspace.id).as_str()
    );
    let started = Instant::now();
    seed_jobs(db, workspace.id, &submitters, settings.jobs).await?;
    let inserted = started.elapsed();
    db.execute_unprepared("VACUUM (ANALYZE) jobs, job_keys")
        .await?;
    let seeding = started.elapsed();
    // Writes out the seeded gigabyte now rather than in a checkpoint during a measured run
    // (best effort: it needs superuser or pg_checkpoint).
    if let Err(err) = db.execute_unprepared("CHECKPOINT").await {
        println!("(no CHECKPOINT after seeding: {err})");
    }
    let table_size: (String, String) = {
        use sea_orm::{FromQueryResult as _, JsonValue, Statement};
        let row = JsonValue::find_by_statement(Statement::from_string(
            db.get_database_backend(),
            "SELECT pg_size_pretty(pg_table_size('jobs')) AS heap, \
                    pg_size_pretty(pg_indexes_size('jobs')) AS indexes",
        ))
        .one(db)
        .await?
        .ok_or_else(|| anyhow!("no size row"))?;
        (
            row["heap"].as_str().unwrap_or("?").to_owned(),
            row["indexes"].as_str().unwrap_or("?").to_owned(),
        )
    };
    println!(
        "seeded {} jobs in {:.1} s (INSERT {:.1} s, VACUUM ANALYZE {:.1} s); jobs table {}, its indexes {}",
        settings.jobs,
        seeding.as_secs_f64(),
        inserted.as_secs_f64(),
        (seeding - inserted).as_secs_f64(),
        table_size.0,
        table_size.1
    );

    // The deep page: the jobs after the one `deep_offset` jobs from the newest.
    let newest = history_ids(db, workspace.id, 0, 1).await?;
    let around_deep = history_ids(db, workspace.id, settings.deep_offset, 2).await?;
    let deep_cursor = jobgraph::pagination::encode_cursor(around_deep[0]);
    let ws = ids::encode(workspace.id).to_string();
    let pages = [
        Page {
            label: "first".to_owned(),
            body: json!({ "query": HISTORY_QUERY, "variables": { "ws": ws } }),
            first_job: newest[0],
        },
        Page {
            label: format!("deep (after {})", settings.deep_offset + 1),
            body: json!({ "query": HISTORY_QUERY, "variables": { "ws": ws, "after": deep_cursor } }),
            first_job: around_deep[1],
        },
    ];

    let url = format!("http://{addr}/graphql");
    let client = reqwest::Client::new();
    for page in &pages {
        let started = Instant::now();
        check_page(&client, &url, token, page).await?;
        println!(
            "checked the {} page: 200, {PAGE_SIZE} edges, no errors ({:.1} ms cold)",
            page.label,
            started.elapsed().as_secs_f64() * 1000.0
        );
    }

    // Other work on the machine would take cores from the server, PostgreSQL and wrk.
    if let Some(before) = CpuSample::take() {
        tokio::time::sleep(Duration::from_secs(2)).await;
        if let Some(after) = CpuSample::take() {
            let idle = after.since(&before, "server", "wrk and the rest");
            println!("before loading: {idle}");
            if idle.machine > 0.25 {
                println!(
                    "WARNING: the machine is busy with other work ({:.2} cores); the figures below \
                     will be lower than on a quiet machine",
                    idle.machine
                );
            }
        }
    }

    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let mut results = Vec::new();
    for &connections in &settings.connections {
        for page in &pages {
            let script = tempfile::Builder::new()
                .prefix("history-bench-")
                .suffix(".lua")
                .tempfile()?;
            std::fs::write(script.path(), wrk_script(&page.body, token))?;
            let run = |duration: &str| {
                wrk_command(
                    wrk,
                    settings.threads,
                    connections,
                    duration,
                    script.path(),
                    &url,
                )
            };
            println!(
                "wrk -t{} -c{connections} -d{} --latency: {} page (after a {} warm-up)",
                settings.threads, settings.duration, page.label, settings.warmup
            );
            run_wrk(run(&settings.warmup)).await?;
            let (queries, query_micros) = (stats.count(), stats.micros());
            let cpu = CpuSample::take();
            let output = run_wrk(run(&settings.duration)).await?;
            let cpu = cpu
                .zip(CpuSample::take())
                .map(|(a, b)| b.since(&a, "server", "wrk and the rest"));
            let mut result = WrkResult::parse(&output)
                .with_context(|| format!("reading wrk's output:\n{output}"))?;
            let queries = stats.count() - queries;
            result.queries_per_request = queries as f64 / result.requests.max(1) as f64;
            result.query_ms =
                (stats.micros() - query_micros) as f64 / 1000.0 / queries.max(1) as f64;
            result.cpu = cpu;
            ensure!(
                result.bad_status == 0 && result.graphql_errors == 0 && result.socket_errors == 0,
                "the {} page failed under load: {} non-200 responses, {} responses with errors, \
                 {} socket errors\n{output}",
                page.label,
                result.bad_status,
                result.graphql_errors,
                result.socket_errors
            );
            println!(
                "  {:.0} requests/s, p50 {}, p99 {}; {:.2} SQL statements per request, {:.3} ms each",
                result.rps,
                ms(result.p50),
                ms(result.p99),
                result.queries_per_request,
                result.query_ms
            );
            if let Some(cpu) = &result.cpu {
                println!("  CPU: {cpu}");
            }
            results.push((connections, page.label.clone(), result));
        }
        // The pages must still answer correctly after the load.
        for page in &pages {
            check_page(&client, &url, token, page).await?;
        }
    }

    // The summary.
    println!();
    println!(
        "History benchmark: {} jobs in one workspace, PostgreSQL, {cores} cores, page of {PAGE_SIZE}, \
         wrk -t{} -d{} --latency (server, PostgreSQL and wrk share the machine)",
        settings.jobs, settings.threads, settings.duration
    );
    println!(
        "{:<22} {:>5} {:>12} {:>10} {:>10} {:>10} {:>9} {:>9}",
        "page", "conns", "requests/s", "p50", "p90", "p99", "SQL/req", "ms/SQL"
    );
    for (connections, label, r) in &results {
        println!(
            "{label:<22} {connections:>5} {:>12.0} {:>10} {:>10} {:>10} {:>9.2} {:>9.3}",
            r.rps,
            ms(r.p50),
            ms(r.p90),
            ms(r.p99),
            r.queries_per_request,
            r.query_ms
        );
    }
    for (connections, label, r) in &results {
        if let Some(cpu) = &r.cpu {
            println!("CPU, {label} -c{connections}: {cpu}");
        }
    }
    let mut all_met = true;
    for pair in results.chunks(2) {
        let [(connections, _, first), (_, _, deep)] = pair else {
            continue;
        };
        let ratio = deep.p99 / first.p99;
        let rps_met = first.rps >= TARGET_RPS && deep.rps >= TARGET_RPS;
        let ratio_met = ratio <= TARGET_DEEP_RATIO;
        all_met &= rps_met && ratio_met;
        println!(
            "-c{connections}: deep/first p99 ratio {ratio:.2} (p50 ratio {:.2})",
            deep.p50 / first.p50
        );
        println!(
            "  target >= {TARGET_RPS:.0} requests/s: {} (first {:.0}, deep {:.0})",
            verdict(rps_met),
            first.rps,
            deep.rps
        );
        println!(
            "  target deep p99 <= {TARGET_DEEP_RATIO}x first p99: {} ({ratio:.2}x)",
            verdict(ratio_met)
        );
    }
    Ok(all_met)
}

fn verdict(met: bool) -> &'static str {
    if met { "MET" } else { "NOT MET" }
}

fn ms(seconds: f64) -> String {
    format!("{:.2}ms", seconds * 1000.0)
}

/// One page to load: its request body and the job it must start with.
struct Page {
    label: String,
    body: Value,
    first_job: JobId,
}

/// The ids of `count` jobs of the workspace after skipping `offset` from the newest.
async fn history_ids(
    db: &DatabaseConnection,
    workspace: WorkspaceId,
    offset: u64,
    count: u64,
) -> anyhow::Result<Vec<JobId>> {
    use entity::job;
    let ids: Vec<JobId> = job::Entity::find()
        .filter(job::Column::WorkspaceId.eq(workspace))
        .select_only()
        .column(job::Column::Id)
        .order_by_desc(job::Column::Id)
        .offset(offset)
        .limit(count)
        .into_tuple()
        .all(db)
        .await?;
    ensure!(ids.len() as u64 == count, "fewer jobs than expected");
    Ok(ids)
}

/// Sends a page's request once: 200, a full page starting at the expected job, no errors.
async fn check_page(
    client: &reqwest::Client,
    url: &str,
    token: &str,
    page: &Page,
) -> anyhow::Result<()> {
    let response = client
        .post(url)
        .bearer_auth(token)
        .json(&page.body)
        .send()
        .await?;
    let status = response.status();
    let body: Value = response.json().await?;
    ensure!(
        status == reqwest::StatusCode::OK,
        "the {} page answered {status}: {body}",
        page.label
    );
    ensure!(
        body.get("errors").is_none(),
        "the {} page has errors: {body}",
        page.label
    );
    let jobs = &body["data"]["workspace"]["jobs"];
    let edges = jobs["edges"].as_array().map_or(0, Vec::len);
    ensure!(
        edges == PAGE_SIZE,
        "the {} page has {edges} edges, not {PAGE_SIZE}",
        page.label
    );
    ensure!(
        jobs["pageInfo"]["hasNextPage"] == true,
        "the {} page should have a next page",
        page.label
    );
    let expected = ids::encode(page.first_job).to_string();
    ensure!(
        jobs["edges"][0]["node"]["id"] == expected.as_str(),
        "the {} page starts at {}, not {expected}",
        page.label,
        jobs["edges"][0]["node"]["id"]
    );
    ensure!(
        jobs["edges"][0]["node"]["submitter"]["email"].is_string(),
        "the {} page has no submitter e-mail",
        page.label
    );
    Ok(())
}

/// Seeds `count` jobs into the workspace with a few `INSERT ... SELECT` statements, each with
/// the jobs' keys (`job_keys`), as a submission writes them.
///
/// Job `i` (1 is the oldest) is created `SEED_STEP_MS` after job `i - 1`, up to about now. Its
/// id is UUIDv7-shaped: 48 bits of the creation time in milliseconds, the version nibble 7, the
/// variant bits and `i`, so ordering by id is ordering by creation time, as with real UUIDv7
/// ids. Tools cycle through four of the catalog; statuses are mostly COMPLETED, with FAILED
/// (refunded), TIMEOUT (refunded) and CANCELLED mixed in, and one in ten of the newest thousand
/// still PROCESSING under a long lease (so the first page holds about five running jobs). No job
/// is PENDING or QUEUED, so nothing is left for a worker to pick up.
async fn seed_jobs(
    db: &DatabaseConnection,
    workspace: WorkspaceId,
    submitters: &[UserId],
    count: u64,
) -> anyhow::Result<()> {
    let now_ms = chrono::Utc::now().timestamp_millis();
    let start_ms = now_ms - count as i64 * SEED_STEP_MS;
    let submitters = submitters
        .iter()
        .map(|id| format!("'{id}'"))
        .collect::<Vec<_>>()
        .join(",");
    let nsubmitters = SUBMITTERS.len();
    let fasta = format!(">seq1 bench\\n{}\\n", "ACGT".repeat(60));
    let mut from = 1;
    while from <= count {
        let to = (from + SEED_CHUNK - 1).min(count);
        let chunk_started = Instant::now();
        // `h` is a well-mixed number per job, for the choices that should look random.
        let sql = format!(
            r#"
WITH inserted AS (INSERT INTO jobs (
    id, workspace_id, submitter_id, tool, tool_version, name, status, stage, progress,
    inputs, settings, result, error_message, error_code, attempt, max_attempts, credit_cost,
    refunded, visibility, priority, parent_id, parent_kind, batch_id, idempotency_key,
    resources, created_at, updated_at, queued_at, started_at, finished_at, run_after,
    worker_id, lease_expires_at, heartbeat_at)
SELECT
    (lpad(to_hex(g.ms), 12, '0') || '7' || lpad(to_hex(g.i % 4096), 3, '0')
        || '8' || lpad(to_hex(g.i), 15, '0'))::uuid,
    '{workspace}'::uuid,
    (ARRAY[{submitters}]::uuid[])[1 + (g.h / 7) % {nsubmitters}],
    g.tool,
    '1.0.0',
    g.tool || ' #' || g.i,
    g.status,
    CASE g.status WHEN 'COMPLETED' THEN 'Done' WHEN 'PROCESSING' THEN 'Working' END,
    CASE g.status WHEN 'COMPLETED' THEN 1.0 WHEN 'PROCESSING' THEN 0.5 ELSE 0.25 END,
    CASE WHEN g.tool IN ('kmer-count', 'sequence-stats') THEN
        jsonb_build_object('sequences', jsonb_build_object(
            'kind', 'TEXT', 'text', E'{fasta}', 'bytes', {fasta_bytes}))
    ELSE '{{}}'::jsonb END,
    CASE g.tool
        WHEN 'sleep' THEN jsonb_build_object('seconds', g.h % 30,
            'stages', jsonb_build_array('Preparing', 'Working', 'Finishing'))
        WHEN 'kmer-count' THEN jsonb_build_object('k', 1 + g.h % 12, 'top', 20)
        WHEN 'sequence-stats' THEN jsonb_build_object('min_length', 0)
        ELSE '{{}}'::jsonb END,
    CASE WHEN g.status = 'COMPLETED' THEN
        jsonb_build_object('sequences', 1, 'total_length', 240, 'gc_content', 0.5)
    END,
    CASE g.status WHEN 'FAILED' THEN 'the run exited with status 1'
        WHEN 'TIMEOUT' THEN 'the run took longer than its limit' END,
    CASE g.status WHEN 'FAILED' THEN 'RUN_FAILED' WHEN 'TIMEOUT' THEN 'TIMEOUT' END,
    CASE WHEN g.status = 'FAILED' AND g.tool <> 'noop' THEN 3 ELSE 1 END,
    CASE g.tool WHEN 'noop' THEN 1 ELSE 3 END,
    CASE g.tool WHEN 'sleep' THEN 1 + g.h % 30 WHEN 'kmer-count' THEN 3 + g.h % 12
        WHEN 'sequence-stats' THEN 2 ELSE 0 END,
    g.status IN ('FAILED', 'TIMEOUT'),
    CASE WHEN g.h % 10 = 0 THEN 'PUBLIC' ELSE 'PRIVATE' END,
    0,
    NULL, NULL, NULL, NULL,
    CASE WHEN g.status <> 'PROCESSING' THEN
        jsonb_build_object('wall_seconds', g.h % 60, 'cpu_seconds', g.h % 50,
            'max_rss_bytes', 1048576 * (1 + g.h % 64))
    END,
    g.created_at,
    g.created_at + make_interval(secs => 1 + g.h % 60),
    g.created_at,
    g.created_at + interval '1 second',
    CASE WHEN g.status <> 'PROCESSING' THEN g.created_at + make_interval(secs => 1 + g.h % 60) END,
    NULL,
    CASE WHEN g.status = 'PROCESSING' THEN 'bench-worker' END,
    CASE WHEN g.status = 'PROCESSING' THEN now() + interval '30 days' END,
    CASE WHEN g.status = 'PROCESSING' THEN now() END
FROM (
    SELECT s.i, s.ms, s.h, to_timestamp(s.ms / 1000.0) AS created_at,
        (ARRAY['sleep', 'kmer-count', 'sequence-stats', 'noop'])[1 + (s.h / 3) % 4] AS tool,
        CASE
            WHEN s.i > {count} - 1000 AND s.h % 100 < 10 THEN 'PROCESSING'
            WHEN s.h % 100 < 80 THEN 'COMPLETED'
            WHEN s.h % 100 < 90 THEN 'FAILED'
            WHEN s.h % 100 < 95 THEN 'CANCELLED'
            ELSE 'TIMEOUT'
        END AS status
    FROM (
        SELECT i, {start_ms}::bigint + i * {SEED_STEP_MS} AS ms,
            ((i * 2654435761) % 4294967296) / 65536 AS h
        FROM generate_series({from}::bigint, {to}::bigint) AS i
    ) s
) g
RETURNING id, workspace_id, tool, submitter_id)
INSERT INTO job_keys (job_id, workspace_id, tool, submitter_id)
SELECT id, workspace_id, tool, submitter_id FROM inserted"#,
            fasta_bytes = fasta.len() - 2,
        );
        db.execute_unprepared(&sql)
            .await
            .with_context(|| format!("seeding jobs {from} to {to}"))?;
        println!(
            "  jobs {from}..={to} in {:.1} s",
            chunk_started.elapsed().as_secs_f64()
        );
        from = to + 1;
    }
    Ok(())
}

/// The wrk script: the request, plus counters of bad answers printed at the end.
fn wrk_script(body: &Value, token: &str) -> String {
    let body = body.to_string();
    assert!(!body.contains("]==]"), "the body fits a Lua long string");
    format!(
        r#"wrk.method = "POST"
wrk.body = [==[{body}]==]
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer {token}"

local threads = {{}}

function setup(thread)
  table.insert(threads, thread)
end

function init(args)
  bad_status = 0
  graphql_errors = 0
end

function response(status, headers, body)
  if status ~= 200 then
    bad_status = bad_status + 1
  elseif string.find(body, '"errors"', 1, true) then
    graphql_errors = graphql_errors + 1
  end
end

function done(summary, latency, requests)
  local bad, errors = 0, 0
  for _, thread in ipairs(threads) do
    bad = bad + thread:get("bad_status")
    errors = errors + thread:get("graphql_errors")
  end
  io.write(string.format("BENCH bad_status=%d graphql_errors=%d\n", bad, errors))
  io.write(string.format("BENCH p50_us=%d p90_us=%d p99_us=%d\n",
    latency:percentile(50), latency:percentile(90), latency:percentile(99)))
end
"#
    )
}

fn wrk_command(
    wrk: &Path,
    threads: u32,
    connections: u32,
    duration: &str,
    script: &Path,
    url: &str,
) -> tokio::process::Command {
    let mut command = tokio::process::Command::new(wrk);
    command
        .arg(format!("-t{threads}"))
        .arg(format!("-c{connections}"))
        .arg(format!("-d{duration}"))
        .arg("--latency")
        .arg("--timeout")
        .arg("10s")
        .arg("-s")
        .arg(script)
        .arg(url)
        .kill_on_drop(true);
    command
}

async fn run_wrk(mut command: tokio::process::Command) -> anyhow::Result<String> {
    let output = command.output().await.context("running wrk")?;
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    if !output.status.success() {
        bail!(
            "wrk failed ({}): {stdout}{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(stdout)
}

/// What one wrk run measured. Latencies in seconds.
#[derive(Debug, Clone)]
struct WrkResult {
    requests: u64,
    rps: f64,
    p50: f64,
    p90: f64,
    p99: f64,
    bad_status: u64,
    graphql_errors: u64,
    socket_errors: u64,
    /// SQL statements the server ran per request, and their mean time.
    queries_per_request: f64,
    query_ms: f64,
    cpu: Option<CpuUse>,
}

impl WrkResult {
    /// Reads `Requests/sec:` and the `--latency` distribution (`50%`, `90%`, `99%`) of wrk's
    /// report, and the counters the script prints.
    fn parse(output: &str) -> anyhow::Result<Self> {
        let mut rps = None;
        let mut requests = None;
        let (mut p50, mut p90, mut p99) = (None, None, None);
        let (mut bad_status, mut graphql_errors, mut socket_errors) = (None, None, 0);
        for line in output.lines().map(str::trim) {
            let mut words = line.split_whitespace();
            match words.next() {
                Some("Requests/sec:") => rps = words.next().and_then(|v| v.parse().ok()),
                // 61234 requests in 15.10s, 512.34MB read
                Some(n) if line.contains(" requests in ") => requests = n.parse().ok(),
                Some("50%") => p50 = words.next().map(parse_duration).transpose()?,
                Some("90%") => p90 = words.next().map(parse_duration).transpose()?,
                Some("99%") => p99 = words.next().map(parse_duration).transpose()?,
                Some("Socket") => {
                    // Socket errors: connect 0, read 0, write 0, timeout 0
                    socket_errors = line
                        .split(|c: char| !c.is_ascii_digit())
                        .filter_map(|n| n.parse::<u64>().ok())
                        .sum();
                }
                Some("Non-2xx") => {
                    bad_status = line.rsplit(' ').next().and_then(|n| n.parse().ok());
                }
                Some("BENCH") => {
                    for pair in words {
                        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
                        let value: Option<u64> = value.parse().ok();
                        match key {
                            "bad_status" => bad_status = bad_status.max(value),
                            "graphql_errors" => graphql_errors = value,
                            _ => {}
                        }
                    }
                }
                _ => {}
            }
        }
        Ok(WrkResult {
            requests: requests.ok_or_else(|| anyhow!("no `requests in` line"))?,
            rps: rps.ok_or_else(|| anyhow!("no Requests/sec line"))?,
            p50: p50.ok_or_else(|| anyhow!("no 50% line"))?,
            p90: p90.ok_or_else(|| anyhow!("no 90% line"))?,
            p99: p99.ok_or_else(|| anyhow!("no 99% line"))?,
            bad_status: bad_status.unwrap_or(0),
            graphql_errors: graphql_errors.unwrap_or(0),
            socket_errors,
            queries_per_request: 0.0,
            query_ms: 0.0,
            cpu: None,
        })
    }
}

/// A wrk duration such as `523.00us`, `1.25ms`, `2.01s` or `1.05m`, in seconds.
fn parse_duration(text: &str) -> anyhow::Result<f64> {
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .ok_or_else(|| anyhow!("`{text}` has no unit"))?;
    let (number, unit) = text.split_at(split);
    let number: f64 = number.parse().map_err(|err| anyhow!("`{text}`: {err}"))?;
    let scale = match unit {
        "us" => 1e-6,
        "ms" => 1e-3,
        "s" => 1.0,
        "m" => 60.0,
        "h" => 3600.0,
        _ => bail!("`{text}`: unknown unit"),
    };
    Ok(number * scale)
}

/// The allocator the `jobgraph` binary runs with, so that the figures are the server's.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
