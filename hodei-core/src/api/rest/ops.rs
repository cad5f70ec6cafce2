//! Workers, providers, health, readiness and Prometheus metrics.

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::AppState;
use super::dto::{ProviderDto, ProviderList, RegisterProviderRequest, WorkerDto, WorkerList};
use super::error::{ApiError, ApiJson, ErrorBody};
use crate::domain::job::JobState;
use crate::domain::provider::ProviderStatus;
use crate::domain::worker::WorkerState;

/// Every worker the registry knows, with its provider's name.
#[utoipa::path(
    get,
    path = "/api/v1/workers",
    tag = "workers",
    responses(
        (status = 200, description = "The workers", body = WorkerList),
        (status = 503, description = "A store is unavailable", body = ErrorBody),
    )
)]
pub(super) async fn list_workers(State(s): State<AppState>) -> Result<Json<WorkerList>, ApiError> {
    let workers = s.cp.list_workers(true).await?;
    Ok(Json(WorkerList {
        workers: workers
            .iter()
            .map(|l| WorkerDto::new(&l.worker, &l.provider_name))
            .collect(),
    }))
}

/// The registered providers.
#[utoipa::path(
    get,
    path = "/api/v1/providers",
    tag = "providers",
    responses(
        (status = 200, description = "The providers", body = ProviderList),
        (status = 503, description = "A store is unavailable", body = ErrorBody),
    )
)]
pub(super) async fn list_providers(
    State(s): State<AppState>,
) -> Result<Json<ProviderList>, ApiError> {
    let providers = s.cp.list_providers().await?;
    let live = s.cp.live_workers_by_provider().await?;
    Ok(Json(ProviderList {
        providers: providers
            .iter()
            .map(|p| ProviderDto::new(p, live.get(&p.id()).copied().unwrap_or(0)))
            .collect(),
    }))
}

/// Registers a provider from its configuration (through the server's
/// provider factory).
#[utoipa::path(
    post,
    path = "/api/v1/providers",
    tag = "providers",
    request_body(content = RegisterProviderRequest, content_type = "application/json"),
    responses(
        (status = 201, description = "Registered", body = ProviderDto),
        (status = 400, description = "Malformed body or configuration", body = ErrorBody),
        (status = 409, description = "Name taken, or this server registers providers only in code", body = ErrorBody),
        (status = 503, description = "The provider or a store is unavailable", body = ErrorBody),
    )
)]
pub(super) async fn register_provider(
    State(s): State<AppState>,
    actor: crate::control::Actor,
    ApiJson(req): ApiJson<RegisterProviderRequest>,
) -> Result<Response, ApiError> {
    if req.name.trim().is_empty() {
        return Err(ApiError::invalid_argument("name", "must not be empty"));
    }
    let result =
        s.cp.register_provider_config(&req.name, req.config, req.max_workers)
            .await;
    s.cp.audit()
        .record(
            &actor,
            crate::store::AuditAction::ProviderRegister,
            crate::control::provider_target(&req.name),
            &result,
        )
        .await;
    let p = result?;
    Ok((StatusCode::CREATED, Json(ProviderDto::new(&p, 0))).into_response())
}

/// Liveness: 200 while the process serves requests.
#[utoipa::path(
    get,
    path = "/healthz",
    tag = "operations",
    responses((status = 200, description = "Alive", body = String, content_type = "text/plain"))
)]
pub(super) async fn healthz() -> &'static str {
    "ok"
}

/// Readiness: 200 when the stores answer, else 503 with the reason.
#[utoipa::path(
    get,
    path = "/readyz",
    tag = "operations",
    responses(
        (status = 200, description = "Ready", body = String, content_type = "text/plain"),
        (status = 503, description = "Not ready, with the reason", body = String, content_type = "text/plain"),
    )
)]
pub(super) async fn readyz(State(s): State<AppState>) -> Response {
    let queue = s.cp.queue_status().await;
    // A count, not the list: probes come often and workers can be many.
    let workers = s.cp.stores().workers.count_by_state().await;
    match (queue, workers) {
        (Ok(_), Ok(_)) => (StatusCode::OK, "ready").into_response(),
        (Err(e), _) => (StatusCode::SERVICE_UNAVAILABLE, format!("not ready: {e}")).into_response(),
        (_, Err(e)) => (StatusCode::SERVICE_UNAVAILABLE, format!("not ready: {e}")).into_response(),
    }
}

/// Every provider status, so each gauge is present even at zero.
const PROVIDER_STATUSES: [ProviderStatus; 5] = [
    ProviderStatus::Active,
    ProviderStatus::Maintenance,
    ProviderStatus::Disabled,
    ProviderStatus::Overloaded,
    ProviderStatus::Unhealthy,
];

/// Gauges read from the stores at scrape time, the control plane's
/// histograms and counters ([`crate::telemetry`]) and the certificate expiry
/// gauge, in the Prometheus text format (0.0.4).
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "operations",
    responses(
        (status = 200, description = "Prometheus text format", body = String, content_type = "text/plain; version=0.0.4"),
        (status = 503, description = "A store is unavailable", body = ErrorBody),
    )
)]
pub(super) async fn metrics(State(s): State<AppState>) -> Result<Response, ApiError> {
    let stores = s.cp.stores();
    let jobs = stores
        .jobs
        .count_by_state()
        .await
        .map_err(crate::control::ControlError::from)?;
    let workers = stores
        .workers
        .count_by_state()
        .await
        .map_err(crate::control::ControlError::from)?;
    let providers = s.cp.list_providers().await?;
    let depth = stores
        .queue
        .len()
        .await
        .map_err(crate::control::ControlError::from)?;
    let status = s.cp.queue_status().await?;

    // The gauges of this control plane's stores go through a recorder of
    // their own, made for this scrape: another control plane in the process
    // (or a concurrent scrape) never mixes its values in, and they are served
    // even when the embedding application installed its own global recorder.
    let gauges = crate::telemetry::builder().build_recorder();
    metrics::with_local_recorder(&gauges, || {
        metrics::describe_gauge!("hodei_jobs", "Jobs per state.");
        for st in JobState::ALL {
            let n = jobs.get(&st).copied().unwrap_or(0);
            metrics::gauge!("hodei_jobs", "state" => st.as_str()).set(n as f64);
        }
        metrics::describe_gauge!("hodei_workers", "Workers per state.");
        for st in WorkerState::ALL {
            let n = workers.get(&st).copied().unwrap_or(0);
            metrics::gauge!("hodei_workers", "state" => st.as_str()).set(n as f64);
        }
        metrics::describe_gauge!("hodei_providers", "Registered providers per status.");
        for st in PROVIDER_STATUSES {
            let n = providers.iter().filter(|p| p.status() == st).count();
            metrics::gauge!("hodei_providers", "status" => st.to_string()).set(n as f64);
        }
        metrics::describe_gauge!("hodei_queue_depth", "Jobs waiting in the queue.");
        metrics::gauge!("hodei_queue_depth").set(depth as f64);
        metrics::describe_gauge!(
            "hodei_queue_oldest_pending_age_seconds",
            "Age of the oldest waiting job."
        );
        metrics::gauge!("hodei_queue_oldest_pending_age_seconds")
            .set(status.oldest_pending_age_ms as f64 / 1000.0);
    });
    let mut out = gauges.handle().render();
    if let Some(global) = crate::telemetry::handle() {
        out.push_str(&global.render());
    }
    crate::cert_expiry::write_prometheus(&mut out);
    Ok((
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        out,
    )
        .into_response())
}
