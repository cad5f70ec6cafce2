//! The REST error body, the mapping from [`ControlError`] to HTTP statuses, and
//! the JSON body extractor whose rejections use that body (so axum's plain-text
//! 400/415/422 bodies never reach a client).

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::control::ControlError;
use crate::domain::error::ProviderError;

/// The body of every error response: `{"error": {...}}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[non_exhaustive]
pub struct ErrorBody {
    /// What went wrong.
    pub error: ErrorDetail,
}

/// What went wrong, in a form a program can act on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[non_exhaustive]
pub struct ErrorDetail {
    /// Stable machine-readable code: `invalid_argument`, `not_found`,
    /// `failed_precondition`, `unauthenticated`, `permission_denied`,
    /// `unavailable`, `payload_too_large`, `unsupported_media_type`,
    /// `method_not_allowed`, `internal`.
    #[schema(example = "invalid_argument")]
    pub code: String,
    /// Human-readable explanation.
    pub message: String,
    /// The offending field (dotted path), when one is to blame.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(example = "resources.cpu_cores")]
    pub field: Option<String>,
    /// Every problem found, when there are several (invalid job specs).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub details: Vec<FieldDetail>,
}

/// One problem with one field.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[non_exhaustive]
pub struct FieldDetail {
    /// Dotted path of the field.
    pub field: String,
    /// What is wrong with it.
    pub message: String,
}

/// An error response: an HTTP status plus an [`ErrorBody`].
#[derive(Debug, Clone)]
pub struct ApiError {
    status: StatusCode,
    detail: ErrorDetail,
}

impl ApiError {
    /// An error with a status, a code and a message.
    #[must_use]
    pub fn new(status: StatusCode, code: &str, message: impl Into<String>) -> Self {
        Self {
            status,
            detail: ErrorDetail {
                code: code.to_owned(),
                message: message.into(),
                field: None,
                details: Vec::new(),
            },
        }
    }

    /// A 400 naming the offending field.
    #[must_use]
    pub fn invalid_argument(field: impl Into<String>, message: impl Into<String>) -> Self {
        let field = field.into();
        let message = message.into();
        let mut e = Self::new(
            StatusCode::BAD_REQUEST,
            "invalid_argument",
            format!("{field}: {message}"),
        );
        e.detail.field = Some(field);
        e
    }

    /// A 400 for a path or query id that is not a UUID.
    #[must_use]
    pub fn bad_id(field: &str, value: &str) -> Self {
        Self::invalid_argument(field, format!("{value:?} is not a valid id (UUID)"))
    }

    /// A 404.
    #[must_use]
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    /// The HTTP status.
    #[must_use]
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The body's detail.
    #[must_use]
    pub fn detail(&self) -> &ErrorDetail {
        &self.detail
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {}: {}",
            self.status, self.detail.code, self.detail.message
        )
    }
}

impl std::error::Error for ApiError {}

impl From<ControlError> for ApiError {
    fn from(e: ControlError) -> Self {
        match e {
            ControlError::InvalidArgument { field, message } => {
                ApiError::invalid_argument(field, message)
            }
            ControlError::InvalidSpec(v) => {
                let mut err =
                    ApiError::new(StatusCode::BAD_REQUEST, "invalid_argument", v.to_string());
                err.detail.field = v.errors.first().map(|f| f.field.clone());
                err.detail.details = v
                    .errors
                    .into_iter()
                    .map(|f| FieldDetail {
                        field: f.field,
                        message: f.message,
                    })
                    .collect();
                err
            }
            ControlError::NotFound(m) => ApiError::not_found(m),
            ControlError::FailedPrecondition(m) => {
                ApiError::new(StatusCode::CONFLICT, "failed_precondition", m)
            }
            ControlError::Unauthenticated(m) => {
                ApiError::new(StatusCode::UNAUTHORIZED, "unauthenticated", m)
            }
            ControlError::PermissionDenied(m) => {
                ApiError::new(StatusCode::FORBIDDEN, "permission_denied", m)
            }
            ControlError::Unavailable(m) => {
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", m)
            }
            ControlError::ResourceExhausted(m) => {
                ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "resource_exhausted", m)
            }
            ControlError::Provider(e @ ProviderError::Unsupported { .. }) => {
                ApiError::new(StatusCode::NOT_IMPLEMENTED, "unimplemented", e.to_string())
            }
            ControlError::Provider(e) => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                e.to_string(),
            ),
            ControlError::Store(e) => {
                tracing::error!(error = %e, "store error");
                ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string())
            }
        }
    }
}

// A store read a handler makes directly maps like the control plane's.
impl From<crate::store::StoreError> for ApiError {
    fn from(e: crate::store::StoreError) -> Self {
        ControlError::from(e).into()
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody { error: self.detail };
        (self.status, axum::Json(body)).into_response()
    }
}

/// A JSON request body deserialized with serde; every failure (wrong content
/// type, malformed JSON, unknown or mistyped fields, body too large) becomes an
/// [`ApiError`] whose `field` names the culprit where it can be told.
#[derive(Debug, Clone)]
pub struct ApiJson<T>(pub T);

impl<S, T> FromRequest<S> for ApiJson<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let headers = req.headers().clone();
        let bytes = Bytes::from_request(req, state)
            .await
            .map_err(|r| body_error(r.status(), r.body_text()))?;
        if bytes.is_empty() {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_argument",
                "the request body is empty: a JSON object is expected",
            ));
        }
        check_json_content_type(&headers)?;
        parse_json(&bytes).map(ApiJson)
    }
}

/// An optional JSON body: `None` when the body is empty or JSON `null`.
#[derive(Debug, Clone)]
pub struct OptionalApiJson<T>(pub Option<T>);

impl<S, T> FromRequest<S> for OptionalApiJson<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let headers = req.headers().clone();
        let bytes = Bytes::from_request(req, state)
            .await
            .map_err(|r| body_error(r.status(), r.body_text()))?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(OptionalApiJson(None));
        }
        check_json_content_type(&headers)?;
        parse_json::<Option<T>>(&bytes).map(OptionalApiJson)
    }
}

fn body_error(status: StatusCode, text: String) -> ApiError {
    if status == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::new(status, "payload_too_large", text)
    } else {
        ApiError::new(StatusCode::BAD_REQUEST, "invalid_argument", text)
    }
}

/// Bodies must say they are JSON: a browser can send `text/plain` or form
/// bodies across origins without a preflight, JSON it cannot.
fn check_json_content_type(headers: &HeaderMap) -> Result<(), ApiError> {
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let essence = ct
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    if essence == "application/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"))
    {
        Ok(())
    } else {
        Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            format!("expected Content-Type: application/json, got {ct:?}"),
        ))
    }
}

/// Deserializes JSON, naming the offending field of any error.
pub(crate) fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let mut value: serde_json::Value =
        serde_json::from_slice(bytes).map_err(|e| json_error("", &e))?;
    // Every request body of the API is an object (serde would otherwise read
    // a struct from an array, field by field), or `null` where it is optional.
    if !(value.is_object() || value.is_null()) {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_argument",
            "invalid request body: a JSON object is expected",
        ));
    }
    integral_floats_as_integers(&mut value);
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        json_error(&path, &inner)
    })
}

/// JSON Schema's `integer` includes `7.0`; serde's integers do not. Numbers
/// with no fractional part become integers, so `{"max_running": 7.0}` means
/// 7 as the OpenAPI document says (a float field reads an integer as well).
fn integral_floats_as_integers(v: &mut serde_json::Value) {
    match v {
        serde_json::Value::Number(n) if n.is_f64() => {
            if let Some(f) = n.as_f64()
                && f.fract() == 0.0
            {
                // Only values an i64/u64 holds exactly; anything larger stays a
                // float and an integer field refuses it.
                if (-9.007_199_254_740_992e15..=9.007_199_254_740_992e15).contains(&f) {
                    #[allow(clippy::cast_possible_truncation)]
                    let i = f as i64;
                    *v = serde_json::Value::from(i);
                }
            }
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(integral_floats_as_integers),
        serde_json::Value::Object(map) => map.values_mut().for_each(integral_floats_as_integers),
        _ => {}
    }
}

fn json_error(path: &str, e: &serde_json::Error) -> ApiError {
    use serde_json::error::Category;
    let message = e.to_string();
    let prefix = match e.classify() {
        Category::Syntax | Category::Eof | Category::Io => "malformed JSON",
        Category::Data => "invalid request body",
    };
    let path = if path == "." || path.is_empty() {
        None
    } else {
        Some(path.to_owned())
    };
    // serde names the field of unknown/missing-field errors only in the message.
    let named = backticked_after(&message, "unknown field `")
        .or_else(|| backticked_after(&message, "missing field `"));
    let field = match (path, named) {
        (Some(p), Some(n)) if p == n || p.ends_with(&format!(".{n}")) => Some(p),
        (Some(p), Some(n)) => Some(format!("{p}.{n}")),
        (None, Some(n)) => Some(n.to_owned()),
        (p, None) => p,
    };
    let mut err = ApiError::new(
        StatusCode::BAD_REQUEST,
        "invalid_argument",
        format!("{prefix}: {message}"),
    );
    if matches!(e.classify(), Category::Data) {
        err.detail.field = field;
    }
    err
}

/// The text between `start` and the next backtick, if `start` is in `s`.
fn backticked_after<'a>(s: &'a str, start: &str) -> Option<&'a str> {
    let rest = &s[s.find(start)? + start.len()..];
    Some(&rest[..rest.find('`')?])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::spec::JobSpec;

    fn field_of(json: &str) -> Option<String> {
        parse_json::<JobSpec>(json.as_bytes())
            .err()
            .and_then(|e| e.detail.field)
    }

    #[test]
    fn bodies_are_objects_and_integral_numbers_are_integers() {
        #[derive(Debug, serde::Deserialize)]
        struct Limit {
            max_running: u32,
            #[serde(default)]
            price: f64,
        }
        let l = parse_json::<Limit>(br#"{"max_running": 7110.0, "price": 2}"#).unwrap();
        assert_eq!(l.max_running, 7110);
        assert!((l.price - 2.0).abs() < f64::EPSILON);
        let e = parse_json::<Limit>(br#"{"max_running": 7.5}"#).unwrap_err();
        assert_eq!(e.detail.field.as_deref(), Some("max_running"));
        let e = parse_json::<Limit>(br#"{"max_running": 1e300}"#).unwrap_err();
        assert_eq!(e.detail.field.as_deref(), Some("max_running"));
        for not_an_object in ["[]", "[1, 2.0]", "7", "\"x\""] {
            let e = parse_json::<Limit>(not_an_object.as_bytes()).unwrap_err();
            assert!(
                e.detail.message.contains("JSON object"),
                "{not_an_object}: {e:?}"
            );
        }
        assert!(parse_json::<Option<Limit>>(b"null").unwrap().is_none());
    }

    #[test]
    fn unknown_and_mistyped_fields_are_named() {
        let cmd = r#""command": {"type": "shell", "cmd": "echo"}"#;
        assert_eq!(
            field_of(&format!(r#"{{{cmd}, "bogus": 1}}"#)).as_deref(),
            Some("bogus")
        );
        assert_eq!(
            field_of(&format!(
                r#"{{{cmd}, "resources": {{"cpu_cores": "many"}}}}"#
            ))
            .as_deref(),
            Some("resources.cpu_cores")
        );
        assert_eq!(
            field_of(&format!(r#"{{{cmd}, "resources": {{"bogus": 1}}}}"#)).as_deref(),
            Some("resources.bogus")
        );
        assert_eq!(field_of(r#"{"name": "x"}"#).as_deref(), Some("command"));
        assert_eq!(field_of(r#"{"name": "#), None);
    }
}
