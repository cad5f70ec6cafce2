//! `hodei-server`: the reference control plane, assembled from the public API.
//!
//! With no configuration it runs the embedded defaults: in-memory store, the
//! local process provider (spawning `hodei-worker` found next to this
//! executable), gRPC on `GRPC_PORT` (50051) and REST on `HODEI_HTTP_PORT` (8080).
//! `--demo` also submits a few jobs and prints their logs.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Parser;
use hodei_core::control::{ControlPlane, ControlPlaneConfig, PoolPolicy, SecretSealer};
use hodei_core::{CommandType, JobSpec};
use hodei_providers::docker::DockerProviderConfig;
use hodei_providers::factory::{BundledProviderFactory, TypedConfig};
use hodei_providers::firecracker::FirecrackerProviderConfig;
use hodei_providers::kubernetes::KubernetesProviderConfig;
use hodei_providers::process::ProcessProviderConfig;
use hodei_providers::qemu::QemuProviderConfig;
use hodei_store_postgres::{PgLeaderLease, PgStoreConfig};

/// The Postgres lease as the control plane's leader election.
struct PgLeader {
    lease: PgLeaderLease,
    leading: std::sync::atomic::AtomicBool,
}

#[async_trait::async_trait]
impl hodei_core::store::LeaderElection for PgLeader {
    async fn is_leader(&self) -> bool {
        let now = match self.lease.try_acquire_or_renew().await {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(error = %e, "leader lease check failed");
                false
            }
        };
        let before = self.leading.swap(now, std::sync::atomic::Ordering::Relaxed);
        if before != now {
            tracing::info!(leading = now, "maintenance leadership changed");
        }
        now
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| "hodei".into())
}

/// Hodei control plane.
#[derive(Debug, Parser)]
#[command(name = "hodei-server", version, about)]
struct Args {
    /// Submit a few demo jobs after start and print their logs.
    #[arg(long)]
    demo: bool,
    /// Exit after the demo jobs finished (for scripts).
    #[arg(long, requires = "demo")]
    demo_exit: bool,
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> anyhow::Result<T>
where
    T::Err: std::fmt::Display,
{
    match std::env::var(name) {
        Ok(v) if !v.trim().is_empty() => v
            .trim()
            .parse()
            .map_err(|e| anyhow::anyhow!("{name}={v:?} is invalid: {e}")),
        _ => Ok(default),
    }
}

/// HODEI_RETENTION: how long finished jobs and their logs are kept, as a
/// human duration (`7d`, `12h`, `1h 30m`); unset or empty = kept forever.
fn retention(value: Option<&str>) -> anyhow::Result<Option<Duration>> {
    let Some(v) = value.map(str::trim).filter(|v| !v.is_empty()) else {
        return Ok(None);
    };
    let d = humantime::parse_duration(v).map_err(|e| {
        anyhow::anyhow!("HODEI_RETENTION={v:?} is invalid: {e} (a duration such as 7d or 12h)")
    })?;
    if d.is_zero() {
        bail!("HODEI_RETENTION={v:?} is invalid: must be longer than zero (unset it to keep jobs)");
    }
    Ok(Some(d))
}

/// The job artifact store: a directory (HODEI_ARTIFACT_DIR, default
/// `$TMPDIR/hodei-artifacts`; replicas on one database must share it) and its
/// limits (HODEI_ARTIFACT_MAX_FILE_BYTES, HODEI_ARTIFACT_MAX_JOB_BYTES,
/// HODEI_ARTIFACT_MAX_FILES: 100 MiB, 1 GiB, 1000 by default).
fn artifact_store() -> anyhow::Result<hodei_core::artifacts::FsArtifactStore> {
    use hodei_core::artifacts::{self, ArtifactLimits};
    let dir = std::env::var_os("HODEI_ARTIFACT_DIR")
        .filter(|d| !d.is_empty())
        .map_or_else(|| std::env::temp_dir().join("hodei-artifacts"), Into::into);
    let limits = ArtifactLimits::default()
        .with_max_file_bytes(env_or(
            "HODEI_ARTIFACT_MAX_FILE_BYTES",
            artifacts::DEFAULT_MAX_FILE_BYTES,
        )?)
        .with_max_job_bytes(env_or(
            "HODEI_ARTIFACT_MAX_JOB_BYTES",
            artifacts::DEFAULT_MAX_JOB_BYTES,
        )?)
        .with_max_files(env_or(
            "HODEI_ARTIFACT_MAX_FILES",
            artifacts::DEFAULT_MAX_FILES,
        )?);
    let store = hodei_core::artifacts::FsArtifactStore::new(&dir, limits)
        .with_context(|| format!("artifact directory {} (HODEI_ARTIFACT_DIR)", dir.display()))?;
    tracing::info!(dir = %dir.display(), ?limits, "job artifacts kept on disk");
    Ok(store)
}

/// Every setting, read from the environment in one place.
struct Settings {
    bind: IpAddr,
    grpc_port: u16,
    http_port: u16,
    worker_server_address: String,
    pool: PoolPolicy,
    cp: ControlPlaneConfig,
    metrics: bool,
    /// Maintenance leader lease among replicas on one database (HODEI_LEADER_LEASE_SECS, 15).
    leader_lease: Duration,
    /// Name of the local process provider (HODEI_PROCESS_PROVIDER_NAME, `process`);
    /// give each replica on one database its own, since its workers are local processes.
    process_provider_name: Option<String>,
    /// gRPC TLS (HODEI_TLS_CERT/KEY, mTLS with HODEI_TLS_CLIENT_CA, HODEI_TLS_REVOKED_SERIALS).
    tls: Option<hodei_core::tls::ServerTlsSettings>,
    /// REST TLS (HODEI_REST_TLS=1): the same certificate and key, no client certificates.
    rest_tls: Option<hodei_core::tls::ServerTlsSettings>,
    /// API tokens (HODEI_API_TOKENS, HODEI_API_TOKENS_FILE); `None` = open API.
    auth: Option<hodei_core::api::auth::ApiAuth>,
    /// Client certificate, key and CA given to locally spawned workers
    /// (HODEI_WORKER_TLS_CERT/KEY, HODEI_WORKER_TLS_CA defaulting to HODEI_TLS_CLIENT_CA).
    worker_tls: Option<[String; 3]>,
}

impl Settings {
    fn from_env() -> anyhow::Result<Self> {
        let bind: IpAddr = env_or("HODEI_BIND_ADDRESS", IpAddr::from([0, 0, 0, 0]))?;
        let grpc_port = env_or("GRPC_PORT", 50051u16)?;
        let http_port = env_or("HODEI_HTTP_PORT", 8080u16)?;
        let tls = hodei_core::tls::ServerTlsSettings::from_env().context("TLS configuration")?;
        let rest_tls = match hodei_core::tls::ServerTlsSettings::rest_tls_from_lookup(|k| {
            std::env::var(k).ok()
        })
        .context("REST TLS configuration")?
        {
            false => None,
            true => match &tls {
                Some(t) => Some(t.clone().for_rest()),
                None => bail!(
                    "HODEI_REST_TLS needs the server certificate: set HODEI_TLS_CERT and \
                         HODEI_TLS_KEY"
                ),
            },
        };
        let auth = hodei_core::api::auth::ApiAuth::from_env().context("API tokens")?;
        let worker_tls = match (
            std::env::var("HODEI_WORKER_TLS_CERT"),
            std::env::var("HODEI_WORKER_TLS_KEY"),
            std::env::var("HODEI_WORKER_TLS_CA").or_else(|_| std::env::var("HODEI_TLS_CLIENT_CA")),
        ) {
            (Ok(c), Ok(k), Ok(ca)) => Some([c, k, ca]),
            (Err(_), Err(_), _) => None,
            _ => bail!(
                "set HODEI_WORKER_TLS_CERT and HODEI_WORKER_TLS_KEY together (and \
                 HODEI_WORKER_TLS_CA or HODEI_TLS_CLIENT_CA)"
            ),
        };
        let scheme = if tls.is_some() { "https" } else { "http" };
        // One address, or several (this replica's first): agents move on when one dies.
        let worker_server_address = match std::env::var("HODEI_WORKER_SERVER_ADDRESS") {
            Ok(list) => {
                hodei_agent::config::ServerAddresses::parse("HODEI_WORKER_SERVER_ADDRESS", &list)?
                    .to_string()
            }
            Err(_) => format!("{scheme}://127.0.0.1:{grpc_port}"),
        };
        let max_jobs: u32 = env_or("HODEI_MAX_JOBS_PER_WORKER", 0u32)?;
        let pool = PoolPolicy::default()
            .min_idle(env_or("HODEI_POOL_MIN_IDLE", 0u32)?)
            .max_workers(env_or("HODEI_MAX_WORKERS", 4u32)?)
            .max_jobs_per_worker((max_jobs > 0).then_some(max_jobs))
            .idle_timeout(Duration::from_secs(env_or(
                "HODEI_IDLE_TIMEOUT_SECS",
                300u64,
            )?));
        let mut cp = ControlPlaneConfig::default();
        cp.worker_server_address = worker_server_address.clone();
        cp.heartbeat_interval =
            Duration::from_millis(env_or("HODEI_HEARTBEAT_INTERVAL_MS", 5_000u64)?);
        cp.worker_lost_after =
            Duration::from_millis(env_or("HODEI_WORKER_LOST_AFTER_MS", 15_000u64)?);
        cp.registration_timeout =
            Duration::from_secs(env_or("HODEI_REGISTRATION_TIMEOUT_SECS", 60u64)?);
        // A provisioning's queue lease: a job whose controller died is back on
        // the queue within about this long.
        cp.dispatch_lease =
            Duration::from_millis(env_or("HODEI_DISPATCH_LEASE_MS", 30_000u64)?.max(300));
        cp.audit_interval =
            Duration::from_millis(env_or("HODEI_AUDIT_INTERVAL_MS", 10_000u64)?.max(100));
        cp.retention = retention(std::env::var("HODEI_RETENTION").ok().as_deref())?;
        let metrics = std::env::var("HODEI_METRICS_BACKEND").is_ok_and(|v| v == "memory");
        let leader_lease = Duration::from_secs(env_or("HODEI_LEADER_LEASE_SECS", 15u64)?.max(1));
        let process_provider_name = std::env::var("HODEI_PROCESS_PROVIDER_NAME")
            .ok()
            .map(|n| n.trim().to_owned())
            .filter(|n| !n.is_empty());
        Ok(Self {
            bind,
            grpc_port,
            http_port,
            worker_server_address,
            pool,
            cp,
            metrics,
            leader_lease,
            process_provider_name,
            tls,
            rest_tls,
            auth,
            worker_tls,
        })
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,h2=warn,tower=warn".into()),
        )
        .with_writer(std::io::stderr)
        // Colour codes only on a terminal, not in files or log collectors.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let args = Args::parse();
    let settings = Settings::from_env()?;

    let pg = match PgStoreConfig::from_env().context("database configuration")? {
        Some(config) => Some(
            hodei_store_postgres::connect(&config)
                .await
                .context("connecting to Postgres (HODEI_DATABASE_URL)")?,
        ),
        None => None,
    };
    let sealer = match std::env::var("HODEI_SECRETS_KEY") {
        Ok(key) => SecretSealer::from_encoded(&key).context("HODEI_SECRETS_KEY")?,
        Err(_) if pg.is_some() => bail!(
            "HODEI_SECRETS_KEY is required with a database: job secrets are stored sealed with \
             it and must still open after a restart (32 bytes, hex or base64; e.g. `openssl \
             rand -hex 32`)"
        ),
        Err(_) => {
            tracing::warn!(
                "HODEI_SECRETS_KEY is not set: job secrets are sealed with a random key that \
                 lives only as long as this process"
            );
            SecretSealer::ephemeral()
        }
    };
    let stores = match &pg {
        Some(pg) => pg.stores(),
        None => hodei_core::store::Stores::in_memory(),
    };
    // One factory builds the providers configured here and those registered
    // through the API (POST /api/v1/providers, RegisterProvider).
    let process_config = factory_process_base(&settings)?;
    let factory = provider_factory(&settings, &stores, process_config.clone())?;
    // The Prometheus recorder goes in before the control plane records
    // anything (the REST router would install it too, a little later).
    if let Err(e) = hodei_core::telemetry::install() {
        tracing::warn!(error = %e, "metrics");
    }
    let mut builder = ControlPlane::builder()
        .config(settings.cp.clone())
        .metrics(settings.metrics)
        .secrets(sealer)
        .stores(stores)
        .artifacts(Arc::new(artifact_store()?))
        .provider_factory(Arc::new(factory.clone()));
    match &pg {
        Some(pg) => {
            let holder = format!("{}-{}", hostname(), uuid::Uuid::new_v4());
            tracing::info!(%holder, lease_secs = settings.leader_lease.as_secs_f64(), "Postgres store; maintenance runs on the replica holding the lease");
            builder = builder.leader_election(Arc::new(PgLeader {
                lease: pg.leader_lease("hodei-maintenance", holder, settings.leader_lease),
                leading: std::sync::atomic::AtomicBool::new(false),
            }));
        }
        None => tracing::warn!(
            "embedded development mode: in-memory store (state is lost at exit); do not expose \
             these ports without API tokens"
        ),
    }
    let cp = builder.build();

    factory
        .register(&cp, TypedConfig::Process(process_config))
        .await
        .context("registering the process provider")?;
    if enabled("HODEI_DOCKER_ENABLED") {
        let config = DockerProviderConfig::from_env().context("Docker provider configuration")?;
        let (bind, address) = (settings.bind, &settings.worker_server_address);
        factory
            .register(&cp, TypedConfig::Docker(config))
            .await
            .with_context(|| {
                format!(
                    "Docker provider (HODEI_BIND_ADDRESS={bind}, worker server address {address})"
                )
            })?;
    }
    if enabled("HODEI_K8S_ENABLED") {
        let config =
            KubernetesProviderConfig::from_env().context("Kubernetes provider configuration")?;
        factory
            .register(&cp, TypedConfig::Kubernetes(Box::new(config)))
            .await
            .context("registering the Kubernetes provider")?;
    }
    if enabled("HODEI_QEMU_ENABLED") {
        let config = QemuProviderConfig::from_env().context("QEMU provider configuration")?;
        factory
            .register(&cp, TypedConfig::Qemu(config))
            .await
            .context("registering the QEMU provider")?;
    }
    if enabled("HODEI_FC_ENABLED") {
        let config =
            FirecrackerProviderConfig::from_env().context("Firecracker provider configuration")?;
        factory
            .register(&cp, TypedConfig::Firecracker(config))
            .await
            .context("registering the Firecracker provider")?;
    }
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
    let mut server_options = hodei_core::server::ServerOptions::new();
    if let Some(tls) = settings.tls.clone() {
        server_options = server_options
            .with_tls(hodei_core::tls::ServerTls::load(tls).context("loading TLS certificates")?);
    }
    match &settings.auth {
        Some(auth) => {
            tracing::info!(
                tokens = auth.tokens().len(),
                file = ?auth.file(),
                "API tokens required on gRPC and REST"
            );
            server_options = server_options.with_auth(auth.clone());
        }
        None => tracing::warn!(
            "NO API AUTHENTICATION: HODEI_API_TOKENS/HODEI_API_TOKENS_FILE are not set, so anyone \
             who reaches these ports can submit jobs and manage providers (create tokens with \
             `hodei token create`)"
        ),
    }
    let grpc = tokio::spawn(hodei_core::server::serve_grpc_with(
        cp.clone(),
        grpc_listener,
        server_options,
        wait(stop.clone()),
    ));
    let mut rest_options = hodei_core::server::ServerOptions::new();
    if let Some(auth) = settings.auth.clone() {
        rest_options = rest_options.with_auth(auth);
    }
    match settings.rest_tls.clone() {
        Some(tls) => {
            rest_options = rest_options.with_tls(
                hodei_core::tls::ServerTls::load(tls)
                    .context("loading the REST TLS certificate")?,
            );
        }
        None if settings.tls.is_some() => tracing::warn!(
            "the REST API is plain HTTP while gRPC uses TLS: set HODEI_REST_TLS=1 to serve it \
             over HTTPS with the same certificate"
        ),
        None => {}
    }
    let rest = tokio::spawn(hodei_core::api::rest::serve_rest_with_options(
        cp.clone(),
        http_listener,
        rest_options,
        wait(stop.clone()),
    ));

    if args.demo {
        let cp = cp.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            if let Err(e) = run_demo(&cp).await {
                tracing::error!(error = %e, "demo failed");
            }
            if args.demo_exit {
                let _ = stop.send(true);
            }
        });
    }

    let mut stop_rx = stop.subscribe();
    tokio::select! {
        _ = shutdown_signal() => {}
        _ = stop_rx.changed() => {}
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

fn enabled(var: &str) -> bool {
    matches!(std::env::var(var).as_deref(), Ok("1" | "true" | "yes"))
}

/// The local process provider's configuration: the environment, the
/// replica's provider name and the client certificate of local workers.
fn factory_process_base(settings: &Settings) -> anyhow::Result<ProcessProviderConfig> {
    let c = ProcessProviderConfig::from_env()
        .context("process provider configuration")?
        .with_max_workers(settings.pool.max_workers);
    let c = match &settings.process_provider_name {
        Some(name) => c.with_name(name.clone()),
        None => c,
    };
    // Local workers get their own client certificate (they inherit the
    // server's environment, whose HODEI_TLS_CERT/KEY are the server's).
    Ok(match &settings.worker_tls {
        Some([cert, key, ca]) => c
            .with_env("HODEI_TLS_CERT", cert.clone())
            .with_env("HODEI_TLS_KEY", key.clone())
            .with_env("HODEI_TLS_CA", ca.clone()),
        None if settings
            .tls
            .as_ref()
            .is_some_and(|t| t.client_ca_path.is_some()) =>
        {
            tracing::warn!(
                "mTLS is on but HODEI_WORKER_TLS_CERT/KEY are not set: locally spawned \
                 workers cannot connect"
            );
            c
        }
        None => c,
    })
}

/// The provider factory, its bases read from the environment: a provider
/// registered at runtime gets the same settings as one enabled here.
fn provider_factory(
    settings: &Settings,
    stores: &hodei_core::store::Stores,
    process: ProcessProviderConfig,
) -> anyhow::Result<BundledProviderFactory> {
    // A kind not enabled here may still be registered at runtime: its
    // environment is then read if valid, the defaults used otherwise.
    fn base<T: Default>(
        enabled: bool,
        r: Result<T, hodei_core::ProviderError>,
        what: &str,
    ) -> anyhow::Result<T> {
        match r {
            Ok(c) => Ok(c),
            Err(e) if enabled => Err(anyhow::anyhow!("{what} configuration: {e}")),
            Err(e) => {
                tracing::warn!(error = %e, "{what} configuration ignored; runtime {what}s use the defaults");
                Ok(T::default())
            }
        }
    }
    Ok(
        BundledProviderFactory::new(settings.pool.clone(), stores.workers.clone())
            .server_address(settings.bind, settings.worker_server_address.clone())
            .process_base(process)
            .docker_base(base(
                enabled("HODEI_DOCKER_ENABLED"),
                DockerProviderConfig::from_env(),
                "Docker provider",
            )?)
            .kubernetes_base(base(
                enabled("HODEI_K8S_ENABLED"),
                KubernetesProviderConfig::from_env(),
                "Kubernetes provider",
            )?)
            .qemu_base(base(
                enabled("HODEI_QEMU_ENABLED"),
                QemuProviderConfig::from_env(),
                "QEMU provider",
            )?)
            .firecracker_base(base(
                enabled("HODEI_FC_ENABLED"),
                FirecrackerProviderConfig::from_env(),
                "Firecracker provider",
            )?),
    )
}

/// Submits a few jobs, prints their logs and results.
async fn run_demo(cp: &ControlPlane) -> anyhow::Result<()> {
    let jobs = [
        JobSpec::new(
            "hello",
            CommandType::shell("echo", ["Hello from a Hodei worker"]),
        ),
        JobSpec::new(
            "script",
            CommandType::script(
                "bash",
                "echo \"running on $(hostname) as job $HODEI_JOB_ID\"\nfor i in 1 2 3; do echo \"step $i\"; sleep 0.2; done\necho done",
            ),
        ),
        JobSpec::new(
            "secret",
            CommandType::script(
                "bash",
                "secrets=$(cat); echo \"secrets on stdin (redacted in logs): $secrets\"",
            ),
        )
        .with_secret("API_TOKEN", "demo-s3cr3t-token"),
        JobSpec::new(
            "failing",
            CommandType::script("bash", "echo about to fail >&2; exit 3"),
        )
        .with_max_attempts(1),
    ];
    let mut events = cp.subscribe_job_events();
    let mut ids = Vec::new();
    for spec in jobs {
        let job = cp.create_job(spec, None).await?;
        println!("[demo] queued job {} ({})", job.id(), job.spec().name);
        ids.push(job.id());
    }
    let mut remaining: std::collections::HashSet<_> = ids.iter().copied().collect();
    while !remaining.is_empty() {
        match tokio::time::timeout(Duration::from_secs(60), events.recv()).await {
            Ok(Ok(ev)) if ev.to.is_terminal() && remaining.remove(&ev.job_id) => {}
            Ok(Ok(_)) | Ok(Err(tokio::sync::broadcast::error::RecvError::Lagged(_))) => {}
            Ok(Err(_)) => break,
            Err(_) => bail!("demo jobs did not finish within 60 s"),
        }
    }
    for id in ids {
        let job = cp.get_job(id).await?;
        println!(
            "[demo] job {} '{}' → {} (exit code {:?})",
            id,
            job.spec().name,
            job.state(),
            job.execution_context().exit_code
        );
        let entries = cp
            .logs()
            .read(id, hodei_core::store::LogCursor::default(), 10_000)
            .await?;
        for e in entries {
            // An entry holds one or more lines.
            for line in String::from_utf8_lossy(&e.entry.data).split('\n') {
                println!("    | {line}");
            }
        }
    }
    println!(
        "[demo] done. Try: hodei job run -- echo hi   (the server keeps running; Ctrl-C stops it)"
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retention_is_a_human_duration_and_a_bad_one_names_the_variable() {
        assert_eq!(retention(None).unwrap(), None);
        assert_eq!(retention(Some(" ")).unwrap(), None);
        assert_eq!(
            retention(Some("7d")).unwrap(),
            Some(Duration::from_secs(7 * 24 * 3600))
        );
        assert_eq!(
            retention(Some("12h 30m")).unwrap(),
            Some(Duration::from_secs(12 * 3600 + 1800))
        );
        for bad in ["seven days", "7", "0s", "-1d"] {
            let e = retention(Some(bad)).unwrap_err().to_string();
            assert!(e.contains("HODEI_RETENTION"), "{bad}: {e}");
        }
    }
}
