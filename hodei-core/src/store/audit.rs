//! The audit log: who did what to which job, provider, template or secret,
//! when, and whether it worked. Append-only: entries are never changed or
//! deleted through this trait (an operator prunes the table by hand if ever).
//!
//! The control plane writes entries through
//! [`ControlPlane::audit`](crate::control::ControlPlane::audit);
//! `GET /api/v1/audit` and `hodei audit list` read them back.

use std::sync::RwLock;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::StoreError;

/// Default number of entries [`AuditLog::list`] returns without a limit.
pub const DEFAULT_AUDIT_PAGE: usize = 100;
/// Largest page [`AuditLog::list`] returns.
pub const MAX_AUDIT_PAGE: usize = 1000;

/// What was done. Stored and filtered by its [`AuditAction::as_str`] name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum AuditAction {
    /// A job was submitted.
    JobSubmit,
    /// A job was cancelled.
    JobCancel,
    /// A finished job was run again.
    JobRetry,
    /// A provider was registered.
    ProviderRegister,
    /// A provider's state or settings changed.
    ProviderUpdate,
    /// A provider was removed.
    ProviderDelete,
    /// A template (version) was created.
    TemplateCreate,
    /// A job was run from a template.
    TemplateRun,
    /// A worker injected a job's secrets (the names are in `detail`).
    SecretInjected,
}

impl AuditAction {
    /// Every action, in a stable order.
    pub const ALL: [AuditAction; 9] = [
        Self::JobSubmit,
        Self::JobCancel,
        Self::JobRetry,
        Self::ProviderRegister,
        Self::ProviderUpdate,
        Self::ProviderDelete,
        Self::TemplateCreate,
        Self::TemplateRun,
        Self::SecretInjected,
    ];

    /// The name stored and accepted by filters (`job_submit`, …).
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::JobSubmit => "job_submit",
            Self::JobCancel => "job_cancel",
            Self::JobRetry => "job_retry",
            Self::ProviderRegister => "provider_register",
            Self::ProviderUpdate => "provider_update",
            Self::ProviderDelete => "provider_delete",
            Self::TemplateCreate => "template_create",
            Self::TemplateRun => "template_run",
            Self::SecretInjected => "secret_injected",
        }
    }
}

impl std::fmt::Display for AuditAction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for AuditAction {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Self::ALL
            .into_iter()
            .find(|a| a.as_str() == s)
            .ok_or_else(|| {
                let names: Vec<&str> = Self::ALL.iter().map(|a| a.as_str()).collect();
                format!("unknown action {s:?}; one of {}", names.join(", "))
            })
    }
}

/// Whether the action worked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum AuditOutcome {
    /// It was done.
    Success,
    /// It was refused or failed (the reason is in `detail`).
    Failure,
}

impl AuditOutcome {
    /// The name stored (`success`, `failure`).
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Success => "success",
            Self::Failure => "failure",
        }
    }
}

impl std::str::FromStr for AuditOutcome {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "success" => Ok(Self::Success),
            "failure" => Ok(Self::Failure),
            other => Err(format!("unknown outcome {other:?}; success or failure")),
        }
    }
}

/// An entry to append (the store assigns its id).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct NewAuditEntry {
    /// When it happened.
    pub at: DateTime<Utc>,
    /// Who: an API token's name, `anonymous` (no tokens configured) or
    /// `worker:<id>`.
    pub actor: String,
    /// What.
    pub action: AuditAction,
    /// On what: `job:<id>`, `provider:<name>`, `template:<name>`.
    pub target: String,
    /// Whether it worked.
    pub outcome: AuditOutcome,
    /// The error of a failure, the secret names of an injection; may be empty.
    pub detail: String,
}

impl NewAuditEntry {
    /// A successful `action` on `target` by `actor`, now.
    #[must_use]
    pub fn new(actor: impl Into<String>, action: AuditAction, target: impl Into<String>) -> Self {
        Self {
            at: Utc::now(),
            actor: actor.into(),
            action,
            target: target.into(),
            outcome: AuditOutcome::Success,
            detail: String::new(),
        }
    }

    /// Sets the outcome and detail.
    #[must_use]
    pub fn with_outcome(mut self, outcome: AuditOutcome, detail: impl Into<String>) -> Self {
        self.outcome = outcome;
        self.detail = detail.into();
        self
    }

    /// Sets the time.
    #[must_use]
    pub fn at(mut self, at: DateTime<Utc>) -> Self {
        self.at = at;
        self
    }
}

/// A stored entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct AuditEntry {
    /// Increasing in the order entries were appended (the paging cursor).
    pub id: u64,
    /// The entry.
    #[serde(flatten)]
    pub entry: NewAuditEntry,
}

impl AuditEntry {
    /// An entry stored with `id` (for store implementations).
    #[must_use]
    pub fn new(id: u64, entry: NewAuditEntry) -> Self {
        Self { id, entry }
    }
}

/// Which entries [`AuditLog::list`] returns: all conditions must hold.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct AuditFilter {
    /// Only this actor.
    pub actor: Option<String>,
    /// Only this action.
    pub action: Option<AuditAction>,
    /// Only this target.
    pub target: Option<String>,
    /// Only entries at or after this time.
    pub since: Option<DateTime<Utc>>,
    /// Only entries with an id below this one (the previous page's
    /// `next_before`).
    pub before: Option<u64>,
    /// At most this many, newest first (default [`DEFAULT_AUDIT_PAGE`],
    /// at most [`MAX_AUDIT_PAGE`]).
    pub limit: Option<usize>,
}

impl AuditFilter {
    /// The page size to use.
    #[must_use]
    pub fn page_size(&self) -> usize {
        self.limit
            .unwrap_or(DEFAULT_AUDIT_PAGE)
            .clamp(1, MAX_AUDIT_PAGE)
    }

    /// Whether `e` passes every condition but the page bounds.
    #[must_use]
    pub fn matches(&self, e: &AuditEntry) -> bool {
        self.actor.as_ref().is_none_or(|a| *a == e.entry.actor)
            && self.action.is_none_or(|a| a == e.entry.action)
            && self.target.as_ref().is_none_or(|t| *t == e.entry.target)
            && self.since.is_none_or(|s| e.entry.at >= s)
            && self.before.is_none_or(|b| e.id < b)
    }
}

/// The append-only audit log.
#[async_trait]
pub trait AuditLog: Send + Sync {
    /// Appends an entry; returns it with its id (greater than every id
    /// returned before).
    async fn append(&self, entry: &NewAuditEntry) -> Result<AuditEntry, StoreError>;
    /// Entries matching `filter`, newest (highest id) first.
    async fn list(&self, filter: &AuditFilter) -> Result<Vec<AuditEntry>, StoreError>;
}

/// The audit log in memory (lost at exit, like the other in-memory stores).
#[derive(Debug, Default)]
pub struct InMemoryAuditLog {
    entries: RwLock<Vec<AuditEntry>>,
}

#[async_trait]
impl AuditLog for InMemoryAuditLog {
    async fn append(&self, entry: &NewAuditEntry) -> Result<AuditEntry, StoreError> {
        let mut all = self
            .entries
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let id = all.last().map_or(1, |e| e.id + 1);
        let stored = AuditEntry {
            id,
            entry: entry.clone(),
        };
        all.push(stored.clone());
        Ok(stored)
    }

    async fn list(&self, filter: &AuditFilter) -> Result<Vec<AuditEntry>, StoreError> {
        let all = self
            .entries
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        Ok(all
            .iter()
            .rev()
            .filter(|e| filter.matches(e))
            .take(filter.page_size())
            .cloned()
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn action_names_round_trip() {
        for a in AuditAction::ALL {
            assert_eq!(a.as_str().parse::<AuditAction>(), Ok(a));
            assert_eq!(
                serde_json::to_value(a).unwrap(),
                serde_json::json!(a.as_str())
            );
        }
        assert!("drop_tables".parse::<AuditAction>().is_err());
    }
}
