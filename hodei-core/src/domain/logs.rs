//! Log entries: one or more lines (or a fragment of an over-long line) of a job attempt's
//! output. Agents group the complete lines they read together into one entry (GitLab's trace
//! chunks, Buildkite's log chunks): the cost of the log path is then per read, not per line.

use bytes::Bytes;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// Which output stream a log entry came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum LogStream {
    /// The job's standard output.
    Stdout,
    /// The job's standard error.
    Stderr,
    /// Lines the agent or server emits about the job (truncation markers, retries).
    System,
}

/// One entry of a job attempt's output. `data` holds raw bytes (not necessarily UTF-8):
/// one or more lines separated by `\n`, without the trailing newline, so printing each
/// entry followed by a newline gives the output exactly.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogEntry {
    /// Per-(job, attempt) sequence number, from 1, without gaps.
    pub sequence: u64,
    /// Source stream.
    pub stream: LogStream,
    /// The bytes of the line(s).
    pub data: Bytes,
    /// When the agent read it.
    pub timestamp: DateTime<Utc>,
}

impl LogEntry {
    /// A new entry.
    pub fn new(sequence: u64, stream: LogStream, data: impl Into<Bytes>) -> Self {
        Self {
            sequence,
            stream,
            data: data.into(),
            timestamp: Utc::now(),
        }
    }
}
