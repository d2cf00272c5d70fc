//! The overhead of running steps as a workflow: a fan-out/fan-in workflow of `BENCH_STEPS`
//! no-op steps (one source, `BENCH_STEPS - 2` steps after it, one step after all of them)
//! against the same number of plain no-op jobs submitted as one batch, on a fresh database
//! each, run by the real worker, in alternating runs.
//!
//! ```sh
//! cargo bench --bench workflows
//! ```
//!
//! Each run times from the submission (the worker already idle) to the last `finished_at`:
//! writing the jobs is included on both sides, the plain jobs' batch and the workflow's waves
//! of steps, each written in the transaction that completes the wave before it.
//! It checks that every job COMPLETED once, each charged once, that the ledger sums to the
//! balance and the reservation is given back. It prints each pair and the median ratio
//! (workflow / plain); the target is at most 1.5.
//!
//! | variable | default | |
//! |---|---|---|
//! | `BENCH_DATABASE_URL` | `sqlite,postgres://postgres@127.0.0.1:5432/test?sslmode=disable` | databases, comma-separated |
//! | `BENCH_STEPS` | `1000` | steps of the workflow, and plain jobs |
//! | `BENCH_PAIRS` | `3` | alternating pairs of runs per database |
//! | `BENCH_CONCURRENCY` | `64` | the worker's concurrency |
//! | `BENCH_STRICT` | unset | `1` exits with status 1 when the target is missed |

use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context as _, anyhow, ensure};
use chrono::{DateTime, Utc};
use entity::job::{self, JobStatus};
use jobgraph::config::Config;
use jobgraph::jobs::service::{self, Submission};
use jobgraph::workflows::{self, Definition};
use jobgraph::{App, credits, users, workspaces};
use sea_orm::{
    ColumnTrait as _, ConnectionTrait as _, Database, EntityTrait as _, PaginatorTrait as _,
    QueryFilter as _,
};
use serde_json::json;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

const DEFAULT_DATABASES: &str = "sqlite,postgres://postgres@127.0.0.1:5432/test?sslmode=disable";
const TARGET_RATIO: f64 = 1.5;

const TOOLS: &str = r#"
[[tools]]
name = "noop"
title = "No-op"
version = "1.0.0"
timeout_seconds = 60
max_attempts = 1
executor = { kind = "builtin", function = "noop" }
price = { base = 1 }
"#;

fn var(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

fn parsed(name: &str, default: usize) -> anyhow::Result<usize> {
    var(name).map_or(Ok(default), |v| {
        v.trim().parse().map_err(|err| anyhow!("{name}={v}: {err}"))
    })
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Shape {
    Plain,
    Workflow,
}

fn main() -> ExitCode {
    match real_main() {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(err) => {
            eprintln!("workflows bench failed: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn real_main() -> anyhow::Result<bool> {
    let databases: Vec<String> = var("BENCH_DATABASE_URL")
        .unwrap_or_else(|| DEFAULT_DATABASES.to_owned())
        .split(',')
        .map(|d| d.trim().to_owned())
        .filter(|d| !d.is_empty())
        .collect();
    let steps = parsed("BENCH_STEPS", 1000)?;
    ensure!(
        (3..=workflows::MAX_STEPS).contains(&steps),
        "BENCH_STEPS is 3 to {}",
        workflows::MAX_STEPS
    );
    let pairs = parsed("BENCH_PAIRS", 3)?;
    let concurrency = parsed("BENCH_CONCURRENCY", 64)?;
    let strict = var("BENCH_STRICT").is_some_and(|v| v != "0");
    if std::env::var_os("RUST_LOG").is_some() {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_writer(std::io::stderr)
            .init();
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let mut met = true;
        for database in &databases {
            let name = if database == "sqlite" { "SQLite" } else { "PostgreSQL" };
            println!("== {name}: {steps} steps, {pairs} pairs, concurrency {concurrency}");
            let mut ratios = Vec::new();
            for pair in 0..pairs {
                // Alternating which goes first, so that drift does not favour one shape.
                let order = if pair % 2 == 0 {
                    [Shape::Plain, Shape::Workflow]
                } else {
                    [Shape::Workflow, Shape::Plain]
                };
                let mut seconds = [0.0; 2];
                for shape in order {
                    let took = run(database, shape, steps, concurrency).await?;
                    seconds[shape as usize] = took;
                }
                let ratio = seconds[1] / seconds[0];
                println!(
                    "pair {}: plain {:.3} s ({:.0} us/job), workflow {:.3} s ({:.0} us/step): {ratio:.2}x",
                    pair + 1,
                    seconds[0],
                    seconds[0] * 1e6 / steps as f64,
                    seconds[1],
                    seconds[1] * 1e6 / steps as f64,
                );
                ratios.push(ratio);
            }
            ratios.sort_by(f64::total_cmp);
            let median = ratios[ratios.len() / 2];
            let verdict = if median <= TARGET_RATIO { "met" } else { "MISSED" };
            println!("{name}: median workflow/plain {median:.2}x (target <= {TARGET_RATIO}x: {verdict})");
            met &= median <= TARGET_RATIO;
        }
        Ok(met || !strict)
    })
}

/// One run on a fresh database: seconds from the worker's start to the last `finished_at`.
async fn run(
    database: &str,
    shape: Shape,
    steps: usize,
    concurrency: usize,
) -> anyhow::Result<f64> {
    let dir = tempfile::tempdir()?;
    if database == "sqlite" {
        return run_on(dir.path(), None, shape, steps, concurrency).await;
    }
    let admin = Database::connect(database)
        .await
        .context("connecting to PostgreSQL")?;
    let name = format!("jobgraph_bench_{}", Uuid::new_v4().simple());
    admin
        .execute_unprepared(&format!("CREATE DATABASE {name}"))
        .await?;
    let (base, query) = database.split_once('?').unwrap_or((database, ""));
    let server = base.rsplit_once('/').map(|(s, _)| s).unwrap_or(base);
    let url = if query.is_empty() {
        format!("{server}/{name}")
    } else {
        format!("{server}/{name}?{query}")
    };
    let outcome = run_on(dir.path(), Some(&url), shape, steps, concurrency).await;
    admin
        .execute_unprepared(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        .await
        .ok();
    outcome
}

async fn run_on(
    dir: &Path,
    database_url: Option<&str>,
    shape: Shape,
    steps: usize,
    concurrency: usize,
) -> anyhow::Result<f64> {
    let tools = dir.join("tools.toml");
    std::fs::write(&tools, TOOLS)?;
    let mut config = Config::defaults();
    config.database.data_dir = dir.to_owned();
    config.database.database_url = database_url.map(str::to_owned);
    config.server.tools_file = Some(tools);
    config.server.workers = 0;
    let app = App::build(config).await?;
    let db = app.state.db.clone();
    let first = users::bootstrap_admin(&db, "admin@localhost")
        .await?
        .ok_or_else(|| anyhow!("a fresh database has no users"))?;
    let viewer = users::tokens::authenticate(&db, &first.secret).await?;
    let by = service::Submitter {
        db: &db,
        catalog: &app.state.catalog,
        files: &app.state.files,
        viewer: &viewer,
    };
    let workspace = workspaces::create(&db, &viewer, "bench").await?;
    credits::ledger::grant(&db, &viewer, workspace.id, steps as i64, None).await?;
    // The worker idles until the submission commits: both shapes are timed from the
    // submission to the last finish, writing their jobs included.
    let mut worker = app.worker();
    worker.config.concurrency = concurrency;
    let shutdown = CancellationToken::new();
    let running = tokio::spawn(worker.run(shutdown.clone()));
    tokio::time::sleep(Duration::from_millis(200)).await;
    let start = Utc::now();
    match shape {
        Shape::Plain => {
            let jobs = (0..steps)
                .map(|i| Submission {
                    tool: "noop".into(),
                    name: Some(format!("job {i}")),
                    ..Default::default()
                })
                .collect();
            service::submit_batch(by, workspace.id, None, jobs, Default::default()).await?;
        }
        Shape::Workflow => {
            let mut definition = vec![json!({ "name": "source", "tool": "noop" })];
            let fan: Vec<String> = (0..steps - 2).map(|i| format!("fan{i}")).collect();
            for name in &fan {
                definition.push(json!({ "name": name, "tool": "noop", "after": ["source"] }));
            }
            definition.push(json!({ "name": "sink", "tool": "noop", "after": fan }));
            let definition: Definition = serde_json::from_value(json!({ "steps": definition }))?;
            workflows::service::submit(
                by,
                workspace.id,
                workflows::WorkflowSubmission {
                    definition: Some(definition),
                    ..Default::default()
                },
            )
            .await?;
        }
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(300);
    loop {
        let done = job::Entity::find()
            .filter(job::Column::Status.eq(JobStatus::Completed))
            .count(&db)
            .await? as usize;
        if done == steps {
            break;
        }
        ensure!(
            std::time::Instant::now() < deadline,
            "{done} of {steps} done after 5 minutes"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    shutdown.cancel();
    running.await?;
    let jobs = job::Entity::find().all(&db).await?;
    ensure!(jobs.len() == steps, "{} jobs for {steps} steps", jobs.len());
    let last: DateTime<Utc> = jobs
        .iter()
        .filter_map(|job| job.finished_at)
        .max()
        .ok_or_else(|| anyhow!("no job finished"))?;
    let charges = entity::credit_transaction::Entity::find()
        .filter(entity::credit_transaction::Column::JobId.is_not_null())
        .count(&db)
        .await? as usize;
    ensure!(charges == steps, "{charges} charges for {steps} jobs");
    if var("BENCH_PHASES").is_some_and(|v| v != "0") {
        print_phases(shape, start, &jobs);
    }
    let ws = entity::workspace::Entity::find_by_id(workspace.id)
        .one(&db)
        .await?
        .ok_or_else(|| anyhow!("the workspace is gone"))?;
    ensure!(
        ws.credit_balance == 0 && ws.credits_reserved == 0,
        "balance {} reserved {}",
        ws.credit_balance,
        ws.credits_reserved
    );
    db.close().await.ok();
    Ok((last - start).num_microseconds().unwrap_or(0) as f64 / 1e6)
}

/// With `BENCH_PHASES=1`: when each wave of a run's jobs was written, first claimed and last
/// finished, in milliseconds from the submission, to see where a run's time goes.
fn print_phases(shape: Shape, start: DateTime<Utc>, jobs: &[job::Model]) {
    let ms = |t: Option<DateTime<Utc>>| {
        t.map_or(f64::NAN, |t| {
            (t - start).num_microseconds().unwrap_or(0) as f64 / 1e3
        })
    };
    let waves: Vec<(&str, Vec<&job::Model>)> = match shape {
        Shape::Plain => vec![("jobs", jobs.iter().collect())],
        Shape::Workflow => ["source", "fan", "sink"]
            .into_iter()
            .map(|wave| {
                let of: Vec<&job::Model> = jobs
                    .iter()
                    .filter(|job| {
                        job.workflow_step.as_deref().is_some_and(|step| {
                            step.trim_end_matches(|c: char| c.is_ascii_digit()) == wave
                        })
                    })
                    .collect();
                (wave, of)
            })
            .collect(),
    };
    let line: Vec<String> = waves
        .iter()
        .map(|(wave, of)| {
            format!(
                "{wave} x{}: written {:.1}, first claimed {:.1}, last finished {:.1}",
                of.len(),
                ms(of.iter().map(|job| job.created_at).min()),
                ms(of.iter().filter_map(|job| job.started_at).min()),
                ms(of.iter().filter_map(|job| job.finished_at).max()),
            )
        })
        .collect();
    eprintln!("  {}", line.join("; "));
}
