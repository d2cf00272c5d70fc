//! A GraphQL websocket client for tests: a real websocket (tokio-tungstenite) speaking
//! `graphql-transport-ws` or the legacy `graphql-ws`.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

pub struct Ws {
    socket: Socket,
    /// Answer the server's pings (a real client does).
    pub answer_pings: bool,
}

/// What the server sent: a GraphQL message, or the close frame's code.
#[derive(Debug)]
pub enum Received {
    Message(Value),
    Closed(Option<u16>),
}

impl Ws {
    /// Opens a websocket to `/graphql` offering `protocol` (none when empty), with an optional
    /// `Authorization` header.
    pub async fn open(addr: std::net::SocketAddr, protocol: &str, bearer: Option<&str>) -> Ws {
        let mut request = format!("ws://{addr}/graphql")
            .into_client_request()
            .unwrap();
        if !protocol.is_empty() {
            request
                .headers_mut()
                .insert("sec-websocket-protocol", protocol.parse().unwrap());
        }
        if let Some(token) = bearer {
            request
                .headers_mut()
                .insert("authorization", format!("Bearer {token}").parse().unwrap());
        }
        let (socket, response) = tokio_tungstenite::connect_async(request).await.unwrap();
        if !protocol.is_empty() {
            assert_eq!(response.headers()["sec-websocket-protocol"], protocol);
        }
        Ws {
            socket,
            answer_pings: true,
        }
    }

    /// Opens a `graphql-transport-ws` websocket as a browser page of `origin` does (with its
    /// `Origin` header); a refused upgrade gives its HTTP status and body.
    pub async fn open_from(addr: std::net::SocketAddr, origin: &str) -> Result<Ws, (u16, String)> {
        let mut request = format!("ws://{addr}/graphql")
            .into_client_request()
            .unwrap();
        let headers = request.headers_mut();
        headers.insert(
            "sec-websocket-protocol",
            "graphql-transport-ws".parse().unwrap(),
        );
        headers.insert("origin", origin.parse().unwrap());
        match tokio_tungstenite::connect_async(request).await {
            Ok((socket, _)) => Ok(Ws {
                socket,
                answer_pings: true,
            }),
            Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
                let body = response.body().clone().unwrap_or_default();
                Err((
                    response.status().as_u16(),
                    String::from_utf8_lossy(&body).into_owned(),
                ))
            }
            Err(err) => panic!("opening a websocket: {err}"),
        }
    }

    /// A `graphql-transport-ws` connection, acknowledged, authenticated by `token` in
    /// `connection_init` (anonymous with `None`).
    pub async fn connect(addr: std::net::SocketAddr, token: Option<&str>) -> Ws {
        let mut ws = Ws::open(addr, "graphql-transport-ws", None).await;
        ws.init(token).await;
        assert_eq!(ws.message().await["type"], "connection_ack");
        ws
    }

    /// Like [`Ws::connect`], over a socket whose receive buffer is as small as the kernel
    /// allows: a client that stops reading holds up the server's writes at once.
    pub async fn connect_small(addr: std::net::SocketAddr, token: Option<&str>) -> Ws {
        let tcp = tokio::net::TcpSocket::new_v4().unwrap();
        tcp.set_recv_buffer_size(1024).unwrap();
        let stream = tcp.connect(addr).await.unwrap();
        let mut request = format!("ws://{addr}/graphql")
            .into_client_request()
            .unwrap();
        request.headers_mut().insert(
            "sec-websocket-protocol",
            "graphql-transport-ws".parse().unwrap(),
        );
        let (socket, _) = tokio_tungstenite::client_async(
            request,
            tokio_tungstenite::MaybeTlsStream::Plain(stream),
        )
        .await
        .unwrap();
        let mut ws = Ws {
            socket,
            answer_pings: true,
        };
        ws.init(token).await;
        assert_eq!(ws.message().await["type"], "connection_ack");
        ws
    }

    pub async fn init(&mut self, token: Option<&str>) {
        let payload = match token {
            Some(token) => json!({"authorization": format!("Bearer {token}")}),
            None => json!({}),
        };
        self.send(json!({"type": "connection_init", "payload": payload}))
            .await;
    }

    pub async fn send(&mut self, message: Value) {
        self.send_text(message.to_string()).await;
    }

    pub async fn send_text(&mut self, text: String) {
        self.socket.send(Message::text(text)).await.unwrap();
    }

    /// Starts an operation (`subscribe`).
    pub async fn subscribe(&mut self, id: &str, query: &str, variables: Value) {
        self.send(json!({"id": id, "type": "subscribe", "payload": {"query": query, "variables": variables}}))
            .await;
    }

    /// The next message or close, within 10 s; server pings are answered and skipped.
    pub async fn receive(&mut self) -> Received {
        self.receive_within(Duration::from_secs(10))
            .await
            .expect("a message within 10 s")
    }

    /// The next message or close within `wait`, if any.
    pub async fn receive_within(&mut self, wait: Duration) -> Option<Received> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let frame = tokio::time::timeout_at(deadline, self.socket.next())
                .await
                .ok()?;
            match frame {
                None | Some(Err(_)) => return Some(Received::Closed(None)),
                Some(Ok(Message::Close(frame))) => {
                    return Some(Received::Closed(frame.map(|f| u16::from(f.code))));
                }
                Some(Ok(Message::Text(text))) => {
                    let value: Value = serde_json::from_str(&text).unwrap();
                    match value["type"].as_str() {
                        Some("ping") if self.answer_pings => {
                            self.send(json!({"type": "pong"})).await;
                        }
                        Some("ka") if self.answer_pings => {}
                        _ => return Some(Received::Message(value)),
                    }
                }
                Some(Ok(_)) => {}
            }
        }
    }

    /// The next message, which must not be a close.
    pub async fn message(&mut self) -> Value {
        match self.receive().await {
            Received::Message(value) => value,
            Received::Closed(code) => panic!("the server closed the socket ({code:?})"),
        }
    }

    /// The payload of the next `next` message, which must be for `id` and without errors.
    pub async fn next_data(&mut self, id: &str) -> Value {
        let message = self.message().await;
        assert_eq!(message["type"], "next", "{message}");
        assert_eq!(message["id"], id, "{message}");
        assert!(message["payload"]["errors"].is_null(), "{message}");
        message["payload"]["data"].clone()
    }

    /// The close code the server ends with; fails on any other message.
    pub async fn close_code(&mut self) -> Option<u16> {
        match self.receive().await {
            Received::Closed(code) => code,
            Received::Message(value) => panic!("expected a close, got {value}"),
        }
    }

    /// Fails if any message arrives within `wait`.
    pub async fn silent_for(&mut self, wait: Duration) {
        if let Some(received) = self.receive_within(wait).await {
            panic!("expected nothing, got {received:?}");
        }
    }
}
