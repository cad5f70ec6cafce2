//! 100 MB through the executor with a slow consumer: complete, in order, bounded memory.
//! (Its own test binary, so the peak RSS measured is this test's alone.)
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::time::Duration;

use hodei_agent::executor::{ExecutionRequest, ExecutorConfig, JobExecutor};
use hodei_core::{CommandType, JobId, LogStream};
use tokio_util::sync::CancellationToken;

fn vm_hwm_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundred_megabytes_arrive_complete_in_order_with_bounded_memory() {
    const LINES: u64 = 1_000_000;
    const LINE_LEN: u64 = 99; // plus the newline: 100 MB in total
    let exec = JobExecutor::new(
        ExecutorConfig::default()
            .with_work_root(
                std::env::temp_dir().join(format!("hodei-vol-{}", uuid::Uuid::new_v4().simple())),
            )
            .with_log_channel_capacity(256),
    );
    let (tx, mut rx) = exec.log_channel();
    let req = ExecutionRequest::new(
        JobId::new(),
        1,
        CommandType::shell(
            "awk",
            [format!(
                "BEGIN {{ for (i = 1; i <= {LINES}; i++) printf \"%0{LINE_LEN}d\\n\", i }}"
            )],
        ),
    );
    let job = tokio::spawn({
        let exec = exec.clone();
        async move { exec.execute(req, tx, CancellationToken::new()).await }
    });

    // Slow start: the channel fills up and the child must block on its pipe.
    tokio::time::sleep(Duration::from_millis(700)).await;
    let before = vm_hwm_kib();
    assert!(
        !job.is_finished(),
        "the job finished while nobody read its output"
    );

    let mut expected = 1u64;
    let mut bytes = 0u64;
    let mut entries = 0u64;
    while let Some(entry) = rx.recv().await {
        assert_eq!(entry.stream, LogStream::Stdout);
        entries += 1;
        // An entry holds the complete lines read together (`group_lines`).
        for line in entry.data.split(|b| *b == b'\n') {
            assert_eq!(line.len() as u64, LINE_LEN);
            let n: u64 = std::str::from_utf8(line).unwrap().parse().unwrap();
            assert_eq!(n, expected, "out of order or missing");
            expected += 1;
            bytes += line.len() as u64 + 1;
        }
        if expected < 20_000 && entries.is_multiple_of(10) {
            // Keep reading slowly for a while.
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    eprintln!("{LINES} lines in {entries} entries");
    let res = job.await.unwrap();
    assert!(res.success(), "{res:?}");
    assert_eq!(res.log_bytes_dropped, 0);
    assert_eq!(expected - 1, LINES);
    assert_eq!(bytes, LINES * (LINE_LEN + 1));
    let peak = vm_hwm_kib();
    eprintln!("peak RSS {peak} KiB (after the slow start: {before} KiB)");
    assert!(peak < 48 * 1024, "peak RSS {peak} KiB: output was buffered");
}
