//! jobgraph: the job layer of scientific analysis platforms, served over GraphQL.
//!
//! See `ARCHITECTURE.md` for how the modules fit together.

pub mod access;
pub mod app;
pub mod cache;
pub mod client;
pub mod config;
pub mod credits;
pub mod db;
pub mod error;
pub mod executors;
pub mod files;
pub mod graphql;
pub mod http;
pub mod ids;
pub mod jobs;
pub mod limits;
pub mod live;
pub mod metrics;
pub mod pagination;
pub mod queue;
pub mod store;
pub mod telemetry;
pub mod tools;
pub mod users;
pub mod webhooks;
pub mod workflows;
pub mod workspaces;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use app::{App, AppState};
pub use config::Config;

/// Connects, migrates and serves on `listener` until `shutdown` is cancelled.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    App::build(config).await?.serve(listener, shutdown).await
}
