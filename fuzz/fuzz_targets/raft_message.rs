#![no_main]
//! Fuzzes `fuzzing::raft_message`; see that function for what it feeds and asserts.

libfuzzer_sys::fuzz_target!(|data: &[u8]| fuzzing::raft_message(data));
