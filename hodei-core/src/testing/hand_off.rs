//! A provider for tests that creates nothing: [`HandOffProvider`] hands each
//! [`WorkerSpec`] (with its one-time token) to the test through a channel,
//! and the test plays the worker's agent, by hand or with [`PlayedAgent`]
//! (with `server`), or starts a real agent from the spec (feature `testing`).
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use std::time::Duration;
//!
//! use hodei_core::control::{ControlPlane, PoolPolicy};
//! use hodei_core::testing::{HandOffProvider, PlayedAgent};
//! use hodei_core::{AttemptResult, CommandType, JobSpec};
//!
//! let cp = ControlPlane::builder().build();
//! let (provider, mut specs) = HandOffProvider::new("hand-off");
//! provider.register(&cp, PoolPolicy::default()).await?;
//! tokio::spawn(cp.clone().run());
//! cp.create_job(JobSpec::new("job", CommandType::shell("true", [""; 0])), None)
//!     .await?;
//!
//! let wait = Duration::from_secs(20);
//! let mut agent = PlayedAgent::join(&cp, &mut specs, wait).await?;
//! let (_run, done) = agent.run_next(AttemptResult::exited(0)).await?;
//! assert!(done.state().is_terminal());
//! # Ok(()) }
//! ```

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures::stream::{self, BoxStream, StreamExt};
use tokio::sync::mpsc;

use crate::domain::error::ProviderError;
use crate::domain::ids::ProviderId;
use crate::domain::provider::{ProviderCapabilities, ProviderType};
use crate::domain::spec::JobSpec;
use crate::domain::worker::{WorkerHandle, WorkerSpec, WorkerState};
use crate::provider::{
    CostEstimate, Eligibility, HealthStatus, WorkerCost, WorkerEligibility, WorkerEvent,
    WorkerEventSource, WorkerHealth, WorkerLifecycle, WorkerProviderIdentity,
};

#[cfg(feature = "server")]
pub use agent::{PlayedAgent, PlayedAgentError};

type Refusal = Box<dyn Fn(&JobSpec) -> Option<String> + Send + Sync>;
type Pricing = Box<dyn Fn(&JobSpec) -> CostEstimate + Send + Sync>;

/// A provider whose `create_worker` only sends the [`WorkerSpec`] down a
/// channel (and succeeds); its workers are `Ready` as far as it knows,
/// destroying one does nothing, it is always healthy and has no events.
///
/// Without options it offers none of the optional capabilities (cost,
/// eligibility, logs, metrics: the [`WorkerProviderIdentity`] accessors are
/// `None`), so the control plane applies the documented defaults. The builder
/// turns on a cost model ([`HandOffProviderBuilder::cost`],
/// [`HandOffProviderBuilder::startup_estimate`]) or an own eligibility check
/// ([`HandOffProviderBuilder::refusing`]) when a test needs one.
pub struct HandOffProvider {
    id: ProviderId,
    options: Options,
    created: mpsc::UnboundedSender<WorkerSpec>,
}

/// What the builder sets.
struct Options {
    name: String,
    provider_type: ProviderType,
    capabilities: ProviderCapabilities,
    refusal: Option<Refusal>,
    pricing: Option<Pricing>,
    startup: Option<Duration>,
}

impl std::fmt::Debug for Options {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Options")
            .field("name", &self.name)
            .field("provider_type", &self.provider_type)
            .field("refuses", &self.refusal.is_some())
            .field("priced", &self.pricing.is_some())
            .field("startup", &self.startup)
            .finish_non_exhaustive()
    }
}

impl std::fmt::Debug for HandOffProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HandOffProvider")
            .field("id", &self.id)
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

impl HandOffProvider {
    /// A `Custom` provider named `name` with the default capabilities and no
    /// optional capability, and the receiving end of its worker specs.
    #[must_use]
    pub fn new(
        name: impl Into<String>,
    ) -> (Arc<HandOffProvider>, mpsc::UnboundedReceiver<WorkerSpec>) {
        Self::builder(name).build()
    }

    /// A builder for a provider named `name`.
    pub fn builder(name: impl Into<String>) -> HandOffProviderBuilder {
        HandOffProviderBuilder {
            options: Options {
                name: name.into(),
                provider_type: ProviderType::Custom,
                capabilities: ProviderCapabilities::default(),
                refusal: None,
                pricing: None,
                startup: None,
            },
        }
    }
}

/// Options of a [`HandOffProvider`].
#[must_use]
#[derive(Debug)]
pub struct HandOffProviderBuilder {
    options: Options,
}

impl HandOffProviderBuilder {
    /// Its type (default `Custom`).
    pub fn provider_type(mut self, provider_type: ProviderType) -> Self {
        self.options.provider_type = provider_type;
        self
    }

    /// What one worker can get (default [`ProviderCapabilities::default`]):
    /// jobs asking more are not eligible.
    pub fn capabilities(mut self, capabilities: ProviderCapabilities) -> Self {
        self.options.capabilities = capabilities;
        self
    }

    /// Offers an own eligibility check: a spec for which `refuse` returns a
    /// reason is ineligible for that reason; any other is judged by the
    /// capabilities.
    pub fn refusing(
        mut self,
        refuse: impl Fn(&JobSpec) -> Option<String> + Send + Sync + 'static,
    ) -> Self {
        self.options.refusal = Some(Box::new(refuse));
        self
    }

    /// Offers a cost model: `price` is the cost of running a spec (the
    /// start-up estimate stays zero unless [`startup_estimate`](Self::startup_estimate) is set).
    pub fn cost(
        mut self,
        price: impl Fn(&JobSpec) -> CostEstimate + Send + Sync + 'static,
    ) -> Self {
        self.options.pricing = Some(Box::new(price));
        self
    }

    /// Offers a cost model with this start-up estimate (every job free unless
    /// [`cost`](Self::cost) is set).
    pub fn startup_estimate(mut self, startup: Duration) -> Self {
        self.options.startup = Some(startup);
        self
    }

    /// The provider and the receiving end of its worker specs. Dropping the
    /// receiver is fine: the provider still "creates" workers, which then
    /// never register.
    #[must_use]
    pub fn build(self) -> (Arc<HandOffProvider>, mpsc::UnboundedReceiver<WorkerSpec>) {
        let (created, specs) = mpsc::unbounded_channel();
        let provider = HandOffProvider {
            id: ProviderId::new(),
            options: self.options,
            created,
        };
        (Arc::new(provider), specs)
    }
}

#[async_trait]
impl WorkerLifecycle for HandOffProvider {
    async fn create_worker(&self, spec: &WorkerSpec) -> Result<WorkerHandle, ProviderError> {
        // A test that dropped the receiver only looks at what was scheduled.
        let _ = self.created.send(spec.clone());
        Ok(WorkerHandle::new(spec.worker_id, self.id, "handed-off"))
    }
    async fn get_worker_status(&self, _h: &WorkerHandle) -> Result<WorkerState, ProviderError> {
        Ok(WorkerState::Ready)
    }
    async fn destroy_worker(&self, _h: &WorkerHandle) -> Result<(), ProviderError> {
        Ok(())
    }
}

#[async_trait]
impl WorkerHealth for HandOffProvider {
    async fn health_check(&self) -> Result<HealthStatus, ProviderError> {
        Ok(HealthStatus::healthy("hands its workers to the test"))
    }
}

impl WorkerEventSource for HandOffProvider {
    fn events(&self) -> BoxStream<'static, WorkerEvent> {
        stream::empty().boxed()
    }
}

impl WorkerProviderIdentity for HandOffProvider {
    fn id(&self) -> ProviderId {
        self.id
    }
    fn name(&self) -> &str {
        &self.options.name
    }
    fn provider_type(&self) -> ProviderType {
        self.options.provider_type
    }
    fn capabilities(&self) -> ProviderCapabilities {
        self.options.capabilities.clone()
    }
    fn cost(&self) -> Option<&dyn WorkerCost> {
        (self.options.pricing.is_some() || self.options.startup.is_some())
            .then_some(self as &dyn WorkerCost)
    }
    fn eligibility(&self) -> Option<&dyn WorkerEligibility> {
        self.options
            .refusal
            .is_some()
            .then_some(self as &dyn WorkerEligibility)
    }
}

/// Only offered when the builder set a price or a start-up estimate.
impl WorkerCost for HandOffProvider {
    fn estimate_cost(&self, spec: &JobSpec) -> CostEstimate {
        self.options
            .pricing
            .as_ref()
            .map_or_else(CostEstimate::free, |price| price(spec))
    }
    fn estimated_startup_time(&self) -> Duration {
        self.options.startup.unwrap_or(Duration::ZERO)
    }
}

/// Only offered when the builder set a refusal.
impl WorkerEligibility for HandOffProvider {
    fn check_eligibility(&self, spec: &JobSpec) -> Eligibility {
        match self
            .options
            .refusal
            .as_ref()
            .and_then(|refuse| refuse(spec))
        {
            Some(why) => Eligibility::Ineligible(why),
            None => Eligibility::from_capabilities(&self.options.capabilities, spec),
        }
    }
}

#[cfg(feature = "server")]
mod agent {
    use std::collections::BTreeMap;
    use std::sync::Arc;
    use std::time::Duration;

    use tokio::sync::mpsc;

    use super::HandOffProvider;
    use crate::control::{ControlError, ControlPlane, PoolPolicy, WorkerStreamHandle};
    use crate::domain::ids::WorkerId;
    use crate::domain::job::{AttemptResult, Job};
    use crate::domain::provider::{Provider, ProviderConfig};
    use crate::domain::worker::{WorkerSpec, WorkerState};
    use crate::domain::worker_protocol::{RunJob, WorkerCommand};

    impl HandOffProvider {
        /// Registers it with `cp` (as a `Custom` provider with no settings)
        /// under `policy`.
        ///
        /// # Errors
        ///
        /// The control plane's refusal.
        pub async fn register(
            self: Arc<Self>,
            cp: &ControlPlane,
            policy: PoolPolicy,
        ) -> Result<Provider, ControlError> {
            let config = ProviderConfig::Custom {
                settings: BTreeMap::new(),
            };
            cp.register_provider(self, config, policy).await
        }
    }

    /// Why a [`PlayedAgent`] step failed.
    #[derive(Debug, thiserror::Error)]
    #[non_exhaustive]
    pub enum PlayedAgentError {
        /// No worker spec came from the provider in time (or its channel closed).
        #[error("no worker was created within {0:?}")]
        NoWorker(Duration),
        /// The control plane still had the worker as `Creating` after this long.
        #[error("the worker was still being created after {0:?}")]
        StillCreating(Duration),
        /// No run command came in time.
        #[error("no run command within {0:?}")]
        NoRun(Duration),
        /// The control plane closed the worker's stream.
        #[error("the worker stream was closed")]
        StreamClosed,
        /// The control plane refused a step.
        #[error(transparent)]
        Control(#[from] ControlError),
    }

    /// The agent of one handed-off worker, played by the test over the
    /// control plane's own calls (what the gRPC worker service would call):
    /// registered with the spec's one-time token, its command stream open.
    #[derive(Debug)]
    pub struct PlayedAgent {
        cp: ControlPlane,
        worker: WorkerId,
        stream: WorkerStreamHandle,
        wait: Duration,
    }

    impl PlayedAgent {
        /// Takes the next worker spec from `specs` (waiting up to `wait`),
        /// registers the worker with its one-time token and opens its stream
        /// once the control plane has the worker `Connecting`. `wait` bounds
        /// each of these waits, and [`next_run`](Self::next_run).
        ///
        /// # Errors
        ///
        /// [`PlayedAgentError::NoWorker`], [`PlayedAgentError::StillCreating`],
        /// or the control plane's refusal.
        pub async fn join(
            cp: &ControlPlane,
            specs: &mut mpsc::UnboundedReceiver<WorkerSpec>,
            wait: Duration,
        ) -> Result<Self, PlayedAgentError> {
            let spec = tokio::time::timeout(wait, specs.recv())
                .await
                .ok()
                .flatten()
                .ok_or(PlayedAgentError::NoWorker(wait))?;
            let worker = spec.worker_id;
            cp.register_worker(&spec.otp, "", Some(worker)).await?;
            // The spec is handed off inside `create_worker`; the control
            // plane marks the worker `Connecting` only once that returns, and
            // a stream cannot be opened before.
            let deadline = tokio::time::Instant::now() + wait;
            while cp
                .stores()
                .workers
                .get(worker)
                .await
                .map_err(ControlError::from)?
                .is_some_and(|w| w.state() == WorkerState::Creating)
            {
                if tokio::time::Instant::now() >= deadline {
                    return Err(PlayedAgentError::StillCreating(wait));
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            let stream = cp.open_worker_stream(worker).await?;
            Ok(Self {
                cp: cp.clone(),
                worker,
                stream,
                wait,
            })
        }

        /// The worker it plays.
        #[must_use]
        pub fn worker_id(&self) -> WorkerId {
            self.worker
        }

        /// Its command stream, for commands other than runs.
        pub fn stream(&mut self) -> &mut WorkerStreamHandle {
            &mut self.stream
        }

        /// The next run command, skipping any other command.
        ///
        /// # Errors
        ///
        /// [`PlayedAgentError::NoRun`] or [`PlayedAgentError::StreamClosed`].
        pub async fn next_run(&mut self) -> Result<RunJob, PlayedAgentError> {
            let outbound = &mut self.stream.outbound;
            let run = async {
                loop {
                    match outbound.recv().await {
                        Some(WorkerCommand::Run(run)) => return Ok(*run),
                        Some(_) => {}
                        None => return Err(PlayedAgentError::StreamClosed),
                    }
                }
            };
            tokio::time::timeout(self.wait, run)
                .await
                .map_err(|_| PlayedAgentError::NoRun(self.wait))?
        }

        /// Reports `run` started.
        ///
        /// # Errors
        ///
        /// The control plane's refusal.
        pub async fn start(&self, run: &RunJob) -> Result<Job, PlayedAgentError> {
            Ok(self
                .cp
                .job_started(self.worker, run.job_id, run.attempt)
                .await?)
        }

        /// Reports `run` finished with `result`.
        ///
        /// # Errors
        ///
        /// The control plane's refusal.
        pub async fn finish(
            &self,
            run: &RunJob,
            result: AttemptResult,
        ) -> Result<Job, PlayedAgentError> {
            Ok(self
                .cp
                .job_finished(self.worker, run.job_id, run.attempt, result)
                .await?)
        }

        /// Takes the next run command, starts it and finishes it with
        /// `result`: the command and the job as the finish left it.
        ///
        /// # Errors
        ///
        /// As [`next_run`](Self::next_run), [`start`](Self::start) and
        /// [`finish`](Self::finish).
        pub async fn run_next(
            &mut self,
            result: AttemptResult,
        ) -> Result<(RunJob, Job), PlayedAgentError> {
            let run = self.next_run().await?;
            self.start(&run).await?;
            let done = self.finish(&run, result).await?;
            Ok((run, done))
        }
    }
}
