//! Scheduler benches: one placement decision over 1,000 workers, and ordering
//! 10,000 queued jobs.

use std::hint::black_box;
use std::time::Duration;

use chrono::{TimeDelta, Utc};
use criterion::{Criterion, criterion_main};
use hodei_core::scheduler::{
    ProviderView, QueueView, SchedulingSnapshot, Strategy, WorkerResources, WorkerView, decide,
    order_queue,
};
use hodei_core::{
    CommandType, JobId, JobSpec, ProviderCapabilities, ProviderId, WorkerId, WorkerState,
};

fn snapshot(workers: usize) -> SchedulingSnapshot {
    let providers: Vec<ProviderView> = (0..8u32)
        .map(|i| {
            ProviderView::new(
                ProviderId::new(),
                format!("p{i}"),
                ProviderCapabilities::default(),
            )
            .with_workers(workers as u32 / 8, workers as u32)
            .with_cost_per_hour(f64::from(i) * 0.1 + 0.05)
            .with_estimated_startup(Duration::from_millis(100 * i as u64 + 50))
        })
        .collect();
    let workers = (0..workers)
        .map(|i| {
            let p = &providers[i % providers.len()];
            let state = if i % 3 == 0 {
                WorkerState::Ready
            } else {
                WorkerState::Busy
            };
            WorkerView::new(WorkerId::new(), p.id, state, (i % 4) as u32).with_resources(
                WorkerResources::new(0.5 + (i % 8) as f64 * 0.5, 256 * (1 + (i % 16) as u64)),
            )
        })
        .collect();
    SchedulingSnapshot::new(workers, providers)
}

fn bench_decide(c: &mut Criterion) {
    let snap = snapshot(1_000);
    let mut spec = JobSpec::new("bench", CommandType::shell("true", [""; 0]));
    spec.resources.cpu_cores = 2.0;
    spec.resources.memory_mb = 2048;
    let mut group = c.benchmark_group("scheduler/decide_1000_workers");
    for strategy in Strategy::ALL {
        group.bench_function(strategy.as_str(), |b| {
            b.iter(|| decide(black_box(strategy), black_box(&spec), black_box(&snap)));
        });
    }
    group.finish();
}

fn bench_order(c: &mut Criterion) {
    let now = Utc::now();
    let jobs: Vec<QueueView> = (0..10_000)
        .map(|i: i64| {
            QueueView::new(
                JobId::new(),
                ((i * 7919) % 2001 - 1000) as i32,
                now - TimeDelta::milliseconds((i * 104_729) % 3_600_000),
            )
        })
        .collect();
    let mut group = c.benchmark_group("scheduler/order_10000_jobs");
    for strategy in [Strategy::Fifo, Strategy::Priority] {
        group.bench_function(strategy.as_str(), |b| {
            b.iter(|| order_queue(black_box(strategy), black_box(&jobs), now));
        });
    }
    group.finish();
}

// The macro generates an undocumented `pub fn`.
#[allow(missing_docs)]
mod group {
    use super::{bench_decide, bench_order};
    criterion::criterion_group!(benches, bench_decide, bench_order);
}
use group::benches;
criterion_main!(benches);
