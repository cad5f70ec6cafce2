//! Test kits for implementers (feature `testing`):
//!
//! - [`stores`]: the store conformance suite, run against the in-memory
//!   stores here and against every other backend (e.g. Postgres) in its crate.
//! - [`provider`]: the provider conformance kit, run against every
//!   [`crate::provider::WorkerProvider`] with real workers.
//!
//! Both panic on the first deviation with a message naming the case, so they
//! are meant to be called from tests.

pub mod audit;
#[cfg(feature = "server")]
pub mod fairness;
pub mod provider;
pub mod reported_state;
pub mod scheduling;
pub mod stores;
pub mod templates;
