//! AMF0 decoding and re-encoding (see `meshcast::fuzzing::amf0`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| meshcast::fuzzing::amf0(data));
