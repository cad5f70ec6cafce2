//! Building blocks of the `hodei-load` end-to-end load tool.

pub mod baseline;
pub mod procfs;
pub mod replicas;
pub mod report;
pub mod scratch_db;
pub mod server;
pub mod stats;

use std::time::Duration;

/// Everything that can stop a load scenario.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LoadError {
    /// A file or process operation failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A gRPC call returned an error status.
    #[error("gRPC {call}: {status}")]
    Grpc {
        /// The RPC that failed.
        call: &'static str,
        /// The status the server answered.
        #[source]
        status: Box<tonic::Status>,
    },
    /// A call of the typed client failed.
    #[error("{call}: {source}")]
    Client {
        /// What was called.
        call: &'static str,
        /// Why it failed.
        #[source]
        source: Box<hodei_core::client::ClientError>,
    },
    /// The gRPC channel could not be set up.
    #[error("gRPC channel: {0}")]
    Transport(#[from] tonic::transport::Error),
    /// A required binary is missing.
    #[error(
        "{0} not found; build the release binaries first: \
         cargo build --release -p hodei-examples --bins (or pass --bin-dir)"
    )]
    MissingBinary(String),
    /// Something did not happen in time.
    #[error("timed out after {after:?}: {what}")]
    Timeout {
        /// What was awaited.
        what: String,
        /// How long it was awaited.
        after: Duration,
    },
    /// A correctness check of the run failed (lost log lines, failed jobs, ...).
    #[error("check failed: {0}")]
    Check(String),
}

impl LoadError {
    /// An [`LoadError::Io`] with context.
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Self::Io {
            context: context.into(),
            source,
        }
    }

    /// A [`LoadError::Client`] for `call`.
    pub fn client(call: &'static str, source: hodei_core::client::ClientError) -> Self {
        Self::Client {
            call,
            source: Box::new(source),
        }
    }

    /// A [`LoadError::Grpc`] for `call`.
    pub fn grpc(call: &'static str, status: tonic::Status) -> Self {
        Self::Grpc {
            call,
            status: Box::new(status),
        }
    }
}
