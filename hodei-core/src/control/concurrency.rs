//! Concurrency limits per key: operator use cases (set, list, remove) and
//! the slot a job with a `concurrency_key` takes before it leaves the queue.
//!
//! Slots live in the shared [`crate::store::SchedulingStore`], taken
//! atomically there, so a limit holds across replicas. A slot is freed when
//! its job ends or goes back to the queue (see `transition_job`); the leader
//! frees slots a crash left behind (`reconcile_concurrency_slots`).

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::{ControlError, ControlPlane, ControlResult};
use crate::domain::concurrency::concurrency_key_problem;
use crate::domain::ids::JobId;
use crate::domain::job::{Job, JobState};
use crate::store::{ConcurrencyLimit, SlotGrant};

/// Highest limit accepted for one key.
pub const MAX_CONCURRENCY_LIMIT: u32 = 100_000;

/// A slot younger than this is never reclaimed by the leader: its job may be
/// between taking the slot and leaving `Pending`.
const SLOT_GRACE: Duration = Duration::from_secs(60);

/// A key's limit and the jobs holding its slots now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ConcurrencyLimitStatus {
    /// The key.
    pub key: String,
    /// At most this many of its jobs scheduled or running at once.
    pub max_running: u32,
    /// Jobs holding a slot (scheduled or running), oldest first.
    pub holders: Vec<JobId>,
    /// When the limit was last set.
    pub updated_at: DateTime<Utc>,
}

fn check_key(key: &str) -> ControlResult<()> {
    match concurrency_key_problem(key) {
        None => Ok(()),
        Some(message) => Err(ControlError::InvalidArgument {
            field: "key".to_owned(),
            message,
        }),
    }
}

impl ControlPlane {
    /// Creates or replaces the limit of a key; queued jobs with the key are
    /// then dispatched up to it (lowering it never stops running jobs).
    ///
    /// # Errors
    /// `InvalidArgument` naming `key` or `max_running`; store errors.
    pub async fn set_concurrency_limit(
        &self,
        key: &str,
        max_running: u32,
    ) -> ControlResult<ConcurrencyLimitStatus> {
        check_key(key)?;
        if max_running > MAX_CONCURRENCY_LIMIT {
            return Err(ControlError::InvalidArgument {
                field: "max_running".to_owned(),
                message: format!("must be at most {MAX_CONCURRENCY_LIMIT}, got {max_running}"),
            });
        }
        let limit = self
            .inner
            .stores
            .scheduling
            .set_concurrency_limit(key, max_running)
            .await?;
        tracing::info!(key, max_running, "concurrency limit set");
        self.wake();
        self.limit_status(limit).await
    }

    /// Every limit with its holders, by key.
    pub async fn concurrency_limits(&self) -> ControlResult<Vec<ConcurrencyLimitStatus>> {
        let limits = self
            .inner
            .stores
            .scheduling
            .list_concurrency_limits()
            .await?;
        let mut out = Vec::with_capacity(limits.len());
        for l in limits {
            out.push(self.limit_status(l).await?);
        }
        Ok(out)
    }

    /// One key's limit with its holders.
    ///
    /// # Errors
    /// `InvalidArgument` for a malformed key, `NotFound` when no limit is set.
    pub async fn concurrency_limit(&self, key: &str) -> ControlResult<ConcurrencyLimitStatus> {
        check_key(key)?;
        let limit = self
            .inner
            .stores
            .scheduling
            .concurrency_limit(key)
            .await?
            .ok_or_else(|| ControlError::NotFound(format!("concurrency limit {key:?}")))?;
        self.limit_status(limit).await
    }

    /// Removes a key's limit: its jobs are no longer limited.
    ///
    /// # Errors
    /// `InvalidArgument` for a malformed key, `NotFound` when no limit is set.
    pub async fn delete_concurrency_limit(&self, key: &str) -> ControlResult<()> {
        check_key(key)?;
        if !self
            .inner
            .stores
            .scheduling
            .delete_concurrency_limit(key)
            .await?
        {
            return Err(ControlError::NotFound(format!("concurrency limit {key:?}")));
        }
        tracing::info!(key, "concurrency limit removed");
        self.wake();
        Ok(())
    }

    async fn limit_status(&self, l: ConcurrencyLimit) -> ControlResult<ConcurrencyLimitStatus> {
        let holders = self
            .inner
            .stores
            .scheduling
            .slots(Some(&l.key))
            .await?
            .into_iter()
            .map(|h| h.job_id)
            .collect();
        Ok(ConcurrencyLimitStatus {
            key: l.key,
            max_running: l.max_running,
            holders,
            updated_at: l.updated_at,
        })
    }

    /// Takes a slot of the job's key, if it has one. `false`: the key is full
    /// and the job stays queued.
    pub(super) async fn take_concurrency_slot(&self, job: &Job) -> ControlResult<bool> {
        let Some(key) = job.spec().concurrency_key.as_deref() else {
            return Ok(true);
        };
        let grant = self
            .inner
            .stores
            .scheduling
            .try_acquire_slot(key, job.id(), Utc::now())
            .await?;
        match grant {
            SlotGrant::Full { limit, held } => {
                tracing::debug!(job_id = %job.id(), key, limit, held, "concurrency limit reached; job waits");
                Ok(false)
            }
            _ => Ok(true),
        }
    }

    /// Frees the slot of a job that has a key (it ended, or is queued again)
    /// and wakes the control loop: a job waiting for the key may go now.
    pub(super) async fn free_concurrency_slot(&self, job: &Job) {
        if self.release_concurrency_slot(job).await {
            self.wake();
        }
    }

    /// Gives back the slot a scheduling pass took for a job it then could
    /// not place (it waits, or its placement failed). Nothing changed for
    /// the others (the slot was free when the pass took it), so the loop is
    /// not woken: a wake would start the same pass again at once, and with a
    /// keyed job that can never be placed the loop spun at full CPU.
    pub(super) async fn give_back_concurrency_slot(&self, job: &Job) {
        self.release_concurrency_slot(job).await;
    }

    /// Whether a slot of the job's was released.
    async fn release_concurrency_slot(&self, job: &Job) -> bool {
        if job.spec().concurrency_key.is_none() {
            return false;
        }
        match self.inner.stores.scheduling.release_slot(job.id()).await {
            Ok(released) => released,
            // The leader's reconcile frees it later.
            Err(e) => {
                tracing::warn!(job_id = %job.id(), error = %e, "cannot free a concurrency slot");
                false
            }
        }
    }

    /// Leader: frees slots whose job is gone, finished or back in the queue
    /// (a replica died between taking the slot and dispatching, or before
    /// freeing it). Returns how many were freed.
    pub(super) async fn reconcile_concurrency_slots(&self) -> ControlResult<usize> {
        let grace = chrono::Duration::from_std(SLOT_GRACE).unwrap_or(chrono::Duration::zero());
        let cutoff = Utc::now() - grace;
        let mut freed = 0;
        for slot in self.inner.stores.scheduling.slots(None).await? {
            if slot.acquired_at > cutoff {
                continue;
            }
            let stale = match self.inner.stores.jobs.get(slot.job_id).await? {
                None => true,
                Some(j) => j.state().is_terminal() || j.state() == JobState::Pending,
            };
            if stale
                && self
                    .inner
                    .stores
                    .scheduling
                    .release_slot(slot.job_id)
                    .await?
            {
                tracing::warn!(job_id = %slot.job_id, key = %slot.key, "stale concurrency slot freed");
                freed += 1;
            }
        }
        if freed > 0 {
            self.wake();
        }
        Ok(freed)
    }
}
