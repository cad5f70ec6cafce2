//! The agent's line decoder under every read pattern: frames rebuild the input
//! and respect the line limit. See `hodei_fuzz::line_decoder`.
#![no_main]

libfuzzer_sys::fuzz_target!(|input: hodei_fuzz::LinesInput| hodei_fuzz::line_decoder(&input));
