//! How far a running job says it is ([`JobProgress`]): reported by the job
//! (a `::progress <percent> [message]` line on its stdout, see the agent's
//! `progress` module) or by `UpdateProgress`, kept on the job's current
//! attempt and shown by the API, the CLI and the dashboard.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// Longest progress message kept, in bytes (longer ones are cut at a
/// character boundary).
pub const MAX_PROGRESS_MESSAGE_BYTES: usize = 512;

/// The latest progress of a job attempt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct JobProgress {
    /// 0..=100.
    pub percent: u8,
    /// What the job is doing (may be empty).
    pub message: String,
    /// When it was reported.
    pub updated_at: DateTime<Utc>,
}

impl JobProgress {
    /// Progress at `percent` with a message cut to
    /// [`MAX_PROGRESS_MESSAGE_BYTES`]; `None` when `percent` is over 100.
    #[must_use]
    pub fn new(percent: u32, message: &str) -> Option<Self> {
        let percent = u8::try_from(percent).ok().filter(|p| *p <= 100)?;
        let mut end = message.len().min(MAX_PROGRESS_MESSAGE_BYTES);
        while !message.is_char_boundary(end) {
            end -= 1;
        }
        Some(Self {
            percent,
            message: message[..end].trim().to_owned(),
            updated_at: Utc::now(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_is_checked_and_message_cut() {
        assert!(JobProgress::new(101, "x").is_none());
        let p = JobProgress::new(40, "  copying  ").unwrap();
        assert_eq!((p.percent, p.message.as_str()), (40, "copying"));
        let long = "é".repeat(600);
        let p = JobProgress::new(100, &long).unwrap();
        assert!(p.message.len() <= MAX_PROGRESS_MESSAGE_BYTES);
    }

    #[test]
    fn only_a_placed_job_takes_progress_and_a_new_attempt_starts_without() {
        use crate::domain::ids::{ProviderId, WorkerId};
        use crate::domain::job::{AttemptResult, Job};
        use crate::domain::spec::{CommandType, JobSpec};
        let mut job = Job::new(
            JobSpec::new("p", CommandType::shell("true", [] as [&str; 0])).with_max_attempts(2),
        );
        let p = JobProgress::new(10, "x").unwrap();
        assert!(job.record_progress(p.clone()).is_err(), "pending");
        job.submit_to_provider(ProviderId::new(), Some(WorkerId::new()))
            .unwrap();
        job.mark_running().unwrap();
        job.record_progress(p.clone()).unwrap();
        assert_eq!(job.execution_context().progress.as_ref(), Some(&p));
        job.queue("worker lost").unwrap();
        job.submit_to_provider(ProviderId::new(), None).unwrap();
        assert_eq!(job.execution_context().progress, None, "new attempt");
        job.mark_running().unwrap();
        job.complete(AttemptResult::exited(0)).unwrap();
        assert!(job.record_progress(p).is_err(), "finished");
    }
}
