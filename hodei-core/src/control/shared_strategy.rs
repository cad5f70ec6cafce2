//! The scheduling strategy, shared by every replica through the
//! [`SchedulingStore`]: a switch is stored, so it reaches the other replicas
//! on their next pass and survives restarts. Until one is stored, each
//! replica uses the strategy it was built with.

use std::sync::{PoisonError, RwLock};

use super::{ControlPlane, ControlResult};
use crate::scheduler::Strategy;
use crate::store::SchedulingStore;

/// This replica's copy of the shared strategy.
pub(super) struct SharedStrategy {
    cached: RwLock<Strategy>,
}

impl SharedStrategy {
    /// Starts with the strategy the replica was built with.
    pub(super) fn new(initial: Strategy) -> Self {
        Self {
            cached: RwLock::new(initial),
        }
    }

    /// The strategy as of the last read or switch.
    pub(super) fn cached(&self) -> Strategy {
        *self.cached.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn remember(&self, strategy: Strategy) -> Strategy {
        let mut s = self.cached.write().unwrap_or_else(PoisonError::into_inner);
        std::mem::replace(&mut *s, strategy)
    }

    /// The stored strategy (remembered); the cached one when none was ever stored.
    pub(super) async fn read(&self, store: &dyn SchedulingStore) -> ControlResult<Strategy> {
        match store.strategy().await? {
            Some(s) => {
                let prev = self.remember(s);
                if prev != s {
                    tracing::info!(?prev, strategy = ?s, "scheduling strategy changed by another replica");
                }
                Ok(s)
            }
            None => Ok(self.cached()),
        }
    }

    /// Stores a new strategy for every replica; returns the previous one.
    pub(super) async fn switch(
        &self,
        store: &dyn SchedulingStore,
        strategy: Strategy,
    ) -> ControlResult<Strategy> {
        let prev = self.read(store).await?;
        store.set_strategy(strategy).await?;
        self.remember(strategy);
        Ok(prev)
    }
}

impl ControlPlane {
    /// The shared strategy, read from the store (and remembered); the
    /// replica's own when none was ever stored.
    pub async fn shared_strategy(&self) -> ControlResult<Strategy> {
        self.inner
            .strategy
            .read(self.inner.stores.scheduling.as_ref())
            .await
    }

    /// Switches the scheduling strategy of every replica; returns the previous one.
    ///
    /// # Errors
    /// A store error: nothing changed.
    pub async fn configure_scheduler(&self, strategy: Strategy) -> ControlResult<Strategy> {
        let prev = self
            .inner
            .strategy
            .switch(self.inner.stores.scheduling.as_ref(), strategy)
            .await?;
        tracing::info!(?prev, ?strategy, "scheduling strategy changed");
        self.wake();
        Ok(prev)
    }

    /// The strategy as of this replica's last pass (see [`Self::shared_strategy`]).
    #[must_use]
    pub fn current_strategy(&self) -> Strategy {
        self.inner.strategy.cached()
    }
}
