//! The execution history the jobs write themselves: one `start` line when a run of
//! the script begins and one `end` line when it printed its last line, each with
//! job id, attempt, shell pid and wall-clock time.

use std::path::Path;

/// What a marker line says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MarkKind {
    /// The script started.
    Start,
    /// The script printed every line.
    End,
}

/// One line of the marker file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mark {
    /// Start or end.
    pub kind: MarkKind,
    /// Job id.
    pub job: String,
    /// Attempt the agent gave the run (`HODEI_ATTEMPT`).
    pub attempt: u32,
    /// The script's shell pid.
    pub pid: u32,
    /// Unix time in milliseconds.
    pub at_ms: i64,
}

impl std::fmt::Display for Mark {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match self.kind {
            MarkKind::Start => "start",
            MarkKind::End => "end",
        };
        write!(f, "{kind} attempt {} pid {}", self.attempt, self.pid)
    }
}

/// Parses one marker line; `None` for a torn or foreign line.
pub fn parse_line(line: &str) -> Option<Mark> {
    let mut f = line.split_whitespace();
    let kind = match f.next()? {
        "start" => MarkKind::Start,
        "end" => MarkKind::End,
        _ => return None,
    };
    let job = f.next()?.to_owned();
    let attempt = f.next()?.parse().ok()?;
    let pid = f.next()?.parse().ok()?;
    let ns: i64 = f.next()?.parse().ok()?;
    Some(Mark {
        kind,
        job,
        attempt,
        pid,
        at_ms: ns / 1_000_000,
    })
}

/// Every marker in `path` (an absent file has none).
pub fn read(path: &Path) -> Vec<Mark> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(parse_line)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_start_and_end_lines() {
        let m = parse_line("start 0b4c 2 4242 1700000000123456789").unwrap();
        assert_eq!(m.kind, MarkKind::Start);
        assert_eq!((m.job.as_str(), m.attempt, m.pid), ("0b4c", 2, 4242));
        assert_eq!(m.at_ms, 1_700_000_000_123);
        assert_eq!(
            parse_line("end j 1 7 1000000").map(|m| m.kind),
            Some(MarkKind::End)
        );
        assert!(parse_line("start j x 7 1").is_none());
        assert!(parse_line("start j 1 7").is_none());
    }
}
