//! Firecracker provider tests, without a real boot (no hardware KVM and no
//! `firecracker` binary here): a test server on a Unix socket plays
//! Firecracker's API, records every request and answers as Firecracker does
//! (204, or 400 with `fault_message`); a stand-in `firecracker` script links
//! the provider's API socket path to that server and sleeps, so a real process
//! exists to be killed. Every recorded body is validated against Firecracker's
//! own specification (`tests/data/firecracker/firecracker.yaml`) by
//! `validate.py` (python3 + PyYAML + jsonschema): missing, the validation is
//! skipped loudly, and under `CI=true` it fails.
//!
//! The end-to-end boot test runs only where `firecracker`, a kernel and
//! hardware KVM are present; otherwise it says what is missing and passes.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hodei_core::provider::{WorkerHealth, WorkerLifecycle, WorkerProvider, WorkerProviderIdentity};
use hodei_core::testing::require;
use hodei_core::{JobResources, ProviderError, WorkerHandle, WorkerId, WorkerSpec};
use hodei_providers::firecracker::{
    FirecrackerProvider, FirecrackerProviderConfig, JailerConfig, jailer_args, mmds_payload,
    tap_name,
};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixListener;

fn data_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/firecracker")
}

/// One recorded request.
#[derive(Debug, Clone)]
struct Call {
    method: String,
    path: String,
    body: Option<Value>,
}

/// A stand-in for Firecracker's API server.
struct FakeApi {
    socket: PathBuf,
    calls: Arc<Mutex<Vec<Call>>>,
}

impl FakeApi {
    /// Listens on `socket`; a `PUT` to `fail_path` gets a 400 with `fault`.
    fn start(socket: PathBuf, fail_path: Option<(&str, &str)>) -> Self {
        let listener = UnixListener::bind(&socket).unwrap();
        let calls = Arc::new(Mutex::new(Vec::new()));
        let fail = fail_path.map(|(p, f)| (p.to_owned(), f.to_owned()));
        let recorded = Arc::clone(&calls);
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let recorded = Arc::clone(&recorded);
                let fail = fail.clone();
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 4096];
                    let end = loop {
                        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                            break i + 4;
                        }
                        let n = stream.read(&mut chunk).await.unwrap_or(0);
                        if n == 0 {
                            return;
                        }
                        buf.extend_from_slice(&chunk[..n]);
                    };
                    let head = String::from_utf8_lossy(&buf[..end]).into_owned();
                    let mut first = head.lines().next().unwrap_or("").split_whitespace();
                    let method = first.next().unwrap_or("").to_owned();
                    let path = first.next().unwrap_or("").to_owned();
                    let len: usize = head
                        .lines()
                        .find_map(|l| {
                            let (k, v) = l.split_once(':')?;
                            k.eq_ignore_ascii_case("content-length")
                                .then(|| v.trim().parse().ok())?
                        })
                        .unwrap_or(0);
                    let mut body = buf[end..].to_vec();
                    while body.len() < len {
                        let n = stream.read(&mut chunk).await.unwrap_or(0);
                        if n == 0 {
                            break;
                        }
                        body.extend_from_slice(&chunk[..n]);
                    }
                    let body = (len > 0).then(|| serde_json::from_slice(&body).unwrap());
                    let answer = if method == "GET" && path == "/" {
                        // The readiness probe; not a configuration call.
                        let doc = r#"{"id":"anonymous-instance","state":"Not started"}"#;
                        format!(
                            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{doc}",
                            doc.len()
                        )
                    } else {
                        let mut calls = recorded.lock().unwrap();
                        if body == Some(json!({"action_type": "FlushMetrics"})) {
                            flush_metrics(&calls);
                        }
                        calls.push(Call {
                            method: method.clone(),
                            path: path.clone(),
                            body,
                        });
                        drop(calls);
                        match &fail {
                            Some((p, fault)) if *p == path => {
                                let doc = json!({ "fault_message": fault }).to_string();
                                format!(
                                    "HTTP/1.1 400 Bad Request\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{doc}",
                                    doc.len()
                                )
                            }
                            _ => "HTTP/1.1 204 No Content\r\n\r\n".to_owned(),
                        }
                    };
                    let _ = stream.write_all(answer.as_bytes()).await;
                    let _ = stream.shutdown().await;
                });
            }
        });
        Self { socket, calls }
    }

    fn calls(&self) -> Vec<Call> {
        self.calls.lock().unwrap().clone()
    }

    fn paths(&self) -> Vec<String> {
        self.calls()
            .iter()
            .map(|c| format!("{} {}", c.method, c.path))
            .collect()
    }
}

/// What one flush of the stand-in writes: Firecracker's format, counters as deltas.
const METRICS_LINE: &str = r#"{"utc_timestamp_ms":1764000000000,"api_server":{"process_startup_time_us":1},"block":{"read_bytes":4096,"write_bytes":512,"flush_count":1},"net":{"rx_bytes_count":1500,"tx_bytes_count":700},"vcpu":{"exit_io_in":3}}"#;

/// Appends one metrics line to the file the provider configured with `PUT /metrics`.
fn flush_metrics(calls: &[Call]) {
    let path = calls
        .iter()
        .rev()
        .find(|c| c.path == "/metrics")
        .and_then(|c| c.body.as_ref()?["metrics_path"].as_str().map(PathBuf::from));
    if let Some(path) = path {
        use std::io::Write;
        if let Ok(mut f) = std::fs::OpenOptions::new().append(true).open(path) {
            let _ = writeln!(f, "{METRICS_LINE}");
        }
    }
}

/// A test bed: temp dir with a stand-in `firecracker`, guest files, KVM stand-ins and the fake API.
struct Bed {
    tmp: tempfile::TempDir,
    api: FakeApi,
}

impl Bed {
    fn new(fail: Option<(&str, &str)>) -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        let api = FakeApi::start(root.join("api.sock"), fail);
        let script = format!(
            "#!/bin/sh\n\
             # Stand-in for firecracker: links the API socket to the test server, then waits.\n\
             if [ \"$1\" = --version ]; then echo 'Firecracker v1.16.0 (stand-in)'; exit 0; fi\n\
             while [ $# -gt 0 ]; do [ \"$1\" = --api-sock ] && sock=$2; shift; done\n\
             ln -s '{}' \"$sock\" || exit 3\n\
             echo 'serial: guest booting'\n\
             echo 'serial: agent started'\n\
             # Stays this shell, so its command line (with --id) is what /proc shows.\n\
             while :; do sleep 1; done\n",
            api.socket.display()
        );
        write_exec(&root.join("firecracker"), &script);
        std::fs::write(root.join("vmlinux"), b"ELF stand-in kernel").unwrap();
        std::fs::write(root.join("rootfs.ext4"), b"base root filesystem").unwrap();
        std::fs::write(root.join("initramfs.cpio.gz"), b"initramfs").unwrap();
        std::fs::write(root.join("kvm"), b"").unwrap();
        std::fs::write(root.join("cpuinfo"), "processor : 0\nflags : fpu vmx sse\n").unwrap();
        Self { tmp, api }
    }

    fn root(&self) -> &Path {
        self.tmp.path()
    }

    fn config(&self) -> FirecrackerProviderConfig {
        let r = self.root();
        FirecrackerProviderConfig::default()
            .with_binary(r.join("firecracker"))
            .with_kernel(r.join("vmlinux"))
            .with_initrd(Some(r.join("initramfs.cpio.gz")))
            .with_rootfs(r.join("rootfs.ext4"))
            .with_work_dir(r.join("work"))
            .with_kvm_paths(r.join("kvm"), r.join("cpuinfo"))
            .with_destroy_grace(Duration::from_millis(100))
            // Taps are made for real only inside the network namespace of
            // `tap_devices_are_made_and_removed_in_a_network_namespace`.
            .with_create_tap(false)
    }

    fn provider(&self) -> FirecrackerProvider {
        FirecrackerProvider::new(self.config()).unwrap()
    }
}

fn write_exec(path: &Path, text: &str) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

fn spec(p: &FirecrackerProvider, cpu_cores: f64, memory_mb: u64) -> WorkerSpec {
    let mut s = WorkerSpec::new(
        WorkerId::new(),
        p.id(),
        "http://10.0.0.1:50051",
        "sekrit-otp",
    );
    s.resources = JobResources {
        cpu_cores,
        memory_mb,
        ..JobResources::default()
    };
    s
}

fn process_alive(pid: u32) -> bool {
    // A zombie is gone for our purposes.
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
        s.rsplit(')')
            .next()
            .is_some_and(|r| !r.trim_start().starts_with('Z'))
    })
}

/// Runs validate.py over the calls; `false` (after saying why) when it cannot run.
fn validate_against_spec(calls: &[Call]) -> bool {
    let probe = std::process::Command::new("python3")
        .args(["-c", "import yaml, jsonschema"])
        .output();
    if !probe.is_ok_and(|o| o.status.success()) {
        let msg = "python3 with PyYAML and jsonschema is missing: request bodies NOT validated \
                   against firecracker.yaml (apt-get install python3-yaml python3-jsonschema)";
        require::missing_dependency(msg);
        return false;
    }
    let file = tempfile::NamedTempFile::new().unwrap();
    let doc: Vec<Value> = calls
        .iter()
        .map(|c| json!({"method": c.method, "path": c.path, "body": c.body}))
        .collect();
    std::fs::write(file.path(), serde_json::to_vec(&doc).unwrap()).unwrap();
    let out = std::process::Command::new("python3")
        .arg(data_dir().join("validate.py"))
        .arg(data_dir().join("firecracker.yaml"))
        .arg(file.path())
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "schema validation failed:\n{text}");
    assert_eq!(
        text.matches("\nok ").count() + usize::from(text.starts_with("ok ")),
        calls.len(),
        "{text}"
    );
    true
}

#[tokio::test]
async fn provisions_with_the_exact_api_sequence_and_valid_bodies() {
    let bed = Bed::new(None);
    let p = bed.provider();
    assert_eq!(p.name(), "firecracker");
    let s = spec(&p, 2.0, 1024);
    let handle = p.create_worker(&s).await.expect("create");
    let dir = p.worker_dir(s.worker_id);
    let pid = p.pid(s.worker_id).unwrap();
    assert!(process_alive(pid));

    assert_eq!(
        bed.api.paths(),
        [
            "PUT /logger",
            "PUT /metrics",
            "PUT /boot-source",
            "PUT /drives/rootfs",
            "PUT /machine-config",
            "PUT /network-interfaces/eth0",
            "PUT /mmds/config",
            "PUT /mmds",
            "PUT /actions",
        ]
    );
    let calls = bed.api.calls();
    let body = |path: &str| {
        calls
            .iter()
            .find(|c| c.path == path)
            .unwrap()
            .body
            .clone()
            .unwrap()
    };
    let d = |f: &str| dir.join(f).display().to_string();
    assert_eq!(
        body("/machine-config"),
        json!({"vcpu_count": 2, "mem_size_mib": 1024})
    );
    assert_eq!(
        body("/boot-source")["kernel_image_path"],
        json!(d("vmlinux"))
    );
    assert_eq!(body("/boot-source")["initrd_path"], json!(d("initrd")));
    let boot_args = body("/boot-source")["boot_args"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        boot_args.contains("console=ttyS0") && !boot_args.contains("sekrit-otp"),
        "{boot_args}"
    );
    // The per-worker copy, never the base image.
    assert_eq!(
        body("/drives/rootfs")["path_on_host"],
        json!(d("rootfs.ext4"))
    );
    assert_eq!(body("/drives/rootfs")["is_root_device"], json!(true));
    assert_eq!(
        std::fs::read(dir.join("rootfs.ext4")).unwrap(),
        b"base root filesystem"
    );
    let tap = body("/network-interfaces/eth0")["host_dev_name"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        tap.len() <= 15 && tap == tap_name("hfc", s.worker_id),
        "{tap}"
    );
    assert_eq!(
        body("/mmds/config"),
        json!({"version": "V2", "network_interfaces": ["eth0"]})
    );
    assert_eq!(body("/mmds")["hodei"]["otp"], json!("sekrit-otp"));
    assert_eq!(
        body("/mmds")["hodei"]["server_address"],
        json!("http://10.0.0.1:50051")
    );
    // The guest's end of the worker's /30 link, and its gateway.
    assert_eq!(
        body("/mmds")["hodei"]["env"]["HODEI_GUEST_IP"],
        json!("172.30.0.2/30")
    );
    assert_eq!(
        body("/mmds")["hodei"]["env"]["HODEI_GUEST_GATEWAY"],
        json!("172.30.0.1")
    );
    assert_eq!(handle.metadata.get("guest_ip").unwrap(), "172.30.0.2");
    assert_eq!(body("/actions"), json!({"action_type": "InstanceStart"}));
    // No secret anywhere but MMDS.
    for c in &calls {
        if c.path != "/mmds" {
            assert!(
                !c.body.as_ref().unwrap().to_string().contains("sekrit-otp"),
                "{c:?}"
            );
        }
    }
    validate_against_spec(&calls);

    // Logs: the serial console (the stand-in's stdout), with tail.
    let logs = p.worker_logs(&handle, Some(1)).await.unwrap();
    assert_eq!(logs, ["serial: agent started"]);

    // Metrics: each request flushes, and the file's deltas add up.
    let first = p.worker_metrics(&handle).await.unwrap();
    let second = p.worker_metrics(&handle).await.unwrap();
    assert_eq!(first.net_rx_bytes, 1500);
    assert_eq!((second.net_rx_bytes, second.net_tx_bytes), (3000, 1400));
    assert_eq!(
        (second.disk_read_bytes, second.disk_write_bytes),
        (8192, 1024)
    );
    assert!(second.memory_bytes > 0, "{second:?}");

    // Destroy: SendCtrlAltDel, grace, kill; directory gone; idempotent.
    p.destroy_worker(&handle).await.expect("destroy");
    let last = bed.api.calls().last().cloned().unwrap();
    assert_eq!(last.path, "/actions");
    assert_eq!(last.body, Some(json!({"action_type": "SendCtrlAltDel"})));
    assert!(!dir.exists(), "{} left behind", dir.display());
    assert!(!process_alive(pid), "firecracker {pid} still runs");
    assert_eq!(p.live_workers(), 0);
    p.destroy_worker(&handle)
        .await
        .expect("second destroy is a no-op");
    validate_against_spec(&bed.api.calls());
    // The base image was never written.
    assert_eq!(
        std::fs::read(bed.root().join("rootfs.ext4")).unwrap(),
        b"base root filesystem"
    );
}

#[tokio::test]
async fn a_400_aborts_cleans_up_and_shows_the_fault_message() {
    let fault = "Invalid memory configuration: mem_size_mib too large for the host";
    let bed = Bed::new(Some(("/machine-config", fault)));
    let p = bed.provider();
    let s = spec(&p, 1.0, 512);
    let err = p.create_worker(&s).await.unwrap_err();
    assert!(matches!(err, ProviderError::InvalidConfig(_)), "{err:?}");
    let text = err.to_string();
    assert!(
        text.contains(fault) && text.contains("/machine-config"),
        "{text}"
    );
    // Stopped at the failing call: no instance start.
    assert_eq!(
        bed.api.paths().last().map(String::as_str),
        Some("PUT /machine-config")
    );
    assert!(!bed.api.paths().iter().any(|c| c.contains("/actions")));
    assert!(!p.worker_dir(s.worker_id).exists());
    assert!(p.pid(s.worker_id).is_none());
    // The killed process gives its slot back.
    for _ in 0..200 {
        if p.live_workers() == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(p.live_workers(), 0);
    let handle = WorkerHandle::new(s.worker_id, p.id(), "x");
    p.destroy_worker(&handle)
        .await
        .expect("destroying an aborted worker is a no-op");
}

#[tokio::test]
async fn invalid_vcpu_counts_are_refused_before_any_call() {
    let bed = Bed::new(None);
    let p = bed.provider();
    for cores in [3.0, 5.0, 33.0, 0.0] {
        let s = spec(&p, cores, 512);
        let err = p.create_worker(&s).await.unwrap_err();
        assert!(
            matches!(err, ProviderError::InvalidConfig(_)),
            "{cores}: {err:?}"
        );
        assert!(err.to_string().contains("vCPU"), "{err}");
        assert!(!p.worker_dir(s.worker_id).exists());
    }
    assert!(bed.api.calls().is_empty(), "{:?}", bed.api.paths());
    assert_eq!(p.live_workers(), 0);
}

#[test]
fn mmds_payload_carries_the_worker_settings() {
    let id = WorkerId::new();
    let mut s = WorkerSpec::new(id, hodei_core::ProviderId::new(), "http://h:1", "otp-7");
    s.env.insert("A".into(), "spec".into());
    let extra = [
        ("A".to_owned(), "extra".to_owned()),
        ("B".to_owned(), "2".to_owned()),
    ]
    .into();
    let v = mmds_payload(&s, &extra);
    assert_eq!(
        v,
        json!({"hodei": {
            "otp": "otp-7",
            "server_address": "http://h:1",
            "worker_id": id.to_string(),
            "max_concurrent_jobs": s.max_concurrent_jobs.to_string(),
            "env": {"A": "spec", "B": "2"},
        }})
    );
}

#[test]
fn jailer_command_line() {
    let mut j = JailerConfig::default();
    j.uid = 1001;
    j.gid = 1002;
    j.chroot_base = "/srv/jail".into();
    let r = JobResources {
        cpu_cores: 1.5,
        memory_mb: 256,
        ..JobResources::default()
    };
    let args = jailer_args(
        &j,
        Path::new("/usr/bin/firecracker"),
        "w-1",
        &r,
        256,
        "/fc.sock",
    );
    assert_eq!(
        args,
        [
            "--id",
            "w-1",
            "--exec-file",
            "/usr/bin/firecracker",
            "--uid",
            "1001",
            "--gid",
            "1002",
            "--chroot-base-dir",
            "/srv/jail",
            "--cgroup-version",
            "2",
            "--cgroup",
            "cpu.max=150000 100000",
            "--cgroup",
            "memory.max=268435456",
            "--",
            "--api-sock",
            "/fc.sock",
        ]
    );
}

#[tokio::test]
async fn missing_binary_kernel_or_kvm_are_typed_errors() {
    let bed = Bed::new(None);
    let root = bed.root().to_path_buf();
    let check = async |config: FirecrackerProviderConfig| {
        let p = FirecrackerProvider::new(config).unwrap();
        let health = p.health_check().await.unwrap();
        assert!(!health.healthy, "{health:?}");
        let err = p.create_worker(&spec(&p, 1.0, 256)).await.unwrap_err();
        assert_eq!(
            err.to_string(),
            health.message.clone(),
            "health says the same"
        );
        err
    };
    let err = check(bed.config().with_binary(root.join("no-such-firecracker"))).await;
    assert!(
        matches!(&err, ProviderError::InvalidConfig(m) if m.contains("HODEI_FC_BINARY")),
        "{err:?}"
    );
    let err = check(bed.config().with_kernel(root.join("no-vmlinux"))).await;
    assert!(
        matches!(&err, ProviderError::ImageNotFound { hint, .. } if hint.contains("build-guest.sh")),
        "{err:?}"
    );
    let err = check(bed.config().with_initrd(Some(root.join("no-initrd")))).await;
    assert!(
        matches!(&err, ProviderError::ImageNotFound { image, .. } if image.contains("initramfs")),
        "{err:?}"
    );
    let err = check(bed.config().with_rootfs(root.join("no-rootfs"))).await;
    assert!(
        matches!(&err, ProviderError::ImageNotFound { .. }),
        "{err:?}"
    );
    let err = check(
        bed.config()
            .with_kvm_paths(root.join("no-kvm"), root.join("cpuinfo")),
    )
    .await;
    assert!(
        matches!(&err, ProviderError::Unavailable(m) if m.contains("hardware KVM")),
        "{err:?}"
    );
    // A /dev/kvm without vmx/svm (e.g. a paravirtual module) is not enough.
    std::fs::write(root.join("cpuinfo-novirt"), "flags : fpu sse\n").unwrap();
    let err = check(
        bed.config()
            .with_kvm_paths(root.join("kvm"), root.join("cpuinfo-novirt")),
    )
    .await;
    assert!(matches!(&err, ProviderError::Unavailable(_)), "{err:?}");
    assert!(bed.api.calls().is_empty());
    // With everything present, healthy.
    let health = bed.provider().health_check().await.unwrap();
    assert!(health.healthy, "{health:?}");
}

/// The real boot: needs `firecracker`, the guest image and hardware KVM.
#[tokio::test]
async fn boots_the_guest_image_for_real_where_possible() {
    let config = FirecrackerProviderConfig::from_env().unwrap();
    let mut missing = Vec::new();
    if !hodei_providers::firecracker::hardware_kvm_usable_at(&config.kvm_device, &config.cpuinfo) {
        missing.push("hardware KVM (a read-write /dev/kvm and vmx/svm CPU flags)".to_owned());
    }
    let runs = std::process::Command::new(&config.binary)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !runs {
        missing.push(format!(
            "the firecracker binary ({}; HODEI_FC_BINARY)",
            config.binary.display()
        ));
    }
    let initrd = config.initrd.iter().map(|p| ("initramfs", p));
    for (what, path) in [("kernel", &config.kernel), ("rootfs", &config.rootfs)]
        .into_iter()
        .chain(initrd)
    {
        if !path.is_file() {
            missing.push(format!(
                "the guest {what} {} (scripts/microvm/build-guest.sh)",
                path.display()
            ));
        }
    }
    if !missing.is_empty() {
        // The one test allowed to skip under CI=true: no such host here.
        eprintln!(
            "SKIPPED: real Firecracker boot needs {}",
            missing.join(", ")
        );
        return;
    }
    let p = FirecrackerProvider::new(config).unwrap();
    let health = p.health_check().await.unwrap();
    assert!(health.healthy, "{health:?}");
    let s = spec(&p, 1.0, 256);
    let handle = p.create_worker(&s).await.expect("boot");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let logs = p.worker_logs(&handle, None).await.unwrap();
    assert!(logs.iter().any(|l| l.contains("Linux version")), "{logs:?}");
    p.destroy_worker(&handle).await.unwrap();
    assert!(!p.worker_dir(s.worker_id).exists());
}

/// The validator itself refuses a body that breaks the specification.
#[test]
fn the_schema_validator_rejects_bad_bodies() {
    let bad = [Call {
        method: "PUT".into(),
        path: "/machine-config".into(),
        body: Some(json!({"vcpu_count": "two", "mem_size_mib": 256})),
    }];
    let result = std::panic::catch_unwind(|| validate_against_spec(&bad));
    match result {
        Err(panic) => {
            let msg = panic.downcast_ref::<String>().cloned().unwrap_or_default();
            assert!(msg.contains("schema validation failed"), "{msg}");
        }
        // Only when python3/yaml/jsonschema are missing (and CI is not set).
        Ok(ran) => assert!(!ran, "a bad body passed validation"),
    }
}

/// The provider conformance kit, against the stand-in API and process (no guest boots).
#[tokio::test]
async fn passes_the_provider_conformance_kit_with_the_stand_in() {
    use hodei_core::provider::WorkerEvent;
    use hodei_core::testing::provider::{ConformanceOptions, provider_conformance};
    let bed = Bed::new(None);
    let provider = Arc::new(bed.provider());
    let id = provider.id();
    let p: Arc<dyn WorkerProvider> = provider.clone();
    let report = provider_conformance(
        p,
        move || WorkerSpec::new(WorkerId::new(), id, "http://10.0.0.1:1", "conformance-otp"),
        ConformanceOptions::default()
            .with_ready_timeout(Duration::from_secs(10))
            .with_terminate_timeout(Duration::from_secs(10))
            .with_event_timeout(Duration::from_secs(10)),
    )
    .await
    .unwrap_or_else(|f| panic!("Firecracker provider fails the kit: {f}"));
    assert!(report.health.message.contains("KVM"), "{:?}", report.health);
    let usage = report.metrics.expect("metrics while running");
    assert_eq!(usage.memory_limit_bytes, 512 * 1024 * 1024);
    // From the metrics file the stand-in wrote on `FlushMetrics`.
    assert_eq!(
        (
            usage.disk_read_bytes,
            usage.disk_write_bytes,
            usage.net_rx_bytes,
            usage.net_tx_bytes
        ),
        (4096, 512, 1500, 700)
    );
    assert!(
        report
            .events
            .iter()
            .any(|e| matches!(e, WorkerEvent::Destroyed { .. })),
        "{:?}",
        report.events
    );
    assert_eq!(provider.live_workers(), 0);
    assert!(!provider.worker_dir(report.worker_id).exists());
}

/// A Firecracker process killed from outside is noticed at once.
#[tokio::test]
async fn an_exit_from_outside_is_an_exited_event() {
    use futures::StreamExt;
    use hodei_core::provider::{WorkerEvent, WorkerEventSource};
    let bed = Bed::new(None);
    let p = bed.provider();
    let mut events = p.events();
    let s = spec(&p, 1.0, 256);
    let handle = p.create_worker(&s).await.unwrap();
    let pid = p.pid(s.worker_id).unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(pid).unwrap()),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let exited = tokio::time::timeout(Duration::from_secs(3), async {
        while let Some(e) = events.next().await {
            if let WorkerEvent::Exited {
                worker_id, reason, ..
            } = e
            {
                return (worker_id, reason);
            }
        }
        panic!("event stream ended");
    })
    .await
    .expect("Exited within 3 s");
    assert_eq!(exited.0, s.worker_id);
    assert!(exited.1.contains("SIGKILL"), "{}", exited.1);
    assert_eq!(
        p.get_worker_status(&handle).await.unwrap(),
        hodei_core::WorkerState::Terminated
    );
    p.destroy_worker(&handle).await.unwrap();
    assert!(!p.worker_dir(s.worker_id).exists());
}

/// `pid starttime`, as the provider tags a worker directory's owner.
fn owner_tag_of(pid: u32) -> String {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let rest = &stat[stat.rfind(')').unwrap() + 1..];
    format!("{pid} {}", rest.split_whitespace().nth(19).unwrap())
}

/// Directories whose owner is gone are removed and their Firecracker killed; a
/// live owner's are kept.
#[tokio::test]
async fn orphans_of_a_dead_owner_are_removed_at_start() {
    let bed = Bed::new(None);
    let work = bed.root().join("work");
    let orphan_id = WorkerId::new().to_string();
    let kept_id = WorkerId::new().to_string();
    let orphan = work.join(&orphan_id);
    let kept = work.join(&kept_id);
    std::fs::create_dir_all(&orphan).unwrap();
    std::fs::create_dir_all(&kept).unwrap();
    // A "Firecracker" of the orphan: its id is on its command line.
    let mut child = std::process::Command::new(bed.root().join("firecracker"))
        .arg("--id")
        .arg(&orphan_id)
        .arg("--api-sock")
        .arg(orphan.join("fc.sock"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    std::fs::write(orphan.join("firecracker.pid"), child.id().to_string()).unwrap();
    std::fs::write(orphan.join("owner"), "4194303 1").unwrap();
    std::fs::write(kept.join("owner"), owner_tag_of(std::process::id())).unwrap();
    // Started (its socket link exists) before the provider looks.
    for _ in 0..500 {
        if orphan.join("fc.sock").symlink_metadata().is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(orphan.join("fc.sock").symlink_metadata().is_ok());
    let _p = bed.provider();
    assert!(!orphan.exists(), "orphan dir kept");
    assert!(kept.exists(), "a live owner's dir was removed");
    let status = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            if let Some(s) = child.try_wait().unwrap() {
                return s;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("orphaned firecracker killed");
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(status.signal(), Some(9), "{status:?}");
}

/// `ip` with `args`, in this thread's network namespace: (success, stdout + stderr).
fn ip(args: &[&str]) -> (bool, String) {
    let out = std::process::Command::new("ip")
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

fn tap_exists(name: &str) -> bool {
    ip(&["link", "show", "dev", name]).0
}

/// Moves this thread (and what it starts from now on) into a new network
/// namespace; `false`, after saying why, where that is not allowed.
fn enter_new_network_namespace() -> bool {
    let why = match nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET) {
        Ok(()) if ip(&["link", "set", "lo", "up"]).0 => None,
        Ok(()) => Some("`ip` (iproute2) does not run".to_owned()),
        Err(e) => Some(format!(
            "unshare(CLONE_NEWNET): {e} (needs root / CAP_SYS_ADMIN)"
        )),
    };
    match why {
        None => true,
        Some(why) => {
            require::missing_dependency(&format!(
                "cannot test tap devices in a network namespace: {why}"
            ));
            false
        }
    }
}

/// Tap devices for real, inside a network namespace this test creates: made
/// with the host end of each worker's /30 before Firecracker starts, the
/// guest told its end through MMDS, removed when Firecracker exits, on a
/// refused API call, and for orphans; a tap left behind is replaced; a
/// `ip` without `CAP_NET_ADMIN` is a typed error that leaves nothing behind.
#[test]
fn tap_devices_are_made_and_removed_in_a_network_namespace() {
    if !enter_new_network_namespace() {
        return;
    }
    // One thread: everything below (and every process it starts) stays in the namespace.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        use futures::StreamExt;
        use hodei_core::provider::{WorkerEvent, WorkerEventSource};
        let bed = Bed::new(None);
        let p = FirecrackerProvider::new(bed.config().with_create_tap(true)).unwrap();
        let health = p.health_check().await.unwrap();
        assert!(health.healthy, "{health:?}");
        let mut events = p.events();

        let mut s1 = spec(&p, 1.0, 256);
        s1.server_address = "http://127.0.0.1:50051".into();
        let h1 = p.create_worker(&s1).await.expect("create with a tap");
        let tap1 = tap_name("hfc", s1.worker_id);
        let (ok, addr) = ip(&["-o", "-4", "addr", "show", "dev", &tap1]);
        assert!(ok && addr.contains("inet 172.30.0.1/30"), "{addr}");
        let (_, link) = ip(&["-d", "-o", "link", "show", "dev", &tap1]);
        assert!(link.contains(",UP"), "not up: {link}");
        assert!(
            link.contains("tun type tap") && link.contains("persist on"),
            "{link}"
        );
        // The guest is told its end; a loopback server address becomes the host end.
        let mmds = bed
            .api
            .calls()
            .into_iter()
            .rfind(|c| c.path == "/mmds")
            .unwrap()
            .body
            .unwrap();
        assert_eq!(
            mmds["hodei"]["server_address"],
            json!("http://172.30.0.1:50051")
        );
        assert_eq!(
            mmds["hodei"]["env"]["HODEI_GUEST_IP"],
            json!("172.30.0.2/30")
        );
        assert_eq!(
            mmds["hodei"]["env"]["HODEI_GUEST_GATEWAY"],
            json!("172.30.0.1")
        );

        // A second worker takes the next link.
        let s2 = spec(&p, 1.0, 256);
        let h2 = p.create_worker(&s2).await.unwrap();
        let tap2 = tap_name("hfc", s2.worker_id);
        let (_, addr) = ip(&["-o", "-4", "addr", "show", "dev", &tap2]);
        assert!(addr.contains("inet 172.30.0.5/30"), "{addr}");
        assert_eq!(h2.metadata.get("guest_ip").unwrap(), "172.30.0.6");

        // Destroy removes the tap; the other stays.
        p.destroy_worker(&h1).await.unwrap();
        assert!(!tap_exists(&tap1), "{tap1} left after destroy");
        assert!(tap_exists(&tap2));

        // Firecracker killed from outside: the tap is gone by the Exited event.
        let pid = p.pid(s2.worker_id).unwrap();
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(i32::try_from(pid).unwrap()),
            nix::sys::signal::Signal::SIGKILL,
        )
        .unwrap();
        tokio::time::timeout(Duration::from_secs(5), async {
            while let Some(e) = events.next().await {
                if matches!(e, WorkerEvent::Exited { worker_id, .. } if worker_id == s2.worker_id) {
                    return;
                }
            }
        })
        .await
        .expect("Exited within 5 s");
        assert!(!tap_exists(&tap2), "{tap2} left after Firecracker exited");
        p.destroy_worker(&h2).await.expect("destroy after exit");

        // A tap of the same name left behind is replaced; the freed first link is reused.
        let s3 = spec(&p, 1.0, 256);
        let tap3 = tap_name("hfc", s3.worker_id);
        assert!(ip(&["tuntap", "add", "dev", &tap3, "mode", "tap"]).0);
        let h3 = p.create_worker(&s3).await.expect("create over a stale tap");
        let (_, addr) = ip(&["-o", "-4", "addr", "show", "dev", &tap3]);
        assert!(addr.contains("inet 172.30.0.1/30"), "{addr}");
        p.destroy_worker(&h3).await.unwrap();
        assert!(!tap_exists(&tap3));
        assert_eq!(p.live_workers(), 0);

        // Made for the jailer: owned by its uid/gid.
        let link = hodei_providers::firecracker::link_addresses(
            std::net::Ipv4Addr::new(10, 77, 0, 0),
            24,
            3,
        )
        .unwrap();
        hodei_providers::firecracker::create_tap(
            Path::new("ip"),
            "hfcjailed",
            &link,
            Some((4242, 4343)),
        )
        .await
        .unwrap();
        let (_, jailed) = ip(&["-d", "-o", "link", "show", "dev", "hfcjailed"]);
        assert!(jailed.contains("user 4242 group 4343"), "{jailed}");
        assert!(
            ip(&["-o", "-4", "addr", "show", "dev", "hfcjailed"])
                .1
                .contains("10.77.0.13/30")
        );
        assert!(
            hodei_providers::firecracker::remove_tap(Path::new("ip"), "hfcjailed")
                .await
                .unwrap()
        );
        assert!(
            !hodei_providers::firecracker::remove_tap(Path::new("ip"), "hfcjailed")
                .await
                .unwrap(),
            "removing twice is a no-op"
        );
    });

    rt.block_on(async {
        // A refused API call: the tap goes with the rest.
        let bed = Bed::new(Some(("/machine-config", "Invalid machine configuration")));
        let p = FirecrackerProvider::new(bed.config().with_create_tap(true)).unwrap();
        let s = spec(&p, 1.0, 256);
        p.create_worker(&s).await.unwrap_err();
        assert!(!tap_exists(&tap_name("hfc", s.worker_id)));
        assert!(!p.worker_dir(s.worker_id).exists());

        // An orphan's tap is removed with its directory when a provider starts.
        let orphan = WorkerId::new();
        let dir = bed.root().join("work").join(orphan.to_string());
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("owner"), "4194303 1").unwrap();
        let orphan_tap = tap_name("hfc", orphan);
        assert!(ip(&["tuntap", "add", "dev", &orphan_tap, "mode", "tap"]).0);
        let _p2 = FirecrackerProvider::new(bed.config().with_create_tap(true)).unwrap();
        assert!(!tap_exists(&orphan_tap), "orphan tap kept");
        assert!(!dir.exists());
    });

    // Without CAP_NET_ADMIN (the real `ip`, run as nobody with no capabilities).
    if std::process::Command::new("setpriv")
        .arg("--version")
        .output()
        .is_err()
    {
        require::missing_dependency(
            "setpriv (util-linux) is missing: the not-permitted case is not tested",
        );
        return;
    }
    rt.block_on(async {
        let bed = Bed::new(None);
        let wrapper = bed.root().join("ip-unprivileged");
        write_exec(
            &wrapper,
            "#!/bin/sh\nexec setpriv --reuid=65534 --regid=65534 --clear-groups \
             --inh-caps=-all --bounding-set=-all ip \"$@\"\n",
        );
        let p = FirecrackerProvider::new(
            bed.config()
                .with_create_tap(true)
                .with_ip_binary(&wrapper),
        )
        .unwrap();
        let s = spec(&p, 1.0, 256);
        let err = p.create_worker(&s).await.unwrap_err();
        assert!(
            matches!(&err, ProviderError::Unavailable(m) if m.contains("CAP_NET_ADMIN") && m.contains("HODEI_FC_CREATE_TAP")),
            "{err:?}"
        );
        assert!(!tap_exists(&tap_name("hfc", s.worker_id)));
        assert!(!p.worker_dir(s.worker_id).exists());
        assert!(bed.api.calls().is_empty(), "Firecracker was configured");
        assert_eq!(p.live_workers(), 0);
    });
}
