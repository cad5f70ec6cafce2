//! Placements in flight during one dispatch pass.
//!
//! A pass decides in queue order on its snapshot (each decision takes its
//! worker slot or provider room there at once), then carries the decisions
//! out side by side: an assignment on Postgres is several round trips in
//! sequence (claim, worker slot, job, entry), and placing one job at a time
//! capped one replica at about one job per four round trips whatever the
//! workers. Decisions for distinct workers are independent: each claims its
//! own queue entry and takes its own worker slot, so they need no order.
//!
//! The pass waits for every placement before it ends, so the next pass's
//! snapshot sees the slots they took.

use std::future::Future;

use tokio::task::JoinSet;
use tracing::Instrument;

/// Placements started by one pass, at most `limit` at a time.
#[derive(Debug)]
pub(super) struct Placements {
    tasks: JoinSet<()>,
    limit: usize,
}

impl Placements {
    /// Room for `limit` placements side by side (at least one).
    pub(super) fn new(limit: usize) -> Self {
        Self {
            tasks: JoinSet::new(),
            limit: limit.max(1),
        }
    }

    /// Starts a placement; first waits for one to end when `limit` are running.
    /// A placement runs as its own task, so it goes on while the pass reads
    /// the next jobs.
    pub(super) async fn start(&mut self, placement: impl Future<Output = ()> + Send + 'static) {
        while self.tasks.len() >= self.limit {
            self.join_one().await;
        }
        self.tasks.spawn(placement.in_current_span());
    }

    /// Waits for every placement started.
    pub(super) async fn finish(mut self) {
        while !self.tasks.is_empty() {
            self.join_one().await;
        }
    }

    async fn join_one(&mut self) {
        if let Some(Err(e)) = self.tasks.join_next().await {
            // A placement reports its own errors; a panic is a bug, and what
            // it left half done is the lease's and the audit's to undo.
            tracing::error!(error = %e, "a job placement task failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn runs_at_most_limit_side_by_side_and_finish_waits_for_all() {
        let running = Arc::new(AtomicUsize::new(0));
        let most = Arc::new(AtomicUsize::new(0));
        let done = Arc::new(AtomicUsize::new(0));
        let mut placements = Placements::new(3);
        for _ in 0..10 {
            let (running, most, done) = (running.clone(), most.clone(), done.clone());
            placements
                .start(async move {
                    let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                    most.fetch_max(now, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(5)).await;
                    running.fetch_sub(1, Ordering::SeqCst);
                    done.fetch_add(1, Ordering::SeqCst);
                })
                .await;
        }
        placements.finish().await;
        assert_eq!(done.load(Ordering::SeqCst), 10);
        assert_eq!(
            most.load(Ordering::SeqCst),
            3,
            "three side by side, no more"
        );
    }

    #[tokio::test]
    async fn a_panicking_placement_does_not_stop_the_others() {
        let done = Arc::new(AtomicUsize::new(0));
        let mut placements = Placements::new(2);
        placements.start(async { panic!("boom") }).await;
        let d = done.clone();
        placements
            .start(async move {
                d.fetch_add(1, Ordering::SeqCst);
            })
            .await;
        placements.finish().await;
        assert_eq!(done.load(Ordering::SeqCst), 1);
    }
}
