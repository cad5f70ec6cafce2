//! Every wire message an agent or a client sends (and the server's messages an
//! agent decodes), decoded and converted to the domain: never panics; a valid
//! converted `JobSpec` round-trips. See `hodei_fuzz::proto_message`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| hodei_fuzz::proto_message(data));
