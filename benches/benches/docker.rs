//! Docker provider start-up against the real engine.
//!
//! The network is the provider's (`HODEI_DOCKER_NETWORK`; by default the
//! isolated `hodei` network, `host` only when asked), and the floor uses the
//! same one, so the ratio compares like with like.
//!
//! 1. The floor: `docker run --rm --network NET [--add-host
//!    host.docker.internal:GATEWAY] --entrypoint /usr/bin/true IMAGE`, median of
//!    10 (the cost of any container start on that network on this machine).
//! 2. Provision → agent registered, through the control plane: a job is
//!    submitted to an empty pool, the Docker provider creates a container, the
//!    agent in it registers; median of 10, and the ratio to the floor
//!    (target ≤ 1.2×). Also create → container running as the provider measures it.
//! 3. With a warm pool (`min_idle` 1): dispatch latency of a job to the warm
//!    container worker (job created → job running), p50/p99 of 50.
//!
//! Without a reachable daemon it prints SKIP and exits 0 (fails under `CI=true`).
//! Run: `cargo bench -p hodei-benches --bench docker`
//! (`HODEI_DOCKER_NETWORK=host cargo bench ...` for the host network).
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::net::{IpAddr, SocketAddr};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hodei_core::control::{ControlPlane, ControlPlaneConfig, PoolPolicy};
use hodei_core::provider::WorkerCost;
use hodei_core::testing::require;
use hodei_core::{CommandType, JobId, JobSpec, JobState, ProviderConfig, WorkerState};
use hodei_providers::docker::{DockerProvider, DockerProviderConfig, WorkerNetwork};

const RUNS: usize = 10;
const DISPATCHES: usize = 50;

fn median(v: &mut [Duration]) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn percentile(v: &mut [Duration], p: f64) -> Duration {
    v.sort();
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    v[i.min(v.len() - 1)]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn docker_ok() -> bool {
    Command::new("docker")
        .args(["version", "--format", "{{.Server.Version}}"])
        .output()
        .is_ok_and(|o| o.status.success())
}

fn build_image() {
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../scripts/docker/build-worker-image.sh"
    );
    let out = Command::new(script)
        .output()
        .expect("run build-worker-image.sh");
    assert!(
        out.status.success(),
        "build-worker-image.sh failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `docker run` arguments that put a container where the provider puts its workers.
fn network_args(network: Option<&WorkerNetwork>) -> Vec<String> {
    match network {
        None => vec!["--network".into(), "host".into()],
        Some(n) => {
            let mut v = vec!["--network".into(), n.id.clone()];
            if let Some(g) = n.gateway {
                v.extend(["--add-host".into(), format!("host.docker.internal:{g}")]);
            }
            v
        }
    }
}

fn floor(image: &str, network: Option<&WorkerNetwork>) -> Vec<Duration> {
    // One untimed run warms the image's layers into the page cache.
    let run = || {
        let t = Instant::now();
        let s = Command::new("docker")
            .args(["run", "--rm"])
            .args(network_args(network))
            .args(["--entrypoint", "/usr/bin/true", image])
            .status()
            .expect("docker run");
        assert!(s.success());
        t.elapsed()
    };
    run();
    (0..RUNS).map(|_| run()).collect()
}

async fn plane(provider: DockerProvider, policy: PoolPolicy) -> ControlPlane {
    // Listen where the workers come in: the network's gateway, or loopback on the host network.
    let listen = match provider.worker_network().await.unwrap() {
        Some(n) => n.gateway.expect("the workers' network has a gateway"),
        None => IpAddr::from([127, 0, 0, 1]),
    };
    let (listener, addr): (_, SocketAddr) = hodei_core::server::bind(SocketAddr::new(listen, 0))
        .await
        .unwrap();
    let mut config = ControlPlaneConfig::default();
    config.worker_server_address = format!("http://127.0.0.1:{}", addr.port());
    provider
        .check_server_reachable(listen, &config.worker_server_address)
        .await
        .unwrap();
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
    tokio::spawn(hodei_core::server::serve_grpc(
        cp.clone(),
        listener,
        None,
        std::future::pending(),
    ));
    cp
}

async fn registered_workers(cp: &ControlPlane) -> usize {
    cp.stores()
        .workers
        .list()
        .await
        .unwrap()
        .iter()
        .filter(|w| matches!(w.state(), WorkerState::Ready | WorkerState::Busy))
        .count()
}

async fn wait_state(cp: &ControlPlane, id: JobId, want: JobState, poll: Duration) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let s = cp.get_job(id).await.unwrap().state();
        if s == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "job {id}: {s:?}, wanted {want:?}"
        );
        tokio::time::sleep(poll).await;
    }
}

fn job() -> JobSpec {
    JobSpec::new("bench", CommandType::shell("true", Vec::<String>::new())).with_provider("docker")
}

/// Provision → agent registered, `RUNS` times, each on an empty pool.
async fn cold(config: DockerProviderConfig) -> Vec<Duration> {
    let provider = DockerProvider::connect(config).await.unwrap();
    let cp = plane(provider, PoolPolicy::default().max_jobs_per_worker(Some(1))).await;
    let mut samples = Vec::new();
    for _ in 0..=RUNS {
        let t = Instant::now();
        let j = cp.create_job(job(), None).await.unwrap();
        while registered_workers(&cp).await == 0 {
            assert!(
                t.elapsed() < Duration::from_secs(60),
                "no worker registered"
            );
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        samples.push(t.elapsed());
        wait_state(&cp, j.id(), JobState::Succeeded, Duration::from_millis(5)).await;
        cp.retire_all_workers("bench").await;
    }
    samples.remove(0); // warm-up
    cp.shutdown();
    samples
}

/// Dispatch latency to a warm container worker.
async fn warm(config: DockerProviderConfig) -> Vec<Duration> {
    let provider = DockerProvider::connect(config).await.unwrap();
    let cp = plane(provider, PoolPolicy::default().min_idle(1).max_workers(1)).await;
    let t = Instant::now();
    while registered_workers(&cp).await == 0 {
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "warm worker never registered"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let mut samples = Vec::new();
    for _ in 0..=DISPATCHES {
        let t = Instant::now();
        let j = cp.create_job(job(), None).await.unwrap();
        let mut poll = cp.subscribe_job_events();
        // Running or beyond: the job reached the warm worker.
        loop {
            let s = cp.get_job(j.id()).await.unwrap().state();
            if s != JobState::Pending && s != JobState::Scheduled {
                break;
            }
            let _ = tokio::time::timeout(Duration::from_millis(1), poll.recv()).await;
        }
        samples.push(t.elapsed());
        wait_state(&cp, j.id(), JobState::Succeeded, Duration::from_millis(1)).await;
    }
    samples.remove(0);
    cp.retire_all_workers("bench").await;
    cp.shutdown();
    samples
}

fn main() {
    if !docker_ok() {
        require::missing_dependency("Docker daemon not reachable: the docker bench did not run");
        return;
    }
    build_image();
    let config = DockerProviderConfig::from_env()
        .unwrap()
        .with_label("hodei.bench", "docker");
    let image = config.image.clone();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();

    let network = rt.block_on(async {
        DockerProvider::connect(config.clone())
            .await
            .unwrap()
            .worker_network()
            .await
            .unwrap()
    });
    let net_name = config.network_mode.to_string();
    let mut floor = floor(&image, network.as_ref());
    let mut cold = rt.block_on(cold(config.clone()));
    let start_estimate = rt.block_on(async {
        let p = DockerProvider::connect(config.clone()).await.unwrap();
        // Provider-level: create → running, as the provider measures it.
        let mut v = Vec::new();
        for _ in 0..RUNS {
            let spec = hodei_core::WorkerSpec::new(
                hodei_core::WorkerId::new(),
                hodei_core::provider::WorkerProviderIdentity::id(&p),
                "http://127.0.0.1:1",
                "bench",
            );
            let t = Instant::now();
            let h = hodei_core::provider::WorkerLifecycle::create_worker(&p, &spec)
                .await
                .unwrap();
            v.push(t.elapsed());
            hodei_core::provider::WorkerLifecycle::destroy_worker(&p, &h)
                .await
                .unwrap();
        }
        (v, p.estimated_startup_time())
    });
    let mut warm = rt.block_on(warm(config));

    let floor_med = median(&mut floor);
    let cold_med = median(&mut cold);
    let (mut create_running, ema) = start_estimate;
    let create_med = median(&mut create_running);
    println!("docker provider start-up ({RUNS} runs each, network {net_name}, image {image})");
    println!(
        "  floor `docker run --rm --network {net_name} IMAGE true`  median {:8.1} ms",
        ms(floor_med)
    );
    println!(
        "  provider create → container running      median {:8.1} ms  (moving average {:.1} ms)",
        ms(create_med),
        ms(ema)
    );
    println!(
        "  job submitted → agent registered (cold)  median {:8.1} ms  = {:.2}× the floor (target ≤ 1.2×)",
        ms(cold_med),
        cold_med.as_secs_f64() / floor_med.as_secs_f64()
    );
    let p50 = percentile(&mut warm, 0.5);
    let p99 = percentile(&mut warm, 0.99);
    println!(
        "  warm pool (min_idle 1): dispatch latency p50 {:.2} ms, p99 {:.2} ms ({DISPATCHES} jobs)",
        ms(p50),
        ms(p99)
    );
}
