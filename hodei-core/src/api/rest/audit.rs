//! `GET /api/v1/audit`: the audit log, newest first, filtered and paged; and
//! the [`Actor`] extractor handlers use to record who acted.

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{FromRequestParts, Query, State};
use axum::http::request::Parts;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::AppState;
use super::error::{ApiError, ErrorBody};
use crate::control::Actor;
use crate::store::audit::MAX_AUDIT_PAGE;
use crate::store::{AuditAction, AuditEntry, AuditFilter};

/// The caller: the API token's name the auth middleware put in the request,
/// `anonymous` when the server runs without tokens.
impl<S: Send + Sync> FromRequestParts<S> for Actor {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(parts
            .extensions
            .get::<Actor>()
            .cloned()
            .unwrap_or_else(Actor::anonymous))
    }
}

/// One audit entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[non_exhaustive]
pub struct AuditEntryDto {
    /// Increasing in the order entries were recorded; pass it as `before` to
    /// read older entries.
    pub id: u64,
    /// When it happened.
    pub at: DateTime<Utc>,
    /// Who: an API token's name, `anonymous` or `worker:<id>`.
    pub actor: String,
    /// What (`job_submit`, `job_cancel`, `job_retry`, `provider_register`,
    /// `provider_update`, `provider_delete`, `template_create`,
    /// `template_run`, `secret_injected`).
    pub action: String,
    /// On what: `job:<id>`, `provider:<name>`, `template:<name>`.
    pub target: String,
    /// `success` or `failure`.
    pub outcome: String,
    /// The error of a failure, the secret names of an injection; may be empty.
    pub detail: String,
}

impl From<&AuditEntry> for AuditEntryDto {
    fn from(e: &AuditEntry) -> Self {
        Self {
            id: e.id,
            at: e.entry.at,
            actor: e.entry.actor.clone(),
            action: e.entry.action.as_str().to_owned(),
            target: e.entry.target.clone(),
            outcome: e.entry.outcome.as_str().to_owned(),
            detail: e.entry.detail.clone(),
        }
    }
}

/// A page of audit entries, newest first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[non_exhaustive]
pub struct AuditPage {
    /// The entries.
    pub entries: Vec<AuditEntryDto>,
    /// Pass as `before` for the next (older) page; `null` on the last page.
    pub next_before: Option<u64>,
}

/// Query of `GET /api/v1/audit`.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct AuditQuery {
    /// Only this actor (an API token's name, `anonymous`, `worker:<id>`).
    actor: Option<String>,
    /// Only this action (`job_submit`, `job_cancel`, `job_retry`, …).
    action: Option<String>,
    /// Only this target (`job:<id>`, `provider:<name>`, `template:<name>`).
    target: Option<String>,
    /// Only entries at or after this time (RFC 3339).
    #[param(value_type = Option<String>, format = DateTime)]
    since: Option<String>,
    /// Only entries older than this id (the previous page's `next_before`).
    #[param(value_type = Option<i64>, minimum = 1)]
    before: Option<String>,
    /// At most this many (default 100, at most 1000).
    #[param(value_type = Option<u32>, minimum = 1, maximum = 1000)]
    limit: Option<String>,
}

fn non_empty(field: &str, v: Option<String>) -> Result<Option<String>, ApiError> {
    match v {
        Some(s) if s.is_empty() => Err(ApiError::invalid_argument(field, "must not be empty")),
        other => Ok(other),
    }
}

/// The audit log: who submitted, cancelled or retried which job, changed
/// which provider or template, and which secrets workers injected.
#[utoipa::path(
    get,
    path = "/api/v1/audit",
    tag = "audit",
    params(AuditQuery),
    responses(
        (status = 200, description = "Entries, newest first", body = AuditPage),
        (status = 400, description = "Unknown action, bad time, id or limit", body = ErrorBody),
        (status = 503, description = "A store is unavailable", body = ErrorBody),
    )
)]
pub(super) async fn list_audit(
    State(s): State<AppState>,
    query: Result<Query<AuditQuery>, QueryRejection>,
) -> Result<Json<AuditPage>, ApiError> {
    let Query(q) = query.map_err(|e| ApiError::invalid_argument("query", e.body_text()))?;
    let mut filter = AuditFilter {
        actor: non_empty("actor", q.actor)?,
        target: non_empty("target", q.target)?,
        ..AuditFilter::default()
    };
    if let Some(a) = q.action.as_deref() {
        filter.action = Some(
            a.parse::<AuditAction>()
                .map_err(|e| ApiError::invalid_argument("action", e))?,
        );
    }
    if let Some(t) = q.since.as_deref() {
        filter.since = Some(
            DateTime::parse_from_rfc3339(t)
                .map_err(|e| {
                    ApiError::invalid_argument("since", format!("{t:?} is not RFC 3339: {e}"))
                })?
                .with_timezone(&Utc),
        );
    }
    if let Some(b) = q.before.as_deref() {
        // Within the documented int64 range, like the ids themselves.
        filter.before = Some(
            b.parse::<i64>()
                .ok()
                .filter(|n| *n >= 1)
                .map(i64::unsigned_abs)
                .ok_or_else(|| {
                    ApiError::invalid_argument("before", format!("{b:?} is not an entry id"))
                })?,
        );
    }
    let limit = match q.limit.as_deref() {
        None => crate::store::audit::DEFAULT_AUDIT_PAGE,
        Some(l) => l
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=MAX_AUDIT_PAGE).contains(n))
            .ok_or_else(|| {
                ApiError::invalid_argument(
                    "limit",
                    format!("{l:?} is not a number from 1 to {MAX_AUDIT_PAGE}"),
                )
            })?,
    };
    filter.limit = Some(limit);
    let entries = s.cp.audit().list(&filter).await?;
    // A full page may have older entries behind it.
    let next_before = (entries.len() == limit)
        .then(|| entries.last().map(|e| e.id))
        .flatten();
    Ok(Json(AuditPage {
        entries: entries.iter().map(AuditEntryDto::from).collect(),
        next_before,
    }))
}
