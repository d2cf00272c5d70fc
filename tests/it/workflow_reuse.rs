//! Reusing results in workflows: with `reuse`, the steps whose inputs are known at submission
//! and that compute what a COMPLETED job of the workspace computed take its results, uncharged;
//! the steps they feed that compute something new run and are charged their price.

use std::time::Duration;

use serde_json::{Value, json};

use crate::support::wait::eventually;
use crate::support::{TestApp, TestUser};

const DNA: &str = ">gene1\nATGGCCATTGTAATGGGCCGCTGAAAGGGTGCCCGATAG\n>gene2\nATGAAACGCATTAGCACCACCATTACCACCACCATCACC\n";

const FIELDS: &str = "id status credits { estimated reserved charged refunded }
    steps { name status reason
            job { id status creditCost reusedFrom { id }
                  files(role: OUTPUT) { name sha256 downloadUrl } } }";

const ESTIMATE: &str = "query($input: EstimateWorkflowCostInput!) {
    estimateWorkflowCost(input: $input) { total complete reservation savedByReuse
        steps { step known reused estimate { total } } } }";

async fn spawn() -> TestApp {
    TestApp::spawn_with(|config| config.server.workers = 2).await
}

/// The built-in `protein-profile` on `DNA` with `k`, as the rest of a `SubmitWorkflowInput`.
fn profile(k: i64) -> Value {
    json!({
        "workflow": "protein-profile",
        "inputs": [{ "name": "dna", "text": DNA }],
        "parameters": { "k": k },
    })
}

/// Submits `input` to `ws` as `user`; returns the response's body.
async fn post(app: &TestApp, user: &TestUser, ws: &str, input: &Value) -> Value {
    let mut input = input.clone();
    input["workspaceId"] = json!(ws);
    let query = format!(
        "mutation($input: SubmitWorkflowInput!) {{
            submitWorkflow(input: $input) {{ replayed workflow {{ {FIELDS} }} }} }}"
    );
    app.post(Some(&user.token), &query, json!({ "input": input }))
        .await
        .1
}

/// Submits `input`, which must be accepted; returns the workflow as submitted.
async fn submit(app: &TestApp, user: &TestUser, ws: &str, input: &Value) -> Value {
    let body = post(app, user, ws, input).await;
    assert!(body["errors"].is_null(), "{body}");
    body["data"]["submitWorkflow"]["workflow"].clone()
}

async fn read(app: &TestApp, user: &TestUser, id: &str) -> Value {
    app.ok(
        Some(&user.token),
        &format!("query($id: ID!) {{ workflow(id: $id) {{ {FIELDS} }} }}"),
        json!({ "id": id }),
    )
    .await["workflow"]
        .clone()
}

async fn wait_ended(app: &TestApp, user: &TestUser, id: &str) -> Value {
    eventually(Duration::from_secs(60), "a workflow to end", || async {
        let workflow = read(app, user, id).await;
        if workflow["status"] == "RUNNING" {
            Err(workflow)
        } else {
            Ok(workflow)
        }
    })
    .await
}

/// Runs `input` to its end, which must be COMPLETED; returns the workflow.
async fn completed(app: &TestApp, user: &TestUser, ws: &str, input: &Value) -> Value {
    let id = submit(app, user, ws, input).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let done = wait_ended(app, user, &id).await;
    assert_eq!(done["status"], "COMPLETED", "{done}");
    done
}

async fn estimate(app: &TestApp, user: &TestUser, input: Value) -> Value {
    app.ok(Some(&user.token), ESTIMATE, json!({ "input": input }))
        .await["estimateWorkflowCost"]
        .clone()
}

fn step<'a>(workflow: &'a Value, name: &str) -> &'a Value {
    workflow["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == name)
        .unwrap_or_else(|| panic!("no step {name} in {workflow}"))
}

fn job_id(workflow: &Value, name: &str) -> Value {
    step(workflow, name)["job"]["id"].clone()
}

async fn download(app: &TestApp, user: &TestUser, file: &Value) -> Vec<u8> {
    let response = app
        .client()
        .get(file["downloadUrl"].as_str().unwrap())
        .bearer_auth(&user.token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "{file}");
    response.bytes().await.unwrap().to_vec()
}

/// Asserts that step `name` of `new` took the results of the same step of `old`: COMPLETED,
/// uncharged, naming the old step's job, with outputs of the same names and bytes that are
/// its own files.
async fn took_results(app: &TestApp, user: &TestUser, new: &Value, old: &Value, name: &str) {
    let (new_step, old_step) = (step(new, name), step(old, name));
    assert_eq!(new_step["status"], "COMPLETED", "{new_step}");
    let job = &new_step["job"];
    assert_eq!(job["status"], "COMPLETED", "{job}");
    assert_eq!(job["creditCost"], 0, "{job}");
    assert_eq!(job["reusedFrom"]["id"], old_step["job"]["id"], "{job}");
    assert_ne!(job["id"], old_step["job"]["id"]);
    let (files, old_files) = (
        job["files"].as_array().unwrap(),
        old_step["job"]["files"].as_array().unwrap(),
    );
    assert!(!files.is_empty(), "{job}");
    assert_eq!(files.len(), old_files.len(), "{job}");
    for (file, old_file) in files.iter().zip(old_files) {
        assert_eq!(file["name"], old_file["name"]);
        assert_eq!(file["sha256"], old_file["sha256"]);
        assert_ne!(file["downloadUrl"], old_file["downloadUrl"]);
        assert_eq!(
            download(app, user, file).await,
            download(app, user, old_file).await
        );
    }
}

#[tokio::test]
async fn a_workflow_submitted_again_with_reuse_takes_every_result_uncharged() {
    let app = spawn().await;
    let (alice, ws) = app.setup("lab", 100).await;
    let mut first = profile(3);
    first["maxCredits"] = json!(40);
    let old = completed(&app, &alice, &ws, &first).await;
    let paid = old["credits"]["charged"].as_i64().unwrap();
    assert!(paid > 0, "{old}");
    let balance = app.balance(&ws).await;
    assert_eq!(balance, 100 - paid);

    // The estimate tells what reuse saves: every step, so nothing is left to pay, and the
    // steps' prices are all known (no `maxCredits` is needed).
    let mut asked = profile(3);
    asked["workspaceId"] = json!(ws);
    asked["reuse"] = json!(true);
    let priced = estimate(&app, &alice, asked.clone()).await;
    assert_eq!(priced["total"], 0, "{priced}");
    assert_eq!(priced["complete"], true);
    assert_eq!(priced["reservation"], 0);
    assert_eq!(priced["savedByReuse"], paid);
    for s in priced["steps"].as_array().unwrap() {
        assert_eq!(s["reused"], true, "{s}");
        assert_eq!(s["estimate"]["total"], 0, "{s}");
    }
    // Without reuse, the same workflow's estimate is not complete and saves nothing.
    asked["reuse"] = json!(false);
    let plain = estimate(&app, &alice, asked).await;
    assert_eq!(plain["complete"], false, "{plain}");
    assert_eq!(plain["savedByReuse"], 0);

    let mut again = profile(3);
    again["reuse"] = json!(true);
    let new = submit(&app, &alice, &ws, &again).await;
    // Everything was known: the workflow completed in its submission.
    assert_eq!(new["status"], "COMPLETED", "{new}");
    assert_eq!(
        new["credits"],
        json!({ "estimated": 0, "reserved": 0, "charged": 0, "refunded": 0 })
    );
    for name in ["translate", "stats", "kmers"] {
        took_results(&app, &alice, &new, &old, name).await;
        assert!(
            step(&new, name)["reason"]
                .as_str()
                .unwrap()
                .contains(job_id(&old, name).as_str().unwrap()),
            "{new}"
        );
    }
    // Nothing charged: the balance, which equals the ledger's sum, is as it was.
    assert_eq!(app.balance(&ws).await, balance);
    assert_eq!(read(&app, &alice, new["id"].as_str().unwrap()).await, new);
}

#[tokio::test]
async fn a_changed_parameter_runs_only_the_step_it_feeds_charged_its_price() {
    let app = spawn().await;
    let (alice, ws) = app.setup("lab", 100).await;
    let mut first = profile(3);
    first["maxCredits"] = json!(40);
    let old = completed(&app, &alice, &ws, &first).await;
    let balance = app.balance(&ws).await;

    // `k` feeds only `kmers`: translate and stats are reused, and kmers' price is known from
    // the proteins translate made.
    let mut changed = profile(2);
    changed["reuse"] = json!(true);
    let mut asked = changed.clone();
    asked["workspaceId"] = json!(ws);
    let priced = estimate(&app, &alice, asked).await;
    let kmers_price = step_estimate(&priced, "kmers");
    assert_eq!(priced["complete"], true, "{priced}");
    assert_eq!(priced["total"], kmers_price);
    assert_eq!(
        priced["savedByReuse"],
        old["credits"]["charged"].as_i64().unwrap() - step_cost(&old, "kmers")
    );
    // k costs one credit a unit: one less than the first run's kmers, on the same proteins.
    assert_eq!(kmers_price, step_cost(&old, "kmers") - 1);

    let new = submit(&app, &alice, &ws, &changed).await;
    // The reservation is kmers' price, charged as kmers is queued with the submission.
    assert_eq!(
        new["credits"],
        json!({ "estimated": kmers_price, "reserved": 0, "charged": kmers_price, "refunded": 0 })
    );
    let id = new["id"].as_str().unwrap();
    let new = wait_ended(&app, &alice, id).await;
    assert_eq!(new["status"], "COMPLETED", "{new}");
    took_results(&app, &alice, &new, &old, "translate").await;
    took_results(&app, &alice, &new, &old, "stats").await;
    let kmers = &step(&new, "kmers")["job"];
    assert_eq!(kmers["reusedFrom"], Value::Null, "{kmers}");
    assert_eq!(kmers["creditCost"], kmers_price, "{kmers}");
    assert_ne!(
        kmers["files"][0]["sha256"],
        step(&old, "kmers")["job"]["files"][0]["sha256"],
        "k = 2 counts other k-mers"
    );
    assert_eq!(
        new["credits"],
        json!({ "estimated": kmers_price, "reserved": 0, "charged": kmers_price, "refunded": 0 })
    );
    assert_eq!(app.balance(&ws).await, balance - kmers_price);
}

fn step_estimate(estimate: &Value, name: &str) -> i64 {
    estimate["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["step"] == name)
        .unwrap()["estimate"]["total"]
        .as_i64()
        .unwrap()
}

fn step_cost(workflow: &Value, name: &str) -> i64 {
    step(workflow, name)["job"]["creditCost"].as_i64().unwrap()
}

#[tokio::test]
async fn reuse_with_nothing_to_reuse_submits_as_usual() {
    let app = spawn().await;
    let (alice, ws) = app.setup("lab", 100).await;
    let mut input = profile(3);
    input["reuse"] = json!(true);
    // As without reuse: the proteins' size is not known, so `maxCredits` is required, and a
    // refused submission writes nothing.
    let body = post(&app, &alice, &ws, &input).await;
    assert_eq!(body["errors"][0]["extensions"]["code"], "BAD_USER_INPUT");
    assert_eq!(body["errors"][0]["extensions"]["field"], "maxCredits");
    assert_eq!(workflows(&app).await, 0);

    input["maxCredits"] = json!(40);
    let new = submit(&app, &alice, &ws, &input).await;
    // 40 reserved, of which translate is charged as it is queued.
    let credits = &new["credits"];
    assert_eq!(
        credits["reserved"].as_i64().unwrap() + credits["charged"].as_i64().unwrap(),
        40,
        "{new}"
    );
    assert_eq!(step(&new, "translate")["job"]["reusedFrom"], Value::Null);
    let new = wait_ended(&app, &alice, new["id"].as_str().unwrap()).await;
    assert_eq!(new["status"], "COMPLETED", "{new}");
    let mut paid = 0;
    for name in ["translate", "stats", "kmers"] {
        let job = &step(&new, name)["job"];
        assert_eq!(job["reusedFrom"], Value::Null, "{job}");
        assert!(job["creditCost"].as_i64().unwrap() > 0, "{job}");
        paid += job["creditCost"].as_i64().unwrap();
    }
    assert_eq!(new["credits"]["charged"], paid);
    assert_eq!(app.balance(&ws).await, 100 - paid);
    assert_eq!(workflows(&app).await, 1);
}

/// How many workflows the database holds.
pub(crate) async fn workflows(app: &TestApp) -> u64 {
    use sea_orm::{EntityTrait, PaginatorTrait};
    entity::workflow::Entity::find()
        .count(&app.db)
        .await
        .unwrap()
}

#[tokio::test]
async fn results_of_another_workspace_are_not_reused() {
    let app = spawn().await;
    let (alice, ws) = app.setup("lab", 100).await;
    let mut first = profile(3);
    first["maxCredits"] = json!(40);
    let old = completed(&app, &alice, &ws, &first).await;
    // Even shared with everyone, and submitted by their owner, who owns the other workspace.
    app.ok(
        Some(&alice.token),
        "mutation($id: ID!) { setJobSharing(input: {jobId: $id, visibility: PUBLIC}) { job { id } } }",
        json!({ "id": job_id(&old, "translate") }),
    )
    .await;
    let bob = app.user("bob@lab.test").await;
    let alices = app.workspace(&alice, "elsewhere").await;
    let bobs = app.workspace(&bob, "bobs").await;
    for (user, elsewhere) in [(&alice, &alices), (&bob, &bobs)] {
        app.grant(elsewhere, 100).await;
        let mut asked = profile(3);
        asked["workspaceId"] = json!(elsewhere);
        asked["reuse"] = json!(true);
        let priced = estimate(&app, user, asked).await;
        assert_eq!(priced["savedByReuse"], 0, "{priced}");
        assert_eq!(priced["complete"], false, "{priced}");

        let mut input = profile(3);
        input["reuse"] = json!(true);
        input["maxCredits"] = json!(40);
        let new = submit(&app, user, elsewhere, &input).await;
        assert_eq!(new["status"], "RUNNING", "{new}");
        let new = wait_ended(&app, user, new["id"].as_str().unwrap()).await;
        for name in ["translate", "stats", "kmers"] {
            let job = &step(&new, name)["job"];
            assert_eq!(job["reusedFrom"], Value::Null, "{job}");
            assert!(job["creditCost"].as_i64().unwrap() > 0, "{job}");
        }
    }

    // An estimate with reuse needs the workspace, which its viewer must be able to read.
    let mut asked = profile(3);
    asked["reuse"] = json!(true);
    let (_, body) = app
        .post(
            Some(&bob.token),
            ESTIMATE,
            json!({ "input": asked.clone() }),
        )
        .await;
    assert_eq!(body["errors"][0]["extensions"]["field"], "workspaceId");
    asked["workspaceId"] = json!(ws);
    let (_, body) = app
        .post(Some(&bob.token), ESTIMATE, json!({ "input": asked }))
        .await;
    assert_eq!(
        body["errors"][0]["extensions"]["code"], "NOT_FOUND",
        "{body}"
    );
}

#[tokio::test]
async fn deleting_a_workflow_that_reused_results_deletes_its_copies_and_leaves_the_originals() {
    let app = spawn().await;
    let (alice, ws) = app.setup("lab", 100).await;
    let mut first = profile(3);
    first["maxCredits"] = json!(40);
    let old = completed(&app, &alice, &ws, &first).await;
    let stored = crate::files::stored(&app, &ws).await;

    let mut again = profile(3);
    again["reuse"] = json!(true);
    let new = submit(&app, &alice, &ws, &again).await;
    assert_eq!(new["status"], "COMPLETED", "{new}");
    // The copies of the outputs, and the workflow's own input: more objects than before.
    assert!(crate::files::stored(&app, &ws).await.len() > stored.len());
    app.ok(
        Some(&alice.token),
        "mutation($id: ID!) { deleteWorkflow(id: $id) { deletedWorkflowId } }",
        json!({ "id": new["id"] }),
    )
    .await;
    // Every copy was stored under its own job's folder, deleted with it.
    assert_eq!(crate::files::stored(&app, &ws).await, stored);
    for name in ["translate", "stats", "kmers"] {
        for file in step(&old, name)["job"]["files"].as_array().unwrap() {
            download(&app, &alice, file).await;
        }
    }
}

#[tokio::test]
async fn a_mapped_step_runs_its_items_after_a_reused_split() {
    let app = spawn().await;
    let (alice, ws) = app.setup("lab", 200).await;
    let fields = "id status credits { charged reserved }
        steps { name status job { id creditCost reusedFrom { id } result }
                itemJobs { creditCost reusedFrom { id } status } }";
    let run = |reuse: bool| {
        let query = "mutation($input: SubmitWorkflowInput!) {
            submitWorkflow(input: $input) { workflow { id } } }";
        let input = json!({ "workspaceId": ws, "workflow": "chunked-translation",
            "inputs": [{ "name": "dna", "text": DNA }], "maxCredits": 100, "reuse": reuse });
        let (app, alice, fields) = (&app, &alice, fields);
        async move {
            let id = app
                .ok(Some(&alice.token), query, json!({ "input": input }))
                .await["submitWorkflow"]["workflow"]["id"]
                .as_str()
                .unwrap()
                .to_owned();
            let id = wait_ended(app, alice, &id).await["id"].clone();
            app.ok(
                Some(&alice.token),
                &format!("query($id: ID!) {{ workflow(id: $id) {{ {fields} }} }}"),
                json!({ "id": id }),
            )
            .await["workflow"]
                .clone()
        }
    };
    let old = run(false).await;
    assert_eq!(old["status"], "COMPLETED", "{old}");
    let balance = app.balance(&ws).await;

    // Only the split is one job with known inputs: the mapped translations, the join of their
    // list and what follows are known only when they run.
    let new = run(true).await;
    assert_eq!(new["status"], "COMPLETED", "{new}");
    let split = &step(&new, "split")["job"];
    assert_eq!(split["reusedFrom"]["id"], job_id(&old, "split"), "{new}");
    assert_eq!(split["creditCost"], 0);
    let items = step(&new, "translate")["itemJobs"].as_array().unwrap();
    assert_eq!(items.len(), 2, "{new}");
    let mut paid = 0;
    for job in items {
        assert_eq!(job["status"], "COMPLETED");
        assert_eq!(job["reusedFrom"], Value::Null, "{job}");
        paid += job["creditCost"].as_i64().unwrap();
    }
    for name in ["join", "stats"] {
        let job = &step(&new, name)["job"];
        assert_eq!(job["reusedFrom"], Value::Null, "{job}");
        paid += job["creditCost"].as_i64().unwrap();
    }
    assert_eq!(
        step(&new, "stats")["job"]["result"],
        step(&old, "stats")["job"]["result"]
    );
    assert_eq!(new["credits"]["charged"], paid);
    assert_eq!(app.balance(&ws).await, balance - paid);
}
