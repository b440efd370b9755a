//! Segment URIs and their query strings, and a followed stream's playlist (see `meshcast::fuzzing::playlist`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| meshcast::fuzzing::playlist(data));
