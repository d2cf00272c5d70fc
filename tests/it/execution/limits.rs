//! Limits on running jobs, per workspace and per tool, held across workers.

use std::time::Duration;

use entity::job::{self, JobStatus};
use sea_orm::EntityTrait;
use serde_json::json;

use super::spawn;
use crate::support::{TestApp, WAIT, eventually};

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
    eventually(WAIT, "every job ends", || async {
        let mut jobs = Vec::new();
        for id in ids {
            let id = jobgraph::ids::decode::<entity::ids::JobId>("id", id).unwrap();
            jobs.push(
                job::Entity::find_by_id(id)
                    .one(&app.db)
                    .await
                    .unwrap()
                    .unwrap(),
            );
        }
        match jobs.iter().all(|job| job.status.is_final()) {
            true => Ok(jobs),
            false => Err(jobs),
        }
    })
    .await
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
    let (alice, busy) = app.setup("lab", 1000).await;
    let bob = app.user("bob@lab.test").await;
    let quiet = app.workspace(&bob, "quiet").await;
    app.grant(&quiet, 100).await;
    let mut queued = Vec::new();
    for _ in 0..6 {
        queued.push(
            app.submit(
                &alice,
                &busy,
                json!({"tool": "sleep", "settings": {"seconds": 0.4}}),
            )
            .await,
        );
    }
    let lone = app
        .submit(
            &bob,
            &quiet,
            json!({"tool": "sleep", "settings": {"seconds": 0.4}}),
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
    let (alice, ws) = app.setup("lab", 1000).await;
    let mut solos = Vec::new();
    for _ in 0..3 {
        solos.push(
            app.submit(
                &alice,
                &ws,
                json!({"tool": "solo", "settings": {"seconds": 0.4}}),
            )
            .await,
        );
    }
    let other = app
        .submit(
            &alice,
            &ws,
            json!({"tool": "sleep", "settings": {"seconds": 0.6}}),
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
