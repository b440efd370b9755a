//! A [`Blockstore`] that tells subscribers about every block put into it.
//!
//! Flow: the repo wraps its store in [`Notifying`], so every put (an add, a
//! live segment, a block fetched from a peer) ends with one [`Added`] per
//! block on a bounded broadcast channel; Bitswap subscribes and answers the
//! peers that asked for a block before it existed (a live segment is wanted
//! the moment a playlist names it). A subscriber that falls more than
//! [`Notifying::CAPACITY`] blocks behind is told how many it missed
//! ([`tokio::sync::broadcast::error::RecvError::Lagged`]) and must look
//! again at what it was waiting for.

use super::{Block, BlockRead, Blockstore, Multihash, StoreError};
use bytes::Bytes;
use cid::Cid;
use tokio::sync::broadcast;

/// A block that was just stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Added {
    /// Its CID.
    pub cid: Cid,
    /// Its size in bytes.
    pub size: u64,
}

/// `S`, announcing each stored block to subscribers.
#[derive(Debug)]
pub struct Notifying<S> {
    inner: S,
    added: broadcast::Sender<Added>,
}

impl<S> Notifying<S> {
    /// Announcements kept for a slow subscriber before it lags.
    pub const CAPACITY: usize = 1024;

    /// Wraps `inner`.
    pub fn new(inner: S) -> Self {
        Self {
            inner,
            added: broadcast::Sender::new(Self::CAPACITY),
        }
    }

    /// A receiver of every block put from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Added> {
        self.added.subscribe()
    }

    /// The wrapped store (for what the [`Blockstore`] trait does not cover;
    /// blocks put through it are not announced).
    pub fn inner(&self) -> &S {
        &self.inner
    }
}

// Reads pass through unchanged, so the inner store's cheaper `has`, `size`
// and mapped sends are kept.
impl<S: BlockRead> BlockRead for Notifying<S> {
    fn get(&self, cid: &Cid) -> Result<Option<Bytes>, StoreError> {
        self.inner.get(cid)
    }
    fn has(&self, cid: &Cid) -> Result<bool, StoreError> {
        self.inner.has(cid)
    }
    fn size(&self, cid: &Cid) -> Result<Option<u64>, StoreError> {
        self.inner.size(cid)
    }
    fn get_for_send(&self, cid: &Cid) -> Result<Option<Bytes>, StoreError> {
        self.inner.get_for_send(cid)
    }
    fn mapped_files(&self) -> Option<&std::sync::Arc<super::mapped::MappedFiles>> {
        self.inner.mapped_files()
    }
}

impl<S: Blockstore> Blockstore for Notifying<S> {
    fn put_many(&self, blocks: &[Block]) -> Result<(), StoreError> {
        self.inner.put_many(blocks)?;
        // Only once the blocks are durable, so a subscriber reading one back
        // finds it. No subscriber is not an error.
        for b in blocks {
            let _ = self.added.send(Added {
                cid: b.cid,
                size: b.data.len() as u64,
            });
        }
        Ok(())
    }
    fn delete(&self, mh: &Multihash) -> Result<bool, StoreError> {
        self.inner.delete(mh)
    }
    fn keys(&self) -> Result<Vec<Multihash>, StoreError> {
        self.inner.keys()
    }
    fn get_by_hash(&self, mh: &Multihash) -> Result<Option<Bytes>, StoreError> {
        self.inner.get_by_hash(mh)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{MemStore, RAW};
    use tokio::sync::broadcast::error::TryRecvError;

    fn block(i: u32) -> Block {
        Block::new(cid::Version::V1, RAW, i.to_be_bytes().to_vec())
    }

    #[test]
    fn announces_stored_blocks() {
        let store = Notifying::new(MemStore::new());
        let mut rx = store.subscribe();
        let (a, b) = (block(1), block(2));
        store.put_many(&[a.clone(), b.clone()]).unwrap();
        store.put(&a).unwrap();
        let got: Vec<Added> = std::iter::from_fn(|| rx.try_recv().ok()).collect();
        let added = |b: &Block| Added {
            cid: b.cid,
            size: 4,
        };
        assert_eq!(got, vec![added(&a), added(&b), added(&a)]);
        assert!(store.has(&b.cid).unwrap());
    }

    #[test]
    fn failed_puts_announce_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = Notifying::new(crate::store::FsStore::open(dir.path()).unwrap());
        let mut rx = store.subscribe();
        std::fs::remove_dir_all(dir.path().join("tmp")).unwrap();
        assert!(store.put(&block(1)).is_err());
        assert_eq!(rx.try_recv(), Err(TryRecvError::Empty));
    }

    #[test]
    fn slow_subscribers_learn_they_lagged() {
        let store = Notifying::new(MemStore::new());
        let mut rx = store.subscribe();
        let blocks: Vec<Block> = (0..Notifying::<MemStore>::CAPACITY as u32 + 5)
            .map(block)
            .collect();
        store.put_many(&blocks).unwrap();
        assert_eq!(rx.try_recv(), Err(TryRecvError::Lagged(5)));
        assert_eq!(rx.try_recv().unwrap().cid, blocks[5].cid);
    }
}
