//! The Kubernetes objects of one worker: its Pod and the Secret holding its
//! one-time token. Pure functions, so they can be checked without a cluster.

use std::collections::BTreeMap;
use std::time::Duration;

use hodei_core::domain::agent_env;
use hodei_core::{ProviderId, WorkerId, WorkerSpec};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{
    Capabilities, Container, EmptyDirVolumeSource, EnvVar, EnvVarSource, LocalObjectReference, Pod,
    PodSecurityContext, PodSpec, ResourceRequirements, SeccompProfile, Secret, SecretKeySelector,
    SecurityContext, Toleration as K8sToleration, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};

use super::config::KubernetesProviderConfig;

/// Label holding the worker id.
pub const LABEL_WORKER_ID: &str = "hodei.worker-id";
/// Label holding the provider id.
pub const LABEL_PROVIDER_ID: &str = "hodei.provider-id";
/// Label marking objects this provider manages (`true`).
pub const LABEL_MANAGED: &str = "hodei.managed";
/// Prefix of worker pod names (`hodei-worker-<worker id>`).
pub const POD_PREFIX: &str = "hodei-worker-";
/// Name of the agent container.
pub const AGENT_CONTAINER: &str = "agent";
/// Key of the one-time token in the worker's Secret.
pub const OTP_KEY: &str = "otp";
/// Environment key of [`WorkerSpec::env`] naming the job's timeout in seconds;
/// when present it sets the pod's `activeDeadlineSeconds` (plus start-up and grace allowances).
pub const ENV_JOB_TIMEOUT_SECS: &str = hodei_core::WORKER_ENV_JOB_TIMEOUT_SECS;
/// Extended resource name of NVIDIA GPUs.
pub const GPU_RESOURCE: &str = "nvidia.com/gpu";
/// Allowance added to a job timeout for the pod to start and the agent to register.
pub const DEADLINE_ALLOWANCE: Duration = Duration::from_secs(300);
/// The agent's own grace is the pod's termination grace minus this margin.
pub const AGENT_GRACE_MARGIN: Duration = Duration::from_secs(10);

/// Name of a worker's pod.
#[must_use]
pub fn pod_name(worker_id: WorkerId) -> String {
    format!("{POD_PREFIX}{worker_id}")
}

/// Name of a worker's token Secret.
#[must_use]
pub fn secret_name(worker_id: WorkerId) -> String {
    format!("{POD_PREFIX}{worker_id}-otp")
}

/// Rust architecture names as the `kubernetes.io/arch` node label spells them.
#[must_use]
pub fn k8s_arch(arch: &str) -> String {
    match arch {
        "x86_64" | "amd64" => "amd64",
        "aarch64" | "arm64" => "arm64",
        "x86" | "i386" | "386" => "386",
        "arm" => "arm",
        "powerpc64le" | "ppc64le" => "ppc64le",
        "s390x" => "s390x",
        other => other,
    }
    .to_owned()
}

/// Whether `k` is a valid label key (`[prefix/]name`).
#[must_use]
pub fn is_label_key(k: &str) -> bool {
    let (prefix, name) = match k.rsplit_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, k),
    };
    if let Some(p) = prefix
        && (p.is_empty() || p.len() > 253 || !p.split('.').all(super::config::is_dns_label))
    {
        return false;
    }
    !name.is_empty() && is_label_value(name)
}

/// Whether `v` is a valid label value (≤ 63 of `[A-Za-z0-9_.-]`, alphanumeric at both ends, or empty).
#[must_use]
pub fn is_label_value(v: &str) -> bool {
    if v.is_empty() {
        return true;
    }
    v.len() <= 63
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        && v.as_bytes()[0].is_ascii_alphanumeric()
        && v.as_bytes()[v.len() - 1].is_ascii_alphanumeric()
}

/// Labels of every object of one worker: the configured ones, the spec's
/// valid ones, then the three `hodei.*` labels (which win).
#[must_use]
pub fn worker_labels(
    config: &KubernetesProviderConfig,
    provider_id: ProviderId,
    spec: &WorkerSpec,
) -> BTreeMap<String, String> {
    let mut labels = config.labels.clone();
    for (k, v) in &spec.labels {
        if is_label_key(k) && is_label_value(v) {
            labels.insert(k.clone(), v.clone());
        } else {
            tracing::debug!(key = %k, "worker label is not a valid Kubernetes label; left off the pod");
        }
    }
    labels.insert(LABEL_WORKER_ID.into(), spec.worker_id.to_string());
    labels.insert(LABEL_PROVIDER_ID.into(), provider_id.to_string());
    labels.insert(LABEL_MANAGED.into(), "true".into());
    labels
}

/// The label selector of every managed object of this provider (and its configured labels).
#[must_use]
pub fn scope_selector(
    config: &KubernetesProviderConfig,
    provider_id: Option<ProviderId>,
) -> String {
    let mut parts = vec![format!("{LABEL_MANAGED}=true")];
    if let Some(id) = provider_id {
        parts.push(format!("{LABEL_PROVIDER_ID}={id}"));
    }
    parts.extend(config.labels.iter().map(|(k, v)| format!("{k}={v}")));
    parts.join(",")
}

/// The Secret holding the worker's one-time token. Immutable; the pod
/// becomes its owner once it exists, so it is garbage-collected with the pod.
#[must_use]
pub fn build_secret(
    config: &KubernetesProviderConfig,
    provider_id: ProviderId,
    spec: &WorkerSpec,
) -> Secret {
    Secret {
        metadata: ObjectMeta {
            name: Some(secret_name(spec.worker_id)),
            namespace: Some(config.namespace.clone()),
            labels: Some(worker_labels(config, provider_id, spec)),
            ..Default::default()
        },
        immutable: Some(true),
        type_: Some("Opaque".into()),
        data: Some(BTreeMap::from([(
            OTP_KEY.to_owned(),
            ByteString(spec.otp.as_bytes().to_vec()),
        )])),
        ..Default::default()
    }
}

/// A merge patch making `pod` the controlling owner of its Secret.
#[must_use]
pub fn owner_patch(pod_name: &str, pod_uid: &str) -> serde_json::Value {
    let owner = OwnerReference {
        api_version: "v1".into(),
        kind: "Pod".into(),
        name: pod_name.to_owned(),
        uid: pod_uid.to_owned(),
        controller: Some(true),
        block_owner_deletion: Some(false),
    };
    serde_json::json!({ "metadata": { "ownerReferences": [owner] } })
}

fn mebibytes(mb: u64) -> Quantity {
    Quantity(format!("{mb}Mi"))
}

fn millicores(cores: f64) -> Quantity {
    Quantity(format!("{}m", (cores * 1000.0).round().max(1.0) as u64))
}

/// The `activeDeadlineSeconds` of a worker: the job's timeout (from
/// [`ENV_JOB_TIMEOUT_SECS`]) plus start-up and termination allowances, else
/// the configured default.
#[must_use]
pub fn active_deadline(config: &KubernetesProviderConfig, spec: &WorkerSpec) -> i64 {
    let d = spec
        .env
        .get(ENV_JOB_TIMEOUT_SECS)
        .and_then(|s| s.trim().parse::<u64>().ok())
        .filter(|s| *s > 0)
        .map_or(config.active_deadline, |s| {
            Duration::from_secs(s) + DEADLINE_ALLOWANCE + config.termination_grace
        });
    i64::try_from(d.as_secs().max(1)).unwrap_or(i64::MAX)
}

/// The worker's Pod: one agent container, its token from the Secret, the
/// spec's resources as requests and limits, hardened security context.
#[must_use]
pub fn build_pod(
    config: &KubernetesProviderConfig,
    provider_id: ProviderId,
    spec: &WorkerSpec,
    image: &str,
) -> Pod {
    let labels = worker_labels(config, provider_id, spec);
    let grace = config.termination_grace.as_secs();
    let agent_grace = grace.saturating_sub(AGENT_GRACE_MARGIN.as_secs()).max(1);

    // Environment: configured, then the spec's, then what the agent needs. The
    // token is a reference to the Secret, never a literal.
    let mut env: BTreeMap<String, String> = config.extra_env.clone();
    env.extend(spec.agent_env());
    env.remove(agent_env::OTP);
    env.insert(
        agent_env::SHUTDOWN_GRACE_SECS.into(),
        agent_grace.to_string(),
    );
    env.insert("TMPDIR".into(), "/tmp".into());
    env.insert("HOME".into(), "/tmp".into());
    env.insert("HODEI_WORK_DIR".into(), "/tmp/hodei-jobs".into());
    let mut env_vars: Vec<EnvVar> = env
        .into_iter()
        .map(|(name, value)| EnvVar {
            name,
            value: Some(value),
            value_from: None,
        })
        .collect();
    env_vars.push(EnvVar {
        name: agent_env::OTP.into(),
        value: None,
        value_from: Some(EnvVarSource {
            secret_key_ref: Some(SecretKeySelector {
                name: secret_name(spec.worker_id),
                key: OTP_KEY.into(),
                optional: Some(false),
            }),
            ..Default::default()
        }),
    });

    let r = &spec.resources;
    let mut amounts: BTreeMap<String, Quantity> = BTreeMap::new();
    if r.cpu_cores > 0.0 {
        amounts.insert("cpu".into(), millicores(r.cpu_cores));
    }
    if r.memory_mb > 0 {
        amounts.insert("memory".into(), mebibytes(r.memory_mb));
    }
    if r.storage_mb > 0 {
        amounts.insert("ephemeral-storage".into(), mebibytes(r.storage_mb));
    }
    if r.gpu_required {
        amounts.insert(GPU_RESOURCE.into(), Quantity("1".into()));
    }
    let resources = ResourceRequirements {
        requests: Some(amounts.clone()),
        limits: Some(amounts),
        ..Default::default()
    };

    let mut node_selector = config.node_selector.clone();
    if let Some(arch) = &r.architecture {
        node_selector.insert("kubernetes.io/arch".into(), k8s_arch(arch));
    }
    let mut tolerations: Vec<K8sToleration> = config
        .tolerations
        .iter()
        .map(|t| K8sToleration {
            key: (!t.key.is_empty()).then(|| t.key.clone()),
            operator: Some(if t.value.is_some() { "Equal" } else { "Exists" }.into()),
            value: t.value.clone(),
            effect: t.effect.clone(),
            toleration_seconds: None,
        })
        .collect();
    if r.gpu_required {
        tolerations.push(K8sToleration {
            key: Some(GPU_RESOURCE.into()),
            operator: Some("Exists".into()),
            effect: Some("NoSchedule".into()),
            ..Default::default()
        });
    }

    let tmp_size = (r.storage_mb > 0).then(|| mebibytes(r.storage_mb));
    let container = Container {
        name: AGENT_CONTAINER.into(),
        image: Some(image.to_owned()),
        image_pull_policy: Some(config.image_pull_policy.clone()),
        env: Some(env_vars),
        resources: Some(resources),
        security_context: Some(SecurityContext {
            run_as_non_root: Some(true),
            run_as_user: Some(config.run_as_user),
            run_as_group: Some(config.run_as_user),
            allow_privilege_escalation: Some(false),
            privileged: Some(false),
            read_only_root_filesystem: Some(config.read_only_root_filesystem),
            capabilities: Some(Capabilities {
                drop: Some(vec!["ALL".into()]),
                add: None,
            }),
            ..Default::default()
        }),
        volume_mounts: Some(vec![VolumeMount {
            name: "tmp".into(),
            mount_path: "/tmp".into(),
            ..Default::default()
        }]),
        termination_message_policy: Some("FallbackToLogsOnError".into()),
        ..Default::default()
    };

    Pod {
        metadata: ObjectMeta {
            name: Some(pod_name(spec.worker_id)),
            namespace: Some(config.namespace.clone()),
            labels: Some(labels),
            ..Default::default()
        },
        spec: Some(PodSpec {
            containers: vec![container],
            restart_policy: Some("Never".into()),
            active_deadline_seconds: Some(active_deadline(config, spec)),
            termination_grace_period_seconds: Some(i64::try_from(grace).unwrap_or(i64::MAX)),
            automount_service_account_token: Some(false),
            service_account_name: config.service_account.clone(),
            enable_service_links: Some(false),
            node_selector: (!node_selector.is_empty()).then_some(node_selector),
            tolerations: (!tolerations.is_empty()).then_some(tolerations),
            image_pull_secrets: (!config.image_pull_secrets.is_empty()).then(|| {
                config
                    .image_pull_secrets
                    .iter()
                    .map(|n| LocalObjectReference { name: n.clone() })
                    .collect()
            }),
            security_context: Some(PodSecurityContext {
                run_as_non_root: Some(true),
                run_as_user: Some(config.run_as_user),
                run_as_group: Some(config.run_as_user),
                fs_group: Some(config.run_as_user),
                seccomp_profile: Some(SeccompProfile {
                    type_: "RuntimeDefault".into(),
                    localhost_profile: None,
                }),
                ..Default::default()
            }),
            volumes: Some(vec![Volume {
                name: "tmp".into(),
                empty_dir: Some(EmptyDirVolumeSource {
                    size_limit: tmp_size,
                    ..Default::default()
                }),
                ..Default::default()
            }]),
            ..Default::default()
        }),
        status: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hodei_core::JobResources;

    fn spec() -> WorkerSpec {
        let mut s = WorkerSpec::new(
            WorkerId::new(),
            ProviderId::new(),
            "http://hodei:50051",
            "s3cr3t-otp",
        );
        s.resources = JobResources {
            cpu_cores: 1.5,
            memory_mb: 768,
            storage_mb: 2048,
            gpu_required: true,
            architecture: Some("aarch64".into()),
        };
        s.labels.insert("team".into(), "build".into());
        s.labels.insert("bad key!".into(), "x".into());
        s
    }

    #[test]
    fn the_token_is_only_in_the_secret() {
        let c = KubernetesProviderConfig::default();
        let s = spec();
        let pid = ProviderId::new();
        let pod = build_pod(&c, pid, &s, "img:1");
        let json = serde_json::to_string(&pod).unwrap();
        assert!(!json.contains("s3cr3t-otp"), "{json}");
        assert!(json.contains("secretKeyRef"), "{json}");
        let secret = build_secret(&c, pid, &s);
        let data = secret.data.unwrap();
        assert_eq!(data[OTP_KEY].0, b"s3cr3t-otp");
        assert_eq!(secret.immutable, Some(true));
    }

    #[test]
    fn resources_selectors_and_hardening() {
        let c = KubernetesProviderConfig::default()
            .with_node_selector("pool", "ci")
            .with_toleration(super::super::Toleration::equal(
                "dedicated",
                "ci",
                Some("NoSchedule"),
            ));
        let s = spec();
        let pod = build_pod(&c, ProviderId::new(), &s, "img:1");
        let ps = pod.spec.unwrap();
        assert_eq!(ps.restart_policy.as_deref(), Some("Never"));
        assert_eq!(ps.automount_service_account_token, Some(false));
        let sel = ps.node_selector.unwrap();
        assert_eq!(sel["kubernetes.io/arch"], "arm64");
        assert_eq!(sel["pool"], "ci");
        assert_eq!(ps.tolerations.unwrap().len(), 2);
        let ctr = &ps.containers[0];
        let limits = ctr.resources.as_ref().unwrap().limits.as_ref().unwrap();
        assert_eq!(limits["cpu"].0, "1500m");
        assert_eq!(limits["memory"].0, "768Mi");
        assert_eq!(limits["ephemeral-storage"].0, "2048Mi");
        assert_eq!(limits[GPU_RESOURCE].0, "1");
        let sc = ctr.security_context.as_ref().unwrap();
        assert_eq!(sc.allow_privilege_escalation, Some(false));
        assert_eq!(sc.read_only_root_filesystem, Some(true));
        assert_eq!(
            sc.capabilities.as_ref().unwrap().drop.as_deref(),
            Some(&["ALL".to_owned()][..])
        );
        let labels = pod.metadata.labels.unwrap();
        assert_eq!(labels[LABEL_MANAGED], "true");
        assert_eq!(labels["team"], "build");
        assert!(!labels.contains_key("bad key!"));
        assert_eq!(ps.termination_grace_period_seconds, Some(40));
        assert_eq!(ps.active_deadline_seconds, Some(6 * 3600));
    }

    #[test]
    fn job_timeout_sets_the_deadline() {
        let c = KubernetesProviderConfig::default();
        let mut s = spec();
        s.env.insert(ENV_JOB_TIMEOUT_SECS.into(), "60".into());
        assert_eq!(active_deadline(&c, &s), 60 + 300 + 40);
    }

    #[test]
    fn label_syntax() {
        assert!(is_label_key("hodei.worker-id"));
        assert!(is_label_key("example.com/team"));
        assert!(!is_label_key("Bad.Prefix_/x"));
        assert!(!is_label_key("a b"));
        assert!(is_label_value(""));
        assert!(!is_label_value("-x"));
        assert!(!is_label_value(&"a".repeat(64)));
    }
}
