//! The FLV audio and video tag parsers on arbitrary bytes.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use meshcast::media::flv;

fuzz_target!(|data: &[u8]| {
    let data = Bytes::copy_from_slice(data);
    let _ = flv::parse_video(&data);
    let _ = flv::parse_audio(&data);
    let _ = flv::parse_audio_specific_config(data);
});
