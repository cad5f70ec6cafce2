//! LogStreamService: stored logs, and live logs that replay then follow.

use std::pin::Pin;
use std::time::Duration;

use futures::Stream;
use tokio::sync::{broadcast, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use super::{parse_id, status_from};
use crate::control::{ControlPlane, LogChunk};
use crate::domain::ids::JobId;
use crate::domain::logs::LogEntry;
use crate::proto::v1;
use crate::proto::v1::log_stream_service_server::LogStreamService;
use crate::store::{LogCursor, StoredLogEntry};

/// LogStreamService over the control plane.
#[derive(Debug, Clone)]
pub struct LogStreamApi {
    cp: ControlPlane,
}

impl LogStreamApi {
    /// The service.
    #[must_use]
    pub fn new(cp: ControlPlane) -> Self {
        Self { cp }
    }
}

const PAGE: usize = 2000;

/// Groups stored entries into per-attempt chunks.
fn to_chunks(job: JobId, entries: Vec<StoredLogEntry>) -> Vec<v1::LogChunk> {
    let mut chunks: Vec<v1::LogChunk> = Vec::new();
    for e in entries {
        match chunks.last_mut() {
            Some(c) if c.attempt == e.attempt => c.entries.push((&e.entry).into()),
            _ => chunks.push(v1::LogChunk {
                job_id: job.to_string(),
                attempt: e.attempt,
                entries: vec![(&e.entry).into()],
            }),
        }
    }
    chunks
}

/// Whether `entries` of `attempt` continue exactly after `cursor`.
fn continues(cursor: LogCursor, attempt: u32, entries: &[LogEntry]) -> bool {
    let Some(first) = entries.first() else {
        return false;
    };
    (attempt == cursor.attempt && first.sequence == cursor.sequence + 1)
        || (attempt > cursor.attempt && first.sequence == 1)
}

/// Streams a job's logs into `tx`: replay from the store, then follow live
/// chunks, falling back to the store whenever the live feed has a gap. Ends
/// when the job is finished and everything stored was sent.
async fn follow(
    cp: ControlPlane,
    job: JobId,
    mut live: broadcast::Receiver<LogChunk>,
    tx: mpsc::Sender<Result<v1::LogChunk, Status>>,
) {
    let mut cursor = LogCursor::default();
    loop {
        // Catch up from the store.
        loop {
            let page = match cp.logs().read(job, cursor, PAGE).await {
                Ok(p) => p,
                Err(e) => {
                    let _ = tx.send(Err(Status::unavailable(e.to_string()))).await;
                    return;
                }
            };
            let Some(last) = page.last() else { break };
            cursor = LogCursor {
                attempt: last.attempt,
                sequence: last.entry.sequence,
            };
            let full = page.len() == PAGE;
            for chunk in to_chunks(job, page) {
                if tx.send(Ok(chunk)).await.is_err() {
                    return;
                }
            }
            if !full {
                break;
            }
        }
        match cp.get_job(job).await {
            Ok(j) if j.state().is_terminal() => {
                // One last read: a batch may have landed after the page above.
                if let Ok(rest) = cp.logs().read(job, cursor, usize::MAX).await {
                    for chunk in to_chunks(job, rest) {
                        if tx.send(Ok(chunk)).await.is_err() {
                            return;
                        }
                    }
                }
                return;
            }
            Ok(_) => {}
            Err(e) => {
                let _ = tx.send(Err(status_from(e))).await;
                return;
            }
        }
        // Follow the live feed while it continues the cursor exactly.
        loop {
            match tokio::time::timeout(Duration::from_millis(500), live.recv()).await {
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
                    let msg = v1::LogChunk {
                        job_id: job.to_string(),
                        attempt: chunk.attempt,
                        entries: entries.iter().map(Into::into).collect(),
                    };
                    if tx.send(Ok(msg)).await.is_err() {
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

type ChunkStream = Pin<Box<dyn Stream<Item = Result<v1::LogChunk, Status>> + Send>>;

#[tonic::async_trait]
impl LogStreamService for LogStreamApi {
    type SubscribeLogsStream = ChunkStream;

    async fn subscribe_logs(
        &self,
        req: Request<v1::SubscribeLogsRequest>,
    ) -> Result<Response<Self::SubscribeLogsStream>, Status> {
        let job: JobId = parse_id(&req.get_ref().job_id, "job_id")?;
        self.cp.get_job(job).await.map_err(status_from)?;
        // Subscribe before replaying so nothing falls in between.
        let live = self.cp.logs().subscribe(job);
        let (tx, rx) = mpsc::channel(64);
        tokio::spawn(follow(self.cp.clone(), job, live, tx));
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn get_logs(
        &self,
        req: Request<v1::GetLogsRequest>,
    ) -> Result<Response<v1::GetLogsResponse>, Status> {
        let r = req.into_inner();
        let job_id: JobId = parse_id(&r.job_id, "job_id")?;
        let job = self.cp.get_job(job_id).await.map_err(status_from)?;
        let mut all = Vec::new();
        let mut cursor = LogCursor::default();
        loop {
            let page = self
                .cp
                .logs()
                .read(job_id, cursor, PAGE)
                .await
                .map_err(|e| status_from(e.into()))?;
            let Some(last) = page.last() else { break };
            cursor = LogCursor {
                attempt: last.attempt,
                sequence: last.entry.sequence,
            };
            let full = page.len() == PAGE;
            all.extend(
                page.into_iter()
                    .filter(|e| r.attempt == 0 || e.attempt == r.attempt),
            );
            if !full {
                break;
            }
        }
        Ok(Response::new(v1::GetLogsResponse {
            chunks: to_chunks(job_id, all),
            job_finished: job.state().is_terminal(),
        }))
    }
}
