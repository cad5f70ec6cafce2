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
///
/// `first_pid`: the job's first process and when it was spawned. When process ids cannot
/// have wrapped around since (see [`PidWindow`]), only processes created after it can carry
/// the marker, so only their environments are read: a handful instead of every process's.
pub(crate) fn kill_marked(marker: &str, first_pid: Option<(u32, std::time::Instant)>) -> usize {
    let needle = format!("{MARKER_ENV}={marker}");
    let own = std::process::id();
    let mut total = 0;
    for _pass in 0..10 {
        let window = first_pid.and_then(|(pid, at)| PidWindow::since(pid, at.elapsed()));
        let killed = sweep(needle.as_bytes(), own, window);
        total += killed;
        if killed == 0 {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    total
}

/// The process ids handed out since a given one: Linux allocates them cyclically, so they
/// are `first..=last` (or, after a wrap, `first..` and `..=last`), where `last` is the pid
/// namespace's `ns_last_pid`. Only valid while fewer than `pid_max` processes were created
/// meanwhile, which the caller ensures by using it for short jobs only.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct PidWindow {
    first: u32,
    last: u32,
}

impl PidWindow {
    /// Process creations per second assumed possible at most (a fork bomb on a large host
    /// reaches tens of thousands).
    pub(crate) const MAX_FORKS_PER_SEC: f64 = 100_000.0;

    /// The window from `first` (the job's first process, created `age` ago) to the last pid
    /// allocated now. `None` (scan everything) when the kernel does not tell, or when in
    /// `age` more processes than `pid_max` could have been created at
    /// [`Self::MAX_FORKS_PER_SEC`], so the ids may have wrapped past `first`.
    pub(crate) fn since(first: u32, age: std::time::Duration) -> Option<Self> {
        let pid_max = read_u32("/proc/sys/kernel/pid_max")?;
        if age.as_secs_f64() * Self::MAX_FORKS_PER_SEC >= f64::from(pid_max) {
            return None;
        }
        let last = read_u32("/proc/sys/kernel/ns_last_pid")?;
        Some(Self { first, last })
    }

    /// How many pids the window holds (`pid_max` bounds a wrapped one).
    fn len(self, pid_max: u32) -> u64 {
        if self.first <= self.last {
            u64::from(self.last - self.first) + 1
        } else {
            u64::from(pid_max.saturating_sub(self.first)) + u64::from(self.last)
        }
    }

    /// The pids of the window, in allocation order.
    fn pids(self, pid_max: u32) -> impl Iterator<Item = u32> {
        let wrapped = self.first > self.last;
        let head_end = if wrapped {
            pid_max.saturating_sub(1)
        } else {
            self.last
        };
        let tail = wrapped.then_some(1..=self.last);
        (self.first..=head_end).chain(tail.into_iter().flatten())
    }

    /// Whether `pid` was allocated within the window.
    pub(crate) fn contains(self, pid: u32) -> bool {
        if self.first <= self.last {
            (self.first..=self.last).contains(&pid)
        } else {
            pid >= self.first || pid <= self.last
        }
    }
}

/// A window at most this long is probed pid by pid; a longer one is filtered
/// from a listing of `/proc`. Listing `/proc` walks every process of the host
/// and was a sixth of the agent's CPU per job in a throughput run; a short
/// job's window holds a handful of pids.
const PROBE_AT_MOST: u64 = 4096;

fn sweep(needle: &[u8], own: u32, window: Option<PidWindow>) -> usize {
    let pid_max = window.and_then(|_| read_u32("/proc/sys/kernel/pid_max"));
    let candidates: Box<dyn Iterator<Item = u32>> = match (window, pid_max) {
        (Some(w), Some(max)) if w.len(max) <= PROBE_AT_MOST => Box::new(w.pids(max)),
        _ => {
            let Ok(entries) = std::fs::read_dir("/proc") else {
                return 0;
            };
            Box::new(
                entries
                    .flatten()
                    .filter_map(|e| e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()))
                    // Older than the job: cannot carry its marker.
                    .filter(move |p| window.is_none_or(|w| w.contains(*p))),
            )
        }
    };
    let mut killed = 0;
    for pid in candidates {
        if pid == own || pid <= 1 {
            continue;
        }
        // A pid of the window that is free, or a thread's id: no such
        // process, or the environment of the thread's process.
        let Ok(environ) = std::fs::read(format!("/proc/{pid}/environ")) else {
            continue;
        };
        if environ.split(|b| *b == 0).any(|kv| kv == needle) {
            let Ok(raw) = i32::try_from(pid) else {
                continue;
            };
            match kill(Pid::from_raw(raw), Signal::SIGKILL) {
                Ok(()) => killed += 1,
                Err(e) => tracing::debug!(pid, error = %e, "killing marked process failed"),
            }
        }
    }
    killed
}

fn read_u32(path: &str) -> Option<u32> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pid_window_follows_the_cyclic_allocation() {
        let w = PidWindow {
            first: 100,
            last: 200,
        };
        assert!(w.contains(100) && w.contains(150) && w.contains(200));
        assert!(!w.contains(99) && !w.contains(201) && !w.contains(5));
        // Wrapped around pid_max since the job started.
        let w = PidWindow {
            first: 4_000_000,
            last: 350,
        };
        assert!(w.contains(4_000_000) && w.contains(4_194_303) && w.contains(300));
        assert!(w.contains(350) && !w.contains(351) && !w.contains(3_999_999));
    }

    #[test]
    fn a_window_lists_its_pids_across_a_wrap() {
        let w = PidWindow {
            first: 10,
            last: 13,
        };
        assert_eq!(w.len(100), 4);
        assert_eq!(w.pids(100).collect::<Vec<_>>(), [10, 11, 12, 13]);
        // pid_max 100: pids 1..=99 exist (0 is never allocated).
        let w = PidWindow { first: 97, last: 2 };
        assert_eq!(w.pids(100).collect::<Vec<_>>(), [97, 98, 99, 1, 2]);
        assert!(w.pids(100).all(|p| w.contains(p)));
        assert_eq!(w.pids(100).count() as u64, w.len(100));
    }

    #[test]
    fn a_marked_process_in_the_window_is_killed_by_probing() {
        let marker = format!("probe-{}", std::process::id());
        let me = std::process::id();
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .env(MARKER_ENV, &marker)
            .spawn()
            .unwrap();
        let w = PidWindow::since(child.id(), std::time::Duration::from_millis(1))
            .expect("ns_last_pid and pid_max readable");
        let pid_max = read_u32("/proc/sys/kernel/pid_max").unwrap();
        assert!(
            w.len(pid_max) <= PROBE_AT_MOST,
            "{w:?}: a fresh window is short"
        );
        let needle = format!("{MARKER_ENV}={marker}");
        // `spawn` returns when the child has the new program's memory, which
        // may be an instant before the kernel has set its environment up.
        let marked = || {
            std::fs::read(format!("/proc/{}/environ", child.id()))
                .is_ok_and(|e| e.split(|b| *b == 0).any(|kv| kv == needle.as_bytes()))
        };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while !marked() && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        assert_eq!(sweep(needle.as_bytes(), me, Some(w)), 1);
        let status = child.wait().unwrap();
        assert!(!status.success(), "sleep was killed: {status}");
    }

    #[test]
    fn an_old_job_scans_everything() {
        // 32 768 pids at 100 000 forks/s: wrapped after 0.33 s.
        assert!(PidWindow::since(1, std::time::Duration::from_secs(3600)).is_none());
    }

    #[test]
    fn the_kernel_tells_the_last_pid() {
        let me = std::process::id();
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let w = PidWindow::since(me, std::time::Duration::from_millis(1))
            .expect("ns_last_pid and pid_max readable");
        assert!(w.contains(child.id()), "{w:?} vs child {}", child.id());
        child.wait().unwrap();
    }
}
