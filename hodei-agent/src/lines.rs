//! Line splitting of a child's output without copying.
//!
//! [`LineDecoder`] is a [`Decoder`] for [`tokio_util::codec::FramedRead`]: the reader reads
//! raw chunks into its own [`BytesMut`] buffer (exactly what `BytesCodec` would hand out), and
//! the decoder cuts complete lines off the front of that buffer with
//! [`BytesMut::split_to`] + [`BytesMut::freeze`], so a line's bytes are never copied after the
//! `read(2)`. A partial line simply stays in the buffer until the rest arrives (splitting
//! `BytesCodec` chunks in a separate step would have to copy every partial tail into the
//! next chunk).
//!
//! With [`LineDecoder::grouped`], every complete line already in the buffer is cut off in one
//! frame (the lines separated by `\n`, without the last newline), up to `max_line_bytes`:
//! a job printing a million short lines then costs a few thousand frames, log entries and
//! store writes instead of a million, which is how the log path keeps up with a raw pipe
//! (GitLab ships trace chunks and Buildkite log chunks for the same reason). A line is never
//! split between two frames unless it is longer than `max_line_bytes`.
//!
//! Lines longer than `max_line_bytes` are cut into [`Frame::Fragment`]s of exactly
//! `max_line_bytes`; the final part of such a line is an ordinary [`Frame::Line`]. A last line
//! without a trailing newline is returned at end of input. Bytes are never interpreted:
//! non-UTF-8 output passes through unchanged, and a `\r` before the `\n` is kept.

use bytes::{Bytes, BytesMut};
use tokio_util::codec::Decoder;

/// One piece of output cut by [`LineDecoder`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// A complete line (or the last part of an over-long line), without its newline. From a
    /// [grouped](LineDecoder::grouped) decoder, one or more complete lines separated by `\n`.
    Line(Bytes),
    /// A `max_line_bytes` piece of an over-long line; more of the same line follows.
    Fragment(Bytes),
}

impl Frame {
    /// The bytes of the frame.
    #[must_use]
    pub fn data(&self) -> &Bytes {
        match self {
            Frame::Line(b) | Frame::Fragment(b) => b,
        }
    }

    /// Consumes the frame, returning its bytes.
    #[must_use]
    pub fn into_data(self) -> Bytes {
        match self {
            Frame::Line(b) | Frame::Fragment(b) => b,
        }
    }
}

/// Splits a byte stream into lines on `\n`, with a maximum line length.
#[derive(Debug, Clone)]
pub struct LineDecoder {
    max_line_bytes: usize,
    /// How far into the buffer we already looked for a newline (avoids rescanning).
    scanned: usize,
    /// Whether one frame carries every complete line available (see the module docs).
    grouped: bool,
}

impl LineDecoder {
    /// A decoder cutting lines longer than `max_line_bytes` (at least 1) into fragments.
    #[must_use]
    pub fn new(max_line_bytes: usize) -> Self {
        Self {
            max_line_bytes: max_line_bytes.max(1),
            scanned: 0,
            grouped: false,
        }
    }

    /// A decoder whose frames carry every complete line available at once, up to
    /// `max_line_bytes` (over-long lines are fragmented as with [`LineDecoder::new`]).
    #[must_use]
    pub fn grouped(max_line_bytes: usize) -> Self {
        Self {
            grouped: true,
            ..Self::new(max_line_bytes)
        }
    }

    /// The maximum length of one frame.
    #[must_use]
    pub fn max_line_bytes(&self) -> usize {
        self.max_line_bytes
    }
}

impl Decoder for LineDecoder {
    type Item = Frame;
    type Error = std::io::Error;

    fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Frame>, std::io::Error> {
        let limit = buf.len().min(self.max_line_bytes);
        let start = self.scanned.min(limit);
        let found = if self.grouped {
            // The last newline: everything before it is complete lines. (The part before
            // `start` holds no newline, or it would have been cut off already.)
            memchr::memrchr(b'\n', &buf[start..limit])
        } else {
            memchr_newline(&buf[start..limit])
        };
        if let Some(pos) = found {
            let end = start + pos;
            let mut line = buf.split_to(end + 1);
            line.truncate(end);
            self.scanned = 0;
            return Ok(Some(Frame::Line(line.freeze())));
        }
        if buf.len() > self.max_line_bytes {
            // No newline within the first max_line_bytes: cut a fragment. (If the newline is
            // exactly at max_line_bytes, the line fits and is returned whole next time.)
            if buf[self.max_line_bytes] == b'\n' {
                let mut line = buf.split_to(self.max_line_bytes + 1);
                line.truncate(self.max_line_bytes);
                self.scanned = 0;
                return Ok(Some(Frame::Line(line.freeze())));
            }
            let piece = buf.split_to(self.max_line_bytes);
            self.scanned = 0;
            return Ok(Some(Frame::Fragment(piece.freeze())));
        }
        self.scanned = limit;
        Ok(None)
    }

    fn decode_eof(&mut self, buf: &mut BytesMut) -> Result<Option<Frame>, std::io::Error> {
        match self.decode(buf)? {
            Some(frame) => Ok(Some(frame)),
            None if buf.is_empty() => Ok(None),
            None => {
                self.scanned = 0;
                let rest = buf.split_to(buf.len());
                Ok(Some(Frame::Line(rest.freeze())))
            }
        }
    }
}

fn memchr_newline(haystack: &[u8]) -> Option<usize> {
    memchr::memchr(b'\n', haystack)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(input: &[&[u8]], max: usize) -> Vec<Frame> {
        decode_all(LineDecoder::new(max), input)
    }

    fn run_grouped(input: &[&[u8]], max: usize) -> Vec<Frame> {
        decode_all(LineDecoder::grouped(max), input)
    }

    fn decode_all(mut d: LineDecoder, input: &[&[u8]]) -> Vec<Frame> {
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        for chunk in input {
            buf.extend_from_slice(chunk);
            while let Some(f) = d.decode(&mut buf).unwrap() {
                out.push(f);
            }
        }
        while let Some(f) = d.decode_eof(&mut buf).unwrap() {
            out.push(f);
        }
        out
    }

    fn line(s: &[u8]) -> Frame {
        Frame::Line(Bytes::copy_from_slice(s))
    }

    fn frag(s: &[u8]) -> Frame {
        Frame::Fragment(Bytes::copy_from_slice(s))
    }

    #[test]
    fn splits_lines_across_chunks_and_keeps_last() {
        let out = run(&[b"ab", b"c\nde", b"f\n\ng"], 100);
        assert_eq!(out, vec![line(b"abc"), line(b"def"), line(b""), line(b"g")]);
    }

    #[test]
    fn long_lines_are_fragmented() {
        let out = run(&[b"abcdefgh\nabcd\nabcde", b"\n"], 4);
        assert_eq!(
            out,
            vec![
                frag(b"abcd"),
                line(b"efgh"),
                line(b"abcd"),
                frag(b"abcd"),
                line(b"e"),
            ]
        );
    }

    #[test]
    fn grouped_frames_carry_all_complete_lines_and_keep_partial_ones_whole() {
        let out = run_grouped(&[b"ab\ncd\ne", b"f\n\ng", b"h"], 100);
        assert_eq!(out, vec![line(b"ab\ncd"), line(b"ef\n"), line(b"gh")]);
    }

    #[test]
    fn grouped_frames_stay_within_the_limit_and_fragment_long_lines() {
        // Limit 8: "aaa\nbbb" (7) fits, "ccc" waits for its newline; a 10-byte line is cut.
        let out = run_grouped(&[b"aaa\nbbb\nccc\n0123456789\n"], 8);
        assert_eq!(
            out,
            vec![
                line(b"aaa\nbbb"),
                line(b"ccc"),
                frag(b"01234567"),
                line(b"89"),
            ]
        );
        // Concatenated with newlines, the frames give back the input exactly.
        let mut again = Vec::new();
        for f in &out {
            again.extend_from_slice(f.data());
            if matches!(f, Frame::Line(_)) {
                again.push(b'\n');
            }
        }
        assert_eq!(again, b"aaa\nbbb\nccc\n0123456789\n");
    }

    #[test]
    fn non_utf8_passes_through() {
        let out = run(&[b"\xff\xfe\x00x\r\n"], 100);
        assert_eq!(out, vec![line(b"\xff\xfe\x00x\r")]);
    }
}
