//! The provider conformance kit: what every [`WorkerProvider`] must do with a
//! real worker.
//!
//! [`provider_conformance`] drives one worker through its whole life and
//! checks the provider's answers at every step:
//!
//! 1. subscribes to [`WorkerEventSource::events`](crate::provider::WorkerEventSource::events) first;
//! 2. `health_check` returns `Ok` and healthy;
//! 3. `create_worker` returns a handle for the spec's worker id and this provider;
//! 4. `get_worker_status` reaches a running state (`Connecting`, `Ready` or
//!    `Busy`) within [`ConformanceOptions::ready_timeout`], never `Terminated` first;
//! 5. `worker_logs(Some(10))` returns `Ok` with at most 10 lines, or
//!    [`ProviderError::Unsupported`] when the provider offers no logs (logs
//!    are optional);
//! 6. `destroy_worker` returns `Ok`, then the status becomes `Terminated` (or
//!    the provider answers [`ProviderError::WorkerNotFound`]) within
//!    [`ConformanceOptions::terminate_timeout`];
//! 7. destroying the same worker again is `Ok` (idempotent), and so is
//!    destroying a handle the provider never created (a documented no-op);
//! 8. `job_eligibility` agrees with `capabilities()`: a spec asking more CPU
//!    (or memory) than the capabilities offer is ineligible, a small spec is eligible;
//! 9. a `Created` or `Started` event and an `Exited` or `Destroyed` event for
//!    the worker arrive within [`ConformanceOptions::event_timeout`].
//!
//! It returns a [`ConformanceReport`] on success and a [`ConformanceFailure`]
//! naming the failed step otherwise; it never panics. On failure after the
//! worker was created it still tries to destroy the worker.
//!
//! It needs a tokio runtime (it spawns a task to collect events).

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;

use crate::domain::error::ProviderError;
use crate::domain::ids::WorkerId;
use crate::domain::spec::{CommandType, JobSpec};
use crate::domain::worker::{WorkerHandle, WorkerSpec, WorkerState};
use crate::provider::{HealthStatus, ResourceUsage, WorkerEvent, WorkerProvider};

/// Timeouts of the kit.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ConformanceOptions {
    /// How long a created worker may take to reach a running state.
    pub ready_timeout: Duration,
    /// How long a destroyed worker may take to be reported `Terminated`.
    pub terminate_timeout: Duration,
    /// How long to wait for the expected events after destroy.
    pub event_timeout: Duration,
    /// Interval between status polls.
    pub poll_interval: Duration,
}

impl Default for ConformanceOptions {
    /// 60 s to start (image pulls, pods), 30 s to terminate, 10 s for events, 100 ms polls.
    fn default() -> Self {
        Self {
            ready_timeout: Duration::from_secs(60),
            terminate_timeout: Duration::from_secs(30),
            event_timeout: Duration::from_secs(10),
            poll_interval: Duration::from_millis(100),
        }
    }
}

impl ConformanceOptions {
    /// Sets the ready timeout.
    #[must_use]
    pub fn with_ready_timeout(mut self, d: Duration) -> Self {
        self.ready_timeout = d;
        self
    }
    /// Sets the terminate timeout.
    #[must_use]
    pub fn with_terminate_timeout(mut self, d: Duration) -> Self {
        self.terminate_timeout = d;
        self
    }
    /// Sets the event timeout.
    #[must_use]
    pub fn with_event_timeout(mut self, d: Duration) -> Self {
        self.event_timeout = d;
        self
    }
    /// Sets the poll interval.
    #[must_use]
    pub fn with_poll_interval(mut self, d: Duration) -> Self {
        self.poll_interval = d;
        self
    }
}

/// What the kit observed on a passing run.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct ConformanceReport {
    /// The worker it created.
    pub worker_id: WorkerId,
    /// The provider's handle for it.
    pub handle: WorkerHandle,
    /// The health check's answer.
    pub health: HealthStatus,
    /// Distinct states polled before it ran, in order.
    pub states_before_running: Vec<WorkerState>,
    /// The first running state seen.
    pub running_state: WorkerState,
    /// From create to a running state.
    pub time_to_running: Duration,
    /// From destroy to `Terminated`/not found.
    pub time_to_terminated: Duration,
    /// Lines `worker_logs(Some(10))` returned; `None` when the provider
    /// offers no logs.
    pub log_lines: Option<Vec<String>>,
    /// `worker_metrics` while it ran, or the error's text (metrics are optional).
    pub metrics: Result<ResourceUsage, String>,
    /// Events seen for the worker, in order.
    pub events: Vec<WorkerEvent>,
}

/// The step that failed and why.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("provider conformance failed at {step}: {message}")]
#[non_exhaustive]
pub struct ConformanceFailure {
    /// `health`, `create`, `running`, `logs`, `destroy`, `terminated`,
    /// `destroy-again`, `destroy-unknown`, `eligibility` or `events`.
    pub step: &'static str,
    /// What differed.
    pub message: String,
}

fn fail<T>(step: &'static str, message: impl Into<String>) -> Result<T, ConformanceFailure> {
    Err(ConformanceFailure {
        step,
        message: message.into(),
    })
}

fn is_running(s: WorkerState) -> bool {
    matches!(
        s,
        WorkerState::Connecting | WorkerState::Ready | WorkerState::Busy
    )
}

/// A spec for the eligibility checks.
fn probe_spec(cpu: f64, memory_mb: u64) -> JobSpec {
    let mut spec = JobSpec::new("conformance-probe", CommandType::shell("true", [""; 0]));
    spec.resources.cpu_cores = cpu;
    spec.resources.memory_mb = memory_mb;
    spec.resources.gpu_required = false;
    spec.resources.architecture = None;
    spec
}

/// Runs the whole kit (see the module docs) against `provider`, creating one
/// worker from `spec_factory()`.
pub async fn provider_conformance(
    provider: Arc<dyn WorkerProvider>,
    spec_factory: impl Fn() -> WorkerSpec,
    opts: ConformanceOptions,
) -> Result<ConformanceReport, ConformanceFailure> {
    // 1. Events first, collected by a task so a provider with a bounded
    //    channel is never blocked by the kit.
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let mut events = provider.events();
    let collector = tokio::spawn(async move {
        while let Some(e) = events.next().await {
            if tx.send(e).is_err() {
                break;
            }
        }
    });

    let result = run(&provider, spec_factory, &opts, &mut rx).await;
    collector.abort();
    result
}

async fn run(
    provider: &Arc<dyn WorkerProvider>,
    spec_factory: impl Fn() -> WorkerSpec,
    opts: &ConformanceOptions,
    rx: &mut tokio::sync::mpsc::UnboundedReceiver<WorkerEvent>,
) -> Result<ConformanceReport, ConformanceFailure> {
    // 2. Health.
    let health = match provider.health_check().await {
        Ok(h) if h.healthy => h,
        Ok(h) => {
            return fail(
                "health",
                format!("provider reports unhealthy: {}", h.message),
            );
        }
        Err(e) => return fail("health", format!("health_check failed: {e}")),
    };

    // 3. Create.
    let spec = spec_factory();
    let worker_id = spec.worker_id;
    let created_at = Instant::now();
    let handle = match provider.create_worker(&spec).await {
        Ok(h) => h,
        Err(e) => return fail("create", format!("create_worker failed: {e}")),
    };

    if handle.worker_id != worker_id {
        let _ = provider.destroy_worker(&handle).await;
        return fail(
            "create",
            format!(
                "handle names worker {}, the spec asked for {worker_id}",
                handle.worker_id
            ),
        );
    }
    if handle.provider_id != provider.id() {
        let _ = provider.destroy_worker(&handle).await;
        return fail(
            "create",
            format!(
                "handle names provider {}, the provider's id is {}",
                handle.provider_id,
                provider.id()
            ),
        );
    }

    let outcome = with_worker(provider, &handle, opts, created_at).await;
    let (states_before_running, running_state, time_to_running, log_lines, metrics) = match outcome
    {
        Ok(v) => v,
        Err(f) => {
            // Best effort: leave nothing behind.
            let _ = provider.destroy_worker(&handle).await;
            return Err(f);
        }
    };
    // 6. Destroy, then terminated.
    if let Err(e) = provider.destroy_worker(&handle).await {
        return fail("destroy", format!("destroy_worker failed: {e}"));
    }
    let destroyed_at = Instant::now();
    loop {
        match provider.get_worker_status(&handle).await {
            Ok(WorkerState::Terminated) | Err(ProviderError::WorkerNotFound(_)) => break,
            Ok(s) if destroyed_at.elapsed() >= opts.terminate_timeout => {
                return fail(
                    "terminated",
                    format!(
                        "still {s} {:?} after destroy_worker returned",
                        opts.terminate_timeout
                    ),
                );
            }
            Ok(_) => {}
            Err(e) => {
                return fail(
                    "terminated",
                    format!(
                        "get_worker_status after destroy failed: {e} (expected Terminated or WorkerNotFound)"
                    ),
                );
            }
        }
        tokio::time::sleep(opts.poll_interval).await;
    }
    let time_to_terminated = destroyed_at.elapsed();

    // 7. Idempotent destroy.
    if let Err(e) = provider.destroy_worker(&handle).await {
        return fail(
            "destroy-again",
            format!("destroying a destroyed worker must be Ok, got: {e}"),
        );
    }
    let unknown = WorkerHandle::new(
        WorkerId::new(),
        provider.id(),
        "hodei-conformance-unknown-worker",
    );
    if let Err(e) = provider.destroy_worker(&unknown).await {
        return fail(
            "destroy-unknown",
            format!("destroying an unknown worker must be a no-op, got: {e}"),
        );
    }

    // 8. Eligibility agrees with capabilities.
    check_eligibility(provider)?;

    // 9. Events.
    let events = collect_events(rx, worker_id, opts.event_timeout).await?;

    Ok(ConformanceReport {
        worker_id,
        handle,
        health,
        states_before_running,
        running_state,
        time_to_running,
        time_to_terminated,
        log_lines,
        metrics,
        events,
    })
}

type Running = (
    Vec<WorkerState>,
    WorkerState,
    Duration,
    Option<Vec<String>>,
    Result<ResourceUsage, String>,
);

/// Steps 4 and 5, while the worker exists.
async fn with_worker(
    provider: &Arc<dyn WorkerProvider>,
    handle: &WorkerHandle,
    opts: &ConformanceOptions,
    created_at: Instant,
) -> Result<Running, ConformanceFailure> {
    let mut seen = Vec::new();
    let running = loop {
        match provider.get_worker_status(handle).await {
            Ok(s) if is_running(s) => break s,
            Ok(WorkerState::Terminated) => {
                return fail(
                    "running",
                    format!("worker terminated before it ran (states seen: {seen:?})"),
                );
            }
            Ok(s) => {
                if seen.last() != Some(&s) {
                    seen.push(s);
                }
            }
            Err(e) => return fail("running", format!("get_worker_status failed: {e}")),
        }
        if created_at.elapsed() >= opts.ready_timeout {
            return fail(
                "running",
                format!(
                    "not running after {:?} (states seen: {seen:?})",
                    opts.ready_timeout
                ),
            );
        }
        tokio::time::sleep(opts.poll_interval).await;
    };
    let time_to_running = created_at.elapsed();

    let logs = match provider.worker_logs(handle, Some(10)).await {
        Ok(lines) if lines.len() <= 10 => Some(lines),
        Ok(lines) => {
            return fail(
                "logs",
                format!("asked for the last 10 lines, got {}", lines.len()),
            );
        }
        Err(ProviderError::Unsupported { .. }) => None,
        Err(e) => return fail("logs", format!("worker_logs failed: {e}")),
    };
    let metrics = provider
        .worker_metrics(handle)
        .await
        .map_err(|e| e.to_string());
    Ok((seen, running, time_to_running, logs, metrics))
}

fn check_eligibility(provider: &Arc<dyn WorkerProvider>) -> Result<(), ConformanceFailure> {
    let caps = provider.capabilities();
    let small = probe_spec(caps.max_cpu_cores.min(0.1), caps.max_memory_mb.min(64));
    let e = provider.job_eligibility(&small);
    if !e.is_eligible() {
        return fail(
            "eligibility",
            format!(
                "a spec within the capabilities (0.1 cpu, 64 MiB) is refused: {e:?} (capabilities {caps:?})"
            ),
        );
    }
    if caps.max_cpu_cores.is_finite() {
        let big = probe_spec(caps.max_cpu_cores + 1.0, caps.max_memory_mb.min(64));
        let e = provider.job_eligibility(&big);
        if e.is_eligible() {
            return fail(
                "eligibility",
                format!(
                    "a spec asking {} cpu cores is eligible, but capabilities offer at most {}",
                    big.resources.cpu_cores, caps.max_cpu_cores
                ),
            );
        }
    }
    if let Some(too_much) = caps.max_memory_mb.checked_add(1) {
        let big = probe_spec(caps.max_cpu_cores.min(0.1), too_much);
        let e = provider.job_eligibility(&big);
        if e.is_eligible() {
            return fail(
                "eligibility",
                format!(
                    "a spec asking {too_much} MiB is eligible, but capabilities offer at most {} MiB",
                    caps.max_memory_mb
                ),
            );
        }
    }
    Ok(())
}

async fn collect_events(
    rx: &mut tokio::sync::mpsc::UnboundedReceiver<WorkerEvent>,
    worker_id: WorkerId,
    timeout: Duration,
) -> Result<Vec<WorkerEvent>, ConformanceFailure> {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut seen = Vec::new();
    let mut started = false;
    let mut ended = false;
    while !(started && ended) {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some(e)) if e.worker_id() == worker_id => {
                match &e {
                    WorkerEvent::Created { .. } | WorkerEvent::Started { .. } => started = true,
                    WorkerEvent::Exited { .. } | WorkerEvent::Destroyed { .. } => ended = true,
                }
                seen.push(e);
            }
            Ok(Some(_)) => {}
            Ok(None) => {
                return fail(
                    "events",
                    format!("the event stream ended early (seen {seen:?})"),
                );
            }
            Err(_) => {
                let missing = match (started, ended) {
                    (false, false) => "a Created/Started and an Exited/Destroyed event",
                    (false, true) => "a Created/Started event",
                    _ => "an Exited/Destroyed event",
                };
                return fail(
                    "events",
                    format!(
                        "no {missing} for worker {worker_id} within {timeout:?} (seen {seen:?})"
                    ),
                );
            }
        }
    }
    Ok(seen)
}
