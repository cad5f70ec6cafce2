//! Configuration of the [`DockerProvider`](super::DockerProvider).

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;
use std::time::Duration;

use hodei_core::ProviderError;
use hodei_core::settings::Setting;
use hodei_core::switch::{EXPECTED, parse_switch};

/// Environment variable naming the worker image.
pub const ENV_WORKER_IMAGE: &str = "HODEI_WORKER_IMAGE";
/// Environment variable naming the Docker daemon (`unix:///var/run/docker.sock`, `tcp://host:2375`).
pub const ENV_DOCKER_HOST: &str = "DOCKER_HOST";
/// Environment variable choosing the network mode (`host`, `bridge` or a network name).
pub const ENV_DOCKER_NETWORK: &str = "HODEI_DOCKER_NETWORK";
/// Environment variable capping the number of worker containers.
pub const ENV_DOCKER_MAX_WORKERS: &str = "HODEI_DOCKER_MAX_WORKERS";
/// Environment variable setting the stop grace period, in seconds.
pub const ENV_DOCKER_STOP_GRACE_SECS: &str = "HODEI_DOCKER_STOP_GRACE_SECS";
/// Environment variable declaring that the daemon can hand out GPUs (`1`/`true`).
pub const ENV_DOCKER_GPU: &str = "HODEI_DOCKER_GPU";
/// Environment variable with extra container labels, `k=v,k2=v2`.
pub const ENV_DOCKER_LABELS: &str = "HODEI_DOCKER_LABELS";

/// Every variable [`DockerProviderConfig::from_env`] reads.
pub const SETTINGS: &[Setting] = &[
    Setting::new(
        ENV_WORKER_IMAGE,
        "hodei-worker:latest",
        "worker image (built locally, see DOCKER.md)",
    ),
    Setting::new(
        ENV_DOCKER_HOST,
        "the local socket",
        "Docker daemon (`unix:///var/run/docker.sock`, `tcp://host:2375`)",
    ),
    Setting::new(
        ENV_DOCKER_NETWORK,
        "hodei (isolated)",
        "network of the worker containers (`host` only as an opt-in)",
    ),
    Setting::new(
        ENV_DOCKER_MAX_WORKERS,
        "16",
        "most worker containers alive at once",
    ),
    Setting::new(
        ENV_DOCKER_STOP_GRACE_SECS,
        "10",
        "stop grace of a container, seconds",
    ),
    Setting::new(
        ENV_DOCKER_GPU,
        "off (on with an `nvidia` runtime)",
        "the daemon hands out GPUs (yes/no)",
    ),
    Setting::new(
        ENV_DOCKER_LABELS,
        "none",
        "extra container labels, `k=v,k2=v2`",
    ),
];
/// The default worker image, built by `scripts/docker/build-worker-image.sh`.
pub const DEFAULT_IMAGE: &str = "hodei-worker:latest";
/// What to do when the worker image is missing.
pub const IMAGE_HINT: &str = "run scripts/docker/build-worker-image.sh";

/// Name of the network [`NetworkMode::Isolated`] puts workers on.
pub const ISOLATED_NETWORK: &str = "hodei";
/// The name a worker container reaches its host by on every network but the host's.
pub const HOST_ALIAS: &str = "host.docker.internal";

/// How worker containers are networked, and so how the agent reaches the control plane.
///
/// Every mode but [`Host`](NetworkMode::Host) gives the container its own
/// network namespace: a loopback server address (`127.0.0.1`, `localhost`,
/// `0.0.0.0`, `[::1]`) is rewritten to `host.docker.internal`, which the
/// container resolves to its network's gateway (an address of the host). The
/// server must then listen on `0.0.0.0` or on that gateway address; see
/// [`DockerProviderConfig::check_server_reachable`].
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum NetworkMode {
    /// The default: a dedicated bridge network named `hodei`
    /// ([`ISOLATED_NETWORK`]), which the provider creates when it is missing,
    /// with inter-container traffic off. A job reaches neither the host's
    /// loopback services, nor other containers (other jobs included), nor
    /// the containers of Docker's default bridge.
    #[default]
    Isolated,
    /// `--network host`, only when asked (`HODEI_DOCKER_NETWORK=host`): the
    /// container shares the host's network, the server address is used as
    /// is, and **every job can reach every loopback service of the host**
    /// (the server's API, a database with trust authentication, ...).
    /// The fastest start on Linux.
    Host,
    /// Docker's default bridge (`docker0`): the host's loopback is out of
    /// reach, but jobs can reach each other and every other container on it.
    Bridge,
    /// A user-defined network by name; it must exist.
    Named(String),
}

impl NetworkMode {
    /// Parses `isolated` (or `hodei`, or nothing), `host`, `bridge` (or
    /// `default`), or a network name.
    #[must_use]
    pub fn parse(s: &str) -> Self {
        match s.trim() {
            "" | "isolated" | ISOLATED_NETWORK => NetworkMode::Isolated,
            "host" => NetworkMode::Host,
            "bridge" | "default" => NetworkMode::Bridge,
            other => NetworkMode::Named(other.to_owned()),
        }
    }

    /// The Docker network name.
    #[must_use]
    pub fn as_docker(&self) -> &str {
        match self {
            NetworkMode::Isolated => ISOLATED_NETWORK,
            NetworkMode::Host => "host",
            NetworkMode::Bridge => "bridge",
            NetworkMode::Named(n) => n,
        }
    }

    /// Whether the container shares the host's network (the opt-in).
    #[must_use]
    pub fn is_host(&self) -> bool {
        *self == NetworkMode::Host
    }
}

/// Why the agent in a worker container would not reach the control plane:
/// the server listens where the container's network cannot come in.
/// Found at start by [`DockerProviderConfig::check_server_reachable`], so a
/// misconfigured server says so at once instead of letting every job wait
/// out the registration timeout.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum UnreachableServer {
    /// The server listens on a loopback address only.
    #[error(
        "the server listens on {listen} only, which worker containers on Docker network \
         `{network}` cannot reach (a container's loopback is its own): listen on 0.0.0.0{hint}, \
         or set HODEI_DOCKER_NETWORK=host to share the host's network (jobs then reach every \
         loopback service of the host)",
        hint = .gateway.map(|g| format!(" or on {g}, the network's gateway")).unwrap_or_default()
    )]
    LoopbackListener {
        /// The address the server listens on.
        listen: IpAddr,
        /// The workers' network.
        network: String,
        /// The network's gateway, where containers reach the host, when known.
        gateway: Option<IpAddr>,
    },
    /// The server listens on one address, the containers come in at another.
    #[error(
        "the server listens on {listen}, but worker containers on Docker network `{network}` \
         reach the host at {gateway} (host.docker.internal): listen on 0.0.0.0 or {gateway}, \
         or give the workers a server address they can reach"
    )]
    OtherAddress {
        /// The address the server listens on.
        listen: IpAddr,
        /// The workers' network.
        network: String,
        /// The network's gateway, where containers reach the host.
        gateway: IpAddr,
    },
}

impl From<UnreachableServer> for ProviderError {
    fn from(e: UnreachableServer) -> Self {
        ProviderError::InvalidConfig(e.to_string())
    }
}

impl fmt::Display for NetworkMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_docker())
    }
}

/// How the Docker provider runs worker agents as containers.
///
/// ```
/// use hodei_providers::docker::{DockerProviderConfig, NetworkMode};
/// let config = DockerProviderConfig::default()
///     .with_image("my-registry/hodei-worker:1.2")
///     .with_max_workers(8);
/// assert_eq!(config.name, "docker");
/// // Jobs get their own network unless the host's is asked for.
/// assert_eq!(config.network_mode, NetworkMode::Isolated);
/// assert_eq!(config.max_workers, 8);
/// ```
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct DockerProviderConfig {
    /// Unique provider name the server registers it under. Default `docker`.
    pub name: String,
    /// Worker image (must run the `hodei-worker` agent as its entrypoint).
    /// Default `hodei-worker:latest` (`HODEI_WORKER_IMAGE`).
    pub image: String,
    /// Docker daemon: `unix:///path`, a socket path, or `tcp://host:port`.
    /// `None`: `DOCKER_HOST`, then `/var/run/docker.sock`.
    pub docker_host: Option<String>,
    /// Network of the worker containers. Default [`NetworkMode::Isolated`]
    /// (`HODEI_DOCKER_NETWORK`; `host` only when asked).
    pub network_mode: NetworkMode,
    /// How long `destroy_worker` lets the agent stop after SIGTERM before SIGKILL. Default 10 s.
    pub stop_grace: Duration,
    /// Most worker containers alive at once. Default 16.
    pub max_workers: u32,
    /// Extra labels put on every container. They also scope the provider:
    /// orphan cleanup and the event stream only consider containers carrying
    /// all of them, so several servers can share one daemon.
    pub labels: BTreeMap<String, String>,
    /// Extra environment given to every agent (the spec's environment wins).
    pub extra_env: BTreeMap<String, String>,
    /// Whether the daemon can give containers GPUs (NVIDIA container toolkit).
    pub gpu: bool,
}

impl Default for DockerProviderConfig {
    fn default() -> Self {
        Self {
            name: "docker".to_owned(),
            image: DEFAULT_IMAGE.to_owned(),
            docker_host: None,
            network_mode: NetworkMode::Isolated,
            stop_grace: Duration::from_secs(10),
            max_workers: 16,
            labels: BTreeMap::new(),
            extra_env: BTreeMap::new(),
            gpu: false,
        }
    }
}

impl DockerProviderConfig {
    /// Defaults overridden by `HODEI_WORKER_IMAGE`, `DOCKER_HOST`,
    /// `HODEI_DOCKER_NETWORK`, `HODEI_DOCKER_MAX_WORKERS`,
    /// `HODEI_DOCKER_STOP_GRACE_SECS`, `HODEI_DOCKER_GPU` and `HODEI_DOCKER_LABELS`.
    ///
    /// # Errors
    /// [`ProviderError::InvalidConfig`] naming the variable that does not parse.
    pub fn from_env() -> Result<Self, ProviderError> {
        Self::from_lookup(|k| std::env::var(k).ok())
    }

    /// Like [`from_env`](Self::from_env), reading variables through `lookup`.
    ///
    /// # Errors
    /// [`ProviderError::InvalidConfig`] naming the variable that does not parse.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ProviderError> {
        let get = |k: &str| lookup(k).filter(|s| !s.trim().is_empty());
        let mut c = Self::default();
        if let Some(image) = get(ENV_WORKER_IMAGE) {
            c.image = image.trim().to_owned();
        }
        c.docker_host = get(ENV_DOCKER_HOST).map(|s| s.trim().to_owned());
        if let Some(n) = get(ENV_DOCKER_NETWORK) {
            c.network_mode = NetworkMode::parse(&n);
        }
        if let Some(max) = get(ENV_DOCKER_MAX_WORKERS) {
            c.max_workers = match max.trim().parse::<u32>() {
                Ok(n) if n > 0 => n,
                _ => return Err(invalid(ENV_DOCKER_MAX_WORKERS, &max, "a positive integer")),
            };
        }
        if let Some(g) = get(ENV_DOCKER_STOP_GRACE_SECS) {
            let secs: u64 = g
                .trim()
                .parse()
                .map_err(|_| invalid(ENV_DOCKER_STOP_GRACE_SECS, &g, "a number of seconds"))?;
            c.stop_grace = Duration::from_secs(secs);
        }
        if let Some(g) = get(ENV_DOCKER_GPU) {
            c.gpu = parse_switch(&g).ok_or_else(|| invalid(ENV_DOCKER_GPU, &g, EXPECTED))?;
        }
        if let Some(labels) = get(ENV_DOCKER_LABELS) {
            for pair in labels.split(',').filter(|p| !p.trim().is_empty()) {
                let (k, v) = pair
                    .split_once('=')
                    .ok_or_else(|| invalid(ENV_DOCKER_LABELS, &labels, "k=v,k2=v2"))?;
                c.labels.insert(k.trim().to_owned(), v.trim().to_owned());
            }
        }
        Ok(c)
    }

    /// Sets the provider name.
    #[must_use]
    pub fn with_name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// Sets the worker image.
    #[must_use]
    pub fn with_image(mut self, image: impl Into<String>) -> Self {
        self.image = image.into();
        self
    }

    /// Sets the Docker daemon address.
    #[must_use]
    pub fn with_docker_host(mut self, host: impl Into<String>) -> Self {
        self.docker_host = Some(host.into());
        self
    }

    /// Sets the network mode.
    #[must_use]
    pub fn with_network_mode(mut self, mode: NetworkMode) -> Self {
        self.network_mode = mode;
        self
    }

    /// Sets the stop grace period.
    #[must_use]
    pub fn with_stop_grace(mut self, grace: Duration) -> Self {
        self.stop_grace = grace;
        self
    }

    /// Sets the maximum number of live containers.
    #[must_use]
    pub fn with_max_workers(mut self, n: u32) -> Self {
        self.max_workers = n;
        self
    }

    /// Adds a label put on (and required of) every container.
    #[must_use]
    pub fn with_label(mut self, k: impl Into<String>, v: impl Into<String>) -> Self {
        self.labels.insert(k.into(), v.into());
        self
    }

    /// Adds an environment variable given to every agent.
    #[must_use]
    pub fn with_env(mut self, k: impl Into<String>, v: impl Into<String>) -> Self {
        self.extra_env.insert(k.into(), v.into());
        self
    }

    /// Declares that the daemon can give containers GPUs.
    #[must_use]
    pub fn with_gpu(mut self, gpu: bool) -> Self {
        self.gpu = gpu;
        self
    }

    /// The daemon address as shown in messages.
    #[must_use]
    pub fn daemon_display(&self) -> String {
        self.docker_host
            .clone()
            .or_else(|| std::env::var(ENV_DOCKER_HOST).ok())
            .unwrap_or_else(|| "unix:///var/run/docker.sock".to_owned())
    }

    /// The server address the agent in a container must use: off the host
    /// network a loopback host becomes `host.docker.internal`.
    #[must_use]
    pub fn server_address_for_container(&self, address: &str) -> String {
        if self.network_mode.is_host() {
            address.to_owned()
        } else {
            rewrite_loopback(address, HOST_ALIAS)
        }
    }

    /// Whether an agent in a worker container reaches a server listening on
    /// `listen` through `server_address` (the address workers are given),
    /// when the workers' network has `gateway` (`None`: not known yet).
    ///
    /// A loopback server address is rewritten to the gateway, so the server
    /// must listen on `0.0.0.0` (or `::`) or on the gateway itself. The host
    /// network reaches anything; a non-loopback server address is taken to be
    /// one the operator made reachable.
    ///
    /// ```
    /// use hodei_providers::docker::{DockerProviderConfig, NetworkMode};
    /// let isolated = DockerProviderConfig::default();
    /// let loopback = "127.0.0.1".parse().unwrap();
    /// assert!(isolated.check_server_reachable(loopback, "http://127.0.0.1:50051", None).is_err());
    /// assert!(isolated.check_server_reachable("0.0.0.0".parse().unwrap(), "http://127.0.0.1:50051", None).is_ok());
    /// let host = DockerProviderConfig::default().with_network_mode(NetworkMode::Host);
    /// assert!(host.check_server_reachable(loopback, "http://127.0.0.1:50051", None).is_ok());
    /// ```
    ///
    /// # Errors
    /// [`UnreachableServer`] saying where the server must listen instead.
    pub fn check_server_reachable(
        &self,
        listen: IpAddr,
        server_address: &str,
        gateway: Option<IpAddr>,
    ) -> Result<(), UnreachableServer> {
        if self.network_mode.is_host() || !is_loopback_address(server_address) {
            return Ok(());
        }
        let network = self.network_mode.as_docker().to_owned();
        if listen.is_loopback() {
            return Err(UnreachableServer::LoopbackListener {
                listen,
                network,
                gateway,
            });
        }
        match gateway {
            Some(gateway) if !listen.is_unspecified() && listen != gateway => {
                Err(UnreachableServer::OtherAddress {
                    listen,
                    network,
                    gateway,
                })
            }
            _ => Ok(()),
        }
    }
}

fn invalid(var: &str, value: &str, want: &str) -> ProviderError {
    ProviderError::InvalidConfig(format!("{var}={value:?} is not {want}"))
}

/// A URL (`http://127.0.0.1:50051/x`) as scheme, host, `:port` and path.
fn split_address(address: &str) -> (Option<&str>, &str, &str, &str) {
    let (scheme, rest) = match address.split_once("://") {
        Some((s, r)) => (Some(s), r),
        None => (None, address),
    };
    let (authority, path) = match rest.find('/') {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    let (host, port) = if let Some(stripped) = authority.strip_prefix('[') {
        match stripped.split_once(']') {
            Some((h, p)) => (h, p),
            None => (authority, ""),
        }
    } else {
        match authority.rsplit_once(':') {
            Some((h, _)) => (h, &authority[h.len()..]),
            None => (authority, ""),
        }
    };
    (scheme, host, port, path)
}

/// Whether a URL names this host by a loopback (or unspecified) address.
fn is_loopback_address(address: &str) -> bool {
    let (_, host, _, _) = split_address(address);
    matches!(host, "127.0.0.1" | "localhost" | "0.0.0.0" | "::1" | "::")
}

/// Replaces a loopback host of a URL (`http://127.0.0.1:50051`) by `host`.
fn rewrite_loopback(address: &str, host: &str) -> String {
    // A list of replicas (`HODEI_SERVER` takes one): each entry on its own.
    if address.contains(',') {
        return address
            .split(',')
            .map(|a| rewrite_loopback(a.trim(), host))
            .collect::<Vec<_>>()
            .join(",");
    }
    if !is_loopback_address(address) {
        return address.to_owned();
    }
    let (scheme, _, port, path) = split_address(address);
    match scheme {
        Some(s) => format!("{s}://{host}{port}{path}"),
        None => format!("{host}{port}{path}"),
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn the_settings_table_lists_every_variable_read() {
        let unlisted =
            hodei_core::settings::unlisted(SETTINGS, |get| DockerProviderConfig::from_lookup(get));
        assert!(
            unlisted.is_empty(),
            "read but not in SETTINGS: {unlisted:?}"
        );
    }
    use super::*;

    #[test]
    fn each_replica_of_a_list_is_rewritten_on_its_own() {
        assert_eq!(
            rewrite_loopback(
                "http://127.0.0.1:50051, https://cp.example:50052,http://localhost:50053",
                HOST_ALIAS
            ),
            format!("http://{HOST_ALIAS}:50051,https://cp.example:50052,http://{HOST_ALIAS}:50053")
        );
    }

    #[test]
    fn env_overrides_defaults() {
        let c = DockerProviderConfig::from_lookup(|k| match k {
            ENV_WORKER_IMAGE => Some("img:1".into()),
            ENV_DOCKER_HOST => Some("unix:///tmp/d.sock".into()),
            ENV_DOCKER_NETWORK => Some("bridge".into()),
            ENV_DOCKER_MAX_WORKERS => Some("3".into()),
            ENV_DOCKER_STOP_GRACE_SECS => Some("2".into()),
            ENV_DOCKER_GPU => Some("true".into()),
            ENV_DOCKER_LABELS => Some("team=a, env=ci".into()),
            _ => None,
        })
        .unwrap();
        assert_eq!(c.image, "img:1");
        assert_eq!(c.docker_host.as_deref(), Some("unix:///tmp/d.sock"));
        assert_eq!(c.network_mode, NetworkMode::Bridge);
        assert_eq!(c.max_workers, 3);
        assert_eq!(c.stop_grace, Duration::from_secs(2));
        assert!(c.gpu);
        assert_eq!(c.labels.get("env").map(String::as_str), Some("ci"));
        let d = DockerProviderConfig::from_lookup(|_| None).unwrap();
        assert_eq!(d, DockerProviderConfig::default());
        assert_eq!(d.image, DEFAULT_IMAGE);
    }

    #[test]
    fn bad_values_name_the_variable() {
        for (var, bad) in [
            (ENV_DOCKER_MAX_WORKERS, "0"),
            (ENV_DOCKER_STOP_GRACE_SECS, "soon"),
            (ENV_DOCKER_GPU, "maybe"),
            (ENV_DOCKER_LABELS, "novalue"),
        ] {
            let err = DockerProviderConfig::from_lookup(|k| (k == var).then(|| bad.to_owned()))
                .unwrap_err();
            assert!(
                matches!(&err, ProviderError::InvalidConfig(m) if m.contains(var)),
                "{err}"
            );
        }
    }

    #[test]
    fn bridge_rewrites_loopback_server_addresses() {
        let bridge = DockerProviderConfig::default().with_network_mode(NetworkMode::Bridge);
        for (from, to) in [
            (
                "http://127.0.0.1:50051",
                "http://host.docker.internal:50051",
            ),
            (
                "http://localhost:50051/",
                "http://host.docker.internal:50051/",
            ),
            ("http://0.0.0.0:1", "http://host.docker.internal:1"),
            ("http://[::1]:7", "http://host.docker.internal:7"),
            ("https://ci.example.com:443", "https://ci.example.com:443"),
            ("http://10.0.0.5:50051", "http://10.0.0.5:50051"),
        ] {
            assert_eq!(bridge.server_address_for_container(from), to, "{from}");
        }
        let isolated = DockerProviderConfig::default();
        assert_eq!(
            isolated.server_address_for_container("http://localhost:9"),
            "http://host.docker.internal:9"
        );
        let host = DockerProviderConfig::default().with_network_mode(NetworkMode::Host);
        assert_eq!(
            host.server_address_for_container("http://127.0.0.1:50051"),
            "http://127.0.0.1:50051"
        );
    }

    #[test]
    fn the_host_network_is_used_only_when_asked() {
        assert_eq!(
            DockerProviderConfig::default().network_mode,
            NetworkMode::Isolated
        );
        for (value, want) in [
            ("host", NetworkMode::Host),
            (" host ", NetworkMode::Host),
            ("", NetworkMode::Isolated),
            ("isolated", NetworkMode::Isolated),
            ("hodei", NetworkMode::Isolated),
            ("bridge", NetworkMode::Bridge),
            ("default", NetworkMode::Bridge),
            ("my-net", NetworkMode::Named("my-net".into())),
            ("hostile", NetworkMode::Named("hostile".into())),
        ] {
            let c = DockerProviderConfig::from_lookup(|k| {
                (k == ENV_DOCKER_NETWORK).then(|| value.to_owned())
            })
            .unwrap();
            assert_eq!(c.network_mode, want, "{value:?}");
            assert_eq!(c.network_mode.is_host(), want == NetworkMode::Host);
        }
        assert_eq!(NetworkMode::Isolated.as_docker(), ISOLATED_NETWORK);
        assert_eq!(NetworkMode::parse("my-net").as_docker(), "my-net");
    }

    #[test]
    fn a_server_the_containers_cannot_reach_is_a_typed_error() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let gw = Some(ip("172.18.0.1"));
        let local = "http://127.0.0.1:50051";
        let isolated = DockerProviderConfig::default();
        for (listen, address, gateway, ok) in [
            ("127.0.0.1", local, gw, false),
            ("::1", local, None, false),
            ("0.0.0.0", local, gw, true),
            ("::", "http://localhost:1", gw, true),
            ("172.18.0.1", local, gw, true),
            ("10.1.2.3", local, gw, false),
            // The gateway is not known yet (daemon down): only loopback is certain.
            ("10.1.2.3", local, None, true),
            // An address the operator chose is taken as reachable.
            ("127.0.0.1", "https://ci.example.com:443", gw, true),
        ] {
            let r = isolated.check_server_reachable(ip(listen), address, gateway);
            assert_eq!(r.is_ok(), ok, "{listen} {address} {gateway:?}: {r:?}");
        }
        let err = isolated
            .check_server_reachable(ip("127.0.0.1"), local, gw)
            .unwrap_err();
        assert_eq!(
            err,
            UnreachableServer::LoopbackListener {
                listen: ip("127.0.0.1"),
                network: ISOLATED_NETWORK.into(),
                gateway: gw,
            }
        );
        let msg = err.to_string();
        for want in [
            "127.0.0.1",
            "`hodei`",
            "0.0.0.0",
            "172.18.0.1",
            "HODEI_DOCKER_NETWORK=host",
        ] {
            assert!(msg.contains(want), "{want} missing from {msg}");
        }
        assert!(matches!(
            ProviderError::from(err),
            ProviderError::InvalidConfig(m) if m.contains("127.0.0.1")
        ));
        let other = isolated
            .check_server_reachable(ip("10.1.2.3"), local, gw)
            .unwrap_err();
        assert!(other.to_string().contains("172.18.0.1"), "{other}");
        // The host network reaches a loopback server; bridge and named networks do not.
        let host = DockerProviderConfig::default().with_network_mode(NetworkMode::Host);
        assert!(
            host.check_server_reachable(ip("127.0.0.1"), local, None)
                .is_ok()
        );
        for mode in [NetworkMode::Bridge, NetworkMode::Named("n".into())] {
            let c = DockerProviderConfig::default().with_network_mode(mode);
            assert!(
                c.check_server_reachable(ip("127.0.0.1"), local, None)
                    .is_err()
            );
        }
    }
}
