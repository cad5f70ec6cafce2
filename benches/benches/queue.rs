//! Queue throughput and pickup latency: Hodei's Postgres `JobQueue` side by
//! side with the `graphile_worker` crate, each on its own database of one
//! Postgres server, in the same run.
//!
//! ```text
//! HODEI_TEST_DATABASE_URL=postgres://postgres@127.0.0.1:5432/postgres \
//!     cargo bench -p hodei-benches --bench queue
//! HODEI_BENCH_FULL=1 …    # N = 10k and 100k (about 20 minutes on 2 cores)
//! HODEI_BENCH_1M=1 …       # instead of the sweep: 1M jobs, enqueue and drain
//! HODEI_BENCH_N=100000 HODEI_BENCH_NO_B1=1 HODEI_BENCH_PGQUEUER=0 …  # a narrower sweep
//! ```
//!
//! Without `HODEI_BENCH_FULL=1` the sweep is K ∈ {1, 8, 32} at N = 10k only.
//!
//! Throughput: enqueue N no-op jobs in batches of 1,000, then K concurrent
//! consumers claim and complete them until the queue is empty. Hodei runs
//! four ways: `b10 bef` is the queue as it was before its own vacuum (ten
//! entries per claim, each completion its own statement); `b=1` claims one
//! entry per round trip (like graphile's default fetch, and like the control
//! plane's `claim_job`); `b=10` ten per claim; `b10 ack` ten per claim and
//! the ten completions in one `complete_many` statement. graphile runs with
//! concurrency K: its default fetch mode (at N = 10k only: it is poll-bound,
//! about 100 jobs/s per slot) and its LocalQueue batch-fetch mode (`gw LQ`,
//! 100 jobs per fetch); its time ends when its jobs table is empty
//! (completions are batched, so the handler count alone would flatter it).
//! pgqueuer runs when `python3` can import `pgqueuer` and `asyncpg`
//! (`benches/peers/pgqueuer_bench.py`: K queue managers in one Python
//! process, 10 jobs per fetch; `HODEI_BENCH_PGQUEUER=0` skips it).
//! Latency: 200 jobs enqueued one at a time, 20 ms apart, into 8 idle
//! consumers woken by LISTEN/NOTIFY; pickup = claim time − enqueue time.
//! Dead tuples: `pg_stat_user_tables.n_dead_tup` of the queue table after
//! each run (vacuumed before each run; autovacuum may run during it).
#![allow(
    missing_docs,
    clippy::unwrap_used,
    clippy::expect_used,
    unreachable_pub,
    clippy::print_stdout
)]

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::Utc;
use futures::StreamExt;
use graphile_worker::{IntoTaskHandlerResult, JobSpec, TaskHandler, WorkerContext, WorkerOptions};
use hodei_core::domain::ids::JobId;
use hodei_core::store::{JobQueue, QueueEntry};
use hodei_store_postgres::{PgJobQueue, PgStoreConfig, PgStores, connect};
use serde::{Deserialize, Serialize};
use sqlx::Connection;
use sqlx::postgres::{PgConnection, PgPool, PgPoolOptions};

const LEASE: Duration = Duration::from_secs(300);
const ENQUEUE_BATCH: usize = 1000;
const LATENCY_JOBS: usize = 200;
const LATENCY_CONSUMERS: usize = 8;
/// graphile_worker's poll interval in this bench.
const GW_POLL_MS: u64 = 10;
/// A graphile run that takes longer than this is stopped and reported as such.
const GW_BUDGET: Duration = Duration::from_secs(90);

// ---------------------------------------------------------------------------
// Databases
// ---------------------------------------------------------------------------

fn with_database(url: &str, db: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let scheme_end = base.find("://").map_or(0, |i| i + 3);
    let host = match base[scheme_end..].find('/') {
        Some(i) => &base[..scheme_end + i],
        None => base,
    };
    match query {
        Some(q) => format!("{host}/{db}?{q}"),
        None => format!("{host}/{db}"),
    }
}

async fn admin(url: &str, sql: &str) {
    let mut c = PgConnection::connect(url).await.unwrap();
    sqlx::query(sql).execute(&mut c).await.unwrap();
    c.close().await.ok();
}

async fn dead_tuples(pool: &PgPool, schema: &str, table: &str) -> i64 {
    // Other backends flush their statistics at most once a second.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    sqlx::query_scalar(
        "SELECT coalesce(n_dead_tup, 0) FROM pg_stat_user_tables WHERE schemaname = $1 AND relname = $2",
    )
    .bind(schema)
    .bind(table)
    .fetch_optional(pool)
    .await
    .unwrap()
    .unwrap_or(0)
}

// ---------------------------------------------------------------------------
// Hodei
// ---------------------------------------------------------------------------

struct Run {
    enqueue_per_s: f64,
    jobs_per_s: f64,
    dead: i64,
}

/// How a hodei consumer runs: entries per claim, completions batched in one
/// statement or one by one, and the queue's own vacuum on or off.
#[derive(Clone, Copy)]
struct Mode {
    batch: usize,
    ack_many: bool,
    upkeep: bool,
}

/// A fresh `job_queue` (truncated, vacuumed) and N entries enqueued in
/// batches of [`ENQUEUE_BATCH`]; returns the enqueue rate and, per
/// `slice` entries, the rate of that slice.
async fn hodei_fill(stores: &PgStores, n: usize, slice: usize) -> (f64, Vec<f64>) {
    let pool = stores.pool().clone();
    sqlx::query("TRUNCATE job_queue")
        .execute(&pool)
        .await
        .unwrap();
    sqlx::query("VACUUM job_queue")
        .execute(&pool)
        .await
        .unwrap();
    let q = stores.queue();
    let t0 = Utc::now();
    let started = Instant::now();
    let mut slices = Vec::new();
    let mut slice_start = Instant::now();
    let mut i = 0usize;
    while i < n {
        let m = ENQUEUE_BATCH.min(n - i);
        let chunk: Vec<QueueEntry> = (i..i + m)
            .map(|j| QueueEntry {
                job_id: JobId::new(),
                priority: 0,
                enqueued_at: t0 + chrono::TimeDelta::microseconds(j as i64),
            })
            .collect();
        q.enqueue_many(&chunk).await.unwrap();
        i += m;
        if i.is_multiple_of(slice) {
            slices.push(slice as f64 / slice_start.elapsed().as_secs_f64());
            slice_start = Instant::now();
        }
    }
    (n as f64 / started.elapsed().as_secs_f64(), slices)
}

/// K consumers drain the queue in `mode`; returns jobs/s, the rate of each
/// `slice` jobs, and whether it finished within `budget`.
async fn hodei_drain(
    stores: &PgStores,
    n: usize,
    k: usize,
    mode: Mode,
    slice: usize,
    budget: Duration,
) -> (f64, Vec<f64>, bool) {
    let q: Arc<PgJobQueue> = Arc::new(if mode.upkeep {
        PgJobQueue::new(stores.pool().clone())
    } else {
        PgJobQueue::new(stores.pool().clone()).with_vacuum_every(0)
    });
    let done = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..k {
        let q = q.clone();
        let done = done.clone();
        let stop = stop.clone();
        tasks.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let leases = q.claim(mode.batch, LEASE).await.unwrap();
                if leases.is_empty() {
                    break;
                }
                if mode.ack_many {
                    assert!(q.complete_many(&leases).await.unwrap().is_empty());
                } else {
                    for l in &leases {
                        q.complete(l).await.unwrap();
                    }
                }
                done.fetch_add(leases.len() as u64, Ordering::Relaxed);
            }
        }));
    }
    // When each slice of `slice` jobs was done, sampled every 5 ms.
    let mut marks = vec![started];
    let mut finished = true;
    loop {
        let all_done = tasks.iter().all(|t| t.is_finished());
        let d = done.load(Ordering::Relaxed);
        while d >= (marks.len() * slice) as u64 {
            marks.push(Instant::now());
        }
        if all_done {
            break;
        }
        if started.elapsed() > budget && !stop.load(Ordering::Relaxed) {
            stop.store(true, Ordering::Relaxed);
            finished = false;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    for t in tasks {
        t.await.unwrap();
    }
    let secs = started.elapsed().as_secs_f64();
    let d = done.load(Ordering::Relaxed);
    let slices = marks
        .windows(2)
        .map(|w| slice as f64 / secs_until(w[0], w[1]))
        .collect();
    if finished {
        assert_eq!(d, n as u64, "every job done once");
    } else {
        println!(
            "hodei: only {d} of {n} jobs after {secs:.0} s (K={k}, b={}); stopping this run",
            mode.batch
        );
        sqlx::query("TRUNCATE job_queue")
            .execute(stores.pool())
            .await
            .unwrap();
    }
    (d as f64 / secs, slices, finished)
}

async fn hodei_throughput(stores: &PgStores, n: usize, k: usize, mode: Mode) -> Run {
    let (enqueue_per_s, _) = hodei_fill(stores, n, n).await;
    let (jobs_per_s, _, _) = hodei_drain(stores, n, k, mode, n, Duration::from_secs(600)).await;
    Run {
        enqueue_per_s,
        jobs_per_s,
        dead: dead_tuples(stores.pool(), "public", "job_queue").await,
    }
}

async fn hodei_latency(stores: &PgStores) -> Vec<Duration> {
    let lat = Arc::new(Mutex::new(Vec::new()));
    let mut consumers = Vec::new();
    let (ready_tx, mut ready_rx) = tokio::sync::mpsc::channel::<()>(LATENCY_CONSUMERS);
    for _ in 0..LATENCY_CONSUMERS {
        let q = stores.stores().queue;
        let lat = lat.clone();
        let ready = ready_tx.clone();
        consumers.push(tokio::spawn(async move {
            let mut wakes = q.work_notifications().expect("notifications");
            // The first wake-up confirms LISTEN is active.
            wakes.next().await;
            ready.send(()).await.ok();
            loop {
                let leases = q.claim(1, LEASE).await.unwrap();
                let now = Utc::now();
                for l in &leases {
                    let d = (now - l.entry.enqueued_at).to_std().unwrap_or_default();
                    lat.lock().unwrap().push(d);
                    q.complete(l).await.unwrap();
                }
                if !leases.is_empty() {
                    continue;
                }
                tokio::select! {
                    _ = wakes.next() => {}
                    // Slow poll as the fallback.
                    () = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
            }
        }));
    }
    for _ in 0..LATENCY_CONSUMERS {
        ready_rx.recv().await;
    }
    let q = stores.stores().queue;
    for _ in 0..LATENCY_JOBS {
        q.enqueue(QueueEntry {
            job_id: JobId::new(),
            priority: 0,
            enqueued_at: Utc::now(),
        })
        .await
        .unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    while lat.lock().unwrap().len() < LATENCY_JOBS {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    for c in consumers {
        c.abort();
        let _ = c.await;
    }
    let mut v = lat.lock().unwrap().clone();
    v.sort();
    v
}

// ---------------------------------------------------------------------------
// graphile_worker
// ---------------------------------------------------------------------------

static GW_DONE: AtomicU64 = AtomicU64::new(0);
static GW_LAT: Mutex<Vec<Duration>> = Mutex::new(Vec::new());

#[derive(Clone, Serialize, Deserialize)]
struct Noop {
    /// Enqueue time in microseconds since the epoch (0 = not measured).
    t: i64,
}

impl TaskHandler for Noop {
    const IDENTIFIER: &'static str = "noop";

    async fn run(self, _ctx: WorkerContext) -> impl IntoTaskHandlerResult {
        if self.t > 0 {
            let d = Utc::now().timestamp_micros() - self.t;
            GW_LAT
                .lock()
                .unwrap()
                .push(Duration::from_micros(u64::try_from(d).unwrap_or(0)));
        }
        GW_DONE.fetch_add(1, Ordering::Relaxed);
        Ok::<(), String>(())
    }
}

/// graphile's LocalQueue: jobs fetched per batch into each local cache.
const GW_LOCAL_QUEUE_SIZE: usize = 100;

/// A graphile worker with concurrency `k`; `local_queue` turns on its
/// LocalQueue batch-fetch mode (one fetch of up to [`GW_LOCAL_QUEUE_SIZE`]
/// jobs shared by the `k` slots).
async fn graphile_worker(url: &str, k: usize, local_queue: bool) -> Arc<graphile_worker::Worker> {
    let mut o = WorkerOptions::default();
    if local_queue {
        o = o.local_queue(
            graphile_worker::LocalQueueConfig::builder()
                .size(GW_LOCAL_QUEUE_SIZE)
                .build(),
        );
    }
    let w = o
        .database_url(url)
        .max_pg_conn(u32::try_from(k).unwrap_or(32) + 4)
        .concurrency(k)
        // Its default poll leaves a busy queue waiting between fetches; a
        // short poll is its fastest configuration.
        .poll_interval(Duration::from_millis(GW_POLL_MS))
        .schema("graphile_worker")
        .define_job::<Noop>()
        .listen_os_shutdown_signals(false)
        .init()
        .await
        .expect("graphile_worker init");
    Arc::new(w)
}

async fn gw_remaining(pool: &PgPool) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM graphile_worker._private_jobs")
        .fetch_one(pool)
        .await
        .unwrap()
}

async fn graphile_throughput(
    url: &str,
    pool: &PgPool,
    n: usize,
    k: usize,
    local_queue: bool,
) -> Run {
    sqlx::query("VACUUM graphile_worker._private_jobs")
        .execute(pool)
        .await
        .unwrap();
    let worker = graphile_worker(url, k, local_queue).await;
    let utils = worker.create_utils();
    let spec = JobSpec::default();
    let started = Instant::now();
    let jobs: Vec<(Noop, &JobSpec)> = (0..ENQUEUE_BATCH).map(|_| (Noop { t: 0 }, &spec)).collect();
    let mut left = n;
    while left > 0 {
        let m = left.min(ENQUEUE_BATCH);
        utils.add_jobs(&jobs[..m]).await.expect("add_jobs");
        left -= m;
    }
    let enqueue_per_s = n as f64 / started.elapsed().as_secs_f64();

    GW_DONE.store(0, Ordering::Relaxed);
    let started = Instant::now();
    let runner = {
        let w = worker.clone();
        tokio::spawn(async move { w.run().await })
    };
    let mut last = (0, Instant::now());
    while GW_DONE.load(Ordering::Relaxed) < n as u64 || gw_remaining(pool).await > 0 {
        let done = GW_DONE.load(Ordering::Relaxed);
        if done != last.0 {
            last = (done, Instant::now());
        } else if last.1.elapsed() > Duration::from_secs(20) || started.elapsed() > GW_BUDGET {
            println!(
                "graphile_worker: only {done} of {n} jobs after {:.0} s (K={k}); stopping this run",
                started.elapsed().as_secs_f64()
            );
            worker.request_shutdown();
            runner.abort();
            sqlx::query("DELETE FROM graphile_worker._private_jobs")
                .execute(pool)
                .await
                .unwrap();
            return Run {
                enqueue_per_s,
                jobs_per_s: done as f64 / secs_until(started, Instant::now()),
                dead: -1,
            };
        }
        if runner.is_finished() {
            let r = runner.await;
            panic!(
                "graphile_worker stopped after {} of {n} jobs: {r:?}",
                GW_DONE.load(Ordering::Relaxed)
            );
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let secs = started.elapsed().as_secs_f64();
    worker.request_shutdown();
    let _ = tokio::time::timeout(Duration::from_secs(30), runner).await;
    assert_eq!(
        GW_DONE.load(Ordering::Relaxed),
        n as u64,
        "every job done once"
    );
    Run {
        enqueue_per_s,
        jobs_per_s: n as f64 / secs,
        dead: dead_tuples(pool, "graphile_worker", "_private_jobs").await,
    }
}

async fn graphile_latency(url: &str) -> Vec<Duration> {
    GW_LAT.lock().unwrap().clear();
    let worker = graphile_worker(url, LATENCY_CONSUMERS, false).await;
    let utils = worker.create_utils();
    let runner = {
        let w = worker.clone();
        tokio::spawn(async move { w.run().await })
    };
    // Let it start listening.
    tokio::time::sleep(Duration::from_millis(500)).await;
    for _ in 0..LATENCY_JOBS {
        let t = Utc::now().timestamp_micros();
        utils
            .add_job(Noop { t }, JobSpec::default())
            .await
            .expect("add_job");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    while GW_LAT.lock().unwrap().len() < LATENCY_JOBS {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    worker.request_shutdown();
    let _ = tokio::time::timeout(Duration::from_secs(30), runner).await;
    let mut v = GW_LAT.lock().unwrap().clone();
    v.sort();
    v
}

// ---------------------------------------------------------------------------
// Main
// ---------------------------------------------------------------------------

fn secs_until(a: Instant, b: Instant) -> f64 {
    b.duration_since(a).as_secs_f64().max(1e-9)
}

fn pct(v: &[Duration], p: f64) -> Duration {
    if v.is_empty() {
        return Duration::ZERO;
    }
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    v[i.min(v.len() - 1)]
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

const B1: Mode = Mode {
    batch: 1,
    ack_many: false,
    upkeep: true,
};
const B10: Mode = Mode {
    batch: 10,
    ack_many: false,
    upkeep: true,
};
const B10_ACK: Mode = Mode {
    batch: 10,
    ack_many: true,
    upkeep: true,
};
/// The queue before its own vacuum (and before `complete_many`).
const B10_BEFORE: Mode = Mode {
    batch: 10,
    ack_many: false,
    upkeep: false,
};

/// pgqueuer, when `python3` can import it: its driver script on a database
/// of its own, N jobs pre-filled, K queue managers of 10 jobs per fetch.
fn pgqueuer(dsn: &str, n: usize, k: usize) -> Option<Run> {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/peers/pgqueuer_bench.py");
    let out = std::process::Command::new("python3")
        .args([
            script,
            "--dsn",
            dsn,
            "--n",
            &n.to_string(),
            "--k",
            &k.to_string(),
        ])
        .output()
        .ok()?;
    if !out.status.success() {
        println!(
            "pgqueuer run failed (K={k}): {}",
            String::from_utf8_lossy(&out.stderr)
                .lines()
                .last()
                .unwrap_or("")
        );
        return None;
    }
    let v: serde_json::Value =
        serde_json::from_str(String::from_utf8_lossy(&out.stdout).lines().last()?).ok()?;
    Some(Run {
        enqueue_per_s: v["enqueue_per_s"].as_f64()?,
        jobs_per_s: v["jobs_per_s"].as_f64()?,
        dead: v["dead"].as_i64()?,
    })
}

fn pgqueuer_available() -> bool {
    !std::env::var("HODEI_BENCH_PGQUEUER").is_ok_and(|v| v == "0")
        && std::process::Command::new("python3")
            .args(["-c", "import pgqueuer, asyncpg"])
            .output()
            .is_ok_and(|o| o.status.success())
}

async fn sweep(
    stores: &PgStores,
    gw_url: &str,
    gw_pool: &PgPool,
    server: &str,
    ns: &[usize],
    ks: &[usize],
) {
    let pgq_db = format!("pgqueuer_bench_{}", uuid::Uuid::new_v4().simple());
    let pgq_url = pgqueuer_available().then(|| with_database(server, &pgq_db));
    if pgq_url.is_some() {
        admin(server, &format!("CREATE DATABASE {pgq_db}")).await;
    } else {
        println!(
            "pgqueuer: not run (python3 cannot import pgqueuer and asyncpg, or HODEI_BENCH_PGQUEUER=0)"
        );
    }
    println!(
        "{:>7} {:>3} | {:>8} {:>8} {:>8} {:>8} | {:>8} {:>8} {:>8} | {:>6} {:>6} {:>6} | {:>9} {:>8} | dead tuples b10-before/b1/b10/b10ack/gwLQ/pgq",
        "N",
        "K",
        "b10 bef",
        "b=1",
        "b=10",
        "b10 ack",
        "graphile",
        "gw LQ",
        "pgqueuer",
        "bef/LQ",
        "b10/LQ",
        "ack/LQ",
        "enq h/s",
        "enq gw/s"
    );
    for &n in ns {
        for &k in ks {
            let before = hodei_throughput(stores, n, k, B10_BEFORE).await;
            // `HODEI_BENCH_NO_B1=1`: one entry per claim is round-trip bound
            // and slow on a loaded machine; skip it.
            let h1 = if std::env::var("HODEI_BENCH_NO_B1").is_ok_and(|v| v == "1") {
                None
            } else {
                Some(hodei_throughput(stores, n, k, B1).await)
            };
            let h10 = hodei_throughput(stores, n, k, B10).await;
            let ack = hodei_throughput(stores, n, k, B10_ACK).await;
            // graphile's default fetch mode is poll-bound (about 100 jobs/s
            // per slot): run it at 10k only.
            let gw = if n <= 10_000 {
                Some(graphile_throughput(gw_url, gw_pool, n, k, false).await)
            } else {
                None
            };
            let lq = graphile_throughput(gw_url, gw_pool, n, k, true).await;
            let pq = pgq_url.as_deref().and_then(|u| pgqueuer(u, n, k));
            let f = |r: &Option<Run>| {
                r.as_ref()
                    .map_or("-".to_owned(), |r| format!("{:.0}", r.jobs_per_s))
            };
            let d = |r: &Option<Run>| r.as_ref().map_or("-".to_owned(), |r| r.dead.to_string());
            println!(
                "{:>7} {:>3} | {:>8.0} {:>8} {:>8.0} {:>8.0} | {:>8} {:>8.0} {:>8} | {:>6.2} {:>6.2} {:>6.2} | {:>9.0} {:>8.0} | {}/{}/{}/{}/{}/{}",
                n,
                k,
                before.jobs_per_s,
                f(&h1),
                h10.jobs_per_s,
                ack.jobs_per_s,
                f(&gw),
                lq.jobs_per_s,
                f(&pq),
                before.jobs_per_s / lq.jobs_per_s,
                h10.jobs_per_s / lq.jobs_per_s,
                ack.jobs_per_s / lq.jobs_per_s,
                ack.enqueue_per_s,
                lq.enqueue_per_s,
                before.dead,
                d(&h1),
                h10.dead,
                ack.dead,
                lq.dead,
                d(&pq)
            );
        }
    }
    if pgq_url.is_some() {
        admin(server, &format!("DROP DATABASE {pgq_db} WITH (FORCE)")).await;
    }
}

/// 1M jobs enqueued and drained by K = 8 consumers (10 per claim, batched
/// completions), throughput per 100k slice; then the queue without its own
/// vacuum, for at most [`MILLION_BEFORE_BUDGET`].
async fn million(stores: &PgStores) {
    const N: usize = 1_000_000;
    const SLICE: usize = 100_000;
    const K: usize = 8;
    let fmt = |v: &[f64]| {
        v.iter()
            .map(|x| format!("{x:.0}"))
            .collect::<Vec<_>>()
            .join(" ")
    };
    for (label, mode) in [
        ("after (own vacuum)", B10_ACK),
        (
            "before (autovacuum only)",
            Mode {
                upkeep: false,
                ..B10_ACK
            },
        ),
    ] {
        let (enq, enq_slices) = hodei_fill(stores, N, SLICE).await;
        let dead_before = dead_tuples(stores.pool(), "public", "job_queue").await;
        let budget = if mode.upkeep {
            Duration::from_secs(1800)
        } else {
            MILLION_BEFORE_BUDGET
        };
        let (rate, slices, finished) = hodei_drain(stores, N, K, mode, SLICE, budget).await;
        let dead_after = dead_tuples(stores.pool(), "public", "job_queue").await;
        println!("1M run, {label}: K={K}, 10 per claim, batched completions");
        println!("  enqueue {enq:.0}/s; per 100k slice: {}", fmt(&enq_slices));
        println!(
            "  drain {rate:.0}/s{}; per 100k slice: {}",
            if finished {
                ""
            } else {
                " (stopped at the budget)"
            },
            fmt(&slices)
        );
        println!("  dead tuples in job_queue: {dead_before} before the drain, {dead_after} after");
    }
}

/// How long the 1M run without the queue's own vacuum may take.
const MILLION_BEFORE_BUDGET: Duration = Duration::from_secs(150);

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    // `cargo test --benches` runs bench binaries with `--bench` absent: skip then.
    if !std::env::args().any(|a| a == "--bench") && std::env::var("HODEI_BENCH_FORCE").is_err() {
        println!("queue bench: run it with `cargo bench -p hodei-benches --bench queue`");
        return;
    }
    let Some(server) = std::env::var("HODEI_BENCH_DATABASE_URL")
        .ok()
        .or_else(|| std::env::var("HODEI_TEST_DATABASE_URL").ok())
        .filter(|u| !u.trim().is_empty())
    else {
        hodei_core::testing::require::missing_dependency(
            "neither HODEI_BENCH_DATABASE_URL nor HODEI_TEST_DATABASE_URL is set: the queue bench did not run",
        );
        return;
    };
    let full = std::env::var("HODEI_BENCH_FULL").is_ok_and(|v| v == "1");
    let ns: Vec<usize> = if let Ok(v) = std::env::var("HODEI_BENCH_N") {
        v.split(',')
            .map(|n| n.trim().parse().expect("HODEI_BENCH_N: numbers"))
            .collect()
    } else if full {
        vec![10_000, 100_000]
    } else {
        println!("N = 10k only; HODEI_BENCH_FULL=1 adds the N = 100k sweep");
        vec![10_000]
    };
    let ks = [1usize, 8, 32];

    let suffix = uuid::Uuid::new_v4().simple().to_string();
    let hodei_db = format!("hodei_bench_{suffix}");
    let gw_db = format!("graphile_bench_{suffix}");
    admin(&server, &format!("CREATE DATABASE {hodei_db}")).await;
    admin(&server, &format!("CREATE DATABASE {gw_db}")).await;
    let hodei_url = with_database(&server, &hodei_db);
    let gw_url = with_database(&server, &gw_db);

    let stores = connect(&PgStoreConfig::new(&hodei_url).with_max_connections(40))
        .await
        .expect("hodei connect");
    let gw_pool = PgPoolOptions::new()
        .max_connections(2)
        .connect(&gw_url)
        .await
        .unwrap();
    // Migrate graphile's schema once (kept alive until the end: dropping a
    // worker signals its shutdown).
    let gw_migrated = graphile_worker(&gw_url, 1, false).await;

    let version: String = sqlx::query_scalar("SHOW server_version")
        .fetch_one(stores.pool())
        .await
        .unwrap();
    let fsync: String = sqlx::query_scalar("SHOW fsync")
        .fetch_one(stores.pool())
        .await
        .unwrap();
    println!(
        "queue bench — PostgreSQL {version} (fsync={fsync}), {} CPUs; hodei-store-postgres vs graphile_worker 0.14 and pgqueuer",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    if std::env::var("HODEI_BENCH_1M").is_ok_and(|v| v == "1") {
        million(&stores).await;
    } else {
        sweep(&stores, &gw_url, &gw_pool, &server, &ns, &ks).await;
    }

    let hl = hodei_latency(&stores).await;
    let gl = graphile_latency(&gw_url).await;
    println!(
        "pickup latency into {LATENCY_CONSUMERS} idle consumers ({LATENCY_JOBS} jobs, 20 ms apart): \
         hodei p50 {} p99 {} | graphile p50 {} p99 {}",
        ms(pct(&hl, 0.5)),
        ms(pct(&hl, 0.99)),
        ms(pct(&gl, 0.5)),
        ms(pct(&gl, 0.99)),
    );

    gw_migrated.request_shutdown();
    drop(gw_migrated);
    stores.pool().close().await;
    gw_pool.close().await;
    admin(&server, &format!("DROP DATABASE {hodei_db} WITH (FORCE)")).await;
    admin(&server, &format!("DROP DATABASE {gw_db} WITH (FORCE)")).await;
}
