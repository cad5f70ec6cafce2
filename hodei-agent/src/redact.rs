//! Secret redaction of job output.
//!
//! A [`Redactor`] replaces every occurrence of a secret value with [`REDACTED`] (`***`), on raw
//! bytes (non-UTF-8 output passes through untouched). Besides the value itself it looks for
//! the forms a script is likely to print it in:
//!
//! * JSON-escaped (the value inside a JSON string, without the quotes);
//! * URL-encoded (percent-encoding of everything but `A-Za-z0-9-._~`, upper- and lower-case
//!   hex, and the form variant with `+` for spaces);
//! * base64, standard and URL-safe alphabets, at all three byte alignments: when the value
//!   sits at offset 0, 1 or 2 (mod 3) inside the encoded data, the characters that encode
//!   only bytes of the value are the same whatever surrounds it. For each alignment the
//!   pattern is that stable middle part (the GitHub Actions runner masks secrets the same way).
//!
//! A value spanning several lines (a PEM key) is never seen whole by a line-based redactor,
//! so each of its lines of at least 6 bytes (without a trailing `\r`) is searched on its own,
//! as the GitHub Actions runner masks multi-line secrets; shorter lines of it are not masked.
//!
//! All patterns are searched in one pass with Aho-Corasick (leftmost-longest).
//!
//! Redaction works on complete lines. For lines cut into fragments because they were too
//! long, [`StreamRedactor`] holds back the last `longest pattern - 1` bytes of each fragment
//! and prepends them to the next one, so a secret across the cut is still caught.

use std::collections::BTreeSet;
use std::sync::Arc;

use aho_corasick::{AhoCorasick, MatchKind};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD_NO_PAD, URL_SAFE_NO_PAD};
use bytes::Bytes;

use crate::lines::Frame;

/// What every occurrence of a secret is replaced with.
pub const REDACTED: &[u8] = b"***";

/// Shortest encoded pattern that is still searched for (shorter ones would mask unrelated
/// output).
const MIN_PATTERN_LEN: usize = 6;

/// Replaces secret values (and their encoded forms) with `***`.
#[derive(Debug, Clone, Default)]
pub struct Redactor {
    matcher: Option<AhoCorasick>,
    max_pattern_len: usize,
    pattern_count: usize,
}

impl Redactor {
    /// A redactor for the given secret values. Empty values are ignored.
    #[must_use]
    pub fn new<I, S>(secrets: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<[u8]>,
    {
        let mut patterns: BTreeSet<Vec<u8>> = BTreeSet::new();
        for secret in secrets {
            patterns.extend(Self::patterns_for(secret.as_ref()));
        }
        let max_pattern_len = patterns.iter().map(Vec::len).max().unwrap_or(0);
        let pattern_count = patterns.len();
        let matcher = if patterns.is_empty() {
            None
        } else {
            // Building only fails for absurd pattern sets (over the automaton size limits).
            AhoCorasick::builder()
                .match_kind(MatchKind::LeftmostLongest)
                .build(&patterns)
                .ok()
        };
        Self {
            matcher,
            max_pattern_len,
            pattern_count,
        }
    }

    /// A redactor that changes nothing.
    #[must_use]
    pub fn empty() -> Self {
        Self::default()
    }

    /// Whether there is nothing to redact.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.matcher.is_none()
    }

    /// Length of the longest searched pattern.
    #[must_use]
    pub fn max_pattern_len(&self) -> usize {
        self.max_pattern_len
    }

    /// Number of distinct patterns searched (values and their encodings).
    #[must_use]
    pub fn pattern_count(&self) -> usize {
        self.pattern_count
    }

    /// Every byte pattern searched for one secret value: the value and its encodings.
    #[must_use]
    pub fn patterns_for(value: &[u8]) -> Vec<Vec<u8>> {
        let mut out: BTreeSet<Vec<u8>> = BTreeSet::new();
        if value.is_empty() {
            return Vec::new();
        }
        out.insert(value.to_vec());
        // Each line of a multi-line value: its lines reach the redactor one by one.
        if value.contains(&b'\n') {
            for line in value.split(|&b| b == b'\n') {
                out.insert(line.strip_suffix(b"\r").unwrap_or(line).to_vec());
            }
        }
        // JSON string escaping.
        if let Ok(s) = std::str::from_utf8(value)
            && let Ok(json) = serde_json::to_string(s)
            && json.len() >= 2
        {
            out.insert(json.as_bytes()[1..json.len() - 1].to_vec());
        }
        // URL encoding.
        out.insert(percent_encode(value, true, false));
        out.insert(percent_encode(value, false, false));
        out.insert(percent_encode(value, true, true));
        // base64 at the three alignments, both alphabets.
        for shift in 0..3usize {
            let mut shifted = vec![0u8; shift];
            shifted.extend_from_slice(value);
            let start = (8 * shift).div_ceil(6);
            let end = (8 * shift + 8 * value.len()) / 6;
            if end <= start || end - start < MIN_PATTERN_LEN {
                continue;
            }
            for engine in [&STANDARD_NO_PAD, &URL_SAFE_NO_PAD] {
                let encoded = engine.encode(&shifted);
                if let Some(stable) = encoded.as_bytes().get(start..end) {
                    out.insert(stable.to_vec());
                }
            }
        }
        out.into_iter()
            .filter(|p| p.as_slice() == value || p.len() >= MIN_PATTERN_LEN)
            .collect()
    }

    /// Redacts one complete line. Returns the input itself (no copy) when nothing matched.
    #[must_use]
    pub fn redact(&self, data: Bytes) -> Bytes {
        let Some(matcher) = &self.matcher else {
            return data;
        };
        let mut iter = matcher.find_iter(data.as_ref()).peekable();
        if iter.peek().is_none() {
            return data;
        }
        let mut out = Vec::with_capacity(data.len());
        let mut last = 0;
        for m in iter {
            out.extend_from_slice(&data[last..m.start()]);
            out.extend_from_slice(REDACTED);
            last = m.end();
        }
        out.extend_from_slice(&data[last..]);
        Bytes::from(out)
    }

    /// Redacts a string (error messages and other text leaving the agent).
    #[must_use]
    pub fn redact_str(&self, text: &str) -> String {
        let redacted = self.redact(Bytes::copy_from_slice(text.as_bytes()));
        String::from_utf8_lossy(&redacted).into_owned()
    }

    /// Redacts the prefix `buf[..cut]` of `buf`, where `cut` is chosen so that no pattern that
    /// could still be completed by later data starts before it. Returns the redacted prefix
    /// and the cut position.
    fn redact_prefix(&self, buf: &[u8]) -> (Vec<u8>, usize) {
        let Some(matcher) = &self.matcher else {
            return (buf.to_vec(), buf.len());
        };
        let mut cut = buf
            .len()
            .saturating_sub(self.max_pattern_len.saturating_sub(1));
        let matches: Vec<_> = matcher.find_iter(buf).collect();
        for m in &matches {
            if m.start() < cut && m.end() > cut {
                cut = m.start();
            }
        }
        let mut out = Vec::with_capacity(cut);
        let mut last = 0;
        for m in matches.iter().filter(|m| m.end() <= cut) {
            out.extend_from_slice(&buf[last..m.start()]);
            out.extend_from_slice(REDACTED);
            last = m.end();
        }
        out.extend_from_slice(&buf[last..cut]);
        (out, cut)
    }
}

fn percent_encode(value: &[u8], upper: bool, plus_for_space: bool) -> Vec<u8> {
    const UPPER: &[u8; 16] = b"0123456789ABCDEF";
    const LOWER: &[u8; 16] = b"0123456789abcdef";
    let hex = if upper { UPPER } else { LOWER };
    let mut out = Vec::with_capacity(value.len() * 3);
    for &b in value {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => out.push(b),
            b' ' if plus_for_space => out.push(b'+'),
            _ => {
                out.push(b'%');
                out.push(hex[usize::from(b >> 4)]);
                out.push(hex[usize::from(b & 0x0f)]);
            }
        }
    }
    out
}

/// Per-stream redaction state: redacts complete lines, and carries the tail of a fragment of
/// an over-long line over into the next fragment so that secrets across the cut are caught.
#[derive(Debug, Clone)]
pub struct StreamRedactor {
    redactor: Arc<Redactor>,
    carry: Vec<u8>,
}

impl StreamRedactor {
    /// New state for one output stream.
    #[must_use]
    pub fn new(redactor: Arc<Redactor>) -> Self {
        Self {
            redactor,
            carry: Vec::new(),
        }
    }

    /// Redacts one frame. Returns the bytes to emit, or `None` when a fragment was held back
    /// entirely (it is emitted with the next frame).
    ///
    /// With secrets configured, the pieces of an over-long line move by up to
    /// `longest pattern - 1` bytes: the first piece is shorter, the last one longer.
    pub fn push(&mut self, frame: Frame) -> Option<Bytes> {
        if self.redactor.is_empty() {
            return Some(frame.into_data());
        }
        match frame {
            Frame::Line(data) => {
                if self.carry.is_empty() {
                    return Some(self.redactor.redact(data));
                }
                let mut buf = std::mem::take(&mut self.carry);
                buf.extend_from_slice(&data);
                Some(self.redactor.redact(Bytes::from(buf)))
            }
            Frame::Fragment(data) => {
                let mut buf = std::mem::take(&mut self.carry);
                buf.extend_from_slice(&data);
                let (out, cut) = self.redactor.redact_prefix(&buf);
                self.carry = buf.split_off(cut);
                if out.is_empty() {
                    None
                } else {
                    Some(Bytes::from(out))
                }
            }
        }
    }

    /// Bytes held back from the last fragment (emitted with the next frame).
    #[must_use]
    pub fn pending(&self) -> usize {
        self.carry.len()
    }

    /// Emits what is held back, redacted (at end of input).
    pub fn finish(&mut self) -> Option<Bytes> {
        if self.carry.is_empty() {
            return None;
        }
        let buf = std::mem::take(&mut self.carry);
        Some(self.redactor.redact(Bytes::from(buf)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(secrets: &[&str]) -> Redactor {
        Redactor::new(secrets.iter().map(|s| s.as_bytes()))
    }

    fn red(r: &Redactor, s: &[u8]) -> Vec<u8> {
        r.redact(Bytes::copy_from_slice(s)).to_vec()
    }

    #[test]
    fn replaces_every_occurrence() {
        let r = r(&["hunter22", "s3cr3t!"]);
        assert_eq!(
            red(&r, b"a hunter22 b hunter22hunter22 s3cr3t!"),
            b"a *** b ****** ***".to_vec()
        );
        assert_eq!(red(&r, b"nothing here"), b"nothing here".to_vec());
    }

    #[test]
    fn base64_at_every_alignment_and_alphabet() {
        let secret = "p>?~s3cr3t-value??";
        let r = r(&[secret]);
        for prefix in ["", "a", "ab", "abc", "abcd"] {
            for suffix in ["", "x", "xy"] {
                let raw = format!("{prefix}{secret}{suffix}");
                for engine in [&base64::engine::general_purpose::STANDARD, &URL_SAFE_NO_PAD] {
                    let enc = engine.encode(raw.as_bytes());
                    let out = red(&r, enc.as_bytes());
                    assert!(
                        out.windows(3).any(|w| w == REDACTED),
                        "{prefix:?}/{suffix:?}: {enc} -> {}",
                        String::from_utf8_lossy(&out)
                    );
                }
            }
        }
    }

    #[test]
    fn json_and_url_forms() {
        let secret = "pa ss\"wo/rd\\é";
        let r = r(&[secret]);
        let json = serde_json::to_string(&serde_json::json!({ "k": secret })).unwrap();
        assert_eq!(red(&r, json.as_bytes()), b"{\"k\":\"***\"}".to_vec());
        let url = format!(
            "x={}",
            String::from_utf8(percent_encode(secret.as_bytes(), true, false)).unwrap()
        );
        assert_eq!(red(&r, url.as_bytes()), b"x=***".to_vec());
    }

    #[test]
    fn non_utf8_is_kept() {
        let r = r(&["secret1"]);
        assert_eq!(red(&r, b"\xff secret1 \xfe"), b"\xff *** \xfe".to_vec());
    }

    /// Found by the `redact_stream` fuzz target: a multi-line secret printed as it is
    /// reached the redactor line by line and was never matched.
    #[test]
    fn every_line_of_a_multi_line_secret_is_masked() {
        let key = "-----BEGIN KEY-----\r\nMIIBVwIBADANBgkq\nab\n-----END KEY-----";
        let r = Arc::new(r(&[key]));
        let mut s = StreamRedactor::new(r);
        let mut out = Vec::new();
        for line in key.split('\n') {
            let data = Bytes::copy_from_slice(line.as_bytes());
            out.extend_from_slice(&s.push(Frame::Line(data)).unwrap());
            out.push(b'\n');
        }
        // Lines shorter than 6 bytes cannot be masked without masking unrelated output.
        assert_eq!(out, b"***\r\n***\nab\n***\n".to_vec());
        let fuzzed = [255, 10, 170, 253, 253, 253, 253, 253];
        let r = Redactor::new([fuzzed]);
        assert_eq!(red(&r, &fuzzed[2..]), REDACTED.to_vec());
    }

    #[test]
    fn secret_across_fragments_is_caught() {
        let r = Arc::new(r(&["0123456789"]));
        let mut s = StreamRedactor::new(r);
        let mut out = Vec::new();
        for f in [
            Frame::Fragment(Bytes::from_static(b"aaaa01234")),
            Frame::Fragment(Bytes::from_static(b"56789bbbb")),
            Frame::Line(Bytes::from_static(b"cc")),
        ] {
            if let Some(b) = s.push(f) {
                out.extend_from_slice(&b);
            }
        }
        assert_eq!(out, b"aaaa***bbbbcc".to_vec());
    }
}
