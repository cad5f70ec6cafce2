//! Live job logs shared by the gRPC (`SubscribeLogs`) and REST (`?follow=true`,
//! SSE) adapters: replay what is stored, then follow the live fan-out, falling
//! back to the store whenever the live feed has a gap, until the job ends.
//!
//! ```no_run
//! # async fn demo(cp: hodei_core::control::ControlPlane, job: hodei_core::JobId) {
//! use futures::StreamExt;
//! use hodei_core::api::log_follow::follow_logs;
//! use hodei_core::store::LogCursor;
//!
//! let mut chunks = std::pin::pin!(follow_logs(cp, job, LogCursor::default()));
//! while let Some(chunk) = chunks.next().await {
//!     let (attempt, entries) = chunk.expect("log store available");
//!     for e in entries {
//!         println!("[{attempt}:{}] {}", e.sequence, String::from_utf8_lossy(&e.data));
//!     }
//! }
//! # }
//! ```

use std::time::Duration;

use futures::Stream;
use tokio::sync::{broadcast, mpsc};
use tokio_stream::wrappers::ReceiverStream;

use crate::control::{ControlError, ControlPlane, LogChunk};
use crate::domain::ids::JobId;
use crate::domain::logs::LogEntry;
use crate::store::{LogCursor, StoredLogEntry};

/// Entries of one attempt in sequence order, or why following stopped.
pub type LogFollowItem = Result<(u32, Vec<LogEntry>), ControlError>;

/// Page size for reads from the log store.
pub const PAGE: usize = 2000;

/// How long the follower waits for live entries before re-checking the job.
const QUIET_RECHECK: Duration = Duration::from_millis(500);

/// Chunks buffered between the follower task and its consumer.
const BUFFER: usize = 64;

/// Groups stored entries into per-attempt chunks, keeping their order.
#[must_use]
pub fn group_by_attempt(entries: Vec<StoredLogEntry>) -> Vec<(u32, Vec<LogEntry>)> {
    let mut chunks: Vec<(u32, Vec<LogEntry>)> = Vec::new();
    for e in entries {
        match chunks.last_mut() {
            Some((attempt, list)) if *attempt == e.attempt => list.push(e.entry),
            _ => chunks.push((e.attempt, vec![e.entry])),
        }
    }
    chunks
}

/// Every stored entry of a job after `after`, in (attempt, sequence) order.
pub async fn read_all_logs(
    cp: &ControlPlane,
    job: JobId,
    after: LogCursor,
) -> Result<Vec<StoredLogEntry>, ControlError> {
    let mut all = Vec::new();
    let mut cursor = after;
    loop {
        let page = cp.logs().read(job, cursor, PAGE).await?;
        let Some(last) = page.last() else { break };
        cursor = LogCursor {
            attempt: last.attempt,
            sequence: last.entry.sequence,
        };
        let full = page.len() == PAGE;
        all.extend(page);
        if !full {
            break;
        }
    }
    Ok(all)
}

/// Follows a job's logs strictly after `after` (use `LogCursor::default()` for
/// everything): stored entries first, then live ones, without loss, duplicates
/// or reordering. The stream ends once the job is in a terminal state and
/// everything stored was yielded; it yields one error and ends if the store or
/// the job lookup fails.
///
/// Subscribes to the live feed before returning, so nothing appended after
/// this call can fall between replay and follow. Must be called inside a
/// Tokio runtime (it spawns the follower task, which stops when the stream
/// is dropped).
pub fn follow_logs(
    cp: ControlPlane,
    job: JobId,
    after: LogCursor,
) -> impl Stream<Item = LogFollowItem> + Send + Unpin + 'static {
    // Subscribe before replaying so nothing falls in between.
    let live = cp.logs().subscribe(job);
    let (tx, rx) = mpsc::channel(BUFFER);
    tokio::spawn(follow(cp, job, after, live, tx));
    ReceiverStream::new(rx)
}

/// Whether `entries` of `attempt` continue exactly after `cursor`.
fn continues(cursor: LogCursor, attempt: u32, entries: &[LogEntry]) -> bool {
    let Some(first) = entries.first() else {
        return false;
    };
    (attempt == cursor.attempt && first.sequence == cursor.sequence + 1)
        || (attempt > cursor.attempt && first.sequence == 1)
}

/// Sends stored entries as per-attempt chunks; false when the consumer is gone.
async fn send_stored(tx: &mpsc::Sender<LogFollowItem>, entries: Vec<StoredLogEntry>) -> bool {
    for chunk in group_by_attempt(entries) {
        if tx.send(Ok(chunk)).await.is_err() {
            return false;
        }
    }
    true
}

/// The follower task: replay from the store, then follow live chunks, falling
/// back to the store whenever the live feed has a gap. Ends when the job is
/// finished and everything stored was sent.
async fn follow(
    cp: ControlPlane,
    job: JobId,
    after: LogCursor,
    mut live: broadcast::Receiver<LogChunk>,
    tx: mpsc::Sender<LogFollowItem>,
) {
    let mut cursor = after;
    loop {
        if tx.is_closed() {
            return; // the consumer is gone
        }
        // Catch up from the store.
        loop {
            let page = match cp.logs().read(job, cursor, PAGE).await {
                Ok(p) => p,
                Err(e) => {
                    let _ = tx.send(Err(ControlError::Unavailable(e.to_string()))).await;
                    return;
                }
            };
            let Some(last) = page.last() else { break };
            cursor = LogCursor {
                attempt: last.attempt,
                sequence: last.entry.sequence,
            };
            let full = page.len() == PAGE;
            if !send_stored(&tx, page).await {
                return;
            }
            if !full {
                break;
            }
        }
        match cp.get_job(job).await {
            Ok(j) if j.state().is_terminal() => {
                // One last read: a batch may have landed after the page above.
                if let Ok(rest) = cp.logs().read(job, cursor, usize::MAX).await {
                    send_stored(&tx, rest).await;
                }
                return;
            }
            Ok(_) => {}
            Err(e) => {
                let _ = tx.send(Err(e)).await;
                return;
            }
        }
        // Follow the live feed while it continues the cursor exactly.
        loop {
            match tokio::time::timeout(QUIET_RECHECK, live.recv()).await {
                Ok(Ok(chunk)) if chunk.is_stored_elsewhere() => break, // read them from the store
                Ok(Ok(chunk)) => {
                    let entries: Vec<LogEntry> = chunk
                        .entries
                        .iter()
                        .filter(|e| {
                            LogCursor {
                                attempt: chunk.attempt,
                                sequence: e.sequence,
                            } > cursor
                        })
                        .cloned()
                        .collect();
                    if entries.is_empty() {
                        continue; // a resent batch
                    }
                    if !continues(cursor, chunk.attempt, &entries) {
                        break; // gap: read it from the store
                    }
                    let Some(last) = entries.last() else { continue };
                    cursor = LogCursor {
                        attempt: chunk.attempt,
                        sequence: last.sequence,
                    };
                    if tx.send(Ok((chunk.attempt, entries))).await.is_err() {
                        return;
                    }
                }
                Ok(Err(broadcast::error::RecvError::Lagged(_))) => break,
                Ok(Err(broadcast::error::RecvError::Closed)) => {
                    // The job finished: the next round drains the store and ends.
                    live = cp.logs().subscribe(job);
                    break;
                }
                Err(_) => break, // quiet: re-check the job's state
            }
        }
    }
}
