//! The `hodei` command line: argument definitions and dispatch. A thin gRPC
//! client over the generated `hodei.v1` stubs.

mod args;
mod artifacts;
mod audit;
mod certs;
mod client;
mod jobs;
mod output;
mod providers;
mod scheduling;
mod templates;

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use hodei_core::proto::v1;
use hodei_core::proto::v1::scheduler_service_client::SchedulerServiceClient;

pub(crate) use client::CliError;
use output::Format;

/// Submit and follow jobs on a Hodei server.
#[derive(Debug, Parser)]
#[command(name = "hodei", version, propagate_version = true)]
pub(crate) struct Cli {
    /// gRPC address of the Hodei server.
    #[arg(
        long,
        global = true,
        env = "HODEI_SERVER",
        default_value = "http://localhost:50051"
    )]
    pub(crate) server: String,
    /// Output format.
    #[arg(short, long, global = true, value_enum, default_value = "table")]
    pub(crate) output: Format,
    #[command(subcommand)]
    pub(crate) command: Command,
}

/// Top-level commands.
#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Run, submit, inspect and cancel jobs.
    #[command(subcommand)]
    Job(JobCommand),
    /// Create, list, show and run versioned job templates.
    #[command(subcommand)]
    Template(templates::TemplateCommand),
    /// Inspect workers.
    #[command(subcommand)]
    Worker(WorkerCommand),
    /// List, register, pause (maintenance), disable and remove providers.
    #[command(subcommand)]
    Provider(providers::ProviderCommand),
    /// Create a CA, server and worker certificates for mTLS (no OpenSSL needed).
    #[command(subcommand)]
    Certs(certs::CertsCommand),
    /// Create API tokens for clients.
    #[command(subcommand)]
    Token(certs::TokenCommand),
    /// Read the audit log (admin token).
    #[command(subcommand)]
    Audit(audit::AuditCommand),
    /// Show or switch the scheduling strategy every replica shares (set: admin token).
    #[command(subcommand)]
    Scheduler(scheduling::SchedulerCommand),
    /// List, show, set and remove concurrency limits per key (set, rm: admin token).
    #[command(subcommand)]
    Limit(scheduling::LimitCommand),
}

/// `hodei job …`.
#[derive(Debug, Subcommand)]
pub(crate) enum JobCommand {
    /// Run a command (or a script) as a job, stream its logs, exit with its exit code.
    ///
    /// Exit codes: the job's own on failure, 0 on success, 124 on timeout, 130 when
    /// cancelled (Ctrl-C cancels the job).
    Run(Box<RunArgs>),
    /// Submit a job spec file (JSON or YAML, `-` for stdin) and print the job id.
    Submit {
        /// The spec file.
        #[arg(short, long = "file")]
        file: String,
    },
    /// Show one job.
    Get {
        /// Job id.
        id: String,
    },
    /// List jobs.
    List {
        /// Only jobs in this state (pending, scheduled, running, succeeded, failed,
        /// cancelled, timeout).
        #[arg(long, value_parser = output::parse_job_state)]
        state: Option<hodei_core::JobState>,
        /// At most this many jobs.
        #[arg(long, default_value_t = 50)]
        limit: u32,
    },
    /// Print a job's logs.
    Logs {
        /// Job id.
        id: String,
        /// Follow new output until the job ends.
        #[arg(short, long)]
        follow: bool,
    },
    /// List a job's artifacts (name, size, sha256); --download DIR saves them,
    /// each checked against its checksum.
    Artifacts {
        /// Job id.
        id: String,
        /// Save every artifact under this directory (as DIR/NAME).
        #[arg(long, value_name = "DIR")]
        download: Option<PathBuf>,
    },
    /// Cancel a job.
    Cancel {
        /// Job id.
        id: String,
        /// Why (recorded with the job).
        #[arg(long, default_value = "cancelled from the hodei CLI")]
        reason: String,
    },
    /// Run a finished job again: a new job with the same spec, labelled
    /// hodei.retry_of=<id>. Prints the new job's id, or follows it with --wait.
    Retry {
        /// Id of the finished job.
        id: String,
        /// Follow the new job like `job run` (logs, exit with its code).
        #[arg(short, long, visible_alias = "follow")]
        wait: bool,
    },
}

/// Arguments of `hodei job run`.
#[derive(Debug, Args)]
pub(crate) struct RunArgs {
    /// Environment variable for the job (repeatable).
    #[arg(short, long = "env", value_name = "K=V", value_parser = args::parse_key_val)]
    pub(crate) env: Vec<(String, String)>,
    /// Secret for the job: K=V, or K to take the value from $K (repeatable).
    #[arg(long = "secret", value_name = "K[=V]")]
    pub(crate) secrets: Vec<String>,
    /// Label for the job (repeatable).
    #[arg(short, long = "label", value_name = "K=V", value_parser = args::parse_key_val)]
    pub(crate) labels: Vec<(String, String)>,
    /// Timeout of one attempt (500ms, 30s, 5m, 1h).
    #[arg(long, value_parser = args::parse_duration)]
    pub(crate) timeout: Option<Duration>,
    /// CPU cores to ask for.
    #[arg(long)]
    pub(crate) cpu: Option<f64>,
    /// Memory to ask for, in MiB.
    #[arg(long, value_name = "MB")]
    pub(crate) memory: Option<u64>,
    /// Attempts allowed in total (1 = no retry).
    #[arg(long)]
    pub(crate) max_attempts: Option<u32>,
    /// Run on this provider (name or id).
    #[arg(long)]
    pub(crate) provider: Option<String>,
    /// Container or VM image, for providers that use one.
    #[arg(long)]
    pub(crate) image: Option<String>,
    /// Job name (default: the program or script file name).
    #[arg(long)]
    pub(crate) name: Option<String>,
    /// Print the job id and return at once instead of following the job.
    #[arg(short, long)]
    pub(crate) detach: bool,
    /// Run this script file instead of a command.
    #[arg(long, value_name = "FILE", conflicts_with = "command")]
    pub(crate) script: Option<PathBuf>,
    /// Interpreter of the script (default: from its shebang, else bash).
    #[arg(long)]
    pub(crate) interpreter: Option<String>,
    /// The command and its arguments (after `--`).
    #[arg(
        trailing_var_arg = true,
        allow_hyphen_values = true,
        value_name = "CMD"
    )]
    pub(crate) command: Vec<String>,
}

/// `hodei worker …`.
#[derive(Debug, Subcommand)]
pub(crate) enum WorkerCommand {
    /// List registered workers, busy ones included.
    List,
}

/// Runs the parsed command; returns the process exit code.
pub(crate) async fn run(cli: Cli) -> Result<u8, CliError> {
    match cli.command {
        Command::Certs(cmd) => certs::run_certs(cmd),
        Command::Token(cmd) => certs::run_token(cmd),
        Command::Job(cmd) => jobs::run(&cli.server, cli.output, cmd).await,
        Command::Template(cmd) => templates::run(&cli.server, cli.output, cmd).await,
        Command::Worker(WorkerCommand::List) => {
            let channel = client::connect(&cli.server).await?;
            let workers = SchedulerServiceClient::new(channel)
                .get_available_workers(v1::GetAvailableWorkersRequest { include_busy: true })
                .await
                .map_err(|s| CliError::rpc(&cli.server, s))?
                .into_inner()
                .workers;
            let views: Vec<output::WorkerView> = workers.into_iter().map(Into::into).collect();
            match cli.output {
                Format::Json => println!("{}", output::json(&views)),
                Format::Table => print!("{}", output::worker_table(&views)),
            }
            Ok(0)
        }
        Command::Provider(cmd) => providers::run(&cli.server, cli.output, cmd).await,
        Command::Audit(cmd) => audit::run(&cli.server, cli.output, cmd).await,
        Command::Scheduler(cmd) => scheduling::run_scheduler(&cli.server, cli.output, cmd).await,
        Command::Limit(cmd) => scheduling::run_limit(&cli.server, cli.output, cmd).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("hodei").chain(args.iter().copied()))
    }

    fn run_args(args: &[&str]) -> RunArgs {
        match parse(args).unwrap().command {
            Command::Job(JobCommand::Run(r)) => *r,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn retry_and_audit_parse() {
        assert!(matches!(
            parse(&["job", "retry", "abc", "--wait"]).unwrap().command,
            Command::Job(JobCommand::Retry { wait: true, .. })
        ));
        assert!(matches!(
            parse(&["job", "retry", "abc", "--follow"]).unwrap().command,
            Command::Job(JobCommand::Retry { wait: true, .. })
        ));
        assert!(matches!(
            parse(&[
                "-o", "json", "audit", "list", "--actor", "ci", "--since", "1h"
            ])
            .unwrap()
            .command,
            Command::Audit(audit::AuditCommand::List { .. })
        ));
        assert!(parse(&["audit", "list", "--limit", "0"]).is_err());
        assert!(parse(&["audit", "list", "--since", "someday"]).is_err());
    }

    #[test]
    fn scheduling_commands_parse() {
        use scheduling::{LimitCommand, SchedulerCommand};
        assert!(matches!(
            parse(&["scheduler", "get"]).unwrap().command,
            Command::Scheduler(SchedulerCommand::Get)
        ));
        assert!(matches!(
            parse(&["scheduler", "set", "cost-aware"]).unwrap().command,
            Command::Scheduler(SchedulerCommand::Set {
                strategy: hodei_core::Strategy::CostAware
            })
        ));
        let e = parse(&["scheduler", "set", "random"]).unwrap_err();
        assert!(e.to_string().contains("random"), "{e}");
        assert!(matches!(
            parse(&["-o", "json", "limit", "list"]).unwrap().command,
            Command::Limit(LimitCommand::List)
        ));
        assert!(matches!(
            parse(&["limit", "get", "deploy"]).unwrap().command,
            Command::Limit(LimitCommand::Get { key }) if key == "deploy"
        ));
        assert!(matches!(
            parse(&["limit", "set", "deploy", "0"]).unwrap().command,
            Command::Limit(LimitCommand::Set { max_running: 0, .. })
        ));
        assert!(parse(&["limit", "set", "deploy", "100001"]).is_err());
        assert!(parse(&["limit", "set", "deploy", "-1"]).is_err());
        assert!(parse(&["limit", "set", "deploy"]).is_err());
        for rm in ["rm", "remove", "delete"] {
            assert!(matches!(
                parse(&["limit", rm, "deploy"]).unwrap().command,
                Command::Limit(LimitCommand::Rm { key }) if key == "deploy"
            ));
        }
        match parse(&["provider", "pricing", "docker", "--cpu-hour", "0.04"])
            .unwrap()
            .command
        {
            Command::Provider(providers::ProviderCommand::Pricing {
                provider,
                cpu_hour,
                gib_hour,
            }) => {
                assert_eq!(provider, "docker");
                assert_eq!(cpu_hour, 0.04);
                assert_eq!(gib_hour, 0.0);
            }
            other => panic!("{other:?}"),
        }
        assert!(
            parse(&["provider", "pricing", "docker"]).is_err(),
            "a price is required"
        );
        let e = parse(&["provider", "pricing", "docker", "--gib-hour", "-0.5"]).unwrap_err();
        assert!(e.to_string().contains("--gib-hour"), "{e}");
    }

    #[test]
    fn the_cli_definition_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }

    #[test]
    fn run_takes_options_then_the_command_after_dashes() {
        let r = run_args(&[
            "job",
            "run",
            "-e",
            "A=1",
            "-e",
            "B=x=y",
            "--secret",
            "TOKEN=abcdefgh",
            "--timeout",
            "30s",
            "--cpu",
            "0.5",
            "--memory",
            "256",
            "--max-attempts",
            "2",
            "--provider",
            "process",
            "--name",
            "n",
            "--",
            "ls",
            "-la",
            "--color",
            "/tmp",
        ]);
        assert_eq!(
            r.env,
            vec![("A".into(), "1".into()), ("B".into(), "x=y".into())]
        );
        assert_eq!(r.secrets, vec!["TOKEN=abcdefgh".to_owned()]);
        assert_eq!(r.timeout, Some(Duration::from_secs(30)));
        assert_eq!(r.cpu, Some(0.5));
        assert_eq!(r.memory, Some(256));
        assert_eq!(r.max_attempts, Some(2));
        assert_eq!(r.command, ["ls", "-la", "--color", "/tmp"]);
        assert!(!r.detach);
    }

    #[test]
    fn run_accepts_a_command_without_dashes_and_global_flags_anywhere() {
        let cli = parse(&["job", "run", "-d", "-o", "json", "echo", "hi"]).unwrap();
        assert_eq!(cli.output, Format::Json);
        let Command::Job(JobCommand::Run(r)) = cli.command else {
            panic!()
        };
        assert!(r.detach);
        assert_eq!(r.command, ["echo", "hi"]);
    }

    #[test]
    fn bad_values_are_refused_by_the_parser() {
        assert!(parse(&["job", "run", "-e", "NOEQUALS", "--", "true"]).is_err());
        assert!(parse(&["job", "run", "--timeout", "10parsecs", "--", "true"]).is_err());
        assert!(parse(&["job", "run", "--script", "x.sh", "--", "true"]).is_err());
        assert!(parse(&["job", "list", "--state", "sleeping"]).is_err());
        assert!(parse(&["-o", "yaml", "job", "list"]).is_err());
    }

    #[test]
    fn script_run_and_other_commands_parse() {
        let r = run_args(&["job", "run", "--script", "build.sh", "--interpreter", "sh"]);
        assert_eq!(r.script, Some(PathBuf::from("build.sh")));
        assert_eq!(r.interpreter.as_deref(), Some("sh"));
        assert!(r.command.is_empty());

        let cli = parse(&[
            "--server",
            "http://h:1",
            "job",
            "list",
            "--state",
            "running",
        ])
        .unwrap();
        assert_eq!(cli.server, "http://h:1");
        assert!(matches!(
            cli.command,
            Command::Job(JobCommand::List {
                state: Some(hodei_core::JobState::Running),
                limit: 50
            })
        ));
        assert!(matches!(
            parse(&["job", "logs", "abc", "-f"]).unwrap().command,
            Command::Job(JobCommand::Logs { follow: true, .. })
        ));
        assert!(matches!(
            parse(&["job", "submit", "-f", "spec.yaml"])
                .unwrap()
                .command,
            Command::Job(JobCommand::Submit { .. })
        ));
        assert!(matches!(
            parse(&["worker", "list"]).unwrap().command,
            Command::Worker(WorkerCommand::List)
        ));
        assert!(matches!(
            parse(&["provider", "list"]).unwrap().command,
            Command::Provider(providers::ProviderCommand::List)
        ));
        assert!(matches!(
            parse(&["provider", "set-state", "docker", "maintenance"])
                .unwrap()
                .command,
            Command::Provider(providers::ProviderCommand::SetState {
                state: providers::OperatorState::Maintenance,
                ..
            })
        ));
        assert!(parse(&["provider", "set-state", "docker", "overloaded"]).is_err());
    }
}
