//! A provider that implements only the four required traits (lifecycle,
//! health, events, identity) runs a job end to end through a real control
//! plane and gets the documented defaults: free cost (the cost-aware
//! scheduler prefers it to a priced provider), eligibility from its declared
//! capabilities, and `Unsupported` when its worker's logs or metrics are
//! asked for. The test plays the agent over the worker stream.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use axum::response::IntoResponse;
use futures::stream::{self, BoxStream, StreamExt};
use hodei_core::api::{grpc, rest};
use hodei_core::control::{
    ControlError, ControlPlane, DecisionAction, PoolPolicy, Strategy, WorkerStreamHandle,
};
use hodei_core::domain::worker_protocol::WorkerCommand;
use hodei_core::provider::{
    CostEstimate, WorkerCost, WorkerEventSource, WorkerHealth, WorkerLifecycle, WorkerProvider,
    WorkerProviderIdentity,
};
use hodei_core::{
    AttemptResult, CommandType, Eligibility, HealthStatus, JobSpec, JobState, OptionalCapability,
    ProviderCapabilities, ProviderConfig, ProviderError, ProviderId, ProviderType, WorkerEvent,
    WorkerHandle, WorkerSpec, WorkerState,
};
use tokio::sync::mpsc;

const WAIT: Duration = Duration::from_secs(20);

/// The four required traits and nothing else. Its workers are handed to the
/// test, which plays their agents.
struct MinimalProvider {
    id: ProviderId,
    created: mpsc::UnboundedSender<WorkerSpec>,
}

#[async_trait]
impl WorkerLifecycle for MinimalProvider {
    async fn create_worker(&self, spec: &WorkerSpec) -> Result<WorkerHandle, ProviderError> {
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
impl WorkerHealth for MinimalProvider {
    async fn health_check(&self) -> Result<HealthStatus, ProviderError> {
        Ok(HealthStatus::healthy("ok"))
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
    /// Two cores: a job asking three is not for it.
    fn capabilities(&self) -> ProviderCapabilities {
        let mut caps = ProviderCapabilities::default();
        caps.max_cpu_cores = 2.0;
        caps
    }
}

/// A provider that offers one optional trait, a price: what the minimal
/// provider's free default is compared with. It never creates a worker.
struct PricedProvider {
    id: ProviderId,
}

#[async_trait]
impl WorkerLifecycle for PricedProvider {
    async fn create_worker(&self, _spec: &WorkerSpec) -> Result<WorkerHandle, ProviderError> {
        Err(ProviderError::Unavailable(
            "the priced provider creates nothing".into(),
        ))
    }
    async fn get_worker_status(&self, _h: &WorkerHandle) -> Result<WorkerState, ProviderError> {
        Ok(WorkerState::Terminated)
    }
    async fn destroy_worker(&self, _h: &WorkerHandle) -> Result<(), ProviderError> {
        Ok(())
    }
}

#[async_trait]
impl WorkerHealth for PricedProvider {
    async fn health_check(&self) -> Result<HealthStatus, ProviderError> {
        Ok(HealthStatus::healthy("ok"))
    }
}

impl WorkerEventSource for PricedProvider {
    fn events(&self) -> BoxStream<'static, WorkerEvent> {
        stream::empty().boxed()
    }
}

impl WorkerCost for PricedProvider {
    fn estimate_cost(&self, spec: &JobSpec) -> CostEstimate {
        CostEstimate::per_hour(5.0 * spec.resources.cpu_cores, "USD")
    }
    fn estimated_startup_time(&self) -> Duration {
        Duration::from_secs(1)
    }
}

impl WorkerProviderIdentity for PricedProvider {
    fn id(&self) -> ProviderId {
        self.id
    }
    fn name(&self) -> &str {
        "priced"
    }
    fn provider_type(&self) -> ProviderType {
        ProviderType::Custom
    }
    /// Four cores (the default capabilities).
    fn capabilities(&self) -> ProviderCapabilities {
        ProviderCapabilities::default()
    }
    fn cost(&self) -> Option<&dyn WorkerCost> {
        Some(self)
    }
}

fn job(name: &str, cpu_cores: f64) -> JobSpec {
    let mut spec = JobSpec::new(name, CommandType::shell("true", Vec::<String>::new()));
    spec.resources.cpu_cores = cpu_cores;
    spec
}

fn custom() -> ProviderConfig {
    ProviderConfig::Custom {
        settings: BTreeMap::new(),
    }
}

/// Plays the agent for the next run command: started, finished with exit 0.
async fn run_next(
    cp: &ControlPlane,
    stream: &mut WorkerStreamHandle,
    worker: hodei_core::WorkerId,
) {
    let run = tokio::time::timeout(WAIT, async {
        loop {
            if let WorkerCommand::Run(run) = stream.outbound.recv().await.unwrap() {
                return *run;
            }
        }
    })
    .await
    .expect("a run command");
    cp.job_started(worker, run.job_id, run.attempt)
        .await
        .unwrap();
    let done = cp
        .job_finished(worker, run.job_id, run.attempt, AttemptResult::exited(0))
        .await
        .unwrap();
    assert_eq!(done.state(), JobState::Succeeded);
}

#[test]
fn the_defaults_as_the_provider_trait_reports_them() {
    let (tx, _rx) = mpsc::unbounded_channel();
    let p: Arc<dyn WorkerProvider> = Arc::new(MinimalProvider {
        id: ProviderId::new(),
        created: tx,
    });
    assert_eq!(p.job_cost(&job("any", 2.0)), CostEstimate::free());
    assert_eq!(p.startup_estimate(), Duration::ZERO);
    assert_eq!(p.job_eligibility(&job("fits", 2.0)), Eligibility::Eligible);
    assert!(matches!(
        p.job_eligibility(&job("too big", 3.0)),
        Eligibility::Ineligible(why) if why.contains("cpu")
    ));
    assert!(p.cost().is_none() && p.eligibility().is_none());
    assert!(p.logs().is_none() && p.metrics().is_none());

    let priced: Arc<dyn WorkerProvider> = Arc::new(PricedProvider {
        id: ProviderId::new(),
    });
    assert_eq!(priced.job_cost(&job("any", 2.0)).per_hour, 10.0);
    assert_eq!(priced.startup_estimate(), Duration::from_secs(1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_minimal_provider_runs_a_job_and_gets_the_defaults() {
    let cp = ControlPlane::builder()
        .strategy(Strategy::CostAware)
        .build();
    let (tx, mut created) = mpsc::unbounded_channel();
    let minimal = cp
        .register_provider(
            Arc::new(MinimalProvider {
                id: ProviderId::new(),
                created: tx,
            }),
            custom(),
            PoolPolicy::default().max_workers(1),
        )
        .await
        .unwrap();
    let priced = cp
        .register_provider(
            Arc::new(PricedProvider {
                id: ProviderId::new(),
            }),
            custom(),
            PoolPolicy::default().max_workers(1),
        )
        .await
        .unwrap();

    // Cost: the minimal provider's default is free, so the cost-aware
    // scheduler picks it over the priced one.
    let small = cp.create_job(job("small", 1.0), None).await.unwrap();
    assert_eq!(
        cp.preview_decision(small.id()).await.unwrap().action,
        DecisionAction::Provision(minimal.id())
    );
    // Eligibility: from its capabilities (two cores), so a three-core job
    // goes to the priced provider in spite of its price.
    let big = cp.create_job(job("big", 3.0), None).await.unwrap();
    assert_eq!(
        cp.preview_decision(big.id()).await.unwrap().action,
        DecisionAction::Provision(priced.id())
    );
    cp.cancel_job(big.id(), "only previewed").await.unwrap();

    // End to end: the small job is provisioned on the minimal provider, whose
    // worker (played here) registers, runs it and reports success.
    tokio::spawn(cp.clone().run());
    let spec = tokio::time::timeout(WAIT, created.recv())
        .await
        .expect("a worker created on the minimal provider")
        .unwrap();
    let worker = spec.worker_id;
    cp.register_worker(&spec.otp, "", Some(worker))
        .await
        .unwrap();
    let mut stream = cp.open_worker_stream(worker).await.unwrap();
    run_next(&cp, &mut stream, worker).await;
    let done = cp.get_job(small.id()).await.unwrap();
    assert_eq!(done.state(), JobState::Succeeded);

    // Logs and metrics: not offered, answered with a typed Unsupported, which
    // the APIs map to UNIMPLEMENTED / 501.
    let err = cp.worker_logs(worker, Some(10)).await.unwrap_err();
    assert!(
        matches!(
            err,
            ControlError::Provider(ProviderError::Unsupported {
                capability: OptionalCapability::Logs
            })
        ),
        "{err:?}"
    );
    assert_eq!(
        grpc::status_from(err.clone()).code(),
        tonic::Code::Unimplemented
    );
    assert_eq!(
        rest::ApiError::from(err).into_response().status(),
        axum::http::StatusCode::NOT_IMPLEMENTED
    );
    let err = cp.worker_metrics(worker).await.unwrap_err();
    assert!(
        matches!(
            err,
            ControlError::Provider(ProviderError::Unsupported {
                capability: OptionalCapability::Metrics
            })
        ),
        "{err:?}"
    );
    cp.shutdown();
}
