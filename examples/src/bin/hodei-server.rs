//! `hodei-server`: the reference control plane, assembled from the public API.
//!
//! With no configuration it runs the embedded defaults: in-memory store, the
//! local process provider (spawning `hodei-worker` found next to this
//! executable), gRPC on `GRPC_PORT` (50051) and REST on `HODEI_HTTP_PORT` (8080).
//! Every setting is an environment variable: see `hodei_core::server_config`.
//! `--demo` also submits a few jobs and prints their logs.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::{CommandFactory, FromArgMatches, Parser};
use hodei_core::control::ControlPlane;
use hodei_core::server_config::{self, ServerConfig};
use hodei_core::settings::SettingGroup;
use hodei_providers::server_setup;
use hodei_store_postgres::{PgLeaderElection, PgStoreConfig};

#[path = "../demo.rs"]
mod demo;
#[path = "../logging.rs"]
mod logging;

/// Hodei control plane; every setting is an environment variable (listed below and in docs/OPERATIONS.md)
#[derive(Debug, Parser)]
#[command(name = "hodei-server", version)]
struct Args {
    /// Submit a few demo jobs after start and print their logs.
    #[arg(long)]
    demo: bool,
    /// Exit after the demo jobs finished (for scripts).
    #[arg(long, requires = "demo")]
    demo_exit: bool,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let store = SettingGroup::new("Postgres store", PgStoreConfig::SETTINGS);
    let help = server_setup::settings_help(store);
    let args = Args::from_arg_matches(&Args::command().after_help(help).get_matches())?;
    let settings = ServerConfig::from_env()?;
    let (logging, traces) = logging::init(
        "info,h2=warn,tower=warn",
        // Colour codes only on a terminal, not in files or log collectors.
        std::io::IsTerminal::is_terminal(&std::io::stderr()),
        std::io::stderr,
        settings.traces.as_ref(),
    );
    // Asked to export traces and cannot: refuse rather than run without them.
    traces.map_err(anyhow::Error::msg)?;

    let pg = match PgStoreConfig::from_env().context("database configuration")? {
        Some(config) => Some(
            hodei_store_postgres::connect(&config)
                .await
                .context("connecting to Postgres (HODEI_DATABASE_URL)")?,
        ),
        None => None,
    };
    let secrets_key = std::env::var(server_config::ENV_SECRETS_KEY).ok();
    let sealer = server_config::secret_sealer(secrets_key.as_deref(), pg.is_some())?;
    let stores = match &pg {
        Some(pg) => pg.stores(),
        None => hodei_core::store::Stores::in_memory(),
    };
    // One factory builds the providers configured here and those registered
    // through the API (POST /api/v1/providers, RegisterProvider).
    let process_config = server_setup::process_base(&settings)?;
    let factory = server_setup::provider_factory(&settings, &stores, process_config.clone())?;
    // The Prometheus recorder goes in before the control plane records
    // anything (the REST router would install it too, a little later).
    if let Err(e) = hodei_core::telemetry::install() {
        tracing::warn!(error = %e, "metrics");
    }
    let mut builder = ControlPlane::builder()
        .config(settings.control_plane.clone())
        .metrics(settings.metrics)
        .secrets(sealer)
        .stores(stores)
        .artifacts(Arc::new(settings.artifacts.open()?))
        .provider_factory(Arc::new(factory.clone()));
    match &pg {
        Some(pg) => {
            let holder = hodei_store_postgres::replica_holder_id();
            tracing::info!(%holder, lease_secs = settings.leader_lease.as_secs_f64(), "Postgres store; maintenance runs on the replica holding the lease");
            let lease = pg.leader_lease("hodei-maintenance", holder, settings.leader_lease);
            builder = builder.leader_election(Arc::new(PgLeaderElection::new(lease)));
        }
        None => tracing::warn!(
            "embedded development mode: in-memory store (state is lost at exit); do not expose \
             these ports without API tokens"
        ),
    }
    let cp = builder.build();

    server_setup::register_enabled(&factory, &cp, &settings, process_config).await?;
    // Providers registered through the API before this start run again.
    for r in cp
        .restore_runtime_providers()
        .await
        .context("restoring providers")?
    {
        if let Some(e) = r.error {
            tracing::error!(provider = %r.name, error = %e, "provider registered at runtime not restored (stays listed as unhealthy)");
        }
    }

    let (grpc_listener, grpc_addr) =
        hodei_core::server::bind(SocketAddr::new(settings.bind, settings.grpc_port)).await?;
    let (http_listener, http_addr) =
        hodei_core::server::bind(SocketAddr::new(settings.bind, settings.http_port)).await?;
    tracing::info!(%grpc_addr, %http_addr, workers_connect_to = %settings.worker_server_address, "hodei-server listening");

    let stop = tokio_util_shutdown();
    let controller = tokio::spawn(cp.clone().run());
    let server_options = settings.grpc_options()?;
    let grpc = tokio::spawn(hodei_core::server::serve_grpc_with(
        cp.clone(),
        grpc_listener,
        server_options,
        wait(stop.clone()),
    ));
    let rest_options = settings.rest_options()?;
    let rest = tokio::spawn(hodei_core::api::rest::serve_rest_with_options(
        cp.clone(),
        http_listener,
        rest_options,
        wait(stop.clone()),
    ));

    // `--demo-exit` ends the server like a signal does: not through `stop`,
    // which closes the listeners at once, so that the agents retired below
    // can still reach the server to hand over their last acknowledgements
    // (through `stop`, one whose job had just ended waited out its flush
    // timeout and was killed).
    let demo_done = tokio_util_shutdown();
    if args.demo {
        let cp = cp.clone();
        let demo_done = demo_done.clone();
        tokio::spawn(async move {
            if let Err(e) = demo::run_demo(&cp).await {
                tracing::error!(error = %e, "demo failed");
            }
            if args.demo_exit {
                let _ = demo_done.send(true);
            }
        });
    }

    tokio::select! {
        _ = shutdown_signal() => {}
        () = wait(demo_done) => {}
    }
    tracing::info!("shutting down");
    // Destroy the workers first so no agent outlives the embedded server.
    let _ = tokio::time::timeout(
        Duration::from_secs(15),
        cp.retire_all_workers("server shutting down"),
    )
    .await;
    let _ = stop.send(true);
    cp.shutdown();
    let _ = controller.await;
    // Open client connections (CLI followers, idle channels) get a short grace.
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        let _ = grpc.await;
        let _ = rest.await;
    })
    .await;
    logging.shutdown().await;
    Ok(())
}

fn tokio_util_shutdown() -> tokio::sync::watch::Sender<bool> {
    tokio::sync::watch::channel(false).0
}

async fn wait(stop: tokio::sync::watch::Sender<bool>) {
    let mut rx = stop.subscribe();
    let _ = rx.wait_for(|v| *v).await;
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
