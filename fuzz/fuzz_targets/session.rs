//! A whole RTMP server session (see `meshcast::fuzzing::session`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| meshcast::fuzzing::session(data));
