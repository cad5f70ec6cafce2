//! Workers: OTP registration, sessions, the bidirectional stream, and what
//! happens when a worker finishes, goes idle or is lost.

use std::collections::BTreeMap;

use chrono::Utc;
use tokio::sync::mpsc;

use super::{ControlError, ControlPlane, ControlResult};
use crate::domain::ids::{JobId, WorkerId};
use crate::domain::job::{AttemptResult, Job, JobState};
use crate::domain::logs::LogEntry;
use crate::domain::worker::{Worker, WorkerState};
use crate::domain::worker_protocol::{
    Ack, AttemptReport, Heartbeat, RunJob, WorkerCommand, WorkerReport,
};
use crate::domain::worker_stats::{ResourceUsage, WorkerStats};
use crate::otp::{generate_token, hash_token};
use crate::store::OtpError;

/// What a worker gets back from `Register`.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct RegisterOutcome {
    /// The worker.
    pub worker_id: WorkerId,
    /// Bearer token for its stream and RPCs.
    pub session_token: String,
    /// Whether an existing session was resumed.
    pub resumed: bool,
}

/// An open worker stream: messages to send to the agent.
#[derive(Debug)]
pub struct WorkerStreamHandle {
    /// The worker.
    pub worker_id: WorkerId,
    /// Identifies this connection (a reconnect gets a new one).
    pub conn_id: u64,
    /// Commands for the agent.
    pub outbound: mpsc::Receiver<WorkerCommand>,
}

/// A worker with the name of its provider, for listings.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct WorkerListing {
    /// The worker.
    pub worker: Worker,
    /// Its provider's name (empty when the provider was removed).
    pub provider_name: String,
}

/// A scheduled job not listed by its agent is sent again once it has been
/// scheduled this long (a heartbeat sent before the job arrived lists nothing).
const RESEND_AFTER_MS: i64 = 2_000;

impl ControlPlane {
    /// Exchanges a one-time token for a session, or resumes a session.
    pub async fn register_worker(
        &self,
        otp: &str,
        resume_token: &str,
        claimed_worker: Option<WorkerId>,
    ) -> ControlResult<RegisterOutcome> {
        let stores = &self.inner.stores;
        if !resume_token.is_empty() {
            let hash = hash_token(resume_token);
            let Some(worker_id) = stores.workers.worker_for_session(&hash).await? else {
                return Err(ControlError::Unauthenticated(
                    "unknown or expired session: register again with a new one-time token".into(),
                ));
            };
            if claimed_worker.is_some_and(|c| c != worker_id) {
                return Err(ControlError::PermissionDenied(
                    "session belongs to another worker".into(),
                ));
            }
            // A worker being retired or found lost has no future here: its
            // jobs went elsewhere. Refusing the session makes its agent stop
            // at once instead of reconnecting until it is killed.
            match stores.workers.get(worker_id).await? {
                Some(w) if !w.state().is_gone() => {}
                Some(w) => {
                    return Err(ControlError::Unauthenticated(format!(
                        "session ended: worker {worker_id} is {}",
                        w.state()
                    )));
                }
                None => {
                    return Err(ControlError::Unauthenticated(format!(
                        "session ended: worker {worker_id} no longer exists"
                    )));
                }
            }
            tracing::info!(%worker_id, "worker resumed its session");
            return Ok(RegisterOutcome {
                worker_id,
                session_token: resume_token.to_owned(),
                resumed: true,
            });
        }
        if otp.is_empty() {
            return Err(ControlError::Unauthenticated(
                "a one-time token (otp) is required".into(),
            ));
        }
        let worker_id = match stores.otps.consume(&hash_token(otp), Utc::now()).await {
            Ok(w) => w,
            Err(OtpError::Invalid) => {
                return Err(ControlError::Unauthenticated(
                    "one-time token invalid, used or expired".into(),
                ));
            }
            Err(OtpError::Store(e)) => return Err(e.into()),
        };
        if claimed_worker.is_some_and(|c| c != worker_id) {
            return Err(ControlError::PermissionDenied(
                "one-time token was issued to another worker".into(),
            ));
        }
        let token = generate_token();
        stores
            .workers
            .set_session(worker_id, &hash_token(&token))
            .await?;
        tracing::info!(%worker_id, "worker registered");
        Ok(RegisterOutcome {
            worker_id,
            session_token: token,
            resumed: false,
        })
    }

    /// The worker a session token belongs to.
    pub async fn authenticate_worker(&self, token: &str) -> ControlResult<WorkerId> {
        if token.is_empty() {
            return Err(ControlError::Unauthenticated(
                "missing session token (authorization: Bearer <token>)".into(),
            ));
        }
        self.inner
            .stores
            .workers
            .worker_for_session(&hash_token(token))
            .await?
            .ok_or_else(|| ControlError::Unauthenticated("invalid session token".into()))
    }

    /// Opens the worker's stream: from now on commands for it go to the returned receiver.
    pub async fn open_worker_stream(
        &self,
        worker_id: WorkerId,
    ) -> ControlResult<WorkerStreamHandle> {
        let (worker, ()) = self
            .update_existing_worker(worker_id, |w| {
                if w.state().is_gone() {
                    return Err(ControlError::FailedPrecondition(format!(
                        "worker {worker_id} is {}",
                        w.state()
                    )));
                }
                Ok(w.registered()?)
            })
            .await?;
        let (conn_id, rx) = self.inner.sessions.open(&worker);
        self.wake();
        Ok(WorkerStreamHandle {
            worker_id,
            conn_id,
            outbound: rx,
        })
    }

    /// The stream closed. The worker may reconnect; if it does not, it is lost
    /// after `worker_lost_after` without heartbeats.
    pub async fn close_worker_stream(&self, worker_id: WorkerId, conn_id: u64) {
        if self.inner.sessions.close(worker_id, conn_id) {
            // Its agent reports its certificate again in every heartbeat
            // after a reconnect; a worker gone for good leaves the gauge.
            crate::cert_expiry::forget_worker(&worker_id.to_string());
            tracing::info!(%worker_id, "worker stream closed");
        }
    }

    /// Whether the worker has an open stream.
    #[must_use]
    pub fn is_connected(&self, worker_id: WorkerId) -> bool {
        self.inner.sessions.is_connected(worker_id)
    }

    /// A worker that must exist (`NotFound` otherwise).
    pub(super) async fn load_worker(&self, worker_id: WorkerId) -> ControlResult<Worker> {
        self.inner
            .stores
            .workers
            .get(worker_id)
            .await?
            .ok_or_else(|| ControlError::NotFound(format!("worker {worker_id}")))
    }

    /// Tells a worker to cancel a job attempt.
    pub(super) async fn send_cancel(&self, worker_id: WorkerId, job: &Job, reason: &str) {
        let sent = self
            .inner
            .sessions
            .send(
                worker_id,
                WorkerCommand::Cancel {
                    job_id: job.id(),
                    attempt: job.execution_context().attempt,
                    reason: reason.to_owned(),
                },
            )
            .await;
        if !sent {
            tracing::warn!(%worker_id, job_id = %job.id(), "could not deliver cancel: worker not connected");
        }
    }

    /// Sends the job's current attempt to its worker.
    /// A job whose secrets cannot be opened (another key) fails for good:
    /// retrying cannot help.
    pub(super) async fn send_run(&self, worker_id: WorkerId, job: &Job) -> ControlResult<bool> {
        let resume_after = self.resume_point(job).await?;
        self.send_run_from(worker_id, job, resume_after).await
    }

    /// The last log sequence stored for the job's current attempt: the
    /// agent resumes after it (a re-sent attempt never repeats a line).
    pub(super) async fn resume_point(&self, job: &Job) -> ControlResult<u64> {
        Ok(self
            .inner
            .stores
            .logs
            .last_sequence(job.id(), job.execution_context().attempt)
            .await?)
    }

    /// [`Self::send_run`] with the resume point already read.
    pub(super) async fn send_run_from(
        &self,
        worker_id: WorkerId,
        job: &Job,
        resume_after: u64,
    ) -> ControlResult<bool> {
        let attempt = job.execution_context().attempt;
        let mut spec = job.spec().clone();
        spec.secrets = match self.inner.sealer.open(&spec.secrets) {
            Ok(s) => s,
            Err(e) => {
                let why = e.to_string();
                tracing::error!(job_id = %job.id(), error = %why, "cannot open job secrets");
                self.transition_job(job.id(), &why, |j| {
                    Ok(j.fail(crate::domain::job::AttemptResult::with_outcome(
                        crate::domain::job::AttemptOutcome::StartFailed,
                        Some(why.clone()),
                    ))?)
                })
                .await?;
                self.release_worker_slot(worker_id, job.id()).await?;
                return Ok(true);
            }
        };
        let run = RunJob::new(
            job.id(),
            attempt,
            spec,
            job.correlation_id().to_string(),
            resume_after,
        );
        Ok(self
            .inner
            .sessions
            .send(worker_id, WorkerCommand::Run(Box::new(run)))
            .await)
    }

    /// Handles one report from a worker's stream.
    pub async fn handle_worker_report(
        &self,
        worker_id: WorkerId,
        report: WorkerReport,
    ) -> ControlResult<()> {
        match report {
            WorkerReport::Heartbeat(hb) => self.on_heartbeat(worker_id, hb).await,
            WorkerReport::JobStarted { job_id, attempt } => {
                match self.job_started(worker_id, job_id, attempt).await {
                    Ok(_) => Ok(()),
                    Err(e @ ControlError::PermissionDenied(_)) => Err(e),
                    Err(e) => {
                        tracing::debug!(%worker_id, %job_id, error = %e, "ignored job_started");
                        Ok(())
                    }
                }
            }
            WorkerReport::Logs {
                job_id,
                attempt,
                entries,
            } => self.on_logs(worker_id, job_id, attempt, entries).await,
            WorkerReport::Result(report) => self.on_job_result(worker_id, report).await,
            WorkerReport::Stats(usage) => self.on_worker_stats(worker_id, &usage).await,
            WorkerReport::Progress {
                job_id,
                attempt,
                percent,
                message,
            } => {
                // Progress is advisory: a late report (the job finished, a new
                // attempt started) is dropped, never an error on the stream.
                match self
                    .job_progress(worker_id, job_id, attempt, percent, &message)
                    .await
                {
                    Ok(()) => Ok(()),
                    Err(e @ ControlError::PermissionDenied(_)) => Err(e),
                    Err(e) => {
                        tracing::debug!(%worker_id, %job_id, error = %e, "ignored progress");
                        Ok(())
                    }
                }
            }
        }
    }

    async fn on_heartbeat(&self, worker_id: WorkerId, hb: Heartbeat) -> ControlResult<()> {
        // One atomic write, outside the worker lock: heartbeats are the most
        // frequent write and must not queue behind assignments.
        let stats = heartbeat_stats(&hb);
        let touched = self
            .inner
            .stores
            .workers
            .touch(worker_id, Utc::now(), stats.as_ref())
            .await?;
        let Some(assigned) = touched else {
            // Another replica found this worker lost (this one was frozen or
            // cut off) and gave its jobs away: end the stream, so the agent's
            // resume is refused and it stops instead of idling on.
            if self.inner.sessions.remove(worker_id) {
                crate::cert_expiry::forget_worker(&worker_id.to_string());
                tracing::warn!(%worker_id, "heartbeat from a worker that is gone: stream closed");
            }
            return Ok(());
        };
        // From the agent's send to the stored heartbeat: the first figure an
        // overloaded server shows (agent and server clocks are assumed close).
        if let Some(sent) = hb.sent_at {
            let lag = (Utc::now() - sent).to_std().unwrap_or_default();
            ::metrics::histogram!(crate::telemetry::HEARTBEAT_LAG).record(lag.as_secs_f64());
        }
        if let (Some(m), Some(u)) = (self.metrics(), hb.usage.as_ref()) {
            m.record(worker_id, u.clone());
        }
        self.resend_missing_runs(worker_id, &assigned, &hb.running_jobs)
            .await
    }

    /// A job bound to this worker and still `Scheduled` that the agent does
    /// not list as running never reached it (the server died between binding
    /// and sending, or the stream broke): send it again. The agent ignores a
    /// `run_job` for an attempt it already runs or finished, so a late
    /// heartbeat makes this harmless.
    async fn resend_missing_runs(
        &self,
        worker_id: WorkerId,
        assigned: &[JobId],
        running: &[JobId],
    ) -> ControlResult<()> {
        let settle = chrono::Duration::milliseconds(RESEND_AFTER_MS);
        for &job_id in assigned {
            if running.contains(&job_id) {
                continue;
            }
            let Some(job) = self.inner.stores.jobs.get(job_id).await? else {
                continue;
            };
            if job.state() == JobState::Scheduled
                && job.worker_id() == Some(worker_id)
                && Utc::now() - job.updated_at() > settle
            {
                tracing::warn!(%worker_id, %job_id, "the agent does not have its scheduled job: sending it again");
                self.send_run(worker_id, &job).await?;
            }
        }
        Ok(())
    }

    /// Whether the worker may send data for this job (assigned to it now).
    async fn owned_job(&self, worker_id: WorkerId, job_id: JobId) -> ControlResult<Option<Job>> {
        match self.inner.stores.jobs.get(job_id).await? {
            Some(job) if job.worker_id() == Some(worker_id) => Ok(Some(job)),
            _ => Ok(None),
        }
    }

    async fn ack(&self, worker_id: WorkerId, ack: Ack) {
        let _ = self
            .inner
            .sessions
            .send(worker_id, WorkerCommand::Ack(ack))
            .await;
    }

    async fn on_logs(
        &self,
        worker_id: WorkerId,
        job_id: JobId,
        attempt: u32,
        entries: Vec<LogEntry>,
    ) -> ControlResult<()> {
        let Some(_job) = self.owned_job(worker_id, job_id).await? else {
            // Not this worker's job (any more): nothing is stored. The ack lets a
            // stale agent drop the data instead of resending it forever.
            tracing::warn!(%worker_id, %job_id, "log batch for a job not assigned to this worker: dropped");
            let last = entries.last().map_or(0, |e| e.sequence);
            self.ack(worker_id, Ack::new(job_id, attempt, last, false))
                .await;
            return Ok(());
        };
        let acked = self.inner.logs.append(job_id, attempt, entries).await?;
        self.ack(worker_id, Ack::new(job_id, attempt, acked, false))
            .await;
        Ok(())
    }

    async fn on_job_result(&self, worker_id: WorkerId, report: AttemptReport) -> ControlResult<()> {
        let AttemptReport {
            job_id,
            attempt,
            result,
            ran_for,
            last_sequence: agent_last,
            ..
        } = report;
        let outcome = result.outcome;
        let accepted = match self
            .report_job_result(worker_id, job_id, attempt, result)
            .await
        {
            Ok(_) => true,
            Err(ControlError::PermissionDenied(m)) | Err(ControlError::FailedPrecondition(m)) => {
                // A stale attempt or a job taken away (lost and retried elsewhere):
                // acknowledge so the agent forgets it; nothing changes.
                tracing::warn!(%worker_id, %job_id, attempt, "stale job result ignored: {m}");
                false
            }
            Err(e) => return Err(e),
        };
        let last = self
            .inner
            .stores
            .logs
            .last_sequence(job_id, attempt)
            .await?;
        if accepted {
            crate::telemetry::attempt_reported(outcome, ran_for, agent_last.saturating_sub(last));
            if last < agent_last {
                // The agent sends an attempt's logs before its result on the
                // same ordered stream: a gap means entries were lost on the way.
                tracing::warn!(
                    %worker_id, %job_id, attempt, stored = last, reported = agent_last,
                    "the job ended with log entries missing"
                );
            }
        }
        self.ack(worker_id, Ack::new(job_id, attempt, last, true))
            .await;
        Ok(())
    }

    /// A worker reports how an attempt of its job ended (on its stream, or by
    /// the unary `CompleteJob`/`FailJob` calls): the job moves on, and the
    /// secrets the attempt was given are recorded in the audit trail, once,
    /// with the result that was accepted (a resent result is refused).
    ///
    /// # Errors
    /// `PermissionDenied` when the job is not this worker's, `FailedPrecondition`
    /// for a stale attempt or a finished job; store errors.
    pub async fn report_job_result(
        &self,
        worker_id: WorkerId,
        job_id: JobId,
        attempt: u32,
        result: AttemptResult,
    ) -> ControlResult<Job> {
        let injected = result.secrets_injected.clone();
        let job = self
            .job_finished(worker_id, job_id, attempt, result)
            .await?;
        if !injected.is_empty() {
            self.audit()
                .append(
                    crate::store::NewAuditEntry::new(
                        super::Actor::worker(worker_id).as_str(),
                        crate::store::AuditAction::SecretInjected,
                        super::job_target(job_id),
                    )
                    .with_outcome(
                        crate::store::AuditOutcome::Success,
                        format!("attempt {attempt}: {}", injected.join(", ")),
                    ),
                )
                .await;
        }
        Ok(job)
    }

    /// A job left this worker: free its slot; retire it if its job budget is used up.
    pub(super) async fn release_worker_slot(
        &self,
        worker_id: WorkerId,
        job: JobId,
    ) -> ControlResult<()> {
        let released = self
            .update_worker(worker_id, |w| {
                if !w.current_jobs().contains(&job) {
                    return Ok(false);
                }
                w.release(job)?;
                Ok(true)
            })
            .await?;
        let Some((w, true)) = released else {
            return Ok(());
        };
        let retire = w.is_exhausted() && w.current_jobs().is_empty();
        self.refresh_provider_load_soon(w.provider_id());
        if retire {
            self.retire_worker(worker_id, "job budget used up (ephemeral worker)")
                .await;
        }
        Ok(())
    }

    /// Drains a worker on request: it takes no new jobs.
    pub async fn drain_worker(&self, worker_id: WorkerId) -> ControlResult<Worker> {
        let (w, ()) = self
            .update_existing_worker(worker_id, |w| Ok(w.drain()?))
            .await?;
        Ok(w)
    }

    /// The worker says goodbye: it is destroyed once its jobs are done (now, if idle).
    pub async fn unregister_worker(&self, worker_id: WorkerId, reason: &str) -> ControlResult<()> {
        let w = self.load_worker(worker_id).await?;
        // The agent is waiting for this answer before it exits, and destroying
        // it waits for it to exit: so destroy in the background.
        let cp = self.clone();
        let reason = reason.to_owned();
        tokio::spawn(async move {
            if w.current_jobs().is_empty() {
                cp.retire_worker(worker_id, &reason).await;
            } else {
                cp.worker_lost(worker_id, &format!("worker unregistered: {reason}"))
                    .await;
            }
        });
        Ok(())
    }

    /// Destroys every worker and waits for it (server shutdown): no agent
    /// outlives an embedded server.
    pub async fn retire_all_workers(&self, reason: &str) {
        let ids: Vec<WorkerId> = match self.inner.stores.workers.list().await {
            Ok(ws) => ws.iter().map(Worker::id).collect(),
            Err(_) => return,
        };
        futures::future::join_all(ids.into_iter().map(|id| self.retire(id, reason, true))).await;
    }

    /// Destroys a worker that has no job (idle timeout, drained, ephemeral,
    /// unregistered). One that was given a job since the caller looked
    /// (another task or replica assigned it) is left alone.
    pub(super) async fn retire_worker(&self, worker_id: WorkerId, reason: &str) {
        self.retire(worker_id, reason, false).await;
    }

    /// Destroys a worker, even a busy one when `busy_too` (server shutdown).
    async fn retire(&self, worker_id: WorkerId, reason: &str, busy_too: bool) {
        let retiring = self
            .update_worker(worker_id, |w| {
                if w.state().is_gone() || (!busy_too && !w.current_jobs().is_empty()) {
                    return Ok(None);
                }
                let _ = w.terminating();
                Ok(Some(w.handle().cloned()))
            })
            .await;
        let handle = match retiring {
            Ok(Some((_, Some(handle)))) => handle,
            // Unknown, already gone (retired or lost by another caller), or
            // busy again.
            Ok(_) => return,
            Err(e) => {
                tracing::warn!(%worker_id, error = %e, "could not retire worker");
                return;
            }
        };
        tracing::info!(%worker_id, reason, "retiring worker");
        self.destroy_and_forget(worker_id, handle).await;
    }

    /// A `Terminating` worker silent for longer than the loss window plus the
    /// registration timeout: the retirement or loss that began it died half way.
    pub(super) fn stuck_terminating(&self, w: &Worker, now: chrono::DateTime<Utc>) -> bool {
        let stuck_after = chrono::Duration::from_std(
            self.inner.config.worker_lost_after + self.inner.config.registration_timeout,
        )
        .unwrap_or(chrono::Duration::seconds(75));
        w.state() == WorkerState::Terminating && now - w.last_heartbeat() > stuck_after
    }

    /// The worker is gone (heartbeat timeout, process died, unregistered while
    /// busy): its jobs are retried (or failed when out of attempts) and it is destroyed.
    pub(super) async fn worker_lost(&self, worker_id: WorkerId, reason: &str) {
        let now = Utc::now();
        let lost = self
            .update_worker(worker_id, |w| {
                if w.state() == WorkerState::Terminated {
                    return Ok(None);
                }
                if w.state() == WorkerState::Terminating
                    && w.current_jobs().is_empty()
                    && !self.stuck_terminating(w, now)
                {
                    // Already being retired or handled as lost by another caller.
                    return Ok(None);
                }
                let jobs = w.current_jobs().to_vec();
                let _ = w.terminating();
                Ok(Some((jobs, w.handle().cloned())))
            })
            .await;
        let (jobs, handle) = match lost {
            Ok(Some((_, Some(lost)))) => lost,
            Ok(_) => return,
            Err(e) => {
                tracing::warn!(%worker_id, error = %e, "could not mark the lost worker");
                return;
            }
        };
        tracing::warn!(%worker_id, reason, jobs = jobs.len(), "worker lost");
        for job in jobs {
            let still_there = matches!(
                self.inner.stores.jobs.get(job).await,
                Ok(Some(j)) if j.worker_id() == Some(worker_id)
                    && matches!(j.state(), JobState::Scheduled | JobState::Running)
            );
            if still_there
                && let Err(e) = self
                    .fail_attempt(job, worker_id, &format!("worker lost: {reason}"), true)
                    .await
            {
                tracing::warn!(job_id = %job, error = %e, "could not retry job of lost worker");
            }
        }
        self.destroy_and_forget(worker_id, handle).await;
    }

    async fn destroy_and_forget(
        &self,
        worker_id: WorkerId,
        handle: Option<crate::domain::worker::WorkerHandle>,
    ) {
        self.inner.sessions.remove(worker_id);
        let handle_provider = handle.as_ref().map(|h| h.provider_id);
        if let Some(h) = handle
            && let Some(entry) = self.provider_entry(h.provider_id)
            && let Err(e) = entry.provider.destroy_worker(&h).await
        {
            tracing::warn!(%worker_id, error = %e, "destroying worker failed");
        }
        let _ = self.inner.stores.workers.remove(worker_id).await;
        if let Some(h) = handle_provider {
            self.refresh_provider_load_soon(h);
        }
        self.wake();
    }

    /// Workers with their provider names, for listings: all of them, or
    /// only those ready for a job.
    pub async fn list_workers(&self, include_busy: bool) -> ControlResult<Vec<WorkerListing>> {
        let names: BTreeMap<_, _> = self
            .inner
            .stores
            .providers
            .list()
            .await?
            .into_iter()
            .map(|p| (p.id(), p.name().to_owned()))
            .collect();
        Ok(self
            .inner
            .stores
            .workers
            .list()
            .await?
            .into_iter()
            .filter(|w| include_busy || w.state() == WorkerState::Ready)
            .map(|worker| WorkerListing {
                provider_name: names
                    .get(&worker.provider_id())
                    .cloned()
                    .unwrap_or_default(),
                worker,
            })
            .collect())
    }

    /// Keep-alive to every connected worker (dropped when a stream is full).
    pub(super) fn send_keep_alives(&self) {
        self.inner
            .sessions
            .try_send_all(&WorkerCommand::KeepAlive { at: Utc::now() });
    }

    /// Stores the usage of a `stats` report on the worker (and feeds the
    /// metrics backend when enabled). A worker already gone is ignored.
    async fn on_worker_stats(
        &self,
        worker_id: WorkerId,
        usage: &ResourceUsage,
    ) -> ControlResult<()> {
        if let Some(m) = self.metrics() {
            m.record(worker_id, usage.clone());
        }
        // A stats message is a sign of life too: one atomic write, like a
        // heartbeat (a gone worker is left alone).
        let now = Utc::now();
        self.inner
            .stores
            .workers
            .touch(worker_id, now, Some(&WorkerStats::from_usage(usage, now)))
            .await?;
        Ok(())
    }
}

/// The usage carried by a heartbeat, for the worker being updated. An
/// agent's first heartbeats may carry an empty sample (its cache not filled
/// yet: no live process uses 0 bytes): not a measurement, skipped.
fn heartbeat_stats(hb: &Heartbeat) -> Option<WorkerStats> {
    hb.usage
        .as_ref()
        .filter(|u| u.memory_bytes > 0)
        .map(|u| WorkerStats::from_usage(u, Utc::now()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::ids::ProviderId;
    use crate::domain::worker::WorkerHandle;
    use crate::store::Stores;

    /// A `Ready` worker, with `jobs` assigned.
    async fn worker(cp: &ControlPlane, jobs: usize) -> Worker {
        let workers = &cp.inner.stores.workers;
        let p = ProviderId::new();
        let mut w = workers
            .register(&Worker::new(WorkerId::new(), p).with_limits(4, None))
            .await
            .unwrap();
        w.created(WorkerHandle::new(w.id(), p, "ext")).unwrap();
        w.registered().unwrap();
        for _ in 0..jobs {
            w.assign(JobId::new()).unwrap();
        }
        workers.update(&w).await.unwrap()
    }

    #[tokio::test]
    async fn retiring_an_idle_worker_leaves_one_that_took_a_job_meanwhile() {
        let cp = ControlPlane::builder().stores(Stores::in_memory()).build();
        let workers = cp.inner.stores.workers.clone();
        // Seen idle by the caller, then given a job by another task.
        let busy = worker(&cp, 1).await;
        cp.retire_worker(busy.id(), "idle timeout").await;
        let got = workers.get(busy.id()).await.unwrap().unwrap();
        assert_eq!(got.state(), WorkerState::Busy, "kept with its job");

        let idle = worker(&cp, 0).await;
        cp.retire_worker(idle.id(), "idle timeout").await;
        assert!(workers.get(idle.id()).await.unwrap().is_none(), "retired");

        // Shutdown retires busy ones too.
        cp.retire_all_workers("shutdown").await;
        assert!(workers.get(busy.id()).await.unwrap().is_none());
    }
}
