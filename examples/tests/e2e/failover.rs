//! An agent follows the service, not one replica: two `hodei-server` replicas
//! on one Postgres, a real `hodei-worker` given both addresses, `kill -9` of
//! the replica it is attached to in the middle of a job. The agent resumes its
//! session on the other replica; the job keeps running and ends once, with
//! every log line once and in order.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use hodei_core::proto::v1;
use hodei_core::{ProviderId, Worker, WorkerHandle, WorkerId};

use crate::harness::*;

const KEY: &str = "0202020202020202020202020202020202020202020202020202020202020202";
/// Lines the job prints, one every `LINE_GAP_MS`: about five seconds of output.
const LINES: usize = 200;
const LINE_GAP_MS: u64 = 25;

/// A `hodei-worker` started by the test (not by a replica's provider, so the
/// replica's death neither kills nor orphans it); killed on drop.
struct StandaloneAgent {
    child: Child,
    log: tempfile::NamedTempFile,
}

impl StandaloneAgent {
    fn start(servers: &str, worker_id: WorkerId, otp: &str) -> Self {
        let log = tempfile::NamedTempFile::new().expect("agent log file");
        let child = Command::new(env!("CARGO_BIN_EXE_hodei-worker"))
            .env("HODEI_SERVER", servers)
            .env("HODEI_OTP", otp)
            .env("HODEI_WORKER_ID", worker_id.to_string())
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log.reopen().expect("reopen log"))
            .stderr(log.reopen().expect("reopen log"))
            .spawn()
            .expect("spawn hodei-worker");
        Self { child, log }
    }

    fn log(&self) -> String {
        strip_ansi(&std::fs::read_to_string(self.log.path()).unwrap_or_default())
    }
}

impl Drop for StandaloneAgent {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("---- hodei-worker log ----\n{}", self.log());
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Registers a worker of `provider` with a one-time token in the shared
/// store, as a host application does for a worker it starts itself.
async fn expect_external_worker(db: &str, provider: &str) -> (WorkerId, String) {
    let stores = hodei_store_postgres::connect(&hodei_store_postgres::PgStoreConfig::new(db))
        .await
        .expect("connect to the replicas' database")
        .stores();
    let deadline = Instant::now() + Duration::from_secs(30);
    let provider_id: ProviderId = loop {
        if let Some(p) = stores.providers.get_by_name(provider).await.unwrap() {
            break p.id();
        }
        assert!(Instant::now() < deadline, "provider {provider} not stored");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let id = WorkerId::new();
    let mut worker = Worker::new(id, provider_id);
    worker
        .created(WorkerHandle::new(id, provider_id, "started-by-the-test"))
        .unwrap();
    stores.workers.register(&worker).await.unwrap();
    let otp = hodei_core::otp::generate_token();
    stores
        .otps
        .insert(
            &hodei_core::otp::hash_token(&otp),
            id,
            chrono::Utc::now() + chrono::Duration::minutes(5),
        )
        .await
        .unwrap();
    (id, otp)
}

async fn workers_of(s: &TestServer) -> Vec<v1::Worker> {
    s.scheduler()
        .get_available_workers(v1::GetAvailableWorkersRequest { include_busy: true })
        .await
        .expect("list workers")
        .into_inner()
        .workers
}

async fn wait_until<F, Fut>(what: &str, within: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + within;
    while !check().await {
        assert!(Instant::now() < deadline, "{what} not within {within:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_moves_to_the_surviving_replica_and_its_job_ends_once() {
    let Some(db) = fresh_database().await else {
        return;
    };
    let (grpc_a, grpc_b) = (free_port(), free_port());
    let both = format!("http://127.0.0.1:{grpc_a},http://127.0.0.1:{grpc_b}");
    let replica = |name: &'static str, grpc: u16| {
        let db = db.clone();
        async move {
            let env: Vec<(&str, String)> = vec![
                ("HODEI_DATABASE_URL", db),
                ("HODEI_SECRETS_KEY", KEY.into()),
                ("HODEI_PROCESS_PROVIDER_NAME", format!("process-{name}")),
                (
                    "HODEI_WORKER_SERVER_ADDRESS",
                    format!("http://127.0.0.1:{grpc}"),
                ),
                ("HODEI_LEADER_LEASE_SECS", "3".into()),
                ("HODEI_HEARTBEAT_INTERVAL_MS", "500".into()),
                // Short, so that an agent that did not come back would be declared
                // lost (and its job retried) well within the test.
                ("HODEI_WORKER_LOST_AFTER_MS", "4000".into()),
                ("RUST_LOG", "warn,hodei_core::control=info".into()),
                ("NO_COLOR", "1".into()),
            ];
            let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
            start_server_at(grpc, free_port(), &env).await
        }
    };
    let mut a = replica("a", grpc_a).await;
    let b = replica("b", grpc_b).await;

    // A worker of replica A's provider, started by the test, given both addresses.
    let (worker_id, otp) = expect_external_worker(&db, "process-a").await;
    let agent = StandaloneAgent::start(&both, worker_id, &otp);
    wait_until(
        "the agent attached to replica A",
        Duration::from_secs(30),
        || async {
            workers_of(&a)
                .await
                .iter()
                .any(|w| w.id == worker_id.to_string() && w.state == v1::WorkerState::Ready as i32)
        },
    )
    .await;
    assert!(
        agent
            .log()
            .lines()
            .any(|l| l.contains("registered with the control plane")
                && l.contains("resumed=false")
                && l.contains(&format!("server=http://127.0.0.1:{grpc_a}"))),
        "the agent registered with A, its first address:\n{}",
        agent.log()
    );

    // Only A knows provider process-a: the job can run on this worker only, and a
    // retry could not be dispatched by B. Each run appends to `runs`.
    let dir = tempfile::tempdir().unwrap();
    let runs = dir.path().join("runs");
    let body = format!(
        "echo run >> {runs}\nfor i in $(seq 1 {LINES}); do printf 'line-%04d of the failover job\\n' $i; sleep {gap}; done",
        runs = runs.display(),
        gap = LINE_GAP_MS as f64 / 1000.0,
    );
    let id = a
        .submit(
            script(&body)
                .with_provider("process-a")
                .with_max_attempts(3),
        )
        .await;
    let j = a.wait_running(&id, Duration::from_secs(30)).await;
    assert_eq!(
        j.worker_id,
        worker_id.to_string(),
        "ran on the test's agent"
    );

    // Mid-job: some lines stored, many to come.
    wait_until("the first 40 lines", Duration::from_secs(30), || async {
        a.log_lines(&id).await.len() >= 40
    })
    .await;
    let before_kill = a.log_lines(&id).await.len();
    assert!(before_kill < LINES, "the job is still printing");
    a.kill9();
    let killed_at = Instant::now();

    // The agent resumes its session on B (not a new registration: the OTP is spent).
    wait_until(
        "the agent resumed on replica B",
        Duration::from_secs(20),
        || async {
            strip_ansi(&b.server_log()).lines().any(|l| {
                l.contains("worker resumed its session") && l.contains(&worker_id.to_string())
            })
        },
    )
    .await;
    let reattached = killed_at.elapsed();
    let agent_log = agent.log();
    assert!(
        agent_log.lines().any(|l| {
            l.contains("registered with the control plane")
                && l.contains("resumed=true")
                && l.contains(&format!("server=http://127.0.0.1:{grpc_b}"))
        }),
        "the agent logged its resumption on B:\n{agent_log}"
    );

    let j = b.wait_done(&id, Duration::from_secs(60)).await;
    assert_eq!(
        j.state,
        v1::JobState::Succeeded as i32,
        "{} {}",
        state_name(j.state),
        j.error
    );
    assert_eq!(j.attempts, 1, "one attempt, not retried");
    assert_eq!(j.worker_id, worker_id.to_string());
    assert_eq!(
        std::fs::read_to_string(&runs).unwrap(),
        "run\n",
        "the job ran exactly once"
    );
    // Every line once, in order, byte for byte.
    let want: Vec<String> = (1..=LINES)
        .map(|i| format!("line-{i:04} of the failover job"))
        .collect();
    assert_eq!(b.log_lines(&id).await, want);

    // The worker was not lost: it is back in B's pool, and nobody declared it lost.
    let w = workers_of(&b)
        .await
        .into_iter()
        .find(|w| w.id == worker_id.to_string())
        .expect("the worker is still registered");
    assert_eq!(w.state, v1::WorkerState::Ready as i32, "{w:?}");
    for (name, log) in [("A", a.server_log()), ("B", b.server_log())] {
        let log = strip_ansi(&log);
        assert!(
            !log.lines()
                .any(|l| l.contains("worker lost") && l.contains(&worker_id.to_string())),
            "replica {name} reported the worker lost:\n{log}"
        );
    }
    // B does not run provider process-a, yet the worker that moved over takes
    // B's new jobs for it: B places them on it and never provisions one.
    let next = b
        .submit(script("echo adopted").with_provider("process-a"))
        .await;
    let j = b.wait_done(&next, Duration::from_secs(30)).await;
    assert_eq!(
        (j.state, j.worker_id.as_str()),
        (
            v1::JobState::Succeeded as i32,
            worker_id.to_string().as_str()
        ),
        "a new job ran on the adopted worker: {} {}",
        state_name(j.state),
        j.error
    );
    assert_eq!(b.log_lines(&next).await, vec!["adopted".to_owned()]);
    eprintln!(
        "killed A with {before_kill} of {LINES} lines stored; the agent resumed on B \
         {reattached:?} later"
    );
    drop(agent);
}

/// `HODEI_WORKER_SERVER_ADDRESS` may list several replicas: the workers a
/// replica provisions get the whole list (and register with its first entry);
/// a bad entry stops the server with an error naming the variable.
#[tokio::test]
async fn a_replica_gives_its_workers_every_address_and_checks_each() {
    let grpc = free_port();
    let other = free_port();
    let list = format!("http://127.0.0.1:{grpc},http://127.0.0.1:{other}");
    let s = start_server_at(grpc, free_port(), &[("HODEI_WORKER_SERVER_ADDRESS", &list)]).await;
    // The job prints its agent's HODEI_SERVER.
    let id = s
        .submit(script(
            "tr '\\0' '\\n' < /proc/$PPID/environ | grep '^HODEI_SERVER='",
        ))
        .await;
    let j = s.wait_done(&id, Duration::from_secs(30)).await;
    assert_eq!(j.state, v1::JobState::Succeeded as i32, "{j:?}");
    assert_eq!(s.log_lines(&id).await, vec![format!("HODEI_SERVER={list}")]);

    let out = Command::new(env!("CARGO_BIN_EXE_hodei-server"))
        .env("GRPC_PORT", free_port().to_string())
        .env("HODEI_HTTP_PORT", free_port().to_string())
        .env("HODEI_BIND_ADDRESS", "127.0.0.1")
        .env(
            "HODEI_WORKER_SERVER_ADDRESS",
            "http://127.0.0.1:1,127.0.0.1:2",
        )
        .env_remove("HODEI_DATABASE_URL")
        .env_remove("DATABASE_URL")
        .stdin(Stdio::null())
        .output()
        .expect("run hodei-server");
    assert!(!out.status.success(), "a bad address list is refused");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("HODEI_WORKER_SERVER_ADDRESS") && stderr.contains("127.0.0.1:2"),
        "{stderr}"
    );
}
