//! Throughput and latency of the queue: jobs of a no-op tool submitted through the real
//! submission service and run by the real worker, on SQLite and on PostgreSQL.
//!
//! ```sh
//! cargo bench --bench queue
//! ```
//!
//! For each database it builds the app on a fresh database (a SQLite file in a temporary
//! directory; on PostgreSQL a new `jobgraph_bench_<random>` database, dropped afterwards) with a
//! tools file declaring `noop` at one credit, so that every job has its charge and ledger entry.
//!
//! 1. Throughput: grants credits, submits `BENCH_JOBS` jobs (in batches through
//!    `jobs::service::submit_batch`, timed apart), then starts an in-process worker and times until
//!    every job is COMPLETED: from the worker's start to the last `finished_at`. Then it checks
//!    that every job is COMPLETED with its three timeline events and its live entries, and that
//!    the ledger sums to the balance; it fails loudly otherwise.
//! 2. Latency on an idle queue: with the worker idle and listening, submits `BENCH_LATENCY_JOBS`
//!    jobs one at a time (`jobs::service::submit`, whose commit wakes the workers of this
//!    process), `BENCH_LATENCY_GAP_MS` apart, and reports `started_at - queued_at`.
//!
//! Environment (all optional):
//!
//! | variable | default | |
//! |---|---|---|
//! | `BENCH_DATABASE_URL` | `sqlite,postgres://postgres@127.0.0.1:5432/test?sslmode=disable` | databases to run on, comma-separated: `sqlite` (a temporary file) or a PostgreSQL server where the user may create databases |
//! | `BENCH_JOBS` | `20000` | jobs of the throughput phase |
//! | `BENCH_CONCURRENCY` | `512` | the worker's concurrency |
//! | `BENCH_STAGES` | `0` | stages each job of the throughput phase reports, one progress report and timeline row each (a tool `staged`, the built-in `sleep` of 0 s); `0`: the no-op tool |
//! | `BENCH_WORKERS` | `1` | workers (each with its own claims and completion writer), as worker processes would run |
//! | `BENCH_LATENCY_JOBS` | `500` | jobs of the latency phase |
//! | `BENCH_LATENCY_GAP_MS` | `5` | pause between two of them |
//! | `BENCH_LOCAL_WAKE` | `1` | `0`: the worker does not hear this process's submissions, it learns of them by `NOTIFY` (PostgreSQL) or its poll |
//! | `BENCH_THREADS` | the number of cores | tokio worker threads |
//! | `BENCH_SETUP_SQL` | unset | statements run on each fresh database after migrating, to try an index or a setting |
//! | `BENCH_KEEP_DB` | unset | `1` keeps the PostgreSQL database and prints its URL |
//! | `BENCH_STRICT` | unset | `1` exits with status 1 when a target is missed |
//! | `RUST_LOG` | unset | logs, e.g. `jobgraph=debug` |

#[path = "support/cpu.rs"]
mod cpu;

use cpu::{CpuSample, CpuUse};
use std::fmt::Write as _;
use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context as _, anyhow, bail, ensure};
use chrono::Utc;
use entity::ids::{JobId, WorkspaceId};
use entity::job::{self, JobStatus};
use jobgraph::config::Config;
use jobgraph::jobs::service::{self, Submission, SubmitOptions};
use jobgraph::{App, credits, users, workspaces};
use sea_orm::{
    ColumnTrait as _, ConnectionTrait as _, Database, DatabaseConnection, EntityTrait as _,
    QueryFilter as _, Statement,
};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

const DEFAULT_DATABASES: &str = "sqlite,postgres://postgres@127.0.0.1:5432/test?sslmode=disable";
/// Jobs per second, end to end, each database must reach.
const TARGET_SQLITE_JPS: f64 = 5_000.0;
const TARGET_POSTGRES_JPS: f64 = 15_000.0;
/// QUEUED to PROCESSING p99 on an idle PostgreSQL queue, in milliseconds.
const TARGET_POSTGRES_P99_MS: f64 = 10.0;
/// Jobs per submitted batch (the service's maximum).
const SUBMIT_BATCH: usize = service::MAX_BATCH_JOBS;

/// The no-op tool at one credit: every job is charged.
const TOOLS: &str = include_str!("support/noop-tools.toml");

struct Settings {
    databases: Vec<String>,
    jobs: usize,
    concurrency: usize,
    stages: usize,
    workers: usize,
    latency_jobs: usize,
    latency_gap: Duration,
    local_wake: bool,
    threads: usize,
    setup_sql: Option<String>,
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
        let databases: Vec<String> = var("BENCH_DATABASE_URL")
            .unwrap_or_else(|| DEFAULT_DATABASES.to_owned())
            .split(',')
            .map(|d| d.trim().to_owned())
            .filter(|d| !d.is_empty())
            .collect();
        for database in &databases {
            ensure!(
                database == "sqlite"
                    || database.starts_with("postgres://")
                    || database.starts_with("postgresql://"),
                "BENCH_DATABASE_URL: `{database}` is neither `sqlite` nor a PostgreSQL URL"
            );
        }
        let jobs = parsed("BENCH_JOBS", 20_000)?;
        ensure!(jobs > 0, "BENCH_JOBS must be positive");
        let concurrency = parsed("BENCH_CONCURRENCY", 512)?;
        ensure!(concurrency > 0, "BENCH_CONCURRENCY must be positive");
        let stages = parsed("BENCH_STAGES", 0)?;
        ensure!(stages <= 20, "BENCH_STAGES is at most 20");
        let workers = parsed("BENCH_WORKERS", 1)?;
        ensure!(workers > 0, "BENCH_WORKERS must be positive");
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        Ok(Settings {
            databases,
            jobs,
            concurrency,
            stages,
            workers,
            latency_jobs: parsed("BENCH_LATENCY_JOBS", 500)?,
            latency_gap: Duration::from_millis(parsed("BENCH_LATENCY_GAP_MS", 5)?),
            local_wake: var("BENCH_LOCAL_WAKE").is_none_or(|v| v != "0"),
            threads: parsed("BENCH_THREADS", cores)?,
            setup_sql: var("BENCH_SETUP_SQL"),
            keep_db: var("BENCH_KEEP_DB").is_some_and(|v| v != "0"),
            strict: var("BENCH_STRICT").is_some_and(|v| v != "0"),
        })
    }
}

/// What one database reached.
struct Figures {
    database: &'static str,
    submit_seconds: f64,
    run_seconds: f64,
    jobs_per_second: f64,
    cpu: Option<CpuUse>,
    latency: Option<Latency>,
}

struct Latency {
    jobs: usize,
    median_ms: f64,
    p99_ms: f64,
    max_ms: f64,
}

fn main() -> ExitCode {
    match real_main() {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(err) => {
            eprintln!("queue bench failed: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn real_main() -> anyhow::Result<bool> {
    let settings = Settings::from_env()?;
    if std::env::var_os("RUST_LOG").is_some() {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_writer(std::io::stderr)
            .init();
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(settings.threads)
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let mut all = Vec::new();
        for database in &settings.databases {
            let figures = if database == "sqlite" {
                let dir = tempfile::tempdir()?;
                bench(&settings, "SQLite", dir.path(), None).await?
            } else {
                on_fresh_postgres(&settings, database).await?
            };
            all.push(figures);
        }
        Ok(report(&settings, &all) || !settings.strict)
    })
}

async fn on_fresh_postgres(settings: &Settings, base: &str) -> anyhow::Result<Figures> {
    let (admin, name, url) = create_database(base).await?;
    let dir = tempfile::tempdir()?;
    let outcome = bench(settings, "PostgreSQL", dir.path(), Some(&url)).await;
    if settings.keep_db {
        println!("kept the database {url}");
    } else {
        match admin
            .execute_unprepared(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
            .await
        {
            Ok(_) => println!("dropped the database {name}"),
            Err(err) => eprintln!("could not drop the database {name}: {err}"),
        }
    }
    admin.close().await.ok();
    outcome
}

/// Creates `jobgraph_bench_<random>` on the server of `base`; returns an administrative
/// connection, the database name and its URL.
async fn create_database(base: &str) -> anyhow::Result<(DatabaseConnection, String, String)> {
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
        .ok_or_else(|| anyhow!("a PostgreSQL URL must end in /database"))?;
    let mut url = format!("{server}/{name}");
    if let Some(query) = query {
        write!(url, "?{query}").unwrap();
    }
    println!("created the database {name}");
    Ok((admin, name, url))
}

/// Both phases on one database.
async fn bench(
    settings: &Settings,
    database: &'static str,
    dir: &Path,
    database_url: Option<&str>,
) -> anyhow::Result<Figures> {
    println!("== {database}");
    let tools = dir.join("tools.toml");
    std::fs::write(&tools, TOOLS)?;
    let mut config = Config::defaults();
    config.database.data_dir = dir.to_owned();
    config.database.database_url = database_url.map(str::to_owned);
    config.server.tools_file = Some(tools);
    config.server.workers = 0;
    let app = App::build(config).await.context("building the app")?;
    let db = app.state.db.clone();
    if let Some(sql) = &settings.setup_sql {
        db.execute_unprepared(sql)
            .await
            .context("running BENCH_SETUP_SQL")?;
        println!("ran BENCH_SETUP_SQL: {sql}");
    }
    let first = users::bootstrap_admin(&db, "admin@localhost")
        .await?
        .ok_or_else(|| anyhow!("a fresh database has no users"))?;
    let viewer = users::tokens::authenticate(&db, &first.secret).await?;
    let submitter = service::Submitter {
        db: &db,
        catalog: &app.state.catalog,
        files: &app.state.files,
        viewer: &viewer,
    };
    let workspace = workspaces::create(&db, &viewer, "bench").await?;
    let credits = (settings.jobs + settings.latency_jobs) as i64;
    credits::ledger::grant(&db, &viewer, workspace.id, credits, Some("bench".into())).await?;

    // Phase 1: a full queue.
    let started = Instant::now();
    let mut submitted = 0;
    while submitted < settings.jobs {
        let count = SUBMIT_BATCH.min(settings.jobs - submitted);
        let submissions = (0..count)
            .map(|i| staged(format!("job {}", submitted + i), settings.stages))
            .collect();
        service::submit_batch(
            submitter,
            workspace.id,
            None,
            submissions,
            service::SubmitOptions::default(),
        )
        .await?;
        submitted += count;
    }
    let submit_seconds = started.elapsed().as_secs_f64();
    println!(
        "submitted {} jobs in {:.2} s ({:.0} jobs/s)",
        settings.jobs,
        submit_seconds,
        settings.jobs as f64 / submit_seconds
    );

    // Each worker claims and writes its completions on its own, as worker processes would.
    let workers: Vec<_> = (0..settings.workers)
        .map(|_| {
            let mut worker = app.worker();
            worker.config.concurrency = settings.concurrency;
            if !settings.local_wake {
                // Deaf to the signal a submission's commit sends in this process.
                worker.wake = std::sync::Arc::new(tokio::sync::Notify::new());
            }
            worker
        })
        .collect();
    let shutdown = CancellationToken::new();
    let cpu_before = CpuSample::take();
    let start = Utc::now();
    let running: Vec<_> = workers
        .into_iter()
        .map(|worker| tokio::spawn(worker.run(shutdown.clone())))
        .collect();
    let finished = wait_until_final(&db, Duration::from_secs(600)).await?;
    let cpu = cpu_before
        .zip(CpuSample::take())
        .map(|(a, b)| b.since(&a, "worker", "the rest"));
    ensure!(finished, "jobs still unfinished after 10 minutes");
    let last = last_finished(&db).await?;
    let run_seconds = (last - start).num_microseconds().unwrap_or(0) as f64 / 1e6;
    let jobs_per_second = settings.jobs as f64 / run_seconds;
    println!(
        "ran {} jobs in {run_seconds:.2} s: {jobs_per_second:.0} jobs/s, {} worker(s) of concurrency {}",
        settings.jobs, settings.workers, settings.concurrency
    );
    if let Some(cpu) = &cpu {
        println!("while running: {cpu}");
    }
    let stage_rows = settings.jobs * settings.stages;
    check(&db, workspace.id, settings.jobs, stage_rows).await?;
    println!(
        "checked: {} jobs COMPLETED, {} timeline events and as many live entries each, ledger = balance",
        settings.jobs,
        3 + settings.stages
    );

    // Phase 2: an idle queue. The worker has settled since the last completion.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut ids = Vec::with_capacity(settings.latency_jobs);
    for i in 0..settings.latency_jobs {
        let job = service::submit(
            submitter,
            workspace.id,
            noop(format!("latency {i}")),
            SubmitOptions::default(),
        )
        .await?
        .job;
        ids.push(job.id);
        tokio::time::sleep(settings.latency_gap).await;
    }
    let latency = if ids.is_empty() {
        None
    } else {
        let finished = wait_until_final(&db, Duration::from_secs(60)).await?;
        ensure!(finished, "latency jobs still unfinished after a minute");
        Some(latency(&db, &ids).await?)
    };
    if let Some(l) = &latency {
        println!(
            "QUEUED to PROCESSING over {} jobs on an idle queue: median {:.2} ms, p99 {:.2} ms, max {:.2} ms",
            l.jobs, l.median_ms, l.p99_ms, l.max_ms
        );
    }
    check(&db, workspace.id, settings.jobs + ids.len(), stage_rows).await?;
    shutdown.cancel();
    for worker in running {
        worker.await?;
    }
    db.close().await.ok();
    Ok(Figures {
        database,
        submit_seconds,
        run_seconds,
        jobs_per_second,
        cpu,
        latency,
    })
}

/// A job that reports `stages` stages as it runs, or a no-op job.
fn staged(name: String, stages: usize) -> Submission {
    if stages == 0 {
        return noop(name);
    }
    let stages: Vec<String> = (1..=stages).map(|i| format!("stage {i}")).collect();
    Submission {
        tool: "staged".to_owned(),
        settings: Some(serde_json::json!({ "seconds": 0, "stages": stages })),
        ..noop(name)
    }
}

fn noop(name: String) -> Submission {
    Submission {
        tool: "noop".to_owned(),
        name: Some(name),
        inputs: Vec::new(),
        settings: None,
        priority: 0,
    }
}

/// Waits until no job is left unfinished; returns whether none is left at `limit`. The check
/// reads one row through the status indexes, every 50 ms: the end is timed by the last
/// `finished_at`, not by this loop, and counting the table each time would take the database's
/// time from the worker.
async fn wait_until_final(db: &DatabaseConnection, limit: Duration) -> anyhow::Result<bool> {
    let started = Instant::now();
    loop {
        let left = job::Entity::find()
            .filter(job::Column::Status.is_in([
                JobStatus::Pending,
                JobStatus::Queued,
                JobStatus::Processing,
                JobStatus::Retry,
            ]))
            .one(db)
            .await?;
        if left.is_none() {
            return Ok(true);
        }
        if started.elapsed() > limit {
            return Ok(false);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn last_finished(db: &DatabaseConnection) -> anyhow::Result<chrono::DateTime<Utc>> {
    let jobs = job::Entity::find().all(db).await?;
    jobs.iter()
        .filter_map(|j| j.finished_at)
        .max()
        .ok_or_else(|| anyhow!("no job finished"))
}

/// The one number a query returns.
async fn number(db: &DatabaseConnection, sql: &str) -> anyhow::Result<i64> {
    let row = db
        .query_one_raw(Statement::from_string(db.get_database_backend(), sql))
        .await?
        .ok_or_else(|| anyhow!("no row from {sql}"))?;
    row.try_get_by_index::<i64>(0)
        .with_context(|| format!("no number from {sql}"))
}

/// Fails unless all `jobs` jobs are COMPLETED with their whole bookkeeping.
async fn check(
    db: &DatabaseConnection,
    workspace_id: WorkspaceId,
    jobs: usize,
    stage_rows: usize,
) -> anyhow::Result<()> {
    let jobs = jobs as i64;
    let completed = number(
        db,
        "SELECT count(*) AS n FROM jobs WHERE status = 'COMPLETED' AND attempt = 1 \
         AND progress = 1 AND finished_at IS NOT NULL AND result IS NOT NULL",
    )
    .await?;
    let all = number(db, "SELECT count(*) AS n FROM jobs").await?;
    ensure!(
        completed == jobs && all == jobs,
        "{completed} of {all} jobs COMPLETED, expected {jobs}"
    );
    // QUEUED (submitted), PROCESSING (claimed) and COMPLETED, each once per job, and a
    // PROCESSING row for each stage reported.
    for status in ["QUEUED", "PROCESSING", "COMPLETED"] {
        let expected = if status == "PROCESSING" {
            jobs + stage_rows as i64
        } else {
            jobs
        };
        for table in ["job_events", "live_events"] {
            let events = number(
                db,
                &format!(
                    "SELECT count(DISTINCT job_id) AS n FROM {table} WHERE status = '{status}'"
                ),
            )
            .await?;
            let rows = number(
                db,
                &format!("SELECT count(*) AS n FROM {table} WHERE status = '{status}'"),
            )
            .await?;
            ensure!(
                events == jobs && rows == expected,
                "{table}: {rows} {status} rows for {events} jobs, expected {expected} for {jobs}"
            );
        }
    }
    let unnumbered = number(
        db,
        "SELECT count(*) AS n FROM live_events WHERE seq IS NULL",
    )
    .await?;
    ensure!(unnumbered == 0, "{unnumbered} live entries have no seq");
    let charges = number(
        db,
        "SELECT count(*) AS n FROM credit_transactions WHERE kind = 'CHARGE' AND amount = -1",
    )
    .await?;
    ensure!(charges == jobs, "{charges} charges for {jobs} jobs");
    let workspace = entity::workspace::Entity::find_by_id(workspace_id)
        .one(db)
        .await?
        .ok_or_else(|| anyhow!("the workspace is gone"))?;
    let sum: i64 = entity::credit_transaction::Entity::find()
        .filter(entity::credit_transaction::Column::WorkspaceId.eq(workspace_id))
        .all(db)
        .await?
        .iter()
        .map(|entry| entry.amount)
        .sum();
    if sum != workspace.credit_balance {
        bail!(
            "the ledger sums to {sum} but the balance is {}",
            workspace.credit_balance
        );
    }
    Ok(())
}

async fn latency(db: &DatabaseConnection, ids: &[JobId]) -> anyhow::Result<Latency> {
    let mut delays = Vec::with_capacity(ids.len());
    for chunk in ids.chunks(500) {
        for job in job::Entity::find()
            .filter(job::Column::Id.is_in(chunk.iter().copied()))
            .all(db)
            .await?
        {
            let (Some(queued), Some(started)) = (job.queued_at, job.started_at) else {
                bail!("job {} has no queued_at or started_at", job.id);
            };
            delays.push((started - queued).num_microseconds().unwrap_or(0) as f64 / 1000.0);
        }
    }
    delays.sort_by(f64::total_cmp);
    let at =
        |q: f64| delays[((delays.len() as f64 * q).ceil() as usize).clamp(1, delays.len()) - 1];
    Ok(Latency {
        jobs: delays.len(),
        median_ms: at(0.5),
        p99_ms: at(0.99),
        max_ms: *delays.last().unwrap_or(&0.0),
    })
}

fn report(settings: &Settings, all: &[Figures]) -> bool {
    println!();
    println!(
        "| database | jobs | submit | run | jobs/s end to end | QUEUED→PROCESSING median | p99 | target |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    let mut met_all = true;
    for f in all {
        let (target_jps, target_p99) = match f.database {
            "SQLite" => (TARGET_SQLITE_JPS, None),
            _ => (TARGET_POSTGRES_JPS, Some(TARGET_POSTGRES_P99_MS)),
        };
        // The throughput targets are the no-op tool's; jobs that report stages have none.
        let mut met = settings.stages > 0 || f.jobs_per_second >= target_jps;
        if let (Some(target), Some(l)) = (target_p99, &f.latency) {
            met &= l.p99_ms < target;
        }
        met_all &= met;
        let (median, p99) = f.latency.as_ref().map_or(("-".into(), "-".into()), |l| {
            (
                format!("{:.2} ms", l.median_ms),
                format!("{:.2} ms", l.p99_ms),
            )
        });
        println!(
            "| {} | {} | {:.2} s | {:.2} s | {:.0} | {median} | {p99} | {} |",
            f.database,
            settings.jobs,
            f.submit_seconds,
            f.run_seconds,
            f.jobs_per_second,
            match (met, settings.stages) {
                (false, _) => "MISSED",
                (true, 0) => "met",
                (true, _) => "none for jobs that report stages",
            }
        );
    }
    for f in all {
        if let Some(cpu) = &f.cpu {
            println!("{} run: {cpu}", f.database);
        }
    }
    met_all
}

/// The allocator the `jobgraph` binary runs with, so that the figures are the server's.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
