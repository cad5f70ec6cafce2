//! In-memory stores: the embedded default when no database is configured.
//!
//! Every store keeps its data behind a `std::sync` lock that is held only for
//! the duration of a synchronous critical section (never across an `.await`),
//! so they work on any async runtime and need no tokio. A poisoned lock is
//! recovered: every critical section leaves the data consistent before it can
//! panic.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ops::Bound;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, TimeDelta, Utc};
use uuid::Uuid;

use crate::domain::ids::{JobId, ProviderId, WorkerId};
use crate::domain::job::{Job, JobState};
use crate::domain::logs::LogEntry;
use crate::domain::provider::Provider;
use crate::domain::worker::Worker;
use crate::domain::worker_stats::WorkerStats;
mod queue_transactions;

pub use queue_transactions::InMemoryQueueTransactions;

use crate::store::{
    JobFilter, JobQueue, JobRepository, Lease, LogCursor, LogStore, OtpError, OtpTokenStore,
    ProviderConfigRepository, QueueCursor, QueueEntry, QueueOrder, QueuePage, StoreError,
    StoredLogEntry, WorkerRegistry,
};

/// Default number of jobs [`JobRepository::list`] returns without a limit.
const DEFAULT_LIST_LIMIT: usize = 100;

fn read<T>(lock: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(PoisonError::into_inner)
}

fn write<T>(lock: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    lock.write().unwrap_or_else(PoisonError::into_inner)
}

fn lock<T>(lock: &Mutex<T>) -> MutexGuard<'_, T> {
    lock.lock().unwrap_or_else(PoisonError::into_inner)
}

/// `now + d`, saturating at the largest representable time.
fn add_duration(now: DateTime<Utc>, d: Duration) -> DateTime<Utc> {
    TimeDelta::from_std(d)
        .ok()
        .and_then(|d| now.checked_add_signed(d))
        .unwrap_or(DateTime::<Utc>::MAX_UTC)
}

// ---------------------------------------------------------------------------
// Jobs
// ---------------------------------------------------------------------------

/// Jobs in a hash map, with optimistic concurrency on [`Job::version`].
#[derive(Debug, Default)]
pub struct InMemoryJobRepository {
    // (insertion sequence, job): the sequence breaks ties between equal `created_at`.
    jobs: RwLock<HashMap<JobId, (u64, Job)>>,
    /// Jobs per state, changed under the `jobs` write lock with every write:
    /// probes and scrapes read it without walking every job ever stored.
    by_state: Mutex<BTreeMap<JobState, u64>>,
    next_seq: AtomicU64,
    /// Where the logs of pruned jobs are deleted, as the database stores do.
    logs: Option<Arc<InMemoryLogStore>>,
}

impl InMemoryJobRepository {
    /// An empty repository.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// A job left state `from` for state `to` (`None`: not stored before,
    /// or no longer). Called with the `jobs` write lock held.
    fn recount(&self, from: Option<JobState>, to: Option<JobState>) {
        let mut counts = lock(&self.by_state);
        if let Some(n) = from.and_then(|s| counts.get_mut(&s)) {
            *n = n.saturating_sub(1);
        }
        if let Some(s) = to {
            *counts.entry(s).or_insert(0) += 1;
        }
    }

    /// [`JobRepository::insert`] under the `jobs` write lock.
    fn insert_locked(
        &self,
        jobs: &mut HashMap<JobId, (u64, Job)>,
        job: &Job,
    ) -> Result<Job, StoreError> {
        if jobs.contains_key(&job.id()) {
            return Err(StoreError::AlreadyExists {
                entity: "job",
                id: job.id().to_string(),
            });
        }
        let mut stored = job.clone();
        stored.set_version(1);
        let seq = self.next_seq.fetch_add(1, Ordering::Relaxed);
        jobs.insert(job.id(), (seq, stored.clone()));
        self.recount(None, Some(stored.state()));
        Ok(stored)
    }

    /// Whether `job` is at the version stored: `NotFound` or `Conflict` if not.
    fn check_version(jobs: &HashMap<JobId, (u64, Job)>, job: &Job) -> Result<(), StoreError> {
        match jobs.get(&job.id()) {
            None => Err(StoreError::NotFound {
                entity: "job",
                id: job.id().to_string(),
            }),
            Some((_, current)) if current.version() != job.version() => Err(StoreError::Conflict {
                entity: "job",
                id: job.id().to_string(),
                expected: job.version(),
                actual: current.version(),
            }),
            Some(_) => Ok(()),
        }
    }

    /// Stores `job` at its next version, checked by [`Self::check_version`]
    /// under the same write lock.
    fn store_next_version(&self, jobs: &mut HashMap<JobId, (u64, Job)>, job: &Job) -> Job {
        let mut stored = job.clone();
        stored.set_version(job.version() + 1);
        if let Some((_, current)) = jobs.get_mut(&job.id()) {
            let was = current.state();
            *current = stored.clone();
            self.recount(Some(was), Some(stored.state()));
        }
        stored
    }

    /// An empty repository whose [`JobRepository::prune_finished`] also
    /// deletes the pruned jobs' logs from `logs`.
    #[must_use]
    pub fn with_logs(logs: Arc<InMemoryLogStore>) -> Self {
        Self {
            logs: Some(logs),
            ..Self::default()
        }
    }
}

#[async_trait]
impl JobRepository for InMemoryJobRepository {
    async fn insert(&self, job: &Job) -> Result<Job, StoreError> {
        self.insert_locked(&mut write(&self.jobs), job)
    }

    async fn get(&self, id: JobId) -> Result<Option<Job>, StoreError> {
        Ok(read(&self.jobs).get(&id).map(|(_, j)| j.clone()))
    }

    async fn update(&self, job: &Job) -> Result<Job, StoreError> {
        let mut jobs = write(&self.jobs);
        Self::check_version(&jobs, job)?;
        Ok(self.store_next_version(&mut jobs, job))
    }

    async fn list(&self, filter: &JobFilter) -> Result<Vec<Job>, StoreError> {
        let jobs = read(&self.jobs);
        let mut matching: Vec<&(u64, Job)> = jobs
            .values()
            .filter(|(_, j)| filter.state.is_none_or(|s| j.state() == s))
            .filter(|(_, j)| filter.worker_id.is_none_or(|w| j.worker_id() == Some(w)))
            .collect();
        matching.sort_by(|(sa, a), (sb, b)| {
            b.created_at().cmp(&a.created_at()).then_with(|| sb.cmp(sa))
        });
        let limit = filter.limit.unwrap_or(DEFAULT_LIST_LIMIT);
        Ok(matching
            .into_iter()
            .take(limit)
            .map(|(_, j)| j.clone())
            .collect())
    }

    async fn count_by_state(&self) -> Result<BTreeMap<JobState, u64>, StoreError> {
        Ok(lock(&self.by_state)
            .iter()
            .filter(|(_, n)| **n > 0)
            .map(|(s, n)| (*s, *n))
            .collect())
    }

    async fn prune_finished(&self, before: DateTime<Utc>) -> Result<u64, StoreError> {
        let mut pruned = Vec::new();
        write(&self.jobs).retain(|id, (_, j)| {
            let old = j.state().is_terminal() && j.finished_at().is_some_and(|f| f < before);
            if old {
                pruned.push(*id);
                self.recount(Some(j.state()), None);
            }
            !old
        });
        if let Some(logs) = &self.logs {
            let mut logs = write(&logs.jobs);
            for id in &pruned {
                logs.remove(id);
            }
        }
        Ok(pruned.len() as u64)
    }
}

// ---------------------------------------------------------------------------
// Queue
// ---------------------------------------------------------------------------

/// Claim order: aged rank descending (priority with aging, see
/// [`crate::scheduler::aged_rank`]), then insertion order.
type QueueKey = (i64, u64, JobId);

#[derive(Debug)]
struct Slot {
    entry: QueueEntry,
    seq: u64,
    lease: Option<(Uuid, DateTime<Utc>)>,
}

impl Slot {
    fn key(&self) -> QueueKey {
        self.key_in(QueueOrder::Aged)
    }

    fn key_in(&self, order: QueueOrder) -> QueueKey {
        let k = QueueCursor::key_of(order, self.entry.priority, self.entry.enqueued_at);
        (k, self.seq, self.entry.job_id)
    }
}

#[derive(Debug, Default)]
struct QueueState {
    slots: HashMap<JobId, Slot>,
    /// Unclaimed entries in claim order.
    ready: BTreeSet<QueueKey>,
    /// Unclaimed entries, oldest first (for FIFO walks).
    ready_fifo: BTreeSet<QueueKey>,
    next_seq: u64,
}

impl QueueState {
    fn mark_ready(&mut self, job_id: JobId) {
        if let Some(slot) = self.slots.get(&job_id) {
            self.ready.insert(slot.key());
            self.ready_fifo.insert(slot.key_in(QueueOrder::Fifo));
        }
    }

    fn unmark_ready(&mut self, job_id: JobId) {
        if let Some(slot) = self.slots.get(&job_id) {
            self.ready.remove(&slot.key());
            self.ready_fifo.remove(&slot.key_in(QueueOrder::Fifo));
        }
    }

    fn lease(&mut self, job_id: JobId, now: DateTime<Utc>, lease_for: Duration) -> Option<Lease> {
        if self.slots.get(&job_id)?.lease.is_some() {
            return None;
        }
        self.unmark_ready(job_id);
        let slot = self.slots.get_mut(&job_id)?;
        let lease_id = Uuid::new_v4();
        let expires_at = add_duration(now, lease_for);
        slot.lease = Some((lease_id, expires_at));
        Some(Lease {
            entry: slot.entry.clone(),
            lease_id,
            expires_at,
        })
    }

    /// Queues `entry` unless its job has an entry already.
    fn enqueue(&mut self, entry: QueueEntry) {
        if self.slots.contains_key(&entry.job_id) {
            return;
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        let job_id = entry.job_id;
        let slot = Slot {
            entry,
            seq,
            lease: None,
        };
        self.slots.insert(job_id, slot);
        self.mark_ready(job_id);
    }

    /// Whether `job_id` has an entry that no lease holds.
    fn is_free(&self, job_id: JobId) -> bool {
        self.slots.get(&job_id).is_some_and(|s| s.lease.is_none())
    }

    /// Deletes the entry of `job_id`, held or not; whether there was one.
    fn delete(&mut self, job_id: JobId) -> bool {
        self.unmark_ready(job_id);
        self.slots.remove(&job_id).is_some()
    }

    fn check_lease(&self, lease: &Lease) -> Result<(), StoreError> {
        match self.slots.get(&lease.entry.job_id) {
            Some(Slot {
                lease: Some((id, _)),
                ..
            }) if *id == lease.lease_id => Ok(()),
            _ => Err(StoreError::StaleLease {
                job_id: lease.entry.job_id,
            }),
        }
    }
}

/// A priority queue with leases, in memory. Claim order is the aged rank
/// (priority with aging) descending, then enqueue order.
#[derive(Debug, Default)]
pub struct InMemoryJobQueue {
    state: Mutex<QueueState>,
}

impl InMemoryJobQueue {
    /// An empty queue.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }
}

#[async_trait]
impl JobQueue for InMemoryJobQueue {
    async fn enqueue(&self, entry: QueueEntry) -> Result<(), StoreError> {
        lock(&self.state).enqueue(entry);
        Ok(())
    }

    async fn claim(&self, limit: usize, lease_for: Duration) -> Result<Vec<Lease>, StoreError> {
        let now = Utc::now();
        let mut st = lock(&self.state);
        let ids: Vec<JobId> = st.ready.iter().take(limit).map(|k| k.2).collect();
        Ok(ids
            .into_iter()
            .filter_map(|id| st.lease(id, now, lease_for))
            .collect())
    }

    async fn claim_job(
        &self,
        job_id: JobId,
        lease_for: Duration,
    ) -> Result<Option<Lease>, StoreError> {
        let now = Utc::now();
        Ok(lock(&self.state).lease(job_id, now, lease_for))
    }

    async fn peek(&self, limit: usize) -> Result<Vec<QueueEntry>, StoreError> {
        let st = lock(&self.state);
        Ok(st
            .ready
            .iter()
            .take(limit)
            .filter_map(|k| st.slots.get(&k.2).map(|s| s.entry.clone()))
            .collect())
    }

    async fn scan(
        &self,
        order: QueueOrder,
        after: Option<QueueCursor>,
        limit: usize,
    ) -> Result<QueuePage, StoreError> {
        let st = lock(&self.state);
        let set = match order {
            QueueOrder::Fifo => &st.ready_fifo,
            _ => &st.ready,
        };
        let start = match after {
            // Strictly after (key, seq): every job id sorts after the nil one.
            Some(c) => Bound::Excluded((
                c.key,
                u64::try_from(c.seq).unwrap_or(0),
                JobId::from_uuid(Uuid::max()),
            )),
            None => Bound::Unbounded,
        };
        let keys: Vec<QueueKey> = set
            .range((start, Bound::Unbounded))
            .take(limit)
            .copied()
            .collect();
        let next = match keys.last() {
            Some(k) if keys.len() == limit => Some(QueueCursor::new(
                k.0,
                i64::try_from(k.1).unwrap_or(i64::MAX),
            )),
            _ => None,
        };
        let entries = keys
            .iter()
            .filter_map(|k| st.slots.get(&k.2).map(|s| s.entry.clone()))
            .collect();
        Ok(QueuePage::new(entries, next))
    }

    async fn complete(&self, lease: &Lease) -> Result<(), StoreError> {
        let mut st = lock(&self.state);
        st.check_lease(lease)?;
        st.slots.remove(&lease.entry.job_id);
        Ok(())
    }

    async fn release(&self, lease: &Lease) -> Result<(), StoreError> {
        let mut st = lock(&self.state);
        st.check_lease(lease)?;
        match st.slots.get_mut(&lease.entry.job_id) {
            Some(slot) => slot.lease = None,
            None => {
                return Err(StoreError::StaleLease {
                    job_id: lease.entry.job_id,
                });
            }
        }
        st.mark_ready(lease.entry.job_id);
        Ok(())
    }

    async fn renew(&self, lease: &Lease, lease_for: Duration) -> Result<Lease, StoreError> {
        let mut st = lock(&self.state);
        st.check_lease(lease)?;
        let expires_at = add_duration(Utc::now(), lease_for);
        if let Some(slot) = st.slots.get_mut(&lease.entry.job_id) {
            slot.lease = Some((lease.lease_id, expires_at));
        }
        Ok(Lease {
            expires_at,
            ..lease.clone()
        })
    }

    async fn queued(
        &self,
        job_ids: &[JobId],
    ) -> Result<std::collections::HashSet<JobId>, StoreError> {
        let st = lock(&self.state);
        Ok(job_ids
            .iter()
            .filter(|id| st.slots.contains_key(id))
            .copied()
            .collect())
    }

    async fn remove(&self, job_id: JobId) -> Result<bool, StoreError> {
        Ok(lock(&self.state).delete(job_id))
    }

    async fn rescue_expired(&self, now: DateTime<Utc>) -> Result<Vec<JobId>, StoreError> {
        let mut st = lock(&self.state);
        let mut rescued = Vec::new();
        for slot in st.slots.values_mut() {
            if let Some((_, expires_at)) = slot.lease
                && expires_at < now
            {
                slot.lease = None;
                rescued.push(slot.entry.job_id);
            }
        }
        for id in &rescued {
            st.mark_ready(*id);
        }
        Ok(rescued)
    }

    async fn len(&self) -> Result<usize, StoreError> {
        Ok(lock(&self.state).ready.len())
    }
}

// ---------------------------------------------------------------------------
// Workers
// ---------------------------------------------------------------------------

#[derive(Debug, Default)]
struct WorkerState {
    workers: HashMap<WorkerId, Worker>,
    /// Session token hash -> worker.
    sessions: HashMap<String, WorkerId>,
    /// Worker -> its session token hash.
    session_of: HashMap<WorkerId, String>,
    /// The counts the scheduler and the metrics ask for on every pass or
    /// scrape, kept as workers are written, so that none of them walks
    /// 10,000 workers.
    tally: WorkerTally,
}

/// Running counts over the stored workers.
#[derive(Debug, Default)]
struct WorkerTally {
    by_state: BTreeMap<crate::domain::worker::WorkerState, u32>,
    alive_by_provider: BTreeMap<ProviderId, u32>,
    idle_by_provider: BTreeMap<ProviderId, u32>,
    jobs_by_provider: BTreeMap<ProviderId, u32>,
}

impl WorkerTally {
    /// Counts `w` in (`add`) or out (`!add`).
    fn count(&mut self, w: &Worker, add: bool) {
        fn step<K: Ord>(map: &mut BTreeMap<K, u32>, key: K, by: u32, add: bool) {
            let n = map.entry(key).or_insert(0);
            *n = if add {
                n.saturating_add(by)
            } else {
                n.saturating_sub(by)
            };
        }
        step(&mut self.by_state, w.state(), 1, add);
        if !w.state().is_gone() {
            step(&mut self.alive_by_provider, w.provider_id(), 1, add);
            let jobs = u32::try_from(w.current_jobs().len()).unwrap_or(u32::MAX);
            step(&mut self.jobs_by_provider, w.provider_id(), jobs, add);
        }
        if w.is_idle_or_starting() {
            step(&mut self.idle_by_provider, w.provider_id(), 1, add);
        }
    }

    /// The non-zero entries of a count.
    fn nonzero<K: Ord + Copy, V: From<u32>>(map: &BTreeMap<K, u32>) -> BTreeMap<K, V> {
        map.iter()
            .filter(|(_, n)| **n > 0)
            .map(|(k, n)| (*k, V::from(*n)))
            .collect()
    }
}

impl WorkerState {
    /// Stores `w` in place of any older copy, keeping the counts.
    fn put(&mut self, w: Worker) {
        self.tally.count(&w, true);
        if let Some(old) = self.workers.insert(w.id(), w) {
            self.tally.count(&old, false);
        }
    }

    /// Whether `worker` is at the version stored: `NotFound` or `Conflict`
    /// if not.
    fn check_version(&self, worker: &Worker) -> Result<&Worker, StoreError> {
        let Some(current) = self.workers.get(&worker.id()) else {
            return Err(StoreError::NotFound {
                entity: "worker",
                id: worker.id().to_string(),
            });
        };
        if current.version() != worker.version() {
            return Err(StoreError::Conflict {
                entity: "worker",
                id: worker.id().to_string(),
                expected: worker.version(),
                actual: current.version(),
            });
        }
        Ok(current)
    }

    /// [`WorkerRegistry::update`]: `worker` at its next version if it is at
    /// the stored one.
    fn update(&mut self, worker: &Worker) -> Result<Worker, StoreError> {
        let current = self.check_version(worker)?;
        let mut stored = worker.clone();
        // A heartbeat stored by `touch` since the caller read the worker.
        stored.heartbeat_at(stored.last_heartbeat().max(current.last_heartbeat()));
        if let Some(stats) = current.stats() {
            stored.record_stats(stats.clone());
        }
        stored.set_version(worker.version() + 1);
        self.put(stored.clone());
        Ok(stored)
    }

    fn drop_session(&mut self, id: WorkerId) {
        if let Some(hash) = self.session_of.remove(&id) {
            self.sessions.remove(&hash);
        }
    }
}

/// Workers and their sessions, in memory.
#[derive(Debug, Default)]
pub struct InMemoryWorkerRegistry {
    state: RwLock<WorkerState>,
}

impl InMemoryWorkerRegistry {
    /// An empty registry.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }
}

#[async_trait]
impl WorkerRegistry for InMemoryWorkerRegistry {
    async fn register(&self, worker: &Worker) -> Result<Worker, StoreError> {
        let mut st = write(&self.state);
        if st.workers.contains_key(&worker.id()) {
            return Err(StoreError::AlreadyExists {
                entity: "worker",
                id: worker.id().to_string(),
            });
        }
        let mut stored = worker.clone();
        stored.set_version(1);
        st.put(stored.clone());
        Ok(stored)
    }

    async fn get(&self, id: WorkerId) -> Result<Option<Worker>, StoreError> {
        Ok(read(&self.state).workers.get(&id).cloned())
    }

    async fn update(&self, worker: &Worker) -> Result<Worker, StoreError> {
        write(&self.state).update(worker)
    }

    async fn count_by_state(
        &self,
    ) -> Result<BTreeMap<crate::domain::worker::WorkerState, u64>, StoreError> {
        Ok(WorkerTally::nonzero(&read(&self.state).tally.by_state))
    }

    async fn count_alive_by_provider(&self) -> Result<BTreeMap<ProviderId, u32>, StoreError> {
        Ok(WorkerTally::nonzero(
            &read(&self.state).tally.alive_by_provider,
        ))
    }

    async fn count_idle_by_provider(&self) -> Result<BTreeMap<ProviderId, u32>, StoreError> {
        Ok(WorkerTally::nonzero(
            &read(&self.state).tally.idle_by_provider,
        ))
    }

    async fn count_jobs_of_provider(&self, provider: ProviderId) -> Result<u32, StoreError> {
        Ok(read(&self.state)
            .tally
            .jobs_by_provider
            .get(&provider)
            .copied()
            .unwrap_or(0))
    }

    async fn list(&self) -> Result<Vec<Worker>, StoreError> {
        let mut all: Vec<Worker> = read(&self.state).workers.values().cloned().collect();
        all.sort_by(|a, b| {
            a.created_at()
                .cmp(&b.created_at())
                .then_with(|| a.id().cmp(&b.id()))
        });
        Ok(all)
    }

    async fn touch(
        &self,
        id: WorkerId,
        at: DateTime<Utc>,
        stats: Option<&WorkerStats>,
    ) -> Result<Option<Vec<JobId>>, StoreError> {
        let mut st = write(&self.state);
        let Some(w) = st.workers.get_mut(&id).filter(|w| !w.state().is_gone()) else {
            return Ok(None);
        };
        w.heartbeat_at(at);
        if let Some(stats) = stats {
            w.record_stats(stats.clone());
        }
        Ok(Some(w.current_jobs().to_vec()))
    }

    async fn remove(&self, id: WorkerId) -> Result<bool, StoreError> {
        let mut st = write(&self.state);
        st.drop_session(id);
        let removed = st.workers.remove(&id);
        if let Some(old) = &removed {
            st.tally.count(old, false);
        }
        Ok(removed.is_some())
    }

    async fn set_session(&self, id: WorkerId, token_hash: &str) -> Result<(), StoreError> {
        let mut st = write(&self.state);
        if !st.workers.contains_key(&id) {
            return Err(StoreError::NotFound {
                entity: "worker",
                id: id.to_string(),
            });
        }
        st.drop_session(id);
        // A hash bound to another worker moves to this one.
        if let Some(other) = st.sessions.remove(token_hash) {
            st.session_of.remove(&other);
        }
        st.sessions.insert(token_hash.to_owned(), id);
        st.session_of.insert(id, token_hash.to_owned());
        Ok(())
    }

    async fn worker_for_session(&self, token_hash: &str) -> Result<Option<WorkerId>, StoreError> {
        Ok(read(&self.state).sessions.get(token_hash).copied())
    }
}

// ---------------------------------------------------------------------------
// Providers
// ---------------------------------------------------------------------------

/// Registered providers, in memory. Names are unique.
#[derive(Debug, Default)]
pub struct InMemoryProviderConfigRepository {
    providers: RwLock<HashMap<ProviderId, Provider>>,
}

impl InMemoryProviderConfigRepository {
    /// An empty repository.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }
}

#[async_trait]
impl ProviderConfigRepository for InMemoryProviderConfigRepository {
    async fn save(&self, provider: &Provider) -> Result<(), StoreError> {
        let mut all = write(&self.providers);
        if all
            .values()
            .any(|p| p.name() == provider.name() && p.id() != provider.id())
        {
            return Err(StoreError::AlreadyExists {
                entity: "provider",
                id: provider.name().to_owned(),
            });
        }
        all.insert(provider.id(), provider.clone());
        Ok(())
    }

    async fn get(&self, id: ProviderId) -> Result<Option<Provider>, StoreError> {
        Ok(read(&self.providers).get(&id).cloned())
    }

    async fn get_by_name(&self, name: &str) -> Result<Option<Provider>, StoreError> {
        Ok(read(&self.providers)
            .values()
            .find(|p| p.name() == name)
            .cloned())
    }

    async fn list(&self) -> Result<Vec<Provider>, StoreError> {
        let mut all: Vec<Provider> = read(&self.providers).values().cloned().collect();
        all.sort_by(|a, b| a.name().cmp(b.name()));
        Ok(all)
    }

    async fn delete(&self, id: ProviderId) -> Result<bool, StoreError> {
        Ok(write(&self.providers).remove(&id).is_some())
    }
}

// ---------------------------------------------------------------------------
// Logs
// ---------------------------------------------------------------------------

#[derive(Debug, Default)]
struct JobLogs {
    entries: BTreeMap<(u32, u64), LogEntry>,
    /// Highest contiguous sequence per attempt.
    contiguous: BTreeMap<u32, u64>,
}

/// Job logs, in memory: one ordered map per job keyed by (attempt, sequence).
#[derive(Debug, Default)]
pub struct InMemoryLogStore {
    jobs: RwLock<HashMap<JobId, JobLogs>>,
}

impl InMemoryLogStore {
    /// An empty store.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }
}

#[async_trait]
impl LogStore for InMemoryLogStore {
    async fn append(
        &self,
        job_id: JobId,
        attempt: u32,
        entries: &[LogEntry],
    ) -> Result<u64, StoreError> {
        if let Some(bad) = entries.iter().find(|e| e.sequence == 0) {
            return Err(StoreError::Invalid {
                field: "sequence".into(),
                message: format!("log sequences start at 1, got {}", bad.sequence),
            });
        }
        let mut jobs = write(&self.jobs);
        let logs = jobs.entry(job_id).or_default();
        for e in entries {
            logs.entries
                .entry((attempt, e.sequence))
                .or_insert_with(|| e.clone());
        }
        let mut c = logs.contiguous.get(&attempt).copied().unwrap_or(0);
        while logs.entries.contains_key(&(attempt, c + 1)) {
            c += 1;
        }
        logs.contiguous.insert(attempt, c);
        Ok(c)
    }

    async fn read(
        &self,
        job_id: JobId,
        after: LogCursor,
        limit: usize,
    ) -> Result<Vec<StoredLogEntry>, StoreError> {
        let jobs = read(&self.jobs);
        let Some(logs) = jobs.get(&job_id) else {
            return Ok(Vec::new());
        };
        Ok(logs
            .entries
            .range((
                Bound::Excluded((after.attempt, after.sequence)),
                Bound::Unbounded,
            ))
            .take(limit)
            .map(|(&(attempt, _), entry)| StoredLogEntry {
                attempt,
                entry: entry.clone(),
            })
            .collect())
    }

    async fn last_sequence(&self, job_id: JobId, attempt: u32) -> Result<u64, StoreError> {
        Ok(read(&self.jobs)
            .get(&job_id)
            .and_then(|l| l.contiguous.get(&attempt).copied())
            .unwrap_or(0))
    }

    async fn delete(&self, job_id: JobId) -> Result<u64, StoreError> {
        Ok(write(&self.jobs)
            .remove(&job_id)
            .map_or(0, |l| l.entries.len() as u64))
    }
}

// ---------------------------------------------------------------------------
// One-time tokens
// ---------------------------------------------------------------------------

#[derive(Debug)]
struct OtpRecord {
    worker_id: WorkerId,
    expires_at: DateTime<Utc>,
}

/// One-time tokens, in memory, keyed by the SHA-256 of the token. A lookup
/// is a hash-map probe, as the Postgres store's is an index probe: its
/// timing can tell something about stored *hashes*, and a hash does not
/// lead back to a token (the tokens are 256 random bits). A scan comparing
/// every hash in constant time made registering N workers O(N²): a fifth
/// of the server's CPU while 10,000 agents connected.
#[derive(Debug, Default)]
pub struct InMemoryOtpTokenStore {
    tokens: Mutex<HashMap<String, OtpRecord>>,
}

impl InMemoryOtpTokenStore {
    /// An empty store.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }
}

#[async_trait]
impl OtpTokenStore for InMemoryOtpTokenStore {
    async fn insert(
        &self,
        token_hash: &str,
        worker_id: WorkerId,
        expires_at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        match lock(&self.tokens).entry(token_hash.to_owned()) {
            std::collections::hash_map::Entry::Occupied(_) => Err(StoreError::AlreadyExists {
                entity: "otp token",
                id: worker_id.to_string(),
            }),
            std::collections::hash_map::Entry::Vacant(slot) => {
                slot.insert(OtpRecord {
                    worker_id,
                    expires_at,
                });
                Ok(())
            }
        }
    }

    async fn consume(&self, token_hash: &str, now: DateTime<Utc>) -> Result<WorkerId, OtpError> {
        let record = lock(&self.tokens)
            .remove(token_hash)
            .ok_or(OtpError::Invalid)?;
        if record.expires_at <= now {
            return Err(OtpError::Invalid);
        }
        Ok(record.worker_id)
    }

    async fn purge_expired(&self, now: DateTime<Utc>) -> Result<u64, StoreError> {
        let mut tokens = lock(&self.tokens);
        let len = tokens.len();
        tokens.retain(|_, r| r.expires_at > now);
        Ok((len - tokens.len()) as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::logs::LogStream;
    use crate::domain::spec::{CommandType, JobSpec};

    fn block_on<F: std::future::Future>(f: F) -> F::Output {
        futures::executor::block_on(f)
    }

    /// The kept counts equal a full recount after any mix of writes.
    #[test]
    fn worker_counts_follow_every_write() {
        use crate::domain::worker::WorkerHandle;
        block_on(async {
            let reg = InMemoryWorkerRegistry::new();
            let providers = [ProviderId::new(), ProviderId::new()];
            let mut ids = Vec::new();
            for i in 0..24usize {
                let p = providers[i % 2];
                let mut w = reg
                    .register(&Worker::new(WorkerId::new(), p).with_limits(3, None))
                    .await
                    .unwrap();
                if i % 3 > 0 {
                    w.created(WorkerHandle::new(w.id(), p, "ext")).unwrap();
                    w.registered().unwrap();
                    for _ in 0..(i % 4).min(3) {
                        w.assign(JobId::new()).unwrap();
                    }
                    w = reg.update(&w).await.unwrap();
                }
                if i % 5 == 0 && i % 3 > 0 {
                    w.terminating().unwrap();
                    w = reg.update(&w).await.unwrap();
                }
                if i % 7 == 0 {
                    reg.remove(w.id()).await.unwrap();
                }
                ids.push(w.id());
            }
            let all = reg.list().await.unwrap();
            for p in providers {
                let alive = all
                    .iter()
                    .filter(|w| w.provider_id() == p && !w.state().is_gone());
                let jobs: usize = alive.clone().map(|w| w.current_jobs().len()).sum();
                assert_eq!(reg.count_jobs_of_provider(p).await.unwrap() as usize, jobs);
                let alive_n = reg.count_alive_by_provider().await.unwrap();
                assert_eq!(
                    alive_n.get(&p).copied().unwrap_or(0) as usize,
                    alive.count()
                );
                let idle = all
                    .iter()
                    .filter(|w| w.provider_id() == p && w.is_idle_or_starting())
                    .count();
                let idle_n = reg.count_idle_by_provider().await.unwrap();
                assert_eq!(idle_n.get(&p).copied().unwrap_or(0) as usize, idle);
            }
            let mut by_state = BTreeMap::new();
            for w in &all {
                *by_state.entry(w.state()).or_insert(0u64) += 1;
            }
            assert_eq!(reg.count_by_state().await.unwrap(), by_state);
        });
    }

    #[test]
    fn stores_work_without_tokio() {
        block_on(async {
            let repo = InMemoryJobRepository::new();
            let job = Job::new(JobSpec::new("t", CommandType::shell("true", [""; 0])));
            let stored = repo.insert(&job).await.unwrap();
            assert_eq!(stored.version(), 1);
            let logs = InMemoryLogStore::new();
            let id = job.id();
            let s = logs
                .append(id, 1, &[LogEntry::new(2, LogStream::Stdout, "b")])
                .await
                .unwrap();
            assert_eq!(s, 0);
            let s = logs
                .append(id, 1, &[LogEntry::new(1, LogStream::Stdout, "a")])
                .await
                .unwrap();
            assert_eq!(s, 2);
            assert!(
                logs.append(id, 1, &[LogEntry::new(0, LogStream::Stdout, "x")])
                    .await
                    .is_err()
            );
        });
    }
}
