//! Log batching: numbers the lines of one attempt and groups them into [`LogBatch`]es.
//!
//! [`LogBatcher::run`] turns the executor's [`LogLine`]s into [`LogEntry`]s with sequence
//! numbers `1, 2, …` per (job, attempt), without gaps, and sends them in batches: a batch is
//! flushed when it reaches [`BatcherConfig::max_entries`] entries or
//! [`BatcherConfig::max_bytes`] bytes, when [`BatcherConfig::flush_interval`] has passed since
//! its first entry, and at the end. After a quiet period the first output is sent at once
//! ([`BatcherConfig::eager_after_idle`]): a job's first line reaches a follower without
//! waiting for the interval, while a steady producer is still batched. Sending awaits when the output channel is full, which in
//! turn stops the batcher reading lines and so pauses the job's pipe: backpressure all the
//! way, nothing dropped.
//!
//! [`UnackedBuffer`] keeps sent batches until the server acknowledges them, so they can be
//! resent after a reconnect; it is bounded in entries and in bytes (an entry may hold many
//! grouped lines, up to 64 KiB), and [`UnackedBuffer::push`] waits while it is full.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::Duration;

use chrono::Utc;
use hodei_core::{JobId, LogEntry};
use tokio::sync::{Notify, mpsc};
use tokio::time::Instant;

use crate::executor::LogLine;

/// Bytes counted per entry on top of its data (sequence, stream, timestamp, framing), so
/// that [`BatcherConfig::max_bytes`] bounds the encoded message size.
pub const ENTRY_OVERHEAD_BYTES: usize = 32;

/// When to flush a batch.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct BatcherConfig {
    /// Entries per batch at most (default 100).
    pub max_entries: usize,
    /// Bytes per batch at most, data plus [`ENTRY_OVERHEAD_BYTES`] per entry (default
    /// 512 KiB: half the HTTP/2 stream window, far below gRPC's usual 4 MiB message limit,
    /// which also applies to the chunk a subscriber receives). A single entry larger than
    /// this is sent alone. Under a steady stream batches fill up to this size, so the
    /// per-message costs (encoding, HTTP/2 framing, the server's store call and
    /// acknowledgement) are paid once per half MiB.
    pub max_bytes: usize,
    /// Longest time an entry waits in the batcher (default 100 ms).
    pub flush_interval: Duration,
    /// Whether output arriving when no batch was sent for a whole `flush_interval` goes out
    /// as soon as nothing more is ready, instead of after the interval (default `true`).
    pub eager_after_idle: bool,
}

impl Default for BatcherConfig {
    fn default() -> Self {
        Self {
            max_entries: 100,
            max_bytes: 512 * 1024,
            flush_interval: Duration::from_millis(100),
            eager_after_idle: true,
        }
    }
}

impl BatcherConfig {
    /// Sets [`Self::max_entries`] (at least 1).
    #[must_use]
    pub fn with_max_entries(mut self, n: usize) -> Self {
        self.max_entries = n.max(1);
        self
    }

    /// Sets [`Self::max_bytes`] (at least 1).
    #[must_use]
    pub fn with_max_bytes(mut self, n: usize) -> Self {
        self.max_bytes = n.max(1);
        self
    }

    /// Sets [`Self::flush_interval`].
    #[must_use]
    pub fn with_flush_interval(mut self, interval: Duration) -> Self {
        self.flush_interval = interval;
        self
    }

    /// Sets [`Self::eager_after_idle`].
    #[must_use]
    pub fn with_eager_after_idle(mut self, eager: bool) -> Self {
        self.eager_after_idle = eager;
        self
    }
}

/// Consecutive log entries of one attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogBatch {
    /// The job.
    pub job_id: JobId,
    /// The attempt.
    pub attempt: u32,
    /// Entries with consecutive sequence numbers.
    pub entries: Vec<LogEntry>,
}

impl LogBatch {
    /// Sequence number of the first entry.
    #[must_use]
    pub fn first_sequence(&self) -> Option<u64> {
        self.entries.first().map(|e| e.sequence)
    }

    /// Sequence number of the last entry.
    #[must_use]
    pub fn last_sequence(&self) -> Option<u64> {
        self.entries.last().map(|e| e.sequence)
    }

    /// Bytes of data in the batch (without overhead).
    #[must_use]
    pub fn data_bytes(&self) -> usize {
        self.entries.iter().map(|e| e.data.len()).sum()
    }
}

/// Turns a stream of [`LogLine`]s into sequenced [`LogBatch`]es.
#[derive(Debug, Clone, Copy, Default)]
pub struct LogBatcher;

impl LogBatcher {
    /// Consumes `lines` until the channel closes, assigns sequence numbers starting at
    /// `start_after + 1`, flushes on `max_entries` / `max_bytes` / `flush_interval` since the
    /// first buffered entry (at once after a quiet period, see
    /// [`BatcherConfig::eager_after_idle`]), flushes the rest at the end, and sends batches into `out`
    /// (awaiting when it is full). Returns the last sequence number used.
    ///
    /// If `out` is closed the batcher stops (and drops `lines`, so the producer sees a
    /// closed channel) and returns the last sequence number it delivered.
    pub async fn run(
        config: BatcherConfig,
        job_id: JobId,
        attempt: u32,
        start_after: u64,
        mut lines: mpsc::Receiver<LogLine>,
        out: mpsc::Sender<LogBatch>,
    ) -> u64 {
        let max_entries = config.max_entries.max(1);
        let max_bytes = config.max_bytes.max(1);
        let mut next = start_after;
        let mut delivered = start_after;
        let mut pending = Pending::new(job_id, attempt, max_entries);

        // Lines are taken from the channel in bulk: one wake-up per burst, not per line.
        let mut inbox: Vec<LogLine> = Vec::with_capacity(max_entries);
        loop {
            let received = match pending.deadline {
                Some(at) => tokio::select! {
                    biased;
                    n = lines.recv_many(&mut inbox, max_entries) => Some(n),
                    () = tokio::time::sleep_until(at) => None,
                },
                None => Some(lines.recv_many(&mut inbox, max_entries).await),
            };
            match received {
                // Interval elapsed.
                None => {
                    if !pending.flush(&out, &mut delivered).await {
                        return delivered;
                    }
                    continue;
                }
                // Channel closed: flush the rest.
                Some(0) => {
                    pending.flush(&out, &mut delivered).await;
                    return delivered;
                }
                Some(_) => {}
            }
            // One timestamp per burst: these lines were all read just now.
            let now = Utc::now();
            for line in inbox.drain(..) {
                let size = line.data.len() + ENTRY_OVERHEAD_BYTES;
                if !pending.entries.is_empty()
                    && pending.bytes + size > max_bytes
                    && !pending.flush(&out, &mut delivered).await
                {
                    return delivered;
                }
                next += 1;
                if pending.entries.is_empty() {
                    let idle = pending
                        .last_flush
                        .is_none_or(|t| t.elapsed() >= config.flush_interval);
                    // After a quiet period: out as soon as nothing more is ready.
                    pending.deadline = Some(if config.eager_after_idle && idle {
                        Instant::now()
                    } else {
                        Instant::now() + config.flush_interval
                    });
                }
                pending.entries.push(LogEntry {
                    sequence: next,
                    stream: line.stream,
                    data: line.data,
                    timestamp: now,
                });
                pending.bytes += size;
                if (pending.entries.len() >= max_entries || pending.bytes >= max_bytes)
                    && !pending.flush(&out, &mut delivered).await
                {
                    return delivered;
                }
            }
        }
    }
}

/// The batch being filled.
struct Pending {
    job_id: JobId,
    attempt: u32,
    max_entries: usize,
    entries: Vec<LogEntry>,
    bytes: usize,
    deadline: Option<Instant>,
    last_flush: Option<Instant>,
}

impl Pending {
    fn new(job_id: JobId, attempt: u32, max_entries: usize) -> Self {
        Self {
            job_id,
            attempt,
            max_entries,
            entries: Vec::with_capacity(max_entries),
            bytes: 0,
            deadline: None,
            last_flush: None,
        }
    }

    /// Sends the buffered entries, if any. Returns false when `out` is closed.
    async fn flush(&mut self, out: &mpsc::Sender<LogBatch>, delivered: &mut u64) -> bool {
        if self.entries.is_empty() {
            return true;
        }
        let batch = LogBatch {
            job_id: self.job_id,
            attempt: self.attempt,
            entries: std::mem::replace(&mut self.entries, Vec::with_capacity(self.max_entries)),
        };
        self.bytes = 0;
        self.deadline = None;
        self.last_flush = Some(Instant::now());
        let last = batch.last_sequence().unwrap_or(*delivered);
        if out.send(batch).await.is_err() {
            return false;
        }
        *delivered = last;
        true
    }
}

/// Default byte bound of an [`UnackedBuffer`]: far more than is in flight during one
/// acknowledgement round trip at a gigabyte per second, far less than the entry bound
/// allows once lines are grouped (10,000 entries of up to 64 KiB).
pub const DEFAULT_UNACKED_MAX_BYTES: usize = 32 * 1024 * 1024;

/// Bounded buffer of sent-but-unacknowledged batches, for resend after a reconnect.
#[derive(Debug)]
pub struct UnackedBuffer {
    max_entries: usize,
    max_bytes: usize,
    state: Mutex<Unacked>,
    space: Notify,
}

#[derive(Debug, Default)]
struct Unacked {
    batches: VecDeque<LogBatch>,
    entries: usize,
    bytes: usize,
}

impl Unacked {
    /// Whether a batch of `entries` entries and `bytes` bytes fits (an empty buffer takes
    /// any batch, so a single oversized batch cannot wedge the agent).
    fn fits(&self, entries: usize, bytes: usize, max_entries: usize, max_bytes: usize) -> bool {
        self.entries == 0
            || (self.entries + entries <= max_entries && self.bytes + bytes <= max_bytes)
    }

    fn add(&mut self, batch: LogBatch) {
        self.entries += batch.entries.len();
        self.bytes += batch.data_bytes();
        self.batches.push_back(batch);
    }
}

impl UnackedBuffer {
    /// A buffer holding at most `max_entries` entries and [`DEFAULT_UNACKED_MAX_BYTES`] bytes
    /// of data (a single larger batch is still accepted when the buffer is empty).
    #[must_use]
    pub fn new(max_entries: usize) -> Self {
        Self {
            max_entries: max_entries.max(1),
            max_bytes: DEFAULT_UNACKED_MAX_BYTES,
            state: Mutex::new(Unacked::default()),
            space: Notify::new(),
        }
    }

    /// Sets the byte bound (at least 1).
    #[must_use]
    pub fn with_max_bytes(mut self, max_bytes: usize) -> Self {
        self.max_bytes = max_bytes.max(1);
        self
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Unacked> {
        // A panic while holding the lock cannot leave the queue inconsistent (every
        // mutation is a single push/pop/retain), so a poisoned lock is still usable.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Adds a sent batch; waits while the buffer is full (backpressure).
    pub async fn push(&self, batch: LogBatch) {
        let mut batch = Some(batch);
        loop {
            let notified = self.space.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let mut state = self.lock();
                let (n, bytes) = batch
                    .as_ref()
                    .map_or((0, 0), |b| (b.entries.len(), b.data_bytes()));
                if state.fits(n, bytes, self.max_entries, self.max_bytes) {
                    if let Some(b) = batch.take() {
                        state.add(b);
                    }
                    return;
                }
            }
            notified.await;
        }
    }

    /// Tries to add a batch without waiting; gives it back when the buffer is full.
    pub fn try_push(&self, batch: LogBatch) -> Result<(), LogBatch> {
        let mut state = self.lock();
        if state.fits(
            batch.entries.len(),
            batch.data_bytes(),
            self.max_entries,
            self.max_bytes,
        ) {
            state.add(batch);
            Ok(())
        } else {
            Err(batch)
        }
    }

    /// Drops every entry of (`job_id`, `attempt`) with a sequence number up to
    /// `acked_sequence` (the server has stored them), and wakes waiting pushers.
    pub fn ack(&self, job_id: JobId, attempt: u32, acked_sequence: u64) {
        let mut state = self.lock();
        let mut removed = 0;
        let mut removed_bytes = 0;
        state.batches.retain_mut(|b| {
            if b.job_id != job_id || b.attempt != attempt {
                return true;
            }
            let before = b.entries.len();
            b.entries.retain(|e| {
                let keep = e.sequence > acked_sequence;
                if !keep {
                    removed_bytes += e.data.len();
                }
                keep
            });
            removed += before - b.entries.len();
            !b.entries.is_empty()
        });
        state.entries -= removed;
        state.bytes -= removed_bytes;
        drop(state);
        if removed > 0 {
            self.space.notify_waiters();
        }
    }

    /// The unacknowledged batches, oldest first, for resending.
    #[must_use]
    pub fn pending(&self) -> Vec<LogBatch> {
        self.lock().batches.iter().cloned().collect()
    }

    /// The unacknowledged entries not yet sent, oldest first: of each batch only the
    /// entries above `sent(job_id, attempt)` (the highest sequence already sent for that
    /// attempt), and no batch at all when none is. A sender calls this on every wake-up,
    /// so it copies only what is new rather than everything awaiting acknowledgement.
    #[must_use]
    pub fn unsent(&self, sent: impl Fn(JobId, u32) -> u64) -> Vec<LogBatch> {
        let state = self.lock();
        let mut out = Vec::new();
        for b in &state.batches {
            let already = sent(b.job_id, b.attempt);
            if b.last_sequence().is_none_or(|last| last <= already) {
                continue;
            }
            let start = b.entries.partition_point(|e| e.sequence <= already);
            out.push(LogBatch {
                job_id: b.job_id,
                attempt: b.attempt,
                entries: b.entries[start..].to_vec(),
            });
        }
        out
    }

    /// Number of unacknowledged entries.
    #[must_use]
    pub fn len_entries(&self) -> usize {
        self.lock().entries
    }

    /// Bytes of data in the unacknowledged entries.
    #[must_use]
    pub fn len_bytes(&self) -> usize {
        self.lock().bytes
    }

    /// Whether everything was acknowledged.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len_entries() == 0
    }

    /// The capacity in entries.
    #[must_use]
    pub fn max_entries(&self) -> usize {
        self.max_entries
    }

    /// The capacity in bytes of data.
    #[must_use]
    pub fn max_bytes(&self) -> usize {
        self.max_bytes
    }
}
