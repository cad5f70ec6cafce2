//! The process provider: each worker is a `hodei-worker` agent running as a
//! local child process.
//!
//! It is the default provider: nothing to install beyond the agent binary, so
//! it is what the quickstart and the end-to-end tests use. Each agent runs in
//! its own process group, so destroying a worker (SIGTERM, grace, SIGKILL)
//! also stops whatever the agent started.
//!
//! What it does not do:
//! - **Images.** A process cannot run in an image; a job spec with an `image`
//!   is still eligible and the image is ignored (`supports_images` is false).
//! - **Resource limits.** CPU and memory requests are checked against the
//!   host's size for eligibility but not enforced on the process.
//!
//! ```no_run
//! use hodei_core::provider::WorkerProvider;
//! use hodei_providers::process::{ProcessProvider, ProcessProviderConfig};
//! # fn main() -> Result<(), hodei_core::ProviderError> {
//! let provider = ProcessProvider::new(ProcessProviderConfig::from_env()?);
//! let provider: std::sync::Arc<dyn WorkerProvider> = std::sync::Arc::new(provider);
//! assert_eq!(provider.name(), "process");
//! # Ok(()) }
//! ```

pub mod config;
mod leftovers;

pub use leftovers::OWNER_ENV;

pub use config::{
    AGENT_BINARY_NAME, ENV_MAX_WORKERS, ENV_WORKER_BINARY, ProcessProviderConfig,
    is_executable_file,
};

use std::collections::{HashMap, VecDeque};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::host::{host_capabilities, lock, sample_process};
use async_trait::async_trait;
use futures::stream::{BoxStream, StreamExt};
use hodei_core::provider::{
    HealthStatus, ResourceUsage, WorkerCost, WorkerEvent, WorkerEventSource, WorkerHealth,
    WorkerLifecycle, WorkerLogs, WorkerMetrics, WorkerProviderIdentity,
};
use hodei_core::{
    ProviderCapabilities, ProviderError, ProviderId, ProviderType, WorkerHandle, WorkerId,
    WorkerSpec, WorkerState,
};
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::Command;
use tokio::sync::{broadcast, watch};
use tokio_stream::wrappers::BroadcastStream;

/// Start-up time assumed until one has been measured.
pub const DEFAULT_STARTUP: Duration = Duration::from_millis(50);
/// Longest output line kept; the rest of an over-long line is dropped.
const MAX_LINE_BYTES: usize = 16 * 1024;
/// Exited workers remembered (for `Terminated` status and their logs).
const EXITED_KEPT: usize = 256;
/// How long to wait for a process to be reaped after SIGKILL.
const KILL_WAIT: Duration = Duration::from_secs(5);

/// How a worker process ended.
#[derive(Debug, Clone, Copy)]
struct ExitInfo {
    status: ExitStatus,
    at: Instant,
}

/// One worker process and what the provider knows about it.
struct WorkerProc {
    pid: u32,
    logs: Arc<Mutex<VecDeque<String>>>,
    exit: watch::Receiver<Option<ExitInfo>>,
    destroy_requested: Arc<AtomicBool>,
    /// Last CPU sample: when, and utime + stime in ticks.
    cpu_sample: Mutex<(Instant, u64)>,
}

impl WorkerProc {
    fn exited(&self) -> Option<ExitInfo> {
        *self.exit.borrow()
    }
}

/// Runs each worker as a local `hodei-worker` child process. See the [module docs](self).
pub struct ProcessProvider {
    id: ProviderId,
    config: ProcessProviderConfig,
    workers: Arc<Mutex<HashMap<WorkerId, Arc<WorkerProc>>>>,
    live: Arc<AtomicU32>,
    events: broadcast::Sender<WorkerEvent>,
    startup: Mutex<Option<Duration>>,
    capabilities: ProviderCapabilities,
}

impl std::fmt::Debug for ProcessProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProcessProvider")
            .field("id", &self.id)
            .field("config", &self.config)
            .field("live_workers", &self.live.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl ProcessProvider {
    /// A provider with a new id.
    #[must_use]
    pub fn new(config: ProcessProviderConfig) -> Self {
        Self::with_id(ProviderId::new(), config)
    }

    /// A provider with a given id (as stored by the control plane).
    #[must_use]
    pub fn with_id(id: ProviderId, config: ProcessProviderConfig) -> Self {
        let (events, _) = broadcast::channel(1024);
        let capabilities = host_capabilities(config.max_workers);
        Self {
            id,
            config,
            workers: Arc::new(Mutex::new(HashMap::new())),
            live: Arc::new(AtomicU32::new(0)),
            events,
            startup: Mutex::new(None),
            capabilities,
        }
    }

    /// Its configuration.
    #[must_use]
    pub fn config(&self) -> &ProcessProviderConfig {
        &self.config
    }

    /// Worker processes alive now.
    #[must_use]
    pub fn live_workers(&self) -> u32 {
        self.live.load(Ordering::SeqCst)
    }

    /// Records a measured start-up time (create → agent registered). The
    /// control plane calls it when an agent of this provider registers; the
    /// estimate is an exponential moving average (weight 0.3 on the newest).
    pub fn record_startup(&self, took: Duration) {
        let mut s = lock(&self.startup);
        *s = Some(match *s {
            None => took,
            Some(avg) => avg.mul_f64(0.7) + took.mul_f64(0.3),
        });
    }

    /// How a worker's process ended, once it has (`None` while it runs or when unknown).
    #[must_use]
    pub fn exit_status(&self, worker_id: WorkerId) -> Option<ExitStatus> {
        self.find(worker_id)?.exited().map(|e| e.status)
    }

    /// The pid of a worker's process, if the worker is known.
    #[must_use]
    pub fn pid(&self, worker_id: WorkerId) -> Option<u32> {
        self.find(worker_id).map(|w| w.pid)
    }

    /// Stops the worker processes a previous server process with this
    /// provider's id left running and that `known` (the registry) does not
    /// list: what a `kill -9` of the server leaves behind. Workers this
    /// process started, and processes younger than
    /// [`orphan_min_age`](ProcessProviderConfig::orphan_min_age), are never
    /// touched here. Returns what was stopped.
    pub async fn cleanup_orphans(
        &self,
        known: &std::collections::HashSet<WorkerId>,
    ) -> Result<Vec<String>, ProviderError> {
        let mine: std::collections::HashSet<u32> =
            lock(&self.workers).values().map(|w| w.pid).collect();
        let mut stopped = Vec::new();
        for orphan in leftovers::orphans(self.id, known, self.config.orphan_min_age) {
            if mine.contains(&orphan.pid) {
                continue;
            }
            let what = match orphan.worker_id {
                Some(w) => format!("worker {w} (pid {})", orphan.pid),
                None => format!("pid {}", orphan.pid),
            };
            if leftovers::stop(orphan.pid, self.config.destroy_grace).await {
                stopped.push(what);
            } else {
                tracing::warn!(pid = orphan.pid, "an orphaned worker process did not exit");
            }
        }
        Ok(stopped)
    }

    fn agent_binary(&self) -> Result<PathBuf, ProviderError> {
        let hint = format!(
            "build it with `cargo build -p hodei-examples --bin hodei-worker` \
             or set {ENV_WORKER_BINARY} to its path"
        );
        match self.config.resolve_agent_binary() {
            Some(p) if is_executable_file(&p) => Ok(p),
            Some(p) => Err(ProviderError::InvalidConfig(format!(
                "agent binary {} does not exist or is not executable: {hint}",
                p.display()
            ))),
            None => Err(ProviderError::InvalidConfig(format!(
                "agent binary `{AGENT_BINARY_NAME}` not found next to the server or on PATH: {hint}"
            ))),
        }
    }

    fn find(&self, worker_id: WorkerId) -> Option<Arc<WorkerProc>> {
        lock(&self.workers).get(&worker_id).cloned()
    }

    /// Takes a slot under `max_workers`, or says the provider is full.
    fn reserve_slot(&self) -> Result<(), ProviderError> {
        let max = self.config.max_workers;
        self.live
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                (n < max).then_some(n + 1)
            })
            .map(|_| ())
            .map_err(|n| {
                ProviderError::ResourceExhausted(format!(
                    "process provider `{}` runs {n} of at most {max} workers",
                    self.config.name
                ))
            })
    }

    /// Forgets the oldest exited workers beyond [`EXITED_KEPT`].
    fn prune_exited(&self) {
        let mut workers = lock(&self.workers);
        let mut exited: Vec<(Instant, WorkerId)> = workers
            .iter()
            .filter_map(|(id, w)| w.exited().map(|e| (e.at, *id)))
            .collect();
        if exited.len() <= EXITED_KEPT {
            return;
        }
        exited.sort();
        let extra = exited.len() - EXITED_KEPT;
        for (_, id) in exited.into_iter().take(extra) {
            workers.remove(&id);
        }
    }

    fn spawn(&self, spec: &WorkerSpec, binary: &Path) -> Result<WorkerHandle, ProviderError> {
        let mut cmd = Command::new(binary);
        cmd.envs(&self.config.extra_env)
            .envs(spec.agent_env())
            .env(OWNER_ENV, self.id.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(false)
            .process_group(0);
        let mut child = cmd.spawn().map_err(|e| {
            ProviderError::Internal(format!("cannot start {}: {e}", binary.display()))
        })?;
        let pid = child.id().ok_or_else(|| {
            ProviderError::Internal("worker process exited before its pid was read".into())
        })?;
        let worker_id = spec.worker_id;
        let logs = Arc::new(Mutex::new(VecDeque::new()));
        let keep = self.config.log_lines_kept;
        if let Some(out) = child.stdout.take() {
            tokio::spawn(collect_lines(out, Arc::clone(&logs), keep, worker_id));
        }
        if let Some(err) = child.stderr.take() {
            tokio::spawn(collect_lines(err, Arc::clone(&logs), keep, worker_id));
        }
        let (exit_tx, exit_rx) = watch::channel(None);
        let destroy_requested = Arc::new(AtomicBool::new(false));
        let proc = Arc::new(WorkerProc {
            pid,
            logs,
            exit: exit_rx,
            destroy_requested: Arc::clone(&destroy_requested),
            cpu_sample: Mutex::new((Instant::now(), 0)),
        });
        lock(&self.workers).insert(worker_id, proc);

        let events = self.events.clone();
        let live = Arc::clone(&self.live);
        tokio::spawn(async move {
            let status = child.wait().await;
            // The agent is gone: whatever it left in its group goes with it.
            let _ = killpg(pgid(pid), Signal::SIGKILL);
            live.fetch_sub(1, Ordering::SeqCst);
            let event = match status {
                Ok(status) => {
                    let _ = exit_tx.send(Some(ExitInfo {
                        status,
                        at: Instant::now(),
                    }));
                    if destroy_requested.load(Ordering::SeqCst) {
                        WorkerEvent::Destroyed { worker_id }
                    } else {
                        tracing::warn!(%worker_id, pid, %status, "worker process exited on its own");
                        WorkerEvent::Exited {
                            worker_id,
                            exit_code: status.code(),
                            reason: describe_exit(status),
                        }
                    }
                }
                Err(e) => {
                    let _ = exit_tx.send(Some(ExitInfo {
                        status: ExitStatus::from_raw(0xff00),
                        at: Instant::now(),
                    }));
                    WorkerEvent::Exited {
                        worker_id,
                        exit_code: None,
                        reason: format!("cannot wait for the worker process: {e}"),
                    }
                }
            };
            let _ = events.send(event);
        });

        tracing::info!(%worker_id, pid, binary = %binary.display(), "worker process started");
        let _ = self.events.send(WorkerEvent::Created { worker_id });
        let _ = self.events.send(WorkerEvent::Started { worker_id });
        let mut handle = WorkerHandle::new(worker_id, self.id, pid.to_string());
        handle.metadata.insert("pid".into(), pid.to_string());
        // Lets a restarted server tell this process from a later one with its pid.
        if let Some(tag) = crate::host::owner_tag(pid) {
            handle.metadata.insert(leftovers::TAG_KEY.into(), tag);
        }
        handle
            .metadata
            .insert("binary".into(), binary.display().to_string());
        Ok(handle)
    }
}

fn pgid(pid: u32) -> Pid {
    Pid::from_raw(i32::try_from(pid).unwrap_or(i32::MAX))
}

fn describe_exit(status: ExitStatus) -> String {
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exited with code {code}"),
        (None, Some(sig)) => {
            let name = Signal::try_from(sig).map_or_else(|_| sig.to_string(), |s| s.to_string());
            format!("killed by signal {name}")
        }
        (None, None) => "exited".to_owned(),
    }
}

/// Reads `src` line by line into the ring buffer `logs` (at most `keep` lines).
async fn collect_lines(
    src: impl AsyncRead + Unpin,
    logs: Arc<Mutex<VecDeque<String>>>,
    keep: usize,
    worker_id: WorkerId,
) {
    let mut reader = BufReader::new(src);
    let mut line: Vec<u8> = Vec::new();
    let mut truncated = false;
    loop {
        let (consumed, done) = match reader.fill_buf().await {
            Ok([]) | Err(_) => {
                if !line.is_empty() {
                    push_line(&logs, keep, &line, truncated, worker_id);
                }
                return;
            }
            Ok(buf) => match buf.iter().position(|b| *b == b'\n') {
                Some(i) => {
                    append_bounded(&mut line, &buf[..i], &mut truncated);
                    (i + 1, true)
                }
                None => {
                    append_bounded(&mut line, buf, &mut truncated);
                    (buf.len(), false)
                }
            },
        };
        reader.consume(consumed);
        if done {
            push_line(&logs, keep, &line, truncated, worker_id);
            line.clear();
            truncated = false;
        }
    }
}

fn append_bounded(line: &mut Vec<u8>, data: &[u8], truncated: &mut bool) {
    let room = MAX_LINE_BYTES.saturating_sub(line.len());
    if data.len() > room {
        *truncated = true;
    }
    line.extend_from_slice(&data[..data.len().min(room)]);
}

fn push_line(
    logs: &Mutex<VecDeque<String>>,
    keep: usize,
    line: &[u8],
    truncated: bool,
    worker_id: WorkerId,
) {
    let mut text = String::from_utf8_lossy(line.strip_suffix(b"\r").unwrap_or(line)).into_owned();
    if truncated {
        text.push_str(" [line truncated]");
    }
    tracing::debug!(%worker_id, line = %text, "worker output");
    if keep == 0 {
        return;
    }
    let mut logs = lock(logs);
    while logs.len() >= keep {
        logs.pop_front();
    }
    logs.push_back(text);
}

/// `read_bytes` / `write_bytes` from `/proc/<pid>/io`.
fn proc_io(io: &str) -> (u64, u64) {
    let get = |key: &str| {
        io.lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0)
    };
    (get("read_bytes:"), get("write_bytes:"))
}

#[async_trait]
impl WorkerLifecycle for ProcessProvider {
    async fn create_worker(&self, spec: &WorkerSpec) -> Result<WorkerHandle, ProviderError> {
        let binary = self.agent_binary()?;
        if self
            .find(spec.worker_id)
            .is_some_and(|w| w.exited().is_none())
        {
            return Err(ProviderError::Internal(format!(
                "worker {} already runs on this provider",
                spec.worker_id
            )));
        }
        self.reserve_slot()?;
        self.prune_exited();
        self.spawn(spec, &binary).inspect_err(|_| {
            self.live.fetch_sub(1, Ordering::SeqCst);
        })
    }

    async fn get_worker_status(&self, handle: &WorkerHandle) -> Result<WorkerState, ProviderError> {
        let w = self
            .find(handle.worker_id)
            .ok_or(ProviderError::WorkerNotFound(handle.worker_id))?;
        Ok(if w.exited().is_some() {
            WorkerState::Terminated
        } else {
            // The control plane tracks registration itself; a live process is ready as far
            // as this provider can tell.
            WorkerState::Ready
        })
    }

    /// SIGTERM to the worker's process group, up to `destroy_grace` for it to
    /// exit, then SIGKILL. Unknown or already exited workers: a no-op.
    async fn destroy_worker(&self, handle: &WorkerHandle) -> Result<(), ProviderError> {
        let Some(w) = self.find(handle.worker_id) else {
            // Not a child of this process: a worker a previous server process
            // started. Signal it by its pid while it is still that process.
            if let Some(pid) = leftovers::still_running(handle) {
                tracing::info!(worker_id = %handle.worker_id, pid, "destroying a worker process left by a previous server");
                if !leftovers::stop(pid, self.config.destroy_grace).await {
                    return Err(ProviderError::Timeout(format!(
                        "worker process {pid} did not exit after SIGKILL"
                    )));
                }
            }
            return Ok(());
        };
        if w.exited().is_some() {
            return Ok(());
        }
        w.destroy_requested.store(true, Ordering::SeqCst);
        let group = pgid(w.pid);
        let _ = killpg(group, Signal::SIGTERM);
        let mut exit = w.exit.clone();
        let exited = |e: &Option<ExitInfo>| e.is_some();
        if tokio::time::timeout(self.config.destroy_grace, exit.wait_for(exited))
            .await
            .is_ok()
        {
            return Ok(());
        }
        tracing::warn!(worker_id = %handle.worker_id, pid = w.pid,
            "worker did not stop within the grace period; sending SIGKILL");
        if w.exited().is_none() {
            let _ = killpg(group, Signal::SIGKILL);
        }
        match tokio::time::timeout(KILL_WAIT, exit.wait_for(exited)).await {
            Ok(_) => Ok(()),
            Err(_) => Err(ProviderError::Timeout(format!(
                "worker process {} did not exit after SIGKILL",
                w.pid
            ))),
        }
    }
}

#[async_trait]
impl WorkerHealth for ProcessProvider {
    async fn health_check(&self) -> Result<HealthStatus, ProviderError> {
        let started = Instant::now();
        let status = match self.agent_binary() {
            Ok(p) => HealthStatus::healthy(format!("agent binary {} is executable", p.display())),
            Err(e) => HealthStatus::unhealthy(e.to_string()),
        };
        Ok(status.with_latency(started.elapsed()))
    }
}

#[async_trait]
impl WorkerLogs for ProcessProvider {
    async fn get_worker_logs(
        &self,
        handle: &WorkerHandle,
        tail: Option<usize>,
    ) -> Result<Vec<String>, ProviderError> {
        let w = self
            .find(handle.worker_id)
            .ok_or(ProviderError::WorkerNotFound(handle.worker_id))?;
        let logs = lock(&w.logs);
        let skip = tail.map_or(0, |n| logs.len().saturating_sub(n));
        Ok(logs.iter().skip(skip).cloned().collect())
    }
}

impl WorkerCost for ProcessProvider {
    fn estimated_startup_time(&self) -> Duration {
        lock(&self.startup).unwrap_or(DEFAULT_STARTUP)
    }
}

#[async_trait]
impl WorkerMetrics for ProcessProvider {
    /// CPU (since the previous sample, or since start), resident memory and
    /// disk I/O of the agent process, from `/proc`. Zero once it has exited.
    async fn get_worker_metrics(
        &self,
        handle: &WorkerHandle,
    ) -> Result<ResourceUsage, ProviderError> {
        let w = self
            .find(handle.worker_id)
            .ok_or(ProviderError::WorkerNotFound(handle.worker_id))?;
        let mut usage = ResourceUsage::default();
        if w.exited().is_some() {
            return Ok(usage);
        }
        if !sample_process(w.pid, &w.cpu_sample, &mut usage).await {
            // It exited between the check and the read.
            return Ok(usage);
        }
        if let Ok(io) = tokio::fs::read_to_string(format!("/proc/{}/io", w.pid)).await {
            (usage.disk_read_bytes, usage.disk_write_bytes) = proc_io(&io);
        }
        Ok(usage)
    }
}

impl WorkerEventSource for ProcessProvider {
    fn events(&self) -> BoxStream<'static, WorkerEvent> {
        BroadcastStream::new(self.events.subscribe())
            .filter_map(|e| async move { e.ok() })
            .boxed()
    }
}

impl WorkerProviderIdentity for ProcessProvider {
    fn id(&self) -> ProviderId {
        self.id
    }

    fn name(&self) -> &str {
        &self.config.name
    }

    fn provider_type(&self) -> ProviderType {
        ProviderType::BareMetal
    }

    fn capabilities(&self) -> ProviderCapabilities {
        self.capabilities.clone()
    }

    // Optional traits it offers. Eligibility is the default, from the
    // capabilities: a spec's `image` is ignored, not refused.
    fn cost(&self) -> Option<&dyn WorkerCost> {
        Some(self)
    }
    fn logs(&self) -> Option<&dyn WorkerLogs> {
        Some(self)
    }
    fn metrics(&self) -> Option<&dyn WorkerMetrics> {
        Some(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::{proc_cpu_ticks, proc_kb};

    #[test]
    fn parses_proc_stat_with_odd_command_names() {
        let stat = "1234 (my (weird) cmd) S 1 1234 1234 0 -1 4194560 100 0 0 0 250 75 0 0 20 0 1 0 100 1000 50";
        assert_eq!(proc_cpu_ticks(stat), Some(325));
    }

    #[test]
    fn parses_status_and_io() {
        let status = "Name:\tx\nVmPeak:\t  9000 kB\nVmRSS:\t  4321 kB\n";
        assert_eq!(proc_kb(status, "VmRSS:"), Some(4321));
        assert_eq!(
            proc_io("rchar: 1\nread_bytes: 4096\nwrite_bytes: 8192\n"),
            (4096, 8192)
        );
    }

    #[test]
    fn host_capabilities_reflect_the_machine() {
        let caps = host_capabilities(7);
        assert!(caps.max_cpu_cores >= 1.0);
        assert!(caps.max_memory_mb > 0);
        assert_eq!(caps.max_workers, 7);
        assert!(!caps.supports_images);
    }

    #[test]
    fn startup_estimate_is_a_moving_average() {
        let p = ProcessProvider::new(ProcessProviderConfig::default());
        assert_eq!(p.estimated_startup_time(), DEFAULT_STARTUP);
        p.record_startup(Duration::from_millis(100));
        assert_eq!(p.estimated_startup_time(), Duration::from_millis(100));
        p.record_startup(Duration::from_millis(200));
        assert_eq!(p.estimated_startup_time(), Duration::from_millis(130));
    }

    #[test]
    fn exits_are_described() {
        assert_eq!(
            describe_exit(ExitStatus::from_raw(3 << 8)),
            "exited with code 3"
        );
        assert_eq!(
            describe_exit(ExitStatus::from_raw(9)),
            "killed by signal SIGKILL"
        );
    }
}
