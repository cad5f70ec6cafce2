//! The in-memory metrics backend behind `MetricsService`: recent resource
//! samples per worker, from heartbeats and stats messages.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use chrono::{DateTime, Utc};
use tokio::sync::broadcast;

use crate::domain::ids::WorkerId;
use crate::provider::ResourceUsage;

/// Samples kept per worker.
const SAMPLES_PER_WORKER: usize = 720;

/// Aggregates over a window.
#[derive(Debug, Clone, Default, PartialEq)]
#[non_exhaustive]
pub struct MetricsSummary {
    /// Samples in the window.
    pub samples: u64,
    /// Average CPU percent.
    pub avg_cpu_percent: f64,
    /// Max CPU percent.
    pub max_cpu_percent: f64,
    /// Average memory.
    pub avg_memory_bytes: u64,
    /// Max memory.
    pub max_memory_bytes: u64,
}

/// Recent samples of one worker, oldest first.
type Samples = VecDeque<(DateTime<Utc>, ResourceUsage)>;

/// Keeps recent samples in memory and streams new ones.
#[derive(Debug)]
pub struct MetricsBackend {
    samples: Mutex<HashMap<WorkerId, Samples>>,
    live: broadcast::Sender<(WorkerId, DateTime<Utc>, ResourceUsage)>,
}

impl Default for MetricsBackend {
    fn default() -> Self {
        Self {
            samples: Mutex::new(HashMap::new()),
            live: broadcast::channel(1024).0,
        }
    }
}

impl MetricsBackend {
    /// Records a sample.
    pub fn record(&self, worker: WorkerId, usage: ResourceUsage) {
        let now = Utc::now();
        {
            let mut s = self
                .samples
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let q = s.entry(worker).or_default();
            if q.len() == SAMPLES_PER_WORKER {
                q.pop_front();
            }
            q.push_back((now, usage.clone()));
        }
        let _ = self.live.send((worker, now, usage));
    }

    /// New samples from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<(WorkerId, DateTime<Utc>, ResourceUsage)> {
        self.live.subscribe()
    }

    /// Samples of one worker (or all) in a time range.
    #[must_use]
    pub fn series(
        &self,
        worker: Option<WorkerId>,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Vec<(WorkerId, DateTime<Utc>, ResourceUsage)> {
        let s = self
            .samples
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut out: Vec<_> = s
            .iter()
            .filter(|(w, _)| worker.is_none_or(|x| x == **w))
            .flat_map(|(w, q)| {
                q.iter()
                    .filter(|(t, _)| *t >= from && *t <= to)
                    .map(|(t, u)| (*w, *t, u.clone()))
            })
            .collect();
        out.sort_by_key(|(_, t, _)| *t);
        out
    }

    /// Aggregates over the last `window`.
    #[must_use]
    pub fn summary(&self, worker: Option<WorkerId>, window: chrono::Duration) -> MetricsSummary {
        let now = Utc::now();
        let series = self.series(worker, now - window, now);
        if series.is_empty() {
            return MetricsSummary::default();
        }
        let n = series.len() as f64;
        let cpu: Vec<f64> = series.iter().map(|(_, _, u)| u.cpu_percent).collect();
        let mem: Vec<u64> = series.iter().map(|(_, _, u)| u.memory_bytes).collect();
        MetricsSummary {
            samples: series.len() as u64,
            avg_cpu_percent: cpu.iter().sum::<f64>() / n,
            max_cpu_percent: cpu.iter().copied().fold(0.0, f64::max),
            avg_memory_bytes: (mem.iter().map(|m| *m as f64).sum::<f64>() / n) as u64,
            max_memory_bytes: mem.iter().copied().max().unwrap_or(0),
        }
    }
}
