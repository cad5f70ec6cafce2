//! The `agents` scenario of `hodei-load`: N simulated agents held by one
//! `hodei-sim-server`, for each store; server CPU, memory per agent, heartbeat
//! lag and dispatch latency, each beside a same-run baseline.

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use hodei_core::proto::v1;
use hodei_core::proto::v1::job_execution_service_client::JobExecutionServiceClient;
use hodei_core::proto::v1::job_query_service_client::JobQueryServiceClient;
use hodei_core::{CommandType, JobSpec};
use tokio::io::{AsyncBufReadExt as _, BufReader};
use tokio::process::{Child, Command};

use super::swarm::Swarm;
use crate::load::LoadError;
use crate::load::procfs;
use crate::load::report::{Row, Table, Verdict};
use crate::load::scratch_db::{create_database, drop_database};
use crate::load::stats::{Samples, ms};

/// What one run of the scenario measures.
#[derive(Debug, Clone)]
pub struct AgentsRun {
    /// `memory` or `postgres`.
    pub store: &'static str,
    /// Agents asked for.
    pub agents: usize,
    /// Jobs dispatched one at a time with every agent idle.
    pub dispatch_n: usize,
    /// How long the server's CPU is sampled once every agent is connected.
    pub window: Duration,
}

/// Time allowed for every agent to connect.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(600);
/// Heartbeat rounds after the last agent connected, before sampling.
const SETTLE: Duration = Duration::from_secs(10);
/// The server's Postgres pool in this scenario.
const DB_POOL: usize = 20;
/// Jobs dispatched before the sampled ones, reported apart as the cold
/// figure: Postgres plans a prepared statement afresh on each of a
/// connection's first five runs before it keeps a generic plan (0.5–1 ms
/// for the binding statement on this machine), and each of the pool's
/// connections prepares its own, so the first five dispatches per
/// connection measure the warm-up of the server, not its steady state.
const DISPATCH_WARMUP: usize = 6 * DB_POOL;

/// Runs one store × agent count and adds its rows to `table`.
pub async fn run(
    sim_server: &Path,
    database_url: Option<&str>,
    run: &AgentsRun,
    table: &mut Table,
) -> Result<(), LoadError> {
    // A database of its own per run: the sim provider of an earlier run (and
    // its thousands of workers) would otherwise still be registered there.
    let scratch = match database_url {
        Some(admin) => {
            let name = format!("hodei_load_agents_{}_{}", std::process::id(), run.agents);
            Some((admin, name.clone(), create_database(admin, &name).await?))
        }
        None => None,
    };
    let result = run_on(
        sim_server,
        scratch.as_ref().map(|(_, _, url)| url.as_str()),
        run,
        table,
    )
    .await;
    if let Some((admin, name, _)) = &scratch {
        drop_database(admin, name).await;
    }
    result
}

/// [`run`] against the given database (or the memory store).
async fn run_on(
    sim_server: &Path,
    database_url: Option<&str>,
    run: &AgentsRun,
    table: &mut Table,
) -> Result<(), LoadError> {
    let label = format!("{} agents, {} store", run.agents, run.store);
    let mut cmd = Command::new(sim_server);
    cmd.arg("--agents")
        .arg(run.agents.to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .env_remove("HODEI_DATABASE_URL")
        .env_remove("DATABASE_URL");
    if let Some(url) = database_url {
        cmd.env("HODEI_DATABASE_URL", url)
            .env("HODEI_DB_MAX_CONNECTIONS", DB_POOL.to_string());
    }
    let mut child = cmd
        .spawn()
        .map_err(|e| LoadError::io(format!("starting {}", sim_server.display()), e))?;
    let stdout = child
        .stdout
        .take()
        .ok_or_else(|| LoadError::Check("sim server without stdout".into()))?;
    let mut reader = BufReader::new(stdout);
    let (url, pid) = read_ready(&mut reader).await?;
    let base = procfs::memory(pid).map_or(0, |m| m.rss);

    let t0 = Instant::now();
    let mut swarm = Swarm::start(url.clone(), reader);
    while swarm.connected() < run.agents {
        if t0.elapsed() > CONNECT_TIMEOUT {
            return Err(LoadError::Timeout {
                what: format!(
                    "{label}: {} of {} connected, {} failed",
                    swarm.connected(),
                    run.agents,
                    swarm.failed()
                ),
                after: CONNECT_TIMEOUT,
            });
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let connect_time = t0.elapsed();
    tokio::time::sleep(SETTLE).await;

    let cpu0 = procfs::cpu_time(pid).unwrap_or_default();
    let w0 = Instant::now();
    tokio::time::sleep(run.window).await;
    let cpu = procfs::cpu_time(pid)
        .unwrap_or_default()
        .saturating_sub(cpu0);
    let cores = cpu.as_secs_f64() / w0.elapsed().as_secs_f64();
    let rss = procfs::memory(pid).map_or(0, |m| m.rss);
    let per_agent = rss.saturating_sub(base) as f64 / run.agents as f64;

    let (mut cold, _) = dispatch_latency(&url, &mut swarm, DISPATCH_WARMUP).await?;
    let (dispatch, rtt) = dispatch_latency(&url, &mut swarm, run.dispatch_n).await?;
    let lag = stop(&mut child, &mut swarm).await?;

    let gib = 1024.0 * 1024.0 * 1024.0;
    table.row(Row::info(
        format!("{label}: all connected after"),
        format!(
            "{:.1} s ({} failed)",
            connect_time.as_secs_f64(),
            swarm.failed()
        ),
    ));
    table.row(Row::new(
        format!("{label}: server CPU, idle agents"),
        format!("{cores:.3} cores"),
        "",
        "",
        "≤ 1 core",
        Verdict::from_bool(cores <= 1.0),
    ));
    table.row(Row::new(
        format!("{label}: server RSS"),
        format!(
            "{:.1} MiB ({:.1} KiB/agent)",
            procfs::mib(rss),
            per_agent / 1024.0
        ),
        format!("{:.1} MiB before", procfs::mib(base)),
        "",
        "≤ 1 GiB",
        Verdict::from_bool((rss as f64) <= gib),
    ));
    table.row(Row::new(
        format!("{label}: heartbeat lag p99 (send → stored)"),
        format!(
            "{:.1} ms (p50 {:.1}, max {:.1}; {} beats)",
            lag.p99 * 1e3,
            lag.p50 * 1e3,
            lag.max * 1e3,
            lag.count
        ),
        "",
        "",
        "≤ 50 ms",
        Verdict::from_bool(lag.count > 0 && lag.p99 <= 0.050),
    ));
    let mut dispatch = dispatch;
    let mut rtt = rtt;
    table.row(Row::info(
        format!("{label}: dispatch p50 of the first {DISPATCH_WARMUP} (warm-up, not sampled)"),
        format!("{:.2} ms (p99 {:.2})", ms(cold.p50()), ms(cold.p99())),
    ));
    let (d50, r50) = (dispatch.p50(), rtt.p50());
    table.row(Row::new(
        format!("{label}: dispatch p50 (submit → run_job at the agent)"),
        format!("{:.2} ms (p99 {:.2})", ms(d50), ms(dispatch.p99())),
        format!("{:.2} ms unary GetJob", ms(r50)),
        format!("{:.1}×", d50.as_secs_f64() / r50.as_secs_f64().max(1e-9)),
        "≤ 3 ms",
        Verdict::from_bool(d50 <= Duration::from_millis(3)),
    ));
    Ok(())
}

async fn read_ready(
    reader: &mut BufReader<tokio::process::ChildStdout>,
) -> Result<(String, u32), LoadError> {
    let mut line = String::new();
    let read = tokio::time::timeout(Duration::from_secs(120), reader.read_line(&mut line)).await;
    match read {
        Ok(Ok(n)) if n > 0 => {}
        _ => {
            return Err(LoadError::Check(
                "hodei-sim-server did not print READY".into(),
            ));
        }
    }
    let mut parts = line.trim().split(' ');
    match (
        parts.next(),
        parts.next(),
        parts.next().map(str::parse::<u32>),
    ) {
        (Some("READY"), Some(url), Some(Ok(pid))) => Ok((url.to_owned(), pid)),
        _ => Err(LoadError::Check(format!("hodei-sim-server said {line:?}"))),
    }
}

/// Submits `n` jobs one at a time; for each, the time until an agent got its
/// `run_job`, and the time of a unary GetJob of it (the floor of any call).
async fn dispatch_latency(
    url: &str,
    swarm: &mut Swarm,
    n: usize,
) -> Result<(Samples, Samples), LoadError> {
    let channel = tonic::transport::Endpoint::from_shared(url.to_owned())?
        .tcp_nodelay(true)
        .connect()
        .await?;
    let mut jobs = JobExecutionServiceClient::new(channel.clone());
    let mut query = JobQueryServiceClient::new(channel);
    let spec: v1::JobSpec = (&JobSpec::new(
        "sim-noop",
        CommandType::Shell {
            cmd: "true".into(),
            args: Vec::new(),
        },
    ))
        .into();
    let mut dispatch = Samples::with_capacity(n);
    let mut rtt = Samples::with_capacity(n);
    while swarm.runs.try_recv().is_ok() {}
    for _ in 0..n {
        let t = Instant::now();
        let id = jobs
            .queue_job(v1::QueueJobRequest {
                spec: Some(spec.clone()),
                correlation_id: String::new(),
            })
            .await
            .map_err(|s| LoadError::grpc("QueueJob", s))?
            .into_inner()
            .job
            .map(|j| j.id)
            .ok_or_else(|| LoadError::Check("QueueJob answered without a job".into()))?;
        loop {
            match tokio::time::timeout(Duration::from_secs(30), swarm.runs.recv()).await {
                Ok(Some(seen)) if seen.job_id == id => {
                    dispatch.push(seen.at.duration_since(t));
                    break;
                }
                Ok(Some(_)) => {}
                _ => {
                    return Err(LoadError::Timeout {
                        what: format!("run_job of {id} at an agent"),
                        after: Duration::from_secs(30),
                    });
                }
            }
        }
        let t = Instant::now();
        query
            .get_job(v1::GetJobRequest { job_id: id })
            .await
            .map_err(|s| LoadError::grpc("GetJob", s))?;
        rtt.push(t.elapsed());
        // Let the result land before the next submit (one job in flight).
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok((dispatch, rtt))
}

/// Closes the sim server's stdin, reads its `LAG` line, waits for it to exit.
async fn stop(child: &mut Child, swarm: &mut Swarm) -> Result<super::Quantiles, LoadError> {
    drop(child.stdin.take());
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut lag = None;
    while lag.is_none() && Instant::now() < deadline {
        match tokio::time::timeout(Duration::from_secs(30), swarm.lines.recv()).await {
            Ok(Some(line)) => lag = parse_lag(&line),
            _ => break,
        }
    }
    let _ = tokio::time::timeout(Duration::from_secs(10), child.wait()).await;
    let _ = child.start_kill();
    lag.ok_or_else(|| LoadError::Check("hodei-sim-server printed no LAG line".into()))
}

fn parse_lag(line: &str) -> Option<super::Quantiles> {
    let mut p = line.strip_prefix("LAG ")?.split(' ');
    let count = p.next()?.parse().ok()?;
    let p50: f64 = p.next()?.parse().ok()?;
    let p99: f64 = p.next()?.parse().ok()?;
    let max: f64 = p.next()?.parse().ok()?;
    Some(super::Quantiles {
        count,
        p50: p50 / 1e3,
        p99: p99 / 1e3,
        max: max / 1e3,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lag_line_is_read_back_in_seconds() {
        let q = parse_lag("LAG 1200 1.500 40.000 90.000").expect("a LAG line");
        assert_eq!(q.count, 1200);
        assert!((q.p99 - 0.040).abs() < 1e-9);
        assert_eq!(parse_lag("CRED x y"), None);
    }
}
