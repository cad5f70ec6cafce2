//! TemplateService: versioned job templates over [`TemplateService`](crate::control::TemplateService).

use tonic::{Request, Response, Status};

use super::{parse_id, status_from};
use crate::control::{ControlPlane, TemplateService, template_target};
use crate::domain::ids::CorrelationId;
use crate::domain::template::JobTemplate;
use crate::proto::v1;
use crate::proto::v1::template_service_server::TemplateService as TemplateServiceRpc;
use crate::store::AuditAction;

/// TemplateService over the control plane.
#[derive(Debug, Clone)]
pub struct TemplateApi {
    cp: ControlPlane,
    templates: TemplateService,
}

impl TemplateApi {
    /// The service.
    #[must_use]
    pub fn new(cp: ControlPlane) -> Self {
        Self {
            templates: TemplateService::new(cp.clone()),
            cp,
        }
    }
}

/// `0` on the wire means "the latest".
fn version(v: u32) -> Option<u32> {
    (v != 0).then_some(v)
}

#[tonic::async_trait]
impl TemplateServiceRpc for TemplateApi {
    async fn create_template(
        &self,
        req: Request<v1::CreateTemplateRequest>,
    ) -> Result<Response<v1::CreateTemplateResponse>, Status> {
        let actor = super::actor_of(&req);
        let wire = req
            .into_inner()
            .template
            .ok_or_else(|| Status::invalid_argument("template: must be set"))?;
        let target = template_target(&wire.name);
        let template = JobTemplate::try_from(wire).map_err(|e| status_from(e.into()))?;
        let result = self.templates.create(template).await;
        self.cp
            .audit()
            .record(&actor, AuditAction::TemplateCreate, target, &result)
            .await;
        let stored = result.map_err(status_from)?;
        Ok(Response::new(v1::CreateTemplateResponse {
            template: Some((&stored).into()),
        }))
    }

    async fn get_template(
        &self,
        req: Request<v1::GetTemplateRequest>,
    ) -> Result<Response<v1::GetTemplateResponse>, Status> {
        let r = req.into_inner();
        let t = self
            .templates
            .get(&r.name, version(r.version))
            .await
            .map_err(status_from)?;
        Ok(Response::new(v1::GetTemplateResponse {
            template: Some((&t).into()),
        }))
    }

    async fn list_templates(
        &self,
        _req: Request<v1::ListTemplatesRequest>,
    ) -> Result<Response<v1::ListTemplatesResponse>, Status> {
        let all = self.templates.list().await.map_err(status_from)?;
        Ok(Response::new(v1::ListTemplatesResponse {
            templates: all.iter().map(Into::into).collect(),
        }))
    }

    async fn run_template(
        &self,
        req: Request<v1::RunTemplateRequest>,
    ) -> Result<Response<v1::RunTemplateResponse>, Status> {
        let actor = super::actor_of(&req);
        let r = req.into_inner();
        let correlation = if r.correlation_id.is_empty() {
            None
        } else {
            Some(parse_id::<CorrelationId>(
                &r.correlation_id,
                "correlation_id",
            )?)
        };
        let values = r.parameters.into_iter().collect();
        let result = self
            .templates
            .run(&r.name, version(r.version), &values, correlation)
            .await;
        self.cp
            .audit()
            .record(
                &actor,
                AuditAction::TemplateRun,
                template_target(&r.name),
                &result,
            )
            .await;
        let job = result.map_err(status_from)?;
        Ok(Response::new(v1::RunTemplateResponse {
            job: Some((&job).into()),
        }))
    }
}
