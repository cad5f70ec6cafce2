//! Worker processes this provider did not start in this process: the
//! agents a previous server process (killed, crashed) left running.
//!
//! Each worker process carries its provider's id in its environment
//! ([`OWNER_ENV`]) and its handle records the process's `pid starttime`, so a
//! restarted server can still destroy the workers it finds in its registry
//! (they are no longer its children: it can signal them, not wait for them),
//! and can find the ones its registry does not know at all.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use hodei_core::{ProviderId, WorkerHandle, WorkerId};
use nix::sys::signal::{Signal, killpg};

use crate::host::{owner_tag, to_pid};

/// Environment variable naming the provider that started a worker process.
pub const OWNER_ENV: &str = "HODEI_PROCESS_PROVIDER_ID";
/// Handle metadata key holding the process's `pid starttime`.
pub(super) const TAG_KEY: &str = "process_tag";

/// A worker process still running, found through `/proc`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Leftover {
    pub pid: u32,
    pub worker_id: Option<WorkerId>,
}

/// Processes whose environment names `provider` as their owner.
pub(super) fn find(provider: ProviderId) -> Vec<Leftover> {
    let owner = format!("{OWNER_ENV}={provider}");
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut found = Vec::new();
    for e in dir.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(environ) = std::fs::read(format!("/proc/{pid}/environ")) else {
            continue;
        };
        let mut mine = false;
        let mut worker_id = None;
        for kv in environ.split(|b| *b == 0) {
            if kv == owner.as_bytes() {
                mine = true;
            } else if let Some(v) = kv.strip_prefix(b"HODEI_WORKER_ID=") {
                worker_id = std::str::from_utf8(v).ok().and_then(|s| s.parse().ok());
            }
        }
        if mine && !is_zombie(pid) {
            found.push(Leftover { pid, worker_id });
        }
    }
    found
}

/// A zombie has exited; only its parent (or init) can reap it.
fn is_zombie(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            let rest = &s[s.rfind(')')? + 1..];
            rest.split_whitespace().next().map(|st| st == "Z")
        })
        .unwrap_or(false)
}

/// Leftover processes of `provider` whose worker `known` does not list, and
/// older than `min_age`: a worker started by another replica sharing this
/// provider's id after `known` was read is younger, and is left alone.
pub(super) fn orphans(
    provider: ProviderId,
    known: &HashSet<WorkerId>,
    min_age: Duration,
) -> Vec<Leftover> {
    find(provider)
        .into_iter()
        .filter(|l| l.worker_id.is_none_or(|w| !known.contains(&w)))
        .filter(|l| age(l.pid).is_some_and(|a| a >= min_age))
        .collect()
}

/// How long ago a process started (`/proc` counts in USER_HZ, 100 per second).
fn age(pid: u32) -> Option<Duration> {
    const USER_HZ: f64 = 100.0;
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 1..];
    let start_ticks: f64 = rest.split_whitespace().nth(19)?.parse().ok()?;
    let uptime: f64 = std::fs::read_to_string("/proc/uptime")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    Some(Duration::from_secs_f64(
        (uptime - start_ticks / USER_HZ).max(0.0),
    ))
}

/// Whether the process the handle names is still the same process.
pub(super) fn still_running(handle: &WorkerHandle) -> Option<u32> {
    let tag = handle.metadata.get(TAG_KEY)?;
    let pid: u32 = tag.split_whitespace().next()?.parse().ok()?;
    (owner_tag(pid).as_deref() == Some(tag.as_str()) && !is_zombie(pid)).then_some(pid)
}

/// SIGTERM to the process group, up to `grace` for the leader to exit, then
/// SIGKILL. Returns whether it is gone.
pub(super) async fn stop(pid: u32, grace: Duration) -> bool {
    let tag = owner_tag(pid);
    let gone = || owner_tag(pid) != tag || is_zombie(pid);
    let _ = killpg(to_pid(pid), Signal::SIGTERM);
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        if gone() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = killpg(to_pid(pid), Signal::SIGKILL);
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if gone() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}
