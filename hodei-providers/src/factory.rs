//! [`BundledProviderFactory`]: the bridge from the domain
//! [`ProviderConfig`] (what the API accepts and the store keeps) to each
//! bundled provider's own configuration, and the one place that builds those
//! providers — for the ones the server configures from its environment at
//! start and for the ones registered at runtime (`POST /api/v1/providers`,
//! `RegisterProvider`) and re-created from the store after a restart.
//!
//! | `ProviderConfig` | provider | notes |
//! |---|---|---|
//! | `bare_metal` | process | `agent_binary` (an executable file); `hosts` must be empty |
//! | `docker` | Docker | `image` required; `docker_host`; `network` (`isolated`, `host`, `bridge`, a name) |
//! | `kubernetes` | Kubernetes | applied over the `HODEI_K8S_*` defaults |
//! | `custom` with `settings.kind = qemu` | QEMU microVM | `kernel`, `initrd`, `rootfs` paths |
//! | `custom` with `settings.kind = firecracker` | Firecracker | `kernel`, `rootfs`, optional `initrd` |
//!
//! Each kind starts from a base configuration (the server's environment) so
//! settings the domain form does not carry (TLS files for local workers,
//! Docker labels, Kubernetes QPS…) apply to runtime providers too.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use std::sync::Arc;
//! use hodei_core::control::{ControlPlane, PoolPolicy};
//! use hodei_core::store::Stores;
//! use hodei_providers::factory::BundledProviderFactory;
//!
//! let stores = Stores::in_memory();
//! let factory = Arc::new(BundledProviderFactory::new(PoolPolicy::default(), stores.workers.clone()));
//! let cp = ControlPlane::builder().stores(stores).provider_factory(factory).build();
//! cp.restore_runtime_providers().await?;
//! # Ok(()) }
//! ```

use std::collections::{BTreeMap, HashSet};
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use hodei_core::control::{
    BuiltProvider, ControlError, ControlPlane, ControlResult, PoolPolicy, ProviderFactory,
    ProviderRequest,
};
use hodei_core::domain::error::ProviderError;
use hodei_core::domain::ids::{ProviderId, WorkerId};
use hodei_core::domain::provider::ProviderConfig;
use hodei_core::provider::WorkerProvider;
use hodei_core::store::WorkerRegistry;

#[cfg(feature = "docker")]
use crate::docker::{DockerProvider, DockerProviderConfig, NetworkMode};
#[cfg(feature = "firecracker")]
use crate::firecracker::{FirecrackerProvider, FirecrackerProviderConfig};
#[cfg(feature = "kubernetes")]
use crate::kubernetes::{KubernetesProvider, KubernetesProviderConfig};
#[cfg(feature = "process")]
use crate::process::{ProcessProvider, ProcessProviderConfig, is_executable_file};
#[cfg(feature = "qemu")]
use crate::qemu::{QemuMicroVmProvider, QemuProviderConfig};

/// How often orphaned workers (containers, pods, processes a crashed server
/// left behind) are looked for.
const ORPHAN_CLEANUP_EVERY: Duration = Duration::from_secs(60);

/// Why a provider could not be built from its configuration.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum FactoryError {
    /// A field of the configuration is wrong; `field` is its JSON path
    /// (`config.image`, `config.settings.kind`, …).
    #[error("{field}: {message}")]
    InvalidField {
        /// The offending field.
        field: String,
        /// What is wrong.
        message: String,
    },
    /// The provider was configured but could not be started.
    #[error("{0}")]
    Provider(#[from] ProviderError),
}

impl FactoryError {
    fn field(field: impl Into<String>, message: impl Into<String>) -> Self {
        FactoryError::InvalidField {
            field: field.into(),
            message: message.into(),
        }
    }
}

impl From<FactoryError> for ControlError {
    fn from(e: FactoryError) -> Self {
        match e {
            FactoryError::InvalidField { field, message } => {
                ControlError::InvalidArgument { field, message }
            }
            // A configuration the provider itself refuses is bad input too.
            FactoryError::Provider(ProviderError::InvalidConfig(m)) => {
                ControlError::InvalidArgument {
                    field: "config".into(),
                    message: m,
                }
            }
            FactoryError::Provider(other) => ControlError::Provider(other),
        }
    }
}

/// A bundled provider's own configuration: what the factory builds from.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum TypedConfig {
    /// Local processes.
    #[cfg(feature = "process")]
    Process(ProcessProviderConfig),
    /// Docker containers.
    #[cfg(feature = "docker")]
    Docker(DockerProviderConfig),
    /// Kubernetes pods.
    #[cfg(feature = "kubernetes")]
    Kubernetes(Box<KubernetesProviderConfig>),
    /// QEMU microVMs.
    #[cfg(feature = "qemu")]
    Qemu(QemuProviderConfig),
    /// Firecracker microVMs.
    #[cfg(feature = "firecracker")]
    Firecracker(FirecrackerProviderConfig),
}

impl TypedConfig {
    /// The provider's name.
    #[must_use]
    pub fn name(&self) -> &str {
        match self {
            #[cfg(feature = "process")]
            TypedConfig::Process(c) => &c.name,
            #[cfg(feature = "docker")]
            TypedConfig::Docker(c) => &c.name,
            #[cfg(feature = "kubernetes")]
            TypedConfig::Kubernetes(c) => &c.name,
            #[cfg(feature = "qemu")]
            TypedConfig::Qemu(c) => &c.name,
            #[cfg(feature = "firecracker")]
            TypedConfig::Firecracker(c) => &c.name,
        }
    }

    /// Most workers at once.
    #[must_use]
    pub fn max_workers(&self) -> u32 {
        match self {
            #[cfg(feature = "process")]
            TypedConfig::Process(c) => c.max_workers,
            #[cfg(feature = "docker")]
            TypedConfig::Docker(c) => c.max_workers,
            #[cfg(feature = "kubernetes")]
            TypedConfig::Kubernetes(c) => c.max_workers,
            #[cfg(feature = "qemu")]
            TypedConfig::Qemu(c) => c.max_workers,
            #[cfg(feature = "firecracker")]
            TypedConfig::Firecracker(c) => c.max_workers,
        }
    }

    /// The domain form stored with the provider (and accepted back by
    /// [`BundledProviderFactory::typed_config`]).
    #[must_use]
    pub fn to_provider_config(&self) -> ProviderConfig {
        match self {
            #[cfg(feature = "process")]
            TypedConfig::Process(c) => ProviderConfig::BareMetal {
                agent_binary: c.resolve_agent_binary().map(|p| p.display().to_string()),
                hosts: Vec::new(),
            },
            #[cfg(feature = "docker")]
            TypedConfig::Docker(c) => ProviderConfig::Docker {
                image: c.image.clone(),
                docker_host: c.docker_host.clone(),
                network: Some(c.network_mode.as_docker().to_owned()),
            },
            #[cfg(feature = "kubernetes")]
            TypedConfig::Kubernetes(c) => c.to_provider_config(),
            #[cfg(feature = "qemu")]
            TypedConfig::Qemu(c) => custom(
                KIND_QEMU,
                [
                    ("kernel", Some(&c.kernel)),
                    ("initrd", Some(&c.initrd)),
                    ("rootfs", Some(&c.rootfs)),
                ],
            ),
            #[cfg(feature = "firecracker")]
            TypedConfig::Firecracker(c) => custom(
                KIND_FIRECRACKER,
                [
                    ("kernel", Some(&c.kernel)),
                    ("initrd", c.initrd.as_ref()),
                    ("rootfs", Some(&c.rootfs)),
                ],
            ),
        }
    }
}

/// `settings.kind` of a QEMU microVM provider.
pub const KIND_QEMU: &str = "qemu";
/// `settings.kind` of a Firecracker provider.
pub const KIND_FIRECRACKER: &str = "firecracker";

#[cfg(any(feature = "qemu", feature = "firecracker"))]
fn custom<'a>(
    kind: &str,
    paths: impl IntoIterator<Item = (&'a str, Option<&'a PathBuf>)>,
) -> ProviderConfig {
    let mut settings: BTreeMap<String, String> = paths
        .into_iter()
        .filter_map(|(k, v)| v.map(|v| (k.to_owned(), v.display().to_string())))
        .collect();
    settings.insert("kind".into(), kind.into());
    ProviderConfig::Custom { settings }
}

/// Builds the bundled providers (the kinds compiled in) from the domain
/// configuration over base configurations, and implements the control
/// plane's [`ProviderFactory`].
#[derive(Clone)]
#[must_use]
pub struct BundledProviderFactory {
    pool: PoolPolicy,
    workers: Arc<dyn WorkerRegistry>,
    bind: Option<IpAddr>,
    worker_server_address: String,
    #[cfg(feature = "process")]
    process: ProcessProviderConfig,
    #[cfg(feature = "docker")]
    docker: DockerProviderConfig,
    #[cfg(feature = "kubernetes")]
    kubernetes: KubernetesProviderConfig,
    #[cfg(feature = "qemu")]
    qemu: QemuProviderConfig,
    #[cfg(feature = "firecracker")]
    firecracker: FirecrackerProviderConfig,
}

impl std::fmt::Debug for BundledProviderFactory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BundledProviderFactory")
            .field("pool", &self.pool)
            .field("bind", &self.bind)
            .finish_non_exhaustive()
    }
}

impl BundledProviderFactory {
    /// A factory whose providers run under `pool` (its `max_workers` is the
    /// default limit) and whose orphan cleanup asks `workers` which workers
    /// are still known. Base configurations are the defaults.
    pub fn new(pool: PoolPolicy, workers: Arc<dyn WorkerRegistry>) -> Self {
        Self {
            pool,
            workers,
            bind: None,
            worker_server_address: String::new(),
            #[cfg(feature = "process")]
            process: ProcessProviderConfig::default(),
            #[cfg(feature = "docker")]
            docker: DockerProviderConfig::default(),
            #[cfg(feature = "kubernetes")]
            kubernetes: KubernetesProviderConfig::default(),
            #[cfg(feature = "qemu")]
            qemu: QemuProviderConfig::default(),
            #[cfg(feature = "firecracker")]
            firecracker: FirecrackerProviderConfig::default(),
        }
    }

    /// Where the server listens and the address workers are given: Docker
    /// providers are then refused when their containers could not reach it.
    pub fn server_address(
        mut self,
        bind: IpAddr,
        worker_server_address: impl Into<String>,
    ) -> Self {
        self.bind = Some(bind);
        self.worker_server_address = worker_server_address.into();
        self
    }

    /// Base of process providers (environment for local workers, agent binary).
    #[cfg(feature = "process")]
    pub fn process_base(mut self, c: ProcessProviderConfig) -> Self {
        self.process = c;
        self
    }

    /// Base of Docker providers.
    #[cfg(feature = "docker")]
    pub fn docker_base(mut self, c: DockerProviderConfig) -> Self {
        self.docker = c;
        self
    }

    /// Base of Kubernetes providers.
    #[cfg(feature = "kubernetes")]
    pub fn kubernetes_base(mut self, c: KubernetesProviderConfig) -> Self {
        self.kubernetes = c;
        self
    }

    /// Base of QEMU providers (binaries, guest image, work directory).
    #[cfg(feature = "qemu")]
    pub fn qemu_base(mut self, c: QemuProviderConfig) -> Self {
        self.qemu = c;
        self
    }

    /// Base of Firecracker providers.
    #[cfg(feature = "firecracker")]
    pub fn firecracker_base(mut self, c: FirecrackerProviderConfig) -> Self {
        self.firecracker = c;
        self
    }

    /// The typed configuration of provider `name` from its domain form, over
    /// this factory's base for that kind. `max_workers` overrides the base's.
    ///
    /// # Errors
    /// [`FactoryError::InvalidField`] naming the field (`config.type`,
    /// `config.image`, `config.settings.kind`, …).
    pub fn typed_config(
        &self,
        name: &str,
        config: &ProviderConfig,
        max_workers: Option<u32>,
    ) -> Result<TypedConfig, FactoryError> {
        if max_workers == Some(0) {
            return Err(FactoryError::field("max_workers", "must be at least 1"));
        }
        let max = max_workers.unwrap_or(self.pool.max_workers).max(1);
        match config {
            ProviderConfig::BareMetal {
                agent_binary,
                hosts,
            } => {
                #[cfg(feature = "process")]
                {
                    if !hosts.is_empty() {
                        return Err(FactoryError::field(
                            "config.hosts",
                            "the process provider runs workers on this machine only: leave hosts empty",
                        ));
                    }
                    let mut c = self.process.clone().with_name(name).with_max_workers(max);
                    if let Some(path) = agent_binary.as_deref().map(str::trim) {
                        if path.is_empty() || !is_executable_file(std::path::Path::new(path)) {
                            return Err(FactoryError::field(
                                "config.agent_binary",
                                format!("{path:?} is not an executable file on the server"),
                            ));
                        }
                        c = c.with_agent_binary(path);
                    }
                    Ok(TypedConfig::Process(c))
                }
                #[cfg(not(feature = "process"))]
                {
                    let _ = (agent_binary, hosts, max);
                    Err(not_compiled("bare_metal", "process"))
                }
            }
            ProviderConfig::Docker {
                image,
                docker_host,
                network,
            } => {
                #[cfg(feature = "docker")]
                {
                    if image.trim().is_empty() {
                        return Err(FactoryError::field(
                            "config.image",
                            "must name the worker image (e.g. hodei-worker:latest)",
                        ));
                    }
                    let mut c = self
                        .docker
                        .clone()
                        .with_name(name)
                        .with_image(image.trim())
                        .with_max_workers(max);
                    if let Some(h) = docker_host.as_deref().map(str::trim) {
                        if !(h.starts_with("unix://")
                            || h.starts_with('/')
                            || h.starts_with("tcp://")
                            || h.starts_with("http://"))
                        {
                            return Err(FactoryError::field(
                                "config.docker_host",
                                format!(
                                    "{h:?}: expected unix://PATH, tcp://HOST:PORT or http://HOST:PORT"
                                ),
                            ));
                        }
                        c = c.with_docker_host(h);
                    }
                    if let Some(n) = network {
                        c = c.with_network_mode(NetworkMode::parse(n));
                    }
                    Ok(TypedConfig::Docker(c))
                }
                #[cfg(not(feature = "docker"))]
                {
                    let _ = (image, docker_host, network, max);
                    Err(not_compiled("docker", "docker"))
                }
            }
            ProviderConfig::Kubernetes { .. } => {
                #[cfg(feature = "kubernetes")]
                {
                    let c = self
                        .kubernetes
                        .clone()
                        .with_name(name)
                        .with_max_workers(max)
                        .apply_provider_config(config)
                        .map_err(|e| FactoryError::field("config.tolerations", e.to_string()))?;
                    if c.image.trim().is_empty() {
                        return Err(FactoryError::field(
                            "config.image",
                            "must name the worker image",
                        ));
                    }
                    Ok(TypedConfig::Kubernetes(Box::new(c)))
                }
                #[cfg(not(feature = "kubernetes"))]
                {
                    let _ = max;
                    Err(not_compiled("kubernetes", "kubernetes"))
                }
            }
            ProviderConfig::Custom { settings } => self.microvm_config(name, settings, max),
            other => Err(FactoryError::field(
                "config.type",
                format!(
                    "{} providers are not built into this server (bare_metal, docker, kubernetes, \
                     custom with settings.kind qemu or firecracker)",
                    other.provider_type()
                ),
            )),
        }
    }

    fn microvm_config(
        &self,
        name: &str,
        settings: &BTreeMap<String, String>,
        max: u32,
    ) -> Result<TypedConfig, FactoryError> {
        let kind = settings.get("kind").map(|k| k.trim()).unwrap_or_default();
        let allowed: &[&str] = match kind {
            KIND_QEMU => &["kind", "kernel", "initrd", "rootfs"],
            KIND_FIRECRACKER => &["kind", "kernel", "initrd", "rootfs"],
            "" => {
                return Err(FactoryError::field(
                    "config.settings.kind",
                    "must be set: qemu or firecracker",
                ));
            }
            other => {
                return Err(FactoryError::field(
                    "config.settings.kind",
                    format!("{other:?} is not a bundled provider (qemu or firecracker)"),
                ));
            }
        };
        if let Some(k) = settings.keys().find(|k| !allowed.contains(&k.as_str())) {
            return Err(FactoryError::field(
                format!("config.settings.{k}"),
                format!(
                    "unknown setting for a {kind} provider (known: {})",
                    allowed.join(", ")
                ),
            ));
        }
        let path = |key: &str| -> Result<Option<PathBuf>, FactoryError> {
            match settings.get(key).map(|v| v.trim()) {
                None => Ok(None),
                Some("") => Err(FactoryError::field(
                    format!("config.settings.{key}"),
                    "must not be empty",
                )),
                Some(p) => Ok(Some(PathBuf::from(p))),
            }
        };
        let (kernel, initrd, rootfs) = (path("kernel")?, path("initrd")?, path("rootfs")?);
        match kind {
            KIND_QEMU => {
                #[cfg(feature = "qemu")]
                {
                    let mut c = self.qemu.clone().with_max_workers(max);
                    if name != c.name {
                        // Its own work directory: a provider removes what it finds there at start.
                        let dir = c.work_dir.join(name);
                        c = c.with_work_dir(dir);
                    }
                    c = c.with_name(name);
                    if let Some(p) = kernel {
                        c.kernel = p;
                    }
                    if let Some(p) = initrd {
                        c.initrd = p;
                    }
                    if let Some(p) = rootfs {
                        c.rootfs = p;
                    }
                    Ok(TypedConfig::Qemu(c))
                }
                #[cfg(not(feature = "qemu"))]
                {
                    let _ = (name, max, kernel, initrd, rootfs);
                    Err(not_compiled("custom (qemu)", "qemu"))
                }
            }
            _ => {
                #[cfg(feature = "firecracker")]
                {
                    let mut c = self.firecracker.clone().with_max_workers(max);
                    if name != c.name {
                        let dir = c.work_dir.join(name);
                        c = c.with_work_dir(dir);
                    }
                    c = c.with_name(name);
                    if let Some(p) = kernel {
                        c = c.with_kernel(p);
                    }
                    if initrd.is_some() {
                        c = c.with_initrd(initrd);
                    }
                    if let Some(p) = rootfs {
                        c = c.with_rootfs(p);
                    }
                    Ok(TypedConfig::Firecracker(c))
                }
                #[cfg(not(feature = "firecracker"))]
                {
                    let _ = (name, max, kernel, initrd, rootfs);
                    Err(not_compiled("custom (firecracker)", "firecracker"))
                }
            }
        }
    }

    /// Builds the provider of `config` under `id`, with its pool policy.
    /// Docker and Kubernetes providers connect lazily (a daemon or cluster that
    /// is down makes the provider unhealthy, not this fail); providers whose
    /// workers can outlive a crashed server get a periodic orphan cleanup.
    ///
    /// # Errors
    /// [`FactoryError`] when the provider refuses its configuration, or a
    /// Docker provider's containers could not reach the server.
    pub async fn build(
        &self,
        id: ProviderId,
        config: TypedConfig,
    ) -> Result<BuiltProvider, FactoryError> {
        let policy = self.pool.clone().max_workers(config.max_workers());
        let provider: Arc<dyn WorkerProvider> = match config {
            #[cfg(feature = "process")]
            TypedConfig::Process(c) => {
                let p = Arc::new(ProcessProvider::with_id(id, c));
                let cleanup = p.clone();
                self.spawn_orphan_cleanup("processes", move |known| {
                    let p = cleanup.clone();
                    async move { p.cleanup_orphans(&known).await }
                });
                p
            }
            #[cfg(feature = "docker")]
            TypedConfig::Docker(c) => {
                let host_network = c.network_mode.is_host();
                let p = Arc::new(DockerProvider::connect_lazy_with_id(id, c).await?);
                if let Some(bind) = self.bind {
                    p.check_server_reachable(bind, &self.worker_server_address)
                        .await
                        .map_err(|e| {
                            FactoryError::field(
                                "config.network",
                                format!(
                                    "worker containers could not reach this server (listening on \
                                     {bind}, workers connect to {}): {e}",
                                    self.worker_server_address
                                ),
                            )
                        })?;
                }
                if host_network {
                    tracing::warn!(
                        "Docker network host: jobs share the host's network and can reach every \
                         loopback service of the host (this server's API, local databases)"
                    );
                }
                let cleanup = p.clone();
                self.spawn_orphan_cleanup("containers", move |known| {
                    let p = cleanup.clone();
                    async move { p.cleanup_orphans(&known).await }
                });
                p
            }
            #[cfg(feature = "kubernetes")]
            TypedConfig::Kubernetes(c) => {
                // Makes no API call: an unreachable cluster makes it unhealthy.
                let p = Arc::new(KubernetesProvider::connect_with_id(id, *c).await?);
                let cleanup = p.clone();
                self.spawn_orphan_cleanup("pods", move |known| {
                    let p = cleanup.clone();
                    async move { p.cleanup_orphans(&known).await }
                });
                p
            }
            #[cfg(feature = "qemu")]
            TypedConfig::Qemu(c) => Arc::new(QemuMicroVmProvider::with_id(id, c)?),
            #[cfg(feature = "firecracker")]
            TypedConfig::Firecracker(c) => {
                if self.bind.is_some_and(|b| b.is_loopback()) {
                    // Guests come in through their tap, at its host address.
                    tracing::warn!(
                        "the server listens on a loopback address: Firecracker guests cannot \
                         reach it through their tap; bind 0.0.0.0 or the tap subnet's host address"
                    );
                }
                Arc::new(FirecrackerProvider::with_id(id, c)?)
            }
        };
        Ok(BuiltProvider::new(provider, policy))
    }

    /// Registers a provider configured in code or from the environment (not
    /// re-created from the store: the server builds it again at each start).
    /// It keeps the id stored under its name, so its workers stay its own.
    ///
    /// # Errors
    /// As [`build`](Self::build), or the control plane refusing it.
    pub async fn register(
        &self,
        cp: &ControlPlane,
        config: TypedConfig,
    ) -> ControlResult<hodei_core::domain::provider::Provider> {
        let id = match cp.stores().providers.get_by_name(config.name()).await {
            Ok(Some(p)) => p.id(),
            _ => ProviderId::new(),
        };
        let stored = config.to_provider_config();
        let built = self.build(id, config).await?;
        cp.register_provider(built.provider, stored, built.policy)
            .await
    }

    /// Removes, at once and then periodically, the workers (`what`) a
    /// provider still holds but the registry does not know: what a crashed
    /// server left behind.
    fn spawn_orphan_cleanup<F, Fut>(&self, what: &'static str, cleanup: F)
    where
        F: Fn(HashSet<WorkerId>) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = Result<Vec<String>, ProviderError>> + Send,
    {
        // Outside a runtime (unit tests of the mapping) there is nothing to clean.
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let workers = self.workers.clone();
        rt.spawn(async move {
            loop {
                let known = match workers.list().await {
                    Ok(ws) => ws.iter().map(|w| w.id()).collect(),
                    Err(_) => HashSet::new(),
                };
                match cleanup(known).await {
                    Ok(removed) if !removed.is_empty() => {
                        tracing::warn!(?removed, "removed orphaned worker {what}");
                    }
                    Ok(_) => {}
                    Err(e) => tracing::debug!(error = %e, "orphan cleanup of {what} skipped"),
                }
                tokio::time::sleep(ORPHAN_CLEANUP_EVERY).await;
            }
        });
    }
}

#[cfg(not(all(
    feature = "process",
    feature = "docker",
    feature = "kubernetes",
    feature = "qemu",
    feature = "firecracker"
)))]
fn not_compiled(kind: &str, feature: &str) -> FactoryError {
    FactoryError::field(
        "config.type",
        format!(
            "{kind} providers are not compiled into this server (hodei-providers feature {feature:?})"
        ),
    )
}

#[async_trait]
impl ProviderFactory for BundledProviderFactory {
    async fn create(&self, request: ProviderRequest<'_>) -> ControlResult<BuiltProvider> {
        let typed = self.typed_config(request.name, request.config, request.max_workers)?;
        Ok(self.build(request.id, typed).await?)
    }
}

#[cfg(test)]
#[path = "factory_tests.rs"]
mod tests;
