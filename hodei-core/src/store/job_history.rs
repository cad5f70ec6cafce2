//! The history of a job's state changes ([`JobTransitionRecord`]), kept by a
//! [`JobHistoryStore`]: what the job page's timeline and
//! `GET /api/v1/jobs/{id}/events` show.
//!
//! A [`Job`](crate::domain::job::Job) keeps only its current attempt's
//! instants; every transition (with its attempt and reason) is recorded here
//! by the control plane right after the job's versioned update succeeded.

use std::collections::HashMap;
use std::sync::RwLock;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::StoreError;
use crate::domain::ids::{JobId, WorkerId};
use crate::domain::job::JobState;

/// Most records kept per job; a job bouncing between states forever (a
/// provider that never starts it) must not grow its history without bound.
pub const MAX_RECORDS_PER_JOB: usize = 1000;

/// One state change of a job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct JobTransitionRecord {
    /// The job.
    pub job_id: JobId,
    /// State before; `None` for the creation (`→ pending`).
    pub from: Option<JobState>,
    /// State after.
    pub to: JobState,
    /// When the change was stored.
    pub at: DateTime<Utc>,
    /// The job's attempt after the change (0 before its first attempt).
    pub attempt: u32,
    /// Worker of that attempt, if one was bound.
    pub worker_id: Option<WorkerId>,
    /// Why (error, cancel reason, …); empty when there is nothing to say.
    pub reason: String,
}

impl JobTransitionRecord {
    /// A record of `from → to` at `at`.
    #[must_use]
    pub fn new(
        job_id: JobId,
        from: Option<JobState>,
        to: JobState,
        at: DateTime<Utc>,
        attempt: u32,
    ) -> Self {
        Self {
            job_id,
            from,
            to,
            at,
            attempt,
            worker_id: None,
            reason: String::new(),
        }
    }

    /// Sets the worker.
    #[must_use]
    pub fn with_worker(mut self, worker: Option<WorkerId>) -> Self {
        self.worker_id = worker;
        self
    }

    /// Sets the reason.
    #[must_use]
    pub fn with_reason(mut self, reason: impl Into<String>) -> Self {
        self.reason = reason.into();
        self
    }
}

/// Job state histories, in the order their transitions were recorded.
#[async_trait]
pub trait JobHistoryStore: Send + Sync {
    /// Appends a record to its job's history. Past
    /// [`MAX_RECORDS_PER_JOB`] records the oldest non-first ones are dropped,
    /// so the creation and the latest changes are kept.
    async fn record(&self, record: &JobTransitionRecord) -> Result<(), StoreError>;
    /// A job's records, oldest first (empty for an unknown job).
    async fn history(&self, job_id: JobId) -> Result<Vec<JobTransitionRecord>, StoreError>;
    /// Deletes the histories whose latest record is a terminal state reached
    /// before `before` (the jobs [`super::JobRepository::prune_finished`]
    /// removes); returns how many records were deleted.
    async fn prune_finished(&self, before: DateTime<Utc>) -> Result<u64, StoreError>;
}

/// [`JobHistoryStore`] in memory.
#[derive(Debug, Default)]
pub struct InMemoryJobHistoryStore {
    jobs: RwLock<HashMap<JobId, Vec<JobTransitionRecord>>>,
}

impl InMemoryJobHistoryStore {
    /// [`JobHistoryStore::record`], without awaiting (for writes made under
    /// other stores' locks).
    pub(crate) fn record_now(&self, record: &JobTransitionRecord) -> Result<(), StoreError> {
        let mut jobs = self
            .jobs
            .write()
            .map_err(|_| StoreError::Backend("job history lock poisoned".into()))?;
        let list = jobs.entry(record.job_id).or_default();
        list.push(record.clone());
        if list.len() > MAX_RECORDS_PER_JOB {
            let excess = list.len() - MAX_RECORDS_PER_JOB;
            list.drain(1..=excess);
        }
        Ok(())
    }
}

#[async_trait]
impl JobHistoryStore for InMemoryJobHistoryStore {
    async fn record(&self, record: &JobTransitionRecord) -> Result<(), StoreError> {
        self.record_now(record)
    }

    async fn history(&self, job_id: JobId) -> Result<Vec<JobTransitionRecord>, StoreError> {
        let jobs = self
            .jobs
            .read()
            .map_err(|_| StoreError::Backend("job history lock poisoned".into()))?;
        Ok(jobs.get(&job_id).cloned().unwrap_or_default())
    }

    async fn prune_finished(&self, before: DateTime<Utc>) -> Result<u64, StoreError> {
        let mut jobs = self
            .jobs
            .write()
            .map_err(|_| StoreError::Backend("job history lock poisoned".into()))?;
        let mut deleted = 0u64;
        jobs.retain(|_, list| {
            let old = list
                .last()
                .is_some_and(|r| r.to.is_terminal() && r.at < before);
            if old {
                deleted += u64::try_from(list.len()).unwrap_or(u64::MAX);
            }
            !old
        });
        Ok(deleted)
    }
}
