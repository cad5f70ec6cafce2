//! The leader's reconciliation from the store: what a crash between two
//! writes leaves half done is repaired from the stored records alone, with no
//! in-memory state of the controller that died.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use hodei_core::JobId;
use hodei_core::control::ControlPlane;
use hodei_core::store::memory::InMemoryJobQueue;
use hodei_core::store::{
    JobQueue, JobRepository, Lease, QueueCursor, QueueEntry, QueueOrder, QueuePage, StoreError,
    Stores,
};
use hodei_core::{CommandType, Job, JobSpec, JobState, ProviderId, Worker, WorkerHandle, WorkerId};

fn spec(name: &str) -> JobSpec {
    JobSpec::new(name, CommandType::shell("true", Vec::<String>::new()))
}

fn entry(job: &Job) -> QueueEntry {
    QueueEntry {
        job_id: job.id(),
        priority: job.priority(),
        enqueued_at: job.created_at(),
    }
}

fn control_plane(stores: &Stores) -> ControlPlane {
    ControlPlane::builder().stores(stores.clone()).build()
}

#[tokio::test]
async fn a_pending_job_without_a_queue_entry_is_enqueued() {
    let stores = Stores::in_memory();
    let cp = control_plane(&stores);
    // A crash between storing the job and enqueuing it.
    let job = stores.jobs.insert(&Job::new(spec("orphan"))).await.unwrap();
    let queued_job = stores.jobs.insert(&Job::new(spec("queued"))).await.unwrap();
    stores.queue.enqueue(entry(&queued_job)).await.unwrap();

    let report = cp.audit_store().await.unwrap();
    assert_eq!(report.enqueued, 1, "{report:?}");
    let queued = stores
        .queue
        .queued(&[job.id(), queued_job.id()])
        .await
        .unwrap();
    assert!(queued.contains(&job.id()) && queued.contains(&queued_job.id()));
    let again = cp.audit_store().await.unwrap();
    assert!(again.is_empty(), "nothing left to repair: {again:?}");
}

/// A queue where another replica dispatches a job just as the audit asks
/// which jobs have an entry: the job leaves `Pending` and its entry goes.
struct DispatchedDuringAudit {
    inner: InMemoryJobQueue,
    jobs: Arc<dyn JobRepository>,
    dispatch: Mutex<Option<Job>>,
}

#[async_trait]
impl JobQueue for DispatchedDuringAudit {
    async fn enqueue(&self, entry: QueueEntry) -> Result<(), StoreError> {
        self.inner.enqueue(entry).await
    }
    async fn claim(&self, limit: usize, lease_for: Duration) -> Result<Vec<Lease>, StoreError> {
        self.inner.claim(limit, lease_for).await
    }
    async fn claim_job(
        &self,
        job_id: JobId,
        lease_for: Duration,
    ) -> Result<Option<Lease>, StoreError> {
        self.inner.claim_job(job_id, lease_for).await
    }
    async fn peek(&self, limit: usize) -> Result<Vec<QueueEntry>, StoreError> {
        self.inner.peek(limit).await
    }
    async fn scan(
        &self,
        order: QueueOrder,
        after: Option<QueueCursor>,
        limit: usize,
    ) -> Result<QueuePage, StoreError> {
        self.inner.scan(order, after, limit).await
    }
    async fn complete(&self, lease: &Lease) -> Result<(), StoreError> {
        self.inner.complete(lease).await
    }
    async fn release(&self, lease: &Lease) -> Result<(), StoreError> {
        self.inner.release(lease).await
    }
    async fn renew(&self, lease: &Lease, lease_for: Duration) -> Result<Lease, StoreError> {
        self.inner.renew(lease, lease_for).await
    }
    async fn queued(&self, job_ids: &[JobId]) -> Result<HashSet<JobId>, StoreError> {
        let job = self.dispatch.lock().unwrap().take();
        if let Some(mut job) = job {
            // The other replica's dispatch: claim, bind, drop the entry.
            let lease = self
                .inner
                .claim_job(job.id(), Duration::from_secs(30))
                .await?
                .unwrap();
            job.submit_to_provider(ProviderId::new(), Some(WorkerId::new()))
                .unwrap();
            self.jobs.update(&job).await?;
            self.inner.complete(&lease).await?;
        }
        self.inner.queued(job_ids).await
    }
    async fn remove(&self, job_id: JobId) -> Result<bool, StoreError> {
        self.inner.remove(job_id).await
    }
    async fn rescue_expired(&self, now: DateTime<Utc>) -> Result<Vec<JobId>, StoreError> {
        self.inner.rescue_expired(now).await
    }
    async fn len(&self) -> Result<usize, StoreError> {
        self.inner.len().await
    }
}

/// Seen with two replicas on one Postgres (`hodei-load replicas`): the audit
/// listed a job as pending, another replica dispatched it before the audit
/// read the queue, and the audit enqueued a job that was already placed.
#[tokio::test]
async fn a_job_dispatched_while_the_audit_runs_is_not_enqueued_again() {
    let mut stores = Stores::in_memory();
    let job = stores.jobs.insert(&Job::new(spec("placed"))).await.unwrap();
    let queue = Arc::new(DispatchedDuringAudit {
        inner: InMemoryJobQueue::default(),
        jobs: stores.jobs.clone(),
        dispatch: Mutex::new(Some(job.clone())),
    });
    queue.enqueue(entry(&job)).await.unwrap();
    stores.queue = queue.clone();
    let cp = control_plane(&stores);

    let report = cp.audit_store().await.unwrap();
    assert_eq!(report.enqueued, 0, "{report:?}");
    assert!(
        queue.queued(&[job.id()]).await.unwrap().is_empty(),
        "no entry for a placed job"
    );
    assert_eq!(
        stores.jobs.get(job.id()).await.unwrap().unwrap().state(),
        JobState::Scheduled
    );
}

#[tokio::test]
async fn a_provisioning_whose_controller_died_is_given_back_when_its_lease_expires() {
    let stores = Stores::in_memory();
    let cp = control_plane(&stores);
    let provider = ProviderId::new();
    // A controller claimed the entry, moved the job to Scheduled for a worker
    // it was provisioning, and died: its lease is never renewed.
    let job = stores.jobs.insert(&Job::new(spec("half"))).await.unwrap();
    stores.queue.enqueue(entry(&job)).await.unwrap();
    let lease = stores
        .queue
        .claim_job(job.id(), Duration::from_millis(50))
        .await
        .unwrap()
        .unwrap();
    let mut scheduled = job.clone();
    scheduled.submit_to_provider(provider, None).unwrap();
    stores.jobs.update(&scheduled).await.unwrap();

    // While the lease holds, nobody touches the job.
    cp.reconcile().await.unwrap();
    let j = stores.jobs.get(job.id()).await.unwrap().unwrap();
    assert_eq!(j.state(), JobState::Scheduled, "lease still held");

    tokio::time::sleep(Duration::from_millis(80)).await;
    cp.reconcile().await.unwrap();
    let j = stores.jobs.get(job.id()).await.unwrap().unwrap();
    assert_eq!(
        j.state(),
        JobState::Pending,
        "given back after the lease expired"
    );
    assert_eq!(
        j.attempts(),
        job.attempts(),
        "the job never ran: no attempt used"
    );
    let waiting = stores.queue.peek(10).await.unwrap();
    assert!(
        waiting.iter().any(|e| e.job_id == job.id()),
        "back on the queue, unclaimed: {waiting:?}"
    );
    assert!(
        stores.queue.complete(&lease).await.is_err(),
        "the dead controller's lease is stale"
    );
}

#[tokio::test]
async fn an_unbound_scheduled_job_without_an_entry_is_given_back() {
    let stores = Stores::in_memory();
    let cp = control_plane(&stores);
    let mut job = stores.jobs.insert(&Job::new(spec("lost"))).await.unwrap();
    job.submit_to_provider(ProviderId::new(), None).unwrap();
    stores.jobs.update(&job).await.unwrap();

    let report = cp.audit_store().await.unwrap();
    assert_eq!(report.released, 1, "{report:?}");
    let j = stores.jobs.get(job.id()).await.unwrap().unwrap();
    assert_eq!(j.state(), JobState::Pending);
    assert!(
        stores
            .queue
            .queued(&[job.id()])
            .await
            .unwrap()
            .contains(&job.id())
    );
}

#[tokio::test]
async fn a_job_bound_to_a_vanished_worker_is_retried() {
    let stores = Stores::in_memory();
    let cp = control_plane(&stores);
    let gone = WorkerId::new();
    let mut job = stores.jobs.insert(&Job::new(spec("bound"))).await.unwrap();
    job.submit_to_provider(ProviderId::new(), Some(gone))
        .unwrap();
    let job = stores.jobs.update(&job).await.unwrap();

    let report = cp.audit_store().await.unwrap();
    assert_eq!(report.orphaned_attempts, 1, "{report:?}");
    let j = stores.jobs.get(job.id()).await.unwrap().unwrap();
    assert_eq!(j.state(), JobState::Pending, "retried: {:?}", j.state());
    assert_eq!(j.attempts(), 1, "the lost attempt counts");
    assert!(
        stores
            .queue
            .queued(&[job.id()])
            .await
            .unwrap()
            .contains(&job.id())
    );
}

#[tokio::test]
async fn a_worker_slot_for_a_job_it_does_not_run_is_freed_on_the_second_audit() {
    let stores = Stores::in_memory();
    let cp = control_plane(&stores);
    // A crash between reserving the worker's slot and binding the job.
    let job = stores
        .jobs
        .insert(&Job::new(spec("phantom")))
        .await
        .unwrap();
    stores.queue.enqueue(entry(&job)).await.unwrap();
    let mut w = stores
        .workers
        .register(&Worker::new(WorkerId::new(), ProviderId::new()))
        .await
        .unwrap();
    w.created(WorkerHandle::new(w.id(), w.provider_id(), "pid-1"))
        .unwrap();
    w.registered().unwrap();
    w.assign(job.id()).unwrap();
    stores.workers.update(&w).await.unwrap();

    let first = cp.audit_store().await.unwrap();
    assert_eq!(first.freed_slots, 0, "an assignment may be in flight: wait");
    let second = cp.audit_store().await.unwrap();
    assert_eq!(second.freed_slots, 1, "{second:?}");
    let w = stores.workers.get(w.id()).await.unwrap().unwrap();
    assert!(w.current_jobs().is_empty(), "slot freed");
}

/// A retired (or lost) worker's agent must stop, not reconnect until it is
/// killed: resuming its session is refused.
#[tokio::test]
async fn a_retired_worker_cannot_resume_its_session() {
    let stores = Stores::in_memory();
    let cp = control_plane(&stores);
    let w = Worker::new(WorkerId::new(), ProviderId::new());
    stores.workers.register(&w).await.unwrap();
    let otp = hodei_core::otp::generate_token();
    stores
        .otps
        .insert(
            &hodei_core::otp::hash_token(&otp),
            w.id(),
            chrono::Utc::now() + chrono::Duration::minutes(5),
        )
        .await
        .unwrap();
    let session = cp.register_worker(&otp, "", Some(w.id())).await.unwrap();
    let resumed = cp
        .register_worker("", &session.session_token, Some(w.id()))
        .await
        .unwrap();
    assert!(resumed.resumed, "a live worker resumes");

    let mut gone = stores.workers.get(w.id()).await.unwrap().unwrap();
    gone.terminating().unwrap();
    stores.workers.update(&gone).await.unwrap();
    let err = cp
        .register_worker("", &session.session_token, Some(w.id()))
        .await
        .unwrap_err();
    assert!(
        matches!(err, hodei_core::control::ControlError::Unauthenticated(_)),
        "{err:?}"
    );
    assert!(err.to_string().contains("terminating"), "{err}");
}

/// A replica that was frozen while another one found its worker lost ends
/// that worker's stream at its next heartbeat (the agent's resume is then
/// refused and it stops): no agent idles on after its jobs were given away.
#[tokio::test]
async fn a_heartbeat_from_a_worker_found_lost_elsewhere_closes_its_stream() {
    use hodei_core::domain::worker_protocol::{Heartbeat, WorkerReport};
    let stores = Stores::in_memory();
    let cp = control_plane(&stores);
    let mut w = stores
        .workers
        .register(&Worker::new(WorkerId::new(), ProviderId::new()))
        .await
        .unwrap();
    w.created(WorkerHandle::new(w.id(), w.provider_id(), "pid-2"))
        .unwrap();
    stores.workers.update(&w).await.unwrap();
    let mut stream = cp.open_worker_stream(w.id()).await.unwrap();
    let heartbeat = || WorkerReport::Heartbeat(Heartbeat::default());
    cp.handle_worker_report(w.id(), heartbeat()).await.unwrap();
    assert!(cp.is_connected(w.id()), "a live worker keeps its stream");

    // Another replica's leader found it lost and removed it.
    stores.workers.remove(w.id()).await.unwrap();
    cp.handle_worker_report(w.id(), heartbeat()).await.unwrap();
    assert!(!cp.is_connected(w.id()));
    let end = tokio::time::timeout(Duration::from_secs(5), async {
        while let Some(m) = stream.outbound.recv().await {
            drop(m);
        }
    })
    .await;
    assert!(end.is_ok(), "the outbound stream ended");
}
