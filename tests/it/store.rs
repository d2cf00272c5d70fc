//! The store's forms agree: the one-row and the many-row statements of a status set the same
//! columns, and a job's timeline rows and live entries hold the same job, whichever statement
//! (per database) wrote them.

use std::time::Duration;

use entity::ids::JobId;
use entity::job::{self, JobStatus};
use entity::live_event::LiveKind;
use entity::{job_event, live_event};
use jobgraph::ids::{self};
use jobgraph::jobs::lifecycle::{self, Change, Completion};
use jobgraph::store;
use sea_orm::{ColumnTrait as _, EntityTrait as _, QueryFilter as _, QueryOrder as _};
use serde_json::json;

use crate::support::TestApp;

/// Two QUEUED jobs of one workspace; their ids.
async fn two_queued(app: &TestApp) -> (JobId, JobId) {
    let alice = app.user("alice@lab.test").await;
    let ws = app.workspace(&alice, "lab").await;
    app.grant(&ws, 100).await;
    let first = app.job(&alice, &ws, 0).await;
    let second = app.job(&alice, &ws, 0).await;
    let id = |job: &serde_json::Value| {
        ids::decode::<entity::ids::JobId>("id", job["id"].as_str().unwrap()).unwrap()
    };
    (id(&first), id(&second))
}

/// Two jobs queued as by `two_queued`, then claimed together by worker `w`.
async fn two_claimed(app: &TestApp) -> (JobId, JobId) {
    let (first, second) = two_queued(app).await;
    let tx = jobgraph::db::begin_write(&app.db).await.unwrap();
    let chosen = job::Column::Id.is_in([first, second]);
    store::claim(&tx, chosen, "w", Duration::from_secs(60), 2)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    (first, second)
}

async fn read(app: &TestApp, id: JobId) -> job::Model {
    job::Entity::find_by_id(id)
        .one(&app.db)
        .await
        .unwrap()
        .unwrap()
}

/// The columns a move decides, with the times replaced by whether they are set.
fn decided(job: &job::Model) -> serde_json::Value {
    json!({
        "status": format!("{:?}", job.status),
        "stage": job.stage,
        "progress": job.progress,
        "attempt": job.attempt,
        "result": job.result,
        "resources": job.resources,
        "error": [job.error_message, job.error_code],
        "refunded": job.refunded,
        "workerId": job.worker_id,
        "queuedAt": job.queued_at.is_some(),
        "startedAt": job.started_at.is_some(),
        "finishedAt": job.finished_at.is_some(),
        "runAfter": job.run_after.is_some(),
        "leaseExpiresAt": job.lease_expires_at.is_some(),
        "heartbeatAt": job.heartbeat_at.is_some(),
    })
}

#[tokio::test]
async fn a_claim_and_a_single_move_to_processing_set_the_same_columns() {
    let app = TestApp::spawn().await;
    let (one, many) = two_queued(&app).await;
    let lease = Duration::from_secs(60);

    let tx = jobgraph::db::begin_write(&app.db).await.unwrap();
    let change = Change {
        lease: Some(store::Lease {
            worker: "w".to_owned(),
            expires_at: store::lease_end(chrono::Utc::now(), lease),
        }),
        ..Default::default()
    };
    lifecycle::transition(&tx, &read(&app, one).await, JobStatus::Processing, change)
        .await
        .unwrap();
    tx.commit().await.unwrap();

    let tx = jobgraph::db::begin_write(&app.db).await.unwrap();
    let chosen = job::Column::Id.eq(many);
    let claimed = store::claim(&tx, chosen, "w", lease, 1).await.unwrap();
    tx.commit().await.unwrap();
    assert_eq!(claimed.into_jobs().unwrap().len(), 1);

    let (one, many) = (read(&app, one).await, read(&app, many).await);
    assert_eq!(one.status, JobStatus::Processing);
    assert_eq!(one.attempt, 1);
    assert_eq!(decided(&one), decided(&many));
}

#[tokio::test]
async fn a_completion_group_and_a_single_completion_set_the_same_columns() {
    let app = TestApp::spawn().await;
    let (one, many) = two_claimed(&app).await;
    let result = json!({"answer": 42});
    let resources = json!({"wallSeconds": 0.5});

    let tx = jobgraph::db::begin_write(&app.db).await.unwrap();
    let change = Change {
        result: Some(result.clone()),
        resources: Some(resources.clone()),
        ..Default::default()
    };
    lifecycle::transition(&tx, &read(&app, one).await, JobStatus::Completed, change)
        .await
        .unwrap();
    tx.commit().await.unwrap();

    let completions = [Completion {
        job: read(&app, many).await,
        result,
        resources,
    }];
    let completing = lifecycle::Completing::new(&app.db, &completions);
    let tx = jobgraph::db::begin_write(&app.db).await.unwrap();
    let outcomes = completing.write(&tx, &[]).await.unwrap();
    tx.commit().await.unwrap();
    assert!(outcomes.iter().all(Result::is_ok));

    let (one, many) = (read(&app, one).await, read(&app, many).await);
    assert_eq!(one.status, JobStatus::Completed);
    assert_eq!(decided(&one), decided(&many));
}

#[tokio::test]
async fn every_timeline_row_and_live_entry_of_a_job_holds_the_job_as_it_was() {
    let app = TestApp::spawn().await;
    let (id, _) = two_queued(&app).await;
    // Submitted QUEUED (written from the jobs in hand), claimed (from the changed rows, on
    // PostgreSQL), a stage reported (one row), completed in a group (from the changed rows).
    let tx = jobgraph::db::begin_write(&app.db).await.unwrap();
    store::claim(&tx, job::Column::Id.eq(id), "w", Duration::from_secs(60), 1)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let running = read(&app, id).await;
    assert!(
        jobgraph::queue::report(&app.db, &running, Some(0.5), Some("Aligning"))
            .await
            .unwrap()
    );
    let completions = [Completion {
        job: read(&app, id).await,
        result: json!({}),
        resources: json!({}),
    }];
    let completing = lifecycle::Completing::new(&app.db, &completions);
    let tx = jobgraph::db::begin_write(&app.db).await.unwrap();
    completing.write(&tx, &[]).await.unwrap();
    tx.commit().await.unwrap();
    let done = read(&app, id).await;

    let timeline = job_event::Entity::find()
        .filter(job_event::Column::JobId.eq(id))
        .order_by_asc(job_event::Column::Id)
        .all(&app.db)
        .await
        .unwrap();
    let live = live_event::Entity::find()
        .filter(live_event::Column::JobId.eq(id))
        .order_by_asc(live_event::Column::Seq)
        .all(&app.db)
        .await
        .unwrap();
    let steps: Vec<_> = timeline
        .iter()
        .map(|e| (e.status, e.stage.clone(), e.progress, e.attempt))
        .collect();
    assert_eq!(
        steps,
        [
            (JobStatus::Queued, None, 0.0, 0),
            (JobStatus::Processing, None, 0.0, 1),
            (JobStatus::Processing, Some("Aligning".to_owned()), 0.5, 1),
            (JobStatus::Completed, None, 1.0, 1),
        ]
    );
    assert!(timeline.iter().all(|e| e.workspace_id == done.workspace_id));
    let entries: Vec<_> = live
        .iter()
        .map(|e| {
            (
                e.status.unwrap(),
                e.stage.clone(),
                e.progress.unwrap(),
                e.attempt.unwrap(),
            )
        })
        .collect();
    assert_eq!(entries, steps, "the live log follows the timeline");
    let kinds: Vec<_> = live.iter().map(|e| e.kind).collect();
    assert_eq!(
        kinds,
        [
            LiveKind::Created,
            LiveKind::Updated,
            LiveKind::Updated,
            LiveKind::Updated
        ]
    );
    // The facts subscription filters read are the same in every entry, as `store::facts`
    // builds them from the job (times compared as times).
    let facts = |data: &serde_json::Value| {
        let mut data = data.clone();
        let at = data["createdAt"].as_str().unwrap().to_owned();
        data["createdAt"] = json!(
            chrono::DateTime::parse_from_rfc3339(&at)
                .unwrap()
                .timestamp_micros()
        );
        data
    };
    let expected = facts(&store::facts(&done));
    for entry in &live {
        assert_eq!(entry.workspace_id, done.workspace_id);
        assert_eq!(facts(entry.data.as_ref().unwrap()), expected, "{entry:?}");
    }
}

#[tokio::test]
async fn reports_written_together_change_only_the_attempts_still_running() {
    let app = TestApp::spawn().await;
    let (staged, plain) = two_claimed(&app).await;
    let (staged, plain) = (read(&app, staged).await, read(&app, plain).await);
    // A report of an earlier attempt of a running job, as a runner that lost its lease sends.
    let mut stale = plain.clone();
    stale.attempt -= 1;

    let tx = jobgraph::db::begin_write(&app.db).await.unwrap();
    let reports = [
        store::Report {
            job: &stale,
            progress: Some(0.9),
            stage: Some("Stale"),
        },
        store::Report {
            job: &staged,
            progress: Some(0.25),
            stage: Some("Aligning"),
        },
        store::Report {
            job: &plain,
            progress: Some(1.5),
            stage: None,
        },
    ];
    let written = store::report_all(&tx, &reports).await.unwrap();
    tx.commit().await.unwrap();
    let written: Vec<_> = written
        .iter()
        .map(|job| {
            job.as_ref()
                .map(|job| (job.id, job.progress, job.stage.clone()))
        })
        .collect();
    assert_eq!(
        written,
        [
            None,
            Some((staged.id, 0.25, Some("Aligning".to_owned()))),
            // Progress is kept within 0 to 1.
            Some((plain.id, 1.0, None)),
        ]
    );
    let (after_staged, after_plain) = (read(&app, staged.id).await, read(&app, plain.id).await);
    assert_eq!(
        (after_staged.progress, after_staged.stage.as_deref()),
        (0.25, Some("Aligning"))
    );
    assert_eq!((after_plain.progress, after_plain.stage), (1.0, None));
    // The stage went to the staged job's timeline; neither report of the other job did.
    let stages = |id: JobId| {
        let db = app.db.clone();
        async move {
            job_event::Entity::find()
                .filter(job_event::Column::JobId.eq(id))
                .all(&db)
                .await
                .unwrap()
                .into_iter()
                .filter_map(|e| e.stage)
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(stages(staged.id).await, ["Aligning"]);
    assert!(stages(plain.id).await.is_empty());
    // Each written report has its live entry: progress alone as well.
    let progress_entries = live_event::Entity::find()
        .filter(live_event::Column::JobId.eq(plain.id))
        .filter(live_event::Column::Progress.eq(1.0))
        .all(&app.db)
        .await
        .unwrap();
    assert_eq!(progress_entries.len(), 1);
}
