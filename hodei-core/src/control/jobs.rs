//! Job use cases: create, get, list, cancel, and the worker-reported state
//! changes (started, result). Every change goes through the [`Job`] aggregate
//! and a versioned store update, retried on conflict.

use chrono::Utc;

use super::events::JobEvent;
use super::{ControlError, ControlPlane, ControlResult};
use crate::domain::ids::{CorrelationId, JobId, WorkerId};
use crate::domain::job::{AttemptOutcome, AttemptResult, Job, JobState, Transition};
use crate::domain::spec::JobSpec;
use crate::store::{JobFilter, JobTransitionRecord, QueueEntry, StoreError};

/// Label a retried job carries, naming the job it retries.
pub const RETRY_OF_LABEL: &str = "hodei.retry_of";

/// Counts for `GetQueueStatus`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct QueueStatus {
    /// Jobs waiting.
    pub pending: u64,
    /// Jobs on their way to a worker.
    pub scheduled: u64,
    /// Jobs running.
    pub running: u64,
    /// Age of the oldest waiting job, in ms.
    pub oldest_pending_age_ms: u64,
}

/// How many times a versioned update is retried on conflict before giving up.
const MAX_CONFLICT_RETRIES: usize = 16;

impl ControlPlane {
    /// Validates, stores (`Pending`) and enqueues a job.
    pub async fn create_job(
        &self,
        spec: JobSpec,
        correlation_id: Option<CorrelationId>,
    ) -> ControlResult<Job> {
        spec.validate()?;
        self.inner.artifacts.check_supported(&spec)?;
        // Secrets are stored only sealed; they are opened for the worker alone.
        let mut spec = spec;
        spec.secrets = self.inner.sealer.seal(&spec.secrets);
        let mut job = Job::new(spec);
        if let Some(c) = correlation_id {
            job = job.with_correlation_id(c);
        }
        self.store_and_enqueue(job).await
    }

    /// Stores a new `Pending` job whose secrets are already sealed, queues it
    /// and announces it.
    pub(super) async fn store_and_enqueue(&self, job: Job) -> ControlResult<Job> {
        // Kept for the dispatch pass, which is woken before the job is
        // stored: its reads go beside the job's writes, and it places the
        // job once stored (see `fresh_jobs`). A store stores a new job at
        // version 1. Dropped unfinished, the admission forgets the copy.
        let mut kept = job.clone();
        kept.set_version(1);
        let admission = self.inner.fresh_jobs.admit(kept);
        self.wake();
        let entry = QueueEntry {
            job_id: job.id(),
            priority: job.priority(),
            enqueued_at: Utc::now(),
        };
        let stored = self.store_new(job, &entry).await?;
        tracing::info!(job_id = %stored.id(), name = %stored.spec().name, "job queued");
        // Announced before the pass may place it: watchers see `Pending`
        // before `Scheduled`.
        self.publish(&stored, None, JobState::Pending, String::new());
        admission.queued(entry);
        // For a pass that stopped waiting for it.
        self.wake();
        Ok(stored)
    }

    /// The writes of [`Self::store_and_enqueue`]: the job, its queue entry,
    /// its creation record.
    async fn store_new(&self, job: Job, entry: &QueueEntry) -> ControlResult<Job> {
        let stored = match &self.inner.stores.queue_transactions {
            // One operation (one round trip on Postgres).
            Some(store) => {
                let record = Self::transition_record(&job, None, JobState::Pending, "");
                store.admit(&job, entry, &record).await?
            }
            None => {
                let stored = self.inner.stores.jobs.insert(&job).await?;
                // Both follow the insert and neither needs the other, so
                // they go side by side.
                let (queued, ()) = tokio::join!(
                    self.inner.stores.queue.enqueue(entry.clone()),
                    self.record_transition(&stored, None, JobState::Pending, ""),
                );
                queued?;
                stored
            }
        };
        Ok(stored)
    }

    /// Puts a `Pending` job on the queue. `enqueued_at` orders it among equal
    /// priorities: a job given back keeps its creation time, so its place.
    pub(super) async fn enqueue_job(
        &self,
        job: &Job,
        enqueued_at: chrono::DateTime<Utc>,
    ) -> ControlResult<QueueEntry> {
        let entry = QueueEntry {
            job_id: job.id(),
            priority: job.priority(),
            enqueued_at,
        };
        self.inner.stores.queue.enqueue(entry.clone()).await?;
        Ok(entry)
    }

    /// `Scheduled -> Pending` without using the attempt (the job never ran),
    /// back on the queue in its old place.
    pub(super) async fn release_to_queue(&self, job_id: JobId, why: &str) -> ControlResult<Job> {
        let job = self
            .transition_job(job_id, why, |j| Ok(j.release(why)?))
            .await?;
        let entry = self.enqueue_job(&job, job.created_at()).await?;
        self.inner.fresh_jobs.put(job.clone(), entry);
        self.wake();
        Ok(job)
    }

    /// A job by id.
    pub async fn get_job(&self, id: JobId) -> ControlResult<Job> {
        self.inner
            .stores
            .jobs
            .get(id)
            .await?
            .ok_or_else(|| ControlError::NotFound(format!("job {id}")))
    }

    /// Jobs matching a filter, newest first.
    pub async fn list_jobs(&self, filter: &JobFilter) -> ControlResult<Vec<Job>> {
        Ok(self.inner.stores.jobs.list(filter).await?)
    }

    /// Publishes a state change.
    pub(super) fn publish(&self, job: &Job, from: Option<JobState>, to: JobState, message: String) {
        let ev = JobEvent {
            job_id: job.id(),
            from: from.unwrap_or(to),
            to,
            attempt: job.execution_context().attempt,
            worker_id: job.worker_id(),
            message,
            exit_code: job.execution_context().exit_code,
            at: Utc::now(),
        };
        let _ = self.inner.job_events.send(ev);
        if to.is_terminal() {
            self.inner.logs.finish(job.id());
        }
    }

    /// Read-modify-write of a job with optimistic concurrency: `f` is re-run on
    /// a fresh copy when another writer got there first.
    pub(super) async fn update_job<T>(
        &self,
        id: JobId,
        f: impl FnMut(&mut Job) -> ControlResult<T>,
    ) -> ControlResult<(Job, T)> {
        self.update_job_from(id, None, f).await
    }

    /// [`Self::update_job`], first applied to `known`, a copy the caller has
    /// just read (one store read less on the dispatch path). A stale copy
    /// costs a conflict and a fresh read, never a lost write; a change `f`
    /// refuses on it is tried again on a fresh read before the refusal
    /// counts.
    pub(super) async fn update_job_from<T>(
        &self,
        id: JobId,
        mut known: Option<Job>,
        mut f: impl FnMut(&mut Job) -> ControlResult<T>,
    ) -> ControlResult<(Job, T)> {
        for _ in 0..MAX_CONFLICT_RETRIES {
            let (mut job, fresh) = match known.take().filter(|j| j.id() == id) {
                Some(j) => (j, false),
                None => (self.get_job(id).await?, true),
            };
            let out = match f(&mut job) {
                Ok(out) => out,
                Err(e) if fresh => return Err(e),
                Err(_) => continue,
            };
            match self.inner.stores.jobs.update(&job).await {
                Ok(stored) => return Ok((stored, out)),
                Err(StoreError::Conflict { .. }) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(ControlError::Unavailable(format!(
            "job {id}: too many concurrent updates"
        )))
    }

    /// Applies a transition and publishes it.
    pub(super) async fn transition_job(
        &self,
        id: JobId,
        message: &str,
        f: impl FnMut(&mut Job) -> ControlResult<Transition>,
    ) -> ControlResult<Job> {
        self.transition_job_from(id, None, message, f).await
    }

    /// [`Self::transition_job`] from `known`, a copy the caller has just
    /// read (see [`Self::update_job_from`]).
    pub(super) async fn transition_job_from(
        &self,
        id: JobId,
        known: Option<Job>,
        message: &str,
        f: impl FnMut(&mut Job) -> ControlResult<Transition>,
    ) -> ControlResult<Job> {
        let (job, t, before) = self.apply_transition(id, known, f).await?;
        self.finish_transition(&job, t, before, message).await;
        Ok(job)
    }

    /// The stored half of [`Self::transition_job`] (from `known` first, see
    /// [`Self::update_job_from`]): the job as stored, the transition, and
    /// when the job entered the state it left. The caller then calls
    /// [`Self::finish_transition`], and may run other work beside it.
    pub(super) async fn apply_transition(
        &self,
        id: JobId,
        known: Option<Job>,
        mut f: impl FnMut(&mut Job) -> ControlResult<Transition>,
    ) -> ControlResult<(Job, Transition, Option<chrono::DateTime<Utc>>)> {
        // When the job entered its current state: nothing else changes a
        // pending job, so for one leaving `pending` it is when it was queued.
        let mut before = None;
        let (job, t) = self
            .update_job_from(id, known, |j| {
                before = Some(j.updated_at());
                f(j)
            })
            .await?;
        Ok((job, t, before))
    }

    /// What follows a stored transition: metrics, the freed concurrency
    /// slot, the history record, the event.
    pub(super) async fn finish_transition(
        &self,
        job: &Job,
        t: Transition,
        before: Option<chrono::DateTime<Utc>>,
        message: &str,
    ) {
        self.count_transition(job, t, before).await;
        self.record_transition(job, Some(t.from), t.to, message)
            .await;
        self.publish(job, Some(t.from), t.to, message.to_owned());
    }

    /// [`Self::finish_transition`] of a transition whose history record was
    /// stored with it (see [`crate::store::QueueTransactions`]).
    pub(super) async fn finish_recorded_transition(
        &self,
        job: &Job,
        t: Transition,
        before: Option<chrono::DateTime<Utc>>,
        message: &str,
    ) {
        self.count_transition(job, t, before).await;
        self.publish(job, Some(t.from), t.to, message.to_owned());
    }

    /// The metrics of a stored transition, and the concurrency slot of a job
    /// that ended or is queued again, which goes to the next job.
    async fn count_transition(
        &self,
        job: &Job,
        t: Transition,
        before: Option<chrono::DateTime<Utc>>,
    ) {
        crate::telemetry::job_transition(job, t, before);
        if t.to.is_terminal() || t.to == JobState::Pending {
            self.free_concurrency_slot(job).await;
        }
    }

    /// The history record of `job`'s change `from → to`, as stored.
    pub(super) fn transition_record(
        job: &Job,
        from: Option<JobState>,
        to: JobState,
        why: &str,
    ) -> JobTransitionRecord {
        JobTransitionRecord::new(
            job.id(),
            from,
            to,
            job.updated_at(),
            job.execution_context().attempt,
        )
        .with_worker(job.worker_id())
        .with_reason(why)
    }

    /// Adds a stored transition to the job's history. The change itself is
    /// already stored, so a history that cannot be written is reported, not
    /// returned as the change's failure (a caller would retry a done change).
    async fn record_transition(&self, job: &Job, from: Option<JobState>, to: JobState, why: &str) {
        let record = Self::transition_record(job, from, to, why);
        if let Err(e) = self.inner.stores.job_history.record(&record).await {
            tracing::warn!(job_id = %job.id(), %to, error = %e, "job history not recorded");
        }
    }

    /// A job's state changes, oldest first.
    pub async fn job_history(&self, id: JobId) -> ControlResult<Vec<JobTransitionRecord>> {
        // Unknown jobs are a 404, not an empty history.
        self.get_job(id).await?;
        Ok(self.inner.stores.job_history.history(id).await?)
    }

    /// Cancels a queued or running job. A running job's worker is told to kill it.
    pub async fn cancel_job(&self, id: JobId, reason: &str) -> ControlResult<Job> {
        let reason = if reason.is_empty() {
            "cancelled by client"
        } else {
            reason
        };
        let job = self
            .transition_job(id, reason, |j| Ok(j.cancel(reason)?))
            .await?;
        let _ = self.inner.stores.queue.remove(id).await?;
        if let Some(w) = job.worker_id() {
            self.send_cancel(w, &job, reason).await;
        }
        tracing::info!(job_id = %id, "job cancelled");
        self.wake();
        Ok(job)
    }

    /// Checks that `worker` may act on `job`'s `attempt`.
    pub(super) fn check_assignment(
        job: &Job,
        worker: WorkerId,
        attempt: Option<u32>,
    ) -> ControlResult<()> {
        if job.worker_id() != Some(worker) {
            return Err(ControlError::PermissionDenied(format!(
                "job {} is not assigned to worker {worker}",
                job.id()
            )));
        }
        if let Some(a) = attempt
            && a != job.execution_context().attempt
        {
            return Err(ControlError::FailedPrecondition(format!(
                "job {}: attempt {a} is not the current attempt {}",
                job.id(),
                job.execution_context().attempt
            )));
        }
        Ok(())
    }

    /// The worker started the job: `Scheduled -> Running`. Idempotent.
    pub async fn job_started(
        &self,
        worker: WorkerId,
        id: JobId,
        attempt: u32,
    ) -> ControlResult<Job> {
        let job = self.get_job(id).await?;
        self.job_started_from(worker, job, attempt).await
    }

    /// [`Self::job_started`] from the copy of the job just read: the
    /// transition starts from it (one read per report, not two).
    async fn job_started_from(
        &self,
        worker: WorkerId,
        job: Job,
        attempt: u32,
    ) -> ControlResult<Job> {
        Self::check_assignment(&job, worker, Some(attempt))?;
        if job.state() != JobState::Scheduled {
            return Ok(job);
        }
        self.transition_job_from(job.id(), Some(job), "", |j| {
            Self::check_assignment(j, worker, Some(attempt))?;
            Ok(j.mark_running()?)
        })
        .await
    }

    /// The worker reports the end of an attempt. Idempotent per (job, attempt):
    /// a repeated result for a job already finished is accepted and ignored.
    pub async fn job_finished(
        &self,
        worker: WorkerId,
        id: JobId,
        attempt: u32,
        result: AttemptResult,
    ) -> ControlResult<Job> {
        let job = self.get_job(id).await?;
        Self::check_assignment(&job, worker, Some(attempt))?;
        let job = if job.state().is_terminal() {
            if job.state() == JobState::Timeout {
                self.update_job(id, |j| {
                    j.record_timeout_result(result.clone());
                    Ok(())
                })
                .await?
                .0
            } else {
                job
            }
        } else {
            let job = if job.state() == JobState::Scheduled {
                // The result overtook the start message (a very short job):
                // record the start first, so the history has every step.
                self.job_started_from(worker, job, attempt).await?
            } else {
                job
            };
            let message = result.error.clone().unwrap_or_default();
            // From the copy just read: one read per result, not two.
            self.transition_job_from(id, Some(job), &message, |j| {
                Self::check_assignment(j, worker, Some(attempt))?;
                if j.state() == JobState::Scheduled {
                    // The result can overtake the start message (very short jobs).
                    j.mark_running()?;
                }
                let t = match result.outcome {
                    AttemptOutcome::Exited if result.exit_code == Some(0) => {
                        j.complete(result.clone())?
                    }
                    AttemptOutcome::TimedOut => {
                        let t = j.timeout()?;
                        j.record_timeout_result(result.clone());
                        t
                    }
                    AttemptOutcome::Cancelled => j.cancel(
                        result
                            .error
                            .clone()
                            .unwrap_or_else(|| "cancelled on the worker".into()),
                    )?,
                    _ => j.fail(result.clone())?,
                };
                Ok(t)
            })
            .await?
        };
        tracing::info!(job_id = %id, %worker, attempt, state = %job.state(), "job finished");
        self.release_worker_slot(worker, id).await?;
        self.wake();
        Ok(job)
    }

    /// The worker (or the server on its behalf) failed an attempt. Retried when
    /// `retryable` and attempts remain; otherwise `Failed`.
    pub(super) async fn fail_attempt(
        &self,
        id: JobId,
        on_worker: WorkerId,
        reason: &str,
        retryable: bool,
    ) -> ControlResult<Job> {
        let job = self
            .transition_job(id, reason, |j| {
                // Checked inside the update: a job already retried on another
                // worker must not lose that new attempt to news of the old one.
                if !matches!(j.state(), JobState::Scheduled | JobState::Running)
                    || j.worker_id() != Some(on_worker)
                {
                    return Err(ControlError::FailedPrecondition(format!(
                        "job {} is {} and not on worker {on_worker}",
                        j.id(),
                        j.state()
                    )));
                }
                if retryable && j.can_retry() {
                    Ok(j.queue(reason)?)
                } else {
                    Ok(j.fail(AttemptResult::with_outcome(
                        AttemptOutcome::WorkerLost,
                        Some(reason.to_owned()),
                    ))?)
                }
            })
            .await?;
        if job.state() == JobState::Pending {
            self.enqueue_job(&job, Utc::now()).await?;
            tracing::warn!(job_id = %id, attempt = job.attempts(), reason, "job requeued for retry");
        }
        self.wake();
        Ok(job)
    }

    /// Counts of queued, scheduled and running jobs.
    pub async fn queue_status(&self) -> ControlResult<QueueStatus> {
        let counts = self.inner.stores.jobs.count_by_state().await?;
        let get = |s| counts.get(&s).copied().unwrap_or(0);
        let mut status = QueueStatus {
            pending: get(JobState::Pending),
            scheduled: get(JobState::Scheduled),
            running: get(JobState::Running),
            oldest_pending_age_ms: 0,
        };
        // The head of a FIFO walk is the oldest unclaimed entry of the whole queue.
        let head = self
            .inner
            .stores
            .queue
            .scan(crate::store::QueueOrder::Fifo, None, 1)
            .await?;
        if let Some(min) = head.entries.iter().map(|e| e.enqueued_at).min() {
            status.oldest_pending_age_ms =
                u64::try_from((Utc::now() - min).num_milliseconds()).unwrap_or(0);
        }
        Ok(status)
    }

    /// Times out running jobs past their deadline (plus grace), even when their
    /// agent is gone.
    pub(super) async fn enforce_timeouts(&self) -> ControlResult<()> {
        let now = Utc::now();
        let grace = chrono::Duration::from_std(self.inner.config.timeout_grace)
            .unwrap_or(chrono::Duration::zero());
        let running = self
            .list_jobs(&JobFilter::state(JobState::Running).limit(100_000))
            .await?;
        for job in running {
            let Some(deadline) = job.deadline() else {
                continue;
            };
            if now <= deadline + grace {
                continue;
            }
            let Ok(job) = self
                .transition_job(job.id(), "timed out (enforced by the server)", |j| {
                    Ok(j.timeout()?)
                })
                .await
            else {
                continue;
            };
            tracing::warn!(job_id = %job.id(), "job timed out on the server side");
            if let Some(w) = job.worker_id() {
                self.send_cancel(w, &job, "timeout").await;
                // The worker's slot is freed when its result arrives or it is lost.
            }
        }
        Ok(())
    }

    /// Runs a finished job again (failed, timed out, cancelled or succeeded):
    /// queues a new `Pending` job with the same spec and labels, plus
    /// [`RETRY_OF_LABEL`] set to `id`. A job not finished yet is refused
    /// (`FailedPrecondition`): cancel it first.
    pub async fn retry_job(&self, id: JobId) -> ControlResult<Job> {
        let original = self.get_job(id).await?;
        if !original.state().is_terminal() {
            return Err(ControlError::FailedPrecondition(format!(
                "job {id} is {}; cancel it first",
                original.state()
            )));
        }
        // The stored spec's secrets are sealed already; `store_and_enqueue`
        // keeps them as they are.
        let mut spec = original.spec().clone();
        spec.labels
            .insert(RETRY_OF_LABEL.to_owned(), id.to_string());
        let job = self.store_and_enqueue(Job::new(spec)).await?;
        tracing::info!(job_id = %job.id(), retry_of = %id, "job retried");
        Ok(job)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::ids::ProviderId;
    use crate::domain::spec::CommandType;

    #[tokio::test]
    async fn a_stale_known_job_costs_a_fresh_read_never_a_lost_write() {
        let cp = ControlPlane::builder().build();
        let job = cp
            .create_job(JobSpec::new("j", CommandType::shell("true", [""; 0])), None)
            .await
            .unwrap();
        // Another writer cancels it after the copy was read.
        cp.transition_job(job.id(), "cancelled", |j| Ok(j.cancel("by a user")?))
            .await
            .unwrap();
        let r = cp
            .update_job_from(job.id(), Some(job.clone()), |j| {
                Ok(j.submit_to_provider(ProviderId::new(), None)?)
            })
            .await;
        assert!(r.is_err(), "the fresh read refuses it: {r:?}");
        assert_eq!(
            cp.get_job(job.id()).await.unwrap().state(),
            JobState::Cancelled,
            "the cancellation stands"
        );

        // A current copy is used as it is.
        let fresh = cp
            .create_job(JobSpec::new("k", CommandType::shell("true", [""; 0])), None)
            .await
            .unwrap();
        let (stored, _) = cp
            .update_job_from(fresh.id(), Some(fresh.clone()), |j| {
                Ok(j.submit_to_provider(ProviderId::new(), None)?)
            })
            .await
            .unwrap();
        assert_eq!(stored.state(), JobState::Scheduled);
        assert_eq!(stored.version(), fresh.version() + 1);
    }
}
