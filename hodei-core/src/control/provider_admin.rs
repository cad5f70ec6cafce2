//! Providers managed at runtime: registered through the API with the
//! [`super::ProviderFactory`], re-created at start from the store, put in
//! maintenance or disabled by an operator (draining their workers), removed,
//! and their load (jobs on their workers) counted.

use super::{ControlError, ControlPlane, ControlResult, ProviderRequest};
use crate::domain::ids::{ProviderId, WorkerId};
use crate::domain::pricing::ResourcePricing;
use crate::domain::provider::{Provider, ProviderConfig, ProviderStatus};
use crate::domain::worker::WorkerState;

/// What restoring one stored runtime provider at start came to.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct RestoredProvider {
    /// Its name.
    pub name: String,
    /// `None` when it runs again; else why it could not be built (it stays
    /// stored, marked unhealthy with that error).
    pub error: Option<String>,
}

impl ControlPlane {
    /// Registers a provider from its configuration through the provider
    /// factory; it is stored as registered at runtime and re-created by
    /// [`Self::restore_runtime_providers`] when the server starts again.
    pub async fn register_provider_config(
        &self,
        name: &str,
        config: ProviderConfig,
        max_workers: Option<u32>,
    ) -> ControlResult<Provider> {
        let Some(factory) = self.inner.provider_factory.clone() else {
            return Err(ControlError::FailedPrecondition(
                "this server has no provider factory: providers are registered in code at start"
                    .into(),
            ));
        };
        let name = name.trim();
        if name.is_empty() {
            return Err(ControlError::InvalidArgument {
                field: "name".into(),
                message: "must not be empty".into(),
            });
        }
        if max_workers == Some(0) {
            return Err(ControlError::InvalidArgument {
                field: "max_workers".into(),
                message: "must be at least 1".into(),
            });
        }
        if self
            .inner
            .stores
            .providers
            .get_by_name(name)
            .await?
            .is_some()
        {
            return Err(ControlError::FailedPrecondition(format!(
                "a provider named {name:?} is already registered"
            )));
        }
        let id = ProviderId::new();
        let built = factory
            .create(ProviderRequest::new(id, name, &config).with_max_workers(max_workers))
            .await?;
        // Stored as a runtime provider before it goes live, so a crash right
        // after still brings it back.
        let stored = Provider::new(id, name, config.clone(), built.provider.capabilities())
            .registered_at_runtime(true);
        self.inner.stores.providers.save(&stored).await?;
        self.register_provider(built.provider, config, built.policy)
            .await
    }

    /// Re-creates, through the provider factory, every stored provider that
    /// was registered at runtime and is not running in this process yet
    /// (server start). Their ids, statuses and workers are kept. One that
    /// cannot be built stays stored, marked unhealthy with the reason.
    pub async fn restore_runtime_providers(&self) -> ControlResult<Vec<RestoredProvider>> {
        let Some(factory) = self.inner.provider_factory.clone() else {
            return Ok(Vec::new());
        };
        let mut out = Vec::new();
        for p in self.inner.stores.providers.list().await? {
            if !p.is_registered_at_runtime() || self.provider_entry(p.id()).is_some() {
                continue;
            }
            let request = ProviderRequest::new(p.id(), p.name(), p.config())
                .with_max_workers(Some(p.capabilities().max_workers));
            let result = match factory.create(request).await {
                Ok(built) => self
                    .register_provider(built.provider, p.config().clone(), built.policy)
                    .await
                    .map(|_| ()),
                Err(e) => Err(e),
            };
            let error = match result {
                Ok(()) => {
                    tracing::info!(provider = %p.name(), id = %p.id(), "runtime provider restored");
                    None
                }
                Err(e) => {
                    tracing::error!(provider = %p.name(), error = %e, "runtime provider could not be restored");
                    if let Ok(Some(mut again)) = self.inner.stores.providers.get(p.id()).await {
                        again.mark_unhealthy(format!("not restored at start: {e}"));
                        let _ = self.inner.stores.providers.save(&again).await;
                    }
                    Some(e.to_string())
                }
            };
            out.push(RestoredProvider {
                name: p.name().to_owned(),
                error,
            });
        }
        Ok(out)
    }

    /// Sets a provider's operator state: `Active`, `Maintenance` or
    /// `Disabled`. Leaving `Active` takes it out of scheduling at once: its
    /// idle workers are retired and its busy ones drained (their running jobs
    /// finish, then they are retired). The state is stored and survives restarts.
    pub async fn set_provider_state(
        &self,
        id_or_name: &str,
        state: ProviderStatus,
    ) -> ControlResult<Provider> {
        if !matches!(
            state,
            ProviderStatus::Active | ProviderStatus::Maintenance | ProviderStatus::Disabled
        ) {
            return Err(ControlError::InvalidArgument {
                field: "state".into(),
                message: format!(
                    "{state} is set by the server; an operator sets active, maintenance or disabled"
                ),
            });
        }
        let mut p = self.get_provider(id_or_name).await?;
        let id = p.id();
        p.set_status(state);
        self.inner.stores.providers.save(&p).await?;
        tracing::info!(provider = %p.name(), %state, "provider state set");
        if state == ProviderStatus::Active {
            // Back in scheduling; health and load decide Unhealthy/Overloaded.
            let _ = self.check_provider_health(id).await;
            self.refresh_provider_load(id).await;
        } else {
            self.drain_provider_workers(id).await?;
        }
        self.wake();
        self.get_provider(&id.to_string()).await
    }

    /// Removes a provider that is `Disabled` and has no workers left: it is
    /// forgotten by this process and the store.
    pub async fn remove_provider(&self, id_or_name: &str) -> ControlResult<Provider> {
        let p = self.get_provider(id_or_name).await?;
        if p.status() != ProviderStatus::Disabled {
            return Err(ControlError::FailedPrecondition(format!(
                "provider {} is {}: disable it first (its workers drain), then remove it",
                p.name(),
                p.status()
            )));
        }
        let live = self
            .inner
            .stores
            .workers
            .list()
            .await?
            .iter()
            .filter(|w| w.provider_id() == p.id() && !w.state().is_gone())
            .count();
        if live > 0 {
            return Err(ControlError::FailedPrecondition(format!(
                "provider {} still has {live} worker(s): wait until they are drained",
                p.name()
            )));
        }
        self.inner.providers.remove(p.id());
        self.inner.stores.providers.delete(p.id()).await?;
        tracing::info!(provider = %p.name(), id = %p.id(), "provider removed");
        Ok(p)
    }

    /// Idle workers retired now, busy ones drained (retired once their jobs end).
    async fn drain_provider_workers(&self, id: ProviderId) -> ControlResult<()> {
        let workers = self.inner.stores.workers.list().await?;
        let mut idle: Vec<WorkerId> = Vec::new();
        for w in workers.iter().filter(|w| w.provider_id() == id) {
            match w.state() {
                WorkerState::Ready if w.current_jobs().is_empty() => idle.push(w.id()),
                WorkerState::Ready | WorkerState::Busy => {
                    if let Err(e) = self.drain_worker(w.id()).await {
                        tracing::warn!(worker_id = %w.id(), error = %e, "could not drain worker");
                    }
                }
                _ => {}
            }
        }
        for w in idle {
            self.retire_worker(w, "provider left active state").await;
        }
        Ok(())
    }

    /// Counts the jobs on a provider's live workers into its stored
    /// `active_jobs` (`Overloaded` at its limit). Asked for when a job is
    /// bound to or leaves one of its workers (off the job path, through
    /// `refresh_provider_load_soon`), and done at each health check, so a
    /// missed update heals itself.
    pub(super) async fn refresh_provider_load(&self, id: ProviderId) {
        // Counted in the store: listing every worker here cost O(workers)
        // per assignment and release (20 ms a job at 10,000 agents).
        let count = match self.inner.stores.workers.count_jobs_of_provider(id).await {
            Ok(n) => n,
            Err(e) => {
                tracing::debug!(provider_id = %id, error = %e, "provider load not counted");
                return;
            }
        };
        if let Ok(Some(mut p)) = self.inner.stores.providers.get(id).await {
            let before = (p.active_jobs(), p.status());
            p.set_job_count(count);
            if before != (p.active_jobs(), p.status()) {
                let _ = self.inner.stores.providers.save(&p).await;
                // Only `active` <-> `overloaded` changes here, which placements
                // do not follow (they go by the workers' slots): no dispatch pass
                // to wake, and a busy pool flips at every recount, so not at info.
                if before.1 != p.status() {
                    tracing::debug!(provider = %p.name(), jobs = count, status = %p.status(), "provider load changed its status");
                }
            }
        }
    }

    /// Sets (or with `None` clears) the price of a provider's resources,
    /// which `cost_aware` ranks it by for each job's own resources. Stored
    /// with the provider, so every replica and a restart see it.
    ///
    /// # Errors
    /// `InvalidArgument` naming the price field; `NotFound`; store errors.
    pub async fn set_provider_pricing(
        &self,
        id_or_name: &str,
        pricing: Option<ResourcePricing>,
    ) -> ControlResult<Provider> {
        if let Some(p) = &pricing {
            p.validate().map_err(|e| ControlError::InvalidArgument {
                field: e.field.to_owned(),
                message: e.to_string(),
            })?;
        }
        let provider = self.get_provider(id_or_name).await?.with_pricing(pricing);
        self.inner.stores.providers.save(&provider).await?;
        tracing::info!(provider = %provider.name(), ?pricing, "provider price set");
        Ok(provider)
    }
}
