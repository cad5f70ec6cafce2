//! Shared helpers for the Hodei benchmarks.
//!
//! [`load`] holds the pieces of the end-to-end load tool (`hodei-load`): starting the
//! real release `hodei-server` on free ports, reading `/proc`, the raw baselines every
//! figure is compared with, percentile statistics and the result tables.
//!
//! [`chaos`] holds the fault-injection suite (`hodei-chaos`): its rounds, faults,
//! recorded history and invariant checks.

pub mod chaos;
pub mod load;
pub mod sim;
