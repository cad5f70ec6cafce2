//! The `replicas` scenario: one, two and three release `hodei-server` replicas
//! on one Postgres database, the same total of warm workers spread over them,
//! measured for jobs/s and dispatch latency next to the same run's one-replica
//! figures and raw baselines.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use futures::StreamExt;
use hodei_core::client::{ClientError, HodeiClient};
use hodei_core::proto::{convert, v1};
use hodei_core::{CommandType, JobId, JobSpec, LogStream};

use super::LoadError;
use super::baseline;
use super::report::{Row, Table};
use super::scratch_db::{create_database, drop_database};
use super::server::{Binaries, ServerProcess, free_ports};
use super::stats::{Samples, ms};

/// Fixed key: every replica must open the secrets the others sealed.
const SECRETS_KEY: &str = "5eed0000beefcafe5eed0000beefcafe5eed0000beefcafe5eed0000beefcafe";
/// Submissions in flight at once, as in the `throughput` scenario.
const IN_FLIGHT: usize = 64;
/// What a replica logs (at WARN) for each job its store audit puts back on the queue.
const AUDIT_REQUEUE: &str = "pending job had no queue entry";
/// Environment variable marking this run's replicas and (by inheritance) their agents.
const RUN_MARKER: &str = "HODEI_LOAD_REPLICAS_RUN";
/// How long the warm workers may take to register.
const READY_TIMEOUT: Duration = Duration::from_secs(120);

/// What one `replicas` run does.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ReplicasConfig {
    /// Replica counts to measure, in order; the first is the baseline (normally 1).
    pub counts: Vec<usize>,
    /// Warm workers in total, spread over the replicas.
    pub workers: usize,
    /// Jobs (`true`) in each throughput batch.
    pub jobs: usize,
    /// Sequential dispatches through replica 1, and as many through the others.
    pub dispatch_n: usize,
}

impl ReplicasConfig {
    /// A run of `counts` replicas sharing `workers` warm workers.
    pub fn new(counts: Vec<usize>, workers: usize, jobs: usize, dispatch_n: usize) -> Self {
        Self {
            counts,
            workers,
            jobs,
            dispatch_n,
        }
    }
}

/// Figures of one replica count.
#[derive(Debug, Clone)]
struct Measured {
    replicas: usize,
    split: Vec<usize>,
    batch: Batch,
    via_first: Samples,
    via_others: Samples,
    /// Dispatches whose job ran on a worker of the replica it was submitted
    /// to, and those that ran on another replica's worker.
    same_replica: Samples,
    other_replica: Samples,
    /// Dispatches whose worker could not be attributed to a replica.
    unattributed: usize,
    /// Jobs the leader's store audit found Pending without a queue entry and
    /// put back on the queue (counted in the replicas' logs).
    requeued_by_audit: usize,
    server_cpu: Duration,
}

/// One batch of `true` jobs.
#[derive(Debug, Clone, Default)]
struct Batch {
    jobs: usize,
    succeeded: usize,
    by_state: HashMap<i32, usize>,
    submitted_in: Duration,
    elapsed: Duration,
    /// When 99 % of the jobs were terminal: the rate without the stragglers.
    elapsed_99: Duration,
    polled: usize,
}

impl Batch {
    fn rate(&self) -> f64 {
        self.jobs as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    fn rate_99(&self) -> f64 {
        self.jobs.div_ceil(100).saturating_mul(99).min(self.jobs) as f64
            / self.elapsed_99.as_secs_f64().max(1e-9)
    }

    fn outcome(&self) -> String {
        if self.succeeded == self.jobs {
            format!("{}/{}", self.succeeded, self.jobs)
        } else {
            let states: Vec<String> = self
                .by_state
                .iter()
                .map(|(s, c)| format!("{}: {c}", state_name(*s)))
                .collect();
            format!("{}/{} ({})", self.succeeded, self.jobs, states.join(", "))
        }
    }
}

/// `total` workers spread over `replicas` as evenly as possible, the first
/// replicas taking the remainder.
pub fn split_workers(total: usize, replicas: usize) -> Vec<usize> {
    let replicas = replicas.max(1);
    (0..replicas)
        .map(|i| total / replicas + usize::from(i < total % replicas))
        .collect()
}

/// Runs the scenario against the Postgres server at `database_url` (a fresh
/// database per replica count, dropped afterwards).
///
/// # Errors
/// Any [`LoadError`] of a server start, a call or a check; every server and
/// worker process is stopped and the database dropped before it returns.
pub async fn run(
    bins: &Binaries,
    database_url: &str,
    cfg: &ReplicasConfig,
) -> Result<Table, LoadError> {
    let max_replicas = cfg.counts.iter().copied().max().unwrap_or(1);
    if cfg.workers < max_replicas {
        return Err(LoadError::Check(format!(
            "{} workers cannot be spread over {max_replicas} replicas",
            cfg.workers
        )));
    }
    let load_before = load_average();

    eprintln!(
        "[replicas] in-memory store, 1 replica, {} warm workers",
        cfg.workers
    );
    let memory = memory_store_batch(bins, cfg).await?;

    let mut measured = Vec::new();
    for &r in &cfg.counts {
        let name = format!("hodei_load_{}_r{r}", std::process::id());
        let url = create_database(database_url, &name).await?;
        let result = measure(bins, &url, r, cfg).await;
        drop_database(database_url, &name).await;
        measured.push(result?);
    }

    eprintln!("[replicas] baselines: raw spawn+reap of `true`, raw spawn → first line");
    let base_n = cfg.jobs.max(200);
    let threads = cfg.workers;
    let raw1 = tokio::task::spawn_blocking(move || baseline::spawn_reap_rate(base_n, 1))
        .await
        .map_err(|e| LoadError::Check(format!("baseline task: {e}")))??;
    let raw_w = tokio::task::spawn_blocking(move || baseline::spawn_reap_rate(base_n, threads))
        .await
        .map_err(|e| LoadError::Check(format!("baseline task: {e}")))??;
    let mut raw_line = baseline::spawn_first_line(cfg.dispatch_n).await?;
    let load_after = load_average();

    Ok(table(
        cfg,
        &memory,
        &mut measured,
        Raw {
            spawn_reap: raw1,
            spawn_reap_parallel: raw_w,
            first_line_p50: raw_line.p50(),
            first_line_p99: raw_line.p99(),
        },
        (&load_before, &load_after),
    ))
}

/// The same-run raw baselines.
struct Raw {
    spawn_reap: f64,
    spawn_reap_parallel: f64,
    first_line_p50: Duration,
    first_line_p99: Duration,
}

fn table(
    cfg: &ReplicasConfig,
    memory: &Batch,
    measured: &mut [Measured],
    raw: Raw,
    (load_before, load_after): (&str, &str),
) -> Table {
    let mut t = Table::new(format!(
        "Several replicas on one Postgres: {} jobs `true` ({IN_FLIGHT} in flight, round-robin over the replicas), {} warm workers in total, {} sequential dispatches through replica 1 and {} through the others",
        cfg.jobs, cfg.workers, cfg.dispatch_n, cfg.dispatch_n
    ));
    let Some(first) = measured.first().cloned() else {
        t.note("no replica count measured");
        return t;
    };
    let mut first = first;
    let base_rate = first.batch.rate();
    let (base50, base99) = (first.via_first.p50(), first.via_first.p99());
    let raw_rates = format!(
        "raw {:.0} /s (1 thread), {:.0} /s ({} threads)",
        raw.spawn_reap, raw.spawn_reap_parallel, cfg.workers
    );
    let raw_lat = format!(
        "raw {:.2} / {:.2} ms",
        ms(raw.first_line_p50),
        ms(raw.first_line_p99)
    );
    for m in measured.iter_mut() {
        let split = m
            .split
            .iter()
            .map(usize::to_string)
            .collect::<Vec<_>>()
            .join("+");
        let rate = m.batch.rate();
        let is_base = m.replicas == first.replicas;
        let (rate_base, rate_ratio) = if is_base {
            (
                format!("memory store {:.0} /s; {raw_rates}", memory.rate()),
                format!(
                    "{} of memory; {} of raw",
                    pct(rate / memory.rate().max(1e-9)),
                    pct(rate / raw.spawn_reap)
                ),
            )
        } else {
            (
                format!("R={} {base_rate:.0} /s; {raw_rates}", first.replicas),
                format!(
                    "{:.2}x R={}; {} of raw",
                    rate / base_rate.max(1e-9),
                    first.replicas,
                    pct(rate / raw.spawn_reap)
                ),
            )
        };
        t.row(Row::new(
            format!("R={}: jobs/s (workers {split})", m.replicas),
            format!("{rate:.0} jobs/s"),
            rate_base,
            rate_ratio,
            "",
            super::report::Verdict::Info,
        ));
        let (p50, p99) = (m.via_first.p50(), m.via_first.p99());
        let lat_base = if is_base {
            raw_lat.clone()
        } else {
            format!(
                "R={} {:.2} / {:.2} ms; {raw_lat}",
                first.replicas,
                ms(base50),
                ms(base99)
            )
        };
        let lat_ratio = |p50: Duration| {
            if is_base {
                format!("{:.1}x raw", ms(p50) / ms(raw.first_line_p50).max(1e-9))
            } else {
                format!(
                    "{:.2}x R={}; {:.1}x raw",
                    ms(p50) / ms(base50).max(1e-9),
                    first.replicas,
                    ms(p50) / ms(raw.first_line_p50).max(1e-9)
                )
            }
        };
        t.row(Row::new(
            format!("R={}: dispatch p50 / p99 via replica 1", m.replicas),
            format!("{:.2} / {:.2} ms", ms(p50), ms(p99)),
            lat_base.clone(),
            lat_ratio(p50),
            "",
            super::report::Verdict::Info,
        ));
        if !m.via_others.is_empty() {
            let (o50, o99) = (m.via_others.p50(), m.via_others.p99());
            t.row(Row::new(
                format!(
                    "R={}: dispatch p50 / p99 via replicas 2..{}",
                    m.replicas, m.replicas
                ),
                format!("{:.2} / {:.2} ms", ms(o50), ms(o99)),
                lat_base,
                lat_ratio(o50),
                "",
                super::report::Verdict::Info,
            ));
        }
        let attributed = |s: &mut Samples| {
            if s.is_empty() {
                "0".to_owned()
            } else {
                format!(
                    "{} (p50 {:.2} / p99 {:.2} ms)",
                    s.len(),
                    ms(s.p50()),
                    ms(s.p99())
                )
            }
        };
        t.row(Row::info(
            format!(
                "R={}: dispatches run by the submitting replica's worker / another replica's",
                m.replicas
            ),
            format!(
                "{} / {}{}",
                attributed(&mut m.same_replica),
                attributed(&mut m.other_replica),
                if m.unattributed > 0 {
                    format!(" / {} unattributed", m.unattributed)
                } else {
                    String::new()
                }
            ),
        ));
        t.row(Row::info(
            format!("R={}: jobs succeeded; submitted / all terminal", m.replicas),
            format!(
                "{}; {:.2} s / {:.2} s",
                m.batch.outcome(),
                m.batch.submitted_in.as_secs_f64(),
                m.batch.elapsed.as_secs_f64()
            ),
        ));
        t.row(Row::info(
            format!("R={}: jobs/s until 99% terminal", m.replicas),
            format!(
                "{:.0} jobs/s ({:.2} s)",
                m.batch.rate_99(),
                m.batch.elapsed_99.as_secs_f64()
            ),
        ));
        t.row(Row::info(
            format!(
                "R={}: jobs the store audit found Pending without a queue entry",
                m.replicas
            ),
            m.requeued_by_audit.to_string(),
        ));
        t.row(Row::info(
            format!("R={}: server CPU per job (all replicas)", m.replicas),
            format!(
                "{:.0} µs",
                m.server_cpu.as_secs_f64() * 1e6 / m.batch.jobs.max(1) as f64
            ),
        ));
        if m.batch.polled > 0 {
            t.note(format!(
                "R={}: {} job(s) confirmed by GetJob after the event streams went quiet",
                m.replicas, m.batch.polled
            ));
        }
    }
    t.row(Row::info(
        "memory store, 1 replica: jobs/s until 99% terminal",
        format!("{:.0} jobs/s", memory.rate_99()),
    ));
    t.row(Row::info(
        "memory store, 1 replica: jobs succeeded; all terminal",
        format!(
            "{}; {:.2} s",
            memory.outcome(),
            memory.elapsed.as_secs_f64()
        ),
    ));
    t.note(format!(
        "workers: {} in total, split as evenly as possible, the first replicas taking the remainder (each replica's `HODEI_POOL_MIN_IDLE` = `HODEI_MAX_WORKERS` = its share, its own `HODEI_PROCESS_PROVIDER_NAME`)",
        cfg.workers
    ));
    t.note("jobs/s = jobs / (first submission → last terminal ExecutionEvent, read from every replica's event stream)");
    t.note(
        "dispatch = submit `echo x` through one replica → its first line at a follow_logs client of that same replica, \
         all workers idle; `via replicas 2..R` spreads the samples round-robin over the other replicas",
    );
    t.note("baselines measured in the same run: the first replica count (normally R=1 on Postgres), the in-memory store with one replica, raw spawn+reap of `true` and raw spawn → first line of `echo x`");
    t.note(
        "a follow_logs client sees a line live only from the replica whose worker sent it; \
         on any other replica it reads the line from the store at its next quiet re-check \
         (500 ms, QUIET_RECHECK in hodei-core/src/api/log_follow.rs)",
    );
    t.note(format!(
        "load average before / after: {load_before} / {load_after}"
    ));
    t
}

fn pct(x: f64) -> String {
    format!("{:.0}%", x * 100.0)
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

/// One replica on the in-memory store with every worker: the batch only.
async fn memory_store_batch(bins: &Binaries, cfg: &ReplicasConfig) -> Result<Batch, LoadError> {
    let server = ServerProcess::start(
        bins,
        &[
            ("HODEI_MAX_WORKERS", cfg.workers.to_string()),
            ("HODEI_POOL_MIN_IDLE", cfg.workers.to_string()),
        ],
    )
    .await?;
    let servers = [server];
    servers[0]
        .wait_ready_workers(cfg.workers, READY_TIMEOUT)
        .await?;
    warm_up(&servers, cfg.workers).await?;
    batch(&servers, cfg.jobs).await
}

/// Starts `replicas` servers on `db_url`, then measures dispatch and throughput.
/// The servers (and their workers) stop when this returns, error or not.
async fn measure(
    bins: &Binaries,
    db_url: &str,
    replicas: usize,
    cfg: &ReplicasConfig,
) -> Result<Measured, LoadError> {
    let split = split_workers(cfg.workers, replicas);
    let ports = free_ports(replicas)?;
    let urls: Vec<String> = ports
        .iter()
        .map(|p| format!("http://127.0.0.1:{p}"))
        .collect();
    let artifacts = tempfile::Builder::new()
        .prefix("hodei-load-artifacts")
        .tempdir()
        .map_err(|e| LoadError::io("artifact directory", e))?;
    eprintln!(
        "[replicas] R={replicas} on Postgres, workers {}",
        split
            .iter()
            .map(usize::to_string)
            .collect::<Vec<_>>()
            .join("+")
    );
    // Declared before the servers, so it is dropped after them: it then kills
    // any agent spawned after a server's last look at its children.
    let sweep = Sweep {
        marker: format!("{RUN_MARKER}={}-{replicas}", std::process::id()),
    };
    let mut servers: Vec<ServerProcess> = Vec::with_capacity(replicas);
    for (i, port) in ports.iter().enumerate() {
        // This replica's own address first: the workers it provisions register there.
        let mut list = vec![urls[i].clone()];
        list.extend(
            urls.iter()
                .enumerate()
                .filter(|(j, _)| *j != i)
                .map(|(_, u)| u.clone()),
        );
        let env = [
            ("HODEI_DATABASE_URL", db_url.to_owned()),
            ("HODEI_SECRETS_KEY", SECRETS_KEY.to_owned()),
            ("HODEI_ARTIFACT_DIR", artifacts.path().display().to_string()),
            ("HODEI_PROCESS_PROVIDER_NAME", format!("process-{}", i + 1)),
            ("HODEI_WORKER_SERVER_ADDRESS", list.join(",")),
            ("HODEI_MAX_WORKERS", split[i].to_string()),
            ("HODEI_POOL_MIN_IDLE", split[i].to_string()),
            (RUN_MARKER, format!("{}-{replicas}", std::process::id())),
        ];
        servers.push(ServerProcess::start_on(bins, *port, &env).await?);
    }
    // The store is shared: replica 1 lists every replica's workers.
    servers[0]
        .wait_ready_workers(cfg.workers, READY_TIMEOUT)
        .await?;
    warm_up(&servers, cfg.workers).await?;

    let homes = worker_homes(&servers[0]).await?;
    let mut via_first = Samples::with_capacity(cfg.dispatch_n);
    let mut via_others = Samples::with_capacity(cfg.dispatch_n);
    let mut same_replica = Samples::with_capacity(cfg.dispatch_n * 2);
    let mut other_replica = Samples::with_capacity(cfg.dispatch_n * 2);
    let mut unattributed = 0usize;
    let paths: &[&str] = if replicas > 1 {
        &["replica 1", "the other replicas"]
    } else {
        &["replica 1"]
    };
    for (p, path) in paths.iter().enumerate() {
        eprintln!(
            "[replicas] R={replicas}: {} sequential dispatches via {path}",
            cfg.dispatch_n
        );
        for i in 0..cfg.dispatch_n {
            servers[0]
                .wait_ready_workers(cfg.workers, Duration::from_secs(30))
                .await?;
            let submit_to = if p == 0 { 0 } else { 1 + i % (replicas - 1) };
            let client = servers[submit_to].client();
            let (took, id) = one_dispatch(client).await?;
            if p == 0 {
                via_first.push(took);
            } else {
                via_others.push(took);
            }
            match ran_on(client, id, &homes).await? {
                Some(home) if home == submit_to => same_replica.push(took),
                Some(_) => other_replica.push(took),
                None => unattributed += 1,
            }
        }
    }

    servers[0]
        .wait_ready_workers(cfg.workers, Duration::from_secs(30))
        .await?;
    let cpu0: Duration = servers.iter().filter_map(ServerProcess::cpu_time).sum();
    eprintln!(
        "[replicas] R={replicas}: {} jobs `true`, round-robin",
        cfg.jobs
    );
    let batch = batch(&servers, cfg.jobs).await?;
    let cpu1: Duration = servers.iter().filter_map(ServerProcess::cpu_time).sum();
    let requeued_by_audit = servers
        .iter()
        .map(|s| {
            std::fs::read_to_string(s.log_path())
                .unwrap_or_default()
                .matches(AUDIT_REQUEUE)
                .count()
        })
        .sum();
    drop(servers);
    drop(sweep);
    drop(artifacts);
    Ok(Measured {
        replicas,
        split,
        batch,
        via_first,
        via_others,
        same_replica,
        other_replica,
        unattributed,
        requeued_by_audit,
        server_cpu: cpu1.saturating_sub(cpu0),
    })
}

/// Kills, when dropped, every `hodei-worker` whose environment carries
/// `marker`: an agent a replica spawned while it was being stopped is no
/// longer its child, so the replica's own stop cannot find it.
struct Sweep {
    marker: String,
}

impl Drop for Sweep {
    fn drop(&mut self) {
        let Ok(dir) = std::fs::read_dir("/proc") else {
            return;
        };
        for entry in dir.flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|s| s.parse::<i32>().ok())
            else {
                continue;
            };
            let is_agent = std::fs::read_to_string(format!("/proc/{pid}/comm"))
                .is_ok_and(|c| c.trim() == super::server::WORKER_BINARY);
            let marked = std::fs::read(format!("/proc/{pid}/environ")).is_ok_and(|env| {
                env.split(|b| *b == 0)
                    .any(|kv| kv == self.marker.as_bytes())
            });
            if is_agent && marked {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
    }
}

fn true_spec(name: &str) -> JobSpec {
    JobSpec::new(name, CommandType::shell("true", Vec::<String>::new()))
}

/// A few jobs through every replica and worker, each waited for.
async fn warm_up(servers: &[ServerProcess], workers: usize) -> Result<(), LoadError> {
    let n = (workers * 2).max(servers.len() * 2);
    let ids = futures::future::try_join_all((0..n).map(|i| {
        let client = servers[i % servers.len()].client().clone();
        async move {
            client
                .submit(&true_spec("warm"))
                .await
                .map_err(|e| LoadError::client("submit", e))
        }
    }))
    .await?;
    let within = Duration::from_secs(60);
    for id in ids {
        servers[0]
            .client()
            .wait(id, within)
            .await
            .map_err(|e| match e {
                ClientError::WaitTimeout { .. } => LoadError::Timeout {
                    what: format!("warm-up job {id}"),
                    after: within,
                },
                e => LoadError::client("wait", e),
            })?;
    }
    servers[0]
        .wait_ready_workers(workers, Duration::from_secs(30))
        .await?;
    Ok(())
}

/// Submits `echo x` through `client` and times submit → the line `x` at a
/// follow_logs subscriber of the same client; returns once the job's log ended.
async fn one_dispatch(client: &HodeiClient) -> Result<(Duration, JobId), LoadError> {
    let spec = JobSpec::new("dispatch", CommandType::shell("echo", ["x"]));
    let t0 = Instant::now();
    let id = client
        .submit(&spec)
        .await
        .map_err(|e| LoadError::client("submit", e))?;
    let mut stream = std::pin::pin!(
        client
            .follow_logs(id)
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
    let limit = Duration::from_secs(30);
    tokio::time::timeout(limit, follow)
        .await
        .map_err(|_| LoadError::Timeout {
            what: format!("logs of dispatch job {id} to end"),
            after: limit,
        })??;
    let first_line = first_line.ok_or_else(|| {
        LoadError::Check(format!("job {id}: the subscriber never saw the line \"x\""))
    })?;
    Ok((first_line, id))
}

/// Worker id → index of the replica whose process provider spawned it (the
/// provider is named `process-<index + 1>`).
async fn worker_homes(server: &ServerProcess) -> Result<HashMap<String, usize>, LoadError> {
    let r = server
        .scheduler()
        .get_available_workers(v1::GetAvailableWorkersRequest { include_busy: true })
        .await
        .map_err(|s| LoadError::grpc("GetAvailableWorkers", s))?
        .into_inner();
    Ok(r.workers
        .into_iter()
        .filter_map(|w| {
            let n: usize = w.provider_name.strip_prefix("process-")?.parse().ok()?;
            Some((w.id, n.checked_sub(1)?))
        })
        .collect())
}

/// Which replica's worker ran job `id`, if known.
async fn ran_on(
    client: &HodeiClient,
    id: JobId,
    homes: &HashMap<String, usize>,
) -> Result<Option<usize>, LoadError> {
    let job = client
        .get(id)
        .await
        .map_err(|e| LoadError::client("get", e))?;
    Ok(job
        .worker_id()
        .and_then(|w| homes.get(&w.to_string()).copied()))
}

/// Submits `n` jobs `true` round-robin over `servers` ([`IN_FLIGHT`] at once)
/// and waits until each is terminal, watching every replica's event stream.
async fn batch(servers: &[ServerProcess], n: usize) -> Result<Batch, LoadError> {
    let mut streams = Vec::with_capacity(servers.len());
    for s in servers {
        let events = s
            .jobs()
            .execution_event_stream(v1::ExecutionEventStreamRequest {
                job_id: String::new(),
            })
            .await
            .map_err(|st| LoadError::grpc("ExecutionEventStream", st))?
            .into_inner();
        streams.push(events);
    }
    let mut events = futures::stream::select_all(streams);
    let clients: Vec<HodeiClient> = servers.iter().map(|s| s.client().clone()).collect();
    let t0 = Instant::now();
    let submit = tokio::spawn(async move {
        let spec = true_spec("true");
        let ids: Vec<Result<(String, Duration), LoadError>> = futures::stream::iter(0..n)
            .map(|i| {
                let (client, spec) = (clients[i % clients.len()].clone(), spec.clone());
                async move {
                    let id = client
                        .submit(&spec)
                        .await
                        .map_err(|e| LoadError::client("submit", e))?;
                    Ok((id.to_string(), t0.elapsed()))
                }
            })
            .buffer_unordered(IN_FLIGHT)
            .collect()
            .await;
        ids.into_iter().collect::<Result<Vec<_>, _>>()
    });
    tokio::pin!(submit);

    // job id → (terminal state, when first seen)
    let mut done: HashMap<String, (i32, Duration)> = HashMap::with_capacity(n);
    let mut ours: Option<HashSet<String>> = None;
    let mut out = Batch {
        jobs: n,
        ..Batch::default()
    };
    let overall = Duration::from_secs(if n > 500 { 900 } else { 180 });
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
                out.submitted_in = ids.iter().map(|(_, t)| *t).max().unwrap_or_default();
                ours = Some(ids.into_iter().map(|(id, _)| id).collect());
            }
            ev = tokio::time::timeout(Duration::from_secs(3), events.next()) => {
                match ev {
                    Ok(Some(Ok(ev))) => {
                        if ev.to_state >= v1::JobState::Succeeded as i32 {
                            done.entry(ev.job_id).or_insert((ev.to_state, t0.elapsed()));
                        }
                    }
                    // Streams ended, failed or went quiet: ask for the missing jobs.
                    Ok(None) | Ok(Some(Err(_))) | Err(_) => {
                        if let Some(ids) = &ours {
                            let missing: Vec<String> =
                                ids.iter().filter(|i| !done.contains_key(*i)).cloned().collect();
                            for id in missing {
                                out.polled += 1;
                                let job_id: JobId = id.parse().map_err(|_| {
                                    LoadError::Check(format!("{id:?} is not a job id"))
                                })?;
                                let j = servers[0]
                                    .client()
                                    .get(job_id)
                                    .await
                                    .map_err(|e| LoadError::client("get", e))?;
                                if j.state().is_terminal() {
                                    let state = convert::job_state_to_proto(j.state()) as i32;
                                    done.insert(id, (state, t0.elapsed()));
                                }
                            }
                        }
                        if matches!(ev, Ok(None)) {
                            // No stream left: poll instead of spinning.
                            tokio::time::sleep(Duration::from_millis(200)).await;
                        }
                    }
                }
            }
        }
    }
    let ids = ours.unwrap_or_default();
    let mut times: Vec<Duration> = ids
        .iter()
        .filter_map(|id| done.get(id).map(|(_, t)| *t))
        .collect();
    times.sort_unstable();
    out.elapsed = times.last().copied().unwrap_or_default();
    let k = n.div_ceil(100).saturating_mul(99).min(times.len());
    out.elapsed_99 = times.get(k.saturating_sub(1)).copied().unwrap_or_default();
    for id in &ids {
        if let Some((s, _)) = done.get(id) {
            *out.by_state.entry(*s).or_default() += 1;
        }
    }
    out.succeeded = out
        .by_state
        .get(&(v1::JobState::Succeeded as i32))
        .copied()
        .unwrap_or(0);
    Ok(out)
}

fn state_name(state: i32) -> String {
    v1::JobState::try_from(state)
        .map(|s| s.as_str_name().to_owned())
        .unwrap_or_else(|_| state.to_string())
}

#[cfg(test)]
mod tests {
    use super::split_workers;

    #[test]
    fn workers_are_split_as_evenly_as_possible() {
        assert_eq!(split_workers(4, 1), vec![4]);
        assert_eq!(split_workers(4, 2), vec![2, 2]);
        assert_eq!(split_workers(4, 3), vec![2, 1, 1]);
        assert_eq!(split_workers(5, 3), vec![2, 2, 1]);
    }
}
