//! The order in which one worker stream's reports are handled.
//!
//! A stream's reports are handled one after another, so that an attempt's
//! result is handled after its last log batch. One exception: a log batch may
//! go ahead of a job start that is still being stored. On Postgres the start
//! is three round trips (read, conditional update, history), and its first
//! log batch waited for them before it was stored and reached the job's
//! followers, although nothing in the batch depends on the start: the batch
//! is accepted from the worker the job is assigned to, which it is from the
//! moment it was scheduled. Every other report (a result, progress, a
//! heartbeat, the next start) waits for the start first.

use tokio::task::JoinHandle;

use super::{ControlPlane, ControlResult};
use crate::domain::ids::WorkerId;
use crate::domain::worker_protocol::WorkerReport;

/// One worker stream's reports, handled in order except that log batches go
/// ahead of a job start still being stored (see the module docs).
#[derive(Debug)]
pub struct OrderedReports {
    cp: ControlPlane,
    worker_id: WorkerId,
    start_in_flight: Option<JoinHandle<ControlResult<()>>>,
}

impl OrderedReports {
    /// The reports of `worker_id`'s stream.
    #[must_use]
    pub fn new(cp: ControlPlane, worker_id: WorkerId) -> Self {
        Self {
            cp,
            worker_id,
            start_in_flight: None,
        }
    }

    /// Handles the stream's next report in its place. A start is only begun
    /// here; what it ends with is logged when a later report waits for it
    /// (a start that fails is dropped with a warning, as before).
    ///
    /// # Errors
    /// As [`ControlPlane::handle_worker_report`] for this report.
    pub async fn handle(&mut self, report: WorkerReport) -> ControlResult<()> {
        if !matches!(report, WorkerReport::Logs { .. }) {
            self.settle().await;
        }
        if matches!(report, WorkerReport::JobStarted { .. }) {
            let cp = self.cp.clone();
            let worker_id = self.worker_id;
            self.start_in_flight = Some(tokio::spawn(async move {
                cp.handle_worker_report(worker_id, report).await
            }));
            return Ok(());
        }
        self.cp.handle_worker_report(self.worker_id, report).await
    }

    /// Waits for a start still being stored (at the end of the stream too).
    pub async fn settle(&mut self) {
        let Some(start) = self.start_in_flight.take() else {
            return;
        };
        match start.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::warn!(worker_id = %self.worker_id, error = %e, "worker message refused");
            }
            Err(e) => {
                tracing::error!(worker_id = %self.worker_id, error = %e, "job start handler stopped");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::Arc;
    use std::time::Duration;

    use async_trait::async_trait;
    use chrono::{DateTime, Utc};
    use tokio::sync::Semaphore;

    use super::*;
    use crate::domain::ids::{JobId, ProviderId};
    use crate::domain::job::{AttemptResult, Job, JobState};
    use crate::domain::logs::{LogEntry, LogStream};
    use crate::domain::spec::{CommandType, JobSpec};
    use crate::domain::worker::{Worker, WorkerHandle};
    use crate::domain::worker_protocol::AttemptReport;
    use crate::store::{JobFilter, JobRepository, LogCursor, StoreError, Stores};

    /// Jobs whose move to `running` is held until the test lets it through:
    /// a start that takes as long as the test wants.
    struct HeldStarts {
        inner: Arc<dyn JobRepository>,
        gate: Semaphore,
    }

    #[async_trait]
    impl JobRepository for HeldStarts {
        async fn insert(&self, job: &Job) -> Result<Job, StoreError> {
            self.inner.insert(job).await
        }
        async fn get(&self, id: JobId) -> Result<Option<Job>, StoreError> {
            self.inner.get(id).await
        }
        async fn update(&self, job: &Job) -> Result<Job, StoreError> {
            if job.state() == JobState::Running {
                let _pass = self.gate.acquire().await;
            }
            self.inner.update(job).await
        }
        async fn list(&self, filter: &JobFilter) -> Result<Vec<Job>, StoreError> {
            self.inner.list(filter).await
        }
        async fn count_by_state(&self) -> Result<BTreeMap<JobState, u64>, StoreError> {
            self.inner.count_by_state().await
        }
        async fn prune_finished(&self, before: DateTime<Utc>) -> Result<u64, StoreError> {
            self.inner.prune_finished(before).await
        }
    }

    #[tokio::test]
    async fn logs_go_ahead_of_a_slow_start_and_the_result_waits_for_it() {
        let held = Arc::new(HeldStarts {
            inner: Stores::in_memory().jobs,
            gate: Semaphore::new(0),
        });
        let mut stores = Stores::in_memory();
        stores.jobs = held.clone();
        let cp = ControlPlane::builder().stores(stores.clone()).build();
        let provider = ProviderId::new();
        let mut w = stores
            .workers
            .register(&Worker::new(WorkerId::new(), provider))
            .await
            .expect("register");
        let worker_id = w.id();
        w.created(WorkerHandle::new(worker_id, provider, "held"))
            .expect("created");
        stores.workers.update(&w).await.expect("update");
        let mut stream = cp.open_worker_stream(worker_id).await.expect("stream");
        let agent = tokio::spawn(async move { while stream.outbound.recv().await.is_some() {} });
        let spec = JobSpec::new("held", CommandType::shell("echo hi", [""; 0]));
        let job_id = cp.create_job(spec, None).await.expect("job").id();
        cp.assign_job_to(job_id, worker_id).await.expect("assign");

        let mut reports = OrderedReports::new(cp.clone(), worker_id);
        let begun = tokio::time::timeout(
            Duration::from_secs(5),
            reports.handle(WorkerReport::JobStarted { job_id, attempt: 1 }),
        );
        begun
            .await
            .expect("a held start does not hold the stream")
            .expect("start begun");
        reports
            .handle(WorkerReport::Logs {
                job_id,
                attempt: 1,
                entries: vec![LogEntry::new(1, LogStream::Stdout, "hi\n")],
            })
            .await
            .expect("logs");
        // The batch is stored while the start still waits.
        let stored = cp
            .logs()
            .read(job_id, LogCursor::default(), 10)
            .await
            .expect("read");
        assert_eq!(stored.len(), 1, "the log batch went ahead of the start");
        let job = cp.get_job(job_id).await.expect("job");
        assert_eq!(job.state(), JobState::Scheduled, "the start is still held");

        // The result waits for the start.
        let result = tokio::spawn(async move {
            let report = AttemptReport::new(job_id, 1, AttemptResult::exited(0));
            let r = reports.handle(WorkerReport::Result(report)).await;
            reports.settle().await;
            r
        });
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(
            !result.is_finished(),
            "the result is not handled before the start"
        );
        assert_eq!(
            cp.get_job(job_id).await.expect("job").state(),
            JobState::Scheduled
        );
        held.gate.add_permits(1);
        result.await.expect("task").expect("result");
        let history: Vec<JobState> = cp
            .job_history(job_id)
            .await
            .expect("history")
            .iter()
            .map(|t| t.to)
            .collect();
        assert_eq!(
            history,
            [
                JobState::Pending,
                JobState::Scheduled,
                JobState::Running,
                JobState::Succeeded
            ]
        );
        agent.abort();
    }
}
