//! A Bitswap message from a peer (see `meshcast::fuzzing::bitswap`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| meshcast::fuzzing::bitswap(data));
