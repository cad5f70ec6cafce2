//! The [`Provider`] aggregate: a registered source of workers, its type,
//! capabilities, configuration and health.

use std::collections::BTreeMap;
use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::domain::ids::ProviderId;
use crate::domain::spec::JobSpec;

/// Kind of infrastructure behind a provider.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ProviderType {
    /// AWS Lambda.
    Lambda,
    /// Kubernetes pods.
    Kubernetes,
    /// Docker containers.
    Docker,
    /// Azure virtual machines.
    AzureVm,
    /// AWS EC2 instances.
    Ec2,
    /// Google Cloud Run.
    CloudRun,
    /// Processes on a machine the control plane can reach (the local process provider).
    BareMetal,
    /// Anything else (microVMs, user providers).
    Custom,
}

impl fmt::Display for ProviderType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = match self {
            ProviderType::Lambda => "lambda",
            ProviderType::Kubernetes => "kubernetes",
            ProviderType::Docker => "docker",
            ProviderType::AzureVm => "azure_vm",
            ProviderType::Ec2 => "ec2",
            ProviderType::CloudRun => "cloud_run",
            ProviderType::BareMetal => "bare_metal",
            ProviderType::Custom => "custom",
        };
        f.write_str(s)
    }
}

/// Operational status of a provider.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ProviderStatus {
    /// Taking work.
    Active,
    /// Paused by an operator.
    Maintenance,
    /// Switched off.
    Disabled,
    /// At capacity.
    Overloaded,
    /// Failing its health checks.
    Unhealthy,
}

impl fmt::Display for ProviderStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = match self {
            ProviderStatus::Active => "active",
            ProviderStatus::Maintenance => "maintenance",
            ProviderStatus::Disabled => "disabled",
            ProviderStatus::Overloaded => "overloaded",
            ProviderStatus::Unhealthy => "unhealthy",
        };
        f.write_str(s)
    }
}

/// What a provider can offer one worker.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
#[non_exhaustive]
pub struct ProviderCapabilities {
    /// Largest CPU request one worker can get.
    pub max_cpu_cores: f64,
    /// Largest memory request one worker can get, in MiB.
    pub max_memory_mb: u64,
    /// Whether GPUs are available.
    pub gpu: bool,
    /// Architectures it runs (empty = the host's).
    pub architectures: Vec<String>,
    /// Most workers it runs at once.
    pub max_workers: u32,
    /// Regions it runs in.
    pub regions: Vec<String>,
    /// Whether it runs the job's `image` (containers, VMs).
    pub supports_images: bool,
    /// Labels the scheduler's constraints match against.
    pub labels: BTreeMap<String, String>,
}

impl Default for ProviderCapabilities {
    fn default() -> Self {
        Self {
            max_cpu_cores: 4.0,
            max_memory_mb: 8192,
            gpu: false,
            architectures: vec![std::env::consts::ARCH.to_owned()],
            max_workers: 16,
            regions: Vec::new(),
            supports_images: false,
            labels: BTreeMap::new(),
        }
    }
}

impl ProviderCapabilities {
    /// Why this provider cannot run `spec`, or `None` when it can.
    #[must_use]
    pub fn ineligibility(&self, spec: &JobSpec) -> Option<String> {
        let r = &spec.resources;
        if r.cpu_cores > self.max_cpu_cores {
            return Some(format!(
                "needs {} cpu cores, provider offers at most {}",
                r.cpu_cores, self.max_cpu_cores
            ));
        }
        if r.memory_mb > self.max_memory_mb {
            return Some(format!(
                "needs {} MiB memory, provider offers at most {}",
                r.memory_mb, self.max_memory_mb
            ));
        }
        if r.gpu_required && !self.gpu {
            return Some("needs a GPU, provider has none".to_owned());
        }
        if let Some(arch) = &r.architecture
            && !self.architectures.is_empty()
            && !self.architectures.iter().any(|a| a == arch)
        {
            return Some(format!(
                "needs architecture {arch}, provider runs {:?}",
                self.architectures
            ));
        }
        if let Some(c) = spec.constraints.iter().find(|c| !c.matches(&self.labels)) {
            return Some(format!("constraint on label {:?} not met", c.key));
        }
        None
    }
}

/// Provider-specific configuration, one variant per provider type.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
#[non_exhaustive]
pub enum ProviderConfig {
    /// AWS Lambda.
    Lambda {
        /// Region.
        region: String,
        /// Function name or ARN.
        function: String,
    },
    /// Kubernetes pods.
    Kubernetes {
        /// Namespace of the worker pods.
        namespace: String,
        /// Kubeconfig path; `None` = in-cluster, then the default kubeconfig.
        kubeconfig: Option<String>,
        /// Worker image.
        image: String,
        /// Extra pod labels.
        #[serde(default)]
        labels: BTreeMap<String, String>,
        /// Node selector added to every worker pod.
        #[serde(default)]
        node_selector: BTreeMap<String, String>,
        /// Tolerations of the worker pods, each `key[=value]:Effect`
        /// (`Effect` = `NoSchedule`, `PreferNoSchedule` or `NoExecute`; empty = any).
        #[serde(default)]
        tolerations: Vec<String>,
    },
    /// Docker containers.
    Docker {
        /// Worker image.
        image: String,
        /// Docker host / socket; `None` = local defaults.
        docker_host: Option<String>,
        /// Network mode (`host`, `bridge`, …).
        network: Option<String>,
    },
    /// Azure virtual machines.
    AzureVm {
        /// Region.
        location: String,
        /// VM size.
        vm_size: String,
    },
    /// AWS EC2.
    Ec2 {
        /// Region.
        region: String,
        /// Instance type.
        instance_type: String,
        /// AMI.
        ami: String,
    },
    /// Google Cloud Run.
    CloudRun {
        /// Project.
        project: String,
        /// Region.
        region: String,
    },
    /// Local or reachable machines running the agent as processes.
    BareMetal {
        /// Path of the `hodei-worker` binary; `None` = next to the server's executable.
        agent_binary: Option<String>,
        /// Hosts (empty = this machine).
        #[serde(default)]
        hosts: Vec<String>,
    },
    /// A user or extra provider with free-form settings.
    Custom {
        /// Free-form settings.
        #[serde(default)]
        settings: BTreeMap<String, String>,
    },
}

impl ProviderConfig {
    /// The provider type this configuration belongs to.
    #[must_use]
    pub fn provider_type(&self) -> ProviderType {
        match self {
            ProviderConfig::Lambda { .. } => ProviderType::Lambda,
            ProviderConfig::Kubernetes { .. } => ProviderType::Kubernetes,
            ProviderConfig::Docker { .. } => ProviderType::Docker,
            ProviderConfig::AzureVm { .. } => ProviderType::AzureVm,
            ProviderConfig::Ec2 { .. } => ProviderType::Ec2,
            ProviderConfig::CloudRun { .. } => ProviderType::CloudRun,
            ProviderConfig::BareMetal { .. } => ProviderType::BareMetal,
            ProviderConfig::Custom { .. } => ProviderType::Custom,
        }
    }
}

/// The provider aggregate: the stored record of a registered provider (its
/// configuration, capabilities, status, health and price). The code that
/// creates the workers is a runtime `hodei_core::provider::WorkerProvider`,
/// registered under the same id.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Provider {
    id: ProviderId,
    name: String,
    provider_type: ProviderType,
    status: ProviderStatus,
    capabilities: ProviderCapabilities,
    config: ProviderConfig,
    active_jobs: u32,
    max_concurrent_jobs: u32,
    last_health_check: Option<DateTime<Utc>>,
    last_error: Option<String>,
    /// Registered through the API (re-created from `config` at start), not
    /// built in code from the server's environment.
    #[serde(default)]
    registered_at_runtime: bool,
    /// The operator's price for its resources (`cost_aware`); `None` = its own estimate.
    #[serde(default)]
    pricing: Option<crate::domain::pricing::ResourcePricing>,
}

impl Provider {
    /// A new `Active` provider.
    pub fn new(
        id: ProviderId,
        name: impl Into<String>,
        config: ProviderConfig,
        capabilities: ProviderCapabilities,
    ) -> Self {
        let max = capabilities.max_workers.max(1);
        Self {
            id,
            name: name.into(),
            provider_type: config.provider_type(),
            status: ProviderStatus::Active,
            capabilities,
            config,
            active_jobs: 0,
            max_concurrent_jobs: max,
            last_health_check: None,
            last_error: None,
            registered_at_runtime: false,
            pricing: None,
        }
    }

    /// Sets the price of its resources, which `cost_aware` ranks it by.
    #[must_use]
    pub fn with_pricing(
        mut self,
        pricing: Option<crate::domain::pricing::ResourcePricing>,
    ) -> Self {
        self.pricing = pricing;
        self
    }

    /// The operator's price of its resources, if set.
    #[must_use]
    pub fn pricing(&self) -> Option<crate::domain::pricing::ResourcePricing> {
        self.pricing
    }

    /// Marks it as registered through the API, so the server re-creates it
    /// from its stored configuration when it starts again.
    #[must_use]
    pub fn registered_at_runtime(mut self, yes: bool) -> Self {
        self.registered_at_runtime = yes;
        self
    }

    /// Whether it was registered through the API.
    #[must_use]
    pub fn is_registered_at_runtime(&self) -> bool {
        self.registered_at_runtime
    }

    /// Sets the most jobs it runs at once (at least 1): its workers' job
    /// slots, `max_workers` times the jobs each worker runs at once. Starts
    /// at its capabilities' `max_workers` (one job per worker).
    #[must_use]
    pub fn with_job_limit(mut self, max_concurrent_jobs: u32) -> Self {
        self.max_concurrent_jobs = max_concurrent_jobs.max(1);
        self
    }

    /// Most jobs it runs at once (`Overloaded` at that many).
    #[must_use]
    pub fn max_concurrent_jobs(&self) -> u32 {
        self.max_concurrent_jobs
    }

    /// Id.
    #[must_use]
    pub fn id(&self) -> ProviderId {
        self.id
    }
    /// Unique name (`process`, `docker`, …).
    #[must_use]
    pub fn name(&self) -> &str {
        &self.name
    }
    /// Type.
    #[must_use]
    pub fn provider_type(&self) -> ProviderType {
        self.provider_type
    }
    /// Status.
    #[must_use]
    pub fn status(&self) -> ProviderStatus {
        self.status
    }
    /// Capabilities.
    #[must_use]
    pub fn capabilities(&self) -> &ProviderCapabilities {
        &self.capabilities
    }
    /// Configuration.
    #[must_use]
    pub fn config(&self) -> &ProviderConfig {
        &self.config
    }
    /// Jobs running on its workers.
    #[must_use]
    pub fn active_jobs(&self) -> u32 {
        self.active_jobs
    }
    /// Last health check.
    #[must_use]
    pub fn last_health_check(&self) -> Option<DateTime<Utc>> {
        self.last_health_check
    }
    /// Last health error.
    #[must_use]
    pub fn last_error(&self) -> Option<&str> {
        self.last_error.as_deref()
    }

    /// Healthy: not `Unhealthy`.
    #[must_use]
    pub fn is_healthy(&self) -> bool {
        self.status != ProviderStatus::Unhealthy
    }

    /// Available for new work: `Active` and below its job limit.
    #[must_use]
    pub fn is_available(&self) -> bool {
        self.status == ProviderStatus::Active && self.active_jobs < self.max_concurrent_jobs
    }

    /// A health check passed. An unhealthy or overloaded provider becomes `Active`;
    /// an operator's `Maintenance`/`Disabled` stays.
    pub fn mark_healthy(&mut self) {
        self.last_health_check = Some(Utc::now());
        self.last_error = None;
        if matches!(
            self.status,
            ProviderStatus::Unhealthy | ProviderStatus::Overloaded
        ) {
            self.status = ProviderStatus::Active;
        }
    }

    /// A health check failed.
    pub fn mark_unhealthy(&mut self, error: impl Into<String>) {
        self.last_health_check = Some(Utc::now());
        self.last_error = Some(error.into());
        if !matches!(
            self.status,
            ProviderStatus::Maintenance | ProviderStatus::Disabled
        ) {
            self.status = ProviderStatus::Unhealthy;
        }
    }

    /// Sets the status explicitly (operator action).
    pub fn set_status(&mut self, status: ProviderStatus) {
        self.status = status;
    }

    /// One more job runs on it; `Overloaded` at the limit.
    pub fn increment_job_count(&mut self) {
        self.active_jobs = self.active_jobs.saturating_add(1);
        if self.active_jobs >= self.max_concurrent_jobs && self.status == ProviderStatus::Active {
            self.status = ProviderStatus::Overloaded;
        }
    }

    /// Sets the count of jobs running on its workers (counted from the
    /// registry): `Overloaded` at the limit, back to `Active` below it.
    pub fn set_job_count(&mut self, n: u32) {
        self.active_jobs = n;
        if self.active_jobs >= self.max_concurrent_jobs && self.status == ProviderStatus::Active {
            self.status = ProviderStatus::Overloaded;
        } else if self.active_jobs < self.max_concurrent_jobs
            && self.status == ProviderStatus::Overloaded
        {
            self.status = ProviderStatus::Active;
        }
    }

    /// One job fewer; back to `Active` below the limit.
    pub fn decrement_job_count(&mut self) {
        self.active_jobs = self.active_jobs.saturating_sub(1);
        if self.active_jobs < self.max_concurrent_jobs && self.status == ProviderStatus::Overloaded
        {
            self.status = ProviderStatus::Active;
        }
    }
}
