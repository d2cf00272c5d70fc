//! Duplicating a workflow with overrides: a new run checked, estimated and charged anew, in
//! its workspace or another where the viewer may submit jobs.

use std::time::Duration;

use sea_orm::{EntityTrait, PaginatorTrait};
use serde_json::{Value, json};

use crate::files::upload;
use crate::support::wait::eventually;
use crate::support::{TestApp, TestUser};

const DNA: &str = ">gene1\nATGGCCATTGTAATGGGCCGCTGAAAGGGTGCCCGATAG\n>gene2\nATGAAACGCATTAGCACCACCATTACCACCACCATCACC\n";
const OTHER_DNA: &str = ">gene2\nATGAAACGCATTAGCACCACCATTACCACCACCATCACC\n";

const FIELDS: &str = "id name status workspaceId parentKind parent { id }
    credits { reserved charged }
    changesFromParent { kind name oldValue newValue }
    steps { name status job { id settings inputs { name text file { sha256 downloadUrl } }
                              files(role: OUTPUT) { name downloadUrl } } }";

/// Submits the tools file's `protein-profile` with its DNA uploaded as a file.
async fn submit_uploaded(app: &TestApp, user: &TestUser, ws: &str) -> String {
    let (_, body) = upload(
        app,
        Some(&user.token),
        "mutation($ws: ID!, $file: Upload!) { submitWorkflow(input: {workspaceId: $ws,
            workflow: \"protein-profile\", name: \"profile\", maxCredits: 40,
            inputs: [{name: \"dna\", file: $file}]}) { workflow { id } } }",
        json!({ "ws": ws }),
        "dna.fasta",
        DNA.as_bytes().to_vec(),
    )
    .await;
    assert!(body["errors"].is_null(), "{body}");
    body["data"]["submitWorkflow"]["workflow"]["id"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// Sends `duplicateWorkflow` with `input`; returns the response's body.
async fn duplicate(app: &TestApp, token: &str, input: Value) -> Value {
    app.post(
        Some(token),
        &format!(
            "mutation($input: DuplicateWorkflowInput!) {{ duplicateWorkflow(input: $input) {{ workflow {{ {FIELDS} }} }} }}"
        ),
        json!({ "input": input }),
    )
    .await
    .1
}

/// Sends `duplicateWorkflow` as a multipart request, `content` uploaded as its first input's
/// file.
async fn duplicate_uploading(app: &TestApp, token: &str, input: Value, content: &str) -> Value {
    use reqwest::multipart::{Form, Part};
    let operations = json!({
        "query": "mutation($input: DuplicateWorkflowInput!) { duplicateWorkflow(input: $input) { workflow { id } } }",
        "variables": { "input": input },
    });
    let form = Form::new()
        .text("operations", operations.to_string())
        .text(
            "map",
            json!({ "0": ["variables.input.inputs.0.file"] }).to_string(),
        )
        .part(
            "0",
            Part::bytes(content.as_bytes().to_vec()).file_name("new.fasta"),
        );
    let response = app
        .client()
        .post(app.url("/graphql"))
        .bearer_auth(token)
        .multipart(form)
        .send()
        .await
        .unwrap();
    response.json().await.unwrap()
}

fn duplicated(body: &Value) -> Value {
    assert!(body["errors"].is_null(), "{body}");
    body["data"]["duplicateWorkflow"]["workflow"].clone()
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
    let workflow = eventually(Duration::from_secs(60), "a workflow to end", || async {
        let workflow = read(app, token, id).await;
        if workflow["status"] == "RUNNING" {
            Err(workflow)
        } else {
            Ok(workflow)
        }
    })
    .await;
    assert_eq!(workflow["status"], "COMPLETED", "{workflow}");
    workflow
}

fn step<'a>(workflow: &'a Value, name: &str) -> &'a Value {
    workflow["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == name)
        .unwrap_or_else(|| panic!("no step {name} in {workflow}"))
}

/// The changes of a workflow as (kind, name, old, new).
fn changes(workflow: &Value) -> Vec<(String, String, Value, Value)> {
    workflow["changesFromParent"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["kind"].as_str().unwrap().to_owned(),
                c["name"].as_str().unwrap().to_owned(),
                c["oldValue"].clone(),
                c["newValue"].clone(),
            )
        })
        .collect()
}

fn change(kind: &str, name: &str, old: Value, new: Value) -> (String, String, Value, Value) {
    (kind.to_owned(), name.to_owned(), old, new)
}

async fn workflows(app: &TestApp) -> u64 {
    entity::workflow::Entity::find()
        .count(&app.db)
        .await
        .unwrap()
}

/// The stored objects of a workspace.
async fn stored(app: &TestApp, ws: &str) -> Vec<String> {
    let id = jobgraph::ids::decode::<entity::ids::WorkspaceId>("ws", ws).unwrap();
    let mut keys = app
        .state
        .files
        .storage
        .list(&jobgraph::files::workspace_prefix(id))
        .await
        .unwrap();
    keys.sort();
    keys
}

async fn reserved(app: &TestApp, ws: &str) -> i64 {
    app.ok(
        Some(&app.admin_token),
        "query($id: ID!) { workspace(id: $id) { creditsReserved } }",
        json!({ "id": ws }),
    )
    .await["workspace"]["creditsReserved"]
        .as_i64()
        .unwrap()
}

#[tokio::test]
async fn a_duplicate_runs_anew_with_a_new_parameter_on_copies_of_the_other_inputs() {
    let app = TestApp::spawn_with(|config| config.server.workers = 2).await;
    let (alice, ws) = app.setup("lab", 200).await;
    let first = submit_uploaded(&app, &alice, &ws).await;
    let parent = wait_ended(&app, &alice.token, &first).await;
    let balance = app.balance(&ws).await;

    let copy = duplicated(
        &duplicate(
            &app,
            &alice.token,
            json!({ "workflowId": first, "parameters": { "k": 5 } }),
        )
        .await,
    );
    assert_eq!(copy["parentKind"], "DUPLICATE");
    assert_eq!(copy["parent"]["id"], first.as_str());
    assert_eq!(copy["name"], "profile (copy)");
    assert_eq!(copy["workspaceId"], ws.as_str());
    assert_eq!(
        changes(&copy),
        [
            change("NAME", "name", json!("profile"), json!("profile (copy)")),
            change("PARAMETER", "k", json!(3), json!(5)),
            change("STEP_SETTING", "kmers.k", json!(3), json!(5)),
        ]
    );
    // The parent goes, with its inputs: the copy runs on its own copies of them.
    app.ok(
        Some(&alice.token),
        "mutation($id: ID!) { deleteWorkflow(id: $id) { deletedWorkflowId } }",
        json!({ "id": first }),
    )
    .await;
    let id = copy["id"].as_str().unwrap();
    let done = wait_ended(&app, &alice.token, id).await;
    assert_eq!(step(&done, "kmers")["job"]["settings"]["k"], 5, "{done}");
    assert_eq!(step(&parent, "kmers")["job"]["settings"]["k"], 3);
    let sha = |workflow: &Value| {
        step(workflow, "translate")["job"]["inputs"][0]["file"]["sha256"].clone()
    };
    assert!(sha(&done).is_string(), "{done}");
    assert_eq!(sha(&done), sha(&parent));
    // Its own copy, readable after the parent's is deleted.
    let url = step(&done, "translate")["job"]["inputs"][0]["file"]["downloadUrl"]
        .as_str()
        .unwrap()
        .to_owned();
    let response = app
        .client()
        .get(&url)
        .bearer_auth(&alice.token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.text().await.unwrap(), DNA);
    // Charged anew, as a new submission.
    let charged = done["credits"]["charged"].as_i64().unwrap();
    assert!(charged > 0);
    assert_eq!(app.balance(&ws).await, balance - charged);
    assert_eq!(reserved(&app, &ws).await, 0);
}

#[tokio::test]
async fn input_and_step_overrides_replace_only_what_they_name() {
    let app = TestApp::spawn_with(|config| config.server.workers = 2).await;
    let (alice, ws) = app.setup("lab", 200).await;
    let first = submit_uploaded(&app, &alice, &ws).await;
    let input = json!({
        "workflowId": first,
        "name": "other gene, top k-mer",
        "inputs": [{ "name": "dna", "text": OTHER_DNA }],
        "steps": [{ "step": "kmers", "settings": { "top": 1 } }],
    });
    let copy = duplicated(&duplicate(&app, &alice.token, input).await);
    let found = changes(&copy);
    let kinds: Vec<(&str, &str)> = found
        .iter()
        .map(|(kind, name, _, _)| (kind.as_str(), name.as_str()))
        .collect();
    assert_eq!(
        kinds,
        [
            ("NAME", "name"),
            ("INPUT", "dna"),
            ("STEP_SETTING", "kmers.top")
        ]
    );
    assert_eq!(found[1].2["kind"], "FILE");
    assert_eq!(found[1].3, json!({ "kind": "TEXT", "text": OTHER_DNA }));
    assert_eq!(
        (found[2].2.clone(), found[2].3.clone()),
        (json!(20), json!(1))
    );

    let done = wait_ended(&app, &alice.token, copy["id"].as_str().unwrap()).await;
    let translate = &step(&done, "translate")["job"];
    assert_eq!(translate["inputs"][0]["text"], OTHER_DNA, "{translate}");
    let kmers = &step(&done, "kmers")["job"];
    // The step's other settings, and its parameter, stay.
    assert_eq!(kmers["settings"], json!({ "k": 3, "top": 1 }));
    let url = kmers["files"][0]["downloadUrl"].as_str().unwrap();
    let table = app
        .client()
        .get(url)
        .bearer_auth(&alice.token)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(
        table.lines().count(),
        2,
        "a header and the top k-mer: {table}"
    );
}

#[tokio::test]
async fn bad_overrides_are_refused_naming_the_step_and_field_with_nothing_written() {
    let app = TestApp::spawn().await;
    let (alice, ws) = app.setup("lab", 100).await;
    // Still RUNNING: no worker runs it. A workflow of any status may be duplicated.
    let first = submit_uploaded(&app, &alice, &ws).await;
    let before = (
        workflows(&app).await,
        stored(&app, &ws).await,
        app.balance(&ws).await,
        reserved(&app, &ws).await,
    );
    assert!(!before.1.is_empty());
    let query = "mutation($input: DuplicateWorkflowInput!) {
        duplicateWorkflow(input: $input) { workflow { id } } }";
    let cases = [
        (
            json!({ "steps": [{ "step": "nope", "settings": {} }] }),
            "steps.nope",
        ),
        (
            json!({ "steps": [{ "step": "kmers", "settings": { "k": 99 } }] }),
            "steps.kmers.settings.k",
        ),
        (
            json!({ "steps": [{ "step": "kmers", "settings": { "colour": "red" } }] }),
            "steps.kmers.settings",
        ),
        (
            json!({ "steps": [{ "step": "kmers", "settings": 3 }] }),
            "steps.kmers.settings",
        ),
        (json!({ "parameters": { "x": 1 } }), "parameters.x"),
        (
            json!({ "parameters": { "k": 0 } }),
            "steps.kmers.settings.k",
        ),
        (json!({ "name": " " }), "name"),
        // Refused once the uploads are stored and the other inputs copied.
        (json!({ "maxCredits": 1 }), "maxCredits"),
    ];
    for (overrides, field) in cases {
        // With a new DNA uploaded, and without.
        for with_upload in [true, false] {
            let mut input = overrides.clone();
            input["workflowId"] = json!(first);
            let body = if with_upload {
                input["inputs"] = json!([{ "name": "dna", "file": null }]);
                duplicate_uploading(&app, &alice.token, input, OTHER_DNA).await
            } else {
                app.post(Some(&alice.token), query, json!({ "input": input }))
                    .await
                    .1
            };
            let extensions = &body["errors"][0]["extensions"];
            assert_eq!(extensions["code"], "BAD_USER_INPUT", "{overrides}: {body}");
            assert_eq!(extensions["field"], field, "{overrides}: {body}");
            let after = (
                workflows(&app).await,
                stored(&app, &ws).await,
                app.balance(&ws).await,
                reserved(&app, &ws).await,
            );
            assert_eq!(
                after, before,
                "{overrides} (upload: {with_upload}) wrote something"
            );
        }
    }

    let copy = duplicated(&duplicate(&app, &alice.token, json!({ "workflowId": first })).await);
    assert_eq!(copy["status"], "RUNNING");
    assert_eq!(copy["parentKind"], "DUPLICATE");
    assert_eq!(workflows(&app).await, before.0 + 1);
}

#[tokio::test]
async fn duplicating_into_a_workspace_where_the_viewer_cannot_submit_is_forbidden() {
    let app = TestApp::spawn().await;
    let (alice, ws) = app.setup("lab", 100).await;
    let bob = app.user("bob@elsewhere.test").await;
    let watched = app.workspace(&bob, "watched").await;
    app.grant(&watched, 100).await;
    app.add_member(&bob, &watched, &alice, "VIEWER").await;
    let hidden = app.workspace(&bob, "hidden").await;
    let first = submit_uploaded(&app, &alice, &ws).await;
    let count = workflows(&app).await;

    let body = duplicate(
        &app,
        &alice.token,
        json!({ "workflowId": first, "workspaceId": watched }),
    )
    .await;
    assert_eq!(
        body["errors"][0]["extensions"]["code"], "FORBIDDEN",
        "{body}"
    );
    let body = duplicate(
        &app,
        &alice.token,
        json!({ "workflowId": first, "workspaceId": hidden }),
    )
    .await;
    assert_eq!(
        body["errors"][0]["extensions"]["code"], "NOT_FOUND",
        "{body}"
    );
    assert_eq!(workflows(&app).await, count);
    assert!(stored(&app, &watched).await.is_empty());
    assert_eq!(app.balance(&watched).await, 100);
}

#[tokio::test]
async fn a_viewer_reading_through_sharing_duplicates_into_their_own_workspace() {
    let app = TestApp::spawn_with(|config| config.server.workers = 2).await;
    let (alice, ws) = app.setup("lab", 100).await;
    let bob = app.user("bob@elsewhere.test").await;
    let own = app.workspace(&bob, "own").await;
    app.grant(&own, 100).await;
    let first = submit_uploaded(&app, &alice, &ws).await;
    wait_ended(&app, &alice.token, &first).await;
    let alices = app.balance(&ws).await;

    // Not shared yet: bob cannot see it.
    let body = duplicate(
        &app,
        &bob.token,
        json!({ "workflowId": first, "workspaceId": own }),
    )
    .await;
    assert_eq!(
        body["errors"][0]["extensions"]["code"], "NOT_FOUND",
        "{body}"
    );
    app.ok(
        Some(&alice.token),
        "mutation($id: ID!) { setWorkflowSharing(input: {workflowId: $id, visibility: INVITED,
            invitedEmails: [\"bob@elsewhere.test\"]}) { workflow { id } } }",
        json!({ "id": first }),
    )
    .await;
    // Into alice's workspace, where bob may not submit: refused.
    let body = duplicate(&app, &bob.token, json!({ "workflowId": first })).await;
    assert_eq!(
        body["errors"][0]["extensions"]["code"], "FORBIDDEN",
        "{body}"
    );

    let copy = duplicated(
        &duplicate(
            &app,
            &bob.token,
            json!({ "workflowId": first, "workspaceId": own, "parameters": { "k": 2 } }),
        )
        .await,
    );
    assert_eq!(copy["workspaceId"], own.as_str());
    assert_eq!(copy["parent"]["id"], first.as_str());
    let done = wait_ended(&app, &bob.token, copy["id"].as_str().unwrap()).await;
    assert_eq!(step(&done, "kmers")["job"]["settings"]["k"], 2);
    let charged = done["credits"]["charged"].as_i64().unwrap();
    assert!(charged > 0);
    assert_eq!(app.balance(&own).await, 100 - charged);
    assert_eq!(app.balance(&ws).await, alices);
    // Bob's copy is his: alice, who shared hers, does not see it.
    let body = app
        .post(
            Some(&alice.token),
            "query($id: ID!) { workflow(id: $id) { id } }",
            json!({ "id": copy["id"] }),
        )
        .await
        .1;
    assert_eq!(
        body["errors"][0]["extensions"]["code"], "NOT_FOUND",
        "{body}"
    );
}

#[tokio::test]
async fn a_mapped_workflow_is_duplicated_with_its_list_or_a_new_one() {
    let app = TestApp::spawn_with(|config| config.server.workers = 2).await;
    let (alice, ws) = app.setup("lab", 100).await;
    let definition = json!({
        "inputs": [{ "name": "genomes", "kind": "FILE", "format": "FASTA", "list": true, "required": true }],
        "steps": [
            { "name": "translate", "tool": "translate-dna", "map": "sequences",
              "inputs": [{ "input": "sequences", "from": "inputs.genomes" }] },
            { "name": "join", "tool": "concat-fasta",
              "inputs": [{ "input": "sequences", "from": "translate.proteins" }] },
        ],
    });
    let items = |texts: &[&str]| -> Vec<Value> {
        texts
            .iter()
            .map(|text| json!({ "name": "genomes", "text": text }))
            .collect()
    };
    let data = app
        .ok(
            Some(&alice.token),
            "mutation($input: SubmitWorkflowInput!) { submitWorkflow(input: $input) { workflow { id } } }",
            json!({ "input": { "workspaceId": ws, "name": "each", "definition": definition,
                               "inputs": items(&[">a\nATGGCC\n", ">b\nATGAAA\n", ">c\nATG\n"]) } }),
        )
        .await;
    let first = data["submitWorkflow"]["workflow"]["id"]
        .as_str()
        .unwrap()
        .to_owned();

    // The same list, item by item, mapped again.
    let copy = duplicated(&duplicate(&app, &alice.token, json!({ "workflowId": first })).await);
    let kinds: Vec<_> = changes(&copy).into_iter().map(|c| c.0).collect();
    assert_eq!(kinds, ["NAME"], "{copy}");
    let done = wait_ended(&app, &alice.token, copy["id"].as_str().unwrap()).await;
    assert_eq!(
        joined(&app, &alice.token, &done).await,
        ">a\nMA\n>b\nMK\n>c\nM\n"
    );

    // A new list replaces the whole input.
    let input = json!({ "workflowId": first, "inputs": items(&[">x\nATGTTT\n", ">y\nATG\n"]) });
    let copy = duplicated(&duplicate(&app, &alice.token, input).await);
    let found = changes(&copy);
    assert_eq!(
        (found[1].0.as_str(), found[1].1.as_str()),
        ("INPUT", "genomes")
    );
    assert_eq!(found[1].3["kind"], "LIST");
    assert_eq!(found[1].3["items"].as_array().unwrap().len(), 2);
    let done = wait_ended(&app, &alice.token, copy["id"].as_str().unwrap()).await;
    assert_eq!(joined(&app, &alice.token, &done).await, ">x\nMF\n>y\nM\n");
}

/// The content of a workflow's `join` step's output.
async fn joined(app: &TestApp, token: &str, workflow: &Value) -> String {
    let job = &step(workflow, "join")["job"];
    app.client()
        .get(job["files"][0]["downloadUrl"].as_str().unwrap())
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}
