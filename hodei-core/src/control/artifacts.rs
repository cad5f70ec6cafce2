//! Job artifacts through the control plane: who may upload or download what,
//! the mapping of store errors to typed control errors, and the retention sweep
//! that deletes the artifacts of jobs that no longer exist.

use std::sync::Arc;

use super::{ControlError, ControlPlane, ControlResult};
use crate::artifacts::names::ArtifactRef;
use crate::artifacts::{Announced, ArtifactError, ArtifactMeta, ArtifactStore, ArtifactStream};
use crate::domain::ids::{JobId, WorkerId};
use crate::domain::job::Job;
use crate::domain::spec::JobSpec;

impl From<ArtifactError> for ControlError {
    fn from(e: ArtifactError) -> Self {
        match e {
            ArtifactError::InvalidName { .. } => ControlError::InvalidArgument {
                field: "name".into(),
                message: e.to_string(),
            },
            ArtifactError::Mismatch { what, .. } => ControlError::InvalidArgument {
                field: what.into(),
                message: e.to_string(),
            },
            ArtifactError::NotFound { .. } => ControlError::NotFound(e.to_string()),
            e if e.is_limit() => ControlError::ResourceExhausted(e.to_string()),
            other => ControlError::Unavailable(other.to_string()),
        }
    }
}

/// The artifact store of this control plane, if it keeps artifacts.
#[derive(Default)]
pub(super) struct JobArtifacts {
    store: Option<Arc<dyn ArtifactStore>>,
}

impl JobArtifacts {
    pub(super) fn new(store: Option<Arc<dyn ArtifactStore>>) -> Self {
        Self { store }
    }

    /// The store, or why there is none.
    fn store(&self) -> ControlResult<&Arc<dyn ArtifactStore>> {
        self.store.as_ref().ok_or_else(|| {
            ControlError::FailedPrecondition("this server keeps no artifacts".into())
        })
    }

    /// Refuses a spec with inputs or outputs when no store is configured:
    /// their files could never be fetched or kept.
    pub(super) fn check_supported(&self, spec: &JobSpec) -> ControlResult<()> {
        if self.store.is_some() {
            return Ok(());
        }
        let field = if spec.inputs.is_empty() {
            (!spec.outputs.is_empty()).then_some("outputs")
        } else {
            Some("inputs")
        };
        match field {
            Some(field) => Err(ControlError::InvalidArgument {
                field: field.into(),
                message: "this server has no artifact store configured".into(),
            }),
            None => Ok(()),
        }
    }
}

impl ControlPlane {
    /// The artifact store, when one is configured.
    #[must_use]
    pub fn artifacts(&self) -> Option<&Arc<dyn ArtifactStore>> {
        self.inner.artifacts.store.as_ref()
    }

    fn artifact_store(&self) -> ControlResult<&Arc<dyn ArtifactStore>> {
        self.inner.artifacts.store()
    }

    /// The artifacts of a job (which must exist), by name.
    pub async fn list_artifacts(&self, job: JobId) -> ControlResult<Vec<ArtifactMeta>> {
        self.get_job(job).await?;
        match self.artifacts() {
            Some(store) => Ok(store.list(job).await?),
            None => Ok(Vec::new()),
        }
    }

    /// One artifact of a job and its content.
    pub async fn open_artifact(
        &self,
        job: JobId,
        name: &str,
    ) -> ControlResult<(ArtifactMeta, ArtifactStream<'static>)> {
        self.get_job(job).await?;
        Ok(self.artifact_store()?.open(job, name).await?)
    }

    /// A worker uploads an output of the job attempt it runs.
    pub async fn upload_artifact(
        &self,
        worker: WorkerId,
        job: JobId,
        attempt: u32,
        name: &str,
        announced: Announced,
        data: ArtifactStream<'_>,
    ) -> ControlResult<ArtifactMeta> {
        let store = self.artifact_store()?;
        let j = self.get_job(job).await?;
        Self::check_assignment(&j, worker, Some(attempt))?;
        if j.spec().outputs.is_empty() {
            return Err(ControlError::PermissionDenied(format!(
                "job {job} declares no outputs"
            )));
        }
        let meta = store.put(job, name, announced, data).await?;
        tracing::info!(%job, attempt, name, size = meta.size, sha256 = %meta.sha256, "artifact stored");
        Ok(meta)
    }

    /// A worker downloads an input (`artifact://JOB_ID/NAME`) of the job attempt it runs.
    pub async fn download_input(
        &self,
        worker: WorkerId,
        job: JobId,
        attempt: u32,
        url: &str,
    ) -> ControlResult<(ArtifactMeta, ArtifactStream<'static>)> {
        let store = self.artifact_store()?;
        let j: Job = self.get_job(job).await?;
        Self::check_assignment(&j, worker, Some(attempt))?;
        // Only what the job's spec asks for: a session token opens nothing else.
        if !j.spec().inputs.iter().any(|i| i.url == url) {
            return Err(ControlError::PermissionDenied(format!(
                "job {job} has no input {url:?}"
            )));
        }
        let source = ArtifactRef::parse(url).map_err(|message| ControlError::InvalidArgument {
            field: "url".into(),
            message,
        })?;
        Ok(store.open(source.job_id, &source.name).await?)
    }

    /// Deletes the artifacts of jobs that are gone (pruned by retention, or
    /// pruned while a previous sweep failed). Returns how many jobs' artifacts
    /// were deleted.
    pub(super) async fn sweep_artifacts(&self) -> ControlResult<u64> {
        let Some(store) = self.artifacts() else {
            return Ok(0);
        };
        let mut deleted = 0;
        for job in store.jobs().await? {
            if self.inner.stores.jobs.get(job).await?.is_none() {
                let files = store.delete_job(job).await?;
                tracing::info!(%job, files, "artifacts of a pruned job deleted");
                deleted += 1;
            }
        }
        Ok(deleted)
    }
}
