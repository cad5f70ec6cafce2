//! [`JobBinder`] in one statement: a dispatch's five writes (entry check,
//! worker update, job update, history record, entry delete) in one round
//! trip, where the steps take four in sequence.

use std::sync::{Arc, LazyLock};

use async_trait::async_trait;
use hodei_core::domain::job::JobState;
use hodei_core::store::job_history::MAX_RECORDS_PER_JOB;
use hodei_core::store::{BindOutcome, Binding, JobBinder, StoreError};
use sqlx::PgPool;

use crate::error::{map_err, to_i32, to_i64};
use crate::jobs::worker_uuid;
use crate::{PgJobQueue, PgJobRepository, workers};

/// Binds jobs with one statement whose parts are all conditioned on one
/// check (`ok`): the queue entry is there and held by no lease, the worker
/// and the job are at the caller's versions. The three rows are locked
/// (`FOR UPDATE`) by the check, so nothing changes them between the check
/// and the writes; a row changed by a transaction that committed meanwhile
/// is checked again at its new version (and refused). One statement is one
/// transaction: all of it is written, or none.
///
/// The writes are those of `PgWorkerRegistry::update` (the worker's later
/// heartbeat and newer stats kept), `PgJobRepository::update`,
/// `PgJobHistoryStore::record` (capped per job) and `PgJobQueue::complete`.
#[derive(Debug, Clone)]
pub struct PgJobBinder {
    pool: PgPool,
    jobs: Arc<PgJobRepository>,
    queue: Arc<PgJobQueue>,
}

impl PgJobBinder {
    /// A binder on `pool`, encoding jobs as `jobs` does (its size limit)
    /// and counting the entries it deletes towards `queue`'s vacuum.
    #[must_use]
    pub fn new(pool: PgPool, jobs: Arc<PgJobRepository>, queue: Arc<PgJobQueue>) -> Self {
        Self { pool, jobs, queue }
    }
}

/// `$1` job, `$2` worker, `$3`/`$4` the worker's and the job's expected
/// versions; the worker's state and data `$5`–`$6`; the job's columns
/// `$7`–`$12`; the record `$13`–`$18`; the history cap `$19`.
static BIND: LazyLock<String> = LazyLock::new(|| {
    format!(
        "WITH entry AS ( \
            SELECT job_id FROM job_queue WHERE job_id = $1 AND lease_id IS NULL FOR UPDATE), \
         worker_row AS ( \
            SELECT id FROM workers WHERE id = $2 AND version = $3::bigint FOR UPDATE), \
         job_row AS ( \
            SELECT id FROM jobs WHERE id = $1 AND version = $4::bigint FOR UPDATE), \
         ok AS (SELECT 1 FROM entry, worker_row, job_row), \
         w AS ( \
            UPDATE workers SET state = $5, version = $3::bigint + 1, data = {worker_data} \
            WHERE id = $2 AND EXISTS (SELECT 1 FROM ok) RETURNING data), \
         j AS ( \
            UPDATE jobs SET state = $7, priority = $8, worker_id = $9, version = $4::bigint + 1, \
              updated_at = $10, finished_at = $11, data = $12 \
            WHERE id = $1 AND EXISTS (SELECT 1 FROM ok) RETURNING 1), \
         h AS ( \
            INSERT INTO job_history (job_id, from_state, to_state, at, attempt, worker_id, reason) \
            SELECT $1, $13, $14, $15, $16, $17, $18 FROM ok RETURNING 1), \
         trimmed AS ( \
            DELETE FROM job_history WHERE EXISTS (SELECT 1 FROM ok) AND id IN ( \
              SELECT id FROM job_history WHERE job_id = $1 ORDER BY id \
              OFFSET 1 LIMIT GREATEST(0, (SELECT count(*) FROM job_history WHERE job_id = $1) + 1 - $19))), \
         gone AS ( \
            DELETE FROM job_queue WHERE job_id = $1 AND EXISTS (SELECT 1 FROM ok)) \
         SELECT EXISTS (SELECT 1 FROM entry), (SELECT data FROM w), EXISTS (SELECT 1 FROM j)",
        worker_data = workers::merged_data("$6"),
    )
});

#[async_trait]
impl JobBinder for PgJobBinder {
    async fn bind(&self, binding: &Binding) -> Result<BindOutcome, StoreError> {
        let (worker, job, record) = (&binding.worker, &binding.job, &binding.record);
        let worker_next = worker.version().saturating_add(1);
        let job_next = job.version().saturating_add(1);
        let keep = to_i64(
            "records",
            u64::try_from(MAX_RECORDS_PER_JOB).unwrap_or(u64::MAX),
        )?;
        let row: (bool, Option<serde_json::Value>, bool) = sqlx::query_as(BIND.as_str())
            .bind(job.id().as_uuid())
            .bind(worker.id().as_uuid())
            .bind(to_i64("version", worker.version())?)
            .bind(to_i64("version", job.version())?)
            .bind(workers::state_name(worker))
            .bind(workers::encode(worker, worker_next)?)
            .bind(job.state().as_str())
            .bind(job.priority())
            .bind(worker_uuid(job))
            .bind(job.updated_at())
            .bind(job.finished_at())
            .bind(self.jobs.encode(job, job_next)?)
            .bind(record.from.map(JobState::as_str))
            .bind(record.to.as_str())
            .bind(record.at)
            .bind(to_i32("attempt", record.attempt)?)
            .bind(record.worker_id.map(|w| *w.as_uuid()))
            .bind(&record.reason)
            .bind(keep)
            .fetch_one(&self.pool)
            .await
            .map_err(|e| map_err("job binding", e))?;
        match row {
            (false, _, _) => Ok(BindOutcome::EntryTaken),
            (true, Some(data), true) => {
                self.queue.claimed(1);
                let mut stored = job.clone();
                stored.set_version(job_next);
                Ok(BindOutcome::Bound {
                    worker: workers::decode(data, to_i64("version", worker_next)?)?,
                    job: stored,
                })
            }
            _ => Ok(BindOutcome::Stale),
        }
    }
}
