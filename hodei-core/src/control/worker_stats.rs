//! Worker resource usage: the latest sample an agent reports (in its
//! heartbeats and in periodic `stats` messages) is kept on the worker, so
//! `GET /api/v1/workers` and `hodei worker list` show CPU and memory.

use super::{ControlPlane, ControlResult};
use crate::domain::ids::WorkerId;
use crate::domain::worker_stats::WorkerStats;
use crate::proto::v1;

impl ControlPlane {
    /// Stores the usage of a `stats` message on the worker (and feeds the
    /// metrics backend when enabled). A worker already gone is ignored.
    pub(super) async fn on_worker_stats(
        &self,
        worker_id: WorkerId,
        stats: &v1::WorkerStatsMessage,
    ) -> ControlResult<()> {
        let Some(usage) = stats.usage.as_ref() else {
            return Ok(());
        };
        if let Some(m) = self.metrics() {
            m.record(worker_id, usage.into());
        }
        let sample = crate::proto::convert::worker_stats_from_proto(usage);
        // A stats message is a sign of life too: one atomic write, like a
        // heartbeat (a gone worker is left alone).
        self.inner
            .stores
            .workers
            .touch(worker_id, chrono::Utc::now(), Some(&sample))
            .await?;
        Ok(())
    }

    /// The usage carried by a heartbeat, for the worker being updated. An
    /// agent's first heartbeats may carry an empty sample (its cache not
    /// filled yet: no live process uses 0 bytes): not a measurement, skipped.
    pub(super) fn heartbeat_stats(hb: &v1::WorkerHeartbeat) -> Option<WorkerStats> {
        hb.usage
            .as_ref()
            .filter(|u| u.memory_bytes > 0)
            .map(crate::proto::convert::worker_stats_from_proto)
    }
}
