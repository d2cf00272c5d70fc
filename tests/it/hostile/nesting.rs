//! Deeply nested documents and JSON at every entry point: 2,000 levels used to overflow a
//! worker's stack and abort the process.

use serde_json::json;

use super::{Expect, Hostile, Send, nested};

/// Levels of nesting each form is sent with.
const DEPTHS: [usize; 2] = [2_000, 100_000];

/// A URI holds at most 64 KiB, so a GET carries at most this many levels.
const GET_DEPTH: usize = 5_000;

/// Documents whose values (or selections) nest `n` deep, sent by every transport.
fn documents(n: usize, ws: &str) -> Vec<(String, String)> {
    let list = nested(n, "[", "1", "]");
    let object = nested(n, "{a:", "1", "}");
    vec![
        (
            "a list in an argument".into(),
            format!("{{tools(x:{list}){{name}}}}"),
        ),
        (
            "an object in an argument".into(),
            format!("{{tools(x:{object}){{name}}}}"),
        ),
        (
            "a directive argument".into(),
            format!("{{tools @include(if:{list}) {{name}}}}"),
        ),
        (
            "a variable's default".into(),
            format!("query($v: JSON = {object}) {{tools{{name}}}}"),
        ),
        (
            "settings written in the document".into(),
            format!(
                "mutation {{ submitJob(input: {{workspaceId: \"{ws}\", tool: \"sleep\", \
                 settings: {object}}}) {{ job {{ id }} }} }}"
            ),
        ),
        ("selections".into(), nested(n, "{tools", "", "}")),
        (
            "parentheses".into(),
            format!("{{tools{}}}", nested(n, "(", "", ")")),
        ),
    ]
}

/// A JSON body whose `variables` nest `n` deep (written by hand: serializing it would
/// overflow the test's own stack).
fn deep_variables(n: usize, query: &str) -> String {
    format!(
        "{{\"query\": {}, \"variables\": {{\"v\": {}}}}}",
        json!(query),
        nested(n, "[", "1", "]")
    )
}

#[tokio::test]
async fn deeply_nested_documents_are_refused_by_every_transport() {
    let hostile = Hostile::spawn().await;
    let mut cases = Vec::new();
    for n in DEPTHS {
        for (form, document) in documents(n, &hostile.ws) {
            cases.push((
                format!("POST, {form}, {n}"),
                Send::Post(document.clone(), json!({})),
            ));
            cases.push((
                format!("websocket, {form}, {n}"),
                Send::Ws(json!({"query": document})),
            ));
            let operations = json!({"query": document, "variables": {}})
                .to_string()
                .into_bytes();
            cases.push((
                format!("multipart, {form}, {n}"),
                Send::Multipart(operations, "{}".into(), vec![]),
            ));
        }
        let n = n.min(GET_DEPTH);
        for (form, document) in documents(n, &hostile.ws) {
            let encoded = form_urlencoded(&document);
            cases.push((
                format!("GET, {form}, {n}"),
                Send::Get(format!("query={encoded}")),
            ));
        }
    }
    hostile.check(Expect::Refused, cases).await;
}

#[tokio::test]
async fn deeply_nested_json_is_refused_at_every_entry_point() {
    let hostile = Hostile::spawn().await;
    let query = "query($v: JSON) { tools { name } }";
    let submit = "mutation($ws: ID!, $v: JSON) { submitJob(input: {workspaceId: $ws, \
                  tool: \"sleep\", settings: $v}) { job { id } } }";
    let mut cases = Vec::new();
    for n in DEPTHS {
        let get_list = nested(n.min(GET_DEPTH), "[", "1", "]");
        let list = nested(n, "[", "1", "]");
        let object = nested(n, "{\"a\":", "1", "}");
        cases.push((
            format!("variables, {n}"),
            Send::Body("application/json", deep_variables(n, query).into_bytes()),
        ));
        cases.push((
            format!("settings in variables, {n}"),
            Send::Body(
                "application/json",
                format!(
                    "{{\"query\": {}, \"variables\": {{\"ws\": \"{}\", \"v\": {object}}}}}",
                    json!(submit),
                    hostile.ws
                )
                .into_bytes(),
            ),
        ));
        cases.push((
            format!("extensions, {n}"),
            Send::Body(
                "application/json",
                format!(
                    "{{\"query\": \"{{ tools {{ name }} }}\", \"extensions\": {{\"e\": {list}}}}}"
                )
                .into_bytes(),
            ),
        ));
        cases.push((
            format!("the body itself, {n}"),
            Send::Body("application/json", list.clone().into_bytes()),
        ));
        cases.push((
            format!("GET variables, {n}"),
            Send::Get(format!(
                "query={}&variables={}",
                form_urlencoded(query),
                form_urlencoded(&format!("{{\"v\":{get_list}}}"))
            )),
        ));
        cases.push((
            format!("multipart operations, {n}"),
            Send::Multipart(deep_variables(n, query).into_bytes(), "{}".into(), vec![]),
        ));
        cases.push((
            format!("multipart map, {n}"),
            Send::Multipart(
                json!({"query": query, "variables": {}})
                    .to_string()
                    .into_bytes(),
                format!("{{\"0\": {list}}}"),
                vec![b">a\nACGT\n".to_vec()],
            ),
        ));
        cases.push((
            format!("websocket variables, {n}"),
            Send::WsText(format!(
                "{{\"id\": \"1\", \"type\": \"subscribe\", \"payload\": {}}}",
                deep_variables(n, query)
            )),
        ));
        cases.push((
            format!("websocket message, {n}"),
            Send::WsText(list.clone()),
        ));
    }
    hostile.check(Expect::Refused, cases).await;
}

#[tokio::test]
async fn nesting_within_the_limit_is_read() {
    let hostile = Hostile::spawn().await;
    let estimate = "estimateJobCost(input: {tool: \"sleep\", settings: $v}) { total }";
    let settings = nested(100, "{a:", "1", "}");
    let written = format!("query($v: JSON = {settings}) {{ {estimate} }}");
    let variables: serde_json::Value =
        serde_json::from_str(&nested(100, "{\"a\":", "1", "}")).unwrap();
    let passed = format!("query($v: JSON) {{ {estimate} }}");
    for (document, variables) in [(written, json!({})), (passed, json!({"v": variables}))] {
        let (_, body) = hostile
            .app
            .post(Some(&hostile.owner.token), &document, variables)
            .await;
        // The settings themselves are the tool's to refuse; the document was read.
        let code = &body["errors"][0]["extensions"]["code"];
        assert!(
            body["data"]["estimateJobCost"].is_object() || code == "BAD_USER_INPUT",
            "{body}"
        );
    }
}

/// Percent-encodes a query string value.
fn form_urlencoded(value: &str) -> String {
    serde_urlencoded::to_string([("", value)]).unwrap()[1..].to_owned()
}
