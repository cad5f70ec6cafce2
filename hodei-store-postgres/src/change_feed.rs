//! Whether what a dispatch pass reads on every pass (the scheduling
//! strategy, the providers, the alive workers per provider) changed since a
//! given moment: a generation counter moved by every change this replica
//! writes and by every change another replica announces on
//! [`CHANGES_CHANNEL`] (triggers on the three tables, migration
//! `change_notices`). Reads taken at one generation are still current while
//! the generation stays; see [`crate::kept_read::KeptRead`].
//!
//! Only a listening feed vouches for the other replicas: until its first
//! `LISTEN` and from a lost connection to the next one, it gives no
//! generation, so nothing is kept across a gap in which notices were missed.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;
use tokio::sync::oneshot;

use crate::listen::{Hearing, listen};

/// The channel of the triggers on `scheduler_settings`, `providers` and
/// `worker_alive_counts` (payload: the table's name).
pub const CHANGES_CHANNEL: &str = "hodei_dispatch_inputs";

/// The generation of the dispatch inputs as this replica knows them.
#[derive(Debug)]
pub(crate) struct ChangeFeed {
    pool: PgPool,
    state: Arc<FeedState>,
    /// Set once the LISTEN loop is started; dropping it stops the loop.
    stop: OnceLock<oneshot::Sender<()>>,
}

#[derive(Debug, Default)]
struct FeedState {
    generation: AtomicU64,
    listening: AtomicBool,
}

impl FeedState {
    fn bump(&self) {
        self.generation.fetch_add(1, Ordering::SeqCst);
    }
}

impl ChangeFeed {
    /// A feed on `pool`'s database; it starts listening on first use inside
    /// a tokio runtime.
    pub(crate) fn new(pool: PgPool) -> Self {
        Self {
            pool,
            state: Arc::default(),
            stop: OnceLock::new(),
        }
    }

    /// The current generation, if the feed is listening (else reads cannot
    /// be kept: a change by another replica could go unheard).
    pub(crate) fn generation(&self) -> Option<u64> {
        self.start();
        // The generation first: a reconnection between the two loads moves
        // it past the value returned, which then matches nothing kept.
        let generation = self.state.generation.load(Ordering::SeqCst);
        self.state
            .listening
            .load(Ordering::SeqCst)
            .then_some(generation)
    }

    /// This replica changed one of the inputs (after its write is done):
    /// reads taken before are stale.
    pub(crate) fn changed(&self) {
        self.state.bump();
    }

    fn start(&self) {
        if self.stop.get().is_some() {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let (tx, rx) = oneshot::channel();
        if self.stop.set(tx).is_err() {
            // Another caller started it first.
            return;
        }
        let hearing = Generation(Arc::clone(&self.state));
        // A connection of its own, not one of the pool's: the pool's are
        // for the statements of the dispatch path.
        let own = PgPoolOptions::new()
            .max_connections(1)
            .connect_lazy_with((*self.pool.connect_options()).clone());
        let main = self.pool.clone();
        runtime.spawn(listen(own, CHANGES_CHANNEL, hearing, async move {
            // The feed (the sender) dropped, or the store's pool closed.
            tokio::select! {
                _ = rx => {}
                () = main.close_event() => {}
            }
        }));
    }
}

/// The [`Hearing`] of a [`ChangeFeed`]: every notice, connection and loss
/// moves the generation. Dropped with its loop (the feed dropped, the pool
/// closed, the runtime shut down), it stops vouching for good.
#[derive(Debug)]
struct Generation(Arc<FeedState>);

impl Hearing for Generation {
    fn connected(&mut self) -> bool {
        // Notices may have been missed before this point.
        self.0.bump();
        self.0.listening.store(true, Ordering::SeqCst);
        true
    }

    fn notice(&mut self, _payload: &str) -> bool {
        self.0.bump();
        true
    }

    fn lost(&mut self) {
        self.0.listening.store(false, Ordering::SeqCst);
        self.0.bump();
    }
}

impl Drop for Generation {
    fn drop(&mut self) {
        self.lost();
    }
}

#[cfg(test)]
impl ChangeFeed {
    /// A feed that vouches as if listening, without a connection.
    pub(crate) fn vouching(pool: PgPool) -> Self {
        let feed = Self::new(pool);
        let (tx, _) = oneshot::channel();
        let _ = feed.stop.set(tx);
        feed.state.listening.store(true, Ordering::SeqCst);
        feed
    }

    /// As when the listener's connection is lost.
    pub(crate) fn lose_connection(&self) {
        Generation(Arc::clone(&self.state)).lost();
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_migration_announces_on_the_feeds_channel() {
        let sql = include_str!("../migrations/20261208000001_change_notices.sql");
        assert!(sql.contains(&format!("pg_notify('{}'", super::CHANGES_CHANNEL)));
    }
}
