//! One trace per job, end to end in one process: a real control plane (gRPC
//! on a real socket), a provider that hands each worker to a real agent
//! (`WorkerClient`, see `support`) running real processes, and the
//! OpenTelemetry layer exporting to memory. The agent's run span must land in
//! the trace of the job's correlation id, next to the server's submit,
//! dispatch, provisioning and create_worker spans, with no trace context on
//! the wire.
#![cfg(feature = "otel")]
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod support;

use std::time::Duration;

use hodei_core::proto::v1;
use hodei_core::proto::v1::job_execution_service_client::JobExecutionServiceClient;
use hodei_core::testing::TestListeners;
use hodei_core::traces::otel::opentelemetry_sdk::trace::{
    InMemorySpanExporter, SdkTracerProvider, SpanData,
};
use hodei_core::traces::otel::{OtelPipeline, trace_id};
use hodei_core::{CommandType, JobId, JobSpec, JobState};
use tracing_subscriber::layer::SubscriberExt;

const WAIT: Duration = Duration::from_secs(30);

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
    let work = tempfile::tempdir().unwrap();
    let (cp, agents) = support::control_plane_with_agents(addr, work.path()).await;
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

    agents.cancel();
    pipeline.shutdown().unwrap();
}
