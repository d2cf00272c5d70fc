//! Wrong kinds of input and integer edges: every error carries a code, none is internal.

use serde_json::json;

use super::{Expect, Hostile, Send};

#[tokio::test]
async fn input_of_the_wrong_kind_is_refused_with_a_code() {
    let hostile = Hostile::spawn().await;
    let ws = &hostile.ws;
    let job = &hostile.job;
    let post = |query: String| Send::Post(query, json!({}));
    let cases = vec![
        (
            "inputs as a string",
            post(format!(
                "mutation {{ submitJob(input: {{workspaceId: \"{ws}\", tool: \"sleep\", inputs: \"x\"}}) {{ job {{ id }} }} }}"
            )),
        ),
        (
            "a date that is not one",
            post(format!(
                "{{ workspace(id: \"{ws}\") {{ jobs(filter: {{createdAfter: \"yesterday\"}}) {{ totalCount }} }} }}"
            )),
        ),
        (
            "a date variable that is not one",
            Send::Post(
                format!(
                    "query($d: DateTime) {{ workspace(id: \"{ws}\") {{ jobs(filter: {{createdAfter: $d}}) {{ totalCount }} }} }}"
                ),
                json!({"d": "yesterday"}),
            ),
        ),
        (
            "a token expiry that is not a date",
            post(
                "mutation { createApiToken(input: {name: \"t\", expiresAt: \"soon\"}) { token } }"
                    .into(),
            ),
        ),
        (
            "settings as a string",
            post(format!(
                "mutation {{ submitJob(input: {{workspaceId: \"{ws}\", tool: \"sleep\", settings: \"x\"}}) {{ job {{ id }} }} }}"
            )),
        ),
        (
            "settings as a list",
            post(format!(
                "mutation {{ submitJob(input: {{workspaceId: \"{ws}\", tool: \"sleep\", settings: [1, 2]}}) {{ job {{ id }} }} }}"
            )),
        ),
        (
            "a setting of the wrong type",
            post(format!(
                "mutation {{ submitJob(input: {{workspaceId: \"{ws}\", tool: \"sleep\", settings: {{seconds: \"ten\"}}}}) {{ job {{ id }} }} }}"
            )),
        ),
        (
            "a text input as a number",
            Send::Post(
                format!(
                    "mutation($i: [JobInputValue!]!) {{ submitJob(input: {{workspaceId: \"{ws}\", tool: \"sleep\", inputs: $i}}) {{ job {{ id }} }} }}"
                ),
                json!({"i": [{"name": "note", "text": 5}]}),
            ),
        ),
        (
            "a boolean for a name",
            post("mutation { createWorkspace(input: {name: true}) { workspace { id } } }".into()),
        ),
        (
            "null for a required name",
            post("mutation { createWorkspace(input: {name: null}) { workspace { id } } }".into()),
        ),
        (
            "an unknown enum value",
            post(format!(
                "{{ workspace(id: \"{ws}\") {{ jobs(filter: {{statuses: [NOPE]}}) {{ totalCount }} }} }}"
            )),
        ),
        (
            "an enum as a string variable",
            Send::Post(
                format!(
                    "query($s: [JobStatus!]) {{ workspace(id: \"{ws}\") {{ jobs(filter: {{statuses: $s}}) {{ totalCount }} }} }}"
                ),
                json!({"s": "nope"}),
            ),
        ),
        (
            "a malformed id",
            post("{ job(id: \"nope\") { id } }".into()),
        ),
        (
            "an id of another kind",
            post(format!("{{ job(id: \"{ws}\") {{ id }} }}")),
        ),
        ("a number for an id", post("{ job(id: 5) { id } }".into())),
        (
            "an object for a list",
            post(format!(
                "mutation {{ setJobSharing(input: {{jobId: \"{job}\", visibility: INVITED, invitedEmails: {{a: 1}}}}) {{ job {{ id }} }} }}"
            )),
        ),
        ("an unknown field", post("{ nope }".into())),
        (
            "an unknown argument",
            post("{ tools(x: 1) { name } }".into()),
        ),
        (
            "a subscription over POST",
            post(format!(
                "subscription {{ jobUpdated(id: \"{job}\") {{ id }} }}"
            )),
        ),
        (
            "two operations, none named",
            post(
                "query A { viewer { isAuthenticated } } query B { viewer { isAuthenticated } }"
                    .into(),
            ),
        ),
        (
            "a missing operation name",
            Send::Body(
                "application/json",
                br#"{"query": "query A { viewer { isAuthenticated } }", "operationName": "B"}"#
                    .to_vec(),
            ),
        ),
        (
            "an undeclared variable",
            post("{ tool(name: $x) { name } }".into()),
        ),
        (
            "a missing variable",
            post("query($x: String!) { tool(name: $x) { name } }".into()),
        ),
        (
            "a fragment cycle",
            post("{ ...A } fragment A on Query { ...B } fragment B on Query { ...A }".into()),
        ),
        ("a long chain of fragments", post(fragment_chain(3_000))),
        (
            "a variable of an output type",
            post("query($x: Job) { viewer { isAuthenticated } }".into()),
        ),
        (
            "a worker mutation by a user",
            post(
                "mutation { claimJobs(input: {worker: \"w\", tools: [\"x\"]}) { jobs { id } } }"
                    .into(),
            ),
        ),
        (
            "a websocket subscription with a bad id",
            Send::Ws(json!({"query": "subscription { jobUpdated(id: \"nope\") { id } }"})),
        ),
        (
            "a websocket query of a bad date",
            Send::Ws(
                json!({"query": format!("{{ workspace(id: \"{ws}\") {{ jobs(filter: {{createdAfter: \"yesterday\"}}) {{ totalCount }} }} }}")}),
            ),
        ),
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

/// `{ ...F0 }` with each fragment spreading the next.
fn fragment_chain(n: usize) -> String {
    let mut document = "{ ...F0 }".to_owned();
    for i in 0..n {
        document.push_str(&format!(" fragment F{i} on Query {{ ...F{} }}", i + 1));
    }
    document.push_str(&format!(
        " fragment F{n} on Query {{ viewer {{ isAuthenticated }} }}"
    ));
    document
}

/// Integers at the edges: 2^31, -1, 0 and far beyond any integer. Whether a value is in
/// range is the schema's business; none may crash or answer an internal error.
const EDGES: [&str; 6] = [
    "2147483648",
    "-2147483649",
    "-1",
    "0",
    "9223372036854775808",
    "1e30",
];

#[tokio::test]
async fn integer_edges_in_every_numeric_argument_answer_with_a_code_or_a_result() {
    let hostile = Hostile::spawn().await;
    // Submissions go to a workspace without credits, so nothing is charged whatever the value.
    let empty = hostile.app.workspace(&hostile.owner, "empty").await;
    let ws = &hostile.ws;
    let job = &hostile.job;
    let mut cases = Vec::new();
    for n in EDGES {
        let operations = [
            (
                "workspaces(first)",
                format!("{{ viewer {{ workspaces(first: {n}) {{ totalCount }} }} }}"),
            ),
            (
                "jobs(first)",
                format!("{{ workspace(id: \"{ws}\") {{ jobs(first: {n}) {{ totalCount }} }} }}"),
            ),
            (
                "members(first)",
                format!("{{ workspace(id: \"{ws}\") {{ members(first: {n}) {{ totalCount }} }} }}"),
            ),
            (
                "apiTokens(first)",
                format!("{{ viewer {{ apiTokens(first: {n}) {{ totalCount }} }} }}"),
            ),
            (
                "priority",
                format!(
                    "mutation {{ submitJob(input: {{workspaceId: \"{empty}\", tool: \"sleep\", priority: {n}}}) {{ job {{ id }} }} }}"
                ),
            ),
            (
                "maxCredits",
                format!(
                    "mutation {{ submitJob(input: {{workspaceId: \"{empty}\", tool: \"sleep\", maxCredits: {n}}}) {{ job {{ id }} }} }}"
                ),
            ),
            (
                "a setting",
                format!(
                    "mutation {{ submitJob(input: {{workspaceId: \"{empty}\", tool: \"sleep\", settings: {{seconds: {n}}}}}) {{ job {{ id }} }} }}"
                ),
            ),
            (
                "an estimate's setting",
                format!(
                    "{{ estimateJobCost(input: {{tool: \"sleep\", settings: {{seconds: {n}}}}}) {{ total }} }}"
                ),
            ),
            (
                "a batch's priority",
                format!(
                    "mutation {{ submitBatch(input: {{workspaceId: \"{empty}\", jobs: [{{tool: \"sleep\", priority: {n}}}]}}) {{ batch {{ id }} }} }}"
                ),
            ),
            (
                "retry maxCredits",
                format!(
                    "mutation {{ retryJob(input: {{jobId: \"{job}\", maxCredits: {n}}}) {{ job {{ id }} }} }}"
                ),
            ),
            (
                "duplicate maxCredits",
                format!(
                    "mutation {{ duplicateJob(input: {{jobId: \"{job}\", workspaceId: \"{empty}\", maxCredits: {n}}}) {{ job {{ id }} }} }}"
                ),
            ),
            (
                "a grant by a non-administrator",
                format!(
                    "mutation {{ grantCredits(input: {{workspaceId: \"{ws}\", amount: {n}}}) {{ workspace {{ id }} }} }}"
                ),
            ),
            (
                "an adjustment by a non-administrator",
                format!(
                    "mutation {{ adjustCredits(input: {{workspaceId: \"{ws}\", amount: {n}, note: \"x\"}}) {{ workspace {{ id }} }} }}"
                ),
            ),
            (
                "claim limit",
                format!(
                    "mutation {{ claimJobs(input: {{worker: \"w\", tools: [\"x\"], limit: {n}, leaseSeconds: {n}}}) {{ jobs {{ id }} }} }}"
                ),
            ),
            (
                "heartbeat lease",
                format!(
                    "mutation {{ heartbeatJob(attempt: \"x\", leaseSeconds: {n}) {{ cancelled }} }}"
                ),
            ),
            (
                "progress",
                format!(
                    "mutation {{ reportJobProgress(attempt: \"x\", progress: {n}) {{ cancelled }} }}"
                ),
            ),
        ];
        for (what, query) in operations {
            cases.push((
                format!("{what} = {n}"),
                Send::Post(query.clone(), json!({})),
            ));
        }
        // The same values as JSON variables.
        let value: serde_json::Value = serde_json::from_str(n).unwrap();
        cases.push((
            format!("jobs(first) = {n} as a variable"),
            Send::Post(
                format!("query($n: Int) {{ workspace(id: \"{ws}\") {{ jobs(first: $n) {{ totalCount }} }} }}"),
                json!({"n": value}),
            ),
        ));
        cases.push((
            format!("a setting = {n} as a variable"),
            Send::Post(
                format!("mutation($s: JSON) {{ submitJob(input: {{workspaceId: \"{empty}\", tool: \"sleep\", settings: $s}}) {{ job {{ id }} }} }}"),
                json!({"s": {"seconds": value}}),
            ),
        ));
    }
    hostile.check(Expect::RefusedOrOk, cases).await;
}

/// A document whose operation passed validation once is then checked only for what its
/// variables change: hostile variables of a submission sent after a valid one are still
/// refused with a code, and charge nothing.
#[tokio::test]
async fn hostile_variables_of_a_submission_validated_before_are_refused_with_a_code() {
    let hostile = Hostile::spawn().await;
    let ws = &hostile.ws;
    let query =
        "mutation($input: SubmitJobInput!) { submitJob(input: $input) { job { id } } }".to_owned();
    let valid = json!({"workspaceId": ws, "tool": "sleep", "settings": {"seconds": 0}});
    hostile
        .app
        .ok(
            Some(&hostile.owner.token),
            &query,
            json!({ "input": valid }),
        )
        .await;
    let with = |field: &str, value: serde_json::Value| {
        let mut input = valid.clone();
        input[field] = value;
        json!({ "input": input })
    };
    let mut nested = json!(0);
    for _ in 0..100 {
        nested = json!([nested]);
    }
    let mut cases = vec![
        (
            "settings nested 100 deep",
            with("settings", json!({ "seconds": nested })),
        ),
        ("a name of 1 MB", with("name", json!("n".repeat(1 << 20)))),
        ("a NUL in the name", with("name", json!("a\u{0}b"))),
        ("inputs as a string", with("inputs", json!("x"))),
        ("inputs as a list of numbers", with("inputs", json!([1, 2]))),
        (
            "the workspace as an object",
            with("workspaceId", json!({ "id": ws })),
        ),
        ("the workspace as null", with("workspaceId", json!(null))),
        ("the tool as a number", with("tool", json!(7))),
        ("an unknown field", with("colour", json!("red"))),
        ("the priority as a string", with("priority", json!("high"))),
        ("the priority as null", with("priority", json!(null))),
        ("the priority 1.5", with("priority", json!(1.5))),
        ("the input as null", json!({ "input": null })),
        ("no input", json!({})),
    ];
    for n in [
        i64::from(i32::MAX) + 1,
        i64::from(i32::MIN) - 1,
        i64::MAX,
        101,
        -101,
    ] {
        cases.push(("the priority at an edge", with("priority", json!(n))));
    }
    let cases = cases
        .into_iter()
        .map(|(name, variables)| (name.to_owned(), Send::Post(query.clone(), variables)))
        .collect();
    hostile.check(Expect::Refused, cases).await;
}

#[tokio::test]
async fn documents_that_spread_fragments_wide_are_refused_before_they_are_walked() {
    // Fragments spread twice at each of 60 levels: a kilobyte that stands for 2^60 fields.
    // Walked field by field (as validation's complexity limit walks a document) it would take
    // longer than the universe is old; it is refused as too complex, as often as it is sent,
    // and so is one as wide as the limit allows (`graphql::expansion`), while a page selecting
    // thousands of fields is answered alike twice (the second time through
    // `graphql::documents`, once it passed).
    let hostile = Hostile::spawn().await;
    let app = &hostile.app;
    let token = Some(hostile.owner.token.as_str());
    let variables = json!({ "ws": hostile.ws });
    let wide = |levels: usize| {
        let mut document =
            "query($ws: ID!) { workspace(id: $ws) { jobs(first: 5) { nodes { ...F0 } } } }"
                .to_owned();
        for i in 0..levels {
            document.push_str(&format!(
                " fragment F{i} on Job {{ ...F{} ...F{} }}",
                i + 1,
                i + 1
            ));
        }
        document.push_str(&format!(" fragment F{levels} on Job {{ id name status }}"));
        document
    };
    for levels in [60, 16] {
        for _ in 0..2 {
            let code = app
                .error_code(token, &wide(levels), variables.clone())
                .await;
            assert_eq!(code, "GRAPHQL_VALIDATION_FAILED", "{levels} levels");
        }
    }
    let aliases: String = (0..1_000).map(|i| format!(" a{i}: name")).collect();
    let many = format!(
        "query($ws: ID!) {{ workspace(id: $ws) {{ jobs(first: 2) {{ nodes {{ {aliases} }} }} }} }}"
    );
    let first = app.post(token, &many, variables.clone()).await;
    let again = app.post(token, &many, variables).await;
    assert_eq!(again, first);
    let data = app.ok(token, "{ __typename }", json!({})).await;
    assert_eq!(data["__typename"], "Query");
}
