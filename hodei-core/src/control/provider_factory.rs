//! [`ProviderFactory`]: how the control plane turns a stored
//! [`ProviderConfig`] into a running provider, for providers registered
//! through the API and re-created when the server starts again.

use std::sync::Arc;

use async_trait::async_trait;

use super::{ControlResult, PoolPolicy};
use crate::domain::ids::ProviderId;
use crate::domain::provider::ProviderConfig;
use crate::provider::WorkerProvider;

/// What to build: the provider's id (kept across restarts, its workers are
/// stored under it), its unique name, its configuration and how many workers
/// it may run (`None` = the factory's default).
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub struct ProviderRequest<'a> {
    /// Id of the provider (new, or the stored one on restore).
    pub id: ProviderId,
    /// Unique name.
    pub name: &'a str,
    /// Its configuration, as stored.
    pub config: &'a ProviderConfig,
    /// Most workers at once; `None` = the factory's default.
    pub max_workers: Option<u32>,
}

impl<'a> ProviderRequest<'a> {
    /// A request.
    #[must_use]
    pub fn new(id: ProviderId, name: &'a str, config: &'a ProviderConfig) -> Self {
        Self {
            id,
            name,
            config,
            max_workers: None,
        }
    }

    /// Sets the most workers at once.
    #[must_use]
    pub fn with_max_workers(mut self, n: Option<u32>) -> Self {
        self.max_workers = n;
        self
    }
}

/// A provider built by a factory, with the pool policy it runs under.
#[derive(Clone)]
#[non_exhaustive]
pub struct BuiltProvider {
    /// The provider.
    pub provider: Arc<dyn WorkerProvider>,
    /// Its pool policy (`max_workers` is the provider's own limit).
    pub policy: PoolPolicy,
}

impl BuiltProvider {
    /// A built provider.
    #[must_use]
    pub fn new(provider: Arc<dyn WorkerProvider>, policy: PoolPolicy) -> Self {
        Self { provider, policy }
    }
}

impl std::fmt::Debug for BuiltProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BuiltProvider")
            .field("name", &self.provider.name())
            .field("policy", &self.policy)
            .finish()
    }
}

/// Builds runtime providers from their stored configuration
/// (`RegisterProvider`, `POST /api/v1/providers`, and at start for the
/// providers registered that way before). `hodei_providers::factory`
/// implements it for the bundled providers.
#[async_trait]
pub trait ProviderFactory: Send + Sync {
    /// Builds the provider. A configuration it cannot act on is
    /// [`super::ControlError::InvalidArgument`] naming the field.
    async fn create(&self, request: ProviderRequest<'_>) -> ControlResult<BuiltProvider>;
}
