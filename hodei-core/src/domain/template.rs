//! [`JobTemplate`]: a named, versioned spec with typed `{{parameters}}` that
//! produces jobs.
//!
//! A parameter is used as `{{name}}` in the spec's name, command, image,
//! working directory, environment values and label values. Values are checked
//! against the parameter's [`ParameterType`] before substitution, and every
//! problem is a [`FieldError`] naming `parameters.<name>`. Substitution is one
//! pass: a value that itself contains `{{x}}` is inserted as it is.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Deserializer, Serialize};

use crate::domain::error::DomainError;
use crate::domain::job::Job;
use crate::domain::spec::{CommandType, FieldError, JobSpec, ValidationErrors};

/// Label a job made from a template carries: the template's name.
pub const TEMPLATE_LABEL: &str = "hodei.template";
/// Label a job made from a template carries: the template's version.
pub const TEMPLATE_VERSION_LABEL: &str = "hodei.template.version";

/// Longest template name, in bytes.
pub const MAX_TEMPLATE_NAME: usize = 63;
/// Most parameters one template may declare.
pub const MAX_TEMPLATE_PARAMETERS: usize = 64;

/// The type of a template parameter's values.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ParameterType {
    /// Any text.
    #[default]
    String,
    /// A whole number (`i64`), e.g. `3` or `-1`.
    Integer,
    /// `true` or `false`.
    Boolean,
    /// One of the parameter's `values`.
    Enum,
}

impl ParameterType {
    /// The name used in specs and errors.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::String => "string",
            Self::Integer => "integer",
            Self::Boolean => "boolean",
            Self::Enum => "enum",
        }
    }
}

impl std::fmt::Display for ParameterType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for ParameterType {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "string" => Ok(Self::String),
            "integer" => Ok(Self::Integer),
            "boolean" => Ok(Self::Boolean),
            "enum" => Ok(Self::Enum),
            other => Err(format!(
                "unknown parameter type {other:?} (string, integer, boolean, enum)"
            )),
        }
    }
}

/// A declared template parameter.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct TemplateParameter {
    /// Name, used as `{{name}}` in the spec: a letter or `_`, then letters,
    /// digits, `_` or `-`.
    pub name: String,
    /// Type of its values (default `string`).
    #[serde(rename = "type", default)]
    pub kind: ParameterType,
    /// Default value (a string, number or boolean in JSON/YAML); `None` = required.
    #[serde(
        default,
        deserialize_with = "scalar_string",
        skip_serializing_if = "Option::is_none"
    )]
    pub default: Option<String>,
    /// The allowed values of an `enum` parameter (none for other types).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub values: Vec<String>,
    /// What it is for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

impl TemplateParameter {
    /// A required parameter of `kind`.
    pub fn new(name: impl Into<String>, kind: ParameterType) -> Self {
        Self {
            name: name.into(),
            kind,
            ..Self::default()
        }
    }

    /// A required string parameter.
    pub fn string(name: impl Into<String>) -> Self {
        Self::new(name, ParameterType::String)
    }

    /// Sets the default value (the parameter becomes optional).
    #[must_use]
    pub fn with_default(mut self, v: impl Into<String>) -> Self {
        self.default = Some(v.into());
        self
    }

    /// Sets the allowed values (for `enum`).
    #[must_use]
    pub fn with_values<I, S>(mut self, values: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.values = values.into_iter().map(Into::into).collect();
        self
    }

    /// Sets the description.
    #[must_use]
    pub fn with_description(mut self, d: impl Into<String>) -> Self {
        self.description = Some(d.into());
        self
    }

    /// Whether a value must be given (no default).
    #[must_use]
    pub fn is_required(&self) -> bool {
        self.default.is_none()
    }

    /// Checks one value against the type; the message says what was expected.
    pub fn check_value(&self, value: &str) -> Result<(), String> {
        match self.kind {
            ParameterType::String => Ok(()),
            ParameterType::Integer => value
                .parse::<i64>()
                .map(drop)
                .map_err(|_| format!("{value:?} is not an integer")),
            ParameterType::Boolean => match value {
                "true" | "false" => Ok(()),
                _ => Err(format!("{value:?} is not a boolean (true or false)")),
            },
            ParameterType::Enum => {
                if self.values.iter().any(|v| v == value) {
                    Ok(())
                } else {
                    Err(format!(
                        "{value:?} is not one of {}",
                        self.values.join(", ")
                    ))
                }
            }
        }
    }

    /// A value of the right type, to check a spec before any real value exists.
    fn sample(&self) -> String {
        if let Some(d) = &self.default {
            return d.clone();
        }
        match self.kind {
            ParameterType::String => "x".to_owned(),
            ParameterType::Integer => "0".to_owned(),
            ParameterType::Boolean => "false".to_owned(),
            ParameterType::Enum => self.values.first().cloned().unwrap_or_default(),
        }
    }
}

/// Reads an optional string that may be written as a number or a boolean.
fn scalar_string<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Scalar {
        S(String),
        I(i64),
        F(f64),
        B(bool),
    }
    Ok(Option::<Scalar>::deserialize(d)?.map(|s| match s {
        Scalar::S(s) => s,
        Scalar::I(i) => i.to_string(),
        Scalar::F(f) => f.to_string(),
        Scalar::B(b) => b.to_string(),
    }))
}

/// A named, versioned job spec with parameters.
///
/// ```
/// use hodei_core::{CommandType, JobSpec, JobTemplate, ParameterType, TemplateParameter};
/// let t = JobTemplate::new(
///     "greet",
///     JobSpec::new("greet {{who}}", CommandType::shell("echo", ["hello {{who}}", "x{{times}}"])),
///     vec![
///         TemplateParameter::string("who").with_default("world"),
///         TemplateParameter::new("times", ParameterType::Integer).with_default("1"),
///     ],
/// );
/// assert!(t.validate().is_ok());
/// let job = t.instantiate(&Default::default()).unwrap();
/// assert_eq!(job.spec().name, "greet world");
/// let bad = [("times".to_owned(), "many".to_owned())].into();
/// let err = t.render(&bad).unwrap_err();
/// assert_eq!(err.errors[0].field, "parameters.times");
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobTemplate {
    name: String,
    version: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    description: Option<String>,
    spec: JobSpec,
    #[serde(default)]
    parameters: Vec<TemplateParameter>,
}

impl JobTemplate {
    /// Version 1 of a template.
    pub fn new(name: impl Into<String>, spec: JobSpec, parameters: Vec<TemplateParameter>) -> Self {
        Self {
            name: name.into(),
            version: 1,
            description: None,
            spec,
            parameters,
        }
    }

    /// Sets the description.
    #[must_use]
    pub fn with_description(mut self, d: impl Into<String>) -> Self {
        self.description = Some(d.into());
        self
    }

    /// The same template as version `version` (stores number the versions).
    #[must_use]
    pub fn with_version(mut self, version: u32) -> Self {
        self.version = version;
        self
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
    /// Description.
    #[must_use]
    pub fn description(&self) -> Option<&str> {
        self.description.as_deref()
    }
    /// The spec, with its `{{parameters}}` unsubstituted.
    #[must_use]
    pub fn spec(&self) -> &JobSpec {
        &self.spec
    }
    /// The spec, mutable (e.g. to seal its secrets before storing).
    pub fn spec_mut(&mut self) -> &mut JobSpec {
        &mut self.spec
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

    /// Checks the template itself: its name, its parameters (names, types,
    /// defaults, enum values), that every `{{x}}` in the spec is declared, and
    /// that the spec is valid once filled with defaults or sample values.
    /// Fields are `name`, `parameters.<i>…` / `parameters.<name>…` and `spec.…`.
    pub fn validate(&self) -> Result<(), ValidationErrors> {
        let mut errors = Vec::new();
        let mut err = |field: String, message: String| errors.push(FieldError { field, message });
        if let Err(m) = check_name(&self.name) {
            err("name".into(), m);
        }
        if self.parameters.len() > MAX_TEMPLATE_PARAMETERS {
            err(
                "parameters".into(),
                format!("at most {MAX_TEMPLATE_PARAMETERS} parameters"),
            );
        }
        let mut seen = BTreeSet::new();
        for (i, p) in self.parameters.iter().enumerate() {
            if !is_identifier(&p.name) {
                err(
                    format!("parameters.{i}.name"),
                    format!(
                        "{:?} is not a parameter name (a letter or _, then letters, digits, _ or -)",
                        p.name
                    ),
                );
                continue;
            }
            if !seen.insert(p.name.as_str()) {
                err(
                    format!("parameters.{}", p.name),
                    "declared more than once".into(),
                );
            }
            match (p.kind, p.values.is_empty()) {
                (ParameterType::Enum, true) => err(
                    format!("parameters.{}.values", p.name),
                    "an enum parameter needs at least one value".into(),
                ),
                (ParameterType::Enum, false) => {}
                (_, false) => err(
                    format!("parameters.{}.values", p.name),
                    format!("only an enum parameter has values, this one is {}", p.kind),
                ),
                (_, true) => {}
            }
            if let Some(Err(m)) = p.default.as_deref().map(|d| p.check_value(d)) {
                err(format!("parameters.{}.default", p.name), m);
            }
        }
        let declared: BTreeSet<&str> = self.parameters.iter().map(|p| p.name.as_str()).collect();
        for (field, text) in spec_texts(&self.spec) {
            for used in placeholders(text) {
                if !declared.contains(used) {
                    err(
                        format!("spec.{field}"),
                        format!("uses {{{{{used}}}}}, which is not a declared parameter"),
                    );
                }
            }
        }
        if errors.is_empty() {
            let samples: BTreeMap<&str, String> = self
                .parameters
                .iter()
                .map(|p| (p.name.as_str(), p.sample()))
                .collect();
            if let Err(v) = substitute(&self.spec, &samples).validate() {
                errors.extend(v.errors.into_iter().map(|e| FieldError {
                    field: format!("spec.{}", e.field),
                    message: e.message,
                }));
            }
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(ValidationErrors { errors })
        }
    }

    /// Checks `values` (each `parameters.<name>`: missing when required,
    /// unknown, or not of its type), substitutes them (defaults for the rest)
    /// and returns the spec, labelled with [`TEMPLATE_LABEL`] and
    /// [`TEMPLATE_VERSION_LABEL`]. The spec is not validated here.
    pub fn render(&self, values: &BTreeMap<String, String>) -> Result<JobSpec, ValidationErrors> {
        let mut resolved = BTreeMap::new();
        let mut errors = Vec::new();
        for p in &self.parameters {
            match values.get(&p.name).or(p.default.as_ref()) {
                Some(v) => match p.check_value(v) {
                    Ok(()) => {
                        resolved.insert(p.name.as_str(), v.clone());
                    }
                    Err(message) => errors.push(FieldError {
                        field: format!("parameters.{}", p.name),
                        message,
                    }),
                },
                None => errors.push(FieldError {
                    field: format!("parameters.{}", p.name),
                    message: format!("required {} parameter missing", p.kind),
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
            return Err(ValidationErrors { errors });
        }
        let mut spec = substitute(&self.spec, &resolved);
        spec.labels.insert(TEMPLATE_LABEL.into(), self.name.clone());
        spec.labels
            .insert(TEMPLATE_VERSION_LABEL.into(), self.version.to_string());
        Ok(spec)
    }

    /// Substitutes the parameters and returns a new validated `Pending` job.
    pub fn instantiate(&self, values: &BTreeMap<String, String>) -> Result<Job, DomainError> {
        Job::try_new(self.render(values)?)
    }
}

/// Checks a template name: 1 to 63 bytes of lowercase letters, digits, `.`,
/// `_` or `-`, starting with a letter or digit.
pub fn check_name(name: &str) -> Result<(), String> {
    let ok_first = name
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    let ok_rest = name
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '_' | '-'));
    if name.is_empty() || name.len() > MAX_TEMPLATE_NAME || !ok_first || !ok_rest {
        return Err(format!(
            "{name:?} is not a template name (1 to {MAX_TEMPLATE_NAME} lowercase letters, digits, '.', '_' or '-', starting with a letter or digit)"
        ));
    }
    Ok(())
}

fn is_identifier(s: &str) -> bool {
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        && s.len() <= 64
}

/// Every text of a spec parameters are substituted in, with its field path.
fn spec_texts(spec: &JobSpec) -> Vec<(String, &str)> {
    let mut out = vec![("name".to_owned(), spec.name.as_str())];
    match &spec.command {
        CommandType::Shell { cmd, args } => {
            out.push(("command.cmd".into(), cmd));
            out.extend(
                args.iter()
                    .enumerate()
                    .map(|(i, a)| (format!("command.args.{i}"), a.as_str())),
            );
        }
        CommandType::Script {
            interpreter,
            content,
        } => {
            out.push(("command.interpreter".into(), interpreter));
            out.push(("command.content".into(), content));
        }
    }
    if let Some(i) = &spec.image {
        out.push(("image".into(), i));
    }
    if let Some(w) = &spec.working_dir {
        out.push(("working_dir".into(), w));
    }
    out.extend(
        spec.env
            .iter()
            .map(|(k, v)| (format!("env.{k}"), v.as_str())),
    );
    out.extend(
        spec.labels
            .iter()
            .map(|(k, v)| (format!("labels.{k}"), v.as_str())),
    );
    out
}

/// The `{{name}}` placeholders of a text (only identifiers: `{{ .Go }}`
/// templates and other braces are left alone).
fn placeholders(text: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find("{{") {
        let after = &rest[start + 2..];
        match after.find("}}") {
            Some(end) if is_identifier(&after[..end]) => {
                out.push(&after[..end]);
                rest = &after[end + 2..];
            }
            _ => rest = after,
        }
    }
    out
}

/// Replaces each declared `{{name}}` in one pass.
fn fill<S: AsRef<str>>(text: &str, values: &BTreeMap<&str, S>) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        match after
            .find("}}")
            .and_then(|end| values.get(&after[..end]).map(|v| (end, v)))
        {
            Some((end, v)) => {
                out.push_str(v.as_ref());
                rest = &after[end + 2..];
            }
            None => {
                out.push_str("{{");
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

fn substitute<S: AsRef<str>>(spec: &JobSpec, values: &BTreeMap<&str, S>) -> JobSpec {
    let sub = |s: &str| fill(s, values);
    let mut spec = spec.clone();
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
    spec.image = spec.image.as_deref().map(sub);
    spec.working_dir = spec.working_dir.as_deref().map(sub);
    spec.env = spec.env.iter().map(|(k, v)| (k.clone(), sub(v))).collect();
    spec.labels = spec
        .labels
        .iter()
        .map(|(k, v)| (k.clone(), sub(v)))
        .collect();
    spec
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(params: Vec<TemplateParameter>, args: &[&str]) -> JobTemplate {
        JobTemplate::new(
            "deploy",
            JobSpec::new("deploy {{env}}", CommandType::shell("echo", args.to_vec())),
            params,
        )
    }

    fn vals(kv: &[(&str, &str)]) -> BTreeMap<String, String> {
        kv.iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn fields(e: &ValidationErrors) -> Vec<&str> {
        e.errors.iter().map(|f| f.field.as_str()).collect()
    }

    #[test]
    fn typed_values_are_checked_and_named() {
        let tpl = t(
            vec![
                TemplateParameter::new("env", ParameterType::Enum).with_values(["dev", "prod"]),
                TemplateParameter::new("replicas", ParameterType::Integer).with_default("1"),
                TemplateParameter::new("dry", ParameterType::Boolean).with_default("false"),
            ],
            &["{{env}}", "{{replicas}}", "{{dry}}"],
        );
        tpl.validate().unwrap();
        let spec = tpl
            .render(&vals(&[("env", "prod"), ("replicas", "3")]))
            .unwrap();
        assert_eq!(spec.name, "deploy prod");
        assert_eq!(
            spec.command,
            CommandType::shell("echo", ["prod", "3", "false"])
        );
        assert_eq!(spec.labels[TEMPLATE_LABEL], "deploy");
        assert_eq!(spec.labels[TEMPLATE_VERSION_LABEL], "1");

        let e = tpl
            .render(&vals(&[
                ("env", "qa"),
                ("replicas", "x"),
                ("dry", "yes"),
                ("zz", "1"),
            ]))
            .unwrap_err();
        assert_eq!(
            fields(&e),
            [
                "parameters.env",
                "parameters.replicas",
                "parameters.dry",
                "parameters.zz"
            ]
        );
        let e = tpl.render(&vals(&[])).unwrap_err();
        assert_eq!(fields(&e), ["parameters.env"]);
        assert!(e.errors[0].message.contains("required"));
    }

    #[test]
    fn substitution_is_one_pass_and_leaves_other_braces() {
        let tpl = t(
            vec![
                TemplateParameter::string("env"),
                TemplateParameter::string("b").with_default("B"),
            ],
            &["{{env}}-{{b}}", "{{ .Go }}", "{{"],
        );
        let spec = tpl.render(&vals(&[("env", "{{b}}")])).unwrap();
        assert_eq!(
            spec.command,
            CommandType::shell("echo", ["{{b}}-B", "{{ .Go }}", "{{"])
        );
    }

    #[test]
    fn the_template_itself_is_validated() {
        let tpl = t(
            vec![
                TemplateParameter::new("env", ParameterType::Enum),
                TemplateParameter::new("n", ParameterType::Integer).with_default("many"),
                TemplateParameter::string("s").with_values(["a"]),
                TemplateParameter::string("1bad"),
                TemplateParameter::string("s"),
            ],
            &["{{undeclared}}"],
        );
        let e = tpl.validate().unwrap_err();
        assert_eq!(
            fields(&e),
            [
                "parameters.env.values",
                "parameters.n.default",
                "parameters.s.values",
                "parameters.3.name",
                "parameters.s",
                "spec.command.args.0",
            ]
        );
        let bad_name = JobTemplate::new(
            "Bad Name",
            JobSpec::new("x", CommandType::shell("true", [""; 0])),
            vec![],
        );
        assert_eq!(fields(&bad_name.validate().unwrap_err()), ["name"]);
        // The filled spec is validated too: an empty command after substitution.
        let empty = JobTemplate::new(
            "e",
            JobSpec::new("x", CommandType::shell("{{c}}", [""; 0])),
            vec![TemplateParameter::string("c").with_default("")],
        );
        assert_eq!(fields(&empty.validate().unwrap_err()), ["spec.command.cmd"]);
    }

    #[test]
    fn parameters_read_scalar_defaults_and_refuse_unknown_fields() {
        let p: TemplateParameter =
            serde_json::from_str(r#"{"name":"n","type":"integer","default":3}"#).unwrap();
        assert_eq!(p.default.as_deref(), Some("3"));
        assert_eq!(p.kind, ParameterType::Integer);
        let p: TemplateParameter =
            serde_json::from_str(r#"{"name":"b","type":"boolean","default":true}"#).unwrap();
        assert_eq!(p.default.as_deref(), Some("true"));
        assert!(serde_json::from_str::<TemplateParameter>(r#"{"name":"n","typo":1}"#).is_err());
        assert!(
            serde_json::from_str::<TemplateParameter>(r#"{"name":"n","type":"float"}"#).is_err()
        );
    }
}
