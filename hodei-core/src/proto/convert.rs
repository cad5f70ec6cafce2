//! The one place where `hodei.v1` wire types and domain types meet.
//!
//! Domain → proto never fails. Proto → domain checks what protobuf cannot
//! express (required fields, enum values, UUIDs) and names the offending field,
//! so gRPC adapters can answer `INVALID_ARGUMENT` with it.

use std::collections::BTreeMap;

use chrono::{DateTime, TimeZone, Utc};

use crate::domain::ids::{CorrelationId, JobId, ProviderId, WorkerId};
use crate::domain::job::{
    AttemptOutcome, AttemptResult, ExecutionContext, Job, JobParts, JobState,
};
use crate::domain::logs::{LogEntry, LogStream};
use crate::domain::progress::JobProgress;
use crate::domain::provider::{Provider, ProviderCapabilities, ProviderStatus, ProviderType};
use crate::domain::spec::{
    ArtifactDest, ArtifactSource, CommandType, Constraint, ConstraintOp, JobPreferences,
    JobResources, JobSpec,
};
use crate::domain::worker::{Worker, WorkerState};
use crate::proto::v1;
use crate::provider::ResourceUsage;

/// A proto message that does not map to a valid domain value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {field}: {message}")]
pub struct ConvertError {
    /// Dotted path of the field.
    pub field: String,
    /// What is wrong.
    pub message: String,
}

impl ConvertError {
    /// An error for `field`.
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// Milliseconds since the epoch.
#[must_use]
pub fn to_millis(t: DateTime<Utc>) -> i64 {
    t.timestamp_millis()
}

/// From milliseconds since the epoch (out-of-range values clamp to the epoch).
#[must_use]
pub fn from_millis(ms: i64) -> DateTime<Utc> {
    Utc.timestamp_millis_opt(ms)
        .single()
        .unwrap_or(DateTime::<Utc>::UNIX_EPOCH)
}

/// Parses a job id field.
pub fn parse_job_id(s: &str, field: &str) -> Result<JobId, ConvertError> {
    s.parse()
        .map_err(|_| ConvertError::new(field, format!("{s:?} is not a job id (UUID)")))
}

/// Parses a worker id field.
pub fn parse_worker_id(s: &str, field: &str) -> Result<WorkerId, ConvertError> {
    s.parse()
        .map_err(|_| ConvertError::new(field, format!("{s:?} is not a worker id (UUID)")))
}

// ---- enums ----

/// Domain → proto job state.
#[must_use]
pub fn job_state_to_proto(s: JobState) -> v1::JobState {
    match s {
        JobState::Pending => v1::JobState::Pending,
        JobState::Scheduled => v1::JobState::Scheduled,
        JobState::Running => v1::JobState::Running,
        JobState::Succeeded => v1::JobState::Succeeded,
        JobState::Failed => v1::JobState::Failed,
        JobState::Cancelled => v1::JobState::Cancelled,
        JobState::Timeout => v1::JobState::Timeout,
    }
}

/// Proto → domain job state; `UNSPECIFIED` is `None`.
pub fn job_state_from_proto(v: i32, field: &str) -> Result<Option<JobState>, ConvertError> {
    let s = v1::JobState::try_from(v)
        .map_err(|_| ConvertError::new(field, format!("unknown job state {v}")))?;
    Ok(match s {
        v1::JobState::Unspecified => None,
        v1::JobState::Pending => Some(JobState::Pending),
        v1::JobState::Scheduled => Some(JobState::Scheduled),
        v1::JobState::Running => Some(JobState::Running),
        v1::JobState::Succeeded => Some(JobState::Succeeded),
        v1::JobState::Failed => Some(JobState::Failed),
        v1::JobState::Cancelled => Some(JobState::Cancelled),
        v1::JobState::Timeout => Some(JobState::Timeout),
    })
}

/// Domain → proto worker state.
#[must_use]
pub fn worker_state_to_proto(s: WorkerState) -> v1::WorkerState {
    match s {
        WorkerState::Creating => v1::WorkerState::Creating,
        WorkerState::Connecting => v1::WorkerState::Connecting,
        WorkerState::Ready => v1::WorkerState::Ready,
        WorkerState::Busy => v1::WorkerState::Busy,
        WorkerState::Draining => v1::WorkerState::Draining,
        WorkerState::Terminating => v1::WorkerState::Terminating,
        WorkerState::Terminated => v1::WorkerState::Terminated,
    }
}

/// Proto → domain worker state; `UNSPECIFIED` is `None`.
pub fn worker_state_from_proto(v: i32, field: &str) -> Result<Option<WorkerState>, ConvertError> {
    let s = v1::WorkerState::try_from(v)
        .map_err(|_| ConvertError::new(field, format!("unknown worker state {v}")))?;
    Ok(match s {
        v1::WorkerState::Unspecified => None,
        v1::WorkerState::Creating => Some(WorkerState::Creating),
        v1::WorkerState::Connecting => Some(WorkerState::Connecting),
        v1::WorkerState::Ready => Some(WorkerState::Ready),
        v1::WorkerState::Busy => Some(WorkerState::Busy),
        v1::WorkerState::Draining => Some(WorkerState::Draining),
        v1::WorkerState::Terminating => Some(WorkerState::Terminating),
        v1::WorkerState::Terminated => Some(WorkerState::Terminated),
    })
}

/// Domain → proto provider status.
#[must_use]
pub fn provider_status_to_proto(s: ProviderStatus) -> v1::ProviderStatus {
    match s {
        ProviderStatus::Active => v1::ProviderStatus::Active,
        ProviderStatus::Maintenance => v1::ProviderStatus::Maintenance,
        ProviderStatus::Disabled => v1::ProviderStatus::Disabled,
        ProviderStatus::Overloaded => v1::ProviderStatus::Overloaded,
        ProviderStatus::Unhealthy => v1::ProviderStatus::Unhealthy,
    }
}

/// Proto → domain provider status; `UNSPECIFIED` and unknown values are refused.
pub fn provider_status_from_proto(v: i32, field: &str) -> Result<ProviderStatus, ConvertError> {
    let st = v1::ProviderStatus::try_from(v)
        .map_err(|_| ConvertError::new(field, format!("unknown provider status {v}")))?;
    Ok(match st {
        v1::ProviderStatus::Unspecified => return Err(ConvertError::new(field, "must be set")),
        v1::ProviderStatus::Active => ProviderStatus::Active,
        v1::ProviderStatus::Maintenance => ProviderStatus::Maintenance,
        v1::ProviderStatus::Disabled => ProviderStatus::Disabled,
        v1::ProviderStatus::Overloaded => ProviderStatus::Overloaded,
        v1::ProviderStatus::Unhealthy => ProviderStatus::Unhealthy,
    })
}

/// Domain → proto provider type.
#[must_use]
pub fn provider_type_to_proto(t: ProviderType) -> v1::ProviderType {
    match t {
        ProviderType::Lambda => v1::ProviderType::Lambda,
        ProviderType::Kubernetes => v1::ProviderType::Kubernetes,
        ProviderType::Docker => v1::ProviderType::Docker,
        ProviderType::AzureVm => v1::ProviderType::AzureVm,
        ProviderType::Ec2 => v1::ProviderType::Ec2,
        ProviderType::CloudRun => v1::ProviderType::CloudRun,
        ProviderType::BareMetal => v1::ProviderType::BareMetal,
        ProviderType::Custom => v1::ProviderType::Custom,
    }
}

/// Proto → domain provider type; `UNSPECIFIED` is refused.
pub fn provider_type_from_proto(v: i32, field: &str) -> Result<ProviderType, ConvertError> {
    let t = v1::ProviderType::try_from(v)
        .map_err(|_| ConvertError::new(field, format!("unknown provider type {v}")))?;
    Ok(match t {
        v1::ProviderType::Unspecified => {
            return Err(ConvertError::new(field, "must be set"));
        }
        v1::ProviderType::Lambda => ProviderType::Lambda,
        v1::ProviderType::Kubernetes => ProviderType::Kubernetes,
        v1::ProviderType::Docker => ProviderType::Docker,
        v1::ProviderType::AzureVm => ProviderType::AzureVm,
        v1::ProviderType::Ec2 => ProviderType::Ec2,
        v1::ProviderType::CloudRun => ProviderType::CloudRun,
        v1::ProviderType::BareMetal => ProviderType::BareMetal,
        v1::ProviderType::Custom => ProviderType::Custom,
    })
}

/// Domain → proto log stream.
#[must_use]
pub fn log_stream_to_proto(s: LogStream) -> v1::LogStream {
    match s {
        LogStream::Stdout => v1::LogStream::Stdout,
        LogStream::Stderr => v1::LogStream::Stderr,
        LogStream::System => v1::LogStream::System,
    }
}

/// Proto → domain log stream (`UNSPECIFIED` reads as stdout).
pub fn log_stream_from_proto(v: i32, field: &str) -> Result<LogStream, ConvertError> {
    let s = v1::LogStream::try_from(v)
        .map_err(|_| ConvertError::new(field, format!("unknown log stream {v}")))?;
    Ok(match s {
        v1::LogStream::Unspecified | v1::LogStream::Stdout => LogStream::Stdout,
        v1::LogStream::Stderr => LogStream::Stderr,
        v1::LogStream::System => LogStream::System,
    })
}

/// Proto → domain attempt outcome.
pub fn outcome_from_proto(v: i32, field: &str) -> Result<AttemptOutcome, ConvertError> {
    let o = v1::JobOutcome::try_from(v)
        .map_err(|_| ConvertError::new(field, format!("unknown job outcome {v}")))?;
    Ok(match o {
        v1::JobOutcome::Unspecified => return Err(ConvertError::new(field, "must be set")),
        v1::JobOutcome::Exited => AttemptOutcome::Exited,
        v1::JobOutcome::Signaled => AttemptOutcome::Signaled,
        v1::JobOutcome::TimedOut => AttemptOutcome::TimedOut,
        v1::JobOutcome::Cancelled => AttemptOutcome::Cancelled,
        v1::JobOutcome::StartFailed => AttemptOutcome::StartFailed,
    })
}

/// Domain → proto attempt outcome (`WorkerLost` has no wire form and maps to unspecified).
#[must_use]
pub fn outcome_to_proto(o: AttemptOutcome) -> v1::JobOutcome {
    match o {
        AttemptOutcome::Exited => v1::JobOutcome::Exited,
        AttemptOutcome::Signaled => v1::JobOutcome::Signaled,
        AttemptOutcome::TimedOut => v1::JobOutcome::TimedOut,
        AttemptOutcome::Cancelled => v1::JobOutcome::Cancelled,
        AttemptOutcome::StartFailed => v1::JobOutcome::StartFailed,
        AttemptOutcome::WorkerLost => v1::JobOutcome::Unspecified,
    }
}

fn op_to_str(op: ConstraintOp) -> &'static str {
    match op {
        ConstraintOp::Eq => "eq",
        ConstraintOp::Ne => "ne",
        ConstraintOp::In => "in",
        ConstraintOp::Exists => "exists",
    }
}

fn non_empty(s: String) -> Option<String> {
    if s.is_empty() { None } else { Some(s) }
}

// ---- JobSpec ----

impl From<&JobSpec> for v1::JobSpec {
    fn from(s: &JobSpec) -> Self {
        let command = match &s.command {
            CommandType::Shell { cmd, args } => v1::command::Kind::Shell(v1::ShellCommand {
                cmd: cmd.clone(),
                args: args.clone(),
            }),
            CommandType::Script {
                interpreter,
                content,
            } => v1::command::Kind::Script(v1::ScriptCommand {
                interpreter: interpreter.clone(),
                content: content.clone(),
            }),
        };
        v1::JobSpec {
            name: s.name.clone(),
            command: Some(v1::Command {
                kind: Some(command),
            }),
            image: s.image.clone().unwrap_or_default(),
            env: s.env.clone().into_iter().collect(),
            secrets: s.secrets.clone().into_iter().collect(),
            resources: Some(v1::JobResources {
                cpu_cores: s.resources.cpu_cores,
                memory_mb: s.resources.memory_mb,
                storage_mb: s.resources.storage_mb,
                gpu_required: s.resources.gpu_required,
                architecture: s.resources.architecture.clone().unwrap_or_default(),
            }),
            timeout_ms: s.timeout_ms,
            constraints: s
                .constraints
                .iter()
                .map(|c| v1::Constraint {
                    key: c.key.clone(),
                    operator: op_to_str(c.op).to_owned(),
                    values: c.values.clone(),
                })
                .collect(),
            inputs: s
                .inputs
                .iter()
                .map(|a| v1::ArtifactSource {
                    name: a.name.clone(),
                    url: a.url.clone(),
                    path: a.path.clone(),
                })
                .collect(),
            outputs: s
                .outputs
                .iter()
                .map(|a| v1::ArtifactDest {
                    name: a.name.clone(),
                    path: a.path.clone(),
                    url: a.url.clone(),
                })
                .collect(),
            preferences: Some(v1::JobPreferences {
                preferred_provider: s.preferences.preferred_provider.clone().unwrap_or_default(),
                preferred_region: s.preferences.preferred_region.clone().unwrap_or_default(),
                priority: s.preferences.priority,
                allow_retry: s.preferences.allow_retry,
            }),
            max_attempts: s.max_attempts,
            working_dir: s.working_dir.clone().unwrap_or_default(),
            labels: s.labels.clone().into_iter().collect(),
            concurrency_key: s.concurrency_key.clone().unwrap_or_default(),
        }
    }
}

/// Proto → domain spec. Only structural problems are reported here; call
/// [`JobSpec::validate`] for the semantic checks. Missing optional parts take
/// the domain defaults (`timeout_ms` 0 → default, `max_attempts` 0 → default),
/// `preferences` absent → defaults (retry allowed).
impl TryFrom<v1::JobSpec> for JobSpec {
    type Error = ConvertError;

    fn try_from(p: v1::JobSpec) -> Result<Self, Self::Error> {
        let command = match p.command.and_then(|c| c.kind) {
            Some(v1::command::Kind::Shell(s)) => CommandType::Shell {
                cmd: s.cmd,
                args: s.args,
            },
            Some(v1::command::Kind::Script(s)) => CommandType::Script {
                interpreter: s.interpreter,
                content: s.content,
            },
            None => {
                return Err(ConvertError::new(
                    "spec.command",
                    "must be set (shell or script)",
                ));
            }
        };
        let mut spec = JobSpec::new(p.name, command);
        spec.image = non_empty(p.image);
        spec.env = p.env.into_iter().collect();
        spec.secrets = p.secrets.into_iter().collect();
        if let Some(r) = p.resources {
            spec.resources = JobResources {
                cpu_cores: r.cpu_cores,
                memory_mb: r.memory_mb,
                storage_mb: r.storage_mb,
                gpu_required: r.gpu_required,
                architecture: non_empty(r.architecture),
            };
        }
        if p.timeout_ms != 0 {
            spec.timeout_ms = p.timeout_ms;
        }
        spec.constraints = p
            .constraints
            .into_iter()
            .enumerate()
            .map(|(i, c)| {
                let op = match c.operator.as_str() {
                    "eq" | "=" | "==" => ConstraintOp::Eq,
                    "ne" | "!=" => ConstraintOp::Ne,
                    "in" => ConstraintOp::In,
                    "exists" => ConstraintOp::Exists,
                    other => {
                        return Err(ConvertError::new(
                            format!("spec.constraints[{i}].operator"),
                            format!("unknown operator {other:?} (eq, ne, in, exists)"),
                        ));
                    }
                };
                Ok(Constraint {
                    key: c.key,
                    op,
                    values: c.values,
                })
            })
            .collect::<Result<_, _>>()?;
        spec.inputs = p
            .inputs
            .into_iter()
            .map(|a| ArtifactSource {
                name: a.name,
                url: a.url,
                path: a.path,
            })
            .collect();
        spec.outputs = p
            .outputs
            .into_iter()
            .map(|a| ArtifactDest {
                name: a.name,
                path: a.path,
                url: a.url,
            })
            .collect();
        if let Some(pref) = p.preferences {
            spec.preferences = JobPreferences {
                preferred_provider: non_empty(pref.preferred_provider),
                preferred_region: non_empty(pref.preferred_region),
                priority: pref.priority,
                allow_retry: pref.allow_retry,
            };
        }
        if p.max_attempts != 0 {
            spec.max_attempts = p.max_attempts;
        }
        spec.working_dir = non_empty(p.working_dir);
        spec.labels = p.labels.into_iter().collect();
        spec.concurrency_key = non_empty(p.concurrency_key);
        Ok(spec)
    }
}

// ---- Job ----

impl From<&Job> for v1::Job {
    /// Secret values are never included; their names are in `secret_names`.
    fn from(j: &Job) -> Self {
        let ctx = j.execution_context();
        v1::Job {
            id: j.id().to_string(),
            name: j.spec().name.clone(),
            state: job_state_to_proto(j.state()) as i32,
            attempts: j.attempts(),
            max_attempts: j.max_attempts(),
            exit_code: ctx.exit_code,
            error: ctx.error.clone().unwrap_or_default(),
            worker_id: ctx.worker_id.map(|w| w.to_string()).unwrap_or_default(),
            provider_id: j
                .selected_provider()
                .or(ctx.provider_id)
                .map(|p| p.to_string())
                .unwrap_or_default(),
            created_at_ms: to_millis(j.created_at()),
            started_at_ms: ctx.started_at.map(to_millis),
            finished_at_ms: j.finished_at().map(to_millis),
            spec: Some(v1::JobSpec::from(&j.spec().redacted())),
            secret_names: j.spec().secret_names().map(str::to_owned).collect(),
            correlation_id: j.correlation_id().to_string(),
            progress: ctx.progress.as_ref().map(|p| v1::JobProgress {
                percent: u32::from(p.percent),
                message: p.message.clone(),
                updated_at_ms: to_millis(p.updated_at),
            }),
        }
    }
}

/// Proto → domain job: a job as a server reports it, for clients.
///
/// Secret values never leave the server: the spec carries the secret names of
/// `secret_names` with empty values. The wire has one provider id (the chosen
/// one, else the current attempt's); it becomes both. The version is 0 (it is
/// the store's business) and `updated_at` is the latest time the job shows.
impl TryFrom<v1::Job> for Job {
    type Error = ConvertError;

    fn try_from(p: v1::Job) -> Result<Self, Self::Error> {
        let id = parse_job_id(&p.id, "job.id")?;
        let mut spec = JobSpec::try_from(
            p.spec
                .ok_or_else(|| ConvertError::new("job.spec", "must be set"))?,
        )?;
        spec.name = p.name;
        for name in p.secret_names {
            spec.secrets.entry(name).or_default();
        }
        let state = job_state_from_proto(p.state, "job.state")?
            .ok_or_else(|| ConvertError::new("job.state", "must be set"))?;
        let provider = if p.provider_id.is_empty() {
            None
        } else {
            Some(p.provider_id.parse::<ProviderId>().map_err(|_| {
                ConvertError::new(
                    "job.provider_id",
                    format!("{:?} is not a provider id (UUID)", p.provider_id),
                )
            })?)
        };
        let worker_id = if p.worker_id.is_empty() {
            None
        } else {
            Some(parse_worker_id(&p.worker_id, "job.worker_id")?)
        };
        let correlation_id = p.correlation_id.parse::<CorrelationId>().map_err(|_| {
            ConvertError::new(
                "job.correlation_id",
                format!("{:?} is not a correlation id (UUID)", p.correlation_id),
            )
        })?;
        let progress = p
            .progress
            .map(|pr| {
                Ok::<_, ConvertError>(JobProgress {
                    percent: u8::try_from(pr.percent)
                        .ok()
                        .filter(|v| *v <= 100)
                        .ok_or_else(|| {
                            ConvertError::new("job.progress.percent", "must be 0..=100")
                        })?,
                    message: pr.message,
                    updated_at: from_millis(pr.updated_at_ms),
                })
            })
            .transpose()?;
        let created_at = from_millis(p.created_at_ms);
        let started_at = p.started_at_ms.map(from_millis);
        let finished_at = p.finished_at_ms.map(from_millis);
        let updated_at = [
            Some(created_at),
            started_at,
            finished_at,
            progress.as_ref().map(|pr| pr.updated_at),
        ]
        .into_iter()
        .flatten()
        .max()
        .unwrap_or(created_at);
        let execution_context = ExecutionContext {
            attempt: p.attempts,
            provider_id: provider,
            worker_id,
            started_at,
            finished_at: finished_at.filter(|_| p.attempts > 0),
            exit_code: p.exit_code,
            error: non_empty(p.error),
            progress,
            ..ExecutionContext::default()
        };
        Ok(Job::restore(JobParts {
            id,
            spec,
            state,
            selected_provider: provider,
            execution_context,
            attempts: p.attempts,
            max_attempts: p.max_attempts,
            correlation_id,
            created_at,
            updated_at,
            finished_at,
        }))
    }
}

// ---- logs ----

impl From<&LogEntry> for v1::LogEntry {
    fn from(e: &LogEntry) -> Self {
        v1::LogEntry {
            sequence: e.sequence,
            stream: log_stream_to_proto(e.stream) as i32,
            data: e.data.clone(),
            timestamp_ms: to_millis(e.timestamp),
        }
    }
}

impl TryFrom<v1::LogEntry> for LogEntry {
    type Error = ConvertError;
    fn try_from(e: v1::LogEntry) -> Result<Self, Self::Error> {
        if e.sequence == 0 {
            return Err(ConvertError::new("entries.sequence", "must start at 1"));
        }
        Ok(LogEntry {
            sequence: e.sequence,
            stream: log_stream_from_proto(e.stream, "entries.stream")?,
            data: e.data,
            timestamp: from_millis(e.timestamp_ms),
        })
    }
}

// ---- results ----

/// Proto job result → the domain's [`AttemptResult`].
pub fn attempt_result_from_proto(r: &v1::JobResultMessage) -> Result<AttemptResult, ConvertError> {
    let mut res = AttemptResult::with_outcome(
        outcome_from_proto(r.outcome, "job_result.outcome")?,
        non_empty(r.error.clone()),
    );
    res.exit_code = r.exit_code;
    res.signal = r.signal;
    res.secrets_injected = r.secrets_injected.clone();
    res.log_bytes_dropped = r.log_bytes_dropped;
    Ok(res)
}

// ---- usage, workers, providers ----

impl From<&ResourceUsage> for v1::ResourceUsage {
    fn from(u: &ResourceUsage) -> Self {
        v1::ResourceUsage {
            cpu_percent: u.cpu_percent,
            memory_bytes: u.memory_bytes,
            memory_limit_bytes: u.memory_limit_bytes,
            disk_read_bytes: u.disk_read_bytes,
            disk_write_bytes: u.disk_write_bytes,
            net_rx_bytes: u.net_rx_bytes,
            net_tx_bytes: u.net_tx_bytes,
        }
    }
}

impl From<&v1::ResourceUsage> for ResourceUsage {
    fn from(u: &v1::ResourceUsage) -> Self {
        ResourceUsage {
            cpu_percent: u.cpu_percent,
            memory_bytes: u.memory_bytes,
            memory_limit_bytes: u.memory_limit_bytes,
            disk_read_bytes: u.disk_read_bytes,
            disk_write_bytes: u.disk_write_bytes,
            net_rx_bytes: u.net_rx_bytes,
            net_tx_bytes: u.net_tx_bytes,
        }
    }
}

/// Domain worker → proto, with its provider's name.
#[must_use]
pub fn worker_to_proto(w: &Worker, provider_name: &str) -> v1::Worker {
    v1::Worker {
        id: w.id().to_string(),
        provider_id: w.provider_id().to_string(),
        provider_name: provider_name.to_owned(),
        state: worker_state_to_proto(w.state()) as i32,
        current_jobs: w.current_jobs().iter().map(ToString::to_string).collect(),
        last_heartbeat_ms: to_millis(w.last_heartbeat()),
        jobs_run: w.jobs_run(),
        labels: w.labels().clone().into_iter().collect(),
        usage: w.stats().map(|s| v1::ResourceUsage {
            cpu_percent: s.cpu_percent,
            memory_bytes: s.memory_bytes,
            memory_limit_bytes: s.memory_limit_bytes,
            disk_read_bytes: s.disk_read_bytes,
            disk_write_bytes: s.disk_write_bytes,
            ..v1::ResourceUsage::default()
        }),
        usage_at_ms: w.stats().map_or(0, |s| to_millis(s.sampled_at)),
    }
}

impl From<&ProviderCapabilities> for v1::ProviderCapabilities {
    fn from(c: &ProviderCapabilities) -> Self {
        v1::ProviderCapabilities {
            max_cpu_cores: c.max_cpu_cores,
            max_memory_mb: c.max_memory_mb,
            gpu: c.gpu,
            architectures: c.architectures.clone(),
            max_workers: c.max_workers,
            regions: c.regions.clone(),
        }
    }
}

/// Domain provider → proto, with live worker count.
#[must_use]
pub fn provider_to_proto(p: &Provider, active_workers: u32) -> v1::Provider {
    v1::Provider {
        id: p.id().to_string(),
        name: p.name().to_owned(),
        provider_type: provider_type_to_proto(p.provider_type()) as i32,
        status: provider_status_to_proto(p.status()) as i32,
        capabilities: Some(p.capabilities().into()),
        active_jobs: p.active_jobs(),
        active_workers,
        last_error: p.last_error().unwrap_or_default().to_owned(),
    }
}

/// A map from a proto map (for callers that need a sorted one).
#[must_use]
pub fn sorted(m: std::collections::HashMap<String, String>) -> BTreeMap<String, String> {
    m.into_iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn full_spec() -> JobSpec {
        let mut s = JobSpec::new("full", CommandType::script("bash", "echo hi"))
            .with_env("A", "1")
            .with_secret("TOKEN", "s3cr3t-value")
            .with_timeout_ms(1234)
            .with_max_attempts(5)
            .with_provider("docker")
            .with_priority(7);
        s.image = Some("img:1".into());
        s.resources = JobResources {
            cpu_cores: 2.5,
            memory_mb: 100,
            storage_mb: 200,
            gpu_required: true,
            architecture: Some("x86_64".into()),
        };
        s.constraints = vec![Constraint {
            key: "zone".into(),
            op: ConstraintOp::In,
            values: vec!["a".into(), "b".into()],
        }];
        s.inputs = vec![ArtifactSource {
            name: "src".into(),
            url: "http://x".into(),
            path: "in".into(),
        }];
        s.outputs = vec![ArtifactDest {
            name: "out".into(),
            path: "o".into(),
            url: "http://y".into(),
        }];
        s.preferences.preferred_region = Some("eu".into());
        s.preferences.allow_retry = false;
        s.working_dir = Some("/w".into());
        s.labels.insert("team".into(), "x".into());
        s.concurrency_key = Some("deploy/prod".into());
        s
    }

    #[test]
    fn spec_round_trips() {
        for spec in [
            full_spec(),
            JobSpec::new("s", CommandType::shell("echo", ["a", "b"])),
        ] {
            let back = JobSpec::try_from(v1::JobSpec::from(&spec)).unwrap();
            assert_eq!(back, spec);
        }
    }

    /// Found by the `proto_messages` fuzz target: a spec from the wire whose
    /// `cpu_cores` serde_json parsed back one ULP off (without `float_roundtrip`),
    /// so a spec stored as JSON changed on the way back.
    #[test]
    fn a_valid_wire_spec_round_trips_through_json_bit_for_bit() {
        let mut p = v1::JobSpec::from(&full_spec());
        p.resources.as_mut().unwrap().cpu_cores = 1.000_000_000_029_132_5;
        let mut spec = JobSpec::try_from(p).unwrap();
        // Artifacts are refused until they are implemented.
        spec.inputs.clear();
        spec.outputs.clear();
        spec.validate().unwrap();
        let back: JobSpec = serde_json::from_slice(&serde_json::to_vec(&spec).unwrap()).unwrap();
        assert_eq!(
            back.resources.cpu_cores.to_bits(),
            spec.resources.cpu_cores.to_bits()
        );
        assert_eq!(back, spec);
    }

    #[test]
    fn missing_command_names_the_field() {
        let err = JobSpec::try_from(v1::JobSpec::default()).unwrap_err();
        assert_eq!(err.field, "spec.command");
    }

    #[test]
    fn bad_constraint_operator_names_the_field() {
        let mut p = v1::JobSpec::from(&full_spec());
        p.constraints[0].operator = "like".into();
        let err = JobSpec::try_from(p).unwrap_err();
        assert_eq!(err.field, "spec.constraints[0].operator");
    }

    #[test]
    fn job_view_never_carries_secret_values() {
        let job = Job::new(full_spec());
        let p = v1::Job::from(&job);
        assert_eq!(p.secret_names, vec!["TOKEN".to_owned()]);
        assert!(p.spec.unwrap().secrets.is_empty());
        assert_eq!(p.id, job.id().to_string());
    }

    #[test]
    fn a_job_read_back_from_the_wire_keeps_what_the_wire_carries() {
        let mut job = Job::new(full_spec());
        job.submit_to_provider(ProviderId::new(), None).unwrap();
        job.assign_worker(WorkerId::new()).unwrap();
        job.mark_running().unwrap();
        job.record_progress(JobProgress::new(40, "half").unwrap())
            .unwrap();
        let mut result = AttemptResult::exited(3);
        result.error = Some("boom".into());
        job.fail(result).unwrap();
        let wire = v1::Job::from(&job);
        let back = Job::try_from(wire.clone()).unwrap();
        // What the wire shows survives the round trip unchanged.
        assert_eq!(v1::Job::from(&back), wire);
        assert_eq!(back.id(), job.id());
        assert_eq!(back.state(), JobState::Failed);
        assert_eq!(back.correlation_id(), job.correlation_id());
        assert_eq!(back.worker_id(), job.worker_id());
        assert_eq!(back.execution_context().exit_code, Some(3));
        // Secret names only, never values.
        assert_eq!(
            back.spec().secrets.get("TOKEN").map(String::as_str),
            Some("")
        );
        assert_eq!(back.spec().redacted(), job.spec().redacted());
    }

    #[test]
    fn a_wire_job_without_a_state_or_with_a_bad_id_names_the_field() {
        let mut wire = v1::Job::from(&Job::new(full_spec()));
        wire.state = v1::JobState::Unspecified as i32;
        assert_eq!(Job::try_from(wire.clone()).unwrap_err().field, "job.state");
        wire.state = v1::JobState::Pending as i32;
        wire.id = "nope".into();
        assert_eq!(Job::try_from(wire).unwrap_err().field, "job.id");
    }

    #[test]
    fn enums_round_trip() {
        for s in JobState::ALL {
            let p = job_state_to_proto(s) as i32;
            assert_eq!(job_state_from_proto(p, "state").unwrap(), Some(s));
        }
        for s in WorkerState::ALL {
            let p = worker_state_to_proto(s) as i32;
            assert_eq!(worker_state_from_proto(p, "state").unwrap(), Some(s));
        }
        for s in [LogStream::Stdout, LogStream::Stderr, LogStream::System] {
            assert_eq!(
                log_stream_from_proto(log_stream_to_proto(s) as i32, "s").unwrap(),
                s
            );
        }
        for o in [
            AttemptOutcome::Exited,
            AttemptOutcome::Signaled,
            AttemptOutcome::TimedOut,
            AttemptOutcome::Cancelled,
            AttemptOutcome::StartFailed,
        ] {
            assert_eq!(
                outcome_from_proto(outcome_to_proto(o) as i32, "o").unwrap(),
                o
            );
        }
        assert!(job_state_from_proto(99, "state").is_err());
    }

    #[test]
    fn log_entry_round_trips_with_raw_bytes() {
        let e = LogEntry {
            sequence: 3,
            stream: LogStream::Stderr,
            data: bytes::Bytes::from_static(b"\xff\xfe not utf8"),
            timestamp: from_millis(1_700_000_000_123),
        };
        let back = LogEntry::try_from(v1::LogEntry::from(&e)).unwrap();
        assert_eq!(back, e);
    }
}
