//! Hostile persisted-document extensions and request headers: nested, huge, NUL, the wrong
//! kind and integer edges, by POST, GET and websocket.

use serde_json::{Value, json};

use super::{Expect, Hostile, Send, nested};

/// The extensions a hostile client may send instead of a document.
fn extensions() -> Vec<(&'static str, Value)> {
    let deep: Value =
        serde_json::from_str(&nested(10_000, "{\"a\":", "1", "}")).unwrap_or(Value::Null);
    vec![
        (
            "a persisted query nested deep",
            json!({"persistedQuery": {"version": 1, "sha256Hash": deep}}),
        ),
        (
            "a huge hash",
            json!({"persistedQuery": {"version": 1, "sha256Hash": "a".repeat(512 * 1024)}}),
        ),
        (
            "a NUL in the hash",
            json!({"persistedQuery": {"version": 1, "sha256Hash": format!("{}\u{0}", "a".repeat(63))}}),
        ),
        (
            "a hash of the wrong kind",
            json!({"persistedQuery": {"version": 1, "sha256Hash": 7}}),
        ),
        (
            "a version of the wrong kind",
            json!({"persistedQuery": {"version": "1", "sha256Hash": "a".repeat(64)}}),
        ),
        (
            "the largest version",
            json!({"persistedQuery": {"version": i64::MAX, "sha256Hash": "a".repeat(64)}}),
        ),
        (
            "a negative version",
            json!({"persistedQuery": {"version": -1, "sha256Hash": "a".repeat(64)}}),
        ),
        (
            "a fractional version",
            json!({"persistedQuery": {"version": 1.5, "sha256Hash": "a".repeat(64)}}),
        ),
        (
            "a persisted query that is a list",
            json!({"persistedQuery": [1, 2]}),
        ),
        (
            "a document id of the wrong kind",
            json!({"documentId": {"id": 1}}),
        ),
        (
            "a huge document id",
            json!({"documentId": "a".repeat(512 * 1024)}),
        ),
        (
            "a NUL in the document id",
            json!({"documentId": "sha256:\u{0}"}),
        ),
        (
            "an unknown hash",
            json!({"persistedQuery": {"version": 1, "sha256Hash": "0".repeat(64)}}),
        ),
    ]
}

#[tokio::test]
async fn hostile_persisted_query_extensions_are_refused_with_a_code() {
    let hostile = Hostile::spawn().await;
    let mut cases = Vec::new();
    for (name, extensions) in extensions() {
        let body = json!({ "extensions": extensions }).to_string().into_bytes();
        cases.push((
            format!("POST: {name}"),
            Send::Body("application/json", body),
        ));
        // The same with a document that is not the one the hash names.
        let with_query =
            json!({ "query": "{ viewer { isAuthenticated } }", "extensions": extensions });
        cases.push((
            format!("POST with a document: {name}"),
            Send::Body("application/json", with_query.to_string().into_bytes()),
        ));
        if extensions.to_string().len() < 4096 {
            let query =
                serde_urlencoded::to_string([("extensions", extensions.to_string())]).unwrap();
            cases.push((format!("GET: {name}"), Send::Get(query)));
        }
        cases.push((
            format!("websocket: {name}"),
            Send::Ws(json!({ "extensions": extensions })),
        ));
    }
    // The deep extension does not even parse as JSON: sent as text it is a malformed body.
    let deep = format!(
        "{{\"extensions\": {{\"persistedQuery\": {}}}}}",
        nested(10_000, "{\"a\":", "1", "}")
    );
    cases.push((
        "POST: extensions nested past the parser".into(),
        Send::Body("application/json", deep.into_bytes()),
    ));
    hostile.check(Expect::Refused, cases).await;
}

#[tokio::test]
async fn hostile_bearer_secrets_and_request_ids_are_refused_or_ignored() {
    let hostile = Hostile::spawn().await;
    let part = |text: &str| {
        use base64::Engine as _;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(text)
    };
    let deep_header = part(&nested(5_000, "{\"a\":", "1", "}"));
    let secrets = [
        ("a JWT of garbage", "a.b.c".to_owned()),
        (
            "an unsigned JWT",
            format!("{}.{}.", part(r#"{"alg":"none"}"#), part(r#"{"sub":"x"}"#)),
        ),
        (
            "a JWT whose header nests deep",
            format!("{deep_header}.{}.c2ln", part("{}")),
        ),
        (
            "a huge JWT",
            format!("{}.{}.c2ln", part(r#"{"alg":"ES256"}"#), "A".repeat(6_000)),
        ),
        (
            "a token of the wrong kind",
            "jg_".to_owned() + &"z".repeat(200),
        ),
    ];
    for (name, secret) in secrets {
        let before = hostile.ledger().await;
        let response = hostile
            .app
            .client()
            .post(hostile.app.url("/graphql"))
            .bearer_auth(&secret)
            .json(&json!({"query": "mutation($ws: ID!) { grantCredits(input: {workspaceId: $ws, amount: 5}) { workspace { id } } }", "variables": {"ws": hostile.ws}}))
            .send()
            .await
            .unwrap();
        let status = response.status();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        assert!(
            status.is_client_error()
                && body["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED",
            "{name}: {status} {body}"
        );
        assert_eq!(hostile.ledger().await, before, "{name}: the ledger changed");
    }
    // A request id is only echoed and logged: any printable value, however long, is kept within
    // bounds and the request is answered.
    for id in ["x".repeat(6_000), "a b\t\"c\"{}".to_owned(), String::new()] {
        let response = hostile
            .app
            .client()
            .post(hostile.app.url("/graphql"))
            .bearer_auth(&hostile.owner.token)
            .header("x-request-id", id.as_str())
            .json(&json!({"query": "{ viewer { isAuthenticated } }"}))
            .send()
            .await
            .unwrap();
        assert_eq!(
            response.status(),
            reqwest::StatusCode::OK,
            "id of {} bytes",
            id.len()
        );
    }
}
