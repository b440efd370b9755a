//! AMF0 decoding on arbitrary bytes; whatever decodes must re-encode to
//! bytes that decode and re-encode identically (compared as bytes, since
//! NaN numbers never compare equal as values).
#![no_main]

use libfuzzer_sys::fuzz_target;
use meshcast::rtmp::amf;

fuzz_target!(|data: &[u8]| {
    let Ok(values) = amf::decode_all(data) else {
        return;
    };
    let mut first = Vec::new();
    amf::encode_all(&values, &mut first);
    let again = amf::decode_all(&first).expect("our own encoding decodes");
    let mut second = Vec::new();
    amf::encode_all(&again, &mut second);
    assert_eq!(first, second);
});
