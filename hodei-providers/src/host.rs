//! Host-side helpers shared by the providers that run workers as local
//! processes (the agent itself, QEMU, Firecracker): `/proc` parsing, the host's
//! size, process identity that survives pid reuse, hardware KVM detection.

// Each provider uses a part; with only some provider features on, the rest is unused.
#![cfg_attr(
    not(all(feature = "process", feature = "qemu", feature = "firecracker")),
    allow(dead_code, unreachable_pub)
)]

use std::path::Path;
use std::sync::{Mutex, MutexGuard};
use std::time::Instant;

use hodei_core::{ProviderCapabilities, ProviderError, ResourceUsage};
use nix::unistd::Pid;

/// `sysconf(_SC_CLK_TCK)` on every Linux the project runs on.
pub(crate) const CLOCK_TICKS_PER_SEC: f64 = 100.0;

/// Locks a mutex, ignoring poisoning: a panic while holding one of these short
/// locks leaves consistent data.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// An internal error naming what failed.
pub(crate) fn internal(what: &str, e: impl std::fmt::Display) -> ProviderError {
    ProviderError::Internal(format!("{what}: {e}"))
}

/// A pid for `nix` (an out-of-range one names no process).
pub(crate) fn to_pid(pid: u32) -> Pid {
    Pid::from_raw(i32::try_from(pid).unwrap_or(i32::MAX))
}

/// Creates `dir` afresh (removing what was there) with mode 0700.
pub(crate) fn create_private_dir(dir: &Path) -> Result<(), ProviderError> {
    use std::os::unix::fs::DirBuilderExt;
    let _ = std::fs::remove_dir_all(dir);
    std::fs::DirBuilder::new()
        .mode(0o700)
        .recursive(true)
        .create(dir)
        .map_err(|e| internal(&format!("cannot create {}", dir.display()), e))
}

/// utime + stime of a process, in clock ticks, from `/proc/<pid>/stat`.
pub(crate) fn proc_cpu_ticks(stat: &str) -> Option<u64> {
    // The command name (field 2) may hold spaces and parentheses: split after the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // `rest` starts at field 3 (state); utime and stime are fields 14 and 15.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// A `Key:   123 kB` value of `/proc/<pid>/status` or `/proc/meminfo`.
pub(crate) fn proc_kb(text: &str, key: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
}

/// `pid starttime` of a process: identifies it even if the pid is reused later.
pub(crate) fn owner_tag(pid: u32) -> Option<String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 1..];
    // Field 22 (starttime); `rest` starts at field 3.
    let start = rest.split_whitespace().nth(19)?;
    Some(format!("{pid} {start}"))
}

/// `MemTotal` from `/proc/meminfo`, in MiB.
pub(crate) fn host_memory_mb() -> Option<u64> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    Some(proc_kb(&info, "MemTotal:")? / 1024)
}

/// The host's size, as what one worker can get (no GPU, no images).
pub(crate) fn host_capabilities(max_workers: u32) -> ProviderCapabilities {
    let mut caps = ProviderCapabilities::default();
    caps.max_cpu_cores = std::thread::available_parallelism().map_or(1.0, |n| n.get() as f64);
    if let Some(mb) = host_memory_mb() {
        caps.max_memory_mb = mb;
    }
    caps.gpu = false;
    caps.architectures = vec![std::env::consts::ARCH.to_owned()];
    caps.max_workers = max_workers;
    caps.supports_images = false;
    caps
}

/// CPU (since the previous `sample`, which it updates) and resident memory of
/// process `pid`, from `/proc`, into `usage`. Returns `false` (and leaves
/// `usage` alone) when the process is gone.
pub(crate) async fn sample_process(
    pid: u32,
    sample: &Mutex<(Instant, u64)>,
    usage: &mut ResourceUsage,
) -> bool {
    let dir = format!("/proc/{pid}");
    let (Ok(stat), Ok(status)) = (
        tokio::fs::read_to_string(format!("{dir}/stat")).await,
        tokio::fs::read_to_string(format!("{dir}/status")).await,
    ) else {
        return false;
    };
    if let Some(ticks) = proc_cpu_ticks(&stat) {
        let now = Instant::now();
        let mut sample = lock(sample);
        let secs = now.duration_since(sample.0).as_secs_f64();
        if secs > 0.0 {
            usage.cpu_percent =
                ticks.saturating_sub(sample.1) as f64 / CLOCK_TICKS_PER_SEC / secs * 100.0;
        }
        *sample = (now, ticks);
    }
    usage.memory_bytes = proc_kb(&status, "VmRSS:").unwrap_or(0) * 1024;
    true
}

/// The last `tail` lines (all without it) of a text file such as a VM's
/// serial console; a missing file has none.
pub(crate) async fn tail_file_lines(path: &Path, tail: Option<usize>) -> Vec<String> {
    let bytes = tokio::fs::read(path).await.unwrap_or_default();
    let text = String::from_utf8_lossy(&bytes);
    let lines: Vec<&str> = text.lines().collect();
    let skip = tail.map_or(0, |n| lines.len().saturating_sub(n));
    lines
        .iter()
        .skip(skip)
        .map(|l| l.trim_end_matches('\r').to_owned())
        .collect()
}

/// Whether hardware KVM works: `/dev/kvm` opens read-write *and* the CPU has
/// `vmx`/`svm`. (A `/dev/kvm` from `kvm_pvm` opens but cannot run a guest.)
#[must_use]
pub fn hardware_kvm_usable() -> bool {
    hardware_kvm_usable_at(Path::new("/dev/kvm"), Path::new("/proc/cpuinfo"))
}

/// [`hardware_kvm_usable`] with the device and cpuinfo paths given (for tests).
#[must_use]
pub fn hardware_kvm_usable_at(device: &Path, cpuinfo: &Path) -> bool {
    let dev = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(device)
        .is_ok();
    dev && std::fs::read_to_string(cpuinfo).is_ok_and(|c| {
        c.lines()
            .filter(|l| l.starts_with("flags"))
            .any(|l| l.split_whitespace().any(|f| f == "vmx" || f == "svm"))
    })
}

/// The server address as the guest reaches it: loopback hosts become `host_from_guest`.
/// A comma-separated list (several control-plane replicas) is rewritten entry by entry.
#[cfg(any(feature = "qemu", feature = "firecracker"))]
#[must_use]
pub fn guest_server_address(address: &str, host_from_guest: &str) -> String {
    if address.contains(',') {
        return address
            .split(',')
            .map(|a| guest_server_address(a.trim(), host_from_guest))
            .collect::<Vec<_>>()
            .join(",");
    }
    let (scheme, rest) = address.split_once("://").unwrap_or(("http", address));
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        match v6.split_once(']') {
            Some((h, p)) => (h, p),
            None => (authority, ""),
        }
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (h, &authority[h.len()..][..p.len() + 1]),
            None => (authority, ""),
        }
    };
    let loopback = matches!(host, "127.0.0.1" | "localhost" | "::1" | "0.0.0.0" | "::")
        || host.starts_with("127.");
    if loopback {
        format!("{scheme}://{host_from_guest}{port}{path}")
    } else {
        address.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(any(feature = "qemu", feature = "firecracker"))]
    #[test]
    fn a_list_of_server_addresses_is_rewritten_entry_by_entry() {
        assert_eq!(
            guest_server_address(
                "http://127.0.0.1:1, http://cp-b:2,http://[::1]:3",
                "10.0.2.2"
            ),
            "http://10.0.2.2:1,http://cp-b:2,http://10.0.2.2:3"
        );
    }

    #[test]
    fn cpu_ticks_and_kb_are_parsed_even_with_odd_command_names() {
        let stat = "42 (a) b) c) S 1 42 42 0 -1 4194304 100 0 0 0 7 5 0 0 20 0 1 0 999 0";
        assert_eq!(proc_cpu_ticks(stat), Some(12));
        assert_eq!(proc_kb("VmRSS:\t  2048 kB\n", "VmRSS:"), Some(2048));
        assert_eq!(proc_kb("VmHWM: 1 kB\n", "VmRSS:"), None);
    }

    #[test]
    fn own_process_has_a_stable_owner_tag() {
        let me = std::process::id();
        assert_eq!(owner_tag(me), owner_tag(me));
        assert!(owner_tag(me).is_some());
    }
}
