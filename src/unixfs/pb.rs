//! dag-pb and UnixFS protobuf codecs.
//!
//! Flow: the importer builds [`PbNode`]s holding an encoded [`UnixfsData`] and
//! calls [`PbNode::encode`]; the exporter calls [`PbNode::decode`] and then
//! [`UnixfsData::decode`] on the node's data.
//!
//! Written by hand rather than generated with prost or quick-protobuf because
//! CIDs must match kubo byte for byte, which pins down details a generator
//! does not promise: dag-pb writes `Links` (field 2) before `Data` (field 1),
//! every link carries its name (even when empty) and `Tsize`, and UnixFS
//! `blocksizes` are written unpacked, one tag per value, as kubo's gogo-protobuf
//! output does. The whole format is six wire rules, so owning it is cheap.

use thiserror::Error;

/// Why a protobuf buffer could not be decoded.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum PbError {
    /// The buffer ended inside a field.
    #[error("truncated protobuf: {0}")]
    Truncated(&'static str),
    /// A varint was longer than 10 bytes or overflowed 64 bits.
    #[error("malformed varint")]
    BadVarint,
    /// A field had a wire type its message does not allow.
    #[error("unexpected wire type {wire} for field {field} in {message}")]
    WireType {
        /// The message being decoded.
        message: &'static str,
        /// Field number.
        field: u64,
        /// Wire type found.
        wire: u8,
    },
    /// A field number that the message does not define.
    #[error("unknown field {field} in {message}")]
    UnknownField {
        /// The message being decoded.
        message: &'static str,
        /// Field number.
        field: u64,
    },
    /// A required field was absent.
    #[error("missing required field {0}")]
    Missing(&'static str),
    /// A link name was not UTF-8.
    #[error("link name is not UTF-8")]
    BadName,
    /// The UnixFS type number is not one the spec defines.
    #[error("unknown UnixFS type {0}")]
    UnknownType(u64),
}

/// One link of a dag-pb node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PbLink {
    /// The binary CID of the child.
    pub hash: Vec<u8>,
    /// Link name; kubo writes `Some("")` for file chunks.
    pub name: Option<String>,
    /// Cumulative size of the child DAG (block sizes summed).
    pub tsize: Option<u64>,
}

/// A dag-pb node.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PbNode {
    /// Links, in the order they are encoded.
    pub links: Vec<PbLink>,
    /// Opaque data; for UnixFS an encoded [`UnixfsData`].
    pub data: Option<Vec<u8>>,
}

/// UnixFS node types (the `Type` enum of `unixfs.proto`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataType {
    /// Raw data (legacy leaves).
    Raw = 0,
    /// A plain directory.
    Directory = 1,
    /// A file or file chunk.
    File = 2,
    /// Metadata (unused by kubo).
    Metadata = 3,
    /// A symbolic link; `data` is the target.
    Symlink = 4,
    /// A HAMT-sharded directory node.
    HamtShard = 5,
}

impl DataType {
    fn from_u64(v: u64) -> Result<Self, PbError> {
        Ok(match v {
            0 => Self::Raw,
            1 => Self::Directory,
            2 => Self::File,
            3 => Self::Metadata,
            4 => Self::Symlink,
            5 => Self::HamtShard,
            other => return Err(PbError::UnknownType(other)),
        })
    }
}

/// Modification time (`UnixTime` in `unixfs.proto`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UnixTime {
    /// Seconds since the Unix epoch.
    pub seconds: i64,
    /// Nanoseconds within the second.
    pub nanos: Option<u32>,
}

/// The UnixFS `Data` message carried in a dag-pb node's data field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnixfsData {
    /// Node type.
    pub kind: DataType,
    /// Inline bytes (file chunk content, symlink target, HAMT bitfield).
    pub data: Option<Vec<u8>>,
    /// Total file size below this node.
    pub filesize: Option<u64>,
    /// Size of each child's file content, in link order.
    pub blocksizes: Vec<u64>,
    /// HAMT hash function multicodec (0x22, murmur3-x64-64).
    pub hash_type: Option<u64>,
    /// HAMT fanout.
    pub fanout: Option<u64>,
    /// Unix permission bits.
    pub mode: Option<u32>,
    /// Modification time.
    pub mtime: Option<UnixTime>,
}

impl UnixfsData {
    /// A `Data` message of the given type with every optional field absent.
    pub fn new(kind: DataType) -> Self {
        Self {
            kind,
            data: None,
            filesize: None,
            blocksizes: Vec::new(),
            hash_type: None,
            fanout: None,
            mode: None,
            mtime: None,
        }
    }

    /// Encodes in field order, blocksizes unpacked.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(16 + self.data.as_ref().map_or(0, Vec::len));
        put_varint_field(&mut out, 1, self.kind as u64);
        if let Some(d) = &self.data {
            put_bytes_field(&mut out, 2, d);
        }
        if let Some(s) = self.filesize {
            put_varint_field(&mut out, 3, s);
        }
        for b in &self.blocksizes {
            put_varint_field(&mut out, 4, *b);
        }
        if let Some(h) = self.hash_type {
            put_varint_field(&mut out, 5, h);
        }
        if let Some(f) = self.fanout {
            put_varint_field(&mut out, 6, f);
        }
        if let Some(m) = self.mode {
            put_varint_field(&mut out, 7, u64::from(m));
        }
        if let Some(t) = self.mtime {
            let mut inner = Vec::new();
            // int64 is encoded as a two's complement varint.
            put_varint_field(&mut inner, 1, t.seconds as u64);
            if let Some(n) = t.nanos {
                put_tag(&mut inner, 2, 5);
                inner.extend_from_slice(&n.to_le_bytes());
            }
            put_bytes_field(&mut out, 8, &inner);
        }
        out
    }

    /// Decodes a `Data` message; accepts packed or unpacked blocksizes.
    pub fn decode(buf: &[u8]) -> Result<Self, PbError> {
        const MSG: &str = "unixfs Data";
        let mut kind = None;
        let mut d = Self::new(DataType::Raw);
        let mut r = Reader::new(buf);
        while let Some((field, wire)) = r.tag()? {
            match (field, wire) {
                (1, 0) => kind = Some(DataType::from_u64(r.varint()?)?),
                (2, 2) => d.data = Some(r.bytes()?.to_vec()),
                (3, 0) => d.filesize = Some(r.varint()?),
                (4, 0) => d.blocksizes.push(r.varint()?),
                (4, 2) => {
                    let mut packed = Reader::new(r.bytes()?);
                    while !packed.is_empty() {
                        d.blocksizes.push(packed.varint()?);
                    }
                }
                (5, 0) => d.hash_type = Some(r.varint()?),
                (6, 0) => d.fanout = Some(r.varint()?),
                (7, 0) => d.mode = Some(r.varint()? as u32),
                (8, 2) => {
                    let mut t = Reader::new(r.bytes()?);
                    let mut time = UnixTime {
                        seconds: 0,
                        nanos: None,
                    };
                    while let Some((f, w)) = t.tag()? {
                        match (f, w) {
                            (1, 0) => time.seconds = t.varint()? as i64,
                            (2, 5) => time.nanos = Some(t.fixed32()?),
                            _ => t.skip(w)?,
                        }
                    }
                    d.mtime = Some(time);
                }
                (1..=8, w) => {
                    return Err(PbError::WireType {
                        message: MSG,
                        field,
                        wire: w,
                    })
                }
                // Later spec versions may add fields; skip them.
                (_, w) => r.skip(w)?,
            }
        }
        d.kind = kind.ok_or(PbError::Missing("Data.Type"))?;
        Ok(d)
    }
}

impl PbNode {
    /// Encodes canonically: links first, then data.
    pub fn encode(&self) -> Vec<u8> {
        let mut out =
            Vec::with_capacity(self.links.len() * 48 + self.data.as_ref().map_or(0, Vec::len) + 8);
        let mut link_buf = Vec::with_capacity(64);
        for l in &self.links {
            link_buf.clear();
            put_bytes_field(&mut link_buf, 1, &l.hash);
            if let Some(n) = &l.name {
                put_bytes_field(&mut link_buf, 2, n.as_bytes());
            }
            if let Some(t) = l.tsize {
                put_varint_field(&mut link_buf, 3, t);
            }
            put_bytes_field(&mut out, 2, &link_buf);
        }
        if let Some(d) = &self.data {
            put_bytes_field(&mut out, 1, d);
        }
        out
    }

    /// The encoded length without encoding.
    pub fn encoded_len(&self) -> usize {
        let mut n = 0;
        for l in &self.links {
            let mut ln = field_len(l.hash.len());
            if let Some(name) = &l.name {
                ln += field_len(name.len());
            }
            if let Some(t) = l.tsize {
                ln += 1 + varint_len(t);
            }
            n += field_len(ln);
        }
        if let Some(d) = &self.data {
            n += field_len(d.len());
        }
        n
    }

    /// Decodes a dag-pb block.
    pub fn decode(buf: &[u8]) -> Result<Self, PbError> {
        const MSG: &str = "PBNode";
        let mut node = PbNode::default();
        let mut r = Reader::new(buf);
        while let Some((field, wire)) = r.tag()? {
            match (field, wire) {
                (1, 2) => node.data = Some(r.bytes()?.to_vec()),
                (2, 2) => node.links.push(decode_link(r.bytes()?)?),
                (1 | 2, w) => {
                    return Err(PbError::WireType {
                        message: MSG,
                        field,
                        wire: w,
                    })
                }
                _ => {
                    return Err(PbError::UnknownField {
                        message: MSG,
                        field,
                    })
                }
            }
        }
        Ok(node)
    }
}

fn decode_link(buf: &[u8]) -> Result<PbLink, PbError> {
    const MSG: &str = "PBLink";
    let mut r = Reader::new(buf);
    let mut hash = None;
    let mut link = PbLink {
        hash: Vec::new(),
        name: None,
        tsize: None,
    };
    while let Some((field, wire)) = r.tag()? {
        match (field, wire) {
            (1, 2) => hash = Some(r.bytes()?.to_vec()),
            (2, 2) => {
                link.name =
                    Some(String::from_utf8(r.bytes()?.to_vec()).map_err(|_| PbError::BadName)?)
            }
            (3, 0) => link.tsize = Some(r.varint()?),
            (1..=3, w) => {
                return Err(PbError::WireType {
                    message: MSG,
                    field,
                    wire: w,
                })
            }
            _ => {
                return Err(PbError::UnknownField {
                    message: MSG,
                    field,
                })
            }
        }
    }
    link.hash = hash.ok_or(PbError::Missing("PBLink.Hash"))?;
    Ok(link)
}

/// Bytes a varint of `v` takes.
pub fn varint_len(mut v: u64) -> usize {
    let mut n = 1;
    while v >= 0x80 {
        v >>= 7;
        n += 1;
    }
    n
}

/// Bytes a length-delimited field with a one-byte tag and `len` payload takes.
fn field_len(len: usize) -> usize {
    1 + varint_len(len as u64) + len
}

/// Appends `v` as an unsigned LEB128 varint.
pub fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn put_tag(out: &mut Vec<u8>, field: u64, wire: u8) {
    put_varint(out, (field << 3) | u64::from(wire));
}

fn put_varint_field(out: &mut Vec<u8>, field: u64, v: u64) {
    put_tag(out, field, 0);
    put_varint(out, v);
}

fn put_bytes_field(out: &mut Vec<u8>, field: u64, b: &[u8]) {
    put_tag(out, field, 2);
    put_varint(out, b.len() as u64);
    out.extend_from_slice(b);
}

/// A cursor over a protobuf buffer.
struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    fn new(buf: &'a [u8]) -> Self {
        Self { buf }
    }

    fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    fn varint(&mut self) -> Result<u64, PbError> {
        let mut v: u64 = 0;
        for i in 0..10 {
            let b = *self.buf.get(i).ok_or(PbError::Truncated("varint"))?;
            if i == 9 && b > 1 {
                return Err(PbError::BadVarint);
            }
            v |= u64::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                self.buf = &self.buf[i + 1..];
                return Ok(v);
            }
        }
        Err(PbError::BadVarint)
    }

    fn tag(&mut self) -> Result<Option<(u64, u8)>, PbError> {
        if self.buf.is_empty() {
            return Ok(None);
        }
        let t = self.varint()?;
        Ok(Some((t >> 3, (t & 7) as u8)))
    }

    fn bytes(&mut self) -> Result<&'a [u8], PbError> {
        let len = self.varint()?;
        let len = usize::try_from(len).map_err(|_| PbError::Truncated("length"))?;
        if len > self.buf.len() {
            return Err(PbError::Truncated("length-delimited field"));
        }
        let (b, rest) = self.buf.split_at(len);
        self.buf = rest;
        Ok(b)
    }

    fn fixed32(&mut self) -> Result<u32, PbError> {
        if self.buf.len() < 4 {
            return Err(PbError::Truncated("fixed32"));
        }
        let (b, rest) = self.buf.split_at(4);
        self.buf = rest;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn skip(&mut self, wire: u8) -> Result<(), PbError> {
        match wire {
            0 => {
                self.varint()?;
            }
            1 => {
                if self.buf.len() < 8 {
                    return Err(PbError::Truncated("fixed64"));
                }
                self.buf = &self.buf[8..];
            }
            2 => {
                self.bytes()?;
            }
            5 => {
                self.fixed32()?;
            }
            w => {
                return Err(PbError::WireType {
                    message: "unknown field",
                    field: 0,
                    wire: w,
                })
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn empty_file_matches_kubo_bytes() {
        // `ipfs add` of an empty file: QmbFMke1KXqnYyBBWxB74N4c5SBnJMVAiMNRcGu6x1AwQH.
        let mut d = UnixfsData::new(DataType::File);
        d.filesize = Some(0);
        let node = PbNode {
            links: vec![],
            data: Some(d.encode()),
        };
        assert_eq!(node.encode(), [0x0a, 0x04, 0x08, 0x02, 0x18, 0x00]);
    }

    #[test]
    fn links_precede_data_and_empty_names_are_written() {
        let node = PbNode {
            links: vec![PbLink {
                hash: vec![1, 2],
                name: Some(String::new()),
                tsize: Some(3),
            }],
            data: Some(vec![8, 1]),
        };
        let enc = node.encode();
        assert_eq!(
            enc,
            [0x12, 0x08, 0x0a, 0x02, 1, 2, 0x12, 0x00, 0x18, 0x03, 0x0a, 0x02, 8, 1]
        );
        assert_eq!(node.encoded_len(), enc.len());
        assert_eq!(PbNode::decode(&enc).unwrap(), node);
    }

    #[test]
    fn blocksizes_are_unpacked() {
        let mut d = UnixfsData::new(DataType::File);
        d.filesize = Some(300);
        d.blocksizes = vec![200, 100];
        assert_eq!(
            d.encode(),
            [0x08, 0x02, 0x18, 0xac, 0x02, 0x20, 0xc8, 0x01, 0x20, 0x64]
        );
    }

    #[test]
    fn rejects_truncated_and_unknown() {
        assert!(PbNode::decode(&[0x0a, 0x05, 1]).is_err());
        assert!(PbNode::decode(&[0x18, 0x01]).is_err());
        assert!(UnixfsData::decode(&[0x10, 0x00]).is_err());
        assert!(UnixfsData::decode(&[0x08, 0x09]).is_err());
    }

    proptest! {
        #[test]
        fn node_round_trip(
            links in proptest::collection::vec(
                (proptest::collection::vec(any::<u8>(), 1..40),
                 proptest::option::of("[a-z]{0,12}"),
                 proptest::option::of(any::<u64>())), 0..8),
            data in proptest::option::of(proptest::collection::vec(any::<u8>(), 0..300)),
        ) {
            let node = PbNode {
                links: links.into_iter().map(|(hash, name, tsize)| PbLink { hash, name, tsize }).collect(),
                data,
            };
            let enc = node.encode();
            prop_assert_eq!(enc.len(), node.encoded_len());
            prop_assert_eq!(PbNode::decode(&enc).unwrap(), node);
        }

        #[test]
        fn data_round_trip(
            kind in 0u64..6,
            data in proptest::option::of(proptest::collection::vec(any::<u8>(), 0..100)),
            filesize in proptest::option::of(any::<u64>()),
            blocksizes in proptest::collection::vec(any::<u64>(), 0..10),
            fanout in proptest::option::of(any::<u64>()),
            mode in proptest::option::of(any::<u32>()),
            secs in proptest::option::of(any::<i64>()),
        ) {
            let mut d = UnixfsData::new(DataType::from_u64(kind).unwrap());
            d.data = data;
            d.filesize = filesize;
            d.blocksizes = blocksizes;
            d.fanout = fanout;
            d.mode = mode;
            d.mtime = secs.map(|seconds| UnixTime { seconds, nanos: Some(5) });
            prop_assert_eq!(UnixfsData::decode(&d.encode()).unwrap(), d);
        }

        #[test]
        fn decode_never_panics(buf in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = PbNode::decode(&buf);
            let _ = UnixfsData::decode(&buf);
        }
    }
}
