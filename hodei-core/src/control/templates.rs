//! [`TemplateService`]: creating, reading and running versioned job templates.
//!
//! A template is checked whole before it is stored (its parameters, the
//! `{{placeholders}}` of its spec, the spec filled with sample values), its
//! secrets are sealed like a job's, and running it fills the parameters,
//! labels the job with the template's name and version and submits it like
//! any other job.

use std::collections::BTreeMap;

use super::{ControlError, ControlPlane, ControlResult};
use crate::domain::ids::CorrelationId;
use crate::domain::job::Job;
use crate::domain::template::{JobTemplate, check_name};

/// Templates over a control plane's stores. Cheap to clone.
#[derive(Debug, Clone)]
pub struct TemplateService {
    cp: ControlPlane,
}

impl TemplateService {
    /// The service.
    #[must_use]
    pub fn new(cp: ControlPlane) -> Self {
        Self { cp }
    }

    /// Validates `template` and stores it as the next version of its name
    /// (1 for a new name); returns the stored template. Nothing is stored
    /// when it is invalid (every problem names its field).
    pub async fn create(&self, template: JobTemplate) -> ControlResult<JobTemplate> {
        template.validate()?;
        let mut template = template;
        let sealed = self.cp.inner.sealer.seal(&template.spec().secrets);
        template.spec_mut().secrets = sealed;
        let stored = self.cp.stores().templates.save(&template).await?;
        tracing::info!(template = %stored.name(), version = stored.version(), "template stored");
        Ok(stored)
    }

    /// Version `version` of a template, or its latest.
    pub async fn get(&self, name: &str, version: Option<u32>) -> ControlResult<JobTemplate> {
        check_name(name).map_err(|message| ControlError::InvalidArgument {
            field: "name".into(),
            message,
        })?;
        if version == Some(0) {
            return Err(ControlError::InvalidArgument {
                field: "version".into(),
                message: "versions start at 1".into(),
            });
        }
        self.cp
            .stores()
            .templates
            .get(name, version)
            .await?
            .ok_or_else(|| {
                ControlError::NotFound(match version {
                    Some(v) => format!("template {name} version {v}"),
                    None => format!("template {name}"),
                })
            })
    }

    /// The latest version of every template, by name.
    pub async fn list(&self) -> ControlResult<Vec<JobTemplate>> {
        Ok(self.cp.stores().templates.list().await?)
    }

    /// The stored versions of a template, ascending.
    pub async fn versions(&self, name: &str) -> ControlResult<Vec<u32>> {
        Ok(self.cp.stores().templates.versions(name).await?)
    }

    /// Runs a template (its latest version unless `version` is set) with
    /// `values` for its parameters: a bad value is `parameters.<name>`, a
    /// spec the values make invalid names the spec field. Returns the queued
    /// job, labelled with the template's name and version.
    pub async fn run(
        &self,
        name: &str,
        version: Option<u32>,
        values: &BTreeMap<String, String>,
        correlation_id: Option<CorrelationId>,
    ) -> ControlResult<Job> {
        let template = self.get(name, version).await?;
        let spec = template.render(values)?;
        let job = self.cp.create_job(spec, correlation_id).await?;
        tracing::info!(
            job_id = %job.id(),
            template = %template.name(),
            version = template.version(),
            "template run"
        );
        Ok(job)
    }
}
