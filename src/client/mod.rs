//! A client of a running jobgraph server, for shells and scripts: the `jobgraph job` commands.
//! They speak GraphQL over HTTP and the websocket, as any client does, never the database.
//!
//! Exit codes (`submit --wait` and `watch` end with the job's): 0 the job COMPLETED (or the
//! command succeeded), 1 an error (usage, connection, a refusal of the server), 2 FAILED,
//! 3 CANCELLED, 4 TIMEOUT.

mod api;
mod jobs;
mod watch;

use clap::{Args, Subcommand, ValueEnum};

pub use api::{Api, Error};

/// The command succeeded, or the job COMPLETED.
pub const EXIT_OK: i32 = 0;
/// Usage, connection or server error.
pub const EXIT_ERROR: i32 = 1;
/// The job FAILED.
pub const EXIT_FAILED: i32 = 2;
/// The job was CANCELLED.
pub const EXIT_CANCELLED: i32 = 3;
/// The job ran out of time (TIMEOUT).
pub const EXIT_TIMEOUT: i32 = 4;

/// The exit code of a job that ended with `status`.
pub fn exit_code(status: &str) -> i32 {
    match status {
        "COMPLETED" => EXIT_OK,
        "FAILED" => EXIT_FAILED,
        "CANCELLED" => EXIT_CANCELLED,
        "TIMEOUT" => EXIT_TIMEOUT,
        _ => EXIT_ERROR,
    }
}

/// `jobgraph job ...`: submit, follow, list, cancel and download jobs on a running server.
#[derive(Args, Debug)]
#[command(
    after_help = "Exit codes: 0 COMPLETED (or success), 1 error (usage, connection, \
    refused by the server), 2 FAILED, 3 CANCELLED, 4 TIMEOUT; `submit --wait` and `watch` \
    end with the job's."
)]
pub struct JobArgs {
    #[command(flatten)]
    pub server: ServerArgs,

    #[command(subcommand)]
    pub command: JobCommand,
}

/// Which server, as whom, and how to print.
#[derive(Args, Debug)]
pub struct ServerArgs {
    /// The server's URL.
    #[arg(
        long,
        env = "JOBGRAPH_URL",
        default_value = "http://127.0.0.1:8000",
        global = true
    )]
    pub url: String,

    /// The API token (`jg_...`); prefer the environment, which other users' `ps` does not show.
    #[arg(long, env = "JOBGRAPH_TOKEN", hide_env_values = true, global = true)]
    pub token: Option<String>,

    /// Print JSON for scripts: one object per line.
    #[arg(long, global = true)]
    pub json: bool,
}

#[derive(Subcommand, Debug)]
pub enum JobCommand {
    /// Submit a job; prints its id.
    Submit(SubmitArgs),
    /// Follow a job until it ends, with a progress bar on a terminal; exits with its outcome.
    Watch {
        /// The job's id (`job_...`).
        id: String,
    },
    /// List jobs, newest first, as a table.
    List(ListArgs),
    /// Cancel a job; prints its status.
    Cancel {
        /// The job's id (`job_...`).
        id: String,
    },
    /// Download a job's output files; prints their paths.
    Download {
        /// The job's id (`job_...`).
        id: String,
        /// The folder to write them in, created if needed.
        #[arg(long, short, default_value = ".")]
        output: std::path::PathBuf,
    },
}

#[derive(Args, Debug)]
pub struct SubmitArgs {
    /// The tool's name, as the API's `tools { name }` lists them.
    pub tool: String,
    /// The workspace's id (`ws_...`).
    #[arg(long, env = "JOBGRAPH_WORKSPACE")]
    pub workspace: String,
    /// An input: `name=@path` uploads a file, `name=text` sends the text. Repeatable.
    #[arg(long = "input", value_name = "NAME=@FILE|NAME=TEXT", value_parser = jobs::parse_input)]
    pub inputs: Vec<jobs::Input>,
    /// A setting: `name=value`, the value read as JSON when it is JSON (`3`, `true`,
    /// `[1,2]`, `"x"`), as text otherwise. Repeatable.
    #[arg(long = "setting", value_name = "NAME=VALUE", value_parser = jobs::parse_setting)]
    pub settings: Vec<(String, serde_json::Value)>,
    /// The job's name; by default the tool's title and the time.
    #[arg(long)]
    pub name: Option<String>,
    /// Sending the same key again returns the first job, uncharged: a retried script
    /// submits once.
    #[arg(long)]
    pub idempotency_key: Option<String>,
    /// Follow the job until it ends, as `job watch`, and exit with its outcome.
    #[arg(long)]
    pub wait: bool,
}

#[derive(Args, Debug)]
pub struct ListArgs {
    /// The workspace's id (`ws_...`); by default every workspace the caller is a member of.
    #[arg(long, env = "JOBGRAPH_WORKSPACE")]
    pub workspace: Option<String>,
    /// Only jobs in these statuses (repeatable, or comma-separated).
    #[arg(long, value_enum, value_delimiter = ',', ignore_case = true)]
    pub status: Vec<Status>,
    /// Only jobs of this tool.
    #[arg(long)]
    pub tool: Option<String>,
    /// How many jobs.
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub first: u32,
}

/// A job's status, as the API names it.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum Status {
    Pending,
    Queued,
    Processing,
    Retry,
    Completed,
    Failed,
    Timeout,
    Cancelled,
}

impl Status {
    fn as_str(self) -> &'static str {
        match self {
            Status::Pending => "PENDING",
            Status::Queued => "QUEUED",
            Status::Processing => "PROCESSING",
            Status::Retry => "RETRY",
            Status::Completed => "COMPLETED",
            Status::Failed => "FAILED",
            Status::Timeout => "TIMEOUT",
            Status::Cancelled => "CANCELLED",
        }
    }
}

/// Runs a job command; returns the process's exit code. Errors are printed to stderr, with
/// the server's `extensions.code`.
pub async fn run(args: JobArgs) -> i32 {
    let ServerArgs { url, token, json } = args.server;
    let code = match Api::new(&url, token) {
        Ok(api) => match jobs::run(&api, args.command, json).await {
            Ok(code) => code,
            Err(err) => {
                eprintln!("error: {err}");
                EXIT_ERROR
            }
        },
        Err(err) => {
            eprintln!("error: {err}");
            EXIT_ERROR
        }
    };
    use std::io::Write as _;
    let _ = std::io::stdout().flush();
    code
}
