//! [`JobTemplate`]: a named, versioned spec with `{{parameters}}` that produces jobs.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::domain::error::DomainError;
use crate::domain::job::Job;
use crate::domain::spec::{CommandType, FieldError, JobSpec, ValidationErrors};

/// A declared template parameter.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TemplateParameter {
    /// Name, used as `{{name}}` in the spec.
    pub name: String,
    /// Default value; `None` = required.
    pub default: Option<String>,
}

/// A named, versioned job spec with parameters.
///
/// ```
/// use hodei_core::{CommandType, JobSpec, JobTemplate, TemplateParameter};
/// let t = JobTemplate::new(
///     "greet",
///     JobSpec::new("greet {{who}}", CommandType::shell("echo", ["hello {{who}}"])),
///     vec![TemplateParameter { name: "who".into(), default: Some("world".into()) }],
/// );
/// let job = t.instantiate(&Default::default()).unwrap();
/// assert_eq!(job.spec().name, "greet world");
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobTemplate {
    name: String,
    version: u32,
    spec: JobSpec,
    parameters: Vec<TemplateParameter>,
}

impl JobTemplate {
    /// Version 1 of a template.
    pub fn new(name: impl Into<String>, spec: JobSpec, parameters: Vec<TemplateParameter>) -> Self {
        Self {
            name: name.into(),
            version: 1,
            spec,
            parameters,
        }
    }

    /// Name.
    #[must_use]
    pub fn name(&self) -> &str {
        &self.name
    }
    /// Version, from 1.
    #[must_use]
    pub fn version(&self) -> u32 {
        self.version
    }
    /// Declared parameters.
    #[must_use]
    pub fn parameters(&self) -> &[TemplateParameter] {
        &self.parameters
    }

    /// A new version with a new spec.
    pub fn update(&mut self, spec: JobSpec, parameters: Vec<TemplateParameter>) {
        self.spec = spec;
        self.parameters = parameters;
        self.version += 1;
    }

    /// Substitutes the parameters and returns a new validated `Pending` job.
    pub fn instantiate(&self, values: &BTreeMap<String, String>) -> Result<Job, DomainError> {
        let mut resolved = BTreeMap::new();
        let mut errors = Vec::new();
        for p in &self.parameters {
            match values.get(&p.name).or(p.default.as_ref()) {
                Some(v) => {
                    resolved.insert(p.name.clone(), v.clone());
                }
                None => errors.push(FieldError {
                    field: format!("parameters.{}", p.name),
                    message: "required parameter missing".into(),
                }),
            }
        }
        for k in values.keys() {
            if !self.parameters.iter().any(|p| &p.name == k) {
                errors.push(FieldError {
                    field: format!("parameters.{k}"),
                    message: "unknown parameter".into(),
                });
            }
        }
        if !errors.is_empty() {
            return Err(ValidationErrors { errors }.into());
        }
        let sub = |s: &str| {
            resolved.iter().fold(s.to_owned(), |acc, (k, v)| {
                acc.replace(&format!("{{{{{k}}}}}"), v)
            })
        };
        let mut spec = self.spec.clone();
        spec.name = sub(&spec.name);
        spec.command = match &spec.command {
            CommandType::Shell { cmd, args } => CommandType::Shell {
                cmd: sub(cmd),
                args: args.iter().map(|a| sub(a)).collect(),
            },
            CommandType::Script {
                interpreter,
                content,
            } => CommandType::Script {
                interpreter: sub(interpreter),
                content: sub(content),
            },
        };
        spec.env = spec.env.iter().map(|(k, v)| (k.clone(), sub(v))).collect();
        spec.labels.insert(
            "hodei.template".into(),
            format!("{}:{}", self.name, self.version),
        );
        Job::try_new(spec)
    }
}
