//! The extension point users implement: segregated worker-provider traits.
//!
//! A provider creates and destroys workers (processes, containers, pods,
//! microVMs). Each concern is its own trait so a provider can be used, tested
//! and mocked piecewise; [`FullProvider`] bundles them for the control plane.
//! All traits are object-safe and `Send + Sync`, used as `Arc<dyn …>`, so they
//! use `#[async_trait]`.
//!
//! # A custom provider
//!
//! ```
//! use std::sync::Arc;
//! use async_trait::async_trait;
//! use futures::stream::{self, BoxStream, StreamExt};
//! use hodei_core::provider::*;
//! use hodei_core::*;
//!
//! /// Pretends to run workers; useful as a template.
//! struct NullProvider { id: ProviderId }
//!
//! #[async_trait]
//! impl WorkerLifecycle for NullProvider {
//!     async fn create_worker(&self, spec: &WorkerSpec) -> Result<WorkerHandle, ProviderError> {
//!         Ok(WorkerHandle::new(spec.worker_id, self.id, "null"))
//!     }
//!     async fn get_worker_status(&self, _h: &WorkerHandle) -> Result<WorkerState, ProviderError> {
//!         Ok(WorkerState::Ready)
//!     }
//!     async fn destroy_worker(&self, _h: &WorkerHandle) -> Result<(), ProviderError> { Ok(()) }
//! }
//! #[async_trait]
//! impl WorkerHealth for NullProvider {
//!     async fn health_check(&self) -> Result<HealthStatus, ProviderError> { Ok(HealthStatus::healthy("ok")) }
//! }
//! #[async_trait]
//! impl WorkerLogs for NullProvider {
//!     async fn get_worker_logs(&self, _h: &WorkerHandle, _tail: Option<usize>) -> Result<Vec<String>, ProviderError> {
//!         Ok(vec![])
//!     }
//! }
//! impl WorkerCost for NullProvider {
//!     fn estimate_cost(&self, _s: &JobSpec) -> CostEstimate { CostEstimate::free() }
//!     fn estimated_startup_time(&self) -> std::time::Duration { std::time::Duration::ZERO }
//! }
//! impl WorkerEligibility for NullProvider {
//!     fn check_eligibility(&self, spec: &JobSpec) -> Eligibility {
//!         Eligibility::from_capabilities(&self.capabilities(), spec)
//!     }
//! }
//! #[async_trait]
//! impl WorkerMetrics for NullProvider {
//!     async fn get_worker_metrics(&self, _h: &WorkerHandle) -> Result<ResourceUsage, ProviderError> {
//!         Ok(ResourceUsage::default())
//!     }
//! }
//! impl WorkerEventSource for NullProvider {
//!     fn events(&self) -> BoxStream<'static, WorkerEvent> { stream::empty().boxed() }
//! }
//! impl WorkerProviderIdentity for NullProvider {
//!     fn id(&self) -> ProviderId { self.id }
//!     fn name(&self) -> &str { "null" }
//!     fn provider_type(&self) -> ProviderType { ProviderType::Custom }
//!     fn capabilities(&self) -> ProviderCapabilities { ProviderCapabilities::default() }
//! }
//!
//! let p: Arc<dyn FullProvider> = Arc::new(NullProvider { id: ProviderId::new() });
//! assert_eq!(p.name(), "null");
//! ```

use std::time::Duration;

use async_trait::async_trait;
use futures::stream::BoxStream;
use serde::{Deserialize, Serialize};

use crate::domain::error::ProviderError;
use crate::domain::ids::{ProviderId, WorkerId};
use crate::domain::provider::{ProviderCapabilities, ProviderType};
use crate::domain::spec::JobSpec;
use crate::domain::worker::{WorkerHandle, WorkerSpec, WorkerState};

/// Creates, inspects and destroys workers.
#[async_trait]
pub trait WorkerLifecycle: Send + Sync {
    /// Creates a worker whose agent will register with `spec.otp`.
    async fn create_worker(&self, spec: &WorkerSpec) -> Result<WorkerHandle, ProviderError>;
    /// The worker's state as the provider sees it (`Terminated` once it is gone).
    async fn get_worker_status(&self, handle: &WorkerHandle) -> Result<WorkerState, ProviderError>;
    /// Destroys the worker. Idempotent: destroying a worker that is already
    /// gone (or was never known) succeeds.
    async fn destroy_worker(&self, handle: &WorkerHandle) -> Result<(), ProviderError>;
}

/// Result of a provider health check.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct HealthStatus {
    /// Whether the provider can create workers.
    pub healthy: bool,
    /// What was checked, or what failed.
    pub message: String,
    /// How long the check took.
    pub latency: Duration,
}

impl HealthStatus {
    /// A passing check.
    pub fn healthy(message: impl Into<String>) -> Self {
        Self {
            healthy: true,
            message: message.into(),
            latency: Duration::ZERO,
        }
    }
    /// A failing check.
    pub fn unhealthy(message: impl Into<String>) -> Self {
        Self {
            healthy: false,
            message: message.into(),
            latency: Duration::ZERO,
        }
    }
    /// Sets the latency.
    #[must_use]
    pub fn with_latency(mut self, latency: Duration) -> Self {
        self.latency = latency;
        self
    }
}

/// Health of the provider's backend.
#[async_trait]
pub trait WorkerHealth: Send + Sync {
    /// Checks that the provider can create workers now.
    async fn health_check(&self) -> Result<HealthStatus, ProviderError>;
}

/// The worker's own output (agent logs, container logs), not the jobs' logs.
#[async_trait]
pub trait WorkerLogs: Send + Sync {
    /// The last `tail` lines (all when `None`).
    async fn get_worker_logs(
        &self,
        handle: &WorkerHandle,
        tail: Option<usize>,
    ) -> Result<Vec<String>, ProviderError>;
}

/// Cost of running a job on this provider.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct CostEstimate {
    /// Estimated cost of one hour, in `currency`.
    pub per_hour: f64,
    /// Currency code.
    pub currency: String,
}

impl CostEstimate {
    /// No cost (local resources).
    #[must_use]
    pub fn free() -> Self {
        Self {
            per_hour: 0.0,
            currency: "USD".into(),
        }
    }
    /// A cost per hour.
    #[must_use]
    pub fn per_hour(per_hour: f64, currency: impl Into<String>) -> Self {
        Self {
            per_hour,
            currency: currency.into(),
        }
    }
}

/// Cost and start-up time, for the cost-aware and fastest-startup strategies.
pub trait WorkerCost: Send + Sync {
    /// Cost of running `spec`.
    fn estimate_cost(&self, spec: &JobSpec) -> CostEstimate;
    /// Expected time from create to agent registered. Measured where possible.
    fn estimated_startup_time(&self) -> Duration;
}

/// Whether a provider can run a spec.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Eligibility {
    /// It can.
    Eligible,
    /// It cannot, and why.
    Ineligible(String),
}

impl Eligibility {
    /// Eligibility from capabilities alone.
    #[must_use]
    pub fn from_capabilities(caps: &ProviderCapabilities, spec: &JobSpec) -> Self {
        match caps.ineligibility(spec) {
            None => Eligibility::Eligible,
            Some(why) => Eligibility::Ineligible(why),
        }
    }
    /// Whether eligible.
    #[must_use]
    pub fn is_eligible(&self) -> bool {
        matches!(self, Eligibility::Eligible)
    }
}

/// Can this provider run this spec at all?
pub trait WorkerEligibility: Send + Sync {
    /// Checks resources, architecture, GPU, image and constraints.
    fn check_eligibility(&self, spec: &JobSpec) -> Eligibility;
}

pub use crate::domain::worker_stats::ResourceUsage;

/// Resource usage as the provider measures it.
#[async_trait]
pub trait WorkerMetrics: Send + Sync {
    /// Current usage of one worker.
    async fn get_worker_metrics(
        &self,
        handle: &WorkerHandle,
    ) -> Result<ResourceUsage, ProviderError>;
}

/// Something that happened to a worker, seen by its provider.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum WorkerEvent {
    /// The worker was created.
    Created {
        /// Which.
        worker_id: WorkerId,
    },
    /// The worker process/container/pod started.
    Started {
        /// Which.
        worker_id: WorkerId,
    },
    /// The worker exited or died on its own.
    Exited {
        /// Which.
        worker_id: WorkerId,
        /// Exit code, if known.
        exit_code: Option<i32>,
        /// Why, if known.
        reason: String,
    },
    /// The worker was destroyed on request.
    Destroyed {
        /// Which.
        worker_id: WorkerId,
    },
}

impl WorkerEvent {
    /// The worker the event is about.
    #[must_use]
    pub fn worker_id(&self) -> WorkerId {
        match self {
            WorkerEvent::Created { worker_id }
            | WorkerEvent::Started { worker_id }
            | WorkerEvent::Exited { worker_id, .. }
            | WorkerEvent::Destroyed { worker_id } => *worker_id,
        }
    }
}

/// A stream of worker events, so a dead worker is noticed at once rather than
/// at heartbeat timeout.
pub trait WorkerEventSource: Send + Sync {
    /// A new subscription to this provider's events. Each call returns an
    /// independent stream that sees events from now on.
    fn events(&self) -> BoxStream<'static, WorkerEvent>;
}

/// Who the provider is.
pub trait WorkerProviderIdentity: Send + Sync {
    /// Its id.
    fn id(&self) -> ProviderId;
    /// Its unique name (`process`, `docker`, …).
    fn name(&self) -> &str;
    /// Its type.
    fn provider_type(&self) -> ProviderType;
    /// What one worker can get.
    fn capabilities(&self) -> ProviderCapabilities;
}

/// Every provider trait at once: what the control plane holds.
pub trait FullProvider:
    WorkerLifecycle
    + WorkerHealth
    + WorkerLogs
    + WorkerCost
    + WorkerEligibility
    + WorkerMetrics
    + WorkerEventSource
    + WorkerProviderIdentity
{
}

impl<T> FullProvider for T where
    T: WorkerLifecycle
        + WorkerHealth
        + WorkerLogs
        + WorkerCost
        + WorkerEligibility
        + WorkerMetrics
        + WorkerEventSource
        + WorkerProviderIdentity
{
}

/// The combined trait of earlier designs.
#[deprecated(note = "implement the segregated traits; hold providers as `dyn FullProvider`")]
pub trait WorkerProvider: FullProvider {}

#[allow(deprecated)]
impl<T: FullProvider> WorkerProvider for T {}
