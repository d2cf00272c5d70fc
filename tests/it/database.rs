//! The connection to the database itself.

use std::time::{Duration, Instant};

use sea_orm::{ConnectionTrait as _, Statement};

use crate::support::TestApp;

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
    let started = Instant::now();
    for _ in 0..40 {
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
        let n: i64 = row.try_get("", "n").unwrap();
        assert_eq!(n, text.len() as i64);
    }
    let took = started.elapsed();
    assert!(
        took < Duration::from_millis(600),
        "40 statements of 256 KiB took {took:?}"
    );
}
