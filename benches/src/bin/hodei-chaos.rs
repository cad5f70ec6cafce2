//! `hodei-chaos`: seeded fault-injection suite for Hodei.
//!
//! Drives the real `hodei-server` and `hodei-worker` binaries on a real Postgres
//! (a throwaway cluster it owns, unless `--database-url` / `HODEI_TEST_DATABASE_URL`
//! names one), injects faults at random points — `kill -9` of the server during
//! submit / provisioning / run / result, `kill -9` of an agent, `SIGSTOP` of the
//! lease-holding replica, a Postgres crash-restart, a network cut between agents
//! and server — and checks invariants on the recorded history. Exits non-zero when
//! any invariant is violated, printing the violating job's history.
//!
//! ```text
//! cargo build -p hodei-examples -p hodei-benches --all-features --bins
//! target/debug/hodei-chaos --quick --seed 1
//! target/debug/hodei-chaos --seed 7 --rounds 9 --injections 3
//! ```

use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::Parser;
use hodei_benches::chaos::ChaosError;
use hodei_benches::chaos::faults::Fault;
use hodei_benches::chaos::invariants::RoundOutcome;
use hodei_benches::chaos::postgres::{Database, OwnCluster};
use hodei_benches::chaos::report;
use hodei_benches::chaos::round::{self, RoundConfig, RoundEnv};
use hodei_benches::load::server::Binaries;

/// Seeded fault-injection suite: real server, real agents, real Postgres.
#[derive(Debug, Parser)]
#[command(name = "hodei-chaos", version, about)]
struct Args {
    /// Seed of every random choice (jobs, pauses, injection points); printed, so a
    /// run can be replayed. Default: from the clock.
    #[arg(long)]
    seed: Option<u64>,
    /// Faults to inject (comma-separated). Default: all; with --quick the cheap ones.
    #[arg(long, value_enum, value_delimiter = ',')]
    faults: Vec<Fault>,
    /// Rounds per fault (each with a fresh database and servers).
    #[arg(long)]
    rounds: Option<usize>,
    /// Injections of the fault per round.
    #[arg(long)]
    injections: Option<usize>,
    /// A short subset: the cheap faults, one round each, one injection.
    #[arg(long)]
    quick: bool,
    /// Postgres to use instead of a cluster of its own (then `pg-restart` is skipped).
    #[arg(long, env = "HODEI_TEST_DATABASE_URL")]
    database_url: Option<String>,
    /// Directory holding hodei-server and hodei-worker (default: next to this executable).
    #[arg(long)]
    bin_dir: Option<PathBuf>,
    /// Seconds after the last fault cleared within which every job must be final.
    #[arg(long, default_value_t = 90)]
    recovery_secs: u64,
    /// Seconds after that within which every worker process of the round must be gone.
    #[arg(long, default_value_t = 20)]
    orphan_grace_secs: u64,
    /// Print every job's history, not only the violating ones'.
    #[arg(long)]
    verbose: bool,
}

/// SplitMix64: the round's seed from the run's seed and the round number.
fn round_seed(seed: u64, round: usize) -> u64 {
    let mut z = seed.wrapping_add((round as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let args = Args::parse();
    match run(args).await {
        Ok(true) => std::process::ExitCode::SUCCESS,
        Ok(false) => std::process::ExitCode::FAILURE,
        Err(e) => {
            eprintln!("hodei-chaos: {e}");
            std::process::ExitCode::from(2)
        }
    }
}

async fn run(args: Args) -> Result<bool, ChaosError> {
    let seed = args.seed.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64)
    });
    let mut faults = if !args.faults.is_empty() {
        args.faults.clone()
    } else if args.quick {
        Fault::QUICK.to_vec()
    } else {
        Fault::ALL.to_vec()
    };
    faults.dedup();
    let rounds = args.rounds.unwrap_or(if args.quick { 1 } else { 3 });
    let injections = args.injections.unwrap_or(if args.quick { 1 } else { 3 });
    let bins = Binaries::locate(args.bin_dir.as_deref())
        .map_err(|e| ChaosError::Missing(e.to_string()))?;
    let db = match &args.database_url {
        Some(url) => Database::External(url.clone()),
        None => Database::Own(OwnCluster::start()?),
    };
    if db.own().is_none() && faults.contains(&Fault::PgRestart) {
        println!("note: pg-restart skipped: it needs a Postgres of its own (no --database-url)");
        faults.retain(|f| *f != Fault::PgRestart);
    }
    let work = tempfile::Builder::new()
        .prefix("hodei-chaos")
        .tempdir()
        .map_err(|e| ChaosError::io("work dir", e))?;
    let run_token = format!("hodei-chaos-{}-{seed:x}", std::process::id());

    println!(
        "## hodei-chaos{} --seed {seed}",
        if args.quick { " --quick" } else { "" }
    );
    println!();
    println!(
        "faults: {}; {rounds} round(s) each, {injections} injection(s) per round; binaries: {}; \
         Postgres: {}",
        faults
            .iter()
            .map(|f| f.name())
            .collect::<Vec<_>>()
            .join(","),
        bins.server.display(),
        if db.own().is_some() {
            "own throwaway cluster"
        } else {
            "external"
        }
    );
    println!();

    let env = RoundEnv {
        bins: &bins,
        db: &db,
        work_dir: work.path(),
        run_token: &run_token,
    };
    let t0 = Instant::now();
    let mut outcomes: Vec<RoundOutcome> = Vec::new();
    let mut index = 0usize;
    for _ in 0..rounds {
        for &fault in &faults {
            index += 1;
            let cfg = RoundConfig {
                index,
                fault,
                injections,
                seed: round_seed(seed, index),
                recovery_window: Duration::from_secs(args.recovery_secs),
                orphan_grace: Duration::from_secs(args.orphan_grace_secs),
                verbose: args.verbose,
            };
            let started = Instant::now();
            let outcome = match round::run(&cfg, &env).await {
                Ok(o) => o,
                Err(e) => {
                    // A round that could not even be set up is reported, and the run
                    // goes on with the next.
                    println!("round {index} ({fault}): could not run: {e}");
                    continue;
                }
            };
            print_round(&outcome, started.elapsed());
            outcomes.push(outcome);
        }
    }
    println!();
    println!(
        "### hodei-chaos --seed {seed}: {} rounds in {:.0} s",
        outcomes.len(),
        t0.elapsed().as_secs_f64()
    );
    println!();
    println!("{}", report::table(&outcomes));
    let violations: usize = outcomes.iter().map(|o| o.violations.len()).sum();
    let ran = outcomes.len();
    let planned = rounds * faults.len();
    println!();
    if violations > 0 || ran < planned {
        println!(
            "FAILED: {violations} violation(s), {} of {planned} round(s) could not run; replay \
             with --seed {seed}; servers' logs kept in {}",
            planned - ran,
            work.keep().display()
        );
        Ok(false)
    } else {
        println!("every invariant held ({planned} rounds)");
        Ok(true)
    }
}

fn print_round(o: &RoundOutcome, took: Duration) {
    let worst = o.recovery.iter().max().copied().unwrap_or_default();
    println!(
        "round {} ({}, seed {}): {} fault(s), {} jobs, {} violation(s), {} re-run(s), \
         recover max {:.1} s, {:.0} s",
        o.index,
        o.fault,
        o.seed,
        o.injected,
        o.jobs,
        o.violations.len(),
        o.reruns,
        worst.as_secs_f64(),
        took.as_secs_f64()
    );
    for n in &o.notes {
        println!("  note: {n}");
    }
    for v in &o.violations {
        print!("{v}");
    }
}
