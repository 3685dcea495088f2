#![no_main]
//! Fuzzes `fuzzing::snapshot`; see that function for what it feeds and asserts.

libfuzzer_sys::fuzz_target!(|data: &[u8]| fuzzing::snapshot(data));
