//! Conformance of [`crate::store::QueueTransactions`]: an admission and a
//! binding write the same as the steps they replace (job insert, queue
//! entry, history record; worker update, job update, history record, entry
//! delete), all of it or none of it.
//!
//! The factory returns a fresh, empty [`Stores`] bundle per case; the
//! transactions are its [`Stores::queue_transactions`]. A bundle without
//! them has nothing to check, and the suite says so.

use std::future::Future;
use std::time::Duration;

use chrono::TimeDelta;

use crate::domain::ids::{ProviderId, WorkerId};
use crate::domain::job::{Job, JobState};
use crate::domain::spec::{CommandType, JobSpec};
use crate::domain::worker::{Worker, WorkerHandle};
use crate::store::{BindOutcome, Binding, JobTransitionRecord, QueueEntry, Stores};

use super::stores::{ok, some};

/// A ready worker and a pending, queued job, both stored; the binding of
/// one to the other made on the stored copies.
async fn stored_pair(stores: &Stores, c: &str) -> (Worker, Job, Binding) {
    let provider = ProviderId::new();
    let mut w = Worker::new(WorkerId::new(), provider);
    ok(
        w.created(WorkerHandle::new(w.id(), provider, "ext-bind")),
        c,
    );
    ok(w.registered(), c);
    let worker = ok(stores.workers.register(&w).await, c);
    let job = Job::new(JobSpec::new("bind", CommandType::shell("true", [""; 0])));
    let job = ok(stores.jobs.insert(&job).await, c);
    ok(
        stores
            .queue
            .enqueue(QueueEntry {
                job_id: job.id(),
                priority: job.priority(),
                enqueued_at: job.created_at(),
            })
            .await,
        c,
    );
    let binding = binding_of(&worker, &job, c);
    (worker, job, binding)
}

/// What a dispatch binds: `worker` with `job` assigned, `job` scheduled on
/// it, and the record of that.
fn binding_of(worker: &Worker, job: &Job, c: &str) -> Binding {
    let mut w = worker.clone();
    ok(w.assign(job.id()), c);
    let mut j = job.clone();
    let t = ok(j.submit_to_provider(w.provider_id(), Some(w.id())), c);
    let record = JobTransitionRecord::new(
        j.id(),
        Some(t.from),
        t.to,
        j.updated_at(),
        j.execution_context().attempt,
    )
    .with_worker(j.worker_id());
    Binding::new(w, j, record)
}

/// Panics unless nothing of a refused binding was written: the worker and
/// the job at the versions they were read at, no history. (Each case checks
/// the queue entry.)
async fn nothing_written(stores: &Stores, worker: &Worker, job: &Job, c: &str) {
    let w = some(ok(stores.workers.get(worker.id()).await, c), c);
    assert_eq!(w.version(), worker.version(), "{c}: worker not written");
    assert!(w.current_jobs().is_empty(), "{c}: no job on the worker");
    let j = some(ok(stores.jobs.get(job.id()).await, c), c);
    assert_eq!(j.version(), job.version(), "{c}: job not written");
    assert_eq!(j.state(), JobState::Pending, "{c}: job still pending");
    assert!(
        ok(stores.job_history.history(job.id()).await, c).is_empty(),
        "{c}: no history record"
    );
}

/// Panics unless the job's queue entry is there and free.
async fn entry_free(stores: &Stores, job: &Job, c: &str) {
    assert!(
        ok(
            stores
                .queue
                .claim_job(job.id(), Duration::from_secs(30))
                .await,
            c
        )
        .is_some(),
        "{c}: the entry is there and free"
    );
}

/// Every [`crate::store::QueueTransactions`] case.
pub async fn queue_transactions_conformance<F, Fut>(make: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = Stores>,
{
    if make().await.queue_transactions.is_none() {
        eprintln!("queue transactions conformance: these stores have none; nothing to check");
        return;
    }
    admits(make().await).await;
    refuses_a_second_admission(make().await).await;
    binds_everything(make().await).await;
    refuses_a_held_entry(make().await).await;
    refuses_a_missing_entry(make().await).await;
    refuses_a_stale_worker(make().await).await;
    refuses_a_stale_job(make().await).await;
    keeps_a_later_heartbeat(make().await).await;
}

fn transactions(stores: &Stores, c: &str) -> std::sync::Arc<dyn crate::store::QueueTransactions> {
    some(stores.queue_transactions.clone(), c)
}

/// A new job, its queue entry and its creation record.
fn admission() -> (Job, QueueEntry, JobTransitionRecord) {
    let job = Job::new(JobSpec::new("admit", CommandType::shell("true", [""; 0])));
    let entry = QueueEntry {
        job_id: job.id(),
        priority: job.priority(),
        enqueued_at: super::stores::now_ms(),
    };
    let record = JobTransitionRecord::new(job.id(), None, JobState::Pending, job.updated_at(), 0);
    (job, entry, record)
}

/// An admission stores the job at version 1, queues it and records it.
async fn admits(stores: Stores) {
    let c = "queue transactions/admit";
    let (job, entry, record) = admission();
    let stored = ok(
        transactions(&stores, c).admit(&job, &entry, &record).await,
        c,
    );
    assert_eq!(stored.version(), 1, "{c}: version 1");
    assert_eq!(stored.id(), job.id(), "{c}: the job");
    let read = some(ok(stores.jobs.get(job.id()).await, c), c);
    assert_eq!(read.version(), 1, "{c}: stored");
    assert_eq!(read.state(), JobState::Pending, "{c}: pending");
    let queued = ok(stores.queue.peek(10).await, c);
    assert_eq!(queued.len(), 1, "{c}: one entry");
    assert_eq!(queued[0].job_id, job.id(), "{c}: its entry");
    assert_eq!(queued[0].enqueued_at, entry.enqueued_at, "{c}: enqueued at");
    let history = ok(stores.job_history.history(job.id()).await, c);
    assert_eq!(history.len(), 1, "{c}: one record");
    assert_eq!(history[0].from, None, "{c}: creation");
    assert_eq!(history[0].to, JobState::Pending, "{c}: to pending");
}

/// A job stored already is refused as `insert` refuses it, and nothing
/// more is written.
async fn refuses_a_second_admission(stores: Stores) {
    let c = "queue transactions/admit twice";
    let (job, entry, record) = admission();
    ok(
        transactions(&stores, c).admit(&job, &entry, &record).await,
        c,
    );
    ok(stores.queue.remove(job.id()).await, c);
    let again = transactions(&stores, c).admit(&job, &entry, &record).await;
    assert!(
        matches!(again, Err(crate::store::StoreError::AlreadyExists { .. })),
        "{c}: AlreadyExists, got {again:?}"
    );
    assert!(
        ok(stores.queue.is_empty().await, c),
        "{c}: not queued again"
    );
    assert_eq!(
        ok(stores.job_history.history(job.id()).await, c).len(),
        1,
        "{c}: not recorded again"
    );
}

/// A binding writes the worker, the job, the record, and deletes the entry.
async fn binds_everything(stores: Stores) {
    let c = "queue transactions/binds";
    let (worker, job, binding) = stored_pair(&stores, c).await;
    let outcome = ok(transactions(&stores, c).bind(&binding).await, c);
    let BindOutcome::Bound {
        worker: bound_worker,
        job: bound_job,
    } = outcome
    else {
        panic!("{c}: expected Bound, got {outcome:?}");
    };
    let w = some(ok(stores.workers.get(worker.id()).await, c), c);
    assert_eq!(w.version(), worker.version() + 1, "{c}: worker version");
    assert_eq!(w.current_jobs(), &[job.id()], "{c}: the job on the worker");
    assert_eq!(bound_worker.version(), w.version(), "{c}: worker returned");
    assert_eq!(bound_worker.current_jobs(), w.current_jobs(), "{c}");
    let j = some(ok(stores.jobs.get(job.id()).await, c), c);
    assert_eq!(j.version(), job.version() + 1, "{c}: job version");
    assert_eq!(j.state(), JobState::Scheduled, "{c}: job scheduled");
    assert_eq!(
        j.worker_id(),
        Some(worker.id()),
        "{c}: job names the worker"
    );
    assert_eq!(bound_job.version(), j.version(), "{c}: job returned");
    assert_eq!(bound_job.state(), JobState::Scheduled, "{c}");
    let history = ok(stores.job_history.history(job.id()).await, c);
    assert_eq!(history.len(), 1, "{c}: one record");
    assert_eq!(history[0].from, Some(JobState::Pending), "{c}: from");
    assert_eq!(history[0].to, JobState::Scheduled, "{c}: to");
    assert_eq!(history[0].worker_id, Some(worker.id()), "{c}: worker");
    assert!(ok(stores.queue.is_empty().await, c), "{c}: entry deleted");
    let again = ok(transactions(&stores, c).bind(&binding).await, c);
    assert_eq!(again, BindOutcome::EntryTaken, "{c}: binding twice");
}

/// An entry held by a lease (another controller placing the job) is left
/// to its holder: nothing is written.
async fn refuses_a_held_entry(stores: Stores) {
    let c = "queue transactions/held entry";
    let (worker, job, binding) = stored_pair(&stores, c).await;
    let lease = some(
        ok(
            stores
                .queue
                .claim_job(job.id(), Duration::from_secs(30))
                .await,
            c,
        ),
        c,
    );
    let outcome = ok(transactions(&stores, c).bind(&binding).await, c);
    assert_eq!(outcome, BindOutcome::EntryTaken, "{c}");
    nothing_written(&stores, &worker, &job, c).await;
    ok(stores.queue.complete(&lease).await, c); // still held by its lease
}

/// A job whose entry is gone (cancelled, or bound by another replica) is
/// not bound.
async fn refuses_a_missing_entry(stores: Stores) {
    let c = "queue transactions/missing entry";
    let (worker, job, binding) = stored_pair(&stores, c).await;
    ok(stores.queue.remove(job.id()).await, c);
    let outcome = ok(transactions(&stores, c).bind(&binding).await, c);
    assert_eq!(outcome, BindOutcome::EntryTaken, "{c}");
    nothing_written(&stores, &worker, &job, c).await;
}

/// A worker written since the copy was read: nothing is written, and the
/// entry stays free for the next try.
async fn refuses_a_stale_worker(stores: Stores) {
    let c = "queue transactions/stale worker";
    let (worker, job, binding) = stored_pair(&stores, c).await;
    let moved = ok(stores.workers.update(&worker).await, c);
    let outcome = ok(transactions(&stores, c).bind(&binding).await, c);
    assert_eq!(outcome, BindOutcome::Stale, "{c}");
    nothing_written(&stores, &moved, &job, c).await;
    entry_free(&stores, &job, c).await;
}

/// A job written since the copy was read: nothing is written.
async fn refuses_a_stale_job(stores: Stores) {
    let c = "queue transactions/stale job";
    let (worker, job, binding) = stored_pair(&stores, c).await;
    let moved = ok(stores.jobs.update(&job).await, c);
    let outcome = ok(transactions(&stores, c).bind(&binding).await, c);
    assert_eq!(outcome, BindOutcome::Stale, "{c}");
    nothing_written(&stores, &worker, &moved, c).await;
    entry_free(&stores, &job, c).await;
}

/// A heartbeat stored since the worker was read (it bumps no version) is
/// kept, as `WorkerRegistry::update` keeps it.
async fn keeps_a_later_heartbeat(stores: Stores) {
    let c = "queue transactions/later heartbeat";
    let (worker, _job, binding) = stored_pair(&stores, c).await;
    let later = super::stores::now_ms() + TimeDelta::seconds(30);
    ok(stores.workers.touch(worker.id(), later, None).await, c);
    let outcome = ok(transactions(&stores, c).bind(&binding).await, c);
    assert!(
        matches!(outcome, BindOutcome::Bound { .. }),
        "{c}: {outcome:?}"
    );
    let w = some(ok(stores.workers.get(worker.id()).await, c), c);
    assert_eq!(w.last_heartbeat(), later, "{c}: the later heartbeat kept");
}
