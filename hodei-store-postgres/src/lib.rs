//! # hodei-store-postgres
//!
//! Postgres implementations of the Hodei store traits (not built yet: see issue 5).
#![warn(missing_docs)]
