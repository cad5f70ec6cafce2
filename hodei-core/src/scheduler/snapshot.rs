//! What the scheduler sees: plain values the control plane fills from its
//! stores and providers before each decision.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::domain::ids::{JobId, ProviderId, WorkerId};
use crate::domain::pricing::ResourcePricing;
use crate::domain::provider::{Provider, ProviderCapabilities, ProviderStatus};
use crate::domain::worker::{Worker, WorkerState};
use crate::store::QueueEntry;

/// Free resources of a worker for one more job.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct WorkerResources {
    /// Free CPU cores.
    pub cpu_cores: f64,
    /// Free memory in MiB.
    pub memory_mb: u64,
    /// Whether it has a GPU.
    pub gpu: bool,
}

impl WorkerResources {
    /// Free CPU and memory, no GPU.
    #[must_use]
    pub fn new(cpu_cores: f64, memory_mb: u64) -> Self {
        Self {
            cpu_cores,
            memory_mb,
            gpu: false,
        }
    }

    /// Sets whether it has a GPU.
    #[must_use]
    pub fn with_gpu(mut self, gpu: bool) -> Self {
        self.gpu = gpu;
        self
    }
}

/// One worker, as the scheduler sees it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct WorkerView {
    /// The worker.
    pub id: WorkerId,
    /// Its provider.
    pub provider_id: ProviderId,
    /// Its state; only `Ready` and `Busy` workers take jobs.
    pub state: WorkerState,
    /// Jobs it can take now.
    pub free_slots: u32,
    /// Its labels (matched by constraints, over its provider's labels).
    pub labels: BTreeMap<String, String>,
    /// Free resources; `None` = unknown, taken as its provider's capabilities.
    pub resources: Option<WorkerResources>,
}

impl WorkerView {
    /// A view with no labels and unknown resources.
    #[must_use]
    pub fn new(id: WorkerId, provider_id: ProviderId, state: WorkerState, free_slots: u32) -> Self {
        Self {
            id,
            provider_id,
            state,
            free_slots,
            labels: BTreeMap::new(),
            resources: None,
        }
    }

    /// The view of a worker aggregate: free slots from its concurrency and lifetime limits.
    #[must_use]
    pub fn from_worker(worker: &Worker) -> Self {
        let running = u32::try_from(worker.current_jobs().len()).unwrap_or(u32::MAX);
        let mut free = worker.max_concurrent_jobs().saturating_sub(running);
        if let Some(max) = worker.max_jobs() {
            free = free.min(max.saturating_sub(worker.jobs_run()));
        }
        if !worker.has_capacity() {
            free = 0;
        }
        Self {
            id: worker.id(),
            provider_id: worker.provider_id(),
            state: worker.state(),
            free_slots: free,
            labels: worker.labels().clone(),
            resources: None,
        }
    }

    /// Sets the labels.
    #[must_use]
    pub fn with_labels(mut self, labels: BTreeMap<String, String>) -> Self {
        self.labels = labels;
        self
    }

    /// Sets the free resources.
    #[must_use]
    pub fn with_resources(mut self, resources: WorkerResources) -> Self {
        self.resources = Some(resources);
        self
    }

    /// Whether it can take a job at all (state and free slots).
    #[must_use]
    pub fn takes_jobs(&self) -> bool {
        matches!(self.state, WorkerState::Ready | WorkerState::Busy) && self.free_slots > 0
    }
}

/// One provider, as the scheduler sees it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ProviderView {
    /// Its id.
    pub id: ProviderId,
    /// Its unique name.
    pub name: String,
    /// What one worker can get.
    pub capabilities: ProviderCapabilities,
    /// Operational status; only `Active` providers get work.
    pub status: ProviderStatus,
    /// Workers it runs now.
    pub active_workers: u32,
    /// Most workers it may run.
    pub max_workers: u32,
    /// Cost of one worker-hour (from [`crate::provider::WorkerCost`]).
    pub cost_per_hour: f64,
    /// Expected time from create to registered (from [`crate::provider::WorkerCost`]).
    pub estimated_startup: Duration,
    /// Price of its resources; when set, a job's cost is priced from the
    /// job's own resources instead of `cost_per_hour`.
    pub pricing: Option<ResourcePricing>,
}

impl ProviderView {
    /// An `Active`, free, instant provider with no workers; `max_workers` from the capabilities.
    #[must_use]
    pub fn new(
        id: ProviderId,
        name: impl Into<String>,
        capabilities: ProviderCapabilities,
    ) -> Self {
        Self {
            id,
            name: name.into(),
            max_workers: capabilities.max_workers,
            capabilities,
            status: ProviderStatus::Active,
            active_workers: 0,
            cost_per_hour: 0.0,
            estimated_startup: Duration::ZERO,
            pricing: None,
        }
    }

    /// The view of a provider aggregate.
    #[must_use]
    pub fn from_provider(provider: &Provider) -> Self {
        let mut v = Self::new(
            provider.id(),
            provider.name(),
            provider.capabilities().clone(),
        );
        v.status = provider.status();
        v.pricing = provider.pricing();
        v
    }

    /// Sets the price of its resources.
    #[must_use]
    pub fn with_pricing(mut self, pricing: Option<ResourcePricing>) -> Self {
        self.pricing = pricing;
        self
    }

    /// The hourly cost of running `spec` here: its resources at
    /// [`ProviderView::pricing`], else the flat `cost_per_hour`.
    #[must_use]
    pub fn cost_for(&self, spec: &crate::domain::spec::JobSpec) -> f64 {
        self.pricing
            .map_or(self.cost_per_hour, |p| p.cost_per_hour(&spec.resources))
    }

    /// Sets the status.
    #[must_use]
    pub fn with_status(mut self, status: ProviderStatus) -> Self {
        self.status = status;
        self
    }

    /// Sets the worker counts.
    #[must_use]
    pub fn with_workers(mut self, active: u32, max: u32) -> Self {
        self.active_workers = active;
        self.max_workers = max;
        self
    }

    /// Sets the cost per worker-hour.
    #[must_use]
    pub fn with_cost_per_hour(mut self, cost: f64) -> Self {
        self.cost_per_hour = cost;
        self
    }

    /// Sets the expected start-up time.
    #[must_use]
    pub fn with_estimated_startup(mut self, d: Duration) -> Self {
        self.estimated_startup = d;
        self
    }

    /// Whether it takes work at all: `Active`, or `Overloaded`. The stored
    /// `overloaded` follows the provider's job count a moment behind its
    /// workers (it is recounted off the job path); the workers' free slots
    /// and the room for new workers, which this snapshot holds exactly, are
    /// what bound the jobs placed on it. Held back by it, a worker whose job
    /// just ended sat idle until the recount, at every job once a provider
    /// ran at its limit.
    #[must_use]
    pub fn is_available(&self) -> bool {
        matches!(
            self.status,
            ProviderStatus::Active | ProviderStatus::Overloaded
        )
    }

    /// Workers it may still create.
    #[must_use]
    pub fn free_worker_slots(&self) -> u32 {
        self.max_workers.saturating_sub(self.active_workers)
    }

    /// Whether `preferred` (a name or an id) names this provider.
    #[must_use]
    pub fn matches_name_or_id(&self, preferred: &str) -> bool {
        let p = preferred.trim();
        self.name == p || self.id.to_string().eq_ignore_ascii_case(p)
    }
}

/// Everything the scheduler decides from.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct SchedulingSnapshot {
    /// Workers that may be given a job (the control plane puts in only
    /// those that can take one now; others are allowed and never chosen).
    pub workers: Vec<WorkerView>,
    /// Registered providers.
    pub providers: Vec<ProviderView>,
    /// Where each worker sits in `workers`, built on the first
    /// [`SchedulingSnapshot::take_slot`]: a pass places many jobs on one
    /// snapshot of thousands of workers.
    #[serde(skip)]
    positions: Positions,
}

/// A worker id to index map over `SchedulingSnapshot::workers`. `workers` is
/// public and may change under it, so every hit is checked against the id
/// it points at and a miss rebuilds it. Not part of the snapshot's value.
///
/// The first few lookups of a snapshot scan instead: most passes place one
/// job or a few, and a scan of 10,000 views (tens of µs) is far cheaper than
/// hashing them all into a map (0.3–0.5 ms); a pass that places more builds
/// the map once.
#[derive(Debug, Clone, Default)]
struct Positions {
    map: Option<HashMap<WorkerId, usize>>,
    scans: u32,
}

/// Lookups of a snapshot that scan before the map is built.
const SCANS_BEFORE_MAP: u32 = 4;

impl PartialEq for Positions {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl Positions {
    /// The index of `worker` in `workers`, if it is there.
    fn find(&mut self, workers: &[WorkerView], worker: WorkerId) -> Option<usize> {
        let hit = |i: &usize| workers.get(*i).is_some_and(|v| v.id == worker);
        if self.map.is_none() && self.scans < SCANS_BEFORE_MAP {
            self.scans += 1;
            return workers.iter().position(|v| v.id == worker);
        }
        if let Some(i) = self.map.as_ref().and_then(|m| m.get(&worker)).copied()
            && hit(&i)
        {
            return Some(i);
        }
        if self.map.as_ref().is_some_and(|m| m.len() == workers.len()) {
            // Possibly current: confirm the miss before paying a rebuild.
            workers.iter().position(|v| v.id == worker)?;
        }
        let map: HashMap<WorkerId, usize> = workers
            .iter()
            .enumerate()
            .rev() // the first of duplicate ids wins, as a linear search would
            .map(|(i, v)| (v.id, i))
            .collect();
        let found = map.get(&worker).copied();
        self.map = Some(map);
        found
    }
}

impl SchedulingSnapshot {
    /// A snapshot of these workers and providers.
    #[must_use]
    pub fn new(workers: Vec<WorkerView>, providers: Vec<ProviderView>) -> Self {
        Self {
            workers,
            providers,
            positions: Positions::default(),
        }
    }

    /// Whether any job could still be placed: a worker with a free slot of
    /// an available provider of this snapshot, or an available provider
    /// with room for another worker. A free worker whose provider is
    /// unhealthy, paused by an operator or not one of the snapshot's can
    /// take no job, so it does not count: otherwise a pass would read every
    /// queued job only to find each one waiting.
    #[must_use]
    pub fn has_capacity(&self) -> bool {
        let available = |id: ProviderId| {
            self.providers
                .iter()
                .any(|p| p.id == id && p.is_available())
        };
        self.workers
            .iter()
            .any(|w| w.takes_jobs() && available(w.provider_id))
            || self
                .providers
                .iter()
                .any(|p| p.is_available() && p.free_worker_slots() > 0)
    }

    /// How many more jobs could be placed, counted up to `cap`: the free
    /// slots of workers of this snapshot's available providers, and the room
    /// for new workers on available providers. A pass reads that many
    /// queued jobs at once; the count stops at `cap`, so with thousands of
    /// idle workers it looks at only the first few.
    #[must_use]
    pub fn free_capacity(&self, cap: usize) -> usize {
        let available = |id: ProviderId| {
            self.providers
                .iter()
                .any(|p| p.id == id && p.is_available())
        };
        let mut n = 0usize;
        for p in self.providers.iter().filter(|p| p.is_available()) {
            n = n.saturating_add(p.free_worker_slots() as usize);
            if n >= cap {
                return cap;
            }
        }
        for w in &self.workers {
            if w.takes_jobs() && available(w.provider_id) {
                n = n.saturating_add(w.free_slots as usize);
                if n >= cap {
                    return cap;
                }
            }
        }
        n
    }

    /// A job took a slot of this worker (one pass places many jobs on one
    /// snapshot). O(1) after the first call on a snapshot.
    pub fn take_slot(&mut self, worker: WorkerId) {
        let at = self.positions.find(&self.workers, worker);
        if let Some(v) = at.and_then(|i| self.workers.get_mut(i)) {
            v.free_slots = v.free_slots.saturating_sub(1);
        }
    }

    /// A worker is being provisioned on this provider.
    pub fn add_provisioning(&mut self, provider: ProviderId) {
        if let Some(v) = self.providers.iter_mut().find(|v| v.id == provider) {
            v.active_workers += 1;
        }
    }
}

/// A queued job, as the queue orderer sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct QueueView {
    /// The job.
    pub job_id: JobId,
    /// Its priority (higher first).
    pub priority: i32,
    /// When it was queued.
    pub enqueued_at: DateTime<Utc>,
}

impl QueueView {
    /// A view of a queued job.
    #[must_use]
    pub fn new(job_id: JobId, priority: i32, enqueued_at: DateTime<Utc>) -> Self {
        Self {
            job_id,
            priority,
            enqueued_at,
        }
    }
}

impl From<&QueueEntry> for QueueView {
    fn from(e: &QueueEntry) -> Self {
        Self::new(e.job_id, e.priority, e.enqueued_at)
    }
}
