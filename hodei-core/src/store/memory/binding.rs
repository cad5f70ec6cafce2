//! [`JobBinder`] over the in-memory stores.

use std::sync::Arc;

use async_trait::async_trait;

use super::{InMemoryJobQueue, InMemoryJobRepository, InMemoryWorkerRegistry, lock, write};
use crate::store::{
    BindOutcome, Binding, InMemoryJobHistoryStore, JobBinder, JobHistoryStore, StoreError,
};

/// Binds jobs in the in-memory queue, workers and jobs it was built on:
/// their locks are taken together (queue, workers, jobs: no other code takes
/// two of them), every condition is checked, then everything is written.
/// The history record, which nothing reads to decide, is added after.
#[derive(Debug, Clone)]
pub struct InMemoryJobBinder {
    queue: Arc<InMemoryJobQueue>,
    workers: Arc<InMemoryWorkerRegistry>,
    jobs: Arc<InMemoryJobRepository>,
    history: Arc<InMemoryJobHistoryStore>,
}

impl InMemoryJobBinder {
    /// A binder writing to these stores.
    #[must_use]
    pub fn new(
        queue: Arc<InMemoryJobQueue>,
        workers: Arc<InMemoryWorkerRegistry>,
        jobs: Arc<InMemoryJobRepository>,
        history: Arc<InMemoryJobHistoryStore>,
    ) -> Self {
        Self {
            queue,
            workers,
            jobs,
            history,
        }
    }
}

#[async_trait]
impl JobBinder for InMemoryJobBinder {
    async fn bind(&self, binding: &Binding) -> Result<BindOutcome, StoreError> {
        let job_id = binding.job.id();
        let (worker, job) = {
            let mut queue = lock(&self.queue.state);
            if !queue.is_free(job_id) {
                return Ok(BindOutcome::EntryTaken);
            }
            let mut workers = write(&self.workers.state);
            let mut jobs = write(&self.jobs.jobs);
            let fresh = workers.check_version(&binding.worker).is_ok()
                && InMemoryJobRepository::check_version(&jobs, &binding.job).is_ok();
            if !fresh {
                return Ok(BindOutcome::Stale);
            }
            let worker = workers.update(&binding.worker)?;
            let job = self.jobs.store_next_version(&mut jobs, &binding.job);
            queue.delete(job_id);
            (worker, job)
        };
        self.history.record(&binding.record).await?;
        Ok(BindOutcome::Bound { worker, job })
    }
}
