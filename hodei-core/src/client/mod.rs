//! A typed client for a Hodei server's job API (feature `client`): submit,
//! get, list, cancel and retry jobs, read and follow their logs, wait for them
//! to end. Domain types in and out ([`JobSpec`], [`Job`], [`JobId`],
//! [`StoredLogEntry`]); the `hodei.v1` wire types stay inside.
//!
//! ```no_run
//! use std::time::Duration;
//! use hodei_core::client::{ClientOptions, HodeiClient};
//! use hodei_core::{CommandType, JobSpec};
//! use futures::StreamExt;
//!
//! # async fn demo() -> Result<(), hodei_core::client::ClientError> {
//! let client = HodeiClient::connect(
//!     "http://127.0.0.1:50051",
//!     ClientOptions::new().with_token("my-api-token"),
//! )
//! .await?;
//! let id = client
//!     .submit(&JobSpec::new("hello", CommandType::shell("echo", ["hi"])))
//!     .await?;
//! let mut logs = client.follow_logs(id).await?;
//! while let Some(line) = logs.next().await {
//!     println!("{}", String::from_utf8_lossy(&line?.entry.data));
//! }
//! let job = client.wait(id, Duration::from_secs(60)).await?;
//! println!("{id} ended {}", job.state());
//! # Ok(())
//! # }
//! ```

/// `docs/CLIENT.md`, whose examples compile as doctests.
#[cfg(doctest)]
#[doc = include_str!("../../../docs/CLIENT.md")]
struct ClientGuide;

mod bearer;
mod error;
mod filter;
mod options;

pub use bearer::BearerToken;
pub use error::ClientError;
pub use filter::JobListFilter;
pub use options::ClientOptions;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use futures::{Stream, StreamExt};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

use crate::domain::ids::{CorrelationId, JobId};
use crate::domain::job::Job;
use crate::domain::logs::LogEntry;
use crate::domain::spec::JobSpec;
use crate::proto::convert::{ConvertError, job_state_to_proto};
use crate::proto::v1;
use crate::proto::v1::job_execution_service_client::JobExecutionServiceClient;
use crate::proto::v1::job_query_service_client::JobQueryServiceClient;
use crate::proto::v1::log_stream_service_client::LogStreamServiceClient;
use crate::store::StoredLogEntry;

/// The authenticated channel under a [`HodeiClient`], for the generated
/// stubs of the RPCs the client does not wrap (providers, templates…).
pub type AuthChannel = InterceptedService<Channel, BearerToken>;

/// How often [`HodeiClient::wait_for`] reads the job when no state change
/// wakes it first.
const WAIT_POLL: Duration = Duration::from_millis(500);

/// A connection to a Hodei server. Cheap to clone: clones share the channel.
#[derive(Clone)]
pub struct HodeiClient {
    channel: AuthChannel,
    endpoint: Arc<str>,
    max_message_bytes: usize,
}

impl fmt::Debug for HodeiClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HodeiClient")
            .field("endpoint", &self.endpoint)
            .finish_non_exhaustive()
    }
}

impl HodeiClient {
    /// Connects to `endpoint` (`http://host:port`, or `https://…` with TLS
    /// from `options`) at once, so an absent server is reported here as
    /// [`ClientError::Unreachable`] rather than at the first call.
    pub async fn connect(
        endpoint: impl Into<String>,
        options: ClientOptions,
    ) -> Result<Self, ClientError> {
        let endpoint: String = endpoint.into();
        let (ep, bearer) = endpoint_of(&endpoint, &options)?;
        let channel = ep.connect().await.map_err(|e| ClientError::Unreachable {
            endpoint: endpoint.clone(),
            detail: innermost_cause(&e),
        })?;
        Ok(Self::over(channel, bearer, endpoint, &options))
    }

    /// A client that connects at its first call (and reconnects after a
    /// failure, as every client does): for a server that may not be up yet.
    /// Fails only on options that cannot make a connection.
    pub fn connect_lazy(
        endpoint: impl Into<String>,
        options: ClientOptions,
    ) -> Result<Self, ClientError> {
        let endpoint: String = endpoint.into();
        let (ep, bearer) = endpoint_of(&endpoint, &options)?;
        Ok(Self::over(ep.connect_lazy(), bearer, endpoint, &options))
    }

    fn over(
        channel: Channel,
        bearer: BearerToken,
        endpoint: String,
        options: &ClientOptions,
    ) -> Self {
        Self {
            channel: InterceptedService::new(channel, bearer),
            endpoint: endpoint.into(),
            max_message_bytes: options.max_message_bytes,
        }
    }

    /// The endpoint this client talks to.
    #[must_use]
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// The authenticated channel, for the generated stubs of RPCs this
    /// client does not wrap.
    #[must_use]
    pub fn channel(&self) -> AuthChannel {
        self.channel.clone()
    }

    /// Decodes a status of a call.
    fn error(&self, status: tonic::Status) -> ClientError {
        ClientError::from_status(&self.endpoint, status)
    }

    fn jobs(&self) -> JobExecutionServiceClient<AuthChannel> {
        JobExecutionServiceClient::new(self.channel.clone())
            .max_decoding_message_size(self.max_message_bytes)
    }

    fn query(&self) -> JobQueryServiceClient<AuthChannel> {
        JobQueryServiceClient::new(self.channel.clone())
            .max_decoding_message_size(self.max_message_bytes)
    }

    fn log_service(&self) -> LogStreamServiceClient<AuthChannel> {
        LogStreamServiceClient::new(self.channel.clone())
            .max_decoding_message_size(self.max_message_bytes)
    }

    /// Submits a job; returns its id.
    pub async fn submit(&self, spec: &JobSpec) -> Result<JobId, ClientError> {
        Ok(self.submit_job(spec, None).await?.id())
    }

    /// Submits a job with an optional correlation id (the id of its trace;
    /// the server picks one when `None`) and returns the queued job.
    pub async fn submit_job(
        &self,
        spec: &JobSpec,
        correlation_id: Option<CorrelationId>,
    ) -> Result<Job, ClientError> {
        let answer = self
            .jobs()
            .queue_job(v1::QueueJobRequest {
                spec: Some(spec.into()),
                correlation_id: correlation_id.map(|c| c.to_string()).unwrap_or_default(),
            })
            .await
            .map_err(|s| self.error(s))?;
        job_of(answer.into_inner().job)
    }

    /// The job `id`; [`ClientError::NotFound`] when the server has none.
    pub async fn get(&self, id: JobId) -> Result<Job, ClientError> {
        let answer = self
            .query()
            .get_job(v1::GetJobRequest {
                job_id: id.to_string(),
            })
            .await
            .map_err(|s| self.error(s))?;
        job_of(answer.into_inner().job)
    }

    /// Jobs matching `filter`, newest first (as the server's store lists them).
    pub async fn list(&self, filter: &JobListFilter) -> Result<Vec<Job>, ClientError> {
        let answer = self
            .query()
            .list_jobs(v1::ListJobsRequest {
                state: filter.state.map_or(v1::JobState::Unspecified as i32, |s| {
                    job_state_to_proto(s) as i32
                }),
                limit: filter.limit.unwrap_or(0),
            })
            .await
            .map_err(|s| self.error(s))?;
        answer
            .into_inner()
            .jobs
            .into_iter()
            .map(|j| Job::try_from(j).map_err(ClientError::from))
            .collect()
    }

    /// Cancels the job `id` (a finished job stays as it is); returns it.
    pub async fn cancel(&self, id: JobId, reason: &str) -> Result<Job, ClientError> {
        let answer = self
            .jobs()
            .cancel_job(v1::CancelJobRequest {
                job_id: id.to_string(),
                reason: reason.to_owned(),
            })
            .await
            .map_err(|s| self.error(s))?;
        job_of(answer.into_inner().job)
    }

    /// Runs a finished job again as a new job; returns the new (queued) job.
    /// [`ClientError::FailedPrecondition`] while `id` has not finished.
    pub async fn retry(&self, id: JobId) -> Result<Job, ClientError> {
        let answer = self
            .jobs()
            .retry_job(v1::RetryJobRequest {
                job_id: id.to_string(),
            })
            .await
            .map_err(|s| self.error(s))?;
        job_of(answer.into_inner().job)
    }

    /// Every stored log entry of every attempt, in order. Each entry carries
    /// its attempt: a retried job's output is one run per attempt.
    pub async fn logs(&self, id: JobId) -> Result<Vec<StoredLogEntry>, ClientError> {
        let answer = self
            .log_service()
            .get_logs(v1::GetLogsRequest {
                job_id: id.to_string(),
                attempt: 0,
            })
            .await
            .map_err(|s| self.error(s))?;
        let mut entries = Vec::new();
        for chunk in answer.into_inner().chunks {
            entries.extend(entries_of(chunk)?);
        }
        Ok(entries)
    }

    /// The job's log entries as they come: the stored ones first, then new
    /// ones; the stream ends when the job ends. An unknown job fails here
    /// ([`ClientError::NotFound`]), a broken stream as its last item.
    pub async fn follow_logs(
        &self,
        id: JobId,
    ) -> Result<impl Stream<Item = Result<StoredLogEntry, ClientError>> + Send + 'static, ClientError>
    {
        let answer = self
            .log_service()
            .subscribe_logs(v1::SubscribeLogsRequest {
                job_id: id.to_string(),
            })
            .await
            .map_err(|s| self.error(s))?;
        let endpoint = Arc::clone(&self.endpoint);
        Ok(answer.into_inner().flat_map(move |chunk| {
            let items: Vec<Result<StoredLogEntry, ClientError>> = match chunk {
                Ok(chunk) => match entries_of(chunk) {
                    Ok(entries) => entries.into_iter().map(Ok).collect(),
                    Err(e) => vec![Err(e)],
                },
                Err(status) => vec![Err(ClientError::from_status(&endpoint, status))],
            };
            futures::stream::iter(items)
        }))
    }

    /// Waits until the job `id` is terminal (succeeded, failed, cancelled,
    /// timed out) and returns it; [`ClientError::WaitTimeout`] after `timeout`.
    pub async fn wait(&self, id: JobId, timeout: Duration) -> Result<Job, ClientError> {
        self.wait_for(id, timeout, |j| j.state().is_terminal())
            .await
    }

    /// Waits until `done` holds for the job `id` (running, say) and returns
    /// it; [`ClientError::WaitTimeout`] after `timeout`. Woken by the job's
    /// state changes, and reads the job at least every half second besides.
    pub async fn wait_for(
        &self,
        id: JobId,
        timeout: Duration,
        done: impl Fn(&Job) -> bool,
    ) -> Result<Job, ClientError> {
        let started = tokio::time::Instant::now();
        let deadline = started + timeout;
        // Subscribed before the first read, so no change falls in between.
        let mut events = self
            .jobs()
            .execution_event_stream(v1::ExecutionEventStreamRequest {
                job_id: id.to_string(),
            })
            .await
            .ok()
            .map(tonic::Response::into_inner);
        loop {
            let job = self.get(id).await?;
            if done(&job) {
                return Ok(job);
            }
            let now = tokio::time::Instant::now();
            if now >= deadline {
                return Err(ClientError::WaitTimeout {
                    job: id,
                    state: job.state(),
                    waited: now - started,
                });
            }
            let pause = (deadline - now).min(WAIT_POLL);
            match events.as_mut() {
                Some(stream) => match tokio::time::timeout(pause, stream.message()).await {
                    Ok(Ok(Some(_))) | Err(_) => {}
                    // The event stream ended or broke: poll from now on.
                    Ok(_) => events = None,
                },
                None => tokio::time::sleep(pause).await,
            }
        }
    }
}

/// The job of an answer, which the server always sets.
fn job_of(job: Option<v1::Job>) -> Result<Job, ClientError> {
    let job = job.ok_or_else(|| ConvertError::new("job", "missing from the answer"))?;
    Ok(Job::try_from(job)?)
}

/// The entries of a chunk, each with the chunk's attempt.
fn entries_of(chunk: v1::LogChunk) -> Result<Vec<StoredLogEntry>, ClientError> {
    let attempt = chunk.attempt;
    chunk
        .entries
        .into_iter()
        .map(|e| {
            Ok(StoredLogEntry {
                attempt,
                entry: LogEntry::try_from(e)?,
            })
        })
        .collect()
}

/// The tonic endpoint and the token interceptor `options` describe.
fn endpoint_of(
    endpoint: &str,
    options: &ClientOptions,
) -> Result<(Endpoint, BearerToken), ClientError> {
    let bearer = BearerToken::new(options.token.as_deref()).ok_or_else(|| {
        ClientError::InvalidConfig("the API token contains invalid characters".into())
    })?;
    let mut ep = Endpoint::from_shared(endpoint.to_owned())
        .map_err(|e| {
            ClientError::InvalidConfig(format!("invalid server address {endpoint:?}: {e}"))
        })?
        .connect_timeout(options.connect_timeout)
        .tcp_nodelay(true)
        .initial_stream_window_size(Some(options.stream_window))
        .initial_connection_window_size(Some(options.connection_window))
        .max_frame_size(Some(options.max_frame_size));
    if endpoint.starts_with("https://") {
        ep = ep
            .tls_config(tls_config(options))
            .map_err(|e| ClientError::InvalidConfig(format!("TLS configuration: {e}")))?;
    }
    Ok((ep, bearer))
}

/// TLS settings of an `https://` endpoint.
fn tls_config(options: &ClientOptions) -> ClientTlsConfig {
    let mut tls = ClientTlsConfig::new();
    if let Some(ca) = &options.tls_ca_pem {
        tls = tls.ca_certificate(Certificate::from_pem(ca));
    }
    if let Some((cert, key)) = &options.identity_pem {
        tls = tls.identity(Identity::from_pem(cert, key));
    }
    if let Some(domain) = &options.tls_domain {
        tls = tls.domain_name(domain.clone());
    }
    tls
}

/// The innermost cause of a connection error ("Connection refused"), which
/// says more than tonic's "transport error".
fn innermost_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut detail = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        detail = s.to_string();
        source = s.source();
    }
    detail
}
