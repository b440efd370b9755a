//! HAMT-sharded directories (UnixFS type `HAMTShard`).
//!
//! A name is hashed with murmur3-x64-64 (multicodec 0x22); each level of the
//! trie consumes log2(fanout) bits of the hash, most significant first
//! ([`HashBits`]). A shard node's `Data` holds the bitfield of occupied slots
//! ([`encode_bitfield`]), the hash type and the fanout; its links, in slot
//! order, are named with the upper-case hex of the slot index padded to the
//! width of `fanout - 1` ([`link_prefix`]), followed by the entry name for an
//! entry, or nothing for a child shard.
//!
//! A slot holds an entry when exactly one name of the directory falls into it
//! at that level, and a child shard when several do, so the trie of a set of
//! names does not depend on insertion order. Walking the trie visits names in
//! the order of their hashes ([`name_hash`]), which is the order kubo lists a
//! sharded directory in.
//!
//! The importer builds tries with these pieces; `lookup` reads them back for
//! the exporter (a name, or every entry), with a depth cap.

pub(crate) mod lookup;

use thiserror::Error;

/// Multicodec of the murmur3-x64-64 hash used by UnixFS HAMTs.
pub const MURMUR3_X64_64: u64 = 0x22;

/// The fanout kubo and Helia use for every shard node.
pub const DEFAULT_FANOUT: u64 = 256;

/// The largest fanout kubo accepts when reading a shard.
pub const MAX_FANOUT: u64 = 1024;

/// Why a HAMT parameter or trie is unusable.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum HamtError {
    /// The fanout is not a power of two, a multiple of 8, and at most 1024.
    #[error("invalid HAMT fanout {0}: use a power of two between 8 and 1024 (256 is standard)")]
    BadFanout(u64),
    /// Two names share so many hash bits that the trie ran out of them.
    #[error("sharded directory too deep: names {0:?} and {1:?} have colliding hashes")]
    TooDeep(String, String),
}

/// The 64-bit hash of a directory entry name, as big-endian bytes.
///
/// go-unixfs takes the first half (h1) of murmur3 x64_128 with seed 0 and
/// writes it big-endian; `fastmurmur3` returns h1 in the low 64 bits.
pub fn name_hash(name: &[u8]) -> [u8; 8] {
    let h = fastmurmur3::hash(name);
    ((h & u128::from(u64::MAX)) as u64).to_be_bytes()
}

/// Bits taken from the hash per trie level: log2 of a valid fanout.
pub fn fanout_bits(fanout: u64) -> Result<u32, HamtError> {
    if fanout.is_power_of_two() && fanout % 8 == 0 && fanout <= MAX_FANOUT {
        Ok(fanout.trailing_zeros())
    } else {
        Err(HamtError::BadFanout(fanout))
    }
}

/// Reads successive groups of bits of a name's hash, most significant first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HashBits {
    hash: u64,
    consumed: u32,
}

impl HashBits {
    /// The bits of `name`'s hash, none consumed yet.
    pub fn new(name: &[u8]) -> Self {
        Self::from_hash(u64::from_be_bytes(name_hash(name)))
    }

    /// Wraps an already computed hash (as a big-endian integer).
    pub fn from_hash(hash: u64) -> Self {
        Self { hash, consumed: 0 }
    }

    /// The next `bits` bits as a slot index, or `None` once fewer remain.
    pub fn next(&mut self, bits: u32) -> Option<usize> {
        if bits == 0 || self.consumed + bits > 64 {
            return None;
        }
        let index = (self.hash << self.consumed) >> (64 - bits);
        self.consumed += bits;
        Some(index as usize)
    }
}

/// The slot index of `hash` at trie level `depth` (0 for the root shard), or
/// `None` when the hash has no bits left for that level.
pub fn slot_at(hash: u64, depth: u32, bits: u32) -> Option<usize> {
    let mut hb = HashBits::from_hash(hash);
    hb.consumed = depth.checked_mul(bits)?;
    hb.next(bits)
}

/// The link-name prefix of slot `index`: upper-case hex padded to the width of
/// `fanout - 1` (two characters for a fanout of 256).
pub fn link_prefix(index: usize, fanout: u64) -> String {
    let width = hex_width(fanout);
    format!("{index:0width$X}")
}

/// Characters of the hex prefix of every link name in a shard of `fanout`.
pub fn hex_width(fanout: u64) -> usize {
    format!("{:X}", fanout.saturating_sub(1)).len()
}

/// Encodes the set of occupied slots as go-bitfield does: a big-endian
/// integer of `fanout` bits (slot `i` is bit `i`), leading zero bytes dropped.
pub fn encode_bitfield(occupied: impl IntoIterator<Item = usize>, fanout: u64) -> Vec<u8> {
    let len = (fanout as usize).div_ceil(8);
    let mut bf = vec![0u8; len];
    for i in occupied {
        bf[len - 1 - i / 8] |= 1 << (i % 8);
    }
    let first = bf.iter().position(|&b| b != 0).unwrap_or(len);
    bf.drain(..first);
    bf
}

/// Whether slot `index` is set in an encoded bitfield (leading zero bytes
/// may have been dropped, as [`encode_bitfield`] does).
pub fn bitfield_has(bitfield: &[u8], index: usize) -> bool {
    let byte = index / 8;
    if byte >= bitfield.len() {
        return false;
    }
    bitfield[bitfield.len() - 1 - byte] >> (index % 8) & 1 == 1
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Reference murmur3 x64_128 (h1 only), written from the algorithm
    /// description, to cross-check the crate on every tail length.
    fn murmur3_h1(data: &[u8]) -> u64 {
        const C1: u64 = 0x87c3_7b91_1142_53d5;
        const C2: u64 = 0x4cf5_ad43_2745_937f;
        fn fmix(mut k: u64) -> u64 {
            k ^= k >> 33;
            k = k.wrapping_mul(0xff51_afd7_ed55_8ccd);
            k ^= k >> 33;
            k = k.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
            k ^ (k >> 33)
        }
        let (mut h1, mut h2) = (0u64, 0u64);
        let blocks = data.chunks_exact(16);
        let tail = blocks.remainder();
        for b in blocks {
            let k1 = u64::from_le_bytes(b[..8].try_into().unwrap());
            let k2 = u64::from_le_bytes(b[8..].try_into().unwrap());
            h1 ^= k1.wrapping_mul(C1).rotate_left(31).wrapping_mul(C2);
            h1 = h1
                .rotate_left(27)
                .wrapping_add(h2)
                .wrapping_mul(5)
                .wrapping_add(0x52dc_e729);
            h2 ^= k2.wrapping_mul(C2).rotate_left(33).wrapping_mul(C1);
            h2 = h2
                .rotate_left(31)
                .wrapping_add(h1)
                .wrapping_mul(5)
                .wrapping_add(0x3849_5ab5);
        }
        let mut t = [0u8; 16];
        t[..tail.len()].copy_from_slice(tail);
        if tail.len() > 8 {
            let k2 = u64::from_le_bytes(t[8..].try_into().unwrap());
            h2 ^= k2.wrapping_mul(C2).rotate_left(33).wrapping_mul(C1);
        }
        if !tail.is_empty() {
            let k1 = u64::from_le_bytes(t[..8].try_into().unwrap());
            h1 ^= k1.wrapping_mul(C1).rotate_left(31).wrapping_mul(C2);
        }
        h1 ^= data.len() as u64;
        h2 ^= data.len() as u64;
        h1 = h1.wrapping_add(h2);
        h2 = h2.wrapping_add(h1);
        h1 = fmix(h1);
        h2 = fmix(h2);
        h1.wrapping_add(h2)
    }

    #[test]
    fn name_hash_is_murmur3_h1_big_endian() {
        // Published murmur3 x64_128 vectors (seed 0): "" hashes to zero, and
        // "hello" to h1 = 0xcbd8a7b341bd9b02.
        assert_eq!(name_hash(b""), [0; 8]);
        assert_eq!(
            u64::from_be_bytes(name_hash(b"hello")),
            0xcbd8_a7b3_41bd_9b02
        );
        for len in 0..40 {
            let name: Vec<u8> = (0..len as u8).map(|i| i.wrapping_mul(37) ^ 0x5a).collect();
            assert_eq!(
                name_hash(&name),
                murmur3_h1(&name).to_be_bytes(),
                "len {len}"
            );
        }
    }

    #[test]
    fn hash_bits_read_most_significant_first() {
        let mut hb = HashBits::from_hash(0xAB_CD_00_00_00_00_00_F1);
        assert_eq!(hb.next(8), Some(0xAB));
        assert_eq!(hb.next(4), Some(0xC));
        assert_eq!(hb.next(4), Some(0xD));
        assert_eq!(hb.next(40), Some(0));
        assert_eq!(hb.next(8), Some(0xF1));
        assert_eq!(hb.next(1), None);
        assert_eq!(slot_at(0xAB_CD_00_00_00_00_00_F1, 1, 8), Some(0xCD));
        assert_eq!(slot_at(0xAB_CD_00_00_00_00_00_F1, 8, 8), None);
    }

    #[test]
    fn prefixes_and_fanouts() {
        assert_eq!(link_prefix(0, 256), "00");
        assert_eq!(link_prefix(0xa, 256), "0A");
        assert_eq!(link_prefix(255, 256), "FF");
        assert_eq!(link_prefix(5, 1024), "005");
        assert_eq!(link_prefix(5, 16), "5");
        assert_eq!(fanout_bits(256), Ok(8));
        assert_eq!(fanout_bits(1024), Ok(10));
        assert!(fanout_bits(4).is_err());
        assert!(fanout_bits(100).is_err());
        assert!(fanout_bits(2048).is_err());
    }

    #[test]
    fn bitfield_is_big_endian_and_trimmed() {
        assert_eq!(encode_bitfield([0], 256), [0x01]);
        assert_eq!(encode_bitfield([9, 0], 256), [0x02, 0x01]);
        let full = encode_bitfield(0..256, 256);
        assert_eq!(full, [0xff; 32]);
        let top = encode_bitfield([255], 256);
        assert_eq!(top.len(), 32);
        assert_eq!(top[0], 0x80);
        assert!(encode_bitfield([], 256).is_empty());
    }

    proptest! {
        #[test]
        fn bitfield_round_trip(slots in proptest::collection::btree_set(0usize..256, 0..40)) {
            let bf = encode_bitfield(slots.iter().copied(), 256);
            for i in 0..256 {
                prop_assert_eq!(bitfield_has(&bf, i), slots.contains(&i));
            }
        }

        #[test]
        fn name_hash_matches_reference(name in proptest::collection::vec(any::<u8>(), 0..100)) {
            prop_assert_eq!(name_hash(&name), murmur3_h1(&name).to_be_bytes());
        }
    }
}
