//! Content-addressed block storage, pins and garbage collection.
//!
//! Flow: the UnixFS importer hands finished [`Block`]s to a [`Blockstore`]
//! (in batches, so the file store can make a whole batch durable with one
//! sync); pins name the roots to keep; `repo gc` walks the pinned DAGs and
//! deletes every other block; the gateway and exporter read blocks back
//! through [`BlockRead`], the read half a wrapper can implement alone.
//!
//! Blocks are keyed by multihash, as in kubo, so the same bytes under a CIDv0
//! and a CIDv1 are stored once.

pub mod car;
pub mod fetch;
pub mod fs;
pub mod mapped;
pub mod mem;
pub mod metrics;
pub mod notify;
pub mod pins;
pub mod repo;

use bytes::Bytes;
use cid::Cid;
use sha2::{Digest, Sha256};
use thiserror::Error;

pub use fs::FsStore;
pub use mem::MemStore;
pub use repo::Repo;

/// A multihash with room for a SHA-256 digest and more.
pub type Multihash = multihash::Multihash<64>;

/// Multicodec of dag-pb.
pub const DAG_PB: u64 = 0x70;
/// Multicodec of raw bytes.
pub const RAW: u64 = 0x55;
/// Multicodec of the identity "hash" (inline data).
pub const IDENTITY: u64 = 0x00;
/// Multicodec of SHA2-256.
pub const SHA2_256: u64 = 0x12;

/// A block: bytes and the CID they hash to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Block {
    /// The block's CID.
    pub cid: Cid,
    /// The block's bytes.
    pub data: Bytes,
}

impl Block {
    /// Hashes `data` with SHA-256 and builds the CID (v0 only for dag-pb).
    pub fn new(version: cid::Version, codec: u64, data: impl Into<Bytes>) -> Self {
        let data = data.into();
        let mh = sha256_multihash(&data);
        let cid = match version {
            cid::Version::V0 if codec == DAG_PB => Cid::new_v0(mh).expect("sha2-256 fits CIDv0"),
            _ => Cid::new_v1(codec, mh),
        };
        Self { cid, data }
    }

    /// Checks that the bytes hash to the CID's multihash.
    pub fn verify(&self) -> Result<(), StoreError> {
        verify_bytes(&self.cid, &self.data)
    }
}

/// The SHA2-256 multihash of `data`.
pub fn sha256_multihash(data: &[u8]) -> Multihash {
    let digest = Sha256::digest(data);
    Multihash::wrap(SHA2_256, &digest).expect("32-byte digest fits")
}

/// Checks that `data` hashes to `cid`'s multihash (SHA2-256 and identity).
pub fn verify_bytes(cid: &Cid, data: &[u8]) -> Result<(), StoreError> {
    let mh = cid.hash();
    let ok = match mh.code() {
        SHA2_256 => Sha256::digest(data).as_slice() == mh.digest(),
        IDENTITY => mh.digest() == data,
        code => return Err(StoreError::UnsupportedHash { cid: *cid, code }),
    };
    if ok {
        Ok(())
    } else {
        Err(StoreError::HashMismatch { cid: *cid })
    }
}

/// Errors of the block store, pins and repo.
#[derive(Debug, Error)]
pub enum StoreError {
    /// An I/O error on a path in the repo.
    #[error("{op} {path}: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// The path involved.
        path: std::path::PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The data directory's path names something that is not a directory.
    #[error("the data directory {path} is not a directory; pass --data with a directory's path")]
    NotADirectory {
        /// The path.
        path: std::path::PathBuf,
    },
    /// The repo's files cannot be created or written for lack of permission.
    #[error("cannot write to {path} (Permission denied): run meshcast as a user that may write there, or pass --data with a directory it may")]
    NotWritable {
        /// The path that could not be created or written.
        path: std::path::PathBuf,
    },
    /// A command that only reads was pointed at a directory that holds no
    /// repo (it creates none).
    #[error("no meshcast repo in {path}; run the command where `meshcast serve` or `meshcast add` keeps its data, or pass --data DIR")]
    NoRepo {
        /// The directory looked in.
        path: std::path::PathBuf,
    },
    /// Bytes that do not hash to their CID.
    #[error("block {cid} does not match its hash")]
    HashMismatch {
        /// The CID the bytes claim.
        cid: Cid,
    },
    /// A CID whose hash function we cannot check.
    #[error("block {cid} uses hash function 0x{code:x}, which meshcast does not support")]
    UnsupportedHash {
        /// The CID.
        cid: Cid,
        /// Its multihash code.
        code: u64,
    },
    /// A block needed to walk a DAG is not in the store.
    #[error("block {cid} is not in the store")]
    NotFound {
        /// The missing CID.
        cid: Cid,
    },
    /// A block could not be decoded while walking a DAG.
    #[error("block {cid} is malformed: {reason}")]
    Malformed {
        /// The CID of the bad block.
        cid: Cid,
        /// What is wrong with it.
        reason: String,
    },
    /// A CAR file that cannot be read.
    #[error("invalid CAR: {0}")]
    Car(String),
    /// A file in the repo that is not what meshcast wrote.
    #[error("repo corrupt at {path}: {reason}; run `meshcast repo verify`")]
    Corrupt {
        /// The path.
        path: std::path::PathBuf,
        /// What is wrong.
        reason: String,
    },
}

impl StoreError {
    /// Wraps an I/O error with the operation and path.
    pub fn io(
        op: &'static str,
        path: impl Into<std::path::PathBuf>,
    ) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.into();
        move |source| Self::Io { op, path, source }
    }
}

/// Reading blocks: all the exporter, the gateway and Bitswap's answers need.
///
/// Only [`BlockRead::get`] is required; the other reads default to it, so a
/// wrapper that watches or slows reads implements just the ones it changes.
/// Stores override the defaults where they have a cheaper way (a `stat`
/// for [`BlockRead::size`], a memory map for [`BlockRead::get_for_send`]).
/// Methods block (the file store does file I/O); async callers use
/// `spawn_blocking`. Implementations allow any number of concurrent readers
/// alongside writers.
pub trait BlockRead: Send + Sync + 'static {
    /// The block's bytes, if present.
    fn get(&self, cid: &Cid) -> Result<Option<Bytes>, StoreError>;
    /// Whether the block is present.
    fn has(&self, cid: &Cid) -> Result<bool, StoreError> {
        Ok(self.get(cid)?.is_some())
    }
    /// The block's size, if present.
    fn size(&self, cid: &Cid) -> Result<Option<u64>, StoreError> {
        Ok(self.get(cid)?.map(|b| b.len() as u64))
    }
    /// A block's bytes for sending as they are (an HTTP body): the same
    /// bytes as [`BlockRead::get`], which stores with one file per block
    /// give as a memory map registered in [`BlockRead::mapped_files`].
    fn get_for_send(&self, cid: &Cid) -> Result<Option<Bytes>, StoreError> {
        self.get(cid)
    }
    /// Where the mappings [`BlockRead::get_for_send`] hands out are
    /// registered, if it maps.
    fn mapped_files(&self) -> Option<&std::sync::Arc<mapped::MappedFiles>> {
        None
    }
}

/// A content-addressed block store: reads, and the writes and maintenance
/// (gc, verify) only the repo, the importer and fetchers do.
pub trait Blockstore: BlockRead {
    /// Stores blocks; when this returns, all of them are durable and none is
    /// ever visible half-written. Callers must have verified the hashes.
    fn put_many(&self, blocks: &[Block]) -> Result<(), StoreError>;
    /// Stores one block.
    fn put(&self, block: &Block) -> Result<(), StoreError> {
        self.put_many(std::slice::from_ref(block))
    }
    /// Deletes a block by multihash; `true` if it was present.
    fn delete(&self, mh: &Multihash) -> Result<bool, StoreError>;
    /// Every stored multihash.
    fn keys(&self) -> Result<Vec<Multihash>, StoreError>;
    /// The raw bytes stored under a multihash (for verification).
    fn get_by_hash(&self, mh: &Multihash) -> Result<Option<Bytes>, StoreError>;
}

/// Writes a small file so that a crash leaves the old or the new contents,
/// never a mix: a temporary file beside it, fsynced, renamed over it.
pub fn write_atomic(path: &std::path::Path, bytes: &[u8]) -> Result<(), StoreError> {
    write_file(path, bytes, 0o644)
}

/// [`write_atomic`] for a secret (a private key): readable by the owner only.
pub fn write_secret(path: &std::path::Path, bytes: &[u8]) -> Result<(), StoreError> {
    write_file(path, bytes, 0o600)
}

fn write_file(path: &std::path::Path, bytes: &[u8], mode: u32) -> Result<(), StoreError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let tmp = path.with_file_name(format!(".{name}.tmp"));
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(StoreError::io("create", dir))?;
    }
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&tmp)
        .map_err(StoreError::io("create", &tmp))?;
    f.write_all(bytes).map_err(StoreError::io("write", &tmp))?;
    f.sync_data().map_err(StoreError::io("fsync", &tmp))?;
    std::fs::rename(&tmp, path).map_err(StoreError::io("rename", &tmp))
}

/// Reads a block, failing with [`StoreError::NotFound`] when absent.
pub fn require(store: &dyn BlockRead, cid: &Cid) -> Result<Bytes, StoreError> {
    store.get(cid)?.ok_or(StoreError::NotFound { cid: *cid })
}

/// The CIDs a block links to (dag-pb links; raw and identity have none).
pub fn links(cid: &Cid, data: &[u8]) -> Result<Vec<Cid>, StoreError> {
    match cid.codec() {
        DAG_PB => {
            let node = crate::dagpb::PbNode::decode(data).map_err(|e| StoreError::Malformed {
                cid: *cid,
                reason: e.to_string(),
            })?;
            node.links
                .iter()
                .map(|l| {
                    Cid::try_from(l.hash.as_slice()).map_err(|e| StoreError::Malformed {
                        cid: *cid,
                        reason: format!("bad link CID: {e}"),
                    })
                })
                .collect()
        }
        _ => Ok(Vec::new()),
    }
}

/// Where an importer puts the blocks it finishes.
pub trait BlockSink {
    /// Takes one finished block (already hashed by the importer).
    fn put_block(&mut self, block: Block) -> Result<(), StoreError>;
}

/// Drops every block: for `add --only-hash`.
#[derive(Debug, Default, Clone, Copy)]
pub struct Discard;

impl BlockSink for Discard {
    fn put_block(&mut self, _block: Block) -> Result<(), StoreError> {
        Ok(())
    }
}

impl BlockSink for Vec<Block> {
    fn put_block(&mut self, block: Block) -> Result<(), StoreError> {
        self.push(block);
        Ok(())
    }
}

/// Buffers blocks and writes them to a store in batches on background
/// threads, so the file store makes each batch durable with one sync while the
/// importer goes on hashing the next. At most [`BatchWriter::QUEUE`] batches
/// wait, so memory stays bounded when the disk is slower than the hashing.
/// Call [`BatchWriter::flush`] before pinning what was written.
pub struct BatchWriter {
    pending: Vec<Block>,
    pending_bytes: usize,
    queue: Option<std::sync::mpsc::SyncSender<Vec<Block>>>,
    workers: Vec<std::thread::JoinHandle<Result<u64, StoreError>>>,
    /// Blocks the store has taken so far (updated by [`BatchWriter::flush`]).
    pub written: u64,
}

impl BatchWriter {
    /// Batches are handed to the writer threads at this many bytes.
    pub const BATCH_BYTES: usize = 8 << 20;
    /// Batches that may wait for a writer thread.
    pub const QUEUE: usize = 2;
    /// Writer threads: while one waits for its batch to reach the disk, the
    /// other writes the next, which keeps the disk busy.
    pub const THREADS: usize = 3;

    /// A writer over `store`.
    pub fn new(store: std::sync::Arc<dyn Blockstore>) -> Self {
        let (queue, batches) = std::sync::mpsc::sync_channel::<Vec<Block>>(Self::QUEUE);
        let batches = std::sync::Arc::new(std::sync::Mutex::new(batches));
        let workers = (0..Self::THREADS)
            .map(|i| {
                let (store, batches) = (store.clone(), batches.clone());
                std::thread::Builder::new()
                    .name(format!("block-writer-{i}"))
                    .spawn(move || {
                        let mut n = 0;
                        loop {
                            // The lock is held only while taking a batch.
                            let next = batches.lock().unwrap_or_else(|e| e.into_inner()).recv();
                            let Ok(batch) = next else { return Ok(n) };
                            store.put_many(&batch)?;
                            n += batch.len() as u64;
                        }
                    })
                    .expect("spawning a block writer thread")
            })
            .collect();
        Self {
            pending: Vec::new(),
            pending_bytes: 0,
            queue: Some(queue),
            workers,
            written: 0,
        }
    }

    /// Hands the buffered blocks to the writer thread.
    fn send(&mut self) -> Result<(), StoreError> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let batch = std::mem::take(&mut self.pending);
        self.pending_bytes = 0;
        let sent = self.queue.as_ref().map(|q| q.send(batch));
        match sent {
            Some(Ok(())) => Ok(()),
            // The thread ended early: it failed; its error says why.
            _ => self.join().map(|_| ()),
        }
    }

    fn join(&mut self) -> Result<u64, StoreError> {
        self.queue = None;
        let mut total = Ok(0);
        for w in self.workers.drain(..) {
            let r = w.join().unwrap_or_else(|p| std::panic::resume_unwind(p));
            total = match (total, r) {
                (Ok(a), Ok(b)) => Ok(a + b),
                (Err(e), _) | (_, Err(e)) => Err(e),
            };
        }
        total
    }

    /// Writes every block given so far and waits until all are durable.
    /// The writer takes no blocks after this.
    pub fn flush(&mut self) -> Result<(), StoreError> {
        self.send()?;
        self.written += self.join()?;
        Ok(())
    }
}

impl Drop for BatchWriter {
    fn drop(&mut self) {
        // Unflushed blocks are dropped with the writer (an add that failed);
        // wait for the thread so no write outlives the repo lock.
        self.pending.clear();
        let _ = self.join();
    }
}

impl BlockSink for BatchWriter {
    fn put_block(&mut self, block: Block) -> Result<(), StoreError> {
        if self.workers.is_empty() {
            return Err(StoreError::Io {
                op: "write after flush",
                path: std::path::PathBuf::new(),
                source: std::io::Error::other("the batch writer was already flushed"),
            });
        }
        self.pending_bytes += block.data.len();
        self.pending.push(block);
        if self.pending_bytes >= Self::BATCH_BYTES {
            self.send()?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    /// The same contract, run against every store.
    pub(crate) fn exercise(store: &dyn Blockstore) {
        let a = Block::new(cid::Version::V1, RAW, b"alpha".to_vec());
        let b = Block::new(cid::Version::V0, DAG_PB, vec![0x0a, 0x02, 0x08, 0x01]);
        assert!(!store.has(&a.cid).unwrap());
        assert_eq!(store.get(&a.cid).unwrap(), None);
        store.put_many(&[a.clone(), b.clone()]).unwrap();
        // Idempotent.
        store.put(&a).unwrap();
        assert_eq!(store.get(&a.cid).unwrap(), Some(a.data.clone()));
        assert_eq!(store.size(&b.cid).unwrap(), Some(4));
        // Keyed by multihash: the v1 dag-pb form of b is the same block.
        let b1 = Cid::new_v1(DAG_PB, *b.cid.hash());
        assert!(store.has(&b1).unwrap());
        let mut keys = store.keys().unwrap();
        keys.sort_by_key(|k| k.to_bytes());
        let mut want = vec![*a.cid.hash(), *b.cid.hash()];
        want.sort_by_key(|k| k.to_bytes());
        assert_eq!(keys, want);
        assert!(store.delete(a.cid.hash()).unwrap());
        assert!(!store.delete(a.cid.hash()).unwrap());
        assert!(!store.has(&a.cid).unwrap());
        // Identity CIDs hold their own bytes.
        let id = Cid::new_v1(RAW, Multihash::wrap(IDENTITY, b"hi").unwrap());
        assert_eq!(store.get(&id).unwrap().as_deref(), Some(&b"hi"[..]));
        assert_eq!(
            store.get_for_send(&id).unwrap().as_deref(),
            Some(&b"hi"[..])
        );
        // Bytes for sending are the stored bytes, small or large (mapped).
        let big: Vec<u8> = (0..mapped::MAP_MIN as u32 * 3).map(|i| i as u8).collect();
        let big = Block::new(cid::Version::V1, RAW, big);
        store.put(&big).unwrap();
        assert!(store.get_for_send(&big.cid).unwrap() == Some(big.data.clone()));
        assert_eq!(store.get_for_send(&b.cid).unwrap(), Some(b.data.clone()));
        assert_eq!(store.get_for_send(&a.cid).unwrap(), None);
        assert!(store.delete(big.cid.hash()).unwrap());
    }

    #[test]
    fn mem_store_contract() {
        exercise(&MemStore::new());
    }

    #[test]
    fn fs_store_contract() {
        let dir = tempfile::tempdir().unwrap();
        exercise(&FsStore::open(dir.path()).unwrap());
    }

    #[test]
    fn batch_writer_flushes_everything() {
        let store = Arc::new(MemStore::new());
        let mut w = BatchWriter::new(store.clone());
        let blocks: Vec<Block> = (0..100u32)
            .map(|i| Block::new(cid::Version::V1, RAW, i.to_be_bytes().to_vec()))
            .collect();
        for b in &blocks {
            w.put_block(b.clone()).unwrap();
        }
        w.flush().unwrap();
        assert_eq!(w.written, 100);
        for b in &blocks {
            assert!(store.has(&b.cid).unwrap());
        }
    }

    #[test]
    fn batch_writer_reports_store_failures() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(FsStore::open(dir.path()).unwrap());
        // A store whose temp directory is gone cannot write.
        std::fs::remove_dir_all(dir.path().join("tmp")).unwrap();
        let mut w = BatchWriter::new(store);
        w.put_block(Block::new(cid::Version::V1, RAW, b"x".to_vec()))
            .unwrap();
        assert!(matches!(w.flush(), Err(StoreError::Io { .. })));
    }

    #[test]
    fn concurrent_readers_while_writing() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(FsStore::open(dir.path()).unwrap());
        let blocks: Vec<Block> = (0..400u32)
            .map(|i| Block::new(cid::Version::V1, RAW, vec![i as u8; 1000 + i as usize]))
            .collect();
        let writer = {
            let (store, blocks) = (store.clone(), blocks.clone());
            std::thread::spawn(move || {
                for chunk in blocks.chunks(10) {
                    store.put_many(chunk).unwrap();
                }
            })
        };
        // Readers see either nothing or the whole, correct block.
        let mut seen = 0;
        while !writer.is_finished() || seen < blocks.len() {
            seen = 0;
            for b in &blocks {
                if let Some(data) = store.get(&b.cid).unwrap() {
                    assert_eq!(data, b.data);
                    seen += 1;
                }
            }
        }
        writer.join().unwrap();
    }

    #[test]
    fn gc_keeps_pinned_dags_only() {
        use crate::dagpb::{PbLink, PbNode};
        let dir = tempfile::tempdir().unwrap();
        let repo = Repo::open(dir.path()).unwrap();
        let leaf = Block::new(cid::Version::V1, RAW, b"leaf".to_vec());
        let root = Block::new(
            cid::Version::V1,
            DAG_PB,
            PbNode {
                links: vec![PbLink {
                    hash: leaf.cid.to_bytes(),
                    name: Some(String::new()),
                    tsize: Some(4),
                }],
                data: None,
            }
            .encode(),
        );
        let loose = Block::new(cid::Version::V1, RAW, b"loose".to_vec());
        let direct = Block::new(cid::Version::V1, RAW, b"direct".to_vec());
        repo.blocks
            .put_many(&[leaf.clone(), root.clone(), loose.clone(), direct.clone()])
            .unwrap();
        repo.pins.add(&root.cid, pins::PinKind::Recursive).unwrap();
        repo.pins.add(&direct.cid, pins::PinKind::Direct).unwrap();
        let report = repo.gc().unwrap();
        assert_eq!(report.removed, vec![*loose.cid.hash()]);
        assert_eq!(report.kept, 3);
        assert!(repo.blocks.has(&leaf.cid).unwrap());
        assert!(!repo.blocks.has(&loose.cid).unwrap());
        // Unpinned, everything goes.
        repo.pins.remove(&root.cid).unwrap();
        repo.pins.remove(&direct.cid).unwrap();
        assert_eq!(repo.gc().unwrap().removed.len(), 3);
    }

    #[test]
    fn verify_reports_corrupt_blocks() {
        let dir = tempfile::tempdir().unwrap();
        let repo = Repo::open(dir.path()).unwrap();
        let good = Block::new(cid::Version::V1, RAW, b"good".to_vec());
        let bad = Block::new(cid::Version::V1, RAW, b"bad".to_vec());
        repo.blocks.put_many(&[good, bad.clone()]).unwrap();
        std::fs::write(repo.blocks.inner().path_of(bad.cid.hash()), b"BAD").unwrap();
        let report = repo.verify().unwrap();
        assert_eq!(report.checked, 2);
        assert_eq!(report.corrupt.len(), 1);
        assert_eq!(report.corrupt[0].0, *bad.cid.hash());
    }
}
