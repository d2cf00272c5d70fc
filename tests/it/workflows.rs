//! Workflows: graphs of steps run by real workers, over HTTP and websockets, charged against
//! one reservation.

use std::time::Duration;

use serde_json::{Value, json};

use crate::support::wait::eventually;
use crate::support::ws::Ws;
use crate::support::{TestApp, TestUser};

/// The built-in tools, plus a step that joins two files, one that fails, and one of a fixed
/// price that completes at once; and a workflow of the tools file.
const TOOLS: &str = r##"
[[tools]]
name = "join"
title = "Join two files"
version = "1"
timeout_seconds = 30
max_attempts = 1
inputs = [
  { name = "left", kind = "file", required = true },
  { name = "right", kind = "file", required = true },
]
outputs = [{ name = "joined", kind = "file", path = "joined.txt" }]
executor = { kind = "command", program = "sh", args = ["-c", "cat \"$1\" \"$2\" > outputs/joined.txt; echo '{}' > result.json", "join", "{input:left}", "{input:right}"] }
price = { base = 2 }

[[tools]]
name = "fail"
title = "Fail"
version = "1"
timeout_seconds = 30
max_attempts = 1
executor = { kind = "command", program = "sh", args = ["-c", "echo 'broken on purpose' >&2; exit 1"] }
price = { base = 3 }

# Five credits too, and tries again when its worker is lost.
[[tools]]
name = "steady"
title = "Steady"
version = "1"
timeout_seconds = 30
max_attempts = 5
executor = { kind = "builtin", function = "noop" }
price = { base = 5 }

[[tools]]
name = "five"
title = "Five credits"
version = "1"
timeout_seconds = 30
max_attempts = 1
executor = { kind = "builtin", function = "noop" }
price = { base = 5 }

# Fails until the file named by `marker` exists, which its first run creates.
[[tools]]
name = "fail-once"
title = "Fail once"
version = "1"
timeout_seconds = 30
max_attempts = 1
settings_schema = { type = "object", properties = { marker = { type = "string" } }, required = ["marker"] }
executor = { kind = "command", program = "sh", args = ["-c", "if [ -e \"$1\" ]; then echo '{}' > result.json; else touch \"$1\"; echo 'first run fails' >&2; exit 1; fi", "fail-once", "{setting:marker}"] }
price = { base = 2 }

[[workflows]]
name = "translate-and-count"
title = "Translate, then count k-mers"
inputs = [{ name = "dna", kind = "file", format = "fasta", required = true }]
parameters = [{ name = "k" }]

[[workflows.steps]]
name = "translate"
tool = "translate-dna"
inputs = { sequences = "inputs.dna" }

[[workflows.steps]]
name = "count"
tool = "kmer-count"
settings = { k = { "$param" = "k" } }
inputs = { sequences = "translate.proteins" }
"##;

const WORKFLOW_FIELDS: &str = "id name status errorMessage progress failFast
    credits { estimated reserved charged refunded maxCredits }
    steps { name tool status reason waitReason waitingFor dependsOn bindings { input from }
            job { id status creditCost refunded workflowStep workflow { id }
                  files { name sha256 role downloadUrl } } }
    edges { from to output input }";

const SUBMIT: &str = "mutation($input: SubmitWorkflowInput!) {
    submitWorkflow(input: $input) { workflow { id status credits { reserved estimated } } } }";

async fn spawn(workers: usize) -> TestApp {
    TestApp::spawn_with_tools(TOOLS, |config| config.server.workers = workers).await
}

/// The diamond: translate, then stats and k-mers of its proteins, then both joined.
fn diamond() -> Value {
    json!({
        "inputs": [{ "name": "dna", "kind": "FILE", "format": "FASTA", "required": true }],
        "parameters": [{ "name": "k", "default": 2 }],
        "steps": [
            { "name": "translate", "tool": "translate-dna",
              "inputs": [{ "input": "sequences", "from": "inputs.dna" }] },
            { "name": "stats", "tool": "sequence-stats",
              "inputs": [{ "input": "sequences", "from": "translate.proteins" }] },
            { "name": "kmers", "tool": "kmer-count", "settings": { "k": { "$param": "k" } },
              "inputs": [{ "input": "sequences", "from": "translate.proteins" }] },
            { "name": "join", "tool": "join",
              "inputs": [{ "input": "left", "from": "stats.table" },
                         { "input": "right", "from": "kmers.table" }] },
        ],
    })
}

const DNA: &str = ">gene1\nATGGCCATTGTAATGGGCCGCTGAAAGGGTGCCCGATAG\n>gene2\nATGAAACGCATTAGCACCACCATTACCACCACCATCACC\n";

async fn submit(app: &TestApp, user: &TestUser, ws: &str, input: Value) -> (Value, Value) {
    let mut input = input;
    input["workspaceId"] = json!(ws);
    let (_, body) = app
        .post(Some(&user.token), SUBMIT, json!({ "input": input }))
        .await;
    (body["data"]["submitWorkflow"]["workflow"].clone(), body)
}

async fn read(app: &TestApp, token: &str, id: &str) -> Value {
    let data = app
        .ok(
            Some(token),
            &format!("query($id: ID!) {{ workflow(id: $id) {{ {WORKFLOW_FIELDS} }} }}"),
            json!({ "id": id }),
        )
        .await;
    data["workflow"].clone()
}

async fn wait_ended(app: &TestApp, token: &str, id: &str) -> Value {
    eventually(Duration::from_secs(60), "a workflow to end", || async {
        let workflow = read(app, token, id).await;
        if workflow["status"] == "RUNNING" {
            Err(workflow)
        } else {
            Ok(workflow)
        }
    })
    .await
}

fn step<'a>(workflow: &'a Value, name: &str) -> &'a Value {
    workflow["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == name)
        .unwrap_or_else(|| panic!("no step {name} in {workflow}"))
}

fn file<'a>(job: &'a Value, role: &str, name: &str) -> &'a Value {
    job["files"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["role"] == role && (name.is_empty() || f["name"] == name))
        .unwrap_or_else(|| panic!("no {role} file {name} in {job}"))
}

async fn download(app: &TestApp, token: &str, url: &str) -> String {
    let response = app
        .client()
        .get(url)
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert!(response.status().is_success(), "{}", response.status());
    response.text().await.unwrap()
}

async fn reserved(app: &TestApp, ws: &str) -> i64 {
    let data = app
        .ok(
            Some(&app.admin_token),
            "query($id: ID!) { workspace(id: $id) { creditsReserved creditBalance } }",
            json!({ "id": ws }),
        )
        .await;
    data["workspace"]["creditsReserved"].as_i64().unwrap()
}

#[tokio::test]
async fn a_diamond_runs_each_step_on_its_upstream_outputs_and_is_charged_once_per_step() {
    let app = spawn(2).await;
    let (alice, ws) = app.setup("lab", 100).await;

    // Two steps are priced by the residues of proteins not made yet: `maxCredits` is needed,
    // and without it nothing is written.
    let (_, body) = submit(
        &app,
        &alice,
        &ws,
        json!({ "definition": diamond(), "inputs": [{ "name": "dna", "text": DNA }] }),
    )
    .await;
    assert_eq!(
        body["errors"][0]["extensions"]["code"], "BAD_USER_INPUT",
        "{body}"
    );
    assert_eq!(
        body["errors"][0]["extensions"]["field"], "maxCredits",
        "{body}"
    );
    assert_eq!(app.balance(&ws).await, 100);
    assert_eq!(reserved(&app, &ws).await, 0);

    let estimate = app
        .ok(
            Some(&alice.token),
            "query($input: EstimateWorkflowCostInput!) { estimateWorkflowCost(input: $input) {
                total complete reservation steps { step known dependsOnOutputs estimate { total } } } }",
            json!({ "input": { "definition": diamond(), "inputs": [{ "name": "dna", "text": DNA }], "maxCredits": 40 } }),
        )
        .await["estimateWorkflowCost"]
        .clone();
    assert_eq!(estimate["complete"], false, "{estimate}");
    assert_eq!(estimate["reservation"], 40);
    let known: Vec<_> = estimate["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s["step"].as_str().unwrap(), s["known"].as_bool().unwrap()))
        .collect();
    assert_eq!(
        known,
        [
            ("translate", true),
            ("stats", false),
            ("kmers", false),
            ("join", true)
        ]
    );

    let (workflow, body) = submit(
        &app,
        &alice,
        &ws,
        json!({ "definition": diamond(), "inputs": [{ "name": "dna", "text": DNA }],
                "maxCredits": 40, "parameters": { "k": 3 }, "name": "diamond" }),
    )
    .await;
    assert!(body["errors"].is_null(), "{body}");
    assert!(workflow["credits"]["reserved"].as_i64().unwrap() <= 40);
    let id = workflow["id"].as_str().unwrap().to_owned();

    let done = wait_ended(&app, &alice.token, &id).await;
    assert_eq!(done["status"], "COMPLETED", "{done}");
    assert_eq!(done["progress"], 1.0);
    for name in ["translate", "stats", "kmers", "join"] {
        let s = step(&done, name);
        assert_eq!(s["status"], "COMPLETED", "{s}");
        assert_eq!(s["job"]["status"], "COMPLETED", "{s}");
        assert_eq!(s["job"]["workflowStep"], name);
        assert_eq!(s["job"]["workflow"]["id"], id.as_str());
    }
    assert_eq!(step(&done, "join")["dependsOn"], json!(["kmers", "stats"]));
    assert_eq!(done["edges"].as_array().unwrap().len(), 4, "{done}");

    // Each step's inputs are its upstream's outputs, the same stored content.
    let translate = &step(&done, "translate")["job"];
    let proteins = file(translate, "OUTPUT", "proteins.fasta");
    for name in ["stats", "kmers"] {
        let input = file(&step(&done, name)["job"], "INPUT", "");
        assert_eq!(input["sha256"], proteins["sha256"], "{name}");
    }
    let stats_table = download(
        &app,
        &alice.token,
        file(&step(&done, "stats")["job"], "OUTPUT", "sequences.tsv")["downloadUrl"]
            .as_str()
            .unwrap(),
    )
    .await;
    let kmers_table = download(
        &app,
        &alice.token,
        file(&step(&done, "kmers")["job"], "OUTPUT", "kmers.tsv")["downloadUrl"]
            .as_str()
            .unwrap(),
    )
    .await;
    assert!(kmers_table.starts_with("kmer\tcount\n"), "{kmers_table}");
    let joined = download(
        &app,
        &alice.token,
        file(&step(&done, "join")["job"], "OUTPUT", "joined.txt")["downloadUrl"]
            .as_str()
            .unwrap(),
    )
    .await;
    assert_eq!(joined, format!("{stats_table}{kmers_table}"));

    // Charged once per step, what each step's job cost; the rest of the reservation given back.
    let costs: i64 = ["translate", "stats", "kmers", "join"]
        .iter()
        .map(|name| step(&done, name)["job"]["creditCost"].as_i64().unwrap())
        .sum();
    assert_eq!(done["credits"]["charged"], costs);
    assert_eq!(done["credits"]["reserved"], 0);
    assert_eq!(done["credits"]["refunded"], 0);
    assert_eq!(app.balance(&ws).await, 100 - costs);
    assert_eq!(reserved(&app, &ws).await, 0);
    // k-mers of length 3 cost 3 more than the base: the parameter reached the settings.
    let kmers = app
        .ok(
            Some(&alice.token),
            "query($id: ID!) { job(id: $id) { settings } }",
            json!({ "id": step(&done, "kmers")["job"]["id"] }),
        )
        .await;
    assert_eq!(kmers["job"]["settings"]["k"], 3);
}

#[tokio::test]
async fn a_failed_step_skips_only_its_dependents_and_is_refunded() {
    let app = spawn(2).await;
    let (alice, ws) = app.setup("lab", 100).await;
    let definition = json!({
        "steps": [
            { "name": "first", "tool": "five" },
            { "name": "broken", "tool": "fail", "after": ["first"] },
            { "name": "needs-broken", "tool": "five", "after": ["broken"] },
            { "name": "then-more", "tool": "five", "after": ["needs-broken"] },
            { "name": "independent", "tool": "five", "after": ["first"] },
        ],
    });
    let (workflow, body) = submit(&app, &alice, &ws, json!({ "definition": definition })).await;
    assert!(body["errors"].is_null(), "{body}");
    // Every price is known: the estimate is reserved, no more.
    assert_eq!(workflow["credits"]["reserved"], 5 + 3 + 5 + 5 + 5 - 5);
    let done = wait_ended(&app, &alice.token, workflow["id"].as_str().unwrap()).await;
    assert_eq!(done["status"], "FAILED", "{done}");
    assert!(
        done["errorMessage"].as_str().unwrap().contains("broken"),
        "{done}"
    );
    assert_eq!(step(&done, "first")["status"], "COMPLETED");
    assert_eq!(step(&done, "independent")["status"], "COMPLETED");
    let broken = step(&done, "broken");
    assert_eq!(broken["status"], "FAILED");
    assert_eq!(broken["job"]["refunded"], true);
    for skipped in ["needs-broken", "then-more"] {
        let s = step(&done, skipped);
        assert_eq!(s["status"], "SKIPPED", "{s}");
        assert!(s["job"].is_null(), "a skipped step has no job: {s}");
    }
    // Paid: first and independent; broken charged and refunded; the skipped never charged.
    assert_eq!(done["credits"]["charged"], 5 + 3 + 5);
    assert_eq!(done["credits"]["refunded"], 3);
    assert_eq!(done["credits"]["reserved"], 0);
    assert_eq!(app.balance(&ws).await, 100 - 10);
    assert_eq!(reserved(&app, &ws).await, 0);
}

#[tokio::test]
async fn failing_fast_cancels_the_running_steps() {
    let app = spawn(2).await;
    let (alice, ws) = app.setup("lab", 100).await;
    let definition = json!({
        "steps": [
            { "name": "long", "tool": "sleep", "settings": { "seconds": 30 } },
            { "name": "broken", "tool": "fail" },
            { "name": "after-long", "tool": "five", "after": ["long"] },
        ],
        "failFast": true,
    });
    let (workflow, body) = submit(&app, &alice, &ws, json!({ "definition": definition })).await;
    assert!(body["errors"].is_null(), "{body}");
    let done = wait_ended(&app, &alice.token, workflow["id"].as_str().unwrap()).await;
    assert_eq!(done["status"], "FAILED", "{done}");
    assert_eq!(done["failFast"], true);
    assert_eq!(step(&done, "broken")["status"], "FAILED");
    assert_eq!(step(&done, "long")["status"], "CANCELLED", "{done}");
    assert_eq!(step(&done, "long")["job"]["status"], "CANCELLED");
    assert_eq!(step(&done, "after-long")["status"], "SKIPPED");
    assert_eq!(done["credits"]["reserved"], 0);
    let spent = 31
        - if step(&done, "long")["job"]["refunded"] == true {
            31
        } else {
            0
        };
    assert_eq!(app.balance(&ws).await, 100 - spent);
    assert_eq!(reserved(&app, &ws).await, 0);
}

#[tokio::test]
async fn cancelling_a_workflow_stops_its_running_steps_and_never_charges_the_waiting_ones() {
    let app = spawn(1).await;
    let (alice, ws) = app.setup("lab", 100).await;
    let definition = json!({
        "steps": [
            { "name": "long", "tool": "sleep", "settings": { "seconds": 30 } },
            { "name": "next", "tool": "five", "after": ["long"] },
        ],
    });
    let (workflow, body) = submit(&app, &alice, &ws, json!({ "definition": definition })).await;
    assert!(body["errors"].is_null(), "{body}");
    let id = workflow["id"].as_str().unwrap().to_owned();
    assert_eq!(
        reserved(&app, &ws).await,
        5,
        "the waiting step's price stays reserved"
    );
    let running = eventually(Duration::from_secs(30), "the first step to run", || async {
        let workflow = read(&app, &alice.token, &id).await;
        let long = step(&workflow, "long").clone();
        if long["job"]["status"] == "PROCESSING" {
            Ok(workflow)
        } else {
            Err(workflow)
        }
    })
    .await;
    assert_eq!(step(&running, "next")["waitReason"], "WAITING_FOR_UPSTREAM");
    assert_eq!(step(&running, "next")["waitingFor"], json!(["long"]));

    let cancel = "mutation($id: ID!) { cancelWorkflow(id: $id) { workflow { status } } }";
    let data = app
        .ok(Some(&alice.token), cancel, json!({ "id": id }))
        .await;
    assert_eq!(data["cancelWorkflow"]["workflow"]["status"], "CANCELLED");
    let done = read(&app, &alice.token, &id).await;
    assert_eq!(step(&done, "long")["status"], "CANCELLED");
    assert_eq!(step(&done, "long")["job"]["status"], "CANCELLED");
    assert_eq!(step(&done, "next")["status"], "CANCELLED");
    assert!(step(&done, "next")["job"].is_null());
    // The running step used compute (not refunded, as for jobs); the waiting one cost nothing.
    assert_eq!(done["credits"]["charged"], 31);
    assert_eq!(done["credits"]["reserved"], 0);
    assert_eq!(app.balance(&ws).await, 100 - 31);
    assert_eq!(reserved(&app, &ws).await, 0);
    assert_eq!(
        app.error_code(Some(&alice.token), cancel, json!({ "id": id }))
            .await,
        "CONFLICT"
    );
}

#[tokio::test]
async fn bad_definitions_are_refused_naming_the_step_and_nothing_is_written() {
    let app = spawn(0).await;
    let (alice, ws) = app.setup("lab", 100).await;
    let cases = [
        (
            json!({ "steps": [
                { "name": "a", "tool": "five", "after": ["b"] },
                { "name": "b", "tool": "five", "after": ["a"] } ] }),
            "steps.a.inputs",
        ),
        (
            json!({ "inputs": [{ "name": "dna", "kind": "FILE", "format": "FASTA" }],
                "steps": [
                { "name": "t", "tool": "translate-dna", "inputs": [{ "input": "sequences", "from": "inputs.dna" }] },
                { "name": "s", "tool": "sequence-stats", "inputs": [{ "input": "sequences", "from": "t.peptides" }] } ] }),
            "steps.s.inputs.sequences",
        ),
        (
            json!({ "inputs": [{ "name": "dna", "kind": "FILE", "format": "FASTA" }],
                "steps": [
                { "name": "k", "tool": "kmer-count", "inputs": [{ "input": "sequences", "from": "inputs.dna" }] },
                { "name": "s", "tool": "sequence-stats", "inputs": [{ "input": "sequences", "from": "k.table" }] } ] }),
            "steps.s.inputs.sequences",
        ),
        (
            json!({ "steps": [{ "name": "j", "tool": "join", "inputs": [{ "input": "left", "from": "nowhere.out" }] }] }),
            "steps.j.inputs.left",
        ),
        (
            json!({ "steps": [{ "name": "k", "tool": "five", "settings": { "nope": 1 }, "after": [] },
                              { "name": "k", "tool": "five" }] }),
            "steps.k.name",
        ),
        (
            json!({ "steps": (0..=1000).map(|i| json!({ "name": format!("s{i}"), "tool": "five" })).collect::<Vec<_>>() }),
            "steps",
        ),
    ];
    for (definition, field) in cases {
        let (_, body) = submit(&app, &alice, &ws, json!({ "definition": definition })).await;
        assert_eq!(
            body["errors"][0]["extensions"]["code"], "BAD_USER_INPUT",
            "{body}"
        );
        assert_eq!(body["errors"][0]["extensions"]["field"], field, "{body}");
    }
    let (_, body) = submit(&app, &alice, &ws, json!({ "workflow": "nope" })).await;
    assert_eq!(
        body["errors"][0]["extensions"]["field"], "workflow",
        "{body}"
    );
    let listed = app
        .ok(
            Some(&alice.token),
            "query($id: ID!) { workspace(id: $id) { workflows { edges { node { id } } } jobs { edges { node { id } } } } }",
            json!({ "id": ws }),
        )
        .await;
    assert_eq!(listed["workspace"]["workflows"]["edges"], json!([]));
    assert_eq!(listed["workspace"]["jobs"]["edges"], json!([]));
    assert_eq!(app.balance(&ws).await, 100);
    assert_eq!(reserved(&app, &ws).await, 0);
}

#[tokio::test]
async fn concurrent_submissions_never_reserve_more_than_the_balance() {
    let app = spawn(0).await;
    let (alice, ws) = app.setup("lab", 50).await;
    // Two steps of five: ten reserved each, five of it charged at once.
    let definition = json!({ "steps": [
        { "name": "a", "tool": "five" },
        { "name": "b", "tool": "five", "after": ["a"] } ] });
    let submissions = (0..200).map(|_| {
        let (app, alice, ws, definition) = (&app, &alice, &ws, definition.clone());
        async move {
            submit(app, alice, ws, json!({ "definition": definition }))
                .await
                .1
        }
    });
    let answers = futures_util::future::join_all(submissions).await;
    let accepted = answers.iter().filter(|b| b["errors"].is_null()).count();
    for body in answers.iter().filter(|b| !b["errors"].is_null()) {
        assert_eq!(
            body["errors"][0]["extensions"]["code"], "INSUFFICIENT_CREDITS",
            "{body}"
        );
    }
    assert_eq!(accepted, 5);
    assert_eq!(app.balance(&ws).await, 25);
    assert_eq!(reserved(&app, &ws).await, 25);
    // The reserved credits are not for other jobs.
    assert_eq!(
        app.error_code(
            Some(&alice.token),
            "mutation($ws: ID!) { submitJob(input: {workspaceId: $ws, tool: \"five\"}) { job { id } } }",
            json!({ "ws": ws }),
        )
        .await,
        "INSUFFICIENT_CREDITS"
    );
}

#[tokio::test]
async fn a_tools_file_workflow_runs_by_name_with_its_parameters() {
    let app = spawn(1).await;
    let (alice, ws) = app.setup("lab", 100).await;
    let templates = app
        .ok(
            Some(&alice.token),
            "{ workflowTemplates { name title } }",
            json!({}),
        )
        .await;
    assert_eq!(
        templates["workflowTemplates"],
        json!([
            { "name": "protein-profile", "title": "Protein profile" },
            { "name": "chunked-translation", "title": "Chunked translation" },
            { "name": "translate-and-count", "title": "Translate, then count k-mers" },
        ])
    );
    // `k` has no default.
    let (_, body) = submit(
        &app,
        &alice,
        &ws,
        json!({ "workflow": "translate-and-count", "inputs": [{ "name": "dna", "text": DNA }], "maxCredits": 20 }),
    )
    .await;
    assert_eq!(
        body["errors"][0]["extensions"]["field"], "parameters.k",
        "{body}"
    );
    let (workflow, body) = submit(
        &app,
        &alice,
        &ws,
        json!({ "workflow": "translate-and-count", "inputs": [{ "name": "dna", "text": DNA }],
                "maxCredits": 20, "parameters": { "k": 2 } }),
    )
    .await;
    assert!(body["errors"].is_null(), "{body}");
    let done = wait_ended(&app, &alice.token, workflow["id"].as_str().unwrap()).await;
    assert_eq!(done["status"], "COMPLETED", "{done}");
    assert!(
        done["name"]
            .as_str()
            .unwrap()
            .starts_with("Translate, then count k-mers")
    );
}

#[tokio::test]
async fn outsiders_see_nothing_and_members_cancel_only_their_own() {
    let app = spawn(0).await;
    let (alice, ws) = app.setup("lab", 100).await;
    let bob = app.user("bob@lab.test").await;
    let eve = app.user("eve@elsewhere.test").await;
    app.add_member(&alice, &ws, &bob, "MEMBER").await;
    let definition = json!({ "steps": [{ "name": "a", "tool": "five" }, { "name": "b", "tool": "five", "after": ["a"] }] });
    let (workflow, _) = submit(&app, &alice, &ws, json!({ "definition": definition })).await;
    let id = workflow["id"].as_str().unwrap();
    let query = "query($id: ID!) { workflow(id: $id) { id viewerCanCancel } }";
    assert_eq!(
        app.error_code(Some(&eve.token), query, json!({ "id": id }))
            .await,
        "NOT_FOUND"
    );
    let node = app
        .post(
            Some(&eve.token),
            "query($id: ID!) { node(id: $id) { id } }",
            json!({ "id": id }),
        )
        .await
        .1;
    assert_eq!(
        node["errors"][0]["extensions"]["code"], "NOT_FOUND",
        "{node}"
    );
    let cancel = "mutation($id: ID!) { cancelWorkflow(id: $id) { workflow { status } } }";
    assert_eq!(
        app.error_code(Some(&eve.token), cancel, json!({ "id": id }))
            .await,
        "NOT_FOUND"
    );
    let seen = app.ok(Some(&bob.token), query, json!({ "id": id })).await;
    assert_eq!(seen["workflow"]["viewerCanCancel"], false);
    assert_eq!(
        app.error_code(Some(&bob.token), cancel, json!({ "id": id }))
            .await,
        "FORBIDDEN"
    );
    let mine = app.ok(Some(&alice.token), query, json!({ "id": id })).await;
    assert_eq!(mine["workflow"]["viewerCanCancel"], true);
    // A step's job is deleted with its workflow, never alone.
    let first = read(&app, &alice.token, id).await;
    let job = step(&first, "a")["job"]["id"].clone();
    app.ok(Some(&alice.token), cancel, json!({ "id": id }))
        .await;
    assert_eq!(
        app.error_code(
            Some(&alice.token),
            "mutation($id: ID!) { deleteJob(input: {jobId: $id}) { deletedJobId } }",
            json!({ "id": job }),
        )
        .await,
        "CONFLICT"
    );
}

#[tokio::test]
async fn workflow_updated_streams_each_step_until_the_end() {
    let app = spawn(2).await;
    let (alice, ws) = app.setup("lab", 100).await;
    let definition = json!({ "steps": [
        { "name": "a", "tool": "sleep", "settings": { "seconds": 0.2, "stages": ["Working"] } },
        { "name": "b", "tool": "five", "after": ["a"] },
        { "name": "c", "tool": "five", "after": ["a"] } ] });
    let (workflow, body) = submit(&app, &alice, &ws, json!({ "definition": definition })).await;
    assert!(body["errors"].is_null(), "{body}");
    let id = workflow["id"].as_str().unwrap();
    let mut ws_client = Ws::connect(app.addr, Some(&alice.token)).await;
    ws_client
        .subscribe(
            "w",
            "subscription($id: ID!) { workflowUpdated(id: $id) { status steps { name status } } }",
            json!({ "id": id }),
        )
        .await;
    let mut seen = Vec::new();
    loop {
        let data = ws_client.next_data("w").await;
        let update = data["workflowUpdated"].clone();
        seen.push(update.clone());
        if update["status"] != "RUNNING" {
            break;
        }
    }
    let last = seen.last().unwrap();
    assert_eq!(last["status"], "COMPLETED", "{seen:?}");
    assert!(
        last["steps"]
            .as_array()
            .unwrap()
            .iter()
            .all(|s| s["status"] == "COMPLETED"),
        "{last}"
    );
    assert!(seen.len() >= 2, "the first state, then changes: {seen:?}");
}

#[tokio::test]
async fn a_retry_reruns_only_what_did_not_complete_and_charges_only_that() {
    let app = spawn(2).await;
    let (alice, ws) = app.setup("lab", 100).await;
    let marker = tempfile::tempdir().unwrap();
    let marker = marker.path().join("ran").display().to_string();
    let definition = json!({
        "parameters": [{ "name": "marker" }],
        "steps": [
            { "name": "a", "tool": "five" },
            { "name": "b", "tool": "fail-once", "settings": { "marker": { "$param": "marker" } }, "after": ["a"] },
            { "name": "c", "tool": "five", "after": ["b"] },
            { "name": "d", "tool": "five", "after": ["a"] },
        ],
    });
    let (first, body) = submit(
        &app,
        &alice,
        &ws,
        json!({ "definition": definition, "parameters": { "marker": marker } }),
    )
    .await;
    assert!(body["errors"].is_null(), "{body}");
    let first_id = first["id"].as_str().unwrap().to_owned();
    let failed = wait_ended(&app, &alice.token, &first_id).await;
    assert_eq!(failed["status"], "FAILED", "{failed}");
    assert_eq!(step(&failed, "c")["status"], "SKIPPED");
    assert_eq!(app.balance(&ws).await, 100 - 10);

    let retry = "mutation($id: ID!) { retryWorkflow(id: $id) { workflow { id status credits { reserved } } } }";
    let data = app
        .ok(Some(&alice.token), retry, json!({ "id": first_id }))
        .await;
    let second_id = data["retryWorkflow"]["workflow"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    // Only b and c are left to pay for.
    assert_eq!(
        data["retryWorkflow"]["workflow"]["credits"]["reserved"],
        2 + 5 - 2
    );
    let done = wait_ended(&app, &alice.token, &second_id).await;
    assert_eq!(done["status"], "COMPLETED", "{done}");
    let lineage = app
        .ok(
            Some(&alice.token),
            "query($id: ID!) { workflow(id: $id) { parent { id } parentKind
                steps { name job { creditCost reusedFrom { id } } } } }",
            json!({ "id": second_id }),
        )
        .await;
    assert_eq!(lineage["workflow"]["parent"]["id"], first_id.as_str());
    assert_eq!(lineage["workflow"]["parentKind"], "RETRY");
    for (name, reused) in [("a", true), ("b", false), ("c", false), ("d", true)] {
        let s = step(&lineage["workflow"], name);
        assert_eq!(s["job"]["reusedFrom"].is_null(), !reused, "{s}");
        if reused {
            assert_eq!(s["job"]["creditCost"], 0, "{s}");
            assert_eq!(
                s["job"]["reusedFrom"]["id"],
                step(&failed, name)["job"]["id"]
            );
        }
    }
    assert_eq!(done["credits"]["charged"], 2 + 5);
    assert_eq!(app.balance(&ws).await, 100 - 10 - 7);
    assert_eq!(reserved(&app, &ws).await, 0);
    // A completed workflow is not retried.
    assert_eq!(
        app.error_code(Some(&alice.token), retry, json!({ "id": second_id }))
            .await,
        "CONFLICT"
    );
}

#[tokio::test]
async fn an_ended_workflow_is_renamed_and_deleted_with_its_jobs_and_files() {
    let app = spawn(1).await;
    let (alice, ws) = app.setup("lab", 100).await;
    let (workflow, body) = submit(
        &app,
        &alice,
        &ws,
        json!({ "definition": diamond(), "inputs": [{ "name": "dna", "text": DNA }], "maxCredits": 40 }),
    )
    .await;
    assert!(body["errors"].is_null(), "{body}");
    let id = workflow["id"].as_str().unwrap().to_owned();
    let delete = "mutation($id: ID!) { deleteWorkflow(id: $id) { deletedWorkflowId } }";
    let running = read(&app, &alice.token, &id).await;
    if running["status"] == "RUNNING" {
        assert_eq!(
            app.error_code(Some(&alice.token), delete, json!({ "id": id }))
                .await,
            "CONFLICT"
        );
    }
    let done = wait_ended(&app, &alice.token, &id).await;
    assert_eq!(done["status"], "COMPLETED", "{done}");
    let renamed = app
        .ok(
            Some(&alice.token),
            "mutation($id: ID!) { renameWorkflow(id: $id, name: \"assembly 7\") { workflow { name } } }",
            json!({ "id": id }),
        )
        .await;
    assert_eq!(renamed["renameWorkflow"]["workflow"]["name"], "assembly 7");
    let export = app
        .ok(
            Some(&alice.token),
            "query($id: ID!) { workflow(id: $id) { exportJson } }",
            json!({ "id": id }),
        )
        .await;
    assert_eq!(
        export["workflow"]["exportJson"]["steps"]
            .as_array()
            .unwrap()
            .len(),
        4
    );
    let balance = app.balance(&ws).await;
    app.ok(Some(&alice.token), delete, json!({ "id": id }))
        .await;
    let query = "query($id: ID!) { workflow(id: $id) { id } }";
    assert_eq!(
        app.error_code(Some(&alice.token), query, json!({ "id": id }))
            .await,
        "NOT_FOUND"
    );
    let job = step(&done, "join")["job"]["id"].clone();
    assert_eq!(
        app.error_code(
            Some(&alice.token),
            "query($id: ID!) { job(id: $id) { id } }",
            json!({ "id": job })
        )
        .await,
        "NOT_FOUND"
    );
    let id = jobgraph::ids::decode::<entity::ids::WorkspaceId>("ws", &ws).unwrap();
    let stored = app
        .state
        .files
        .storage
        .list(&jobgraph::files::workspace_prefix(id))
        .await
        .unwrap();
    assert!(
        stored.is_empty(),
        "every file of the workflow is gone: {stored:?}"
    );
    // The ledger keeps what was paid.
    assert_eq!(app.balance(&ws).await, balance);
}

#[tokio::test]
async fn worker_processes_killed_mid_workflow_lose_no_step_and_run_none_twice() {
    use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};
    let app = spawn(0).await;
    let (alice, ws) = app.setup("lab", 1000).await;
    // A chain of twenty steps, ten more fanned out from its first, and one that waits for all.
    let mut steps = vec![json!({ "name": "s0", "tool": "steady" })];
    for i in 1..20 {
        steps.push(
            json!({ "name": format!("s{i}"), "tool": "steady", "after": [format!("s{}", i - 1)] }),
        );
    }
    for i in 0..10 {
        steps.push(json!({ "name": format!("p{i}"), "tool": "steady", "after": ["s0"] }));
    }
    let mut all: Vec<String> = (0..10).map(|i| format!("p{i}")).collect();
    all.push("s19".to_owned());
    steps.push(json!({ "name": "end", "tool": "steady", "after": all }));
    let count = steps.len() as i64;
    let (workflow, body) = submit(
        &app,
        &alice,
        &ws,
        json!({ "definition": { "steps": steps } }),
    )
    .await;
    assert!(body["errors"].is_null(), "{body}");
    let id = workflow["id"].as_str().unwrap().to_owned();

    // Worker processes on the same database, each killed without a word after a moment.
    let tools = app.state.config.tools_file.clone().unwrap();
    for round in 0..8u64 {
        let mut worker = std::process::Command::new(env!("CARGO_BIN_EXE_jobgraph"))
            .args(["worker", "--workers", "4", "--lease-seconds", "3"])
            .arg("--tools-file")
            .arg(&tools)
            .arg("--database-url")
            .arg(&app.database_url)
            .env(
                "JOBGRAPH_DATA_DIR",
                app.state.data_dir.join(format!("killed-{round}")),
            )
            .env_remove("RUST_LOG")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        tokio::time::sleep(Duration::from_millis(150 + 70 * round)).await;
        worker.kill().unwrap();
        worker.wait().unwrap();
    }

    // A last worker finishes what is left, reclaiming what the killed ones held.
    let mut config = jobgraph::Config::defaults();
    config.database.database_url = Some(app.database_url.clone());
    config.server.tools_file = Some(tools);
    config.server.workers = 4;
    config.server.lease_seconds = 3;
    let other = jobgraph::App::build(config).await.unwrap();
    let mut rescuer = other.worker();
    rescuer.config.poll = Duration::from_millis(50);
    let shutdown = tokio_util::sync::CancellationToken::new();
    let handle = tokio::spawn(rescuer.run(shutdown.clone()));
    let done = wait_ended(&app, &alice.token, &id).await;
    shutdown.cancel();
    handle.await.unwrap();
    assert_eq!(done["status"], "COMPLETED", "{done}");

    // One job per step, each charged once; the reservation fully used and released.
    let workflow_id = jobgraph::ids::decode::<entity::ids::WorkflowId>("id", &id).unwrap();
    let jobs = entity::job::Entity::find()
        .filter(entity::job::Column::WorkflowId.eq(workflow_id))
        .all(&app.db)
        .await
        .unwrap();
    assert_eq!(jobs.len() as i64, count, "no step lost or written twice");
    let mut names: Vec<_> = jobs
        .iter()
        .map(|j| j.workflow_step.clone().unwrap())
        .collect();
    names.sort();
    names.dedup();
    assert_eq!(names.len() as i64, count);
    let charges = entity::credit_transaction::Entity::find()
        .filter(entity::credit_transaction::Column::JobId.is_in(jobs.iter().map(|j| j.id)))
        .all(&app.db)
        .await
        .unwrap();
    assert_eq!(charges.len() as i64, count, "{charges:?}");
    assert_eq!(done["credits"]["charged"], 5 * count);
    assert_eq!(app.balance(&ws).await, 1000 - 5 * count);
    assert_eq!(reserved(&app, &ws).await, 0);
}

#[tokio::test]
async fn a_workflow_racing_its_own_cancel_ends_whole_and_pays_each_step_once() {
    let app = spawn(4).await;
    let (alice, ws) = app.setup("lab", 10_000).await;
    let cancel = "mutation($id: ID!) { cancelWorkflow(id: $id) { workflow { status } } }";
    let mut paid = 0;
    // Cancels sent at once, and while the fan-out's steps complete by the dozen.
    for delay in [0, 15, 40, 100] {
        let mut steps = vec![json!({ "name": "source", "tool": "five" })];
        let middle: Vec<String> = (0..60).map(|i| format!("m{i}")).collect();
        for name in &middle {
            steps.push(json!({ "name": name, "tool": "five", "after": ["source"] }));
        }
        steps.push(json!({ "name": "sink", "tool": "five", "after": middle }));
        let (workflow, body) = submit(
            &app,
            &alice,
            &ws,
            json!({ "definition": { "steps": steps } }),
        )
        .await;
        assert!(body["errors"].is_null(), "{body}");
        let id = workflow["id"].as_str().unwrap().to_owned();
        tokio::time::sleep(Duration::from_millis(delay)).await;
        let (_, body) = app
            .post(Some(&alice.token), cancel, json!({ "id": id }))
            .await;
        // Cancelled, or it had ended first.
        if !body["errors"].is_null() {
            assert_eq!(
                body["errors"][0]["extensions"]["code"], "CONFLICT",
                "{body}"
            );
        }
        let done = wait_ended(&app, &alice.token, &id).await;
        assert!(
            ["CANCELLED", "COMPLETED"].contains(&done["status"].as_str().unwrap()),
            "{done}"
        );
        // Every step ended, and so did every job it had; each was charged once.
        let mut charged = 0;
        let mut refunded = 0;
        for step in done["steps"].as_array().unwrap() {
            assert!(
                ["COMPLETED", "CANCELLED"].contains(&step["status"].as_str().unwrap()),
                "{step}"
            );
            if step["job"].is_null() {
                assert_eq!(step["status"], "CANCELLED", "{step}");
                continue;
            }
            let status = step["job"]["status"].as_str().unwrap();
            assert!(["COMPLETED", "CANCELLED"].contains(&status), "{step}");
            charged += step["job"]["creditCost"].as_i64().unwrap();
            if step["job"]["refunded"] == true {
                refunded += step["job"]["creditCost"].as_i64().unwrap();
            }
        }
        assert_eq!(done["credits"]["charged"], charged, "{done}");
        assert_eq!(done["credits"]["refunded"], refunded, "{done}");
        assert_eq!(done["credits"]["reserved"], 0);
        paid += charged - refunded;
    }
    assert_eq!(app.balance(&ws).await, 10_000 - paid);
    assert_eq!(reserved(&app, &ws).await, 0);
}
