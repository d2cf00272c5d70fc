//! The `command` executor: runs a program in a private working directory per attempt,
//! `<job id>-<attempt>` under the work root, removed when the attempt ends.
//!
//! The directory holds `inputs/<name>` (one file per input), `settings.json` and an empty
//! `outputs/`. Arguments are a template: `{input:NAME}` is an input's path, `{setting:NAME}` a
//! setting's value, `{settings_file}`, `{outputs}` and `{workdir}` the paths; other braces are
//! kept as written. The program
//! reports progress by printing lines `progress: 0.4 Annotating` (a fraction or a percentage,
//! then an optional stage). On exit 0 the structured result is read from `result.json` (or the
//! tool's `result_file`), and the files left in `outputs/` are stored as the job's output
//! files and listed in it. On another exit
//! code the tail of stderr is the error; codes listed in `retryable_exit_codes` are transient
//! failures. The program runs under a [`supervise`] process, in its own process group, killed
//! whole on timeout, cancel, or when the worker goes away in any way. The supervisor tells the
//! CPU time and peak memory the program used, with its descendants that it waited for; they
//! are sent back through [`Progress::usage_sender`].
//!
//! ```toml
//! executor = { kind = "command", program = "prokka", args = ["--outdir", "{outputs}", "{input:genome}"],
//!              result_file = "result.json", retryable_exit_codes = [75] }
//! ```

use std::collections::VecDeque;
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};

use entity::job;
use serde::Deserialize;
use serde_json::{Map, Value, json};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};

use super::{Attempt, Executor, Failure, Output, Progress, supervise};
use crate::files::{self, Files, NewFile};
use crate::tools::Prepared;

/// How much of stderr a failed run keeps as its error.
const STDERR_TAIL_BYTES: usize = 4000;

/// The worker's end of its supervisor's socket. Letting go of it (a timeout, a cancel, any
/// early return) tells the supervisor to kill the program with everything it started; the
/// supervisor still reports what the program used.
struct Lifeline(UnixStream);

impl Drop for Lifeline {
    fn drop(&mut self) {
        let _ = self.0.shutdown(std::net::Shutdown::Write);
    }
}

/// Removes the working directory when the attempt ends, whatever way it ends.
struct WorkDir(PathBuf);

impl Drop for WorkDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Reads a `progress:` line: a fraction (or percentage) and an optional stage.
pub fn parse_progress(line: &str) -> Option<(f64, Option<String>)> {
    let rest = line.trim().strip_prefix("progress:")?.trim();
    let (number, stage) = rest.split_once(char::is_whitespace).unwrap_or((rest, ""));
    let value = match number.strip_suffix('%') {
        Some(percent) => percent.parse::<f64>().ok()? / 100.0,
        None => number.parse::<f64>().ok()?,
    };
    // `nan` and `inf` parse as numbers, but say nothing of how far a run is.
    if !value.is_finite() {
        return None;
    }
    let stage = stage.trim();
    Some((
        value.clamp(0.0, 1.0),
        (!stage.is_empty()).then(|| stage.to_owned()),
    ))
}

fn expand(arg: &str, dir: &Path, settings: &Value) -> String {
    let mut out = String::new();
    let mut rest = arg;
    while let Some(start) = rest.find('{') {
        let Some(end) = rest[start..].find('}') else {
            break;
        };
        out.push_str(&rest[..start]);
        let key = &rest[start + 1..start + end];
        let value = if let Some(name) = key.strip_prefix("input:") {
            dir.join("inputs").join(name).display().to_string()
        } else if let Some(name) = key.strip_prefix("setting:") {
            match settings.get(name) {
                Some(Value::String(s)) => s.clone(),
                Some(Value::Null) | None => String::new(),
                Some(other) => other.to_string(),
            }
        } else {
            match key {
                "settings_file" => dir.join("settings.json").display().to_string(),
                "outputs" => dir.join("outputs").display().to_string(),
                "workdir" => dir.display().to_string(),
                // Not a placeholder (a shell block, a JSON literal): kept as written.
                _ => {
                    out.push('{');
                    rest = &rest[start + 1..];
                    continue;
                }
            }
        };
        out.push_str(&value);
        rest = &rest[start + end + 1..];
    }
    out.push_str(rest);
    out
}

fn io_failure(what: &str) -> impl Fn(std::io::Error) -> Failure + '_ {
    move |err| Failure::Transient(format!("{what}: {err}"))
}

/// A `command` executor, as the tools file declares it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CommandSpec {
    /// The program, by path or found on `PATH`.
    pub program: String,
    /// Its arguments, a template (see the module's documentation).
    #[serde(default)]
    pub args: Vec<String>,
    /// Where the program leaves its structured result, in its working directory.
    #[serde(default = "default_result_file")]
    pub result_file: String,
    /// Exit codes that are worth another attempt; any other is a permanent failure.
    #[serde(default)]
    pub retryable_exit_codes: Vec<i32>,
}

fn default_result_file() -> String {
    "result.json".to_owned()
}

impl CommandSpec {
    /// What the declaration cannot say by its shape alone.
    pub(super) fn check(&self) -> Result<(), String> {
        if self.program.is_empty() {
            return Err("the command executor's `program` is empty".to_owned());
        }
        Ok(())
    }

    /// Whether the program's exit is a success, or which failure it is: the codes listed in
    /// `retryable_exit_codes` and deaths by a signal are worth another attempt.
    fn check_status(&self, status: ExitStatus, stderr_tail: &str) -> Result<(), Failure> {
        if status.success() {
            return Ok(());
        }
        let program = &self.program;
        Err(match status.code() {
            Some(code) if self.retryable_exit_codes.contains(&code) => Failure::Transient(format!(
                "`{program}` exited with code {code}: {stderr_tail}"
            )),
            Some(code) => Failure::Permanent(format!(
                "`{program}` exited with code {code}: {stderr_tail}"
            )),
            // Killed by a signal (out of memory, for one): worth another attempt.
            None => {
                Failure::Transient(format!("`{program}` was killed by a signal: {stderr_tail}"))
            }
        })
    }
}

#[async_trait::async_trait]
impl Executor for CommandSpec {
    async fn run(&self, attempt: &Attempt<'_>) -> Result<Output, Failure> {
        let Attempt {
            job,
            progress,
            places,
            files,
        } = *attempt;
        let dir = places
            .work_root
            .join(format!("{}-{}", job.id.simple(), job.attempt));
        let _cleanup = WorkDir(dir.clone());
        prepare(&dir, job, files).await?;
        let args: Vec<String> = self
            .args
            .iter()
            .map(|arg| expand(arg, &dir, &job.settings))
            .collect();
        let running = start(&places.supervisor, &self.program, &args, &dir, progress)?;
        let ended = running.follow(progress).await?;
        self.check_status(ended.status, &ended.stderr_tail)?;
        let mut result = read_result(&dir.join(&self.result_file), &self.result_file).await?;
        let stored = store_outputs(files, job, &dir.join("outputs")).await?;
        list_outputs(&mut result, &stored);
        Ok(Output {
            result,
            files: stored,
        })
    }
}

/// Fills a new working directory: `inputs/<name>`, `settings.json` and an empty `outputs/`.
async fn prepare(dir: &Path, job: &job::Model, files: &Files) -> Result<(), Failure> {
    tokio::fs::create_dir_all(dir.join("inputs"))
        .await
        .map_err(io_failure("creating the working directory"))?;
    tokio::fs::create_dir_all(dir.join("outputs"))
        .await
        .map_err(io_failure("creating the working directory"))?;
    for (name, input) in Prepared::from_stored(&job.inputs, &job.settings).inputs {
        // A list input's items (`<name>/<index>`) land in the folder `inputs/<name>/`.
        let path = dir.join("inputs").join(&name);
        if let Some(folder) = path.parent() {
            tokio::fs::create_dir_all(folder)
                .await
                .map_err(io_failure("creating the working directory"))?;
        }
        let key = input.storage_key(job.workspace_id, job.id);
        match (input.text, key) {
            (None, Some(key)) => {
                copy_to_path(files, &key, &path).await?;
            }
            (text, _) => tokio::fs::write(&path, text.unwrap_or_default())
                .await
                .map_err(io_failure("writing an input"))?,
        }
    }
    tokio::fs::write(dir.join("settings.json"), job.settings.to_string())
        .await
        .map_err(io_failure("writing the settings"))
}

/// A program started under its supervisor.
struct Running {
    stdout: tokio::process::ChildStdout,
    stderr: tokio::process::ChildStderr,
    /// Resolves once the supervisor is reaped: the program's exit status, or why it did not
    /// start.
    reaped: tokio::task::JoinHandle<std::io::Result<Result<ExitStatus, String>>>,
    /// Dropped last: letting go of it stops the program.
    _lifeline: Lifeline,
}

/// How the program ended, with the tail of what it wrote to stderr.
struct Ended {
    status: ExitStatus,
    stderr_tail: String,
}

/// Starts `program` with `args` in `dir` under a supervisor (see [`supervise`]), and a task
/// that reaps the supervisor whatever happens to the attempt, so it never lingers as a zombie,
/// and sends what the program used to the attempt's usage sender.
fn start(
    supervisor: &Path,
    program: &str,
    args: &[String],
    dir: &Path,
    progress: &Progress<'_>,
) -> Result<Running, Failure> {
    // Started with std, not tokio: tokio would reap a child it dropped unwaited, racing the
    // wait below.
    let (lifeline, theirs) =
        UnixStream::pair().map_err(io_failure("starting the program's supervisor"))?;
    let reports = lifeline
        .try_clone()
        .map_err(io_failure("starting the program's supervisor"))?;
    let mut child = std::process::Command::new(supervisor)
        .arg("supervise")
        .arg("--")
        .arg(program)
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::from(std::os::fd::OwnedFd::from(theirs)))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .map_err(|err| {
            Failure::Transient(format!(
                "cannot start the supervisor {}: {err}",
                supervisor.display()
            ))
        })?;
    let lifeline = Lifeline(lifeline);
    let usage = progress.usage_sender();
    let stdout = child.stdout.take().expect("piped");
    let stderr = child.stderr.take().expect("piped");
    let reaped = tokio::task::spawn_blocking(move || {
        let report = supervise::Report::read(&reports);
        let _ = child.wait();
        let outcome = report?.outcome();
        if let (Ok((_, used)), Some(usage)) = (&outcome, usage) {
            let _ = usage.send(*used);
        }
        Ok::<_, std::io::Error>(outcome.map(|(status, _)| status))
    });
    let pipe = io_failure("reading the program's output");
    Ok(Running {
        stdout: tokio::process::ChildStdout::from_std(stdout).map_err(&pipe)?,
        stderr: tokio::process::ChildStderr::from_std(stderr).map_err(&pipe)?,
        reaped,
        _lifeline: lifeline,
    })
}

impl Running {
    /// Reports the program's progress lines until it ends, then waits for its exit status.
    /// `Abandoned` as soon as the job is no longer this attempt's, which stops the program.
    async fn follow(self, progress: &Progress<'_>) -> Result<Ended, Failure> {
        let Running {
            stdout,
            stderr,
            reaped,
            _lifeline,
        } = self;
        let stderr_tail = tokio::spawn(tail(stderr));
        let mut lines = BufReader::new(stdout).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            if let Some((fraction, stage)) = parse_progress(&line) {
                progress.report(fraction, stage.as_deref()).await?;
            }
        }
        let status = reaped
            .await
            .map_err(|err| Failure::Transient(format!("waiting for the program: {err}")))?
            .map_err(io_failure("waiting for the program"))?
            .map_err(Failure::Permanent)?;
        let stderr_tail = stderr_tail.await.unwrap_or_default();
        Ok(Ended {
            status,
            stderr_tail,
        })
    }
}

/// The last [`STDERR_TAIL_BYTES`] of a stream, as trimmed text.
async fn tail(mut stderr: tokio::process::ChildStderr) -> String {
    let mut tail: VecDeque<u8> = VecDeque::with_capacity(STDERR_TAIL_BYTES);
    let mut buffer = [0u8; 4096];
    while let Ok(n) = stderr.read(&mut buffer).await {
        if n == 0 {
            break;
        }
        tail.extend(&buffer[..n]);
        while tail.len() > STDERR_TAIL_BYTES {
            tail.pop_front();
        }
    }
    String::from_utf8_lossy(&tail.into_iter().collect::<Vec<_>>())
        .trim()
        .to_owned()
}

/// The structured result at `path`, named `name` in errors; an empty object when the program
/// wrote none.
async fn read_result(path: &Path, name: &str) -> Result<Value, Failure> {
    match tokio::fs::read(path).await {
        Ok(bytes) => serde_json::from_slice::<Value>(&bytes)
            .map_err(|err| Failure::Permanent(format!("`{name}` is not JSON: {err}"))),
        Err(_) => Ok(Value::Object(Map::new())),
    }
}

/// Stores the files the program left in `outputs`, in name order, under the attempt's output
/// folder; none stays stored if one cannot be.
async fn store_outputs(
    files: &Files,
    job: &job::Model,
    outputs: &Path,
) -> Result<Vec<NewFile>, Failure> {
    let mut paths = Vec::new();
    if let Ok(mut entries) = tokio::fs::read_dir(outputs).await {
        while let Ok(Some(entry)) = entries.next_entry().await {
            if entry.file_type().await.is_ok_and(|t| t.is_file()) {
                paths.push(entry.path());
            }
        }
    }
    paths.sort();
    let prefix = files::output_prefix(job.workspace_id, job.id, job.attempt);
    let mut stored = Vec::new();
    for path in paths {
        let key = format!("{prefix}/{}", uuid::Uuid::now_v7().simple());
        match files.store_path(key, &path).await {
            Ok(file) => stored.push(file),
            Err(err) => {
                files.discard(&stored).await;
                return Err(Failure::Transient(format!(
                    "storing the output {}: {}",
                    path.display(),
                    err.describe()
                )));
            }
        }
    }
    Ok(stored)
}

/// Lists the stored output files in an object result, as `outputFiles`.
fn list_outputs(result: &mut Value, stored: &[NewFile]) {
    let outputs: Vec<Value> = stored
        .iter()
        .map(|file| json!({ "name": file.name, "bytes": file.size }))
        .collect();
    if let Value::Object(map) = result
        && !outputs.is_empty()
    {
        map.insert("outputFiles".to_owned(), Value::Array(outputs));
    }
}

/// Writes a stored file to a path of the working directory, streaming.
async fn copy_to_path(files: &Files, key: &str, path: &Path) -> Result<(), Failure> {
    use futures_util::StreamExt as _;
    use tokio::io::AsyncWriteExt as _;
    let mut read = files
        .storage
        .read(key, None)
        .await
        .map_err(|err| Failure::Transient(format!("reading an input: {err:#}")))?;
    let mut out = tokio::fs::File::create(path)
        .await
        .map_err(io_failure("writing an input"))?;
    while let Some(chunk) = read.stream.next().await {
        let chunk = chunk.map_err(io_failure("reading an input"))?;
        out.write_all(&chunk)
            .await
            .map_err(io_failure("writing an input"))?;
    }
    out.flush().await.map_err(io_failure("writing an input"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_lines_are_read_as_fractions_or_percentages() {
        assert_eq!(
            parse_progress("progress: 0.4 Annotating genes"),
            Some((0.4, Some("Annotating genes".to_owned())))
        );
        assert_eq!(parse_progress("progress: 75%"), Some((0.75, None)));
        assert_eq!(parse_progress("progress: 7"), Some((1.0, None)));
        assert_eq!(parse_progress("progress: soon"), None);
        for not_a_fraction in ["nan", "NaN%", "inf", "-infinity"] {
            let line = format!("progress: {not_a_fraction} Aligning");
            assert_eq!(parse_progress(&line), None, "{line}");
        }
        assert_eq!(parse_progress("working..."), None);
    }

    #[test]
    fn arguments_are_expanded_from_the_template() {
        let dir = Path::new("/w");
        let settings = json!({"k": 5, "mode": "fast"});
        assert_eq!(expand("{input:genome}", dir, &settings), "/w/inputs/genome");
        assert_eq!(
            expand("--k={setting:k}/{setting:mode}", dir, &settings),
            "--k=5/fast"
        );
        assert_eq!(expand("{outputs}", dir, &settings), "/w/outputs");
        let script = r#"f() { echo '{"a": 1}'; }"#;
        assert_eq!(expand(script, dir, &settings), script);
    }
}
