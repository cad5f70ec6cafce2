//! Giving a queued job to a worker as one store operation.
//!
//! Step by step, a dispatch claims the queue entry, takes the worker's slot,
//! moves the job to `scheduled` naming the worker, records the transition and
//! deletes the entry: five writes, each a round trip on a database, each
//! waiting for the one before it (the order is what keeps a job from being
//! bound twice or to a worker without room). A [`JobBinder`] does the same
//! writes at once, all or none, so a database store makes them one round trip.
//! A store that has none leaves [`crate::store::Stores::binder`] empty and the
//! control plane goes step by step.

use async_trait::async_trait;

use super::{JobTransitionRecord, StoreError};
use crate::domain::job::Job;
use crate::domain::worker::Worker;

/// What a [`JobBinder`] writes: the worker and the job as the caller changed
/// them, each still carrying the version it was read at, and the record of
/// the job's transition.
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
        worker: Worker,
        /// The job as stored.
        job: Job,
    },
    /// Nothing was written: the job's queue entry is gone or held by a
    /// lease (another controller is placing it).
    EntryTaken,
    /// Nothing was written: the stored worker or job is not at the version
    /// of the caller's copy (or is gone). The caller reads them again.
    Stale,
}

/// Writes a [`Binding`] all at once, or nothing of it.
///
/// The writes are those of the steps: the job's queue entry, if present and
/// held by no lease, is deleted; the worker is stored as given at its next
/// version if the stored one is at the given version (a heartbeat stored
/// since, which bumps no version, is kept as `WorkerRegistry::update` keeps
/// it); the job likewise; the record is added as `JobHistoryStore::record`
/// adds it. If any condition fails, nothing is written.
#[async_trait]
pub trait JobBinder: Send + Sync {
    /// Writes `binding`, or nothing (see the trait).
    async fn bind(&self, binding: &Binding) -> Result<BindOutcome, StoreError>;
}
