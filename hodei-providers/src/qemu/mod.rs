//! The QEMU microVM provider: each worker is a `qemu-system-x86_64 -M microvm`
//! guest booting the image of `scripts/microvm/build-guest.sh`, whose init
//! starts the `hodei-worker` agent and powers the VM off when it exits.
//!
//! - **Acceleration:** KVM when hardware KVM works (a usable `/dev/kvm` *and*
//!   `vmx`/`svm` CPU flags — some hosts expose a `/dev/kvm` that cannot run
//!   a guest), software emulation (TCG) otherwise; [`Accel`] forces either.
//! - **Network:** QEMU user networking: no root, no tap. The guest reaches the
//!   host as `10.0.2.2`, so a server address on `127.0.0.1`/`localhost` is
//!   rewritten to it.
//! - **Secrets:** the agent's settings (OTP, server address, environment) go
//!   through the fw_cfg item `opt/hodei/config`, a file readable only by the
//!   owner and deleted once QEMU has read it — never the kernel command line.
//! - **Per worker:** a directory `<work_dir>/<worker id>/` with a copy-on-write
//!   qcow2 overlay of the base root filesystem (`qemu-img create -b`; a plain
//!   copy without `qemu-img`), the QMP socket, the serial console log and the
//!   QEMU pid. Destroy: QMP `system_powerdown`, grace, `quit`, then SIGKILL;
//!   the directory goes with it. Directories and VMs left by a crashed server
//!   (their owner process is gone) are removed when a provider starts.
//! - **Logs:** the serial console (kernel, init and agent output).
//!
//! ```no_run
//! use hodei_core::provider::WorkerProvider;
//! use hodei_providers::qemu::{QemuMicroVmProvider, QemuProviderConfig};
//! # fn main() -> Result<(), hodei_core::ProviderError> {
//! let provider = QemuMicroVmProvider::new(QemuProviderConfig::from_env()?)?;
//! let provider: std::sync::Arc<dyn WorkerProvider> = std::sync::Arc::new(provider);
//! assert_eq!(provider.name(), "qemu");
//! # Ok(()) }
//! ```

pub mod config;

pub use config::{
    Accel, ENV_QEMU_ACCEL, ENV_QEMU_BINARY, ENV_QEMU_INITRD, ENV_QEMU_KERNEL, ENV_QEMU_MAX_WORKERS,
    ENV_QEMU_MIN_MEMORY_MB, ENV_QEMU_ROOTFS, ENV_QEMU_WORK_DIR, GUEST_IMAGE_HINT,
    QemuProviderConfig,
};

use std::collections::{BTreeMap, HashMap};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::host::{
    create_private_dir, internal, lock, owner_tag, sample_process, tail_file_lines, to_pid,
};
pub use crate::host::{guest_server_address, hardware_kvm_usable};
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
use nix::sys::signal::{Signal, kill};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;
use tokio::process::Command;
use tokio::sync::{broadcast, watch};
use tokio_stream::wrappers::BroadcastStream;

/// Start-up time assumed until one has been measured (software emulation boots in ~3 s).
pub const DEFAULT_STARTUP: Duration = Duration::from_secs(4);
/// The fw_cfg item holding the agent's settings (`KEY=VALUE` lines).
pub const FW_CFG_NAME: &str = "opt/hodei/config";
/// How long QEMU may take to open its QMP socket.
const QMP_READY: Duration = Duration::from_secs(15);
/// One QMP exchange.
const QMP_TIMEOUT: Duration = Duration::from_secs(3);
/// After `quit` (or SIGKILL), how long to wait for QEMU to exit.
const QUIT_WAIT: Duration = Duration::from_secs(5);

/// Files of a worker directory.
const OWNER_FILE: &str = "owner";
const PID_FILE: &str = "qemu.pid";
const CONFIG_FILE: &str = "agent.env";
const CONSOLE_FILE: &str = "console.log";
const QEMU_LOG_FILE: &str = "qemu.log";
const QMP_FILE: &str = "qmp.sock";

/// One VM and what the provider knows about it.
struct Vm {
    pid: u32,
    dir: PathBuf,
    memory_mb: u64,
    exit: watch::Receiver<Option<ExitStatus>>,
    destroy_requested: Arc<AtomicBool>,
    cpu_sample: Mutex<(Instant, u64)>,
}

impl Vm {
    fn exited(&self) -> bool {
        self.exit.borrow().is_some()
    }
    fn qmp(&self) -> PathBuf {
        self.dir.join(QMP_FILE)
    }
}

/// Runs each worker as a QEMU microvm guest. See the [module docs](self).
pub struct QemuMicroVmProvider {
    id: ProviderId,
    config: QemuProviderConfig,
    kvm: bool,
    vms: Arc<Mutex<HashMap<WorkerId, Arc<Vm>>>>,
    live: Arc<AtomicU32>,
    events: broadcast::Sender<WorkerEvent>,
    startup: Mutex<Option<Duration>>,
    capabilities: ProviderCapabilities,
}

impl std::fmt::Debug for QemuMicroVmProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QemuMicroVmProvider")
            .field("id", &self.id)
            .field("config", &self.config)
            .field("kvm", &self.kvm)
            .field("live_workers", &self.live.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl QemuMicroVmProvider {
    /// A provider with a new id. Creates the work directory and removes what a
    /// crashed server left in it (see the [module docs](self)).
    ///
    /// # Errors
    /// [`ProviderError::InvalidConfig`] when the work directory cannot be created.
    pub fn new(config: QemuProviderConfig) -> Result<Self, ProviderError> {
        Self::with_id(ProviderId::new(), config)
    }

    /// A provider with a given id (as stored by the control plane).
    ///
    /// # Errors
    /// [`ProviderError::InvalidConfig`] when the work directory cannot be created.
    pub fn with_id(id: ProviderId, config: QemuProviderConfig) -> Result<Self, ProviderError> {
        std::fs::create_dir_all(&config.work_dir).map_err(|e| {
            ProviderError::InvalidConfig(format!(
                "cannot create the QEMU work dir {} ({e}): set {ENV_QEMU_WORK_DIR} to a writable directory",
                config.work_dir.display()
            ))
        })?;
        let removed = remove_orphans(&config.work_dir);
        if removed > 0 {
            tracing::warn!(removed, dir = %config.work_dir.display(),
                "removed worker VMs left by a server that is gone");
        }
        let kvm = match config.accel {
            Accel::Kvm => true,
            Accel::Tcg => false,
            Accel::Auto => hardware_kvm_usable(),
        };
        let (events, _) = broadcast::channel(1024);
        let capabilities = host_capabilities(config.max_workers);
        Ok(Self {
            id,
            config,
            kvm,
            vms: Arc::new(Mutex::new(HashMap::new())),
            live: Arc::new(AtomicU32::new(0)),
            events,
            startup: Mutex::new(None),
            capabilities,
        })
    }

    /// Its configuration.
    #[must_use]
    pub fn config(&self) -> &QemuProviderConfig {
        &self.config
    }

    /// Whether guests run under KVM (`false`: software emulation).
    #[must_use]
    pub fn uses_kvm(&self) -> bool {
        self.kvm
    }

    /// VMs alive now.
    #[must_use]
    pub fn live_workers(&self) -> u32 {
        self.live.load(Ordering::SeqCst)
    }

    /// The QEMU pid of a worker, if known.
    #[must_use]
    pub fn pid(&self, worker_id: WorkerId) -> Option<u32> {
        self.find(worker_id).map(|v| v.pid)
    }

    /// The per-worker directory of a worker, if known.
    #[must_use]
    pub fn worker_dir(&self, worker_id: WorkerId) -> Option<PathBuf> {
        self.find(worker_id).map(|v| v.dir.clone())
    }

    /// Records a measured start-up time (create → agent registered); the
    /// estimate is an exponential moving average (weight 0.3 on the newest).
    pub fn record_startup(&self, took: Duration) {
        let mut s = lock(&self.startup);
        *s = Some(match *s {
            None => took,
            Some(avg) => avg.mul_f64(0.7) + took.mul_f64(0.3),
        });
    }

    fn find(&self, worker_id: WorkerId) -> Option<Arc<Vm>> {
        lock(&self.vms).get(&worker_id).cloned()
    }

    /// What is missing to boot a VM, with what to do about it.
    async fn preflight(&self) -> Result<String, ProviderError> {
        for (what, path) in [
            ("kernel", &self.config.kernel),
            ("initramfs", &self.config.initrd),
            ("root filesystem", &self.config.rootfs),
        ] {
            if !path.is_file() {
                return Err(ProviderError::ImageNotFound {
                    image: format!("{what} {}", path.display()),
                    hint: GUEST_IMAGE_HINT.to_owned(),
                });
            }
        }
        let out = Command::new(&self.config.qemu_binary)
            .arg("--version")
            .stdin(Stdio::null())
            .output()
            .await;
        let version = match out {
            Ok(o) if o.status.success() => String::from_utf8_lossy(&o.stdout)
                .lines()
                .next()
                .unwrap_or_default()
                .to_owned(),
            Ok(o) => {
                return Err(ProviderError::Unavailable(format!(
                    "{} --version failed: {}",
                    self.config.qemu_binary.display(),
                    String::from_utf8_lossy(&o.stderr).trim()
                )));
            }
            Err(e) => {
                return Err(ProviderError::InvalidConfig(format!(
                    "cannot run {} ({e}): install QEMU (`apt-get install qemu-system-x86`) \
                     or set {ENV_QEMU_BINARY}",
                    self.config.qemu_binary.display()
                )));
            }
        };
        Ok(version)
    }

    fn reserve_slot(&self) -> Result<(), ProviderError> {
        let max = self.config.max_workers;
        self.live
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                (n < max).then_some(n + 1)
            })
            .map(|_| ())
            .map_err(|n| {
                ProviderError::ResourceExhausted(format!(
                    "QEMU provider `{}` runs {n} of at most {max} VMs",
                    self.config.name
                ))
            })
    }

    /// The agent's settings as `KEY=VALUE` lines.
    fn agent_settings(&self, spec: &WorkerSpec) -> Result<String, ProviderError> {
        let mut env: BTreeMap<String, String> = self.config.extra_env.clone();
        env.extend(spec.agent_env());
        env.insert(
            "HODEI_SERVER".into(),
            guest_server_address(&spec.server_address, &self.config.host_from_guest),
        );
        let mut text = String::new();
        for (k, v) in &env {
            let key_ok = !k.is_empty()
                && !k.starts_with(|c: char| c.is_ascii_digit())
                && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            if !key_ok || v.contains(['\n', '\r', '\0']) {
                return Err(ProviderError::InvalidConfig(format!(
                    "environment variable {k:?} cannot be passed to a VM: names are \
                     [A-Za-z_][A-Za-z0-9_]*, values are one line"
                )));
            }
            text.push_str(k);
            text.push('=');
            text.push_str(v);
            text.push('\n');
        }
        Ok(text)
    }

    /// A copy-on-write overlay of the base root filesystem, or a plain copy.
    async fn make_disk(&self, dir: &Path) -> Result<(PathBuf, &'static str), ProviderError> {
        let base = std::fs::canonicalize(&self.config.rootfs)
            .map_err(|e| internal("cannot resolve the root filesystem path", e))?;
        let overlay = dir.join("disk.qcow2");
        let out = Command::new(&self.config.qemu_img)
            .args(["create", "-q", "-f", "qcow2", "-F", "raw", "-b"])
            .arg(&base)
            .arg(&overlay)
            .stdin(Stdio::null())
            .output()
            .await;
        match out {
            Ok(o) if o.status.success() => return Ok((overlay, "qcow2")),
            Ok(o) => tracing::warn!(stderr = %String::from_utf8_lossy(&o.stderr).trim(),
                "qemu-img create failed; copying the root filesystem instead"),
            Err(e) => tracing::debug!(error = %e, "no qemu-img; copying the root filesystem"),
        }
        let copy = dir.join("disk.raw");
        tokio::fs::copy(&base, &copy)
            .await
            .map_err(|e| internal("cannot copy the root filesystem", e))?;
        Ok((copy, "raw"))
    }

    fn qemu_args(&self, spec: &WorkerSpec, dir: &Path, disk: &Path, format: &str) -> Vec<String> {
        let memory_mb = self.memory_mb(spec);
        let vcpus = self.vcpus(spec);
        let mut kernel_args = vec![
            "console=ttyS0".to_owned(),
            "panic=-1".to_owned(),
            "quiet".to_owned(),
        ];
        let (accel, cpu) = if self.kvm {
            ("kvm", "host")
        } else {
            // Under software emulation the PIT calibration of the TSC fails now and then
            // (and the boot hangs): give the kernel the TSC rate, which TCG takes from the host.
            if let Some(khz) = host_tsc_khz() {
                kernel_args.push(format!("tsc_early_khz={khz}"));
            }
            ("tcg", "max")
        };
        kernel_args.extend(self.config.extra_kernel_args.iter().cloned());
        let p = |f: &str| dir.join(f).display().to_string();
        let mut args: Vec<String> = [
            "-M",
            "microvm,x-option-roms=off,rtc=on,pit=on,pic=on",
            "-accel",
            accel,
            "-cpu",
            cpu,
            "-nodefaults",
            "-no-user-config",
            "-display",
            "none",
            "-no-reboot",
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
        args.extend([
            "-name".into(),
            format!("hodei-worker-{}", spec.worker_id),
            "-m".into(),
            memory_mb.to_string(),
            "-smp".into(),
            vcpus.to_string(),
            "-kernel".into(),
            self.config.kernel.display().to_string(),
            "-initrd".into(),
            self.config.initrd.display().to_string(),
            "-append".into(),
            kernel_args.join(" "),
            "-drive".into(),
            format!(
                "id=root,file={},format={format},if=none,cache=unsafe",
                disk.display()
            ),
            "-device".into(),
            "virtio-blk-device,drive=root".into(),
            "-netdev".into(),
            "user,id=net0".into(),
            "-device".into(),
            "virtio-net-device,netdev=net0".into(),
            "-fw_cfg".into(),
            format!("name={FW_CFG_NAME},file={}", p(CONFIG_FILE)),
            "-serial".into(),
            format!("file:{}", p(CONSOLE_FILE)),
            "-qmp".into(),
            format!("unix:{},server=on,wait=off", p(QMP_FILE)),
            "-pidfile".into(),
            p(PID_FILE),
        ]);
        args.extend(self.config.extra_qemu_args.iter().cloned());
        args
    }

    fn memory_mb(&self, spec: &WorkerSpec) -> u64 {
        spec.resources.memory_mb.max(self.config.min_memory_mb)
    }

    fn vcpus(&self, spec: &WorkerSpec) -> u32 {
        let host = self.capabilities.max_cpu_cores.max(1.0);
        spec.resources.cpu_cores.ceil().clamp(1.0, host) as u32
    }

    async fn boot(
        &self,
        spec: &WorkerSpec,
        spawned: &AtomicBool,
    ) -> Result<WorkerHandle, ProviderError> {
        let worker_id = spec.worker_id;
        let dir = self.config.work_dir.join(worker_id.to_string());
        let settings = self.agent_settings(spec)?;
        create_private_dir(&dir)?;
        std::fs::write(
            dir.join(OWNER_FILE),
            owner_tag(std::process::id()).unwrap_or_default(),
        )
        .map_err(|e| internal("cannot write the worker dir", e))?;
        write_private(&dir.join(CONFIG_FILE), &settings)?;
        let (disk, format) = self.make_disk(&dir).await?;
        let args = self.qemu_args(spec, &dir, &disk, format);
        let log = std::fs::File::create(dir.join(QEMU_LOG_FILE))
            .map_err(|e| internal("cannot create qemu.log", e))?;
        let log2 = log
            .try_clone()
            .map_err(|e| internal("cannot create qemu.log", e))?;
        let started = Instant::now();
        let mut child = Command::new(&self.config.qemu_binary)
            .args(&args)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2)
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| {
                ProviderError::InvalidConfig(format!(
                    "cannot start {} ({e}): install QEMU (`apt-get install qemu-system-x86`) \
                     or set {ENV_QEMU_BINARY}",
                    self.config.qemu_binary.display()
                ))
            })?;
        let pid = child
            .id()
            .ok_or_else(|| ProviderError::Internal("QEMU exited before its pid was read".into()))?;
        spawned.store(true, Ordering::SeqCst);
        let (exit_tx, exit_rx) = watch::channel(None);
        let destroy_requested = Arc::new(AtomicBool::new(false));
        let vm = Arc::new(Vm {
            pid,
            dir: dir.clone(),
            memory_mb: self.memory_mb(spec),
            exit: exit_rx,
            destroy_requested: Arc::clone(&destroy_requested),
            cpu_sample: Mutex::new((Instant::now(), 0)),
        });
        lock(&self.vms).insert(worker_id, Arc::clone(&vm));

        let events = self.events.clone();
        let live = Arc::clone(&self.live);
        let disk_path = disk.clone();
        tokio::spawn(async move {
            let status = child
                .wait()
                .await
                .unwrap_or_else(|_| ExitStatus::from_raw(0xff00));
            live.fetch_sub(1, Ordering::SeqCst);
            // The disk is the big file; the console log stays for get_worker_logs.
            let _ = tokio::fs::remove_file(&disk_path).await;
            let _ = exit_tx.send(Some(status));
            let event = if destroy_requested.load(Ordering::SeqCst) {
                WorkerEvent::Destroyed { worker_id }
            } else {
                tracing::info!(%worker_id, pid, %status, "worker VM exited on its own");
                WorkerEvent::Exited {
                    worker_id,
                    exit_code: status.code(),
                    reason: describe_exit(status),
                }
            };
            let _ = events.send(event);
        });

        // QMP answers once QEMU has parsed its options (the fw_cfg file is read by then).
        if let Err(e) = wait_for_qmp(&vm).await {
            let qemu_log = std::fs::read_to_string(dir.join(QEMU_LOG_FILE)).unwrap_or_default();
            let _ = self.stop_vm(&vm, Duration::ZERO).await;
            lock(&self.vms).remove(&worker_id);
            let _ = std::fs::remove_dir_all(&dir);
            return Err(ProviderError::Internal(format!(
                "QEMU did not start: {e}; its output: {}",
                qemu_log.trim()
            )));
        }
        let _ = std::fs::remove_file(dir.join(CONFIG_FILE));
        tracing::info!(%worker_id, pid, accel = if self.kvm { "kvm" } else { "tcg" },
            took_ms = started.elapsed().as_millis() as u64, "worker VM started");
        let _ = self.events.send(WorkerEvent::Created { worker_id });
        let _ = self.events.send(WorkerEvent::Started { worker_id });
        let mut handle = WorkerHandle::new(worker_id, self.id, pid.to_string());
        handle.metadata.insert("pid".into(), pid.to_string());
        handle
            .metadata
            .insert("dir".into(), dir.display().to_string());
        handle
            .metadata
            .insert("accel".into(), if self.kvm { "kvm" } else { "tcg" }.into());
        Ok(handle)
    }

    /// `system_powerdown`, `grace`, `quit`, then SIGKILL; waits for the exit.
    async fn stop_vm(&self, vm: &Vm, grace: Duration) -> Result<(), ProviderError> {
        let mut exit = vm.exit.clone();
        let exited = |e: &Option<ExitStatus>| e.is_some();
        if !grace.is_zero() {
            let _ = qmp_command(&vm.qmp(), "system_powerdown").await;
            if tokio::time::timeout(grace, exit.wait_for(exited))
                .await
                .is_ok()
            {
                return Ok(());
            }
        }
        let _ = qmp_command(&vm.qmp(), "quit").await;
        if tokio::time::timeout(QUIT_WAIT, exit.wait_for(exited))
            .await
            .is_ok()
        {
            return Ok(());
        }
        tracing::warn!(pid = vm.pid, "QEMU did not quit; sending SIGKILL");
        let _ = kill(to_pid(vm.pid), Signal::SIGKILL);
        match tokio::time::timeout(QUIT_WAIT, exit.wait_for(exited)).await {
            Ok(_) => Ok(()),
            Err(_) => Err(ProviderError::Timeout(format!(
                "QEMU process {} did not exit after SIGKILL",
                vm.pid
            ))),
        }
    }
}

async fn wait_for_qmp(vm: &Vm) -> Result<(), String> {
    let deadline = Instant::now() + QMP_READY;
    loop {
        if vm.exited() {
            return Err("QEMU exited at once".into());
        }
        match qmp_command(&vm.qmp(), "query-status").await {
            Ok(_) => return Ok(()),
            Err(e) if Instant::now() > deadline => {
                return Err(format!("no QMP answer within {QMP_READY:?}: {e}"));
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
}

/// One QMP command on a fresh connection; its `return` value.
async fn qmp_command(socket: &Path, command: &str) -> Result<serde_json::Value, String> {
    let exchange = async {
        let stream = UnixStream::connect(socket)
            .await
            .map_err(|e| e.to_string())?;
        let (read, mut write) = stream.into_split();
        let mut lines = BufReader::new(read).lines();
        let mut answer = async || -> Result<serde_json::Value, String> {
            loop {
                let line = lines
                    .next_line()
                    .await
                    .map_err(|e| e.to_string())?
                    .ok_or("QMP closed the connection")?;
                let v: serde_json::Value =
                    serde_json::from_str(&line).map_err(|e| format!("{e}: {line}"))?;
                if let Some(r) = v.get("return") {
                    return Ok(r.clone());
                }
                if let Some(e) = v.get("error") {
                    return Err(format!("QMP error: {e}"));
                }
                // Greeting or an asynchronous event: read on.
                if v.get("QMP").is_some() {
                    return Ok(serde_json::Value::Null);
                }
            }
        };
        answer().await?; // greeting
        write
            .write_all(b"{\"execute\":\"qmp_capabilities\"}\n")
            .await
            .map_err(|e| e.to_string())?;
        answer().await?;
        write
            .write_all(format!("{{\"execute\":\"{command}\"}}\n").as_bytes())
            .await
            .map_err(|e| e.to_string())?;
        answer().await
    };
    tokio::time::timeout(QMP_TIMEOUT, exchange)
        .await
        .map_err(|_| format!("QMP `{command}` timed out"))?
}

fn describe_exit(status: ExitStatus) -> String {
    match (status.code(), status.signal()) {
        (Some(0), _) => "the VM powered off (the agent exited)".to_owned(),
        (Some(code), _) => format!("QEMU exited with code {code}"),
        (None, Some(sig)) => {
            let name = Signal::try_from(sig).map_or_else(|_| sig.to_string(), |s| s.to_string());
            format!("QEMU killed by signal {name}")
        }
        (None, None) => "QEMU exited".to_owned(),
    }
}

/// The host's TSC rate in kHz (from `cpu MHz`), which TCG guests see too.
fn host_tsc_khz() -> Option<u64> {
    let info = std::fs::read_to_string("/proc/cpuinfo").ok()?;
    let mhz: f64 = info
        .lines()
        .find_map(|l| l.strip_prefix("cpu MHz"))?
        .split(':')
        .nth(1)?
        .trim()
        .parse()
        .ok()?;
    (mhz > 0.0).then_some((mhz * 1000.0) as u64)
}

fn write_private(path: &Path, text: &str) -> Result<(), ProviderError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| internal(&format!("cannot write {}", path.display()), e))?;
    f.write_all(text.as_bytes())
        .map_err(|e| internal(&format!("cannot write {}", path.display()), e))
}

/// Removes worker dirs of `work_dir` whose owner process is gone, killing their QEMU.
/// Returns how many were removed.
fn remove_orphans(work_dir: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(work_dir) else {
        return 0;
    };
    let mut removed = 0;
    for entry in entries.flatten() {
        let dir = entry.path();
        let Ok(owner) = std::fs::read_to_string(dir.join(OWNER_FILE)) else {
            continue;
        };
        let owner_alive = owner
            .split_whitespace()
            .next()
            .and_then(|p| p.parse::<u32>().ok())
            .and_then(owner_tag)
            .is_some_and(|tag| tag == owner.trim());
        if owner_alive {
            continue;
        }
        if let Some(pid) = std::fs::read_to_string(dir.join(PID_FILE))
            .ok()
            .and_then(|p| p.trim().parse::<u32>().ok())
        {
            // Only a QEMU of this very directory.
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let ours = String::from_utf8_lossy(&cmdline).contains(&*dir.to_string_lossy());
            if ours {
                tracing::warn!(pid, dir = %dir.display(), "killing an orphaned worker VM");
                let _ = kill(to_pid(pid), Signal::SIGKILL);
            }
        }
        if std::fs::remove_dir_all(&dir).is_ok() {
            removed += 1;
        }
    }
    removed
}

#[async_trait]
impl WorkerLifecycle for QemuMicroVmProvider {
    async fn create_worker(&self, spec: &WorkerSpec) -> Result<WorkerHandle, ProviderError> {
        self.preflight().await?;
        if self.find(spec.worker_id).is_some_and(|v| !v.exited()) {
            return Err(ProviderError::Internal(format!(
                "worker {} already runs on this provider",
                spec.worker_id
            )));
        }
        self.reserve_slot()?;
        let spawned = AtomicBool::new(false);
        let result = self.boot(spec, &spawned).await;
        if result.is_err() && !spawned.load(Ordering::SeqCst) {
            // A started QEMU gives its slot back when it exits; one that never
            // started gives it back here.
            self.live.fetch_sub(1, Ordering::SeqCst);
            let dir = self.config.work_dir.join(spec.worker_id.to_string());
            let _ = tokio::fs::remove_dir_all(dir).await;
        }
        result
    }

    async fn get_worker_status(&self, handle: &WorkerHandle) -> Result<WorkerState, ProviderError> {
        let vm = self
            .find(handle.worker_id)
            .ok_or(ProviderError::WorkerNotFound(handle.worker_id))?;
        if vm.exited() {
            return Ok(WorkerState::Terminated);
        }
        Ok(match qmp_command(&vm.qmp(), "query-status").await {
            Ok(v) => match v.get("status").and_then(|s| s.as_str()) {
                Some("running") => WorkerState::Ready,
                Some("shutdown") => WorkerState::Terminating,
                Some("prelaunch" | "inmigrate") => WorkerState::Creating,
                _ => WorkerState::Connecting,
            },
            // Busy QMP (another exchange) or quitting: the process is what counts.
            Err(_) if vm.exited() => WorkerState::Terminated,
            Err(_) => WorkerState::Ready,
        })
    }

    /// QMP `system_powerdown`, `destroy_grace`, `quit`, SIGKILL; then the
    /// worker's directory is removed. Unknown workers: a no-op.
    async fn destroy_worker(&self, handle: &WorkerHandle) -> Result<(), ProviderError> {
        let Some(vm) = self.find(handle.worker_id) else {
            return Ok(());
        };
        if !vm.exited() {
            vm.destroy_requested.store(true, Ordering::SeqCst);
            self.stop_vm(&vm, self.config.destroy_grace).await?;
        }
        lock(&self.vms).remove(&handle.worker_id);
        let _ = tokio::fs::remove_dir_all(&vm.dir).await;
        Ok(())
    }
}

#[async_trait]
impl WorkerHealth for QemuMicroVmProvider {
    async fn health_check(&self) -> Result<HealthStatus, ProviderError> {
        let started = Instant::now();
        let status = match self.preflight().await {
            Ok(version) => HealthStatus::healthy(format!(
                "{version}; kernel, initramfs and root filesystem present; accel {}",
                if self.kvm {
                    "kvm"
                } else {
                    "tcg (software emulation)"
                }
            )),
            Err(e) => HealthStatus::unhealthy(e.to_string()),
        };
        Ok(status.with_latency(started.elapsed()))
    }
}

#[async_trait]
impl WorkerLogs for QemuMicroVmProvider {
    /// The serial console: kernel messages, the guest init and the agent.
    async fn get_worker_logs(
        &self,
        handle: &WorkerHandle,
        tail: Option<usize>,
    ) -> Result<Vec<String>, ProviderError> {
        let vm = self
            .find(handle.worker_id)
            .ok_or(ProviderError::WorkerNotFound(handle.worker_id))?;
        Ok(tail_file_lines(&vm.dir.join(CONSOLE_FILE), tail).await)
    }
}

impl WorkerCost for QemuMicroVmProvider {
    fn estimated_startup_time(&self) -> Duration {
        lock(&self.startup).unwrap_or(DEFAULT_STARTUP)
    }
}

#[async_trait]
impl WorkerMetrics for QemuMicroVmProvider {
    /// CPU (since the previous sample) and resident memory of the QEMU process;
    /// the memory limit is the guest's RAM. Zero once it has exited.
    async fn get_worker_metrics(
        &self,
        handle: &WorkerHandle,
    ) -> Result<ResourceUsage, ProviderError> {
        let vm = self
            .find(handle.worker_id)
            .ok_or(ProviderError::WorkerNotFound(handle.worker_id))?;
        let mut usage = ResourceUsage::default();
        usage.memory_limit_bytes = vm.memory_mb * 1024 * 1024;
        if vm.exited() {
            return Ok(usage);
        }
        sample_process(vm.pid, &vm.cpu_sample, &mut usage).await;
        Ok(usage)
    }
}

impl WorkerEventSource for QemuMicroVmProvider {
    fn events(&self) -> BoxStream<'static, WorkerEvent> {
        BroadcastStream::new(self.events.subscribe())
            .filter_map(|e| async move { e.ok() })
            .boxed()
    }
}

impl WorkerProviderIdentity for QemuMicroVmProvider {
    fn id(&self) -> ProviderId {
        self.id
    }

    fn name(&self) -> &str {
        &self.config.name
    }

    fn provider_type(&self) -> ProviderType {
        ProviderType::Custom
    }

    fn capabilities(&self) -> ProviderCapabilities {
        self.capabilities.clone()
    }

    // Optional traits it offers. Eligibility is the default, from the capabilities.
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

/// The host's size, as what one VM can get; the guest is always x86_64
/// (`qemu-system-x86_64`), whatever the host.
fn host_capabilities(max_workers: u32) -> ProviderCapabilities {
    let mut caps = crate::host::host_capabilities(max_workers);
    caps.architectures = vec!["x86_64".to_owned()];
    caps
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_server_addresses_are_rewritten_for_the_guest() {
        let g = |a| guest_server_address(a, "10.0.2.2");
        assert_eq!(g("http://127.0.0.1:50051"), "http://10.0.2.2:50051");
        assert_eq!(g("http://localhost:7000/x"), "http://10.0.2.2:7000/x");
        assert_eq!(g("https://[::1]:443"), "https://10.0.2.2:443");
        assert_eq!(g("http://192.168.1.5:50051"), "http://192.168.1.5:50051");
        assert_eq!(g("http://hodei.example:80"), "http://hodei.example:80");
    }

    #[test]
    fn settings_are_key_value_lines_and_refuse_newlines() {
        let p = QemuMicroVmProvider::new(
            QemuProviderConfig::default()
                .with_work_dir(std::env::temp_dir().join("hodei-qemu-unit")),
        )
        .unwrap();
        let mut spec = WorkerSpec::new(WorkerId::new(), p.id(), "http://127.0.0.1:9", "otp-1");
        let text = p.agent_settings(&spec).unwrap();
        assert!(text.contains("HODEI_OTP=otp-1\n"), "{text}");
        assert!(text.contains("HODEI_SERVER=http://10.0.2.2:9\n"), "{text}");
        spec.env.insert("BAD".into(), "a\nb".into());
        assert!(matches!(
            p.agent_settings(&spec),
            Err(ProviderError::InvalidConfig(_))
        ));
    }

    #[test]
    fn the_otp_is_not_on_the_command_line() {
        let p = QemuMicroVmProvider::new(
            QemuProviderConfig::default()
                .with_accel(Accel::Tcg)
                .with_work_dir(std::env::temp_dir().join("hodei-qemu-unit")),
        )
        .unwrap();
        let spec = WorkerSpec::new(WorkerId::new(), p.id(), "http://127.0.0.1:9", "sekrit-otp");
        let args = p.qemu_args(&spec, Path::new("/w"), Path::new("/w/disk.qcow2"), "qcow2");
        assert!(!args.iter().any(|a| a.contains("sekrit-otp")), "{args:?}");
        assert!(args.contains(&"tcg".to_owned()));
        assert!(
            args.iter()
                .any(|a| a == "name=opt/hodei/config,file=/w/agent.env")
        );
        // 512 MiB (the job's default) and one vCPU.
        assert!(args.windows(2).any(|w| w[0] == "-m" && w[1] == "512"));
        assert!(args.windows(2).any(|w| w[0] == "-smp" && w[1] == "1"));
    }

    #[test]
    fn own_owner_tag_is_alive() {
        let tag = owner_tag(std::process::id()).unwrap();
        assert!(tag.starts_with(&std::process::id().to_string()));
    }
}
