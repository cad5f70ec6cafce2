//! The Docker provider: each worker is a container of the worker image
//! (default `hodei-worker:latest`) whose entrypoint is the `hodei-worker` agent.
//!
//! It talks to the Docker Engine API with [bollard]. The API version is
//! negotiated with the daemon (a 20.10 daemon speaks 1.41, bollard 0.21
//! defaults to 1.53), so old and new daemons both work.
//!
//! - **Containers** are named `hodei-worker-<worker id>` and labelled
//!   `hodei.worker-id`, `hodei.provider-id` and `hodei.managed=true` (plus the
//!   configured [`labels`](DockerProviderConfig::labels)). The agent gets its
//!   OTP, server address and worker id in its environment
//!   ([`WorkerSpec::agent_env`]); CPU and memory requests become `NanoCpus`
//!   and `Memory` limits; `gpu_required` adds a GPU device request. Containers
//!   are not auto-removed, so their logs survive until `destroy_worker`.
//! - **Networking**: jobs are isolated by default ([`NetworkMode::Isolated`]):
//!   workers join a dedicated bridge network `hodei`, created when missing
//!   with inter-container traffic off, so a job reaches neither the host's
//!   loopback services nor other containers. A loopback server address is
//!   rewritten to `host.docker.internal`, mapped to the network's gateway;
//!   the server must listen on `0.0.0.0` or on that gateway, which
//!   [`DockerProvider::check_server_reachable`] checks at start. The host's
//!   network ([`NetworkMode::Host`]) is an explicit opt-in.
//! - **Events**: one background task follows the Docker events API (filtered
//!   by the provider's labels) and fans the events out to every
//!   [`events`](WorkerEventSource::events) subscriber, so a container that
//!   dies is noticed at once. It reconnects (resuming from the last event
//!   seen) when the daemon connection drops.
//! - **Orphans**: [`DockerProvider::cleanup_orphans`] removes managed
//!   containers the control plane does not know (left by a crashed server).
//! - **Errors**: a missing image is [`ProviderError::ImageNotFound`] with the
//!   command that builds it; an unreachable daemon is
//!   [`ProviderError::Unavailable`] and an unhealthy health check; daemon
//!   resource errors are [`ProviderError::ResourceExhausted`].
//!
//! ```no_run
//! use hodei_core::provider::WorkerProvider;
//! use hodei_providers::docker::{DockerProvider, DockerProviderConfig};
//! # async fn demo() -> Result<(), hodei_core::ProviderError> {
//! let provider = DockerProvider::connect(DockerProviderConfig::from_env()?).await?;
//! let provider: std::sync::Arc<dyn WorkerProvider> = std::sync::Arc::new(provider);
//! assert_eq!(provider.name(), "docker");
//! # Ok(()) }
//! ```

pub mod config;

pub use config::{
    DEFAULT_IMAGE, DockerProviderConfig, ENV_DOCKER_GPU, ENV_DOCKER_HOST, ENV_DOCKER_LABELS,
    ENV_DOCKER_MAX_WORKERS, ENV_DOCKER_NETWORK, ENV_DOCKER_STOP_GRACE_SECS, ENV_WORKER_IMAGE,
    HOST_ALIAS, IMAGE_HINT, ISOLATED_NETWORK, NetworkMode, UnreachableServer,
};

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use bollard::Docker;
use bollard::errors::Error as DockerError;
use bollard::models::{
    ContainerCreateBody, ContainerStateStatusEnum, ContainerStatsResponse, DeviceRequest,
    EventMessage, HostConfig, Network, NetworkCreateRequest,
};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, EventsOptionsBuilder, ListContainersOptionsBuilder,
    ListNetworksOptionsBuilder, LogsOptionsBuilder, RemoveContainerOptionsBuilder,
    StatsOptionsBuilder, StopContainerOptionsBuilder,
};
use futures::stream::{BoxStream, StreamExt};
use hodei_core::provider::{
    Eligibility, HealthStatus, ResourceUsage, WorkerCost, WorkerEligibility, WorkerEvent,
    WorkerEventSource, WorkerHealth, WorkerLifecycle, WorkerLogs, WorkerMetrics,
    WorkerProviderIdentity,
};
use hodei_core::{
    JobSpec, ProviderCapabilities, ProviderError, ProviderId, ProviderType, WorkerHandle, WorkerId,
    WorkerSpec, WorkerState,
};
use tokio::sync::broadcast;
use tokio::task::JoinHandle;
use tokio_stream::wrappers::BroadcastStream;

/// Label holding the worker id.
pub const LABEL_WORKER_ID: &str = "hodei.worker-id";
/// Label holding the provider id.
pub const LABEL_PROVIDER_ID: &str = "hodei.provider-id";
/// Label marking containers this provider manages (`true`).
pub const LABEL_MANAGED: &str = "hodei.managed";
/// Prefix of worker container names (`hodei-worker-<worker id>`).
pub const CONTAINER_PREFIX: &str = "hodei-worker-";
/// Start-up time assumed until a container start has been measured.
pub const DEFAULT_STARTUP: Duration = Duration::from_millis(500);
/// Timeout of one Docker API request, in seconds.
const REQUEST_TIMEOUT_SECS: u64 = 120;
/// Longest pause between two reconnections of the event stream.
const MAX_EVENT_BACKOFF: Duration = Duration::from_secs(5);

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding one of these short locks leaves consistent data.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Docker bridge option that turns traffic between the network's containers off.
const ICC_OPTION: &str = "com.docker.network.bridge.enable_icc";

/// The Docker network worker containers join (every mode but the host's).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct WorkerNetwork {
    /// Network name (`hodei` by default).
    pub name: String,
    /// Network id; containers join by id, so a duplicate name cannot make it ambiguous.
    pub id: String,
    /// The network's gateway: the host's address on it, where
    /// `host.docker.internal` points. `None` when Docker reports none.
    pub gateway: Option<IpAddr>,
}

impl WorkerNetwork {
    fn from_docker(n: &Network) -> Option<Self> {
        let gateway = n
            .ipam
            .as_ref()
            .and_then(|i| i.config.as_ref())
            .into_iter()
            .flatten()
            .filter_map(|c| match c.gateway.as_deref() {
                Some(g) => g.parse::<IpAddr>().ok(),
                // Docker's default bridge reports no gateway: the daemon gives
                // it the subnet's first address.
                None => first_host(c.subnet.as_deref()?),
            })
            // An IPv4 gateway first: the agent resolves host.docker.internal to it.
            .min_by_key(IpAddr::is_ipv6);
        Some(Self {
            name: n.name.clone()?,
            id: n.id.clone()?,
            gateway,
        })
    }

    /// The `--add-host` entry that makes `host.docker.internal` the host.
    fn host_entry(&self) -> String {
        match self.gateway {
            Some(g) => format!("{HOST_ALIAS}:{g}"),
            None => format!("{HOST_ALIAS}:host-gateway"),
        }
    }
}

/// The first host address of an IPv4 subnet (`172.17.0.0/16` → `172.17.0.1`).
fn first_host(subnet: &str) -> Option<IpAddr> {
    let (addr, len) = subnet.split_once('/')?;
    let addr: std::net::Ipv4Addr = addr.parse().ok()?;
    let len: u32 = len.parse().ok().filter(|l| *l <= 30)?;
    let mask = u32::MAX.checked_shl(32 - len).unwrap_or(0);
    Some(IpAddr::from(std::net::Ipv4Addr::from(
        (u32::from(addr) & mask) + 1,
    )))
}

/// What is known about the configured image.
#[derive(Debug, Clone, PartialEq, Eq)]
enum ImageState {
    Unknown,
    Present { architecture: Option<String> },
    Missing,
}

/// State shared by the provider and its event task.
struct Shared {
    id: ProviderId,
    config: DockerProviderConfig,
    client: RwLock<Option<Docker>>,
    negotiated: AtomicBool,
    events: broadcast::Sender<WorkerEvent>,
    /// Workers whose container runs (for `max_workers`).
    live: Mutex<HashSet<WorkerId>>,
    /// Workers being destroyed on request: their `die` is not an `Exited`.
    destroying: Mutex<HashSet<WorkerId>>,
    /// Last CPU sample per worker: when, and the container's total CPU time in ns.
    cpu_samples: Mutex<HashMap<WorkerId, (Instant, u64)>>,
    startup: Mutex<Option<Duration>>,
    image: Mutex<ImageState>,
    capabilities: RwLock<ProviderCapabilities>,
    daemon_known: AtomicBool,
    /// The workers' network once resolved (created if need be); `None` on the host network.
    network: tokio::sync::Mutex<Option<WorkerNetwork>>,
}

impl Shared {
    fn daemon(&self) -> String {
        self.config.daemon_display()
    }

    fn build_client(&self) -> Result<Docker, ProviderError> {
        let host = self.daemon();
        let v = bollard::API_DEFAULT_VERSION;
        let result = if host.starts_with("unix://") || host.starts_with('/') {
            Docker::connect_with_unix(&host, REQUEST_TIMEOUT_SECS, v)
        } else if host.starts_with("tcp://") || host.starts_with("http://") {
            Docker::connect_with_http(&host, REQUEST_TIMEOUT_SECS, v)
        } else {
            return Err(ProviderError::InvalidConfig(format!(
                "docker host {host:?} is neither unix://PATH, /PATH nor tcp://HOST:PORT"
            )));
        };
        result.map_err(|e| self.classify(e, "connect"))
    }

    /// The client, connected and with a negotiated API version.
    async fn docker(&self) -> Result<Docker, ProviderError> {
        let existing = self
            .client
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        let docker = match existing {
            Some(d) => d,
            None => {
                let d = self.build_client()?;
                *self
                    .client
                    .write()
                    .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(d.clone());
                d
            }
        };
        if self.negotiated.load(Ordering::Acquire) {
            return Ok(docker);
        }
        // Clones share the version, so negotiating one updates the stored client.
        let docker = docker
            .negotiate_version()
            .await
            .map_err(|e| self.classify(e, "version negotiation"))?;
        self.negotiated.store(true, Ordering::Release);
        Ok(docker)
    }

    /// Maps a Docker error to a provider error, saying what was attempted.
    fn classify(&self, e: DockerError, what: &str) -> ProviderError {
        match e {
            DockerError::DockerResponseServerError {
                status_code,
                message,
            } => {
                let m = message.to_ascii_lowercase();
                if [
                    "no space left",
                    "cannot allocate memory",
                    "out of memory",
                    "insufficient",
                    "resource temporarily unavailable",
                    "too many",
                ]
                .iter()
                .any(|p| m.contains(p))
                {
                    ProviderError::ResourceExhausted(format!("docker {what}: {message}"))
                } else if status_code == 503 {
                    ProviderError::Unavailable(format!("docker {what}: {message}"))
                } else {
                    ProviderError::Internal(format!(
                        "docker {what} failed ({status_code}): {message}"
                    ))
                }
            }
            DockerError::SocketNotFoundError(_)
            | DockerError::IOError { .. }
            | DockerError::HyperResponseError { .. }
            | DockerError::RequestTimeoutError
            | DockerError::HyperLegacyError { .. } => ProviderError::Unavailable(format!(
                "docker daemon at {} is unreachable ({what}): {e}",
                self.daemon()
            )),
            other => ProviderError::Internal(format!("docker {what}: {other}")),
        }
    }

    /// Labels every container of this provider carries, as `k=v` filters.
    fn scope_filters(&self, with_provider: bool) -> Vec<String> {
        let mut f = vec![format!("{LABEL_MANAGED}=true")];
        if with_provider {
            f.push(format!("{LABEL_PROVIDER_ID}={}", self.id));
        }
        f.extend(self.config.labels.iter().map(|(k, v)| format!("{k}={v}")));
        f
    }

    /// Reads the daemon's size into the capabilities, once.
    async fn load_daemon_info(&self, docker: &Docker) {
        if self.daemon_known.load(Ordering::Acquire) {
            return;
        }
        let Ok(info) = docker.info().await else {
            return;
        };
        let mut caps = lock_write(&self.capabilities);
        if let Some(n) = info.ncpu.filter(|n| *n > 0) {
            caps.max_cpu_cores = n as f64;
        }
        if let Some(m) = info.mem_total.filter(|m| *m > 0) {
            caps.max_memory_mb = u64::try_from(m / (1024 * 1024)).unwrap_or(caps.max_memory_mb);
        }
        let gpu_runtime = info
            .runtimes
            .as_ref()
            .is_some_and(|r| r.contains_key("nvidia"));
        caps.gpu = self.config.gpu || gpu_runtime;
        if let Some(arch) = info.architecture.as_deref() {
            caps.architectures = vec![normalize_arch(arch)];
        }
        self.daemon_known.store(true, Ordering::Release);
    }

    /// Inspects the configured image and remembers whether it is there.
    async fn check_image(&self, docker: &Docker) -> Result<ImageState, ProviderError> {
        let state = match docker.inspect_image(&self.config.image).await {
            Ok(img) => {
                let architecture = img.architecture.as_deref().map(normalize_arch);
                if let Some(arch) = &architecture {
                    lock_write(&self.capabilities).architectures = vec![arch.clone()];
                }
                ImageState::Present { architecture }
            }
            Err(e) if is_status(&e, 404) => ImageState::Missing,
            Err(e) => return Err(self.classify(e, "image inspect")),
        };
        *lock(&self.image) = state.clone();
        Ok(state)
    }

    /// The workers' network (`None` on the host network), resolved once:
    /// the `hodei` network is created when missing, a named one must exist.
    async fn network(&self, docker: &Docker) -> Result<Option<WorkerNetwork>, ProviderError> {
        let mode = &self.config.network_mode;
        if mode.is_host() {
            return Ok(None);
        }
        let mut cached = self.network.lock().await;
        if let Some(n) = cached.as_ref() {
            return Ok(Some(n.clone()));
        }
        let name = mode.as_docker();
        let network = match self.find_network(docker, name).await? {
            Some(n) => n,
            None if *mode == NetworkMode::Isolated => self.create_isolated_network(docker).await?,
            None => {
                return Err(ProviderError::InvalidConfig(format!(
                    "docker network `{name}` ({ENV_DOCKER_NETWORK}) does not exist: create it \
                     (docker network create {name}) or leave {ENV_DOCKER_NETWORK} unset for the \
                     isolated `{ISOLATED_NETWORK}` network"
                )));
            }
        };
        *cached = Some(network.clone());
        Ok(Some(network))
    }

    /// Forgets the resolved network (it was removed, e.g. by `docker network prune`).
    async fn forget_network(&self) {
        *self.network.lock().await = None;
    }

    /// The network named `name`; of several with that name (the 1.41 API
    /// allows duplicates), the one with the smallest id, so every provider
    /// sharing the daemon picks the same.
    async fn find_network(
        &self,
        docker: &Docker,
        name: &str,
    ) -> Result<Option<WorkerNetwork>, ProviderError> {
        let filters = HashMap::from([("name", vec![name.to_owned()])]);
        let opts = ListNetworksOptionsBuilder::default()
            .filters(&filters)
            .build();
        let networks = docker
            .list_networks(Some(opts))
            .await
            .map_err(|e| self.classify(e, "network list"))?;
        // The name filter matches substrings.
        let mut found: Vec<&Network> = networks
            .iter()
            .filter(|n| n.name.as_deref() == Some(name))
            .collect();
        found.sort_by(|a, b| a.id.cmp(&b.id));
        let Some(first) = found.first() else {
            return Ok(None);
        };
        let icc_off = first
            .options
            .as_ref()
            .and_then(|o| o.get(ICC_OPTION))
            .is_some_and(|v| v == "false");
        if self.config.network_mode == NetworkMode::Isolated && !icc_off {
            tracing::warn!(
                network = name,
                "docker network `{name}` exists without \
                {ICC_OPTION}=false (not created by Hodei?): jobs on it can reach each other"
            );
        }
        Ok(WorkerNetwork::from_docker(first))
    }

    /// Creates the `hodei` bridge network, inter-container traffic off.
    async fn create_isolated_network(
        &self,
        docker: &Docker,
    ) -> Result<WorkerNetwork, ProviderError> {
        let request = NetworkCreateRequest {
            name: ISOLATED_NETWORK.to_owned(),
            driver: Some("bridge".to_owned()),
            options: Some(HashMap::from([(ICC_OPTION.to_owned(), "false".to_owned())])),
            labels: Some(HashMap::from([(
                LABEL_MANAGED.to_owned(),
                "true".to_owned(),
            )])),
            ..Default::default()
        };
        let created = docker
            .create_network(request)
            .await
            .map_err(|e| self.classify(e, "network create"))?;
        if !created.warning.is_empty() {
            // Another provider created it meanwhile (the 1.41 API then makes a
            // duplicate and warns): drop ours and join theirs.
            tracing::debug!(warning = %created.warning, "network created twice; keeping the first");
            if let Err(e) = docker.remove_network(&created.id).await {
                tracing::warn!(id = %created.id, error = %e, "could not remove a duplicate network");
            }
        }
        let network = self
            .find_network(docker, ISOLATED_NETWORK)
            .await?
            .ok_or_else(|| {
                ProviderError::Internal(format!(
                    "network `{ISOLATED_NETWORK}` vanished after its creation"
                ))
            })?;
        tracing::info!(network = %network.name, id = %network.id, gateway = ?network.gateway,
            "created the isolated worker network");
        Ok(network)
    }

    fn image_missing(&self, image: &str) -> ProviderError {
        ProviderError::ImageNotFound {
            image: image.to_owned(),
            hint: IMAGE_HINT.to_owned(),
        }
    }
}

fn lock_write<T>(l: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn is_status(e: &DockerError, code: u16) -> bool {
    matches!(e, DockerError::DockerResponseServerError { status_code, .. } if *status_code == code)
}

/// A 404 naming a network (`network 1f0c… not found`), not an image.
fn is_missing_network(e: &DockerError) -> bool {
    matches!(e, DockerError::DockerResponseServerError { status_code: 404, message }
        if message.to_ascii_lowercase().contains("network"))
}

/// Docker's architecture names (`amd64`, `arm64`) as Rust's (`x86_64`, `aarch64`).
fn normalize_arch(arch: &str) -> String {
    match arch {
        "amd64" | "x86_64" => "x86_64",
        "arm64" | "aarch64" => "aarch64",
        "386" | "i386" => "x86",
        "arm" => "arm",
        other => other,
    }
    .to_owned()
}

/// The host's size, until the daemon has been asked.
fn host_capabilities(config: &DockerProviderConfig) -> ProviderCapabilities {
    let mut caps = ProviderCapabilities::default();
    caps.max_cpu_cores = std::thread::available_parallelism().map_or(1.0, |n| n.get() as f64);
    if let Some(kb) = std::fs::read_to_string("/proc/meminfo").ok().and_then(|s| {
        s.lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))
            .and_then(|r| r.split_whitespace().next())
            .and_then(|n| n.parse::<u64>().ok())
    }) {
        caps.max_memory_mb = kb / 1024;
    }
    caps.gpu = config.gpu;
    caps.architectures = vec![std::env::consts::ARCH.to_owned()];
    caps.max_workers = config.max_workers;
    caps.supports_images = true;
    caps.labels = config.labels.clone();
    caps
}

fn now_nanos() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
}

/// Runs each worker as a Docker container of the worker image. See the [module docs](self).
pub struct DockerProvider {
    shared: Arc<Shared>,
    event_task: JoinHandle<()>,
}

impl std::fmt::Debug for DockerProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DockerProvider")
            .field("id", &self.shared.id)
            .field("config", &self.shared.config)
            .field("live_workers", &lock(&self.shared.live).len())
            .finish_non_exhaustive()
    }
}

impl Drop for DockerProvider {
    fn drop(&mut self) {
        self.event_task.abort();
    }
}

impl DockerProvider {
    /// Connects to the daemon (negotiating the API version) with a new provider id.
    ///
    /// # Errors
    /// [`ProviderError::Unavailable`] when the daemon cannot be reached,
    /// [`ProviderError::InvalidConfig`] when the daemon address is malformed.
    /// A missing image is not an error here: the health check reports it.
    pub async fn connect(config: DockerProviderConfig) -> Result<Self, ProviderError> {
        Self::connect_with_id(ProviderId::new(), config).await
    }

    /// Like [`connect`](Self::connect) with a given provider id (as stored by the control plane).
    ///
    /// # Errors
    /// As [`connect`](Self::connect).
    pub async fn connect_with_id(
        id: ProviderId,
        config: DockerProviderConfig,
    ) -> Result<Self, ProviderError> {
        let p = Self::connect_lazy_with_id(id, config).await?;
        let docker = p.shared.docker().await?;
        p.shared.load_daemon_info(&docker).await;
        p.shared.check_image(&docker).await?;
        p.shared.network(&docker).await?;
        Ok(p)
    }

    /// A provider that connects on first use: it is created even when the
    /// daemon is down, reports itself unhealthy and answers
    /// [`ProviderError::Unavailable`] until the daemon is back.
    ///
    /// # Errors
    /// [`ProviderError::InvalidConfig`] when the daemon address is malformed.
    pub async fn connect_lazy(config: DockerProviderConfig) -> Result<Self, ProviderError> {
        Self::connect_lazy_with_id(ProviderId::new(), config).await
    }

    /// Like [`connect_lazy`](Self::connect_lazy) with a given provider id.
    ///
    /// # Errors
    /// As [`connect_lazy`](Self::connect_lazy).
    pub async fn connect_lazy_with_id(
        id: ProviderId,
        config: DockerProviderConfig,
    ) -> Result<Self, ProviderError> {
        let host = config.daemon_display();
        if !(host.starts_with("unix://")
            || host.starts_with('/')
            || host.starts_with("tcp://")
            || host.starts_with("http://"))
        {
            return Err(ProviderError::InvalidConfig(format!(
                "docker host {host:?} is neither unix://PATH, /PATH nor tcp://HOST:PORT"
            )));
        }
        let (events, _) = broadcast::channel(1024);
        let capabilities = host_capabilities(&config);
        let shared = Arc::new(Shared {
            id,
            config,
            client: RwLock::new(None),
            negotiated: AtomicBool::new(false),
            events,
            live: Mutex::new(HashSet::new()),
            destroying: Mutex::new(HashSet::new()),
            cpu_samples: Mutex::new(HashMap::new()),
            startup: Mutex::new(None),
            image: Mutex::new(ImageState::Unknown),
            capabilities: RwLock::new(capabilities),
            daemon_known: AtomicBool::new(false),
            network: tokio::sync::Mutex::new(None),
        });
        let event_task = tokio::spawn(follow_events(Arc::clone(&shared), now_nanos()));
        Ok(Self { shared, event_task })
    }

    /// Its configuration.
    #[must_use]
    pub fn config(&self) -> &DockerProviderConfig {
        &self.shared.config
    }

    /// The network worker containers join (`None` on the host network),
    /// resolved (and the `hodei` network created) on first use.
    ///
    /// # Errors
    /// [`ProviderError::Unavailable`] when the daemon cannot be reached,
    /// [`ProviderError::InvalidConfig`] when a named network does not exist.
    pub async fn worker_network(&self) -> Result<Option<WorkerNetwork>, ProviderError> {
        let docker = self.shared.docker().await?;
        self.shared.network(&docker).await
    }

    /// Whether the agent in a worker container will reach a server that
    /// listens on `listen` and gives workers `server_address`; see
    /// [`DockerProviderConfig::check_server_reachable`]. Call it at start:
    /// the gateway is asked of the daemon when it answers, else only the
    /// certain case (a loopback listener) is an error.
    ///
    /// # Errors
    /// [`UnreachableServer`] saying where the server must listen instead.
    pub async fn check_server_reachable(
        &self,
        listen: IpAddr,
        server_address: &str,
    ) -> Result<(), UnreachableServer> {
        let gateway = match self.worker_network().await {
            Ok(n) => n.and_then(|n| n.gateway),
            Err(e) => {
                tracing::debug!(error = %e, "worker network unknown; checking the listener only");
                None
            }
        };
        self.shared
            .config
            .check_server_reachable(listen, server_address, gateway)
    }

    /// Worker containers of this provider running now.
    #[must_use]
    pub fn live_workers(&self) -> usize {
        lock(&self.shared.live).len()
    }

    /// The name of a worker's container.
    #[must_use]
    pub fn container_name(worker_id: WorkerId) -> String {
        format!("{CONTAINER_PREFIX}{worker_id}")
    }

    /// Records a measured start-up time. `create_worker` records create →
    /// running itself; a host may add create → agent registered. The estimate
    /// is an exponential moving average (weight 0.3 on the newest).
    pub fn record_startup(&self, took: Duration) {
        let mut s = lock(&self.shared.startup);
        *s = Some(match *s {
            None => took,
            Some(avg) => avg.mul_f64(0.7) + took.mul_f64(0.3),
        });
    }

    /// Removes every container labelled `hodei.managed=true` (and carrying the
    /// configured [`labels`](DockerProviderConfig::labels)) whose worker id is
    /// not in `known`: containers a crashed server left behind. Returns the
    /// names of the removed containers. Call it at start and periodically with
    /// the ids of the workers the registry knows.
    ///
    /// # Errors
    /// [`ProviderError::Unavailable`] when the daemon cannot be reached.
    pub async fn cleanup_orphans(
        &self,
        known: &HashSet<WorkerId>,
    ) -> Result<Vec<String>, ProviderError> {
        let docker = self.shared.docker().await?;
        let mut filters: HashMap<&str, Vec<String>> = HashMap::new();
        filters.insert("label", self.shared.scope_filters(false));
        let opts = ListContainersOptionsBuilder::default()
            .all(true)
            .filters(&filters)
            .build();
        let containers = docker
            .list_containers(Some(opts))
            .await
            .map_err(|e| self.shared.classify(e, "container list"))?;
        let mut removed = Vec::new();
        for c in containers {
            let worker = c
                .labels
                .as_ref()
                .and_then(|l| l.get(LABEL_WORKER_ID))
                .and_then(|w| WorkerId::parse(w).ok());
            if worker.is_some_and(|w| known.contains(&w)) {
                continue;
            }
            let Some(id) = c.id else { continue };
            let name = c
                .names
                .as_ref()
                .and_then(|n| n.first())
                .map_or_else(|| id.clone(), |n| n.trim_start_matches('/').to_owned());
            let opts = RemoveContainerOptionsBuilder::default()
                .force(true)
                .v(true)
                .build();
            match docker.remove_container(&id, Some(opts)).await {
                Ok(()) => {}
                Err(e) if is_status(&e, 404) || is_status(&e, 409) => {}
                Err(e) => return Err(self.shared.classify(e, "orphan removal")),
            }
            tracing::warn!(container = %name, worker = ?worker, "removed an orphaned worker container");
            if let Some(w) = worker {
                lock(&self.shared.live).remove(&w);
            }
            removed.push(name);
        }
        Ok(removed)
    }

    /// Takes a slot under `max_workers`, or says the provider is full.
    fn reserve_slot(&self, worker_id: WorkerId) -> Result<(), ProviderError> {
        let max = self.shared.config.max_workers as usize;
        let mut live = lock(&self.shared.live);
        if live.contains(&worker_id) {
            return Err(ProviderError::Internal(format!(
                "worker {worker_id} already runs on this provider"
            )));
        }
        if live.len() >= max {
            return Err(ProviderError::ResourceExhausted(format!(
                "docker provider `{}` runs {} of at most {max} workers",
                self.shared.config.name,
                live.len()
            )));
        }
        live.insert(worker_id);
        Ok(())
    }

    fn container_body(
        &self,
        spec: &WorkerSpec,
        image: &str,
        network: Option<&WorkerNetwork>,
    ) -> ContainerCreateBody {
        let cfg = &self.shared.config;
        let mut labels: HashMap<String, String> = cfg.labels.clone().into_iter().collect();
        labels.extend(spec.labels.clone());
        labels.insert(LABEL_WORKER_ID.into(), spec.worker_id.to_string());
        labels.insert(LABEL_PROVIDER_ID.into(), self.shared.id.to_string());
        labels.insert(LABEL_MANAGED.into(), "true".into());

        let mut env: BTreeMap<String, String> = cfg.extra_env.clone();
        env.extend(spec.agent_env());
        env.insert(
            "HODEI_SERVER".into(),
            cfg.server_address_for_container(&spec.server_address),
        );
        let env: Vec<String> = env.into_iter().map(|(k, v)| format!("{k}={v}")).collect();

        let r = &spec.resources;
        let mut host = HostConfig {
            network_mode: Some(
                network.map_or_else(|| cfg.network_mode.as_docker().to_owned(), |n| n.id.clone()),
            ),
            auto_remove: Some(false),
            // docker-init as PID 1: forwards signals to the agent, reaps orphans.
            init: Some(true),
            ..Default::default()
        };
        if r.cpu_cores > 0.0 {
            host.nano_cpus = Some((r.cpu_cores * 1e9).round() as i64);
        }
        if r.memory_mb > 0 {
            host.memory = i64::try_from(r.memory_mb.saturating_mul(1024 * 1024)).ok();
        }
        if let Some(n) = network {
            host.extra_hosts = Some(vec![n.host_entry()]);
        }
        if r.gpu_required {
            host.device_requests = Some(vec![DeviceRequest {
                count: Some(-1),
                capabilities: Some(vec![vec!["gpu".into()]]),
                ..Default::default()
            }]);
        }
        ContainerCreateBody {
            image: Some(image.to_owned()),
            env: Some(env),
            labels: Some(labels),
            host_config: Some(host),
            ..Default::default()
        }
    }

    async fn create_container(&self, spec: &WorkerSpec) -> Result<WorkerHandle, ProviderError> {
        let shared = &self.shared;
        let docker = shared.docker().await?;
        let image = spec
            .image
            .clone()
            .unwrap_or_else(|| shared.config.image.clone());
        let name = Self::container_name(spec.worker_id);
        let started = Instant::now();
        let mut network = shared.network(&docker).await?;
        let mut result = self
            .create_and_start(&docker, spec, &image, network.as_ref())
            .await;
        if matches!(&result, Err((_, e)) if is_missing_network(e)) {
            // Removed under us (`docker network prune`): resolve (re-create) it once.
            tracing::warn!(network = %shared.config.network_mode, "worker network gone; resolving it again");
            shared.forget_network().await;
            network = shared.network(&docker).await?;
            result = self
                .create_and_start(&docker, spec, &image, network.as_ref())
                .await;
        }
        let id = match result {
            Ok(id) => id,
            Err((step, e))
                if step == "container create" && is_status(&e, 404) && !is_missing_network(&e) =>
            {
                if image == shared.config.image {
                    *lock(&shared.image) = ImageState::Missing;
                }
                return Err(shared.image_missing(&image));
            }
            Err((_, e)) if is_status(&e, 409) => {
                return Err(ProviderError::Internal(format!(
                    "a container named {name} already exists (worker {} created twice?)",
                    spec.worker_id
                )));
            }
            Err((step, e)) => return Err(shared.classify(e, step)),
        };
        let took = started.elapsed();
        self.record_startup(took);
        tracing::info!(worker_id = %spec.worker_id, container = %name, %image,
            took_ms = took.as_millis() as u64, "worker container started");
        let mut handle = WorkerHandle::new(spec.worker_id, shared.id, id);
        handle.metadata.insert("container_name".into(), name);
        handle.metadata.insert("image".into(), image);
        handle
            .metadata
            .insert("network".into(), shared.config.network_mode.to_string());
        if let Some(g) = network.and_then(|n| n.gateway) {
            handle
                .metadata
                .insert("network_gateway".into(), g.to_string());
        }
        Ok(handle)
    }

    /// Creates and starts the worker's container; a container that does not
    /// start is removed. The error says which step failed (the daemon checks
    /// the network only at start).
    async fn create_and_start(
        &self,
        docker: &Docker,
        spec: &WorkerSpec,
        image: &str,
        network: Option<&WorkerNetwork>,
    ) -> Result<String, (&'static str, DockerError)> {
        let name = Self::container_name(spec.worker_id);
        let opts = CreateContainerOptionsBuilder::default().name(&name).build();
        let created = docker
            .create_container(Some(opts), self.container_body(spec, image, network))
            .await
            .map_err(|e| ("container create", e))?;
        if let Err(e) = docker.start_container(&created.id, None).await {
            let opts = RemoveContainerOptionsBuilder::default().force(true).build();
            let _ = docker.remove_container(&created.id, Some(opts)).await;
            return Err(("container start", e));
        }
        Ok(created.id)
    }

    /// The container a handle names: its id, or its name when the id is empty.
    fn target(handle: &WorkerHandle) -> String {
        if handle.external_id.is_empty() {
            Self::container_name(handle.worker_id)
        } else {
            handle.external_id.clone()
        }
    }
}

/// Follows the daemon's events for this provider's containers and fans them
/// out as worker events, reconnecting (from the last event seen) on errors.
async fn follow_events(shared: Arc<Shared>, mut since_nanos: i64) {
    let mut backoff = Duration::from_millis(200);
    let mut last_error: Option<String> = None;
    loop {
        let docker = match shared.docker().await {
            Ok(d) => d,
            Err(e) => {
                let msg = e.to_string();
                if last_error.as_deref() != Some(msg.as_str()) {
                    tracing::warn!(error = %msg, "docker events: cannot connect; retrying");
                    last_error = Some(msg);
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_EVENT_BACKOFF);
                continue;
            }
        };
        let mut filters: HashMap<&str, Vec<String>> = HashMap::new();
        filters.insert("type", vec!["container".into()]);
        filters.insert("label", shared.scope_filters(true));
        let since = format!(
            "{}.{:09}",
            since_nanos.div_euclid(1_000_000_000),
            since_nanos.rem_euclid(1_000_000_000)
        );
        let opts = EventsOptionsBuilder::default()
            .since(&since)
            .filters(&filters)
            .build();
        let mut stream = docker.events(Some(opts));
        while let Some(item) = stream.next().await {
            match item {
                Ok(ev) => {
                    backoff = Duration::from_millis(200);
                    last_error = None;
                    let t = ev.time_nano.unwrap_or(0);
                    if t != 0 && t <= since_nanos {
                        // Replayed after a reconnect: already seen.
                        continue;
                    }
                    since_nanos = since_nanos.max(t);
                    handle_event(&shared, &ev);
                }
                Err(e) => {
                    let msg = e.to_string();
                    if last_error.as_deref() != Some(msg.as_str()) {
                        tracing::warn!(error = %msg, "docker events stream failed; reconnecting");
                        last_error = Some(msg);
                    }
                    break;
                }
            }
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(MAX_EVENT_BACKOFF);
    }
}

/// One Docker event as a worker event (or nothing).
fn handle_event(shared: &Shared, ev: &EventMessage) {
    let Some(attrs) = ev.actor.as_ref().and_then(|a| a.attributes.as_ref()) else {
        return;
    };
    let Some(worker_id) = attrs
        .get(LABEL_WORKER_ID)
        .and_then(|w| WorkerId::parse(w).ok())
    else {
        return;
    };
    let event = match ev.action.as_deref().unwrap_or_default() {
        "create" => WorkerEvent::Created { worker_id },
        "start" => WorkerEvent::Started { worker_id },
        "die" => {
            lock(&shared.live).remove(&worker_id);
            if lock(&shared.destroying).contains(&worker_id) {
                return;
            }
            let exit_code = attrs.get("exitCode").and_then(|c| c.parse::<i32>().ok());
            let reason = match exit_code {
                Some(137) => "container killed (SIGKILL, exit code 137)".to_owned(),
                Some(143) => "container terminated (SIGTERM, exit code 143)".to_owned(),
                Some(c) => format!("container exited with code {c}"),
                None => "container died".to_owned(),
            };
            tracing::warn!(%worker_id, ?exit_code, "worker container died on its own");
            WorkerEvent::Exited {
                worker_id,
                exit_code,
                reason,
            }
        }
        "destroy" => {
            lock(&shared.live).remove(&worker_id);
            lock(&shared.destroying).remove(&worker_id);
            lock(&shared.cpu_samples).remove(&worker_id);
            WorkerEvent::Destroyed { worker_id }
        }
        _ => return,
    };
    let _ = shared.events.send(event);
}

#[async_trait]
impl WorkerLifecycle for DockerProvider {
    async fn create_worker(&self, spec: &WorkerSpec) -> Result<WorkerHandle, ProviderError> {
        self.reserve_slot(spec.worker_id)?;
        self.create_container(spec).await.inspect_err(|_| {
            lock(&self.shared.live).remove(&spec.worker_id);
        })
    }

    /// `created` → `Creating`, `running`/`paused` → `Ready`, `restarting` →
    /// `Connecting`, `removing`/`exited`/`dead` → `Terminated`; a container
    /// that does not exist → [`ProviderError::WorkerNotFound`].
    async fn get_worker_status(&self, handle: &WorkerHandle) -> Result<WorkerState, ProviderError> {
        let docker = self.shared.docker().await?;
        let info = match docker.inspect_container(&Self::target(handle), None).await {
            Ok(i) => i,
            Err(e) if is_status(&e, 404) => {
                return Err(ProviderError::WorkerNotFound(handle.worker_id));
            }
            Err(e) => return Err(self.shared.classify(e, "container inspect")),
        };
        let status = info.state.and_then(|s| s.status);
        Ok(match status {
            Some(ContainerStateStatusEnum::CREATED) | None => WorkerState::Creating,
            Some(ContainerStateStatusEnum::RUNNING | ContainerStateStatusEnum::PAUSED) => {
                WorkerState::Ready
            }
            Some(ContainerStateStatusEnum::RESTARTING) => WorkerState::Connecting,
            Some(_) => WorkerState::Terminated,
        })
    }

    /// Stops the container (SIGTERM, `stop_grace`, SIGKILL), then removes it.
    /// A container that is already gone is not an error.
    async fn destroy_worker(&self, handle: &WorkerHandle) -> Result<(), ProviderError> {
        let docker = self.shared.docker().await?;
        let target = Self::target(handle);
        lock(&self.shared.destroying).insert(handle.worker_id);
        let grace = self.shared.config.stop_grace;
        let secs = i32::try_from(grace.as_secs() + u64::from(grace.subsec_nanos() > 0))
            .unwrap_or(i32::MAX);
        let stop = StopContainerOptionsBuilder::default().t(secs).build();
        match docker.stop_container(&target, Some(stop)).await {
            Ok(()) => {}
            Err(e) if is_status(&e, 304) || is_status(&e, 404) => {}
            Err(e) => {
                tracing::warn!(container = %target, error = %e, "stop failed; removing by force");
            }
        }
        let remove = RemoveContainerOptionsBuilder::default()
            .force(true)
            .v(true)
            .build();
        let result = match docker.remove_container(&target, Some(remove)).await {
            Ok(()) => Ok(()),
            // Gone already, or another removal is in progress.
            Err(e) if is_status(&e, 404) || is_status(&e, 409) => Ok(()),
            Err(e) => Err(self.shared.classify(e, "container remove")),
        };
        if result.is_ok() {
            lock(&self.shared.live).remove(&handle.worker_id);
            lock(&self.shared.cpu_samples).remove(&handle.worker_id);
        }
        result
    }
}

#[async_trait]
impl WorkerHealth for DockerProvider {
    /// Ping and version of the daemon, and whether the worker image is there.
    async fn health_check(&self) -> Result<HealthStatus, ProviderError> {
        let started = Instant::now();
        let shared = &self.shared;
        let status = async {
            let docker = shared.docker().await?;
            docker
                .ping()
                .await
                .map_err(|e| shared.classify(e, "ping"))?;
            let v = docker
                .version()
                .await
                .map_err(|e| shared.classify(e, "version"))?;
            shared.load_daemon_info(&docker).await;
            let image = shared.check_image(&docker).await?;
            let network = match shared.network(&docker).await? {
                None => "host network (jobs share it)".to_owned(),
                Some(n) => format!(
                    "network {} (gateway {})",
                    n.name,
                    n.gateway.map_or_else(|| "?".to_owned(), |g| g.to_string())
                ),
            };
            let daemon = format!(
                "docker {} (API {}) at {}, {network}",
                v.version.as_deref().unwrap_or("?"),
                docker.client_version(),
                shared.daemon()
            );
            Ok::<_, ProviderError>(match image {
                ImageState::Missing => HealthStatus::unhealthy(format!(
                    "{daemon}: image {} not found: {IMAGE_HINT}",
                    shared.config.image
                )),
                _ => HealthStatus::healthy(format!(
                    "{daemon}, image {} present",
                    shared.config.image
                )),
            })
        }
        .await
        .unwrap_or_else(|e| HealthStatus::unhealthy(e.to_string()));
        Ok(status.with_latency(started.elapsed()))
    }
}

#[async_trait]
impl WorkerLogs for DockerProvider {
    /// The container's stdout and stderr (the agent's own log), last `tail` lines.
    async fn get_worker_logs(
        &self,
        handle: &WorkerHandle,
        tail: Option<usize>,
    ) -> Result<Vec<String>, ProviderError> {
        let docker = self.shared.docker().await?;
        let tail = tail.map_or_else(|| "all".to_owned(), |n| n.to_string());
        let opts = LogsOptionsBuilder::default()
            .stdout(true)
            .stderr(true)
            .tail(&tail)
            .build();
        let mut stream = docker.logs(&Self::target(handle), Some(opts));
        let mut bytes = Vec::new();
        while let Some(chunk) = stream.next().await {
            match chunk {
                Ok(out) => bytes.extend_from_slice(&out.into_bytes()),
                Err(e) if is_status(&e, 404) => {
                    return Err(ProviderError::WorkerNotFound(handle.worker_id));
                }
                Err(e) => return Err(self.shared.classify(e, "container logs")),
            }
        }
        Ok(String::from_utf8_lossy(&bytes)
            .lines()
            .map(|l| l.trim_end_matches('\r').to_owned())
            .collect())
    }
}

impl WorkerCost for DockerProvider {
    /// Moving average of measured create → running times
    /// ([`DEFAULT_STARTUP`] until the first container start).
    fn estimated_startup_time(&self) -> Duration {
        lock(&self.shared.startup).unwrap_or(DEFAULT_STARTUP)
    }
}

impl WorkerEligibility for DockerProvider {
    /// From the daemon's size, architecture (of the image when known), GPU
    /// support and labels; ineligible while the worker image is known to be missing.
    fn check_eligibility(&self, spec: &JobSpec) -> Eligibility {
        let e = Eligibility::from_capabilities(&self.capabilities(), spec);
        if !e.is_eligible() {
            return e;
        }
        if spec.image.is_none() && *lock(&self.shared.image) == ImageState::Missing {
            return Eligibility::Ineligible(format!(
                "image {} not found: {IMAGE_HINT}",
                self.shared.config.image
            ));
        }
        e
    }
}

#[async_trait]
impl WorkerMetrics for DockerProvider {
    /// One stats sample: CPU since the previous sample (percent of one core),
    /// memory without page cache, the memory limit, block and network I/O.
    async fn get_worker_metrics(
        &self,
        handle: &WorkerHandle,
    ) -> Result<ResourceUsage, ProviderError> {
        let docker = self.shared.docker().await?;
        let opts = StatsOptionsBuilder::default()
            .stream(false)
            .one_shot(true)
            .build();
        let mut stream = docker.stats(&Self::target(handle), Some(opts));
        let stats = match stream.next().await {
            Some(Ok(s)) => s,
            Some(Err(e)) if is_status(&e, 404) => {
                return Err(ProviderError::WorkerNotFound(handle.worker_id));
            }
            Some(Err(e)) => return Err(self.shared.classify(e, "container stats")),
            None => return Ok(ResourceUsage::default()),
        };
        let now = Instant::now();
        let total = stats
            .cpu_stats
            .as_ref()
            .and_then(|c| c.cpu_usage.as_ref())
            .and_then(|u| u.total_usage)
            .unwrap_or(0);
        let previous = lock(&self.shared.cpu_samples).insert(handle.worker_id, (now, total));
        Ok(usage_from_stats(&stats, previous, now, total))
    }
}

/// Converts a stats sample (and the previous CPU sample) to a [`ResourceUsage`].
fn usage_from_stats(
    stats: &ContainerStatsResponse,
    previous: Option<(Instant, u64)>,
    now: Instant,
    total_cpu_ns: u64,
) -> ResourceUsage {
    let mut usage = ResourceUsage::default();
    if let Some((at, before)) = previous {
        let wall = now.duration_since(at).as_nanos() as f64;
        if wall > 0.0 {
            usage.cpu_percent = total_cpu_ns.saturating_sub(before) as f64 / wall * 100.0;
        }
    }
    if let Some(m) = &stats.memory_stats {
        let cache = m.stats.as_ref().and_then(|s| {
            s.get("inactive_file")
                .or_else(|| s.get("total_inactive_file"))
                .or_else(|| s.get("cache"))
                .copied()
        });
        usage.memory_bytes = m.usage.unwrap_or(0).saturating_sub(cache.unwrap_or(0));
        usage.memory_limit_bytes = m.limit.unwrap_or(0);
    }
    if let Some(entries) = stats
        .blkio_stats
        .as_ref()
        .and_then(|b| b.io_service_bytes_recursive.as_ref())
    {
        for e in entries {
            match e.op.as_deref().map(str::to_ascii_lowercase).as_deref() {
                Some("read") => usage.disk_read_bytes += e.value.unwrap_or(0),
                Some("write") => usage.disk_write_bytes += e.value.unwrap_or(0),
                _ => {}
            }
        }
    }
    if let Some(nets) = &stats.networks {
        for n in nets.values() {
            usage.net_rx_bytes += n.rx_bytes.unwrap_or(0);
            usage.net_tx_bytes += n.tx_bytes.unwrap_or(0);
        }
    }
    usage
}

impl WorkerEventSource for DockerProvider {
    fn events(&self) -> BoxStream<'static, WorkerEvent> {
        BroadcastStream::new(self.shared.events.subscribe())
            .filter_map(|e| async move { e.ok() })
            .boxed()
    }
}

impl WorkerProviderIdentity for DockerProvider {
    fn id(&self) -> ProviderId {
        self.shared.id
    }

    fn name(&self) -> &str {
        &self.shared.config.name
    }

    fn provider_type(&self) -> ProviderType {
        ProviderType::Docker
    }

    fn capabilities(&self) -> ProviderCapabilities {
        self.shared
            .capabilities
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    // Optional traits it offers: all four.
    fn cost(&self) -> Option<&dyn WorkerCost> {
        Some(self)
    }
    fn eligibility(&self) -> Option<&dyn WorkerEligibility> {
        Some(self)
    }
    fn logs(&self) -> Option<&dyn WorkerLogs> {
        Some(self)
    }
    fn metrics(&self) -> Option<&dyn WorkerMetrics> {
        Some(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bollard::models::{ContainerBlkioStatEntry, ContainerBlkioStats, ContainerMemoryStats};

    #[test]
    fn a_subnet_without_a_gateway_has_its_first_address_as_gateway() {
        let ip = |s: &str| Some(s.parse::<IpAddr>().unwrap());
        assert_eq!(first_host("172.17.0.0/16"), ip("172.17.0.1"));
        assert_eq!(first_host("10.9.8.7/24"), ip("10.9.8.1"));
        assert_eq!(first_host("fd00::/64"), None);
        assert_eq!(first_host("172.17.0.0/32"), None);
        assert_eq!(first_host("nonsense"), None);
        let network = Network {
            name: Some("bridge".into()),
            id: Some("abc".into()),
            ipam: Some(bollard::models::Ipam {
                config: Some(vec![bollard::models::IpamConfig {
                    subnet: Some("172.17.0.0/16".into()),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            ..Default::default()
        };
        let n = WorkerNetwork::from_docker(&network).unwrap();
        assert_eq!(n.gateway, ip("172.17.0.1"));
        assert_eq!(n.host_entry(), "host.docker.internal:172.17.0.1");
    }

    #[test]
    fn architectures_are_normalized() {
        assert_eq!(normalize_arch("amd64"), "x86_64");
        assert_eq!(normalize_arch("arm64"), "aarch64");
        assert_eq!(normalize_arch("riscv64"), "riscv64");
    }

    #[test]
    fn stats_become_resource_usage() {
        let stats = ContainerStatsResponse {
            memory_stats: Some(ContainerMemoryStats {
                usage: Some(10_000),
                limit: Some(1 << 20),
                stats: Some(HashMap::from([("inactive_file".to_owned(), 4_000)])),
                ..Default::default()
            }),
            blkio_stats: Some(ContainerBlkioStats {
                io_service_bytes_recursive: Some(vec![
                    ContainerBlkioStatEntry {
                        op: Some("read".into()),
                        value: Some(7),
                        ..Default::default()
                    },
                    ContainerBlkioStatEntry {
                        op: Some("Write".into()),
                        value: Some(9),
                        ..Default::default()
                    },
                ]),
                ..Default::default()
            }),
            ..Default::default()
        };
        let t0 = Instant::now();
        let t1 = t0 + Duration::from_secs(1);
        let u = usage_from_stats(&stats, Some((t0, 0)), t1, 500_000_000);
        assert!((u.cpu_percent - 50.0).abs() < 1e-9, "{u:?}");
        assert_eq!(u.memory_bytes, 6_000);
        assert_eq!(u.memory_limit_bytes, 1 << 20);
        assert_eq!((u.disk_read_bytes, u.disk_write_bytes), (7, 9));
        assert_eq!(usage_from_stats(&stats, None, t1, 5).cpu_percent, 0.0);
    }
}
