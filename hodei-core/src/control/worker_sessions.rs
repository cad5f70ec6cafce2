//! The workers connected to this replica: their open streams, and what the
//! scheduler needs to know of each to place a job without reading every
//! worker from the store.
//!
//! Only a worker with an open stream here can be given a job by this
//! replica, so the scheduling snapshot is built from these sessions. Each
//! session keeps a [`WorkerView`] refreshed from every worker record this
//! replica writes ([`WorkerSessions::observe`]) and, for writes made by
//! other replicas, from the periodic pass over all workers, and the newest
//! record it came from. A stale view or record costs at most a refused
//! assignment: binding a job checks the worker's version in the store, and
//! reads it again when it moved on.
//!
//! The sessions also keep an index of the workers that can take a job now,
//! updated on every change to a view, a session or a reservation, so a
//! scheduling pass reads only those (with 10,000 idle-but-busy agents it
//! would otherwise copy and scan all of them for each job).

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use indexmap::IndexMap;
use tokio::sync::{mpsc, oneshot};

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
    /// The newest record of the worker seen here (by version): the copy a
    /// dispatch binds from without reading the worker first. Stale, it only
    /// costs the bind a refusal and a read.
    record: Worker,
}

/// The sessions, the reservations, and the index of the workers that can
/// take a job now, under one lock so the index never disagrees with them.
#[derive(Default)]
struct State {
    sessions: HashMap<WorkerId, Session>,
    /// Workers being provisioned for a specific job: no other job is given
    /// to them between their registration and that binding.
    reserved: HashSet<WorkerId>,
    /// The connected workers that can take a job now (`Ready`/`Busy` with a
    /// free slot, not reserved), each with a copy of its session's view:
    /// what a scheduling snapshot is built from, so a pass never walks the
    /// idle-but-full or draining ones. The views sit side by side, so a
    /// snapshot copies them in one sweep: reaching each through the sessions
    /// map cost a cache miss per worker (1–3 ms per pass at 10,000 idle
    /// workers, which every dispatch waited for).
    candidates: IndexMap<WorkerId, WorkerView>,
    /// Provisioning sagas waiting for their worker's stream to open, by
    /// worker: an opening wakes only its own waiters (a broadcast woke
    /// every saga at each registration, O(N²) when N workers start at once).
    awaiting: HashMap<WorkerId, Vec<oneshot::Sender<()>>>,
}

impl State {
    /// Puts a worker in or out of the candidate index, from its session and
    /// reservation as they are now. Every change to either calls this.
    fn reindex(&mut self, id: WorkerId) {
        let view = self
            .sessions
            .get(&id)
            .filter(|s| s.view.takes_jobs() && !self.reserved.contains(&id))
            .map(|s| s.view.clone());
        match view {
            Some(v) => {
                self.candidates.insert(id, v);
            }
            None => {
                self.candidates.swap_remove(&id);
            }
        }
    }

    fn set_view(&mut self, worker: &Worker) {
        if let Some(s) = self.sessions.get_mut(&worker.id()) {
            s.view = WorkerView::from_worker(worker);
            if worker.version() > s.record.version() {
                s.record = worker.clone();
            }
            self.reindex(worker.id());
        }
    }

    fn remove(&mut self, id: WorkerId) -> bool {
        let had = self.sessions.remove(&id).is_some();
        self.candidates.swap_remove(&id);
        had
    }
}

/// The open worker streams of this replica.
pub(super) struct WorkerSessions {
    state: Mutex<State>,
    next_conn: AtomicU64,
}

impl WorkerSessions {
    pub(super) fn new() -> Self {
        Self {
            state: Mutex::new(State::default()),
            next_conn: AtomicU64::new(1),
        }
    }

    /// Opens a session for a worker that has just registered (replacing an
    /// older connection of the same worker): returns its connection id and
    /// the receiver of its commands.
    pub(super) fn open(&self, worker: &Worker) -> (u64, mpsc::Receiver<WorkerCommand>) {
        let (tx, rx) = mpsc::channel(OUTBOUND_CAPACITY);
        let conn_id = self.next_conn.fetch_add(1, Ordering::Relaxed);
        {
            let mut state = lock(&self.state);
            state.sessions.insert(
                worker.id(),
                Session {
                    conn_id,
                    tx,
                    view: WorkerView::from_worker(worker),
                    record: worker.clone(),
                },
            );
            state.reindex(worker.id());
            for waiter in state.awaiting.remove(&worker.id()).unwrap_or_default() {
                let _ = waiter.send(());
            }
        }
        (conn_id, rx)
    }

    /// Starts waiting for this worker's stream to open (see
    /// [`RegistrationWait`]); already done when it is open now.
    pub(super) fn wait_open(&self, worker_id: WorkerId) -> RegistrationWait<'_> {
        let mut state = lock(&self.state);
        let pending = if state.sessions.contains_key(&worker_id) {
            None
        } else {
            let (tx, rx) = oneshot::channel();
            state.awaiting.entry(worker_id).or_default().push(tx);
            Some(rx)
        };
        RegistrationWait {
            sessions: self,
            worker_id,
            pending,
        }
    }

    /// Ends the session if it is still this connection's; whether it was.
    pub(super) fn close(&self, worker_id: WorkerId, conn_id: u64) -> bool {
        let mut state = lock(&self.state);
        if state
            .sessions
            .get(&worker_id)
            .is_some_and(|s| s.conn_id == conn_id)
        {
            state.remove(worker_id)
        } else {
            false
        }
    }

    /// Ends the worker's session, whichever connection it is; whether there was one.
    pub(super) fn remove(&self, worker_id: WorkerId) -> bool {
        lock(&self.state).remove(worker_id)
    }

    /// Ends every session (shutdown): the streams close.
    pub(super) fn clear(&self) {
        let mut state = lock(&self.state);
        state.sessions.clear();
        state.candidates.clear();
    }

    /// Whether the worker has an open stream here.
    pub(super) fn is_connected(&self, worker_id: WorkerId) -> bool {
        lock(&self.state).sessions.contains_key(&worker_id)
    }

    /// Sends a command, waiting while its stream's buffer is full; false when
    /// the worker has no stream here or it closed.
    pub(super) async fn send(&self, worker_id: WorkerId, cmd: WorkerCommand) -> bool {
        let tx = match lock(&self.state).sessions.get(&worker_id) {
            Some(s) => s.tx.clone(),
            None => return false,
        };
        tx.send(cmd).await.is_ok()
    }

    /// Sends a command to every connected worker, dropping it where a stream is full.
    pub(super) fn try_send_all(&self, cmd: &WorkerCommand) {
        let txs: Vec<_> = lock(&self.state)
            .sessions
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
        lock(&self.state).set_view(worker);
    }

    /// The newest record of a connected worker seen by this replica.
    pub(super) fn record(&self, worker_id: WorkerId) -> Option<Worker> {
        lock(&self.state)
            .sessions
            .get(&worker_id)
            .map(|s| s.record.clone())
    }

    /// Takes note of every worker record of a full listing.
    pub(super) fn observe_all(&self, workers: &[Worker]) {
        let mut state = lock(&self.state);
        for w in workers {
            state.set_view(w);
        }
    }

    /// Keeps a worker for the job it is being provisioned for.
    pub(super) fn reserve(&self, worker_id: WorkerId) {
        let mut state = lock(&self.state);
        state.reserved.insert(worker_id);
        state.reindex(worker_id);
    }

    /// Ends a reservation.
    pub(super) fn unreserve(&self, worker_id: WorkerId) {
        let mut state = lock(&self.state);
        state.reserved.remove(&worker_id);
        state.reindex(worker_id);
    }

    /// What the scheduler may place jobs on: the connected workers that can
    /// take a job now (not reserved, a free slot, `Ready` or `Busy`). The
    /// others could never be chosen, so they are left out; the strategies
    /// read nothing else of the workers. O(candidates), not O(sessions).
    pub(super) fn views(&self) -> Vec<WorkerView> {
        lock(&self.state).candidates.values().cloned().collect()
    }
}

/// A wait for one worker's stream to open, from [`WorkerSessions::wait_open`].
/// Dropping it stops waiting and forgets the waiter.
pub(super) struct RegistrationWait<'a> {
    sessions: &'a WorkerSessions,
    worker_id: WorkerId,
    /// `None` once the stream has opened.
    pending: Option<oneshot::Receiver<()>>,
}

impl RegistrationWait<'_> {
    /// Returns once the stream has opened (since the wait began); at once
    /// when it had already. Cancel-safe: it can be polled again in a loop.
    pub(super) async fn opened(&mut self) {
        if let Some(rx) = &mut self.pending {
            // The sender is only dropped unsent when the sessions are: then
            // nothing will open, and the caller's deadline ends the wait.
            if rx.await.is_err() {
                std::future::pending::<()>().await;
            }
            self.pending = None;
        }
    }
}

impl Drop for RegistrationWait<'_> {
    fn drop(&mut self) {
        if self.pending.take().is_some() {
            let mut state = lock(&self.sessions.state);
            if let Some(waiters) = state.awaiting.get_mut(&self.worker_id) {
                waiters.retain(|w| !w.is_closed());
                if waiters.is_empty() {
                    state.awaiting.remove(&self.worker_id);
                }
            }
        }
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

    #[tokio::test]
    async fn a_registration_wait_ends_only_when_its_own_worker_opens() {
        use std::time::Duration;
        let s = WorkerSessions::new();
        let (mine, other) = (ready_worker(), ready_worker());
        let mut wait = s.wait_open(mine.id());
        let (_c, _rx) = s.open(&other);
        assert!(
            tokio::time::timeout(Duration::from_millis(50), wait.opened())
                .await
                .is_err(),
            "another worker's stream does not end the wait"
        );
        let (_c2, _rx2) = s.open(&mine);
        tokio::time::timeout(Duration::from_secs(5), wait.opened())
            .await
            .expect("its own stream ends the wait");
        // Open already: done at once.
        let mut again = s.wait_open(mine.id());
        tokio::time::timeout(Duration::from_millis(50), again.opened())
            .await
            .expect("an open stream is no wait");
        assert!(lock(&s.state).awaiting.is_empty());
    }

    #[test]
    fn a_dropped_registration_wait_is_forgotten() {
        let s = WorkerSessions::new();
        let id = WorkerId::new();
        let first = s.wait_open(id);
        let second = s.wait_open(id);
        drop(first);
        assert_eq!(lock(&s.state).awaiting[&id].len(), 1, "the other waits on");
        drop(second);
        assert!(lock(&s.state).awaiting.is_empty(), "nothing left behind");
    }

    #[test]
    fn views_follow_observed_records_and_reservations() {
        let s = WorkerSessions::new();
        let mut w = ready_worker();
        let (_conn, _rx) = s.open(&w);
        assert_eq!(s.views()[0].free_slots, 1);
        w.assign(JobId::new()).unwrap();
        s.observe(&w);
        assert!(s.views().is_empty(), "the assignment is seen: no slot left");
        let other = ready_worker();
        let (_c2, _rx2) = s.open(&other);
        s.reserve(other.id());
        assert!(s.views().is_empty(), "a reserved worker takes no other job");
        s.unreserve(other.id());
        assert_eq!(s.views().len(), 1);
        assert_eq!(s.views()[0].id, other.id());
        w.release(w.current_jobs()[0]).unwrap();
        s.observe(&w);
        assert_eq!(s.views().len(), 2, "the release is seen");
    }

    /// The index, recomputed from scratch: every session whose view takes
    /// jobs and that is not reserved.
    fn brute_force(s: &WorkerSessions) -> HashSet<WorkerId> {
        let state = lock(&s.state);
        state
            .sessions
            .iter()
            .filter(|(id, sess)| !state.reserved.contains(id) && sess.view.takes_jobs())
            .map(|(id, _)| *id)
            .collect()
    }

    /// One change to a worker or its session, on worker `n % WORKERS`.
    #[derive(Debug, Clone)]
    enum Op {
        Open(usize),
        CloseCurrent(usize),
        CloseStale(usize),
        Remove(usize),
        Assign(usize),
        Release(usize),
        Drain(usize),
        Disconnect(usize),
        Reregister(usize),
        Terminate(usize),
        Reserve(usize),
        Unreserve(usize),
        ObserveAll,
        Clear,
    }

    const WORKERS: usize = 4;

    fn op() -> impl proptest::strategy::Strategy<Value = Op> {
        use proptest::prelude::*;
        let w = 0..WORKERS;
        prop_oneof![
            w.clone().prop_map(Op::Open),
            w.clone().prop_map(Op::CloseCurrent),
            w.clone().prop_map(Op::CloseStale),
            w.clone().prop_map(Op::Remove),
            w.clone().prop_map(Op::Assign),
            w.clone().prop_map(Op::Release),
            w.clone().prop_map(Op::Drain),
            w.clone().prop_map(Op::Disconnect),
            w.clone().prop_map(Op::Reregister),
            w.clone().prop_map(Op::Terminate),
            w.clone().prop_map(Op::Reserve),
            w.prop_map(Op::Unreserve),
            Just(Op::ObserveAll),
            Just(Op::Clear),
        ]
    }

    proptest::proptest! {
        /// Whatever happens to the workers, their sessions and reservations,
        /// in any order, the candidate index equals its recomputation and
        /// `views()` returns exactly the candidates.
        #[test]
        fn the_candidate_index_follows_every_change(ops in proptest::collection::vec(op(), 1..60)) {
            let s = WorkerSessions::new();
            // Two slots and a lifetime of three jobs: full, free and exhausted all occur.
            let mut workers: Vec<Worker> = (0..WORKERS)
                .map(|_| {
                    let mut w = Worker::new(WorkerId::new(), ProviderId::new())
                        .with_limits(2, Some(3));
                    w.created(WorkerHandle::new(w.id(), w.provider_id(), "ext")).unwrap();
                    w.registered().unwrap();
                    w
                })
                .collect();
            let mut conns: Vec<Option<u64>> = vec![None; WORKERS];
            let mut receivers = Vec::new();
            for op in ops {
                // Domain refusals are part of the game: the record just stays.
                match op {
                    Op::Open(i) => {
                        let (c, rx) = s.open(&workers[i]);
                        conns[i] = Some(c);
                        receivers.push(rx);
                    }
                    Op::CloseCurrent(i) => {
                        if let Some(c) = conns[i] {
                            s.close(workers[i].id(), c);
                        }
                    }
                    Op::CloseStale(i) => {
                        s.close(workers[i].id(), 0);
                    }
                    Op::Remove(i) => {
                        s.remove(workers[i].id());
                    }
                    Op::Assign(i) => {
                        let _ = workers[i].assign(JobId::new());
                        s.observe(&workers[i]);
                    }
                    Op::Release(i) => {
                        if let Some(j) = workers[i].current_jobs().first().copied() {
                            workers[i].release(j).unwrap();
                        }
                        s.observe(&workers[i]);
                    }
                    Op::Drain(i) => {
                        let _ = workers[i].drain();
                        s.observe(&workers[i]);
                    }
                    Op::Disconnect(i) => {
                        let _ = workers[i].disconnected();
                        s.observe(&workers[i]);
                    }
                    Op::Reregister(i) => {
                        let _ = workers[i].registered();
                        s.observe(&workers[i]);
                    }
                    Op::Terminate(i) => {
                        let _ = workers[i].terminating();
                        s.observe(&workers[i]);
                    }
                    Op::Reserve(i) => s.reserve(workers[i].id()),
                    Op::Unreserve(i) => s.unreserve(workers[i].id()),
                    Op::ObserveAll => s.observe_all(&workers),
                    Op::Clear => s.clear(),
                }
                let expected = brute_force(&s);
                {
                    let state = lock(&s.state);
                    let indexed: HashSet<WorkerId> = state.candidates.keys().copied().collect();
                    proptest::prop_assert_eq!(&indexed, &expected);
                    // Each candidate's copy of the view is its session's.
                    for (id, v) in &state.candidates {
                        proptest::prop_assert_eq!(Some(v), state.sessions.get(id).map(|s| &s.view));
                    }
                }
                let viewed: HashSet<WorkerId> = s.views().iter().map(|v| v.id).collect();
                proptest::prop_assert_eq!(viewed.len(), s.views().len(), "no duplicates");
                proptest::prop_assert_eq!(&viewed, &expected);
                for v in s.views() {
                    proptest::prop_assert!(v.takes_jobs());
                }
            }
        }
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
