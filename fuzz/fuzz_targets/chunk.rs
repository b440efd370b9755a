//! The RTMP chunk decoder on arbitrary bytes (see `meshcast::fuzzing::chunk`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| meshcast::fuzzing::chunk(data));
