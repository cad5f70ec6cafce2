//! Job output through the line decoder and the stream redactor: no secret, nor
//! an encoded form the redactor claims to handle, survives whatever the
//! chunking. See `hodei_fuzz::redact_stream`.
#![no_main]

libfuzzer_sys::fuzz_target!(|input: hodei_fuzz::RedactInput| hodei_fuzz::redact_stream(&input));
