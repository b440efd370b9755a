//! The gateway's `Range` header parser (see `meshcast::fuzzing::range`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| meshcast::fuzzing::range(data));
