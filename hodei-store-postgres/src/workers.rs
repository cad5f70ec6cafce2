//! [`WorkerRegistry`] on the `workers` table.

use std::collections::BTreeMap;
use std::sync::{Arc, LazyLock};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use hodei_core::domain::ids::{JobId, ProviderId, WorkerId};
use hodei_core::domain::worker::{Worker, WorkerState};
use hodei_core::domain::worker_stats::WorkerStats;
use hodei_core::store::{StoreError, WorkerRegistry};
use sqlx::PgPool;
use uuid::Uuid;

use crate::change_feed::ChangeFeed;
use crate::error::{codec, is_unique_violation, map_err, to_i64, to_u64};
use crate::kept_read::KeptRead;
use crate::touch_batch::{Touch, TouchBatcher};

/// Workers in Postgres: the serde form in `data`, the hash of the current
/// session token in a unique `session_hash` column, and optimistic
/// concurrency on the `version` column (as [`crate::PgJobRepository`]).
#[derive(Debug, Clone)]
pub struct PgWorkerRegistry {
    pool: PgPool,
    /// Heartbeats are written in groups (group commit).
    touches: Arc<TouchBatcher>,
    /// Every dispatch pass reads the alive workers per provider: the counts
    /// are kept between changes when the registry has a feed.
    alive: Arc<KeptRead<BTreeMap<ProviderId, u32>>>,
}

impl PgWorkerRegistry {
    /// A registry on `pool`.
    #[must_use]
    pub fn new(pool: PgPool) -> Self {
        Self {
            pool,
            touches: Arc::default(),
            alive: Arc::default(),
        }
    }

    /// Keeps the alive counts between the changes `feed` hears of.
    pub(crate) fn with_changes(mut self, feed: Arc<ChangeFeed>) -> Self {
        self.alive = Arc::new(KeptRead::kept_by(feed));
        self
    }
}

/// The SQL of a worker's new `data` when an update stores `new` (a `jsonb`
/// parameter) over the row's `data`: `new`, but the later heartbeat and the
/// newer stats of the two, because `touch` writes them in place without a
/// new version, and an update must never move liveness back.
pub(crate) fn merged_data(new: &str) -> String {
    format!(
        "jsonb_set(jsonb_set({new}::jsonb, \
           '{{last_heartbeat}}', CASE \
             WHEN (data->>'last_heartbeat')::timestamptz > ({new}::jsonb->>'last_heartbeat')::timestamptz \
             THEN data->'last_heartbeat' ELSE {new}::jsonb->'last_heartbeat' END), \
           '{{stats}}', CASE \
             WHEN jsonb_typeof(data->'stats') = 'object' \
              AND (jsonb_typeof({new}::jsonb->'stats') IS DISTINCT FROM 'object' \
                OR (data->'stats'->>'sampled_at')::timestamptz > ({new}::jsonb->'stats'->>'sampled_at')::timestamptz) \
             THEN data->'stats' ELSE COALESCE({new}::jsonb->'stats', 'null'::jsonb) END)"
    )
}

/// The serde form of `worker` at `version`.
pub(crate) fn encode(worker: &Worker, version: u64) -> Result<serde_json::Value, StoreError> {
    let mut stored = worker.clone();
    stored.set_version(version);
    serde_json::to_value(&stored).map_err(|e| codec("worker", e))
}

/// Decodes a stored worker, taking the version from its column.
pub(crate) fn decode(data: serde_json::Value, version: i64) -> Result<Worker, StoreError> {
    let mut worker: Worker = serde_json::from_value(data).map_err(|e| codec("worker", e))?;
    worker.set_version(to_u64(version));
    Ok(worker)
}

pub(crate) fn state_name(worker: &Worker) -> String {
    state_label(worker.state())
}

/// The `state` column's value for a state.
fn state_label(state: WorkerState) -> String {
    format!("{state:?}").to_lowercase()
}

fn not_found(id: WorkerId) -> StoreError {
    StoreError::NotFound {
        entity: "worker",
        id: id.to_string(),
    }
}

#[async_trait]
impl WorkerRegistry for PgWorkerRegistry {
    async fn register(&self, worker: &Worker) -> Result<Worker, StoreError> {
        let r = sqlx::query(
            "INSERT INTO workers (id, provider_id, state, created_at, version, data) \
             VALUES ($1, $2, $3, $4, 1, $5)",
        )
        .bind(worker.id().as_uuid())
        .bind(worker.provider_id().as_uuid())
        .bind(state_name(worker))
        .bind(worker.created_at())
        .bind(encode(worker, 1)?)
        .execute(&self.pool)
        .await;
        self.alive.changed();
        match r {
            Ok(_) => {
                let mut stored = worker.clone();
                stored.set_version(1);
                Ok(stored)
            }
            Err(e) if is_unique_violation(&e, Some("workers_pkey")) => {
                Err(StoreError::AlreadyExists {
                    entity: "worker",
                    id: worker.id().to_string(),
                })
            }
            Err(e) => Err(map_err("worker", e)),
        }
    }

    async fn get(&self, id: WorkerId) -> Result<Option<Worker>, StoreError> {
        let row: Option<(serde_json::Value, i64)> =
            sqlx::query_as("SELECT data, version FROM workers WHERE id = $1")
                .bind(id.as_uuid())
                .fetch_optional(&self.pool)
                .await
                .map_err(|e| map_err("worker", e))?;
        row.map(|(data, version)| decode(data, version)).transpose()
    }

    async fn update(&self, worker: &Worker) -> Result<Worker, StoreError> {
        let next = worker.version().saturating_add(1);
        let next_column = to_i64("version", next)?;
        // `touch` writes the heartbeat and stats in place without a new
        // version: keep the later heartbeat and the newer stats of the row
        // and the caller's copy, so an update never moves liveness back.
        static UPDATE: LazyLock<String> = LazyLock::new(|| {
            format!(
                "UPDATE workers SET state = $3, version = $4, data = {} \
                 WHERE id = $1 AND version = $2 RETURNING data",
                merged_data("$5")
            )
        });
        let data: Result<Option<serde_json::Value>, _> = sqlx::query_scalar(UPDATE.as_str())
            .bind(worker.id().as_uuid())
            .bind(to_i64("version", worker.version())?)
            .bind(state_name(worker))
            .bind(next_column)
            .bind(encode(worker, next)?)
            .fetch_optional(&self.pool)
            .await;
        // Only the end of a worker's life changes the counts: a gone worker
        // never comes back (the domain's transitions), and moves between
        // alive states (every assignment and release) leave them as they are.
        if worker.state().is_gone() {
            self.alive.changed();
        }
        let data = data.map_err(|e| map_err("worker", e))?;
        if let Some(data) = data {
            return decode(data, next_column);
        }
        let actual: Option<i64> = sqlx::query_scalar("SELECT version FROM workers WHERE id = $1")
            .bind(worker.id().as_uuid())
            .fetch_optional(&self.pool)
            .await
            .map_err(|e| map_err("worker", e))?;
        match actual {
            Some(actual) => Err(StoreError::Conflict {
                entity: "worker",
                id: worker.id().to_string(),
                expected: worker.version(),
                actual: to_u64(actual),
            }),
            None => Err(not_found(worker.id())),
        }
    }

    async fn list(&self) -> Result<Vec<Worker>, StoreError> {
        let rows: Vec<(serde_json::Value, i64)> =
            sqlx::query_as("SELECT data, version FROM workers ORDER BY created_at, id")
                .fetch_all(&self.pool)
                .await
                .map_err(|e| map_err("worker", e))?;
        rows.into_iter()
            .map(|(data, version)| decode(data, version))
            .collect()
    }

    async fn count_by_state(&self) -> Result<BTreeMap<WorkerState, u64>, StoreError> {
        let rows: Vec<(String, i64)> =
            sqlx::query_as("SELECT state, count(*) FROM workers GROUP BY state")
                .fetch_all(&self.pool)
                .await
                .map_err(|e| map_err("worker", e))?;
        let mut counts = BTreeMap::new();
        for (name, n) in rows {
            let state = WorkerState::ALL
                .into_iter()
                .find(|s| state_label(*s) == name)
                .ok_or_else(|| StoreError::Backend(format!("stored worker state: {name:?}")))?;
            counts.insert(state, u64::try_from(n).unwrap_or(0));
        }
        Ok(counts)
    }

    async fn count_alive_by_provider(&self) -> Result<BTreeMap<ProviderId, u32>, StoreError> {
        self.alive
            .get(|| async {
                // Kept by a trigger on `workers` (migration `worker_counts`):
                // one row per provider instead of a scan of every worker.
                let rows: Vec<(Uuid, i64)> = sqlx::query_as(
                    "SELECT provider_id, alive FROM worker_alive_counts WHERE alive > 0",
                )
                .fetch_all(&self.pool)
                .await
                .map_err(|e| map_err("worker", e))?;
                Ok(rows
                    .into_iter()
                    .map(|(p, n)| (ProviderId::from(p), u32::try_from(n).unwrap_or(u32::MAX)))
                    .collect())
            })
            .await
    }

    async fn count_idle_by_provider(&self) -> Result<BTreeMap<ProviderId, u32>, StoreError> {
        // A grouped count: no row leaves the database, none is decoded.
        let rows: Vec<(Uuid, i64)> = sqlx::query_as(
            "SELECT provider_id, count(*) FROM workers \
             WHERE state IN ('creating', 'connecting', 'ready') \
             AND jsonb_array_length(data->'current_jobs') = 0 \
             GROUP BY provider_id",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(|e| map_err("worker", e))?;
        Ok(rows
            .into_iter()
            .map(|(p, n)| (ProviderId::from(p), u32::try_from(n).unwrap_or(u32::MAX)))
            .collect())
    }

    async fn count_jobs_of_provider(&self, provider: ProviderId) -> Result<u32, StoreError> {
        // Only the rows that can hold a job are read: a `Ready` or `Creating`
        // worker holds none (a release that empties a worker makes it
        // `Ready`). The states are written out, not bound, so that the
        // planner matches the partial index `workers_holding_jobs_idx` and
        // thousands of idle agents cost nothing.
        let n: i64 = sqlx::query_scalar(
            "SELECT coalesce(sum(jsonb_array_length(data->'current_jobs')), 0)::bigint \
             FROM workers WHERE provider_id = $1 \
             AND state NOT IN ('terminating', 'terminated', 'ready', 'creating')",
        )
        .bind(provider.as_uuid())
        .fetch_one(&self.pool)
        .await
        .map_err(|e| map_err("worker", e))?;
        Ok(u32::try_from(n).unwrap_or(u32::MAX))
    }

    async fn touch(
        &self,
        id: WorkerId,
        at: DateTime<Utc>,
        stats: Option<&WorkerStats>,
    ) -> Result<Option<Vec<JobId>>, StoreError> {
        let touch = Touch {
            worker: id,
            at,
            stats: stats.cloned(),
        };
        self.touches.touch(&self.pool, touch).await
    }

    async fn remove(&self, id: WorkerId) -> Result<bool, StoreError> {
        let n = sqlx::query("DELETE FROM workers WHERE id = $1")
            .bind(id.as_uuid())
            .execute(&self.pool)
            .await;
        self.alive.changed();
        let n = n.map_err(|e| map_err("worker", e))?.rows_affected();
        Ok(n > 0)
    }

    async fn set_session(&self, id: WorkerId, token_hash: &str) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await.map_err(|e| map_err("session", e))?;
        // A hash bound to another worker moves to this one.
        sqlx::query("UPDATE workers SET session_hash = NULL WHERE session_hash = $1 AND id <> $2")
            .bind(token_hash)
            .bind(id.as_uuid())
            .execute(&mut *tx)
            .await
            .map_err(|e| map_err("session", e))?;
        let n = sqlx::query("UPDATE workers SET session_hash = $2 WHERE id = $1")
            .bind(id.as_uuid())
            .bind(token_hash)
            .execute(&mut *tx)
            .await
            .map_err(|e| map_err("session", e))?
            .rows_affected();
        if n == 0 {
            // Dropping the transaction rolls it back.
            return Err(not_found(id));
        }
        tx.commit().await.map_err(|e| map_err("session", e))?;
        Ok(())
    }

    async fn worker_for_session(&self, token_hash: &str) -> Result<Option<WorkerId>, StoreError> {
        let id: Option<Uuid> = sqlx::query_scalar("SELECT id FROM workers WHERE session_hash = $1")
            .bind(token_hash)
            .fetch_optional(&self.pool)
            .await
            .map_err(|e| map_err("session", e))?;
        Ok(id.map(WorkerId::from_uuid))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The migration's trigger and partial index, and the load count, name
    /// these states as text: they must be what the `state` column holds.
    #[test]
    fn the_state_names_in_sql_are_the_stored_ones() {
        assert_eq!(state_label(WorkerState::Terminating), "terminating");
        assert_eq!(state_label(WorkerState::Terminated), "terminated");
        assert_eq!(state_label(WorkerState::Ready), "ready");
        assert_eq!(state_label(WorkerState::Creating), "creating");
        assert_eq!(state_label(WorkerState::Connecting), "connecting");
    }
}
