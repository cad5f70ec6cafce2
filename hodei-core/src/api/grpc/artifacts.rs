//! ArtifactService: the agent uploads a job's outputs and downloads its inputs,
//! authenticated by its session token, only for the job attempt it runs.
//! JobArtifactService: clients list and download a job's artifacts.

use std::pin::Pin;

use futures::{Stream, StreamExt};
use tonic::{Request, Response, Status, Streaming};

use super::{authenticated_worker, parse_id, status_from};
use crate::artifacts::{Announced, ArtifactError, ArtifactMeta};
use crate::control::ControlPlane;
use crate::domain::ids::JobId;
use crate::proto::v1;
use crate::proto::v1::artifact_service_server::ArtifactService;

/// ArtifactService over the control plane.
#[derive(Debug, Clone)]
pub struct ArtifactApi {
    cp: ControlPlane,
}

impl ArtifactApi {
    /// The service.
    #[must_use]
    pub fn new(cp: ControlPlane) -> Self {
        Self { cp }
    }
}

fn info(m: &ArtifactMeta) -> v1::ArtifactInfo {
    v1::ArtifactInfo {
        name: m.name.clone(),
        size: m.size,
        sha256: m.sha256.clone(),
    }
}

type DownloadStream =
    Pin<Box<dyn Stream<Item = Result<v1::DownloadArtifactResponse, Status>> + Send>>;

#[tonic::async_trait]
impl ArtifactService for ArtifactApi {
    async fn upload_artifact(
        &self,
        req: Request<Streaming<v1::UploadArtifactRequest>>,
    ) -> Result<Response<v1::UploadArtifactResponse>, Status> {
        use v1::upload_artifact_request::Part;
        let worker = authenticated_worker(&self.cp, &req).await?;
        let mut inbound = req.into_inner();
        let header = match inbound.message().await? {
            Some(v1::UploadArtifactRequest {
                part: Some(Part::Header(h)),
            }) => h,
            _ => {
                return Err(Status::invalid_argument(
                    "header: the first message must be the header",
                ));
            }
        };
        let job: JobId = parse_id(&header.job_id, "header.job_id")?;
        let announced = Announced::new(header.size, header.sha256);
        let data = inbound
            .map(|m| match m {
                Ok(v1::UploadArtifactRequest {
                    part: Some(Part::Chunk(b)),
                }) => Ok(b),
                Ok(_) => Err(ArtifactError::Interrupted(
                    "a second header in the upload".into(),
                )),
                Err(s) => Err(ArtifactError::Interrupted(s.message().to_owned())),
            })
            .boxed();
        let meta = self
            .cp
            .upload_artifact(worker, job, header.attempt, &header.name, announced, data)
            .await
            .map_err(status_from)?;
        Ok(Response::new(v1::UploadArtifactResponse {
            artifact: Some(info(&meta)),
        }))
    }

    type DownloadArtifactStream = DownloadStream;

    async fn download_artifact(
        &self,
        req: Request<v1::DownloadArtifactRequest>,
    ) -> Result<Response<Self::DownloadArtifactStream>, Status> {
        let worker = authenticated_worker(&self.cp, &req).await?;
        let r = req.into_inner();
        let job: JobId = parse_id(&r.job_id, "job_id")?;
        let (meta, content) = self
            .cp
            .download_input(worker, job, r.attempt, &r.url)
            .await
            .map_err(status_from)?;
        Ok(Response::new(download_stream(meta, content)))
    }
}

/// JobArtifactService over the control plane (client-facing, API tokens).
#[derive(Debug, Clone)]
pub struct JobArtifactApi {
    cp: ControlPlane,
}

impl JobArtifactApi {
    /// The service.
    #[must_use]
    pub fn new(cp: ControlPlane) -> Self {
        Self { cp }
    }
}

#[tonic::async_trait]
impl v1::job_artifact_service_server::JobArtifactService for JobArtifactApi {
    async fn list_job_artifacts(
        &self,
        req: Request<v1::ListJobArtifactsRequest>,
    ) -> Result<Response<v1::ListJobArtifactsResponse>, Status> {
        let job: JobId = parse_id(&req.get_ref().job_id, "job_id")?;
        let list = self.cp.list_artifacts(job).await.map_err(status_from)?;
        Ok(Response::new(v1::ListJobArtifactsResponse {
            artifacts: list.iter().map(info).collect(),
        }))
    }

    type GetJobArtifactStream = DownloadStream;

    async fn get_job_artifact(
        &self,
        req: Request<v1::GetJobArtifactRequest>,
    ) -> Result<Response<Self::GetJobArtifactStream>, Status> {
        let r = req.into_inner();
        let job: JobId = parse_id(&r.job_id, "job_id")?;
        let (meta, content) = self
            .cp
            .open_artifact(job, &r.name)
            .await
            .map_err(status_from)?;
        Ok(Response::new(download_stream(meta, content)))
    }
}

/// The info, then the content.
fn download_stream(
    meta: ArtifactMeta,
    content: crate::artifacts::ArtifactStream<'static>,
) -> DownloadStream {
    use v1::download_artifact_response::Part;
    let head = futures::stream::once(async move {
        Ok(v1::DownloadArtifactResponse {
            part: Some(Part::Info(info(&meta))),
        })
    });
    let body = content.map(|c| match c {
        Ok(b) => Ok(v1::DownloadArtifactResponse {
            part: Some(Part::Chunk(b)),
        }),
        Err(e) => Err(Status::unavailable(e.to_string())),
    });
    Box::pin(head.chain(body))
}
