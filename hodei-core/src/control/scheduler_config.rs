//! The scheduling strategy, shared by every replica through the
//! [`crate::store::SchedulingStore`]: a switch is stored, so it reaches the
//! other replicas on their next pass and survives restarts. Until one is
//! stored, each replica uses the strategy it was built with.

use super::{ControlError, ControlPlane, ControlResult};
use crate::domain::pricing::ResourcePricing;
use crate::domain::provider::Provider;
use crate::scheduler::Strategy;

impl ControlPlane {
    /// This replica's copy of the strategy (as of its last pass).
    pub(super) fn strategy(&self) -> Strategy {
        *self
            .inner
            .strategy
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn cache_strategy(&self, strategy: Strategy) -> Strategy {
        let mut s = self
            .inner
            .strategy
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        std::mem::replace(&mut *s, strategy)
    }

    /// The shared strategy, read from the store (and remembered); the
    /// replica's own when none was ever stored.
    pub async fn shared_strategy(&self) -> ControlResult<Strategy> {
        match self.inner.stores.scheduling.strategy().await? {
            Some(s) => {
                let prev = self.cache_strategy(s);
                if prev != s {
                    tracing::info!(?prev, strategy = ?s, "scheduling strategy changed by another replica");
                }
                Ok(s)
            }
            None => Ok(self.strategy()),
        }
    }

    /// Switches the scheduling strategy of every replica; returns the previous one.
    ///
    /// # Errors
    /// A store error: nothing changed.
    pub async fn configure_scheduler(&self, strategy: Strategy) -> ControlResult<Strategy> {
        let prev = self.shared_strategy().await?;
        self.inner.stores.scheduling.set_strategy(strategy).await?;
        self.cache_strategy(strategy);
        tracing::info!(?prev, ?strategy, "scheduling strategy changed");
        self.wake();
        Ok(prev)
    }

    /// The strategy as of this replica's last pass (see [`Self::shared_strategy`]).
    #[must_use]
    pub fn current_strategy(&self) -> Strategy {
        self.strategy()
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
