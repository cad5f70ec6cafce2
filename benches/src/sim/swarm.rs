//! The swarm: one simulated agent per credential the sim server prints.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use tokio::io::{AsyncBufReadExt as _, BufReader};
use tokio::process::ChildStdout;
use tokio::sync::{Semaphore, mpsc};

use super::agent::{AgentContext, RunSeen, SwarmCounters, run_agent};
use super::provider::Credential;

/// Agents registering at once (each opens a connection and registers).
const CONCURRENT_REGISTRATIONS: usize = 64;

/// A running swarm.
#[derive(Debug)]
pub struct Swarm {
    /// Shared counters of every agent.
    pub counters: Arc<SwarmCounters>,
    /// Every `run_job` the agents received.
    pub runs: mpsc::UnboundedReceiver<RunSeen>,
    /// The sim server's other stdout lines (`LAG …`).
    pub lines: mpsc::UnboundedReceiver<String>,
    reader: tokio::task::JoinHandle<()>,
}

impl Swarm {
    /// Starts an agent for each `CRED` line of the sim server's stdout.
    #[must_use]
    pub fn start(server: String, stdout: BufReader<ChildStdout>) -> Self {
        let counters = Arc::new(SwarmCounters::default());
        let (runs_tx, runs) = mpsc::unbounded_channel();
        let ctx = AgentContext {
            server,
            counters: counters.clone(),
            runs: runs_tx,
        };
        let (lines_tx, lines) = mpsc::unbounded_channel();
        let reader = tokio::spawn(read_credentials(stdout, ctx, lines_tx));
        Self {
            counters,
            runs,
            lines,
            reader,
        }
    }

    /// Agents with an open worker stream now.
    #[must_use]
    pub fn connected(&self) -> usize {
        self.counters.connected.load(Ordering::Relaxed)
    }

    /// Agents that failed.
    #[must_use]
    pub fn failed(&self) -> usize {
        self.counters.failed.load(Ordering::Relaxed)
    }
}

impl Drop for Swarm {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

async fn read_credentials(
    stdout: BufReader<ChildStdout>,
    ctx: AgentContext,
    others: mpsc::UnboundedSender<String>,
) {
    let gate = Arc::new(Semaphore::new(CONCURRENT_REGISTRATIONS));
    let mut lines = stdout.lines();
    while let Ok(Some(line)) = lines.next_line().await {
        let Some(cred) = Credential::from_line(&line) else {
            let _ = others.send(line);
            continue;
        };
        let ctx = ctx.clone();
        let gate = gate.clone();
        tokio::spawn(async move {
            let permit = gate.acquire_owned().await.ok();
            let counters = ctx.counters.clone();
            if let Err(e) = run_agent(cred, ctx, permit).await {
                counters.failed.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(error = %e, "simulated agent stopped");
            }
        });
    }
}
