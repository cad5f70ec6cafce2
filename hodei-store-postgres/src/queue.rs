//! [`JobQueue`] on the `job_queue` table: `FOR UPDATE SKIP LOCKED` batch
//! claims, leases, and LISTEN/NOTIFY wake-ups.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, TimeDelta, Utc};
use futures::stream::BoxStream;
use hodei_core::domain::ids::JobId;
use hodei_core::store::{
    JobQueue, Lease, QueueCursor, QueueEntry, QueueOrder, QueuePage, StoreError,
};
use sqlx::PgPool;
use uuid::Uuid;

use crate::error::map_err;

/// The channel `enqueue`, `release` and `rescue_expired` notify on.
pub const QUEUE_CHANNEL: &str = "hodei_queue";

/// Claimed entries between two `VACUUM`s of `job_queue` by this process
/// (see [`PgJobQueue::with_vacuum_every`]).
pub const DEFAULT_VACUUM_EVERY: u64 = 10_000;

/// Columns a claim returns, in this order.
type LeaseRow = (Uuid, i32, DateTime<Utc>, i64, Uuid, DateTime<Utc>);

/// `now + d`, saturating at a far-future time Postgres can store.
fn add_duration(now: DateTime<Utc>, d: Duration) -> DateTime<Utc> {
    let far = DateTime::from_timestamp(253_402_300_799, 0).unwrap_or(now); // 9999-12-31
    TimeDelta::from_std(d)
        .ok()
        .and_then(|d| now.checked_add_signed(d))
        .map_or(far, |t| t.min(far))
}

fn limit_i64(limit: usize) -> i64 {
    i64::try_from(limit).unwrap_or(i64::MAX)
}

/// Sorts claimed rows into claim order (aged rank, then enqueue order) and
/// turns them into leases.
fn into_leases(mut rows: Vec<LeaseRow>) -> Vec<Lease> {
    rows.sort_by_key(|r| (QueueCursor::key_of(QueueOrder::Aged, r.1, r.2), r.3));
    rows.into_iter()
        .map(
            |(job_id, priority, enqueued_at, _, lease_id, expires_at)| Lease {
                entry: QueueEntry {
                    job_id: JobId::from_uuid(job_id),
                    priority,
                    enqueued_at,
                },
                lease_id,
                expires_at,
            },
        )
        .collect()
}

/// The job queue in Postgres.
///
/// * `claim` takes up to `limit` unclaimed rows in aged order (priority
///   with aging, from the indexed `aged_key` column), in one statement: a CTE selects them `FOR UPDATE SKIP LOCKED` and the
///   update gives each a fresh lease id, so concurrent claimers (any number of
///   replicas) never get one row twice and never wait on each other.
/// * `complete` and `release` name the lease id; a lease that was rescued,
///   released or removed in the meantime is [`StoreError::StaleLease`].
/// * `enqueue`, `release` and `rescue_expired` send `NOTIFY hodei_queue`;
///   [`JobQueue::work_notifications`] turns those into wake-ups.
/// * Every [`DEFAULT_VACUUM_EVERY`] claimed entries (counted in this
///   process) it runs `VACUUM (SKIP_LOCKED, INDEX_CLEANUP ON) job_queue` in
///   the background. A claim leaves a dead entry at the head of the claim-order
///   indexes, which only a vacuum removes; every later claim walks over them,
///   and autovacuum wakes up only once a minute (`autovacuum_naptime`): without
///   this, a claim on a queue that has just handed out 100k jobs reads a few
///   hundred index pages. A role that does not own the table gets a warning
///   from Postgres and nothing is vacuumed.
#[derive(Debug, Clone)]
pub struct PgJobQueue {
    pool: PgPool,
    upkeep: Arc<Upkeep>,
}

/// Claims counted towards the next vacuum.
#[derive(Debug)]
struct Upkeep {
    claimed: AtomicU64,
    every: u64,
    running: AtomicBool,
}

impl PgJobQueue {
    /// A queue on `pool`.
    #[must_use]
    pub fn new(pool: PgPool) -> Self {
        Self {
            pool,
            upkeep: Arc::new(Upkeep {
                claimed: AtomicU64::new(0),
                every: DEFAULT_VACUUM_EVERY,
                running: AtomicBool::new(false),
            }),
        }
    }

    /// Vacuums `job_queue` after every `claims` entries claimed through this
    /// queue (and its clones); 0 never does (autovacuum alone).
    #[must_use]
    pub fn with_vacuum_every(self, claims: u64) -> Self {
        Self {
            pool: self.pool,
            upkeep: Arc::new(Upkeep {
                claimed: AtomicU64::new(0),
                every: claims,
                running: AtomicBool::new(false),
            }),
        }
    }

    /// Counts `n` claimed entries; starts a background vacuum when that
    /// crosses a multiple of the threshold and none is running.
    pub(crate) fn claimed(&self, n: u64) {
        let u = &self.upkeep;
        if u.every == 0 || n == 0 {
            return;
        }
        let before = u.claimed.fetch_add(n, Ordering::Relaxed);
        if before / u.every == (before + n) / u.every || u.running.swap(true, Ordering::AcqRel) {
            return;
        }
        let Ok(handle) = tokio::runtime::Handle::try_current() else {
            u.running.store(false, Ordering::Release);
            return;
        };
        let pool = self.pool.clone();
        let upkeep = self.upkeep.clone();
        handle.spawn(async move {
            // SKIP_LOCKED: another replica's vacuum (or autovacuum) is already at it.
            if let Err(e) = sqlx::query("VACUUM (SKIP_LOCKED, INDEX_CLEANUP ON) job_queue")
                .execute(&pool)
                .await
            {
                tracing::debug!(error = %e, "queue vacuum failed");
            }
            upkeep.running.store(false, Ordering::Release);
        });
    }

    /// Enqueues many entries in one statement (entries already queued are
    /// skipped) and sends one notification. Returns how many were added.
    pub async fn enqueue_many(&self, entries: &[QueueEntry]) -> Result<u64, StoreError> {
        if entries.is_empty() {
            return Ok(0);
        }
        let ids: Vec<Uuid> = entries.iter().map(|e| *e.job_id.as_uuid()).collect();
        let prios: Vec<i32> = entries.iter().map(|e| e.priority).collect();
        let times: Vec<DateTime<Utc>> = entries.iter().map(|e| e.enqueued_at).collect();
        let keys: Vec<i64> = entries
            .iter()
            .map(|e| QueueCursor::key_of(QueueOrder::Aged, e.priority, e.enqueued_at))
            .collect();
        let n: i64 = sqlx::query_scalar(
            "WITH ins AS ( \
                INSERT INTO job_queue (job_id, priority, enqueued_at, aged_key) \
                SELECT * FROM UNNEST($1::uuid[], $2::int[], $3::timestamptz[], $5::bigint[]) \
                ON CONFLICT (job_id) DO NOTHING RETURNING 1) \
             SELECT n, CASE WHEN n > 0 THEN pg_notify($4, '') END \
             FROM (SELECT count(*) AS n FROM ins) s",
        )
        .bind(&ids)
        .bind(&prios)
        .bind(&times)
        .bind(QUEUE_CHANNEL)
        .bind(&keys)
        .fetch_one(&self.pool)
        .await
        .map_err(|e| map_err("queue entry", e))?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    async fn notify(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT pg_notify($1, '')")
            .bind(QUEUE_CHANNEL)
            .execute(&self.pool)
            .await
            .map_err(|e| map_err("queue entry", e))?;
        Ok(())
    }
}

#[async_trait]
impl JobQueue for PgJobQueue {
    async fn enqueue(&self, entry: QueueEntry) -> Result<(), StoreError> {
        self.enqueue_many(std::slice::from_ref(&entry)).await?;
        Ok(())
    }

    async fn claim(&self, limit: usize, lease_for: Duration) -> Result<Vec<Lease>, StoreError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let expires_at = add_duration(Utc::now(), lease_for);
        let rows: Vec<LeaseRow> = sqlx::query_as(
            "WITH c AS ( \
                SELECT job_id FROM job_queue WHERE lease_id IS NULL \
                ORDER BY aged_key, seq \
                LIMIT $1 FOR UPDATE SKIP LOCKED) \
             UPDATE job_queue q SET lease_id = gen_random_uuid(), lease_expires_at = $2 \
             FROM c WHERE q.job_id = c.job_id \
             RETURNING q.job_id, q.priority, q.enqueued_at, q.seq, q.lease_id, q.lease_expires_at",
        )
        .bind(limit_i64(limit))
        .bind(expires_at)
        .fetch_all(&self.pool)
        .await
        .map_err(|e| map_err("queue entry", e))?;
        self.claimed(rows.len() as u64);
        Ok(into_leases(rows))
    }

    async fn claim_job(
        &self,
        job_id: JobId,
        lease_for: Duration,
    ) -> Result<Option<Lease>, StoreError> {
        let expires_at = add_duration(Utc::now(), lease_for);
        let row: Option<LeaseRow> = sqlx::query_as(
            "UPDATE job_queue SET lease_id = gen_random_uuid(), lease_expires_at = $2 \
             WHERE job_id = $1 AND lease_id IS NULL \
             RETURNING job_id, priority, enqueued_at, seq, lease_id, lease_expires_at",
        )
        .bind(job_id.as_uuid())
        .bind(expires_at)
        .fetch_optional(&self.pool)
        .await
        .map_err(|e| map_err("queue entry", e))?;
        self.claimed(u64::from(row.is_some()));
        Ok(row.and_then(|r| into_leases(vec![r]).pop()))
    }

    async fn peek(&self, limit: usize) -> Result<Vec<QueueEntry>, StoreError> {
        let rows: Vec<(Uuid, i32, DateTime<Utc>)> = sqlx::query_as(
            "SELECT job_id, priority, enqueued_at FROM job_queue WHERE lease_id IS NULL \
             ORDER BY aged_key, seq LIMIT $1",
        )
        .bind(limit_i64(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(|e| map_err("queue entry", e))?;
        Ok(rows
            .into_iter()
            .map(|(id, priority, enqueued_at)| QueueEntry {
                job_id: JobId::from_uuid(id),
                priority,
                enqueued_at,
            })
            .collect())
    }

    async fn scan(
        &self,
        order: QueueOrder,
        after: Option<QueueCursor>,
        limit: usize,
    ) -> Result<QueuePage, StoreError> {
        if limit == 0 {
            return Ok(QueuePage::default());
        }
        // Row comparisons on the index columns: each page is an index range scan.
        // No cursor: below every row (COALESCE keeps the condition indexable).
        let seq = after.map_or(i64::MIN, |c| c.seq);
        let query = match order {
            QueueOrder::Fifo => sqlx::query_as(
                "SELECT job_id, priority, enqueued_at, seq FROM job_queue \
                 WHERE lease_id IS NULL \
                   AND (enqueued_at, seq) > (COALESCE($1::timestamptz, '-infinity'), $2) \
                 ORDER BY enqueued_at, seq LIMIT $3",
            )
            .bind(after.and_then(|c| DateTime::<Utc>::from_timestamp_micros(c.key))),
            _ => sqlx::query_as(
                "SELECT job_id, priority, enqueued_at, seq FROM job_queue \
                 WHERE lease_id IS NULL \
                   AND (aged_key, seq) > (COALESCE($1::bigint, -9223372036854775808), $2) \
                 ORDER BY aged_key, seq LIMIT $3",
            )
            .bind(after.map(|c| c.key)),
        };
        let rows: Vec<(Uuid, i32, DateTime<Utc>, i64)> = query
            .bind(seq)
            .bind(limit_i64(limit))
            .fetch_all(&self.pool)
            .await
            .map_err(|e| map_err("queue entry", e))?;
        let next = match rows.last() {
            Some(&(_, priority, enqueued_at, seq)) if rows.len() == limit => Some(
                QueueCursor::new(QueueCursor::key_of(order, priority, enqueued_at), seq),
            ),
            _ => None,
        };
        let entries = rows
            .into_iter()
            .map(|(id, priority, enqueued_at, _)| QueueEntry {
                job_id: JobId::from_uuid(id),
                priority,
                enqueued_at,
            })
            .collect();
        Ok(QueuePage::new(entries, next))
    }

    async fn complete(&self, lease: &Lease) -> Result<(), StoreError> {
        let n = sqlx::query("DELETE FROM job_queue WHERE job_id = $1 AND lease_id = $2")
            .bind(lease.entry.job_id.as_uuid())
            .bind(lease.lease_id)
            .execute(&self.pool)
            .await
            .map_err(|e| map_err("queue entry", e))?
            .rows_affected();
        if n == 0 {
            return Err(StoreError::StaleLease {
                job_id: lease.entry.job_id,
            });
        }
        Ok(())
    }

    async fn complete_many(&self, leases: &[Lease]) -> Result<Vec<JobId>, StoreError> {
        if leases.is_empty() {
            return Ok(Vec::new());
        }
        let ids: Vec<Uuid> = leases.iter().map(|l| *l.entry.job_id.as_uuid()).collect();
        let lease_ids: Vec<Uuid> = leases.iter().map(|l| l.lease_id).collect();
        let removed: HashSet<Uuid> = sqlx::query_scalar(
            "DELETE FROM job_queue q USING UNNEST($1::uuid[], $2::uuid[]) AS d(job_id, lease_id) \
             WHERE q.job_id = d.job_id AND q.lease_id = d.lease_id RETURNING q.job_id",
        )
        .bind(&ids)
        .bind(&lease_ids)
        .fetch_all(&self.pool)
        .await
        .map_err(|e| map_err("queue entry", e))?
        .into_iter()
        .collect();
        Ok(leases
            .iter()
            .map(|l| l.entry.job_id)
            .filter(|j| !removed.contains(j.as_uuid()))
            .collect())
    }

    async fn release(&self, lease: &Lease) -> Result<(), StoreError> {
        let n = sqlx::query(
            "WITH r AS (UPDATE job_queue SET lease_id = NULL, lease_expires_at = NULL \
                        WHERE job_id = $1 AND lease_id = $2 RETURNING 1) \
             SELECT pg_notify($3, '') FROM r",
        )
        .bind(lease.entry.job_id.as_uuid())
        .bind(lease.lease_id)
        .bind(QUEUE_CHANNEL)
        .fetch_all(&self.pool)
        .await
        .map_err(|e| map_err("queue entry", e))?
        .len();
        if n == 0 {
            return Err(StoreError::StaleLease {
                job_id: lease.entry.job_id,
            });
        }
        Ok(())
    }

    async fn renew(&self, lease: &Lease, lease_for: Duration) -> Result<Lease, StoreError> {
        let expires_at = add_duration(Utc::now(), lease_for);
        let n = sqlx::query(
            "UPDATE job_queue SET lease_expires_at = $3 WHERE job_id = $1 AND lease_id = $2",
        )
        .bind(lease.entry.job_id.as_uuid())
        .bind(lease.lease_id)
        .bind(expires_at)
        .execute(&self.pool)
        .await
        .map_err(|e| map_err("queue entry", e))?
        .rows_affected();
        if n == 0 {
            return Err(StoreError::StaleLease {
                job_id: lease.entry.job_id,
            });
        }
        Ok(Lease {
            expires_at,
            ..lease.clone()
        })
    }

    async fn queued(&self, job_ids: &[JobId]) -> Result<HashSet<JobId>, StoreError> {
        if job_ids.is_empty() {
            return Ok(HashSet::new());
        }
        let ids: Vec<Uuid> = job_ids.iter().map(|j| *j.as_uuid()).collect();
        let found: Vec<Uuid> =
            sqlx::query_scalar("SELECT job_id FROM job_queue WHERE job_id = ANY($1::uuid[])")
                .bind(&ids)
                .fetch_all(&self.pool)
                .await
                .map_err(|e| map_err("queue entry", e))?;
        Ok(found.into_iter().map(JobId::from_uuid).collect())
    }

    async fn remove(&self, job_id: JobId) -> Result<bool, StoreError> {
        let n = sqlx::query("DELETE FROM job_queue WHERE job_id = $1")
            .bind(job_id.as_uuid())
            .execute(&self.pool)
            .await
            .map_err(|e| map_err("queue entry", e))?
            .rows_affected();
        Ok(n > 0)
    }

    async fn rescue_expired(&self, now: DateTime<Utc>) -> Result<Vec<JobId>, StoreError> {
        let ids: Vec<Uuid> = sqlx::query_scalar(
            "UPDATE job_queue SET lease_id = NULL, lease_expires_at = NULL \
             WHERE lease_id IS NOT NULL AND lease_expires_at < $1 RETURNING job_id",
        )
        .bind(now)
        .fetch_all(&self.pool)
        .await
        .map_err(|e| map_err("queue entry", e))?;
        if !ids.is_empty() {
            self.notify().await?;
        }
        Ok(ids.into_iter().map(JobId::from_uuid).collect())
    }

    async fn len(&self) -> Result<usize, StoreError> {
        let n: i64 = sqlx::query_scalar("SELECT count(*) FROM job_queue WHERE lease_id IS NULL")
            .fetch_one(&self.pool)
            .await
            .map_err(|e| map_err("queue entry", e))?;
        Ok(usize::try_from(n).unwrap_or(0))
    }

    /// A stream of wake-ups fed by `LISTEN hodei_queue` on a dedicated
    /// connection of the pool (held while the stream lives). Bursts of
    /// notifications coalesce into one wake-up; after a lost connection the
    /// listener reconnects and sends a wake-up, since notifications sent
    /// meanwhile are lost. `None` outside a tokio runtime.
    fn work_notifications(&self) -> Option<BoxStream<'static, ()>> {
        // One wake-up per burst (capacity 1), and one after every reconnection.
        crate::listen::notifications(&self.pool, QUEUE_CHANNEL, 1, Some(()), |_| Some(()))
    }
}
