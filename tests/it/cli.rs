//! The `jobgraph` command: first start, management commands and graceful shutdown.

use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};

use crate::support::{WAIT, eventually, fresh_database_url};

fn jobgraph(
    database_url: &str,
    data_dir: &std::path::Path,
    args: &[&str],
) -> (bool, String, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_jobgraph"))
        .args(args)
        .env("DATABASE_URL", database_url)
        .env("JOBGRAPH_DATA_DIR", data_dir)
        .env_remove("RUST_LOG")
        .output()
        .expect("running jobgraph");
    (
        output.status.success(),
        String::from_utf8(output.stdout).unwrap(),
        String::from_utf8(output.stderr).unwrap(),
    )
}

#[tokio::test]
async fn management_commands_print_what_scripts_capture() {
    let dir = tempfile::tempdir().unwrap();
    let url = fresh_database_url(dir.path()).await;

    let (ok, stdout, stderr) = jobgraph(
        &url,
        dir.path(),
        &["user", "create", "--email", "Carol@Lab.test", "--admin"],
    );
    assert!(ok, "{stderr}");
    let user_id = stdout.trim().to_owned();
    assert!(user_id.starts_with("usr_"), "{stdout}");

    let (ok, stdout, stderr) = jobgraph(
        &url,
        dir.path(),
        &["token", "create", "--email", "carol@lab.test"],
    );
    assert!(ok, "{stderr}");
    let token = stdout.trim().to_owned();
    assert!(
        token.starts_with("jg_") && !token.contains(char::is_whitespace),
        "{stdout}"
    );

    let (ok, _, stderr) = jobgraph(
        &url,
        dir.path(),
        &["token", "create", "--email", "nobody@lab.test"],
    );
    assert!(!ok && stderr.contains("nobody@lab.test"), "{stderr}");
    // The message names the database it looked in.
    let shown = jobgraph::db::redact(&url);
    assert!(stderr.contains(&shown), "{stderr}");

    let (ok, stdout, _) = jobgraph(&url, dir.path(), &["schema"]);
    assert!(ok && stdout == jobgraph::graphql::sdl());

    // A workspace to grant to, made through the library on the same database.
    let db = jobgraph::db::connect(&url).await.unwrap();
    let viewer = jobgraph::users::tokens::authenticate(&db, &token)
        .await
        .unwrap();
    let ws = jobgraph::workspaces::create(&db, &viewer, "lab")
        .await
        .unwrap();
    let ws_id = jobgraph::ids::encode(ws.id);
    let (ok, stdout, stderr) = jobgraph(
        &url,
        dir.path(),
        &["credits", "grant", "--workspace", &ws_id, "--amount", "75"],
    );
    assert!(ok, "{stderr}");
    assert_eq!(stdout.trim(), "75");
    let (ok, _, stderr) = jobgraph(
        &url,
        dir.path(),
        &["credits", "grant", "--workspace", &ws_id, "--amount", "0"],
    );
    assert!(!ok && stderr.contains("amount"), "{stderr}");
}

#[test]
fn a_command_that_needs_data_refuses_a_missing_database_and_creates_none() {
    let dir = tempfile::tempdir().unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_jobgraph"))
        .args(["token", "create", "--email", "carol@lab.test"])
        .current_dir(dir.path())
        .env_remove("DATABASE_URL")
        .env_remove("JOBGRAPH_DATA_DIR")
        .env_remove("RUST_LOG")
        .output()
        .expect("running jobgraph");
    let stderr = String::from_utf8(output.stdout.clone()).unwrap()
        + &String::from_utf8(output.stderr).unwrap();
    assert!(!output.status.success(), "{stderr}");
    // The data directory is named absolutely, so the user sees where it looked.
    let expected = dir.path().canonicalize().unwrap().join("data/jobgraph.db");
    assert!(
        stderr.contains(&format!("no database at {}", expected.display())),
        "{stderr}"
    );
    assert!(
        !dir.path().join("data").exists(),
        "an empty database was made"
    );
}

#[test]
fn global_flags_go_before_or_after_the_command_and_server_flags_after_it() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!(
        "sqlite://{}?mode=rwc",
        dir.path().join("flags.db").display()
    );
    for args in [
        &["--log-format", "json", "schema"][..],
        &["schema", "--log-format", "json"],
        &["--log-format=json", "--data-dir", "elsewhere", "schema"],
    ] {
        let (ok, stdout, stderr) = jobgraph(&url, dir.path(), args);
        assert!(
            ok && stdout == jobgraph::graphql::sdl(),
            "{args:?}: {stderr}"
        );
    }
    // A server flag before another command would be ignored: refused, with where it goes.
    let output = Command::new(env!("CARGO_BIN_EXE_jobgraph"))
        .args(["--workers", "0", "migrate"])
        .env("DATABASE_URL", &url)
        .output()
        .unwrap();
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("--workers is a flag of `serve` and `worker`"),
        "{stderr}"
    );
    assert!(!dir.path().join("flags.db").exists(), "migrate ran");
}

#[test]
fn a_pool_size_out_of_range_is_refused_before_anything_is_opened() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("pool.db").display());
    for size in ["0", "1001", "-1", "many", ""] {
        let flag = format!("--db-pool-size={size}");
        let (ok, _, stderr) = jobgraph(&url, dir.path(), &[&flag, "migrate"]);
        assert!(
            !ok && stderr.contains("--db-pool-size"),
            "{size:?}: {stderr}"
        );
        // The same from the environment.
        let output = Command::new(env!("CARGO_BIN_EXE_jobgraph"))
            .arg("migrate")
            .env("DATABASE_URL", &url)
            .env("JOBGRAPH_DB_POOL_SIZE", size)
            .output()
            .unwrap();
        let stderr = String::from_utf8(output.stderr).unwrap();
        assert!(
            !output.status.success() && stderr.contains("--db-pool-size"),
            "{size:?} from the environment: {stderr}"
        );
    }
    assert!(!dir.path().join("pool.db").exists(), "migrate ran");
    let (ok, _, stderr) = jobgraph(&url, dir.path(), &["--db-pool-size", "1", "migrate"]);
    assert!(ok, "{stderr}");
    assert!(dir.path().join("pool.db").exists());
}

#[tokio::test]
async fn serve_creates_its_database_prints_a_working_token_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let served = Served::start(dir.path(), |command| {
        command.env_remove("RUST_LOG");
    })
    .await;
    let (url, listen, token) = (&served.url, &served.listen, &served.token);
    if !url.starts_with("postgres") {
        assert!(dir.path().join("data/jobgraph.db").exists());
    }

    let client = reqwest::Client::new();
    let body: Value = eventually(WAIT, "the server answers", || async {
        let sent = client
            .post(format!("http://{listen}/graphql"))
            .bearer_auth(token)
            .json(&json!({"query": "{ viewer { user { email isPlatformAdmin } } }"}))
            .send()
            .await;
        match sent {
            Ok(response) => Ok(response.json().await.unwrap()),
            Err(err) => Err(err),
        }
    })
    .await;
    assert_eq!(
        body["data"]["viewer"]["user"],
        json!({"email": "admin@localhost", "isPlatformAdmin": true})
    );

    let (status, logs) = served.stop().await;
    assert!(status.success(), "{status:?}");
    // Logs to a pipe are plain text: no colour codes.
    assert!(logs.contains("INFO"), "{logs}");
    assert!(!logs.contains('\x1b'), "colour codes in piped logs: {logs}");
}

#[tokio::test]
async fn json_logs_carry_the_request_id_and_the_job_run_of_each_line() {
    let dir = tempfile::tempdir().unwrap();
    let served = Served::start(dir.path(), |command| {
        command
            .args(["serve", "--log-format", "json"])
            .env("JOBGRAPH_WORKERS", "1")
            .env(
                "RUST_LOG",
                "info,tower_http=debug,jobgraph::queue::runner=debug",
            );
    })
    .await;
    let (listen, token) = (served.listen.clone(), served.token.clone());
    let client = reqwest::Client::new();
    let graphql = |query: &str, variables: Value, request_id: Option<&str>| {
        let mut request = client
            .post(format!("http://{listen}/graphql"))
            .bearer_auth(&token)
            .json(&json!({ "query": query, "variables": variables }));
        if let Some(id) = request_id {
            request = request.header("x-request-id", id);
        }
        async move {
            let response = request.send().await?;
            let id = response.headers()["x-request-id"]
                .to_str()
                .unwrap()
                .to_owned();
            Ok::<_, reqwest::Error>((id, response.json::<Value>().await?))
        }
    };
    let (id, created) = eventually(WAIT, "the server answers", || {
        graphql(
            "mutation { createWorkspace(input: {name: \"logs\"}) { workspace { id } } }",
            json!({}),
            Some("req-logs-1"),
        )
    })
    .await;
    // The client's id is kept and returned; a request without one gets one.
    assert_eq!(id, "req-logs-1");
    let ws = created["data"]["createWorkspace"]["workspace"]["id"].clone();
    let (generated, _) = graphql(
        "mutation($ws: ID!) { grantCredits(input: {workspaceId: $ws, amount: 10}) { workspace { id } } }",
        json!({ "ws": ws }),
        None,
    )
    .await
    .unwrap();
    assert!(
        generated.len() == 32 && generated.bytes().all(|b| b.is_ascii_hexdigit()),
        "{generated}"
    );
    let (_, submitted) = graphql(
        "mutation($ws: ID!) { submitJob(input: {workspaceId: $ws, tool: \"noop\"}) { job { id } } }",
        json!({ "ws": ws }),
        None,
    )
    .await
    .unwrap();
    let job = submitted["data"]["submitJob"]["job"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    eventually(WAIT, "the job completes", || async {
        let (_, read) = graphql(
            "query($id: ID!) { job(id: $id) { status } }",
            json!({ "id": job }),
            None,
        )
        .await
        .map_err(|err| err.to_string())?;
        match read["data"]["job"]["status"].as_str() {
            Some("COMPLETED") => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;

    let (_, logs) = served.stop().await;
    // Every line is a JSON object; lines of a request carry its id, lines of a run the job's.
    let lines: Vec<Value> = logs
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|err| panic!("{err}: {line}")))
        .collect();
    let in_span = |name: &str, field: &str, value: &Value| {
        lines.iter().any(|line| {
            line["spans"].as_array().is_some_and(|spans| {
                spans
                    .iter()
                    .any(|span| span["name"] == name && &span[field] == value)
            })
        })
    };
    assert!(
        in_span("request", "request.id", &json!("req-logs-1")),
        "{logs}"
    );
    assert!(
        in_span("request", "request.id", &json!(generated)),
        "{logs}"
    );
    let job_uuid = uuid::Uuid::try_parse(job.strip_prefix("job_").unwrap()).unwrap();
    assert!(
        in_span("job", "job.id", &json!(job_uuid.to_string())),
        "{logs}"
    );
    assert!(
        lines
            .iter()
            .any(|line| line["spans"].as_array().is_some_and(|spans| spans
                .iter()
                .any(|span| span["name"] == "job" && span["attempt"] == 1))),
        "{logs}"
    );
}

/// A `jobgraph serve` process on a free port over a fresh database, and its first-start token.
pub(crate) struct Served {
    child: tokio::process::Child,
    pub(crate) url: String,
    pub(crate) listen: String,
    pub(crate) token: String,
}

impl Served {
    /// Starts it with its data in `dir`, the command as `configure` leaves it.
    pub(crate) async fn start(
        dir: &std::path::Path,
        configure: impl FnOnce(&mut tokio::process::Command),
    ) -> Served {
        let url = fresh_database_url(dir).await;
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let listen = format!("127.0.0.1:{port}");
        let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_jobgraph"));
        command
            .env("JOBGRAPH_DATA_DIR", dir.join("data"))
            .env("JOBGRAPH_LISTEN", &listen)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        // On SQLite, the default: no database URL at all.
        if url.starts_with("postgres") {
            command.env("DATABASE_URL", &url);
        } else {
            command.env_remove("DATABASE_URL");
        }
        configure(&mut command);
        let mut child = command.spawn().unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let token = tokio::time::timeout(Duration::from_secs(30), async {
            while let Some(line) = lines.next_line().await.unwrap() {
                if let Some(token) = line.split_whitespace().find(|w| w.starts_with("jg_")) {
                    return token.to_owned();
                }
            }
            panic!("jobgraph exited without printing a token");
        })
        .await
        .expect("a token within 30 s");
        // The rest of the message comes in later writes: a pipe closed under them would end
        // the server (a failed print panics), so its stdout is read to the end.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Served {
            child,
            url,
            listen,
            token,
        }
    }

    /// Stops it with SIGTERM (within 15 s): how it exited and what it logged.
    pub(crate) async fn stop(mut self) -> (std::process::ExitStatus, String) {
        let pid = self.child.id().unwrap().to_string();
        assert!(
            Command::new("kill")
                .args(["-TERM", &pid])
                .status()
                .unwrap()
                .success()
        );
        let status = tokio::time::timeout(Duration::from_secs(15), self.child.wait())
            .await
            .expect("stops within 15 s")
            .unwrap();
        let mut logs = String::new();
        let mut stderr = self.child.stderr.take().unwrap();
        tokio::io::AsyncReadExt::read_to_string(&mut stderr, &mut logs)
            .await
            .unwrap();
        (status, logs)
    }
}
