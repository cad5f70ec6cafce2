//! The latest resource usage a worker's agent reported ([`WorkerStats`]):
//! what `GET /api/v1/workers` and `hodei worker list` show.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// One sample of a worker's resource usage, as its agent measured it
/// (cgroup or `/proc`, see the agent's `metrics` module).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct WorkerStats {
    /// CPU use, percent of one core (200 = two cores busy).
    pub cpu_percent: f64,
    /// Memory in use, bytes.
    pub memory_bytes: u64,
    /// Memory limit, bytes (0 = none known).
    pub memory_limit_bytes: u64,
    /// Bytes read from disk since the worker started.
    pub disk_read_bytes: u64,
    /// Bytes written to disk since the worker started.
    pub disk_write_bytes: u64,
    /// When the agent took the sample (the server's clock when the agent's
    /// is unusable).
    pub sampled_at: DateTime<Utc>,
}

impl WorkerStats {
    /// A sample taken at `sampled_at`. A negative or non-finite CPU figure
    /// (a clock step between two reads) is stored as 0.
    #[must_use]
    pub fn new(
        cpu_percent: f64,
        memory_bytes: u64,
        memory_limit_bytes: u64,
        sampled_at: DateTime<Utc>,
    ) -> Self {
        Self {
            cpu_percent: if cpu_percent.is_finite() && cpu_percent > 0.0 {
                cpu_percent
            } else {
                0.0
            },
            memory_bytes,
            memory_limit_bytes,
            disk_read_bytes: 0,
            disk_write_bytes: 0,
            sampled_at,
        }
    }

    /// Sets the disk counters.
    #[must_use]
    pub fn with_disk(mut self, read_bytes: u64, write_bytes: u64) -> Self {
        self.disk_read_bytes = read_bytes;
        self.disk_write_bytes = write_bytes;
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bad_cpu_figure_is_stored_as_zero() {
        let now = Utc::now();
        assert_eq!(WorkerStats::new(f64::NAN, 1, 0, now).cpu_percent, 0.0);
        assert_eq!(WorkerStats::new(-3.0, 1, 0, now).cpu_percent, 0.0);
        assert_eq!(WorkerStats::new(42.5, 1, 0, now).cpu_percent, 42.5);
    }
}

/// Resource usage of a worker or job.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ResourceUsage {
    /// CPU use, percent of one core.
    pub cpu_percent: f64,
    /// Memory in use.
    pub memory_bytes: u64,
    /// Memory limit (0 = none known).
    pub memory_limit_bytes: u64,
    /// Bytes read from disk.
    pub disk_read_bytes: u64,
    /// Bytes written to disk.
    pub disk_write_bytes: u64,
    /// Bytes received.
    pub net_rx_bytes: u64,
    /// Bytes sent.
    pub net_tx_bytes: u64,
}

impl WorkerStats {
    /// A reported usage sample as a worker's latest stats, stamped with the
    /// server's clock `at` (an agent's clock may be off; the order of
    /// arrival is what "latest" means).
    #[must_use]
    pub fn from_usage(u: &ResourceUsage, at: DateTime<Utc>) -> Self {
        Self::new(u.cpu_percent, u.memory_bytes, u.memory_limit_bytes, at)
            .with_disk(u.disk_read_bytes, u.disk_write_bytes)
    }
}
