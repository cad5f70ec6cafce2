//! The QEMU microvm provider, for real: the guest image is built by
//! `scripts/microvm/build-guest.sh`, VMs boot under software emulation (or KVM
//! where hardware KVM works), and the agent inside registers with a real
//! control plane over QEMU user networking.
//!
//! Without `qemu-system-x86_64` every test that needs it prints a loud SKIP and
//! passes, unless `CI=true`, where it fails.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use hodei_core::control::{ControlPlane, ControlPlaneConfig, PoolPolicy};
use hodei_core::provider::*;
use hodei_core::store::LogCursor;
use hodei_core::testing::require;
use hodei_core::*;
use hodei_providers::qemu::{Accel, QemuMicroVmProvider, QemuProviderConfig};
use tokio::sync::OnceCell;

/// A server address where nothing listens: the agent keeps retrying, the VM keeps running.
const NOWHERE: &str = "http://127.0.0.1:1";

static SETUP: OnceCell<Option<PathBuf>> = OnceCell::const_new();

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .canonicalize()
        .unwrap()
}

/// The workspace's agent binary (target/<profile>/hodei-worker), built when missing.
fn agent_binary() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let mut dir = exe.parent().unwrap();
    if dir.file_name().is_some_and(|n| n == "deps") {
        dir = dir.parent().unwrap();
    }
    let p = dir.join("hodei-worker");
    if !p.is_file() {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let out = Command::new(cargo)
            .args(["build", "-p", "hodei-examples", "--bin", "hodei-worker"])
            .current_dir(repo_root())
            .output()
            .expect("run cargo build");
        assert!(
            out.status.success(),
            "cargo build hodei-worker: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    assert!(p.is_file(), "no agent binary at {}", p.display());
    p
}

/// The guest image dir, built once per process (the script itself locks across processes);
/// `None` (after a loud SKIP) without QEMU.
async fn setup() -> Option<PathBuf> {
    SETUP
        .get_or_init(|| async {
            let qemu = Command::new("qemu-system-x86_64").arg("--version").output();
            if !qemu.is_ok_and(|o| o.status.success()) {
                require::missing_dependency(
                    "qemu-system-x86_64 not found (apt-get install qemu-system-x86): \
                     the QEMU provider tests did not run",
                );
                return None;
            }
            // VMs of an earlier run killed before its guards ran (e.g. a test timed out and
            // was SIGKILLed): a provider on each such work dir kills the QEMU whose owner
            // process is gone; work dirs of tests running now are left alone.
            for entry in std::fs::read_dir(std::env::temp_dir()).unwrap().flatten() {
                if entry
                    .file_name()
                    .to_string_lossy()
                    .starts_with("hodei-qemu-test")
                {
                    let _ = QemuMicroVmProvider::new(
                        QemuProviderConfig::default().with_work_dir(entry.path()),
                    );
                }
            }
            let out_dir = repo_root().join("target/microvm-test");
            let agent = agent_binary();
            let script = repo_root().join("scripts/microvm/build-guest.sh");
            let dir = out_dir.clone();
            let started = Instant::now();
            let out = tokio::task::spawn_blocking(move || {
                Command::new(script)
                    .env("HODEI_MICROVM_OUT", &dir)
                    .env("HODEI_GUEST_AGENT", agent)
                    .output()
            })
            .await
            .unwrap()
            .expect("run build-guest.sh");
            assert!(
                out.status.success(),
                "build-guest.sh failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            eprintln!("guest image ready in {:?}", started.elapsed());
            Some(out_dir)
        })
        .await
        .clone()
}

macro_rules! require_qemu {
    () => {
        match setup().await {
            Some(dir) => dir,
            None => return,
        }
    };
}

/// A work dir of its own per test; every QEMU started in it is killed when
/// dropped (also on panic).
struct VmGuard {
    dir: tempfile::TempDir,
}

impl VmGuard {
    fn new() -> Self {
        Self {
            dir: tempfile::Builder::new()
                .prefix("hodei-qemu-test")
                .tempdir()
                .unwrap(),
        }
    }

    fn config(&self, guest: &Path) -> QemuProviderConfig {
        QemuProviderConfig::default()
            .with_guest_dir(guest)
            .with_work_dir(self.dir.path())
    }

    /// QEMU processes whose command line names this guard's dir.
    fn qemus(&self) -> Vec<i32> {
        let needle = self.dir.path().to_string_lossy().into_owned();
        std::fs::read_dir("/proc")
            .unwrap()
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
            .filter(|pid| {
                let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
                let cmd = String::from_utf8_lossy(&cmd);
                cmd.starts_with("qemu-system") && cmd.contains(&needle)
            })
            .collect()
    }

    fn worker_dirs(&self) -> Vec<PathBuf> {
        std::fs::read_dir(self.dir.path())
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .collect()
    }
}

impl Drop for VmGuard {
    fn drop(&mut self) {
        for pid in self.qemus() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}

async fn wait_until<F: Fn() -> bool>(within: Duration, what: &str, f: F) {
    let deadline = Instant::now() + within;
    while !f() {
        assert!(Instant::now() < deadline, "{what}: not within {within:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn run(cmd: &str, args: &[&str]) -> (bool, String) {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{cmd}: {e}"));
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[tokio::test]
async fn the_guest_image_has_a_kernel_an_initramfs_and_a_sound_rootfs() {
    let guest = require_qemu!();
    let vmlinuz = std::fs::read(guest.join("vmlinuz")).unwrap();
    assert_eq!(&vmlinuz[0x202..0x206], b"HdrS", "vmlinuz is a bzImage");
    let vmlinux = std::fs::read(guest.join("vmlinux")).unwrap();
    assert_eq!(
        &vmlinux[..4],
        b"\x7fELF",
        "vmlinux (for Firecracker) is an ELF"
    );
    let initrd = std::fs::read(guest.join("initramfs.cpio.gz")).unwrap();
    assert_eq!(&initrd[..2], b"\x1f\x8b", "initramfs is gzip'd");
    assert!(
        initrd.len() > 500_000,
        "busybox and modules: {}",
        initrd.len()
    );

    let rootfs = guest.join("rootfs.ext4");
    let rootfs = rootfs.to_str().unwrap();
    let (ok, out) = run("fsck.ext4", &["-n", "-f", rootfs]);
    assert!(ok, "fsck.ext4 -n: {out}");
    let (_, sbin) = run("debugfs", &["-R", "ls -l /sbin", rootfs]);
    assert!(sbin.contains(" init"), "{sbin}");
    assert!(sbin.contains("hodei-worker"), "{sbin}");
    // Both executable (mode 100755).
    for name in ["init", "hodei-worker"] {
        let line = sbin.lines().find(|l| l.trim_end().ends_with(name)).unwrap();
        assert!(line.contains("100755"), "{line}");
    }
    let (_, init) = run("debugfs", &["-R", "cat /sbin/init", rootfs]);
    assert!(init.contains("opt/hodei/config"), "{init}");
    assert!(init.contains("poweroff"), "{init}");
}

#[tokio::test]
async fn passes_the_provider_conformance_kit() {
    use hodei_core::testing::provider::{ConformanceOptions, provider_conformance};
    let guest = require_qemu!();
    let guard = VmGuard::new();
    let provider = Arc::new(QemuMicroVmProvider::new(guard.config(&guest)).unwrap());
    let id = provider.id();
    let p: Arc<dyn WorkerProvider> = provider.clone();
    let report = provider_conformance(
        p,
        move || WorkerSpec::new(WorkerId::new(), id, NOWHERE, "conformance-otp"),
        ConformanceOptions::default()
            .with_ready_timeout(Duration::from_secs(60))
            .with_terminate_timeout(Duration::from_secs(30))
            .with_event_timeout(Duration::from_secs(20)),
    )
    .await
    .unwrap_or_else(|f| panic!("QEMU provider fails the kit: {f}"));
    assert_eq!(report.running_state, WorkerState::Ready);
    assert!(
        report.health.message.contains("present"),
        "{:?}",
        report.health
    );
    let usage = report.metrics.expect("metrics while running");
    assert!(usage.memory_bytes > 0, "{usage:?}");
    assert_eq!(usage.memory_limit_bytes, 512 * 1024 * 1024);
    assert!(
        report
            .events
            .iter()
            .any(|e| matches!(e, WorkerEvent::Destroyed { .. })),
        "{:?}",
        report.events
    );
    assert!(
        !report
            .events
            .iter()
            .any(|e| matches!(e, WorkerEvent::Exited { .. })),
        "{:?}",
        report.events
    );
    assert!(guard.qemus().is_empty(), "QEMU left running");
    assert!(guard.worker_dirs().is_empty(), "{:?}", guard.worker_dirs());
    assert_eq!(provider.live_workers(), 0);
}

#[tokio::test]
async fn an_agent_that_exits_powers_the_vm_off_and_is_an_exited_event() {
    let guest = require_qemu!();
    let guard = VmGuard::new();
    let p = QemuMicroVmProvider::new(guard.config(&guest)).unwrap();
    let mut events = p.events();
    // Not an http(s) URL: the agent refuses its configuration and exits at once.
    let spec = WorkerSpec::new(WorkerId::new(), p.id(), "not-a-url", "otp");
    let started = Instant::now();
    let h = p.create_worker(&spec).await.unwrap();
    // The settings file went away once QEMU had read it; the OTP is not on its command line.
    let dir = p.worker_dir(spec.worker_id).unwrap();
    assert!(!dir.join("agent.env").exists());
    let pid = p.pid(spec.worker_id).unwrap();
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    assert!(!String::from_utf8_lossy(&cmdline).contains("HODEI_OTP"));

    let e = tokio::time::timeout(Duration::from_secs(90), async {
        loop {
            let e = events.next().await.unwrap();
            if matches!(e, WorkerEvent::Exited { .. }) && e.worker_id() == spec.worker_id {
                return e;
            }
        }
    })
    .await
    .expect("no Exited event within 90 s");
    eprintln!(
        "agent exited and VM powered off {:?} after create",
        started.elapsed()
    );
    assert!(
        matches!(&e, WorkerEvent::Exited { exit_code: Some(0), reason, .. } if reason.contains("powered off")),
        "{e:?}"
    );
    assert_eq!(
        p.get_worker_status(&h).await.unwrap(),
        WorkerState::Terminated
    );
    assert_eq!(p.live_workers(), 0);
    let logs = p.worker_logs(&h, None).await.unwrap();
    let text = logs.join("\n");
    assert!(
        text.contains("hodei-guest: starting hodei-worker"),
        "{text}"
    );
    assert!(
        text.contains("HODEI_SERVER"),
        "the agent says what is wrong: {text}"
    );
    assert!(text.contains("hodei-worker exited with code 1"), "{text}");
    assert_eq!(p.worker_logs(&h, Some(2)).await.unwrap().len(), 2);
    p.destroy_worker(&h).await.unwrap();
    p.destroy_worker(&h).await.unwrap();
    assert!(guard.worker_dirs().is_empty());
    assert!(guard.qemus().is_empty());
}

/// Destroy's QMP `system_powerdown` is an ACPI power button press the guest
/// honours: its init stops the agent (SIGTERM, a clean exit) and powers off,
/// long before the grace would end in `quit`.
#[tokio::test]
async fn destroy_powers_the_guest_off_through_its_power_button() {
    let guest = require_qemu!();
    let guard = VmGuard::new();
    let grace = Duration::from_secs(60);
    let p = QemuMicroVmProvider::new(guard.config(&guest).with_destroy_grace(grace)).unwrap();
    let mut events = p.events();
    let spec = WorkerSpec::new(WorkerId::new(), p.id(), NOWHERE, "otp");
    let h = p.create_worker(&spec).await.unwrap();
    let console_file = p.worker_dir(spec.worker_id).unwrap().join("console.log");
    let console = Arc::new(std::sync::Mutex::new(String::new()));
    let watcher = {
        let console = Arc::clone(&console);
        tokio::spawn(async move {
            // Until the directory goes with the VM.
            while let Ok(text) = tokio::fs::read_to_string(&console_file).await {
                *console.lock().unwrap() = text;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };
    // The button is watched and the agent runs, its signal handlers installed
    // (it says so by retrying its unreachable server).
    wait_until(Duration::from_secs(90), "the agent retrying", || {
        let text = console.lock().unwrap();
        text.contains("power button watched") && text.contains("cannot reach the server")
    })
    .await;
    let started = Instant::now();
    p.destroy_worker(&h).await.unwrap();
    let took = started.elapsed();
    watcher.await.unwrap();
    let text = console.lock().unwrap().clone();
    eprintln!("destroy through the power button took {took:?}");
    assert!(
        took < grace / 2,
        "the guest did not power off: {took:?}\n{text}"
    );
    assert!(
        text.contains("power button: stopping hodei-worker"),
        "{text}"
    );
    assert!(
        text.contains("hodei-worker exited with code 0; powering off"),
        "{text}"
    );
    let destroyed = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            if let WorkerEvent::Destroyed { worker_id } = events.next().await.unwrap() {
                return worker_id;
            }
        }
    })
    .await
    .unwrap();
    assert_eq!(destroyed, spec.worker_id);
    assert!(guard.qemus().is_empty());
    assert!(guard.worker_dirs().is_empty());
}

/// Ctrl-Alt-Del, the key press Firecracker's `SendCtrlAltDel` makes on its
/// emulated i8042, here made by QMP `send-key` on an i8042 added to the VM:
/// the guest kernel signals init (SIGINT), which stops the agent cleanly and
/// powers off — the guest's half of Firecracker's destroy, for real.
#[tokio::test]
async fn ctrl_alt_del_stops_the_agent_and_powers_the_guest_off() {
    let guest = require_qemu!();
    let guard = VmGuard::new();
    let p = QemuMicroVmProvider::new(guard.config(&guest).with_qemu_args(["-device", "i8042"]))
        .unwrap();
    let mut events = p.events();
    let spec = WorkerSpec::new(WorkerId::new(), p.id(), NOWHERE, "otp");
    let h = p.create_worker(&spec).await.unwrap();
    let dir = p.worker_dir(spec.worker_id).unwrap();
    wait_until(Duration::from_secs(90), "the agent retrying", || {
        std::fs::read_to_string(dir.join("console.log"))
            .is_ok_and(|t| t.contains("cannot reach the server"))
    })
    .await;
    let keys: Vec<_> = ["ctrl", "alt", "delete"]
        .iter()
        .map(|k| serde_json::json!({"type": "qcode", "data": k}))
        .collect();
    qmp(
        &dir.join("qmp.sock"),
        "send-key",
        serde_json::json!({ "keys": keys }),
    )
    .await;
    let e = tokio::time::timeout(Duration::from_secs(60), async {
        loop {
            let e = events.next().await.unwrap();
            if matches!(e, WorkerEvent::Exited { .. }) {
                return e;
            }
        }
    })
    .await
    .expect("the guest did not power off within 60 s of Ctrl-Alt-Del");
    assert!(
        matches!(&e, WorkerEvent::Exited { exit_code: Some(0), reason, .. } if reason.contains("powered off")),
        "{e:?}"
    );
    let text = p.worker_logs(&h, None).await.unwrap().join("\n");
    assert!(
        text.contains("ctrl-alt-del: stopping hodei-worker"),
        "{text}"
    );
    assert!(
        text.contains("hodei-worker exited with code 0; powering off"),
        "{text}"
    );
    p.destroy_worker(&h).await.unwrap();
    assert!(guard.qemus().is_empty());
}

/// One QMP command on `socket` (after the capabilities handshake); panics on an error answer.
async fn qmp(socket: &Path, command: &str, arguments: serde_json::Value) {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    let stream = tokio::net::UnixStream::connect(socket).await.unwrap();
    let (read, mut write) = stream.into_split();
    let mut lines = BufReader::new(read).lines();
    lines.next_line().await.unwrap(); // greeting
    for msg in [
        serde_json::json!({"execute": "qmp_capabilities"}),
        serde_json::json!({"execute": command, "arguments": arguments}),
    ] {
        write
            .write_all(format!("{msg}\n").as_bytes())
            .await
            .unwrap();
        loop {
            let line = lines.next_line().await.unwrap().unwrap();
            let v: serde_json::Value = serde_json::from_str(&line).unwrap();
            assert!(v.get("error").is_none(), "QMP {command}: {v}");
            if v.get("return").is_some() {
                break;
            }
        }
    }
}

#[tokio::test]
async fn qemu_killed_from_outside_is_noticed_at_once() {
    let guest = require_qemu!();
    let guard = VmGuard::new();
    let p = QemuMicroVmProvider::new(guard.config(&guest)).unwrap();
    let mut events = p.events();
    let spec = WorkerSpec::new(WorkerId::new(), p.id(), NOWHERE, "otp");
    let h = p.create_worker(&spec).await.unwrap();
    let pid = p.pid(spec.worker_id).unwrap();
    let killed = Instant::now();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let e = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            let e = events.next().await.unwrap();
            if matches!(e, WorkerEvent::Exited { .. }) {
                return e;
            }
        }
    })
    .await
    .expect("no Exited event within 5 s");
    assert!(
        killed.elapsed() < Duration::from_secs(3),
        "{:?}",
        killed.elapsed()
    );
    assert!(
        matches!(&e, WorkerEvent::Exited { reason, .. } if reason.contains("SIGKILL")),
        "{e:?}"
    );
    assert_eq!(
        p.get_worker_status(&h).await.unwrap(),
        WorkerState::Terminated
    );
    p.destroy_worker(&h).await.unwrap();
    assert!(guard.worker_dirs().is_empty());
}

#[tokio::test]
async fn leftovers_of_a_crashed_server_are_removed_at_start() {
    let guard = VmGuard::new();
    // A worker dir whose owner is gone, with a process running "in" it.
    let dir = guard.dir.path().join(WorkerId::new().to_string());
    std::fs::create_dir_all(&dir).unwrap();
    // Killed on drop, so a failing assertion cannot leave it running.
    let mut child = tokio::process::Command::new("sh")
        .args(["-c", "while :; do sleep 1; done", dir.to_str().unwrap()])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let pid = child.id().unwrap();
    // Until `sh` has exec'd, /proc/<pid>/cmdline is still this test's.
    let needle = dir.to_string_lossy().into_owned();
    wait_until(Duration::from_secs(10), "sh started", || {
        String::from_utf8_lossy(&std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default())
            .contains(&needle)
    })
    .await;
    std::fs::write(dir.join("owner"), "999999999 1").unwrap();
    std::fs::write(dir.join("qemu.pid"), pid.to_string()).unwrap();
    // A dir of a live owner (this process) is left alone.
    let mine = guard.dir.path().join(WorkerId::new().to_string());
    std::fs::create_dir_all(&mine).unwrap();
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
    let start = stat[stat.rfind(')').unwrap() + 1..]
        .split_whitespace()
        .nth(19)
        .unwrap()
        .to_owned();
    std::fs::write(
        mine.join("owner"),
        format!("{} {start}", std::process::id()),
    )
    .unwrap();

    let _p =
        QemuMicroVmProvider::new(QemuProviderConfig::default().with_work_dir(guard.dir.path()))
            .unwrap();
    assert!(!dir.exists(), "the orphan's dir is removed");
    assert!(mine.exists(), "a live server's dir stays");
    let status = tokio::time::timeout(Duration::from_secs(5), child.wait())
        .await
        .expect("the orphan's process was not killed")
        .unwrap();
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&status),
        Some(9)
    );
}

#[tokio::test]
async fn a_missing_guest_image_is_a_typed_error_that_says_what_to_do() {
    let guard = VmGuard::new();
    let p = QemuMicroVmProvider::new(
        QemuProviderConfig::default()
            .with_guest_dir("/nonexistent/guest")
            .with_work_dir(guard.dir.path()),
    )
    .unwrap();
    let err = p
        .create_worker(&WorkerSpec::new(WorkerId::new(), p.id(), NOWHERE, "otp"))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, ProviderError::ImageNotFound { hint, .. } if hint.contains("build-guest.sh")),
        "{err}"
    );
    assert_eq!(p.live_workers(), 0);
    assert!(guard.worker_dirs().is_empty());
    let health = p.health_check().await.unwrap();
    assert!(!health.healthy);
    assert!(
        health.message.contains("/nonexistent/guest/vmlinuz"),
        "{health:?}"
    );

    let p = QemuMicroVmProvider::new(
        QemuProviderConfig::default()
            .with_qemu_binary("/nonexistent/qemu")
            .with_guest_dir(repo_root().join("scripts"))
            .with_accel(Accel::Tcg)
            .with_work_dir(guard.dir.path()),
    )
    .unwrap();
    assert!(!p.uses_kvm());
    let health = p.health_check().await.unwrap();
    assert!(!health.healthy);
}

// ---- End to end with a real control plane ------------------------------------------

struct Plane {
    cp: ControlPlane,
    stop: tokio::sync::watch::Sender<bool>,
}

async fn start_plane(provider: Arc<QemuMicroVmProvider>) -> Plane {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,hyper=warn,h2=warn,tower=warn".into()),
        )
        .with_test_writer()
        .try_init();
    let (listener, addr): (_, SocketAddr) =
        hodei_core::server::bind("127.0.0.1:0".parse().unwrap())
            .await
            .unwrap();
    let mut config = ControlPlaneConfig::default();
    config.worker_server_address = format!("http://{addr}");
    config.heartbeat_interval = Duration::from_secs(1);
    let cp = ControlPlane::builder().config(config).build();
    cp.register_provider(
        provider,
        ProviderConfig::Custom {
            settings: Default::default(),
        },
        PoolPolicy::default(),
    )
    .await
    .unwrap();
    tokio::spawn(cp.clone().run());
    let (stop, mut stop_rx) = tokio::sync::watch::channel(false);
    tokio::spawn(hodei_core::server::serve_grpc(
        cp.clone(),
        listener,
        None,
        async move {
            let _ = stop_rx.changed().await;
        },
    ));
    Plane { cp, stop }
}

async fn wait_job(cp: &ControlPlane, id: JobId, within: Duration, want: JobState) -> Job {
    let deadline = Instant::now() + within;
    loop {
        let job = cp.get_job(id).await.unwrap();
        if job.state() == want {
            return job;
        }
        assert!(
            !job.state().is_terminal(),
            "job {id} ended {:?}, not {want:?}: {:?}",
            job.state(),
            job.execution_context()
        );
        assert!(
            Instant::now() < deadline,
            "job {id} is {:?}, not {want:?}, after {within:?}",
            job.state()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_runs_in_a_vm_its_logs_arrive_and_the_vm_is_gone_after() {
    let guest = require_qemu!();
    let guard = VmGuard::new();
    let provider = Arc::new(QemuMicroVmProvider::new(guard.config(&guest)).unwrap());
    let plane = start_plane(Arc::clone(&provider)).await;
    let cp = &plane.cp;

    let started = Instant::now();
    let spec = JobSpec::new("uname", CommandType::shell("uname", ["-r"])).with_provider("qemu");
    let job = cp.create_job(spec, None).await.unwrap();
    let running_or_done = tokio::time::timeout(Duration::from_secs(120), async {
        loop {
            let j = cp.get_job(job.id()).await.unwrap();
            if j.worker_id().is_some() {
                return j;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("no worker took the job within 120 s");
    let worker = running_or_done.worker_id().unwrap();
    let done = wait_job(cp, job.id(), Duration::from_secs(120), JobState::Succeeded).await;
    eprintln!(
        "uname -r in a {} VM: succeeded {:?} after create_job",
        if provider.uses_kvm() { "KVM" } else { "TCG" },
        started.elapsed()
    );
    assert_eq!(done.attempts(), 1);
    let entries = cp
        .logs()
        .read(job.id(), LogCursor::default(), 1000)
        .await
        .unwrap();
    let out: String = entries
        .iter()
        .map(|e| String::from_utf8_lossy(&e.entry.data).into_owned())
        .collect();
    let release = std::fs::read_to_string(guest.join("kernel-release")).unwrap();
    assert_eq!(
        out.trim(),
        release.trim(),
        "the job ran in the guest kernel"
    );
    assert_ne!(
        out.trim(),
        run("uname", &["-r"]).1.trim(),
        "not the host's kernel"
    );
    assert_eq!(guard.qemus().len(), 1, "one VM for the job");
    assert!(provider.worker_dir(worker).is_some());

    tokio::time::timeout(Duration::from_secs(60), cp.retire_all_workers("test done"))
        .await
        .unwrap();
    wait_until(Duration::from_secs(30), "every VM gone", || {
        guard.qemus().is_empty()
    })
    .await;
    wait_until(Duration::from_secs(10), "worker dirs removed", || {
        guard.worker_dirs().is_empty()
    })
    .await;
    assert_eq!(provider.live_workers(), 0);
    cp.shutdown();
    let _ = plane.stop.send(true);
}

/// The provider's `tsc_early_khz` (TCG only: without it the PIT calibration sometimes hangs the boot).
fn tsc_arg() -> String {
    let info = std::fs::read_to_string("/proc/cpuinfo").unwrap();
    let mhz: f64 = info
        .lines()
        .find_map(|l| l.strip_prefix("cpu MHz"))
        .and_then(|l| l.split(':').nth(1))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0);
    if mhz > 0.0 {
        format!("tsc_early_khz={}", (mhz * 1000.0) as u64)
    } else {
        String::new()
    }
}

/// Benchmark (ignored; run with `cargo nextest run -p hodei-providers --features qemu
/// --test qemu --run-ignored only --no-capture`): boot → agent registered, median of 5,
/// next to a bare QEMU boot of the same kernel to its first console line in the same run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark: boots 10 VMs"]
async fn bench_boot_to_registered() {
    let guest = require_qemu!();
    let guard = VmGuard::new();
    let provider = Arc::new(QemuMicroVmProvider::new(guard.config(&guest)).unwrap());
    let kvm = provider.uses_kvm();
    let plane = start_plane(Arc::clone(&provider)).await;
    let cp = &plane.cp;
    let median = |mut v: Vec<Duration>| {
        v.sort();
        v[v.len() / 2]
    };

    let mut bare = Vec::new();
    let mut bare_init = Vec::new();
    let mut registered = Vec::new();
    let mut succeeded = Vec::new();
    for round in 0..5 {
        // Bare QEMU: same machine, kernel and initramfs, no disk or network.
        let console = guard.dir.path().join(format!("bare-{round}.log"));
        let started = Instant::now();
        let mut child = tokio::process::Command::new("qemu-system-x86_64")
            .args(["-M", "microvm,x-option-roms=off,rtc=on,pit=on,pic=on"])
            .args(if kvm {
                ["-accel", "kvm", "-cpu", "host"]
            } else {
                ["-accel", "tcg", "-cpu", "max"]
            })
            .args(["-m", "512", "-smp", "1", "-nodefaults", "-no-user-config"])
            .args(["-display", "none", "-no-reboot", "-kernel"])
            .arg(guest.join("vmlinuz"))
            .arg("-initrd")
            .arg(guest.join("initramfs.cpio.gz"))
            .arg("-append")
            .arg(format!("console=ttyS0 panic=-1 {}", tsc_arg()))
            .arg("-serial")
            .arg(format!("file:{}", console.display()))
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let c = console.clone();
        wait_until(Duration::from_secs(60), "first console line", move || {
            std::fs::read(&c).is_ok_and(|b| b.contains(&b'\n'))
        })
        .await;
        bare.push(started.elapsed());
        let c = console.clone();
        wait_until(Duration::from_secs(60), "kernel runs /init", move || {
            std::fs::read_to_string(&c).is_ok_and(|t| t.contains("Run /init"))
        })
        .await;
        bare_init.push(started.elapsed());
        let _ = child.kill().await;

        // Through the provider: create_job → the agent in a new VM registered and got the job.
        let started = Instant::now();
        let spec = JobSpec::new("true", CommandType::shell("true", [""; 0])).with_provider("qemu");
        let job = cp.create_job(spec, None).await.unwrap();
        loop {
            if cp.get_job(job.id()).await.unwrap().worker_id().is_some() {
                break;
            }
            assert!(started.elapsed() < Duration::from_secs(120), "no worker");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        registered.push(started.elapsed());
        wait_job(cp, job.id(), Duration::from_secs(60), JobState::Succeeded).await;
        succeeded.push(started.elapsed());
        tokio::time::timeout(Duration::from_secs(60), cp.retire_all_workers("next round"))
            .await
            .unwrap();
        let g = &guard;
        wait_until(Duration::from_secs(30), "VM gone", || g.qemus().is_empty()).await;
    }
    eprintln!(
        "BENCH qemu microvm ({}): bare boot to first console line median {:?} {bare:?}, to the kernel \
         running the initramfs /init median {:?}; create_job -> agent registered and dispatched median {:?} {registered:?}; \
         -> job succeeded median {:?}",
        if kvm { "kvm" } else { "tcg" },
        median(bare.clone()),
        median(bare_init.clone()),
        median(registered.clone()),
        median(succeeded.clone()),
    );
    cp.shutdown();
    let _ = plane.stop.send(true);
}
