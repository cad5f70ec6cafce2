//! The process provider against real child processes (a fake agent script).
#![allow(clippy::unwrap_used)]

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use futures::StreamExt;
use hodei_core::provider::*;
use hodei_core::*;
use hodei_providers::process::{ProcessProvider, ProcessProviderConfig};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// Writes an executable shell script and returns its path.
fn script(dir: &Path, name: &str, body: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

/// A fake agent: says who it is, whether it got an OTP, then sleeps.
fn fake_agent(dir: &Path) -> PathBuf {
    script(
        dir,
        "fake-agent",
        r#"echo "worker=$HODEI_WORKER_ID"
if [ -n "$HODEI_OTP" ]; then echo "otp=set"; else echo "otp=missing"; fi
echo "server=$HODEI_SERVER extra=$EXTRA spec=$FROM_SPEC"
echo "to-stderr" >&2
exec sleep 300"#,
    )
}

fn spec(provider: &ProcessProvider) -> WorkerSpec {
    let mut s = WorkerSpec::new(
        WorkerId::new(),
        provider.id(),
        "http://127.0.0.1:1",
        "one-time-token",
    );
    s.env.insert("FROM_SPEC".into(), "yes".into());
    s
}

async fn wait_for_logs(p: &ProcessProvider, h: &WorkerHandle, n: usize) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let logs = p.worker_logs(h, None).await.unwrap();
        if logs.len() >= n || Instant::now() > deadline {
            return logs;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn next_event_for(
    events: &mut futures::stream::BoxStream<'static, WorkerEvent>,
    worker: WorkerId,
    want: impl Fn(&WorkerEvent) -> bool,
) -> WorkerEvent {
    tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let e = events.next().await.expect("event stream ended");
            if e.worker_id() == worker && want(&e) {
                return e;
            }
        }
    })
    .await
    .expect("no matching event within 10 s")
}

fn alive(pid: u32) -> bool {
    // Signal 0 checks existence; a zombie is reaped by the provider's waiter.
    kill(Pid::from_raw(pid as i32), None).is_ok()
        && !std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .is_ok_and(|s| s.split_whitespace().nth(2) == Some("Z"))
}

#[tokio::test]
async fn create_reports_status_logs_and_destroy_stops_the_process() {
    let dir = tempfile::tempdir().unwrap();
    let p = ProcessProvider::new(
        ProcessProviderConfig::default()
            .with_agent_binary(fake_agent(dir.path()))
            .with_env("EXTRA", "x1"),
    );
    let mut events = p.events();
    let s = spec(&p);
    let h = p.create_worker(&s).await.unwrap();
    let pid: u32 = h.external_id.parse().unwrap();
    assert_eq!(p.pid(s.worker_id), Some(pid));
    assert!(alive(pid));
    assert_eq!(p.get_worker_status(&h).await.unwrap(), WorkerState::Ready);
    assert_eq!(p.live_workers(), 1);

    let logs = wait_for_logs(&p, &h, 4).await;
    assert!(
        logs.contains(&format!("worker={}", s.worker_id)),
        "{logs:?}"
    );
    assert!(logs.contains(&"otp=set".to_owned()), "{logs:?}");
    assert!(
        logs.contains(&"server=http://127.0.0.1:1 extra=x1 spec=yes".to_owned()),
        "{logs:?}"
    );
    assert!(logs.contains(&"to-stderr".to_owned()), "{logs:?}");
    // The OTP itself never appears in the handle.
    assert!(!format!("{h:?}").contains("one-time-token"));

    let usage = p.worker_metrics(&h).await.unwrap();
    assert!(usage.memory_bytes > 0, "{usage:?}");

    let started = Instant::now();
    p.destroy_worker(&h).await.unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "SIGTERM should stop it at once"
    );
    assert!(!alive(pid));
    assert_eq!(
        p.get_worker_status(&h).await.unwrap(),
        WorkerState::Terminated
    );
    next_event_for(&mut events, s.worker_id, |e| {
        matches!(e, WorkerEvent::Destroyed { .. })
    })
    .await;
    assert_eq!(p.live_workers(), 0);
    // Idempotent, and unknown handles are a no-op.
    p.destroy_worker(&h).await.unwrap();
    let unknown = WorkerHandle::new(WorkerId::new(), p.id(), "999999");
    p.destroy_worker(&unknown).await.unwrap();
    assert!(matches!(
        p.get_worker_status(&unknown).await,
        Err(ProviderError::WorkerNotFound(_))
    ));
}

#[tokio::test]
async fn kill_9_from_outside_emits_exited() {
    let dir = tempfile::tempdir().unwrap();
    let p = ProcessProvider::new(
        ProcessProviderConfig::default().with_agent_binary(fake_agent(dir.path())),
    );
    let mut events = p.events();
    let s = spec(&p);
    let h = p.create_worker(&s).await.unwrap();
    next_event_for(&mut events, s.worker_id, |e| {
        matches!(e, WorkerEvent::Started { .. })
    })
    .await;
    // Let it print first, so its logs outlive it.
    wait_for_logs(&p, &h, 4).await;
    let pid: u32 = h.external_id.parse().unwrap();
    kill(Pid::from_raw(pid as i32), Signal::SIGKILL).unwrap();
    let e = next_event_for(&mut events, s.worker_id, |e| {
        matches!(e, WorkerEvent::Exited { .. })
    })
    .await;
    let WorkerEvent::Exited {
        exit_code, reason, ..
    } = e
    else {
        unreachable!()
    };
    assert_eq!(exit_code, None);
    assert!(reason.contains("SIGKILL"), "{reason}");
    assert_eq!(
        p.get_worker_status(&h).await.unwrap(),
        WorkerState::Terminated
    );
    assert_eq!(p.live_workers(), 0);
    // Logs stay readable after the exit.
    assert!(!p.worker_logs(&h, None).await.unwrap().is_empty());
    p.destroy_worker(&h).await.unwrap();
}

#[tokio::test]
async fn an_agent_that_exits_with_a_code_reports_it() {
    let dir = tempfile::tempdir().unwrap();
    let bin = script(dir.path(), "failing-agent", "echo bye; exit 7");
    let p = ProcessProvider::new(ProcessProviderConfig::default().with_agent_binary(bin));
    let mut events = p.events();
    let s = spec(&p);
    let h = p.create_worker(&s).await.unwrap();
    let e = next_event_for(&mut events, s.worker_id, |e| {
        matches!(e, WorkerEvent::Exited { .. })
    })
    .await;
    assert!(
        matches!(&e, WorkerEvent::Exited { exit_code: Some(7), reason, .. } if reason.contains('7')),
        "{e:?}"
    );
    assert_eq!(p.exit_status(s.worker_id).unwrap().code(), Some(7));
    assert_eq!(wait_for_logs(&p, &h, 1).await, vec!["bye".to_owned()]);
}

#[tokio::test]
async fn a_worker_ignoring_sigterm_is_killed_after_the_grace() {
    let dir = tempfile::tempdir().unwrap();
    let bin = script(
        dir.path(),
        "stubborn-agent",
        "trap '' TERM\necho ready\nexec sleep 300",
    );
    let p = ProcessProvider::new(
        ProcessProviderConfig::default()
            .with_agent_binary(bin)
            .with_destroy_grace(Duration::from_millis(300)),
    );
    let s = spec(&p);
    let h = p.create_worker(&s).await.unwrap();
    // Wait until the trap is installed.
    wait_for_logs(&p, &h, 1).await;
    let pid: u32 = h.external_id.parse().unwrap();
    let started = Instant::now();
    p.destroy_worker(&h).await.unwrap();
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert!(!alive(pid));
    assert_eq!(
        p.exit_status(s.worker_id).unwrap().signal_or_none(),
        Some(9)
    );
}

trait SignalOrNone {
    fn signal_or_none(&self) -> Option<i32>;
}
impl SignalOrNone for std::process::ExitStatus {
    fn signal_or_none(&self) -> Option<i32> {
        std::os::unix::process::ExitStatusExt::signal(self)
    }
}

#[tokio::test]
async fn log_tail_and_ring_buffer_bound() {
    let dir = tempfile::tempdir().unwrap();
    let bin = script(
        dir.path(),
        "chatty-agent",
        "i=1; while [ $i -le 20 ]; do echo line$i; i=$((i+1)); done; exec sleep 300",
    );
    let p = ProcessProvider::new(
        ProcessProviderConfig::default()
            .with_agent_binary(bin)
            .with_log_lines_kept(5),
    );
    let h = p.create_worker(&spec(&p)).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while p.worker_logs(&h, None).await.unwrap().last() != Some(&"line20".to_owned()) {
        assert!(Instant::now() < deadline, "no line20");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        p.worker_logs(&h, None).await.unwrap(),
        ["line16", "line17", "line18", "line19", "line20"]
    );
    assert_eq!(
        p.worker_logs(&h, Some(2)).await.unwrap(),
        ["line19", "line20"]
    );
    p.destroy_worker(&h).await.unwrap();
}

#[tokio::test]
async fn max_workers_is_enforced() {
    let dir = tempfile::tempdir().unwrap();
    let p = ProcessProvider::new(
        ProcessProviderConfig::default()
            .with_agent_binary(fake_agent(dir.path()))
            .with_max_workers(2),
    );
    let a = p.create_worker(&spec(&p)).await.unwrap();
    let b = p.create_worker(&spec(&p)).await.unwrap();
    let err = p.create_worker(&spec(&p)).await.unwrap_err();
    assert!(matches!(err, ProviderError::ResourceExhausted(_)), "{err}");
    assert!(err.is_retryable());
    p.destroy_worker(&a).await.unwrap();
    let c = p.create_worker(&spec(&p)).await.unwrap();
    p.destroy_worker(&b).await.unwrap();
    p.destroy_worker(&c).await.unwrap();
}

#[tokio::test]
async fn a_missing_binary_is_invalid_config_and_unhealthy() {
    let p = ProcessProvider::new(
        ProcessProviderConfig::default().with_agent_binary("/nonexistent/hodei-worker"),
    );
    let err = p.create_worker(&spec(&p)).await.unwrap_err();
    let ProviderError::InvalidConfig(msg) = &err else {
        panic!("{err:?}")
    };
    assert!(
        msg.contains("cargo build -p hodei-examples --bin hodei-worker"),
        "{msg}"
    );
    assert!(msg.contains("HODEI_WORKER_BINARY"), "{msg}");
    assert!(!err.is_retryable());
    let health = p.health_check().await.unwrap();
    assert!(!health.healthy);
    assert!(health.message.contains("/nonexistent/hodei-worker"));
    assert_eq!(p.live_workers(), 0);
}

#[tokio::test]
async fn identity_cost_eligibility_and_health() {
    let dir = tempfile::tempdir().unwrap();
    let p = ProcessProvider::new(
        ProcessProviderConfig::default().with_agent_binary(fake_agent(dir.path())),
    );
    assert_eq!(p.name(), "process");
    assert_eq!(p.provider_type(), ProviderType::BareMetal);
    let h = p.health_check().await.unwrap();
    assert!(h.healthy, "{h:?}");
    let job = JobSpec::new("j", CommandType::shell("true", Vec::<String>::new()));
    assert_eq!(p.job_cost(&job).per_hour, 0.0);
    assert!(p.job_eligibility(&job).is_eligible());
    // Images are ignored, not refused.
    let mut with_image = job.clone();
    with_image.image = Some("alpine:3".into());
    assert!(p.job_eligibility(&with_image).is_eligible());
    let mut gpu = job.clone();
    gpu.resources.gpu_required = true;
    assert!(!p.job_eligibility(&gpu).is_eligible());
    let mut huge = job;
    huge.resources.cpu_cores = 100_000.0;
    assert!(!p.job_eligibility(&huge).is_eligible());
}

#[tokio::test]
async fn works_as_a_worker_provider_trait_object() {
    let dir = tempfile::tempdir().unwrap();
    let p: std::sync::Arc<dyn WorkerProvider> = std::sync::Arc::new(ProcessProvider::new(
        ProcessProviderConfig::default().with_agent_binary(fake_agent(dir.path())),
    ));
    let s = WorkerSpec::new(WorkerId::new(), p.id(), "http://127.0.0.1:1", "otp-value");
    let h = p.create_worker(&s).await.unwrap();
    assert_eq!(h.worker_id, s.worker_id);
    assert_eq!(h.provider_id, p.id());
    p.destroy_worker(&h).await.unwrap();
    assert_eq!(
        p.get_worker_status(&h).await.unwrap(),
        WorkerState::Terminated
    );
}

#[tokio::test]
async fn passes_the_provider_conformance_kit() {
    use hodei_core::testing::provider::{ConformanceOptions, provider_conformance};
    let dir = tempfile::tempdir().unwrap();
    let provider = std::sync::Arc::new(ProcessProvider::new(
        ProcessProviderConfig::default().with_agent_binary(fake_agent(dir.path())),
    ));
    let id = provider.id();
    let p: std::sync::Arc<dyn WorkerProvider> = provider.clone();
    let report = provider_conformance(
        p,
        move || WorkerSpec::new(WorkerId::new(), id, "http://127.0.0.1:1", "conformance-otp"),
        ConformanceOptions::default()
            .with_ready_timeout(Duration::from_secs(10))
            .with_terminate_timeout(Duration::from_secs(15)),
    )
    .await
    .unwrap_or_else(|f| panic!("process provider fails the kit: {f}"));
    assert_eq!(report.running_state, WorkerState::Ready);
    assert!(report.metrics.is_ok(), "{:?}", report.metrics);
    assert!(
        report.log_lines.is_some(),
        "the process provider offers logs"
    );
    assert!(
        report
            .events
            .iter()
            .any(|e| matches!(e, WorkerEvent::Destroyed { .. })),
        "{:?}",
        report.events
    );
    let pid: u32 = report.handle.external_id.parse().unwrap();
    assert!(!alive(pid), "the kit's worker must be gone");
    assert_eq!(provider.live_workers(), 0);
}

/// The control plane tells an ephemeral worker (one job per worker) its job's
/// timeout in whole seconds, rounded up, so a provider can bound the worker's
/// life by it (Kubernetes: `activeDeadlineSeconds`); a pooled worker, which
/// outlives its first job, is told nothing. The real control plane provisions
/// through the real process provider; the fake agent records its environment.
#[tokio::test]
async fn an_ephemeral_worker_is_told_its_jobs_timeout() {
    use hodei_core::control::{ControlPlane, PoolPolicy};
    for (ephemeral, want) in [(true, Some("3")), (false, None)] {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("agent.env");
        let agent = script(
            dir.path(),
            "env-agent",
            &format!(
                "env > '{}.tmp' && mv '{0}.tmp' '{0}'\nexec sleep 300",
                out.display()
            ),
        );
        let provider = ProcessProvider::new(
            ProcessProviderConfig::default()
                .with_agent_binary(agent)
                .with_destroy_grace(Duration::from_millis(100)),
        );
        let cp = ControlPlane::builder().build();
        cp.register_provider(
            std::sync::Arc::new(provider),
            ProviderConfig::Custom {
                settings: Default::default(),
            },
            PoolPolicy::default().max_jobs_per_worker(ephemeral.then_some(1)),
        )
        .await
        .unwrap();
        tokio::spawn(cp.clone().run());
        let spec = JobSpec::new("timed", CommandType::shell("true", Vec::<String>::new()))
            .with_timeout_ms(2_500);
        cp.create_job(spec, None).await.unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        while !out.exists() {
            assert!(Instant::now() < deadline, "no worker was started");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let env = std::fs::read_to_string(&out).unwrap();
        let got = env
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{WORKER_ENV_JOB_TIMEOUT_SECS}=")));
        assert_eq!(got, want, "ephemeral={ephemeral}:\n{env}");
        tokio::time::timeout(Duration::from_secs(10), cp.retire_all_workers("test done"))
            .await
            .unwrap();
        cp.shutdown();
    }
}

/// A worker that dies before registering (a guest that cannot boot, a
/// container that exits, a pod that cannot start) ends its provisioning at
/// once, with the provider's reason, instead of after the registration
/// timeout; its job goes back to the queue.
#[tokio::test]
async fn a_worker_dying_before_it_registers_ends_provisioning_at_once() {
    use hodei_core::control::{ControlPlane, ControlPlaneConfig, PoolPolicy};
    let dir = tempfile::tempdir().unwrap();
    let agent = script(dir.path(), "dying-agent", "echo 'cannot boot'\nexit 3");
    let provider = ProcessProvider::new(ProcessProviderConfig::default().with_agent_binary(agent));
    let mut config = ControlPlaneConfig::default();
    config.registration_timeout = Duration::from_secs(120);
    let cp = ControlPlane::builder().config(config).build();
    cp.register_provider(
        std::sync::Arc::new(provider),
        ProviderConfig::Custom {
            settings: Default::default(),
        },
        PoolPolicy::default().max_jobs_per_worker(Some(1)),
    )
    .await
    .unwrap();
    tokio::spawn(cp.clone().run());
    let started = Instant::now();
    let job = cp
        .create_job(
            JobSpec::new("doomed", CommandType::shell("true", Vec::<String>::new())),
            None,
        )
        .await
        .unwrap();
    let error = loop {
        let p = cp.get_provider("process").await.unwrap();
        if let Some(e) = p.last_error().filter(|e| e.contains("before registering")) {
            break e.to_owned();
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "provisioning still waits for a dead worker after {:?}",
            started.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    eprintln!("provisioning ended after {:?}: {error}", started.elapsed());
    assert!(error.contains("code Some(3)"), "{error}");
    // Not run, not lost: back in the queue for another worker.
    let j = cp.get_job(job.id()).await.unwrap();
    assert!(!j.state().is_terminal(), "{:?}", j.state());
    assert_eq!(j.worker_id(), None);
    cp.shutdown();
}

/// What a `kill -9` of the server leaves: worker processes that the new
/// server process did not start. The provider (same id, new instance) destroys
/// the ones its registry still knows through their handle, and stops the ones
/// the registry does not know as orphans; young ones are left alone.
#[tokio::test]
async fn worker_processes_left_by_a_previous_server_are_destroyed_or_reaped() {
    let dir = tempfile::tempdir().unwrap();
    let config = ProcessProviderConfig::default()
        .with_agent_binary(fake_agent(dir.path()))
        .with_destroy_grace(Duration::from_millis(500));
    let before = ProcessProvider::new(config.clone());
    let known = before.create_worker(&spec(&before)).await.unwrap();
    let orphan = before.create_worker(&spec(&before)).await.unwrap();
    let pid = |h: &WorkerHandle| h.metadata["pid"].parse::<u32>().unwrap();
    wait_for_logs(&before, &known, 1).await;
    wait_for_logs(&before, &orphan, 1).await;

    // The "restarted server": the same provider id, none of the children.
    let after = ProcessProvider::with_id(
        before.id(),
        config
            .clone()
            .with_orphan_min_age(Duration::from_secs(3600)),
    );
    let registry: std::collections::HashSet<WorkerId> = [known.worker_id].into();
    assert!(
        after.cleanup_orphans(&registry).await.unwrap().is_empty(),
        "a young process is never taken for an orphan"
    );
    assert!(alive(pid(&orphan)));

    let after = ProcessProvider::with_id(before.id(), config.with_orphan_min_age(Duration::ZERO));
    let stopped = after.cleanup_orphans(&registry).await.unwrap();
    assert_eq!(stopped.len(), 1, "only the unknown worker: {stopped:?}");
    assert!(
        stopped[0].contains(&orphan.worker_id.to_string()),
        "{stopped:?}"
    );
    assert!(alive(pid(&known)), "a worker the registry knows is kept");
    let deadline = Instant::now() + Duration::from_secs(5);
    while alive(pid(&orphan)) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(!alive(pid(&orphan)), "the orphan is stopped");

    // The known worker is destroyed through its handle, though not a child.
    after.destroy_worker(&known).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while alive(pid(&known)) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(!alive(pid(&known)), "destroyed through its handle");
    // A handle whose pid is now another process (or none) is a no-op.
    after.destroy_worker(&known).await.unwrap();
}
