//! Reading a HAMT-sharded directory: one name, or every entry.
//!
//! Flow: [`find`] follows the name's hash from the root shard down, one
//! sub-shard per level, and when that misses scans every shard depth-first
//! (a directory laid out with another hash is then still served, only
//! slower); [`list`] walks every shard depth-first in link order. Shards come
//! from the network, so both walks keep their own stack instead of the
//! thread's and stop at [`MAX_DEPTH`] levels below the root: no valid HAMT
//! is deeper (even a fanout of 2 runs out of the 64 hash bits there), and a
//! crafted one cannot make a walk overflow the stack. A walk also enters
//! each sub-shard once: entries sit where their hash bits put them, so no
//! valid HAMT links one sub-shard from two slots, while a crafted one that
//! does so at every level would be walked once per path (2^60 visits for
//! 60 levels of two links each); a second link to a sub-shard is malformed.

use super::{name_hash, MURMUR3_X64_64};
use crate::store::BlockRead;
use crate::unixfs::export::{decode, link_cid, load, malformed, DirEntry, ExportError, Node};
use crate::unixfs::pb::{DataType, PbLink, PbNode, UnixfsData};
use cid::Cid;
use std::borrow::Cow;
use std::collections::HashSet;

/// Levels of sub-shards below the root a walk enters at most.
pub const MAX_DEPTH: usize = 64;

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
fn load_shard(store: &dyn BlockRead, cid: &Cid) -> Result<(PbNode, UnixfsData), ExportError> {
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
    store: &dyn BlockRead,
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
    // Ends within `MAX_DEPTH` levels: each takes bits of the 64-bit hash.
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
    store: &dyn BlockRead,
    cid: &Cid,
    node: &PbNode,
    fs: &UnixfsData,
    name: &str,
    path: &mut Vec<Cid>,
) -> Result<Option<Cid>, ExportError> {
    walk(store, cid, node, fs, path, |entry, _, _| entry == name)
}

/// Appends every entry of the HAMT at `cid` to `out`, in link order.
pub(crate) fn list(
    store: &dyn BlockRead,
    cid: &Cid,
    node: &PbNode,
    fs: &UnixfsData,
    out: &mut Vec<DirEntry>,
) -> Result<(), ExportError> {
    walk(
        store,
        cid,
        node,
        fs,
        &mut Vec::new(),
        |entry, child, link| {
            out.push(DirEntry {
                name: entry.to_owned(),
                cid: child,
                size: link.tsize.unwrap_or(0),
            });
            false
        },
    )?;
    Ok(())
}

/// A shard the walk is in, and the next of its links to look at.
struct Frame<'a> {
    cid: Cid,
    node: Cow<'a, PbNode>,
    shard: Shard,
    next: usize,
}

/// Visits the entries of the HAMT at `cid` depth-first, in link order,
/// until `stop` says so for one: that entry's CID is the answer, and `path`
/// holds the sub-shards from the root to it; otherwise `path` is left as it
/// was.
///
/// Past [`MAX_DEPTH`] levels of sub-shards the walk fails with
/// [`ExportError::TooDeep`], and at a second link to a sub-shard it has
/// entered with [`ExportError::Malformed`], so it reads each block once.
fn walk(
    store: &dyn BlockRead,
    cid: &Cid,
    node: &PbNode,
    fs: &UnixfsData,
    path: &mut Vec<Cid>,
    mut stop: impl FnMut(&str, Cid, &PbLink) -> bool,
) -> Result<Option<Cid>, ExportError> {
    let mut stack = vec![Frame {
        cid: *cid,
        node: Cow::Borrowed(node),
        shard: Shard::of(cid, fs)?,
        next: 0,
    }];
    let mut entered = HashSet::from([*cid]);
    while let Some(top) = stack.last_mut() {
        let Some(link) = top.node.links.get(top.next) else {
            stack.pop();
            // Every frame but the root's put its shard on the path.
            if !stack.is_empty() {
                path.pop();
            }
            continue;
        };
        top.next += 1;
        let (_, entry) = top.shard.split(&top.cid, link)?;
        let (parent, child) = (top.cid, link_cid(&top.cid, link)?);
        if !entry.is_empty() {
            if stop(entry, child, link) {
                return Ok(Some(child));
            }
            continue;
        }
        if stack.len() > MAX_DEPTH {
            return Err(ExportError::TooDeep {
                cid: child,
                max: MAX_DEPTH,
            });
        }
        if !entered.insert(child) {
            return Err(malformed(
                &parent,
                format!("HAMT links the sub-shard {child} a second time"),
            ));
        }
        let (n, f) = load_shard(store, &child)?;
        let shard = Shard::of(&child, &f)?;
        path.push(child);
        stack.push(Frame {
            cid: child,
            node: Cow::Owned(n),
            shard,
            next: 0,
        });
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{Block, DAG_PB};
    use crate::unixfs::export::testdag::TestDag;
    use crate::unixfs::export::{list, resolve};
    use crate::unixfs::hamt::{encode_bitfield, MURMUR3_X64_64};

    /// A fanout-256 shard node with `links` (slot, link name, CID) as given,
    /// wherever the hash would put them.
    fn shard(t: &TestDag, links: &[(usize, String, Cid)]) -> Cid {
        let mut d = UnixfsData::new(DataType::HamtShard);
        d.data = Some(encode_bitfield(links.iter().map(|l| l.0), 256));
        d.hash_type = Some(MURMUR3_X64_64);
        d.fanout = Some(256);
        let node = PbNode {
            links: links
                .iter()
                .map(|(_, name, cid)| PbLink {
                    hash: cid.to_bytes(),
                    name: Some(name.clone()),
                    tsize: Some(1),
                })
                .collect(),
            data: Some(d.encode()),
        };
        t.put(Block::new(cid::Version::V1, DAG_PB, node.encode()))
    }

    /// A root over `levels` sub-shards, each below the one before, the last
    /// holding the entry `deep` (the returned CID). Each shard links its
    /// child from `fan` slots, so the DAG looks cyclic to a walker that does
    /// not count levels.
    fn chain(t: &TestDag, levels: usize, fan: usize) -> (Cid, Cid) {
        let entry = t.raw(b"at the bottom");
        let mut cur = shard(t, &[(0, "00deep".into(), entry)]);
        for _ in 0..levels {
            let links: Vec<_> = (0..fan).map(|s| (s, format!("{s:02X}"), cur)).collect();
            cur = shard(t, &links);
        }
        (cur, entry)
    }

    #[test]
    fn a_hamt_as_deep_as_the_cap_is_read() {
        let t = TestDag::new();
        let (root, entry) = chain(&t, MAX_DEPTH, 1);
        let r = resolve(&*t.store, &root, &["deep"]).unwrap();
        assert_eq!(r.cid, entry);
        assert_eq!(
            r.path_blocks.len(),
            1 + MAX_DEPTH,
            "root and every sub-shard"
        );
        let listed = list(&*t.store, &root).unwrap();
        assert_eq!(listed.len(), 1);
        assert_eq!((listed[0].name.as_str(), listed[0].cid), ("deep", entry));
    }

    #[test]
    fn a_hamt_deeper_than_the_cap_is_an_error() {
        let t = TestDag::new();
        let (root, _) = chain(&t, MAX_DEPTH + 1, 1);
        assert!(matches!(
            resolve(&*t.store, &root, &["deep"]),
            Err(ExportError::TooDeep { max: MAX_DEPTH, .. })
        ));
        assert!(matches!(
            list(&*t.store, &root),
            Err(ExportError::TooDeep { max: MAX_DEPTH, .. })
        ));
    }

    #[test]
    fn a_sub_shard_linked_twice_is_malformed_not_walked_once_per_path() {
        let t = TestDag::new();
        // Within the depth cap, two links per level: 2^60 paths to walk
        // for a walk that entered a shard once per link.
        let (root, entry) = chain(&t, 60, 2);
        let started = std::time::Instant::now();
        assert!(matches!(
            list(&*t.store, &root),
            Err(ExportError::Malformed { .. })
        ));
        assert!(matches!(
            resolve(&*t.store, &root, &["absent"]),
            Err(ExportError::Malformed { .. })
        ));
        // The first path down reaches the entry before any second link.
        assert_eq!(resolve(&*t.store, &root, &["deep"]).unwrap().cid, entry);
        assert!(started.elapsed() < std::time::Duration::from_secs(5));

        // Two parents sharing a child are caught as well.
        let leaf = shard(&t, &[(0, "00deep".into(), entry)]);
        let a = shard(&t, &[(0, "00".into(), leaf)]);
        let other = t.raw(b"another");
        let b = shard(&t, &[(0, "00".into(), leaf), (1, "01other".into(), other)]);
        let root = shard(&t, &[(0, "00".into(), a), (1, "01".into(), b)]);
        assert!(matches!(
            list(&*t.store, &root),
            Err(ExportError::Malformed { .. })
        ));
    }

    #[test]
    fn a_crafted_hamt_far_past_the_cap_ends_in_an_error_not_a_stack_overflow() {
        let t = TestDag::new();
        // Far past the cap, with every shard linking its child twice: a walk
        // that recursed without a cap would run out of stack before the end.
        let (root, _) = chain(&t, 10_000, 2);
        assert!(matches!(
            resolve(&*t.store, &root, &["deep"]),
            Err(ExportError::TooDeep { max: MAX_DEPTH, .. })
        ));
        assert!(matches!(
            list(&*t.store, &root),
            Err(ExportError::TooDeep { max: MAX_DEPTH, .. })
        ));
        assert!(matches!(
            resolve(&*t.store, &root, &["absent"]),
            Err(ExportError::TooDeep { .. })
        ));
    }
}
