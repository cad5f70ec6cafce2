//! The jobs this replica is queueing or has just queued, as stored, for its
//! next dispatch pass: the pass takes a job from here instead of reading it
//! back from the store, and, knowing there is work, builds its scheduling
//! snapshot beside its queue read rather than after it.
//!
//! A submit keeps its job here and wakes the pass *before* it stores the
//! job: the pass's reads (strategy, first page, snapshot) then go beside the
//! job's own writes instead of after them (on Postgres, one round trip less
//! between a submit and its dispatch). A job still being stored when the
//! pass begins may be missing from the page it reads, so the pass waits for
//! those admissions ([`FreshJobs::queued_among`]) and adds the ones that
//! were queued to its first page, in queue order ([`merge_into`]); it binds
//! them only once their entries exist.
//!
//! A copy here may be stale (cancelled, or placed by another replica,
//! since): the bind then finds the queue entry gone or the job at another
//! version and writes nothing, and the step-by-step path reads it afresh.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use indexmap::IndexMap;
use tokio::sync::Notify;

use super::lock;
use crate::domain::ids::JobId;
use crate::domain::job::Job;
use crate::scheduler::{QueueCursor, QueueOrder, QueuePage};
use crate::store::QueueEntry;

/// How many copies are kept: the jobs other replicas place are never taken
/// here, so the oldest make room (and a pass that finds the queue empty
/// forgets those kept before it began).
const CAPACITY: usize = 1024;

/// A kept copy.
struct Kept {
    /// The number of its `put`.
    n: u64,
    job: Job,
    /// Its queue entry once stored; `None` while it is being stored.
    entry: Option<QueueEntry>,
}

/// See the module.
#[derive(Default)]
pub(super) struct FreshJobs {
    jobs: Mutex<IndexMap<JobId, Kept>>,
    puts: AtomicU64,
    /// Told whenever an admission ends (queued or given up).
    settled: Notify,
}

impl FreshJobs {
    /// Keeps `job` while it is being stored and queued; the returned
    /// [`Admission`] says how that ended (dropped unfinished, the copy is
    /// forgotten).
    pub(super) fn admit(&self, job: Job) -> Admission<'_> {
        let id = job.id();
        self.keep(job, None);
        Admission {
            fresh: self,
            id,
            settled: false,
        }
    }

    /// Keeps `job`, stored and queued with `entry`, for the next pass.
    pub(super) fn put(&self, job: Job, entry: QueueEntry) {
        self.keep(job, Some(entry));
    }

    fn keep(&self, job: Job, entry: Option<QueueEntry>) {
        let mut jobs = lock(&self.jobs);
        if jobs.len() >= CAPACITY {
            jobs.shift_remove_index(0);
        }
        let n = self.puts.fetch_add(1, Ordering::Relaxed);
        jobs.insert(job.id(), Kept { n, job, entry });
    }

    /// The copy of `id`, if one is kept (it is given out once).
    pub(super) fn take(&self, id: JobId) -> Option<Job> {
        lock(&self.jobs).shift_remove(&id).map(|k| k.job)
    }

    /// The jobs being stored now.
    pub(super) fn admitting(&self) -> Vec<JobId> {
        lock(&self.jobs)
            .iter()
            .filter(|(_, k)| k.entry.is_none())
            .map(|(id, _)| *id)
            .collect()
    }

    /// Waits until none of `ids` is still being stored; the queue entries
    /// of those that were queued (and are still kept).
    pub(super) async fn queued_among(&self, ids: &[JobId]) -> Vec<QueueEntry> {
        loop {
            let settled = self.settled.notified();
            tokio::pin!(settled);
            // Registered before the check: an admission ending in between
            // still wakes this wait.
            settled.as_mut().enable();
            {
                let jobs = lock(&self.jobs);
                let kept = ids.iter().filter_map(|id| jobs.get(id));
                if kept.clone().all(|k| k.entry.is_some()) {
                    return kept.filter_map(|k| k.entry.clone()).collect();
                }
            }
            settled.await;
        }
    }

    /// Where a pass starting now begins: [`Self::forget_before`] with it
    /// keeps the copies kept since.
    pub(super) fn mark(&self) -> u64 {
        self.puts.load(Ordering::Relaxed)
    }

    /// Forgets the queued copies kept before `mark`: a pass that began at
    /// `mark` found the queue empty, so they are of jobs placed by other
    /// replicas (a job kept since, or still being stored, may not have been
    /// queued when the pass looked).
    pub(super) fn forget_before(&self, mark: u64) {
        lock(&self.jobs).retain(|_, k| k.n >= mark || k.entry.is_none());
    }

    /// Whether any job waits for a pass.
    pub(super) fn is_empty(&self) -> bool {
        lock(&self.jobs).is_empty()
    }
}

/// A job being stored and queued (see [`FreshJobs::admit`]).
pub(super) struct Admission<'a> {
    fresh: &'a FreshJobs,
    id: JobId,
    settled: bool,
}

impl Admission<'_> {
    /// The job is stored and queued with `entry`.
    pub(super) fn queued(mut self, entry: QueueEntry) {
        if let Some(k) = lock(&self.fresh.jobs).get_mut(&self.id) {
            k.entry = Some(entry);
        }
        self.settled = true;
        self.fresh.settled.notify_waiters();
    }
}

impl Drop for Admission<'_> {
    /// Not queued (the store refused it, or the submit was dropped midway):
    /// the copy is forgotten; a pass reads the job from the store if its
    /// entry exists after all.
    fn drop(&mut self) {
        if !self.settled {
            let _ = self.fresh.take(self.id);
            self.fresh.settled.notify_waiters();
        }
    }
}

/// Adds `queued` (entries a page read may have missed: the jobs were being
/// stored meanwhile) to `page`, read from the head of the queue in `order`,
/// where the walk meets them: each entry the page lacks whose place is
/// within the page's range (anywhere when it reached the end of the queue).
/// An entry placed after the page's last one is left to a later page.
pub(super) fn merge_into(page: &mut QueuePage, order: QueueOrder, queued: Vec<QueueEntry>) {
    let key = |e: &QueueEntry| QueueCursor::key_of(order, e.priority, e.enqueued_at);
    let last = match (&page.next, page.entries.last()) {
        (Some(_), Some(last)) => Some(key(last)),
        _ => None,
    };
    let mut added = false;
    for entry in queued {
        if page.entries.iter().any(|e| e.job_id == entry.job_id)
            || last.is_some_and(|last| key(&entry) > last)
        {
            continue;
        }
        page.entries.push(entry);
        added = true;
    }
    if added {
        // Stable: among equal keys the entries read keep their order and
        // the added ones (queued last) go after them.
        page.entries.sort_by_key(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::spec::{CommandType, JobSpec};
    use chrono::{TimeDelta, Utc};

    fn job() -> Job {
        Job::new(JobSpec::new("fresh", CommandType::shell("true", [""; 0])))
    }

    fn entry(job: &Job) -> QueueEntry {
        QueueEntry {
            job_id: job.id(),
            priority: job.priority(),
            enqueued_at: Utc::now(),
        }
    }

    #[test]
    fn a_copy_is_given_once() {
        let fresh = FreshJobs::default();
        let j = job();
        fresh.put(j.clone(), entry(&j));
        assert!(!fresh.is_empty());
        assert_eq!(fresh.take(j.id()).map(|c| c.id()), Some(j.id()));
        assert!(fresh.take(j.id()).is_none());
        assert!(fresh.is_empty());
    }

    #[test]
    fn a_pass_forgets_only_what_was_queued_before_it_began() {
        let fresh = FreshJobs::default();
        let (before, storing, after) = (job(), job(), job());
        fresh.put(before.clone(), entry(&before));
        let admission = fresh.admit(storing.clone());
        let mark = fresh.mark();
        fresh.put(after.clone(), entry(&after));
        fresh.forget_before(mark);
        assert!(fresh.take(before.id()).is_none());
        assert!(fresh.take(after.id()).is_some());
        assert!(fresh.take(storing.id()).is_some(), "still being stored");
        drop(admission);
    }

    #[test]
    fn the_oldest_make_room() {
        let fresh = FreshJobs::default();
        let first = job();
        fresh.put(first.clone(), entry(&first));
        let rest: Vec<Job> = (0..CAPACITY).map(|_| job()).collect();
        for j in &rest {
            fresh.put(j.clone(), entry(j));
        }
        assert!(fresh.take(first.id()).is_none(), "the oldest was dropped");
        assert!(fresh.take(rest[0].id()).is_some());
        assert!(fresh.take(rest[CAPACITY - 1].id()).is_some());
    }

    #[tokio::test]
    async fn a_pass_waits_for_the_admissions_under_way_and_gets_the_queued_ones() {
        let fresh = FreshJobs::default();
        let (queued, refused) = (job(), job());
        let (a, b) = (fresh.admit(queued.clone()), fresh.admit(refused.clone()));
        let ids = fresh.admitting();
        assert_eq!(ids, vec![queued.id(), refused.id()]);
        let wait = fresh.queued_among(&ids);
        tokio::pin!(wait);
        assert!(
            futures::poll!(wait.as_mut()).is_pending(),
            "both are being stored"
        );
        a.queued(entry(&queued));
        assert!(futures::poll!(wait.as_mut()).is_pending(), "one still is");
        drop(b);
        let got = wait.await;
        assert_eq!(
            got.iter().map(|e| e.job_id).collect::<Vec<_>>(),
            vec![queued.id()]
        );
        assert!(
            fresh.take(refused.id()).is_none(),
            "a refused job is forgotten"
        );
        assert!(fresh.admitting().is_empty());
    }

    #[test]
    fn merged_entries_take_their_place_in_queue_order() {
        let now = Utc::now();
        let at = |job: &Job, priority: i32, secs: i64| QueueEntry {
            job_id: job.id(),
            priority,
            enqueued_at: now + TimeDelta::seconds(secs),
        };
        let (a, b, c, d) = (job(), job(), job(), job());
        let read = vec![at(&a, 5, 0), at(&b, 0, 0)];
        // The whole queue: every entry joins, by aged rank.
        let mut page = QueuePage::new(read.clone(), None);
        merge_into(
            &mut page,
            QueueOrder::Aged,
            vec![at(&c, 1, 1), at(&a, 5, 0), at(&d, 9, 2)],
        );
        let ids: Vec<JobId> = page.entries.iter().map(|e| e.job_id).collect();
        assert_eq!(
            ids,
            vec![d.id(), a.id(), c.id(), b.id()],
            "a is not doubled"
        );
        // A page with more behind it: an entry placed after its last one waits.
        let mut page = QueuePage::new(read, Some(QueueCursor::new(0, 0)));
        merge_into(
            &mut page,
            QueueOrder::Fifo,
            vec![at(&c, 9, 1), at(&d, 0, -1)],
        );
        let ids: Vec<JobId> = page.entries.iter().map(|e| e.job_id).collect();
        assert_eq!(ids, vec![d.id(), a.id(), b.id()]);
    }
}
