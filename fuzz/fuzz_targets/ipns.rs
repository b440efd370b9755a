//! An IPNS record from a peer (see `meshcast::fuzzing::ipns`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| meshcast::fuzzing::ipns(data));
