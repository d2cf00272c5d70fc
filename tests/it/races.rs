//! Writers of one workspace racing each other: whichever order they land in, one wins, the
//! other gets a clear error, and no row is left without its job or workspace.
//!
//! Each pair is fired together over HTTP for a number of rounds, each on a fresh workspace.

use entity::job::JobStatus;
use jobgraph::jobs::lifecycle::Change;
use sea_orm::{ConnectionTrait, Statement};
use serde_json::{Value, json};

use crate::support::{TestApp, TestUser};

const ROUNDS: usize = 15;

const SUBMIT: &str = "mutation($ws: ID!) { submitJob(input: {workspaceId: $ws, tool: \"sleep\", settings: {seconds: 1}}) { job { id } } }";
const BATCH: &str = "mutation($ws: ID!) { submitBatch(input: {workspaceId: $ws, jobs: [{tool: \"sleep\"}, {tool: \"sleep\"}, {tool: \"sleep\"}]}) { batch { id } } }";
const DELETE_WORKSPACE: &str =
    "mutation($ws: ID!) { deleteWorkspace(input: {workspaceId: $ws}) { deletedWorkspaceId } }";

/// One request of a race: who sends it, what, with which variables.
type Request<'a> = (&'a str, &'a str, Value);

/// Sends both requests at once; returns each one's error code, `None` for a success.
async fn together(
    app: &TestApp,
    a: Request<'_>,
    b: Request<'_>,
) -> (Option<String>, Option<String>) {
    let ((_, a), (_, b)) =
        tokio::join!(app.post(Some(a.0), a.1, a.2), app.post(Some(b.0), b.1, b.2));
    (code(&a), code(&b))
}

fn code(body: &Value) -> Option<String> {
    if body["errors"].is_null() {
        return None;
    }
    Some(
        body["errors"][0]["extensions"]["code"]
            .as_str()
            .unwrap_or_else(|| panic!("an error without a code: {body}"))
            .to_owned(),
    )
}

/// Rows that refer to a job or workspace that is gone, by table.
async fn orphans(app: &TestApp) -> Vec<(&'static str, i64)> {
    let checks = [
        (
            "jobs",
            "SELECT COUNT(*) AS n FROM jobs WHERE workspace_id NOT IN (SELECT id FROM workspaces)",
        ),
        (
            "jobs.batch_id",
            "SELECT COUNT(*) AS n FROM jobs WHERE batch_id IS NOT NULL AND batch_id NOT IN (SELECT id FROM batches)",
        ),
        (
            "job_events",
            "SELECT COUNT(*) AS n FROM job_events WHERE job_id NOT IN (SELECT id FROM jobs)",
        ),
        (
            "job_keys",
            "SELECT COUNT(*) AS n FROM job_keys WHERE job_id NOT IN (SELECT id FROM jobs)",
        ),
        (
            "job_shares",
            "SELECT COUNT(*) AS n FROM job_shares WHERE job_id NOT IN (SELECT id FROM jobs)",
        ),
        (
            "files",
            "SELECT COUNT(*) AS n FROM files WHERE workspace_id NOT IN (SELECT id FROM workspaces) OR (job_id IS NOT NULL AND job_id NOT IN (SELECT id FROM jobs))",
        ),
        (
            "credit_transactions",
            "SELECT COUNT(*) AS n FROM credit_transactions WHERE workspace_id NOT IN (SELECT id FROM workspaces)",
        ),
        (
            "memberships",
            "SELECT COUNT(*) AS n FROM memberships WHERE workspace_id NOT IN (SELECT id FROM workspaces)",
        ),
        (
            "batches",
            "SELECT COUNT(*) AS n FROM batches WHERE workspace_id NOT IN (SELECT id FROM workspaces)",
        ),
        // The log may speak of a job of a live workspace only while it exists, or with its
        // deletion: never of a job that was never committed.
        (
            "live_events",
            "SELECT COUNT(*) AS n FROM live_events e WHERE e.job_id IS NOT NULL \
            AND e.workspace_id IN (SELECT id FROM workspaces) \
            AND e.job_id NOT IN (SELECT id FROM jobs) \
            AND NOT EXISTS (SELECT 1 FROM live_events d WHERE d.job_id = e.job_id AND d.kind = 'DELETED')",
        ),
    ];
    let backend = app.db.get_database_backend();
    let mut found = Vec::new();
    for (table, sql) in checks {
        let row = app
            .db
            .query_one_raw(Statement::from_string(backend, sql))
            .await
            .unwrap()
            .unwrap();
        let n: i64 = row.try_get("", "n").unwrap();
        if n > 0 {
            found.push((table, n));
        }
    }
    found
}

async fn assert_no_orphans(app: &TestApp) {
    let found = orphans(app).await;
    assert!(
        found.is_empty(),
        "rows left without their job or workspace: {found:?}"
    );
}

/// A workspace of `owner` with credits for a few jobs.
async fn funded(app: &TestApp, owner: &TestUser) -> String {
    let ws = app.workspace(owner, "racing").await;
    app.grant(&ws, 100).await;
    ws
}

/// A job of `ws` driven to a final status.
async fn finished_job(app: &TestApp, owner: &TestUser, ws: &str, to: JobStatus) -> String {
    let job = app.job(owner, ws, 1).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    if to != JobStatus::Cancelled {
        app.drive(&job, JobStatus::Processing, Change::default())
            .await
            .unwrap();
    }
    app.drive(&job, to, Change::default()).await.unwrap();
    job
}

async fn jobs_of(app: &TestApp, ws: &str) -> i64 {
    let id = jobgraph::ids::decode::<entity::ids::WorkspaceId>("ws", ws).unwrap();
    let backend = app.db.get_database_backend();
    let row = app
        .db
        .query_one_raw(Statement::from_sql_and_values(
            backend,
            match backend {
                sea_orm::DatabaseBackend::Postgres => {
                    "SELECT COUNT(*) AS n FROM jobs WHERE workspace_id = $1"
                }
                _ => "SELECT COUNT(*) AS n FROM jobs WHERE workspace_id = ?",
            },
            [id.into()],
        ))
        .await
        .unwrap()
        .unwrap();
    row.try_get("", "n").unwrap()
}

/// Deleting a workspace while a job is created in it: either the job is refused as NOT_FOUND,
/// or the deletion is refused as CONFLICT because of the job; never both, never neither.
async fn deletion_races_a_creation(
    app: &TestApp,
    owner: &TestUser,
    ws: &str,
    create: Request<'_>,
    created_jobs: i64,
) -> (Option<String>, Option<String>) {
    let before = jobs_of(app, ws).await;
    let (deleted, created) = together(
        app,
        (&owner.token, DELETE_WORKSPACE, json!({ "ws": ws })),
        create,
    )
    .await;
    match (&deleted, &created) {
        (None, Some(code)) => assert_eq!(code, "NOT_FOUND", "the creation lost"),
        (Some(code), None) => {
            assert_eq!(code, "CONFLICT", "the deletion lost");
            assert_eq!(jobs_of(app, ws).await, before + created_jobs);
            app.balance(ws).await;
        }
        other => panic!("one must win: {other:?}"),
    }
    assert_no_orphans(app).await;
    (deleted, created)
}

#[tokio::test]
async fn deleting_a_workspace_while_a_job_is_submitted_to_it_leaves_one_winner() {
    let app = TestApp::spawn().await;
    let owner = app.user("owner@lab.test").await;
    for _ in 0..ROUNDS {
        let ws = funded(&app, &owner).await;
        let create = (owner.token.as_str(), SUBMIT, json!({ "ws": ws }));
        deletion_races_a_creation(&app, &owner, &ws, create, 1).await;
    }
}

#[tokio::test]
async fn deleting_a_workspace_while_a_batch_is_submitted_to_it_leaves_one_winner() {
    let app = TestApp::spawn().await;
    let owner = app.user("owner@lab.test").await;
    for _ in 0..ROUNDS {
        let ws = funded(&app, &owner).await;
        let create = (owner.token.as_str(), BATCH, json!({ "ws": ws }));
        deletion_races_a_creation(&app, &owner, &ws, create, 3).await;
    }
}

#[tokio::test]
async fn deleting_a_workspace_while_a_job_of_it_is_retried_or_duplicated_leaves_one_winner() {
    let app = TestApp::spawn().await;
    let owner = app.user("owner@lab.test").await;
    let retry = "mutation($id: ID!) { retryJob(input: {jobId: $id}) { job { id } } }";
    let duplicate = "mutation($id: ID!) { duplicateJob(input: {jobId: $id}) { job { id } } }";
    for round in 0..ROUNDS {
        let ws = funded(&app, &owner).await;
        let job = finished_job(&app, &owner, &ws, JobStatus::Failed).await;
        let action = if round % 2 == 0 { retry } else { duplicate };
        let create = (owner.token.as_str(), action, json!({ "id": job }));
        deletion_races_a_creation(&app, &owner, &ws, create, 1).await;
    }
}

#[tokio::test]
async fn deleting_a_workspace_while_a_shared_job_is_duplicated_into_it_leaves_one_winner() {
    let app = TestApp::spawn().await;
    let alice = app.user("alice@lab.test").await;
    let bob = app.user("bob@lab.test").await;
    let source = funded(&app, &alice).await;
    let job = finished_job(&app, &alice, &source, JobStatus::Completed).await;
    app.ok(
        Some(&alice.token),
        "mutation($id: ID!) { setJobSharing(input: {jobId: $id, visibility: LOGGED_IN}) { job { id } } }",
        json!({ "id": job }),
    )
    .await;
    let duplicate = "mutation($id: ID!, $ws: ID!) { duplicateJob(input: {jobId: $id, workspaceId: $ws}) { job { id } } }";
    for _ in 0..ROUNDS {
        let ws = funded(&app, &bob).await;
        let create = (
            bob.token.as_str(),
            duplicate,
            json!({ "id": job, "ws": ws }),
        );
        deletion_races_a_creation(&app, &bob, &ws, create, 1).await;
    }
    assert_eq!(
        app.balance(&source).await,
        98,
        "the original is charged once"
    );
}

#[tokio::test]
async fn removing_a_member_while_they_submit_leaves_one_winner() {
    let app = TestApp::spawn().await;
    let owner = app.user("owner@lab.test").await;
    let remove = "mutation($ws: ID!, $user: ID!) { removeMember(input: {workspaceId: $ws, userId: $user}) { removedUserId } }";
    for round in 0..ROUNDS {
        let member = app.user(&format!("member{round}@lab.test")).await;
        let ws = funded(&app, &owner).await;
        app.add_member(&owner, &ws, &member, "MEMBER").await;
        let (removed, submitted) = together(
            &app,
            (&owner.token, remove, json!({ "ws": ws, "user": member.id })),
            (&member.token, SUBMIT, json!({ "ws": ws })),
        )
        .await;
        assert_eq!(
            removed, None,
            "removing a member never waits for their jobs"
        );
        let jobs = jobs_of(&app, &ws).await;
        match submitted {
            None => assert_eq!(jobs, 1),
            Some(code) => {
                assert_eq!(code, "NOT_FOUND", "the removed member no longer sees it");
                assert_eq!(jobs, 0);
            }
        }
        assert_eq!(app.balance(&ws).await, 100 - 2 * jobs);
        assert_no_orphans(&app).await;
    }
}

#[tokio::test]
async fn demoting_a_member_while_they_submit_leaves_one_winner() {
    let app = TestApp::spawn().await;
    let owner = app.user("owner@lab.test").await;
    let demote = "mutation($ws: ID!, $user: ID!) { changeMemberRole(input: {workspaceId: $ws, userId: $user, role: VIEWER}) { membership { id } } }";
    for round in 0..ROUNDS {
        let member = app.user(&format!("member{round}@lab.test")).await;
        let ws = funded(&app, &owner).await;
        app.add_member(&owner, &ws, &member, "MEMBER").await;
        let (demoted, submitted) = together(
            &app,
            (&owner.token, demote, json!({ "ws": ws, "user": member.id })),
            (&member.token, SUBMIT, json!({ "ws": ws })),
        )
        .await;
        assert_eq!(demoted, None);
        let jobs = jobs_of(&app, &ws).await;
        match submitted {
            None => assert_eq!(jobs, 1),
            Some(code) => {
                assert_eq!(code, "FORBIDDEN", "a VIEWER may not submit");
                assert_eq!(jobs, 0);
            }
        }
        assert_eq!(app.balance(&ws).await, 100 - 2 * jobs);
        assert_no_orphans(&app).await;
    }
}

#[tokio::test]
async fn granting_credits_to_a_workspace_being_deleted_leaves_one_winner() {
    let app = TestApp::spawn().await;
    let owner = app.user("owner@lab.test").await;
    let grant = "mutation($ws: ID!) { grantCredits(input: {workspaceId: $ws, amount: 5}) { workspace { id } } }";
    for _ in 0..ROUNDS {
        let ws = funded(&app, &owner).await;
        let (deleted, granted) = together(
            &app,
            (&owner.token, DELETE_WORKSPACE, json!({ "ws": ws })),
            (&app.admin_token, grant, json!({ "ws": ws })),
        )
        .await;
        assert_eq!(deleted, None, "a grant never holds a deletion back");
        if let Some(code) = granted {
            assert_eq!(code, "NOT_FOUND", "the grant came after the deletion");
        }
        assert_no_orphans(&app).await;
    }
}

#[tokio::test]
async fn deleting_a_workspace_while_one_of_its_finished_jobs_is_changed_leaves_one_winner() {
    let app = TestApp::spawn().await;
    let owner = app.user("owner@lab.test").await;
    let actions = [
        "mutation($id: ID!) { deleteJob(input: {jobId: $id}) { deletedJobId } }",
        "mutation($id: ID!) { renameJob(input: {jobId: $id, name: \"renamed\"}) { job { id } } }",
        "mutation($id: ID!) { setJobSharing(input: {jobId: $id, visibility: INVITED, invitedEmails: [\"a@lab.test\", \"b@lab.test\"]}) { job { id } } }",
        "mutation($id: ID!) { cancelJob(input: {jobId: $id}) { job { id } } }",
    ];
    for round in 0..ROUNDS * 2 {
        let ws = funded(&app, &owner).await;
        let action = actions[round % actions.len()];
        let to = if action.contains("cancelJob") {
            // Cancelling needs an active job, which holds the deletion back.
            None
        } else {
            Some(JobStatus::Completed)
        };
        let job = match to {
            Some(to) => finished_job(&app, &owner, &ws, to).await,
            None => app.job(&owner, &ws, 1).await["id"]
                .as_str()
                .unwrap()
                .to_owned(),
        };
        let (deleted, changed) = together(
            &app,
            (&owner.token, DELETE_WORKSPACE, json!({ "ws": ws })),
            (&owner.token, action, json!({ "id": job })),
        )
        .await;
        match (&deleted, &changed) {
            // The change came first (a cancelled job no longer holds the deletion back), or the
            // job was gone by then.
            (None, None) => {}
            (None, Some(code)) => assert_eq!(code, "NOT_FOUND", "{action}"),
            (Some(code), None) if to.is_none() => assert_eq!(code, "CONFLICT"),
            other => panic!("{action}: {other:?}"),
        }
        assert_no_orphans(&app).await;
    }
}
