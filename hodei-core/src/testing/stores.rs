//! The store conformance suite: the behaviour every implementation of the
//! store traits in [`crate::store`] must show.
//!
//! Each `*_conformance` function takes a factory that returns a **fresh, empty**
//! store; it is called once per test case, so cases never see each other's
//! data. [`run_store_conformance`] runs every case from a factory of whole
//! [`Stores`] bundles.
//!
//! The suite **panics** on the first deviation, with a message naming the case
//! and what differed, so it is called from a `#[tokio::test]`:
//!
//! ```no_run
//! # async fn demo() {
//! use hodei_core::store::Stores;
//! hodei_core::testing::stores::run_store_conformance(|| async { Stores::in_memory() }).await;
//! # }
//! ```
//!
//! Timestamps the suite writes are whole milliseconds or coarser, and it
//! compares fields rather than whole values, so a backend that stores
//! microseconds passes.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};

use crate::domain::ids::{JobId, ProviderId, WorkerId};
use crate::domain::job::{AttemptResult, Job, JobState};
use crate::domain::logs::{LogEntry, LogStream};
use crate::domain::provider::{Provider, ProviderCapabilities, ProviderConfig, ProviderStatus};
use crate::domain::spec::{CommandType, JobSpec};
use crate::domain::worker::{Worker, WorkerHandle, WorkerState};
use crate::store::{
    JobFilter, JobHistoryStore, JobQueue, JobRepository, JobTransitionRecord, LogCursor, LogStore,
    OtpError, OtpTokenStore, ProviderConfigRepository, QueueEntry, StoreError, Stores,
    WorkerRegistry,
};

/// Unwraps a store result, panicking with the case and the error.
#[track_caller]
pub(super) fn ok<T, E: Debug>(r: Result<T, E>, what: &str) -> T {
    match r {
        Ok(v) => v,
        Err(e) => panic!("store conformance: {what}: unexpected error {e:?}"),
    }
}

/// Unwraps an option, panicking with the case.
#[track_caller]
pub(super) fn some<T>(o: Option<T>, what: &str) -> T {
    match o {
        Some(v) => v,
        None => panic!("store conformance: {what}: expected a value, got None"),
    }
}

fn job(name: &str) -> Job {
    Job::new(JobSpec::new(name, CommandType::shell("true", [""; 0])))
}

/// The current time truncated to whole milliseconds.
pub(super) fn now_ms() -> DateTime<Utc> {
    let now = Utc::now();
    DateTime::from_timestamp_millis(now.timestamp_millis()).unwrap_or(now)
}

fn entry(job_id: JobId, priority: i32, enqueued_at: DateTime<Utc>) -> QueueEntry {
    QueueEntry {
        job_id,
        priority,
        enqueued_at,
    }
}

fn log(seq: u64, text: &str) -> LogEntry {
    LogEntry {
        sequence: seq,
        stream: LogStream::Stdout,
        data: bytes::Bytes::copy_from_slice(text.as_bytes()),
        timestamp: now_ms(),
    }
}

fn provider(name: &str) -> Provider {
    Provider::new(
        ProviderId::new(),
        name,
        ProviderConfig::Custom {
            settings: BTreeMap::new(),
        },
        ProviderCapabilities::default(),
    )
}

const LEASE: Duration = Duration::from_secs(60);

// ---------------------------------------------------------------------------
// Jobs
// ---------------------------------------------------------------------------

/// Every [`JobRepository`] case. `make` returns a fresh, empty repository.
pub async fn job_repository_conformance<F, Fut>(make: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = Arc<dyn JobRepository>>,
{
    job_insert_get_update(make().await).await;
    job_list_filter_limit(make().await).await;
    job_count_by_state(make().await).await;
    job_prune_finished(make().await).await;
}

async fn job_insert_get_update(repo: Arc<dyn JobRepository>) {
    let c = "jobs/insert-get-update";
    let j = job("a");
    assert_eq!(
        ok(repo.get(j.id()).await, c).map(|j| j.id()),
        None,
        "{c}: get of unknown job"
    );
    let v1 = ok(repo.insert(&j).await, c);
    assert_eq!(v1.version(), 1, "{c}: insert returns version 1");
    assert_eq!(v1.id(), j.id(), "{c}: insert keeps the id");
    let got = some(ok(repo.get(j.id()).await, c), c);
    assert_eq!(got.version(), 1, "{c}: stored version");
    assert_eq!(got.state(), JobState::Pending, "{c}: stored state");
    assert_eq!(got.spec().name, "a", "{c}: stored spec");

    match repo.insert(&j).await {
        Err(StoreError::AlreadyExists { .. }) => {}
        other => panic!("{c}: second insert of one id must be AlreadyExists, got {other:?}"),
    }

    let mut changed = got.clone();
    ok(changed.submit_to_provider(ProviderId::new(), None), c);
    let v2 = ok(repo.update(&changed).await, c);
    assert_eq!(v2.version(), 2, "{c}: update returns the next version");
    let got2 = some(ok(repo.get(j.id()).await, c), c);
    assert_eq!(got2.version(), 2, "{c}: stored version after update");
    assert_eq!(
        got2.state(),
        JobState::Scheduled,
        "{c}: stored state after update"
    );
    assert_eq!(got2.attempts(), 1, "{c}: stored attempts after update");

    // A stale copy (version 1) is refused and the stored copy is untouched.
    let mut stale = got;
    ok(stale.cancel("stale"), c);
    match repo.update(&stale).await {
        Err(StoreError::Conflict {
            expected, actual, ..
        }) => {
            assert_eq!(expected, 1, "{c}: conflict names the caller's version");
            assert_eq!(actual, 2, "{c}: conflict names the stored version");
        }
        other => panic!("{c}: stale update must be Conflict, got {other:?}"),
    }
    let after = some(ok(repo.get(j.id()).await, c), c);
    assert_eq!(after.version(), 2, "{c}: refused update left the version");
    assert_eq!(
        after.state(),
        JobState::Scheduled,
        "{c}: refused update left the state"
    );

    match repo.update(&job("unknown")).await {
        Err(StoreError::NotFound { .. }) => {}
        other => panic!("{c}: update of an unknown job must be NotFound, got {other:?}"),
    }
}

async fn job_list_filter_limit(repo: Arc<dyn JobRepository>) {
    let c = "jobs/list";
    let mut ids = Vec::new();
    let worker = WorkerId::new();
    for i in 0..5 {
        let mut j = job(&format!("job-{i}"));
        if i % 2 == 1 {
            ok(j.submit_to_provider(ProviderId::new(), Some(worker)), c);
        }
        ok(repo.insert(&j).await, c);
        ids.push(j.id());
        // Distinct creation times, coarser than any backend's precision.
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let all = ok(repo.list(&JobFilter::default()).await, c);
    let got: Vec<JobId> = all.iter().map(Job::id).collect();
    let newest_first: Vec<JobId> = ids.iter().rev().copied().collect();
    assert_eq!(got, newest_first, "{c}: all jobs, newest first");

    let limited = ok(repo.list(&JobFilter::default().limit(2)).await, c);
    let got: Vec<JobId> = limited.iter().map(Job::id).collect();
    assert_eq!(
        got,
        newest_first[..2].to_vec(),
        "{c}: limit keeps the newest"
    );

    let pending = ok(repo.list(&JobFilter::state(JobState::Pending)).await, c);
    let got: Vec<JobId> = pending.iter().map(Job::id).collect();
    assert_eq!(got, vec![ids[4], ids[2], ids[0]], "{c}: state filter");
    assert!(
        pending.iter().all(|j| j.state() == JobState::Pending),
        "{c}: state filter returned another state"
    );

    let one = ok(
        repo.list(&JobFilter::state(JobState::Scheduled).limit(1))
            .await,
        c,
    );
    let got: Vec<JobId> = one.iter().map(Job::id).collect();
    assert_eq!(got, vec![ids[3]], "{c}: state filter with limit");

    let by_worker = ok(
        repo.list(&JobFilter {
            worker_id: Some(worker),
            ..JobFilter::default()
        })
        .await,
        c,
    );
    let got: Vec<JobId> = by_worker.iter().map(Job::id).collect();
    assert_eq!(got, vec![ids[3], ids[1]], "{c}: worker filter");

    let none = ok(repo.list(&JobFilter::state(JobState::Running)).await, c);
    assert!(none.is_empty(), "{c}: no running jobs expected");
}

async fn job_count_by_state(repo: Arc<dyn JobRepository>) {
    let c = "jobs/count-by-state";
    assert!(
        ok(repo.count_by_state().await, c).values().all(|n| *n == 0),
        "{c}: empty store counts nothing"
    );
    for _ in 0..3 {
        ok(repo.insert(&job("p")).await, c);
    }
    for _ in 0..2 {
        let mut j = job("c");
        ok(j.cancel("test"), c);
        ok(repo.insert(&j).await, c);
    }
    let mut j = job("s");
    ok(j.submit_to_provider(ProviderId::new(), None), c);
    ok(j.mark_running(), c);
    ok(j.complete(AttemptResult::exited(0)), c);
    ok(repo.insert(&j).await, c);

    let counts = ok(repo.count_by_state().await, c);
    let n = |s: JobState| counts.get(&s).copied().unwrap_or(0);
    assert_eq!(n(JobState::Pending), 3, "{c}: pending");
    assert_eq!(n(JobState::Cancelled), 2, "{c}: cancelled");
    assert_eq!(n(JobState::Succeeded), 1, "{c}: succeeded");
    assert_eq!(n(JobState::Running), 0, "{c}: running");
    assert_eq!(counts.values().sum::<u64>(), 6, "{c}: total");

    // An update moves a job to another state; pruning takes jobs out.
    let mut moved = ok(repo.insert(&job("m")).await, c);
    ok(moved.cancel("test"), c);
    ok(repo.update(&moved).await, c);
    let counts = ok(repo.count_by_state().await, c);
    let n = |s: JobState| counts.get(&s).copied().unwrap_or(0);
    assert_eq!(n(JobState::Pending), 3, "{c}: pending after the update");
    assert_eq!(n(JobState::Cancelled), 3, "{c}: cancelled after the update");
    ok(
        repo.prune_finished(Utc::now() + TimeDelta::hours(1)).await,
        c,
    );
    let counts = ok(repo.count_by_state().await, c);
    let n = |s: JobState| counts.get(&s).copied().unwrap_or(0);
    assert_eq!(n(JobState::Pending), 3, "{c}: pending after pruning");
    assert_eq!(
        counts.values().sum::<u64>(),
        3,
        "{c}: the finished jobs pruned are not counted"
    );
}

async fn job_prune_finished(repo: Arc<dyn JobRepository>) {
    let c = "jobs/prune-finished";
    let pending = job("pending");
    ok(repo.insert(&pending).await, c);
    let mut old = job("old");
    ok(old.cancel("done"), c);
    ok(repo.insert(&old).await, c);
    let cutoff = Utc::now() + TimeDelta::milliseconds(1);
    tokio::time::sleep(Duration::from_millis(10)).await;
    let mut new = job("new");
    ok(new.cancel("done"), c);
    ok(repo.insert(&new).await, c);

    let pruned = ok(repo.prune_finished(cutoff).await, c);
    assert_eq!(pruned, 1, "{c}: only the job finished before the cutoff");
    assert!(
        ok(repo.get(old.id()).await, c).is_none(),
        "{c}: old job gone"
    );
    assert!(
        ok(repo.get(new.id()).await, c).is_some(),
        "{c}: new job kept"
    );
    assert!(
        ok(repo.get(pending.id()).await, c).is_some(),
        "{c}: unfinished job kept"
    );
    let pruned = ok(
        repo.prune_finished(Utc::now() + TimeDelta::hours(1)).await,
        c,
    );
    assert_eq!(pruned, 1, "{c}: later cutoff prunes the other finished job");
    assert!(
        ok(repo.get(pending.id()).await, c).is_some(),
        "{c}: an unfinished job is never pruned"
    );
}

// ---------------------------------------------------------------------------
// Queue
// ---------------------------------------------------------------------------

/// Every [`JobQueue`] case. `make` returns a fresh, empty queue.
pub async fn job_queue_conformance<F, Fut>(make: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = Arc<dyn JobQueue>>,
{
    queue_ordering_and_claim_limit(make().await).await;
    queue_claim_job(make().await).await;
    queue_enqueue_idempotent(make().await).await;
    queue_complete_and_release(make().await).await;
    queue_complete_many(make().await).await;
    queue_rescue_expired(make().await).await;
    queue_remove(make().await).await;
    queue_renew_and_queued(make().await).await;
    super::scheduling::queue_scan_conformance(&make).await;
}

async fn queue_renew_and_queued(q: Arc<dyn JobQueue>) {
    let c = "queue/renew-and-queued";
    let a = JobId::new();
    let b = JobId::new();
    let t = now_ms();
    ok(q.enqueue(entry(a, 0, t)).await, c);
    ok(q.enqueue(entry(b, 0, t)).await, c);
    let short = some(ok(q.claim_job(a, Duration::from_secs(1)).await, c), c);
    let renewed = ok(q.renew(&short, Duration::from_secs(3600)).await, c);
    assert_eq!(renewed.lease_id, short.lease_id, "{c}: same lease");
    assert!(
        renewed.expires_at > short.expires_at,
        "{c}: the expiry moves forward"
    );
    let rescued = ok(
        q.rescue_expired(Utc::now() + TimeDelta::seconds(120)).await,
        c,
    );
    assert!(
        rescued.is_empty(),
        "{c}: a renewed lease is not rescued before its new expiry, got {rescued:?}"
    );
    let queued = ok(q.queued(&[a, b, JobId::new()]).await, c);
    assert_eq!(
        queued,
        [a, b].into_iter().collect(),
        "{c}: claimed and unclaimed entries are both queued; unknown is not"
    );
    ok(q.complete(&renewed).await, c);
    match q.renew(&renewed, LEASE).await {
        Err(StoreError::StaleLease { .. }) => {}
        other => panic!("{c}: renewing a completed lease must be stale, got {other:?}"),
    }
    let queued = ok(q.queued(&[a, b]).await, c);
    assert_eq!(queued, [b].into_iter().collect(), "{c}: completed is gone");
    assert!(
        ok(q.queued(&[]).await, c).is_empty(),
        "{c}: no ids, none queued"
    );
}

async fn queue_ordering_and_claim_limit(q: Arc<dyn JobQueue>) {
    let c = "queue/ordering";
    assert!(ok(q.is_empty().await, c), "{c}: a new queue is empty");
    let t0 = now_ms() - TimeDelta::seconds(100);
    let low_old = JobId::new();
    let high_new = JobId::new();
    let high_old = JobId::new();
    let mid = JobId::new();
    let low_new = JobId::new();
    // Enqueued out of order on purpose.
    ok(
        q.enqueue(entry(low_new, -5, t0 + TimeDelta::seconds(40)))
            .await,
        c,
    );
    ok(
        q.enqueue(entry(high_new, 10, t0 + TimeDelta::seconds(30)))
            .await,
        c,
    );
    ok(
        q.enqueue(entry(mid, 0, t0 + TimeDelta::seconds(20))).await,
        c,
    );
    ok(
        q.enqueue(entry(high_old, 10, t0 + TimeDelta::seconds(10)))
            .await,
        c,
    );
    ok(q.enqueue(entry(low_old, -5, t0)).await, c);
    let expected = vec![high_old, high_new, mid, low_old, low_new];

    assert_eq!(ok(q.len().await, c), 5, "{c}: len");
    let peeked = ok(q.peek(10).await, c);
    let got: Vec<JobId> = peeked.iter().map(|e| e.job_id).collect();
    assert_eq!(
        got, expected,
        "{c}: peek order is priority desc, then oldest"
    );
    assert_eq!(peeked[0].priority, 10, "{c}: peek keeps the priority");
    let got: Vec<JobId> = ok(q.peek(2).await, c).iter().map(|e| e.job_id).collect();
    assert_eq!(got, expected[..2].to_vec(), "{c}: peek limit");
    assert_eq!(ok(q.len().await, c), 5, "{c}: peek claims nothing");

    assert!(ok(q.claim(0, LEASE).await, c).is_empty(), "{c}: claim(0)");
    let leases = ok(q.claim(2, LEASE).await, c);
    let got: Vec<JobId> = leases.iter().map(|l| l.entry.job_id).collect();
    assert_eq!(
        got,
        expected[..2].to_vec(),
        "{c}: claim takes the first two"
    );
    assert_ne!(
        leases[0].lease_id, leases[1].lease_id,
        "{c}: unique lease ids"
    );
    assert!(
        leases[0].expires_at > Utc::now(),
        "{c}: lease expires in the future"
    );
    assert_eq!(
        ok(q.len().await, c),
        3,
        "{c}: claimed entries are not counted"
    );
    let got: Vec<JobId> = ok(q.peek(10).await, c).iter().map(|e| e.job_id).collect();
    assert_eq!(
        got,
        expected[2..].to_vec(),
        "{c}: peek skips claimed entries"
    );

    let rest = ok(q.claim(10, LEASE).await, c);
    let got: Vec<JobId> = rest.iter().map(|l| l.entry.job_id).collect();
    assert_eq!(got, expected[2..].to_vec(), "{c}: claim takes what is left");
    assert!(ok(q.is_empty().await, c), "{c}: all claimed");
    assert!(
        ok(q.claim(10, LEASE).await, c).is_empty(),
        "{c}: nothing left to claim"
    );
}

async fn queue_claim_job(q: Arc<dyn JobQueue>) {
    let c = "queue/claim-job";
    let a = JobId::new();
    let b = JobId::new();
    let t = now_ms();
    ok(q.enqueue(entry(a, 5, t)).await, c);
    ok(q.enqueue(entry(b, 0, t)).await, c);
    let lease = some(ok(q.claim_job(b, LEASE).await, c), c);
    assert_eq!(lease.entry.job_id, b, "{c}: claims the named job");
    assert!(
        ok(q.claim_job(b, LEASE).await, c).is_none(),
        "{c}: a claimed job cannot be claimed again"
    );
    assert!(
        ok(q.claim_job(JobId::new(), LEASE).await, c).is_none(),
        "{c}: an unknown job cannot be claimed"
    );
    let got: Vec<JobId> = ok(q.claim(10, LEASE).await, c)
        .iter()
        .map(|l| l.entry.job_id)
        .collect();
    assert_eq!(got, vec![a], "{c}: claim skips the claimed job");
}

async fn queue_enqueue_idempotent(q: Arc<dyn JobQueue>) {
    let c = "queue/enqueue-idempotent";
    let a = JobId::new();
    let t = now_ms();
    ok(q.enqueue(entry(a, 1, t)).await, c);
    ok(q.enqueue(entry(a, 1, t)).await, c);
    assert_eq!(
        ok(q.len().await, c),
        1,
        "{c}: enqueue twice keeps one entry"
    );
    let lease = some(ok(q.claim_job(a, LEASE).await, c), c);
    ok(q.enqueue(entry(a, 1, t)).await, c);
    assert_eq!(
        ok(q.len().await, c),
        0,
        "{c}: enqueue of a claimed job is a no-op"
    );
    ok(q.complete(&lease).await, c);
    assert!(ok(q.is_empty().await, c), "{c}: completed");
}

async fn queue_complete_and_release(q: Arc<dyn JobQueue>) {
    let c = "queue/complete-release";
    let a = JobId::new();
    let b = JobId::new();
    let t = now_ms();
    ok(q.enqueue(entry(a, 0, t)).await, c);
    ok(q.enqueue(entry(b, 0, t + TimeDelta::seconds(1))).await, c);
    let la = some(ok(q.claim_job(a, LEASE).await, c), c);
    let lb = some(ok(q.claim_job(b, LEASE).await, c), c);

    ok(q.complete(&la).await, c);
    match q.complete(&la).await {
        Err(StoreError::StaleLease { job_id }) => assert_eq!(job_id, a, "{c}: names the job"),
        other => panic!("{c}: completing twice must be StaleLease, got {other:?}"),
    }
    assert!(
        ok(q.claim_job(a, LEASE).await, c).is_none(),
        "{c}: a completed entry is gone"
    );

    ok(q.release(&lb).await, c);
    assert_eq!(
        ok(q.len().await, c),
        1,
        "{c}: released entry is queued again"
    );
    match q.release(&lb).await {
        Err(StoreError::StaleLease { .. }) => {}
        other => panic!("{c}: releasing twice must be StaleLease, got {other:?}"),
    }
    match q.complete(&lb).await {
        Err(StoreError::StaleLease { .. }) => {}
        other => panic!("{c}: completing a released lease must be StaleLease, got {other:?}"),
    }
    let lb2 = some(ok(q.claim_job(b, LEASE).await, c), c);
    assert_ne!(
        lb2.lease_id, lb.lease_id,
        "{c}: a new claim has a new lease id"
    );
    assert_eq!(lb2.entry.priority, 0, "{c}: the entry survives release");
    ok(q.complete(&lb2).await, c);
    assert!(ok(q.is_empty().await, c), "{c}: all done");
}

async fn queue_complete_many(q: Arc<dyn JobQueue>) {
    let c = "queue/complete-many";
    assert!(
        ok(q.complete_many(&[]).await, c).is_empty(),
        "{c}: nothing to complete"
    );
    let t = now_ms();
    let ids: Vec<JobId> = (0..5).map(|_| JobId::new()).collect();
    for (i, id) in ids.iter().enumerate() {
        ok(
            q.enqueue(entry(*id, 0, t + TimeDelta::seconds(i as i64)))
                .await,
            c,
        );
    }
    let leases = ok(q.claim(4, LEASE).await, c);
    assert_eq!(leases.len(), 4, "{c}: four claimed");
    // One lease goes stale (released, then claimed again under a new lease)
    // and one is completed before the batch: both are refused, the rest removed.
    ok(q.release(&leases[1]).await, c);
    let again = some(ok(q.claim_job(ids[1], LEASE).await, c), c);
    ok(q.complete(&leases[3]).await, c);
    let mut stale = ok(q.complete_many(&leases).await, c);
    stale.sort_by_key(|j| *j.as_uuid());
    let mut want = vec![ids[1], ids[3]];
    want.sort_by_key(|j| *j.as_uuid());
    assert_eq!(stale, want, "{c}: the stale leases are named");
    assert!(
        ok(q.queued(&ids).await, c)
            == [ids[1], ids[4]]
                .into_iter()
                .collect::<std::collections::HashSet<_>>(),
        "{c}: completed entries are gone, the re-claimed and the unclaimed stay"
    );
    assert!(
        ok(q.complete_many(std::slice::from_ref(&again)).await, c).is_empty(),
        "{c}: the new lease completes"
    );
    assert_eq!(ok(q.len().await, c), 1, "{c}: the unclaimed entry is left");
}

async fn queue_rescue_expired(q: Arc<dyn JobQueue>) {
    let c = "queue/rescue-expired";
    let a = JobId::new();
    let b = JobId::new();
    let t = now_ms();
    ok(q.enqueue(entry(a, 0, t)).await, c);
    ok(q.enqueue(entry(b, 0, t + TimeDelta::seconds(1))).await, c);
    let short = some(ok(q.claim_job(a, Duration::from_secs(1)).await, c), c);
    let long = some(ok(q.claim_job(b, Duration::from_secs(3600)).await, c), c);

    let rescued = ok(q.rescue_expired(Utc::now()).await, c);
    assert!(
        rescued.is_empty(),
        "{c}: nothing expired yet, rescued {rescued:?}"
    );

    let later = Utc::now() + TimeDelta::seconds(120);
    let rescued = ok(q.rescue_expired(later).await, c);
    assert_eq!(rescued, vec![a], "{c}: only the expired lease is rescued");
    assert_eq!(
        ok(q.len().await, c),
        1,
        "{c}: the rescued entry is queued again"
    );
    match q.complete(&short).await {
        Err(StoreError::StaleLease { .. }) => {}
        other => panic!("{c}: a rescued lease must be stale on complete, got {other:?}"),
    }
    match q.release(&short).await {
        Err(StoreError::StaleLease { .. }) => {}
        other => panic!("{c}: a rescued lease must be stale on release, got {other:?}"),
    }
    let again = some(ok(q.claim_job(a, LEASE).await, c), c);
    assert_ne!(
        again.lease_id, short.lease_id,
        "{c}: new lease after rescue"
    );
    ok(q.complete(&again).await, c);
    ok(q.complete(&long).await, c);
    assert!(ok(q.is_empty().await, c), "{c}: all done");
}

async fn queue_remove(q: Arc<dyn JobQueue>) {
    let c = "queue/remove";
    let a = JobId::new();
    let b = JobId::new();
    let t = now_ms();
    ok(q.enqueue(entry(a, 0, t)).await, c);
    ok(q.enqueue(entry(b, 0, t)).await, c);
    let lb = some(ok(q.claim_job(b, LEASE).await, c), c);
    assert!(ok(q.remove(a).await, c), "{c}: removes an unclaimed entry");
    assert!(ok(q.remove(b).await, c), "{c}: removes a claimed entry");
    assert!(!ok(q.remove(a).await, c), "{c}: removing twice says false");
    assert!(
        !ok(q.remove(JobId::new()).await, c),
        "{c}: unknown says false"
    );
    assert!(ok(q.is_empty().await, c), "{c}: empty after removal");
    match q.complete(&lb).await {
        Err(StoreError::StaleLease { .. }) => {}
        other => panic!("{c}: lease of a removed entry must be stale, got {other:?}"),
    }
}

// ---------------------------------------------------------------------------
// Workers
// ---------------------------------------------------------------------------

/// Every [`WorkerRegistry`] case. `make` returns a fresh, empty registry.
pub async fn worker_registry_conformance<F, Fut>(make: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = Arc<dyn WorkerRegistry>>,
{
    worker_crud(make().await).await;
    worker_sessions(make().await).await;
    worker_touch(make().await).await;
    worker_touch_concurrent(make().await).await;
    worker_versions(make().await).await;
    worker_update_keeps_touch(make().await).await;
    worker_count_by_state(make().await).await;
    worker_count_alive_by_provider(make().await).await;
    worker_count_jobs_of_provider(make().await).await;
    worker_count_idle_by_provider(make().await).await;
}

/// `count_idle_by_provider` counts, per provider, the workers holding no job
/// that are `Creating`, `Connecting` or `Ready`.
async fn worker_count_idle_by_provider(reg: Arc<dyn WorkerRegistry>) {
    let c = "workers/count_idle_by_provider";
    let (p1, p2) = (ProviderId::new(), ProviderId::new());
    assert!(
        ok(reg.count_idle_by_provider().await, c).is_empty(),
        "{c}: none"
    );
    let ready = |p: ProviderId| {
        let mut w = Worker::new(WorkerId::new(), p);
        ok(w.created(WorkerHandle::new(w.id(), p, "ext-idle")), c);
        ok(w.registered(), c);
        w
    };
    ok(reg.register(&Worker::new(WorkerId::new(), p1)).await, c);
    let mut connecting = Worker::new(WorkerId::new(), p1);
    ok(
        connecting.created(WorkerHandle::new(connecting.id(), p1, "ext-idle")),
        c,
    );
    ok(reg.register(&connecting).await, c);
    let mut idle = ok(reg.register(&ready(p1)).await, c);
    let mut busy = ready(p1);
    ok(busy.assign(JobId::new()), c);
    ok(reg.register(&busy).await, c);
    let mut draining = ready(p1);
    ok(draining.drain(), c);
    ok(reg.register(&draining).await, c);
    let mut leaving = ready(p1);
    ok(leaving.terminating(), c);
    ok(reg.register(&leaving).await, c);
    ok(reg.register(&ready(p2)).await, c);
    let counts = ok(reg.count_idle_by_provider().await, c);
    assert_eq!(
        counts.get(&p1),
        Some(&3),
        "{c}: creating, connecting and ready; not busy, draining or terminating"
    );
    assert_eq!(counts.get(&p2), Some(&1), "{c}: p2");
    ok(idle.assign(JobId::new()), c);
    ok(reg.update(&idle).await, c);
    assert_eq!(
        ok(reg.count_idle_by_provider().await, c).get(&p1),
        Some(&2),
        "{c}: an update counts"
    );
}

/// `count_jobs_of_provider` sums the jobs held by a provider's workers that are not gone.
async fn worker_count_jobs_of_provider(reg: Arc<dyn WorkerRegistry>) {
    let c = "workers/count_jobs_of_provider";
    let (p1, p2) = (ProviderId::new(), ProviderId::new());
    assert_eq!(ok(reg.count_jobs_of_provider(p1).await, c), 0, "{c}: none");
    let ready = |p: ProviderId, slots: u32| {
        let mut w = Worker::new(WorkerId::new(), p).with_limits(slots, None);
        ok(w.created(WorkerHandle::new(w.id(), p, "ext-jobs")), c);
        ok(w.registered(), c);
        w
    };
    let mut two = ready(p1, 3);
    ok(two.assign(JobId::new()), c);
    ok(two.assign(JobId::new()), c);
    ok(reg.register(&two).await, c);
    let mut idle = ok(reg.register(&ready(p1, 1)).await, c);
    let mut draining = ready(p1, 1);
    ok(draining.assign(JobId::new()), c);
    ok(draining.drain(), c);
    let mut draining = ok(reg.register(&draining).await, c);
    let mut other = ready(p2, 1);
    ok(other.assign(JobId::new()), c);
    ok(reg.register(&other).await, c);
    assert_eq!(
        ok(reg.count_jobs_of_provider(p1).await, c),
        3,
        "{c}: busy and draining workers' jobs, not another provider's"
    );
    ok(idle.assign(JobId::new()), c);
    ok(reg.update(&idle).await, c);
    assert_eq!(
        ok(reg.count_jobs_of_provider(p1).await, c),
        4,
        "{c}: an update counts"
    );
    ok(draining.terminating(), c);
    ok(reg.update(&draining).await, c);
    assert_eq!(
        ok(reg.count_jobs_of_provider(p1).await, c),
        3,
        "{c}: a terminating worker's jobs are gone"
    );
    assert_eq!(ok(reg.count_jobs_of_provider(p2).await, c), 1, "{c}: p2");
}

/// `count_alive_by_provider` counts the workers that are not gone, per provider.
async fn worker_count_alive_by_provider(reg: Arc<dyn WorkerRegistry>) {
    let c = "workers/count_alive_by_provider";
    let (p1, p2) = (ProviderId::new(), ProviderId::new());
    let mut ready = ok(reg.register(&Worker::new(WorkerId::new(), p1)).await, c);
    ok(reg.register(&Worker::new(WorkerId::new(), p1)).await, c);
    let mut leaving = ok(reg.register(&Worker::new(WorkerId::new(), p2)).await, c);
    ok(
        ready.created(WorkerHandle::new(ready.id(), p1, "ext-alive")),
        c,
    );
    ok(ready.registered(), c);
    let mut ready = ok(reg.update(&ready).await, c);
    let counts = ok(reg.count_alive_by_provider().await, c);
    assert_eq!(counts.get(&p1), Some(&2), "{c}: creating and ready count");
    assert_eq!(counts.get(&p2), Some(&1), "{c}: one of p2");
    ok(leaving.terminating(), c);
    ok(reg.update(&leaving).await, c);
    let counts = ok(reg.count_alive_by_provider().await, c);
    assert_eq!(
        counts.get(&p2).copied().unwrap_or(0),
        0,
        "{c}: a terminating worker is gone"
    );
    assert_eq!(counts.get(&p1), Some(&2), "{c}: p1 unchanged");
    // Taking a job, removals of gone and of live workers.
    ok(ready.assign(JobId::new()), c);
    let ready = ok(reg.update(&ready).await, c);
    assert_eq!(
        ok(reg.count_alive_by_provider().await, c).get(&p1),
        Some(&2),
        "{c}: a busy worker counts"
    );
    assert!(ok(reg.remove(leaving.id()).await, c), "{c}: removed");
    assert!(ok(reg.remove(ready.id()).await, c), "{c}: removed");
    let counts = ok(reg.count_alive_by_provider().await, c);
    assert_eq!(counts.get(&p1), Some(&1), "{c}: a removed worker is gone");
    assert_eq!(
        counts.get(&p2).copied().unwrap_or(0),
        0,
        "{c}: removing a gone worker takes nothing off"
    );
}

/// Heartbeats: one atomic write that keeps everything else of the worker,
/// ignores older stats, and leaves a gone or unknown worker alone.
async fn worker_touch(reg: Arc<dyn WorkerRegistry>) {
    use crate::domain::worker_stats::WorkerStats;
    let c = "workers/touch";
    let p = ProviderId::new();
    let mut w = ok(
        reg.register(&Worker::new(WorkerId::new(), p).with_limits(2, None))
            .await,
        c,
    );
    assert_eq!(
        ok(reg.touch(WorkerId::new(), Utc::now(), None).await, c),
        None,
        "{c}: unknown worker"
    );

    let t1 = Utc::now() + chrono::Duration::seconds(5);
    assert_eq!(
        ok(reg.touch(w.id(), t1, None).await, c),
        Some(vec![]),
        "{c}: no jobs yet"
    );
    let got = some(ok(reg.get(w.id()).await, c), c);
    assert_eq!(got.last_heartbeat(), t1, "{c}: heartbeat time stored");
    assert_eq!(got.state(), WorkerState::Creating, "{c}: state kept");
    assert!(got.stats().is_none(), "{c}: no stats given");

    // Assigned a job elsewhere (read-modify-write), then heartbeats with stats.
    ok(w.created(WorkerHandle::new(w.id(), p, "ext-t")), c);
    ok(w.registered(), c);
    let job = JobId::new();
    ok(w.assign(job), c);
    let mut w = ok(reg.update(&w).await, c);
    let newer = WorkerStats::new(50.0, 1024, 4096, t1);
    let t2 = t1 + chrono::Duration::seconds(5);
    assert_eq!(
        ok(reg.touch(w.id(), t2, Some(&newer)).await, c),
        Some(vec![job]),
        "{c}: the assigned job"
    );
    let older = WorkerStats::new(99.0, 1, 1, t1 - chrono::Duration::seconds(60));
    ok(reg.touch(w.id(), t2, Some(&older)).await, c);
    ok(reg.touch(w.id(), t2, None).await, c);
    let got = some(ok(reg.get(w.id()).await, c), c);
    assert_eq!(
        got.stats(),
        Some(&newer),
        "{c}: older stats ignored, none keeps them"
    );
    assert_eq!(got.current_jobs(), &[job], "{c}: jobs kept");
    assert_eq!(got.state(), WorkerState::Busy, "{c}: state kept");

    // Gone: left alone.
    ok(w.terminating(), c);
    ok(reg.update(&w).await, c);
    let t3 = t2 + chrono::Duration::seconds(5);
    assert_eq!(
        ok(reg.touch(w.id(), t3, None).await, c),
        None,
        "{c}: a terminating worker"
    );
    let got = some(ok(reg.get(w.id()).await, c), c);
    assert_ne!(
        got.last_heartbeat(),
        t3,
        "{c}: a gone worker's heartbeat is not moved"
    );
}

/// Many touches at once (a store may write them in groups): each is
/// answered as if alone, and a worker keeps the newest stats of its
/// touches, whatever order they were written in.
async fn worker_touch_concurrent(reg: Arc<dyn WorkerRegistry>) {
    use crate::domain::worker_stats::WorkerStats;
    let c = "workers/touch_concurrent";
    let p = ProviderId::new();
    let mut live = Vec::new();
    for i in 0..60 {
        let mut w = ok(
            reg.register(&Worker::new(WorkerId::new(), p).with_limits(2, None))
                .await,
            c,
        );
        ok(w.created(WorkerHandle::new(w.id(), p, "ext-tc")), c);
        ok(w.registered(), c);
        let jobs: Vec<JobId> = (0..i % 3).map(|_| JobId::new()).collect();
        for j in &jobs {
            ok(w.assign(*j), c);
        }
        let w = ok(reg.update(&w).await, c);
        live.push((w, jobs));
    }
    let mut gone = ok(reg.register(&Worker::new(WorkerId::new(), p)).await, c);
    ok(gone.terminating(), c);
    let gone = ok(reg.update(&gone).await, c);

    let t0 = Utc::now() + chrono::Duration::seconds(5);
    let at = move |k: i64| t0 + chrono::Duration::milliseconds(k);
    let mut set = tokio::task::JoinSet::new();
    for (w, jobs) in &live {
        for k in 0..3 {
            let (reg, id, want) = (reg.clone(), w.id(), Some(jobs.clone()));
            set.spawn(async move {
                let stats = WorkerStats::new(50.0, 1, 0, at(k));
                (reg.touch(id, at(k), Some(&stats)).await, want)
            });
        }
    }
    for id in [gone.id(), WorkerId::new()] {
        let reg = reg.clone();
        set.spawn(async move { (reg.touch(id, at(0), None).await, None) });
    }
    while let Some(joined) = set.join_next().await {
        let (got, want) = match joined {
            Ok(done) => done,
            Err(e) => panic!("{c}: a touch task failed: {e}"),
        };
        assert_eq!(ok(got, c), want, "{c}: each touch answered as if alone");
    }
    for (w, jobs) in &live {
        let got = some(ok(reg.get(w.id()).await, c), c);
        assert!(
            (0..3).any(|k| got.last_heartbeat() == at(k)),
            "{c}: the heartbeat is one of the touches'"
        );
        assert_eq!(
            got.stats().map(|s| s.sampled_at),
            Some(at(2)),
            "{c}: the newest stats kept"
        );
        assert_eq!(got.current_jobs(), &jobs[..], "{c}: jobs kept");
    }
    let got = some(ok(reg.get(gone.id()).await, c), c);
    assert_ne!(got.last_heartbeat(), at(0), "{c}: a gone worker left alone");
}

/// Optimistic concurrency: `register` stores version 1, each `update` the
/// next one, and an update from a stale copy is a `Conflict` that changes
/// nothing.
async fn worker_versions(reg: Arc<dyn WorkerRegistry>) {
    let c = "workers/versions";
    let p = ProviderId::new();
    let registered = ok(reg.register(&Worker::new(WorkerId::new(), p)).await, c);
    assert_eq!(registered.version(), 1, "{c}: register returns version 1");
    let got = some(ok(reg.get(registered.id()).await, c), c);
    assert_eq!(got.version(), 1, "{c}: stored with version 1");

    let mut first = got.clone();
    ok(first.created(WorkerHandle::new(first.id(), p, "ext-v")), c);
    let first = ok(reg.update(&first).await, c);
    assert_eq!(first.version(), 2, "{c}: update returns the next version");
    assert_eq!(
        some(ok(reg.get(first.id()).await, c), c).version(),
        2,
        "{c}: stored with the next version"
    );

    // `got` is version 1: stale.
    let mut stale = got;
    ok(stale.terminating(), c);
    match reg.update(&stale).await {
        Err(StoreError::Conflict {
            expected, actual, ..
        }) => {
            assert_eq!((expected, actual), (1, 2), "{c}: conflict versions");
        }
        other => panic!("{c}: a stale update must be Conflict, got {other:?}"),
    }
    let stored = some(ok(reg.get(first.id()).await, c), c);
    assert_eq!(
        stored.state(),
        WorkerState::Connecting,
        "{c}: a refused update changes nothing"
    );
    assert_eq!(stored.version(), 2, "{c}: version unchanged by a conflict");

    // Reloaded, the same change goes through.
    let mut fresh = stored;
    ok(fresh.terminating(), c);
    let fresh = ok(reg.update(&fresh).await, c);
    assert_eq!(fresh.version(), 3, "{c}: after reloading");
    assert_eq!(
        some(ok(reg.get(fresh.id()).await, c), c).state(),
        WorkerState::Terminating,
        "{c}: stored"
    );
}

/// A heartbeat (`touch`) between reading a worker and updating it neither
/// makes the update conflict nor is undone by it; a copy with a later
/// heartbeat or newer stats than the stored ones wins.
async fn worker_update_keeps_touch(reg: Arc<dyn WorkerRegistry>) {
    use crate::domain::worker_stats::WorkerStats;
    let c = "workers/update-keeps-touch";
    let p = ProviderId::new();
    let mut w = ok(reg.register(&Worker::new(WorkerId::new(), p)).await, c);
    ok(w.created(WorkerHandle::new(w.id(), p, "ext-k")), c);
    ok(w.registered(), c);
    let w = ok(reg.update(&w).await, c);

    let read = some(ok(reg.get(w.id()).await, c), c);
    let t1 = now_ms() + TimeDelta::seconds(30);
    let stats = WorkerStats::new(25.0, 2048, 8192, t1);
    ok(reg.touch(w.id(), t1, Some(&stats)).await, c);
    assert_eq!(
        some(ok(reg.get(w.id()).await, c), c).version(),
        read.version(),
        "{c}: touch bumps no version"
    );

    let mut changed = read;
    ok(changed.drain(), c);
    let stored = ok(reg.update(&changed).await, c);
    assert_eq!(stored.version(), w.version() + 1, "{c}: no conflict");
    assert_eq!(stored.last_heartbeat(), t1, "{c}: returned heartbeat");
    let got = some(ok(reg.get(w.id()).await, c), c);
    assert_eq!(
        got.state(),
        WorkerState::Draining,
        "{c}: the update is stored"
    );
    assert_eq!(
        got.last_heartbeat(),
        t1,
        "{c}: the touched heartbeat is kept"
    );
    assert_eq!(got.stats(), Some(&stats), "{c}: the touched stats are kept");

    // A copy that is fresher than the store wins.
    let mut fresher = got;
    let t2 = t1 + TimeDelta::seconds(30);
    let newer = WorkerStats::new(75.0, 4096, 8192, t2);
    fresher.heartbeat_at(t2);
    fresher.record_stats(newer.clone());
    ok(reg.update(&fresher).await, c);
    let got = some(ok(reg.get(w.id()).await, c), c);
    assert_eq!(got.last_heartbeat(), t2, "{c}: the copy's later heartbeat");
    assert_eq!(got.stats(), Some(&newer), "{c}: the copy's newer stats");
}

/// `count_by_state` agrees with `list`, and follows state changes.
async fn worker_count_by_state(reg: Arc<dyn WorkerRegistry>) {
    let c = "workers/count_by_state";
    let from_list = |workers: &[Worker]| {
        let mut counts = BTreeMap::new();
        for w in workers {
            *counts.entry(w.state()).or_insert(0_u64) += 1;
        }
        counts
    };
    let before = ok(reg.count_by_state().await, c);
    let p = ProviderId::new();
    let mut ready = ok(reg.register(&Worker::new(WorkerId::new(), p)).await, c);
    ok(reg.register(&Worker::new(WorkerId::new(), p)).await, c);
    ok(
        ready.created(WorkerHandle::new(ready.id(), p, "ext-count")),
        c,
    );
    ok(ready.registered(), c);
    ok(reg.update(&ready).await, c);
    let counts: BTreeMap<_, _> = ok(reg.count_by_state().await, c)
        .into_iter()
        .filter(|(_, n)| *n > 0)
        .collect();
    assert_eq!(
        counts,
        from_list(&ok(reg.list().await, c)),
        "{c}: agrees with list"
    );
    let grew = |s: WorkerState| {
        counts.get(&s).copied().unwrap_or(0) - before.get(&s).copied().unwrap_or(0)
    };
    assert_eq!(grew(WorkerState::Creating), 1, "{c}: creating");
    assert_eq!(grew(WorkerState::Ready), 1, "{c}: ready");
}

async fn worker_crud(reg: Arc<dyn WorkerRegistry>) {
    let c = "workers/crud";
    let p = ProviderId::new();
    let mut labels = BTreeMap::new();
    labels.insert("zone".to_owned(), "a".to_owned());
    let w1 = Worker::new(WorkerId::new(), p)
        .with_limits(2, Some(5))
        .with_labels(labels.clone());
    let w2 = Worker::new(WorkerId::new(), p);
    assert!(
        ok(reg.get(w1.id()).await, c).is_none(),
        "{c}: unknown worker"
    );
    ok(reg.register(&w1).await, c);
    ok(reg.register(&w2).await, c);
    match reg.register(&w1).await {
        Err(StoreError::AlreadyExists { .. }) => {}
        other => panic!("{c}: registering twice must be AlreadyExists, got {other:?}"),
    }
    let got = some(ok(reg.get(w1.id()).await, c), c);
    assert_eq!(got.provider_id(), p, "{c}: provider");
    assert_eq!(got.state(), WorkerState::Creating, "{c}: state");
    assert_eq!(got.max_concurrent_jobs(), 2, "{c}: limits");
    assert_eq!(got.max_jobs(), Some(5), "{c}: limits");
    assert_eq!(got.labels(), &labels, "{c}: labels");

    let mut changed = got;
    ok(
        changed.created(WorkerHandle::new(changed.id(), p, "ext-1")),
        c,
    );
    ok(changed.registered(), c);
    let job = JobId::new();
    ok(changed.assign(job), c);
    ok(reg.update(&changed).await, c);
    let got = some(ok(reg.get(w1.id()).await, c), c);
    assert_eq!(got.state(), WorkerState::Busy, "{c}: updated state");
    assert_eq!(got.current_jobs(), &[job], "{c}: updated jobs");
    assert_eq!(
        got.handle().map(|h| h.external_id.as_str()),
        Some("ext-1"),
        "{c}: updated handle"
    );

    match reg.update(&Worker::new(WorkerId::new(), p)).await {
        Err(StoreError::NotFound { .. }) => {}
        other => panic!("{c}: update of an unknown worker must be NotFound, got {other:?}"),
    }

    let mut listed: Vec<WorkerId> = ok(reg.list().await, c).iter().map(Worker::id).collect();
    listed.sort();
    let mut expected = vec![w1.id(), w2.id()];
    expected.sort();
    assert_eq!(listed, expected, "{c}: list");

    assert!(ok(reg.remove(w2.id()).await, c), "{c}: remove");
    assert!(!ok(reg.remove(w2.id()).await, c), "{c}: remove twice");
    assert!(ok(reg.get(w2.id()).await, c).is_none(), "{c}: removed");
    assert_eq!(ok(reg.list().await, c).len(), 1, "{c}: list after remove");
}

async fn worker_sessions(reg: Arc<dyn WorkerRegistry>) {
    let c = "workers/sessions";
    let p = ProviderId::new();
    let w1 = Worker::new(WorkerId::new(), p);
    let w2 = Worker::new(WorkerId::new(), p);
    ok(reg.register(&w1).await, c);
    ok(reg.register(&w2).await, c);
    let h1 = crate::otp::hash_token("session-1");
    let h1b = crate::otp::hash_token("session-1b");
    let h2 = crate::otp::hash_token("session-2");

    assert!(
        ok(reg.worker_for_session(&h1).await, c).is_none(),
        "{c}: none yet"
    );
    ok(reg.set_session(w1.id(), &h1).await, c);
    ok(reg.set_session(w2.id(), &h2).await, c);
    assert_eq!(
        ok(reg.worker_for_session(&h1).await, c),
        Some(w1.id()),
        "{c}: w1"
    );
    assert_eq!(
        ok(reg.worker_for_session(&h2).await, c),
        Some(w2.id()),
        "{c}: w2"
    );

    ok(reg.set_session(w1.id(), &h1b).await, c);
    assert_eq!(
        ok(reg.worker_for_session(&h1b).await, c),
        Some(w1.id()),
        "{c}: new session"
    );
    assert!(
        ok(reg.worker_for_session(&h1).await, c).is_none(),
        "{c}: the replaced session no longer resolves"
    );

    match reg.set_session(WorkerId::new(), &h2).await {
        Err(StoreError::NotFound { .. }) => {}
        other => panic!("{c}: session for an unknown worker must be NotFound, got {other:?}"),
    }
    assert_eq!(
        ok(reg.worker_for_session(&h2).await, c),
        Some(w2.id()),
        "{c}: a refused set_session changes nothing"
    );

    assert!(ok(reg.remove(w1.id()).await, c), "{c}: remove");
    assert!(
        ok(reg.worker_for_session(&h1b).await, c).is_none(),
        "{c}: removing a worker ends its session"
    );
    assert_eq!(
        ok(reg.worker_for_session(&h2).await, c),
        Some(w2.id()),
        "{c}: w2 kept"
    );
}

// ---------------------------------------------------------------------------
// Providers
// ---------------------------------------------------------------------------

/// Every [`ProviderConfigRepository`] case. `make` returns a fresh, empty repository.
pub async fn provider_repository_conformance<F, Fut>(make: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = Arc<dyn ProviderConfigRepository>>,
{
    provider_crud(make().await).await;
}

async fn provider_crud(repo: Arc<dyn ProviderConfigRepository>) {
    let c = "providers/crud";
    let docker = provider("docker");
    let process = provider("process");
    assert!(
        ok(repo.get(docker.id()).await, c).is_none(),
        "{c}: unknown id"
    );
    assert!(
        ok(repo.get_by_name("docker").await, c).is_none(),
        "{c}: unknown name"
    );
    ok(repo.save(&process).await, c);
    ok(repo.save(&docker).await, c);

    let got = some(ok(repo.get(docker.id()).await, c), c);
    assert_eq!(got.name(), "docker", "{c}: name");
    assert_eq!(got.config(), docker.config(), "{c}: config");
    assert_eq!(
        got.capabilities(),
        docker.capabilities(),
        "{c}: capabilities"
    );
    let got = some(ok(repo.get_by_name("process").await, c), c);
    assert_eq!(got.id(), process.id(), "{c}: by name");

    let mut changed = docker.clone();
    changed.set_status(ProviderStatus::Maintenance);
    ok(repo.save(&changed).await, c);
    let got = some(ok(repo.get(docker.id()).await, c), c);
    assert_eq!(
        got.status(),
        ProviderStatus::Maintenance,
        "{c}: save replaces by id"
    );

    let dup = provider("docker");
    match repo.save(&dup).await {
        Err(StoreError::AlreadyExists { .. }) => {}
        other => panic!("{c}: another provider with a taken name must be refused, got {other:?}"),
    }
    assert!(
        ok(repo.get(dup.id()).await, c).is_none(),
        "{c}: the duplicate is not stored"
    );

    let names: Vec<String> = ok(repo.list().await, c)
        .iter()
        .map(|p| p.name().to_owned())
        .collect();
    assert_eq!(names, vec!["docker", "process"], "{c}: list by name");

    assert!(ok(repo.delete(docker.id()).await, c), "{c}: delete");
    assert!(!ok(repo.delete(docker.id()).await, c), "{c}: delete twice");
    assert!(
        ok(repo.get_by_name("docker").await, c).is_none(),
        "{c}: deleted"
    );
    // The name is free again.
    ok(repo.save(&dup).await, c);
    assert_eq!(
        ok(repo.list().await, c).len(),
        2,
        "{c}: name reusable after delete"
    );
}

// ---------------------------------------------------------------------------
// Logs
// ---------------------------------------------------------------------------

/// Every [`LogStore`] case. `make` returns a fresh, empty store.
pub async fn log_store_conformance<F, Fut>(make: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = Arc<dyn LogStore>>,
{
    logs_idempotent_and_contiguous(make().await).await;
    logs_read_cursor(make().await).await;
    logs_concurrent_appends_never_under_report(make().await).await;
}

fn texts(entries: &[crate::store::StoredLogEntry]) -> Vec<(u32, u64, String)> {
    entries
        .iter()
        .map(|e| {
            (
                e.attempt,
                e.entry.sequence,
                String::from_utf8_lossy(&e.entry.data).into_owned(),
            )
        })
        .collect()
}

async fn logs_idempotent_and_contiguous(store: Arc<dyn LogStore>) {
    let c = "logs/idempotent";
    let j = JobId::new();
    assert_eq!(
        ok(store.last_sequence(j, 1).await, c),
        0,
        "{c}: nothing yet"
    );
    let s = ok(
        store
            .append(j, 1, &[log(1, "one"), log(2, "two"), log(3, "three")])
            .await,
        c,
    );
    assert_eq!(s, 3, "{c}: contiguous after the first batch");
    // A resent batch (after a reconnect) is harmless, even with changed data.
    let s = ok(
        store.append(j, 1, &[log(2, "TWO"), log(3, "three")]).await,
        c,
    );
    assert_eq!(s, 3, "{c}: resend keeps the sequence");
    // Batches arriving out of order: 6 and 5 before 4.
    let s = ok(store.append(j, 1, &[log(6, "six")]).await, c);
    assert_eq!(s, 3, "{c}: a gap keeps the contiguous sequence");
    let s = ok(store.append(j, 1, &[log(5, "five")]).await, c);
    assert_eq!(s, 3, "{c}: still a gap");
    assert_eq!(
        ok(store.last_sequence(j, 1).await, c),
        3,
        "{c}: last_sequence"
    );
    let s = ok(store.append(j, 1, &[log(4, "four")]).await, c);
    assert_eq!(s, 6, "{c}: gap filled");
    assert_eq!(
        ok(store.last_sequence(j, 1).await, c),
        6,
        "{c}: last_sequence"
    );
    let s = ok(store.append(j, 1, &[]).await, c);
    assert_eq!(s, 6, "{c}: an empty batch reports the sequence");

    let all = ok(store.read(j, LogCursor::default(), 100).await, c);
    let got = texts(&all);
    let expected: Vec<(u32, u64, String)> = ["one", "two", "three", "four", "five", "six"]
        .iter()
        .enumerate()
        .map(|(i, t)| (1, i as u64 + 1, (*t).to_owned()))
        .collect();
    assert_eq!(
        got, expected,
        "{c}: every line once, first write wins, in order"
    );
    assert_eq!(all[0].entry.stream, LogStream::Stdout, "{c}: stream kept");

    // Attempts are independent.
    assert_eq!(
        ok(store.last_sequence(j, 2).await, c),
        0,
        "{c}: attempt 2 empty"
    );
    let s = ok(store.append(j, 2, &[log(2, "b")]).await, c);
    assert_eq!(s, 0, "{c}: attempt 2 starts at 1");
    // Another job is independent.
    let other = JobId::new();
    assert_eq!(
        ok(store.last_sequence(other, 1).await, c),
        0,
        "{c}: other job"
    );
    assert!(
        ok(store.read(other, LogCursor::default(), 10).await, c).is_empty(),
        "{c}: other job has no logs"
    );
}

/// Batches of one attempt appended side by side and out of order (a resend
/// racing the original, two replicas during a failover): once all are in,
/// the contiguous sequence is the last one. An append that computed it from
/// a view missing a batch committed meanwhile would leave it short, and the
/// attempt's result would wait for lines that are stored.
async fn logs_concurrent_appends_never_under_report(store: Arc<dyn LogStore>) {
    let c = "logs/concurrent";
    const BATCHES: u64 = 24;
    const PER_BATCH: u64 = 5;
    for round in 0..3 {
        let j = JobId::new();
        let mut tasks = tokio::task::JoinSet::new();
        // Later batches first, so most appends find a gap before them.
        for b in (0..BATCHES).rev() {
            let store = store.clone();
            tasks.spawn(async move {
                let entries: Vec<LogEntry> = (1..=PER_BATCH)
                    .map(|k| log(b * PER_BATCH + k, "x"))
                    .collect();
                store.append(j, 1, &entries).await
            });
        }
        while let Some(done) = tasks.join_next().await {
            ok(done.expect("append task"), c);
        }
        assert_eq!(
            ok(store.last_sequence(j, 1).await, c),
            BATCHES * PER_BATCH,
            "{c}: round {round}: every batch is in, the run must reach the last"
        );
    }
}

async fn logs_read_cursor(store: Arc<dyn LogStore>) {
    let c = "logs/read-cursor";
    let j = JobId::new();
    let other = JobId::new();
    ok(store.append(other, 1, &[log(1, "other")]).await, c);
    let s = ok(
        store
            .append(j, 1, &[log(1, "a1"), log(2, "a2"), log(3, "a3")])
            .await,
        c,
    );
    assert_eq!(s, 3, "{c}: attempt 1");
    let s = ok(store.append(j, 2, &[log(2, "b2"), log(1, "b1")]).await, c);
    assert_eq!(s, 2, "{c}: attempt 2, batch out of order");

    let page = ok(store.read(j, LogCursor::default(), 2).await, c);
    assert_eq!(
        texts(&page),
        vec![(1, 1, "a1".into()), (1, 2, "a2".into())],
        "{c}: first page"
    );
    let cursor = LogCursor {
        attempt: 1,
        sequence: 2,
    };
    let page = ok(store.read(j, cursor, 2).await, c);
    assert_eq!(
        texts(&page),
        vec![(1, 3, "a3".into()), (2, 1, "b1".into())],
        "{c}: second page crosses attempts"
    );
    let cursor = LogCursor {
        attempt: 2,
        sequence: 1,
    };
    let page = ok(store.read(j, cursor, 10).await, c);
    assert_eq!(texts(&page), vec![(2, 2, "b2".into())], "{c}: last page");
    let cursor = LogCursor {
        attempt: 2,
        sequence: 2,
    };
    assert!(
        ok(store.read(j, cursor, 10).await, c).is_empty(),
        "{c}: past the end"
    );
    assert!(
        ok(store.read(j, LogCursor::default(), 0).await, c).is_empty(),
        "{c}: limit 0"
    );

    assert_eq!(
        ok(store.delete(j).await, c),
        5,
        "{c}: delete counts entries"
    );
    assert!(
        ok(store.read(j, LogCursor::default(), 10).await, c).is_empty(),
        "{c}: deleted"
    );
    assert_eq!(
        ok(store.last_sequence(j, 1).await, c),
        0,
        "{c}: deleted sequence"
    );
    assert_eq!(ok(store.delete(j).await, c), 0, "{c}: delete twice");
    assert_eq!(
        ok(store.read(other, LogCursor::default(), 10).await, c).len(),
        1,
        "{c}: another job's logs are kept"
    );
}

// ---------------------------------------------------------------------------
// One-time tokens
// ---------------------------------------------------------------------------

/// Every [`OtpTokenStore`] case. `make` returns a fresh, empty store.
pub async fn otp_store_conformance<F, Fut>(make: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = Arc<dyn OtpTokenStore>>,
{
    otp_single_use(make().await).await;
    otp_purge(make().await).await;
}

fn expect_invalid(r: Result<WorkerId, OtpError>, what: &str) {
    match r {
        Err(OtpError::Invalid) => {}
        other => panic!("store conformance: {what}: expected OtpError::Invalid, got {other:?}"),
    }
}

async fn otp_single_use(store: Arc<dyn OtpTokenStore>) {
    let c = "otp/single-use";
    let now = Utc::now();
    let w = WorkerId::new();
    let h = crate::otp::hash_token(&crate::otp::generate_token());
    ok(store.insert(&h, w, now + TimeDelta::minutes(5)).await, c);
    assert_eq!(ok(store.consume(&h, now).await, c), w, "{c}: first use");
    expect_invalid(store.consume(&h, now).await, "otp/single-use: second use");

    let unknown = crate::otp::hash_token("never issued");
    expect_invalid(
        store.consume(&unknown, now).await,
        "otp/single-use: unknown",
    );

    let expired = crate::otp::hash_token(&crate::otp::generate_token());
    ok(
        store
            .insert(&expired, WorkerId::new(), now - TimeDelta::seconds(1))
            .await,
        c,
    );
    expect_invalid(
        store.consume(&expired, now).await,
        "otp/single-use: expired",
    );

    // Expiry is judged against the `now` the caller passes.
    let later = crate::otp::hash_token(&crate::otp::generate_token());
    let w2 = WorkerId::new();
    ok(
        store.insert(&later, w2, now + TimeDelta::minutes(5)).await,
        c,
    );
    expect_invalid(
        store.consume(&later, now + TimeDelta::minutes(10)).await,
        "otp/single-use: consumed after expiry",
    );
}

async fn otp_purge(store: Arc<dyn OtpTokenStore>) {
    let c = "otp/purge";
    let now = Utc::now();
    let live = crate::otp::hash_token("live");
    let w = WorkerId::new();
    ok(store.insert(&live, w, now + TimeDelta::minutes(5)).await, c);
    for i in 0..2 {
        let h = crate::otp::hash_token(&format!("dead-{i}"));
        ok(
            store
                .insert(&h, WorkerId::new(), now - TimeDelta::minutes(1))
                .await,
            c,
        );
    }
    assert_eq!(
        ok(store.purge_expired(now).await, c),
        2,
        "{c}: purges expired only"
    );
    assert_eq!(ok(store.purge_expired(now).await, c), 0, "{c}: purge twice");
    expect_invalid(
        store.consume(&crate::otp::hash_token("dead-0"), now).await,
        "otp/purge: purged token",
    );
    assert_eq!(
        ok(store.consume(&live, now).await, c),
        w,
        "{c}: live token kept"
    );
}

// ---------------------------------------------------------------------------
// All
// ---------------------------------------------------------------------------

/// Runs every case of every store trait. `factory` returns a fresh, empty
/// bundle of stores; it is called once per case (for a database: a fresh
/// database or a truncated schema per call). Panics on the first deviation.
pub async fn run_store_conformance<F, Fut>(factory: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = Stores>,
{
    let f = &factory;
    job_repository_conformance(|| async move { f().await.jobs }).await;
    job_queue_conformance(|| async move { f().await.queue }).await;
    worker_registry_conformance(|| async move { f().await.workers }).await;
    provider_repository_conformance(|| async move { f().await.providers }).await;
    log_store_conformance(|| async move { f().await.logs }).await;
    otp_store_conformance(|| async move { f().await.otps }).await;
    super::templates::template_store_conformance(|| async move { f().await.templates }).await;
    job_history_conformance(|| async move { f().await.job_history }).await;
    super::audit::audit_log_conformance(|| async move { f().await.audit }).await;
    super::reported_state::reported_state_conformance(f).await;
    super::scheduling::scheduling_store_conformance(|| async move { f().await.scheduling }).await;
    super::queue_transactions::queue_transactions_conformance(f).await;
}

// ---------------------------------------------------------------------------
// Job histories
// ---------------------------------------------------------------------------

/// Every [`JobHistoryStore`] case. `make` returns a fresh, empty store.
pub async fn job_history_conformance<F, Fut>(make: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = Arc<dyn JobHistoryStore>>,
{
    history_in_order(make().await).await;
    history_capped(make().await).await;
    history_pruned(make().await).await;
}

fn step(
    job: JobId,
    from: Option<JobState>,
    to: JobState,
    at: DateTime<Utc>,
    attempt: u32,
) -> JobTransitionRecord {
    JobTransitionRecord::new(job, from, to, at, attempt)
}

async fn history_in_order(store: Arc<dyn JobHistoryStore>) {
    let c = "history/in-order";
    let j = JobId::new();
    let other = JobId::new();
    let worker = WorkerId::new();
    let t = now_ms();
    let ms = TimeDelta::milliseconds;
    assert!(ok(store.history(j).await, c).is_empty(), "{c}: unknown job");
    let records = vec![
        step(j, None, JobState::Pending, t, 0),
        step(
            j,
            Some(JobState::Pending),
            JobState::Scheduled,
            t + ms(5),
            1,
        )
        .with_worker(Some(worker)),
        step(
            j,
            Some(JobState::Scheduled),
            JobState::Running,
            t + ms(9),
            1,
        )
        .with_worker(Some(worker)),
        step(j, Some(JobState::Running), JobState::Pending, t + ms(20), 1)
            .with_worker(Some(worker))
            .with_reason("worker lost: heartbeat timeout"),
        // Recorded later with an earlier clock (another replica): order is the
        // order of recording, not of the times.
        step(
            j,
            Some(JobState::Pending),
            JobState::Scheduled,
            t + ms(15),
            2,
        ),
        step(
            j,
            Some(JobState::Scheduled),
            JobState::Failed,
            t + ms(30),
            2,
        )
        .with_reason("exit code 3 — ünïcode"),
    ];
    for (i, r) in records.iter().enumerate() {
        ok(store.record(r).await, c);
        if i == 1 {
            ok(
                store
                    .record(&step(other, None, JobState::Pending, t, 0))
                    .await,
                c,
            );
        }
    }
    let got = ok(store.history(j).await, c);
    assert_eq!(got, records, "{c}: every field, in recording order");
    assert_eq!(
        ok(store.history(other).await, c),
        vec![step(other, None, JobState::Pending, t, 0)],
        "{c}: jobs are independent"
    );
}

async fn history_capped(store: Arc<dyn JobHistoryStore>) {
    let c = "history/capped";
    let cap = crate::store::job_history::MAX_RECORDS_PER_JOB;
    let j = JobId::new();
    let t = now_ms();
    ok(
        store.record(&step(j, None, JobState::Pending, t, 0)).await,
        c,
    );
    let n = cap + 10;
    for i in 1..n {
        let (from, to) = if i % 2 == 1 {
            (JobState::Pending, JobState::Scheduled)
        } else {
            (JobState::Scheduled, JobState::Pending)
        };
        let attempt = u32::try_from(i).unwrap_or(u32::MAX);
        ok(
            store
                .record(&step(
                    j,
                    Some(from),
                    to,
                    t + TimeDelta::milliseconds(i64::try_from(i).unwrap_or(0)),
                    attempt,
                ))
                .await,
            c,
        );
    }
    let got = ok(store.history(j).await, c);
    assert_eq!(got.len(), cap, "{c}: at most {cap} records");
    assert_eq!(got[0].from, None, "{c}: the creation is kept");
    assert_eq!(
        got.last().map(|r| r.attempt),
        Some(u32::try_from(n - 1).unwrap_or(u32::MAX)),
        "{c}: the latest is kept"
    );
    assert_eq!(
        got[1].attempt,
        u32::try_from(n - cap + 1).unwrap_or(u32::MAX),
        "{c}: the oldest after the creation were dropped"
    );
}

async fn history_pruned(store: Arc<dyn JobHistoryStore>) {
    let c = "history/pruned";
    let t = now_ms();
    let old = t - TimeDelta::hours(2);
    let done_long_ago = JobId::new();
    let done_recently = JobId::new();
    let still_running = JobId::new();
    for r in [
        step(done_long_ago, None, JobState::Pending, old, 0),
        step(
            done_long_ago,
            Some(JobState::Pending),
            JobState::Cancelled,
            old,
            0,
        ),
        step(done_recently, None, JobState::Pending, old, 0),
        step(
            done_recently,
            Some(JobState::Pending),
            JobState::Scheduled,
            old,
            1,
        ),
        step(
            done_recently,
            Some(JobState::Scheduled),
            JobState::Timeout,
            t,
            1,
        ),
        step(still_running, None, JobState::Pending, old, 0),
        step(
            still_running,
            Some(JobState::Pending),
            JobState::Scheduled,
            old,
            1,
        ),
    ] {
        ok(store.record(&r).await, c);
    }
    let n = ok(store.prune_finished(t - TimeDelta::hours(1)).await, c);
    assert_eq!(n, 2, "{c}: the two records of the job finished long ago");
    assert!(
        ok(store.history(done_long_ago).await, c).is_empty(),
        "{c}: pruned"
    );
    assert_eq!(
        ok(store.history(done_recently).await, c).len(),
        3,
        "{c}: kept"
    );
    assert_eq!(
        ok(store.history(still_running).await, c).len(),
        2,
        "{c}: kept"
    );
    assert_eq!(
        ok(store.prune_finished(t - TimeDelta::hours(1)).await, c),
        0,
        "{c}: nothing more"
    );
}
