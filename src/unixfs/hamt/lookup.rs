//! Reading a HAMT-sharded directory: one name, or every entry.
//!
//! Flow: [`find`] follows the name's hash from the root shard down, one
//! sub-shard per level, and when that misses scans every shard depth-first
//! (a directory laid out with another hash is then still served, only
//! slower); [`list`] walks every shard depth-first in link order.

use super::{name_hash, MURMUR3_X64_64};
use crate::store::Blockstore;
use crate::unixfs::export::{decode, link_cid, load, malformed, DirEntry, ExportError, Node};
use crate::unixfs::pb::{DataType, PbLink, PbNode, UnixfsData};
use cid::Cid;

/// The shape of one HAMT node.
pub(crate) struct Shard {
    /// Hex digits in a link's bucket prefix.
    width: usize,
    /// Hash bits consumed per level.
    bits: u32,
}

impl Shard {
    /// The shape `fs` gives the shard at `cid`, if this reader supports it.
    pub(crate) fn of(cid: &Cid, fs: &UnixfsData) -> Result<Self, ExportError> {
        if fs.hash_type != Some(MURMUR3_X64_64) {
            return Err(malformed(
                cid,
                format!("HAMT hash type {:?} is not murmur3-x64-64", fs.hash_type),
            ));
        }
        let fanout = fs.fanout.unwrap_or(0);
        if !fanout.is_power_of_two() || !(2..=4096).contains(&fanout) {
            return Err(malformed(
                cid,
                format!("HAMT fanout {fanout} is not supported"),
            ));
        }
        Ok(Self {
            width: format!("{:X}", fanout - 1).len(),
            bits: fanout.trailing_zeros(),
        })
    }

    /// The bucket of `hash` at `depth`, or `None` once the 64 bits run out.
    fn bucket(&self, hash: u64, depth: u32) -> Option<u64> {
        let used = depth.checked_mul(self.bits)?;
        if used + self.bits > 64 {
            return None;
        }
        Some((hash << used) >> (64 - self.bits))
    }

    /// Splits a link name into its bucket prefix and entry name; an empty
    /// entry name marks a sub-shard.
    pub(crate) fn split<'a>(
        &self,
        cid: &Cid,
        link: &'a PbLink,
    ) -> Result<(&'a str, &'a str), ExportError> {
        let name = link.name.as_deref().unwrap_or("");
        if name.len() < self.width || !name.is_char_boundary(self.width) {
            return Err(malformed(
                cid,
                format!("HAMT link name {name:?} has no prefix"),
            ));
        }
        Ok(name.split_at(self.width))
    }
}

/// Decodes a HAMT sub-shard, checking it has the parent's shape.
fn load_shard(store: &dyn Blockstore, cid: &Cid) -> Result<(PbNode, UnixfsData), ExportError> {
    match decode(cid, load(store, cid)?)? {
        Node::Pb(node, fs) if fs.kind == DataType::HamtShard => Ok((node, fs)),
        _ => Err(malformed(
            cid,
            "HAMT link without a name points at a non-shard",
        )),
    }
}

/// Looks `name` up in a HAMT by its hash, pushing the sub-shards read.
///
/// If the hash-directed lookup misses, every shard is scanned before
/// answering "not found": a directory written with another hash layout is
/// then still served correctly, only slower.
pub(crate) fn find(
    store: &dyn Blockstore,
    root: &Cid,
    root_node: &PbNode,
    root_fs: &UnixfsData,
    name: &str,
    path: &mut Vec<Cid>,
) -> Result<Option<Cid>, ExportError> {
    let hash = u64::from_be_bytes(name_hash(name.as_bytes()));
    let mark = path.len();
    // The sub-shard being searched; `None` while at the root.
    let mut shard_node: Option<(Cid, PbNode, UnixfsData)> = None;
    for depth in 0.. {
        let (cid, node, fs) = match &shard_node {
            Some((c, n, f)) => (c, n, f),
            None => (root, root_node, root_fs),
        };
        let shard = Shard::of(cid, fs)?;
        let Some(bucket) = shard.bucket(hash, depth) else {
            break;
        };
        let prefix = format!("{bucket:0w$X}", w = shard.width);
        let mut next = None;
        for link in &node.links {
            let (p, entry) = shard.split(cid, link)?;
            if p != prefix {
                continue;
            }
            if entry.is_empty() {
                next = Some(link_cid(cid, link)?);
                break;
            }
            if entry == name {
                return Ok(Some(link_cid(cid, link)?));
            }
        }
        let Some(child) = next else {
            break;
        };
        let (n, f) = load_shard(store, &child)?;
        path.push(child);
        shard_node = Some((child, n, f));
    }
    path.truncate(mark);
    scan(store, root, root_node, root_fs, name, path)
}

/// Depth-first search of every shard for `name`; on success `path` holds the
/// sub-shards from the root to the entry.
fn scan(
    store: &dyn Blockstore,
    cid: &Cid,
    node: &PbNode,
    fs: &UnixfsData,
    name: &str,
    path: &mut Vec<Cid>,
) -> Result<Option<Cid>, ExportError> {
    let shard = Shard::of(cid, fs)?;
    for link in &node.links {
        let (_, entry) = shard.split(cid, link)?;
        let child = link_cid(cid, link)?;
        if entry.is_empty() {
            let (n, f) = load_shard(store, &child)?;
            path.push(child);
            if let Some(found) = scan(store, &child, &n, &f, name, path)? {
                return Ok(Some(found));
            }
            path.pop();
        } else if entry == name {
            return Ok(Some(child));
        }
    }
    Ok(None)
}

/// Appends every entry of the HAMT at `cid` to `out`, in link order.
pub(crate) fn list(
    store: &dyn Blockstore,
    cid: &Cid,
    node: &PbNode,
    fs: &UnixfsData,
    out: &mut Vec<DirEntry>,
) -> Result<(), ExportError> {
    let shard = Shard::of(cid, fs)?;
    for link in &node.links {
        let (_, entry) = shard.split(cid, link)?;
        let child = link_cid(cid, link)?;
        if entry.is_empty() {
            let (n, f) = load_shard(store, &child)?;
            list(store, &child, &n, &f, out)?;
        } else {
            out.push(DirEntry {
                name: entry.to_owned(),
                cid: child,
                size: link.tsize.unwrap_or(0),
            });
        }
    }
    Ok(())
}
