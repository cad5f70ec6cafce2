//! [`JobListFilter`]: which jobs [`super::HodeiClient::list`] asks for.

use crate::domain::job::JobState;

/// Which jobs to list (what `ListJobs` supports: one state, a limit).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct JobListFilter {
    /// Only jobs in this state; `None`: any.
    pub state: Option<JobState>,
    /// At most this many; `None`: the server's default (100). The server caps it at 10 000.
    pub limit: Option<u32>,
}

impl JobListFilter {
    /// Every job (up to the server's default limit).
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Only jobs in `state`.
    #[must_use]
    pub fn with_state(mut self, state: JobState) -> Self {
        self.state = Some(state);
        self
    }

    /// At most `limit` jobs.
    #[must_use]
    pub fn with_limit(mut self, limit: u32) -> Self {
        self.limit = Some(limit);
        self
    }
}
