//! The provisioning saga: create a worker with a one-time token → wait for
//! its agent to register → bind the queued job to it; on any failure destroy
//! the worker and put the job back. Also the warm pools (`min_idle`).
//!
//! The saga is resumable from the store: the job keeps its queue entry,
//! claimed under a lease this replica renews, until it is bound to the new
//! worker. If this replica dies mid-saga the lease expires, the leader
//! returns the entry, and its audit destroys the half-made worker
//! (`reconcile`).

use std::sync::Arc;

use chrono::Utc;
use tracing::Instrument;

use super::lease_keeper::LeaseKeeper;
use super::providers::ProviderEntry;
use super::{ControlError, ControlPlane, ControlResult};
use crate::domain::ids::{JobId, ProviderId, WorkerId};
use crate::domain::job::{Job, JobState};
use crate::domain::provider::ProviderStatus;
use crate::domain::worker::{WORKER_ENV_JOB_TIMEOUT_SECS, Worker, WorkerSpec};
use crate::otp::{generate_token, hash_token};
use crate::traces;

/// A provisioning for a queued job: the job and the queue lease held until
/// the job is bound to the new worker.
struct ForJob {
    job: Job,
    lease: LeaseKeeper,
    /// When the job entered the queue (for the dispatch latency).
    pending_since: chrono::DateTime<Utc>,
}

impl ControlPlane {
    /// Starts the provisioning saga for a queued job.
    pub(super) async fn provision_for(
        &self,
        job_id: JobId,
        provider_id: ProviderId,
    ) -> ControlResult<()> {
        let Some(entry) = self.provider_entry(provider_id) else {
            return Err(ControlError::NotFound(format!("provider {provider_id}")));
        };
        let Some(lease) = self
            .inner
            .stores
            .queue
            .claim_job(job_id, self.inner.config.dispatch_lease)
            .await?
        else {
            return Ok(());
        };
        let mut pending_since = Utc::now();
        let job = match self
            .transition_job(job_id, "provisioning a worker", |j| {
                pending_since = j.updated_at();
                Ok(j.submit_to_provider(provider_id, None)?)
            })
            .await
        {
            Ok(j) => j,
            Err(e) => {
                self.inner.stores.queue.release(&lease).await?;
                return Err(e);
            }
        };
        // The entry stays claimed until the job is bound to a worker: if this
        // controller dies meanwhile, the lease expires and the job is given back.
        let lease = LeaseKeeper::start(
            self.inner.stores.queue.clone(),
            lease,
            self.inner.config.dispatch_lease,
        );
        let worker = match self.new_worker(&entry, provider_id).await {
            Ok(w) => w,
            Err(e) => {
                if let Some(lease) = lease.finish().await {
                    self.settle_entry(lease, &format!("could not record a new worker: {e}"))
                        .await;
                }
                return Err(e);
            }
        };
        let span = traces::provision_span(&job, entry.provider.name(), worker.id());
        let cp = self.clone();
        tokio::spawn(
            async move {
                cp.provisioning_saga(
                    entry,
                    worker,
                    Some(ForJob {
                        job,
                        lease,
                        pending_since,
                    }),
                )
                .await;
            }
            .instrument(span),
        );
        Ok(())
    }

    async fn new_worker(
        &self,
        entry: &ProviderEntry,
        provider_id: ProviderId,
    ) -> ControlResult<Worker> {
        let worker = Worker::new(WorkerId::new(), provider_id).with_limits(
            entry.policy.max_concurrent_jobs_per_worker,
            entry.policy.max_jobs_per_worker,
        );
        self.inner.stores.workers.register(&worker).await?;
        Ok(worker)
    }

    /// create worker (with an OTP) → wait for its registration → assign the job.
    /// On any failure: destroy the worker, put the job back, record why.
    async fn provisioning_saga(
        &self,
        entry: Arc<ProviderEntry>,
        worker: Worker,
        for_job: Option<ForJob>,
    ) {
        let worker_id = worker.id();
        let provider_id = worker.provider_id();
        if for_job.is_some() {
            self.inner.sessions.reserve(worker_id);
        }
        self.provisioning_saga_inner(entry, worker_id, provider_id, for_job)
            .await;
        self.inner.sessions.unreserve(worker_id);
        self.wake();
    }

    async fn provisioning_saga_inner(
        &self,
        entry: Arc<ProviderEntry>,
        worker_id: WorkerId,
        provider_id: ProviderId,
        for_job: Option<ForJob>,
    ) {
        let job = for_job.as_ref().map(|f| f.job.clone());
        let mut registration = self.inner.sessions.wait_open(worker_id);
        let mut exited = self.inner.worker_exited.subscribe();
        let otp = generate_token();
        let expires = Utc::now()
            + chrono::Duration::from_std(self.inner.config.otp_ttl)
                .unwrap_or(chrono::Duration::minutes(10));
        let started = std::time::Instant::now();
        let result: Result<(), String> = async {
            self.inner
                .stores
                .otps
                .insert(&hash_token(&otp), worker_id, expires)
                .await
                .map_err(|e| format!("storing the one-time token failed: {e}"))?;
            let mut spec = WorkerSpec::new(
                worker_id,
                provider_id,
                self.inner.config.worker_server_address.clone(),
                otp,
            );
            spec.max_concurrent_jobs = entry.policy.max_concurrent_jobs_per_worker;
            if let Some(job) = &job {
                spec.resources = job.spec().resources.clone();
                spec.image = job.spec().image.clone();
                // An ephemeral worker lives for this one job: providers may bound its
                // lifetime by the job's timeout (Kubernetes `activeDeadlineSeconds`).
                if entry.policy.max_jobs_per_worker == Some(1) && job.spec().timeout_ms > 0 {
                    spec.env.insert(
                        WORKER_ENV_JOB_TIMEOUT_SECS.to_owned(),
                        job.spec().timeout_ms.div_ceil(1000).to_string(),
                    );
                }
            }
            let span = traces::create_worker_span(job.as_ref(), entry.provider.name(), worker_id);
            let handle = entry.provider.create_worker(&spec).instrument(span).await.map_err(|e| {
                format!(
                    "provider {} could not create a worker: {e}",
                    entry.provider.name()
                )
            })?;
            self.update_worker(worker_id, |w| Ok(w.created(handle.clone())?))
                .await
                .map_err(|e| e.to_string())?
                .ok_or("worker vanished during provisioning")?;
            // Wait for the agent's stream (it may already be open), or for the
            // provider to see the worker die first (a guest that cannot boot, a
            // container that exits, a pod that cannot start): no use waiting then.
            let deadline = tokio::time::Instant::now() + self.inner.config.registration_timeout;
            let timed_out = || {
                format!(
                    "worker did not register within {:?}",
                    self.inner.config.registration_timeout
                )
            };
            loop {
                use tokio::sync::broadcast::error::RecvError;
                tokio::select! {
                    () = registration.opened() => break,
                    r = exited.recv() => match r {
                        Ok((id, why)) if id == worker_id => {
                            return Err(format!("worker exited before registering: {why}"));
                        }
                        Ok(_) | Err(RecvError::Lagged(_)) => {}
                        Err(RecvError::Closed) => return Err("control plane shutting down".to_owned()),
                    },
                    () = tokio::time::sleep_until(deadline) => return Err(timed_out()),
                }
            }
            Ok(())
        }
        .await;
        match result {
            Ok(()) => {
                crate::telemetry::worker_provisioned(entry.provider.name(), started.elapsed());
                tracing::info!(%worker_id, provider = %entry.provider.name(), elapsed_ms = started.elapsed().as_millis() as u64, "worker provisioned");
                if let Some(ForJob {
                    job,
                    lease,
                    pending_since,
                }) = for_job
                {
                    if let Err(e) = self
                        .bind_provisioned(job.id(), worker_id, pending_since)
                        .await
                    {
                        tracing::warn!(job_id = %job.id(), %worker_id, error = %e, "assigning the provisioned worker failed");
                    }
                    // Bound (the entry is done) or given back (it is queued again).
                    if let Some(lease) = lease.finish().await {
                        self.settle_entry(lease, "the provisioned worker could not take the job")
                            .await;
                    }
                }
                self.wake();
            }
            Err(why) => {
                tracing::warn!(%worker_id, provider = %entry.provider.name(), reason = %why, "provisioning failed; compensating");
                self.provider_failed(provider_id, &why).await;
                let handle = self
                    .inner
                    .stores
                    .workers
                    .get(worker_id)
                    .await
                    .ok()
                    .flatten()
                    .and_then(|w| w.handle().cloned());
                if let Some(h) = handle
                    && let Err(e) = entry.provider.destroy_worker(&h).await
                {
                    tracing::warn!(%worker_id, error = %e, "compensation: destroy failed");
                }
                let _ = self.inner.stores.workers.remove(worker_id).await;
                // The job goes back to the queue; a lease already lost was
                // rescued by the leader, whose dispatch settles the entry.
                if let Some(ForJob { lease, .. }) = for_job
                    && let Some(lease) = lease.finish().await
                {
                    self.settle_entry(lease, &why).await;
                }
            }
        }
    }

    /// The provisioned worker registered: give it the job it was made for.
    async fn bind_provisioned(
        &self,
        job_id: JobId,
        worker_id: WorkerId,
        pending_since: chrono::DateTime<Utc>,
    ) -> ControlResult<()> {
        let assigned = self
            .update_existing_worker(worker_id, |w| {
                w.assign(job_id)?;
                Ok(w.provider_id())
            })
            .await
            .map(|(_, provider_id)| provider_id);
        let assigned = match assigned {
            Ok(provider_id) => {
                self.refresh_provider_load_soon(provider_id);
                Ok(())
            }
            Err(e) => Err(e),
        };
        if let Err(e) = assigned {
            // Never leave the job stranded in `Scheduled`: back to the queue.
            let why = format!("provisioned worker could not take the job: {e}");
            self.release_to_queue(job_id, &why).await?;
            return Err(e);
        }
        let bound = self
            .update_job(job_id, |j| {
                if j.state() != JobState::Scheduled || j.worker_id().is_some() {
                    return Err(ControlError::FailedPrecondition(format!(
                        "job {} is {} (cancelled while provisioning?)",
                        j.id(),
                        j.state()
                    )));
                }
                Ok(j.assign_worker(worker_id)?)
            })
            .await;
        let job = match bound {
            Ok((job, ())) => job,
            Err(e) => {
                // The job moved on (cancelled): the worker stays as an idle pool member.
                self.release_worker_slot(worker_id, job_id).await?;
                return Err(e);
            }
        };
        if !self.send_run(worker_id, &job).await? {
            self.undo_assignment(
                job_id,
                worker_id,
                "worker disconnected before the job was sent",
            )
            .await?;
        } else {
            crate::telemetry::job_dispatched(pending_since);
            tracing::info!(%job_id, %worker_id, "job dispatched to provisioned worker");
        }
        Ok(())
    }

    /// Keeps `min_idle` idle workers per provider.
    ///
    /// Reads two counts per provider (live workers, idle ones), not every
    /// worker: with 10,000 agents on Postgres, loading and decoding them all
    /// held the control loop, and the dispatches waiting on it, for tens of
    /// milliseconds each reconcile interval.
    pub(super) async fn keep_warm_pools(&self) -> ControlResult<()> {
        let entries: Vec<_> = self
            .provider_entries()
            .into_iter()
            .filter(|e| e.policy.min_idle > 0)
            .collect();
        if entries.is_empty() {
            return Ok(());
        }
        let workers = &self.inner.stores.workers;
        let (alive, idle) = tokio::join!(
            workers.count_alive_by_provider(),
            workers.count_idle_by_provider(),
        );
        let (alive, idle) = (alive?, idle?);
        for entry in entries {
            let pid = entry.provider.id();
            let Some(p) = self.inner.stores.providers.get(pid).await? else {
                continue;
            };
            // An operator's maintenance/disabled keeps no warm pool.
            if !p.is_healthy()
                || matches!(
                    p.status(),
                    ProviderStatus::Maintenance | ProviderStatus::Disabled
                )
            {
                continue;
            }
            let mine = alive.get(&pid).copied().unwrap_or(0);
            let idle = idle.get(&pid).copied().unwrap_or(0);
            let room = entry.policy.max_workers.saturating_sub(mine);
            for _ in 0..entry.policy.min_idle.saturating_sub(idle).min(room) {
                let worker = self.new_worker(&entry, pid).await?;
                let cp = self.clone();
                let entry = entry.clone();
                tokio::spawn(async move { cp.provisioning_saga(entry, worker, None).await });
            }
        }
        Ok(())
    }
}
