//! The references of jobs and ledger entries: what the database refuses, and what deleting a
//! referenced row does. The same on SQLite (foreign keys) and PostgreSQL (checked once per
//! statement, migration 000100 of 2026-12-07).

use std::time::Duration;

use entity::ids::{BatchId, JobId, TransactionId, UserId, WorkspaceId};
use entity::{batch, credit_transaction, job, user, workspace};
use sea_orm::sea_query::Expr;
use sea_orm::{
    ColumnTrait as _, EntityTrait as _, IntoActiveModel as _, PaginatorTrait as _,
    QueryFilter as _, TransactionTrait as _,
};
use serde_json::json;

use crate::support::{TestApp, TestUser};

/// Alice's workspace with a batch of two jobs, one of them read back, and an entry of its
/// ledger.
async fn submitted(app: &TestApp) -> (TestUser, job::Model, credit_transaction::Model) {
    let (alice, ws) = app.setup("lab", 10).await;
    app.submit_batch(
        &alice,
        &ws,
        &[json!({"tool": "noop"}), json!({"tool": "noop"})],
    )
    .await;
    let job = job::Entity::find().one(&app.db).await.unwrap().unwrap();
    let charge = credit_transaction::Entity::find()
        .one(&app.db)
        .await
        .unwrap()
        .unwrap();
    (alice, job, charge)
}

/// A copy of `job` under a new id, changed by `change`, to be inserted.
fn copy_of(job: &job::Model, change: impl FnOnce(&mut job::Model)) -> job::ActiveModel {
    let mut copy = job.clone();
    copy.id = JobId::new();
    copy.idempotency_key = None;
    change(&mut copy);
    copy.into_active_model()
}

async fn counts(app: &TestApp) -> (u64, u64) {
    (
        job::Entity::find().count(&app.db).await.unwrap(),
        credit_transaction::Entity::find()
            .count(&app.db)
            .await
            .unwrap(),
    )
}

#[tokio::test]
async fn rows_naming_a_workspace_user_or_batch_that_does_not_exist_are_refused_whole() {
    let app = TestApp::spawn().await;
    let (_, job, charge) = submitted(&app).await;
    let before = counts(&app).await;

    // Each statement inserts a good row beside the bad one: neither is written.
    let bad_jobs: [fn(&mut job::Model); 3] = [
        |job| job.workspace_id = WorkspaceId::new(),
        |job| job.submitter_id = UserId::new(),
        |job| job.batch_id = Some(BatchId::new()),
    ];
    for bad in bad_jobs {
        let inserted = job::Entity::insert_many([copy_of(&job, |_| {}), copy_of(&job, bad)])
            .exec(&app.db)
            .await;
        assert!(
            inserted.is_err(),
            "a job with a missing reference was written"
        );
    }
    let bad_entries: [fn(&mut credit_transaction::Model); 2] = [
        |entry| entry.workspace_id = WorkspaceId::new(),
        |entry| entry.actor_id = Some(UserId::new()),
    ];
    for bad in bad_entries {
        let mut entry = charge.clone();
        entry.id = TransactionId::new();
        bad(&mut entry);
        let mut good = charge.clone();
        good.id = TransactionId::new();
        let inserted = credit_transaction::Entity::insert_many([
            good.into_active_model(),
            entry.into_active_model(),
        ])
        .exec(&app.db)
        .await;
        assert!(
            inserted.is_err(),
            "a ledger entry with a missing reference was written"
        );
    }
    assert_eq!(counts(&app).await, before);

    // A reference changed later is checked as well; to nothing, where it may be, is fine.
    let changes = [
        (job::Column::WorkspaceId, Expr::value(WorkspaceId::new())),
        (job::Column::SubmitterId, Expr::value(UserId::new())),
        (job::Column::BatchId, Expr::value(BatchId::new())),
    ];
    for (column, value) in changes {
        let changed = job::Entity::update_many()
            .col_expr(column, value)
            .filter(job::Column::Id.eq(job.id))
            .exec(&app.db)
            .await;
        assert!(
            changed.is_err(),
            "a job's {column:?} was changed to nothing"
        );
    }
    let changed = credit_transaction::Entity::update_many()
        .col_expr(
            credit_transaction::Column::ActorId,
            Expr::value(UserId::new()),
        )
        .filter(credit_transaction::Column::Id.eq(charge.id))
        .exec(&app.db)
        .await;
    assert!(
        changed.is_err(),
        "a ledger entry's actor was changed to nothing"
    );
    job::Entity::update_many()
        .col_expr(job::Column::BatchId, Expr::value(None::<BatchId>))
        .filter(job::Column::Id.eq(job.id))
        .exec(&app.db)
        .await
        .unwrap();
    let read = job::Entity::find_by_id(job.id).one(&app.db).await.unwrap();
    assert_eq!(read.unwrap().batch_id, None);
}

#[tokio::test]
async fn deleting_a_referenced_row_does_what_its_reference_says() {
    let app = TestApp::spawn().await;
    let (alice, job, charge) = submitted(&app).await;
    let batch_id = job.batch_id.expect("a batch's job");
    let alice_id = jobgraph::ids::decode::<UserId>("u", &alice.id).unwrap();

    // A batch's jobs outlive it, without their batch.
    batch::Entity::delete_by_id(batch_id)
        .exec(&app.db)
        .await
        .unwrap();
    let batched = job::Entity::find()
        .filter(job::Column::BatchId.is_not_null())
        .count(&app.db)
        .await
        .unwrap();
    assert_eq!(batched, 0);
    assert_eq!(counts(&app).await.0, 2);

    // A user who submitted jobs stays; one who only moved credits goes, and the ledger keeps
    // the entry without its actor.
    let refused = user::Entity::delete_by_id(alice_id).exec(&app.db).await;
    assert!(refused.is_err(), "the submitter of jobs was deleted");
    assert!(
        user::Entity::find_by_id(alice_id)
            .one(&app.db)
            .await
            .unwrap()
            .is_some()
    );
    let bob = app.user("bob@lab.test").await;
    let bob_id = jobgraph::ids::decode::<UserId>("u", &bob.id).unwrap();
    let mut entry = charge.clone();
    entry.id = TransactionId::new();
    entry.actor_id = Some(bob_id);
    credit_transaction::Entity::insert(entry.clone().into_active_model())
        .exec(&app.db)
        .await
        .unwrap();
    user::Entity::delete_by_id(bob_id)
        .exec(&app.db)
        .await
        .unwrap();
    let kept = credit_transaction::Entity::find_by_id(entry.id)
        .one(&app.db)
        .await
        .unwrap()
        .expect("the entry stays");
    assert_eq!(kept.actor_id, None);

    // A workspace takes its jobs and ledger along.
    workspace::Entity::delete_by_id(job.workspace_id)
        .exec(&app.db)
        .await
        .unwrap();
    assert_eq!(counts(&app).await, (0, 0));
}

#[tokio::test]
async fn a_job_written_while_its_workspace_is_deleted_is_deleted_with_it_or_refused() {
    let app = TestApp::spawn().await;
    let (alice, job, _) = submitted(&app).await;
    let ws = job.workspace_id;

    // The job's transaction first: the deletion waits for it, then takes its job along.
    let tx = app.db.begin().await.unwrap();
    job::Entity::insert(copy_of(&job, |_| {}))
        .exec(&tx)
        .await
        .unwrap();
    let db = app.db.clone();
    let deleting = tokio::spawn(async move { workspace::Entity::delete_by_id(ws).exec(&db).await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !deleting.is_finished(),
        "the deletion did not wait for the job's transaction"
    );
    tx.commit().await.unwrap();
    deleting.await.unwrap().unwrap();
    let left = job::Entity::find()
        .filter(job::Column::WorkspaceId.eq(ws))
        .count(&app.db)
        .await
        .unwrap();
    assert_eq!(left, 0, "a job outlived its workspace");

    // The deletion first: the job waits for it, then is refused.
    let ws = app.workspace(&alice, "second").await;
    app.grant(&ws, 10).await;
    app.submit_batch(&alice, &ws, &[json!({"tool": "noop"})])
        .await;
    let ws = jobgraph::ids::decode::<WorkspaceId>("ws", &ws).unwrap();
    let job = job::Entity::find()
        .filter(job::Column::WorkspaceId.eq(ws))
        .one(&app.db)
        .await
        .unwrap()
        .unwrap();
    let tx = app.db.begin().await.unwrap();
    workspace::Entity::delete_by_id(ws).exec(&tx).await.unwrap();
    let db = app.db.clone();
    let copy = copy_of(&job, |copy| copy.batch_id = None);
    let writing = tokio::spawn(async move { job::Entity::insert(copy).exec(&db).await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !writing.is_finished(),
        "the job did not wait for the deletion"
    );
    tx.commit().await.unwrap();
    assert!(
        writing.await.unwrap().is_err(),
        "a job was written into a deleted workspace"
    );
    let left = job::Entity::find()
        .filter(job::Column::WorkspaceId.eq(ws))
        .count(&app.db)
        .await
        .unwrap();
    assert_eq!(left, 0);
}
