//! The Firecracker provider: each worker is a Firecracker microVM booting the
//! image of `scripts/microvm/build-guest.sh` (its ELF `vmlinux` and
//! `rootfs.ext4`), configured over Firecracker's HTTP API on a Unix socket.
//!
//! - **Per worker:** one `firecracker --api-sock <dir>/fc.sock` process (or
//!   `jailer … -- --api-sock /fc.sock` with [`JailerConfig`], the directory
//!   then being the chroot) in a private directory holding a copy of the base
//!   root filesystem (the base is never written), the serial console
//!   (`console.log`, Firecracker's stdout), Firecracker's log and metrics files.
//! - **API sequence:** `PUT /logger`, `/metrics`, `/boot-source` (kernel and
//!   boot arguments — never a secret), `/drives/rootfs`, `/machine-config`
//!   (vCPUs from the job's cores: 1–32, 1 or even, see [`vcpu_count`]),
//!   `/network-interfaces/eth0` (the per-worker tap [`tap_name`]),
//!   `/mmds/config` (V2 on `eth0`), `/mmds` ([`mmds_payload`]: the OTP and the
//!   server address), then `/actions` `InstanceStart`. A rejected call aborts:
//!   the process is killed, the directory removed, and the error carries
//!   Firecracker's `fault_message`.
//! - **Network:** each worker gets a `/30` of
//!   [`tap_subnet`](FirecrackerProviderConfig::tap_subnet) ([`link_addresses`]):
//!   the provider creates the tap with the host end on it before Firecracker
//!   starts and removes it when Firecracker exits (see [`create_tap`]; needs
//!   `CAP_NET_ADMIN`, or `create_tap = false` and taps made by someone else).
//!   The guest gets its end and gateway through MMDS, and a server address on
//!   loopback is rewritten to the host end, so the server must listen there
//!   too (e.g. `0.0.0.0`).
//! - **Destroy:** `SendCtrlAltDel`, `destroy_grace`, SIGKILL; the directory
//!   and the tap go with it. Idempotent. Directories, taps and microVMs left
//!   by a crashed server (their owner process is gone) are removed when a
//!   provider starts.
//! - **Health:** the binary runs (`--version`), `/dev/kvm` is usable *and* the
//!   CPU has hardware virtualisation (`vmx`/`svm`), kernel and rootfs exist,
//!   and `ip` runs when the provider creates taps.
//! - **Metrics:** CPU and memory of the Firecracker process from `/proc`;
//!   disk and network bytes from Firecracker's metrics file, flushed
//!   (`FlushMetrics`) on each request ([`FlushedTotals`]).
//!
//! ```no_run
//! use hodei_core::provider::WorkerProvider;
//! use hodei_providers::firecracker::{FirecrackerProvider, FirecrackerProviderConfig};
//! # fn main() -> Result<(), hodei_core::ProviderError> {
//! let provider = FirecrackerProvider::new(FirecrackerProviderConfig::from_env()?)?;
//! let provider: std::sync::Arc<dyn WorkerProvider> = std::sync::Arc::new(provider);
//! assert_eq!(provider.name(), "firecracker");
//! # Ok(()) }
//! ```

mod api;
pub mod config;
mod metrics;
mod tap;

pub use api::{FirecrackerApi, FirecrackerApiError};
pub use config::{
    ENV_FC_BINARY, ENV_FC_CHROOT_BASE, ENV_FC_CREATE_TAP, ENV_FC_INITRD_PATH, ENV_FC_IP_BINARY,
    ENV_FC_JAILER_BINARY, ENV_FC_JAILER_GID, ENV_FC_JAILER_UID, ENV_FC_KERNEL_PATH,
    ENV_FC_MAX_WORKERS, ENV_FC_ROOTFS_PATH, ENV_FC_TAP_SUBNET, ENV_FC_USE_JAILER, ENV_FC_WORK_DIR,
    FC_GUEST_IMAGE_HINT, FirecrackerProviderConfig, JailerConfig, MAX_VCPUS, jailer_args,
    vcpu_count,
};
pub use metrics::FlushedTotals;
pub use tap::{
    LINK_PREFIX_LEN, TapAddresses, create_tap, guest_network_env, link_addresses, link_count,
    remove_tap,
};

use std::collections::HashMap;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::host::{
    create_private_dir, internal, lock, owner_tag, sample_process, tail_file_lines, to_pid,
};
pub use crate::host::{guest_server_address, hardware_kvm_usable_at};
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
use serde_json::{Value, json};
use tokio::process::Command;
use tokio::sync::{broadcast, watch};
use tokio_stream::wrappers::BroadcastStream;

/// Start-up time assumed until one has been measured.
pub const DEFAULT_STARTUP: Duration = Duration::from_millis(500);
/// Longest Linux network interface name.
pub const MAX_TAP_NAME: usize = 15;
/// After SIGKILL, how long to wait for the process to exit.
const KILL_WAIT: Duration = Duration::from_secs(5);

/// Files of a worker directory.
const OWNER_FILE: &str = "owner";
const PID_FILE: &str = "firecracker.pid";
const SOCKET_FILE: &str = "fc.sock";
const CONSOLE_FILE: &str = "console.log";
const LOG_FILE: &str = "firecracker.log";
const METRICS_FILE: &str = "metrics.json";
const STDERR_FILE: &str = "stderr.log";
const KERNEL_FILE: &str = "vmlinux";
const INITRD_FILE: &str = "initrd";
const ROOTFS_FILE: &str = "rootfs.ext4";

/// One microVM and what the provider knows about it.
struct Vm {
    pid: u32,
    /// The tap the provider created for it (removed when Firecracker exits).
    tap: Option<String>,
    /// Set once that removal succeeded, so destroy need not run `ip` again.
    tap_removed: Arc<AtomicBool>,
    /// The per-worker directory (the chroot under the jailer).
    dir: PathBuf,
    /// What is removed on destroy (the chroot's parent under the jailer).
    remove: PathBuf,
    memory_mb: u64,
    exit: watch::Receiver<Option<ExitStatus>>,
    destroy_requested: Arc<AtomicBool>,
    cpu_sample: Mutex<(Instant, u64)>,
    metrics: tokio::sync::Mutex<metrics::MetricsFile>,
}

impl Vm {
    fn exited(&self) -> bool {
        self.exit.borrow().is_some()
    }
}

/// Runs each worker as a Firecracker microVM. See the [module docs](self).
pub struct FirecrackerProvider {
    id: ProviderId,
    config: FirecrackerProviderConfig,
    vms: Arc<Mutex<HashMap<WorkerId, Arc<Vm>>>>,
    /// The link slot (see [`link_addresses`]) of each worker, from boot to destroy.
    links: Mutex<HashMap<WorkerId, u32>>,
    live: Arc<AtomicU32>,
    events: broadcast::Sender<WorkerEvent>,
    startup: Mutex<Option<Duration>>,
    capabilities: ProviderCapabilities,
}

impl std::fmt::Debug for FirecrackerProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FirecrackerProvider")
            .field("id", &self.id)
            .field("config", &self.config)
            .field("live_workers", &self.live.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

fn api_error(e: FirecrackerApiError) -> ProviderError {
    match e {
        e @ FirecrackerApiError::Rejected { .. } => ProviderError::InvalidConfig(e.to_string()),
        e => ProviderError::Internal(e.to_string()),
    }
}

/// The per-worker tap device: `prefix` + hex digits of the worker id, at most
/// [`MAX_TAP_NAME`] bytes.
#[must_use]
pub fn tap_name(prefix: &str, worker_id: WorkerId) -> String {
    let room = MAX_TAP_NAME.saturating_sub(prefix.len());
    let hex: String = worker_id
        .to_string()
        .chars()
        .filter(char::is_ascii_hexdigit)
        .take(room)
        .collect();
    format!("{prefix}{hex}")
}

/// A locally administered MAC address derived from the worker id.
#[must_use]
pub fn guest_mac(worker_id: WorkerId) -> String {
    let b = worker_id.as_uuid().as_bytes();
    format!("06:00:{:02x}:{:02x}:{:02x}:{:02x}", b[0], b[1], b[2], b[3])
}

/// What the guest reads from MMDS (`GET /hodei` with a V2 token): the OTP,
/// the server address, the worker id, its job concurrency and extra environment.
#[must_use]
pub fn mmds_payload(
    spec: &WorkerSpec,
    extra_env: &std::collections::BTreeMap<String, String>,
) -> Value {
    let mut env = extra_env.clone();
    env.extend(spec.env.clone());
    json!({
        "hodei": {
            "otp": spec.otp,
            "server_address": spec.server_address,
            "worker_id": spec.worker_id.to_string(),
            "max_concurrent_jobs": spec.max_concurrent_jobs.to_string(),
            "env": env,
        }
    })
}

impl FirecrackerProvider {
    /// A provider with a new id. Creates the work directory and removes what a
    /// crashed server left in it.
    ///
    /// # Errors
    /// [`ProviderError::InvalidConfig`] when the work directory cannot be
    /// created or the tap prefix is too long.
    pub fn new(config: FirecrackerProviderConfig) -> Result<Self, ProviderError> {
        Self::with_id(ProviderId::new(), config)
    }

    /// A provider with a given id (as stored by the control plane).
    ///
    /// # Errors
    /// As [`new`](Self::new).
    pub fn with_id(
        id: ProviderId,
        config: FirecrackerProviderConfig,
    ) -> Result<Self, ProviderError> {
        if config.tap_prefix.is_empty() || config.tap_prefix.len() > 7 {
            return Err(ProviderError::InvalidConfig(format!(
                "tap prefix {:?}: 1 to 7 characters (the tap name is at most {MAX_TAP_NAME})",
                config.tap_prefix
            )));
        }
        if config.tap_subnet_prefix_len > LINK_PREFIX_LEN {
            return Err(ProviderError::InvalidConfig(format!(
                "tap subnet {}/{}: the prefix length must be at most {LINK_PREFIX_LEN} \
                 (each worker takes a /{LINK_PREFIX_LEN})",
                config.tap_subnet, config.tap_subnet_prefix_len
            )));
        }
        let parent = workers_parent(&config);
        if config.jailer.is_none() {
            std::fs::create_dir_all(&parent).map_err(|e| {
                ProviderError::InvalidConfig(format!(
                    "cannot create the Firecracker work dir {} ({e}): set {ENV_FC_WORK_DIR} to a writable directory",
                    parent.display()
                ))
            })?;
        }
        let ip = config.create_tap.then_some(config.ip_binary.as_path());
        let removed = remove_orphans(&parent, config.jailer.is_some(), ip, &config.tap_prefix);
        if removed > 0 {
            tracing::warn!(removed, dir = %parent.display(),
                "removed worker microVMs left by a server that is gone");
        }
        let (events, _) = broadcast::channel(1024);
        let capabilities = host_capabilities(config.max_workers);
        Ok(Self {
            id,
            config,
            vms: Arc::new(Mutex::new(HashMap::new())),
            links: Mutex::new(HashMap::new()),
            live: Arc::new(AtomicU32::new(0)),
            events,
            startup: Mutex::new(None),
            capabilities,
        })
    }

    /// Its configuration.
    #[must_use]
    pub fn config(&self) -> &FirecrackerProviderConfig {
        &self.config
    }

    /// microVMs alive now.
    #[must_use]
    pub fn live_workers(&self) -> u32 {
        self.live.load(Ordering::SeqCst)
    }

    /// The Firecracker pid of a worker, if known.
    #[must_use]
    pub fn pid(&self, worker_id: WorkerId) -> Option<u32> {
        self.find(worker_id).map(|v| v.pid)
    }

    /// The directory of a worker: `<work_dir>/<worker id>`, or its chroot
    /// `<chroot base>/<firecracker file name>/<worker id>/root` under the jailer.
    #[must_use]
    pub fn worker_dir(&self, worker_id: WorkerId) -> PathBuf {
        let entry = workers_parent(&self.config).join(worker_id.to_string());
        if self.config.jailer.is_some() {
            entry.join("root")
        } else {
            entry
        }
    }

    /// Records a measured start-up time (exponential moving average, weight 0.3).
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

    fn memory_mb(&self, spec: &WorkerSpec) -> u64 {
        spec.resources.memory_mb.max(self.config.min_memory_mb)
    }

    /// A file of the worker directory as Firecracker sees it (the chroot is `/`
    /// under the jailer).
    fn api_path(&self, dir: &Path, file: &str) -> String {
        if self.config.jailer.is_some() {
            format!("/{file}")
        } else {
            dir.join(file).display().to_string()
        }
    }

    /// The API calls that configure and start a worker's microVM on `link`,
    /// in order: `(path, body)`, all `PUT`.
    ///
    /// # Errors
    /// [`ProviderError::InvalidConfig`] for a vCPU count Firecracker refuses.
    pub fn api_calls(
        &self,
        spec: &WorkerSpec,
        dir: &Path,
        link: &TapAddresses,
    ) -> Result<Vec<(String, Value)>, ProviderError> {
        let vcpus = vcpu_count(&spec.resources)?;
        let p = |f: &str| self.api_path(dir, f);
        Ok(vec![
            (
                "/logger".into(),
                json!({"log_path": p(LOG_FILE), "level": "Info", "show_level": true}),
            ),
            ("/metrics".into(), json!({"metrics_path": p(METRICS_FILE)})),
            ("/boot-source".into(), {
                let mut b = json!({
                    "kernel_image_path": p(KERNEL_FILE),
                    "boot_args": self.config.boot_args,
                });
                if self.config.initrd.is_some() {
                    b["initrd_path"] = json!(p(INITRD_FILE));
                }
                b
            }),
            (
                "/drives/rootfs".into(),
                json!({
                    "drive_id": "rootfs",
                    "path_on_host": p(ROOTFS_FILE),
                    "is_root_device": true,
                    "is_read_only": false,
                }),
            ),
            (
                "/machine-config".into(),
                json!({"vcpu_count": vcpus, "mem_size_mib": self.memory_mb(spec)}),
            ),
            (
                "/network-interfaces/eth0".into(),
                json!({
                    "iface_id": "eth0",
                    "host_dev_name": tap_name(&self.config.tap_prefix, spec.worker_id),
                    "guest_mac": guest_mac(spec.worker_id),
                }),
            ),
            (
                "/mmds/config".into(),
                json!({"version": "V2", "network_interfaces": ["eth0"]}),
            ),
            ("/mmds".into(), {
                let mut spec = spec.clone();
                spec.server_address =
                    guest_server_address(&spec.server_address, &link.host.to_string());
                let mut env = self.config.extra_env.clone();
                env.extend(guest_network_env(link));
                mmds_payload(&spec, &env)
            }),
            ("/actions".into(), json!({"action_type": "InstanceStart"})),
        ])
    }

    /// What is missing to boot a microVM, with what to do about it; the
    /// Firecracker version when nothing is.
    async fn preflight(&self) -> Result<String, ProviderError> {
        let initrd = self.config.initrd.iter().map(|p| ("initramfs", p));
        for (what, path) in [
            ("kernel", &self.config.kernel),
            ("root filesystem", &self.config.rootfs),
        ]
        .into_iter()
        .chain(initrd)
        {
            if !path.is_file() {
                return Err(ProviderError::ImageNotFound {
                    image: format!("{what} {}", path.display()),
                    hint: FC_GUEST_IMAGE_HINT.to_owned(),
                });
            }
        }
        let version = run_version(&self.config.binary, ENV_FC_BINARY).await?;
        if let Some(j) = &self.config.jailer {
            run_version(&j.binary, ENV_FC_JAILER_BINARY).await?;
        }
        if !hardware_kvm_usable_at(&self.config.kvm_device, &self.config.cpuinfo) {
            return Err(ProviderError::Unavailable(format!(
                "no usable hardware KVM ({} must open read-write — add the user to the `kvm` group — \
                 and the CPU must have vmx/svm in {}): Firecracker needs a host with hardware \
                 virtualisation; use the `qemu` provider (software emulation) on this host",
                self.config.kvm_device.display(),
                self.config.cpuinfo.display()
            )));
        }
        Ok(version)
    }

    /// The lowest free link of the tap subnet, held for `worker_id` until
    /// [`release_link`](Self::release_link).
    fn reserve_link(&self, worker_id: WorkerId) -> Result<TapAddresses, ProviderError> {
        let (subnet, len) = (self.config.tap_subnet, self.config.tap_subnet_prefix_len);
        let mut links = lock(&self.links);
        let used: std::collections::HashSet<u32> = links.values().copied().collect();
        let slot = (0..link_count(len))
            .find(|s| !used.contains(s))
            .ok_or_else(|| {
                ProviderError::ResourceExhausted(format!(
                    "every /{LINK_PREFIX_LEN} link of the tap subnet {subnet}/{len} is in use: \
                     widen {ENV_FC_TAP_SUBNET}"
                ))
            })?;
        links.insert(worker_id, slot);
        link_addresses(subnet, len, slot)
            .ok_or_else(|| ProviderError::Internal(format!("link slot {slot} out of range")))
    }

    fn release_link(&self, worker_id: WorkerId) {
        lock(&self.links).remove(&worker_id);
    }

    /// That `ip` runs, when the provider creates taps. Health only: on the
    /// create path a missing `ip` is the same typed error from [`create_tap`].
    async fn check_ip(&self) -> Result<(), ProviderError> {
        if !self.config.create_tap {
            return Ok(());
        }
        let ip = &self.config.ip_binary;
        let runs = Command::new(ip)
            .arg("-V")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .await
            .is_ok_and(|s| s.success());
        if runs {
            Ok(())
        } else {
            Err(ProviderError::InvalidConfig(format!(
                "cannot run {} -V: the provider creates each worker's tap device with \
                 iproute2; install it, set {ENV_FC_IP_BINARY}, or set {ENV_FC_CREATE_TAP}=false",
                ip.display()
            )))
        }
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
                    "Firecracker provider `{}` runs {n} of at most {max} microVMs",
                    self.config.name
                ))
            })
    }

    /// The command that starts Firecracker for a worker.
    fn command(&self, spec: &WorkerSpec, dir: &Path) -> Command {
        match &self.config.jailer {
            Some(j) => {
                let mut cmd = Command::new(&j.binary);
                cmd.args(jailer_args(
                    j,
                    &self.config.binary,
                    &spec.worker_id.to_string(),
                    &spec.resources,
                    self.memory_mb(spec),
                    &format!("/{SOCKET_FILE}"),
                ));
                cmd
            }
            None => {
                let mut cmd = Command::new(&self.config.binary);
                cmd.arg("--api-sock")
                    .arg(dir.join(SOCKET_FILE))
                    .arg("--id")
                    .arg(spec.worker_id.to_string());
                cmd
            }
        }
    }

    /// Prepares the worker directory: owner tag, kernel link, rootfs copy, empty log files.
    async fn prepare_dir(&self, dir: &Path) -> Result<(), ProviderError> {
        create_private_dir(dir)?;
        std::fs::write(
            dir.join(OWNER_FILE),
            owner_tag(std::process::id()).unwrap_or_default(),
        )
        .map_err(|e| internal("cannot write the worker dir", e))?;
        let boot_files = std::iter::once((&self.config.kernel, KERNEL_FILE))
            .chain(self.config.initrd.iter().map(|p| (p, INITRD_FILE)));
        for (from, name) in boot_files {
            let to = dir.join(name);
            if std::fs::hard_link(from, &to).is_err() {
                tokio::fs::copy(from, &to)
                    .await
                    .map_err(|e| internal(&format!("cannot copy {}", from.display()), e))?;
            }
        }
        tokio::fs::copy(&self.config.rootfs, dir.join(ROOTFS_FILE))
            .await
            .map_err(|e| internal("cannot copy the root filesystem", e))?;
        for f in [LOG_FILE, METRICS_FILE] {
            std::fs::File::create(dir.join(f))
                .map_err(|e| internal(&format!("cannot create {f}"), e))?;
        }
        if let Some(j) = &self.config.jailer {
            // The files Firecracker writes (the kernel and initramfs may be
            // hard links of the originals: only read, never chowned).
            for f in [ROOTFS_FILE, LOG_FILE, METRICS_FILE] {
                nix::unistd::chown(
                    &dir.join(f),
                    Some(nix::unistd::Uid::from_raw(j.uid)),
                    Some(nix::unistd::Gid::from_raw(j.gid)),
                )
                .map_err(|e| internal(&format!("cannot give {f} to the jailer's uid/gid"), e))?;
            }
        }
        Ok(())
    }

    async fn boot(
        &self,
        spec: &WorkerSpec,
        spawned: &AtomicBool,
    ) -> Result<WorkerHandle, ProviderError> {
        let worker_id = spec.worker_id;
        let dir = self.worker_dir(worker_id);
        let remove = if self.config.jailer.is_some() {
            dir.parent().map_or_else(|| dir.clone(), Path::to_path_buf)
        } else {
            dir.clone()
        };
        let link = self.reserve_link(worker_id)?;
        let calls = self.api_calls(spec, &dir, &link)?;
        self.prepare_dir(&dir).await?;
        let tap = tap_name(&self.config.tap_prefix, worker_id);
        let owner = self.config.jailer.as_ref().map(|j| (j.uid, j.gid));
        if self.config.create_tap {
            create_tap(&self.config.ip_binary, &tap, &link, owner).await?;
        }
        let tap = self.config.create_tap.then_some(tap);
        let console = std::fs::File::create(dir.join(CONSOLE_FILE))
            .map_err(|e| internal("cannot create console.log", e))?;
        let stderr = std::fs::File::create(dir.join(STDERR_FILE))
            .map_err(|e| internal("cannot create stderr.log", e))?;
        let started = Instant::now();
        let spawned_child = self
            .command(spec, &dir)
            .stdin(Stdio::null())
            .stdout(console)
            .stderr(stderr)
            .kill_on_drop(true)
            .spawn();
        let mut child = spawned_child.map_err(|e| {
            ProviderError::InvalidConfig(format!(
                "cannot start {} ({e}): install Firecracker or set {ENV_FC_BINARY}",
                self.config.binary.display()
            ))
        })?;
        let pid = child.id().ok_or_else(|| {
            ProviderError::Internal("Firecracker exited before its pid was read".into())
        })?;
        spawned.store(true, Ordering::SeqCst);
        let _ = std::fs::write(dir.join(PID_FILE), pid.to_string());
        let (exit_tx, exit_rx) = watch::channel(None);
        let tap_removed = Arc::new(AtomicBool::new(false));
        let destroy_requested = Arc::new(AtomicBool::new(false));
        let vm = Arc::new(Vm {
            pid,
            tap: tap.clone(),
            tap_removed: Arc::clone(&tap_removed),
            dir: dir.clone(),
            remove,
            memory_mb: self.memory_mb(spec),
            exit: exit_rx,
            destroy_requested: Arc::clone(&destroy_requested),
            cpu_sample: Mutex::new((Instant::now(), 0)),
            metrics: tokio::sync::Mutex::new(metrics::MetricsFile::default()),
        });
        lock(&self.vms).insert(worker_id, Arc::clone(&vm));

        let events = self.events.clone();
        let live = Arc::clone(&self.live);
        let rootfs = dir.join(ROOTFS_FILE);
        let ip = self.config.ip_binary.clone();
        tokio::spawn(async move {
            let status = child
                .wait()
                .await
                .unwrap_or_else(|_| ExitStatus::from_raw(0xff00));
            live.fetch_sub(1, Ordering::SeqCst);
            // The disk is the big file; the console stays for get_worker_logs.
            let _ = tokio::fs::remove_file(&rootfs).await;
            // Gone before anyone hears of the exit.
            if let Some(tap) = tap {
                match remove_tap(&ip, &tap).await {
                    Ok(_) => tap_removed.store(true, Ordering::SeqCst),
                    Err(e) => tracing::warn!(%worker_id, tap, error = %e,
                        "cannot remove the worker's tap device"),
                }
            }
            let _ = exit_tx.send(Some(status));
            let event = if destroy_requested.load(Ordering::SeqCst) {
                WorkerEvent::Destroyed { worker_id }
            } else {
                tracing::info!(%worker_id, pid, %status, "worker microVM exited on its own");
                WorkerEvent::Exited {
                    worker_id,
                    exit_code: status.code(),
                    reason: describe_exit(status),
                }
            };
            let _ = events.send(event);
        });

        let api = FirecrackerApi::new(dir.join(SOCKET_FILE), self.config.api_timeout);
        let configured = async {
            wait_for_socket(&vm, &api, self.config.api_timeout).await?;
            for (path, body) in &calls {
                api.put(path, body).await.map_err(api_error)?;
            }
            Ok::<(), ProviderError>(())
        }
        .await;
        if let Err(e) = configured {
            let stderr = std::fs::read_to_string(dir.join(STDERR_FILE)).unwrap_or_default();
            vm.destroy_requested.store(true, Ordering::SeqCst);
            let _ = stop_vm(&vm, None, Duration::ZERO).await;
            lock(&self.vms).remove(&worker_id);
            let _ = tokio::fs::remove_dir_all(&vm.remove).await;
            tracing::warn!(%worker_id, error = %e, "Firecracker microVM not started; cleaned up");
            let stderr = stderr.trim();
            return Err(if stderr.is_empty() {
                e
            } else {
                match e {
                    ProviderError::Internal(m) => {
                        ProviderError::Internal(format!("{m}; Firecracker's stderr: {stderr}"))
                    }
                    other => other,
                }
            });
        }
        tracing::info!(%worker_id, pid, took_ms = started.elapsed().as_millis() as u64,
            "worker microVM started");
        let _ = self.events.send(WorkerEvent::Created { worker_id });
        let _ = self.events.send(WorkerEvent::Started { worker_id });
        let mut handle = WorkerHandle::new(worker_id, self.id, pid.to_string());
        handle.metadata.insert("pid".into(), pid.to_string());
        handle
            .metadata
            .insert("dir".into(), dir.display().to_string());
        handle
            .metadata
            .insert("tap".into(), tap_name(&self.config.tap_prefix, worker_id));
        handle
            .metadata
            .insert("guest_ip".into(), link.guest.to_string());
        handle
            .metadata
            .insert("host_ip".into(), link.host.to_string());
        Ok(handle)
    }
}

/// The directory holding one entry per worker.
fn workers_parent(config: &FirecrackerProviderConfig) -> PathBuf {
    match &config.jailer {
        Some(j) => {
            let exec = config.binary.file_name().map_or_else(
                || "firecracker".into(),
                |n| n.to_string_lossy().into_owned(),
            );
            j.chroot_base.join(exec)
        }
        None => config.work_dir.clone(),
    }
}

/// `<binary> --version`'s first line.
async fn run_version(binary: &Path, env: &str) -> Result<String, ProviderError> {
    let out = Command::new(binary)
        .arg("--version")
        .stdin(Stdio::null())
        .output()
        .await;
    match out {
        Ok(o) if o.status.success() => Ok(String::from_utf8_lossy(&o.stdout)
            .lines()
            .next()
            .unwrap_or_default()
            .to_owned()),
        Ok(o) => Err(ProviderError::Unavailable(format!(
            "{} --version failed: {}",
            binary.display(),
            String::from_utf8_lossy(&o.stderr).trim()
        ))),
        Err(e) => Err(ProviderError::InvalidConfig(format!(
            "cannot run {} ({e}): install Firecracker (its release archive holds `firecracker` \
             and `jailer`) or set {env}",
            binary.display()
        ))),
    }
}

/// Waits until the API socket answers (`GET /`, any HTTP answer), the process
/// exits, or `timeout` passes.
async fn wait_for_socket(
    vm: &Vm,
    api: &FirecrackerApi,
    timeout: Duration,
) -> Result<(), ProviderError> {
    let deadline = Instant::now() + timeout;
    loop {
        if vm.exited() {
            return Err(ProviderError::Internal(
                "Firecracker exited before opening its API socket".into(),
            ));
        }
        match api.get("/").await {
            Ok(_) | Err(FirecrackerApiError::Rejected { .. }) => return Ok(()),
            Err(e) if Instant::now() > deadline => {
                return Err(ProviderError::Timeout(format!(
                    "Firecracker's API socket {} did not answer within {timeout:?}: {e}",
                    api.socket().display()
                )));
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
        }
    }
}

/// `SendCtrlAltDel` (when an API is given and `grace` is not zero), `grace`,
/// SIGKILL; waits for the exit.
async fn stop_vm(
    vm: &Vm,
    api: Option<&FirecrackerApi>,
    grace: Duration,
) -> Result<(), ProviderError> {
    let mut exit = vm.exit.clone();
    let exited = |e: &Option<ExitStatus>| e.is_some();
    if let Some(api) = api.filter(|_| !grace.is_zero()) {
        let _ = api
            .put("/actions", &json!({"action_type": "SendCtrlAltDel"}))
            .await;
        if tokio::time::timeout(grace, exit.wait_for(exited))
            .await
            .is_ok()
        {
            return Ok(());
        }
    }
    let _ = kill(to_pid(vm.pid), Signal::SIGKILL);
    match tokio::time::timeout(KILL_WAIT, exit.wait_for(exited)).await {
        Ok(_) => Ok(()),
        Err(_) => Err(ProviderError::Timeout(format!(
            "Firecracker process {} did not exit after SIGKILL",
            vm.pid
        ))),
    }
}

fn describe_exit(status: ExitStatus) -> String {
    match (status.code(), status.signal()) {
        (Some(0), _) => "the microVM stopped (the agent exited)".to_owned(),
        (Some(code), _) => format!("Firecracker exited with code {code}"),
        (None, Some(sig)) => {
            let name = Signal::try_from(sig).map_or_else(|_| sig.to_string(), |s| s.to_string());
            format!("Firecracker killed by signal {name}")
        }
        (None, None) => "Firecracker exited".to_owned(),
    }
}

/// Removes worker entries of `parent` whose owner process is gone, killing
/// their Firecracker and, when `ip` is given, removing their tap. Returns how
/// many were removed.
fn remove_orphans(parent: &Path, jailed: bool, ip: Option<&Path>, tap_prefix: &str) -> usize {
    let Ok(entries) = std::fs::read_dir(parent) else {
        return 0;
    };
    let mut removed = 0;
    for entry in entries.flatten() {
        let entry = entry.path();
        let dir = if jailed {
            entry.join("root")
        } else {
            entry.clone()
        };
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
            // Only a Firecracker started for this very worker (its id is on the command line).
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let id = entry
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            if !id.is_empty() && String::from_utf8_lossy(&cmdline).contains(&id) {
                tracing::warn!(pid, dir = %dir.display(), "killing an orphaned worker microVM");
                let _ = kill(to_pid(pid), Signal::SIGKILL);
            }
        }
        let worker = entry
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.parse::<WorkerId>().ok());
        if let (Some(ip), Some(worker)) = (ip, worker) {
            // Start-up only, before any worker of this provider exists.
            let tap = tap_name(tap_prefix, worker);
            let gone = std::process::Command::new(ip)
                .args(["link", "del", "dev", &tap])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            if gone {
                tracing::warn!(tap, "removed an orphaned worker tap device");
            }
        }
        if std::fs::remove_dir_all(&entry).is_ok() {
            removed += 1;
        }
    }
    removed
}

#[async_trait]
impl WorkerLifecycle for FirecrackerProvider {
    async fn create_worker(&self, spec: &WorkerSpec) -> Result<WorkerHandle, ProviderError> {
        // Refused before anything runs.
        vcpu_count(&spec.resources)?;
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
        if result.is_err() {
            self.release_link(spec.worker_id);
        }
        if result.is_err() && !spawned.load(Ordering::SeqCst) {
            // A started Firecracker gives its slot back, and removes its tap, when it exits.
            self.live.fetch_sub(1, Ordering::SeqCst);
            if self.config.create_tap {
                let tap = tap_name(&self.config.tap_prefix, spec.worker_id);
                let _ = remove_tap(&self.config.ip_binary, &tap).await;
            }
            let dir = self.worker_dir(spec.worker_id);
            let remove = if self.config.jailer.is_some() {
                dir.parent().map_or(dir.clone(), Path::to_path_buf)
            } else {
                dir
            };
            let _ = tokio::fs::remove_dir_all(remove).await;
        }
        result
    }

    async fn get_worker_status(&self, handle: &WorkerHandle) -> Result<WorkerState, ProviderError> {
        let vm = self
            .find(handle.worker_id)
            .ok_or(ProviderError::WorkerNotFound(handle.worker_id))?;
        Ok(if vm.exited() {
            WorkerState::Terminated
        } else if vm.destroy_requested.load(Ordering::SeqCst) {
            WorkerState::Terminating
        } else {
            WorkerState::Ready
        })
    }

    /// `SendCtrlAltDel`, `destroy_grace`, SIGKILL; then the worker's directory
    /// is removed. Unknown workers: a no-op.
    async fn destroy_worker(&self, handle: &WorkerHandle) -> Result<(), ProviderError> {
        let Some(vm) = self.find(handle.worker_id) else {
            return Ok(());
        };
        if !vm.exited() {
            vm.destroy_requested.store(true, Ordering::SeqCst);
            let api = FirecrackerApi::new(vm.dir.join(SOCKET_FILE), self.config.api_timeout);
            stop_vm(&vm, Some(&api), self.config.destroy_grace).await?;
        }
        // Firecracker's exit removed it; only a failure then is tried again.
        if let Some(tap) = vm
            .tap
            .as_ref()
            .filter(|_| !vm.tap_removed.load(Ordering::SeqCst))
        {
            remove_tap(&self.config.ip_binary, tap).await?;
        }
        lock(&self.vms).remove(&handle.worker_id);
        self.release_link(handle.worker_id);
        let _ = tokio::fs::remove_dir_all(&vm.remove).await;
        Ok(())
    }
}

#[async_trait]
impl WorkerHealth for FirecrackerProvider {
    async fn health_check(&self) -> Result<HealthStatus, ProviderError> {
        let started = Instant::now();
        let ready = match self.preflight().await {
            Ok(version) => self.check_ip().await.map(|()| version),
            Err(e) => Err(e),
        };
        let status = match ready {
            Ok(version) => HealthStatus::healthy(format!(
                "{version}; hardware KVM usable; kernel and root filesystem present"
            )),
            Err(e) => HealthStatus::unhealthy(e.to_string()),
        };
        Ok(status.with_latency(started.elapsed()))
    }
}

#[async_trait]
impl WorkerLogs for FirecrackerProvider {
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

impl WorkerCost for FirecrackerProvider {
    fn estimated_startup_time(&self) -> Duration {
        lock(&self.startup).unwrap_or(DEFAULT_STARTUP)
    }
}

#[async_trait]
impl WorkerMetrics for FirecrackerProvider {
    /// CPU (since the previous sample) and resident memory of the Firecracker
    /// process (zero once it has exited); the memory limit is the guest's RAM;
    /// disk and network bytes since boot from Firecracker's metrics file,
    /// flushed first while it runs.
    async fn get_worker_metrics(
        &self,
        handle: &WorkerHandle,
    ) -> Result<ResourceUsage, ProviderError> {
        let vm = self
            .find(handle.worker_id)
            .ok_or(ProviderError::WorkerNotFound(handle.worker_id))?;
        let mut usage = ResourceUsage::default();
        usage.memory_limit_bytes = vm.memory_mb * 1024 * 1024;
        if !vm.exited() {
            let api = FirecrackerApi::new(vm.dir.join(SOCKET_FILE), self.config.api_timeout);
            if let Err(e) = api
                .put("/actions", &json!({"action_type": "FlushMetrics"}))
                .await
            {
                tracing::debug!(worker_id = %handle.worker_id, error = %e, "FlushMetrics failed");
            }
            sample_process(vm.pid, &vm.cpu_sample, &mut usage).await;
        }
        let totals = vm
            .metrics
            .lock()
            .await
            .totals(&vm.dir.join(METRICS_FILE))
            .await;
        usage.disk_read_bytes = totals.block_read_bytes;
        usage.disk_write_bytes = totals.block_write_bytes;
        usage.net_rx_bytes = totals.net_rx_bytes;
        usage.net_tx_bytes = totals.net_tx_bytes;
        Ok(usage)
    }
}

impl WorkerEventSource for FirecrackerProvider {
    fn events(&self) -> BoxStream<'static, WorkerEvent> {
        BroadcastStream::new(self.events.subscribe())
            .filter_map(|e| async move { e.ok() })
            .boxed()
    }
}

impl WorkerProviderIdentity for FirecrackerProvider {
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

/// The host's size, as what one microVM can get (at most Firecracker's vCPU limit).
fn host_capabilities(max_workers: u32) -> ProviderCapabilities {
    let mut caps = crate::host::host_capabilities(max_workers);
    caps.max_cpu_cores = caps.max_cpu_cores.min(f64::from(MAX_VCPUS));
    caps
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tap_names_fit_linux_limits() {
        let id = WorkerId::new();
        let t = tap_name("hfc", id);
        assert_eq!(t.len(), MAX_TAP_NAME);
        assert!(t.starts_with("hfc"));
        assert_eq!(tap_name("hfc", id), t);
        assert_ne!(tap_name("hfc", WorkerId::new()), t);
    }

    #[test]
    fn guest_macs_are_locally_administered() {
        let mac = guest_mac(WorkerId::new());
        assert_eq!(mac.len(), 17);
        assert!(mac.starts_with("06:00:"));
    }
}
