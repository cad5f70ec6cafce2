//! [`LogStore`] on the `job_logs` and `log_progress` tables.

use async_trait::async_trait;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures::stream::BoxStream;
use hodei_core::domain::ids::JobId;
use hodei_core::domain::logs::{LogEntry, LogStream};
use hodei_core::store::{LogCursor, LogStore, StoreError, StoredLogEntry};
use sqlx::PgPool;
use uuid::Uuid;

use crate::error::{map_err, to_i32, to_i64, to_u64};

/// Job logs in Postgres, one row per entry keyed by (job, attempt, sequence).
///
/// An append is one transaction, in one round trip (the database function
/// `hodei_append_logs`): it locks the attempt's `log_progress` row,
/// inserts the whole batch with one `INSERT … SELECT FROM UNNEST(…) ON CONFLICT
/// DO NOTHING` (a resent batch is harmless, the first write wins), then
/// advances the stored highest contiguous sequence by scanning only the
/// entries after it. Concurrent appends to one attempt serialise on the
/// progress row, so the contiguous sequence is never under-reported.
///
/// Each append also notifies [`LOGS_CHANNEL`] (with the job id and this
/// store's own id), so the log followers of other replicas read the entries
/// at once ([`LogStore::appended_elsewhere`]).
#[derive(Debug, Clone)]
pub struct PgLogStore {
    pool: PgPool,
    /// Tells this process's own notices apart from other replicas'.
    origin: Uuid,
}

/// The LISTEN/NOTIFY channel of log appends: payload `<job id> <store id>`.
pub const LOGS_CHANNEL: &str = "hodei_logs";

impl PgLogStore {
    /// A store on `pool`.
    #[must_use]
    pub fn new(pool: PgPool) -> Self {
        Self {
            pool,
            origin: Uuid::new_v4(),
        }
    }
}

fn stream_name(s: LogStream) -> &'static str {
    match s {
        LogStream::Stdout => "stdout",
        LogStream::Stderr => "stderr",
        _ => "system",
    }
}

fn parse_stream(s: &str) -> LogStream {
    match s {
        "stdout" => LogStream::Stdout,
        "stderr" => LogStream::Stderr,
        _ => LogStream::System,
    }
}

#[async_trait]
impl LogStore for PgLogStore {
    async fn append(
        &self,
        job_id: JobId,
        attempt: u32,
        entries: &[LogEntry],
    ) -> Result<u64, StoreError> {
        if let Some(bad) = entries.iter().find(|e| e.sequence == 0) {
            return Err(StoreError::Invalid {
                field: "sequence".into(),
                message: format!("log sequences start at 1, got {}", bad.sequence),
            });
        }
        let attempt_i = to_i32("attempt", attempt)?;
        if entries.is_empty() {
            return self.last_sequence(job_id, attempt).await;
        }
        let mut seqs = Vec::with_capacity(entries.len());
        let mut streams = Vec::with_capacity(entries.len());
        let mut datas: Vec<&[u8]> = Vec::with_capacity(entries.len());
        let mut stamps: Vec<DateTime<Utc>> = Vec::with_capacity(entries.len());
        for e in entries {
            seqs.push(to_i64("sequence", e.sequence)?);
            streams.push(stream_name(e.stream));
            datas.push(e.data.as_ref());
            stamps.push(e.timestamp);
        }
        // One round trip: the function (migration `append_logs`) runs the
        // append's statements in this call's own transaction.
        let contiguous: i64 =
            sqlx::query_scalar("SELECT hodei_append_logs($1, $2, $3, $4, $5, $6, $7, $8)")
                .bind(job_id.as_uuid())
                .bind(attempt_i)
                .bind(&seqs)
                .bind(&streams)
                .bind(&datas)
                .bind(&stamps)
                .bind(LOGS_CHANNEL)
                .bind(format!("{job_id} {}", self.origin))
                .fetch_one(&self.pool)
                .await
                .map_err(|e| map_err("log entry", e))?;
        Ok(to_u64(contiguous))
    }

    async fn read(
        &self,
        job_id: JobId,
        after: LogCursor,
        limit: usize,
    ) -> Result<Vec<StoredLogEntry>, StoreError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let attempt = i64::from(after.attempt);
        let sequence = i64::try_from(after.sequence).unwrap_or(i64::MAX);
        let rows: Vec<(i32, i64, String, Vec<u8>, DateTime<Utc>)> = sqlx::query_as(
            "SELECT attempt, sequence, stream, data, ts FROM job_logs \
             WHERE job_id = $1 AND (attempt, sequence) > ($2::int, $3) \
             ORDER BY attempt, sequence LIMIT $4",
        )
        .bind(job_id.as_uuid())
        .bind(i32::try_from(attempt).unwrap_or(i32::MAX))
        .bind(sequence)
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .fetch_all(&self.pool)
        .await
        .map_err(|e| map_err("log entry", e))?;
        Ok(rows
            .into_iter()
            .map(|(attempt, sequence, stream, data, ts)| StoredLogEntry {
                attempt: u32::try_from(attempt).unwrap_or(0),
                entry: LogEntry {
                    sequence: to_u64(sequence),
                    stream: parse_stream(&stream),
                    data: Bytes::from(data),
                    timestamp: ts,
                },
            })
            .collect())
    }

    async fn last_sequence(&self, job_id: JobId, attempt: u32) -> Result<u64, StoreError> {
        let Ok(attempt) = i32::try_from(attempt) else {
            return Ok(0);
        };
        let c: Option<i64> = sqlx::query_scalar(
            "SELECT contiguous FROM log_progress WHERE job_id = $1 AND attempt = $2",
        )
        .bind(job_id.as_uuid())
        .bind(attempt)
        .fetch_optional(&self.pool)
        .await
        .map_err(|e| map_err("log entry", e))?;
        Ok(c.map_or(0, to_u64))
    }

    async fn delete(&self, job_id: JobId) -> Result<u64, StoreError> {
        let n: i64 = sqlx::query_scalar(
            "WITH l AS (DELETE FROM job_logs WHERE job_id = $1 RETURNING 1), \
                  p AS (DELETE FROM log_progress WHERE job_id = $1) \
             SELECT count(*) FROM l",
        )
        .bind(job_id.as_uuid())
        .fetch_one(&self.pool)
        .await
        .map_err(|e| map_err("log entry", e))?;
        Ok(to_u64(n))
    }

    fn appended_elsewhere(&self) -> Option<BoxStream<'static, JobId>> {
        let origin = self.origin;
        crate::listen::notifications(&self.pool, LOGS_CHANNEL, 1024, None, move |payload| {
            let mut parts = payload.split(' ');
            let job = parts.next()?.parse::<JobId>().ok()?;
            let from = parts.next()?.parse::<Uuid>().ok()?;
            (from != origin).then_some(job)
        })
    }
}
