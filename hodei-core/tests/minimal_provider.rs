//! A provider that offers none of the optional capabilities (the test kit's
//! `HandOffProvider` without options: lifecycle, health, events and identity
//! only) runs a job end to end through a real control plane and gets the
//! documented defaults: free cost (the cost-aware scheduler prefers it to a
//! priced provider), eligibility from its declared capabilities, and
//! `Unsupported` when its worker's logs or metrics are asked for. The test plays the agent over the worker stream.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::sync::Arc;
use std::time::Duration;

use axum::response::IntoResponse;
use hodei_core::api::{grpc, rest};
use hodei_core::control::{ControlError, ControlPlane, DecisionAction, PoolPolicy, Strategy};
use hodei_core::provider::{CostEstimate, WorkerProvider};
use hodei_core::testing::{HandOffProvider, PlayedAgent};
use hodei_core::{
    AttemptResult, CommandType, Eligibility, JobSpec, JobState, OptionalCapability,
    ProviderCapabilities, ProviderError, WorkerSpec,
};

const WAIT: Duration = Duration::from_secs(20);

/// No optional capability offered; two cores: a job asking three is not
/// for it. Its workers are handed to the test, which
/// plays their agents.
fn minimal() -> (
    Arc<HandOffProvider>,
    tokio::sync::mpsc::UnboundedReceiver<WorkerSpec>,
) {
    let mut caps = ProviderCapabilities::default();
    caps.max_cpu_cores = 2.0;
    HandOffProvider::builder("minimal")
        .capabilities(caps)
        .build()
}

/// One optional capability offered, a price: what the minimal provider's
/// free default is compared with. Four cores (the default capabilities);
/// no job is ever run on it.
fn priced() -> Arc<HandOffProvider> {
    HandOffProvider::builder("priced")
        .cost(|spec| CostEstimate::per_hour(5.0 * spec.resources.cpu_cores, "USD"))
        .startup_estimate(Duration::from_secs(1))
        .build()
        .0
}

fn job(name: &str, cpu_cores: f64) -> JobSpec {
    let mut spec = JobSpec::new(name, CommandType::shell("true", Vec::<String>::new()));
    spec.resources.cpu_cores = cpu_cores;
    spec
}

#[test]
fn the_defaults_as_the_provider_trait_reports_them() {
    let p: Arc<dyn WorkerProvider> = minimal().0;
    assert_eq!(p.job_cost(&job("any", 2.0)), CostEstimate::free());
    assert_eq!(p.startup_estimate(), Duration::ZERO);
    assert_eq!(p.job_eligibility(&job("fits", 2.0)), Eligibility::Eligible);
    assert!(matches!(
        p.job_eligibility(&job("too big", 3.0)),
        Eligibility::Ineligible(why) if why.contains("cpu")
    ));
    assert!(p.cost().is_none() && p.eligibility().is_none());
    assert!(p.logs().is_none() && p.metrics().is_none());

    let priced: Arc<dyn WorkerProvider> = priced();
    assert_eq!(priced.job_cost(&job("any", 2.0)).per_hour, 10.0);
    assert_eq!(priced.startup_estimate(), Duration::from_secs(1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_minimal_provider_runs_a_job_and_gets_the_defaults() {
    let cp = ControlPlane::builder()
        .strategy(Strategy::CostAware)
        .build();
    let (provider, mut created) = minimal();
    let one = PoolPolicy::default().max_workers(1);
    let minimal = provider.register(&cp, one.clone()).await.unwrap();
    let priced = priced().register(&cp, one).await.unwrap();

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
    let mut agent = PlayedAgent::join(&cp, &mut created, WAIT)
        .await
        .expect("a worker created on the minimal provider");
    let worker = agent.worker_id();
    let (run, done) = agent.run_next(AttemptResult::exited(0)).await.unwrap();
    assert_eq!(run.job_id, small.id());
    assert_eq!(done.state(), JobState::Succeeded);
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
