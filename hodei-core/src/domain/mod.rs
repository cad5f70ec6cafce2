//! The domain model: plain Rust, no I/O.

pub mod error;
pub mod ids;
pub mod job;
pub mod logs;
pub mod provider;
pub mod spec;
pub mod template;
pub mod worker;
