//! Operator actions on one provider: set its state, remove it.

use axum::Json;
use axum::extract::{Path, State};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::AppState;
use super::dto::ProviderDto;
use super::error::{ApiError, ApiJson, ErrorBody};
use crate::control::{Actor, provider_target};
use crate::domain::provider::{Provider, ProviderStatus};
use crate::store::AuditAction;

/// Body of `PATCH /api/v1/providers/{id}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct SetProviderStateRequest {
    /// `active`, `maintenance` (out of scheduling, workers drained) or
    /// `disabled` (the same, and it may then be removed).
    #[schema(example = "maintenance", pattern = "^(active|maintenance|disabled)$")]
    pub state: String,
}

/// The operator state named by `s`.
///
/// # Errors
/// 400 naming `state` for anything but `active`, `maintenance` or `disabled`.
pub(super) fn parse_state(s: &str) -> Result<ProviderStatus, ApiError> {
    // Exactly as documented (the schema's pattern): what is accepted is
    // what the OpenAPI document says.
    match s {
        "active" => Ok(ProviderStatus::Active),
        "maintenance" => Ok(ProviderStatus::Maintenance),
        "disabled" => Ok(ProviderStatus::Disabled),
        other => Err(ApiError::invalid_argument(
            "state",
            format!("{other:?} is not a state an operator sets (active, maintenance or disabled)"),
        )),
    }
}

async fn dto(s: &AppState, p: &Provider) -> Result<ProviderDto, ApiError> {
    let live = s.cp.live_workers_by_provider().await?;
    Ok(ProviderDto::new(p, live.get(&p.id()).copied().unwrap_or(0)))
}

/// Sets a provider's state. Leaving `active` takes it out of scheduling at
/// once: idle workers are retired, busy ones drained (running jobs finish).
#[utoipa::path(
    patch,
    path = "/api/v1/providers/{id}",
    tag = "providers",
    params(("id" = String, Path, description = "Provider id or name")),
    request_body(content = SetProviderStateRequest, content_type = "application/json"),
    responses(
        (status = 200, description = "The provider in its new state", body = ProviderDto),
        (status = 400, description = "Malformed body or unknown state", body = ErrorBody),
        (status = 404, description = "No such provider", body = ErrorBody),
        (status = 503, description = "A store is unavailable", body = ErrorBody),
    )
)]
pub(super) async fn set_provider_state(
    State(s): State<AppState>,
    actor: Actor,
    Path(id): Path<String>,
    ApiJson(req): ApiJson<SetProviderStateRequest>,
) -> Result<Json<ProviderDto>, ApiError> {
    let state = parse_state(&req.state)?;
    let result = s.cp.set_provider_state(&id, state).await;
    let target = provider_target(result.as_ref().map_or(id.as_str(), |p| p.name()));
    s.cp.audit()
        .record_detail(
            &actor,
            AuditAction::ProviderUpdate,
            target,
            &result,
            format!("state {state}"),
        )
        .await;
    let p = result?;
    Ok(Json(dto(&s, &p).await?))
}

/// Removes a provider that is `disabled` and has no workers left.
#[utoipa::path(
    delete,
    path = "/api/v1/providers/{id}",
    tag = "providers",
    params(("id" = String, Path, description = "Provider id or name")),
    responses(
        (status = 200, description = "The removed provider", body = ProviderDto),
        (status = 404, description = "No such provider", body = ErrorBody),
        (status = 409, description = "Not disabled, or workers are still draining", body = ErrorBody),
        (status = 503, description = "A store is unavailable", body = ErrorBody),
    )
)]
pub(super) async fn remove_provider(
    State(s): State<AppState>,
    actor: Actor,
    Path(id): Path<String>,
) -> Result<Json<ProviderDto>, ApiError> {
    let result = s.cp.remove_provider(&id).await;
    let target = provider_target(result.as_ref().map_or(id.as_str(), |p| p.name()));
    s.cp.audit()
        .record(&actor, AuditAction::ProviderDelete, target, &result)
        .await;
    let p = result?;
    Ok(Json(ProviderDto::new(&p, 0)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_operator_states_parse_and_a_bad_one_names_the_field() {
        assert_eq!(
            parse_state("maintenance").unwrap(),
            ProviderStatus::Maintenance
        );
        assert_eq!(parse_state("active").unwrap(), ProviderStatus::Active);
        assert_eq!(parse_state("disabled").unwrap(), ProviderStatus::Disabled);
        // Exactly the documented names: what the OpenAPI pattern says.
        for bad in [
            "overloaded",
            "unhealthy",
            "",
            "paused",
            "Maintenance",
            " active ",
        ] {
            let e = parse_state(bad).unwrap_err();
            assert_eq!(e.status(), axum::http::StatusCode::BAD_REQUEST, "{bad}");
            assert_eq!(e.detail().field.as_deref(), Some("state"), "{bad}");
        }
    }
}
