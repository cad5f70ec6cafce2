//! Test kits for implementers (feature `testing`):
//!
//! - [`stores`]: the store conformance suite, run against the in-memory
//!   stores here and against every other backend (e.g. Postgres) in its crate.
//! - [`queue_transactions`]: the conformance of a store's queue transactions (part of the
//!   store suite).
//! - [`provider`]: the provider conformance kit, run against every
//!   [`crate::provider::WorkerProvider`] with real workers.
//! - [`require`]: the one rule for a missing outside dependency (skip
//!   loudly, or fail under `CI=true`).
//! - [`HandOffProvider`]: a provider that creates nothing and hands each
//!   worker spec to the test, which plays the agent ([`PlayedAgent`], with
//!   `server`) or starts a real one.
//! - [`TestServer`] (with `server`): a control plane's real gRPC services and
//!   REST API on free loopback ports.
//!
//! The kits panic on the first deviation with a message naming the case, so
//! they are meant to be called from tests.

pub mod audit;
#[cfg(feature = "server")]
pub mod fairness;
pub mod hand_off;
pub mod provider;
pub mod queue_transactions;
pub mod reported_state;
pub mod require;
pub mod scheduling;
pub mod stores;
pub mod templates;
#[cfg(feature = "server")]
pub mod test_server;
#[cfg(feature = "server")]
pub mod worker_races;

pub use hand_off::{HandOffProvider, HandOffProviderBuilder};
#[cfg(feature = "server")]
pub use hand_off::{PlayedAgent, PlayedAgentError};
#[cfg(feature = "server")]
pub use test_server::{TestListeners, TestServer, TestServerError};
