//! Connecting to the database (SQLite or PostgreSQL), migrating it, and write transactions.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use migration::{Migrator, MigratorTrait};
use sea_orm::sqlx::sqlite::{SqliteJournalMode, SqliteSynchronous};
use sea_orm::{
    ConnectOptions, ConnectionTrait, Database, DatabaseBackend, DatabaseConnection,
    DatabaseTransaction, DbErr, ExecResult, QueryResult, SqliteTransactionMode, Statement,
    TransactionOptions, TransactionTrait,
};

/// The SQLite database used when no URL is configured.
pub fn default_sqlite_url(data_dir: &Path) -> String {
    format!(
        "sqlite://{}?mode=rwc",
        data_dir.join("jobgraph.db").display()
    )
}

/// The most connections a pool to PostgreSQL opens unless told otherwise (`--db-pool-size`).
const DEFAULT_POOL_SIZE_POSTGRES: u32 = 32;
/// The same for SQLite, which has one writer at a time.
const DEFAULT_POOL_SIZE_SQLITE: u32 = 8;

/// Opens a pool of the default size to `url`, creating a SQLite file (and its folder) when
/// needed.
pub async fn connect(url: &str) -> anyhow::Result<DatabaseConnection> {
    connect_with(url, None).await
}

/// Opens a pool of up to `pool_size` connections to `url` (the default for its database when
/// `None`), creating a SQLite file (and its folder) when needed.
pub async fn connect_with(url: &str, pool_size: Option<u32>) -> anyhow::Result<DatabaseConnection> {
    let mut options = ConnectOptions::new(url.to_owned());
    options
        .sqlx_logging(false)
        // A dead connection fails its statement and is replaced; pinging each one before every
        // use would double the round trips of a request.
        .test_before_acquire(false)
        .connect_timeout(Duration::from_secs(10))
        .acquire_timeout(Duration::from_secs(30));
    if url.starts_with("sqlite:") {
        let parent = sqlite_path(url)
            .and_then(|path| Path::new(path).parent())
            .filter(|parent| !parent.as_os_str().is_empty());
        if let Some(parent) = parent {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("creating the data directory {}", parent.display()))?;
        }
        // WAL lets readers run beside the one writer; writers queue on the busy timeout.
        options
            .max_connections(pool_size.unwrap_or(DEFAULT_POOL_SIZE_SQLITE))
            .map_sqlx_sqlite_opts(|opts| {
                opts.journal_mode(SqliteJournalMode::Wal)
                    .synchronous(SqliteSynchronous::Normal)
                    .busy_timeout(Duration::from_secs(30))
                    .foreign_keys(true)
                    .create_if_missing(true)
            });
    } else {
        options.max_connections(pool_size.unwrap_or(DEFAULT_POOL_SIZE_POSTGRES));
    }
    let db = Database::connect(options)
        .await
        .with_context(|| format!("connecting to the database at {}", redact(url)))?;
    Ok(db)
}

/// How a pool's connections are used at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolUse {
    /// Open and idle.
    pub idle: u32,
    /// Open and lent to a statement or transaction.
    pub used: u32,
    /// The most the pool opens.
    pub max: u32,
}

/// How `db`'s pool is used now.
pub fn pool_use(db: &DatabaseConnection) -> PoolUse {
    fn of<D: sea_orm::sqlx::Database>(pool: &sea_orm::sqlx::Pool<D>) -> PoolUse {
        let idle = u32::try_from(pool.num_idle()).unwrap_or(u32::MAX);
        PoolUse {
            idle,
            used: pool.size().saturating_sub(idle),
            max: pool.options().get_max_connections(),
        }
    }
    match db.get_database_backend() {
        DatabaseBackend::Sqlite => of(db.get_sqlite_connection_pool()),
        _ => of(db.get_postgres_connection_pool()),
    }
}

/// The file a SQLite URL names, if it names one.
pub fn sqlite_path(url: &str) -> Option<&str> {
    let rest = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))?;
    let path = rest.split('?').next()?;
    (!path.is_empty() && path != ":memory:").then_some(path)
}

/// The URL with its password hidden, for messages.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            let credentials = &url[scheme_end + 3..at];
            match credentials.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..scheme_end + 3], &url[at..]),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

/// Counts of the statements a connection pool ran: for metrics, and for tests that check a
/// request costs a constant number of queries.
#[derive(Debug, Default)]
pub struct QueryStats {
    count: AtomicU64,
    micros: AtomicU64,
}

impl QueryStats {
    /// Statements run so far.
    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    /// Time spent in them, in microseconds.
    pub fn micros(&self) -> u64 {
        self.micros.load(Ordering::Relaxed)
    }
}

/// Makes `db` count its statements. Call before cloning the connection: clones share it.
pub fn instrument(db: &mut DatabaseConnection) -> Arc<QueryStats> {
    let stats = Arc::new(QueryStats::default());
    let counter = stats.clone();
    db.set_metric_callback(move |info| {
        counter.count.fetch_add(1, Ordering::Relaxed);
        counter
            .micros
            .fetch_add(info.elapsed.as_micros() as u64, Ordering::Relaxed);
    });
    stats
}

/// Applies every pending migration.
pub async fn migrate(db: &DatabaseConnection) -> anyhow::Result<()> {
    Migrator::up(db, None)
        .await
        .context("migrating the database")
}

/// An effect of a write transaction that happens exactly when it commits: statements run as
/// the transaction's last ones (so that locks they take are held for no other work), and signals
/// sent once the commit is visible. Domain modules define their effects and register them on the
/// transaction (`Transaction::at_commit`); the transaction knows nothing of what they are.
#[async_trait::async_trait]
pub trait AtCommit: std::any::Any + Send {
    /// Effects run in ascending `ORDER`: the lower first.
    const ORDER: i32 = 0;

    /// Runs inside the transaction, after every other statement.
    async fn before_commit(&mut self, _tx: &DatabaseTransaction) -> Result<(), DbErr> {
        Ok(())
    }

    /// Runs once the transaction has committed.
    fn after_commit(self: Box<Self>) {}
}

/// The object-safe form of `AtCommit`, through which the transaction keeps its effects.
#[async_trait::async_trait]
trait Effect: Send {
    fn order(&self) -> i32;
    fn as_any(&mut self) -> &mut dyn std::any::Any;
    async fn before_commit(&mut self, tx: &DatabaseTransaction) -> Result<(), DbErr>;
    fn after_commit(self: Box<Self>);
}

#[async_trait::async_trait]
impl<E: AtCommit> Effect for E {
    fn order(&self) -> i32 {
        E::ORDER
    }

    fn as_any(&mut self) -> &mut dyn std::any::Any {
        self
    }

    async fn before_commit(&mut self, tx: &DatabaseTransaction) -> Result<(), DbErr> {
        AtCommit::before_commit(self, tx).await
    }

    fn after_commit(self: Box<Self>) {
        AtCommit::after_commit(self)
    }
}

/// A write transaction. It is a `DatabaseTransaction` for every statement; in addition it is an
/// outbox of the effects its changes register (`AtCommit`), run when it commits. Dropped without
/// `commit`, it rolls back, effects and all.
pub struct Transaction {
    inner: DatabaseTransaction,
    effects: Mutex<Vec<Box<dyn Effect>>>,
    /// On SQLite, this process's turn at the database's one write lock, held until the
    /// transaction ends. Declared after `inner`, so it is released once the transaction has
    /// committed or its rollback has been started (a writer that comes first to a rollback still
    /// under way waits in SQLite's busy handler).
    _turn: Option<tokio::sync::OwnedMutexGuard<()>>,
}

impl Transaction {
    /// Registers an effect of type `E` (one per transaction, created empty on first use) and
    /// lets `add` add to it.
    pub fn at_commit<E: AtCommit + Default>(&self, add: impl FnOnce(&mut E)) {
        let mut effects = self
            .effects
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let at = effects
            .iter_mut()
            .position(|effect| effect.as_any().is::<E>());
        let at = at.unwrap_or_else(|| {
            effects.push(Box::new(E::default()));
            effects.len() - 1
        });
        if let Some(effect) = effects[at].as_any().downcast_mut::<E>() {
            add(effect);
        }
    }

    /// Runs the effects' statements, commits, then sends the effects' signals.
    #[tracing::instrument(
        target = "jobgraph::spans",
        level = "debug",
        name = "db.commit",
        skip_all
    )]
    pub async fn commit(self) -> Result<(), DbErr> {
        let mut effects = self
            .effects
            .into_inner()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        effects.sort_by_key(|effect| effect.order());
        for effect in &mut effects {
            effect.before_commit(&self.inner).await?;
        }
        self.inner.commit().await?;
        for effect in effects {
            effect.after_commit();
        }
        Ok(())
    }
}

impl std::ops::Deref for Transaction {
    type Target = DatabaseTransaction;

    fn deref(&self) -> &DatabaseTransaction {
        &self.inner
    }
}

#[async_trait::async_trait]
impl ConnectionTrait for Transaction {
    fn get_database_backend(&self) -> DatabaseBackend {
        self.inner.get_database_backend()
    }

    async fn execute_raw(&self, stmt: Statement) -> Result<ExecResult, DbErr> {
        self.inner.execute_raw(stmt).await
    }

    async fn execute_unprepared(&self, sql: &str) -> Result<ExecResult, DbErr> {
        self.inner.execute_unprepared(sql).await
    }

    async fn query_one_raw(&self, stmt: Statement) -> Result<Option<QueryResult>, DbErr> {
        self.inner.query_one_raw(stmt).await
    }

    async fn query_all_raw(&self, stmt: Statement) -> Result<Vec<QueryResult>, DbErr> {
        self.inner.query_all_raw(stmt).await
    }
}

/// Begins a transaction that will write.
///
/// On SQLite it takes the write lock at once (`BEGIN IMMEDIATE`), so two writers queue instead
/// of failing when a read-then-write transaction would need to upgrade its lock. The writers of
/// this process first queue for their turn in memory (`write_turn`), in arrival order: SQLite
/// itself makes a writer that finds the lock taken sleep and retry (1, 2, 5, 10 ms and longer),
/// which left the database idle between transactions whenever a worker's claims, its
/// completions and the live bus wrote at once.
#[tracing::instrument(
    target = "jobgraph::spans",
    level = "debug",
    name = "db.begin",
    skip_all
)]
pub async fn begin_write(db: &DatabaseConnection) -> Result<Transaction, DbErr> {
    let (inner, turn) = match db.get_database_backend() {
        DatabaseBackend::Sqlite => {
            let turn = write_turn(db).await?;
            let inner = db
                .begin_with_options(TransactionOptions {
                    sqlite_transaction_mode: Some(SqliteTransactionMode::Immediate),
                    ..Default::default()
                })
                .await?;
            (inner, turn)
        }
        _ => (db.begin().await?, None),
    };
    Ok(Transaction {
        inner,
        effects: Mutex::new(Vec::new()),
        _turn: turn,
    })
}

/// For a reader that must see what this process's writers under way commit: on SQLite, a
/// write transaction that waits its turn behind them (the reader reads in it, then commits
/// it); elsewhere nothing, every commit being visible to a read that starts after it.
pub async fn behind_writers(db: &DatabaseConnection) -> Result<Option<Transaction>, DbErr> {
    match db.get_database_backend() {
        DatabaseBackend::Sqlite => Ok(Some(begin_write(db).await?)),
        _ => Ok(None),
    }
}

/// How long a SQLite writer waits for its turn, as long as SQLite's own busy timeout.
const WRITE_TURN_TIMEOUT: Duration = Duration::from_secs(30);

/// Waits for this process's turn to write to a SQLite database: one queue per database file
/// name, shared by every pool of the process that opens the file by that name. Writers of other
/// processes, and single statements outside a write transaction, still meet at SQLite's lock and
/// its busy timeout.
async fn write_turn(
    db: &DatabaseConnection,
) -> Result<Option<tokio::sync::OwnedMutexGuard<()>>, DbErr> {
    type Turns = Mutex<std::collections::HashMap<std::path::PathBuf, Arc<tokio::sync::Mutex<()>>>>;
    static TURNS: std::sync::LazyLock<Turns> = std::sync::LazyLock::new(Default::default);
    let options = db.get_sqlite_connection_pool().connect_options();
    let file = options.get_filename();
    let queue = {
        let mut turns = TURNS
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match turns.get(file) {
            Some(queue) => queue.clone(),
            None => turns.entry(file.to_owned()).or_default().clone(),
        }
    };
    match tokio::time::timeout(WRITE_TURN_TIMEOUT, queue.lock_owned()).await {
        Ok(turn) => Ok(Some(turn)),
        Err(_) => Err(DbErr::Custom(
            "the database stayed locked by other writers of this process".to_owned(),
        )),
    }
}

/// One column of the rows of a PostgreSQL statement of fixed text, as an array parameter: the
/// statement reads its rows with `unnest($1::uuid[], $2::text[], ...)`. Unlike a multi-row VALUES
/// list, its text is the same for any number of rows, so each connection parses and plans it
/// once and keeps it prepared; and arrays travel in binary, which PostgreSQL decodes far faster
/// than it parses the same rows out of a JSON document. Arrays cannot hold NULL here: a nullable
/// column travels with a stand-in value and a flag saying it is NULL.
pub fn column<T>(values: impl IntoIterator<Item = T>) -> sea_orm::Value
where
    Vec<T>: Into<sea_orm::Value>,
{
    values.into_iter().collect::<Vec<T>>().into()
}

/// The time now, to the microsecond: all PostgreSQL keeps of a time, so that a row written with
/// it is, as written, what a read of it returns.
pub fn now() -> chrono::DateTime<chrono::Utc> {
    use chrono::SubsecRound as _;
    chrono::Utc::now().trunc_subsecs(6)
}

/// Whether the database answers.
pub async fn ping(db: &DatabaseConnection) -> bool {
    db.execute_unprepared("SELECT 1").await.is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_redacted_from_urls() {
        assert_eq!(
            redact("postgres://app:secret@db:5432/jobs"),
            "postgres://app:***@db:5432/jobs"
        );
        assert_eq!(redact("postgres://app@db/jobs"), "postgres://app@db/jobs");
        assert_eq!(redact("sqlite://./data/x.db"), "sqlite://./data/x.db");
    }

    #[test]
    fn sqlite_paths_are_read_from_urls() {
        assert_eq!(
            sqlite_path("sqlite://data/j.db?mode=rwc"),
            Some("data/j.db")
        );
        assert_eq!(sqlite_path("sqlite:/tmp/j.db"), Some("/tmp/j.db"));
        assert_eq!(sqlite_path("sqlite::memory:"), None);
    }
}
