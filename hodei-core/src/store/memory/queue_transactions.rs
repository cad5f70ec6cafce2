//! [`QueueTransactions`] over the in-memory stores.

use std::sync::Arc;

use async_trait::async_trait;

use super::{InMemoryJobQueue, InMemoryJobRepository, InMemoryWorkerRegistry, lock, write};
use crate::domain::job::Job;
use crate::store::{
    BindOutcome, Binding, InMemoryJobHistoryStore, JobTransitionRecord, QueueEntry,
    QueueTransactions, StoreError, Stores, same_instance,
};

/// Admits and binds jobs in the in-memory jobs, queue and workers it was
/// built on: their locks are taken together (queue, workers, jobs, in that
/// order; no other code takes two of them), every condition is checked,
/// then everything is written, the history record last (under its own
/// lock, taken after the others').
#[derive(Debug, Clone)]
pub struct InMemoryQueueTransactions {
    queue: Arc<InMemoryJobQueue>,
    workers: Arc<InMemoryWorkerRegistry>,
    jobs: Arc<InMemoryJobRepository>,
    history: Arc<InMemoryJobHistoryStore>,
}

impl InMemoryQueueTransactions {
    /// Transactions writing to these stores.
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
impl QueueTransactions for InMemoryQueueTransactions {
    async fn admit(
        &self,
        job: &Job,
        entry: &QueueEntry,
        record: &JobTransitionRecord,
    ) -> Result<Job, StoreError> {
        let mut queue = lock(&self.queue.state);
        let stored = self.jobs.insert_locked(&mut write(&self.jobs.jobs), job)?;
        queue.enqueue(entry.clone());
        self.history.record_now(record)?;
        Ok(stored)
    }

    async fn bind(&self, binding: &Binding) -> Result<BindOutcome, StoreError> {
        let job_id = binding.job.id();
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
        self.history.record_now(&binding.record)?;
        Ok(BindOutcome::Bound {
            worker: Box::new(worker),
            job: Box::new(job),
        })
    }

    fn writes_to(&self, stores: &Stores) -> bool {
        same_instance(&stores.jobs, &self.jobs)
            && same_instance(&stores.queue, &self.queue)
            && same_instance(&stores.workers, &self.workers)
            && same_instance(&stores.job_history, &self.history)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn they_write_to_their_own_bundle_only() {
        let stores = Stores::in_memory();
        let transactions = stores.queue_transactions.clone().expect("in memory");
        assert!(transactions.writes_to(&stores));
        let mut replaced = stores.clone();
        replaced.jobs = Arc::new(InMemoryJobRepository::new());
        assert!(!transactions.writes_to(&replaced), "another job store");
        let mut replaced = stores.clone();
        replaced.workers = Arc::new(InMemoryWorkerRegistry::new());
        assert!(!transactions.writes_to(&replaced), "another registry");
        assert!(
            !transactions.writes_to(&Stores::in_memory()),
            "another bundle"
        );
    }
}
