//! `/api/v1/jobs/{id}/artifacts`: a job's output artifacts, listed and downloaded.

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::AppState;
use super::error::{ApiError, ErrorBody};
use super::jobs::job_id;
use crate::artifacts::ArtifactMeta;

/// Header of a download carrying the artifact's SHA-256 (lowercase hex).
pub const SHA256_HEADER: &str = "x-artifact-sha256";

/// One artifact of a job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[non_exhaustive]
pub struct ArtifactDto {
    /// Name, unique within the job (`reports/out/a.txt` for a glob's match).
    pub name: String,
    /// Size in bytes.
    pub size: u64,
    /// SHA-256 of the content, lowercase hex.
    pub sha256: String,
    /// When it was stored.
    pub created_at: DateTime<Utc>,
}

impl From<ArtifactMeta> for ArtifactDto {
    fn from(m: ArtifactMeta) -> Self {
        Self {
            name: m.name,
            size: m.size,
            sha256: m.sha256,
            created_at: m.created_at,
        }
    }
}

/// The artifacts of a job, by name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[non_exhaustive]
pub struct ArtifactList {
    /// The artifacts.
    pub artifacts: Vec<ArtifactDto>,
}

/// Lists a job's artifacts (its outputs, uploaded after it ran, also when it failed).
#[utoipa::path(
    get,
    path = "/api/v1/jobs/{id}/artifacts",
    tag = "jobs",
    params(("id" = String, Path, format = Uuid, description = "Job id")),
    responses(
        (status = 200, description = "The job's artifacts, by name", body = ArtifactList),
        (status = 400, description = "Malformed id", body = ErrorBody),
        (status = 404, description = "No such job", body = ErrorBody),
    )
)]
pub(super) async fn list_artifacts(
    State(s): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<ArtifactList>, ApiError> {
    let id = job_id(&id)?;
    let artifacts = s.cp.list_artifacts(id).await?;
    Ok(Json(ArtifactList {
        artifacts: artifacts.into_iter().map(ArtifactDto::from).collect(),
    }))
}

/// Downloads one artifact. Its SHA-256 is in the `x-artifact-sha256` header.
#[utoipa::path(
    get,
    path = "/api/v1/jobs/{id}/artifacts/{name}",
    tag = "jobs",
    params(
        ("id" = String, Path, format = Uuid, description = "Job id"),
        ("name" = String, Path, description = "Artifact name (may hold '/')"),
    ),
    responses(
        (status = 200, description = "The content", content_type = "application/octet-stream", body = Vec<u8>,
            headers(("x-artifact-sha256" = String, description = "SHA-256 of the content, lowercase hex"))),
        (status = 400, description = "Malformed id or name (`..`, absolute)", body = ErrorBody),
        (status = 404, description = "No such job or artifact", body = ErrorBody),
    )
)]
pub(super) async fn download_artifact(
    State(s): State<AppState>,
    Path((id, name)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let id = job_id(&id)?;
    let (meta, content) = s.cp.open_artifact(id, &name).await?;
    let header = |v: &str| {
        HeaderValue::from_str(v).map_err(|e| {
            ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string())
        })
    };
    let file_name = meta.name.rsplit('/').next().unwrap_or(&meta.name);
    let disposition = format!(
        "attachment; filename=\"{}\"",
        file_name.replace(['"', '\\'], "_")
    );
    Ok((
        [
            (header::CONTENT_TYPE, header("application/octet-stream")?),
            (header::CONTENT_LENGTH, header(&meta.size.to_string())?),
            (
                header::HeaderName::from_static(SHA256_HEADER),
                header(&meta.sha256)?,
            ),
            (header::CONTENT_DISPOSITION, header(&disposition)?),
        ],
        Body::from_stream(content),
    )
        .into_response())
}
