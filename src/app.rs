//! The application: shared state, built once at start and cloned into every request.

use std::sync::Arc;

use sea_orm::DatabaseConnection;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::access::StandingCache;
use crate::cache::TtlCache;
use crate::config::{Config, ServerConfig};
use crate::db::QueryStats;
use crate::files::Files;
use crate::graphql::persisted::Persisted;
use crate::graphql::{self, AppSchema};
use crate::limits::RateLimits;
use crate::metrics::Metrics;
use crate::queue::runner::{Worker, WorkerConfig};
use crate::tools::Catalog;
use crate::users::oidc::Oidc;
use crate::users::tokens::TokenCache;

/// What every request handler shares.
#[derive(Clone)]
pub struct AppState {
    pub db: DatabaseConnection,
    pub config: Arc<ServerConfig>,
    pub catalog: Arc<Catalog>,
    pub schema: AppSchema,
    /// `schema` for operations that passed validation before: it checks only what depends on
    /// the variables (`graphql::documents`).
    pub validated_schema: AppSchema,
    /// The schema's types, which variables are checked against.
    pub registry: Arc<async_graphql::registry::Registry>,
    pub query_stats: Arc<QueryStats>,
    /// Wakes this process's workers: the store's signal of queued jobs (`store::queued_signal`),
    /// and the listener of other processes' on PostgreSQL.
    pub wake: Arc<Notify>,
    /// The data directory: SQLite file, stored files, working directories.
    pub data_dir: std::path::PathBuf,
    pub database_url: String,
    pub metrics: Arc<Metrics>,
    /// Recently checked API tokens.
    pub tokens: Arc<TokenCache>,
    /// The platform's identity provider, when users sign in with its tokens.
    pub oidc: Option<Arc<Oidc>>,
    /// Documents clients name by hash, and the trusted documents when only they run.
    pub persisted: Arc<Persisted>,
    /// Recently parsed GraphQL documents, by their text.
    pub documents: Arc<TtlCache<String, Arc<graphql::documents::Document>>>,
    /// Recently checked standings of users in workspaces, for requests and subscriptions.
    pub standings: Arc<StandingCache>,
    /// Stored files: uploads, downloads and outputs.
    pub files: Arc<Files>,
    /// Fans committed changes out to this process's subscriptions.
    pub bus: crate::live::Bus,
    /// Where waiting jobs stand.
    pub queue: Arc<crate::queue::waiting::Queue>,
    /// Which pages of other origins may call the API.
    pub cors: Arc<crate::http::cors::Cors>,
    /// This process's rate limits.
    pub limits: Arc<RateLimits>,
    /// Subscriptions that one execution serves for many websockets.
    pub shared: Arc<crate::http::websocket::SharedSubscriptions>,
}

impl AppState {
    pub fn new(
        mut db: DatabaseConnection,
        config: ServerConfig,
        catalog: Catalog,
        data_dir: std::path::PathBuf,
        database_url: String,
        files: Files,
        persisted: Persisted,
    ) -> Self {
        // The bus reads the event log in the background, on a connection whose statements
        // are not counted among the requests'.
        let bus_db = db.clone();
        let query_stats = crate::db::instrument(&mut db);
        let oidc = config.oidc().map(|settings| Arc::new(Oidc::new(settings)));
        let cors = crate::http::cors::Cors::from_config(&config)
            .expect("Config::validate checks the CORS settings");
        let config = Arc::new(config);
        let catalog = Arc::new(catalog);
        let wake = crate::store::queued_signal();
        let metrics = Arc::new(Metrics::new(query_stats.clone()));
        let trust = std::time::Duration::from_secs(config.auth_cache_seconds);
        let tokens = Arc::new(TokenCache::new(trust));
        let standings = Arc::new(StandingCache::new(trust));
        // Requests and subscriptions trust the same standings. Member changes and token
        // revocations the bus reads, from any process, clear the standings and tokens trusted.
        let bus = crate::live::Bus::new(
            bus_db,
            standings.clone(),
            vec![standings.clone(), tokens.clone()],
        );
        let files = Arc::new(files);
        let limits = Arc::new(RateLimits::new(&config.rate_limits).with_metrics(metrics.clone()));
        let queue = Arc::new(crate::queue::waiting::Queue::new(
            db.clone(),
            catalog.clone(),
            crate::queue::Limits::new(&catalog, Some(config.workspace_max_running)),
        ));
        // Remote workers' progress reports, written in groups as a local worker's are.
        let reports = crate::queue::reports::Reports::start(db.clone());
        let schema = |validation| {
            graphql::build(
                db.clone(),
                config.clone(),
                catalog.clone(),
                tokens.clone(),
                standings.clone(),
                bus.clone(),
            )
            .validation_mode(validation)
            .data(files.clone())
            .data(metrics.clone())
            .data(reports.clone())
            .finish()
        };
        let validated_schema = schema(async_graphql::ValidationMode::Fast);
        let schema = schema(async_graphql::ValidationMode::Strict);
        AppState {
            db,
            config,
            catalog,
            schema,
            validated_schema,
            registry: Arc::new(graphql::registry()),
            query_stats,
            wake,
            data_dir,
            database_url,
            metrics,
            tokens,
            standings,
            oidc,
            persisted: Arc::new(persisted),
            documents: Arc::new(TtlCache::new(std::time::Duration::from_secs(600))),
            files,
            bus: bus.clone(),
            queue,
            cors: Arc::new(cors),
            limits,
            shared: Arc::new(crate::http::websocket::SharedSubscriptions::new(
                bus.clone(),
            )),
        }
    }
}

/// A server ready to serve: connected and migrated.
pub struct App {
    pub state: AppState,
}

impl App {
    /// Checks the configuration, connects to the database and migrates it.
    pub async fn build(mut config: Config) -> anyhow::Result<Self> {
        config.validate()?;
        let catalog = Catalog::load(config.server.tools_file.as_deref())?;
        let files = Files::from_config(&config.server, &config.database.data_dir)?;
        let persisted = Persisted::new(config.server.trusted_documents.as_deref())?;
        let database_url = config.database.url();
        let db = crate::db::connect_with(&database_url, config.database.db_pool_size).await?;
        crate::db::migrate(&db).await?;
        Ok(App {
            state: AppState::new(
                db,
                config.server,
                catalog,
                config.database.data_dir,
                database_url,
                files,
                persisted,
            ),
        })
    }

    /// A worker over this app's database and tools.
    pub fn worker(&self) -> Worker {
        Worker {
            db: self.state.db.clone(),
            catalog: self.state.catalog.clone(),
            name: crate::queue::worker_name(),
            config: WorkerConfig {
                concurrency: self.state.config.workers,
                lease: Duration::from_secs(self.state.config.lease_seconds),
                workspace_max_running: Some(self.state.config.workspace_max_running),
                grace: Duration::from_secs(self.state.config.grace_seconds),
                ..WorkerConfig::default()
            },
            wake: self.state.wake.clone(),
            places: crate::executors::Places {
                work_root: self.state.data_dir.join("work"),
                supervisor: self.state.config.supervisor(),
            },
            metrics: self.state.metrics.clone(),
            files: self.state.files.clone(),
            listen_url: self
                .state
                .database_url
                .starts_with("postgres")
                .then(|| self.state.database_url.clone()),
        }
    }

    /// Serves HTTP on `listener`, with a worker pool unless `--workers 0`, until `shutdown`
    /// is cancelled; then finishes the requests in flight and hands unfinished jobs back.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: CancellationToken,
    ) -> anyhow::Result<()> {
        let router = crate::http::router(self.state.clone());
        let listen_url = self
            .state
            .database_url
            .starts_with("postgres")
            .then(|| self.state.database_url.clone());
        self.state
            .bus
            .start()
            .await
            .map_err(|err| anyhow::anyhow!("reading the live event log: {err}"))?;
        let bus = tokio::spawn(self.state.bus.clone().run(listen_url, shutdown.clone()));
        // Every serving process delivers webhooks; claims keep them from sending one twice.
        // Like the bus, on the connection whose statements are not counted as requests'.
        let webhooks = crate::webhooks::delivery::Deliverer {
            db: self.state.bus.db().clone(),
            bus: self.state.bus.clone(),
            allow: self.state.files.fetch.allow.clone(),
            schedule: self.state.config.webhooks.webhook_retry_schedule.0.clone(),
            timeout: Duration::from_secs(self.state.config.webhooks.webhook_timeout_seconds),
            concurrency: self.state.config.webhooks.webhook_concurrency,
            metrics: self.state.metrics.clone(),
        };
        let webhooks = tokio::spawn(webhooks.run(shutdown.clone()));
        let worker = (self.state.config.workers > 0)
            .then(|| tokio::spawn(self.worker().run(shutdown.clone())));
        let maintenance = crate::queue::maintenance::Maintenance {
            db: self.state.db.clone(),
            catalog: self.state.catalog.clone(),
            every: Duration::from_secs(1),
            local_pool: self.state.config.workers > 0,
        };
        tokio::spawn(maintenance.run(shutdown.clone()));
        tokio::spawn(self.state.limits.clone().sweep(shutdown.clone()));
        if let Some(requests) = self.state.files.take_download_requests() {
            let downloader = crate::jobs::downloads::Downloader {
                db: self.state.db.clone(),
                files: self.state.files.clone(),
                catalog: self.state.catalog.clone(),
            };
            tokio::spawn(downloader.serve(requests, shutdown.clone()));
        }
        tracing::info!(address = %listener.local_addr()?, "serving GraphQL at /graphql");
        let stopping = shutdown.clone();
        // Rate limits count a client without a token by its address.
        let router = router.into_make_service_with_connect_info::<std::net::SocketAddr>();
        axum::serve(listener, router)
            .with_graceful_shutdown(async move { stopping.cancelled().await })
            .await?;
        if let Some(worker) = worker {
            worker.await?;
        }
        bus.await?;
        webhooks.await?;
        self.state.db.clone().close().await?;
        tracing::info!("stopped");
        Ok(())
    }
}
