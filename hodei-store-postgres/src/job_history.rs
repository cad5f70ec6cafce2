//! [`JobHistoryStore`] on the `job_history` table.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use hodei_core::domain::ids::{JobId, WorkerId};
use hodei_core::domain::job::JobState;
use hodei_core::store::job_history::MAX_RECORDS_PER_JOB;
use hodei_core::store::{JobHistoryStore, JobTransitionRecord, StoreError};
use sqlx::PgPool;
use uuid::Uuid;

use crate::error::{map_err, to_i32, to_i64};

/// Job histories in Postgres: one row per transition, ordered by a
/// `bigserial` id (the order they were recorded in, whatever the clocks of the
/// replicas that recorded them).
#[derive(Debug, Clone)]
pub struct PgJobHistoryStore {
    pool: PgPool,
}

impl PgJobHistoryStore {
    /// A store on `pool`.
    #[must_use]
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }
}

type Row = (
    Uuid,
    Option<String>,
    String,
    DateTime<Utc>,
    i32,
    Option<Uuid>,
    String,
);

fn state(column: &str, s: &str) -> Result<JobState, StoreError> {
    s.parse().map_err(|e: String| StoreError::Invalid {
        field: column.to_owned(),
        message: e,
    })
}

fn from_row(
    (job_id, from, to, at, attempt, worker, reason): Row,
) -> Result<JobTransitionRecord, StoreError> {
    let from = from.map(|f| state("from_state", &f)).transpose()?;
    let attempt = u32::try_from(attempt).map_err(|_| StoreError::Invalid {
        field: "attempt".into(),
        message: format!("negative attempt {attempt}"),
    })?;
    Ok(JobTransitionRecord::new(
        JobId::from_uuid(job_id),
        from,
        state("to_state", &to)?,
        at,
        attempt,
    )
    .with_worker(worker.map(WorkerId::from_uuid))
    .with_reason(reason))
}

#[async_trait]
impl JobHistoryStore for PgJobHistoryStore {
    async fn record(&self, record: &JobTransitionRecord) -> Result<(), StoreError> {
        let err = |e| map_err("job history", e);
        let keep = to_i64(
            "records",
            u64::try_from(MAX_RECORDS_PER_JOB).unwrap_or(u64::MAX),
        )?;
        // One statement (one round trip, no transaction to open and commit):
        // it is on the path of every transition, submit and dispatch
        // included. Past the cap, the oldest records after the first (the
        // creation) are dropped. The DELETE sees the rows as they were before
        // the INSERT, hence the `+ 1`; the new row is the newest, never among
        // the dropped.
        sqlx::query(
            "WITH ins AS ( \
                INSERT INTO job_history (job_id, from_state, to_state, at, attempt, worker_id, reason) \
                VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING 1) \
             DELETE FROM job_history WHERE id IN ( \
                SELECT id FROM job_history WHERE job_id = $1 ORDER BY id \
                OFFSET 1 LIMIT GREATEST(0, (SELECT count(*) FROM job_history WHERE job_id = $1) + 1 - $8))",
        )
        .bind(record.job_id.as_uuid())
        .bind(record.from.map(JobState::as_str))
        .bind(record.to.as_str())
        .bind(record.at)
        .bind(to_i32("attempt", record.attempt)?)
        .bind(record.worker_id.map(|w| *w.as_uuid()))
        .bind(&record.reason)
        .bind(keep)
        .execute(&self.pool)
        .await
        .map_err(err)?;
        Ok(())
    }

    async fn history(&self, job_id: JobId) -> Result<Vec<JobTransitionRecord>, StoreError> {
        let rows: Vec<Row> = sqlx::query_as(
            "SELECT job_id, from_state, to_state, at, attempt, worker_id, reason \
             FROM job_history WHERE job_id = $1 ORDER BY id",
        )
        .bind(job_id.as_uuid())
        .fetch_all(&self.pool)
        .await
        .map_err(|e| map_err("job history", e))?;
        rows.into_iter().map(from_row).collect()
    }

    async fn prune_finished(&self, before: DateTime<Utc>) -> Result<u64, StoreError> {
        let terminal: Vec<&str> = JobState::ALL
            .into_iter()
            .filter(|s| s.is_terminal())
            .map(JobState::as_str)
            .collect();
        let n = sqlx::query(
            "DELETE FROM job_history h USING ( \
                SELECT DISTINCT ON (job_id) job_id, to_state, at FROM job_history \
                ORDER BY job_id, id DESC) last \
             WHERE h.job_id = last.job_id AND last.to_state = ANY($2) AND last.at < $1",
        )
        .bind(before)
        .bind(&terminal)
        .execute(&self.pool)
        .await
        .map_err(|e| map_err("job history", e))?
        .rows_affected();
        Ok(n)
    }
}
