//! GraphQL over websockets on `/graphql`, authenticated in `connection_init`.

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use crate::support::TestApp;

async fn connect(
    app: &TestApp,
) -> tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>> {
    let mut request = format!("ws://{}/graphql", app.addr)
        .into_client_request()
        .unwrap();
    request.headers_mut().insert(
        "sec-websocket-protocol",
        "graphql-transport-ws".parse().unwrap(),
    );
    let (socket, response) = tokio_tungstenite::connect_async(request).await.unwrap();
    assert_eq!(
        response.headers()["sec-websocket-protocol"],
        "graphql-transport-ws"
    );
    socket
}

async fn next_json(
    socket: &mut tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >,
) -> Value {
    loop {
        let message = tokio::time::timeout(std::time::Duration::from_secs(10), socket.next())
            .await
            .expect("a message within 10 s")
            .expect("the socket stays open")
            .unwrap();
        match message {
            Message::Text(text) => return serde_json::from_str(&text).unwrap(),
            Message::Close(frame) => return json!({"closed": frame.map(|f| u16::from(f.code))}),
            _ => continue,
        }
    }
}

#[tokio::test]
async fn a_websocket_client_authenticates_in_connection_init_and_runs_an_operation() {
    let app = TestApp::spawn().await;
    let alice = app.user("alice@lab.test").await;
    let mut socket = connect(&app).await;
    let init = json!({"type": "connection_init", "payload": {"authorization": format!("Bearer {}", alice.token)}});
    socket.send(Message::text(init.to_string())).await.unwrap();
    assert_eq!(next_json(&mut socket).await["type"], "connection_ack");
    let subscribe = json!({"id": "1", "type": "subscribe", "payload": {"query": "{ viewer { user { email } } }"}});
    socket
        .send(Message::text(subscribe.to_string()))
        .await
        .unwrap();
    let next = next_json(&mut socket).await;
    assert_eq!(next["type"], "next");
    assert_eq!(
        next["payload"]["data"]["viewer"]["user"]["email"],
        "alice@lab.test"
    );
    assert_eq!(next_json(&mut socket).await["type"], "complete");
}

#[tokio::test]
async fn a_websocket_with_a_bad_token_is_closed_without_an_ack() {
    let app = TestApp::spawn().await;
    let mut socket = connect(&app).await;
    let init = json!({"type": "connection_init", "payload": {"authorization": "Bearer jg_wrong"}});
    socket.send(Message::text(init.to_string())).await.unwrap();
    let answer = next_json(&mut socket).await;
    let code = answer["closed"]
        .as_u64()
        .unwrap_or_else(|| panic!("expected a close, got {answer}"));
    assert_ne!(code, 1000, "a refused connection is not a normal closure");
}
