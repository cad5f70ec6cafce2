//! Configuration of the [`KubernetesProvider`](super::KubernetesProvider).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use hodei_core::settings::Setting;
use hodei_core::switch::{EXPECTED, parse_switch};
use hodei_core::{ProviderConfig, ProviderError};

/// Environment variable naming the namespace of the worker pods.
pub const ENV_K8S_NAMESPACE: &str = "HODEI_K8S_NAMESPACE";
/// Environment variable naming a kubeconfig file (else in-cluster, else the default kubeconfig).
pub const ENV_K8S_KUBECONFIG: &str = "HODEI_K8S_KUBECONFIG";
/// Environment variable naming the worker image (falls back to `HODEI_WORKER_IMAGE`).
pub const ENV_K8S_IMAGE: &str = "HODEI_K8S_IMAGE";
/// Environment variable naming the worker image shared with the Docker provider.
pub const ENV_WORKER_IMAGE: &str = "HODEI_WORKER_IMAGE";
/// Environment variable setting the image pull policy (`Always`, `IfNotPresent`, `Never`).
pub const ENV_K8S_IMAGE_PULL_POLICY: &str = "HODEI_K8S_IMAGE_PULL_POLICY";
/// Environment variable capping the number of worker pods.
pub const ENV_K8S_MAX_WORKERS: &str = "HODEI_K8S_MAX_WORKERS";
/// Environment variable with extra pod labels, `k=v,k2=v2`.
pub const ENV_K8S_LABELS: &str = "HODEI_K8S_LABELS";
/// Environment variable with a node selector, `k=v,k2=v2`.
pub const ENV_K8S_NODE_SELECTOR: &str = "HODEI_K8S_NODE_SELECTOR";
/// Environment variable with tolerations, `key[=value]:Effect;…`.
pub const ENV_K8S_TOLERATIONS: &str = "HODEI_K8S_TOLERATIONS";
/// Environment variable naming the service account of the worker pods.
pub const ENV_K8S_SERVICE_ACCOUNT: &str = "HODEI_K8S_SERVICE_ACCOUNT";
/// Environment variable: seconds an ImagePullBackOff or Unschedulable pod may wait before it is an error.
pub const ENV_K8S_FAILURE_GRACE_SECS: &str = "HODEI_K8S_FAILURE_GRACE_SECS";
/// Environment variable: default `activeDeadlineSeconds` of a worker pod.
pub const ENV_K8S_ACTIVE_DEADLINE_SECS: &str = "HODEI_K8S_ACTIVE_DEADLINE_SECS";
/// Environment variable: `terminationGracePeriodSeconds` of a worker pod.
pub const ENV_K8S_TERMINATION_GRACE_SECS: &str = "HODEI_K8S_TERMINATION_GRACE_SECS";
/// Environment variable: client-side rate limit, requests per second.
pub const ENV_K8S_QPS: &str = "HODEI_K8S_QPS";
/// Environment variable: architectures the cluster's nodes run, `x86_64,aarch64`.
pub const ENV_K8S_ARCHITECTURES: &str = "HODEI_K8S_ARCHITECTURES";
/// Environment variable declaring that nodes offer `nvidia.com/gpu` (`1`/`true`).
pub const ENV_K8S_GPU: &str = "HODEI_K8S_GPU";

/// Every variable [`KubernetesProviderConfig::from_env`] reads.
pub const SETTINGS: &[Setting] = &[
    Setting::new(
        ENV_K8S_NAMESPACE,
        DEFAULT_NAMESPACE,
        "namespace of the worker pods",
    ),
    Setting::new(
        ENV_K8S_KUBECONFIG,
        "in-cluster, then ~/.kube/config",
        "kubeconfig file",
    ),
    Setting::new(
        ENV_K8S_IMAGE,
        "HODEI_WORKER_IMAGE",
        "worker image of the pods",
    ),
    Setting::new(
        ENV_WORKER_IMAGE,
        DEFAULT_IMAGE,
        "worker image shared with the Docker provider",
    ),
    Setting::new(
        ENV_K8S_IMAGE_PULL_POLICY,
        "IfNotPresent",
        "image pull policy (`Always`, `IfNotPresent`, `Never`)",
    ),
    Setting::new(
        ENV_K8S_MAX_WORKERS,
        "32",
        "most worker pods alive at once (per replica)",
    ),
    Setting::new(ENV_K8S_LABELS, "none", "extra pod labels, `k=v,k2=v2`"),
    Setting::new(ENV_K8S_NODE_SELECTOR, "none", "node selector, `k=v,k2=v2`"),
    Setting::new(
        ENV_K8S_TOLERATIONS,
        "none",
        "tolerations, `key[=value]:Effect;…`",
    ),
    Setting::new(
        ENV_K8S_SERVICE_ACCOUNT,
        "the namespace's default",
        "service account of the worker pods",
    ),
    Setting::new(
        ENV_K8S_FAILURE_GRACE_SECS,
        "45",
        "seconds an ImagePullBackOff or Unschedulable pod may wait before it is an error",
    ),
    Setting::new(
        ENV_K8S_ACTIVE_DEADLINE_SECS,
        "21600",
        "activeDeadlineSeconds of a worker pod",
    ),
    Setting::new(
        ENV_K8S_TERMINATION_GRACE_SECS,
        "40",
        "terminationGracePeriodSeconds of a worker pod",
    ),
    Setting::new(
        ENV_K8S_QPS,
        "client default",
        "client-side rate limit, requests per second",
    ),
    Setting::new(
        ENV_K8S_ARCHITECTURES,
        "the server's architecture",
        "architectures of the nodes, `x86_64,aarch64`",
    ),
    Setting::new(ENV_K8S_GPU, "off", "nodes offer `nvidia.com/gpu` (yes/no)"),
];
/// Default namespace of the worker pods.
pub const DEFAULT_NAMESPACE: &str = "hodei-workers";
/// Default worker image.
pub const DEFAULT_IMAGE: &str = "hodei-worker:latest";
/// What to do when the worker image cannot be pulled.
pub const IMAGE_HINT: &str = "build the worker image (scripts/docker/build-worker-image.sh) and \
push it to a registry the cluster can pull from, or load it into the nodes (kind load docker-image / \
k3s ctr images import); see docs/KUBERNETES.md";

/// One pod toleration.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Toleration {
    /// Taint key; empty with operator `Exists` tolerates everything.
    pub key: String,
    /// Taint value; `None` means operator `Exists`.
    pub value: Option<String>,
    /// `NoSchedule`, `PreferNoSchedule`, `NoExecute`, or `None` for any effect.
    pub effect: Option<String>,
}

impl Toleration {
    /// A toleration of `key=value` with `effect` (operator `Equal`).
    #[must_use]
    pub fn equal(key: impl Into<String>, value: impl Into<String>, effect: Option<&str>) -> Self {
        Self {
            key: key.into(),
            value: Some(value.into()),
            effect: effect.map(str::to_owned),
        }
    }

    /// A toleration of any value of `key` with `effect` (operator `Exists`).
    #[must_use]
    pub fn exists(key: impl Into<String>, effect: Option<&str>) -> Self {
        Self {
            key: key.into(),
            value: None,
            effect: effect.map(str::to_owned),
        }
    }

    /// Parses `key[=value][:Effect]`.
    ///
    /// # Errors
    /// [`ProviderError::InvalidConfig`] on an unknown effect or an empty key with a value.
    pub fn parse(s: &str) -> Result<Self, ProviderError> {
        let s = s.trim();
        let (kv, effect) = match s.rsplit_once(':') {
            Some((kv, e)) => (kv, Some(e.trim())),
            None => (s, None),
        };
        let effect = match effect {
            None | Some("") => None,
            Some(e @ ("NoSchedule" | "PreferNoSchedule" | "NoExecute")) => Some(e.to_owned()),
            Some(other) => {
                return Err(ProviderError::InvalidConfig(format!(
                    "toleration {s:?}: effect {other:?} is not NoSchedule, PreferNoSchedule or NoExecute"
                )));
            }
        };
        let (key, value) = match kv.split_once('=') {
            Some((k, v)) => (k.trim().to_owned(), Some(v.trim().to_owned())),
            None => (kv.trim().to_owned(), None),
        };
        if key.is_empty() && value.is_some() {
            return Err(ProviderError::InvalidConfig(format!(
                "toleration {s:?}: a value needs a key"
            )));
        }
        Ok(Self { key, value, effect })
    }
}

/// Retries of failed API calls (429, 5xx, connection errors).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct RetryConfig {
    /// Retries after the first attempt. Default 5.
    pub max_retries: u32,
    /// First pause; doubles each retry. Default 200 ms.
    pub base_delay: Duration,
    /// Longest pause (also caps a server's `Retry-After`). Default 10 s.
    pub max_delay: Duration,
}

impl Default for RetryConfig {
    fn default() -> Self {
        Self {
            max_retries: 5,
            base_delay: Duration::from_millis(200),
            max_delay: Duration::from_secs(10),
        }
    }
}

/// How the Kubernetes provider runs worker agents as pods.
///
/// ```
/// use hodei_providers::kubernetes::{KubernetesProviderConfig, Toleration};
/// let config = KubernetesProviderConfig::default()
///     .with_namespace("ci-workers")
///     .with_image("registry.example.com/hodei-worker:1.2")
///     .with_toleration(Toleration::equal("dedicated", "ci", Some("NoSchedule")))
///     .with_max_workers(50);
/// assert_eq!(config.namespace, "ci-workers");
/// ```
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct KubernetesProviderConfig {
    /// Unique provider name the server registers it under. Default `kubernetes`.
    pub name: String,
    /// Namespace of the worker pods and their secrets. Default `hodei-workers`.
    pub namespace: String,
    /// Kubeconfig file; `None` = in-cluster config, then the default kubeconfig.
    pub kubeconfig: Option<PathBuf>,
    /// Worker image (its entrypoint must be the `hodei-worker` agent).
    pub image: String,
    /// `imagePullPolicy` of the agent container. Default `IfNotPresent`.
    pub image_pull_policy: String,
    /// Names of `imagePullSecrets` in the namespace.
    pub image_pull_secrets: Vec<String>,
    /// Service account of the worker pods (`None` = the namespace default).
    /// Its token is never mounted: the agent needs no API access.
    pub service_account: Option<String>,
    /// Extra labels put on every pod and secret. They also scope the
    /// provider: orphan cleanup and the watcher consider only pods carrying all of them.
    pub labels: BTreeMap<String, String>,
    /// Node selector of every pod (the job's architecture is added as `kubernetes.io/arch`).
    pub node_selector: BTreeMap<String, String>,
    /// Tolerations of every pod.
    pub tolerations: Vec<Toleration>,
    /// Extra environment given to every agent (the spec's environment wins).
    pub extra_env: BTreeMap<String, String>,
    /// Most worker pods alive at once. Default 32.
    pub max_workers: u32,
    /// `terminationGracePeriodSeconds`: the agent gets this minus 10 s as its
    /// own shutdown grace, so it can finish killing jobs before the kubelet's SIGKILL. Default 40 s.
    pub termination_grace: Duration,
    /// `activeDeadlineSeconds` when the spec names no job timeout (`HODEI_JOB_TIMEOUT_SECS`
    /// in its environment). Default 6 h.
    pub active_deadline: Duration,
    /// How long a pod may stay in ImagePullBackOff / Unschedulable /
    /// CreateContainerConfigError before the status is an error and the watcher
    /// reports the worker `Exited` (which ends its provisioning). Default 45 s:
    /// below the control plane's registration timeout (60 s), so the typed
    /// reason arrives first.
    pub failure_grace: Duration,
    /// Unknown managed pods younger than this are not orphans yet (they may be
    /// being provisioned). Default 5 min.
    pub orphan_grace: Duration,
    /// UID (and GID) the agent runs as. Default 10001 (the `hodei` user of the worker image).
    pub run_as_user: i64,
    /// Whether the root filesystem is read-only (`/tmp` is an emptyDir). Default true.
    pub read_only_root_filesystem: bool,
    /// Largest CPU request one pod may get. Default 8.
    pub max_cpu_cores: f64,
    /// Largest memory request one pod may get, MiB. Default 16384.
    pub max_memory_mb: u64,
    /// Whether nodes offer `nvidia.com/gpu`. Default false.
    pub gpu: bool,
    /// Architectures of the cluster's nodes (Rust names: `x86_64`, `aarch64`). Default: the host's.
    pub architectures: Vec<String>,
    /// Client-side rate limit, requests per second. Default 20.
    pub qps: f64,
    /// Client-side burst. Default 40.
    pub burst: u32,
    /// Retries of failed calls.
    pub retry: RetryConfig,
    /// Cost of one CPU core for one hour (for the cost-aware strategy). Default 0.
    pub cpu_hour_cost: f64,
    /// Cost of one GiB of memory for one hour. Default 0.
    pub gib_hour_cost: f64,
}

impl Default for KubernetesProviderConfig {
    fn default() -> Self {
        Self {
            name: "kubernetes".to_owned(),
            namespace: DEFAULT_NAMESPACE.to_owned(),
            kubeconfig: None,
            image: DEFAULT_IMAGE.to_owned(),
            image_pull_policy: "IfNotPresent".to_owned(),
            image_pull_secrets: Vec::new(),
            service_account: None,
            labels: BTreeMap::new(),
            node_selector: BTreeMap::new(),
            tolerations: Vec::new(),
            extra_env: BTreeMap::new(),
            max_workers: 32,
            termination_grace: Duration::from_secs(40),
            active_deadline: Duration::from_secs(6 * 3600),
            failure_grace: Duration::from_secs(45),
            orphan_grace: Duration::from_secs(300),
            run_as_user: 10001,
            read_only_root_filesystem: true,
            max_cpu_cores: 8.0,
            max_memory_mb: 16384,
            gpu: false,
            architectures: vec![std::env::consts::ARCH.to_owned()],
            qps: 20.0,
            burst: 40,
            retry: RetryConfig::default(),
            cpu_hour_cost: 0.0,
            gib_hour_cost: 0.0,
        }
    }
}

fn invalid(var: &str, value: &str, want: &str) -> ProviderError {
    ProviderError::InvalidConfig(format!("{var}={value:?} is not {want}"))
}

fn parse_pairs(var: &str, s: &str) -> Result<BTreeMap<String, String>, ProviderError> {
    let mut out = BTreeMap::new();
    for pair in s.split(',').filter(|p| !p.trim().is_empty()) {
        let (k, v) = pair
            .split_once('=')
            .ok_or_else(|| invalid(var, s, "k=v,k2=v2"))?;
        out.insert(k.trim().to_owned(), v.trim().to_owned());
    }
    Ok(out)
}

fn parse_secs(var: &str, s: &str) -> Result<Duration, ProviderError> {
    s.trim()
        .parse::<u64>()
        .map(Duration::from_secs)
        .map_err(|_| invalid(var, s, "a number of seconds"))
}

impl KubernetesProviderConfig {
    /// Defaults overridden by the `HODEI_K8S_*` variables (see the constants
    /// of this module) and `HODEI_WORKER_IMAGE`.
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
        let get = |k: &str| {
            lookup(k)
                .map(|s| s.trim().to_owned())
                .filter(|s| !s.is_empty())
        };
        let mut c = Self::default();
        if let Some(ns) = get(ENV_K8S_NAMESPACE) {
            c.namespace = ns;
        }
        c.kubeconfig = get(ENV_K8S_KUBECONFIG).map(PathBuf::from);
        if let Some(image) = get(ENV_K8S_IMAGE).or_else(|| get(ENV_WORKER_IMAGE)) {
            c.image = image;
        }
        if let Some(p) = get(ENV_K8S_IMAGE_PULL_POLICY) {
            if !matches!(p.as_str(), "Always" | "IfNotPresent" | "Never") {
                return Err(invalid(
                    ENV_K8S_IMAGE_PULL_POLICY,
                    &p,
                    "Always, IfNotPresent or Never",
                ));
            }
            c.image_pull_policy = p;
        }
        if let Some(max) = get(ENV_K8S_MAX_WORKERS) {
            c.max_workers = match max.parse::<u32>() {
                Ok(n) if n > 0 => n,
                _ => return Err(invalid(ENV_K8S_MAX_WORKERS, &max, "a positive integer")),
            };
        }
        if let Some(l) = get(ENV_K8S_LABELS) {
            c.labels = parse_pairs(ENV_K8S_LABELS, &l)?;
        }
        if let Some(l) = get(ENV_K8S_NODE_SELECTOR) {
            c.node_selector = parse_pairs(ENV_K8S_NODE_SELECTOR, &l)?;
        }
        if let Some(t) = get(ENV_K8S_TOLERATIONS) {
            c.tolerations = t
                .split(';')
                .filter(|p| !p.trim().is_empty())
                .map(Toleration::parse)
                .collect::<Result<_, _>>()
                .map_err(|e| invalid(ENV_K8S_TOLERATIONS, &t, &format!("valid ({e})")))?;
        }
        c.service_account = get(ENV_K8S_SERVICE_ACCOUNT);
        if let Some(s) = get(ENV_K8S_FAILURE_GRACE_SECS) {
            c.failure_grace = parse_secs(ENV_K8S_FAILURE_GRACE_SECS, &s)?;
        }
        if let Some(s) = get(ENV_K8S_ACTIVE_DEADLINE_SECS) {
            c.active_deadline = parse_secs(ENV_K8S_ACTIVE_DEADLINE_SECS, &s)?;
            if c.active_deadline.is_zero() {
                return Err(invalid(ENV_K8S_ACTIVE_DEADLINE_SECS, &s, "positive"));
            }
        }
        if let Some(s) = get(ENV_K8S_TERMINATION_GRACE_SECS) {
            c.termination_grace = parse_secs(ENV_K8S_TERMINATION_GRACE_SECS, &s)?;
        }
        if let Some(q) = get(ENV_K8S_QPS) {
            c.qps = match q.parse::<f64>() {
                Ok(n) if n > 0.0 && n.is_finite() => n,
                _ => return Err(invalid(ENV_K8S_QPS, &q, "a positive number")),
            };
            c.burst = c.burst.max(c.qps.ceil() as u32);
        }
        if let Some(a) = get(ENV_K8S_ARCHITECTURES) {
            c.architectures = a
                .split(',')
                .map(|s| s.trim().to_owned())
                .filter(|s| !s.is_empty())
                .collect();
        }
        if let Some(g) = get(ENV_K8S_GPU) {
            c.gpu = parse_switch(&g).ok_or_else(|| invalid(ENV_K8S_GPU, &g, EXPECTED))?;
        }
        Ok(c)
    }

    /// Applies a stored [`ProviderConfig::Kubernetes`] over `self`
    /// (namespace, kubeconfig, image, labels, node selector, tolerations).
    ///
    /// # Errors
    /// [`ProviderError::InvalidConfig`] when `config` is another provider's or a toleration does not parse.
    pub fn apply_provider_config(mut self, config: &ProviderConfig) -> Result<Self, ProviderError> {
        let ProviderConfig::Kubernetes {
            namespace,
            kubeconfig,
            image,
            labels,
            node_selector,
            tolerations,
        } = config
        else {
            return Err(ProviderError::InvalidConfig(format!(
                "a {} provider configuration is not a kubernetes one",
                config.provider_type()
            )));
        };
        if !namespace.is_empty() {
            self.namespace.clone_from(namespace);
        }
        if let Some(k) = kubeconfig {
            self.kubeconfig = Some(PathBuf::from(k));
        }
        if !image.is_empty() {
            self.image.clone_from(image);
        }
        self.labels.extend(labels.clone());
        self.node_selector.extend(node_selector.clone());
        for t in tolerations {
            self.tolerations.push(Toleration::parse(t)?);
        }
        Ok(self)
    }

    /// This configuration as a stored [`ProviderConfig::Kubernetes`].
    #[must_use]
    pub fn to_provider_config(&self) -> ProviderConfig {
        ProviderConfig::Kubernetes {
            namespace: self.namespace.clone(),
            kubeconfig: self
                .kubeconfig
                .as_ref()
                .map(|p| p.to_string_lossy().into_owned()),
            image: self.image.clone(),
            labels: self.labels.clone(),
            node_selector: self.node_selector.clone(),
            tolerations: self
                .tolerations
                .iter()
                .map(|t| {
                    let mut s = t.key.clone();
                    if let Some(v) = &t.value {
                        s.push('=');
                        s.push_str(v);
                    }
                    if let Some(e) = &t.effect {
                        s.push(':');
                        s.push_str(e);
                    }
                    s
                })
                .collect(),
        }
    }

    /// Sets the provider name.
    #[must_use]
    pub fn with_name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// Sets the namespace.
    #[must_use]
    pub fn with_namespace(mut self, ns: impl Into<String>) -> Self {
        self.namespace = ns.into();
        self
    }

    /// Sets the kubeconfig path.
    #[must_use]
    pub fn with_kubeconfig(mut self, path: impl Into<PathBuf>) -> Self {
        self.kubeconfig = Some(path.into());
        self
    }

    /// Sets the worker image.
    #[must_use]
    pub fn with_image(mut self, image: impl Into<String>) -> Self {
        self.image = image.into();
        self
    }

    /// Sets the maximum number of live pods.
    #[must_use]
    pub fn with_max_workers(mut self, n: u32) -> Self {
        self.max_workers = n;
        self
    }

    /// Adds a label put on (and required of) every pod.
    #[must_use]
    pub fn with_label(mut self, k: impl Into<String>, v: impl Into<String>) -> Self {
        self.labels.insert(k.into(), v.into());
        self
    }

    /// Adds a node selector entry.
    #[must_use]
    pub fn with_node_selector(mut self, k: impl Into<String>, v: impl Into<String>) -> Self {
        self.node_selector.insert(k.into(), v.into());
        self
    }

    /// Adds a toleration.
    #[must_use]
    pub fn with_toleration(mut self, t: Toleration) -> Self {
        self.tolerations.push(t);
        self
    }

    /// Adds an environment variable given to every agent.
    #[must_use]
    pub fn with_env(mut self, k: impl Into<String>, v: impl Into<String>) -> Self {
        self.extra_env.insert(k.into(), v.into());
        self
    }

    /// Sets the grace before ImagePullBackOff / Unschedulable become errors.
    #[must_use]
    pub fn with_failure_grace(mut self, d: Duration) -> Self {
        self.failure_grace = d;
        self
    }

    /// Sets the orphan grace.
    #[must_use]
    pub fn with_orphan_grace(mut self, d: Duration) -> Self {
        self.orphan_grace = d;
        self
    }

    /// Sets the termination grace period.
    #[must_use]
    pub fn with_termination_grace(mut self, d: Duration) -> Self {
        self.termination_grace = d;
        self
    }

    /// Sets the retry policy.
    #[must_use]
    pub fn with_retry(mut self, retry: RetryConfig) -> Self {
        self.retry = retry;
        self
    }

    /// Sets the client-side rate limit.
    #[must_use]
    pub fn with_rate_limit(mut self, qps: f64, burst: u32) -> Self {
        self.qps = qps;
        self.burst = burst.max(1);
        self
    }

    /// Declares that nodes offer GPUs.
    #[must_use]
    pub fn with_gpu(mut self, gpu: bool) -> Self {
        self.gpu = gpu;
        self
    }

    /// Sets the architectures of the cluster's nodes.
    #[must_use]
    pub fn with_architectures(
        mut self,
        archs: impl IntoIterator<Item = impl Into<String>>,
    ) -> Self {
        self.architectures = archs.into_iter().map(Into::into).collect();
        self
    }

    /// Checks values the API server would refuse later.
    ///
    /// # Errors
    /// [`ProviderError::InvalidConfig`] saying which value is wrong.
    pub fn validate(&self) -> Result<(), ProviderError> {
        if !is_dns_label(&self.namespace) {
            return Err(ProviderError::InvalidConfig(format!(
                "namespace {:?} is not a DNS label (lower-case alphanumerics and '-', at most 63)",
                self.namespace
            )));
        }
        if self.image.trim().is_empty() {
            return Err(ProviderError::InvalidConfig("empty worker image".into()));
        }
        if !(self.qps > 0.0 && self.qps.is_finite()) || self.burst == 0 {
            return Err(ProviderError::InvalidConfig(format!(
                "rate limit {} qps, burst {} must be positive",
                self.qps, self.burst
            )));
        }
        for (k, v) in self.labels.iter().chain(&self.node_selector) {
            if !super::objects::is_label_key(k) || !super::objects::is_label_value(v) {
                return Err(ProviderError::InvalidConfig(format!(
                    "label/selector {k}={v} is not a valid Kubernetes label"
                )));
            }
        }
        Ok(())
    }
}

/// RFC 1123 label: lower-case alphanumerics and `-`, starts and ends alphanumeric, ≤ 63.
pub(crate) fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

#[cfg(test)]
mod tests {

    #[test]
    fn the_settings_table_lists_every_variable_read() {
        let unlisted = hodei_core::settings::unlisted(SETTINGS, |get| {
            KubernetesProviderConfig::from_lookup(get)
        });
        assert!(
            unlisted.is_empty(),
            "read but not in SETTINGS: {unlisted:?}"
        );
    }
    use super::*;

    #[test]
    fn env_overrides_defaults() {
        let c = KubernetesProviderConfig::from_lookup(|k| match k {
            ENV_K8S_NAMESPACE => Some("ci".into()),
            ENV_K8S_KUBECONFIG => Some("/tmp/kc".into()),
            ENV_WORKER_IMAGE => Some("img:1".into()),
            ENV_K8S_MAX_WORKERS => Some("3".into()),
            ENV_K8S_LABELS => Some("team=a, env=ci".into()),
            ENV_K8S_NODE_SELECTOR => Some("pool=ci".into()),
            ENV_K8S_TOLERATIONS => Some("dedicated=ci:NoSchedule; gpu:NoExecute".into()),
            ENV_K8S_FAILURE_GRACE_SECS => Some("7".into()),
            ENV_K8S_GPU => Some("yes".into()),
            _ => None,
        })
        .unwrap();
        assert_eq!(c.namespace, "ci");
        assert_eq!(c.kubeconfig, Some(PathBuf::from("/tmp/kc")));
        assert_eq!(c.image, "img:1");
        assert_eq!(c.max_workers, 3);
        assert_eq!(c.labels.get("env").map(String::as_str), Some("ci"));
        assert_eq!(c.node_selector.get("pool").map(String::as_str), Some("ci"));
        assert_eq!(
            c.tolerations,
            vec![
                Toleration::equal("dedicated", "ci", Some("NoSchedule")),
                Toleration::exists("gpu", Some("NoExecute")),
            ]
        );
        assert_eq!(c.failure_grace, Duration::from_secs(7));
        assert!(c.gpu);
        let d = KubernetesProviderConfig::from_lookup(|_| None).unwrap();
        assert_eq!(d, KubernetesProviderConfig::default());
        assert_eq!(d.namespace, DEFAULT_NAMESPACE);
        d.validate().unwrap();
    }

    #[test]
    fn bad_values_name_the_variable() {
        for (var, bad) in [
            (ENV_K8S_MAX_WORKERS, "0"),
            (ENV_K8S_FAILURE_GRACE_SECS, "soon"),
            (ENV_K8S_GPU, "maybe"),
            (ENV_K8S_LABELS, "novalue"),
            (ENV_K8S_TOLERATIONS, "a=b:Sometimes"),
            (ENV_K8S_IMAGE_PULL_POLICY, "Sometimes"),
            (ENV_K8S_QPS, "-1"),
        ] {
            let err = KubernetesProviderConfig::from_lookup(|k| (k == var).then(|| bad.to_owned()))
                .unwrap_err();
            assert!(
                matches!(&err, ProviderError::InvalidConfig(m) if m.contains(var)),
                "{err}"
            );
        }
        let bad_ns = KubernetesProviderConfig::default().with_namespace("Not_A_Label");
        assert!(bad_ns.validate().is_err());
    }

    #[test]
    fn provider_config_round_trips() {
        let c = KubernetesProviderConfig::default()
            .with_namespace("w")
            .with_label("team", "a")
            .with_toleration(Toleration::equal("k", "v", Some("NoSchedule")))
            .with_toleration(Toleration::exists("", None));
        let stored = c.to_provider_config();
        let back = KubernetesProviderConfig::default()
            .apply_provider_config(&stored)
            .unwrap();
        assert_eq!(back.namespace, "w");
        assert_eq!(back.tolerations, c.tolerations);
        assert_eq!(back.labels, c.labels);
        let docker = ProviderConfig::Docker {
            image: "i".into(),
            docker_host: None,
            network: None,
        };
        assert!(
            KubernetesProviderConfig::default()
                .apply_provider_config(&docker)
                .is_err()
        );
    }
}
