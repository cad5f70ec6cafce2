//! The properties the fuzz targets check, kept out of the target files so that
//! each target is one line and the properties can be read in one place.
//!
//! Every function takes the fuzzer's bytes (or its structured input) and
//! panics only when a property is broken: a panic in the code under test, or
//! an `assert!` here.

use arbitrary::Arbitrary;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bytes::{Bytes, BytesMut};
use hodei_agent::lines::{Frame, LineDecoder};
use hodei_agent::redact::{Redactor, StreamRedactor};
use hodei_core::domain::provider::ProviderConfig;
use hodei_core::proto::convert::{
    self, attempt_result_from_proto, job_state_from_proto, log_stream_from_proto,
    outcome_from_proto, parse_job_id, parse_worker_id, provider_type_from_proto,
    worker_state_from_proto,
};
use hodei_core::proto::v1;
use hodei_core::{CorrelationId, JobSpec, LogEntry, ResourceUsage};
use prost::Message;
use tokio_util::codec::Decoder;

// ---- proto_messages ---------------------------------------------------------

/// Decodes `data[1..]` as the wire message selected by `data[0]` (every message
/// a worker agent or a client sends, and the server's messages an agent
/// decodes) and converts it to the domain as the server or agent does.
pub fn proto_message(data: &[u8]) {
    let Some((&kind, bytes)) = data.split_first() else {
        return;
    };
    macro_rules! decode {
        ($t:ty) => {
            match <$t>::decode(bytes) {
                Ok(m) => m,
                Err(_) => return,
            }
        };
    }
    match kind % 20 {
        0 => worker_message(decode!(v1::WorkerMessage)),
        1 => {
            let r = decode!(v1::RegisterRequest);
            if let Some(info) = r.worker_info
                && !info.worker_id.is_empty()
            {
                let _ = parse_worker_id(&info.worker_id, "worker_info.worker_id");
            }
        }
        2 => {
            let r = decode!(v1::QueueJobRequest);
            if !r.correlation_id.is_empty() {
                let _ = r.correlation_id.parse::<CorrelationId>();
            }
            if let Some(spec) = r.spec {
                job_spec(spec);
            }
        }
        3 => {
            let r = decode!(v1::AssignJobRequest);
            ids(&r.job_id, &r.worker_id);
        }
        4 => {
            let r = decode!(v1::StartJobRequest);
            ids(&r.job_id, &r.worker_id);
        }
        5 => {
            let r = decode!(v1::UpdateProgressRequest);
            ids(&r.job_id, &r.worker_id);
        }
        6 => {
            let r = decode!(v1::CompleteJobRequest);
            ids(&r.job_id, &r.worker_id);
        }
        7 => {
            let r = decode!(v1::FailJobRequest);
            ids(&r.job_id, &r.worker_id);
        }
        8 => {
            let r = decode!(v1::CancelJobRequest);
            let _ = parse_job_id(&r.job_id, "job_id");
        }
        9 => {
            let r = decode!(v1::ListJobsRequest);
            let _ = job_state_from_proto(r.state, "state");
        }
        10 => {
            let r = decode!(v1::GetLogsRequest);
            let _ = parse_job_id(&r.job_id, "job_id");
        }
        11 => {
            let r = decode!(v1::RegisterProviderRequest);
            let ty = provider_type_from_proto(r.provider_type, "provider_type");
            if let (Ok(ty), Ok(config)) =
                (ty, serde_json::from_str::<ProviderConfig>(&r.config_json))
            {
                let _ = config.provider_type() == ty;
            }
        }
        12 => {
            let r = decode!(v1::UpdateWorkerStatusRequest);
            let _ = parse_worker_id(&r.worker_id, "worker_id");
            let _ = worker_state_from_proto(r.state, "state");
        }
        13 => {
            let r = decode!(v1::UnregisterWorkerRequest);
            let _ = parse_worker_id(&r.worker_id, "worker_id");
        }
        14 => {
            let r = decode!(v1::GetAggregatedMetricsRequest);
            let _ = parse_worker_id(&r.worker_id, "worker_id");
            let _ = i64::try_from(r.window_ms);
        }
        15 => {
            let r = decode!(v1::ConfigureSchedulerRequest);
            let _ = v1::SchedulingStrategy::try_from(r.strategy);
        }
        16 => {
            // What the agent decodes from the server.
            let m = decode!(v1::ServerMessage);
            if let Some(v1::server_message::Payload::RunJob(cmd)) = m.payload {
                let _ = parse_job_id(&cmd.job_id, "run_job.job_id");
                if let Some(spec) = cmd.spec {
                    job_spec(spec);
                }
            }
        }
        17 => {
            let r = decode!(v1::GetJobRequest);
            let _ = parse_job_id(&r.job_id, "job_id");
        }
        18 => {
            let r = decode!(v1::ExecutionEventStreamRequest);
            let _ = parse_job_id(&r.job_id, "job_id");
        }
        _ => job_spec(decode!(v1::JobSpec)),
    }
}

fn ids(job: &str, worker: &str) {
    let _ = parse_job_id(job, "job_id");
    let _ = parse_worker_id(worker, "worker_id");
}

/// What the server does with each payload of a worker's stream.
fn worker_message(m: v1::WorkerMessage) {
    use v1::worker_message::Payload;
    match m.payload {
        None => {}
        Some(Payload::Heartbeat(hb)) => {
            let _ = worker_state_from_proto(hb.state, "heartbeat.state");
            if let Some(u) = hb.usage.as_ref() {
                usage(u);
            }
        }
        Some(Payload::JobStarted(s)) => {
            let _ = parse_job_id(&s.job_id, "job_started.job_id");
        }
        Some(Payload::LogBatch(b)) => {
            let _ = parse_job_id(&b.job_id, "log_batch.job_id");
            for e in b.entries {
                let _ = log_stream_from_proto(e.stream, "entries.stream");
                if let Ok(entry) = LogEntry::try_from(e) {
                    // Domain → wire → domain is the identity (timestamps clamp once).
                    let again = LogEntry::try_from(v1::LogEntry::from(&entry))
                        .expect("a converted log entry converts back");
                    assert_eq!(again, entry);
                }
            }
        }
        Some(Payload::JobResult(r)) => {
            let _ = parse_job_id(&r.job_id, "job_result.job_id");
            let _ = outcome_from_proto(r.outcome, "job_result.outcome");
            let _ = attempt_result_from_proto(&r);
        }
        Some(Payload::Stats(s)) => {
            if let Some(u) = s.usage.as_ref() {
                usage(u);
            }
        }
        Some(Payload::Progress(p)) => {
            let _ = parse_job_id(&p.job_id, "progress.job_id");
            let progress = hodei_core::domain::progress::JobProgress::new(p.percent, &p.message);
            assert_eq!(progress.is_some(), p.percent <= 100, "percent {}", p.percent);
            if let Some(progress) = progress {
                assert!(progress.message.len() <= p.message.len());
                assert!(
                    progress.message.len()
                        <= hodei_core::domain::progress::MAX_PROGRESS_MESSAGE_BYTES
                );
            }
        }
    }
}

fn usage(u: &v1::ResourceUsage) {
    let domain = ResourceUsage::from(u);
    let back = v1::ResourceUsage::from(&domain);
    assert_eq!(back.memory_bytes, u.memory_bytes);
    assert_eq!(back.cpu_percent.to_bits(), u.cpu_percent.to_bits());
}

/// A wire spec: converting never panics, and one that converts and passes
/// `validate()` round-trips through the wire form, its bytes and its JSON form
/// (the Postgres store keeps specs as JSON).
fn job_spec(p: v1::JobSpec) {
    let Ok(spec) = JobSpec::try_from(p) else {
        return;
    };
    if spec.validate().is_err() {
        return;
    }
    valid_spec_round_trips(&spec);
}

fn valid_spec_round_trips(spec: &JobSpec) {
    let wire = v1::JobSpec::from(spec);
    let back = JobSpec::try_from(wire.clone()).expect("a valid spec converts back");
    assert_eq!(&back, spec, "wire round trip");
    let decoded = v1::JobSpec::decode(wire.encode_to_vec().as_slice()).expect("decodes");
    let back = JobSpec::try_from(decoded).expect("a valid spec converts back from bytes");
    assert_eq!(&back, spec, "wire bytes round trip");
    let json = serde_json::to_vec(spec).expect("a spec serializes");
    let back: JobSpec = serde_json::from_slice(&json).expect("its JSON deserializes");
    assert_eq!(&back, spec, "JSON round trip");
    let _ = convert::to_millis(convert::from_millis(0));
}

// ---- jobspec_json -----------------------------------------------------------

/// The REST body path: JSON → `JobSpec` → `validate()` never panics; a valid
/// spec round-trips through JSON and the wire form.
pub fn jobspec_json(data: &[u8]) {
    let Ok(spec) = serde_json::from_slice::<JobSpec>(data) else {
        return;
    };
    if spec.validate().is_ok() {
        valid_spec_round_trips(&spec);
    }
}

// ---- line_decoder -----------------------------------------------------------

/// Input of the line decoder target: the bytes of a pipe and where its reads end.
#[derive(Debug, Arbitrary)]
pub struct LinesInput {
    /// Maximum line length (taken modulo 64, at least 1).
    pub max_line_bytes: u8,
    /// Grouped frames (several lines per frame) or one line per frame.
    pub grouped: bool,
    /// Sizes of the successive reads (0 is read as 1).
    pub reads: Vec<u8>,
    /// The bytes the child wrote.
    pub data: Vec<u8>,
}

/// Splits `data` into reads of the given sizes (the rest in one read).
fn chunks<'a>(data: &'a [u8], sizes: &[u8]) -> Vec<&'a [u8]> {
    let mut out = Vec::new();
    let mut rest = data;
    for &s in sizes {
        if rest.is_empty() {
            break;
        }
        let n = usize::from(s.max(1)).min(rest.len());
        let (head, tail) = rest.split_at(n);
        out.push(head);
        rest = tail;
    }
    if !rest.is_empty() {
        out.push(rest);
    }
    out
}

/// Runs the decoder over `reads` as `FramedRead` does (decode until `None`
/// after each read, `decode_eof` at the end).
pub fn decode_frames(mut decoder: LineDecoder, reads: &[&[u8]]) -> Vec<Frame> {
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    for r in reads {
        buf.extend_from_slice(r);
        while let Some(f) = decoder.decode(&mut buf).expect("decode never fails") {
            out.push(f);
        }
    }
    while let Some(f) = decoder.decode_eof(&mut buf).expect("decode never fails") {
        out.push(f);
    }
    assert!(buf.is_empty(), "bytes left after end of input");
    out
}

/// The frames, joined back: a line frame ends with the newline it was cut at.
fn rejoin(frames: &[Frame]) -> Vec<u8> {
    let mut out = Vec::new();
    for f in frames {
        out.extend_from_slice(f.data());
        if matches!(f, Frame::Line(_)) {
            out.push(b'\n');
        }
    }
    out
}

/// Whatever the reads: the frames give back the input exactly (plus a final
/// newline when it had none), no frame is longer than `max_line_bytes`, an
/// ungrouped line holds no newline, a fragment never ends a line, and the
/// frames do not depend on how the input was read.
pub fn line_decoder(input: &LinesInput) {
    let max = usize::from(input.max_line_bytes % 64).max(1);
    let make = || {
        if input.grouped {
            LineDecoder::grouped(max)
        } else {
            LineDecoder::new(max)
        }
    };
    let frames = decode_frames(make(), &chunks(&input.data, &input.reads));
    let mut expected = input.data.clone();
    if !expected.is_empty() && expected.last() != Some(&b'\n') {
        expected.push(b'\n');
    }
    assert_eq!(rejoin(&frames), expected, "frames rebuild the input");
    for f in &frames {
        assert!(f.data().len() <= max, "frame longer than max_line_bytes");
        if !input.grouped {
            assert!(!f.data().contains(&b'\n'), "newline inside a line frame");
        }
        if let Frame::Fragment(d) = f {
            assert_eq!(d.len(), max, "a fragment is exactly max_line_bytes");
        }
    }
    if !input.grouped {
        // One line per frame: how the pipe was read cannot change the frames.
        let whole = decode_frames(make(), &[&input.data]);
        assert_eq!(frames, whole, "frames depend on the read boundaries");
    }
}

// ---- redact_stream ----------------------------------------------------------

/// How a secret is written into the output.
#[derive(Debug, Clone, Arbitrary)]
pub enum Form {
    /// The value itself.
    Raw,
    /// Inside a JSON string (serde_json escaping).
    Json,
    /// Percent-encoded, upper-case hex.
    UrlUpper,
    /// Percent-encoded, lower-case hex.
    UrlLower,
    /// Form encoding: `+` for spaces, upper-case hex.
    UrlForm,
    /// base64 of `prefix + value + suffix` (standard alphabet with padding, or URL-safe).
    Base64 {
        /// URL-safe alphabet instead of the standard one.
        url_safe: bool,
        /// Bytes before the value (sets the alignment).
        prefix: Vec<u8>,
        /// Bytes after the value.
        suffix: Vec<u8>,
    },
}

/// One piece of the job's output.
#[derive(Debug, Clone, Arbitrary)]
pub enum Piece {
    /// Bytes as they are.
    Text(Vec<u8>),
    /// A secret (index into the secrets, modulo their number) in some form.
    Secret {
        /// Which secret.
        index: u8,
        /// How it is written.
        form: Form,
    },
}

/// Input of the redaction target.
#[derive(Debug, Arbitrary)]
pub struct RedactInput {
    /// Secret values (kept: 6 to 64 bytes without `*`, as a job spec allows).
    pub secrets: Vec<Vec<u8>>,
    /// Maximum line length (taken modulo 256, at least 1).
    pub max_line_bytes: u8,
    /// Grouped frames or one line per frame.
    pub grouped: bool,
    /// Sizes of the successive reads of the pipe.
    pub reads: Vec<u8>,
    /// The output, piece by piece.
    pub pieces: Vec<Piece>,
}

/// The URL encoding the redactor claims to see through.
fn percent_encode(value: &[u8], upper: bool, plus_for_space: bool) -> Vec<u8> {
    let hex: &[u8; 16] = if upper {
        b"0123456789ABCDEF"
    } else {
        b"0123456789abcdef"
    };
    let mut out = Vec::new();
    for &b in value {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => out.push(b),
            b' ' if plus_for_space => out.push(b'+'),
            _ => out.extend_from_slice(&[b'%', hex[usize::from(b >> 4)], hex[usize::from(b & 15)]]),
        }
    }
    out
}

fn json_escaped(value: &[u8]) -> Option<Vec<u8>> {
    let s = std::str::from_utf8(value).ok()?;
    let json = serde_json::to_string(s).ok()?;
    Some(json.as_bytes()[1..json.len() - 1].to_vec())
}

/// The base64 characters of `prefix + value + suffix` that encode only bytes
/// of `value`: the same whatever surrounds it.
fn base64_middle(value: &[u8], prefix: &[u8], suffix: &[u8], url_safe: bool) -> (Vec<u8>, Vec<u8>) {
    let mut raw = prefix.to_vec();
    raw.extend_from_slice(value);
    raw.extend_from_slice(suffix);
    let encoded = if url_safe {
        URL_SAFE_NO_PAD.encode(&raw)
    } else {
        base64::engine::general_purpose::STANDARD.encode(&raw)
    };
    let start = (8 * prefix.len()).div_ceil(6);
    let end = (8 * (prefix.len() + value.len())) / 6;
    let middle = encoded.as_bytes()[start..end.max(start)].to_vec();
    (encoded.into_bytes(), middle)
}

/// Whether `hay` contains `needle`.
fn contains(hay: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && hay.windows(needle.len()).any(|w| w == needle)
}

/// The secret's text that must never be seen in the output: the value and the
/// encoded forms the redactor claims to handle. A multi-line value cannot be
/// seen whole by a line-based redactor; each of its lines long enough to mask
/// (6 bytes) is a secret of its own.
fn forbidden(value: &[u8]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    if value.contains(&b'\n') {
        for line in value.split(|&b| b == b'\n') {
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            if line.len() >= 6 {
                out.push(line.to_vec());
            }
        }
    } else {
        out.push(value.to_vec());
    }
    if let Some(j) = json_escaped(value) {
        out.push(j);
    }
    out.push(percent_encode(value, true, false));
    out.push(percent_encode(value, false, false));
    out.push(percent_encode(value, true, true));
    for shift in 0..3 {
        for url_safe in [false, true] {
            let prefix = vec![0u8; shift];
            let (_, middle) = base64_middle(value, &prefix, &[], url_safe);
            if middle.len() >= 6 {
                out.push(middle);
            }
        }
    }
    out
}

/// Whatever the output, the secrets, the line limit and how the pipe is read:
/// after the line decoder and the stream redactor, no secret (nor any encoded
/// form the redactor claims to handle) is left in what the agent sends, seen
/// frame by frame or joined back into the log text.
pub fn redact_stream(input: &RedactInput) {
    let secrets: Vec<Vec<u8>> = input
        .secrets
        .iter()
        .filter(|s| (6..=64).contains(&s.len()) && !s.contains(&b'*'))
        .cloned()
        .collect();
    if secrets.is_empty() {
        return;
    }
    let mut data = Vec::new();
    for piece in &input.pieces {
        match piece {
            Piece::Text(t) => data.extend_from_slice(t),
            Piece::Secret { index, form } => {
                let value = &secrets[usize::from(*index) % secrets.len()];
                match form {
                    Form::Raw => data.extend_from_slice(value),
                    Form::Json => data
                        .extend_from_slice(&json_escaped(value).unwrap_or_else(|| value.clone())),
                    Form::UrlUpper => data.extend_from_slice(&percent_encode(value, true, false)),
                    Form::UrlLower => data.extend_from_slice(&percent_encode(value, false, false)),
                    Form::UrlForm => data.extend_from_slice(&percent_encode(value, true, true)),
                    Form::Base64 {
                        url_safe,
                        prefix,
                        suffix,
                    } => {
                        let prefix = &prefix[..prefix.len().min(8)];
                        let suffix = &suffix[..suffix.len().min(8)];
                        let (encoded, _) = base64_middle(value, prefix, suffix, *url_safe);
                        data.extend_from_slice(&encoded);
                    }
                }
            }
        }
    }
    let max = usize::from(input.max_line_bytes).max(1);
    let decoder = if input.grouped {
        LineDecoder::grouped(max)
    } else {
        LineDecoder::new(max)
    };
    let frames = decode_frames(decoder, &chunks(&data, &input.reads));
    let redactor = std::sync::Arc::new(Redactor::new(&secrets));
    let mut stream = StreamRedactor::new(redactor);
    let mut sent: Vec<Bytes> = Vec::new();
    let mut text = Vec::new();
    for frame in frames {
        let line = matches!(frame, Frame::Line(_));
        if let Some(out) = stream.push(frame) {
            text.extend_from_slice(&out);
            sent.push(out);
        }
        if line {
            text.push(b'\n');
        }
    }
    if let Some(out) = stream.finish() {
        text.extend_from_slice(&out);
        sent.push(out);
    }
    for value in &secrets {
        for f in forbidden(value) {
            for entry in &sent {
                assert!(
                    !contains(entry, &f),
                    "secret form {f:?} of {value:?} left in an entry"
                );
            }
            assert!(
                !contains(&text, &f),
                "secret form {f:?} of {value:?} left in the log text"
            );
        }
    }
}
