//! The test harness: a real server on a free port over its own fresh database.
//!
//! Every test runs on SQLite (a temporary file). With `TEST_DATABASE_URL` set, for example
//! `postgres://postgres@127.0.0.1:5432/test`, each test gets a freshly created PostgreSQL
//! database on that server instead. Stored files go to the test's temporary folder, or, with
//! `TEST_S3_ENDPOINT` set (an S3-compatible server such as `moto_server`), to a freshly created
//! bucket there.

pub mod wait;
pub mod ws;

pub use wait::{WAIT, eventually, telling_when_polled, until};

use std::net::SocketAddr;

use jobgraph::access::Viewer;
use jobgraph::config::Config;
use jobgraph::ids::{self};
use jobgraph::{App, users};
use reqwest::StatusCode;
use sea_orm::{ConnectionTrait, Database, DatabaseConnection};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub struct TestApp {
    pub addr: SocketAddr,
    pub db: DatabaseConnection,
    pub database_url: String,
    /// The platform administrator's token, made by the first-start bootstrap.
    pub admin_token: String,
    /// The server's shared state.
    pub state: jobgraph::AppState,
    /// The statements the server has run.
    pub queries: std::sync::Arc<jobgraph::db::QueryStats>,
    client: reqwest::Client,
    shutdown: CancellationToken,
    /// The configuration it was built with, for `restart`.
    config: Config,
    served: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
    _dir: tempfile::TempDir,
}

/// A user made for a test, with a token.
#[derive(Debug, Clone)]
pub struct TestUser {
    pub id: String,
    pub email: String,
    pub token: String,
}

/// The database URL for a new test: a fresh PostgreSQL database or a SQLite file in `dir`.
pub async fn fresh_database_url(dir: &std::path::Path) -> String {
    match std::env::var("TEST_DATABASE_URL") {
        Ok(base) if !base.trim().is_empty() => {
            let name = format!("jobgraph_test_{}", uuid::Uuid::new_v4().simple());
            let admin = Database::connect(base.as_str())
                .await
                .expect("TEST_DATABASE_URL must point at a reachable PostgreSQL server");
            admin
                .execute_unprepared(&format!("CREATE DATABASE {name}"))
                .await
                .expect("creating the test database");
            admin.close().await.ok();
            let (server, _) = base.rsplit_once('/').expect("a URL ending in /database");
            format!("{server}/{name}")
        }
        _ => format!("sqlite://{}?mode=rwc", dir.join("test.db").display()),
    }
}

/// The plan the database makes for `statement`, one step per line: PostgreSQL's `EXPLAIN`, or
/// SQLite's `EXPLAIN QUERY PLAN`.
pub async fn plan(db: &impl ConnectionTrait, statement: sea_orm::Statement) -> String {
    let backend = db.get_database_backend();
    let (explain, column) = match backend {
        sea_orm::DatabaseBackend::Postgres => ("EXPLAIN", "QUERY PLAN"),
        _ => ("EXPLAIN QUERY PLAN", "detail"),
    };
    let steps: Vec<String> = db
        .query_all_raw(sea_orm::Statement::from_sql_and_values(
            backend,
            format!("{explain} {}", statement.sql),
            statement.values.map(|values| values.0).unwrap_or_default(),
        ))
        .await
        .unwrap()
        .iter()
        .map(|row| row.try_get::<String>("", column).unwrap())
        .collect();
    steps.join("\n")
}

/// Points a test's storage at a fresh bucket of the S3 server of `TEST_S3_ENDPOINT`, if set.
pub async fn fresh_storage(config: &mut Config) {
    let Ok(endpoint) = std::env::var("TEST_S3_ENDPOINT") else {
        return;
    };
    if endpoint.trim().is_empty() {
        return;
    }
    let endpoint = endpoint.trim_end_matches('/').to_owned();
    let bucket = format!("jobgraph-test-{}", uuid::Uuid::new_v4().simple());
    // An S3 emulator such as moto creates a bucket on an unsigned PUT.
    let status = reqwest::Client::new()
        .put(format!("{endpoint}/{bucket}"))
        .send()
        .await
        .expect("TEST_S3_ENDPOINT must point at a reachable S3-compatible server")
        .status();
    assert!(status.is_success(), "creating the test bucket: {status}");
    config.server.storage = format!("s3://{bucket}");
    config.server.s3_endpoint = Some(endpoint);
    config.server.s3_access_key_id = Some("test".to_owned());
    config.server.s3_secret_access_key = Some("test".to_owned());
}

impl TestApp {
    pub async fn spawn() -> TestApp {
        Self::spawn_with(|_| {}).await
    }

    /// Spawns offering the built-in tools and those of `tools` (a tools file's TOML), with a
    /// configuration tweak.
    pub async fn spawn_with_tools(tools: &str, tweak: impl FnOnce(&mut Config)) -> TestApp {
        Self::spawn_with(|config| {
            let file = config.database.data_dir.join("tools.toml");
            let builtin = include_str!("../../../src/tools/default_tools.toml");
            std::fs::write(&file, format!("{builtin}\n{tools}")).unwrap();
            config.server.tools_file = Some(file);
            tweak(config);
        })
        .await
    }

    /// Spawns with a configuration tweak.
    pub async fn spawn_with(tweak: impl FnOnce(&mut Config)) -> TestApp {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let database_url = fresh_database_url(dir.path()).await;
        let mut config = Config::defaults();
        config.database.data_dir = dir.path().to_owned();
        config.database.database_url = Some(database_url.clone());
        config.server.listen = "127.0.0.1:0".parse().unwrap();
        // Tests drive jobs themselves unless they ask for workers.
        config.server.workers = 0;
        // Command tools' programs run under the real binary's supervisor, not this test's.
        config.server.supervisor = Some(env!("CARGO_BIN_EXE_jobgraph").into());
        fresh_storage(&mut config).await;
        tweak(&mut config);
        let listener = TcpListener::bind(config.server.listen).await.unwrap();
        let addr = listener.local_addr().unwrap();
        config.server.public_url = Some(format!("http://{addr}"));
        let app = App::build(config.clone()).await.expect("building the app");
        let db = app.state.db.clone();
        let queries = app.state.query_stats.clone();
        let state = app.state.clone();
        let first = users::bootstrap_admin(&db, "admin@localhost")
            .await
            .unwrap()
            .expect("a fresh database has no users");
        let shutdown = CancellationToken::new();
        let served = tokio::spawn(app.serve(listener, shutdown.clone()));
        TestApp {
            addr,
            db,
            database_url,
            admin_token: first.secret,
            queries,
            state,
            client: reqwest::Client::new(),
            shutdown,
            config,
            served: Some(served),
            _dir: dir,
        }
    }

    /// Stops the server as a deployment would (gracefully, waiting for it to finish) and runs
    /// `meanwhile` on a connection of its own while none serves.
    pub async fn stop_then<F, Fut>(&mut self, meanwhile: F)
    where
        F: FnOnce(DatabaseConnection) -> Fut,
        Fut: std::future::Future<Output = ()>,
    {
        self.shutdown.cancel();
        if let Some(served) = self.served.take() {
            served.await.unwrap().expect("the server stops cleanly");
        }
        let db = jobgraph::db::connect(&self.database_url).await.unwrap();
        meanwhile(db.clone()).await;
        db.close().await.unwrap();
    }

    /// Starts the server again on the same database and data, on a new port.
    pub async fn start_again(&mut self) {
        self.start_again_with(|_| {}).await;
    }

    /// Starts the server again, its configuration changed by `tweak`.
    pub async fn start_again_with(&mut self, tweak: impl FnOnce(&mut Config)) {
        let mut config = self.config.clone();
        tweak(&mut config);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        self.addr = listener.local_addr().unwrap();
        config.server.public_url = Some(format!("http://{}", self.addr));
        let app = App::build(config).await.expect("building the app again");
        self.db = app.state.db.clone();
        self.queries = app.state.query_stats.clone();
        self.state = app.state.clone();
        self.shutdown = CancellationToken::new();
        self.served = Some(tokio::spawn(app.serve(listener, self.shutdown.clone())));
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// Sends a GraphQL request by POST and returns status and body.
    pub async fn post(
        &self,
        token: Option<&str>,
        query: &str,
        variables: Value,
    ) -> (StatusCode, Value) {
        let mut request = self
            .client
            .post(self.url("/graphql"))
            .json(&json!({ "query": query, "variables": variables }));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.expect("the server answers");
        let status = response.status();
        let body = response.json().await.expect("a JSON body");
        (status, body)
    }

    /// Runs an operation that must succeed; returns its `data`.
    pub async fn ok(&self, token: Option<&str>, query: &str, variables: Value) -> Value {
        let (status, body) = self.post(token, query, variables).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert!(body.get("errors").is_none(), "unexpected errors: {body}");
        body["data"].clone()
    }

    /// Runs an operation that must fail; returns the first error's `extensions.code`.
    pub async fn error_code(&self, token: Option<&str>, query: &str, variables: Value) -> String {
        let (_, body) = self.post(token, query, variables).await;
        body["errors"][0]["extensions"]["code"]
            .as_str()
            .unwrap_or_else(|| panic!("expected an error with a code, got {body}"))
            .to_owned()
    }

    /// A raw request builder for transport-level tests.
    pub fn client(&self) -> &reqwest::Client {
        &self.client
    }

    /// What `/metrics` shows now (served without a metrics token).
    pub async fn metrics(&self) -> String {
        let response = self.client.get(self.url("/metrics")).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        response.text().await.unwrap()
    }

    /// Creates an active user with a token.
    pub async fn user(&self, email: &str) -> TestUser {
        let user = users::create_user(&self.db, &Viewer::System, email, None, false)
            .await
            .unwrap();
        let (_, token) = users::tokens::issue(
            &self.db,
            user.id,
            "test",
            entity::api_token::TokenKind::User,
            None,
        )
        .await
        .unwrap();
        TestUser {
            id: ids::encode(user.id).to_string(),
            email: user.email,
            token,
        }
    }

    /// Polls a job until it reaches a final status (or `timeout` passes); returns it.
    pub async fn wait_final(&self, token: &str, id: &str, timeout: std::time::Duration) -> Value {
        self.wait_for(token, id, timeout, |job| {
            matches!(
                job["status"].as_str(),
                Some("COMPLETED" | "FAILED" | "TIMEOUT" | "CANCELLED")
            )
        })
        .await
    }

    /// Polls a job until `done` holds for it; returns it.
    pub async fn wait_for(
        &self,
        token: &str,
        id: &str,
        timeout: std::time::Duration,
        done: impl Fn(&Value) -> bool,
    ) -> Value {
        let query =
            "query($id: ID!) { job(id: $id) { id status stage progress attempt refunded result
            errorMessage errorCode resources timeline { status stage message attempt } } }";
        let done = &done;
        eventually(timeout, "waiting for a job", || async move {
            let data = self.ok(Some(token), query, json!({ "id": id })).await;
            let job = data["job"].clone();
            if done(&job) { Ok(job) } else { Err(job) }
        })
        .await
    }

    /// Creates a workspace owned by `owner`; returns its id.
    pub async fn workspace(&self, owner: &TestUser, name: &str) -> String {
        let data = self
            .ok(
                Some(&owner.token),
                "mutation($name: String!) { createWorkspace(input: {name: $name}) { workspace { id } } }",
                json!({ "name": name }),
            )
            .await;
        data["createWorkspace"]["workspace"]["id"]
            .as_str()
            .unwrap()
            .to_owned()
    }

    /// Adds `user` to a workspace with `role`, as `by`.
    pub async fn add_member(&self, by: &TestUser, workspace: &str, user: &TestUser, role: &str) {
        self.ok(
            Some(&by.token),
            "mutation($ws: ID!, $email: String!, $role: Role!) {
               addMember(input: {workspaceId: $ws, email: $email, role: $role}) { membership { id } }
             }",
            json!({ "ws": workspace, "email": user.email, "role": role }),
        )
        .await;
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// The fields tests read back from a job.
pub const JOB_FIELDS: &str = "id name status toolName creditCost refunded attempt progress stage
  settings result parentKind visibility
  viewerCanRename viewerCanDelete viewerCanCancel viewerCanRetry viewerCanDuplicate viewerCanShare
  timeline { status message }";

/// A FASTA text of `residues` residues.
pub fn fasta(residues: usize) -> String {
    format!(
        ">seq1 test\n{}\n",
        "ACGT".repeat(residues.div_ceil(4))[..residues].to_owned()
    )
}

impl TestApp {
    /// Grants credits to a workspace as the platform administrator.
    pub async fn grant(&self, workspace: &str, amount: i64) {
        self.ok(
            Some(&self.admin_token),
            "mutation($ws: ID!, $amount: Int!) { grantCredits(input: {workspaceId: $ws, amount: $amount}) { workspace { id } } }",
            json!({ "ws": workspace, "amount": amount }),
        )
        .await;
    }

    /// Alice, a user owning a workspace named `name` with `credits` granted (none when 0).
    pub async fn setup(&self, name: &str, credits: i64) -> (TestUser, String) {
        let alice = self.user("alice@lab.test").await;
        let ws = self.workspace(&alice, name).await;
        if credits > 0 {
            self.grant(&ws, credits).await;
        }
        (alice, ws)
    }

    /// Submits `jobs` (each the rest of a `BatchJobInput`, such as `{"tool": "noop"}`) as one
    /// batch as `user` to workspace `ws`, which must be accepted; returns the batch's id.
    pub async fn submit_batch(&self, user: &TestUser, ws: &str, jobs: &[Value]) -> String {
        let data = self
            .ok(
                Some(&user.token),
                "mutation($ws: ID!, $jobs: [BatchJobInput!]!) { submitBatch(input: {workspaceId: $ws, jobs: $jobs}) { batch { id } } }",
                json!({"ws": ws, "jobs": jobs}),
            )
            .await;
        data["submitBatch"]["batch"]["id"]
            .as_str()
            .unwrap()
            .to_owned()
    }

    /// Submits a job as `user` to workspace `ws`, which must be accepted; returns its id.
    /// `input` is the rest of a `SubmitJobInput`, such as `{"tool": "noop"}`.
    pub async fn submit(&self, user: &TestUser, ws: &str, input: Value) -> String {
        let mut input = input;
        input["workspaceId"] = json!(ws);
        let data = self
            .ok(
                Some(&user.token),
                "mutation($input: SubmitJobInput!) { submitJob(input: $input) { job { id } } }",
                json!({ "input": input }),
            )
            .await;
        data["submitJob"]["job"]["id"].as_str().unwrap().to_owned()
    }

    /// How many statements `request` costs the server. The fewest of a few runs: the server's
    /// own background tasks (the live log's poll, upkeep) run statements of theirs meanwhile.
    /// Returns the last run's answer too.
    pub async fn statements<T, Fut>(&self, mut request: impl FnMut() -> Fut) -> (u64, T)
    where
        Fut: std::future::Future<Output = T>,
    {
        let mut fewest = u64::MAX;
        let mut answer = None;
        for _ in 0..3 {
            let before = self.queries.count();
            let answered = request().await;
            fewest = fewest.min(self.queries.count() - before);
            answer = Some(answered);
        }
        (fewest, answer.unwrap())
    }

    /// Submits a job of the sleep tool costing `1 + seconds` credits; returns status and body.
    pub async fn submit_sleep(
        &self,
        user: &TestUser,
        workspace: &str,
        seconds: u32,
    ) -> (StatusCode, Value) {
        self.post(
            Some(&user.token),
            &format!(
                "mutation($ws: ID!, $settings: JSON) {{ submitJob(input: {{workspaceId: $ws, tool: \"sleep\", settings: $settings}}) {{ replayed job {{ {JOB_FIELDS} }} }} }}"
            ),
            json!({ "ws": workspace, "settings": { "seconds": seconds } }),
        )
        .await
    }

    /// Submits a job that must be accepted; returns the job.
    pub async fn job(&self, user: &TestUser, workspace: &str, seconds: u32) -> Value {
        let (_, body) = self.submit_sleep(user, workspace, seconds).await;
        assert!(body["errors"].is_null(), "{body}");
        body["data"]["submitJob"]["job"].clone()
    }

    /// Reads a job as `token`.
    pub async fn read_job(&self, token: Option<&str>, id: &str) -> (StatusCode, Value) {
        self.post(
            token,
            &format!("query($id: ID!) {{ job(id: $id) {{ {JOB_FIELDS} }} }}"),
            json!({ "id": id }),
        )
        .await
    }

    /// Moves a job to `to` through the lifecycle, as the execution layer does.
    pub async fn drive(
        &self,
        id: &str,
        to: entity::job::JobStatus,
        change: jobgraph::jobs::lifecycle::Change,
    ) -> jobgraph::error::Result<entity::job::Model> {
        use sea_orm::EntityTrait;
        let id = ids::decode::<entity::ids::JobId>("id", id).unwrap();
        let tx = jobgraph::db::begin_write(&self.db).await.unwrap();
        let job = entity::job::Entity::find_by_id(id)
            .one(&tx)
            .await
            .unwrap()
            .unwrap();
        let moved = jobgraph::jobs::lifecycle::transition(&tx, &job, to, change).await?;
        tx.commit().await.unwrap();
        Ok(moved)
    }

    /// The workspace's balance and the sum of its ledger, which must agree.
    pub async fn balance(&self, workspace: &str) -> i64 {
        use entity::credit_transaction;
        use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};
        let id = ids::decode::<entity::ids::WorkspaceId>("ws", workspace).unwrap();
        let ws = entity::workspace::Entity::find_by_id(id)
            .one(&self.db)
            .await
            .unwrap()
            .unwrap();
        let sum: i64 = credit_transaction::Entity::find()
            .filter(credit_transaction::Column::WorkspaceId.eq(id))
            .all(&self.db)
            .await
            .unwrap()
            .iter()
            .map(|t| t.amount)
            .sum();
        assert_eq!(
            ws.credit_balance, sum,
            "the balance equals the sum of the ledger"
        );
        ws.credit_balance
    }
}
