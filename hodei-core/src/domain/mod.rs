//! The domain model: plain Rust, no I/O.

pub mod agent_env;
pub mod concurrency;
pub mod error;
pub mod ids;
pub mod job;
pub mod logs;
pub mod pricing;
pub mod progress;
pub mod provider;
pub mod spec;
pub mod template;
pub mod worker;
pub mod worker_protocol;
pub mod worker_stats;
