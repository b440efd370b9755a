//! The UnixFS `Data` protobuf, carried in a dag-pb node's data field.
//!
//! Flow: the importer builds [`PbNode`]s holding an encoded [`UnixfsData`] and
//! calls [`PbNode::encode`]; the exporter calls [`PbNode::decode`] and then
//! [`UnixfsData::decode`] on the node's data. dag-pb itself lives in
//! [`crate::dagpb`], shared with the store; its types are re-exported here.
//! Hand-written for the reasons given there (kubo's byte layout).

use crate::dagpb::{put_bytes_field, put_tag, put_varint_field, Reader};
pub use crate::dagpb::{put_varint, varint_len, PbError, PbLink, PbNode};

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
