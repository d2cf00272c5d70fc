//! Workspaces: create, list, rename, delete, node lookup and bad input.

use chrono::Utc;
use entity::job::{self, JobStatus, Visibility};
use jobgraph::ids::{self};
use sea_orm::{ActiveModelTrait, EntityTrait, PaginatorTrait, Set};
use serde_json::json;

use crate::support::{TestApp, eventually};

const LIST: &str =
    "query($first: Int, $after: String) { viewer { workspaces(first: $first, after: $after) {
    edges { cursor node { id name viewerRole } } pageInfo { hasNextPage endCursor } } } }";

#[tokio::test]
async fn a_new_workspace_makes_its_creator_owner_and_starts_with_no_credits() {
    let app = TestApp::spawn().await;
    let alice = app.user("alice@lab.test").await;
    let data = app
        .ok(
            Some(&alice.token),
            "mutation { createWorkspace(input: {name: \"  Protein lab  \"}) { workspace {
               id name creditBalance viewerRole members(first: 5) { edges { node { role user { email } } } } } } }",
            json!({}),
        )
        .await;
    let ws = &data["createWorkspace"]["workspace"];
    assert!(ws["id"].as_str().unwrap().starts_with("ws_"));
    assert_eq!(ws["name"], "Protein lab");
    assert_eq!(ws["creditBalance"], 0);
    assert_eq!(ws["viewerRole"], "OWNER");
    assert_eq!(
        ws["members"]["edges"],
        json!([{ "node": { "role": "OWNER", "user": { "email": "alice@lab.test" } } }])
    );
}

#[tokio::test]
async fn the_workspace_list_pages_newest_first_and_stays_stable_while_new_ones_arrive() {
    let app = TestApp::spawn().await;
    let alice = app.user("alice@lab.test").await;
    let bob = app.user("bob@lab.test").await;
    app.workspace(&bob, "not alice's").await;
    for i in 0..5 {
        app.workspace(&alice, &format!("ws {i}")).await;
    }
    let token = Some(alice.token.as_str());
    let first = app.ok(token, LIST, json!({"first": 2})).await;
    let page = &first["viewer"]["workspaces"];
    let names: Vec<_> = page["edges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["node"]["name"].clone())
        .collect();
    assert_eq!(names, vec![json!("ws 4"), json!("ws 3")]);
    assert_eq!(page["pageInfo"]["hasNextPage"], true);

    // A workspace created meanwhile does not shift the next page.
    app.workspace(&alice, "ws 5").await;
    let cursor = page["pageInfo"]["endCursor"].as_str().unwrap();
    let second = app
        .ok(token, LIST, json!({"first": 10, "after": cursor}))
        .await;
    let page = &second["viewer"]["workspaces"];
    let names: Vec<_> = page["edges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["node"]["name"].clone())
        .collect();
    assert_eq!(names, vec![json!("ws 2"), json!("ws 1"), json!("ws 0")]);
    assert_eq!(page["pageInfo"]["hasNextPage"], false);
}

#[tokio::test]
async fn page_sizes_outside_1_to_100_and_foreign_cursors_are_bad_user_input() {
    let app = TestApp::spawn().await;
    let alice = app.user("alice@lab.test").await;
    for first in [0, -3, 101] {
        let (_, body) = app
            .post(Some(&alice.token), LIST, json!({"first": first}))
            .await;
        assert_eq!(
            body["errors"][0]["extensions"]["code"], "BAD_USER_INPUT",
            "{body}"
        );
        assert_eq!(body["errors"][0]["extensions"]["field"], "first", "{body}");
    }
    let code = app
        .error_code(Some(&alice.token), LIST, json!({"after": "not-a-cursor"}))
        .await;
    assert_eq!(code, "BAD_USER_INPUT");
}

#[tokio::test]
async fn bad_names_and_ids_are_refused_and_write_nothing() {
    let app = TestApp::spawn().await;
    let alice = app.user("alice@lab.test").await;
    let create =
        "mutation($name: String!) { createWorkspace(input: {name: $name}) { workspace { id } } }";
    for name in ["", "   ", &"x".repeat(101)] {
        let (_, body) = app
            .post(Some(&alice.token), create, json!({"name": name}))
            .await;
        assert_eq!(body["errors"][0]["extensions"]["code"], "BAD_USER_INPUT");
        assert_eq!(body["errors"][0]["extensions"]["field"], "name");
    }
    let data = app.ok(Some(&alice.token), LIST, json!({})).await;
    assert_eq!(data["viewer"]["workspaces"]["edges"], json!([]));

    let read = "query($id: ID!) { workspace(id: $id) { name } }";
    for id in ["nonsense", "ws_zzz", "job_0193b1e2c3d47e8f9a0b1c2d3e4f5a6b"] {
        let (_, body) = app.post(Some(&alice.token), read, json!({"id": id})).await;
        assert_eq!(
            body["errors"][0]["extensions"]["code"], "BAD_USER_INPUT",
            "{id}: {body}"
        );
    }
    let missing = ids::encode(entity::ids::WorkspaceId::new());
    assert_eq!(
        app.error_code(Some(&alice.token), read, json!({"id": missing.as_str()}))
            .await,
        "NOT_FOUND"
    );
}

#[tokio::test]
async fn an_unseen_workspace_answers_not_found_exactly_like_a_missing_one() {
    let app = TestApp::spawn().await;
    let alice = app.user("alice@lab.test").await;
    let eve = app.user("eve@lab.test").await;
    let ws = app.workspace(&alice, "secret").await;
    let missing = ids::encode(entity::ids::WorkspaceId::new());
    let read = "query($id: ID!) { workspace(id: $id) { name } }";
    let (_, seen) = app.post(Some(&eve.token), read, json!({"id": ws})).await;
    let (_, absent) = app
        .post(Some(&eve.token), read, json!({"id": missing.as_str()}))
        .await;
    assert_eq!(seen["errors"][0]["message"], absent["errors"][0]["message"]);
    assert_eq!(
        seen["errors"][0]["extensions"],
        absent["errors"][0]["extensions"]
    );
    assert_eq!(seen["errors"][0]["extensions"]["code"], "NOT_FOUND");
}

#[tokio::test]
async fn node_resolves_each_type_the_viewer_may_see_and_hides_the_rest() {
    let app = TestApp::spawn().await;
    let alice = app.user("alice@lab.test").await;
    let bob = app.user("bob@lab.test").await;
    let eve = app.user("eve@lab.test").await;
    let ws = app.workspace(&alice, "lab").await;
    app.add_member(&alice, &ws, &bob, "VIEWER").await;
    let node = "query($id: ID!) { node(id: $id) { __typename id ... on Workspace { name } ... on User { email } } }";
    let data = app.ok(Some(&bob.token), node, json!({"id": ws})).await;
    assert_eq!(data["node"]["__typename"], "Workspace");
    assert_eq!(data["node"]["name"], "lab");
    let data = app
        .ok(Some(&bob.token), node, json!({"id": alice.id}))
        .await;
    assert_eq!(data["node"]["email"], "alice@lab.test");
    // Eve shares no workspace with Alice or Bob.
    for id in [&ws, &alice.id] {
        assert_eq!(
            app.error_code(Some(&eve.token), node, json!({"id": id}))
                .await,
            "NOT_FOUND"
        );
    }
}

#[tokio::test]
async fn renaming_changes_the_name_and_deleting_removes_the_workspace() {
    let app = TestApp::spawn().await;
    let alice = app.user("alice@lab.test").await;
    let ws = app.workspace(&alice, "old").await;
    // A finished job, whose timeline goes with the workspace.
    app.grant(&ws, 10).await;
    let job = app.job(&alice, &ws, 0).await;
    app.ok(
        Some(&alice.token),
        "mutation($id: ID!) { cancelJob(input: {jobId: $id}) { job { id } } }",
        json!({"id": job["id"]}),
    )
    .await;
    let timeline = || entity::job_event::Entity::find().count(&app.db);
    assert!(timeline().await.unwrap() > 0);
    let keys = || entity::job_key::Entity::find().count(&app.db);
    assert_eq!(keys().await.unwrap(), 1);
    let data = app
        .ok(
            Some(&alice.token),
            "mutation($ws: ID!) { renameWorkspace(input: {workspaceId: $ws, name: \"new\"}) { workspace { name } } }",
            json!({"ws": ws}),
        )
        .await;
    assert_eq!(data["renameWorkspace"]["workspace"]["name"], "new");
    let data = app
        .ok(
            Some(&alice.token),
            "mutation($ws: ID!) { deleteWorkspace(input: {workspaceId: $ws}) { deletedWorkspaceId } }",
            json!({"ws": ws}),
        )
        .await;
    assert_eq!(data["deleteWorkspace"]["deletedWorkspaceId"], ws.as_str());
    assert_eq!(
        timeline().await.unwrap(),
        0,
        "the job's timeline is deleted"
    );
    assert_eq!(keys().await.unwrap(), 0, "and its keys");
    let code = app
        .error_code(
            Some(&alice.token),
            "query($ws: ID!) { workspace(id: $ws) { name } }",
            json!({"ws": ws}),
        )
        .await;
    assert_eq!(code, "NOT_FOUND");
}

#[tokio::test]
async fn a_workspace_with_an_active_job_cannot_be_deleted() {
    let app = TestApp::spawn().await;
    let alice = app.user("alice@lab.test").await;
    let ws = app.workspace(&alice, "busy").await;
    let ws_uuid = ids::decode::<entity::ids::WorkspaceId>("ws", &ws).unwrap();
    let user_uuid = ids::decode::<entity::ids::UserId>("user", &alice.id).unwrap();
    let now = Utc::now();
    job::ActiveModel {
        id: Set(entity::ids::JobId::new()),
        workspace_id: Set(ws_uuid),
        submitter_id: Set(user_uuid),
        tool: Set("sleep".into()),
        tool_version: Set("1".into()),
        name: Set("running".into()),
        status: Set(JobStatus::Processing),
        stage: Set(None),
        progress: Set(0.5),
        inputs: Set(json!({})),
        settings: Set(json!({})),
        result: Set(None),
        error_message: Set(None),
        error_code: Set(None),
        attempt: Set(1),
        max_attempts: Set(3),
        credit_cost: Set(0),
        refunded: Set(false),
        visibility: Set(Visibility::Private),
        priority: Set(0),
        parent_id: Set(None),
        parent_kind: Set(None),
        batch_id: Set(None),
        idempotency_key: Set(None),
        request_fingerprint: Set(None),
        resources: Set(None),
        created_at: Set(now),
        updated_at: Set(now),
        queued_at: Set(Some(now)),
        started_at: Set(Some(now)),
        finished_at: Set(None),
        run_after: Set(None),
        worker_id: Set(None),
        lease_expires_at: Set(None),
        heartbeat_at: Set(None),
        trace_parent: Set(None),
        reuse_key: Set(None),
        reused_from: Set(None),
        workflow_id: Set(None),
        workflow_step: Set(None),
        workflow_item: Set(None),
    }
    .insert(&app.db)
    .await
    .unwrap();
    let (_, body) = app
        .post(
            Some(&alice.token),
            "mutation($ws: ID!) { deleteWorkspace(input: {workspaceId: $ws}) { deletedWorkspaceId } }",
            json!({"ws": ws}),
        )
        .await;
    assert_eq!(body["errors"][0]["extensions"]["code"], "CONFLICT");
    assert!(
        body["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("1 active job"),
        "{body}"
    );
}

#[tokio::test]
async fn a_workspace_answers_alike_whether_its_row_is_read_or_its_standing_is_known() {
    // A selection that reads only the id and the viewer's standing is answered from a standing
    // checked a moment ago, without reading the workspace; each field must read the same.
    let app = TestApp::spawn().await;
    let alice = app.user("alice@lab.test").await;
    let ws = app.workspace(&alice, "lab").await;
    app.grant(&ws, 100).await;
    app.job(&alice, &ws, 0).await;
    let token = Some(alice.token.as_str());
    let data = app
        .ok(
            token,
            "{ __type(name: \"Workspace\") { fields { name type { kind ofType { kind ofType { kind } } } } } }",
            json!({}),
        )
        .await;
    let selections: Vec<String> = data["__type"]["fields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|field| {
            let name = field["name"].as_str().unwrap();
            let mut ty = &field["type"];
            while matches!(ty["kind"].as_str(), Some("NON_NULL" | "LIST")) {
                ty = &ty["ofType"];
            }
            match (name, ty["kind"].as_str()) {
                ("jobs", _) => "jobs { nodes { id name status workspace { name } } }".to_owned(),
                ("members", _) => "members { nodes { role user { email } } }".to_owned(),
                ("creditTransactions", _) => "creditTransactions { nodes { amount } }".to_owned(),
                ("jobCounts", _) => "jobCounts { total queued }".to_owned(),
                (_, Some("OBJECT" | "INTERFACE" | "UNION")) => format!("{name} {{ __typename }}"),
                _ => name.to_owned(),
            }
        })
        .collect();
    assert!(selections.len() > 10, "{selections:?}");
    let query =
        |selection: &str| format!("query($ws: ID!) {{ workspace(id: $ws) {{ id {selection} }} }}");
    for selection in &selections {
        // Checked once, then trusted.
        app.ok(token, &query("name"), json!({"ws": ws})).await;
        let known = app.ok(token, &query(selection), json!({"ws": ws})).await;
        let read = app
            .ok(
                token,
                &query(&format!("name {selection}")),
                json!({"ws": ws}),
            )
            .await;
        let field = selection.split_whitespace().next().unwrap();
        assert_eq!(
            known["workspace"][field], read["workspace"][field],
            "{selection}"
        );
        assert!(!known["workspace"][field].is_null(), "{selection}: {known}");
    }
    // The standing is known: the viewer's role costs no statement, a count one.
    let standing = query("viewerRole viewerCanSubmit");
    let (cost, _) = app
        .statements(|| app.ok(token, &standing, json!({"ws": ws})))
        .await;
    assert_eq!(cost, 0);
    let counts = query("jobCounts { total }");
    let (cost, _) = app
        .statements(|| app.ok(token, &counts, json!({"ws": ws})))
        .await;
    assert_eq!(cost, 1);
}

#[tokio::test]
async fn a_removed_member_loses_access_at_once_here_and_soon_when_removed_elsewhere() {
    let app = TestApp::spawn_with(|c| c.server.auth_cache_seconds = 1).await;
    let alice = app.user("alice@lab.test").await;
    let bob = app.user("bob@lab.test").await;
    let carol = app.user("carol@lab.test").await;
    let ws = app.workspace(&alice, "lab").await;
    app.add_member(&alice, &ws, &bob, "MEMBER").await;
    app.add_member(&alice, &ws, &carol, "MEMBER").await;
    let jobs = "query($ws: ID!) { workspace(id: $ws) { jobs { nodes { id } } } }";
    for user in [&bob, &carol] {
        app.ok(Some(&user.token), jobs, json!({"ws": ws})).await;
    }

    // Removed through this server: refused on the next request.
    app.ok(
        Some(&alice.token),
        "mutation($ws: ID!, $u: ID!) { removeMember(input: {workspaceId: $ws, userId: $u}) { removedUserId } }",
        json!({"ws": ws, "u": bob.id}),
    )
    .await;
    assert_eq!(
        app.error_code(Some(&bob.token), jobs, json!({"ws": ws}))
            .await,
        "NOT_FOUND"
    );

    // Removed by another process sharing the database: refused within the trust time.
    use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};
    let carol_id = ids::decode::<entity::ids::UserId>("u", &carol.id).unwrap();
    entity::membership::Entity::delete_many()
        .filter(entity::membership::Column::UserId.eq(carol_id))
        .exec(&app.db)
        .await
        .unwrap();
    eventually(
        std::time::Duration::from_millis(2500),
        "a member removed elsewhere loses access within the cache time",
        || async {
            let (_, body) = app.post(Some(&carol.token), jobs, json!({"ws": ws})).await;
            match body["errors"][0]["extensions"]["code"] == "NOT_FOUND" {
                true => Ok(()),
                false => Err(body),
            }
        },
    )
    .await;
}

#[tokio::test]
async fn a_member_removed_by_another_server_loses_access_here_as_soon_as_it_is_told() {
    // Trust standings for a minute: only the live log's member change can end it sooner.
    let app = TestApp::spawn_with(|c| c.server.auth_cache_seconds = 60).await;
    let alice = app.user("alice@lab.test").await;
    let bob = app.user("bob@lab.test").await;
    let ws = app.workspace(&alice, "lab").await;
    app.add_member(&alice, &ws, &bob, "MEMBER").await;
    let jobs = "query($ws: ID!) { workspace(id: $ws) { jobs { nodes { id } } } }";
    app.ok(Some(&bob.token), jobs, json!({"ws": ws})).await;

    // Another server on the same database removes him.
    let mut config = jobgraph::Config::defaults();
    config.database.database_url = Some(app.database_url.clone());
    let other = jobgraph::App::build(config).await.unwrap();
    jobgraph::workspaces::members::remove(
        &other.state.db,
        &jobgraph::access::Viewer::System,
        ids::decode::<entity::ids::WorkspaceId>("ws", &ws).unwrap(),
        ids::decode::<entity::ids::UserId>("u", &bob.id).unwrap(),
    )
    .await
    .unwrap();
    // Long before the minute of trust ends: only the live log can have told this server.
    eventually(
        std::time::Duration::from_secs(20),
        "a member removed by another server loses access as soon as it is told",
        || async {
            let (_, body) = app.post(Some(&bob.token), jobs, json!({"ws": ws})).await;
            match body["errors"][0]["extensions"]["code"] == "NOT_FOUND" {
                true => Ok(()),
                false => Err(body),
            }
        },
    )
    .await;
}
