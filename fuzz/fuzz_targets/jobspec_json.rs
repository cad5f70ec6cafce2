//! `JobSpec` JSON (the REST body) deserialized and validated: never panics; a
//! valid spec round-trips. See `hodei_fuzz::jobspec_json`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| hodei_fuzz::jobspec_json(data));
