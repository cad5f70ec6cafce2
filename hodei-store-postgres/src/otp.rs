//! [`OtpTokenStore`] on the `otp_tokens` table.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use hodei_core::domain::ids::WorkerId;
use hodei_core::store::{OtpError, OtpTokenStore, StoreError};
use sqlx::PgPool;
use uuid::Uuid;

use crate::error::{is_unique_violation, map_err};

/// One-time tokens in Postgres, by hash. Consuming one is a single
/// `DELETE … WHERE hash = $1 AND expires_at > $2 RETURNING worker_id`, so two
/// concurrent consumers can never both succeed.
#[derive(Debug, Clone)]
pub struct PgOtpTokenStore {
    pool: PgPool,
}

impl PgOtpTokenStore {
    /// A store on `pool`.
    #[must_use]
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }
}

#[async_trait]
impl OtpTokenStore for PgOtpTokenStore {
    async fn insert(
        &self,
        token_hash: &str,
        worker_id: WorkerId,
        expires_at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let r =
            sqlx::query("INSERT INTO otp_tokens (hash, worker_id, expires_at) VALUES ($1, $2, $3)")
                .bind(token_hash)
                .bind(worker_id.as_uuid())
                .bind(expires_at)
                .execute(&self.pool)
                .await;
        match r {
            Ok(_) => Ok(()),
            Err(e) if is_unique_violation(&e, None) => Err(StoreError::AlreadyExists {
                entity: "otp token",
                id: worker_id.to_string(),
            }),
            Err(e) => Err(map_err("token", e)),
        }
    }

    async fn consume(&self, token_hash: &str, now: DateTime<Utc>) -> Result<WorkerId, OtpError> {
        let id: Option<Uuid> = sqlx::query_scalar(
            "DELETE FROM otp_tokens WHERE hash = $1 AND expires_at > $2 RETURNING worker_id",
        )
        .bind(token_hash)
        .bind(now)
        .fetch_optional(&self.pool)
        .await
        .map_err(|e| OtpError::Store(map_err("token", e)))?;
        id.map(WorkerId::from_uuid).ok_or(OtpError::Invalid)
    }

    async fn purge_expired(&self, now: DateTime<Utc>) -> Result<u64, StoreError> {
        let n = sqlx::query("DELETE FROM otp_tokens WHERE expires_at <= $1")
            .bind(now)
            .execute(&self.pool)
            .await
            .map_err(|e| map_err("token", e))?
            .rows_affected();
        Ok(n)
    }
}
