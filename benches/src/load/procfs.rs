//! Reading process memory, CPU time and children from `/proc` (Linux).

use std::time::Duration;

/// Memory figures of one process, in bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Memory {
    /// `VmRSS`: resident set size (anonymous + file-backed + shared memory).
    pub rss: u64,
    /// `RssAnon`: resident anonymous memory (the process's own heap and stacks).
    pub anon: u64,
    /// `VmHWM`: peak resident set size.
    pub peak: u64,
}

fn status_kib(status: &str, key: &str) -> Option<u64> {
    status.lines().find_map(|l| {
        let rest = l.strip_prefix(key)?.strip_prefix(':')?;
        rest.split_whitespace().next()?.parse::<u64>().ok()
    })
}

/// Memory of process `pid`, or `None` when it is gone.
pub fn memory(pid: u32) -> Option<Memory> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    Some(Memory {
        rss: status_kib(&status, "VmRSS")? * 1024,
        anon: status_kib(&status, "RssAnon").unwrap_or(0) * 1024,
        peak: status_kib(&status, "VmHWM").unwrap_or(0) * 1024,
    })
}

/// Fields of `/proc/<pid>/stat` after the command name (field 3 onwards).
fn stat_fields(pid: u32) -> Option<Vec<String>> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = stat.rsplit_once(')')?.1;
    Some(rest.split_whitespace().map(str::to_owned).collect())
}

/// CPU time (user + system) process `pid` has used so far.
pub fn cpu_time(pid: u32) -> Option<Duration> {
    let f = stat_fields(pid)?;
    // Fields 14 (utime) and 15 (stime), counted from 1; `f` starts at field 3.
    let utime: u64 = f.get(11)?.parse().ok()?;
    let stime: u64 = f.get(12)?.parse().ok()?;
    let hz = clock_ticks_per_second();
    Some(Duration::from_secs_f64((utime + stime) as f64 / hz))
}

/// CPU time (user + system) of the children process `pid` has waited for
/// (`cutime` + `cstime`): the jobs an agent ran and reaped, or the processes a
/// baseline spawned.
pub fn children_cpu_time(pid: u32) -> Option<Duration> {
    let f = stat_fields(pid)?;
    // Fields 16 (cutime) and 17 (cstime), counted from 1.
    let cutime: u64 = f.get(13)?.parse().ok()?;
    let cstime: u64 = f.get(14)?.parse().ok()?;
    let hz = clock_ticks_per_second();
    Some(Duration::from_secs_f64((cutime + cstime) as f64 / hz))
}

/// `CLK_TCK`; 100 on every Linux this runs on (read from `getconf` when available).
fn clock_ticks_per_second() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse::<f64>().ok())
        .filter(|v| *v > 0.0)
        .unwrap_or(100.0)
}

/// Processes whose parent is `parent` and whose command name is `comm`.
pub fn children_named(parent: u32, comm: &str) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for entry in dir.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
            continue;
        };
        // The kernel truncates comm to 15 bytes.
        let name = &stat[open + 1..close];
        let want: String = comm.chars().take(15).collect();
        if name != want {
            continue;
        }
        let ppid = stat[close + 1..]
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse::<u32>().ok());
        if ppid == Some(parent) {
            out.push(pid);
        }
    }
    out.sort_unstable();
    out
}

/// Bytes as MiB, for printing.
pub fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_own_memory_and_cpu() {
        let me = std::process::id();
        let m = memory(me).unwrap();
        assert!(m.rss > 0 && m.peak >= m.rss);
        assert!(cpu_time(me).is_some());
    }

    #[test]
    fn finds_a_child_by_name() {
        let mut child = std::process::Command::new("sleep")
            .arg("5")
            .spawn()
            .unwrap();
        let found = children_named(std::process::id(), "sleep");
        let _ = child.kill();
        let _ = child.wait();
        assert!(found.contains(&child.id()), "{found:?}");
    }
}
