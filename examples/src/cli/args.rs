//! Pure argument handling: `K=V` pairs, durations, and building a [`JobSpec`]
//! from `hodei job run` arguments. No I/O except reading a script file and
//! secret values from the environment, so all of it is unit-tested.

use std::path::Path;
use std::time::Duration;

use hodei_core::{CommandType, JobSpec};

/// A `K=V` argument.
pub(crate) fn parse_key_val(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_owned(), v.to_owned())),
        _ => Err(format!("expected KEY=VALUE, got {s:?}")),
    }
}

/// A `--secret` argument: `K=V`, or `K` alone to take the value from the
/// environment variable `K` (so the value does not show in `ps` or shell history).
pub(crate) fn parse_secret(
    s: &str,
    env: impl Fn(&str) -> Option<String>,
) -> Result<(String, String), String> {
    if s.contains('=') {
        return parse_key_val(s);
    }
    if s.is_empty() {
        return Err("expected KEY=VALUE or KEY".to_owned());
    }
    env(s)
        .map(|v| (s.to_owned(), v))
        .ok_or_else(|| format!("secret {s}: no value given and ${s} is not set"))
}

/// A duration like `500ms`, `30s`, `5m`, `1h`, `1h30m` or `1.5s`; a bare number is seconds.
pub(crate) fn parse_duration(s: &str) -> Result<Duration, String> {
    let bad = || format!("invalid duration {s:?} (examples: 500ms, 30s, 5m, 1h, 1h30m)");
    let s = s.trim();
    if s.is_empty() {
        return Err(bad());
    }
    if let Ok(secs) = s.parse::<f64>() {
        return Duration::try_from_secs_f64(secs).map_err(|_| bad());
    }
    let mut total = Duration::ZERO;
    let mut rest = s;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(bad)?;
        if num_len == 0 {
            return Err(bad());
        }
        let value: f64 = rest[..num_len].parse().map_err(|_| bad())?;
        rest = &rest[num_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let unit_secs = match &rest[..unit_len] {
            "ms" => 0.001,
            "s" | "sec" | "secs" => 1.0,
            "m" | "min" | "mins" => 60.0,
            "h" | "hr" | "hours" => 3600.0,
            "d" | "days" => 86_400.0,
            _ => return Err(bad()),
        };
        rest = &rest[unit_len..];
        total += Duration::try_from_secs_f64(value * unit_secs).map_err(|_| bad())?;
    }
    Ok(total)
}

/// The interpreter named by a script's shebang line: the program's file name,
/// or the first argument of `/usr/bin/env`. `None` without a shebang.
pub(crate) fn interpreter_from_shebang(content: &str) -> Option<String> {
    let line = content.lines().next()?.strip_prefix("#!")?;
    let mut words = line.split_whitespace();
    let program = words.next()?;
    let name = Path::new(program).file_name()?.to_str()?;
    if name == "env" {
        words.find(|w| !w.starts_with('-')).map(str::to_owned)
    } else {
        Some(name.to_owned())
    }
}

/// What `hodei job run` says about the job, before it becomes a [`JobSpec`].
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct RunSpecArgs {
    pub(crate) name: Option<String>,
    pub(crate) env: Vec<(String, String)>,
    pub(crate) secrets: Vec<(String, String)>,
    pub(crate) timeout: Option<Duration>,
    pub(crate) cpu: Option<f64>,
    pub(crate) memory_mb: Option<u64>,
    pub(crate) max_attempts: Option<u32>,
    pub(crate) provider: Option<String>,
    pub(crate) image: Option<String>,
    pub(crate) labels: Vec<(String, String)>,
}

/// What the job runs.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum RunCommand {
    /// A program and its arguments.
    Program(Vec<String>),
    /// A script's content and interpreter (`None` = from its shebang, else bash).
    Script {
        file_name: String,
        content: String,
        interpreter: Option<String>,
    },
}

/// Builds the spec. Only structural problems are errors here; the caller runs
/// [`JobSpec::validate`] to report every field problem.
pub(crate) fn build_spec(args: &RunSpecArgs, command: RunCommand) -> Result<JobSpec, String> {
    let (default_name, command) = match command {
        RunCommand::Program(words) => {
            let mut words = words.into_iter();
            let cmd = words
                .next()
                .ok_or("nothing to run: give a command after `--`, or --script FILE")?;
            let name = Path::new(&cmd)
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or(&cmd)
                .to_owned();
            (name, CommandType::shell(cmd, words))
        }
        RunCommand::Script {
            file_name,
            content,
            interpreter,
        } => {
            let interpreter = interpreter
                .or_else(|| interpreter_from_shebang(&content))
                .unwrap_or_else(|| "bash".to_owned());
            (file_name, CommandType::script(interpreter, content))
        }
    };
    let mut spec = JobSpec::new(args.name.clone().unwrap_or(default_name), command);
    spec.env.extend(args.env.iter().cloned());
    spec.secrets.extend(args.secrets.iter().cloned());
    spec.labels.extend(args.labels.iter().cloned());
    if let Some(t) = args.timeout {
        spec.timeout_ms = u64::try_from(t.as_millis()).unwrap_or(u64::MAX);
    }
    if let Some(cpu) = args.cpu {
        spec.resources.cpu_cores = cpu;
    }
    if let Some(mb) = args.memory_mb {
        spec.resources.memory_mb = mb;
    }
    if let Some(n) = args.max_attempts {
        spec.max_attempts = n;
    }
    if let Some(p) = &args.provider {
        spec.preferences.preferred_provider = Some(p.clone());
    }
    spec.image.clone_from(&args.image);
    Ok(spec)
}

/// Reads a job spec file: YAML for `.yaml`/`.yml`, JSON for `.json`, and for
/// anything else (or `-`, standard input) JSON first, then YAML.
pub(crate) fn parse_spec_file(name: &str, text: &str) -> Result<JobSpec, String> {
    let ext = Path::new(name)
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase);
    match ext.as_deref() {
        Some("yaml" | "yml") => {
            yaml_serde::from_str(text).map_err(|e| format!("{name}: invalid YAML job spec: {e}"))
        }
        Some("json") => {
            serde_json::from_str(text).map_err(|e| format!("{name}: invalid JSON job spec: {e}"))
        }
        _ => serde_json::from_str(text).or_else(|json_err| {
            yaml_serde::from_str(text).map_err(|yaml_err| {
                format!("{name}: not a JSON job spec ({json_err}) nor a YAML one ({yaml_err})")
            })
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_val_splits_at_the_first_equals() {
        assert_eq!(
            parse_key_val("A=b=c").unwrap(),
            ("A".to_owned(), "b=c".to_owned())
        );
        assert_eq!(
            parse_key_val("A=").unwrap(),
            ("A".to_owned(), String::new())
        );
        assert!(parse_key_val("A").is_err());
        assert!(parse_key_val("=v").is_err());
    }

    #[test]
    fn secrets_may_come_from_the_environment() {
        let env = |k: &str| (k == "TOKEN").then(|| "from-env-123".to_owned());
        assert_eq!(
            parse_secret("TOKEN", env).unwrap(),
            ("TOKEN".to_owned(), "from-env-123".to_owned())
        );
        assert_eq!(parse_secret("X=given1", env).unwrap().1, "given1");
        let err = parse_secret("MISSING", env).unwrap_err();
        assert!(err.contains("$MISSING"), "{err}");
    }

    #[test]
    fn durations() {
        let ms = Duration::from_millis;
        assert_eq!(parse_duration("30s").unwrap(), ms(30_000));
        assert_eq!(parse_duration("5m").unwrap(), ms(300_000));
        assert_eq!(parse_duration("1h").unwrap(), ms(3_600_000));
        assert_eq!(parse_duration("500ms").unwrap(), ms(500));
        assert_eq!(parse_duration("1h30m").unwrap(), ms(5_400_000));
        assert_eq!(parse_duration("1.5s").unwrap(), ms(1500));
        assert_eq!(parse_duration("45").unwrap(), ms(45_000));
        for bad in ["", "s", "10x", "-5s", "ms10", "1..2s", "5 m"] {
            assert!(parse_duration(bad).is_err(), "{bad:?} should be refused");
        }
    }

    #[test]
    fn shebangs() {
        assert_eq!(
            interpreter_from_shebang("#!/usr/bin/env python3\nprint(1)").as_deref(),
            Some("python3")
        );
        assert_eq!(
            interpreter_from_shebang("#!/usr/bin/env -S bash -e\n").as_deref(),
            Some("bash")
        );
        assert_eq!(
            interpreter_from_shebang("#!/bin/sh -e\necho").as_deref(),
            Some("sh")
        );
        assert_eq!(interpreter_from_shebang("echo hi"), None);
    }

    #[test]
    fn a_program_spec_takes_every_option() {
        let args = RunSpecArgs {
            env: vec![("GREETING".into(), "hi".into())],
            secrets: vec![("TOKEN".into(), "abcdefgh".into())],
            timeout: Some(Duration::from_secs(30)),
            cpu: Some(2.0),
            memory_mb: Some(256),
            max_attempts: Some(1),
            provider: Some("process".into()),
            image: Some("alpine:3".into()),
            ..RunSpecArgs::default()
        };
        let spec = build_spec(
            &args,
            RunCommand::Program(vec!["/bin/echo".into(), "-n".into(), "hello".into()]),
        )
        .unwrap();
        assert_eq!(spec.name, "echo");
        assert_eq!(
            spec.command,
            CommandType::shell("/bin/echo", ["-n", "hello"])
        );
        assert_eq!(spec.env["GREETING"], "hi");
        assert_eq!(spec.secrets["TOKEN"], "abcdefgh");
        assert_eq!(spec.timeout_ms, 30_000);
        assert_eq!(spec.resources.cpu_cores, 2.0);
        assert_eq!(spec.resources.memory_mb, 256);
        assert_eq!(spec.max_attempts, 1);
        assert_eq!(
            spec.preferences.preferred_provider.as_deref(),
            Some("process")
        );
        assert_eq!(spec.image.as_deref(), Some("alpine:3"));
        spec.validate().unwrap();
    }

    #[test]
    fn defaults_and_empty_commands() {
        let spec = build_spec(
            &RunSpecArgs::default(),
            RunCommand::Program(vec!["true".into()]),
        )
        .unwrap();
        assert_eq!(
            spec,
            JobSpec::new("true", CommandType::shell("true", Vec::<String>::new()))
        );
        assert!(build_spec(&RunSpecArgs::default(), RunCommand::Program(vec![])).is_err());
    }

    #[test]
    fn script_interpreter_comes_from_flag_then_shebang_then_bash() {
        let script = |content: &str, interpreter: Option<&str>| {
            build_spec(
                &RunSpecArgs::default(),
                RunCommand::Script {
                    file_name: "build.sh".into(),
                    content: content.into(),
                    interpreter: interpreter.map(str::to_owned),
                },
            )
            .unwrap()
        };
        let s = script("#!/usr/bin/env python3\nprint(1)\n", None);
        assert_eq!(s.name, "build.sh");
        assert_eq!(
            s.command,
            CommandType::script("python3", "#!/usr/bin/env python3\nprint(1)\n")
        );
        assert_eq!(
            script("echo hi\n", None).command,
            CommandType::script("bash", "echo hi\n")
        );
        assert_eq!(
            script("#!/bin/sh\necho hi\n", Some("zsh")).command,
            CommandType::script("zsh", "#!/bin/sh\necho hi\n")
        );
    }

    #[test]
    fn validation_problems_are_left_to_validate() {
        let args = RunSpecArgs {
            env: vec![("1BAD".into(), "x".into())],
            secrets: vec![("TOKEN".into(), "short".into())],
            cpu: Some(-1.0),
            ..RunSpecArgs::default()
        };
        let spec = build_spec(&args, RunCommand::Program(vec!["true".into()])).unwrap();
        let fields: Vec<String> = spec
            .validate()
            .unwrap_err()
            .errors
            .into_iter()
            .map(|e| e.field)
            .collect();
        assert!(fields.contains(&"env.1BAD".to_owned()));
        assert!(fields.contains(&"secrets.TOKEN".to_owned()));
        assert!(fields.contains(&"resources.cpu_cores".to_owned()));
    }

    #[test]
    fn spec_files_in_json_and_yaml() {
        let json = r#"{"name":"j","command":{"type":"shell","cmd":"echo","args":["hi"]},"timeout_ms":1000}"#;
        let yaml =
            "name: j\ncommand:\n  type: shell\n  cmd: echo\n  args: [hi]\ntimeout_ms: 1000\n";
        let a = parse_spec_file("spec.json", json).unwrap();
        let b = parse_spec_file("spec.yaml", yaml).unwrap();
        let c = parse_spec_file("-", yaml).unwrap();
        assert_eq!(a, b);
        assert_eq!(b, c);
        assert_eq!(a.timeout_ms, 1000);
        let err = parse_spec_file(
            "spec.json",
            r#"{"command":{"type":"shell","cmd":"x"},"bogus":1}"#,
        )
        .unwrap_err();
        assert!(err.contains("bogus"), "{err}");
    }
}
