//! The leader's housekeeping: expired one-time tokens are purged and finished
//! jobs older than [`ControlPlaneConfig::retention`] are pruned with their
//! logs. Both are deletes over whole tables, so they run at most once per
//! [`HOUSEKEEPING_INTERVAL`] (and on the first pass), not on every reconcile.
//!
//! [`ControlPlaneConfig::retention`]: super::ControlPlaneConfig::retention

use std::time::{Duration, Instant};

use chrono::Utc;

use super::{ControlPlane, ControlResult, lock};

/// Least time between two housekeeping passes of the leader.
pub const HOUSEKEEPING_INTERVAL: Duration = Duration::from_secs(60);

/// What housekeeping remembers between passes.
#[derive(Debug, Default)]
pub(super) struct HousekeepingState {
    last_run: Option<Instant>,
}

/// What one housekeeping pass removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct HousekeepingReport {
    /// Expired one-time registration tokens deleted.
    pub expired_otps: u64,
    /// Finished jobs (with their logs) deleted for being older than the retention.
    pub pruned_jobs: u64,
    /// Jobs whose artifacts were deleted because the job is gone.
    pub pruned_artifacts: u64,
}

impl ControlPlane {
    /// Runs [`ControlPlane::housekeep`] when the last pass is at least
    /// [`HOUSEKEEPING_INTERVAL`] old.
    pub(super) async fn housekeep_if_due(&self) -> ControlResult<()> {
        let due = lock(&self.inner.housekeeping)
            .last_run
            .is_none_or(|t| t.elapsed() >= HOUSEKEEPING_INTERVAL);
        if due {
            let report = self.housekeep().await?;
            if report != HousekeepingReport::default() {
                tracing::info!(
                    expired_otps = report.expired_otps,
                    pruned_jobs = report.pruned_jobs,
                    pruned_artifacts = report.pruned_artifacts,
                    "housekeeping"
                );
            }
        }
        Ok(())
    }

    /// One housekeeping pass now. Normally the leader's control loop runs it
    /// once a minute; it is safe on any replica and at any time.
    pub async fn housekeep(&self) -> ControlResult<HousekeepingReport> {
        lock(&self.inner.housekeeping).last_run = Some(Instant::now());
        let now = Utc::now();
        let stores = &self.inner.stores;
        let expired_otps = stores.otps.purge_expired(now).await?;
        // A retention too long to subtract from now keeps everything.
        let cutoff = self
            .inner
            .config
            .retention
            .and_then(|r| chrono::Duration::from_std(r).ok())
            .and_then(|age| now.checked_sub_signed(age));
        let pruned_jobs = match cutoff {
            Some(before) => {
                let n = stores.jobs.prune_finished(before).await?;
                // Their histories go with them (the same cutoff, on the last record).
                stores.job_history.prune_finished(before).await?;
                n
            }
            None => 0,
        };
        // After the jobs: artifacts whose job is gone, including any a failed
        // earlier sweep left behind. Only with a retention: nothing is pruned without.
        let pruned_artifacts = if cutoff.is_some() {
            self.sweep_artifacts().await?
        } else {
            0
        };
        Ok(HousekeepingReport {
            expired_otps,
            pruned_jobs,
            pruned_artifacts,
        })
    }
}
