//! The RTMP chunk stream: messages cut into chunks and interleaved.
//!
//! Flow: after the handshake every byte the peer sends goes through
//! [`ChunkDecoder::decode`], which parses chunk headers (four formats that
//! compress against the previous header of the same chunk stream), strips
//! extended timestamps, and reassembles [`RawMessage`]s. Our answers go out
//! through [`ChunkEncoder::encode`], which picks the smallest header that
//! the decoder on the other side can expand.
//!
//! Two protocol control messages change how chunks are read and are applied
//! by the decoder itself, the moment they complete: Set Chunk Size (type 1)
//! and Abort (type 2). They are still returned so the caller can log them.
//!
//! Extended timestamps: when a header's timestamp field reads `0xFFFFFF`, a
//! 4-byte timestamp follows it, and librtmp (OBS) and ffmpeg also repeat it
//! after every type-3 header of that chunk stream. Some encoders do not
//! repeat it on continuation chunks, so there we take the four bytes only if
//! they equal the value we expect, as SRS does.
//!
//! Everything a peer can grow is bounded by [`ChunkLimits`]: chunk size,
//! message size, number of chunk streams, and bytes held in partial messages.

use std::collections::HashMap;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use thiserror::Error;

/// Chunk size every connection starts with.
pub const DEFAULT_CHUNK_SIZE: u32 = 128;
/// The largest chunk stream id a 3-byte basic header can carry.
pub const MAX_CSID: u32 = 65599;
/// The smallest chunk stream id (0 and 1 select the longer basic headers).
pub const MIN_CSID: u32 = 2;
/// Message type of Set Chunk Size.
pub const TYPE_SET_CHUNK_SIZE: u8 = 1;
/// Message type of Abort.
pub const TYPE_ABORT: u8 = 2;

const EXTENDED: u32 = 0x00FF_FFFF;
const MAX_LENGTH_FIELD: u32 = 0x00FF_FFFF;

/// Why the chunk stream could not be decoded or encoded.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum ChunkError {
    /// A type 1-3 header on a chunk stream that has not had a type 0 header.
    #[error("chunk stream {csid}: header type {fmt} before any type 0 header")]
    NoPreviousHeader {
        /// Chunk stream id.
        csid: u32,
        /// Header format (1-3).
        fmt: u8,
    },
    /// A header that starts a new message arrived while a message on the
    /// same chunk stream was incomplete.
    #[error("chunk stream {csid}: header type {fmt} in the middle of a message ({have} of {length} bytes)")]
    HeaderInsideMessage {
        /// Chunk stream id.
        csid: u32,
        /// Header format (0-2).
        fmt: u8,
        /// Bytes of the message received.
        have: usize,
        /// Declared message length.
        length: u32,
    },
    /// A message longer than [`ChunkLimits::max_message_size`].
    #[error("chunk stream {csid}: message of {length} bytes exceeds the limit of {limit}")]
    MessageTooLarge {
        /// Chunk stream id.
        csid: u32,
        /// Declared length.
        length: u32,
        /// The configured limit.
        limit: u32,
    },
    /// More concurrent chunk streams than [`ChunkLimits::max_chunk_streams`].
    #[error("more than {limit} chunk streams in use; refusing chunk stream {csid}")]
    TooManyChunkStreams {
        /// The new chunk stream id.
        csid: u32,
        /// The configured limit.
        limit: usize,
    },
    /// Partial messages across chunk streams hold more bytes than allowed.
    #[error("partial messages hold more than {limit} bytes")]
    TooMuchPending {
        /// The configured limit.
        limit: usize,
    },
    /// Set Chunk Size with its reserved top bit set, which the spec says
    /// must be zero.
    #[error("Set Chunk Size 0x{0:08X} has the reserved top bit set")]
    ChunkSizeTopBit(u32),
    /// Set Chunk Size with a value of 0 or above the limit.
    #[error("chunk size {size} outside 1..={max}")]
    BadChunkSize {
        /// The requested size.
        size: u32,
        /// The configured maximum.
        max: u32,
    },
    /// A protocol control message with a payload of the wrong length.
    #[error("message type {type_id} needs a {expected}-byte payload, got {got}")]
    BadControlLength {
        /// Message type.
        type_id: u8,
        /// Bytes expected.
        expected: usize,
        /// Bytes received.
        got: usize,
    },
    /// An outgoing chunk stream id outside 2..=65599.
    #[error("chunk stream id {0} outside 2..=65599")]
    BadCsid(u32),
    /// An outgoing message longer than the 24-bit length field.
    #[error("message of {0} bytes does not fit a chunk header")]
    OutgoingTooLarge(usize),
}

/// Limits on what a peer can make the decoder hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkLimits {
    /// Largest chunk size a peer may set.
    pub max_chunk_size: u32,
    /// Largest message, in bytes.
    pub max_message_size: u32,
    /// Most chunk stream ids a peer may use over a connection.
    pub max_chunk_streams: usize,
    /// Most bytes held across all incomplete messages.
    pub max_pending_bytes: usize,
}

impl ChunkLimits {
    /// What a connection may make the decoder hold before it publishes:
    /// commands and metadata are a few hundred bytes, so messages (and all
    /// partial ones together) of at most `max_message_size`, which bounds
    /// what a client without a stream key costs.
    pub fn before_publish(self, max_message_size: u32) -> Self {
        Self {
            max_message_size: max_message_size.min(self.max_message_size),
            max_chunk_streams: self.max_chunk_streams.min(8),
            max_pending_bytes: (max_message_size as usize).min(self.max_pending_bytes),
            ..self
        }
    }
}

impl Default for ChunkLimits {
    fn default() -> Self {
        Self {
            max_chunk_size: 16 * 1024 * 1024,
            // A 4K keyframe at a high bitrate is a few MiB.
            max_message_size: 8 * 1024 * 1024,
            // OBS and ffmpeg use fewer than ten.
            max_chunk_streams: 64,
            max_pending_bytes: 16 * 1024 * 1024,
        }
    }
}

/// A reassembled message as the chunk stream carries it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawMessage {
    /// The chunk stream it arrived on (or is to be sent on).
    pub csid: u32,
    /// Timestamp in milliseconds, wrapping at 2^32.
    pub timestamp: u32,
    /// Message type id.
    pub type_id: u8,
    /// Message stream id (0 for the connection, otherwise a created stream).
    pub stream_id: u32,
    /// The message body.
    pub payload: Bytes,
}

/// Per chunk stream state of the decoder.
#[derive(Debug)]
struct InStream {
    /// Timestamp of the current (or last) message.
    timestamp: u32,
    /// The last timestamp field with any extension applied: absolute after
    /// a type 0 header, a delta otherwise. A type 3 header that starts a new
    /// message adds it again.
    field: u32,
    /// Whether the last type 0-2 header used an extended timestamp.
    extended: bool,
    length: u32,
    type_id: u8,
    stream_id: u32,
    /// The incomplete message, if one is in progress.
    partial: Option<BytesMut>,
}

/// A parsed chunk header, not yet applied.
struct Header {
    fmt: u8,
    csid: u32,
    /// Bytes taken by the header, including any extended timestamp.
    len: usize,
    /// Timestamp field (extended value if present); None for type 3.
    field: Option<u32>,
    extended: bool,
    length: Option<u32>,
    type_id: Option<u8>,
    stream_id: Option<u32>,
}

/// Reads chunks and reassembles messages.
#[derive(Debug)]
pub struct ChunkDecoder {
    chunk_size: u32,
    limits: ChunkLimits,
    streams: HashMap<u32, InStream>,
    pending_bytes: usize,
}

impl ChunkDecoder {
    /// A decoder at the default chunk size of 128.
    pub fn new(limits: ChunkLimits) -> Self {
        Self {
            chunk_size: DEFAULT_CHUNK_SIZE,
            limits,
            streams: HashMap::new(),
            pending_bytes: 0,
        }
    }

    /// Changes the limits from the next chunk on; a connection gets larger
    /// ones once it has proven itself (published with a valid key). Data
    /// already held is not cut to smaller ones, but no more is added.
    pub fn set_limits(&mut self, limits: ChunkLimits) {
        self.limits = limits;
    }

    /// The chunk size the peer currently sends with.
    pub fn chunk_size(&self) -> u32 {
        self.chunk_size
    }

    /// Decodes chunks from the front of `input` until one message is
    /// complete, and returns it. Returns `None` when `input` holds no
    /// complete chunk; the incomplete chunk is left in `input`, so the
    /// caller's buffer never holds more than one chunk plus what it fed.
    pub fn decode(&mut self, input: &mut BytesMut) -> Result<Option<RawMessage>, ChunkError> {
        loop {
            let Some(header) = self.parse_header(input)? else {
                return Ok(None);
            };
            if let Some(msg) = self.apply_chunk(header, input)? {
                if msg.stream_id == 0 {
                    self.apply_control(&msg)?;
                }
                return Ok(Some(msg));
            }
            if input.is_empty() {
                return Ok(None);
            }
        }
    }

    /// Applies Set Chunk Size and Abort, which change how the next chunk is
    /// read and so cannot wait for the caller.
    fn apply_control(&mut self, msg: &RawMessage) -> Result<(), ChunkError> {
        match msg.type_id {
            TYPE_SET_CHUNK_SIZE => {
                let size = control_u32(msg)?;
                // Masking the bit off would read 0x8000_0080 as 128, which
                // is not what the peer will send with.
                if size & 0x8000_0000 != 0 {
                    return Err(ChunkError::ChunkSizeTopBit(size));
                }
                if size == 0 || size > self.limits.max_chunk_size {
                    return Err(ChunkError::BadChunkSize {
                        size,
                        max: self.limits.max_chunk_size,
                    });
                }
                self.chunk_size = size;
            }
            TYPE_ABORT => {
                let csid = control_u32(msg)?;
                if let Some(partial) = self.streams.get_mut(&csid).and_then(|s| s.partial.take()) {
                    self.pending_bytes -= partial.len();
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// Parses the header at the front of `input` without consuming it, and
    /// checks that the whole chunk (header and payload) is there.
    fn parse_header(&self, input: &[u8]) -> Result<Option<Header>, ChunkError> {
        let Some(&b0) = input.first() else {
            return Ok(None);
        };
        let fmt = b0 >> 6;
        let (csid, mut pos) = match b0 & 0x3F {
            0 => match input.get(1) {
                Some(&b1) => (64 + u32::from(b1), 2),
                None => return Ok(None),
            },
            1 => match (input.get(1), input.get(2)) {
                (Some(&b1), Some(&b2)) => (64 + u32::from(b1) + 256 * u32::from(b2), 3),
                _ => return Ok(None),
            },
            id => (u32::from(id), 1),
        };
        let prev = self.streams.get(&csid);
        if fmt != 0 && prev.is_none() {
            return Err(ChunkError::NoPreviousHeader { csid, fmt });
        }
        if fmt != 3 {
            if let Some(partial) = prev.and_then(|s| s.partial.as_ref()) {
                return Err(ChunkError::HeaderInsideMessage {
                    csid,
                    fmt,
                    have: partial.len(),
                    length: prev.map_or(0, |s| s.length),
                });
            }
        }
        let header_len = [11, 7, 3, 0][usize::from(fmt)];
        let Some(h) = input.get(pos..pos + header_len) else {
            return Ok(None);
        };
        pos += header_len;
        let u24 = |b: &[u8]| u32::from_be_bytes([0, b[0], b[1], b[2]]);
        let mut header = Header {
            fmt,
            csid,
            len: 0,
            field: None,
            extended: false,
            length: None,
            type_id: None,
            stream_id: None,
        };
        if fmt <= 2 {
            header.field = Some(u24(&h[0..3]));
        }
        if fmt <= 1 {
            header.length = Some(u24(&h[3..6]));
            header.type_id = Some(h[6]);
        }
        if fmt == 0 {
            header.stream_id = Some(u32::from_le_bytes([h[7], h[8], h[9], h[10]]));
        }
        let read_ext = |pos: usize| -> Option<u32> {
            input
                .get(pos..pos + 4)
                .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
        };
        match (header.field, prev) {
            (Some(EXTENDED), _) => {
                let Some(ext) = read_ext(pos) else {
                    return Ok(None);
                };
                header.field = Some(ext);
                header.extended = true;
                pos += 4;
            }
            (None, Some(prev)) if prev.extended => {
                let continuation = prev.partial.is_some();
                match read_ext(pos) {
                    // A new message needs the value; a continuation repeats
                    // it, unless the encoder is one that leaves it out.
                    Some(ext) if !continuation || ext == prev.field => {
                        header.field = (!continuation).then_some(ext);
                        pos += 4;
                    }
                    Some(_) => {}
                    // Too few bytes to tell the two readings apart: wait.
                    None => return Ok(None),
                }
                header.extended = true;
            }
            _ => {}
        }
        header.len = pos;

        let length = match (header.length, prev) {
            (Some(l), _) => l,
            (None, Some(p)) => p.length,
            (None, None) => 0,
        };
        if length > self.limits.max_message_size {
            return Err(ChunkError::MessageTooLarge {
                csid,
                length,
                limit: self.limits.max_message_size,
            });
        }
        let have = prev
            .and_then(|p| p.partial.as_ref())
            .map_or(0, BytesMut::len);
        let need = (length as usize - have).min(self.chunk_size as usize);
        if input.len() < pos + need {
            return Ok(None);
        }
        Ok(Some(header))
    }

    /// Consumes a complete chunk whose header was parsed, updating state.
    fn apply_chunk(
        &mut self,
        header: Header,
        input: &mut BytesMut,
    ) -> Result<Option<RawMessage>, ChunkError> {
        let csid = header.csid;
        if !self.streams.contains_key(&csid) {
            if self.streams.len() >= self.limits.max_chunk_streams {
                return Err(ChunkError::TooManyChunkStreams {
                    csid,
                    limit: self.limits.max_chunk_streams,
                });
            }
            // A type 0 header is guaranteed here by parse_header.
            self.streams.insert(
                csid,
                InStream {
                    timestamp: 0,
                    field: 0,
                    extended: false,
                    length: 0,
                    type_id: 0,
                    stream_id: 0,
                    partial: None,
                },
            );
        }
        let chunk_size = self.chunk_size as usize;
        let stream = self.streams.get_mut(&csid).expect("inserted above");
        input.advance(header.len);

        if stream.partial.is_none() {
            // This chunk starts a message: expand the header.
            match header.fmt {
                0 => {
                    stream.timestamp = header.field.unwrap_or(0);
                    stream.field = stream.timestamp;
                }
                1 | 2 => {
                    stream.field = header.field.unwrap_or(0);
                    stream.timestamp = stream.timestamp.wrapping_add(stream.field);
                }
                _ => {
                    if let Some(field) = header.field {
                        stream.field = field;
                    }
                    stream.timestamp = stream.timestamp.wrapping_add(stream.field);
                }
            }
            if header.fmt != 3 {
                stream.extended = header.extended;
            }
            if let Some(length) = header.length {
                stream.length = length;
            }
            if let Some(type_id) = header.type_id {
                stream.type_id = type_id;
            }
            if let Some(stream_id) = header.stream_id {
                stream.stream_id = stream_id;
            }
            let length = stream.length as usize;
            if length <= chunk_size {
                // Whole message in one chunk: hand out the input's bytes
                // without copying.
                let payload = input.split_to(length).freeze();
                return Ok(Some(message(csid, stream, payload)));
            }
            if self.pending_bytes + chunk_size > self.limits.max_pending_bytes {
                return Err(ChunkError::TooMuchPending {
                    limit: self.limits.max_pending_bytes,
                });
            }
            // Grow with the data rather than trusting the declared length.
            let mut partial = BytesMut::with_capacity(chunk_size);
            partial.extend_from_slice(&input.split_to(chunk_size));
            self.pending_bytes += chunk_size;
            stream.partial = Some(partial);
            return Ok(None);
        }

        let partial = stream.partial.as_mut().expect("checked above");
        let take = (stream.length as usize - partial.len()).min(chunk_size);
        if self.pending_bytes + take > self.limits.max_pending_bytes {
            return Err(ChunkError::TooMuchPending {
                limit: self.limits.max_pending_bytes,
            });
        }
        partial.extend_from_slice(&input.split_to(take));
        self.pending_bytes += take;
        if partial.len() < stream.length as usize {
            return Ok(None);
        }
        let payload = stream.partial.take().expect("checked above").freeze();
        self.pending_bytes -= payload.len();
        Ok(Some(message(csid, stream, payload)))
    }
}

fn message(csid: u32, stream: &InStream, payload: Bytes) -> RawMessage {
    RawMessage {
        csid,
        timestamp: stream.timestamp,
        type_id: stream.type_id,
        stream_id: stream.stream_id,
        payload,
    }
}

fn control_u32(msg: &RawMessage) -> Result<u32, ChunkError> {
    let b: [u8; 4] = msg.payload[..]
        .try_into()
        .map_err(|_| ChunkError::BadControlLength {
            type_id: msg.type_id,
            expected: 4,
            got: msg.payload.len(),
        })?;
    Ok(u32::from_be_bytes(b))
}

/// Per chunk stream state of the encoder: the last header written.
#[derive(Debug, Clone, Copy)]
struct OutStream {
    timestamp: u32,
    field: u32,
    length: u32,
    type_id: u8,
    stream_id: u32,
}

/// Cuts messages into chunks with the smallest headers the peer can expand.
#[derive(Debug)]
pub struct ChunkEncoder {
    chunk_size: u32,
    streams: HashMap<u32, OutStream>,
}

impl Default for ChunkEncoder {
    fn default() -> Self {
        Self::new()
    }
}

impl ChunkEncoder {
    /// An encoder at the default chunk size of 128.
    pub fn new() -> Self {
        Self {
            chunk_size: DEFAULT_CHUNK_SIZE,
            streams: HashMap::new(),
        }
    }

    /// The chunk size we currently send with.
    pub fn chunk_size(&self) -> u32 {
        self.chunk_size
    }

    /// Writes a Set Chunk Size message (on chunk stream 2) and switches to
    /// `size` for everything after it. `size` must be in 1..=`max`.
    pub fn set_chunk_size(
        &mut self,
        size: u32,
        max: u32,
        out: &mut BytesMut,
    ) -> Result<(), ChunkError> {
        if size == 0 || size > max || size > 0x7FFF_FFFF {
            return Err(ChunkError::BadChunkSize { size, max });
        }
        self.encode(
            &RawMessage {
                csid: 2,
                timestamp: 0,
                type_id: TYPE_SET_CHUNK_SIZE,
                stream_id: 0,
                payload: Bytes::copy_from_slice(&size.to_be_bytes()),
            },
            out,
        )?;
        self.chunk_size = size;
        Ok(())
    }

    /// Appends `msg`, cut into chunks, to `out`. Timestamps must not go
    /// backwards on a chunk stream except across a type 0 header, which the
    /// encoder then writes.
    pub fn encode(&mut self, msg: &RawMessage, out: &mut BytesMut) -> Result<(), ChunkError> {
        if !(MIN_CSID..=MAX_CSID).contains(&msg.csid) {
            return Err(ChunkError::BadCsid(msg.csid));
        }
        let length = u32::try_from(msg.payload.len())
            .ok()
            .filter(|&l| l <= MAX_LENGTH_FIELD)
            .ok_or(ChunkError::OutgoingTooLarge(msg.payload.len()))?;
        let prev = self.streams.get(&msg.csid).copied();
        let (fmt, field) = match prev {
            Some(p) if p.stream_id == msg.stream_id && msg.timestamp >= p.timestamp => {
                let delta = msg.timestamp - p.timestamp;
                if p.length != length || p.type_id != msg.type_id {
                    (1, delta)
                } else if p.field != delta {
                    (2, delta)
                } else {
                    (3, delta)
                }
            }
            _ => (0, msg.timestamp),
        };
        let extended = field >= EXTENDED;
        out.reserve(msg.payload.len() + 18);
        put_basic_header(out, fmt, msg.csid);
        let field24 = field.min(EXTENDED);
        if fmt <= 2 {
            out.put_uint(u64::from(field24), 3);
        }
        if fmt <= 1 {
            out.put_uint(u64::from(length), 3);
            out.put_u8(msg.type_id);
        }
        if fmt == 0 {
            out.put_u32_le(msg.stream_id);
        }
        if extended {
            out.put_u32(field);
        }
        let mut rest = &msg.payload[..];
        let size = self.chunk_size as usize;
        loop {
            let n = rest.len().min(size);
            out.put_slice(&rest[..n]);
            rest = &rest[n..];
            if rest.is_empty() {
                break;
            }
            put_basic_header(out, 3, msg.csid);
            if extended {
                out.put_u32(field);
            }
        }
        self.streams.insert(
            msg.csid,
            OutStream {
                timestamp: msg.timestamp,
                field,
                length,
                type_id: msg.type_id,
                stream_id: msg.stream_id,
            },
        );
        Ok(())
    }
}

fn put_basic_header(out: &mut BytesMut, fmt: u8, csid: u32) {
    let fmt = fmt << 6;
    match csid {
        2..=63 => out.put_u8(fmt | csid as u8),
        64..=319 => {
            out.put_u8(fmt);
            out.put_u8((csid - 64) as u8);
        }
        _ => {
            out.put_u8(fmt | 1);
            out.put_u16_le((csid - 64) as u16);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn decode_all(dec: &mut ChunkDecoder, bytes: &[u8]) -> Result<Vec<RawMessage>, ChunkError> {
        let mut input = BytesMut::from(bytes);
        let mut out = Vec::new();
        while let Some(m) = dec.decode(&mut input)? {
            out.push(m);
        }
        Ok(out)
    }

    #[test]
    fn type0_literal() {
        // csid 3, ts 1000, length 4, type 20, stream 1 (little endian).
        let bytes = [
            0x03, 0x00, 0x03, 0xE8, 0x00, 0x00, 0x04, 0x14, 0x01, 0x00, 0x00, 0x00, 1, 2, 3, 4,
        ];
        let msgs = decode_all(&mut ChunkDecoder::new(ChunkLimits::default()), &bytes).unwrap();
        assert_eq!(
            msgs,
            vec![RawMessage {
                csid: 3,
                timestamp: 1000,
                type_id: 20,
                stream_id: 1,
                payload: Bytes::from_static(&[1, 2, 3, 4]),
            }]
        );
    }

    #[test]
    fn header_types_and_deltas() {
        let mut bytes = vec![
            // fmt 0, csid 4: ts 100, len 2, type 9, stream 1
            0x04, 0, 0, 100, 0, 0, 2, 9, 1, 0, 0, 0, 0xAA, 0xBB,
            // fmt 1: delta 40, len 1, type 8
            0x44, 0, 0, 40, 0, 0, 1, 8, 0xCC, // fmt 2: delta 33
            0x84, 0, 0, 33, 0xDD, // fmt 3: new message, delta 33 again
            0xC4, 0xEE,
        ];
        // A two-byte basic header (csid 64 + 6 = 70) and a three-byte one
        // (csid 64 + 0x0102 = 322).
        bytes.extend_from_slice(&[0x00, 6, 0, 0, 1, 0, 0, 0, 18, 0, 0, 0, 0]);
        bytes.extend_from_slice(&[0x01, 0x02, 0x01, 0, 0, 2, 0, 0, 0, 18, 0, 0, 0, 0]);
        let msgs = decode_all(&mut ChunkDecoder::new(ChunkLimits::default()), &bytes).unwrap();
        let ts: Vec<_> = msgs
            .iter()
            .map(|m| (m.csid, m.timestamp, m.type_id))
            .collect();
        assert_eq!(
            ts,
            vec![
                (4, 100, 9),
                (4, 140, 8),
                (4, 173, 8),
                (4, 206, 8),
                (70, 1, 18),
                (322, 2, 18),
            ]
        );
    }

    #[test]
    fn extended_timestamp_on_continuations() {
        // 200 bytes at chunk size 128, timestamp 0x01000000: librtmp style
        // repeats the extended timestamp after the type 3 header.
        let ts = 0x0100_0000u32;
        let mut with = vec![0x06, 0xFF, 0xFF, 0xFF, 0, 0, 200, 9, 1, 0, 0, 0];
        with.extend_from_slice(&ts.to_be_bytes());
        with.extend_from_slice(&[7; 128]);
        with.push(0xC6);
        let mut without = with.clone();
        with.extend_from_slice(&ts.to_be_bytes());
        with.extend_from_slice(&[7; 72]);
        without.extend_from_slice(&[7; 72]);
        for bytes in [with, without] {
            let msgs = decode_all(&mut ChunkDecoder::new(ChunkLimits::default()), &bytes).unwrap();
            assert_eq!(msgs.len(), 1);
            assert_eq!(msgs[0].timestamp, ts);
            assert_eq!(msgs[0].payload.len(), 200);
            assert!(msgs[0].payload.iter().all(|&b| b == 7));
        }
    }

    #[test]
    fn timestamp_wraps() {
        let mut enc = ChunkEncoder::new();
        let mut out = BytesMut::new();
        for ts in [u32::MAX - 10, u32::MAX] {
            enc.encode(&msg(5, ts, 9, vec![1]), &mut out).unwrap();
        }
        // Delta of 20 across the wrap, written by hand as a type 2 header.
        out.extend_from_slice(&[0x85, 0, 0, 20, 2]);
        let msgs = decode_all(&mut ChunkDecoder::new(ChunkLimits::default()), &out).unwrap();
        assert_eq!(msgs[2].timestamp, 19);
    }

    #[test]
    fn set_chunk_size_and_abort() {
        let mut bytes = vec![0x02, 0, 0, 0, 0, 0, 4, 1, 0, 0, 0, 0, 0, 0, 0x10, 0x00];
        // A 300-byte message at chunk size 4096 arrives in one chunk.
        bytes.extend_from_slice(&[0x05, 0, 0, 0, 0, 1, 44, 9, 1, 0, 0, 0]);
        bytes.extend_from_slice(&[1; 300]);
        let mut dec = ChunkDecoder::new(ChunkLimits::default());
        let msgs = decode_all(&mut dec, &bytes).unwrap();
        assert_eq!(dec.chunk_size(), 4096);
        assert_eq!(msgs[1].payload.len(), 300);

        // Start a 5000-byte message, abort it, then reuse the chunk stream.
        let mut bytes = vec![0x05, 0, 0, 0, 0, 0x13, 0x88, 9, 1, 0, 0, 0];
        bytes.extend_from_slice(&[0; 4096]);
        bytes.extend_from_slice(&[0x02, 0, 0, 0, 0, 0, 4, 2, 0, 0, 0, 0, 0, 0, 0, 5]);
        bytes.extend_from_slice(&[0x05, 0, 0, 1, 0, 0, 1, 8, 1, 0, 0, 0, 9]);
        let msgs = decode_all(&mut dec, &bytes).unwrap();
        assert_eq!(msgs.len(), 2);
        assert_eq!(msgs[1].payload, Bytes::from_static(&[9]));
        assert_eq!(dec.pending_bytes, 0);
    }

    #[test]
    fn limits() {
        let limits = ChunkLimits {
            max_chunk_streams: 2,
            max_message_size: 1000,
            ..ChunkLimits::default()
        };
        for size in [0u32, 16 * 1024 * 1024 + 1] {
            let mut bytes = vec![0x02, 0, 0, 0, 0, 0, 4, 1, 0, 0, 0, 0];
            bytes.extend_from_slice(&size.to_be_bytes());
            assert!(matches!(
                decode_all(&mut ChunkDecoder::new(limits), &bytes),
                Err(ChunkError::BadChunkSize { .. })
            ));
        }
        let mut top_bit = vec![0x02, 0, 0, 0, 0, 0, 4, 1, 0, 0, 0, 0];
        top_bit.extend_from_slice(&0x8000_0080u32.to_be_bytes());
        assert_eq!(
            decode_all(&mut ChunkDecoder::new(limits), &top_bit),
            Err(ChunkError::ChunkSizeTopBit(0x8000_0080))
        );
        let big = [0x03, 0, 0, 0, 0, 0x03, 0xE9, 9, 0, 0, 0, 0];
        assert!(matches!(
            decode_all(&mut ChunkDecoder::new(limits), &big),
            Err(ChunkError::MessageTooLarge { length: 1001, .. })
        ));
        let mut many = Vec::new();
        for csid in 3..6 {
            many.extend_from_slice(&[csid, 0, 0, 0, 0, 0, 0, 9, 0, 0, 0, 0]);
        }
        assert!(matches!(
            decode_all(&mut ChunkDecoder::new(limits), &many),
            Err(ChunkError::TooManyChunkStreams { csid: 5, limit: 2 })
        ));
        assert!(matches!(
            decode_all(&mut ChunkDecoder::new(limits), &[0x43, 0, 0, 0, 0, 0, 0, 9]),
            Err(ChunkError::NoPreviousHeader { csid: 3, fmt: 1 })
        ));
    }

    #[test]
    fn byte_at_a_time() {
        let mut enc = ChunkEncoder::new();
        let mut out = BytesMut::new();
        let msgs = [
            msg(4, 0x0100_0000, 9, vec![3; 500]),
            msg(4, 0x0100_0021, 9, vec![4; 500]),
        ];
        for m in &msgs {
            enc.encode(m, &mut out).unwrap();
        }
        let mut dec = ChunkDecoder::new(ChunkLimits::default());
        let mut input = BytesMut::new();
        let mut got = Vec::new();
        for &b in &out[..] {
            input.put_u8(b);
            while let Some(m) = dec.decode(&mut input).unwrap() {
                got.push(m);
            }
        }
        assert_eq!(got, msgs);
    }

    fn msg(csid: u32, timestamp: u32, type_id: u8, payload: Vec<u8>) -> RawMessage {
        RawMessage {
            csid,
            timestamp,
            type_id,
            stream_id: 1,
            payload: payload.into(),
        }
    }

    fn arb_messages() -> impl Strategy<Value = Vec<RawMessage>> {
        let csid = prop_oneof![3u32..=10, 60u32..=70, 318u32..=322, Just(MAX_CSID)];
        let ts_step = prop_oneof![
            0u32..100,
            Just(0u32),
            Just(33u32),
            0x00FF_FFF0u32..0x0100_0010,
        ];
        prop::collection::vec(
            (
                csid,
                ts_step,
                prop::sample::select(vec![8u8, 9, 18, 20]),
                0u32..3,
                prop::collection::vec(any::<u8>(), 0..700),
            ),
            1..20,
        )
        .prop_map(|items| {
            let mut clock: HashMap<u32, u32> = HashMap::new();
            items
                .into_iter()
                .map(|(csid, step, type_id, stream_id, payload)| {
                    let ts = clock.entry(csid).or_insert(0);
                    *ts = ts.wrapping_add(step);
                    RawMessage {
                        csid,
                        timestamp: *ts,
                        type_id,
                        stream_id,
                        payload: payload.into(),
                    }
                })
                .collect()
        })
    }

    proptest! {
        #[test]
        fn round_trip(msgs in arb_messages(), sizes in prop::collection::vec(1u32..600, 1..4), split in 1usize..300) {
            let mut enc = ChunkEncoder::new();
            let mut out = BytesMut::new();
            let mut expected = Vec::new();
            for (i, m) in msgs.iter().enumerate() {
                if i % 5 == 0 {
                    let size = sizes[i / 5 % sizes.len()];
                    enc.set_chunk_size(size, 1 << 24, &mut out).unwrap();
                    expected.push(None);
                }
                enc.encode(m, &mut out).unwrap();
                expected.push(Some(m.clone()));
            }
            // Feed in pieces of `split` bytes.
            let mut dec = ChunkDecoder::new(ChunkLimits::default());
            let mut input = BytesMut::new();
            let mut got = Vec::new();
            for piece in out.chunks(split) {
                input.extend_from_slice(piece);
                while let Some(m) = dec.decode(&mut input).unwrap() {
                    got.push(m);
                }
            }
            prop_assert!(input.is_empty());
            let got: Vec<_> = got.into_iter().filter(|m| m.type_id != TYPE_SET_CHUNK_SIZE).collect();
            let expected: Vec<_> = expected.into_iter().flatten().collect();
            prop_assert_eq!(got, expected);
        }

        #[test]
        fn decode_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..2048)) {
            let mut dec = ChunkDecoder::new(ChunkLimits {
                max_message_size: 4096,
                max_chunk_streams: 4,
                max_pending_bytes: 8192,
                ..ChunkLimits::default()
            });
            let mut input = BytesMut::from(&bytes[..]);
            while let Ok(Some(_)) = dec.decode(&mut input) {}
        }
    }
}
