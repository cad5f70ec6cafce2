//! The Docker provider against the real Docker Engine, with the real worker
//! image (built from local files by `scripts/docker/build-worker-image.sh`).
//!
//! Without a reachable daemon every test prints a loud SKIP and passes,
//! unless `CI=true`, where it fails.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bollard::Docker;
use bollard::query_parameters::ListContainersOptionsBuilder;
use futures::StreamExt;
use futures::stream::BoxStream;
use hodei_core::control::{ControlPlane, ControlPlaneConfig, PoolPolicy};
use hodei_core::provider::*;
use hodei_core::store::LogCursor;
use hodei_core::testing::require;
use hodei_core::*;
use hodei_providers::docker::{
    CONTAINER_PREFIX, DockerProvider, DockerProviderConfig, IMAGE_HINT, ISOLATED_NETWORK,
    LABEL_MANAGED, LABEL_PROVIDER_ID, LABEL_WORKER_ID, NetworkMode, UnreachableServer,
};
use tokio::sync::OnceCell;

/// Label every container of this suite carries (leftovers of a crashed run are removed at start).
const SUITE_LABEL: &str = "hodei.test-suite";
const SUITE: &str = "hodei-providers-docker";
/// Label naming the run of the suite a container belongs to.
const RUN_LABEL: &str = "hodei.test-run";
/// A server address where nothing listens: the agent keeps retrying, the container keeps running.
const NOWHERE: &str = "http://127.0.0.1:1";

static SETUP: OnceCell<bool> = OnceCell::const_new();

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The agent binary next to this test binary (target/debug/hodei-worker), if built.
fn agent_binary() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    let dir = exe.parent()?;
    let dir = if dir.file_name().is_some_and(|n| n == "deps") {
        dir.parent()?
    } else {
        dir
    };
    let p = dir.join("hodei-worker");
    p.is_file().then_some(p)
}

/// Whether the daemon is there; builds the image and removes leftovers once.
async fn setup() -> bool {
    *SETUP
        .get_or_init(|| async {
            let reachable = match Docker::connect_with_local_defaults() {
                Ok(d) => d.ping().await.is_ok(),
                Err(_) => false,
            };
            if !reachable {
                require::missing_dependency(
                    "Docker daemon not reachable (DOCKER_HOST / /var/run/docker.sock): \
                     the Docker provider tests did not run",
                );
                return false;
            }
            let script = repo_root().join("scripts/docker/build-worker-image.sh");
            let mut cmd = std::process::Command::new(&script);
            if let Some(bin) = agent_binary() {
                cmd.env("HODEI_WORKER_BINARY", bin);
            }
            let out = tokio::task::spawn_blocking(move || cmd.output())
                .await
                .unwrap()
                .expect("run build-worker-image.sh");
            assert!(
                out.status.success(),
                "build-worker-image.sh failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            remove_leftovers_of_earlier_runs().await;
            true
        })
        .await
}

/// This run of the suite. nextest runs every test in its own process, so a
/// per-process value would make each test treat the others' containers as
/// leftovers (and kill them): use nextest's run id when there is one.
fn run_id() -> &'static str {
    static RUN: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    RUN.get_or_init(|| {
        std::env::var("NEXTEST_RUN_ID").unwrap_or_else(|_| WorkerId::new().to_string())
    })
}

/// Removes containers of this suite left by an earlier, crashed run; those of
/// the current run (other tests running in parallel) are left alone.
async fn remove_leftovers_of_earlier_runs() {
    let docker = Docker::connect_with_local_defaults().unwrap();
    let filters =
        std::collections::HashMap::from([("label", vec![format!("{SUITE_LABEL}={SUITE}")])]);
    let containers = docker
        .list_containers(Some(
            ListContainersOptionsBuilder::default()
                .all(true)
                .filters(&filters)
                .build(),
        ))
        .await
        .unwrap();
    for c in containers {
        let run = c.labels.as_ref().and_then(|l| l.get(RUN_LABEL));
        if run.is_some_and(|r| r == run_id()) {
            continue;
        }
        if let Some(id) = c.id {
            eprintln!("removing a leftover of an earlier run: {:?}", c.names);
            let _ = std::process::Command::new("docker")
                .args(["rm", "-f", &id])
                .output();
        }
    }
}

macro_rules! require_docker {
    () => {
        if !setup().await {
            return;
        }
    };
}

/// Removes every container of one test when dropped (also on panic).
struct Cleanup {
    test_label: String,
}

impl Cleanup {
    fn new() -> Self {
        Self {
            test_label: format!("{}", WorkerId::new()),
        }
    }

    /// A config whose containers carry this test's labels.
    fn config(&self) -> DockerProviderConfig {
        DockerProviderConfig::default()
            .with_label(SUITE_LABEL, SUITE)
            .with_label(RUN_LABEL, run_id())
            .with_label("hodei.test", &self.test_label)
            .with_stop_grace(Duration::from_secs(2))
    }

    /// Containers of this test, as `docker ps -a` sees them.
    async fn containers(&self) -> Vec<String> {
        let docker = Docker::connect_with_local_defaults().unwrap();
        let filters = std::collections::HashMap::from([(
            "label",
            vec![format!("hodei.test={}", self.test_label)],
        )]);
        docker
            .list_containers(Some(
                ListContainersOptionsBuilder::default()
                    .all(true)
                    .filters(&filters)
                    .build(),
            ))
            .await
            .unwrap()
            .into_iter()
            .filter_map(|c| c.names.and_then(|n| n.first().cloned()))
            .map(|n| n.trim_start_matches('/').to_owned())
            .collect()
    }
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let ids = std::process::Command::new("docker")
            .args(["ps", "-aq", "--filter"])
            .arg(format!("label=hodei.test={}", self.test_label))
            .output();
        if let Ok(out) = ids {
            let ids: Vec<String> = String::from_utf8_lossy(&out.stdout)
                .split_whitespace()
                .map(str::to_owned)
                .collect();
            if !ids.is_empty() {
                let _ = std::process::Command::new("docker")
                    .args(["rm", "-f"])
                    .args(&ids)
                    .output();
            }
        }
    }
}

fn docker_cli(args: &[&str]) -> String {
    let out = std::process::Command::new("docker")
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "docker {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

fn spec(p: &DockerProvider) -> WorkerSpec {
    WorkerSpec::new(WorkerId::new(), p.id(), NOWHERE, "docker-test-otp")
}

async fn next_event_for(
    events: &mut BoxStream<'static, WorkerEvent>,
    worker: WorkerId,
    within: Duration,
    want: impl Fn(&WorkerEvent) -> bool,
) -> WorkerEvent {
    tokio::time::timeout(within, async {
        loop {
            let e = events.next().await.expect("event stream ended");
            if e.worker_id() == worker && want(&e) {
                return e;
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("no matching event for {worker} within {within:?}"))
}

async fn wait_for_logs(p: &DockerProvider, h: &WorkerHandle, n: usize) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let logs = p.worker_logs(h, None).await.unwrap();
        if logs.len() >= n || Instant::now() > deadline {
            return logs;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn passes_the_provider_conformance_kit() {
    use hodei_core::testing::provider::{ConformanceOptions, provider_conformance};
    require_docker!();
    let guard = Cleanup::new();
    let provider = Arc::new(DockerProvider::connect(guard.config()).await.unwrap());
    let id = provider.id();
    let p: Arc<dyn WorkerProvider> = provider.clone();
    let report = provider_conformance(
        p,
        move || WorkerSpec::new(WorkerId::new(), id, NOWHERE, "conformance-otp"),
        ConformanceOptions::default()
            .with_ready_timeout(Duration::from_secs(30))
            .with_terminate_timeout(Duration::from_secs(30)),
    )
    .await
    .unwrap_or_else(|f| panic!("docker provider fails the kit: {f}"));
    assert_eq!(report.running_state, WorkerState::Ready);
    assert!(
        report.health.message.contains("present"),
        "{:?}",
        report.health
    );
    let usage = report.metrics.expect("metrics while running");
    assert!(usage.memory_bytes > 0, "{usage:?}");
    assert!(
        report
            .events
            .iter()
            .any(|e| matches!(e, WorkerEvent::Started { .. })),
        "{:?}",
        report.events
    );
    assert!(
        report
            .events
            .iter()
            .any(|e| matches!(e, WorkerEvent::Destroyed { .. })),
        "{:?}",
        report.events
    );
    // Destroyed on purpose: no `Exited` (that would look like a crash).
    assert!(
        !report
            .events
            .iter()
            .any(|e| matches!(e, WorkerEvent::Exited { .. })),
        "{:?}",
        report.events
    );
    assert!(guard.containers().await.is_empty());
    assert_eq!(provider.live_workers(), 0);
    // The measured start replaced the default estimate.
    assert_ne!(
        provider.startup_estimate(),
        hodei_providers::docker::DEFAULT_STARTUP
    );
}

#[tokio::test]
async fn container_has_limits_labels_env_and_logs_with_tail() {
    require_docker!();
    let guard = Cleanup::new();
    let p = DockerProvider::connect(guard.config()).await.unwrap();
    let mut s = spec(&p);
    s.resources.cpu_cores = 0.5;
    s.resources.memory_mb = 256;
    let h = p.create_worker(&s).await.unwrap();
    assert_eq!(p.get_worker_status(&h).await.unwrap(), WorkerState::Ready);
    let name = format!("{CONTAINER_PREFIX}{}", s.worker_id);
    assert_eq!(h.metadata.get("container_name"), Some(&name));

    let docker = Docker::connect_with_local_defaults()
        .unwrap()
        .negotiate_version()
        .await
        .unwrap();
    let info = docker.inspect_container(&name, None).await.unwrap();
    assert_eq!(info.id.as_deref(), Some(h.external_id.as_str()));
    let host = info.host_config.unwrap();
    assert_eq!(host.nano_cpus, Some(500_000_000));
    assert_eq!(host.memory, Some(256 * 1024 * 1024));
    // Default configuration: the isolated network, never the host's.
    let network = p
        .worker_network()
        .await
        .unwrap()
        .expect("an isolated network");
    assert_eq!(network.name, ISOLATED_NETWORK);
    assert_eq!(host.network_mode.as_deref(), Some(network.id.as_str()));
    let gateway = network.gateway.expect("the network has a gateway");
    assert_eq!(
        host.extra_hosts,
        Some(vec![format!("host.docker.internal:{gateway}")])
    );
    assert_eq!(h.metadata.get("network").map(String::as_str), Some("hodei"));
    assert_eq!(host.auto_remove, Some(false));
    let config = info.config.unwrap();
    let labels = config.labels.unwrap();
    assert_eq!(labels.get(LABEL_MANAGED).map(String::as_str), Some("true"));
    assert_eq!(labels.get(LABEL_WORKER_ID), Some(&s.worker_id.to_string()));
    assert_eq!(labels.get(LABEL_PROVIDER_ID), Some(&p.id().to_string()));
    let env = config.env.unwrap();
    for want in [
        format!("HODEI_WORKER_ID={}", s.worker_id),
        // The loopback address was rewritten to the host as the container sees it.
        "HODEI_SERVER=http://host.docker.internal:1".to_owned(),
        "HODEI_OTP=docker-test-otp".to_owned(),
        "HODEI_WORK_DIR=/work".to_owned(),
    ] {
        assert!(env.contains(&want), "{want} missing from {env:?}");
    }
    // The image runs the agent as the non-root user.
    assert_eq!(
        docker_cli(&["exec", &name, "id", "-u"]),
        "10001",
        "agent must not run as root"
    );

    // The agent keeps retrying the unreachable server and says so.
    let logs = wait_for_logs(&p, &h, 3).await;
    assert!(logs.len() >= 3, "{logs:?}");
    assert!(
        logs.iter().any(|l| l.contains("cannot reach the server")),
        "{logs:?}"
    );
    assert_eq!(p.worker_logs(&h, Some(2)).await.unwrap().len(), 2);
    assert_eq!(p.worker_logs(&h, Some(0)).await.unwrap().len(), 0);

    let usage = p.worker_metrics(&h).await.unwrap();
    assert_eq!(usage.memory_limit_bytes, 256 * 1024 * 1024, "{usage:?}");
    assert!(usage.memory_bytes > 0);

    p.destroy_worker(&h).await.unwrap();
    assert!(matches!(
        p.get_worker_status(&h).await,
        Err(ProviderError::WorkerNotFound(_))
    ));
    assert!(matches!(
        p.worker_logs(&h, None).await,
        Err(ProviderError::WorkerNotFound(_))
    ));
    assert!(guard.containers().await.is_empty());
}

#[tokio::test]
async fn docker_kill_from_outside_is_an_exited_event_at_once() {
    require_docker!();
    let guard = Cleanup::new();
    let p = DockerProvider::connect(guard.config()).await.unwrap();
    let mut events = p.events();
    let s = spec(&p);
    let h = p.create_worker(&s).await.unwrap();
    next_event_for(&mut events, s.worker_id, Duration::from_secs(10), |e| {
        matches!(e, WorkerEvent::Started { .. })
    })
    .await;
    assert_eq!(p.live_workers(), 1);
    // Let the agent print first, so its logs outlive it.
    assert!(!wait_for_logs(&p, &h, 1).await.is_empty());
    let name = format!("{CONTAINER_PREFIX}{}", s.worker_id);
    let killed = Instant::now();
    docker_cli(&["kill", &name]);
    let e = next_event_for(&mut events, s.worker_id, Duration::from_secs(5), |e| {
        matches!(e, WorkerEvent::Exited { .. })
    })
    .await;
    let noticed = killed.elapsed();
    assert!(
        matches!(&e, WorkerEvent::Exited { exit_code: Some(137), reason, .. } if reason.contains("SIGKILL")),
        "{e:?}"
    );
    assert!(
        noticed < Duration::from_secs(2),
        "noticed after {noticed:?}"
    );
    eprintln!("docker kill noticed after {noticed:?}");
    assert_eq!(
        p.get_worker_status(&h).await.unwrap(),
        WorkerState::Terminated
    );
    assert_eq!(p.live_workers(), 0);
    // Logs survive the exit until destroy.
    assert!(!p.worker_logs(&h, None).await.unwrap().is_empty());
    // Destroy twice: both Ok.
    p.destroy_worker(&h).await.unwrap();
    p.destroy_worker(&h).await.unwrap();
    next_event_for(&mut events, s.worker_id, Duration::from_secs(10), |e| {
        matches!(e, WorkerEvent::Destroyed { .. })
    })
    .await;
    assert!(guard.containers().await.is_empty());
}

#[tokio::test]
async fn a_missing_image_is_image_not_found_with_the_hint() {
    require_docker!();
    let guard = Cleanup::new();
    let image = "hodei-worker-does-not-exist:never";
    let p = DockerProvider::connect(guard.config().with_image(image))
        .await
        .unwrap();
    let err = p.create_worker(&spec(&p)).await.unwrap_err();
    assert_eq!(
        err,
        ProviderError::ImageNotFound {
            image: image.to_owned(),
            hint: IMAGE_HINT.to_owned()
        }
    );
    assert!(
        err.to_string()
            .contains("run scripts/docker/build-worker-image.sh"),
        "{err}"
    );
    assert!(!err.is_retryable());
    assert_eq!(p.live_workers(), 0);
    let health = p.health_check().await.unwrap();
    assert!(!health.healthy);
    assert!(health.message.contains(image), "{}", health.message);
    assert!(health.message.contains(IMAGE_HINT), "{}", health.message);
    let job = JobSpec::new("j", CommandType::shell("true", Vec::<String>::new()));
    let e = p.job_eligibility(&job);
    assert!(
        matches!(&e, Eligibility::Ineligible(why) if why.contains(IMAGE_HINT)),
        "{e:?}"
    );
    assert!(guard.containers().await.is_empty());
}

#[tokio::test]
async fn an_unreachable_daemon_is_unavailable_and_unhealthy() {
    // Needs no daemon at all.
    let config = DockerProviderConfig::from_lookup(|k| {
        (k == "DOCKER_HOST").then(|| "unix:///nonexistent/docker.sock".to_owned())
    })
    .unwrap();
    let err = DockerProvider::connect(config.clone()).await.unwrap_err();
    assert!(matches!(err, ProviderError::Unavailable(_)), "{err:?}");
    assert!(
        err.to_string().contains("/nonexistent/docker.sock"),
        "{err}"
    );

    let p = DockerProvider::connect_lazy(config).await.unwrap();
    let mut events = p.events();
    let health = p.health_check().await.unwrap();
    assert!(!health.healthy);
    assert!(
        health.message.contains("unreachable") && health.message.contains("/nonexistent"),
        "{}",
        health.message
    );
    let s = spec(&p);
    let err = p.create_worker(&s).await.unwrap_err();
    assert!(matches!(err, ProviderError::Unavailable(_)), "{err:?}");
    assert!(err.is_retryable(), "jobs must stay queued");
    assert_eq!(p.live_workers(), 0);
    let h = WorkerHandle::new(s.worker_id, p.id(), "x");
    assert!(matches!(
        p.get_worker_status(&h).await,
        Err(ProviderError::Unavailable(_))
    ));
    assert!(matches!(
        p.destroy_worker(&h).await,
        Err(ProviderError::Unavailable(_))
    ));
    assert!(matches!(
        p.worker_logs(&h, Some(5)).await,
        Err(ProviderError::Unavailable(_))
    ));
    assert!(matches!(
        p.cleanup_orphans(&HashSet::new()).await,
        Err(ProviderError::Unavailable(_))
    ));
    // Eligibility and capabilities still answer (from the host).
    let job = JobSpec::new("j", CommandType::shell("true", Vec::<String>::new()));
    assert!(p.job_eligibility(&job).is_eligible());
    assert!(
        tokio::time::timeout(Duration::from_millis(300), events.next())
            .await
            .is_err(),
        "no events from a daemon that is not there"
    );
    // A malformed address is a configuration error.
    let bad = DockerProviderConfig::default().with_docker_host("ftp://nope");
    assert!(matches!(
        DockerProvider::connect_lazy(bad).await,
        Err(ProviderError::InvalidConfig(_))
    ));
}

#[tokio::test]
async fn orphan_cleanup_removes_unknown_containers_and_keeps_known_ones() {
    require_docker!();
    let guard = Cleanup::new();
    // The "crashed server": its provider created two workers and went away.
    let crashed = DockerProvider::connect(guard.config()).await.unwrap();
    let known = spec(&crashed);
    let orphan = spec(&crashed);
    let hk = crashed.create_worker(&known).await.unwrap();
    crashed.create_worker(&orphan).await.unwrap();
    drop(crashed);
    // An unrelated managed container of another scope must be left alone.
    let other_guard = Cleanup::new();
    let other = DockerProvider::connect(other_guard.config()).await.unwrap();
    let other_spec = spec(&other);
    let ho = other.create_worker(&other_spec).await.unwrap();

    // The restarted server knows only `known`.
    let restarted = DockerProvider::connect(guard.config()).await.unwrap();
    let removed = restarted
        .cleanup_orphans(&HashSet::from([known.worker_id]))
        .await
        .unwrap();
    assert_eq!(
        removed,
        vec![format!("{CONTAINER_PREFIX}{}", orphan.worker_id)]
    );
    assert_eq!(
        guard.containers().await,
        vec![format!("{CONTAINER_PREFIX}{}", known.worker_id)]
    );
    assert_eq!(other_guard.containers().await.len(), 1);
    // The known worker is still there and can be destroyed by the new provider.
    assert_eq!(
        restarted.get_worker_status(&hk).await.unwrap(),
        WorkerState::Ready
    );
    restarted.destroy_worker(&hk).await.unwrap();
    other.destroy_worker(&ho).await.unwrap();
    assert!(guard.containers().await.is_empty());
    assert!(other_guard.containers().await.is_empty());
    assert!(
        restarted
            .cleanup_orphans(&HashSet::new())
            .await
            .unwrap()
            .is_empty()
    );
}

#[tokio::test]
async fn max_workers_is_resource_exhausted() {
    require_docker!();
    let guard = Cleanup::new();
    let p = DockerProvider::connect(guard.config().with_max_workers(1))
        .await
        .unwrap();
    let a = p.create_worker(&spec(&p)).await.unwrap();
    let err = p.create_worker(&spec(&p)).await.unwrap_err();
    assert!(matches!(err, ProviderError::ResourceExhausted(_)), "{err}");
    assert!(err.is_retryable());
    p.destroy_worker(&a).await.unwrap();
    let b = p.create_worker(&spec(&p)).await.unwrap();
    p.destroy_worker(&b).await.unwrap();
    // The engine may list a container for a moment after its removal was accepted.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !guard.containers().await.is_empty() && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        guard.containers().await.is_empty(),
        "containers left after destroy"
    );
}

// ---- end to end: the control plane runs real jobs in containers ----

struct Plane {
    cp: ControlPlane,
    stop: tokio::sync::watch::Sender<bool>,
}

async fn start_plane(provider: DockerProvider, policy: PoolPolicy) -> Plane {
    // The control plane's warnings (worker lost, retries) land in the test's
    // captured output, so a failure in CI explains itself.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,bollard=warn,hyper=warn,h2=warn,tower=warn".into()),
        )
        .with_test_writer()
        .try_init();
    // Listen where the workers come in: the isolated network's gateway (not
    // all interfaces), or loopback on the host network. Workers are given a
    // loopback address either way; off the host network the provider rewrites it.
    let listen = host_address_for_workers(&provider).await;
    let (listener, addr): (_, SocketAddr) = hodei_core::server::bind(SocketAddr::new(listen, 0))
        .await
        .unwrap();
    let worker_server_address = format!("http://127.0.0.1:{}", addr.port());
    provider
        .check_server_reachable(listen, &worker_server_address)
        .await
        .unwrap();
    let mut config = ControlPlaneConfig::default();
    config.worker_server_address = worker_server_address;
    config.heartbeat_interval = Duration::from_secs(1);
    let cp = ControlPlane::builder().config(config).build();
    let image = provider.config().image.clone();
    let network = provider.config().network_mode.as_docker().to_owned();
    cp.register_provider(
        Arc::new(provider),
        ProviderConfig::Docker {
            image,
            docker_host: None,
            network: Some(network),
        },
        policy,
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

/// The host's address as the provider's workers reach it.
async fn host_address_for_workers(provider: &DockerProvider) -> IpAddr {
    match provider.worker_network().await.unwrap() {
        Some(n) => n.gateway.expect("the workers' network has a gateway"),
        None => IpAddr::from([127, 0, 0, 1]),
    }
}

async fn wait_job(cp: &ControlPlane, id: JobId, within: Duration, want: JobState) -> Job {
    let deadline = Instant::now() + within;
    loop {
        let job = cp.get_job(id).await.unwrap();
        if job.state() == want {
            return job;
        }
        // A finished job will not change: say at once why it ended.
        assert!(
            !job.state().is_terminal(),
            "job {id} ended {:?}, not {want:?}, after {} attempt(s): {:?}",
            job.state(),
            job.attempts(),
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

async fn job_output(cp: &ControlPlane, id: JobId) -> String {
    let entries = cp
        .logs()
        .read(id, LogCursor::default(), 10_000)
        .await
        .unwrap();
    entries
        .iter()
        .map(|e| String::from_utf8_lossy(&e.entry.data).into_owned())
        .collect::<Vec<_>>()
        .join("")
}

#[tokio::test]
async fn jobs_run_in_containers_and_the_containers_are_gone_after() {
    require_docker!();
    let guard = Cleanup::new();
    let provider = DockerProvider::connect(guard.config()).await.unwrap();
    let plane = start_plane(provider, PoolPolicy::default()).await;
    let cp = &plane.cp;

    let echo = JobSpec::new(
        "echo",
        CommandType::shell("echo", ["hello", "from", "docker"]),
    )
    .with_provider("docker");
    let job = cp.create_job(echo, None).await.unwrap();
    let done = wait_job(cp, job.id(), Duration::from_secs(60), JobState::Succeeded).await;
    assert_eq!(done.attempts(), 1);
    let out = job_output(cp, job.id()).await;
    assert!(out.contains("hello from docker"), "{out:?}");
    assert_eq!(guard.containers().await.len(), 1, "one worker container");

    // A script with pipefail: the failing stage fails the job; the rest runs as expected.
    let script = JobSpec::new(
        "pipefail",
        CommandType::script(
            "bash",
            "set -o pipefail\necho \"user=$(id -u) dir=$PWD\"\necho abc | tr a-z A-Z\n\
             if false | cat; then echo pipefail-broken; else echo pipefail-ok; fi\n",
        ),
    )
    .with_provider("docker");
    let job = cp.create_job(script, None).await.unwrap();
    wait_job(cp, job.id(), Duration::from_secs(60), JobState::Succeeded).await;
    let out = job_output(cp, job.id()).await;
    assert!(out.contains("ABC"), "{out:?}");
    assert!(out.contains("pipefail-ok"), "{out:?}");
    assert!(out.contains("user=10001"), "{out:?}");

    let failing = JobSpec::new(
        "fails",
        CommandType::script("bash", "set -o pipefail\nfalse | cat\necho unreachable\n"),
    )
    .with_provider("docker")
    .with_max_attempts(1);
    let job = cp.create_job(failing, None).await.unwrap();
    wait_job(cp, job.id(), Duration::from_secs(60), JobState::Failed).await;
    assert!(!job_output(cp, job.id()).await.contains("unreachable"));

    tokio::time::timeout(Duration::from_secs(30), cp.retire_all_workers("test done"))
        .await
        .unwrap();
    assert!(
        guard.containers().await.is_empty(),
        "{:?}",
        guard.containers().await
    );
    cp.shutdown();
    let _ = plane.stop.send(true);
}

#[tokio::test]
async fn a_worker_container_killed_mid_job_is_retried_on_a_new_worker() {
    require_docker!();
    let guard = Cleanup::new();
    let provider = DockerProvider::connect(guard.config()).await.unwrap();
    let plane = start_plane(provider, PoolPolicy::default()).await;
    let cp = &plane.cp;

    let spec = JobSpec::new(
        "slow",
        CommandType::script("bash", "echo started\nsleep 2\necho finished\n"),
    )
    .with_provider("docker")
    .with_max_attempts(2);
    let job = cp.create_job(spec, None).await.unwrap();
    let running = wait_job(cp, job.id(), Duration::from_secs(60), JobState::Running).await;
    let first_worker = running.worker_id().expect("a running job has a worker");
    let killed = Instant::now();
    docker_cli(&["kill", &format!("{CONTAINER_PREFIX}{first_worker}")]);

    let done = wait_job(cp, job.id(), Duration::from_secs(90), JobState::Succeeded).await;
    eprintln!(
        "killed mid-job; retried and succeeded after {:?}",
        killed.elapsed()
    );
    assert_eq!(done.attempts(), 2);
    assert_ne!(
        done.worker_id(),
        Some(first_worker),
        "retried on a new worker"
    );
    assert!(job_output(cp, job.id()).await.contains("finished"));
    // The killed worker's container was destroyed when its death was noticed.
    let names = guard.containers().await;
    assert!(
        !names.contains(&format!("{CONTAINER_PREFIX}{first_worker}")),
        "{names:?}"
    );

    tokio::time::timeout(Duration::from_secs(30), cp.retire_all_workers("test done"))
        .await
        .unwrap();
    assert!(guard.containers().await.is_empty());
    cp.shutdown();
    let _ = plane.stop.send(true);
}

// ---- network isolation ----

/// A TCP listener on the host that counts the connections it accepts.
struct CountingListener {
    port: u16,
    accepted: Arc<std::sync::atomic::AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl CountingListener {
    async fn bind(ip: IpAddr) -> Self {
        let listener = tokio::net::TcpListener::bind(SocketAddr::new(ip, 0))
            .await
            .unwrap();
        let port = listener.local_addr().unwrap().port();
        let accepted = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let count = accepted.clone();
        let task = tokio::spawn(async move {
            while let Ok((_conn, _)) = listener.accept().await {
                count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            }
        });
        Self {
            port,
            accepted,
            task,
        }
    }

    fn accepted(&self) -> usize {
        self.accepted.load(std::sync::atomic::Ordering::SeqCst)
    }
}

impl Drop for CountingListener {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A job script that tries TCP connections and prints `name=reached` or `name=blocked`.
fn probe_script(targets: &[(&str, &str, u16)]) -> String {
    let mut script = String::from(
        "probe() { if timeout 3 bash -c \"exec 3<>/dev/tcp/$2/$3\" 2>/dev/null; \
         then echo \"$1=reached\"; else echo \"$1=blocked\"; fi; }\n",
    );
    for (name, host, port) in targets {
        script.push_str(&format!("probe {name} {host} {port}\n"));
    }
    script
}

/// Runs the probe as a job through the control plane; the job must succeed
/// (so its agent registered, ran it and reported). Returns its output.
async fn run_probe(cp: &ControlPlane, script: String) -> String {
    let spec = JobSpec::new("probe", CommandType::script("bash", script))
        .with_provider("docker")
        .with_max_attempts(1);
    let job = cp.create_job(spec, None).await.unwrap();
    let done = wait_job(cp, job.id(), Duration::from_secs(90), JobState::Succeeded).await;
    assert_eq!(done.attempts(), 1);
    job_output(cp, job.id()).await
}

#[tokio::test]
async fn a_default_job_cannot_reach_the_hosts_loopback_yet_runs_end_to_end() {
    require_docker!();
    let guard = Cleanup::new();
    let provider = DockerProvider::connect(guard.config()).await.unwrap();
    assert_eq!(provider.config().network_mode, NetworkMode::Isolated);
    let network = provider.worker_network().await.unwrap().unwrap();
    let gateway = network.gateway.unwrap();
    // The network was made with inter-container traffic off.
    let icc = docker_cli(&[
        "network",
        "inspect",
        &network.id,
        "--format",
        "{{index .Options \"com.docker.network.bridge.enable_icc\"}}",
    ]);
    assert_eq!(icc, "false");
    // A server only on loopback is refused at start, with the gateway to use instead.
    let local = IpAddr::from([127, 0, 0, 1]);
    let err = provider
        .check_server_reachable(local, "http://127.0.0.1:50051")
        .await
        .unwrap_err();
    assert_eq!(
        err,
        UnreachableServer::LoopbackListener {
            listen: local,
            network: ISOLATED_NETWORK.into(),
            gateway: Some(gateway),
        }
    );

    // A service on the host's loopback (a database with trust auth, the server's API ...),
    // and a control service where the workers do reach the host.
    let secret = CountingListener::bind(local).await;
    let control = CountingListener::bind(gateway).await;
    let plane = start_plane(provider, PoolPolicy::default()).await;
    let out = run_probe(
        &plane.cp,
        probe_script(&[
            ("loopback", "127.0.0.1", secret.port),
            (
                "host-loopback-via-gateway",
                "host.docker.internal",
                secret.port,
            ),
            ("gateway-ip", &gateway.to_string(), secret.port),
            ("control", "host.docker.internal", control.port),
        ]),
    )
    .await;
    eprintln!("probe from the isolated network:\n{out}");
    for blocked in ["loopback", "host-loopback-via-gateway", "gateway-ip"] {
        assert!(
            out.contains(&format!("{blocked}=blocked")),
            "{blocked}: {out:?}"
        );
    }
    // The probe itself works: the host is reachable where it listens for workers.
    assert!(out.contains("control=reached"), "{out:?}");
    assert!(control.accepted() >= 1);
    assert_eq!(secret.accepted(), 0, "a job reached the host's loopback");

    tokio::time::timeout(
        Duration::from_secs(30),
        plane.cp.retire_all_workers("test done"),
    )
    .await
    .unwrap();
    plane.cp.shutdown();
    let _ = plane.stop.send(true);
}

#[tokio::test]
async fn the_host_network_is_used_only_when_asked_and_then_reaches_loopback() {
    require_docker!();
    let guard = Cleanup::new();
    let provider = DockerProvider::connect(guard.config().with_network_mode(NetworkMode::Host))
        .await
        .unwrap();
    assert_eq!(provider.worker_network().await.unwrap(), None);
    let local = IpAddr::from([127, 0, 0, 1]);
    provider
        .check_server_reachable(local, "http://127.0.0.1:50051")
        .await
        .unwrap();
    let secret = CountingListener::bind(local).await;
    let plane = start_plane(provider, PoolPolicy::default()).await;
    let out = run_probe(
        &plane.cp,
        probe_script(&[("loopback", "127.0.0.1", secret.port)]),
    )
    .await;
    // The opt-in does what it says (and the probe can see it): loopback is shared.
    assert!(out.contains("loopback=reached"), "{out:?}");
    assert!(secret.accepted() >= 1);
    let names = guard.containers().await;
    assert_eq!(names.len(), 1, "{names:?}");
    assert_eq!(
        docker_cli(&[
            "inspect",
            &names[0],
            "--format",
            "{{.HostConfig.NetworkMode}}"
        ]),
        "host"
    );
    tokio::time::timeout(
        Duration::from_secs(30),
        plane.cp.retire_all_workers("test done"),
    )
    .await
    .unwrap();
    plane.cp.shutdown();
    let _ = plane.stop.send(true);
}

#[tokio::test]
async fn a_named_network_must_exist_and_is_found_again_after_a_prune() {
    require_docker!();
    let guard = Cleanup::new();
    let name = format!("hodei-test-{}", WorkerId::new());
    let config = guard
        .config()
        .with_network_mode(NetworkMode::Named(name.clone()));
    let err = DockerProvider::connect(config.clone()).await.unwrap_err();
    assert!(
        matches!(&err, ProviderError::InvalidConfig(m) if m.contains(&name) && m.contains("does not exist")),
        "{err:?}"
    );
    docker_cli(&["network", "create", &name]);
    let removed = scopeguard_network(&name);
    let p = DockerProvider::connect(config).await.unwrap();
    let first = p.worker_network().await.unwrap().unwrap();
    let h = p.create_worker(&spec(&p)).await.unwrap();
    p.destroy_worker(&h).await.unwrap();
    // The network is removed and made again under the provider: a new id.
    docker_cli(&["network", "rm", &name]);
    docker_cli(&["network", "create", &name]);
    let h = p.create_worker(&spec(&p)).await.unwrap();
    let second = p.worker_network().await.unwrap().unwrap();
    assert_ne!(first.id, second.id);
    let mode = docker_cli(&[
        "inspect",
        &h.external_id,
        "--format",
        "{{.HostConfig.NetworkMode}}",
    ]);
    assert_eq!(mode, second.id);
    p.destroy_worker(&h).await.unwrap();
    drop(removed);
}

/// Removes a test network when dropped (also on panic).
fn scopeguard_network(name: &str) -> impl Drop {
    struct RemoveNetwork(String);
    impl Drop for RemoveNetwork {
        fn drop(&mut self) {
            // Containers still on it (a failed test) first, then the network.
            let on_it = std::process::Command::new("docker")
                .args(["ps", "-aq", "--filter", &format!("network={}", self.0)])
                .output();
            if let Ok(out) = on_it {
                for id in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                    let _ = std::process::Command::new("docker")
                        .args(["rm", "-f", id])
                        .output();
                }
            }
            let _ = std::process::Command::new("docker")
                .args(["network", "rm", &self.0])
                .output();
        }
    }
    RemoveNetwork(name.to_owned())
}
