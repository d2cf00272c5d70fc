//! GraphQL over websockets on `/graphql`, in both protocols clients speak:
//! `graphql-transport-ws` (the graphql-ws library, Apollo Client, urql, Python gql) and the
//! legacy `graphql-ws` of subscriptions-transport-ws.
//!
//! The connection is handled as the graphql-ws library's server does: 4400 closes on a
//! malformed message, 4401 on an operation before `connection_ack`, 4403 when
//! `connection_init` is refused, 4408 when it does not come in time, 4409 on an operation id
//! already running, 4429 on a second `connection_init`, 4406 without a protocol we speak. The
//! server pings (`ping`, or `ka` for the legacy protocol) to keep proxies from closing an idle
//! connection. Each connection runs at most `--ws-max-subscriptions` operations, and messages
//! are at most `--max-body-bytes` (a larger one closes with 1009).
//!
//! Each operation runs in its own task and writes through a small queue: a client that reads
//! slowly holds up only its own operations, whose live feeds then read the event log instead.
//! Subscriptions whose results are the same for every subscriber of one audience share one
//! execution (`shared`).

mod shared;

pub use shared::SharedSubscriptions;

use entity::ids::TokenId;
use std::collections::HashMap;
use std::ops::ControlFlow;
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, WebSocket};
use axum::extract::{FromRequestParts as _, WebSocketUpgrade};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt as _;
use serde_json::{Map, Value, json};
use tokio::sync::{broadcast, mpsc};
use tokio::task::AbortHandle;

use crate::access::Viewer;
use crate::app::AppState;
use crate::error::ErrorCode;
use crate::graphql::persisted::{Persisted, Refusal};
use crate::graphql::{self, AppSchema};
use crate::limits::{Client, Operation};
use crate::users::tokens;

use super::graphql::{MediaType, error_response};
use super::limit;

/// The subprotocols, in order of preference.
const PROTOCOLS: [&str; 2] = ["graphql-transport-ws", "graphql-ws"];

/// Bytes read from a socket at once.
const READ_BUFFER: usize = 4096;

/// Messages queued for one connection's socket.
const OUTGOING: usize = 32;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Protocol {
    /// `graphql-transport-ws`.
    TransportWs,
    /// `graphql-ws`, of subscriptions-transport-ws.
    Legacy,
}

impl Protocol {
    fn next_type(self) -> &'static str {
        match self {
            Protocol::TransportWs => "next",
            Protocol::Legacy => "data",
        }
    }

    /// The server's keepalive message.
    fn keepalive(self) -> Message {
        let ping = match self {
            Protocol::TransportWs => json!({"type": "ping"}),
            Protocol::Legacy => json!({"type": "ka"}),
        };
        Message::text(ping.to_string())
    }
}

/// Upgrades `GET /graphql` to a GraphQL websocket. A page of an origin that may not call the
/// API (`super::cors`) is refused with 403, and a bad token in the upgrade request's
/// `Authorization` header with 401, before the upgrade; the upgrade counts as a request against
/// the rate limit, and so does each operation started on the connection.
pub(super) async fn upgrade(state: AppState, parts: &mut Parts) -> Response {
    if let Err(message) = state.cors.admits_websocket(&parts.headers) {
        tracing::debug!(%message, "refused a websocket");
        return error_response(
            StatusCode::FORBIDDEN,
            MediaType::Json,
            ErrorCode::Forbidden,
            message,
        );
    }
    let upgrade = match WebSocketUpgrade::from_request_parts(parts, &state).await {
        Ok(upgrade) => upgrade,
        Err(rejection) => return rejection.into_response(),
    };
    let address = limit::client_address(&state, parts);
    let admitted = limit::admit(
        &state,
        &parts.headers,
        address,
        MediaType::Json,
        Operation::Read,
    );
    let header_viewer = match admitted.await {
        Ok(caller) => caller.viewer,
        Err(response) => return response,
    };
    let upgrade = upgrade
        .protocols(PROTOCOLS)
        .max_message_size(state.config.max_body_bytes)
        .max_frame_size(state.config.max_body_bytes)
        // Client messages are small; the 128 KiB default buffer, allocated per connection,
        // would dominate the memory of thousands of idle subscribers.
        .read_buffer_size(READ_BUFFER)
        .write_buffer_size(0);
    let protocol = match upgrade.selected_protocol().map(|p| p.as_bytes()) {
        Some(b"graphql-transport-ws") => Some(Protocol::TransportWs),
        Some(b"graphql-ws") => Some(Protocol::Legacy),
        _ => None,
    };
    // The connection's log lines carry the upgrade request's id.
    let span = tracing::Span::current();
    upgrade.on_upgrade(move |mut socket| {
        tracing::Instrument::instrument(
            async move {
                match protocol {
                    Some(protocol) => {
                        Connection::new(state, protocol, header_viewer, address)
                            .serve(socket)
                            .await
                    }
                    None => {
                        close(&mut socket, 4406, "Subprotocol not acceptable").await;
                    }
                }
            },
            span,
        )
    })
}

async fn close(socket: &mut WebSocket, code: u16, reason: &str) {
    let frame = CloseFrame {
        code,
        reason: reason.into(),
    };
    let _ = socket.send(Message::Close(Some(frame))).await;
}

/// Why the connection ends.
struct Closing(u16, String);

/// What the connection does after an event: goes on, or ends (with a close frame, or without
/// one when the socket is gone).
type Step = ControlFlow<Option<Closing>>;

/// Sends `message`; the connection ends when the socket is gone.
async fn send(socket: &mut WebSocket, message: Message) -> Step {
    match socket.send(message).await {
        Ok(()) => Step::Continue(()),
        Err(_) => Step::Break(None),
    }
}

fn closing(code: u16, reason: impl Into<String>) -> Closing {
    Closing(code, reason.into())
}

struct Connection {
    state: AppState,
    protocol: Protocol,
    header_viewer: Viewer,
    /// The client's address, which its operations are counted against without a token.
    address: std::net::IpAddr,
    /// Set once `connection_init` was received; the viewer once acknowledged.
    initialised: bool,
    viewer: Option<Viewer>,
    /// When the acknowledged viewer's token expires: the connection is closed then, as on a
    /// revocation.
    expires: Option<tokio::time::Instant>,
    operations: HashMap<String, AbortHandle>,
    /// Answers to the client's messages, written before anything queued.
    replies: Vec<Value>,
    outgoing: mpsc::Sender<Message>,
    queued: Option<mpsc::Receiver<Message>>,
}

impl Connection {
    fn new(
        state: AppState,
        protocol: Protocol,
        header_viewer: Viewer,
        address: std::net::IpAddr,
    ) -> Self {
        let (outgoing, queued) = mpsc::channel(OUTGOING);
        Connection {
            state,
            protocol,
            header_viewer,
            address,
            initialised: false,
            viewer: None,
            expires: None,
            operations: HashMap::new(),
            replies: Vec::new(),
            outgoing,
            queued: Some(queued),
        }
    }

    /// Serves the connection until it closes: the client's messages, the operations' results,
    /// the initialisation deadline, keepalives, and the end of the viewer's token.
    async fn serve(mut self, mut socket: WebSocket) {
        let _open = self.state.metrics.websocket_opened();
        let mut queued = self.queued.take().expect("served once");
        let config = self.state.config.clone();
        let init_deadline = tokio::time::sleep(Duration::from_secs(config.ws_init_timeout_seconds));
        tokio::pin!(init_deadline);
        let period = Duration::from_secs(config.ws_keepalive_seconds);
        let mut keepalive = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
        let stopping = self.state.bus.stopping();
        let mut revocations = self.state.bus.revocations();
        let mut told_of_revocations = true;
        let outcome = loop {
            let expires = self.expires;
            let step = tokio::select! {
                incoming = socket.recv() => self.incoming(&mut socket, incoming).await,
                Some(message) = queued.recv() => send(&mut socket, message).await,
                _ = &mut init_deadline, if !self.initialised => {
                    Step::Break(Some(closing(4408, "Connection initialisation timeout")))
                }
                _ = keepalive.tick(), if self.viewer.is_some() => {
                    send(&mut socket, self.protocol.keepalive()).await
                }
                revoked = revocations.recv(), if told_of_revocations => match revoked {
                    Err(broadcast::error::RecvError::Closed) => {
                        told_of_revocations = false;
                        Step::Continue(())
                    }
                    revoked => self.revoked(revoked.ok()).await,
                },
                _ = tokio::time::sleep_until(expires.unwrap_or_else(tokio::time::Instant::now)), if expires.is_some() => {
                    Step::Break(Some(closing(4401, "Unauthorized: the token expired")))
                }
                _ = stopping.cancelled() => Step::Break(Some(closing(1001, "The server is stopping"))),
            };
            if let Step::Break(outcome) = step {
                break outcome;
            }
        };
        for (_, operation) in self.operations.drain() {
            operation.abort();
        }
        if let Some(Closing(code, reason)) = outcome {
            close(&mut socket, code, &reason).await;
        }
    }

    /// Handles what the socket received: a message, whose replies it sends, or the end.
    async fn incoming(
        &mut self,
        socket: &mut WebSocket,
        incoming: Option<Result<Message, axum::Error>>,
    ) -> Step {
        match incoming {
            Some(Ok(Message::Text(text))) => {
                let received = self.receive(text.as_str()).await;
                let mut sent = true;
                for reply in std::mem::take(&mut self.replies) {
                    sent = sent && socket.send(Message::text(reply.to_string())).await.is_ok();
                }
                match received {
                    Err(closing) => Step::Break(Some(closing)),
                    Ok(()) if !sent => Step::Break(None),
                    Ok(()) => Step::Continue(()),
                }
            }
            Some(Ok(Message::Binary(_))) => Step::Break(Some(closing(
                4400,
                "Invalid message received: binary frames are not GraphQL messages",
            ))),
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => Step::Continue(()),
            Some(Ok(Message::Close(_))) | None => Step::Break(None),
            Some(Err(err)) => {
                let reason = err.to_string();
                if reason.contains("too long") || reason.contains("too big") {
                    return Step::Break(Some(closing(1009, "Message too big")));
                }
                Step::Break(None)
            }
        }
    }

    /// Closes the connection if its token is among the revoked: the one `revoked`, or when the
    /// connection fell behind the revocations (`None`), as the database says.
    async fn revoked(&self, revoked: Option<TokenId>) -> Step {
        let token = self
            .viewer
            .as_ref()
            .unwrap_or(&self.header_viewer)
            .token_id();
        let is_ours = match (revoked, token) {
            (Some(id), Some(token)) => id == token,
            (Some(_), None) => false,
            (None, Some(token)) => !tokens::still_valid(&self.state.db, token).await,
            (None, None) => false,
        };
        if is_ours {
            return Step::Break(Some(closing(4401, "Unauthorized: the token was revoked")));
        }
        Step::Continue(())
    }

    /// Handles one text message; `Err` closes the connection.
    async fn receive(&mut self, text: &str) -> Result<(), Closing> {
        let invalid = |why: &str| closing(4400, format!("Invalid message received: {why}"));
        let message: Map<String, Value> = match serde_json::from_str(text) {
            Ok(Value::Object(message)) => message,
            _ => return Err(invalid("not a JSON object")),
        };
        let Some(kind) = message.get("type").and_then(Value::as_str) else {
            return Err(invalid("no `type`"));
        };
        let id = message.get("id");
        match (self.protocol, kind) {
            (_, "connection_init") => self.init(message.get("payload")).await,
            (Protocol::TransportWs, "ping") => {
                self.replies.push(json!({"type": "pong"}));
                Ok(())
            }
            (Protocol::TransportWs, "pong") => Ok(()),
            (Protocol::TransportWs, "subscribe") | (Protocol::Legacy, "start") => {
                let Some(id) = id.and_then(Value::as_str).filter(|id| !id.is_empty()) else {
                    return Err(invalid("an operation needs an `id`"));
                };
                let Some(payload) = message.get("payload").and_then(Value::as_object) else {
                    return Err(invalid("an operation needs a `payload` object"));
                };
                match request(payload, &self.state.persisted).map_err(|why| invalid(&why))? {
                    Ok(request) => self.start(id.to_owned(), request).await,
                    Err(refusal) => {
                        let error = json!({
                            "message": refusal.message(),
                            "extensions": {"code": refusal.code().as_str()},
                        });
                        self.replies.push(operation_error(self.protocol, id, error));
                        Ok(())
                    }
                }
            }
            (Protocol::TransportWs, "complete") | (Protocol::Legacy, "stop") => {
                let Some(id) = id.and_then(Value::as_str) else {
                    return Err(invalid("`complete` needs an `id`"));
                };
                if let Some(operation) = self.operations.remove(id) {
                    operation.abort();
                }
                Ok(())
            }
            (Protocol::Legacy, "connection_terminate") => Err(closing(1000, "Normal Closure")),
            (_, other) => Err(invalid(&format!("unexpected message type `{other}`"))),
        }
    }

    async fn init(&mut self, payload: Option<&Value>) -> Result<(), Closing> {
        if self.initialised {
            return Err(closing(4429, "Too many initialisation requests"));
        }
        self.initialised = true;
        let secret = payload.and_then(bearer_from_init);
        let viewer = match secret {
            Some(secret) => match self.authenticate(&secret).await {
                Ok(viewer) => viewer,
                Err(err) => {
                    if self.protocol == Protocol::Legacy {
                        self.replies.push(json!({
                            "type": "connection_error",
                            "payload": {"message": err.public_message()},
                        }));
                    }
                    return Err(closing(4403, "Forbidden"));
                }
            },
            None => self.header_viewer.clone(),
        };
        // Worker tokens use the worker API, which has no subscriptions.
        if viewer.worker().is_some() {
            return Err(closing(4403, "Forbidden"));
        }
        if let Some(at) = crate::users::expires_at(&self.state.db, &viewer).await {
            let left = (at - chrono::Utc::now()).to_std().unwrap_or_default();
            self.expires = Some(tokio::time::Instant::now() + left);
        }
        self.viewer = Some(viewer);
        self.replies.push(json!({"type": "connection_ack"}));
        if self.protocol == Protocol::Legacy {
            self.replies.push(json!({"type": "ka"}));
        }
        Ok(())
    }

    /// The viewer of a `connection_init` secret: API tokens are checked against the database,
    /// not the cache, so that a socket never opens on a token revoked a moment ago.
    async fn authenticate(&self, secret: &str) -> crate::error::Result<Viewer> {
        let oidc = self.state.oidc.as_deref();
        crate::users::authenticate(&self.state.db, None, oidc, secret).await
    }

    async fn start(
        &mut self,
        id: String,
        mut request: async_graphql::Request,
    ) -> Result<(), Closing> {
        let Some(viewer) = self.viewer.clone() else {
            return Err(closing(4401, "Unauthorized"));
        };
        self.operations
            .retain(|_, operation| !operation.is_finished());
        if self.operations.contains_key(&id) {
            return Err(closing(4409, format!("Subscriber for {id} already exists")));
        }
        let protocol = self.protocol;
        let metrics = self.state.metrics.clone();
        let name = request.operation_name.clone();
        let rejected =
            |kind: Option<&str>| metrics.operation(kind, name.as_deref(), "rejected", None);
        if self.operations.len() >= self.state.config.ws_max_subscriptions {
            let error = json!({
                "message": format!(
                    "a connection runs at most {} operations at once",
                    self.state.config.ws_max_subscriptions
                ),
                "extensions": {"code": "BAD_REQUEST"},
            });
            self.replies.push(operation_error(protocol, &id, error));
            rejected(None);
            return Ok(());
        }
        if let Err(error) = graphql::guard::admit(&mut request, None) {
            self.replies
                .push(operation_error(protocol, &id, json!(error)));
            rejected(None);
            return Ok(());
        }
        let (kind, name) = graphql::guard::operation_labels(&mut request);
        // Over the rate limit, the operation is refused; the connection stays open.
        let operation = Operation::of_request(&mut request);
        let limits = &self.state.limits;
        let client = Client::of(&viewer, self.address);
        if let Err(limited) = limits.take(client, limits.cost(operation)) {
            let error = limit::rate_limited_error(limited);
            self.replies.push(operation_error(protocol, &id, error));
            metrics.operation(kind, name.as_deref(), "rejected", None);
            return Ok(());
        }
        let shared_key = shared::Key::of(&mut request, &viewer);
        request.data = graphql::request_data(&self.state.db, &self.state.queue, viewer.clone());
        let (db, queue) = (self.state.db.clone(), self.state.queue.clone());
        let data = move || graphql::request_data(&db, &queue, viewer.clone());
        // Counted by its first result: `rejected` when nothing ran, `error` when a field failed.
        // Counted by name as HTTP requests are, without a duration: a subscription lasts.
        let count = move |outcome: &str| metrics.operation(kind, name.as_deref(), outcome, None);
        let schema = self.state.schema.clone();
        let replies = Replies {
            protocol,
            id: id.clone(),
            outgoing: self.outgoing.clone(),
        };
        let operation: std::pin::Pin<Box<dyn Future<Output = ()> + Send>> = match shared_key {
            Some(key) => {
                let shared = self.state.shared.clone();
                Box::pin(shared.follow(key, schema, request, data, replies, count))
            }
            None => Box::pin(run_operation(schema, request, replies, count)),
        };
        // Counted while it runs, however it ends (completed, stopped, or its socket closed).
        let running = self.state.metrics.subscription_started();
        let task = tokio::spawn(async move {
            let _running = running;
            operation.await
        });
        self.operations.insert(id, task.abort_handle());
        Ok(())
    }
}

/// Where an operation's messages go: the connection's queue, as operation `id`, in the
/// connection's protocol.
struct Replies {
    protocol: Protocol,
    id: String,
    outgoing: mpsc::Sender<Message>,
}

impl Replies {
    /// Queues `message`; `false` once the connection is gone.
    async fn send(&self, message: String) -> bool {
        self.outgoing.send(Message::text(message)).await.is_ok()
    }

    /// The `error` message of an operation that nothing ran for: its request errors, all of
    /// them in `graphql-transport-ws`, the first in the legacy protocol.
    fn request_error(&self, errors: &[async_graphql::ServerError]) -> String {
        let payload = match self.protocol {
            Protocol::TransportWs => json!(errors),
            Protocol::Legacy => json!(errors.first()),
        };
        json!({"type": "error", "id": self.id, "payload": payload}).to_string()
    }

    async fn complete(&self) {
        self.send(json!({"type": "complete", "id": self.id}).to_string())
            .await;
    }
}

/// Runs an operation and queues its results for the socket, then `complete`. A request error
/// (nothing ran, no field failed) is its one `error` message.
async fn run_operation(
    schema: AppSchema,
    request: async_graphql::Request,
    replies: Replies,
    count: impl FnOnce(&str),
) {
    let Replies { protocol, id, .. } = &replies;
    let mut responses = std::pin::pin!(schema.execute_stream(request));
    let mut count = CountOnce(Some(count));
    while let Some(mut response) = responses.next().await {
        graphql::codes::fill(&mut response, false);
        let first = count.0.is_some();
        let is_request_error = first && graphql::is_request_error(&response);
        count.once(crate::metrics::outcome(&response));
        let message = if is_request_error {
            replies.request_error(&response.errors)
        } else {
            json!({"type": protocol.next_type(), "id": id, "payload": response}).to_string()
        };
        if !replies.send(message).await || is_request_error {
            return;
        }
    }
    replies.complete().await;
}

/// Counts an operation once: by its first result, or as `ok` when it ends (completed, stopped
/// or its socket closed) before giving any, as a quiet subscription does.
struct CountOnce<F: FnOnce(&str)>(Option<F>);

impl<F: FnOnce(&str)> CountOnce<F> {
    fn once(&mut self, outcome: &str) {
        if let Some(count) = self.0.take() {
            count(outcome);
        }
    }
}

impl<F: FnOnce(&str)> Drop for CountOnce<F> {
    fn drop(&mut self) {
        self.once("ok");
    }
}

/// The `error` message refusing operation `id`, in the protocol's shape.
fn operation_error(protocol: Protocol, id: &str, error: Value) -> Value {
    let payload = match protocol {
        Protocol::TransportWs => json!([error]),
        Protocol::Legacy => error,
    };
    json!({"type": "error", "id": id, "payload": payload})
}

/// Reads an operation from a `subscribe` (or `start`) payload: `Err` for a malformed payload,
/// `Ok(Err)` for a persisted document the server does not have or does not trust.
fn request(
    payload: &Map<String, Value>,
    persisted: &Persisted,
) -> Result<Result<async_graphql::Request, Refusal>, String> {
    let query = match payload.get("query") {
        None | Some(Value::Null) => None,
        Some(Value::String(query)) => Some(query.clone()),
        Some(_) => return Err("the payload needs a `query` string".into()),
    };
    let extensions = match payload.get("extensions") {
        None | Some(Value::Null) => None,
        Some(Value::Object(extensions)) => Some(extensions),
        Some(_) => return Err("`extensions` must be a map".into()),
    };
    let query = match persisted.resolve(query, extensions) {
        Ok(query) => query,
        Err(Refusal::Missing) => return Err("the payload needs a `query` string".into()),
        Err(Refusal::Invalid(why)) => return Err(why),
        Err(refusal) => return Ok(Err(refusal)),
    };
    let mut request = async_graphql::Request::new(query);
    match payload.get("operationName") {
        None | Some(Value::Null) => {}
        Some(Value::String(name)) => request = request.operation_name(name),
        Some(_) => return Err("`operationName` must be a string".into()),
    }
    match payload.get("variables") {
        None | Some(Value::Null) => {}
        Some(Value::Object(variables)) => {
            request = request.variables(async_graphql::Variables::from_json(Value::Object(
                variables.clone(),
            )));
        }
        Some(_) => return Err("`variables` must be a map".into()),
    }
    for (key, value) in extensions.into_iter().flatten() {
        if let Ok(value) = async_graphql::Value::from_json(value.clone()) {
            request.extensions.insert(key.clone(), value);
        }
    }
    Ok(Ok(request))
}

/// Reads `authorization` (any case) from a `connection_init` payload.
fn bearer_from_init(payload: &Value) -> Option<String> {
    let object = payload.as_object()?;
    let value = object
        .iter()
        .find(|(key, _)| key.eq_ignore_ascii_case("authorization"))?
        .1
        .as_str()?;
    Some(
        value
            .strip_prefix("Bearer ")
            .or_else(|| value.strip_prefix("bearer "))
            .unwrap_or(value)
            .trim()
            .to_owned(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_connection_init_payload_carries_the_token() {
        assert_eq!(
            bearer_from_init(&json!({"Authorization": "Bearer jg_x"})).as_deref(),
            Some("jg_x")
        );
        assert_eq!(
            bearer_from_init(&json!({"authorization": "jg_y"})).as_deref(),
            Some("jg_y")
        );
        assert_eq!(bearer_from_init(&json!({})), None);
    }

    #[test]
    fn operations_need_a_query_and_well_typed_parameters() {
        let persisted = Persisted::new(None).unwrap();
        let read = |payload: Value| request(payload.as_object().unwrap(), &persisted);
        assert!(matches!(read(json!({"query": "{a}"})), Ok(Ok(_))));
        for bad in [
            json!({}),
            json!({"query": 1}),
            json!({"query": "{a}", "variables": []}),
            json!({"query": "{a}", "operationName": 2}),
            json!({"query": "{a}", "extensions": []}),
            json!({"extensions": {"persistedQuery": {"version": 1, "sha256Hash": "x"}}}),
        ] {
            assert!(read(bad.clone()).is_err(), "{bad}");
        }
        // A hash the server does not know is the operation's error, not the connection's.
        let unknown =
            json!({"extensions": {"persistedQuery": {"version": 1, "sha256Hash": "0".repeat(64)}}});
        assert!(matches!(read(unknown), Ok(Err(Refusal::NotFound))));
    }
}
