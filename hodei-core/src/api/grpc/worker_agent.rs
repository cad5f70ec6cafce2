//! WorkerAgentService: registration, the bidirectional stream, status, goodbye.

use std::pin::Pin;

use futures::{Stream, StreamExt};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use super::{authenticated_worker, parse_id, status_from};
use crate::control::{ControlPlane, OrderedReports};
use crate::domain::ids::WorkerId;
use crate::domain::worker::WorkerState;
use crate::proto::convert::{self, worker_state_from_proto};
use crate::proto::v1;
use crate::proto::v1::worker_agent_service_server::WorkerAgentService;
use crate::proto::worker_convert::worker_report_from_proto;

/// WorkerAgentService over the control plane.
#[derive(Debug, Clone)]
pub struct WorkerAgentApi {
    cp: ControlPlane,
}

impl WorkerAgentApi {
    /// The service.
    #[must_use]
    pub fn new(cp: ControlPlane) -> Self {
        Self { cp }
    }
}

type ServerStream = Pin<Box<dyn Stream<Item = Result<v1::ServerMessage, Status>> + Send>>;

#[tonic::async_trait]
impl WorkerAgentService for WorkerAgentApi {
    async fn register(
        &self,
        req: Request<v1::RegisterRequest>,
    ) -> Result<Response<v1::RegisterResponse>, Status> {
        let r = req.into_inner();
        let claimed: Option<WorkerId> = match r.worker_info.as_ref().map(|i| i.worker_id.as_str()) {
            Some(s) if !s.is_empty() => Some(parse_id(s, "worker_info.worker_id")?),
            _ => None,
        };
        let out = self
            .cp
            .register_worker(&r.otp, &r.resume_session_token, claimed)
            .await
            .map_err(status_from)?;
        Ok(Response::new(v1::RegisterResponse {
            worker_id: out.worker_id.to_string(),
            session_id: out.worker_id.to_string(),
            session_token: out.session_token,
            heartbeat_interval_ms: self.cp.config().heartbeat_interval.as_millis() as u64,
            resumed: out.resumed,
        }))
    }

    type WorkerStreamStream = ServerStream;

    async fn worker_stream(
        &self,
        req: Request<Streaming<v1::WorkerMessage>>,
    ) -> Result<Response<Self::WorkerStreamStream>, Status> {
        let worker_id = authenticated_worker(&self.cp, &req).await?;
        let mut inbound = req.into_inner();
        let handle = self
            .cp
            .open_worker_stream(worker_id)
            .await
            .map_err(status_from)?;
        let conn_id = handle.conn_id;
        let cp = self.cp.clone();
        let span = tracing::info_span!("worker_stream", %worker_id, conn_id);
        tokio::spawn(tracing::Instrument::instrument(
            async move {
                // Messages of one stream are handled in order (a job's result
                // after its last log batch); log batches may go ahead of a job
                // start still being stored (see `OrderedReports`).
                let mut reports = OrderedReports::new(cp.clone(), worker_id);
                while let Some(msg) = inbound.next().await {
                    match msg {
                        Ok(m) => {
                            if let Some(v1::worker_message::Payload::Heartbeat(hb)) = &m.payload
                                && let Some(days) = hb.certificate_days_to_expiry
                            {
                                crate::cert_expiry::record_worker_days_to_expiry(
                                    &worker_id.to_string(),
                                    days,
                                );
                            }
                            let report = match worker_report_from_proto(m) {
                                Ok(Some(r)) => r,
                                Ok(None) => continue,
                                Err(e) => {
                                    tracing::warn!(error = %e, "malformed worker message refused");
                                    continue;
                                }
                            };
                            match reports.handle(report).await {
                                Ok(()) => {}
                                // The agent resends what is unacknowledged only on a
                                // new stream: end this one so nothing it sent while the
                                // store was down (a result, a log batch) is lost.
                                Err(e @ crate::control::ControlError::Unavailable(_)) => {
                                    tracing::warn!(error = %e, "store unavailable; closing the worker stream so the agent resends");
                                    break;
                                }
                                Err(e) => tracing::warn!(error = %e, "worker message refused"),
                            }
                        }
                        Err(e) => {
                            tracing::info!(error = %e, "worker stream error");
                            break;
                        }
                    }
                }
                reports.settle().await;
                cp.close_worker_stream(worker_id, conn_id).await;
            },
            span,
        ));
        Ok(Response::new(Box::pin(
            ReceiverStream::new(handle.outbound).map(|cmd| Ok(v1::ServerMessage::from(cmd))),
        )))
    }

    async fn update_worker_status(
        &self,
        req: Request<v1::UpdateWorkerStatusRequest>,
    ) -> Result<Response<v1::UpdateWorkerStatusResponse>, Status> {
        let caller = authenticated_worker(&self.cp, &req).await?;
        let r = req.into_inner();
        let target: WorkerId = parse_id(&r.worker_id, "worker_id")?;
        if target != caller {
            return Err(Status::permission_denied(
                "a worker can only update its own status",
            ));
        }
        let state = worker_state_from_proto(r.state, "state")
            .map_err(|e| status_from(e.into()))?
            .ok_or_else(|| Status::invalid_argument("state: must be set"))?;
        let w = match state {
            WorkerState::Draining => self.cp.drain_worker(target).await.map_err(status_from)?,
            other => {
                return Err(Status::invalid_argument(format!(
                    "state: a worker may only ask for draining, not {other}"
                )));
            }
        };
        Ok(Response::new(v1::UpdateWorkerStatusResponse {
            worker: Some(convert::worker_to_proto(&w, "")),
        }))
    }

    async fn unregister_worker(
        &self,
        req: Request<v1::UnregisterWorkerRequest>,
    ) -> Result<Response<v1::UnregisterWorkerResponse>, Status> {
        let caller = authenticated_worker(&self.cp, &req).await?;
        let r = req.into_inner();
        let target: WorkerId = parse_id(&r.worker_id, "worker_id")?;
        if target != caller {
            return Err(Status::permission_denied(
                "a worker can only unregister itself",
            ));
        }
        self.cp
            .unregister_worker(target, &r.reason)
            .await
            .map_err(status_from)?;
        Ok(Response::new(v1::UnregisterWorkerResponse {}))
    }
}
