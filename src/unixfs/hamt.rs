//! HAMT-sharded directories (UnixFS type `HAMTShard`).
//!
//! A name is hashed with murmur3-x64-64 (multicodec 0x22); each level of the
//! trie consumes log2(fanout) bits of the hash, most significant first. A
//! node's links are named with the upper-case hex of the bucket index padded
//! to the width of `fanout - 1`, followed by the entry name for an entry, or
//! nothing for a child shard.

/// Multicodec of the murmur3-x64-64 hash used by UnixFS HAMTs.
pub const MURMUR3_X64_64: u64 = 0x22;

/// The 64-bit hash of a directory entry name, as big-endian bytes.
pub fn name_hash(name: &[u8]) -> [u8; 8] {
    // go-unixfs uses the first half (h1) of murmur3 x64_128 with seed 0.
    let h = fastmurmur3::hash(name);
    ((h & u128::from(u64::MAX)) as u64).to_be_bytes()
}
