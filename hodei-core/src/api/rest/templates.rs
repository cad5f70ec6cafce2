//! `/api/v1/templates`: create (a new version per save), list, show, run.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::AppState;
use super::dto::JobDto;
use super::error::{ApiError, ApiJson, ErrorBody, OptionalApiJson};
use crate::control::{Actor, TemplateService, template_target};
use crate::domain::spec::JobSpec;
use crate::domain::template::{JobTemplate, ParameterType, TemplateParameter};
use crate::store::AuditAction;

/// Body of `POST /api/v1/templates`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct CreateTemplateRequest {
    name: String,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    parameters: Vec<TemplateParameter>,
    spec: JobSpec,
}

/// The OpenAPI form of [`CreateTemplateRequest`].
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[schema(as = CreateTemplateRequest)]
#[allow(dead_code)]
pub(crate) struct CreateTemplateDoc {
    /// Template name: 1 to 63 lowercase letters, digits, `.`, `_` or `-`,
    /// starting with a letter or digit. Saving an existing name stores its next version.
    #[schema(pattern = r"^[a-z0-9][a-z0-9._-]{0,62}$", example = "greet")]
    name: String,
    /// What it is for.
    description: Option<String>,
    /// Declared parameters, used as `{{name}}` in the spec's name, command,
    /// image, working_dir, env values and label values.
    #[serde(default)]
    parameters: Vec<TemplateParameterDto>,
    /// The job spec with `{{parameters}}`.
    spec: super::dto::JobSpecDoc,
}

/// Type of a template parameter's values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ParameterTypeDto {
    /// Any text.
    String,
    /// A whole number (64-bit).
    Integer,
    /// `true` or `false`.
    Boolean,
    /// One of the parameter's `values`.
    Enum,
}

impl From<ParameterType> for ParameterTypeDto {
    fn from(t: ParameterType) -> Self {
        match t {
            ParameterType::Integer => Self::Integer,
            ParameterType::Boolean => Self::Boolean,
            ParameterType::Enum => Self::Enum,
            _ => Self::String,
        }
    }
}

/// A parameter value as the API takes it: text, a number or a boolean (kept
/// as its text). Only describes the JSON; the handlers read it themselves.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum ParameterValue {
    /// Text.
    Text(String),
    /// A number.
    Number(f64),
    /// A boolean.
    Boolean(bool),
}

/// A declared template parameter.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[non_exhaustive]
pub struct TemplateParameterDto {
    /// Name: a letter or `_`, then letters, digits, `_` or `-`.
    #[schema(pattern = r"^[A-Za-z_][A-Za-z0-9_-]{0,63}$", example = "who")]
    pub name: String,
    /// Type of its values (default `string`).
    #[serde(rename = "type", default = "string_type")]
    #[schema(default = "string")]
    pub kind: ParameterTypeDto,
    /// Default value; absent = required. A number or boolean is accepted
    /// too and stored as its text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<ParameterValue>)]
    pub default: Option<String>,
    /// Allowed values of an `enum` parameter.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub values: Vec<String>,
    /// What it is for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Whether a run must give it (no default). Shown, never sent.
    #[serde(default)]
    #[schema(read_only)]
    pub required: bool,
}

fn string_type() -> ParameterTypeDto {
    ParameterTypeDto::String
}

impl From<&TemplateParameter> for TemplateParameterDto {
    fn from(p: &TemplateParameter) -> Self {
        Self {
            name: p.name.clone(),
            kind: p.kind.into(),
            default: p.default.clone(),
            values: p.values.clone(),
            description: p.description.clone(),
            required: p.is_required(),
        }
    }
}

/// A stored template version.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[non_exhaustive]
pub struct TemplateDto {
    /// Name.
    pub name: String,
    /// This version (from 1).
    pub version: u32,
    /// What it is for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Declared parameters.
    pub parameters: Vec<TemplateParameterDto>,
    /// The spec with its `{{parameters}}`, secret values removed (the `JobSpec` JSON form).
    #[schema(value_type = Object)]
    pub spec: serde_json::Value,
    /// Names of the spec's secrets (never their values).
    pub secret_names: Vec<String>,
}

impl From<&JobTemplate> for TemplateDto {
    fn from(t: &JobTemplate) -> Self {
        Self {
            name: t.name().to_owned(),
            version: t.version(),
            description: t.description().map(str::to_owned),
            parameters: t.parameters().iter().map(Into::into).collect(),
            spec: serde_json::to_value(t.spec().redacted()).unwrap_or(serde_json::Value::Null),
            secret_names: t.spec().secret_names().map(str::to_owned).collect(),
        }
    }
}

/// `GET /api/v1/templates`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[non_exhaustive]
pub struct TemplateList {
    /// The latest version of each template, by name.
    pub templates: Vec<TemplateDto>,
}

/// Body of `POST /api/v1/templates/{name}/run`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct RunTemplateRequest {
    /// Parameter values (strings, numbers or booleans), checked against
    /// their types; parameters left out take their defaults.
    #[serde(default)]
    #[schema(value_type = BTreeMap<String, ParameterValue>, example = json!({"who": "hodei", "times": 2}))]
    pub parameters: BTreeMap<String, serde_json::Value>,
    /// Run this version instead of the latest.
    #[serde(default)]
    #[schema(minimum = 1, maximum = 2147483647)]
    pub version: Option<u32>,
}

/// Query of `GET /api/v1/templates/{name}`.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct VersionQuery {
    /// This version instead of the latest.
    #[param(value_type = Option<i32>, minimum = 1)]
    version: Option<String>,
}

/// Turns JSON parameter values into the strings templates substitute.
fn parameter_values(
    raw: BTreeMap<String, serde_json::Value>,
) -> Result<BTreeMap<String, String>, ApiError> {
    raw.into_iter()
        .map(|(k, v)| {
            let s = match v {
                serde_json::Value::String(s) => s,
                serde_json::Value::Number(n) => n.to_string(),
                serde_json::Value::Bool(b) => b.to_string(),
                _ => {
                    return Err(ApiError::invalid_argument(
                        format!("parameters.{k}"),
                        "must be a string, a number or a boolean",
                    ));
                }
            };
            Ok((k, s))
        })
        .collect()
}

fn with_location<T: Serialize>(location: &str, body: T) -> Result<Response, ApiError> {
    let location = HeaderValue::from_str(location)
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()))?;
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, location)],
        Json(body),
    )
        .into_response())
}

/// Stores a template: version 1 for a new name, the next version otherwise.
/// The whole template is checked first; nothing is stored when it is invalid.
#[utoipa::path(
    post,
    path = "/api/v1/templates",
    tag = "templates",
    request_body(content = inline(CreateTemplateDoc), content_type = "application/json"),
    responses(
        (status = 201, description = "Stored", body = TemplateDto,
            headers(("location" = String, description = "URL of this version"))),
        (status = 400, description = "Malformed JSON, unknown field, bad parameter or invalid spec (`field` names it)", body = ErrorBody),
        (status = 415, description = "Not JSON", body = ErrorBody),
    )
)]
pub(super) async fn create_template(
    State(s): State<AppState>,
    actor: Actor,
    ApiJson(req): ApiJson<CreateTemplateRequest>,
) -> Result<Response, ApiError> {
    let target = template_target(&req.name);
    let mut template = JobTemplate::new(req.name, req.spec, req.parameters);
    if let Some(d) = req.description {
        template = template.with_description(d);
    }
    let result = TemplateService::new(s.cp.clone()).create(template).await;
    s.cp.audit()
        .record(&actor, AuditAction::TemplateCreate, target, &result)
        .await;
    let stored = result?;
    with_location(
        &format!(
            "/api/v1/templates/{}?version={}",
            stored.name(),
            stored.version()
        ),
        TemplateDto::from(&stored),
    )
}

/// The latest version of every template.
#[utoipa::path(
    get,
    path = "/api/v1/templates",
    tag = "templates",
    responses((status = 200, description = "The templates, by name", body = TemplateList))
)]
pub(super) async fn list_templates(
    State(s): State<AppState>,
) -> Result<Json<TemplateList>, ApiError> {
    let templates = TemplateService::new(s.cp.clone()).list().await?;
    Ok(Json(TemplateList {
        templates: templates.iter().map(TemplateDto::from).collect(),
    }))
}

fn version_of(q: Result<Query<VersionQuery>, QueryRejection>) -> Result<Option<u32>, ApiError> {
    let Query(q) = q.map_err(|e| ApiError::invalid_argument("query", e.body_text()))?;
    q.version
        // Within the documented int32 range.
        .map(|v| match v.parse::<i32>().map(u32::try_from) {
            Ok(Ok(n)) if n >= 1 => Ok(n),
            _ => Err(ApiError::invalid_argument(
                "version",
                format!("{v:?} is not a version (a whole number from 1)"),
            )),
        })
        .transpose()
}

/// One template: its latest version, or `?version=N`.
#[utoipa::path(
    get,
    path = "/api/v1/templates/{name}",
    tag = "templates",
    params(("name" = String, Path, description = "Template name"), VersionQuery),
    responses(
        (status = 200, description = "The template", body = TemplateDto),
        (status = 400, description = "Bad name or version", body = ErrorBody),
        (status = 404, description = "No such template or version", body = ErrorBody),
    )
)]
pub(super) async fn get_template(
    State(s): State<AppState>,
    Path(name): Path<String>,
    query: Result<Query<VersionQuery>, QueryRejection>,
) -> Result<Json<TemplateDto>, ApiError> {
    let version = version_of(query)?;
    let t = TemplateService::new(s.cp.clone())
        .get(&name, version)
        .await?;
    Ok(Json(TemplateDto::from(&t)))
}

/// Runs a template: fills its parameters (each checked against its type;
/// a bad one is a 400 naming `parameters.<name>`) and queues the job,
/// labelled `hodei.template` and `hodei.template.version`.
#[utoipa::path(
    post,
    path = "/api/v1/templates/{name}/run",
    tag = "templates",
    params(("name" = String, Path, description = "Template name")),
    request_body(content = Option<RunTemplateRequest>, content_type = "application/json",
        description = "Parameter values; no body runs the latest version with every default"),
    responses(
        (status = 201, description = "The job, queued", body = JobDto,
            headers(("location" = String, description = "URL of the new job"))),
        (status = 400, description = "Missing, unknown or mistyped parameter (`field` is `parameters.<name>`), or a spec the values make invalid", body = ErrorBody),
        (status = 404, description = "No such template or version", body = ErrorBody),
    )
)]
pub(super) async fn run_template(
    State(s): State<AppState>,
    actor: Actor,
    Path(name): Path<String>,
    OptionalApiJson(req): OptionalApiJson<RunTemplateRequest>,
) -> Result<Response, ApiError> {
    let req = req.unwrap_or_default();
    // The documented int32 range, from 1.
    if let Some(v) = req.version
        && !(1..=i32::MAX.unsigned_abs()).contains(&v)
    {
        return Err(ApiError::invalid_argument(
            "version",
            format!("{v} is not a version (a whole number from 1 to 2147483647)"),
        ));
    }
    let values = parameter_values(req.parameters)?;
    let result = TemplateService::new(s.cp.clone())
        .run(&name, req.version, &values, None)
        .await;
    s.cp.audit()
        .record(
            &actor,
            AuditAction::TemplateRun,
            template_target(&name),
            &result,
        )
        .await;
    let job = result?;
    with_location(&format!("/api/v1/jobs/{}", job.id()), JobDto::from(&job))
}
