//! A control plane whose workers are real agents in this process: its
//! provider is `hodei_core::testing::HandOffProvider`, and each worker spec
//! it hands off starts a real agent ([`WorkerClient`]) running real
//! processes.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use hodei_agent::client::WorkerClient;
use hodei_agent::config::{AgentConfig, BackoffConfig, ServerAddresses};
use hodei_core::WorkerSpec;
use hodei_core::control::{ControlPlane, ControlPlaneConfig, PoolPolicy};
use hodei_core::testing::HandOffProvider;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// A control plane (not yet served, its loop not started) whose workers dial
/// `grpc_addr`, with one provider of at most one worker, an agent working
/// under `work_root`. Cancelling the token stops the agents.
pub(crate) async fn control_plane_with_agents(
    grpc_addr: SocketAddr,
    work_root: &Path,
) -> (ControlPlane, CancellationToken) {
    let mut config = ControlPlaneConfig::default();
    config.worker_server_address = format!("http://{grpc_addr}");
    let cp = ControlPlane::builder().config(config).build();
    let (provider, specs) = HandOffProvider::new("in-process");
    let agents = start_agents(specs, work_root.to_owned());
    provider
        .register(&cp, PoolPolicy::default().max_workers(1))
        .await
        .unwrap();
    (cp, agents)
}

/// Starts an agent for every spec that arrives on `specs`.
fn start_agents(
    mut specs: mpsc::UnboundedReceiver<WorkerSpec>,
    work_root: PathBuf,
) -> CancellationToken {
    let shutdown = CancellationToken::new();
    let agents = shutdown.clone();
    tokio::spawn(async move {
        while let Some(spec) = specs.recv().await {
            let servers = ServerAddresses::new(spec.server_address.split(',')).unwrap();
            let mut config = AgentConfig::new(servers, spec.otp.clone());
            config.worker_id = spec.worker_id;
            config.backoff =
                BackoffConfig::new(Duration::from_millis(50), Duration::from_millis(500));
            config.work_root = work_root.clone();
            let client = WorkerClient::builder(config).build().unwrap();
            tokio::spawn(client.run(agents.child_token()));
        }
    });
    shutdown
}
