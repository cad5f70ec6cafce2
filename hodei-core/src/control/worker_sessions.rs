//! The workers connected to this replica: their open streams, and what the
//! scheduler needs to know of each to place a job without reading every
//! worker from the store.
//!
//! Only a worker with an open stream here can be given a job by this
//! replica, so the scheduling snapshot is built from these sessions. Each
//! session keeps a [`WorkerView`] refreshed from every worker record this
//! replica writes ([`WorkerSessions::observe`]) and, for writes made by
//! other replicas, from the periodic pass over all workers. A stale view
//! costs at most a refused assignment: binding a job re-reads the worker
//! from the store and checks it there.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::{broadcast, mpsc};

use crate::domain::ids::WorkerId;
use crate::domain::worker::Worker;
use crate::domain::worker_protocol::WorkerCommand;
use crate::scheduler::WorkerView;

use super::lock;

/// Outbound buffer per worker stream. Sends of commands and acks await when
/// full; keep-alives are dropped.
const OUTBOUND_CAPACITY: usize = 1024;

struct Session {
    conn_id: u64,
    tx: mpsc::Sender<WorkerCommand>,
    view: WorkerView,
}

/// The open worker streams of this replica.
pub(super) struct WorkerSessions {
    sessions: Mutex<HashMap<WorkerId, Session>>,
    /// Workers being provisioned for a specific job: no other job is given
    /// to them between their registration and that binding.
    reserved: Mutex<HashSet<WorkerId>>,
    next_conn: AtomicU64,
    registered: broadcast::Sender<WorkerId>,
}

impl WorkerSessions {
    pub(super) fn new() -> Self {
        Self {
            sessions: Mutex::new(HashMap::new()),
            reserved: Mutex::new(HashSet::new()),
            next_conn: AtomicU64::new(1),
            registered: broadcast::channel(256).0,
        }
    }

    /// Opens a session for a worker that has just registered (replacing an
    /// older connection of the same worker): returns its connection id and
    /// the receiver of its commands.
    pub(super) fn open(&self, worker: &Worker) -> (u64, mpsc::Receiver<WorkerCommand>) {
        let (tx, rx) = mpsc::channel(OUTBOUND_CAPACITY);
        let conn_id = self.next_conn.fetch_add(1, Ordering::Relaxed);
        lock(&self.sessions).insert(
            worker.id(),
            Session {
                conn_id,
                tx,
                view: WorkerView::from_worker(worker),
            },
        );
        let _ = self.registered.send(worker.id());
        (conn_id, rx)
    }

    /// Workers whose stream opened, from now on.
    pub(super) fn subscribe_registered(&self) -> broadcast::Receiver<WorkerId> {
        self.registered.subscribe()
    }

    /// Ends the session if it is still this connection's; whether it was.
    pub(super) fn close(&self, worker_id: WorkerId, conn_id: u64) -> bool {
        let mut sessions = lock(&self.sessions);
        if sessions
            .get(&worker_id)
            .is_some_and(|s| s.conn_id == conn_id)
        {
            sessions.remove(&worker_id);
            true
        } else {
            false
        }
    }

    /// Ends the worker's session, whichever connection it is; whether there was one.
    pub(super) fn remove(&self, worker_id: WorkerId) -> bool {
        lock(&self.sessions).remove(&worker_id).is_some()
    }

    /// Ends every session (shutdown): the streams close.
    pub(super) fn clear(&self) {
        lock(&self.sessions).clear();
    }

    /// Whether the worker has an open stream here.
    pub(super) fn is_connected(&self, worker_id: WorkerId) -> bool {
        lock(&self.sessions).contains_key(&worker_id)
    }

    /// Sends a command, waiting while its stream's buffer is full; false when
    /// the worker has no stream here or it closed.
    pub(super) async fn send(&self, worker_id: WorkerId, cmd: WorkerCommand) -> bool {
        let tx = match lock(&self.sessions).get(&worker_id) {
            Some(s) => s.tx.clone(),
            None => return false,
        };
        tx.send(cmd).await.is_ok()
    }

    /// Sends a command to every connected worker, dropping it where a stream is full.
    pub(super) fn try_send_all(&self, cmd: &WorkerCommand) {
        let txs: Vec<_> = lock(&self.sessions)
            .values()
            .map(|s| s.tx.clone())
            .collect();
        for tx in txs {
            let _ = tx.try_send(cmd.clone());
        }
    }

    /// Takes note of a worker record just read or written: its session's view
    /// follows it. A worker without a session here is ignored.
    pub(super) fn observe(&self, worker: &Worker) {
        if let Some(s) = lock(&self.sessions).get_mut(&worker.id()) {
            s.view = WorkerView::from_worker(worker);
        }
    }

    /// Takes note of every worker record of a full listing.
    pub(super) fn observe_all(&self, workers: &[Worker]) {
        let mut sessions = lock(&self.sessions);
        for w in workers {
            if let Some(s) = sessions.get_mut(&w.id()) {
                s.view = WorkerView::from_worker(w);
            }
        }
    }

    /// Keeps a worker for the job it is being provisioned for.
    pub(super) fn reserve(&self, worker_id: WorkerId) {
        lock(&self.reserved).insert(worker_id);
    }

    /// Ends a reservation.
    pub(super) fn unreserve(&self, worker_id: WorkerId) {
        lock(&self.reserved).remove(&worker_id);
    }

    /// What the scheduler may place jobs on: every connected worker that is
    /// not gone, a reserved one with no free slot.
    pub(super) fn views(&self) -> Vec<WorkerView> {
        let reserved = lock(&self.reserved).clone();
        lock(&self.sessions)
            .values()
            .filter(|s| !s.view.state.is_gone())
            .map(|s| {
                let mut v = s.view.clone();
                if reserved.contains(&v.id) {
                    v.free_slots = 0;
                }
                v
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::ids::{JobId, ProviderId};
    use crate::domain::worker::WorkerHandle;

    fn ready_worker() -> Worker {
        let mut w = Worker::new(WorkerId::new(), ProviderId::new());
        w.created(WorkerHandle::new(w.id(), w.provider_id(), "ext"))
            .unwrap();
        w.registered().unwrap();
        w
    }

    #[test]
    fn views_follow_observed_records_and_reservations() {
        let s = WorkerSessions::new();
        let mut w = ready_worker();
        let (_conn, _rx) = s.open(&w);
        assert_eq!(s.views()[0].free_slots, 1);
        w.assign(JobId::new()).unwrap();
        s.observe(&w);
        assert_eq!(s.views()[0].free_slots, 0, "the assignment is seen");
        let other = ready_worker();
        let (_c2, _rx2) = s.open(&other);
        s.reserve(other.id());
        let free: Vec<_> = s.views().into_iter().filter(|v| v.free_slots > 0).collect();
        assert!(free.is_empty(), "a reserved worker takes no other job");
        s.unreserve(other.id());
        assert_eq!(s.views().iter().filter(|v| v.free_slots > 0).count(), 1);
    }

    #[tokio::test]
    async fn an_old_connection_does_not_close_the_new_one() {
        let s = WorkerSessions::new();
        let w = ready_worker();
        let (old, _rx1) = s.open(&w);
        let (_new, mut rx2) = s.open(&w);
        assert!(!s.close(w.id(), old));
        assert!(s.is_connected(w.id()));
        let at = chrono::Utc::now();
        assert!(s.send(w.id(), WorkerCommand::KeepAlive { at }).await);
        assert_eq!(rx2.recv().await, Some(WorkerCommand::KeepAlive { at }));
        s.remove(w.id());
        assert!(!s.send(w.id(), WorkerCommand::KeepAlive { at }).await);
    }
}
