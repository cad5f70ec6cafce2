//! `hodei template …`: create (from a JSON or YAML file), list, show and run
//! versioned job templates.

use std::collections::HashMap;
use std::path::Path;

use clap::Subcommand;
use hodei_core::proto::v1;
use hodei_core::proto::v1::template_service_client::TemplateServiceClient;
use hodei_core::{JobSpec, JobTemplate, TemplateParameter};
use serde::{Deserialize, Serialize};

use super::args;
use super::client::{self, CliError};
use super::jobs;
use super::output::{self, Format, JobView};

/// `hodei template …`.
#[derive(Debug, Subcommand)]
pub(crate) enum TemplateCommand {
    /// Store a template from a file (JSON or YAML, `-` for stdin): version 1
    /// for a new name, the next version for an existing one.
    Create {
        /// The template file: `name`, `description`, `parameters`, `spec`.
        #[arg(short, long = "file")]
        file: String,
    },
    /// List templates (the latest version of each).
    List,
    /// Show one template.
    #[command(disable_version_flag = true)]
    Show {
        /// Template name.
        name: String,
        /// This version instead of the latest.
        #[arg(long)]
        version: Option<u32>,
    },
    /// Run a template: fill its parameters and queue the job.
    ///
    /// Prints the job id, or with `--wait` follows it like `hodei job run` and
    /// exits with its exit code.
    #[command(disable_version_flag = true)]
    Run {
        /// Template name.
        name: String,
        /// Parameter value (repeatable).
        #[arg(short, long = "param", value_name = "K=V", value_parser = args::parse_key_val)]
        params: Vec<(String, String)>,
        /// This version instead of the latest.
        #[arg(long)]
        version: Option<u32>,
        /// Follow the job to its end and exit with its exit code.
        #[arg(short, long)]
        wait: bool,
    },
}

/// A template file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TemplateFile {
    name: String,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    parameters: Vec<TemplateParameter>,
    spec: JobSpec,
}

/// Reads a template file: YAML for `.yaml`/`.yml`, JSON for `.json`, and
/// for anything else (or `-`) JSON first, then YAML.
fn parse_template_file(name: &str, text: &str) -> Result<JobTemplate, String> {
    let ext = Path::new(name)
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase);
    let file: TemplateFile =
        match ext.as_deref() {
            Some("yaml" | "yml") => yaml_serde::from_str(text)
                .map_err(|e| format!("{name}: invalid YAML template: {e}"))?,
            Some("json") => serde_json::from_str(text)
                .map_err(|e| format!("{name}: invalid JSON template: {e}"))?,
            _ => serde_json::from_str(text).or_else(|json_err| {
                yaml_serde::from_str(text).map_err(|yaml_err| {
                    format!("{name}: not a JSON template ({json_err}) nor a YAML one ({yaml_err})")
                })
            })?,
        };
    let mut t = JobTemplate::new(file.name, file.spec, file.parameters);
    if let Some(d) = file.description {
        t = t.with_description(d);
    }
    Ok(t)
}

/// A template parameter, as printed.
#[derive(Debug, Serialize)]
struct ParameterView {
    name: String,
    #[serde(rename = "type")]
    kind: String,
    required: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    default: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    values: Vec<String>,
    #[serde(skip_serializing_if = "String::is_empty")]
    description: String,
}

/// A template, as printed.
#[derive(Debug, Serialize)]
struct TemplateView {
    name: String,
    version: u32,
    #[serde(skip_serializing_if = "String::is_empty")]
    description: String,
    parameters: Vec<ParameterView>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    secret_names: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    spec: Option<JobSpec>,
}

fn type_name(v: i32) -> String {
    v1::ParameterType::try_from(v)
        .map(|t| {
            t.as_str_name()
                .trim_start_matches("PARAMETER_TYPE_")
                .to_ascii_lowercase()
        })
        .map(|t| {
            if t == "unspecified" {
                "string".into()
            } else {
                t
            }
        })
        .unwrap_or_else(|_| format!("unknown ({v})"))
}

impl From<v1::JobTemplate> for TemplateView {
    fn from(t: v1::JobTemplate) -> Self {
        Self {
            name: t.name,
            version: t.version,
            description: t.description,
            parameters: t
                .parameters
                .into_iter()
                .map(|p| ParameterView {
                    kind: type_name(p.r#type),
                    required: p.default_value.is_none(),
                    name: p.name,
                    default: p.default_value,
                    values: p.values,
                    description: p.description,
                })
                .collect(),
            secret_names: t.secret_names,
            spec: t.spec.and_then(|s| JobSpec::try_from(s).ok()),
        }
    }
}

impl TemplateView {
    fn parameter_summary(&self) -> String {
        self.parameters
            .iter()
            .map(|p| {
                if p.required {
                    p.name.clone()
                } else {
                    format!("{}={}", p.name, p.default.as_deref().unwrap_or_default())
                }
            })
            .collect::<Vec<_>>()
            .join(" ")
    }

    fn detail(&self) -> String {
        let mut out = format!(
            "name:        {}\nversion:     {}\n",
            self.name, self.version
        );
        if !self.description.is_empty() {
            out.push_str(&format!("description: {}\n", self.description));
        }
        out.push_str("parameters:\n");
        if self.parameters.is_empty() {
            out.push_str("  (none)\n");
        }
        for p in &self.parameters {
            let mut line = format!("  {} ({})", p.name, p.kind);
            if !p.values.is_empty() {
                line.push_str(&format!(" one of {}", p.values.join(", ")));
            }
            match &p.default {
                Some(d) => line.push_str(&format!(", default {d:?}")),
                None => line.push_str(", required"),
            }
            if !p.description.is_empty() {
                line.push_str(&format!(": {}", p.description));
            }
            out.push_str(&line);
            out.push('\n');
        }
        if let Some(spec) = &self.spec {
            let json = serde_json::to_string_pretty(spec).unwrap_or_default();
            out.push_str("spec:\n");
            for l in json.lines() {
                out.push_str("  ");
                out.push_str(l);
                out.push('\n');
            }
        }
        out
    }
}

fn template_table(views: &[TemplateView]) -> String {
    output::table(
        &["NAME", "VERSION", "PARAMETERS", "DESCRIPTION"],
        views
            .iter()
            .map(|v| {
                vec![
                    v.name.clone(),
                    v.version.to_string(),
                    v.parameter_summary(),
                    v.description.clone(),
                ]
            })
            .collect(),
    )
}

fn no_template() -> CliError {
    CliError::Rpc(tonic::Status::internal("the server returned no template"))
}

/// Dispatches `hodei template …`.
pub(crate) async fn run(
    server: &str,
    format: Format,
    cmd: TemplateCommand,
) -> Result<u8, CliError> {
    match cmd {
        TemplateCommand::Create { file } => {
            let text = if file == "-" {
                std::io::read_to_string(std::io::stdin()).map_err(|e| {
                    CliError::Io(format!("cannot read the template from stdin: {e}"))
                })?
            } else {
                std::fs::read_to_string(&file)
                    .map_err(|e| CliError::Io(format!("cannot read {file}: {e}")))?
            };
            let template = parse_template_file(&file, &text).map_err(CliError::Usage)?;
            // The server checks it too; checking here names every problem offline.
            template.validate().map_err(|e| {
                CliError::InvalidSpec(e.errors.iter().map(ToString::to_string).collect())
            })?;
            let channel = client::connect(server).await?;
            let stored = TemplateServiceClient::new(channel)
                .create_template(v1::CreateTemplateRequest {
                    template: Some((&template).into()),
                })
                .await
                .map_err(|s| CliError::rpc(server, s))?
                .into_inner()
                .template
                .ok_or_else(no_template)?;
            let view = TemplateView::from(stored);
            match format {
                Format::Json => println!("{}", output::json(&view)),
                Format::Table => println!("template {} version {}", view.name, view.version),
            }
            Ok(0)
        }
        TemplateCommand::List => {
            let channel = client::connect(server).await?;
            let all = TemplateServiceClient::new(channel)
                .list_templates(v1::ListTemplatesRequest {})
                .await
                .map_err(|s| CliError::rpc(server, s))?
                .into_inner()
                .templates;
            let views: Vec<TemplateView> = all.into_iter().map(Into::into).collect();
            match format {
                Format::Json => println!("{}", output::json(&views)),
                Format::Table => print!("{}", template_table(&views)),
            }
            Ok(0)
        }
        TemplateCommand::Show { name, version } => {
            let channel = client::connect(server).await?;
            let t = TemplateServiceClient::new(channel)
                .get_template(v1::GetTemplateRequest {
                    name,
                    version: version.unwrap_or(0),
                })
                .await
                .map_err(|s| CliError::rpc(server, s))?
                .into_inner()
                .template
                .ok_or_else(no_template)?;
            let view = TemplateView::from(t);
            match format {
                Format::Json => println!("{}", output::json(&view)),
                Format::Table => print!("{}", view.detail()),
            }
            Ok(0)
        }
        TemplateCommand::Run {
            name,
            params,
            version,
            wait,
        } => {
            let mut parameters = HashMap::new();
            for (k, v) in params {
                if parameters.insert(k.clone(), v).is_some() {
                    return Err(CliError::Usage(format!("--param {k} given twice")));
                }
            }
            let client = client::connect_client(server).await?;
            let job = TemplateServiceClient::new(client.channel())
                .run_template(v1::RunTemplateRequest {
                    name,
                    version: version.unwrap_or(0),
                    parameters,
                    correlation_id: String::new(),
                })
                .await
                .map_err(|s| CliError::rpc(server, s))?
                .into_inner()
                .job
                .ok_or_else(|| {
                    CliError::Rpc(tonic::Status::internal("the server returned no job"))
                })?;
            let job = hodei_core::Job::try_from(job).map_err(|e| {
                CliError::Rpc(tonic::Status::internal(format!(
                    "the server sent a malformed job: {e}"
                )))
            })?;
            if wait {
                return jobs::follow_queued(format, &client, job).await;
            }
            match format {
                Format::Json => println!("{}", output::json(&JobView::from(&job))),
                Format::Table => println!("{}", job.id()),
            }
            Ok(0)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const YAML: &str = r#"
name: greet
description: says hello
parameters:
  - name: who
    default: world
  - name: times
    type: integer
    default: 1
  - name: tone
    type: enum
    values: [plain, loud]
spec:
  name: greet {{who}}
  command:
    type: shell
    cmd: echo
    args: ["hello {{who}} x{{times}} {{tone}}"]
"#;

    #[test]
    fn yaml_and_json_template_files_are_read() {
        let t = parse_template_file("t.yaml", YAML).unwrap();
        assert_eq!(t.name(), "greet");
        assert_eq!(t.parameters().len(), 3);
        assert_eq!(t.parameters()[1].default.as_deref(), Some("1"));
        t.validate().unwrap();
        let json = serde_json::json!({
            "name": "greet",
            "parameters": [{"name": "who"}],
            "spec": {"name": "g", "command": {"type": "shell", "cmd": "echo", "args": ["{{who}}"]}}
        })
        .to_string();
        assert_eq!(
            parse_template_file("-", &json).unwrap().parameters()[0].name,
            "who"
        );
        let err = parse_template_file("t.json", r#"{"name":"x","spec":{},"oops":1}"#).unwrap_err();
        assert!(err.contains("t.json"), "{err}");
    }

    #[test]
    fn show_and_run_take_a_version_and_params() {
        use clap::Parser;
        let cli = crate::cli::Cli::try_parse_from([
            "hodei",
            "template",
            "run",
            "greet",
            "-p",
            "a=1",
            "--param",
            "b=x=y",
            "--version",
            "2",
            "--wait",
        ])
        .unwrap();
        match cli.command {
            crate::cli::Command::Template(TemplateCommand::Run {
                name,
                params,
                version,
                wait,
            }) => {
                assert_eq!(name, "greet");
                assert_eq!(
                    params,
                    [("a".into(), "1".into()), ("b".into(), "x=y".into())]
                );
                assert_eq!((version, wait), (Some(2), true));
            }
            other => panic!("{other:?}"),
        }
        assert!(
            crate::cli::Cli::try_parse_from(["hodei", "template", "run", "g", "-p", "novalue"])
                .is_err()
        );
    }

    /// The example the README and QUICKSTART use is a valid template.
    #[test]
    fn the_documented_example_template_is_valid() {
        let t =
            parse_template_file("greet.yaml", include_str!("../../templates/greet.yaml")).unwrap();
        t.validate().unwrap();
        let spec = t
            .render(&[("times".to_owned(), "2".to_owned())].into())
            .unwrap();
        assert_eq!(spec.name, "greet world");
    }

    #[test]
    fn views_show_types_and_required() {
        let t = parse_template_file("t.yaml", YAML).unwrap();
        let view = TemplateView::from(v1::JobTemplate::from(&t));
        assert_eq!(view.parameter_summary(), "who=world times=1 tone");
        assert_eq!(view.parameters[2].kind, "enum");
        assert!(view.parameters[2].required);
        assert!(
            view.detail()
                .contains("tone (enum) one of plain, loud, required")
        );
    }
}
