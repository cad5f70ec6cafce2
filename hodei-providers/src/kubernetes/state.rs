//! Pod phase and container state → [`WorkerState`], and the pod failures that
//! must become clear errors instead of hanging (ImagePullBackOff, Unschedulable).

use std::time::Duration;

use hodei_core::{ProviderError, WorkerState};
use k8s_openapi::api::core::v1::{ContainerStatus, Pod};
use k8s_openapi::jiff::Timestamp;

use super::config::IMAGE_HINT;
use super::objects::AGENT_CONTAINER;

/// Waiting reasons that mean the image cannot be pulled.
const IMAGE_REASONS: &[&str] = &[
    "ImagePullBackOff",
    "ErrImagePull",
    "InvalidImageName",
    "ErrImageNeverPull",
    "RegistryUnavailable",
];
/// Waiting reasons that mean the container cannot be configured or created.
const CONFIG_REASONS: &[&str] = &[
    "CreateContainerConfigError",
    "CreateContainerError",
    "RunContainerError",
];

/// A pod that will not start on its own.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum PodProblem {
    /// The image cannot be pulled (`ImagePullBackOff`, `ErrImagePull`, …).
    ImagePull {
        /// The image.
        image: String,
        /// The kubelet's reason.
        reason: String,
        /// The kubelet's message.
        message: String,
    },
    /// No node can take the pod (`PodScheduled=False`, reason `Unschedulable`).
    Unschedulable {
        /// The scheduler's message (`0/3 nodes are available: …`).
        message: String,
    },
    /// The container cannot be created (missing secret, bad security context, …).
    ContainerConfig {
        /// The kubelet's reason.
        reason: String,
        /// The kubelet's message.
        message: String,
    },
}

impl PodProblem {
    /// The provider error it becomes once the failure grace has passed.
    #[must_use]
    pub fn into_error(self, pod: &str, waited: Duration) -> ProviderError {
        match self {
            PodProblem::ImagePull {
                image,
                reason,
                message,
            } => ProviderError::ImageNotFound {
                image,
                hint: format!(
                    "pod {pod} in {reason} for {}s ({message}); {IMAGE_HINT}",
                    waited.as_secs()
                ),
            },
            PodProblem::Unschedulable { message } => ProviderError::ResourceExhausted(format!(
                "pod {pod} unschedulable for {}s: {message}",
                waited.as_secs()
            )),
            PodProblem::ContainerConfig { reason, message } => ProviderError::InvalidConfig(
                format!("pod {pod}: {reason} for {}s: {message}", waited.as_secs()),
            ),
        }
    }
}

/// The agent container's status, if reported.
#[must_use]
pub fn agent_status(pod: &Pod) -> Option<&ContainerStatus> {
    pod.status
        .as_ref()?
        .container_statuses
        .as_ref()?
        .iter()
        .find(|c| c.name == AGENT_CONTAINER)
}

/// Why a pending pod will not start, if it will not.
#[must_use]
pub fn pod_problem(pod: &Pod) -> Option<PodProblem> {
    let status = pod.status.as_ref()?;
    if let Some(c) = status
        .conditions
        .as_ref()
        .and_then(|cs| cs.iter().find(|c| c.type_ == "PodScheduled"))
        && c.status == "False"
        && c.reason.as_deref() == Some("Unschedulable")
    {
        return Some(PodProblem::Unschedulable {
            message: c.message.clone().unwrap_or_default(),
        });
    }
    let waiting = agent_status(pod)?.state.as_ref()?.waiting.as_ref()?;
    let reason = waiting.reason.clone().unwrap_or_default();
    let message = waiting.message.clone().unwrap_or_default();
    if IMAGE_REASONS.contains(&reason.as_str()) {
        let image = agent_status(pod)
            .map(|c| c.image.clone())
            .filter(|i| !i.is_empty())
            .or_else(|| {
                pod.spec
                    .as_ref()
                    .and_then(|s| s.containers.first())
                    .and_then(|c| c.image.clone())
            })
            .unwrap_or_default();
        return Some(PodProblem::ImagePull {
            image,
            reason,
            message,
        });
    }
    if CONFIG_REASONS.contains(&reason.as_str()) {
        return Some(PodProblem::ContainerConfig { reason, message });
    }
    None
}

/// How long ago the pod was created (zero when unknown or in the future).
#[must_use]
pub fn pod_age(pod: &Pod, now: Timestamp) -> Duration {
    pod.metadata
        .creation_timestamp
        .as_ref()
        .and_then(|t| now.duration_since(t.0).try_into().ok())
        .unwrap_or(Duration::ZERO)
}

/// The worker state of a pod, or the error a stuck pod becomes after `grace`.
///
/// | pod | state |
/// |---|---|
/// | `metadata.deletionTimestamp` set | `Terminating` |
/// | `Pending` (scheduling, pulling, creating) | `Creating` |
/// | `Pending` in ImagePullBackOff / Unschedulable / CreateContainerConfigError past `grace` | error |
/// | `Running`, agent container running | `Ready` |
/// | `Running`, agent container waiting (restarting) | `Connecting` |
/// | `Running`, agent container terminated | `Terminated` |
/// | `Succeeded`, `Failed` | `Terminated` |
/// | `Unknown` (node unreachable) | `Connecting` |
///
/// # Errors
/// [`ProviderError::ImageNotFound`], [`ProviderError::ResourceExhausted`] or
/// [`ProviderError::InvalidConfig`] for a pod stuck longer than `grace`.
pub fn worker_state(
    pod: &Pod,
    now: Timestamp,
    grace: Duration,
) -> Result<WorkerState, ProviderError> {
    if pod.metadata.deletion_timestamp.is_some() {
        return Ok(WorkerState::Terminating);
    }
    let phase = pod
        .status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("Pending");
    match phase {
        "Succeeded" | "Failed" => Ok(WorkerState::Terminated),
        "Running" => {
            let state = agent_status(pod).and_then(|c| c.state.as_ref());
            Ok(match state {
                Some(s) if s.terminated.is_some() => WorkerState::Terminated,
                Some(s) if s.waiting.is_some() => WorkerState::Connecting,
                _ => WorkerState::Ready,
            })
        }
        "Unknown" => Ok(WorkerState::Connecting),
        _ => {
            if let Some(problem) = pod_problem(pod) {
                let age = pod_age(pod, now);
                if age >= grace {
                    let name = pod.metadata.name.as_deref().unwrap_or("?");
                    return Err(problem.into_error(name, age));
                }
            }
            Ok(WorkerState::Creating)
        }
    }
}

/// When the pod has ended: the agent's exit code (if known) and why, in words.
#[must_use]
pub fn pod_exit(pod: &Pod) -> Option<(Option<i32>, String)> {
    let status = pod.status.as_ref()?;
    let phase = status.phase.as_deref().unwrap_or("Pending");
    let terminated = agent_status(pod)
        .and_then(|c| c.state.as_ref())
        .and_then(|s| s.terminated.as_ref());
    if !matches!(phase, "Succeeded" | "Failed") && terminated.is_none() {
        return None;
    }
    let code = terminated.map(|t| t.exit_code);
    let pod_reason = status.reason.as_deref().unwrap_or_default();
    let reason = match (pod_reason, terminated) {
        ("Evicted", _) => format!(
            "pod evicted: {}",
            status.message.as_deref().unwrap_or("node pressure")
        ),
        ("DeadlineExceeded", _) => "pod exceeded its activeDeadlineSeconds".to_owned(),
        (_, Some(t)) => {
            let r = t.reason.as_deref().unwrap_or("Completed");
            match t.message.as_deref().filter(|m| !m.is_empty()) {
                Some(m) => format!("agent container {r} (exit code {}): {m}", t.exit_code),
                None => format!("agent container {r} (exit code {})", t.exit_code),
            }
        }
        ("", None) => format!("pod {phase}"),
        (r, None) => format!("pod {phase}: {r}"),
    };
    Some((code, reason))
}

/// Whether the agent container is running (for `Started` and start-up time).
#[must_use]
pub fn is_running(pod: &Pod) -> bool {
    pod.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")
        && agent_status(pod)
            .and_then(|c| c.state.as_ref())
            .is_some_and(|s| s.running.is_some())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(json: serde_json::Value) -> Pod {
        serde_json::from_value(json).unwrap()
    }

    const T0: &str = "2025-01-01T00:00:00Z";

    fn at(secs: i64) -> Timestamp {
        let t0: Timestamp = T0.parse().unwrap();
        Timestamp::from_second(t0.as_second() + secs).unwrap()
    }

    #[test]
    fn phases_map_to_states() {
        let g = Duration::from_secs(60);
        let pending = pod(serde_json::json!({
            "metadata": {"name": "p", "creationTimestamp": T0},
            "status": {"phase": "Pending"}
        }));
        assert_eq!(
            worker_state(&pending, at(1), g).unwrap(),
            WorkerState::Creating
        );
        let running = pod(serde_json::json!({
            "metadata": {"name": "p", "creationTimestamp": T0},
            "status": {"phase": "Running", "containerStatuses": [{
                "name": "agent", "image": "i", "imageID": "", "ready": true, "restartCount": 0,
                "state": {"running": {"startedAt": T0}}}]}
        }));
        assert_eq!(
            worker_state(&running, at(1), g).unwrap(),
            WorkerState::Ready
        );
        assert!(is_running(&running));
        let failed = pod(serde_json::json!({
            "metadata": {"name": "p", "creationTimestamp": T0},
            "status": {"phase": "Failed", "reason": "Evicted",
                "message": "The node was low on resource: memory."}
        }));
        assert_eq!(
            worker_state(&failed, at(1), g).unwrap(),
            WorkerState::Terminated
        );
        let (code, why) = pod_exit(&failed).unwrap();
        assert_eq!(code, None);
        assert!(why.contains("evicted") && why.contains("memory"), "{why}");
        let deleting = pod(serde_json::json!({
            "metadata": {"name": "p", "deletionTimestamp": T0},
            "status": {"phase": "Running"}
        }));
        assert_eq!(
            worker_state(&deleting, at(1), g).unwrap(),
            WorkerState::Terminating
        );
    }

    #[test]
    fn stuck_pods_become_errors_after_the_grace() {
        let g = Duration::from_secs(60);
        let backoff = pod(serde_json::json!({
            "metadata": {"name": "p", "creationTimestamp": T0},
            "status": {"phase": "Pending", "containerStatuses": [{
                "name": "agent", "image": "nope:1", "imageID": "", "ready": false, "restartCount": 0,
                "state": {"waiting": {"reason": "ImagePullBackOff",
                    "message": "Back-off pulling image \"nope:1\""}}}]}
        }));
        assert_eq!(
            worker_state(&backoff, at(10), g).unwrap(),
            WorkerState::Creating
        );
        match worker_state(&backoff, at(61), g) {
            Err(ProviderError::ImageNotFound { image, hint }) => {
                assert_eq!(image, "nope:1");
                assert!(hint.contains("ImagePullBackOff"), "{hint}");
            }
            other => panic!("{other:?}"),
        }
        let unschedulable = pod(serde_json::json!({
            "metadata": {"name": "p", "creationTimestamp": T0},
            "status": {"phase": "Pending", "conditions": [{"type": "PodScheduled",
                "status": "False", "reason": "Unschedulable",
                "message": "0/3 nodes are available: 3 Insufficient cpu."}]}
        }));
        match worker_state(&unschedulable, at(120), g) {
            Err(ProviderError::ResourceExhausted(m)) => {
                assert!(m.contains("Insufficient cpu"), "{m}")
            }
            other => panic!("{other:?}"),
        }
    }
}
