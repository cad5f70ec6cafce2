//! The log hub: stores each batch, then fans it out to live subscribers.
//!
//! Subscribers replay from the store and then follow a per-job broadcast; when
//! a subscriber falls behind (broadcast lag) it re-reads from the store, so a
//! slow reader never loses lines and a fast job is never slowed by a reader.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::broadcast;

use crate::domain::ids::JobId;
use crate::domain::logs::LogEntry;
use crate::store::{LogCursor, LogStore, StoreError, StoredLogEntry};

/// Entries of one attempt, as fanned out to subscribers. A chunk without
/// entries says that another replica stored entries of the job: subscribers
/// read them from the store.
#[derive(Debug, Clone)]
pub struct LogChunk {
    /// Attempt.
    pub attempt: u32,
    /// Entries in sequence order.
    pub entries: Arc<Vec<LogEntry>>,
}

impl LogChunk {
    /// The wake-up sent when another replica stored entries of the job.
    #[must_use]
    pub fn stored_elsewhere() -> Self {
        Self {
            attempt: 0,
            entries: Arc::new(Vec::new()),
        }
    }

    /// Whether this is a [`LogChunk::stored_elsewhere`] wake-up.
    #[must_use]
    pub fn is_stored_elsewhere(&self) -> bool {
        self.entries.is_empty()
    }
}

/// The per-job fan-out channels.
type Fanout = Mutex<HashMap<JobId, broadcast::Sender<LogChunk>>>;

/// Stores and fans out job logs.
pub struct LogHub {
    store: Arc<dyn LogStore>,
    live: Arc<Fanout>,
    /// Whether the task relaying the store's "appended elsewhere" wake-ups runs.
    relaying: std::sync::atomic::AtomicBool,
    /// Dropped with the hub: ends the relay task (and the store's listener).
    relay_stop: Mutex<Option<tokio::sync::oneshot::Sender<()>>>,
}

impl std::fmt::Debug for LogHub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogHub").finish_non_exhaustive()
    }
}

const FANOUT_CAPACITY: usize = 256;

impl LogHub {
    /// A hub over a log store.
    pub fn new(store: Arc<dyn LogStore>) -> Self {
        Self {
            store,
            live: Arc::new(Mutex::new(HashMap::new())),
            relaying: std::sync::atomic::AtomicBool::new(false),
            relay_stop: Mutex::new(None),
        }
    }

    /// Starts, once and inside a runtime, the task that turns the store's
    /// "appended elsewhere" notices into wake-ups of this replica's
    /// subscribers. It ends with the hub.
    fn relay_remote_appends(&self) {
        use std::sync::atomic::Ordering;
        if self.relaying.load(Ordering::Relaxed) {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        if self.relaying.swap(true, Ordering::Relaxed) {
            return;
        }
        let Some(mut appended) = self.store.appended_elsewhere() else {
            return;
        };
        let live = Arc::downgrade(&self.live);
        let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
        *self
            .relay_stop
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(stop);
        runtime.spawn(async move {
            use futures::StreamExt;
            loop {
                let job = tokio::select! {
                    next = appended.next() => match next {
                        Some(job) => job,
                        None => return,
                    },
                    _ = &mut stopped => return,
                };
                let Some(live) = live.upgrade() else { return };
                let sender = live
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .get(&job)
                    .cloned();
                if let Some(sender) = sender.filter(|s| s.receiver_count() > 0) {
                    let _ = sender.send(LogChunk::stored_elsewhere());
                }
            }
        });
    }

    /// The underlying store.
    #[must_use]
    pub fn store(&self) -> &Arc<dyn LogStore> {
        &self.store
    }

    fn sender(&self, job: JobId) -> broadcast::Sender<LogChunk> {
        let mut live = self
            .live
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        live.entry(job)
            .or_insert_with(|| broadcast::channel(FANOUT_CAPACITY).0)
            .clone()
    }

    /// Stores a batch (idempotently) and publishes the new entries. Returns the
    /// highest contiguous stored sequence, for the agent's acknowledgement.
    pub async fn append(
        &self,
        job: JobId,
        attempt: u32,
        entries: Vec<LogEntry>,
    ) -> Result<u64, StoreError> {
        let acked = self.store.append(job, attempt, &entries).await?;
        let has_subscribers = {
            let live = self
                .live
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            live.get(&job).is_some_and(|s| s.receiver_count() > 0)
        };
        if has_subscribers && !entries.is_empty() {
            // Subscribers dedupe by cursor, so a resent batch is harmless.
            let _ = self.sender(job).send(LogChunk {
                attempt,
                entries: Arc::new(entries),
            });
        }
        Ok(acked)
    }

    /// Subscribes to new entries of a job. Subscribe *before* replaying from
    /// the store so nothing falls between the two.
    pub fn subscribe(&self, job: JobId) -> broadcast::Receiver<LogChunk> {
        self.relay_remote_appends();
        self.sender(job).subscribe()
    }

    /// Reads stored entries after a cursor.
    pub async fn read(
        &self,
        job: JobId,
        after: LogCursor,
        limit: usize,
    ) -> Result<Vec<StoredLogEntry>, StoreError> {
        self.store.read(job, after, limit).await
    }

    /// Drops the fan-out channel of a finished job (subscribers see it close).
    pub fn finish(&self, job: JobId) {
        let mut live = self
            .live
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        live.remove(&job);
    }
}
