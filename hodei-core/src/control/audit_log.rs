//! Recording and reading the audit log ([`crate::store::audit`]).
//!
//! Every API handler that changes something records one entry after the
//! control-plane call, with the caller's [`Actor`] and the call's result:
//!
//! ```no_run
//! # async fn demo(cp: hodei_core::control::ControlPlane, actor: hodei_core::control::Actor)
//! # -> hodei_core::control::ControlResult<()> {
//! use hodei_core::store::AuditAction;
//! let result = cp.retry_job(hodei_core::domain::ids::JobId::new()).await;
//! cp.audit().record(&actor, AuditAction::JobRetry, "job:…", &result).await;
//! # Ok(()) }
//! ```
//!
//! REST handlers get the actor with the `Actor` extractor (the API-token
//! middleware puts the token's name in the request), gRPC handlers read it
//! from the request's extensions the same layer fills. Recording never fails the action: an entry the store
//! refuses is logged as an error instead (the action already happened).

use std::fmt;

use super::{ControlPlane, ControlResult};
use crate::domain::ids::{JobId, WorkerId};
use crate::store::{AuditAction, AuditEntry, AuditFilter, AuditOutcome, NewAuditEntry};

/// Who acts: an API token's name, `anonymous` (the server runs without API
/// tokens) or `worker:<id>`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Actor(String);

impl Actor {
    /// The caller authenticated with the API token named `name`.
    #[must_use]
    pub fn token(name: &str) -> Self {
        Self(name.to_owned())
    }

    /// No API tokens are configured: callers are not identified.
    #[must_use]
    pub fn anonymous() -> Self {
        Self("anonymous".to_owned())
    }

    /// A worker acting on its own jobs.
    #[must_use]
    pub fn worker(id: WorkerId) -> Self {
        Self(format!("worker:{id}"))
    }

    /// The name recorded.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Actor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The audit target naming a job.
#[must_use]
pub fn job_target(id: JobId) -> String {
    format!("job:{id}")
}

/// The audit target naming a provider.
#[must_use]
pub fn provider_target(name: &str) -> String {
    format!("provider:{name}")
}

/// The audit target naming a template.
#[must_use]
pub fn template_target(name: &str) -> String {
    format!("template:{name}")
}

/// Writes and reads audit entries; from [`ControlPlane::audit`].
#[derive(Debug, Clone, Copy)]
pub struct Auditor<'a> {
    cp: &'a ControlPlane,
}

impl ControlPlane {
    /// The audit log.
    #[must_use]
    pub fn audit(&self) -> Auditor<'_> {
        Auditor { cp: self }
    }
}

impl Auditor<'_> {
    /// Records `action` on `target` by `actor`: a success when `result` is
    /// `Ok`, else a failure with the error as detail.
    pub async fn record<T, E: fmt::Display>(
        &self,
        actor: &Actor,
        action: AuditAction,
        target: impl Into<String>,
        result: &Result<T, E>,
    ) {
        let entry = NewAuditEntry::new(actor.as_str(), action, target);
        let entry = match result {
            Ok(_) => entry,
            Err(e) => entry.with_outcome(AuditOutcome::Failure, e.to_string()),
        };
        self.append(entry).await;
    }

    /// Like [`record`](Self::record), with `detail` kept on a success too
    /// (e.g. the state a provider was set to).
    pub async fn record_detail<T, E: fmt::Display>(
        &self,
        actor: &Actor,
        action: AuditAction,
        target: impl Into<String>,
        result: &Result<T, E>,
        detail: impl Into<String>,
    ) {
        let entry = NewAuditEntry::new(actor.as_str(), action, target);
        let entry = match result {
            Ok(_) => entry.with_outcome(AuditOutcome::Success, detail),
            Err(e) => entry.with_outcome(AuditOutcome::Failure, e.to_string()),
        };
        self.append(entry).await;
    }

    /// Records a prepared entry.
    pub async fn append(&self, entry: NewAuditEntry) {
        if let Err(e) = self.cp.inner.stores.audit.append(&entry).await {
            tracing::error!(
                actor = %entry.actor,
                action = %entry.action,
                target = %entry.target,
                error = %e,
                "audit entry not stored"
            );
        }
    }

    /// Entries matching `filter`, newest first.
    pub async fn list(&self, filter: &AuditFilter) -> ControlResult<Vec<AuditEntry>> {
        Ok(self.cp.inner.stores.audit.list(filter).await?)
    }
}
