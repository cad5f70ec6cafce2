//! [`AuditLog`] on the `audit_log` table.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use hodei_core::store::{
    AuditAction, AuditEntry, AuditFilter, AuditLog, AuditOutcome, NewAuditEntry, StoreError,
};
use sqlx::PgPool;

use crate::error::{map_err, to_i64, to_u64};

/// The audit log in Postgres: one row per entry, ids from a `bigserial`
/// (the order entries were recorded in, whatever the replicas' clocks).
/// Only `INSERT` and `SELECT` are ever run on the table.
#[derive(Debug, Clone)]
pub struct PgAuditLog {
    pool: PgPool,
}

impl PgAuditLog {
    /// An audit log on `pool`.
    #[must_use]
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }
}

type Row = (i64, DateTime<Utc>, String, String, String, String, String);

fn from_row(
    (id, at, actor, action, target, outcome, detail): Row,
) -> Result<AuditEntry, StoreError> {
    let action: AuditAction = action.parse().map_err(|e| StoreError::Invalid {
        field: "action".into(),
        message: e,
    })?;
    let outcome: AuditOutcome = outcome.parse().map_err(|e| StoreError::Invalid {
        field: "outcome".into(),
        message: e,
    })?;
    Ok(AuditEntry::new(
        to_u64(id),
        NewAuditEntry::new(actor, action, target)
            .with_outcome(outcome, detail)
            .at(at),
    ))
}

#[async_trait]
impl AuditLog for PgAuditLog {
    async fn append(&self, entry: &NewAuditEntry) -> Result<AuditEntry, StoreError> {
        let (id,): (i64,) = sqlx::query_as(
            "INSERT INTO audit_log (at, actor, action, target, outcome, detail) \
             VALUES ($1, $2, $3, $4, $5, $6) RETURNING id",
        )
        .bind(entry.at)
        .bind(&entry.actor)
        .bind(entry.action.as_str())
        .bind(&entry.target)
        .bind(entry.outcome.as_str())
        .bind(&entry.detail)
        .fetch_one(&self.pool)
        .await
        .map_err(|e| map_err("audit", e))?;
        Ok(AuditEntry::new(to_u64(id), entry.clone()))
    }

    async fn list(&self, filter: &AuditFilter) -> Result<Vec<AuditEntry>, StoreError> {
        let before = filter.before.map(|b| to_i64("before", b)).transpose()?;
        let limit = to_i64(
            "limit",
            u64::try_from(filter.page_size()).unwrap_or(u64::MAX),
        )?;
        let rows: Vec<Row> = sqlx::query_as(
            "SELECT id, at, actor, action, target, outcome, detail FROM audit_log \
             WHERE ($1::text IS NULL OR actor = $1) \
               AND ($2::text IS NULL OR action = $2) \
               AND ($3::text IS NULL OR target = $3) \
               AND ($4::timestamptz IS NULL OR at >= $4) \
               AND ($5::bigint IS NULL OR id < $5) \
             ORDER BY id DESC LIMIT $6",
        )
        .bind(filter.actor.as_deref())
        .bind(filter.action.map(AuditAction::as_str))
        .bind(filter.target.as_deref())
        .bind(filter.since)
        .bind(before)
        .bind(limit)
        .fetch_all(&self.pool)
        .await
        .map_err(|e| map_err("audit", e))?;
        rows.into_iter().map(from_row).collect()
    }
}
