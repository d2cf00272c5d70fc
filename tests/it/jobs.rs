//! Submitting jobs: charging, validation, concurrency, idempotency, batches and estimates.

use entity::credit_transaction;
use jobgraph::ids::{self};
use sea_orm::{ColumnTrait, EntityTrait, PaginatorTrait, QueryFilter};
use serde_json::{Value, json};

use crate::support::{JOB_FIELDS, TestApp, fasta};

async fn job_count(app: &TestApp) -> u64 {
    entity::job::Entity::find().count(&app.db).await.unwrap()
}

#[tokio::test]
async fn a_submitted_job_is_charged_queued_and_has_its_timeline() {
    let app = TestApp::spawn().await;
    let alice = app.user("alice@lab.test").await;
    let ws = app.workspace(&alice, "lab").await;
    app.grant(&ws, 100).await;
    let job = app.job(&alice, &ws, 4).await;
    assert!(job["id"].as_str().unwrap().starts_with("job_"));
    assert_eq!(job["status"], "QUEUED");
    assert_eq!(job["creditCost"], 5);
    assert_eq!(job["settings"]["seconds"], 4);
    assert_eq!(
        job["settings"]["stages"],
        json!(["Preparing", "Working", "Finishing"]),
        "defaults are filled in"
    );
    assert_eq!(
        job["timeline"],
        json!([{"status": "QUEUED", "message": "submitted"}])
    );
    assert_eq!(app.balance(&ws).await, 95);
    let job_id = ids::decode::<entity::ids::JobId>("id", job["id"].as_str().unwrap()).unwrap();
    let charges = credit_transaction::Entity::find()
        .filter(credit_transaction::Column::JobId.eq(job_id))
        .all(&app.db)
        .await
        .unwrap();
    assert_eq!(charges.len(), 1);
    assert_eq!(charges[0].kind, credit_transaction::TransactionKind::Charge);
    assert_eq!(charges[0].amount, -5);
}

#[tokio::test]
async fn the_estimate_is_the_charge() {
    let app = TestApp::spawn().await;
    let alice = app.user("alice@lab.test").await;
    let ws = app.workspace(&alice, "lab").await;
    app.grant(&ws, 1000).await;
    let vars = json!({"ws": ws, "inputs": [{"name": "sequences", "text": fasta(2500)}], "settings": {"k": 6}});
    let data = app
        .ok(
            None,
            "query($inputs: [JobInputValue!]!, $settings: JSON) { estimateJobCost(input: {tool: \"kmer-count\", inputs: $inputs, settings: $settings}) {
               total breakdown { label quantity unitPrice amount } } }",
            vars.clone(),
        )
        .await;
    let estimate = &data["estimateJobCost"];
    assert_eq!(estimate["total"], 2 + 3 + 6);
    assert_eq!(
        estimate["breakdown"][1],
        json!({"label": "thousand residues", "quantity": 3, "unitPrice": 1, "amount": 3})
    );
    let data = app
        .ok(
            Some(&alice.token),
            "mutation($ws: ID!, $inputs: [JobInputValue!]!, $settings: JSON) { submitJob(input: {workspaceId: $ws, tool: \"kmer-count\", inputs: $inputs, settings: $settings}) { job { creditCost } } }",
            vars,
        )
        .await;
    assert_eq!(data["submitJob"]["job"]["creditCost"], estimate["total"]);
    assert_eq!(app.balance(&ws).await, 1000 - 11);
}

#[tokio::test]
async fn bad_submissions_name_the_field_and_write_nothing() {
    let app = TestApp::spawn().await;
    let alice = app.user("alice@lab.test").await;
    let ws = app.workspace(&alice, "lab").await;
    app.grant(&ws, 100).await;
    let submit = "mutation($ws: ID!, $tool: String!, $inputs: [JobInputValue!]!, $settings: JSON, $max: Int, $name: String) {
      submitJob(input: {workspaceId: $ws, tool: $tool, inputs: $inputs, settings: $settings, maxCredits: $max, name: $name}) { job { id } } }";
    let cases = [
        (json!({"tool": "nope", "inputs": []}), "tool"),
        (
            json!({"tool": "sequence-stats", "inputs": []}),
            "inputs.sequences",
        ),
        (
            json!({"tool": "sequence-stats", "inputs": [{"name": "sequences", "text": "not fasta"}]}),
            "inputs.sequences",
        ),
        (
            json!({"tool": "sequence-stats", "inputs": [{"name": "genome", "text": ">a\nA"}]}),
            "inputs.genome",
        ),
        (
            json!({"tool": "kmer-count", "inputs": [{"name": "sequences", "text": ">a\nA"}], "settings": {"k": 99}}),
            "settings.k",
        ),
        (
            json!({"tool": "sleep", "inputs": [], "settings": {"seconds": "ten"}}),
            "settings.seconds",
        ),
        (
            json!({"tool": "sleep", "inputs": [], "settings": {"seconds": 50}, "max": 20}),
            "maxCredits",
        ),
        (
            json!({"tool": "sleep", "inputs": [], "name": "   "}),
            "name",
        ),
    ];
    for (mut vars, field) in cases {
        vars["ws"] = json!(ws);
        let (_, body) = app.post(Some(&alice.token), submit, vars.clone()).await;
        assert_eq!(
            body["errors"][0]["extensions"]["code"], "BAD_USER_INPUT",
            "{vars}: {body}"
        );
        assert_eq!(
            body["errors"][0]["extensions"]["field"], field,
            "{vars}: {body}"
        );
    }
    assert_eq!(job_count(&app).await, 0);
    assert_eq!(app.balance(&ws).await, 100);
}

#[tokio::test]
async fn insufficient_credits_refuse_the_job_and_write_nothing() {
    let app = TestApp::spawn().await;
    let alice = app.user("alice@lab.test").await;
    let ws = app.workspace(&alice, "lab").await;
    app.grant(&ws, 5).await;
    let (_, body) = app.submit_sleep(&alice, &ws, 9).await;
    assert_eq!(
        body["errors"][0]["extensions"]["code"], "INSUFFICIENT_CREDITS",
        "{body}"
    );
    assert_eq!(
        body["errors"][0]["message"],
        "insufficient credits: this costs 10 credits and the workspace has 5"
    );
    assert_eq!(job_count(&app).await, 0);
    assert_eq!(
        entity::job_event::Entity::find()
            .count(&app.db)
            .await
            .unwrap(),
        0
    );
    assert_eq!(app.balance(&ws).await, 5);
}

#[tokio::test]
async fn viewers_and_outsiders_cannot_submit() {
    let app = TestApp::spawn().await;
    let alice = app.user("alice@lab.test").await;
    let vera = app.user("vera@lab.test").await;
    let eve = app.user("eve@lab.test").await;
    let ws = app.workspace(&alice, "lab").await;
    app.add_member(&alice, &ws, &vera, "VIEWER").await;
    app.grant(&ws, 100).await;
    let (_, body) = app.submit_sleep(&vera, &ws, 1).await;
    assert_eq!(body["errors"][0]["extensions"]["code"], "FORBIDDEN");
    let (_, body) = app.submit_sleep(&eve, &ws, 1).await;
    assert_eq!(body["errors"][0]["extensions"]["code"], "NOT_FOUND");
    assert_eq!(job_count(&app).await, 0);
}

#[tokio::test]
async fn fifty_parallel_submissions_against_a_small_balance_never_overdraw() {
    let app = TestApp::spawn().await;
    let alice = app.user("alice@lab.test").await;
    let ws = app.workspace(&alice, "lab").await;
    app.grant(&ws, 100).await;
    // Each costs 1 + 9 = 10 credits: exactly ten fit.
    let submissions = (0..50).map(|_| app.submit_sleep(&alice, &ws, 9));
    let results = futures_util::future::join_all(submissions).await;
    let accepted = results
        .iter()
        .filter(|(_, b)| b["errors"].is_null())
        .count();
    let refused = results
        .iter()
        .filter(|(_, b)| b["errors"][0]["extensions"]["code"] == "INSUFFICIENT_CREDITS")
        .count();
    assert_eq!((accepted, refused), (10, 40));
    assert_eq!(job_count(&app).await, 10);
    let charges = credit_transaction::Entity::find()
        .filter(credit_transaction::Column::Kind.eq(credit_transaction::TransactionKind::Charge))
        .count(&app.db)
        .await
        .unwrap();
    assert_eq!(charges, 10);
    assert_eq!(app.balance(&ws).await, 0);
}

#[tokio::test]
async fn parallel_retries_with_one_idempotency_key_make_one_job_and_one_charge() {
    let app = TestApp::spawn().await;
    let alice = app.user("alice@lab.test").await;
    let ws = app.workspace(&alice, "lab").await;
    app.grant(&ws, 100).await;
    let submit = "mutation($ws: ID!) { submitJob(input: {workspaceId: $ws, tool: \"sleep\", idempotencyKey: \"nb-cell-7\"}) { replayed job { id } } }";
    let attempts = (0..12).map(|_| app.post(Some(&alice.token), submit, json!({"ws": ws})));
    let results = futures_util::future::join_all(attempts).await;
    let mut ids = std::collections::HashSet::new();
    let mut fresh = 0;
    for (_, body) in &results {
        assert!(body["errors"].is_null(), "{body}");
        ids.insert(
            body["data"]["submitJob"]["job"]["id"]
                .as_str()
                .unwrap()
                .to_owned(),
        );
        if body["data"]["submitJob"]["replayed"] == false {
            fresh += 1;
        }
    }
    assert_eq!(ids.len(), 1, "every retry answers with the same job");
    assert_eq!(fresh, 1);
    assert_eq!(job_count(&app).await, 1);
    assert_eq!(app.balance(&ws).await, 100 - 6);
}

#[tokio::test]
async fn a_batch_is_all_or_nothing_and_priced_as_its_sum() {
    let app = TestApp::spawn().await;
    let alice = app.user("alice@lab.test").await;
    let ws = app.workspace(&alice, "lab").await;
    app.grant(&ws, 20).await;
    let batch = format!(
        "mutation($ws: ID!, $jobs: [BatchJobInput!]!) {{ submitBatch(input: {{workspaceId: $ws, name: \"sweep\", jobs: $jobs}}) {{
           batch {{ id name status progress totalCost jobCount jobs {{ edges {{ node {{ id }} }} }} }} jobs {{ {JOB_FIELDS} }} }} }}"
    );
    let job = |seconds: u32| json!({"tool": "sleep", "settings": {"seconds": seconds}});
    // 6 + 6 + 11 = 23 > 20: nothing is written.
    let (_, body) = app
        .post(
            Some(&alice.token),
            &batch,
            json!({"ws": ws, "jobs": [job(5), job(5), job(10)]}),
        )
        .await;
    assert_eq!(
        body["errors"][0]["extensions"]["code"], "INSUFFICIENT_CREDITS",
        "{body}"
    );
    assert!(
        body["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("costs 23"),
        "{body}"
    );
    assert_eq!(job_count(&app).await, 0);
    assert_eq!(
        entity::batch::Entity::find().count(&app.db).await.unwrap(),
        0
    );
    assert_eq!(app.balance(&ws).await, 20);

    // A bad job anywhere refuses the batch, naming it.
    let (_, body) = app
        .post(
            Some(&alice.token),
            &batch,
            json!({"ws": ws, "jobs": [job(1), {"tool": "sleep", "settings": {"seconds": -1}}]}),
        )
        .await;
    assert_eq!(
        body["errors"][0]["extensions"]["field"], "jobs.1.settings.seconds",
        "{body}"
    );

    let data = app
        .ok(
            Some(&alice.token),
            &batch,
            json!({"ws": ws, "jobs": [job(2), job(3)]}),
        )
        .await;
    let created = &data["submitBatch"]["batch"];
    assert_eq!(created["name"], "sweep");
    assert_eq!(created["status"], "QUEUED");
    assert_eq!(created["totalCost"], 7);
    assert_eq!(created["jobCount"], 2);
    assert_eq!(created["jobs"]["edges"].as_array().unwrap().len(), 2);
    assert_eq!(app.balance(&ws).await, 13);
}

#[tokio::test]
async fn tools_are_listed_with_their_inputs_settings_and_prices() {
    let app = TestApp::spawn().await;
    let data = app
        .ok(
            None,
            "{ tools { name version inputs { name kind required } price { base per1kResidues settings { name perUnit } } timeoutSeconds maxAttempts }
               tool(name: \"kmer-count\") { title settingsSchema } }",
            json!({}),
        )
        .await;
    let names: Vec<_> = data["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "sequence-stats",
            "kmer-count",
            "translate-dna",
            "split-fasta",
            "concat-fasta",
            "sleep",
            "noop"
        ]
    );
    assert_eq!(
        data["tools"][1]["price"]["settings"],
        json!([{"name": "k", "perUnit": 1}])
    );
    assert_eq!(
        data["tools"][0]["inputs"],
        json!([{"name": "sequences", "kind": "FILE", "required": true}])
    );
    assert_eq!(
        data["tool"]["settingsSchema"]["properties"]["k"]["maximum"],
        12
    );
}

#[tokio::test]
async fn a_submission_costs_the_same_few_statements_whatever_the_batch() {
    let app = TestApp::spawn().await;
    let (alice, ws) = app.setup("Lab", 1_000).await;
    // A priced tool, so that the charge is among the statements.
    let job = json!({ "tool": "sleep", "settings": { "seconds": 0 } });
    let (single, _) = app
        .statements(|| app.submit(&alice, &ws, job.clone()))
        .await;
    let jobs: Vec<Value> = (0..20).map(|_| job.clone()).collect();
    let (batch, _) = app
        .statements(|| app.submit_batch(&alice, &ws, &jobs))
        .await;
    // Reading the workspace and the submitter's membership; the jobs with their keys and every
    // timeline row; the balance and the ledger; the live entries, with the workers'
    // notification on PostgreSQL; the answer's two reads. On PostgreSQL the jobs, keys and
    // timeline are one statement, and so are the balance and the ledger; SQLite writes each
    // apart.
    let expected = match app.db.get_database_backend() {
        sea_orm::DatabaseBackend::Postgres => 8,
        _ => 11,
    };
    assert_eq!(single, expected);
    // A batch costs two more (its own row among them), whatever its size.
    assert_eq!(batch, expected + 2);
}
