//! `GET /api/v1/jobs/{id}/logs`: stored logs as text, a followed text stream,
//! or Server-Sent Events.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::body::{Body, Bytes};
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::{Stream, StreamExt, stream};
use serde::Deserialize;
use utoipa::IntoParams;

use super::error::{ApiError, ErrorBody};
use super::jobs::job_id;
use super::{AppState, closing};
use crate::api::log_follow::{follow_logs, read_all_logs};
use crate::domain::ids::JobId;
use crate::domain::logs::{LogEntry, LogStream};
use crate::store::LogCursor;

/// Content type of the plain-text forms (the bytes are the job's, not
/// necessarily UTF-8).
const TEXT: &str = "text/plain";

/// Query of `GET /api/v1/jobs/{id}/logs`.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct LogsQuery {
    /// `true`: keep the response open and stream new lines until the job ends.
    #[param(value_type = Option<bool>)]
    follow: Option<String>,
}

/// A job's logs. Plain text (each entry's raw bytes plus `\n`, in order)
/// with everything stored so far; with `follow=true` the body streams until
/// the job ends. With `Accept: text/event-stream` the logs come as
/// Server-Sent Events (replay then follow): one event per line, named after
/// its stream (`stdout`, `stderr`, `system`), `id` = `attempt:sequence`
/// (send it back as `Last-Event-ID` to resume), data = the line as UTF-8
/// (lossy); then a final `end` event whose data is
/// `{"state": "...", "exit_code": ...}`.
#[utoipa::path(
    get,
    path = "/api/v1/jobs/{id}/logs",
    tag = "jobs",
    params(
        ("id" = String, Path, format = Uuid, description = "Job id (UUID)"),
        LogsQuery,
        ("last-event-id" = Option<String>, Header, nullable = false, pattern = r"^[0-9]{1,9}:[0-9]{1,19}$",
            description = "SSE: resume after this `attempt:sequence`"),
    ),
    responses(
        (status = 200, description = "The logs", content(
            (String = "text/plain"),
            (String = "text/event-stream"),
        )),
        (status = 400, description = "Not a UUID or bad query", body = ErrorBody),
        (status = 404, description = "No such job", body = ErrorBody),
    )
)]
pub(super) async fn job_logs(
    State(s): State<AppState>,
    Path(id): Path<String>,
    query: Result<Query<LogsQuery>, QueryRejection>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let id = job_id(&id)?;
    let Query(q) = query.map_err(|e| ApiError::invalid_argument("query", e.body_text()))?;
    let follow = match q.follow.as_deref() {
        // Exactly the documented boolean: an empty `follow=` is refused like
        // any other value that is not one.
        None | Some("false") => false,
        Some("true") => true,
        Some(other) => {
            return Err(ApiError::invalid_argument(
                "follow",
                format!("{other:?} is not true or false"),
            ));
        }
    };
    // Checked whatever the form asked for, so a bad header is never silently ignored.
    let after = match headers.get("last-event-id") {
        None => LogCursor::default(),
        Some(v) => parse_event_id(v.to_str().unwrap_or("")).ok_or_else(|| {
            ApiError::invalid_argument("last-event-id", "expected attempt:sequence")
        })?,
    };
    s.cp.get_job(id).await?;
    if wants_sse(&headers) {
        return Ok(sse(s, id, after).into_response());
    }
    if follow {
        let body = follow_logs(s.cp.clone(), id, LogCursor::default())
            .map(|item| {
                item.map(|(_, entries)| Bytes::from(text_lines(&entries)))
                    // An error aborts the body, so the client sees it was cut short.
                    .map_err(|e| std::io::Error::other(e.to_string()))
            })
            .take_until(closing(s.closing.clone()));
        return Ok((
            StatusCode::OK,
            [
                (header::CONTENT_TYPE, TEXT),
                (header::CACHE_CONTROL, "no-cache"),
            ],
            Body::from_stream(body),
        )
            .into_response());
    }
    let entries = read_all_logs(&s.cp, id, LogCursor::default()).await?;
    let text = text_lines(entries.iter().map(|e| &e.entry));
    Ok(([(header::CONTENT_TYPE, TEXT)], text).into_response())
}

fn wants_sse(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|m| {
            m.split(';')
                .next()
                .is_some_and(|m| m.trim().eq_ignore_ascii_case("text/event-stream"))
        })
}

/// `attempt:sequence` as sent in SSE ids: exactly what the documented pattern
/// allows (decimal digits, no sign, numbers that fit).
fn parse_event_id(s: &str) -> Option<LogCursor> {
    let (a, q) = s.trim_matches([' ', '\t']).split_once(':')?;
    let digits =
        |t: &str, max: usize| (1..=max).contains(&t.len()) && t.bytes().all(|b| b.is_ascii_digit());
    if !digits(a, 9) || !digits(q, 19) {
        return None;
    }
    Some(LogCursor {
        attempt: a.parse().ok()?,
        sequence: q.parse().ok()?,
    })
}

fn text_lines<'a>(entries: impl IntoIterator<Item = &'a LogEntry>) -> Vec<u8> {
    let mut out = Vec::new();
    for e in entries {
        out.extend_from_slice(&e.data);
        out.push(b'\n');
    }
    out
}

fn stream_name(s: LogStream) -> &'static str {
    match s {
        LogStream::Stdout => "stdout",
        LogStream::Stderr => "stderr",
        _ => "system",
    }
}

/// One SSE event for one log line. SSE treats `\r` as a line break, so a
/// trailing `\r` (CRLF output) is dropped and any other becomes `\n` (the
/// client then sees it as a line break inside the data, as a terminal would).
fn line_event(attempt: u32, e: &LogEntry) -> Event {
    let text = String::from_utf8_lossy(&e.data);
    let text = text.strip_suffix('\r').unwrap_or(&text);
    let text = text.replace("\r\n", "\n").replace('\r', "\n");
    Event::default()
        .event(stream_name(e.stream))
        .id(format!("{attempt}:{}", e.sequence))
        .data(text)
}

fn sse(
    s: AppState,
    id: JobId,
    after: LogCursor,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let cp = s.cp.clone();
    // After an error the stream stops without an `end` event.
    let failed = Arc::new(AtomicBool::new(false));
    let failed_in = failed.clone();
    let lines = follow_logs(s.cp.clone(), id, after).flat_map(move |item| {
        let events: Vec<Event> = match item {
            Ok((attempt, entries)) => entries.iter().map(|e| line_event(attempt, e)).collect(),
            Err(e) => {
                failed_in.store(true, Ordering::Relaxed);
                vec![Event::default().event("error").data(e.to_string())]
            }
        };
        stream::iter(events)
    });
    let end = stream::once(async move {
        if failed.load(Ordering::Relaxed) {
            return None;
        }
        Some(match cp.get_job(id).await {
            Ok(job) => {
                let data = serde_json::json!({
                    "state": job.state().as_str(),
                    "exit_code": job.execution_context().exit_code,
                });
                Event::default().event("end").data(data.to_string())
            }
            Err(e) => Event::default().event("error").data(e.to_string()),
        })
    })
    .filter_map(std::future::ready);
    let events = lines
        .chain(end)
        .map(Ok)
        .take_until(closing(s.closing.clone()));
    Sse::new(events).keep_alive(KeepAlive::default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_ids_round_trip() {
        assert_eq!(
            parse_event_id("2:17"),
            Some(LogCursor {
                attempt: 2,
                sequence: 17
            })
        );
        assert_eq!(parse_event_id("2"), None);
        assert_eq!(parse_event_id("a:1"), None);
        assert_eq!(parse_event_id("+1:2"), None);
        assert_eq!(parse_event_id("1234567890:2"), None);
        assert_eq!(
            parse_event_id(" 1:2\t"),
            Some(LogCursor {
                attempt: 1,
                sequence: 2
            })
        );
    }

    #[test]
    fn accept_header_selects_sse() {
        let mut h = HeaderMap::new();
        h.insert(
            header::ACCEPT,
            "text/html, Text/Event-Stream;q=0.9".parse().unwrap(),
        );
        assert!(wants_sse(&h));
        h.insert(header::ACCEPT, "*/*".parse().unwrap());
        assert!(!wants_sse(&h));
    }
}
