//! LogBatcher and UnackedBuffer.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::sync::Arc;
use std::time::Duration;

use hodei_agent::batcher::{
    BatcherConfig, ENTRY_OVERHEAD_BYTES, LogBatch, LogBatcher, UnackedBuffer,
};
use hodei_agent::executor::LogLine;
use hodei_core::{JobId, LogEntry, LogStream};
use tokio::sync::mpsc;
use tokio::time::Instant;

fn line(i: usize) -> LogLine {
    LogLine::new(LogStream::Stdout, format!("line {i}"))
}

async fn collect(mut rx: mpsc::Receiver<LogBatch>) -> Vec<LogBatch> {
    let mut v = Vec::new();
    while let Some(b) = rx.recv().await {
        v.push(b);
    }
    v
}

fn assert_contiguous(batches: &[LogBatch], first: u64, count: u64) {
    let seqs: Vec<u64> = batches
        .iter()
        .flat_map(|b| b.entries.iter().map(|e| e.sequence))
        .collect();
    assert_eq!(seqs, (first..first + count).collect::<Vec<_>>());
}

#[tokio::test]
async fn flushes_by_count_and_at_the_end_with_contiguous_sequences() {
    let job = JobId::new();
    let (tx, rx) = mpsc::channel(1000);
    let (otx, orx) = mpsc::channel(100);
    for i in 0..250 {
        tx.send(line(i)).await.unwrap();
    }
    drop(tx);
    let cfg = BatcherConfig::default().with_flush_interval(Duration::from_secs(3600));
    let last = LogBatcher::run(cfg, job, 2, 0, rx, otx).await;
    let batches = collect(orx).await;
    assert_eq!(last, 250);
    assert_eq!(
        batches.iter().map(|b| b.entries.len()).collect::<Vec<_>>(),
        vec![100, 100, 50]
    );
    assert!(batches.iter().all(|b| b.job_id == job && b.attempt == 2));
    assert_contiguous(&batches, 1, 250);
    assert_eq!(batches[0].entries[7].data.as_ref(), b"line 7");
}

#[tokio::test]
async fn sequences_continue_after_start_after() {
    let (tx, rx) = mpsc::channel(10);
    let (otx, orx) = mpsc::channel(10);
    for i in 0..5 {
        tx.send(line(i)).await.unwrap();
    }
    drop(tx);
    let last = LogBatcher::run(BatcherConfig::default(), JobId::new(), 1, 41, rx, otx).await;
    assert_eq!(last, 46);
    assert_contiguous(&collect(orx).await, 42, 5);
}

#[tokio::test]
async fn flushes_by_bytes() {
    let (tx, rx) = mpsc::channel(100);
    let (otx, orx) = mpsc::channel(100);
    let data = vec![b'x'; 1000 - ENTRY_OVERHEAD_BYTES];
    for _ in 0..10 {
        tx.send(LogLine::new(LogStream::Stderr, data.clone()))
            .await
            .unwrap();
    }
    drop(tx);
    let cfg = BatcherConfig::default()
        .with_max_bytes(3500)
        .with_flush_interval(Duration::from_secs(3600));
    LogBatcher::run(cfg, JobId::new(), 1, 0, rx, otx).await;
    let batches = collect(orx).await;
    // 3 entries (3000 bytes) fit; a 4th would exceed 3500.
    assert_eq!(
        batches.iter().map(|b| b.entries.len()).collect::<Vec<_>>(),
        vec![3, 3, 3, 1]
    );
    assert_contiguous(&batches, 1, 10);
    assert!(batches.iter().all(|b| b.entries.len() * 1000 <= 3500));
}

#[tokio::test]
async fn first_output_after_a_quiet_period_goes_out_at_once_then_batches() {
    let (tx, rx) = mpsc::channel(100);
    let (otx, mut orx) = mpsc::channel(100);
    let cfg = BatcherConfig::default().with_flush_interval(Duration::from_millis(300));
    let task = tokio::spawn(LogBatcher::run(cfg, JobId::new(), 1, 0, rx, otx));

    // Quiet so far: the first line is sent at once.
    let t0 = Instant::now();
    tx.send(line(1)).await.unwrap();
    let first = recv(&mut orx).await;
    assert!(
        t0.elapsed() < Duration::from_millis(150),
        "{:?}",
        t0.elapsed()
    );
    assert_eq!(first.entries.len(), 1);

    // Right after a batch: the next lines wait for the interval and travel together.
    let t1 = Instant::now();
    tx.send(line(2)).await.unwrap();
    tx.send(line(3)).await.unwrap();
    let second = recv(&mut orx).await;
    assert!(
        t1.elapsed() >= Duration::from_millis(250),
        "{:?}",
        t1.elapsed()
    );
    assert_eq!(second.first_sequence(), Some(2));
    assert_eq!(second.entries.len(), 2);

    // Quiet again for longer than the interval: at once again.
    tokio::time::sleep(Duration::from_millis(350)).await;
    let t2 = Instant::now();
    tx.send(line(4)).await.unwrap();
    let third = recv(&mut orx).await;
    assert!(
        t2.elapsed() < Duration::from_millis(150),
        "{:?}",
        t2.elapsed()
    );
    assert_eq!(third.first_sequence(), Some(4));
    drop(tx);
    assert_eq!(task.await.unwrap(), 4);
}

#[tokio::test]
async fn flushes_by_interval_from_the_first_entry() {
    let (tx, rx) = mpsc::channel(100);
    let (otx, mut orx) = mpsc::channel(100);
    let cfg = BatcherConfig::default()
        .with_flush_interval(Duration::from_millis(200))
        .with_eager_after_idle(false);
    let task = tokio::spawn(LogBatcher::run(cfg, JobId::new(), 1, 0, rx, otx));

    // Nothing is buffered: no timer runs, no empty batch is sent.
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(orx.try_recv().is_err());

    let t0 = Instant::now();
    tx.send(line(1)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(120)).await;
    tx.send(line(2)).await.unwrap();
    let batch = tokio::time::timeout(Duration::from_secs(5), orx.recv())
        .await
        .unwrap()
        .unwrap();
    let waited = t0.elapsed();
    // The timer started at the first entry, not at the second.
    assert!(
        waited >= Duration::from_millis(190) && waited < Duration::from_millis(300),
        "{waited:?}"
    );
    assert_eq!(batch.entries.len(), 2);

    tx.send(line(3)).await.unwrap();
    let batch = tokio::time::timeout(Duration::from_secs(5), orx.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(batch.first_sequence(), Some(3));
    drop(tx);
    assert_eq!(task.await.unwrap(), 3);
}

#[tokio::test]
async fn full_output_channel_applies_backpressure() {
    let (tx, rx) = mpsc::channel(4);
    let (otx, mut orx) = mpsc::channel(1);
    let cfg = BatcherConfig::default().with_max_entries(2);
    let task = tokio::spawn(LogBatcher::run(cfg, JobId::new(), 1, 0, rx, otx));
    let producer = tokio::spawn(async move {
        for i in 0..100 {
            tx.send(line(i)).await.unwrap();
        }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    // 1 batch in `out`, 1 batch waiting to be sent, 4 lines in the channel: the producer is
    // blocked, nothing was dropped.
    assert!(!producer.is_finished());
    let mut batches = Vec::new();
    while let Some(b) = orx.recv().await {
        batches.push(b);
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    producer.await.unwrap();
    assert_eq!(task.await.unwrap(), 100);
    assert_contiguous(&batches, 1, 100);
}

fn batch(job: JobId, attempt: u32, seqs: std::ops::RangeInclusive<u64>) -> LogBatch {
    LogBatch {
        job_id: job,
        attempt,
        entries: seqs
            .map(|s| LogEntry::new(s, LogStream::Stdout, format!("e{s}")))
            .collect(),
    }
}

/// `job` 1..=10, `other` 1..=5, then `job` 11..=20, all of attempt 1.
async fn two_jobs_in_three_batches() -> (JobId, JobId, UnackedBuffer) {
    let job = JobId::new();
    let other = JobId::new();
    let buf = UnackedBuffer::new(1000);
    buf.push(batch(job, 1, 1..=10)).await;
    buf.push(batch(other, 1, 1..=5)).await;
    buf.push(batch(job, 1, 11..=20)).await;
    (job, other, buf)
}

#[tokio::test]
async fn unacked_buffer_resends_what_was_not_acknowledged() {
    let (job, other, buf) = two_jobs_in_three_batches().await;
    assert_eq!(buf.len_entries(), 25);

    // The server acknowledged up to 14: the first batch goes, the third is trimmed.
    buf.ack(job, 1, 14);
    assert_eq!(buf.len_entries(), 11);
    let pending = buf.pending();
    assert_eq!(pending.len(), 2);
    assert_eq!(pending[0].job_id, other);
    assert_eq!(pending[1].first_sequence(), Some(15));
    assert_eq!(pending[1].last_sequence(), Some(20));

    // Acks of another attempt do not touch this one.
    buf.ack(job, 2, 100);
    assert_eq!(buf.len_entries(), 11);
    buf.ack(other, 1, 5);
    buf.ack(job, 1, 20);
    assert!(buf.is_empty());
    assert!(buf.pending().is_empty());
}

#[tokio::test]
async fn unacked_buffer_hands_out_only_what_was_not_sent_yet() {
    let (job, other, buf) = two_jobs_in_three_batches().await;

    // Nothing sent yet: everything, in order.
    let all = buf.unsent(|_, _| 0);
    assert_eq!(all, buf.pending());

    // Up to 14 of `job` already went out, all of `other`: only 15..=20 of `job`.
    let rest = buf.unsent(|j, _| if j == job { 14 } else { 5 });
    assert_eq!(rest.len(), 1);
    assert_eq!(rest[0].job_id, job);
    assert_eq!(rest[0].first_sequence(), Some(15));
    assert_eq!(rest[0].last_sequence(), Some(20));
    // What `unsent` hands out is a copy: the buffer still holds all 25 entries.
    assert_eq!(buf.len_entries(), 25);

    // Another attempt of the same job counts separately.
    buf.push(batch(job, 2, 1..=3)).await;
    let second = buf.unsent(|j, a| {
        if j == job && a == 1 {
            20
        } else if j == other {
            5
        } else {
            0
        }
    });
    assert_eq!(second.len(), 1);
    assert_eq!((second[0].attempt, second[0].last_sequence()), (2, Some(3)));
}

#[tokio::test]
async fn unacked_buffer_blocks_when_full_until_acked() {
    let job = JobId::new();
    let buf = Arc::new(UnackedBuffer::new(20));
    buf.push(batch(job, 1, 1..=10)).await;
    buf.push(batch(job, 1, 11..=20)).await;
    let pusher = tokio::spawn({
        let buf = Arc::clone(&buf);
        async move { buf.push(batch(job, 1, 21..=25)).await }
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        !pusher.is_finished(),
        "push must wait while the buffer is full"
    );
    assert!(buf.try_push(batch(job, 1, 21..=21)).is_err());
    buf.ack(job, 1, 3);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(
        !pusher.is_finished(),
        "17 + 5 entries exceed the capacity of 20"
    );
    buf.ack(job, 1, 10);
    tokio::time::timeout(Duration::from_secs(5), pusher)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(buf.len_entries(), 15);
    // A batch larger than the whole buffer is accepted when the buffer is empty.
    buf.ack(job, 1, 25);
    buf.push(batch(job, 1, 26..=60)).await;
    assert_eq!(buf.len_entries(), 35);
}

async fn recv(orx: &mut mpsc::Receiver<LogBatch>) -> LogBatch {
    tokio::time::timeout(Duration::from_secs(5), orx.recv())
        .await
        .unwrap()
        .unwrap()
}

#[tokio::test]
async fn unacked_buffer_is_bounded_in_bytes_too() {
    let job = JobId::new();
    // 10 entries of 2 bytes ("e1".."e9" and "e10" is 3): bound the bytes, not the entries.
    let buf = Arc::new(UnackedBuffer::new(1000).with_max_bytes(20));
    assert_eq!(buf.max_bytes(), 20);
    buf.push(batch(job, 1, 1..=9)).await;
    assert_eq!(buf.len_bytes(), 18);
    // 3 more bytes would exceed 20: refused, although 1000 entries would fit.
    assert!(buf.try_push(batch(job, 1, 10..=10)).is_err());
    let pusher = tokio::spawn({
        let buf = Arc::clone(&buf);
        async move { buf.push(batch(job, 1, 10..=10)).await }
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(
        !pusher.is_finished(),
        "push must wait while the bytes are used up"
    );
    buf.ack(job, 1, 2);
    pusher.await.unwrap();
    assert_eq!(buf.len_entries(), 8);
    assert_eq!(buf.len_bytes(), 17);
    buf.ack(job, 1, 10);
    assert!(buf.is_empty());
    assert_eq!(buf.len_bytes(), 0);
}

#[tokio::test]
async fn an_empty_unacked_buffer_takes_a_batch_larger_than_its_byte_bound() {
    let job = JobId::new();
    let buf = UnackedBuffer::new(1000).with_max_bytes(4);
    assert!(buf.try_push(batch(job, 1, 1..=5)).is_ok());
    assert!(buf.try_push(batch(job, 1, 6..=6)).is_err());
}
