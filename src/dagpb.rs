//! dag-pb, the protobuf codec of UnixFS blocks: [`PbNode`]s of [`PbLink`]s
//! and opaque data.
//!
//! Flow: the UnixFS importer builds nodes and calls [`PbNode::encode`]; the
//! exporter and the store's DAG walks (pins, gc, CAR export) call
//! [`PbNode::decode`] and read the links. A leaf: it imports nothing else
//! from the crate, so `store` and `unixfs` both build on it. Its protobuf
//! field writers and reader serve the UnixFS `Data` message too; varints
//! go through `unsigned-varint`.
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
    /// Opaque data; for UnixFS an encoded `Data` message.
    pub data: Option<Vec<u8>>,
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
pub fn varint_len(v: u64) -> usize {
    unsigned_varint::encode::u64(v, &mut unsigned_varint::encode::u64_buffer()).len()
}

/// Bytes a length-delimited field with a one-byte tag and `len` payload takes.
fn field_len(len: usize) -> usize {
    1 + varint_len(len as u64) + len
}

/// Appends `v` as an unsigned LEB128 varint.
pub fn put_varint(out: &mut Vec<u8>, v: u64) {
    out.extend_from_slice(unsigned_varint::encode::u64(
        v,
        &mut unsigned_varint::encode::u64_buffer(),
    ));
}

pub(crate) fn put_tag(out: &mut Vec<u8>, field: u64, wire: u8) {
    put_varint(out, (field << 3) | u64::from(wire));
}

pub(crate) fn put_varint_field(out: &mut Vec<u8>, field: u64, v: u64) {
    put_tag(out, field, 0);
    put_varint(out, v);
}

pub(crate) fn put_bytes_field(out: &mut Vec<u8>, field: u64, b: &[u8]) {
    put_tag(out, field, 2);
    put_varint(out, b.len() as u64);
    out.extend_from_slice(b);
}

/// A cursor over a protobuf buffer.
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    pub(crate) fn new(buf: &'a [u8]) -> Self {
        Self { buf }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    pub(crate) fn varint(&mut self) -> Result<u64, PbError> {
        use unsigned_varint::decode::Error;
        let (v, rest) = unsigned_varint::decode::u64(self.buf).map_err(|e| match e {
            Error::Insufficient => PbError::Truncated("varint"),
            _ => PbError::BadVarint,
        })?;
        // The tenth byte carries the 64th bit only; the decoder would drop
        // the others.
        if self.buf.len() - rest.len() == 10 && self.buf[9] > 1 {
            return Err(PbError::BadVarint);
        }
        self.buf = rest;
        Ok(v)
    }

    pub(crate) fn tag(&mut self) -> Result<Option<(u64, u8)>, PbError> {
        if self.buf.is_empty() {
            return Ok(None);
        }
        let t = self.varint()?;
        Ok(Some((t >> 3, (t & 7) as u8)))
    }

    pub(crate) fn bytes(&mut self) -> Result<&'a [u8], PbError> {
        let len = self.varint()?;
        let len = usize::try_from(len).map_err(|_| PbError::Truncated("length"))?;
        if len > self.buf.len() {
            return Err(PbError::Truncated("length-delimited field"));
        }
        let (b, rest) = self.buf.split_at(len);
        self.buf = rest;
        Ok(b)
    }

    pub(crate) fn fixed32(&mut self) -> Result<u32, PbError> {
        if self.buf.len() < 4 {
            return Err(PbError::Truncated("fixed32"));
        }
        let (b, rest) = self.buf.split_at(4);
        self.buf = rest;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    pub(crate) fn skip(&mut self, wire: u8) -> Result<(), PbError> {
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
    }
}
