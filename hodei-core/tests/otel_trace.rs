//! One trace per job: a real in-process control plane (REST and gRPC on real
//! sockets, the controller, the provisioning saga) exports its spans through
//! the OpenTelemetry layer to an in-memory exporter. The test plays the agent
//! over the worker stream and opens its run span from the correlation id the
//! run command carries, as `hodei-agent` does. Every span of a job must be in
//! the trace whose id is derived from the job's correlation id.
#![cfg(feature = "otel")]
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::time::Duration;

use hodei_core::control::{ControlPlane, PoolPolicy};
use hodei_core::domain::worker_protocol::RunJob;
use hodei_core::proto::v1;
use hodei_core::proto::v1::job_execution_service_client::JobExecutionServiceClient;
use hodei_core::testing::{HandOffProvider, PlayedAgent, TestServer};
use hodei_core::traces::otel::{OtelPipeline, trace_id};
use hodei_core::traces::{self, Stage};
use hodei_core::{AttemptResult, CommandType, JobId, JobSpec, JobState};
use opentelemetry::trace::{SpanId, TraceId};
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider, SpanData};
use tracing::Instrument;
use tracing_subscriber::layer::SubscriberExt;

const WAIT: Duration = Duration::from_secs(20);
const PROVIDER: &str = "otel-test";

/// The value of attribute `key` of `span`, as text.
fn attr(span: &SpanData, key: &str) -> Option<String> {
    span.attributes
        .iter()
        .find(|kv| kv.key.as_str() == key)
        .map(|kv| kv.value.as_str().into_owned())
}

/// The finished spans of `job`, once every name in `names` is among them.
async fn spans_of(exporter: &InMemorySpanExporter, job: JobId, names: &[&str]) -> Vec<SpanData> {
    let job = job.to_string();
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let spans: Vec<SpanData> = exporter
            .get_finished_spans()
            .unwrap()
            .into_iter()
            .filter(|s| attr(s, "job.id").as_deref() == Some(job.as_str()))
            .collect();
        if names.iter().all(|n| spans.iter().any(|s| s.name == *n)) {
            return spans;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "job {job}: wanted spans {names:?}, have {:?}",
            spans.iter().map(|s| &s.name).collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn named<'a>(spans: &'a [SpanData], name: &str) -> &'a SpanData {
    spans
        .iter()
        .find(|s| s.name == name)
        .unwrap_or_else(|| panic!("no span {name}"))
}

/// Plays the agent for one run command: the run span from the command's
/// correlation id (as `hodei-agent` opens it), started, finished.
async fn run_next(agent: &mut PlayedAgent) -> RunJob {
    let run = agent.next_run().await.unwrap();
    let span = traces::correlation_span(Stage::Run, &run.correlation_id);
    traces::record_attempt(&span, run.job_id, run.attempt);
    traces::record_worker(&span, agent.worker_id());
    async {
        agent.start(&run).await.unwrap();
        let done = agent.finish(&run, AttemptResult::exited(0)).await.unwrap();
        assert_eq!(done.state(), JobState::Succeeded);
    }
    .instrument(span)
    .await;
    run
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_span_of_a_job_is_in_the_trace_of_its_correlation_id() {
    let exporter = InMemorySpanExporter::default();
    let pipeline = OtelPipeline::from_provider(
        SdkTracerProvider::builder()
            .with_simple_exporter(exporter.clone())
            .build(),
    );
    tracing::subscriber::set_global_default(tracing_subscriber::registry().with(pipeline.layer()))
        .unwrap();

    let cp = ControlPlane::builder().build();
    let (provider, mut created) = HandOffProvider::new(PROVIDER);
    // One worker, kept: the first job provisions it, the second is assigned to it.
    provider
        .register(&cp, PoolPolicy::default().max_workers(1))
        .await
        .unwrap();
    let server = TestServer::spawn(cp.clone()).await.unwrap();
    let base = server.http_url();
    tokio::spawn(cp.clone().run());

    // Job 1 over REST, with the client's correlation id: provisioned for.
    let correlation = "5b6f0c1e-8d2a-4c3b-9e7f-1a2b3c4d5e6f";
    let http = reqwest::Client::builder().timeout(WAIT).build().unwrap();
    let r = http
        .post(format!("{base}/api/v1/jobs"))
        .header("x-correlation-id", correlation)
        .json(&serde_json::json!({"name": "traced", "command": {"type": "shell", "cmd": "true", "args": []}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), reqwest::StatusCode::CREATED);
    let body: serde_json::Value = r.json().await.unwrap();
    let job1: JobId = body["id"].as_str().unwrap().parse().unwrap();
    assert_eq!(body["correlation_id"], correlation);

    let mut agent = PlayedAgent::join(&cp, &mut created, WAIT).await.unwrap();
    let worker = agent.worker_id();
    let run1 = run_next(&mut agent).await;
    assert_eq!(run1.correlation_id, correlation);

    let spans = spans_of(
        &exporter,
        job1,
        &[
            "hodei.job.submit",
            "hodei.job.dispatch",
            "hodei.job.provision",
            "hodei.provider.create_worker",
            "hodei.agent.run",
        ],
    )
    .await;
    let expected = trace_id(correlation);
    // A UUID correlation id is the trace id itself.
    assert_eq!(expected.to_string(), correlation.replace('-', ""));
    for s in &spans {
        assert_eq!(
            s.span_context.trace_id(),
            expected,
            "{} is in another trace",
            s.name
        );
        assert_eq!(attr(s, "correlation_id").as_deref(), Some(correlation));
    }
    let root = SpanId::from_bytes(traces::root_span_id_bytes(correlation));
    let (submit, dispatch, provision, create, run) = (
        named(&spans, "hodei.job.submit"),
        named(&spans, "hodei.job.dispatch"),
        named(&spans, "hodei.job.provision"),
        named(&spans, "hodei.provider.create_worker"),
        named(&spans, "hodei.agent.run"),
    );
    // Submit, dispatch and run hang from the job's remote root; provisioning
    // is the dispatch's child, create_worker the provisioning's.
    for s in [submit, dispatch, run] {
        assert_eq!(s.parent_span_id, root, "{}", s.name);
        assert!(s.parent_span_is_remote, "{}", s.name);
    }
    assert_eq!(provision.parent_span_id, dispatch.span_context.span_id());
    assert_eq!(create.parent_span_id, provision.span_context.span_id());
    for s in [provision, create, run] {
        assert_eq!(
            attr(s, "worker.id").as_deref(),
            Some(worker.to_string().as_str()),
            "{}",
            s.name
        );
    }
    for s in [provision, create] {
        assert_eq!(attr(s, "provider").as_deref(), Some(PROVIDER), "{}", s.name);
    }
    assert_eq!(attr(run, "attempt"), Some(run1.attempt.to_string()));

    // Job 2 over gRPC, correlation id chosen by the server: the idle worker takes it.
    let mut jobs = JobExecutionServiceClient::connect(server.grpc_url())
        .await
        .unwrap();
    let job = jobs
        .queue_job(v1::QueueJobRequest {
            spec: Some(v1::JobSpec::from(&JobSpec::new(
                "traced-grpc",
                CommandType::shell("true", Vec::<String>::new()),
            ))),
            correlation_id: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .job
        .unwrap();
    let job2: JobId = job.id.parse().unwrap();
    let correlation2 = job.correlation_id;
    assert_ne!(correlation2, correlation);
    let run2 = run_next(&mut agent).await;
    assert_eq!(run2.correlation_id, correlation2);
    let spans2 = spans_of(
        &exporter,
        job2,
        &["hodei.job.submit", "hodei.job.dispatch", "hodei.agent.run"],
    )
    .await;
    let expected2 = trace_id(&correlation2);
    assert_ne!(expected2, expected);
    assert_ne!(expected2, TraceId::INVALID);
    for s in &spans2 {
        assert_eq!(s.span_context.trace_id(), expected2, "{}", s.name);
    }
    assert_eq!(
        attr(named(&spans2, "hodei.job.dispatch"), "worker.id").as_deref(),
        Some(worker.to_string().as_str())
    );
    // No provisioning this time: the worker was there.
    assert!(
        spans2.iter().all(|s| s.name != "hodei.job.provision"),
        "{spans2:?}"
    );
    pipeline.shutdown().unwrap();
}
