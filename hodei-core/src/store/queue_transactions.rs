//! A job's writes onto and off the queue, each as one store operation.
//!
//! Step by step, a submit stores the job, then queues it and records it
//! (two round trips on a database), and a dispatch claims the queue entry,
//! takes the worker's slot, moves the job to `scheduled` naming the worker,
//! records the transition and deletes the entry (four round trips, each
//! waiting for the one before it: the order is what keeps a job from being
//! bound twice or to a worker without room). [`QueueTransactions`] does each
//! set of writes at once, all or none, so a database store makes each one
//! round trip. A store that offers none leaves
//! [`crate::store::Stores::queue_transactions`] empty, and the control plane
//! goes step by step.

use std::sync::Arc;

use async_trait::async_trait;

use super::{JobTransitionRecord, QueueEntry, StoreError, Stores};
use crate::domain::job::Job;
use crate::domain::worker::Worker;

/// What [`QueueTransactions::bind`] writes: the worker and the job as the
/// caller changed them, each still carrying the version it was read at, and
/// the record of the job's transition.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Binding {
    /// The worker with the job added to its current jobs.
    pub worker: Worker,
    /// The job, moved out of `pending` and naming the worker.
    pub job: Job,
    /// The job's history record of that move.
    pub record: JobTransitionRecord,
}

impl Binding {
    /// A binding of `job` to `worker`, recorded as `record`.
    #[must_use]
    pub fn new(worker: Worker, job: Job, record: JobTransitionRecord) -> Self {
        Self {
            worker,
            job,
            record,
        }
    }
}

/// What became of a [`Binding`].
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum BindOutcome {
    /// Everything was written: the worker and the job as stored (new
    /// versions), the record added, the queue entry deleted.
    Bound {
        /// The worker as stored.
        worker: Box<Worker>,
        /// The job as stored.
        job: Box<Job>,
    },
    /// Nothing was written: the job's queue entry is gone or held by a
    /// lease (another controller is placing it).
    EntryTaken,
    /// Nothing was written: the stored worker or job is not at the version
    /// of the caller's copy (or is gone). The caller reads them again.
    Stale,
}

/// A job's writes onto the queue ([`Self::admit`]) and off it to a worker
/// ([`Self::bind`]), each all at once or not at all, over the jobs, queue,
/// workers and job history of one [`crate::store::Stores`] bundle.
#[async_trait]
pub trait QueueTransactions: Send + Sync {
    /// Stores a new job, queues it as `entry` and adds `record` (its
    /// creation), as `JobRepository::insert`, `JobQueue::enqueue` and
    /// `JobHistoryStore::record` would: the job as stored (version 1), or
    /// the error `insert` gives (`AlreadyExists`, `Invalid`) and nothing
    /// written.
    async fn admit(
        &self,
        job: &Job,
        entry: &QueueEntry,
        record: &JobTransitionRecord,
    ) -> Result<Job, StoreError>;

    /// Writes `binding`, or nothing of it: the job's queue entry, if present
    /// and held by no lease, is deleted; the worker is stored as given at its
    /// next version if the stored one is at the given version (a heartbeat
    /// stored since, which bumps no version, is kept as
    /// `WorkerRegistry::update` keeps it); the job likewise; the record is
    /// added as `JobHistoryStore::record` adds it (the trim to
    /// `MAX_RECORDS_PER_JOB` may be left out when the job's version shows
    /// its history cannot pass the cap: each stored change of a job adds at
    /// most one record). If any condition fails, nothing is written.
    async fn bind(&self, binding: &Binding) -> Result<BindOutcome, StoreError>;

    /// Whether these transactions write to the very jobs, queue, workers and
    /// job history of `stores` (the same instances). A control plane built
    /// on a bundle where one of them was replaced (a wrapper, another
    /// backend) goes step by step instead.
    fn writes_to(&self, stores: &Stores) -> bool;
}

/// Whether `a` and `b` are one instance (`Arc`s of a trait object and of a
/// concrete type compared by address).
#[must_use]
pub fn same_instance<A: ?Sized, B: ?Sized>(a: &Arc<A>, b: &Arc<B>) -> bool {
    std::ptr::addr_eq(Arc::as_ptr(a), Arc::as_ptr(b))
}
