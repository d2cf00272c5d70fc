//! Signing in with the platform's identity provider: JWTs from an OpenID Connect issuer that
//! the test starts, with its own keys and JWKS endpoint.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::routing::get;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use reqwest::StatusCode;
use ring::rand::SystemRandom;
use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair as _};
use sea_orm::EntityTrait as _;
use serde_json::{Value, json};

use crate::files::{FASTA, submit_upload_query, upload};
use crate::support::TestApp;
use crate::support::wait::eventually;
use crate::support::ws::Ws;

const AUDIENCE: &str = "lab-frontend";
const WHO: &str = "query { viewer { user { email displayName isPending } workspaces(first: 5) { nodes { name } } } }";

/// A signing key of the issuer.
struct Key {
    kid: String,
    pkcs8: Vec<u8>,
    jwk: Value,
}

impl Key {
    fn new(kid: &str) -> Key {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng)
            .unwrap();
        let point = pair.public_key().as_ref();
        let jwk = json!({
            "kty": "EC", "crv": "P-256", "use": "sig", "alg": "ES256", "kid": kid,
            "x": URL_SAFE_NO_PAD.encode(&point[1..33]),
            "y": URL_SAFE_NO_PAD.encode(&point[33..65]),
        });
        Key {
            kid: kid.to_owned(),
            pkcs8: pkcs8.as_ref().to_vec(),
            jwk,
        }
    }
}

/// An OpenID Connect issuer on a real port: discovery, and the keys it publishes now.
struct Issuer {
    url: String,
    published: Arc<Mutex<Vec<Value>>>,
}

impl Issuer {
    async fn start(keys: &[&Key]) -> Issuer {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let published = Arc::new(Mutex::new(keys.iter().map(|k| k.jwk.clone()).collect()));
        let discovery = json!({"issuer": url, "jwks_uri": format!("{url}/jwks")});
        let app = Router::new()
            .route(
                "/.well-known/openid-configuration",
                get(move || async move { axum::Json(discovery) }),
            )
            .route(
                "/jwks",
                get(|State(keys): State<Arc<Mutex<Vec<Value>>>>| async move {
                    axum::Json(json!({"keys": *keys.lock().unwrap()}))
                }),
            )
            .with_state(published.clone());
        tokio::spawn(async move { axum::serve(listener, app).await });
        Issuer { url, published }
    }

    /// Publishes these keys instead (a rotation).
    fn publish(&self, keys: &[&Key]) {
        *self.published.lock().unwrap() = keys.iter().map(|k| k.jwk.clone()).collect();
    }

    /// A token signed with `key` whose claims are the usual ones overridden by `claims`.
    fn token(&self, key: &Key, claims: Value) -> String {
        let now = chrono::Utc::now().timestamp();
        let mut all = json!({
            "iss": self.url, "aud": AUDIENCE, "sub": "subject-1", "iat": now, "exp": now + 600,
        });
        for (name, value) in claims.as_object().unwrap() {
            all[name] = value.clone();
        }
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some(key.kid.clone());
        jsonwebtoken::encode(&header, &all, &EncodingKey::from_ec_der(&key.pkcs8)).unwrap()
    }
}

async fn spawn(issuer: &Issuer, tweak: impl FnOnce(&mut jobgraph::Config) + Send) -> TestApp {
    let url = issuer.url.clone();
    TestApp::spawn_with(move |config| {
        config.server.oidc_issuer = Some(url);
        config.server.oidc_audience = Some(AUDIENCE.to_owned());
        tweak(config);
    })
    .await
}

#[tokio::test]
async fn a_token_of_the_issuer_signs_its_user_in_and_creates_them_on_first_sight() {
    let key = Key::new("key-1");
    let issuer = Issuer::start(&[&key]).await;
    let app = spawn(&issuer, |_| {}).await;
    let token = issuer.token(
        &key,
        json!({"email": "Dana@Lab.test", "name": "Dana Scully"}),
    );
    let data = app.ok(Some(&token), WHO, json!({})).await;
    assert_eq!(data["viewer"]["user"]["email"], "dana@lab.test", "{data}");
    assert_eq!(data["viewer"]["user"]["displayName"], "Dana Scully");
    // The same user next time, and a user like any other: she makes a workspace and owns it.
    let created = app
        .ok(
            Some(&token),
            "mutation { createWorkspace(input: {name: \"dana's\"}) { workspace { viewerRole } } }",
            json!({}),
        )
        .await;
    assert_eq!(
        created["createWorkspace"]["workspace"]["viewerRole"],
        "OWNER"
    );
    let again = app.ok(Some(&token), WHO, json!({})).await;
    assert_eq!(again["viewer"]["workspaces"]["nodes"][0]["name"], "dana's");
    let users = entity::user::Entity::find_by_email("dana@lab.test")
        .all(&app.db)
        .await
        .unwrap();
    assert_eq!(users.len(), 1);
    // API tokens keep working beside it.
    let admin = app.ok(Some(&app.admin_token), WHO, json!({})).await;
    assert_eq!(admin["viewer"]["user"]["email"], "admin@localhost");

    // The same on a websocket's connection_init...
    let mut ws = Ws::connect(app.addr, Some(&token)).await;
    ws.subscribe("1", WHO, json!({})).await;
    assert_eq!(
        ws.next_data("1").await["viewer"]["user"]["email"],
        "dana@lab.test"
    );
    // ...and on uploads and file downloads.
    let ws_id = app
        .ok(
            Some(&token),
            "{ viewer { workspaces(first: 1) { nodes { id } } } }",
            json!({}),
        )
        .await["viewer"]["workspaces"]["nodes"][0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    app.grant(&ws_id, 100).await;
    let (status, body) = upload(
        &app,
        Some(&token),
        &submit_upload_query("sequence-stats", "sequences"),
        json!({ "ws": ws_id }),
        "reads.fa",
        FASTA.as_bytes().to_vec(),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let url = body["data"]["submitJob"]["job"]["files"][0]["downloadUrl"]
        .as_str()
        .unwrap_or_else(|| panic!("no download URL in {body}"))
        .to_owned();
    let download = |token: String| {
        let request = app.client().get(&url).bearer_auth(token);
        async move { request.send().await.unwrap() }
    };
    let response = download(token.clone()).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.text().await.unwrap(), FASTA);
    let forged = format!("{}x", &token[..token.len() - 1]);
    assert_eq!(download(forged).await.status(), StatusCode::UNAUTHORIZED);
    let someone_else = issuer.token(&key, json!({"email": "eve@lab.test"}));
    assert_eq!(download(someone_else).await.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn expired_forged_foreign_and_unsigned_tokens_are_401s() {
    let key = Key::new("key-1");
    let stranger = Key::new("key-1");
    let issuer = Issuer::start(&[&key]).await;
    let app = spawn(&issuer, |_| {}).await;
    let email = json!({"email": "dana@lab.test"});
    let valid = issuer.token(&key, email.clone());
    assert_eq!(
        app.post(Some(&valid), WHO, json!({})).await.0,
        StatusCode::OK
    );

    let now = chrono::Utc::now().timestamp();
    let unsigned = {
        let (_, rest) = valid.split_once('.').unwrap();
        let payload = rest.split_once('.').unwrap().0;
        format!(
            "{}.{payload}.",
            URL_SAFE_NO_PAD.encode(r#"{"alg":"none","typ":"JWT"}"#)
        )
    };
    let hs256 = jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &json!({"iss": issuer.url, "aud": AUDIENCE, "sub": "s", "exp": now + 600, "email": "dana@lab.test"}),
        &EncodingKey::from_secret(key.jwk.to_string().as_bytes()),
    )
    .unwrap();
    for (what, token) in [
        (
            "expired",
            issuer.token(&key, json!({"email": "dana@lab.test", "exp": now - 120})),
        ),
        (
            "not yet valid",
            issuer.token(&key, json!({"email": "dana@lab.test", "nbf": now + 600})),
        ),
        (
            "signed by another key with the same kid",
            issuer.token(&stranger, email.clone()),
        ),
        (
            "for another audience",
            issuer.token(&key, json!({"email": "dana@lab.test", "aud": "other"})),
        ),
        (
            "from another issuer",
            issuer.token(
                &key,
                json!({"email": "dana@lab.test", "iss": "https://evil.test"}),
            ),
        ),
        ("alg none", unsigned),
        ("HS256", hs256),
        ("without an e-mail", issuer.token(&key, json!({}))),
        (
            "with an unverified e-mail",
            issuer.token(
                &key,
                json!({"email": "dana@lab.test", "email_verified": false}),
            ),
        ),
    ] {
        let (status, body) = app.post(Some(&token), WHO, json!({})).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{what}: {body}");
        assert_eq!(
            body["errors"][0]["extensions"]["code"], "UNAUTHENTICATED",
            "{what}: {body}"
        );
    }
    // Nobody was created by the refused tokens; the valid one made one user.
    let users = entity::user::Entity::find().all(&app.db).await.unwrap();
    assert_eq!(users.len(), 2, "{users:?}");
}

#[tokio::test]
async fn the_issuer_may_rotate_its_keys() {
    let old = Key::new("2026-01");
    let new = Key::new("2026-02");
    let issuer = Issuer::start(&[&old]).await;
    let app = spawn(&issuer, |_| {}).await;
    let email = json!({"email": "dana@lab.test"});
    let before = issuer.token(&old, email.clone());
    assert_eq!(
        app.post(Some(&before), WHO, json!({})).await.0,
        StatusCode::OK
    );
    issuer.publish(&[&new]);
    // A token of the new key is accepted as soon as the keys may be fetched again...
    let after = issuer.token(&new, email.clone());
    eventually(Duration::from_secs(10), "the new key accepted", || async {
        match app.post(Some(&after), WHO, json!({})).await {
            (StatusCode::OK, body) => Ok(body),
            (status, body) => Err(format!("{status}: {body}")),
        }
    })
    .await;
    // ...and the retired key's tokens no longer are.
    let (status, body) = app.post(Some(&before), WHO, json!({})).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
}

#[tokio::test]
async fn an_invitation_resolves_when_its_user_first_signs_in() {
    let key = Key::new("key-1");
    let issuer = Issuer::start(&[&key]).await;
    let app = spawn(&issuer, |_| {}).await;
    let alice = app.user("alice@lab.test").await;
    let ws = app.workspace(&alice, "lab").await;
    app.ok(
        Some(&alice.token),
        "mutation($ws: ID!) { addMember(input: {workspaceId: $ws, email: \"carol@lab.test\", role: MEMBER}) { membership { id } } }",
        json!({ "ws": ws }),
    )
    .await;
    let token = issuer.token(&key, json!({"email": "carol@lab.test"}));
    let data = app.ok(Some(&token), WHO, json!({})).await;
    assert_eq!(data["viewer"]["user"]["isPending"], false, "{data}");
    assert_eq!(
        data["viewer"]["workspaces"]["nodes"][0]["name"], "lab",
        "{data}"
    );
}

#[tokio::test]
async fn without_creating_users_only_known_ones_sign_in() {
    let key = Key::new("key-1");
    let issuer = Issuer::start(&[&key]).await;
    let app = spawn(&issuer, |config| config.server.oidc_create_users = false).await;
    let stranger = issuer.token(&key, json!({"email": "eve@lab.test"}));
    let (status, body) = app.post(Some(&stranger), WHO, json!({})).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert_eq!(body["errors"][0]["extensions"]["code"], "FORBIDDEN");
    app.user("alice@lab.test").await;
    let known = issuer.token(&key, json!({"email": "alice@lab.test"}));
    let data = app.ok(Some(&known), WHO, json!({})).await;
    assert_eq!(data["viewer"]["user"]["email"], "alice@lab.test");
}

#[tokio::test]
async fn users_named_by_subject_keep_their_account_when_their_email_changes() {
    let key = Key::new("key-1");
    let issuer = Issuer::start(&[&key]).await;
    let app = spawn(&issuer, |config| {
        config.server.oidc_user_claim = jobgraph::users::oidc::UserClaim::Sub;
    })
    .await;
    let first = issuer.token(&key, json!({"sub": "u-42", "email": "dana@lab.test"}));
    let data = app.ok(Some(&first), WHO, json!({})).await;
    assert_eq!(data["viewer"]["user"]["email"], "dana@lab.test");
    let renamed = issuer.token(&key, json!({"sub": "u-42", "email": "dana@elsewhere.test"}));
    let data = app.ok(Some(&renamed), WHO, json!({})).await;
    assert_eq!(data["viewer"]["user"]["email"], "dana@lab.test", "{data}");
    // Another subject with the first one's e-mail does not take her account.
    let other = issuer.token(&key, json!({"sub": "u-43", "email": "dana@lab.test"}));
    let (status, body) = app.post(Some(&other), WHO, json!({})).await;
    assert_ne!(status, StatusCode::OK, "{body}");
}

#[tokio::test]
async fn a_websocket_signed_in_by_a_token_closes_when_the_token_expires() {
    let key = Key::new("key-1");
    let issuer = Issuer::start(&[&key]).await;
    let app = spawn(&issuer, |_| {}).await;
    let exp = chrono::Utc::now().timestamp() + 2;
    let token = issuer.token(&key, json!({"email": "dana@lab.test", "exp": exp}));
    let mut ws = Ws::connect(app.addr, Some(&token)).await;
    assert_eq!(ws.close_code().await, Some(4401));
}

#[tokio::test]
async fn an_unreachable_issuer_is_a_503_and_api_tokens_still_work() {
    let key = Key::new("key-1");
    // An issuer whose port nothing listens on any more.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let gone = Issuer {
        url: format!("http://{}", listener.local_addr().unwrap()),
        published: Default::default(),
    };
    drop(listener);
    let app = spawn(&gone, |_| {}).await;
    let token = gone.token(&key, json!({"email": "dana@lab.test"}));
    let (status, body) = app.post(Some(&token), WHO, json!({})).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(
        body["errors"][0]["extensions"]["code"],
        "SERVICE_UNAVAILABLE"
    );
    assert_eq!(
        body["errors"][0]["message"],
        "the identity provider is unavailable: try again shortly"
    );
    // The issuer's address stays in the server's log, not in the answer.
    assert!(!body.to_string().contains(&gone.url), "{body}");
    let alice = app.user("alice@lab.test").await;
    let data = app.ok(Some(&alice.token), WHO, json!({})).await;
    assert_eq!(data["viewer"]["user"]["email"], "alice@lab.test");
}
