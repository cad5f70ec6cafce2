//! The smallest custom worker provider: the four required traits and nothing
//! else, registered with a control plane. The optional capabilities take
//! their defaults: free cost, eligibility from the declared capabilities, no
//! worker logs or metrics (`ProviderError::Unsupported`).
//!
//! `cargo run -p hodei-examples --example minimal_provider` registers it,
//! queues a job and prints what the scheduler decides. A real provider would
//! start a `hodei-worker` agent in `create_worker` with `spec.agent_env()`
//! in its environment (see docs/CUSTOM-PROVIDERS.md).

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use futures::stream::{self, BoxStream, StreamExt};
use hodei_core::control::{ControlPlane, PoolPolicy};
use hodei_core::provider::{
    WorkerEventSource, WorkerHealth, WorkerLifecycle, WorkerProvider, WorkerProviderIdentity,
};
use hodei_core::{
    CommandType, HealthStatus, JobSpec, ProviderCapabilities, ProviderConfig, ProviderError,
    ProviderId, ProviderType, WorkerEvent, WorkerHandle, WorkerSpec, WorkerState,
};

/// Records the workers it is asked for instead of starting them.
struct MinimalProvider {
    id: ProviderId,
}

#[async_trait]
impl WorkerLifecycle for MinimalProvider {
    async fn create_worker(&self, spec: &WorkerSpec) -> Result<WorkerHandle, ProviderError> {
        println!("asked for worker {}", spec.worker_id);
        Ok(WorkerHandle::new(spec.worker_id, self.id, "not-started"))
    }
    async fn get_worker_status(&self, _h: &WorkerHandle) -> Result<WorkerState, ProviderError> {
        Ok(WorkerState::Ready)
    }
    async fn destroy_worker(&self, _h: &WorkerHandle) -> Result<(), ProviderError> {
        Ok(())
    }
}

#[async_trait]
impl WorkerHealth for MinimalProvider {
    async fn health_check(&self) -> Result<HealthStatus, ProviderError> {
        Ok(HealthStatus::healthy("always"))
    }
}

impl WorkerEventSource for MinimalProvider {
    fn events(&self) -> BoxStream<'static, WorkerEvent> {
        stream::empty().boxed()
    }
}

impl WorkerProviderIdentity for MinimalProvider {
    fn id(&self) -> ProviderId {
        self.id
    }
    fn name(&self) -> &str {
        "minimal"
    }
    fn provider_type(&self) -> ProviderType {
        ProviderType::Custom
    }
    fn capabilities(&self) -> ProviderCapabilities {
        ProviderCapabilities::default()
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let provider = Arc::new(MinimalProvider {
        id: ProviderId::new(),
    });
    let job = JobSpec::new(
        "hello",
        CommandType::shell("echo hello", Vec::<String>::new()),
    );
    // The defaults, as the control plane sees them.
    println!("cost: {:?}", provider.job_cost(&job));
    println!("eligible: {:?}", provider.job_eligibility(&job));

    let cp = ControlPlane::builder().build();
    cp.register_provider(
        provider,
        ProviderConfig::Custom {
            settings: BTreeMap::new(),
        },
        PoolPolicy::default().max_workers(1),
    )
    .await?;
    let queued = cp.create_job(job, None).await?;
    let decision = cp.preview_decision(queued.id()).await?;
    println!("decision for job {}: {:?}", queued.id(), decision.action);
    Ok(())
}
