//! Where a waiting job stands: its place in the queue, why it waits and when it will likely
//! start, for a page of jobs at the cost of a few statements.

use std::time::Duration;

use chrono::{DateTime, Utc};
use entity::job::JobStatus;
use jobgraph::jobs::lifecycle::Change;
use jobgraph::queue::{self, Limits, Tools, workers};
use serde_json::{Value, json};

use crate::support::{TestApp, TestUser};

const SOLO: &str = r#"
[[tools]]
name = "solo"
title = "One at a time"
version = "1"
timeout_seconds = 30
max_running = 1
executor = { kind = "builtin", function = "sleep" }
price = { base = 1 }
"#;

/// A server without workers and without a workspace limit of its own: the limit in effect is
/// the one the workers record in the register.
async fn spawn() -> TestApp {
    TestApp::spawn_with_tools(SOLO, |config| config.server.workers = 0).await
}

async fn wait_of(app: &TestApp, user: &TestUser, id: &str) -> Value {
    app.ok(
        Some(&user.token),
        "query($id: ID!) { job(id: $id) { status queuePosition waitReason eligibleAt estimatedStartAt } }",
        json!({"id": id}),
    )
    .await["job"]
        .clone()
}

fn time(value: &Value) -> DateTime<Utc> {
    value.as_str().unwrap().parse().unwrap()
}

async fn claim(app: &TestApp, tools: Tools, limit: u64) -> Vec<entity::job::Model> {
    let limits = Limits::new(&app.state.catalog, Some(2));
    queue::claim(
        &app.db,
        "worker",
        &tools,
        &limits,
        limit,
        Duration::from_secs(60),
    )
    .await
    .unwrap()
}

#[tokio::test]
async fn a_waiting_job_says_where_it_stands_and_why() {
    let app = spawn().await;
    let alice = app.user("alice@lab.test").await;
    let ws = app.workspace(&alice, "lab").await;
    app.grant(&ws, 1000).await;
    let mut ids = Vec::new();
    for _ in 0..3 {
        ids.push(
            app.submit(
                &alice,
                &ws,
                json!({"tool": "sleep", "settings": {"seconds": 1}}),
            )
            .await,
        );
    }
    // Submitted last, claimed first.
    let urgent = app
        .submit(
            &alice,
            &ws,
            json!({"tool": "sleep", "priority": 10, "settings": {"seconds": 1}}),
        )
        .await;
    ids.insert(0, urgent.clone());

    // Nobody runs the tool yet.
    for (position, id) in ids.iter().enumerate() {
        let wait = wait_of(&app, &alice, id).await;
        assert_eq!(wait["status"], "QUEUED");
        assert_eq!(wait["queuePosition"], position, "{wait}");
        assert_eq!(wait["waitReason"], "NO_WORKER_FOR_TOOL");
        assert_eq!(wait["estimatedStartAt"], Value::Null);
    }

    // A worker of two slots runs it.
    let tools = ["sleep".to_owned(), "solo".to_owned()];
    workers::seen(
        &app.db,
        workers::Announcement {
            name: "worker",
            kind: "local",
            tools: &tools,
            capacity: 2,
            // Its claims keep two runs at once per workspace (`claim` below).
            workspace_max_running: Some(2),
            user_id: None,
        },
    )
    .await
    .unwrap();
    let mut starts = Vec::new();
    for (position, id) in ids.iter().enumerate() {
        let wait = wait_of(&app, &alice, id).await;
        assert_eq!(wait["queuePosition"], position);
        let reason = if position == 0 {
            "WAITING_FOR_WORKER"
        } else {
            "QUEUED_BEHIND_OTHERS"
        };
        assert_eq!(wait["waitReason"], reason, "{wait}");
        starts.push(time(&wait["estimatedStartAt"]));
    }
    assert!(starts.windows(2).all(|w| w[0] <= w[1]), "{starts:?}");
    assert!(
        starts[3] > starts[0],
        "a job two waves back starts later: {starts:?}"
    );

    // The workspace runs two jobs, its limit: the others wait for it.
    let claimed = claim(&app, Tools::Except(Vec::new()), 2).await;
    assert_eq!(claimed.len(), 2);
    for (position, id) in ids[2..].iter().enumerate() {
        let wait = wait_of(&app, &alice, id).await;
        assert_eq!(wait["queuePosition"], position);
        assert_eq!(wait["waitReason"], "WORKSPACE_LIMIT", "{wait}");
    }
    let running = wait_of(&app, &alice, &urgent).await;
    assert_eq!(running["status"], "PROCESSING");
    assert_eq!(running["queuePosition"], Value::Null);
    assert_eq!(running["waitReason"], Value::Null);
    assert_eq!(running["estimatedStartAt"], Value::Null);

    // A failed attempt waits out its backoff.
    let retry_at = Utc::now() + chrono::Duration::seconds(90);
    app.drive(
        &urgent,
        JobStatus::Retry,
        Change {
            run_after: Some(retry_at),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let retrying = wait_of(&app, &alice, &urgent).await;
    assert_eq!(retrying["waitReason"], "RETRY_BACKOFF");
    assert_eq!(retrying["queuePosition"], Value::Null);
    let eligible = time(&retrying["eligibleAt"]);
    assert!(
        (eligible - retry_at).num_milliseconds().abs() < 5,
        "{retrying}"
    );
    assert_eq!(time(&retrying["estimatedStartAt"]), eligible);

    // Another workspace's job of a tool at its own limit waits for the tool.
    let bob = app.user("bob@lab.test").await;
    let other = app.workspace(&bob, "other").await;
    app.grant(&other, 100).await;
    let first = app
        .submit(
            &bob,
            &other,
            json!({"tool": "solo", "settings": {"seconds": 1}}),
        )
        .await;
    let second = app
        .submit(
            &bob,
            &other,
            json!({"tool": "solo", "settings": {"seconds": 1}}),
        )
        .await;
    let claimed = claim(&app, Tools::Only(vec!["solo".to_owned()]), 2).await;
    assert_eq!(claimed.len(), 1, "one `solo` run at a time");
    assert_eq!(wait_of(&app, &bob, &first).await["status"], "PROCESSING");
    let held = wait_of(&app, &bob, &second).await;
    assert_eq!(held["waitReason"], "TOOL_LIMIT", "{held}");
}

#[tokio::test]
async fn a_page_of_waiting_jobs_costs_the_same_few_statements_whatever_its_size() {
    let app = spawn().await;
    let alice = app.user("alice@lab.test").await;
    let ws = app.workspace(&alice, "lab").await;
    app.grant(&ws, 1000).await;
    let jobs: Vec<_> = (0..60)
        .map(|i| json!({"tool": "sleep", "priority": i % 3, "settings": {"seconds": 1}}))
        .collect();
    app.submit_batch(&alice, &ws, &jobs).await;
    let page =
        "query($ws: ID!, $first: Int) { workspace(id: $ws) { jobs(first: $first) { edges { node {
        id priority queuedAt queuePosition waitReason estimatedStartAt } } } } }";
    let token = Some(alice.token.as_str());
    app.ok(token, "{ viewer { isAuthenticated } }", json!({}))
        .await;
    // Once, so that the tool's typical run time is known.
    app.ok(token, page, json!({"ws": ws, "first": 1})).await;
    let mut costs = Vec::new();
    for first in [50, 5] {
        let (cost, data) = app
            .statements(|| app.ok(token, page, json!({"ws": ws, "first": first})))
            .await;
        costs.push(cost);
        let nodes: Vec<&Value> = data["workspace"]["jobs"]["edges"]
            .as_array()
            .unwrap()
            .iter()
            .map(|edge| &edge["node"])
            .collect();
        assert_eq!(nodes.len(), first);
        // Each position counts the jobs of the whole queue claimed before it: a job of higher
        // priority, or queued earlier, comes first. (The batch queued its jobs together: among
        // those, submission order decides.)
        let key = |n: &Value| {
            (
                -n["priority"].as_i64().unwrap(),
                n["queuedAt"].as_str().unwrap().to_owned(),
            )
        };
        // The list is newest first: of two jobs queued together, the later one listed was
        // submitted first.
        for (i, a) in nodes.iter().enumerate() {
            for (j, b) in nodes.iter().enumerate() {
                if key(a) < key(b) || (key(a) == key(b) && i > j) {
                    assert!(
                        a["queuePosition"].as_i64() < b["queuePosition"].as_i64(),
                        "{a} is claimed before {b}"
                    );
                }
            }
        }
    }
    let data = app.ok(token, page, json!({"ws": ws, "first": 60})).await;
    let mut positions: Vec<i64> = data["workspace"]["jobs"]["edges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|edge| edge["node"]["queuePosition"].as_i64().unwrap())
        .collect();
    positions.sort();
    assert_eq!(positions, (0..60).collect::<Vec<_>>());
    // Workers claim in the order the positions give (two: the helper's workspace limit).
    let by_position: std::collections::HashMap<i64, String> = data["workspace"]["jobs"]["edges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|edge| {
            let node = &edge["node"];
            (
                node["queuePosition"].as_i64().unwrap(),
                node["id"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let claimed: Vec<String> = claim(&app, Tools::Only(vec!["sleep".to_owned()]), 2)
        .await
        .iter()
        .map(|job| jobgraph::ids::encode(job.id).to_string())
        .collect();
    let mut expected: Vec<String> = (0..2).map(|p| by_position[&p].clone()).collect();
    let mut claimed_sorted = claimed.clone();
    claimed_sorted.sort();
    expected.sort();
    assert_eq!(claimed_sorted, expected, "the two at positions 0 and 1");
    assert_eq!(
        costs[0], costs[1],
        "a page of 50 costs what a page of 5 does: {costs:?}"
    );
    // The page (the viewer's standing is known from the warm-up), then one count over the
    // queue, one of running jobs and one read of the worker register.
    assert_eq!(costs[0], 4, "a page costs {} statements", costs[0]);
}

/// A claim reads the head of the queue in claim order from the claim index, however long the
/// queue and whatever the table's statistics say (here there are none, as on a server that
/// never analyzed it): it never gathers every queued job to sort them.
#[tokio::test]
async fn a_claim_reads_the_head_of_a_long_queue_from_the_claim_index() {
    use sea_orm::DatabaseBackend;

    let app = spawn().await;
    let alice = app.user("alice@lab.test").await;
    let ws = app.workspace(&alice, "lab").await;
    app.grant(&ws, 10_000).await;
    let jobs: Vec<_> = (0..1000).map(|_| json!({"tool": "noop"})).collect();
    for _ in 0..3 {
        app.submit_batch(&alice, &ws, &jobs).await;
    }
    let backend = app.db.get_database_backend();
    let tx = jobgraph::db::begin_write(&app.db).await.unwrap();
    jobgraph::store::begin_claim(&tx).await.unwrap();
    // The claim itself, as a worker sends it: the head, then the claimed jobs by id.
    let head = queue::head(&Tools::Except(Vec::new()), 64);
    let claim = jobgraph::store::claim_statement(
        &tx,
        jobgraph::store::head_ids(&tx, head),
        "worker",
        Duration::from_secs(30),
    );
    let plan = crate::support::plan(&tx, claim).await;
    assert!(plan.contains("idx_jobs_claim"), "{plan}");
    match backend {
        // Read in claim order, not sorted; the claimed jobs found through the primary key, not
        // by joining every QUEUED job or reading the table.
        DatabaseBackend::Postgres => {
            assert!(!plan.contains("Sort"), "{plan}");
            assert!(plan.contains("Index Scan using jobs_pkey"), "{plan}");
            assert!(!plan.contains("Join"), "{plan}");
            assert!(!plan.contains("Seq Scan"), "{plan}");
        }
        _ => {
            assert!(!plan.contains("TEMP B-TREE"), "{plan}");
            assert!(plan.contains("SEARCH jobs USING"), "{plan}");
            assert!(plan.lines().all(|step| step != "SCAN jobs"), "{plan}");
        }
    }
}

#[tokio::test]
async fn a_job_back_from_a_lost_run_keeps_its_place_at_the_head_of_the_queue() {
    use sea_orm::{ColumnTrait as _, EntityTrait as _, QueryFilter as _, sea_query::Expr};

    let app = spawn().await;
    let alice = app.user("alice@lab.test").await;
    let ws = app.workspace(&alice, "lab").await;
    app.grant(&ws, 100).await;
    let lost = app
        .submit(
            &alice,
            &ws,
            json!({"tool": "sleep", "settings": {"seconds": 1}}),
        )
        .await;
    let claimed = claim(&app, Tools::Except(Vec::new()), 1).await;
    assert_eq!(claimed.len(), 1);
    let later = [
        app.submit(
            &alice,
            &ws,
            json!({"tool": "sleep", "settings": {"seconds": 1}}),
        )
        .await,
        app.submit(
            &alice,
            &ws,
            json!({"tool": "sleep", "settings": {"seconds": 1}}),
        )
        .await,
    ];

    // Its worker dies: the lease runs out, the job is reclaimed and, after its backoff, queued
    // again.
    entity::job::Entity::update_many()
        .col_expr(
            entity::job::Column::LeaseExpiresAt,
            Expr::value(Utc::now() - chrono::Duration::seconds(1)),
        )
        .filter(entity::job::Column::Id.eq(claimed[0].id))
        .exec(&app.db)
        .await
        .unwrap();
    assert_eq!(
        queue::reclaim_expired(&app.db, Utc::now()).await.unwrap(),
        1
    );
    let due = Utc::now() + chrono::Duration::minutes(10);
    assert_eq!(queue::requeue_due(&app.db, due).await.unwrap(), 1);

    // It is first in line again (no job ahead), before the jobs submitted while it ran.
    let job = wait_of(&app, &alice, &lost).await;
    assert_eq!(
        (&job["status"], &job["queuePosition"]),
        (&json!("QUEUED"), &json!(0)),
        "{job}"
    );
    for id in &later {
        assert!(
            wait_of(&app, &alice, id).await["queuePosition"]
                .as_i64()
                .unwrap()
                > 0
        );
    }
    let next = claim(&app, Tools::Except(Vec::new()), 1).await;
    assert_eq!(next[0].id, claimed[0].id);
    assert_eq!(next[0].attempt, 2);
}
