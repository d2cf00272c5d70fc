//! Executors: how a tool's run is carried out. A tool declares its executor in the tools file;
//! the declaration is checked into an [`ExecutorSpec`] when the file loads, and each attempt is
//! run by the spec's [`Executor`]: `builtin` (functions compiled into jobgraph) or `command`
//! (an external program). A `remote` tool is run by remote workers through the worker API,
//! never here.

pub mod builtin;
pub mod command;
pub mod supervise;

use std::path::PathBuf;
use std::sync::Mutex;

use anyhow::Context as _;
use entity::job;
use serde::Deserialize;
use serde_json::Value;
use tokio::sync::oneshot;

use crate::files::{Files, NewFile};
use crate::tools::Tool;

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

impl Output {
    /// A result with no output files.
    pub fn of(result: Value) -> Self {
        Output {
            result,
            files: Vec::new(),
        }
    }
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
    reports: &'a crate::queue::reports::Reports,
    job: &'a job::Model,
    usage: Mutex<Option<oneshot::Sender<Usage>>>,
}

impl<'a> Progress<'a> {
    /// A channel for one attempt, and where the usage of the program it starts (if any)
    /// arrives. The receiver resolves once that program is reaped, even when the attempt was
    /// stopped early (a timeout kills the program, which is reaped moments later), or as closed
    /// once this `Progress` is dropped without a program having started.
    pub fn new(
        reports: &'a crate::queue::reports::Reports,
        job: &'a job::Model,
    ) -> (Self, oneshot::Receiver<Usage>) {
        let (sender, receiver) = oneshot::channel();
        let progress = Progress {
            reports,
            job,
            usage: Mutex::new(Some(sender)),
        };
        (progress, receiver)
    }

    /// Where to send the usage of the program this attempt starts; `None` once taken.
    pub fn usage_sender(&self) -> Option<oneshot::Sender<Usage>> {
        self.usage.lock().ok()?.take()
    }
    /// Records progress (0 to 1) and, when given, a new stage, with the reports of the
    /// worker's other runs (`queue::reports`). `Abandoned` once the job is no longer this
    /// attempt's, so the executor can stop.
    pub async fn report(&self, progress: f64, stage: Option<&str>) -> Result<(), Failure> {
        match self.reports.report(self.job, Some(progress), stage).await {
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

/// One attempt of a job, as an executor receives it.
#[derive(Clone, Copy)]
pub struct Attempt<'a> {
    /// The job as claimed: its inputs, settings and attempt number.
    pub job: &'a job::Model,
    /// Where the attempt reports progress, and the usage of the program it starts.
    pub progress: &'a Progress<'a>,
    pub places: &'a Places,
    /// Where inputs are read from and outputs stored.
    pub files: &'a Files,
}

/// Carries out attempts of a tool's jobs on this process's workers.
#[async_trait::async_trait]
pub trait Executor: Send + Sync {
    /// Runs one attempt to its result, or to a failure that says whether to try again. The
    /// future is dropped when the attempt times out or the job is no longer this attempt's;
    /// an executor leaves nothing running then.
    async fn run(&self, attempt: &Attempt<'_>) -> Result<Output, Failure>;
}

/// How a tool runs, as its declaration in the tools file was checked when the file loaded.
#[derive(Debug, Clone)]
pub enum ExecutorSpec {
    /// A function compiled into jobgraph.
    Builtin(builtin::Function),
    /// An external program, under a supervisor.
    Command(command::CommandSpec),
    /// Run by remote workers, through the worker API.
    Remote,
}

/// An executor as the tools file declares it, before its checks.
#[derive(Debug, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
enum Declared {
    Builtin {
        /// The function's name; the tool's own name when absent.
        function: Option<String>,
    },
    Command(command::CommandSpec),
    Remote {},
}

impl ExecutorSpec {
    /// Checks the executor a tools file declares for the tool `tool`: its kind, its options,
    /// and the built-in function or program it names.
    pub fn declared(declaration: toml::Value, tool: &str) -> anyhow::Result<Self> {
        let declared: Declared = declaration
            .try_into()
            .with_context(|| format!("tool `{tool}`: the executor is not valid"))?;
        let spec = match declared {
            Declared::Builtin { function } => {
                let function = builtin::Function::named(function.as_deref().unwrap_or(tool))
                    .map_err(|why| anyhow::anyhow!("tool `{tool}`: {why}"))?;
                ExecutorSpec::Builtin(function)
            }
            Declared::Command(command) => {
                command
                    .check()
                    .map_err(|why| anyhow::anyhow!("tool `{tool}`: {why}"))?;
                ExecutorSpec::Command(command)
            }
            Declared::Remote {} => ExecutorSpec::Remote,
        };
        Ok(spec)
    }

    /// The executor that runs this tool on jobgraph's own workers; none for a remote tool.
    pub fn local(&self) -> Option<&dyn Executor> {
        match self {
            ExecutorSpec::Builtin(function) => Some(function),
            ExecutorSpec::Command(command) => Some(command),
            ExecutorSpec::Remote => None,
        }
    }
}

/// Runs one attempt of a job with its tool's executor.
pub async fn run(
    tool: &Tool,
    job: &job::Model,
    progress: &Progress<'_>,
    places: &Places,
    files: &Files,
) -> Result<Output, Failure> {
    let spec = tool.executor.as_ref().ok_or_else(|| {
        Failure::Permanent(format!("the tool `{}` declares no executor", tool.name))
    })?;
    let executor = spec.local().ok_or_else(|| {
        Failure::Permanent("the executor kind `remote` is not available on this worker".to_owned())
    })?;
    let attempt = Attempt {
        job,
        progress,
        places,
        files,
    };
    executor.run(&attempt).await
}
