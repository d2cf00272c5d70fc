//! What a shared job shows to those outside its workspace: the work, never the workspace
//! behind it, in every representation of the job.

use serde_json::{Value, json};

use crate::support::{TestApp, TestUser};

const READ: &str = "query($id: ID!) { job(id: $id) {
  name workspace { id } submitter { id } idempotencyKey batch { id }
  timeline { status message } exportJson } }";

/// The identifiers and addresses a member of the workspace could find in a job.
struct Secrets {
    workspace: String,
    submitter: TestUser,
}

impl Secrets {
    /// Fails if `text` names the workspace, the submitter or the submitter's e-mail.
    fn assert_absent(&self, text: &str, what: &str) {
        for secret in [&self.workspace, &self.submitter.id, &self.submitter.email] {
            assert!(
                !text.contains(secret.as_str()),
                "{what} shows {secret}: {text}"
            );
        }
    }
}

async fn share(app: &TestApp, owner: &TestUser, job: &str, visibility: &str) {
    app.ok(
        Some(&owner.token),
        "mutation($id: ID!, $v: Visibility!) { setJobSharing(input: {jobId: $id, visibility: $v}) { job { id } } }",
        json!({ "id": job, "v": visibility }),
    )
    .await;
}

/// The message of a timeline's CANCELLED entry.
fn cancelled(timeline: &Value) -> &Value {
    let entries = timeline.as_array().unwrap();
    let entry = entries.iter().find(|e| e["status"] == "CANCELLED").unwrap();
    &entry["message"]
}

async fn export_json(app: &TestApp, token: Option<&str>, job: &str) -> Value {
    let mut request = app
        .client()
        .get(app.url(&format!("/jobs/{job}/export.json")));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.unwrap();
    assert_eq!(response.status(), 200);
    response.json().await.unwrap()
}

#[tokio::test]
async fn outsiders_see_nothing_of_a_shared_jobs_workspace_in_any_representation() {
    let app = TestApp::spawn().await;
    let alice = app.user("alice@lab.test").await;
    let bob = app.user("bob@elsewhere.test").await;
    let ws = app.workspace(&alice, "lab").await;
    app.grant(&ws, 100).await;
    let data = app
        .ok(
            Some(&alice.token),
            "mutation($ws: ID!) { submitJob(input: {workspaceId: $ws, tool: \"sleep\", idempotencyKey: \"nightly-7\"}) { job { id } } }",
            json!({ "ws": ws }),
        )
        .await;
    let job = data["submitJob"]["job"]["id"].as_str().unwrap().to_owned();
    // Cancelled by alice: the timeline names her.
    app.ok(
        Some(&alice.token),
        "mutation($id: ID!) { cancelJob(input: {jobId: $id}) { job { id } } }",
        json!({ "id": job }),
    )
    .await;
    let data = app
        .ok(
            Some(&alice.token),
            "mutation($ws: ID!) { submitBatch(input: {workspaceId: $ws, jobs: [{tool: \"sleep\"}]}) { jobs { id } } }",
            json!({ "ws": ws }),
        )
        .await;
    let batched = data["submitBatch"]["jobs"][0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let secrets = Secrets {
        workspace: ws.clone(),
        submitter: alice.clone(),
    };

    for visibility in ["PUBLIC", "LOGGED_IN"] {
        share(&app, &alice, &job, visibility).await;
        share(&app, &alice, &batched, visibility).await;
        let outsiders: &[(&str, Option<&str>)] = match visibility {
            "PUBLIC" => &[("bob", Some(&bob.token)), ("anonymous", None)],
            _ => &[("bob", Some(&bob.token))],
        };
        for (name, token) in outsiders {
            let what = format!("{visibility} job read by {name}");
            let data = app.ok(*token, READ, json!({ "id": job })).await;
            let read = &data["job"];
            assert!(read["name"].is_string(), "{what}: the work is shared");
            for field in ["workspace", "submitter", "idempotencyKey", "batch"] {
                assert!(read[field].is_null(), "{what}: {field} is {}", read[field]);
            }
            assert_eq!(cancelled(&read["timeline"]), "cancelled");
            secrets.assert_absent(&read.to_string(), &what);
            let exported = &read["exportJson"];
            assert!(exported["workspaceId"].is_null() && exported["submitterId"].is_null());
            let downloaded = export_json(&app, *token, &job).await;
            assert!(downloaded["workspaceId"].is_null() && downloaded["submitterId"].is_null());
            secrets.assert_absent(&downloaded.to_string(), &format!("{what}, downloaded"));

            let data = app.ok(*token, READ, json!({ "id": batched })).await;
            assert!(data["job"]["batch"].is_null(), "{what}: {data}");
        }
    }

    // Members see all of it, in each representation.
    let data = app.ok(Some(&alice.token), READ, json!({ "id": job })).await;
    let read = &data["job"];
    assert_eq!(read["workspace"]["id"], ws.as_str());
    assert_eq!(read["submitter"]["id"], alice.id.as_str());
    assert_eq!(read["idempotencyKey"], "nightly-7");
    assert_eq!(cancelled(&read["timeline"]), "cancelled by alice@lab.test");
    assert_eq!(read["exportJson"]["workspaceId"], ws.as_str());
    assert_eq!(read["exportJson"]["submitterId"], alice.id.as_str());
    let downloaded = export_json(&app, Some(&alice.token), &job).await;
    assert_eq!(downloaded["submitterId"], alice.id.as_str());
    assert_eq!(
        cancelled(&downloaded["timeline"]),
        "cancelled by alice@lab.test"
    );
    let data = app
        .ok(Some(&alice.token), READ, json!({ "id": batched }))
        .await;
    assert!(data["job"]["batch"]["id"].is_string());
}

#[tokio::test]
async fn a_job_is_shared_with_at_most_a_hundred_e_mails() {
    let app = TestApp::spawn().await;
    let alice = app.user("alice@lab.test").await;
    let ws = app.workspace(&alice, "lab").await;
    app.grant(&ws, 100).await;
    let job = app.job(&alice, &ws, 1).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let share = "mutation($id: ID!, $emails: [String!]!) { setJobSharing(input: {jobId: $id, visibility: INVITED, invitedEmails: $emails}) { job { invitedEmails } } }";
    let emails = |n: usize| {
        (0..n)
            .map(|i| format!("guest{i}@lab.test"))
            .collect::<Vec<_>>()
    };
    let data = app
        .ok(
            Some(&alice.token),
            share,
            json!({ "id": job, "emails": emails(100) }),
        )
        .await;
    assert_eq!(
        data["setJobSharing"]["job"]["invitedEmails"]
            .as_array()
            .unwrap()
            .len(),
        100
    );
    let (_, body) = app
        .post(
            Some(&alice.token),
            share,
            json!({ "id": job, "emails": emails(10_000) }),
        )
        .await;
    let error = &body["errors"][0];
    assert_eq!(error["extensions"]["code"], "BAD_USER_INPUT");
    assert_eq!(error["extensions"]["field"], "invitedEmails");
    assert_eq!(
        error["message"],
        "invitedEmails: a job is shared with at most 100 e-mails"
    );
}

/// The timeline names the worker that ran a job; an outsider reads only that it started.
#[tokio::test]
async fn outsiders_do_not_learn_which_worker_ran_a_shared_job() {
    let app = TestApp::spawn_with(|config| config.server.workers = 1).await;
    let alice = app.user("alice@lab.test").await;
    let ws = app.workspace(&alice, "lab").await;
    app.grant(&ws, 100).await;
    let job = app.job(&alice, &ws, 0).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    app.wait_final(&alice.token, &job, std::time::Duration::from_secs(20))
        .await;
    share(&app, &alice, &job, "PUBLIC").await;
    let started = |data: &Value| -> Value {
        let entries = data["job"]["timeline"].as_array().unwrap().clone();
        let entry = entries
            .iter()
            .find(|e| e["status"] == "PROCESSING")
            .unwrap();
        entry["message"].clone()
    };
    let member = app.ok(Some(&alice.token), READ, json!({ "id": job })).await;
    assert!(
        started(&member)
            .as_str()
            .unwrap()
            .starts_with("claimed by "),
        "{member}"
    );
    let outsider = app.ok(None, READ, json!({ "id": job })).await;
    assert_eq!(started(&outsider), "started");
    let downloaded = export_json(&app, None, &job).await;
    let worker = started(&member).as_str().unwrap()["claimed by ".len()..].to_owned();
    assert!(
        !downloaded.to_string().contains(&worker),
        "the export names the worker: {downloaded}"
    );
}
