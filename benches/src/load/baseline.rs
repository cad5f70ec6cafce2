//! Raw baselines measured in the same run as the Hodei figures, so that each
//! figure can be read as a ratio that holds on a noisy machine.

use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, BufReader};

use super::LoadError;
use super::stats::Samples;

/// Spawns `echo x` `n` times (tokio::process) and times spawn → first line read.
pub async fn spawn_first_line(n: usize) -> Result<Samples, LoadError> {
    let mut samples = Samples::with_capacity(n);
    for _ in 0..n {
        let t0 = Instant::now();
        let mut child = tokio::process::Command::new("echo")
            .arg("x")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| LoadError::io("spawn echo", e))?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| LoadError::Check("echo has no stdout".into()))?;
        let mut lines = BufReader::new(stdout).lines();
        let line = lines
            .next_line()
            .await
            .map_err(|e| LoadError::io("read echo output", e))?;
        samples.push(t0.elapsed());
        if line.as_deref() != Some("x") {
            return Err(LoadError::Check(format!("echo printed {line:?}")));
        }
        child
            .wait()
            .await
            .map_err(|e| LoadError::io("reap echo", e))?;
    }
    Ok(samples)
}

/// Spawns and reaps `true` `n` times from `threads` threads at once
/// (std::process, one blocking thread each); returns processes per second.
pub fn spawn_reap_rate(n: usize, threads: usize) -> Result<f64, LoadError> {
    spawn_reap(n, threads).map(|r| r.per_second)
}

/// What a raw spawn+reap loop achieved and what it cost.
#[derive(Debug, Clone, Copy)]
pub struct SpawnReap {
    /// Processes spawned and reaped per second.
    pub per_second: f64,
    /// CPU time per process of the spawning side (this process).
    pub parent_cpu: Duration,
    /// CPU time per process of the processes themselves (`true`).
    pub child_cpu: Duration,
}

/// [`spawn_reap_rate`] with the CPU it used per process, from `/proc/self/stat`
/// (this process, and the children it reaped).
pub fn spawn_reap(n: usize, threads: usize) -> Result<SpawnReap, LoadError> {
    let me = std::process::id();
    let (own0, kids0) = (
        super::procfs::cpu_time(me).unwrap_or_default(),
        super::procfs::children_cpu_time(me).unwrap_or_default(),
    );
    let per_second = spawn_reap_loop(n, threads)?;
    let (own, kids) = (
        super::procfs::cpu_time(me).unwrap_or_default(),
        super::procfs::children_cpu_time(me).unwrap_or_default(),
    );
    let threads = threads.max(1);
    let spawned = n.div_ceil(threads) * threads;
    let per = |d: Duration| d.checked_div(u32::try_from(spawned).unwrap_or(u32::MAX).max(1));
    Ok(SpawnReap {
        per_second,
        parent_cpu: per(own.saturating_sub(own0)).unwrap_or_default(),
        child_cpu: per(kids.saturating_sub(kids0)).unwrap_or_default(),
    })
}

fn spawn_reap_loop(n: usize, threads: usize) -> Result<f64, LoadError> {
    let threads = threads.max(1);
    let per = n.div_ceil(threads);
    let t0 = Instant::now();
    let results: Vec<Result<(), LoadError>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                s.spawn(move || -> Result<(), LoadError> {
                    for _ in 0..per {
                        let st = std::process::Command::new("true")
                            .stdin(Stdio::null())
                            .stdout(Stdio::null())
                            .stderr(Stdio::null())
                            .status()
                            .map_err(|e| LoadError::io("spawn true", e))?;
                        if !st.success() {
                            return Err(LoadError::Check(format!("true exited {st}")));
                        }
                    }
                    Ok(())
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(LoadError::Check("spawn thread panicked".into())))
            })
            .collect()
    });
    let elapsed = t0.elapsed();
    for r in results {
        r?;
    }
    Ok((per * threads) as f64 / elapsed.as_secs_f64())
}

/// Runs `script` with bash, its output piped to `wc -c`; returns (bytes counted, time).
pub async fn pipe_to_wc(script: &str) -> Result<(u64, Duration), LoadError> {
    let t0 = Instant::now();
    let out = tokio::process::Command::new("bash")
        .arg("-c")
        .arg(format!("set -euo pipefail; ( {script} ) | wc -c"))
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .await
        .map_err(|e| LoadError::io("run generator | wc -c", e))?;
    let elapsed = t0.elapsed();
    if !out.status.success() {
        return Err(LoadError::Check(format!(
            "generator | wc -c exited {}",
            out.status
        )));
    }
    let bytes = String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse::<u64>()
        .map_err(|e| LoadError::Check(format!("wc -c printed something else: {e}")))?;
    Ok((bytes, elapsed))
}

/// Resident memory of a trivial exec'd process (`sleep`), a floor for process RSS.
pub fn trivial_process_rss() -> Result<u64, LoadError> {
    let mut child = std::process::Command::new("sleep")
        .arg("30")
        .stdin(Stdio::null())
        .spawn()
        .map_err(|e| LoadError::io("spawn sleep", e))?;
    std::thread::sleep(Duration::from_millis(200));
    let m = super::procfs::memory(child.id());
    let _ = child.kill();
    let _ = child.wait();
    m.map(|m| m.rss)
        .ok_or_else(|| LoadError::Check("could not read the RSS of sleep".into()))
}
