//! Events the control plane publishes: job state changes and scheduling decisions.

use chrono::{DateTime, Utc};

use crate::domain::ids::{JobId, WorkerId};
use crate::domain::job::JobState;

/// A job changed state.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct JobEvent {
    /// The job.
    pub job_id: JobId,
    /// Previous state.
    pub from: JobState,
    /// New state.
    pub to: JobState,
    /// Attempt at the time.
    pub attempt: u32,
    /// Worker of the attempt, if any.
    pub worker_id: Option<WorkerId>,
    /// Why (error, reason), if anything to say.
    pub message: String,
    /// Exit code, when it exited.
    pub exit_code: Option<i32>,
    /// When.
    pub at: DateTime<Utc>,
}

/// What the scheduler decided for one job.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum DecisionAction {
    /// Give it to this idle worker.
    Assign(WorkerId),
    /// Provision a worker on this provider (id).
    Provision(crate::domain::ids::ProviderId),
    /// Keep it queued, for this reason.
    Wait(String),
}

/// A scheduling decision, as streamed by `SchedulingDecisionStream`.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct DecisionRecord {
    /// The job.
    pub job_id: JobId,
    /// What was decided.
    pub action: DecisionAction,
    /// Strategy in force.
    pub strategy: crate::scheduler::Strategy,
    /// When.
    pub at: DateTime<Utc>,
}
