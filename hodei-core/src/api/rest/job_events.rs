//! `GET /api/v1/jobs/{id}/events`: a job's state changes with their times
//! (the job page's timeline).

use axum::Json;
use axum::extract::{Path, State};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::AppState;
use super::dto::JobStateDto;
use super::error::{ApiError, ErrorBody};
use super::jobs::job_id;
use crate::store::JobTransitionRecord;

/// One state change of a job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[non_exhaustive]
pub struct JobEventDto {
    /// State before; `null` for the submission.
    pub from: Option<JobStateDto>,
    /// State after.
    pub to: JobStateDto,
    /// When the change was stored.
    pub at: DateTime<Utc>,
    /// The job's attempt after the change (0 before its first attempt).
    pub attempt: u32,
    /// Worker of that attempt (UUID), if one was bound.
    #[schema(format = Uuid)]
    pub worker_id: Option<String>,
    /// Why (error, cancel reason…); empty when there is nothing to say.
    pub reason: String,
}

impl From<&JobTransitionRecord> for JobEventDto {
    fn from(r: &JobTransitionRecord) -> Self {
        Self {
            from: r.from.map(JobStateDto::from),
            to: r.to.into(),
            at: r.at,
            attempt: r.attempt,
            worker_id: r.worker_id.map(|w| w.to_string()),
            reason: r.reason.clone(),
        }
    }
}

/// A job's state changes, oldest first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[non_exhaustive]
pub struct JobEventList {
    /// The changes, in the order they happened.
    pub events: Vec<JobEventDto>,
}

/// A job's state changes (submitted, scheduled, running, requeued,
/// finished…) with their times, attempts and reasons, oldest first.
#[utoipa::path(
    get,
    path = "/api/v1/jobs/{id}/events",
    tag = "jobs",
    params(("id" = String, Path, format = Uuid, description = "Job id (UUID)")),
    responses(
        (status = 200, description = "The job's state changes", body = JobEventList),
        (status = 400, description = "Not a UUID", body = ErrorBody),
        (status = 404, description = "No such job", body = ErrorBody),
    )
)]
pub(super) async fn job_events(
    State(s): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<JobEventList>, ApiError> {
    let history = s.cp.job_history(job_id(&id)?).await?;
    Ok(Json(JobEventList {
        events: history.iter().map(JobEventDto::from).collect(),
    }))
}
