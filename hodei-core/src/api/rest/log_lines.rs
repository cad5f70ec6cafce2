//! `GET /api/v1/jobs/{id}/logs/lines`: one page of a job's log by line
//! range, as JSON, with each attempt's line count; optionally only the lines
//! containing a text. A viewer of a huge log loads the pages it shows (and
//! follows the tail over SSE from the entry the counts end at) instead of
//! holding every line.
//!
//! A stored entry may hold many lines (the agent batches output read
//! together), so lines are numbered here, per attempt, by splitting entries
//! as the SSE form does: a trailing `\r` dropped, `\r\n`, `\r` and `\n` each
//! a line break. Each request reads the job's entries once from the start
//! (cheap for the in-memory store; a full read of the job's rows in
//! Postgres); the entries of one attempt are counted up to their first gap.

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::AppState;
use super::error::{ApiError, ErrorBody};
use super::jobs::job_id;
use crate::domain::logs::LogStream;
use crate::store::LogCursor;

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
    #[param(value_type = Option<i32>, minimum = 1)]
    attempt: Option<String>,
    /// First line (number within the attempt, from 1; default 1).
    #[param(value_type = Option<i64>, minimum = 1)]
    from_line: Option<String>,
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
    /// Its number within the attempt (from 1).
    pub line: u64,
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
    /// They are the lines of the entries `1..=entries` (follow the log over
    /// SSE with `Last-Event-ID: attempt:entries` for the lines after them).
    pub entries: u64,
}

/// A page of a job's log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[non_exhaustive]
pub struct LogLinesPage {
    /// Every attempt of the job with its line count, in order.
    pub attempts: Vec<AttemptLinesDto>,
    /// The lines, ordered by (attempt, line).
    pub lines: Vec<LogLineDto>,
    /// Whether lines after the page may exist (ask again from the last one).
    pub more: bool,
}

fn stream_name(s: LogStream) -> &'static str {
    match s {
        LogStream::Stdout => "stdout",
        LogStream::Stderr => "stderr",
        _ => "system",
    }
}

/// The lines of one entry, split as the SSE form splits them.
fn split_lines(data: &[u8]) -> impl Iterator<Item = &[u8]> {
    let data = data.strip_suffix(b"\r").unwrap_or(data);
    let mut rest = Some(data);
    std::iter::from_fn(move || {
        let d = rest?;
        match d.iter().position(|&b| b == b'\n' || b == b'\r') {
            None => {
                rest = None;
                Some(d)
            }
            Some(i) => {
                let skip = if d[i] == b'\r' && d.get(i + 1) == Some(&b'\n') {
                    2
                } else {
                    1
                };
                rest = Some(&d[i + skip..]);
                Some(&d[..i])
            }
        }
    })
}

/// How many lines [`split_lines`] yields, without building them.
fn count_lines(data: &[u8]) -> u64 {
    let data = data.strip_suffix(b"\r").unwrap_or(data);
    let mut n = 1u64;
    let mut i = 0;
    while i < data.len() {
        match data[i] {
            b'\n' => n += 1,
            b'\r' => {
                n += 1;
                if data.get(i + 1) == Some(&b'\n') {
                    i += 1;
                }
            }
            _ => {}
        }
        i += 1;
    }
    n
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

/// A page of a job's log from (`attempt`, `from_line`), with every attempt's
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
    // Within the documented int32 range.
    let attempt = number::<i32>("attempt", q.attempt.as_deref(), 1)?.unsigned_abs();
    // Within the documented int64 range (what every client can represent).
    let from_line = number::<i64>("from_line", q.from_line.as_deref(), 1)?.unsigned_abs();
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
    let mut attempts: Vec<AttemptLinesDto> = (1..=last_attempt)
        .map(|a| AttemptLinesDto {
            attempt: a,
            lines: 0,
            entries: 0,
        })
        .collect();
    let mut lines = Vec::new();
    let mut more = false;
    let mut cursor = LogCursor::default();
    loop {
        let page = s.cp.logs().read(id, cursor, SCAN_PAGE).await?;
        let Some(last) = page.last() else { break };
        cursor = LogCursor {
            attempt: last.attempt,
            sequence: last.entry.sequence,
        };
        let full = page.len() == SCAN_PAGE;
        for e in &page {
            // Entries come in attempt order: an attempt the job record does
            // not count (yet) is added at the end.
            if attempts.last().is_none_or(|c| c.attempt < e.attempt) {
                attempts.push(AttemptLinesDto {
                    attempt: e.attempt,
                    lines: 0,
                    entries: 0,
                });
            }
            let Some(count) = attempts.iter_mut().find(|c| c.attempt == e.attempt) else {
                continue;
            };
            // Counted up to the first gap, so line numbers never shift.
            if e.entry.sequence != count.entries + 1 {
                continue;
            }
            count.entries += 1;
            let first = count.lines + 1;
            count.lines += count_lines(&e.entry.data);
            if more || (e.attempt, count.lines) < (attempt, from_line) {
                continue;
            }
            for (i, text) in (first..).zip(split_lines(&e.entry.data)) {
                if (e.attempt, i) < (attempt, from_line) {
                    continue;
                }
                let text = String::from_utf8_lossy(text);
                if let Some(needle) = &needle
                    && !text.to_lowercase().contains(needle.as_str())
                {
                    continue;
                }
                if lines.len() == limit {
                    // The counts still need the rest of the log.
                    more = true;
                    break;
                }
                lines.push(LogLineDto {
                    attempt: e.attempt,
                    line: i,
                    stream: stream_name(e.entry.stream).to_owned(),
                    text: text.into_owned(),
                });
            }
        }
        if !full {
            break;
        }
    }
    Ok(Json(LogLinesPage {
        attempts,
        lines,
        more,
    }))
}
