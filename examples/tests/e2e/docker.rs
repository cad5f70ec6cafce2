//! The real server with `HODEI_DOCKER_ENABLED=1`: `hodei job run --provider
//! docker` runs the job in a container of the locally built worker image.

use std::process::Command;
use std::time::Duration;

use crate::harness::*;

/// Whether the engine answers; under `CI=true` a missing engine is a failure.
fn docker_available() -> bool {
    let ok = Command::new("docker")
        .args(["info", "--format", "{{.ServerVersion}}"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "the Docker Engine is not reachable (CI=true): Docker tests cannot be skipped"
        );
        eprintln!("SKIP: the Docker Engine is not reachable; Docker end-to-end test skipped");
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
    let s = start_server(&[
        ("HODEI_DOCKER_ENABLED", "1"),
        ("HODEI_WORKER_IMAGE", &image),
        ("HODEI_DOCKER_LABELS", "hodei.test=e2e"),
    ])
    .await;
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
            .args(["bash", "-c", "set -o pipefail; echo in-container; id -u"])
            .output(),
    )
    .await
    .expect("in time")
    .expect("cli ran");
    assert_eq!(out.status.code(), Some(0), "{out:?}\n{}", s.server_log());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "in-container\n10001\n"
    );
    drop(s);
    // The server destroyed its container on the way out.
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
