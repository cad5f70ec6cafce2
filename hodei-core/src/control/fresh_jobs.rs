//! The jobs this replica has just queued, as stored, for its next dispatch
//! pass: the pass takes a job from here instead of reading it back from the
//! store, and, knowing there is work, builds its scheduling snapshot beside
//! its queue read rather than after it (on Postgres, one round trip less
//! each between a submit and its dispatch).
//!
//! A copy here may be stale (cancelled, or placed by another replica,
//! since): the bind then finds the queue entry gone or the job at another
//! version and writes nothing, and the step-by-step path reads it afresh.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use indexmap::IndexMap;

use super::lock;
use crate::domain::ids::JobId;
use crate::domain::job::Job;

/// How many copies are kept: the jobs other replicas place are never taken
/// here, so the oldest make room (and a pass that finds the queue empty
/// forgets those kept before it began).
const CAPACITY: usize = 1024;

/// See the module.
#[derive(Default)]
pub(super) struct FreshJobs {
    /// Each copy with the number of its `put`.
    jobs: Mutex<IndexMap<JobId, (u64, Job)>>,
    puts: AtomicU64,
}

impl FreshJobs {
    /// Keeps `job` (as just stored and queued) for the next pass.
    pub(super) fn put(&self, job: Job) {
        let mut jobs = lock(&self.jobs);
        if jobs.len() >= CAPACITY {
            jobs.shift_remove_index(0);
        }
        let n = self.puts.fetch_add(1, Ordering::Relaxed);
        jobs.insert(job.id(), (n, job));
    }

    /// The copy of `id`, if one is kept (it is given out once).
    pub(super) fn take(&self, id: JobId) -> Option<Job> {
        lock(&self.jobs).shift_remove(&id).map(|(_, job)| job)
    }

    /// Where a pass starting now begins: [`Self::forget_before`] with it
    /// keeps the copies kept since.
    pub(super) fn mark(&self) -> u64 {
        self.puts.load(Ordering::Relaxed)
    }

    /// Forgets the copies kept before `mark`: a pass that began at `mark`
    /// found the queue empty, so they are of jobs placed by other replicas
    /// (a job kept since may not have been queued when the pass looked).
    pub(super) fn forget_before(&self, mark: u64) {
        lock(&self.jobs).retain(|_, (n, _)| *n >= mark);
    }

    /// Whether any job waits for a pass.
    pub(super) fn is_empty(&self) -> bool {
        lock(&self.jobs).is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::spec::{CommandType, JobSpec};

    fn job() -> Job {
        Job::new(JobSpec::new("fresh", CommandType::shell("true", [""; 0])))
    }

    #[test]
    fn a_copy_is_given_once() {
        let fresh = FreshJobs::default();
        let j = job();
        fresh.put(j.clone());
        assert!(!fresh.is_empty());
        assert_eq!(fresh.take(j.id()).map(|c| c.id()), Some(j.id()));
        assert!(fresh.take(j.id()).is_none());
        assert!(fresh.is_empty());
    }

    #[test]
    fn a_pass_forgets_only_what_was_kept_before_it_began() {
        let fresh = FreshJobs::default();
        let (before, after) = (job(), job());
        fresh.put(before.clone());
        let mark = fresh.mark();
        fresh.put(after.clone());
        fresh.forget_before(mark);
        assert!(fresh.take(before.id()).is_none());
        assert!(fresh.take(after.id()).is_some());
    }

    #[test]
    fn the_oldest_make_room() {
        let fresh = FreshJobs::default();
        let first = job();
        fresh.put(first.clone());
        let rest: Vec<Job> = (0..CAPACITY).map(|_| job()).collect();
        for j in &rest {
            fresh.put(j.clone());
        }
        assert!(fresh.take(first.id()).is_none(), "the oldest was dropped");
        assert!(fresh.take(rest[0].id()).is_some());
        assert!(fresh.take(rest[CAPACITY - 1].id()).is_some());
    }
}
