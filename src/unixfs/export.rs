//! UnixFS exporter: DAGs back into bytes, ranges and listings.
//!
//! Flow: [`resolve`] walks a root CID and path segments through plain and
//! HAMT-sharded directories to the CID at the end of the path, recording the
//! blocks it read (a CAR response must carry them); [`stat`] and [`list`]
//! describe what is there; [`FileRange`] reads a byte range of a file one
//! block at a time; [`walk::DagWalk`] yields the blocks of a DAG for a CAR.
//!
//! Everything here is blocking, pure logic over a [`BlockRead`]. The readers
//! do not hold the store: each step takes it as an argument, so an async
//! caller can run one block read per `spawn_blocking` and wait for a slow
//! client without holding a thread.

pub mod to_dir;
pub mod walk;

#[cfg(test)]
pub(crate) mod testdag;

use super::hamt;
use super::pb::{DataType, PbError, PbLink, PbNode, UnixfsData};
use crate::store::{BlockRead, StoreError, DAG_PB, IDENTITY, RAW};
use bytes::Bytes;
use cid::Cid;
use thiserror::Error;

pub use to_dir::{write_to_dir, ToDirError};

/// Why a DAG could not be read.
#[derive(Debug, Error)]
pub enum ExportError {
    /// A block the walk needs is not in the store.
    #[error("block {cid} is not in the store")]
    BlockNotFound {
        /// The missing block.
        cid: Cid,
    },
    /// A path segment names nothing in its directory.
    #[error("no link named {name:?} in directory {dir}")]
    PathNotFound {
        /// The directory searched (boxed to keep the error small).
        dir: Box<Cid>,
        /// The segment that was not found.
        name: String,
        /// Index of the segment in the path.
        segment: usize,
    },
    /// A path continues below something that is not a directory.
    #[error("{cid} is a {kind}, so it has no entry {name:?}")]
    NotADirectory {
        /// The node the path tried to enter (boxed to keep the error small).
        cid: Box<Cid>,
        /// What it is.
        kind: NodeKind,
        /// The segment that could not be looked up.
        name: String,
        /// Index of the segment in the path.
        segment: usize,
    },
    /// Bytes were asked of something that is not a file.
    #[error("{cid} is a {kind}, not a file")]
    NotAFile {
        /// The node.
        cid: Cid,
        /// What it is.
        kind: NodeKind,
    },
    /// A listing was asked of something that is not a directory.
    #[error("{cid} is a {kind}, not a directory")]
    NotAList {
        /// The node.
        cid: Cid,
        /// What it is.
        kind: NodeKind,
    },
    /// A block whose codec is neither dag-pb nor raw.
    #[error("{cid} has codec 0x{codec:x}, which is not UnixFS")]
    NotUnixfs {
        /// The block.
        cid: Cid,
        /// Its multicodec.
        codec: u64,
    },
    /// A block that does not decode as the UnixFS it claims to be.
    #[error("block {cid} is malformed: {reason}")]
    Malformed {
        /// The bad block.
        cid: Cid,
        /// What is wrong with it.
        reason: String,
    },
    /// A DAG nests deeper than a walk follows (HAMT sub-shards: 64 levels,
    /// more than any valid one has).
    #[error("{cid} lies more than {max} levels deep; the DAG is malformed")]
    TooDeep {
        /// The node past the limit.
        cid: Cid,
        /// The levels a walk follows.
        max: usize,
    },
    /// The store failed (I/O or corruption).
    #[error(transparent)]
    Store(StoreError),
}

impl From<StoreError> for ExportError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound { cid } => Self::BlockNotFound { cid },
            StoreError::Malformed { cid, reason } => Self::Malformed { cid, reason },
            other => Self::Store(other),
        }
    }
}

pub(crate) fn malformed(cid: &Cid, reason: impl Into<String>) -> ExportError {
    ExportError::Malformed {
        cid: *cid,
        reason: reason.into(),
    }
}

/// What a UnixFS node is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeKind {
    /// A dag-pb UnixFS file (or legacy `Raw` node).
    File,
    /// A plain dag-pb directory.
    Directory,
    /// The root (or a sub-shard) of a HAMT-sharded directory.
    HamtDirectory,
    /// A symbolic link; its bytes are the target.
    Symlink,
    /// A block of the raw codec: its bytes are the content.
    Raw,
}

impl NodeKind {
    /// Whether the node lists entries.
    pub fn is_dir(self) -> bool {
        matches!(self, Self::Directory | Self::HamtDirectory)
    }
}

impl std::fmt::Display for NodeKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::File => "file",
            Self::Directory => "directory",
            Self::HamtDirectory => "HAMT-sharded directory",
            Self::Symlink => "symlink",
            Self::Raw => "raw block",
        })
    }
}

/// What [`stat`] reports about a node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stat {
    /// The node's CID.
    pub cid: Cid,
    /// What it is.
    pub kind: NodeKind,
    /// Content bytes of a file, raw block or symlink target; `None` for
    /// directories.
    pub size: Option<u64>,
    /// Bytes of the node's own block.
    pub block_size: u64,
}

impl Stat {
    /// Whether reads go through [`FileRange`].
    pub fn is_file(&self) -> bool {
        matches!(self.kind, NodeKind::File | NodeKind::Raw)
    }
}

/// One directory entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirEntry {
    /// The entry's name.
    pub name: String,
    /// The entry's CID.
    pub cid: Cid,
    /// The cumulative DAG size (`Tsize`) the link records: blocks, not file
    /// bytes, and 0 when absent. Reading it costs no child block.
    pub size: u64,
}

/// Where a path leads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    /// The CID at the end of the path.
    pub cid: Cid,
    /// One CID per logical path element: the root, then one per segment
    /// (what the gateway's `X-Ipfs-Roots` lists).
    pub roots: Vec<Cid>,
    /// Every block read to traverse the path (directories and HAMT
    /// sub-shards), in order, without the final CID; a CAR for the path
    /// carries these before the DAG at its end.
    pub path_blocks: Vec<Cid>,
}

impl Resolved {
    /// The empty path: `root` itself (what [`resolve`] finds for no
    /// segments, without reading anything).
    pub fn root(root: Cid) -> Self {
        Self {
            cid: root,
            roots: vec![root],
            path_blocks: Vec::new(),
        }
    }
}

/// Reads a block; identity CIDs carry their bytes inline.
pub(crate) fn load(store: &dyn BlockRead, cid: &Cid) -> Result<Bytes, ExportError> {
    if cid.hash().code() == IDENTITY {
        return Ok(Bytes::copy_from_slice(cid.hash().digest()));
    }
    store
        .get(cid)?
        .ok_or(ExportError::BlockNotFound { cid: *cid })
}

/// A decoded block.
pub(crate) enum Node {
    /// Raw codec: the bytes are the content.
    Raw(Bytes),
    /// A dag-pb node with its UnixFS data.
    Pb(PbNode, UnixfsData),
}

pub(crate) fn decode(cid: &Cid, data: Bytes) -> Result<Node, ExportError> {
    match cid.codec() {
        RAW => Ok(Node::Raw(data)),
        DAG_PB => {
            let node = PbNode::decode(&data).map_err(|e| malformed(cid, e.to_string()))?;
            let Some(d) = node.data.as_deref() else {
                return Err(malformed(cid, "dag-pb node has no UnixFS data"));
            };
            let fs = UnixfsData::decode(d).map_err(|e: PbError| malformed(cid, e.to_string()))?;
            Ok(Node::Pb(node, fs))
        }
        codec => Err(ExportError::NotUnixfs { cid: *cid, codec }),
    }
}

fn kind_of(cid: &Cid, fs: &UnixfsData) -> Result<NodeKind, ExportError> {
    Ok(match fs.kind {
        DataType::File | DataType::Raw => NodeKind::File,
        DataType::Directory => NodeKind::Directory,
        DataType::HamtShard => NodeKind::HamtDirectory,
        DataType::Symlink => NodeKind::Symlink,
        DataType::Metadata => {
            return Err(malformed(cid, "UnixFS Metadata nodes are not supported"))
        }
    })
}

/// The content length of a file node, checked against its `filesize`.
fn file_len(cid: &Cid, node: &PbNode, fs: &UnixfsData) -> Result<u64, ExportError> {
    if node.links.len() != fs.blocksizes.len() {
        return Err(malformed(
            cid,
            format!(
                "{} links but {} blocksizes",
                node.links.len(),
                fs.blocksizes.len()
            ),
        ));
    }
    let inline = fs.data.as_ref().map_or(0, Vec::len) as u64;
    let len = fs
        .blocksizes
        .iter()
        .try_fold(inline, |acc, b| acc.checked_add(*b))
        .ok_or_else(|| malformed(cid, "blocksizes overflow"))?;
    match fs.filesize {
        Some(s) if s != len => Err(malformed(
            cid,
            format!("filesize {s} but data and blocksizes add up to {len}"),
        )),
        _ => Ok(len),
    }
}

pub(crate) fn link_cid(parent: &Cid, link: &PbLink) -> Result<Cid, ExportError> {
    Cid::try_from(link.hash.as_slice()).map_err(|e| malformed(parent, format!("bad link CID: {e}")))
}

/// Describes the node at `cid`, reading only its own block.
pub fn stat(store: &dyn BlockRead, cid: &Cid) -> Result<Stat, ExportError> {
    if cid.codec() == RAW && cid.hash().code() != IDENTITY {
        // A raw block is its own content: its size is all there is to know,
        // and the store knows it without reading the block (the gateway's
        // hot path: every live segment is one raw block).
        let size = store
            .size(cid)?
            .ok_or(ExportError::BlockNotFound { cid: *cid })?;
        return Ok(Stat {
            cid: *cid,
            kind: NodeKind::Raw,
            size: Some(size),
            block_size: size,
        });
    }
    let data = load(store, cid)?;
    let block_size = data.len() as u64;
    let (kind, size) = match decode(cid, data)? {
        Node::Raw(b) => (NodeKind::Raw, Some(b.len() as u64)),
        Node::Pb(node, fs) => {
            let kind = kind_of(cid, &fs)?;
            let size = match kind {
                NodeKind::File => Some(file_len(cid, &node, &fs)?),
                NodeKind::Symlink => Some(fs.data.as_ref().map_or(0, Vec::len) as u64),
                _ => None,
            };
            (kind, size)
        }
    };
    Ok(Stat {
        cid: *cid,
        kind,
        size,
        block_size,
    })
}

/// The target of a symlink node.
pub fn symlink_target(store: &dyn BlockRead, cid: &Cid) -> Result<Bytes, ExportError> {
    match decode(cid, load(store, cid)?)? {
        Node::Pb(_, fs) if fs.kind == DataType::Symlink => Ok(fs.data.unwrap_or_default().into()),
        Node::Pb(_, fs) => Err(ExportError::NotAFile {
            cid: *cid,
            kind: kind_of(cid, &fs)?,
        }),
        Node::Raw(_) => Err(ExportError::NotAFile {
            cid: *cid,
            kind: NodeKind::Raw,
        }),
    }
}

/// Follows `segments` from `root` through plain and HAMT-sharded directories.
pub fn resolve<S: AsRef<str>>(
    store: &dyn BlockRead,
    root: &Cid,
    segments: &[S],
) -> Result<Resolved, ExportError> {
    let mut cur = *root;
    let mut roots = vec![cur];
    let mut path_blocks = Vec::new();
    for (i, seg) in segments.iter().enumerate() {
        let name = seg.as_ref();
        let not_dir = |kind| ExportError::NotADirectory {
            cid: Box::new(cur),
            kind,
            name: name.to_owned(),
            segment: i,
        };
        let (node, fs) = match decode(&cur, load(store, &cur)?)? {
            Node::Raw(_) => return Err(not_dir(NodeKind::Raw)),
            Node::Pb(node, fs) => (node, fs),
        };
        path_blocks.push(cur);
        let found = match kind_of(&cur, &fs)? {
            NodeKind::Directory => node
                .links
                .iter()
                .find(|l| l.name.as_deref() == Some(name))
                .map(|l| link_cid(&cur, l))
                .transpose()?,
            NodeKind::HamtDirectory => {
                hamt::lookup::find(store, &cur, &node, &fs, name, &mut path_blocks)?
            }
            kind => return Err(not_dir(kind)),
        };
        cur = found.ok_or_else(|| ExportError::PathNotFound {
            dir: Box::new(*roots.last().expect("roots starts with the root")),
            name: name.to_owned(),
            segment: i,
        })?;
        roots.push(cur);
    }
    Ok(Resolved {
        cid: cur,
        roots,
        path_blocks,
    })
}

/// Every entry of a plain or HAMT-sharded directory, in link order.
pub fn list(store: &dyn BlockRead, cid: &Cid) -> Result<Vec<DirEntry>, ExportError> {
    let (node, fs) = match decode(cid, load(store, cid)?)? {
        Node::Raw(_) => {
            return Err(ExportError::NotAList {
                cid: *cid,
                kind: NodeKind::Raw,
            })
        }
        Node::Pb(node, fs) => (node, fs),
    };
    let mut out = Vec::new();
    match kind_of(cid, &fs)? {
        NodeKind::Directory => {
            for l in &node.links {
                out.push(DirEntry {
                    name: l.name.clone().unwrap_or_default(),
                    cid: link_cid(cid, l)?,
                    size: l.tsize.unwrap_or(0),
                });
            }
        }
        NodeKind::HamtDirectory => hamt::lookup::list(store, cid, &node, &fs, &mut out)?,
        kind => return Err(ExportError::NotAList { cid: *cid, kind }),
    }
    Ok(out)
}

/// A pending piece of a file: a block and where its content sits.
#[derive(Debug, Clone, Copy)]
struct Piece {
    cid: Cid,
    /// Offset of the block's first content byte within the file.
    offset: u64,
    /// Content bytes the parent's `blocksizes` promise; `None` for the root.
    len: Option<u64>,
}

/// Reads the bytes `[offset, offset + len)` of a file, one block per step.
///
/// Only blocks whose content overlaps the range are read: `blocksizes` of
/// each node tell where every child's bytes sit, so whole subtrees outside
/// the range are skipped. Memory is bounded by the DAG's depth times its
/// fanout, whatever the file's size.
#[derive(Debug, Clone)]
pub struct FileRange {
    stack: Vec<Piece>,
    start: u64,
    end: u64,
}

impl FileRange {
    /// A reader of `len` bytes from `offset` of the file at `cid` (raw block,
    /// identity CID or dag-pb file); a range past the end is cut short.
    pub fn new(cid: Cid, offset: u64, len: u64) -> Self {
        Self {
            stack: vec![Piece {
                cid,
                offset: 0,
                len: None,
            }],
            start: offset,
            end: offset.saturating_add(len),
        }
    }

    /// The next run of bytes, in file order; `None` when the range is done.
    /// A missing block ([`ExportError::BlockNotFound`]) leaves the reader
    /// where it was, so it goes on once the block is fetched; after any
    /// other error the reader is finished.
    pub fn next_chunk(&mut self, store: &dyn BlockRead) -> Result<Option<Bytes>, ExportError> {
        let r = self.step(store);
        if matches!(r, Err(ref e) if !matches!(e, ExportError::BlockNotFound { .. })) {
            self.stack.clear();
        }
        r
    }

    /// The blocks the next steps read first, in file order (at most `n`):
    /// a reader that found one missing may fetch these along with it.
    pub fn upcoming(&self, n: usize) -> impl Iterator<Item = Cid> + '_ {
        self.stack.iter().rev().take(n).map(|p| p.cid)
    }

    fn step(&mut self, store: &dyn BlockRead) -> Result<Option<Bytes>, ExportError> {
        while let Some(p) = self.stack.pop() {
            let data = match load(store, &p.cid) {
                Ok(data) => data,
                Err(e) => {
                    self.stack.push(p);
                    return Err(e);
                }
            };
            let (content, inline) = match decode(&p.cid, data)? {
                Node::Raw(b) => (b.len() as u64, b),
                Node::Pb(node, fs) => {
                    let kind = kind_of(&p.cid, &fs)?;
                    if kind != NodeKind::File {
                        return Err(ExportError::NotAFile { cid: p.cid, kind });
                    }
                    let content = file_len(&p.cid, &node, &fs)?;
                    let inline = Bytes::from(fs.data.unwrap_or_default());
                    let mut at = p.offset + inline.len() as u64;
                    let mut children = Vec::new();
                    for (link, size) in node.links.iter().zip(&fs.blocksizes) {
                        if at < self.end && at + size > self.start {
                            children.push(Piece {
                                cid: link_cid(&p.cid, link)?,
                                offset: at,
                                len: Some(*size),
                            });
                        }
                        at += size;
                    }
                    // Popped in file order.
                    self.stack.extend(children.into_iter().rev());
                    (content, inline)
                }
            };
            if let Some(want) = p.len {
                if want != content {
                    return Err(malformed(
                        &p.cid,
                        format!("parent says {want} bytes, block holds {content}"),
                    ));
                }
            }
            let from = self.start.saturating_sub(p.offset).min(inline.len() as u64);
            let to = self.end.saturating_sub(p.offset).min(inline.len() as u64);
            if from < to {
                return Ok(Some(inline.slice(from as usize..to as usize)));
            }
        }
        Ok(None)
    }

    /// The rest of the range as an iterator over `store`.
    pub fn iter(
        self,
        store: &dyn BlockRead,
    ) -> impl Iterator<Item = Result<Bytes, ExportError>> + '_ {
        let mut this = self;
        std::iter::from_fn(move || this.next_chunk(store).transpose())
    }
}

/// The whole content of a file (for tests and small files; large files are
/// read with [`FileRange`]).
pub fn read_all(store: &dyn BlockRead, cid: &Cid) -> Result<Vec<u8>, ExportError> {
    let mut out = Vec::new();
    for chunk in FileRange::new(*cid, 0, u64::MAX).iter(store) {
        out.extend_from_slice(&chunk?);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::testdag::TestDag;
    use super::*;

    fn bytes(n: usize) -> Vec<u8> {
        (0..n).map(|i| (i * 7 % 251) as u8).collect()
    }

    /// Counts block reads, to check that ranges skip subtrees.
    struct Counting(
        std::sync::Arc<crate::store::MemStore>,
        std::sync::atomic::AtomicUsize,
    );

    impl BlockRead for Counting {
        fn get(&self, cid: &Cid) -> Result<Option<Bytes>, StoreError> {
            self.1.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            self.0.get(cid)
        }
    }

    fn read(store: &dyn BlockRead, cid: &Cid, off: u64, len: u64) -> Vec<u8> {
        let mut out = Vec::new();
        for c in FileRange::new(*cid, off, len).iter(store) {
            out.extend_from_slice(&c.unwrap());
        }
        out
    }

    #[test]
    fn reads_every_leaf_kind() {
        let t = TestDag::new();
        let raw = t.raw(b"raw bytes");
        let pb = t.pb_leaf(b"pb bytes");
        let id = Cid::new_v1(
            RAW,
            crate::store::Multihash::wrap(IDENTITY, b"inline").unwrap(),
        );
        // A node with inline data, then a raw, a dag-pb and an identity leaf.
        let file = t.file(b"head ", &[(raw, 9), (pb, 8), (id, 6)]);
        assert_eq!(
            read_all(&*t.store, &file).unwrap(),
            b"head raw bytespb bytesinline"
        );
        let s = stat(&*t.store, &file).unwrap();
        assert_eq!((s.kind, s.size), (NodeKind::File, Some(28)));
        assert_eq!(stat(&*t.store, &raw).unwrap().kind, NodeKind::Raw);
        assert_eq!(read_all(&*t.store, &id).unwrap(), b"inline");
        assert_eq!(read(&*t.store, &file, 3, 9), b"d raw byt");
        assert_eq!(read(&*t.store, &file, 20, 100), b"esinline");
        assert_eq!(read(&*t.store, &file, 28, 10), b"");
    }

    #[test]
    fn every_range_of_a_deep_file_is_right() {
        let t = TestDag::new();
        let data = bytes(1000);
        // 7-byte leaves, 3 links a node: several levels deep.
        let file = t.chunked(&data, 7, 3);
        assert_eq!(stat(&*t.store, &file).unwrap().size, Some(1000));
        for (off, len) in [
            (0, 1000),
            (0, 1),
            (6, 2),
            (7, 7),
            (500, 123),
            (999, 5),
            (1, 998),
        ] {
            let want = &data[off..(off + len).min(1000)];
            assert_eq!(
                read(&*t.store, &file, off as u64, len as u64),
                want,
                "{off}+{len}"
            );
        }
    }

    #[test]
    fn ranges_skip_blocks_outside() {
        let t = TestDag::new();
        let data = bytes(64 * 10);
        let file = t.chunked(&data, 10, 4); // 64 leaves, 16 + 4 + 1 nodes
        let counting = Counting(t.store.clone(), 0.into());
        assert_eq!(read(&counting, &file, 325, 10), &data[325..335]);
        // Root, one node per level below it, two leaves.
        assert_eq!(counting.1.into_inner(), 1 + 2 + 2);
    }

    #[test]
    fn rejects_lying_blocksizes() {
        let t = TestDag::new();
        let leaf = t.raw(b"12345");
        let file = t.file(b"", &[(leaf, 6)]);
        assert!(matches!(
            read_all(&*t.store, &file),
            Err(ExportError::Malformed { .. })
        ));
    }

    #[test]
    fn a_missing_leaf_is_reported_by_cid_and_read_once_it_is_there() {
        let t = TestDag::new();
        let leaf = Block::new(cid::Version::V1, RAW, b"late".to_vec());
        let file = t.file(b"x", &[(leaf.cid, 4)]);
        let mut r = FileRange::new(file, 0, 10);
        assert_eq!(r.next_chunk(&*t.store).unwrap().unwrap(), &b"x"[..]);
        for _ in 0..2 {
            assert!(
                matches!(r.next_chunk(&*t.store), Err(ExportError::BlockNotFound { cid }) if cid == leaf.cid)
            );
        }
        t.put(leaf);
        assert_eq!(r.next_chunk(&*t.store).unwrap().unwrap(), &b"late"[..]);
        assert!(r.next_chunk(&*t.store).unwrap().is_none());
    }

    #[test]
    fn other_errors_end_a_range() {
        let t = TestDag::new();
        let junk = t.put(Block::new(cid::Version::V1, DAG_PB, vec![0xff]));
        let file = t.file(b"", &[(junk, 4)]);
        let mut r = FileRange::new(file, 0, 10);
        assert!(matches!(
            r.next_chunk(&*t.store),
            Err(ExportError::Malformed { .. })
        ));
        assert!(r.next_chunk(&*t.store).unwrap().is_none());
    }

    use crate::store::Block;

    #[test]
    fn resolves_and_lists_plain_directories() {
        let t = TestDag::new();
        let a = t.raw(b"a");
        let b = t.pb_leaf(b"bb");
        let sub = t.dir(&[("b.txt", b)]);
        let root = t.dir(&[("a.txt", a), ("sub", sub)]);
        let r = resolve(&*t.store, &root, &["sub", "b.txt"]).unwrap();
        assert_eq!(r.cid, b);
        assert_eq!(r.roots, vec![root, sub, b]);
        assert_eq!(r.path_blocks, vec![root, sub]);
        assert_eq!(resolve::<&str>(&*t.store, &root, &[]).unwrap().cid, root);
        let names: Vec<_> = list(&*t.store, &root)
            .unwrap()
            .into_iter()
            .map(|e| (e.name, e.cid))
            .collect();
        assert_eq!(names, vec![("a.txt".into(), a), ("sub".into(), sub)]);
        assert_eq!(stat(&*t.store, &root).unwrap().kind, NodeKind::Directory);
        assert!(matches!(
            resolve(&*t.store, &root, &["sub", "nope"]),
            Err(ExportError::PathNotFound { segment: 1, dir, .. }) if *dir == sub
        ));
        assert!(matches!(
            resolve(&*t.store, &root, &["a.txt", "x"]),
            Err(ExportError::NotADirectory {
                kind: NodeKind::Raw,
                segment: 1,
                ..
            })
        ));
        assert!(matches!(
            list(&*t.store, &a),
            Err(ExportError::NotAList { .. })
        ));
    }

    #[test]
    fn hamt_lookup_follows_the_hash() {
        let t = TestDag::new();
        let names: Vec<String> = (0..600).map(|i| format!("file-{i}.ts")).collect();
        let entries: Vec<(&str, Cid)> = names
            .iter()
            .map(|n| (n.as_str(), t.raw(n.as_bytes())))
            .collect();
        let root = t.hamt(&entries, 256);
        assert_eq!(
            stat(&*t.store, &root).unwrap().kind,
            NodeKind::HamtDirectory
        );
        for (n, c) in entries.iter().step_by(37) {
            let r = resolve(&*t.store, &root, &[n]).unwrap();
            assert_eq!(r.cid, *c);
            assert_eq!(r.roots, vec![root, *c]);
            // The root, then the sub-shard the entry sits in, if any.
            assert!(r.path_blocks.len() <= 3 && r.path_blocks[0] == root);
        }
        let mut listed: Vec<_> = list(&*t.store, &root)
            .unwrap()
            .into_iter()
            .map(|e| (e.name, e.cid))
            .collect();
        listed.sort();
        let mut want: Vec<_> = entries.iter().map(|(n, c)| (n.to_string(), *c)).collect();
        want.sort();
        assert_eq!(listed, want);
        assert!(matches!(
            resolve(&*t.store, &root, &["absent"]),
            Err(ExportError::PathNotFound { .. })
        ));
    }

    #[test]
    fn hamt_lookup_falls_back_to_a_scan() {
        let t = TestDag::new();
        let names: Vec<String> = (0..300).map(|i| format!("n{i}")).collect();
        let hashed: Vec<(u64, &str, Cid)> = names
            .iter()
            .map(|n| {
                let h = u64::from_be_bytes(hamt::name_hash(n.as_bytes()));
                (h, n.as_str(), t.raw(n.as_bytes()))
            })
            .collect();
        // Every entry one bucket off where the hash puts it.
        let root = t.shard(&hashed, 256, 0, |_, b| (b + 1) % 256);
        for (_, n, c) in hashed.iter().step_by(29) {
            assert_eq!(resolve(&*t.store, &root, &[n]).unwrap().cid, *c);
        }
    }

    #[test]
    fn small_fanout_hamt() {
        let t = TestDag::new();
        let names: Vec<String> = (0..50).map(|i| format!("e{i}")).collect();
        let entries: Vec<(&str, Cid)> = names
            .iter()
            .map(|n| (n.as_str(), t.raw(n.as_bytes())))
            .collect();
        let root = t.hamt(&entries, 16);
        for (n, c) in &entries {
            assert_eq!(resolve(&*t.store, &root, &[n]).unwrap().cid, *c);
        }
        assert_eq!(list(&*t.store, &root).unwrap().len(), 50);
    }

    #[test]
    fn symlinks() {
        let t = TestDag::new();
        let l = t.symlink("../target");
        let s = stat(&*t.store, &l).unwrap();
        assert_eq!((s.kind, s.size), (NodeKind::Symlink, Some(9)));
        assert_eq!(symlink_target(&*t.store, &l).unwrap(), &b"../target"[..]);
        let root = t.dir(&[("link", l)]);
        assert!(matches!(
            resolve(&*t.store, &root, &["link", "x"]),
            Err(ExportError::NotADirectory {
                kind: NodeKind::Symlink,
                ..
            })
        ));
    }

    #[test]
    fn missing_and_foreign_blocks() {
        let t = TestDag::new();
        let gone = Block::new(cid::Version::V1, DAG_PB, b"x".to_vec()).cid;
        assert!(matches!(
            stat(&*t.store, &gone),
            Err(ExportError::BlockNotFound { .. })
        ));
        let cbor = t.put(Block::new(cid::Version::V1, 0x71, vec![0xa0]));
        assert!(matches!(
            stat(&*t.store, &cbor),
            Err(ExportError::NotUnixfs { codec: 0x71, .. })
        ));
        let junk = t.put(Block::new(cid::Version::V1, DAG_PB, vec![0xff, 0xff]));
        assert!(matches!(
            stat(&*t.store, &junk),
            Err(ExportError::Malformed { .. })
        ));
    }
}
