//! The real server with `HODEI_DOCKER_ENABLED=1`: `hodei job run --provider
//! docker` runs the job in a container of the locally built worker image, on
//! the isolated network (the default), out of reach of the host's loopback;
//! a job's output glob in the container becomes a downloadable artifact, and
//! another container job fetches it as its input.

use std::process::Command;
use std::time::Duration;

use hodei_core::testing::require;

use crate::harness::*;

/// Whether the engine answers; under `CI=true` a missing engine is a failure.
fn docker_available() -> bool {
    let ok = Command::new("docker")
        .args(["info", "--format", "{{.ServerVersion}}"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        require::missing_dependency(
            "the Docker Engine is not reachable: the Docker end-to-end test did not run",
        );
    }
    ok
}

#[tokio::test]
async fn cli_runs_a_job_in_a_docker_container() {
    if !docker_available() {
        return;
    }
    // The image holds this build's agent.
    let image = format!("hodei-worker-e2e:{}", std::process::id());
    let built = Command::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../scripts/docker/build-worker-image.sh"
    ))
    .env("HODEI_WORKER_IMAGE", &image)
    .env("HODEI_WORKER_BINARY", env!("CARGO_BIN_EXE_hodei-worker"))
    .status()
    .expect("run build-worker-image.sh");
    assert!(built.success(), "worker image built");
    // A service only on the host's loopback: the job must not reach it.
    let secret = std::net::TcpListener::bind("127.0.0.1:0").expect("loopback listener");
    secret.set_nonblocking(true).expect("non-blocking");
    let secret_port = secret.local_addr().expect("port").port();
    // Default network; workers come in through the network's gateway, so the
    // server listens on every interface (the harness' default is loopback).
    let artifacts = tempfile::tempdir().expect("artifact dir");
    let s = start_server(&[
        (
            "HODEI_ARTIFACT_DIR",
            artifacts.path().to_str().expect("utf-8 path"),
        ),
        ("HODEI_DOCKER_ENABLED", "1"),
        ("HODEI_WORKER_IMAGE", &image),
        ("HODEI_DOCKER_LABELS", "hodei.test=e2e"),
        ("HODEI_BIND_ADDRESS", "0.0.0.0"),
    ])
    .await;
    let probe = format!(
        "if timeout 3 bash -c 'exec 3<>/dev/tcp/127.0.0.1/{secret_port}' 2>/dev/null; \
         then echo loopback-reached; else echo loopback-blocked; fi"
    );
    let out = tokio::time::timeout(
        Duration::from_secs(120),
        tokio::process::Command::new(env!("CARGO_BIN_EXE_hodei"))
            .args([
                "--server",
                &s.grpc,
                "job",
                "run",
                "--provider",
                "docker",
                "--",
            ])
            .args([
                "bash",
                "-c",
                &format!("set -o pipefail; echo in-container; id -u; {probe}"),
            ])
            .output(),
    )
    .await
    .expect("in time")
    .expect("cli ran");
    assert_eq!(out.status.code(), Some(0), "{out:?}\n{}", s.server_log());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "in-container\n10001\nloopback-blocked\n"
    );
    assert!(
        matches!(secret.accept(), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
        "the job reached the host's loopback"
    );
    artifacts_cross_containers(&s).await;
    drop(s);
    // The server destroyed its containers on the way out.
    let left = Command::new("docker")
        .args(["ps", "-aq", "--filter", &format!("ancestor={image}")])
        .output()
        .expect("docker ps");
    assert!(
        left.stdout.is_empty(),
        "containers left: {:?}",
        String::from_utf8_lossy(&left.stdout)
    );
    let _ = Command::new("docker").args(["rmi", "-f", &image]).output();
}

/// A producer job in a container writes files matched by an output glob; they
/// are listed and downloaded through the REST API with their checksums; a
/// consumer job in another container gets one as its input, fails, and its
/// output is uploaded all the same.
async fn artifacts_cross_containers(s: &TestServer) {
    use hodei_core::{ArtifactDest, ArtifactSource};
    use sha2::{Digest, Sha256};
    let within = Duration::from_secs(120);
    let http = reqwest::Client::new();
    let base = format!("http://127.0.0.1:{}/api/v1/jobs", s.http_port());

    let mut producer = script(
        "mkdir -p out && printf 'made in a container\\n' > out/a.txt && \
         head -c 100000 /dev/zero > out/b.txt && echo no > out/c.log",
    );
    producer.preferences.preferred_provider = Some("docker".into());
    producer.outputs = vec![ArtifactDest {
        name: "out".into(),
        path: "out/*.txt".into(),
        url: String::new(),
    }];
    let a = s.submit(producer).await;
    let job = s.wait_done(&a, within).await;
    assert_eq!(
        job.state,
        hodei_core::proto::v1::JobState::Succeeded as i32,
        "{}\n{}",
        job.error,
        s.server_log()
    );
    let listed: serde_json::Value = http
        .get(format!("{base}/{a}/artifacts"))
        .send()
        .await
        .expect("list artifacts")
        .json()
        .await
        .expect("json");
    let names: Vec<_> = listed["artifacts"]
        .as_array()
        .expect("artifacts array")
        .iter()
        .map(|i| i["name"].as_str().expect("name").to_owned())
        .collect();
    assert_eq!(names, ["out/out/a.txt", "out/out/b.txt"], "{listed}");
    for item in listed["artifacts"].as_array().expect("array") {
        let name = item["name"].as_str().expect("name");
        let r = http
            .get(format!("{base}/{a}/artifacts/{name}"))
            .send()
            .await
            .expect("download");
        assert_eq!(r.status(), 200, "{name}");
        let body = r.bytes().await.expect("body");
        assert_eq!(
            item["sha256"].as_str(),
            Some(hex::encode(Sha256::digest(&body)).as_str()),
            "{name}"
        );
    }

    let mut consumer = script("cat in/a.txt > result.txt; echo consumed >> result.txt; exit 4");
    consumer.preferences.preferred_provider = Some("docker".into());
    consumer.max_attempts = 1;
    consumer.inputs = vec![ArtifactSource {
        name: "greeting".into(),
        url: format!("artifact://{a}/out/out/a.txt"),
        path: "in/a.txt".into(),
    }];
    consumer.outputs = vec![ArtifactDest {
        name: "result".into(),
        path: "result.txt".into(),
        url: String::new(),
    }];
    let b = s.submit(consumer).await;
    let job = s.wait_done(&b, within).await;
    assert_eq!(
        job.state,
        hodei_core::proto::v1::JobState::Failed as i32,
        "{}",
        job.error
    );
    let r = http
        .get(format!("{base}/{b}/artifacts/result"))
        .send()
        .await
        .expect("download result");
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.bytes().await.expect("body").as_ref(),
        b"made in a container\nconsumed\n"
    );
}

#[tokio::test]
async fn a_server_the_worker_containers_cannot_reach_refuses_to_start() {
    if !docker_available() {
        return;
    }
    // Listening on loopback only, with jobs on the isolated network: the
    // server says so at start instead of letting every job time out.
    let mut server = Command::new(env!("CARGO_BIN_EXE_hodei-server"))
        .env("GRPC_PORT", free_port().to_string())
        .env("HODEI_HTTP_PORT", free_port().to_string())
        .env("HODEI_BIND_ADDRESS", "127.0.0.1")
        .env("HODEI_DOCKER_ENABLED", "1")
        .env("HODEI_DOCKER_LABELS", "hodei.test=e2e-refuse")
        .env_remove("HODEI_DOCKER_NETWORK")
        .env_remove("HODEI_DATABASE_URL")
        .env_remove("DATABASE_URL")
        .env("RUST_LOG", "warn")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn hodei-server");
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = server.try_wait().expect("wait") {
            break status;
        }
        if std::time::Instant::now() > deadline {
            let _ = server.kill();
            panic!("hodei-server started although containers cannot reach it");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let out = server.wait_with_output().expect("output");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!status.success(), "{err}");
    for want in [
        "HODEI_BIND_ADDRESS=127.0.0.1",
        "listens on 127.0.0.1 only",
        "`hodei`",
        "0.0.0.0",
        "HODEI_DOCKER_NETWORK=host",
    ] {
        assert!(err.contains(want), "{want:?} missing from:\n{err}");
    }
}
