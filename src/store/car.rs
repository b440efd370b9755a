//! CARv1 (content-addressable archive) framing, without I/O.
//!
//! A CAR is a varint-framed DAG-CBOR header `{roots, version: 1}` followed by
//! varint-framed sections of `CID bytes ++ block bytes`. [`header`] and
//! [`section`] build the byte frames; [`CarReader`] parses them from any
//! `Read`, checking sizes before it allocates.

use super::{Block, StoreError};
use bytes::Bytes;
use cid::Cid;
use serde::{Deserialize, Serialize};
use std::io::Read;

/// The largest block a CAR section may carry (kubo refuses blocks over 2 MiB
/// by default; leave headroom).
pub const MAX_BLOCK: usize = 4 << 20;
/// The largest CAR header accepted.
pub const MAX_HEADER: usize = 1 << 20;

// Fields are declared in DAG-CBOR canonical key order (length, then bytes).
#[derive(Serialize, Deserialize)]
struct Header {
    roots: Vec<Cid>,
    version: u64,
}

/// The framed CARv1 header naming `roots`.
pub fn header(roots: &[Cid]) -> Vec<u8> {
    let body = serde_ipld_dagcbor::to_vec(&Header {
        roots: roots.to_vec(),
        version: 1,
    })
    .expect("a list of CIDs always encodes");
    let mut out = Vec::with_capacity(body.len() + 4);
    crate::dagpb::put_varint(&mut out, body.len() as u64);
    out.extend_from_slice(&body);
    out
}

/// The framed section carrying one block.
pub fn section(cid: &Cid, data: &[u8]) -> Vec<u8> {
    let c = cid.to_bytes();
    let mut out = Vec::with_capacity(c.len() + data.len() + 8);
    crate::dagpb::put_varint(&mut out, (c.len() + data.len()) as u64);
    out.extend_from_slice(&c);
    out.extend_from_slice(data);
    out
}

/// Reads the blocks of a CARv1 stream.
#[derive(Debug)]
pub struct CarReader<R> {
    inner: R,
    roots: Vec<Cid>,
}

fn bad(msg: impl Into<String>) -> StoreError {
    StoreError::Car(msg.into())
}

/// Reads an unsigned varint; `Ok(None)` at a clean end of stream. Byte by
/// byte, so that nothing past the length is consumed.
fn read_varint(r: &mut impl Read) -> Result<Option<u64>, StoreError> {
    let mut buf = unsigned_varint::encode::u64_buffer();
    let mut i = 0;
    while i < buf.len() {
        match r.read(&mut buf[i..=i]) {
            Ok(0) if i == 0 => return Ok(None),
            Ok(0) => return Err(bad("stream ends inside a length")),
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(bad(format!("read: {e}"))),
        }
        if unsigned_varint::decode::is_last(buf[i]) {
            let (v, _) = unsigned_varint::decode::u64(&buf[..=i])
                .map_err(|e| bad(format!("length varint: {e}")))?;
            return Ok(Some(v));
        }
        i += 1;
    }
    Err(bad("length varint too long"))
}

impl<R: Read> CarReader<R> {
    /// Reads and checks the header.
    pub fn new(mut inner: R) -> Result<Self, StoreError> {
        let len = read_varint(&mut inner)?.ok_or_else(|| bad("empty stream"))? as usize;
        if len == 0 || len > MAX_HEADER {
            return Err(bad(format!("header length {len} out of range")));
        }
        let mut buf = vec![0; len];
        inner
            .read_exact(&mut buf)
            .map_err(|e| bad(format!("header: {e}")))?;
        let h: Header =
            serde_ipld_dagcbor::from_slice(&buf).map_err(|e| bad(format!("header: {e}")))?;
        if h.version != 1 {
            return Err(bad(format!(
                "CAR version {} is not supported; convert to CARv1",
                h.version
            )));
        }
        Ok(Self {
            inner,
            roots: h.roots,
        })
    }

    /// The roots the header names.
    pub fn roots(&self) -> &[Cid] {
        &self.roots
    }

    /// The next block, hash-checked; `None` at the end.
    pub fn next_block(&mut self) -> Result<Option<Block>, StoreError> {
        let Some(len) = read_varint(&mut self.inner)? else {
            return Ok(None);
        };
        let len = len as usize;
        if len > MAX_BLOCK + 128 {
            return Err(bad(format!("section of {len} bytes exceeds the limit")));
        }
        let mut buf = vec![0; len];
        self.inner
            .read_exact(&mut buf)
            .map_err(|e| bad(format!("section: {e}")))?;
        let mut cursor = std::io::Cursor::new(&buf[..]);
        let cid = Cid::read_bytes(&mut cursor).map_err(|e| bad(format!("section CID: {e}")))?;
        let at = cursor.position() as usize;
        let data = Bytes::from(buf).slice(at..);
        let block = Block { cid, data };
        block.verify()?;
        Ok(Some(block))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{DAG_PB, RAW};

    #[test]
    fn round_trip() {
        let a = Block::new(cid::Version::V1, RAW, b"hello".to_vec());
        let b = Block::new(cid::Version::V0, DAG_PB, vec![0x0a, 0x02, 0x08, 0x01]);
        let mut car = header(&[b.cid]);
        car.extend(section(&a.cid, &a.data));
        car.extend(section(&b.cid, &b.data));
        let mut r = CarReader::new(&car[..]).unwrap();
        assert_eq!(r.roots(), &[b.cid]);
        assert_eq!(r.next_block().unwrap(), Some(a));
        assert_eq!(r.next_block().unwrap(), Some(b));
        assert_eq!(r.next_block().unwrap(), None);
    }

    #[test]
    fn header_matches_reference_bytes() {
        // From the CARv1 spec fixture style: {roots:[cid], version:1}.
        let cid: Cid = "bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku"
            .parse()
            .unwrap();
        let h = header(&[cid]);
        // a2 (map of 2) 65 "roots" 81 (array of 1) d8 2a (tag 42) ...
        assert_eq!(&h[1..9], &[0xa2, 0x65, b'r', b'o', b'o', b't', b's', 0x81]);
        assert_eq!(&h[9..11], &[0xd8, 0x2a]);
        assert!(h.ends_with(&[0x67, b'v', b'e', b'r', b's', b'i', b'o', b'n', 0x01]));
    }

    #[test]
    fn rejects_tampered_block() {
        let a = Block::new(cid::Version::V1, RAW, b"hello".to_vec());
        let mut car = header(&[a.cid]);
        car.extend(section(&a.cid, b"hellO"));
        let mut r = CarReader::new(&car[..]).unwrap();
        assert!(matches!(
            r.next_block(),
            Err(StoreError::HashMismatch { .. })
        ));
    }

    #[test]
    fn rejects_garbage() {
        assert!(CarReader::new(&[0xff, 0xff, 0xff, 0xff, 0x7f][..]).is_err());
        assert!(CarReader::new(&[][..]).is_err());
    }
}
