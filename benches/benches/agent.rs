//! Agent hot paths: the LogBatcher alone, and the JobExecutor + LogBatcher reading a real
//! child's output, next to the same generator piped into `wc -c`.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;
use std::process::Stdio;
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use hodei_agent::batcher::{BatcherConfig, LogBatcher};
use hodei_agent::executor::{ExecutionRequest, ExecutorConfig, JobExecutor, LogLine};
use hodei_core::{CommandType, JobId, LogStream};
use tokio::runtime::Runtime;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Bytes produced by the generator per run.
const GEN_BYTES: u64 = 100_000_000;

/// `yes` with a 99-character line, cut to GEN_BYTES: 1 M lines of 100 bytes.
fn generator() -> String {
    format!("yes {} | head -c {GEN_BYTES}", "a".repeat(99))
}

fn runtime() -> Runtime {
    if std::env::var("HODEI_BENCH_RUNTIME").as_deref() == Ok("current_thread") {
        return tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
    }
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

async fn batcher_run(lines: &[Bytes]) -> u64 {
    let (tx, rx) = mpsc::channel(1024);
    let (otx, mut orx) = mpsc::channel(64);
    let job = JobId::new();
    let batcher = tokio::spawn(LogBatcher::run(
        BatcherConfig::default(),
        job,
        1,
        0,
        rx,
        otx,
    ));
    let consumer = tokio::spawn(async move {
        let mut n = 0u64;
        while let Some(b) = orx.recv().await {
            n += b.entries.len() as u64;
        }
        n
    });
    for l in lines {
        tx.send(LogLine::new(LogStream::Stdout, l.clone()))
            .await
            .unwrap();
    }
    drop(tx);
    batcher.await.unwrap();
    consumer.await.unwrap()
}

/// Runs the generator through executor + batcher in runtime tasks, as an agent does;
/// returns bytes received (lines + newlines).
async fn executor_run(exec: &JobExecutor) -> u64 {
    let exec = exec.clone();
    tokio::spawn(async move { executor_pipeline(&exec).await })
        .await
        .unwrap()
}

async fn executor_pipeline(exec: &JobExecutor) -> u64 {
    let (tx, rx) = exec.log_channel();
    let (otx, mut orx) = mpsc::channel(64);
    let job = JobId::new();
    let batcher = tokio::spawn(LogBatcher::run(
        BatcherConfig::default(),
        job,
        1,
        0,
        rx,
        otx,
    ));
    let consumer = tokio::spawn(async move {
        let mut bytes = 0u64;
        while let Some(b) = orx.recv().await {
            bytes += b
                .entries
                .iter()
                .map(|e| e.data.len() as u64 + 1)
                .sum::<u64>();
        }
        bytes
    });
    let req = ExecutionRequest::new(
        job,
        1,
        CommandType::shell("sh", ["-c".to_owned(), generator()]),
    );
    let res = exec.execute(req, tx, CancellationToken::new()).await;
    assert!(res.success(), "{res:?}");
    batcher.await.unwrap();
    consumer.await.unwrap()
}

fn raw_pipe_run() -> u64 {
    let out = std::process::Command::new("sh")
        .args(["-c", &format!("{} | wc -c", generator())])
        .stdout(Stdio::piped())
        .output()
        .unwrap();
    String::from_utf8(out.stdout)
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

fn executor() -> JobExecutor {
    JobExecutor::new(ExecutorConfig::default().with_log_cap_bytes(None))
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// Times both pipelines back to back, a few rounds each, and prints the ratio.
fn compare_to_raw_pipe(rt: &Runtime) {
    let exec = executor();
    let mut raw = Vec::new();
    let mut ours = Vec::new();
    for _ in 0..5 {
        let t = Instant::now();
        assert_eq!(raw_pipe_run(), GEN_BYTES);
        raw.push(t.elapsed());
        let t = Instant::now();
        assert_eq!(rt.block_on(executor_run(&exec)), GEN_BYTES);
        ours.push(t.elapsed());
    }
    let mb = GEN_BYTES as f64 / 1e6;
    let raw_rate = mb / median(raw).as_secs_f64();
    let our_rate = mb / median(ours).as_secs_f64();
    println!(
        "agent/executor_throughput: raw pipe to `wc -c` {raw_rate:.0} MB/s, executor + batcher \
         {our_rate:.0} MB/s = {:.0}% of the raw pipe rate (target >= 50%)",
        100.0 * our_rate / raw_rate
    );
}

/// Time from `execute` to the first line in hand, and to `execute` returning, for
/// `echo x`; next to a raw `tokio::process` spawn of the same command.
fn compare_start_latency(rt: &Runtime) {
    const N: usize = 200;
    let exec = executor();
    let (mut raw_first, mut raw_done, mut first, mut done) = (vec![], vec![], vec![], vec![]);
    for _ in 0..N {
        rt.block_on(async {
            use tokio::io::AsyncBufReadExt;
            let t = Instant::now();
            let mut child = tokio::process::Command::new("echo")
                .arg("x")
                .stdout(Stdio::piped())
                .spawn()
                .unwrap();
            let mut out = tokio::io::BufReader::new(child.stdout.take().unwrap());
            let mut line = String::new();
            out.read_line(&mut line).await.unwrap();
            raw_first.push(t.elapsed());
            child.wait().await.unwrap();
            raw_done.push(t.elapsed());

            let (tx, mut rx) = exec.log_channel();
            let t = Instant::now();
            let req = ExecutionRequest::new(JobId::new(), 1, CommandType::shell("echo", ["x"]));
            let run = tokio::spawn({
                let exec = exec.clone();
                async move { exec.execute(req, tx, CancellationToken::new()).await }
            });
            rx.recv().await.unwrap();
            first.push(t.elapsed());
            assert!(run.await.unwrap().success());
            done.push(t.elapsed());
        });
    }
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    println!(
        "agent/start_latency (echo x, N={N}, medians): first line {:.2} ms vs raw spawn {:.2} ms \
         ({:.1}x); until the result {:.2} ms vs raw spawn + wait {:.2} ms ({:.1}x)",
        ms(median(first.clone())),
        ms(median(raw_first.clone())),
        ms(median(first)) / ms(median(raw_first)),
        ms(median(done.clone())),
        ms(median(raw_done.clone())),
        ms(median(done)) / ms(median(raw_done)),
    );
}

fn benches(c: &mut Criterion) {
    let rt = runtime();
    compare_start_latency(&rt);
    if std::env::var_os("HODEI_BENCH_ONLY_LATENCY").is_some() {
        return;
    }

    let lines: Vec<Bytes> = (0..100_000)
        .map(|i| Bytes::from(format!("{i:0>99}")))
        .collect();
    let mut g = c.benchmark_group("agent/batcher");
    g.sample_size(10);
    g.throughput(Throughput::Elements(lines.len() as u64));
    g.bench_function("entries", |b| {
        b.to_async(&rt)
            .iter(|| async { black_box(batcher_run(&lines).await) });
    });
    g.finish();

    compare_to_raw_pipe(&rt);

    let exec = executor();
    let mut g = c.benchmark_group("agent/executor");
    g.sample_size(10);
    g.measurement_time(Duration::from_secs(10));
    g.throughput(Throughput::Bytes(GEN_BYTES));
    g.bench_function("raw_pipe_wc", |b| b.iter(|| black_box(raw_pipe_run())));
    g.bench_function("executor_to_batcher", |b| {
        b.to_async(&rt)
            .iter(|| async { black_box(executor_run(&exec).await) });
    });
    g.finish();
}

criterion_group!(agent, benches);
criterion_main!(agent);
