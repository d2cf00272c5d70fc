//! Runs that fail: time limits, retries of transient failures, permanent failures, and
//! failing or hanging commands.

use std::time::Duration;

use serde_json::json;

use super::spawn;
use crate::support::{WAIT, until};

#[tokio::test]
async fn a_run_over_its_limit_times_out_and_is_refunded() {
    let app = spawn(1).await;
    let (alice, ws) = app.setup("lab", 1000).await;
    let id = app
        .submit(
            &alice,
            &ws,
            json!({"tool": "slow", "settings": {"seconds": 10}}),
        )
        .await;
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
    let (alice, ws) = app.setup("lab", 1000).await;
    let id = app
        .submit(
            &alice,
            &ws,
            json!({"tool": "flaky", "settings": {"fail_attempts": 1}}),
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
    let (alice, ws) = app.setup("lab", 1000).await;
    let exhausted = app
        .submit(
            &alice,
            &ws,
            json!({"tool": "flaky", "settings": {"fail_attempts": 5}}),
        )
        .await;
    let permanent = app
        .submit(
            &alice,
            &ws,
            json!({"tool": "flaky", "settings": {"fail_attempts": 5, "permanent": true}}),
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
    // Retries and refunds are read from the database: a process started now (its counters at
    // zero) reports them as the one that ran the jobs does.
    let fresh = jobgraph::metrics::Metrics::new(Default::default());
    for text in [app.metrics().await, fresh.render(&app.db).await.unwrap()] {
        for line in [
            "jobgraph_job_retries{tool=\"flaky\"} 1",
            "jobgraph_jobs_refunded{tool=\"flaky\"} 2",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "{line} missing from:\n{text}"
            );
        }
    }
}

#[tokio::test]
async fn a_failing_command_keeps_its_stderr_and_retries_only_retryable_codes() {
    let app = spawn(2).await;
    let (alice, ws) = app.setup("lab", 1000).await;
    let fatal = app
        .submit(
            &alice,
            &ws,
            json!({"tool": "crash", "settings": {"code": 3}}),
        )
        .await;
    let transient = app
        .submit(
            &alice,
            &ws,
            json!({"tool": "crash", "settings": {"code": 75}}),
        )
        .await;
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
    let (alice, ws) = app.setup("lab", 1000).await;
    let dir = tempfile::tempdir().unwrap();
    let pidfile = dir.path().join("child.pid");
    let id = app
        .submit(
            &alice,
            &ws,
            json!({"tool": "hang", "settings": {"pidfile": pidfile.display().to_string()}}),
        )
        .await;
    let job = app.wait_final(&alice.token, &id, WAIT).await;
    assert_eq!(job["status"], "TIMEOUT", "{job}");
    let pid = std::fs::read_to_string(&pidfile).unwrap().trim().to_owned();
    // Well before its `sleep 30` would end by itself.
    until(
        Duration::from_secs(20),
        &format!("the background child {pid} ends with the timeout"),
        || async { !std::path::Path::new(&format!("/proc/{pid}")).exists() },
    )
    .await;
}
