//! Executors: how a tool's run is carried out. `builtin` holds the analyses compiled into
//! jobgraph, so the default tools do real work with no external programs.

pub mod builtin;
pub mod command;
pub mod supervise;

use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

use entity::job;
use sea_orm::DatabaseConnection;
use serde_json::{Value, json};
use tokio::sync::oneshot;

use crate::files::{self, Files, NewFile};
use crate::tools::{Prepared, Tool};

/// Where command tools run.
#[derive(Debug, Clone)]
pub struct Places {
    /// Where each attempt gets its working directory.
    pub work_root: PathBuf,
    /// The `jobgraph` program that supervises each command tool's program.
    pub supervisor: PathBuf,
}

/// What a successful run produced: its structured result and its stored output files.
#[derive(Debug, Clone, Default)]
pub struct Output {
    pub result: Value,
    /// Written under the attempt's output folder; their rows are written with the outcome.
    pub files: Vec<NewFile>,
}

/// Why a run did not produce a result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// Worth another attempt (a flaky resource, a lost connection).
    Transient(String),
    /// Another attempt would fail the same way (bad input, a missing tool).
    Permanent(String),
    /// The job is no longer this attempt's (cancelled or reclaimed): stop quietly.
    Abandoned,
}

/// What a run's program used, its descendants that it waited for included.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Usage {
    pub cpu_user_seconds: f64,
    pub cpu_system_seconds: f64,
    pub peak_memory_bytes: u64,
}

/// A running attempt's channel back to the job: progress and stage, and what its program used.
pub struct Progress<'a> {
    pub db: &'a DatabaseConnection,
    pub job: &'a job::Model,
    usage: Mutex<Option<oneshot::Sender<Usage>>>,
}

impl<'a> Progress<'a> {
    /// A channel for one attempt, and where the usage of the program it starts (if any)
    /// arrives. The receiver resolves once that program is reaped, even when the attempt was
    /// stopped early (a timeout kills the program, which is reaped moments later), or as closed
    /// once this `Progress` is dropped without a program having started.
    pub fn new(
        db: &'a DatabaseConnection,
        job: &'a job::Model,
    ) -> (Self, oneshot::Receiver<Usage>) {
        let (sender, receiver) = oneshot::channel();
        let progress = Progress {
            db,
            job,
            usage: Mutex::new(Some(sender)),
        };
        (progress, receiver)
    }

    /// Where to send the usage of the program this attempt starts; `None` once taken.
    pub fn usage_sender(&self) -> Option<oneshot::Sender<Usage>> {
        self.usage.lock().ok()?.take()
    }
    /// Records progress (0 to 1) and, when given, a new stage. `Abandoned` once the job is no
    /// longer this attempt's, so the executor can stop.
    pub async fn report(&self, progress: f64, stage: Option<&str>) -> Result<(), Failure> {
        match crate::queue::report(self.db, self.job, Some(progress), stage).await {
            Ok(true) => Ok(()),
            Ok(false) => Err(Failure::Abandoned),
            // A failed progress write does not fail the run.
            Err(err) => {
                tracing::warn!(job.id = %self.job.id, error = %err, "recording progress failed");
                Ok(())
            }
        }
    }
}

/// An input's content as text: pasted, or read from its stored file.
async fn text_input(files: &Files, job: &job::Model, name: &str) -> Result<String, Failure> {
    let input = Prepared::from_stored(&job.inputs, &job.settings)
        .inputs
        .remove(name)
        .ok_or_else(|| Failure::Permanent(format!("the input `{name}` is missing")))?;
    match (input.text, input.file_id) {
        (Some(text), _) => Ok(text),
        (None, Some(file_id)) => files
            .read_text(&files::input_key(job.workspace_id, job.id, file_id))
            .await
            .map_err(|err| Failure::Transient(format!("reading the input `{name}`: {err:#}"))),
        (None, None) => Err(Failure::Permanent(format!("the input `{name}` is missing"))),
    }
}

/// Stores one output of a built-in analysis under the attempt's output folder.
async fn store_output(
    files: &Files,
    job: &job::Model,
    name: &str,
    content_type: &str,
    bytes: Vec<u8>,
) -> Result<NewFile, Failure> {
    let key = format!(
        "{}/{}",
        files::output_prefix(job.workspace_id, job.id, job.attempt),
        uuid::Uuid::now_v7().simple()
    );
    files
        .store_bytes(key, name, content_type, bytes)
        .await
        .map_err(|err| Failure::Transient(format!("storing the output {name}: {}", err.describe())))
}

fn setting_u64(job: &job::Model, name: &str, default: u64) -> u64 {
    job.settings
        .get(name)
        .and_then(Value::as_u64)
        .unwrap_or(default)
}

/// Runs one attempt of a job with its tool's executor.
pub async fn run(
    tool: &Tool,
    job: &job::Model,
    progress: &Progress<'_>,
    places: &Places,
    files: &Files,
) -> Result<Output, Failure> {
    let executor = tool.executor.as_ref().ok_or_else(|| {
        Failure::Permanent(format!("the tool `{}` declares no executor", tool.name))
    })?;
    if executor.kind == "command" {
        return command::run(executor, job, progress, places, files).await;
    }
    if executor.kind != "builtin" {
        return Err(Failure::Permanent(format!(
            "the executor kind `{}` is not available on this worker",
            executor.kind
        )));
    }
    let function = executor
        .options
        .get("function")
        .and_then(Value::as_str)
        .unwrap_or(&tool.name);
    let result = |result| Output {
        result,
        files: Vec::new(),
    };
    match function {
        "noop" => Ok(result(json!({}))),
        "sleep" => sleep(job, progress).await.map(result),
        "flaky" => flaky(job).map(result),
        "sequence_stats" | "kmer_count" | "translate_dna" => {
            let fasta = text_input(files, job, "sequences").await?;
            let settings = job.clone();
            let function = function.to_owned();
            progress.report(0.1, Some("Analysing")).await?;
            let analysis = function.clone();
            let value = tokio::task::spawn_blocking(move || match analysis.as_str() {
                "sequence_stats" => builtin::sequence_stats(
                    &fasta,
                    setting_u64(&settings, "min_length", 0) as usize,
                ),
                "kmer_count" => builtin::kmer_count(
                    &fasta,
                    setting_u64(&settings, "k", 4) as usize,
                    setting_u64(&settings, "top", 20) as usize,
                ),
                _ => builtin::translate_dna(
                    &fasta,
                    setting_u64(&settings, "frame", 1) as usize,
                    settings
                        .settings
                        .get("stop_at_first_stop")
                        .and_then(Value::as_bool)
                        .unwrap_or(false),
                ),
            })
            .await
            .map_err(|err| Failure::Transient(format!("the analysis crashed: {err}")))?;
            progress.report(0.9, Some("Writing outputs")).await?;
            let mut stored = Vec::new();
            for (name, content_type, bytes) in builtin::output_files(&function, &value) {
                match store_output(files, job, name, content_type, bytes).await {
                    Ok(file) => stored.push(file),
                    Err(failure) => {
                        files.discard(&stored).await;
                        return Err(failure);
                    }
                }
            }
            Ok(Output {
                result: value,
                files: stored,
            })
        }
        other => Err(Failure::Permanent(format!(
            "no built-in function `{other}`"
        ))),
    }
}

/// Waits `seconds`, walking through the named stages and reporting progress.
async fn sleep(job: &job::Model, progress: &Progress<'_>) -> Result<Value, Failure> {
    let seconds = job
        .settings
        .get("seconds")
        .and_then(Value::as_f64)
        .unwrap_or(5.0)
        .max(0.0);
    let stages: Vec<String> = job
        .settings
        .get("stages")
        .and_then(Value::as_array)
        .map(|stages| {
            stages
                .iter()
                .filter_map(|s| s.as_str().map(str::to_owned))
                .collect()
        })
        .filter(|stages: &Vec<String>| !stages.is_empty())
        .unwrap_or_else(|| vec!["Working".to_owned()]);
    let per_stage = Duration::from_secs_f64(seconds / stages.len() as f64);
    let note = job.inputs.get("note").and_then(|n| n.get("text")).cloned();
    for (i, stage) in stages.iter().enumerate() {
        progress
            .report(i as f64 / stages.len() as f64, Some(stage))
            .await?;
        tokio::time::sleep(per_stage).await;
    }
    Ok(json!({ "slept": seconds, "stages": stages, "note": note }))
}

/// A test aid: fails its first `fail_attempts` attempts, transiently unless `permanent`.
fn flaky(job: &job::Model) -> Result<Value, Failure> {
    let failing = setting_u64(job, "fail_attempts", 1);
    if (job.attempt as u64) <= failing {
        let message = format!("attempt {} failed on purpose", job.attempt);
        let permanent = job
            .settings
            .get("permanent")
            .and_then(Value::as_bool)
            .unwrap_or(false);
        return Err(if permanent {
            Failure::Permanent(message)
        } else {
            Failure::Transient(message)
        });
    }
    Ok(json!({ "succeededOnAttempt": job.attempt }))
}
