//! The REST adapter (axum): jobs, logs (text, followed text, Server-Sent
//! Events), workers, providers, health, readiness, Prometheus metrics and the
//! OpenAPI document, each a thin translation onto [`ControlPlane`] methods.
//!
//! Every error is JSON (`{"error": {"code", "message", "field", "details"}}`,
//! see [`ErrorBody`]), including malformed bodies, unknown routes and wrong
//! methods.
//!
//! | route | |
//! |---|---|
//! | `POST /api/v1/jobs` | submit a `JobSpec` → 201 [`JobDto`] |
//! | `GET /api/v1/jobs?state=&limit=` | list, newest first |
//! | `GET /api/v1/jobs/{id}` | one job |
//! | `POST /api/v1/jobs/{id}/cancel` | cancel (optional `{"reason": "..."}`) |
//! | `POST /api/v1/jobs/{id}/retry` | run a finished job again → 201 new [`JobDto`] |
//! | `GET /api/v1/jobs/{id}/artifacts`, `…/artifacts/{name}` | list a job's artifacts, download one |
//! | `GET /api/v1/jobs/{id}/logs` | text; `?follow=true` streams; `Accept: text/event-stream` → SSE |
//! | `GET /api/v1/jobs/{id}/logs/lines?attempt=&from_line=&limit=&contains=` | a page of the log as JSON |
//! | `GET /api/v1/jobs/{id}/events` | the job's state changes with their times |
//! | `POST/GET /api/v1/templates` | store a template (its next version) / list the latest of each |
//! | `GET /api/v1/templates/{name}?version=` | one template version (default: the latest) |
//! | `POST /api/v1/templates/{name}/run` | fill its parameters and queue the job → 201 [`JobDto`] |
//! | `GET /api/v1/workers`, `GET/POST /api/v1/providers` | listings, registration |
//! | `GET /api/v1/audit?actor=&action=&target=&since=&before=&limit=` | the audit log, newest first |
//! | `PATCH /api/v1/providers/{id}` | `{"state": "active\|maintenance\|disabled"}` (drains its workers) |
//! | `DELETE /api/v1/providers/{id}` | removes a disabled provider without workers |
//! | `GET /healthz`, `/readyz`, `/metrics`, `/api/v1/openapi.json` | operations |
//! | `GET /`, `/ui/*` | the web dashboard (no token needed for its assets) |
//!
//! ```no_run
//! # async fn demo() -> std::io::Result<()> {
//! use hodei_core::control::ControlPlane;
//! let cp = ControlPlane::builder().build();
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
//! hodei_core::api::rest::serve_rest(cp, listener, async {
//!     let _ = tokio::signal::ctrl_c().await;
//! })
//! .await
//! # }
//! ```

mod artifacts;
mod audit;
mod dashboard;
mod dto;
mod error;
mod job_events;
mod jobs;
mod log_lines;
mod logs;
mod ops;
mod provider_admin;
mod scheduling;
mod templates;

use std::future::Future;

use axum::Router;
use axum::http::StatusCode;
use axum::routing::{get, patch, post};
use tokio::sync::watch;
use utoipa::OpenApi;

pub use artifacts::{ArtifactDto, ArtifactList, SHA256_HEADER};
pub use audit::{AuditEntryDto, AuditPage};
pub use dto::{
    CancelRequest, JobDto, JobList, JobProgressDto, JobStateDto, ProviderDto, ProviderList,
    RegisterProviderRequest, WorkerDto, WorkerList, WorkerStatsDto,
};
pub use error::{ApiError, ApiJson, ErrorBody, ErrorDetail, FieldDetail, OptionalApiJson};
pub use job_events::{JobEventDto, JobEventList};
pub use log_lines::{AttemptLinesDto, LogLineDto, LogLinesPage};
pub use provider_admin::SetProviderStateRequest;
pub use scheduling::{
    ConcurrencyLimitDto, ConcurrencyLimitList, ProviderPricingDto, SchedulerDto,
    SetConcurrencyLimitRequest,
};
pub use templates::{
    ParameterTypeDto, ParameterValue, RunTemplateRequest, TemplateDto, TemplateList,
    TemplateParameterDto,
};

pub(crate) use dashboard::is_asset as is_dashboard_asset;

use crate::control::ControlPlane;

/// The OpenAPI document of the REST API, generated from the handlers.
#[derive(OpenApi)]
#[openapi(
    info(title = "Hodei control plane", description = "Submit and follow jobs on ephemeral workers."),
    paths(
        jobs::create_job,
        jobs::list_jobs,
        jobs::get_job,
        jobs::cancel_job,
        jobs::retry_job,
        artifacts::list_artifacts,
        artifacts::download_artifact,
        logs::job_logs,
        log_lines::log_lines,
        job_events::job_events,
        ops::list_workers,
        ops::list_providers,
        ops::register_provider,
        provider_admin::set_provider_state,
        provider_admin::remove_provider,
        audit::list_audit,
        scheduling::get_scheduler,
        scheduling::set_scheduler,
        scheduling::list_limits,
        scheduling::get_limit,
        scheduling::set_limit,
        scheduling::delete_limit,
        scheduling::set_pricing,
        templates::create_template,
        templates::list_templates,
        templates::get_template,
        templates::run_template,
        ops::healthz,
        ops::readyz,
        ops::metrics,
    ),
    components(schemas(
        SchedulerDto, ConcurrencyLimitDto, ConcurrencyLimitList, SetConcurrencyLimitRequest,
        ProviderPricingDto,
        JobDto, JobStateDto, JobList, CancelRequest, WorkerDto, WorkerList, ProviderDto,
        JobProgressDto, WorkerStatsDto, audit::AuditEntryDto, audit::AuditPage,
        ProviderList, RegisterProviderRequest, SetProviderStateRequest, ErrorBody, ErrorDetail, FieldDetail,
        dto::JobSpecDoc, ArtifactList, ArtifactDto, job_events::JobEventDto, job_events::JobEventList,
        log_lines::LogLineDto, log_lines::AttemptLinesDto, log_lines::LogLinesPage,
        TemplateDto, TemplateList, TemplateParameterDto, ParameterTypeDto, ParameterValue,
        RunTemplateRequest,
    )),
    tags(
        (name = "jobs", description = "Submit, inspect, cancel jobs and read their logs"),
        (name = "templates", description = "Versioned job templates with typed parameters"),
        (name = "workers", description = "Workers known to the control plane"),
        (name = "providers", description = "Sources of workers"),
        (name = "operations", description = "Health, readiness and metrics"),
        (name = "scheduling", description = "Shared scheduling settings: strategy, concurrency limits per key, provider prices"),
        (name = "audit", description = "Who did what: submissions, cancels, retries, provider and template changes, secret injections"),
    )
)]
pub struct ApiDoc;

/// Shared by the handlers.
#[derive(Clone)]
struct AppState {
    cp: ControlPlane,
    /// Turns true when the server shuts down, ending open log streams (so a
    /// graceful shutdown does not wait for running jobs).
    closing: watch::Receiver<bool>,
}

/// Resolves once `rx` turns true; never when its sender is dropped unsent.
async fn closing(mut rx: watch::Receiver<bool>) {
    if rx.wait_for(|v| *v).await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// The REST API over a control plane. Log streams stay open until their job
/// ends; use [`serve_rest`] to have them end at shutdown too.
pub fn router(cp: ControlPlane) -> Router {
    let (tx, rx) = watch::channel(false);
    // Never signalled: the receiver waits forever once the sender is dropped.
    drop(tx);
    router_with(cp, rx)
}

/// The REST API with API tokens enforced (see [`crate::api::auth`]) when
/// `auth` is set; `/healthz` and `/readyz` stay open.
pub fn router_with_auth(cp: ControlPlane, auth: Option<crate::api::auth::ApiAuth>) -> Router {
    let (tx, rx) = watch::channel(false);
    drop(tx);
    with_auth(router_with(cp, rx), auth)
}

fn with_auth(router: Router, auth: Option<crate::api::auth::ApiAuth>) -> Router {
    match auth {
        Some(auth) => router.layer(axum::middleware::from_fn_with_state(
            auth,
            crate::api::auth::rest_auth,
        )),
        None => router,
    }
}

fn router_with(cp: ControlPlane, closing: watch::Receiver<bool>) -> Router {
    // `/metrics` serves the process-wide recorder's histograms and counters;
    // when the application installed another one, that is logged once.
    let _ = crate::telemetry::install();
    let state = AppState { cp, closing };
    Router::new()
        .route("/api/v1/jobs", post(jobs::create_job).get(jobs::list_jobs))
        .route("/api/v1/jobs/{id}", get(jobs::get_job))
        .route("/api/v1/jobs/{id}/cancel", post(jobs::cancel_job))
        .route("/api/v1/jobs/{id}/retry", post(jobs::retry_job))
        .route("/api/v1/jobs/{id}/logs", get(logs::job_logs))
        .route(
            "/api/v1/jobs/{id}/artifacts",
            get(artifacts::list_artifacts),
        )
        .route(
            "/api/v1/jobs/{id}/artifacts/{*name}",
            get(artifacts::download_artifact),
        )
        .route("/api/v1/jobs/{id}/logs/lines", get(log_lines::log_lines))
        .route("/api/v1/jobs/{id}/events", get(job_events::job_events))
        .route(
            "/api/v1/templates",
            post(templates::create_template).get(templates::list_templates),
        )
        .route("/api/v1/templates/{name}", get(templates::get_template))
        .route(
            "/api/v1/templates/{name}/run",
            post(templates::run_template),
        )
        .route("/api/v1/workers", get(ops::list_workers))
        .route("/api/v1/audit", get(audit::list_audit))
        .route(
            "/api/v1/scheduler",
            get(scheduling::get_scheduler).put(scheduling::set_scheduler),
        )
        .route("/api/v1/concurrency-limits", get(scheduling::list_limits))
        .route(
            "/api/v1/concurrency-limits/{key}",
            get(scheduling::get_limit)
                .put(scheduling::set_limit)
                .delete(scheduling::delete_limit),
        )
        .route(
            "/api/v1/providers/{id}/pricing",
            axum::routing::put(scheduling::set_pricing),
        )
        .route(
            "/api/v1/providers",
            get(ops::list_providers).post(ops::register_provider),
        )
        .route(
            "/api/v1/providers/{id}",
            patch(provider_admin::set_provider_state).delete(provider_admin::remove_provider),
        )
        .route("/api/v1/openapi.json", get(openapi_json))
        .route("/healthz", get(ops::healthz))
        .route("/readyz", get(ops::readyz))
        .route("/metrics", get(ops::metrics))
        .merge(dashboard::routes())
        .fallback(no_route)
        .method_not_allowed_fallback(wrong_method)
        .with_state(state)
}

/// Serves the REST API on `listener` until `shutdown` resolves; then open log
/// streams end and in-flight requests finish.
pub async fn serve_rest(
    cp: ControlPlane,
    listener: tokio::net::TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let (tx, rx) = watch::channel(false);
    let app = router_with(cp, rx);
    axum::serve(nodelay(listener), app)
        .with_graceful_shutdown(async move {
            shutdown.await;
            let _ = tx.send(true);
        })
        .await
}

/// Like [`serve_rest`], with API tokens enforced when `auth` is set.
pub async fn serve_rest_with(
    cp: ControlPlane,
    listener: tokio::net::TcpListener,
    auth: Option<crate::api::auth::ApiAuth>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let mut options = crate::server::ServerOptions::new();
    options.auth = auth;
    serve_rest_with_options(cp, listener, options, shutdown).await
}

/// Like [`serve_rest`], with the API tokens of `options` (their file is
/// watched) and its TLS: HTTPS only, the certificate reloaded when its files
/// change. Use [`ServerTlsSettings::for_rest`](crate::tls::ServerTlsSettings::for_rest)
/// to reuse the gRPC certificate without asking REST clients for one.
pub async fn serve_rest_with_options(
    cp: ControlPlane,
    listener: tokio::net::TcpListener,
    options: crate::server::ServerOptions,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    if let Some(auth) = &options.auth {
        auth.start_watcher();
    }
    let (tx, rx) = watch::channel(false);
    let app = with_auth(router_with(cp, rx), options.auth);
    let shutdown = async move {
        shutdown.await;
        let _ = tx.send(true);
    };
    match options.tls {
        Some(tls) => {
            let watcher = tls.spawn_watcher();
            let served = axum::serve(tls.axum_listener(listener)?, app)
                .with_graceful_shutdown(shutdown)
                .await;
            watcher.abort();
            served
        }
        None => {
            axum::serve(nodelay(listener), app)
                .with_graceful_shutdown(shutdown)
                .await
        }
    }
}

async fn openapi_json() -> axum::Json<utoipa::openapi::OpenApi> {
    axum::Json(ApiDoc::openapi())
}

async fn no_route(uri: axum::http::Uri) -> ApiError {
    ApiError::not_found(format!("no route for {}", uri.path()))
}

async fn wrong_method(method: axum::http::Method, uri: axum::http::Uri) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        format!("{method} is not allowed on {}", uri.path()),
    )
}

/// Log streams are many small writes: send them without Nagle's delay.
fn nodelay(
    listener: tokio::net::TcpListener,
) -> axum::serve::TapIo<tokio::net::TcpListener, fn(&mut tokio::net::TcpStream)> {
    use axum::serve::ListenerExt;
    fn set(tcp: &mut tokio::net::TcpStream) {
        let _ = tcp.set_nodelay(true);
    }
    listener.tap_io(set as fn(&mut tokio::net::TcpStream))
}
