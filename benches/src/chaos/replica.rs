//! One `hodei-server` replica on fixed ports, which the suite can `kill -9`, stop
//! (`SIGSTOP`), continue and restart on the same ports and database, so the agents
//! it spawned find it again.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use tonic::transport::{Channel, Endpoint};

use super::ChaosError;
use super::procs;
use crate::load::server::free_ports;

/// How long a (re)started server may take to answer on its gRPC port.
const START_BUDGET: Duration = Duration::from_secs(60);

/// A server replica: its ports and environment stay the same across restarts.
#[derive(Debug)]
pub struct Replica {
    /// Short name (`a`, `b`), used in the history and the process provider's name.
    pub name: String,
    server: PathBuf,
    bind: String,
    grpc_port: u16,
    http_port: u16,
    env: Vec<(String, String)>,
    child: Option<Child>,
    log_path: PathBuf,
    channel: Channel,
    exits_at_start: Vec<String>,
}

impl Replica {
    /// A replica of `server` (not started) listening on `bind`, with `env` on top
    /// of the ports; its stderr goes to `<log_dir>/server-<name>.log` (appended
    /// across restarts).
    ///
    /// # Errors
    /// [`ChaosError::Missing`] when no free port is found.
    pub fn new(
        name: &str,
        server: &Path,
        bind: &str,
        env: Vec<(String, String)>,
        log_dir: &Path,
    ) -> Result<Self, ChaosError> {
        let ports = free_ports(2).map_err(|e| ChaosError::Missing(format!("free port: {e}")))?;
        let (grpc_port, http_port) = (ports[0], ports[1]);
        let channel = Endpoint::from_shared(format!("http://{bind}:{grpc_port}"))?
            .connect_timeout(Duration::from_secs(1))
            .tcp_nodelay(true)
            .connect_lazy();
        Ok(Self {
            name: name.to_owned(),
            server: server.to_path_buf(),
            bind: bind.to_owned(),
            grpc_port,
            http_port,
            env,
            child: None,
            log_path: log_dir.join(format!("server-{name}.log")),
            channel,
            exits_at_start: Vec::new(),
        })
    }

    /// Adds an environment variable for the next start.
    pub fn push_env(&mut self, k: &str, v: String) {
        self.env.push((k.to_owned(), v));
    }

    /// The gRPC address agents of this replica connect to.
    pub fn grpc_url(&self) -> String {
        format!("http://{}:{}", self.bind, self.grpc_port)
    }

    /// The REST base address.
    pub fn http_url(&self) -> String {
        format!("http://{}:{}", self.bind, self.http_port)
    }

    /// A channel to the replica (reconnects by itself after a restart).
    pub fn channel(&self) -> Channel {
        self.channel.clone()
    }

    /// The server's process id while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// What the server logged so far, over all its lives.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// Where the server's log is.
    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// The lease holder id the server's latest life logged at start.
    pub fn holder(&self) -> Option<String> {
        let log = self.log();
        let line = log
            .lines()
            .rev()
            .find(|l| l.contains("maintenance runs on the replica holding the lease"))?;
        let rest = &line[line.find("holder=")? + "holder=".len()..];
        Some(rest.split_whitespace().next()?.to_owned())
    }

    /// Starts the server and waits until its gRPC port answers. A server that
    /// exits while starting is started once more, as a supervisor would; the
    /// exit is printed and kept in [`exits_at_start`](Self::exits_at_start), so
    /// that the round reports it.
    ///
    /// # Errors
    /// [`ChaosError::Io`] when it cannot be spawned; [`ChaosError::Timeout`] (with
    /// the log's tail) when it exits twice or does not answer within 60 s.
    pub async fn start(&mut self) -> Result<(), ChaosError> {
        match self.start_once().await? {
            None => return Ok(()),
            Some(failure) => {
                println!(
                    "replica {} exited while starting ({}), started again; its log ends:\n{}",
                    self.name, failure.status, failure.tail
                );
                self.exits_at_start
                    .push(format!("{}: {}", failure.status, failure.tail));
            }
        }
        match self.start_once().await? {
            None => Ok(()),
            Some(failure) => Err(ChaosError::Timeout {
                what: format!(
                    "replica {} to answer on {} (it exited twice, {}); log {} ends:\n{}",
                    self.name,
                    self.grpc_url(),
                    failure.status,
                    self.log_path.display(),
                    failure.tail
                ),
                after: START_BUDGET,
            }),
        }
    }

    /// The exits while starting that a second start got past (status and log).
    pub fn exits_at_start(&self) -> &[String] {
        &self.exits_at_start
    }

    /// One start: `None` once the gRPC port answers, the failure when the
    /// process exited first.
    async fn start_once(&mut self) -> Result<Option<StartFailure>, ChaosError> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path)
            .map_err(|e| ChaosError::io(format!("open {}", self.log_path.display()), e))?;
        let mut cmd = Command::new(&self.server);
        cmd.env("GRPC_PORT", self.grpc_port.to_string())
            .env("HODEI_HTTP_PORT", self.http_port.to_string())
            .env("HODEI_BIND_ADDRESS", &self.bind)
            .env("NO_COLOR", "1")
            .env_remove("DATABASE_URL")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(log));
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        let child = cmd
            .spawn()
            .map_err(|e| ChaosError::io(format!("spawn {}", self.server.display()), e))?;
        self.child = Some(child);
        let endpoint =
            Endpoint::from_shared(self.grpc_url())?.connect_timeout(Duration::from_secs(1));
        let t0 = Instant::now();
        loop {
            if endpoint.connect().await.is_ok() {
                return Ok(None);
            }
            let exited = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten());
            if let Some(status) = exited {
                self.child = None;
                return Ok(Some(StartFailure {
                    status,
                    tail: log_tail(&self.log(), 30),
                }));
            }
            if t0.elapsed() > START_BUDGET {
                self.kill9();
                return Err(ChaosError::Timeout {
                    what: format!(
                        "replica {} to answer on {}; log {} ends:\n{}",
                        self.name,
                        self.grpc_url(),
                        self.log_path.display(),
                        log_tail(&self.log(), 30)
                    ),
                    after: START_BUDGET,
                });
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// `kill -9` of the server (its agents keep running) and reaps it.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// `SIGSTOP`: the process freezes with its sockets open.
    pub fn freeze(&self) {
        if let Some(pid) = self.pid() {
            procs::signal(pid, Signal::SIGSTOP);
        }
    }

    /// `SIGCONT` after [`freeze`](Self::freeze).
    pub fn thaw(&self) {
        if let Some(pid) = self.pid() {
            procs::signal(pid, Signal::SIGCONT);
        }
    }

    /// Stops the server: `SIGCONT` (in case it is frozen), `SIGTERM` (it retires its
    /// workers), then `SIGKILL` after a grace.
    pub fn stop(&mut self) {
        let Some(mut c) = self.child.take() else {
            return;
        };
        procs::signal(c.id(), Signal::SIGCONT);
        procs::signal(c.id(), Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = c.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = c.kill();
        let _ = c.wait();
    }
}

/// How a start failed: the server exited before it answered.
#[derive(Debug)]
struct StartFailure {
    status: std::process::ExitStatus,
    tail: String,
}

/// The last `n` lines of a server log without blank lines and the frames of a
/// backtrace, so that the error or panic above them is what a failed start shows.
fn log_tail(log: &str, n: usize) -> String {
    let is_frame = |l: &str| {
        let t = l.trim_start();
        t.is_empty()
            || t.starts_with("at ")
            || t.starts_with("Stack backtrace:")
            || t.split_once(": ")
                .is_some_and(|(k, _)| !k.is_empty() && k.bytes().all(|b| b.is_ascii_digit()))
    };
    let mut tail: Vec<&str> = log.lines().rev().filter(|l| !is_frame(l)).take(n).collect();
    tail.reverse();
    tail.join("\n")
}

impl Drop for Replica {
    fn drop(&mut self) {
        self.kill9();
    }
}

#[cfg(test)]
mod tests {
    use super::{Replica, log_tail};

    #[tokio::test]
    async fn a_server_that_exits_at_every_start_fails_after_the_second() {
        let dir = tempfile::tempdir().expect("tempdir");
        let false_bin = std::path::Path::new("/bin/false");
        let mut r =
            Replica::new("x", false_bin, "127.0.0.1", Vec::new(), dir.path()).expect("replica");
        let e = r.start().await.expect_err("/bin/false never answers");
        assert!(e.to_string().contains("exited twice"), "{e}");
        assert_eq!(r.exits_at_start().len(), 1, "the first exit is kept");
        assert!(r.pid().is_none());
    }

    #[test]
    fn a_failed_start_shows_the_error_not_the_backtrace() {
        let log = "INFO listening\nError: bind 127.0.0.1:5: Address in use\n\nStack backtrace:\n   0: anyhow::error::backtrace\n             at /src/anyhow.rs:27:14\n  31: _start\n";
        assert_eq!(log_tail(log, 1), "Error: bind 127.0.0.1:5: Address in use");
        assert!(log_tail(log, 9).starts_with("INFO listening\nError: bind"));
    }
}
