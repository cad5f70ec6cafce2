//! `SimProvider`: a provider whose "workers" are sessions the simulated agents
//! open. Creating a worker hands its id and one-time token to the agent swarm
//! (over the sim server's stdout); nothing is started on this machine.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use async_trait::async_trait;
use futures::stream::{self, BoxStream, StreamExt};
use hodei_core::provider::{
    HealthStatus, WorkerEvent, WorkerEventSource, WorkerHealth, WorkerLifecycle,
    WorkerProviderIdentity,
};
use hodei_core::{
    ProviderCapabilities, ProviderError, ProviderId, ProviderType, WorkerHandle, WorkerId,
    WorkerSpec, WorkerState,
};
use tokio::sync::mpsc;

/// What a simulated agent needs to register: its id and its one-time token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credential {
    /// The worker id the server expects.
    pub worker_id: WorkerId,
    /// The one-time registration token.
    pub otp: String,
}

impl Credential {
    /// The line the sim server prints for the swarm: `CRED <worker_id> <otp>`.
    #[must_use]
    pub fn to_line(&self) -> String {
        format!("CRED {} {}", self.worker_id, self.otp)
    }

    /// Reads a line printed by [`Credential::to_line`].
    #[must_use]
    pub fn from_line(line: &str) -> Option<Self> {
        let mut parts = line.strip_prefix("CRED ")?.split(' ');
        let worker_id = parts.next()?.parse().ok()?;
        let otp = parts.next()?.to_owned();
        Some(Self { worker_id, otp })
    }
}

/// Hands each created worker's credential to the swarm; tracks which exist.
pub struct SimProvider {
    id: ProviderId,
    credentials: mpsc::UnboundedSender<Credential>,
    workers: Mutex<HashMap<WorkerId, WorkerState>>,
}

impl SimProvider {
    /// A provider sending credentials into `credentials`.
    #[must_use]
    pub fn new(id: ProviderId, credentials: mpsc::UnboundedSender<Credential>) -> Arc<Self> {
        Arc::new(Self {
            id,
            credentials,
            workers: Mutex::new(HashMap::new()),
        })
    }

    fn workers(&self) -> std::sync::MutexGuard<'_, HashMap<WorkerId, WorkerState>> {
        self.workers.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[async_trait]
impl WorkerLifecycle for SimProvider {
    async fn create_worker(&self, spec: &WorkerSpec) -> Result<WorkerHandle, ProviderError> {
        self.credentials
            .send(Credential {
                worker_id: spec.worker_id,
                otp: spec.otp.clone(),
            })
            .map_err(|_| ProviderError::Internal("the agent swarm is gone".into()))?;
        self.workers()
            .insert(spec.worker_id, WorkerState::Connecting);
        Ok(WorkerHandle::new(
            spec.worker_id,
            self.id,
            spec.worker_id.to_string(),
        ))
    }

    async fn get_worker_status(&self, h: &WorkerHandle) -> Result<WorkerState, ProviderError> {
        Ok(self
            .workers()
            .get(&h.worker_id)
            .copied()
            .unwrap_or(WorkerState::Terminated))
    }

    async fn destroy_worker(&self, h: &WorkerHandle) -> Result<(), ProviderError> {
        self.workers().remove(&h.worker_id);
        Ok(())
    }
}

#[async_trait]
impl WorkerHealth for SimProvider {
    async fn health_check(&self) -> Result<HealthStatus, ProviderError> {
        Ok(HealthStatus::healthy("simulated agents"))
    }
}

impl WorkerEventSource for SimProvider {
    fn events(&self) -> BoxStream<'static, WorkerEvent> {
        stream::empty().boxed()
    }
}

impl WorkerProviderIdentity for SimProvider {
    fn id(&self) -> ProviderId {
        self.id
    }
    fn name(&self) -> &str {
        "sim"
    }
    fn provider_type(&self) -> ProviderType {
        ProviderType::Custom
    }
    fn capabilities(&self) -> ProviderCapabilities {
        ProviderCapabilities::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credential_lines_round_trip() {
        let c = Credential {
            worker_id: WorkerId::new(),
            otp: "abc-123".into(),
        };
        assert_eq!(Credential::from_line(&c.to_line()), Some(c));
        assert_eq!(Credential::from_line("READY 1"), None);
        assert_eq!(Credential::from_line("CRED not-a-uuid x"), None);
    }
}
