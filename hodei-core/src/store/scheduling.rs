//! Scheduling settings every replica shares: the strategy, the concurrency
//! limits per key, and the slots jobs hold under those limits.
//!
//! A replica reads these from the store (never from its own memory) so that a
//! strategy switch or a limit reaches every replica and survives restarts,
//! and so that a limit holds across replicas: a slot is taken atomically in
//! the store before a job with a concurrency key leaves the queue.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::StoreError;
use crate::domain::ids::JobId;
use crate::scheduler::Strategy;

/// A limit on how many jobs with one concurrency key are scheduled or running at once.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ConcurrencyLimit {
    /// The key jobs name in `concurrency_key`.
    pub key: String,
    /// At most this many at once; 0 holds every job with the key in the queue.
    pub max_running: u32,
    /// When it was last set.
    pub updated_at: DateTime<Utc>,
}

impl ConcurrencyLimit {
    /// A limit set at `updated_at`.
    #[must_use]
    pub fn new(key: impl Into<String>, max_running: u32, updated_at: DateTime<Utc>) -> Self {
        Self {
            key: key.into(),
            max_running,
            updated_at,
        }
    }
}

/// A job holding one slot of its concurrency key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct SlotHolder {
    /// The job.
    pub job_id: JobId,
    /// Its key.
    pub key: String,
    /// When it took the slot.
    pub acquired_at: DateTime<Utc>,
}

impl SlotHolder {
    /// A slot of `key` held by `job_id` since `acquired_at`.
    #[must_use]
    pub fn new(job_id: JobId, key: impl Into<String>, acquired_at: DateTime<Utc>) -> Self {
        Self {
            job_id,
            key: key.into(),
            acquired_at,
        }
    }
}

/// The answer to [`SchedulingStore::try_acquire_slot`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "grant")]
#[non_exhaustive]
pub enum SlotGrant {
    /// The job holds a slot now (or held one already).
    Granted,
    /// Every slot is held by other jobs.
    Full {
        /// The key's limit.
        limit: u32,
        /// Slots held by other jobs.
        held: u32,
    },
}

/// Scheduling settings shared by replicas (see the module docs).
#[async_trait]
pub trait SchedulingStore: Send + Sync {
    /// The stored strategy, `None` when none was ever set.
    async fn strategy(&self) -> Result<Option<Strategy>, StoreError>;
    /// Stores the strategy every replica uses.
    async fn set_strategy(&self, strategy: Strategy) -> Result<(), StoreError>;
    /// Creates or replaces the limit of a key; returns it as stored.
    async fn set_concurrency_limit(
        &self,
        key: &str,
        max_running: u32,
    ) -> Result<ConcurrencyLimit, StoreError>;
    /// The limit of a key, if one is set.
    async fn concurrency_limit(&self, key: &str) -> Result<Option<ConcurrencyLimit>, StoreError>;
    /// Every limit, by key.
    async fn list_concurrency_limits(&self) -> Result<Vec<ConcurrencyLimit>, StoreError>;
    /// Removes a key's limit (its jobs are then unlimited). Returns whether it existed.
    async fn delete_concurrency_limit(&self, key: &str) -> Result<bool, StoreError>;
    /// Atomically (across replicas) takes a slot of `key` for `job_id` if
    /// fewer than the key's limit are held by other jobs; a key without a
    /// limit always grants. Taking a slot the job already holds grants again.
    async fn try_acquire_slot(
        &self,
        key: &str,
        job_id: JobId,
        now: DateTime<Utc>,
    ) -> Result<SlotGrant, StoreError>;
    /// Frees the slot a job holds. Returns whether it held one.
    async fn release_slot(&self, job_id: JobId) -> Result<bool, StoreError>;
    /// Slots held, of one key or of all, oldest first.
    async fn slots(&self, key: Option<&str>) -> Result<Vec<SlotHolder>, StoreError>;
}

#[derive(Debug, Default)]
struct State {
    strategy: Option<Strategy>,
    limits: BTreeMap<String, ConcurrencyLimit>,
    slots: HashMap<JobId, SlotHolder>,
}

/// The in-memory [`SchedulingStore`] (one process; nothing survives a restart).
#[derive(Debug, Default)]
pub struct InMemorySchedulingStore {
    state: Mutex<State>,
}

impl InMemorySchedulingStore {
    /// An empty store.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[async_trait]
impl SchedulingStore for InMemorySchedulingStore {
    async fn strategy(&self) -> Result<Option<Strategy>, StoreError> {
        Ok(self.lock().strategy)
    }

    async fn set_strategy(&self, strategy: Strategy) -> Result<(), StoreError> {
        self.lock().strategy = Some(strategy);
        Ok(())
    }

    async fn set_concurrency_limit(
        &self,
        key: &str,
        max_running: u32,
    ) -> Result<ConcurrencyLimit, StoreError> {
        let limit = ConcurrencyLimit::new(key, max_running, Utc::now());
        self.lock().limits.insert(key.to_owned(), limit.clone());
        Ok(limit)
    }

    async fn concurrency_limit(&self, key: &str) -> Result<Option<ConcurrencyLimit>, StoreError> {
        Ok(self.lock().limits.get(key).cloned())
    }

    async fn list_concurrency_limits(&self) -> Result<Vec<ConcurrencyLimit>, StoreError> {
        Ok(self.lock().limits.values().cloned().collect())
    }

    async fn delete_concurrency_limit(&self, key: &str) -> Result<bool, StoreError> {
        Ok(self.lock().limits.remove(key).is_some())
    }

    async fn try_acquire_slot(
        &self,
        key: &str,
        job_id: JobId,
        now: DateTime<Utc>,
    ) -> Result<SlotGrant, StoreError> {
        let mut st = self.lock();
        if let Some(limit) = st.limits.get(key).map(|l| l.max_running) {
            let held = st
                .slots
                .values()
                .filter(|h| h.key == key && h.job_id != job_id)
                .count();
            let held = u32::try_from(held).unwrap_or(u32::MAX);
            if held >= limit {
                return Ok(SlotGrant::Full { limit, held });
            }
        }
        let acquired_at = match st.slots.get(&job_id) {
            Some(h) if h.key == key => h.acquired_at,
            _ => now,
        };
        st.slots.insert(
            job_id,
            SlotHolder {
                job_id,
                key: key.to_owned(),
                acquired_at,
            },
        );
        Ok(SlotGrant::Granted)
    }

    async fn release_slot(&self, job_id: JobId) -> Result<bool, StoreError> {
        Ok(self.lock().slots.remove(&job_id).is_some())
    }

    async fn slots(&self, key: Option<&str>) -> Result<Vec<SlotHolder>, StoreError> {
        let st = self.lock();
        let mut v: Vec<SlotHolder> = st
            .slots
            .values()
            .filter(|h| key.is_none_or(|k| h.key == k))
            .cloned()
            .collect();
        v.sort_by(|a, b| {
            a.acquired_at
                .cmp(&b.acquired_at)
                .then_with(|| a.job_id.cmp(&b.job_id))
        });
        Ok(v)
    }
}
