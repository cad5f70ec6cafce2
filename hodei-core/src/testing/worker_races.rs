//! Many concurrent changes to one worker through two control-plane replicas
//! on any [`Stores`] bundle: every change is kept (the same scenario runs on
//! memory and Postgres).
//!
//! The registry is wrapped so that every read of a worker yields to the other
//! tasks before the reader goes on: read-modify-writes of the same worker
//! really interleave, even on the in-memory store, and a registry that let a
//! stale copy overwrite a newer one would lose assignments or releases here.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use futures::future::join_all;

use crate::control::ControlPlane;
use crate::domain::ids::{JobId, ProviderId, WorkerId};
use crate::domain::job::{AttemptResult, JobState};
use crate::domain::spec::{CommandType, JobSpec};
use crate::domain::worker::{Worker, WorkerHandle, WorkerState};
use crate::domain::worker_protocol::{Heartbeat, WorkerReport};
use crate::domain::worker_stats::WorkerStats;
use crate::store::{StoreError, Stores, WorkerRegistry};

/// What [`concurrent_worker_changes_are_kept`] saw.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct WorkerRaceReport {
    /// Worker updates the registry refused as stale (and the control plane
    /// applied again to a fresh copy). Zero means nothing raced.
    pub conflicts: u64,
}

/// A registry that yields after every `get`, so that concurrent
/// read-modify-writes interleave, and counts refused (stale) updates.
struct Interleaving {
    inner: Arc<dyn WorkerRegistry>,
    conflicts: AtomicU64,
}

#[async_trait]
impl WorkerRegistry for Interleaving {
    async fn register(&self, worker: &Worker) -> Result<Worker, StoreError> {
        self.inner.register(worker).await
    }
    async fn get(&self, id: WorkerId) -> Result<Option<Worker>, StoreError> {
        let w = self.inner.get(id).await;
        tokio::task::yield_now().await;
        w
    }
    async fn update(&self, worker: &Worker) -> Result<Worker, StoreError> {
        let r = self.inner.update(worker).await;
        if matches!(r, Err(StoreError::Conflict { .. })) {
            self.conflicts.fetch_add(1, Ordering::Relaxed);
        }
        r
    }
    async fn list(&self) -> Result<Vec<Worker>, StoreError> {
        self.inner.list().await
    }
    async fn count_by_state(&self) -> Result<BTreeMap<WorkerState, u64>, StoreError> {
        self.inner.count_by_state().await
    }
    async fn count_alive_by_provider(&self) -> Result<BTreeMap<ProviderId, u32>, StoreError> {
        self.inner.count_alive_by_provider().await
    }
    async fn touch(
        &self,
        id: WorkerId,
        at: DateTime<Utc>,
        stats: Option<&WorkerStats>,
    ) -> Result<Option<Vec<JobId>>, StoreError> {
        self.inner.touch(id, at, stats).await
    }
    async fn remove(&self, id: WorkerId) -> Result<bool, StoreError> {
        self.inner.remove(id).await
    }
    async fn set_session(&self, id: WorkerId, token_hash: &str) -> Result<(), StoreError> {
        self.inner.set_session(id, token_hash).await
    }
    async fn worker_for_session(&self, token_hash: &str) -> Result<Option<WorkerId>, StoreError> {
        self.inner.worker_for_session(token_hash).await
    }
}

#[track_caller]
fn ok<T, E: std::fmt::Debug>(r: Result<T, E>, what: &str) -> T {
    match r {
        Ok(v) => v,
        Err(e) => panic!("worker races: {what}: unexpected error {e:?}"),
    }
}

/// One worker taking `jobs` jobs at once: replica A (its stream is there)
/// assigns them all concurrently while heartbeats arrive; then the results
/// come in concurrently through replicas A and B while B drains the worker.
/// Panics unless every assignment and every release is kept: the worker ends
/// `Draining` with no job, having run `jobs`.
pub async fn concurrent_worker_changes_are_kept(stores: Stores, jobs: usize) -> WorkerRaceReport {
    let c = "worker races";
    let registry = Arc::new(Interleaving {
        inner: stores.workers.clone(),
        conflicts: AtomicU64::new(0),
    });
    let mut stores = stores;
    stores.workers = registry.clone();
    let a = ControlPlane::builder().stores(stores.clone()).build();
    let b = ControlPlane::builder().stores(stores.clone()).build();

    let provider = ProviderId::new();
    let slots = u32::try_from(jobs).unwrap_or(u32::MAX);
    let mut w = ok(
        stores
            .workers
            .register(&Worker::new(WorkerId::new(), provider).with_limits(slots, None))
            .await,
        c,
    );
    let worker_id = w.id();
    ok(w.created(WorkerHandle::new(worker_id, provider, "race")), c);
    ok(stores.workers.update(&w).await, c);
    let mut stream = ok(a.open_worker_stream(worker_id).await, c);
    // The agent's side: take every command, so sends never wait.
    let agent = tokio::spawn(async move { while stream.outbound.recv().await.is_some() {} });

    let mut ids = Vec::with_capacity(jobs);
    for i in 0..jobs {
        let spec = JobSpec::new(format!("race-{i}"), CommandType::shell("true", [""; 0]));
        ids.push(ok(a.create_job(spec, None).await, c).id());
    }
    let heartbeats = |cp: &ControlPlane| {
        let cp = cp.clone();
        async move {
            for _ in 0..jobs {
                let hb = WorkerReport::Heartbeat(Heartbeat::default());
                ok(cp.handle_worker_report(worker_id, hb).await, "heartbeat");
                tokio::task::yield_now().await;
            }
        }
    };

    // Every job assigned at once.
    let assigned = join_all(ids.iter().map(|&id| a.assign_job_to(id, worker_id)));
    let (assigned, ()) = tokio::join!(assigned, heartbeats(&a));
    for job in assigned {
        let job = ok(job, "assign");
        assert_eq!(
            job.state(),
            JobState::Scheduled,
            "{c}: {} scheduled",
            job.id()
        );
        assert_eq!(job.worker_id(), Some(worker_id), "{c}: on the worker");
    }
    let got = ok(stores.workers.get(worker_id).await, c).unwrap_or_else(|| panic!("{c}: gone"));
    let mut on_worker = got.current_jobs().to_vec();
    on_worker.sort();
    let mut expected = ids.clone();
    expected.sort();
    assert_eq!(on_worker, expected, "{c}: every assignment kept");
    assert_eq!(got.jobs_run() as usize, jobs, "{c}: jobs run counted");
    assert_eq!(got.state(), WorkerState::Busy, "{c}: busy");

    // Every result at once, through both replicas, while B drains it.
    let finished = join_all(ids.iter().enumerate().map(|(i, &id)| {
        let cp = if i % 2 == 0 { a.clone() } else { b.clone() };
        async move {
            cp.job_finished(worker_id, id, 1, AttemptResult::exited(0))
                .await
        }
    }));
    let (finished, drained, ()) = tokio::join!(finished, b.drain_worker(worker_id), heartbeats(&b));
    for job in finished {
        assert_eq!(ok(job, "finish").state(), JobState::Succeeded, "{c}: done");
    }
    ok(drained, "drain");
    let got = ok(stores.workers.get(worker_id).await, c).unwrap_or_else(|| panic!("{c}: gone"));
    assert_eq!(
        got.current_jobs(),
        &[] as &[JobId],
        "{c}: every release kept"
    );
    assert_eq!(got.state(), WorkerState::Draining, "{c}: the drain kept");
    assert_eq!(got.jobs_run() as usize, jobs, "{c}: jobs run kept");
    agent.abort();
    WorkerRaceReport {
        conflicts: registry.conflicts.load(Ordering::Relaxed),
    }
}
