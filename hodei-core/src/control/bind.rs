//! Binding a queued job to a connected worker in one store operation (see
//! [`crate::store::QueueTransactions`]): on Postgres one round trip where
//! the steps (claim, worker slot, job update, history, entry delete) take
//! four, one after the other. It starts from the worker record this replica
//! holds in the worker's session and the job the dispatch pass has just
//! read; when either is stale, or the store offers no such transactions,
//! the dispatch goes step by step, which reads them again.

use chrono::{DateTime, Utc};

use super::{ControlPlane, ControlResult};
use crate::domain::ids::{ProviderId, WorkerId};
use crate::domain::job::{Job, Transition};
use crate::store::{BindOutcome, Binding};

/// What [`ControlPlane::bind_at_once`] did.
pub(super) enum BindAttempt {
    /// The job is bound and its queue entry deleted.
    Bound(Box<BoundJob>),
    /// Nothing was written: another controller holds the job's queue entry,
    /// or it is gone. Nothing is left to do.
    Taken,
    /// Nothing was written: go step by step.
    StepByStep,
}

/// A job [`ControlPlane::bind_at_once`] bound, with what its send needs.
pub(super) struct BoundJob {
    /// The job as stored.
    pub job: Job,
    /// Its move out of `pending`.
    pub transition: Transition,
    /// When it entered `pending`.
    pub pending_since: Option<DateTime<Utc>>,
    /// The worker's provider.
    pub provider_id: ProviderId,
    /// The last log sequence stored for the attempt.
    pub resume_after: u64,
}

impl ControlPlane {
    /// Binds `job` (as just read, `pending`) to `worker_id` in one store
    /// operation when the store offers one and this replica holds a record
    /// of the worker; the log resume point is read beside it (a job never
    /// sent has none to read).
    pub(super) async fn bind_at_once(
        &self,
        job: &Job,
        worker_id: WorkerId,
    ) -> ControlResult<BindAttempt> {
        let Some(store) = &self.inner.stores.queue_transactions else {
            return Ok(BindAttempt::StepByStep);
        };
        let Some(mut worker) = self.inner.sessions.record(worker_id) else {
            return Ok(BindAttempt::StepByStep);
        };
        // Refused on these copies: the step-by-step path decides on fresh
        // reads, as it does for any refused change on a known copy.
        if worker.assign(job.id()).is_err() {
            return Ok(BindAttempt::StepByStep);
        }
        let provider_id = worker.provider_id();
        let mut bound = job.clone();
        let pending_since = Some(job.updated_at());
        let Ok(transition) = bound.submit_to_provider(provider_id, Some(worker_id)) else {
            return Ok(BindAttempt::StepByStep);
        };
        let record = Self::transition_record(&bound, Some(transition.from), transition.to, "");
        let binding = Binding::new(worker, bound, record);
        // A job unchanged since its submit (version 1) was never sent, so
        // no log of its attempt is stored: nothing to read.
        let resume_point = async {
            if job.version() == 1 {
                Ok(0)
            } else {
                self.resume_point(&binding.job).await
            }
        };
        let (outcome, resume_after) = tokio::join!(store.bind(&binding), resume_point);
        match outcome? {
            BindOutcome::Bound { worker, job } => {
                self.inner.sessions.observe(&worker);
                Ok(BindAttempt::Bound(Box::new(BoundJob {
                    job: *job,
                    transition,
                    pending_since,
                    provider_id,
                    resume_after: resume_after?,
                })))
            }
            BindOutcome::EntryTaken => Ok(BindAttempt::Taken),
            BindOutcome::Stale => Ok(BindAttempt::StepByStep),
        }
    }
}
