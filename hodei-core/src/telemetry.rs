//! Prometheus metrics: the process-wide recorder behind `GET /metrics`, and
//! the histograms and counters the control plane records.
//!
//! The control plane records through the [`metrics`] facade. [`install`] puts
//! a [`metrics_exporter_prometheus`] recorder in place once per process and
//! returns its [`PrometheusHandle`]; the REST router calls it, and so can a
//! library user who embeds the control plane without the REST API and serves
//! the text some other way ([`PrometheusHandle::render`]).
//!
//! An embedding application may have installed its own recorder first: then
//! [`install`] returns [`TelemetryError::RecorderAlreadyInstalled`] (and the
//! REST router logs it once), the histograms and counters below go to that
//! recorder, and `/metrics` still serves the gauges read from the stores at
//! scrape time.
//!
//! | Metric | Type | Labels | Meaning |
//! |---|---|---|---|
//! | `hodei_job_queue_wait_seconds` | histogram | | `pending` → `scheduled` (each attempt) |
//! | `hodei_dispatch_latency_seconds` | histogram | | `pending` → run command sent to the agent |
//! | `hodei_job_run_seconds` | histogram | `outcome` | `running` → final state |
//! | `hodei_jobs_finished_total` | counter | `outcome` | jobs that reached a final state |
//! | `hodei_worker_provisioning_seconds` | histogram | `provider` | worker create requested → agent connected |
//! | `hodei_worker_heartbeat_lag_seconds` | histogram | | agent's heartbeat send → stored |
//!
//! ```
//! let handle = hodei_core::telemetry::install();
//! // Idempotent: a second call returns the same recorder.
//! assert_eq!(handle.is_ok(), hodei_core::telemetry::install().is_ok());
//! ```

use std::sync::OnceLock;
use std::time::Duration;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use crate::domain::job::{AttemptOutcome, Job, JobState, Transition};

/// Why the Prometheus recorder is not this process's global recorder.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TelemetryError {
    /// Another `metrics` recorder was installed first (by the embedding
    /// application): Hodei's histograms and counters are recorded there.
    #[error(
        "another metrics recorder is already installed: Hodei's histograms and counters go to it, and /metrics serves only the store gauges"
    )]
    RecorderAlreadyInstalled,
}

/// Histogram bucket bounds (seconds) for latencies from milliseconds
/// (dispatch) to tens of minutes (job runs, slow provisioning).
pub const LATENCY_BUCKETS_SECONDS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0,
    1800.0, 3600.0,
];

/// Job wait in the queue: `pending` → `scheduled`.
pub const JOB_QUEUE_WAIT: &str = "hodei_job_queue_wait_seconds";
/// Job enqueued (`pending`) → run command sent to its agent.
pub const DISPATCH_LATENCY: &str = "hodei_dispatch_latency_seconds";
/// Job `running` → final state, by `outcome`.
pub const JOB_RUN: &str = "hodei_job_run_seconds";
/// Jobs that reached a final state, by `outcome`.
pub const JOBS_FINISHED: &str = "hodei_jobs_finished_total";
/// Worker create requested → its agent connected, by `provider`.
pub const WORKER_PROVISIONING: &str = "hodei_worker_provisioning_seconds";
/// Agent heartbeat sent → stored by the server.
pub const HEARTBEAT_LAG: &str = "hodei_worker_heartbeat_lag_seconds";
/// Histogram: how long a job's process ran by its agent's clock, by outcome.
pub const PROCESS_RUN: &str = "hodei_job_process_seconds";
/// Counter: log entries an agent reported for an attempt that the server never stored.
pub const LOG_ENTRIES_MISSING: &str = "hodei_job_log_entries_missing_total";

/// How often idle histogram samples are folded in when nobody scrapes.
const UPKEEP_EVERY: Duration = Duration::from_secs(5);

static INSTALLED: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// Installs the Prometheus recorder as this process's global `metrics`
/// recorder, once; later calls return the same handle.
///
/// # Errors
/// [`TelemetryError::RecorderAlreadyInstalled`] when another recorder was
/// installed first (every call then returns it).
pub fn install() -> Result<PrometheusHandle, TelemetryError> {
    INSTALLED
        .get_or_init(|| {
            let recorder = builder().build_recorder();
            let handle = recorder.handle();
            match metrics::set_global_recorder(recorder) {
                Ok(()) => {
                    describe();
                    spawn_upkeep(handle.clone());
                    Some(handle)
                }
                Err(_) => {
                    tracing::warn!("{}", TelemetryError::RecorderAlreadyInstalled);
                    None
                }
            }
        })
        .clone()
        .ok_or(TelemetryError::RecorderAlreadyInstalled)
}

/// The handle of the recorder [`install`] put in place, if it did.
#[must_use]
pub fn handle() -> Option<PrometheusHandle> {
    INSTALLED.get().cloned().flatten()
}

/// The exporter's configuration: histograms (not summaries) with
/// [`LATENCY_BUCKETS_SECONDS`] for every `*_seconds` metric.
#[must_use]
pub fn builder() -> PrometheusBuilder {
    let b = PrometheusBuilder::new();
    // The bounds are a non-empty constant, the only error case.
    match b.set_buckets_for_metric(
        Matcher::Suffix("_seconds".to_owned()),
        LATENCY_BUCKETS_SECONDS,
    ) {
        Ok(b) => b,
        Err(_) => PrometheusBuilder::new(),
    }
}

fn describe() {
    metrics::describe_histogram!(
        JOB_QUEUE_WAIT,
        metrics::Unit::Seconds,
        "Time a job waited in the queue before being scheduled (per attempt)."
    );
    metrics::describe_histogram!(
        DISPATCH_LATENCY,
        metrics::Unit::Seconds,
        "Time from a job entering the queue to its run command being sent to an agent."
    );
    metrics::describe_histogram!(
        JOB_RUN,
        metrics::Unit::Seconds,
        "Time from a job starting to run to its final state, by outcome."
    );
    metrics::describe_counter!(
        JOBS_FINISHED,
        "Jobs that reached a final state, by outcome."
    );
    metrics::describe_histogram!(
        WORKER_PROVISIONING,
        metrics::Unit::Seconds,
        "Time from asking a provider for a worker to its agent connecting, by provider."
    );
    metrics::describe_histogram!(
        HEARTBEAT_LAG,
        metrics::Unit::Seconds,
        "Time from an agent sending a heartbeat to the server storing it."
    );
    metrics::describe_histogram!(
        PROCESS_RUN,
        metrics::Unit::Seconds,
        "How long a job's process ran by its agent's clock, by outcome (hodei_job_run_seconds minus this is the overhead)."
    );
    metrics::describe_counter!(
        LOG_ENTRIES_MISSING,
        "Log entries an agent reported for an attempt (by its last sequence number) that the server never stored."
    );
}

/// Folds recorded histogram samples in periodically, so they do not pile up
/// between scrapes (rendering does it too).
fn spawn_upkeep(handle: PrometheusHandle) {
    let spawned = std::thread::Builder::new()
        .name("hodei-metrics-upkeep".to_owned())
        .spawn(move || {
            loop {
                std::thread::sleep(UPKEEP_EVERY);
                handle.run_upkeep();
            }
        });
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "metrics upkeep thread not started; scrapes still fold samples in");
    }
}

fn seconds_between(from: chrono::DateTime<chrono::Utc>, to: chrono::DateTime<chrono::Utc>) -> f64 {
    (to - from).to_std().unwrap_or_default().as_secs_f64()
}

/// Records what a stored job transition means for the metrics: the queue
/// wait when it leaves `pending` for `scheduled`, and the run time and
/// outcome when it reaches a final state. `before` is when the job entered
/// the state it left (its `updated_at` before the transition).
pub(crate) fn job_transition(
    job: &Job,
    t: Transition,
    before: Option<chrono::DateTime<chrono::Utc>>,
) {
    let now = job.updated_at();
    if t.from == JobState::Pending
        && t.to == JobState::Scheduled
        && let Some(since) = before
    {
        metrics::histogram!(JOB_QUEUE_WAIT).record(seconds_between(since, now));
    }
    if t.to.is_terminal() && t.from != t.to {
        let outcome = t.to.as_str();
        metrics::counter!(JOBS_FINISHED, "outcome" => outcome).increment(1);
        if let Some(started) = job.execution_context().started_at
            && t.from == JobState::Running
        {
            let end = job.finished_at().unwrap_or(now);
            metrics::histogram!(JOB_RUN, "outcome" => outcome)
                .record(seconds_between(started, end));
        }
    }
}

/// Records the dispatch latency of a job whose run command was just sent;
/// `pending_since` is when it entered the queue for this attempt.
pub(crate) fn job_dispatched(pending_since: chrono::DateTime<chrono::Utc>) {
    metrics::histogram!(DISPATCH_LATENCY)
        .record(seconds_between(pending_since, chrono::Utc::now()));
}

/// Records what an agent reported of an accepted attempt result: its
/// process run time, and the log entries it sent that were never stored.
pub(crate) fn attempt_reported(outcome: AttemptOutcome, ran_for: Duration, missing_entries: u64) {
    metrics::histogram!(PROCESS_RUN, "outcome" => outcome.as_str()).record(ran_for.as_secs_f64());
    if missing_entries > 0 {
        metrics::counter!(LOG_ENTRIES_MISSING).increment(missing_entries);
    }
}

/// Records a worker's provisioning time on `provider`.
pub(crate) fn worker_provisioned(provider: &str, took: Duration) {
    metrics::histogram!(WORKER_PROVISIONING, "provider" => provider.to_owned())
        .record(took.as_secs_f64());
}
