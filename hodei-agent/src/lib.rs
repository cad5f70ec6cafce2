//! # hodei-agent
//!
//! The worker agent runtime (filled in by the agent work).
#![warn(missing_docs)]
