//! Hostile workflow submissions and actions: nested, huge, NUL, wrong kinds and integer edges
//! are refused with a code, nothing is written and no credits move.

use sea_orm::{EntityTrait, PaginatorTrait};
use serde_json::{Value, json};

use super::{Expect, Hostile, Send};

const SUBMIT: &str =
    "mutation($input: SubmitWorkflowInput!) { submitWorkflow(input: $input) { workflow { id } } }";

fn submit(ws: &str, rest: Value) -> Send {
    let mut input = rest;
    input["workspaceId"] = json!(ws);
    Send::Post(SUBMIT.into(), json!({ "input": input }))
}

fn steps(steps: Value) -> Value {
    json!({ "definition": { "steps": steps } })
}

fn nested(depth: usize) -> Value {
    let mut value = json!(1);
    for _ in 0..depth {
        value = json!({ "a": value });
    }
    value
}

#[tokio::test]
async fn hostile_workflow_submissions_are_refused_and_write_nothing() {
    let hostile = Hostile::spawn().await;
    let ws = hostile.ws.as_str();
    let noop = |name: &str| json!({ "name": name, "tool": "noop" });
    let bad_input = vec![
        (
            "huge step name".to_owned(),
            submit(ws, steps(json!([noop(&"s".repeat(100_000))]))),
        ),
        (
            "NUL in a step name".to_owned(),
            submit(ws, steps(json!([noop("a\u{0}b")]))),
        ),
        (
            "NUL in a tool".to_owned(),
            submit(ws, steps(json!([{ "name": "a", "tool": "noop\u{0}" }]))),
        ),
        (
            "NUL in a binding".to_owned(),
            submit(
                ws,
                steps(json!([{ "name": "a", "tool": "sequence-stats",
                "inputs": [{ "input": "sequences", "from": "inputs.d\u{0}na" }] }])),
            ),
        ),
        (
            "a source of many dots".to_owned(),
            submit(
                ws,
                steps(json!([{ "name": "a", "tool": "sequence-stats",
                "inputs": [{ "input": "sequences", "from": "a.b.c.d" }] }])),
            ),
        ),
        (
            "a thousand unknown steps waited for".to_owned(),
            submit(
                ws,
                steps(json!([{ "name": "a", "tool": "noop",
                "after": (0..1000).map(|i| format!("x{i}")).collect::<Vec<_>>() }])),
            ),
        ),
        (
            "too many steps".to_owned(),
            submit(
                ws,
                steps(Value::Array(
                    (0..=1000).map(|i| noop(&format!("s{i}"))).collect(),
                )),
            ),
        ),
        ("no steps".to_owned(), submit(ws, steps(json!([])))),
        (
            "a parameter of the wrong kind".to_owned(),
            submit(
                ws,
                json!({ "definition": { "steps": [noop("a")] }, "parameters": [1, 2] }),
            ),
        ),
        (
            "a reference that is not a name".to_owned(),
            submit(
                ws,
                json!({ "definition": { "parameters": [{ "name": "k" }],
                "steps": [{ "name": "a", "tool": "kmer-count", "settings": { "k": { "$param": 5 } } }] } }),
            ),
        ),
        (
            "a thousand unknown parameters".to_owned(),
            submit(
                ws,
                json!({ "definition": { "steps": [noop("a")] },
                "parameters": (0..1000).map(|i| (format!("p{i}"), json!(i))).collect::<serde_json::Map<_, _>>() }),
            ),
        ),
        (
            "negative maxCredits".to_owned(),
            submit(
                ws,
                json!({ "definition": { "steps": [noop("a")] }, "maxCredits": -1 }),
            ),
        ),
        (
            "both a template and a definition".to_owned(),
            submit(
                ws,
                json!({ "workflow": "protein-profile", "definition": { "steps": [noop("a")] } }),
            ),
        ),
        (
            "a URL input".to_owned(),
            submit(
                ws,
                json!({ "workflow": "protein-profile",
                "inputs": [{ "name": "dna", "url": "http://127.0.0.1/x.fa" }], "maxCredits": 10 }),
            ),
        ),
        (
            "a NUL input name".to_owned(),
            submit(
                ws,
                json!({ "workflow": "protein-profile",
                "inputs": [{ "name": "dna\u{0}", "text": ">a\nACGT\n" }], "maxCredits": 10 }),
            ),
        ),
        (
            "a huge map".to_owned(),
            submit(
                ws,
                steps(
                    json!([{ "name": "a", "tool": "concat-fasta", "map": "s".repeat(100_000),
                "inputs": [{ "input": "sequences", "from": "inputs.x" }] }]),
                ),
            ),
        ),
        (
            "a NUL in a map".to_owned(),
            submit(
                ws,
                json!({ "definition": {
                "inputs": [{ "name": "x", "kind": "FILE", "format": "FASTA", "list": true }],
                "steps": [{ "name": "a", "tool": "translate-dna", "map": "seq\u{0}uences",
                "inputs": [{ "input": "sequences", "from": "inputs.x" }] }] } }),
            ),
        ),
        (
            "a list of 1,001 items".to_owned(),
            submit(
                ws,
                json!({ "definition": {
                "inputs": [{ "name": "x", "kind": "TEXT", "list": true }],
                "steps": [{ "name": "a", "tool": "sleep", "map": "note",
                "inputs": [{ "input": "note", "from": "inputs.x" }] }] },
                "inputs": (0..1001).map(|i| json!({ "name": "x", "text": i.to_string() })).collect::<Vec<_>>() }),
            ),
        ),
        (
            "a list bound to one value".to_owned(),
            submit(
                ws,
                json!({ "definition": {
                "inputs": [{ "name": "x", "kind": "TEXT", "list": true }],
                "steps": [{ "name": "a", "tool": "sleep",
                "inputs": [{ "input": "note", "from": "inputs.x" }] }] } }),
            ),
        ),
        (
            "a workspace id of the wrong kind".to_owned(),
            Send::Post(
                SUBMIT.into(),
                json!({ "input": { "workspaceId": hostile.job,
                "definition": { "steps": [noop("a")] } } }),
            ),
        ),
    ];
    hostile.check(Expect::BadInput(""), bad_input).await;
    let refused = vec![
        (
            "settings nested 200 deep".to_owned(),
            submit(ws, steps(json!([{ "name": "a", "tool": "noop", "settings": nested(200) }]))),
        ),
        (
            "maxCredits past an Int, reserved".to_owned(),
            submit(ws, json!({ "workflow": "protein-profile", "inputs": [{ "name": "dna", "text": ">a\nACGT\n" }],
                "maxCredits": 2_147_483_648_i64 })),
        ),
        (
            "maxCredits a float".to_owned(),
            submit(ws, json!({ "definition": { "steps": [noop("a")] }, "maxCredits": 1.5 })),
        ),
        ("steps not a list".to_owned(), submit(ws, json!({ "definition": { "steps": "a" } }))),
        (
            "an input kind that does not exist".to_owned(),
            submit(ws, json!({ "definition": { "inputs": [{ "name": "x", "kind": "BLOB" }],
                "steps": [noop("a")] } })),
        ),
        (
            "cancel a job's id".to_owned(),
            Send::Post(
                "mutation($id: ID!) { cancelWorkflow(id: $id) { workflow { id } } }".into(),
                json!({ "id": hostile.job }),
            ),
        ),
        (
            "retry a malformed id".to_owned(),
            Send::Post(
                "mutation($id: ID!) { retryWorkflow(id: $id) { workflow { id } } }".into(),
                json!({ "id": "wf_\u{0}" }),
            ),
        ),
        (
            "delete a workspace's id".to_owned(),
            Send::Post(
                "mutation($id: ID!) { deleteWorkflow(id: $id) { deletedWorkflowId } }".into(),
                json!({ "id": ws }),
            ),
        ),
        (
            "rename to a huge name".to_owned(),
            Send::Post(
                "mutation($id: ID!, $name: String!) { renameWorkflow(id: $id, name: $name) { workflow { id } } }"
                    .into(),
                json!({ "id": "wf_0193a2b4c5d67e8f9a0b1c2d3e4f5a6b", "name": "n".repeat(100_000) }),
            ),
        ),
        (
            "an estimate nested 200 deep".to_owned(),
            Send::Post(
                "query($input: EstimateWorkflowCostInput!) { estimateWorkflowCost(input: $input) { total } }"
                    .into(),
                json!({ "input": { "definition": { "steps": [{ "name": "a", "tool": "noop",
                    "settings": nested(200) }] } } }),
            ),
        ),
    ];
    hostile.check(Expect::Refused, refused).await;
    assert_eq!(
        entity::workflow::Entity::find()
            .count(&hostile.app.db)
            .await
            .unwrap(),
        0,
        "a hostile submission was stored"
    );
    let reserved = entity::workspace::Entity::find()
        .all(&hostile.app.db)
        .await
        .unwrap();
    assert!(
        reserved.iter().all(|w| w.credits_reserved == 0),
        "credits were reserved"
    );
}

#[tokio::test]
async fn hostile_actions_on_a_workflow_are_refused_and_change_nothing() {
    let hostile = Hostile::spawn().await;
    let ws = hostile.ws.as_str();
    let data = hostile
        .app
        .ok(
            Some(&hostile.owner.token),
            SUBMIT,
            json!({ "input": { "workspaceId": ws, "definition": {
                "parameters": [{ "name": "k", "default": 1 }],
                "steps": [{ "name": "a", "tool": "noop" }] } } }),
        )
        .await;
    let wf = data["submitWorkflow"]["workflow"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let duplicate = |rest: Value| {
        let mut input = rest;
        input["workflowId"] = json!(wf);
        Send::Post(
            "mutation($input: DuplicateWorkflowInput!) { duplicateWorkflow(input: $input) { workflow { id } } }"
                .into(),
            json!({ "input": input }),
        )
    };
    let share = |visibility: &str, emails: Value| {
        Send::Post(
            "mutation($input: SetWorkflowSharingInput!) { setWorkflowSharing(input: $input) { workflow { id } } }"
                .into(),
            json!({ "input": { "workflowId": wf, "visibility": visibility, "invitedEmails": emails } }),
        )
    };
    let items = |offset: Value, limit: Value| {
        Send::Post(
            "query($id: ID!, $o: Int!, $l: Int!) { workflow(id: $id) { steps { itemJobs(offset: $o, limit: $l) { id } } } }"
                .into(),
            json!({ "id": wf, "o": offset, "l": limit }),
        )
    };
    let bad_input = vec![
        ("a duplicate named hugely".to_owned(), duplicate(json!({ "name": "n".repeat(100_000) }))),
        ("a duplicate of an unknown parameter".to_owned(), duplicate(json!({ "parameters": { "x\u{0}": 1 } }))),
        ("a duplicate's parameters a list".to_owned(), duplicate(json!({ "parameters": [1, 2] }))),
        (
            "settings of an unknown step".to_owned(),
            duplicate(json!({ "steps": [{ "step": "nope\u{0}", "settings": {} }] })),
        ),
        (
            "a thousand and one step overrides".to_owned(),
            duplicate(json!({ "steps": (0..1001).map(|i| json!({ "step": format!("s{i}"), "settings": {} })).collect::<Vec<_>>() })),
        ),
        ("a negative maxCredits".to_owned(), duplicate(json!({ "maxCredits": -1 }))),
        ("into a job's id".to_owned(), duplicate(json!({ "workspaceId": hostile.job }))),
        (
            "an input the workflow lacks".to_owned(),
            duplicate(json!({ "inputs": [{ "name": "dna\u{0}", "text": ">a\nACGT\n" }] })),
        ),
        (
            "101 invited e-mails".to_owned(),
            share("INVITED", json!((0..101).map(|i| format!("u{i}@example.org")).collect::<Vec<_>>())),
        ),
        ("a NUL e-mail".to_owned(), share("INVITED", json!(["a\u{0}@example.org"]))),
        ("a huge e-mail".to_owned(), share("INVITED", json!([format!("{}@example.org", "a".repeat(100_000))]))),
        ("INVITED without e-mails".to_owned(), share("INVITED", json!([]))),
        ("PUBLIC with e-mails".to_owned(), share("PUBLIC", json!(["a@example.org"]))),
        ("no item jobs".to_owned(), items(json!(0), json!(0))),
        ("a negative offset".to_owned(), items(json!(i32::MIN), json!(10))),
        ("a limit at the Int's edge".to_owned(), items(json!(0), json!(i32::MAX))),
        (
            "a huge idempotency key".to_owned(),
            submit(ws, json!({ "definition": { "steps": [{ "name": "a", "tool": "noop" }] },
                "idempotencyKey": "k".repeat(100_000) })),
        ),
        (
            "a NUL idempotency key".to_owned(),
            submit(ws, json!({ "definition": { "steps": [{ "name": "a", "tool": "noop" }] },
                "idempotencyKey": "k\u{0}" })),
        ),
        (
            "reuse estimated without a workspace".to_owned(),
            Send::Post(
                "query($input: EstimateWorkflowCostInput!) { estimateWorkflowCost(input: $input) { total } }"
                    .into(),
                json!({ "input": { "workflow": "protein-profile", "reuse": true,
                    "inputs": [{ "name": "dna", "text": ">a\nACGT\n" }] } }),
            ),
        ),
    ];
    hostile.check(Expect::BadInput(""), bad_input).await;
    let refused = vec![
        ("a duplicate's parameters nested 200 deep".to_owned(), duplicate(json!({ "parameters": { "k": nested(200) } }))),
        (
            "step settings nested 200 deep".to_owned(),
            duplicate(json!({ "steps": [{ "step": "a", "settings": nested(200) }] })),
        ),
        ("maxCredits at the most negative integer".to_owned(), duplicate(json!({ "maxCredits": i64::MIN }))),
        ("a visibility that does not exist".to_owned(), share("EVERYONE", json!([]))),
        ("e-mails not a list".to_owned(), share("INVITED", json!({ "a": 1 }))),
        ("a limit past an Int".to_owned(), items(json!(0), json!(2_147_483_648_i64))),
        ("an offset a float".to_owned(), items(json!(1.5), json!(10))),
        (
            "reuse a string".to_owned(),
            submit(ws, json!({ "definition": { "steps": [{ "name": "a", "tool": "noop" }] }, "reuse": "yes" })),
        ),
        (
            "share a job's id".to_owned(),
            Send::Post(
                "mutation($input: SetWorkflowSharingInput!) { setWorkflowSharing(input: $input) { workflow { id } } }"
                    .into(),
                json!({ "input": { "workflowId": hostile.job, "visibility": "PUBLIC" } }),
            ),
        ),
    ];
    hostile.check(Expect::Refused, refused).await;
    assert_eq!(
        entity::workflow::Entity::find()
            .count(&hostile.app.db)
            .await
            .unwrap(),
        1,
        "a hostile action stored a workflow"
    );
    assert_eq!(
        entity::workflow_share::Entity::find()
            .count(&hostile.app.db)
            .await
            .unwrap(),
        0,
        "a hostile action stored an invitation"
    );
}
