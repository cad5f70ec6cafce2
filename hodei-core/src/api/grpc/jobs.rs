//! JobExecutionService and JobQueryService.

use std::pin::Pin;

use futures::Stream;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::BroadcastStream;
use tonic::{Request, Response, Status};
use tracing::Instrument;

use super::{authenticated_worker, parse_id, status_from};
use crate::control::{ControlPlane, JobEvent, job_target};
use crate::domain::ids::{CorrelationId, JobId, WorkerId};
use crate::domain::job::{AttemptOutcome, AttemptResult};
use crate::domain::spec::JobSpec;
use crate::proto::convert::{job_state_from_proto, job_state_to_proto, to_millis};
use crate::proto::v1;
use crate::proto::v1::job_execution_service_server::JobExecutionService;
use crate::proto::v1::job_query_service_server::JobQueryService;
use crate::store::{AuditAction, JobFilter};
use crate::traces::{self, Stage};

/// JobExecutionService over the control plane.
#[derive(Debug, Clone)]
pub struct JobExecutionApi {
    cp: ControlPlane,
}

impl JobExecutionApi {
    /// The service.
    #[must_use]
    pub fn new(cp: ControlPlane) -> Self {
        Self { cp }
    }
}

fn event_to_proto(e: &JobEvent) -> v1::ExecutionEvent {
    v1::ExecutionEvent {
        job_id: e.job_id.to_string(),
        from_state: job_state_to_proto(e.from) as i32,
        to_state: job_state_to_proto(e.to) as i32,
        attempt: e.attempt,
        worker_id: e.worker_id.map(|w| w.to_string()).unwrap_or_default(),
        message: e.message.clone(),
        timestamp_ms: to_millis(e.at),
        exit_code: e.exit_code,
    }
}

type EventStream = Pin<Box<dyn Stream<Item = Result<v1::ExecutionEvent, Status>> + Send>>;

#[tonic::async_trait]
impl JobExecutionService for JobExecutionApi {
    async fn queue_job(
        &self,
        req: Request<v1::QueueJobRequest>,
    ) -> Result<Response<v1::QueueJobResponse>, Status> {
        let actor = super::actor_of(&req);
        let r = req.into_inner();
        let spec = r
            .spec
            .ok_or_else(|| Status::invalid_argument("spec: must be set"))?;
        let spec = JobSpec::try_from(spec).map_err(|e| status_from(e.into()))?;
        let correlation = if r.correlation_id.is_empty() {
            None
        } else {
            Some(parse_id::<CorrelationId>(
                &r.correlation_id,
                "correlation_id",
            )?)
        };
        // The job's trace is named by its correlation id: fix it here, at the edge.
        let correlation = correlation.unwrap_or_else(CorrelationId::new);
        let span = traces::correlation_span(Stage::Submit, &correlation.to_string());
        let result = self
            .cp
            .create_job(spec, Some(correlation))
            .instrument(span.clone())
            .await;
        if let Ok(job) = &result {
            traces::record_job(&span, job);
        }
        let target = result
            .as_ref()
            .map_or_else(|_| "job:new".to_owned(), |j| job_target(j.id()));
        self.cp
            .audit()
            .record(&actor, AuditAction::JobSubmit, target, &result)
            .await;
        let job = result.map_err(status_from)?;
        Ok(Response::new(v1::QueueJobResponse {
            job: Some((&job).into()),
        }))
    }

    async fn assign_job(
        &self,
        req: Request<v1::AssignJobRequest>,
    ) -> Result<Response<v1::AssignJobResponse>, Status> {
        let r = req.into_inner();
        let job_id: JobId = parse_id(&r.job_id, "job_id")?;
        let worker_id: WorkerId = parse_id(&r.worker_id, "worker_id")?;
        let job = self
            .cp
            .assign_job_to(job_id, worker_id)
            .await
            .map_err(status_from)?;
        Ok(Response::new(v1::AssignJobResponse {
            job: Some((&job).into()),
        }))
    }

    async fn start_job(
        &self,
        req: Request<v1::StartJobRequest>,
    ) -> Result<Response<v1::StartJobResponse>, Status> {
        let caller = authenticated_worker(&self.cp, &req).await?;
        let r = req.into_inner();
        let job_id: JobId = parse_id(&r.job_id, "job_id")?;
        check_caller(caller, &r.worker_id)?;
        let job = self
            .cp
            .job_started(caller, job_id, r.attempt)
            .await
            .map_err(status_from)?;
        Ok(Response::new(v1::StartJobResponse {
            job: Some((&job).into()),
        }))
    }

    async fn update_progress(
        &self,
        req: Request<v1::UpdateProgressRequest>,
    ) -> Result<Response<v1::UpdateProgressResponse>, Status> {
        let caller = authenticated_worker(&self.cp, &req).await?;
        let r = req.into_inner();
        let job_id: JobId = parse_id(&r.job_id, "job_id")?;
        check_caller(caller, &r.worker_id)?;
        if r.percent > 100 {
            return Err(Status::invalid_argument("percent: must be 0..=100"));
        }
        self.cp
            .job_progress(caller, job_id, r.attempt, r.percent, &r.message)
            .await
            .map_err(status_from)?;
        Ok(Response::new(v1::UpdateProgressResponse {}))
    }

    async fn complete_job(
        &self,
        req: Request<v1::CompleteJobRequest>,
    ) -> Result<Response<v1::CompleteJobResponse>, Status> {
        let caller = authenticated_worker(&self.cp, &req).await?;
        let r = req.into_inner();
        let job_id: JobId = parse_id(&r.job_id, "job_id")?;
        check_caller(caller, &r.worker_id)?;
        let job = self
            .cp
            .report_job_result(
                caller,
                job_id,
                r.attempt,
                AttemptResult::exited(r.exit_code),
            )
            .await
            .map_err(status_from)?;
        Ok(Response::new(v1::CompleteJobResponse {
            job: Some((&job).into()),
        }))
    }

    async fn fail_job(
        &self,
        req: Request<v1::FailJobRequest>,
    ) -> Result<Response<v1::FailJobResponse>, Status> {
        let caller = authenticated_worker(&self.cp, &req).await?;
        let r = req.into_inner();
        let job_id: JobId = parse_id(&r.job_id, "job_id")?;
        check_caller(caller, &r.worker_id)?;
        let mut result = AttemptResult::with_outcome(
            if r.exit_code.is_some() {
                AttemptOutcome::Exited
            } else {
                AttemptOutcome::StartFailed
            },
            Some(r.error),
        );
        result.exit_code = r.exit_code.filter(|c| *c != 0).or(r.exit_code.map(|_| 1));
        let job = self
            .cp
            .report_job_result(caller, job_id, r.attempt, result)
            .await
            .map_err(status_from)?;
        Ok(Response::new(v1::FailJobResponse {
            job: Some((&job).into()),
        }))
    }

    async fn cancel_job(
        &self,
        req: Request<v1::CancelJobRequest>,
    ) -> Result<Response<v1::CancelJobResponse>, Status> {
        let actor = super::actor_of(&req);
        let r = req.into_inner();
        let job_id: JobId = parse_id(&r.job_id, "job_id")?;
        let result = self.cp.cancel_job(job_id, &r.reason).await;
        self.cp
            .audit()
            .record(&actor, AuditAction::JobCancel, job_target(job_id), &result)
            .await;
        let job = result.map_err(status_from)?;
        Ok(Response::new(v1::CancelJobResponse {
            job: Some((&job).into()),
        }))
    }

    async fn retry_job(
        &self,
        req: Request<v1::RetryJobRequest>,
    ) -> Result<Response<v1::RetryJobResponse>, Status> {
        let actor = super::actor_of(&req);
        let job_id: JobId = parse_id(&req.get_ref().job_id, "job_id")?;
        let result = self.cp.retry_job(job_id).await;
        self.cp
            .audit()
            .record(&actor, AuditAction::JobRetry, job_target(job_id), &result)
            .await;
        let job = result.map_err(status_from)?;
        Ok(Response::new(v1::RetryJobResponse {
            job: Some((&job).into()),
        }))
    }

    type ExecutionEventStreamStream = EventStream;

    async fn execution_event_stream(
        &self,
        req: Request<v1::ExecutionEventStreamRequest>,
    ) -> Result<Response<Self::ExecutionEventStreamStream>, Status> {
        let r = req.into_inner();
        let filter: Option<JobId> = if r.job_id.is_empty() {
            None
        } else {
            Some(parse_id(&r.job_id, "job_id")?)
        };
        let rx = self.cp.subscribe_job_events();
        let stream = BroadcastStream::new(rx).filter_map(move |ev| match ev {
            Ok(e) if filter.is_none_or(|f| f == e.job_id) => Some(Ok(event_to_proto(&e))),
            Ok(_) => None,
            // A slow subscriber skipped events: tell it rather than pretend.
            Err(_) => Some(Err(Status::data_loss(
                "event subscriber fell behind; some events were skipped",
            ))),
        });
        Ok(Response::new(Box::pin(stream)))
    }
}

fn check_caller(caller: WorkerId, claimed: &str) -> Result<(), Status> {
    if claimed.is_empty() {
        return Ok(());
    }
    let claimed: WorkerId = parse_id(claimed, "worker_id")?;
    if claimed != caller {
        return Err(Status::permission_denied(
            "worker_id does not match the session",
        ));
    }
    Ok(())
}

/// JobQueryService over the control plane.
#[derive(Debug, Clone)]
pub struct JobQueryApi {
    cp: ControlPlane,
}

impl JobQueryApi {
    /// The service.
    #[must_use]
    pub fn new(cp: ControlPlane) -> Self {
        Self { cp }
    }
}

#[tonic::async_trait]
impl JobQueryService for JobQueryApi {
    async fn get_job(
        &self,
        req: Request<v1::GetJobRequest>,
    ) -> Result<Response<v1::GetJobResponse>, Status> {
        let id: JobId = parse_id(&req.get_ref().job_id, "job_id")?;
        let job = self.cp.get_job(id).await.map_err(status_from)?;
        Ok(Response::new(v1::GetJobResponse {
            job: Some((&job).into()),
        }))
    }

    async fn list_jobs(
        &self,
        req: Request<v1::ListJobsRequest>,
    ) -> Result<Response<v1::ListJobsResponse>, Status> {
        let r = req.into_inner();
        let filter = JobFilter {
            state: job_state_from_proto(r.state, "state").map_err(|e| status_from(e.into()))?,
            limit: Some(if r.limit == 0 {
                100
            } else {
                r.limit.min(10_000) as usize
            }),
            ..JobFilter::default()
        };
        let jobs = self.cp.list_jobs(&filter).await.map_err(status_from)?;
        Ok(Response::new(v1::ListJobsResponse {
            jobs: jobs.iter().map(Into::into).collect(),
        }))
    }
}
