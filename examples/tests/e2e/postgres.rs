//! The real server on a real Postgres: state survives `kill -9` of the
//! server, two replicas share one database, and a Postgres restart loses
//! nothing the server acknowledged.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hodei_core::proto::v1;

use crate::harness::*;

const CANARY: &str = "canary-pg-5d1e9b7a";
const KEY: &str = "0101010101010101010101010101010101010101010101010101010101010101";

#[tokio::test]
async fn kill_9_of_the_server_loses_no_job() {
    let Some(db) = fresh_database().await else {
        return;
    };
    let env = [
        ("HODEI_DATABASE_URL", db.as_str()),
        ("HODEI_SECRETS_KEY", KEY),
        ("HODEI_MAX_WORKERS", "4"),
        ("HODEI_WORKER_LOST_AFTER_MS", "4000"),
    ];
    let mut s = start_server(&env).await;
    let (grpc, http) = (s.grpc_port(), s.http_port());
    let mut ids = Vec::new();
    for i in 0..40 {
        let spec =
            script(&format!("sleep 0.3; echo done-{i}")).with_secret("TOKEN", "s3cr3t-value");
        ids.push((i, s.submit(spec).await));
    }
    tokio::time::sleep(Duration::from_millis(800)).await;
    s.kill9();
    // Same ports: the agents of the killed server come back to the new one.
    let s2 = start_server_at(grpc, http, &env).await;
    for (i, id) in &ids {
        let j = s2.wait_done(id, Duration::from_secs(120)).await;
        assert_eq!(
            j.state,
            v1::JobState::Succeeded as i32,
            "job {i} after the restart: {} {}",
            state_name(j.state),
            j.error
        );
        assert!(
            s2.log_lines(id).await.contains(&format!("done-{i}")),
            "job {i} logs kept"
        );
    }
    // Secrets at rest: no table holds the canary in plaintext (nor in the logs).
    {
        use hodei_store_postgres::sqlx::{Connection, PgConnection, Row};
        let mut conn = PgConnection::connect(&db).await.unwrap();
        for table in [
            "jobs",
            "job_queue",
            "workers",
            "providers",
            "job_logs",
            "otp_tokens",
        ] {
            let row = hodei_store_postgres::sqlx::query(&format!(
                "SELECT coalesce(string_agg(t::text, ''), '') AS dump FROM {table} t"
            ))
            .fetch_one(&mut conn)
            .await
            .unwrap();
            let dump: String = row.get("dump");
            assert!(
                !dump.contains(CANARY),
                "table {table} holds the secret in plaintext"
            );
        }
        let row = hodei_store_postgres::sqlx::query(
            "SELECT count(*) AS n FROM job_logs WHERE position(convert_to($1, 'UTF8') in data) > 0",
        )
        .bind(CANARY)
        .fetch_one(&mut conn)
        .await
        .unwrap();
        assert_eq!(row.get::<i64, _>("n"), 0, "a log line holds the secret");
        let row = hodei_store_postgres::sqlx::query(
            "SELECT count(*) AS n FROM jobs WHERE data::text LIKE '%TOKEN%'",
        )
        .fetch_one(&mut conn)
        .await
        .unwrap();
        assert!(
            row.get::<i64, _>("n") > 0,
            "the scan looked at the stored specs"
        );
    }
    drop(s2);
    drop(s);
    kill_agents_of(grpc);
}

/// Tracing filter that keeps the lines these tests read (dispatches,
/// leadership changes under `hodei_store_postgres::leader`, lost workers)
/// and little else.
const PG_LOG: &str =
    "warn,hodei_server=info,hodei_core::control=info,hodei_store_postgres::leader=info";

async fn sql_count(db: &str, sql: &str) -> i64 {
    use hodei_store_postgres::sqlx::{Connection, PgConnection};
    let mut conn = PgConnection::connect(db).await.expect("connect");
    let n: i64 = hodei_store_postgres::sqlx::query_scalar(sql)
        .fetch_one(&mut conn)
        .await
        .expect("count");
    let _ = conn.close().await;
    n
}

async fn lease_holder(db: &str) -> Option<String> {
    use hodei_store_postgres::sqlx::{Connection, PgConnection};
    let mut conn = PgConnection::connect(db).await.ok()?;
    let h = hodei_store_postgres::sqlx::query_scalar(
        "SELECT holder FROM leader_leases WHERE name = 'hodei-maintenance' \
         AND expires_at >= clock_timestamp()",
    )
    .fetch_optional(&mut conn)
    .await
    .ok()
    .flatten();
    let _ = conn.close().await;
    h
}

/// The lease holder id a replica logged at start.
fn holder_of(s: &TestServer) -> Option<String> {
    let log = strip_ansi(&s.server_log());
    let line = log
        .lines()
        .find(|l| l.contains("maintenance runs on the replica holding the lease"))?;
    let rest = &line[line.find("holder=")? + "holder=".len()..];
    Some(rest.split_whitespace().next()?.to_owned())
}

/// How many times each job id appears in a `job dispatched…` line.
fn dispatches(log: &str) -> std::collections::HashMap<String, usize> {
    let mut m = std::collections::HashMap::new();
    for l in strip_ansi(log).lines() {
        if !l.contains("job dispatched") {
            continue;
        }
        if let Some(i) = l.find("job_id=") {
            let id = l[i + "job_id=".len()..]
                .split_whitespace()
                .next()
                .unwrap_or_default()
                .to_owned();
            *m.entry(id).or_default() += 1;
        }
    }
    m
}

/// Whether the replica's last leadership log line says it leads.
fn logs_leading(s: &TestServer) -> bool {
    strip_ansi(&s.server_log())
        .lines()
        .rev()
        .find(|l| l.contains("maintenance leadership changed"))
        .is_some_and(|l| l.contains("leading=true"))
}

/// Two replicas on one database share 1,000 jobs with 4 workers each; no job
/// is assigned twice; `kill -9` of the maintenance leader mid-run hands the
/// lease to the other within its TTL, and every job still finishes once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_share_jobs_and_hand_over_leadership() {
    const JOBS: usize = 1000;
    const LEASE_SECS: u64 = 4;
    const WORKERS_PER_REPLICA: usize = 4;
    let Some(db) = fresh_database().await else {
        return;
    };
    let started = std::time::Instant::now();
    let lease = LEASE_SECS.to_string();
    let replica = |name: &'static str, grpc: u16| {
        let db = db.clone();
        let lease = lease.clone();
        async move {
            let addr = format!("http://127.0.0.1:{grpc}");
            let env: Vec<(&str, String)> = vec![
                ("HODEI_DATABASE_URL", db),
                ("HODEI_SECRETS_KEY", KEY.into()),
                ("HODEI_MAX_WORKERS", WORKERS_PER_REPLICA.to_string()),
                // Each replica spawns its own local workers, which connect back to it.
                ("HODEI_PROCESS_PROVIDER_NAME", format!("process-{name}")),
                ("HODEI_WORKER_SERVER_ADDRESS", addr),
                ("HODEI_LEADER_LEASE_SECS", lease),
                ("HODEI_HEARTBEAT_INTERVAL_MS", "1000".into()),
                ("HODEI_WORKER_LOST_AFTER_MS", "6000".into()),
                ("HODEI_DB_MAX_CONNECTIONS", "20".into()),
                ("RUST_LOG", PG_LOG.into()),
                ("NO_COLOR", "1".into()),
            ];
            let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
            start_server_at(grpc, free_port(), &env).await
        }
    };
    let mut a = replica("a", free_port()).await;
    let mut b = replica("b", free_port()).await;
    let (ga, gb) = (a.grpc_port(), b.grpc_port());

    // Submit through both replicas, 50 at a time.
    let mut ids: Vec<String> = Vec::with_capacity(JOBS);
    for chunk in (0..JOBS).collect::<Vec<_>>().chunks(50) {
        let subs = chunk.iter().map(|&i| {
            let s = if i % 2 == 0 { &a } else { &b };
            s.submit(script(&format!("sleep 0.02; echo out-{i}")))
        });
        ids.extend(futures::future::join_all(subs).await);
    }
    eprintln!("submitted {JOBS} jobs in {:?}", started.elapsed());

    // Mid-run: a third of the jobs done.
    // Deadlines stay inside nextest's 300 s so a failure prints the server logs.
    let deadline = std::time::Instant::now() + Duration::from_secs(100);
    loop {
        let done = sql_count(&db, "SELECT count(*) FROM jobs WHERE state = 'succeeded'").await;
        if done >= (JOBS / 3) as i64 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "only {done} of {JOBS} jobs done after 100 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Both replicas ran jobs on their own workers.
    let (da, db_) = (dispatches(&a.server_log()), dispatches(&b.server_log()));
    assert!(
        !da.is_empty() && !db_.is_empty(),
        "both replicas dispatch: a {} b {}",
        da.len(),
        db_.len()
    );

    // Kill the replica holding the maintenance lease.
    let (ha, hb) = (
        holder_of(&a).expect("replica a logged its holder id"),
        holder_of(&b).expect("replica b logged its holder id"),
    );
    let leader = lease_holder(&db).await.expect("someone holds the lease");
    let a_leads = leader == ha;
    assert!(
        a_leads || leader == hb,
        "lease holder {leader} is neither replica"
    );
    let (killed, survivor, killed_grpc, survivor_holder) = if a_leads {
        (&mut a, &b, ga, hb)
    } else {
        (&mut b, &a, gb, ha)
    };
    let done_at_kill = sql_count(&db, "SELECT count(*) FROM jobs WHERE state = 'succeeded'").await;
    let killed_at = std::time::Instant::now();
    killed.kill9();
    eprintln!(
        "killed the leader (replica {}) with {done_at_kill} of {JOBS} jobs done",
        if a_leads { "a" } else { "b" }
    );
    let takeover = loop {
        if logs_leading(survivor)
            && lease_holder(&db).await.as_deref() == Some(survivor_holder.as_str())
        {
            break killed_at.elapsed();
        }
        assert!(
            killed_at.elapsed() < Duration::from_secs(LEASE_SECS + 30),
            "the survivor did not take the lease within {} s",
            LEASE_SECS + 30
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    eprintln!("survivor leads {takeover:?} after the kill (lease {LEASE_SECS} s)");
    // The lease expires at most LEASE_SECS after the kill; the survivor's next
    // reconcile (every second, or sooner when woken) takes it. Slack for a
    // loaded CI machine.
    assert!(
        takeover <= Duration::from_secs(LEASE_SECS + 8),
        "takeover took {takeover:?}, lease is {LEASE_SECS} s"
    );

    // Every job finishes, through the survivor.
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    loop {
        let done = sql_count(
            &db,
            "SELECT count(*) FROM jobs WHERE state IN ('succeeded','failed','cancelled','timeout')",
        )
        .await;
        if done == JOBS as i64 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "only {done} of {JOBS} jobs terminal 120 s after the kill"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let total = started.elapsed();

    let d_killed = dispatches(&killed.server_log());
    let d_surv = dispatches(&survivor.server_log());
    let mut retried = Vec::new();
    for (i, id) in ids.iter().enumerate() {
        let j = survivor.get(id).await;
        assert_eq!(
            j.state,
            v1::JobState::Succeeded as i32,
            "job {i}: {} {}",
            state_name(j.state),
            j.error
        );
        let (nk, ns) = (
            d_killed.get(id).copied().unwrap_or(0),
            d_surv.get(id).copied().unwrap_or(0),
        );
        assert!(
            nk <= 1 && ns <= 1,
            "job {i} dispatched {nk}× by the killed and {ns}× by the surviving replica"
        );
        let out = format!("out-{i}");
        let lines = survivor.log_lines(id).await;
        let seen = lines.iter().filter(|l| **l == out).count();
        if j.attempts == 1 {
            assert_eq!(
                seen, 1,
                "job {i} (one attempt) output seen {seen}×: {lines:?}"
            );
            assert_eq!(nk + ns, 1, "job {i} (one attempt) dispatched {}×", nk + ns);
        } else {
            // Only a job that was on a worker of the killed replica may run again.
            assert!(
                ns == 1,
                "job {i} retried but not redispatched by the survivor"
            );
            assert!((1..=2).contains(&seen), "job {i} output seen {seen}×");
            retried.push((i, j.attempts, nk));
        }
    }
    // At most one job per worker of the killed replica was in flight.
    assert!(
        retried.len() <= WORKERS_PER_REPLICA,
        "{} jobs retried (> {WORKERS_PER_REPLICA} workers of the killed replica): {retried:?}",
        retried.len()
    );
    assert!(
        retried.iter().all(|(_, attempts, _)| *attempts == 2),
        "a job ran more than twice: {retried:?}"
    );
    eprintln!(
        "{JOBS} jobs in {total:?}; dispatched by the killed replica {}, by the survivor {}; \
         retried after the kill: {retried:?}",
        d_killed.len(),
        d_surv.len()
    );
    kill_agents_of(killed_grpc);
}

/// Postgres stopped (`pg_ctl -m fast`) and started again mid-run: `/readyz`
/// says 503 while it is gone and 200 after the server reconnected, and every
/// job the server acknowledged (2xx) reaches a terminal state.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_restart_loses_no_acknowledged_job() {
    let Some(pg) = OwnPostgres::start() else {
        return;
    };
    let started = std::time::Instant::now();
    let url = pg.url();
    let env = [
        ("HODEI_DATABASE_URL", url.as_str()),
        ("HODEI_SECRETS_KEY", KEY),
        ("HODEI_MAX_WORKERS", "4"),
        ("HODEI_DB_CONNECTION_TIMEOUT_SECS", "2"),
        ("HODEI_HEARTBEAT_INTERVAL_MS", "1000"),
        ("RUST_LOG", PG_LOG),
        ("NO_COLOR", "1"),
    ];
    let s = start_server(&env).await;
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .expect("http client");
    let readyz = |http: reqwest::Client, base: String| async move {
        http.get(format!("{base}/readyz"))
            .send()
            .await
            .map(|r| r.status().as_u16())
            .unwrap_or(0)
    };
    let wait_readyz = |want: u16, within: Duration| {
        let (http, base) = (http.clone(), s.http.clone());
        async move {
            let t = std::time::Instant::now();
            loop {
                let got = readyz(http.clone(), base.clone()).await;
                if got == want {
                    return t.elapsed();
                }
                assert!(
                    t.elapsed() < within,
                    "/readyz still {got}, not {want}, after {within:?}"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    wait_readyz(200, Duration::from_secs(30)).await;

    // A submitter that keeps posting jobs over REST, before, during and after
    // the outage, and remembers which ones were acknowledged.
    let stop = Arc::new(AtomicBool::new(false));
    let acked: Arc<Mutex<Vec<(usize, String)>>> = Arc::default();
    let refused = Arc::new(AtomicUsize::new(0));
    let submitter = {
        let (stop, acked, refused) = (stop.clone(), acked.clone(), refused.clone());
        let (http, base) = (http.clone(), s.http.clone());
        tokio::spawn(async move {
            let mut i = 0usize;
            while !stop.load(Ordering::Relaxed) {
                let body = serde_json::json!({
                    "name": format!("pg-restart-{i}"),
                    "command": {"type": "script", "interpreter": "bash",
                                "content": format!("sleep 0.2; echo out-{i}")},
                });
                match http
                    .post(format!("{base}/api/v1/jobs"))
                    .json(&body)
                    .send()
                    .await
                {
                    Ok(r) if r.status().is_success() => {
                        let v: serde_json::Value = r.json().await.expect("job json");
                        let id = v["id"].as_str().expect("job id").to_owned();
                        acked.lock().expect("lock").push((i, id));
                    }
                    Ok(r) => {
                        assert!(
                            r.status().is_server_error(),
                            "job {i} refused with {}",
                            r.status()
                        );
                        refused.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(_) => {
                        refused.fetch_add(1, Ordering::Relaxed);
                    }
                }
                i += 1;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
    };
    let acked_count = || acked.lock().expect("lock").len();
    let t = std::time::Instant::now();
    while acked_count() < 30 {
        assert!(t.elapsed() < Duration::from_secs(120), "submissions stall");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    pg.stop_fast();
    let stopped_at = std::time::Instant::now();
    let acked_at_stop = acked_count();
    let not_ready_after = wait_readyz(503, Duration::from_secs(60)).await;
    eprintln!("Postgres stopped; /readyz 503 after {not_ready_after:?}");
    // Stay down a few seconds, while jobs finish on the agents and the
    // submitter keeps trying.
    while stopped_at.elapsed() < Duration::from_secs(5) {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        readyz(http.clone(), s.http.clone()).await,
        503,
        "not ready while the database is down"
    );
    let acked_during = acked_count() - acked_at_stop;
    pg.start_again();
    let ready_after = wait_readyz(200, Duration::from_secs(120)).await;
    eprintln!(
        "Postgres back after {:?} down; /readyz 200 {ready_after:?} later; \
         {acked_during} jobs acknowledged while it was down",
        stopped_at.elapsed()
    );
    let acked_before_restart = acked_count();
    let t = std::time::Instant::now();
    while acked_count() < acked_before_restart + 20 {
        assert!(
            t.elapsed() < Duration::from_secs(120),
            "no submissions accepted after the restart"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop.store(true, Ordering::Relaxed);
    submitter.await.expect("submitter");
    let acked = acked.lock().expect("lock").clone();
    assert!(
        refused.load(Ordering::Relaxed) > 0,
        "some submissions were refused while the database was down"
    );

    for (i, id) in &acked {
        let j = s.wait_done(id, Duration::from_secs(180)).await;
        assert_eq!(
            j.state,
            v1::JobState::Succeeded as i32,
            "job {i}: {} {}",
            state_name(j.state),
            j.error
        );
        assert!(
            s.log_lines(id).await.contains(&format!("out-{i}")),
            "job {i} output kept"
        );
    }
    eprintln!(
        "{} acknowledged jobs all succeeded, {} submissions refused; {:?} in all",
        acked.len(),
        refused.load(Ordering::Relaxed),
        started.elapsed()
    );
    let grpc = s.grpc_port();
    drop(s);
    kill_agents_of(grpc);
}
