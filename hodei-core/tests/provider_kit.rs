//! The provider conformance kit against a tiny provider whose workers are real
//! `sleep` processes, and against broken variants of it that the kit must reject.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use futures::stream::{self, BoxStream, StreamExt};
use hodei_core::provider::{
    CostEstimate, Eligibility, HealthStatus, ResourceUsage, WorkerCost, WorkerEligibility,
    WorkerEvent, WorkerEventSource, WorkerHealth, WorkerLifecycle, WorkerLogs, WorkerMetrics,
    WorkerProviderIdentity,
};
use hodei_core::testing::provider::{ConformanceOptions, provider_conformance};
use hodei_core::{
    JobSpec, ProviderCapabilities, ProviderError, ProviderId, ProviderType, WorkerHandle, WorkerId,
    WorkerSpec, WorkerState,
};
use tokio::process::{Child, Command};
use tokio::sync::broadcast;

/// How the test provider misbehaves, if at all.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Flaw {
    None,
    /// `destroy_worker` returns Ok but leaves the process running.
    DestroyLeaks,
    /// Destroying an unknown handle is an error.
    UnknownDestroyFails,
    /// Eligibility ignores the capabilities.
    EverythingEligible,
    /// No events at all.
    Silent,
    /// Not a flaw: offers none of the optional traits (no cost, own
    /// eligibility, logs or metrics). The kit must pass it.
    RequiredOnly,
}

struct SleepProvider {
    id: ProviderId,
    flaw: Flaw,
    children: Mutex<HashMap<WorkerId, Child>>,
    /// Pids of every worker it started, to check they are gone afterwards.
    pids: Mutex<Vec<u32>>,
    events: broadcast::Sender<WorkerEvent>,
}

impl SleepProvider {
    fn new(flaw: Flaw) -> Self {
        Self {
            id: ProviderId::new(),
            flaw,
            children: Mutex::new(HashMap::new()),
            pids: Mutex::new(Vec::new()),
            events: broadcast::channel(64).0,
        }
    }

    fn offers_optional(&self) -> bool {
        self.flaw != Flaw::RequiredOnly
    }

    fn emit(&self, e: WorkerEvent) {
        if self.flaw != Flaw::Silent {
            let _ = self.events.send(e);
        }
    }

    fn kill_all(&self) {
        for (_, mut c) in self
            .children
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .drain()
        {
            let _ = c.start_kill();
        }
    }
}

#[async_trait]
impl WorkerLifecycle for SleepProvider {
    async fn create_worker(&self, spec: &WorkerSpec) -> Result<WorkerHandle, ProviderError> {
        let child = Command::new("sleep")
            .arg("300")
            .envs(spec.agent_env())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| ProviderError::Internal(e.to_string()))?;
        let pid = child.id().unwrap_or_default();
        self.pids
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(pid);
        self.children
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(spec.worker_id, child);
        self.emit(WorkerEvent::Created {
            worker_id: spec.worker_id,
        });
        self.emit(WorkerEvent::Started {
            worker_id: spec.worker_id,
        });
        Ok(WorkerHandle::new(spec.worker_id, self.id, pid.to_string()))
    }

    async fn get_worker_status(&self, h: &WorkerHandle) -> Result<WorkerState, ProviderError> {
        let mut children = self.children.lock().unwrap_or_else(PoisonError::into_inner);
        match children.get_mut(&h.worker_id) {
            None => Ok(WorkerState::Terminated),
            Some(c) => match c.try_wait() {
                Ok(Some(_)) => Ok(WorkerState::Terminated),
                // The process runs; no agent inside, so it never registers.
                Ok(None) => Ok(WorkerState::Connecting),
                Err(e) => Err(ProviderError::Internal(e.to_string())),
            },
        }
    }

    async fn destroy_worker(&self, h: &WorkerHandle) -> Result<(), ProviderError> {
        if self.flaw == Flaw::DestroyLeaks {
            return Ok(());
        }
        let child = self
            .children
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&h.worker_id);
        match child {
            Some(mut c) => {
                c.kill()
                    .await
                    .map_err(|e| ProviderError::Internal(e.to_string()))?;
                self.emit(WorkerEvent::Destroyed {
                    worker_id: h.worker_id,
                });
                Ok(())
            }
            None if self.flaw == Flaw::UnknownDestroyFails
                && h.external_id.starts_with("hodei-conformance") =>
            {
                Err(ProviderError::WorkerNotFound(h.worker_id))
            }
            None => Ok(()),
        }
    }
}

#[async_trait]
impl WorkerHealth for SleepProvider {
    async fn health_check(&self) -> Result<HealthStatus, ProviderError> {
        let ok = Command::new("sleep")
            .arg("0")
            .status()
            .await
            .map_err(|e| ProviderError::Unavailable(e.to_string()))?;
        Ok(HealthStatus::healthy(format!("sleep 0: {ok}")))
    }
}

#[async_trait]
impl WorkerLogs for SleepProvider {
    async fn get_worker_logs(
        &self,
        h: &WorkerHandle,
        tail: Option<usize>,
    ) -> Result<Vec<String>, ProviderError> {
        let lines: Vec<String> = (0..20)
            .map(|i| format!("{} line {i}", h.external_id))
            .collect();
        let n = tail.unwrap_or(lines.len()).min(lines.len());
        Ok(lines[lines.len() - n..].to_vec())
    }
}

impl WorkerCost for SleepProvider {
    fn estimate_cost(&self, _s: &JobSpec) -> CostEstimate {
        CostEstimate::free()
    }
    fn estimated_startup_time(&self) -> Duration {
        Duration::from_millis(5)
    }
}

impl WorkerEligibility for SleepProvider {
    fn check_eligibility(&self, spec: &JobSpec) -> Eligibility {
        if self.flaw == Flaw::EverythingEligible {
            return Eligibility::Eligible;
        }
        Eligibility::from_capabilities(&self.capabilities(), spec)
    }
}

#[async_trait]
impl WorkerMetrics for SleepProvider {
    async fn get_worker_metrics(&self, h: &WorkerHandle) -> Result<ResourceUsage, ProviderError> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", h.external_id))
            .map_err(|_| ProviderError::WorkerNotFound(h.worker_id))?;
        let mut usage = ResourceUsage::default();
        if let Some(kb) = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        {
            usage.memory_bytes = kb * 1024;
        }
        Ok(usage)
    }
}

impl WorkerEventSource for SleepProvider {
    fn events(&self) -> BoxStream<'static, WorkerEvent> {
        let rx = self.events.subscribe();
        stream::unfold(rx, |mut rx| async move {
            loop {
                match rx.recv().await {
                    Ok(e) => return Some((e, rx)),
                    Err(broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(broadcast::error::RecvError::Closed) => return None,
                }
            }
        })
        .boxed()
    }
}

impl WorkerProviderIdentity for SleepProvider {
    fn id(&self) -> ProviderId {
        self.id
    }
    fn name(&self) -> &str {
        "sleep"
    }
    fn provider_type(&self) -> ProviderType {
        ProviderType::Custom
    }
    fn capabilities(&self) -> ProviderCapabilities {
        let mut caps = ProviderCapabilities::default();
        caps.max_cpu_cores = 2.0;
        caps.max_memory_mb = 1024;
        caps
    }
    fn cost(&self) -> Option<&dyn WorkerCost> {
        self.offers_optional().then_some(self)
    }
    fn eligibility(&self) -> Option<&dyn WorkerEligibility> {
        self.offers_optional().then_some(self)
    }
    fn logs(&self) -> Option<&dyn WorkerLogs> {
        self.offers_optional().then_some(self)
    }
    fn metrics(&self) -> Option<&dyn WorkerMetrics> {
        self.offers_optional().then_some(self)
    }
}

fn fast() -> ConformanceOptions {
    ConformanceOptions::default()
        .with_ready_timeout(Duration::from_secs(10))
        .with_terminate_timeout(Duration::from_secs(2))
        .with_event_timeout(Duration::from_secs(2))
        .with_poll_interval(Duration::from_millis(20))
}

fn spec_for(p: &SleepProvider) -> impl Fn() -> WorkerSpec + use<> {
    let id = p.id;
    move || {
        WorkerSpec::new(
            WorkerId::new(),
            id,
            "http://127.0.0.1:1",
            "otp-token-for-test",
        )
    }
}

fn alive(pid: u32) -> bool {
    // A reaped process has no /proc entry; a zombie counts as dead.
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| !s.contains(") Z "))
        .unwrap_or(false)
}

#[tokio::test]
async fn a_correct_process_provider_passes() {
    let p = Arc::new(SleepProvider::new(Flaw::None));
    let report = provider_conformance(p.clone(), spec_for(&p), fast())
        .await
        .expect("the sleep provider conforms");
    assert_eq!(report.running_state, WorkerState::Connecting);
    assert_eq!(report.log_lines.as_ref().map(Vec::len), Some(10));
    assert!(
        report.metrics.is_ok(),
        "metrics of a live process: {:?}",
        report.metrics
    );
    assert!(report.health.healthy);
    assert!(
        report
            .events
            .iter()
            .any(|e| matches!(e, WorkerEvent::Destroyed { .. }))
    );
    let pids = p
        .pids
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .clone();
    assert_eq!(pids.len(), 1, "one real worker process was started");
    assert!(!alive(pids[0]), "the worker process {} is gone", pids[0]);
}

#[tokio::test]
async fn a_provider_with_only_the_required_traits_passes() {
    let p = Arc::new(SleepProvider::new(Flaw::RequiredOnly));
    let report = provider_conformance(p.clone(), spec_for(&p), fast())
        .await
        .expect("optional traits are optional");
    assert_eq!(report.log_lines, None, "no logs offered");
    let metrics = report.metrics.expect_err("no metrics offered");
    assert!(
        metrics.contains("does not offer worker metrics"),
        "{metrics}"
    );
    let pids = p
        .pids
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .clone();
    assert!(!alive(pids[0]), "the worker process is gone");
}

#[tokio::test]
async fn a_destroy_that_leaks_the_process_fails_at_terminated() {
    let p = Arc::new(SleepProvider::new(Flaw::DestroyLeaks));
    let err = provider_conformance(p.clone(), spec_for(&p), fast())
        .await
        .expect_err("a leaking destroy must fail");
    assert_eq!(err.step, "terminated", "{err}");
    let pids = p
        .pids
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .clone();
    assert!(alive(pids[0]), "the leaked process is still running");
    p.kill_all();
}

#[tokio::test]
async fn destroy_of_unknown_worker_must_be_a_no_op() {
    let p = Arc::new(SleepProvider::new(Flaw::UnknownDestroyFails));
    let err = provider_conformance(p.clone(), spec_for(&p), fast())
        .await
        .expect_err("must fail");
    assert_eq!(err.step, "destroy-unknown", "{err}");
}

#[tokio::test]
async fn eligibility_must_follow_capabilities() {
    let p = Arc::new(SleepProvider::new(Flaw::EverythingEligible));
    let err = provider_conformance(p.clone(), spec_for(&p), fast())
        .await
        .expect_err("must fail");
    assert_eq!(err.step, "eligibility", "{err}");
    assert!(err.message.contains("cpu"), "{err}");
}

#[tokio::test]
async fn missing_events_are_reported() {
    let p = Arc::new(SleepProvider::new(Flaw::Silent));
    let err = provider_conformance(p.clone(), spec_for(&p), fast())
        .await
        .expect_err("must fail");
    assert_eq!(err.step, "events", "{err}");
    let pids = p
        .pids
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .clone();
    assert!(!alive(pids[0]), "the worker was still destroyed");
}

#[test]
fn sleep_binary_exists() {
    assert!(
        Path::new("/bin/sleep").exists() || Path::new("/usr/bin/sleep").exists(),
        "these tests need a real `sleep` binary"
    );
}
