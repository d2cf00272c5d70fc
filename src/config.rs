//! Configuration: flags and environment variables, read and checked once at start.

use entity::ids::JobId;
use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{Context as _, bail};
use clap::Args;

/// Where the data lives. Shared by every command.
#[derive(Args, Debug, Clone)]
pub struct DatabaseConfig {
    /// Folder for the embedded SQLite database and stored files.
    #[arg(
        long,
        env = "JOBGRAPH_DATA_DIR",
        default_value = "./data",
        global = true
    )]
    pub data_dir: PathBuf,

    /// Database URL: `postgres://user@host/db` for PostgreSQL, `sqlite://path?mode=rwc` for
    /// SQLite. Default: a SQLite file in the data directory.
    #[arg(long, env = "DATABASE_URL", global = true)]
    pub database_url: Option<String>,

    /// The most database connections this process opens for its work (from 1 to 1,000).
    /// Default: 32 on PostgreSQL, 8 on SQLite. An API process on PostgreSQL opens one more
    /// for `LISTEN`, and a worker pool one more. Size it so that every process together stays
    /// within the server's `max_connections`; a few per core of the database is often the
    /// fastest.
    #[arg(
        long,
        env = "JOBGRAPH_DB_POOL_SIZE",
        global = true,
        value_parser = clap::value_parser!(u32).range(1..=1000)
    )]
    pub db_pool_size: Option<u32>,
}

impl DatabaseConfig {
    /// Makes the data directory absolute, once, at start: programs of command tools run in
    /// their own working directory, where a relative path given to them would name nothing.
    pub fn validate(&mut self) -> anyhow::Result<()> {
        self.data_dir = std::path::absolute(&self.data_dir).with_context(|| {
            format!(
                "--data-dir `{}` cannot be made absolute",
                self.data_dir.display()
            )
        })?;
        Ok(())
    }

    /// The database URL in effect.
    pub fn url(&self) -> String {
        self.database_url
            .clone()
            .filter(|url| !url.trim().is_empty())
            .unwrap_or_else(|| crate::db::default_sqlite_url(&self.data_dir))
    }
}

/// Where traces go. Shared by every command that serves or works.
#[derive(Args, Debug, Clone, Default)]
pub struct TraceConfig {
    /// An OpenTelemetry collector's OTLP/HTTP base URL (`http://collector:4318`): spans of
    /// requests, GraphQL operations, database work and job runs are sent to its `/v1/traces`.
    /// Default: `OTEL_EXPORTER_OTLP_ENDPOINT`, else no traces at all.
    #[arg(long, env = "JOBGRAPH_OTLP_ENDPOINT", global = true)]
    pub otlp_endpoint: Option<String>,

    /// The `service.name` the spans carry.
    #[arg(
        long,
        env = "OTEL_SERVICE_NAME",
        default_value = "jobgraph",
        global = true
    )]
    pub otlp_service_name: String,
}

impl TraceConfig {
    /// Takes the standard `OTEL_EXPORTER_OTLP_ENDPOINT` when no endpoint was given, and checks
    /// the endpoint.
    pub fn validate(&mut self) -> anyhow::Result<()> {
        if self.otlp_endpoint.is_none() {
            self.otlp_endpoint = std::env::var("OTEL_EXPORTER_OTLP_ENDPOINT").ok();
        }
        self.otlp_endpoint = self
            .otlp_endpoint
            .take()
            .filter(|endpoint| !endpoint.trim().is_empty());
        if let Some(endpoint) = &self.otlp_endpoint {
            let url = url::Url::parse(endpoint)
                .with_context(|| format!("--otlp-endpoint `{endpoint}` is not a URL"))?;
            if !matches!(url.scheme(), "http" | "https") {
                bail!("--otlp-endpoint must start with http:// or https://, got `{endpoint}`");
            }
        }
        Ok(())
    }
}

/// How the server runs.
#[derive(Args, Debug, Clone)]
pub struct ServerConfig {
    /// Address to listen on.
    #[arg(long, env = "JOBGRAPH_LISTEN", default_value = "127.0.0.1:8000")]
    pub listen: SocketAddr,

    /// Base URL under which users reach this server, for links. Default: from --listen.
    #[arg(long, env = "JOBGRAPH_PUBLIC_URL")]
    pub public_url: Option<String>,

    /// E-mail of the platform administrator created on first start.
    #[arg(long, env = "JOBGRAPH_ADMIN_EMAIL", default_value = "admin@localhost")]
    pub admin_email: String,

    /// A TOML file declaring the tools on offer. Default: the built-in tools.
    #[arg(long, env = "JOBGRAPH_TOOLS_FILE")]
    pub tools_file: Option<PathBuf>,

    /// Jobs this process runs at once; 0 serves the API only.
    #[arg(long, env = "JOBGRAPH_WORKERS", default_value_t = 2)]
    pub workers: usize,

    /// Seconds a running job's lease holds without a heartbeat; a worker that dies leaves its
    /// jobs to be reclaimed after this.
    #[arg(long, env = "JOBGRAPH_LEASE_SECONDS", default_value_t = 30)]
    pub lease_seconds: u64,

    /// Jobs of one workspace that run at once, across every worker on the database, so that
    /// one workspace's long queue does not hold every worker while another's job waits; 0 for
    /// no limit. Each tool may also set its own `max_running`.
    #[arg(long, env = "JOBGRAPH_WORKSPACE_MAX_RUNNING", default_value_t = 0)]
    pub workspace_max_running: u32,

    /// The `jobgraph` program that supervises each program a command tool runs: it ends the
    /// program, with all it started, when the worker goes away, and measures what the program
    /// alone used. Default: this program.
    #[arg(long, env = "JOBGRAPH_SUPERVISOR")]
    pub supervisor: Option<PathBuf>,

    /// Seconds a stopping worker lets its running jobs finish; it then stops the rest and hands
    /// them back to the queue.
    #[arg(long, env = "JOBGRAPH_GRACE_SECONDS", default_value_t = 10)]
    pub grace_seconds: u64,

    /// Largest accepted request body, in bytes.
    #[arg(long, env = "JOBGRAPH_MAX_BODY_BYTES", default_value_t = 1024 * 1024)]
    pub max_body_bytes: usize,

    /// Deepest accepted query nesting.
    #[arg(long, env = "JOBGRAPH_MAX_QUERY_DEPTH", default_value_t = 15)]
    pub max_query_depth: usize,

    /// Highest accepted query complexity (each field counts 1, a list field times its `first`).
    #[arg(long, env = "JOBGRAPH_MAX_QUERY_COMPLEXITY", default_value_t = 5000)]
    pub max_query_complexity: usize,

    /// A JSON file of trusted documents (an Apollo persisted query manifest, or a map of id to
    /// document): only these run, named by id or sent as they are. Default: any document runs,
    /// and clients may persist theirs by hash (automatic persisted queries).
    #[arg(long, env = "JOBGRAPH_TRUSTED_DOCUMENTS")]
    pub trusted_documents: Option<PathBuf>,

    /// A secret that `/metrics` requires as `Authorization: Bearer <secret>` (give it to the
    /// Prometheus scrape job). Default: `/metrics` is open.
    #[arg(long, env = "JOBGRAPH_METRICS_TOKEN", hide_env_values = true)]
    pub metrics_token: Option<String>,

    /// An OpenID Connect issuer (`https://login.lab.org/realms/lab`) whose JWTs sign users in,
    /// beside API tokens: its discovery document and keys are fetched from it.
    #[arg(long, env = "JOBGRAPH_OIDC_ISSUER")]
    pub oidc_issuer: Option<String>,

    /// The audience the issuer's tokens must be for (`aud`): the client id of your frontend or
    /// API at the issuer. Required with --oidc-issuer.
    #[arg(long, env = "JOBGRAPH_OIDC_AUDIENCE")]
    pub oidc_audience: Option<String>,

    /// The claim that names the user: `email`, or `sub` (linked by `email` when first seen).
    #[arg(
        long,
        env = "JOBGRAPH_OIDC_USER_CLAIM",
        value_enum,
        default_value = "email"
    )]
    pub oidc_user_claim: crate::users::oidc::UserClaim,

    /// Whether someone signing in for the first time becomes a user; with `false`, only users
    /// that exist (created or invited) sign in.
    #[arg(long, env = "JOBGRAPH_OIDC_CREATE_USERS", default_value_t = true, action = clap::ArgAction::Set)]
    pub oidc_create_users: bool,

    /// Seconds a checked API token, and a user's role in a workspace, are trusted without
    /// another lookup. Token revocations and member changes by any process are seen as soon as
    /// the live event log brings them (within a second), so this bounds only what the log cannot
    /// tell, such as a token that expired; 0 checks every request.
    #[arg(long, env = "JOBGRAPH_AUTH_CACHE_SECONDS", default_value_t = 5)]
    pub auth_cache_seconds: u64,

    /// Where stored files go: `local` (the data directory's `files/`) or `s3://bucket[/prefix]`
    /// for S3-compatible object storage.
    #[arg(long, env = "JOBGRAPH_STORAGE", default_value = "local")]
    pub storage: String,

    /// The S3 endpoint, for S3-compatible servers other than AWS (`http://` is allowed).
    #[arg(long, env = "JOBGRAPH_S3_ENDPOINT")]
    pub s3_endpoint: Option<String>,

    /// The S3 region.
    #[arg(long, env = "JOBGRAPH_S3_REGION", default_value = "us-east-1")]
    pub s3_region: String,

    /// The S3 access key id.
    #[arg(long, env = "AWS_ACCESS_KEY_ID", hide_env_values = true)]
    pub s3_access_key_id: Option<String>,

    /// The S3 secret access key.
    #[arg(long, env = "AWS_SECRET_ACCESS_KEY", hide_env_values = true)]
    pub s3_secret_access_key: Option<String>,

    /// Largest uploaded file, in bytes (a tool's input may set a lower limit).
    #[arg(long, env = "JOBGRAPH_MAX_UPLOAD_BYTES", default_value_t = 100 * 1024 * 1024)]
    pub max_upload_bytes: u64,

    /// Most files in one request.
    #[arg(long, env = "JOBGRAPH_MAX_UPLOAD_FILES", default_value_t = 16)]
    pub max_upload_files: usize,

    /// Largest input fetched from a URL, in bytes (a tool's input may set a lower limit).
    #[arg(long, env = "JOBGRAPH_MAX_FETCH_BYTES", default_value_t = 100 * 1024 * 1024)]
    pub max_fetch_bytes: u64,

    /// Seconds a URL fetch may take, from connecting to the last byte.
    #[arg(long, env = "JOBGRAPH_FETCH_TIMEOUT_SECONDS", default_value_t = 60)]
    pub fetch_timeout_seconds: u64,

    /// Addresses URL fetches may reach although they are loopback, private or link-local:
    /// comma-separated IPs or CIDR blocks (`127.0.0.1,10.0.0.0/8`). Default: none.
    #[arg(long, env = "JOBGRAPH_FETCH_ALLOW", value_delimiter = ',')]
    pub fetch_allow: Vec<String>,

    /// Seconds a websocket may stay open without `connection_init` (then closed with 4408).
    #[arg(long, env = "JOBGRAPH_WS_INIT_TIMEOUT_SECONDS", default_value_t = 10)]
    pub ws_init_timeout_seconds: u64,

    /// Seconds between the server's keepalive pings on a websocket.
    #[arg(long, env = "JOBGRAPH_WS_KEEPALIVE_SECONDS", default_value_t = 15)]
    pub ws_keepalive_seconds: u64,

    /// Operations one websocket may run at once.
    #[arg(long, env = "JOBGRAPH_WS_MAX_SUBSCRIPTIONS", default_value_t = 100)]
    pub ws_max_subscriptions: usize,

    /// Origins of the web pages that may call the API from a browser, comma-separated
    /// (`https://app.lab.org,http://localhost:5173`), or `*` for any page (for APIs
    /// authenticated by tokens only). They get CORS headers, and may open websockets. Default:
    /// none; responses carry no CORS headers and only the server's own pages open websockets.
    #[arg(long, env = "JOBGRAPH_CORS_ORIGINS", value_delimiter = ',')]
    pub cors_origins: Vec<String>,

    /// Lets the listed origins send credentials (cookies, TLS client certificates) with their
    /// requests. Not with `--cors-origins '*'`.
    #[arg(long, env = "JOBGRAPH_CORS_ALLOW_CREDENTIALS")]
    pub cors_allow_credentials: bool,

    /// Seconds a browser may keep a preflight's answer.
    #[arg(long, env = "JOBGRAPH_CORS_MAX_AGE", default_value_t = 600)]
    pub cors_max_age: u64,

    /// The frontend's page of a job, with `{id}` where the job's id goes
    /// (`https://app.lab.org/jobs/{id}`): the link `Job.url` gives. Default: this server's
    /// `/jobs/{id}`, which serves the job's record as JSON.
    #[arg(long, env = "JOBGRAPH_JOB_URL_TEMPLATE")]
    pub job_url_template: Option<String>,
    #[command(flatten)]
    pub rate_limits: RateLimitConfig,
    #[command(flatten)]
    pub webhooks: WebhookConfig,
}

/// How webhook events are delivered.
#[derive(Args, Debug, Clone)]
pub struct WebhookConfig {
    /// The waits before each retry of a failed delivery, comma-separated (`5s,5m,30m,2h`, units
    /// `ms`, `s`, `m`, `h`). After the last retry fails the delivery is FAILED and its
    /// endpoint disabled.
    #[arg(
        long,
        env = "JOBGRAPH_WEBHOOK_RETRY_SCHEDULE",
        default_value = "5s,5m,30m,2h,5h,10h,10h"
    )]
    pub webhook_retry_schedule: RetrySchedule,

    /// Seconds an endpoint has to answer a delivery, from connecting to the last byte.
    #[arg(long, env = "JOBGRAPH_WEBHOOK_TIMEOUT_SECONDS", default_value_t = 15)]
    pub webhook_timeout_seconds: u64,

    /// Deliveries this process sends to one endpoint at once.
    #[arg(long, env = "JOBGRAPH_WEBHOOK_CONCURRENCY", default_value_t = 4)]
    pub webhook_concurrency: usize,
}

impl WebhookConfig {
    fn validate(&self) -> anyhow::Result<()> {
        if !(1..=600).contains(&self.webhook_timeout_seconds) {
            bail!("--webhook-timeout-seconds must be from 1 to 600");
        }
        if !(1..=64).contains(&self.webhook_concurrency) {
            bail!("--webhook-concurrency must be from 1 to 64");
        }
        Ok(())
    }
}

/// The waits before each retry of a webhook delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetrySchedule(pub Vec<std::time::Duration>);

impl std::str::FromStr for RetrySchedule {
    type Err = String;

    /// Reads `5s,5m,30m,2h`: durations in `ms`, `s`, `m` or `h`; empty for no retries.
    fn from_str(text: &str) -> Result<Self, String> {
        let mut waits = Vec::new();
        for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let wrong = || format!("`{part}` is not a duration: write `500ms`, `5s`, `5m` or `2h`");
            let split = part.find(|c: char| !c.is_ascii_digit()).ok_or_else(wrong)?;
            let (count, unit) = part.split_at(split);
            let count: u64 = count.parse().map_err(|_| wrong())?;
            let millis = match unit {
                "ms" => 1,
                "s" => 1000,
                "m" | "min" => 60_000,
                "h" => 3_600_000,
                _ => return Err(wrong()),
            };
            if count > 48 * 3_600_000 / millis {
                return Err(format!("`{part}`: a wait may be at most 48h"));
            }
            waits.push(std::time::Duration::from_millis(count * millis));
        }
        if waits.len() > 20 {
            return Err("at most 20 retries".to_owned());
        }
        Ok(RetrySchedule(waits))
    }
}

/// Rate limits: how many requests each API token, and each address without a token, may make.
/// Off unless `--rate-limit` or `--anonymous-rate-limit` is given.
#[derive(Args, Debug, Clone)]
pub struct RateLimitConfig {
    /// Requests each API token may make: `N/s`, `N/min` or `N/h`, refilled steadily at that
    /// rate, up to `--rate-limit-burst` at once. 0 or absent: no limit.
    #[arg(long, env = "JOBGRAPH_RATE_LIMIT")]
    pub rate_limit: Option<Rate>,

    /// Requests each client address may make without a token (or with a bad one), in the same
    /// form. Default: `--rate-limit`; 0: no limit.
    #[arg(long, env = "JOBGRAPH_ANONYMOUS_RATE_LIMIT")]
    pub anonymous_rate_limit: Option<Rate>,

    /// Requests a client may make at once after a pause: the size of its bucket. Default: the
    /// rate's N, and at least the upload cost.
    #[arg(long, env = "JOBGRAPH_RATE_LIMIT_BURST")]
    pub rate_limit_burst: Option<u32>,

    /// What a request that submits jobs or workflows (`submitJob`, `submitBatch`, `retryJob`,
    /// `duplicateJob`, `submitWorkflow`, `retryWorkflow`, `duplicateWorkflow`) counts, in
    /// requests.
    #[arg(long, env = "JOBGRAPH_RATE_LIMIT_SUBMISSION_COST", default_value_t = 5)]
    pub rate_limit_submission_cost: u32,

    /// What a request with uploaded files (multipart) counts, in requests.
    #[arg(long, env = "JOBGRAPH_RATE_LIMIT_UPLOAD_COST", default_value_t = 10)]
    pub rate_limit_upload_cost: u32,

    /// Proxies in front of this server whose `--client-ip-header` names the client: IPs or
    /// CIDR blocks (`10.0.0.0/8,127.0.0.1`). Default: none, so no client can pick its address.
    #[arg(long, env = "JOBGRAPH_TRUSTED_PROXIES", value_delimiter = ',')]
    pub trusted_proxies: Vec<String>,

    /// The header in which trusted proxies name the client (each proxy appends the address it
    /// was reached from).
    #[arg(
        long,
        env = "JOBGRAPH_CLIENT_IP_HEADER",
        default_value = "X-Forwarded-For"
    )]
    pub client_ip_header: String,
}

impl RateLimitConfig {
    /// The limit of API tokens, if on.
    pub fn tokens(&self) -> Option<Rate> {
        self.rate_limit.filter(|rate| rate.count > 0)
    }

    /// The limit of addresses without a token, if on.
    pub fn addresses(&self) -> Option<Rate> {
        self.anonymous_rate_limit
            .or(self.rate_limit)
            .filter(|rate| rate.count > 0)
    }

    /// The bucket size of `rate`.
    pub fn burst(&self, rate: Rate) -> u32 {
        self.rate_limit_burst.unwrap_or_else(|| {
            rate.count
                .max(self.rate_limit_upload_cost)
                .max(self.rate_limit_submission_cost)
        })
    }

    fn validate(&self) -> anyhow::Result<()> {
        if self.rate_limit_submission_cost == 0 || self.rate_limit_upload_cost == 0 {
            bail!("--rate-limit-submission-cost and --rate-limit-upload-cost must be at least 1");
        }
        for rate in [self.tokens(), self.addresses()].into_iter().flatten() {
            let burst = self.burst(rate);
            let cost = self
                .rate_limit_upload_cost
                .max(self.rate_limit_submission_cost);
            if burst < cost {
                bail!(
                    "--rate-limit-burst ({burst}) must be at least the largest cost ({cost}): a \
                     request costing more could never pass"
                );
            }
        }
        for entry in &self.trusted_proxies {
            crate::files::fetch::Cidr::parse(entry)
                .with_context(|| format!("--trusted-proxies `{entry}`"))?;
        }
        axum::http::HeaderName::try_from(self.client_ip_header.as_str())
            .with_context(|| format!("--client-ip-header `{}`", self.client_ip_header))?;
        Ok(())
    }
}

/// A rate: `count` requests every `per`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    pub count: u32,
    pub per: std::time::Duration,
}

impl Rate {
    /// How long one request takes to be refilled.
    pub fn interval(self) -> std::time::Duration {
        self.per / self.count.max(1)
    }
}

impl std::str::FromStr for Rate {
    type Err = String;

    /// Reads `N/s`, `N/min` or `N/h` (a bare `N` is per second); 0 is no limit.
    fn from_str(text: &str) -> Result<Self, String> {
        let text = text.trim();
        let wrong = || format!("`{text}` is not a rate: write `N/s`, `N/min` or `N/h`, or 0");
        let (count, unit) = text.split_once('/').unwrap_or((text, "s"));
        let count: u32 = count.trim().parse().map_err(|_| wrong())?;
        let seconds = match unit.trim() {
            "s" | "sec" | "second" => 1,
            "min" | "m" | "minute" => 60,
            "h" | "hour" => 3600,
            _ => return Err(wrong()),
        };
        if count > 1_000_000 {
            return Err(format!("`{text}`: at most 1000000 requests per unit"));
        }
        Ok(Rate {
            count,
            per: std::time::Duration::from_secs(seconds),
        })
    }
}

impl ServerConfig {
    /// Checks the values together; fails with what to fix.
    pub fn validate(&self) -> anyhow::Result<()> {
        if let Some(url) = &self.public_url
            && !(url.starts_with("http://") || url.starts_with("https://"))
        {
            bail!("--public-url must start with http:// or https://, got `{url}`");
        }
        crate::users::normalize_email(&self.admin_email)
            .map_err(|err| anyhow::anyhow!("{err}"))
            .context("--admin-email")?;
        if self.max_body_bytes < 1024 {
            bail!("--max-body-bytes must be at least 1024");
        }
        if self.lease_seconds < 3 {
            bail!("--lease-seconds must be at least 3");
        }
        if self.storage != "local" && !self.storage.starts_with("s3://") {
            bail!(
                "--storage must be `local` or `s3://bucket[/prefix]`, got `{}`",
                self.storage
            );
        }
        for entry in &self.fetch_allow {
            crate::files::fetch::Cidr::parse(entry)
                .with_context(|| format!("--fetch-allow `{entry}`"))?;
        }
        if self.max_upload_files == 0 || self.fetch_timeout_seconds == 0 {
            bail!("--max-upload-files and --fetch-timeout-seconds must be positive");
        }
        // The multipart reader's whole-request limit is their product.
        if self.max_upload_files > 1000 || self.max_upload_bytes > 1 << 40 {
            bail!("--max-upload-files may be at most 1000 and --max-upload-bytes at most 1 TiB");
        }
        if self.ws_init_timeout_seconds == 0 || self.ws_keepalive_seconds == 0 {
            bail!("--ws-init-timeout-seconds and --ws-keepalive-seconds must be at least 1");
        }
        if let Some(issuer) = &self.oidc_issuer {
            let url = reqwest::Url::parse(issuer)
                .with_context(|| format!("--oidc-issuer `{issuer}` is not a URL"))?;
            let loopback = matches!(url.host_str(), Some("localhost" | "127.0.0.1" | "[::1]"));
            if !(url.scheme() == "https" || (url.scheme() == "http" && loopback)) {
                bail!("--oidc-issuer must be an https:// URL (http:// only on this machine)");
            }
            if self.oidc_audience.as_deref().is_none_or(str::is_empty) {
                bail!("--oidc-audience is required with --oidc-issuer");
            }
        } else if self.oidc_audience.is_some() {
            bail!("--oidc-audience needs --oidc-issuer");
        }
        if self.max_query_depth < 5 || self.max_query_complexity < 100 {
            bail!("--max-query-depth must be at least 5 and --max-query-complexity at least 100");
        }
        crate::http::cors::Cors::from_config(self)?;
        if let Some(template) = &self.job_url_template {
            if !template.contains("{id}") {
                bail!(
                    "--job-url-template must contain `{{id}}`, where the job's id goes, got `{template}`"
                );
            }
            let example = template.replace("{id}", "job_0");
            let parsed = url::Url::parse(&example)
                .with_context(|| format!("--job-url-template `{template}` is not a URL"))?;
            if !matches!(parsed.scheme(), "http" | "https") {
                bail!("--job-url-template must start with http:// or https://, got `{template}`");
            }
        }
        self.webhooks.validate()?;
        self.rate_limits.validate()
    }

    /// How the identity provider's tokens are accepted, when one is configured.
    pub fn oidc(&self) -> Option<crate::users::oidc::OidcSettings> {
        Some(crate::users::oidc::OidcSettings {
            issuer: self.oidc_issuer.clone()?,
            audience: self.oidc_audience.clone()?,
            user_claim: self.oidc_user_claim,
            create_users: self.oidc_create_users,
        })
    }

    /// The supervisor of command tools' programs in effect.
    pub fn supervisor(&self) -> PathBuf {
        self.supervisor
            .clone()
            .or_else(|| std::env::current_exe().ok())
            .unwrap_or_else(|| PathBuf::from("jobgraph"))
    }

    /// The stable link that opens a job: the frontend's page of it with
    /// `--job-url-template`, else this server's `/jobs/{id}`.
    pub fn job_url(&self, job_id: JobId) -> String {
        let id = crate::ids::encode(job_id);
        match &self.job_url_template {
            Some(template) => template.replace("{id}", id.as_str()),
            None => format!("{}/jobs/{}", self.public_url(), id.as_str()),
        }
    }

    /// The base URL for links, without a trailing slash.
    pub fn public_url(&self) -> String {
        match &self.public_url {
            Some(url) => url.trim_end_matches('/').to_owned(),
            None => format!("http://{}", self.listen),
        }
    }
}

/// Everything `run` needs.
#[derive(Debug, Clone)]
pub struct Config {
    pub database: DatabaseConfig,
    pub server: ServerConfig,
}

impl Config {
    /// Checks the whole configuration and resolves its paths; fails with what to fix.
    pub fn validate(&mut self) -> anyhow::Result<()> {
        self.database.validate()?;
        self.server.validate()
    }

    /// The defaults, as `jobgraph serve` with no flags and no environment would use.
    pub fn defaults() -> Self {
        use clap::Parser;
        #[derive(Parser)]
        struct Defaults {
            #[command(flatten)]
            database: DatabaseConfig,
            #[command(flatten)]
            server: ServerConfig,
        }
        let parsed = Defaults::parse_from(["jobgraph"]);
        Config {
            database: parsed.database,
            server: parsed.server,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_retry_schedule_reads_durations_in_their_units() {
        let schedule: RetrySchedule = "500ms, 5s,5m,2h".parse().unwrap();
        assert_eq!(
            schedule.0,
            [
                Duration::from_millis(500),
                Duration::from_secs(5),
                Duration::from_secs(300),
                Duration::from_secs(7200),
            ]
        );
        assert!("".parse::<RetrySchedule>().unwrap().0.is_empty());
        for wrong in ["5", "5d", "s", "-5s", "49h", "1.5s"] {
            assert!(wrong.parse::<RetrySchedule>().is_err(), "{wrong}");
        }
    }
}
