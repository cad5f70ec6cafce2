//! Domain errors: what went wrong, with the ids and states a caller needs.

use crate::domain::ids::{JobId, ProviderId, WorkerId};
use crate::domain::spec::ValidationErrors;

/// Errors of the domain model and the use cases built on it.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum DomainError {
    /// No job with this id.
    #[error("job {0} not found")]
    JobNotFound(JobId),
    /// No worker with this id.
    #[error("worker {0} not found")]
    WorkerNotFound(WorkerId),
    /// No provider with this id or name.
    #[error("provider {0} not found")]
    ProviderNotFound(String),
    /// The state machine has no such transition.
    #[error("invalid state transition for {entity}: {from} -> {to}")]
    InvalidStateTransition {
        /// `job`, `worker` or `provider`.
        entity: &'static str,
        /// Current state.
        from: String,
        /// Requested state.
        to: String,
    },
    /// The provider is not healthy enough to take work.
    #[error("provider {0} is unhealthy")]
    ProviderUnhealthy(ProviderId),
    /// The job has used all its attempts.
    #[error("job {job} has used all {max_attempts} attempts")]
    MaxAttemptsExceeded {
        /// The job.
        job: JobId,
        /// Its limit.
        max_attempts: u32,
    },
    /// The job spec is invalid.
    #[error(transparent)]
    Validation(#[from] ValidationErrors),
    /// A store refused a stale update (optimistic concurrency).
    #[error("{entity} {id} was modified concurrently (expected version {expected})")]
    ConcurrentModification {
        /// `job`, `worker`, …
        entity: &'static str,
        /// Its id.
        id: String,
        /// The version the caller held.
        expected: u64,
    },
    /// The action needs a different attempt of the job than the one given.
    #[error("job {job}: attempt {given} is not the current attempt {current}")]
    StaleAttempt {
        /// The job.
        job: JobId,
        /// The attempt the caller named.
        given: u32,
        /// The job's current attempt.
        current: u32,
    },
    /// The entity already exists.
    #[error("{entity} {id} already exists")]
    AlreadyExists {
        /// `job`, `worker`, `provider`.
        entity: &'static str,
        /// Its id or name.
        id: String,
    },
}

/// Errors a worker provider returns. Each says whether trying again may help.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum ProviderError {
    /// The worker does not exist (anymore) on this provider.
    #[error("worker {0} not found on provider")]
    WorkerNotFound(WorkerId),
    /// The image the worker needs is missing; `hint` says how to build it.
    #[error("image {image} not found: {hint}")]
    ImageNotFound {
        /// Image reference.
        image: String,
        /// What to do about it.
        hint: String,
    },
    /// The provider's backend cannot be reached right now.
    #[error("provider unavailable: {0}")]
    Unavailable(String),
    /// The provider is out of capacity or resources.
    #[error("out of resources: {0}")]
    ResourceExhausted(String),
    /// The provider's configuration is wrong.
    #[error("invalid provider configuration: {0}")]
    InvalidConfig(String),
    /// The provider cannot run this job at all.
    #[error("not eligible: {0}")]
    NotEligible(String),
    /// The operation timed out.
    #[error("timed out: {0}")]
    Timeout(String),
    /// Anything else, with the backend's message.
    #[error("provider error: {0}")]
    Internal(String),
    /// The provider does not offer this optional capability (it implements
    /// only the required traits, or not this one).
    #[error("the provider does not offer {capability}")]
    Unsupported {
        /// What was asked for.
        capability: OptionalCapability,
    },
}

/// The optional capabilities of a worker provider: the ones a provider may
/// leave out, each with a documented default (see `hodei_core::provider`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum OptionalCapability {
    /// A cost estimate (default: free, no start-up estimate).
    Cost,
    /// An own eligibility check (default: from the declared capabilities).
    Eligibility,
    /// The worker's own output (default: none, [`ProviderError::Unsupported`]).
    Logs,
    /// A worker's resource usage (default: none, [`ProviderError::Unsupported`]).
    Metrics,
}

impl std::fmt::Display for OptionalCapability {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Cost => "cost estimates",
            Self::Eligibility => "eligibility checks",
            Self::Logs => "worker logs",
            Self::Metrics => "worker metrics",
        })
    }
}

impl ProviderError {
    /// Whether the same call may succeed later (the job should stay queued).
    #[must_use]
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            Self::Unavailable(_)
                | Self::ResourceExhausted(_)
                | Self::Timeout(_)
                | Self::Internal(_)
        )
    }
}
