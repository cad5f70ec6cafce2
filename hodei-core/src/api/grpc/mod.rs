//! gRPC adapters: one plain struct per service of the `hodei.v1` contract,
//! each a thin translation onto [`ControlPlane`] methods. Errors are mapped to
//! status codes in one place ([`status_from`]).

mod artifacts;
mod audit;
mod jobs;
mod logs;
mod metrics;
mod providers;
mod scheduler;
mod templates;
mod worker_agent;

pub use artifacts::{ArtifactApi, JobArtifactApi};
pub use audit::AuditApi;
pub use jobs::{JobExecutionApi, JobQueryApi};
pub use logs::LogStreamApi;
pub use metrics::MetricsApi;
pub use providers::ProviderManagementApi;
pub use scheduler::SchedulerApi;
pub use templates::TemplateApi;
pub use worker_agent::WorkerAgentApi;

use tonic::{Request, Status};

use crate::control::{ControlError, ControlPlane};
use crate::domain::error::ProviderError;
use crate::domain::ids::WorkerId;

/// Maps a control-plane error to a precise gRPC status.
#[must_use]
pub fn status_from(e: ControlError) -> Status {
    match e {
        ControlError::InvalidArgument { field, message } => {
            Status::invalid_argument(format!("{field}: {message}"))
        }
        ControlError::InvalidSpec(v) => Status::invalid_argument(v.to_string()),
        ControlError::NotFound(m) => Status::not_found(m),
        ControlError::FailedPrecondition(m) => Status::failed_precondition(m),
        ControlError::Unauthenticated(m) => Status::unauthenticated(m),
        ControlError::PermissionDenied(m) => Status::permission_denied(m),
        ControlError::Unavailable(m) => Status::unavailable(m),
        ControlError::ResourceExhausted(m) => Status::resource_exhausted(m),
        ControlError::Provider(e @ ProviderError::Unsupported { .. }) => {
            Status::unimplemented(e.to_string())
        }
        ControlError::Provider(e) => Status::unavailable(e.to_string()),
        ControlError::Store(e) => Status::internal(e.to_string()),
    }
}

/// The bearer token of a request (`authorization: Bearer <token>`), or "".
pub(crate) fn bearer<T>(req: &Request<T>) -> &str {
    req.metadata()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("")
        .trim()
}

/// The actor of a request (put there by the API-token layer), `anonymous`
/// when none.
pub(crate) fn actor_of<T>(req: &Request<T>) -> crate::control::Actor {
    req.extensions()
        .get::<crate::control::Actor>()
        .cloned()
        .unwrap_or_else(crate::control::Actor::anonymous)
}

/// The worker whose session token the request carries.
pub(crate) async fn authenticated_worker<T>(
    cp: &ControlPlane,
    req: &Request<T>,
) -> Result<WorkerId, Status> {
    cp.authenticate_worker(bearer(req))
        .await
        .map_err(status_from)
}

/// Parses a UUID field into an id, as INVALID_ARGUMENT naming the field.
pub(crate) fn parse_id<T: std::str::FromStr>(s: &str, field: &str) -> Result<T, Status> {
    s.parse()
        .map_err(|_| Status::invalid_argument(format!("{field}: {s:?} is not a valid id (UUID)")))
}
