//! Reading jobs: the history list and its filters, counts, node lookup and exports.

use entity::job::JobStatus;
use jobgraph::jobs::lifecycle::Change;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::support::TestApp;

const HISTORY: &str = "query($ws: ID!, $filter: JobFilterInput, $first: Int, $after: String) {
  workspace(id: $ws) { jobs(filter: $filter, first: $first, after: $after) {
    edges { node { id name status toolName submitter { email } creditCost } } pageInfo { hasNextPage endCursor } } } }";

fn names(data: &Value) -> Vec<String> {
    data["workspace"]["jobs"]["edges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["node"]["name"].as_str().unwrap().to_owned())
        .collect()
}

async fn named_job(
    app: &TestApp,
    user: &crate::support::TestUser,
    ws: &str,
    name: &str,
    tool: &str,
) -> String {
    let settings = if tool == "kmer-count" {
        json!({"k": 2})
    } else {
        json!({})
    };
    let inputs = if tool == "sleep" {
        json!([])
    } else {
        json!([{"name": "sequences", "text": ">a\nACGT\n"}])
    };
    let data = app
        .ok(
            Some(&user.token),
            "mutation($ws: ID!, $tool: String!, $name: String!, $inputs: [JobInputValue!]!, $settings: JSON) {
               submitJob(input: {workspaceId: $ws, tool: $tool, name: $name, inputs: $inputs, settings: $settings}) { job { id } } }",
            json!({"ws": ws, "tool": tool, "name": name, "inputs": inputs, "settings": settings}),
        )
        .await;
    data["submitJob"]["job"]["id"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn the_history_filters_by_status_tool_submitter_name_and_mine() {
    let app = TestApp::spawn().await;
    let alice = app.user("alice@lab.test").await;
    let bob = app.user("bob@lab.test").await;
    let ws = app.workspace(&alice, "lab").await;
    app.add_member(&alice, &ws, &bob, "MEMBER").await;
    app.grant(&ws, 1000).await;
    let a1 = named_job(&app, &alice, &ws, "Alpha dock", "sleep").await;
    named_job(&app, &alice, &ws, "beta kmers", "kmer-count").await;
    named_job(&app, &bob, &ws, "Gamma 100%_done", "sleep").await;
    named_job(&app, &bob, &ws, "delta stats", "sequence-stats").await;
    app.drive(&a1, JobStatus::Processing, Change::default())
        .await
        .unwrap();
    app.drive(&a1, JobStatus::Completed, Change::default())
        .await
        .unwrap();
    let token = Some(alice.token.as_str());
    let list = |filter: Value| app.ok(token, HISTORY, json!({"ws": ws, "filter": filter}));

    assert_eq!(
        names(&list(json!({})).await),
        ["delta stats", "Gamma 100%_done", "beta kmers", "Alpha dock"]
    );
    assert_eq!(
        names(&list(json!({"statuses": ["COMPLETED"]})).await),
        ["Alpha dock"]
    );
    assert_eq!(
        names(&list(json!({"statuses": ["QUEUED", "FAILED"]})).await).len(),
        3
    );
    assert_eq!(
        names(&list(json!({"tool": "sleep"})).await),
        ["Gamma 100%_done", "Alpha dock"]
    );
    assert_eq!(
        names(&list(json!({"submitterId": bob.id})).await),
        ["delta stats", "Gamma 100%_done"]
    );
    assert_eq!(
        names(&list(json!({"mine": true})).await),
        ["beta kmers", "Alpha dock"]
    );
    assert_eq!(
        names(&list(json!({"search": "ALPHA"})).await),
        ["Alpha dock"]
    );
    // Wildcards in the search are taken literally.
    assert_eq!(
        names(&list(json!({"search": "100%_"})).await),
        ["Gamma 100%_done"]
    );
    assert_eq!(
        names(&list(json!({"search": "%"})).await),
        ["Gamma 100%_done"]
    );
    assert_eq!(
        names(&list(json!({"createdAfter": "2999-01-01T00:00:00Z"})).await).len(),
        0
    );
    assert_eq!(
        names(&list(json!({"createdBefore": "2999-01-01T00:00:00Z"})).await).len(),
        4
    );

    let data = app
        .ok(token, "query($ws: ID!) { workspace(id: $ws) { all: jobCounts { queued completed active total } mine: jobCounts(mine: true) { queued completed total } } }", json!({"ws": ws}))
        .await;
    assert_eq!(
        data["workspace"]["all"],
        json!({"queued": 3, "completed": 1, "active": 3, "total": 4})
    );
    assert_eq!(
        data["workspace"]["mine"],
        json!({"queued": 1, "completed": 1, "total": 2})
    );
}

#[tokio::test]
async fn history_pages_stay_stable_while_new_jobs_arrive() {
    let app = TestApp::spawn().await;
    let alice = app.user("alice@lab.test").await;
    let ws = app.workspace(&alice, "lab").await;
    app.grant(&ws, 1000).await;
    for i in 0..7 {
        named_job(&app, &alice, &ws, &format!("job {i}"), "sleep").await;
    }
    let token = Some(alice.token.as_str());
    let first = app.ok(token, HISTORY, json!({"ws": ws, "first": 3})).await;
    assert_eq!(names(&first), ["job 6", "job 5", "job 4"]);
    let cursor = first["workspace"]["jobs"]["pageInfo"]["endCursor"]
        .as_str()
        .unwrap()
        .to_owned();
    named_job(&app, &alice, &ws, "job 7", "sleep").await;
    let second = app
        .ok(
            token,
            HISTORY,
            json!({"ws": ws, "first": 3, "after": cursor}),
        )
        .await;
    assert_eq!(names(&second), ["job 3", "job 2", "job 1"]);
    let cursor = second["workspace"]["jobs"]["pageInfo"]["endCursor"]
        .as_str()
        .unwrap()
        .to_owned();
    let third = app
        .ok(
            token,
            HISTORY,
            json!({"ws": ws, "first": 3, "after": cursor}),
        )
        .await;
    assert_eq!(names(&third), ["job 0"]);
    assert_eq!(third["workspace"]["jobs"]["pageInfo"]["hasNextPage"], false);
}

#[tokio::test]
async fn node_and_job_resolve_a_job_with_its_submitter() {
    let app = TestApp::spawn().await;
    let alice = app.user("alice@lab.test").await;
    let ws = app.workspace(&alice, "lab").await;
    app.grant(&ws, 10).await;
    let id = named_job(&app, &alice, &ws, "one", "sleep").await;
    let data = app
        .ok(Some(&alice.token), "query($id: ID!) { node(id: $id) { __typename ... on Job { name submitter { email } workspace { name } url } } }", json!({"id": id}))
        .await;
    assert_eq!(data["node"]["__typename"], "Job");
    assert_eq!(data["node"]["submitter"]["email"], "alice@lab.test");
    assert_eq!(data["node"]["workspace"]["name"], "lab");
    assert_eq!(data["node"]["url"], app.url(&format!("/jobs/{id}")));
    // The link opens the job.
    let response = app
        .client()
        .get(app.url(&format!("/jobs/{id}")))
        .bearer_auth(&alice.token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
}

#[tokio::test]
async fn a_result_exports_as_json_and_as_csv_when_tabular_with_the_same_access_rules() {
    let app = TestApp::spawn().await;
    let alice = app.user("alice@lab.test").await;
    let eve = app.user("eve@lab.test").await;
    let ws = app.workspace(&alice, "lab").await;
    app.grant(&ws, 100).await;
    let id = named_job(&app, &alice, &ws, "counts", "sleep").await;
    app.drive(&id, JobStatus::Processing, Change::default())
        .await
        .unwrap();
    let result = json!({"k": 2, "kmers": [{"kmer": "AC", "count": 2}, {"kmer": "CG", "count": 1}]});
    app.drive(
        &id,
        JobStatus::Completed,
        Change {
            result: Some(result.clone()),
            ..Default::default()
        },
    )
    .await
    .unwrap();

    let data = app
        .ok(
            Some(&alice.token),
            "query($id: ID!) { job(id: $id) { exportCsv exportJson } }",
            json!({"id": id}),
        )
        .await;
    assert_eq!(data["job"]["exportCsv"], "count,kmer\n2,AC\n1,CG\n");
    let document = &data["job"]["exportJson"];
    assert_eq!(document["result"], result);
    assert_eq!(document["status"], "COMPLETED");
    assert_eq!(document["timeline"].as_array().unwrap().len(), 3);

    let get = |path: String, token: Option<String>| {
        let mut request = app.client().get(app.url(&path));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        request.send()
    };
    let response = get(format!("/jobs/{id}/export.csv"), Some(alice.token.clone()))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/csv")
    );
    assert!(
        response.headers()["content-disposition"]
            .to_str()
            .unwrap()
            .contains(&format!("{id}.csv"))
    );
    assert_eq!(response.text().await.unwrap(), "count,kmer\n2,AC\n1,CG\n");

    let response = get(format!("/jobs/{id}/export.json"), Some(alice.token.clone()))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["id"], id.as_str());

    for token in [Some(eve.token.clone()), None] {
        let response = get(format!("/jobs/{id}/export.json"), token).await.unwrap();
        assert_eq!(response.status(), StatusCode::NOT_FOUND);
    }
    app.ok(
        Some(&alice.token),
        "mutation($id: ID!) { setJobSharing(input: {jobId: $id, visibility: PUBLIC}) { job { id } } }",
        json!({"id": id}),
    )
    .await;
    let response = get(format!("/jobs/{id}/export.csv"), None).await.unwrap();
    assert_eq!(
        response.status(),
        StatusCode::OK,
        "a public job exports without a token"
    );

    let other = named_job(&app, &alice, &ws, "untabular", "sleep").await;
    let response = get(
        format!("/jobs/{other}/export.csv"),
        Some(alice.token.clone()),
    )
    .await
    .unwrap();
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    let body: Value = response.json().await.unwrap();
    assert_eq!(
        body["errors"][0]["message"],
        "this job has no tabular result to export as CSV"
    );
}

#[tokio::test]
async fn a_page_of_jobs_costs_the_same_few_queries_whatever_its_size() {
    // The viewer's token and standing stay trusted for the whole test, however slow it runs.
    let app = TestApp::spawn_with(|c| c.server.auth_cache_seconds = 600).await;
    let users = [
        app.user("alice@lab.test").await,
        app.user("bob@lab.test").await,
        app.user("carol@lab.test").await,
    ];
    let ws = app.workspace(&users[0], "lab").await;
    app.add_member(&users[0], &ws, &users[1], "MEMBER").await;
    app.add_member(&users[0], &ws, &users[2], "MEMBER").await;
    app.grant(&ws, 1000).await;
    for user in &users {
        let jobs: Vec<_> = (0..34)
            .map(|_| json!({"tool": "sleep", "settings": {"seconds": 0}}))
            .collect();
        app.submit_batch(user, &ws, &jobs).await;
    }
    let page = "query($ws: ID!, $first: Int) { workspace(id: $ws) { jobs(first: $first) { edges { node {
        id name status toolName tool { title } creditCost submitter { email displayName } workspace { name } } } } } }";
    let token = Some(users[0].token.as_str());
    // Warm up: the token is checked once, then trusted for a few seconds.
    app.ok(token, "{ viewer { isAuthenticated } }", json!({}))
        .await;
    let mut costs = Vec::new();
    for first in [100, 10] {
        let (cost, data) = app
            .statements(|| app.ok(token, page, json!({"ws": ws, "first": first})))
            .await;
        costs.push(cost);
        let edges = data["workspace"]["jobs"]["edges"].as_array().unwrap();
        assert_eq!(edges.len(), first as usize);
        assert!(edges.iter().all(|e| e["node"]["workspace"]["name"] == "lab"
            && e["node"]["submitter"]["email"].is_string()));
    }
    assert_eq!(
        costs[0], costs[1],
        "a page of 100 costs what a page of 10 does: {costs:?}"
    );
    // The workspace with the viewer's membership; the page with its submitters.
    assert_eq!(costs[0], 2, "a page costs {} queries", costs[0]);
}

/// Sends `query` twice and returns its answer, after checking that the second, whose document
/// passed validation and selects no key twice, was written as its objects were resolved
/// (`graphql::inline`) and says the same as the first, resolved as values.
async fn answered_alike_again(app: &TestApp, token: &str, query: &str, variables: Value) -> Value {
    let text = || async {
        let response = app
            .client()
            .post(app.url("/graphql"))
            .bearer_auth(token)
            .json(&json!({ "query": query, "variables": variables }))
            .send()
            .await
            .expect("the server answers");
        assert_eq!(response.status(), StatusCode::OK);
        response.text().await.expect("a body")
    };
    let first = text().await;
    let document = app
        .state
        .documents
        .get(&query.to_owned())
        .expect("the document is kept");
    let again = text().await;
    // The same text but for the order of the fields of objects async-graphql resolves itself,
    // which is the order their values came in.
    let answer: Value = serde_json::from_str(&first).expect("JSON");
    let again: Value = serde_json::from_str(&again).expect("JSON");
    assert_eq!(again, answer, "{query}");
    // Unless a key repeats, or the first answer was refused (no operation passed).
    let repeats = query.contains("{ id id ")
        || query.contains("nodes { id name } nodes")
        || answer.get("data").is_none_or(Value::is_null);
    assert_eq!(document.keys_unique(), !repeats, "{query}");
    answer
}

/// Every field of `Job` that needs no arguments, with a selection for the object-typed ones.
async fn job_field_selections(app: &TestApp, token: &str) -> Vec<String> {
    let data = app
        .ok(
            Some(token),
            "{ __type(name: \"Job\") { fields { name args { type { kind } } type { kind ofType { kind ofType { kind ofType { kind } } } } } } }",
            json!({}),
        )
        .await;
    let mut selections = Vec::new();
    for field in data["__type"]["fields"].as_array().unwrap() {
        // Fields whose arguments are all optional are selected without them.
        if field["args"]
            .as_array()
            .unwrap()
            .iter()
            .any(|arg| arg["type"]["kind"] == "NON_NULL")
        {
            continue;
        }
        // The innermost kind, under NON_NULL and LIST wrappers.
        let mut ty = &field["type"];
        while matches!(ty["kind"].as_str(), Some("NON_NULL" | "LIST")) {
            ty = &ty["ofType"];
        }
        let name = field["name"].as_str().unwrap();
        selections.push(match ty["kind"].as_str() {
            Some("OBJECT" | "INTERFACE" | "UNION") => format!("{name} {{ __typename }}"),
            _ => name.to_owned(),
        });
    }
    selections
}

#[tokio::test]
async fn a_list_answers_every_job_field_exactly_as_the_job_itself() {
    // A list reads only the columns its selected fields need: each field on its own must
    // still read the same through the list as through `job(id)`.
    let app = TestApp::spawn().await;
    let alice = app.user("alice@lab.test").await;
    let ws = app.workspace(&alice, "lab").await;
    app.grant(&ws, 1000).await;
    let original = named_job(&app, &alice, &ws, "counted", "kmer-count").await;
    app.drive(&original, JobStatus::Processing, Change::default())
        .await
        .unwrap();
    app.drive(
        &original,
        JobStatus::Completed,
        Change {
            result: Some(json!([{"kmer": "AC", "count": 2}])),
            resources: Some(json!({"wallSeconds": 1.5})),
            ..Change::default()
        },
    )
    .await
    .unwrap();
    let copy = app
        .ok(
            Some(&alice.token),
            "mutation($id: ID!) { duplicateJob(input: {jobId: $id, settings: {k: 3}}) { job { id } } }",
            json!({ "id": original }),
        )
        .await["duplicateJob"]["job"]["id"]
        .as_str()
        .unwrap()
        .to_owned();

    // A job with a stage, a priority, an idempotency key, an error and a refund...
    let failed = app
        .ok(
            Some(&alice.token),
            "mutation($ws: ID!) { submitJob(input: {workspaceId: $ws, tool: \"sleep\", priority: 5, idempotencyKey: \"k-1\"}) { job { id } } }",
            json!({ "ws": ws }),
        )
        .await["submitJob"]["job"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    app.drive(
        &failed,
        JobStatus::Processing,
        Change {
            stage: Some("Aligning".into()),
            progress: Some(0.5),
            ..Change::default()
        },
    )
    .await
    .unwrap();
    app.drive(
        &failed,
        JobStatus::Failed,
        Change {
            error_message: Some("out of memory".into()),
            error_code: Some("OOM".into()),
            ..Change::default()
        },
    )
    .await
    .unwrap();
    // ...one in a batch, and a public one.
    let batched = app
        .ok(
            Some(&alice.token),
            "mutation($ws: ID!) { submitBatch(input: {workspaceId: $ws, name: \"b\", jobs: [{tool: \"noop\"}]}) { jobs { id } } }",
            json!({ "ws": ws }),
        )
        .await["submitBatch"]["jobs"][0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    app.ok(
        Some(&alice.token),
        "mutation($id: ID!) { setJobSharing(input: {jobId: $id, visibility: PUBLIC}) { job { id } } }",
        json!({ "id": original }),
    )
    .await;

    let selections = job_field_selections(&app, &alice.token).await;
    assert!(selections.len() > 30, "{selections:?}");
    for selection in &selections {
        let query = format!(
            "query($ws: ID!) {{ workspace(id: $ws) {{ jobs(first: 10) {{ edges {{ node {{ id {selection} }} }} nodes {{ id {selection} }} }} }} }}"
        );
        let listed = answered_alike_again(&app, &alice.token, &query, json!({ "ws": ws })).await;
        assert!(listed.get("errors").is_none(), "{listed}");
        let listed = &listed["data"];
        let jobs = &listed["workspace"]["jobs"];
        for id in [&original, &copy, &failed, &batched] {
            let alone = app
                .ok(
                    Some(&alice.token),
                    &format!("query($id: ID!) {{ job(id: $id) {{ id {selection} }} }}"),
                    json!({ "id": id }),
                )
                .await;
            let find = |list: &Value| {
                list.as_array()
                    .unwrap()
                    .iter()
                    .find(|job| job["id"] == json!(id))
                    .cloned()
                    .unwrap()
            };
            let edges: Vec<Value> = jobs["edges"]
                .as_array()
                .unwrap()
                .iter()
                .map(|edge| edge["node"].clone())
                .collect();
            assert_eq!(
                find(&json!(edges)),
                alone["job"],
                "{selection} through edges"
            );
            assert_eq!(
                find(&jobs["nodes"]),
                alone["job"],
                "{selection} through nodes"
            );
        }
    }
    // The documents did reach the list when asked for, newest first.
    let listed = app
        .ok(
            Some(&alice.token),
            "query($ws: ID!) { workspace(id: $ws) { jobs(first: 10) { nodes { settings result changesFromParent { name } } } } }",
            json!({ "ws": ws }),
        )
        .await;
    let nodes = &listed["workspace"]["jobs"]["nodes"];
    assert_eq!(nodes[2]["settings"]["k"], 3, "{listed}");
    assert_eq!(nodes[3]["result"][0]["kmer"], "AC", "{listed}");
    assert!(!nodes[2]["changesFromParent"].as_array().unwrap().is_empty());
}

/// A batch's jobs are found through the batch index, which holds batched jobs only (jobs outside
/// batches add no entry to it when they are submitted, claimed or completed).
#[tokio::test]
async fn a_batchs_jobs_are_read_from_the_batch_index() {
    use sea_orm::QueryTrait as _;

    let app = TestApp::spawn().await;
    let alice = app.user("alice@lab.test").await;
    let ws = app.workspace(&alice, "lab").await;
    app.grant(&ws, 10_000).await;
    let jobs: Vec<_> = (0..500).map(|_| json!({"tool": "noop"})).collect();
    let mut batches = Vec::new();
    for _ in 0..4 {
        let id = app.submit_batch(&alice, &ws, &jobs).await;
        batches.push(jobgraph::ids::decode::<entity::ids::BatchId>("id", &id).unwrap());
    }
    let backend = app.db.get_database_backend();
    let query = backend.build(&jobgraph::jobs::history::batch_jobs(batches[2]).into_query());
    let plan = crate::support::plan(&app.db, query).await;
    assert!(plan.contains("idx_jobs_batch"), "{plan}");
    assert!(!plan.contains("Seq Scan"), "{plan}");
    assert!(plan.lines().all(|step| step != "SCAN jobs"), "{plan}");
    // And it finds exactly that batch's jobs.
    let found = jobgraph::jobs::history::batch_jobs(batches[2])
        .all(&app.db)
        .await
        .unwrap();
    assert_eq!(found.len(), 500);
    assert!(found.iter().all(|job| job.batch_id == Some(batches[2])));
}

/// The history's tool and submitter filters read `job_keys` through its indexes: those keys are
/// written once per job, where on `jobs` every change of status added an entry to their indexes.
#[tokio::test]
async fn a_tools_and_a_submitters_jobs_are_read_through_the_job_keys() {
    use jobgraph::jobs::history::{self, JobFilter};
    use sea_orm::{QueryOrder as _, QuerySelect as _, QueryTrait as _};

    let app = TestApp::spawn().await;
    let alice = app.user("alice@lab.test").await;
    let bob = app.user("bob@lab.test").await;
    let ws = app.workspace(&alice, "lab").await;
    app.add_member(&alice, &ws, &bob, "MEMBER").await;
    app.grant(&ws, 100_000).await;
    let noop: Vec<_> = (0..500).map(|_| json!({"tool": "noop"})).collect();
    for _ in 0..3 {
        app.submit_batch(&alice, &ws, &noop).await;
    }
    let sleep: Vec<_> = (0..30)
        .map(|_| json!({"tool": "sleep", "settings": {"seconds": 0}}))
        .collect();
    app.submit_batch(&bob, &ws, &sleep).await;
    let ws_id = jobgraph::ids::decode::<entity::ids::WorkspaceId>("id", &ws).unwrap();
    let bob_id = jobgraph::ids::decode::<entity::ids::UserId>("id", &bob.id).unwrap();
    let backend = app.db.get_database_backend();
    for (filter, index) in [
        (
            JobFilter {
                tool: Some("sleep".to_owned()),
                ..Default::default()
            },
            "idx_job_keys_tool",
        ),
        (
            JobFilter {
                submitter_id: Some(bob_id),
                ..Default::default()
            },
            "idx_job_keys_submitter",
        ),
    ] {
        let page = history::filtered(ws_id, &filter)
            .order_by_desc(entity::job::Column::Id)
            .limit(21);
        let plan = crate::support::plan(&app.db, backend.build(&page.clone().into_query())).await;
        assert!(plan.contains(index), "{filter:?}: {plan}");
        assert!(!plan.contains("Seq Scan"), "{filter:?}: {plan}");
        // Each key's job is then looked up by id, not among the workspace's jobs.
        let by_id = match backend {
            sea_orm::DatabaseBackend::Postgres => "Index Scan using jobs_pkey on jobs",
            _ => "SEARCH jobs USING INDEX sqlite_autoindex_jobs_1 (id=?)",
        };
        assert!(plan.contains(by_id), "{filter:?}: {plan}");
        let found = page.all(&app.db).await.unwrap();
        assert_eq!(found.len(), 21);
        assert!(
            found
                .iter()
                .all(|job| job.tool == "sleep" && job.submitter_id == bob_id),
            "{filter:?}"
        );
        assert!(found.windows(2).all(|w| w[0].id > w[1].id), "newest first");
    }
}

#[tokio::test]
async fn a_list_answers_fragments_aliases_repeated_fields_and_errors_as_the_job_itself() {
    // A list resolves its jobs' fields in place (`graphql::inline`); `job(id)` resolves them as
    // async-graphql does. Both must answer every shape of selection alike.
    let app = TestApp::spawn().await;
    let alice = app.user("alice@lab.test").await;
    let ws = app.workspace(&alice, "lab").await;
    app.grant(&ws, 1000).await;
    let ids = [
        named_job(&app, &alice, &ws, "first", "sleep").await,
        named_job(&app, &alice, &ws, "second", "kmer-count").await,
    ];
    let fragment = "fragment Names on Job { name toolName submitter { email } }";
    let selection = "__typename id ...Names ... on Job { status submitter { displayName } } \
        ... on Node { id } ... { label: name } \
        again: submitter { __typename email } name";
    let listed = app
        .ok(
            Some(&alice.token),
            &format!(
                "query($ws: ID!) {{ workspace(id: $ws) {{ jobs(first: 10) {{ \
                 edges {{ node {{ {selection} }} }} nodes {{ {selection} }} }} }} }} {fragment}"
            ),
            json!({ "ws": ws }),
        )
        .await;
    let nodes = listed["workspace"]["jobs"]["nodes"].as_array().unwrap();
    assert_eq!(nodes.len(), 2, "{listed}");
    for (at, id) in ids.iter().rev().enumerate() {
        let alone = app
            .ok(
                Some(&alice.token),
                &format!("query($id: ID!) {{ job(id: $id) {{ {selection} }} }} {fragment}"),
                json!({ "id": id }),
            )
            .await;
        assert_eq!(nodes[at], alone["job"], "through nodes");
        assert_eq!(
            listed["workspace"]["jobs"]["edges"][at]["node"], alone["job"],
            "through edges"
        );
    }
    // What each selection gave, the fragments' fields merged with the rest.
    let node = &nodes[0];
    assert_eq!(node["__typename"], "Job");
    assert_eq!(node["id"], json!(ids[1]));
    assert_eq!(node["label"], "second");
    assert_eq!(node["name"], "second");
    assert_eq!(node["toolName"], "kmer-count");
    assert_eq!(node["status"], "QUEUED");
    assert_eq!(node["submitter"]["email"], "alice@lab.test");
    assert!(node["submitter"]["displayName"].is_string(), "{node}");
    assert_eq!(node["again"]["__typename"], "User");

    // A field that fails: its error, with its path, and the job's other fields.
    let failing = "id viewerCanDuplicate(into: \"not an id\") name";
    let (status, body) = app
        .post(
            Some(&alice.token),
            &format!("query($ws: ID!) {{ workspace(id: $ws) {{ jobs(first: 10) {{ nodes {{ {failing} }} }} }} }}"),
            json!({ "ws": ws }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (_, alone) = app
        .post(
            Some(&alice.token),
            &format!("query($id: ID!) {{ job(id: $id) {{ {failing} }} }}"),
            json!({ "id": ids[1] }),
        )
        .await;
    assert_eq!(
        body["data"]["workspace"]["jobs"]["nodes"][0], alone["data"]["job"],
        "{body}"
    );
    let errors = body["errors"].as_array().unwrap();
    assert_eq!(errors.len(), 2, "{body}");
    for (at, error) in errors.iter().enumerate() {
        assert_eq!(
            error["extensions"]["code"],
            alone["errors"][0]["extensions"]["code"]
        );
        assert_eq!(
            error["path"],
            json!(["workspace", "jobs", "nodes", at, "viewerCanDuplicate"]),
            "{body}"
        );
    }
}

#[tokio::test]
async fn a_page_written_as_its_objects_resolve_answers_as_the_page_resolved_as_values() {
    // Once a document passed validation and selects no key twice, its pages' objects are
    // written as JSON as they resolve (`graphql::inline`): fragments, aliases, `__typename`,
    // nulls, documents, a field that fails and one that waits must read as before.
    let app = TestApp::spawn().await;
    let alice = app.user("alice@lab.test").await;
    let ws = app.workspace(&alice, "lab").await;
    app.grant(&ws, 1000).await;
    named_job(&app, &alice, &ws, "first \"quoted\" \\ slash", "sleep").await;
    named_job(&app, &alice, &ws, "second é 🧬", "kmer-count").await;
    let fragment = "fragment Costs on Job { toolName creditCost settings result }";
    let selection = "__typename ...Costs ... on Job { status progress createdAt } \
        ... on Node { id } label: name startedAt durationSeconds \
        submitter { __typename id email displayName isPending isPlatformAdmin createdAt } failing: viewerCanDuplicate(into: \"not an id\") \
        viewerCanCancel queuePosition tool { name inputs { name } price { base } }";
    let query = format!(
        "query($ws: ID!) {{ workspace(id: $ws) {{ jobs(first: 10) {{ \
         edges {{ cursor node {{ {selection} }} }} nodes {{ {selection} }} \
         pageInfo {{ hasNextPage }} }} }} }} {fragment}"
    );
    let answer = answered_alike_again(&app, &alice.token, &query, json!({ "ws": ws })).await;
    let nodes = answer["data"]["workspace"]["jobs"]["nodes"]
        .as_array()
        .unwrap_or_else(|| panic!("{answer}"));
    assert_eq!(nodes.len(), 2, "{answer}");
    assert_eq!(nodes[0]["label"], "second é 🧬");
    assert_eq!(nodes[1]["label"], "first \"quoted\" \\ slash");
    assert_eq!(nodes[0]["__typename"], "Job");
    assert_eq!(nodes[0]["submitter"]["__typename"], "User");
    assert_eq!(nodes[0]["submitter"]["email"], "alice@lab.test");
    assert_eq!(nodes[0]["status"], "QUEUED");
    assert!(nodes[0]["result"].is_null(), "{answer}");
    assert!(nodes[0]["settings"].is_object(), "{answer}");
    assert!(nodes[0]["createdAt"].is_string(), "{answer}");
    assert!(nodes[0]["queuePosition"].is_number(), "{answer}");
    assert_eq!(nodes[0]["tool"]["name"], "kmer-count", "{answer}");
    assert!(nodes[0]["tool"]["inputs"].is_array(), "{answer}");
    // The failing field is left out of each job, its error there four times.
    assert!(nodes[0].get("failing").is_none(), "{answer}");
    assert_eq!(answer["errors"].as_array().unwrap().len(), 4, "{answer}");

    // A selection whose every field writes itself: each edge's node, and each job's submitter,
    // read with the page, and its tool, from the catalog, are written straight into their
    // parent's text; through fragments, `__typename` and aliases they answer as `job(id)` does.
    let fragment = "fragment Who on User { displayName isPending } \
        fragment Runs on Tool { timeoutSeconds maxAttempts }";
    let selection = "__typename id label: name status createdAt \
        submitter { __typename id ...Who ... on User { email } when: createdAt } \
        tool { __typename name title description v: version settingsSchema ...Runs }";
    let query = format!(
        "query($ws: ID!) {{ workspace(id: $ws) {{ jobs(first: 10) {{ \
         edges {{ node {{ {selection} }} cursor }} nodes {{ {selection} }} }} }} }} {fragment}"
    );
    let answer = answered_alike_again(&app, &alice.token, &query, json!({ "ws": ws })).await;
    assert!(answer.get("errors").is_none(), "{answer}");
    let jobs = &answer["data"]["workspace"]["jobs"];
    assert_eq!(jobs["edges"].as_array().unwrap().len(), 2, "{answer}");
    for (at, edge) in jobs["edges"].as_array().unwrap().iter().enumerate() {
        assert_eq!(edge["node"], jobs["nodes"][at], "{answer}");
        assert!(edge["cursor"].is_string(), "{answer}");
        let alone = app
            .ok(
                Some(&alice.token),
                &format!("query($id: ID!) {{ job(id: $id) {{ {selection} }} }} {fragment}"),
                json!({ "id": edge["node"]["id"] }),
            )
            .await;
        assert_eq!(edge["node"], alone["job"], "{answer}");
        let submitter = &edge["node"]["submitter"];
        assert_eq!(submitter["__typename"], "User", "{answer}");
        assert_eq!(submitter["email"], "alice@lab.test", "{answer}");
        assert!(submitter["when"].is_string(), "{answer}");
        assert_eq!(submitter["isPending"], false, "{answer}");
        let tool = &edge["node"]["tool"];
        assert_eq!(tool["__typename"], "Tool", "{answer}");
        assert!(tool["v"].is_string(), "{answer}");
        assert!(tool["timeoutSeconds"].is_number(), "{answer}");
        assert!(tool["settingsSchema"].is_object(), "{answer}");
    }
    assert_eq!(jobs["nodes"][0]["tool"]["name"], "kmer-count", "{answer}");
    assert_eq!(jobs["nodes"][1]["tool"]["name"], "sleep", "{answer}");

    // A key selected twice anywhere: the objects are resolved as values, merged as before.
    let repeated = "query($ws: ID!) { workspace(id: $ws) { jobs(first: 10) { \
         nodes { id name } nodes { id submitter { email } } } } }"
        .to_owned();
    let answer = answered_alike_again(&app, &alice.token, &repeated, json!({ "ws": ws })).await;
    let document = app.state.documents.get(&repeated).unwrap();
    assert!(!document.keys_unique());
    let nodes = answer["data"]["workspace"]["jobs"]["nodes"]
        .as_array()
        .unwrap();
    assert_eq!(nodes[0]["name"], "second é 🧬", "{answer}");
    assert_eq!(nodes[0]["submitter"]["email"], "alice@lab.test", "{answer}");
}
