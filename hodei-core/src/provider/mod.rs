//! The extension point users implement: segregated worker-provider traits.
//!
//! A provider creates and destroys workers (processes, containers, pods,
//! microVMs). Each concern is its own trait so a provider can be used, tested
//! and mocked piecewise. All traits are object-safe and `Send + Sync`, used as
//! `Arc<dyn …>`, so they use `#[async_trait]`.
//!
//! # Required and optional
//!
//! A provider implements four traits; every type that does is a
//! [`WorkerProvider`] (a blanket impl), the trait the control plane holds as
//! `Arc<dyn WorkerProvider>`:
//!
//! | required | |
//! |---|---|
//! | [`WorkerLifecycle`] | create, inspect and destroy workers |
//! | [`WorkerHealth`] | can it create workers now? |
//! | [`WorkerEventSource`] | worker events, so a dead worker is noticed at once |
//! | [`WorkerProviderIdentity`] | id, name, type, capabilities, and which optional traits it offers |
//!
//! The optional traits each have a default. A provider that implements one
//! offers it by overriding the matching accessor of [`WorkerProviderIdentity`]
//! with `Some(self)`:
//!
//! | optional | accessor | default when `None` |
//! |---|---|---|
//! | [`WorkerCost`] | [`cost`](WorkerProviderIdentity::cost) | free ([`CostEstimate::free`]), start-up time zero (unknown) |
//! | [`WorkerEligibility`] | [`eligibility`](WorkerProviderIdentity::eligibility) | [`Eligibility::from_capabilities`] of its declared capabilities |
//! | [`WorkerLogs`] | [`logs`](WorkerProviderIdentity::logs) | no logs: [`ProviderError::Unsupported`] |
//! | [`WorkerMetrics`] | [`metrics`](WorkerProviderIdentity::metrics) | no metrics: [`ProviderError::Unsupported`] |
//!
//! Callers ask through [`WorkerProvider`]'s methods ([`job_cost`](WorkerProvider::job_cost),
//! [`startup_estimate`](WorkerProvider::startup_estimate),
//! [`job_eligibility`](WorkerProvider::job_eligibility),
//! [`worker_logs`](WorkerProvider::worker_logs),
//! [`worker_metrics`](WorkerProvider::worker_metrics)), which apply the
//! defaults in one place.
//!
//! # A minimal provider
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
//! let p: Arc<dyn WorkerProvider> = Arc::new(NullProvider { id: ProviderId::new() });
//! let spec = JobSpec::new("j", CommandType::shell("true", Vec::<String>::new()));
//! assert_eq!(p.job_cost(&spec), CostEstimate::free());
//! assert!(p.job_eligibility(&spec).is_eligible());
//! ```
//!
//! `examples/examples/minimal_provider.rs` registers such a provider with a
//! control plane; `docs/CUSTOM-PROVIDERS.md` walks through it.

use std::time::Duration;

use async_trait::async_trait;
use futures::stream::BoxStream;
use serde::{Deserialize, Serialize};

use crate::domain::error::{OptionalCapability, ProviderError};
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

/// Optional: the worker's own output (agent logs, container logs), not the
/// jobs' logs. Offered through [`WorkerProviderIdentity::logs`].
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

/// Optional: cost and start-up time, for the cost-aware and fastest-startup
/// strategies. Offered through [`WorkerProviderIdentity::cost`].
pub trait WorkerCost: Send + Sync {
    /// Cost of running `spec`. Default: free (a provider that only measures
    /// its start-up time implements just [`estimated_startup_time`](Self::estimated_startup_time)).
    fn estimate_cost(&self, _spec: &JobSpec) -> CostEstimate {
        CostEstimate::free()
    }
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

/// Optional: can this provider run this spec at all, beyond what its
/// capabilities say (e.g. a missing image)? Offered through
/// [`WorkerProviderIdentity::eligibility`].
pub trait WorkerEligibility: Send + Sync {
    /// Checks resources, architecture, GPU, image and constraints. It replaces
    /// the default check, so it starts from [`Eligibility::from_capabilities`].
    fn check_eligibility(&self, spec: &JobSpec) -> Eligibility;
}

pub use crate::domain::worker_stats::ResourceUsage;

/// Optional: resource usage as the provider measures it. Offered through
/// [`WorkerProviderIdentity::metrics`].
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

/// Who the provider is, what one worker can get, and which optional traits
/// it offers (each accessor defaults to `None`: see the module docs).
pub trait WorkerProviderIdentity: Send + Sync {
    /// Its id.
    fn id(&self) -> ProviderId;
    /// Its unique name (`process`, `docker`, …).
    fn name(&self) -> &str;
    /// Its type.
    fn provider_type(&self) -> ProviderType;
    /// What one worker can get.
    fn capabilities(&self) -> ProviderCapabilities;

    /// Its cost model, when it implements [`WorkerCost`] (override with
    /// `Some(self)`). `None`: every job is free, the start-up time unknown (zero).
    fn cost(&self) -> Option<&dyn WorkerCost> {
        None
    }
    /// Its own eligibility check, when it implements [`WorkerEligibility`]
    /// (override with `Some(self)`). `None`: eligibility from
    /// [`capabilities`](Self::capabilities) alone.
    fn eligibility(&self) -> Option<&dyn WorkerEligibility> {
        None
    }
    /// Its workers' own output, when it implements [`WorkerLogs`] (override
    /// with `Some(self)`). `None`: asking for logs is [`ProviderError::Unsupported`].
    fn logs(&self) -> Option<&dyn WorkerLogs> {
        None
    }
    /// Its workers' resource usage, when it implements [`WorkerMetrics`]
    /// (override with `Some(self)`). `None`: asking for metrics is
    /// [`ProviderError::Unsupported`].
    fn metrics(&self) -> Option<&dyn WorkerMetrics> {
        None
    }
}

/// A worker provider: what the control plane holds (`Arc<dyn WorkerProvider>`).
///
/// Not implemented by hand: every type with the four required traits is one.
/// Its methods answer the optional questions with the provider's own trait
/// when it offers one (see the [`WorkerProviderIdentity`] accessors) and with
/// the documented default otherwise; callers ask through them, never through
/// the optional traits directly.
#[async_trait]
pub trait WorkerProvider:
    WorkerLifecycle + WorkerHealth + WorkerEventSource + WorkerProviderIdentity
{
    /// Cost of running `spec`: the provider's estimate, else free.
    fn job_cost(&self, spec: &JobSpec) -> CostEstimate {
        self.cost()
            .map_or_else(CostEstimate::free, |c| c.estimate_cost(spec))
    }

    /// Expected time from create to agent registered: the provider's
    /// estimate, else zero (unknown).
    fn startup_estimate(&self) -> Duration {
        self.cost()
            .map_or(Duration::ZERO, WorkerCost::estimated_startup_time)
    }

    /// Whether the provider can run `spec`: its own check, else its
    /// capabilities alone.
    fn job_eligibility(&self, spec: &JobSpec) -> Eligibility {
        match self.eligibility() {
            Some(e) => e.check_eligibility(spec),
            None => Eligibility::from_capabilities(&self.capabilities(), spec),
        }
    }

    /// The worker's own output, last `tail` lines (all when `None`);
    /// [`ProviderError::Unsupported`] when the provider has no logs.
    async fn worker_logs(
        &self,
        handle: &WorkerHandle,
        tail: Option<usize>,
    ) -> Result<Vec<String>, ProviderError> {
        match self.logs() {
            Some(l) => l.get_worker_logs(handle, tail).await,
            None => Err(ProviderError::Unsupported {
                capability: OptionalCapability::Logs,
            }),
        }
    }

    /// One worker's resource usage; [`ProviderError::Unsupported`] when the
    /// provider has no metrics.
    async fn worker_metrics(&self, handle: &WorkerHandle) -> Result<ResourceUsage, ProviderError> {
        match self.metrics() {
            Some(m) => m.get_worker_metrics(handle).await,
            None => Err(ProviderError::Unsupported {
                capability: OptionalCapability::Metrics,
            }),
        }
    }
}

impl<T> WorkerProvider for T where
    T: WorkerLifecycle + WorkerHealth + WorkerEventSource + WorkerProviderIdentity
{
}
