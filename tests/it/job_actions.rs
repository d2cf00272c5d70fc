//! The lifecycle and every job action: transitions, refunds, the action x role x status matrix,
//! retries and duplicates with their lineage, deletion and sharing.

use entity::credit_transaction::{self, TransactionKind};
use entity::job::JobStatus;
use jobgraph::ids::{self};
use jobgraph::jobs::lifecycle::Change;
use sea_orm::{ColumnTrait, EntityTrait, PaginatorTrait, QueryFilter};
use serde_json::{Value, json};

use crate::support::{JOB_FIELDS, TestApp, TestUser};

async fn refunds_of(app: &TestApp, job: &str) -> u64 {
    let id = ids::decode::<entity::ids::JobId>("id", job).unwrap();
    credit_transaction::Entity::find()
        .filter(credit_transaction::Column::JobId.eq(id))
        .filter(credit_transaction::Column::Kind.eq(TransactionKind::Refund))
        .count(&app.db)
        .await
        .unwrap()
}

fn id_of(job: &Value) -> String {
    job["id"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn a_run_that_fails_is_refunded_once_with_its_whole_timeline() {
    let app = TestApp::spawn().await;
    let alice = app.user("alice@lab.test").await;
    let ws = app.workspace(&alice, "lab").await;
    app.grant(&ws, 50).await;
    let job = id_of(&app.job(&alice, &ws, 9).await);
    assert_eq!(app.balance(&ws).await, 40);
    app.drive(
        &job,
        JobStatus::Processing,
        Change {
            stage: Some("Working".into()),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    app.drive(
        &job,
        JobStatus::Failed,
        Change {
            error_message: Some("segmentation fault".into()),
            error_code: Some("EXIT_139".into()),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let (_, body) = app.read_job(Some(&alice.token), &job).await;
    let read = &body["data"]["job"];
    assert_eq!(read["status"], "FAILED");
    assert_eq!(read["refunded"], true);
    let statuses: Vec<_> = read["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["status"].clone())
        .collect();
    assert_eq!(
        statuses,
        [json!("QUEUED"), json!("PROCESSING"), json!("FAILED")]
    );
    assert_eq!(refunds_of(&app, &job).await, 1);
    assert_eq!(app.balance(&ws).await, 50);
    // Final is final.
    let again = app.drive(&job, JobStatus::Timeout, Change::default()).await;
    let message = again.unwrap_err().to_string();
    assert_eq!(message, "the job is FAILED and cannot become TIMEOUT");
    assert_eq!(refunds_of(&app, &job).await, 1);
}

#[tokio::test]
async fn two_finishers_racing_leave_one_ending_and_one_refund() {
    let app = TestApp::spawn().await;
    let alice = app.user("alice@lab.test").await;
    let ws = app.workspace(&alice, "lab").await;
    app.grant(&ws, 1000).await;
    for _ in 0..8 {
        let job = id_of(&app.job(&alice, &ws, 4).await);
        app.drive(&job, JobStatus::Processing, Change::default())
            .await
            .unwrap();
        let (a, b, c) = tokio::join!(
            app.drive(&job, JobStatus::Failed, Change::default()),
            app.drive(&job, JobStatus::Timeout, Change::default()),
            app.drive(&job, JobStatus::Completed, Change::default()),
        );
        let winners = [a.is_ok(), b.is_ok(), c.is_ok()]
            .iter()
            .filter(|ok| **ok)
            .count();
        assert_eq!(winners, 1);
        let expected = if c.is_ok() { 0 } else { 1 };
        assert_eq!(refunds_of(&app, &job).await, expected);
    }
    app.balance(&ws).await;
}

#[tokio::test]
async fn cancelling_refunds_before_the_run_and_not_during_it() {
    let app = TestApp::spawn().await;
    let alice = app.user("alice@lab.test").await;
    let ws = app.workspace(&alice, "lab").await;
    app.grant(&ws, 100).await;
    let cancel = format!(
        "mutation($id: ID!) {{ cancelJob(input: {{jobId: $id}}) {{ job {{ {JOB_FIELDS} }} }} }}"
    );

    let queued = id_of(&app.job(&alice, &ws, 4).await);
    let data = app
        .ok(Some(&alice.token), &cancel, json!({"id": queued}))
        .await;
    assert_eq!(data["cancelJob"]["job"]["status"], "CANCELLED");
    assert_eq!(data["cancelJob"]["job"]["refunded"], true);
    assert_eq!(
        data["cancelJob"]["job"]["timeline"][1]["message"],
        "cancelled by alice@lab.test"
    );

    let retrying = id_of(&app.job(&alice, &ws, 4).await);
    app.drive(&retrying, JobStatus::Processing, Change::default())
        .await
        .unwrap();
    app.drive(&retrying, JobStatus::Retry, Change::default())
        .await
        .unwrap();
    let data = app
        .ok(Some(&alice.token), &cancel, json!({"id": retrying}))
        .await;
    assert_eq!(data["cancelJob"]["job"]["refunded"], true);

    let running = id_of(&app.job(&alice, &ws, 4).await);
    app.drive(&running, JobStatus::Processing, Change::default())
        .await
        .unwrap();
    let data = app
        .ok(Some(&alice.token), &cancel, json!({"id": running}))
        .await;
    assert_eq!(data["cancelJob"]["job"]["status"], "CANCELLED");
    assert_eq!(data["cancelJob"]["job"]["refunded"], false);

    let done = id_of(&app.job(&alice, &ws, 4).await);
    app.drive(&done, JobStatus::Processing, Change::default())
        .await
        .unwrap();
    app.drive(&done, JobStatus::Completed, Change::default())
        .await
        .unwrap();
    let (_, body) = app
        .post(Some(&alice.token), &cancel, json!({"id": done}))
        .await;
    assert_eq!(body["errors"][0]["extensions"]["code"], "CONFLICT");
    assert_eq!(
        body["errors"][0]["message"],
        "the job is COMPLETED and can no longer be cancelled"
    );

    // 4 jobs of 5 credits; the queued and retrying ones came back.
    assert_eq!(app.balance(&ws).await, 100 - 20 + 10);
}

const ACTIONS: [(&str, &str); 6] = [
    (
        "rename",
        "mutation($id: ID!) { renameJob(input: {jobId: $id, name: \"renamed\"}) { job { id } } }",
    ),
    (
        "delete",
        "mutation($id: ID!) { deleteJob(input: {jobId: $id}) { deletedJobId } }",
    ),
    (
        "cancel",
        "mutation($id: ID!) { cancelJob(input: {jobId: $id}) { job { id } } }",
    ),
    (
        "retry",
        "mutation($id: ID!) { retryJob(input: {jobId: $id}) { job { id } } }",
    ),
    (
        "duplicate",
        "mutation($id: ID!) { duplicateJob(input: {jobId: $id}) { job { id } } }",
    ),
    (
        "share",
        "mutation($id: ID!) { setJobSharing(input: {jobId: $id, visibility: PUBLIC}) { job { id } } }",
    ),
];

fn flag(job: &Value, action: &str) -> bool {
    let field = match action {
        "rename" => "viewerCanRename",
        "delete" => "viewerCanDelete",
        "cancel" => "viewerCanCancel",
        "retry" => "viewerCanRetry",
        "duplicate" => "viewerCanDuplicate",
        "share" => "viewerCanShare",
        other => panic!("{other}"),
    };
    job[field].as_bool().unwrap_or(false)
}

async fn job_in(app: &TestApp, by: &TestUser, ws: &str, status: &str) -> String {
    let job = id_of(&app.job(by, ws, 1).await);
    let path: &[JobStatus] = match status {
        "QUEUED" => &[],
        "PROCESSING" => &[JobStatus::Processing],
        "RETRY" => &[JobStatus::Processing, JobStatus::Retry],
        "FAILED" => &[JobStatus::Processing, JobStatus::Failed],
        "TIMEOUT" => &[JobStatus::Processing, JobStatus::Timeout],
        "CANCELLED" => &[JobStatus::Cancelled],
        "COMPLETED" => &[JobStatus::Processing, JobStatus::Completed],
        other => panic!("{other}"),
    };
    for to in path {
        app.drive(&job, *to, Change::default()).await.unwrap();
    }
    job
}

#[tokio::test]
async fn every_action_by_role_and_status_matches_the_viewer_can_flags() {
    let app = TestApp::spawn().await;
    let owner = app.user("owner@lab.test").await;
    let admin = app.user("admin@lab.test").await;
    let submitter = app.user("submitter@lab.test").await;
    let member = app.user("member@lab.test").await;
    let viewer = app.user("viewer@lab.test").await;
    let outsider = app.user("outsider@lab.test").await;
    let ws = app.workspace(&owner, "lab").await;
    app.add_member(&owner, &ws, &admin, "ADMIN").await;
    app.add_member(&owner, &ws, &submitter, "MEMBER").await;
    app.add_member(&owner, &ws, &member, "MEMBER").await;
    app.add_member(&owner, &ws, &viewer, "VIEWER").await;
    app.grant(&ws, 100_000).await;
    let actors = [
        ("OWNER", &owner),
        ("ADMIN", &admin),
        ("SUBMITTER", &submitter),
        ("OTHER_MEMBER", &member),
        ("VIEWER", &viewer),
        ("OUTSIDER", &outsider),
    ];
    let mut allowed = std::collections::BTreeSet::new();
    let mut failures = Vec::new();
    for status in [
        "QUEUED",
        "PROCESSING",
        "RETRY",
        "FAILED",
        "TIMEOUT",
        "CANCELLED",
        "COMPLETED",
    ] {
        for (actor, user) in actors {
            for (action, mutation) in ACTIONS {
                let job = job_in(&app, &submitter, &ws, status).await;
                let (_, read) = app.read_job(Some(&user.token), &job).await;
                let can = flag(&read["data"]["job"], action);
                let (_, body) = app
                    .post(Some(&user.token), mutation, json!({"id": job}))
                    .await;
                let did = body["errors"].is_null();
                if can != did {
                    failures.push(format!(
                        "{actor} {action} on {status}: flag {can}, mutation {body}"
                    ));
                }
                if did {
                    allowed.insert(format!("{status} {actor} {action}"));
                }
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    // Spot checks of the rules themselves.
    for expected in [
        "QUEUED OWNER cancel",
        "QUEUED ADMIN cancel",
        "QUEUED SUBMITTER cancel",
        "PROCESSING SUBMITTER cancel",
        "FAILED OTHER_MEMBER retry",
        "COMPLETED OTHER_MEMBER duplicate",
        "COMPLETED SUBMITTER delete",
        "FAILED ADMIN share",
        "RETRY SUBMITTER cancel",
        "TIMEOUT OWNER retry",
        "CANCELLED SUBMITTER retry",
        "CANCELLED ADMIN delete",
    ] {
        assert!(allowed.contains(expected), "{expected} should be allowed");
    }
    for refused in [
        "QUEUED OTHER_MEMBER cancel",
        "QUEUED OWNER delete",
        "COMPLETED OWNER cancel",
        "COMPLETED OWNER retry",
        "QUEUED SUBMITTER retry",
        "FAILED VIEWER duplicate",
        "FAILED VIEWER rename",
        "FAILED OUTSIDER rename",
        "COMPLETED OTHER_MEMBER share",
        "RETRY OWNER delete",
        "RETRY OWNER retry",
        "TIMEOUT OWNER cancel",
    ] {
        assert!(!allowed.contains(refused), "{refused} should be refused");
    }
}

#[tokio::test]
async fn outsiders_on_shared_jobs_may_do_what_the_viewer_can_flags_say() {
    let app = TestApp::spawn().await;
    let owner = app.user("owner@lab.test").await;
    let outsider = app.user("outsider@lab.test").await;
    let ws = app.workspace(&owner, "lab").await;
    app.grant(&ws, 100_000).await;
    let own = app.workspace(&outsider, "outsider's").await;
    app.grant(&own, 100_000).await;
    let share = "mutation($id: ID!, $v: Visibility!) { setJobSharing(input: {jobId: $id, visibility: $v}) { job { id } } }";
    let read = format!(
        "query($id: ID!, $into: ID!) {{ job(id: $id) {{ {JOB_FIELDS} intoOwn: viewerCanDuplicate(into: $into) }} }}"
    );
    let into_own = "mutation($id: ID!, $into: ID!) { duplicateJob(input: {jobId: $id, workspaceId: $into}) { job { id } } }";
    let mut allowed = std::collections::BTreeSet::new();
    let mut failures = Vec::new();
    for status in ["QUEUED", "FAILED", "COMPLETED", "CANCELLED"] {
        for (visibility, actor, token) in [
            ("PUBLIC", "OUTSIDER", Some(outsider.token.as_str())),
            ("LOGGED_IN", "OUTSIDER", Some(outsider.token.as_str())),
            ("PUBLIC", "ANONYMOUS", None),
        ] {
            let actions = ACTIONS
                .iter()
                .map(|(action, mutation)| (*action, *mutation, json!({})))
                .chain([("duplicate into own", into_own, json!({"into": own}))]);
            for (action, mutation, extra) in actions {
                let job = job_in(&app, &owner, &ws, status).await;
                app.ok(
                    Some(&owner.token),
                    share,
                    json!({"id": job, "v": visibility}),
                )
                .await;
                let (_, body) = app
                    .post(token, &read, json!({"id": job, "into": own}))
                    .await;
                let job_read = &body["data"]["job"];
                assert!(
                    job_read.is_object(),
                    "{actor} reads a {visibility} job: {body}"
                );
                let can = match action {
                    "duplicate into own" => job_read["intoOwn"].as_bool().unwrap(),
                    _ => flag(job_read, action),
                };
                let mut variables = json!({"id": job});
                variables
                    .as_object_mut()
                    .unwrap()
                    .extend(extra.as_object().unwrap().clone());
                let (_, body) = app.post(token, mutation, variables).await;
                let did = body["errors"].is_null();
                if can != did {
                    failures.push(format!(
                        "{actor} {action} on {visibility} {status}: flag {can}, mutation {body}"
                    ));
                }
                if did {
                    allowed.insert(format!("{visibility} {status} {actor} {action}"));
                }
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    // An outsider copies a job they may read into their own workspace, and nothing else.
    let expected: std::collections::BTreeSet<String> =
        ["QUEUED", "FAILED", "COMPLETED", "CANCELLED"]
            .into_iter()
            .flat_map(|status| {
                ["PUBLIC", "LOGGED_IN"]
                    .map(|visibility| format!("{visibility} {status} OUTSIDER duplicate into own"))
            })
            .collect();
    assert_eq!(allowed, expected);
}

#[tokio::test]
async fn retries_and_duplicates_are_new_charged_jobs_linked_to_their_parent() {
    let app = TestApp::spawn().await;
    let alice = app.user("alice@lab.test").await;
    let ws = app.workspace(&alice, "lab").await;
    app.grant(&ws, 100).await;
    let original = id_of(&app.job(&alice, &ws, 1).await);
    app.drive(&original, JobStatus::Processing, Change::default())
        .await
        .unwrap();
    app.drive(&original, JobStatus::Failed, Change::default())
        .await
        .unwrap();
    assert_eq!(app.balance(&ws).await, 100);

    let lineage = "id parentKind parent { id } changesFromParent { kind name oldValue newValue } derivedJobs { id parentKind }";
    let data = app
        .ok(
            Some(&alice.token),
            &format!("mutation($id: ID!) {{ retryJob(input: {{jobId: $id}}) {{ job {{ status creditCost {lineage} }} }} }}"),
            json!({"id": original}),
        )
        .await;
    let retried = &data["retryJob"]["job"];
    assert_eq!(retried["status"], "QUEUED");
    assert_eq!(retried["parentKind"], "RETRY");
    assert_eq!(retried["parent"]["id"], original.as_str());
    assert_eq!(retried["changesFromParent"], json!([]));
    assert_eq!(app.balance(&ws).await, 98);

    let data = app
        .ok(
            Some(&alice.token),
            &format!("mutation($id: ID!) {{ duplicateJob(input: {{jobId: $id, name: \"longer\", settings: {{seconds: 3}}}}) {{ job {{ name creditCost {lineage} }} }} }}"),
            json!({"id": original}),
        )
        .await;
    let copy = &data["duplicateJob"]["job"];
    assert_eq!(copy["name"], "longer");
    assert_eq!(copy["parentKind"], "DUPLICATE");
    assert_eq!(copy["creditCost"], 4);
    assert_eq!(
        copy["changesFromParent"],
        json!([{"kind": "SETTING", "name": "seconds", "oldValue": 1, "newValue": 3}])
    );
    assert_eq!(app.balance(&ws).await, 94);

    let data = app
        .ok(
            Some(&alice.token),
            &format!("query($id: ID!) {{ job(id: $id) {{ {lineage} }} }}"),
            json!({"id": original}),
        )
        .await;
    let derived: Vec<_> = data["job"]["derivedJobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["parentKind"].clone())
        .collect();
    assert_eq!(derived, [json!("RETRY"), json!("DUPLICATE")]);
}

#[tokio::test]
async fn deleting_a_finished_job_keeps_its_ledger_entries() {
    let app = TestApp::spawn().await;
    let alice = app.user("alice@lab.test").await;
    let ws = app.workspace(&alice, "lab").await;
    app.grant(&ws, 100).await;
    let job = id_of(&app.job(&alice, &ws, 4).await);
    let delete = "mutation($id: ID!) { deleteJob(input: {jobId: $id}) { deletedJobId } }";
    let (_, body) = app
        .post(Some(&alice.token), delete, json!({"id": job}))
        .await;
    assert_eq!(body["errors"][0]["extensions"]["code"], "CONFLICT");
    assert_eq!(
        body["errors"][0]["message"],
        "the job is QUEUED: cancel it before deleting it"
    );

    app.ok(
        Some(&alice.token),
        "mutation($id: ID!) { cancelJob(input: {jobId: $id}) { job { id } } }",
        json!({"id": job}),
    )
    .await;
    let keys = || entity::job_key::Entity::find().count(&app.db);
    assert_eq!(keys().await.unwrap(), 1);
    app.ok(Some(&alice.token), delete, json!({"id": job})).await;
    let (_, body) = app.read_job(Some(&alice.token), &job).await;
    assert_eq!(body["errors"][0]["extensions"]["code"], "NOT_FOUND");
    let uuid = ids::decode::<entity::ids::JobId>("id", &job).unwrap();
    let entries = credit_transaction::Entity::find()
        .filter(credit_transaction::Column::JobId.eq(uuid))
        .count(&app.db)
        .await
        .unwrap();
    assert_eq!(entries, 2, "the charge and the refund stay");
    assert_eq!(
        entity::job_event::Entity::find()
            .count(&app.db)
            .await
            .unwrap(),
        0
    );
    assert_eq!(keys().await.unwrap(), 0, "the job's keys go with it");
    assert_eq!(app.balance(&ws).await, 100);
}

#[tokio::test]
async fn sharing_levels_decide_who_sees_a_job_and_shared_viewers_only_read() {
    let app = TestApp::spawn().await;
    let alice = app.user("alice@lab.test").await;
    let bob = app.user("bob@lab.test").await;
    let carol = app.user("carol@lab.test").await;
    let dave = app.user("dave@lab.test").await;
    let ws = app.workspace(&alice, "lab").await;
    app.add_member(&alice, &ws, &bob, "MEMBER").await;
    app.grant(&ws, 100).await;
    let job = id_of(&app.job(&alice, &ws, 1).await);
    let share = "mutation($id: ID!, $v: Visibility!, $emails: [String!]!) {
      setJobSharing(input: {jobId: $id, visibility: $v, invitedEmails: $emails}) { job { visibility invitedEmails } } }";
    let readers: [(&str, Option<&str>); 5] = [
        ("alice", Some(&alice.token)),
        ("bob", Some(&bob.token)),
        ("carol", Some(&carol.token)),
        ("dave", Some(&dave.token)),
        ("anonymous", None),
    ];
    for (visibility, emails, expected) in [
        ("PRIVATE", json!([]), [true, true, false, false, false]),
        ("PUBLIC", json!([]), [true, true, true, true, true]),
        ("LOGGED_IN", json!([]), [true, true, true, true, false]),
        (
            "INVITED",
            json!(["Dave@Lab.test"]),
            [true, true, false, true, false],
        ),
    ] {
        let data = app
            .ok(
                Some(&alice.token),
                share,
                json!({"id": job, "v": visibility, "emails": emails}),
            )
            .await;
        assert_eq!(data["setJobSharing"]["job"]["visibility"], visibility);
        for ((name, token), sees) in readers.iter().zip(expected) {
            let (_, body) = app
                .post(*token, "query($id: ID!) { job(id: $id) { name settings workspace { id } submitter { email } viewerCanRename viewerCanDuplicate } }", json!({"id": job}))
                .await;
            let seen = body["errors"].is_null();
            assert_eq!(seen, sees, "{name} on {visibility}: {body}");
            if !seen {
                assert_eq!(body["errors"][0]["extensions"]["code"], "NOT_FOUND");
            }
            if seen && matches!(*name, "carol" | "dave" | "anonymous") {
                let job = &body["data"]["job"];
                assert!(
                    job["workspace"].is_null() && job["submitter"].is_null(),
                    "{body}"
                );
                assert_eq!(job["viewerCanRename"], false);
                // Not into the job's workspace; into their own, see the test above.
                assert_eq!(job["viewerCanDuplicate"], false);
            }
        }
    }
    // Dave, invited, may read but not act on the job.
    let (_, body) = app
        .post(
            Some(&dave.token),
            "mutation($id: ID!) { renameJob(input: {jobId: $id, name: \"mine\"}) { job { id } } }",
            json!({"id": job}),
        )
        .await;
    assert_eq!(body["errors"][0]["extensions"]["code"], "FORBIDDEN");
    let data = app
        .ok(
            Some(&alice.token),
            "query($id: ID!) { job(id: $id) { invitedEmails } }",
            json!({"id": job}),
        )
        .await;
    assert_eq!(data["job"]["invitedEmails"], json!(["dave@lab.test"]));
    let data = app
        .ok(
            Some(&dave.token),
            "query($id: ID!) { job(id: $id) { invitedEmails } }",
            json!({"id": job}),
        )
        .await;
    assert!(data["job"]["invitedEmails"].is_null());

    // ...and duplicate it into a workspace of his own, charged there.
    let own = app.workspace(&dave, "dave's").await;
    app.grant(&own, 10).await;
    let data = app
        .ok(
            Some(&dave.token),
            "mutation($id: ID!, $ws: ID!) { duplicateJob(input: {jobId: $id, workspaceId: $ws}) { job { workspace { id } parentKind } } }",
            json!({"id": job, "ws": own}),
        )
        .await;
    assert_eq!(data["duplicateJob"]["job"]["workspace"]["id"], own.as_str());
    assert_eq!(app.balance(&own).await, 8);

    let (_, body) = app
        .post(
            Some(&alice.token),
            share,
            json!({"id": job, "v": "INVITED", "emails": []}),
        )
        .await;
    assert_eq!(body["errors"][0]["extensions"]["field"], "invitedEmails");
}
