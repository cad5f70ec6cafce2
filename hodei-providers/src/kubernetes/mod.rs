//! The Kubernetes provider: each worker is one Pod (not a Deployment) of the
//! worker image in the workers' namespace (default `hodei-workers`), talking
//! to the API server with [kube] and [k8s-openapi](k8s_openapi).
//!
//! - **Client**: from [`kubeconfig`](KubernetesProviderConfig::kubeconfig)
//!   (`HODEI_K8S_KUBECONFIG`) when set, else the in-cluster service account,
//!   else the default kubeconfig (`~/.kube/config`, `KUBECONFIG`).
//! - **Pod** (see [`build_pod`]): named `hodei-worker-<worker id>`, labelled
//!   `hodei.worker-id`, `hodei.provider-id`, `hodei.managed=true` plus the
//!   configured labels; `restartPolicy: Never`; requests = limits for cpu,
//!   memory and ephemeral-storage from the job's resources, `nvidia.com/gpu`
//!   when a GPU is required; `kubernetes.io/arch` node selector for the job's
//!   architecture; configured node selector and tolerations;
//!   `activeDeadlineSeconds` from the job timeout; non-root, read-only root
//!   filesystem (`/tmp` is an emptyDir), no privilege escalation, all
//!   capabilities dropped, RuntimeDefault seccomp, no service-account token.
//! - **Token**: the OTP is in a per-worker immutable Secret referenced by the
//!   pod (`secretKeyRef`), never a literal in the pod spec; the pod becomes its
//!   owner, so the Secret is garbage-collected with it.
//! - **Status**: pod phase and container state → [`WorkerState`]; a pod stuck
//!   in ImagePullBackOff, Unschedulable or CreateContainerConfigError longer
//!   than [`failure_grace`](KubernetesProviderConfig::failure_grace) is a clear
//!   error instead of a worker that never comes ([`worker_state`]).
//! - **Events**: a `kube::runtime::watcher` on this provider's pods (by label)
//!   turns pod changes into [`WorkerEvent`]s; a pod deleted or evicted behind
//!   Hodei's back is an `Exited` at once. It measures create → running for the
//!   start-up moving average.
//! - **Orphans**: [`KubernetesProvider::cleanup_orphans`] deletes managed pods
//!   (and token Secrets) the registry does not know, after
//!   [`orphan_grace`](KubernetesProviderConfig::orphan_grace).
//! - **API etiquette**: every call goes through a client-side token bucket
//!   ([`qps`](KubernetesProviderConfig::qps)/[`burst`](KubernetesProviderConfig::burst))
//!   and retries 429 / 5xx / connection errors with capped exponential backoff
//!   (honouring `retryAfterSeconds`); the watcher uses kube's default backoff.
//!
//! ```no_run
//! use hodei_core::provider::WorkerProvider;
//! use hodei_providers::kubernetes::{KubernetesProvider, KubernetesProviderConfig};
//! # async fn demo() -> Result<(), hodei_core::ProviderError> {
//! let provider = KubernetesProvider::connect(KubernetesProviderConfig::from_env()?).await?;
//! let provider: std::sync::Arc<dyn WorkerProvider> = std::sync::Arc::new(provider);
//! assert_eq!(provider.name(), "kubernetes");
//! # Ok(()) }
//! ```

pub mod config;
mod events;
mod objects;
mod retry;
mod state;

pub use config::{
    DEFAULT_IMAGE, DEFAULT_NAMESPACE, ENV_K8S_ACTIVE_DEADLINE_SECS, ENV_K8S_ARCHITECTURES,
    ENV_K8S_FAILURE_GRACE_SECS, ENV_K8S_GPU, ENV_K8S_IMAGE, ENV_K8S_IMAGE_PULL_POLICY,
    ENV_K8S_KUBECONFIG, ENV_K8S_LABELS, ENV_K8S_MAX_WORKERS, ENV_K8S_NAMESPACE,
    ENV_K8S_NODE_SELECTOR, ENV_K8S_QPS, ENV_K8S_SERVICE_ACCOUNT, ENV_K8S_TERMINATION_GRACE_SECS,
    ENV_K8S_TOLERATIONS, ENV_WORKER_IMAGE, IMAGE_HINT, KubernetesProviderConfig, RetryConfig,
    Toleration,
};
pub use objects::{
    AGENT_CONTAINER, AGENT_GRACE_MARGIN, DEADLINE_ALLOWANCE, ENV_JOB_TIMEOUT_SECS, GPU_RESOURCE,
    LABEL_MANAGED, LABEL_PROVIDER_ID, LABEL_WORKER_ID, OTP_KEY, POD_PREFIX, active_deadline,
    build_pod, build_secret, is_label_key, is_label_value, k8s_arch, owner_patch, pod_name,
    scope_selector, secret_name, worker_labels,
};
pub use state::{
    PodProblem, agent_status, is_running, pod_age, pod_exit, pod_problem, worker_state,
};

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use futures::stream::{BoxStream, StreamExt};
use hodei_core::provider::{
    CostEstimate, HealthStatus, ResourceUsage, WorkerCost, WorkerEvent, WorkerEventSource,
    WorkerHealth, WorkerLifecycle, WorkerLogs, WorkerMetrics, WorkerProviderIdentity,
};
use hodei_core::{
    JobSpec, ProviderCapabilities, ProviderError, ProviderId, ProviderType, WorkerHandle, WorkerId,
    WorkerSpec, WorkerState,
};
use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SelfSubjectAccessReview, SelfSubjectAccessReviewSpec,
};
use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::api::{Api, DeleteParams, ListParams, LogParams, Patch, PatchParams, PostParams};
use tokio::sync::broadcast;
use tokio::task::JoinHandle;
use tokio_stream::wrappers::BroadcastStream;

use retry::{RateLimiter, classify, status_code, with_retry};

/// Start-up time assumed until a pod start has been measured.
pub const DEFAULT_STARTUP: Duration = Duration::from_secs(5);

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding one of these short locks leaves consistent data.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// How far the watcher has seen a worker's pod go.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Stage {
    Created,
    Started,
    Exited,
}

/// State shared by the provider and its watcher task.
struct Shared {
    id: ProviderId,
    config: KubernetesProviderConfig,
    client: kube::Client,
    limiter: RateLimiter,
    events: broadcast::Sender<WorkerEvent>,
    /// Workers whose pod exists (for `max_workers`).
    live: Mutex<HashSet<WorkerId>>,
    /// Workers being destroyed on request: their end is not an `Exited`.
    destroying: Mutex<HashSet<WorkerId>>,
    /// When each pod was created, until it runs (start-up measurement).
    created_at: Mutex<HashMap<WorkerId, Instant>>,
    /// What the watcher has reported per worker.
    stages: Mutex<HashMap<WorkerId, Stage>>,
    /// Pods stuck (image pull, scheduling, container config) but still within
    /// `failure_grace`: their latest version, looked at again when it ends.
    stuck: Mutex<HashMap<WorkerId, Pod>>,
    startup: Mutex<Option<Duration>>,
}

impl Shared {
    fn record_startup(&self, took: Duration) {
        let mut s = lock(&self.startup);
        *s = Some(match *s {
            None => took,
            Some(avg) => avg.mul_f64(0.7) + took.mul_f64(0.3),
        });
    }

    fn pods(&self) -> Api<Pod> {
        Api::namespaced(self.client.clone(), &self.config.namespace)
    }

    fn secrets(&self) -> Api<Secret> {
        Api::namespaced(self.client.clone(), &self.config.namespace)
    }

    async fn call<T, F, Fut>(&self, what: &str, call: F) -> Result<T, kube::Error>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, kube::Error>>,
    {
        with_retry(&self.limiter, &self.config.retry, what, call).await
    }
}

/// Runs each worker as a Kubernetes Pod of the worker image. See the [module docs](self).
pub struct KubernetesProvider {
    shared: Arc<Shared>,
    watch_task: JoinHandle<()>,
}

impl std::fmt::Debug for KubernetesProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubernetesProvider")
            .field("id", &self.shared.id)
            .field("config", &self.shared.config)
            .field("live_workers", &lock(&self.shared.live).len())
            .finish_non_exhaustive()
    }
}

impl Drop for KubernetesProvider {
    fn drop(&mut self) {
        self.watch_task.abort();
    }
}

/// The client configuration: kubeconfig file when set, else in-cluster, else
/// the default kubeconfig.
async fn kube_config(cfg: &KubernetesProviderConfig) -> Result<kube::Config, ProviderError> {
    use kube::config::{KubeConfigOptions, Kubeconfig};
    if let Some(path) = &cfg.kubeconfig {
        let kc = Kubeconfig::read_from(path).map_err(|e| {
            ProviderError::InvalidConfig(format!(
                "{ENV_K8S_KUBECONFIG}={}: cannot read kubeconfig: {e}",
                path.display()
            ))
        })?;
        return kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
            .await
            .map_err(|e| {
                ProviderError::InvalidConfig(format!(
                    "{ENV_K8S_KUBECONFIG}={}: unusable kubeconfig: {e}",
                    path.display()
                ))
            });
    }
    match kube::Config::incluster() {
        Ok(c) => Ok(c),
        Err(in_cluster) => kube::Config::from_kubeconfig(&KubeConfigOptions::default())
            .await
            .map_err(|e| {
                ProviderError::InvalidConfig(format!(
                    "no Kubernetes client configuration: not in a cluster ({in_cluster}) and no \
                     usable default kubeconfig ({e}); set {ENV_K8S_KUBECONFIG}"
                ))
            }),
    }
}

impl KubernetesProvider {
    /// Builds the client (kubeconfig, in-cluster or default) with a new
    /// provider id. No API call is made: an unreachable cluster makes the
    /// health check fail, not this.
    ///
    /// # Errors
    /// [`ProviderError::InvalidConfig`] when no client configuration is usable
    /// or the configuration is invalid.
    pub async fn connect(config: KubernetesProviderConfig) -> Result<Self, ProviderError> {
        Self::connect_with_id(ProviderId::new(), config).await
    }

    /// Like [`connect`](Self::connect) with a given provider id (as stored by the control plane).
    ///
    /// # Errors
    /// As [`connect`](Self::connect).
    pub async fn connect_with_id(
        id: ProviderId,
        config: KubernetesProviderConfig,
    ) -> Result<Self, ProviderError> {
        config.validate()?;
        let kc = kube_config(&config).await?;
        let client = kube::Client::try_from(kc).map_err(|e| {
            ProviderError::InvalidConfig(format!("cannot build the Kubernetes client: {e}"))
        })?;
        Self::with_client(id, config, client)
    }

    /// A provider over a given client (a host's own, or kube's mock service in tests).
    /// Starts the pod watcher; must be called inside a tokio runtime.
    ///
    /// # Errors
    /// [`ProviderError::InvalidConfig`] when the configuration is invalid.
    pub fn with_client(
        id: ProviderId,
        config: KubernetesProviderConfig,
        client: kube::Client,
    ) -> Result<Self, ProviderError> {
        config.validate()?;
        let (events, _) = broadcast::channel(1024);
        let shared = Arc::new(Shared {
            id,
            limiter: RateLimiter::new(config.qps, config.burst),
            config,
            client,
            events,
            live: Mutex::new(HashSet::new()),
            destroying: Mutex::new(HashSet::new()),
            created_at: Mutex::new(HashMap::new()),
            stages: Mutex::new(HashMap::new()),
            stuck: Mutex::new(HashMap::new()),
            startup: Mutex::new(None),
        });
        let watch_task = tokio::spawn(events::follow_pods(Arc::clone(&shared)));
        Ok(Self { shared, watch_task })
    }

    /// Its configuration.
    #[must_use]
    pub fn config(&self) -> &KubernetesProviderConfig {
        &self.shared.config
    }

    /// Worker pods of this provider alive now, as far as it knows.
    #[must_use]
    pub fn live_workers(&self) -> usize {
        lock(&self.shared.live).len()
    }

    /// Records a measured start-up time. The watcher records create → running
    /// itself; a host may add create → agent registered. The estimate is an
    /// exponential moving average (weight 0.3 on the newest).
    pub fn record_startup(&self, took: Duration) {
        self.shared.record_startup(took);
    }

    /// Deletes every pod labelled `hodei.managed=true` (and carrying the
    /// configured [`labels`](KubernetesProviderConfig::labels)) in the
    /// namespace whose worker id is not in `known` and that is older than
    /// [`orphan_grace`](KubernetesProviderConfig::orphan_grace), and likewise
    /// leftover token Secrets. Returns the names of the deleted objects. Call
    /// it at start and periodically with the ids of the workers the registry knows.
    ///
    /// # Errors
    /// [`ProviderError::Unavailable`] when the API cannot be reached, or the
    /// classified API error.
    pub async fn cleanup_orphans(
        &self,
        known: &HashSet<WorkerId>,
    ) -> Result<Vec<String>, ProviderError> {
        let shared = &self.shared;
        let selector = scope_selector(&shared.config, None);
        let lp = ListParams::default().labels(&selector);
        let now = k8s_openapi::jiff::Timestamp::now();
        let grace = shared.config.orphan_grace;
        let is_orphan = |labels: Option<&std::collections::BTreeMap<String, String>>,
                         created: Option<&k8s_openapi::apimachinery::pkg::apis::meta::v1::Time>|
         -> bool {
            let worker = labels
                .and_then(|l| l.get(LABEL_WORKER_ID))
                .and_then(|w| WorkerId::parse(w).ok());
            if worker.is_some_and(|w| known.contains(&w)) {
                return false;
            }
            let age = created
                .and_then(|t| Duration::try_from(now.duration_since(t.0)).ok())
                .unwrap_or(Duration::ZERO);
            age >= grace
        };
        let mut removed = Vec::new();
        let pods_api = shared.pods();
        let pods = shared
            .call("list pods", || pods_api.list(&lp))
            .await
            .map_err(|e| classify(e, "list pods"))?;
        let dp = DeleteParams {
            grace_period_seconds: u32::try_from(shared.config.termination_grace.as_secs()).ok(),
            ..DeleteParams::background()
        };
        for pod in pods.items {
            if !is_orphan(
                pod.metadata.labels.as_ref(),
                pod.metadata.creation_timestamp.as_ref(),
            ) {
                continue;
            }
            let Some(name) = pod.metadata.name.clone() else {
                continue;
            };
            match shared
                .call("delete orphan pod", || pods_api.delete(&name, &dp))
                .await
            {
                Ok(_) => {}
                Err(e) if status_code(&e) == Some(404) => {}
                Err(e) => return Err(classify(e, "delete orphan pod")),
            }
            if let Some(w) = events::pod_worker(&pod) {
                lock(&shared.live).remove(&w);
            }
            tracing::warn!(pod = %name, "deleted an orphaned worker pod");
            removed.push(name);
        }
        let secrets_api = shared.secrets();
        let secrets = shared
            .call("list secrets", || secrets_api.list(&lp))
            .await
            .map_err(|e| classify(e, "list secrets"))?;
        for s in secrets.items {
            if !is_orphan(
                s.metadata.labels.as_ref(),
                s.metadata.creation_timestamp.as_ref(),
            ) {
                continue;
            }
            let Some(name) = s.metadata.name.clone() else {
                continue;
            };
            let plain = DeleteParams::default();
            match shared
                .call("delete orphan secret", || secrets_api.delete(&name, &plain))
                .await
            {
                Ok(_) => {}
                Err(e) if status_code(&e) == Some(404) => {}
                Err(e) => return Err(classify(e, "delete orphan secret")),
            }
            tracing::warn!(secret = %name, "deleted an orphaned worker token secret");
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
                "kubernetes provider `{}` runs {} of at most {max} worker pods",
                self.shared.config.name,
                live.len()
            )));
        }
        live.insert(worker_id);
        Ok(())
    }

    /// Creates the token Secret; a leftover one of the same name (an earlier
    /// attempt) is replaced.
    async fn create_secret(&self, spec: &WorkerSpec) -> Result<(), ProviderError> {
        let shared = &self.shared;
        let api = shared.secrets();
        let secret = build_secret(&shared.config, shared.id, spec);
        let pp = PostParams::default();
        match shared
            .call("create secret", || api.create(&pp, &secret))
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if status_code(&e) == Some(409) => {
                let name = secret_name(spec.worker_id);
                tracing::debug!(secret = %name, "token secret exists (earlier attempt); replacing it");
                let plain = DeleteParams::default();
                match shared
                    .call("delete stale secret", || api.delete(&name, &plain))
                    .await
                {
                    Ok(_) => {}
                    Err(e) if status_code(&e) == Some(404) => {}
                    Err(e) => return Err(classify(e, "delete stale secret")),
                }
                shared
                    .call("create secret", || api.create(&pp, &secret))
                    .await
                    .map(|_| ())
                    .map_err(|e| classify(e, "create secret"))
            }
            Err(e) if status_code(&e) == Some(404) => Err(self.namespace_missing(e)),
            Err(e) => Err(classify(e, "create secret")),
        }
    }

    fn namespace_missing(&self, e: kube::Error) -> ProviderError {
        ProviderError::InvalidConfig(format!(
            "namespace {} not found ({e}); create it (kubectl apply -f deploy/kubernetes/namespace.yaml) or set {ENV_K8S_NAMESPACE}",
            self.shared.config.namespace
        ))
    }

    async fn create_pod(&self, spec: &WorkerSpec) -> Result<WorkerHandle, ProviderError> {
        let shared = &self.shared;
        let image = spec
            .image
            .clone()
            .unwrap_or_else(|| shared.config.image.clone());
        let name = pod_name(spec.worker_id);
        self.create_secret(spec).await?;
        let api = shared.pods();
        let pod = build_pod(&shared.config, shared.id, spec, &image);
        let pp = PostParams::default();
        lock(&shared.created_at).insert(spec.worker_id, Instant::now());
        let created = match shared.call("create pod", || api.create(&pp, &pod)).await {
            Ok(p) => p,
            Err(e) if status_code(&e) == Some(409) => {
                // Ours from a retried request whose answer was lost? Adopt it;
                // anything else is a name clash.
                let existing = shared
                    .call("get pod", || api.get(&name))
                    .await
                    .map_err(|e| classify(e, "get pod"))?;
                let labels = existing.metadata.labels.clone().unwrap_or_default();
                let ours = labels.get(LABEL_WORKER_ID) == Some(&spec.worker_id.to_string())
                    && labels.get(LABEL_PROVIDER_ID) == Some(&shared.id.to_string());
                if !ours {
                    self.delete_secret(spec.worker_id).await;
                    return Err(ProviderError::Internal(format!(
                        "a pod named {name} already exists in {} and is not this provider's (worker {} created twice?)",
                        shared.config.namespace, spec.worker_id
                    )));
                }
                existing
            }
            Err(e) => {
                self.delete_secret(spec.worker_id).await;
                return Err(if status_code(&e) == Some(404) {
                    self.namespace_missing(e)
                } else {
                    classify(e, "create pod")
                });
            }
        };
        let uid = created.metadata.uid.clone().unwrap_or_default();
        if !uid.is_empty() {
            let patch = Patch::Merge(owner_patch(&name, &uid));
            let sname = secret_name(spec.worker_id);
            let secrets = shared.secrets();
            let pp = PatchParams::default();
            if let Err(e) = shared
                .call("own secret", || secrets.patch(&sname, &pp, &patch))
                .await
            {
                // destroy_worker and cleanup_orphans delete it anyway.
                tracing::warn!(secret = %sname, error = %e, "could not make the pod own its token secret");
            }
        }
        tracing::info!(worker_id = %spec.worker_id, pod = %name, %image,
            namespace = %shared.config.namespace, "worker pod created");
        let mut handle = WorkerHandle::new(spec.worker_id, shared.id, name);
        handle
            .metadata
            .insert("namespace".into(), shared.config.namespace.clone());
        handle.metadata.insert("image".into(), image);
        if !uid.is_empty() {
            handle.metadata.insert("pod_uid".into(), uid);
        }
        Ok(handle)
    }

    /// Best-effort deletion of a worker's token Secret.
    async fn delete_secret(&self, worker_id: WorkerId) {
        let api = self.shared.secrets();
        let name = secret_name(worker_id);
        let plain = DeleteParams::default();
        match self
            .shared
            .call("delete secret", || api.delete(&name, &plain))
            .await
        {
            Ok(_) => {}
            Err(e) if status_code(&e) == Some(404) => {}
            Err(e) => tracing::warn!(secret = %name, error = %e, "could not delete a token secret"),
        }
    }

    /// The pod a handle names: its external id, or the name derived from the worker id.
    fn target(handle: &WorkerHandle) -> String {
        if handle.external_id.is_empty() {
            pod_name(handle.worker_id)
        } else {
            handle.external_id.clone()
        }
    }
}

#[async_trait]
impl WorkerLifecycle for KubernetesProvider {
    /// Creates the token Secret, then the Pod, then makes the Pod own the
    /// Secret. Returns once the Pod object exists (not once it runs).
    async fn create_worker(&self, spec: &WorkerSpec) -> Result<WorkerHandle, ProviderError> {
        self.reserve_slot(spec.worker_id)?;
        self.create_pod(spec).await.inspect_err(|_| {
            lock(&self.shared.live).remove(&spec.worker_id);
            lock(&self.shared.created_at).remove(&spec.worker_id);
        })
    }

    /// See [`worker_state`]; a pod that does not exist → [`ProviderError::WorkerNotFound`].
    async fn get_worker_status(&self, handle: &WorkerHandle) -> Result<WorkerState, ProviderError> {
        let api = self.shared.pods();
        let name = Self::target(handle);
        let pod = match self.shared.call("get pod", || api.get(&name)).await {
            Ok(p) => p,
            Err(e) if status_code(&e) == Some(404) => {
                return Err(ProviderError::WorkerNotFound(handle.worker_id));
            }
            Err(e) => return Err(classify(e, "get pod")),
        };
        worker_state(
            &pod,
            k8s_openapi::jiff::Timestamp::now(),
            self.shared.config.failure_grace,
        )
    }

    /// Deletes the pod with the configured grace (the kubelet sends SIGTERM,
    /// then SIGKILL) and its token Secret. A pod that is already gone is not an error.
    async fn destroy_worker(&self, handle: &WorkerHandle) -> Result<(), ProviderError> {
        let shared = &self.shared;
        let api = shared.pods();
        let name = Self::target(handle);
        lock(&shared.destroying).insert(handle.worker_id);
        let dp = DeleteParams {
            grace_period_seconds: u32::try_from(shared.config.termination_grace.as_secs()).ok(),
            ..DeleteParams::background()
        };
        let result = match shared.call("delete pod", || api.delete(&name, &dp)).await {
            Ok(_) => Ok(()),
            Err(e) if status_code(&e) == Some(404) => {
                // Gone already: no watch event will clear it.
                lock(&shared.destroying).remove(&handle.worker_id);
                Ok(())
            }
            Err(e) => {
                lock(&shared.destroying).remove(&handle.worker_id);
                Err(classify(e, "delete pod"))
            }
        };
        if result.is_ok() {
            self.delete_secret(handle.worker_id).await;
            lock(&shared.live).remove(&handle.worker_id);
            lock(&shared.created_at).remove(&handle.worker_id);
        }
        result
    }
}

/// The access the provider needs in its namespace: (verb, resource, subresource).
const NEEDED_ACCESS: &[(&str, &str, &str)] = &[
    ("create", "pods", ""),
    ("get", "pods", ""),
    ("list", "pods", ""),
    ("watch", "pods", ""),
    ("delete", "pods", ""),
    ("get", "pods", "log"),
    ("create", "secrets", ""),
    ("patch", "secrets", ""),
    ("delete", "secrets", ""),
];

#[async_trait]
impl WorkerHealth for KubernetesProvider {
    /// The API server's version, then a SelfSubjectAccessReview per verb the
    /// provider needs in its namespace; unhealthy naming what is missing.
    async fn health_check(&self) -> Result<HealthStatus, ProviderError> {
        let started = Instant::now();
        let shared = &self.shared;
        let ns = shared.config.namespace.clone();
        let status = async {
            let v = shared
                .call("version", || shared.client.apiserver_version())
                .await
                .map_err(|e| classify(e, "version"))?;
            let reviews: Api<SelfSubjectAccessReview> = Api::all(shared.client.clone());
            let checks = NEEDED_ACCESS.iter().map(|(verb, resource, sub)| {
                let review = SelfSubjectAccessReview {
                    spec: SelfSubjectAccessReviewSpec {
                        resource_attributes: Some(ResourceAttributes {
                            namespace: Some(ns.clone()),
                            verb: Some((*verb).to_owned()),
                            resource: Some((*resource).to_owned()),
                            subresource: (!sub.is_empty()).then(|| (*sub).to_owned()),
                            ..Default::default()
                        }),
                        ..Default::default()
                    },
                    ..Default::default()
                };
                let reviews = reviews.clone();
                async move {
                    let pp = PostParams::default();
                    let r = shared
                        .call("access review", || reviews.create(&pp, &review))
                        .await
                        .map_err(|e| classify(e, "access review"))?;
                    let allowed = r.status.as_ref().is_some_and(|s| s.allowed);
                    let what = if sub.is_empty() {
                        format!("{verb} {resource}")
                    } else {
                        format!("{verb} {resource}/{sub}")
                    };
                    Ok::<_, ProviderError>((what, allowed))
                }
            });
            let results = futures::future::join_all(checks).await;
            let mut missing = Vec::new();
            for r in results {
                let (what, allowed) = r?;
                if !allowed {
                    missing.push(what);
                }
            }
            let api = format!("kubernetes {}.{} ({})", v.major, v.minor, v.git_version);
            Ok::<_, ProviderError>(if missing.is_empty() {
                HealthStatus::healthy(format!(
                    "{api}: may manage pods and secrets in namespace {ns}"
                ))
            } else {
                HealthStatus::unhealthy(format!(
                    "{api}: not allowed in namespace {ns}: {}; apply deploy/kubernetes/rbac.yaml",
                    missing.join(", ")
                ))
            })
        }
        .await
        .unwrap_or_else(|e| HealthStatus::unhealthy(e.to_string()));
        Ok(status.with_latency(started.elapsed()))
    }
}

/// Messages of a 400 on pod logs that mean "no logs yet".
const NOT_STARTED: &[&str] = &["waiting to start", "ContainerCreating", "PodInitializing"];

#[async_trait]
impl WorkerLogs for KubernetesProvider {
    /// The agent container's log (the agent's own output), last `tail` lines;
    /// empty while the container has not started.
    async fn get_worker_logs(
        &self,
        handle: &WorkerHandle,
        tail: Option<usize>,
    ) -> Result<Vec<String>, ProviderError> {
        let api = self.shared.pods();
        let name = Self::target(handle);
        let lp = LogParams {
            container: Some(AGENT_CONTAINER.into()),
            tail_lines: tail.map(|n| i64::try_from(n).unwrap_or(i64::MAX)),
            ..Default::default()
        };
        let text = match self.shared.call("pod logs", || api.logs(&name, &lp)).await {
            Ok(t) => t,
            Err(e) if status_code(&e) == Some(404) => {
                return Err(ProviderError::WorkerNotFound(handle.worker_id));
            }
            Err(kube::Error::Api(s))
                if s.code == 400 && NOT_STARTED.iter().any(|m| s.message.contains(m)) =>
            {
                return Ok(Vec::new());
            }
            Err(e) => return Err(classify(e, "pod logs")),
        };
        let mut lines: Vec<String> = text
            .lines()
            .map(|l| l.trim_end_matches('\r').to_owned())
            .collect();
        if let Some(n) = tail
            && lines.len() > n
        {
            lines.drain(..lines.len() - n);
        }
        Ok(lines)
    }
}

impl WorkerCost for KubernetesProvider {
    /// `cpu · cpu_hour_cost + memory GiB · gib_hour_cost` per hour (free when both are 0).
    fn estimate_cost(&self, spec: &JobSpec) -> CostEstimate {
        let c = &self.shared.config;
        let per_hour = spec.resources.cpu_cores * c.cpu_hour_cost
            + spec.resources.memory_mb as f64 / 1024.0 * c.gib_hour_cost;
        if per_hour > 0.0 {
            CostEstimate::per_hour(per_hour, "USD")
        } else {
            CostEstimate::free()
        }
    }

    /// Moving average of measured create → agent container running times
    /// ([`DEFAULT_STARTUP`] until the first pod has run).
    fn estimated_startup_time(&self) -> Duration {
        lock(&self.shared.startup).unwrap_or(DEFAULT_STARTUP)
    }
}

/// A CPU quantity (`250m`, `1`, `123456n`, `5u`) in cores.
fn parse_cpu(q: &str) -> Option<f64> {
    let q = q.trim();
    let (num, scale) = match q.char_indices().last()? {
        (i, 'n') => (&q[..i], 1e-9),
        (i, 'u') => (&q[..i], 1e-6),
        (i, 'm') => (&q[..i], 1e-3),
        _ => (q, 1.0),
    };
    num.parse::<f64>().ok().map(|n| n * scale)
}

/// A memory quantity (`1234Ki`, `10Mi`, `1G`, `5000`) in bytes.
fn parse_bytes(q: &str) -> Option<u64> {
    let q = q.trim();
    let split = q.find(|c: char| c.is_ascii_alphabetic()).unwrap_or(q.len());
    let (num, unit) = q.split_at(split);
    let mult: f64 = match unit {
        "" => 1.0,
        "Ki" => 1024.0,
        "Mi" => 1024f64.powi(2),
        "Gi" => 1024f64.powi(3),
        "Ti" => 1024f64.powi(4),
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        _ => return None,
    };
    num.parse::<f64>().ok().map(|n| (n * mult) as u64)
}

#[async_trait]
impl WorkerMetrics for KubernetesProvider {
    /// CPU and memory from the metrics API (`metrics.k8s.io`, served by
    /// metrics-server); [`ProviderError::Unavailable`] when it is not installed.
    async fn get_worker_metrics(
        &self,
        handle: &WorkerHandle,
    ) -> Result<ResourceUsage, ProviderError> {
        let shared = &self.shared;
        let name = Self::target(handle);
        let url = format!(
            "/apis/metrics.k8s.io/v1beta1/namespaces/{}/pods/{name}",
            shared.config.namespace
        );
        let value: serde_json::Value = shared
            .call("pod metrics", || {
                let req = http::Request::get(url.as_str()).body(Vec::new());
                let client = shared.client.clone();
                async move {
                    let req = req.map_err(kube::Error::HttpError)?;
                    client.request::<serde_json::Value>(req).await
                }
            })
            .await
            .map_err(|e| match status_code(&e) {
                Some(404) => ProviderError::Unavailable(format!(
                    "no metrics for pod {name}: metrics-server (metrics.k8s.io) is not installed or has not sampled the pod yet"
                )),
                _ => classify(e, "pod metrics"),
            })?;
        let mut usage = ResourceUsage::default();
        for c in value["containers"].as_array().into_iter().flatten() {
            if let Some(cpu) = c["usage"]["cpu"].as_str().and_then(parse_cpu) {
                usage.cpu_percent += cpu * 100.0;
            }
            if let Some(m) = c["usage"]["memory"].as_str().and_then(parse_bytes) {
                usage.memory_bytes += m;
            }
        }
        Ok(usage)
    }
}

impl WorkerEventSource for KubernetesProvider {
    fn events(&self) -> BoxStream<'static, WorkerEvent> {
        BroadcastStream::new(self.shared.events.subscribe())
            .filter_map(|e| async move { e.ok() })
            .boxed()
    }
}

impl WorkerProviderIdentity for KubernetesProvider {
    fn id(&self) -> ProviderId {
        self.shared.id
    }

    fn name(&self) -> &str {
        &self.shared.config.name
    }

    fn provider_type(&self) -> ProviderType {
        ProviderType::Kubernetes
    }

    fn capabilities(&self) -> ProviderCapabilities {
        let c = &self.shared.config;
        let mut caps = ProviderCapabilities::default();
        caps.max_cpu_cores = c.max_cpu_cores;
        caps.max_memory_mb = c.max_memory_mb;
        caps.gpu = c.gpu;
        caps.architectures.clone_from(&c.architectures);
        caps.max_workers = c.max_workers;
        caps.supports_images = true;
        caps.labels.clone_from(&c.labels);
        caps
    }

    // Optional traits it offers. Eligibility is the default, from the
    // capabilities (per-pod maximums, architectures, GPU, labels).
    fn cost(&self) -> Option<&dyn WorkerCost> {
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

    #[test]
    fn quantities_parse() {
        assert_eq!(parse_cpu("250m"), Some(0.25));
        assert_eq!(parse_cpu("2"), Some(2.0));
        assert!((parse_cpu("123456789n").unwrap() - 0.123_456_789).abs() < 1e-12);
        assert_eq!(parse_bytes("1Ki"), Some(1024));
        assert_eq!(parse_bytes("10Mi"), Some(10 * 1024 * 1024));
        assert_eq!(parse_bytes("1G"), Some(1_000_000_000));
        assert_eq!(parse_bytes("12x"), None);
    }
}
