//! What agents report, kept by the stores: a job's progress and a worker's
//! latest resource usage round-trip through [`JobRepository`] and
//! [`WorkerRegistry`] unchanged (both live in the stored serde form, so a
//! backend that drops unknown fields would lose them). Part of
//! [`run_store_conformance`](super::stores::run_store_conformance).
//!
//! [`JobRepository`]: crate::store::JobRepository
//! [`WorkerRegistry`]: crate::store::WorkerRegistry

use std::future::Future;

use chrono::{TimeZone, Utc};

use crate::domain::ids::{ProviderId, WorkerId};
use crate::domain::job::Job;
use crate::domain::progress::JobProgress;
use crate::domain::spec::{CommandType, JobSpec};
use crate::domain::worker::Worker;
use crate::domain::worker_stats::WorkerStats;
use crate::store::Stores;

#[track_caller]
fn ok<T, E: std::fmt::Debug>(r: Result<T, E>, what: &str) -> T {
    match r {
        Ok(v) => v,
        Err(e) => panic!("store conformance: {what}: unexpected error {e:?}"),
    }
}

/// Every case. `make` returns a fresh, empty bundle of stores.
pub async fn reported_state_conformance<F, Fut>(make: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = Stores>,
{
    job_progress_round_trip(make().await).await;
    worker_stats_round_trip(make().await).await;
}

async fn job_progress_round_trip(stores: Stores) {
    let c = "reported/job-progress";
    let mut job = Job::new(JobSpec::new(
        "p",
        CommandType::shell("true", [] as [&str; 0]),
    ));
    ok(
        job.submit_to_provider(ProviderId::new(), Some(WorkerId::new())),
        c,
    );
    ok(job.mark_running(), c);
    let stored = ok(stores.jobs.insert(&job).await, c);
    let mut changed = stored.clone();
    let progress = JobProgress::new(40, "compiling crates é").expect("valid progress");
    ok(changed.record_progress(progress.clone()), c);
    ok(stores.jobs.update(&changed).await, c);
    let back = ok(stores.jobs.get(job.id()).await, c).expect("job stored");
    assert_eq!(
        back.execution_context().progress.as_ref(),
        Some(&progress),
        "{c}: progress kept"
    );
}

async fn worker_stats_round_trip(stores: Stores) {
    let c = "reported/worker-stats";
    let mut w = ok(
        stores
            .workers
            .register(&Worker::new(WorkerId::new(), ProviderId::new()))
            .await,
        c,
    );
    let at = Utc.timestamp_opt(1_800_000_000, 123_456_789).unwrap();
    let stats = WorkerStats::new(37.5, 512 << 20, 2 << 30, at).with_disk(10, 20);
    w.record_stats(stats.clone());
    ok(stores.workers.update(&w).await, c);
    let back = ok(stores.workers.get(w.id()).await, c).expect("worker stored");
    assert_eq!(back.stats(), Some(&stats), "{c}: stats kept");
    // An older sample does not replace a newer one.
    let mut again = back.clone();
    again.record_stats(WorkerStats::new(
        1.0,
        1,
        0,
        at - chrono::Duration::seconds(5),
    ));
    assert_eq!(again.stats(), Some(&stats), "{c}: older sample ignored");
}
