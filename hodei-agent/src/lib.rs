//! # hodei-agent
//!
//! The worker agent runtime (filled in by the agent work).
#![warn(missing_docs)]
pub mod batcher;
pub mod client;
pub mod config;
pub mod executor;
pub mod lines;
pub mod metrics;
pub mod progress;
pub mod redact;
pub mod tls;
