//! Runs that end early: a job cancelled mid-run, a worker killed mid-run, a worker asked to
//! stop.

use std::time::Duration;

use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};
use serde_json::{Value, json};

use super::{processing, spawn};
use crate::support::{WAIT, eventually, until};

#[tokio::test]
async fn cancelling_a_running_job_stops_it_and_frees_the_worker() {
    let app = spawn(1).await;
    let (alice, ws) = app.setup("lab", 1000).await;
    let long = app
        .submit(
            &alice,
            &ws,
            json!({"tool": "sleep", "settings": {"seconds": 60}}),
        )
        .await;
    app.wait_for(&alice.token, &long, WAIT, |job| {
        job["status"] == "PROCESSING"
    })
    .await;
    let next = app.submit(&alice, &ws, json!({"tool": "noop"})).await;
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
async fn a_worker_process_killed_mid_run_leaves_every_job_finished_and_charged_once() {
    let app = spawn(0).await;
    let (alice, ws) = app.setup("lab", 1000).await;
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
    until(WAIT, "the worker takes every job", || async {
        processing(&app).await == jobs.len()
    })
    .await;
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

#[tokio::test]
async fn a_stopping_worker_finishes_short_runs_and_hands_the_rest_back_at_once() {
    let app = spawn(0).await;
    let (alice, ws) = app.setup("lab", 1000).await;
    let balance_before = app.balance(&ws).await;
    // `nap` allows one attempt: a hand-back must not use it up.
    let mut long = Vec::new();
    for _ in 0..2 {
        long.push(
            app.submit(
                &alice,
                &ws,
                json!({"tool": "nap", "settings": {"seconds": 8}}),
            )
            .await,
        );
    }
    let short = app
        .submit(
            &alice,
            &ws,
            json!({"tool": "nap", "settings": {"seconds": 1.5}}),
        )
        .await;

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
    until(WAIT, "the worker takes every job", || async {
        processing(&app).await == 3
    })
    .await;

    // ...and is asked to stop while they run.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(worker.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    // Within its grace period and the moment it takes to hand jobs back: sooner than the long
    // runs would end.
    let status = eventually(
        grace + Duration::from_secs(3),
        "the worker stops within its grace period",
        || {
            let status = worker.try_wait().unwrap();
            async move { status.ok_or("running") }
        },
    )
    .await;
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
