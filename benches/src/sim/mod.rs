//! Simulated agents: thousands of worker sessions from one process against one
//! server, to measure what the server spends per agent (`hodei-load agents`).
//!
//! - [`provider::SimProvider`] runs inside `hodei-sim-server` and hands each
//!   created worker's id and one-time token to the swarm;
//! - [`agent::run_agent`] speaks the worker protocol over its own connection:
//!   registration, the worker stream, heartbeats, no-op jobs;
//! - [`swarm::Swarm`] starts one agent per credential and counts them.

pub mod agent;
pub mod provider;
pub mod scenario;
pub mod swarm;

/// Raises this process's open-files limit to its hard limit: every simulated
/// agent holds one TCP connection, and so does the server per agent.
pub fn raise_open_files_limit() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    if let Ok((_, hard)) = getrlimit(Resource::RLIMIT_NOFILE) {
        let _ = setrlimit(Resource::RLIMIT_NOFILE, hard, hard);
    }
}

/// Quantiles of one Prometheus summary, in the unit it was recorded in.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Quantiles {
    /// Observations.
    pub count: u64,
    /// Median.
    pub p50: f64,
    /// 99th percentile.
    pub p99: f64,
    /// Largest (quantile 1).
    pub max: f64,
}

/// Reads `name`'s quantiles from Prometheus text (a summary, as
/// `metrics-exporter-prometheus` renders histograms by default).
#[must_use]
pub fn summary_quantiles(text: &str, name: &str) -> Quantiles {
    let mut q = Quantiles::default();
    for line in text.lines().filter(|l| l.starts_with(name)) {
        let Some((key, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let value: f64 = value.parse().unwrap_or(0.0);
        if key == format!("{name}_count") {
            q.count = value as u64;
        } else if key.contains("quantile=\"0.5\"") {
            q.p50 = value;
        } else if key.contains("quantile=\"0.99\"") {
            q.p99 = value;
        } else if key.contains("quantile=\"1\"") {
            q.max = value;
        }
    }
    q
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_rendered_summary() {
        let text = "# TYPE lag summary\nlag{quantile=\"0\"} 0.001\nlag{quantile=\"0.5\"} 0.002\n\
                    lag{quantile=\"0.99\"} 0.040\nlag{quantile=\"1\"} 0.090\nlag_sum 3.5\nlag_count 1200\n";
        let q = summary_quantiles(text, "lag");
        assert_eq!(q.count, 1200);
        assert!((q.p50 - 0.002).abs() < 1e-9);
        assert!((q.p99 - 0.040).abs() < 1e-9);
        assert!((q.max - 0.090).abs() < 1e-9);
    }
}
