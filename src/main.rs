//! The `jobgraph` command: parses the command line, starts logging, hands off.

use anyhow::Context as _;
use clap::{CommandFactory as _, FromArgMatches as _, Parser, Subcommand};
use entity::ids::WorkspaceId;
use jobgraph::access::Viewer;
use jobgraph::config::{Config, DatabaseConfig, ServerConfig, TraceConfig};
use jobgraph::ids;
use jobgraph::{App, users};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::{EnvFilter, Layer as _};

/// mimalloc: a request allocates many small short-lived values (documents, rows, JSON), where
/// it is markedly faster than the system allocator. The binary chooses it; the library leaves
/// the choice to whoever links it.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// jobgraph: a GraphQL server for the job layer of scientific analysis platforms.
///
/// With no command, serves the API (`jobgraph serve`).
#[derive(Parser, Debug)]
#[command(name = "jobgraph", version)]
struct Cli {
    /// How log lines are written to stderr: `text` (coloured only on a terminal), or `json`, one
    /// object per line carrying the fields of the request (`request.id`) or job run (`job.id`,
    /// `attempt`) it belongs to. `RUST_LOG` chooses what is logged.
    #[arg(
        long,
        env = "JOBGRAPH_LOG_FORMAT",
        value_enum,
        default_value = "text",
        global = true
    )]
    log_format: LogFormat,

    #[command(flatten)]
    traces: TraceConfig,

    #[command(flatten)]
    database: DatabaseConfig,

    #[command(flatten)]
    server: ServerConfig,

    #[command(subcommand)]
    command: Option<Command>,
}

/// How log lines are written.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Serve the GraphQL API (the default command).
    Serve(ServerConfig),
    /// Run workers only, without the API, against the same database.
    Worker(ServerConfig),
    /// Apply pending database migrations, then exit.
    Migrate,
    /// Print the GraphQL schema (SDL).
    Schema,
    /// Manage users.
    #[command(subcommand)]
    User(UserCommand),
    /// Manage API tokens.
    #[command(subcommand)]
    Token(TokenCommand),
    /// Manage workspace credits.
    #[command(subcommand)]
    Credits(CreditsCommand),
    /// Submit, follow, list, cancel and download jobs on a running server, over its API.
    Job(jobgraph::client::JobArgs),
    /// Runs a command tool's program for a worker, which starts it (see `executors::supervise`).
    #[command(hide = true)]
    Supervise {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true, required = true)]
        command: Vec<std::ffi::OsString>,
    },
}

#[derive(Subcommand, Debug)]
enum UserCommand {
    /// Create a user; prints its id.
    Create {
        #[arg(long)]
        email: String,
        /// Display name; default: the part of the e-mail before the @.
        #[arg(long)]
        name: Option<String>,
        /// Make the user a platform administrator.
        #[arg(long)]
        admin: bool,
    },
}

#[derive(Subcommand, Debug)]
enum TokenCommand {
    /// Create an API token for a user; prints only the secret, so scripts can capture it.
    Create {
        /// The user's e-mail.
        #[arg(long)]
        email: String,
        /// What the token is for.
        #[arg(long, default_value = "command line")]
        name: String,
        /// Days until the token expires; never if omitted.
        #[arg(long)]
        expires_in_days: Option<u32>,
        /// A worker token, for a remote worker: it uses the worker API and nothing else.
        #[arg(long)]
        worker: bool,
    },
}

#[derive(Subcommand, Debug)]
enum CreditsCommand {
    /// Give credits to a workspace; prints the new balance.
    Grant {
        /// The workspace id (`ws_...`).
        #[arg(long)]
        workspace: String,
        #[arg(long)]
        amount: i64,
        #[arg(long)]
        note: Option<String>,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = parse();
    // A supervisor stays a single small process: no runtime, no logging.
    if let Some(Command::Supervise { command }) = &cli.command {
        std::process::exit(jobgraph::executors::supervise::main(command));
    }
    // A client of a server: no logging, no database; its exit code says how a job ended.
    if let Some(Command::Job(args)) = cli.command {
        let code = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("starting the runtime")?
            .block_on(jobgraph::client::run(args));
        std::process::exit(code);
    }
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?
        .block_on(run(cli))
}

/// The command line, or its error printed with exit code 1 (`--help` and `--version`: 0).
///
/// Global flags (`--log-format`, `--data-dir`, `--database-url`) may come before or after the
/// command; the server's flags given before a command are refused, since they would otherwise
/// be silently ignored (`jobgraph --workers 0 worker`): without a command they are `serve`'s.
fn parse() -> Cli {
    let fail = |err: clap::Error| -> ! {
        let _ = err.print();
        std::process::exit(if err.use_stderr() { 1 } else { 0 });
    };
    let cli = Cli::command();
    let matches = cli
        .clone()
        .try_get_matches()
        .unwrap_or_else(|err| fail(err));
    if let Some(command) = matches.subcommand_name() {
        let misplaced = cli.get_arguments().find(|arg| {
            !arg.is_global_set()
                && matches.value_source(arg.get_id().as_str())
                    == Some(clap::parser::ValueSource::CommandLine)
        });
        if let Some(arg) = misplaced {
            let flag = arg.get_long().unwrap_or_else(|| arg.get_id().as_str());
            fail(cli.clone().error(
                clap::error::ErrorKind::ArgumentConflict,
                format!(
                    "--{flag} is a flag of `serve` and `worker`, given after them \
                     (`jobgraph serve --{flag} ...`), not before `{command}`"
                ),
            ));
        }
    }
    Cli::from_arg_matches(&matches).unwrap_or_else(|err| fail(err))
}

async fn run(mut cli: Cli) -> anyhow::Result<()> {
    cli.traces.validate()?;
    let traces = jobgraph::telemetry::Traces::start(&cli.traces)?;
    start_logging(cli.log_format, traces.as_ref());
    let result = run_command(cli).await;
    if let Some(traces) = traces {
        traces.shutdown().await;
    }
    result
}

/// Logs to stderr in `format`, and spans to the OTLP exporter when traces are on.
fn start_logging(format: LogFormat, traces: Option<&jobgraph::telemetry::Traces>) {
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn,sea_orm=warn"));
    let logs = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let logs = match format {
        LogFormat::Text => logs
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .boxed(),
        LogFormat::Json => logs
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(true)
            .boxed(),
    };
    match traces {
        // The spans of traces are enabled too; they only add context to log lines. (With the
        // filter on the logs alone, a per-layer filter, some of the exporter's spans went
        // missing on the multi-threaded runtime.)
        Some(traces) => tracing_subscriber::registry()
            .with(logs)
            .with(traces.layer())
            .with(
                filter.add_directive(
                    format!("{}=debug", jobgraph::telemetry::SPANS)
                        .parse()
                        .expect("a valid directive"),
                ),
            )
            .init(),
        None => tracing_subscriber::registry()
            .with(logs)
            .with(filter)
            .init(),
    }
}

async fn run_command(cli: Cli) -> anyhow::Result<()> {
    let command = cli.command.unwrap_or(Command::Serve(cli.server));
    let mut database = cli.database;
    database.validate()?;
    match command {
        Command::Serve(server) => serve(Config { database, server }).await,
        Command::Worker(server) => work(Config { database, server }).await,
        Command::Migrate => {
            let db = jobgraph::db::connect_with(&database.url(), database.db_pool_size).await?;
            jobgraph::db::migrate(&db).await?;
            eprintln!(
                "migrations applied to {}",
                jobgraph::db::redact(&database.url())
            );
            Ok(())
        }
        Command::Schema => {
            print!("{}", jobgraph::graphql::sdl());
            Ok(())
        }
        Command::User(command) => user_command(&database, command).await,
        Command::Token(command) => token_command(&database, command).await,
        Command::Credits(command) => credits_command(&database, command).await,
        Command::Supervise { .. } | Command::Job(_) => {
            unreachable!("handled before the runtime starts")
        }
    }
}

async fn serve(config: Config) -> anyhow::Result<()> {
    let listener = TcpListener::bind(config.server.listen)
        .await
        .with_context(|| format!("listening on {}", config.server.listen))?;
    let admin_email = config.server.admin_email.clone();
    let public_url = config.server.public_url();
    let app = App::build(config).await?;
    if let Some(first) = users::bootstrap_admin(&app.state.db, &admin_email).await? {
        print_first_start(&first, &public_url);
    }
    let shutdown = CancellationToken::new();
    tokio::spawn(cancel_on_signal(shutdown.clone()));
    app.serve(listener, shutdown).await
}

fn print_first_start(first: &users::FirstAdmin, public_url: &str) {
    use std::io::Write as _;
    let secret = &first.secret;
    // Written, not printed: a closed stdout (`jobgraph serve | head -1`) must not stop the
    // server; the token can be replaced with `jobgraph token create`.
    let written = writeln!(
        std::io::stdout().lock(),
        "\nFirst start: created the platform administrator {email}.\n\
         Its API token, shown only this once (keep it, or create another with \
         `jobgraph token create --email {email}`):\n\n    {secret}\n\n\
         Try it:\n\n    curl -s {public_url}/graphql -H 'Authorization: Bearer {secret}' \\\n\
         \x20     -H 'Content-Type: application/json' -d '{{\"query\":\"{{ viewer {{ user {{ email }} }} }}\"}}'\n\n\
         Or open {public_url}/graphql in a browser and add the header\n\
         {{\"Authorization\": \"Bearer {secret}\"}} in GraphiQL's Headers tab.\n",
        email = first.user.email,
    );
    if let Err(err) = written {
        tracing::warn!(error = %err, "the first-start message could not be written to stdout");
    }
}

async fn work(config: Config) -> anyhow::Result<()> {
    anyhow::ensure!(
        config.server.workers > 0,
        "a worker needs --workers of at least 1"
    );
    let app = App::build(config).await?;
    let shutdown = CancellationToken::new();
    tokio::spawn(cancel_on_signal(shutdown.clone()));
    app.worker().run(shutdown).await;
    Ok(())
}

async fn cancel_on_signal(shutdown: CancellationToken) {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("installing the SIGTERM handler");
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
    tracing::info!("shutting down");
    shutdown.cancel();
}

async fn open(database: &DatabaseConfig) -> anyhow::Result<sea_orm::DatabaseConnection> {
    let db = jobgraph::db::connect_with(&database.url(), database.db_pool_size).await?;
    jobgraph::db::migrate(&db).await?;
    Ok(db)
}

/// Opens the database a command that works on existing data needs: a SQLite file that does not
/// exist is refused rather than created empty (a command run from another folder would
/// otherwise find nothing in a new `./data`).
async fn open_existing(database: &DatabaseConfig) -> anyhow::Result<sea_orm::DatabaseConnection> {
    let url = database.url();
    if let Some(path) = jobgraph::db::sqlite_path(&url)
        && !std::path::Path::new(path).exists()
    {
        anyhow::bail!(
            "no database at {path}: point --data-dir (or DATABASE_URL) at the server's data"
        );
    }
    open(database).await
}

async fn user_command(database: &DatabaseConfig, command: UserCommand) -> anyhow::Result<()> {
    let db = open(database).await?;
    match command {
        UserCommand::Create { email, name, admin } => {
            let user =
                users::create_user(&db, &Viewer::System, &email, name.as_deref(), admin).await?;
            println!("{}", ids::encode(user.id).as_str());
        }
    }
    Ok(())
}

async fn token_command(database: &DatabaseConfig, command: TokenCommand) -> anyhow::Result<()> {
    let db = open_existing(database).await?;
    match command {
        TokenCommand::Create {
            email,
            name,
            expires_in_days,
            worker,
        } => {
            let email = users::normalize_email(&email)?;
            let user = entity::user::Entity::find_by_email(&email)
                .one(&db)
                .await?
                .with_context(|| {
                    format!(
                        "no user has the e-mail {email} in the database at {}",
                        jobgraph::db::redact(&database.url())
                    )
                })?;
            let expires_at = expires_in_days
                .map(|days| chrono::Utc::now() + chrono::Duration::days(i64::from(days)));
            let (_, secret) = users::tokens::create(
                &db,
                &Viewer::System,
                Some(user.id),
                &name,
                if worker {
                    entity::api_token::TokenKind::Worker
                } else {
                    entity::api_token::TokenKind::User
                },
                expires_at,
            )
            .await?;
            println!("{secret}");
        }
    }
    Ok(())
}

async fn credits_command(database: &DatabaseConfig, command: CreditsCommand) -> anyhow::Result<()> {
    let db = open_existing(database).await?;
    match command {
        CreditsCommand::Grant {
            workspace,
            amount,
            note,
        } => {
            let id = ids::decode::<WorkspaceId>("--workspace", &workspace)?;
            let (_, workspace) =
                jobgraph::credits::ledger::grant(&db, &Viewer::System, id, amount, note).await?;
            println!("{}", workspace.credit_balance);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn verify_cli() {
        Cli::command().debug_assert();
    }
}
