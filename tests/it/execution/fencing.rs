//! Attempt fencing: a job whose worker lost it is reclaimed, and a stale attempt's writes,
//! alone or in a group of completions, are refused.

use std::time::Duration;

use entity::job::{self, JobStatus};
use jobgraph::jobs::lifecycle::Change;
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, sea_query::Expr};
use serde_json::json;

use super::{any_tool, live_entries, spawn};
use crate::support::WAIT;

#[tokio::test]
async fn a_job_whose_worker_died_is_reclaimed_and_its_stale_completion_refused() {
    let app = spawn(0).await;
    let (alice, ws) = app.setup("lab", 1000).await;
    let id = app
        .submit(
            &alice,
            &ws,
            json!({"tool": "sleep", "settings": {"seconds": 0}}),
        )
        .await;
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
    let (alice, ws) = app.setup("lab", 1000).await;
    for _ in 0..4 {
        app.submit(
            &alice,
            &ws,
            json!({"tool": "sleep", "settings": {"seconds": 0}}),
        )
        .await;
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
    let outcomes = completing.write(&tx, &[]).await.unwrap();
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
                    rows[1..],
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
                assert_eq!(timeline[0].status, JobStatus::Queued);
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
                        (Created, Some(JobStatus::Queued), None, Some(0.0), Some(0)),
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
async fn a_workers_leases_are_renewed_together_and_only_for_the_attempts_it_runs() {
    let app = spawn(3).await;
    let (alice, ws) = app.setup("lab", 1000).await;
    let mut ids = Vec::new();
    for _ in 0..3 {
        let id = app
            .submit(
                &alice,
                &ws,
                json!({"tool": "sleep", "settings": {"seconds": 60}}),
            )
            .await;
        ids.push(jobgraph::ids::decode::<entity::ids::JobId>("id", &id).unwrap());
    }
    // With 3-second leases, renewed every second: one statement renews the three, so they
    // share its time.
    let rows = crate::support::eventually(WAIT, "the three leases renewed together", || {
        let ids = ids.clone();
        let db = app.db.clone();
        async move {
            let rows = job::Entity::find()
                .filter(job::Column::Id.is_in(ids))
                .all(&db)
                .await
                .unwrap();
            let beats: Vec<_> = rows.iter().map(|row| row.heartbeat_at).collect();
            let together = rows.len() == 3
                && rows.iter().all(|row| row.status == JobStatus::Processing)
                && beats[0].is_some()
                && beats.iter().all(|beat| *beat == beats[0]);
            if together { Ok(rows) } else { Err(beats) }
        }
    })
    .await;
    for row in &rows {
        let (beat, expires) = (row.heartbeat_at.unwrap(), row.lease_expires_at.unwrap());
        assert!(row.started_at.unwrap() < beat, "{row:?}");
        assert_eq!((expires - beat).num_seconds(), 3, "{row:?}");
    }
    // An attempt that is not the job's renews nothing.
    let stale = &rows[0];
    let renewed = jobgraph::store::renew_all(
        &app.db,
        &[(stale.id, stale.attempt + 1)],
        Duration::from_secs(60),
    )
    .await
    .unwrap();
    assert!(renewed.is_empty());
    let after = job::Entity::find_by_id(stale.id)
        .one(&app.db)
        .await
        .unwrap()
        .unwrap();
    assert!(
        after.lease_expires_at.unwrap() - after.heartbeat_at.unwrap()
            < chrono::Duration::seconds(10)
    );
    for id in ids {
        app.ok(
            Some(&alice.token),
            "mutation($id: ID!) { cancelJob(input: {jobId: $id}) { job { id } } }",
            json!({"id": jobgraph::ids::encode(id).to_string()}),
        )
        .await;
    }
}
