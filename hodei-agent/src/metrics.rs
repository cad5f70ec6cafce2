//! Resource usage of the worker: CPU, memory, disk and network.
//!
//! Read from cgroup v2 (`cpu.stat`, `memory.current`, `memory.max`, `io.stat`),
//! falling back to cgroup v1 and then to `/proc` (`/proc/stat`, `/proc/meminfo`,
//! `/proc/diskstats`); network counters always come from `/proc/net/dev`
//! (namespaced per container). Reads run in `spawn_blocking` and are cached:
//! [`MetricsCollector::cached`] never waits for a read, so a heartbeat is
//! never delayed by a slow filesystem.
//!
//! ```no_run
//! # async fn demo() {
//! use hodei_agent::metrics::{MetricsCollector, MetricsConfig};
//!
//! let metrics = MetricsCollector::new(MetricsConfig::default());
//! let usage = metrics.refresh().await;
//! println!("memory in use: {} bytes", usage.memory_bytes);
//! let fast = metrics.cached(); // immediate; refreshes in the background when stale
//! # let _ = fast;
//! # }
//! ```

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hodei_core::ResourceUsage;

/// Where the collector reads from, and how long a reading stays fresh.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct MetricsConfig {
    /// How long a reading is served from the cache (default 35 s).
    pub ttl: Duration,
    /// Root of the cgroup filesystem (default `/sys/fs/cgroup`).
    pub cgroup_root: PathBuf,
    /// Root of procfs (default `/proc`).
    pub proc_root: PathBuf,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        Self {
            ttl: Duration::from_secs(35),
            cgroup_root: PathBuf::from("/sys/fs/cgroup"),
            proc_root: PathBuf::from("/proc"),
        }
    }
}

impl MetricsConfig {
    /// Sets the cache TTL.
    #[must_use]
    pub fn with_ttl(mut self, ttl: Duration) -> Self {
        self.ttl = ttl;
        self
    }

    /// Reads from other roots (e.g. a test fixture or a mounted host filesystem).
    #[must_use]
    pub fn with_roots(
        mut self,
        cgroup_root: impl Into<PathBuf>,
        proc_root: impl Into<PathBuf>,
    ) -> Self {
        self.cgroup_root = cgroup_root.into();
        self.proc_root = proc_root.into();
        self
    }
}

/// Which source the CPU, memory and disk numbers came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum MetricsSource {
    /// Unified cgroup hierarchy.
    CgroupV2,
    /// Legacy cgroup controllers.
    CgroupV1,
    /// Whole-host numbers from procfs.
    Proc,
}

/// One raw reading: cumulative counters plus gauges.
#[derive(Debug, Clone, Default, PartialEq)]
struct Raw {
    /// Cumulative CPU time, microseconds.
    cpu_usec: Option<u64>,
    memory_bytes: u64,
    memory_limit_bytes: u64,
    disk_read_bytes: u64,
    disk_write_bytes: u64,
    net_rx_bytes: u64,
    net_tx_bytes: u64,
}

#[derive(Debug, Default)]
struct Cache {
    usage: ResourceUsage,
    at: Option<Instant>,
    prev_cpu: Option<(Instant, u64)>,
}

#[derive(Debug)]
struct Inner {
    config: MetricsConfig,
    source: MetricsSource,
    cache: Mutex<Cache>,
    refreshing: AtomicBool,
}

/// Collects [`ResourceUsage`] with a TTL cache. Cheap to clone.
#[derive(Debug, Clone)]
pub struct MetricsCollector {
    inner: Arc<Inner>,
}

impl Default for MetricsCollector {
    fn default() -> Self {
        Self::new(MetricsConfig::default())
    }
}

impl MetricsCollector {
    /// A collector; detects the cgroup version once.
    #[must_use]
    pub fn new(config: MetricsConfig) -> Self {
        let source = detect_source(&config.cgroup_root);
        Self {
            inner: Arc::new(Inner {
                config,
                source,
                cache: Mutex::new(Cache::default()),
                refreshing: AtomicBool::new(false),
            }),
        }
    }

    /// Where CPU, memory and disk numbers come from.
    #[must_use]
    pub fn source(&self) -> MetricsSource {
        self.inner.source
    }

    /// The last reading, immediately. When it is older than the TTL (or there is none yet) a
    /// refresh starts in the background (if a tokio runtime is present); the caller does not wait.
    #[must_use]
    pub fn cached(&self) -> ResourceUsage {
        let (usage, stale) = {
            let c = lock(&self.inner.cache);
            let stale = c.at.is_none_or(|at| at.elapsed() >= self.inner.config.ttl);
            (c.usage.clone(), stale)
        };
        if stale
            && let Ok(handle) = tokio::runtime::Handle::try_current()
            && !self.inner.refreshing.swap(true, Ordering::AcqRel)
        {
            let this = self.clone();
            handle.spawn(async move {
                let _ = this.refresh_inner().await;
            });
        }
        usage
    }

    /// Reads now (in `spawn_blocking`), updates the cache and returns the reading.
    pub async fn refresh(&self) -> ResourceUsage {
        self.inner.refreshing.store(true, Ordering::Release);
        self.refresh_inner().await
    }

    async fn refresh_inner(&self) -> ResourceUsage {
        let this = self.clone();
        let result = tokio::task::spawn_blocking(move || this.sample_blocking()).await;
        self.inner.refreshing.store(false, Ordering::Release);
        match result {
            Ok(u) => u,
            Err(e) => {
                tracing::warn!(error = %e, "metrics read task failed");
                self.cached_value()
            }
        }
    }

    fn cached_value(&self) -> ResourceUsage {
        lock(&self.inner.cache).usage.clone()
    }

    /// Reads synchronously and updates the cache. CPU percent is computed against the previous
    /// reading (0 on the first).
    pub fn sample_blocking(&self) -> ResourceUsage {
        let cfg = &self.inner.config;
        let raw = read_raw(self.inner.source, &cfg.cgroup_root, &cfg.proc_root);
        let now = Instant::now();
        let mut c = lock(&self.inner.cache);
        let mut usage = ResourceUsage::default();
        usage.cpu_percent = match (raw.cpu_usec, c.prev_cpu) {
            (Some(cur), Some((then, prev))) => {
                let wall = now.duration_since(then).as_micros();
                if wall == 0 {
                    c.usage.cpu_percent
                } else {
                    // u64 -> f64 precision loss is irrelevant at these magnitudes.
                    #[allow(clippy::cast_precision_loss)]
                    let pct = cur.saturating_sub(prev) as f64 / wall as f64 * 100.0;
                    pct
                }
            }
            _ => 0.0,
        };
        usage.memory_bytes = raw.memory_bytes;
        usage.memory_limit_bytes = raw.memory_limit_bytes;
        usage.disk_read_bytes = raw.disk_read_bytes;
        usage.disk_write_bytes = raw.disk_write_bytes;
        usage.net_rx_bytes = raw.net_rx_bytes;
        usage.net_tx_bytes = raw.net_tx_bytes;
        if let Some(cur) = raw.cpu_usec {
            c.prev_cpu = Some((now, cur));
        }
        c.usage = usage.clone();
        c.at = Some(now);
        usage
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    match m.lock() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    }
}

fn detect_source(cgroup_root: &Path) -> MetricsSource {
    if cgroup_root.join("cgroup.controllers").exists() {
        MetricsSource::CgroupV2
    } else if cgroup_root.join("memory/memory.usage_in_bytes").exists()
        || cgroup_root.join("cpuacct/cpuacct.usage").exists()
    {
        MetricsSource::CgroupV1
    } else {
        MetricsSource::Proc
    }
}

fn read_string(p: &Path) -> Option<String> {
    std::fs::read_to_string(p).ok()
}

fn read_u64(p: &Path) -> Option<u64> {
    read_string(p)?.trim().parse().ok()
}

fn read_raw(source: MetricsSource, cg: &Path, proc_root: &Path) -> Raw {
    let mut raw = Raw::default();
    let meminfo = read_string(&proc_root.join("meminfo")).map(|s| parse_meminfo(&s));
    match source {
        MetricsSource::CgroupV2 => {
            raw.cpu_usec = read_string(&cg.join("cpu.stat")).and_then(|s| parse_cpu_stat_v2(&s));
            raw.memory_bytes = read_u64(&cg.join("memory.current")).unwrap_or(0);
            raw.memory_limit_bytes = read_string(&cg.join("memory.max"))
                .and_then(|s| s.trim().parse().ok())
                .unwrap_or(0);
            if let Some(s) = read_string(&cg.join("io.stat")) {
                (raw.disk_read_bytes, raw.disk_write_bytes) = parse_io_stat_v2(&s);
            }
        }
        MetricsSource::CgroupV1 => {
            raw.cpu_usec = read_u64(&cg.join("cpuacct/cpuacct.usage")).map(|ns| ns / 1000);
            raw.memory_bytes = read_u64(&cg.join("memory/memory.usage_in_bytes")).unwrap_or(0);
            // "No limit" is a huge page-aligned number; treat anything beyond 2^62 as none.
            raw.memory_limit_bytes = read_u64(&cg.join("memory/memory.limit_in_bytes"))
                .filter(|l| *l < (1 << 62))
                .unwrap_or(0);
            if let Some(s) = read_string(&cg.join("blkio/blkio.throttle.io_service_bytes")) {
                (raw.disk_read_bytes, raw.disk_write_bytes) = parse_blkio_v1(&s);
            }
        }
        MetricsSource::Proc => {}
    }
    // Fill whatever the cgroup did not provide from procfs.
    if raw.cpu_usec.is_none() {
        raw.cpu_usec = read_string(&proc_root.join("stat")).and_then(|s| parse_proc_stat(&s));
    }
    if let Some((total, available)) = meminfo {
        if raw.memory_bytes == 0 {
            raw.memory_bytes = total.saturating_sub(available);
        }
        if raw.memory_limit_bytes == 0 {
            raw.memory_limit_bytes = total;
        }
    }
    if source == MetricsSource::Proc
        && let Some(s) = read_string(&proc_root.join("diskstats"))
    {
        (raw.disk_read_bytes, raw.disk_write_bytes) = parse_diskstats(&s);
    }
    if let Some(s) = read_string(&proc_root.join("net/dev")) {
        (raw.net_rx_bytes, raw.net_tx_bytes) = parse_net_dev(&s);
    }
    raw
}

fn parse_cpu_stat_v2(s: &str) -> Option<u64> {
    s.lines().find_map(|l| {
        let mut it = l.split_whitespace();
        (it.next()? == "usage_usec").then(|| it.next()?.parse().ok())?
    })
}

fn parse_io_stat_v2(s: &str) -> (u64, u64) {
    let (mut r, mut w) = (0u64, 0u64);
    for line in s.lines() {
        for kv in line.split_whitespace().skip(1) {
            if let Some((k, v)) = kv.split_once('=') {
                let v: u64 = v.parse().unwrap_or(0);
                match k {
                    "rbytes" => r = r.saturating_add(v),
                    "wbytes" => w = w.saturating_add(v),
                    _ => {}
                }
            }
        }
    }
    (r, w)
}

fn parse_blkio_v1(s: &str) -> (u64, u64) {
    let (mut r, mut w) = (0u64, 0u64);
    for line in s.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        if let [_dev, op, v] = f.as_slice() {
            let v: u64 = v.parse().unwrap_or(0);
            match *op {
                "Read" => r = r.saturating_add(v),
                "Write" => w = w.saturating_add(v),
                _ => {}
            }
        }
    }
    (r, w)
}

/// Busy CPU time of the whole host from the aggregate `cpu` line, in microseconds
/// (assuming the usual USER_HZ of 100).
fn parse_proc_stat(s: &str) -> Option<u64> {
    let line = s.lines().find(|l| l.starts_with("cpu "))?;
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal
    let busy: u64 = v
        .iter()
        .enumerate()
        .filter(|(i, _)| matches!(i, 0 | 1 | 2 | 5 | 6 | 7))
        .map(|(_, x)| *x)
        .sum();
    Some(busy.saturating_mul(10_000))
}

/// `(MemTotal, MemAvailable)` in bytes.
fn parse_meminfo(s: &str) -> (u64, u64) {
    let field = |name: &str| {
        s.lines()
            .find_map(|l| {
                let rest = l.strip_prefix(name)?.strip_prefix(':')?;
                rest.split_whitespace().next()?.parse::<u64>().ok()
            })
            .unwrap_or(0)
            .saturating_mul(1024)
    };
    (field("MemTotal"), field("MemAvailable"))
}

fn parse_diskstats(s: &str) -> (u64, u64) {
    let (mut r, mut w) = (0u64, 0u64);
    for line in s.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 10 {
            continue;
        }
        let name = f[2];
        // Whole devices only, skip partitions/virtual devices to avoid double counting.
        if name.starts_with("loop") || name.starts_with("ram") || name.starts_with("dm-") {
            continue;
        }
        if Path::new("/sys/block").join(name).exists()
            || !name.ends_with(|c: char| c.is_ascii_digit())
        {
            let sectors = |i: usize| f[i].parse::<u64>().unwrap_or(0).saturating_mul(512);
            r = r.saturating_add(sectors(5));
            w = w.saturating_add(sectors(9));
        }
    }
    (r, w)
}

fn parse_net_dev(s: &str) -> (u64, u64) {
    let (mut rx, mut tx) = (0u64, 0u64);
    for line in s.lines().skip(2) {
        let Some((iface, rest)) = line.split_once(':') else {
            continue;
        };
        if iface.trim() == "lo" {
            continue;
        }
        let f: Vec<u64> = rest
            .split_whitespace()
            .filter_map(|x| x.parse().ok())
            .collect();
        if f.len() >= 9 {
            rx = rx.saturating_add(f[0]);
            tx = tx.saturating_add(f[8]);
        }
    }
    (rx, tx)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_cgroup_v2_files() {
        assert_eq!(
            parse_cpu_stat_v2("usage_usec 12345\nuser_usec 1\nsystem_usec 2\n"),
            Some(12345)
        );
        assert_eq!(
            parse_io_stat_v2("8:0 rbytes=100 wbytes=200 rios=1 wios=2\n8:16 rbytes=1 wbytes=2\n"),
            (101, 202)
        );
    }

    #[test]
    fn parses_proc_files() {
        let net = "Inter-|   Receive |  Transmit\n face |bytes packets errs drop fifo frame compressed multicast|bytes\n    lo: 999 1 0 0 0 0 0 0 999 1 0 0 0 0 0 0\n  eth0: 100 2 0 0 0 0 0 0 50 1 0 0 0 0 0 0\n";
        assert_eq!(parse_net_dev(net), (100, 50));
        let mem = "MemTotal:       1000 kB\nMemFree:  10 kB\nMemAvailable:    400 kB\n";
        assert_eq!(parse_meminfo(mem), (1_024_000, 409_600));
        assert_eq!(
            parse_proc_stat("cpu  10 0 5 100 3 1 1 0 0 0\ncpu0 1 2 3\n"),
            Some(17 * 10_000)
        );
        assert_eq!(
            parse_blkio_v1("8:0 Read 10\n8:0 Write 20\n8:0 Sync 5\nTotal 35\n"),
            (10, 20)
        );
    }
}
