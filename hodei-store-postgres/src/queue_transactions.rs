//! [`QueueTransactions`] in one statement each: a submit's three writes (job,
//! queue entry, history record) in one round trip where the steps take two,
//! a dispatch's five (entry check, worker update, job update, history record,
//! entry delete) in one where the steps take four in sequence.

use std::sync::{Arc, LazyLock};

use async_trait::async_trait;
use hodei_core::domain::job::{Job, JobState};
use hodei_core::store::job_history::MAX_RECORDS_PER_JOB;
use hodei_core::store::{
    BindOutcome, Binding, JobTransitionRecord, QueueCursor, QueueEntry, QueueOrder,
    QueueTransactions, StoreError, Stores, same_instance,
};
use sqlx::PgPool;

use crate::error::{map_err, to_i32, to_i64};
use crate::jobs::{inserted, worker_uuid};
use crate::{
    PgJobHistoryStore, PgJobQueue, PgJobRepository, PgWorkerRegistry, QUEUE_CHANNEL, workers,
};

/// Admits a job with one statement of three inserts (the job's, which fails
/// on a duplicate id, fails them all), notifying the replicas' dispatch as
/// `PgJobQueue::enqueue` does.
///
/// Binds a job with one statement whose parts are all conditioned on one
/// check (`ok`): the queue entry is there and held by no lease, the worker
/// and the job are at the caller's versions. The three rows are locked
/// (`FOR UPDATE`) by the check, so nothing changes them between the check
/// and the writes; a row changed by a transaction that committed meanwhile
/// is checked again at its new version (and refused). One statement is one
/// transaction: all of it is written, or none.
///
/// The writes are those of `PgJobRepository::insert`, `PgJobQueue::enqueue`,
/// `PgWorkerRegistry::update` (the worker's later heartbeat and newer stats
/// kept), `PgJobRepository::update`, `PgJobHistoryStore::record` (capped per
/// job) and `PgJobQueue::complete`.
#[derive(Debug, Clone)]
pub struct PgQueueTransactions {
    pool: PgPool,
    jobs: Arc<PgJobRepository>,
    queue: Arc<PgJobQueue>,
    workers: Arc<PgWorkerRegistry>,
    history: Arc<PgJobHistoryStore>,
}

impl PgQueueTransactions {
    /// Transactions on `pool` over these stores (all on `pool`): jobs are
    /// encoded as `jobs` encodes them (its size limit), and the entries a
    /// binding deletes count towards `queue`'s vacuum.
    #[must_use]
    pub fn new(
        pool: PgPool,
        jobs: Arc<PgJobRepository>,
        queue: Arc<PgJobQueue>,
        workers: Arc<PgWorkerRegistry>,
        history: Arc<PgJobHistoryStore>,
    ) -> Self {
        Self {
            pool,
            jobs,
            queue,
            workers,
            history,
        }
    }
}

/// The job's columns `$1`–`$8`; the entry's `$9`–`$11`; the record's
/// `$12`–`$17`; the queue's channel `$18`.
const ADMIT: &str = "WITH j AS ( \
        INSERT INTO jobs (id, state, priority, worker_id, version, created_at, updated_at, finished_at, data) \
        VALUES ($1, $2, $3, $4, 1, $5, $6, $7, $8) RETURNING id), \
     q AS ( \
        INSERT INTO job_queue (job_id, priority, enqueued_at, aged_key) \
        SELECT id, $9, $10, $11 FROM j ON CONFLICT (job_id) DO NOTHING RETURNING 1), \
     h AS ( \
        INSERT INTO job_history (job_id, from_state, to_state, at, attempt, worker_id, reason) \
        SELECT id, $12, $13, $14, $15, $16, $17 FROM j) \
     SELECT n, CASE WHEN n > 0 THEN pg_notify($18, '') END \
     FROM (SELECT count(*) AS n FROM q) s";

/// `$1` job, `$2` worker, `$3`/`$4` the worker's and the job's expected
/// versions; the worker's state and data `$5`–`$6`; the job's columns
/// `$7`–`$12`; the record `$13`–`$18`; the history cap `$19`.
static BIND: LazyLock<String> = LazyLock::new(|| bind_statement(true));

/// [`BIND`] without the history trim (and without `$19`): for a job whose
/// history cannot pass the cap with the new record (see [`needs_trim`]).
/// Half of the statement's planning time, which Postgres spends on each of a
/// connection's first five runs.
static BIND_UNTRIMMED: LazyLock<String> = LazyLock::new(|| bind_statement(false));

fn bind_statement(trim: bool) -> String {
    let trimmed = if trim {
        "trimmed AS ( \
            DELETE FROM job_history WHERE EXISTS (SELECT 1 FROM ok) AND id IN ( \
              SELECT id FROM job_history WHERE job_id = $1 ORDER BY id \
              OFFSET 1 LIMIT GREATEST(0, (SELECT count(*) FROM job_history WHERE job_id = $1) + 1 - $19))), "
    } else {
        ""
    };
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
         {trimmed}\
         gone AS ( \
            DELETE FROM job_queue WHERE job_id = $1 AND EXISTS (SELECT 1 FROM ok)) \
         SELECT EXISTS (SELECT 1 FROM entry), (SELECT data FROM w), EXISTS (SELECT 1 FROM j)",
        worker_data = workers::merged_data("$6"),
    )
}

/// Whether binding a job read at `version` may take its history past the
/// cap. Every stored change of a job moves its version by one and adds at
/// most one record (its creation at version 1, one per transition after),
/// so a job at `version` has at most `version` records, and the binding's
/// makes `version + 1`.
fn needs_trim(version: u64) -> bool {
    version.saturating_add(1) > u64::try_from(MAX_RECORDS_PER_JOB).unwrap_or(u64::MAX)
}

#[async_trait]
impl QueueTransactions for PgQueueTransactions {
    async fn admit(
        &self,
        job: &Job,
        entry: &QueueEntry,
        record: &JobTransitionRecord,
    ) -> Result<Job, StoreError> {
        let r: Result<i64, sqlx::Error> = sqlx::query_scalar(ADMIT)
            .bind(job.id().as_uuid())
            .bind(job.state().as_str())
            .bind(job.priority())
            .bind(worker_uuid(job))
            .bind(job.created_at())
            .bind(job.updated_at())
            .bind(job.finished_at())
            .bind(self.jobs.encode(job, 1)?)
            .bind(entry.priority)
            .bind(entry.enqueued_at)
            .bind(QueueCursor::key_of(
                QueueOrder::Aged,
                entry.priority,
                entry.enqueued_at,
            ))
            .bind(record.from.map(JobState::as_str))
            .bind(record.to.as_str())
            .bind(record.at)
            .bind(to_i32("attempt", record.attempt)?)
            .bind(record.worker_id.map(|w| *w.as_uuid()))
            .bind(&record.reason)
            .bind(QUEUE_CHANNEL)
            .fetch_one(&self.pool)
            .await;
        inserted(job, r.map(|_| ()))
    }

    async fn bind(&self, binding: &Binding) -> Result<BindOutcome, StoreError> {
        let (worker, job, record) = (&binding.worker, &binding.job, &binding.record);
        let worker_next = worker.version().saturating_add(1);
        let job_next = job.version().saturating_add(1);
        let trim = needs_trim(job.version());
        let statement = if trim { &BIND } else { &BIND_UNTRIMMED };
        let query = sqlx::query_as(statement.as_str())
            .bind(*job.id().as_uuid())
            .bind(*worker.id().as_uuid())
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
            .bind(&record.reason);
        let query = if trim {
            let keep = u64::try_from(MAX_RECORDS_PER_JOB).unwrap_or(u64::MAX);
            query.bind(to_i64("records", keep)?)
        } else {
            query
        };
        let row: (bool, Option<serde_json::Value>, bool) = query
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
                    worker: Box::new(workers::decode(data, to_i64("version", worker_next)?)?),
                    job: Box::new(stored),
                })
            }
            _ => Ok(BindOutcome::Stale),
        }
    }

    fn writes_to(&self, stores: &Stores) -> bool {
        same_instance(&stores.jobs, &self.jobs)
            && same_instance(&stores.queue, &self.queue)
            && same_instance(&stores.workers, &self.workers)
            && same_instance(&stores.job_history, &self.history)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_history_that_can_reach_the_cap_is_trimmed() {
        let cap = u64::try_from(MAX_RECORDS_PER_JOB).unwrap_or(u64::MAX);
        assert!(!needs_trim(1), "a new job has one record");
        assert!(!needs_trim(cap - 1));
        assert!(needs_trim(cap));
        assert!(needs_trim(u64::MAX));
        assert!(!BIND_UNTRIMMED.contains("$19") && BIND.contains("$19"));
        assert!(!BIND_UNTRIMMED.contains("trimmed") && BIND.contains("trimmed AS"));
    }
}
