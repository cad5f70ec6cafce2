//! Scheduling: pure functions from a [`SchedulingSnapshot`] to a [`Decision`],
//! and from the queue to the order in which jobs are considered. No I/O.
//!
//! ```
//! use hodei_core::scheduler::{decide, Decision, ProviderView, SchedulingSnapshot, Strategy};
//! use hodei_core::{CommandType, JobSpec, ProviderCapabilities, ProviderId};
//!
//! let cheap = ProviderView::new(ProviderId::new(), "cheap", ProviderCapabilities::default())
//!     .with_cost_per_hour(0.1);
//! let dear = ProviderView::new(ProviderId::new(), "dear", ProviderCapabilities::default())
//!     .with_cost_per_hour(2.0);
//! let snapshot = SchedulingSnapshot::new(vec![], vec![dear, cheap.clone()]);
//! let spec = JobSpec::new("build", CommandType::shell("make", ["all"]));
//! assert_eq!(decide(Strategy::CostAware, &spec, &snapshot), Decision::Provision(cheap.id));
//! ```

mod fairness;
mod snapshot;
mod strategy;
#[cfg(test)]
mod tests;

use std::cmp::Ordering;
use std::collections::HashMap;
use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::domain::ids::{JobId, ProviderId, WorkerId};
use crate::domain::spec::JobSpec;

pub use fairness::{AGING_MS_PER_POINT, QueueCursor, QueueOrder, QueuePage, aged_rank};
pub use snapshot::{ProviderView, QueueView, SchedulingSnapshot, WorkerResources, WorkerView};
pub use strategy::{Strategy, UnknownStrategy};

/// Aging of [`Strategy::Priority`] (and every placement strategy's queue
/// order): a job's effective priority grows by this many points per minute
/// it has waited, so a job of priority -1000 overtakes a fresh job of
/// priority 1000 after 200 minutes, and one of priority 0 overtakes a fresh
/// priority-10 job after one minute.
pub const AGING_POINTS_PER_MINUTE: f64 = 10.0;

/// What to do with a job now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Decision {
    /// Run it on this existing worker (it has a free slot).
    AssignWorker(WorkerId),
    /// Create a new worker on this provider for it.
    Provision(ProviderId),
    /// Leave it queued, for this reason.
    Wait(WaitReason),
}

/// Why a job has to wait.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "reason")]
#[non_exhaustive]
pub enum WaitReason {
    /// No provider is registered.
    NoProviders,
    /// The job requires a provider (by name or id) that is not registered.
    PreferredProviderNotFound {
        /// The name or id the job asked for.
        preferred: String,
    },
    /// No provider can run the job at all (resources, GPU, architecture, constraints).
    NoEligibleProvider {
        /// `provider: why`, for each provider considered.
        reasons: Vec<String>,
    },
    /// Eligible providers exist, but none is `Active` (unhealthy, maintenance, …).
    NoAvailableProvider {
        /// `provider: status`, for each eligible provider.
        statuses: Vec<String>,
    },
    /// Every eligible, available provider is at its worker limit and no worker has a free slot.
    AtCapacity,
    /// As many jobs with its concurrency key as the key's limit allows are
    /// scheduled or running.
    ConcurrencyLimit {
        /// The job's `concurrency_key`.
        key: String,
    },
}

impl fmt::Display for WaitReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WaitReason::NoProviders => f.write_str("no provider is registered"),
            WaitReason::PreferredProviderNotFound { preferred } => {
                write!(f, "required provider {preferred:?} is not registered")
            }
            WaitReason::NoEligibleProvider { reasons } => {
                write!(f, "no provider can run this job: {}", reasons.join("; "))
            }
            WaitReason::NoAvailableProvider { statuses } => {
                write!(f, "no eligible provider is active: {}", statuses.join("; "))
            }
            WaitReason::AtCapacity => f.write_str("every eligible provider is at capacity"),
            WaitReason::ConcurrencyLimit { key } => {
                write!(f, "concurrency limit of key {key:?} reached")
            }
        }
    }
}

/// Leftover share after placing `need` into `free` (0 = perfect fit).
fn leftover(free: f64, need: f64) -> f64 {
    if free <= 0.0 {
        0.0
    } else {
        ((free - need) / free).max(0.0)
    }
}

/// The first element with the smallest key (stable among equals).
fn first_min_by<T>(
    items: impl Iterator<Item = T>,
    mut cmp: impl FnMut(&T, &T) -> Ordering,
) -> Option<T> {
    let mut best: Option<T> = None;
    for item in items {
        best = match best {
            Some(b) if cmp(&item, &b) != Ordering::Less => Some(b),
            _ => Some(item),
        };
    }
    best
}

/// The first item that is `idle`, else the first item: what `first_min_by`
/// on "idle before busy" returns, but it stops at the first idle one, so
/// placing a job among thousands of idle workers reads one of them.
fn first_idle_else_first<T>(
    items: impl Iterator<Item = T>,
    idle: impl Fn(&T) -> bool,
) -> Option<T> {
    let mut first = None;
    for item in items {
        if idle(&item) {
            return Some(item);
        }
        first.get_or_insert(item);
    }
    first
}

/// Decides what to do with a job of this spec now.
///
/// Filters, in order: the spec's `preferences.preferred_provider` (a provider
/// name or id, treated as required); eligibility by the provider's
/// capabilities ([`crate::ProviderCapabilities::ineligibility`]); provider
/// status (`Active` only). Then an existing `Ready`/`Busy` worker of an
/// allowed provider with a free slot, whose labels (over its provider's)
/// meet the constraints and whose free resources fit, is preferred over
/// provisioning; a provider is provisioned only below its worker limit. With
/// `preferences.preferred_region`, the providers listing that region are
/// tried first and the others only when none of them can take the job. The
/// strategy ranks the candidates (see [`Strategy`]).
#[must_use]
pub fn decide(strategy: Strategy, spec: &JobSpec, snapshot: &SchedulingSnapshot) -> Decision {
    decide_with(strategy, spec, snapshot, |_| None)
}

/// [`decide`], with a further eligibility check per provider: `ineligible`
/// returns why a provider cannot run the spec (the provider's own
/// [`crate::provider::WorkerEligibility`] check, e.g. Docker's missing worker
/// image), or `None`. A provider it refuses is skipped like one whose
/// capabilities do not fit, and its reason shows in
/// [`WaitReason::NoEligibleProvider`].
#[must_use]
pub fn decide_with(
    strategy: Strategy,
    spec: &JobSpec,
    snapshot: &SchedulingSnapshot,
    ineligible: impl Fn(&ProviderView) -> Option<String>,
) -> Decision {
    if snapshot.providers.is_empty() {
        return Decision::Wait(WaitReason::NoProviders);
    }
    let preferred = spec
        .preferences
        .preferred_provider
        .as_deref()
        .map(str::trim)
        .filter(|p| !p.is_empty());
    let named: Vec<&ProviderView> = snapshot
        .providers
        .iter()
        .filter(|p| preferred.is_none_or(|name| p.matches_name_or_id(name)))
        .collect();
    if named.is_empty() {
        return Decision::Wait(WaitReason::PreferredProviderNotFound {
            preferred: preferred.unwrap_or_default().to_owned(),
        });
    }

    let mut reasons = Vec::new();
    let eligible: Vec<&ProviderView> = named
        .into_iter()
        .filter(
            |p| match p.capabilities.ineligibility(spec).or_else(|| ineligible(p)) {
                None => true,
                Some(why) => {
                    reasons.push(format!("{}: {why}", p.name));
                    false
                }
            },
        )
        .collect();
    if eligible.is_empty() {
        return Decision::Wait(WaitReason::NoEligibleProvider { reasons });
    }
    let allowed: Vec<&ProviderView> = eligible
        .iter()
        .copied()
        .filter(|p| p.is_available())
        .collect();
    if allowed.is_empty() {
        let statuses = eligible
            .iter()
            .map(|p| format!("{}: {}", p.name, p.status))
            .collect();
        return Decision::Wait(WaitReason::NoAvailableProvider { statuses });
    }

    // `preferred_region` is a preference: the providers running in that
    // region are tried first (a worker, then a new one), the others after.
    let region = spec
        .preferences
        .preferred_region
        .as_deref()
        .map(str::trim)
        .filter(|r| !r.is_empty());
    if let Some(region) = region {
        let in_region: Vec<&ProviderView> = allowed
            .iter()
            .copied()
            .filter(|p| p.capabilities.regions.iter().any(|r| r == region))
            .collect();
        if let Some(d) = place(strategy, spec, &in_region, &snapshot.workers) {
            return d;
        }
    }
    place(strategy, spec, &allowed, &snapshot.workers)
        .unwrap_or(Decision::Wait(WaitReason::AtCapacity))
}

/// An existing worker of one of `allowed`, else a new one, if either can be had.
fn place(
    strategy: Strategy,
    spec: &JobSpec,
    allowed: &[&ProviderView],
    workers: &[WorkerView],
) -> Option<Decision> {
    if let Some(w) = pick_worker(strategy, spec, allowed, workers) {
        return Some(Decision::AssignWorker(w));
    }
    pick_provider(strategy, spec, allowed).map(Decision::Provision)
}

/// The best existing worker for the spec, if any can take it.
fn pick_worker(
    strategy: Strategy,
    spec: &JobSpec,
    allowed: &[&ProviderView],
    workers: &[WorkerView],
) -> Option<WorkerId> {
    let by_id: HashMap<ProviderId, &ProviderView> = allowed.iter().map(|p| (p.id, *p)).collect();
    let need = &spec.resources;
    let candidates = workers.iter().filter_map(|w| {
        if !w.takes_jobs() {
            return None;
        }
        let p = *by_id.get(&w.provider_id)?;
        // Free resources: reported, or the provider's per-worker maximum.
        let (cpu, mem, gpu) = match w.resources {
            Some(r) => (r.cpu_cores, r.memory_mb, r.gpu),
            None => (
                p.capabilities.max_cpu_cores,
                p.capabilities.max_memory_mb,
                p.capabilities.gpu,
            ),
        };
        if need.cpu_cores > cpu || need.memory_mb > mem || (need.gpu_required && !gpu) {
            return None;
        }
        if !spec.constraints.is_empty() && !w.labels.is_empty() {
            let mut labels = p.capabilities.labels.clone();
            labels.extend(w.labels.iter().map(|(k, v)| (k.clone(), v.clone())));
            if !spec.constraints.iter().all(|c| c.matches(&labels)) {
                return None;
            }
        }
        Some((w, p, cpu, mem))
    });
    let best = match strategy {
        Strategy::Fifo | Strategy::Priority | Strategy::FastestStartup => {
            // Any worker starts in zero time; an idle one before a busy one.
            first_idle_else_first(candidates, |c| c.0.state == crate::WorkerState::Ready)
        }
        Strategy::LeastLoaded => first_min_by(candidates, |a, b| {
            b.0.free_slots
                .cmp(&a.0.free_slots)
                .then_with(|| b.2.total_cmp(&a.2))
        }),
        Strategy::BinPacking => first_min_by(candidates, |a, b| {
            let fit = |c: f64, m: u64| {
                leftover(c, need.cpu_cores) + leftover(m as f64, need.memory_mb as f64)
            };
            fit(a.2, a.3)
                .total_cmp(&fit(b.2, b.3))
                .then_with(|| a.0.free_slots.cmp(&b.0.free_slots))
        }),
        Strategy::CostAware => first_min_by(candidates, |a, b| {
            a.1.cost_for(spec).total_cmp(&b.1.cost_for(spec))
        }),
    };
    best.map(|(w, ..)| w.id)
}

/// The best provider to provision a worker on, if any has room.
fn pick_provider(
    strategy: Strategy,
    spec: &JobSpec,
    allowed: &[&ProviderView],
) -> Option<ProviderId> {
    let need = &spec.resources;
    let mut candidates = allowed
        .iter()
        .copied()
        .filter(|p| p.free_worker_slots() > 0);
    let best = match strategy {
        Strategy::Fifo | Strategy::Priority => candidates.next(),
        Strategy::LeastLoaded => first_min_by(candidates, |a, b| {
            let share = |p: &ProviderView| {
                f64::from(p.free_worker_slots()) / f64::from(p.max_workers.max(1))
            };
            share(b)
                .total_cmp(&share(a))
                .then_with(|| b.free_worker_slots().cmp(&a.free_worker_slots()))
        }),
        Strategy::BinPacking => first_min_by(candidates, |a, b| {
            let fit = |p: &ProviderView| {
                leftover(p.capabilities.max_cpu_cores, need.cpu_cores)
                    + leftover(p.capabilities.max_memory_mb as f64, need.memory_mb as f64)
            };
            fit(a).total_cmp(&fit(b))
        }),
        Strategy::CostAware => first_min_by(candidates, |a, b| {
            a.cost_for(spec).total_cmp(&b.cost_for(spec))
        }),
        Strategy::FastestStartup => first_min_by(candidates, |a, b| {
            a.estimated_startup.cmp(&b.estimated_startup)
        }),
    };
    best.map(|p| p.id)
}

/// A job's priority plus its aging bonus at `now` (see [`AGING_POINTS_PER_MINUTE`]).
#[must_use]
pub fn effective_priority(job: &QueueView, now: DateTime<Utc>) -> f64 {
    let waited_ms = (now - job.enqueued_at).num_milliseconds().max(0) as f64;
    f64::from(job.priority) + waited_ms / 60_000.0 * AGING_POINTS_PER_MINUTE
}

/// The order in which to consider queued jobs at `now`.
///
/// [`Strategy::Fifo`]: oldest first. Every other strategy: highest
/// [`effective_priority`] first, so a low priority job is never starved; ties
/// go to the oldest, then to the smaller job id (deterministic).
#[must_use]
pub fn order_queue(strategy: Strategy, jobs: &[QueueView], now: DateTime<Utc>) -> Vec<JobId> {
    let mut keyed: Vec<(f64, &QueueView)> = jobs
        .iter()
        .map(|j| {
            let key = match strategy {
                Strategy::Fifo => 0.0,
                _ => effective_priority(j, now),
            };
            (key, j)
        })
        .collect();
    keyed.sort_by(|(ka, a), (kb, b)| {
        kb.total_cmp(ka)
            .then_with(|| a.enqueued_at.cmp(&b.enqueued_at))
            .then_with(|| a.job_id.cmp(&b.job_id))
    });
    keyed.into_iter().map(|(_, j)| j.job_id).collect()
}

impl Strategy {
    /// [`decide`] with this strategy.
    #[must_use]
    pub fn decide(self, spec: &JobSpec, snapshot: &SchedulingSnapshot) -> Decision {
        decide(self, spec, snapshot)
    }

    /// [`order_queue`] with this strategy.
    #[must_use]
    pub fn order_queue(self, jobs: &[QueueView], now: DateTime<Utc>) -> Vec<JobId> {
        order_queue(self, jobs, now)
    }
}
