//! Claims: how workers take queued jobs, alone or side by side, and wake when one is queued.

use std::time::Duration;

use entity::job::{self, JobStatus};
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, sea_query::Expr};
use serde_json::json;

use super::{any_tool, app_worker, live_entries, spawn};
use crate::support::{WAIT, eventually, until};

#[tokio::test]
async fn a_claim_changes_its_jobs_before_it_waits_its_turn_to_number_live_entries() {
    use jobgraph::queue;
    use sea_orm::{ConnectionTrait as _, DatabaseBackend, Statement};

    let app = spawn(0).await;
    let (alice, ws) = app.setup("lab", 1000).await;
    for _ in 0..4 {
        app.submit(
            &alice,
            &ws,
            json!({"tool": "sleep", "settings": {"seconds": 0}}),
        )
        .await;
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
    if backend == DatabaseBackend::Postgres {
        // It waits with its jobs already changed (and locked): only the numbering waits, so
        // claims and completions of several workers change their rows side by side.
        let count = |sql: &'static str| {
            let db = app.db.clone();
            async move {
                db.query_one_raw(Statement::from_string(backend, sql))
                    .await
                    .unwrap()
                    .unwrap()
                    .try_get::<i64>("", "n")
                    .unwrap()
            }
        };
        // Seen from outside without taking a lock, which would make the claim skip the jobs.
        until(WAIT, "the second claim waits for a lock", || async {
            count(
                "SELECT count(*) AS n FROM pg_stat_activity \
                 WHERE datname = current_database() AND wait_event_type = 'Lock'",
            )
            .await
                > 0
        })
        .await;
        let lockable = count(
            "SELECT count(*) AS n FROM (SELECT id FROM jobs WHERE status = 'QUEUED' \
             FOR UPDATE SKIP LOCKED) AS q",
        )
        .await;
        assert_eq!(lockable, 0, "the second claim holds the other three jobs");
    } else {
        // On SQLite it waits for the one write lock before it changes anything; a claim that
        // did not wait would be done within this.
        const A_CLAIM: Duration = Duration::from_millis(300);
        tokio::time::sleep(A_CLAIM).await;
    }
    assert!(
        !second.is_finished(),
        "the second claim waits for the first"
    );
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

#[tokio::test]
async fn two_workers_on_one_database_never_run_a_job_twice() {
    let app = spawn(0).await;
    let (alice, ws) = app.setup("lab", 1000).await;
    app.grant(&ws, 10_000).await;
    // Runs that take a moment: a worker can then not drain the queue alone between two claims
    // of the other, whose completions are written in groups.
    let batch: Vec<_> = (0..1000)
        .map(|_| json!({"tool": "sleep", "settings": {"seconds": 0.005, "stages": ["Working"]}}))
        .collect();
    for _ in 0..2 {
        app.submit_batch(&alice, &ws, &batch).await;
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
    // Seconds on an idle machine; the bound only says that they all end.
    eventually(Duration::from_secs(300), "every job completes", || async {
        let data = app
            .ok(
                Some(&alice.token),
                "query($ws: ID!) { workspace(id: $ws) { jobCounts { completed total } } }",
                json!({"ws": ws}),
            )
            .await;
        match data["workspace"]["jobCounts"]["completed"] == 2000 {
            true => Ok(()),
            false => Err(data),
        }
    })
    .await;
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
async fn an_idle_worker_wakes_at_once_when_a_job_is_queued() {
    // The API serves no workers; the worker polls only every minute, so only an announcement
    // can make it start the job quickly: in memory on SQLite (one process). On PostgreSQL the
    // worker hears only LISTEN/NOTIFY: its process's own announcements, which wake its workers
    // at commit in memory, it passes over; another process's wake it.
    use sea_orm::{ConnectionTrait as _, DatabaseBackend, PaginatorTrait as _, Statement};
    let postgres = std::env::var("TEST_DATABASE_URL").is_ok_and(|url| !url.is_empty());
    let app = spawn(0).await;
    let (alice, ws) = app.setup("lab", 1000).await;
    let shutdown = tokio_util::sync::CancellationToken::new();
    let mut config = jobgraph::Config::defaults();
    config.database.database_url = Some(app.database_url.clone());
    config.server.workers = 1;
    let worker_app = jobgraph::App::build(config).await.unwrap();
    let mut worker = if postgres {
        let mut worker = worker_app.worker();
        // Not this process's signal of queued jobs: only what it hears can wake it.
        worker.wake = std::sync::Arc::default();
        worker
    } else {
        app_worker(&app)
    };
    worker.config.poll = Duration::from_secs(60);
    worker.config.maintenance = Duration::from_secs(60);
    let handle = tokio::spawn(worker.run(shutdown.clone()));
    // Up: it has made its first claim and announced itself in the register...
    until(WAIT, "the worker announces itself", || async {
        entity::worker::Entity::find().count(&app.db).await.unwrap() > 0
    })
    .await;
    if postgres {
        // ...and listens for announcements of queued jobs.
        until(WAIT, "the worker listens", || async {
            let listening = app
                .db
                .query_one_raw(Statement::from_sql_and_values(
                    DatabaseBackend::Postgres,
                    "SELECT count(*) AS n FROM pg_stat_activity \
                     WHERE datname = current_database() AND query LIKE $1",
                    [format!("LISTEN %{}%", jobgraph::store::QUEUED_CHANNEL).into()],
                ))
                .await
                .unwrap()
                .unwrap()
                .try_get::<i64>("", "n")
                .unwrap();
            listening > 0
        })
        .await;
    }
    // Listening, it makes one more (empty) claim and then waits; nothing marks that moment,
    // which comes within this, even on a loaded machine. A claim after the submission would
    // start the job with no announcement heard.
    const SETTLING: Duration = Duration::from_secs(1);
    tokio::time::sleep(SETTLING).await;
    let id = app.submit(&alice, &ws, json!({"tool": "noop"})).await;
    if postgres {
        // This process announced it: the worker, which stands for another process, passes
        // over the notification.
        tokio::time::sleep(Duration::from_secs(1)).await;
        let job = app.wait_for(&alice.token, &id, WAIT, |_| true).await;
        assert_eq!(
            job["status"], "QUEUED",
            "woken by its own process's announcement"
        );
        // Another process's announcement.
        app.db
            .execute_unprepared(&format!(
                "NOTIFY {}, 'another process'",
                jobgraph::store::QUEUED_CHANNEL
            ))
            .await
            .unwrap();
    }
    let started = std::time::Instant::now();
    let job = app.wait_final(&alice.token, &id, WAIT).await;
    assert_eq!(job["status"], "COMPLETED");
    // Far sooner than the minute its poll would take, with room for a loaded machine.
    const PROMPTLY: Duration = Duration::from_secs(15);
    assert!(started.elapsed() < PROMPTLY, "took {:?}", started.elapsed());
    shutdown.cancel();
    handle.await.unwrap();
}

#[tokio::test]
async fn the_queues_job_rows_read_back_as_sea_orm_reads_them() {
    use chrono::{TimeZone as _, Utc};
    use sea_orm::{ActiveModelTrait as _, ConnectionTrait as _, Set};
    let app = spawn(0).await;
    let (alice, ws) = app.setup("lab", 1000).await;
    let mut ids = Vec::new();
    for label in ["bare", "full"] {
        let id = app
            .submit(
                &alice,
                &ws,
                json!({"tool": "noop", "settings": { "label": label }}),
            )
            .await;
        ids.push(jobgraph::ids::decode::<entity::ids::JobId>("id", &id).unwrap());
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
        id: Set(entity::ids::BatchId::new()),
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
