//! Building blocks of the `hodei-chaos` fault-injection suite.
//!
//! The suite drives the real `hodei-server` and `hodei-worker` binaries on a real
//! Postgres, injects one kind of fault per round at random (seeded) points, records
//! what it observes (submissions, state changes, cancellations, one marker line per
//! execution written by the jobs themselves, logs) and checks invariants on that
//! history: no job lost, none run again after it succeeded or after its cancel was
//! accepted, logs complete and in order, no worker process left behind, no secret in
//! any log or response.

pub mod api;
pub mod faults;
pub mod history;
pub mod invariants;
pub mod jobs;
pub mod markers;
pub mod netns;
pub mod postgres;
pub mod procs;
pub mod replica;
pub mod report;
pub mod round;

use std::time::Duration;

/// Everything that can stop a chaos run (as opposed to an invariant it finds violated,
/// which is a result, not an error).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ChaosError {
    /// A file or process operation failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// An external command (`pg_ctl`, `ip`, …) failed.
    #[error("`{command}` failed: {output}")]
    Command {
        /// The command line.
        command: String,
        /// What it printed.
        output: String,
    },
    /// A database statement failed.
    #[error("database: {0}")]
    Database(#[from] hodei_store_postgres::sqlx::Error),
    /// The gRPC channel could not be set up.
    #[error("gRPC channel: {0}")]
    Transport(#[from] tonic::transport::Error),
    /// A typed client could not be set up.
    #[error("client: {0}")]
    Client(#[from] hodei_core::client::ClientError),
    /// A required binary or facility is missing.
    #[error("{0}")]
    Missing(String),
    /// Something did not happen in time.
    #[error("timed out after {after:?}: {what}")]
    Timeout {
        /// What was awaited.
        what: String,
        /// How long it was awaited.
        after: Duration,
    },
}

impl ChaosError {
    /// An [`ChaosError::Io`] with context.
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Self::Io {
            context: context.into(),
            source,
        }
    }
}

/// Milliseconds since the Unix epoch: the one clock the tool, the jobs' markers
/// (`date +%s%N`) and the server's timestamps share.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}
