//! `jobgraph job ...`: the binary as a user runs it in a shell, against a served binary.

use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};

use crate::cli::Served;

/// A file tool with a text input between two files and two settings, a command that fails,
/// one that outlives its time limit, and a built-in that waits.
const TOOLS: &str = r##"
[[tools]]
name = "join"
title = "Join"
version = "1"
timeout_seconds = 20
max_attempts = 1
inputs = [
  { name = "left", kind = "file", required = true },
  { name = "middle", kind = "text", required = true },
  { name = "right", kind = "file", required = true },
]
settings_schema = { type = "object", required = ["count", "tail"], properties = { count = { type = "integer" }, tail = { type = "string" } } }
executor = { kind = "command", program = "sh", args = ["-c", "cat \"$1\" \"$2\" \"$3\" > outputs/joined.txt; printf '%s %s' \"$4\" \"$5\" >> outputs/joined.txt", "join", "{input:left}", "{input:middle}", "{input:right}", "{setting:tail}", "{setting:count}"] }
price = { base = 1 }

[[tools]]
name = "crash"
title = "Crash"
version = "1"
timeout_seconds = 20
max_attempts = 1
executor = { kind = "command", program = "sh", args = ["-c", "echo boom >&2; exit 3"] }
price = { base = 1 }

[[tools]]
name = "hang"
title = "Hang"
version = "1"
timeout_seconds = 1
max_attempts = 1
executor = { kind = "command", program = "sleep", args = ["30"] }
price = { base = 1 }

[[tools]]
name = "sleep"
title = "Sleep"
version = "1"
timeout_seconds = 120
max_attempts = 1
executor = { kind = "builtin", function = "sleep" }
price = { base = 1 }
settings_schema = { type = "object", properties = { seconds = { type = "number", default = 5 } } }
"##;

/// A served binary with the tools above, and a workspace with credits.
struct Setup {
    served: Served,
    workspace: String,
    dir: tempfile::TempDir,
}

impl Setup {
    async fn start() -> Setup {
        Setup::start_with(|_| {}).await
    }

    /// Starts it with the server's command as `configure` leaves it.
    async fn start_with(configure: impl FnOnce(&mut tokio::process::Command)) -> Setup {
        let dir = tempfile::tempdir().unwrap();
        let tools = dir.path().join("tools.toml");
        std::fs::write(&tools, TOOLS).unwrap();
        let served = Served::start(dir.path(), |command| {
            command
                .env("JOBGRAPH_TOOLS_FILE", &tools)
                .env_remove("RUST_LOG");
            configure(command);
        })
        .await;
        let client = reqwest::Client::new();
        let graphql = async |query: &str, variables: Value| -> Value {
            let body: Value = client
                .post(format!("http://{}/graphql", served.listen))
                .bearer_auth(&served.token)
                .json(&json!({ "query": query, "variables": variables }))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            assert!(body.get("errors").is_none(), "{body}");
            body["data"].clone()
        };
        let created = graphql(
            "mutation { createWorkspace(input: {name: \"cli\"}) { workspace { id } } }",
            json!({}),
        )
        .await;
        let workspace = created["createWorkspace"]["workspace"]["id"]
            .as_str()
            .unwrap()
            .to_owned();
        graphql(
            "mutation($ws: ID!) { grantCredits(input: {workspaceId: $ws, amount: 100}) { workspace { id } } }",
            json!({ "ws": workspace }),
        )
        .await;
        Setup {
            served,
            workspace,
            dir,
        }
    }

    /// `jobgraph job ARGS` with this server's URL and token in the environment.
    fn command(&self, args: &[&str]) -> tokio::process::Command {
        let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_jobgraph"));
        command
            .arg("job")
            .args(args)
            .current_dir(self.dir.path())
            .env("JOBGRAPH_URL", format!("http://{}", self.served.listen))
            .env("JOBGRAPH_TOKEN", &self.served.token)
            .env_remove("JOBGRAPH_WORKSPACE")
            .stdin(Stdio::null())
            .kill_on_drop(true);
        command
    }

    /// Runs `jobgraph job ARGS` to its end (within 60 s): exit code, stdout, stderr.
    async fn run(&self, args: &[&str]) -> Ran {
        let output = tokio::time::timeout(Duration::from_secs(60), self.command(args).output())
            .await
            .unwrap_or_else(|_| panic!("jobgraph job {args:?} ran over 60 s"))
            .unwrap();
        Ran {
            code: output.status.code().expect("an exit code, not a signal"),
            stdout: String::from_utf8(output.stdout).unwrap(),
            stderr: String::from_utf8(output.stderr).unwrap(),
        }
    }
}

#[derive(Debug)]
struct Ran {
    code: i32,
    stdout: String,
    stderr: String,
}

#[tokio::test]
async fn a_job_submitted_with_files_is_followed_listed_and_its_output_downloaded() {
    let setup = Setup::start().await;
    let ws = setup.workspace.as_str();
    std::fs::write(setup.dir.path().join("left.txt"), "left\n").unwrap();
    std::fs::write(setup.dir.path().join("right.txt"), "right\n").unwrap();

    // Two uploads around a text input; `count` parses as JSON (the schema wants an integer),
    // `tail` does not, and stays text.
    let ran = setup
        .run(&[
            "submit",
            "join",
            "--workspace",
            ws,
            "--input",
            "left=@left.txt",
            "--input",
            "middle=in between\n",
            "--input",
            "right=@right.txt",
            "--setting",
            "count=3",
            "--setting",
            "tail=end",
            "--wait",
        ])
        .await;
    assert_eq!(ran.code, 0, "{ran:?}");
    let lines: Vec<&str> = ran.stdout.lines().collect();
    let id = lines[0].to_owned();
    assert!(id.starts_with("job_"), "{ran:?}");
    // Not a terminal: one plain line per change, the last the outcome.
    assert!(
        lines
            .last()
            .unwrap()
            .starts_with(&format!("{id} COMPLETED 100%")),
        "{ran:?}"
    );

    let ran = setup.run(&["download", &id, "--output", "out"]).await;
    assert_eq!(ran.code, 0, "{ran:?}");
    let path = setup.dir.path().join("out/joined.txt");
    assert_eq!(ran.stdout.trim(), "out/joined.txt", "{ran:?}");
    assert_eq!(
        std::fs::read_to_string(path).unwrap(),
        "left\nin between\nright\nend 3"
    );

    // The list, as a table and as JSON.
    let ran = setup.run(&["list", "--workspace", ws]).await;
    assert_eq!(ran.code, 0, "{ran:?}");
    let header = ran.stdout.lines().next().unwrap();
    assert!(
        header.starts_with("ID") && header.contains("STATUS"),
        "{ran:?}"
    );
    let row = ran.stdout.lines().find(|line| line.starts_with(&id));
    assert!(
        row.is_some_and(|row| row.contains("COMPLETED") && row.contains("join")),
        "{ran:?}"
    );
    let ran = setup
        .run(&["list", "--status", "failed,cancelled", "--json"])
        .await;
    assert_eq!((ran.code, ran.stdout.as_str()), (0, ""), "{ran:?}");
    let ran = setup
        .run(&["list", "--status", "COMPLETED", "--json"])
        .await;
    let listed: Value = serde_json::from_str(ran.stdout.trim()).unwrap();
    assert_eq!(listed["id"], json!(id));
    assert_eq!(listed["workspace"], json!({"id": ws, "name": "cli"}));

    // Watching a finished job returns at once, with its outcome.
    let started = Instant::now();
    let ran = setup.run(&["watch", &id, "--json"]).await;
    assert_eq!(ran.code, 0, "{ran:?}");
    assert!(started.elapsed() < Duration::from_secs(10));
    let watched: Value = serde_json::from_str(ran.stdout.trim()).unwrap();
    assert_eq!(watched["status"], "COMPLETED");

    // A setting the schema refuses: the server's message and code, exit 1.
    let ran = setup
        .run(&[
            "submit",
            "join",
            "--workspace",
            ws,
            "--input",
            "left=@left.txt",
            "--input",
            "middle=x",
            "--input",
            "right=@right.txt",
            "--setting",
            "count=three",
            "--setting",
            "tail=end",
        ])
        .await;
    assert_eq!(ran.code, 1, "{ran:?}");
    assert!(ran.stderr.contains("[BAD_USER_INPUT]"), "{ran:?}");
    setup.served.stop().await;
}

#[tokio::test]
async fn how_a_job_ended_is_the_exit_code() {
    let setup = Setup::start().await;
    let ws = setup.workspace.as_str();

    let ran = setup
        .run(&["submit", "crash", "--workspace", ws, "--wait"])
        .await;
    assert_eq!(ran.code, 2, "{ran:?}");
    assert!(
        ran.stderr.contains(" FAILED: ") && ran.stderr.contains("boom"),
        "{ran:?}"
    );
    let failed = ran.stdout.lines().next().unwrap().to_owned();
    // Watching it later says the same, at once.
    let ran = setup.run(&["watch", &failed]).await;
    assert_eq!(ran.code, 2, "{ran:?}");
    assert!(ran.stdout.contains("FAILED"), "{ran:?}");

    let ran = setup
        .run(&["submit", "hang", "--workspace", ws, "--wait", "--json"])
        .await;
    assert_eq!(ran.code, 4, "{ran:?}");
    let last: Value = serde_json::from_str(ran.stdout.lines().last().unwrap()).unwrap();
    assert_eq!(last["status"], "TIMEOUT", "{ran:?}");

    // A watch that is running when the job is cancelled ends with it.
    let ran = setup
        .run(&[
            "submit",
            "sleep",
            "--workspace",
            ws,
            "--setting",
            "seconds=60",
        ])
        .await;
    assert_eq!(ran.code, 0, "{ran:?}");
    let sleeping = ran.stdout.trim().to_owned();
    let mut watching = setup
        .command(&["watch", &sleeping])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(watching.stdout.take().unwrap()).lines();
    let first = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
        .await
        .expect("the watch prints the job as it is")
        .unwrap()
        .unwrap();
    assert!(first.starts_with(&sleeping), "{first}");
    let ran = setup.run(&["cancel", &sleeping]).await;
    assert_eq!(
        (ran.code, ran.stdout.trim()),
        (0, format!("{sleeping} CANCELLED").as_str())
    );
    let status = tokio::time::timeout(Duration::from_secs(30), watching.wait())
        .await
        .expect("the watch ends with the job")
        .unwrap();
    assert_eq!(status.code(), Some(3));

    // Cancelling it again is refused by the server, which says why.
    let ran = setup.run(&["cancel", &sleeping]).await;
    assert_eq!(ran.code, 1, "{ran:?}");
    assert!(ran.stderr.contains("[CONFLICT]"), "{ran:?}");
    setup.served.stop().await;
}

#[tokio::test]
async fn bad_tokens_unknown_jobs_and_unreachable_servers_end_with_a_message_and_code_1() {
    let setup = Setup::start().await;
    let unknown = format!("job_{}", uuid::Uuid::now_v7().simple());

    for args in [["watch", unknown.as_str()], ["download", unknown.as_str()]] {
        let ran = setup.run(&args).await;
        assert_eq!(ran.code, 1, "{ran:?}");
        assert!(ran.stderr.contains("[NOT_FOUND]"), "{ran:?}");
    }

    // A bad token, over HTTP and on the websocket.
    for args in [vec!["list"], vec!["watch", unknown.as_str()]] {
        let ran = setup
            .run(&[&["--token", "jg_not_a_token"], args.as_slice()].concat())
            .await;
        assert_eq!(ran.code, 1, "{ran:?}");
        assert!(ran.stderr.contains("[UNAUTHENTICATED]"), "{ran:?}");
    }

    let ran = setup.run(&["list", "--url", "http://127.0.0.1:1"]).await;
    assert_eq!(ran.code, 1, "{ran:?}");
    assert!(
        ran.stderr
            .contains("cannot reach http://127.0.0.1:1/graphql"),
        "{ran:?}"
    );

    // A usage error is 1 as well, never a job's code.
    let ran = setup.run(&["submit", "join"]).await;
    assert_eq!(ran.code, 1, "{ran:?}");
    assert!(ran.stderr.contains("--workspace"), "{ran:?}");
    setup.served.stop().await;
}

#[tokio::test]
async fn a_watch_outlives_a_restart_of_the_server() {
    let setup = Setup::start_with(|command| {
        // A stopping server hands its running job back at once.
        command.env("JOBGRAPH_GRACE_SECONDS", "0");
    })
    .await;
    let ran = setup
        .run(&[
            "submit",
            "sleep",
            "--workspace",
            &setup.workspace,
            "--setting",
            "seconds=3",
        ])
        .await;
    assert_eq!(ran.code, 0, "{ran:?}");
    let id = ran.stdout.trim().to_owned();
    let mut watching = setup
        .command(&["watch", &id])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(watching.stdout.take().unwrap()).lines();
    let first = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
        .await
        .expect("the watch prints the job as it is")
        .unwrap()
        .unwrap();
    assert!(first.starts_with(&id), "{first}");

    // Stopped, then served again on the same address and database: the watch finds it and
    // follows the job, run again, to its end.
    let (listen, url) = (setup.served.listen.clone(), setup.served.url.clone());
    let (status, _) = setup.served.stop().await;
    assert!(status.success(), "{status:?}");
    let mut again = tokio::process::Command::new(env!("CARGO_BIN_EXE_jobgraph"));
    again
        .arg("serve")
        .env("JOBGRAPH_DATA_DIR", setup.dir.path().join("data"))
        .env("JOBGRAPH_LISTEN", &listen)
        .env("JOBGRAPH_TOOLS_FILE", setup.dir.path().join("tools.toml"))
        .env_remove("RUST_LOG")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true);
    if url.starts_with("postgres") {
        again.env("DATABASE_URL", &url);
    } else {
        again.env_remove("DATABASE_URL");
    }
    let mut again = again.spawn().unwrap();

    let status = tokio::time::timeout(Duration::from_secs(60), watching.wait())
        .await
        .expect("the watch ends with the job")
        .unwrap();
    let mut rest = Vec::new();
    while let Some(line) = lines.next_line().await.unwrap() {
        rest.push(line);
    }
    let mut stderr = String::new();
    tokio::io::AsyncReadExt::read_to_string(&mut watching.stderr.take().unwrap(), &mut stderr)
        .await
        .unwrap();
    assert_eq!(status.code(), Some(0), "{rest:?} {stderr}");
    assert!(stderr.contains("reconnecting"), "{stderr}");
    assert!(
        rest.last()
            .is_some_and(|line| line.starts_with(&format!("{id} COMPLETED"))),
        "{rest:?}"
    );
    again.kill().await.unwrap();
}
