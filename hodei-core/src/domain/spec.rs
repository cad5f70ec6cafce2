//! What a job runs and what it needs: [`JobSpec`] and its parts, validated once at the edge.

use std::collections::{BTreeMap, HashSet};

use serde::{Deserialize, Serialize};

/// Maximum size of a script or of one argument list, so a spec cannot exhaust memory downstream.
pub const MAX_SCRIPT_BYTES: usize = 1024 * 1024;
/// Maximum number of environment variables plus secrets in one spec.
pub const MAX_ENV_ENTRIES: usize = 1024;
/// Shortest secret value the agent can redact without mangling unrelated output.
pub const MIN_SECRET_LEN: usize = 6;
/// Longest job timeout accepted: seven days.
pub const MAX_TIMEOUT_MS: u64 = 7 * 24 * 3600 * 1000;
/// Why an output whose `url` names another destination than the server's artifact store is refused.
pub const OUTPUT_URL_NOT_SUPPORTED: &str =
    "only the server's artifact store is supported as a destination: leave url empty";

/// What a job runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
#[non_exhaustive]
pub enum CommandType {
    /// A program run directly with its arguments, with no shell in between.
    Shell {
        /// Program name or path.
        cmd: String,
        /// Arguments, passed verbatim.
        #[serde(default)]
        args: Vec<String>,
    },
    /// A script written to a private file and run by `interpreter`.
    Script {
        /// Interpreter, e.g. `bash`, `sh`, `python3`.
        interpreter: String,
        /// Script body.
        content: String,
    },
}

impl CommandType {
    /// A [`CommandType::Shell`] from a program and its arguments.
    pub fn shell(
        cmd: impl Into<String>,
        args: impl IntoIterator<Item = impl Into<String>>,
    ) -> Self {
        Self::Shell {
            cmd: cmd.into(),
            args: args.into_iter().map(Into::into).collect(),
        }
    }

    /// A [`CommandType::Script`] run by `interpreter`.
    pub fn script(interpreter: impl Into<String>, content: impl Into<String>) -> Self {
        Self::Script {
            interpreter: interpreter.into(),
            content: content.into(),
        }
    }
}

/// Resources a job asks for.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct JobResources {
    /// CPU cores (fractions allowed).
    pub cpu_cores: f64,
    /// Memory in MiB.
    pub memory_mb: u64,
    /// Scratch storage in MiB.
    pub storage_mb: u64,
    /// Whether the job needs a GPU.
    pub gpu_required: bool,
    /// Required CPU architecture (`x86_64`, `aarch64`), or `None` for any.
    pub architecture: Option<String>,
}

impl Default for JobResources {
    fn default() -> Self {
        Self {
            cpu_cores: 1.0,
            memory_mb: 512,
            storage_mb: 1024,
            gpu_required: false,
            architecture: None,
        }
    }
}

/// Operator of a placement [`Constraint`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ConstraintOp {
    /// Label equals the single value.
    Eq,
    /// Label differs from the single value (or is absent).
    Ne,
    /// Label is one of the values.
    In,
    /// Label is present.
    Exists,
}

/// A placement constraint on worker or provider labels.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Constraint {
    /// Label key.
    pub key: String,
    /// How to compare.
    pub op: ConstraintOp,
    /// Values to compare against.
    #[serde(default)]
    pub values: Vec<String>,
}

impl Constraint {
    /// Whether a label set satisfies this constraint.
    #[must_use]
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        let v = labels.get(&self.key);
        match self.op {
            ConstraintOp::Eq => v.is_some_and(|v| self.values.first() == Some(v)),
            ConstraintOp::Ne => v.is_none_or(|v| self.values.first() != Some(v)),
            ConstraintOp::In => v.is_some_and(|v| self.values.contains(v)),
            ConstraintOp::Exists => v.is_some(),
        }
    }
}

/// An input artifact, fetched by the agent before the command starts.
///
/// The only source supported is an artifact of another job,
/// `artifact://JOB_ID/NAME` (see [`crate::artifacts`]); any other `url` is
/// refused by [`JobSpec::validate`] naming the field.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ArtifactSource {
    /// A label for logs and errors (free text, may be empty).
    #[serde(default)]
    pub name: String,
    /// Where to fetch it from: `artifact://JOB_ID/NAME`.
    pub url: String,
    /// Where to put it, relative to the job's working directory (no `..`, not absolute).
    pub path: String,
}

/// An output artifact, uploaded by the agent after the command ends, whatever its outcome.
///
/// `path` is a file or a glob relative to the working directory. A file is
/// stored as `name`; each file a glob matches as `name/RELATIVE_PATH`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ArtifactDest {
    /// Artifact name (or name prefix, for a glob).
    pub name: String,
    /// File or glob relative to the job's working directory (`out/**/*.txt`).
    pub path: String,
    /// Destination; empty = the server's artifact store, the only one supported.
    #[serde(default)]
    pub url: String,
}

/// Scheduling preferences.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct JobPreferences {
    /// Provider name or id to prefer (or require: the scheduler treats it as required).
    pub preferred_provider: Option<String>,
    /// Region to prefer.
    pub preferred_region: Option<String>,
    /// Higher runs first. Range -1000..=1000.
    pub priority: i32,
    /// Whether the job may be retried after a failure of its worker.
    pub allow_retry: bool,
}

impl Default for JobPreferences {
    fn default() -> Self {
        Self {
            preferred_provider: None,
            preferred_region: None,
            priority: 0,
            allow_retry: true,
        }
    }
}

/// Everything a client says about a job.
///
/// Build one with [`JobSpec::new`] and the `with_*` methods, or deserialize it
/// from JSON; then call [`JobSpec::validate`] before storing it.
///
/// ```
/// use hodei_core::{CommandType, JobSpec};
/// let spec = JobSpec::new("hello", CommandType::shell("echo", ["hi"]))
///     .with_env("GREETING", "hi")
///     .with_timeout_ms(30_000);
/// assert!(spec.validate().is_ok());
/// ```
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobSpec {
    /// Human-readable name.
    #[serde(default)]
    pub name: String,
    /// What to run.
    pub command: CommandType,
    /// Container or VM image, for providers that use one.
    #[serde(default)]
    pub image: Option<String>,
    /// Environment variables.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Secrets, given to the job as one JSON object on stdin and redacted from its output.
    #[serde(default)]
    pub secrets: BTreeMap<String, String>,
    /// Resources.
    #[serde(default, deserialize_with = "object_or_null")]
    pub resources: JobResources,
    /// Timeout of one attempt, in milliseconds.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// Placement constraints.
    #[serde(default)]
    pub constraints: Vec<Constraint>,
    /// Input artifacts, fetched before the command starts.
    #[serde(default)]
    pub inputs: Vec<ArtifactSource>,
    /// Output artifacts, uploaded after the command ends (also when it fails).
    #[serde(default)]
    pub outputs: Vec<ArtifactDest>,
    /// Scheduling preferences.
    #[serde(default, deserialize_with = "object_or_null")]
    pub preferences: JobPreferences,
    /// Attempts allowed in total (1 = no retry).
    #[serde(default = "default_max_attempts")]
    pub max_attempts: u32,
    /// Working directory of the job on the worker; `None` = a fresh per-job directory.
    #[serde(default)]
    pub working_dir: Option<String>,
    /// Free-form labels.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Jobs sharing this key are scheduled at most the key's concurrency
    /// limit at a time (see [`crate::domain::concurrency`]); the others wait
    /// in the queue without holding up other jobs. `None` = no limit applies.
    #[serde(default)]
    pub concurrency_key: Option<String>,
}

// Secrets never reach Debug output.
impl std::fmt::Debug for JobSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JobSpec")
            .field("name", &self.name)
            .field("command", &self.command)
            .field("image", &self.image)
            .field("env", &self.env)
            .field("secrets", &self.secrets.keys().collect::<Vec<_>>())
            .field("resources", &self.resources)
            .field("timeout_ms", &self.timeout_ms)
            .field("max_attempts", &self.max_attempts)
            .finish_non_exhaustive()
    }
}

/// A nested settings object, or `null` for its defaults. Serde's derived
/// `Deserialize` would also read a struct from an array, by position (`[]`
/// gave the defaults, found by schemathesis); the API takes objects only.
fn object_or_null<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    struct ObjectOnly<T>(std::marker::PhantomData<T>);
    impl<'de, T: Deserialize<'de> + Default> serde::de::Visitor<'de> for ObjectOnly<T> {
        type Value = T;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("an object or null")
        }
        fn visit_unit<E: serde::de::Error>(self) -> Result<T, E> {
            Ok(T::default())
        }
        fn visit_none<E: serde::de::Error>(self) -> Result<T, E> {
            Ok(T::default())
        }
        fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<T, A::Error> {
            T::deserialize(serde::de::value::MapAccessDeserializer::new(map))
        }
    }
    d.deserialize_any(ObjectOnly(std::marker::PhantomData))
}

fn default_timeout_ms() -> u64 {
    3_600_000
}

fn default_max_attempts() -> u32 {
    3
}

/// One problem found in a spec, naming the field.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FieldError {
    /// Dotted path of the field, e.g. `resources.cpu_cores`, `env.1BAD`.
    pub field: String,
    /// What is wrong with it.
    pub message: String,
}

impl std::fmt::Display for FieldError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

/// Every problem found in a spec.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid job spec: {}", .errors.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
pub struct ValidationErrors {
    /// The problems, each naming its field.
    pub errors: Vec<FieldError>,
}

impl ValidationErrors {
    /// The first offending field, for error codes that carry only one.
    #[must_use]
    pub fn first_field(&self) -> &str {
        self.errors.first().map_or("", |e| e.field.as_str())
    }
}

/// Whether `name` is a valid environment variable name (`[A-Za-z_][A-Za-z0-9_]*`).
#[must_use]
pub fn is_valid_env_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

impl JobSpec {
    /// A spec with defaults for everything but its name and command.
    pub fn new(name: impl Into<String>, command: CommandType) -> Self {
        Self {
            name: name.into(),
            command,
            image: None,
            env: BTreeMap::new(),
            secrets: BTreeMap::new(),
            resources: JobResources::default(),
            timeout_ms: default_timeout_ms(),
            constraints: Vec::new(),
            inputs: Vec::new(),
            outputs: Vec::new(),
            preferences: JobPreferences::default(),
            max_attempts: default_max_attempts(),
            working_dir: None,
            concurrency_key: None,
            labels: BTreeMap::new(),
        }
    }

    /// Adds an environment variable.
    #[must_use]
    pub fn with_env(mut self, k: impl Into<String>, v: impl Into<String>) -> Self {
        self.env.insert(k.into(), v.into());
        self
    }

    /// Adds a secret.
    #[must_use]
    pub fn with_secret(mut self, k: impl Into<String>, v: impl Into<String>) -> Self {
        self.secrets.insert(k.into(), v.into());
        self
    }

    /// Sets the timeout.
    #[must_use]
    pub fn with_timeout_ms(mut self, ms: u64) -> Self {
        self.timeout_ms = ms;
        self
    }

    /// Sets the number of attempts allowed.
    #[must_use]
    pub fn with_max_attempts(mut self, n: u32) -> Self {
        self.max_attempts = n;
        self
    }

    /// Sets the preferred (required) provider.
    #[must_use]
    pub fn with_provider(mut self, provider: impl Into<String>) -> Self {
        self.preferences.preferred_provider = Some(provider.into());
        self
    }

    /// Sets the priority.
    #[must_use]
    pub fn with_priority(mut self, p: i32) -> Self {
        self.preferences.priority = p;
        self
    }

    /// Sets the concurrency key (see [`crate::domain::concurrency`]).
    #[must_use]
    pub fn with_concurrency_key(mut self, key: impl Into<String>) -> Self {
        self.concurrency_key = Some(key.into());
        self
    }

    /// The secret names, never the values.
    pub fn secret_names(&self) -> impl Iterator<Item = &str> {
        self.secrets.keys().map(String::as_str)
    }

    /// A copy with secret values removed (names kept), safe to return from APIs.
    #[must_use]
    pub fn redacted(&self) -> Self {
        let mut s = self.clone();
        s.secrets.clear();
        s
    }

    /// Checks the whole spec and returns every problem, each naming its field.
    pub fn validate(&self) -> Result<(), ValidationErrors> {
        let mut errors = Vec::new();
        let mut err = |field: String, message: &str| {
            errors.push(FieldError {
                field,
                message: message.to_owned(),
            });
        };
        if self.name.len() > 256 {
            err("name".into(), "must be at most 256 bytes");
        }
        if self.name.contains('\0') {
            err("name".into(), "must not contain NUL");
        }
        match &self.command {
            CommandType::Shell { cmd, args } => {
                if cmd.trim().is_empty() {
                    err("command.cmd".into(), "must not be empty");
                }
                if cmd.contains('\0') || args.iter().any(|a| a.contains('\0')) {
                    err("command.args".into(), "must not contain NUL");
                }
                if args.iter().map(String::len).sum::<usize>() > MAX_SCRIPT_BYTES {
                    err("command.args".into(), "must be at most 1 MiB in total");
                }
            }
            CommandType::Script {
                interpreter,
                content,
            } => {
                if interpreter.trim().is_empty() {
                    err("command.interpreter".into(), "must not be empty");
                }
                if interpreter.contains('\0') {
                    err("command.interpreter".into(), "must not contain NUL");
                }
                if content.trim().is_empty() {
                    err("command.content".into(), "must not be empty");
                }
                if content.len() > MAX_SCRIPT_BYTES {
                    err("command.content".into(), "must be at most 1 MiB");
                }
            }
        }
        if self.timeout_ms == 0 {
            err("timeout_ms".into(), "must be greater than zero");
        } else if self.timeout_ms > MAX_TIMEOUT_MS {
            err("timeout_ms".into(), "must be at most 7 days");
        }
        if self.max_attempts == 0 {
            err("max_attempts".into(), "must be at least 1");
        } else if self.max_attempts > 100 {
            err("max_attempts".into(), "must be at most 100");
        }
        let cpu = self.resources.cpu_cores;
        if !cpu.is_finite() || cpu <= 0.0 {
            err(
                "resources.cpu_cores".into(),
                "must be a positive finite number",
            );
        } else if cpu > 1024.0 {
            err("resources.cpu_cores".into(), "must be at most 1024");
        }
        if self.resources.memory_mb == 0 {
            err("resources.memory_mb".into(), "must be greater than zero");
        }
        if let Some(arch) = &self.resources.architecture
            && arch.trim().is_empty()
        {
            err(
                "resources.architecture".into(),
                "must not be empty when given",
            );
        }
        if self.env.len() + self.secrets.len() > MAX_ENV_ENTRIES {
            err("env".into(), "too many variables and secrets (max 1024)");
        }
        for (k, v) in &self.env {
            if !is_valid_env_name(k) {
                err(
                    format!("env.{k}"),
                    "is not a valid variable name ([A-Za-z_][A-Za-z0-9_]*)",
                );
            }
            if v.contains('\0') {
                err(format!("env.{k}"), "value must not contain NUL");
            }
        }
        let mut seen = HashSet::new();
        for (k, v) in &self.secrets {
            if !is_valid_env_name(k) {
                err(
                    format!("secrets.{k}"),
                    "is not a valid secret name ([A-Za-z_][A-Za-z0-9_]*)",
                );
            }
            // Secret names are case-insensitively unique: FOO and foo would collide in env-like use.
            if !seen.insert(k.to_ascii_uppercase()) {
                err(format!("secrets.{k}"), "duplicate secret name");
            }
            if self.env.contains_key(k) {
                err(format!("secrets.{k}"), "also defined in env");
            }
            if v.len() < MIN_SECRET_LEN {
                err(
                    format!("secrets.{k}"),
                    "value too short to redact safely (at least 6 bytes)",
                );
            }
        }
        for (i, c) in self.constraints.iter().enumerate() {
            if c.key.trim().is_empty() {
                err(format!("constraints[{i}].key"), "must not be empty");
            }
            let needs_one = matches!(c.op, ConstraintOp::Eq | ConstraintOp::Ne);
            if needs_one && c.values.len() != 1 {
                err(
                    format!("constraints[{i}].values"),
                    "eq/ne need exactly one value",
                );
            }
            if c.op == ConstraintOp::In && c.values.is_empty() {
                err(
                    format!("constraints[{i}].values"),
                    "in needs at least one value",
                );
            }
        }
        // Only the kinds of source and destination the agent acts on are
        // accepted; any other is refused naming the field, never ignored.
        crate::artifacts::names::check_spec(&self.inputs, &self.outputs, &mut err);
        if let Some(why) = self
            .concurrency_key
            .as_deref()
            .and_then(crate::domain::concurrency::concurrency_key_problem)
        {
            err("concurrency_key".into(), &why);
        }
        if !(-1000..=1000).contains(&self.preferences.priority) {
            err(
                "preferences.priority".into(),
                "must be between -1000 and 1000",
            );
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(ValidationErrors { errors })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(spec: &JobSpec) -> Vec<String> {
        spec.validate()
            .unwrap_err()
            .errors
            .into_iter()
            .map(|e| e.field)
            .collect()
    }

    #[test]
    fn a_plain_spec_is_valid() {
        JobSpec::new("ok", CommandType::shell("true", Vec::<String>::new()))
            .validate()
            .unwrap();
    }

    #[test]
    fn every_problem_is_reported_with_its_field() {
        let mut spec = JobSpec::new("bad", CommandType::shell("  ", Vec::<String>::new()))
            .with_timeout_ms(0)
            .with_env("1BAD", "x")
            .with_secret("TOKEN", "short");
        spec.resources.cpu_cores = f64::NAN;
        let f = fields(&spec);
        for want in [
            "command.cmd",
            "timeout_ms",
            "resources.cpu_cores",
            "env.1BAD",
            "secrets.TOKEN",
        ] {
            assert!(f.iter().any(|x| x == want), "missing {want} in {f:?}");
        }
    }

    #[test]
    fn negative_cpu_and_empty_script_are_refused() {
        let mut spec = JobSpec::new("s", CommandType::script("bash", "   "));
        spec.resources.cpu_cores = -1.0;
        let f = fields(&spec);
        assert!(f.contains(&"command.content".to_owned()));
        assert!(f.contains(&"resources.cpu_cores".to_owned()));
    }

    #[test]
    fn duplicate_secret_names_are_refused() {
        let spec = JobSpec::new("s", CommandType::shell("true", Vec::<String>::new()))
            .with_secret("API_KEY", "abcdefgh")
            .with_secret("api_key", "ijklmnop");
        assert!(fields(&spec).iter().any(|f| f.starts_with("secrets.")));
    }

    #[test]
    fn unsupported_artifact_kinds_are_refused_naming_each_field() {
        let mut spec = JobSpec::new("a", CommandType::shell("true", Vec::<String>::new()));
        let input = ArtifactSource {
            name: "src".into(),
            url: "http://example.invalid/src.tar".into(),
            path: "../src.tar".into(),
        };
        spec.inputs = vec![input];
        spec.outputs = vec![ArtifactDest {
            name: "/out".into(),
            path: "out/[".into(),
            url: "http://example.invalid/out".into(),
        }];
        let e = spec.validate().unwrap_err();
        let f: Vec<_> = e.errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(
            f,
            [
                "inputs[0].url",
                "inputs[0].path",
                "outputs[0].url",
                "outputs[0].name",
                "outputs[0].path"
            ]
        );
        // What the agent acts on is accepted: another job's artifact in, the server's store out.
        let producer = crate::domain::ids::JobId::new();
        spec.inputs = vec![ArtifactSource {
            name: String::new(),
            url: format!("artifact://{producer}/out/report.txt"),
            path: "in/report.txt".into(),
        }];
        spec.outputs = vec![ArtifactDest {
            name: "reports".into(),
            path: "out/**/*.txt".into(),
            url: String::new(),
        }];
        spec.validate().unwrap();
        // An output's url may be left out of the JSON.
        let parsed: JobSpec = serde_json::from_str(
            r#"{"command":{"type":"shell","cmd":"true"},"outputs":[{"name":"o","path":"*.txt"}]}"#,
        )
        .unwrap();
        parsed.validate().unwrap();
    }

    #[test]
    fn unknown_json_fields_are_refused() {
        let err = serde_json::from_str::<JobSpec>(
            r#"{"command":{"type":"shell","cmd":"true"},"bogus":1}"#,
        )
        .unwrap_err();
        assert!(err.to_string().contains("bogus"));
    }

    #[test]
    fn debug_never_shows_secret_values() {
        let spec = JobSpec::new("s", CommandType::shell("true", Vec::<String>::new()))
            .with_secret("TOKEN", "supersecretvalue");
        assert!(!format!("{spec:?}").contains("supersecretvalue"));
    }

    #[test]
    fn constraints_match_labels() {
        let labels: BTreeMap<_, _> = [("zone".to_owned(), "a".to_owned())].into();
        let c = |op, v: &[&str]| Constraint {
            key: "zone".into(),
            op,
            values: v.iter().map(|s| (*s).to_owned()).collect(),
        };
        assert!(c(ConstraintOp::Eq, &["a"]).matches(&labels));
        assert!(!c(ConstraintOp::Ne, &["a"]).matches(&labels));
        assert!(c(ConstraintOp::In, &["b", "a"]).matches(&labels));
        assert!(c(ConstraintOp::Exists, &[]).matches(&labels));
        assert!(c(ConstraintOp::Ne, &["a"]).matches(&BTreeMap::new()));
    }
}

#[cfg(test)]
mod nested_objects {
    use super::JobSpec;

    fn parse(extra: &str) -> Result<JobSpec, serde_json::Error> {
        serde_json::from_str(&format!(
            r#"{{"command": {{"type": "shell", "cmd": "true"}}{extra}}}"#
        ))
    }

    #[test]
    fn resources_and_preferences_are_objects_or_null_never_arrays() {
        for field in ["resources", "preferences"] {
            let e = parse(&format!(r#", "{field}": []"#)).unwrap_err();
            assert!(e.to_string().contains("an object or null"), "{field}: {e}");
            assert!(
                parse(&format!(r#", "{field}": [1, 2]"#)).is_err(),
                "{field}"
            );
            let defaults = parse(&format!(r#", "{field}": null"#)).unwrap();
            assert_eq!(defaults, parse("").unwrap(), "{field}: null = defaults");
        }
        let s =
            parse(r#", "resources": {"cpu_cores": 2.0}, "preferences": {"priority": 5}"#).unwrap();
        assert!((s.resources.cpu_cores - 2.0).abs() < f64::EPSILON);
        assert_eq!(s.preferences.priority, 5);
    }
}
