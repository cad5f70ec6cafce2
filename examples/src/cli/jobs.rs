//! `hodei job …`: run (follow progress, stream logs, exit with the job's
//! code), submit, get, list, logs and cancel.

use std::collections::HashMap;
use std::io::Write;
use std::time::{Duration, Instant};

use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt};
use hodei_core::client::{ClientError, HodeiClient, JobListFilter};
use hodei_core::proto::convert;
use hodei_core::proto::v1;
use hodei_core::proto::v1::job_execution_service_client::JobExecutionServiceClient;
use hodei_core::store::StoredLogEntry;
use hodei_core::{Job, JobId, JobSpec, JobState, LogEntry, LogStream};

use super::args::{self, RunCommand, RunSpecArgs};
use super::client::{self, CliError};
use super::output::{self, Format, JobView, LogLineView};
use super::{JobCommand, RunArgs};

/// How often `run` and `logs -f` ask for the job's state besides the event stream.
const POLL: Duration = Duration::from_secs(2);
/// After the job ended, how long to wait for the rest of its logs.
const LOG_DRAIN: Duration = Duration::from_secs(5);
/// How often to say that a job still waits for a worker.
const WAITING_NOTICE: Duration = Duration::from_secs(10);

/// Exit code of `hodei job run` for a job cancelled (also by Ctrl-C).
pub(crate) const EXIT_CANCELLED: u8 = 130;
/// Exit code of `hodei job run` for a job that timed out (as `timeout(1)`).
pub(crate) const EXIT_TIMEOUT: u8 = 124;

/// Dispatches `hodei job …`.
pub(crate) async fn run(server: &str, format: Format, cmd: JobCommand) -> Result<u8, CliError> {
    match cmd {
        JobCommand::Run(args) => run_job(server, format, *args).await,
        JobCommand::Submit { file } => {
            let spec = spec_from_file(&file)?;
            let client = client::connect_client(server).await?;
            let job = client.submit_job(&spec, None).await?;
            match format {
                Format::Json => println!("{}", output::json(&JobView::from(&job))),
                Format::Table => println!("{}", job.id()),
            }
            Ok(0)
        }
        JobCommand::Get { id } => {
            let client = client::connect_client(server).await?;
            let job = client.get(client::parse_job_id(&id)?).await?;
            let view = JobView::from(&job);
            match format {
                Format::Json => println!("{}", output::json(&view)),
                Format::Table => print!("{}", view.detail()),
            }
            Ok(0)
        }
        JobCommand::List { state, limit } => {
            let client = client::connect_client(server).await?;
            let mut filter = JobListFilter::new();
            if let Some(state) = state {
                filter = filter.with_state(state);
            }
            if limit != 0 {
                filter = filter.with_limit(limit);
            }
            let jobs = client.list(&filter).await?;
            let views: Vec<JobView> = jobs.iter().map(Into::into).collect();
            match format {
                Format::Json => println!("{}", output::json(&views)),
                Format::Table => print!("{}", output::job_table(&views)),
            }
            Ok(0)
        }
        JobCommand::Logs { id, follow } => {
            let client = client::connect_client(server).await?;
            let id = client::parse_job_id(&id)?;
            let mut printer = LogPrinter::new(format, id);
            if follow {
                let outcome = follow_job(&client, id, &mut printer, false).await?;
                Ok(match outcome {
                    Followed::Finished(_) => 0,
                    Followed::Interrupted => EXIT_CANCELLED,
                })
            } else {
                for entry in &client.logs(id).await? {
                    printer.entry(entry);
                }
                printer.flush();
                Ok(0)
            }
        }
        JobCommand::Retry { id, wait } => {
            let client = client::connect_client(server).await?;
            let job = client.retry(client::parse_job_id(&id)?).await?;
            if wait {
                return follow_queued(format, &client, job).await;
            }
            match format {
                Format::Json => println!("{}", output::json(&JobView::from(&job))),
                Format::Table => println!("{}", job.id()),
            }
            Ok(0)
        }
        JobCommand::Artifacts { id, download } => {
            super::artifacts::run(server, format, id, download).await
        }
        JobCommand::Cancel { id, reason } => {
            let client = client::connect_client(server).await?;
            let job = client.cancel(client::parse_job_id(&id)?, &reason).await?;
            let view = JobView::from(&job);
            match format {
                Format::Json => println!("{}", output::json(&view)),
                Format::Table => println!("job {} is {}", view.id, view.state),
            }
            Ok(0)
        }
    }
}

/// Builds and validates the spec of `hodei job run`.
fn spec_from_run_args(a: &RunArgs) -> Result<JobSpec, CliError> {
    if a.interpreter.is_some() && a.script.is_none() {
        return Err(CliError::Usage(
            "--interpreter needs --script FILE (a command after `--` runs without a shell)"
                .to_owned(),
        ));
    }
    let secrets = a
        .secrets
        .iter()
        .map(|s| args::parse_secret(s, |k| std::env::var(k).ok()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(CliError::Usage)?;
    let command = match &a.script {
        Some(path) => {
            let content = std::fs::read_to_string(path)
                .map_err(|e| CliError::Io(format!("cannot read {}: {e}", path.display())))?;
            RunCommand::Script {
                file_name: path
                    .file_name()
                    .map_or_else(|| "script".to_owned(), |n| n.to_string_lossy().into_owned()),
                content,
                interpreter: a.interpreter.clone(),
            }
        }
        None => RunCommand::Program(a.command.clone()),
    };
    let spec = args::build_spec(
        &RunSpecArgs {
            name: a.name.clone(),
            env: a.env.clone(),
            secrets,
            timeout: a.timeout,
            cpu: a.cpu,
            memory_mb: a.memory,
            max_attempts: a.max_attempts,
            provider: a.provider.clone(),
            image: a.image.clone(),
            labels: a.labels.clone(),
        },
        command,
    )
    .map_err(CliError::Usage)?;
    validated(spec)
}

fn spec_from_file(file: &str) -> Result<JobSpec, CliError> {
    let text = if file == "-" {
        std::io::read_to_string(std::io::stdin())
            .map_err(|e| CliError::Io(format!("cannot read the spec from stdin: {e}")))?
    } else {
        std::fs::read_to_string(file)
            .map_err(|e| CliError::Io(format!("cannot read {file}: {e}")))?
    };
    validated(args::parse_spec_file(file, &text).map_err(CliError::Usage)?)
}

fn validated(spec: JobSpec) -> Result<JobSpec, CliError> {
    spec.validate()
        .map_err(|e| CliError::InvalidSpec(e.errors.iter().map(ToString::to_string).collect()))?;
    Ok(spec)
}

async fn run_job(server: &str, format: Format, a: RunArgs) -> Result<u8, CliError> {
    let spec = spec_from_run_args(&a)?;
    let client = client::connect_client(server).await?;
    let job = client.submit_job(&spec, None).await?;
    if a.detach {
        match format {
            Format::Json => println!("{}", output::json(&JobView::from(&job))),
            Format::Table => println!("{}", job.id()),
        }
        return Ok(0);
    }
    follow_queued(format, &client, job).await
}

/// Follows a queued job to its end like `hodei job run` (state changes on
/// stderr, logs, Ctrl-C cancels it) and returns the exit code for it.
pub(crate) async fn follow_queued(
    format: Format,
    client: &HodeiClient,
    job: Job,
) -> Result<u8, CliError> {
    let id = job.id();
    notice(&format!("job {id} queued ({})", job.state()));
    let mut printer = LogPrinter::new(format, id);
    match follow_job(client, id, &mut printer, true).await? {
        Followed::Finished(job) => {
            notice(&summary(&job));
            let code = exit_code_for(&job);
            if format == Format::Json {
                println!("{}", output::json(&JobView::from(&*job)));
            }
            Ok(code)
        }
        Followed::Interrupted => {
            notice(&format!("cancelling job {id}"));
            match client
                .cancel(id, "cancelled from the hodei CLI (Ctrl-C)")
                .await
            {
                Ok(job) => notice(&format!("job {id} is {}", job.state())),
                Err(e) => notice(&format!("could not cancel job {id}: {e}")),
            }
            Ok(EXIT_CANCELLED)
        }
    }
}

/// The process exit code for a finished job.
pub(crate) fn exit_code_for(job: &Job) -> u8 {
    match job.state() {
        JobState::Succeeded => 0,
        JobState::Timeout => EXIT_TIMEOUT,
        JobState::Cancelled => EXIT_CANCELLED,
        JobState::Failed => job
            .execution_context()
            .exit_code
            .and_then(|c| u8::try_from(c).ok())
            .filter(|c| *c != 0)
            .unwrap_or(1),
        _ => 1,
    }
}

fn summary(job: &Job) -> String {
    let ctx = job.execution_context();
    let took = match (ctx.started_at, job.finished_at()) {
        (Some(s), Some(f)) if f >= s => {
            format!(" in {:.1}s", (f - s).num_milliseconds() as f64 / 1000.0)
        }
        _ => String::new(),
    };
    let mut s = format!("job {} {}{took}", job.id(), job.state());
    if let Some(code) = ctx.exit_code {
        s.push_str(&format!(" (exit code {code})"));
    }
    if let Some(error) = ctx.error.as_deref().filter(|e| !e.is_empty()) {
        s.push_str(": ");
        s.push_str(error);
    }
    s
}

/// A progress line on stderr.
fn notice(msg: &str) {
    eprintln!("[hodei] {msg}");
}

/// How following a job ended.
enum Followed {
    /// The job reached a terminal state (and its logs were drained).
    Finished(Box<Job>),
    /// Ctrl-C.
    Interrupted,
}

/// Follows a job until it ends: state changes to stderr, logs to stdout/stderr.
/// `announce_states` prints state changes (for `run`; `logs -f` prints only logs).
async fn follow_job(
    client: &HodeiClient,
    id: JobId,
    printer: &mut LogPrinter,
    announce_states: bool,
) -> Result<Followed, CliError> {
    // State changes as they happen, to announce each one: the typed client
    // only waits for a state, so the event stream stays a raw call.
    let mut events = match JobExecutionServiceClient::new(client.channel())
        .execution_event_stream(v1::ExecutionEventStreamRequest {
            job_id: id.to_string(),
        })
        .await
    {
        Ok(s) => Some(s.into_inner()),
        Err(e) => {
            if announce_states {
                notice(&format!("no live state changes ({}); polling", e.message()));
            }
            None
        }
    };
    let mut logs = match subscribe(client, id).await {
        Ok(logs) => logs,
        Err(e) => {
            notice(&format!("cannot follow the logs yet ({e}); retrying"));
            None
        }
    };
    let id_text = id.to_string();
    let mut state = JobState::Pending;
    let mut finished: Option<(Job, Instant)> = None;
    let mut waiting_since = Instant::now();
    let mut last_waiting_notice = Instant::now();
    // The first notice after 10 s, then every 30 s.
    let mut notice_gap = WAITING_NOTICE;
    let mut tick = tokio::time::interval(POLL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);

    loop {
        if let Some((job, at)) = &finished
            && (logs.is_none() || at.elapsed() > LOG_DRAIN)
        {
            printer.flush();
            return Ok(Followed::Finished(Box::new(job.clone())));
        }
        tokio::select! {
            _ = &mut ctrl_c => {
                printer.flush();
                return Ok(Followed::Interrupted);
            }
            ev = next_event(&mut events) => match ev {
                Some(ev) if ev.job_id == id_text || ev.job_id.is_empty() => {
                    let to = convert::job_state_from_proto(ev.to_state, "to_state").ok().flatten();
                    // A poll may have announced this state already.
                    if announce_states && to != Some(state) {
                        notice(&describe_event(&ev));
                    }
                    if let Some(to) = to {
                        if to != state {
                            waiting_since = Instant::now();
                        }
                        state = to;
                        if to.is_terminal() && finished.is_none() {
                            let job = client.get(id).await?;
                            finished = Some((job, Instant::now()));
                        }
                    }
                }
                Some(_) => {}
                None => events = None,
            },
            entry = next_entry(&mut logs) => match entry {
                Some(Ok(entry)) => printer.entry(&entry),
                None => {
                    logs = None;
                    // The log stream ends with the job: find out how it ended.
                    if finished.is_none() {
                        let job = client.get(id).await?;
                        if job.state().is_terminal() {
                            finished = Some((job, Instant::now()));
                        }
                    }
                }
                Some(Err(e)) => {
                    let why = e.server_message().unwrap_or_else(|| e.to_string());
                    notice(&format!("log stream interrupted: {why}"));
                    logs = None;
                }
            },
            _ = tick.tick() => {
                if finished.is_none() {
                    let job = client.get(id).await?;
                    let s = job.state();
                    if s != state {
                        waiting_since = Instant::now();
                        if announce_states {
                            notice(&format!("job {id} {state} → {s}"));
                        }
                        state = s;
                    }
                    if s.is_terminal() {
                        finished = Some((job, Instant::now()));
                    } else if logs.is_none() {
                        // The stream ended or broke while the job goes on (a retry, a
                        // reconnect): subscribe again; already printed entries are skipped.
                        logs = subscribe(client, id).await.ok().flatten();
                    }
                }
                if announce_states
                    && finished.is_none()
                    && matches!(state, JobState::Pending | JobState::Scheduled)
                    && last_waiting_notice.elapsed() >= notice_gap
                    && waiting_since.elapsed() >= WAITING_NOTICE
                {
                    last_waiting_notice = Instant::now();
                    notice_gap = WAITING_NOTICE * 3;
                    notice(&format!(
                        "job {id} still {state} after {}s, waiting for a worker",
                        waiting_since.elapsed().as_secs()
                    ));
                }
            }
        }
    }
}

/// The job's log entries as they come (see [`HodeiClient::follow_logs`]).
type LogFollow = BoxStream<'static, Result<StoredLogEntry, ClientError>>;

async fn subscribe(client: &HodeiClient, id: JobId) -> Result<Option<LogFollow>, CliError> {
    Ok(Some(client.follow_logs(id).await?.boxed()))
}

async fn next_event(
    events: &mut Option<tonic::Streaming<v1::ExecutionEvent>>,
) -> Option<v1::ExecutionEvent> {
    match events {
        Some(s) => s.message().await.ok().flatten(),
        None => std::future::pending().await,
    }
}

async fn next_entry(logs: &mut Option<LogFollow>) -> Option<Result<StoredLogEntry, ClientError>> {
    match logs {
        Some(s) => s.try_next().await.transpose(),
        None => std::future::pending().await,
    }
}

fn describe_event(ev: &v1::ExecutionEvent) -> String {
    let to = output::job_state_name(ev.to_state);
    let mut s = if ev.from_state == v1::JobState::Unspecified as i32 {
        format!("job {} {to}", ev.job_id)
    } else {
        format!(
            "job {} {} → {to}",
            ev.job_id,
            output::job_state_name(ev.from_state)
        )
    };
    if ev.attempt > 1 {
        s.push_str(&format!(" (attempt {})", ev.attempt));
    }
    if !ev.worker_id.is_empty() {
        s.push_str(&format!(" on worker {}", ev.worker_id));
    }
    if !ev.message.is_empty() {
        s.push_str(": ");
        s.push_str(&ev.message);
    }
    s
}

/// Prints log entries once each, in order: stdout entries to stdout, stderr
/// and system entries to stderr (`-o json`: one JSON object per line on stdout).
pub(crate) struct LogPrinter {
    format: Format,
    job_id: String,
    /// Highest sequence printed per attempt, so a re-subscription prints nothing twice.
    printed: HashMap<u32, u64>,
    attempt: u32,
}

impl LogPrinter {
    pub(crate) fn new(format: Format, job: JobId) -> Self {
        Self {
            format,
            job_id: job.to_string(),
            printed: HashMap::new(),
            attempt: 0,
        }
    }

    /// Prints `entry` unless it was printed already.
    pub(crate) fn entry(&mut self, entry: &StoredLogEntry) {
        let mut out = std::io::stdout().lock();
        let mut err = std::io::stderr().lock();
        if self.format == Format::Table && self.attempt != 0 && entry.attempt != self.attempt {
            let _ = writeln!(err, "[hodei] attempt {}", entry.attempt);
        }
        self.attempt = entry.attempt;
        let last = self.printed.entry(entry.attempt).or_insert(0);
        let e = &entry.entry;
        if e.sequence <= *last {
            return;
        }
        *last = e.sequence;
        let _ = match self.format {
            Format::Json => writeln!(
                out,
                "{}",
                serde_json::to_string(&LogLineView::new(&self.job_id, entry.attempt, e))
                    .unwrap_or_default()
            ),
            Format::Table => write_entry(&mut out, &mut err, e),
        };
        let _ = out.flush();
        let _ = err.flush();
    }

    fn flush(&self) {
        let _ = std::io::stdout().flush();
        let _ = std::io::stderr().flush();
    }
}

/// Raw bytes plus a newline, to the entry's stream.
fn write_entry(out: &mut impl Write, err: &mut impl Write, e: &LogEntry) -> std::io::Result<()> {
    match e.stream {
        LogStream::Stderr => {
            err.write_all(&e.data)?;
            err.write_all(b"\n")
        }
        LogStream::System => {
            err.write_all(b"[hodei] ")?;
            err.write_all(&e.data)?;
            err.write_all(b"\n")
        }
        _ => {
            out.write_all(&e.data)?;
            out.write_all(b"\n")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A job as the server would send it back.
    fn wire_job(wire: v1::Job) -> Job {
        let spec = JobSpec::new("j", hodei_core::CommandType::shell("true", [""; 0]));
        Job::try_from(v1::Job {
            id: wire.id.parse().unwrap_or_else(|_| JobId::new()).to_string(),
            spec: Some((&spec).into()),
            correlation_id: hodei_core::CorrelationId::new().to_string(),
            ..wire
        })
        .unwrap()
    }

    fn job(state: v1::JobState, exit_code: Option<i32>) -> Job {
        wire_job(v1::Job {
            state: state as i32,
            exit_code,
            ..v1::Job::default()
        })
    }

    #[test]
    fn exit_codes_follow_the_job() {
        assert_eq!(exit_code_for(&job(v1::JobState::Succeeded, Some(0))), 0);
        assert_eq!(exit_code_for(&job(v1::JobState::Failed, Some(3))), 3);
        assert_eq!(exit_code_for(&job(v1::JobState::Failed, None)), 1);
        assert_eq!(exit_code_for(&job(v1::JobState::Failed, Some(0))), 1);
        assert_eq!(exit_code_for(&job(v1::JobState::Failed, Some(-9))), 1);
        assert_eq!(exit_code_for(&job(v1::JobState::Timeout, None)), 124);
        assert_eq!(exit_code_for(&job(v1::JobState::Cancelled, None)), 130);
        assert_eq!(exit_code_for(&job(v1::JobState::Running, None)), 1);
    }

    #[test]
    fn entries_go_to_their_stream_as_raw_bytes() {
        let entry = |stream: LogStream, data: &[u8]| LogEntry::new(1, stream, data.to_vec());
        let (mut out, mut err) = (Vec::new(), Vec::new());
        write_entry(
            &mut out,
            &mut err,
            &entry(LogStream::Stdout, b"caf\xc3\xa9 \xff"),
        )
        .unwrap();
        write_entry(&mut out, &mut err, &entry(LogStream::Stderr, b"oops")).unwrap();
        write_entry(&mut out, &mut err, &entry(LogStream::System, b"retrying")).unwrap();
        assert_eq!(out, b"caf\xc3\xa9 \xff\n");
        assert_eq!(err, b"oops\n[hodei] retrying\n");
    }

    #[test]
    fn events_read_like_transitions() {
        let ev = v1::ExecutionEvent {
            job_id: "j1".into(),
            from_state: v1::JobState::Pending as i32,
            to_state: v1::JobState::Scheduled as i32,
            attempt: 1,
            worker_id: "w1".into(),
            ..v1::ExecutionEvent::default()
        };
        assert_eq!(
            describe_event(&ev),
            "job j1 pending → scheduled on worker w1"
        );
        let done = wire_job(v1::Job {
            state: v1::JobState::Failed as i32,
            attempts: 1,
            exit_code: Some(2),
            started_at_ms: Some(1000),
            finished_at_ms: Some(2500),
            error: "boom".into(),
            ..v1::Job::default()
        });
        assert_eq!(
            summary(&done),
            format!("job {} failed in 1.5s (exit code 2): boom", done.id())
        );
    }

    #[test]
    fn invalid_specs_list_every_field() {
        let spec = JobSpec::new(
            "x",
            hodei_core::CommandType::shell("true", Vec::<String>::new()),
        )
        .with_env("1BAD", "v")
        .with_timeout_ms(0);
        let Err(CliError::InvalidSpec(problems)) = validated(spec) else {
            panic!("expected InvalidSpec")
        };
        assert!(
            problems.iter().any(|p| p.starts_with("env.1BAD:")),
            "{problems:?}"
        );
        assert!(
            problems.iter().any(|p| p.starts_with("timeout_ms:")),
            "{problems:?}"
        );
    }
}
