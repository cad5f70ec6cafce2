//! [`ClientError`]: why a call of [`super::HodeiClient`] failed, decoded from
//! the gRPC status the way the server's error mapping writes it
//! (`api::grpc::status_from`).

use std::time::Duration;

use crate::domain::ids::JobId;
use crate::domain::job::JobState;
use crate::proto::convert::ConvertError;

/// Prefix of the server's message for a spec with several problems
/// (`ValidationErrors`' display).
const INVALID_SPEC_PREFIX: &str = "invalid job spec: ";

/// Why a client call failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The server could not be reached (nothing listens, TLS handshake
    /// refused, the connection broke).
    #[error("cannot reach the Hodei server at {endpoint}: {detail}")]
    Unreachable {
        /// The endpoint the client connects to.
        endpoint: String,
        /// The innermost cause.
        detail: String,
    },
    /// The client options do not make a connection (bad endpoint, bad PEM, a
    /// token that is not a header value).
    #[error("invalid client configuration: {0}")]
    InvalidConfig(String),
    /// The server refused an argument; `field` names it (`timeout_ms`,
    /// `env.1BAD`, `job_id`, `spec.command`), empty when the server named none.
    #[error("invalid {field}: {message}")]
    InvalidArgument {
        /// Dotted path of the first offending field.
        field: String,
        /// What is wrong (for a spec with several problems, the first one's
        /// message followed by the others).
        message: String,
    },
    /// No such job (or template, provider…): the server's message.
    #[error("not found: {0}")]
    NotFound(String),
    /// The server wants a (valid) API token.
    #[error("unauthenticated: {0}")]
    Unauthenticated(String),
    /// The token is valid but may not do this.
    #[error("permission denied: {0}")]
    PermissionDenied(String),
    /// The call does not fit the job's state (retrying an unfinished job…).
    #[error("failed precondition: {0}")]
    FailedPrecondition(String),
    /// [`super::HodeiClient::wait_for`] gave up.
    #[error("job {job} still {state} after {waited:?}")]
    WaitTimeout {
        /// The job.
        job: JobId,
        /// Its state when the wait ended.
        state: JobState,
        /// How long the client waited.
        waited: Duration,
    },
    /// The server's answer does not convert to the domain (a field missing
    /// or out of range): a server of another version, or a bug.
    #[error("the server sent a malformed answer: {0}")]
    Decode(#[from] ConvertError),
    /// Any other status the server answered with.
    #[error("{} ({:?})", .0.message(), .0.code())]
    Rpc(#[source] tonic::Status),
}

impl ClientError {
    /// Decodes a status from a call to `endpoint`.
    #[must_use]
    pub fn from_status(endpoint: &str, status: tonic::Status) -> Self {
        let message = status.message().to_owned();
        match status.code() {
            // Tonic reports a refused or broken connection as UNAVAILABLE
            // with the transport's words; the server's own UNAVAILABLE (a
            // provider down) says nothing of connecting.
            tonic::Code::Unavailable if is_transport_failure(&message) => Self::Unreachable {
                endpoint: endpoint.to_owned(),
                detail: message,
            },
            tonic::Code::InvalidArgument => {
                let (field, message) = split_field(&message);
                Self::InvalidArgument { field, message }
            }
            tonic::Code::NotFound => Self::NotFound(message),
            tonic::Code::Unauthenticated => Self::Unauthenticated(message),
            tonic::Code::PermissionDenied => Self::PermissionDenied(message),
            tonic::Code::FailedPrecondition => Self::FailedPrecondition(message),
            _ => Self::Rpc(status),
        }
    }

    /// The gRPC code of an error the server answered with; `None` for errors
    /// of the client's own (unreachable, configuration, decoding, waiting).
    #[must_use]
    pub fn code(&self) -> Option<tonic::Code> {
        Some(match self {
            Self::InvalidArgument { .. } => tonic::Code::InvalidArgument,
            Self::NotFound(_) => tonic::Code::NotFound,
            Self::Unauthenticated(_) => tonic::Code::Unauthenticated,
            Self::PermissionDenied(_) => tonic::Code::PermissionDenied,
            Self::FailedPrecondition(_) => tonic::Code::FailedPrecondition,
            Self::Rpc(s) => s.code(),
            _ => return None,
        })
    }

    /// The server's message for an error the server answered with (for an
    /// invalid argument, `field: message` as the server wrote it).
    #[must_use]
    pub fn server_message(&self) -> Option<String> {
        match self {
            Self::InvalidArgument { field, message } if field.is_empty() => Some(message.clone()),
            Self::InvalidArgument { field, message } => Some(format!("{field}: {message}")),
            Self::NotFound(m)
            | Self::Unauthenticated(m)
            | Self::PermissionDenied(m)
            | Self::FailedPrecondition(m) => Some(m.clone()),
            Self::Rpc(s) => Some(s.message().to_owned()),
            _ => None,
        }
    }
}

/// Whether an UNAVAILABLE message is tonic's word for a failed connection.
fn is_transport_failure(message: &str) -> bool {
    let m = message.to_ascii_lowercase();
    m.contains("connect") || m.contains("transport error")
}

/// `field: message` (the server's form, `api::grpc::status_from`), or, for a
/// whole spec, `invalid job spec: field: message; other: message`.
fn split_field(message: &str) -> (String, String) {
    let rest = message.strip_prefix(INVALID_SPEC_PREFIX).unwrap_or(message);
    match rest.split_once(": ") {
        // A field is one token: `env.1BAD`, `constraints[0].operator`.
        Some((field, msg)) if !field.is_empty() && !field.contains(char::is_whitespace) => {
            (field.to_owned(), msg.to_owned())
        }
        _ => (String::new(), message.to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invalid_arguments_name_their_field() {
        let e = ClientError::from_status(
            "http://x",
            tonic::Status::invalid_argument("job_id: \"nope\" is not a valid id (UUID)"),
        );
        assert!(
            matches!(&e, ClientError::InvalidArgument { field, .. } if field == "job_id"),
            "{e:?}"
        );
        let e = ClientError::from_status(
            "http://x",
            tonic::Status::invalid_argument(
                "invalid job spec: timeout_ms: must be positive; env.1BAD: bad name",
            ),
        );
        let ClientError::InvalidArgument { field, message } = &e else {
            panic!("{e:?}")
        };
        assert_eq!(field, "timeout_ms");
        assert_eq!(message, "must be positive; env.1BAD: bad name");
        assert_eq!(
            e.server_message().as_deref(),
            Some("timeout_ms: must be positive; env.1BAD: bad name")
        );
        let e = ClientError::from_status(
            "http://x",
            tonic::Status::invalid_argument("something is off"),
        );
        assert!(
            matches!(&e, ClientError::InvalidArgument { field, message } if field.is_empty() && message == "something is off"),
            "{e:?}"
        );
    }

    #[test]
    fn a_refused_connection_is_unreachable_but_a_busy_server_is_not() {
        let e = ClientError::from_status(
            "http://127.0.0.1:1",
            tonic::Status::unavailable("tcp connect error"),
        );
        assert!(matches!(e, ClientError::Unreachable { .. }), "{e:?}");
        let e = ClientError::from_status(
            "http://127.0.0.1:1",
            tonic::Status::unavailable("provider docker is down"),
        );
        assert!(matches!(e, ClientError::Rpc(_)), "{e:?}");
        assert_eq!(e.code(), Some(tonic::Code::Unavailable));
    }
}
