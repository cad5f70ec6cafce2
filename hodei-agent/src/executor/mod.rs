//! The job executor: runs one job attempt as a child process and streams its output.
//!
//! [`JobExecutor::execute`] runs a [`CommandType::Shell`] (program + arguments, no shell in
//! between) or a [`CommandType::Script`] (written to a private file, see below), and returns
//! an [`ExecutionResult`] once the job and every process it left behind are gone and all its
//! output has been handed to the log channel.
//!
//! * **Private files.** Every attempt gets its own directory (mode 0700) under
//!   [`ExecutorConfig::work_root`]; a script is written there (mode 0700) with a strict-mode
//!   header for shell interpreters ([`prepare::STRICT_HEADER`] for bash/zsh/ksh,
//!   [`prepare::POSIX_HEADER`] for sh/dash, which may lack `pipefail`; the header shifts the
//!   script's line numbers by one or two) and run as `interpreter file`. The directory is the
//!   working directory unless the request names one. Afterwards, whatever the outcome, it is
//!   removed (its contents by a background task), or, when the job left it empty, kept
//!   aside and renamed into place for a later attempt, checked empty and private again
//!   (see `job_dirs`: a `mkdir` and `rmdir` per job cost a fifth of a busy agent's CPU).
//! * **Environment.** The agent's own environment is *not* inherited (it may hold the
//!   agent's credentials): only the variables named in [`ExecutorConfig::env_passthrough`]
//!   (PATH, HOME, LANG, …), then the job's env, then `HODEI_JOB_ID`, `HODEI_ATTEMPT` and the
//!   tracking marker [`MARKER_ENV`].
//! * **Secrets** are written to the child's stdin as one JSON object, then stdin is closed
//!   (with no secrets stdin is `/dev/null`). Values shorter than
//!   [`MIN_SECRET_LEN`] bytes are refused. Every log line, the error message and the result
//!   are redacted with a [`Redactor`].
//! * **Process group.** The child leads its own process group. On timeout or cancel the
//!   group gets SIGTERM, then SIGKILL after [`ExecutorConfig::kill_grace`]. When the main
//!   process has ended (any outcome) the group is SIGKILLed, and so is every process whose
//!   environment carries this attempt's marker (escapees via `setsid` or double fork).
//! * **Output.** stdout and stderr are read as `Bytes` by a `FramedRead` with a zero-copy
//!   [`LineDecoder`], redacted, and sent to the bounded log channel (by default as groups
//!   of the complete lines read together, see [`ExecutorConfig::group_lines`]): when the
//!   channel is full reading pauses and the child blocks on its pipe (backpressure; nothing
//!   is dropped). Past [`ExecutorConfig::log_cap_bytes`] lines are read and discarded, one
//!   [`LogStream::System`] marker line says so, and the count is in the result.

mod job_dirs;
mod prepare;
mod procs;
mod program_path;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::{FutureExt as _, StreamExt};
use hodei_core::domain::agent_env;
use hodei_core::domain::spec::MIN_SECRET_LEN;
use hodei_core::{CommandType, JobId, LogStream};
use nix::sys::signal::Signal;
use tokio::io::{AsyncRead, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio_util::codec::FramedRead;
use tokio_util::sync::CancellationToken;

pub use prepare::{POSIX_HEADER, STRICT_HEADER};
pub use procs::MARKER_ENV;

use crate::lines::LineDecoder;
use crate::redact::{Redactor, StreamRedactor};

/// Size of the read buffer of each output pipe.
const READ_BUFFER_BYTES: usize = 64 * 1024;

/// Most lines sent to the log channel with one reservation.
const BURST_LINES: usize = 64;

/// PATH given to jobs when the agent has none.
const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Configuration of a [`JobExecutor`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ExecutorConfig {
    /// Time between SIGTERM and SIGKILL on timeout or cancel (default 10 s).
    pub kill_grace: Duration,
    /// Log bytes kept per attempt (stdout + stderr); past it output is discarded
    /// (default 100 MiB; `None` = no cap).
    pub log_cap_bytes: Option<u64>,
    /// Longest log line; longer lines are split (default 64 KiB). Also the most bytes one
    /// group of lines carries (see [`Self::group_lines`]).
    pub max_line_bytes: usize,
    /// Whether the complete lines read together from a pipe travel as one [`LogLine`]
    /// (its data holds them separated by `\n`, without the last newline), up to
    /// [`Self::max_line_bytes`] (default `true`). Printing each entry followed by a newline
    /// gives the same text either way; grouping makes the cost per read instead of per
    /// line all the way to the store. `false` gives one entry per line.
    pub group_lines: bool,
    /// Directory under which each attempt gets its private directory
    /// (default `$TMPDIR/hodei-jobs`).
    pub work_root: PathBuf,
    /// Capacity callers should give the log channel (default 1024 lines); see
    /// [`JobExecutor::log_channel`].
    pub log_channel_capacity: usize,
    /// After the job's processes are gone, how long one read of a pipe may wait before the
    /// rest is abandoned (a process that escaped every kill may still hold the pipe open).
    /// Default 5 s.
    pub drain_timeout: Duration,
    /// Variables of the agent's environment passed to jobs (default PATH, HOME, USER,
    /// LOGNAME, LANG, LC_ALL, LC_CTYPE, TZ, TMPDIR, SHELL, TERM).
    pub env_passthrough: Vec<String>,
}

impl Default for ExecutorConfig {
    fn default() -> Self {
        Self {
            kill_grace: Duration::from_secs(10),
            log_cap_bytes: Some(100 * 1024 * 1024),
            max_line_bytes: 64 * 1024,
            group_lines: true,
            work_root: std::env::temp_dir().join("hodei-jobs"),
            log_channel_capacity: 1024,
            drain_timeout: Duration::from_secs(5),
            env_passthrough: [
                "PATH", "HOME", "USER", "LOGNAME", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "TMPDIR",
                "SHELL", "TERM",
            ]
            .into_iter()
            .map(String::from)
            .collect(),
        }
    }
}

impl ExecutorConfig {
    /// Sets [`Self::kill_grace`].
    #[must_use]
    pub fn with_kill_grace(mut self, grace: Duration) -> Self {
        self.kill_grace = grace;
        self
    }

    /// Sets [`Self::log_cap_bytes`].
    #[must_use]
    pub fn with_log_cap_bytes(mut self, cap: Option<u64>) -> Self {
        self.log_cap_bytes = cap;
        self
    }

    /// Sets [`Self::max_line_bytes`] (at least 1).
    #[must_use]
    pub fn with_max_line_bytes(mut self, max: usize) -> Self {
        self.max_line_bytes = max.max(1);
        self
    }

    /// Sets [`Self::group_lines`].
    #[must_use]
    pub fn with_group_lines(mut self, group: bool) -> Self {
        self.group_lines = group;
        self
    }

    /// Sets [`Self::work_root`].
    #[must_use]
    pub fn with_work_root(mut self, root: impl Into<PathBuf>) -> Self {
        self.work_root = root.into();
        self
    }

    /// Sets [`Self::log_channel_capacity`] (at least 1).
    #[must_use]
    pub fn with_log_channel_capacity(mut self, capacity: usize) -> Self {
        self.log_channel_capacity = capacity.max(1);
        self
    }

    /// Sets [`Self::drain_timeout`].
    #[must_use]
    pub fn with_drain_timeout(mut self, timeout: Duration) -> Self {
        self.drain_timeout = timeout;
        self
    }

    /// Sets [`Self::env_passthrough`].
    #[must_use]
    pub fn with_env_passthrough(
        mut self,
        names: impl IntoIterator<Item = impl Into<String>>,
    ) -> Self {
        self.env_passthrough = names.into_iter().map(Into::into).collect();
        self
    }
}

/// One job attempt to run.
#[derive(Debug, Clone)]
pub struct ExecutionRequest {
    /// The job.
    pub job_id: JobId,
    /// Attempt number (from 1).
    pub attempt: u32,
    /// What to run.
    pub command: CommandType,
    /// Environment variables for the job.
    pub env: BTreeMap<String, String>,
    /// Secrets, given to the job as JSON on stdin and redacted from its output.
    pub secrets: BTreeMap<String, String>,
    /// Time limit; `Duration::ZERO` means none.
    pub timeout: Duration,
    /// Working directory; `None` = the attempt's private directory.
    pub working_dir: Option<PathBuf>,
}

impl ExecutionRequest {
    /// A request with no env, no secrets, no timeout and the private working directory.
    #[must_use]
    pub fn new(job_id: JobId, attempt: u32, command: CommandType) -> Self {
        Self {
            job_id,
            attempt,
            command,
            env: BTreeMap::new(),
            secrets: BTreeMap::new(),
            timeout: Duration::ZERO,
            working_dir: None,
        }
    }

    /// Adds an environment variable.
    #[must_use]
    pub fn with_env(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.env.insert(key.into(), value.into());
        self
    }

    /// Adds a secret.
    #[must_use]
    pub fn with_secret(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.secrets.insert(name.into(), value.into());
        self
    }

    /// Sets the time limit.
    #[must_use]
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Sets the working directory.
    #[must_use]
    pub fn with_working_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.working_dir = Some(dir.into());
        self
    }
}

/// One line of output, without its newline (or a piece of an over-long line); with
/// [`ExecutorConfig::group_lines`], one or more complete lines separated by `\n`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLine {
    /// Which stream it came from.
    pub stream: LogStream,
    /// The (redacted) bytes.
    pub data: Bytes,
}

impl LogLine {
    /// A log line.
    pub fn new(stream: LogStream, data: impl Into<Bytes>) -> Self {
        Self {
            stream,
            data: data.into(),
        }
    }
}

/// How an attempt ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ExecutionOutcome {
    /// The process exited by itself; see [`ExecutionResult::exit_code`].
    Exited,
    /// The process was killed by a signal it did not get from the executor.
    Signaled,
    /// The time limit was reached and the job was killed.
    TimedOut,
    /// The job was cancelled and killed.
    Cancelled,
    /// The job could not be started; see [`ExecutionResult::error`].
    StartFailed,
}

/// The result of one attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ExecutionResult {
    /// How it ended.
    pub outcome: ExecutionOutcome,
    /// Exit code, when the process exited.
    pub exit_code: Option<i32>,
    /// Signal number, when the process was killed by a signal.
    pub signal: Option<i32>,
    /// From spawn to the end of the main process.
    pub duration: Duration,
    /// What went wrong, redacted.
    pub error: Option<String>,
    /// Names (never values) of the secrets given to the job.
    pub secrets_injected: Vec<String>,
    /// Log bytes discarded past the log cap.
    pub log_bytes_dropped: u64,
}

impl ExecutionResult {
    /// Whether the job exited with code 0.
    #[must_use]
    pub fn success(&self) -> bool {
        self.outcome == ExecutionOutcome::Exited && self.exit_code == Some(0)
    }

    fn start_failed(error: String, started: Instant) -> Self {
        Self {
            outcome: ExecutionOutcome::StartFailed,
            exit_code: None,
            signal: None,
            duration: started.elapsed(),
            error: Some(error),
            secrets_injected: Vec::new(),
            log_bytes_dropped: 0,
        }
    }
}

/// Runs jobs. Cheap to clone.
#[derive(Debug, Clone)]
pub struct JobExecutor {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    config: ExecutorConfig,
    dirs: job_dirs::JobDirs,
}

/// Releases an attempt's directory when dropped (see [`job_dirs`]).
struct DirCleanup<'a> {
    dirs: &'a job_dirs::JobDirs,
    dir: PathBuf,
}

impl Drop for DirCleanup<'_> {
    fn drop(&mut self) {
        self.dirs.release(std::mem::take(&mut self.dir));
    }
}

/// Shared log-cap accounting of one attempt.
struct LogCap {
    cap: Option<u64>,
    used: AtomicU64,
    dropped: AtomicU64,
    capped: AtomicBool,
}

impl LogCap {
    /// Takes `len` bytes of the budget if they all fit (and nothing was dropped yet).
    fn try_take(&self, len: u64) -> bool {
        let Some(cap) = self.cap else {
            return true;
        };
        let mut used = self.used.load(Ordering::Relaxed);
        loop {
            if self.capped.load(Ordering::Relaxed) || used.saturating_add(len) > cap {
                return false;
            }
            match self.used.compare_exchange_weak(
                used,
                used + len,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => return true,
                Err(now) => used = now,
            }
        }
    }

    /// Counts `len` bytes as dropped; returns whether they are the first dropped ones.
    fn drop_bytes(&self, len: u64) -> bool {
        self.dropped.fetch_add(len, Ordering::Relaxed);
        !self.capped.swap(true, Ordering::Relaxed)
    }
}

/// Everything a pipe reader needs.
#[derive(Clone)]
struct ReaderCtx {
    logs: mpsc::Sender<LogLine>,
    cap: Arc<LogCap>,
    ended: CancellationToken,
    drain_timeout: Duration,
    max_line_bytes: usize,
    group_lines: bool,
    redactor: Arc<Redactor>,
}

impl JobExecutor {
    /// An executor with this configuration.
    #[must_use]
    pub fn new(config: ExecutorConfig) -> Self {
        Self {
            inner: Arc::new(Inner {
                dirs: job_dirs::JobDirs::new(config.work_root.clone()),
                config,
            }),
        }
    }

    /// The configuration.
    #[must_use]
    pub fn config(&self) -> &ExecutorConfig {
        &self.inner.config
    }

    /// A bounded log channel of [`ExecutorConfig::log_channel_capacity`] lines.
    #[must_use]
    pub fn log_channel(&self) -> (mpsc::Sender<LogLine>, mpsc::Receiver<LogLine>) {
        mpsc::channel(self.inner.config.log_channel_capacity.max(1))
    }

    /// Runs one job; every line goes to `logs` (bounded: when it is full, reading the
    /// child's pipe pauses — backpressure, never drop). Returns only after all output was
    /// sent to `logs`. If the receiver of `logs` is dropped the job still runs to its end and
    /// its output is discarded.
    ///
    /// Dropping the returned future kills the main process (but skips the group and marker
    /// sweep): cancel through `cancel` instead.
    pub async fn execute(
        &self,
        req: ExecutionRequest,
        logs: mpsc::Sender<LogLine>,
        cancel: CancellationToken,
    ) -> ExecutionResult {
        let started = Instant::now();
        let cfg = &self.inner.config;
        let redactor = Arc::new(Redactor::new(req.secrets.values().map(String::as_bytes)));

        if let Some((name, _)) = req.secrets.iter().find(|(_, v)| v.len() < MIN_SECRET_LEN) {
            let msg = format!(
                "secret `{name}` is shorter than {MIN_SECRET_LEN} bytes and could not be \
                 redacted from logs reliably; the job was not started"
            );
            return ExecutionResult::start_failed(redactor.redact_str(&msg), started);
        }

        let marker = uuid::Uuid::new_v4().simple().to_string();
        let job_dir =
            cfg.work_root
                .join(format!("{}-{}-{}", req.job_id, req.attempt, &marker[..8]));
        if let Err(e) = self.inner.dirs.create(&job_dir) {
            let msg = format!(
                "creating the job directory {} failed: {e}",
                job_dir.display()
            );
            return ExecutionResult::start_failed(redactor.redact_str(&msg), started);
        }
        let _cleanup = DirCleanup {
            dirs: &self.inner.dirs,
            dir: job_dir.clone(),
        };

        let prepared = match prepare::prepare(&req.command, &job_dir) {
            Ok(p) => p,
            Err(e) => {
                return ExecutionResult::start_failed(redactor.redact_str(&e.to_string()), started);
            }
        };

        // The PATH the job will see (as set below): its own, else the agent's
        // when passed through, else the default when the agent has none. With
        // no PATH at all, execvp's built-in default applies: not resolved here.
        let child_path = req
            .env
            .get("PATH")
            .map(std::ffi::OsString::from)
            .or_else(|| match std::env::var_os("PATH") {
                None => Some(DEFAULT_PATH.into()),
                Some(p) if cfg.env_passthrough.iter().any(|n| n == "PATH") => Some(p),
                Some(_) => None,
            });
        let resolved = child_path.and_then(|p| program_path::resolve(&prepared.program, &p));
        let mut cmd = match resolved {
            Some(found) => {
                let mut cmd = tokio::process::Command::new(found);
                cmd.arg0(&prepared.program);
                cmd
            }
            None => tokio::process::Command::new(&prepared.program),
        };
        cmd.args(&prepared.args).env_clear();
        for name in &cfg.env_passthrough {
            if let Some(value) = std::env::var_os(name) {
                cmd.env(name, value);
            }
        }
        if std::env::var_os("PATH").is_none() {
            cmd.env("PATH", DEFAULT_PATH);
        }
        cmd.envs(&req.env)
            .env(agent_env::JOB_ID, req.job_id.to_string())
            .env(agent_env::ATTEMPT, req.attempt.to_string())
            .env(MARKER_ENV, &marker)
            .current_dir(req.working_dir.as_deref().unwrap_or(&job_dir))
            .stdin(if req.secrets.is_empty() {
                std::process::Stdio::null()
            } else {
                std::process::Stdio::piped()
            })
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .process_group(0)
            .kill_on_drop(true);

        let mut child = match cmd.spawn() {
            Ok(c) => c,
            Err(e) => {
                let msg = format!("failed to start `{}`: {e}", prepared.program);
                return ExecutionResult::start_failed(redactor.redact_str(&msg), started);
            }
        };
        let spawned = Instant::now();
        let pgid = child.id().unwrap_or(0);

        let secrets_injected: Vec<String> = req.secrets.keys().cloned().collect();
        let stdin_task = child.stdin.take().map(|mut stdin| {
            let payload = serde_json::to_vec(&req.secrets).unwrap_or_default();
            tokio::spawn(async move {
                // A job that does not read its stdin closes it: a broken pipe is fine.
                let _ = stdin.write_all(&payload).await;
                let _ = stdin.shutdown().await;
            })
        });

        let cap = Arc::new(LogCap {
            cap: cfg.log_cap_bytes,
            used: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            capped: AtomicBool::new(false),
        });
        let ended = CancellationToken::new();
        let ctx = ReaderCtx {
            logs,
            cap: Arc::clone(&cap),
            ended: ended.clone(),
            drain_timeout: cfg.drain_timeout,
            max_line_bytes: cfg.max_line_bytes,
            group_lines: cfg.group_lines,
            redactor: Arc::clone(&redactor),
        };
        // Each pipe is read by its own task (so stdout and stderr progress independently);
        // the JoinSet aborts them if this future is dropped.
        let mut readers = tokio::task::JoinSet::new();
        if let Some(stdout) = child.stdout.take() {
            readers.spawn(read_pipe(stdout, LogStream::Stdout, ctx.clone()));
        }
        if let Some(stderr) = child.stderr.take() {
            readers.spawn(read_pipe(stderr, LogStream::Stderr, ctx.clone()));
        }
        drop(ctx);

        let ended_how = supervise(&mut child, pgid, &req, cfg.kill_grace, &cancel).await;
        let duration = spawned.elapsed();
        // The marker sweep runs while the readers drain, so the job's last lines
        // reach the batcher without waiting for the scan of /proc.
        // Only processes created since the job's own can carry its marker: for a short
        // job the sweep reads a handful of environments instead of every process's.
        let sweep = sweep_marked(marker.clone(), (pgid > 1).then_some((pgid, spawned)));
        ended.cancel();
        while let Some(joined) = readers.join_next().await {
            if let Err(e) = joined {
                tracing::warn!(error = %e, "a log reader task failed");
            }
        }
        match sweep.await {
            Ok(n) if n > 0 => {
                tracing::debug!(killed = n, "killed processes that escaped the job's group")
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "scanning for leftover job processes failed"),
        }
        if let Some(task) = stdin_task {
            task.abort();
        }

        let (outcome, status, error) = ended_how;
        let exit_code = status.and_then(|s| s.code());
        let signal = status.and_then(|s| std::os::unix::process::ExitStatusExt::signal(&s));
        let outcome = match outcome {
            ExecutionOutcome::Exited if exit_code.is_none() && signal.is_some() => {
                ExecutionOutcome::Signaled
            }
            other => other,
        };
        ExecutionResult {
            outcome,
            exit_code,
            signal,
            duration,
            error: error.map(|e| redactor.redact_str(&e)),
            secrets_injected,
            log_bytes_dropped: cap.dropped.load(Ordering::Relaxed),
        }
    }
}

type Supervised = (
    ExecutionOutcome,
    Option<std::process::ExitStatus>,
    Option<String>,
);

/// Waits for the main process, enforcing timeout and cancel; then kills the group.
async fn supervise(
    child: &mut tokio::process::Child,
    pgid: u32,
    req: &ExecutionRequest,
    grace: Duration,
    cancel: &CancellationToken,
) -> Supervised {
    enum Ended {
        Exited(std::io::Result<std::process::ExitStatus>),
        TimedOut,
        Cancelled,
    }
    let limit = async {
        if req.timeout.is_zero() {
            std::future::pending::<()>().await;
        } else {
            tokio::time::sleep(req.timeout).await;
        }
    };
    let ended = tokio::select! {
        biased;
        status = child.wait() => Ended::Exited(status),
        () = cancel.cancelled() => Ended::Cancelled,
        () = limit => Ended::TimedOut,
    };
    let result = match ended {
        Ended::Exited(Ok(status)) => (ExecutionOutcome::Exited, Some(status), None),
        Ended::Exited(Err(e)) => (
            ExecutionOutcome::Exited,
            None,
            Some(format!("waiting for the job failed: {e}")),
        ),
        Ended::TimedOut | Ended::Cancelled => {
            let (outcome, msg) = if matches!(ended, Ended::TimedOut) {
                (
                    ExecutionOutcome::TimedOut,
                    format!("the job timed out after {:?} and was killed", req.timeout),
                )
            } else {
                (
                    ExecutionOutcome::Cancelled,
                    "the job was cancelled".to_owned(),
                )
            };
            procs::signal_group(pgid, Signal::SIGTERM);
            let status = match tokio::time::timeout(grace, child.wait()).await {
                Ok(s) => s.ok(),
                Err(_) => {
                    procs::signal_group(pgid, Signal::SIGKILL);
                    child.wait().await.ok()
                }
            };
            (outcome, status, Some(msg))
        }
    };
    // Leftovers in the group; the marked ones elsewhere are swept by `sweep_marked`.
    procs::signal_group(pgid, Signal::SIGKILL);
    result
}

/// Kills every process carrying the job's tracking marker (escaped with
/// `setsid` or a double fork), on a blocking thread.
fn sweep_marked(
    marker: String,
    first_pid: Option<(u32, Instant)>,
) -> tokio::task::JoinHandle<usize> {
    tokio::task::spawn_blocking(move || procs::kill_marked(&marker, first_pid))
}

/// Reads one pipe to its end, sending redacted lines to the log channel.
async fn read_pipe<R: AsyncRead + Unpin>(pipe: R, stream: LogStream, ctx: ReaderCtx) {
    let decoder = if ctx.group_lines {
        LineDecoder::grouped(ctx.max_line_bytes)
    } else {
        LineDecoder::new(ctx.max_line_bytes)
    };
    let mut framed = FramedRead::with_capacity(pipe, decoder, READ_BUFFER_BYTES);
    let mut redactor = StreamRedactor::new(Arc::clone(&ctx.redactor));
    let mut open = true;
    // Lines already decoded are sent as a burst: one channel reservation for many lines.
    let burst_max = BURST_LINES.min(ctx.logs.max_capacity()).max(1);
    let mut burst: Vec<LogLine> = Vec::with_capacity(burst_max);
    let mut eof = false;
    while !eof {
        let next = if ctx.ended.is_cancelled() {
            match tokio::time::timeout(ctx.drain_timeout, framed.next()).await {
                Ok(next) => next,
                Err(_) => {
                    tracing::warn!(
                        ?stream,
                        "a process outside the job still holds its output pipe; stopped reading"
                    );
                    break;
                }
            }
        } else {
            tokio::select! {
                biased;
                next = framed.next() => next,
                () = ctx.ended.cancelled() => continue,
            }
        };
        let mut next = Some(next);
        while let Some(item) = next.take() {
            match item {
                None => eof = true,
                Some(Ok(frame)) => {
                    if let Some(data) = redactor.push(frame) {
                        admit(&ctx, stream, data, &mut burst);
                    }
                    if burst.len() < burst_max {
                        // Only what is ready now: never wait here.
                        next = framed.next().now_or_never();
                    }
                }
                Some(Err(e)) => {
                    tracing::debug!(?stream, error = %e, "reading job output failed");
                    eof = true;
                }
            }
        }
        send_burst(&ctx, &mut burst, &mut open).await;
    }
    if let Some(data) = redactor.finish() {
        admit(&ctx, stream, data, &mut burst);
    }
    send_burst(&ctx, &mut burst, &mut open).await;
}

/// Applies the log cap to one line or group of lines: keeps it in `burst`, or keeps the
/// whole lines that still fit and drops the rest (adding the one-time marker line). The
/// budget counts line bytes, not the newlines between grouped lines, so it means the same
/// with and without [`ExecutorConfig::group_lines`].
fn admit(ctx: &ReaderCtx, stream: LogStream, data: Bytes, burst: &mut Vec<LogLine>) {
    if ctx.cap.cap.is_none() {
        burst.push(LogLine { stream, data });
        return;
    }
    let newlines = memchr::memchr_iter(b'\n', &data).count();
    let line_bytes = (data.len() - newlines) as u64;
    if ctx.cap.try_take(line_bytes) {
        burst.push(LogLine { stream, data });
        return;
    }
    // Over the cap: keep the whole lines of the group that still fit, in order.
    let mut kept_end = 0;
    let mut start = 0;
    while start <= data.len() {
        let end = memchr::memchr(b'\n', &data[start..]).map_or(data.len(), |p| start + p);
        if !ctx.cap.try_take((end - start) as u64) {
            break;
        }
        kept_end = end;
        start = end + 1;
    }
    if start > 0 {
        burst.push(LogLine {
            stream,
            data: data.slice(..kept_end),
        });
    }
    if start > data.len() {
        // Every line fitted after all (the other stream's share moved meanwhile).
        return;
    }
    let rest = &data[start..];
    let dropped = (rest.len() - memchr::memchr_iter(b'\n', rest).count()) as u64;
    if ctx.cap.drop_bytes(dropped) {
        let cap = ctx.cap.cap.unwrap_or_default();
        burst.push(LogLine::new(
            LogStream::System,
            format!(
                "[hodei] log output exceeded {cap} bytes; further output of this attempt is \
                 discarded (the job keeps running)"
            ),
        ));
    }
}

/// Sends the burst in order, waiting for channel capacity (backpressure).
async fn send_burst(ctx: &ReaderCtx, burst: &mut Vec<LogLine>, open: &mut bool) {
    if burst.is_empty() {
        return;
    }
    if !*open {
        burst.clear();
        return;
    }
    match ctx.logs.reserve_many(burst.len()).await {
        Ok(permits) => {
            for (permit, line) in permits.zip(burst.drain(..)) {
                permit.send(line);
            }
        }
        Err(_) => {
            *open = false;
            burst.clear();
        }
    }
}
