//! API authentication for clients: bearer tokens with scopes.
//!
//! Tokens are configured on the server only as SHA-256 hashes
//! (`name:scope:sha256hex`, see [`ApiAuth::parse`]); a request carries the token
//! itself in `authorization: Bearer <token>`. The presented token is hashed and
//! compared in constant time with every configured hash.
//!
//! Two scopes: [`Scope::Submit`] (submit, read and cancel jobs, read logs, list
//! workers and providers, read metrics) and [`Scope::Admin`] (everything,
//! including registering providers, configuring the scheduler and assigning
//! jobs by hand). No valid token → 401 / `UNAUTHENTICATED`; a valid token
//! without the scope → 403 / `PERMISSION_DENIED`.
//!
//! Not covered by API tokens: the worker-facing RPCs (`WorkerAgentService`, and
//! `StartJob`, `UpdateProgress`, `CompleteJob`, `FailJob` of
//! `JobExecutionService`, which authenticate with the worker's session token),
//! gRPC health and reflection, and REST `/healthz` and `/readyz`.
//!
//! ```
//! use hodei_core::api::auth::{ApiAuth, Scope, generate_token, token_hash_hex};
//!
//! let token = generate_token();
//! let auth = ApiAuth::parse(&format!("ci:submit:{}", token_hash_hex(&token)))?;
//! assert_eq!(auth.authenticate(&token).map(|t| t.scope()), Some(Scope::Submit));
//! assert!(auth.authenticate("hodei_wrong").is_none());
//! # Ok::<(), hodei_core::api::auth::AuthConfigError>(())
//! ```

use std::fmt;
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::str::FromStr;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::http::{HeaderMap, Method, Request, Response, StatusCode, header};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// Environment variable with inline token lines (`name:scope:sha256hex`, comma or newline separated).
pub const ENV_API_TOKENS: &str = "HODEI_API_TOKENS";
/// Environment variable naming a file of token lines (one a line, `#` comments).
pub const ENV_API_TOKENS_FILE: &str = "HODEI_API_TOKENS_FILE";

/// What a token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub enum Scope {
    /// Submit, read and cancel jobs, read logs, list workers and providers, read metrics.
    Submit,
    /// Everything, including provider registration, scheduler configuration, manual assignment.
    Admin,
}

impl Scope {
    /// Whether a token of this scope may do what `required` demands.
    #[must_use]
    pub fn allows(self, required: Scope) -> bool {
        self >= required
    }

    /// The scope's name as written in configuration.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Submit => "submit",
            Scope::Admin => "admin",
        }
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Scope {
    type Err = AuthConfigError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "submit" => Ok(Scope::Submit),
            "admin" => Ok(Scope::Admin),
            other => Err(AuthConfigError::Invalid(format!(
                "unknown scope {other:?} (expected submit or admin)"
            ))),
        }
    }
}

/// A token configuration could not be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AuthConfigError {
    /// A token line is malformed.
    #[error("invalid API token configuration: {0}")]
    Invalid(String),
    /// The tokens file could not be read.
    #[error("cannot read API tokens file {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
}

/// One configured token: a name (for logs), a scope and the SHA-256 of the secret.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiToken {
    name: String,
    scope: Scope,
    hash: [u8; 32],
}

impl fmt::Debug for ApiToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ApiToken")
            .field("name", &self.name)
            .field("scope", &self.scope)
            .finish_non_exhaustive()
    }
}

impl ApiToken {
    /// A token from the secret itself (hashed here; the secret is not kept).
    #[must_use]
    pub fn from_secret(name: impl Into<String>, scope: Scope, secret: &str) -> Self {
        Self {
            name: name.into(),
            scope,
            hash: sha256(secret),
        }
    }

    /// The token's name.
    #[must_use]
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The token's scope.
    #[must_use]
    pub fn scope(&self) -> Scope {
        self.scope
    }

    /// The configuration line of this token: `name:scope:sha256hex`.
    #[must_use]
    pub fn config_line(&self) -> String {
        format!("{}:{}:{}", self.name, self.scope, hex::encode(self.hash))
    }
}

/// Why a request was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AuthError {
    /// No bearer token, or one that matches no configured token.
    #[error("{0}")]
    Unauthenticated(&'static str),
    /// The token is valid but lacks the scope.
    #[error("token {token:?} has scope {has}, this call needs {needs}")]
    PermissionDenied {
        /// The token's name.
        token: String,
        /// Its scope.
        has: Scope,
        /// The scope required.
        needs: Scope,
    },
}

/// The configured API tokens. Cheap to clone.
#[derive(Debug, Clone)]
pub struct ApiAuth {
    tokens: Arc<Vec<ApiToken>>,
}

impl ApiAuth {
    /// Auth over these tokens.
    #[must_use]
    pub fn new(tokens: Vec<ApiToken>) -> Self {
        Self {
            tokens: Arc::new(tokens),
        }
    }

    /// Parses token lines `name:scope:sha256hex`, separated by commas or newlines;
    /// blank lines and `#` comments are skipped.
    ///
    /// # Errors
    /// [`AuthConfigError::Invalid`] for a malformed line (the message never
    /// contains the hash), or when no token is given at all.
    pub fn parse(spec: &str) -> Result<Self, AuthConfigError> {
        let mut tokens = Vec::new();
        for (i, raw) in spec.split([',', '\n']).enumerate() {
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let mut parts = line.splitn(3, ':');
            let (Some(name), Some(scope), Some(hash)) = (parts.next(), parts.next(), parts.next())
            else {
                return Err(AuthConfigError::Invalid(format!(
                    "entry {} is not name:scope:sha256hex",
                    i + 1
                )));
            };
            let name = name.trim();
            if name.is_empty() {
                return Err(AuthConfigError::Invalid(format!(
                    "entry {} has an empty name",
                    i + 1
                )));
            }
            let scope: Scope = scope.parse()?;
            let bytes = hex::decode(hash.trim()).map_err(|_| {
                AuthConfigError::Invalid(format!("token {name:?}: the hash is not hexadecimal"))
            })?;
            let hash: [u8; 32] = bytes.try_into().map_err(|_| {
                AuthConfigError::Invalid(format!(
                    "token {name:?}: the hash must be a SHA-256 (64 hex digits)"
                ))
            })?;
            tokens.push(ApiToken {
                name: name.to_owned(),
                scope,
                hash,
            });
        }
        if tokens.is_empty() {
            return Err(AuthConfigError::Invalid("no token given".to_owned()));
        }
        Ok(Self::new(tokens))
    }

    /// Reads `HODEI_API_TOKENS` and `HODEI_API_TOKENS_FILE` (both may be set;
    /// their tokens add up). `None` when neither is set: the API runs open.
    ///
    /// # Errors
    /// A malformed entry or an unreadable file.
    pub fn from_env() -> Result<Option<Self>, AuthConfigError> {
        Self::from_lookup(|k| std::env::var(k).ok())
    }

    /// Like [`from_env`](Self::from_env), reading variables through `lookup`.
    ///
    /// # Errors
    /// A malformed entry or an unreadable file.
    pub fn from_lookup(
        lookup: impl Fn(&str) -> Option<String>,
    ) -> Result<Option<Self>, AuthConfigError> {
        let mut spec = String::new();
        if let Some(v) = lookup(ENV_API_TOKENS).filter(|v| !v.trim().is_empty()) {
            spec.push_str(&v);
            spec.push('\n');
        }
        if let Some(p) = lookup(ENV_API_TOKENS_FILE).filter(|v| !v.trim().is_empty()) {
            let path = PathBuf::from(p.trim());
            let text = std::fs::read_to_string(&path)
                .map_err(|source| AuthConfigError::Io { path, source })?;
            spec.push_str(&text);
        }
        if spec.trim().is_empty() {
            return Ok(None);
        }
        Self::parse(&spec).map(Some)
    }

    /// The configured tokens (names and scopes; hashes stay private).
    #[must_use]
    pub fn tokens(&self) -> &[ApiToken] {
        &self.tokens
    }

    /// The token matching `secret`, comparing hashes in constant time with every
    /// configured token (the loop does not stop at the first match).
    #[must_use]
    pub fn authenticate(&self, secret: &str) -> Option<&ApiToken> {
        let h = sha256(secret);
        let mut found = None;
        for t in self.tokens.iter() {
            if bool::from(t.hash.ct_eq(&h)) && found.is_none() {
                found = Some(t);
            }
        }
        found
    }

    /// Checks the `authorization` header of a request against `required`.
    ///
    /// # Errors
    /// [`AuthError::Unauthenticated`] without a valid bearer token,
    /// [`AuthError::PermissionDenied`] when its scope is too small.
    pub fn check(&self, headers: &HeaderMap, required: Scope) -> Result<&ApiToken, AuthError> {
        let Some(value) = headers.get(header::AUTHORIZATION) else {
            return Err(AuthError::Unauthenticated(
                "missing API token (send authorization: Bearer <token>)",
            ));
        };
        let Some(secret) = value
            .to_str()
            .ok()
            .and_then(|v| {
                v.strip_prefix("Bearer ")
                    .or_else(|| v.strip_prefix("bearer "))
            })
            .map(str::trim)
        else {
            return Err(AuthError::Unauthenticated(
                "the authorization header is not a bearer token",
            ));
        };
        let token = self
            .authenticate(secret)
            .ok_or(AuthError::Unauthenticated("invalid API token"))?;
        if token.scope.allows(required) {
            Ok(token)
        } else {
            Err(AuthError::PermissionDenied {
                token: token.name.clone(),
                has: token.scope,
                needs: required,
            })
        }
    }
}

fn sha256(s: &str) -> [u8; 32] {
    Sha256::digest(s.as_bytes()).into()
}

/// SHA-256 of a token, in hex: what goes into the server configuration.
#[must_use]
pub fn token_hash_hex(secret: &str) -> String {
    hex::encode(sha256(secret))
}

/// A new random token: `hodei_` and 32 random bytes in hex (256 bits).
#[must_use]
pub fn generate_token() -> String {
    let bytes: [u8; 32] = rand::random();
    format!("hodei_{}", hex::encode(bytes))
}

/// The scope a gRPC method needs; `None` for methods outside API-token auth
/// (worker RPCs, health, reflection). Unknown `hodei.v1` methods need
/// [`Scope::Admin`] (fail closed).
#[must_use]
pub fn grpc_required_scope(path: &str) -> Option<Scope> {
    let path = path.strip_prefix('/').unwrap_or(path);
    let (service, method) = path.split_once('/').unwrap_or((path, ""));
    let Some(service) = service.strip_prefix("hodei.v1.") else {
        // grpc.health.v1.Health, grpc.reflection.*: open.
        return None;
    };
    match (service, method) {
        ("WorkerAgentService", _) => None,
        ("JobExecutionService", "StartJob" | "UpdateProgress" | "CompleteJob" | "FailJob") => None,
        ("JobExecutionService", "QueueJob" | "CancelJob" | "ExecutionEventStream") => {
            Some(Scope::Submit)
        }
        ("JobQueryService" | "LogStreamService" | "MetricsService", _) => Some(Scope::Submit),
        ("ProviderManagementService", "ListProviders" | "GetProviderHealth") => Some(Scope::Submit),
        (
            "SchedulerService",
            "GetSchedulingDecision"
            | "GetQueueStatus"
            | "GetAvailableWorkers"
            | "SchedulingDecisionStream",
        ) => Some(Scope::Submit),
        _ => Some(Scope::Admin),
    }
}

/// The scope a REST call needs; `None` for `/healthz` and `/readyz`.
#[must_use]
pub fn rest_required_scope(method: &Method, path: &str) -> Option<Scope> {
    match path {
        "/healthz" | "/readyz" => None,
        "/api/v1/providers" if method != Method::GET && method != Method::HEAD => {
            Some(Scope::Admin)
        }
        _ => Some(Scope::Submit),
    }
}

/// A tower layer that enforces API tokens on gRPC services (tonic).
///
/// Wrap each service with [`GrpcAuthLayer::wrap`] (it keeps the service's
/// gRPC name), or use it with `Server::builder().layer(..)`. With `None` it
/// passes every request through.
#[derive(Debug, Clone)]
pub struct GrpcAuthLayer {
    auth: Option<ApiAuth>,
}

impl GrpcAuthLayer {
    /// A layer over `auth` (`None` = open).
    #[must_use]
    pub fn new(auth: Option<ApiAuth>) -> Self {
        Self { auth }
    }

    /// Wraps one service.
    #[must_use]
    pub fn wrap<S>(&self, inner: S) -> GrpcAuth<S> {
        GrpcAuth {
            inner,
            auth: self.auth.clone(),
        }
    }
}

impl<S> tower::Layer<S> for GrpcAuthLayer {
    type Service = GrpcAuth<S>;
    fn layer(&self, inner: S) -> GrpcAuth<S> {
        self.wrap(inner)
    }
}

/// The service made by [`GrpcAuthLayer`].
#[derive(Debug, Clone)]
pub struct GrpcAuth<S> {
    inner: S,
    auth: Option<ApiAuth>,
}

impl<S: tonic::server::NamedService> tonic::server::NamedService for GrpcAuth<S> {
    const NAME: &'static str = S::NAME;
}

/// The boxed future of [`GrpcAuth`].
pub type BoxFuture<T, E> = Pin<Box<dyn Future<Output = Result<T, E>> + Send + 'static>>;

impl<S, ReqBody, ResBody> tower::Service<Request<ReqBody>> for GrpcAuth<S>
where
    S: tower::Service<Request<ReqBody>, Response = Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    ReqBody: Send + 'static,
    ResBody: Default + Send + 'static,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReqBody>) -> Self::Future {
        if let Some(auth) = &self.auth
            && let Some(required) = grpc_required_scope(req.uri().path())
            && let Err(e) = auth.check(req.headers(), required)
        {
            tracing::info!(path = %req.uri().path(), reason = %e, "gRPC call refused");
            let status = match e {
                AuthError::Unauthenticated(m) => tonic::Status::unauthenticated(m),
                other @ AuthError::PermissionDenied { .. } => {
                    tonic::Status::permission_denied(other.to_string())
                }
            };
            return Box::pin(std::future::ready(Ok(status.into_http())));
        }
        // The clone that was made ready is the one to call (tower's contract).
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        Box::pin(inner.call(req))
    }
}

/// axum middleware enforcing API tokens on the REST API: use with
/// `axum::middleware::from_fn_with_state(auth, rest_auth)`. Errors are the
/// REST adapter's JSON errors (401 `unauthenticated`, 403 `permission_denied`).
pub async fn rest_auth(
    axum::extract::State(auth): axum::extract::State<ApiAuth>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let Some(required) = rest_required_scope(req.method(), req.uri().path()) else {
        return next.run(req).await;
    };
    match auth.check(req.headers(), required) {
        Ok(_) => next.run(req).await,
        Err(e) => {
            tracing::info!(path = %req.uri().path(), reason = %e, "REST call refused");
            let (status, code) = match e {
                AuthError::Unauthenticated(_) => (StatusCode::UNAUTHORIZED, "unauthenticated"),
                AuthError::PermissionDenied { .. } => (StatusCode::FORBIDDEN, "permission_denied"),
            };
            let mut resp =
                crate::api::rest::ApiError::new(status, code, e.to_string()).into_response();
            if status == StatusCode::UNAUTHORIZED {
                resp.headers_mut().insert(
                    header::WWW_AUTHENTICATE,
                    axum::http::HeaderValue::from_static("Bearer"),
                );
            }
            resp
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_authenticate() {
        let a = generate_token();
        let b = generate_token();
        assert_ne!(a, b);
        let spec = format!(
            "ci:submit:{},\n# comment\nops:admin:{}",
            token_hash_hex(&a),
            token_hash_hex(&b)
        );
        let auth = ApiAuth::parse(&spec).unwrap();
        assert_eq!(auth.authenticate(&a).unwrap().name(), "ci");
        assert_eq!(auth.authenticate(&b).unwrap().scope(), Scope::Admin);
        assert!(auth.authenticate("x").is_none());
        let line = auth.tokens()[0].config_line();
        assert!(line.starts_with("ci:submit:"));
        assert!(ApiAuth::parse("a:submit").is_err());
        assert!(ApiAuth::parse("a:root:00").is_err());
        assert!(ApiAuth::parse("a:submit:abcd").is_err());
        assert!(ApiAuth::parse(" , ").is_err());
    }

    #[test]
    fn header_checks() {
        let t = generate_token();
        let auth = ApiAuth::new(vec![ApiToken::from_secret("ci", Scope::Submit, &t)]);
        let mut h = HeaderMap::new();
        assert!(matches!(
            auth.check(&h, Scope::Submit),
            Err(AuthError::Unauthenticated(_))
        ));
        h.insert(
            header::AUTHORIZATION,
            format!("Bearer {t}").parse().unwrap(),
        );
        assert!(auth.check(&h, Scope::Submit).is_ok());
        assert!(matches!(
            auth.check(&h, Scope::Admin),
            Err(AuthError::PermissionDenied { .. })
        ));
        h.insert(header::AUTHORIZATION, "Basic abc".parse().unwrap());
        assert!(matches!(
            auth.check(&h, Scope::Submit),
            Err(AuthError::Unauthenticated(_))
        ));
    }

    #[test]
    fn method_scopes() {
        assert_eq!(
            grpc_required_scope("/hodei.v1.WorkerAgentService/Register"),
            None
        );
        assert_eq!(
            grpc_required_scope("/hodei.v1.JobExecutionService/CompleteJob"),
            None
        );
        assert_eq!(grpc_required_scope("/grpc.health.v1.Health/Check"), None);
        assert_eq!(
            grpc_required_scope("/hodei.v1.JobExecutionService/QueueJob"),
            Some(Scope::Submit)
        );
        assert_eq!(
            grpc_required_scope("/hodei.v1.JobExecutionService/AssignJob"),
            Some(Scope::Admin)
        );
        assert_eq!(
            grpc_required_scope("/hodei.v1.SchedulerService/ConfigureScheduler"),
            Some(Scope::Admin)
        );
        assert_eq!(
            grpc_required_scope("/hodei.v1.ProviderManagementService/RegisterProvider"),
            Some(Scope::Admin)
        );
        assert_eq!(
            grpc_required_scope("/hodei.v1.NewService/Anything"),
            Some(Scope::Admin)
        );
        assert_eq!(rest_required_scope(&Method::GET, "/healthz"), None);
        assert_eq!(
            rest_required_scope(&Method::POST, "/api/v1/providers"),
            Some(Scope::Admin)
        );
        assert_eq!(
            rest_required_scope(&Method::POST, "/api/v1/jobs"),
            Some(Scope::Submit)
        );
    }
}
