//! The names of the environment variables that configure a worker agent
//! (`hodei-worker`), shared by the providers that start agents
//! ([`WorkerSpec::agent_env`](crate::domain::worker::WorkerSpec::agent_env))
//! and the agent that reads them, so the two cannot drift apart.

/// Control-plane gRPC URL, or several comma-separated (replicas on one database).
pub const SERVER: &str = "HODEI_SERVER";
/// One-time registration token.
pub const OTP: &str = "HODEI_OTP";
/// The worker's UUID.
pub const WORKER_ID: &str = "HODEI_WORKER_ID";
/// Jobs the agent runs at once.
pub const MAX_CONCURRENT_JOBS: &str = "HODEI_MAX_CONCURRENT_JOBS";
/// Overrides the server's heartbeat interval (milliseconds).
pub const HEARTBEAT_INTERVAL_MS: &str = "HODEI_HEARTBEAT_INTERVAL_MS";
/// Interval of resource-usage reports (milliseconds).
pub const STATS_INTERVAL_MS: &str = "HODEI_STATS_INTERVAL_MS";
/// TERM → KILL grace of a cancelled job (seconds).
pub const KILL_GRACE_SECS: &str = "HODEI_KILL_GRACE_SECS";
/// How long running jobs may finish on shutdown (seconds).
pub const SHUTDOWN_GRACE_SECS: &str = "HODEI_SHUTDOWN_GRACE_SECS";
/// Per-job log cap (bytes).
pub const LOG_CAP_BYTES: &str = "HODEI_LOG_CAP_BYTES";
/// Root of the per-job working directories.
pub const WORK_DIR: &str = "HODEI_WORK_DIR";
/// `k=v,k2=v2` labels announced at registration.
pub const WORKER_LABELS: &str = "HODEI_WORKER_LABELS";
/// Client certificate (PEM path) for mTLS.
pub const TLS_CERT: &str = "HODEI_TLS_CERT";
/// Client key (PEM path) for mTLS.
pub const TLS_KEY: &str = "HODEI_TLS_KEY";
/// CA certificate (PEM path) the server's certificate is checked against.
pub const TLS_CA: &str = "HODEI_TLS_CA";
/// Server name to verify (default: the host of the address dialled).
pub const TLS_DOMAIN: &str = "HODEI_TLS_DOMAIN";

/// Set by the agent for every job process: the job's id.
pub const JOB_ID: &str = "HODEI_JOB_ID";
/// Set by the agent for every job process: the attempt number, from 1.
pub const ATTEMPT: &str = "HODEI_ATTEMPT";
