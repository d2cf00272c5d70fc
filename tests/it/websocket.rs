//! GraphQL over websockets on `/graphql`: both protocols, authentication, and every close code
//! of `graphql-transport-ws`.

use std::time::Duration;

use serde_json::json;

use crate::support::TestApp;
use crate::support::ws::{Received, Ws};

const VIEWER_EMAIL: &str = "{ viewer { user { email } } }";

#[tokio::test]
async fn a_websocket_client_authenticates_in_connection_init_and_runs_an_operation() {
    let app = TestApp::spawn().await;
    let alice = app.user("alice@lab.test").await;
    let mut ws = Ws::connect(app.addr, Some(&alice.token)).await;
    ws.subscribe("1", VIEWER_EMAIL, json!({})).await;
    let data = ws.next_data("1").await;
    assert_eq!(data["viewer"]["user"]["email"], "alice@lab.test");
    assert_eq!(ws.message().await, json!({"type": "complete", "id": "1"}));
}

#[tokio::test]
async fn the_upgrade_requests_authorization_header_authenticates_too() {
    let app = TestApp::spawn().await;
    let alice = app.user("alice@lab.test").await;
    let mut ws = Ws::open(app.addr, "graphql-transport-ws", Some(&alice.token)).await;
    ws.init(None).await;
    assert_eq!(ws.message().await["type"], "connection_ack");
    ws.subscribe("1", VIEWER_EMAIL, json!({})).await;
    assert_eq!(
        ws.next_data("1").await["viewer"]["user"]["email"],
        "alice@lab.test"
    );

    let refused = app
        .client()
        .get(app.url("/graphql"))
        .header("connection", "upgrade")
        .header("upgrade", "websocket")
        .header("sec-websocket-version", "13")
        .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==")
        .header("sec-websocket-protocol", "graphql-transport-ws")
        .bearer_auth("jg_wrong")
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 401);
}

#[tokio::test]
async fn a_refused_connection_init_closes_with_4403() {
    let app = TestApp::spawn().await;
    let mut ws = Ws::open(app.addr, "graphql-transport-ws", None).await;
    ws.init(Some("jg_wrong")).await;
    assert_eq!(ws.close_code().await, Some(4403));
}

#[tokio::test]
async fn protocol_violations_close_with_their_codes() {
    let app = TestApp::spawn().await;
    let alice = app.user("alice@lab.test").await;

    // Malformed messages: 4400.
    for bad in [
        "not json".to_owned(),
        json!({"no": "type"}).to_string(),
        json!({"type": "bogus"}).to_string(),
        json!({"type": "next", "id": "1", "payload": {}}).to_string(),
    ] {
        let mut ws = Ws::connect(app.addr, Some(&alice.token)).await;
        ws.send_text(bad.clone()).await;
        assert_eq!(ws.close_code().await, Some(4400), "{bad}");
    }
    let mut ws = Ws::connect(app.addr, Some(&alice.token)).await;
    ws.send(json!({"id": "1", "type": "subscribe", "payload": {"variables": {}}}))
        .await;
    assert_eq!(ws.close_code().await, Some(4400));

    // An operation before connection_ack: 4401.
    let mut ws = Ws::open(app.addr, "graphql-transport-ws", None).await;
    ws.subscribe("1", VIEWER_EMAIL, json!({})).await;
    assert_eq!(ws.close_code().await, Some(4401));

    // A second connection_init: 4429.
    let mut ws = Ws::connect(app.addr, Some(&alice.token)).await;
    ws.init(Some(&alice.token)).await;
    assert_eq!(ws.close_code().await, Some(4429));

    // An id that is still running: 4409.
    let ws_id = app.workspace(&alice, "Lab").await;
    let mut ws = Ws::connect(app.addr, Some(&alice.token)).await;
    let counts = "subscription($ws: ID!) { jobCounts(workspaceId: $ws) { total } }";
    ws.subscribe("dup", counts, json!({"ws": ws_id})).await;
    assert_eq!(ws.next_data("dup").await["jobCounts"]["total"], 0);
    ws.subscribe("dup", counts, json!({"ws": ws_id})).await;
    assert_eq!(ws.close_code().await, Some(4409));

    // Without a protocol we speak: 4406.
    let mut ws = Ws::open(app.addr, "", None).await;
    assert_eq!(ws.close_code().await, Some(4406));
}

#[tokio::test]
async fn a_connection_without_connection_init_is_closed_with_4408() {
    let app = TestApp::spawn_with(|config| config.server.ws_init_timeout_seconds = 1).await;
    let mut ws = Ws::open(app.addr, "graphql-transport-ws", None).await;
    let started = std::time::Instant::now();
    assert_eq!(ws.close_code().await, Some(4408));
    assert!(started.elapsed() >= Duration::from_millis(900));
}

#[tokio::test]
async fn pings_are_answered_and_the_server_keeps_the_connection_alive() {
    let app = TestApp::spawn_with(|config| config.server.ws_keepalive_seconds = 1).await;
    let mut ws = Ws::connect(app.addr, None).await;
    ws.send(json!({"type": "ping"})).await;
    assert_eq!(ws.message().await["type"], "pong");
    ws.answer_pings = false;
    assert_eq!(ws.message().await["type"], "ping");
}

#[tokio::test]
async fn a_connection_runs_a_limited_number_of_operations_and_messages_are_capped() {
    let app = TestApp::spawn_with(|config| {
        config.server.ws_max_subscriptions = 1;
        config.server.max_body_bytes = 2048;
    })
    .await;
    let alice = app.user("alice@lab.test").await;
    let ws_id = app.workspace(&alice, "Lab").await;
    let mut ws = Ws::connect(app.addr, Some(&alice.token)).await;
    let balance = "subscription($ws: ID!) { creditBalance(workspaceId: $ws) }";
    ws.subscribe("a", balance, json!({"ws": ws_id})).await;
    assert_eq!(ws.next_data("a").await["creditBalance"], 0);
    ws.subscribe("b", balance, json!({"ws": ws_id})).await;
    let refused = ws.message().await;
    assert_eq!(refused["type"], "error");
    assert_eq!(refused["id"], "b");
    assert_eq!(refused["payload"][0]["extensions"]["code"], "BAD_REQUEST");
    // Once `a` completes, another operation may start.
    ws.send(json!({"type": "complete", "id": "a"})).await;
    ws.subscribe("c", balance, json!({"ws": ws_id})).await;
    assert_eq!(ws.next_data("c").await["creditBalance"], 0);

    ws.send_text(format!(
        "{{\"type\":\"ping\",\"payload\":\"{}\"}}",
        "x".repeat(4096)
    ))
    .await;
    assert_eq!(ws.close_code().await, Some(1009));
}

#[tokio::test]
async fn invalid_operations_are_answered_with_an_error_message() {
    let app = TestApp::spawn().await;
    let mut ws = Ws::connect(app.addr, None).await;
    ws.subscribe("1", "subscription { nope }", json!({})).await;
    let error = ws.message().await;
    assert_eq!(error["type"], "error", "{error}");
    assert_eq!(error["id"], "1");
    assert!(error["payload"][0]["message"].is_string(), "{error}");
    // The connection stays usable.
    ws.subscribe("2", "{ tools { name } }", json!({})).await;
    assert!(ws.next_data("2").await["tools"].is_array());
}

#[tokio::test]
async fn the_legacy_graphql_ws_protocol_is_spoken_too() {
    let app = TestApp::spawn().await;
    let alice = app.user("alice@lab.test").await;
    let ws_id = app.workspace(&alice, "Lab").await;

    let mut ws = Ws::open(app.addr, "graphql-ws", None).await;
    ws.answer_pings = false;
    ws.init(Some(&alice.token)).await;
    assert_eq!(ws.message().await["type"], "connection_ack");
    assert_eq!(ws.message().await["type"], "ka");
    ws.send(json!({"id": "1", "type": "start", "payload": {"query": VIEWER_EMAIL}}))
        .await;
    let data = ws.message().await;
    assert_eq!(data["type"], "data");
    assert_eq!(
        data["payload"]["data"]["viewer"]["user"]["email"],
        "alice@lab.test"
    );
    assert_eq!(ws.message().await, json!({"type": "complete", "id": "1"}));

    ws.send(json!({"id": "2", "type": "start", "payload": {
        "query": "subscription($ws: ID!) { creditBalance(workspaceId: $ws) }",
        "variables": {"ws": ws_id}}}))
        .await;
    assert_eq!(ws.message().await["payload"]["data"]["creditBalance"], 0);
    ws.send(json!({"id": "2", "type": "stop"})).await;
    app.grant(&ws_id, 10).await;
    ws.silent_for(Duration::from_millis(500)).await;
    ws.send(json!({"type": "connection_terminate"})).await;
    assert_eq!(ws.close_code().await, Some(1000));

    let mut ws = Ws::open(app.addr, "graphql-ws", None).await;
    ws.init(Some("jg_wrong")).await;
    assert_eq!(ws.message().await["type"], "connection_error");
    assert!(matches!(ws.receive().await, Received::Closed(Some(4403))));
}

#[tokio::test]
async fn a_connection_is_closed_with_4401_when_its_token_expires() {
    let app = TestApp::spawn().await;
    let alice = app.user("alice@lab.test").await;
    let ws_id = app.workspace(&alice, "Lab").await;
    let user_id = jobgraph::ids::decode::<entity::ids::UserId>("id", &alice.id).unwrap();
    let counts = "subscription($ws: ID!) { jobCounts(workspaceId: $ws) { total } }";
    // The token in `connection_init`, then in the upgrade request's header.
    for in_header in [false, true] {
        let lifetime = Duration::from_secs(2);
        // From before the expiry is set: however long the rest takes, it closes no sooner.
        let started = std::time::Instant::now();
        let (_, secret) = jobgraph::users::tokens::issue(
            &app.db,
            user_id,
            "short-lived",
            entity::api_token::TokenKind::User,
            Some(chrono::Utc::now() + lifetime),
        )
        .await
        .unwrap();
        let mut ws = if in_header {
            let mut ws = Ws::open(app.addr, "graphql-transport-ws", Some(&secret)).await;
            ws.init(None).await;
            assert_eq!(ws.message().await["type"], "connection_ack");
            ws
        } else {
            Ws::connect(app.addr, Some(&secret)).await
        };
        ws.subscribe("counts", counts, json!({"ws": ws_id})).await;
        assert_eq!(ws.next_data("counts").await["jobCounts"]["total"], 0);
        assert_eq!(ws.close_code().await, Some(4401), "header: {in_header}");
        let elapsed = started.elapsed();
        // At the expiry, not at some later check; with room for a loaded machine.
        const LATE: Duration = Duration::from_secs(3);
        assert!(
            elapsed >= lifetime - Duration::from_millis(200) && elapsed < lifetime + LATE,
            "closed after {elapsed:?} (header: {in_header})"
        );
    }
}
