//! API tokens: creation, use, listing, revocation and expiry.

use chrono::{Duration, Utc};
use entity::api_token;
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, sea_query::Expr};
use serde_json::{Value, json};

use crate::support::{TestApp, until};

const CREATE: &str = "mutation($name: String!, $expiresAt: DateTime, $userId: ID) {
  createApiToken(input: {name: $name, expiresAt: $expiresAt, userId: $userId}) {
    secret token { id name displayPrefix isActive revokedAt } } }";
const REVOKE: &str =
    "mutation($id: ID!) { revokeApiToken(input: {tokenId: $id}) { token { isActive revokedAt } } }";
const ME: &str = "{ viewer { isAuthenticated user { email } } }";

/// Waits until `secret` is refused (401), failing with `why` if it still works after `within`.
async fn refused_within(app: &TestApp, secret: &str, within: std::time::Duration, why: &str) {
    until(within, why, || async {
        let (status, _) = app.post(Some(secret), ME, json!({})).await;
        status == reqwest::StatusCode::UNAUTHORIZED
    })
    .await
}

/// Revokes the token `secret` through another server on `app`'s database.
async fn revoke_from_another_server(app: &TestApp, secret: &str) {
    let mut config = jobgraph::Config::defaults();
    config.database.database_url = Some(app.database_url.clone());
    let other = jobgraph::App::build(config).await.unwrap();
    let viewer = jobgraph::users::tokens::authenticate(&other.state.db, secret)
        .await
        .unwrap();
    jobgraph::users::tokens::revoke(
        &other.state.db,
        &jobgraph::access::Viewer::System,
        viewer.token_id().unwrap(),
    )
    .await
    .unwrap();
}

/// The secret a `createApiToken` answer carries.
fn secret_of(data: &Value) -> String {
    data["createApiToken"]["secret"]
        .as_str()
        .unwrap()
        .to_owned()
}
#[tokio::test]
async fn a_created_token_authenticates_until_it_is_revoked() {
    let app = TestApp::spawn().await;
    let alice = app.user("alice@lab.test").await;
    let data = app
        .ok(Some(&alice.token), CREATE, json!({"name": "notebook"}))
        .await;
    let created = &data["createApiToken"];
    let secret = created["secret"].as_str().unwrap();
    assert!(secret.starts_with("jg_") && secret.len() > 30, "{secret}");
    assert!(secret.starts_with(created["token"]["displayPrefix"].as_str().unwrap()));
    assert_eq!(created["token"]["isActive"], true);

    let data = app.ok(Some(secret), ME, json!({})).await;
    assert_eq!(data["viewer"]["user"]["email"], "alice@lab.test");

    let data = app
        .ok(
            Some(&alice.token),
            REVOKE,
            json!({"id": created["token"]["id"]}),
        )
        .await;
    assert_eq!(data["revokeApiToken"]["token"]["isActive"], false);
    let (status, body) = app.post(Some(secret), ME, json!({})).await;
    assert_eq!(status, reqwest::StatusCode::UNAUTHORIZED);
    assert_eq!(body["errors"][0]["extensions"]["code"], "UNAUTHENTICATED");
    // The token used to revoke still works.
    app.ok(Some(&alice.token), ME, json!({})).await;
}

#[tokio::test]
async fn tokens_are_stored_hashed_and_listed_without_secrets() {
    let app = TestApp::spawn().await;
    let alice = app.user("alice@lab.test").await;
    let data = app
        .ok(Some(&alice.token), CREATE, json!({"name": "ci"}))
        .await;
    let secret = secret_of(&data);
    let stored = api_token::Entity::find()
        .filter(api_token::Column::Name.eq("ci"))
        .one(&app.db)
        .await
        .unwrap()
        .unwrap();
    assert_ne!(stored.secret_hash, secret);
    assert!(!stored.secret_hash.contains(&secret[3..]));

    let data = app
        .ok(
            Some(&alice.token),
            "{ viewer { apiTokens(first: 10) { edges { node { name lastUsedAt } } } } }",
            json!({}),
        )
        .await;
    let listed = data.to_string();
    assert!(!listed.contains(&secret));
    let names: Vec<_> = data["viewer"]["apiTokens"]["edges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["node"]["name"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(names, vec!["ci", "test"]);
    // The token that made this request has been marked as used.
    assert!(!data["viewer"]["apiTokens"]["edges"][1]["node"]["lastUsedAt"].is_null());
}

#[tokio::test]
async fn an_expired_token_is_refused() {
    // The expiry is moved behind the server's back, so check every request.
    let app = TestApp::spawn_with(|c| c.server.auth_cache_seconds = 0).await;
    let alice = app.user("alice@lab.test").await;
    let tomorrow = (Utc::now() + Duration::days(1)).to_rfc3339();
    let data = app
        .ok(
            Some(&alice.token),
            CREATE,
            json!({"name": "short", "expiresAt": tomorrow}),
        )
        .await;
    let secret = secret_of(&data);
    app.ok(Some(&secret), ME, json!({})).await;
    api_token::Entity::update_many()
        .col_expr(
            api_token::Column::ExpiresAt,
            Expr::value(Utc::now() - Duration::seconds(1)),
        )
        .filter(api_token::Column::Name.eq("short"))
        .exec(&app.db)
        .await
        .unwrap();
    let (status, _) = app.post(Some(&secret), ME, json!({})).await;
    assert_eq!(status, reqwest::StatusCode::UNAUTHORIZED);

    let yesterday = (Utc::now() - Duration::days(1)).to_rfc3339();
    let (_, body) = app
        .post(
            Some(&alice.token),
            CREATE,
            json!({"name": "past", "expiresAt": yesterday}),
        )
        .await;
    assert_eq!(body["errors"][0]["extensions"]["field"], "expiresAt");
}

#[tokio::test]
async fn only_the_owner_or_a_platform_admin_can_see_and_revoke_a_token() {
    let app = TestApp::spawn().await;
    let alice = app.user("alice@lab.test").await;
    let eve = app.user("eve@lab.test").await;
    let data = app
        .ok(Some(&alice.token), CREATE, json!({"name": "mine"}))
        .await;
    let id = data["createApiToken"]["token"]["id"].clone();
    assert_eq!(
        app.error_code(Some(&eve.token), REVOKE, json!({"id": id}))
            .await,
        "NOT_FOUND"
    );
    let node = "query($id: ID!) { node(id: $id) { ... on ApiToken { name } } }";
    assert_eq!(
        app.error_code(Some(&eve.token), node, json!({"id": id}))
            .await,
        "NOT_FOUND"
    );
    let data = app
        .ok(Some(&app.admin_token), REVOKE, json!({"id": id}))
        .await;
    assert_eq!(data["revokeApiToken"]["token"]["isActive"], false);
}

#[tokio::test]
async fn only_platform_admins_create_tokens_and_users_for_others() {
    let app = TestApp::spawn().await;
    let alice = app.user("alice@lab.test").await;
    let bob = app.user("bob@lab.test").await;
    let code = app
        .error_code(
            Some(&alice.token),
            CREATE,
            json!({"name": "x", "userId": bob.id}),
        )
        .await;
    assert_eq!(code, "FORBIDDEN");
    let data = app
        .ok(
            Some(&app.admin_token),
            CREATE,
            json!({"name": "for bob", "userId": bob.id}),
        )
        .await;
    let secret = secret_of(&data);
    let data = app.ok(Some(&secret), ME, json!({})).await;
    assert_eq!(data["viewer"]["user"]["email"], "bob@lab.test");

    let create_user = "mutation { createUser(input: {email: \"carol@lab.test\"}) { user { email displayName isPending } } }";
    assert_eq!(
        app.error_code(Some(&alice.token), create_user, json!({}))
            .await,
        "FORBIDDEN"
    );
    let data = app.ok(Some(&app.admin_token), create_user, json!({})).await;
    assert_eq!(
        data["createUser"]["user"],
        json!({"email": "carol@lab.test", "displayName": "carol", "isPending": false})
    );
    assert_eq!(
        app.error_code(Some(&app.admin_token), create_user, json!({}))
            .await,
        "CONFLICT"
    );
    let bad = "mutation { createUser(input: {email: \"not an email\"}) { user { email } } }";
    let (_, body) = app.post(Some(&app.admin_token), bad, json!({})).await;
    assert_eq!(body["errors"][0]["extensions"]["field"], "email");
}

#[tokio::test]
async fn anonymous_callers_are_told_to_authenticate_and_bad_headers_are_refused() {
    let app = TestApp::spawn().await;
    let data = app.ok(None, ME, json!({})).await;
    assert_eq!(
        data["viewer"],
        json!({"isAuthenticated": false, "user": null})
    );
    assert_eq!(
        app.error_code(None, CREATE, json!({"name": "x"})).await,
        "UNAUTHENTICATED"
    );
    for header in [
        "Basic abc",
        "Bearer",
        "Bearer jg_doesnotexist",
        "Bearer nope",
    ] {
        let response = app
            .client()
            .post(app.url("/graphql"))
            .header("authorization", header)
            .json(&json!({"query": ME}))
            .send()
            .await
            .unwrap();
        assert_eq!(
            response.status(),
            reqwest::StatusCode::UNAUTHORIZED,
            "{header}"
        );
        assert!(response.headers().contains_key("www-authenticate"));
        let body: serde_json::Value = response.json().await.unwrap();
        assert_eq!(body["errors"][0]["extensions"]["code"], "UNAUTHENTICATED");
    }
}

#[tokio::test]
async fn a_trusted_token_still_expires_on_time_and_another_process_revoking_it_is_seen_soon() {
    let app = TestApp::spawn_with(|c| c.server.auth_cache_seconds = 1).await;
    let alice = app.user("alice@lab.test").await;
    let soon = Utc::now() + Duration::milliseconds(1500);
    let data = app
        .ok(
            Some(&alice.token),
            CREATE,
            json!({"name": "brief", "expiresAt": soon.to_rfc3339()}),
        )
        .await;
    let brief = secret_of(&data);
    let data = app
        .ok(Some(&alice.token), CREATE, json!({"name": "other"}))
        .await;
    let other = secret_of(&data);
    app.ok(Some(&brief), ME, json!({})).await;
    app.ok(Some(&other), ME, json!({})).await;

    // Another process revokes `other`: this one stops trusting it within its cache time.
    api_token::Entity::update_many()
        .col_expr(api_token::Column::RevokedAt, Expr::value(Utc::now()))
        .filter(api_token::Column::Name.eq("other"))
        .exec(&app.db)
        .await
        .unwrap();
    refused_within(
        &app,
        &other,
        std::time::Duration::from_millis(2500),
        "a token revoked elsewhere still works after the cache time",
    )
    .await;

    // `brief` is trusted from the cache right up to its expiry, and not a moment after.
    // Time itself is what this waits for.
    let wait = (soon - Utc::now()).to_std().unwrap_or_default();
    tokio::time::sleep(wait + std::time::Duration::from_millis(50)).await;
    let (status, _) = app.post(Some(&brief), ME, json!({})).await;
    assert_eq!(status, reqwest::StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn a_token_revoked_by_another_server_is_refused_here_at_once_and_its_websocket_closed() {
    // Trust tokens for a minute: only the live log's revocation can end it sooner.
    let app = TestApp::spawn_with(|c| c.server.auth_cache_seconds = 60).await;
    let alice = app.user("alice@lab.test").await;
    let data = app
        .ok(Some(&alice.token), CREATE, json!({"name": "notebook"}))
        .await;
    let secret = secret_of(&data);
    app.ok(Some(&secret), ME, json!({})).await;
    let mut socket = crate::support::ws::Ws::connect(app.addr, Some(&secret)).await;
    let mut bystander = crate::support::ws::Ws::connect(app.addr, Some(&alice.token)).await;
    let workspace = app.workspace(&alice, "lab").await;
    let balance = "subscription($ws: ID!) { creditBalance(workspaceId: $ws) }";
    socket
        .subscribe("1", balance, json!({"ws": workspace}))
        .await;
    socket.next_data("1").await;

    // Another server on the same database revokes it.
    revoke_from_another_server(&app, &secret).await;
    // Long before the minute of trust ends: only the live log can have told this server.
    let told = std::time::Duration::from_secs(20);
    refused_within(
        &app,
        &secret,
        told,
        "a token revoked by another server still works here",
    )
    .await;
    let closed = tokio::time::timeout(told, socket.close_code())
        .await
        .expect("the revoked token's websocket is closed");
    assert_eq!(closed, Some(4401));
    // Other tokens' sockets stay open.
    bystander
        .silent_for(std::time::Duration::from_millis(300))
        .await;
}

#[tokio::test]
async fn a_token_revoked_by_another_server_is_refused_here_at_once_with_nobody_subscribed() {
    // Trust tokens for a minute: only the live log's revocation can end it sooner. Nobody
    // subscribes here, so the bus reads only the entries its caches must hear of.
    let app = TestApp::spawn_with(|c| c.server.auth_cache_seconds = 60).await;
    let alice = app.user("alice@lab.test").await;
    let data = app
        .ok(Some(&alice.token), CREATE, json!({"name": "notebook"}))
        .await;
    let secret = secret_of(&data);
    app.ok(Some(&secret), ME, json!({})).await;
    // Entries the bus moves past unread, before and after the revocation.
    let workspace = app.workspace(&alice, "lab").await;
    app.grant(&workspace, 10).await;

    revoke_from_another_server(&app, &secret).await;
    app.grant(&workspace, 10).await;
    refused_within(
        &app,
        &secret,
        std::time::Duration::from_secs(20),
        "a token revoked by another server still works here",
    )
    .await;
    assert_eq!(app.state.bus.subscribers(), 0);
    // The token the bus moved past stays trusted.
    app.ok(Some(&alice.token), ME, json!({})).await;
}
