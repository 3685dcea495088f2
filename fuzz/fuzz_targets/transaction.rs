#![no_main]
//! Fuzzes `fuzzing::transaction`; see that function for what it feeds and asserts.

libfuzzer_sys::fuzz_target!(|data: &[u8]| fuzzing::transaction(data));
