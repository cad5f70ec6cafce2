//! Job progress: a job reports how far it is by printing a line
//!
//! ```text
//! ::progress <percent> [message]
//! ```
//!
//! on its standard output (`percent` an integer 0..=100, then an optional
//! message to the end of the line), like CI runners' workflow commands. The
//! line stays in the job's log; the agent sends the latest progress of each
//! attempt to the server, which keeps it on the job (`progress` in
//! `GET /api/v1/jobs/{id}`, `hodei job get`, the dashboard's job page).
//! A line that starts with `::progress` but does not parse is ignored.
//!
//! ```
//! use hodei_agent::progress::{Progress, last_progress};
//! let out = b"building\n::progress 40 compiling crates\nmore output\n";
//! assert_eq!(
//!     last_progress(out),
//!     Some(Progress { percent: 40, message: "compiling crates".into() })
//! );
//! ```

use memchr::memmem;

/// The marker a progress line starts with.
pub const PROGRESS_MARKER: &[u8] = b"::progress";

/// One progress report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Progress {
    /// 0..=100.
    pub percent: u32,
    /// What the job is doing (may be empty).
    pub message: String,
}

/// Parses one line (without its newline) as a progress report.
#[must_use]
pub fn parse_line(line: &[u8]) -> Option<Progress> {
    let rest = line.strip_prefix(PROGRESS_MARKER)?;
    // `::progressive` is not a progress line.
    let rest = std::str::from_utf8(rest).ok()?;
    if !rest.starts_with([' ', '\t']) {
        return None;
    }
    let rest = rest.trim_start();
    let (num, message) = match rest.find([' ', '\t']) {
        Some(i) => (&rest[..i], rest[i..].trim()),
        None => (rest.trim_end(), ""),
    };
    let percent: u32 = num.trim_end_matches('%').parse().ok()?;
    (percent <= 100).then(|| Progress {
        percent,
        message: message.trim_end_matches('\r').to_owned(),
    })
}

/// The last progress line in `data` (one or more lines separated by `\n`),
/// if any. Finds the marker with a SIMD substring search, so output without
/// progress lines costs one fast scan.
#[must_use]
pub fn last_progress(data: &[u8]) -> Option<Progress> {
    let finder = memmem::Finder::new(PROGRESS_MARKER);
    let mut found = None;
    for at in finder.find_iter(data) {
        // Only at the start of a line.
        if at > 0 && data[at - 1] != b'\n' {
            continue;
        }
        let end = memchr::memchr(b'\n', &data[at..]).map_or(data.len(), |n| at + n);
        if let Some(p) = parse_line(&data[at..end]) {
            found = Some(p);
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(percent: u32, message: &str) -> Option<Progress> {
        Some(Progress {
            percent,
            message: message.to_owned(),
        })
    }

    #[test]
    fn lines_parse_or_are_ignored() {
        assert_eq!(
            parse_line(b"::progress 40 copying files"),
            p(40, "copying files")
        );
        assert_eq!(parse_line(b"::progress 100"), p(100, ""));
        assert_eq!(parse_line(b"::progress  7%  step two \r"), p(7, "step two"));
        assert_eq!(parse_line(b"::progress 101 too far"), None);
        assert_eq!(parse_line(b"::progress -1"), None);
        assert_eq!(parse_line(b"::progress x"), None);
        assert_eq!(parse_line(b"::progressive 40"), None);
        assert_eq!(parse_line(b"::progress"), None);
        assert_eq!(parse_line(b"say ::progress 40"), None);
    }

    #[test]
    fn the_last_line_at_a_line_start_wins() {
        let data = b"::progress 10 a\nnoise ::progress 99 no\n::progress 20 b\ntail";
        assert_eq!(last_progress(data), p(20, "b"));
        assert_eq!(last_progress(b"no progress here\n"), None);
        assert_eq!(last_progress(b"x\n::progress 55"), p(55, ""));
    }
}
