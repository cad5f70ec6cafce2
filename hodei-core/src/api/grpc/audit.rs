//! AuditService: the audit log over gRPC (`hodei audit list`).

use tonic::{Request, Response, Status};

use super::status_from;
use crate::control::ControlPlane;
use crate::proto::convert::to_millis;
use crate::proto::v1;
use crate::proto::v1::audit_service_server::AuditService;
use crate::store::audit::{DEFAULT_AUDIT_PAGE, MAX_AUDIT_PAGE};
use crate::store::{AuditAction, AuditFilter};

/// AuditService over the control plane.
#[derive(Debug, Clone)]
pub struct AuditApi {
    cp: ControlPlane,
}

impl AuditApi {
    /// The service.
    #[must_use]
    pub fn new(cp: ControlPlane) -> Self {
        Self { cp }
    }
}

fn non_empty(s: String) -> Option<String> {
    (!s.is_empty()).then_some(s)
}

#[tonic::async_trait]
impl AuditService for AuditApi {
    async fn list_audit(
        &self,
        req: Request<v1::ListAuditRequest>,
    ) -> Result<Response<v1::ListAuditResponse>, Status> {
        let r = req.into_inner();
        let action = if r.action.is_empty() {
            None
        } else {
            Some(
                r.action
                    .parse::<AuditAction>()
                    .map_err(|e| Status::invalid_argument(format!("action: {e}")))?,
            )
        };
        let since = if r.since_ms == 0 {
            None
        } else {
            Some(
                chrono::DateTime::from_timestamp_millis(r.since_ms).ok_or_else(|| {
                    Status::invalid_argument(format!("since_ms: {} is out of range", r.since_ms))
                })?,
            )
        };
        let limit = match r.limit {
            0 => DEFAULT_AUDIT_PAGE,
            n => {
                let n = usize::try_from(n).unwrap_or(usize::MAX);
                if n > MAX_AUDIT_PAGE {
                    return Err(Status::invalid_argument(format!(
                        "limit: at most {MAX_AUDIT_PAGE}"
                    )));
                }
                n
            }
        };
        let filter = AuditFilter {
            actor: non_empty(r.actor),
            action,
            target: non_empty(r.target),
            since,
            before: (r.before != 0).then_some(r.before),
            limit: Some(limit),
        };
        let entries = self.cp.audit().list(&filter).await.map_err(status_from)?;
        let next_before = if entries.len() == limit {
            entries.last().map_or(0, |e| e.id)
        } else {
            0
        };
        Ok(Response::new(v1::ListAuditResponse {
            entries: entries
                .iter()
                .map(|e| v1::AuditEntry {
                    id: e.id,
                    at_ms: to_millis(e.entry.at),
                    actor: e.entry.actor.clone(),
                    action: e.entry.action.as_str().to_owned(),
                    target: e.entry.target.clone(),
                    outcome: e.entry.outcome.as_str().to_owned(),
                    detail: e.entry.detail.clone(),
                })
                .collect(),
            next_before,
        }))
    }
}
