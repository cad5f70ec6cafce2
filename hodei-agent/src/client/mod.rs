//! The agent's side of `WorkerAgentService`: register, keep the stream, run jobs, report.
//!
//! [`WorkerClient::run`] drives everything:
//!
//! 1. `Register` with the one-time token (an invalid token is fatal:
//!    [`AgentError::InvalidOtp`]; an unreachable server is retried with backoff and jitter,
//!    on the next configured address when there are several).
//! 2. `WorkerStream` with `authorization: Bearer <session token>`: a heartbeat at once and
//!    then every interval (with cached [`ResourceUsage`](hodei_core::ResourceUsage)), and the
//!    jobs the server sends (`run_job`, `cancel_job`), whose logs go out in batches and whose
//!    result goes out after the last batch.
//! 3. Log batches and results stay in memory until the server acknowledges them. When the
//!    stream drops, jobs keep running (a full buffer slows them down), the agent resumes its
//!    session (`Register` with `resume_session_token`) on the next configured replica (the
//!    same one when only one is configured), sends a heartbeat listing its running jobs and
//!    resends everything unacknowledged, in order: a job whose replica died is neither lost
//!    nor run twice.
//! 4. When `shutdown` fires the agent drains: it tells the server (`UpdateWorkerStatus`
//!    `DRAINING`), lets running jobs finish within the shutdown grace (then cancels them),
//!    waits briefly for the last acknowledgements and unregisters.
//!
//! ```no_run
//! use hodei_agent::client::{CancellationToken, WorkerClient};
//! use hodei_agent::config::{AgentConfig, ServerAddresses};
//!
//! # async fn demo() -> Result<(), hodei_agent::client::AgentError> {
//! // Two control-plane replicas on one database: the agent follows whichever is alive.
//! let servers = ServerAddresses::new(["http://cp-a:50051", "http://cp-b:50051"])?;
//! let config = AgentConfig::new(servers, "one-time-token");
//! let client = WorkerClient::builder(config).build()?;
//! let shutdown = CancellationToken::new();
//! client.run(shutdown).await?;
//! # Ok(())
//! # }
//! ```

mod artifacts;
mod backoff;
mod jobs;
mod servers;
mod session;

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hodei_core::domain::worker_protocol::AttemptReport;
use hodei_core::proto::convert::worker_state_to_proto;
use hodei_core::proto::v1;
use hodei_core::proto::v1::worker_agent_service_client::WorkerAgentServiceClient;
use hodei_core::{JobId, WorkerId, WorkerState};
use tokio::sync::Notify;
use tonic::transport::{Channel, Endpoint};
use tracing::Instrument;

pub use tokio_util::sync::CancellationToken;

use crate::batcher::{BatcherConfig, UnackedBuffer};
use crate::config::{AgentConfig, ConfigError};
use crate::executor::{ExecutorConfig, JobExecutor};
use crate::metrics::{MetricsCollector, MetricsConfig};
use crate::tls::{CertificateManager, TlsError, TlsSettings};
use servers::ServerRotation;

/// Why the agent stopped with an error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AgentError {
    /// The server refused the one-time token. Not retried.
    #[error("one-time token invalid, used or expired: {0}")]
    InvalidOtp(String),
    /// The server no longer knows this agent's session; running jobs were cancelled.
    #[error("session lost: the server refused to resume this worker's session: {0}")]
    SessionLost(String),
    /// The server refused the registration for another reason.
    #[error("registration refused ({code:?}): {message}")]
    RegistrationRefused {
        /// gRPC status code.
        code: tonic::Code,
        /// Server message.
        message: String,
    },
    /// Bad configuration.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// Client certificates could not be loaded.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// The server URL or TLS settings cannot make an endpoint.
    #[error("invalid server endpoint {url}: {message}")]
    Endpoint {
        /// The URL.
        url: String,
        /// What is wrong.
        message: String,
    },
    /// An internal task failed.
    #[error("internal error: {0}")]
    Internal(String),
}

impl AgentError {
    /// Process exit code for this error: 2 for an invalid one-time token, 3 for a lost
    /// session, 1 otherwise.
    #[must_use]
    pub fn exit_code(&self) -> i32 {
        match self {
            AgentError::InvalidOtp(_) => 2,
            AgentError::SessionLost(_) => 3,
            _ => 1,
        }
    }
}

/// Builds a [`WorkerClient`].
#[derive(Debug)]
pub struct WorkerClientBuilder {
    config: AgentConfig,
    executor: Option<ExecutorConfig>,
    batcher: Option<BatcherConfig>,
    metrics: Option<MetricsCollector>,
    tls_settings: Option<TlsSettings>,
}

impl WorkerClientBuilder {
    /// Executor settings (default: derived from the agent config: kill grace, log cap, work root).
    #[must_use]
    pub fn executor_config(mut self, config: ExecutorConfig) -> Self {
        self.executor = Some(config);
        self
    }

    /// Log batching settings.
    #[must_use]
    pub fn batcher_config(mut self, config: BatcherConfig) -> Self {
        self.batcher = Some(config);
        self
    }

    /// A metrics collector (default: cgroup/proc with the configured TTL).
    #[must_use]
    pub fn metrics(mut self, metrics: MetricsCollector) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// TLS tunables (expiry thresholds, poll interval); the domain name comes from the config
    /// unless set here.
    #[must_use]
    pub fn tls_settings(mut self, settings: TlsSettings) -> Self {
        self.tls_settings = Some(settings);
        self
    }

    /// Loads certificates (if configured) and checks the endpoint.
    pub fn build(self) -> Result<WorkerClient, AgentError> {
        let config = self.config;
        let certs = match &config.tls {
            None => None,
            Some(paths) => {
                let mut settings = self.tls_settings.unwrap_or_default();
                if settings.domain_name.is_none() {
                    settings.domain_name.clone_from(&config.tls_domain);
                }
                settings.poll_interval = config.tls_poll_interval;
                Some(CertificateManager::load(paths.clone(), settings)?)
            }
        };
        let executor_config = self.executor.unwrap_or_else(|| {
            ExecutorConfig::default()
                .with_kill_grace(config.kill_grace)
                .with_log_cap_bytes(config.log_cap_bytes)
                .with_work_root(config.work_root.clone())
        });
        let metrics = self.metrics.unwrap_or_else(|| {
            MetricsCollector::new(MetricsConfig::default().with_ttl(config.metrics_ttl))
        });
        let client = WorkerClient {
            shared: Arc::new(Shared {
                worker_id: config.worker_id,
                servers: ServerRotation::new(config.servers.clone()),
                unacked: UnackedBuffer::new(config.unacked_max_entries.max(1)),
                executor: JobExecutor::new(executor_config),
                batcher: self.batcher.unwrap_or_default(),
                metrics,
                certs,
                config,
                jobs: Mutex::new(HashMap::new()),
                results: Mutex::new(BTreeMap::new()),
                started: Mutex::new(Vec::new()),
                progress: Mutex::new(BTreeMap::new()),
                outbox: Notify::new(),
                draining: AtomicBool::new(false),
                dropped: AtomicU64::new(0),
                session: Mutex::new(None),
            }),
        };
        // Fail early on a malformed URL or TLS config, whichever address it is.
        for url in client.shared.servers.all() {
            client.shared.endpoint(url)?;
        }
        Ok(client)
    }
}

/// The worker agent: registers, keeps the stream to the control plane and runs its jobs.
#[derive(Debug, Clone)]
pub struct WorkerClient {
    shared: Arc<Shared>,
}

impl WorkerClient {
    /// A builder from an agent configuration.
    #[must_use]
    pub fn builder(config: AgentConfig) -> WorkerClientBuilder {
        WorkerClientBuilder {
            config,
            executor: None,
            batcher: None,
            metrics: None,
            tls_settings: None,
        }
    }

    /// This worker's id.
    #[must_use]
    pub fn worker_id(&self) -> WorkerId {
        self.shared.worker_id
    }

    /// The certificate manager, when mTLS is configured.
    #[must_use]
    pub fn certificates(&self) -> Option<&CertificateManager> {
        self.shared.certs.as_ref()
    }

    /// Runs until `shutdown` fires (then drains and returns `Ok`) or a fatal error.
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), AgentError> {
        let span = tracing::info_span!("worker", worker_id = %self.shared.worker_id);
        self.run_inner(shutdown).instrument(span).await
    }

    async fn run_inner(self, shutdown: CancellationToken) -> Result<(), AgentError> {
        let shared = self.shared;
        let conn_stop = CancellationToken::new();
        let watcher = shared
            .certs
            .as_ref()
            .map(|c| c.spawn_watcher(conn_stop.child_token()));
        let mut supervisor =
            tokio::spawn(session::supervise(shared.clone(), conn_stop.clone()).in_current_span());

        let early = tokio::select! {
            r = &mut supervisor => Some(r),
            () = shutdown.cancelled() => None,
        };
        if let Some(r) = early {
            // The supervisor stopped by itself: a fatal error.
            conn_stop.cancel();
            shared.cancel_all_jobs("agent stopping after a fatal error");
            shared
                .wait_jobs_idle(shared.config.kill_grace + Duration::from_secs(5))
                .await;
            return flatten(r);
        }

        tracing::info!("shutdown requested: draining");
        shared.draining.store(true, Ordering::Release);
        shared.update_status(WorkerState::Draining).await;
        let mut fatal = None;
        tokio::select! {
            () = shared.wait_jobs_idle(shared.config.shutdown_grace) => {}
            r = &mut supervisor => fatal = Some(r),
        }
        if fatal.is_none() && !shared.jobs_idle() {
            tracing::warn!("shutdown grace elapsed: cancelling running jobs");
            shared.cancel_all_jobs("worker shutting down");
            tokio::select! {
                () = shared.wait_jobs_idle(shared.config.kill_grace + Duration::from_secs(5)) => {}
                r = &mut supervisor => fatal = Some(r),
            }
        }
        if fatal.is_none() {
            tokio::select! {
                () = shared.wait_flushed(shared.config.flush_timeout) => {}
                r = &mut supervisor => fatal = Some(r),
            }
        }
        conn_stop.cancel();
        let sup_result = match fatal {
            Some(r) => r,
            None => supervisor.await,
        };
        if let Some(w) = watcher {
            let _ = w.await;
        }
        flatten(sup_result)?;
        if !shared.flushed() {
            tracing::warn!(
                unacked_entries = shared.unacked.len_entries(),
                "stopping with log entries or results the server has not acknowledged"
            );
        }
        shared.unregister("worker shutdown").await;
        tracing::info!("worker stopped");
        Ok(())
    }
}

fn flatten(r: Result<Result<(), AgentError>, tokio::task::JoinError>) -> Result<(), AgentError> {
    r.map_err(|e| AgentError::Internal(format!("session task failed: {e}")))?
}

/// Key of one job attempt.
type AttemptKey = (JobId, u32);

#[derive(Debug)]
struct RunningJob {
    cancel: CancellationToken,
}

#[derive(Debug, Clone)]
struct SessionInfo {
    token: String,
}

/// State shared by the session tasks and the job tasks.
#[derive(Debug)]
struct Shared {
    config: AgentConfig,
    worker_id: WorkerId,
    /// The replica in use and the others to fall back on.
    servers: ServerRotation,
    executor: JobExecutor,
    batcher: BatcherConfig,
    metrics: MetricsCollector,
    certs: Option<CertificateManager>,
    /// Log batches not yet acknowledged, in order.
    unacked: UnackedBuffer,
    jobs: Mutex<HashMap<AttemptKey, RunningJob>>,
    /// Results not yet acknowledged.
    results: Mutex<BTreeMap<AttemptKey, AttemptReport>>,
    /// `job_started` notices not yet sent.
    started: Mutex<Vec<v1::JobStartedMessage>>,
    /// The latest progress of each attempt not yet sent (latest wins).
    progress: Mutex<BTreeMap<AttemptKey, v1::JobProgressMessage>>,
    /// Something new to send.
    outbox: Notify,
    draining: AtomicBool,
    /// Heartbeats/stats dropped because the outbound channel was full.
    dropped: AtomicU64,
    session: Mutex<Option<SessionInfo>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    match m.lock() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    }
}

impl Shared {
    /// An endpoint for one address. Without a configured TLS domain, tonic verifies the
    /// server certificate against this address's host: the name follows the replica dialled.
    fn endpoint(&self, url: &str) -> Result<Endpoint, AgentError> {
        let err = |e: tonic::transport::Error| AgentError::Endpoint {
            url: url.to_owned(),
            message: e.to_string(),
        };
        let mut ep = Endpoint::from_shared(url.to_owned())
            .map_err(err)?
            .connect_timeout(self.config.connect_timeout)
            .tcp_nodelay(true)
            // Log batches are up to 256 KiB: HTTP/2's default 64 KiB window would stall
            // each on a window update round trip.
            .initial_stream_window_size(Some(1 << 20))
            .initial_connection_window_size(Some(4 << 20))
            .http2_keep_alive_interval(Duration::from_secs(15))
            .keep_alive_timeout(Duration::from_secs(10))
            .keep_alive_while_idle(true);
        if let Some(certs) = &self.certs {
            ep = ep.tls_config(certs.client_tls_config()).map_err(err)?;
        }
        Ok(ep)
    }

    /// Connects to one address.
    async fn connect(&self, url: &str) -> Result<WorkerAgentServiceClient<Channel>, String> {
        let ep = self.endpoint(url).map_err(|e| e.to_string())?;
        let channel = ep.connect().await.map_err(|e| error_chain(&e))?;
        Ok(WorkerAgentServiceClient::new(channel))
    }

    /// Connects to the replica in use, or failing that to the others in turn (for the
    /// best-effort calls made while draining).
    async fn connect_any(&self) -> Result<WorkerAgentServiceClient<Channel>, String> {
        let mut errors = Vec::new();
        for url in self.servers.in_turn_from_current() {
            match self.connect(url).await {
                Ok(c) => return Ok(c),
                Err(e) => errors.push(format!("{url}: {e}")),
            }
        }
        Err(errors.join("; "))
    }

    fn token(&self) -> Option<String> {
        lock(&self.session).as_ref().map(|s| s.token.clone())
    }

    fn state(&self) -> WorkerState {
        if self.draining.load(Ordering::Acquire) {
            WorkerState::Draining
        } else if lock(&self.jobs).is_empty() {
            WorkerState::Ready
        } else {
            WorkerState::Busy
        }
    }

    /// A `stats` message with a fresh resource-usage sample.
    async fn stats(&self) -> v1::WorkerMessage {
        let usage = self.metrics.refresh().await;
        v1::WorkerMessage {
            payload: Some(v1::worker_message::Payload::Stats(v1::WorkerStatsMessage {
                worker_id: self.worker_id.to_string(),
                usage: Some(v1::ResourceUsage::from(&usage)),
                timestamp_ms: chrono::Utc::now().timestamp_millis(),
            })),
        }
    }

    fn heartbeat(&self) -> v1::WorkerMessage {
        let mut running: Vec<String> = lock(&self.jobs)
            .keys()
            .map(|(j, _)| j.to_string())
            .collect();
        running.sort();
        let usage = self.metrics.cached();
        v1::WorkerMessage {
            payload: Some(v1::worker_message::Payload::Heartbeat(
                v1::WorkerHeartbeat {
                    worker_id: self.worker_id.to_string(),
                    state: worker_state_to_proto(self.state()) as i32,
                    running_jobs: running,
                    usage: Some(v1::ResourceUsage::from(&usage)),
                    timestamp_ms: chrono::Utc::now().timestamp_millis(),
                    dropped_messages: self.dropped.load(Ordering::Relaxed),
                    certificate_days_to_expiry: self
                        .certs
                        .as_ref()
                        .map(CertificateManager::days_to_expiry),
                },
            )),
        }
    }

    fn jobs_idle(&self) -> bool {
        lock(&self.jobs).is_empty()
    }

    fn flushed(&self) -> bool {
        self.unacked.len_entries() == 0 && lock(&self.results).is_empty()
    }

    async fn wait_jobs_idle(&self, max: Duration) {
        let _ = tokio::time::timeout(max, async {
            while !self.jobs_idle() {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
        .await;
    }

    async fn wait_flushed(&self, max: Duration) {
        let _ = tokio::time::timeout(max, async {
            while !self.flushed() {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
        .await;
    }

    fn cancel_all_jobs(&self, reason: &str) {
        for ((job_id, attempt), job) in lock(&self.jobs).iter() {
            tracing::warn!(%job_id, attempt, reason, "cancelling job");
            job.cancel.cancel();
        }
    }

    fn authorized<T>(&self, msg: T) -> Result<tonic::Request<T>, String> {
        let mut req = tonic::Request::new(msg);
        if let Some(token) = self.token() {
            let value = format!("Bearer {token}")
                .parse()
                .map_err(|_| "session token is not valid metadata".to_owned())?;
            req.metadata_mut().insert("authorization", value);
        }
        Ok(req)
    }

    /// Best effort: tells the server about a state change.
    async fn update_status(&self, state: WorkerState) {
        if self.token().is_none() {
            return;
        }
        let call = async {
            let mut client = self.connect_any().await.map_err(|e| (None, e))?;
            let req = self
                .authorized(v1::UpdateWorkerStatusRequest {
                    worker_id: self.worker_id.to_string(),
                    state: worker_state_to_proto(state) as i32,
                })
                .map_err(|e| (None, e))?;
            client
                .update_worker_status(req)
                .await
                .map_err(|s| (Some(s.code()), s.message().to_owned()))
        };
        match tokio::time::timeout(self.config.connect_timeout * 2, call).await {
            Ok(Ok(_)) => tracing::info!(?state, "server told of state change"),
            // Refused as a state change: the server already has this worker
            // draining (an operator's drain) or being retired (a server
            // stop, which is what sent the signal): nothing is wrong.
            Ok(Err((Some(tonic::Code::FailedPrecondition), e))) => {
                tracing::info!(?state, reason = %e, "the server already has this worker draining or stopping");
            }
            Ok(Err((code, e))) => {
                tracing::warn!(?state, ?code, error = %e, "could not update worker status");
            }
            Err(_) => tracing::warn!(?state, "updating worker status timed out"),
        }
    }

    /// Best effort: says goodbye.
    async fn unregister(&self, reason: &str) {
        if self.token().is_none() {
            return;
        }
        let call = async {
            let mut client = self.connect_any().await?;
            let req = self.authorized(v1::UnregisterWorkerRequest {
                worker_id: self.worker_id.to_string(),
                reason: reason.to_owned(),
            })?;
            client
                .unregister_worker(req)
                .await
                .map_err(|s| format!("{:?}: {}", s.code(), s.message()))
        };
        match tokio::time::timeout(self.config.connect_timeout * 2, call).await {
            Ok(Ok(_)) => tracing::info!("unregistered"),
            Ok(Err(e)) => tracing::warn!(error = %e, "could not unregister"),
            Err(_) => tracing::warn!("unregistering timed out"),
        }
    }
}

/// An error with its sources, on one line (tonic's transport errors hide the cause).
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}
