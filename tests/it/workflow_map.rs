//! Mapped and gathering workflow steps: a step run once per item of a list (an upload set, a
//! FILES output, a mapped step's outputs) and a step taking all of them as one list input, run
//! by real workers over HTTP.

use std::time::Duration;

use serde_json::{Value, json};

use crate::support::TestApp;
use crate::support::wait::eventually;

/// The built-in tools, plus a step that fails on an item holding `BAD` and takes its time on
/// the others, and one that writes more files than a step may map over.
const TOOLS: &str = r##"
[[tools]]
name = "picky"
title = "Fails on BAD"
version = "1"
timeout_seconds = 30
max_attempts = 1
inputs = [{ name = "item", kind = "file", required = true }]
outputs = [{ name = "copy", kind = "file", path = "copy.txt" }]
executor = { kind = "command", program = "sh", args = ["-c", "if grep -q BAD \"$1\"; then echo 'bad item' >&2; exit 1; fi; sleep 3; cp \"$1\" outputs/copy.txt; echo '{}' > result.json", "picky", "{input:item}"] }
price = { base = 4 }

[[tools]]
name = "many"
title = "Writes 1,001 files"
version = "1"
timeout_seconds = 60
max_attempts = 1
outputs = [{ name = "parts", kind = "files", path = "part-*.txt" }]
executor = { kind = "command", program = "sh", args = ["-c", "i=1000; while [ $i -le 2000 ]; do echo $i > outputs/part-$i.txt; i=$((i+1)); done; echo '{}' > result.json"] }
price = { base = 1 }

[[tools]]
name = "lines"
title = "Counts the lines of every item"
version = "1"
timeout_seconds = 30
max_attempts = 1
inputs = [{ name = "items", kind = "file", list = true, required = true }]
outputs = [{ name = "count", kind = "field", field = "lines" }]
executor = { kind = "command", program = "sh", args = ["-c", "n=$(cat \"$1\"/* | wc -l); echo \"{\\\"lines\\\": $n, \\\"items\\\": $(ls \"$1\" | wc -l)}\" > result.json", "lines", "{input:items}"] }
price = { base = 1 }
"##;

const FIELDS: &str = "id status errorMessage
    credits { estimated reserved charged refunded }
    steps { name status reason map items itemsLeft estimate estimateKnown
            job { id status creditCost result files { name sha256 role downloadUrl } }
            itemJobs(limit: 1000) { id status creditCost refunded workflowItem workflowStep
                                    files { name sha256 role downloadUrl } } }";

async fn spawn() -> TestApp {
    TestApp::spawn_with_tools(TOOLS, |config| config.server.workers = 3).await
}

async fn read(app: &TestApp, token: &str, id: &str) -> Value {
    app.ok(
        Some(token),
        &format!("query($id: ID!) {{ workflow(id: $id) {{ {FIELDS} }} }}"),
        json!({ "id": id }),
    )
    .await["workflow"]
        .clone()
}

async fn wait_ended(app: &TestApp, token: &str, id: &str) -> Value {
    eventually(Duration::from_secs(90), "a workflow to end", || async {
        let workflow = read(app, token, id).await;
        if workflow["status"] == "RUNNING" {
            Err(workflow)
        } else {
            Ok(workflow)
        }
    })
    .await
}

async fn submit(app: &TestApp, token: &str, input: Value) -> Value {
    let (_, body) = app
        .post(
            Some(token),
            "mutation($input: SubmitWorkflowInput!) {
                submitWorkflow(input: $input) { workflow { id status } } }",
            json!({ "input": input }),
        )
        .await;
    body
}

fn step<'a>(workflow: &'a Value, name: &str) -> &'a Value {
    workflow["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == name)
        .unwrap_or_else(|| panic!("no step {name} in {workflow}"))
}

fn files<'a>(job: &'a Value, role: &str) -> Vec<&'a Value> {
    job["files"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["role"] == role)
        .collect()
}

async fn download(app: &TestApp, token: &str, file: &Value) -> String {
    let response = app
        .client()
        .get(file["downloadUrl"].as_str().unwrap())
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert!(response.status().is_success(), "{}", response.status());
    response.text().await.unwrap()
}

/// The credits every job of a workflow cost, less what was refunded.
fn paid(workflow: &Value) -> i64 {
    let mut paid = 0;
    for step in workflow["steps"].as_array().unwrap() {
        if !step["job"].is_null() {
            paid += step["job"]["creditCost"].as_i64().unwrap();
        }
        for job in step["itemJobs"].as_array().unwrap() {
            if job["refunded"] != true {
                paid += job["creditCost"].as_i64().unwrap();
            }
        }
    }
    paid
}

const DNA: &str = ">g1\nATGGCCATTGTAATGGGC\n>g2\nATGAAACGCATTAGCACC\n>g3\nATGTTTTTTTAA\n";

#[tokio::test]
async fn chunks_are_mapped_one_job_each_and_gathered_in_order() {
    let app = spawn().await;
    let (alice, ws) = app.setup("lab", 200).await;

    // The tools file's workflow: split, translate each chunk, join, describe.
    let body = submit(
        &app,
        &alice.token,
        json!({ "workspaceId": ws, "workflow": "chunked-translation",
                "inputs": [{ "name": "dna", "text": DNA }], "maxCredits": 100 }),
    )
    .await;
    assert!(body["errors"].is_null(), "{body}");
    let id = body["data"]["submitWorkflow"]["workflow"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let done = wait_ended(&app, &alice.token, &id).await;
    assert_eq!(done["status"], "COMPLETED", "{done}");

    // One chunk per sequence, one translation job per chunk, in chunk order.
    let split = step(&done, "split");
    let chunks = files(&split["job"], "OUTPUT");
    let names: Vec<_> = chunks.iter().map(|f| f["name"].as_str().unwrap()).collect();
    assert_eq!(
        names,
        ["chunk-0001.fasta", "chunk-0002.fasta", "chunk-0003.fasta"]
    );
    let translate = step(&done, "translate");
    assert_eq!(translate["map"], "sequences");
    assert_eq!(translate["items"], 3, "{translate}");
    assert_eq!(translate["itemsLeft"], 0);
    assert!(translate["job"].is_null());
    let items = translate["itemJobs"].as_array().unwrap();
    assert_eq!(items.len(), 3);
    for (i, job) in items.iter().enumerate() {
        assert_eq!(job["status"], "COMPLETED");
        assert_eq!(job["workflowItem"], i);
        assert_eq!(job["workflowStep"], "translate");
        // Each job's input is its chunk, the same stored content.
        assert_eq!(files(job, "INPUT")[0]["sha256"], chunks[i]["sha256"]);
    }

    // The join took every translation's proteins, in item order, as one list input.
    let join = &step(&done, "join")["job"];
    let inputs = files(join, "INPUT");
    assert_eq!(inputs.len(), 3);
    let mut expected = String::new();
    for job in items {
        expected.push_str(&download(&app, &alice.token, files(job, "OUTPUT")[0]).await);
    }
    let combined = download(&app, &alice.token, files(join, "OUTPUT")[0]).await;
    assert_eq!(combined, expected);
    assert_eq!(combined.matches('>').count(), 3, "{combined}");
    assert_eq!(step(&done, "stats")["job"]["result"]["count"], 3);

    // Each job charged once against the reservation, the rest given back.
    let paid = paid(&done);
    assert_eq!(done["credits"]["charged"], paid, "{done}");
    assert_eq!(done["credits"]["reserved"], 0);
    assert_eq!(app.balance(&ws).await, 200 - paid);
}

/// Translates each file of an upload set, then joins the proteins.
fn translate_each() -> Value {
    json!({
        "inputs": [{ "name": "genomes", "kind": "FILE", "format": "FASTA", "list": true, "required": true }],
        "steps": [
            { "name": "translate", "tool": "translate-dna", "map": "sequences",
              "inputs": [{ "input": "sequences", "from": "inputs.genomes" }] },
            { "name": "join", "tool": "concat-fasta",
              "inputs": [{ "input": "sequences", "from": "translate.proteins" }] },
        ],
    })
}

#[tokio::test]
async fn an_upload_set_is_mapped_at_its_estimated_price() {
    let app = spawn().await;
    let (alice, ws) = app.setup("lab", 100).await;
    let genomes: Vec<Value> = [">a\nATGGCC\n", ">b\nATGAAA\n>c\nATGTTT\n", ">d\nATG\n"]
        .iter()
        .map(|text| json!({ "name": "genomes", "text": text }))
        .collect();

    // Every item is known at submission: the estimate is whole, one run per item.
    let estimate = app
        .ok(
            Some(&alice.token),
            "query($input: EstimateWorkflowCostInput!) { estimateWorkflowCost(input: $input) {
                total complete steps { step known estimate { total breakdown { label quantity amount } } } } }",
            json!({ "input": { "definition": translate_each(), "inputs": genomes } }),
        )
        .await["estimateWorkflowCost"]
        .clone();
    assert_eq!(estimate["complete"], true, "{estimate}");
    let translate = &estimate["steps"][0];
    // Three runs of base 1 plus one credit per thousand residues started: 6.
    assert_eq!(translate["estimate"]["total"], 6, "{estimate}");
    assert_eq!(translate["estimate"]["breakdown"][0]["quantity"], 3);

    let body = submit(
        &app,
        &alice.token,
        json!({ "workspaceId": ws, "definition": translate_each(), "inputs": genomes }),
    )
    .await;
    assert!(body["errors"].is_null(), "{body}");
    let id = body["data"]["submitWorkflow"]["workflow"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let workflow = app
        .ok(
            Some(&alice.token),
            "query($id: ID!) { workflow(id: $id) { inputs { name item text } } }",
            json!({ "id": id }),
        )
        .await;
    let items: Vec<_> = workflow["workflow"]["inputs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| (i["name"].as_str().unwrap(), i["item"].as_i64().unwrap()))
        .collect();
    assert_eq!(items, [("genomes", 0), ("genomes", 1), ("genomes", 2)]);

    let done = wait_ended(&app, &alice.token, &id).await;
    assert_eq!(done["status"], "COMPLETED", "{done}");
    assert_eq!(step(&done, "translate")["items"], 3);
    let combined = download(
        &app,
        &alice.token,
        files(&step(&done, "join")["job"], "OUTPUT")[0],
    )
    .await;
    assert_eq!(combined, ">a\nMA\n>b\nMK\n>c\nMF\n>d\nM\n");
    // What the estimate said is what was charged.
    assert_eq!(done["credits"]["charged"], estimate["total"], "{done}");
    assert_eq!(app.balance(&ws).await, 100 - 7);
}

#[tokio::test]
async fn a_failing_item_fails_its_step_stops_its_siblings_and_is_refunded() {
    let app = spawn().await;
    let (alice, ws) = app.setup("lab", 100).await;
    let definition = json!({
        "inputs": [{ "name": "items", "kind": "FILE", "list": true, "required": true }],
        "steps": [
            { "name": "each", "tool": "picky", "map": "item",
              "inputs": [{ "input": "item", "from": "inputs.items" }] },
            { "name": "count", "tool": "lines",
              "inputs": [{ "input": "items", "from": "each.copy" }] },
        ],
    });
    let inputs: Vec<Value> = ["fine\n", "BAD\n", "fine too\n", "also fine\n"]
        .iter()
        .map(|text| json!({ "name": "items", "text": text }))
        .collect();
    let body = submit(
        &app,
        &alice.token,
        json!({ "workspaceId": ws, "definition": definition, "inputs": inputs }),
    )
    .await;
    assert!(body["errors"].is_null(), "{body}");
    let id = body["data"]["submitWorkflow"]["workflow"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let done = wait_ended(&app, &alice.token, &id).await;
    assert_eq!(done["status"], "FAILED", "{done}");
    let each = step(&done, "each");
    assert_eq!(each["status"], "FAILED");
    assert!(
        each["reason"].as_str().unwrap().contains("item 2"),
        "{each}"
    );
    // The bad item failed; every other one ended (none is left running) and the gathering
    // step never ran.
    let items = each["itemJobs"].as_array().unwrap();
    assert_eq!(items.len(), 4);
    assert_eq!(items[1]["status"], "FAILED");
    for job in items {
        assert!(
            ["COMPLETED", "FAILED", "CANCELLED"].contains(&job["status"].as_str().unwrap()),
            "{job}"
        );
    }
    // The others sleep for seconds: they were stopped, not waited for.
    assert!(
        items.iter().any(|j| j["status"] == "CANCELLED"),
        "{items:?}"
    );
    assert_eq!(step(&done, "count")["status"], "SKIPPED");
    assert!(step(&done, "count")["job"].is_null());
    // Failed and cancelled items are refunded by the rule of jobs, exactly once.
    assert_eq!(items[1]["refunded"], true);
    let refunded: i64 = items
        .iter()
        .filter(|j| j["refunded"] == true)
        .map(|j| j["creditCost"].as_i64().unwrap())
        .sum();
    assert_eq!(done["credits"]["charged"], 16, "{done}");
    assert_eq!(done["credits"]["refunded"], refunded, "{done}");
    assert_eq!(done["credits"]["reserved"], 0);
    assert_eq!(app.balance(&ws).await, 100 - 16 + refunded);
}

#[tokio::test]
async fn a_step_maps_over_at_most_a_thousand_items() {
    let app = spawn().await;
    let (alice, ws) = app.setup("lab", 100).await;
    let definition = json!({
        "steps": [
            { "name": "make", "tool": "many" },
            { "name": "each", "tool": "noop", "after": ["make"] },
            { "name": "count", "tool": "lines", "map": "items",
              "inputs": [{ "input": "items", "from": "make.parts" }] },
        ],
    });
    // A FILES output is a list: bound to one value it is refused, naming the step and field.
    let refused = submit(
        &app,
        &alice.token,
        json!({ "workspaceId": ws, "definition": definition }),
    )
    .await;
    assert_eq!(
        refused["errors"][0]["extensions"]["field"], "steps.count.map",
        "{refused}"
    );
    let mut definition = definition;
    definition["steps"][2] = json!({ "name": "count", "tool": "picky", "map": "item",
        "inputs": [{ "input": "item", "from": "make.parts" }] });
    let body = submit(
        &app,
        &alice.token,
        json!({ "workspaceId": ws, "definition": definition, "maxCredits": 50 }),
    )
    .await;
    assert!(body["errors"].is_null(), "{body}");
    let id = body["data"]["submitWorkflow"]["workflow"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let done = wait_ended(&app, &alice.token, &id).await;
    assert_eq!(done["status"], "FAILED", "{done}");
    let count = step(&done, "count");
    assert_eq!(count["status"], "FAILED");
    assert!(
        count["reason"]
            .as_str()
            .unwrap()
            .contains("maps over 1001 items; a step maps over at most 1000"),
        "{count}"
    );
    // Refused before any job was written: nothing of it was charged.
    assert!(count["itemJobs"].as_array().unwrap().is_empty());
    assert_eq!(done["credits"]["charged"], 1, "{done}");
    assert_eq!(app.balance(&ws).await, 99);
}

#[tokio::test]
async fn lists_and_maps_are_checked_before_anything_is_written() {
    let app = spawn().await;
    let (alice, ws) = app.setup("lab", 100).await;
    let refused = |definition: Value, inputs: Value| {
        let app = &app;
        let token = alice.token.clone();
        let ws = ws.clone();
        async move {
            let body = submit(
                app,
                &token,
                json!({ "workspaceId": ws, "definition": definition, "inputs": inputs,
                        "maxCredits": 10 }),
            )
            .await;
            assert_eq!(
                body["errors"][0]["extensions"]["code"], "BAD_USER_INPUT",
                "{body}"
            );
            (
                body["errors"][0]["extensions"]["field"]
                    .as_str()
                    .unwrap()
                    .to_owned(),
                body["errors"][0]["message"].as_str().unwrap().to_owned(),
            )
        }
    };
    let one = json!([{ "name": "dna", "kind": "FILE", "format": "FASTA", "required": true }]);
    let list = json!([{ "name": "dna", "kind": "FILE", "format": "FASTA", "list": true, "required": true }]);
    let dna = json!([{ "name": "dna", "text": ">a\nATG\n" }]);

    // Mapping over one value.
    let (field, message) = refused(
        json!({ "inputs": one, "steps": [{ "name": "t", "tool": "translate-dna", "map": "sequences",
            "inputs": [{ "input": "sequences", "from": "inputs.dna" }] }] }),
        dna.clone(),
    )
    .await;
    assert_eq!(field, "steps.t.map");
    assert!(message.contains("not a list"), "{message}");
    // A list bound to an input of one value, without `map`.
    let (field, message) = refused(
        json!({ "inputs": list, "steps": [{ "name": "t", "tool": "translate-dna",
            "inputs": [{ "input": "sequences", "from": "inputs.dna" }] }] }),
        dna.clone(),
    )
    .await;
    assert_eq!(field, "steps.t.inputs.sequences");
    assert!(message.contains("is a list"), "{message}");
    // Mapping over an input the step does not bind.
    let (field, _) = refused(
        json!({ "inputs": list, "steps": [{ "name": "t", "tool": "concat-fasta", "map": "nothing",
            "inputs": [{ "input": "sequences", "from": "inputs.dna" }] }] }),
        dna.clone(),
    )
    .await;
    assert_eq!(field, "steps.t.map");
    // Mapping a list into an input that takes a list already.
    let (field, _) = refused(
        json!({ "inputs": list, "steps": [{ "name": "t", "tool": "concat-fasta", "map": "sequences",
            "inputs": [{ "input": "sequences", "from": "inputs.dna" }] }] }),
        dna.clone(),
    )
    .await;
    assert_eq!(field, "steps.t.map");
    // An input of one value given twice, and a list of more than a thousand items.
    let twice =
        json!([{ "name": "dna", "text": ">a\nATG\n" }, { "name": "dna", "text": ">b\nATG\n" }]);
    let (field, message) = refused(
        json!({ "inputs": one, "steps": [{ "name": "t", "tool": "translate-dna",
            "inputs": [{ "input": "sequences", "from": "inputs.dna" }] }] }),
        twice,
    )
    .await;
    assert_eq!(field, "inputs.dna");
    assert!(message.ends_with("given twice"), "{message}");
    let many: Vec<Value> = (0..1001)
        .map(|i| json!({ "name": "dna", "text": format!(">s{i}\nATG\n") }))
        .collect();
    let (field, message) = refused(
        json!({ "inputs": list, "steps": [{ "name": "t", "tool": "translate-dna", "map": "sequences",
            "inputs": [{ "input": "sequences", "from": "inputs.dna" }] }] }),
        Value::Array(many),
    )
    .await;
    assert_eq!(field, "inputs.dna");
    assert!(message.contains("at most 1000 items"), "{message}");

    // Nothing was written or reserved.
    let data = app
        .ok(
            Some(&alice.token),
            "query($id: ID!) { workspace(id: $id) { creditsReserved workflows { edges { node { id } } } } }",
            json!({ "id": ws }),
        )
        .await;
    assert_eq!(data["workspace"]["creditsReserved"], 0);
    assert!(
        data["workspace"]["workflows"]["edges"]
            .as_array()
            .unwrap()
            .is_empty()
    );
    assert_eq!(app.balance(&ws).await, 100);
}

#[tokio::test]
async fn a_job_takes_a_list_input_by_repeating_its_name() {
    let app = spawn().await;
    let (alice, ws) = app.setup("lab", 100).await;
    let data = app
        .ok(
            Some(&alice.token),
            "mutation($input: SubmitJobInput!) { submitJob(input: $input) { job { id inputs { name } } } }",
            json!({ "input": { "workspaceId": ws, "tool": "concat-fasta", "inputs": [
                { "name": "sequences", "text": ">x\nMA\n" },
                { "name": "sequences", "text": ">y\nMK\n" },
            ] } }),
        )
        .await;
    let job = &data["submitJob"]["job"];
    let names: Vec<_> = job["inputs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["sequences/0000", "sequences/0001"]);
    let done = app
        .wait_final(
            &alice.token,
            job["id"].as_str().unwrap(),
            Duration::from_secs(30),
        )
        .await;
    assert_eq!(done["status"], "COMPLETED", "{done}");
    assert_eq!(done["result"]["files"], 2, "{done}");
}
