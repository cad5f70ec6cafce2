//! Adapts the live state to the pure strategies in [`crate::scheduler`], and
//! keeps one pass's snapshot current while it dispatches many jobs.

use chrono::{DateTime, Utc};

use crate::domain::ids::{JobId, ProviderId, WorkerId};
use crate::domain::job::Job;
use crate::scheduler::{self, Decision, QueueView, SchedulingSnapshot, Strategy};
use crate::store::QueueEntry;

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

/// Decides for one pending job.
pub(crate) fn decide(strategy: Strategy, job: &Job, snap: &SchedulingSnapshot) -> Decision {
    scheduler::decide(strategy, job.spec(), snap)
}

/// Order in which queued jobs are considered.
pub(crate) fn order_queue(
    strategy: Strategy,
    entries: &[QueueEntry],
    now: DateTime<Utc>,
) -> Vec<JobId> {
    let views: Vec<QueueView> = entries
        .iter()
        .map(|e| QueueView::new(e.job_id, e.priority, e.enqueued_at))
        .collect();
    scheduler::order_queue(strategy, &views, now)
}
