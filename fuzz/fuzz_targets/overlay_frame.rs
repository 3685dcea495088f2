#![no_main]
//! Fuzzes `fuzzing::overlay_frame`; see that function for what it feeds and asserts.

libfuzzer_sys::fuzz_target!(|data: &[u8]| fuzzing::overlay_frame(data));
