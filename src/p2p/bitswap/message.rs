//! Bitswap messages on the wire (ipfs/specs `bitswap-protocol.md`).
//!
//! A stream carries a sequence of frames, each an unsigned-varint length and
//! a protobuf `Message` of at most [`MAX_MESSAGE_SIZE`] bytes. One message
//! type serves every version: 1.0.0 sends blocks as bare bytes (field 2,
//! always CIDv0), 1.1.0 as a CID prefix plus bytes (field 3), and 1.2.0 adds
//! want-have, `sendDontHave` and HAVE / DONT_HAVE answers (field 4).
//! [`Message::decode`] reads all of them; [`Message::encode`] writes what the
//! negotiated [`Protocol`] understands, so older peers get want-block
//! instead of want-have and no presences.
//!
//! A received block carries no CID, only a [`Prefix`]: the receiver hashes
//! the bytes to learn which block it got ([`Prefix::cid_of`]), so a block
//! that does not match what was asked for simply names another CID.

use crate::store::{Multihash, DAG_PB, IDENTITY, SHA2_256};
use bytes::Bytes;
use cid::{Cid, Version};
use quick_protobuf::sizeofs::sizeof_varint;
use quick_protobuf::{BytesReader, MessageWrite, Writer, WriterBackend};
use sha2::{Digest, Sha256};
use thiserror::Error;

/// The largest message accepted or sent, length prefix excluded (the
/// spec's limit, which boxo enforces on reading).
pub const MAX_MESSAGE_SIZE: usize = 4 << 20;

/// The largest block sent or accepted: the spec asks every implementation to
/// handle blocks up to 2 MiB and advises against larger ones.
pub const MAX_BLOCK_SIZE: usize = 2 << 20;

/// A Bitswap protocol version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Protocol {
    /// `/ipfs/bitswap/1.0.0` (and the unversioned `/ipfs/bitswap`): CIDv0
    /// blocks only.
    V100,
    /// `/ipfs/bitswap/1.1.0`: blocks of any CID, sent with their prefix.
    V110,
    /// `/ipfs/bitswap/1.2.0`: want-have and HAVE / DONT_HAVE.
    V120,
}

impl Protocol {
    /// Every version, most preferred first (the order offered when opening a
    /// stream).
    pub const ALL: [Self; 3] = [Self::V120, Self::V110, Self::V100];

    /// The unversioned name boxo still accepts, read as 1.0.0.
    pub const UNVERSIONED: &'static str = "/ipfs/bitswap";

    /// The protocol name negotiated on a stream.
    pub const fn name(self) -> &'static str {
        match self {
            Self::V100 => "/ipfs/bitswap/1.0.0",
            Self::V110 => "/ipfs/bitswap/1.1.0",
            Self::V120 => "/ipfs/bitswap/1.2.0",
        }
    }

    /// The version a protocol name stands for.
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "/ipfs/bitswap/1.2.0" => Some(Self::V120),
            "/ipfs/bitswap/1.1.0" => Some(Self::V110),
            "/ipfs/bitswap/1.0.0" | Self::UNVERSIONED => Some(Self::V100),
            _ => None,
        }
    }

    /// Whether the version has want-have and HAVE / DONT_HAVE.
    pub const fn supports_have(self) -> bool {
        matches!(self, Self::V120)
    }
}

/// Why bytes received from a peer are not a valid message.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum MessageError {
    /// A frame announced more than [`MAX_MESSAGE_SIZE`] bytes.
    #[error("message of {len} bytes exceeds the {MAX_MESSAGE_SIZE}-byte limit")]
    TooLarge {
        /// The announced length.
        len: u64,
    },
    /// The length prefix is not a valid varint.
    #[error("malformed length prefix")]
    BadLength,
    /// The protobuf does not decode.
    #[error("malformed protobuf: {0}")]
    Protobuf(String),
    /// A wantlist entry or presence holds bytes that are not a CID.
    #[error("invalid CID in {field}: {reason}")]
    BadCid {
        /// Which field held it.
        field: &'static str,
        /// What the CID parser said.
        reason: String,
    },
    /// A block prefix that does not decode.
    #[error("invalid block prefix: {0}")]
    BadPrefix(String),
    /// A block whose hash function meshcast cannot compute.
    #[error("block prefix uses hash function 0x{code:x}, which meshcast does not support")]
    UnsupportedHash {
        /// The multihash code.
        code: u64,
    },
    /// An enum field with a value the spec does not define.
    #[error("unknown {field} value {value}")]
    UnknownEnum {
        /// The field.
        field: &'static str,
        /// The value found.
        value: i32,
    },
}

impl From<quick_protobuf::Error> for MessageError {
    fn from(e: quick_protobuf::Error) -> Self {
        Self::Protobuf(e.to_string())
    }
}

/// What a wantlist entry asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WantType {
    /// Send the block.
    Block,
    /// Say whether you have it (1.2.0).
    Have,
}

/// One entry of a wantlist: a want, or the cancel of one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The block.
    pub cid: Cid,
    /// Higher is served first.
    pub priority: i32,
    /// Revokes an earlier want of this CID.
    pub cancel: bool,
    /// Block or presence.
    pub want_type: WantType,
    /// Answer DONT_HAVE when the block is missing (1.2.0).
    pub send_dont_have: bool,
}

impl Entry {
    /// A want.
    pub fn want(cid: Cid, priority: i32, want_type: WantType, send_dont_have: bool) -> Self {
        Self {
            cid,
            priority,
            cancel: false,
            want_type,
            send_dont_have,
        }
    }

    /// The cancel of a want.
    pub fn cancel(cid: Cid) -> Self {
        Self {
            cid,
            priority: 0,
            cancel: true,
            want_type: WantType::Block,
            send_dont_have: false,
        }
    }
}

/// An answer to a want-have (1.2.0).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Presence {
    /// The block asked about.
    pub cid: Cid,
    /// HAVE (`true`) or DONT_HAVE.
    pub have: bool,
}

/// A CID without its digest: what a block is sent with, so the receiver can
/// hash the bytes and rebuild the CID.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Prefix {
    /// CID version.
    pub version: Version,
    /// Content codec (dag-pb, raw, ...).
    pub codec: u64,
    /// Multihash function code.
    pub hash: u64,
    /// Digest length in bytes.
    pub hash_len: u64,
}

impl Prefix {
    /// The prefix of a CIDv0 (what a 1.0.0 block always is).
    pub const V0: Self = Self {
        version: Version::V0,
        codec: DAG_PB,
        hash: SHA2_256,
        hash_len: 32,
    };

    /// The prefix of `cid`.
    pub fn of(cid: &Cid) -> Self {
        Self {
            version: cid.version(),
            codec: cid.codec(),
            hash: cid.hash().code(),
            hash_len: u64::from(cid.hash().size()),
        }
    }

    /// Four varints: version, codec, hash code, digest length.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(8);
        let mut buf = unsigned_varint::encode::u64_buffer();
        for v in [
            u64::from(self.version),
            self.codec,
            self.hash,
            self.hash_len,
        ] {
            out.extend_from_slice(unsigned_varint::encode::u64(v, &mut buf));
        }
        out
    }

    /// Parses [`Prefix::to_bytes`] output.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, MessageError> {
        let bad = |e: &dyn std::fmt::Display| MessageError::BadPrefix(e.to_string());
        let mut rest = bytes;
        let mut next = || -> Result<u64, MessageError> {
            let (v, r) = unsigned_varint::decode::u64(rest).map_err(|e| bad(&e))?;
            rest = r;
            Ok(v)
        };
        let version = Version::try_from(next()?).map_err(|e| bad(&e))?;
        let prefix = Self {
            version,
            codec: next()?,
            hash: next()?,
            hash_len: next()?,
        };
        if !rest.is_empty() {
            return Err(bad(&"trailing bytes"));
        }
        if version == Version::V0 && prefix != Self::V0 {
            return Err(bad(&"a CIDv0 must be dag-pb with a 32-byte SHA2-256"));
        }
        Ok(prefix)
    }

    /// Hashes `data` and builds the CID it has under this prefix.
    pub fn cid_of(&self, data: &[u8]) -> Result<Cid, MessageError> {
        let mh = match self.hash {
            SHA2_256 if self.hash_len == 32 => {
                Multihash::wrap(SHA2_256, &Sha256::digest(data)).expect("32 bytes fit")
            }
            SHA2_256 => {
                return Err(MessageError::BadPrefix(format!(
                    "SHA2-256 digests are 32 bytes, not {}",
                    self.hash_len
                )))
            }
            IDENTITY if self.hash_len == data.len() as u64 => Multihash::wrap(IDENTITY, data)
                .map_err(|e| MessageError::BadPrefix(e.to_string()))?,
            IDENTITY => {
                return Err(MessageError::BadPrefix(
                    "identity digest length differs from the data".into(),
                ))
            }
            code => return Err(MessageError::UnsupportedHash { code }),
        };
        Cid::new(self.version, self.codec, mh).map_err(|e| MessageError::BadPrefix(e.to_string()))
    }
}

/// A block as sent: its prefix and bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockData {
    /// How to rebuild the CID from the bytes.
    pub prefix: Prefix,
    /// The block's bytes.
    pub data: Bytes,
}

impl BlockData {
    /// The block with CID `cid`, to send.
    pub fn new(cid: &Cid, data: Bytes) -> Self {
        Self {
            prefix: Prefix::of(cid),
            data,
        }
    }
}

/// One Bitswap message.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Message {
    /// The wantlist entries replace the sender's whole wantlist.
    pub full: bool,
    /// Wants and cancels.
    pub wantlist: Vec<Entry>,
    /// Blocks.
    pub blocks: Vec<BlockData>,
    /// HAVE / DONT_HAVE answers.
    pub presences: Vec<Presence>,
    /// Bytes the sender still has queued for the receiver.
    pub pending_bytes: i32,
}

// Field numbers of `Message` and its nested messages.
const MSG_WANTLIST: u32 = 1;
const MSG_BLOCKS: u32 = 2;
const MSG_PAYLOAD: u32 = 3;
const MSG_PRESENCES: u32 = 4;
const MSG_PENDING: u32 = 5;
const WL_ENTRIES: u32 = 1;
const WL_FULL: u32 = 2;
const ENTRY_BLOCK: u32 = 1;
const ENTRY_PRIORITY: u32 = 2;
const ENTRY_CANCEL: u32 = 3;
const ENTRY_WANT_TYPE: u32 = 4;
const ENTRY_SEND_DONT_HAVE: u32 = 5;
const BLOCK_PREFIX: u32 = 1;
const BLOCK_DATA: u32 = 2;
const PRESENCE_CID: u32 = 1;
const PRESENCE_TYPE: u32 = 2;

const VARINT: u32 = 0;
const LEN: u32 = 2;

const fn tag(field: u32, wire: u32) -> u32 {
    (field << 3) | wire
}

fn sizeof_tag(field: u32) -> usize {
    sizeof_varint(u64::from(tag(field, 0)))
}

/// A length-delimited field's overhead: its tag and length prefix.
fn sizeof_field(field: u32, len: usize) -> usize {
    sizeof_tag(field) + sizeof_varint(len as u64)
}

/// A varint field's size: tag and value (int32 is sign-extended to 64 bits
/// on the wire).
fn sizeof_int_field(field: u32, v: i64) -> usize {
    sizeof_tag(field) + sizeof_varint(v as u64)
}

impl Message {
    /// Whether the message says nothing.
    pub fn is_empty(&self) -> bool {
        !self.full
            && self.wantlist.is_empty()
            && self.blocks.is_empty()
            && self.presences.is_empty()
    }

    /// Parses one message body (without its length prefix). Block bytes
    /// are slices of `buf`, not copies.
    pub fn decode(buf: &Bytes) -> Result<Self, MessageError> {
        let bytes: &[u8] = buf;
        let mut r = BytesReader::from_bytes(bytes);
        let mut msg = Self::default();
        while !r.is_eof() {
            let t = r.next_tag(bytes)?;
            match (t >> 3, t & 7) {
                (MSG_WANTLIST, LEN) => {
                    let wl = r.read_bytes(bytes)?;
                    decode_wantlist(wl, &mut msg)?;
                }
                (MSG_BLOCKS, LEN) => {
                    let data = r.read_bytes(bytes)?;
                    msg.blocks.push(BlockData {
                        prefix: Prefix::V0,
                        data: buf.slice_ref(data),
                    });
                }
                (MSG_PAYLOAD, LEN) => {
                    let b = r.read_bytes(bytes)?;
                    msg.blocks.push(decode_block(buf, b)?);
                }
                (MSG_PRESENCES, LEN) => {
                    let p = r.read_bytes(bytes)?;
                    msg.presences.push(decode_presence(p)?);
                }
                (MSG_PENDING, VARINT) => msg.pending_bytes = r.read_int32(bytes)?,
                _ => r.read_unknown(bytes, t)?,
            }
        }
        Ok(msg)
    }

    /// The message body as `protocol` understands it: for 1.0.0 and 1.1.0,
    /// want-haves become want-blocks and presences are left out; 1.0.0 gets
    /// blocks as bare bytes.
    pub fn encode(&self, protocol: Protocol) -> Vec<u8> {
        let wire = Wire {
            msg: self,
            protocol,
        };
        let mut out = Vec::with_capacity(wire.get_size());
        let mut w = Writer::new(&mut out);
        wire.write_message(&mut w)
            .expect("writing to a Vec cannot fail");
        out
    }

    /// [`Message::encode`] behind its varint length: one frame.
    pub fn to_frame(&self, protocol: Protocol) -> Vec<u8> {
        let body = self.encode(protocol);
        let mut buf = unsigned_varint::encode::usize_buffer();
        let len = unsigned_varint::encode::usize(body.len(), &mut buf);
        let mut out = Vec::with_capacity(len.len() + body.len());
        out.extend_from_slice(len);
        out.extend_from_slice(&body);
        out
    }
}

/// Reads a frame's length prefix from the start of `buf`: `Ok(None)` when
/// more bytes are needed, else the prefix's own length and the body length.
pub fn frame_header(buf: &[u8]) -> Result<Option<(usize, usize)>, MessageError> {
    match unsigned_varint::decode::u64(buf) {
        Ok((len, rest)) => {
            if len > MAX_MESSAGE_SIZE as u64 {
                return Err(MessageError::TooLarge { len });
            }
            Ok(Some((buf.len() - rest.len(), len as usize)))
        }
        Err(unsigned_varint::decode::Error::Insufficient) if buf.len() < 10 => Ok(None),
        Err(_) => Err(MessageError::BadLength),
    }
}

fn decode_cid(bytes: &[u8], field: &'static str) -> Result<Cid, MessageError> {
    Cid::try_from(bytes).map_err(|e| MessageError::BadCid {
        field,
        reason: e.to_string(),
    })
}

fn decode_wantlist(bytes: &[u8], msg: &mut Message) -> Result<(), MessageError> {
    let mut r = BytesReader::from_bytes(bytes);
    while !r.is_eof() {
        let t = r.next_tag(bytes)?;
        match (t >> 3, t & 7) {
            (WL_ENTRIES, LEN) => {
                let e = r.read_bytes(bytes)?;
                msg.wantlist.push(decode_entry(e)?);
            }
            (WL_FULL, VARINT) => msg.full = r.read_bool(bytes)?,
            _ => r.read_unknown(bytes, t)?,
        }
    }
    Ok(())
}

fn decode_entry(bytes: &[u8]) -> Result<Entry, MessageError> {
    let mut r = BytesReader::from_bytes(bytes);
    let mut cid = None;
    let mut entry = Entry::want(Cid::default(), 1, WantType::Block, false);
    while !r.is_eof() {
        let t = r.next_tag(bytes)?;
        match (t >> 3, t & 7) {
            (ENTRY_BLOCK, LEN) => cid = Some(decode_cid(r.read_bytes(bytes)?, "wantlist entry")?),
            (ENTRY_PRIORITY, VARINT) => entry.priority = r.read_int32(bytes)?,
            (ENTRY_CANCEL, VARINT) => entry.cancel = r.read_bool(bytes)?,
            (ENTRY_WANT_TYPE, VARINT) => {
                entry.want_type = match r.read_int32(bytes)? {
                    0 => WantType::Block,
                    1 => WantType::Have,
                    value => {
                        return Err(MessageError::UnknownEnum {
                            field: "wantType",
                            value,
                        })
                    }
                }
            }
            (ENTRY_SEND_DONT_HAVE, VARINT) => entry.send_dont_have = r.read_bool(bytes)?,
            _ => r.read_unknown(bytes, t)?,
        }
    }
    entry.cid = cid.ok_or_else(|| MessageError::BadCid {
        field: "wantlist entry",
        reason: "missing".into(),
    })?;
    Ok(entry)
}

fn decode_block(buf: &Bytes, bytes: &[u8]) -> Result<BlockData, MessageError> {
    let mut r = BytesReader::from_bytes(bytes);
    let mut prefix = None;
    let mut data = Bytes::new();
    while !r.is_eof() {
        let t = r.next_tag(bytes)?;
        match (t >> 3, t & 7) {
            (BLOCK_PREFIX, LEN) => prefix = Some(Prefix::from_bytes(r.read_bytes(bytes)?)?),
            (BLOCK_DATA, LEN) => data = buf.slice_ref(r.read_bytes(bytes)?),
            _ => r.read_unknown(bytes, t)?,
        }
    }
    let prefix = prefix.ok_or_else(|| MessageError::BadPrefix("missing".into()))?;
    Ok(BlockData { prefix, data })
}

fn decode_presence(bytes: &[u8]) -> Result<Presence, MessageError> {
    let mut r = BytesReader::from_bytes(bytes);
    let mut cid = None;
    let mut have = true;
    while !r.is_eof() {
        let t = r.next_tag(bytes)?;
        match (t >> 3, t & 7) {
            (PRESENCE_CID, LEN) => cid = Some(decode_cid(r.read_bytes(bytes)?, "block presence")?),
            (PRESENCE_TYPE, VARINT) => {
                have = match r.read_int32(bytes)? {
                    0 => true,
                    1 => false,
                    value => {
                        return Err(MessageError::UnknownEnum {
                            field: "BlockPresenceType",
                            value,
                        })
                    }
                }
            }
            _ => r.read_unknown(bytes, t)?,
        }
    }
    let cid = cid.ok_or_else(|| MessageError::BadCid {
        field: "block presence",
        reason: "missing".into(),
    })?;
    Ok(Presence { cid, have })
}

/// A message as encoded for one protocol version.
struct Wire<'a> {
    msg: &'a Message,
    protocol: Protocol,
}

impl Wire<'_> {
    fn want_type(&self, e: &Entry) -> WantType {
        if self.protocol.supports_have() {
            e.want_type
        } else {
            WantType::Block
        }
    }

    fn entry_size(&self, e: &Entry) -> usize {
        let cid = e.cid.encoded_len();
        let mut n = sizeof_field(ENTRY_BLOCK, cid) + cid;
        n += sizeof_int_field(ENTRY_PRIORITY, i64::from(e.priority));
        if e.cancel {
            n += sizeof_int_field(ENTRY_CANCEL, 1);
        }
        if self.want_type(e) == WantType::Have {
            n += sizeof_int_field(ENTRY_WANT_TYPE, 1);
        }
        if e.send_dont_have && self.protocol.supports_have() {
            n += sizeof_int_field(ENTRY_SEND_DONT_HAVE, 1);
        }
        n
    }

    fn wantlist_size(&self) -> usize {
        let mut n = 0;
        for e in &self.msg.wantlist {
            let s = self.entry_size(e);
            n += sizeof_field(WL_ENTRIES, s) + s;
        }
        if self.msg.full {
            n += sizeof_int_field(WL_FULL, 1);
        }
        n
    }

    fn has_wantlist(&self) -> bool {
        self.msg.full || !self.msg.wantlist.is_empty()
    }

    fn block_size(b: &BlockData) -> usize {
        let p = b.prefix.to_bytes().len();
        sizeof_field(BLOCK_PREFIX, p) + p + sizeof_field(BLOCK_DATA, b.data.len()) + b.data.len()
    }

    fn presence_size(p: &Presence) -> usize {
        let cid = p.cid.encoded_len();
        let mut n = sizeof_field(PRESENCE_CID, cid) + cid;
        if !p.have {
            n += sizeof_int_field(PRESENCE_TYPE, 1);
        }
        n
    }
}

impl MessageWrite for Wire<'_> {
    fn get_size(&self) -> usize {
        let mut n = 0;
        if self.has_wantlist() {
            let wl = self.wantlist_size();
            n += sizeof_field(MSG_WANTLIST, wl) + wl;
        }
        for b in &self.msg.blocks {
            if self.protocol == Protocol::V100 {
                n += sizeof_field(MSG_BLOCKS, b.data.len()) + b.data.len();
            } else {
                let s = Self::block_size(b);
                n += sizeof_field(MSG_PAYLOAD, s) + s;
            }
        }
        if self.protocol.supports_have() {
            for p in &self.msg.presences {
                let s = Self::presence_size(p);
                n += sizeof_field(MSG_PRESENCES, s) + s;
            }
            if self.msg.pending_bytes != 0 {
                n += sizeof_int_field(MSG_PENDING, i64::from(self.msg.pending_bytes));
            }
        }
        n
    }

    fn write_message<W: WriterBackend>(&self, w: &mut Writer<W>) -> quick_protobuf::Result<()> {
        if self.has_wantlist() {
            w.write_tag(tag(MSG_WANTLIST, LEN))?;
            w.write_varint(self.wantlist_size() as u64)?;
            for e in &self.msg.wantlist {
                w.write_tag(tag(WL_ENTRIES, LEN))?;
                w.write_varint(self.entry_size(e) as u64)?;
                w.write_tag(tag(ENTRY_BLOCK, LEN))?;
                w.write_bytes(&e.cid.to_bytes())?;
                w.write_tag(tag(ENTRY_PRIORITY, VARINT))?;
                w.write_int32(e.priority)?;
                if e.cancel {
                    w.write_tag(tag(ENTRY_CANCEL, VARINT))?;
                    w.write_bool(true)?;
                }
                if self.want_type(e) == WantType::Have {
                    w.write_tag(tag(ENTRY_WANT_TYPE, VARINT))?;
                    w.write_int32(1)?;
                }
                if e.send_dont_have && self.protocol.supports_have() {
                    w.write_tag(tag(ENTRY_SEND_DONT_HAVE, VARINT))?;
                    w.write_bool(true)?;
                }
            }
            if self.msg.full {
                w.write_tag(tag(WL_FULL, VARINT))?;
                w.write_bool(true)?;
            }
        }
        for b in &self.msg.blocks {
            if self.protocol == Protocol::V100 {
                w.write_tag(tag(MSG_BLOCKS, LEN))?;
                w.write_bytes(&b.data)?;
            } else {
                w.write_tag(tag(MSG_PAYLOAD, LEN))?;
                w.write_varint(Self::block_size(b) as u64)?;
                w.write_tag(tag(BLOCK_PREFIX, LEN))?;
                w.write_bytes(&b.prefix.to_bytes())?;
                w.write_tag(tag(BLOCK_DATA, LEN))?;
                w.write_bytes(&b.data)?;
            }
        }
        if self.protocol.supports_have() {
            for p in &self.msg.presences {
                w.write_tag(tag(MSG_PRESENCES, LEN))?;
                w.write_varint(Self::presence_size(p) as u64)?;
                w.write_tag(tag(PRESENCE_CID, LEN))?;
                w.write_bytes(&p.cid.to_bytes())?;
                if !p.have {
                    w.write_tag(tag(PRESENCE_TYPE, VARINT))?;
                    w.write_int32(1)?;
                }
            }
            if self.msg.pending_bytes != 0 {
                w.write_tag(tag(MSG_PENDING, VARINT))?;
                w.write_int32(self.msg.pending_bytes)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{Block, RAW};
    use proptest::prelude::*;

    fn block(data: &[u8]) -> Block {
        Block::new(Version::V1, RAW, data.to_vec())
    }

    fn v0(data: &[u8]) -> Block {
        Block::new(Version::V0, DAG_PB, data.to_vec())
    }

    /// A message a boxo node would send, written out field by field with
    /// protobuf's rules, to check decoding against bytes not produced by
    /// our own encoder.
    #[test]
    fn decodes_hand_written_bytes() {
        let b = block(b"hi");
        let cid = b.cid.to_bytes();
        // Entry { block: cid, priority: 5, wantType: Have, sendDontHave: true }
        let mut entry = vec![0x0a, cid.len() as u8];
        entry.extend_from_slice(&cid);
        entry.extend_from_slice(&[0x10, 5, 0x20, 1, 0x28, 1]);
        let mut wantlist = vec![0x0a, entry.len() as u8];
        wantlist.extend_from_slice(&entry);
        wantlist.extend_from_slice(&[0x10, 1]); // full
                                                // Block { prefix, data: "hi" }
        let prefix = Prefix::of(&b.cid).to_bytes();
        assert_eq!(prefix, vec![1, 0x55, 0x12, 0x20]);
        let mut payload = vec![0x0a, prefix.len() as u8];
        payload.extend_from_slice(&prefix);
        payload.extend_from_slice(&[0x12, 2, b'h', b'i']);
        // BlockPresence { cid, type: DontHave }
        let mut presence = vec![0x0a, cid.len() as u8];
        presence.extend_from_slice(&cid);
        presence.extend_from_slice(&[0x10, 1]);
        let mut msg = vec![0x0a, wantlist.len() as u8];
        msg.extend_from_slice(&wantlist);
        msg.extend_from_slice(&[0x1a, payload.len() as u8]);
        msg.extend_from_slice(&payload);
        msg.extend_from_slice(&[0x22, presence.len() as u8]);
        msg.extend_from_slice(&presence);
        msg.extend_from_slice(&[0x28, 0x80, 0x01]); // pendingBytes 128
                                                    // An unknown field is skipped.
        msg.extend_from_slice(&[0x30, 7]);

        let m = Message::decode(&Bytes::from(msg.clone())).unwrap();
        assert!(m.full);
        assert_eq!(
            m.wantlist,
            vec![Entry::want(b.cid, 5, WantType::Have, true)]
        );
        assert_eq!(m.blocks, vec![BlockData::new(&b.cid, b.data.clone())]);
        assert_eq!(m.blocks[0].prefix.cid_of(&m.blocks[0].data).unwrap(), b.cid);
        assert_eq!(
            m.presences,
            vec![Presence {
                cid: b.cid,
                have: false
            }]
        );
        assert_eq!(m.pending_bytes, 128);
        // Our encoder writes the same fields in the same order.
        assert_eq!(m.encode(Protocol::V120), msg[..msg.len() - 2]);
    }

    #[test]
    fn version_1_0_0_blocks_are_cidv0() {
        let b = v0(&[0x0a, 0x02, 0x08, 0x01]);
        let mut msg = vec![0x12, b.data.len() as u8];
        msg.extend_from_slice(&b.data);
        let m = Message::decode(&Bytes::from(msg.clone())).unwrap();
        assert_eq!(m.blocks[0].prefix, Prefix::V0);
        assert_eq!(m.blocks[0].prefix.cid_of(&m.blocks[0].data).unwrap(), b.cid);
        assert_eq!(m.encode(Protocol::V100), msg);
    }

    #[test]
    fn older_versions_get_want_block_and_no_presences() {
        let b = block(b"x");
        let m = Message {
            wantlist: vec![Entry::want(b.cid, 1, WantType::Have, true)],
            presences: vec![Presence {
                cid: b.cid,
                have: true,
            }],
            blocks: vec![BlockData::new(&b.cid, b.data.clone())],
            ..Message::default()
        };
        for p in [Protocol::V100, Protocol::V110] {
            let back = Message::decode(&Bytes::from(m.encode(p))).unwrap();
            assert_eq!(
                back.wantlist,
                vec![Entry::want(b.cid, 1, WantType::Block, false)]
            );
            assert!(back.presences.is_empty());
            assert_eq!(back.blocks.len(), 1);
        }
        // 1.0.0 cannot say which CID a block has: it is read as CIDv0.
        let back = Message::decode(&Bytes::from(m.encode(Protocol::V100))).unwrap();
        assert_eq!(back.blocks[0].prefix, Prefix::V0);
    }

    #[test]
    fn bad_input_is_refused() {
        let err = |bytes: &[u8]| Message::decode(&Bytes::copy_from_slice(bytes)).unwrap_err();
        // Truncated field.
        assert!(matches!(err(&[0x0a, 5, 1]), MessageError::Protobuf(_)));
        // Entry without a CID.
        assert!(matches!(
            err(&[0x0a, 4, 0x0a, 2, 0x10, 1]),
            MessageError::BadCid { .. }
        ));
        // Entry whose CID is garbage.
        assert!(matches!(
            err(&[0x0a, 5, 0x0a, 3, 0x0a, 1, 0xff]),
            MessageError::BadCid { .. }
        ));
        // Payload with a CIDv0 prefix that is not dag-pb.
        assert!(matches!(
            err(&[0x1a, 6, 0x0a, 4, 0, 0x55, 0x12, 0x20]),
            MessageError::BadPrefix(_)
        ));
    }

    #[test]
    fn prefixes_hash_what_they_say() {
        let b = block(b"data");
        let p = Prefix::of(&b.cid);
        assert_eq!(Prefix::from_bytes(&p.to_bytes()).unwrap(), p);
        assert_eq!(p.cid_of(b"data").unwrap(), b.cid);
        assert_ne!(p.cid_of(b"other").unwrap(), b.cid);
        let blake3 = Prefix { hash: 0x1e, ..p };
        assert_eq!(
            blake3.cid_of(b"data"),
            Err(MessageError::UnsupportedHash { code: 0x1e })
        );
        let id = Prefix {
            hash: IDENTITY,
            hash_len: 4,
            ..p
        };
        assert_eq!(id.cid_of(b"data").unwrap().hash().digest(), b"data");
        assert!(id.cid_of(b"longer").is_err());
    }

    #[test]
    fn frame_headers() {
        let m = Message {
            full: true,
            ..Message::default()
        };
        let frame = m.to_frame(Protocol::V120);
        let (hlen, blen) = frame_header(&frame).unwrap().unwrap();
        assert_eq!(hlen + blen, frame.len());
        assert_eq!(frame_header(&[0x80]).unwrap(), None);
        assert_eq!(frame_header(&[]).unwrap(), None);
        let mut big = unsigned_varint::encode::u64_buffer();
        let big = unsigned_varint::encode::u64(MAX_MESSAGE_SIZE as u64 + 1, &mut big);
        assert_eq!(
            frame_header(big),
            Err(MessageError::TooLarge {
                len: MAX_MESSAGE_SIZE as u64 + 1
            })
        );
        assert_eq!(frame_header(&[0xff; 11]), Err(MessageError::BadLength));
    }

    fn arb_cid() -> impl Strategy<Value = Cid> {
        (any::<bool>(), proptest::collection::vec(any::<u8>(), 0..40)).prop_map(|(v0, data)| {
            if v0 {
                Block::new(Version::V0, DAG_PB, data).cid
            } else {
                Block::new(Version::V1, RAW, data).cid
            }
        })
    }

    fn arb_message() -> impl Strategy<Value = Message> {
        let entry = (
            arb_cid(),
            any::<i32>(),
            any::<bool>(),
            any::<bool>(),
            any::<bool>(),
        )
            .prop_map(|(cid, priority, cancel, have, sdh)| Entry {
                cid,
                priority,
                cancel,
                want_type: if have {
                    WantType::Have
                } else {
                    WantType::Block
                },
                send_dont_have: sdh,
            });
        let block = proptest::collection::vec(any::<u8>(), 0..300).prop_map(|d| {
            let b = Block::new(Version::V1, RAW, d);
            BlockData::new(&b.cid, b.data)
        });
        let presence = (arb_cid(), any::<bool>()).prop_map(|(cid, have)| Presence { cid, have });
        (
            any::<bool>(),
            proptest::collection::vec(entry, 0..8),
            proptest::collection::vec(block, 0..4),
            proptest::collection::vec(presence, 0..8),
            any::<i32>(),
        )
            .prop_map(
                |(full, wantlist, blocks, presences, pending_bytes)| Message {
                    full,
                    wantlist,
                    blocks,
                    presences,
                    pending_bytes,
                },
            )
    }

    proptest! {
        #[test]
        fn round_trips_in_1_2_0(m in arb_message()) {
            let body = m.encode(Protocol::V120);
            prop_assert_eq!(body.len(), Wire { msg: &m, protocol: Protocol::V120 }.get_size());
            prop_assert_eq!(Message::decode(&Bytes::from(body)).unwrap(), m);
        }

        #[test]
        fn encoded_length_is_exact_in_every_version(m in arb_message()) {
            for p in Protocol::ALL {
                let body = m.encode(p);
                prop_assert_eq!(body.len(), Wire { msg: &m, protocol: p }.get_size());
                let frame = m.to_frame(p);
                let (h, b) = frame_header(&frame).unwrap().unwrap();
                prop_assert_eq!(&frame[h..h + b], &body[..]);
            }
        }

        #[test]
        fn decoding_garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = Message::decode(&Bytes::from(bytes));
        }
    }
}
