//! The blocks of a DAG in the order a CAR carries them.
//!
//! Implements the trustless gateway's CAR selection: first the blocks that
//! prove the path (from [`Resolved::path_blocks`]), then the DAG at its end
//! as `dag-scope` and `entity-bytes` choose, depth-first in pre-order
//! (`order=dfs`), each block once unless duplicates are asked for, identity
//! CIDs never (their bytes are in the parent). `meshcast dag export` uses the
//! same walk with [`DagScope::All`].

use super::{decode, file_len, kind_of, link_cid, load, ExportError, Node, NodeKind, Resolved};
use crate::store::{Block, BlockRead, IDENTITY};
use crate::unixfs::hamt::lookup::Shard;
use cid::Cid;
use std::collections::{HashSet, VecDeque};
use std::str::FromStr;
use thiserror::Error;

/// Which blocks below the end of the path a CAR carries (`dag-scope`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DagScope {
    /// The whole DAG.
    #[default]
    All,
    /// What is needed to read the entity: a whole file, a directory's own
    /// block (and a HAMT's shards), or the block itself for anything else.
    Entity,
    /// Only the block at the end of the path.
    Block,
}

impl DagScope {
    /// The spelling in query strings.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::All => "all",
            Self::Entity => "entity",
            Self::Block => "block",
        }
    }
}

/// A `dag-scope` or `entity-bytes` value that does not parse.
#[derive(Debug, Error, PartialEq, Eq)]
#[error("{0}")]
pub struct ParseError(String);

impl FromStr for DagScope {
    type Err = ParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "all" => Ok(Self::All),
            "entity" => Ok(Self::Entity),
            "block" => Ok(Self::Block),
            _ => Err(ParseError(format!(
                "dag-scope {s:?} is not one of all, entity, block"
            ))),
        }
    }
}

/// An `entity-bytes=from:to` range: inclusive, negative values count from
/// the end of the file, `to` of `None` (`*`) is the last byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EntityBytes {
    /// First byte.
    pub from: i64,
    /// Last byte, or `None` for the end.
    pub to: Option<i64>,
}

impl EntityBytes {
    /// The half-open byte range of a file of `size` bytes, or `None` when it
    /// selects nothing.
    pub fn resolve(self, size: u64) -> Option<(u64, u64)> {
        let size = i128::from(size);
        let abs = |v: i64| {
            let v = i128::from(v);
            if v < 0 {
                size + v
            } else {
                v
            }
        };
        let from = abs(self.from).max(0);
        let to = self.to.map_or(size - 1, abs).min(size - 1);
        (from <= to).then(|| (from as u64, to as u64 + 1))
    }
}

impl std::fmt::Display for EntityBytes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.to {
            Some(to) => write!(f, "{}:{to}", self.from),
            None => write!(f, "{}:*", self.from),
        }
    }
}

impl FromStr for EntityBytes {
    type Err = ParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = |why: &str| {
            ParseError(format!(
                "entity-bytes {s:?} {why}; use from:to, e.g. 0:1023 or -1024:*"
            ))
        };
        let (from, to) = s.split_once(':').ok_or_else(|| bad("has no ':'"))?;
        let from = from.parse().map_err(|_| bad("has a bad 'from'"))?;
        let to = match to {
            "*" => None,
            t => Some(t.parse().map_err(|_| bad("has a bad 'to'"))?),
        };
        if let (f, Some(t)) = (from, to) {
            if f >= 0 && t >= 0 && f > t {
                return Err(bad("ends before it starts"));
            }
        }
        Ok(Self { from, to })
    }
}

/// What to do with a block popped off the walk's stack.
#[derive(Debug, Clone, Copy)]
enum Visit {
    /// Emit it and everything below it.
    All(Cid),
    /// Emit it, then what the scope `Entity` asks below it.
    Entity(Cid, Option<EntityBytes>),
    /// Emit only it.
    Block(Cid),
    /// A HAMT sub-shard: emit it and its sub-shards, not the entries.
    Shard(Cid),
    /// Part of a file: emit it and its children overlapping `[start, end)`;
    /// it starts at file offset `offset`, and `whole` when the range covers
    /// all of it.
    Range {
        cid: Cid,
        offset: u64,
        start: u64,
        end: u64,
        whole: bool,
    },
}

/// Yields the blocks of a CAR response, one block read per step.
///
/// The dedupe sets grow with the blocks emitted (a CID each); the stack is
/// bounded by the DAG's depth times its fanout.
///
/// Work stays in proportion to what is sent, however a DAG repeats
/// itself: without duplicates a block's subtree is entered once, except
/// for a range's edges (a range may need another part of a repeated
/// subtree than it sent before, but only the two blocks holding its ends
/// at each level are partly covered); with duplicates every block entered
/// is sent, so the client's reading paces the walk, as it does the bytes
/// of a large file. A HAMT linking one sub-shard twice (a valid one never
/// does) is malformed, as in `unixfs::hamt::lookup`.
#[derive(Debug)]
pub struct DagWalk {
    path: VecDeque<Cid>,
    stack: Vec<Visit>,
    seen: HashSet<Cid>,
    /// Blocks of a file a range covered whole: all below them was sent.
    whole: HashSet<Cid>,
    /// HAMT sub-shards pushed.
    shards: HashSet<Cid>,
    dups: bool,
}

impl DagWalk {
    /// The walk for a resolved path under `scope`; `bytes` implies
    /// [`DagScope::Entity`]. With `dups` a block is sent every time the walk
    /// meets it.
    pub fn new(
        resolved: &Resolved,
        scope: DagScope,
        bytes: Option<EntityBytes>,
        dups: bool,
    ) -> Self {
        let end = resolved.cid;
        let first = match (scope, bytes) {
            (_, Some(b)) => Visit::Entity(end, Some(b)),
            (DagScope::All, None) => Visit::All(end),
            (DagScope::Entity, None) => Visit::Entity(end, None),
            (DagScope::Block, None) => Visit::Block(end),
        };
        Self {
            path: resolved.path_blocks.iter().copied().collect(),
            stack: vec![first],
            seen: HashSet::new(),
            whole: HashSet::new(),
            shards: HashSet::new(),
            dups,
        }
    }

    /// Every block of the DAG under `root` (`meshcast dag export`).
    pub fn all(root: Cid) -> Self {
        let resolved = Resolved {
            cid: root,
            roots: vec![root],
            path_blocks: Vec::new(),
        };
        Self::new(&resolved, DagScope::All, None, false)
    }

    /// The next block, or `None` when the walk is done. A missing block
    /// ([`ExportError::BlockNotFound`]) leaves the walk where it was, so it
    /// goes on once the block is fetched; after any other error the walk is
    /// finished.
    pub fn next_block(&mut self, store: &dyn BlockRead) -> Result<Option<Block>, ExportError> {
        let r = self.step(store);
        if matches!(r, Err(ref e) if !matches!(e, ExportError::BlockNotFound { .. })) {
            self.path.clear();
            self.stack.clear();
        }
        r
    }

    /// The rest of the walk as an iterator over `store`.
    pub fn iter(
        self,
        store: &dyn BlockRead,
    ) -> impl Iterator<Item = Result<Block, ExportError>> + '_ {
        let mut this = self;
        std::iter::from_fn(move || this.next_block(store).transpose())
    }

    /// Loads `cid`, marked as seen when `new`; on failure the mark is
    /// taken back, so stepping again after a fetch finds it unseen.
    fn load_marked(
        &mut self,
        store: &dyn BlockRead,
        cid: &Cid,
        new: bool,
    ) -> Result<bytes::Bytes, ExportError> {
        load(store, cid).inspect_err(|_| {
            if new {
                self.seen.remove(cid);
            }
        })
    }

    fn step(&mut self, store: &dyn BlockRead) -> Result<Option<Block>, ExportError> {
        while let Some(cid) = self.path.pop_front() {
            if cid.hash().code() == IDENTITY {
                continue;
            }
            let new = self.seen.insert(cid);
            if new || self.dups {
                let data = self
                    .load_marked(store, &cid, new)
                    .inspect_err(|_| self.path.push_front(cid))?;
                return Ok(Some(Block { cid, data }));
            }
        }
        while let Some(visit) = self.stack.pop() {
            let (cid, descend) = match visit {
                Visit::All(c) | Visit::Shard(c) | Visit::Block(c) | Visit::Entity(c, _) => {
                    (c, true)
                }
                // A range may need other parts of a block's subtree than an
                // earlier visit sent, so repeated range blocks are still
                // entered, unless an earlier visit covered all of the block.
                Visit::Range { cid, whole, .. } => {
                    if whole && !self.dups && self.whole.contains(&cid) {
                        continue;
                    }
                    (cid, false)
                }
            };
            // Sent if not sent before, or duplicates are on.
            let new = self.seen.insert(cid);
            let fresh = new || self.dups;
            if !fresh && descend {
                continue;
            }
            let data = match self.load_marked(store, &cid, new) {
                Ok(data) => data,
                Err(e) => {
                    self.stack.push(visit);
                    return Err(e);
                }
            };
            self.push_children(&visit, &data)?;
            // Marked once entered: the stack pops everything pushed below
            // it before any later visit of the same block.
            if let Visit::Range { whole: true, .. } = visit {
                self.whole.insert(cid);
            }
            if fresh && cid.hash().code() != IDENTITY {
                return Ok(Some(Block { cid, data }));
            }
        }
        Ok(None)
    }

    /// Pushes what `visit` asks for below the block `data`, in reverse so
    /// that children pop in link order.
    fn push_children(&mut self, visit: &Visit, data: &bytes::Bytes) -> Result<(), ExportError> {
        let mark = self.stack.len();
        match *visit {
            Visit::Block(_) => {}
            Visit::All(cid) => {
                for c in crate::store::links(&cid, data)? {
                    self.stack.push(Visit::All(c));
                }
            }
            Visit::Entity(cid, bytes) => {
                let (node, fs) = match decode(&cid, data.clone()) {
                    Ok(Node::Pb(node, fs)) => (node, fs),
                    // Raw blocks and other codecs: the block is the entity.
                    Ok(Node::Raw(_)) | Err(ExportError::NotUnixfs { .. }) => return Ok(()),
                    Err(e) => return Err(e),
                };
                match kind_of(&cid, &fs)? {
                    NodeKind::File => match bytes {
                        None => {
                            for l in &node.links {
                                self.stack.push(Visit::All(link_cid(&cid, l)?));
                            }
                        }
                        Some(b) => {
                            let size = file_len(&cid, &node, &fs)?;
                            if let Some((start, end)) = b.resolve(size) {
                                self.push_range(cid, &node, &fs, 0, start, end)?;
                            }
                        }
                    },
                    NodeKind::HamtDirectory => self.push_shards(&cid, &node, &fs)?,
                    _ => {}
                }
            }
            Visit::Shard(cid) => {
                if let Node::Pb(node, fs) = decode(&cid, data.clone())? {
                    self.push_shards(&cid, &node, &fs)?;
                }
            }
            Visit::Range {
                cid,
                offset,
                start,
                end,
                ..
            } => {
                if let Node::Pb(node, fs) = decode(&cid, data.clone())? {
                    file_len(&cid, &node, &fs)?;
                    self.push_range(cid, &node, &fs, offset, start, end)?;
                }
            }
        }
        self.stack[mark..].reverse();
        Ok(())
    }

    fn push_shards(
        &mut self,
        cid: &Cid,
        node: &crate::unixfs::pb::PbNode,
        fs: &crate::unixfs::pb::UnixfsData,
    ) -> Result<(), ExportError> {
        let shard = Shard::of(cid, fs)?;
        for l in &node.links {
            if shard.split(cid, l)?.1.is_empty() {
                let child = link_cid(cid, l)?;
                if !self.shards.insert(child) {
                    return Err(super::malformed(
                        cid,
                        format!("HAMT links the sub-shard {child} a second time"),
                    ));
                }
                self.stack.push(Visit::Shard(child));
            }
        }
        Ok(())
    }

    fn push_range(
        &mut self,
        cid: Cid,
        node: &crate::unixfs::pb::PbNode,
        fs: &crate::unixfs::pb::UnixfsData,
        offset: u64,
        start: u64,
        end: u64,
    ) -> Result<(), ExportError> {
        let mut at = offset + fs.data.as_ref().map_or(0, Vec::len) as u64;
        for (l, size) in node.links.iter().zip(&fs.blocksizes) {
            if at < end && at.saturating_add(*size) > start {
                self.stack.push(Visit::Range {
                    cid: link_cid(&cid, l)?,
                    offset: at,
                    start,
                    end,
                    whole: start <= at && at.saturating_add(*size) <= end,
                });
            }
            at = at.saturating_add(*size);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::testdag::TestDag;
    use super::super::{resolve, Resolved};
    use super::*;
    use crate::store::{Blockstore, Multihash, RAW};

    fn cids(t: &TestDag, walk: DagWalk) -> Vec<Cid> {
        walk.iter(&*t.store).map(|b| b.unwrap().cid).collect()
    }

    fn at(cid: Cid) -> Resolved {
        Resolved {
            cid,
            roots: vec![cid],
            path_blocks: Vec::new(),
        }
    }

    #[test]
    fn parses_params() {
        assert_eq!("all".parse(), Ok(DagScope::All));
        assert!("some".parse::<DagScope>().is_err());
        let e: EntityBytes = "-1024:*".parse().unwrap();
        assert_eq!(
            e,
            EntityBytes {
                from: -1024,
                to: None
            }
        );
        assert_eq!(e.to_string(), "-1024:*");
        assert_eq!("499:-1000".parse::<EntityBytes>().unwrap().to, Some(-1000));
        assert!("5:2".parse::<EntityBytes>().is_err());
        assert!("5".parse::<EntityBytes>().is_err());
        assert!("a:*".parse::<EntityBytes>().is_err());
    }

    #[test]
    fn entity_bytes_resolve_against_the_size() {
        let r = |s: &str, size| s.parse::<EntityBytes>().unwrap().resolve(size);
        assert_eq!(r("0:*", 100), Some((0, 100)));
        assert_eq!(r("10:19", 100), Some((10, 20)));
        assert_eq!(r("-10:*", 100), Some((90, 100)));
        assert_eq!(r("-1000:*", 100), Some((0, 100)));
        assert_eq!(r("10:-11", 100), Some((10, 90)));
        assert_eq!(r("50:500", 100), Some((50, 100)));
        assert_eq!(r("100:*", 100), None);
        assert_eq!(r("0:*", 0), None);
        assert_eq!(r("60:-50", 100), None);
    }

    #[test]
    fn all_is_dfs_preorder_without_duplicates() {
        let t = TestDag::new();
        let a = t.raw(b"aaaa");
        let b = t.raw(b"bbbb");
        let inner = t.file(b"", &[(a, 4), (b, 4)]);
        // `a` and `inner` appear twice.
        let file = t.file(b"", &[(inner, 8), (a, 4), (inner, 8)]);
        let dir = t.dir(&[("f", file), ("g", a)]);
        assert_eq!(cids(&t, DagWalk::all(dir)), vec![dir, file, inner, a, b]);
        let dups = DagWalk::new(&at(dir), DagScope::All, None, true);
        assert_eq!(
            cids(&t, dups),
            vec![dir, file, inner, a, b, a, inner, a, b, a]
        );
    }

    #[test]
    fn identity_blocks_are_never_sent() {
        let t = TestDag::new();
        let id = Cid::new_v1(RAW, Multihash::wrap(IDENTITY, b"hi").unwrap());
        let a = t.raw(b"a");
        let file = t.file(b"", &[(id, 2), (a, 1)]);
        assert_eq!(cids(&t, DagWalk::all(file)), vec![file, a]);
        assert_eq!(cids(&t, DagWalk::all(id)), Vec::<Cid>::new());
    }

    #[test]
    fn scopes() {
        let t = TestDag::new();
        let leaves: Vec<(Cid, u64)> = (0..4u8).map(|i| (t.raw(&[i; 10]), 10)).collect();
        let file = t.file(b"", &leaves);
        let other = t.raw(b"other");
        let sub = t.dir(&[("o", other)]);
        let dir = t.dir(&[("f", file), ("sub", sub)]);
        let r = resolve(&*t.store, &dir, &["f"]).unwrap();
        let walk = |scope, bytes| cids(&t, DagWalk::new(&r, scope, bytes, false));
        let all: Vec<Cid> = [dir, file]
            .into_iter()
            .chain(leaves.iter().map(|l| l.0))
            .collect();
        assert_eq!(walk(DagScope::All, None), all);
        assert_eq!(walk(DagScope::Entity, None), all);
        assert_eq!(walk(DagScope::Block, None), vec![dir, file]);
        let bytes = |s: &str| Some(s.parse().unwrap());
        assert_eq!(
            walk(DagScope::All, bytes("12:25")),
            vec![dir, file, leaves[1].0, leaves[2].0]
        );
        assert_eq!(
            walk(DagScope::All, bytes("-1:*")),
            vec![dir, file, leaves[3].0]
        );
        assert_eq!(walk(DagScope::All, bytes("40:*")), vec![dir, file]);
        // Entity of a directory is its own block; a range is ignored there.
        let root = resolve::<&str>(&*t.store, &dir, &[]).unwrap();
        let d = |scope, bytes| cids(&t, DagWalk::new(&root, scope, bytes, false));
        assert_eq!(d(DagScope::Entity, None), vec![dir]);
        assert_eq!(d(DagScope::Entity, bytes("0:10")), vec![dir]);
        assert_eq!(d(DagScope::All, None).len(), 8);
    }

    #[test]
    fn hamt_entity_carries_the_shards_only() {
        let t = TestDag::new();
        let names: Vec<String> = (0..400).map(|i| format!("x{i}")).collect();
        let entries: Vec<(&str, Cid)> = names
            .iter()
            .map(|n| (n.as_str(), t.raw(n.as_bytes())))
            .collect();
        let root = t.hamt(&entries, 256);
        let blocks = cids(&t, DagWalk::new(&at(root), DagScope::Entity, None, false));
        assert_eq!(blocks[0], root);
        assert!(blocks.len() > 1, "400 names need sub-shards");
        for c in &blocks {
            assert_eq!(c.codec(), crate::store::DAG_PB);
        }
        assert_eq!(cids(&t, DagWalk::all(root)).len(), blocks.len() + 400);
        // The path to an entry carries the shards it passed.
        let r = resolve(&*t.store, &root, &["x7"]).unwrap();
        let got = cids(&t, DagWalk::new(&r, DagScope::Block, None, false));
        assert_eq!(got.len(), r.path_blocks.len() + 1);
        assert_eq!(got.last(), Some(&entries[7].1));
    }

    #[test]
    fn a_range_over_repeated_subtrees_still_sends_what_it_needs() {
        let t = TestDag::new();
        let a = t.raw(b"aaaa");
        let b = t.raw(b"bbbb");
        let inner = t.file(b"", &[(a, 4), (b, 4)]);
        let file = t.file(b"", &[(inner, 8), (inner, 8)]);
        // Bytes 2..=13: `a` of the first copy, then `b` of the second.
        let got = cids(
            &t,
            DagWalk::new(
                &at(file),
                DagScope::Entity,
                Some("2:13".parse().unwrap()),
                false,
            ),
        );
        assert_eq!(got, vec![file, inner, a, b]);
    }

    /// A file of `2^levels` copies of one byte from `levels + 1` blocks:
    /// each level links the one below twice.
    fn doubling_file(t: &TestDag, levels: u32) -> Cid {
        let mut cur = t.raw(b"x");
        for level in 0..levels {
            let size = 1u64 << level;
            cur = t.file(b"", &[(cur, size), (cur, size)]);
        }
        cur
    }

    #[test]
    fn a_range_over_a_file_that_repeats_itself_is_walked_in_proportion() {
        let t = TestDag::new();
        // 2^50 bytes: a walk that entered every copy would never end.
        let file = doubling_file(&t, 50);
        let started = std::time::Instant::now();
        for range in ["0:*", "1:-2", "12345:1125899906842622", "-100:*"] {
            let walk = DagWalk::new(
                &at(file),
                DagScope::Entity,
                Some(range.parse().unwrap()),
                false,
            );
            let got = cids(&t, walk);
            assert_eq!(got.len(), 51, "{range}: every block once");
        }
        assert!(started.elapsed() < std::time::Duration::from_secs(5));
        // With duplicates every block entered is sent: the client paces it.
        let mut dups = DagWalk::new(
            &at(file),
            DagScope::Entity,
            Some("0:*".parse().unwrap()),
            true,
        );
        for _ in 0..1000 {
            assert!(dups.next_block(&*t.store).unwrap().is_some());
        }
    }

    #[test]
    fn a_hamt_that_links_a_sub_shard_twice_is_malformed() {
        let t = TestDag::new();
        // A fanout-256 shard with `links` (slot, link name, CID).
        let shard = |links: &[(usize, &str, Cid)]| {
            use crate::unixfs::pb::{DataType, PbLink, PbNode, UnixfsData};
            let mut d = UnixfsData::new(DataType::HamtShard);
            d.data = Some(crate::unixfs::hamt::encode_bitfield(
                links.iter().map(|l| l.0),
                256,
            ));
            d.hash_type = Some(crate::unixfs::hamt::MURMUR3_X64_64);
            d.fanout = Some(256);
            let node = PbNode {
                links: links
                    .iter()
                    .map(|(_, name, cid)| PbLink {
                        hash: cid.to_bytes(),
                        name: Some((*name).to_owned()),
                        tsize: Some(1),
                    })
                    .collect(),
                data: Some(d.encode()),
            };
            t.put(crate::store::Block::new(
                cid::Version::V1,
                crate::store::DAG_PB,
                node.encode(),
            ))
        };
        let entry = t.raw(b"entry");
        let mut cur = shard(&[(0, "00e", entry)]);
        for _ in 0..60 {
            cur = shard(&[(0, "00", cur), (1, "01", cur)]);
        }
        let started = std::time::Instant::now();
        for dups in [false, true] {
            let walk = DagWalk::new(&at(cur), DagScope::Entity, None, dups);
            let r: Result<Vec<_>, _> = walk.iter(&*t.store).collect();
            assert!(
                matches!(r, Err(ExportError::Malformed { .. })),
                "dups {dups}"
            );
        }
        assert!(started.elapsed() < std::time::Duration::from_secs(5));
    }

    #[test]
    fn a_missing_block_pauses_the_walk_until_it_is_there() {
        let t = TestDag::new();
        let block = |d: &[u8]| crate::store::Block::new(cid::Version::V1, RAW, d.to_vec());
        let (dir, late) = (block(b"a directory on the path"), block(b"late"));
        let present = t.raw(b"present");
        let file = t.file(b"", &[(late.cid, 4), (present, 7)]);
        let resolved = Resolved {
            cid: file,
            roots: vec![dir.cid],
            path_blocks: vec![dir.cid],
        };
        for dups in [false, true] {
            let mut w = DagWalk::new(&resolved, DagScope::All, None, dups);
            let mut got = Vec::new();
            // Each missing block gives the same error until it is stored,
            // then the walk goes on as if nothing happened.
            for missing in [&dir, &late] {
                for _ in 0..2 {
                    assert!(matches!(
                        w.next_block(&*t.store),
                        Err(ExportError::BlockNotFound { cid }) if cid == missing.cid
                    ));
                }
                t.put(missing.clone());
                while let Ok(Some(b)) = w.next_block(&*t.store) {
                    got.push(b.cid);
                }
            }
            assert_eq!(got, vec![dir.cid, file, late.cid, present]);
            t.store.delete(dir.cid.hash()).unwrap();
            t.store.delete(late.cid.hash()).unwrap();
        }
        // Other errors end it.
        let junk = t.put(crate::store::Block::new(
            cid::Version::V1,
            crate::store::DAG_PB,
            vec![0xff],
        ));
        let mut w = DagWalk::all(junk);
        assert!(w.next_block(&*t.store).is_err());
        assert!(w.next_block(&*t.store).unwrap().is_none());
    }
}
