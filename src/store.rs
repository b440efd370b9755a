//! Content-addressed block storage, pins and garbage collection.
//!
//! Flow: the UnixFS importer hands finished [`Block`]s to a [`Blockstore`]
//! (in batches, so the file store can make a whole batch durable with one
//! sync); pins name the roots to keep; `repo gc` walks the pinned DAGs and
//! deletes every other block; the gateway and exporter read blocks back.
//!
//! Blocks are keyed by multihash, as in kubo, so the same bytes under a CIDv0
//! and a CIDv1 are stored once.

pub mod car;
pub mod fs;
pub mod mem;
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
    pub fn io(op: &'static str, path: impl Into<std::path::PathBuf>) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.into();
        move |source| Self::Io { op, path, source }
    }
}

/// A content-addressed block store.
///
/// Methods block (the file store does file I/O); async callers use
/// `spawn_blocking`. Implementations allow any number of concurrent readers
/// alongside writers.
pub trait Blockstore: Send + Sync + 'static {
    /// The block's bytes, if present.
    fn get(&self, cid: &Cid) -> Result<Option<Bytes>, StoreError>;
    /// Whether the block is present.
    fn has(&self, cid: &Cid) -> Result<bool, StoreError>;
    /// The block's size, if present.
    fn size(&self, cid: &Cid) -> Result<Option<u64>, StoreError>;
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

impl<T: Blockstore + ?Sized> Blockstore for std::sync::Arc<T> {
    fn get(&self, cid: &Cid) -> Result<Option<Bytes>, StoreError> {
        (**self).get(cid)
    }
    fn has(&self, cid: &Cid) -> Result<bool, StoreError> {
        (**self).has(cid)
    }
    fn size(&self, cid: &Cid) -> Result<Option<u64>, StoreError> {
        (**self).size(cid)
    }
    fn put_many(&self, blocks: &[Block]) -> Result<(), StoreError> {
        (**self).put_many(blocks)
    }
    fn delete(&self, mh: &Multihash) -> Result<bool, StoreError> {
        (**self).delete(mh)
    }
    fn keys(&self) -> Result<Vec<Multihash>, StoreError> {
        (**self).keys()
    }
    fn get_by_hash(&self, mh: &Multihash) -> Result<Option<Bytes>, StoreError> {
        (**self).get_by_hash(mh)
    }
}

/// Reads a block, failing with [`StoreError::NotFound`] when absent.
pub fn require(store: &dyn Blockstore, cid: &Cid) -> Result<Bytes, StoreError> {
    store.get(cid)?.ok_or(StoreError::NotFound { cid: *cid })
}

/// The CIDs a block links to (dag-pb links; raw and identity have none).
pub fn links(cid: &Cid, data: &[u8]) -> Result<Vec<Cid>, StoreError> {
    match cid.codec() {
        DAG_PB => {
            let node = crate::unixfs::pb::PbNode::decode(data).map_err(|e| StoreError::Malformed {
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
