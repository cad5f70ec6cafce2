//! An application that installed its own `metrics` recorder first: Hodei says
//! so with a typed error instead of panicking, and `/metrics` still serves the
//! store gauges. (Its own test binary: the global recorder is per process.)
#![allow(clippy::unwrap_used, missing_docs)]

use std::time::Duration;

use hodei_core::control::ControlPlane;
use hodei_core::telemetry::{self, TelemetryError};
use hodei_core::testing::TestServer;

#[tokio::test]
async fn another_recorder_installed_first_is_reported_and_gauges_are_still_served() {
    metrics::set_global_recorder(metrics::NoopRecorder).unwrap();
    assert_eq!(
        telemetry::install().unwrap_err(),
        TelemetryError::RecorderAlreadyInstalled
    );
    // Every later call says the same, and there is no handle.
    assert_eq!(
        telemetry::install().unwrap_err(),
        TelemetryError::RecorderAlreadyInstalled
    );
    assert!(telemetry::handle().is_none());

    let server = TestServer::spawn(ControlPlane::builder().build())
        .await
        .unwrap();
    let base = server.http_url();
    let text = reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap()
        .get(format!("{base}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(text.contains("hodei_jobs{state=\"pending\"} 0"), "{text}");
    assert!(text.contains("hodei_queue_depth 0"), "{text}");
    assert!(!text.contains("hodei_jobs_finished_total"), "{text}");
}
