//! Execution: workers claim queued jobs and run them with their tool's executor, under time
//! limits, with retries, cancellation and recovery of jobs whose worker died.

use std::time::Duration;

use entity::job::{self, JobStatus};
use jobgraph::jobs::lifecycle::Change;
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, sea_query::Expr};
use serde_json::{Value, json};

use crate::support::{TestApp, TestUser};

/// The built-in tools plus tools that exercise limits and failures.
const TEST_TOOLS: &str = r##"
# Fails its first `fail_attempts` attempts, transiently unless `permanent`; the attempt is
# read from the name of its working directory, `<job id>-<attempt>`.
[[tools]]
name = "flaky"
title = "Flaky"
version = "1"
timeout_seconds = 30
max_attempts = 2
settings_schema = { type = "object", properties = { fail_attempts = { type = "integer", default = 1 }, permanent = { type = "boolean", default = false } } }
executor = { kind = "command", program = "sh", args = ["-c", """
attempt=${1##*-}
if [ "$attempt" -le "$2" ]; then
  echo "attempt $attempt failed on purpose" >&2
  if [ "$3" = true ]; then exit 1; else exit 75; fi
fi
printf '{"succeededOnAttempt": %s}' "$attempt" > result.json
""", "flaky", "{workdir}", "{setting:fail_attempts}", "{setting:permanent}"], retryable_exit_codes = [75] }
price = { base = 3 }

[[tools]]
name = "slow"
title = "Slow"
version = "1"
timeout_seconds = 1
max_attempts = 3
executor = { kind = "builtin", function = "sleep" }
price = { base = 4 }

[[tools]]
name = "count"
title = "Count bytes"
version = "1"
timeout_seconds = 20
inputs = [{ name = "text", kind = "file", required = true }]
executor = { kind = "command", program = "sh", args = ["-c", """
echo 'progress: 50% Counting'
n=$(wc -c < "$1")
printf '{"bytes": %s, "label": "%s"}' $n "$2" > result.json
echo hi > outputs/report.txt
""", "count", "{input:text}", "{setting:label}"] }
price = { base = 1 }

[[tools]]
name = "solo"
title = "One at a time"
version = "1"
timeout_seconds = 30
max_running = 1
executor = { kind = "builtin", function = "sleep" }
price = { base = 1 }

[[tools]]
name = "crash"
title = "Crash"
version = "1"
timeout_seconds = 20
max_attempts = 2
executor = { kind = "command", program = "sh", args = ["-c", "echo boom >&2; exit $1", "crash", "{setting:code}"], retryable_exit_codes = [75] }
price = { base = 1 }

[[tools]]
name = "hang"
title = "Hang"
version = "1"
timeout_seconds = 1
max_attempts = 1
executor = { kind = "command", program = "sh", args = ["-c", "sleep 30 & echo $! > \"$1\"; wait", "hang", "{setting:pidfile}"] }
price = { base = 1 }

[[tools]]
name = "nap"
title = "Nap"
version = "1"
timeout_seconds = 60
max_attempts = 1
executor = { kind = "builtin", function = "sleep" }
price = { base = 2 }

[[tools]]
name = "burn"
title = "Burn"
version = "1"
timeout_seconds = 30
executor = { kind = "command", program = "sh", args = ["-c", "python3 -c \"$1\"; echo burnt", "burn", """
import time
block = b"x" * (50 * 1024 * 1024)
start = time.process_time()
while time.process_time() - start < 0.3:
    pass
"""] }
price = { base = 1 }
"##;

async fn spawn(workers: usize) -> TestApp {
    TestApp::spawn_with(|config| {
        let dir = config.database.data_dir.clone();
        let tools = dir.join("tools.toml");
        let builtin = include_str!("../../src/tools/default_tools.toml");
        std::fs::write(&tools, format!("{builtin}\n{TEST_TOOLS}")).unwrap();
        config.server.tools_file = Some(tools);
        config.server.workers = workers;
        config.server.lease_seconds = 3;
    })
    .await
}

async fn setup(app: &TestApp) -> (TestUser, String) {
    let alice = app.user("alice@lab.test").await;
    let ws = app.workspace(&alice, "lab").await;
    app.grant(&ws, 1000).await;
    (alice, ws)
}

/// Submits a job of `tool` as `user`; returns its id.
pub(crate) async fn submit(
    app: &TestApp,
    user: &TestUser,
    ws: &str,
    tool: &str,
    inputs: Value,
    settings: Value,
) -> String {
    let data = app
        .ok(
            Some(&user.token),
            "mutation($ws: ID!, $tool: String!, $inputs: [JobInputValue!]!, $settings: JSON) {
               submitJob(input: {workspaceId: $ws, tool: $tool, inputs: $inputs, settings: $settings}) { job { id } } }",
            json!({"ws": ws, "tool": tool, "inputs": inputs, "settings": settings}),
        )
        .await;
    data["submitJob"]["job"]["id"].as_str().unwrap().to_owned()
}

const WAIT: Duration = Duration::from_secs(30);

#[tokio::test]
async fn the_builtin_tools_run_to_completion_with_their_results() {
    let app = spawn(2).await;
    let (alice, ws) = setup(&app).await;
    let sequences = json!([{"name": "sequences", "text": ">a\nATGGCCTAA\n>b\nGGCC\n"}]);
    let stats = submit(
        &app,
        &alice,
        &ws,
        "sequence-stats",
        sequences.clone(),
        json!({}),
    )
    .await;
    let kmers = submit(
        &app,
        &alice,
        &ws,
        "kmer-count",
        sequences.clone(),
        json!({"k": 2, "top": 1}),
    )
    .await;
    let protein = submit(
        &app,
        &alice,
        &ws,
        "translate-dna",
        sequences,
        json!({"stop_at_first_stop": true}),
    )
    .await;
    let noop = submit(&app, &alice, &ws, "noop", json!([]), json!({})).await;

    let job = app.wait_final(&alice.token, &stats, WAIT).await;
    assert_eq!(job["status"], "COMPLETED", "{job}");
    assert_eq!(job["result"]["count"], 2);
    assert_eq!(job["result"]["totalLength"], 13);
    assert_eq!(job["progress"], 1.0);
    assert!(job["resources"]["wallSeconds"].as_f64().unwrap() >= 0.0);
    let job = app.wait_final(&alice.token, &kmers, WAIT).await;
    // GG, GC and CC occur twice each; ties rank alphabetically.
    assert_eq!(job["result"]["kmers"], json!([{"kmer": "CC", "count": 2}]));
    let job = app.wait_final(&alice.token, &protein, WAIT).await;
    assert_eq!(job["result"]["proteins"][0]["protein"], "MA");
    let job = app.wait_final(&alice.token, &noop, WAIT).await;
    assert_eq!(job["status"], "COMPLETED");
    assert_eq!(job["attempt"], 1);
    let statuses: Vec<_> = job["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["status"].clone())
        .collect();
    assert_eq!(
        statuses,
        [
            json!("PENDING"),
            json!("QUEUED"),
            json!("PROCESSING"),
            json!("COMPLETED")
        ]
    );
    // Statistics 1 + 1, k-mers 2 + 1 + k = 2, translation 1 + 1, no-op 0.
    assert_eq!(app.balance(&ws).await, 1000 - 2 - 5 - 2);
}

#[tokio::test]
async fn the_sleep_demo_reports_its_stages_on_the_timeline() {
    let app = spawn(1).await;
    let (alice, ws) = setup(&app).await;
    let id = submit(
        &app,
        &alice,
        &ws,
        "sleep",
        json!([]),
        json!({"seconds": 0.6, "stages": ["Docking", "Scoring"]}),
    )
    .await;
    let job = app.wait_final(&alice.token, &id, WAIT).await;
    assert_eq!(job["status"], "COMPLETED");
    let stages: Vec<_> = job["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["stage"].as_str())
        .collect();
    assert_eq!(stages, ["Docking", "Scoring"]);
}

#[tokio::test]
async fn a_run_over_its_limit_times_out_and_is_refunded() {
    let app = spawn(1).await;
    let (alice, ws) = setup(&app).await;
    let id = submit(&app, &alice, &ws, "slow", json!([]), json!({"seconds": 10})).await;
    let job = app.wait_final(&alice.token, &id, WAIT).await;
    assert_eq!(job["status"], "TIMEOUT", "{job}");
    assert_eq!(job["refunded"], true);
    assert_eq!(
        job["errorMessage"],
        "the run exceeded the tool's limit of 1 s"
    );
    assert_eq!(app.balance(&ws).await, 1000);
}

#[tokio::test]
async fn a_transient_failure_is_retried_and_then_succeeds() {
    let app = spawn(1).await;
    let (alice, ws) = setup(&app).await;
    let id = submit(
        &app,
        &alice,
        &ws,
        "flaky",
        json!([]),
        json!({"fail_attempts": 1}),
    )
    .await;
    let job = app.wait_final(&alice.token, &id, WAIT).await;
    assert_eq!(job["status"], "COMPLETED", "{job}");
    assert_eq!(job["attempt"], 2);
    assert_eq!(job["result"], json!({"succeededOnAttempt": 2}));
    let statuses: Vec<_> = job["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["status"].as_str().unwrap())
        .collect();
    assert_eq!(
        statuses,
        [
            "PENDING",
            "QUEUED",
            "PROCESSING",
            "RETRY",
            "QUEUED",
            "PROCESSING",
            "COMPLETED"
        ]
    );
    assert_eq!(app.balance(&ws).await, 997, "a success keeps its charge");
}

#[tokio::test]
async fn exhausted_retries_and_permanent_failures_fail_and_refund() {
    let app = spawn(2).await;
    let (alice, ws) = setup(&app).await;
    let exhausted = submit(
        &app,
        &alice,
        &ws,
        "flaky",
        json!([]),
        json!({"fail_attempts": 5}),
    )
    .await;
    let permanent = submit(
        &app,
        &alice,
        &ws,
        "flaky",
        json!([]),
        json!({"fail_attempts": 5, "permanent": true}),
    )
    .await;
    let job = app.wait_final(&alice.token, &exhausted, WAIT).await;
    assert_eq!(
        (job["status"].as_str(), job["attempt"].as_i64()),
        (Some("FAILED"), Some(2)),
        "{job}"
    );
    assert_eq!(
        job["errorMessage"],
        "`sh` exited with code 75: attempt 2 failed on purpose"
    );
    assert_eq!(job["refunded"], true);
    let job = app.wait_final(&alice.token, &permanent, WAIT).await;
    assert_eq!(
        (job["status"].as_str(), job["attempt"].as_i64()),
        (Some("FAILED"), Some(1)),
        "{job}"
    );
    assert_eq!(app.balance(&ws).await, 1000);
}

#[tokio::test]
async fn cancelling_a_running_job_stops_it_and_frees_the_worker() {
    let app = spawn(1).await;
    let (alice, ws) = setup(&app).await;
    let long = submit(
        &app,
        &alice,
        &ws,
        "sleep",
        json!([]),
        json!({"seconds": 60}),
    )
    .await;
    app.wait_for(&alice.token, &long, WAIT, |job| {
        job["status"] == "PROCESSING"
    })
    .await;
    let next = submit(&app, &alice, &ws, "noop", json!([]), json!({})).await;
    app.ok(
        Some(&alice.token),
        "mutation($id: ID!) { cancelJob(input: {jobId: $id}) { job { id } } }",
        json!({"id": long}),
    )
    .await;
    // The only worker slot comes free within seconds, so the next job runs.
    let job = app
        .wait_final(&alice.token, &next, Duration::from_secs(10))
        .await;
    assert_eq!(job["status"], "COMPLETED");
    let job = app.wait_final(&alice.token, &long, WAIT).await;
    assert_eq!(job["status"], "CANCELLED");
    assert_eq!(
        job["refunded"], false,
        "a run that used compute keeps its charge"
    );
}

#[tokio::test]
async fn a_job_whose_worker_died_is_reclaimed_and_its_stale_completion_refused() {
    let app = spawn(0).await;
    let (alice, ws) = setup(&app).await;
    let id = submit(&app, &alice, &ws, "sleep", json!([]), json!({"seconds": 0})).await;
    // A worker claims it and dies: its lease runs out.
    let claimed = jobgraph::queue::claim(
        &app.db,
        "doomed",
        &any_tool(),
        &Default::default(),
        10,
        Duration::from_secs(60),
    )
    .await
    .unwrap();
    assert_eq!(claimed.len(), 1);
    let stale = claimed[0].clone();
    job::Entity::update_many()
        .col_expr(
            job::Column::LeaseExpiresAt,
            Expr::value(chrono::Utc::now() - chrono::Duration::seconds(1)),
        )
        .filter(job::Column::Id.eq(stale.id))
        .exec(&app.db)
        .await
        .unwrap();
    let reclaimed = jobgraph::queue::reclaim_expired(&app.db, chrono::Utc::now())
        .await
        .unwrap();
    assert_eq!(reclaimed, 1);
    let job = app
        .wait_for(&alice.token, &id, WAIT, |j| j["status"] == "RETRY")
        .await;
    assert_eq!(job["errorCode"], "LEASE_EXPIRED");
    // Its backoff passes; a live worker runs it.
    job::Entity::update_many()
        .col_expr(job::Column::RunAfter, Expr::value(chrono::Utc::now()))
        .filter(job::Column::Id.eq(stale.id))
        .exec(&app.db)
        .await
        .unwrap();
    assert_eq!(
        jobgraph::queue::requeue_due(&app.db, chrono::Utc::now())
            .await
            .unwrap(),
        1
    );
    let again = jobgraph::queue::claim(
        &app.db,
        "alive",
        &any_tool(),
        &Default::default(),
        10,
        Duration::from_secs(60),
    )
    .await
    .unwrap();
    assert_eq!(again[0].attempt, 2);

    // The dead worker comes back and reports its old attempt: refused.
    let tx = jobgraph::db::begin_write(&app.db).await.unwrap();
    let late =
        jobgraph::jobs::lifecycle::transition(&tx, &stale, JobStatus::Completed, Change::default())
            .await;
    assert!(
        matches!(late, Err(jobgraph::error::Error::Conflict(_))),
        "{late:?}"
    );
    drop(tx);
    assert!(
        !jobgraph::queue::renew(&app.db, &stale, Duration::from_secs(60))
            .await
            .unwrap()
    );
    // The live attempt completes, once.
    let tx = jobgraph::db::begin_write(&app.db).await.unwrap();
    jobgraph::jobs::lifecycle::transition(&tx, &again[0], JobStatus::Completed, Change::default())
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let job = app.wait_final(&alice.token, &id, WAIT).await;
    assert_eq!(
        (job["status"].as_str(), job["refunded"].as_bool()),
        (Some("COMPLETED"), Some(false))
    );
    assert_eq!(app.balance(&ws).await, 999);
}

#[tokio::test]
async fn completions_written_together_skip_only_the_jobs_that_changed_meanwhile() {
    use jobgraph::jobs::lifecycle::{self, Completion};

    let app = spawn(0).await;
    let (alice, ws) = setup(&app).await;
    for _ in 0..4 {
        submit(&app, &alice, &ws, "sleep", json!([]), json!({"seconds": 0})).await;
    }
    let claimed = jobgraph::queue::claim(
        &app.db,
        "grouped",
        &any_tool(),
        &Default::default(),
        10,
        Duration::from_secs(60),
    )
    .await
    .unwrap();
    assert_eq!(claimed.len(), 4);
    // Meanwhile one is cancelled and another was reclaimed and claimed again (a new attempt).
    let cancelled = &claimed[1];
    let tx = jobgraph::db::begin_write(&app.db).await.unwrap();
    lifecycle::transition(&tx, cancelled, JobStatus::Cancelled, Change::default())
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let reclaimed = &claimed[2];
    job::Entity::update_many()
        .col_expr(job::Column::Attempt, Expr::value(reclaimed.attempt + 1))
        .filter(job::Column::Id.eq(reclaimed.id))
        .exec(&app.db)
        .await
        .unwrap();

    let completions: Vec<Completion> = claimed
        .iter()
        .map(|job| Completion {
            job: job.clone(),
            result: json!({"id": job.id}),
            resources: json!({"wallSeconds": 0.0}),
        })
        .collect();
    let completing = lifecycle::Completing::new(&app.db, &completions);
    let tx = jobgraph::db::begin_write(&app.db).await.unwrap();
    let outcomes = completing.write(&tx).await.unwrap();
    tx.commit().await.unwrap();
    let kinds: Vec<String> = outcomes
        .iter()
        .map(|outcome| match outcome {
            Ok(()) => "completed".to_owned(),
            Err(jobgraph::error::Error::Conflict(message)) => message.clone(),
            Err(err) => format!("error: {err}"),
        })
        .collect();
    assert_eq!(
        kinds,
        [
            "completed",
            "the job changed meanwhile: it is now CANCELLED",
            "the job changed meanwhile: it is now PROCESSING",
            "completed"
        ]
    );

    for (i, job) in claimed.iter().enumerate() {
        let now = job::Entity::find_by_id(job.id)
            .one(&app.db)
            .await
            .unwrap()
            .unwrap();
        let timeline = entity::job_event::Entity::find_of_job(job.id)
            .all(&app.db)
            .await
            .unwrap();
        let completed_events = timeline
            .iter()
            .filter(|e| e.status == JobStatus::Completed)
            .count();
        match i {
            1 => assert_eq!((now.status, completed_events), (JobStatus::Cancelled, 0)),
            2 => assert_eq!((now.status, completed_events), (JobStatus::Processing, 0)),
            _ => {
                assert_eq!((now.status, completed_events), (JobStatus::Completed, 1));
                assert_eq!(now.result, Some(json!({"id": job.id})));
                assert_eq!(now.progress, 1.0);
                assert!(now.finished_at.is_some() && now.lease_expires_at.is_none());
                // The claim's and the completion's timeline rows, each the job as it then was,
                // after the submission's and in that order.
                let rows: Vec<_> = timeline
                    .iter()
                    .map(|e| {
                        (
                            e.status,
                            e.message.as_deref(),
                            e.stage.as_deref(),
                            e.progress,
                            e.attempt,
                            e.workspace_id,
                        )
                    })
                    .collect();
                assert_eq!(
                    rows[2..],
                    [
                        (
                            JobStatus::Processing,
                            Some("claimed by grouped"),
                            None,
                            0.0,
                            1,
                            job.workspace_id
                        ),
                        (JobStatus::Completed, None, None, 1.0, 1, job.workspace_id),
                    ],
                    "{timeline:?}"
                );
                assert_eq!(timeline[0].status, JobStatus::Pending);
                assert!(timeline.windows(2).all(|w| w[0].id < w[1].id));
                // Their live entries likewise, numbered, with what subscription filters read.
                let live = live_entries(&app, job.id).await;
                let facts = json!({
                    "name": job.name,
                    "tool": job.tool,
                    "submitterId": job.submitter_id,
                    "batchId": null,
                    "createdAt": job.created_at,
                });
                let rows: Vec<_> = live
                    .iter()
                    .map(|e| (e.kind, e.status, e.stage.as_deref(), e.progress, e.attempt))
                    .collect();
                use entity::live_event::LiveKind::{Created, Updated};
                assert_eq!(
                    rows,
                    [
                        (Created, Some(JobStatus::Pending), None, Some(0.0), Some(0)),
                        (Updated, Some(JobStatus::Queued), None, Some(0.0), Some(0)),
                        (
                            Updated,
                            Some(JobStatus::Processing),
                            None,
                            Some(0.0),
                            Some(1)
                        ),
                        (
                            Updated,
                            Some(JobStatus::Completed),
                            None,
                            Some(1.0),
                            Some(1)
                        ),
                    ],
                    "{live:?}"
                );
                for entry in &live {
                    assert_eq!(entry.seq, Some(entry.id));
                    assert_eq!(entry.workspace_id, job.workspace_id);
                    let data = entry.data.clone().unwrap();
                    assert_eq!(data["name"], facts["name"], "{data}");
                    assert_eq!(data["tool"], facts["tool"], "{data}");
                    assert_eq!(data["submitterId"], facts["submitterId"], "{data}");
                    assert_eq!(data["batchId"], facts["batchId"], "{data}");
                    let created: chrono::DateTime<chrono::Utc> =
                        serde_json::from_value(data["createdAt"].clone()).unwrap();
                    assert_eq!(created, job.created_at, "{data}");
                }
            }
        }
    }
    // The cancelled job's entries end with its cancellation, the reclaimed one's with its claim.
    let last = |entries: Vec<entity::live_event::Model>| entries.last().and_then(|e| e.status);
    assert_eq!(
        last(live_entries(&app, claimed[1].id).await),
        Some(JobStatus::Cancelled)
    );
    assert_eq!(
        last(live_entries(&app, claimed[2].id).await),
        Some(JobStatus::Processing)
    );
}

#[tokio::test]
async fn a_claim_changes_its_jobs_before_it_waits_its_turn_to_number_live_entries() {
    use jobgraph::queue;
    use sea_orm::{ConnectionTrait as _, DatabaseBackend, Statement};

    let app = spawn(0).await;
    let (alice, ws) = setup(&app).await;
    for _ in 0..4 {
        submit(&app, &alice, &ws, "sleep", json!([]), json!({"seconds": 0})).await;
    }
    let backend = app.db.get_database_backend();
    let lease = Duration::from_secs(60);
    // A first claim, of one job, written and not yet committed: it holds the numbering of live
    // entries (PostgreSQL) or the one write lock (SQLite) until it commits.
    let first = jobgraph::db::begin_write(&app.db).await.unwrap();
    let head = jobgraph::store::head_ids(&first, queue::head(&any_tool(), 1));
    let claimed_first = jobgraph::store::claim(&first, head, "first", lease, 1)
        .await
        .unwrap()
        .into_jobs()
        .unwrap();
    assert_eq!(claimed_first.len(), 1);

    let db = app.db.clone();
    let second = tokio::spawn(async move {
        queue::claim(&db, "second", &any_tool(), &Default::default(), 10, lease).await
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !second.is_finished(),
        "the second claim waits for the first"
    );
    if backend == DatabaseBackend::Postgres {
        // It waits with its jobs already changed (and locked): only the numbering waits, so
        // claims and completions of several workers change their rows side by side.
        let lockable = app
            .db
            .query_one_raw(Statement::from_string(
                backend,
                "SELECT count(*) AS n FROM (SELECT id FROM jobs WHERE status = 'QUEUED' \
                 FOR UPDATE SKIP LOCKED) AS q",
            ))
            .await
            .unwrap()
            .unwrap()
            .try_get::<i64>("", "n")
            .unwrap();
        assert_eq!(lockable, 0, "the second claim holds the other three jobs");
    }
    first.commit().await.unwrap();
    let claimed_second = second.await.unwrap().unwrap();
    assert_eq!(claimed_second.len(), 3);
    // Numbered in commit order: the first claim's entry before the second's.
    let first_seq = live_entries(&app, claimed_first[0].id)
        .await
        .last()
        .unwrap()
        .seq;
    for job in &claimed_second {
        let entry = live_entries(&app, job.id).await.pop().unwrap();
        assert_eq!(entry.status, Some(JobStatus::Processing));
        assert!(entry.seq > first_seq, "{entry:?} after {first_seq:?}");
    }
}

/// A job's live entries in the order of their numbers.
async fn live_entries(app: &TestApp, job_id: uuid::Uuid) -> Vec<entity::live_event::Model> {
    use sea_orm::QueryOrder as _;
    entity::live_event::Entity::find()
        .filter(entity::live_event::Column::JobId.eq(job_id))
        .order_by_asc(entity::live_event::Column::Seq)
        .all(&app.db)
        .await
        .unwrap()
}

#[tokio::test]
async fn two_workers_on_one_database_never_run_a_job_twice() {
    let app = spawn(0).await;
    let (alice, ws) = setup(&app).await;
    app.grant(&ws, 10_000).await;
    // Runs that take a moment: a worker can then not drain the queue alone between two claims
    // of the other, whose completions are written in groups.
    let batch: Vec<_> = (0..1000)
        .map(|_| json!({"tool": "sleep", "settings": {"seconds": 0.005, "stages": ["Working"]}}))
        .collect();
    for _ in 0..2 {
        app.ok(
            Some(&alice.token),
            "mutation($ws: ID!, $jobs: [BatchJobInput!]!) { submitBatch(input: {workspaceId: $ws, jobs: $jobs}) { batch { id } } }",
            json!({"ws": ws, "jobs": batch}),
        )
        .await;
    }
    // Two workers with their own connection pools, as two processes would have.
    let shutdown = tokio_util::sync::CancellationToken::new();
    let mut workers = Vec::new();
    for name in ["one", "two"] {
        let mut config = jobgraph::Config::defaults();
        config.database.database_url = Some(app.database_url.clone());
        config.server.workers = 4;
        let other = jobgraph::App::build(config).await.unwrap();
        let mut worker = other.worker();
        worker.name = name.to_owned();
        worker.config.poll = Duration::from_millis(20);
        workers.push(worker);
    }
    // Both start together, so that neither drains the queue before the other is up.
    let handles: Vec<_> = workers
        .into_iter()
        .map(|worker| tokio::spawn(worker.run(shutdown.clone())))
        .collect();
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    loop {
        let data = app
            .ok(
                Some(&alice.token),
                "query($ws: ID!) { workspace(id: $ws) { jobCounts { completed total } } }",
                json!({"ws": ws}),
            )
            .await;
        if data["workspace"]["jobCounts"]["completed"] == 2000 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{data}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    shutdown.cancel();
    for handle in handles {
        handle.await.unwrap();
    }
    let claims = entity::job_event::Entity::find()
        .filter(entity::job_event::Column::Status.eq(JobStatus::Processing))
        .all(&app.db)
        .await
        .unwrap()
        .into_iter()
        // The stage the run reports is a PROCESSING event too.
        .filter(|e| {
            e.message
                .as_deref()
                .is_some_and(|m| m.starts_with("claimed by "))
        })
        .collect::<Vec<_>>();
    assert_eq!(claims.len(), 2000, "each job was claimed exactly once");
    let by_one = claims
        .iter()
        .filter(|e| e.message.as_deref() == Some("claimed by one"))
        .count();
    assert!(
        by_one > 0 && by_one < 2000,
        "both workers took part: {by_one} by one"
    );
    let ids: std::collections::HashSet<_> = claims.iter().map(|e| e.job_id).collect();
    assert_eq!(ids.len(), 2000);
}

#[tokio::test]
async fn a_command_tool_runs_with_inputs_progress_result_and_outputs() {
    let app = spawn(1).await;
    let (alice, ws) = setup(&app).await;
    let id = submit(
        &app,
        &alice,
        &ws,
        "count",
        json!([{"name": "text", "text": "hello"}]),
        json!({"label": "greeting"}),
    )
    .await;
    let job = app.wait_final(&alice.token, &id, WAIT).await;
    assert_eq!(job["status"], "COMPLETED", "{job}");
    assert_eq!(
        job["result"],
        json!({"bytes": 5, "label": "greeting", "outputFiles": [{"name": "report.txt", "bytes": 3}]})
    );
    assert!(
        job["timeline"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["stage"] == "Counting"),
        "{job}"
    );
}

#[tokio::test]
async fn a_failing_command_keeps_its_stderr_and_retries_only_retryable_codes() {
    let app = spawn(2).await;
    let (alice, ws) = setup(&app).await;
    let fatal = submit(&app, &alice, &ws, "crash", json!([]), json!({"code": 3})).await;
    let transient = submit(&app, &alice, &ws, "crash", json!([]), json!({"code": 75})).await;
    let job = app.wait_final(&alice.token, &fatal, WAIT).await;
    assert_eq!(
        (job["status"].as_str(), job["attempt"].as_i64()),
        (Some("FAILED"), Some(1)),
        "{job}"
    );
    assert_eq!(job["errorMessage"], "`sh` exited with code 3: boom");
    let job = app.wait_final(&alice.token, &transient, WAIT).await;
    assert_eq!(
        (job["status"].as_str(), job["attempt"].as_i64()),
        (Some("FAILED"), Some(2)),
        "{job}"
    );
    assert_eq!(app.balance(&ws).await, 1000);
}

#[tokio::test]
async fn a_timed_out_command_is_killed_with_everything_it_started() {
    let app = spawn(1).await;
    let (alice, ws) = setup(&app).await;
    let dir = tempfile::tempdir().unwrap();
    let pidfile = dir.path().join("child.pid");
    let id = submit(
        &app,
        &alice,
        &ws,
        "hang",
        json!([]),
        json!({"pidfile": pidfile.display().to_string()}),
    )
    .await;
    let job = app.wait_final(&alice.token, &id, WAIT).await;
    assert_eq!(job["status"], "TIMEOUT", "{job}");
    let pid = std::fs::read_to_string(&pidfile).unwrap().trim().to_owned();
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while std::path::Path::new(&format!("/proc/{pid}")).exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "the background child {pid} outlived the timeout"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn an_idle_worker_wakes_at_once_when_a_job_is_queued() {
    // The API serves no workers; the worker polls only every minute, so only an announcement
    // can make it start the job quickly: in memory on SQLite (one process), LISTEN/NOTIFY across
    // processes on PostgreSQL.
    let postgres = std::env::var("TEST_DATABASE_URL").is_ok_and(|url| !url.is_empty());
    let app = spawn(0).await;
    let (alice, ws) = setup(&app).await;
    let shutdown = tokio_util::sync::CancellationToken::new();
    let mut config = jobgraph::Config::defaults();
    config.database.database_url = Some(app.database_url.clone());
    config.server.workers = 1;
    let worker_app = jobgraph::App::build(config).await.unwrap();
    let mut worker = if postgres {
        worker_app.worker()
    } else {
        app_worker(&app)
    };
    worker.config.poll = Duration::from_secs(60);
    worker.config.maintenance = Duration::from_secs(60);
    let handle = tokio::spawn(worker.run(shutdown.clone()));
    // Let the first claim and the listener happen.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let started = std::time::Instant::now();
    let id = submit(&app, &alice, &ws, "noop", json!([]), json!({})).await;
    let job = app
        .wait_final(&alice.token, &id, Duration::from_secs(10))
        .await;
    assert_eq!(job["status"], "COMPLETED");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "took {:?}",
        started.elapsed()
    );
    shutdown.cancel();
    handle.await.unwrap();
}

#[tokio::test]
async fn the_queues_job_rows_read_back_as_sea_orm_reads_them() {
    use chrono::{TimeZone as _, Utc};
    use sea_orm::{ActiveModelTrait as _, ConnectionTrait as _, Set};
    let app = spawn(0).await;
    let (alice, ws) = setup(&app).await;
    let mut ids = Vec::new();
    for label in ["bare", "full"] {
        let id = submit(
            &app,
            &alice,
            &ws,
            "noop",
            json!([]),
            json!({ "label": label }),
        )
        .await;
        ids.push(jobgraph::ids::decode(jobgraph::ids::Kind::Job, "id", &id).unwrap());
    }
    let [bare, full] = ids[..] else {
        unreachable!()
    };
    let at = |second| Some(Utc.with_ymd_and_hms(2026, 1, 2, 3, 4, second).unwrap());
    let submitted = job::Entity::find_by_id(full)
        .one(&app.db)
        .await
        .unwrap()
        .unwrap();
    let batch = entity::batch::ActiveModel {
        id: Set(uuid::Uuid::now_v7()),
        workspace_id: Set(submitted.workspace_id),
        submitter_id: Set(submitted.submitter_id),
        name: Set(None),
        idempotency_key: Set(None),
        request_fingerprint: Set(None),
        created_at: Set(Utc::now()),
    }
    .insert(&app.db)
    .await
    .unwrap();
    // Every column holds a value of its own, so that two columns read in each other's place
    // would show.
    job::ActiveModel {
        id: Set(full),
        stage: Set(Some("Annotating".to_owned())),
        progress: Set(0.25),
        result: Set(Some(json!({"n50": 1234}))),
        error_message: Set(Some("message".to_owned())),
        error_code: Set(Some("CODE".to_owned())),
        parent_id: Set(Some(bare)),
        parent_kind: Set(Some(job::ParentKind::Duplicate)),
        batch_id: Set(Some(batch.id)),
        idempotency_key: Set(Some("key".to_owned())),
        request_fingerprint: Set(Some("fingerprint".to_owned())),
        resources: Set(Some(json!({"wallSeconds": 1.5}))),
        started_at: Set(at(1)),
        finished_at: Set(at(2)),
        run_after: Set(at(3)),
        worker_id: Set(Some("worker".to_owned())),
        lease_expires_at: Set(at(4)),
        heartbeat_at: Set(at(5)),
        priority: Set(7),
        visibility: Set(job::Visibility::Public),
        ..Default::default()
    }
    .update(&app.db)
    .await
    .unwrap();
    for id in [bare, full] {
        let read = job::Entity::find_by_id(id)
            .one(&app.db)
            .await
            .unwrap()
            .unwrap();
        // An update that leaves the row as it is.
        let update = job::Entity::update_many()
            .col_expr(job::Column::Attempt, Expr::col(job::Column::Attempt))
            .filter(job::Column::Id.eq(id));
        let statement =
            jobgraph::store::rows::returning_statement(app.db.get_database_backend(), update);
        let returned =
            jobgraph::store::rows::decode(app.db.query_all_raw(statement).await.unwrap()).unwrap();
        assert_eq!(returned, vec![read]);
    }
}

/// An event's message and the names of the spans around it, innermost first.
type Scoped = (String, Vec<String>);

/// The names of the spans around each event, by the event's message.
#[derive(Clone, Default)]
struct EventScopes(std::sync::Arc<std::sync::Mutex<Vec<Scoped>>>);

impl<S> tracing_subscriber::Layer<S> for EventScopes
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    fn on_event(&self, event: &tracing::Event<'_>, ctx: tracing_subscriber::layer::Context<'_, S>) {
        struct Message(String);
        impl tracing::field::Visit for Message {
            fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
                if field.name() == "message" {
                    self.0 = format!("{value:?}");
                }
            }
        }
        let mut message = Message(String::new());
        event.record(&mut message);
        let spans = ctx
            .event_scope(event)
            .map(|scope| scope.map(|span| span.name().to_owned()).collect())
            .unwrap_or_default();
        self.0.lock().unwrap().push((message.0, spans));
    }
}

#[tokio::test]
async fn a_runs_log_lines_carry_its_job_and_no_other_tasks_do() {
    use tracing_subscriber::layer::SubscriberExt as _;
    // A current-thread runtime: the worker's loop, its completion writer and every run take
    // turns on this one thread, where the subscriber is installed.
    // With one dispatcher in the process, tracing works out a callsite's interest from the
    // default dispatcher of whichever thread reaches the callsite first: another test's thread,
    // which has none, would switch this test's events off for good. With a second (inert) one
    // registered, every live dispatcher is asked instead.
    let _inert = tracing::Dispatch::new(tracing::subscriber::NoSubscriber::default());
    let scopes = EventScopes::default();
    let subscriber = tracing_subscriber::registry().with(scopes.clone()).with(
        tracing_subscriber::filter::Targets::new().with_target("jobgraph", tracing::Level::DEBUG),
    );
    let _default = tracing::subscriber::set_default(subscriber);
    let app = spawn(0).await;
    let (alice, ws) = setup(&app).await;
    let shutdown = tokio_util::sync::CancellationToken::new();
    let mut worker = app_worker(&app);
    worker.config.concurrency = 2;
    let handle = tokio::spawn(worker.run(shutdown.clone()));
    // The second job is claimed while the first one runs.
    let first = submit(&app, &alice, &ws, "nap", json!([]), json!({"seconds": 1})).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let second = submit(&app, &alice, &ws, "nap", json!([]), json!({"seconds": 1})).await;
    for id in [&first, &second] {
        assert_eq!(
            app.wait_final(&alice.token, id, WAIT).await["status"],
            "COMPLETED"
        );
    }
    shutdown.cancel();
    handle.await.unwrap();
    let events = scopes.0.lock().unwrap().clone();
    let with = |message: &str| -> Vec<Vec<String>> {
        events
            .iter()
            .filter(|(m, _)| m == message)
            .map(|(_, spans)| spans.clone())
            .collect()
    };
    let runs = with("run started");
    assert_eq!(runs.len(), 2, "{events:?}");
    assert!(runs.iter().all(|spans| spans == &["job"]), "{events:?}");
    let claims: Vec<_> = with("claimed");
    assert!(claims.len() >= 2, "{events:?}");
    let completions = with("recorded completions");
    assert!(!completions.is_empty(), "{events:?}");
    for spans in claims.iter().chain(&completions) {
        assert!(!spans.contains(&"job".to_owned()), "{events:?}");
    }
}

/// Claims of any tool's jobs.
fn any_tool() -> jobgraph::queue::Tools {
    jobgraph::queue::Tools::Except(Vec::new())
}

/// A worker in the test server's own process, sharing its in-memory wake-up.
fn app_worker(app: &TestApp) -> jobgraph::queue::runner::Worker {
    jobgraph::queue::runner::Worker {
        db: app.state.db.clone(),
        catalog: app.state.catalog.clone(),
        name: "local".to_owned(),
        config: jobgraph::queue::runner::WorkerConfig {
            concurrency: 1,
            ..Default::default()
        },
        wake: app.state.wake.clone(),
        places: jobgraph::executors::Places {
            work_root: app.state.data_dir.join("work"),
            supervisor: app.state.config.supervisor(),
        },
        metrics: app.state.metrics.clone(),
        files: app.state.files.clone(),
        listen_url: None,
    }
}

#[tokio::test]
async fn metrics_report_jobs_the_queue_claims_and_runs() {
    let app = spawn(1).await;
    let (alice, ws) = setup(&app).await;
    let done = submit(&app, &alice, &ws, "noop", json!([]), json!({})).await;
    app.wait_final(&alice.token, &done, WAIT).await;
    let timed_out = submit(&app, &alice, &ws, "slow", json!([]), json!({"seconds": 5})).await;
    app.wait_final(&alice.token, &timed_out, WAIT).await;
    let response = app.client().get(app.url("/metrics")).send().await.unwrap();
    assert_eq!(response.status(), reqwest::StatusCode::OK);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );
    let text = response.text().await.unwrap();
    for line in [
        "jobgraph_jobs{status=\"COMPLETED\",tool=\"noop\"} 1",
        "jobgraph_jobs{status=\"TIMEOUT\",tool=\"slow\"} 1",
        "jobgraph_queue_depth 0",
        "jobgraph_claim_latency_seconds_count 2",
        "jobgraph_run_duration_seconds_count{tool=\"noop\",outcome=\"COMPLETED\"} 1",
        "jobgraph_timeouts_total 1",
        "jobgraph_refunds_total 1",
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "missing `{line}` in:\n{text}"
        );
    }
    assert!(text.contains("jobgraph_running_jobs{worker="), "{text}");
}

#[tokio::test]
async fn a_worker_process_killed_mid_run_leaves_every_job_finished_and_charged_once() {
    let app = spawn(0).await;
    let (alice, ws) = setup(&app).await;
    let balance_before = app.balance(&ws).await;
    let mut jobs = Vec::new();
    for _ in 0..4 {
        jobs.push(
            app.job(&alice, &ws, 3).await["id"]
                .as_str()
                .unwrap()
                .to_owned(),
        );
    }

    // A worker process on the same database takes the jobs...
    let tools = app.state.config.tools_file.clone().unwrap();
    let mut worker = std::process::Command::new(env!("CARGO_BIN_EXE_jobgraph"))
        .args(["worker", "--workers", "4", "--lease-seconds", "3"])
        .arg("--tools-file")
        .arg(&tools)
        .arg("--database-url")
        .arg(&app.database_url)
        .env(
            "JOBGRAPH_DATA_DIR",
            app.state.data_dir.join("killed-worker"),
        )
        .env_remove("RUST_LOG")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let running = |app: &TestApp| {
        let db = app.db.clone();
        async move {
            job::Entity::find()
                .filter(job::Column::Status.eq(JobStatus::Processing))
                .all(&db)
                .await
                .unwrap()
                .len()
        }
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while running(&app).await < jobs.len() {
        assert!(
            std::time::Instant::now() < deadline,
            "the worker took no jobs"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // ...and dies without a word, mid-run.
    worker.kill().unwrap();
    worker.wait().unwrap();

    // Another worker reclaims them once their leases expire, and runs them again.
    let mut config = jobgraph::Config::defaults();
    config.database.database_url = Some(app.database_url.clone());
    config.server.tools_file = Some(tools);
    config.server.workers = 4;
    config.server.lease_seconds = 3;
    let other = jobgraph::App::build(config).await.unwrap();
    let mut rescuer = other.worker();
    rescuer.config.poll = Duration::from_millis(50);
    let shutdown = tokio_util::sync::CancellationToken::new();
    let handle = tokio::spawn(rescuer.run(shutdown.clone()));
    for id in &jobs {
        let job = app
            .wait_final(&alice.token, id, Duration::from_secs(40))
            .await;
        assert_eq!(job["status"], "COMPLETED", "{job}");
        assert_eq!(job["attempt"], 2, "run again after the lost attempt: {job}");
    }
    shutdown.cancel();
    handle.await.unwrap();

    // Each job charged once and never refunded; the balance is the ledger's sum.
    let ledger = entity::credit_transaction::Entity::find()
        .filter(entity::credit_transaction::Column::JobId.is_not_null())
        .all(&app.db)
        .await
        .unwrap();
    assert_eq!(ledger.len(), jobs.len(), "{ledger:?}");
    assert!(ledger.iter().all(|t| t.amount < 0));
    let charged: i64 = ledger.iter().map(|t| t.amount).sum();
    assert_eq!(app.balance(&ws).await, balance_before + charged);
}

/// Workers of their own processes (own connection pools) on the test database, with a
/// per-workspace limit.
async fn workers_with_limit(
    app: &TestApp,
    names: &[&str],
    concurrency: usize,
    workspace_max_running: u32,
) -> Vec<jobgraph::queue::runner::Worker> {
    let mut workers = Vec::new();
    for name in names {
        let mut config = jobgraph::Config::defaults();
        config.database.database_url = Some(app.database_url.clone());
        config.server.tools_file = app.state.config.tools_file.clone();
        config.server.workers = concurrency;
        config.server.workspace_max_running = workspace_max_running;
        let other = jobgraph::App::build(config).await.unwrap();
        let mut worker = other.worker();
        worker.name = (*name).to_owned();
        worker.config.poll = Duration::from_millis(20);
        workers.push(worker);
    }
    workers
}

/// Runs two workers of `concurrency` slots, with a per-workspace limit, until every job of
/// `groups` has ended; the jobs as they ended, group by group.
async fn run_to_the_end(
    app: &TestApp,
    concurrency: usize,
    workspace_max_running: u32,
    groups: &[Vec<String>],
) -> Vec<Vec<job::Model>> {
    let shutdown = tokio_util::sync::CancellationToken::new();
    let handles: Vec<_> =
        workers_with_limit(app, &["one", "two"], concurrency, workspace_max_running)
            .await
            .into_iter()
            .map(|worker| tokio::spawn(worker.run(shutdown.clone())))
            .collect();
    let mut ended = Vec::new();
    for ids in groups {
        ended.push(wait_until_final(app, ids).await);
    }
    shutdown.cancel();
    for handle in handles {
        handle.await.unwrap();
    }
    ended
}

async fn wait_until_final(app: &TestApp, ids: &[String]) -> Vec<job::Model> {
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let mut jobs = Vec::new();
        for id in ids {
            let id = jobgraph::ids::decode(jobgraph::ids::Kind::Job, "id", id).unwrap();
            jobs.push(
                job::Entity::find_by_id(id)
                    .one(&app.db)
                    .await
                    .unwrap()
                    .unwrap(),
            );
        }
        if jobs.iter().all(|job| job.status.is_final()) {
            return jobs;
        }
        assert!(std::time::Instant::now() < deadline, "{jobs:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Whether any two runs overlap in time.
fn overlapping(jobs: &[job::Model]) -> bool {
    jobs.iter().enumerate().any(|(i, a)| {
        jobs[i + 1..].iter().any(|b| {
            a.started_at.unwrap() < b.finished_at.unwrap()
                && b.started_at.unwrap() < a.finished_at.unwrap()
        })
    })
}

#[tokio::test]
async fn one_workspaces_long_queue_does_not_hold_back_another_workspaces_job() {
    let app = spawn(0).await;
    let (alice, busy) = setup(&app).await;
    let bob = app.user("bob@lab.test").await;
    let quiet = app.workspace(&bob, "quiet").await;
    app.grant(&quiet, 100).await;
    let mut queued = Vec::new();
    for _ in 0..6 {
        queued.push(
            submit(
                &app,
                &alice,
                &busy,
                "sleep",
                json!([]),
                json!({"seconds": 0.4}),
            )
            .await,
        );
    }
    let lone = submit(
        &app,
        &bob,
        &quiet,
        "sleep",
        json!([]),
        json!({"seconds": 0.4}),
    )
    .await;
    // Two workers of two slots each, one run per workspace at a time.
    let mut ended = run_to_the_end(&app, 2, 1, &[queued, vec![lone]]).await;
    let lone_job = ended.pop().unwrap().remove(0);
    let busy_jobs = ended.pop().unwrap();
    assert!(
        busy_jobs
            .iter()
            .all(|job| job.status == JobStatus::Completed)
    );
    assert_eq!(lone_job.status, JobStatus::Completed);
    assert!(
        !overlapping(&busy_jobs),
        "the busy workspace never ran two jobs at once, across both workers: {:?}",
        busy_jobs
            .iter()
            .map(|j| (j.started_at, j.finished_at, j.worker_id.clone(), j.attempt))
            .collect::<Vec<_>>()
    );
    let last_busy_start = busy_jobs
        .iter()
        .map(|job| job.started_at.unwrap())
        .max()
        .unwrap();
    assert!(
        lone_job.finished_at.unwrap() < last_busy_start,
        "the other workspace's job ran while the long queue waited: it finished at {:?}, the \
         busy workspace's last job started at {last_busy_start:?}",
        lone_job.finished_at
    );
}

#[tokio::test]
async fn a_tools_limit_holds_across_workers_while_other_tools_run() {
    let app = spawn(0).await;
    let (alice, ws) = setup(&app).await;
    let mut solos = Vec::new();
    for _ in 0..3 {
        solos.push(
            submit(
                &app,
                &alice,
                &ws,
                "solo",
                json!([]),
                json!({"seconds": 0.4}),
            )
            .await,
        );
    }
    let other = submit(
        &app,
        &alice,
        &ws,
        "sleep",
        json!([]),
        json!({"seconds": 0.6}),
    )
    .await;
    let mut ended = run_to_the_end(&app, 2, 0, &[solos, vec![other]]).await;
    let other_job = ended.pop().unwrap().remove(0);
    let solo_jobs = ended.pop().unwrap();
    assert!(
        solo_jobs
            .iter()
            .all(|job| job.status == JobStatus::Completed)
    );
    assert!(!overlapping(&solo_jobs), "one `solo` run at a time");
    let mut all = solo_jobs.clone();
    all.push(other_job);
    assert!(overlapping(&all), "another tool's job ran beside them");
}

#[tokio::test]
async fn a_command_run_records_the_cpu_time_and_peak_memory_of_its_program() {
    let app = spawn(2).await;
    let (alice, ws) = setup(&app).await;
    // The shell waits for python, so what python used counts as the run's.
    let burnt = submit(&app, &alice, &ws, "burn", json!([]), json!({})).await;
    let failed = submit(&app, &alice, &ws, "crash", json!([]), json!({"code": 3})).await;
    let dir = tempfile::tempdir().unwrap();
    let pidfile = dir.path().join("child.pid");
    let timed_out = submit(
        &app,
        &alice,
        &ws,
        "hang",
        json!([]),
        json!({"pidfile": pidfile.display().to_string()}),
    )
    .await;
    let resources = |id: String| {
        let app = &app;
        let token = alice.token.clone();
        async move {
            let job = app.wait_final(&token, &id, WAIT).await;
            let data = app
                .ok(
                    Some(&token),
                    "query($id: ID!) { job(id: $id) { resources } }",
                    json!({ "id": id }),
                )
                .await;
            (job["status"].clone(), data["job"]["resources"].clone())
        }
    };

    let (status, used) = resources(burnt).await;
    assert_eq!(status, "COMPLETED", "{used}");
    assert!(used["wallSeconds"].as_f64().unwrap() > 0.3, "{used}");
    assert!(used["cpuUserSeconds"].as_f64().unwrap() > 0.1, "{used}");
    assert!(used["cpuSystemSeconds"].as_f64().unwrap() >= 0.0, "{used}");
    assert!(
        used["peakMemoryBytes"].as_u64().unwrap() > 40 * 1024 * 1024,
        "{used}"
    );

    // A failed run and a timed-out one (its program killed, then reaped) record theirs too.
    for (id, ending) in [(failed, "FAILED"), (timed_out, "TIMEOUT")] {
        let (status, used) = resources(id).await;
        assert_eq!(status, ending, "{used}");
        for key in [
            "wallSeconds",
            "cpuUserSeconds",
            "cpuSystemSeconds",
            "peakMemoryBytes",
        ] {
            assert!(used[key].is_number(), "{ending} lacks {key}: {used}");
        }
        assert!(used["peakMemoryBytes"].as_u64().unwrap() > 0, "{used}");
    }
}

#[tokio::test]
async fn a_stopping_worker_finishes_short_runs_and_hands_the_rest_back_at_once() {
    let app = spawn(0).await;
    let (alice, ws) = setup(&app).await;
    let balance_before = app.balance(&ws).await;
    // `nap` allows one attempt: a hand-back must not use it up.
    let mut long = Vec::new();
    for _ in 0..2 {
        long.push(submit(&app, &alice, &ws, "nap", json!([]), json!({"seconds": 8})).await);
    }
    let short = submit(&app, &alice, &ws, "nap", json!([]), json!({"seconds": 1.5})).await;

    // A worker process takes all three, with a lease far longer than the test waits...
    let grace = Duration::from_secs(3);
    let tools = app.state.config.tools_file.clone().unwrap();
    let mut worker = std::process::Command::new(env!("CARGO_BIN_EXE_jobgraph"))
        .args(["worker", "--workers", "3", "--lease-seconds", "60"])
        .args(["--grace-seconds", &grace.as_secs().to_string()])
        .arg("--tools-file")
        .arg(&tools)
        .arg("--database-url")
        .arg(&app.database_url)
        .env(
            "JOBGRAPH_DATA_DIR",
            app.state.data_dir.join("stopped-worker"),
        )
        .env_remove("RUST_LOG")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let running = job::Entity::find()
            .filter(job::Column::Status.eq(JobStatus::Processing))
            .all(&app.db)
            .await
            .unwrap();
        if running.len() == 3 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the worker took no jobs"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // ...and is asked to stop while they run.
    let stopping = std::time::Instant::now();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(worker.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let status = loop {
        if let Some(status) = worker.try_wait().unwrap() {
            break status;
        }
        assert!(
            stopping.elapsed() < grace + Duration::from_secs(3),
            "the worker did not stop within its grace period"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(status.success(), "{status}");

    let read = |id: String| {
        let app = &app;
        let token = alice.token.clone();
        async move {
            app.ok(
                Some(&token),
                "query($id: ID!) { job(id: $id) { status attempt maxAttempts timeline { status message } } }",
                json!({ "id": id }),
            )
            .await["job"]
                .clone()
        }
    };
    let handed_back = |job: &Value| {
        job["timeline"].as_array().unwrap().iter().any(|e| {
            e["status"] == "QUEUED"
                && e["message"]
                    .as_str()
                    .unwrap_or("")
                    .starts_with("handed back")
        })
    };
    // The short run finished within the grace period, normally.
    let job = read(short.clone()).await;
    assert_eq!(
        (&job["status"], &job["attempt"]),
        (&json!("COMPLETED"), &json!(1)),
        "{job}"
    );
    assert!(!handed_back(&job), "{job}");
    // The long ones are queued again at once, not after their lease, with one more attempt
    // allowed so the stopped one does not count.
    for id in &long {
        let job = read(id.clone()).await;
        assert_eq!(job["status"], "QUEUED", "{job}");
        assert_eq!(
            (&job["attempt"], &job["maxAttempts"]),
            (&json!(1), &json!(2)),
            "{job}"
        );
        assert!(handed_back(&job), "{job}");
    }

    // Another worker runs them to the end.
    let mut config = jobgraph::Config::defaults();
    config.database.database_url = Some(app.database_url.clone());
    config.server.tools_file = Some(tools);
    config.server.workers = 2;
    let other = jobgraph::App::build(config).await.unwrap();
    let mut rescuer = other.worker();
    rescuer.config.poll = Duration::from_millis(50);
    let shutdown = tokio_util::sync::CancellationToken::new();
    let handle = tokio::spawn(rescuer.run(shutdown.clone()));
    for id in &long {
        let job = app
            .wait_final(&alice.token, id, Duration::from_secs(40))
            .await;
        assert_eq!(job["status"], "COMPLETED", "{job}");
        assert_eq!(job["attempt"], 2, "{job}");
    }
    shutdown.cancel();
    handle.await.unwrap();

    // Each job charged once and never refunded; the balance is the ledger's sum.
    let ledger = entity::credit_transaction::Entity::find()
        .filter(entity::credit_transaction::Column::JobId.is_not_null())
        .all(&app.db)
        .await
        .unwrap();
    assert_eq!(ledger.len(), 3, "{ledger:?}");
    assert!(ledger.iter().all(|t| t.amount < 0), "{ledger:?}");
    let charged: i64 = ledger.iter().map(|t| t.amount).sum();
    assert_eq!(app.balance(&ws).await, balance_before + charged);
}
