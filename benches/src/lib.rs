//! Shared helpers for the Hodei benchmarks.
