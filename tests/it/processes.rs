//! The programs of command tools as processes: run by a real `jobgraph worker`, they end with
//! it, find their files with any data directory, and report their own usage.

use std::path::Path;
use std::process::{Child, Command, Stdio};

use serde_json::json;

use crate::support::{TestApp, TestUser, WAIT, eventually};

const TOOLS: &str = r##"
[[tools]]
name = "orphaning"
title = "Starts a grandchild"
version = "1"
timeout_seconds = 600
executor = { kind = "command", program = "sh", args = ["-c", "echo $$ > \"$1\"; sleep 300 & echo $! > \"$2\"; wait", "orphaning", "{setting:shell}", "{setting:sleeper}"] }
price = { base = 1 }

[[tools]]
name = "count"
title = "Count bytes"
version = "1"
timeout_seconds = 20
inputs = [{ name = "text", kind = "file", required = true }]
executor = { kind = "command", program = "sh", args = ["-c", """
n=$(wc -c < "$1")
printf '{"bytes": %s}' $n > result.json
echo hi > "$2/report.txt"
""", "count", "{input:text}", "{outputs}"] }
price = { base = 1 }

[[tools]]
name = "shell"
title = "A shell line"
version = "1"
timeout_seconds = 20
executor = { kind = "command", program = "sh", args = ["-c", "{setting:line}"] }
price = { base = 1 }
"##;

async fn spawn(workers: usize) -> (TestApp, TestUser, String) {
    let app = TestApp::spawn_with_tools(TOOLS, |config| config.server.workers = workers).await;
    let (alice, ws) = app.setup("lab", 1000).await;
    (app, alice, ws)
}

/// A `jobgraph worker` process on the test's database, run from `cwd` with the default data
/// directory (`./data`).
fn worker_process(app: &TestApp, cwd: &Path) -> Child {
    Command::new(env!("CARGO_BIN_EXE_jobgraph"))
        .args(["worker", "--workers", "1", "--lease-seconds", "30"])
        .arg("--tools-file")
        .arg(app.state.config.tools_file.as_ref().unwrap())
        .arg("--database-url")
        .arg(&app.database_url)
        .current_dir(cwd)
        .env_remove("JOBGRAPH_DATA_DIR")
        .env_remove("DATABASE_URL")
        .env_remove("JOBGRAPH_SUPERVISOR")
        .env_remove("RUST_LOG")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

/// Whether a process is alive (a zombie, dead but not yet reaped, is not).
fn alive(pid: &str) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        !stat
            .rsplit(')')
            .next()
            .unwrap_or("")
            .trim_start()
            .starts_with('Z')
    })
}

async fn read_pid(path: &Path) -> String {
    eventually(WAIT, "the program writes its pid", || async {
        match std::fs::read_to_string(path) {
            Ok(pid) if !pid.trim().is_empty() => Ok(pid.trim().to_owned()),
            _ => Err(path.display().to_string()),
        }
    })
    .await
}

#[tokio::test]
async fn a_worker_killed_with_sigkill_takes_its_programs_and_their_children_along() {
    let (app, alice, ws) = spawn(0).await;
    let dir = tempfile::tempdir().unwrap();
    let (shell, sleeper) = (dir.path().join("shell.pid"), dir.path().join("sleeper.pid"));
    app.submit(&alice, &ws, json!({"tool": "orphaning", "settings": {"shell": shell.display().to_string(), "sleeper": sleeper.display().to_string()}}))
    .await;
    let mut worker = worker_process(&app, dir.path());
    let shell = read_pid(&shell).await;
    let sleeper = read_pid(&sleeper).await;
    assert!(alive(&shell) && alive(&sleeper));

    worker.kill().unwrap();
    worker.wait().unwrap();
    // Well before the child's `sleep 300` ends by itself.
    eventually(
        WAIT,
        "the program and its child end with the worker",
        || async {
            match (alive(&shell), alive(&sleeper)) {
                (false, false) => Ok(()),
                still => Err(format!("{shell} and {sleeper} alive: {still:?}")),
            }
        },
    )
    .await;
}

#[tokio::test]
async fn a_command_tool_finds_its_inputs_and_stores_its_outputs_with_a_relative_data_directory() {
    let (app, alice, ws) = spawn(0).await;
    let id = app
        .submit(
            &alice,
            &ws,
            json!({"tool": "count", "inputs": [{"name": "text", "text": "hello"}]}),
        )
        .await;
    let dir = tempfile::tempdir().unwrap();
    let mut worker = worker_process(&app, dir.path());
    let job = app.wait_final(&alice.token, &id, WAIT).await;
    worker.kill().unwrap();
    worker.wait().unwrap();
    assert_eq!(job["status"], "COMPLETED", "{job}");
    assert_eq!(
        job["result"],
        json!({"bytes": 5, "outputFiles": [{"name": "report.txt", "bytes": 3}]})
    );
    assert!(
        dir.path().join("data/files").is_dir(),
        "outputs stored under ./data"
    );
}

#[tokio::test]
async fn the_peak_memory_of_a_command_run_is_its_programs_own() {
    let (app, alice, ws) = spawn(1).await;
    // `tail` keeps the whole 50 MB line it reads until it ends.
    let big = app.submit(&alice, &ws, json!({"tool": "shell", "settings": {"line": "head -c 50000000 /dev/zero | tail -n 1 > /dev/null"}}))
    .await;
    let tiny = app
        .submit(
            &alice,
            &ws,
            json!({"tool": "shell", "settings": {"line": "echo hi"}}),
        )
        .await;
    let peak = |id: String| {
        let app = &app;
        let token = alice.token.clone();
        async move {
            let job = app.wait_final(&token, &id, WAIT).await;
            assert_eq!(job["status"], "COMPLETED", "{job}");
            let data = app
                .ok(
                    Some(&token),
                    "query($id: ID!) { job(id: $id) { resources } }",
                    json!({ "id": id }),
                )
                .await;
            data["job"]["resources"]["peakMemoryBytes"]
                .as_u64()
                .unwrap()
        }
    };
    const MB: u64 = 1024 * 1024;
    let big = peak(big).await;
    assert!((45 * MB..150 * MB).contains(&big), "{big}");
    let tiny = peak(tiny).await;
    assert!(tiny < 15 * MB, "{tiny}");
    // Far less than the server that started it.
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let server_kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    assert!(
        tiny < server_kib * 1024 / 2,
        "{tiny} against the server's {server_kib} KiB"
    );
}
