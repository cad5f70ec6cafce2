//! Adapts the live state to the pure strategies in [`crate::scheduler`], and
//! keeps one pass's snapshot current while it dispatches many jobs.

use crate::domain::ids::{ProviderId, WorkerId};
use crate::domain::job::Job;
use crate::domain::pricing::ResourcePricing;
use crate::domain::spec::{CommandType, JobSpec};
use crate::provider::{Eligibility, FullProvider};
use crate::scheduler::{self, Decision, ProviderView, SchedulingSnapshot, Strategy};

/// Whether any job could still be placed in this pass.
pub(crate) fn has_any_capacity(snap: &SchedulingSnapshot) -> bool {
    snap.workers.iter().any(|w| w.takes_jobs())
        || snap
            .providers
            .iter()
            .any(|p| p.is_available() && p.free_worker_slots() > 0)
}

/// A job took a slot of this worker.
pub(crate) fn take_slot(snap: &mut SchedulingSnapshot, w: WorkerId) {
    if let Some(v) = snap.workers.iter_mut().find(|v| v.id == w) {
        v.free_slots = v.free_slots.saturating_sub(1);
    }
}

/// A worker is being provisioned on this provider.
pub(crate) fn add_provisioning(snap: &mut SchedulingSnapshot, p: ProviderId) {
    if let Some(v) = snap.providers.iter_mut().find(|v| v.id == p) {
        v.active_workers += 1;
    }
}

/// Decides for one pending job. Each provider's own eligibility check
/// ([`crate::provider::WorkerEligibility`], e.g. Docker's missing worker
/// image) is consulted besides its capabilities; `entry` finds the live
/// provider of a view.
pub(crate) fn decide<E: AsRef<dyn FullProvider>>(
    strategy: Strategy,
    job: &Job,
    snap: &SchedulingSnapshot,
    entry: impl Fn(ProviderId) -> Option<E>,
) -> Decision {
    let spec = job.spec();
    scheduler::decide_with(strategy, spec, snap, |p: &ProviderView| {
        match entry(p.id)?.as_ref().check_eligibility(spec) {
            Eligibility::Ineligible(why) => Some(why),
            _ => None,
        }
    })
}

/// A provider's own cost estimate as a linear price per resource, probed at
/// one core and at one GiB, so every job is priced from its own resources.
pub(crate) fn estimated_pricing(provider: &dyn FullProvider) -> ResourcePricing {
    let probe = |cpu: f64, mem_mb: u64| {
        let mut spec = JobSpec::new("", CommandType::shell("true", Vec::<String>::new()));
        spec.resources.cpu_cores = cpu;
        spec.resources.memory_mb = mem_mb;
        let v = provider.estimate_cost(&spec).per_hour;
        if v.is_finite() { v.max(0.0) } else { 0.0 }
    };
    let base = probe(0.0, 0);
    ResourcePricing {
        price_per_cpu_hour: (probe(1.0, 0) - base).max(0.0),
        price_per_gib_hour: (probe(0.0, 1024) - base).max(0.0),
    }
}
