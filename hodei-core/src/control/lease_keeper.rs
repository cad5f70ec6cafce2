//! Keeps a queue lease alive while a job is being provisioned a worker.
//!
//! The queue entry of a job is the store's record that the job still needs a
//! worker. It is deleted only once the job is bound to one; until then the
//! replica provisioning it holds the entry's lease and renews it. If that
//! replica dies (or stalls past the lease), the lease expires, the leader
//! returns the entry to the queue and the next dispatch pass gives the job
//! back: nothing in memory is needed to find it.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::store::{JobQueue, Lease, StoreError};

/// A lease renewed in the background until [`LeaseKeeper::finish`].
pub(super) struct LeaseKeeper {
    current: watch::Receiver<Option<Lease>>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl LeaseKeeper {
    /// Renews `lease` every third of `lease_for`. A renewal refused as stale
    /// means another replica (the leader's rescuer) has taken the entry back:
    /// the keeper stops and [`LeaseKeeper::finish`] returns `None`.
    pub(super) fn start(queue: Arc<dyn JobQueue>, lease: Lease, lease_for: Duration) -> Self {
        let (tx, current) = watch::channel(Some(lease));
        let (stop, mut stopped) = tokio::sync::oneshot::channel();
        let every = (lease_for / 3).max(Duration::from_millis(100));
        let task = tokio::spawn(async move {
            loop {
                tokio::select! {
                    () = tokio::time::sleep(every) => {}
                    _ = &mut stopped => return,
                }
                let Some(held) = tx.borrow().clone() else {
                    return;
                };
                match queue.renew(&held, lease_for).await {
                    Ok(renewed) => {
                        let _ = tx.send(Some(renewed));
                    }
                    Err(StoreError::StaleLease { job_id }) => {
                        tracing::warn!(%job_id, "queue lease lost while provisioning (rescued by the leader, or the job was cancelled)");
                        let _ = tx.send(None);
                        return;
                    }
                    // A store outage: keep trying; the lease may still be valid.
                    Err(e) => {
                        tracing::warn!(job_id = %held.entry.job_id, error = %e, "renewing a queue lease failed")
                    }
                }
            }
        });
        Self {
            current,
            stop: Some(stop),
            task,
        }
    }

    /// Stops renewing; returns the lease if it is still held.
    pub(super) async fn finish(mut self) -> Option<Lease> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        // Wait for an in-flight renewal, so the returned lease is current.
        let _ = (&mut self.task).await;
        self.current.borrow().clone()
    }
}

impl Drop for LeaseKeeper {
    fn drop(&mut self) {
        self.task.abort();
    }
}
