//! The control plane: job use cases, the job controller, worker provisioning
//! and lifecycle, the provider registry and the log hub.
//!
//! [`ControlPlane`] is a cheap-to-clone handle. Its state lives in the stores
//! (in memory or Postgres) plus a few process-local tables (open worker
//! streams, log fan-out). Work is driven by one control loop
//! ([`ControlPlane::run`]) woken by events and by a periodic reconcile.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use hodei_core::control::{ControlPlane, ControlPlaneConfig};
//! use hodei_core::store::Stores;
//! let cp = ControlPlane::builder()
//!     .config(ControlPlaneConfig::default())
//!     .stores(Stores::in_memory())
//!     .build();
//! tokio::spawn(cp.clone().run());
//! # Ok(()) }
//! ```

mod artifacts;
mod audit_log;
mod bind;
mod concurrency;
mod config;
mod controller;
mod error;
mod events;
mod fresh_jobs;
mod housekeeping;
mod jobs;
mod lease_keeper;
mod logs;
mod metrics;
mod placements;
mod provider_admin;
mod provider_factory;
mod provider_load;
mod providers;
mod provisioner;
mod reconcile;
mod report_order;
mod secrets;
mod shared_strategy;
mod templates;
mod worker_sessions;
mod worker_update;
mod workers;

use std::sync::{Arc, Mutex};

use tokio::sync::{Notify, broadcast, watch};

pub use crate::scheduler::Strategy;
pub use audit_log::{Actor, Auditor, job_target, provider_target, template_target};
pub use concurrency::{ConcurrencyLimitStatus, MAX_CONCURRENCY_LIMIT};
pub use config::{ControlPlaneConfig, PoolPolicy};
pub use error::{ControlError, ControlResult};
pub use events::{DecisionAction, DecisionRecord, JobEvent};
pub use housekeeping::{HOUSEKEEPING_INTERVAL, HousekeepingReport};
pub use jobs::{QueueStatus, RETRY_OF_LABEL};
pub use logs::{LogChunk, LogHub};
pub use metrics::{MetricsBackend, MetricsSummary};
pub use provider_admin::RestoredProvider;
pub use provider_factory::{BuiltProvider, ProviderFactory, ProviderRequest};
pub use reconcile::AuditReport;
pub use report_order::OrderedReports;
pub use secrets::{SecretSealer, SecretsError};
pub use templates::TemplateService;
pub use workers::{RegisterOutcome, WorkerListing, WorkerStreamHandle};

use crate::domain::ids::WorkerId;
use crate::store::{LeaderElection, Stores};

struct Inner {
    config: ControlPlaneConfig,
    stores: Stores,
    providers: providers::ProviderRegistry,
    provider_factory: Option<Arc<dyn ProviderFactory>>,
    sessions: worker_sessions::WorkerSessions,
    job_events: broadcast::Sender<JobEvent>,
    decisions: broadcast::Sender<DecisionRecord>,
    /// Workers their provider saw exit, with why: ends a provisioning wait early.
    worker_exited: broadcast::Sender<(WorkerId, String)>,
    logs: LogHub,
    wake: Notify,
    /// The jobs this replica has just queued, for its next dispatch pass.
    fresh_jobs: fresh_jobs::FreshJobs,
    /// This replica's copy of the shared strategy (refreshed from the store each pass).
    strategy: shared_strategy::SharedStrategy,
    /// Where the next scheduling pass resumes when the last one hit
    /// `dispatch_scan_limit` before the end of the queue.
    scan_resume: Mutex<Option<crate::store::QueueCursor>>,
    metrics: Option<Arc<MetricsBackend>>,
    sealer: SecretSealer,
    leader: Option<Arc<dyn LeaderElection>>,
    shutdown: watch::Sender<bool>,
    /// What the leader's store audit remembers between passes.
    audit: Mutex<reconcile::AuditState>,
    /// When the leader last purged expired tokens and pruned old jobs.
    housekeeping: Mutex<housekeeping::HousekeepingState>,
    /// Where job artifacts are kept; `None` refuses jobs with inputs or outputs.
    artifacts: artifacts::JobArtifacts,
    /// Providers whose load is being recounted off the job path.
    load_recounts: provider_load::LoadRecounts,
}

/// Handle to the control plane. Clone it freely.
#[derive(Clone)]
pub struct ControlPlane {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for ControlPlane {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ControlPlane")
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

/// Builds a [`ControlPlane`].
#[derive(Default)]
#[must_use]
pub struct ControlPlaneBuilder {
    config: ControlPlaneConfig,
    stores: Option<Stores>,
    strategy: Option<Strategy>,
    provider_factory: Option<Arc<dyn ProviderFactory>>,
    metrics: bool,
    sealer: Option<SecretSealer>,
    leader: Option<Arc<dyn LeaderElection>>,
    artifacts: Option<Arc<dyn crate::artifacts::ArtifactStore>>,
}

impl std::fmt::Debug for ControlPlaneBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ControlPlaneBuilder")
            .finish_non_exhaustive()
    }
}

impl ControlPlaneBuilder {
    /// Settings.
    pub fn config(mut self, config: ControlPlaneConfig) -> Self {
        self.config = config;
        self
    }
    /// Stores (default: in memory).
    pub fn stores(mut self, stores: Stores) -> Self {
        self.stores = Some(stores);
        self
    }
    /// Initial scheduling strategy (default: priority with aging).
    pub fn strategy(mut self, strategy: Strategy) -> Self {
        self.strategy = Some(strategy);
        self
    }
    /// Builds runtime providers for `RegisterProvider` calls.
    pub fn provider_factory(mut self, factory: Arc<dyn ProviderFactory>) -> Self {
        self.provider_factory = Some(factory);
        self
    }
    /// Enables the in-memory metrics backend (MetricsService).
    pub fn metrics(mut self, enabled: bool) -> Self {
        self.metrics = enabled;
        self
    }
    /// Key for job secrets at rest (default: a random key for this process,
    /// which suits only the in-memory store).
    pub fn secrets(mut self, sealer: SecretSealer) -> Self {
        self.sealer = Some(sealer);
        self
    }
    /// Leader election among replicas on one database (default: this
    /// process is the only replica and always leads).
    pub fn leader_election(mut self, leader: Arc<dyn LeaderElection>) -> Self {
        self.leader = Some(leader);
        self
    }
    /// Where job artifacts are kept (default: none, and a job with inputs or
    /// outputs is refused). See [`crate::artifacts::FsArtifactStore`].
    pub fn artifacts(mut self, store: Arc<dyn crate::artifacts::ArtifactStore>) -> Self {
        self.artifacts = Some(store);
        self
    }
    /// Builds it. Call [`ControlPlane::run`] to start the control loop.
    pub fn build(self) -> ControlPlane {
        let mut stores = self.stores.unwrap_or_else(Stores::in_memory);
        if stores
            .queue_transactions
            .as_ref()
            .is_some_and(|t| !t.writes_to(&stores))
        {
            // One of the stores was replaced (a wrapper, another backend):
            // the transactions would write past it.
            tracing::info!(
                "the stores' queue transactions are not over these stores: step by step"
            );
            stores.queue_transactions = None;
        }
        let logs = LogHub::new(stores.logs.clone());
        ControlPlane {
            inner: Arc::new(Inner {
                config: self.config,
                logs,
                stores,
                providers: providers::ProviderRegistry::default(),
                provider_factory: self.provider_factory,
                sessions: worker_sessions::WorkerSessions::new(),
                job_events: broadcast::channel(4096).0,
                decisions: broadcast::channel(1024).0,
                worker_exited: broadcast::channel(256).0,
                wake: Notify::new(),
                fresh_jobs: fresh_jobs::FreshJobs::default(),
                strategy: shared_strategy::SharedStrategy::new(
                    self.strategy.unwrap_or(Strategy::Priority),
                ),
                scan_resume: Mutex::new(None),
                metrics: self.metrics.then(|| Arc::new(MetricsBackend::default())),
                sealer: self.sealer.unwrap_or_else(SecretSealer::ephemeral),
                leader: self.leader,
                shutdown: watch::channel(false).0,
                audit: Mutex::new(reconcile::AuditState::default()),
                housekeeping: Mutex::new(housekeeping::HousekeepingState::default()),
                artifacts: artifacts::JobArtifacts::new(self.artifacts),
                load_recounts: provider_load::LoadRecounts::default(),
            }),
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl ControlPlane {
    /// A builder.
    pub fn builder() -> ControlPlaneBuilder {
        ControlPlaneBuilder::default()
    }

    /// Settings.
    #[must_use]
    pub fn config(&self) -> &ControlPlaneConfig {
        &self.inner.config
    }

    /// The stores.
    #[must_use]
    pub fn stores(&self) -> &Stores {
        &self.inner.stores
    }

    /// The log hub.
    #[must_use]
    pub fn logs(&self) -> &LogHub {
        &self.inner.logs
    }

    /// The metrics backend, when enabled.
    #[must_use]
    pub fn metrics(&self) -> Option<&Arc<MetricsBackend>> {
        self.inner.metrics.as_ref()
    }

    /// Job state changes, from now on.
    #[must_use]
    pub fn subscribe_job_events(&self) -> broadcast::Receiver<JobEvent> {
        self.inner.job_events.subscribe()
    }

    /// Scheduling decisions, from now on.
    #[must_use]
    pub fn subscribe_decisions(&self) -> broadcast::Receiver<DecisionRecord> {
        self.inner.decisions.subscribe()
    }

    /// Wakes the control loop.
    pub fn wake(&self) {
        self.inner.wake.notify_one();
    }

    /// Asks the control loop and background tasks to stop.
    pub fn shutdown(&self) {
        let _ = self.inner.shutdown.send(true);
        // Ending the worker streams lets a graceful server shutdown complete.
        self.inner.sessions.clear();
        self.wake();
    }
}
