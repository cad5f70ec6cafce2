//! Finding the processes of one round in `/proc` by the environment marker every
//! one of them carries (`CHAOS_RUN=<token>`: set on the server, inherited by its
//! agents and the slow-start wrappers, and put in every job's environment).

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// Environment variable marking the processes of one round.
pub const MARKER_ENV: &str = "CHAOS_RUN";

/// A live process of the round.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcInfo {
    /// Process id.
    pub pid: u32,
    /// Parent process id.
    pub ppid: u32,
    /// Command name (`/proc/<pid>/comm`, at most 15 bytes).
    pub comm: String,
}

impl std::fmt::Display for ProcInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} (pid {}, parent {})", self.comm, self.pid, self.ppid)
    }
}

/// `pid`'s command name and parent, or `None` when it is gone or a zombie.
pub fn info(pid: u32) -> Option<ProcInfo> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let open = stat.find('(')?;
    let close = stat.rfind(')')?;
    let mut rest = stat[close + 1..].split_whitespace();
    let state = rest.next()?;
    if state == "Z" || state == "X" {
        return None;
    }
    let ppid = rest.next()?.parse().ok()?;
    Some(ProcInfo {
        pid,
        ppid,
        comm: stat[open + 1..close].to_owned(),
    })
}

/// Every live process whose environment holds `CHAOS_RUN=<token>`, minus `except`
/// (the servers, which carry the marker too).
pub fn marked(token: &str, except: &[u32]) -> Vec<ProcInfo> {
    let needle = format!("{MARKER_ENV}={token}");
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
        if except.contains(&pid) {
            continue;
        }
        let Ok(env) = std::fs::read(format!("/proc/{pid}/environ")) else {
            continue;
        };
        if !env.split(|b| *b == 0).any(|kv| kv == needle.as_bytes()) {
            continue;
        }
        if let Some(i) = info(pid) {
            out.push(i);
        }
    }
    out.sort_by_key(|p| p.pid);
    out
}

/// `kill -9` of `pid` (best effort).
pub fn kill9(pid: u32) {
    if let Ok(p) = i32::try_from(pid) {
        let _ = kill(Pid::from_raw(p), Signal::SIGKILL);
    }
}

/// Sends `signal` to `pid` (best effort).
pub fn signal(pid: u32, signal: Signal) {
    if let Ok(p) = i32::try_from(pid) {
        let _ = kill(Pid::from_raw(p), signal);
    }
}
