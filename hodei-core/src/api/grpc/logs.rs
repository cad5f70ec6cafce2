//! LogStreamService: stored logs, and live logs that replay then follow.

use std::pin::Pin;

use futures::{Stream, StreamExt};
use tonic::{Request, Response, Status};

use super::{parse_id, status_from};
use crate::api::log_follow::{PAGE, follow_logs};
use crate::control::ControlPlane;
use crate::domain::ids::JobId;
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
        let chunks = follow_logs(self.cp.clone(), job, LogCursor::default()).map(move |item| {
            item.map(|(attempt, entries)| v1::LogChunk {
                job_id: job.to_string(),
                attempt,
                entries: entries.iter().map(Into::into).collect(),
            })
            .map_err(status_from)
        });
        Ok(Response::new(Box::pin(chunks)))
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
