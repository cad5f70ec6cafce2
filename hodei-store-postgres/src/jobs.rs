//! [`JobRepository`] on the `jobs` table.

use std::collections::BTreeMap;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use hodei_core::domain::ids::JobId;
use hodei_core::domain::job::{Job, JobState};
use hodei_core::store::{JobFilter, JobRepository, StoreError};
use sqlx::PgPool;
use uuid::Uuid;

use crate::error::{codec, is_unique_violation, map_err, to_i64, to_u64};

/// Default number of jobs [`JobRepository::list`] returns without a limit.
const DEFAULT_LIST_LIMIT: usize = 100;

/// Jobs in Postgres, with optimistic concurrency on the `version` column.
///
/// A job is stored as its serde form (`data jsonb`) plus the columns the
/// store filters and orders by. An update is
/// `UPDATE … WHERE id = $1 AND version = $2`: no row means the caller's copy
/// is stale, reported as [`StoreError::Conflict`] with the stored version.
#[derive(Debug, Clone)]
pub struct PgJobRepository {
    pool: PgPool,
    max_job_bytes: usize,
}

impl PgJobRepository {
    /// A repository on `pool` that refuses jobs whose serde form exceeds
    /// `max_job_bytes` with [`StoreError::Invalid`] (field `spec`).
    #[must_use]
    pub fn new(pool: PgPool, max_job_bytes: usize) -> Self {
        Self {
            pool,
            max_job_bytes,
        }
    }

    /// The serde form of `job` at `version`, checked against the size limit.
    pub(crate) fn encode(&self, job: &Job, version: u64) -> Result<serde_json::Value, StoreError> {
        let mut stored = job.clone();
        stored.set_version(version);
        let bytes = serde_json::to_vec(&stored).map_err(|e| codec("job", e))?;
        if bytes.len() > self.max_job_bytes {
            return Err(StoreError::Invalid {
                field: "spec".into(),
                message: format!(
                    "the job is {} bytes when stored, more than the limit of {} bytes",
                    bytes.len(),
                    self.max_job_bytes
                ),
            });
        }
        serde_json::from_slice(&bytes).map_err(|e| codec("job", e))
    }
}

/// Decodes a stored job, taking the version from its column.
fn decode(data: serde_json::Value, version: i64) -> Result<Job, StoreError> {
    let mut job: Job = serde_json::from_value(data).map_err(|e| codec("job", e))?;
    job.set_version(to_u64(version));
    Ok(job)
}

/// What the insert of a new `job` gives: the job at version 1, or a
/// duplicate id as `AlreadyExists`.
pub(crate) fn inserted(job: &Job, r: Result<(), sqlx::Error>) -> Result<Job, StoreError> {
    match r {
        Ok(()) => {
            let mut stored = job.clone();
            stored.set_version(1);
            Ok(stored)
        }
        Err(e) if is_unique_violation(&e, Some("jobs_pkey")) => Err(StoreError::AlreadyExists {
            entity: "job",
            id: job.id().to_string(),
        }),
        Err(e) => Err(map_err("spec", e)),
    }
}

pub(crate) fn worker_uuid(job: &Job) -> Option<Uuid> {
    job.worker_id().map(|w| *w.as_uuid())
}

#[async_trait]
impl JobRepository for PgJobRepository {
    async fn insert(&self, job: &Job) -> Result<Job, StoreError> {
        let data = self.encode(job, 1)?;
        let r = sqlx::query(
            "INSERT INTO jobs (id, state, priority, worker_id, version, created_at, updated_at, finished_at, data) \
             VALUES ($1, $2, $3, $4, 1, $5, $6, $7, $8)",
        )
        .bind(job.id().as_uuid())
        .bind(job.state().as_str())
        .bind(job.priority())
        .bind(worker_uuid(job))
        .bind(job.created_at())
        .bind(job.updated_at())
        .bind(job.finished_at())
        .bind(&data)
        .execute(&self.pool)
        .await;
        inserted(job, r.map(|_| ()))
    }

    async fn get(&self, id: JobId) -> Result<Option<Job>, StoreError> {
        let row: Option<(serde_json::Value, i64)> =
            sqlx::query_as("SELECT data, version FROM jobs WHERE id = $1")
                .bind(id.as_uuid())
                .fetch_optional(&self.pool)
                .await
                .map_err(|e| map_err("job", e))?;
        row.map(|(data, version)| decode(data, version)).transpose()
    }

    async fn update(&self, job: &Job) -> Result<Job, StoreError> {
        let next = job.version().saturating_add(1);
        let data = self.encode(job, next)?;
        let updated = sqlx::query(
            "UPDATE jobs SET state = $3, priority = $4, worker_id = $5, version = $6, \
             updated_at = $7, finished_at = $8, data = $9 \
             WHERE id = $1 AND version = $2",
        )
        .bind(job.id().as_uuid())
        .bind(to_i64("version", job.version())?)
        .bind(job.state().as_str())
        .bind(job.priority())
        .bind(worker_uuid(job))
        .bind(to_i64("version", next)?)
        .bind(job.updated_at())
        .bind(job.finished_at())
        .bind(&data)
        .execute(&self.pool)
        .await
        .map_err(|e| map_err("spec", e))?
        .rows_affected();
        if updated == 1 {
            let mut stored = job.clone();
            stored.set_version(next);
            return Ok(stored);
        }
        let actual: Option<i64> = sqlx::query_scalar("SELECT version FROM jobs WHERE id = $1")
            .bind(job.id().as_uuid())
            .fetch_optional(&self.pool)
            .await
            .map_err(|e| map_err("job", e))?;
        match actual {
            Some(actual) => Err(StoreError::Conflict {
                entity: "job",
                id: job.id().to_string(),
                expected: job.version(),
                actual: to_u64(actual),
            }),
            None => Err(StoreError::NotFound {
                entity: "job",
                id: job.id().to_string(),
            }),
        }
    }

    async fn list(&self, filter: &JobFilter) -> Result<Vec<Job>, StoreError> {
        let limit = filter.limit.unwrap_or(DEFAULT_LIST_LIMIT);
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows: Vec<(serde_json::Value, i64)> = sqlx::query_as(
            "SELECT data, version FROM jobs \
             WHERE ($1::text IS NULL OR state = $1) AND ($2::uuid IS NULL OR worker_id = $2) \
             ORDER BY created_at DESC, seq DESC LIMIT $3",
        )
        .bind(filter.state.map(JobState::as_str))
        .bind(filter.worker_id.map(|w| *w.as_uuid()))
        .bind(limit)
        .fetch_all(&self.pool)
        .await
        .map_err(|e| map_err("job", e))?;
        rows.into_iter()
            .map(|(data, version)| decode(data, version))
            .collect()
    }

    async fn count_by_state(&self) -> Result<BTreeMap<JobState, u64>, StoreError> {
        let rows: Vec<(String, i64)> =
            sqlx::query_as("SELECT state, count(*) FROM jobs GROUP BY state")
                .fetch_all(&self.pool)
                .await
                .map_err(|e| map_err("job", e))?;
        let mut counts = BTreeMap::new();
        for (state, n) in rows {
            let state: JobState = state
                .parse()
                .map_err(|e: String| StoreError::Backend(format!("stored job state: {e}")))?;
            counts.insert(state, to_u64(n));
        }
        Ok(counts)
    }

    /// Deletes terminal jobs finished before `before`, together with their
    /// logs, in one statement.
    async fn prune_finished(&self, before: DateTime<Utc>) -> Result<u64, StoreError> {
        let terminal: Vec<&str> = JobState::ALL
            .into_iter()
            .filter(|s| s.is_terminal())
            .map(JobState::as_str)
            .collect();
        let n: i64 = sqlx::query_scalar(
            "WITH gone AS (DELETE FROM jobs WHERE finished_at < $1 AND state = ANY($2) RETURNING id), \
                  logs AS (DELETE FROM job_logs WHERE job_id IN (SELECT id FROM gone)), \
                  progress AS (DELETE FROM log_progress WHERE job_id IN (SELECT id FROM gone)) \
             SELECT count(*) FROM gone",
        )
        .bind(before)
        .bind(&terminal)
        .fetch_one(&self.pool)
        .await
        .map_err(|e| map_err("job", e))?;
        Ok(to_u64(n))
    }
}
