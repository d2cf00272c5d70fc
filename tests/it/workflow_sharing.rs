//! Sharing a workflow: the four levels of jobs, the workflow and its steps' jobs (timelines,
//! output files) opened together, nothing of the workspace shown to outsiders.

use std::time::Duration;

use sea_orm::{EntityTrait, PaginatorTrait};
use serde_json::{Value, json};

use crate::support::wait::eventually;
use crate::support::{TestApp, TestUser};

const DNA: &str = ">gene1\nATGGCCATTGTAATGGGCCGCTGAAAGGGTGCCCGATAG\n";

const SHARE: &str = "mutation($id: ID!, $v: Visibility!, $emails: [String!]) {
    setWorkflowSharing(input: {workflowId: $id, visibility: $v, invitedEmails: $emails}) {
        workflow { id visibility invitedEmails } } }";

const READ_WORKFLOW: &str = "query($id: ID!) { workflow(id: $id) {
    id name status visibility invitedEmails viewerCanShare viewerCanCancel viewerCanRetry
    submitter { id } workspaceId exportJson
    steps { name job { id } } } }";

const READ_JOB: &str = "query($id: ID!) { job(id: $id) {
    id status workspace { id } submitter { id } workflow { id }
    timeline { status message } files(role: OUTPUT) { name downloadUrl } } }";

/// A one-step workflow that translates DNA, run to its end by a worker.
async fn translated(app: &TestApp, alice: &TestUser, ws: &str) -> (String, String, String) {
    let data = app
        .ok(
            Some(&alice.token),
            "mutation($input: SubmitWorkflowInput!) { submitWorkflow(input: $input) { workflow { id } } }",
            json!({ "input": {
                "workspaceId": ws,
                "name": "shared run",
                "definition": {
                    "inputs": [{ "name": "dna", "kind": "FILE", "format": "FASTA", "required": true }],
                    "steps": [{ "name": "translate", "tool": "translate-dna",
                                "inputs": [{ "input": "sequences", "from": "inputs.dna" }] }],
                },
                "inputs": [{ "name": "dna", "text": DNA }],
            } }),
        )
        .await;
    let id = data["submitWorkflow"]["workflow"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let workflow = eventually(Duration::from_secs(60), "the workflow to end", || async {
        let data = app
            .ok(Some(&alice.token), READ_WORKFLOW, json!({ "id": id }))
            .await;
        match data["workflow"]["status"].as_str() {
            Some("RUNNING") => Err(data),
            _ => Ok(data["workflow"].clone()),
        }
    })
    .await;
    assert_eq!(workflow["status"], "COMPLETED", "{workflow}");
    let job = workflow["steps"][0]["job"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let data = app
        .ok(Some(&alice.token), READ_JOB, json!({ "id": job }))
        .await;
    let url = data["job"]["files"][0]["downloadUrl"]
        .as_str()
        .unwrap()
        .to_owned();
    (id, job, url)
}

async fn download(app: &TestApp, token: Option<&str>, url: &str) -> (u16, String) {
    let mut request = app.client().get(url);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.text().await.unwrap())
}

async fn share(app: &TestApp, by: &TestUser, id: &str, visibility: &str, emails: &[&str]) -> Value {
    app.post(
        Some(&by.token),
        SHARE,
        json!({ "id": id, "v": visibility, "emails": emails }),
    )
    .await
    .1
}

/// The code and field of a response's first error.
fn refusal(body: &Value) -> (String, String) {
    let extensions = &body["errors"][0]["extensions"];
    (
        extensions["code"].as_str().unwrap_or_default().to_owned(),
        extensions["field"].as_str().unwrap_or_default().to_owned(),
    )
}

#[tokio::test]
async fn each_level_opens_the_workflow_and_its_steps_jobs_to_exactly_those_it_names() {
    let app = TestApp::spawn_with(|config| config.server.workers = 1).await;
    let (alice, ws) = app.setup("lab", 100).await;
    let bob = app.user("bob@elsewhere.test").await;
    let carol = app.user("carol@elsewhere.test").await;
    let dave = app.user("dave@elsewhere.test").await;
    let (workflow, job, url) = translated(&app, &alice, &ws).await;
    let (status, proteins) = download(&app, Some(&alice.token), &url).await;
    assert_eq!(status, 200);
    assert!(proteins.starts_with('>'), "{proteins}");

    let callers: [(&str, Option<&str>); 4] = [
        ("anonymous", None),
        ("a logged-in non-member", Some(&bob.token)),
        ("an invited e-mail", Some(&carol.token)),
        ("a user not invited", Some(&dave.token)),
    ];
    // Which callers each level lets in, in the order of `callers`.
    let levels: [(&str, &[&str], [bool; 4]); 5] = [
        ("PRIVATE", &[], [false, false, false, false]),
        ("PUBLIC", &[], [true, true, true, true]),
        ("LOGGED_IN", &[], [false, true, true, true]),
        (
            "INVITED",
            &["Carol@Elsewhere.test"],
            [false, false, true, false],
        ),
        // Back to PRIVATE: hidden again.
        ("PRIVATE", &[], [false, false, false, false]),
    ];
    for (visibility, emails, allowed) in levels {
        let body = share(&app, &alice, &workflow, visibility, emails).await;
        assert!(body["errors"].is_null(), "{body}");
        let shared = &body["data"]["setWorkflowSharing"]["workflow"];
        assert_eq!(shared["visibility"], visibility);
        let invited: Vec<String> = emails.iter().map(|e| e.to_lowercase()).collect();
        assert_eq!(shared["invitedEmails"], json!(invited));
        for ((caller, token), allowed) in callers.iter().zip(allowed) {
            let what = format!("{visibility} workflow, read by {caller}");
            let (_, body) = app
                .post(*token, READ_WORKFLOW, json!({ "id": workflow }))
                .await;
            let (_, job_body) = app.post(*token, READ_JOB, json!({ "id": job })).await;
            let (status, downloaded) = download(&app, *token, &url).await;
            if !allowed {
                assert_eq!(refusal(&body).0, "NOT_FOUND", "{what}: {body}");
                assert_eq!(refusal(&job_body).0, "NOT_FOUND", "{what}: {job_body}");
                assert_eq!(status, 404, "{what}: the output file");
                continue;
            }
            assert!(body["errors"].is_null(), "{what}: {body}");
            let read = &body["data"]["workflow"];
            assert_eq!(read["name"], "shared run", "{what}");
            // Nothing of the workspace, and nothing to manage.
            assert!(read["submitter"].is_null(), "{what}: {read}");
            assert!(read["workspaceId"].is_null(), "{what}: {read}");
            assert!(read["invitedEmails"].is_null(), "{what}: {read}");
            for can in ["viewerCanShare", "viewerCanCancel", "viewerCanRetry"] {
                assert_eq!(read[can], false, "{what}: {can}");
            }
            let text = read.to_string();
            for secret in [&ws, &alice.id, &alice.email] {
                assert!(!text.contains(secret.as_str()), "{what} shows {secret}");
            }
            assert_eq!(read["steps"][0]["job"]["id"], job.as_str(), "{what}");
            // The step's job, its timeline and its output file.
            assert!(job_body["errors"].is_null(), "{what}: {job_body}");
            let read_job = &job_body["data"]["job"];
            assert_eq!(read_job["status"], "COMPLETED", "{what}");
            assert!(read_job["workspace"].is_null() && read_job["submitter"].is_null());
            assert_eq!(read_job["workflow"]["id"], workflow.as_str(), "{what}");
            assert!(
                read_job["timeline"].as_array().unwrap().len() >= 3,
                "{what}: {read_job}"
            );
            assert_eq!(read_job["files"][0]["downloadUrl"], url.as_str());
            assert_eq!(status, 200, "{what}: the output file");
            assert_eq!(downloaded, proteins, "{what}");
        }
    }
    // Members see the workspace; the submitter manages the sharing.
    let data = app
        .ok(Some(&alice.token), READ_WORKFLOW, json!({ "id": workflow }))
        .await;
    assert_eq!(data["workflow"]["submitter"]["id"], alice.id.as_str());
    assert_eq!(data["workflow"]["workspaceId"], ws.as_str());
    assert_eq!(data["workflow"]["viewerCanShare"], true);
}

#[tokio::test]
async fn only_managers_change_the_sharing_and_bad_e_mails_write_nothing() {
    let app = TestApp::spawn_with(|config| config.server.workers = 1).await;
    let (alice, ws) = app.setup("lab", 100).await;
    let member = app.user("member@lab.test").await;
    app.add_member(&alice, &ws, &member, "MEMBER").await;
    let carol = app.user("carol@elsewhere.test").await;
    let (workflow, job, _) = translated(&app, &alice, &ws).await;

    // A member who did not submit it may read it, not share it.
    let data = app
        .ok(
            Some(&member.token),
            READ_WORKFLOW,
            json!({ "id": workflow }),
        )
        .await;
    assert_eq!(data["workflow"]["viewerCanShare"], false);
    assert!(data["workflow"]["invitedEmails"].is_null());
    let body = share(&app, &member, &workflow, "PUBLIC", &[]).await;
    assert_eq!(refusal(&body).0, "FORBIDDEN", "{body}");

    let body = share(
        &app,
        &alice,
        &workflow,
        "INVITED",
        &["carol@elsewhere.test"],
    )
    .await;
    assert!(body["errors"].is_null(), "{body}");
    let many: Vec<String> = (0..101).map(|i| format!("u{i}@x.test")).collect();
    let many: Vec<&str> = many.iter().map(String::as_str).collect();
    let refused: [(&str, &[&str]); 4] = [
        ("INVITED", &[]),
        ("INVITED", &["carol@elsewhere.test", "not an e-mail"]),
        ("INVITED", &many),
        ("PUBLIC", &["dave@elsewhere.test"]),
    ];
    for (visibility, emails) in refused {
        let body = share(&app, &alice, &workflow, visibility, emails).await;
        assert_eq!(
            refusal(&body),
            ("BAD_USER_INPUT".to_owned(), "invitedEmails".to_owned()),
            "{visibility} {emails:?}: {body}"
        );
    }
    // Nothing was written: still INVITED, for carol alone.
    let data = app
        .ok(Some(&alice.token), READ_WORKFLOW, json!({ "id": workflow }))
        .await;
    assert_eq!(data["workflow"]["visibility"], "INVITED");
    assert_eq!(
        data["workflow"]["invitedEmails"],
        json!(["carol@elsewhere.test"])
    );
    assert_eq!(
        entity::workflow_share::Entity::find()
            .count(&app.db)
            .await
            .unwrap(),
        1
    );
    app.ok(Some(&carol.token), READ_JOB, json!({ "id": job }))
        .await;

    // Deleting the workflow takes its invitations with it.
    app.ok(
        Some(&alice.token),
        "mutation($id: ID!) { deleteWorkflow(id: $id) { deletedWorkflowId } }",
        json!({ "id": workflow }),
    )
    .await;
    assert_eq!(
        entity::workflow_share::Entity::find()
            .count(&app.db)
            .await
            .unwrap(),
        0
    );
}

#[tokio::test]
async fn an_outsiders_subscription_follows_the_sharing() {
    let app = TestApp::spawn_with(|config| config.server.workers = 1).await;
    let (alice, ws) = app.setup("lab", 100).await;
    let bob = app.user("bob@elsewhere.test").await;
    let (workflow, _, _) = translated(&app, &alice, &ws).await;
    let body = share(&app, &alice, &workflow, "LOGGED_IN", &[]).await;
    assert!(body["errors"].is_null(), "{body}");

    let mut socket = crate::support::ws::Ws::connect(app.addr, Some(&bob.token)).await;
    socket
        .subscribe(
            "w",
            "subscription($id: ID!) { workflowUpdated(id: $id) { name submitter { id } } }",
            json!({ "id": workflow }),
        )
        .await;
    let first = socket.next_data("w").await;
    assert_eq!(first["workflowUpdated"]["name"], "shared run");
    assert!(first["workflowUpdated"]["submitter"].is_null(), "{first}");
    // A change reaches a reader through the sharing, as it reaches members.
    app.ok(
        Some(&alice.token),
        "mutation($id: ID!) { renameWorkflow(id: $id, name: \"renamed\") { workflow { id } } }",
        json!({ "id": workflow }),
    )
    .await;
    let renamed = socket.next_data("w").await;
    assert_eq!(renamed["workflowUpdated"]["name"], "renamed", "{renamed}");
    // Private again: the subscription ends, NOT_FOUND.
    share(&app, &alice, &workflow, "PRIVATE", &[]).await;
    let message = socket.message().await;
    assert_eq!(
        message["payload"]["errors"][0]["extensions"]["code"], "NOT_FOUND",
        "{message}"
    );
}
