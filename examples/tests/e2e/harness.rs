//! Starts the real `hodei-server` binary (which spawns real `hodei-worker`
//! agents through the process provider) on free ports, and gives tests gRPC
//! clients for it.

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use hodei_core::client::{ClientOptions, HodeiClient};
use hodei_core::proto::v1;
use hodei_core::proto::v1::job_execution_service_client::JobExecutionServiceClient;
use hodei_core::proto::v1::job_query_service_client::JobQueryServiceClient;
use hodei_core::proto::v1::log_stream_service_client::LogStreamServiceClient;
use hodei_core::proto::v1::scheduler_service_client::SchedulerServiceClient;
use hodei_core::proto::v1::worker_agent_service_client::WorkerAgentServiceClient;
use hodei_core::{CommandType, JobId, JobSpec, JobState, LogStream};
use tonic::transport::Channel;

pub(crate) fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub(crate) struct TestServer {
    child: Child,
    log: tempfile::NamedTempFile,
    pub(crate) grpc: String,
    pub(crate) http: String,
    pub(crate) channel: Channel,
    /// The typed client the helpers below go through.
    pub(crate) client: HodeiClient,
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("---- hodei-server log ----\n{}", self.server_log());
        }
        // SIGTERM lets the server destroy its workers; then make sure.
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts a server with extra environment (e.g. `HODEI_MAX_WORKERS`).
pub(crate) async fn start_server(env: &[(&str, &str)]) -> TestServer {
    start_server_at(free_port(), free_port(), env).await
}

/// Starts a server on given ports (to restart one where its agents expect it).
pub(crate) async fn start_server_at(
    grpc_port: u16,
    http_port: u16,
    env: &[(&str, &str)],
) -> TestServer {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_hodei-server"));
    cmd.env("GRPC_PORT", grpc_port.to_string())
        .env("HODEI_HTTP_PORT", http_port.to_string())
        .env("HODEI_BIND_ADDRESS", "127.0.0.1")
        .env("HODEI_WORKER_BINARY", env!("CARGO_BIN_EXE_hodei-worker"))
        .env_remove("HODEI_DATABASE_URL")
        .env_remove("DATABASE_URL")
        .env(
            "RUST_LOG",
            std::env::var("HODEI_TEST_LOG").unwrap_or_else(|_| "warn".into()),
        )
        .stdin(Stdio::null());
    let log = tempfile::NamedTempFile::new().expect("server log file");
    cmd.stderr(log.reopen().expect("reopen log"));
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("spawn hodei-server");
    let grpc = format!("http://127.0.0.1:{grpc_port}");
    let http = format!("http://127.0.0.1:{http_port}");
    // Generous: a loaded 2-core machine; an early exit fails at once.
    let within = Duration::from_secs(60);
    let deadline = Instant::now() + within;
    let channel = loop {
        if let Ok(ch) = Channel::from_shared(grpc.clone()).unwrap().connect().await {
            break ch;
        }
        let exited = child.try_wait().ok().flatten();
        if exited.is_some() || Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            let text = std::fs::read_to_string(log.path()).unwrap_or_default();
            panic!(
                "hodei-server (gRPC port {grpc_port}, HTTP port {http_port}) did not start \
                 within {within:?} (exit: {exited:?}); its log:\n{text}"
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let client = HodeiClient::connect(grpc.clone(), ClientOptions::new())
        .await
        .expect("the typed client connects to a server that accepts connections");
    TestServer {
        child,
        log,
        grpc,
        http,
        channel,
        client,
    }
}

impl TestServer {
    /// `kill -9` of the server process (its agents keep running).
    pub(crate) fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// The gRPC port.
    pub(crate) fn grpc_port(&self) -> u16 {
        self.grpc
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .unwrap_or(0)
    }

    /// The HTTP port.
    pub(crate) fn http_port(&self) -> u16 {
        self.http
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .unwrap_or(0)
    }

    /// What the server printed so far (its tracing output).
    pub(crate) fn server_log(&self) -> String {
        std::fs::read_to_string(self.log.path()).unwrap_or_default()
    }

    pub(crate) fn jobs(&self) -> JobExecutionServiceClient<Channel> {
        JobExecutionServiceClient::new(self.channel.clone())
    }
    pub(crate) fn query(&self) -> JobQueryServiceClient<Channel> {
        JobQueryServiceClient::new(self.channel.clone())
    }
    pub(crate) fn logs(&self) -> LogStreamServiceClient<Channel> {
        LogStreamServiceClient::new(self.channel.clone())
            .max_decoding_message_size(64 * 1024 * 1024)
    }
    pub(crate) fn scheduler(&self) -> SchedulerServiceClient<Channel> {
        SchedulerServiceClient::new(self.channel.clone())
    }
    pub(crate) fn agent(&self) -> WorkerAgentServiceClient<Channel> {
        WorkerAgentServiceClient::new(self.channel.clone())
    }

    // The helpers go through the typed client and hand tests the wire view
    // (`v1::Job`, string ids) the e2e tests were written against; the
    // conversion back is lossless for what the wire carries.

    pub(crate) async fn submit(&self, spec: JobSpec) -> String {
        self.client
            .submit(&spec)
            .await
            .expect("queue job")
            .to_string()
    }

    pub(crate) async fn get(&self, id: &str) -> v1::Job {
        let job = self.client.get(job_id(id)).await.expect("get job");
        v1::Job::from(&job)
    }

    /// Waits until the job is terminal.
    pub(crate) async fn wait_done(&self, id: &str, within: Duration) -> v1::Job {
        match self.client.wait(job_id(id), within).await {
            Ok(job) => v1::Job::from(&job),
            Err(e) => panic!("job {id} not finished within {within:?}: {e}"),
        }
    }

    /// Waits until the job is running.
    pub(crate) async fn wait_running(&self, id: &str, within: Duration) -> v1::Job {
        match self
            .client
            .wait_for(job_id(id), within, |j| j.state() == JobState::Running)
            .await
        {
            Ok(job) => v1::Job::from(&job),
            Err(e) => panic!("job {id} not running: {e}"),
        }
    }

    /// Every stored log line of a job, as text.
    pub(crate) async fn log_lines(&self, id: &str) -> Vec<String> {
        self.client
            .logs(job_id(id))
            .await
            .expect("get logs")
            .iter()
            .filter(|e| e.entry.stream != LogStream::System)
            // An entry holds one or more lines (the agent groups lines read together).
            .flat_map(|e| {
                String::from_utf8_lossy(&e.entry.data)
                    .split('\n')
                    .map(str::to_owned)
                    .collect::<Vec<_>>()
            })
            .collect()
    }
}

/// A job id the server gave out.
fn job_id(id: &str) -> JobId {
    id.parse()
        .unwrap_or_else(|_| panic!("{id:?} is not a job id"))
}

pub(crate) fn script(body: &str) -> JobSpec {
    JobSpec::new("test", CommandType::script("bash", body))
}

pub(crate) fn state_name(s: i32) -> String {
    v1::JobState::try_from(s)
        .map(|s| s.as_str_name().to_owned())
        .unwrap_or_else(|_| s.to_string())
}

/// Whether a process is alive (and not a zombie).
pub(crate) fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => !s
            .rsplit(')')
            .next()
            .is_some_and(|rest| rest.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}

/// Kills every process whose environment says it talks to this server
/// (agents orphaned by a killed server), so tests leave nothing behind.
pub(crate) fn kill_agents_of(grpc_port: u16) {
    let needle = format!("HODEI_SERVER=http://127.0.0.1:{grpc_port}");
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return;
    };
    for e in dir.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        if let Ok(env) = std::fs::read(format!("/proc/{pid}/environ"))
            && env.split(|b| *b == 0).any(|kv| kv == needle.as_bytes())
        {
            let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
        }
    }
}

/// A fresh, empty database on the test Postgres, or `None` (with a loud
/// message) when no Postgres is configured; under `CI=true` that is a failure.
pub(crate) async fn fresh_database() -> Option<String> {
    use hodei_store_postgres::sqlx::{Connection, Executor, PgConnection};
    let base = hodei_core::testing::require::require_env(
        "HODEI_TEST_DATABASE_URL",
        "the Postgres end-to-end test",
    )?;
    let name = format!("hodei_e2e_{}", uuid::Uuid::new_v4().simple());
    let mut conn = PgConnection::connect(&base)
        .await
        .expect("connect to test Postgres");
    conn.execute(format!("CREATE DATABASE {name}").as_str())
        .await
        .expect("create database");
    let (prefix, _) = base.rsplit_once('/').expect("database URL has a path");
    Some(format!("{prefix}/{name}"))
}

/// The server's log without ANSI colour codes (so fields read `key=value`).
pub(crate) fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // CSI: ESC [ … final byte in @..~
            if chars.next() == Some('[') {
                for d in chars.by_ref() {
                    if ('@'..='~').contains(&d) {
                        break;
                    }
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

const PG_BIN: &str = "/usr/lib/postgresql/15/bin";

/// A throwaway PostgreSQL 15 cluster owned by one test, which may stop and
/// start it (unlike the shared one in `HODEI_TEST_DATABASE_URL`): `initdb` as
/// the user `postgres` (through `runuser`) into a temp dir, on a free port.
/// Stopped (`-m immediate`) and removed on drop.
pub(crate) struct OwnPostgres {
    dir: tempfile::TempDir,
    port: u16,
}

impl OwnPostgres {
    /// Starts a cluster, or `None` (with a loud message) when the PostgreSQL
    /// 15 binaries, the `postgres` user or root rights are missing; under
    /// `CI=true` that is a failure.
    pub(crate) fn start() -> Option<Self> {
        let missing = if !std::path::Path::new(PG_BIN).join("initdb").exists() {
            Some(format!("PostgreSQL 15 binaries not found at {PG_BIN}"))
        } else if !Command::new("id")
            .arg("postgres")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
        {
            Some("no user `postgres`".to_owned())
        } else if !Command::new("runuser")
            .args(["-u", "postgres", "--", "true"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
        {
            Some("cannot run commands as `postgres` (runuser needs root)".to_owned())
        } else {
            None
        };
        if let Some(why) = missing {
            hodei_core::testing::require::missing_dependency(&format!(
                "{why}: the test that restarts its own PostgreSQL did not run"
            ));
            return None;
        }
        let dir = tempfile::Builder::new()
            .prefix("hodei-own-pg")
            .tempdir()
            .expect("temp dir");
        let ok = Command::new("chown")
            .args(["-R", "postgres"])
            .arg(dir.path())
            .status()
            .expect("chown");
        assert!(ok.success(), "chown of the cluster dir");
        let data = dir.path().join("data");
        let out = Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .arg(format!("{PG_BIN}/initdb"))
            .arg("-D")
            .arg(&data)
            .args(["-A", "trust", "-U", "postgres"])
            .output()
            .expect("initdb");
        assert!(
            out.status.success(),
            "initdb failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let pg = Self {
            dir,
            port: free_port(),
        };
        pg.start_again();
        Some(pg)
    }

    /// `postgres://…/postgres` on this cluster.
    pub(crate) fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    fn pg_ctl(&self, args: &[&str]) -> std::process::Output {
        Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .arg(format!("{PG_BIN}/pg_ctl"))
            .arg("-D")
            .arg(self.dir.path().join("data"))
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("pg_ctl")
    }

    /// Starts the (stopped) cluster on its port and waits until it accepts connections.
    pub(crate) fn start_again(&self) {
        let log = self.dir.path().join("log");
        let opts = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c max_connections=200 -c fsync=off",
            self.port,
            self.dir.path().display()
        );
        let out = self.pg_ctl(&[
            "-l",
            &log.display().to_string(),
            "-w",
            "-t",
            "120",
            "-o",
            &opts,
            "start",
        ]);
        assert!(
            out.status.success(),
            "pg_ctl start failed: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            std::fs::read_to_string(&log).unwrap_or_default()
        );
    }

    /// `pg_ctl -m fast stop`: disconnects every client and shuts down.
    pub(crate) fn stop_fast(&self) {
        let out = self.pg_ctl(&["-m", "fast", "-w", "-t", "120", "stop"]);
        assert!(
            out.status.success(),
            "pg_ctl stop failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for OwnPostgres {
    fn drop(&mut self) {
        let _ = self.pg_ctl(&["-m", "immediate", "stop"]);
    }
}
