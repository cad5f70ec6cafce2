//! The client side of a round: gRPC calls to the replicas, each bounded in time,
//! and the REST reads used for the secret scan.

use std::time::Duration;

use hodei_core::proto::v1;
use hodei_core::proto::v1::job_execution_service_client::JobExecutionServiceClient;
use hodei_core::proto::v1::job_query_service_client::JobQueryServiceClient;
use hodei_core::proto::v1::log_stream_service_client::LogStreamServiceClient;
use tonic::transport::Channel;

/// Bound of one call: a frozen or dead server must not stall the recorder.
const CALL_TIMEOUT: Duration = Duration::from_secs(3);

/// A call that did not get an answer, or got an error status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallError(pub String);

impl std::fmt::Display for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

async fn bounded<T>(
    what: &str,
    fut: impl std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
) -> Result<T, CallError> {
    match tokio::time::timeout(CALL_TIMEOUT, fut).await {
        Ok(Ok(r)) => Ok(r.into_inner()),
        Ok(Err(s)) => Err(CallError(format!("{what}: {:?} {}", s.code(), s.message()))),
        Err(_) => Err(CallError(format!(
            "{what}: no answer within {CALL_TIMEOUT:?}"
        ))),
    }
}

/// Clients of every replica of a round.
#[derive(Debug, Clone)]
pub struct Api {
    replicas: Vec<(String, Channel, String)>,
    http: reqwest::Client,
}

impl Api {
    /// Clients for `(name, channel, REST base URL)` of each replica.
    pub fn new(replicas: Vec<(String, Channel, String)>) -> Self {
        let http = reqwest::Client::builder()
            .timeout(CALL_TIMEOUT)
            .build()
            .unwrap_or_default();
        Self { replicas, http }
    }

    /// Number of replicas.
    pub fn len(&self) -> usize {
        self.replicas.len()
    }

    /// Whether there is no replica.
    pub fn is_empty(&self) -> bool {
        self.replicas.is_empty()
    }

    fn channel(&self, replica: usize) -> Channel {
        self.replicas[replica % self.replicas.len()].1.clone()
    }

    /// Name of replica `i`.
    pub fn name(&self, replica: usize) -> &str {
        &self.replicas[replica % self.replicas.len()].0
    }

    /// `QueueJob` on one replica (no retry: an error means "not accepted").
    ///
    /// # Errors
    /// The status, or no answer in time.
    pub async fn queue(&self, replica: usize, spec: v1::JobSpec) -> Result<v1::Job, CallError> {
        let mut c = JobExecutionServiceClient::new(self.channel(replica));
        let r = bounded(
            "QueueJob",
            c.queue_job(v1::QueueJobRequest {
                spec: Some(spec),
                correlation_id: String::new(),
            }),
        )
        .await?;
        r.job
            .ok_or_else(|| CallError("QueueJob answered without a job".into()))
    }

    /// `CancelJob` on one replica.
    ///
    /// # Errors
    /// The status, or no answer in time.
    pub async fn cancel(&self, replica: usize, id: &str) -> Result<v1::Job, CallError> {
        let mut c = JobExecutionServiceClient::new(self.channel(replica));
        let r = bounded(
            "CancelJob",
            c.cancel_job(v1::CancelJobRequest {
                job_id: id.into(),
                reason: "hodei-chaos".into(),
            }),
        )
        .await?;
        r.job
            .ok_or_else(|| CallError("CancelJob answered without a job".into()))
    }

    /// `GetJob` from the first replica that answers.
    ///
    /// # Errors
    /// The last replica's error when none answered.
    pub async fn get_job(&self, id: &str) -> Result<v1::Job, CallError> {
        let mut last = CallError("no replica".into());
        for i in 0..self.replicas.len() {
            let mut c = JobQueryServiceClient::new(self.channel(i));
            match bounded("GetJob", c.get_job(v1::GetJobRequest { job_id: id.into() })).await {
                Ok(r) => {
                    return r
                        .job
                        .ok_or_else(|| CallError("GetJob answered without a job".into()));
                }
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    /// `GetLogs` (every attempt) from the first replica that answers.
    ///
    /// # Errors
    /// The last replica's error when none answered.
    pub async fn get_logs(&self, id: &str) -> Result<v1::GetLogsResponse, CallError> {
        let mut last = CallError("no replica".into());
        for i in 0..self.replicas.len() {
            let mut c =
                LogStreamServiceClient::new(self.channel(i)).max_decoding_message_size(64 << 20);
            match bounded(
                "GetLogs",
                c.get_logs(v1::GetLogsRequest {
                    job_id: id.into(),
                    attempt: 0,
                }),
            )
            .await
            {
                Ok(r) => return Ok(r),
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    /// The REST bodies a client would read about job `id` (the job and its logs),
    /// from every replica that answers.
    pub async fn rest_bodies(&self, id: &str) -> Vec<String> {
        let mut out = Vec::new();
        for (_, _, base) in &self.replicas {
            for path in [
                format!("{base}/api/v1/jobs/{id}"),
                format!("{base}/api/v1/jobs/{id}/logs"),
            ] {
                if let Ok(r) = self.http.get(&path).send().await
                    && let Ok(body) = r.text().await
                {
                    out.push(body);
                }
            }
        }
        out
    }
}
