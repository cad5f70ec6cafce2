//! Starts the real release `hodei-server` (which spawns real `hodei-worker`
//! agents through the process provider) on free loopback ports, and stops it.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use hodei_core::client::{ClientOptions, HodeiClient};
use hodei_core::proto::v1;
use hodei_core::proto::v1::job_execution_service_client::JobExecutionServiceClient;
use hodei_core::proto::v1::job_query_service_client::JobQueryServiceClient;
use hodei_core::proto::v1::log_stream_service_client::LogStreamServiceClient;
use hodei_core::proto::v1::scheduler_service_client::SchedulerServiceClient;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tonic::transport::{Channel, Endpoint};

use super::LoadError;
use super::procfs::{self, Memory};

/// Name of the agent binary (and of its processes).
pub const WORKER_BINARY: &str = "hodei-worker";
/// Name of the server binary.
pub const SERVER_BINARY: &str = "hodei-server";

/// Paths of the release binaries under test.
#[derive(Debug, Clone)]
pub struct Binaries {
    /// `hodei-server`.
    pub server: PathBuf,
    /// `hodei-worker`.
    pub worker: PathBuf,
}

impl Binaries {
    /// Finds both binaries in `dir`, or (when `None`) next to the running executable,
    /// which is `target/release` under `cargo run --release`.
    pub fn locate(dir: Option<&Path>) -> Result<Self, LoadError> {
        let dir = match dir {
            Some(d) => d.to_path_buf(),
            None => std::env::current_exe()
                .map_err(|e| LoadError::io("current executable", e))?
                .parent()
                .map(Path::to_path_buf)
                .unwrap_or_default(),
        };
        let server = dir.join(SERVER_BINARY);
        let worker = dir.join(WORKER_BINARY);
        for p in [&server, &worker] {
            if !p.is_file() {
                return Err(LoadError::MissingBinary(p.display().to_string()));
            }
        }
        Ok(Self { server, worker })
    }
}

/// A free TCP port on 127.0.0.1.
pub fn free_port() -> Result<u16, LoadError> {
    free_ports(1).map(|p| p[0])
}

/// `n` distinct free TCP ports on 127.0.0.1: every listener is held until all
/// are chosen (ports taken one at a time may come back twice).
pub fn free_ports(n: usize) -> Result<Vec<u16>, LoadError> {
    let listeners = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0"))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| LoadError::io("find a free port", e))?;
    listeners
        .iter()
        .map(|l| l.local_addr().map(|a| a.port()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| LoadError::io("find a free port", e))
}

/// A running `hodei-server` child process with a connected gRPC channel and
/// a typed client over it.
#[derive(Debug)]
pub struct ServerProcess {
    child: Child,
    channel: Channel,
    client: HodeiClient,
    log_path: PathBuf,
    stopped: bool,
}

impl ServerProcess {
    /// Starts the server with the embedded defaults plus `env`, on free ports, and
    /// waits until its gRPC port answers.
    pub async fn start(bins: &Binaries, env: &[(&str, String)]) -> Result<Self, LoadError> {
        Self::start_on(bins, free_port()?, env).await
    }

    /// As [`start`](Self::start), on a gRPC port chosen beforehand (replicas
    /// must know each other's addresses before any of them starts).
    pub async fn start_on(
        bins: &Binaries,
        grpc_port: u16,
        env: &[(&str, String)],
    ) -> Result<Self, LoadError> {
        // Chosen after the gRPC port was let go: it could come back.
        let http_port = loop {
            let p = free_port()?;
            if p != grpc_port {
                break p;
            }
        };
        let log_path =
            std::env::temp_dir().join(format!("hodei-load-{}-{grpc_port}.log", std::process::id()));
        let log = std::fs::File::create(&log_path)
            .map_err(|e| LoadError::io(format!("create {}", log_path.display()), e))?;
        let mut cmd = Command::new(&bins.server);
        cmd.env("GRPC_PORT", grpc_port.to_string())
            .env("HODEI_HTTP_PORT", http_port.to_string())
            .env("HODEI_BIND_ADDRESS", "127.0.0.1")
            .env("HODEI_WORKER_BINARY", &bins.worker)
            .env_remove("HODEI_DATABASE_URL")
            .env_remove("DATABASE_URL")
            .env(
                "RUST_LOG",
                std::env::var("HODEI_LOAD_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(log));
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd
            .spawn()
            .map_err(|e| LoadError::io(format!("spawn {}", bins.server.display()), e))?;
        let url = format!("http://127.0.0.1:{grpc_port}");
        // Connects at its first call: by then the port answers (checked below).
        let client = HodeiClient::connect_lazy(&url, ClientOptions::new())
            .map_err(|e| LoadError::Check(format!("typed client: {e}")))?;
        let mut server = Self {
            child,
            // Replaced below once the port answers.
            channel: Endpoint::from_static("http://127.0.0.1:1").connect_lazy(),
            client,
            log_path,
            stopped: false,
        };
        let endpoint = Endpoint::from_shared(url)?
            .tcp_nodelay(true)
            // As the CLI and the agent do: no window-update stall per log chunk.
            .initial_stream_window_size(Some(1 << 20))
            .initial_connection_window_size(Some(4 << 20))
            // As the CLI does: a log chunk arrives in two HTTP/2 frames, not 32.
            .max_frame_size(Some(256 * 1024))
            .connect_timeout(Duration::from_secs(1));
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(ch) = endpoint.connect().await {
                server.channel = ch;
                return Ok(server);
            }
            if let Ok(Some(st)) = server.child.try_wait() {
                return Err(LoadError::Check(format!(
                    "hodei-server exited at start ({st}); see {}",
                    server.log_path.display()
                )));
            }
            if Instant::now() > deadline {
                return Err(LoadError::Timeout {
                    what: format!(
                        "hodei-server gRPC port (log: {})",
                        server.log_path.display()
                    ),
                    after: Duration::from_secs(30),
                });
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Where the server's stderr goes.
    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// The shared gRPC channel.
    pub fn channel(&self) -> Channel {
        self.channel.clone()
    }

    /// The typed client (submit, get, cancel, wait, logs).
    pub fn client(&self) -> &HodeiClient {
        &self.client
    }

    /// A `JobExecutionService` client.
    pub fn jobs(&self) -> JobExecutionServiceClient<Channel> {
        JobExecutionServiceClient::new(self.channel.clone())
    }

    /// A `JobQueryService` client.
    pub fn query(&self) -> JobQueryServiceClient<Channel> {
        JobQueryServiceClient::new(self.channel.clone())
    }

    /// A `LogStreamService` client accepting large messages.
    pub fn logs(&self) -> LogStreamServiceClient<Channel> {
        LogStreamServiceClient::new(self.channel.clone()).max_decoding_message_size(64 << 20)
    }

    /// A `SchedulerService` client.
    pub fn scheduler(&self) -> SchedulerServiceClient<Channel> {
        SchedulerServiceClient::new(self.channel.clone())
    }

    /// The server's memory, if it is still running.
    pub fn memory(&self) -> Option<Memory> {
        procfs::memory(self.pid())
    }

    /// CPU time the server has used so far.
    pub fn cpu_time(&self) -> Option<Duration> {
        procfs::cpu_time(self.pid())
    }

    /// Process ids of the agents the server spawned.
    pub fn worker_pids(&self) -> Vec<u32> {
        procfs::children_named(self.pid(), WORKER_BINARY)
    }

    /// Number of workers in state Ready.
    pub async fn ready_workers(&self) -> Result<usize, LoadError> {
        let r = self
            .scheduler()
            .get_available_workers(v1::GetAvailableWorkersRequest {
                include_busy: false,
            })
            .await
            .map_err(|s| LoadError::grpc("GetAvailableWorkers", s))?
            .into_inner();
        Ok(r.workers
            .iter()
            .filter(|w| w.state == v1::WorkerState::Ready as i32)
            .count())
    }

    /// Waits until at least `n` workers are Ready; returns how long it took.
    pub async fn wait_ready_workers(
        &self,
        n: usize,
        within: Duration,
    ) -> Result<Duration, LoadError> {
        let t0 = Instant::now();
        loop {
            let ready = self.ready_workers().await?;
            if ready >= n {
                return Ok(t0.elapsed());
            }
            if t0.elapsed() > within {
                return Err(LoadError::Timeout {
                    what: format!("{n} Ready workers (have {ready})"),
                    after: within,
                });
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Stops the server: SIGTERM (it retires its workers), then SIGKILL after a grace;
    /// any agent still alive afterwards is killed too.
    pub fn stop(&mut self) {
        if self.stopped {
            return;
        }
        self.stopped = true;
        let workers = self.worker_pids();
        let pid = Pid::from_raw(self.child.id() as i32);
        let _ = kill(pid, Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(25);
        let mut exited = false;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                exited = true;
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        if !exited {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        for w in workers {
            let still_agent = std::fs::read_to_string(format!("/proc/{w}/comm"))
                .is_ok_and(|c| c.trim() == WORKER_BINARY);
            if still_agent {
                let _ = kill(Pid::from_raw(w as i32), Signal::SIGKILL);
            }
        }
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        self.stop();
    }
}
