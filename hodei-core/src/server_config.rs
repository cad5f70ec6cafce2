//! The settings of a control-plane server (the reference `hodei-server`),
//! read from `HODEI_*` environment variables in one place.
//!
//! [`ServerConfig::from_env`] reads every variable below; a value that does
//! not parse is an error naming the variable (`GRPC_PORT="x" is invalid: …`).
//! Unset or blank numeric variables take their default.
//!
//! | variable | meaning | default |
//! |---|---|---|
//! | `HODEI_BIND_ADDRESS` | address the gRPC and REST listeners bind | `0.0.0.0` |
//! | `GRPC_PORT`, `HODEI_HTTP_PORT` | gRPC and REST ports | 50051, 8080 |
//! | `HODEI_WORKER_SERVER_ADDRESS` | gRPC URL(s) given to workers, comma-separated | `http(s)://127.0.0.1:$GRPC_PORT` |
//! | `HODEI_POOL_MIN_IDLE`, `HODEI_MAX_WORKERS` | warm idle workers, most workers per provider | 0, 4 |
//! | `HODEI_MAX_JOBS_PER_WORKER` | jobs over a worker's life (0 = reused forever) | 0 |
//! | `HODEI_IDLE_TIMEOUT_SECS` | idle workers above the minimum are destroyed after | 300 |
//! | `HODEI_HEARTBEAT_INTERVAL_MS`, `HODEI_WORKER_LOST_AFTER_MS` | worker heartbeats, and when a silent worker is lost | 5000, 15000 |
//! | `HODEI_REGISTRATION_TIMEOUT_SECS` | a provisioned worker must register within | 60 |
//! | `HODEI_DISPATCH_LEASE_MS` | queue lease of a provisioning (at least 300) | 30000 |
//! | `HODEI_AUDIT_INTERVAL_MS` | worker audit period (at least 100) | 10000 |
//! | `HODEI_DISPATCH_PARALLELISM` | jobs a scheduling pass places side by side (1 to 1024) | 16 |
//! | `HODEI_RETENTION` | how long finished jobs and their logs are kept (`7d`, `12h`) | forever |
//! | `HODEI_METRICS_BACKEND` | `memory` records control-plane metrics | off |
//! | `HODEI_LEADER_LEASE_SECS` | maintenance leader lease among replicas (at least 1) | 15 |
//! | `HODEI_PROCESS_PROVIDER_NAME` | name of the local process provider | `process` |
//! | `HODEI_TLS_*`, `HODEI_REST_TLS` | gRPC (m)TLS, REST over HTTPS ([`ServerTlsSettings`]) | plain |
//! | `HODEI_API_TOKENS`, `HODEI_API_TOKENS_FILE` | API tokens ([`ApiAuth`]) | open API |
//! | `HODEI_WORKER_TLS_CERT`, `_KEY`, `_CA` | client certificate of locally spawned workers | none |
//! | `HODEI_ARTIFACT_DIR` | job artifact directory (replicas on one database share it) | `$TMPDIR/hodei-artifacts` |
//! | `HODEI_ARTIFACT_MAX_FILE_BYTES`, `_MAX_JOB_BYTES`, `_MAX_FILES` | artifact limits | 100 MiB, 1 GiB, 1000 |
//! | `HODEI_SECRETS_KEY` | key sealing job secrets (32 bytes, hex or base64; required with a database) | random per process |
//! | `OTEL_EXPORTER_OTLP_ENDPOINT` | OTLP/gRPC collector (`http://host:4317`) the job traces go to; needs a build with the `otel` feature, else refused at start ([`crate::traces`]) | off |
//! | `OTEL_SERVICE_NAME` | the server's name in the trace backend | `hodei-server` |
//! | `HODEI_DOCKER_ENABLED`, `HODEI_K8S_ENABLED`, `HODEI_QEMU_ENABLED`, `HODEI_FC_ENABLED` | providers started with the server (yes/no: `1`/`true`/`yes`/`on` or `0`/`false`/`no`/`off`; anything else is refused) | off |

use std::net::IpAddr;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use crate::api::auth::{ApiAuth, AuthConfigError};
use crate::artifacts::{self, ArtifactLimits, FsArtifactStore};
use crate::control::{ControlPlaneConfig, PoolPolicy, SecretSealer, SecretsError};
use crate::server::ServerOptions;
use crate::settings::Setting;
use crate::tls::{ServerTls, ServerTlsError, ServerTlsSettings};

/// Every variable [`ServerConfig::from_env`] reads (printed by `hodei-server --help`).
pub const SETTINGS: &[Setting] = &[
    Setting::new(
        "GRPC_PORT",
        "50051",
        "gRPC port (client APIs and the worker stream)",
    ),
    Setting::new(
        "HODEI_HTTP_PORT",
        "8080",
        "REST port (API, dashboard, /metrics, probes)",
    ),
    Setting::new(
        "HODEI_BIND_ADDRESS",
        "0.0.0.0",
        "address the gRPC and REST listeners bind",
    ),
    Setting::new(
        ENV_WORKER_SERVER_ADDRESS,
        "http(s)://127.0.0.1:$GRPC_PORT",
        "gRPC URL(s) given to workers, comma-separated, this replica's first",
    ),
    Setting::new(
        "HODEI_POOL_MIN_IDLE",
        "0",
        "warm idle workers kept per provider",
    ),
    Setting::new("HODEI_MAX_WORKERS", "4", "most workers per provider"),
    Setting::new(
        "HODEI_MAX_JOBS_PER_WORKER",
        "0 (reused forever)",
        "jobs over a worker's life (1 = ephemeral workers)",
    ),
    Setting::new(
        "HODEI_IDLE_TIMEOUT_SECS",
        "300",
        "idle workers above the minimum are destroyed after this",
    ),
    Setting::new(
        "HODEI_HEARTBEAT_INTERVAL_MS",
        "5000",
        "how often agents send heartbeats",
    ),
    Setting::new(
        "HODEI_WORKER_LOST_AFTER_MS",
        "15000",
        "a worker silent this long is lost (its jobs retried)",
    ),
    Setting::new(
        "HODEI_REGISTRATION_TIMEOUT_SECS",
        "60",
        "a provisioned worker must register within this",
    ),
    Setting::new(
        "HODEI_DISPATCH_LEASE_MS",
        "30000",
        "queue lease of a provisioning (at least 300); a dead server's job is back on the queue after it",
    ),
    Setting::new(
        "HODEI_AUDIT_INTERVAL_MS",
        "10000",
        "how often the leader audits the store for half-done records (at least 100)",
    ),
    Setting::new(
        "HODEI_DISPATCH_PARALLELISM",
        "16",
        "jobs one scheduling pass places side by side (1 to 1024; 1 = one at a time)",
    ),
    Setting::new(
        ENV_RETENTION,
        "kept forever",
        "finished jobs and their logs are deleted once older than this (`7d`, `12h`)",
    ),
    Setting::new(
        "HODEI_METRICS_BACKEND",
        "off",
        "`memory` serves MetricsService from recent worker samples",
    ),
    Setting::new(
        "HODEI_LEADER_LEASE_SECS",
        "15",
        "maintenance leader lease among replicas (at least 1)",
    ),
    Setting::new(
        "HODEI_PROCESS_PROVIDER_NAME",
        "process",
        "name of the local process provider",
    ),
    Setting::new(
        "HODEI_DOCKER_ENABLED",
        "off",
        "start the Docker provider (yes/no)",
    ),
    Setting::new(
        "HODEI_K8S_ENABLED",
        "off",
        "start the Kubernetes provider (yes/no)",
    ),
    Setting::new(
        "HODEI_QEMU_ENABLED",
        "off",
        "start the QEMU microVM provider (yes/no)",
    ),
    Setting::new(
        "HODEI_FC_ENABLED",
        "off",
        "start the Firecracker provider (yes/no)",
    ),
    Setting::new(
        crate::tls::ENV_TLS_CERT,
        "plain gRPC",
        "server certificate (PEM, leaf first)",
    ),
    Setting::new(
        crate::tls::ENV_TLS_KEY,
        "plain gRPC",
        "server private key (PEM)",
    ),
    Setting::new(
        crate::tls::ENV_TLS_CLIENT_CA,
        "no client certificates",
        "CA bundle of client certificates; set = mTLS required",
    ),
    Setting::new(
        crate::tls::ENV_TLS_REVOKED_SERIALS,
        "none",
        "revoked client certificate serials, comma-separated hex",
    ),
    Setting::new(
        crate::tls::ENV_TLS_REVOKED_SERIALS_FILE,
        "none",
        "file of revoked serials, re-read when it changes",
    ),
    Setting::new(
        crate::tls::ENV_TLS_RELOAD_INTERVAL_SECS,
        "30",
        "seconds between checks of the TLS files for changes",
    ),
    Setting::new(
        crate::tls::ENV_REST_TLS,
        "off",
        "REST over HTTPS with the server certificate (yes/no)",
    ),
    Setting::new(
        crate::api::auth::ENV_API_TOKENS,
        "open API",
        "API token lines `name:scope:sha256hex`, comma or newline separated",
    ),
    Setting::new(
        crate::api::auth::ENV_API_TOKENS_FILE,
        "open API",
        "file of API token lines, re-read when it changes",
    ),
    Setting::new(
        crate::api::auth::ENV_API_TOKENS_RELOAD_INTERVAL_SECS,
        "10",
        "seconds between checks of the tokens file",
    ),
    Setting::new(
        "HODEI_WORKER_TLS_CERT",
        "none",
        "client certificate given to locally spawned workers",
    ),
    Setting::new("HODEI_WORKER_TLS_KEY", "none", "its key"),
    Setting::new(
        "HODEI_WORKER_TLS_CA",
        "none",
        "CA the locally spawned workers check the server against",
    ),
    Setting::new(
        ENV_ARTIFACT_DIR,
        "$TMPDIR/hodei-artifacts",
        "job artifact directory (replicas on one database share it)",
    ),
    Setting::new(
        "HODEI_ARTIFACT_MAX_FILE_BYTES",
        "100 MiB",
        "largest artifact file",
    ),
    Setting::new(
        "HODEI_ARTIFACT_MAX_JOB_BYTES",
        "1 GiB",
        "most artifact bytes per job",
    ),
    Setting::new(
        "HODEI_ARTIFACT_MAX_FILES",
        "1000",
        "most artifact files per job",
    ),
    Setting::new(
        ENV_SECRETS_KEY,
        "random per process",
        "32-byte key (hex or base64) sealing job secrets; required with a database",
    ),
    Setting::new(
        ENV_OTLP_ENDPOINT,
        "off",
        "OTLP/gRPC collector of the job traces (needs the `otel` feature)",
    ),
    Setting::new(
        ENV_OTEL_SERVICE_NAME,
        "hodei-server",
        "the server's name in the trace backend",
    ),
];

/// Variable holding the gRPC URL(s) workers are given.
pub const ENV_WORKER_SERVER_ADDRESS: &str = "HODEI_WORKER_SERVER_ADDRESS";
/// Variable holding how long finished jobs are kept.
pub const ENV_RETENTION: &str = "HODEI_RETENTION";
/// Variable holding the artifact directory.
pub const ENV_ARTIFACT_DIR: &str = "HODEI_ARTIFACT_DIR";
/// Variable holding the key that seals job secrets.
pub const ENV_SECRETS_KEY: &str = "HODEI_SECRETS_KEY";

/// Variable holding the OTLP collector endpoint of the job traces.
pub const ENV_OTLP_ENDPOINT: &str = "OTEL_EXPORTER_OTLP_ENDPOINT";
/// Variable holding the service name the traces are exported under.
pub const ENV_OTEL_SERVICE_NAME: &str = "OTEL_SERVICE_NAME";

/// A server setting that cannot be used; its text names the variable.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServerConfigError {
    /// A variable's value does not parse or is out of range.
    #[error("{variable}={value:?} is invalid: {message}")]
    Invalid {
        /// The variable.
        variable: String,
        /// Its value.
        value: String,
        /// What is wrong.
        message: String,
    },
    /// The gRPC TLS variables are inconsistent.
    #[error("TLS configuration")]
    Tls(#[source] ServerTlsError),
    /// `HODEI_REST_TLS` is not a yes/no.
    #[error("REST TLS configuration")]
    RestTls(#[source] ServerTlsError),
    /// `HODEI_REST_TLS` is on without a server certificate.
    #[error("HODEI_REST_TLS needs the server certificate: set HODEI_TLS_CERT and HODEI_TLS_KEY")]
    RestTlsWithoutCertificate,
    /// The API token variables are wrong.
    #[error("API tokens")]
    Auth(#[source] AuthConfigError),
    /// Only part of the worker client certificate is given.
    #[error(
        "set HODEI_WORKER_TLS_CERT and HODEI_WORKER_TLS_KEY together (and HODEI_WORKER_TLS_CA \
         or HODEI_TLS_CLIENT_CA)"
    )]
    WorkerTlsIncomplete,
    /// `HODEI_WORKER_SERVER_ADDRESS` is not a list of gRPC URLs.
    #[error("invalid {variable}: {message}")]
    WorkerServerAddress {
        /// The variable.
        variable: String,
        /// What is wrong.
        message: String,
    },
    /// A TLS certificate or key cannot be loaded.
    #[error("{what}")]
    TlsLoad {
        /// Which listener's certificate.
        what: &'static str,
        /// Why.
        #[source]
        source: ServerTlsError,
    },
    /// `HODEI_SECRETS_KEY` is not a 32-byte key.
    #[error("HODEI_SECRETS_KEY")]
    SecretsKey(#[source] SecretsError),
    /// `HODEI_SECRETS_KEY` is unset while secrets are stored durably.
    #[error(
        "HODEI_SECRETS_KEY is required with a database: job secrets are stored sealed with it \
         and must still open after a restart (32 bytes, hex or base64; e.g. `openssl rand -hex \
         32`)"
    )]
    SecretsKeyRequired,
    /// The artifact directory cannot be created or used.
    #[error("artifact directory {} (HODEI_ARTIFACT_DIR)", dir.display())]
    ArtifactDir {
        /// The directory.
        dir: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
}

/// Client certificate, key and CA given to locally spawned workers
/// (`HODEI_WORKER_TLS_CERT`, `HODEI_WORKER_TLS_KEY`, `HODEI_WORKER_TLS_CA`
/// defaulting to `HODEI_TLS_CLIENT_CA`), as paths.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct WorkerTls {
    /// Certificate (PEM).
    pub cert: String,
    /// Private key (PEM).
    pub key: String,
    /// CA bundle that signed the server certificate.
    pub ca: String,
}

/// Which bundled providers start with the server
/// (`HODEI_DOCKER_ENABLED`, `HODEI_K8S_ENABLED`, `HODEI_QEMU_ENABLED`, `HODEI_FC_ENABLED`).
/// The local process provider always does.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct EnabledProviders {
    /// Docker.
    pub docker: bool,
    /// Kubernetes.
    pub kubernetes: bool,
    /// QEMU microvm.
    pub qemu: bool,
    /// Firecracker.
    pub firecracker: bool,
}

/// The job artifact store's directory and limits.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ArtifactSettings {
    /// `HODEI_ARTIFACT_DIR`, default `$TMPDIR/hodei-artifacts`.
    pub dir: PathBuf,
    /// `HODEI_ARTIFACT_MAX_FILE_BYTES`, `HODEI_ARTIFACT_MAX_JOB_BYTES`,
    /// `HODEI_ARTIFACT_MAX_FILES` (100 MiB, 1 GiB, 1000 by default).
    pub limits: ArtifactLimits,
}

impl ArtifactSettings {
    /// Opens the store, creating the directory if needed.
    ///
    /// # Errors
    /// [`ServerConfigError::ArtifactDir`] when the directory cannot be created.
    pub fn open(&self) -> Result<FsArtifactStore, ServerConfigError> {
        let store = FsArtifactStore::new(&self.dir, self.limits).map_err(|source| {
            ServerConfigError::ArtifactDir {
                dir: self.dir.clone(),
                source,
            }
        })?;
        tracing::info!(dir = %self.dir.display(), limits = ?self.limits, "job artifacts kept on disk");
        Ok(store)
    }
}

/// Every setting of the server (see the [module](self) for the variables).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ServerConfig {
    /// Address the listeners bind.
    pub bind: IpAddr,
    /// gRPC port.
    pub grpc_port: u16,
    /// REST port.
    pub http_port: u16,
    /// gRPC URL(s) workers dial, comma-separated (this replica's first).
    pub worker_server_address: String,
    /// Pool policy of every provider.
    pub pool: PoolPolicy,
    /// The control plane's timings and retention (its `worker_server_address` set too).
    pub control_plane: ControlPlaneConfig,
    /// Record control-plane metrics in memory.
    pub metrics: bool,
    /// Maintenance leader lease among replicas on one database.
    pub leader_lease: Duration,
    /// Name of the local process provider; give each replica on one database
    /// its own, since its workers are local processes.
    pub process_provider_name: Option<String>,
    /// gRPC TLS.
    pub tls: Option<ServerTlsSettings>,
    /// REST TLS (`HODEI_REST_TLS=1`): the same certificate and key, no client certificates.
    pub rest_tls: Option<ServerTlsSettings>,
    /// API tokens; `None` = open API.
    pub auth: Option<ApiAuth>,
    /// Client certificate of locally spawned workers.
    pub worker_tls: Option<WorkerTls>,
    /// The job artifact store.
    pub artifacts: ArtifactSettings,
    /// Providers started with the server.
    pub providers: EnabledProviders,
    /// Where the job traces are exported (OTLP/gRPC), if anywhere.
    pub traces: Option<TraceExport>,
}

/// Where and as whom the job traces are exported (`OTEL_EXPORTER_OTLP_ENDPOINT`,
/// `OTEL_SERVICE_NAME`); acted on by a build with hodei-core's `otel` feature
/// (`hodei_core::traces::otel::install_otlp`).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct TraceExport {
    /// OTLP/gRPC collector endpoint (`http://host:4317`).
    pub endpoint: String,
    /// Service name of the spans.
    pub service_name: String,
}

/// `OTEL_EXPORTER_OTLP_ENDPOINT` and `OTEL_SERVICE_NAME`: `None` when the
/// endpoint is unset or blank.
///
/// # Errors
/// [`ServerConfigError::Invalid`] for an endpoint that is not an `http://` or
/// `https://` URL.
pub fn trace_export(
    lookup: impl Fn(&str) -> Option<String>,
    default_service_name: &str,
) -> Result<Option<TraceExport>, ServerConfigError> {
    let Some(endpoint) = lookup(ENV_OTLP_ENDPOINT)
        .map(|e| e.trim().to_owned())
        .filter(|e| !e.is_empty())
    else {
        return Ok(None);
    };
    if !(endpoint.starts_with("http://") || endpoint.starts_with("https://")) {
        return Err(ServerConfigError::Invalid {
            variable: ENV_OTLP_ENDPOINT.to_owned(),
            message: "must be an http:// or https:// URL (the OTLP/gRPC port, usually 4317)"
                .to_owned(),
            value: endpoint,
        });
    }
    let service_name = lookup(ENV_OTEL_SERVICE_NAME)
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| default_service_name.to_owned());
    Ok(Some(TraceExport {
        endpoint,
        service_name,
    }))
}

impl ServerConfig {
    /// Reads the process environment.
    ///
    /// # Errors
    /// The first setting that cannot be used, naming its variable.
    pub fn from_env() -> Result<Self, ServerConfigError> {
        let mut config = Self::from_lookup(|k| std::env::var(k).ok())?;
        // A directory need not be UTF-8.
        if let Some(dir) = std::env::var_os(ENV_ARTIFACT_DIR).filter(|d| !d.is_empty()) {
            config.artifacts.dir = dir.into();
        }
        Ok(config)
    }

    /// Like [`from_env`](Self::from_env), reading variables through `lookup`.
    ///
    /// # Errors
    /// As [`from_env`](Self::from_env).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ServerConfigError> {
        let get = |name: &str| lookup(name);
        let bind: IpAddr = parse_or(get, "HODEI_BIND_ADDRESS", IpAddr::from([0, 0, 0, 0]))?;
        let grpc_port = parse_or(get, "GRPC_PORT", 50051u16)?;
        let http_port = parse_or(get, "HODEI_HTTP_PORT", 8080u16)?;
        let tls = ServerTlsSettings::from_lookup(get).map_err(ServerConfigError::Tls)?;
        let rest_tls = match ServerTlsSettings::rest_tls_from_lookup(get)
            .map_err(ServerConfigError::RestTls)?
        {
            false => None,
            true => match &tls {
                Some(t) => Some(t.clone().for_rest()),
                None => return Err(ServerConfigError::RestTlsWithoutCertificate),
            },
        };
        let auth = ApiAuth::from_lookup(get).map_err(ServerConfigError::Auth)?;
        let worker_tls = match (
            get("HODEI_WORKER_TLS_CERT"),
            get("HODEI_WORKER_TLS_KEY"),
            get("HODEI_WORKER_TLS_CA").or_else(|| get("HODEI_TLS_CLIENT_CA")),
        ) {
            (Some(cert), Some(key), Some(ca)) => Some(WorkerTls { cert, key, ca }),
            (None, None, _) => None,
            _ => return Err(ServerConfigError::WorkerTlsIncomplete),
        };
        let scheme = if tls.is_some() { "https" } else { "http" };
        // One address, or several (this replica's first): agents move on when one dies.
        let worker_server_address = match get(ENV_WORKER_SERVER_ADDRESS) {
            Some(list) => server_addresses(ENV_WORKER_SERVER_ADDRESS, &list)?,
            None => format!("{scheme}://127.0.0.1:{grpc_port}"),
        };
        let max_jobs: u32 = parse_or(get, "HODEI_MAX_JOBS_PER_WORKER", 0u32)?;
        let pool = PoolPolicy::default()
            .min_idle(parse_or(get, "HODEI_POOL_MIN_IDLE", 0u32)?)
            .max_workers(parse_or(get, "HODEI_MAX_WORKERS", 4u32)?)
            .max_jobs_per_worker((max_jobs > 0).then_some(max_jobs))
            .idle_timeout(Duration::from_secs(parse_or(
                get,
                "HODEI_IDLE_TIMEOUT_SECS",
                300u64,
            )?));
        let cp = ControlPlaneConfig {
            worker_server_address: worker_server_address.clone(),
            heartbeat_interval: Duration::from_millis(parse_or(
                get,
                "HODEI_HEARTBEAT_INTERVAL_MS",
                5_000u64,
            )?),
            worker_lost_after: Duration::from_millis(parse_or(
                get,
                "HODEI_WORKER_LOST_AFTER_MS",
                15_000u64,
            )?),
            registration_timeout: Duration::from_secs(parse_or(
                get,
                "HODEI_REGISTRATION_TIMEOUT_SECS",
                60u64,
            )?),
            // A provisioning's queue lease: a job whose controller died is
            // back on the queue within about this long.
            dispatch_lease: Duration::from_millis(
                parse_or(get, "HODEI_DISPATCH_LEASE_MS", 30_000u64)?.max(300),
            ),
            audit_interval: Duration::from_millis(
                parse_or(get, "HODEI_AUDIT_INTERVAL_MS", 10_000u64)?.max(100),
            ),
            dispatch_parallelism: parse_or(get, "HODEI_DISPATCH_PARALLELISM", 16usize)?
                .clamp(1, 1024),
            retention: retention(get(ENV_RETENTION).as_deref())?,
            ..ControlPlaneConfig::default()
        };
        let metrics = get("HODEI_METRICS_BACKEND").is_some_and(|v| v == "memory");
        let leader_lease =
            Duration::from_secs(parse_or(get, "HODEI_LEADER_LEASE_SECS", 15u64)?.max(1));
        let process_provider_name = get("HODEI_PROCESS_PROVIDER_NAME")
            .map(|n| n.trim().to_owned())
            .filter(|n| !n.is_empty());
        let artifacts = ArtifactSettings {
            dir: get(ENV_ARTIFACT_DIR)
                .filter(|d| !d.is_empty())
                .map_or_else(|| std::env::temp_dir().join("hodei-artifacts"), Into::into),
            limits: ArtifactLimits::default()
                .with_max_file_bytes(parse_or(
                    get,
                    "HODEI_ARTIFACT_MAX_FILE_BYTES",
                    artifacts::DEFAULT_MAX_FILE_BYTES,
                )?)
                .with_max_job_bytes(parse_or(
                    get,
                    "HODEI_ARTIFACT_MAX_JOB_BYTES",
                    artifacts::DEFAULT_MAX_JOB_BYTES,
                )?)
                .with_max_files(parse_or(
                    get,
                    "HODEI_ARTIFACT_MAX_FILES",
                    artifacts::DEFAULT_MAX_FILES,
                )?),
        };
        let providers = EnabledProviders {
            docker: switch_or(get, "HODEI_DOCKER_ENABLED", false)?,
            kubernetes: switch_or(get, "HODEI_K8S_ENABLED", false)?,
            qemu: switch_or(get, "HODEI_QEMU_ENABLED", false)?,
            firecracker: switch_or(get, "HODEI_FC_ENABLED", false)?,
        };
        let traces = trace_export(get, "hodei-server")?;
        Ok(Self {
            bind,
            grpc_port,
            http_port,
            worker_server_address,
            pool,
            control_plane: cp,
            metrics,
            leader_lease,
            process_provider_name,
            tls,
            rest_tls,
            auth,
            worker_tls,
            artifacts,
            providers,
            traces,
        })
    }
}

impl ServerConfig {
    /// The gRPC listener's options: TLS (its certificates loaded now) and
    /// API tokens. Logs whether tokens are required, with a warning when not.
    ///
    /// # Errors
    /// [`ServerConfigError::TlsLoad`] when the certificate or key cannot be loaded.
    pub fn grpc_options(&self) -> Result<ServerOptions, ServerConfigError> {
        let mut options = ServerOptions::new();
        if let Some(tls) = self.tls.clone() {
            options = options.with_tls(load_tls(tls, "loading TLS certificates")?);
        }
        match &self.auth {
            Some(auth) => {
                tracing::info!(
                    tokens = auth.tokens().len(),
                    file = ?auth.file(),
                    "API tokens required on gRPC and REST"
                );
                options = options.with_auth(auth.clone());
            }
            None => tracing::warn!(
                "NO API AUTHENTICATION: HODEI_API_TOKENS/HODEI_API_TOKENS_FILE are not set, so \
                 anyone who reaches these ports can submit jobs and manage providers (create \
                 tokens with `hodei token create`)"
            ),
        }
        Ok(options)
    }

    /// The REST listener's options: the API tokens, and TLS when
    /// `HODEI_REST_TLS` is on (a warning when gRPC has TLS and REST not).
    ///
    /// # Errors
    /// [`ServerConfigError::TlsLoad`] when the certificate or key cannot be loaded.
    pub fn rest_options(&self) -> Result<ServerOptions, ServerConfigError> {
        let mut options = ServerOptions::new();
        if let Some(auth) = self.auth.clone() {
            options = options.with_auth(auth);
        }
        match self.rest_tls.clone() {
            Some(tls) => {
                options = options.with_tls(load_tls(tls, "loading the REST TLS certificate")?);
            }
            None if self.tls.is_some() => tracing::warn!(
                "the REST API is plain HTTP while gRPC uses TLS: set HODEI_REST_TLS=1 to serve it \
                 over HTTPS with the same certificate"
            ),
            None => {}
        }
        Ok(options)
    }
}

fn load_tls(tls: ServerTlsSettings, what: &'static str) -> Result<ServerTls, ServerConfigError> {
    ServerTls::load(tls).map_err(|source| ServerConfigError::TlsLoad { what, source })
}

/// The sealer of job secrets: from `key` (`HODEI_SECRETS_KEY`), or a random
/// key living as long as the process (with a warning) when the store is
/// not durable.
///
/// # Errors
/// [`ServerConfigError::SecretsKey`] for a malformed key;
/// [`ServerConfigError::SecretsKeyRequired`] without a key on a durable store,
/// where sealed secrets must still open after a restart.
pub fn secret_sealer(
    key: Option<&str>,
    durable_store: bool,
) -> Result<SecretSealer, ServerConfigError> {
    match key {
        Some(key) => SecretSealer::from_encoded(key).map_err(ServerConfigError::SecretsKey),
        None if durable_store => Err(ServerConfigError::SecretsKeyRequired),
        None => {
            tracing::warn!(
                "HODEI_SECRETS_KEY is not set: job secrets are sealed with a random key that \
                 lives only as long as this process"
            );
            Ok(SecretSealer::ephemeral())
        }
    }
}

/// `name`'s value parsed, trimmed; `default` when unset or blank.
///
/// # Errors
/// [`ServerConfigError::Invalid`] naming the variable and its value.
pub fn parse_or<T: FromStr>(
    lookup: impl Fn(&str) -> Option<String>,
    name: &str,
    default: T,
) -> Result<T, ServerConfigError>
where
    T::Err: std::fmt::Display,
{
    match lookup(name) {
        Some(v) if !v.trim().is_empty() => {
            v.trim()
                .parse()
                .map_err(|e: T::Err| ServerConfigError::Invalid {
                    variable: name.to_owned(),
                    message: e.to_string(),
                    value: v,
                })
        }
        _ => Ok(default),
    }
}

/// A yes/no variable ([`crate::switch::parse_switch`]); unset or blank is `default`.
///
/// # Errors
/// [`ServerConfigError::Invalid`] naming the variable for any other value.
pub fn switch_or(
    lookup: impl Fn(&str) -> Option<String>,
    name: &str,
    default: bool,
) -> Result<bool, ServerConfigError> {
    match lookup(name) {
        Some(v) if !v.trim().is_empty() => {
            crate::switch::parse_switch(&v).ok_or_else(|| ServerConfigError::Invalid {
                variable: name.to_owned(),
                message: format!("expected {}", crate::switch::EXPECTED),
                value: v,
            })
        }
        _ => Ok(default),
    }
}

/// `HODEI_RETENTION`: how long finished jobs and their logs are kept, as a
/// human duration (`7d`, `12h`, `1h 30m`); unset or blank = kept forever.
///
/// # Errors
/// [`ServerConfigError::Invalid`] for a value that is not a duration, or is zero.
pub fn retention(value: Option<&str>) -> Result<Option<Duration>, ServerConfigError> {
    let Some(v) = value.map(str::trim).filter(|v| !v.is_empty()) else {
        return Ok(None);
    };
    let invalid = |message: String| ServerConfigError::Invalid {
        variable: ENV_RETENTION.to_owned(),
        value: v.to_owned(),
        message,
    };
    let d = humantime::parse_duration(v)
        .map_err(|e| invalid(format!("{e} (a duration such as 7d or 12h)")))?;
    if d.is_zero() {
        return Err(invalid(
            "must be longer than zero (unset it to keep jobs)".to_owned(),
        ));
    }
    Ok(Some(d))
}

/// A comma-separated list of `http://` or `https://` gRPC URLs with a host
/// (blanks around entries and empty entries ignored), normalised to
/// `url,url`. The same rules as the agent's `HODEI_SERVER`.
///
/// # Errors
/// [`ServerConfigError::WorkerServerAddress`] naming `variable`.
pub fn server_addresses(variable: &str, list: &str) -> Result<String, ServerConfigError> {
    let error = |message: String| ServerConfigError::WorkerServerAddress {
        variable: variable.to_owned(),
        message,
    };
    let urls: Vec<&str> = list
        .split(',')
        .map(str::trim)
        .filter(|a| !a.is_empty())
        .collect();
    if urls.is_empty() {
        return Err(error("no server address given".to_owned()));
    }
    for url in &urls {
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return Err(error(format!(
                "{url:?} must start with http:// or https://"
            )));
        }
        let uri: tonic::transport::Uri = url
            .parse()
            .map_err(|e| error(format!("{url:?} is not a valid URL: {e}")))?;
        if uri.host().is_none_or(str::is_empty) {
            return Err(error(format!("{url:?} has no host")));
        }
    }
    Ok(urls.join(","))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn config(vars: &[(&str, &str)]) -> Result<ServerConfig, ServerConfigError> {
        let vars: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        ServerConfig::from_lookup(|k| vars.get(k).cloned())
    }

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
        let e = retention(Some("0s")).unwrap_err().to_string();
        assert_eq!(
            e,
            "HODEI_RETENTION=\"0s\" is invalid: must be longer than zero (unset it to keep jobs)"
        );
    }

    #[test]
    fn trace_export_needs_an_http_endpoint_and_names_the_service() {
        assert_eq!(config(&[]).unwrap().traces, None);
        assert_eq!(
            config(&[("OTEL_EXPORTER_OTLP_ENDPOINT", " ")])
                .unwrap()
                .traces,
            None
        );
        let t = config(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4317")])
            .unwrap()
            .traces
            .unwrap();
        assert_eq!(t.endpoint, "http://collector:4317");
        assert_eq!(t.service_name, "hodei-server");
        let t = config(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "https://collector:4317"),
            ("OTEL_SERVICE_NAME", "hodei-eu-1"),
        ])
        .unwrap()
        .traces
        .unwrap();
        assert_eq!(t.service_name, "hodei-eu-1");
        let e = config(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "collector:4317")])
            .unwrap_err()
            .to_string();
        assert!(e.contains("OTEL_EXPORTER_OTLP_ENDPOINT"), "{e}");
    }

    #[test]
    fn defaults_with_an_empty_environment() {
        let c = config(&[]).unwrap();
        assert_eq!(c.bind, IpAddr::from([0, 0, 0, 0]));
        assert_eq!((c.grpc_port, c.http_port), (50051, 8080));
        assert_eq!(c.worker_server_address, "http://127.0.0.1:50051");
        assert_eq!(
            c.control_plane.worker_server_address,
            c.worker_server_address
        );
        assert_eq!(c.pool.max_workers, 4);
        assert_eq!(c.pool.min_idle, 0);
        assert_eq!(c.pool.max_jobs_per_worker, None);
        assert_eq!(c.pool.idle_timeout, Duration::from_secs(300));
        assert_eq!(c.control_plane.heartbeat_interval, Duration::from_secs(5));
        assert_eq!(c.control_plane.worker_lost_after, Duration::from_secs(15));
        assert_eq!(c.control_plane.dispatch_lease, Duration::from_secs(30));
        assert_eq!(c.control_plane.retention, None);
        assert_eq!(c.leader_lease, Duration::from_secs(15));
        assert!(!c.metrics);
        assert!(c.tls.is_none() && c.rest_tls.is_none() && c.auth.is_none());
        assert!(c.worker_tls.is_none());
        assert_eq!(c.process_provider_name, None);
        assert_eq!(c.providers, EnabledProviders::default());
        assert_eq!(
            c.artifacts.dir,
            std::env::temp_dir().join("hodei-artifacts")
        );
        assert_eq!(c.artifacts.limits.max_files, artifacts::DEFAULT_MAX_FILES);
    }

    #[test]
    fn values_are_trimmed_clamped_and_blank_means_default() {
        let c = config(&[
            ("GRPC_PORT", " 6000 "),
            ("HODEI_HTTP_PORT", ""),
            ("HODEI_MAX_JOBS_PER_WORKER", "1"),
            ("HODEI_DISPATCH_LEASE_MS", "1"),
            ("HODEI_AUDIT_INTERVAL_MS", "1"),
            ("HODEI_DISPATCH_PARALLELISM", "0"),
            ("HODEI_LEADER_LEASE_SECS", "0"),
            ("HODEI_METRICS_BACKEND", "memory"),
            ("HODEI_PROCESS_PROVIDER_NAME", "  local-a "),
            ("HODEI_DOCKER_ENABLED", "yes"),
            ("HODEI_K8S_ENABLED", "off"),
            ("HODEI_RETENTION", "7d"),
        ])
        .unwrap();
        assert_eq!((c.grpc_port, c.http_port), (6000, 8080));
        assert_eq!(c.worker_server_address, "http://127.0.0.1:6000");
        assert_eq!(c.pool.max_jobs_per_worker, Some(1));
        assert_eq!(c.control_plane.dispatch_lease, Duration::from_millis(300));
        assert_eq!(c.control_plane.audit_interval, Duration::from_millis(100));
        assert_eq!(c.control_plane.dispatch_parallelism, 1);
        assert_eq!(c.leader_lease, Duration::from_secs(1));
        assert!(c.metrics);
        assert_eq!(c.process_provider_name.as_deref(), Some("local-a"));
        assert!(c.providers.docker && !c.providers.kubernetes);
        assert_eq!(
            c.control_plane.retention,
            Some(Duration::from_secs(7 * 24 * 3600))
        );
    }

    #[test]
    fn a_bad_value_names_the_variable_and_the_value() {
        let e = config(&[("GRPC_PORT", "x")]).unwrap_err().to_string();
        assert_eq!(
            e,
            "GRPC_PORT=\"x\" is invalid: invalid digit found in string"
        );
        let e = config(&[("HODEI_ARTIFACT_MAX_FILES", "-1")])
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("HODEI_ARTIFACT_MAX_FILES=\"-1\" is invalid"),
            "{e}"
        );
    }

    #[test]
    fn worker_addresses_are_checked_and_normalised() {
        let c = config(&[(
            "HODEI_WORKER_SERVER_ADDRESS",
            " http://cp-a:50051 , ,https://cp-b:50051",
        )])
        .unwrap();
        assert_eq!(
            c.worker_server_address,
            "http://cp-a:50051,https://cp-b:50051"
        );
        let e = config(&[("HODEI_WORKER_SERVER_ADDRESS", "http://a:1,127.0.0.1:2")])
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            "invalid HODEI_WORKER_SERVER_ADDRESS: \"127.0.0.1:2\" must start with http:// or https://"
        );
        let e = config(&[("HODEI_WORKER_SERVER_ADDRESS", " ")])
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            "invalid HODEI_WORKER_SERVER_ADDRESS: no server address given"
        );
    }

    #[test]
    fn partial_worker_tls_and_rest_tls_without_a_certificate_are_errors() {
        let e = config(&[("HODEI_WORKER_TLS_CERT", "c.pem")]).unwrap_err();
        assert!(matches!(e, ServerConfigError::WorkerTlsIncomplete), "{e}");
        let e = config(&[("HODEI_REST_TLS", "1")]).unwrap_err();
        assert!(
            matches!(e, ServerConfigError::RestTlsWithoutCertificate),
            "{e}"
        );
        let c = config(&[
            ("HODEI_WORKER_TLS_CERT", "c.pem"),
            ("HODEI_WORKER_TLS_KEY", "k.pem"),
            ("HODEI_TLS_CLIENT_CA", "ca.pem"),
            ("HODEI_TLS_CERT", "s.pem"),
            ("HODEI_TLS_KEY", "sk.pem"),
        ])
        .unwrap();
        let w = c.worker_tls.unwrap();
        assert_eq!((w.cert.as_str(), w.ca.as_str()), ("c.pem", "ca.pem"));
        assert_eq!(c.worker_server_address, "https://127.0.0.1:50051");
    }

    #[test]
    fn secrets_key_is_required_only_with_a_durable_store() {
        assert!(secret_sealer(None, false).is_ok());
        let e = secret_sealer(None, true).unwrap_err().to_string();
        assert!(
            e.starts_with("HODEI_SECRETS_KEY is required with a database"),
            "{e}"
        );
        let e = secret_sealer(Some("short"), false).unwrap_err();
        assert!(matches!(e, ServerConfigError::SecretsKey(_)), "{e}");
        assert!(secret_sealer(Some(&"ab".repeat(32)), true).is_ok());
    }

    #[test]
    fn listener_options_without_tls() {
        let c = config(&[]).unwrap();
        assert!(c.grpc_options().is_ok() && c.rest_options().is_ok());
        let c = config(&[
            ("HODEI_TLS_CERT", "/nonexistent/s.pem"),
            ("HODEI_TLS_KEY", "/nonexistent/s.key"),
        ])
        .unwrap();
        let e = c.grpc_options().unwrap_err().to_string();
        assert_eq!(e, "loading TLS certificates");
    }

    #[test]
    fn the_settings_table_lists_every_variable_read() {
        let unlisted = crate::settings::unlisted(SETTINGS, |get| ServerConfig::from_lookup(get));
        assert!(
            unlisted.is_empty(),
            "read but not in SETTINGS: {unlisted:?}"
        );
        // With TLS on, the certificate paths are read too.
        let tls = crate::settings::unlisted(SETTINGS, |get| {
            ServerConfig::from_lookup(|k| match k {
                "HODEI_TLS_CERT" | "HODEI_TLS_KEY" => Some("/nonexistent.pem".into()),
                _ => get(k),
            })
        });
        assert!(tls.is_empty(), "read but not in SETTINGS: {tls:?}");
    }

    #[test]
    fn switches_follow_the_one_rule_and_a_typo_is_refused() {
        let c = config(&[("HODEI_DOCKER_ENABLED", "on"), ("HODEI_QEMU_ENABLED", " ")]).unwrap();
        assert!(c.providers.docker && !c.providers.qemu);
        let e = config(&[("HODEI_K8S_ENABLED", "enabled")])
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("HODEI_K8S_ENABLED=\"enabled\" is invalid: expected a yes/no value"),
            "{e}"
        );
    }
}
