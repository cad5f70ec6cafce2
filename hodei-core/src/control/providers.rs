//! The provider registry: runtime providers with their pool policies, their
//! stored aggregates, periodic health checks and worker events.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Instant;

use futures::StreamExt;

use super::{ControlError, ControlPlane, ControlResult, PoolPolicy};
use crate::domain::ids::{ProviderId, WorkerId};
use crate::domain::job::Job;
use crate::domain::pricing::ResourcePricing;
use crate::domain::provider::{Provider, ProviderConfig, ProviderStatus};
use crate::domain::spec::{CommandType, JobSpec};
use crate::domain::worker::WorkerHandle;
use crate::provider::{Eligibility, HealthStatus, ResourceUsage, WorkerEvent, WorkerProvider};
use crate::scheduler::{self, Decision, ProviderView, SchedulingSnapshot, Strategy};

/// How soon a provider is probed again after a failed provisioning.
const PROBE_AFTER_FAILURE: std::time::Duration = std::time::Duration::from_secs(2);

/// A live provider with the pool policy it was registered with.
pub(super) struct ProviderEntry {
    pub(super) provider: Arc<dyn WorkerProvider>,
    pub(super) policy: PoolPolicy,
}

/// The providers this replica can create workers with, by id.
#[derive(Default)]
pub(super) struct ProviderRegistry {
    entries: RwLock<HashMap<ProviderId, Arc<ProviderEntry>>>,
}

impl ProviderRegistry {
    /// Adds a provider, or replaces the one with its id.
    fn insert(&self, provider: Arc<dyn WorkerProvider>, policy: PoolPolicy) {
        let entry = Arc::new(ProviderEntry { provider, policy });
        self.entries
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(entry.provider.id(), entry);
    }

    /// The provider with this id.
    pub(super) fn get(&self, id: ProviderId) -> Option<Arc<ProviderEntry>> {
        self.entries
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&id)
            .cloned()
    }

    /// Every provider.
    pub(super) fn all(&self) -> Vec<Arc<ProviderEntry>> {
        self.entries
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .cloned()
            .collect()
    }

    /// Forgets a provider.
    pub(super) fn remove(&self, id: ProviderId) {
        self.entries
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&id);
    }
}

impl ControlPlane {
    /// Registers a runtime provider under its name with a pool policy, stores
    /// its aggregate, checks its health once and starts following its events.
    pub async fn register_provider(
        &self,
        provider: Arc<dyn WorkerProvider>,
        config: ProviderConfig,
        policy: PoolPolicy,
    ) -> ControlResult<Provider> {
        let id = provider.id();
        if let Some(existing) = self
            .inner
            .stores
            .providers
            .get_by_name(provider.name())
            .await?
            && existing.id() != id
        {
            return Err(ControlError::FailedPrecondition(format!(
                "a provider named {:?} is already registered",
                provider.name()
            )));
        }
        // Registered again under its stored id (restart): an operator's
        // maintenance/disabled state and the runtime origin are kept.
        let stored = self.inner.stores.providers.get(id).await?;
        let mut aggregate = Provider::new(id, provider.name(), config, provider.capabilities())
            .registered_at_runtime(
                stored
                    .as_ref()
                    .is_some_and(Provider::is_registered_at_runtime),
            )
            // An operator's price survives a re-registration (restart).
            .with_pricing(stored.as_ref().and_then(Provider::pricing))
            // `overloaded` when every slot of its largest pool is taken.
            .with_job_limit(
                policy
                    .max_workers
                    .saturating_mul(policy.max_concurrent_jobs_per_worker.max(1)),
            );
        if let Some(status) = stored
            .map(|p| p.status())
            .filter(|s| matches!(s, ProviderStatus::Maintenance | ProviderStatus::Disabled))
        {
            aggregate.set_status(status);
        }
        self.inner.stores.providers.save(&aggregate).await?;
        self.inner.providers.insert(provider.clone(), policy);
        self.spawn_event_follower(provider);
        self.check_provider_health(id).await?;
        tracing::info!(provider = %aggregate.name(), %id, "provider registered");
        self.wake();
        self.get_provider(&id.to_string()).await
    }

    pub(super) fn provider_entry(&self, id: ProviderId) -> Option<Arc<ProviderEntry>> {
        self.inner.providers.get(id)
    }

    pub(super) fn provider_entries(&self) -> Vec<Arc<ProviderEntry>> {
        self.inner.providers.all()
    }

    /// Decides for one pending job. Each provider's eligibility
    /// ([`WorkerProvider::job_eligibility`]: its own check, e.g. Docker's
    /// missing worker image, or its capabilities) is consulted.
    pub(super) fn decide(
        &self,
        strategy: Strategy,
        job: &Job,
        snapshot: &SchedulingSnapshot,
    ) -> Decision {
        let spec = job.spec();
        scheduler::decide_with(strategy, spec, snapshot, |p: &ProviderView| {
            match self.provider_entry(p.id)?.provider.job_eligibility(spec) {
                Eligibility::Ineligible(why) => Some(why),
                _ => None,
            }
        })
    }

    /// A provider by id or name.
    pub async fn get_provider(&self, id_or_name: &str) -> ControlResult<Provider> {
        let store = &self.inner.stores.providers;
        let found = match id_or_name.parse::<ProviderId>() {
            Ok(id) => store.get(id).await?,
            Err(_) => store.get_by_name(id_or_name).await?,
        };
        found.ok_or_else(|| ControlError::NotFound(format!("provider {id_or_name}")))
    }

    /// All registered providers.
    pub async fn list_providers(&self) -> ControlResult<Vec<Provider>> {
        Ok(self.inner.stores.providers.list().await?)
    }

    /// How many workers of each provider are not gone (over all replicas).
    pub async fn live_workers_by_provider(&self) -> ControlResult<BTreeMap<ProviderId, u32>> {
        Ok(self.inner.stores.workers.count_alive_by_provider().await?)
    }

    /// Runs a health check now and records the result on the provider.
    pub async fn check_provider_health(&self, id: ProviderId) -> ControlResult<HealthStatus> {
        let entry = self
            .provider_entry(id)
            .ok_or_else(|| ControlError::NotFound(format!("provider {id}")))?;
        let started = Instant::now();
        let status = match entry.provider.health_check().await {
            Ok(s) => s,
            Err(e) => HealthStatus::unhealthy(e.to_string()),
        }
        .with_latency(started.elapsed());
        if let Some(mut p) = self.inner.stores.providers.get(id).await? {
            let was_healthy = p.is_healthy();
            if status.healthy {
                p.mark_healthy();
            } else {
                p.mark_unhealthy(status.message.clone());
            }
            if was_healthy != p.is_healthy() {
                tracing::warn!(provider = %p.name(), healthy = p.is_healthy(), message = %status.message, "provider health changed");
            }
            self.inner.stores.providers.save(&p).await?;
        }
        // Heals a load count a missed update left wrong.
        self.refresh_provider_load(id).await;
        Ok(status)
    }

    /// Marks a provider unhealthy after a failed operation (it recovers at the next passing health check).
    pub(super) async fn provider_failed(&self, id: ProviderId, error: &str) {
        if let Ok(Some(mut p)) = self.inner.stores.providers.get(id).await {
            p.mark_unhealthy(error);
            let _ = self.inner.stores.providers.save(&p).await;
        }
        // One failed provisioning (a worker killed before it registered) says
        // little about the next: probe the provider again soon rather than
        // leaving it out of scheduling until the periodic health check.
        let cp = self.clone();
        let after = PROBE_AFTER_FAILURE.min(self.inner.config.health_check_interval);
        tokio::spawn(async move {
            tokio::time::sleep(after).await;
            let _ = cp.check_provider_health(id).await;
            cp.wake();
        });
    }

    /// The worker's own output (agent, container or console log; not its
    /// jobs' logs), last `tail` lines, from its provider.
    /// [`ProviderError::Unsupported`](crate::ProviderError::Unsupported) when
    /// the provider offers no logs.
    pub async fn worker_logs(
        &self,
        worker_id: WorkerId,
        tail: Option<usize>,
    ) -> ControlResult<Vec<String>> {
        let (entry, handle) = self.worker_provider(worker_id).await?;
        Ok(entry.provider.worker_logs(&handle, tail).await?)
    }

    /// The worker's resource usage as its provider measures it.
    /// [`ProviderError::Unsupported`](crate::ProviderError::Unsupported) when
    /// the provider offers no metrics.
    pub async fn worker_metrics(&self, worker_id: WorkerId) -> ControlResult<ResourceUsage> {
        let (entry, handle) = self.worker_provider(worker_id).await?;
        Ok(entry.provider.worker_metrics(&handle).await?)
    }

    /// The provider of a worker this replica can reach, with its handle.
    async fn worker_provider(
        &self,
        worker_id: WorkerId,
    ) -> ControlResult<(Arc<ProviderEntry>, WorkerHandle)> {
        let worker = self.load_worker(worker_id).await?;
        let entry = self.provider_entry(worker.provider_id()).ok_or_else(|| {
            ControlError::NotFound(format!(
                "provider {} of worker {worker_id} on this replica",
                worker.provider_id()
            ))
        })?;
        let handle = worker.handle().cloned().ok_or_else(|| {
            ControlError::FailedPrecondition(format!(
                "worker {worker_id} has no provider handle yet"
            ))
        })?;
        Ok((entry, handle))
    }

    pub(super) async fn check_all_providers(&self) {
        for entry in self.provider_entries() {
            let _ = self.check_provider_health(entry.provider.id()).await;
        }
    }

    fn spawn_event_follower(&self, provider: Arc<dyn WorkerProvider>) {
        let cp = self.clone();
        let mut shutdown = self.inner.shutdown.subscribe();
        tokio::spawn(async move {
            let mut events = provider.events();
            loop {
                tokio::select! {
                    _ = shutdown.changed() => return,
                    ev = events.next() => match ev {
                        None => return,
                        Some(WorkerEvent::Exited { worker_id, exit_code, reason }) => {
                            // Noticed at once, not at heartbeat timeout.
                            let is_known = matches!(
                                cp.inner.stores.workers.get(worker_id).await,
                                Ok(Some(w)) if !w.state().is_gone()
                            );
                            if is_known {
                                let why = format!("worker exited (code {exit_code:?}): {reason}");
                                // A provisioning that waits for this worker stops waiting.
                                let _ = cp.inner.worker_exited.send((worker_id, why.clone()));
                                cp.worker_lost(worker_id, &why).await;
                            }
                        }
                        Some(_) => {}
                    }
                }
            }
        });
    }
}

/// A provider's cost estimate ([`WorkerProvider::job_cost`], free when it has
/// none) as a linear price per resource, probed at
/// one core and at one GiB, so every job is priced from its own resources.
pub(super) fn estimated_pricing(provider: &dyn WorkerProvider) -> ResourcePricing {
    let probe = |cpu: f64, mem_mb: u64| {
        let mut spec = JobSpec::new("", CommandType::shell("true", Vec::<String>::new()));
        spec.resources.cpu_cores = cpu;
        spec.resources.memory_mb = mem_mb;
        let v = provider.job_cost(&spec).per_hour;
        if v.is_finite() { v.max(0.0) } else { 0.0 }
    };
    let base = probe(0.0, 0);
    ResourcePricing {
        price_per_cpu_hour: (probe(1.0, 0) - base).max(0.0),
        price_per_gib_hour: (probe(0.0, 1024) - base).max(0.0),
    }
}
