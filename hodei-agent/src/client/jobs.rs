//! Running the jobs the server sends: executor → batcher → unacknowledged buffer → stream.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use hodei_core::domain::job::{AttemptOutcome, AttemptResult};
use hodei_core::domain::logs::LogStream;
use hodei_core::domain::worker_protocol::AttemptReport;
use hodei_core::proto::v1;
use hodei_core::traces::{self, Stage};
use hodei_core::{JobId, JobSpec};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::{RunningJob, Shared, lock};
use crate::batcher::LogBatcher;
use crate::executor::{ExecutionOutcome, ExecutionRequest, ExecutionResult};

/// Handles `run_job`: validates it and starts the job in its own task.
pub(super) fn start(shared: &Arc<Shared>, cmd: v1::RunJobCommand) {
    let Ok(job_id) = cmd.job_id.parse::<JobId>() else {
        tracing::error!(job_id = %cmd.job_id, "run_job with an invalid job id ignored");
        return;
    };
    let attempt = cmd.attempt;
    let key = (job_id, attempt);
    // The job's trace: its id derives from the correlation id (hodei_core::traces).
    let span = traces::correlation_span(Stage::Run, &cmd.correlation_id);
    traces::record_attempt(&span, job_id, attempt);
    traces::record_worker(&span, shared.worker_id);
    let _enter = span.enter();
    if lock(&shared.jobs).contains_key(&key) || lock(&shared.results).contains_key(&key) {
        tracing::debug!("run_job for an attempt already running or finished: ignored");
        return;
    }
    let resume_after = cmd.resume_after_sequence;
    if shared.draining.load(Ordering::Acquire) {
        refuse(
            shared,
            key,
            resume_after,
            "worker is draining and takes no new jobs",
        );
        return;
    }
    let spec = match cmd.spec.map(JobSpec::try_from) {
        Some(Ok(spec)) => spec,
        Some(Err(e)) => {
            refuse(shared, key, resume_after, &format!("invalid job spec: {e}"));
            return;
        }
        None => {
            refuse(shared, key, resume_after, "run_job without a spec");
            return;
        }
    };
    let cancel = CancellationToken::new();
    {
        let mut jobs = lock(&shared.jobs);
        let max = usize::try_from(shared.config.max_concurrent_jobs).unwrap_or(usize::MAX);
        if jobs.len() >= max {
            drop(jobs);
            refuse(
                shared,
                key,
                resume_after,
                "worker is at its max_concurrent_jobs",
            );
            return;
        }
        jobs.insert(
            key,
            RunningJob {
                cancel: cancel.clone(),
            },
        );
    }
    tracing::info!(name = %spec.name, resume_after, "starting job");
    let shared = shared.clone();
    tokio::spawn(run(shared, job_id, attempt, spec, resume_after, cancel).instrument(span.clone()));
}

/// Handles `cancel_job`.
pub(super) fn cancel(shared: &Shared, c: &v1::CancelJobCommand) {
    let Ok(job_id) = c.job_id.parse::<JobId>() else {
        tracing::warn!(job_id = %c.job_id, "cancel_job with an invalid job id ignored");
        return;
    };
    match lock(&shared.jobs).get(&(job_id, c.attempt)) {
        Some(job) => {
            tracing::info!(%job_id, attempt = c.attempt, reason = %c.reason, "cancelling job");
            job.cancel.cancel();
        }
        None => tracing::debug!(%job_id, attempt = c.attempt, "cancel_job for a job not running"),
    }
}

/// Reports a job that was not started.
fn refuse(shared: &Shared, key: (JobId, u32), resume_after: u64, why: &str) {
    tracing::warn!(reason = why, "job not started");
    let (job_id, attempt) = key;
    lock(&shared.results).insert(
        key,
        AttemptReport::new(
            job_id,
            attempt,
            AttemptResult::with_outcome(AttemptOutcome::StartFailed, Some(why.to_owned())),
        )
        .with_last_sequence(resume_after),
    );
    shared.outbox.notify_one();
}

async fn run(
    shared: Arc<Shared>,
    job_id: JobId,
    attempt: u32,
    spec: JobSpec,
    resume_after: u64,
    cancel: CancellationToken,
) {
    let key = (job_id, attempt);
    lock(&shared.started).push(v1::JobStartedMessage {
        job_id: job_id.to_string(),
        attempt,
    });
    shared.outbox.notify_one();

    let (line_tx, line_rx) = shared.executor.log_channel();
    let (batch_tx, mut batch_rx) = mpsc::channel(8);
    let batcher = tokio::spawn(
        LogBatcher::run(
            shared.batcher.clone(),
            job_id,
            attempt,
            resume_after,
            line_rx,
            batch_tx,
        )
        .in_current_span(),
    );
    let pump = {
        let shared = shared.clone();
        tokio::spawn(async move {
            while let Some(batch) = batch_rx.recv().await {
                // `::progress <percent> [message]` lines on stdout (see
                // `crate::progress`): the latest of the batch replaces any unsent one.
                if let Some(p) = batch
                    .entries
                    .iter()
                    .filter(|e| e.stream == LogStream::Stdout)
                    .filter_map(|e| crate::progress::last_progress(&e.data))
                    .last()
                {
                    lock(&shared.progress).insert(
                        key,
                        v1::JobProgressMessage {
                            job_id: job_id.to_string(),
                            attempt,
                            percent: p.percent,
                            message: p.message,
                        },
                    );
                }
                // Waits while the buffer is full: backpressure up to the job's pipes.
                shared.unacked.push(batch).await;
                shared.outbox.notify_one();
            }
        })
    };

    let mut req = ExecutionRequest::new(job_id, attempt, spec.command);
    req.env = spec.env;
    req.secrets = spec.secrets;
    req.timeout = Duration::from_millis(spec.timeout_ms);
    req.working_dir = spec.working_dir.map(PathBuf::from);
    // Inputs are fetched first and outputs uploaded after, whatever the outcome.
    let result =
        super::artifacts::execute(&shared, req, &spec.inputs, &spec.outputs, line_tx, cancel).await;

    let last_sequence = match batcher.await {
        Ok(seq) => seq,
        Err(e) => {
            tracing::error!(error = %e, "log batcher failed");
            resume_after
        }
    };
    if let Err(e) = pump.await {
        tracing::error!(error = %e, "log pump failed");
    }
    tracing::info!(
        outcome = ?result.outcome,
        exit_code = ?result.exit_code,
        duration_ms = u64::try_from(result.duration.as_millis()).unwrap_or(u64::MAX),
        last_sequence,
        "job finished"
    );
    let report = attempt_report(job_id, attempt, &result, last_sequence);
    lock(&shared.results).insert(key, report);
    lock(&shared.jobs).remove(&key);
    shared.outbox.notify_one();
}

/// The domain report of how the attempt ended (the wire form is made when it is sent).
fn attempt_report(
    job_id: JobId,
    attempt: u32,
    r: &ExecutionResult,
    last_sequence: u64,
) -> AttemptReport {
    let outcome = match r.outcome {
        ExecutionOutcome::Exited => AttemptOutcome::Exited,
        ExecutionOutcome::Signaled => AttemptOutcome::Signaled,
        ExecutionOutcome::TimedOut => AttemptOutcome::TimedOut,
        ExecutionOutcome::Cancelled => AttemptOutcome::Cancelled,
        ExecutionOutcome::StartFailed => AttemptOutcome::StartFailed,
    };
    let mut result = AttemptResult::with_outcome(outcome, r.error.clone());
    result.exit_code = r.exit_code;
    result.signal = r.signal;
    result.secrets_injected.clone_from(&r.secrets_injected);
    result.log_bytes_dropped = r.log_bytes_dropped;
    AttemptReport::new(job_id, attempt, result)
        .with_ran_for(r.duration)
        .with_last_sequence(last_sequence)
}
