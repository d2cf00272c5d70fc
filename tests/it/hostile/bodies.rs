//! Oversized and malformed bodies and messages.

use serde_json::json;

use super::{Expect, Hostile, Send};

#[tokio::test]
async fn oversized_and_malformed_requests_are_refused_with_a_code() {
    let hostile = Hostile::spawn().await;
    let big = format!(
        "{{\"query\": \"{{ viewer {{ isAuthenticated }} }}\", \"variables\": {{\"s\": \"{}\"}}}}",
        "a".repeat(2 * 1024 * 1024)
    );
    let many_operations: String = (0..5_000)
        .map(|i| format!("query Q{i} {{ viewer {{ isAuthenticated }} }} "))
        .collect();
    let cases = vec![
        ("a body over the limit", Send::Body("application/json", big.into_bytes())),
        ("an empty body", Send::Body("application/json", vec![])),
        ("not JSON", Send::Body("application/json", b"{\"query\": ".to_vec())),
        ("a JSON string", Send::Body("application/json", b"\"{ viewer { isAuthenticated } }\"".to_vec())),
        ("a batch", Send::Body("application/json", br#"[{"query": "{ viewer { isAuthenticated } }"}]"#.to_vec())),
        ("a number for the query", Send::Body("application/json", br#"{"query": 1}"#.to_vec())),
        ("variables as a list", Send::Body("application/json", br#"{"query": "{ viewer { isAuthenticated } }", "variables": [1]}"#.to_vec())),
        ("a form post", Send::Body("application/x-www-form-urlencoded", b"query=%7Bviewer%7BisAuthenticated%7D%7D".to_vec())),
        ("plain text", Send::Body("text/plain", b"{ viewer { isAuthenticated } }".to_vec())),
        ("an unparsable document", Send::Post("{ viewer { id ".into(), json!({}))),
        ("an empty document", Send::Post(String::new(), json!({}))),
        ("NUL outside strings", Send::Post("{ viewer\u{0} { isAuthenticated } }".into(), json!({}))),
        ("five thousand operations, none named", Send::Post(many_operations, json!({}))),
        ("a GET without a query", Send::Get("variables=%7B%7D".into())),
        ("a mutation over GET", Send::Get("query=mutation%7BcreateWorkspace(input%3A%7Bname%3A%22x%22%7D)%7Bworkspace%7Bid%7D%7D%7D".into())),
        ("variables that are not JSON in a GET", Send::Get("query=%7Bviewer%7BisAuthenticated%7D%7D&variables=%7B".into())),
        ("a multipart request without a map", Send::Multipart(br#"{"query": "{ viewer { isAuthenticated } }"}"#.to_vec(), "not json".into(), vec![])),
        ("a multipart map naming a missing file", Send::Multipart(br#"{"query": "{ viewer { isAuthenticated } }"}"#.to_vec(), r#"{"9": ["variables.f"]}"#.into(), vec![])),
        ("a multipart batch", Send::Multipart(br#"[{"query": "{ viewer { isAuthenticated } }"}]"#.to_vec(), "{}".into(), vec![])),
        ("websocket text that is not JSON", Send::WsText("{".into())),
        ("a websocket message without a type", Send::WsText("{}".into())),
        ("a websocket operation without a query", Send::Ws(json!({}))),
        ("a websocket operation over the size limit", Send::WsText(format!("{{\"id\": \"1\", \"type\": \"subscribe\", \"payload\": {{\"query\": \"{}\"}}}}", " ".repeat(2 * 1024 * 1024)))),
        ("an unparsable websocket document", Send::Ws(json!({"query": "subscription {"}))),
    ];
    hostile
        .check(
            Expect::Refused,
            cases
                .into_iter()
                .map(|(name, send)| (name.to_owned(), send))
                .collect(),
        )
        .await;
}
