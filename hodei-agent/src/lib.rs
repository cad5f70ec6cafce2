//! # hodei-agent
//!
//! The worker agent runtime (filled in by the agent work).
#![warn(missing_docs)]
pub mod lines;
pub mod redact;
pub mod config;
pub mod metrics;
pub mod tls;
pub mod executor;
pub mod client;
pub mod batcher;
