//! `hodei-worker`: the reference worker agent, assembled from `hodei-agent`'s public API.
//!
//! Configured entirely by `HODEI_*` environment variables (see
//! `hodei_agent::config`). Exit codes: 0 after a clean shutdown (SIGTERM/SIGINT), 2 when the
//! one-time token is invalid, used or expired, 3 when the server lost this worker's session,
//! 1 for any other error. Log verbosity follows `RUST_LOG` (default `info`).

use std::io::Write as _;
use std::process::ExitCode;

use hodei_agent::client::{CancellationToken, WorkerClient};
use hodei_agent::config::AgentConfig;
use tokio::signal::unix::{SignalKind, signal};

#[path = "../logging.rs"]
mod logging;

// One thread: the agent's work is a chain of small hops (stream → executor → pipe
// readers → batcher → stream), and on one thread they cost no cross-thread wake-ups:
// job start latency drops by about a fifth (docs/PERFORMANCE.md). Blocking work (the
// process sweep) still runs on tokio's blocking pool.
#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    // Job traces (OTEL_EXPORTER_OTLP_ENDPOINT): a bad value must not keep the
    // worker from its job, so it is logged as an error, not fatal.
    let (traces, bad_setting) =
        match hodei_core::server_config::trace_export(|k| std::env::var(k).ok(), "hodei-worker") {
            Ok(t) => (t, None),
            Err(e) => (None, Some(e.to_string())),
        };
    let (logging, outcome) = logging::init(
        "info",
        // Colour codes only on a terminal: not in a VM's serial console or a container's log.
        std::io::IsTerminal::is_terminal(&std::io::stdout()),
        || LossyStdout,
        traces.as_ref(),
    );
    for e in bad_setting.into_iter().chain(outcome.err()) {
        tracing::error!(error = %e, "job traces are NOT exported");
    }
    let code = run().await;
    logging.shutdown().await;
    code
}

async fn run() -> ExitCode {
    let config = match AgentConfig::from_env() {
        Ok(c) => c,
        Err(e) => return fail(&e.to_string(), 1),
    };
    tracing::info!(
        worker_id = %config.worker_id,
        servers = %config.servers,
        mtls = config.tls.is_some(),
        max_concurrent_jobs = config.max_concurrent_jobs,
        "hodei-worker starting"
    );
    let client = match WorkerClient::builder(config).build() {
        Ok(c) => c,
        Err(e) => return fail(&e.to_string(), e.exit_code()),
    };

    let shutdown = CancellationToken::new();
    if let Err(e) = watch_signals(shutdown.clone()) {
        return fail(&format!("cannot install signal handlers: {e}"), 1);
    }
    match client.run(shutdown).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(&e.to_string(), e.exit_code()),
    }
}

/// First SIGTERM/SIGINT: graceful drain. Second: exit at once.
fn watch_signals(shutdown: CancellationToken) -> std::io::Result<()> {
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    tokio::spawn(async move {
        let mut first = true;
        loop {
            let name = tokio::select! {
                _ = term.recv() => "SIGTERM",
                _ = int.recv() => "SIGINT",
            };
            if first {
                tracing::info!(
                    signal = name,
                    "shutting down: draining jobs (send again to exit now)"
                );
                shutdown.cancel();
                first = false;
            } else {
                tracing::warn!(signal = name, "second signal: exiting immediately");
                std::process::exit(130);
            }
        }
    });
    Ok(())
}

/// Standard output that drops what it cannot write. The agent's output is
/// often a pipe to whoever started it (the process provider of a server); when
/// that reader dies (`kill -9` of the server) the agent must keep running its
/// jobs and reconnect, not die of a broken pipe (tracing's fallback report to a
/// broken stderr panics).
struct LossyStdout;

impl std::io::Write for LossyStdout {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        Ok(std::io::stdout().write(buf).unwrap_or(buf.len()))
    }
    fn flush(&mut self) -> std::io::Result<()> {
        let _ = std::io::stdout().flush();
        Ok(())
    }
}

fn fail(message: &str, code: i32) -> ExitCode {
    tracing::error!("{message}");
    let _ = writeln!(std::io::stderr(), "hodei-worker: {message}");
    ExitCode::from(u8::try_from(code).unwrap_or(1))
}
