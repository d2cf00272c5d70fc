//! Hostile webhook registrations: URLs that are no http(s) URLs or that point into the
//! server's own network, huge texts and unknown event types are BAD_USER_INPUT, and nothing is
//! registered.

use sea_orm::{EntityTrait, PaginatorTrait};
use serde_json::json;

use super::{Expect, Hostile, Send};

const CREATE: &str =
    "mutation($input: CreateWebhookInput!) { createWebhook(input: $input) { secret } }";

fn create(ws: &str, url: &str, events: serde_json::Value, description: &str) -> Send {
    Send::Post(
        CREATE.into(),
        json!({ "input": {
            "workspaceId": ws, "url": url, "events": events, "description": description,
        } }),
    )
}

#[tokio::test]
async fn hostile_webhook_registrations_are_bad_user_input_and_register_nothing() {
    let hostile = Hostile::spawn().await;
    let ws = hostile.ws.as_str();
    let completed = json!(["job.completed"]);
    let url_cases = [
        ("ftp", "ftp://example.com/hook"),
        ("file", "file:///etc/passwd"),
        ("javascript", "javascript:alert(1)"),
        ("data", "data:text/plain,hi"),
        ("no URL", "not a url"),
        ("empty", ""),
        ("no host", "http://"),
        ("loopback", "http://127.0.0.1:8000/hook"),
        ("loopback name", "http://localhost/hook"),
        ("loopback v6", "http://[::1]/hook"),
        ("mapped loopback", "http://[::ffff:127.0.0.1]/hook"),
        ("cloud metadata", "http://169.254.169.254/latest/meta-data"),
        ("private", "http://10.0.0.1/hook"),
        ("private 192", "https://192.168.1.1/hook"),
        ("unspecified", "http://0.0.0.0/"),
        ("decimal loopback", "http://2130706433/"),
        ("credentials", "https://user:pass@127.0.0.1/hook"),
        ("control character", "http://example.com/\u{7}"),
    ];
    let huge_url = format!("https://example.com/{}", "a".repeat(5000));
    let mut cases: Vec<(String, Send)> = url_cases
        .iter()
        .map(|(name, url)| {
            (
                format!("url: {name}"),
                create(ws, url, completed.clone(), ""),
            )
        })
        .collect();
    cases.push((
        "huge url".into(),
        create(ws, &huge_url, completed.clone(), ""),
    ));
    hostile.check(Expect::BadInput("url"), cases).await;

    // A receiver the allow-list would let through, given bad events or texts.
    let ok_url = "http://127.0.0.1:9/hook";
    let event_cases = vec![
        (
            "unknown type".to_owned(),
            create(ws, ok_url, json!(["job.exploded"]), ""),
        ),
        ("no types".to_owned(), create(ws, ok_url, json!([]), "")),
        (
            "huge type".to_owned(),
            create(ws, ok_url, json!(["x".repeat(100_000)]), ""),
        ),
        (
            "test type".to_owned(),
            create(ws, ok_url, json!(["webhook.test"]), ""),
        ),
        ("wildcard".to_owned(), create(ws, ok_url, json!(["*"]), "")),
    ];
    hostile.check(Expect::BadInput(""), event_cases).await;
    let text_cases = vec![
        (
            "huge description".to_owned(),
            create(ws, ok_url, completed.clone(), &"d".repeat(100_000)),
        ),
        (
            "NUL in the url".to_owned(),
            create(ws, "http://example.com/\u{0}", completed.clone(), ""),
        ),
        (
            "NUL in an event type".to_owned(),
            create(ws, ok_url, json!(["job.completed\u{0}"]), ""),
        ),
        (
            "huge tool filter".to_owned(),
            Send::Post(
                CREATE.into(),
                json!({ "input": { "workspaceId": ws, "url": ok_url, "events": ["job.completed"],
                    "filter": { "tools": vec!["t"; 1000] } } }),
            ),
        ),
        (
            "wrong kind of id".to_owned(),
            Send::Post(
                "mutation($id: ID!) { sendTestEvent(input: {id: $id}) { delivery { id } } }"
                    .into(),
                json!({ "id": ws }),
            ),
        ),
        (
            "a job id as a delivery".to_owned(),
            Send::Post(
                "mutation($id: ID!) { redeliverWebhookDelivery(input: {deliveryId: $id}) { delivery { id } } }"
                    .into(),
                json!({ "id": hostile.job }),
            ),
        ),
    ];
    hostile.check(Expect::BadInput(""), text_cases).await;
    assert_eq!(
        entity::webhook::Entity::find()
            .count(&hostile.app.db)
            .await
            .unwrap(),
        0,
        "a hostile registration was stored"
    );
}

#[tokio::test]
async fn hostile_webhook_changes_are_bad_user_input_and_change_nothing() {
    let hostile = Hostile::spawn().await;
    // An endpoint on this machine, registered with the allow-list this server does not have.
    let owner = jobgraph::ids::decode::<entity::ids::UserId>("id", &hostile.owner.id).unwrap();
    let owner = entity::user::Entity::find_by_id(owner)
        .one(&hostile.app.db)
        .await
        .unwrap()
        .unwrap();
    let viewer = jobgraph::access::Viewer::User {
        user: owner,
        via: jobgraph::access::Credential::Session {
            expires_at: chrono::Utc::now() + chrono::Duration::hours(1),
        },
    };
    let ws = jobgraph::ids::decode::<entity::ids::WorkspaceId>("ws", &hostile.ws).unwrap();
    let allow = [jobgraph::files::fetch::Cidr::parse("127.0.0.1").unwrap()];
    let (created, _) = jobgraph::webhooks::create(
        &hostile.app.db,
        &viewer,
        &allow,
        ws,
        jobgraph::webhooks::NewWebhook {
            url: "http://127.0.0.1:9/hook".into(),
            events: vec!["job.completed".into()],
            filter: Default::default(),
            description: None,
        },
    )
    .await
    .unwrap();
    let id = jobgraph::ids::encode(created.id).to_string();
    let update = |input: serde_json::Value| {
        let mut input = input;
        input["id"] = json!(id);
        Send::Post(
            "mutation($input: UpdateWebhookInput!) { updateWebhook(input: $input) { webhook { id } } }"
                .into(),
            json!({ "input": input }),
        )
    };
    hostile
        .check(
            Expect::BadInput("url"),
            vec![
                (
                    "same url, no allow-list".into(),
                    update(json!({ "url": "http://127.0.0.1:9/hook" })),
                ),
                (
                    "metadata".into(),
                    update(json!({ "url": "http://169.254.169.254/" })),
                ),
                (
                    "gopher".into(),
                    update(json!({ "url": "gopher://example.com/" })),
                ),
            ],
        )
        .await;
    hostile
        .check(
            Expect::BadInput(""),
            vec![
                (
                    "unknown type".into(),
                    update(json!({ "events": ["job.nope"] })),
                ),
                ("no types".into(), update(json!({ "events": [] }))),
                (
                    "huge description".into(),
                    update(json!({ "description": "x".repeat(10_000) })),
                ),
                (
                    "NUL description".into(),
                    update(json!({ "description": "a\u{0}b" })),
                ),
            ],
        )
        .await;
    let stored = entity::webhook::Entity::find_by_id(created.id)
        .one(&hostile.app.db)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored, created, "a hostile change was stored");
}
