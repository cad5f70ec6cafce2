//! `/metrics` through the Prometheus exporter: one job runs through the
//! control plane (a provider whose workers the test registers as their agent
//! would), then the scrape shows the control plane's histograms and counters
//! next to the store gauges the dashboard and older tests read.
#![allow(clippy::unwrap_used, missing_docs)]

use std::time::Duration;

use hodei_core::control::{ControlPlane, PoolPolicy};
use hodei_core::domain::logs::{LogEntry, LogStream};
use hodei_core::domain::worker_protocol::{AttemptReport, WorkerReport};
use hodei_core::testing::{HandOffProvider, PlayedAgent, TestServer};
use hodei_core::{AttemptResult, CommandType, JobSpec, JobState, WorkerState};

const WAIT: Duration = Duration::from_secs(20);
const PROVIDER: &str = "metrics-test";

/// The value of the sample line starting with `series ` (name and labels).
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

#[tokio::test]
async fn a_finished_job_shows_in_the_metrics_histograms_counters_and_gauges() {
    let cp = ControlPlane::builder().build();
    let (provider, mut created) = HandOffProvider::new(PROVIDER);
    provider
        .register(&cp, PoolPolicy::default().max_workers(1))
        .await
        .unwrap();
    // The server installs the recorder: start it before anything is recorded.
    let server = TestServer::spawn(cp.clone()).await.unwrap();
    let base = server.http_url();
    tokio::spawn(cp.clone().run());

    let job = cp
        .create_job(
            JobSpec::new("measured", CommandType::script("bash", "true")),
            None,
        )
        .await
        .unwrap();

    // Play the agent: register with the one-time token, open the stream,
    // take the run command, start and finish the job.
    let mut agent = PlayedAgent::join(&cp, &mut created, WAIT).await.unwrap();
    let worker = agent.worker_id();
    let run = agent.next_run().await.unwrap();
    assert_eq!(run.job_id, job.id());
    agent.start(&run).await.unwrap();
    // Two log entries reach the server; the result says the attempt wrote three.
    cp.handle_worker_report(
        worker,
        WorkerReport::Logs {
            job_id: job.id(),
            attempt: run.attempt,
            entries: vec![
                LogEntry::new(1, LogStream::Stdout, "one"),
                LogEntry::new(2, LogStream::Stdout, "two"),
            ],
        },
    )
    .await
    .unwrap();
    cp.handle_worker_report(
        worker,
        WorkerReport::Result(
            AttemptReport::new(job.id(), run.attempt, AttemptResult::exited(0))
                .with_ran_for(Duration::from_millis(250))
                .with_last_sequence(3),
        ),
    )
    .await
    .unwrap();
    let done = cp.get_job(job.id()).await.unwrap();
    assert_eq!(done.state(), JobState::Succeeded);

    let http = reqwest::Client::builder().timeout(WAIT).build().unwrap();
    let r = http.get(format!("{base}/metrics")).send().await.unwrap();
    assert_eq!(r.status(), reqwest::StatusCode::OK);
    assert!(
        r.headers()[reqwest::header::CONTENT_TYPE]
            .to_str()
            .unwrap()
            .starts_with("text/plain; version=0.0.4")
    );
    let text = r.text().await.unwrap();

    // The control plane's histograms and counters.
    assert_eq!(
        sample(&text, "hodei_job_queue_wait_seconds_count"),
        Some(1.0),
        "{text}"
    );
    assert!(
        text.contains("# TYPE hodei_job_queue_wait_seconds histogram"),
        "{text}"
    );
    assert!(
        text.contains("hodei_job_queue_wait_seconds_bucket{le=\"0.005\"}"),
        "{text}"
    );
    assert!(
        sample(&text, "hodei_jobs_finished_total{outcome=\"succeeded\"}").is_some_and(|n| n >= 1.0),
        "{text}"
    );
    assert_eq!(
        sample(&text, "hodei_job_run_seconds_count{outcome=\"succeeded\"}"),
        Some(1.0),
        "{text}"
    );
    // What the agent reported: its process run time, and the entry never stored.
    assert_eq!(
        sample(&text, "hodei_job_process_seconds_count{outcome=\"exited\"}"),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        sample(&text, "hodei_job_process_seconds_sum{outcome=\"exited\"}"),
        Some(0.25),
        "{text}"
    );
    assert_eq!(
        sample(&text, "hodei_job_log_entries_missing_total"),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        sample(&text, "hodei_dispatch_latency_seconds_count"),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        sample(
            &text,
            &format!("hodei_worker_provisioning_seconds_count{{provider=\"{PROVIDER}\"}}")
        ),
        Some(1.0),
        "{text}"
    );

    // The gauges read from the stores, as before.
    assert!(text.contains("# TYPE hodei_jobs gauge"), "{text}");
    assert_eq!(
        sample(&text, "hodei_jobs{state=\"succeeded\"}"),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        sample(&text, "hodei_jobs{state=\"pending\"}"),
        Some(0.0),
        "{text}"
    );
    let workers: f64 = WorkerState::ALL
        .iter()
        .map(|s| sample(&text, &format!("hodei_workers{{state=\"{s}\"}}")).unwrap())
        .sum();
    assert_eq!(workers, 1.0, "{text}");
    assert_eq!(
        sample(&text, "hodei_providers{status=\"active\"}"),
        Some(1.0),
        "{text}"
    );
    assert_eq!(sample(&text, "hodei_queue_depth"), Some(0.0), "{text}");
    assert_eq!(
        sample(&text, "hodei_queue_oldest_pending_age_seconds"),
        Some(0.0),
        "{text}"
    );
    cp.shutdown();
}
