//! The control plane's error, mapped once to gRPC status codes (in
//! `api::grpc`) and HTTP statuses (in `api::rest`).

use crate::domain::error::{DomainError, ProviderError};
use crate::domain::spec::ValidationErrors;
use crate::proto::convert::ConvertError;
use crate::store::StoreError;

/// What a control-plane operation can fail with.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum ControlError {
    /// The request is malformed; `field` names what.
    #[error("invalid argument {field}: {message}")]
    InvalidArgument {
        /// The offending field.
        field: String,
        /// What is wrong.
        message: String,
    },
    /// A job spec failed validation (every problem listed).
    #[error(transparent)]
    InvalidSpec(#[from] ValidationErrors),
    /// The entity does not exist.
    #[error("{0} not found")]
    NotFound(String),
    /// The state machine refuses the operation.
    #[error("{0}")]
    FailedPrecondition(String),
    /// Bad or missing credentials.
    #[error("{0}")]
    Unauthenticated(String),
    /// Authenticated, but not allowed to act on this.
    #[error("{0}")]
    PermissionDenied(String),
    /// A dependency is down (store, provider).
    #[error("{0}")]
    Unavailable(String),
    /// A limit was reached (artifact size or count).
    #[error("{0}")]
    ResourceExhausted(String),
    /// A provider refused.
    #[error(transparent)]
    Provider(#[from] ProviderError),
    /// A store failed.
    #[error(transparent)]
    Store(StoreError),
}

impl From<ConvertError> for ControlError {
    fn from(e: ConvertError) -> Self {
        ControlError::InvalidArgument {
            field: e.field,
            message: e.message,
        }
    }
}

impl From<StoreError> for ControlError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound { entity, id } => ControlError::NotFound(format!("{entity} {id}")),
            StoreError::Invalid { field, message } => {
                ControlError::InvalidArgument { field, message }
            }
            StoreError::Unavailable(m) => ControlError::Unavailable(m),
            other => ControlError::Store(other),
        }
    }
}

impl From<DomainError> for ControlError {
    fn from(e: DomainError) -> Self {
        match e {
            DomainError::JobNotFound(id) => ControlError::NotFound(format!("job {id}")),
            DomainError::WorkerNotFound(id) => ControlError::NotFound(format!("worker {id}")),
            DomainError::ProviderNotFound(p) => ControlError::NotFound(format!("provider {p}")),
            DomainError::Validation(v) => ControlError::InvalidSpec(v),
            other => ControlError::FailedPrecondition(other.to_string()),
        }
    }
}

/// Result of control-plane operations.
pub type ControlResult<T> = Result<T, ControlError>;
