//! [`SchedulingStore`] on the `scheduler_settings`, `concurrency_limits` and
//! `concurrency_slots` tables. A slot is taken under a transaction-scoped
//! advisory lock per key, so replicas taking slots of one key at the same
//! time are serialised and never exceed its limit.

use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use hodei_core::domain::ids::JobId;
use hodei_core::scheduler::Strategy;
use hodei_core::store::{ConcurrencyLimit, SchedulingStore, SlotGrant, SlotHolder, StoreError};
use sqlx::PgPool;
use uuid::Uuid;

use crate::change_feed::ChangeFeed;
use crate::error::map_err;
use crate::kept_read::KeptRead;

/// Scheduling settings in Postgres, shared by every replica on the database.
#[derive(Debug, Clone)]
pub struct PgSchedulingStore {
    pool: PgPool,
    /// Every dispatch pass reads the strategy: it is kept between changes
    /// when the store has a feed.
    strategy: Arc<KeptRead<Option<Strategy>>>,
}

impl PgSchedulingStore {
    /// A store on `pool`.
    #[must_use]
    pub fn new(pool: PgPool) -> Self {
        Self {
            pool,
            strategy: Arc::default(),
        }
    }

    /// Keeps the strategy between the changes `feed` hears of.
    pub(crate) fn with_changes(mut self, feed: Arc<ChangeFeed>) -> Self {
        self.strategy = Arc::new(KeptRead::kept_by(feed));
        self
    }
}

fn err(e: sqlx::Error) -> StoreError {
    map_err("scheduling setting", e)
}

fn limit_of((key, max_running, updated_at): (String, i32, DateTime<Utc>)) -> ConcurrencyLimit {
    ConcurrencyLimit::new(key, u32::try_from(max_running).unwrap_or(0), updated_at)
}

#[async_trait]
impl SchedulingStore for PgSchedulingStore {
    async fn strategy(&self) -> Result<Option<Strategy>, StoreError> {
        self.strategy
            .get(|| async {
                let s: Option<String> =
                    sqlx::query_scalar("SELECT strategy FROM scheduler_settings")
                        .fetch_optional(&self.pool)
                        .await
                        .map_err(err)?;
                s.map(|s| {
                    s.parse()
                        .map_err(|e: hodei_core::scheduler::UnknownStrategy| {
                            StoreError::Backend(format!("stored strategy: {e}"))
                        })
                })
                .transpose()
            })
            .await
    }

    async fn set_strategy(&self, strategy: Strategy) -> Result<(), StoreError> {
        let r = sqlx::query(
            "INSERT INTO scheduler_settings (id, strategy, updated_at) VALUES (true, $1, now()) \
             ON CONFLICT (id) DO UPDATE SET strategy = EXCLUDED.strategy, updated_at = now()",
        )
        .bind(strategy.as_str())
        .execute(&self.pool)
        .await;
        self.strategy.changed();
        r.map_err(err)?;
        Ok(())
    }

    async fn set_concurrency_limit(
        &self,
        key: &str,
        max_running: u32,
    ) -> Result<ConcurrencyLimit, StoreError> {
        let max = i32::try_from(max_running).map_err(|_| StoreError::Invalid {
            field: "max_running".to_owned(),
            message: format!("{max_running} is too large"),
        })?;
        let row: (String, i32, DateTime<Utc>) = sqlx::query_as(
            "INSERT INTO concurrency_limits (key, max_running, updated_at) VALUES ($1, $2, now()) \
             ON CONFLICT (key) DO UPDATE SET max_running = EXCLUDED.max_running, updated_at = now() \
             RETURNING key, max_running, updated_at",
        )
        .bind(key)
        .bind(max)
        .fetch_one(&self.pool)
        .await
        .map_err(err)?;
        Ok(limit_of(row))
    }

    async fn concurrency_limit(&self, key: &str) -> Result<Option<ConcurrencyLimit>, StoreError> {
        let row: Option<(String, i32, DateTime<Utc>)> = sqlx::query_as(
            "SELECT key, max_running, updated_at FROM concurrency_limits WHERE key = $1",
        )
        .bind(key)
        .fetch_optional(&self.pool)
        .await
        .map_err(err)?;
        Ok(row.map(limit_of))
    }

    async fn list_concurrency_limits(&self) -> Result<Vec<ConcurrencyLimit>, StoreError> {
        let rows: Vec<(String, i32, DateTime<Utc>)> = sqlx::query_as(
            "SELECT key, max_running, updated_at FROM concurrency_limits ORDER BY key",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(err)?;
        Ok(rows.into_iter().map(limit_of).collect())
    }

    async fn delete_concurrency_limit(&self, key: &str) -> Result<bool, StoreError> {
        let n = sqlx::query("DELETE FROM concurrency_limits WHERE key = $1")
            .bind(key)
            .execute(&self.pool)
            .await
            .map_err(err)?
            .rows_affected();
        Ok(n > 0)
    }

    async fn try_acquire_slot(
        &self,
        key: &str,
        job_id: JobId,
        now: DateTime<Utc>,
    ) -> Result<SlotGrant, StoreError> {
        let mut tx = self.pool.begin().await.map_err(err)?;
        // Serialises every taker of this key until commit.
        sqlx::query(
            "SELECT pg_advisory_xact_lock(hashtextextended('hodei.concurrency:' || $1, 0))",
        )
        .bind(key)
        .execute(&mut *tx)
        .await
        .map_err(err)?;
        let limit: Option<i32> =
            sqlx::query_scalar("SELECT max_running FROM concurrency_limits WHERE key = $1")
                .bind(key)
                .fetch_optional(&mut *tx)
                .await
                .map_err(err)?;
        if let Some(limit) = limit {
            let held: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM concurrency_slots WHERE key = $1 AND job_id <> $2",
            )
            .bind(key)
            .bind(job_id.as_uuid())
            .fetch_one(&mut *tx)
            .await
            .map_err(err)?;
            if held >= i64::from(limit) {
                tx.rollback().await.map_err(err)?;
                return Ok(SlotGrant::Full {
                    limit: u32::try_from(limit).unwrap_or(0),
                    held: u32::try_from(held).unwrap_or(u32::MAX),
                });
            }
        }
        sqlx::query(
            "INSERT INTO concurrency_slots (job_id, key, acquired_at) VALUES ($1, $2, $3) \
             ON CONFLICT (job_id) DO UPDATE SET key = EXCLUDED.key, \
               acquired_at = CASE WHEN concurrency_slots.key = EXCLUDED.key \
                                  THEN concurrency_slots.acquired_at ELSE EXCLUDED.acquired_at END",
        )
        .bind(job_id.as_uuid())
        .bind(key)
        .bind(now)
        .execute(&mut *tx)
        .await
        .map_err(err)?;
        tx.commit().await.map_err(err)?;
        Ok(SlotGrant::Granted)
    }

    async fn release_slot(&self, job_id: JobId) -> Result<bool, StoreError> {
        let n = sqlx::query("DELETE FROM concurrency_slots WHERE job_id = $1")
            .bind(job_id.as_uuid())
            .execute(&self.pool)
            .await
            .map_err(err)?
            .rows_affected();
        Ok(n > 0)
    }

    async fn slots(&self, key: Option<&str>) -> Result<Vec<SlotHolder>, StoreError> {
        let rows: Vec<(Uuid, String, DateTime<Utc>)> = sqlx::query_as(
            "SELECT job_id, key, acquired_at FROM concurrency_slots \
             WHERE $1::text IS NULL OR key = $1 ORDER BY acquired_at, job_id",
        )
        .bind(key)
        .fetch_all(&self.pool)
        .await
        .map_err(err)?;
        Ok(rows
            .into_iter()
            .map(|(job_id, key, acquired_at)| {
                SlotHolder::new(JobId::from_uuid(job_id), key, acquired_at)
            })
            .collect())
    }
}
