//! Placement as the controller sees it: a snapshot of workers and providers
//! and the decision for one job. The choice itself is made by the pure
//! strategies in `crate::scheduler`; this module adapts the live state to them
//! and keeps the snapshot current while one pass dispatches many jobs.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::domain::ids::{ProviderId, WorkerId};
use crate::domain::job::Job;
use crate::domain::provider::ProviderCapabilities;
use crate::domain::worker::WorkerState;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::domain::ids::JobId;
use crate::store::QueueEntry;

/// How the controller picks workers, providers and the next job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Strategy {
    /// Oldest job first; the worker with the most free slots.
    Fifo,
    /// Highest priority first, with aging so low priority is not starved.
    Priority,
    /// The least loaded worker or provider.
    LeastLoaded,
    /// The fullest worker that still fits (packs jobs tightly).
    BinPacking,
    /// The cheapest provider.
    CostAware,
    /// The provider that starts a worker fastest; an idle worker counts as instant.
    FastestStartup,
}

/// Priority points a job gains per minute of waiting (aging).
pub const AGING_POINTS_PER_MINUTE: f64 = 1.0;

/// Order in which queued jobs are considered.
pub(crate) fn order_queue(
    strategy: Strategy,
    entries: &[QueueEntry],
    now: DateTime<Utc>,
) -> Vec<JobId> {
    let mut v: Vec<&QueueEntry> = entries.iter().collect();
    match strategy {
        Strategy::Fifo => v.sort_by_key(|e| e.enqueued_at),
        _ => {
            let eff = |e: &QueueEntry| {
                let waited = (now - e.enqueued_at).num_milliseconds().max(0) as f64 / 60_000.0;
                f64::from(e.priority) + waited * AGING_POINTS_PER_MINUTE
            };
            v.sort_by(|a, b| {
                eff(b)
                    .total_cmp(&eff(a))
                    .then(a.enqueued_at.cmp(&b.enqueued_at))
            });
        }
    }
    v.into_iter().map(|e| e.job_id).collect()
}

/// A worker as placement sees it.
#[derive(Debug, Clone)]
pub(crate) struct WorkerView {
    pub(crate) id: WorkerId,
    pub(crate) provider_id: ProviderId,
    pub(crate) state: WorkerState,
    pub(crate) free_slots: u32,
    pub(crate) labels: BTreeMap<String, String>,
}

/// A provider as placement sees it.
#[derive(Debug, Clone)]
pub(crate) struct ProviderView {
    pub(crate) id: ProviderId,
    pub(crate) name: String,
    pub(crate) capabilities: ProviderCapabilities,
    pub(crate) available: bool,
    pub(crate) status_reason: Option<String>,
    pub(crate) active_workers: u32,
    pub(crate) max_workers: u32,
    pub(crate) cost_per_hour: f64,
    pub(crate) estimated_startup: Duration,
}

/// Workers and providers at the start of a dispatch pass.
#[derive(Debug, Clone, Default)]
pub(crate) struct SchedulingSnapshot {
    pub(crate) workers: Vec<WorkerView>,
    pub(crate) providers: Vec<ProviderView>,
}

impl SchedulingSnapshot {
    /// Whether any job could still be placed in this pass.
    pub(crate) fn has_any_capacity(&self) -> bool {
        self.workers.iter().any(|w| w.free_slots > 0)
            || self
                .providers
                .iter()
                .any(|p| p.available && p.active_workers < p.max_workers)
    }

    /// A job took a slot of this worker.
    pub(crate) fn take_slot(&mut self, w: WorkerId) {
        if let Some(v) = self.workers.iter_mut().find(|v| v.id == w) {
            v.free_slots = v.free_slots.saturating_sub(1);
        }
    }

    /// A worker is being provisioned on this provider.
    pub(crate) fn add_provisioning(&mut self, p: ProviderId) {
        if let Some(v) = self.providers.iter_mut().find(|v| v.id == p) {
            v.active_workers += 1;
        }
    }
}

/// What to do with one job.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Decision {
    AssignWorker(WorkerId),
    Provision(ProviderId),
    Wait(String),
}

/// Decides for one pending job.
pub(crate) fn decide(strategy: Strategy, job: &Job, snap: &SchedulingSnapshot) -> Decision {
    let spec = job.spec();
    let wanted = spec.preferences.preferred_provider.as_deref();
    let mut reasons = Vec::new();
    let allowed: Vec<&ProviderView> = snap
        .providers
        .iter()
        .filter(|p| {
            if let Some(w) = wanted
                && p.name != w
                && p.id.to_string() != w
            {
                return false;
            }
            if let Some(why) = p.capabilities.ineligibility(spec) {
                reasons.push(format!("{}: {why}", p.name));
                return false;
            }
            true
        })
        .collect();
    if allowed.is_empty() {
        return Decision::Wait(match wanted {
            Some(w)
                if !snap
                    .providers
                    .iter()
                    .any(|p| p.name == w || p.id.to_string() == w) =>
            {
                format!("no provider named {w:?} is registered")
            }
            _ if reasons.is_empty() => "no provider is registered".to_owned(),
            _ => format!("no eligible provider ({})", reasons.join("; ")),
        });
    }
    // An idle eligible worker first.
    let candidates: Vec<&WorkerView> = snap
        .workers
        .iter()
        .filter(|w| {
            w.free_slots > 0
                && matches!(w.state, WorkerState::Ready | WorkerState::Busy)
                && allowed.iter().any(|p| p.id == w.provider_id)
                && spec.constraints.iter().all(|c| c.matches(&w.labels))
        })
        .collect();
    let best_worker = match strategy {
        Strategy::BinPacking => candidates.iter().min_by_key(|w| w.free_slots),
        _ => candidates.iter().max_by_key(|w| w.free_slots),
    };
    if let Some(w) = best_worker {
        return Decision::AssignWorker(w.id);
    }
    let open: Vec<&&ProviderView> = allowed
        .iter()
        .filter(|p| p.available && p.active_workers < p.max_workers)
        .collect();
    let best_provider = match strategy {
        Strategy::CostAware => open
            .iter()
            .min_by(|a, b| a.cost_per_hour.total_cmp(&b.cost_per_hour)),
        Strategy::FastestStartup => open.iter().min_by_key(|p| p.estimated_startup),
        _ => open
            .iter()
            .max_by_key(|p| p.max_workers.saturating_sub(p.active_workers)),
    };
    if let Some(p) = best_provider {
        return Decision::Provision(p.id);
    }
    let why: Vec<String> = allowed
        .iter()
        .map(|p| {
            if p.available {
                format!("{}: all {} workers busy", p.name, p.max_workers)
            } else {
                format!(
                    "{}: unavailable ({})",
                    p.name,
                    p.status_reason.as_deref().unwrap_or("not active")
                )
            }
        })
        .collect();
    Decision::Wait(why.join("; "))
}
