//! What the control plane and a worker's agent say to each other over the
//! worker stream, in domain terms. The gRPC adapter (`api::grpc`) maps these
//! to and from the wire messages; the control plane never sees protobuf.

use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::domain::ids::JobId;
use crate::domain::job::AttemptResult;
use crate::domain::logs::LogEntry;
use crate::domain::spec::JobSpec;
use crate::domain::worker_stats::ResourceUsage;

/// Control plane → agent.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum WorkerCommand {
    /// Run an attempt of a job (boxed: a spec is large, the other commands small).
    Run(Box<RunJob>),
    /// Stop an attempt.
    Cancel {
        /// The job.
        job_id: JobId,
        /// Its attempt.
        attempt: u32,
        /// Why (shown in the job's log and result).
        reason: String,
    },
    /// What the server has durably stored of an attempt.
    Ack(Ack),
    /// Keeps idle connections open through proxies and NAT.
    KeepAlive {
        /// The server's clock when sent.
        at: DateTime<Utc>,
    },
}

/// An attempt for the agent to run.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct RunJob {
    /// The job.
    pub job_id: JobId,
    /// The attempt (1-based).
    pub attempt: u32,
    /// The spec, with its secrets opened: the only message that carries them.
    pub spec: JobSpec,
    /// The job's correlation id (links logs and traces of one job).
    pub correlation_id: String,
    /// Log sequence numbers of this attempt the server already holds; the
    /// agent continues after it (0 for a fresh attempt).
    pub resume_after_sequence: u64,
}

impl RunJob {
    /// An attempt to run.
    #[must_use]
    pub fn new(
        job_id: JobId,
        attempt: u32,
        spec: JobSpec,
        correlation_id: String,
        resume_after_sequence: u64,
    ) -> Self {
        Self {
            job_id,
            attempt,
            spec,
            correlation_id,
            resume_after_sequence,
        }
    }
}

/// The server has stored an attempt's logs up to a sequence, and maybe its result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Ack {
    /// The job.
    pub job_id: JobId,
    /// The attempt.
    pub attempt: u32,
    /// Every log entry with a sequence up to this one is stored.
    pub acked_sequence: u64,
    /// The attempt's result is stored.
    pub result_acked: bool,
}

impl Ack {
    /// An acknowledgement.
    #[must_use]
    pub fn new(job_id: JobId, attempt: u32, acked_sequence: u64, result_acked: bool) -> Self {
        Self {
            job_id,
            attempt,
            acked_sequence,
            result_acked,
        }
    }
}

/// Agent → control plane.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum WorkerReport {
    /// The agent is alive; what it runs.
    Heartbeat(Heartbeat),
    /// A job's process started.
    JobStarted {
        /// The job.
        job_id: JobId,
        /// The attempt.
        attempt: u32,
    },
    /// Log lines of an attempt.
    Logs {
        /// The job.
        job_id: JobId,
        /// The attempt.
        attempt: u32,
        /// The entries, in sequence order.
        entries: Vec<LogEntry>,
    },
    /// How an attempt ended.
    Result(AttemptReport),
    /// The worker's resource usage (between heartbeats).
    Stats(ResourceUsage),
    /// The latest progress a job reported.
    Progress {
        /// The job.
        job_id: JobId,
        /// The attempt.
        attempt: u32,
        /// 0–100.
        percent: u32,
        /// What it is doing.
        message: String,
    },
}

/// A heartbeat's content.
#[derive(Debug, Clone, Default, PartialEq)]
#[non_exhaustive]
pub struct Heartbeat {
    /// The attempts the agent runs now (ids it sent that do not parse are left out).
    pub running_jobs: Vec<JobId>,
    /// The worker's resource usage, when the agent has a sample.
    pub usage: Option<ResourceUsage>,
    /// The agent's clock when it sent the heartbeat.
    pub sent_at: Option<DateTime<Utc>>,
}

impl Heartbeat {
    /// A heartbeat listing these running jobs.
    #[must_use]
    pub fn new(running_jobs: Vec<JobId>) -> Self {
        Self {
            running_jobs,
            ..Self::default()
        }
    }

    /// With a usage sample.
    #[must_use]
    pub fn with_usage(mut self, usage: ResourceUsage) -> Self {
        self.usage = Some(usage);
        self
    }

    /// With the agent's send time.
    #[must_use]
    pub fn sent_at(mut self, at: DateTime<Utc>) -> Self {
        self.sent_at = Some(at);
        self
    }
}

/// How an attempt ended, as the agent that ran it reports it.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct AttemptReport {
    /// The job.
    pub job_id: JobId,
    /// The attempt.
    pub attempt: u32,
    /// Its result.
    pub result: AttemptResult,
    /// How long the job's process ran, by the agent's clock (no dispatch or
    /// network time in it).
    pub ran_for: Duration,
    /// Sequence number of the attempt's last log entry (0 if none): the
    /// server checks it holds every entry up to it.
    pub last_sequence: u64,
}

impl AttemptReport {
    /// The report of `attempt` of `job_id` ending with `result`.
    #[must_use]
    pub fn new(job_id: JobId, attempt: u32, result: AttemptResult) -> Self {
        Self {
            job_id,
            attempt,
            result,
            ran_for: Duration::ZERO,
            last_sequence: 0,
        }
    }

    /// Sets how long the process ran.
    #[must_use]
    pub fn with_ran_for(mut self, ran_for: Duration) -> Self {
        self.ran_for = ran_for;
        self
    }

    /// Sets the sequence number of the attempt's last log entry.
    #[must_use]
    pub fn with_last_sequence(mut self, last_sequence: u64) -> Self {
        self.last_sequence = last_sequence;
        self
    }
}
