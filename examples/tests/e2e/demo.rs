//! The README's first command: `scripts/demo --exit`, i.e. `hodei-server
//! --demo --demo-exit`, runs the demo jobs and exits cleanly.

use std::process::{Command, Stdio};
use std::time::Duration;

use super::harness::free_port;

/// The server retires its workers before it closes its listeners: an agent
/// whose job ended in the same moment as the shutdown still reaches the
/// server to hand over its last acknowledgements. (When `--demo-exit`
/// closed the listeners first, that agent waited out its flush timeout and
/// was killed at the end of the provider's grace period, one run in five to
/// ten: hence several runs.)
#[tokio::test]
async fn the_demo_exits_without_killing_a_worker() {
    for run in 1..=5 {
        let child = Command::new(env!("CARGO_BIN_EXE_hodei-server"))
            .args(["--demo", "--demo-exit"])
            .env("GRPC_PORT", free_port().to_string())
            .env("HODEI_HTTP_PORT", free_port().to_string())
            .env("HODEI_BIND_ADDRESS", "127.0.0.1")
            .env("HODEI_WORKER_BINARY", env!("CARGO_BIN_EXE_hodei-worker"))
            .env_remove("HODEI_DATABASE_URL")
            .env_remove("DATABASE_URL")
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn hodei-server --demo --demo-exit");
        let out = tokio::time::timeout(
            Duration::from_secs(120),
            tokio::task::spawn_blocking(move || child.wait_with_output()),
        )
        .await
        .unwrap_or_else(|_| panic!("run {run}: the demo did not exit within 120 s"))
        .expect("join")
        .expect("wait for hodei-server");
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success(),
            "run {run}: {:?}\n{stdout}\n{stderr}",
            out.status
        );
        for expected in [
            "'hello' → succeeded",
            "'script' → succeeded",
            "'secret' → succeeded",
            "'failing' → failed",
        ] {
            assert!(
                stdout.contains(expected),
                "run {run}: no {expected:?} in\n{stdout}"
            );
        }
        assert!(
            !stderr.contains("did not stop within the grace period"),
            "run {run}: a worker had to be killed:\n{stderr}"
        );
    }
}
