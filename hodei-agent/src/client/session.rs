//! Registration, the worker stream and reconnects.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use hodei_core::proto::v1;
use hodei_core::proto::v1::server_message::Payload as ServerPayload;
use hodei_core::proto::v1::worker_agent_service_client::WorkerAgentServiceClient;
use hodei_core::proto::v1::worker_message::Payload as WorkerPayload;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::Code;
use tonic::transport::Channel;
use tracing::Instrument;

use super::backoff::Backoff;
use super::{AgentError, AttemptKey, SessionInfo, Shared, jobs, lock};

/// Heartbeat interval when neither the server nor the config says.
const DEFAULT_HEARTBEAT: Duration = Duration::from_secs(10);

/// How one connection ended.
enum ConnectionEnd {
    /// `stop` fired.
    Stopped,
    /// The stream broke; reconnect.
    Lost(String),
}

/// Codes worth retrying: the server may come back.
fn transient(code: Code) -> bool {
    matches!(
        code,
        Code::Unavailable
            | Code::DeadlineExceeded
            | Code::Unknown
            | Code::Internal
            | Code::ResourceExhausted
            | Code::Aborted
            | Code::Cancelled
    )
}

/// Registers (or resumes) and keeps a stream open until `stop` fires or a fatal error.
///
/// Every failure (unreachable server, transient refusal, broken stream) moves to the next
/// configured address and sleeps the backoff delay first; a registration resets the backoff.
/// A connection that lasted this long was a good one: the backoff starts over.
const STABLE_CONNECTION: Duration = Duration::from_secs(5);

pub(super) async fn supervise(
    shared: Arc<Shared>,
    stop: CancellationToken,
) -> Result<(), AgentError> {
    let mut backoff = Backoff::new(shared.config.backoff);
    loop {
        if stop.is_cancelled() {
            return Ok(());
        }
        let server = shared.servers.current().to_owned();
        let mut client = match shared.connect(&server).await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, %server, "cannot reach the server");
                if next_server_after_backoff(&shared, &mut backoff, &stop).await {
                    return Ok(());
                }
                continue;
            }
        };
        let resume_token = shared.token();
        let heartbeat_interval = match register(&shared, &mut client, resume_token.clone(), &server)
            .await
        {
            Ok(hb) => hb,
            Err(status) if transient(status.code()) => {
                tracing::warn!(code = ?status.code(), message = status.message(), %server, "registration failed; retrying");
                if next_server_after_backoff(&shared, &mut backoff, &stop).await {
                    return Ok(());
                }
                continue;
            }
            Err(status) => {
                let msg = status.message().to_owned();
                return Err(match (status.code(), resume_token) {
                    (Code::Unauthenticated, None) => {
                        tracing::error!(message = %msg, "one-time token invalid, used or expired");
                        AgentError::InvalidOtp(msg)
                    }
                    (Code::Unauthenticated, Some(_)) => {
                        tracing::error!(message = %msg, "the server refused to resume the session");
                        AgentError::SessionLost(msg)
                    }
                    (code, _) => AgentError::RegistrationRefused { code, message: msg },
                });
            }
        };
        // The backoff starts over only after a connection that held: a stream
        // the server ends at once (a worker it is retiring) must not turn into
        // a tight reconnect loop.
        let connected_at = tokio::time::Instant::now();
        match run_connection(&shared, &mut client, heartbeat_interval, &stop).await {
            ConnectionEnd::Stopped => return Ok(()),
            ConnectionEnd::Lost(why) => {
                if connected_at.elapsed() >= STABLE_CONNECTION {
                    backoff.reset();
                }
                tracing::warn!(reason = %why, %server, "stream to the server lost; reconnecting");
                if next_server_after_backoff(&shared, &mut backoff, &stop).await {
                    return Ok(());
                }
            }
        }
    }
}

/// Moves to the next configured address and sleeps the next backoff delay; true when
/// `stop` fired meanwhile.
async fn next_server_after_backoff(
    shared: &Shared,
    backoff: &mut Backoff,
    stop: &CancellationToken,
) -> bool {
    let next = shared.servers.advance();
    let d = backoff.next_delay();
    tracing::debug!(server = %next, delay_ms = u64::try_from(d.as_millis()).unwrap_or(u64::MAX), "next connection attempt");
    tokio::select! {
        () = stop.cancelled() => true,
        () = tokio::time::sleep(d) => false,
    }
}

/// `Register` (fresh with the OTP, or resuming with the session token). Returns the heartbeat
/// interval to use.
async fn register(
    shared: &Shared,
    client: &mut WorkerAgentServiceClient<Channel>,
    resume_token: Option<String>,
    server: &str,
) -> Result<Duration, tonic::Status> {
    let cfg = &shared.config;
    let resuming = resume_token.is_some();
    let req = v1::RegisterRequest {
        otp: if resuming {
            String::new()
        } else {
            cfg.otp.clone()
        },
        worker_info: Some(v1::WorkerInfo {
            worker_id: shared.worker_id.to_string(),
            hostname: cfg.hostname.clone(),
            agent_version: env!("CARGO_PKG_VERSION").to_owned(),
            max_concurrent_jobs: cfg.max_concurrent_jobs,
            labels: cfg.labels.clone().into_iter().collect(),
            architectures: cfg.architectures.clone(),
        }),
        resume_session_token: resume_token.unwrap_or_default(),
    };
    let resp = tokio::time::timeout(cfg.connect_timeout * 2, client.register(req))
        .await
        .map_err(|_| tonic::Status::deadline_exceeded("Register timed out"))??
        .into_inner();
    if resp.worker_id != shared.worker_id.to_string() && !resp.worker_id.is_empty() {
        tracing::warn!(server_worker_id = %resp.worker_id, "server answered with another worker id");
    }
    tracing::info!(
        session_id = %resp.session_id,
        resumed = resp.resumed,
        %server,
        "registered with the control plane"
    );
    *lock(&shared.session) = Some(SessionInfo {
        token: resp.session_token,
    });
    Ok(cfg
        .heartbeat_interval
        .unwrap_or(if resp.heartbeat_interval_ms == 0 {
            DEFAULT_HEARTBEAT
        } else {
            Duration::from_millis(resp.heartbeat_interval_ms)
        }))
}

/// One `WorkerStream`: heartbeat first, then everything unacknowledged, then live traffic.
async fn run_connection(
    shared: &Arc<Shared>,
    client: &mut WorkerAgentServiceClient<Channel>,
    heartbeat_interval: Duration,
    stop: &CancellationToken,
) -> ConnectionEnd {
    let (tx, rx) = mpsc::channel(shared.config.outbound_capacity.max(2));
    // The heartbeat listing running jobs is the first message of every connection.
    if tx.try_send(shared.heartbeat()).is_err() {
        shared.dropped.fetch_add(1, Ordering::Relaxed);
    }
    let req = match shared.authorized(ReceiverStream::new(rx)) {
        Ok(r) => r,
        Err(e) => return ConnectionEnd::Lost(e),
    };
    let mut inbound = tokio::select! {
        () = stop.cancelled() => return ConnectionEnd::Stopped,
        r = client.worker_stream(req) => match r {
            Ok(resp) => resp.into_inner(),
            Err(s) => return ConnectionEnd::Lost(format!("opening the stream: {:?}: {}", s.code(), s.message())),
        },
    };
    tracing::info!("worker stream open");
    let conn_cancel = stop.child_token();
    let mut sender = tokio::spawn(
        send_outbox(shared.clone(), tx.clone(), conn_cancel.clone()).in_current_span(),
    );
    // The first tick of an interval fires at once; the heartbeat was already queued.
    let mut tick = tokio::time::interval_at(
        tokio::time::Instant::now() + heartbeat_interval,
        heartbeat_interval,
    );
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Resource usage for `hodei worker list`: a fresh sample (read off this
    // loop, so a slow filesystem never delays a heartbeat), dropped when the
    // channel is full like a heartbeat.
    let mut stats_tick = tokio::time::interval(shared.config.stats_interval);
    stats_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut sender_done = false;
    let end = loop {
        tokio::select! {
            () = stop.cancelled() => break ConnectionEnd::Stopped,
            _ = tick.tick() => {
                if tx.try_send(shared.heartbeat()).is_err() {
                    let n = shared.dropped.fetch_add(1, Ordering::Relaxed) + 1;
                    tracing::debug!(dropped = n, "outbound channel full: heartbeat dropped");
                }
            }
            _ = stats_tick.tick() => {
                let (shared, tx) = (shared.clone(), tx.clone());
                tokio::spawn(async move {
                    if tx.try_send(shared.stats().await).is_err() {
                        shared.dropped.fetch_add(1, Ordering::Relaxed);
                    }
                }.in_current_span());
            }
            msg = inbound.message() => match msg {
                Ok(Some(m)) => handle_server_message(shared, m),
                Ok(None) => break ConnectionEnd::Lost("server closed the stream".to_owned()),
                Err(s) => break ConnectionEnd::Lost(format!("{:?}: {}", s.code(), s.message())),
            },
            r = &mut sender => {
                sender_done = true;
                break ConnectionEnd::Lost(match r {
                    Ok(()) => "outbound stream closed".to_owned(),
                    Err(e) => format!("sender task failed: {e}"),
                });
            }
        }
    };
    conn_cancel.cancel();
    if !sender_done {
        sender.abort();
        let _ = sender.await;
    }
    end
}

/// Least time between two progress sends on a connection: a job printing
/// `::progress` in a tight loop costs the server a few writes a second, not one
/// per log batch.
const PROGRESS_EVERY: Duration = Duration::from_millis(500);

/// Sends `job_started` notices, then the latest progress reports (paced), then every
/// unacknowledged log batch not yet sent on this connection (in order), then every
/// unacknowledged result whose batches were all sent. Runs until the connection ends.
async fn send_outbox(
    shared: Arc<Shared>,
    tx: mpsc::Sender<v1::WorkerMessage>,
    cancel: CancellationToken,
) {
    // What this connection already carried: highest sequence per attempt, and results.
    let mut sent_seq: HashMap<AttemptKey, u64> = HashMap::new();
    let mut sent_results: HashSet<AttemptKey> = HashSet::new();
    let mut progress_due = tokio::time::Instant::now();
    loop {
        let started: Vec<v1::JobStartedMessage> = std::mem::take(&mut *lock(&shared.started));
        for s in started {
            if tx.send(msg(WorkerPayload::JobStarted(s))).await.is_err() {
                return;
            }
        }
        // Results first, batches second: a result in this snapshot had all its batches pushed
        // before it, so they are in the batch snapshot (or already acknowledged).
        let results: Vec<(AttemptKey, v1::JobResultMessage)> = lock(&shared.results)
            .iter()
            .filter(|(k, _)| !sent_results.contains(k))
            .map(|(k, report)| (*k, v1::JobResultMessage::from(report)))
            .collect();
        // Progress is advisory and latest-wins (a report lost with a broken
        // connection is superseded by the next), sent at most every
        // PROGRESS_EVERY; an attempt's last report goes out before its result
        // whatever the pace (the pump stored it before the result existed).
        let progress: Vec<v1::JobProgressMessage> = {
            let mut pending = lock(&shared.progress);
            if tokio::time::Instant::now() >= progress_due {
                if !pending.is_empty() {
                    progress_due = tokio::time::Instant::now() + PROGRESS_EVERY;
                }
                std::mem::take(&mut *pending).into_values().collect()
            } else {
                results
                    .iter()
                    .filter_map(|(k, _)| pending.remove(k))
                    .collect()
            }
        };
        for p in progress {
            if tx.send(msg(WorkerPayload::Progress(p))).await.is_err() {
                return;
            }
        }
        let unsent = shared
            .unacked
            .unsent(|job_id, attempt| sent_seq.get(&(job_id, attempt)).copied().unwrap_or(0));
        for batch in unsent {
            let key = (batch.job_id, batch.attempt);
            let last = batch.entries.last().map_or(0, |e| e.sequence);
            let entries = batch.entries.iter().map(v1::LogEntry::from).collect();
            let m = msg(WorkerPayload::LogBatch(v1::LogBatch {
                job_id: batch.job_id.to_string(),
                attempt: batch.attempt,
                entries,
            }));
            if tx.send(m).await.is_err() {
                return;
            }
            sent_seq.insert(key, last);
        }
        for (key, result) in results {
            if tx
                .send(msg(WorkerPayload::JobResult(result)))
                .await
                .is_err()
            {
                return;
            }
            sent_results.insert(key);
        }
        // Forget what the server acknowledged, so the maps stay small.
        {
            let live = lock(&shared.results);
            sent_results.retain(|k| live.contains_key(k));
        }
        let progress_waiting = !lock(&shared.progress).is_empty();
        tokio::select! {
            () = cancel.cancelled() => return,
            () = shared.outbox.notified() => {}
            () = tokio::time::sleep_until(progress_due), if progress_waiting => {}
        }
    }
}

fn msg(p: WorkerPayload) -> v1::WorkerMessage {
    v1::WorkerMessage { payload: Some(p) }
}

fn handle_server_message(shared: &Arc<Shared>, m: v1::ServerMessage) {
    match m.payload {
        Some(ServerPayload::RunJob(cmd)) => jobs::start(shared, cmd),
        Some(ServerPayload::CancelJob(c)) => jobs::cancel(shared, &c),
        Some(ServerPayload::Ack(a)) => {
            let Ok(job_id) = a.job_id.parse() else {
                tracing::warn!(job_id = %a.job_id, "ack for an invalid job id");
                return;
            };
            shared.unacked.ack(job_id, a.attempt, a.acked_sequence);
            if a.result_acked && lock(&shared.results).remove(&(job_id, a.attempt)).is_some() {
                tracing::debug!(%job_id, attempt = a.attempt, "result acknowledged");
            }
        }
        Some(ServerPayload::KeepAlive(_)) | None => {}
    }
}
