//! Configuration of the [`DockerProvider`](super::DockerProvider).

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use hodei_core::ProviderError;

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
/// The default worker image, built by `scripts/docker/build-worker-image.sh`.
pub const DEFAULT_IMAGE: &str = "hodei-worker:latest";
/// What to do when the worker image is missing.
pub const IMAGE_HINT: &str = "run scripts/docker/build-worker-image.sh";

/// How worker containers are networked, and so how the agent reaches the control plane.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum NetworkMode {
    /// `--network host` (default): the container shares the host's network, a
    /// server on `127.0.0.1:PORT` is reached as is. The fastest start on Linux.
    #[default]
    Host,
    /// The default bridge network with `host.docker.internal:host-gateway`:
    /// a loopback server address (`127.0.0.1`, `localhost`, `0.0.0.0`, `[::1]`)
    /// is rewritten to `host.docker.internal`. The server must then listen on
    /// `0.0.0.0` (or the `docker0` address): a server bound only to
    /// `127.0.0.1` refuses bridged containers.
    Bridge,
    /// A user-defined network by name; the server address is used as is.
    Named(String),
}

impl NetworkMode {
    /// Parses `host`, `bridge` or a network name.
    #[must_use]
    pub fn parse(s: &str) -> Self {
        match s.trim() {
            "" | "host" => NetworkMode::Host,
            "bridge" | "default" => NetworkMode::Bridge,
            other => NetworkMode::Named(other.to_owned()),
        }
    }

    /// The Docker `NetworkMode` value.
    #[must_use]
    pub fn as_docker(&self) -> &str {
        match self {
            NetworkMode::Host => "host",
            NetworkMode::Bridge => "bridge",
            NetworkMode::Named(n) => n,
        }
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
///     .with_network_mode(NetworkMode::Bridge)
///     .with_max_workers(8);
/// assert_eq!(config.name, "docker");
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
    /// Network of the worker containers. Default [`NetworkMode::Host`].
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
            network_mode: NetworkMode::Host,
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
            c.gpu = match g.trim().to_ascii_lowercase().as_str() {
                "1" | "true" | "yes" | "on" => true,
                "0" | "false" | "no" | "off" => false,
                _ => return Err(invalid(ENV_DOCKER_GPU, &g, "a boolean")),
            };
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

    /// The server address the agent in a container must use: on the bridge
    /// network a loopback host becomes `host.docker.internal`.
    #[must_use]
    pub fn server_address_for_container(&self, address: &str) -> String {
        match self.network_mode {
            NetworkMode::Bridge => rewrite_loopback(address, "host.docker.internal"),
            NetworkMode::Host | NetworkMode::Named(_) => address.to_owned(),
        }
    }
}

fn invalid(var: &str, value: &str, want: &str) -> ProviderError {
    ProviderError::InvalidConfig(format!("{var}={value:?} is not {want}"))
}

/// Replaces a loopback host of a URL (`http://127.0.0.1:50051`) by `host`.
fn rewrite_loopback(address: &str, host: &str) -> String {
    let (scheme, rest) = match address.split_once("://") {
        Some((s, r)) => (Some(s), r),
        None => (None, address),
    };
    let (authority, path) = match rest.find('/') {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    let (h, port) = if let Some(stripped) = authority.strip_prefix('[') {
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
    if !matches!(h, "127.0.0.1" | "localhost" | "0.0.0.0" | "::1" | "::") {
        return address.to_owned();
    }
    match scheme {
        Some(s) => format!("{s}://{host}{port}{path}"),
        None => format!("{host}{port}{path}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let host = DockerProviderConfig::default();
        assert_eq!(
            host.server_address_for_container("http://127.0.0.1:50051"),
            "http://127.0.0.1:50051"
        );
        assert_eq!(NetworkMode::parse("my-net").as_docker(), "my-net");
    }
}
