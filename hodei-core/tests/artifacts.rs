//! Job artifacts through the control plane with the filesystem store: REST
//! listing and download (checksum header, 400 for unsafe names, 404s), the
//! client gRPC service, the worker service's authorization, and retention
//! deleting a pruned job's artifacts.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use hodei_core::artifacts::{Announced, ArtifactLimits, ArtifactStore, FsArtifactStore};
use hodei_core::control::{ControlPlane, ControlPlaneConfig};
use hodei_core::testing::TestServer;
use hodei_core::{ArtifactDest, CommandType, JobId, JobSpec};
use serde_json::Value;

struct App {
    cp: ControlPlane,
    store: Arc<FsArtifactStore>,
    base: String,
    http: reqwest::Client,
    server: TestServer,
    _dir: tempfile::TempDir,
}

async fn spawn_app(retention: Option<Duration>) -> App {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(
        FsArtifactStore::new(dir.path().join("artifacts"), ArtifactLimits::default()).unwrap(),
    );
    let mut config = ControlPlaneConfig::default();
    config.retention = retention;
    let cp = ControlPlane::builder()
        .config(config)
        .artifacts(store.clone())
        .build();
    let server = TestServer::spawn(cp.clone()).await.unwrap();
    App {
        cp,
        store,
        base: server.http_url(),
        http: reqwest::Client::new(),
        server,
        _dir: dir,
    }
}

fn with_output() -> JobSpec {
    let mut spec = JobSpec::new("producer", CommandType::shell("true", Vec::<String>::new()));
    spec.outputs = vec![ArtifactDest {
        name: "out".into(),
        path: "out/*.txt".into(),
        url: String::new(),
    }];
    spec
}

async fn put(store: &FsArtifactStore, job: JobId, name: &str, content: &'static [u8]) {
    let body = futures::stream::iter([Ok(Bytes::from_static(content))]).boxed();
    store
        .put(job, name, Announced::default(), body)
        .await
        .unwrap();
}

#[tokio::test]
async fn artifacts_are_listed_and_downloaded_over_rest_with_their_checksum() {
    let app = spawn_app(None).await;
    let job = app.cp.create_job(with_output(), None).await.unwrap().id();
    put(&app.store, job, "out/out/a.txt", b"hello world").await;
    put(&app.store, job, "out/out/b.txt", b"second").await;

    let list: Value = app
        .http
        .get(format!("{}/api/v1/jobs/{job}/artifacts", app.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let items = list["artifacts"].as_array().unwrap();
    assert_eq!(items.len(), 2, "{list}");
    assert_eq!(items[0]["name"], "out/out/a.txt");
    assert_eq!(items[0]["size"], 11);
    let sha = "b94d27b9934d3e08a52e52d7da7dabfac484efe37a5380ee9088f7ace2efcde9";
    assert_eq!(items[0]["sha256"], sha);

    let r = app
        .http
        .get(format!(
            "{}/api/v1/jobs/{job}/artifacts/out/out/a.txt",
            app.base
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-artifact-sha256"], sha);
    assert_eq!(r.headers()["content-length"], "11");
    assert_eq!(r.bytes().await.unwrap().as_ref(), b"hello world");

    // `..` as an encoded segment reaches the handler and is refused, not served.
    let r = app
        .http
        .get(format!(
            "{}/api/v1/jobs/{job}/artifacts/%2E%2E%2Fx",
            app.base
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["field"], "name", "{body}");

    for (url, status) in [
        (format!("/api/v1/jobs/{job}/artifacts/out/missing.txt"), 404),
        (format!("/api/v1/jobs/{}/artifacts", JobId::new()), 404),
        ("/api/v1/jobs/not-an-id/artifacts".to_owned(), 400),
    ] {
        let r = app
            .http
            .get(format!("{}{url}", app.base))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), status, "{url}");
    }
}

#[tokio::test]
async fn clients_list_and_download_over_grpc_and_workers_need_the_job() {
    use hodei_core::proto::v1;
    use hodei_core::proto::v1::artifact_service_client::ArtifactServiceClient;
    use hodei_core::proto::v1::job_artifact_service_client::JobArtifactServiceClient;

    let app = spawn_app(None).await;
    let job = app.cp.create_job(with_output(), None).await.unwrap().id();
    put(&app.store, job, "report", b"hello world").await;
    let url = app.server.grpc_url();
    let mut client = JobArtifactServiceClient::connect(url.clone())
        .await
        .unwrap();
    let list = client
        .list_job_artifacts(v1::ListJobArtifactsRequest {
            job_id: job.to_string(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(list.artifacts.len(), 1);
    assert_eq!(list.artifacts[0].size, 11);
    let mut stream = client
        .get_job_artifact(v1::GetJobArtifactRequest {
            job_id: job.to_string(),
            name: "report".into(),
        })
        .await
        .unwrap()
        .into_inner();
    let mut content = Vec::new();
    let mut info = None;
    while let Some(m) = stream.message().await.unwrap() {
        match m.part.unwrap() {
            v1::download_artifact_response::Part::Info(i) => info = Some(i),
            v1::download_artifact_response::Part::Chunk(c) => content.extend_from_slice(&c),
        }
    }
    assert_eq!(content, b"hello world");
    assert_eq!(info.unwrap().sha256.len(), 64);
    let e = client
        .get_job_artifact(v1::GetJobArtifactRequest {
            job_id: job.to_string(),
            name: "../report".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument);

    // The worker service wants a session token, and then the job it runs.
    let mut worker = ArtifactServiceClient::connect(url).await.unwrap();
    let e = worker
        .download_artifact(v1::DownloadArtifactRequest {
            job_id: job.to_string(),
            attempt: 1,
            url: format!("artifact://{job}/report"),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::Unauthenticated);
}

#[tokio::test]
async fn a_pruned_jobs_artifacts_are_deleted_by_housekeeping() {
    let retention = Duration::from_millis(300);
    let app = spawn_app(Some(retention)).await;
    let old = app.cp.create_job(with_output(), None).await.unwrap().id();
    put(&app.store, old, "a", b"1").await;
    app.cp.cancel_job(old, "done").await.unwrap();
    tokio::time::sleep(retention + Duration::from_millis(200)).await;
    let recent = app.cp.create_job(with_output(), None).await.unwrap().id();
    put(&app.store, recent, "a", b"2").await;
    app.cp.cancel_job(recent, "done").await.unwrap();

    let report = app.cp.housekeep().await.unwrap();
    assert_eq!(report.pruned_jobs, 1);
    assert_eq!(report.pruned_artifacts, 1);
    assert!(app.store.list(old).await.unwrap().is_empty());
    assert!(!app.store.root().join(old.to_string()).exists());
    assert_eq!(app.store.list(recent).await.unwrap().len(), 1);
}
