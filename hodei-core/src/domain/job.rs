//! The [`Job`] aggregate and its state machine.
//!
//! Transitions are listed in one table, [`JobState::TRANSITIONS`]; every
//! method checks it, so a transition not in the table is an
//! [`DomainError::InvalidStateTransition`] naming both states.

use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::domain::error::DomainError;
use crate::domain::ids::{CorrelationId, JobId, ProviderId, WorkerId};
use crate::domain::progress::JobProgress;
use crate::domain::spec::JobSpec;

/// Lifecycle state of a job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    /// Stored and queued, waiting for a worker.
    Pending,
    /// A provider or worker was chosen; the job is on its way to it.
    Scheduled,
    /// The agent started the job.
    Running,
    /// Exited with code 0.
    Succeeded,
    /// Failed for good (non-zero exit, or no attempts left).
    Failed,
    /// Cancelled by a client.
    Cancelled,
    /// Ran past its timeout.
    Timeout,
}

impl JobState {
    /// Every allowed transition. Anything else is refused.
    pub const TRANSITIONS: &'static [(JobState, JobState)] = &[
        (JobState::Pending, JobState::Scheduled),
        (JobState::Pending, JobState::Cancelled),
        (JobState::Pending, JobState::Failed),
        (JobState::Pending, JobState::Timeout),
        (JobState::Scheduled, JobState::Running),
        (JobState::Scheduled, JobState::Pending),
        (JobState::Scheduled, JobState::Failed),
        (JobState::Scheduled, JobState::Cancelled),
        (JobState::Scheduled, JobState::Timeout),
        (JobState::Running, JobState::Succeeded),
        (JobState::Running, JobState::Failed),
        (JobState::Running, JobState::Cancelled),
        (JobState::Running, JobState::Timeout),
        (JobState::Running, JobState::Pending),
    ];

    /// All states.
    pub const ALL: [JobState; 7] = [
        JobState::Pending,
        JobState::Scheduled,
        JobState::Running,
        JobState::Succeeded,
        JobState::Failed,
        JobState::Cancelled,
        JobState::Timeout,
    ];

    /// Whether the job is finished for good.
    #[must_use]
    pub const fn is_terminal(self) -> bool {
        matches!(
            self,
            JobState::Succeeded | JobState::Failed | JobState::Cancelled | JobState::Timeout
        )
    }

    /// Whether `self -> to` is in the table.
    #[must_use]
    pub fn can_transition_to(self, to: JobState) -> bool {
        Self::TRANSITIONS.contains(&(self, to))
    }

    /// Lower-case name, as used in JSON and query strings.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            JobState::Pending => "pending",
            JobState::Scheduled => "scheduled",
            JobState::Running => "running",
            JobState::Succeeded => "succeeded",
            JobState::Failed => "failed",
            JobState::Cancelled => "cancelled",
            JobState::Timeout => "timeout",
        }
    }
}

impl fmt::Display for JobState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for JobState {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        JobState::ALL
            .into_iter()
            .find(|st| st.as_str().eq_ignore_ascii_case(s))
            .ok_or_else(|| format!("unknown job state {s:?}"))
    }
}

/// How an attempt ended on the worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum AttemptOutcome {
    /// The process exited with a code.
    Exited,
    /// The process was killed by a signal.
    Signaled,
    /// The attempt ran past its timeout.
    TimedOut,
    /// The attempt was cancelled.
    Cancelled,
    /// The agent could not start it.
    StartFailed,
    /// The worker was lost (heartbeat timeout, container or process died).
    WorkerLost,
}

impl AttemptOutcome {
    /// The outcome's name, as serialized (`exited`, `timed_out`, …).
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            AttemptOutcome::Exited => "exited",
            AttemptOutcome::Signaled => "signaled",
            AttemptOutcome::TimedOut => "timed_out",
            AttemptOutcome::Cancelled => "cancelled",
            AttemptOutcome::StartFailed => "start_failed",
            AttemptOutcome::WorkerLost => "worker_lost",
        }
    }
}

/// Where and how the current attempt runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[non_exhaustive]
pub struct ExecutionContext {
    /// Attempt number, from 1.
    pub attempt: u32,
    /// Provider chosen for this attempt.
    pub provider_id: Option<ProviderId>,
    /// Worker running this attempt.
    pub worker_id: Option<WorkerId>,
    /// When the attempt started running.
    pub started_at: Option<DateTime<Utc>>,
    /// When the attempt finished.
    pub finished_at: Option<DateTime<Utc>>,
    /// Exit code, when the process exited.
    pub exit_code: Option<i32>,
    /// Signal that killed the process, if any.
    pub signal: Option<i32>,
    /// How the attempt ended.
    pub outcome: Option<AttemptOutcome>,
    /// Why it failed (already redacted).
    pub error: Option<String>,
    /// Names of the secrets that were injected.
    pub secrets_injected: Vec<String>,
    /// Log bytes dropped past the per-job cap.
    pub log_bytes_dropped: u64,
    /// Latest progress the attempt reported (absent in jobs stored before
    /// progress was kept).
    #[serde(default)]
    pub progress: Option<JobProgress>,
}

/// What a worker reports when an attempt ends.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct AttemptResult {
    /// How it ended.
    pub outcome: AttemptOutcome,
    /// Exit code, if the process exited.
    pub exit_code: Option<i32>,
    /// Signal, if it was killed by one.
    pub signal: Option<i32>,
    /// Error message (redacted by the agent).
    pub error: Option<String>,
    /// Names of the injected secrets.
    pub secrets_injected: Vec<String>,
    /// Log bytes dropped past the cap.
    pub log_bytes_dropped: u64,
}

impl AttemptResult {
    /// A result with only an outcome and an exit code.
    #[must_use]
    pub fn exited(code: i32) -> Self {
        Self {
            outcome: AttemptOutcome::Exited,
            exit_code: Some(code),
            signal: None,
            error: None,
            secrets_injected: Vec::new(),
            log_bytes_dropped: 0,
        }
    }

    /// A result with the given outcome and error message.
    #[must_use]
    pub fn with_outcome(outcome: AttemptOutcome, error: Option<String>) -> Self {
        Self {
            outcome,
            exit_code: None,
            signal: None,
            error,
            secrets_injected: Vec::new(),
            log_bytes_dropped: 0,
        }
    }
}

/// A state change, returned by every transition so callers can publish it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Transition {
    /// State before.
    pub from: JobState,
    /// State after.
    pub to: JobState,
}

/// The parts of a [`Job`] that [`Job::restore`] puts back together.
#[cfg_attr(not(feature = "proto"), allow(dead_code))]
pub(crate) struct JobParts {
    pub(crate) id: JobId,
    pub(crate) spec: JobSpec,
    pub(crate) state: JobState,
    pub(crate) selected_provider: Option<ProviderId>,
    pub(crate) execution_context: ExecutionContext,
    pub(crate) attempts: u32,
    pub(crate) max_attempts: u32,
    pub(crate) correlation_id: CorrelationId,
    pub(crate) created_at: DateTime<Utc>,
    pub(crate) updated_at: DateTime<Utc>,
    pub(crate) finished_at: Option<DateTime<Utc>>,
}

/// The job aggregate: the only way to change a job's state is through its methods.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Job {
    id: JobId,
    spec: JobSpec,
    state: JobState,
    selected_provider: Option<ProviderId>,
    execution_context: ExecutionContext,
    attempts: u32,
    max_attempts: u32,
    correlation_id: CorrelationId,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    finished_at: Option<DateTime<Utc>>,
    /// Optimistic-concurrency version, managed by the job repository.
    version: u64,
}

impl Job {
    /// A new `Pending` job. The spec should have been validated (see [`Job::try_new`]).
    #[must_use]
    pub fn new(spec: JobSpec) -> Self {
        let now = Utc::now();
        Self {
            id: JobId::new(),
            max_attempts: spec.max_attempts.max(1),
            spec,
            state: JobState::Pending,
            selected_provider: None,
            execution_context: ExecutionContext::default(),
            attempts: 0,
            correlation_id: CorrelationId::new(),
            created_at: now,
            updated_at: now,
            finished_at: None,
            version: 0,
        }
    }

    /// Validates the spec, then creates a `Pending` job.
    pub fn try_new(spec: JobSpec) -> Result<Self, DomainError> {
        spec.validate()?;
        Ok(Self::new(spec))
    }

    /// Sets the correlation id (for tracing a request across services).
    #[must_use]
    pub fn with_correlation_id(mut self, id: CorrelationId) -> Self {
        self.correlation_id = id;
        self
    }

    /// Rebuilds a job that exists elsewhere (one a server sent back, see
    /// `proto::convert`) from its parts, as they are: the state machine is not
    /// replayed, so only code that reads a job someone else drove calls this.
    #[cfg_attr(not(feature = "proto"), allow(dead_code))]
    pub(crate) fn restore(parts: JobParts) -> Self {
        Self {
            id: parts.id,
            spec: parts.spec,
            state: parts.state,
            selected_provider: parts.selected_provider,
            execution_context: parts.execution_context,
            attempts: parts.attempts,
            max_attempts: parts.max_attempts,
            correlation_id: parts.correlation_id,
            created_at: parts.created_at,
            updated_at: parts.updated_at,
            finished_at: parts.finished_at,
            version: 0,
        }
    }

    /// The id.
    #[must_use]
    pub fn id(&self) -> JobId {
        self.id
    }
    /// The spec (with secret values).
    #[must_use]
    pub fn spec(&self) -> &JobSpec {
        &self.spec
    }
    /// Current state.
    #[must_use]
    pub fn state(&self) -> JobState {
        self.state
    }
    /// Provider chosen for the current attempt.
    #[must_use]
    pub fn selected_provider(&self) -> Option<ProviderId> {
        self.selected_provider
    }
    /// The current attempt's context.
    #[must_use]
    pub fn execution_context(&self) -> &ExecutionContext {
        &self.execution_context
    }
    /// Attempts started so far.
    #[must_use]
    pub fn attempts(&self) -> u32 {
        self.attempts
    }
    /// Attempts allowed.
    #[must_use]
    pub fn max_attempts(&self) -> u32 {
        self.max_attempts
    }
    /// Correlation id.
    #[must_use]
    pub fn correlation_id(&self) -> CorrelationId {
        self.correlation_id
    }
    /// Creation time.
    #[must_use]
    pub fn created_at(&self) -> DateTime<Utc> {
        self.created_at
    }
    /// Last change.
    #[must_use]
    pub fn updated_at(&self) -> DateTime<Utc> {
        self.updated_at
    }
    /// When the job reached a terminal state.
    #[must_use]
    pub fn finished_at(&self) -> Option<DateTime<Utc>> {
        self.finished_at
    }
    /// Priority (from the spec's preferences).
    #[must_use]
    pub fn priority(&self) -> i32 {
        self.spec.preferences.priority
    }
    /// The worker of the current attempt.
    #[must_use]
    pub fn worker_id(&self) -> Option<WorkerId> {
        self.execution_context.worker_id
    }
    /// Optimistic-concurrency version (see [`crate::store::JobRepository`]).
    #[must_use]
    pub fn version(&self) -> u64 {
        self.version
    }
    /// Sets the version. Only job repositories call this, after storing the job.
    pub fn set_version(&mut self, version: u64) {
        self.version = version;
    }

    /// Whether another attempt is allowed after the current one.
    #[must_use]
    pub fn can_retry(&self) -> bool {
        self.spec.preferences.allow_retry && self.attempts < self.max_attempts
    }

    /// When the current attempt must end, if it is running.
    #[must_use]
    pub fn deadline(&self) -> Option<DateTime<Utc>> {
        let started = self.execution_context.started_at?;
        let ms = i64::try_from(self.spec.timeout_ms).unwrap_or(i64::MAX);
        started.checked_add_signed(chrono::Duration::milliseconds(ms))
    }

    fn transition(&mut self, to: JobState) -> Result<Transition, DomainError> {
        let from = self.state;
        if !from.can_transition_to(to) {
            return Err(DomainError::InvalidStateTransition {
                entity: "job",
                from: from.to_string(),
                to: to.to_string(),
            });
        }
        self.state = to;
        let now = Utc::now();
        self.updated_at = now;
        if to.is_terminal() {
            self.finished_at = Some(now);
            if self.execution_context.finished_at.is_none() && self.execution_context.attempt > 0 {
                self.execution_context.finished_at = Some(now);
            }
        }
        Ok(Transition { from, to })
    }

    /// Checks that `attempt` is the current attempt.
    pub fn check_attempt(&self, attempt: u32) -> Result<(), DomainError> {
        if attempt == self.execution_context.attempt {
            Ok(())
        } else {
            Err(DomainError::StaleAttempt {
                job: self.id,
                given: attempt,
                current: self.execution_context.attempt,
            })
        }
    }

    /// `Scheduled|Running -> Pending`: back to the queue for another attempt.
    /// Refused with [`DomainError::MaxAttemptsExceeded`] when no attempt is left.
    pub fn queue(&mut self, reason: impl Into<String>) -> Result<Transition, DomainError> {
        if !self.can_retry() {
            return Err(DomainError::MaxAttemptsExceeded {
                job: self.id,
                max_attempts: self.max_attempts,
            });
        }
        let t = self.transition(JobState::Pending)?;
        self.execution_context.error = Some(reason.into());
        self.execution_context.finished_at = Some(Utc::now());
        self.selected_provider = None;
        Ok(t)
    }

    /// `Scheduled -> Pending` without using up the attempt: the job never reached a
    /// worker (provisioning failed, no capacity). The provisioning saga's compensation.
    pub fn release(&mut self, reason: impl Into<String>) -> Result<Transition, DomainError> {
        if self.state != JobState::Scheduled || self.execution_context.started_at.is_some() {
            return Err(DomainError::InvalidStateTransition {
                entity: "job",
                from: self.state.to_string(),
                to: JobState::Pending.to_string(),
            });
        }
        let t = self.transition(JobState::Pending)?;
        self.attempts = self.attempts.saturating_sub(1);
        let reason = reason.into();
        self.execution_context = ExecutionContext {
            attempt: self.attempts,
            error: Some(reason),
            ..ExecutionContext::default()
        };
        self.selected_provider = None;
        Ok(t)
    }

    /// `Pending -> Scheduled`: a provider (and maybe already a worker) was chosen.
    /// Starts a new attempt.
    pub fn submit_to_provider(
        &mut self,
        provider: ProviderId,
        worker: Option<WorkerId>,
    ) -> Result<Transition, DomainError> {
        if self.state == JobState::Pending && self.attempts >= self.max_attempts {
            return Err(DomainError::MaxAttemptsExceeded {
                job: self.id,
                max_attempts: self.max_attempts,
            });
        }
        let t = self.transition(JobState::Scheduled)?;
        self.attempts += 1;
        self.selected_provider = Some(provider);
        self.execution_context = ExecutionContext {
            attempt: self.attempts,
            provider_id: Some(provider),
            worker_id: worker,
            ..ExecutionContext::default()
        };
        Ok(t)
    }

    /// Binds the current (scheduled) attempt to a worker.
    pub fn assign_worker(&mut self, worker: WorkerId) -> Result<(), DomainError> {
        if self.state != JobState::Scheduled {
            return Err(DomainError::InvalidStateTransition {
                entity: "job",
                from: self.state.to_string(),
                to: "assigned".to_owned(),
            });
        }
        self.execution_context.worker_id = Some(worker);
        self.updated_at = Utc::now();
        Ok(())
    }

    /// `Scheduled -> Running`.
    pub fn mark_running(&mut self) -> Result<Transition, DomainError> {
        let t = self.transition(JobState::Running)?;
        self.execution_context.started_at = Some(self.updated_at);
        Ok(t)
    }

    /// The current attempt reports progress: kept while it is `Scheduled` or
    /// `Running` (a report after the job finished is refused, so a late
    /// message never changes a finished job).
    pub fn record_progress(&mut self, progress: JobProgress) -> Result<(), DomainError> {
        if !matches!(self.state, JobState::Scheduled | JobState::Running) {
            return Err(DomainError::InvalidStateTransition {
                entity: "job",
                from: self.state.to_string(),
                to: "progress".to_owned(),
            });
        }
        self.execution_context.progress = Some(progress);
        self.updated_at = Utc::now();
        Ok(())
    }

    fn record(&mut self, result: AttemptResult) {
        let ctx = &mut self.execution_context;
        ctx.outcome = Some(result.outcome);
        ctx.exit_code = result.exit_code;
        ctx.signal = result.signal;
        ctx.error = result.error;
        ctx.secrets_injected = result.secrets_injected;
        ctx.log_bytes_dropped = result.log_bytes_dropped;
        ctx.finished_at = Some(Utc::now());
    }

    /// `Running -> Succeeded`.
    pub fn complete(&mut self, result: AttemptResult) -> Result<Transition, DomainError> {
        let t = self.transition(JobState::Succeeded)?;
        self.record(result);
        Ok(t)
    }

    /// `Pending|Scheduled|Running -> Failed`.
    pub fn fail(&mut self, result: AttemptResult) -> Result<Transition, DomainError> {
        let t = self.transition(JobState::Failed)?;
        self.record(result);
        Ok(t)
    }

    /// `Pending|Scheduled|Running -> Cancelled`.
    pub fn cancel(&mut self, reason: impl Into<String>) -> Result<Transition, DomainError> {
        let t = self.transition(JobState::Cancelled)?;
        self.execution_context.outcome = Some(AttemptOutcome::Cancelled);
        self.execution_context.error = Some(reason.into());
        Ok(t)
    }

    /// `Pending|Scheduled|Running -> Timeout`.
    pub fn timeout(&mut self) -> Result<Transition, DomainError> {
        let t = self.transition(JobState::Timeout)?;
        self.execution_context.outcome = Some(AttemptOutcome::TimedOut);
        self.execution_context.error = Some(format!("timed out after {} ms", self.spec.timeout_ms));
        Ok(t)
    }

    /// Records the final result of a timed-out attempt (exit details from the agent).
    pub fn record_timeout_result(&mut self, result: AttemptResult) {
        if self.state == JobState::Timeout {
            self.record(result);
        }
    }
}
