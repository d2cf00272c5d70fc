//! Following a job to its end over the `jobUpdated` subscription (`graphql-transport-ws`),
//! shown as a progress bar on a terminal, as lines otherwise, or as JSON.

use std::time::Duration;

use futures_util::{SinkExt as _, StreamExt as _};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;

use super::api::{Api, Error, Result};

/// The job's fields each update carries.
pub const JOB_FIELDS: &str = "id name toolName status stage progress errorMessage errorCode";

/// Whether a job with this status has ended.
pub fn has_ended(status: &str) -> bool {
    matches!(status, "COMPLETED" | "FAILED" | "TIMEOUT" | "CANCELLED")
}

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// How long a watch that has heard from the server keeps trying to reach it again: a
/// restarted or redeployed API comes back well within this, and the job runs on meanwhile.
const RECONNECT_FOR: Duration = Duration::from_secs(300);

/// Follows job `id` until it ends, showing each change; returns the job as it ended.
///
/// A connection lost after the job was first heard of is opened again, with a growing pause,
/// for up to [`RECONNECT_FOR`]: `jobUpdated` sends the job as it is first, so nothing that
/// happened meanwhile is missed.
pub async fn follow(api: &Api, id: &str, mut show: Show) -> Result<Value> {
    let mut heard = false;
    let mut lost_since: Option<tokio::time::Instant> = None;
    let mut pause = Duration::from_millis(250);
    loop {
        let mut heard_now = false;
        let outcome = session(api, id, &mut show, &mut heard_now).await;
        heard |= heard_now;
        if heard_now {
            lost_since = None;
            pause = Duration::from_millis(250);
        }
        match outcome {
            Err(Error::Connection { reason, .. })
                if heard && lost_since.is_none_or(|since| since.elapsed() < RECONNECT_FOR) =>
            {
                if lost_since.is_none() {
                    show.reconnecting(&reason);
                    lost_since = Some(tokio::time::Instant::now());
                }
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(5));
            }
            Err(err) => {
                show.abandon();
                return Err(err);
            }
            Ok(job) => {
                show.finish(&job);
                return Ok(job);
            }
        }
    }
}

/// One websocket: follows the job until it ends, or the connection is lost (`heard` tells
/// whether any update came).
async fn session(api: &Api, id: &str, show: &mut Show, heard: &mut bool) -> Result<Value> {
    let url = api.websocket_url().to_string();
    let mut socket = connect(api).await?;
    // The token goes in `connection_init` too, for proxies that drop the upgrade's headers.
    let init = match api.authorization() {
        Some(authorization) => json!({
            "type": "connection_init",
            "payload": {"authorization": authorization.to_str().unwrap_or_default()},
        }),
        None => json!({"type": "connection_init"}),
    };
    send(&mut socket, &url, init).await?;
    loop {
        let message = receive(&mut socket, &url).await?;
        match message["type"].as_str() {
            Some("connection_ack") => break,
            Some("ping") => send(&mut socket, &url, json!({"type": "pong"})).await?,
            _ => return Err(unexpected(&url, &message)),
        }
    }
    let subscribe = json!({
        "id": "1",
        "type": "subscribe",
        "payload": {
            "query": format!("subscription Watch($id: ID!) {{ jobUpdated(id: $id) {{ {JOB_FIELDS} }} }}"),
            "variables": {"id": id},
        },
    });
    send(&mut socket, &url, subscribe).await?;
    loop {
        let message = receive(&mut socket, &url).await?;
        match message["type"].as_str() {
            Some("next") => {
                let payload = &message["payload"];
                if let Some(errors) = payload.get("errors").filter(|e| !e.is_null()) {
                    return Err(Error::from_graphql(errors));
                }
                *heard = true;
                let job = payload["data"]["jobUpdated"].clone();
                show.update(&job);
                if has_ended(job["status"].as_str().unwrap_or_default()) {
                    // Leaving politely; the outcome is known whatever the server answers.
                    let _ = send(&mut socket, &url, json!({"id": "1", "type": "complete"})).await;
                    let _ = socket.close(None).await;
                    return Ok(job);
                }
            }
            Some("error") => return Err(Error::from_graphql(&message["payload"])),
            Some("complete") => {
                return Err(Error::Server {
                    message: format!("job {id} was deleted"),
                    code: None,
                });
            }
            Some("ping") => send(&mut socket, &url, json!({"type": "pong"})).await?,
            Some("pong") => {}
            _ => return Err(unexpected(&url, &message)),
        }
    }
}

/// Opens the websocket with the token in the upgrade request, where a bad one is refused with
/// the server's GraphQL error before the upgrade.
async fn connect(api: &Api) -> Result<Socket> {
    let url = api.websocket_url().to_string();
    let mut request = url
        .as_str()
        .into_client_request()
        .map_err(|err| Error::Usage(format!("{url}: {err}")))?;
    let headers = request.headers_mut();
    headers.insert(
        "sec-websocket-protocol",
        "graphql-transport-ws".parse().expect("a valid header"),
    );
    if let Some(authorization) = api.authorization() {
        headers.insert("authorization", authorization);
    }
    match tokio_tungstenite::connect_async(request).await {
        Ok((socket, _)) => Ok(socket),
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            let status = response.status();
            let body = response.body().clone().unwrap_or_default();
            Err(match serde_json::from_slice::<Value>(&body) {
                Ok(body) if body.get("errors").is_some() => Error::from_graphql(&body["errors"]),
                _ => Error::Unexpected {
                    url,
                    what: format!("HTTP {status} instead of a websocket"),
                },
            })
        }
        Err(err) => Err(Error::Connection {
            url,
            reason: err.to_string(),
        }),
    }
}

async fn send(socket: &mut Socket, url: &str, message: Value) -> Result<()> {
    socket
        .send(Message::text(message.to_string()))
        .await
        .map_err(|err| Error::Connection {
            url: url.to_owned(),
            reason: err.to_string(),
        })
}

/// The next GraphQL message; a close is an error naming its code and reason.
async fn receive(socket: &mut Socket, url: &str) -> Result<Value> {
    let lost = |reason: String| Error::Connection {
        url: url.to_owned(),
        reason,
    };
    loop {
        match socket.next().await {
            Some(Ok(Message::Text(text))) => {
                return serde_json::from_str(&text).map_err(|_| Error::Unexpected {
                    url: url.to_owned(),
                    what: format!("a message that is not JSON: {text}"),
                });
            }
            Some(Ok(Message::Close(frame))) => {
                return Err(match frame {
                    // Going away (a stopping server), abnormal, restarting, try again later.
                    Some(frame) if matches!(u16::from(frame.code), 1001 | 1006 | 1011..=1013) => {
                        lost(format!("the server closed the websocket: {}", frame.reason))
                    }
                    Some(frame) => Error::Server {
                        message: format!(
                            "the server closed the websocket: {} {}",
                            u16::from(frame.code),
                            frame.reason
                        ),
                        code: None,
                    },
                    None => lost("the server closed the websocket".to_owned()),
                });
            }
            Some(Ok(_)) => {}
            Some(Err(err)) => return Err(lost(err.to_string())),
            None => return Err(lost("the websocket ended".to_owned())),
        }
    }
}

fn unexpected(url: &str, message: &Value) -> Error {
    Error::Unexpected {
        url: url.to_owned(),
        what: format!("the message {message}"),
    }
}

/// How changes are shown.
pub enum Show {
    /// A progress bar with the status and stage, redrawn in place (a terminal).
    Bar(ProgressBar),
    /// A line for each change of status, stage or whole percent.
    Lines { last: Option<String> },
    /// The job as one JSON object per line, at each update.
    Json,
}

impl Show {
    /// A bar on a terminal's stdout, lines elsewhere, JSON lines when asked for.
    pub fn choose(json: bool, id: &str) -> Show {
        if json {
            return Show::Json;
        }
        if !std::io::IsTerminal::is_terminal(&std::io::stdout()) {
            return Show::Lines { last: None };
        }
        let bar = ProgressBar::with_draw_target(Some(1000), ProgressDrawTarget::stdout());
        bar.set_style(
            ProgressStyle::with_template("{spinner} {prefix} [{bar:30}] {percent:>3}% {msg}")
                .expect("a valid template")
                .progress_chars("=> "),
        );
        bar.set_prefix(id.to_owned());
        bar.enable_steady_tick(Duration::from_millis(120));
        Show::Bar(bar)
    }

    fn update(&mut self, job: &Value) {
        let status = job["status"].as_str().unwrap_or_default();
        let stage = job["stage"].as_str().unwrap_or_default();
        let progress = job["progress"].as_f64().unwrap_or_default().clamp(0.0, 1.0);
        match self {
            Show::Bar(bar) => {
                bar.set_position((progress * 1000.0).round() as u64);
                bar.set_message(format!("{status} {stage}").trim_end().to_owned());
            }
            Show::Lines { last } => {
                let line = format!(
                    "{} {status} {:.0}% {stage}",
                    job["id"].as_str().unwrap_or_default(),
                    (progress * 100.0).floor()
                );
                let line = line.trim_end().to_owned();
                if last.as_deref() != Some(line.as_str()) {
                    println!("{line}");
                    *last = Some(line);
                }
            }
            Show::Json => println!("{job}"),
        }
    }

    fn finish(&mut self, job: &Value) {
        if let Show::Bar(bar) = self {
            let status = job["status"].as_str().unwrap_or_default();
            bar.set_message(status.to_owned());
            bar.finish();
        }
    }

    /// Says that the connection was lost and is being opened again, once per loss.
    fn reconnecting(&mut self, reason: &str) {
        match self {
            Show::Bar(bar) => bar.set_message(format!("reconnecting ({reason})")),
            Show::Lines { .. } | Show::Json => {
                eprintln!("connection lost ({reason}); reconnecting");
            }
        }
    }

    fn abandon(&mut self) {
        if let Show::Bar(bar) = self {
            bar.abandon();
        }
    }
}
