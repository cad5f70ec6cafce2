//! Read-modify-write of one worker with optimistic concurrency: the registry
//! refuses a stale copy ([`StoreError::Conflict`]), so the change is applied
//! again to a fresh one. Replaces a process-wide lock, which could not
//! protect a worker from another replica anyway.

use super::{ControlError, ControlPlane, ControlResult};
use crate::domain::ids::WorkerId;
use crate::domain::worker::Worker;
use crate::store::StoreError;

/// How many times a change is applied before giving up. Every conflict means
/// another writer's change went through, so with fewer concurrent writers of
/// one worker than this the change always lands.
const MAX_WORKER_UPDATE_ATTEMPTS: usize = 16;

impl ControlPlane {
    /// Loads the worker, applies `change` and stores it; on a conflict
    /// reloads and applies `change` again. Returns the worker as stored and
    /// what `change` returned, or `None` when the worker does not exist.
    ///
    /// `change` may run several times, so it only changes the worker and
    /// returns data: anything else (sending commands, destroying, metrics,
    /// audit) is the caller's, once, after this returns. A worker `change`
    /// leaves as it was is not written. An error from `change` is returned
    /// as it is and nothing is stored.
    pub(super) async fn update_worker<T>(
        &self,
        worker_id: WorkerId,
        change: impl FnMut(&mut Worker) -> ControlResult<T>,
    ) -> ControlResult<Option<(Worker, T)>> {
        self.update_worker_from(worker_id, None, change).await
    }

    /// [`Self::update_worker`], first applied to `known`, a copy the caller
    /// read beside other work (the dispatch path reads the worker while it
    /// claims the queue entry). A stale copy costs a conflict and a fresh
    /// read, never a lost write; a heartbeat since does not make it stale
    /// (it bumps no version, and the store keeps the later heartbeat).
    pub(super) async fn update_worker_from<T>(
        &self,
        worker_id: WorkerId,
        mut known: Option<Worker>,
        mut change: impl FnMut(&mut Worker) -> ControlResult<T>,
    ) -> ControlResult<Option<(Worker, T)>> {
        let workers = &self.inner.stores.workers;
        for _ in 0..MAX_WORKER_UPDATE_ATTEMPTS {
            // Only the store's acceptance of a write vouches for a known
            // copy: a change it refuses or leaves undone is tried again on a
            // fresh read, as if the copy had never been given.
            let (mut w, fresh) = match known.take().filter(|w| w.id() == worker_id) {
                Some(w) => (w, false),
                None => match workers.get(worker_id).await? {
                    Some(w) => (w, true),
                    None => return Ok(None),
                },
            };
            let before = w.clone();
            let out = match change(&mut w) {
                Ok(out) => out,
                Err(e) if fresh => return Err(e),
                Err(_) => continue,
            };
            if w == before {
                if fresh {
                    return Ok(Some((w, out)));
                }
                continue;
            }
            match workers.update(&w).await {
                Ok(stored) => {
                    // Keep this replica's view of it current.
                    self.inner.sessions.observe(&stored);
                    return Ok(Some((stored, out)));
                }
                Err(StoreError::Conflict { .. }) => tokio::task::yield_now().await,
                Err(StoreError::NotFound { .. }) => return Ok(None),
                Err(e) => return Err(e.into()),
            }
        }
        Err(ControlError::Unavailable(format!(
            "worker {worker_id}: too many concurrent updates"
        )))
    }

    /// [`ControlPlane::update_worker`] of a worker that must exist
    /// (`NotFound` otherwise).
    pub(super) async fn update_existing_worker<T>(
        &self,
        worker_id: WorkerId,
        change: impl FnMut(&mut Worker) -> ControlResult<T>,
    ) -> ControlResult<(Worker, T)> {
        self.update_worker(worker_id, change)
            .await?
            .ok_or_else(|| ControlError::NotFound(format!("worker {worker_id}")))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};

    use async_trait::async_trait;
    use chrono::{DateTime, Utc};

    use super::*;
    use crate::domain::ids::{JobId, ProviderId};
    use crate::domain::worker::WorkerState;
    use crate::domain::worker_stats::WorkerStats;
    use crate::store::memory::InMemoryWorkerRegistry;
    use crate::store::{Stores, WorkerRegistry};

    /// A registry where another writer always got there first: every read
    /// hands out a copy one version behind, and counts the updates tried.
    struct AlwaysStale {
        inner: InMemoryWorkerRegistry,
        updates: AtomicU64,
    }

    #[async_trait]
    impl WorkerRegistry for AlwaysStale {
        async fn register(&self, worker: &Worker) -> Result<Worker, StoreError> {
            self.inner.register(worker).await
        }
        async fn get(&self, id: WorkerId) -> Result<Option<Worker>, StoreError> {
            Ok(self.inner.get(id).await?.map(|mut w| {
                w.set_version(w.version() - 1);
                w
            }))
        }
        async fn update(&self, worker: &Worker) -> Result<Worker, StoreError> {
            self.updates.fetch_add(1, Ordering::Relaxed);
            self.inner.update(worker).await
        }
        async fn list(&self) -> Result<Vec<Worker>, StoreError> {
            self.inner.list().await
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
        async fn worker_for_session(
            &self,
            token_hash: &str,
        ) -> Result<Option<WorkerId>, StoreError> {
            self.inner.worker_for_session(token_hash).await
        }
    }

    fn control_plane(workers: Arc<dyn WorkerRegistry>) -> ControlPlane {
        let mut stores = Stores::in_memory();
        stores.workers = workers;
        ControlPlane::builder().stores(stores).build()
    }

    #[tokio::test]
    async fn a_change_is_stored_with_the_next_version_and_no_change_is_not_written() {
        let cp = control_plane(Arc::new(InMemoryWorkerRegistry::new()));
        let w = cp
            .inner
            .stores
            .workers
            .register(&Worker::new(WorkerId::new(), ProviderId::new()))
            .await
            .unwrap();
        let (kept, seen) = cp
            .update_existing_worker(w.id(), |w| Ok(w.state()))
            .await
            .unwrap();
        assert_eq!(seen, WorkerState::Creating);
        assert_eq!(kept.version(), 1, "nothing changed: nothing written");

        let (stored, ()) = cp
            .update_existing_worker(w.id(), |w| Ok(w.terminating()?))
            .await
            .unwrap();
        assert_eq!(stored.version(), 2);
        assert_eq!(stored.state(), WorkerState::Terminating);

        // A refused change stores nothing and its error is returned as it is.
        let err = cp
            .update_existing_worker(w.id(), |w| Ok(w.drain()?))
            .await
            .unwrap_err();
        assert!(
            matches!(err, ControlError::FailedPrecondition(_)),
            "{err:?}"
        );
        let got = cp.load_worker(w.id()).await.unwrap();
        assert_eq!((got.state(), got.version()), (WorkerState::Terminating, 2));
    }

    fn ready(id: WorkerId) -> Worker {
        let mut w = Worker::new(id, ProviderId::new());
        w.created(crate::domain::worker::WorkerHandle::new(
            w.id(),
            w.provider_id(),
            "ext",
        ))
        .unwrap();
        w.registered().unwrap();
        w
    }

    #[tokio::test]
    async fn a_stale_known_copy_costs_a_fresh_read_never_a_lost_write() {
        let cp = control_plane(Arc::new(InMemoryWorkerRegistry::new()));
        let workers = &cp.inner.stores.workers;
        let stale = workers
            .register(&ready(WorkerId::new()).with_limits(2, None))
            .await
            .unwrap();
        // Another writer takes a slot after the copy was read.
        let first = JobId::new();
        let mut w = stale.clone();
        w.assign(first).unwrap();
        workers.update(&w).await.unwrap();

        let second = JobId::new();
        let (stored, ()) = cp
            .update_worker_from(stale.id(), Some(stale), |w| Ok(w.assign(second)?))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            stored.current_jobs(),
            [first, second],
            "both assignments kept"
        );
        assert_eq!(stored.version(), 3);
    }

    #[tokio::test]
    async fn a_change_refused_on_a_known_copy_is_tried_on_a_fresh_read() {
        let cp = control_plane(Arc::new(InMemoryWorkerRegistry::new()));
        let workers = &cp.inner.stores.workers;
        let mut busy = workers.register(&ready(WorkerId::new())).await.unwrap();
        let held = JobId::new();
        busy.assign(held).unwrap();
        let busy = workers.update(&busy).await.unwrap();
        // The copy says busy, but the job has ended since.
        let mut w = busy.clone();
        w.release(held).unwrap();
        workers.update(&w).await.unwrap();

        let job = JobId::new();
        let (stored, taken) = cp
            .update_worker_from(busy.id(), Some(busy.clone()), |w| Ok(w.assign(job).is_ok()))
            .await
            .unwrap()
            .unwrap();
        assert!(taken, "the fresh record has the slot");
        assert_eq!(stored.current_jobs(), [job]);
        // An error returned by the change on a known copy is not final either.
        let err = cp
            .update_worker_from(busy.id(), Some(busy), |w| {
                if w.current_jobs().contains(&held) {
                    Err(ControlError::FailedPrecondition("stale".into()))
                } else {
                    Ok(())
                }
            })
            .await;
        assert!(err.is_ok(), "{err:?}");
    }

    #[tokio::test]
    async fn an_unknown_worker_is_none_or_not_found() {
        let cp = control_plane(Arc::new(InMemoryWorkerRegistry::new()));
        let id = WorkerId::new();
        let mut applied = false;
        let none = cp
            .update_worker(id, |_| {
                applied = true;
                Ok(())
            })
            .await
            .unwrap();
        assert!(none.is_none());
        assert!(!applied, "nothing to apply the change to");
        let err = cp.update_existing_worker(id, |_| Ok(())).await.unwrap_err();
        assert!(matches!(err, ControlError::NotFound(_)), "{err:?}");
    }

    #[tokio::test]
    async fn endless_conflicts_end_in_unavailable_naming_the_worker() {
        let registry = Arc::new(AlwaysStale {
            inner: InMemoryWorkerRegistry::new(),
            updates: AtomicU64::new(0),
        });
        let cp = control_plane(registry.clone());
        let w = registry
            .register(&Worker::new(WorkerId::new(), ProviderId::new()))
            .await
            .unwrap();
        let mut applied = 0;
        let err = cp
            .update_worker(w.id(), |w| {
                applied += 1;
                Ok(w.terminating()?)
            })
            .await
            .unwrap_err();
        match err {
            ControlError::Unavailable(m) => assert!(m.contains(&w.id().to_string()), "{m}"),
            other => panic!("{other:?}"),
        }
        assert_eq!(
            applied, MAX_WORKER_UPDATE_ATTEMPTS,
            "applied once per attempt"
        );
        assert_eq!(
            registry.updates.load(Ordering::Relaxed),
            MAX_WORKER_UPDATE_ATTEMPTS as u64
        );
        let got = registry.inner.get(w.id()).await.unwrap().unwrap();
        assert_eq!(got.state(), WorkerState::Creating, "nothing stored");
    }
}
