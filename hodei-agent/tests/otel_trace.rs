//! One trace per job, end to end in one process: a real control plane (gRPC
//! on a real socket), a provider that starts each worker as a real agent
//! ([`WorkerClient`]) running real processes, and the OpenTelemetry layer
//! exporting to memory. The agent's run span must land in the trace of the
//! job's correlation id, next to the server's submit, dispatch, provisioning
//! and create_worker spans, with no trace context on the wire.
#![cfg(feature = "otel")]
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use futures::stream::{self, BoxStream, StreamExt};
use hodei_agent::client::WorkerClient;
use hodei_agent::config::{AgentConfig, BackoffConfig, ServerAddresses};
use hodei_core::control::{ControlPlane, ControlPlaneConfig, PoolPolicy};
use hodei_core::proto::v1;
use hodei_core::proto::v1::job_execution_service_client::JobExecutionServiceClient;
use hodei_core::provider::{
    WorkerEventSource, WorkerHealth, WorkerLifecycle, WorkerProviderIdentity,
};
use hodei_core::testing::TestListeners;
use hodei_core::traces::otel::opentelemetry_sdk::trace::{
    InMemorySpanExporter, SdkTracerProvider, SpanData,
};
use hodei_core::traces::otel::{OtelPipeline, trace_id};
use hodei_core::{
    CommandType, HealthStatus, JobId, JobSpec, JobState, ProviderCapabilities, ProviderConfig,
    ProviderError, ProviderId, ProviderType, WorkerEvent, WorkerHandle, WorkerSpec, WorkerState,
};
use tokio_util::sync::CancellationToken;
use tracing_subscriber::layer::SubscriberExt;

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

fn attr(span: &SpanData, key: &str) -> Option<String> {
    span.attributes
        .iter()
        .find(|kv| kv.key.as_str() == key)
        .map(|kv| kv.value.as_str().into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agents_run_span_is_in_the_trace_of_the_jobs_correlation_id() {
    let exporter = InMemorySpanExporter::default();
    let pipeline = OtelPipeline::from_provider(
        SdkTracerProvider::builder()
            .with_simple_exporter(exporter.clone())
            .build(),
    );
    tracing::subscriber::set_global_default(tracing_subscriber::registry().with(pipeline.layer()))
        .unwrap();

    // The workers' address is part of the control plane's config: bind first.
    let listeners = TestListeners::bind().await.unwrap();
    let addr = listeners.grpc_addr();
    let mut config = ControlPlaneConfig::default();
    config.worker_server_address = format!("http://{addr}");
    let cp = ControlPlane::builder().config(config).build();
    let work = tempfile::tempdir().unwrap();
    let provider = Arc::new(InProcessProvider {
        id: ProviderId::new(),
        work_root: work.path().to_owned(),
        agents: Mutex::new(Vec::new()),
    });
    cp.register_provider(
        provider.clone(),
        ProviderConfig::Custom {
            settings: BTreeMap::new(),
        },
        PoolPolicy::default().max_workers(1),
    )
    .await
    .unwrap();
    let _server = listeners.serve(cp.clone());
    tokio::spawn(cp.clone().run());

    let correlation = "9d1e3f5a-7b2c-4d6e-8f01-23456789abcd";
    let mut jobs = JobExecutionServiceClient::connect(format!("http://{addr}"))
        .await
        .unwrap();
    let job = jobs
        .queue_job(v1::QueueJobRequest {
            spec: Some(v1::JobSpec::from(&JobSpec::new(
                "traced",
                CommandType::script("bash", "echo traced"),
            ))),
            correlation_id: correlation.into(),
        })
        .await
        .unwrap()
        .into_inner()
        .job
        .unwrap();
    let job_id: JobId = job.id.parse().unwrap();

    let deadline = tokio::time::Instant::now() + WAIT;
    let names = [
        "hodei.job.submit",
        "hodei.job.dispatch",
        "hodei.job.provision",
        "hodei.provider.create_worker",
        "hodei.agent.run",
    ];
    let spans = loop {
        let state = cp.get_job(job_id).await.unwrap().state();
        let spans: Vec<SpanData> = exporter
            .get_finished_spans()
            .unwrap()
            .into_iter()
            .filter(|s| attr(s, "job.id").as_deref() == Some(job.id.as_str()))
            .collect();
        if state == JobState::Succeeded && names.iter().all(|n| spans.iter().any(|s| s.name == *n))
        {
            break spans;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "job {state}; spans {:?}",
            spans.iter().map(|s| &s.name).collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let expected = trace_id(correlation);
    for s in &spans {
        assert_eq!(s.span_context.trace_id(), expected, "{}", s.name);
    }
    let run = spans.iter().find(|s| s.name == "hodei.agent.run").unwrap();
    let worker = cp.get_job(job_id).await.unwrap().worker_id().unwrap();
    assert_eq!(
        attr(run, "worker.id").as_deref(),
        Some(worker.to_string().as_str())
    );
    assert_eq!(attr(run, "correlation_id").as_deref(), Some(correlation));
    assert_eq!(attr(run, "attempt").as_deref(), Some("1"));
    // The agent's span hangs from the job's remote root, like the server's
    // top-level spans: only the correlation id crossed the wire.
    assert!(run.parent_span_is_remote);
    assert_eq!(
        run.parent_span_id.to_bytes(),
        hodei_core::traces::root_span_id_bytes(correlation)
    );

    for agent in provider.agents.lock().unwrap().iter() {
        agent.cancel();
    }
    pipeline.shutdown().unwrap();
}
