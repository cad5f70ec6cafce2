//! `GET /api/v1/jobs/{id}/logs/lines`: one page of a job's log by sequence
//! range, as JSON, with each attempt's line count; optionally only the lines
//! containing a text. A viewer of a huge log loads the pages it shows (and
//! follows the tail over SSE) instead of holding every line.

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::AppState;
use super::error::{ApiError, ErrorBody};
use super::jobs::job_id;
use crate::domain::logs::LogStream;
use crate::store::{LogCursor, StoredLogEntry};

/// Lines returned when no `limit` is given.
const DEFAULT_LIMIT: usize = 1000;
/// Largest `limit` accepted.
const MAX_LIMIT: usize = 10_000;
/// Entries read from the store at a time while searching.
const SCAN_PAGE: usize = 10_000;

/// Query of `GET /api/v1/jobs/{id}/logs/lines`.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct LogLinesQuery {
    /// Attempt to start in (default 1). Pages continue into later attempts.
    #[param(value_type = Option<u32>, minimum = 1)]
    attempt: Option<String>,
    /// First sequence (line number within the attempt, from 1; default 1).
    #[param(value_type = Option<u64>, minimum = 1)]
    from_seq: Option<String>,
    /// At most this many lines (default 1000, at most 10000).
    #[param(value_type = Option<u32>, minimum = 1, maximum = 10000)]
    limit: Option<String>,
    /// Only lines containing this text (case-insensitive), searched from the
    /// start position to the end of the log.
    contains: Option<String>,
}

/// One line of a job's log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[non_exhaustive]
pub struct LogLineDto {
    /// Attempt it belongs to.
    pub attempt: u32,
    /// Its sequence within the attempt (from 1).
    pub sequence: u64,
    /// `stdout`, `stderr` or `system`.
    pub stream: String,
    /// The line as UTF-8 (invalid bytes replaced).
    pub text: String,
}

/// How many lines one attempt has stored (contiguously from 1).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[non_exhaustive]
pub struct AttemptLinesDto {
    /// The attempt.
    pub attempt: u32,
    /// Lines `1..=lines` are stored.
    pub lines: u64,
}

/// A page of a job's log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[non_exhaustive]
pub struct LogLinesPage {
    /// Every attempt of the job with its line count, in order.
    pub attempts: Vec<AttemptLinesDto>,
    /// The lines, ordered by (attempt, sequence).
    pub lines: Vec<LogLineDto>,
    /// Whether lines after the page may exist (ask again from the last one).
    pub more: bool,
}

fn line(e: &StoredLogEntry) -> LogLineDto {
    LogLineDto {
        attempt: e.attempt,
        sequence: e.entry.sequence,
        stream: match e.entry.stream {
            LogStream::Stdout => "stdout",
            LogStream::Stderr => "stderr",
            _ => "system",
        }
        .to_owned(),
        text: String::from_utf8_lossy(&e.entry.data).into_owned(),
    }
}

/// A positive number from the query, or a 400 naming the field.
fn number<T: std::str::FromStr + PartialOrd + From<u8>>(
    field: &str,
    value: Option<&str>,
    default: T,
) -> Result<T, ApiError> {
    match value {
        None => Ok(default),
        Some(v) => match v.parse::<T>() {
            Ok(n) if n >= T::from(1) => Ok(n),
            _ => Err(ApiError::invalid_argument(
                field,
                format!("{v:?} is not a positive whole number"),
            )),
        },
    }
}

/// A page of a job's log from (`attempt`, `from_seq`), with every attempt's
/// line count; with `contains`, only the matching lines.
#[utoipa::path(
    get,
    path = "/api/v1/jobs/{id}/logs/lines",
    tag = "jobs",
    params(
        ("id" = String, Path, format = Uuid, description = "Job id (UUID)"),
        LogLinesQuery,
    ),
    responses(
        (status = 200, description = "The page", body = LogLinesPage),
        (status = 400, description = "Not a UUID or bad query", body = ErrorBody),
        (status = 404, description = "No such job", body = ErrorBody),
    )
)]
pub(super) async fn log_lines(
    State(s): State<AppState>,
    Path(id): Path<String>,
    query: Result<Query<LogLinesQuery>, QueryRejection>,
) -> Result<Json<LogLinesPage>, ApiError> {
    let id = job_id(&id)?;
    let Query(q) = query.map_err(|e| ApiError::invalid_argument("query", e.body_text()))?;
    let attempt: u32 = number("attempt", q.attempt.as_deref(), 1)?;
    let from_seq: u64 = number("from_seq", q.from_seq.as_deref(), 1)?;
    let limit: usize = number("limit", q.limit.as_deref(), DEFAULT_LIMIT)?;
    if limit > MAX_LIMIT {
        return Err(ApiError::invalid_argument(
            "limit",
            format!("{limit} is more than {MAX_LIMIT}"),
        ));
    }
    let needle = match q.contains.as_deref() {
        Some("") => {
            return Err(ApiError::invalid_argument("contains", "empty search text"));
        }
        other => other.map(str::to_lowercase),
    };
    let job = s.cp.get_job(id).await?;
    let last_attempt = job.attempts().max(job.execution_context().attempt);
    let mut attempts = Vec::new();
    for a in 1..=last_attempt {
        attempts.push(AttemptLinesDto {
            attempt: a,
            lines: s.cp.logs().store().last_sequence(id, a).await?,
        });
    }
    let mut cursor = LogCursor {
        attempt,
        sequence: from_seq - 1,
    };
    let mut lines = Vec::new();
    let more = match needle {
        None => {
            let page = s.cp.logs().read(id, cursor, limit).await?;
            lines.extend(page.iter().map(line));
            page.len() == limit
        }
        Some(needle) => loop {
            let page = s.cp.logs().read(id, cursor, SCAN_PAGE).await?;
            let Some(last) = page.last() else { break false };
            cursor = LogCursor {
                attempt: last.attempt,
                sequence: last.entry.sequence,
            };
            let full = page.len() == SCAN_PAGE;
            for e in &page {
                if String::from_utf8_lossy(&e.entry.data)
                    .to_lowercase()
                    .contains(&needle)
                {
                    lines.push(line(e));
                    if lines.len() == limit {
                        break;
                    }
                }
            }
            if lines.len() == limit {
                break true;
            }
            if !full {
                break false;
            }
        },
    };
    Ok(Json(LogLinesPage {
        attempts,
        lines,
        more,
    }))
}
