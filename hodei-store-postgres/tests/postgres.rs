//! Postgres-specific behaviour: concurrency between replicas, LISTEN/NOTIFY,
//! concurrent migrations, input the database rejects, the leader lease.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{TimeDelta, Utc};
use common::TestDb;
use futures::StreamExt;
use hodei_core::domain::ids::{JobId, ProviderId};
use hodei_core::domain::job::{Job, JobState};
use hodei_core::domain::logs::{LogEntry, LogStream};
use hodei_core::domain::provider::{Provider, ProviderCapabilities, ProviderConfig};
use hodei_core::domain::spec::{CommandType, JobSpec};
use hodei_core::store::{JobQueue, LogCursor, QueueEntry, StoreError};
use hodei_store_postgres::{PgLeaderLease, PgStoreConfig, connect, migrate};

const LEASE: Duration = Duration::from_secs(60);

fn job(name: &str) -> Job {
    Job::new(JobSpec::new(name, CommandType::shell("true", [""; 0])))
}

fn entries(n: usize) -> Vec<QueueEntry> {
    let t = Utc::now();
    (0..n)
        .map(|i| QueueEntry {
            job_id: JobId::new(),
            priority: (i % 3) as i32,
            enqueued_at: t + TimeDelta::microseconds(i as i64),
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_claimers_on_two_replicas_never_share_a_job() {
    let Some(db) = TestDb::create("concurrent_claimers").await else {
        return;
    };
    // Two "replicas": separate pools on one database.
    let a = db.stores().await;
    let b = db.stores().await;
    let all = entries(1000);
    for chunk in all.chunks(250) {
        assert_eq!(a.queue().enqueue_many(chunk).await.unwrap(), 250);
    }
    assert_eq!(
        a.queue().enqueue_many(&all[..10]).await.unwrap(),
        0,
        "no duplicates"
    );
    assert_eq!(b.stores().queue.len().await.unwrap(), 1000);

    let mut tasks = Vec::new();
    for i in 0..8 {
        let q = if i % 2 == 0 {
            a.stores().queue
        } else {
            b.stores().queue
        };
        tasks.push(tokio::spawn(async move {
            let mut got = Vec::new();
            loop {
                let leases = q.claim(7, LEASE).await.unwrap();
                if leases.is_empty() {
                    break;
                }
                for l in leases {
                    q.complete(&l).await.unwrap();
                    got.push(l.entry.job_id);
                }
            }
            got
        }));
    }
    let mut seen = HashSet::new();
    let mut per_task = Vec::new();
    for t in tasks {
        let got = t.await.unwrap();
        per_task.push(got.len());
        for id in got {
            assert!(seen.insert(id), "job {id} claimed twice");
        }
    }
    assert_eq!(seen.len(), 1000, "every job claimed once");
    assert!(
        per_task.iter().filter(|n| **n > 0).count() > 1,
        "claims were spread over tasks: {per_task:?}"
    );
    assert!(a.stores().queue.is_empty().await.unwrap());
    db.drop_db().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notify_wakes_an_idle_listener_on_another_replica() {
    let Some(db) = TestDb::create("notify_wakes").await else {
        return;
    };
    let producer = db.stores().await;
    let consumer = db.stores().await;
    let mut wakes = consumer
        .stores()
        .queue
        .work_notifications()
        .expect("a stream");
    // The first wake-up follows the LISTEN (anything before it was missed).
    tokio::time::timeout(Duration::from_secs(10), wakes.next())
        .await
        .expect("listening")
        .expect("open");
    // Idle: nothing arrives.
    assert!(
        tokio::time::timeout(Duration::from_millis(200), wakes.next())
            .await
            .is_err(),
        "no wake-up without work"
    );
    let mut latencies = Vec::new();
    for _ in 0..20 {
        let t = Instant::now();
        producer
            .stores()
            .queue
            .enqueue(entries(1).remove(0))
            .await
            .unwrap();
        tokio::time::timeout(Duration::from_secs(2), wakes.next())
            .await
            .expect("woken within 2 s")
            .expect("open");
        latencies.push(t.elapsed());
    }
    latencies.sort();
    eprintln!(
        "NOTIFY wake-up latency: p50 {:?}, max {:?}",
        latencies[10], latencies[19]
    );
    assert!(latencies[10] < Duration::from_millis(500));
    // Releasing a lease wakes too (the job is claimable again).
    let lease = consumer
        .stores()
        .queue
        .claim(1, LEASE)
        .await
        .unwrap()
        .remove(0);
    producer.stores().queue.release(&lease).await.unwrap();
    tokio::time::timeout(Duration::from_secs(2), wakes.next())
        .await
        .expect("woken by release")
        .expect("open");
    drop(wakes);
    db.drop_db().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_updates_of_one_version_only_one_wins() {
    let Some(db) = TestDb::create("stale_version").await else {
        return;
    };
    let stores = db.stores().await;
    let repo = stores.stores().jobs;
    let stored = repo.insert(&job("contended")).await.unwrap();
    let mut tasks = Vec::new();
    for i in 0..8 {
        let repo = repo.clone();
        let mut copy = stored.clone();
        tasks.push(tokio::spawn(async move {
            if i % 2 == 0 {
                copy.cancel(format!("by {i}")).unwrap();
            } else {
                copy.submit_to_provider(ProviderId::new(), None).unwrap();
            }
            repo.update(&copy).await
        }));
    }
    let mut wins = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(j) => {
                wins += 1;
                assert_eq!(j.version(), 2);
            }
            Err(StoreError::Conflict {
                expected, actual, ..
            }) => {
                assert_eq!((expected, actual), (1, 2));
            }
            Err(e) => panic!("unexpected {e:?}"),
        }
    }
    assert_eq!(wins, 1, "exactly one update of version 1 is applied");
    let now = repo.get(stored.id()).await.unwrap().unwrap();
    assert_eq!(now.version(), 2);
    assert_ne!(now.state(), JobState::Pending);
    db.drop_db().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn replicas_migrating_at_once_apply_each_migration_once() {
    let Some(db) = TestDb::create("concurrent_migrations").await else {
        return;
    };
    let pools: Vec<_> = futures::future::join_all((0..4).map(|_| db.pool(2))).await;
    let results =
        futures::future::join_all(pools.iter().map(|p| async move { migrate(p).await })).await;
    for r in results {
        r.expect("every concurrent migrator succeeds");
    }
    let applied: i64 = sqlx::query_scalar("SELECT count(*) FROM _sqlx_migrations WHERE success")
        .fetch_one(&pools[0])
        .await
        .unwrap();
    assert_eq!(
        applied as usize,
        hodei_store_postgres::MIGRATOR.iter().count()
    );
    // And connect() on the migrated database is a no-op migration.
    let stores = db.stores().await;
    stores.ping().await.unwrap();
    for p in pools {
        p.close().await;
    }
    db.drop_db().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn values_the_database_rejects_are_invalid_and_touch_nothing() {
    let Some(db) = TestDb::create("invalid_values").await else {
        return;
    };
    let config = PgStoreConfig::new(&db.url).with_max_job_bytes(64 * 1024);
    let stores = connect(&config).await.unwrap();
    let repo = stores.stores().jobs;

    // A NUL byte cannot be stored in Postgres text/jsonb.
    let nul = Job::new(JobSpec::new(
        "nul",
        CommandType::script("bash", "echo a\0b"),
    ));
    match repo.insert(&nul).await {
        Err(StoreError::Invalid { field, message }) => {
            assert_eq!(field, "spec");
            assert!(message.contains("22P05"), "{message}");
        }
        other => panic!("NUL in a spec must be Invalid, got {other:?}"),
    }
    assert!(
        repo.get(nul.id()).await.unwrap().is_none(),
        "nothing stored"
    );

    // A stored job is left untouched by a refused update.
    let good = repo.insert(&job("good")).await.unwrap();
    let bad_update: Job = {
        let mut v = serde_json::to_value(&good).unwrap();
        v["spec"]["name"] = serde_json::Value::String("bad\0name".into());
        serde_json::from_value(v).unwrap()
    };
    assert!(matches!(
        repo.update(&bad_update).await,
        Err(StoreError::Invalid { .. })
    ));
    let after = repo.get(good.id()).await.unwrap().unwrap();
    assert_eq!(after.version(), 1);
    assert_eq!(after.spec().name, "good");

    // Oversized: over the configured limit.
    let big = Job::new(JobSpec::new(
        "big",
        CommandType::script("bash", "x".repeat(100 * 1024)),
    ));
    match repo.insert(&big).await {
        Err(StoreError::Invalid { field, .. }) => assert_eq!(field, "spec"),
        other => panic!("an oversized spec must be Invalid, got {other:?}"),
    }
    assert!(repo.get(big.id()).await.unwrap().is_none());

    // Oversized for an index entry: the database itself refuses (54000).
    let providers = stores.stores().providers;
    let long_name: String = (0..6000)
        .map(|i| char::from(b'a' + ((i * 7919 + i / 13) % 26) as u8))
        .collect();
    let random_name: String = {
        use std::fmt::Write;
        let mut s = String::new();
        while s.len() < 12_000 {
            write!(s, "{}", uuid::Uuid::new_v4().simple()).unwrap();
        }
        s
    };
    for (strict, name) in [(false, long_name), (true, random_name)] {
        let p = Provider::new(
            ProviderId::new(),
            name,
            ProviderConfig::Custom {
                settings: Default::default(),
            },
            ProviderCapabilities::default(),
        );
        match providers.save(&p).await {
            Err(StoreError::Invalid { field, message }) => {
                assert_eq!(field, "provider");
                assert!(message.contains("54000"), "{message}");
            }
            Ok(()) if strict => panic!("a 12 kB random name cannot fit a btree entry"),
            // Compressible names can fit the index; then they must round-trip.
            Ok(()) => assert_eq!(
                providers.get(p.id()).await.unwrap().unwrap().name(),
                p.name()
            ),
            Err(e) => panic!("unexpected {e:?}"),
        }
    }
    let nul_name = Provider::new(
        ProviderId::new(),
        "a\0b",
        ProviderConfig::Custom {
            settings: Default::default(),
        },
        ProviderCapabilities::default(),
    );
    match providers.save(&nul_name).await {
        Err(StoreError::Invalid { field, .. }) => assert_eq!(field, "provider"),
        other => panic!("NUL in a name must be Invalid, got {other:?}"),
    }

    // Log data is bytes: a NUL byte is fine there.
    let logs = stores.stores().logs;
    let id = JobId::new();
    let s = logs
        .append(
            id,
            1,
            &[LogEntry::new(1, LogStream::Stdout, &b"a\0b\xff"[..])],
        )
        .await
        .unwrap();
    assert_eq!(s, 1);
    let got = logs.read(id, LogCursor::default(), 10).await.unwrap();
    assert_eq!(&got[0].entry.data[..], b"a\0b\xff");
    db.drop_db().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_is_gone_is_unavailable() {
    let Some(db) = TestDb::create("unavailable").await else {
        return;
    };
    let stores = db.stores().await;
    stores.pool().close().await;
    match stores.stores().jobs.get(JobId::new()).await {
        Err(StoreError::Unavailable(_)) => {}
        other => panic!("a closed pool must be Unavailable, got {other:?}"),
    }
    db.drop_db().await;
    // Connecting to a port nobody listens on fails with a connect error.
    let config = PgStoreConfig::new("postgres://postgres@127.0.0.1:1/x")
        .with_connect_timeout(Duration::from_secs(2));
    assert!(matches!(
        connect(&config).await,
        Err(hodei_store_postgres::PgStoreError::Connect(_))
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_out_of_order_log_batches_report_the_contiguous_sequence() {
    let Some(db) = TestDb::create("log_batches").await else {
        return;
    };
    let stores = db.stores().await;
    let logs = stores.stores().logs;
    let id = JobId::new();
    // 400 entries in 40 batches of 10, appended by 8 tasks in scrambled order, some twice.
    let mut batches: Vec<Vec<LogEntry>> = (0..40)
        .map(|b| {
            (1..=10)
                .map(|i| {
                    LogEntry::new(
                        b * 10 + i,
                        LogStream::Stdout,
                        format!("line {}", b * 10 + i),
                    )
                })
                .collect()
        })
        .collect();
    batches.reverse();
    batches.extend(batches.clone().into_iter().step_by(3));
    let batches = Arc::new(batches);
    let mut tasks = Vec::new();
    for t in 0..8 {
        let logs = logs.clone();
        let batches = batches.clone();
        tasks.push(tokio::spawn(async move {
            for b in batches.iter().skip(t).step_by(8) {
                logs.append(id, 1, b).await.unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(logs.last_sequence(id, 1).await.unwrap(), 400);
    let all = logs.read(id, LogCursor::default(), 1000).await.unwrap();
    let seqs: Vec<u64> = all.iter().map(|e| e.entry.sequence).collect();
    assert_eq!(
        seqs,
        (1..=400).collect::<Vec<_>>(),
        "every line once, in order"
    );
    db.drop_db().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pruning_a_finished_job_deletes_its_logs() {
    let Some(db) = TestDb::create("prune_logs").await else {
        return;
    };
    let stores = db.stores().await;
    let s = stores.stores();
    let mut done = job("done");
    done.cancel("x").unwrap();
    s.jobs.insert(&done).await.unwrap();
    let live = s.jobs.insert(&job("live")).await.unwrap();
    for j in [done.id(), live.id()] {
        s.logs
            .append(j, 1, &[LogEntry::new(1, LogStream::Stdout, "x")])
            .await
            .unwrap();
    }
    assert_eq!(
        s.jobs
            .prune_finished(Utc::now() + TimeDelta::seconds(1))
            .await
            .unwrap(),
        1
    );
    assert!(
        s.logs
            .read(done.id(), LogCursor::default(), 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(s.logs.last_sequence(done.id(), 1).await.unwrap(), 0);
    assert_eq!(
        s.logs
            .read(live.id(), LogCursor::default(), 10)
            .await
            .unwrap()
            .len(),
        1
    );
    db.drop_db().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_leader_and_takeover_after_the_ttl() {
    let Some(db) = TestDb::create("leader_lease").await else {
        return;
    };
    let stores = db.stores().await;
    let ttl = Duration::from_millis(800);
    let a = PgLeaderLease::new(stores.pool().clone(), "maintenance", "replica-a", ttl);
    let b = stores.leader_lease("maintenance", "replica-b", ttl);
    let other = stores.leader_lease("other-work", "replica-b", ttl);

    assert!(
        a.try_acquire_or_renew().await.unwrap(),
        "a takes the free lease"
    );
    assert!(
        !b.try_acquire_or_renew().await.unwrap(),
        "b does not while a holds it"
    );
    assert!(
        other.try_acquire_or_renew().await.unwrap(),
        "names are independent"
    );
    // a keeps renewing past several ttls; b never leads meanwhile.
    let until = Instant::now() + ttl * 3;
    while Instant::now() < until {
        assert!(a.try_acquire_or_renew().await.unwrap(), "a renews");
        assert!(!b.try_acquire_or_renew().await.unwrap(), "only one leads");
        tokio::time::sleep(ttl / 4).await;
    }
    assert_eq!(
        a.current_holder().await.unwrap().as_deref(),
        Some("replica-a")
    );
    // a stops renewing (dies): b takes over once the ttl ran out, not before.
    let stopped = Instant::now();
    let took_over = loop {
        if b.try_acquire_or_renew().await.unwrap() {
            break stopped.elapsed();
        }
        assert!(stopped.elapsed() < ttl * 4, "b never took over");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(
        took_over >= ttl / 2,
        "not before the lease expired: {took_over:?}"
    );
    assert!(
        !a.try_acquire_or_renew().await.unwrap(),
        "the old leader lost it"
    );
    // A clean release hands over at once.
    assert!(b.release().await.unwrap());
    assert!(!b.release().await.unwrap(), "release twice");
    assert!(
        a.try_acquire_or_renew().await.unwrap(),
        "free again after release"
    );
    db.drop_db().await;
}

/// The queue vacuums `job_queue` itself after `with_vacuum_every` claims:
/// the dead index entries that claims leave are gone without autovacuum.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_queue_vacuums_itself_after_enough_claims() {
    let Some(db) = TestDb::create("queue_vacuum").await else {
        return;
    };
    let stores = db.stores().await;
    let pool = stores.pool().clone();
    let q = hodei_store_postgres::PgJobQueue::new(pool.clone()).with_vacuum_every(200);
    assert_eq!(q.enqueue_many(&entries(500)).await.unwrap(), 500);
    let vacuums = || async {
        sqlx::query_scalar::<_, i64>(
            "SELECT vacuum_count FROM pg_stat_user_tables WHERE relname = 'job_queue'",
        )
        .fetch_one(&pool)
        .await
        .unwrap()
    };
    let before = vacuums().await;
    let mut claimed = 0;
    while claimed < 150 {
        let leases = q.claim(10, Duration::from_secs(60)).await.unwrap();
        claimed += leases.len();
        assert!(q.complete_many(&leases).await.unwrap().is_empty());
    }
    // Below the threshold: no vacuum of its own (autovacuum is not counted
    // in vacuum_count).
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_eq!(vacuums().await, before, "no vacuum before 200 claims");
    while claimed < 250 {
        let leases = q.claim(10, Duration::from_secs(60)).await.unwrap();
        claimed += leases.len();
        assert!(q.complete_many(&leases).await.unwrap().is_empty());
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    while vacuums().await == before {
        assert!(Instant::now() < deadline, "no vacuum after 250 claims");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(
        q.len().await.unwrap(),
        250,
        "the vacuum touched no live entry"
    );
}

/// Two replicas on one database: a log batch stored through one wakes the
/// log subscribers of the other at once (LISTEN/NOTIFY), instead of leaving
/// them to their quiet re-check; a replica is not woken by its own appends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_log_batch_stored_by_one_replica_wakes_the_followers_of_the_other() {
    use hodei_core::control::LogHub;
    let Some(db) = TestDb::create("log_wakes").await else {
        return;
    };
    let (a, b) = (db.stores().await, db.stores().await);
    let hub_a = LogHub::new(a.stores().logs);
    let hub_b = LogHub::new(b.stores().logs);
    let job = JobId::new();
    let mut on_a = hub_a.subscribe(job);
    let mut on_b = hub_b.subscribe(job);
    // The LISTEN connections come up in the background: append until B hears.
    let mut sequence = 0;
    let woken = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            sequence += 1;
            let line = LogEntry::new(sequence, LogStream::Stdout, format!("line {sequence}"));
            hub_a.append(job, 1, vec![line]).await.unwrap();
            match tokio::time::timeout(Duration::from_millis(200), on_b.recv()).await {
                Ok(Ok(chunk)) => return chunk,
                Ok(Err(e)) => panic!("B's feed broke: {e}"),
                Err(_) => {}
            }
        }
    })
    .await
    .expect("B was never woken by A's appends");
    assert!(woken.is_stored_elsewhere(), "{woken:?}");
    let stored = hub_b.read(job, LogCursor::default(), 100).await.unwrap();
    assert_eq!(stored.len() as u64, sequence, "B reads what A stored");
    // A's own subscribers get the entries themselves, never a wake-up for them.
    while let Ok(chunk) = on_a.try_recv() {
        assert!(!chunk.is_stored_elsewhere(), "A woken by its own append");
    }
    db.drop_db().await;
}

/// Two replicas (two pools) binding at once: of eight bindings of eight jobs
/// to one worker from the same copy of it, exactly one is written (the
/// worker's version decides), and the others write nothing: their jobs stay
/// pending with their entries free. Of four bindings of one job to four
/// workers, exactly one is written (the entry and the job's version decide).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_bindings_on_two_replicas_write_exactly_one() {
    use hodei_core::domain::ids::WorkerId;
    use hodei_core::domain::worker::{Worker, WorkerHandle};
    use hodei_core::store::{BindOutcome, Binding, JobTransitionRecord};

    let Some(db) = TestDb::create("concurrent_bind").await else {
        return;
    };
    let (a, b) = (db.stores().await, db.stores().await);
    let (a, b) = (a.stores(), b.stores());
    let provider = ProviderId::new();
    let ready = |slots: u32| {
        let mut w = Worker::new(WorkerId::new(), provider).with_limits(slots, None);
        w.created(WorkerHandle::new(w.id(), provider, "ext-bind"))
            .unwrap();
        w.registered().unwrap();
        w
    };
    let queued = |name: &'static str| {
        let a = a.clone();
        async move {
            let j = a.jobs.insert(&job(name)).await.unwrap();
            a.queue
                .enqueue(QueueEntry {
                    job_id: j.id(),
                    priority: 0,
                    enqueued_at: Utc::now(),
                })
                .await
                .unwrap();
            j
        }
    };
    let binding = |worker: &Worker, job: &Job| {
        let mut w = worker.clone();
        w.assign(job.id()).unwrap();
        let mut j = job.clone();
        let t = j.submit_to_provider(provider, Some(w.id())).unwrap();
        let record = JobTransitionRecord::new(j.id(), Some(t.from), t.to, j.updated_at(), 1)
            .with_worker(Some(w.id()));
        Binding::new(w, j, record)
    };

    // Eight jobs, one worker copy.
    let worker = a.workers.register(&ready(8)).await.unwrap();
    let mut jobs = Vec::new();
    for _ in 0..8 {
        jobs.push(queued("one worker").await);
    }
    let mut tasks = Vec::new();
    for (i, j) in jobs.iter().enumerate() {
        let stores = if i % 2 == 0 { a.clone() } else { b.clone() };
        let binding = binding(&worker, j);
        tasks.push(tokio::spawn(async move {
            let t = stores.queue_transactions.clone().unwrap();
            t.bind(&binding).await.unwrap()
        }));
    }
    let mut bound = 0;
    for t in tasks {
        match t.await.unwrap() {
            BindOutcome::Bound { worker: w, .. } => {
                bound += 1;
                assert_eq!(w.version(), worker.version() + 1);
            }
            BindOutcome::Stale => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(bound, 1, "one binding from one worker version");
    let stored = a.workers.get(worker.id()).await.unwrap().unwrap();
    assert_eq!(stored.current_jobs().len(), 1);
    let pending = futures::future::join_all(jobs.iter().map(|j| a.jobs.get(j.id()))).await;
    let still_pending = pending
        .into_iter()
        .filter(|j| j.as_ref().unwrap().as_ref().unwrap().state() == JobState::Pending)
        .count();
    assert_eq!(still_pending, 7, "the refused bindings wrote nothing");
    assert_eq!(a.queue.len().await.unwrap(), 7, "their entries are free");

    // One job, four workers.
    let contended = queued("one job").await;
    let mut tasks = Vec::new();
    for i in 0..4 {
        let stores = if i % 2 == 0 { a.clone() } else { b.clone() };
        let w = a.workers.register(&ready(1)).await.unwrap();
        let binding = binding(&w, &contended);
        tasks.push(tokio::spawn(async move {
            let t = stores.queue_transactions.clone().unwrap();
            t.bind(&binding).await.unwrap()
        }));
    }
    let mut bound = 0;
    for t in tasks {
        match t.await.unwrap() {
            BindOutcome::Bound { .. } => bound += 1,
            BindOutcome::EntryTaken | BindOutcome::Stale => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(bound, 1, "one job is bound once");
    let history = a.job_history.history(contended.id()).await.unwrap();
    assert_eq!(history.len(), 1, "one record of it");
    db.drop_db().await;
}
