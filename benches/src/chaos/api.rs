//! The client side of a round: gRPC calls to the replicas, each bounded in time,
//! and the REST reads used for the secret scan.

use std::time::Duration;

use hodei_core::client::{ClientError, HodeiClient};
use hodei_core::proto::v1;
use hodei_core::proto::v1::log_stream_service_client::LogStreamServiceClient;
use hodei_core::{Job, JobId, JobSpec};

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

/// A typed-client call bounded in time. Its error reads as a raw call's
/// (`Call: Code message`): the recorded history compares them.
async fn bounded_client<T>(
    what: &str,
    fut: impl std::future::Future<Output = Result<T, ClientError>>,
) -> Result<T, CallError> {
    match tokio::time::timeout(CALL_TIMEOUT, fut).await {
        Ok(Ok(r)) => Ok(r),
        Ok(Err(e)) => {
            let (code, message) = match &e {
                ClientError::Unreachable { detail, .. } => {
                    (Some(tonic::Code::Unavailable), Some(detail.clone()))
                }
                e => (e.code(), e.server_message()),
            };
            Err(CallError(match (code, message) {
                (Some(code), Some(message)) => format!("{what}: {code:?} {message}"),
                _ => format!("{what}: {e}"),
            }))
        }
        Err(_) => Err(CallError(format!(
            "{what}: no answer within {CALL_TIMEOUT:?}"
        ))),
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
    replicas: Vec<(String, HodeiClient, String)>,
    http: reqwest::Client,
}

/// The wire view of a job the typed client read: the history records what a
/// gRPC client sees, state numbers included.
fn wire(job: &Job) -> v1::Job {
    v1::Job::from(job)
}

/// A job id the server gave out.
fn job_id(id: &str) -> Result<JobId, CallError> {
    id.parse()
        .map_err(|_| CallError(format!("{id:?} is not a job id")))
}

impl Api {
    /// Clients for `(name, client, REST base URL)` of each replica (lazy
    /// clients: a replica may be down or frozen).
    pub fn new(replicas: Vec<(String, HodeiClient, String)>) -> Self {
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

    fn client(&self, replica: usize) -> &HodeiClient {
        &self.replicas[replica % self.replicas.len()].1
    }

    /// Name of replica `i`.
    pub fn name(&self, replica: usize) -> &str {
        &self.replicas[replica % self.replicas.len()].0
    }

    /// `QueueJob` on one replica (no retry: an error means "not accepted").
    ///
    /// # Errors
    /// The status, or no answer in time.
    pub async fn queue(&self, replica: usize, spec: &JobSpec) -> Result<v1::Job, CallError> {
        let job = bounded_client("QueueJob", self.client(replica).submit_job(spec, None)).await?;
        Ok(wire(&job))
    }

    /// `CancelJob` on one replica.
    ///
    /// # Errors
    /// The status, or no answer in time.
    pub async fn cancel(&self, replica: usize, id: &str) -> Result<v1::Job, CallError> {
        let job = bounded_client(
            "CancelJob",
            self.client(replica).cancel(job_id(id)?, "hodei-chaos"),
        )
        .await?;
        Ok(wire(&job))
    }

    /// `GetJob` from the first replica that answers.
    ///
    /// # Errors
    /// The last replica's error when none answered.
    pub async fn get_job(&self, id: &str) -> Result<v1::Job, CallError> {
        let mut last = CallError("no replica".into());
        let id = job_id(id)?;
        for i in 0..self.replicas.len() {
            match bounded_client("GetJob", self.client(i).get(id)).await {
                Ok(job) => return Ok(wire(&job)),
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    /// `GetLogs` (every attempt) from the first replica that answers. A raw
    /// call: the invariants read the answer's chunks and `job_finished`,
    /// which the typed client does not return.
    ///
    /// # Errors
    /// The last replica's error when none answered.
    pub async fn get_logs(&self, id: &str) -> Result<v1::GetLogsResponse, CallError> {
        let mut last = CallError("no replica".into());
        for i in 0..self.replicas.len() {
            let mut c = LogStreamServiceClient::new(self.client(i).channel())
                .max_decoding_message_size(64 << 20);
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
