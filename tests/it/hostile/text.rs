//! NUL characters and invalid UTF-8 in every string argument: PostgreSQL cannot store a NUL,
//! SQLite can, so both refuse it the same way, naming where it was.

use serde_json::json;

use super::{Expect, Hostile, Send};

/// Every string argument that is stored or searched: the operation, with the text as `$s`.
fn operations(ws: &str, job: &str) -> Vec<(&'static str, String)> {
    let submit = |input: &str| {
        format!(
            "mutation($s: String!) {{ submitJob(input: {{workspaceId: \"{ws}\", tool: \"sleep\", \
             {input}}}) {{ job {{ id }} }} }}"
        )
    };
    vec![
        (
            "workspace name",
            "mutation($s: String!) { createWorkspace(input: {name: $s}) { workspace { id } } }"
                .into(),
        ),
        (
            "workspace rename",
            format!(
                "mutation($s: String!) {{ renameWorkspace(input: {{workspaceId: \"{ws}\", name: $s}}) {{ workspace {{ id }} }} }}"
            ),
        ),
        ("job name", submit("name: $s")),
        ("idempotency key", submit("idempotencyKey: $s")),
        ("settings value", submit("settings: {seconds: 0, note: $s}")),
        ("text input", submit("inputs: [{name: \"note\", text: $s}]")),
        ("input name", submit("inputs: [{name: $s, text: \"x\"}]")),
        (
            "tool",
            format!(
                "mutation($s: String!) {{ submitJob(input: {{workspaceId: \"{ws}\", tool: $s}}) {{ job {{ id }} }} }}"
            ),
        ),
        (
            "batch name",
            format!(
                "mutation($s: String!) {{ submitBatch(input: {{workspaceId: \"{ws}\", name: $s, jobs: [{{tool: \"sleep\"}}]}}) {{ batch {{ id }} }} }}"
            ),
        ),
        (
            "job rename",
            format!(
                "mutation($s: String!) {{ renameJob(input: {{jobId: \"{job}\", name: $s}}) {{ job {{ id }} }} }}"
            ),
        ),
        (
            "duplicate name",
            format!(
                "mutation($s: String!) {{ duplicateJob(input: {{jobId: \"{job}\", name: $s}}) {{ job {{ id }} }} }}"
            ),
        ),
        (
            "search filter",
            format!(
                "query($s: String!) {{ workspace(id: \"{ws}\") {{ jobs(filter: {{search: $s}}) {{ totalCount }} }} }}"
            ),
        ),
        (
            "tool filter",
            format!(
                "query($s: String!) {{ workspace(id: \"{ws}\") {{ jobs(filter: {{tool: $s}}) {{ totalCount }} }} }}"
            ),
        ),
        (
            "token name",
            "mutation($s: String!) { createApiToken(input: {name: $s}) { token } }".into(),
        ),
        (
            "member e-mail",
            format!(
                "mutation($s: String!) {{ addMember(input: {{workspaceId: \"{ws}\", email: $s, role: VIEWER}}) {{ membership {{ id }} }} }}"
            ),
        ),
        (
            "invited e-mail",
            format!(
                "mutation($s: String!) {{ setJobSharing(input: {{jobId: \"{job}\", visibility: INVITED, invitedEmails: [$s]}}) {{ job {{ id }} }} }}"
            ),
        ),
        (
            "tool argument",
            "query($s: String!) { tool(name: $s) { name } }".into(),
        ),
        (
            "estimate",
            "query($s: String!) { estimateJobCost(input: {tool: $s}) { total } }".into(),
        ),
        (
            "cursor",
            format!(
                "query($s: String!) {{ workspace(id: \"{ws}\") {{ jobs(after: $s) {{ totalCount }} }} }}"
            ),
        ),
        ("id", "query($s: ID!) { job(id: $s) { id } }".into()),
        (
            "webhook url",
            format!(
                "mutation($s: String!) {{ createWebhook(input: {{workspaceId: \"{ws}\", url: $s, events: [\"job.completed\"]}}) {{ secret }} }}"
            ),
        ),
        (
            "webhook description",
            format!(
                "mutation($s: String!) {{ createWebhook(input: {{workspaceId: \"{ws}\", url: \"https://example.com\", events: [\"job.completed\"], description: $s}}) {{ secret }} }}"
            ),
        ),
    ]
}

#[tokio::test]
async fn a_nul_character_in_any_string_argument_is_bad_user_input() {
    let hostile = Hostile::spawn().await;
    let mut by_variable = Vec::new();
    let mut in_document = Vec::new();
    for (what, operation) in operations(&hostile.ws, &hostile.job) {
        by_variable.push((
            format!("{what}, as a variable"),
            Send::Post(operation.clone(), json!({"s": "a\u{0}b"})),
        ));
        // The same text written into the document instead.
        let literal = operation
            .replacen("($s: String!)", "", 1)
            .replacen("($s: ID!)", "", 1)
            .replace("$s", "\"a\\u0000b\"");
        in_document.push((
            format!("{what}, in the document"),
            Send::Post(literal, json!({})),
        ));
    }
    hostile
        .check(Expect::BadInput("variables.s"), by_variable)
        .await;
    hostile.check(Expect::BadInput(""), in_document).await;
    hostile
        .check(
            Expect::BadInput("createWorkspace.input.name"),
            vec![(
                "the field named".into(),
                Send::Post(
                    "mutation { createWorkspace(input: {name: \"\\u0000\"}) { workspace { id } } }"
                        .into(),
                    json!({}),
                ),
            )],
        )
        .await;
}

#[tokio::test]
async fn a_nul_character_in_a_settings_key_or_a_websocket_variable_is_refused() {
    let hostile = Hostile::spawn().await;
    let submit = "mutation($ws: ID!, $settings: JSON) { submitJob(input: {workspaceId: $ws, \
                  tool: \"sleep\", settings: $settings}) { job { id } } }";
    hostile
        .check(
            Expect::BadInput("variables.settings.a\\u0000b"),
            vec![(
                "a settings key".into(),
                Send::Post(
                    submit.into(),
                    json!({"ws": hostile.ws, "settings": {"a\u{0}b": 1}}),
                ),
            )],
        )
        .await;
    hostile
        .check(
            Expect::Refused,
            vec![(
                "a websocket variable".into(),
                Send::Ws(json!({
                    "query": "subscription($id: ID!) { jobUpdated(id: $id) { id } }",
                    "variables": {"id": "a\u{0}b"},
                })),
            )],
        )
        .await;
}

#[tokio::test]
async fn invalid_utf8_is_refused_by_every_transport() {
    let hostile = Hostile::spawn().await;
    let mut body = br#"{"query": "mutation { createWorkspace(input: {name: \"a"#.to_vec();
    body.extend_from_slice(b"\xff\xfe");
    body.extend_from_slice(br#"\"}) { workspace { id } } }"}"#);
    let surrogate = br#"{"query": "query($s: String!) { tool(name: $s) { name } }", "variables": {"s": "\ud800"}}"#;
    let cases = vec![
        ("a JSON body".to_owned(), Send::Body("application/json", body.clone())),
        ("multipart operations".to_owned(), Send::Multipart(body, "{}".into(), vec![])),
        (
            "a query string".to_owned(),
            Send::Get("query=%7B%20tool(name%3A%20%22%FF%22)%20%7B%20name%20%7D%20%7D".into()),
        ),
        (
            "a query string's variables".to_owned(),
            Send::Get(
                "query=query(%24s%3AString!)%7Btool(name%3A%24s)%7Bname%7D%7D&variables=%7B%22s%22%3A%22%C3%28%22%7D"
                    .into(),
            ),
        ),
        ("a lone surrogate in JSON".into(), Send::Body("application/json", surrogate.to_vec())),
        (
            "a lone surrogate in the document".into(),
            Send::Post(r#"{ tool(name: "\ud800") { name } }"#.into(), json!({})),
        ),
    ];
    hostile.check(Expect::Refused, cases).await;
}
