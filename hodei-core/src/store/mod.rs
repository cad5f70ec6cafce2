//! Store traits (the ports to persistence) and their in-memory implementations.
//!
//! Every store is held as `Arc<dyn …>` and chosen from configuration (in-memory
//! by default, Postgres in production), so the traits use `#[async_trait]`.
//! The same conformance suite (`hodei_core::testing`) runs against every
//! implementation.

pub mod audit;
pub mod job_history;
pub mod memory;
pub mod queue_transactions;
pub mod scheduling;
pub mod templates;

use std::collections::BTreeMap;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use futures::stream::BoxStream;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::domain::ids::{JobId, ProviderId, WorkerId};
use crate::domain::job::{Job, JobState};
use crate::domain::logs::LogEntry;
use crate::domain::provider::Provider;
use crate::domain::worker::Worker;
use crate::domain::worker_stats::WorkerStats;

pub use templates::{InMemoryTemplateStore, TemplateStore};

pub use audit::{
    AuditAction, AuditEntry, AuditFilter, AuditLog, AuditOutcome, InMemoryAuditLog, NewAuditEntry,
};

pub use queue_transactions::{BindOutcome, Binding, QueueTransactions, same_instance};

pub use job_history::{InMemoryJobHistoryStore, JobHistoryStore, JobTransitionRecord};

pub use crate::scheduler::{QueueCursor, QueueOrder, QueuePage};
pub use scheduling::{ConcurrencyLimit, SchedulingStore, SlotGrant, SlotHolder};

/// Errors of any store.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// No such entity.
    #[error("{entity} {id} not found")]
    NotFound {
        /// `job`, `worker`, `provider`, `lease`…
        entity: &'static str,
        /// Its id.
        id: String,
    },
    /// The entity exists already.
    #[error("{entity} {id} already exists")]
    AlreadyExists {
        /// Kind.
        entity: &'static str,
        /// Id or name.
        id: String,
    },
    /// Optimistic concurrency: the stored version differs from the caller's.
    #[error(
        "{entity} {id} was modified concurrently: expected version {expected}, stored {actual}"
    )]
    Conflict {
        /// Kind.
        entity: &'static str,
        /// Id.
        id: String,
        /// Version the caller held.
        expected: u64,
        /// Version stored.
        actual: u64,
    },
    /// A lease is no longer held (expired and rescued, or never existed).
    #[error("lease on job {job_id} is stale")]
    StaleLease {
        /// The job.
        job_id: JobId,
    },
    /// The value cannot be stored (too large, invalid for the backend).
    #[error("invalid {field}: {message}")]
    Invalid {
        /// The offending field.
        field: String,
        /// Why.
        message: String,
    },
    /// The backend cannot be reached.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// Anything else the backend reported.
    #[error("store error: {0}")]
    Backend(String),
}

/// Filter for [`JobRepository::list`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct JobFilter {
    /// Only jobs in this state.
    pub state: Option<JobState>,
    /// Only jobs assigned to this worker.
    pub worker_id: Option<WorkerId>,
    /// At most this many (newest first). `None` = a backend default of 100.
    pub limit: Option<usize>,
}

impl JobFilter {
    /// Jobs in `state`.
    #[must_use]
    pub fn state(state: JobState) -> Self {
        Self {
            state: Some(state),
            ..Self::default()
        }
    }
    /// Limits the number of results.
    #[must_use]
    pub fn limit(mut self, n: usize) -> Self {
        self.limit = Some(n);
        self
    }
}

/// Jobs, with optimistic concurrency.
#[async_trait]
pub trait JobRepository: Send + Sync {
    /// Stores a new job; returns it with version 1.
    async fn insert(&self, job: &Job) -> Result<Job, StoreError>;
    /// A job by id.
    async fn get(&self, id: JobId) -> Result<Option<Job>, StoreError>;
    /// Stores a changed job if the stored version equals `job.version()`;
    /// returns it with the next version. A stale update is a [`StoreError::Conflict`].
    async fn update(&self, job: &Job) -> Result<Job, StoreError>;
    /// Jobs matching the filter, newest first.
    async fn list(&self, filter: &JobFilter) -> Result<Vec<Job>, StoreError>;
    /// Number of jobs per state.
    async fn count_by_state(&self) -> Result<BTreeMap<JobState, u64>, StoreError>;
    /// Deletes terminal jobs that finished before `before`; returns how many.
    async fn prune_finished(&self, before: DateTime<Utc>) -> Result<u64, StoreError>;
}

/// A queued job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueEntry {
    /// The job.
    pub job_id: JobId,
    /// Higher first.
    pub priority: i32,
    /// Older first among equal priorities.
    pub enqueued_at: DateTime<Utc>,
}

/// A claimed queue entry: the claimer holds it until `expires_at`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    /// The entry.
    pub entry: QueueEntry,
    /// Unique per claim; a completion with an old lease id is refused.
    pub lease_id: Uuid,
    /// When the rescuer may return it to the queue.
    pub expires_at: DateTime<Utc>,
}

/// The queue of `Pending` jobs. Claims hold a lease; a rescuer returns expired ones.
#[async_trait]
pub trait JobQueue: Send + Sync {
    /// Adds a job. Enqueuing a job already queued (or claimed) is a no-op.
    async fn enqueue(&self, entry: QueueEntry) -> Result<(), StoreError>;
    /// Claims up to `limit` unclaimed entries, highest priority then oldest first.
    async fn claim(&self, limit: usize, lease_for: Duration) -> Result<Vec<Lease>, StoreError>;
    /// Claims one specific entry, if it is queued and unclaimed.
    async fn claim_job(
        &self,
        job_id: JobId,
        lease_for: Duration,
    ) -> Result<Option<Lease>, StoreError>;
    /// Unclaimed entries in claim order, without claiming them.
    async fn peek(&self, limit: usize) -> Result<Vec<QueueEntry>, StoreError>;
    /// Up to `limit` unclaimed entries in `order`, strictly after `after`
    /// (from the start when `None`), without claiming them. Following
    /// [`QueuePage::next`] walks the whole queue, so a scheduler can look past
    /// entries it cannot place instead of stopping at the first page.
    async fn scan(
        &self,
        order: QueueOrder,
        after: Option<QueueCursor>,
        limit: usize,
    ) -> Result<QueuePage, StoreError>;
    /// Done with a claimed entry: removes it. A stale lease is refused.
    async fn complete(&self, lease: &Lease) -> Result<(), StoreError>;
    /// Done with many claimed entries at once: removes each entry whose lease
    /// is still held and returns the job ids of the stale leases (rescued,
    /// released, completed or removed meanwhile), which removed nothing. A
    /// store may do it in one round trip; this default completes them one by
    /// one.
    async fn complete_many(&self, leases: &[Lease]) -> Result<Vec<JobId>, StoreError> {
        let mut stale = Vec::new();
        for lease in leases {
            match self.complete(lease).await {
                Ok(()) => {}
                Err(StoreError::StaleLease { job_id }) => stale.push(job_id),
                Err(e) => return Err(e),
            }
        }
        Ok(stale)
    }
    /// Gives a claimed entry back to the queue. A stale lease is refused.
    async fn release(&self, lease: &Lease) -> Result<(), StoreError>;
    /// Extends a held lease to `now + lease_for` and returns it with its new
    /// expiry. A stale lease (rescued, released, completed or removed) is
    /// refused with [`StoreError::StaleLease`]: the holder has lost the entry.
    async fn renew(&self, lease: &Lease, lease_for: Duration) -> Result<Lease, StoreError>;
    /// Which of `job_ids` have an entry, claimed or not (reconciliation).
    async fn queued(
        &self,
        job_ids: &[JobId],
    ) -> Result<std::collections::HashSet<JobId>, StoreError>;
    /// Removes a job whether claimed or not (cancel). Returns whether it was there.
    async fn remove(&self, job_id: JobId) -> Result<bool, StoreError>;
    /// Returns entries whose lease expired before `now` to the queue.
    async fn rescue_expired(&self, now: DateTime<Utc>) -> Result<Vec<JobId>, StoreError>;
    /// Unclaimed entries.
    async fn len(&self) -> Result<usize, StoreError>;
    /// Whether there are no unclaimed entries.
    async fn is_empty(&self) -> Result<bool, StoreError> {
        Ok(self.len().await? == 0)
    }
    /// Wake-ups when another process enqueued work (e.g. Postgres LISTEN/NOTIFY).
    /// `None` when the queue is only used in this process.
    fn work_notifications(&self) -> Option<BoxStream<'static, ()>> {
        None
    }
}

/// Workers and their sessions, with optimistic concurrency on
/// [`Worker::version`] (replicas and tasks change the same worker: a stale
/// copy must not undo another's change).
#[async_trait]
pub trait WorkerRegistry: Send + Sync {
    /// Adds a worker; returns it with version 1.
    async fn register(&self, worker: &Worker) -> Result<Worker, StoreError>;
    /// A worker by id.
    async fn get(&self, id: WorkerId) -> Result<Option<Worker>, StoreError>;
    /// Stores a changed worker if the stored version equals `worker.version()`;
    /// returns it as stored, with the next version. A stale update is a
    /// [`StoreError::Conflict`]. Liveness written by [`WorkerRegistry::touch`]
    /// meanwhile (which bumps no version) is kept: the stored worker has the
    /// later of the two heartbeats and the newer of the two stats samples.
    async fn update(&self, worker: &Worker) -> Result<Worker, StoreError>;
    /// All workers.
    async fn list(&self) -> Result<Vec<Worker>, StoreError>;
    /// How many workers are in each state (states with none may be absent).
    /// Read on every `/metrics` scrape: implementations should count in the
    /// store rather than load every worker, as this default does.
    async fn count_by_state(
        &self,
    ) -> Result<BTreeMap<crate::domain::worker::WorkerState, u64>, StoreError> {
        let mut counts = BTreeMap::new();
        for w in self.list().await? {
            *counts.entry(w.state()).or_insert(0) += 1;
        }
        Ok(counts)
    }
    /// How many workers of each provider are not gone (not terminating or
    /// terminated); providers with none may be absent. Read by every
    /// scheduling pass for the providers' `max_workers`: implementations
    /// should count in the store rather than load every worker, as this
    /// default does.
    async fn count_alive_by_provider(&self) -> Result<BTreeMap<ProviderId, u32>, StoreError> {
        let mut counts = BTreeMap::new();
        for w in self.list().await? {
            if !w.state().is_gone() {
                *counts.entry(w.provider_id()).or_insert(0) += 1;
            }
        }
        Ok(counts)
    }
    /// How many workers of each provider are idle or on their way to being
    /// so (`Creating`, `Connecting`, or `Ready` with no job); providers with
    /// none may be absent. Read by the warm-pool pass once per reconcile
    /// interval: implementations should count in the store rather than load
    /// every worker, as this default does.
    async fn count_idle_by_provider(&self) -> Result<BTreeMap<ProviderId, u32>, StoreError> {
        let mut counts = BTreeMap::new();
        for w in self.list().await? {
            if w.is_idle_or_starting() {
                *counts.entry(w.provider_id()).or_insert(0) += 1;
            }
        }
        Ok(counts)
    }
    /// How many jobs the workers of one provider that are not gone hold now:
    /// the provider's load, refreshed on every assignment and release, so
    /// implementations should count in the store rather than load every
    /// worker, as this default does.
    async fn count_jobs_of_provider(&self, provider: ProviderId) -> Result<u32, StoreError> {
        let n: usize = self
            .list()
            .await?
            .iter()
            .filter(|w| w.provider_id() == provider && !w.state().is_gone())
            .map(|w| w.current_jobs().len())
            .sum();
        Ok(u32::try_from(n).unwrap_or(u32::MAX))
    }
    /// Records a heartbeat of a live worker in one atomic write, with no
    /// read-modify-write (heartbeats are the most frequent write; with
    /// thousands of agents they must not queue behind a lock) and no new
    /// version (a heartbeat never makes an update conflict): sets its last
    /// heartbeat to `at` and, when given and not older than the stored one,
    /// its stats. A worker that is gone (terminating, terminated) or unknown
    /// is left as it is and `None` is returned; otherwise the jobs it is
    /// assigned now.
    async fn touch(
        &self,
        id: WorkerId,
        at: DateTime<Utc>,
        stats: Option<&WorkerStats>,
    ) -> Result<Option<Vec<JobId>>, StoreError>;
    /// Removes a worker (and its session). Returns whether it existed.
    async fn remove(&self, id: WorkerId) -> Result<bool, StoreError>;
    /// Binds a session (by the hash of its token) to a worker, replacing any old one.
    async fn set_session(&self, id: WorkerId, token_hash: &str) -> Result<(), StoreError>;
    /// The worker a session token hash belongs to.
    async fn worker_for_session(&self, token_hash: &str) -> Result<Option<WorkerId>, StoreError>;
}

/// Registered providers.
#[async_trait]
pub trait ProviderConfigRepository: Send + Sync {
    /// Inserts or replaces by id. A different provider with the same name is refused.
    async fn save(&self, provider: &Provider) -> Result<(), StoreError>;
    /// By id.
    async fn get(&self, id: ProviderId) -> Result<Option<Provider>, StoreError>;
    /// By unique name.
    async fn get_by_name(&self, name: &str) -> Result<Option<Provider>, StoreError>;
    /// All, by name.
    async fn list(&self) -> Result<Vec<Provider>, StoreError>;
    /// Removes one. Returns whether it existed.
    async fn delete(&self, id: ProviderId) -> Result<bool, StoreError>;
}

/// A stored log entry with its attempt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredLogEntry {
    /// Attempt it belongs to.
    pub attempt: u32,
    /// The entry.
    pub entry: LogEntry,
}

/// Where to continue reading logs: strictly after this (attempt, sequence).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct LogCursor {
    /// Attempt.
    pub attempt: u32,
    /// Sequence within the attempt.
    pub sequence: u64,
}

/// Job logs, idempotent per (job, attempt, sequence).
#[async_trait]
pub trait LogStore: Send + Sync {
    /// Stores entries of one attempt. Entries whose sequence is already stored
    /// are ignored (a resent batch is harmless). Returns the highest sequence
    /// `s` such that every entry `1..=s` of the attempt is stored.
    async fn append(
        &self,
        job_id: JobId,
        attempt: u32,
        entries: &[LogEntry],
    ) -> Result<u64, StoreError>;
    /// Entries after `after`, ordered by (attempt, sequence), at most `limit`.
    async fn read(
        &self,
        job_id: JobId,
        after: LogCursor,
        limit: usize,
    ) -> Result<Vec<StoredLogEntry>, StoreError>;
    /// Highest contiguous stored sequence of an attempt (0 if none).
    async fn last_sequence(&self, job_id: JobId, attempt: u32) -> Result<u64, StoreError>;
    /// Deletes a job's logs. Returns how many entries were deleted.
    async fn delete(&self, job_id: JobId) -> Result<u64, StoreError>;
    /// Jobs whose logs another process (another replica) appended, as they
    /// are stored (e.g. Postgres LISTEN/NOTIFY), so this process's log
    /// followers read them at once instead of at their next quiet re-check.
    /// `None` when the store is only used in this process. Best effort: a
    /// wake-up may be dropped, never an entry (followers re-check anyway).
    fn appended_elsewhere(&self) -> Option<BoxStream<'static, JobId>> {
        None
    }
}

/// Why an OTP was refused. Deliberately coarse: a caller learns nothing about
/// which tokens exist.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum OtpError {
    /// Unknown, already used or expired.
    #[error("invalid, used or expired one-time token")]
    Invalid,
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// One-time registration tokens: single use, expiring, stored hashed.
#[async_trait]
pub trait OtpTokenStore: Send + Sync {
    /// Stores a token (by its SHA-256 hash, see [`crate::otp`]) for a worker until `expires_at`.
    async fn insert(
        &self,
        token_hash: &str,
        worker_id: WorkerId,
        expires_at: DateTime<Utc>,
    ) -> Result<(), StoreError>;
    /// Consumes a token atomically: returns its worker once; a second call,
    /// an unknown or an expired token is [`OtpError::Invalid`].
    async fn consume(&self, token_hash: &str, now: DateTime<Utc>) -> Result<WorkerId, OtpError>;
    /// Deletes expired tokens; returns how many.
    async fn purge_expired(&self, now: DateTime<Utc>) -> Result<u64, StoreError>;
}

/// Every store the control plane needs, as shared trait objects.
///
/// Build the embedded default with [`Stores::in_memory`]; a database crate
/// builds one from its own repositories.
#[derive(Clone)]
#[non_exhaustive]
pub struct Stores {
    /// Jobs.
    pub jobs: std::sync::Arc<dyn JobRepository>,
    /// The job queue.
    pub queue: std::sync::Arc<dyn JobQueue>,
    /// Workers and sessions.
    pub workers: std::sync::Arc<dyn WorkerRegistry>,
    /// Registered providers.
    pub providers: std::sync::Arc<dyn ProviderConfigRepository>,
    /// Job logs.
    pub logs: std::sync::Arc<dyn LogStore>,
    /// One-time registration tokens.
    pub otps: std::sync::Arc<dyn OtpTokenStore>,
    /// Versioned job templates (in memory unless set with [`Stores::with_templates`]).
    pub templates: std::sync::Arc<dyn TemplateStore>,
    /// The append-only audit log (in memory unless set with [`Stores::with_audit`]).
    pub audit: std::sync::Arc<dyn AuditLog>,
    /// Every job's state changes (the job page's timeline).
    pub job_history: std::sync::Arc<dyn JobHistoryStore>,
    /// Scheduling settings shared by replicas: the strategy and concurrency
    /// limits (in memory unless set with [`Stores::with_scheduling`]).
    pub scheduling: std::sync::Arc<dyn SchedulingStore>,
    /// A job's writes onto and off the queue, each in one operation over
    /// `jobs`, `queue`, `workers` and `job_history` (see
    /// [`QueueTransactions`]); `None`: the control plane goes step by step.
    /// It writes to the stores it was built on: a control plane built on a
    /// bundle where one of those four was replaced since goes step by step
    /// (see [`QueueTransactions::writes_to`]).
    pub queue_transactions: Option<std::sync::Arc<dyn QueueTransactions>>,
}

impl Stores {
    /// A bundle from its parts.
    pub fn new(
        jobs: std::sync::Arc<dyn JobRepository>,
        queue: std::sync::Arc<dyn JobQueue>,
        workers: std::sync::Arc<dyn WorkerRegistry>,
        providers: std::sync::Arc<dyn ProviderConfigRepository>,
        logs: std::sync::Arc<dyn LogStore>,
        otps: std::sync::Arc<dyn OtpTokenStore>,
        job_history: std::sync::Arc<dyn JobHistoryStore>,
    ) -> Self {
        Self {
            jobs,
            queue,
            workers,
            providers,
            logs,
            otps,
            templates: std::sync::Arc::new(InMemoryTemplateStore::default()),
            audit: std::sync::Arc::new(InMemoryAuditLog::default()),
            job_history,
            scheduling: std::sync::Arc::new(scheduling::InMemorySchedulingStore::default()),
            queue_transactions: None,
        }
    }

    /// The same bundle with `transactions` (`None`: step by step). They
    /// must write to this bundle's jobs, queue, workers and history.
    #[must_use]
    pub fn with_queue_transactions(
        mut self,
        transactions: Option<std::sync::Arc<dyn QueueTransactions>>,
    ) -> Self {
        self.queue_transactions = transactions;
        self
    }

    /// The same bundle with another scheduling store (e.g. a database's).
    #[must_use]
    pub fn with_scheduling(mut self, scheduling: std::sync::Arc<dyn SchedulingStore>) -> Self {
        self.scheduling = scheduling;
        self
    }

    /// The same bundle with another audit log (e.g. a database's).
    #[must_use]
    pub fn with_audit(mut self, audit: std::sync::Arc<dyn AuditLog>) -> Self {
        self.audit = audit;
        self
    }

    /// The same bundle with another template store (e.g. a database's).
    #[must_use]
    pub fn with_templates(mut self, templates: std::sync::Arc<dyn TemplateStore>) -> Self {
        self.templates = templates;
        self
    }

    /// Fresh, empty in-memory stores.
    #[must_use]
    pub fn in_memory() -> Self {
        let logs = std::sync::Arc::new(memory::InMemoryLogStore::default());
        let jobs = std::sync::Arc::new(memory::InMemoryJobRepository::with_logs(logs.clone()));
        let queue = std::sync::Arc::new(memory::InMemoryJobQueue::default());
        let workers = std::sync::Arc::new(memory::InMemoryWorkerRegistry::default());
        let job_history = std::sync::Arc::new(InMemoryJobHistoryStore::default());
        let transactions = memory::InMemoryQueueTransactions::new(
            queue.clone(),
            workers.clone(),
            jobs.clone(),
            job_history.clone(),
        );
        Self {
            jobs,
            queue,
            workers,
            providers: std::sync::Arc::new(memory::InMemoryProviderConfigRepository::default()),
            logs,
            otps: std::sync::Arc::new(memory::InMemoryOtpTokenStore::default()),
            templates: std::sync::Arc::new(InMemoryTemplateStore::default()),
            audit: std::sync::Arc::new(InMemoryAuditLog::default()),
            job_history,
            scheduling: std::sync::Arc::new(scheduling::InMemorySchedulingStore::default()),
            queue_transactions: Some(std::sync::Arc::new(transactions)),
        }
    }
}

impl std::fmt::Debug for Stores {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stores").finish_non_exhaustive()
    }
}

/// Decides which control-plane replica runs the maintenance work (lease
/// rescuer, server-side timeouts, pruning) when several share one database.
/// Every replica serves the APIs and dispatches; only the leader maintains.
#[async_trait]
pub trait LeaderElection: Send + Sync {
    /// Whether this replica leads now, acquiring or renewing its lease as needed.
    async fn is_leader(&self) -> bool;
}
