//! One round: fresh database, server replica(s), a stream of jobs, one kind of fault
//! injected several times at random (seeded) points, then the recovery window, the
//! orphan scan and the invariant checks on the recorded history.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use hodei_core::client::{ClientOptions, HodeiClient};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::api::Api;
use super::faults::Fault;
use super::history::{Event, History};
use super::invariants::{self, Observed, RoundOutcome};
use super::jobs::JobPlan;
use super::markers::{self, MarkKind};
use super::netns::NetNs;
use super::postgres::{self, Database};
use super::procs;
use super::replica::Replica;
use super::{ChaosError, now_ms};
use crate::load::server::Binaries;

/// The control plane's timing in every round: short, so a fault is noticed fast.
const HEARTBEAT_MS: u64 = 500;
const WORKER_LOST_AFTER_MS: u64 = 3_000;
const LEASE_SECS: u64 = 3;
/// Queue lease of a provisioning (HODEI_DISPATCH_LEASE_MS).
const DISPATCH_LEASE_MS: u64 = 3_000;
/// Fixed key: a restarted server must open the secrets its predecessor sealed.
const SECRETS_KEY: &str = "4c0ffee04c0ffee04c0ffee04c0ffee04c0ffee04c0ffee04c0ffee04c0ffee0";

/// What a round is asked to do.
#[derive(Debug, Clone)]
pub struct RoundConfig {
    /// Round number (1-based), in names and output.
    pub index: usize,
    /// The fault it injects.
    pub fault: Fault,
    /// How many times.
    pub injections: usize,
    /// The round's seed (derived from the run's seed and the round number).
    pub seed: u64,
    /// How long after the last fault cleared every job must be final.
    pub recovery_window: Duration,
    /// How long after that a worker process may still be alive.
    pub orphan_grace: Duration,
    /// Print every job's history, not only the violating ones'.
    pub verbose: bool,
}

/// What the run provides to every round.
#[derive(Debug)]
pub struct RoundEnv<'a> {
    /// The binaries under test.
    pub bins: &'a Binaries,
    /// The Postgres server.
    pub db: &'a Database,
    /// The run's scratch directory.
    pub work_dir: &'a Path,
    /// Marks every process of the run (rounds add their number).
    pub run_token: &'a str,
}

fn lock(h: &Mutex<History>) -> MutexGuard<'_, History> {
    h.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The seeded choices of a round, drawn before it starts so that the same seed
/// gives the same plan whatever the timing.
#[derive(Debug, Clone)]
struct Plan {
    jobs: Vec<JobPlan>,
    /// Pause before each submission.
    gaps: Vec<Duration>,
    /// Replica each submission (and cancel) goes to.
    targets: Vec<usize>,
    /// Pause before each injection, and the delay after its trigger.
    injections: Vec<(Duration, Duration)>,
    /// How long each fault lasts (server down time, freeze, cut, Postgres down).
    holds: Vec<Duration>,
}

fn plan(cfg: &RoundConfig, replicas: usize) -> Plan {
    let mut rng = StdRng::seed_from_u64(cfg.seed);
    let n = cfg.injections * 5 + 4;
    let jobs = (0..n)
        .map(|index| JobPlan {
            index,
            lines: rng.random_range(10..40),
            pause: Duration::from_millis(rng.random_range(10..60)),
            secret: rng
                .random_bool(0.3)
                .then(|| format!("chaos-secret-{:016x}", rng.random::<u64>())),
            cancel_after: rng
                .random_bool(0.15)
                .then(|| Duration::from_millis(rng.random_range(50..3_000))),
        })
        .collect();
    let gaps = (0..n)
        .map(|_| Duration::from_millis(rng.random_range(100..800)))
        .collect();
    let targets = (0..n).map(|_| rng.random_range(0..replicas)).collect();
    let trigger_delay = match cfg.fault {
        Fault::KillServerSubmit => 0..20,
        Fault::KillServerProvisioning => 0..1_500,
        Fault::KillServerResult => 0..5,
        _ => 0..800,
    };
    let injections = (0..cfg.injections)
        .map(|_| {
            (
                Duration::from_millis(rng.random_range(300..2_000)),
                Duration::from_millis(rng.random_range(trigger_delay.clone())),
            )
        })
        .collect();
    let holds = (0..cfg.injections)
        .map(|_| match cfg.fault {
            Fault::SigstopLeader => Duration::from_millis(
                LEASE_SECS * 1000 + WORKER_LOST_AFTER_MS + rng.random_range(1_000..3_000),
            ),
            Fault::Netcut => {
                Duration::from_millis(WORKER_LOST_AFTER_MS + rng.random_range(1_500..4_000))
            }
            Fault::PgRestart => Duration::from_millis(rng.random_range(500..4_000)),
            _ => Duration::from_millis(rng.random_range(200..1_500)),
        })
        .collect();
    Plan {
        jobs,
        gaps,
        targets,
        injections,
        holds,
    }
}

/// Writes the agent wrapper the server starts instead of `hodei-worker`: it sleeps
/// first when the fault needs slow provisioning and enters the network namespace
/// when there is one, then `exec`s the real agent (same pid).
fn write_wrapper(
    dir: &Path,
    worker: &Path,
    delay: Option<Duration>,
    netns: Option<&str>,
) -> Result<PathBuf, ChaosError> {
    use std::os::unix::fs::PermissionsExt;
    let mut s = String::from("#!/bin/sh\n");
    if let Some(d) = delay {
        s.push_str(&format!("sleep {:.1}\n", d.as_secs_f64()));
    }
    match netns {
        Some(ns) => s.push_str(&format!(
            "exec ip netns exec {ns} {} \"$@\"\n",
            worker.display()
        )),
        None => s.push_str(&format!("exec {} \"$@\"\n", worker.display())),
    }
    let path = dir.join("agent.sh");
    std::fs::write(&path, s).map_err(|e| ChaosError::io("write the agent wrapper", e))?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))
        .map_err(|e| ChaosError::io("chmod the agent wrapper", e))?;
    Ok(path)
}

/// Runs one round and checks its invariants.
///
/// # Errors
/// A [`ChaosError`] when the round could not be set up (a server that does not
/// come back after a fault is reported as a violation, not an error).
pub async fn run(cfg: &RoundConfig, env: &RoundEnv<'_>) -> Result<RoundOutcome, ChaosError> {
    let token = format!("{}-r{}", env.run_token, cfg.index);
    let dir = env.work_dir.join(format!("round-{}", cfg.index));
    std::fs::create_dir_all(&dir).map_err(|e| ChaosError::io("round dir", e))?;
    let marks = dir.join("marks");
    let db_name = format!("chaos_{}_r{}", std::process::id(), cfg.index);
    let db_url = env.db.create(&db_name).await?;
    let mut netns = if cfg.fault.needs_netns() {
        Some(NetNs::create(std::process::id())?)
    } else {
        None
    };
    let wrapper = write_wrapper(
        &dir,
        &env.bins.worker,
        cfg.fault.agent_start_delay(),
        netns.as_ref().map(NetNs::name),
    )?;
    let bind = netns
        .as_ref()
        .map_or("127.0.0.1", NetNs::host_ip)
        .to_owned();
    let common: Vec<(String, String)> = [
        ("HODEI_DATABASE_URL", db_url.clone()),
        ("HODEI_SECRETS_KEY", SECRETS_KEY.into()),
        ("HODEI_MAX_WORKERS", "3".into()),
        ("HODEI_MAX_JOBS_PER_WORKER", "1".into()),
        ("HODEI_IDLE_TIMEOUT_SECS", "2".into()),
        ("HODEI_HEARTBEAT_INTERVAL_MS", HEARTBEAT_MS.to_string()),
        (
            "HODEI_WORKER_LOST_AFTER_MS",
            WORKER_LOST_AFTER_MS.to_string(),
        ),
        ("HODEI_REGISTRATION_TIMEOUT_SECS", "10".into()),
        ("HODEI_LEADER_LEASE_SECS", LEASE_SECS.to_string()),
        // A provisioning's queue lease: a job whose server died is given back
        // within about this long; the store audit runs every second.
        ("HODEI_DISPATCH_LEASE_MS", DISPATCH_LEASE_MS.to_string()),
        ("HODEI_AUDIT_INTERVAL_MS", "1000".into()),
        ("HODEI_DB_MAX_CONNECTIONS", "10".into()),
        ("HODEI_WORKER_BINARY", wrapper.display().to_string()),
        (procs::MARKER_ENV, token.clone()),
        (
            "RUST_LOG",
            std::env::var("HODEI_CHAOS_LOG")
                .unwrap_or_else(|_| "warn,hodei_server=info,hodei_core::control=info".into()),
        ),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    let names: &[&str] = if cfg.fault.two_replicas() {
        &["a", "b"]
    } else {
        &["a"]
    };
    let mut replicas = Vec::new();
    for name in names {
        replicas.push(Replica::new(
            name,
            &env.bins.server,
            &bind,
            common.clone(),
            &dir,
        )?);
    }
    // Each replica's workers dial it first and the others after it, so they
    // follow the service when their replica dies or stalls.
    let urls: Vec<String> = replicas.iter().map(Replica::grpc_url).collect();
    for (i, r) in replicas.iter_mut().enumerate() {
        let mut list = vec![urls[i].clone()];
        list.extend(
            urls.iter()
                .enumerate()
                .filter(|(j, _)| *j != i)
                .map(|(_, u)| u.clone()),
        );
        r.push_env(
            "HODEI_PROCESS_PROVIDER_NAME",
            format!("process-{}", names[i]),
        );
        r.push_env("HODEI_WORKER_SERVER_ADDRESS", list.join(","));
        r.start().await?;
    }
    let clients = replicas
        .iter()
        .map(|r| {
            let options = ClientOptions::new().with_connect_timeout(Duration::from_secs(1));
            HodeiClient::connect_lazy(r.grpc_url(), options)
                .map(|c| (r.name.clone(), c, r.http_url()))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let api = Api::new(clients);
    let plan = plan(cfg, replicas.len());
    let history = Arc::new(Mutex::new(History::new()));
    let result = drive(
        cfg,
        &plan,
        &api,
        &mut replicas,
        env,
        &db_url,
        &marks,
        &history,
        &mut netns,
    )
    .await;

    // Whatever happened: make sure every server runs, so the end state can be read.
    let mut notes = Vec::new();
    for r in replicas.iter_mut() {
        r.thaw();
        if r.pid().is_none()
            && let Err(e) = r.start().await
        {
            notes.push(format!("replica {} did not restart: {e}", r.name));
        }
    }
    let outcome = match result {
        Ok(mut observed) => {
            // The end state, the logs and what a client can read.
            let ids: Vec<String> = lock(&history).jobs.keys().cloned().collect();
            for id in &ids {
                match api.get_job(id).await {
                    Ok(j) => {
                        lock(&history).observe(&j);
                        observed.final_jobs.insert(id.clone(), j);
                    }
                    Err(e) => observed
                        .errors
                        .push(format!("end state of job {id} could not be read: {e}")),
                }
                match api.get_logs(id).await {
                    Ok(l) => {
                        observed.logs.insert(id.clone(), l);
                    }
                    Err(e) => notes.push(format!("logs of {id}: {e}")),
                }
                observed.rest.insert(id.clone(), api.rest_bodies(id).await);
            }
            observed.server_logs = replicas.iter().map(Replica::log).collect();
            for r in replicas.iter() {
                notes.extend(r.exits_at_start().iter().map(|e| {
                    format!(
                        "replica {} exited while starting, started again: {e}",
                        r.name
                    )
                }));
            }
            let marks = markers::read(&marks);
            lock(&history).add_markers(&marks);
            observed.marks = marks;
            observed.notes.extend(notes);
            let h = lock(&history).clone();
            Ok(invariants::check(cfg, &h, &observed))
        }
        Err(e) => Err(e),
    };
    for r in replicas.iter_mut() {
        r.stop();
    }
    for p in procs::marked(&token, &[]) {
        procs::kill9(p.pid);
    }
    drop(netns);
    env.db.drop_database(&db_name).await;
    outcome
}

/// Submits, injects, waits for recovery and scans for orphans; the rest of the
/// record (end state, logs) is read by the caller.
#[allow(clippy::too_many_arguments)]
async fn drive(
    cfg: &RoundConfig,
    plan: &Plan,
    api: &Api,
    replicas: &mut [Replica],
    env: &RoundEnv<'_>,
    db_url: &str,
    marks: &Path,
    history: &Arc<Mutex<History>>,
    netns: &mut Option<NetNs>,
) -> Result<Observed, ChaosError> {
    let mut observed = Observed::default();
    let stop = Arc::new(AtomicBool::new(false));
    let in_flight = Arc::new(AtomicUsize::new(0));

    // Recorder: polls every job that is not final yet.
    let poller = {
        let (api, history, stop) = (api.clone(), Arc::clone(history), Arc::clone(&stop));
        tokio::spawn(async move {
            while !stop.load(Ordering::SeqCst) {
                let open: Vec<String> = lock(&history)
                    .jobs
                    .iter()
                    .filter(|(_, h)| {
                        !h.last
                            .as_ref()
                            .is_some_and(|(s, ..)| invariants::is_final(*s))
                    })
                    .map(|(id, _)| id.clone())
                    .collect();
                for id in open {
                    if let Ok(j) = api.get_job(&id).await {
                        lock(&history).observe(&j);
                    }
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        })
    };

    // Submitter: the planned jobs, paced, until the injections are done.
    let submitter = {
        let (api, history, stop, in_flight) = (
            api.clone(),
            Arc::clone(history),
            Arc::clone(&stop),
            Arc::clone(&in_flight),
        );
        let plan = plan.clone();
        let marks = marks.to_path_buf();
        let token = format!("{}-r{}", env.run_token, cfg.index);
        let round = cfg.index;
        tokio::spawn(async move {
            let mut submitted: BTreeMap<String, JobPlan> = BTreeMap::new();
            let mut cancels = Vec::new();
            for (i, job) in plan.jobs.iter().enumerate() {
                if stop.load(Ordering::SeqCst) && i >= 4 {
                    break;
                }
                tokio::time::sleep(plan.gaps[i]).await;
                let target = plan.targets[i];
                in_flight.fetch_add(1, Ordering::SeqCst);
                let r = api.queue(target, &job.spec(round, &marks, &token)).await;
                in_flight.fetch_sub(1, Ordering::SeqCst);
                match r {
                    Ok(j) => {
                        lock(&history).accepted(&j.id, i, api.name(target), now_ms());
                        lock(&history).observe(&j);
                        submitted.insert(j.id.clone(), job.clone());
                        if let Some(after) = job.cancel_after {
                            let (api, history, id) =
                                (api.clone(), Arc::clone(&history), j.id.clone());
                            cancels.push(tokio::spawn(async move {
                                tokio::time::sleep(after).await;
                                lock(&history).job_event(
                                    &id,
                                    Event::CancelSent {
                                        replica: api.name(target).to_owned(),
                                    },
                                );
                                let ev = match api.cancel(target, &id).await {
                                    Ok(j) => Event::CancelAccepted {
                                        state: j.state,
                                        attempts: j.attempts,
                                    },
                                    Err(e) => Event::CancelRefused { error: e.0 },
                                };
                                lock(&history).job_event(&id, ev);
                            }));
                        }
                    }
                    Err(e) => lock(&history).round_event(Event::SubmitFailed {
                        index: i,
                        error: e.0,
                    }),
                }
            }
            for c in cancels {
                let _ = c.await;
            }
            submitted
        })
    };

    // Injector.
    let mut injected = 0usize;
    for k in 0..cfg.injections {
        let (pause, delay) = plan.injections[k];
        tokio::time::sleep(pause).await;
        let hold = plan.holds[k];
        let token = format!("{}-r{}", env.run_token, cfg.index);
        match inject(
            cfg.fault,
            k,
            delay,
            hold,
            replicas,
            env,
            db_url,
            marks,
            history,
            &in_flight,
            netns.as_mut(),
            &token,
        )
        .await
        {
            Ok(true) => injected += 1,
            Ok(false) => observed.notes.push(format!(
                "injection {} skipped: its trigger was not reached in 30 s",
                k + 1
            )),
            Err(e) => {
                observed.errors.push(format!("injection {}: {e}", k + 1));
                break;
            }
        }
    }
    observed.injected = injected;
    stop.store(true, Ordering::SeqCst);
    let submitted = submitter
        .await
        .map_err(|e| ChaosError::Missing(format!("submitter task: {e}")))?;
    observed.plans = submitted;

    // Recovery window: every accepted job final.
    let t0 = Instant::now();
    loop {
        let open = lock(history)
            .jobs
            .values()
            .filter(|h| {
                !h.last
                    .as_ref()
                    .is_some_and(|(s, ..)| invariants::is_final(*s))
            })
            .count();
        if open == 0 || t0.elapsed() > cfg.recovery_window {
            break;
        }
        // The poller stopped with the flag; poll here.
        let ids: Vec<String> = lock(history).jobs.keys().cloned().collect();
        for id in ids {
            if let Ok(j) = api.get_job(&id).await {
                lock(history).observe(&j);
            }
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let _ = poller.await;
    observed.recovered_within = Some(t0.elapsed());

    // Orphans: no process of the round but the servers may outlive the grace.
    let token = format!("{}-r{}", env.run_token, cfg.index);
    let servers: Vec<u32> = replicas.iter().filter_map(Replica::pid).collect();
    let t1 = Instant::now();
    loop {
        let left = procs::marked(&token, &servers);
        if left.is_empty() {
            break;
        }
        if t1.elapsed() > cfg.orphan_grace {
            observed.orphans = left.iter().map(ToString::to_string).collect();
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    // The namespace (and the host address the servers listen on) stays until the
    // end state is read.
    if let Some(ns) = netns.as_mut() {
        let _ = ns.restore();
    }
    Ok(observed)
}

/// Open executions: start markers without an end marker, as `(job, attempt, pid)`.
fn running(marks: &Path) -> Vec<(String, u32, u32)> {
    let all = markers::read(marks);
    all.iter()
        .filter(|m| m.kind == MarkKind::Start)
        .filter(|s| {
            !all.iter()
                .any(|e| e.kind == MarkKind::End && e.job == s.job && e.pid == s.pid)
        })
        .filter(|s| procs::info(s.pid).is_some())
        .map(|s| (s.job.clone(), s.attempt, s.pid))
        .collect()
}

fn end_count(marks: &Path) -> usize {
    markers::read(marks)
        .iter()
        .filter(|m| m.kind == MarkKind::End)
        .count()
}

/// Waits (polling every `step`) until `cond` holds, at most 30 s.
async fn wait_for(step: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_secs(30) {
        if cond() {
            return true;
        }
        tokio::time::sleep(step).await;
    }
    false
}

/// Injects fault number `k` once: waits for its trigger, then `delay`, does it,
/// holds it for `hold`, clears it. `Ok(false)` when the trigger never came.
#[allow(clippy::too_many_arguments)]
async fn inject(
    fault: Fault,
    k: usize,
    delay: Duration,
    hold: Duration,
    replicas: &mut [Replica],
    env: &RoundEnv<'_>,
    db_url: &str,
    marks: &Path,
    history: &Arc<Mutex<History>>,
    in_flight: &AtomicUsize,
    netns: Option<&mut NetNs>,
    token: &str,
) -> Result<bool, ChaosError> {
    let ms1 = Duration::from_millis(1);
    let ms20 = Duration::from_millis(20);
    let triggered = match fault {
        Fault::KillServerSubmit => wait_for(ms1, || in_flight.load(Ordering::SeqCst) > 0).await,
        Fault::KillServerProvisioning => {
            wait_for(ms20, || {
                procs::marked(token, &[]).iter().any(|p| p.comm == "sleep")
            })
            .await
        }
        Fault::KillServerResult => {
            let before = end_count(marks);
            wait_for(ms1, || end_count(marks) > before).await
        }
        _ => wait_for(ms20, || !running(marks).is_empty()).await,
    };
    if !triggered {
        return Ok(false);
    }
    tokio::time::sleep(delay).await;
    let n = k + 1;
    let mark = |what: String, injected: bool| {
        let ev = if injected {
            Event::FaultInjected { what }
        } else {
            Event::FaultCleared { what }
        };
        lock(history).round_event(ev);
    };
    match fault {
        Fault::KillServerSubmit
        | Fault::KillServerProvisioning
        | Fault::KillServerRun
        | Fault::KillServerResult => {
            let r = &mut replicas[0];
            r.kill9();
            mark(format!("#{n} {fault}: kill -9 of the server"), true);
            tokio::time::sleep(hold).await;
            r.start().await?;
            mark(format!("#{n} server restarted"), false);
        }
        Fault::KillAgent => {
            let open = running(marks);
            let Some((job, _, pid)) = open.first().cloned() else {
                return Ok(false);
            };
            let Some(agent) = procs::info(pid).and_then(|p| procs::info(p.ppid)) else {
                return Ok(false);
            };
            procs::kill9(agent.pid);
            mark(
                format!("#{n} {fault}: kill -9 of {agent} running job {job}"),
                true,
            );
            mark(format!("#{n} agent killed"), false);
        }
        Fault::SigstopLeader => {
            let holder = postgres::lease_holder(db_url).await.ok().flatten();
            let i = replicas
                .iter()
                .position(|r| holder.is_some() && r.holder() == holder)
                .unwrap_or(0);
            let r = &replicas[i];
            r.freeze();
            mark(
                format!(
                    "#{n} {fault}: SIGSTOP of replica {} ({})",
                    r.name,
                    if holder.is_some() && r.holder() == holder {
                        "lease holder"
                    } else {
                        "no current holder found"
                    }
                ),
                true,
            );
            tokio::time::sleep(hold).await;
            r.thaw();
            mark(format!("#{n} SIGCONT of replica {}", r.name), false);
        }
        Fault::PgRestart => {
            let Some(pg) = env.db.own() else {
                return Err(ChaosError::Missing(
                    "pg-restart needs a Postgres this run owns (no --database-url)".into(),
                ));
            };
            pg.stop_immediate()?;
            mark(format!("#{n} {fault}: pg_ctl stop -m immediate"), true);
            tokio::time::sleep(hold).await;
            pg.start_again()?;
            mark(format!("#{n} Postgres started"), false);
        }
        Fault::Netcut => {
            let Some(ns) = netns else {
                return Err(ChaosError::Missing(
                    "netcut round without a namespace".into(),
                ));
            };
            ns.cut()?;
            mark(format!("#{n} {fault}: agents' network dropped"), true);
            tokio::time::sleep(hold).await;
            ns.restore()?;
            mark(format!("#{n} network restored"), false);
        }
    }
    Ok(true)
}
