//! MetricsCollector against the real /sys and /proc of this machine, and against a fixture tree.
#![allow(clippy::unwrap_used)] // test helpers

use std::time::{Duration, Instant};

use hodei_agent::metrics::{MetricsCollector, MetricsConfig, MetricsSource};

#[tokio::test]
async fn reads_real_usage() {
    let m = MetricsCollector::new(MetricsConfig::default());
    eprintln!("metrics source: {:?}", m.source());
    let first = m.refresh().await;
    assert!(first.memory_bytes > 0, "{first:?}");
    assert!(first.memory_limit_bytes > 0, "{first:?}");
    assert_eq!(first.cpu_percent, 0.0, "first reading has no CPU delta");

    // Burn some CPU in this process, then read again: the cgroup/host must show it.
    let start = Instant::now();
    let mut x: u64 = 0;
    while start.elapsed() < Duration::from_millis(300) {
        x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
    }
    assert_ne!(x, 42);
    let second = m.refresh().await;
    assert!(second.cpu_percent > 0.0, "{second:?}");
    assert!(second.cpu_percent < 100.0 * 512.0, "{second:?}");
    // Network counters are cumulative.
    assert!(second.net_rx_bytes >= first.net_rx_bytes);
    assert!(second.disk_read_bytes >= first.disk_read_bytes);
}

#[tokio::test]
async fn cached_returns_immediately_and_refreshes_in_background() {
    let m = MetricsCollector::new(MetricsConfig::default().with_ttl(Duration::from_millis(100)));
    // Nothing read yet: the cached value is empty, and a background refresh starts.
    let t = Instant::now();
    let empty = m.cached();
    assert!(t.elapsed() < Duration::from_millis(50));
    assert_eq!(empty.memory_bytes, 0);
    let deadline = Instant::now() + Duration::from_secs(5);
    while m.cached().memory_bytes == 0 {
        assert!(Instant::now() < deadline, "background refresh never landed");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn fresh_cache_is_served_without_rereading() {
    let dir = tempfile::tempdir().unwrap();
    let cg = dir.path().join("cgroup");
    let proc_root = dir.path().join("proc");
    std::fs::create_dir_all(&cg).unwrap();
    std::fs::create_dir_all(proc_root.join("net")).unwrap();
    std::fs::write(cg.join("cgroup.controllers"), "cpu memory io\n").unwrap();
    std::fs::write(cg.join("cpu.stat"), "usage_usec 1000000\n").unwrap();
    std::fs::write(cg.join("memory.current"), "2048\n").unwrap();
    std::fs::write(cg.join("memory.max"), "4096\n").unwrap();
    std::fs::write(
        cg.join("io.stat"),
        "8:0 rbytes=10 wbytes=20 rios=1 wios=1\n",
    )
    .unwrap();
    std::fs::write(
        proc_root.join("net/dev"),
        "h1\nh2\n  eth0: 7 0 0 0 0 0 0 0 9 0 0 0 0 0 0 0\n",
    )
    .unwrap();
    let m = MetricsCollector::new(
        MetricsConfig::default()
            .with_ttl(Duration::from_secs(3600))
            .with_roots(&cg, &proc_root),
    );
    assert_eq!(m.source(), MetricsSource::CgroupV2);
    let u = m.refresh().await;
    assert_eq!(u.memory_bytes, 2048);
    assert_eq!(u.memory_limit_bytes, 4096);
    assert_eq!((u.disk_read_bytes, u.disk_write_bytes), (10, 20));
    assert_eq!((u.net_rx_bytes, u.net_tx_bytes), (7, 9));

    // A new value on disk is not seen while the cache is fresh.
    std::fs::write(cg.join("memory.current"), "9999\n").unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(m.cached().memory_bytes, 2048);
    // ...but is after an explicit refresh; CPU percent comes from the usage delta.
    std::fs::write(cg.join("cpu.stat"), "usage_usec 1100000\n").unwrap();
    let u = m.refresh().await;
    assert_eq!(u.memory_bytes, 9999);
    assert!(u.cpu_percent > 0.0);
}
