//! JSON shapes of the REST API, built from the domain types. They carry the
//! OpenAPI schemas, so the domain model stays free of documentation derives.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::domain::job::{Job, JobState};
use crate::domain::progress::JobProgress;
use crate::domain::provider::{Provider, ProviderCapabilities, ProviderConfig};
use crate::domain::worker::Worker;
use crate::domain::worker_stats::WorkerStats;

/// Lifecycle state of a job, lower-case.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum JobStateDto {
    /// Stored and queued, waiting for a worker.
    Pending,
    /// On its way to a worker.
    Scheduled,
    /// Running on a worker.
    Running,
    /// Exited with code 0.
    Succeeded,
    /// Failed for good.
    Failed,
    /// Cancelled by a client.
    Cancelled,
    /// Ran past its timeout.
    Timeout,
}

impl From<JobState> for JobStateDto {
    fn from(s: JobState) -> Self {
        match s {
            JobState::Pending => Self::Pending,
            JobState::Scheduled => Self::Scheduled,
            JobState::Running => Self::Running,
            JobState::Succeeded => Self::Succeeded,
            JobState::Failed => Self::Failed,
            JobState::Cancelled => Self::Cancelled,
            JobState::Timeout => Self::Timeout,
        }
    }
}

/// A job as the API returns it. Secret values are never included: `spec`
/// has its secrets removed and `secret_names` lists their names.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[non_exhaustive]
pub struct JobDto {
    /// Job id (UUID).
    #[schema(format = Uuid)]
    pub id: String,
    /// Name from the spec.
    pub name: String,
    /// Current state.
    pub state: JobStateDto,
    /// Attempts started so far.
    pub attempts: u32,
    /// Attempts allowed in total.
    pub max_attempts: u32,
    /// Exit code of the current attempt, once it exited.
    pub exit_code: Option<i32>,
    /// Why the current attempt failed, if it did (already redacted).
    pub error: Option<String>,
    /// Worker of the current attempt.
    #[schema(format = Uuid)]
    pub worker_id: Option<String>,
    /// Provider chosen for the current attempt.
    #[schema(format = Uuid)]
    pub provider_id: Option<String>,
    /// Correlation id, to follow the job across services.
    #[schema(format = Uuid)]
    pub correlation_id: String,
    /// Scheduling priority (higher first).
    pub priority: i32,
    /// When it was submitted.
    pub created_at: DateTime<Utc>,
    /// When the current attempt started running.
    pub started_at: Option<DateTime<Utc>>,
    /// When it finished for good.
    pub finished_at: Option<DateTime<Utc>>,
    /// The spec as submitted, with secret values removed (the `JobSpec` JSON form).
    #[schema(value_type = Object)]
    pub spec: serde_json::Value,
    /// Names of the job's secrets (never their values).
    pub secret_names: Vec<String>,
    /// Latest progress the current attempt reported; `null` until it reports.
    pub progress: Option<JobProgressDto>,
}

/// How far a job's current attempt says it is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[non_exhaustive]
pub struct JobProgressDto {
    /// 0..=100.
    pub percent: u8,
    /// What the job is doing (may be empty).
    pub message: String,
    /// When it was reported.
    pub updated_at: DateTime<Utc>,
}

impl From<&JobProgress> for JobProgressDto {
    fn from(p: &JobProgress) -> Self {
        Self {
            percent: p.percent,
            message: p.message.clone(),
            updated_at: p.updated_at,
        }
    }
}

impl From<&Job> for JobDto {
    fn from(job: &Job) -> Self {
        let ctx = job.execution_context();
        let spec = job.spec();
        Self {
            id: job.id().to_string(),
            name: spec.name.clone(),
            state: job.state().into(),
            attempts: job.attempts(),
            max_attempts: job.max_attempts(),
            exit_code: ctx.exit_code,
            error: ctx.error.clone(),
            worker_id: job.worker_id().map(|w| w.to_string()),
            provider_id: ctx
                .provider_id
                .or(job.selected_provider())
                .map(|p| p.to_string()),
            correlation_id: job.correlation_id().to_string(),
            priority: job.priority(),
            created_at: job.created_at(),
            started_at: ctx.started_at,
            finished_at: job.finished_at(),
            spec: serde_json::to_value(spec.redacted()).unwrap_or(serde_json::Value::Null),
            secret_names: spec.secret_names().map(str::to_owned).collect(),
            progress: ctx.progress.as_ref().map(JobProgressDto::from),
        }
    }
}

/// A page of jobs, newest first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[non_exhaustive]
pub struct JobList {
    /// The jobs.
    pub jobs: Vec<JobDto>,
}

/// Body of `POST /api/v1/jobs/{id}/cancel` (optional).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct CancelRequest {
    /// Why; recorded on the job.
    #[serde(default)]
    pub reason: String,
}

/// A worker as the API returns it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[non_exhaustive]
pub struct WorkerDto {
    /// Worker id (UUID).
    #[schema(format = Uuid)]
    pub id: String,
    /// Provider that created it.
    #[schema(format = Uuid)]
    pub provider_id: String,
    /// That provider's name ("" if it is no longer registered).
    pub provider_name: String,
    /// Lifecycle state, lower-case (`creating`, `connecting`, `ready`, `busy`,
    /// `draining`, `terminating`, `terminated`).
    pub state: String,
    /// Jobs it runs now.
    pub current_jobs: Vec<String>,
    /// Jobs it may run at once.
    pub max_concurrent_jobs: u32,
    /// Jobs it ran so far.
    pub jobs_run: u32,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// Last heartbeat.
    pub last_heartbeat: DateTime<Utc>,
    /// Latest resource usage its agent reported; `null` until the first report.
    pub stats: Option<WorkerStatsDto>,
}

/// A worker's latest resource usage, as its agent measured it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[non_exhaustive]
pub struct WorkerStatsDto {
    /// CPU use, percent of one core (200 = two cores busy).
    pub cpu_percent: f64,
    /// Memory in use, bytes.
    pub memory_bytes: u64,
    /// Memory limit, bytes (0 = none known).
    pub memory_limit_bytes: u64,
    /// Bytes read from disk since the worker started.
    pub disk_read_bytes: u64,
    /// Bytes written to disk since the worker started.
    pub disk_write_bytes: u64,
    /// When the sample arrived.
    pub sampled_at: DateTime<Utc>,
}

impl From<&WorkerStats> for WorkerStatsDto {
    fn from(s: &WorkerStats) -> Self {
        Self {
            cpu_percent: s.cpu_percent,
            memory_bytes: s.memory_bytes,
            memory_limit_bytes: s.memory_limit_bytes,
            disk_read_bytes: s.disk_read_bytes,
            disk_write_bytes: s.disk_write_bytes,
            sampled_at: s.sampled_at,
        }
    }
}

impl WorkerDto {
    /// From a worker and its provider's name.
    #[must_use]
    pub fn new(w: &Worker, provider_name: &str) -> Self {
        Self {
            id: w.id().to_string(),
            provider_id: w.provider_id().to_string(),
            provider_name: provider_name.to_owned(),
            state: w.state().to_string(),
            current_jobs: w.current_jobs().iter().map(ToString::to_string).collect(),
            max_concurrent_jobs: w.max_concurrent_jobs(),
            jobs_run: w.jobs_run(),
            labels: w.labels().clone(),
            created_at: w.created_at(),
            last_heartbeat: w.last_heartbeat(),
            stats: w.stats().map(WorkerStatsDto::from),
        }
    }
}

/// The workers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[non_exhaustive]
pub struct WorkerList {
    /// The workers.
    pub workers: Vec<WorkerDto>,
}

/// A provider as the API returns it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[non_exhaustive]
pub struct ProviderDto {
    /// Provider id (UUID).
    #[schema(format = Uuid)]
    pub id: String,
    /// Unique name.
    pub name: String,
    /// Kind of infrastructure (`docker`, `kubernetes`, `bare_metal`, …).
    #[serde(rename = "type")]
    pub provider_type: String,
    /// Operational status (`active`, `maintenance`, `disabled`, `overloaded`, `unhealthy`).
    pub status: String,
    /// Whether its last health check passed.
    pub healthy: bool,
    /// Jobs it runs now.
    pub active_jobs: u32,
    /// Workers of this provider that are not gone.
    pub workers: u32,
    /// Last health check.
    pub last_health_check: Option<DateTime<Utc>>,
    /// Last error it reported.
    pub last_error: Option<String>,
    /// What one worker can get (the `ProviderCapabilities` JSON form).
    #[schema(value_type = Object)]
    pub capabilities: serde_json::Value,
    /// Its configuration (the `ProviderConfig` JSON form, tagged by `type`).
    #[schema(value_type = Object)]
    pub config: serde_json::Value,
}

impl ProviderDto {
    /// From a provider and its live worker count.
    #[must_use]
    pub fn new(p: &Provider, workers: u32) -> Self {
        Self {
            id: p.id().to_string(),
            name: p.name().to_owned(),
            provider_type: p.provider_type().to_string(),
            status: p.status().to_string(),
            healthy: p.is_healthy(),
            active_jobs: p.active_jobs(),
            workers,
            last_health_check: p.last_health_check(),
            last_error: p.last_error().map(str::to_owned),
            capabilities: json_or_null::<ProviderCapabilities>(p.capabilities()),
            config: json_or_null::<ProviderConfig>(p.config()),
        }
    }
}

fn json_or_null<T: Serialize>(v: &T) -> serde_json::Value {
    serde_json::to_value(v).unwrap_or(serde_json::Value::Null)
}

/// The providers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[non_exhaustive]
pub struct ProviderList {
    /// The providers.
    pub providers: Vec<ProviderDto>,
}

/// Body of `POST /api/v1/providers`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct RegisterProviderRequest {
    /// Unique name.
    pub name: String,
    /// The configuration (the `ProviderConfig` JSON form, tagged by `type`,
    /// e.g. `{"type": "docker", "image": "hodei-worker:latest"}`).
    #[schema(value_type = Object)]
    pub config: ProviderConfig,
    /// Most workers at once (at least 1); default: the server's `HODEI_MAX_WORKERS`.
    #[serde(default)]
    #[schema(minimum = 1)]
    pub max_workers: Option<u32>,
}

/// Documentation-only schema of the `JobSpec` JSON accepted by `POST /api/v1/jobs`.
/// Unknown fields are refused. The bounds are those of `JobSpec::validate`; rules
/// that span fields (a secret also in `env`, secret names equal but for case)
/// are checked by the server only.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[schema(as = JobSpec)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
pub(crate) struct JobSpecDoc {
    /// Human-readable name (at most 256 bytes).
    #[serde(default)]
    #[schema(max_length = 256, pattern = r"^[^\x00]*$")]
    name: String,
    /// What to run.
    command: CommandDoc,
    /// Container or VM image, for providers that use one.
    image: Option<String>,
    /// Environment variables (names `[A-Za-z_][A-Za-z0-9_]*`).
    #[serde(default)]
    env: BTreeMap<String, String>,
    /// Secrets: given to the job as one JSON object on stdin, redacted from
    /// its output, never returned by the API. Values of at least 6 bytes.
    #[serde(default)]
    secrets: BTreeMap<String, String>,
    /// Resources.
    #[serde(default)]
    resources: Option<ResourcesDoc>,
    /// Timeout of one attempt in milliseconds (default 3 600 000; at most 7 days).
    #[schema(default = 3_600_000, minimum = 1, maximum = 604_800_000)]
    timeout_ms: Option<u64>,
    /// Placement constraints on worker labels.
    constraints: Option<Vec<ConstraintDoc>>,
    /// Input artifacts, fetched by the agent before the command starts.
    #[schema(max_items = 1000)]
    inputs: Option<Vec<ArtifactSourceDoc>>,
    /// Output artifacts, uploaded after the command ends, also when it fails;
    /// listed at `GET /api/v1/jobs/{id}/artifacts`.
    #[schema(max_items = 1000)]
    outputs: Option<Vec<ArtifactDestDoc>>,
    /// Scheduling preferences.
    preferences: Option<PreferencesDoc>,
    /// Attempts allowed in total (default 3; 1 = no retry).
    #[schema(default = 3, minimum = 1, maximum = 100)]
    max_attempts: Option<u32>,
    /// Working directory on the worker; absent = a fresh per-job directory.
    working_dir: Option<String>,
    /// Free-form labels.
    #[serde(default)]
    labels: BTreeMap<String, String>,
    /// Jobs sharing this key run at most the key's limit at once (set with
    /// `PUT /api/v1/concurrency-limits/{key}`); the others wait in the queue.
    #[schema(
        example = "deploy-prod",
        max_length = 128,
        pattern = "^[A-Za-z0-9._:/-]+$"
    )]
    concurrency_key: Option<String>,
}

/// What a job runs: a program with arguments (no shell in between), or a
/// script run by an interpreter.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
#[allow(dead_code)]
pub(crate) enum CommandDoc {
    /// `{"type": "shell", "cmd": "echo", "args": ["hi"]}`.
    Shell {
        /// The program (not blank).
        #[schema(
            pattern = r"^[^\x00]*[^\x00\t\n\x0b\x0c\r \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000][^\x00]*$"
        )]
        cmd: String,
        /// Its arguments.
        #[serde(default)]
        args: Vec<String>,
    },
    /// `{"type": "script", "interpreter": "bash", "content": "echo hi"}`.
    Script {
        /// The interpreter (not blank).
        #[schema(
            pattern = r"^[^\x00]*[^\x00\t\n\x0b\x0c\r \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000][^\x00]*$"
        )]
        interpreter: String,
        /// The script (not blank, at most 1 MiB).
        #[schema(
            pattern = r"[^\t\n\x0b\x0c\r \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]"
        )]
        content: String,
    },
}

/// Resources a job asks for.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
pub(crate) struct ResourcesDoc {
    /// CPU cores (default 1.0).
    #[schema(exclusive_minimum = 0, maximum = 1024)]
    cpu_cores: Option<f64>,
    /// Memory in MiB (default 512).
    #[schema(minimum = 1)]
    memory_mb: Option<u64>,
    /// Disk in MiB (default 1024).
    storage_mb: Option<u64>,
    /// Whether a GPU is needed (default false).
    gpu_required: Option<bool>,
    /// CPU architecture; absent = any.
    architecture: Option<String>,
}

/// A placement constraint: `key op values`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
pub(crate) struct ConstraintDoc {
    /// Label key.
    key: String,
    /// `eq`, `ne` (one value), `in` (one or more), `exists` (none needed).
    #[schema(pattern = "^(eq|ne|in|exists)$")]
    op: String,
    /// Values to compare against.
    #[serde(default)]
    values: Vec<String>,
}

/// An input artifact, fetched before the command starts: an artifact of
/// another job. Any other kind of `url` is a 400 naming `inputs[i].url`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
pub(crate) struct ArtifactSourceDoc {
    /// A label for logs and errors.
    name: Option<String>,
    /// `artifact://JOB_ID/NAME`.
    #[schema(pattern = r"^artifact://[0-9a-fA-F-]{36}/.+$")]
    url: String,
    /// Where to write it, relative to the job's working directory (no `..`, not absolute).
    path: String,
}

/// An output artifact, uploaded after the command ends, also when it fails. A
/// file path is stored as `name`; each file a glob matches as `name/RELATIVE_PATH`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
pub(crate) struct ArtifactDestDoc {
    /// Artifact name, or name prefix for a glob (no `..`, not absolute).
    name: String,
    /// File or glob relative to the working directory (`out/**/*.txt`).
    path: String,
    /// Destination: empty or absent = the server's artifact store, the only one supported.
    #[schema(max_length = 0)]
    url: Option<String>,
}

/// Scheduling preferences.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
pub(crate) struct PreferencesDoc {
    /// Provider name or id the job must run on.
    preferred_provider: Option<String>,
    /// Region to prefer.
    preferred_region: Option<String>,
    /// Higher runs first (default 0).
    #[schema(minimum = -1000, maximum = 1000)]
    priority: Option<i32>,
    /// Whether the job may be retried after its worker was lost (default true).
    allow_retry: Option<bool>,
}

/// Guards [`JobSpecDoc`] against drifting from [`JobSpec`]: every field of the
/// JSON form must be documented.
#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::spec::{CommandType, JobSpec};

    #[test]
    fn spec_doc_lists_every_spec_field() {
        let spec = JobSpec::new("x", CommandType::shell("echo", ["hi"]));
        let serde_json::Value::Object(fields) = serde_json::to_value(&spec).unwrap() else {
            panic!("spec is an object");
        };
        let schema = serde_json::to_value(<JobSpecDoc as utoipa::PartialSchema>::schema()).unwrap();
        for name in fields.keys() {
            assert!(
                schema["properties"].get(name).is_some(),
                "JobSpec field {name} is missing from the OpenAPI schema"
            );
        }
    }
}
