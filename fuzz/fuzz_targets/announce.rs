//! A part announcement from a peer (see `meshcast::fuzzing::announce`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| meshcast::fuzzing::announce(data));
