//! The leader's store audit: level-triggered repair of what a crash between
//! two writes leaves half done. The store is the truth; this pass reads it
//! and brings every record back to a state the control loop can move on from:
//!
//! * a `Pending` job without a queue entry (a crash between storing the job
//!   and enqueuing it, or between giving a job back and re-enqueuing it) is
//!   enqueued in its old place;
//! * a `Scheduled` job with no worker bound and no queue entry (a provisioning
//!   whose entry was lost) is given back to the queue;
//! * a `Scheduled` or `Running` job bound to a worker that no longer exists is
//!   retried (or failed when out of attempts);
//! * a worker slot held for a job that the worker does not run (a crash
//!   between reserving the slot and binding the job) is freed once seen on
//!   two audits in a row, so an assignment in flight is never undone.
//!
//! Provisionings in flight hold a renewed queue lease ([`super::lease_keeper`]);
//! when their controller dies the lease expires, the leader rescues the entry
//! and dispatch gives the job back. Workers stuck in `Creating` are found by
//! the lost-worker check. Together they make a `kill -9` at any instant lose
//! no job.

use std::collections::{HashMap, HashSet};
use std::time::Instant;

use super::{ControlPlane, ControlResult, lock};
use crate::domain::ids::{JobId, WorkerId};
use crate::domain::job::{Job, JobState};
use crate::domain::worker::WorkerState;
use crate::store::JobFilter;

/// Jobs per state the audit reads in one pass.
const AUDIT_PAGE: usize = 10_000;

/// What the audit remembers between passes.
#[derive(Debug, Default)]
pub(super) struct AuditState {
    last_run: Option<Instant>,
    /// Worker slots held for a job the worker does not run, seen on the last pass.
    suspect_slots: HashSet<(WorkerId, JobId)>,
}

/// What one audit pass repaired.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct AuditReport {
    /// `Pending` jobs put back on the queue.
    pub enqueued: usize,
    /// Unbound `Scheduled` jobs given back to the queue.
    pub released: usize,
    /// Jobs of vanished workers retried or failed.
    pub orphaned_attempts: usize,
    /// Worker slots freed.
    pub freed_slots: usize,
}

impl AuditReport {
    /// Whether anything was repaired.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }
}

impl ControlPlane {
    /// Runs the store audit when it is due (at the first leader pass, then
    /// every `audit_interval`).
    pub(super) async fn audit_if_due(&self) -> ControlResult<()> {
        let due = {
            let st = lock(&self.inner.audit);
            st.last_run
                .is_none_or(|t| t.elapsed() >= self.inner.config.audit_interval)
        };
        if due {
            let report = self.audit_store().await?;
            if !report.is_empty() {
                tracing::warn!(
                    ?report,
                    "store audit repaired records a crash left half done"
                );
            }
        }
        Ok(())
    }

    /// One audit pass now (see the module docs). Normally the leader's control
    /// loop runs it; it is safe on any replica and at any time.
    pub async fn audit_store(&self) -> ControlResult<AuditReport> {
        lock(&self.inner.audit).last_run = Some(Instant::now());
        let mut report = AuditReport::default();
        let stores = &self.inner.stores;
        let page = |state| JobFilter::state(state).limit(AUDIT_PAGE);
        let pending = stores.jobs.list(&page(JobState::Pending)).await?;
        let scheduled = stores.jobs.list(&page(JobState::Scheduled)).await?;
        let running = stores.jobs.list(&page(JobState::Running)).await?;

        // 1. Jobs that need a queue entry and have none.
        let unbound: Vec<&Job> = scheduled
            .iter()
            .filter(|j| j.worker_id().is_none())
            .collect();
        let candidates: Vec<JobId> = pending
            .iter()
            .chain(unbound.iter().copied())
            .map(Job::id)
            .collect();
        let queued = stores.queue.queued(&candidates).await?;
        for listed in pending.iter().filter(|j| !queued.contains(&j.id())) {
            // The list was read before the queue: a job dispatched in between
            // (by this replica or another) lost its entry legitimately. Read it
            // again, after the queue: still pending means it really has none.
            let Some(job) = stores.jobs.get(listed.id()).await? else {
                continue;
            };
            if job.state() != JobState::Pending {
                continue;
            }
            // Idempotent: a job enqueued meanwhile keeps its entry.
            self.enqueue_job(&job, job.created_at()).await?;
            tracing::warn!(job_id = %job.id(), "pending job had no queue entry: enqueued");
            report.enqueued += 1;
        }
        for job in unbound.iter().filter(|j| !queued.contains(&j.id())) {
            let why = "provisioning lost its queue entry";
            let released = self
                .transition_job(job.id(), why, |j| {
                    if j.state() == JobState::Scheduled && j.worker_id().is_none() {
                        Ok(j.release(why)?)
                    } else {
                        Err(super::ControlError::FailedPrecondition(
                            "bound meanwhile".into(),
                        ))
                    }
                })
                .await;
            if let Ok(j) = released {
                self.enqueue_job(&j, j.created_at()).await?;
                report.released += 1;
            }
        }

        // 2. Jobs bound to a worker that is gone.
        let workers = stores.workers.list().await?;
        let live: HashMap<WorkerId, _> = workers
            .iter()
            .filter(|w| w.state() != WorkerState::Terminated)
            .map(|w| (w.id(), w))
            .collect();
        let bound: HashMap<JobId, &Job> = scheduled
            .iter()
            .chain(running.iter())
            .filter(|j| j.worker_id().is_some())
            .map(|j| (j.id(), j))
            .collect();
        for job in bound.values() {
            let Some(worker) = job.worker_id() else {
                continue;
            };
            if live.contains_key(&worker) {
                continue;
            }
            let why = format!("worker {worker} is gone");
            if self
                .fail_attempt(job.id(), worker, &why, true)
                .await
                .is_ok()
            {
                tracing::warn!(job_id = %job.id(), %worker, "job of a vanished worker retried");
                report.orphaned_attempts += 1;
            }
        }

        // 3. Worker slots held for a job the worker does not run.
        let mut suspects = HashSet::new();
        for w in live.values() {
            for &job_id in w.current_jobs() {
                let runs_it = bound
                    .get(&job_id)
                    .is_some_and(|j| j.worker_id() == Some(w.id()));
                if !runs_it && !self.job_is_bound_to(job_id, w.id()).await? {
                    suspects.insert((w.id(), job_id));
                }
            }
        }
        let seen_before = std::mem::take(&mut lock(&self.inner.audit).suspect_slots);
        for &(worker, job_id) in suspects.intersection(&seen_before) {
            self.release_worker_slot(worker, job_id).await?;
            tracing::warn!(%worker, %job_id, "freed a worker slot held for a job it does not run");
            report.freed_slots += 1;
        }
        lock(&self.inner.audit).suspect_slots =
            suspects.difference(&seen_before).copied().collect();
        Ok(report)
    }

    /// Re-reads one job: whether it is bound to `worker` and not finished
    /// (the listed pages may be older than the slot).
    async fn job_is_bound_to(&self, job_id: JobId, worker: WorkerId) -> ControlResult<bool> {
        Ok(self
            .inner
            .stores
            .jobs
            .get(job_id)
            .await?
            .is_some_and(|j| j.worker_id() == Some(worker) && !j.state().is_terminal()))
    }
}
