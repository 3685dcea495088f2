#![no_main]
//! Fuzzes `fuzzing::contract`; see that function for what it feeds and asserts.

libfuzzer_sys::fuzz_target!(|data: &[u8]| fuzzing::contract(data));
