//! One simulated agent: the worker protocol spoken directly over its own gRPC
//! connection (registration with the one-time token, the worker stream,
//! heartbeats, no-op jobs), without the real agent's executor, log batcher and
//! metrics collector, so thousands fit in one process.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use hodei_core::proto::v1;
use hodei_core::proto::v1::worker_agent_service_client::WorkerAgentServiceClient;
use tokio::sync::{OwnedSemaphorePermit, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Endpoint;

use super::provider::Credential;

/// Counters shared by every agent of a swarm.
#[derive(Debug, Default)]
pub struct SwarmCounters {
    /// Agents whose worker stream is open.
    pub connected: AtomicUsize,
    /// Agents that failed to connect, register or keep their stream.
    pub failed: AtomicUsize,
    /// Heartbeats sent.
    pub heartbeats: AtomicU64,
    /// Jobs run (a `run_job` answered with a result).
    pub jobs: AtomicU64,
}

/// A `run_job` as the agent saw it: the job id and when it arrived.
#[derive(Debug, Clone)]
pub struct RunSeen {
    /// The job.
    pub job_id: String,
    /// When its `run_job` reached the agent.
    pub at: Instant,
}

/// What an agent needs besides its credential.
#[derive(Debug, Clone)]
pub struct AgentContext {
    /// gRPC address of the server.
    pub server: String,
    /// Shared counters.
    pub counters: Arc<SwarmCounters>,
    /// Where each `run_job` is reported.
    pub runs: mpsc::UnboundedSender<RunSeen>,
}

/// Why an agent stopped.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// Connecting failed.
    #[error("connect: {0}")]
    Connect(#[from] tonic::transport::Error),
    /// A call failed.
    #[error("{call}: {status}")]
    Call {
        /// The RPC.
        call: &'static str,
        /// Its status.
        status: tonic::Status,
    },
    /// The session token is not valid metadata.
    #[error("session token is not valid metadata")]
    Token,
}

/// Runs one agent until its stream ends. `permit` (a registration slot of the
/// swarm) is released once the worker stream is open.
pub async fn run_agent(
    cred: Credential,
    ctx: AgentContext,
    permit: Option<OwnedSemaphorePermit>,
) -> Result<(), AgentError> {
    let channel = Endpoint::from_shared(ctx.server.clone())?
        .connect_timeout(Duration::from_secs(30))
        .tcp_nodelay(true)
        .connect()
        .await?;
    let mut client = WorkerAgentServiceClient::new(channel);
    let worker_id = cred.worker_id.to_string();
    let registered = client
        .register(v1::RegisterRequest {
            otp: cred.otp,
            worker_info: Some(v1::WorkerInfo {
                worker_id: worker_id.clone(),
                hostname: "sim".into(),
                agent_version: env!("CARGO_PKG_VERSION").into(),
                max_concurrent_jobs: 1,
                labels: Default::default(),
                architectures: vec![std::env::consts::ARCH.into()],
            }),
            resume_session_token: String::new(),
        })
        .await
        .map_err(|status| AgentError::Call {
            call: "Register",
            status,
        })?
        .into_inner();
    let interval = Duration::from_millis(registered.heartbeat_interval_ms.max(100));

    let (tx, rx) = mpsc::channel::<v1::WorkerMessage>(16);
    let mut request = tonic::Request::new(ReceiverStream::new(rx));
    let bearer = format!("Bearer {}", registered.session_token)
        .parse()
        .map_err(|_| AgentError::Token)?;
    request.metadata_mut().insert("authorization", bearer);
    let mut inbound = client
        .worker_stream(request)
        .await
        .map_err(|status| AgentError::Call {
            call: "WorkerStream",
            status,
        })?
        .into_inner();
    ctx.counters.connected.fetch_add(1, Ordering::Relaxed);
    drop(permit);

    // Heartbeats start at a random point of the interval, as real agents'
    // do (they registered at different times), so the load is spread.
    let offset = interval.mul_f64(rand::random::<f64>());
    let mut beat = tokio::time::interval_at(tokio::time::Instant::now() + offset, interval);
    beat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let result = loop {
        tokio::select! {
            _ = beat.tick() => {
                let hb = v1::WorkerMessage {
                    payload: Some(v1::worker_message::Payload::Heartbeat(v1::WorkerHeartbeat {
                        worker_id: worker_id.clone(),
                        state: v1::WorkerState::Ready as i32,
                        timestamp_ms: chrono_now_ms(),
                        ..Default::default()
                    })),
                };
                if tx.send(hb).await.is_err() {
                    break Ok(());
                }
                ctx.counters.heartbeats.fetch_add(1, Ordering::Relaxed);
            }
            msg = inbound.message() => match msg {
                Ok(Some(m)) => {
                    if let Some(v1::server_message::Payload::RunJob(run)) = m.payload {
                        let _ = ctx.runs.send(RunSeen { job_id: run.job_id.clone(), at: Instant::now() });
                        if run_noop(&tx, run).await.is_err() {
                            break Ok(());
                        }
                        ctx.counters.jobs.fetch_add(1, Ordering::Relaxed);
                    }
                }
                Ok(None) => break Ok(()),
                Err(status) => break Err(AgentError::Call { call: "WorkerStream", status }),
            },
        }
    };
    ctx.counters.connected.fetch_sub(1, Ordering::Relaxed);
    result
}

/// A no-op job: started, then exited 0 with no output.
async fn run_noop(
    tx: &mpsc::Sender<v1::WorkerMessage>,
    run: v1::RunJobCommand,
) -> Result<(), mpsc::error::SendError<v1::WorkerMessage>> {
    use v1::worker_message::Payload;
    tx.send(v1::WorkerMessage {
        payload: Some(Payload::JobStarted(v1::JobStartedMessage {
            job_id: run.job_id.clone(),
            attempt: run.attempt,
        })),
    })
    .await?;
    tx.send(v1::WorkerMessage {
        payload: Some(Payload::JobResult(v1::JobResultMessage {
            job_id: run.job_id,
            attempt: run.attempt,
            outcome: v1::JobOutcome::Exited as i32,
            exit_code: Some(0),
            last_sequence: run.resume_after_sequence,
            ..Default::default()
        })),
    })
    .await
}

fn chrono_now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}
