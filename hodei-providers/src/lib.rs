//! # hodei-providers
//!
//! Worker providers for Hodei (filled in by the provider work).
#![warn(missing_docs)]
