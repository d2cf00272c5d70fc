//! The application: shared state, built once at start and cloned into every request.

use std::sync::Arc;

use sea_orm::DatabaseConnection;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::config::{Config, ServerConfig};
use crate::db::QueryStats;
use crate::graphql::{self, AppSchema};
use crate::tools::Catalog;

/// What every request handler shares.
#[derive(Clone)]
pub struct AppState {
    pub db: DatabaseConnection,
    pub config: Arc<ServerConfig>,
    pub catalog: Arc<Catalog>,
    pub schema: AppSchema,
    pub query_stats: Arc<QueryStats>,
}

impl AppState {
    pub fn new(mut db: DatabaseConnection, config: ServerConfig, catalog: Catalog) -> Self {
        let query_stats = crate::db::instrument(&mut db);
        let config = Arc::new(config);
        let catalog = Arc::new(catalog);
        let schema = graphql::build(db.clone(), config.clone(), catalog.clone());
        AppState {
            db,
            config,
            catalog,
            schema,
            query_stats,
        }
    }
}

/// A server ready to serve: connected and migrated.
pub struct App {
    pub state: AppState,
}

impl App {
    /// Checks the configuration, connects to the database and migrates it.
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        config.server.validate()?;
        let catalog = Catalog::load(config.server.tools_file.as_deref())?;
        let db = crate::db::connect(&config.database.url()).await?;
        crate::db::migrate(&db).await?;
        Ok(App {
            state: AppState::new(db, config.server, catalog),
        })
    }

    /// Serves HTTP on `listener` until `shutdown` is cancelled, then finishes the requests in
    /// flight.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: CancellationToken,
    ) -> anyhow::Result<()> {
        let router = crate::http::router(self.state.clone());
        tracing::info!(address = %listener.local_addr()?, "serving GraphQL at /graphql");
        axum::serve(listener, router)
            .with_graceful_shutdown(async move { shutdown.cancelled().await })
            .await?;
        self.state.db.clone().close().await?;
        tracing::info!("stopped");
        Ok(())
    }
}
