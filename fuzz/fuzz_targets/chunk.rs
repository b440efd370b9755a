//! The chunk decoder on arbitrary bytes, fed in two reads split where the
//! first byte says, with small limits so the bounds are exercised too.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use meshcast::rtmp::chunk::{ChunkDecoder, ChunkLimits};

fuzz_target!(|data: &[u8]| {
    let Some((&split, data)) = data.split_first() else {
        return;
    };
    let split = usize::from(split).min(data.len());
    let mut decoder = ChunkDecoder::new(ChunkLimits {
        max_chunk_size: 1 << 16,
        max_message_size: 1 << 16,
        max_chunk_streams: 8,
        max_pending_bytes: 1 << 17,
    });
    let mut input = BytesMut::new();
    for piece in [&data[..split], &data[split..]] {
        input.extend_from_slice(piece);
        loop {
            match decoder.decode(&mut input) {
                Ok(Some(msg)) => assert!(msg.payload.len() <= 1 << 16),
                Ok(None) => break,
                Err(_) => return,
            }
        }
    }
});
