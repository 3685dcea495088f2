#![no_main]
//! Fuzzes `fuzzing::sealed_share`; see that function for what it feeds and asserts.

libfuzzer_sys::fuzz_target!(|data: &[u8]| fuzzing::sealed_share(data));
