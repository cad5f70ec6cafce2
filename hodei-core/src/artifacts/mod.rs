//! Job artifacts: files a job reads before it runs ([`JobSpec::inputs`]) and
//! files it leaves behind ([`JobSpec::outputs`]), kept by an [`ArtifactStore`]
//! with a SHA-256 checksum each and limits on size and count.
//!
//! The agent uploads a job's outputs after its command ends, whatever the
//! outcome, and fetches its `artifact://JOB_ID/NAME` inputs before the command
//! starts. [`FsArtifactStore`] (feature `server`) is the embedded default: one
//! directory per job on the server's disk.
//!
//! [`JobSpec::inputs`]: crate::JobSpec::inputs
//! [`JobSpec::outputs`]: crate::JobSpec::outputs

pub mod names;

#[cfg(feature = "server")]
mod fs;

#[cfg(feature = "server")]
#[cfg_attr(docsrs, doc(cfg(feature = "server")))]
pub use fs::FsArtifactStore;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures::stream::BoxStream;
use serde::{Deserialize, Serialize};

use crate::domain::ids::JobId;

/// Default largest artifact: 100 MiB.
pub const DEFAULT_MAX_FILE_BYTES: u64 = 100 * 1024 * 1024;
/// Default most bytes of artifacts per job: 1 GiB.
pub const DEFAULT_MAX_JOB_BYTES: u64 = 1024 * 1024 * 1024;
/// Default most artifacts per job.
pub const DEFAULT_MAX_FILES: u32 = 1000;

/// Limits an [`ArtifactStore`] enforces on every upload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct ArtifactLimits {
    /// Largest single artifact, in bytes.
    pub max_file_bytes: u64,
    /// Most bytes of all the artifacts of one job.
    pub max_job_bytes: u64,
    /// Most artifacts per job.
    pub max_files: u32,
}

impl Default for ArtifactLimits {
    fn default() -> Self {
        Self {
            max_file_bytes: DEFAULT_MAX_FILE_BYTES,
            max_job_bytes: DEFAULT_MAX_JOB_BYTES,
            max_files: DEFAULT_MAX_FILES,
        }
    }
}

impl ArtifactLimits {
    /// Sets [`Self::max_file_bytes`].
    #[must_use]
    pub fn with_max_file_bytes(mut self, v: u64) -> Self {
        self.max_file_bytes = v;
        self
    }
    /// Sets [`Self::max_job_bytes`].
    #[must_use]
    pub fn with_max_job_bytes(mut self, v: u64) -> Self {
        self.max_job_bytes = v;
        self
    }
    /// Sets [`Self::max_files`].
    #[must_use]
    pub fn with_max_files(mut self, v: u32) -> Self {
        self.max_files = v;
        self
    }
}

/// One stored artifact.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ArtifactMeta {
    /// Name, unique within its job (see [`names::check_name`]).
    pub name: String,
    /// Size in bytes.
    pub size: u64,
    /// SHA-256 of the content, lowercase hex.
    pub sha256: String,
    /// When it was stored.
    pub created_at: DateTime<Utc>,
}

/// Why an artifact operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ArtifactError {
    /// The name is not a safe relative name (`../x`, `/abs`, …).
    #[error("invalid artifact name {name:?}: {reason}")]
    InvalidName {
        /// The name given.
        name: String,
        /// Why it is refused.
        reason: String,
    },
    /// One artifact is over [`ArtifactLimits::max_file_bytes`].
    #[error("artifact {name:?} is larger than the limit of {limit} bytes per file")]
    FileTooLarge {
        /// The artifact.
        name: String,
        /// The limit.
        limit: u64,
    },
    /// The job's artifacts together would be over [`ArtifactLimits::max_job_bytes`].
    #[error(
        "artifact {name:?} would take job {job}'s artifacts over the limit of {limit} bytes per job"
    )]
    JobTooLarge {
        /// The job.
        job: JobId,
        /// The artifact refused.
        name: String,
        /// The limit.
        limit: u64,
    },
    /// The job has [`ArtifactLimits::max_files`] artifacts already.
    #[error("job {job} has the most artifacts allowed ({limit}); {name:?} refused")]
    TooManyFiles {
        /// The job.
        job: JobId,
        /// The artifact refused.
        name: String,
        /// The limit.
        limit: u32,
    },
    /// The content does not have the checksum or size the uploader announced.
    #[error("artifact {name:?}: {what} mismatch (announced {expected}, received {actual})")]
    Mismatch {
        /// The artifact.
        name: String,
        /// `sha256` or `size`.
        what: &'static str,
        /// What the uploader announced.
        expected: String,
        /// What arrived.
        actual: String,
    },
    /// No such artifact.
    #[error("job {job} has no artifact {name:?}")]
    NotFound {
        /// The job.
        job: JobId,
        /// The name asked for.
        name: String,
    },
    /// The upload stream failed (the uploader went away).
    #[error("artifact upload interrupted: {0}")]
    Interrupted(String),
    /// The storage failed.
    #[error("artifact storage: {0}")]
    Io(#[from] std::io::Error),
}

impl ArtifactError {
    /// Whether the caller's input is at fault (a 400 / InvalidArgument), as
    /// opposed to a limit, a missing artifact or a storage failure.
    #[must_use]
    pub fn is_invalid_input(&self) -> bool {
        matches!(self, Self::InvalidName { .. } | Self::Mismatch { .. })
    }

    /// Whether a limit refused it.
    #[must_use]
    pub fn is_limit(&self) -> bool {
        matches!(
            self,
            Self::FileTooLarge { .. } | Self::JobTooLarge { .. } | Self::TooManyFiles { .. }
        )
    }
}

/// Content of an artifact, in chunks.
pub type ArtifactStream<'a> = BoxStream<'a, Result<Bytes, ArtifactError>>;

/// What the uploader says about an artifact before sending it; checked on arrival.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Announced {
    /// Size in bytes, when known.
    pub size: Option<u64>,
    /// SHA-256, lowercase hex, when known.
    pub sha256: Option<String>,
}

impl Announced {
    /// Announces both size and checksum.
    #[must_use]
    pub fn new(size: u64, sha256: impl Into<String>) -> Self {
        Self {
            size: Some(size),
            sha256: Some(sha256.into()),
        }
    }
}

/// Where artifacts are kept. Implementations check names with
/// [`names::check_name`] and enforce their [`ArtifactLimits`].
#[async_trait::async_trait]
pub trait ArtifactStore: Send + Sync + std::fmt::Debug {
    /// The limits enforced.
    fn limits(&self) -> ArtifactLimits;

    /// Stores (or replaces) artifact `name` of `job`, reading `data` to its end.
    /// Nothing is kept when it fails (limit, mismatch, interrupted stream).
    async fn put(
        &self,
        job: JobId,
        name: &str,
        announced: Announced,
        data: ArtifactStream<'_>,
    ) -> Result<ArtifactMeta, ArtifactError>;

    /// The artifacts of `job`, by name (empty when it has none).
    async fn list(&self, job: JobId) -> Result<Vec<ArtifactMeta>, ArtifactError>;

    /// One artifact and its content.
    async fn open(
        &self,
        job: JobId,
        name: &str,
    ) -> Result<(ArtifactMeta, ArtifactStream<'static>), ArtifactError>;

    /// Deletes every artifact of `job`; returns how many there were.
    async fn delete_job(&self, job: JobId) -> Result<u64, ArtifactError>;

    /// The jobs that have artifacts (for retention sweeps).
    async fn jobs(&self) -> Result<Vec<JobId>, ArtifactError>;
}
