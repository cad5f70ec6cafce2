//! The jobs a round submits: shell scripts that print a known numbered sequence of
//! lines (so completeness and order can be checked), append one marker line per
//! execution to the round's marker file, and sometimes read a secret and echo it
//! (so the secret scan has something to find if redaction fails).

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use hodei_core::proto::v1;
use hodei_core::{CommandType, JobSpec};

use super::procs::MARKER_ENV;

/// Prefix of every numbered output line.
pub const LINE_PREFIX: &str = "chaos-line ";
/// Prefix of the line a secret job prints with what it read on stdin.
pub const SECRET_PREFIX: &str = "secret-json: ";

/// What the suite plans for one job.
#[derive(Debug, Clone)]
pub struct JobPlan {
    /// Index within the round (the job's name is `chaos-<round>-<index>`).
    pub index: usize,
    /// Numbered lines it prints.
    pub lines: u32,
    /// Pause after each line.
    pub pause: Duration,
    /// The secret it is given and echoes, if any.
    pub secret: Option<String>,
    /// When to cancel it, counted from its submission, if at all.
    pub cancel_after: Option<Duration>,
}

impl JobPlan {
    /// The job's spec: `marks` is the round's marker file, `token` the round's marker.
    pub fn spec(&self, round: usize, marks: &Path, token: &str) -> JobSpec {
        let pause = format!("{:.3}", self.pause.as_secs_f64());
        let mut body = String::new();
        // One line per execution, appended (O_APPEND keeps small lines whole):
        // "start <job> <attempt> <pid> <unix ns>"; "end …" once every line is out.
        body.push_str(
            "echo \"start $HODEI_JOB_ID $HODEI_ATTEMPT $$ $(date +%s%N)\" >> \"$CHAOS_MARKS\"\n",
        );
        if self.secret.is_some() {
            // Secrets arrive as one JSON object on stdin.
            body.push_str(&format!("echo \"{SECRET_PREFIX}$(cat)\"\n"));
        }
        body.push_str(&format!(
            "for i in $(seq 1 {}); do echo \"{LINE_PREFIX}$i\"; sleep {pause}; done\n",
            self.lines
        ));
        body.push_str(
            "echo \"end $HODEI_JOB_ID $HODEI_ATTEMPT $$ $(date +%s%N)\" >> \"$CHAOS_MARKS\"\n",
        );
        let mut spec = JobSpec::new(
            format!("chaos-{round}-{}", self.index),
            CommandType::script("bash", body),
        )
        .with_env("CHAOS_MARKS", marks.display().to_string())
        .with_env(MARKER_ENV, token)
        .with_timeout_ms(120_000)
        .with_max_attempts(5);
        if let Some(s) = &self.secret {
            spec = spec.with_secret("CHAOS_TOKEN", s.clone());
        }
        spec
    }

    /// Checks the output of one succeeded attempt (its non-system lines): the secret
    /// line when there is a secret, then every numbered line once, in order.
    ///
    /// # Errors
    /// What is missing, extra or out of order.
    pub fn check_output(&self, lines: &[String]) -> Result<(), String> {
        let mut rest = lines;
        if self.secret.is_some() {
            match rest.first() {
                Some(l) if l.starts_with(SECRET_PREFIX) => rest = &rest[1..],
                other => {
                    return Err(format!(
                        "first line should be the secret line, is {other:?}"
                    ));
                }
            }
        }
        let want: Vec<String> = (1..=self.lines)
            .map(|i| format!("{LINE_PREFIX}{i}"))
            .collect();
        if rest == want.as_slice() {
            return Ok(());
        }
        let first_diff = want
            .iter()
            .zip(rest.iter())
            .position(|(a, b)| a != b)
            .unwrap_or(want.len().min(rest.len()));
        Err(format!(
            "{} numbered lines expected, {} received; first difference at line {}: expected {:?}, got {:?}",
            want.len(),
            rest.len(),
            first_diff + 1,
            want.get(first_diff),
            rest.get(first_diff)
        ))
    }
}

/// The non-system output lines of one attempt, as printed (an entry holds one or
/// more lines separated by newlines).
pub fn attempt_lines(logs: &v1::GetLogsResponse, attempt: u32) -> Vec<String> {
    let entries: Vec<&v1::LogEntry> = logs
        .chunks
        .iter()
        .filter(|c| c.attempt == attempt)
        .flat_map(|c| c.entries.iter())
        .filter(|e| e.stream != v1::LogStream::System as i32)
        .collect();
    // Sequence numbers must rise strictly: a duplicate or a reordering shows here.
    let in_order = entries.windows(2).all(|w| w[0].sequence < w[1].sequence);
    if !in_order {
        // Keep the received order: the check reports the disorder.
        return entries
            .iter()
            .flat_map(|e| split_lines(&e.data))
            .chain(std::iter::once(
                "<entries out of sequence order>".to_owned(),
            ))
            .collect();
    }
    entries.iter().flat_map(|e| split_lines(&e.data)).collect()
}

fn split_lines(data: &[u8]) -> Vec<String> {
    String::from_utf8_lossy(data)
        .split('\n')
        .map(str::to_owned)
        .collect()
}

/// Every byte a client can read about a job through gRPC, as text: the job and
/// every log entry of every attempt (system lines included).
pub fn grpc_text(job: Option<&v1::Job>, logs: Option<&v1::GetLogsResponse>) -> String {
    let mut s = String::new();
    if let Some(j) = job {
        s.push_str(&format!("{j:?}"));
    }
    if let Some(l) = logs {
        for c in &l.chunks {
            for e in &c.entries {
                s.push_str(&String::from_utf8_lossy(&e.data));
                s.push('\n');
            }
        }
    }
    s
}

/// Secrets by job id, for the scan.
pub type Secrets = BTreeMap<String, String>;

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(secret: bool) -> JobPlan {
        JobPlan {
            index: 0,
            lines: 3,
            pause: Duration::ZERO,
            secret: secret.then(|| "chaos-secret-0123456789abcdef".to_owned()),
            cancel_after: None,
        }
    }

    fn entry(sequence: u64, data: &str) -> v1::LogEntry {
        v1::LogEntry {
            sequence,
            stream: v1::LogStream::Stdout as i32,
            data: data.as_bytes().to_vec().into(),
            timestamp_ms: 0,
        }
    }

    fn logs(attempt: u32, entries: Vec<v1::LogEntry>) -> v1::GetLogsResponse {
        v1::GetLogsResponse {
            chunks: vec![v1::LogChunk {
                job_id: "j".into(),
                attempt,
                entries,
            }],
            job_finished: true,
        }
    }

    #[test]
    fn complete_output_passes_and_gaps_or_disorder_fail() {
        let ok = logs(
            2,
            vec![
                entry(1, "chaos-line 1\nchaos-line 2"),
                entry(2, "chaos-line 3"),
            ],
        );
        assert_eq!(plan(false).check_output(&attempt_lines(&ok, 2)), Ok(()));
        // Another attempt's output is not this attempt's.
        assert!(plan(false).check_output(&attempt_lines(&ok, 1)).is_err());
        let gap = logs(1, vec![entry(1, "chaos-line 1"), entry(2, "chaos-line 3")]);
        assert!(plan(false).check_output(&attempt_lines(&gap, 1)).is_err());
        let swapped = logs(
            1,
            vec![
                entry(2, "chaos-line 2\nchaos-line 3"),
                entry(1, "chaos-line 1"),
            ],
        );
        assert!(
            plan(false)
                .check_output(&attempt_lines(&swapped, 1))
                .is_err()
        );
    }

    #[test]
    fn a_secret_job_must_print_its_secret_line_first() {
        let with = logs(
            1,
            vec![entry(
                1,
                "secret-json: {\"CHAOS_TOKEN\":\"[REDACTED]\"}\nchaos-line 1\nchaos-line 2\nchaos-line 3",
            )],
        );
        assert_eq!(plan(true).check_output(&attempt_lines(&with, 1)), Ok(()));
        let without = logs(
            1,
            vec![entry(1, "chaos-line 1\nchaos-line 2\nchaos-line 3")],
        );
        assert!(
            plan(true)
                .check_output(&attempt_lines(&without, 1))
                .is_err()
        );
    }
}
