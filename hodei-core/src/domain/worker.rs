//! The [`Worker`] aggregate and its state machine, plus what providers need to
//! create one ([`WorkerSpec`]) and what they hand back ([`WorkerHandle`]).

use std::collections::BTreeMap;
use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::domain::agent_env;
use crate::domain::error::DomainError;
use crate::domain::ids::{JobId, ProviderId, WorkerId};
use crate::domain::spec::JobResources;
use crate::domain::worker_stats::WorkerStats;

/// Lifecycle state of a worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WorkerState {
    /// The provider is creating it.
    Creating,
    /// Created; the agent has not registered yet.
    Connecting,
    /// Registered and idle.
    Ready,
    /// Running at least one job.
    Busy,
    /// Finishing its jobs; takes no new ones.
    Draining,
    /// Being destroyed.
    Terminating,
    /// Gone.
    Terminated,
}

impl WorkerState {
    /// Every allowed transition. Anything else is refused.
    pub const TRANSITIONS: &'static [(WorkerState, WorkerState)] = &[
        (WorkerState::Creating, WorkerState::Connecting),
        // The agent registered before the provider's create call returned.
        (WorkerState::Creating, WorkerState::Ready),
        (WorkerState::Creating, WorkerState::Terminating),
        (WorkerState::Creating, WorkerState::Terminated),
        (WorkerState::Connecting, WorkerState::Ready),
        (WorkerState::Connecting, WorkerState::Terminating),
        (WorkerState::Connecting, WorkerState::Terminated),
        (WorkerState::Ready, WorkerState::Busy),
        (WorkerState::Ready, WorkerState::Draining),
        (WorkerState::Ready, WorkerState::Terminating),
        (WorkerState::Ready, WorkerState::Terminated),
        // A worker that lost its stream and re-registers.
        (WorkerState::Ready, WorkerState::Connecting),
        (WorkerState::Busy, WorkerState::Ready),
        (WorkerState::Busy, WorkerState::Draining),
        (WorkerState::Busy, WorkerState::Terminating),
        (WorkerState::Busy, WorkerState::Terminated),
        (WorkerState::Busy, WorkerState::Connecting),
        (WorkerState::Draining, WorkerState::Terminating),
        (WorkerState::Draining, WorkerState::Terminated),
        (WorkerState::Terminating, WorkerState::Terminated),
    ];

    /// All states.
    pub const ALL: [WorkerState; 7] = [
        WorkerState::Creating,
        WorkerState::Connecting,
        WorkerState::Ready,
        WorkerState::Busy,
        WorkerState::Draining,
        WorkerState::Terminating,
        WorkerState::Terminated,
    ];

    /// Whether `self -> to` is in the table.
    #[must_use]
    pub fn can_transition_to(self, to: WorkerState) -> bool {
        Self::TRANSITIONS.contains(&(self, to))
    }

    /// Lower-case name.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            WorkerState::Creating => "creating",
            WorkerState::Connecting => "connecting",
            WorkerState::Ready => "ready",
            WorkerState::Busy => "busy",
            WorkerState::Draining => "draining",
            WorkerState::Terminating => "terminating",
            WorkerState::Terminated => "terminated",
        }
    }

    /// Whether the worker is gone or going.
    #[must_use]
    pub const fn is_gone(self) -> bool {
        matches!(self, WorkerState::Terminating | WorkerState::Terminated)
    }
}

impl fmt::Display for WorkerState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Key of [`WorkerSpec::env`] set to the job's timeout in whole seconds when the worker is
/// made for that one job only (an ephemeral worker): providers may bound the worker's
/// lifetime by it (the Kubernetes provider sets `activeDeadlineSeconds`).
pub const WORKER_ENV_JOB_TIMEOUT_SECS: &str = "HODEI_JOB_TIMEOUT_SECS";

/// What a provider needs to create one worker.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct WorkerSpec {
    /// The id the worker will register with.
    pub worker_id: WorkerId,
    /// The provider that creates it.
    pub provider_id: ProviderId,
    /// Image, for providers that use one.
    pub image: Option<String>,
    /// Resources to give it.
    pub resources: JobResources,
    /// gRPC address of the control plane as seen from the worker (`HODEI_SERVER`): one URL
    /// or several comma-separated (replicas, dialled in turn).
    pub server_address: String,
    /// One-time registration token. Never logged.
    pub otp: String,
    /// Extra environment for the agent.
    pub env: BTreeMap<String, String>,
    /// Labels to attach.
    pub labels: BTreeMap<String, String>,
    /// Jobs the agent may run at once.
    pub max_concurrent_jobs: u32,
}

impl WorkerSpec {
    /// A spec with default resources.
    pub fn new(
        worker_id: WorkerId,
        provider_id: ProviderId,
        server_address: impl Into<String>,
        otp: impl Into<String>,
    ) -> Self {
        Self {
            worker_id,
            provider_id,
            image: None,
            resources: JobResources::default(),
            server_address: server_address.into(),
            otp: otp.into(),
            env: BTreeMap::new(),
            labels: BTreeMap::new(),
            max_concurrent_jobs: 1,
        }
    }

    /// The environment an agent needs: OTP, server address and worker id, plus `env`.
    #[must_use]
    pub fn agent_env(&self) -> BTreeMap<String, String> {
        let mut env = self.env.clone();
        env.insert(agent_env::OTP.into(), self.otp.clone());
        env.insert(agent_env::SERVER.into(), self.server_address.clone());
        env.insert(agent_env::WORKER_ID.into(), self.worker_id.to_string());
        env.insert(
            agent_env::MAX_CONCURRENT_JOBS.into(),
            self.max_concurrent_jobs.to_string(),
        );
        env
    }
}

impl fmt::Debug for WorkerSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WorkerSpec")
            .field("worker_id", &self.worker_id)
            .field("provider_id", &self.provider_id)
            .field("image", &self.image)
            .field("resources", &self.resources)
            .field("server_address", &self.server_address)
            .field("otp", &"***")
            .finish_non_exhaustive()
    }
}

/// What a provider returns for a worker it created: enough to find it again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct WorkerHandle {
    /// The worker.
    pub worker_id: WorkerId,
    /// Its provider.
    pub provider_id: ProviderId,
    /// The provider's own id for it (pid, container id, pod name, …).
    pub external_id: String,
    /// Provider-specific details.
    pub metadata: BTreeMap<String, String>,
}

impl WorkerHandle {
    /// A handle with no metadata.
    pub fn new(
        worker_id: WorkerId,
        provider_id: ProviderId,
        external_id: impl Into<String>,
    ) -> Self {
        Self {
            worker_id,
            provider_id,
            external_id: external_id.into(),
            metadata: BTreeMap::new(),
        }
    }
}

/// The worker aggregate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Worker {
    id: WorkerId,
    provider_id: ProviderId,
    state: WorkerState,
    handle: Option<WorkerHandle>,
    current_jobs: Vec<JobId>,
    max_concurrent_jobs: u32,
    /// Jobs a worker may run over its life; `None` = unlimited. 1 = ephemeral.
    max_jobs: Option<u32>,
    jobs_run: u32,
    labels: BTreeMap<String, String>,
    created_at: DateTime<Utc>,
    last_heartbeat: DateTime<Utc>,
    idle_since: Option<DateTime<Utc>>,
    /// Latest resource usage its agent reported (absent in rows stored
    /// before stats existed).
    #[serde(default)]
    stats: Option<WorkerStats>,
    /// Optimistic-concurrency version, managed by the worker registry (absent
    /// in rows stored before workers had versions).
    #[serde(default)]
    version: u64,
}

impl Worker {
    /// A new worker in `Creating`.
    #[must_use]
    pub fn new(id: WorkerId, provider_id: ProviderId) -> Self {
        let now = Utc::now();
        Self {
            id,
            provider_id,
            state: WorkerState::Creating,
            handle: None,
            current_jobs: Vec::new(),
            max_concurrent_jobs: 1,
            max_jobs: None,
            jobs_run: 0,
            labels: BTreeMap::new(),
            created_at: now,
            last_heartbeat: now,
            idle_since: None,
            stats: None,
            version: 0,
        }
    }

    /// Sets concurrency and lifetime limits.
    #[must_use]
    pub fn with_limits(mut self, max_concurrent_jobs: u32, max_jobs: Option<u32>) -> Self {
        self.max_concurrent_jobs = max_concurrent_jobs.max(1);
        self.max_jobs = max_jobs;
        self
    }

    /// Sets labels.
    #[must_use]
    pub fn with_labels(mut self, labels: BTreeMap<String, String>) -> Self {
        self.labels = labels;
        self
    }

    /// The id.
    #[must_use]
    pub fn id(&self) -> WorkerId {
        self.id
    }
    /// Its provider.
    #[must_use]
    pub fn provider_id(&self) -> ProviderId {
        self.provider_id
    }
    /// Current state.
    #[must_use]
    pub fn state(&self) -> WorkerState {
        self.state
    }
    /// The provider's handle, once created.
    #[must_use]
    pub fn handle(&self) -> Option<&WorkerHandle> {
        self.handle.as_ref()
    }
    /// Jobs running on it.
    #[must_use]
    pub fn current_jobs(&self) -> &[JobId] {
        &self.current_jobs
    }
    /// Jobs it may run at once.
    #[must_use]
    pub fn max_concurrent_jobs(&self) -> u32 {
        self.max_concurrent_jobs
    }
    /// Jobs it may run over its life.
    #[must_use]
    pub fn max_jobs(&self) -> Option<u32> {
        self.max_jobs
    }
    /// Jobs it has been given so far.
    #[must_use]
    pub fn jobs_run(&self) -> u32 {
        self.jobs_run
    }
    /// Labels.
    #[must_use]
    pub fn labels(&self) -> &BTreeMap<String, String> {
        &self.labels
    }
    /// Creation time.
    #[must_use]
    pub fn created_at(&self) -> DateTime<Utc> {
        self.created_at
    }
    /// Last heartbeat (or creation).
    #[must_use]
    pub fn last_heartbeat(&self) -> DateTime<Utc> {
        self.last_heartbeat
    }
    /// Since when it has been idle, if it is.
    #[must_use]
    pub fn idle_since(&self) -> Option<DateTime<Utc>> {
        self.idle_since
    }
    /// Optimistic-concurrency version (see [`crate::store::WorkerRegistry`]).
    #[must_use]
    pub fn version(&self) -> u64 {
        self.version
    }
    /// Sets the version. Only worker registries call this, after storing the worker.
    pub fn set_version(&mut self, version: u64) {
        self.version = version;
    }

    /// Whether it counts towards its pool's idle workers: holding no job,
    /// and `Ready` or on its way there (`Creating`, `Connecting`).
    #[must_use]
    pub fn is_idle_or_starting(&self) -> bool {
        matches!(
            self.state,
            WorkerState::Creating | WorkerState::Connecting | WorkerState::Ready
        ) && self.current_jobs.is_empty()
    }

    /// Whether it can take one more job now.
    #[must_use]
    pub fn has_capacity(&self) -> bool {
        matches!(self.state, WorkerState::Ready | WorkerState::Busy)
            && (self.current_jobs.len() as u32) < self.max_concurrent_jobs
            && self.max_jobs.is_none_or(|m| self.jobs_run < m)
    }

    /// Whether it has used up its lifetime job budget (ephemeral workers).
    #[must_use]
    pub fn is_exhausted(&self) -> bool {
        self.max_jobs.is_some_and(|m| self.jobs_run >= m)
    }

    fn refused(&self, to: &str) -> DomainError {
        DomainError::InvalidStateTransition {
            entity: "worker",
            from: self.state.to_string(),
            to: to.to_owned(),
        }
    }

    fn transition(&mut self, to: WorkerState) -> Result<(), DomainError> {
        if self.state == to {
            return Ok(());
        }
        if !self.state.can_transition_to(to) {
            return Err(DomainError::InvalidStateTransition {
                entity: "worker",
                from: self.state.to_string(),
                to: to.to_string(),
            });
        }
        self.state = to;
        Ok(())
    }

    /// `Creating -> Connecting`, with the provider's handle. When the agent
    /// was faster than the provider's create call and has registered already,
    /// the worker keeps its state and only gets its handle.
    pub fn created(&mut self, handle: WorkerHandle) -> Result<(), DomainError> {
        match self.state {
            WorkerState::Creating => self.transition(WorkerState::Connecting)?,
            // `Ready|Busy -> Connecting` is for a dropped stream (`disconnected`),
            // never for a late `created`: a registered worker stays as it is.
            WorkerState::Connecting
            | WorkerState::Ready
            | WorkerState::Busy
            | WorkerState::Draining
                if self.handle.is_none() => {}
            _ => return Err(self.refused("connecting (created)")),
        }
        self.handle = Some(handle);
        Ok(())
    }

    /// The agent registered: `Connecting -> Ready` (or `Busy` if it still runs
    /// jobs); also `Creating -> Ready` when the agent is up before the
    /// provider's create call returned (the handle comes with `created`).
    pub fn registered(&mut self) -> Result<(), DomainError> {
        let to = if self.current_jobs.is_empty() {
            WorkerState::Ready
        } else {
            WorkerState::Busy
        };
        if matches!(self.state, WorkerState::Connecting | WorkerState::Creating)
            && to == WorkerState::Busy
        {
            self.transition(WorkerState::Ready)?;
        }
        self.transition(to)?;
        self.last_heartbeat = Utc::now();
        if to == WorkerState::Ready {
            self.idle_since.get_or_insert(self.last_heartbeat);
        }
        Ok(())
    }

    /// The agent's stream dropped; it may come back.
    pub fn disconnected(&mut self) -> Result<(), DomainError> {
        // A worker still being created has no stream, and `Connecting` needs its handle.
        if self.state == WorkerState::Creating {
            return Err(self.refused("connecting (disconnected)"));
        }
        self.transition(WorkerState::Connecting)
    }

    /// A heartbeat arrived.
    pub fn heartbeat(&mut self) {
        self.heartbeat_at(Utc::now());
    }

    /// A heartbeat arrived at `at`.
    pub fn heartbeat_at(&mut self, at: DateTime<Utc>) {
        self.last_heartbeat = at;
    }

    /// Its agent reported resource usage: kept unless an newer sample is
    /// stored already (stats and heartbeats may arrive out of order).
    pub fn record_stats(&mut self, stats: WorkerStats) {
        if self
            .stats
            .as_ref()
            .is_none_or(|old| old.sampled_at <= stats.sampled_at)
        {
            self.stats = Some(stats);
        }
    }

    /// The latest resource usage its agent reported.
    #[must_use]
    pub fn stats(&self) -> Option<&WorkerStats> {
        self.stats.as_ref()
    }

    /// Gives it a job: `Ready|Busy -> Busy`.
    pub fn assign(&mut self, job: JobId) -> Result<(), DomainError> {
        if !self.has_capacity() {
            return Err(DomainError::InvalidStateTransition {
                entity: "worker",
                from: self.state.to_string(),
                to: "busy (no capacity)".to_owned(),
            });
        }
        self.transition(WorkerState::Busy)?;
        self.current_jobs.push(job);
        self.jobs_run += 1;
        self.idle_since = None;
        Ok(())
    }

    /// A job ended: `Busy -> Ready` when nothing else runs (`Draining` stays).
    pub fn release(&mut self, job: JobId) -> Result<(), DomainError> {
        self.current_jobs.retain(|j| *j != job);
        if self.current_jobs.is_empty() && self.state == WorkerState::Busy {
            self.transition(WorkerState::Ready)?;
            self.idle_since = Some(Utc::now());
        }
        Ok(())
    }

    /// Stops taking jobs.
    pub fn drain(&mut self) -> Result<(), DomainError> {
        self.transition(WorkerState::Draining)
    }

    /// Being destroyed.
    pub fn terminating(&mut self) -> Result<(), DomainError> {
        self.transition(WorkerState::Terminating)
    }

    /// Gone. Returns the jobs that were still on it.
    pub fn terminated(&mut self) -> Result<Vec<JobId>, DomainError> {
        self.transition(WorkerState::Terminated)?;
        Ok(std::mem::take(&mut self.current_jobs))
    }
}
