//! Conformance of the scheduling parts of the stores: whole-queue walks and
//! the shared [`SchedulingStore`]. The same cases pass on memory and Postgres.
//!
//! Like [`super::stores`], every function panics on the first deviation.

use std::collections::HashSet;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};

use crate::domain::ids::JobId;
use crate::scheduler::{Strategy, aged_rank};
use crate::store::{JobQueue, QueueCursor, QueueEntry, QueueOrder, SchedulingStore, SlotGrant};

#[track_caller]
pub(super) fn ok<T, E: std::fmt::Debug>(r: Result<T, E>, what: &str) -> T {
    match r {
        Ok(v) => v,
        Err(e) => panic!("scheduling conformance: {what}: unexpected error {e:?}"),
    }
}

pub(super) fn now_ms() -> DateTime<Utc> {
    let now = Utc::now();
    DateTime::from_timestamp_millis(now.timestamp_millis()).unwrap_or(now)
}

pub(super) fn entry(job_id: JobId, priority: i32, enqueued_at: DateTime<Utc>) -> QueueEntry {
    QueueEntry {
        job_id,
        priority,
        enqueued_at,
    }
}

/// Walks the whole queue in `order`, `page` entries at a time.
async fn walk(q: &Arc<dyn JobQueue>, order: QueueOrder, page: usize, c: &str) -> Vec<QueueEntry> {
    let mut out = Vec::new();
    let mut cursor: Option<QueueCursor> = None;
    loop {
        let p = ok(q.scan(order, cursor, page).await, c);
        assert!(
            p.entries.len() <= page,
            "{c}: a page holds at most its limit"
        );
        out.extend(p.entries);
        match p.next {
            Some(n) => cursor = Some(n),
            None => return out,
        }
        assert!(out.len() <= 100_000, "{c}: the walk does not end");
    }
}

// ---------------------------------------------------------------------------
// Queue walks
// ---------------------------------------------------------------------------

/// Every [`JobQueue::scan`] case. `make` returns a fresh, empty queue.
pub async fn queue_scan_conformance<F, Fut>(make: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = Arc<dyn JobQueue>>,
{
    scan_walks_the_whole_queue(make().await).await;
    scan_ties_across_pages(make().await).await;
    scan_aging_beats_raw_priority(make().await).await;
}

async fn scan_walks_the_whole_queue(q: Arc<dyn JobQueue>) {
    let c = "queue/scan-whole";
    let t0 = now_ms() - TimeDelta::minutes(30);
    let mut all = Vec::new();
    for i in 0..600_i64 {
        let id = JobId::new();
        let prio = i32::try_from(i % 7).unwrap_or(0) * 100 - 300;
        let e = entry(id, prio, t0 + TimeDelta::milliseconds(i * 1_700 % 900_000));
        ok(q.enqueue(e.clone()).await, c);
        all.push(e);
    }
    let aged = walk(&q, QueueOrder::Aged, 64, c).await;
    assert_eq!(aged.len(), 600, "{c}: every entry, once");
    let ids: HashSet<JobId> = aged.iter().map(|e| e.job_id).collect();
    assert_eq!(ids.len(), 600, "{c}: no entry twice");
    for w in aged.windows(2) {
        assert!(
            aged_rank(w[0].priority, w[0].enqueued_at)
                >= aged_rank(w[1].priority, w[1].enqueued_at),
            "{c}: aged order: {:?} before {:?}",
            w[0],
            w[1]
        );
    }
    let head: Vec<JobId> = ok(q.peek(64).await, c).iter().map(|e| e.job_id).collect();
    let first: Vec<JobId> = aged[..64].iter().map(|e| e.job_id).collect();
    assert_eq!(head, first, "{c}: peek is the first page of the aged walk");

    let fifo = walk(&q, QueueOrder::Fifo, 50, c).await;
    assert_eq!(fifo.len(), 600, "{c}: fifo walk sees every entry");
    for w in fifo.windows(2) {
        assert!(w[0].enqueued_at <= w[1].enqueued_at, "{c}: fifo order");
    }

    // Claimed entries drop out of walks.
    let leases = ok(q.claim(10, Duration::from_secs(60)).await, c);
    let claimed: Vec<JobId> = leases.iter().map(|l| l.entry.job_id).collect();
    assert_eq!(
        claimed,
        ids_of(&aged[..10]),
        "{c}: claim takes the aged head"
    );
    let rest = walk(&q, QueueOrder::Aged, 64, c).await;
    assert_eq!(
        ids_of(&rest),
        ids_of(&aged[10..]),
        "{c}: claimed entries are skipped"
    );

    let empty = ok(
        q.scan(
            QueueOrder::Aged,
            Some(QueueCursor::new(i64::MAX, i64::MAX)),
            10,
        )
        .await,
        c,
    );
    assert!(
        empty.entries.is_empty() && empty.next.is_none(),
        "{c}: past the end"
    );
    let none = ok(q.scan(QueueOrder::Aged, None, 0).await, c);
    assert!(none.entries.is_empty(), "{c}: limit 0");
}

fn ids_of(e: &[QueueEntry]) -> Vec<JobId> {
    e.iter().map(|e| e.job_id).collect()
}

async fn scan_ties_across_pages(q: Arc<dyn JobQueue>) {
    let c = "queue/scan-ties";
    let t = now_ms();
    let ids: Vec<JobId> = (0..7).map(|_| JobId::new()).collect();
    for id in &ids {
        ok(q.enqueue(entry(*id, 5, t)).await, c);
    }
    for order in [QueueOrder::Aged, QueueOrder::Fifo] {
        let got = walk(&q, order, 2, c).await;
        assert_eq!(
            ids_of(&got),
            ids,
            "{c}: equal keys walk in enqueue order ({order:?})"
        );
    }
}

async fn scan_aging_beats_raw_priority(q: Arc<dyn JobQueue>) {
    let c = "queue/scan-aging";
    let now = now_ms();
    for _ in 0..300 {
        ok(q.enqueue(entry(JobId::new(), 1000, now)).await, c);
    }
    // -1000 + 10 points a minute for 201 minutes = 1010 > 1000.
    let old = JobId::new();
    ok(
        q.enqueue(entry(old, -1000, now - TimeDelta::minutes(201)))
            .await,
        c,
    );
    let first = ok(q.scan(QueueOrder::Aged, None, 1).await, c);
    assert_eq!(
        ids_of(&first.entries),
        vec![old],
        "{c}: an old low-priority job is ahead of 300 fresh high-priority ones"
    );
    let claimed = ok(q.claim(1, Duration::from_secs(60)).await, c);
    assert_eq!(
        claimed[0].entry.job_id, old,
        "{c}: claim uses the same order"
    );
}

// ---------------------------------------------------------------------------
// Scheduling store
// ---------------------------------------------------------------------------

/// Every [`SchedulingStore`] case. `make` returns a fresh, empty store.
pub async fn scheduling_store_conformance<F, Fut>(make: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = Arc<dyn SchedulingStore>>,
{
    strategy_stored(make().await).await;
    limits_crud(make().await).await;
    slots_respect_limits(make().await).await;
    slots_atomic_under_contention(make().await).await;
}

async fn strategy_stored(s: Arc<dyn SchedulingStore>) {
    let c = "scheduling/strategy";
    assert_eq!(ok(s.strategy().await, c), None, "{c}: none at first");
    for st in Strategy::ALL {
        ok(s.set_strategy(st).await, c);
        assert_eq!(ok(s.strategy().await, c), Some(st), "{c}: {st}");
    }
}

async fn limits_crud(s: Arc<dyn SchedulingStore>) {
    let c = "scheduling/limits";
    assert!(
        ok(s.list_concurrency_limits().await, c).is_empty(),
        "{c}: empty"
    );
    assert_eq!(ok(s.concurrency_limit("b").await, c), None, "{c}: unknown");
    let b = ok(s.set_concurrency_limit("b", 2).await, c);
    assert_eq!((b.key.as_str(), b.max_running), ("b", 2), "{c}: as stored");
    ok(s.set_concurrency_limit("a/x:1", 0).await, c);
    ok(s.set_concurrency_limit("b", 5).await, c);
    let all = ok(s.list_concurrency_limits().await, c);
    let got: Vec<(String, u32)> = all.iter().map(|l| (l.key.clone(), l.max_running)).collect();
    assert_eq!(
        got,
        vec![("a/x:1".to_owned(), 0), ("b".to_owned(), 5)],
        "{c}: by key, replaced in place"
    );
    assert!(ok(s.delete_concurrency_limit("b").await, c), "{c}: deleted");
    assert!(!ok(s.delete_concurrency_limit("b").await, c), "{c}: gone");
    assert_eq!(ok(s.concurrency_limit("b").await, c), None, "{c}: gone");
}

async fn slots_respect_limits(s: Arc<dyn SchedulingStore>) {
    let c = "scheduling/slots";
    let now = now_ms();
    let (a, b, d) = (JobId::new(), JobId::new(), JobId::new());
    assert_eq!(
        ok(s.try_acquire_slot("k", a, now).await, c),
        SlotGrant::Granted,
        "{c}: no limit grants"
    );
    ok(s.set_concurrency_limit("k", 2).await, c);
    assert_eq!(
        ok(s.try_acquire_slot("k", b, now).await, c),
        SlotGrant::Granted
    );
    assert_eq!(
        ok(s.try_acquire_slot("k", d, now).await, c),
        SlotGrant::Full { limit: 2, held: 2 },
        "{c}: full at the limit"
    );
    assert_eq!(
        ok(
            s.try_acquire_slot("k", a, now + TimeDelta::seconds(5))
                .await,
            c
        ),
        SlotGrant::Granted,
        "{c}: a holder taking its slot again is granted"
    );
    assert_eq!(
        ok(s.try_acquire_slot("other", d, now).await, c),
        SlotGrant::Granted,
        "{c}: keys are independent"
    );
    let held: Vec<JobId> = ok(s.slots(Some("k")).await, c)
        .iter()
        .map(|h| h.job_id)
        .collect();
    assert_eq!(held.len(), 2, "{c}: two holders of k");
    assert!(
        held.contains(&a) && held.contains(&b),
        "{c}: a and b hold k"
    );
    let a_slot = ok(s.slots(Some("k")).await, c)
        .into_iter()
        .find(|h| h.job_id == a);
    assert_eq!(
        a_slot.map(|h| h.acquired_at.timestamp_millis()),
        Some(now.timestamp_millis()),
        "{c}: taking a slot again keeps its time"
    );
    assert!(ok(s.release_slot(a).await, c), "{c}: released");
    assert!(!ok(s.release_slot(a).await, c), "{c}: released once");
    ok(s.release_slot(d).await, c);
    assert_eq!(
        ok(s.try_acquire_slot("k", d, now).await, c),
        SlotGrant::Granted,
        "{c}: a freed slot is taken"
    );
    assert_eq!(ok(s.slots(None).await, c).len(), 2, "{c}: b and d hold k");
    ok(s.set_concurrency_limit("k", 0).await, c);
    assert_eq!(
        ok(s.try_acquire_slot("k", JobId::new(), now).await, c),
        SlotGrant::Full { limit: 0, held: 2 },
        "{c}: limit 0 holds every new job"
    );
}

async fn slots_atomic_under_contention(s: Arc<dyn SchedulingStore>) {
    let c = "scheduling/slots-atomic";
    ok(s.set_concurrency_limit("hot", 3).await, c);
    let now = now_ms();
    let tries = (0..24).map(|_| {
        let s = s.clone();
        async move { s.try_acquire_slot("hot", JobId::new(), now).await }
    });
    let results = futures::future::join_all(tries).await;
    let granted = results
        .into_iter()
        .map(|r| ok(r, c))
        .filter(|g| *g == SlotGrant::Granted)
        .count();
    assert_eq!(granted, 3, "{c}: exactly the limit, never more");
    assert_eq!(
        ok(s.slots(Some("hot")).await, c).len(),
        3,
        "{c}: three holders"
    );
}
