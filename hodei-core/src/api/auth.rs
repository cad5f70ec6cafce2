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
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::http::{HeaderMap, Method, Request, Response, StatusCode, header};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::watch::FileStamps;

/// Environment variable with inline token lines (`name:scope:sha256hex`, comma or newline separated).
pub const ENV_API_TOKENS: &str = "HODEI_API_TOKENS";
/// Environment variable naming a file of token lines (one a line, `#` comments);
/// the file is re-read when it changes.
pub const ENV_API_TOKENS_FILE: &str = "HODEI_API_TOKENS_FILE";
/// Seconds between checks of the tokens file for changes (default 10).
pub const ENV_API_TOKENS_RELOAD_INTERVAL_SECS: &str = "HODEI_API_TOKENS_RELOAD_INTERVAL_SECS";

/// Default time between checks of the tokens file.
const DEFAULT_RELOAD_INTERVAL: Duration = Duration::from_secs(10);

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

/// The configured API tokens. Cheap to clone; clones share the token set.
///
/// Built from a tokens file ([`with_file`](Self::with_file), or
/// `HODEI_API_TOKENS_FILE` through [`from_env`](Self::from_env)), the set
/// follows the file: [`reload_if_changed`](Self::reload_if_changed) re-reads it
/// when its modification time changed, and the watcher that
/// [`start_watcher`](Self::start_watcher) runs (the gRPC and REST servers start
/// it) does so every [`poll_interval`](Self::poll_interval), so adding or
/// removing a line takes effect without a restart. A file that no longer
/// parses is refused and the previous set stays; a file with no token left
/// refuses every call.
#[derive(Debug, Clone)]
pub struct ApiAuth {
    inner: Arc<AuthInner>,
}

#[derive(Debug)]
struct AuthInner {
    /// Inline token lines (`HODEI_API_TOKENS`), always part of the set.
    inline: Vec<ApiToken>,
    /// The tokens file, re-read when it changes.
    file: Option<PathBuf>,
    poll_interval: Duration,
    state: RwLock<AuthState>,
    watching: AtomicBool,
}

#[derive(Debug)]
struct AuthState {
    tokens: Arc<Vec<ApiToken>>,
    stamps: FileStamps,
}

impl ApiAuth {
    /// Auth over these tokens (fixed: no file to follow).
    #[must_use]
    pub fn new(tokens: Vec<ApiToken>) -> Self {
        Self::build(tokens, None, FileStamps::default(), Vec::new())
    }

    fn build(
        inline: Vec<ApiToken>,
        file: Option<PathBuf>,
        stamps: FileStamps,
        from_file: Vec<ApiToken>,
    ) -> Self {
        let mut all = inline.clone();
        all.extend(from_file);
        Self {
            inner: Arc::new(AuthInner {
                inline,
                file,
                poll_interval: DEFAULT_RELOAD_INTERVAL,
                state: RwLock::new(AuthState {
                    tokens: Arc::new(all),
                    stamps,
                }),
                watching: AtomicBool::new(false),
            }),
        }
    }

    /// Parses token lines `name:scope:sha256hex`, separated by commas or newlines;
    /// blank lines and `#` comments are skipped.
    ///
    /// # Errors
    /// [`AuthConfigError::Invalid`] for a malformed line (the message never
    /// contains the hash), or when no token is given at all.
    pub fn parse(spec: &str) -> Result<Self, AuthConfigError> {
        let tokens = parse_lines(spec)?;
        if tokens.is_empty() {
            return Err(AuthConfigError::Invalid("no token given".to_owned()));
        }
        Ok(Self::new(tokens))
    }

    /// The tokens of `inline` (lines as for [`parse`](Self::parse), may be
    /// empty) plus those of the file at `path`, which is followed: see
    /// [`reload_if_changed`](Self::reload_if_changed).
    ///
    /// # Errors
    /// A malformed entry, an unreadable file, or no token at all.
    pub fn with_file(inline: &str, path: impl Into<PathBuf>) -> Result<Self, AuthConfigError> {
        let path = path.into();
        let inline = parse_lines(inline)?;
        let stamps = FileStamps::of([Some(path.as_path())]);
        let from_file = read_tokens_file(&path)?;
        if inline.is_empty() && from_file.is_empty() {
            return Err(AuthConfigError::Invalid(format!(
                "no token given ({} has none)",
                path.display()
            )));
        }
        Ok(Self::build(inline, Some(path), stamps, from_file))
    }

    /// How often the watcher checks the tokens file (default 10 s).
    #[must_use]
    pub fn with_poll_interval(self, every: Duration) -> Self {
        let inner = match Arc::try_unwrap(self.inner) {
            Ok(mut inner) => {
                inner.poll_interval = every;
                inner
            }
            Err(shared) => {
                let state = read_lock(&shared.state);
                AuthInner {
                    inline: shared.inline.clone(),
                    file: shared.file.clone(),
                    poll_interval: every,
                    state: RwLock::new(AuthState {
                        tokens: Arc::clone(&state.tokens),
                        stamps: state.stamps.clone(),
                    }),
                    watching: AtomicBool::new(false),
                }
            }
        };
        Self {
            inner: Arc::new(inner),
        }
    }

    /// How often the watcher checks the tokens file.
    #[must_use]
    pub fn poll_interval(&self) -> Duration {
        self.inner.poll_interval
    }

    /// The tokens file this set follows, if any.
    #[must_use]
    pub fn file(&self) -> Option<&Path> {
        self.inner.file.as_deref()
    }

    /// Reads `HODEI_API_TOKENS` and `HODEI_API_TOKENS_FILE` (both may be set;
    /// their tokens add up; the file is followed, checked every
    /// `HODEI_API_TOKENS_RELOAD_INTERVAL_SECS`, default 10). `None` when
    /// neither is set: the API runs open.
    ///
    /// # Errors
    /// A malformed entry, an unreadable file, a file with no token, a bad interval.
    pub fn from_env() -> Result<Option<Self>, AuthConfigError> {
        Self::from_lookup(|k| std::env::var(k).ok())
    }

    /// Like [`from_env`](Self::from_env), reading variables through `lookup`.
    ///
    /// # Errors
    /// As [`from_env`](Self::from_env).
    pub fn from_lookup(
        lookup: impl Fn(&str) -> Option<String>,
    ) -> Result<Option<Self>, AuthConfigError> {
        let get = |k: &str| lookup(k).filter(|v| !v.trim().is_empty());
        let inline = get(ENV_API_TOKENS).unwrap_or_default();
        let auth = match get(ENV_API_TOKENS_FILE) {
            Some(p) => Self::with_file(&inline, PathBuf::from(p.trim()))?,
            None if inline.trim().is_empty() => return Ok(None),
            None => Self::parse(&inline)?,
        };
        Ok(Some(match get(ENV_API_TOKENS_RELOAD_INTERVAL_SECS) {
            Some(v) => {
                let secs: u64 = v.trim().parse().ok().filter(|n| *n > 0).ok_or_else(|| {
                    AuthConfigError::Invalid(format!(
                        "{ENV_API_TOKENS_RELOAD_INTERVAL_SECS}={v:?} is not a positive number of seconds"
                    ))
                })?;
                auth.with_poll_interval(Duration::from_secs(secs))
            }
            None => auth,
        }))
    }

    /// The tokens in force now (names and scopes; hashes stay private).
    #[must_use]
    pub fn tokens(&self) -> Vec<ApiToken> {
        self.current().as_ref().clone()
    }

    fn current(&self) -> Arc<Vec<ApiToken>> {
        Arc::clone(&read_lock(&self.inner.state).tokens)
    }

    /// Re-reads the tokens file when its modification time changed. Returns
    /// whether the set was replaced. On error (unreadable file, malformed
    /// line) the previous set stays and the next call tries again.
    ///
    /// # Errors
    /// [`AuthConfigError`] from reading or parsing the file.
    pub fn reload_if_changed(&self) -> Result<bool, AuthConfigError> {
        let Some(path) = &self.inner.file else {
            return Ok(false);
        };
        let stamps = FileStamps::of([Some(path.as_path())]);
        if read_lock(&self.inner.state).stamps == stamps {
            return Ok(false);
        }
        let from_file = read_tokens_file(path)?;
        let mut all = self.inner.inline.clone();
        all.extend(from_file);
        let names: Vec<&str> = all.iter().map(ApiToken::name).collect();
        if all.is_empty() {
            tracing::warn!(file = %path.display(), "the API tokens file has no token left: every API call is refused");
        } else {
            tracing::info!(file = %path.display(), tokens = ?names, "reloaded the API tokens");
        }
        let mut state = self
            .inner
            .state
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        state.tokens = Arc::new(all);
        state.stamps = stamps;
        Ok(true)
    }

    /// Starts (once per token set: later calls do nothing; needs a tokio
    /// runtime) a task that runs
    /// [`reload_if_changed`](Self::reload_if_changed) every
    /// [`poll_interval`](Self::poll_interval). Nothing to do without a file.
    /// The task ends when the last clone of this `ApiAuth` is dropped.
    pub fn start_watcher(&self) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            tracing::warn!("no tokio runtime: the API tokens file is not watched");
            return;
        };
        if self.inner.file.is_none() || self.inner.watching.swap(true, Ordering::AcqRel) {
            return;
        }
        let weak = Arc::downgrade(&self.inner);
        let every = self.inner.poll_interval;
        runtime.spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await;
            loop {
                tick.tick().await;
                let Some(inner) = weak.upgrade() else { return };
                let this = ApiAuth { inner };
                match tokio::task::spawn_blocking(move || this.reload_if_changed()).await {
                    Ok(Ok(_)) => {}
                    Ok(Err(e)) => tracing::error!(
                        error = %e,
                        "API tokens reload failed; keeping the previous tokens"
                    ),
                    Err(e) => tracing::error!(error = %e, "API tokens reload task failed"),
                }
            }
        });
    }

    /// The token matching `secret`, comparing hashes in constant time with every
    /// configured token (the loop does not stop at the first match).
    #[must_use]
    pub fn authenticate(&self, secret: &str) -> Option<ApiToken> {
        let h = sha256(secret);
        let mut found = None;
        for t in self.current().iter() {
            if bool::from(t.hash.ct_eq(&h)) && found.is_none() {
                found = Some(t.clone());
            }
        }
        found
    }

    /// Checks the `authorization` header of a request against `required`.
    ///
    /// # Errors
    /// [`AuthError::Unauthenticated`] without a valid bearer token,
    /// [`AuthError::PermissionDenied`] when its scope is too small.
    pub fn check(&self, headers: &HeaderMap, required: Scope) -> Result<ApiToken, AuthError> {
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

fn read_lock(l: &RwLock<AuthState>) -> std::sync::RwLockReadGuard<'_, AuthState> {
    l.read().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn read_tokens_file(path: &Path) -> Result<Vec<ApiToken>, AuthConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| AuthConfigError::Io {
        path: path.to_owned(),
        source,
    })?;
    parse_lines(&text)
}

/// Token lines `name:scope:sha256hex` (comma or newline separated, `#`
/// comments); none is fine here.
fn parse_lines(spec: &str) -> Result<Vec<ApiToken>, AuthConfigError> {
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
    Ok(tokens)
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
        // Worker-facing: the worker's session token, checked by the service.
        ("WorkerAgentService" | "ArtifactService", _) => None,
        ("JobExecutionService", "StartJob" | "UpdateProgress" | "CompleteJob" | "FailJob") => None,
        ("JobExecutionService", "QueueJob" | "CancelJob" | "RetryJob" | "ExecutionEventStream") => {
            Some(Scope::Submit)
        }
        ("JobQueryService" | "LogStreamService" | "MetricsService", _) => Some(Scope::Submit),
        ("JobArtifactService", _) => Some(Scope::Submit),
        // Like their REST routes: creating and running templates is submitting work.
        ("TemplateService", _) => Some(Scope::Submit),
        ("ProviderManagementService", "ListProviders" | "GetProviderHealth") => Some(Scope::Submit),
        (
            "SchedulerService",
            "GetSchedulingDecision"
            | "GetQueueStatus"
            | "GetAvailableWorkers"
            | "SchedulingDecisionStream"
            | "ListConcurrencyLimits"
            | "GetConcurrencyLimit",
        ) => Some(Scope::Submit),
        _ => Some(Scope::Admin),
    }
}

/// The scope a REST call needs; `None` for `/healthz` and `/readyz`.
#[must_use]
pub fn rest_required_scope(method: &Method, path: &str) -> Option<Scope> {
    match path {
        "/healthz" | "/readyz" => None,
        // The dashboard's static assets; its API calls carry the token.
        p if crate::api::rest::is_dashboard_asset(p) => None,
        // Registering, changing the state of or removing a provider.
        p if (p == "/api/v1/providers" || p.starts_with("/api/v1/providers/"))
            && method != Method::GET
            && method != Method::HEAD =>
        {
            Some(Scope::Admin)
        }
        // Changing the shared strategy or a concurrency limit, like
        // ConfigureScheduler and SetConcurrencyLimit over gRPC.
        p if (p == "/api/v1/scheduler" || p.starts_with("/api/v1/concurrency-limits/"))
            && method != Method::GET
            && method != Method::HEAD =>
        {
            Some(Scope::Admin)
        }
        // The audit log names every token and what it did: admins only.
        "/api/v1/audit" => Some(Scope::Admin),
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

    fn call(&mut self, mut req: Request<ReqBody>) -> Self::Future {
        if let Some(auth) = &self.auth
            && let Some(required) = grpc_required_scope(req.uri().path())
        {
            match auth.check(req.headers(), required) {
                // The token's name is the actor of the audit log.
                Ok(token) => {
                    req.extensions_mut()
                        .insert(crate::control::Actor::token(token.name()));
                }
                Err(e) => {
                    tracing::info!(path = %req.uri().path(), reason = %e, "gRPC call refused");
                    let status = match e {
                        AuthError::Unauthenticated(m) => tonic::Status::unauthenticated(m),
                        other @ AuthError::PermissionDenied { .. } => {
                            tonic::Status::permission_denied(other.to_string())
                        }
                    };
                    return Box::pin(std::future::ready(Ok(status.into_http())));
                }
            }
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
    mut req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let Some(required) = rest_required_scope(req.method(), req.uri().path()) else {
        return next.run(req).await;
    };
    match auth.check(req.headers(), required) {
        // The token's name is the actor of the audit log.
        Ok(token) => {
            req.extensions_mut()
                .insert(crate::control::Actor::token(token.name()));
            next.run(req).await
        }
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
    fn tokens_file_from_the_environment() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("tokens");
        let (a, b) = (generate_token(), generate_token());
        let line_a = ApiToken::from_secret("a", Scope::Submit, &a).config_line();
        let line_b = ApiToken::from_secret("b", Scope::Admin, &b).config_line();
        std::fs::write(&file, format!("# ops\n{line_b}\n")).unwrap();
        let path = file.display().to_string();
        let env = |inline: &str, interval: Option<&'static str>| {
            let (path, inline) = (path.clone(), inline.to_owned());
            move |k: &str| match k {
                ENV_API_TOKENS => Some(inline.clone()),
                ENV_API_TOKENS_FILE => Some(path.clone()),
                ENV_API_TOKENS_RELOAD_INTERVAL_SECS => interval.map(str::to_owned),
                _ => None,
            }
        };
        // Inline and file tokens add up; only the file is followed.
        let inline = line_a.as_str();
        let auth = ApiAuth::from_lookup(env(inline, Some("2")))
            .unwrap()
            .unwrap();
        assert_eq!(auth.tokens().len(), 2);
        assert_eq!(auth.poll_interval(), Duration::from_secs(2));
        assert!(!auth.reload_if_changed().unwrap());
        std::thread::sleep(Duration::from_millis(20));
        std::fs::write(&file, "# none left\n").unwrap();
        assert!(auth.reload_if_changed().unwrap());
        assert_eq!(
            auth.authenticate(&a).map(|t| t.scope()),
            Some(Scope::Submit)
        );
        assert!(auth.authenticate(&b).is_none());
        // At start, a file with no token and nothing inline is an error, not an open API.
        assert!(ApiAuth::from_lookup(env("", None)).is_err());
        assert!(ApiAuth::from_lookup(env(inline, Some("0"))).is_err());
        // A missing file is an error too.
        std::fs::remove_file(&file).unwrap();
        assert!(matches!(
            ApiAuth::from_lookup(env(inline, None)),
            Err(AuthConfigError::Io { .. })
        ));
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
        // Retrying is like submitting; the audit log is for admins only.
        assert_eq!(
            grpc_required_scope("/hodei.v1.JobExecutionService/RetryJob"),
            Some(Scope::Submit)
        );
        assert_eq!(
            grpc_required_scope("/hodei.v1.AuditService/ListAudit"),
            Some(Scope::Admin)
        );
        assert_eq!(
            rest_required_scope(&Method::GET, "/api/v1/audit"),
            Some(Scope::Admin)
        );
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
        for m in [Method::PATCH, Method::DELETE] {
            assert_eq!(
                rest_required_scope(&m, "/api/v1/providers/docker"),
                Some(Scope::Admin)
            );
        }
        assert_eq!(
            rest_required_scope(&Method::GET, "/api/v1/providers"),
            Some(Scope::Submit)
        );
        assert_eq!(
            grpc_required_scope("/hodei.v1.ProviderManagementService/SetProviderState"),
            Some(Scope::Admin)
        );
        // Scheduling settings: reading them is for every client, changing
        // them for admins, over gRPC and REST alike.
        for m in [
            "ListConcurrencyLimits",
            "GetConcurrencyLimit",
            "GetQueueStatus",
        ] {
            assert_eq!(
                grpc_required_scope(&format!("/hodei.v1.SchedulerService/{m}")),
                Some(Scope::Submit),
                "{m}"
            );
        }
        for m in [
            "/hodei.v1.SchedulerService/SetConcurrencyLimit",
            "/hodei.v1.SchedulerService/DeleteConcurrencyLimit",
            "/hodei.v1.ProviderManagementService/SetProviderPricing",
        ] {
            assert_eq!(grpc_required_scope(m), Some(Scope::Admin), "{m}");
        }
        for p in [
            "/api/v1/scheduler",
            "/api/v1/concurrency-limits",
            "/api/v1/concurrency-limits/deploy",
        ] {
            assert_eq!(
                rest_required_scope(&Method::GET, p),
                Some(Scope::Submit),
                "{p}"
            );
        }
        for (m, p) in [
            (Method::PUT, "/api/v1/scheduler"),
            (Method::PUT, "/api/v1/concurrency-limits/deploy"),
            (Method::DELETE, "/api/v1/concurrency-limits/deploy"),
            (Method::PUT, "/api/v1/providers/docker/pricing"),
        ] {
            assert_eq!(rest_required_scope(&m, p), Some(Scope::Admin), "{m} {p}");
        }
    }
}
