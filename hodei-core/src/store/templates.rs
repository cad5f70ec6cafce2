//! [`TemplateStore`]: versioned job templates, and its in-memory implementation.
//!
//! Saving a template under a name that exists stores the next version; every
//! version stays readable, so a job made from version 2 can be traced back to
//! exactly what it ran.

use std::collections::BTreeMap;
use std::sync::Mutex;

use async_trait::async_trait;

use super::StoreError;
use crate::domain::template::JobTemplate;

/// Job templates, versioned per name.
#[async_trait]
pub trait TemplateStore: Send + Sync {
    /// Stores `template` as the next version of its name (1 for a new name)
    /// and returns it with that version; the version it carries is ignored.
    /// Concurrent saves of one name get distinct versions.
    async fn save(&self, template: &JobTemplate) -> Result<JobTemplate, StoreError>;
    /// One version of a template, or its latest when `version` is `None`.
    async fn get(
        &self,
        name: &str,
        version: Option<u32>,
    ) -> Result<Option<JobTemplate>, StoreError>;
    /// The latest version of every template, by name.
    async fn list(&self) -> Result<Vec<JobTemplate>, StoreError>;
    /// The stored versions of one template, ascending (empty when unknown).
    async fn versions(&self, name: &str) -> Result<Vec<u32>, StoreError>;
}

/// In-memory [`TemplateStore`].
#[derive(Debug, Default)]
pub struct InMemoryTemplateStore {
    /// Name → versions in order (index `i` is version `i + 1`).
    templates: Mutex<BTreeMap<String, Vec<JobTemplate>>>,
}

impl InMemoryTemplateStore {
    /// An empty store.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Vec<JobTemplate>>> {
        // A panic while holding the lock cannot leave a half-written entry.
        self.templates
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[async_trait]
impl TemplateStore for InMemoryTemplateStore {
    async fn save(&self, template: &JobTemplate) -> Result<JobTemplate, StoreError> {
        let mut all = self.lock();
        let versions = all.entry(template.name().to_owned()).or_default();
        let next = u32::try_from(versions.len() + 1).map_err(|_| StoreError::Invalid {
            field: "version".into(),
            message: "too many versions".into(),
        })?;
        let stored = template.clone().with_version(next);
        versions.push(stored.clone());
        Ok(stored)
    }

    async fn get(
        &self,
        name: &str,
        version: Option<u32>,
    ) -> Result<Option<JobTemplate>, StoreError> {
        let all = self.lock();
        let Some(versions) = all.get(name) else {
            return Ok(None);
        };
        Ok(match version {
            None => versions.last().cloned(),
            Some(0) => None,
            Some(v) => versions.get(v as usize - 1).cloned(),
        })
    }

    async fn list(&self) -> Result<Vec<JobTemplate>, StoreError> {
        Ok(self
            .lock()
            .values()
            .filter_map(|v| v.last().cloned())
            .collect())
    }

    async fn versions(&self, name: &str) -> Result<Vec<u32>, StoreError> {
        Ok(self
            .lock()
            .get(name)
            .map(|v| v.iter().map(JobTemplate::version).collect())
            .unwrap_or_default())
    }
}
