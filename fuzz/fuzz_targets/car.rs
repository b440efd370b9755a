//! The CARv1 reader of `dag import` (see `meshcast::fuzzing::car`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| meshcast::fuzzing::car(data));
