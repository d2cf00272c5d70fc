//! Hostile input: every entry point is fed what a fuzzer or an attacker would send. Each case
//! must be refused with a 4xx or a GraphQL error carrying a code (never a 5xx nor
//! INTERNAL_SERVER_ERROR), leave the process serving and leave the ledger as it was.
//!
//! The cases are tables: add a row to cover a new argument or entry point.

mod bodies;
mod kinds;
mod nesting;
mod persisted;
mod text;
mod traceparent;
mod uploads;
mod webhooks;
mod workflows;

use reqwest::StatusCode;
use reqwest::multipart::{Form, Part};
use serde_json::{Value, json};

use crate::support::ws::{Received, Ws};
use crate::support::{TestApp, TestUser};

const GRAPHQL_RESPONSE_JSON: &str = "application/graphql-response+json";

/// One hostile request.
pub enum Send {
    /// A JSON POST of a document and variables, as the owner.
    Post(String, Value),
    /// A POST of raw bytes with a content type, as the owner.
    Body(&'static str, Vec<u8>),
    /// A GET with this raw query string, as the owner.
    Get(String),
    /// A multipart request: `operations`, `map` and files named "0", "1", ...
    Multipart(Vec<u8>, String, Vec<Vec<u8>>),
    /// A websocket `subscribe` payload, on a connection of the owner; or raw text.
    Ws(Value),
    WsText(String),
}

/// What a case may answer.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// A refusal: a 4xx, or errors that all carry a code.
    Refused,
    /// A refusal, or a success (integer edges that are in range, say).
    RefusedOrOk,
    /// A BAD_USER_INPUT refusal naming this field (any field when empty).
    BadInput(&'static str),
}

/// A server with a funded workspace, a job and a user to send cases as.
pub struct Hostile {
    pub app: TestApp,
    pub owner: TestUser,
    pub ws: String,
    pub job: String,
}

impl Hostile {
    pub async fn spawn() -> Hostile {
        let app = TestApp::spawn().await;
        let owner = app.user("owner@example.com").await;
        let ws = app.workspace(&owner, "lab").await;
        app.grant(&ws, 1000).await;
        let job = app.job(&owner, &ws, 0).await["id"]
            .as_str()
            .unwrap()
            .to_owned();
        Hostile {
            app,
            owner,
            ws,
            job,
        }
    }

    /// The workspace's balance and the number of ledger entries of the whole database.
    async fn ledger(&self) -> (i64, u64) {
        use sea_orm::{EntityTrait, PaginatorTrait};
        let entries = entity::credit_transaction::Entity::find()
            .count(&self.app.db)
            .await
            .unwrap();
        (self.app.balance(&self.ws).await, entries)
    }

    /// Sends each case, checks its answer, that the server still serves and that no credits
    /// moved.
    pub async fn check(&self, expect: Expect, cases: Vec<(String, Send)>) {
        for (name, send) in cases {
            let before = self.ledger().await;
            let outcome = self.send(&send).await;
            if let Err(why) = judge(expect, &outcome) {
                panic!("case `{name}`: {why}");
            }
            let health = self
                .app
                .post(
                    Some(&self.owner.token),
                    "{ viewer { isAuthenticated } }",
                    json!({}),
                )
                .await;
            assert!(
                health.0 == StatusCode::OK && health.1["errors"].is_null(),
                "case `{name}`: the server no longer serves: {health:?}"
            );
            assert_eq!(
                self.ledger().await,
                before,
                "case `{name}`: the ledger changed"
            );
        }
    }

    async fn send(&self, send: &Send) -> Outcome {
        let client = self.app.client();
        let url = self.app.url("/graphql");
        let request = match send {
            Send::Post(query, variables) => client
                .post(&url)
                .json(&json!({"query": query, "variables": variables})),
            Send::Body(content_type, body) => client
                .post(&url)
                .header("content-type", *content_type)
                .body(body.clone()),
            Send::Get(query_string) => client.get(format!("{url}?{query_string}")),
            Send::Multipart(operations, map, files) => {
                let mut form = Form::new()
                    .part("operations", Part::bytes(operations.clone()))
                    .text("map", map.clone());
                for (index, bytes) in files.iter().enumerate() {
                    form = form.part(
                        index.to_string(),
                        Part::bytes(bytes.clone()).file_name("in.fasta"),
                    );
                }
                client.post(&url).multipart(form)
            }
            Send::Ws(payload) => {
                let message = json!({"id": "1", "type": "subscribe", "payload": payload});
                return self.over_websocket(message.to_string()).await;
            }
            Send::WsText(text) => return self.over_websocket(text.clone()).await,
        };
        let response = request
            .bearer_auth(&self.owner.token)
            .header("accept", GRAPHQL_RESPONSE_JSON)
            .send()
            .await
            .expect("the server answers");
        let status = response.status();
        let text = response.text().await.unwrap_or_default();
        Outcome::Http(
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    async fn over_websocket(&self, text: String) -> Outcome {
        let mut ws = Ws::connect(self.app.addr, Some(&self.owner.token)).await;
        ws.send_text(text).await;
        match ws.receive().await {
            Received::Message(message) => Outcome::Ws(message),
            Received::Closed(code) => Outcome::Closed(code),
        }
    }
}

/// What the server answered.
#[derive(Debug)]
enum Outcome {
    Http(StatusCode, Value),
    Ws(Value),
    Closed(Option<u16>),
}

/// Checks that every error of a GraphQL response carries a code, none internal.
fn all_coded(errors: &Value) -> Result<(), String> {
    let errors = errors
        .as_array()
        .filter(|errors| !errors.is_empty())
        .ok_or_else(|| format!("no errors: {errors}"))?;
    for error in errors {
        match error["extensions"]["code"].as_str() {
            None => return Err(format!("an error without a code: {error}")),
            Some("INTERNAL_SERVER_ERROR") => return Err(format!("an internal error: {error}")),
            Some(_) => {}
        }
    }
    Ok(())
}

fn judge(expect: Expect, outcome: &Outcome) -> Result<(), String> {
    let ok_allowed = expect == Expect::RefusedOrOk;
    match outcome {
        Outcome::Http(status, body) => {
            if status.is_server_error() {
                return Err(format!("{status}: {body}"));
            }
            if *status == StatusCode::OK && body["errors"].is_null() {
                return if ok_allowed && body["data"].is_object() {
                    Ok(())
                } else {
                    Err(format!("accepted: {body}"))
                };
            }
            // What hyper refuses before the request reaches the application has no body.
            if matches!(
                *status,
                StatusCode::URI_TOO_LONG | StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE
            ) {
                return Ok(());
            }
            if !status.is_client_error() && *status != StatusCode::OK {
                return Err(format!("{status}: {body}"));
            }
            all_coded(&body["errors"]).map_err(|why| format!("{status}: {why}"))?;
            if let Expect::BadInput(field) = expect {
                let error = &body["errors"][0];
                let named = error["extensions"]["field"].as_str();
                if error["extensions"]["code"] != "BAD_USER_INPUT"
                    || named.is_none_or(|named| !field.is_empty() && named != field)
                {
                    return Err(format!("expected BAD_USER_INPUT naming `{field}`: {body}"));
                }
            }
            Ok(())
        }
        Outcome::Ws(message) => match message["type"].as_str() {
            Some("error") => {
                let payload = &message["payload"];
                all_coded(&if payload.is_array() {
                    payload.clone()
                } else {
                    json!([payload])
                })
            }
            Some("next") if message["payload"]["errors"].is_null() => {
                if ok_allowed {
                    Ok(())
                } else {
                    Err(format!("accepted: {message}"))
                }
            }
            Some("next") => all_coded(&message["payload"]["errors"]),
            _ => Err(format!("unexpected: {message}")),
        },
        // A message the protocol cannot read closes the connection (4400, or 1009 too big).
        Outcome::Closed(Some(4400 | 1009)) => Ok(()),
        Outcome::Closed(code) => Err(format!("closed with {code:?}")),
    }
}

/// `n` levels of `open`, then `inner`, then `n` of `close`.
pub fn nested(n: usize, open: &str, inner: &str, close: &str) -> String {
    format!("{}{inner}{}", open.repeat(n), close.repeat(n))
}
