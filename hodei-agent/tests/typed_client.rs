//! `hodei_core::client::HodeiClient` end to end in one process: a real
//! control plane (gRPC on a real socket) whose provider starts each worker as
//! a real agent ([`WorkerClient`]) running real processes. The client submits,
//! follows the output as the job prints it, waits for the end and cancels.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use futures::stream::{self, BoxStream, StreamExt};
use hodei_agent::client::WorkerClient;
use hodei_agent::config::{AgentConfig, BackoffConfig, ServerAddresses};
use hodei_core::client::{ClientOptions, HodeiClient};
use hodei_core::control::{ControlPlane, ControlPlaneConfig, PoolPolicy};
use hodei_core::provider::{
    WorkerCost, WorkerEligibility, WorkerEventSource, WorkerHealth, WorkerLifecycle, WorkerLogs,
    WorkerMetrics, WorkerProviderIdentity,
};
use hodei_core::{
    CommandType, CostEstimate, Eligibility, HealthStatus, JobSpec, JobState, LogStream,
    ProviderCapabilities, ProviderConfig, ProviderError, ProviderId, ProviderType, ResourceUsage,
    WorkerEvent, WorkerHandle, WorkerSpec, WorkerState,
};
use tokio_util::sync::CancellationToken;

const WAIT: Duration = Duration::from_secs(30);
const PROVIDER: &str = "in-process";

/// Runs each worker as a real agent ([`WorkerClient`]) in this process.
struct InProcessProvider {
    id: ProviderId,
    work_root: PathBuf,
    agents: Mutex<Vec<CancellationToken>>,
}

#[async_trait]
impl WorkerLifecycle for InProcessProvider {
    async fn create_worker(&self, spec: &WorkerSpec) -> Result<WorkerHandle, ProviderError> {
        let servers = ServerAddresses::new(spec.server_address.split(','))
            .map_err(|e| ProviderError::Internal(e.to_string()))?;
        let mut config = AgentConfig::new(servers, spec.otp.clone());
        config.worker_id = spec.worker_id;
        config.backoff = BackoffConfig::new(Duration::from_millis(50), Duration::from_millis(500));
        config.work_root = self.work_root.clone();
        let client = WorkerClient::builder(config)
            .build()
            .map_err(|e| ProviderError::Internal(e.to_string()))?;
        let shutdown = CancellationToken::new();
        self.agents.lock().unwrap().push(shutdown.clone());
        tokio::spawn(client.run(shutdown));
        Ok(WorkerHandle::new(spec.worker_id, self.id, "in-process"))
    }
    async fn get_worker_status(&self, _h: &WorkerHandle) -> Result<WorkerState, ProviderError> {
        Ok(WorkerState::Ready)
    }
    async fn destroy_worker(&self, _h: &WorkerHandle) -> Result<(), ProviderError> {
        Ok(())
    }
}
#[async_trait]
impl WorkerHealth for InProcessProvider {
    async fn health_check(&self) -> Result<HealthStatus, ProviderError> {
        Ok(HealthStatus::healthy("ok"))
    }
}
#[async_trait]
impl WorkerLogs for InProcessProvider {
    async fn get_worker_logs(
        &self,
        _h: &WorkerHandle,
        _tail: Option<usize>,
    ) -> Result<Vec<String>, ProviderError> {
        Ok(Vec::new())
    }
}
impl WorkerCost for InProcessProvider {
    fn estimate_cost(&self, _s: &JobSpec) -> CostEstimate {
        CostEstimate::free()
    }
    fn estimated_startup_time(&self) -> Duration {
        Duration::ZERO
    }
}
impl WorkerEligibility for InProcessProvider {
    fn check_eligibility(&self, spec: &JobSpec) -> Eligibility {
        Eligibility::from_capabilities(&self.capabilities(), spec)
    }
}
#[async_trait]
impl WorkerMetrics for InProcessProvider {
    async fn get_worker_metrics(&self, _h: &WorkerHandle) -> Result<ResourceUsage, ProviderError> {
        Ok(ResourceUsage::default())
    }
}
impl WorkerEventSource for InProcessProvider {
    fn events(&self) -> BoxStream<'static, WorkerEvent> {
        stream::empty().boxed()
    }
}
impl WorkerProviderIdentity for InProcessProvider {
    fn id(&self) -> ProviderId {
        self.id
    }
    fn name(&self) -> &str {
        PROVIDER
    }
    fn provider_type(&self) -> ProviderType {
        ProviderType::Custom
    }
    fn capabilities(&self) -> ProviderCapabilities {
        ProviderCapabilities::default()
    }
}

/// A control plane served on a real socket with one in-process agent
/// worker, and a typed client of it.
async fn server_with_agent() -> (HodeiClient, tempfile::TempDir) {
    let (listener, addr) = hodei_core::server::bind("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let mut config = ControlPlaneConfig::default();
    config.worker_server_address = format!("http://{addr}");
    let cp = ControlPlane::builder().config(config).build();
    let work = tempfile::tempdir().unwrap();
    cp.register_provider(
        Arc::new(InProcessProvider {
            id: ProviderId::new(),
            work_root: work.path().to_owned(),
            agents: Mutex::new(Vec::new()),
        }),
        ProviderConfig::Custom {
            settings: BTreeMap::new(),
        },
        PoolPolicy::default().max_workers(1),
    )
    .await
    .unwrap();
    tokio::spawn(hodei_core::server::serve_grpc(
        cp.clone(),
        listener,
        None,
        std::future::pending(),
    ));
    tokio::spawn(cp.clone().run());
    let client = HodeiClient::connect(format!("http://{addr}"), ClientOptions::new())
        .await
        .unwrap();
    (client, work)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_agents_output_is_followed_in_order_until_the_job_ends() {
    let (client, _work) = server_with_agent().await;
    let spec = JobSpec::new(
        "followed",
        CommandType::script(
            "bash",
            "for i in 1 2 3 4 5; do echo out-$i; sleep 0.1; done; echo oops >&2; exit 3",
        ),
    )
    .with_max_attempts(1);
    let id = client.submit(&spec).await.unwrap();
    let follow = client.follow_logs(id).await.unwrap();
    let entries: Vec<_> = tokio::time::timeout(WAIT, follow.collect::<Vec<_>>())
        .await
        .expect("the log stream ends with the job");
    let mut stdout = Vec::new();
    let mut stderr = Vec::new();
    let mut sequences = Vec::new();
    for e in entries {
        let e = e.unwrap();
        assert_eq!(e.attempt, 1);
        sequences.push(e.entry.sequence);
        let text = String::from_utf8_lossy(&e.entry.data).into_owned();
        match e.entry.stream {
            LogStream::Stdout => stdout.extend(text.split('\n').map(str::to_owned)),
            LogStream::Stderr => stderr.push(text),
            _ => {}
        }
    }
    assert_eq!(stdout, ["out-1", "out-2", "out-3", "out-4", "out-5"]);
    assert_eq!(stderr, ["oops"]);
    assert!(sequences.windows(2).all(|w| w[0] < w[1]), "{sequences:?}");

    let job = client.wait(id, WAIT).await.unwrap();
    assert_eq!(job.state(), JobState::Failed);
    assert_eq!(job.execution_context().exit_code, Some(3));
    // What was followed is what is stored.
    assert_eq!(
        client
            .logs(id)
            .await
            .unwrap()
            .iter()
            .map(|e| e.entry.sequence)
            .collect::<Vec<_>>(),
        sequences
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_job_cancelled_by_the_client_ends_cancelled() {
    let (client, _work) = server_with_agent().await;
    let spec = JobSpec::new(
        "long",
        CommandType::script("bash", "echo started; sleep 60"),
    );
    let id = client.submit(&spec).await.unwrap();
    client
        .wait_for(id, WAIT, |j| j.state() == JobState::Running)
        .await
        .unwrap();
    client.cancel(id, "no longer needed").await.unwrap();
    let job = client.wait(id, WAIT).await.unwrap();
    assert_eq!(job.state(), JobState::Cancelled);
}
