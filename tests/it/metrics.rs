//! `/metrics`: requests by operation and outcome, websockets, rate-limit refusals, and the
//! token that can guard it.

use reqwest::StatusCode;
use serde_json::json;

use crate::support::ws::Ws;
use crate::support::{TestApp, WAIT, eventually};

/// The value of the sample `line` starts (`name{labels}`), if `/metrics` has it.
async fn sample(app: &TestApp, token: Option<&str>, series: &str) -> Option<f64> {
    let mut request = app.client().get(app.url("/metrics"));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let text = request.send().await.unwrap().text().await.unwrap();
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .map(|value| value.trim().parse().unwrap())
}

#[tokio::test]
async fn requests_are_counted_by_operation_and_outcome_and_websockets_while_open() {
    let app = TestApp::spawn().await;
    let alice = app.user("alice@lab.test").await;
    let ws = app.workspace(&alice, "lab").await;
    let run = |query: &'static str, name: &'static str| {
        let request = app
            .client()
            .post(app.url("/graphql"))
            .bearer_auth(&alice.token)
            .json(&json!({"query": query, "operationName": name}));
        async move { request.send().await.unwrap().status() }
    };
    for _ in 0..2 {
        run("query Me { viewer { isAuthenticated } }", "Me").await;
    }
    run(
        "query Missing { job(id: \"job_0193b1e2c3d47e8f9a0b1c2d3e4f5a6b\") { id } }",
        "Missing",
    )
    .await;
    run("query Wrong { nothingHere }", "Wrong").await;
    let series = |operation: &str, outcome: &str| {
        format!(
            "jobgraph_graphql_requests_total{{kind=\"query\",operation=\"{operation}\",outcome=\"{outcome}\"}}"
        )
    };
    assert_eq!(sample(&app, None, &series("Me", "ok")).await, Some(2.0));
    assert_eq!(
        sample(&app, None, &series("Missing", "error")).await,
        Some(1.0)
    );
    assert_eq!(
        sample(&app, None, &series("Wrong", "rejected")).await,
        Some(1.0)
    );
    let timed = "jobgraph_graphql_request_duration_seconds_count{kind=\"query\",operation=\"Me\",outcome=\"ok\"}";
    assert_eq!(sample(&app, None, timed).await, Some(2.0));

    // An open websocket and the subscription running on it, until the socket closes.
    assert_eq!(sample(&app, None, "jobgraph_websockets").await, Some(0.0));
    let mut socket = Ws::connect(app.addr, Some(&alice.token)).await;
    socket
        .subscribe(
            "1",
            "subscription($ws: ID!) { workspaceJobEvents(workspaceId: $ws) { cursor } }",
            json!({ "ws": ws }),
        )
        .await;
    eventually(WAIT, "the subscription counted", || async {
        match (
            sample(&app, None, "jobgraph_websockets").await,
            sample(&app, None, "jobgraph_subscriptions").await,
        ) {
            (Some(1.0), Some(1.0)) => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    drop(socket);
    eventually(WAIT, "the closed socket uncounted", || async {
        match (
            sample(&app, None, "jobgraph_websockets").await,
            sample(&app, None, "jobgraph_subscriptions").await,
        ) {
            (Some(0.0), Some(0.0)) => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
}

#[tokio::test]
async fn websocket_operations_are_counted_by_operation_and_outcome() {
    let app = TestApp::spawn().await;
    let alice = app.user("alice@lab.test").await;
    let ws = app.workspace(&alice, "lab").await;
    let mut socket = Ws::connect(app.addr, Some(&alice.token)).await;
    let operations = [
        ("1", "query SocketMe { viewer { isAuthenticated } }"),
        ("2", "query SocketWrong { nothingHere }"),
        (
            "3",
            "query SocketMissing { job(id: \"job_0193b1e2c3d47e8f9a0b1c2d3e4f5a6b\") { id } }",
        ),
        (
            "4",
            "subscription SocketFeed($ws: ID!) { workspaceJobEvents(workspaceId: $ws) { cursor } }",
        ),
    ];
    for (id, query) in operations {
        socket.subscribe(id, query, json!({ "ws": ws })).await;
    }
    let series = |kind: &str, operation: &str, outcome: &str| {
        format!(
            "jobgraph_graphql_requests_total{{kind=\"{kind}\",operation=\"{operation}\",outcome=\"{outcome}\"}}"
        )
    };
    let expected = [
        (series("query", "SocketMe", "ok"), 1.0),
        (series("query", "SocketWrong", "rejected"), 1.0),
        (series("query", "SocketMissing", "error"), 1.0),
    ];
    for (series, count) in &expected {
        eventually(WAIT, "the socket's queries counted", || async {
            match sample(&app, None, series).await {
                Some(n) if n == *count => Ok(()),
                other => Err(format!("{series}: {other:?}")),
            }
        })
        .await;
    }
    // A quiet subscription is counted when it ends, here with its socket.
    let feed = series("subscription", "SocketFeed", "ok");
    assert_eq!(sample(&app, None, &feed).await, None);
    drop(socket);
    eventually(WAIT, "the subscription counted", || async {
        match sample(&app, None, &feed).await {
            Some(1.0) => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    // None of them was timed: durations are of HTTP requests.
    let timed =
        "jobgraph_graphql_request_duration_seconds_count{kind=\"query\",operation=\"SocketMe\"";
    assert_eq!(sample(&app, None, timed).await, None);
}

#[tokio::test]
async fn operation_names_cannot_grow_the_metrics_without_bound() {
    let app = TestApp::spawn().await;
    let alice = app.user("alice@lab.test").await;
    for i in 0..210 {
        let name = format!("Op{i}");
        app.client()
            .post(app.url("/graphql"))
            .bearer_auth(&alice.token)
            .json(&json!({
                "query": format!("query {name} {{ viewer {{ isAuthenticated }} }}"),
                "operationName": name,
            }))
            .send()
            .await
            .unwrap();
    }
    let other =
        "jobgraph_graphql_requests_total{kind=\"query\",operation=\"other\",outcome=\"ok\"}";
    assert_eq!(sample(&app, None, other).await, Some(10.0));
}

#[tokio::test]
async fn rate_limit_refusals_are_counted() {
    let app = TestApp::spawn_with(|config| {
        config.server.rate_limits.rate_limit = Some("1/min".parse().unwrap());
        config.server.rate_limits.rate_limit_burst = Some(10);
    })
    .await;
    let alice = app.user("alice@lab.test").await;
    let mut refused = 0;
    for _ in 0..12 {
        let status = app
            .post(
                Some(&alice.token),
                "{ viewer { isAuthenticated } }",
                json!({}),
            )
            .await
            .0;
        if status == StatusCode::TOO_MANY_REQUESTS {
            refused += 1;
        }
    }
    assert!(refused > 0);
    let counted = sample(&app, None, "jobgraph_rate_limited_total{client=\"token\"}").await;
    assert_eq!(counted, Some(f64::from(refused)));
}

#[tokio::test]
async fn a_metrics_token_guards_the_metrics() {
    let app = TestApp::spawn_with(|config| {
        config.server.metrics_token = Some("scrape-secret".to_owned());
    })
    .await;
    let status = |token: Option<&'static str>| {
        let mut request = app.client().get(app.url("/metrics"));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        async move { request.send().await.unwrap().status() }
    };
    assert_eq!(status(None).await, StatusCode::UNAUTHORIZED);
    assert_eq!(status(Some("scrape-secre")).await, StatusCode::UNAUTHORIZED);
    assert_eq!(status(Some("scrape-secret")).await, StatusCode::OK);
    assert!(
        sample(&app, Some("scrape-secret"), "jobgraph_queue_depth")
            .await
            .is_some()
    );
}

#[tokio::test]
async fn the_database_pool_shows_its_connections_in_use_and_idle_and_its_size() {
    let app = TestApp::spawn().await;
    let max = sample(&app, None, "jobgraph_db_pool_max").await;
    let expected = match app.db.get_database_backend() {
        sea_orm::DatabaseBackend::Sqlite => 8.0,
        _ => 32.0,
    };
    assert_eq!(max, Some(expected));

    // Three connections lent to transactions held open are used until they end.
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(sea_orm::TransactionTrait::begin(&app.db).await.unwrap());
    }
    let connections = |state: &'static str| {
        let app = &app;
        async move {
            sample(
                app,
                None,
                &format!("jobgraph_db_pool_connections{{state=\"{state}\"}}"),
            )
            .await
            .unwrap()
        }
    };
    eventually(WAIT, "three connections used", || async {
        match connections("used").await {
            used if used >= 3.0 => Ok(()),
            used => Err(format!("{used} used")),
        }
    })
    .await;
    drop(held);
    eventually(WAIT, "the three connections idle", || async {
        let (used, idle) = (connections("used").await, connections("idle").await);
        if idle >= 3.0 && used < 3.0 && used + idle <= expected {
            Ok(())
        } else {
            Err(format!("{used} used, {idle} idle"))
        }
    })
    .await;
}

#[tokio::test]
async fn the_database_pool_opens_no_more_connections_than_it_is_told() {
    let app = TestApp::spawn_with(|config| config.database.db_pool_size = Some(2)).await;
    assert_eq!(sample(&app, None, "jobgraph_db_pool_max").await, Some(2.0));
    let begin = || sea_orm::TransactionTrait::begin(&app.db);
    let held = vec![begin().await.unwrap(), begin().await.unwrap()];
    // A third waits for one of the two.
    let third = tokio::spawn({
        let db = app.db.clone();
        async move { sea_orm::TransactionTrait::begin(&db).await.map(drop) }
    });
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert!(!third.is_finished(), "a third connection was opened");
    drop(held);
    tokio::time::timeout(WAIT, third)
        .await
        .expect("the third gets a connection once one is returned")
        .unwrap()
        .unwrap();
}
