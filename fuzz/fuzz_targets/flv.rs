//! The FLV audio and video tag parsers (see `meshcast::fuzzing::flv`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| meshcast::fuzzing::flv(data));
