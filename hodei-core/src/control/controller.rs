//! The job controller: one control loop, woken by events (new job, worker
//! ready, job finished) and by a periodic reconcile; it never busy-polls.
//!
//! Each pass dispatches queued jobs (once per reconcile interval also the warm
//! pools). Beside it, a periodic loop runs the leader's maintenance
//! (timeouts, leases, audit), the pass over every worker (lost and idle ones)
//! and the provider health checks, so none of them delays a dispatch.
//! Dispatch sends a job to an idle worker, or provisions a worker for it (see
//! `provisioner`).

use std::collections::{HashMap, HashSet, VecDeque};
use std::time::{Duration, Instant};

use chrono::Utc;
use tracing::Instrument;

use super::bind::BindAttempt;
use super::events::{DecisionAction, DecisionRecord};
use super::fresh_jobs;
use super::placements::Placements;
use super::providers::estimated_pricing;
use super::{ControlError, ControlPlane, ControlResult, lock};
use crate::domain::ids::{JobId, ProviderId, WorkerId};
use crate::domain::job::{Job, JobState};
use crate::domain::worker::WorkerState;
use crate::scheduler::{Decision, ProviderView, SchedulingSnapshot};
use crate::store::{JobFilter, QueueOrder};
use crate::traces;

/// How long a dispatch pass waits for the jobs being stored as it began
/// (see `fresh_jobs`) before it goes on without them.
const ADMISSION_WAIT: Duration = Duration::from_millis(100);

/// When the loop's periodic work last ran, and so what is due on a turn.
///
/// The passes over every worker (liveness, idle timeouts, warm pools) and the
/// leader's maintenance go by the clock, once per reconcile interval; a wake
/// (new job, worker ready, job finished) only dispatches. With thousands of
/// workers, a pass over all of them on every submit was most of the dispatch
/// latency; the maintenance lists every running job (timeouts) and every
/// concurrency slot, which on every job's completion made a busy server's
/// work grow with the jobs it ran.
#[derive(Debug)]
struct Cadence {
    last_health: Instant,
    last_keep_alive: Instant,
    last_workers_pass: Option<Instant>,
}

/// The periodic work due on one turn of the loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Due {
    workers: bool,
    health_checks: bool,
    keep_alives: bool,
}

impl Cadence {
    fn new(now: Instant) -> Self {
        Self {
            last_health: now,
            last_keep_alive: now,
            last_workers_pass: None,
        }
    }

    /// What is due at `now`; marks it done.
    fn due(&mut self, config: &super::ControlPlaneConfig, now: Instant) -> Due {
        fn take(last: &mut Instant, every: Duration, now: Instant) -> bool {
            let due = now.duration_since(*last) >= every;
            if due {
                *last = now;
            }
            due
        }
        let workers = self
            .last_workers_pass
            .is_none_or(|t| now.duration_since(t) >= config.reconcile_interval);
        if workers {
            self.last_workers_pass = Some(now);
        }
        Due {
            workers,
            health_checks: take(&mut self.last_health, config.health_check_interval, now),
            keep_alives: take(&mut self.last_keep_alive, config.heartbeat_interval, now),
        }
    }
}

impl ControlPlane {
    /// Runs the control loop until [`ControlPlane::shutdown`].
    ///
    /// Two loops: dispatch, woken by events and once per reconcile interval
    /// (then also the warm pools); and, beside it, the periodic work (the
    /// leader's maintenance, the pass over every worker, provider health
    /// checks, keep-alives). A pass over 10,000 workers on Postgres or a
    /// provider's slow health check then never holds a queued job back.
    pub async fn run(self) {
        let periodic = tokio::spawn(self.clone().run_periodic().in_current_span());
        let mut shutdown = self.inner.shutdown.subscribe();
        let mut last_warm: Option<Instant> = None;
        let mut notifications = self.inner.stores.queue.work_notifications();
        tracing::info!("job controller started");
        loop {
            if *shutdown.borrow() {
                break;
            }
            let now = Instant::now();
            let warm_due = last_warm
                .is_none_or(|t| now.duration_since(t) >= self.inner.config.reconcile_interval);
            if warm_due {
                last_warm = Some(now);
            }
            if let Err(e) = self.dispatch_pass(warm_due).await {
                tracing::warn!(error = %e, "dispatch failed");
            }
            let remote = async {
                match notifications.as_mut() {
                    Some(n) => {
                        let _ = futures::StreamExt::next(n).await;
                    }
                    None => std::future::pending::<()>().await,
                }
            };
            tokio::select! {
                _ = self.inner.wake.notified() => {}
                _ = remote => {}
                _ = tokio::time::sleep(self.inner.config.reconcile_interval) => {}
                _ = shutdown.changed() => {}
            }
        }
        if let Err(e) = periodic.await {
            tracing::warn!(error = %e, "the periodic loop failed");
        }
        tracing::info!("job controller stopped");
    }

    /// The periodic work of [`Self::run`], until shutdown.
    async fn run_periodic(self) {
        let mut shutdown = self.inner.shutdown.subscribe();
        let mut cadence = Cadence::new(Instant::now());
        let config = &self.inner.config;
        // Often enough for the shortest of the three intervals.
        let tick = config
            .reconcile_interval
            .min(config.health_check_interval)
            .min(config.heartbeat_interval)
            .max(Duration::from_millis(10));
        loop {
            if *shutdown.borrow() {
                break;
            }
            let due = cadence.due(config, Instant::now());
            if due.workers {
                if let Err(e) = self.periodic_pass().await {
                    tracing::warn!(error = %e, "reconcile failed");
                }
                // What the pass freed or gave back is dispatched now.
                self.wake();
            }
            if due.health_checks {
                self.check_all_providers().await;
            }
            if due.keep_alives {
                self.send_keep_alives();
            }
            tokio::select! {
                _ = tokio::time::sleep(tick) => {}
                _ = shutdown.changed() => {}
            }
        }
    }

    /// One full reconcile pass: the leader's maintenance, liveness and idle
    /// timeouts of workers, dispatch, warm pools.
    pub async fn reconcile(&self) -> ControlResult<()> {
        self.pass(true).await
    }

    /// A pass; `workers_due`: also the maintenance and the passes over every worker.
    async fn pass(&self, workers_due: bool) -> ControlResult<()> {
        if workers_due {
            self.periodic_pass().await?;
        }
        self.dispatch_pass(workers_due).await
    }

    /// The leader's maintenance and the pass over every worker.
    async fn periodic_pass(&self) -> ControlResult<()> {
        if self.is_leader().await {
            self.maintain().await?;
        }
        self.find_lost_and_idle_workers().await
    }

    /// Dispatch; `warm_pools_due`: then the warm pools (they provision, as
    /// dispatch does, so the two never run side by side).
    async fn dispatch_pass(&self, warm_pools_due: bool) -> ControlResult<()> {
        self.dispatch().await?;
        if warm_pools_due {
            self.keep_warm_pools().await?;
        }
        Ok(())
    }

    /// Whether this replica runs the maintenance work now.
    pub async fn is_leader(&self) -> bool {
        match &self.inner.leader {
            Some(l) => l.is_leader().await,
            None => true,
        }
    }

    /// Leader-only work: return expired queue leases, time out jobs whose
    /// agent is gone; once a minute, purge expired OTPs and prune old
    /// finished jobs (see `housekeeping`).
    async fn maintain(&self) -> ControlResult<()> {
        let rescued = self.inner.stores.queue.rescue_expired(Utc::now()).await?;
        if !rescued.is_empty() {
            tracing::warn!(jobs = ?rescued, "queue leases expired (a controller stopped): entries back on the queue");
        }
        self.audit_if_due().await?;
        self.enforce_timeouts().await?;
        self.reconcile_concurrency_slots().await?;
        self.housekeep_if_due().await?;
        Ok(())
    }

    async fn find_lost_and_idle_workers(&self) -> ControlResult<()> {
        let now = Utc::now();
        let lost_after = chrono::Duration::from_std(self.inner.config.worker_lost_after)
            .unwrap_or(chrono::Duration::seconds(15));
        let reg_timeout = chrono::Duration::from_std(self.inner.config.registration_timeout)
            .unwrap_or(chrono::Duration::seconds(60));
        let workers = self.inner.stores.workers.list().await?;
        // Writes by other replicas (a drain, a slot freed by the leader's
        // audit) reach this replica's views here.
        self.inner.sessions.observe_all(&workers);
        let mut idle_per_provider: HashMap<ProviderId, u32> = HashMap::new();
        for w in &workers {
            match w.state() {
                WorkerState::Creating | WorkerState::Connecting
                    if now - w.last_heartbeat() > reg_timeout =>
                {
                    // Without a handle the provider never answered (its
                    // controller died, or it hangs): only the record is
                    // dropped; the provider's orphan cleanup removes anything
                    // it made under this worker's id.
                    self.worker_lost(w.id(), "did not register in time").await;
                }
                WorkerState::Terminating if self.stuck_terminating(w, now) => {
                    // A retirement or loss whose controller died half way.
                    self.worker_lost(w.id(), "stuck terminating (its controller stopped)")
                        .await;
                }
                WorkerState::Ready | WorkerState::Busy | WorkerState::Draining
                    if now - w.last_heartbeat() > lost_after =>
                {
                    let why = format!(
                        "no heartbeat for {} s",
                        (now - w.last_heartbeat()).num_seconds()
                    );
                    self.worker_lost(w.id(), &why).await;
                }
                WorkerState::Draining if w.current_jobs().is_empty() => {
                    self.retire_worker(w.id(), "drained").await;
                }
                WorkerState::Ready => {
                    *idle_per_provider.entry(w.provider_id()).or_default() += 1;
                }
                _ => {}
            }
        }
        // Idle timeout, keeping `min_idle` warm.
        for w in &workers {
            if w.state() != WorkerState::Ready {
                continue;
            }
            let Some(entry) = self.provider_entry(w.provider_id()) else {
                continue;
            };
            let Some(since) = w.idle_since() else {
                continue;
            };
            let idle_for = (now - since).to_std().unwrap_or(Duration::ZERO);
            let idle = idle_per_provider.entry(w.provider_id()).or_default();
            if idle_for >= entry.policy.idle_timeout && *idle > entry.policy.min_idle {
                *idle -= 1;
                self.retire_worker(w.id(), "idle timeout").await;
            }
        }
        Ok(())
    }

    /// What the scheduler sees: the workers connected to this replica (the
    /// only ones it can send a job to, from their sessions' views: no store
    /// read per worker) and every provider with its count of live workers
    /// over all replicas (one grouped count). The two reads go side by side.
    ///
    /// A provider this replica does not run is in the snapshot only when
    /// workers of it are connected here: they moved over when the replica
    /// that runs it died (see [`adopted_provider_view`]).
    async fn snapshot(&self) -> ControlResult<SchedulingSnapshot> {
        let (alive, providers) = tokio::join!(
            self.inner.stores.workers.count_alive_by_provider(),
            self.inner.stores.providers.list(),
        );
        let (alive, providers) = (alive?, providers?);
        let workers = self.inner.sessions.views();
        let mut provider_views = Vec::new();
        for p in providers {
            let alive = alive.get(&p.id()).copied().unwrap_or(0);
            let Some(entry) = self.provider_entry(p.id()) else {
                if workers.iter().any(|w| w.provider_id == p.id()) {
                    provider_views.push(adopted_provider_view(&p, alive));
                }
                continue;
            };
            // The operator's price, else the provider's own estimate as a
            // price per resource: each job is priced from its own resources.
            let pricing = p
                .pricing()
                .unwrap_or_else(|| estimated_pricing(entry.provider.as_ref()));
            provider_views.push(
                ProviderView::from_provider(&p)
                    .with_workers(alive, entry.policy.max_workers)
                    .with_pricing(Some(pricing))
                    .with_estimated_startup(entry.provider.startup_estimate()),
            );
        }
        Ok(SchedulingSnapshot::new(workers, provider_views))
    }

    fn record_decision(&self, job: JobId, decision: &Decision) -> DecisionRecord {
        let action = match decision {
            Decision::AssignWorker(w) => DecisionAction::Assign(*w),
            Decision::Provision(p) => DecisionAction::Provision(*p),
            Decision::Wait(reason) => DecisionAction::Wait(reason.to_string()),
        };
        DecisionRecord {
            job_id: job,
            action,
            strategy: self.current_strategy(),
            at: Utc::now(),
        }
    }

    /// What the scheduler would decide for a queued job now, without acting.
    pub async fn preview_decision(&self, job_id: JobId) -> ControlResult<DecisionRecord> {
        let job = self.get_job(job_id).await?;
        if job.state() != JobState::Pending {
            return Err(ControlError::FailedPrecondition(format!(
                "job {job_id} is {}, not pending",
                job.state()
            )));
        }
        let snapshot = self.snapshot().await?;
        let strategy = self.shared_strategy().await?;
        let d = self.decide(strategy, &job, &snapshot);
        Ok(self.record_decision(job_id, &d))
    }

    /// Schedules one queued job now (normally the control loop does this).
    pub async fn schedule_job(&self, job_id: JobId) -> ControlResult<DecisionRecord> {
        let job = self.get_job(job_id).await?;
        if job.state() != JobState::Pending {
            return Err(ControlError::FailedPrecondition(format!(
                "job {job_id} is {}, not pending",
                job.state()
            )));
        }
        let mut snapshot = self.snapshot().await?;
        self.shared_strategy().await?;
        if !self.take_concurrency_slot(&job).await? {
            let d = Decision::Wait(crate::scheduler::WaitReason::ConcurrencyLimit {
                key: job.spec().concurrency_key.clone().unwrap_or_default(),
            });
            return Ok(self.record_decision(job_id, &d));
        }
        let r = self.dispatch_one(job.clone(), &mut snapshot).await;
        if !matches!(
            r,
            Ok(DecisionRecord {
                action: DecisionAction::Assign(_) | DecisionAction::Provision(_),
                ..
            })
        ) {
            self.give_back_concurrency_slot(&job).await;
        }
        r
    }

    /// One scheduling pass over the queue, in the shared strategy's order
    /// (aged priority, or FIFO), page by page: an entry that cannot be placed
    /// (nothing eligible, its concurrency key full) is passed over and the
    /// walk goes on, so it never holds up the entries behind it. The pass
    /// ends when no capacity is left, at the end of the queue, or after
    /// `dispatch_scan_limit` entries (the next pass then resumes there).
    ///
    /// Reads that do not depend on each other go side by side (on Postgres
    /// each is a round trip before the job reaches its worker): the first
    /// page is read in the order of the strategy as last seen, beside the
    /// read of the shared strategy (after a switch, the page is read again);
    /// the snapshot is built beside the read of the first entry's job, or
    /// beside the first page when this replica has just queued a job (whose
    /// copy it kept: that job is not read back). The
    /// decisions are made in order on the snapshot and carried out side by
    /// side (`dispatch_parallelism`, see `placements`); the pass ends when
    /// all of them have.
    async fn dispatch(&self) -> ControlResult<()> {
        let mut placements = Placements::new(self.inner.config.dispatch_parallelism);
        let walked = self.walk_queue(&mut placements).await;
        placements.finish().await;
        walked
    }

    /// The walk of [`Self::dispatch`]: decides in queue order and starts
    /// each placement in `placements`. Jobs are read as many at a time as
    /// the snapshot has room for (side by side), so a pass that can place
    /// one job reads one.
    async fn walk_queue(&self, placements: &mut Placements) -> ControlResult<()> {
        let page_size = self.inner.config.dispatch_batch.max(1);
        let budget = self.inner.config.dispatch_scan_limit.max(page_size);
        let read_ahead = self.inner.config.dispatch_parallelism.max(1);
        let mut cursor = lock(&self.inner.scan_resume).take();
        let guess = QueueOrder::for_strategy(self.current_strategy());
        let fresh_mark = self.inner.fresh_jobs.mark();
        // A job this replica has just queued is work for this pass: the
        // snapshot is then built beside the first reads, not after them.
        let early_snapshot = async {
            if self.inner.fresh_jobs.is_empty() {
                None
            } else {
                Some(self.snapshot().await)
            }
        };
        // Jobs being stored as the pass begins (their submits woke it) may
        // be missing from the page it reads: it waits for them beside its
        // reads and adds those queued to its first page (a pass resuming
        // further down the queue leaves them to the next pass from its head).
        let admitting = match cursor {
            None => self.inner.fresh_jobs.admitting(),
            Some(_) => Vec::new(),
        };
        let just_queued = async {
            if admitting.is_empty() {
                return Vec::new();
            }
            let queued = self.inner.fresh_jobs.queued_among(&admitting);
            // A slow store must not hold the whole pass: a job stored later
            // wakes the next one.
            tokio::time::timeout(ADMISSION_WAIT, queued)
                .await
                .unwrap_or_default()
        };
        let (strategy, first_page, early_snapshot, just_queued) = tokio::join!(
            self.shared_strategy(),
            self.inner.stores.queue.scan(guess, cursor, page_size),
            early_snapshot,
            just_queued,
        );
        let order = QueueOrder::for_strategy(strategy?);
        // (Read again in the right order otherwise: after these admissions.)
        let mut first_page = if order == guess {
            Some(first_page?)
        } else {
            None
        };
        if let (None, Some(page)) = (cursor, first_page.as_mut()) {
            fresh_jobs::merge_into(page, order, just_queued);
        }
        if cursor.is_none() && first_page.as_ref().is_some_and(|p| p.entries.is_empty()) {
            // Nothing queued: the copies kept are of jobs placed elsewhere.
            self.inner.fresh_jobs.forget_before(fresh_mark);
        }
        let mut snapshot: Option<SchedulingSnapshot> = early_snapshot.transpose()?;
        let mut full_keys: HashSet<String> = HashSet::new();
        let mut seen = 0usize;
        loop {
            let page = match first_page.take() {
                Some(page) => page,
                None => {
                    self.inner
                        .stores
                        .queue
                        .scan(order, cursor, page_size)
                        .await?
                }
            };
            let mut unread: VecDeque<JobId> = page.entries.iter().map(|e| e.job_id).collect();
            let mut read: VecDeque<(JobId, Option<Job>)> = VecDeque::new();
            let snap = match &mut snapshot {
                Some(s) => s,
                None => {
                    let Some(first_id) = unread.pop_front() else {
                        break;
                    };
                    let (built, job) = tokio::join!(self.snapshot(), self.queued_job(first_id));
                    read.push_back((first_id, job?));
                    snapshot.insert(built?)
                }
            };
            loop {
                if read.is_empty() {
                    // Full: the next job would only be read to wait. (A
                    // stale entry further on is settled by a pass with room.)
                    if !snap.has_capacity() {
                        return Ok(());
                    }
                    let n = snap.free_capacity(read_ahead).max(1).min(unread.len());
                    if n == 0 {
                        break;
                    }
                    let ids: Vec<JobId> = unread.drain(..n).collect();
                    let jobs =
                        futures::future::try_join_all(ids.iter().map(|id| self.queued_job(*id)))
                            .await?;
                    read.extend(ids.into_iter().zip(jobs));
                }
                let Some((job_id, job)) = read.pop_front() else {
                    break;
                };
                seen += 1;
                match job {
                    Some(job) if job.state() == JobState::Pending => {
                        if !snap.has_capacity() {
                            return Ok(());
                        }
                        if let Some(key) = job.spec().concurrency_key.as_deref() {
                            if full_keys.contains(key) {
                                continue;
                            }
                            if !self.take_concurrency_slot(&job).await? {
                                full_keys.insert(key.to_owned());
                                continue;
                            }
                        }
                        let (decision, _) = self.plan(&job, snap);
                        if matches!(decision, Decision::Wait(_)) {
                            self.give_back_concurrency_slot(&job).await;
                            continue;
                        }
                        let cp = self.clone();
                        placements
                            .start(async move {
                                if let Err(e) = cp.carry_out(job.clone(), decision).await {
                                    tracing::warn!(%job_id, error = %e, "dispatch failed");
                                    cp.give_back_concurrency_slot(&job).await;
                                }
                            })
                            .await;
                    }
                    // Not pending: a stale entry (cancelled, bound by another replica)
                    // or a provisioning whose controller died and whose lease was
                    // rescued. Claim it first: an entry another controller holds is
                    // never touched.
                    _ => {
                        if let Some(lease) = self
                            .inner
                            .stores
                            .queue
                            .claim_job(job_id, self.inner.config.dispatch_lease)
                            .await?
                        {
                            self.settle_entry(lease, "provisioning abandoned by its controller")
                                .await;
                        }
                    }
                }
            }
            match page.next {
                Some(next) if seen >= budget => {
                    // Resume after the last entry seen on the next pass.
                    *lock(&self.inner.scan_resume) = Some(next);
                    break;
                }
                Some(next) => cursor = Some(next),
                None => break,
            }
        }
        Ok(())
    }

    /// The job of a queue entry: the copy this replica kept when it queued
    /// the job (see `fresh_jobs`), else read from the store.
    async fn queued_job(&self, id: JobId) -> Result<Option<Job>, crate::store::StoreError> {
        match self.inner.fresh_jobs.take(id) {
            Some(job) => Ok(Some(job)),
            None => self.inner.stores.jobs.get(id).await,
        }
    }

    /// Decides what a queue entry this controller holds means now, from the
    /// job's stored state, and acts on it:
    /// * the job is `Pending`: the entry goes back to the queue;
    /// * the job is `Scheduled` with no worker bound (a provisioning that
    ///   failed, or whose controller died): the job is given back without using
    ///   an attempt and the entry goes back to the queue;
    /// * the job is bound to a worker, finished or deleted: the entry is done.
    ///
    /// A store error leaves the lease to expire: the leader rescues the entry
    /// and a later pass settles it again.
    pub(super) async fn settle_entry(&self, lease: crate::store::Lease, why: &str) {
        let job_id = lease.entry.job_id;
        let job = match self.inner.stores.jobs.get(job_id).await {
            Ok(j) => j,
            Err(e) => {
                tracing::warn!(%job_id, error = %e, "cannot read a queued job; its lease will expire");
                return;
            }
        };
        let unbound = |j: &Job| j.state() == JobState::Scheduled && j.worker_id().is_none();
        let requeue = match &job {
            Some(j) if j.state() == JobState::Pending => true,
            Some(j) if unbound(j) => {
                let released = self
                    .transition_job(job_id, why, |j| {
                        if unbound(j) {
                            Ok(j.release(why)?)
                        } else {
                            Err(ControlError::FailedPrecondition(format!(
                                "job {job_id} was bound meanwhile"
                            )))
                        }
                    })
                    .await;
                match released {
                    Ok(j) => {
                        tracing::warn!(%job_id, reason = why, "job given back to the queue");
                        j.state() == JobState::Pending
                    }
                    Err(ControlError::FailedPrecondition(_)) => false,
                    Err(e) => {
                        tracing::warn!(%job_id, error = %e, "cannot give a job back; its lease will expire");
                        return;
                    }
                }
            }
            _ => false,
        };
        let settled = if requeue {
            self.inner.stores.queue.release(&lease).await
        } else {
            self.inner.stores.queue.complete(&lease).await
        };
        if let Err(e) = settled {
            tracing::debug!(%job_id, error = %e, "queue entry settled elsewhere");
        }
        if requeue {
            self.wake();
        }
    }

    async fn dispatch_one(
        &self,
        job: Job,
        snapshot: &mut SchedulingSnapshot,
    ) -> ControlResult<DecisionRecord> {
        let (decision, record) = self.plan(&job, snapshot);
        self.carry_out(job, decision).await?;
        Ok(record)
    }

    /// Decides where a job goes and takes the worker slot or the provider's
    /// room for it on the snapshot at once, so the next decision of the
    /// pass sees it taken; the decision is published.
    fn plan(&self, job: &Job, snapshot: &mut SchedulingSnapshot) -> (Decision, DecisionRecord) {
        let decision = self.decide(self.current_strategy(), job, snapshot);
        let record = self.record_decision(job.id(), &decision);
        let _ = self.inner.decisions.send(record.clone());
        match &decision {
            Decision::AssignWorker(w) => snapshot.take_slot(*w),
            Decision::Provision(p) => snapshot.add_provisioning(*p),
            Decision::Wait(reason) => {
                tracing::debug!(job_id = %job.id(), %reason, "job waits");
            }
        }
        (decision, record)
    }

    /// Acts on a decision of [`Self::plan`].
    async fn carry_out(&self, job: Job, decision: Decision) -> ControlResult<()> {
        match decision {
            Decision::AssignWorker(w) => {
                let span = traces::job_span(traces::Stage::Dispatch, &job);
                traces::record_worker(&span, w);
                self.assign_to_worker(job, w).instrument(span).await
            }
            Decision::Provision(p) => {
                let span = traces::job_span(traces::Stage::Dispatch, &job);
                self.provision_for(job.id(), p).instrument(span).await
            }
            Decision::Wait(_) => Ok(()),
        }
    }

    /// Gives a queued job to a connected idle worker. `job` is the copy the
    /// caller has just read; the job's update starts from it.
    ///
    /// With the store's [`crate::store::QueueTransactions`] and a current
    /// copy of the worker, all of it is one store operation
    /// ([`Self::bind_at_once`]). Step by step, the order holds the
    /// guarantees: the queue entry is claimed before
    /// anything is bound (two controllers never bind one job), the worker's
    /// slot is taken before the job names the worker, and the entry is
    /// deleted only once the job has left `Pending`. Steps that do not
    /// depend on each other run side by side: on Postgres each is a round
    /// trip, and these are the round trips between a submit and its
    /// dispatch. The provider's load is recounted after the send, off the
    /// dispatch loop.
    async fn assign_to_worker(&self, job: Job, worker_id: WorkerId) -> ControlResult<()> {
        match self.bind_at_once(&job, worker_id).await? {
            BindAttempt::Bound(b) => {
                self.finish_recorded_transition(&b.job, b.transition, b.pending_since, "")
                    .await;
                return self
                    .send_bound(
                        worker_id,
                        &b.job,
                        b.provider_id,
                        b.pending_since,
                        b.resume_after,
                    )
                    .await;
            }
            BindAttempt::Taken => return Ok(()),
            BindAttempt::StepByStep => {}
        }
        let job_id = job.id();
        // Reading the worker binds nothing, so it goes beside the claim.
        let (claimed, read) = tokio::join!(
            self.inner
                .stores
                .queue
                .claim_job(job_id, self.inner.config.dispatch_lease),
            self.inner.stores.workers.get(worker_id),
        );
        let Some(lease) = claimed? else {
            return Ok(()); // another controller took it
        };
        // A failed read only loses the head start: the update reads again.
        let known = read.ok().flatten();
        // Reserve the worker slot first so two jobs never race for it.
        let assigned = self
            .update_worker_from(worker_id, known, |w| {
                Ok(w.assign(job_id).map(|()| w.provider_id()))
            })
            .await;
        let provider_id = match assigned {
            Ok(Some((_, Ok(provider_id)))) => provider_id,
            Ok(Some((w, Err(e)))) => {
                // This replica's view of the worker was stale: correct it.
                self.inner.sessions.observe(&w);
                self.inner.stores.queue.release(&lease).await?;
                return Err(e.into());
            }
            Ok(None) => {
                self.inner.stores.queue.release(&lease).await?;
                return Ok(());
            }
            Err(e) => {
                self.inner.stores.queue.release(&lease).await?;
                return Err(e);
            }
        };
        let (job, t, pending_since) = match self
            .apply_transition(job_id, Some(job), |j| {
                Ok(j.submit_to_provider(provider_id, Some(worker_id))?)
            })
            .await
        {
            Ok(applied) => applied,
            Err(e) => {
                self.inner.stores.queue.release(&lease).await?;
                self.release_worker_slot(worker_id, job_id).await?;
                return Err(e);
            }
        };
        // The entry must be gone before the send: a job that fails at once
        // and is queued again must not find its old entry still there.
        let ((), (), resume_after) = tokio::join!(
            self.finish_transition(&job, t, pending_since, ""),
            self.drop_claimed_entry(&lease),
            self.resume_point(&job),
        );
        self.send_bound(worker_id, &job, provider_id, pending_since, resume_after?)
            .await
    }

    /// Sends a job just bound to `worker_id` (its entry deleted); if the
    /// worker's stream went away between the snapshot and now, undoes the
    /// binding (the released slot counts the provider's load again).
    async fn send_bound(
        &self,
        worker_id: WorkerId,
        job: &Job,
        provider_id: ProviderId,
        pending_since: Option<chrono::DateTime<Utc>>,
        resume_after: u64,
    ) -> ControlResult<()> {
        let job_id = job.id();
        if self.send_run_from(worker_id, job, resume_after).await? {
            crate::telemetry::job_dispatched(pending_since.unwrap_or_else(Utc::now));
            tracing::info!(%job_id, %worker_id, attempt = job.execution_context().attempt, "job dispatched");
            self.refresh_provider_load_soon(provider_id);
        } else {
            self.undo_assignment(
                job_id,
                worker_id,
                "worker disconnected before the job was sent",
            )
            .await?;
        }
        Ok(())
    }

    /// Deletes the queue entry of a job this controller has just moved out of
    /// `Pending` (the versioned job update is what counts). A failure is not
    /// the job's: another replica's dispatch pass may have removed the entry
    /// as stale in between (`StaleLease`), or a rescued entry is removed by
    /// the next pass that finds the job no longer pending. Failing here would
    /// leave the job assigned but never sent.
    async fn drop_claimed_entry(&self, lease: &crate::store::Lease) {
        if let Err(e) = self.inner.stores.queue.complete(lease).await {
            tracing::debug!(job_id = %lease.entry.job_id, error = %e, "queue entry already gone");
        }
    }

    pub(super) async fn undo_assignment(
        &self,
        job_id: JobId,
        worker_id: WorkerId,
        why: &str,
    ) -> ControlResult<()> {
        self.release_worker_slot(worker_id, job_id).await?;
        self.release_to_queue(job_id, why).await?;
        Ok(())
    }

    /// Jobs currently assigned to a worker (for re-attachment checks).
    pub async fn jobs_of_worker(&self, worker_id: WorkerId) -> ControlResult<Vec<Job>> {
        let filter = JobFilter {
            worker_id: Some(worker_id),
            ..JobFilter::default()
        };
        self.list_jobs(&filter).await
    }
}

impl ControlPlane {
    /// Assigns a queued job to a specific connected worker (operator override of the scheduler).
    pub async fn assign_job_to(&self, job_id: JobId, worker_id: WorkerId) -> ControlResult<Job> {
        let job = self.get_job(job_id).await?;
        if job.state() != JobState::Pending {
            return Err(ControlError::FailedPrecondition(format!(
                "job {job_id} is {}, not pending",
                job.state()
            )));
        }
        if !self.is_connected(worker_id) {
            return Err(ControlError::FailedPrecondition(format!(
                "worker {worker_id} is not connected"
            )));
        }
        self.assign_to_worker(job, worker_id).await?;
        self.get_job(job_id).await
    }

    /// A worker reports progress on its job: stored on the current attempt
    /// (see [`crate::domain::progress`]) and published as an event. A percent
    /// over 100 is refused naming `percent`.
    pub async fn job_progress(
        &self,
        worker: WorkerId,
        job_id: JobId,
        attempt: u32,
        percent: u32,
        message: &str,
    ) -> ControlResult<()> {
        let progress =
            crate::domain::progress::JobProgress::new(percent, message).ok_or_else(|| {
                ControlError::InvalidArgument {
                    field: "percent".to_owned(),
                    message: format!("must be 0..=100, got {percent}"),
                }
            })?;
        let (job, ()) = self
            .update_job(job_id, |job| {
                Self::check_assignment(job, worker, Some(attempt))?;
                Ok(job.record_progress(progress.clone())?)
            })
            .await?;
        let state = job.state();
        self.publish(
            &job,
            Some(state),
            state,
            format!("{}% {}", progress.percent, progress.message),
        );
        Ok(())
    }
}

/// The view of a provider only another replica runs, whose workers are
/// connected here (they moved over when that replica died). Its workers take
/// jobs, as they did there; nothing is ever provisioned through it here (no
/// room for another worker: this replica cannot create, check or destroy
/// them). Its stored `unhealthy` is the dead replica's last health check of
/// the provider, which cannot be repeated here, while its workers are here
/// and heartbeating: it does not hold them back. An operator's `maintenance`
/// or `disabled` holds; `overloaded` does not (see
/// [`ProviderView::is_available`]).
fn adopted_provider_view(p: &crate::domain::provider::Provider, alive: u32) -> ProviderView {
    let view = ProviderView::from_provider(p).with_workers(alive, alive);
    if view.status == crate::domain::provider::ProviderStatus::Unhealthy {
        view.with_status(crate::domain::provider::ProviderStatus::Active)
    } else {
        view
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_adopted_provider_takes_jobs_on_its_workers_and_never_provisions() {
        use crate::domain::provider::{
            Provider, ProviderCapabilities, ProviderConfig, ProviderStatus,
        };
        let mut p = Provider::new(
            ProviderId::new(),
            "process-a",
            ProviderConfig::BareMetal {
                agent_binary: None,
                hosts: Vec::new(),
            },
            ProviderCapabilities::default(),
        );
        let view = adopted_provider_view(&p, 3);
        assert!(view.is_available());
        assert_eq!(view.free_worker_slots(), 0, "no room to provision");
        // The dead replica's last health check does not hold its workers back.
        p.set_status(ProviderStatus::Unhealthy);
        assert!(adopted_provider_view(&p, 3).is_available());
        // An operator's pause does.
        for held in [ProviderStatus::Maintenance, ProviderStatus::Disabled] {
            p.set_status(held);
            assert!(!adopted_provider_view(&p, 3).is_available(), "{held}");
        }
        // A full stored job count does not: the workers' slots decide.
        p.set_status(ProviderStatus::Overloaded);
        assert!(adopted_provider_view(&p, 3).is_available());
    }

    #[test]
    fn worker_passes_go_by_the_clock_not_by_wakes() {
        let config = super::super::ControlPlaneConfig::default();
        let t0 = Instant::now();
        let mut c = Cadence::new(t0);
        assert!(
            c.due(&config, t0).workers,
            "the first turn passes over the workers"
        );
        let soon = t0 + Duration::from_millis(1);
        let d = c.due(&config, soon);
        assert!(
            !d.workers && !d.health_checks && !d.keep_alives,
            "a wake only dispatches"
        );
        let later = t0 + config.reconcile_interval;
        assert!(c.due(&config, later).workers);
        let much_later = t0 + config.health_check_interval + config.heartbeat_interval;
        let d = c.due(&config, much_later);
        assert!(d.health_checks && d.keep_alives);
    }
}
