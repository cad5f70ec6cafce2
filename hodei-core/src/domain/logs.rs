//! Log entries: one line (or fragment of an over-long line) of a job attempt's output.

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

/// One entry of a job attempt's output. `data` holds raw bytes (not necessarily UTF-8),
/// without the trailing newline.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogEntry {
    /// Per-(job, attempt) sequence number, from 1, without gaps.
    pub sequence: u64,
    /// Source stream.
    pub stream: LogStream,
    /// The bytes of the line.
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
