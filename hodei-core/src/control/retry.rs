//! Retrying a finished job: a new job with the same spec, linked to the
//! original by a label (the original keeps its history untouched).

use super::{ControlError, ControlPlane, ControlResult};
use crate::domain::ids::JobId;
use crate::domain::job::Job;

/// Label a retried job carries, naming the job it retries.
pub const RETRY_OF_LABEL: &str = "hodei.retry_of";

impl ControlPlane {
    /// Runs a finished job again (failed, timed out, cancelled or succeeded):
    /// queues a new `Pending` job with the same spec and labels, plus
    /// [`RETRY_OF_LABEL`] set to `id`. A job not finished yet is refused
    /// (`FailedPrecondition`): cancel it first.
    pub async fn retry_job(&self, id: JobId) -> ControlResult<Job> {
        let original = self.get_job(id).await?;
        if !original.state().is_terminal() {
            return Err(ControlError::FailedPrecondition(format!(
                "job {id} is {}; cancel it first",
                original.state()
            )));
        }
        // The stored spec's secrets are sealed already; `store_and_enqueue`
        // keeps them as they are.
        let mut spec = original.spec().clone();
        spec.labels
            .insert(RETRY_OF_LABEL.to_owned(), id.to_string());
        let job = self.store_and_enqueue(Job::new(spec)).await?;
        tracing::info!(job_id = %job.id(), retry_of = %id, "job retried");
        Ok(job)
    }
}
