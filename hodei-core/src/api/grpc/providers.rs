//! ProviderManagementService.

use tonic::{Request, Response, Status};

use super::status_from;
use crate::control::{ControlPlane, provider_target};
use crate::domain::pricing::ResourcePricing;
use crate::domain::provider::ProviderConfig;
use crate::proto::convert::{
    provider_status_from_proto, provider_status_to_proto, provider_to_proto,
    provider_type_from_proto, to_millis,
};
use crate::proto::v1;
use crate::proto::v1::provider_management_service_server::ProviderManagementService;
use crate::store::AuditAction;

/// ProviderManagementService over the control plane.
#[derive(Debug, Clone)]
pub struct ProviderManagementApi {
    cp: ControlPlane,
}

impl ProviderManagementApi {
    /// The service.
    #[must_use]
    pub fn new(cp: ControlPlane) -> Self {
        Self { cp }
    }
}

impl ProviderManagementApi {
    /// Workers of `p` that are not gone.
    async fn live_workers(&self, p: &crate::domain::provider::Provider) -> Result<u32, Status> {
        let live = self
            .cp
            .live_workers_by_provider()
            .await
            .map_err(status_from)?;
        Ok(live.get(&p.id()).copied().unwrap_or(0))
    }
}

#[tonic::async_trait]
impl ProviderManagementService for ProviderManagementApi {
    async fn register_provider(
        &self,
        req: Request<v1::RegisterProviderRequest>,
    ) -> Result<Response<v1::RegisterProviderResponse>, Status> {
        let actor = super::actor_of(&req);
        let r = req.into_inner();
        if r.name.trim().is_empty() {
            return Err(Status::invalid_argument("name: must not be empty"));
        }
        let ty = provider_type_from_proto(r.provider_type, "provider_type")
            .map_err(|e| status_from(e.into()))?;
        let config: ProviderConfig = serde_json::from_str(&r.config_json)
            .map_err(|e| Status::invalid_argument(format!("config_json: {e}")))?;
        if config.provider_type() != ty {
            return Err(Status::invalid_argument(format!(
                "config_json: configuration is for {}, provider_type says {ty}",
                config.provider_type()
            )));
        }
        let result = self
            .cp
            .register_provider_config(&r.name, config, r.max_workers)
            .await;
        self.cp
            .audit()
            .record(
                &actor,
                AuditAction::ProviderRegister,
                provider_target(&r.name),
                &result,
            )
            .await;
        let p = result.map_err(status_from)?;
        Ok(Response::new(v1::RegisterProviderResponse {
            provider: Some(provider_to_proto(&p, 0)),
        }))
    }

    async fn set_provider_state(
        &self,
        req: Request<v1::SetProviderStateRequest>,
    ) -> Result<Response<v1::SetProviderStateResponse>, Status> {
        let actor = super::actor_of(&req);
        let r = req.into_inner();
        let state =
            provider_status_from_proto(r.state, "state").map_err(|e| status_from(e.into()))?;
        let result = self.cp.set_provider_state(&r.provider, state).await;
        let target = provider_target(result.as_ref().map_or(r.provider.as_str(), |p| p.name()));
        self.cp
            .audit()
            .record_detail(
                &actor,
                AuditAction::ProviderUpdate,
                target,
                &result,
                format!("state {state}"),
            )
            .await;
        let p = result.map_err(status_from)?;
        let n = self.live_workers(&p).await?;
        Ok(Response::new(v1::SetProviderStateResponse {
            provider: Some(provider_to_proto(&p, n)),
        }))
    }

    async fn remove_provider(
        &self,
        req: Request<v1::RemoveProviderRequest>,
    ) -> Result<Response<v1::RemoveProviderResponse>, Status> {
        let actor = super::actor_of(&req);
        let id = req.get_ref().provider.as_str();
        let result = self.cp.remove_provider(id).await;
        let target = provider_target(result.as_ref().map_or(id, |p| p.name()));
        self.cp
            .audit()
            .record(&actor, AuditAction::ProviderDelete, target, &result)
            .await;
        let p = result.map_err(status_from)?;
        Ok(Response::new(v1::RemoveProviderResponse {
            provider: Some(provider_to_proto(&p, 0)),
        }))
    }

    async fn set_provider_pricing(
        &self,
        req: Request<v1::SetProviderPricingRequest>,
    ) -> Result<Response<v1::SetProviderPricingResponse>, Status> {
        let r = req.into_inner();
        let pricing = ResourcePricing {
            price_per_cpu_hour: r.price_per_cpu_hour,
            price_per_gib_hour: r.price_per_gib_hour,
        };
        // Validated (InvalidArgument naming the field) by the control plane.
        let p = self
            .cp
            .set_provider_pricing(&r.provider, Some(pricing))
            .await
            .map_err(status_from)?;
        let stored = p.pricing().unwrap_or_default();
        let n = self.live_workers(&p).await?;
        Ok(Response::new(v1::SetProviderPricingResponse {
            provider: Some(provider_to_proto(&p, n)),
            price_per_cpu_hour: stored.price_per_cpu_hour,
            price_per_gib_hour: stored.price_per_gib_hour,
        }))
    }

    async fn list_providers(
        &self,
        _req: Request<v1::ListProvidersRequest>,
    ) -> Result<Response<v1::ListProvidersResponse>, Status> {
        let providers = self.cp.list_providers().await.map_err(status_from)?;
        let live = self
            .cp
            .live_workers_by_provider()
            .await
            .map_err(status_from)?;
        Ok(Response::new(v1::ListProvidersResponse {
            providers: providers
                .iter()
                .map(|p| provider_to_proto(p, live.get(&p.id()).copied().unwrap_or(0)))
                .collect(),
        }))
    }

    async fn get_provider_health(
        &self,
        req: Request<v1::GetProviderHealthRequest>,
    ) -> Result<Response<v1::GetProviderHealthResponse>, Status> {
        let p = self
            .cp
            .get_provider(&req.get_ref().provider)
            .await
            .map_err(status_from)?;
        let h = self
            .cp
            .check_provider_health(p.id())
            .await
            .map_err(status_from)?;
        let p = self
            .cp
            .get_provider(&p.id().to_string())
            .await
            .map_err(status_from)?;
        Ok(Response::new(v1::GetProviderHealthResponse {
            provider_id: p.id().to_string(),
            status: provider_status_to_proto(p.status()) as i32,
            healthy: h.healthy,
            message: h.message,
            latency_ms: h.latency.as_millis() as u64,
            checked_at_ms: p.last_health_check().map(to_millis).unwrap_or_default(),
        }))
    }
}
