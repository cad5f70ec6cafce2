//! Shared scheduling settings over REST: the strategy, concurrency limits
//! per key, and a provider's price of resources.

use axum::Json;
use axum::extract::{Path, State};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::AppState;
use super::error::{ApiError, ApiJson, ErrorBody};
use crate::control::ConcurrencyLimitStatus;
use crate::domain::pricing::ResourcePricing;
use crate::scheduler::Strategy;

/// The scheduling strategy every replica uses.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct SchedulerDto {
    /// `fifo`, `priority`, `least_loaded`, `bin_packing`, `cost_aware` or `fastest_startup`.
    #[schema(
        example = "cost_aware",
        pattern = "^(fifo|priority|least_loaded|bin_packing|cost_aware|fastest_startup)$"
    )]
    pub strategy: String,
}

/// A key's concurrency limit and the jobs holding its slots.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[non_exhaustive]
pub struct ConcurrencyLimitDto {
    /// The key jobs name in `concurrency_key`.
    pub key: String,
    /// At most this many of its jobs scheduled or running at once.
    pub max_running: u32,
    /// Jobs holding a slot now (scheduled or running).
    pub running: u32,
    /// Their ids, oldest slot first.
    pub jobs: Vec<String>,
    /// When the limit was last set.
    pub updated_at: DateTime<Utc>,
}

impl From<ConcurrencyLimitStatus> for ConcurrencyLimitDto {
    fn from(s: ConcurrencyLimitStatus) -> Self {
        Self {
            key: s.key,
            max_running: s.max_running,
            running: u32::try_from(s.holders.len()).unwrap_or(u32::MAX),
            jobs: s.holders.iter().map(ToString::to_string).collect(),
            updated_at: s.updated_at,
        }
    }
}

/// Every concurrency limit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[non_exhaustive]
pub struct ConcurrencyLimitList {
    /// By key.
    pub limits: Vec<ConcurrencyLimitDto>,
}

/// Body of `PUT /api/v1/concurrency-limits/{key}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct SetConcurrencyLimitRequest {
    /// At most this many jobs with the key at once (0 holds them all in the queue).
    #[schema(example = 1, minimum = 0, maximum = 100000)]
    pub max_running: u32,
}

/// A provider's price of resources (`null` fields are 0).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct ProviderPricingDto {
    /// Price of one CPU core for one hour.
    #[serde(default)]
    #[schema(example = 0.04, minimum = 0)]
    pub price_per_cpu_hour: f64,
    /// Price of one GiB of memory for one hour.
    #[serde(default)]
    #[schema(example = 0.005, minimum = 0)]
    pub price_per_gib_hour: f64,
}

/// The strategy every replica uses now.
#[utoipa::path(
    get,
    path = "/api/v1/scheduler",
    tag = "scheduling",
    responses(
        (status = 200, description = "The shared strategy", body = SchedulerDto),
        (status = 503, description = "A store is unavailable", body = ErrorBody),
    )
)]
pub(super) async fn get_scheduler(
    State(s): State<AppState>,
) -> Result<Json<SchedulerDto>, ApiError> {
    let st = s.cp.shared_strategy().await?;
    Ok(Json(SchedulerDto {
        strategy: st.as_str().to_owned(),
    }))
}

/// Switches the strategy of every replica (stored: survives restarts).
#[utoipa::path(
    put,
    path = "/api/v1/scheduler",
    tag = "scheduling",
    request_body(content = SchedulerDto, content_type = "application/json"),
    responses(
        (status = 200, description = "The strategy now in use", body = SchedulerDto),
        (status = 400, description = "Unknown strategy (field `strategy`)", body = ErrorBody),
        (status = 503, description = "A store is unavailable", body = ErrorBody),
    )
)]
pub(super) async fn set_scheduler(
    State(s): State<AppState>,
    ApiJson(req): ApiJson<SchedulerDto>,
) -> Result<Json<SchedulerDto>, ApiError> {
    // Exactly as documented (the schema's pattern); the CLI and the
    // environment take the lenient spellings (`least-loaded`).
    let st = Strategy::ALL
        .into_iter()
        .find(|st| st.as_str() == req.strategy)
        .ok_or_else(|| {
            ApiError::invalid_argument(
                "strategy",
                crate::scheduler::UnknownStrategy {
                    name: req.strategy.clone(),
                }
                .to_string(),
            )
        })?;
    s.cp.configure_scheduler(st).await?;
    Ok(Json(SchedulerDto {
        strategy: st.as_str().to_owned(),
    }))
}

/// Every concurrency limit, with the jobs holding its slots.
#[utoipa::path(
    get,
    path = "/api/v1/concurrency-limits",
    tag = "scheduling",
    responses(
        (status = 200, description = "Limits by key", body = ConcurrencyLimitList),
        (status = 503, description = "A store is unavailable", body = ErrorBody),
    )
)]
pub(super) async fn list_limits(
    State(s): State<AppState>,
) -> Result<Json<ConcurrencyLimitList>, ApiError> {
    let limits = s.cp.concurrency_limits().await?;
    Ok(Json(ConcurrencyLimitList {
        limits: limits.into_iter().map(Into::into).collect(),
    }))
}

/// One key's limit.
#[utoipa::path(
    get,
    path = "/api/v1/concurrency-limits/{key}",
    tag = "scheduling",
    params(("key" = String, Path, pattern = r"^[A-Za-z0-9._:/-]{1,128}$", description = "Concurrency key (ASCII letters, digits, . _ - : /)")),
    responses(
        (status = 200, description = "The limit", body = ConcurrencyLimitDto),
        (status = 400, description = "Malformed key (field `key`)", body = ErrorBody),
        (status = 404, description = "No limit for this key", body = ErrorBody),
    )
)]
pub(super) async fn get_limit(
    State(s): State<AppState>,
    Path(key): Path<String>,
) -> Result<Json<ConcurrencyLimitDto>, ApiError> {
    Ok(Json(s.cp.concurrency_limit(&key).await?.into()))
}

/// Sets a key's limit: at most `max_running` jobs with `concurrency_key` =
/// key are scheduled or running at once, on every replica; the others wait
/// in the queue without holding up other jobs.
#[utoipa::path(
    put,
    path = "/api/v1/concurrency-limits/{key}",
    tag = "scheduling",
    params(("key" = String, Path, pattern = r"^[A-Za-z0-9._:/-]{1,128}$", description = "Concurrency key (ASCII letters, digits, . _ - : /)")),
    request_body(content = SetConcurrencyLimitRequest, content_type = "application/json"),
    responses(
        (status = 200, description = "The limit as stored", body = ConcurrencyLimitDto),
        (status = 400, description = "Malformed key or limit (field `key` or `max_running`)", body = ErrorBody),
        (status = 503, description = "A store is unavailable", body = ErrorBody),
    )
)]
pub(super) async fn set_limit(
    State(s): State<AppState>,
    Path(key): Path<String>,
    ApiJson(req): ApiJson<SetConcurrencyLimitRequest>,
) -> Result<Json<ConcurrencyLimitDto>, ApiError> {
    Ok(Json(
        s.cp.set_concurrency_limit(&key, req.max_running)
            .await?
            .into(),
    ))
}

/// Removes a key's limit (its jobs are then unlimited).
#[utoipa::path(
    delete,
    path = "/api/v1/concurrency-limits/{key}",
    tag = "scheduling",
    params(("key" = String, Path, pattern = r"^[A-Za-z0-9._:/-]{1,128}$", description = "Concurrency key (ASCII letters, digits, . _ - : /)")),
    responses(
        (status = 204, description = "Removed"),
        (status = 400, description = "Malformed key (field `key`)", body = ErrorBody),
        (status = 404, description = "No limit for this key", body = ErrorBody),
    )
)]
pub(super) async fn delete_limit(
    State(s): State<AppState>,
    Path(key): Path<String>,
) -> Result<axum::http::StatusCode, ApiError> {
    s.cp.delete_concurrency_limit(&key).await?;
    Ok(axum::http::StatusCode::NO_CONTENT)
}

/// Sets the price `cost_aware` ranks a provider by, for each job's own
/// resources (`cpu_cores · price_per_cpu_hour + memory GiB · price_per_gib_hour`).
#[utoipa::path(
    put,
    path = "/api/v1/providers/{id}/pricing",
    tag = "scheduling",
    params(("id" = String, Path, description = "Provider id or name")),
    request_body(content = ProviderPricingDto, content_type = "application/json"),
    responses(
        (status = 200, description = "The price as stored", body = ProviderPricingDto),
        (status = 400, description = "A negative or non-finite price (the field is named)", body = ErrorBody),
        (status = 404, description = "No such provider", body = ErrorBody),
    )
)]
pub(super) async fn set_pricing(
    State(s): State<AppState>,
    Path(id): Path<String>,
    ApiJson(req): ApiJson<ProviderPricingDto>,
) -> Result<Json<ProviderPricingDto>, ApiError> {
    let pricing = ResourcePricing {
        price_per_cpu_hour: req.price_per_cpu_hour,
        price_per_gib_hour: req.price_per_gib_hour,
    };
    let p = s.cp.set_provider_pricing(&id, Some(pricing)).await?;
    let stored = p.pricing().unwrap_or_default();
    Ok(Json(ProviderPricingDto {
        price_per_cpu_hour: stored.price_per_cpu_hour,
        price_per_gib_hour: stored.price_per_gib_hour,
    }))
}
