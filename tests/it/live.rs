//! Live updates: subscriptions over a real websocket, their access checks, resuming from a
//! cursor, and events crossing server processes.

use std::collections::HashMap;
use std::time::Duration;

use entity::job::JobStatus;
use jobgraph::jobs::lifecycle::Change;
use serde_json::{Value, json};

use crate::support::ws::{Received, Ws};
use crate::support::{TestApp, WAIT, eventually, telling_when_polled, until};

const JOB_UPDATED: &str =
    "subscription($id: ID!) { jobUpdated(id: $id) { id name status stage progress result } }";
const EVENTS: &str = "subscription($ws: ID!, $filter: JobFilterInput, $after: String) {
  workspaceJobEvents(workspaceId: $ws, filter: $filter, after: $after) {
    cursor kind jobId status job { id status name } } }";

async fn rename(app: &TestApp, token: &str, id: &str, name: &str) {
    app.ok(
        Some(token),
        "mutation($id: ID!, $name: String!) { renameJob(input: {jobId: $id, name: $name}) { job { id } } }",
        json!({ "id": id, "name": name }),
    )
    .await;
}

async fn cancel(app: &TestApp, token: &str, id: &str) {
    app.ok(
        Some(token),
        "mutation($id: ID!) { cancelJob(input: {jobId: $id}) { job { id } } }",
        json!({ "id": id }),
    )
    .await;
}

async fn delete(app: &TestApp, token: &str, id: &str) {
    app.ok(
        Some(token),
        "mutation($id: ID!) { deleteJob(input: {jobId: $id}) { deletedJobId } }",
        json!({ "id": id }),
    )
    .await;
}

/// A cursor at the end of the log, as a client reads it: subscribing after it sees exactly what
/// happens from now, however long the subscription takes to start.
async fn now_cursor(app: &TestApp, token: &str, ws: &str) -> String {
    let data = app
        .ok(
            Some(token),
            "query($ws: ID!) { workspace(id: $ws) { eventCursor } }",
            json!({ "ws": ws }),
        )
        .await;
    data["workspace"]["eventCursor"]
        .as_str()
        .unwrap()
        .to_owned()
}

fn id_of(job: &Value) -> String {
    job["id"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn a_job_subscription_starts_with_the_current_state_and_follows_every_change() {
    let app = TestApp::spawn().await;
    let (alice, ws) = app.setup("Lab", 100).await;
    let job = id_of(&app.job(&alice, &ws, 1).await);
    let mut sub = Ws::connect(app.addr, Some(&alice.token)).await;
    sub.subscribe("j", JOB_UPDATED, json!({ "id": job })).await;
    assert_eq!(sub.next_data("j").await["jobUpdated"]["status"], "QUEUED");

    app.drive(&job, JobStatus::Processing, Change::default())
        .await
        .unwrap();
    let done = Change {
        result: Some(json!({"answer": 42})),
        ..Default::default()
    };
    app.drive(&job, JobStatus::Completed, done).await.unwrap();
    rename(&app, &alice.token, &job, "Renamed").await;

    // Every status, in order. Fields other than status, stage, progress and attempt are the
    // job's as the server read it, so the rename may show on earlier updates, and it may come
    // with the COMPLETED update (updates of one status are coalesced).
    let mut updates = Vec::new();
    while updates
        .last()
        .is_none_or(|job: &Value| job["name"] != "Renamed" || job["status"] != "COMPLETED")
    {
        updates.push(sub.next_data("j").await["jobUpdated"].clone());
    }
    let statuses: Vec<&Value> = updates.iter().map(|job| &job["status"]).collect();
    assert_eq!(statuses[0], "PROCESSING");
    assert!(
        statuses[1..].iter().all(|s| *s == "COMPLETED"),
        "{statuses:?}"
    );
    let completed = updates.last().unwrap();
    assert_eq!(completed["progress"], 1.0);
    assert_eq!(completed["result"], json!({"answer": 42}));

    // A late subscriber still sees the final status first.
    let mut late = Ws::connect(app.addr, Some(&alice.token)).await;
    late.subscribe("j", JOB_UPDATED, json!({ "id": job })).await;
    assert_eq!(
        late.next_data("j").await["jobUpdated"]["status"],
        "COMPLETED"
    );

    // Deleting the job completes both subscriptions. The rename's own update may still be on
    // its way (when the COMPLETED update already showed the new name): it is the final state
    // again, and nothing else comes before the end.
    delete(&app, &alice.token, &job).await;
    for sub in [&mut sub, &mut late] {
        loop {
            let message = sub.message().await;
            if message["type"] == "complete" {
                assert_eq!(message, json!({"type": "complete", "id": "j"}));
                break;
            }
            let update = &message["payload"]["data"]["jobUpdated"];
            assert_eq!(update["status"], "COMPLETED", "{message}");
            assert_eq!(update["name"], "Renamed", "{message}");
        }
    }
}

#[tokio::test]
async fn progress_reported_by_a_running_job_reaches_its_subscribers() {
    let app = TestApp::spawn().await;
    let (alice, ws) = app.setup("Lab", 100).await;
    let job = id_of(&app.job(&alice, &ws, 1).await);
    let model = app
        .drive(&job, JobStatus::Processing, Change::default())
        .await
        .unwrap();
    let mut sub = Ws::connect(app.addr, Some(&alice.token)).await;
    sub.subscribe("j", JOB_UPDATED, json!({ "id": job })).await;
    assert_eq!(
        sub.next_data("j").await["jobUpdated"]["status"],
        "PROCESSING"
    );
    assert!(
        jobgraph::queue::report(&app.db, &model, Some(0.5), Some("Aligning"))
            .await
            .unwrap()
    );
    let update = sub.next_data("j").await["jobUpdated"].clone();
    assert_eq!(
        (update["progress"].as_f64(), update["stage"].as_str()),
        (Some(0.5), Some("Aligning"))
    );
    assert!(
        jobgraph::queue::report(&app.db, &model, Some(0.75), None)
            .await
            .unwrap()
    );
    assert_eq!(sub.next_data("j").await["jobUpdated"]["progress"], 0.75);
}

#[tokio::test]
async fn anonymous_viewers_may_watch_public_jobs_only() {
    let app = TestApp::spawn().await;
    let (alice, ws) = app.setup("Lab", 100).await;
    let job = id_of(&app.job(&alice, &ws, 1).await);

    let mut anonymous = Ws::connect(app.addr, None).await;
    anonymous
        .subscribe("j", JOB_UPDATED, json!({ "id": job }))
        .await;
    let refused = anonymous.message().await;
    assert_eq!(refused["type"], "next", "{refused}");
    assert_eq!(
        refused["payload"]["errors"][0]["extensions"]["code"],
        "NOT_FOUND"
    );

    let ws_events = "subscription($ws: ID!) { workspaceJobEvents(workspaceId: $ws) { cursor } }";
    anonymous
        .subscribe("w", ws_events, json!({ "ws": ws }))
        .await;
    let refused = loop {
        let message = anonymous.message().await;
        if message["id"] == "w" && message["type"] == "next" {
            break message;
        }
    };
    assert_eq!(
        refused["payload"]["errors"][0]["extensions"]["code"],
        "UNAUTHENTICATED"
    );

    app.ok(
        Some(&alice.token),
        "mutation($id: ID!) { setJobSharing(input: {jobId: $id, visibility: PUBLIC}) { job { id } } }",
        json!({ "id": job }),
    )
    .await;
    let mut anonymous = Ws::connect(app.addr, None).await;
    anonymous
        .subscribe("j", JOB_UPDATED, json!({ "id": job }))
        .await;
    assert_eq!(
        anonymous.next_data("j").await["jobUpdated"]["status"],
        "QUEUED"
    );
    cancel(&app, &alice.token, &job).await;
    assert_eq!(
        anonymous.next_data("j").await["jobUpdated"]["status"],
        "CANCELLED"
    );
}

#[tokio::test]
async fn workspace_events_report_created_updated_and_deleted_jobs_that_pass_the_filter() {
    let app = TestApp::spawn().await;
    let (alice, ws) = app.setup("Lab", 100).await;
    let mut sub = Ws::connect(app.addr, Some(&alice.token)).await;
    let now = now_cursor(&app, &alice.token, &ws).await;
    sub.subscribe("all", EVENTS, json!({ "ws": ws, "after": now }))
        .await;
    sub.subscribe(
        "cancelled",
        EVENTS,
        json!({ "ws": ws, "after": now, "filter": { "statuses": ["CANCELLED"] } }),
    )
    .await;

    let job = id_of(&app.job(&alice, &ws, 1).await);
    cancel(&app, &alice.token, &job).await;
    delete(&app, &alice.token, &job).await;

    let mut all = Vec::new();
    let mut cancelled = Vec::new();
    while all.len() < 3 || cancelled.len() < 2 {
        let message = sub.message().await;
        assert_eq!(message["type"], "next", "{message}");
        let event = message["payload"]["data"]["workspaceJobEvents"].clone();
        assert_eq!(event["jobId"], job.as_str());
        let seen = (event["kind"].clone(), event["status"].clone());
        match message["id"].as_str() {
            Some("all") => all.push(seen),
            _ => cancelled.push(seen),
        }
        // A change read after the job was deleted comes without the job.
        if !event["job"].is_null() {
            assert_eq!(event["job"]["status"], event["status"]);
        }
        if event["kind"] == "DELETED" {
            assert!(event["job"].is_null());
        }
    }
    let pairs = |list: &[(&str, &str)]| -> Vec<(Value, Value)> {
        list.iter().map(|(k, s)| (json!(k), json!(s))).collect()
    };
    assert_eq!(
        all,
        pairs(&[
            ("CREATED", "QUEUED"),
            ("UPDATED", "CANCELLED"),
            ("DELETED", "CANCELLED"),
        ])
    );
    assert_eq!(
        cancelled,
        pairs(&[("UPDATED", "CANCELLED"), ("DELETED", "CANCELLED")])
    );
    sub.silent_for(Duration::from_millis(300)).await;
}

#[tokio::test]
async fn a_member_removed_from_a_workspace_stops_receiving_its_events() {
    let app = TestApp::spawn().await;
    let (alice, ws) = app.setup("Lab", 100).await;
    let bob = app.user("bob@lab.test").await;
    app.add_member(&alice, &ws, &bob, "MEMBER").await;
    let mut sub = Ws::connect(app.addr, Some(&bob.token)).await;
    let now = now_cursor(&app, &bob.token, &ws).await;
    sub.subscribe("w", EVENTS, json!({ "ws": ws, "after": now }))
        .await;

    app.job(&alice, &ws, 1).await;
    assert_eq!(
        sub.next_data("w").await["workspaceJobEvents"]["kind"],
        "CREATED"
    );

    app.ok(
        Some(&alice.token),
        "mutation($ws: ID!, $user: ID!) { removeMember(input: {workspaceId: $ws, userId: $user}) { removedUserId } }",
        json!({ "ws": ws, "user": bob.id }),
    )
    .await;
    let ended = sub.message().await;
    assert_eq!(
        ended["payload"]["errors"][0]["extensions"]["code"], "NOT_FOUND",
        "{ended}"
    );
    assert_eq!(sub.message().await, json!({"type": "complete", "id": "w"}));
    app.job(&alice, &ws, 1).await;
    sub.silent_for(Duration::from_millis(500)).await;
}

#[tokio::test]
async fn a_resumed_subscription_replays_what_it_missed_then_continues_live() {
    let app = TestApp::spawn().await;
    let (alice, ws) = app.setup("Lab", 100).await;
    let mut sub = Ws::connect(app.addr, Some(&alice.token)).await;
    let now = now_cursor(&app, &alice.token, &ws).await;
    sub.subscribe("w", EVENTS, json!({ "ws": ws, "after": now }))
        .await;
    let first = id_of(&app.job(&alice, &ws, 1).await);
    let created = sub.next_data("w").await["workspaceJobEvents"].clone();
    assert_eq!(created["kind"], "CREATED");
    let cursor = created["cursor"].as_str().unwrap().to_owned();
    drop(sub);

    // While disconnected.
    let second = id_of(&app.job(&alice, &ws, 1).await);
    cancel(&app, &alice.token, &first).await;

    let mut sub = Ws::connect(app.addr, Some(&alice.token)).await;
    sub.subscribe("w", EVENTS, json!({ "ws": ws, "after": cursor }))
        .await;
    let expected = [
        (&second, "CREATED", "QUEUED"),
        (&first, "UPDATED", "CANCELLED"),
    ];
    let mut cursors = vec![cursor];
    for (job, kind, status) in expected {
        let event = sub.next_data("w").await["workspaceJobEvents"].clone();
        assert_eq!(
            (&event["jobId"], &event["kind"], &event["status"]),
            (&json!(job), &json!(kind), &json!(status))
        );
        cursors.push(event["cursor"].as_str().unwrap().to_owned());
    }
    // Then live, across the seam, with nothing repeated.
    rename(&app, &alice.token, &second, "Live again").await;
    let live = sub.next_data("w").await["workspaceJobEvents"].clone();
    assert_eq!(live["job"]["name"], "Live again");
    cursors.push(live["cursor"].as_str().unwrap().to_owned());
    sub.silent_for(Duration::from_millis(300)).await;
    let numbers: Vec<i64> = cursors.iter().map(|c| c[2..].parse().unwrap()).collect();
    assert!(numbers.windows(2).all(|w| w[0] < w[1]), "{numbers:?}");

    sub.subscribe("bad", EVENTS, json!({ "ws": ws, "after": "nope" }))
        .await;
    let refused = sub.message().await;
    assert_eq!(
        refused["payload"]["errors"][0]["extensions"]["code"],
        "BAD_USER_INPUT"
    );
}

#[tokio::test]
async fn the_jobs_indicator_and_the_balance_follow_each_change() {
    let app = TestApp::spawn().await;
    let (alice, ws) = app.setup("Lab", 100).await;
    let mut sub = Ws::connect(app.addr, Some(&alice.token)).await;
    sub.subscribe(
        "counts",
        "subscription($ws: ID!) { jobCounts(workspaceId: $ws, mine: true) { queued cancelled active total } }",
        json!({ "ws": ws }),
    )
    .await;
    assert_eq!(
        sub.next_data("counts").await["jobCounts"],
        json!({"queued": 0, "cancelled": 0, "active": 0, "total": 0})
    );
    sub.subscribe(
        "balance",
        "subscription($ws: ID!) { creditBalance(workspaceId: $ws) }",
        json!({ "ws": ws }),
    )
    .await;
    assert_eq!(sub.next_data("balance").await["creditBalance"], 100);

    let job = app.job(&alice, &ws, 2).await;
    let cost = job["creditCost"].as_i64().unwrap();
    assert!(cost > 0);
    cancel(&app, &alice.token, &id_of(&job)).await;

    let mut counts = Vec::new();
    let mut balances = Vec::new();
    while counts.last() != Some(&json!({"queued": 0, "cancelled": 1, "active": 0, "total": 1}))
        || balances.len() < 2
    {
        let message = sub.message().await;
        let data = &message["payload"]["data"];
        match message["id"].as_str() {
            Some("counts") => counts.push(data["jobCounts"].clone()),
            _ => balances.push(data["creditBalance"].as_i64().unwrap()),
        }
    }
    assert_eq!(balances, vec![100 - cost, 100]);
    // Every pushed count differs from the one before.
    assert!(counts.windows(2).all(|w| w[0] != w[1]), "{counts:?}");
    assert!(counts.len() <= 2, "{counts:?}");
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A second server process (`jobgraph serve`) on the same database as `app`.
struct OtherNode {
    child: std::process::Child,
    addr: std::net::SocketAddr,
    _dir: tempfile::TempDir,
}

impl OtherNode {
    async fn start(app: &TestApp) -> OtherNode {
        let dir = tempfile::tempdir().unwrap();
        let addr: std::net::SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let child = std::process::Command::new(env!("CARGO_BIN_EXE_jobgraph"))
            .args(["serve", "--workers", "0"])
            .env("DATABASE_URL", &app.database_url)
            .env("JOBGRAPH_DATA_DIR", dir.path())
            .env("JOBGRAPH_LISTEN", addr.to_string())
            .env_remove("RUST_LOG")
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("stderr")).unwrap())
            .spawn()
            .expect("starting jobgraph");
        let node = OtherNode {
            child,
            addr,
            _dir: dir,
        };
        let client = reqwest::Client::new();
        eventually(WAIT, "the second server starts", || async {
            let ready = client.get(format!("http://{addr}/readyz")).send().await;
            if ready.is_ok_and(|r| r.status().is_success()) {
                Ok(())
            } else {
                Err(std::fs::read_to_string(node._dir.path().join("stderr")).unwrap_or_default())
            }
        })
        .await;
        node
    }
}

impl Drop for OtherNode {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test]
async fn a_change_made_through_one_server_reaches_subscribers_of_another() {
    let app = TestApp::spawn().await;
    let (alice, ws) = app.setup("Lab", 100).await;
    let other = OtherNode::start(&app).await;
    let mut sub = Ws::connect(other.addr, Some(&alice.token)).await;
    let now = now_cursor(&app, &alice.token, &ws).await;
    sub.subscribe("w", EVENTS, json!({ "ws": ws, "after": now }))
        .await;
    let job = id_of(&app.job(&alice, &ws, 1).await);
    let mut job_sub = Ws::connect(other.addr, Some(&alice.token)).await;
    job_sub
        .subscribe("j", JOB_UPDATED, json!({ "id": job }))
        .await;
    assert_eq!(
        job_sub.next_data("j").await["jobUpdated"]["status"],
        "QUEUED"
    );

    let started = std::time::Instant::now();
    app.drive(&job, JobStatus::Processing, Change::default())
        .await
        .unwrap();
    assert_eq!(
        job_sub.next_data("j").await["jobUpdated"]["status"],
        "PROCESSING"
    );
    let elapsed = started.elapsed();
    // PostgreSQL notifies at once; SQLite (one file, two processes) is polled each second. The
    // bound leaves a loaded machine room for a few polls.
    const PROMPTLY: Duration = Duration::from_secs(5);
    assert!(elapsed < PROMPTLY, "{elapsed:?}");

    let mut kinds = Vec::new();
    while kinds.len() < 2 {
        match sub.receive().await {
            Received::Message(message) => {
                let event = &message["payload"]["data"]["workspaceJobEvents"];
                kinds.push((event["kind"].clone(), event["status"].clone()));
            }
            Received::Closed(code) => panic!("closed: {code:?}"),
        }
    }
    assert_eq!(
        kinds,
        vec![
            (json!("CREATED"), json!("QUEUED")),
            (json!("UPDATED"), json!("PROCESSING")),
        ]
    );
}

#[tokio::test]
async fn a_cursor_older_than_the_kept_log_is_refused() {
    use sea_orm::{ConnectionTrait, EntityTrait};
    let app = TestApp::spawn().await;
    let (alice, ws) = app.setup("Lab", 100).await;
    app.job(&alice, &ws, 1).await;
    let entries = entity::live_event::Entity::find()
        .all(&app.db)
        .await
        .unwrap();
    let oldest = entries.iter().filter_map(|e| e.seq).min().unwrap();
    // What pruning does to entries older than the retention.
    app.db
        .execute_unprepared(&format!("DELETE FROM live_events WHERE seq <= {oldest}"))
        .await
        .unwrap();
    let mut sub = Ws::connect(app.addr, Some(&alice.token)).await;
    sub.subscribe(
        "old",
        EVENTS,
        json!({ "ws": ws, "after": format!("ev{}", oldest - 1) }),
    )
    .await;
    let refused = sub.message().await;
    assert_eq!(
        refused["payload"]["errors"][0]["extensions"]["code"], "BAD_USER_INPUT",
        "{refused}"
    );
    // The oldest kept position still resumes: the grant was pruned, the job's events are kept.
    sub.subscribe(
        "kept",
        EVENTS,
        json!({ "ws": ws, "after": format!("ev{oldest}") }),
    )
    .await;
    let replayed = loop {
        let message = sub.message().await;
        if message["id"] == "kept" {
            break message;
        }
    };
    assert_eq!(
        replayed["payload"]["data"]["workspaceJobEvents"]["kind"], "CREATED",
        "{replayed}"
    );
}

#[tokio::test]
async fn changes_of_a_job_deleted_before_they_are_read_are_still_reported() {
    let app = TestApp::spawn().await;
    let (alice, ws) = app.setup("Lab", 100).await;
    let before = now_cursor(&app, &alice.token, &ws).await;
    let job = id_of(&app.job(&alice, &ws, 1).await);
    cancel(&app, &alice.token, &job).await;
    delete(&app, &alice.token, &job).await;

    // Replayed after the deletion: every change, filtered on what each entry kept.
    let mut sub = Ws::connect(app.addr, Some(&alice.token)).await;
    sub.subscribe("all", EVENTS, json!({ "ws": ws, "after": before }))
        .await;
    sub.subscribe(
        "cancelled",
        EVENTS,
        json!({ "ws": ws, "after": before, "filter": { "statuses": ["CANCELLED"] } }),
    )
    .await;
    let mut all = Vec::new();
    let mut cancelled = Vec::new();
    while all.len() < 3 || cancelled.len() < 2 {
        let message = sub.message().await;
        assert_eq!(message["type"], "next", "{message}");
        let event = &message["payload"]["data"]["workspaceJobEvents"];
        assert_eq!(event["jobId"], job.as_str());
        assert!(event["job"].is_null(), "the job is gone: {event}");
        let seen = (
            event["kind"].as_str().unwrap().to_owned(),
            event["status"].as_str().unwrap().to_owned(),
        );
        match message["id"].as_str() {
            Some("all") => all.push(seen),
            _ => cancelled.push(seen),
        }
    }
    let pairs = |list: &[(&str, &str)]| -> Vec<(String, String)> {
        list.iter()
            .map(|(k, s)| (k.to_string(), s.to_string()))
            .collect()
    };
    assert_eq!(
        all,
        pairs(&[
            ("CREATED", "QUEUED"),
            ("UPDATED", "CANCELLED"),
            ("DELETED", "CANCELLED"),
        ])
    );
    assert_eq!(
        cancelled,
        pairs(&[("UPDATED", "CANCELLED"), ("DELETED", "CANCELLED")])
    );
    sub.silent_for(Duration::from_millis(300)).await;
}

/// Live entries are numbered in the order their transactions commit, not the order they were
/// written in: a reader that has seen entry n never finds a later commit below n. On PostgreSQL
/// the second transaction commits first; on SQLite it waits for the first's write lock.
#[tokio::test]
async fn live_entries_are_numbered_in_commit_order() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use entity::live_event;
    use sea_orm::{ColumnTrait as _, EntityTrait as _, QueryFilter as _};

    let app = TestApp::spawn().await;
    let owner = app.user("owner@lab.test").await;
    let (first_ws, second_ws) = (
        app.workspace(&owner, "first").await,
        app.workspace(&owner, "second").await,
    );
    let decode = |id: &str| jobgraph::ids::decode::<entity::ids::WorkspaceId>("ws", id).unwrap();
    let (first_ws, second_ws) = (decode(&first_ws), decode(&second_ws));
    let commits = Arc::new(AtomicUsize::new(0));

    // The first transaction writes its entry, then waits before committing.
    let first = jobgraph::db::begin_write(&app.db).await.unwrap();
    jobgraph::live::members_changed(&first, first_ws)
        .await
        .unwrap();
    let (asked, has_asked) = tokio::sync::oneshot::channel();
    let second = tokio::spawn({
        let db = app.db.clone();
        let commits = commits.clone();
        async move {
            let tx = telling_when_polled(jobgraph::db::begin_write(&db), asked)
                .await
                .unwrap();
            jobgraph::live::members_changed(&tx, second_ws)
                .await
                .unwrap();
            tx.commit().await.unwrap();
            commits.fetch_add(1, Ordering::SeqCst)
        }
    });
    // The second has asked to write: on SQLite it is queued behind the first.
    has_asked.await.unwrap();
    if app.db.get_database_backend() == sea_orm::DatabaseBackend::Postgres {
        // Nothing holds it back on PostgreSQL: it commits while the first is still open.
        until(WAIT, "the second transaction commits", || {
            let commits = commits.clone();
            async move { commits.load(Ordering::SeqCst) == 1 }
        })
        .await;
    }
    first.commit().await.unwrap();
    let first_place = commits.fetch_add(1, Ordering::SeqCst);
    let second_place = second.await.unwrap();

    let seq_of = |ws| {
        let db = app.db.clone();
        async move {
            live_event::Entity::find()
                .filter(live_event::Column::WorkspaceId.eq(ws))
                .filter(live_event::Column::Kind.eq(jobgraph::live::LiveKind::Members))
                .one(&db)
                .await
                .unwrap()
                .expect("the entry was written")
                .seq
                .expect("the entry is numbered")
        }
    };
    let (first_seq, second_seq) = (seq_of(first_ws).await, seq_of(second_ws).await);
    assert_ne!(first_place, second_place);
    assert_eq!(
        first_place < second_place,
        first_seq < second_seq,
        "committed {first_place} and {second_place}, numbered {first_seq} and {second_seq}"
    );
    if app.db.get_database_backend() == sea_orm::DatabaseBackend::Postgres {
        assert!(
            second_seq < first_seq,
            "the second transaction committed first"
        );
    }
}

#[tokio::test]
async fn only_members_read_a_workspace_event_cursor_and_it_moves_with_the_log() {
    let app = TestApp::spawn().await;
    let (alice, ws) = app.setup("Lab", 100).await;
    let before = now_cursor(&app, &alice.token, &ws).await;
    app.job(&alice, &ws, 1).await;
    let after = now_cursor(&app, &alice.token, &ws).await;
    let seq = |cursor: &str| cursor[2..].parse::<i64>().unwrap();
    assert!(seq(&after) > seq(&before), "{before} {after}");
    let eve = app.user("eve@elsewhere.test").await;
    let code = app
        .error_code(
            Some(&eve.token),
            "query($ws: ID!) { workspace(id: $ws) { eventCursor } }",
            json!({ "ws": ws }),
        )
        .await;
    assert_eq!(code, "NOT_FOUND");
}

/// The live log is read through its indexes however long it is: the bus's read of new entries,
/// the log's head and tail, a job's and a workspace's replay; and pruning removes exactly the
/// entries older than the cutoff.
#[tokio::test]
async fn the_live_log_is_read_through_its_indexes_and_pruned_by_age() {
    use entity::ids::{JobId, WorkspaceId};
    use entity::live_event::{self, Bound, LiveKind};
    use sea_orm::sea_query::Condition;
    use sea_orm::{
        ColumnTrait as _, ConnectionTrait as _, DatabaseBackend, EntityTrait as _,
        PaginatorTrait as _, QueryFilter as _, QuerySelect as _, QueryTrait as _,
    };

    let app = TestApp::spawn().await;
    let (alice, ws) = app.setup("lab", 10_000).await;
    // The log holds many workspaces: most of its entries are another's.
    let other = app.workspace(&alice, "other").await;
    app.grant(&other, 10_000).await;
    for (ws, jobs) in [(&ws, 10), (&other, 1000), (&other, 1000)] {
        let jobs: Vec<_> = (0..jobs).map(|_| json!({"tool": "noop"})).collect();
        app.submit_batch(&alice, ws, &jobs).await;
    }
    let backend = app.db.get_database_backend();
    if backend == DatabaseBackend::Postgres {
        app.db
            .execute_unprepared("ANALYZE live_events")
            .await
            .unwrap();
    }
    let ws_id = jobgraph::ids::decode::<WorkspaceId>("id", &ws).unwrap();
    let job: Option<Option<JobId>> = live_event::Entity::find()
        .select_only()
        .column(live_event::Column::JobId)
        .filter(live_event::Column::JobId.is_not_null())
        .filter(live_event::Column::WorkspaceId.eq(ws_id))
        .into_tuple()
        .one(&app.db)
        .await
        .unwrap();
    let job = job.flatten().unwrap();
    let reads = [
        (
            "the bus's read",
            live_event::Entity::find_after(10).limit(500),
        ),
        ("the head", live_event::Entity::bound(Bound::Last)),
        ("the tail", live_event::Entity::bound(Bound::First)),
        (
            "a workspace's replay",
            live_event::Entity::find_in_workspace_after(ws_id, 10).limit(500),
        ),
        (
            "a job's replay",
            live_event::Entity::find_in_workspace_after(ws_id, 10)
                .filter(
                    Condition::any()
                        .add(live_event::Column::JobId.eq(job))
                        .add(live_event::Column::Kind.eq(LiveKind::Members)),
                )
                .limit(500),
        ),
    ];
    for (read, select) in reads {
        let plan = crate::support::plan(&app.db, backend.build(&select.into_query())).await;
        assert!(!plan.contains("Seq Scan"), "{read}: {plan}");
        assert!(
            plan.lines().all(|step| step.trim() != "SCAN live_events"),
            "{read}: {plan}"
        );
    }

    // Half the log is made older than the cutoff; a prune removes that half only.
    let all = live_event::Entity::find().count(&app.db).await.unwrap();
    assert!(all > 2000, "{all} entries");
    let middle = jobgraph::live::last_committed(&app.db).await.unwrap() / 2;
    let cutoff = chrono::Utc::now() - chrono::Duration::days(7);
    live_event::Entity::update_many()
        .col_expr(
            live_event::Column::CreatedAt,
            sea_orm::sea_query::Expr::value(cutoff - chrono::Duration::hours(1)),
        )
        .filter(live_event::Column::Id.lte(middle))
        .exec(&app.db)
        .await
        .unwrap();
    let old = live_event::Entity::find()
        .filter(live_event::Column::Id.lte(middle))
        .count(&app.db)
        .await
        .unwrap();
    assert!(old > 0);
    jobgraph::live::prune_before(&app.db, cutoff).await.unwrap();
    let left = live_event::Entity::find().count(&app.db).await.unwrap();
    assert_eq!(left, all - old);
    let oldest: Option<Option<i64>> = live_event::Entity::bound(Bound::First)
        .into_tuple()
        .one(&app.db)
        .await
        .unwrap();
    assert!(oldest.flatten().is_some_and(|oldest| oldest > middle));
    // A second prune finds nothing more to remove.
    jobgraph::live::prune_before(&app.db, cutoff).await.unwrap();
    assert_eq!(
        live_event::Entity::find().count(&app.db).await.unwrap(),
        left
    );
}

/// `workspaceJobEvents` from now on, with a field that differs between viewers.
const SHARED_EVENTS: &str = "subscription($ws: ID!, $filter: JobFilterInput, $after: String) {
  workspaceJobEvents(workspaceId: $ws, filter: $filter, after: $after) {
    kind jobId status job { id name status tool { name } createdAt viewerCanCancel } } }";

/// Renames `job` until every socket has seen a change since subscribing (a subscription from
/// now on is live once it has), then reads each until it is quiet.
async fn until_live(app: &TestApp, token: &str, job: &str, sockets: &mut [&mut Ws]) {
    let mut live = vec![false; sockets.len()];
    for round in 0.. {
        assert!(round < 100, "the subscriptions did not start");
        rename(app, token, job, &format!("warm-up {round}")).await;
        for (socket, live) in sockets.iter_mut().zip(live.iter_mut()) {
            if !*live {
                *live = socket
                    .receive_within(Duration::from_millis(100))
                    .await
                    .is_some();
            }
        }
        if live.iter().all(|live| *live) {
            break;
        }
    }
    for socket in sockets.iter_mut() {
        while socket
            .receive_within(Duration::from_millis(300))
            .await
            .is_some()
        {}
    }
}

/// The (kind, status) of the next `n` events of operation `id` on `socket`, and whether each
/// let its viewer cancel the job.
async fn events_of(socket: &mut Ws, id: &str, n: usize) -> Vec<(String, String, Value)> {
    let mut events = Vec::new();
    while events.len() < n {
        let data = socket.next_data(id).await;
        let event = &data["workspaceJobEvents"];
        events.push((
            event["kind"].as_str().unwrap().to_owned(),
            event["status"].as_str().unwrap().to_owned(),
            event["job"]["viewerCanCancel"].clone(),
        ));
    }
    events
}

#[tokio::test]
async fn subscribers_of_one_audience_share_one_execution_and_each_gets_its_own_view() {
    let app = TestApp::spawn().await;
    let (alice, ws) = app.setup("Lab", 100).await;
    let bob = app.user("bob@lab.test").await;
    app.add_member(&alice, &ws, &bob, "MEMBER").await;
    let warm = id_of(&app.job(&alice, &ws, 1).await);
    let mut alice_1 = Ws::connect(app.addr, Some(&alice.token)).await;
    let mut alice_2 = Ws::connect(app.addr, Some(&alice.token)).await;
    let mut bob_1 = Ws::connect(app.addr, Some(&bob.token)).await;
    let mut bob_2 = Ws::connect(app.addr, Some(&bob.token)).await;
    let all = json!({ "ws": ws });
    let cancelled = json!({ "ws": ws, "filter": { "statuses": ["CANCELLED"] } });
    alice_1.subscribe("all", SHARED_EVENTS, all.clone()).await;
    alice_1
        .subscribe("cancelled", SHARED_EVENTS, cancelled.clone())
        .await;
    alice_2.subscribe("all", SHARED_EVENTS, all.clone()).await;
    bob_1.subscribe("mine", SHARED_EVENTS, all.clone()).await;
    bob_2.subscribe("mine", SHARED_EVENTS, all.clone()).await;
    until_live(
        &app,
        &alice.token,
        &warm,
        &mut [&mut alice_1, &mut alice_2, &mut bob_1, &mut bob_2],
    )
    .await;
    // Alice's two subscriptions to every event are one execution, Bob's two another, and
    // Alice's filtered one a third.
    assert_eq!(app.state.shared.running(), 3);

    // Alice's job: she may cancel it until it ends, Bob (a member) may not.
    let job = id_of(&app.job(&alice, &ws, 1).await);
    cancel(&app, &alice.token, &job).await;
    let steps = |can: bool| -> Vec<(String, String, Value)> {
        [("CREATED", "QUEUED", can), ("UPDATED", "CANCELLED", false)]
            .iter()
            .map(|(k, s, c)| (k.to_string(), s.to_string(), json!(c)))
            .collect()
    };
    let mut alice_events = Vec::new();
    let mut alice_cancelled = Vec::new();
    while alice_events.len() < 2 || alice_cancelled.is_empty() {
        let message = alice_1.message().await;
        let event = &message["payload"]["data"]["workspaceJobEvents"];
        assert_eq!(event["jobId"], job.as_str(), "{message}");
        let seen = (
            event["kind"].as_str().unwrap().to_owned(),
            event["status"].as_str().unwrap().to_owned(),
            event["job"]["viewerCanCancel"].clone(),
        );
        match message["id"].as_str() {
            Some("all") => alice_events.push(seen),
            _ => alice_cancelled.push(seen),
        }
    }
    assert_eq!(alice_events, steps(true));
    assert_eq!(alice_cancelled, steps(true)[1..]);
    assert_eq!(events_of(&mut alice_2, "all", 2).await, steps(true));
    assert_eq!(events_of(&mut bob_1, "mine", 2).await, steps(false));
    assert_eq!(events_of(&mut bob_2, "mine", 2).await, steps(false));

    // A subscriber joining a running execution gets what is committed after it started.
    let mut alice_3 = Ws::connect(app.addr, Some(&alice.token)).await;
    alice_3.subscribe("late", SHARED_EVENTS, all.clone()).await;
    until(WAIT, "the late subscriber to join", || async {
        app.state.shared.subscribers() == 6
    })
    .await;
    let later = id_of(&app.job(&alice, &ws, 1).await);
    let created = alice_3.next_data("late").await;
    assert_eq!(created["workspaceJobEvents"]["jobId"], later.as_str());
    assert_eq!(app.state.shared.running(), 3);

    // A replay is each subscriber's own.
    let now = now_cursor(&app, &alice.token, &ws).await;
    let mut replaying = Ws::connect(app.addr, Some(&alice.token)).await;
    replaying
        .subscribe("after", SHARED_EVENTS, json!({ "ws": ws, "after": now }))
        .await;
    rename(&app, &alice.token, &later, "renamed").await;
    assert_eq!(
        replaying.next_data("after").await["workspaceJobEvents"]["jobId"],
        later.as_str()
    );
    assert_eq!(app.state.shared.running(), 3);

    // Each event is checked against the subscriber's access when it is sent: Bob, still a
    // member, gets `later` created and renamed.
    for bob in [&mut bob_1, &mut bob_2] {
        for _ in 0..2 {
            let event = bob.next_data("mine").await;
            assert_eq!(event["workspaceJobEvents"]["jobId"], later.as_str());
        }
    }

    // Bob removed from the workspace: both his subscriptions end with NOT_FOUND, Alice's go on.
    app.ok(
        Some(&alice.token),
        "mutation($ws: ID!, $user: ID!) { removeMember(input: {workspaceId: $ws, userId: $user}) { removedUserId } }",
        json!({ "ws": ws, "user": bob.id }),
    )
    .await;
    let last = id_of(&app.job(&alice, &ws, 1).await);
    for bob in [&mut bob_1, &mut bob_2] {
        let ended = bob.message().await;
        assert_eq!(
            ended["payload"]["errors"][0]["extensions"]["code"], "NOT_FOUND",
            "{ended}"
        );
        assert_eq!(
            bob.message().await,
            json!({"type": "complete", "id": "mine"})
        );
        bob.silent_for(Duration::from_millis(300)).await;
    }
    for _ in 0..2 {
        // `later` created and renamed; then `last` created.
        alice_2.next_data("all").await;
    }
    assert_eq!(
        alice_2.next_data("all").await["workspaceJobEvents"]["jobId"],
        last.as_str()
    );

    // An execution stops with its last subscriber.
    drop((alice_1, alice_2, alice_3, bob_1, bob_2, replaying));
    until(WAIT, "the executions to stop", || async {
        app.state.shared.running() == 0
    })
    .await;
}

/// The statuses each job went through in the next `n` events of operation `id`, which are all.
async fn statuses_by_job(socket: &mut Ws, id: &str, n: usize) -> HashMap<String, Vec<String>> {
    let mut seen = HashMap::<String, Vec<String>>::new();
    for _ in 0..n {
        let data = socket.next_data(id).await;
        let event = &data["workspaceJobEvents"];
        seen.entry(event["jobId"].as_str().unwrap().to_owned())
            .or_default()
            .push(event["status"].as_str().unwrap().to_owned());
    }
    socket.silent_for(Duration::from_millis(300)).await;
    seen
}

#[tokio::test]
async fn a_subscriber_falling_behind_its_shared_execution_goes_on_alone_and_misses_nothing() {
    let app = TestApp::spawn().await;
    let (alice, ws) = app.setup("Lab", 1_000_000).await;
    let warm = id_of(&app.job(&alice, &ws, 1).await);
    let mut fast = Ws::connect(app.addr, Some(&alice.token)).await;
    let mut slow = Ws::connect_small(app.addr, Some(&alice.token)).await;
    fast.subscribe("fast", SHARED_EVENTS, json!({ "ws": ws }))
        .await;
    slow.subscribe("slow", SHARED_EVENTS, json!({ "ws": ws }))
        .await;
    until_live(&app, &alice.token, &warm, &mut [&mut fast, &mut slow]).await;
    assert_eq!(app.state.shared.running(), 1);

    // More results than the execution keeps for it, while the slow client reads none (its
    // socket's buffers and queue take some first); the other reads all as they come.
    let reading = tokio::spawn(async move {
        let mut seen = HashMap::<String, Vec<String>>::new();
        while let Some(received) = fast.receive_within(Duration::from_secs(2)).await {
            let Received::Message(message) = received else {
                panic!("the socket closed");
            };
            assert_eq!(message["type"], "next", "{message}");
            let event = &message["payload"]["data"]["workspaceJobEvents"];
            seen.entry(event["jobId"].as_str().unwrap().to_owned())
                .or_default()
                .push(event["status"].as_str().unwrap().to_owned());
        }
        (fast, seen)
    });
    // 8,000 results of about 600 bytes: more than the kernel's buffers (4 MiB at most on
    // each side), the connection's queue and the execution's backlog hold.
    let (batches, per_batch) = (16, 500);
    for _ in 0..batches {
        let batch: Vec<Value> = (0..per_batch)
            .map(|_| json!({ "tool": "noop", "name": "n".repeat(200) }))
            .collect();
        app.submit_batch(&alice, &ws, &batch).await;
    }
    let jobs = batches * per_batch;
    let (_fast, fast_seen) = reading.await.unwrap();
    let slow_seen = statuses_by_job(&mut slow, "slow", jobs).await;
    for seen in [&fast_seen, &slow_seen] {
        assert_eq!(seen.len(), jobs);
        assert!(seen.values().all(|statuses| statuses == &["QUEUED"]));
    }
    // It fell behind, went on alone, and the execution goes on with the other.
    assert_eq!(app.state.shared.went_on_alone(), 1);
    assert_eq!(app.state.shared.running(), 1);
    assert_eq!(app.state.shared.subscribers(), 1);
}

#[tokio::test]
async fn a_shared_subscription_refused_before_it_runs_gets_each_protocols_error() {
    let app = TestApp::spawn().await;
    let (alice, ws) = app.setup("Lab", 100).await;
    let bad = "subscription($ws: ID!) { workspaceJobEvents(workspaceId: $ws) { nope } }";
    let mut modern = Ws::connect(app.addr, Some(&alice.token)).await;
    modern.subscribe("a", bad, json!({ "ws": ws })).await;
    let refused = modern.message().await;
    assert_eq!(refused["type"], "error", "{refused}");
    assert_eq!(refused["id"], "a");
    assert_eq!(
        refused["payload"][0]["extensions"]["code"], "GRAPHQL_VALIDATION_FAILED",
        "{refused}"
    );
    let mut legacy = Ws::open(app.addr, "graphql-ws", None).await;
    legacy.init(Some(&alice.token)).await;
    assert_eq!(legacy.message().await["type"], "connection_ack");
    legacy
        .send(
            json!({"id": "b", "type": "start", "payload": {"query": bad, "variables": {"ws": ws}}}),
        )
        .await;
    let refused = loop {
        let message = legacy.message().await;
        if message["type"] != "ka" {
            break message;
        }
    };
    assert_eq!(refused["type"], "error", "{refused}");
    assert_eq!(
        refused["payload"]["extensions"]["code"], "GRAPHQL_VALIDATION_FAILED",
        "{refused}"
    );
    modern.silent_for(Duration::from_millis(200)).await;
}

/// The bus sends its entries without their jobs while nobody subscribes; a subscriber that
/// joined meanwhile reads them itself: each job as it is, the deleted one as none, and entries
/// of other kinds as they came.
#[tokio::test]
async fn entries_sent_while_nobody_subscribed_get_their_jobs_when_a_subscriber_reads_them() {
    use std::sync::Arc;

    use entity::live_event::{self, LiveKind};
    use jobgraph::live::Event;
    use sea_orm::{EntityTrait as _, QueryOrder as _};
    let app = TestApp::spawn().await;
    let (alice, ws) = app.setup("Lab", 100).await;
    let kept = app.submit(&alice, &ws, json!({ "tool": "noop" })).await;
    let gone = app.submit(&alice, &ws, json!({ "tool": "noop" })).await;
    cancel(&app, &alice.token, &gone).await;
    delete(&app, &alice.token, &gone).await;
    let entries = live_event::Entity::find()
        .order_by_asc(live_event::Column::Seq)
        .all(&app.db)
        .await
        .unwrap();
    let sent: Vec<Arc<Event>> = entries
        .iter()
        .map(|entry| {
            Arc::new(Event {
                entry: entry.clone(),
                job: None,
            })
        })
        .collect();
    let filled = jobgraph::live::fill(&app.db, sent).await.unwrap();
    assert_eq!(filled.len(), entries.len());
    let kept_id = jobgraph::ids::decode::<entity::ids::JobId>("job", &kept).unwrap();
    let gone_id = jobgraph::ids::decode::<entity::ids::JobId>("job", &gone).unwrap();
    let mut saw_kept = false;
    for (event, entry) in filled.iter().zip(&entries) {
        // In the order they were sent.
        assert_eq!(event.entry.seq, entry.seq);
        let job = event.job.as_ref().map(|job| job.id);
        match (entry.kind, entry.job_id) {
            (LiveKind::Created | LiveKind::Updated, Some(id)) if id == kept_id => {
                assert_eq!(job, Some(kept_id));
                saw_kept = true;
            }
            (LiveKind::Created | LiveKind::Updated, Some(id)) if id == gone_id => {
                assert_eq!(job, None)
            }
            _ => assert_eq!(job, None, "{entry:?}"),
        }
    }
    assert!(saw_kept);
}
