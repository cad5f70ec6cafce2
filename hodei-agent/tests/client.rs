//! WorkerClient against a small in-test control plane on a real socket: registration, jobs,
//! logs delivered exactly once and in order across a dropped stream and across a killed
//! replica, cancel, invalid OTP.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hodei_agent::client::{AgentError, WorkerClient};
use hodei_agent::config::{AgentConfig, BackoffConfig, ServerAddresses};
use hodei_core::proto::v1;
use hodei_core::proto::v1::server_message::Payload as SP;
use hodei_core::proto::v1::worker_agent_service_server::{
    WorkerAgentService, WorkerAgentServiceServer,
};
use hodei_core::proto::v1::worker_message::Payload as WP;
use hodei_core::{CommandType, JobId, JobSpec};
use tokio::sync::mpsc;
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status, Streaming};

const OTP: &str = "otp-0123456789";
const TOKEN: &str = "session-token-abc";

/// What the fake control plane saw, in arrival order.
#[derive(Debug, Default)]
struct Seen {
    /// Entries kept per job (deduplicated by sequence, like the real server).
    lines: BTreeMap<String, Vec<v1::LogEntry>>,
    duplicates: u64,
    gaps: Vec<String>,
    results: Vec<v1::JobResultMessage>,
    /// For each result: did it arrive after the entry with its last_sequence?
    result_after_last_batch: Vec<bool>,
    started: Vec<String>,
    /// First message of each stream.
    first_messages: Vec<Option<WP>>,
    heartbeats: u32,
    /// Progress reports (percent, message), in arrival order, and whether one
    /// came after a result of its job.
    progress: Vec<(u32, String)>,
    progress_after_result: bool,
    /// Usage of the `stats` messages.
    stats: Vec<v1::ResourceUsage>,
    statuses: Vec<i32>,
    unregistered: Vec<String>,
    registers: Vec<v1::RegisterRequest>,
    /// Which replica served each stream, in order.
    stream_servers: Vec<&'static str>,
}

struct ControlPlane {
    seen: Mutex<Seen>,
    otp_used: AtomicBool,
    streams: AtomicU32,
    /// Drop the first stream once this sequence number was received (0 = never).
    drop_at_sequence: u64,
    dropped_once: AtomicBool,
    /// Sender of the live stream.
    current: Mutex<Option<mpsc::Sender<Result<v1::ServerMessage, Status>>>>,
    /// Store what arrives but acknowledge nothing (a replica about to die).
    mute_acks: AtomicBool,
}

impl ControlPlane {
    fn new(drop_at_sequence: u64) -> Arc<Self> {
        Arc::new(Self {
            seen: Mutex::new(Seen::default()),
            otp_used: AtomicBool::new(false),
            streams: AtomicU32::new(0),
            drop_at_sequence,
            dropped_once: AtomicBool::new(false),
            current: Mutex::new(None),
            mute_acks: AtomicBool::new(false),
        })
    }

    fn check_token<T>(req: &Request<T>) -> Result<(), Status> {
        let ok = req
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            == Some(&format!("Bearer {TOKEN}"));
        if ok {
            Ok(())
        } else {
            Err(Status::unauthenticated("bad session token"))
        }
    }

    async fn send(&self, m: SP) {
        let tx = self.current.lock().unwrap().clone();
        tx.expect("no stream open")
            .send(Ok(v1::ServerMessage { payload: Some(m) }))
            .await
            .unwrap();
    }

    /// Handles one inbound message; returns false when the stream should be dropped.
    async fn on_message(
        &self,
        m: WP,
        tx: &mpsc::Sender<Result<v1::ServerMessage, Status>>,
    ) -> bool {
        match m {
            WP::Heartbeat(_) => self.seen.lock().unwrap().heartbeats += 1,
            WP::JobStarted(s) => self.seen.lock().unwrap().started.push(s.job_id),
            WP::Stats(st) => self.seen.lock().unwrap().stats.extend(st.usage),
            WP::Progress(p) => {
                let mut seen = self.seen.lock().unwrap();
                if seen.results.iter().any(|r| r.job_id == p.job_id) {
                    seen.progress_after_result = true;
                }
                seen.progress.push((p.percent, p.message));
            }
            WP::LogBatch(b) => {
                let acked = {
                    let mut seen = self.seen.lock().unwrap();
                    let seen = &mut *seen;
                    let lines = seen.lines.entry(b.job_id.clone()).or_default();
                    for e in b.entries {
                        let last = lines.last().map_or(0, |l| l.sequence);
                        if e.sequence <= last {
                            seen.duplicates += 1;
                        } else if e.sequence == last + 1 {
                            lines.push(e);
                        } else {
                            seen.gaps
                                .push(format!("expected {} got {}", last + 1, e.sequence));
                        }
                    }
                    lines.last().map_or(0, |l| l.sequence)
                };
                if self.drop_at_sequence > 0
                    && acked >= self.drop_at_sequence
                    && !self.dropped_once.swap(true, Ordering::SeqCst)
                {
                    // Simulate the server going away before acknowledging this batch.
                    return false;
                }
                if self.mute_acks.load(Ordering::SeqCst) {
                    return true;
                }
                let _ = tx
                    .send(Ok(v1::ServerMessage {
                        payload: Some(SP::Ack(v1::AckMessage {
                            job_id: b.job_id,
                            attempt: b.attempt,
                            acked_sequence: acked,
                            result_acked: false,
                        })),
                    }))
                    .await;
            }
            WP::JobResult(r) => {
                {
                    let mut seen = self.seen.lock().unwrap();
                    let last = seen
                        .lines
                        .get(&r.job_id)
                        .and_then(|l| l.last())
                        .map_or(0, |l| l.sequence);
                    seen.result_after_last_batch.push(last == r.last_sequence);
                    seen.results.push(r.clone());
                }
                let _ = tx
                    .send(Ok(v1::ServerMessage {
                        payload: Some(SP::Ack(v1::AckMessage {
                            job_id: r.job_id,
                            attempt: r.attempt,
                            acked_sequence: r.last_sequence,
                            result_acked: true,
                        })),
                    }))
                    .await;
            }
        }
        true
    }
}

/// One replica of the fake control plane: replicas share the state (like a database).
#[derive(Clone)]
struct Svc(Arc<ControlPlane>, &'static str);

#[tonic::async_trait]
impl WorkerAgentService for Svc {
    async fn register(
        &self,
        request: Request<v1::RegisterRequest>,
    ) -> Result<Response<v1::RegisterResponse>, Status> {
        let req = request.into_inner();
        self.0.seen.lock().unwrap().registers.push(req.clone());
        let worker_id = req.worker_info.map(|w| w.worker_id).unwrap_or_default();
        let resumed = if !req.resume_session_token.is_empty() {
            if req.resume_session_token != TOKEN {
                return Err(Status::unauthenticated("unknown session"));
            }
            true
        } else {
            if req.otp != OTP || self.0.otp_used.swap(true, Ordering::SeqCst) {
                return Err(Status::unauthenticated("invalid one-time token"));
            }
            false
        };
        Ok(Response::new(v1::RegisterResponse {
            worker_id,
            session_id: "session-1".into(),
            session_token: TOKEN.into(),
            heartbeat_interval_ms: 200,
            resumed,
        }))
    }

    type WorkerStreamStream = ReceiverStream<Result<v1::ServerMessage, Status>>;

    async fn worker_stream(
        &self,
        request: Request<Streaming<v1::WorkerMessage>>,
    ) -> Result<Response<Self::WorkerStreamStream>, Status> {
        ControlPlane::check_token(&request)?;
        let mut inbound = request.into_inner();
        let (tx, rx) = mpsc::channel(64);
        *self.0.current.lock().unwrap() = Some(tx.clone());
        self.0.seen.lock().unwrap().stream_servers.push(self.1);
        self.0.streams.fetch_add(1, Ordering::SeqCst);
        let cp = self.0.clone();
        tokio::spawn(async move {
            let mut first = true;
            while let Ok(Some(m)) = inbound.message().await {
                let Some(p) = m.payload else { continue };
                if first {
                    cp.seen.lock().unwrap().first_messages.push(Some(p.clone()));
                    first = false;
                }
                if !cp.on_message(p, &tx).await {
                    break;
                }
            }
            // Ending the response stream drops the connection's stream on the agent side.
            let mut cur = cp.current.lock().unwrap();
            if cur.as_ref().is_some_and(|c| c.same_channel(&tx)) {
                *cur = None;
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn update_worker_status(
        &self,
        request: Request<v1::UpdateWorkerStatusRequest>,
    ) -> Result<Response<v1::UpdateWorkerStatusResponse>, Status> {
        ControlPlane::check_token(&request)?;
        self.0
            .seen
            .lock()
            .unwrap()
            .statuses
            .push(request.into_inner().state);
        Ok(Response::new(v1::UpdateWorkerStatusResponse {
            worker: None,
        }))
    }

    async fn unregister_worker(
        &self,
        request: Request<v1::UnregisterWorkerRequest>,
    ) -> Result<Response<v1::UnregisterWorkerResponse>, Status> {
        ControlPlane::check_token(&request)?;
        self.0
            .seen
            .lock()
            .unwrap()
            .unregistered
            .push(request.into_inner().reason);
        Ok(Response::new(v1::UnregisterWorkerResponse {}))
    }
}

// Not `hodei_core::testing::TestServer`: these tests serve the scripted fake
// worker service above (it drops a stream at a chosen sequence and records
// what it saw), not a real control plane.
async fn serve(cp: Arc<ControlPlane>) -> SocketAddr {
    serve_named(cp, "main").await
}

async fn serve_named(cp: Arc<ControlPlane>, name: &'static str) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        tonic::transport::Server::builder()
            .add_service(WorkerAgentServiceServer::new(Svc(cp, name)))
            .serve_with_incoming(TcpListenerStream::new(listener))
            .await
            .unwrap();
    });
    addr
}

/// A replica on its own runtime and thread: `kill` drops the runtime, which closes its
/// listener and every connection at once, as when its process is killed.
struct KillableReplica {
    addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl KillableReplica {
    fn start(cp: Arc<ControlPlane>, name: &'static str) -> Self {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                let serve = tonic::transport::Server::builder()
                    .add_service(WorkerAgentServiceServer::new(Svc(cp, name)))
                    .serve_with_incoming(TcpListenerStream::new(listener));
                tokio::select! {
                    r = serve => r.unwrap(),
                    _ = stopped => {}
                }
            });
            // Dropping the runtime drops every connection task with it.
            drop(rt);
        });
        Self {
            addr,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    fn kill(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            t.join().unwrap();
        }
    }
}

impl Drop for KillableReplica {
    fn drop(&mut self) {
        self.kill();
    }
}

fn agent_config(addr: SocketAddr, otp: &str) -> AgentConfig {
    agent_config_for(&[addr], otp)
}

fn agent_config_for(addrs: &[SocketAddr], otp: &str) -> AgentConfig {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    let mut c = AgentConfig::new(
        ServerAddresses::new(addrs.iter().map(|a| format!("http://{a}"))).unwrap(),
        otp,
    );
    c.backoff = BackoffConfig::new(Duration::from_millis(50), Duration::from_millis(500));
    c.kill_grace = Duration::from_secs(2);
    c.shutdown_grace = Duration::from_secs(10);
    c.flush_timeout = Duration::from_secs(5);
    c.work_root = std::env::temp_dir().join("hodei-agent-client-tests");
    c
}

async fn wait_for(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn run_job(job_id: JobId, script: &str) -> SP {
    let spec = JobSpec::new("test", CommandType::script("bash", script)).with_timeout_ms(60_000);
    SP::RunJob(v1::RunJobCommand {
        job_id: job_id.to_string(),
        attempt: 1,
        spec: Some(v1::JobSpec::from(&spec)),
        correlation_id: "corr-1".into(),
        resume_after_sequence: 0,
    })
}

#[tokio::test]
async fn logs_survive_a_dropped_stream_exactly_once_and_in_order() {
    const N: u64 = 40;
    let cp = ControlPlane::new(10);
    let addr = serve(cp.clone()).await;
    let client = WorkerClient::builder(agent_config(addr, OTP))
        .build()
        .unwrap();
    let shutdown = CancellationToken::new();
    let agent = tokio::spawn(client.run(shutdown.clone()));

    wait_for("the stream", Duration::from_secs(10), || {
        cp.streams.load(Ordering::SeqCst) >= 1 && cp.current.lock().unwrap().is_some()
    })
    .await;
    let job_id = JobId::new();
    cp.send(run_job(
        job_id,
        &format!("for i in $(seq 1 {N}); do echo line-$i; sleep 0.05; done"),
    ))
    .await;

    wait_for("the job result", Duration::from_secs(30), || {
        !cp.seen.lock().unwrap().results.is_empty()
    })
    .await;

    {
        let seen = cp.seen.lock().unwrap();
        assert!(seen.gaps.is_empty(), "gaps: {:?}", seen.gaps);
        let lines = &seen.lines[&job_id.to_string()];
        let got: Vec<String> = lines
            .iter()
            .map(|e| String::from_utf8_lossy(&e.data).into_owned())
            .collect();
        let want: Vec<String> = (1..=N).map(|i| format!("line-{i}")).collect();
        assert_eq!(got, want);
        let seqs: Vec<u64> = lines.iter().map(|e| e.sequence).collect();
        assert_eq!(seqs, (1..=N).collect::<Vec<_>>());
        // The stream was dropped once and resumed with the session token.
        assert!(cp.dropped_once.load(Ordering::SeqCst));
        assert_eq!(cp.streams.load(Ordering::SeqCst), 2);
        assert_eq!(seen.registers.len(), 2);
        assert_eq!(seen.registers[0].otp, OTP);
        assert_eq!(seen.registers[1].otp, "");
        assert_eq!(seen.registers[1].resume_session_token, TOKEN);
        // The unacknowledged batch was resent: the server saw (and dropped) duplicates.
        assert!(seen.duplicates > 0, "expected resent entries");
        // Every stream starts with a heartbeat; after the resume it lists the running job.
        assert!(matches!(seen.first_messages[0], Some(WP::Heartbeat(_))));
        match &seen.first_messages[1] {
            Some(WP::Heartbeat(h)) => assert_eq!(h.running_jobs, vec![job_id.to_string()]),
            other => panic!("first message after resume: {other:?}"),
        }
        assert_eq!(seen.started, vec![job_id.to_string()]);
        assert_eq!(seen.results.len(), 1);
        let r = &seen.results[0];
        assert_eq!(r.outcome, v1::JobOutcome::Exited as i32);
        assert_eq!(r.exit_code, Some(0));
        assert_eq!(r.last_sequence, N);
        assert_eq!(seen.result_after_last_batch, vec![true]);
    }

    // Graceful shutdown: draining status, unregister, Ok.
    shutdown.cancel();
    let res = tokio::time::timeout(Duration::from_secs(15), agent)
        .await
        .expect("agent did not stop")
        .unwrap();
    assert!(res.is_ok(), "{res:?}");
    let seen = cp.seen.lock().unwrap();
    assert_eq!(seen.statuses, vec![v1::WorkerState::Draining as i32]);
    assert_eq!(seen.unregistered.len(), 1);
}

#[tokio::test]
async fn progress_lines_and_stats_reach_the_server() {
    let cp = ControlPlane::new(0);
    let addr = serve(cp.clone()).await;
    let client = WorkerClient::builder(agent_config(addr, OTP))
        .build()
        .unwrap();
    let shutdown = CancellationToken::new();
    let agent = tokio::spawn(client.run(shutdown.clone()));
    wait_for("the stream", Duration::from_secs(10), || {
        cp.current.lock().unwrap().is_some()
    })
    .await;
    cp.send(run_job(
        JobId::new(),
        "echo '::progress 30 fetching'; sleep 0.7; echo 'say ::progress 50 no'; \
         echo '::progress 90 packing'; echo '::progress 90 done'",
    ))
    .await;
    wait_for("the job result", Duration::from_secs(30), || {
        !cp.seen.lock().unwrap().results.is_empty()
    })
    .await;
    {
        let seen = cp.seen.lock().unwrap();
        assert_eq!(seen.progress.first(), Some(&(30, "fetching".to_owned())));
        // Latest wins; a marker not at the start of a line is no report.
        assert_eq!(seen.progress.last(), Some(&(90, "done".to_owned())));
        assert!(
            !seen.progress.iter().any(|(p, _)| *p == 50),
            "{:?}",
            seen.progress
        );
        assert!(
            !seen.progress_after_result,
            "the last report precedes the result"
        );
        // The stats tick fires at connect with a fresh sample.
        assert!(
            seen.stats.iter().any(|u| u.memory_bytes > 0),
            "stats: {:?}",
            seen.stats
        );
    }
    shutdown.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(15), agent).await;
}

/// Two replicas sharing one state; the agent is given both. Replica A stores what arrives
/// but acknowledges nothing, then dies: the agent resumes its session on B, keeps its job
/// running, and resends everything A never acknowledged. B sees every line once, in order,
/// and one result.
#[tokio::test]
async fn a_killed_replica_hands_the_agent_and_its_job_to_the_next() {
    const N: u64 = 40;
    let cp = ControlPlane::new(0);
    let mut a = KillableReplica::start(cp.clone(), "a");
    let b = serve_named(cp.clone(), "b").await;
    let client = WorkerClient::builder(agent_config_for(&[a.addr, b], OTP))
        .build()
        .unwrap();
    let shutdown = CancellationToken::new();
    let agent = tokio::spawn(client.run(shutdown.clone()));

    wait_for("the stream to replica a", Duration::from_secs(10), || {
        cp.current.lock().unwrap().is_some()
    })
    .await;
    assert_eq!(cp.seen.lock().unwrap().stream_servers, vec!["a"]);
    let job_id = JobId::new();
    cp.send(run_job(
        job_id,
        &format!("for i in $(seq 1 {N}); do echo line-$i; sleep 0.05; done"),
    ))
    .await;
    let lines_seen = || {
        cp.seen
            .lock()
            .unwrap()
            .lines
            .get(&job_id.to_string())
            .map_or(0, Vec::len)
    };
    wait_for("the first lines", Duration::from_secs(10), || {
        lines_seen() >= 8
    })
    .await;
    // A stores but no longer acknowledges; then it dies mid-job.
    cp.mute_acks.store(true, Ordering::SeqCst);
    let muted_at = lines_seen();
    wait_for("unacknowledged lines", Duration::from_secs(10), || {
        lines_seen() >= muted_at + 4
    })
    .await;
    a.kill();
    cp.mute_acks.store(false, Ordering::SeqCst);

    wait_for("the job result", Duration::from_secs(30), || {
        !cp.seen.lock().unwrap().results.is_empty()
    })
    .await;
    {
        let seen = cp.seen.lock().unwrap();
        assert!(seen.gaps.is_empty(), "gaps: {:?}", seen.gaps);
        let got: Vec<String> = seen.lines[&job_id.to_string()]
            .iter()
            .map(|e| String::from_utf8_lossy(&e.data).into_owned())
            .collect();
        let want: Vec<String> = (1..=N).map(|i| format!("line-{i}")).collect();
        assert_eq!(got, want);
        // Re-attached to B with the session, not a new registration.
        assert_eq!(seen.stream_servers, vec!["a", "b"]);
        assert_eq!(seen.registers.len(), 2);
        assert_eq!(seen.registers[1].otp, "");
        assert_eq!(seen.registers[1].resume_session_token, TOKEN);
        match &seen.first_messages[1] {
            Some(WP::Heartbeat(h)) => assert_eq!(h.running_jobs, vec![job_id.to_string()]),
            other => panic!("first message on replica b: {other:?}"),
        }
        // What A stored without acknowledging came again to B (and was deduplicated).
        assert!(seen.duplicates > 0, "expected resent entries");
        // One start, one result: the job ran once.
        assert_eq!(seen.started, vec![job_id.to_string()]);
        assert_eq!(seen.results.len(), 1);
        assert_eq!(seen.results[0].exit_code, Some(0));
        assert_eq!(seen.results[0].last_sequence, N);
        assert_eq!(seen.result_after_last_batch, vec![true]);
    }
    // Draining talks to the replica in use.
    shutdown.cancel();
    let res = tokio::time::timeout(Duration::from_secs(15), agent)
        .await
        .expect("agent did not stop")
        .unwrap();
    assert!(res.is_ok(), "{res:?}");
    assert_eq!(cp.seen.lock().unwrap().unregistered.len(), 1);
}

/// An agent given a dead address first registers with the next one.
#[tokio::test]
async fn an_unreachable_first_address_is_skipped() {
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let cp = ControlPlane::new(0);
    let live = serve(cp.clone()).await;
    let client = WorkerClient::builder(agent_config_for(&[dead, live], OTP))
        .build()
        .unwrap();
    let shutdown = CancellationToken::new();
    let agent = tokio::spawn(client.run(shutdown.clone()));
    wait_for(
        "registration on the second address",
        Duration::from_secs(10),
        || cp.streams.load(Ordering::SeqCst) == 1,
    )
    .await;
    assert_eq!(cp.seen.lock().unwrap().registers[0].otp, OTP);
    shutdown.cancel();
    let res = tokio::time::timeout(Duration::from_secs(15), agent)
        .await
        .expect("agent did not stop")
        .unwrap();
    assert!(res.is_ok(), "{res:?}");
}

#[tokio::test]
async fn invalid_otp_fails_fast_without_retrying() {
    let cp = ControlPlane::new(0);
    let addr = serve(cp.clone()).await;
    let client = WorkerClient::builder(agent_config(addr, "wrong-token"))
        .build()
        .unwrap();
    let started = Instant::now();
    let res = tokio::time::timeout(
        Duration::from_secs(10),
        client.run(CancellationToken::new()),
    )
    .await
    .expect("run did not return");
    let err = res.unwrap_err();
    assert!(matches!(err, AgentError::InvalidOtp(_)), "{err:?}");
    assert_eq!(err.exit_code(), 2);
    assert!(
        err.to_string()
            .contains("one-time token invalid, used or expired")
    );
    assert!(started.elapsed() < Duration::from_secs(5));
    // Give a retry storm the chance to show itself.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(cp.seen.lock().unwrap().registers.len(), 1);
}

#[tokio::test]
async fn cancel_command_kills_the_job() {
    let cp = ControlPlane::new(0);
    let addr = serve(cp.clone()).await;
    let client = WorkerClient::builder(agent_config(addr, OTP))
        .build()
        .unwrap();
    let shutdown = CancellationToken::new();
    let agent = tokio::spawn(client.run(shutdown.clone()));
    wait_for("the stream", Duration::from_secs(10), || {
        cp.current.lock().unwrap().is_some()
    })
    .await;

    let job_id = JobId::new();
    cp.send(run_job(job_id, "echo started; sleep 60; echo never"))
        .await;
    wait_for("the first log line", Duration::from_secs(10), || {
        cp.seen
            .lock()
            .unwrap()
            .lines
            .get(&job_id.to_string())
            .is_some_and(|l| !l.is_empty())
    })
    .await;
    let t = Instant::now();
    cp.send(SP::CancelJob(v1::CancelJobCommand {
        job_id: job_id.to_string(),
        attempt: 1,
        reason: "user asked".into(),
    }))
    .await;
    wait_for("the cancelled result", Duration::from_secs(10), || {
        !cp.seen.lock().unwrap().results.is_empty()
    })
    .await;
    assert!(t.elapsed() < Duration::from_secs(8));
    {
        let seen = cp.seen.lock().unwrap();
        let r = &seen.results[0];
        assert_eq!(r.outcome, v1::JobOutcome::Cancelled as i32, "{r:?}");
        let lines = &seen.lines[&job_id.to_string()];
        assert_eq!(lines.len(), 1);
        assert_eq!(&lines[0].data[..], b"started");
        assert_eq!(r.last_sequence, 1);
    }
    shutdown.cancel();
    let res = tokio::time::timeout(Duration::from_secs(15), agent)
        .await
        .expect("agent did not stop")
        .unwrap();
    assert!(res.is_ok(), "{res:?}");
}

#[tokio::test]
async fn waits_for_a_server_that_starts_late() {
    // Reserve a port, free it, start the agent, then start the server on that port.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let cp = ControlPlane::new(0);
    let client = WorkerClient::builder(agent_config(addr, OTP))
        .build()
        .unwrap();
    let shutdown = CancellationToken::new();
    let agent = tokio::spawn(client.run(shutdown.clone()));
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert!(
        !agent.is_finished(),
        "agent gave up on an unreachable server"
    );
    let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
    let svc = Svc(cp.clone(), "main");
    tokio::spawn(async move {
        tonic::transport::Server::builder()
            .add_service(WorkerAgentServiceServer::new(svc))
            .serve_with_incoming(TcpListenerStream::new(listener))
            .await
            .unwrap();
    });
    wait_for("registration", Duration::from_secs(10), || {
        cp.streams.load(Ordering::SeqCst) == 1
    })
    .await;
    wait_for("heartbeats", Duration::from_secs(5), || {
        cp.seen.lock().unwrap().heartbeats >= 2
    })
    .await;
    shutdown.cancel();
    let res = tokio::time::timeout(Duration::from_secs(15), agent)
        .await
        .expect("agent did not stop")
        .unwrap();
    assert!(res.is_ok(), "{res:?}");
}
