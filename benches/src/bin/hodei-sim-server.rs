//! `hodei-sim-server`: the control plane of the reference server (same library
//! assembly: `ControlPlane` + `serve_grpc`, memory or Postgres stores) with one
//! provider, [`SimProvider`], whose workers are sessions opened by simulated
//! agents. Started by `hodei-load agents`; not meant to be run by hand.
//!
//! Protocol on stdout, one line each: `READY <grpc-url> <pid>` once serving, then
//! `CRED <worker-id> <otp>` per created worker. When stdin closes it prints
//! `LAG <count> <p50-ms> <p99-ms> <max-ms>` (heartbeat lag: agent send → stored,
//! from the `hodei_worker_heartbeat_lag_seconds` histogram) and exits.

use std::io::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::Parser;
use hodei_benches::sim::provider::{Credential, SimProvider};
use hodei_core::control::{ControlPlane, ControlPlaneConfig, PoolPolicy};
use hodei_core::provider::WorkerProvider;
use hodei_core::{ProviderConfig, ProviderId};
use tokio::io::AsyncReadExt as _;
use tokio::sync::mpsc;

#[derive(Debug, Parser)]
#[command(name = "hodei-sim-server", about)]
struct Args {
    /// Idle workers to keep (the pool's min_idle and max_workers).
    #[arg(long)]
    agents: u32,
    /// gRPC port (0 = any free port).
    #[arg(long, default_value_t = 0)]
    grpc_port: u16,
    /// Heartbeat interval the agents are told to use, in milliseconds.
    #[arg(long, default_value_t = 5000)]
    heartbeat_ms: u64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    hodei_benches::sim::raise_open_files_limit();
    let recorder = metrics_exporter_prometheus::PrometheusBuilder::new()
        .install_recorder()
        .context("installing the metrics recorder")?;

    let mut config = ControlPlaneConfig::default();
    config.heartbeat_interval = Duration::from_millis(args.heartbeat_ms);
    config.worker_lost_after = Duration::from_millis(args.heartbeat_ms * 3);
    // Thousands of agents connect in a burst; none is late.
    config.registration_timeout = Duration::from_secs(600);
    // As the reference server reads it, for A/B runs of the dispatch path.
    if let Ok(v) = std::env::var("HODEI_DISPATCH_PARALLELISM") {
        config.dispatch_parallelism = v
            .trim()
            .parse::<usize>()
            .context("HODEI_DISPATCH_PARALLELISM")?
            .clamp(1, 1024);
    }
    let mut builder = ControlPlane::builder().config(config);
    if let Some(pg) = hodei_store_postgres::PgStoreConfig::from_env().context("database")? {
        let pg = hodei_store_postgres::connect(&pg)
            .await
            .context("connecting to Postgres (HODEI_DATABASE_URL)")?;
        builder = builder.stores(pg.stores());
    }
    let cp = builder.build();

    let (creds_tx, mut creds_rx) = mpsc::unbounded_channel::<Credential>();
    let provider = SimProvider::new(ProviderId::new(), creds_tx);
    let pool = PoolPolicy::default()
        .min_idle(args.agents)
        .max_workers(args.agents)
        .idle_timeout(Duration::from_secs(24 * 3600));
    cp.register_provider(
        provider as Arc<dyn WorkerProvider>,
        ProviderConfig::Custom {
            settings: Default::default(),
        },
        pool,
    )
    .await
    .context("registering the sim provider")?;

    let (listener, addr) =
        hodei_core::server::bind(SocketAddr::from(([127, 0, 0, 1], args.grpc_port))).await?;
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let grpc = tokio::spawn(hodei_core::server::serve_grpc(
        cp.clone(),
        listener,
        None,
        async move {
            let mut rx = stop_rx;
            let _ = rx.wait_for(|v| *v).await;
        },
    ));
    let controller = tokio::spawn(cp.clone().run());
    say(&format!("READY http://{addr} {}", std::process::id()));

    let creds = tokio::spawn(async move {
        while let Some(c) = creds_rx.recv().await {
            say(&c.to_line());
        }
    });
    // Runs until the load tool closes stdin.
    let mut sink = Vec::new();
    let _ = tokio::io::stdin().read_to_end(&mut sink).await;

    let lag = hodei_benches::sim::summary_quantiles(
        &recorder.render(),
        "hodei_worker_heartbeat_lag_seconds",
    );
    say(&format!(
        "LAG {} {:.3} {:.3} {:.3}",
        lag.count,
        lag.p50 * 1e3,
        lag.p99 * 1e3,
        lag.max * 1e3
    ));
    creds.abort();
    cp.shutdown();
    let _ = stop_tx.send(true);
    let _ = tokio::time::timeout(Duration::from_secs(5), async {
        let _ = controller.await;
        let _ = grpc.await;
    })
    .await;
    Ok(())
}

fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}
