//! `hodei-load`: end-to-end load tool for Hodei.
//!
//! Starts the release `hodei-server` (embedded defaults: in-memory store, local
//! process provider spawning the release `hodei-worker`) on free loopback ports,
//! drives it over gRPC, and prints one table per scenario with a raw baseline
//! measured in the same run, so each figure reads as a ratio that holds on a noisy
//! machine.
//!
//! ```text
//! cargo build --release -p hodei-examples --bins
//! cargo run --release -p hodei-benches --bin hodei-load -- [all|dispatch|throughput|logs|rss|agents|replicas]… [--quick]
//! ```

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::{Parser, ValueEnum};
use futures::StreamExt;
use hodei_benches::load::LoadError;
use hodei_benches::load::baseline;
use hodei_benches::load::procfs::{self, mib};
use hodei_benches::load::report::{Row, Table, Verdict};
use hodei_benches::load::server::{Binaries, ServerProcess};
use hodei_benches::load::stats::{Samples, ms};
use hodei_core::client::ClientError;
use hodei_core::proto::{convert, v1};
use hodei_core::{CommandType, Job, JobId, JobSpec, LogStream};

/// End-to-end load tool: runs the real release server and agents and compares each
/// figure with a raw baseline measured in the same run.
#[derive(Debug, Parser)]
#[command(name = "hodei-load", version, about)]
struct Args {
    /// Scenarios to run.
    #[arg(value_enum, default_values_t = [Scenario::All])]
    scenarios: Vec<Scenario>,
    /// Smaller sizes for a smoke run (N=30 dispatches, 200 jobs, 20 MB of logs, 10 agents).
    #[arg(long)]
    quick: bool,
    /// Directory holding hodei-server and hodei-worker (default: next to this executable).
    #[arg(long)]
    bin_dir: Option<PathBuf>,
    /// Dispatch samples (default 200, quick 30).
    #[arg(long)]
    dispatch_n: Option<usize>,
    /// Jobs in the throughput scenario (default 2000, quick 200).
    #[arg(long)]
    jobs: Option<usize>,
    /// Warm workers in the throughput scenario (default 4; the raw baselines
    /// use as many threads for their parallel row).
    #[arg(long, default_value_t = 4)]
    workers: usize,
    /// Megabytes (10^6 bytes) of log output in the log scenario (default 200, quick 20).
    #[arg(long)]
    log_mb: Option<u64>,
    /// Idle agents in the RSS scenario (default 100, quick 10).
    #[arg(long)]
    agents: Option<usize>,
    /// Simulated agent counts of the `agents` scenario (default 100,1000,10000; quick 100).
    #[arg(long, value_delimiter = ',')]
    agent_counts: Vec<usize>,
    /// Postgres for the `agents` scenario's second store (default: HODEI_TEST_DATABASE_URL;
    /// unset = memory store only; its tables are created in that database), and for the
    /// `replicas` scenario (default: HODEI_BENCH_DATABASE_URL; required there; it creates
    /// and drops a database per replica count).
    #[arg(long)]
    database_url: Option<String>,
    /// Replica counts of the `replicas` scenario (default 1,2,3; the first is the baseline).
    #[arg(long, value_delimiter = ',')]
    replica_counts: Vec<usize>,
    /// Warm workers in total in the `replicas` scenario, spread over the replicas (default 4).
    #[arg(long, default_value_t = 4)]
    replica_workers: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Scenario {
    /// Every scenario, in order.
    All,
    /// Submit → first log line on an idle warm worker.
    Dispatch,
    /// Jobs/s through 4 warm workers (`--workers`).
    Throughput,
    /// MB/s of one job's output to a SubscribeLogs client.
    Logs,
    /// Server and agent memory with many idle agents.
    Rss,
    /// Thousands of simulated agents on one server (hodei-sim-server): CPU,
    /// memory per agent, heartbeat lag, dispatch latency. Not part of `all`.
    Agents,
    /// One, two and three replicas on one Postgres (needs --database-url or
    /// HODEI_BENCH_DATABASE_URL): jobs/s and dispatch latency. Not part of `all`.
    Replicas,
}

/// Sizes of one run.
#[derive(Debug, Clone, Copy)]
struct Sizes {
    dispatch_n: usize,
    jobs: usize,
    workers: usize,
    log_bytes: u64,
    agents: usize,
}

const WORKER_READY_TIMEOUT: Duration = Duration::from_secs(120);

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let args = Args::parse();
    let sizes = Sizes {
        dispatch_n: args.dispatch_n.unwrap_or(if args.quick { 30 } else { 200 }),
        jobs: args.jobs.unwrap_or(if args.quick { 200 } else { 2000 }),
        workers: args.workers.max(1),
        log_bytes: args.log_mb.unwrap_or(if args.quick { 20 } else { 200 }) * 1_000_000,
        agents: args.agents.unwrap_or(if args.quick { 10 } else { 100 }),
    };
    let bins = match Binaries::locate(args.bin_dir.as_deref()) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("hodei-load: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    let mut scenarios: Vec<Scenario> = if args.scenarios.contains(&Scenario::All) {
        vec![
            Scenario::Dispatch,
            Scenario::Throughput,
            Scenario::Logs,
            Scenario::Rss,
        ]
    } else {
        args.scenarios.clone()
    };
    scenarios.dedup();

    println!(
        "## hodei-load{}",
        if args.quick { " (--quick)" } else { "" }
    );
    println!();
    for line in machine_description(&bins) {
        println!("- {line}");
    }
    println!();

    let mut tables = Vec::new();
    let mut errors = 0usize;
    for s in scenarios {
        let t0 = Instant::now();
        let r = match s {
            Scenario::Dispatch => dispatch(&bins, sizes).await,
            Scenario::Throughput => throughput(&bins, sizes).await,
            Scenario::Logs => log_throughput(&bins, sizes).await,
            Scenario::Rss => idle_rss(&bins, sizes).await,
            Scenario::Agents => simulated_agents(&bins, &args, sizes).await,
            Scenario::Replicas => replicas(&bins, &args, sizes).await,
            Scenario::All => continue,
        };
        match r {
            Ok(mut table) => {
                table.note(format!(
                    "scenario wall time {:.1} s",
                    t0.elapsed().as_secs_f64()
                ));
                println!("{table}");
                tables.push(table);
            }
            Err(e) => {
                errors += 1;
                println!("### {s:?}\n\nERROR: {e}\n");
            }
        }
    }
    let misses: usize = tables.iter().map(Table::misses).sum();
    println!(
        "## summary: {} scenario(s) run, {misses} target(s) missed, {errors} error(s)",
        tables.len() + errors
    );
    if errors > 0 {
        std::process::ExitCode::FAILURE
    } else {
        std::process::ExitCode::SUCCESS
    }
}

/// One line each: CPU, cores, load, memory, kernel, binaries.
fn machine_description(bins: &Binaries) -> Vec<String> {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|s| s.trim_start_matches([' ', '\t', ':']).to_owned())
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let load = std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ");
    let mem_total = std::fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .map(|s| s.trim().to_owned())
        .unwrap_or_default();
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    vec![
        format!(
            "machine: {model}, {cores} cores, {mem_total} RAM, Linux {}",
            kernel.trim()
        ),
        format!("load average at start: {load}"),
        format!(
            "binaries: {} and {}",
            bins.server.display(),
            bins.worker.display()
        ),
    ]
}

/// The `agents` scenario: each agent count on the memory store, then on
/// Postgres when a database is given.
async fn simulated_agents(bins: &Binaries, args: &Args, sizes: Sizes) -> Result<Table, LoadError> {
    let sim_server = bins
        .server
        .parent()
        .map(|d| d.join("hodei-sim-server"))
        .filter(|p| p.is_file())
        .ok_or_else(|| LoadError::MissingBinary("hodei-sim-server".into()))?;
    let counts = if args.agent_counts.is_empty() {
        if args.quick {
            vec![100]
        } else {
            vec![100, 1000, 10_000]
        }
    } else {
        args.agent_counts.clone()
    };
    let database_url = args
        .database_url
        .clone()
        .or_else(|| std::env::var("HODEI_TEST_DATABASE_URL").ok());
    let mut table = Table::new("Simulated agents on one server (hodei-sim-server)");
    let mut stores: Vec<(&'static str, Option<&str>)> = vec![("memory", None)];
    if let Some(url) = database_url.as_deref() {
        stores.push(("postgres", Some(url)));
    } else {
        table.note("Postgres store skipped: no --database-url or HODEI_TEST_DATABASE_URL");
    }
    for (store, url) in stores {
        for &agents in &counts {
            let run = hodei_benches::sim::scenario::AgentsRun {
                store,
                agents,
                dispatch_n: sizes.dispatch_n.min(100),
                window: Duration::from_secs(if args.quick { 10 } else { 30 }),
            };
            hodei_benches::sim::scenario::run(&sim_server, url, &run, &mut table).await?;
        }
    }
    table.note(
        "Agents speak the worker protocol from one process, one gRPC connection each, \
         heartbeats every 5 s; jobs are no-ops answered at once. CPU is sampled over the \
         window once all are connected; KiB/agent = (RSS − RSS at start) / agents.",
    );
    Ok(table)
}

/// The `replicas` scenario: needs a Postgres server, where it creates (and
/// drops) one database per replica count.
async fn replicas(bins: &Binaries, args: &Args, sizes: Sizes) -> Result<Table, LoadError> {
    let url = args
        .database_url
        .clone()
        .or_else(|| std::env::var("HODEI_BENCH_DATABASE_URL").ok())
        .ok_or_else(|| {
            LoadError::Check(
                "the replicas scenario needs Postgres: pass --database-url postgres://… \
                 or set HODEI_BENCH_DATABASE_URL (a database per replica count is created \
                 there and dropped afterwards)"
                    .into(),
            )
        })?;
    let counts = if args.replica_counts.is_empty() {
        vec![1, 2, 3]
    } else {
        args.replica_counts.clone()
    };
    let cfg = hodei_benches::load::replicas::ReplicasConfig::new(
        counts,
        args.replica_workers,
        sizes.jobs,
        args.dispatch_n.unwrap_or(if args.quick { 30 } else { 100 }),
    );
    hodei_benches::load::replicas::run(bins, &url, &cfg).await
}

fn spec_of(name: &str, command: CommandType) -> JobSpec {
    JobSpec::new(name, command)
}

async fn queue(server: &ServerProcess, spec: JobSpec) -> Result<String, LoadError> {
    let id = server
        .client()
        .submit(&spec)
        .await
        .map_err(|e| LoadError::client("submit", e))?;
    Ok(id.to_string())
}

async fn get_job(server: &ServerProcess, id: &str) -> Result<Job, LoadError> {
    server
        .client()
        .get(job_id(id)?)
        .await
        .map_err(|e| LoadError::client("get", e))
}

/// A job id the server gave out.
fn job_id(id: &str) -> Result<JobId, LoadError> {
    id.parse()
        .map_err(|_| LoadError::Check(format!("{id:?} is not a job id")))
}

/// The wire number of a job's state (the reports count states by it).
fn wire_state(job: &Job) -> i32 {
    convert::job_state_to_proto(job.state()) as i32
}

fn is_terminal(state: i32) -> bool {
    state >= v1::JobState::Succeeded as i32
}

fn state_name(state: i32) -> String {
    v1::JobState::try_from(state)
        .map(|s| s.as_str_name().to_owned())
        .unwrap_or_else(|_| state.to_string())
}

fn pct(x: f64) -> String {
    format!("{:.0}%", x * 100.0)
}

// ---------------------------------------------------------------------------
// 1. Dispatch latency
// ---------------------------------------------------------------------------

/// Timings of one dispatch.
struct DispatchSample {
    /// The job's id.
    id: String,
    /// QueueJob round trip.
    queued: Duration,
    /// Submit → first non-system log line seen by the subscriber.
    first_line: Duration,
}

/// Submits `echo x`, subscribes to its logs, and times the first line; returns once
/// the subscription ended (the job ended).
async fn one_dispatch(server: &ServerProcess) -> Result<DispatchSample, LoadError> {
    let spec = spec_of("dispatch", CommandType::shell("echo", ["x"]));
    let t0 = Instant::now();
    let id = queue(server, spec).await?;
    let queued = t0.elapsed();
    let mut stream = std::pin::pin!(
        server
            .client()
            .follow_logs(job_id(&id)?)
            .await
            .map_err(|e| LoadError::client("follow_logs", e))?
    );
    let mut first_line = None;
    let follow = async {
        while let Some(entry) = stream.next().await {
            let entry = entry.map_err(|e| LoadError::client("follow_logs stream", e))?;
            if first_line.is_none()
                && entry.entry.stream != LogStream::System
                && entry.entry.data[..] == b"x"[..]
            {
                first_line = Some(t0.elapsed());
            }
        }
        Ok::<(), LoadError>(())
    };
    tokio::time::timeout(Duration::from_secs(30), follow)
        .await
        .map_err(|_| LoadError::Timeout {
            what: format!("logs of dispatch job {id} to end"),
            after: Duration::from_secs(30),
        })??;
    let first_line = first_line.ok_or_else(|| {
        LoadError::Check(format!("job {id}: the subscriber never saw the line \"x\""))
    })?;
    Ok(DispatchSample {
        id,
        queued,
        first_line,
    })
}

async fn dispatch(bins: &Binaries, sizes: Sizes) -> Result<Table, LoadError> {
    let n = sizes.dispatch_n;
    eprintln!("[dispatch] starting server with 1 warm worker");
    let server = ServerProcess::start(
        bins,
        &[
            ("HODEI_MAX_WORKERS", "1".into()),
            ("HODEI_POOL_MIN_IDLE", "1".into()),
        ],
    )
    .await?;
    server.wait_ready_workers(1, WORKER_READY_TIMEOUT).await?;
    // Warm the worker, the channel and the server's code paths.
    for _ in 0..10 {
        one_dispatch(&server).await?;
    }
    eprintln!("[dispatch] {n} sequential dispatches");
    let mut first = Samples::with_capacity(n);
    let mut queued = Samples::with_capacity(n);
    let mut last_id = None;
    for _ in 0..n {
        // Let the worker go back to Ready before the next submission.
        server
            .wait_ready_workers(1, Duration::from_secs(10))
            .await?;
        let s = one_dispatch(&server).await?;
        first.push(s.first_line);
        queued.push(s.queued);
        last_id = Some(s.id);
    }
    // The transport's share: a dispatch crosses four one-way gRPC hops
    // (submit, Run to the agent, the log line back, the line to the
    // subscriber), as many as two unary round trips on the same channel.
    eprintln!("[dispatch] baseline: {n} unary GetJob round trips on the same server");
    let mut unary = Samples::with_capacity(n);
    if let Some(id) = last_id {
        for _ in 0..n {
            let t0 = Instant::now();
            get_job(&server, &id).await?;
            unary.push(t0.elapsed());
        }
    }
    drop(server);
    eprintln!("[dispatch] baseline: {n} raw spawns of echo x");
    let mut raw = baseline::spawn_first_line(n).await?;

    let mut t = Table::new(format!(
        "Dispatch latency: QueueJob → first log line at a SubscribeLogs client (echo x, 1 idle warm worker, N={n}, sequential)"
    ));
    let (p50, p99, raw50, raw99) = (first.p50(), first.p99(), raw.p50(), raw.p99());
    t.row(Row::new(
        "p50",
        format!("{:.2} ms", ms(p50)),
        format!("{:.2} ms", ms(raw50)),
        format!("{:.1}x", ms(p50) / ms(raw50).max(1e-9)),
        "≤ 2 ms",
        Verdict::from_bool(p50 <= Duration::from_millis(2)),
    ));
    t.row(Row::new(
        "p99",
        format!("{:.2} ms", ms(p99)),
        format!("{:.2} ms", ms(raw99)),
        format!("{:.1}x", ms(p99) / ms(raw99).max(1e-9)),
        "≤ 10 ms",
        Verdict::from_bool(p99 <= Duration::from_millis(10)),
    ));
    t.row(Row::info("max", format!("{:.2} ms", ms(first.max()))));
    t.row(Row::info(
        "of which QueueJob round trip p50 / p99",
        format!("{:.2} / {:.2} ms", ms(queued.p50()), ms(queued.p99())),
    ));
    let floor = raw50 + 2 * unary.p50();
    t.row(Row::new(
        "p50 vs transport floor (raw + 2 unary round trips)",
        format!("{:.2} ms", ms(p50)),
        format!("{:.2} ms", ms(floor)),
        format!("{:.1}x", ms(p50) / ms(floor).max(1e-9)),
        "",
        Verdict::Info,
    ));
    t.row(Row::info(
        "unary GetJob round trip p50 / p99",
        format!("{:.2} / {:.2} ms", ms(unary.p50()), ms(unary.p99())),
    ));
    t.note("baseline: tokio::process spawn of `echo x` until its first line is read, same N");
    t.note("transport floor: the raw baseline plus two unary GetJob round trips measured on the same server in the same run (a dispatch crosses four one-way gRPC hops: submit, Run, the log line to the server, the line to the subscriber); what is above it is Hodei's own work");
    Ok(t)
}

// ---------------------------------------------------------------------------
// 2. Throughput
// ---------------------------------------------------------------------------

async fn throughput(bins: &Binaries, sizes: Sizes) -> Result<Table, LoadError> {
    let n = sizes.jobs;
    let workers_n = sizes.workers;
    eprintln!("[throughput] starting server with {workers_n} warm workers");
    let server = ServerProcess::start(
        bins,
        &[
            ("HODEI_MAX_WORKERS", workers_n.to_string()),
            ("HODEI_POOL_MIN_IDLE", workers_n.to_string()),
        ],
    )
    .await?;
    server
        .wait_ready_workers(workers_n, WORKER_READY_TIMEOUT)
        .await?;
    // Warm-up: a few jobs through every worker.
    let warm: Vec<String> = futures::future::try_join_all((0..workers_n * 2).map(|_| {
        queue(
            &server,
            spec_of("warm", CommandType::shell("true", Vec::<String>::new())),
        )
    }))
    .await?;
    for id in &warm {
        let within = Duration::from_secs(60);
        server
            .client()
            .wait(job_id(id)?, within)
            .await
            .map_err(|e| match e {
                ClientError::WaitTimeout { .. } => LoadError::Timeout {
                    what: format!("warm-up job {id}"),
                    after: within,
                },
                e => LoadError::client("wait", e),
            })?;
    }
    server
        .wait_ready_workers(workers_n, Duration::from_secs(30))
        .await?;

    // Every job's state changes on one stream: the typed client waits for
    // one job at a time, so the all-jobs event stream stays a raw call.
    let mut events = server
        .jobs()
        .execution_event_stream(v1::ExecutionEventStreamRequest {
            job_id: String::new(),
        })
        .await
        .map_err(|s| LoadError::grpc("ExecutionEventStream", s))?
        .into_inner();

    let workers = server.worker_pids();
    let cpu_workers0: Duration = workers.iter().filter_map(|p| procfs::cpu_time(*p)).sum();
    let cpu_jobs0: Duration = workers
        .iter()
        .filter_map(|p| procfs::children_cpu_time(*p))
        .sum();
    let cpu_server0 = server.cpu_time().unwrap_or_default();
    let cpu_client0 = procfs::cpu_time(std::process::id()).unwrap_or_default();
    eprintln!("[throughput] {n} jobs running `true`, submitted concurrently");
    let t0 = Instant::now();
    let submit = {
        let spec = spec_of("true", CommandType::shell("true", Vec::<String>::new()));
        let client = server.client().clone();
        tokio::spawn(async move {
            let ids: Vec<Result<(String, Duration), LoadError>> = futures::stream::iter(0..n)
                .map(|_| {
                    let (client, spec) = (client.clone(), spec.clone());
                    async move {
                        let id = client
                            .submit(&spec)
                            .await
                            .map_err(|e| LoadError::client("submit", e))?;
                        Ok((id.to_string(), t0.elapsed()))
                    }
                })
                .buffer_unordered(64)
                .collect()
                .await;
            ids.into_iter().collect::<Result<Vec<_>, _>>()
        })
    };
    tokio::pin!(submit);

    // job id → (terminal state, when seen)
    let mut done: HashMap<String, (i32, Duration)> = HashMap::with_capacity(n);
    let mut ours: Option<HashSet<String>> = None;
    let mut submitted_in = Duration::ZERO;
    let overall = Duration::from_secs(if n > 500 { 600 } else { 120 });
    let mut polled = 0usize;
    loop {
        if let Some(ids) = &ours
            && ids.iter().all(|id| done.contains_key(id))
        {
            break;
        }
        if t0.elapsed() > overall {
            let missing = ours.as_ref().map_or(n, |ids| {
                ids.iter().filter(|i| !done.contains_key(*i)).count()
            });
            return Err(LoadError::Timeout {
                what: format!("{missing} of {n} jobs to finish"),
                after: overall,
            });
        }
        tokio::select! {
            r = &mut submit, if ours.is_none() => {
                let ids = r.map_err(|e| LoadError::Check(format!("submit task: {e}")))??;
                submitted_in = ids.iter().map(|(_, t)| *t).max().unwrap_or_default();
                ours = Some(ids.into_iter().map(|(id, _)| id).collect());
            }
            ev = tokio::time::timeout(Duration::from_secs(3), events.message()) => {
                match ev {
                    Ok(Ok(Some(ev))) => {
                        if is_terminal(ev.to_state) {
                            done.entry(ev.job_id).or_insert((ev.to_state, t0.elapsed()));
                        }
                    }
                    // Stream ended, failed or went quiet: ask for the missing jobs.
                    Ok(Ok(None)) | Ok(Err(_)) | Err(_) => {
                        if let Some(ids) = &ours {
                            let missing: Vec<String> =
                                ids.iter().filter(|i| !done.contains_key(*i)).cloned().collect();
                            for id in missing {
                                polled += 1;
                                let j = get_job(&server, &id).await?;
                                if j.state().is_terminal() {
                                    done.insert(id, (wire_state(&j), t0.elapsed()));
                                }
                            }
                        }
                    }
                }
            }
        }
    }
    let ids = ours.unwrap_or_default();
    let elapsed = ids
        .iter()
        .filter_map(|id| done.get(id).map(|(_, t)| *t))
        .max()
        .unwrap_or_default();
    let cpu_server = server
        .cpu_time()
        .unwrap_or_default()
        .saturating_sub(cpu_server0);
    let cpu_workers: Duration = workers
        .iter()
        .filter_map(|p| procfs::cpu_time(*p))
        .sum::<Duration>()
        .saturating_sub(cpu_workers0);
    let cpu_jobs: Duration = workers
        .iter()
        .filter_map(|p| procfs::children_cpu_time(*p))
        .sum::<Duration>()
        .saturating_sub(cpu_jobs0);
    let cpu_client = procfs::cpu_time(std::process::id())
        .unwrap_or_default()
        .saturating_sub(cpu_client0);
    let mut by_state: HashMap<i32, usize> = HashMap::new();
    for id in &ids {
        if let Some((s, _)) = done.get(id) {
            *by_state.entry(*s).or_default() += 1;
        }
    }
    let succeeded = by_state
        .get(&(v1::JobState::Succeeded as i32))
        .copied()
        .unwrap_or(0);
    drop(server);

    eprintln!("[throughput] baseline: raw spawn+reap of `true`");
    let base_n = n.max(200);
    let raw = tokio::task::spawn_blocking(move || baseline::spawn_reap(base_n, 1))
        .await
        .map_err(|e| LoadError::Check(format!("baseline task: {e}")))??;
    let raw1 = raw.per_second;
    let raw4 = tokio::task::spawn_blocking(move || baseline::spawn_reap_rate(base_n, workers_n))
        .await
        .map_err(|e| LoadError::Check(format!("baseline task: {e}")))??;

    let rate = n as f64 / elapsed.as_secs_f64();
    let mut t = Table::new(format!(
        "Throughput: {n} jobs running `true`, {workers_n} warm workers, submitted concurrently (64 in flight)"
    ));
    t.row(Row::new(
        "jobs/s vs raw sequential spawn+reap",
        format!("{rate:.0} jobs/s"),
        format!("{raw1:.0} /s"),
        pct(rate / raw1),
        "≥ 75%",
        Verdict::from_bool(rate / raw1 >= 0.75),
    ));
    t.row(Row::new(
        format!("jobs/s vs raw spawn+reap, {workers_n} threads"),
        format!("{rate:.0} jobs/s"),
        format!("{raw4:.0} /s"),
        pct(rate / raw4),
        "(≥ 50%)",
        Verdict::Info,
    ));
    t.row(Row::info(
        "jobs succeeded",
        format!(
            "{succeeded}/{n}{}",
            if succeeded == n {
                String::new()
            } else {
                format!(
                    " ({})",
                    by_state
                        .iter()
                        .map(|(s, c)| format!("{}: {c}", state_name(*s)))
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            }
        ),
    ));
    t.row(Row::info(
        "wall time (all submitted / all terminal)",
        format!(
            "{:.2} s / {:.2} s",
            submitted_in.as_secs_f64(),
            elapsed.as_secs_f64()
        ),
    ));
    let us = |d: Duration| d.as_secs_f64() * 1e6 / n as f64;
    t.row(Row::info(
        "CPU per job: server / agents",
        format!("{:.0} µs / {:.0} µs", us(cpu_server), us(cpu_workers)),
    ));
    // Where the machine's time went: if every core were busy with this CPU
    // per job, the rate could not exceed `cores / CPU per job`. A rate below
    // that ceiling is time spent waiting (round trips), not computing.
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    let per_job = us(cpu_server) + us(cpu_workers) + us(cpu_jobs) + us(cpu_client);
    let raw_per_job = (raw.parent_cpu + raw.child_cpu).as_secs_f64() * 1e6;
    t.row(Row::info(
        "CPU per job: the jobs (`true`) / this client; raw loop: parent / `true`",
        format!(
            "{:.0} µs / {:.0} µs; {:.0} µs / {:.0} µs",
            us(cpu_jobs),
            us(cpu_client),
            raw.parent_cpu.as_secs_f64() * 1e6,
            raw.child_cpu.as_secs_f64() * 1e6
        ),
    ));
    if per_job > 0.0 && raw_per_job > 0.0 {
        let ceiling = cores as f64 * 1e6 / per_job;
        t.row(Row::new(
            format!("jobs/s vs the CPU-bound ceiling ({cores} cores / all CPU per job)"),
            format!("{rate:.0} jobs/s"),
            format!("{ceiling:.0} /s"),
            pct(rate / ceiling),
            "",
            Verdict::Info,
        ));
        t.row(Row::info(
            "all CPU per job vs the raw loop's",
            format!(
                "{per_job:.0} µs vs {raw_per_job:.0} µs ({:.1}x)",
                per_job / raw_per_job
            ),
        ));
    }
    if polled > 0 {
        t.note(format!(
            "{polled} job(s) were confirmed by GetJob after the event stream went quiet"
        ));
    }
    if succeeded != n {
        t.note("not every job succeeded: see the server log");
    }
    t.note("jobs/s = jobs / (first submission → last terminal ExecutionEvent)");
    Ok(t)
}

// ---------------------------------------------------------------------------
// 3. Log throughput
// ---------------------------------------------------------------------------

/// Counts of what a SubscribeLogs client received.
#[derive(Debug, Default)]
struct Received {
    messages: u64,
    entries: u64,
    lines: u64,
    payload: u64,
    system: u64,
    sequence_breaks: u64,
    attempts: HashSet<u32>,
    first_line_at: Option<Duration>,
}

async fn log_throughput(bins: &Binaries, sizes: Sizes) -> Result<Table, LoadError> {
    let bytes = sizes.log_bytes;
    // 99 zeros + the newline yes adds = 100-byte lines. `|| true` because yes dies
    // of SIGPIPE when head is done, which pipefail would otherwise report.
    let generator = format!("{{ yes \"$(printf '%099d' 0)\" || true; }} | head -c {bytes}");
    eprintln!("[logs] baseline: generator | wc -c");
    let (raw_bytes, raw_a) = baseline::pipe_to_wc(&generator).await?;
    if raw_bytes != bytes {
        return Err(LoadError::Check(format!(
            "generator printed {raw_bytes} bytes, expected {bytes}"
        )));
    }

    eprintln!("[logs] starting server with 1 warm worker");
    let server = ServerProcess::start(
        bins,
        &[
            ("HODEI_MAX_WORKERS", "1".into()),
            ("HODEI_POOL_MIN_IDLE", "1".into()),
        ],
    )
    .await?;
    server.wait_ready_workers(1, WORKER_READY_TIMEOUT).await?;
    let rss_before = server.memory().unwrap_or_default();
    let worker = server.worker_pids().first().copied();
    let cpu_server0 = server.cpu_time().unwrap_or_default();
    let cpu_worker0 = worker.and_then(procfs::cpu_time).unwrap_or_default();
    let cpu_self0 = procfs::cpu_time(std::process::id()).unwrap_or_default();

    eprintln!("[logs] one job printing {} MB", bytes / 1_000_000);
    let spec = spec_of("logs", CommandType::script("bash", generator.clone()));
    // Raw SubscribeLogs: this measures the gRPC messages (chunks) and their
    // sequence numbers, which the typed client flattens into entries.
    let mut logs = server.logs();
    let t0 = Instant::now();
    let id = queue(&server, spec).await?;
    let mut stream = logs
        .subscribe_logs(v1::SubscribeLogsRequest { job_id: id.clone() })
        .await
        .map_err(|s| LoadError::grpc("SubscribeLogs", s))?
        .into_inner();
    let mut rx = Received::default();
    let mut next_seq = 1u64;
    let limit = Duration::from_secs(600);
    let follow = async {
        while let Some(chunk) = stream
            .message()
            .await
            .map_err(|s| LoadError::grpc("SubscribeLogs stream", s))?
        {
            rx.messages += 1;
            rx.attempts.insert(chunk.attempt);
            for e in &chunk.entries {
                if e.sequence != next_seq {
                    rx.sequence_breaks += 1;
                }
                next_seq = e.sequence + 1;
                if e.stream == v1::LogStream::System as i32 {
                    rx.system += 1;
                    continue;
                }
                if rx.first_line_at.is_none() {
                    rx.first_line_at = Some(t0.elapsed());
                }
                // An entry holds one or more lines, separated by newlines (the agent
                // groups the lines it reads together).
                let newlines = memchr::memchr_iter(b'\n', &e.data).count() as u64;
                rx.entries += 1;
                rx.lines += 1 + newlines;
                rx.payload += e.data.len() as u64 - newlines;
            }
        }
        Ok::<(), LoadError>(())
    };
    tokio::time::timeout(limit, follow)
        .await
        .map_err(|_| LoadError::Timeout {
            what: format!("the {bytes}-byte log of job {id}"),
            after: limit,
        })??;
    let elapsed = t0.elapsed();
    let job = get_job(&server, &id).await?;
    let rss_after = server.memory().unwrap_or_default();
    let worker_mem = worker.and_then(procfs::memory).unwrap_or_default();
    let cpu_server = server
        .cpu_time()
        .unwrap_or_default()
        .saturating_sub(cpu_server0);
    let cpu_worker = worker
        .and_then(procfs::cpu_time)
        .unwrap_or_default()
        .saturating_sub(cpu_worker0);
    let cpu_self = procfs::cpu_time(std::process::id())
        .unwrap_or_default()
        .saturating_sub(cpu_self0);
    drop(server);

    eprintln!("[logs] baseline again: generator | wc -c");
    let (_, raw_b) = baseline::pipe_to_wc(&generator).await?;
    let raw = raw_a.min(raw_b);

    let expected_lines = bytes / 100;
    // Entries carry lines without their newline.
    let received_bytes = rx.payload + rx.lines;
    let mbps = bytes as f64 / 1e6 / elapsed.as_secs_f64();
    let raw_mbps = bytes as f64 / 1e6 / raw.as_secs_f64();
    let per100 = rx.messages as f64 / (rx.lines.max(1) as f64 / 100.0);
    let complete = received_bytes == bytes && rx.lines == expected_lines && rx.sequence_breaks == 0;

    let mut t = Table::new(format!(
        "Log throughput: one job printing {} MB in 100-byte lines, received by a SubscribeLogs client",
        bytes / 1_000_000
    ));
    t.row(Row::new(
        "MB/s submit → stream end",
        format!("{mbps:.1} MB/s"),
        format!("{raw_mbps:.0} MB/s"),
        pct(mbps / raw_mbps),
        "≥ 50%",
        Verdict::from_bool(complete && mbps / raw_mbps >= 0.50),
    ));
    t.row(Row::new(
        "gRPC log messages per 100 lines",
        format!("{per100:.2}"),
        "",
        format!(
            "{} msgs / {} entries / {} lines",
            rx.messages, rx.entries, rx.lines
        ),
        "≤ 1",
        Verdict::from_bool(per100 <= 1.0),
    ));
    t.row(Row::new(
        "received complete and in order",
        format!(
            "{received_bytes} bytes, {} lines, {} sequence breaks",
            rx.lines, rx.sequence_breaks
        ),
        format!("{bytes} bytes, {expected_lines} lines"),
        "",
        "exact",
        Verdict::from_bool(complete),
    ));
    t.row(Row::info(
        "job state",
        format!(
            "{} (attempts seen in logs: {:?}, system lines: {})",
            state_name(wire_state(&job)),
            rx.attempts,
            rx.system
        ),
    ));
    t.row(Row::info(
        "time to first line",
        format!("{:.1} ms", ms(rx.first_line_at.unwrap_or_default())),
    ));
    t.row(Row::info(
        "server RSS before / after / peak",
        format!(
            "{:.1} / {:.1} / {:.1} MiB",
            mib(rss_before.rss),
            mib(rss_after.rss),
            mib(rss_after.peak)
        ),
    ));
    t.row(Row::info(
        "agent RSS after / peak",
        format!(
            "{:.1} / {:.1} MiB",
            mib(worker_mem.rss),
            mib(worker_mem.peak)
        ),
    ));
    t.row(Row::info(
        "CPU: server / agent / subscriber (this tool)",
        format!(
            "{:.2} s / {:.2} s / {:.2} s (wall {:.2} s)",
            cpu_server.as_secs_f64(),
            cpu_worker.as_secs_f64(),
            cpu_self.as_secs_f64(),
            elapsed.as_secs_f64()
        ),
    ));
    t.note(format!(
        "baseline: the same generator piped to `wc -c`, best of a run before and after ({:.2} s, {:.2} s)",
        raw_a.as_secs_f64(),
        raw_b.as_secs_f64()
    ));
    t.note("the in-memory store keeps every entry: the server's RSS grows with the log");
    Ok(t)
}

// ---------------------------------------------------------------------------
// 4. Idle RSS
// ---------------------------------------------------------------------------

async fn idle_rss(bins: &Binaries, sizes: Sizes) -> Result<Table, LoadError> {
    let n = sizes.agents;
    eprintln!("[rss] baseline: server with no agents");
    let empty = ServerProcess::start(
        bins,
        &[
            ("HODEI_MAX_WORKERS", n.to_string()),
            ("HODEI_POOL_MIN_IDLE", "0".into()),
        ],
    )
    .await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss0 = empty.memory().unwrap_or_default();
    drop(empty);

    eprintln!("[rss] server with {n} idle agents");
    let server = ServerProcess::start(
        bins,
        &[
            ("HODEI_MAX_WORKERS", n.to_string()),
            ("HODEI_POOL_MIN_IDLE", n.to_string()),
        ],
    )
    .await?;
    let took = server
        .wait_ready_workers(n, Duration::from_secs(300))
        .await?;
    // Let every agent send a heartbeat or two and settle.
    tokio::time::sleep(Duration::from_secs(6)).await;
    let ready = server.ready_workers().await?;
    let rss = server.memory().unwrap_or_default();
    let pids = server.worker_pids();
    let mut agents: Vec<procfs::Memory> = pids.iter().filter_map(|p| procfs::memory(*p)).collect();
    agents.sort_by_key(|m| m.rss);
    drop(server);
    let floor = baseline::trivial_process_rss()?;

    let median = agents.get(agents.len() / 2).copied().unwrap_or_default();
    let max = agents.last().copied().unwrap_or_default();
    let per_agent = rss.rss.saturating_sub(rss0.rss) / n.max(1) as u64;

    let mut t = Table::new(format!("Memory with {n} connected idle agents"));
    t.row(Row::new(
        format!("server VmRSS, {n} agents"),
        format!("{:.1} MiB", mib(rss.rss)),
        format!("{:.1} MiB (0 agents)", mib(rss0.rss)),
        format!("+{:.0} KiB/agent", per_agent as f64 / 1024.0),
        "",
        Verdict::Info,
    ));
    t.row(Row::info(
        "server RssAnon / peak",
        format!("{:.1} / {:.1} MiB", mib(rss.anon), mib(rss.peak)),
    ));
    t.row(Row::new(
        "agent VmRSS after registration (max)",
        format!("{:.1} MiB", mib(max.rss)),
        format!("{:.1} MiB (`sleep`)", mib(floor)),
        format!("{:.1}x", max.rss as f64 / floor.max(1) as f64),
        "< 10 MB",
        Verdict::from_bool(max.rss > 0 && max.rss < 10_000_000),
    ));
    t.row(Row::info(
        "agent VmRSS median / RssAnon median",
        format!("{:.1} / {:.1} MiB", mib(median.rss), mib(median.anon)),
    ));
    t.row(Row::info(
        "agents measured / Ready",
        format!("{} / {ready}", agents.len()),
    ));
    t.row(Row::info(
        format!("time to {n} Ready"),
        format!("{:.1} s", took.as_secs_f64()),
    ));
    t.note("VmRSS counts shared library pages too; RssAnon is the process's own memory");
    Ok(t)
}
