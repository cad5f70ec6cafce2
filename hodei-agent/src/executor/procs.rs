//! Killing a job's processes: its process group, and anything that escaped it.

use nix::errno::Errno;
use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::Pid;

/// Name of the environment variable that marks every process of one job.
pub const MARKER_ENV: &str = "HODEI_JOB_MARKER";

/// Sends `signal` to the process group `pgid`. A group that no longer exists is not an error.
pub(crate) fn signal_group(pgid: u32, signal: Signal) {
    let Ok(raw) = i32::try_from(pgid) else {
        return;
    };
    if raw <= 1 {
        return;
    }
    match killpg(Pid::from_raw(raw), signal) {
        Ok(()) | Err(Errno::ESRCH) => {}
        Err(e) => tracing::debug!(pgid, ?signal, error = %e, "killpg failed"),
    }
}

/// SIGKILLs every process whose initial environment contains `HODEI_JOB_MARKER=<marker>`
/// (processes that left the job's process group with `setsid`, double forks, …), scanning
/// `/proc/*/environ`. Repeats while it finds some, since a process may fork while being
/// killed. Returns how many processes were killed.
///
/// A process that re-executes itself with a cleared environment loses the marker and cannot
/// be found this way.
pub(crate) fn kill_marked(marker: &str) -> usize {
    let needle = format!("{MARKER_ENV}={marker}");
    let own = std::process::id();
    let mut total = 0;
    for _pass in 0..10 {
        let killed = sweep(needle.as_bytes(), own);
        total += killed;
        if killed == 0 {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    total
}

fn sweep(needle: &[u8], own: u32) -> usize {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return 0;
    };
    let mut killed = 0;
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<i32>().ok())
        else {
            continue;
        };
        if u32::try_from(pid).is_ok_and(|p| p == own) || pid <= 1 {
            continue;
        }
        let Ok(environ) = std::fs::read(entry.path().join("environ")) else {
            continue;
        };
        if environ.split(|b| *b == 0).any(|kv| kv == needle) {
            match kill(Pid::from_raw(pid), Signal::SIGKILL) {
                Ok(()) => killed += 1,
                Err(e) => tracing::debug!(pid, error = %e, "killing marked process failed"),
            }
        }
    }
    killed
}
