//! `/api/v1/jobs`: create, get, list, cancel, retry.

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use tracing::Instrument;
use utoipa::IntoParams;

use super::AppState;
use super::dto::{CancelRequest, JobDto, JobList, JobStateDto};
use super::error::{ApiError, ApiJson, ErrorBody, OptionalApiJson};
use crate::control::{Actor, job_target};
use crate::domain::ids::{CorrelationId, JobId};
use crate::domain::job::JobState;
use crate::domain::spec::JobSpec;
use crate::store::AuditAction;
use crate::store::JobFilter;
use crate::traces::{self, Stage};

/// Jobs listed when no `limit` is given.
const DEFAULT_LIMIT: usize = 100;
/// Largest `limit` accepted.
const MAX_LIMIT: usize = 10_000;
/// Header carrying a client's correlation id.
const CORRELATION_HEADER: &str = "x-correlation-id";

/// Parses the `{id}` path segment.
pub(super) fn job_id(id: &str) -> Result<JobId, ApiError> {
    id.parse().map_err(|_| ApiError::bad_id("id", id))
}

/// Submits a job: validates the spec, stores it `pending` and queues it.
/// Nothing is stored when the spec is invalid.
#[utoipa::path(
    post,
    path = "/api/v1/jobs",
    tag = "jobs",
    request_body(content = inline(super::dto::JobSpecDoc), content_type = "application/json",
        description = "The job spec (JSON form of `JobSpec`; unknown fields are refused)"),
    params(("x-correlation-id" = Option<String>, Header, nullable = false, format = Uuid, description = "Correlation id (UUID) to follow the job across services")),
    responses(
        (status = 201, description = "Queued", body = JobDto,
            headers(("location" = String, description = "URL of the new job"))),
        (status = 400, description = "Malformed JSON, unknown field or invalid spec", body = ErrorBody),
        (status = 415, description = "Not JSON", body = ErrorBody),
        (status = 503, description = "A store is unavailable", body = ErrorBody),
    )
)]
pub(super) async fn create_job(
    State(s): State<AppState>,
    actor: Actor,
    headers: HeaderMap,
    ApiJson(spec): ApiJson<JobSpec>,
) -> Result<Response, ApiError> {
    let correlation = match headers.get(CORRELATION_HEADER) {
        None => None,
        Some(v) => {
            let text = v.to_str().unwrap_or("");
            Some(
                text.parse::<CorrelationId>()
                    .map_err(|_| ApiError::bad_id(CORRELATION_HEADER, text))?,
            )
        }
    };
    // The job's trace is named by its correlation id: fix it here, at the edge.
    let correlation = correlation.unwrap_or_else(CorrelationId::new);
    let span = traces::correlation_span(Stage::Submit, &correlation.to_string());
    let result =
        s.cp.create_job(spec, Some(correlation))
            .instrument(span.clone())
            .await;
    if let Ok(job) = &result {
        traces::record_job(&span, job);
    }
    let target = result
        .as_ref()
        .map_or_else(|_| "job:new".to_owned(), |j| job_target(j.id()));
    s.cp.audit()
        .record(&actor, AuditAction::JobSubmit, target, &result)
        .await;
    created(&result?)
}

/// 201 with the new job and its `Location`.
fn created(job: &crate::domain::job::Job) -> Result<Response, ApiError> {
    let location = HeaderValue::from_str(&format!("/api/v1/jobs/{}", job.id()))
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()))?;
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, location)],
        Json(JobDto::from(job)),
    )
        .into_response())
}

/// A job by id.
#[utoipa::path(
    get,
    path = "/api/v1/jobs/{id}",
    tag = "jobs",
    params(("id" = String, Path, format = Uuid, description = "Job id (UUID)")),
    responses(
        (status = 200, description = "The job", body = JobDto),
        (status = 400, description = "Not a UUID", body = ErrorBody),
        (status = 404, description = "No such job", body = ErrorBody),
    )
)]
pub(super) async fn get_job(
    State(s): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<JobDto>, ApiError> {
    let job = s.cp.get_job(job_id(&id)?).await?;
    Ok(Json(JobDto::from(&job)))
}

/// Query of `GET /api/v1/jobs`.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct ListJobsQuery {
    /// Only jobs in this state (`pending`, `scheduled`, `running`, `succeeded`,
    /// `failed`, `cancelled`, `timeout`).
    #[param(inline, value_type = Option<JobStateDto>)]
    state: Option<String>,
    /// At most this many, newest first (default 100, at most 10000).
    #[param(value_type = Option<u32>, minimum = 1, maximum = 10000)]
    limit: Option<String>,
}

/// Jobs, newest first.
#[utoipa::path(
    get,
    path = "/api/v1/jobs",
    tag = "jobs",
    params(ListJobsQuery),
    responses(
        (status = 200, description = "The jobs", body = JobList),
        (status = 400, description = "Unknown state or bad limit", body = ErrorBody),
    )
)]
pub(super) async fn list_jobs(
    State(s): State<AppState>,
    query: Result<Query<ListJobsQuery>, QueryRejection>,
) -> Result<Json<JobList>, ApiError> {
    let Query(q) = query.map_err(|e| ApiError::invalid_argument("query", e.body_text()))?;
    let mut filter = JobFilter::default();
    // An empty value is refused like any other that is not in the schema.
    if let Some(state) = q.state.as_deref() {
        filter.state = Some(
            state
                .parse::<JobState>()
                .map_err(|e| ApiError::invalid_argument("state", e))?,
        );
    }
    let limit = match q.limit.as_deref() {
        None => DEFAULT_LIMIT,
        Some(l) => match l.parse::<usize>() {
            Ok(n) if (1..=MAX_LIMIT).contains(&n) => n,
            _ => {
                return Err(ApiError::invalid_argument(
                    "limit",
                    format!("{l:?} is not a number from 1 to {MAX_LIMIT}"),
                ));
            }
        },
    };
    filter.limit = Some(limit);
    let jobs = s.cp.list_jobs(&filter).await?;
    Ok(Json(JobList {
        jobs: jobs.iter().map(JobDto::from).collect(),
    }))
}

/// Cancels a queued or running job (a running job's process group is killed).
#[utoipa::path(
    post,
    path = "/api/v1/jobs/{id}/cancel",
    tag = "jobs",
    params(("id" = String, Path, format = Uuid, description = "Job id (UUID)")),
    request_body(content = Option<CancelRequest>, content_type = "application/json",
        description = "Optional reason"),
    responses(
        (status = 200, description = "The cancelled job", body = JobDto),
        (status = 400, description = "Not a UUID or bad body", body = ErrorBody),
        (status = 404, description = "No such job", body = ErrorBody),
        (status = 409, description = "The job already finished", body = ErrorBody),
    )
)]
pub(super) async fn cancel_job(
    State(s): State<AppState>,
    actor: Actor,
    Path(id): Path<String>,
    OptionalApiJson(body): OptionalApiJson<CancelRequest>,
) -> Result<Json<JobDto>, ApiError> {
    let id = job_id(&id)?;
    let reason = body.map(|b| b.reason).unwrap_or_default();
    let result = s.cp.cancel_job(id, &reason).await;
    s.cp.audit()
        .record(&actor, AuditAction::JobCancel, job_target(id), &result)
        .await;
    Ok(Json(JobDto::from(&result?)))
}

/// Runs a finished job (failed, timed out, cancelled or succeeded) again: a
/// new job with the same spec and labels, plus the label `hodei.retry_of`
/// naming the original.
#[utoipa::path(
    post,
    path = "/api/v1/jobs/{id}/retry",
    tag = "jobs",
    params(("id" = String, Path, format = Uuid, description = "Id (UUID) of the finished job")),
    responses(
        (status = 201, description = "The new job, queued", body = JobDto,
            headers(("location" = String, description = "URL of the new job"))),
        (status = 400, description = "Not a UUID", body = ErrorBody),
        (status = 404, description = "No such job", body = ErrorBody),
        (status = 409, description = "The job has not finished (cancel it first)", body = ErrorBody),
    )
)]
pub(super) async fn retry_job(
    State(s): State<AppState>,
    actor: Actor,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let id = job_id(&id)?;
    let result = s.cp.retry_job(id).await;
    s.cp.audit()
        .record(&actor, AuditAction::JobRetry, job_target(id), &result)
        .await;
    created(&result?)
}
