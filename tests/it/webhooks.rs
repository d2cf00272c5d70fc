//! Webhooks end to end: a receiver on a real port checks every request's Standard Webhooks
//! signature with the secret it was given once; failures are retried on the schedule, then
//! the endpoint is disabled; nothing committed is lost across a restart; only owners and
//! admins manage endpoints; and processes sharing a database deliver each event once.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;
use tokio::net::TcpListener;

use crate::support::{TestApp, TestUser, WAIT, eventually, until};

/// One request the receiver got.
#[derive(Debug, Clone)]
struct Got {
    id: String,
    body: Value,
    verified: bool,
    answered: u16,
    at: Instant,
}

#[derive(Default)]
struct Inbox {
    secret: Mutex<Option<String>>,
    failures_left: AtomicUsize,
    failing: AtomicBool,
    /// How long it takes to answer.
    delay: Mutex<Duration>,
    got: Mutex<Vec<Got>>,
}

/// A webhook receiver on a real port: verifies signatures, answers as told.
struct Receiver {
    url: String,
    inbox: Arc<Inbox>,
    task: tokio::task::JoinHandle<()>,
}

impl Receiver {
    async fn start() -> Receiver {
        let inbox = Arc::new(Inbox::default());
        let router = Router::new()
            .route("/hook", post(receive))
            .with_state(inbox.clone());
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
        Receiver {
            url: format!("http://{addr}/hook"),
            inbox,
            task,
        }
    }

    fn trust(&self, secret: &str) {
        *self.inbox.secret.lock().unwrap() = Some(secret.to_owned());
    }

    /// Answers 503 to the next `n` requests.
    fn fail_next(&self, n: usize) {
        self.inbox.failures_left.store(n, Ordering::SeqCst);
    }

    /// Answers 500 to every request while `failing`.
    fn fail_always(&self, failing: bool) {
        self.inbox.failing.store(failing, Ordering::SeqCst);
    }

    /// Takes `delay` to answer each request.
    fn answer_after(&self, delay: Duration) {
        *self.inbox.delay.lock().unwrap() = delay;
    }

    fn got(&self) -> Vec<Got> {
        self.inbox.got.lock().unwrap().clone()
    }

    /// The requests answered 2xx.
    fn delivered(&self) -> Vec<Got> {
        self.got()
            .into_iter()
            .filter(|got| got.answered == 200)
            .collect()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn receive(State(inbox): State<Arc<Inbox>>, headers: HeaderMap, body: String) -> StatusCode {
    let delay = *inbox.delay.lock().unwrap();
    tokio::time::sleep(delay).await;
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    let id = header("webhook-id");
    let secret = inbox.secret.lock().unwrap().clone().unwrap_or_default();
    let verified = verify(
        &secret,
        &id,
        &header("webhook-timestamp"),
        &body,
        &header("webhook-signature"),
    );
    let answered = if !verified {
        StatusCode::BAD_REQUEST
    } else if inbox.failing.load(Ordering::SeqCst) {
        StatusCode::INTERNAL_SERVER_ERROR
    } else if inbox
        .failures_left
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok()
    {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::OK
    };
    inbox.got.lock().unwrap().push(Got {
        id,
        body: serde_json::from_str(&body).unwrap_or(Value::Null),
        verified,
        answered: answered.as_u16(),
        at: Instant::now(),
    });
    answered
}

/// The Standard Webhooks check, written out: the HMAC-SHA256 of `{id}.{timestamp}.{body}`
/// keyed by the secret's decoded bytes, among the header's `v1,` signatures, with a timestamp
/// within five minutes.
fn verify(secret: &str, id: &str, timestamp: &str, body: &str, signatures: &str) -> bool {
    let Some(key) = secret
        .strip_prefix("whsec_")
        .and_then(|key| STANDARD.decode(key).ok())
    else {
        return false;
    };
    let Ok(at) = timestamp.parse::<i64>() else {
        return false;
    };
    if (chrono::Utc::now().timestamp() - at).abs() > 300 || id.is_empty() {
        return false;
    }
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).unwrap();
    mac.update(format!("{id}.{timestamp}.{body}").as_bytes());
    let expected = STANDARD.encode(mac.finalize().into_bytes());
    signatures
        .split(' ')
        .any(|signature| signature.strip_prefix("v1,") == Some(expected.as_str()))
}

/// A server that may send webhooks to this machine, with `schedule` as its retry schedule.
async fn spawn(schedule: &str, workers: usize) -> TestApp {
    let schedule = schedule.parse().unwrap();
    TestApp::spawn_with(|config| {
        config.server.fetch_allow = vec!["127.0.0.1".into()];
        config.server.webhooks.webhook_retry_schedule = schedule;
        config.server.webhooks.webhook_timeout_seconds = 5;
        config.server.workers = workers;
    })
    .await
}

const CREATE: &str = "mutation($input: CreateWebhookInput!) {
  createWebhook(input: $input) { secret webhook { id url events enabled } }
}";

/// Registers `receiver` for `events` of `ws` as `user`; it trusts the secret returned.
async fn register(
    app: &TestApp,
    user: &TestUser,
    ws: &str,
    receiver: &Receiver,
    events: &[&str],
) -> String {
    let data = app
        .ok(
            Some(&user.token),
            CREATE,
            json!({ "input": { "workspaceId": ws, "url": receiver.url, "events": events } }),
        )
        .await;
    let secret = data["createWebhook"]["secret"].as_str().unwrap();
    assert!(secret.starts_with("whsec_"), "{secret}");
    assert_eq!(
        STANDARD.decode(&secret["whsec_".len()..]).unwrap().len(),
        32
    );
    receiver.trust(secret);
    data["createWebhook"]["webhook"]["id"]
        .as_str()
        .unwrap()
        .to_owned()
}

const ENDPOINT: &str = "query($id: ID!) { node(id: $id) { ... on Webhook {
  enabled disabledReason disabledAt failureCount
  deliveries(first: 100) { edges { node {
    id eventId eventType status attempt statusCode durationMs error nextAttemptAt deliveredAt
    attempts { attempt statusCode durationMs error createdAt }
  } } }
} } }";

/// The endpoint with its delivery log, newest delivery first.
async fn endpoint(app: &TestApp, user: &TestUser, id: &str) -> Value {
    app.ok(Some(&user.token), ENDPOINT, json!({ "id": id }))
        .await["node"]
        .clone()
}

/// The endpoint once every delivery of its log has ended: a receiver has its answer before
/// the server records it.
async fn settled(app: &TestApp, user: &TestUser, id: &str) -> Value {
    eventually(WAIT, "the delivery log records every answer", || async {
        let found = endpoint(app, user, id).await;
        if deliveries(&found).iter().all(|d| d["status"] != "PENDING") {
            Ok(found)
        } else {
            Err(found)
        }
    })
    .await
}

fn deliveries(endpoint: &Value) -> Vec<Value> {
    endpoint["deliveries"]["edges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|edge| edge["node"].clone())
        .collect()
}

async fn send_test(app: &TestApp, user: &TestUser, webhook: &str) -> Value {
    app.ok(
        Some(&user.token),
        "mutation($id: ID!) { sendTestEvent(input: {id: $id}) { delivery { id eventId status } } }",
        json!({ "id": webhook }),
    )
    .await["sendTestEvent"]["delivery"]
        .clone()
}

async fn grant(app: &TestApp, ws: &str, amount: i64) {
    app.ok(
        Some(&app.admin_token),
        "mutation($ws: ID!, $amount: Int!) { grantCredits(input: {workspaceId: $ws, amount: $amount}) { workspace { id } } }",
        json!({ "ws": ws, "amount": amount }),
    )
    .await;
}

#[tokio::test]
async fn a_receiver_gets_signed_job_and_credit_events_it_can_verify() {
    let app = spawn("5s", 1).await;
    let (alice, ws) = app.setup("lab", 100).await;
    let receiver = Receiver::start().await;
    let webhook = register(
        &app,
        &alice,
        &ws,
        &receiver,
        &[
            "job.queued",
            "job.started",
            "job.completed",
            "credits.charged",
        ],
    )
    .await;
    let job = app.job(&alice, &ws, 0).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    until(WAIT, "the job's completion is delivered", || async {
        receiver
            .got()
            .iter()
            .any(|got| got.body["type"] == "job.completed")
    })
    .await;
    // The charge's event may come after the job's last: wait for it too.
    until(WAIT, "the charge is delivered", || async {
        receiver
            .got()
            .iter()
            .any(|got| got.body["type"] == "credits.charged")
    })
    .await;
    let got = receiver.got();
    assert!(
        got.iter().all(|got| got.verified && got.answered == 200),
        "{got:?}"
    );
    // Deliveries run side by side, so they may arrive in any order: each status once.
    let mut job_types: Vec<&str> = got
        .iter()
        .filter(|got| got.body["data"]["id"] == job.as_str())
        .map(|got| got.body["type"].as_str().unwrap())
        .collect();
    job_types.sort();
    assert_eq!(job_types, ["job.completed", "job.queued", "job.started"]);
    let completed = got
        .iter()
        .find(|got| got.body["type"] == "job.completed")
        .unwrap();
    let data = &completed.body["data"];
    assert_eq!(data["workspaceId"], ws.as_str());
    assert_eq!(data["status"], "COMPLETED");
    assert_eq!(data["tool"], "sleep");
    assert_eq!(data["submitterId"], alice.id.as_str());
    assert!(completed.body["timestamp"].as_str().unwrap().ends_with('Z'));
    let charged = got
        .iter()
        .find(|got| got.body["type"] == "credits.charged")
        .unwrap();
    assert_eq!(charged.body["data"]["jobId"], job.as_str());
    assert_eq!(charged.body["data"]["kind"], "CHARGE");
    let mut ids: Vec<&str> = got.iter().map(|got| got.id.as_str()).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), got.len(), "each event has its own webhook-id");
    // The log says the same: each delivered at its first attempt, with the receiver's answer.
    let log = deliveries(&settled(&app, &alice, &webhook).await);
    assert_eq!(log.len(), got.len());
    for delivery in &log {
        assert_eq!(delivery["status"], "DELIVERED", "{delivery}");
        assert_eq!(delivery["attempt"], 1);
        assert_eq!(delivery["statusCode"], 200);
        assert!(delivery["deliveredAt"].is_string() && delivery["nextAttemptAt"].is_null());
        assert!(ids.contains(&delivery["eventId"].as_str().unwrap()));
    }
    // The secret is never readable again: no field of `Webhook` holds it.
    let (_, body) = app
        .post(
            Some(&alice.token),
            "query($id: ID!) { node(id: $id) { ... on Webhook { secret } } }",
            json!({ "id": webhook }),
        )
        .await;
    assert_eq!(
        body["errors"][0]["extensions"]["code"],
        "GRAPHQL_VALIDATION_FAILED"
    );
}

#[tokio::test]
async fn a_failing_receiver_is_retried_with_backoff_and_the_log_shows_each_attempt() {
    let app = spawn("300ms,600ms,10s", 0).await;
    let (alice, ws) = app.setup("lab", 0).await;
    let receiver = Receiver::start().await;
    let webhook = register(&app, &alice, &ws, &receiver, &["credits.granted"]).await;
    receiver.fail_next(2);
    let queued = send_test(&app, &alice, &webhook).await;
    assert_eq!(queued["status"], "PENDING");
    until(WAIT, "the third attempt succeeds", || async {
        !receiver.delivered().is_empty()
    })
    .await;
    let got = receiver.got();
    assert_eq!(
        got.iter().map(|got| got.answered).collect::<Vec<_>>(),
        [503, 503, 200]
    );
    assert!(got.iter().all(|got| got.verified));
    assert!(
        got.iter()
            .all(|got| got.id == queued["eventId"].as_str().unwrap()),
        "every attempt carries the same webhook-id: {got:?}"
    );
    assert_eq!(got[0].body["type"], "webhook.test");
    // Backoff: each retry waited at least its step of the schedule.
    assert!(
        got[1].at - got[0].at >= Duration::from_millis(280),
        "{got:?}"
    );
    assert!(
        got[2].at - got[1].at >= Duration::from_millis(580),
        "{got:?}"
    );
    let found = settled(&app, &alice, &webhook).await;
    assert_eq!(found["enabled"], true);
    assert_eq!(found["failureCount"], 0);
    let log = deliveries(&found);
    assert_eq!(log.len(), 1);
    let delivery = &log[0];
    assert_eq!(delivery["status"], "DELIVERED");
    assert_eq!(delivery["attempt"], 3);
    assert_eq!(delivery["statusCode"], 200);
    let attempts = delivery["attempts"].as_array().unwrap();
    assert_eq!(
        attempts
            .iter()
            .map(|a| (
                a["attempt"].as_i64().unwrap(),
                a["statusCode"].as_i64().unwrap()
            ))
            .collect::<Vec<_>>(),
        [(1, 503), (2, 503), (3, 200)]
    );
    assert_eq!(
        attempts[0]["error"],
        "the endpoint answered 503 Service Unavailable"
    );
    assert!(attempts[2]["error"].is_null());
    assert!(
        attempts
            .iter()
            .all(|a| a["durationMs"].as_i64().unwrap() >= 0)
    );
    let metrics = app
        .client()
        .get(app.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("jobgraph_webhook_deliveries_total{outcome=\"failed\"} 2"),
        "{metrics}"
    );
    assert!(metrics.contains("jobgraph_webhook_deliveries_total{outcome=\"ok\"} 1"));
}

#[tokio::test]
async fn an_endpoint_that_keeps_failing_is_disabled_and_can_be_enabled_and_redelivered() {
    let app = spawn("100ms,100ms", 0).await;
    let (alice, ws) = app.setup("lab", 0).await;
    let receiver = Receiver::start().await;
    let webhook = register(&app, &alice, &ws, &receiver, &["credits.granted"]).await;
    receiver.fail_always(true);
    let queued = send_test(&app, &alice, &webhook).await;
    let found = eventually(WAIT, "the endpoint is disabled", || async {
        let found = endpoint(&app, &alice, &webhook).await;
        if found["enabled"] == false {
            Ok(found)
        } else {
            Err(found)
        }
    })
    .await;
    let reason = found["disabledReason"].as_str().unwrap();
    assert!(
        reason.contains("3 attempts") && reason.contains("500"),
        "{reason}"
    );
    assert!(
        reason.contains(queued["eventId"].as_str().unwrap()),
        "{reason}"
    );
    assert!(found["disabledAt"].is_string());
    assert_eq!(found["failureCount"], 3);
    let delivery = &deliveries(&found)[0];
    assert_eq!(delivery["status"], "FAILED");
    assert_eq!(delivery["attempt"], 3);
    assert!(delivery["nextAttemptAt"].is_null());
    assert_eq!(receiver.got().len(), 3);

    // The owner fixes the receiver, enables the endpoint and sends the event again.
    receiver.fail_always(false);
    let enabled = app
        .ok(
            Some(&alice.token),
            "mutation($id: ID!) { updateWebhook(input: {id: $id, enabled: true}) {
               webhook { enabled disabledReason disabledAt failureCount } } }",
            json!({ "id": webhook }),
        )
        .await;
    assert_eq!(
        enabled["updateWebhook"]["webhook"],
        json!({ "enabled": true, "disabledReason": null, "disabledAt": null, "failureCount": 0 })
    );
    let again = app
        .ok(
            Some(&alice.token),
            "mutation($id: ID!) { redeliverWebhookDelivery(input: {deliveryId: $id}) {
               delivery { status eventId } } }",
            json!({ "id": delivery["id"] }),
        )
        .await;
    assert_eq!(
        again["redeliverWebhookDelivery"]["delivery"]["status"],
        "PENDING"
    );
    until(WAIT, "the redelivery arrives", || async {
        !receiver.delivered().is_empty()
    })
    .await;
    assert_eq!(
        receiver.delivered()[0].id,
        queued["eventId"].as_str().unwrap()
    );
    let found = settled(&app, &alice, &webhook).await;
    let delivery = &deliveries(&found)[0];
    assert_eq!(delivery["status"], "DELIVERED");
    assert_eq!(delivery["attempt"], 4);
}

#[tokio::test]
async fn a_receiver_that_does_not_answer_delays_no_other_endpoint() {
    let app = spawn("5s", 0).await;
    let (alice, ws) = app.setup("lab", 0).await;
    let slow = Receiver::start().await;
    let fast = Receiver::start().await;
    // Slower than the server's 5 s time limit.
    slow.answer_after(Duration::from_secs(30));
    let slow_hook = register(&app, &alice, &ws, &slow, &["credits.granted"]).await;
    let fast_hook = register(&app, &alice, &ws, &fast, &["credits.granted"]).await;
    for _ in 0..10 {
        send_test(&app, &alice, &slow_hook).await;
    }
    let started = Instant::now();
    send_test(&app, &alice, &fast_hook).await;
    grant(&app, &ws, 5).await;
    until(WAIT, "the fast receiver gets both events", || async {
        fast.delivered().len() == 2
    })
    .await;
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "the fast endpoint waited {:?}",
        started.elapsed()
    );
    assert!(slow.got().is_empty(), "the slow receiver answered already");
    // The API answers meanwhile.
    let answered = Instant::now();
    app.ok(
        Some(&alice.token),
        "{ viewer { isAuthenticated } }",
        json!({}),
    )
    .await;
    assert!(answered.elapsed() < Duration::from_secs(1));
    // The slow one is given up on at the time limit, and retried later.
    let found = eventually(WAIT, "the slow endpoint's attempts time out", || async {
        let found = endpoint(&app, &alice, &slow_hook).await;
        if deliveries(&found).iter().any(|d| d["attempt"] == 1) {
            Ok(found)
        } else {
            Err(found)
        }
    })
    .await;
    let timed_out = deliveries(&found)
        .into_iter()
        .find(|d| d["attempt"] == 1)
        .unwrap();
    assert_eq!(timed_out["status"], "PENDING");
    assert_eq!(timed_out["error"], "no answer within 5 s");
    assert!(timed_out["statusCode"].is_null());
}

#[tokio::test]
async fn events_committed_before_a_delivery_or_while_the_server_is_down_are_delivered_after_restart()
 {
    let mut app = spawn("1s", 0).await;
    let (alice, ws) = app.setup("lab", 0).await;
    let receiver = Receiver::start().await;
    let webhook = register(&app, &alice, &ws, &receiver, &["credits.granted"]).await;
    // The first event's first attempt fails; its retry is due when the server is gone.
    receiver.fail_next(1);
    grant(&app, &ws, 10).await;
    // Recorded, not only received: a server stopped between the two leaves the attempt's
    // claim to lapse, which takes longer than this test waits.
    until(WAIT, "the first attempt is recorded", || async {
        deliveries(&endpoint(&app, &alice, &webhook).await)
            .iter()
            .any(|d| d["attempt"] == 1)
    })
    .await;
    assert_eq!(receiver.got().len(), 1);
    let ws_id = jobgraph::ids::decode::<entity::ids::WorkspaceId>("ws", &ws).unwrap();
    app.stop_then(|db| async move {
        // Committed while no server runs.
        jobgraph::credits::ledger::grant(&db, &jobgraph::access::Viewer::System, ws_id, 20, None)
            .await
            .unwrap();
    })
    .await;
    assert_eq!(receiver.delivered().len(), 0);
    app.start_again().await;
    until(WAIT, "both grants are delivered", || async {
        receiver.delivered().len() >= 2
    })
    .await;
    let delivered = receiver.delivered();
    let mut amounts: Vec<i64> = delivered
        .iter()
        .map(|got| got.body["data"]["amount"].as_i64().unwrap())
        .collect();
    amounts.sort();
    assert_eq!(amounts, [10, 20]);
    assert_eq!(delivered.len(), 2, "{delivered:?}");
    // The retried one kept its webhook-id.
    let first = &receiver.got()[0];
    assert_eq!(first.answered, 503);
    assert!(delivered.iter().any(|got| got.id == first.id));
    let log = deliveries(&settled(&app, &alice, &webhook).await);
    assert_eq!(log.len(), 2);
    assert!(log.iter().all(|d| d["status"] == "DELIVERED"));
}

#[tokio::test]
async fn an_address_refused_when_sending_fails_the_attempt_and_reaches_nothing() {
    let mut app = spawn("100ms", 0).await;
    let (alice, ws) = app.setup("lab", 0).await;
    let receiver = Receiver::start().await;
    let webhook = register(&app, &alice, &ws, &receiver, &["credits.granted"]).await;
    // The endpoint was accepted; the server now runs without the allow-list, as if the name
    // had come to point inside since.
    app.stop_then(|_| async {}).await;
    app.start_again_with(|config| config.server.fetch_allow.clear())
        .await;
    send_test(&app, &alice, &webhook).await;
    let found = eventually(WAIT, "the endpoint is disabled", || async {
        let found = endpoint(&app, &alice, &webhook).await;
        if found["enabled"] == false {
            Ok(found)
        } else {
            Err(found)
        }
    })
    .await;
    let delivery = &deliveries(&found)[0];
    assert_eq!(delivery["status"], "FAILED");
    assert_eq!(delivery["attempt"], 2);
    assert!(delivery["statusCode"].is_null());
    let error = delivery["error"].as_str().unwrap();
    assert!(
        error.contains("resolves to 127.0.0.1") && error.contains("does not send webhooks to"),
        "{error}"
    );
    assert!(receiver.got().is_empty(), "the refused address was reached");
}

#[tokio::test]
async fn only_owners_and_admins_manage_webhooks_and_a_refusal_writes_nothing() {
    let app = spawn("5s", 0).await;
    let (alice, ws) = app.setup("lab", 0).await;
    let bob = app.user("bob@lab.test").await;
    let carol = app.user("carol@lab.test").await;
    let dave = app.user("dave@lab.test").await;
    let eve = app.user("eve@elsewhere.test").await;
    app.add_member(&alice, &ws, &bob, "ADMIN").await;
    app.add_member(&alice, &ws, &carol, "MEMBER").await;
    app.add_member(&alice, &ws, &dave, "VIEWER").await;
    let receiver = Receiver::start().await;
    let input =
        json!({ "input": { "workspaceId": ws, "url": receiver.url, "events": ["job.completed"] } });
    let webhook = register(&app, &bob, &ws, &receiver, &["job.completed"]).await;
    let delivery = send_test(&app, &alice, &webhook).await;
    let rows = || async {
        use sea_orm::{EntityTrait, PaginatorTrait};
        let webhooks = entity::webhook::Entity::find().all(&app.db).await.unwrap();
        let deliveries = entity::webhook_delivery::Entity::find()
            .count(&app.db)
            .await
            .unwrap();
        (webhooks, deliveries)
    };
    let before = rows().await;
    assert_eq!(
        app.error_code(Some(&carol.token), CREATE, input.clone())
            .await,
        "FORBIDDEN"
    );
    assert_eq!(
        app.error_code(Some(&dave.token), CREATE, input.clone())
            .await,
        "FORBIDDEN"
    );
    assert_eq!(
        app.error_code(Some(&eve.token), CREATE, input.clone())
            .await,
        "NOT_FOUND"
    );
    assert_eq!(
        app.error_code(None, CREATE, input.clone()).await,
        "UNAUTHENTICATED"
    );
    let list = "query($ws: ID!) { workspace(id: $ws) { viewerCanManageWebhooks webhooks { nodes { id } } } }";
    assert_eq!(
        app.error_code(Some(&carol.token), list, json!({ "ws": ws }))
            .await,
        "FORBIDDEN"
    );
    let (_, body) = app
        .post(
            Some(&carol.token),
            "query($ws: ID!) { workspace(id: $ws) { viewerCanManageWebhooks } }",
            json!({ "ws": ws }),
        )
        .await;
    assert_eq!(body["data"]["workspace"]["viewerCanManageWebhooks"], false);
    let listed = app.ok(Some(&bob.token), list, json!({ "ws": ws })).await;
    assert_eq!(listed["workspace"]["viewerCanManageWebhooks"], true);
    assert_eq!(
        listed["workspace"]["webhooks"]["nodes"][0]["id"],
        webhook.as_str()
    );
    let changes = [
        "mutation($id: ID!) { updateWebhook(input: {id: $id, url: \"http://127.0.0.1:9/x\", enabled: false}) { webhook { id } } }",
        "mutation($id: ID!) { deleteWebhook(input: {id: $id}) { deletedId } }",
        "mutation($id: ID!) { rotateWebhookSecret(input: {id: $id}) { secret } }",
        "mutation($id: ID!) { sendTestEvent(input: {id: $id}) { delivery { id } } }",
        "query($id: ID!) { node(id: $id) { id } }",
    ];
    for operation in changes {
        for (user, code) in [
            (&carol, "FORBIDDEN"),
            (&dave, "FORBIDDEN"),
            (&eve, "NOT_FOUND"),
        ] {
            assert_eq!(
                app.error_code(Some(&user.token), operation, json!({ "id": webhook }))
                    .await,
                code,
                "{operation} as {}",
                user.email
            );
        }
    }
    let redeliver = "mutation($id: ID!) { redeliverWebhookDelivery(input: {deliveryId: $id}) { delivery { id } } }";
    for (user, code) in [(&carol, "FORBIDDEN"), (&eve, "NOT_FOUND")] {
        assert_eq!(
            app.error_code(
                Some(&user.token),
                redeliver,
                json!({ "id": delivery["id"] })
            )
            .await,
            code
        );
    }
    assert_eq!(rows().await, before, "a refusal wrote something");
    // An admin may, and the owner may remove it.
    let rotated = app
        .ok(
            Some(&bob.token),
            "mutation($id: ID!) { rotateWebhookSecret(input: {id: $id}) { secret } }",
            json!({ "id": webhook }),
        )
        .await;
    let secret = rotated["rotateWebhookSecret"]["secret"].as_str().unwrap();
    assert!(secret.starts_with("whsec_"));
    assert_ne!(Some(secret), before.0[0].secret.0.as_str().into());
    app.ok(
        Some(&alice.token),
        "mutation($id: ID!) { deleteWebhook(input: {id: $id}) { deletedId } }",
        json!({ "id": webhook }),
    )
    .await;
    assert_eq!(rows().await, (vec![], 0));
}

/// Two serving processes on one PostgreSQL database (on SQLite, which serves one process, the
/// one server alone): each event reaches the receiver once.
#[tokio::test]
async fn processes_sharing_a_database_deliver_each_event_once() {
    let app = spawn("1s", 0).await;
    let (alice, ws) = app.setup("lab", 0).await;
    let receiver = Receiver::start().await;
    let webhook = register(&app, &alice, &ws, &receiver, &["credits.granted"]).await;
    let dir = tempfile::tempdir().unwrap();
    // The second process, on PostgreSQL: its address and the process.
    let second = app.database_url.starts_with("postgres").then(|| {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_jobgraph"))
            .args(["serve", "--workers", "0", "--webhook-retry-schedule", "1s"])
            .env("DATABASE_URL", &app.database_url)
            .env("JOBGRAPH_DATA_DIR", dir.path())
            .env("JOBGRAPH_LISTEN", format!("127.0.0.1:{port}"))
            .env("JOBGRAPH_FETCH_ALLOW", "127.0.0.1")
            .env_remove("RUST_LOG")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        (format!("http://127.0.0.1:{port}"), child)
    });
    let client = reqwest::Client::new();
    if let Some((url, _)) = &second {
        until(WAIT, "the second process serves", || async {
            client
                .get(format!("{url}/readyz"))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success())
        })
        .await;
    }
    let mut expected = Vec::new();
    for amount in 1..=25 {
        grant(&app, &ws, amount).await;
        expected.push(amount);
        if amount % 5 == 0 {
            send_test(&app, &alice, &webhook).await;
        }
    }
    until(WAIT, "every event is delivered", || async {
        receiver.delivered().len() >= 30
    })
    .await;
    // Anything sent twice would be on its way by now: the log says every delivery ended.
    until(WAIT, "every delivery is recorded", || async {
        let log = deliveries(&endpoint(&app, &alice, &webhook).await);
        log.len() == 30 && log.iter().all(|d| d["status"] == "DELIVERED")
    })
    .await;
    let delivered = receiver.delivered();
    let mut ids: Vec<&str> = delivered.iter().map(|got| got.id.as_str()).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 30);
    assert_eq!(delivered.len(), 30, "an event was delivered twice");
    // Every attempt either process made is one the receiver counted once.
    let sent_ok = |metrics: String| {
        metrics
            .lines()
            .find_map(|line| {
                line.strip_prefix("jobgraph_webhook_deliveries_total{outcome=\"ok\"} ")
            })
            .map_or(0, |n| n.trim().parse::<u64>().unwrap())
    };
    let mut sent = Vec::new();
    for url in std::iter::once(format!("http://{}", app.addr))
        .chain(second.iter().map(|(url, _)| url.clone()))
    {
        let metrics = client.get(format!("{url}/metrics")).send().await.unwrap();
        sent.push(sent_ok(metrics.text().await.unwrap()));
    }
    assert_eq!(
        sent.iter().sum::<u64>(),
        30,
        "sent by each process: {sent:?}"
    );
    let mut amounts: Vec<i64> = delivered
        .iter()
        .filter(|got| got.body["type"] == "credits.granted")
        .map(|got| got.body["data"]["amount"].as_i64().unwrap())
        .collect();
    amounts.sort();
    assert_eq!(amounts, expected);
}

/// After a rotation the old secret signs beside the new one for a day: a receiver still
/// checking with either accepts every delivery, and the endpoint says until when.
#[tokio::test]
async fn a_rotated_secret_keeps_signing_beside_the_new_one_for_a_day() {
    let app = spawn("1s", 0).await;
    let (alice, ws) = app.setup("lab", 0).await;
    let receiver = Receiver::start().await;
    let webhook = register(&app, &alice, &ws, &receiver, &["credits.granted"]).await;
    let rotated = app
        .ok(
            Some(&alice.token),
            "mutation($id: ID!) { rotateWebhookSecret(input: {id: $id}) { secret webhook { previousSecretExpiresAt } } }",
            json!({ "id": webhook }),
        )
        .await["rotateWebhookSecret"]
        .clone();
    let until_at: chrono::DateTime<chrono::Utc> = rotated["webhook"]["previousSecretExpiresAt"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let ahead = until_at - chrono::Utc::now();
    assert!(
        ahead > chrono::Duration::hours(23) && ahead <= chrono::Duration::hours(24),
        "{rotated}"
    );
    // The receiver still checks with the old secret, then with the new one.
    let new_secret = rotated["secret"].as_str().unwrap().to_owned();
    for round in 0..2 {
        if round == 1 {
            receiver.trust(&new_secret);
        }
        let sent = send_test(&app, &alice, &webhook).await;
        let id = sent["eventId"].as_str().unwrap().to_owned();
        until(WAIT, "the test event is delivered", || async {
            receiver.got().iter().any(|got| got.id == id)
        })
        .await;
        let got = receiver.got().into_iter().find(|got| got.id == id).unwrap();
        assert!(
            got.verified && got.answered == 200,
            "round {round}: {got:?}"
        );
    }
}
