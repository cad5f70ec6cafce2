//! # hodei-store-postgres
//!
//! Postgres implementations of every Hodei store trait
//! ([`hodei_core::store`]), with the schema as embedded sqlx migrations.
//! Several control-plane replicas can share one database: the queue claims
//! with `FOR UPDATE SKIP LOCKED`, jobs carry an optimistic-concurrency
//! version, and [`PgLeaderLease`] elects one replica for maintenance work.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use hodei_store_postgres::{PgStoreConfig, connect};
//!
//! let stores = match PgStoreConfig::from_env()? {
//!     Some(config) => connect(&config).await?.stores(),
//!     None => hodei_core::store::Stores::in_memory(),
//! };
//! # let _ = stores; Ok(()) }
//! ```
//!
//! All statements are runtime queries (`sqlx::query` with binds), so the
//! crate builds without a database.
#![warn(missing_docs)]

mod audit;
mod change_feed;
mod error;
mod job_history;
mod jobs;
mod kept_read;
mod leader;
mod listen;
mod logs;
mod otp;
mod providers;
mod queue;
mod queue_transactions;
mod scheduling;
mod templates;
mod touch_batch;
mod workers;

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use hodei_core::settings::Setting;
use hodei_core::store::Stores;
use sqlx::PgPool;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

pub use audit::PgAuditLog;
pub use change_feed::CHANGES_CHANNEL;
pub use error::PgStoreError;
pub use job_history::PgJobHistoryStore;
pub use jobs::PgJobRepository;
pub use leader::{PgLeaderElection, PgLeaderLease, replica_holder_id};
pub use logs::{LOGS_CHANNEL, PgLogStore};
pub use otp::PgOtpTokenStore;
pub use providers::PgProviderConfigRepository;
pub use queue::{DEFAULT_VACUUM_EVERY, PgJobQueue, QUEUE_CHANNEL};
pub use queue_transactions::PgQueueTransactions;
pub use scheduling::PgSchedulingStore;
pub use sqlx;
pub use templates::PgTemplateStore;
pub use workers::PgWorkerRegistry;

/// The embedded schema migrations (`hodei-store-postgres/migrations`).
///
/// The migrator holds a Postgres advisory lock while it runs, so replicas
/// starting at the same time apply each migration exactly once.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// A pooled connection idle at least this long is checked (one round trip)
/// before it is handed out; one in steady use is not. sqlx checks every
/// connection by default, which doubled the round trips of each statement:
/// a job's dispatch runs about ten of them one after another. A connection
/// that broke while in use is closed by the pool, so what this lets through
/// is a connection idle for less than this across a database restart: its
/// statement fails as any statement does while the database is away.
pub const PING_IF_IDLE_FOR: Duration = Duration::from_secs(1);

/// Default `HODEI_DB_MAX_CONNECTIONS`.
pub const DEFAULT_MAX_CONNECTIONS: u32 = 10;
/// Default `HODEI_DB_CONNECTION_TIMEOUT_SECS`.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// Default largest stored form of one job (its spec with scripts, env and
/// bookkeeping): 4 MiB.
pub const DEFAULT_MAX_JOB_BYTES: usize = 4 * 1024 * 1024;

/// How to reach the database.
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct PgStoreConfig {
    /// A `postgres://` URL.
    pub url: String,
    /// Pool size (`HODEI_DB_MAX_CONNECTIONS`, default 10). A
    /// [`JobQueue::work_notifications`](hodei_core::store::JobQueue::work_notifications)
    /// stream holds one connection while it lives.
    pub max_connections: u32,
    /// How long to wait for a connection (`HODEI_DB_CONNECTION_TIMEOUT_SECS`, default 30).
    pub connect_timeout: Duration,
    /// Largest stored form of one job; bigger jobs are
    /// [`StoreError::Invalid`](hodei_core::store::StoreError::Invalid).
    pub max_job_bytes: usize,
}

// The URL may carry a password: never print it.
impl std::fmt::Debug for PgStoreConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgStoreConfig")
            .field("url", &"<redacted>")
            .field("max_connections", &self.max_connections)
            .field("connect_timeout", &self.connect_timeout)
            .field("max_job_bytes", &self.max_job_bytes)
            .finish()
    }
}

impl PgStoreConfig {
    /// A configuration for `url` with the defaults.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            max_connections: DEFAULT_MAX_CONNECTIONS,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            max_job_bytes: DEFAULT_MAX_JOB_BYTES,
        }
    }

    /// Sets the pool size.
    #[must_use]
    pub fn with_max_connections(mut self, n: u32) -> Self {
        self.max_connections = n.max(1);
        self
    }

    /// Sets the connection timeout.
    #[must_use]
    pub fn with_connect_timeout(mut self, t: Duration) -> Self {
        self.connect_timeout = t;
        self
    }

    /// Sets the largest stored form of one job.
    #[must_use]
    pub fn with_max_job_bytes(mut self, n: usize) -> Self {
        self.max_job_bytes = n;
        self
    }

    /// Every variable [`PgStoreConfig::from_env`] reads.
    pub const SETTINGS: &'static [Setting] = &[
        Setting::new(
            "HODEI_DATABASE_URL",
            "in-memory store",
            "Postgres URL; migrations run at start (safe with several replicas)",
        ),
        Setting::new(
            "DATABASE_URL",
            "in-memory store",
            "read when HODEI_DATABASE_URL is unset",
        ),
        Setting::new("HODEI_DB_MAX_CONNECTIONS", "10", "connection pool size"),
        Setting::new(
            "HODEI_DB_CONNECTION_TIMEOUT_SECS",
            "30",
            "how long to wait for a connection",
        ),
    ];

    /// From the environment: `HODEI_DATABASE_URL`, else `DATABASE_URL`;
    /// `HODEI_DB_MAX_CONNECTIONS`; `HODEI_DB_CONNECTION_TIMEOUT_SECS`.
    /// `Ok(None)` when no URL is set (use the in-memory store).
    pub fn from_env() -> Result<Option<Self>, PgStoreError> {
        Self::from_lookup(|k| std::env::var(k).ok())
    }

    /// Like [`PgStoreConfig::from_env`], reading variables through `get`.
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Option<Self>, PgStoreError> {
        let nonempty = |k: &str| get(k).filter(|v| !v.trim().is_empty());
        let Some(url) = nonempty("HODEI_DATABASE_URL").or_else(|| nonempty("DATABASE_URL")) else {
            return Ok(None);
        };
        let mut config = Self::new(url.trim());
        if let Some(v) = nonempty("HODEI_DB_MAX_CONNECTIONS") {
            let n: u32 = v.trim().parse().map_err(|_| {
                PgStoreError::Config(format!(
                    "HODEI_DB_MAX_CONNECTIONS={v:?} is not a positive integer"
                ))
            })?;
            if n == 0 {
                return Err(PgStoreError::Config(
                    "HODEI_DB_MAX_CONNECTIONS must be at least 1".into(),
                ));
            }
            config.max_connections = n;
        }
        if let Some(v) = nonempty("HODEI_DB_CONNECTION_TIMEOUT_SECS") {
            let s: u64 = v.trim().parse().map_err(|_| {
                PgStoreError::Config(format!(
                    "HODEI_DB_CONNECTION_TIMEOUT_SECS={v:?} is not a whole number of seconds"
                ))
            })?;
            config.connect_timeout = Duration::from_secs(s);
        }
        Ok(Some(config))
    }

    /// The parsed connection options.
    pub fn connect_options(&self) -> Result<PgConnectOptions, PgStoreError> {
        PgConnectOptions::from_str(&self.url)
            .map_err(|e| PgStoreError::Config(format!("invalid database URL: {e}")))
    }
}

/// Applies the embedded migrations to the database behind `pool` (safe to
/// call from several replicas at once).
pub async fn migrate(pool: &PgPool) -> Result<(), PgStoreError> {
    MIGRATOR.run(pool).await.map_err(PgStoreError::Migrate)
}

/// Connects (creating the pool), runs the migrations, and returns the stores.
pub async fn connect(config: &PgStoreConfig) -> Result<PgStores, PgStoreError> {
    let pool = PgPoolOptions::new()
        .max_connections(config.max_connections.max(1))
        .acquire_timeout(config.connect_timeout)
        .test_before_acquire(false)
        .before_acquire(|conn, meta| {
            Box::pin(async move {
                if meta.idle_for >= PING_IF_IDLE_FOR {
                    sqlx::Connection::ping(conn).await?;
                }
                Ok(true)
            })
        })
        .connect_with(config.connect_options()?)
        .await
        .map_err(PgStoreError::Connect)?;
    PgStores::from_pool(pool, config.max_job_bytes).await
}

/// Every store on one pool.
#[derive(Debug, Clone)]
pub struct PgStores {
    pool: PgPool,
    jobs: Arc<PgJobRepository>,
    queue: Arc<PgJobQueue>,
    workers: Arc<PgWorkerRegistry>,
    providers: Arc<PgProviderConfigRepository>,
    logs: Arc<PgLogStore>,
    otps: Arc<PgOtpTokenStore>,
    templates: Arc<PgTemplateStore>,
    job_history: Arc<PgJobHistoryStore>,
    audit: Arc<PgAuditLog>,
    scheduling: Arc<PgSchedulingStore>,
}

impl PgStores {
    /// Runs the migrations on `pool` and builds the stores on it.
    pub async fn from_pool(pool: PgPool, max_job_bytes: usize) -> Result<Self, PgStoreError> {
        migrate(&pool).await?;
        // The reads every dispatch pass makes (strategy, providers, alive
        // counts) are kept between the changes this feed hears of.
        let changes = Arc::new(change_feed::ChangeFeed::new(pool.clone()));
        Ok(Self {
            jobs: Arc::new(PgJobRepository::new(pool.clone(), max_job_bytes)),
            queue: Arc::new(PgJobQueue::new(pool.clone())),
            workers: Arc::new(PgWorkerRegistry::new(pool.clone()).with_changes(changes.clone())),
            providers: Arc::new(
                PgProviderConfigRepository::new(pool.clone()).with_changes(changes.clone()),
            ),
            logs: Arc::new(PgLogStore::new(pool.clone())),
            otps: Arc::new(PgOtpTokenStore::new(pool.clone())),
            templates: Arc::new(PgTemplateStore::new(pool.clone())),
            job_history: Arc::new(PgJobHistoryStore::new(pool.clone())),
            audit: Arc::new(PgAuditLog::new(pool.clone())),
            scheduling: Arc::new(PgSchedulingStore::new(pool.clone()).with_changes(changes)),
            pool,
        })
    }

    /// The bundle of trait objects the control plane takes.
    #[must_use]
    pub fn stores(&self) -> Stores {
        Stores::new(
            self.jobs.clone(),
            self.queue.clone(),
            self.workers.clone(),
            self.providers.clone(),
            self.logs.clone(),
            self.otps.clone(),
            self.job_history.clone(),
        )
        .with_audit(self.audit.clone())
        .with_templates(self.templates.clone())
        .with_scheduling(self.scheduling.clone())
        .with_queue_transactions(Some(Arc::new(PgQueueTransactions::new(
            self.pool.clone(),
            self.jobs.clone(),
            self.queue.clone(),
            self.workers.clone(),
            self.job_history.clone(),
        ))))
    }

    /// The connection pool (for readiness checks, leases, custom queries).
    #[must_use]
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// The concrete queue (for [`PgJobQueue::enqueue_many`]).
    #[must_use]
    pub fn queue(&self) -> Arc<PgJobQueue> {
        self.queue.clone()
    }

    /// The concrete job repository.
    #[must_use]
    pub fn jobs(&self) -> Arc<PgJobRepository> {
        self.jobs.clone()
    }

    /// A leader lease on this database (see [`PgLeaderLease`]).
    #[must_use]
    pub fn leader_lease(
        &self,
        name: impl Into<String>,
        holder_id: impl Into<String>,
        ttl: Duration,
    ) -> PgLeaderLease {
        PgLeaderLease::new(self.pool.clone(), name, holder_id, ttl)
    }

    /// Whether the database answers (`SELECT 1`), for readiness probes.
    pub async fn ping(&self) -> Result<(), hodei_core::store::StoreError> {
        sqlx::query("SELECT 1")
            .execute(&self.pool)
            .await
            .map_err(|e| error::map_err("ping", e))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn the_settings_table_lists_every_variable_read() {
        // With a URL set, so the pool settings are read too.
        let unlisted = hodei_core::settings::unlisted(PgStoreConfig::SETTINGS, |get| {
            PgStoreConfig::from_lookup(|k| {
                (k == "HODEI_DATABASE_URL")
                    .then(|| "postgres://localhost/x".to_owned())
                    .or_else(|| get(k))
            })
        });
        assert!(
            unlisted.is_empty(),
            "read but not in SETTINGS: {unlisted:?}"
        );
    }
    use super::*;
    use std::collections::HashMap;

    fn lookup(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let m: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        move |k| m.get(k).cloned()
    }

    #[test]
    fn config_from_env_vars() {
        assert!(PgStoreConfig::from_lookup(lookup(&[])).unwrap().is_none());
        let c = PgStoreConfig::from_lookup(lookup(&[("DATABASE_URL", "postgres://a/b")]))
            .unwrap()
            .unwrap();
        assert_eq!(c.url, "postgres://a/b");
        assert_eq!(c.max_connections, 10);
        assert_eq!(c.connect_timeout, Duration::from_secs(30));
        let c = PgStoreConfig::from_lookup(lookup(&[
            ("DATABASE_URL", "postgres://a/b"),
            ("HODEI_DATABASE_URL", "postgres://h/db"),
            ("HODEI_DB_MAX_CONNECTIONS", "3"),
            ("HODEI_DB_CONNECTION_TIMEOUT_SECS", "7"),
        ]))
        .unwrap()
        .unwrap();
        assert_eq!(c.url, "postgres://h/db", "HODEI_DATABASE_URL wins");
        assert_eq!(c.max_connections, 3);
        assert_eq!(c.connect_timeout, Duration::from_secs(7));
        assert!(!format!("{c:?}").contains("postgres://"), "URL redacted");
        for bad in [
            ("HODEI_DB_MAX_CONNECTIONS", "x"),
            ("HODEI_DB_MAX_CONNECTIONS", "0"),
        ] {
            let r = PgStoreConfig::from_lookup(lookup(&[("DATABASE_URL", "postgres://a/b"), bad]));
            assert!(matches!(r, Err(PgStoreError::Config(_))), "{bad:?}");
        }
        let r = PgStoreConfig::from_lookup(lookup(&[
            ("DATABASE_URL", "postgres://a/b"),
            ("HODEI_DB_CONNECTION_TIMEOUT_SECS", "-1"),
        ]));
        assert!(matches!(r, Err(PgStoreError::Config(_))));
    }
}
