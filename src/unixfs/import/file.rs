//! Streaming file import: fixed-size chunks laid out as kubo's balanced DAG.
//!
//! Bytes fill a chunk buffer; each full chunk becomes a leaf (a raw block, or
//! a UnixFS File node holding the chunk), is hashed and handed to the sink at
//! once. Leaf links collect in `levels[0]`; a level that already holds
//! `max_links` links is turned into a File node (with `filesize` and
//! `blocksizes`) only when one more link arrives, because until then it may
//! still be the root. This yields boxo's `balanced` layout: every leaf at the
//! same depth, nodes filled left to right, a one-chunk file is its own leaf.
//!
//! Hashing leaves is nearly all the work, so with `hash_threads` set, leaves
//! are shared between the caller's thread and helper threads; results are
//! put back in file order before they reach the tree and the sink, so the
//! blocks and their order do not depend on the thread count.

use std::collections::VecDeque;
use std::io::Read;
use std::path::Path;
use std::sync::mpsc::{sync_channel, Receiver, SendError, SyncSender, TryRecvError};

use bytes::Bytes;
use cid::Cid;

use super::{ImportError, ImportOptions, Imported};
use crate::store::{Block, BlockSink, DAG_PB, RAW};
use crate::unixfs::pb::{put_varint, varint_len, DataType, PbLink, PbNode, UnixfsData};

/// Bytes reserved in front of a chunk for the dag-pb and UnixFS header of a
/// wrapped leaf, so the chunk never has to be copied into the node: tag and
/// length of `PBNode.Data` (1 + up to 5), type field (2), tag and length of
/// `Data.Data` (1 + up to 5).
const HEADROOM: usize = 16;
/// Room after a chunk for the `filesize` field of a wrapped leaf.
const TAILROOM: usize = 1 + 10;

/// Leaves handed to one helper thread and not yet returned. Two keep it busy
/// while the caller reads and hashes its own share.
const WORKER_QUEUE: usize = 2;
/// Leaves waiting to be put back in order, at most; bounds memory to this
/// many chunks if a helper falls behind.
const MAX_PENDING: usize = 16;

/// A link to a finished child: a leaf or an internal node.
#[derive(Debug, Clone)]
struct Child {
    cid: Cid,
    /// Cumulative size of the child DAG (the link's Tsize).
    tsize: u64,
    /// File bytes under the child (its entry in `blocksizes`).
    file_size: u64,
}

/// Builds one file's DAG from bytes fed in slices of any size.
///
/// Every block goes to the sink as soon as it is complete, in an order where
/// children precede parents; the importer holds one chunk being filled, at
/// most 16 being hashed, and at most `max_links` links per tree level.
pub struct FileImporter<'a> {
    sink: &'a mut dyn BlockSink,
    version: cid::Version,
    raw_leaves: bool,
    chunk_size: usize,
    max_links: usize,
    /// The chunk being filled: `head` reserved bytes, then `filled` bytes of
    /// data, with capacity for the whole leaf so it never reallocates.
    chunk: Vec<u8>,
    head: usize,
    filled: usize,
    levels: Vec<Vec<Child>>,
    file_size: u64,
    /// Helper threads, started with the second leaf (one-chunk files, the
    /// common case in directories, never pay for a thread).
    hash_threads: usize,
    workers: Vec<Worker>,
    /// Leaves in file order from `pending_seq` on: hashed, or still with a
    /// helper.
    pending: VecDeque<Pending>,
    pending_seq: u64,
    next_seq: u64,
}

/// A leaf for a helper thread: sequence number, bytes, codec.
type Job = (u64, Bytes, u64);

/// A leaf between chunking and linking.
struct Pending {
    file_size: u64,
    /// The helper hashing it, when `block` is still `None`.
    worker: usize,
    block: Option<Block>,
}

/// One helper thread that hashes leaves.
struct Worker {
    jobs: SyncSender<Job>,
    done: Receiver<(u64, Block)>,
    in_flight: usize,
}

impl Worker {
    fn spawn(version: cid::Version) -> Option<Self> {
        let (jobs, job_rx) = sync_channel::<Job>(WORKER_QUEUE);
        let (done_tx, done) = sync_channel(WORKER_QUEUE);
        std::thread::Builder::new()
            .name("unixfs-hash".into())
            .spawn(move || {
                for (seq, data, codec) in job_rx {
                    if done_tx
                        .send((seq, Block::new(version, codec, data)))
                        .is_err()
                    {
                        break;
                    }
                }
            })
            .ok()?;
        Some(Self {
            jobs,
            done,
            in_flight: 0,
        })
    }
}

impl<'a> FileImporter<'a> {
    /// An importer for one file with `opts`' chunking and layout parameters.
    pub fn new(opts: &ImportOptions, sink: &'a mut dyn BlockSink) -> Result<Self, ImportError> {
        opts.validate()?;
        Ok(Self {
            sink,
            version: opts.cid_version,
            raw_leaves: opts.raw_leaves,
            chunk_size: opts.chunk_size,
            max_links: opts.max_links,
            chunk: Vec::new(),
            head: if opts.raw_leaves { 0 } else { HEADROOM },
            filled: 0,
            levels: Vec::new(),
            file_size: 0,
            hash_threads: opts.hash_threads,
            workers: Vec::new(),
            pending: VecDeque::new(),
            pending_seq: 0,
            next_seq: 0,
        })
    }

    /// File bytes taken so far.
    pub fn bytes_written(&self) -> u64 {
        self.file_size
    }

    /// Feeds the next bytes of the file.
    pub fn write(&mut self, mut data: &[u8]) -> Result<(), ImportError> {
        while !data.is_empty() {
            let n = self.room_for(data.len()).min(data.len());
            self.grow(n);
            self.chunk.extend_from_slice(&data[..n]);
            data = &data[n..];
            self.advance(n)?;
        }
        Ok(())
    }

    /// Reads `reader` to its end straight into chunk buffers (no copy between
    /// the read and the block), calling `on_progress` with the byte count of
    /// each chunk read. `source` names the input in errors. Returns the bytes
    /// read.
    pub fn read_from(
        &mut self,
        reader: &mut dyn Read,
        source: &Path,
        on_progress: &mut dyn FnMut(u64),
    ) -> Result<u64, ImportError> {
        let mut total = 0u64;
        loop {
            let room = self.room();
            // `read_to_end` reads into the vector's spare capacity without
            // zeroing it first (files implement `read_buf`), and keeps reading
            // a pipe until the chunk is full.
            let got = reader
                .take(room as u64)
                .read_to_end(&mut self.chunk)
                .map_err(|e| ImportError::Read {
                    path: source.to_path_buf(),
                    source: e,
                })?;
            if got > 0 {
                total += got as u64;
                on_progress(got as u64);
                self.advance(got)?;
            }
            if got < room {
                return Ok(total);
            }
        }
    }

    /// Ends the file: emits the last leaf and the internal nodes, and returns
    /// the root.
    pub fn finish(mut self) -> Result<Imported, ImportError> {
        if self.filled > 0 {
            self.flush_leaf()?;
        }
        while !self.pending.is_empty() {
            self.collect(true)?;
        }
        // Closing the job queues ends the helpers.
        self.workers.clear();
        if self.levels.is_empty() {
            return self.empty_file();
        }
        let mut level = 0;
        let root = loop {
            let top = level + 1 == self.levels.len();
            if top && self.levels[level].len() == 1 {
                break self.levels[level].pop().expect("one link");
            }
            let children = std::mem::take(&mut self.levels[level]);
            let node = self.emit_node(&children)?;
            if top {
                break node;
            }
            self.push(level + 1, node)?;
            level += 1;
        };
        Ok(Imported {
            cid: root.cid,
            file_size: self.file_size,
            dag_size: root.tsize,
        })
    }

    /// Appends a leaf that is already stored (a raw block of `len` bytes)
    /// instead of chunking bytes: a file made only of such leaves is laid
    /// out as if they were its chunks, so live media parts become a
    /// segment's file without their bytes being copied or stored twice.
    /// Refused once bytes were written.
    pub fn link_leaf(&mut self, cid: Cid, len: u64) -> Result<(), ImportError> {
        if self.filled > 0 || !self.pending.is_empty() || self.next_seq > 0 {
            return Err(ImportError::BadOption(
                "stored leaves and written bytes cannot be mixed in one file".into(),
            ));
        }
        self.file_size += len;
        self.push(
            0,
            Child {
                cid,
                tsize: len,
                file_size: len,
            },
        )
    }

    /// Bytes the current chunk can still take, allocating it if needed.
    fn room(&mut self) -> usize {
        self.room_for(self.chunk_size)
    }

    /// [`Self::room`], allocating a new chunk for `want` bytes only when
    /// that is less than a chunk: a small file (a playlist, a page, a
    /// segment below the chunk size) then holds no more memory than its
    /// bytes, and its leaf is exactly its allocation. More bytes grow it.
    fn room_for(&mut self, want: usize) -> usize {
        if self.chunk.capacity() == 0 {
            let tail = if self.raw_leaves { 0 } else { TAILROOM };
            let size = want.clamp(1, self.chunk_size);
            self.chunk = Vec::with_capacity(self.head + size + tail);
            self.chunk.resize(self.head, 0);
        }
        self.chunk_size - self.filled
    }

    /// Makes room for `n` more bytes in a chunk allocated smaller than a
    /// whole one: doubling it, but never past a whole chunk (a leaf keeps
    /// its allocation).
    fn grow(&mut self, n: usize) {
        let (len, cap) = (self.chunk.len(), self.chunk.capacity());
        if cap - len < n {
            let tail = if self.raw_leaves { 0 } else { TAILROOM };
            let whole = self.head + self.chunk_size + tail;
            let target = (len + n + tail).max(cap * 2).min(whole);
            self.chunk.reserve_exact(target - len);
        }
    }

    /// Accounts for `n` bytes appended to the chunk; emits a full chunk.
    fn advance(&mut self, n: usize) -> Result<(), ImportError> {
        self.filled += n;
        self.file_size += n as u64;
        if self.filled == self.chunk_size {
            self.flush_leaf()?;
        }
        Ok(())
    }

    /// Turns the buffered chunk into a leaf, hashes it here or on a helper,
    /// and links every leaf that is ready, in order.
    fn flush_leaf(&mut self) -> Result<(), ImportError> {
        let file_size = self.filled as u64;
        let (data, codec) = self.take_leaf();
        let seq = self.next_seq;
        self.next_seq += 1;
        if seq == 1 && self.workers.is_empty() {
            let version = self.version;
            self.workers = (0..self.hash_threads)
                .map_while(|_| Worker::spawn(version))
                .collect();
        }
        // The caller's thread hashes its share while the helpers are busy.
        let leaf = match self.offload(seq, data, codec) {
            Ok(worker) => Pending {
                file_size,
                worker,
                block: None,
            },
            Err(data) => Pending {
                file_size,
                worker: usize::MAX,
                block: Some(Block::new(self.version, codec, data)),
            },
        };
        self.pending.push_back(leaf);
        self.collect(self.pending.len() > MAX_PENDING)
    }

    /// Hands a leaf to the least busy helper with room; returns the helper's
    /// index, or the leaf back when all are busy (or gone).
    fn offload(&mut self, seq: u64, data: Bytes, codec: u64) -> Result<usize, Bytes> {
        let Some((i, w)) = self
            .workers
            .iter_mut()
            .enumerate()
            .filter(|(_, w)| w.in_flight < WORKER_QUEUE)
            .min_by_key(|(_, w)| w.in_flight)
        else {
            return Err(data);
        };
        // Never blocks: the queue has room for `WORKER_QUEUE` jobs.
        match w.jobs.send((seq, data, codec)) {
            Ok(()) => {
                w.in_flight += 1;
                Ok(i)
            }
            Err(SendError((_, data, _))) => Err(data),
        }
    }

    /// Takes hashed leaves back from the helpers and links the ready prefix
    /// of `pending`; with `wait`, first blocks until the oldest leaf is back.
    fn collect(&mut self, wait: bool) -> Result<(), ImportError> {
        if wait {
            if let Some(Pending {
                worker,
                block: None,
                ..
            }) = self.pending.front()
            {
                let w = &mut self.workers[*worker];
                let (seq, block) = w.done.recv().expect("unixfs hash helper exited early");
                w.in_flight -= 1;
                self.pending[(seq - self.pending_seq) as usize].block = Some(block);
            }
        }
        for w in &mut self.workers {
            while w.in_flight > 0 {
                match w.done.try_recv() {
                    Ok((seq, block)) => {
                        w.in_flight -= 1;
                        self.pending[(seq - self.pending_seq) as usize].block = Some(block);
                    }
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Disconnected) => panic!("unixfs hash helper exited early"),
                }
            }
        }
        while self.pending.front().is_some_and(|p| p.block.is_some()) {
            let leaf = self.pending.pop_front().expect("front exists");
            self.pending_seq += 1;
            let block = leaf.block.expect("ready leaf");
            let child = Child {
                cid: block.cid,
                tsize: block.data.len() as u64,
                file_size: leaf.file_size,
            };
            self.sink.put_block(block)?;
            self.push(0, child)?;
        }
        Ok(())
    }

    /// The buffered chunk as leaf bytes and their codec.
    fn take_leaf(&mut self) -> (Bytes, u64) {
        let n = self.filled;
        let mut buf = std::mem::take(&mut self.chunk);
        self.filled = 0;
        debug_assert_eq!(buf.len(), self.head + n);
        if self.raw_leaves {
            (Bytes::from(buf), RAW)
        } else {
            // PBNode{Data: Data{Type: File, Data: chunk, filesize: n}}, written
            // around the chunk in place.
            let len = n as u64;
            let inner = 2 + 1 + varint_len(len) + n + 1 + varint_len(len);
            let mut header = Vec::with_capacity(HEADROOM);
            header.push(0x0a);
            put_varint(&mut header, inner as u64);
            header.extend_from_slice(&[0x08, DataType::File as u8, 0x12]);
            put_varint(&mut header, len);
            let start = HEADROOM - header.len();
            buf[start..HEADROOM].copy_from_slice(&header);
            buf.push(0x18);
            put_varint(&mut buf, len);
            (Bytes::from(buf).slice(start..), DAG_PB)
        }
    }

    /// Appends a link at `level`, first closing the level into a node one
    /// level up if it is full.
    fn push(&mut self, level: usize, child: Child) -> Result<(), ImportError> {
        if self.levels.len() == level {
            self.levels.push(Vec::with_capacity(self.max_links));
        }
        if self.levels[level].len() == self.max_links {
            let children =
                std::mem::replace(&mut self.levels[level], Vec::with_capacity(self.max_links));
            let parent = self.emit_node(&children)?;
            self.push(level + 1, parent)?;
        }
        self.levels[level].push(child);
        Ok(())
    }

    /// Emits an internal File node over `children`.
    fn emit_node(&mut self, children: &[Child]) -> Result<Child, ImportError> {
        let mut data = UnixfsData::new(DataType::File);
        data.filesize = Some(children.iter().map(|c| c.file_size).sum());
        data.blocksizes = children.iter().map(|c| c.file_size).collect();
        let node = PbNode {
            links: children
                .iter()
                .map(|c| PbLink {
                    hash: c.cid.to_bytes(),
                    name: Some(String::new()),
                    tsize: Some(c.tsize),
                })
                .collect(),
            data: Some(data.encode()),
        };
        let block = Block::new(self.version, DAG_PB, node.encode());
        let child = Child {
            cid: block.cid,
            tsize: block.data.len() as u64 + children.iter().map(|c| c.tsize).sum::<u64>(),
            file_size: data.filesize.unwrap_or(0),
        };
        self.sink.put_block(block)?;
        Ok(child)
    }

    /// kubo's empty file: an empty raw block, or a File node of size 0.
    fn empty_file(self) -> Result<Imported, ImportError> {
        let block = if self.raw_leaves {
            Block::new(self.version, RAW, Bytes::new())
        } else {
            let mut data = UnixfsData::new(DataType::File);
            data.filesize = Some(0);
            let node = PbNode {
                links: Vec::new(),
                data: Some(data.encode()),
            };
            Block::new(self.version, DAG_PB, node.encode())
        };
        let imported = Imported {
            cid: block.cid,
            file_size: 0,
            dag_size: block.data.len() as u64,
        };
        self.sink.put_block(block)?;
        Ok(imported)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::unixfs::import::{pattern, Profile};
    use proptest::prelude::*;
    use std::collections::HashMap;

    fn import(opts: &ImportOptions, data: &[u8]) -> (Imported, Vec<Block>) {
        let mut blocks = Vec::new();
        let mut f = FileImporter::new(opts, &mut blocks).unwrap();
        f.write(data).unwrap();
        let root = f.finish().unwrap();
        (root, blocks)
    }

    fn v1_2025() -> ImportOptions {
        ImportOptions::from_profile(Profile::UnixfsV1_2025)
    }

    /// The bytes allocated behind a block's data.
    fn allocation(b: Block) -> usize {
        b.data.try_into_mut().expect("the only handle").capacity()
    }

    /// Stored leaves make the DAG that chunking their concatenation at
    /// their sizes would (here equal sizes, so a fixed chunker does it),
    /// and that DAG's leaves are those blocks, in order.
    #[test]
    fn linked_leaves_match_chunked_bytes() {
        let opts = ImportOptions {
            chunk_size: 1000,
            max_links: 4,
            ..v1_2025()
        };
        for n in [1usize, 3, 4, 5, 17] {
            let data = pattern(n * 1000);
            let (want, want_blocks) = import(&opts, &data);
            let leaves: Vec<Block> = data
                .chunks(1000)
                .map(|c| Block::new(cid::Version::V1, RAW, Bytes::copy_from_slice(c)))
                .collect();
            let mut blocks = Vec::new();
            let mut f = FileImporter::new(&opts, &mut blocks).unwrap();
            for leaf in &leaves {
                f.link_leaf(leaf.cid, leaf.data.len() as u64).unwrap();
            }
            let got = f.finish().unwrap();
            assert_eq!(got, want, "{n} leaves");
            // Only the inner nodes are new.
            let inner: Vec<Block> = want_blocks
                .into_iter()
                .filter(|b| b.cid.codec() != RAW)
                .collect();
            assert_eq!(blocks, inner);
        }
        let mut blocks = Vec::new();
        let mut f = FileImporter::new(&opts, &mut blocks).unwrap();
        f.write(b"x").unwrap();
        assert!(f.link_leaf(Cid::default(), 1).is_err());
    }

    #[test]
    fn small_files_hold_no_more_than_their_bytes() {
        let data = pattern(750_000);
        let (_, blocks) = import(&v1_2025(), &data);
        assert_eq!(allocation(blocks.into_iter().next().unwrap()), 750_000);
        // Written in pieces, a chunk grows to a whole one at most.
        let mut blocks = Vec::new();
        let mut f = FileImporter::new(&v1_2025(), &mut blocks).unwrap();
        let more = pattern(1 << 20);
        for piece in data.chunks(1000).chain(more.chunks(100_000)) {
            f.write(piece).unwrap();
        }
        f.finish().unwrap();
        let first = blocks.into_iter().next().unwrap();
        assert_eq!(first.data.len(), 1 << 20);
        assert_eq!(allocation(first), 1 << 20);
        // Wrapped leaves keep room for their header and trailer.
        let (_, blocks) = import(&ImportOptions::default(), b"hello world");
        assert!(allocation(blocks.into_iter().next().unwrap()) < 64);
    }

    #[test]
    fn hello_world_matches_kubo_and_ipip_fixtures() {
        let (root, _) = import(&ImportOptions::default(), b"hello world");
        assert_eq!(
            root.cid.to_string(),
            "Qmf412jQZiuVUtdgnB36FXFX7xg5V6KEbSJ4dpQuhkLyfD"
        );
        assert_eq!((root.file_size, root.dag_size), (11, 19));
        let (root, _) = import(&v1_2025(), b"hello world");
        assert_eq!(
            root.cid.to_string(),
            "bafkreifzjut3te2nhyekklss27nh3k72ysco7y32koao5eei66wof36n5e"
        );
    }

    #[test]
    fn empty_file_matches_kubo_and_helia() {
        // kubo: a File node with filesize 0; with raw leaves, an empty raw
        // block (Helia gives the same).
        let (root, blocks) = import(&ImportOptions::default(), b"");
        assert_eq!(
            root.cid.to_string(),
            "QmbFMke1KXqnYyBBWxB74N4c5SBnJMVAiMNRcGu6x1AwQH"
        );
        assert_eq!((blocks.len(), root.dag_size), (1, 6));
        let (root, _) = import(&v1_2025(), b"");
        assert_eq!(
            root.cid.to_string(),
            "bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku"
        );
        assert_eq!(root.dag_size, 0);
    }

    /// Reference CIDs from kubo 0.22 `ipfs add` (default options) and Helia
    /// (`profile: 'unixfs-v0-2015'`, which agrees) on `pattern(size)`; dag
    /// sizes from Helia.
    #[test]
    fn default_options_match_kubo() {
        let cases: &[(usize, &str, u64)] = &[
            (1, "QmYgeDNcNoWGunNmxb2do8E5oMALcrxnzxCWLpzrWeBjZ4", 9),
            (
                262143,
                "QmbprEmh75s6X6Emza1eqFsUcX1D3TXENuQvcy9BK6Y2iw",
                262157,
            ),
            (
                262144,
                "QmXQ4ZkKirB2Zb6wHWAcnJCH8SYMhFX8VJti8DDSbecW6w",
                262158,
            ),
            (
                262145,
                "QmXvgfEzy3p9r74AY3dfHgymaRquR6BCDCLAXk7vkHN326",
                262267,
            ),
            (
                1048575,
                "QmZKZUQYnT4uAx7AnqmWwt4WNnxsNprZxCSp5MpDWdkqGg",
                1048831,
            ),
            (
                1048576,
                "QmZcaPB1jXiGshVpTb1jKwbGxY2L2fCmWDct6goxyP4s88",
                1048832,
            ),
            (
                1048577,
                "QmWYXnTjAhyyaELoAWn3hHzzrJZEsejNpFBTkHQxn1tEsE",
                1048885,
            ),
            (
                2500000,
                "QmWpNGNyctbMA1puTcPXXrVc3vBJkPG4p2DJjETbsnYrfa",
                2500629,
            ),
            // 174 chunks: one full level; one byte more: two levels.
            (
                174 * 262144,
                "QmReiASi8seW6prnAmTkSNDeaj5Wj6yNPd5KsXTHq3bQer",
                45623854,
            ),
            (
                174 * 262144 + 1,
                "QmPyjYkDZjhKDbNwg2keGwG1LHLbAkLi8ZvrUoNuMsQiAW",
                45624016,
            ),
        ];
        let data = pattern(174 * 262144 + 1);
        for &(size, cid, dag_size) in cases {
            let (root, _) = import(&ImportOptions::default(), &data[..size]);
            assert_eq!(root.cid.to_string(), cid, "size {size}");
            assert_eq!(root.dag_size, dag_size, "size {size}");
            assert_eq!(root.file_size, size as u64);
        }
    }

    /// Reference CIDs and sizes from Helia (`profile: 'unixfs-v1-2025'`).
    #[test]
    fn v1_2025_profile_matches_helia() {
        let cases: &[(usize, &str, u64)] = &[
            (
                1,
                "bafkreibcvwxqlcrmwzulcxfuyhzq47ghec56hdaumvcbnhntl67wga4jyq",
                1,
            ),
            (
                1048576,
                "bafkreihst6yheey7z7dslnpmirvndglawky3j7lyupf7lbtqbeir7zqc4a",
                1048576,
            ),
            (
                1048577,
                "bafybeifj33pdgiqayh4uybeucizrmtesybzsua65zbusgyosoakged7mpq",
                1048681,
            ),
            (
                2500000,
                "bafybeiejartbyhiajb7bayp3yb3h6up25atl2yqmabvdpvqx2lahx5unx4",
                2500159,
            ),
        ];
        let data = pattern(2500000);
        for &(size, cid, dag_size) in cases {
            let (root, _) = import(&v1_2025(), &data[..size]);
            assert_eq!(root.cid.to_string(), cid, "size {size}");
            assert_eq!(root.dag_size, dag_size, "size {size}");
        }
    }

    /// kubo's `--raw-leaves` with CIDv0 and `--cid-version 1`, against Helia
    /// with the same parameters (256 KiB chunks, 174 links).
    #[test]
    fn raw_leaves_and_cid_versions_match_helia() {
        let data = pattern(262145);
        let raw_v0 = ImportOptions {
            raw_leaves: true,
            ..ImportOptions::default()
        };
        let (root, blocks) = import(&raw_v0, &data);
        assert_eq!(
            root.cid.to_string(),
            "QmeojWSfzyBuPnn3z1ELgXqkcYBXzLmD2fvzxHehBE5sLz"
        );
        // Raw leaves are CIDv1 even when the nodes above are CIDv0.
        assert!(blocks[..2]
            .iter()
            .all(|b| b.cid.version() == cid::Version::V1 && b.cid.codec() == RAW));
        let v1 = ImportOptions::default().with_cid_version(cid::Version::V1);
        let (root, _) = import(&v1, &data);
        assert_eq!(
            root.cid.to_string(),
            "bafybeihuvmmuxpnginsztsbeifrs6xb4mjkosxmyvrd3ud6h33evi7iqx4"
        );
        assert_eq!(root.dag_size, 262249);
    }

    /// Small chunks and narrow nodes give deep trees: Helia agrees.
    #[test]
    fn deep_trees_match_helia() {
        let opts = ImportOptions {
            chunk_size: 4096,
            max_links: 3,
            ..v1_2025()
        };
        let (root, _) = import(&opts, &pattern(2500000));
        assert_eq!(
            root.cid.to_string(),
            "bafybeiezmxwlnvgdfw7j5prcosvmvwhxt6b7xnh67rs5iqnrkl4ws7nj2i"
        );
        assert_eq!(root.dag_size, 2546473);
    }

    /// Walks the DAG from `root` and checks every invariant of kubo's
    /// balanced layout; returns the file bytes.
    fn check_dag(opts: &ImportOptions, root: &Imported, blocks: &[Block]) -> Vec<u8> {
        // Equal chunks make equal blocks: index each CID's first emission.
        let mut index: HashMap<Cid, usize> = HashMap::new();
        for (i, b) in blocks.iter().enumerate() {
            index.entry(b.cid).or_insert(i);
        }
        let mut out = Vec::new();
        let mut leaf_depths = Vec::new();
        // (cid, depth) -> (file size, cumulative size)
        fn walk(
            cid: &Cid,
            depth: usize,
            opts: &ImportOptions,
            blocks: &[Block],
            index: &HashMap<Cid, usize>,
            out: &mut Vec<u8>,
            leaf_depths: &mut Vec<usize>,
        ) -> (u64, u64) {
            let at = index[cid];
            let block = &blocks[at];
            if cid.codec() == RAW {
                assert!(opts.raw_leaves);
                out.extend_from_slice(&block.data);
                leaf_depths.push(depth);
                return (block.data.len() as u64, block.data.len() as u64);
            }
            let node = PbNode::decode(&block.data).unwrap();
            let fs = UnixfsData::decode(node.data.as_deref().unwrap()).unwrap();
            assert_eq!(fs.kind, DataType::File);
            if node.links.is_empty() {
                let data = fs.data.unwrap_or_default();
                assert_eq!(fs.filesize, Some(data.len() as u64));
                out.extend_from_slice(&data);
                leaf_depths.push(depth);
                return (data.len() as u64, block.data.len() as u64);
            }
            assert!(fs.data.is_none());
            assert!(node.links.len() <= opts.max_links);
            assert_eq!(fs.blocksizes.len(), node.links.len());
            let mut total = block.data.len() as u64;
            for (link, bs) in node.links.iter().zip(&fs.blocksizes) {
                assert_eq!(link.name.as_deref(), Some(""));
                let child = Cid::try_from(link.hash.as_slice()).unwrap();
                // Children reach the sink before their parent.
                assert!(index[&child] < at);
                let (size, cumulative) =
                    walk(&child, depth + 1, opts, blocks, index, out, leaf_depths);
                assert_eq!(size, *bs);
                assert_eq!(link.tsize, Some(cumulative));
                total += cumulative;
            }
            assert_eq!(fs.filesize, Some(fs.blocksizes.iter().sum()));
            (fs.filesize.unwrap(), total)
        }
        let (size, cumulative) = walk(
            &root.cid,
            0,
            opts,
            blocks,
            &index,
            &mut out,
            &mut leaf_depths,
        );
        assert_eq!((size, cumulative), (root.file_size, root.dag_size));
        assert!(leaf_depths.windows(2).all(|w| w[0] == w[1]), "balanced");
        out
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        #[test]
        fn any_slicing_gives_the_same_dag(
            len in 0usize..20_000,
            cuts in proptest::collection::vec(0usize..20_000, 0..12),
            raw in any::<bool>(),
            chunk in 1usize..3000,
            links in 2usize..6,
            threads in 0usize..4,
        ) {
            let opts = ImportOptions {
                raw_leaves: raw,
                chunk_size: chunk,
                max_links: links,
                hash_threads: threads,
                ..ImportOptions::default()
            };
            let data = pattern(len);
            let (whole, blocks) = import(&opts, &data);
            let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c.min(len)).collect();
            cuts.sort_unstable();
            let mut sliced_blocks = Vec::new();
            let mut f = FileImporter::new(&opts, &mut sliced_blocks).unwrap();
            let mut at = 0;
            for c in cuts.into_iter().chain([len]) {
                f.write(&data[at..c]).unwrap();
                at = c;
            }
            prop_assert_eq!(f.finish().unwrap(), whole);
            prop_assert_eq!(&sliced_blocks, &blocks);
            // And reading gives the same too.
            let mut read_blocks = Vec::new();
            let mut f = FileImporter::new(&opts, &mut read_blocks).unwrap();
            let mut seen = 0;
            f.read_from(&mut &data[..], Path::new("mem"), &mut |n| seen += n).unwrap();
            prop_assert_eq!(seen, len as u64);
            prop_assert_eq!(f.finish().unwrap(), whole);
            prop_assert_eq!(&check_dag(&opts, &whole, &blocks), &data);
            // Helper threads change nothing, not even the order of blocks.
            let single = ImportOptions { hash_threads: 0, ..opts.clone() };
            prop_assert_eq!(import(&single, &data).1, blocks);
        }
    }
}
