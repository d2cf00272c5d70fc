//! The connection to the database itself.

use std::time::{Duration, Instant};

use sea_orm::{ConnectionTrait as _, Statement};

use crate::support::{TestApp, WAIT, telling_when_polled, until};

/// A statement larger than one TCP segment (the queue's multi-row writes are) is sent whole at
/// once. Left to Nagle's algorithm, its last segment would wait for the server's delayed ACK,
/// about 40 ms per statement on PostgreSQL over TCP (without it, 20 such statements took 0.67 s).
#[tokio::test]
async fn large_statements_are_not_held_back_by_delayed_acks() {
    let app = TestApp::spawn().await;
    let text = "ACGT".repeat(64 * 1024);
    let backend = app.db.get_database_backend();
    let sql = match backend {
        sea_orm::DatabaseBackend::Postgres => "SELECT length($1::text)::bigint AS n",
        _ => "SELECT length(?) AS n",
    };
    // The connection is open and warm before timing.
    app.db.execute_unprepared("SELECT 1").await.unwrap();
    let mut took = Vec::new();
    for _ in 0..40 {
        let started = Instant::now();
        let row = app
            .db
            .query_one_raw(Statement::from_sql_and_values(
                backend,
                sql,
                [text.clone().into()],
            ))
            .await
            .unwrap()
            .unwrap();
        took.push(started.elapsed());
        let n: i64 = row.try_get("", "n").unwrap();
        assert_eq!(n, text.len() as i64);
    }
    // The typical statement, not the total: a loaded machine stalls a few statements, while a
    // delayed ACK would hold back most of them.
    took.sort();
    let median = took[took.len() / 2];
    const UNDER_A_DELAYED_ACK: Duration = Duration::from_millis(20);
    assert!(
        median < UNDER_A_DELAYED_ACK,
        "statements of 256 KiB took {median:?} typically: {took:?}"
    );
}

/// The newest migrations can be undone and applied again, and the server works on the result:
/// its writes are committed with their live entries, all numbered, each with its number as id.
#[tokio::test]
async fn the_newest_migrations_go_down_and_up_again() {
    use entity::live_event;
    use migration::{Migrator, MigratorTrait as _};
    use sea_orm::{EntityTrait as _, QueryOrder as _};

    let app = TestApp::spawn().await;
    let owner = app.user("owner@lab.test").await;
    app.workspace(&owner, "before").await;
    Migrator::down(&app.db, Some(6)).await.unwrap();
    assert_eq!(
        Migrator::get_pending_migrations(&app.db)
            .await
            .unwrap()
            .len(),
        6
    );
    jobgraph::db::migrate(&app.db).await.unwrap();
    assert!(
        Migrator::get_pending_migrations(&app.db)
            .await
            .unwrap()
            .is_empty()
    );

    let ws = app.workspace(&owner, "after").await;
    app.grant(&ws, 10).await;
    app.job(&owner, &ws, 1).await;
    let entries = live_event::Entity::find()
        .order_by_asc(live_event::Column::Id)
        .all(&app.db)
        .await
        .unwrap();
    let numbers: Vec<i64> = entries
        .iter()
        .map(|e| e.seq.expect("every entry is numbered"))
        .collect();
    assert!(numbers.len() >= 3, "{numbers:?}");
    assert!(numbers.windows(2).all(|w| w[0] < w[1]), "{numbers:?}");
    // An entry's number is its id as well (on PostgreSQL since migration 000090, whose primary
    // key then keeps the numbers unique; on SQLite the log's trigger numbers it so).
    for entry in &entries {
        assert_eq!(entry.seq, Some(entry.id), "{entry:?}");
    }
}

/// Write transactions of one process take turns at a SQLite database in the order they asked,
/// waiting in memory rather than in SQLite's busy handler, which sleeps and retries (1, 2, 5,
/// 10 ms and longer) and so hands the lock to whichever retry comes first. On PostgreSQL they
/// do not wait for each other at all.
#[tokio::test]
async fn write_transactions_take_turns_in_arrival_order_on_sqlite() {
    use std::sync::{Arc, Mutex};

    let app = TestApp::spawn().await;
    let sqlite = app.db.get_database_backend() == sea_orm::DatabaseBackend::Sqlite;
    let first = jobgraph::db::begin_write(&app.db).await.unwrap();
    let began = Arc::new(Mutex::new(Vec::new()));
    let mut writers = Vec::new();
    for n in 1..=3 {
        let db = app.db.clone();
        let (asked, has_asked) = tokio::sync::oneshot::channel();
        writers.push(tokio::spawn({
            let began = began.clone();
            async move {
                let tx = telling_when_polled(jobgraph::db::begin_write(&db), asked)
                    .await
                    .unwrap();
                began.lock().unwrap().push(n);
                tx.execute_unprepared("SELECT 1").await.unwrap();
                tx.commit().await.unwrap();
            }
        }));
        // Each asks once the one before has asked: on SQLite it is then queued for its turn.
        has_asked.await.unwrap();
        if !sqlite {
            // On PostgreSQL nothing holds it back: it begins before the next one asks.
            until(WAIT, "a writer begins beside an open one", || {
                let began = began.clone();
                async move { began.lock().unwrap().len() == n }
            })
            .await;
        }
    }
    let while_first_open = began.lock().unwrap().clone();
    first.commit().await.unwrap();
    for writer in writers {
        writer.await.unwrap();
    }
    let order = began.lock().unwrap().clone();
    if sqlite {
        assert!(
            while_first_open.is_empty(),
            "began beside an open write transaction: {while_first_open:?}"
        );
    } else {
        assert_eq!(while_first_open.len(), 3, "{while_first_open:?}");
    }
    assert_eq!(order, vec![1, 2, 3]);
}

/// The migration that brings `job_keys` writes the keys of the jobs already there.
#[tokio::test]
async fn job_keys_are_written_for_the_jobs_already_there() {
    use migration::{Migrator, MigratorTrait as _};
    use sea_orm::EntityTrait as _;

    let app = TestApp::spawn().await;
    let owner = app.user("owner@lab.test").await;
    let ws = app.workspace(&owner, "lab").await;
    app.grant(&ws, 10).await;
    app.job(&owner, &ws, 1).await;
    // Back to before the job_keys migration, with those after it.
    let since_job_keys = Migrator::migrations()
        .iter()
        .rev()
        .position(|m| m.name() == "m20261202_000110_job_keys")
        .unwrap()
        + 1;
    Migrator::down(&app.db, Some(since_job_keys as u32))
        .await
        .unwrap();
    jobgraph::db::migrate(&app.db).await.unwrap();
    let jobs = entity::job::Entity::find().all(&app.db).await.unwrap();
    let keys = entity::job_key::Entity::find().all(&app.db).await.unwrap();
    assert_eq!(jobs.len(), 1);
    assert_eq!(
        keys,
        [entity::job_key::Model {
            job_id: jobs[0].id,
            workspace_id: jobs[0].workspace_id,
            tool: jobs[0].tool.clone(),
            submitter_id: jobs[0].submitter_id,
        }]
    );
}
