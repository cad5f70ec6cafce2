//! Control-plane settings: typed, with defaults in one place.

use std::time::Duration;

/// Pool policy of one provider's workers.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct PoolPolicy {
    /// Idle workers kept warm (provisioned ahead of demand).
    pub min_idle: u32,
    /// Most workers alive at once on this provider.
    pub max_workers: u32,
    /// Jobs a worker runs over its life; `Some(1)` = ephemeral workers, `None` = reused.
    pub max_jobs_per_worker: Option<u32>,
    /// Jobs a worker runs at once.
    pub max_concurrent_jobs_per_worker: u32,
    /// Idle workers above `min_idle` are destroyed after this long.
    pub idle_timeout: Duration,
}

impl Default for PoolPolicy {
    fn default() -> Self {
        Self {
            min_idle: 0,
            max_workers: 4,
            max_jobs_per_worker: None,
            max_concurrent_jobs_per_worker: 1,
            idle_timeout: Duration::from_secs(300),
        }
    }
}

impl PoolPolicy {
    /// Sets `min_idle`.
    #[must_use]
    pub fn min_idle(mut self, n: u32) -> Self {
        self.min_idle = n;
        self
    }
    /// Sets `max_workers`.
    #[must_use]
    pub fn max_workers(mut self, n: u32) -> Self {
        self.max_workers = n.max(1);
        self
    }
    /// Sets `max_jobs_per_worker` (`Some(1)` = ephemeral).
    #[must_use]
    pub fn max_jobs_per_worker(mut self, n: Option<u32>) -> Self {
        self.max_jobs_per_worker = n;
        self
    }
    /// Sets the idle timeout.
    #[must_use]
    pub fn idle_timeout(mut self, d: Duration) -> Self {
        self.idle_timeout = d;
        self
    }
}

/// Settings of the control plane.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ControlPlaneConfig {
    /// gRPC address workers use to reach this server (`http://127.0.0.1:50051`), or
    /// several comma-separated: this replica's first, then the other replicas on the same
    /// database, which an agent resumes its session on when its stream breaks.
    pub worker_server_address: String,
    /// Interval the agents are told to heartbeat at.
    pub heartbeat_interval: Duration,
    /// A worker without a heartbeat for this long is lost; its jobs are retried.
    pub worker_lost_after: Duration,
    /// A provisioned worker must register within this time.
    pub registration_timeout: Duration,
    /// OTP lifetime.
    pub otp_ttl: Duration,
    /// Periodic reconcile, on top of event wake-ups; also how often the
    /// leader's maintenance (expired leases, timeouts, stale slots) and the
    /// passes over every worker (liveness, idle timeouts, warm pools) run.
    pub reconcile_interval: Duration,
    /// Interval of provider health checks.
    pub health_check_interval: Duration,
    /// Lease a controller holds on a queue entry while dispatching it.
    pub dispatch_lease: Duration,
    /// Extra time past a job's deadline before the server times it out itself
    /// (the agent normally does it first).
    pub timeout_grace: Duration,
    /// Queue entries read per page of a scheduling pass (a pass pages on
    /// through the whole queue while capacity is left).
    pub dispatch_batch: usize,
    /// Most queue entries one scheduling pass looks at. When a pass stops
    /// there, the next one continues after the last entry seen (wrapping to
    /// the head at the end), so every entry is considered in turn.
    pub dispatch_scan_limit: usize,
    /// Most placements one scheduling pass carries out side by side. A pass
    /// decides in queue order, each decision taking its worker slot at
    /// once, then claims, binds and sends the jobs concurrently (on Postgres
    /// each placement is several round trips in sequence). `1` places one
    /// job at a time.
    pub dispatch_parallelism: usize,
    /// Terminal jobs (and their logs) are pruned after this age; `None` = kept.
    pub retention: Option<Duration>,
    /// How often the leader audits the store for records a crash left half
    /// done (a pending job without a queue entry, a job bound to a worker that
    /// is gone, a worker slot held for a job it does not run). Also at start.
    pub audit_interval: Duration,
}

impl Default for ControlPlaneConfig {
    fn default() -> Self {
        Self {
            worker_server_address: "http://127.0.0.1:50051".into(),
            heartbeat_interval: Duration::from_secs(5),
            worker_lost_after: Duration::from_secs(15),
            registration_timeout: Duration::from_secs(60),
            otp_ttl: Duration::from_secs(600),
            reconcile_interval: Duration::from_secs(1),
            health_check_interval: Duration::from_secs(30),
            dispatch_lease: Duration::from_secs(30),
            timeout_grace: Duration::from_secs(15),
            dispatch_batch: 256,
            dispatch_scan_limit: 10_000,
            dispatch_parallelism: 16,
            retention: None,
            audit_interval: Duration::from_secs(10),
        }
    }
}
