//! SchedulerService.

use std::pin::Pin;

use futures::Stream;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::BroadcastStream;
use tonic::{Request, Response, Status};

use super::{parse_id, status_from};
use crate::control::Strategy;
use crate::control::{ConcurrencyLimitStatus, ControlPlane, DecisionAction, DecisionRecord};
use crate::domain::ids::JobId;
use crate::proto::convert::to_millis;
use crate::proto::v1;
use crate::proto::v1::scheduler_service_server::SchedulerService;

/// SchedulerService over the control plane.
#[derive(Debug, Clone)]
pub struct SchedulerApi {
    cp: ControlPlane,
}

impl SchedulerApi {
    /// The service.
    #[must_use]
    pub fn new(cp: ControlPlane) -> Self {
        Self { cp }
    }
}

fn strategy_to_proto(s: Strategy) -> v1::SchedulingStrategy {
    match s {
        Strategy::Fifo => v1::SchedulingStrategy::Fifo,
        Strategy::Priority => v1::SchedulingStrategy::Priority,
        Strategy::LeastLoaded => v1::SchedulingStrategy::LeastLoaded,
        Strategy::BinPacking => v1::SchedulingStrategy::BinPacking,
        Strategy::CostAware => v1::SchedulingStrategy::CostAware,
        Strategy::FastestStartup => v1::SchedulingStrategy::FastestStartup,
    }
}

fn strategy_from_proto(v: i32) -> Result<Strategy, Status> {
    match v1::SchedulingStrategy::try_from(v) {
        Ok(v1::SchedulingStrategy::Fifo) => Ok(Strategy::Fifo),
        Ok(v1::SchedulingStrategy::Priority) => Ok(Strategy::Priority),
        Ok(v1::SchedulingStrategy::LeastLoaded) => Ok(Strategy::LeastLoaded),
        Ok(v1::SchedulingStrategy::BinPacking) => Ok(Strategy::BinPacking),
        Ok(v1::SchedulingStrategy::CostAware) => Ok(Strategy::CostAware),
        Ok(v1::SchedulingStrategy::FastestStartup) => Ok(Strategy::FastestStartup),
        _ => Err(Status::invalid_argument(format!(
            "strategy: {v} is not a scheduling strategy"
        ))),
    }
}

fn decision_to_proto(d: &DecisionRecord) -> v1::SchedulingDecision {
    use v1::scheduling_decision::Action;
    let action = match &d.action {
        DecisionAction::Assign(w) => Action::AssignWorkerId(w.to_string()),
        DecisionAction::Provision(p) => Action::ProvisionProviderId(p.to_string()),
        DecisionAction::Wait(why) => Action::WaitReason(why.clone()),
    };
    v1::SchedulingDecision {
        job_id: d.job_id.to_string(),
        action: Some(action),
        strategy: strategy_to_proto(d.strategy) as i32,
        timestamp_ms: to_millis(d.at),
    }
}

fn limit_to_proto(s: ConcurrencyLimitStatus) -> v1::ConcurrencyLimit {
    v1::ConcurrencyLimit {
        jobs: s.holders.iter().map(ToString::to_string).collect(),
        key: s.key,
        max_running: s.max_running,
        updated_at_ms: to_millis(s.updated_at),
    }
}

type DecisionStream = Pin<Box<dyn Stream<Item = Result<v1::SchedulingDecision, Status>> + Send>>;

#[tonic::async_trait]
impl SchedulerService for SchedulerApi {
    async fn schedule_job(
        &self,
        req: Request<v1::ScheduleJobRequest>,
    ) -> Result<Response<v1::ScheduleJobResponse>, Status> {
        let id: JobId = parse_id(&req.get_ref().job_id, "job_id")?;
        let d = self.cp.schedule_job(id).await.map_err(status_from)?;
        Ok(Response::new(v1::ScheduleJobResponse {
            decision: Some(decision_to_proto(&d)),
        }))
    }

    async fn get_scheduling_decision(
        &self,
        req: Request<v1::GetSchedulingDecisionRequest>,
    ) -> Result<Response<v1::GetSchedulingDecisionResponse>, Status> {
        let id: JobId = parse_id(&req.get_ref().job_id, "job_id")?;
        let d = self.cp.preview_decision(id).await.map_err(status_from)?;
        Ok(Response::new(v1::GetSchedulingDecisionResponse {
            decision: Some(decision_to_proto(&d)),
        }))
    }

    async fn configure_scheduler(
        &self,
        req: Request<v1::ConfigureSchedulerRequest>,
    ) -> Result<Response<v1::ConfigureSchedulerResponse>, Status> {
        let s = strategy_from_proto(req.get_ref().strategy)?;
        let prev = self.cp.configure_scheduler(s).await.map_err(status_from)?;
        Ok(Response::new(v1::ConfigureSchedulerResponse {
            previous: strategy_to_proto(prev) as i32,
            current: strategy_to_proto(s) as i32,
        }))
    }

    async fn get_queue_status(
        &self,
        _req: Request<v1::GetQueueStatusRequest>,
    ) -> Result<Response<v1::GetQueueStatusResponse>, Status> {
        let q = self.cp.queue_status().await.map_err(status_from)?;
        let strategy = self.cp.shared_strategy().await.map_err(status_from)?;
        Ok(Response::new(v1::GetQueueStatusResponse {
            pending: q.pending,
            scheduled: q.scheduled,
            running: q.running,
            oldest_pending_age_ms: q.oldest_pending_age_ms,
            strategy: strategy_to_proto(strategy) as i32,
        }))
    }

    async fn get_available_workers(
        &self,
        req: Request<v1::GetAvailableWorkersRequest>,
    ) -> Result<Response<v1::GetAvailableWorkersResponse>, Status> {
        let workers = self
            .cp
            .list_workers(req.get_ref().include_busy)
            .await
            .map_err(status_from)?
            .iter()
            .map(|l| crate::proto::convert::worker_to_proto(&l.worker, &l.provider_name))
            .collect();
        Ok(Response::new(v1::GetAvailableWorkersResponse { workers }))
    }

    type SchedulingDecisionStreamStream = DecisionStream;

    async fn scheduling_decision_stream(
        &self,
        _req: Request<v1::SchedulingDecisionStreamRequest>,
    ) -> Result<Response<Self::SchedulingDecisionStreamStream>, Status> {
        let rx = self.cp.subscribe_decisions();
        let stream = BroadcastStream::new(rx).filter_map(|d| match d {
            Ok(d) => Some(Ok(decision_to_proto(&d))),
            Err(_) => Some(Err(Status::data_loss(
                "decision subscriber fell behind; some decisions were skipped",
            ))),
        });
        Ok(Response::new(Box::pin(stream)))
    }

    async fn list_concurrency_limits(
        &self,
        _req: Request<v1::ListConcurrencyLimitsRequest>,
    ) -> Result<Response<v1::ListConcurrencyLimitsResponse>, Status> {
        let limits = self.cp.concurrency_limits().await.map_err(status_from)?;
        Ok(Response::new(v1::ListConcurrencyLimitsResponse {
            limits: limits.into_iter().map(limit_to_proto).collect(),
        }))
    }

    async fn get_concurrency_limit(
        &self,
        req: Request<v1::GetConcurrencyLimitRequest>,
    ) -> Result<Response<v1::GetConcurrencyLimitResponse>, Status> {
        let limit = self
            .cp
            .concurrency_limit(&req.get_ref().key)
            .await
            .map_err(status_from)?;
        Ok(Response::new(v1::GetConcurrencyLimitResponse {
            limit: Some(limit_to_proto(limit)),
        }))
    }

    async fn set_concurrency_limit(
        &self,
        req: Request<v1::SetConcurrencyLimitRequest>,
    ) -> Result<Response<v1::SetConcurrencyLimitResponse>, Status> {
        let r = req.get_ref();
        let limit = self
            .cp
            .set_concurrency_limit(&r.key, r.max_running)
            .await
            .map_err(status_from)?;
        Ok(Response::new(v1::SetConcurrencyLimitResponse {
            limit: Some(limit_to_proto(limit)),
        }))
    }

    async fn delete_concurrency_limit(
        &self,
        req: Request<v1::DeleteConcurrencyLimitRequest>,
    ) -> Result<Response<v1::DeleteConcurrencyLimitResponse>, Status> {
        self.cp
            .delete_concurrency_limit(&req.get_ref().key)
            .await
            .map_err(status_from)?;
        Ok(Response::new(v1::DeleteConcurrencyLimitResponse {}))
    }
}
