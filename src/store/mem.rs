//! An in-memory [`Blockstore`] for tests and ephemeral nodes.

use super::{Block, BlockRead, Blockstore, Multihash, StoreError};
use bytes::Bytes;
use cid::Cid;
use std::collections::HashMap;
use std::sync::RwLock;

/// Blocks in a hash map behind a lock.
#[derive(Debug, Default)]
pub struct MemStore {
    blocks: RwLock<HashMap<Multihash, Bytes>>,
}

impl MemStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<Multihash, Bytes>> {
        // A panic while holding the lock cannot leave a half-inserted entry.
        self.blocks.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<Multihash, Bytes>> {
        self.blocks.write().unwrap_or_else(|e| e.into_inner())
    }
}

impl BlockRead for MemStore {
    fn get(&self, cid: &Cid) -> Result<Option<Bytes>, StoreError> {
        if cid.hash().code() == super::IDENTITY {
            return Ok(Some(Bytes::copy_from_slice(cid.hash().digest())));
        }
        Ok(self.read().get(cid.hash()).cloned())
    }
    fn has(&self, cid: &Cid) -> Result<bool, StoreError> {
        Ok(cid.hash().code() == super::IDENTITY || self.read().contains_key(cid.hash()))
    }
}

impl Blockstore for MemStore {
    fn put_many(&self, blocks: &[Block]) -> Result<(), StoreError> {
        let mut map = self.write();
        for b in blocks {
            if b.cid.hash().code() != super::IDENTITY {
                map.insert(*b.cid.hash(), b.data.clone());
            }
        }
        Ok(())
    }
    fn delete(&self, mh: &Multihash) -> Result<bool, StoreError> {
        Ok(self.write().remove(mh).is_some())
    }
    fn keys(&self) -> Result<Vec<Multihash>, StoreError> {
        Ok(self.read().keys().copied().collect())
    }
    fn get_by_hash(&self, mh: &Multihash) -> Result<Option<Bytes>, StoreError> {
        Ok(self.read().get(mh).cloned())
    }
}
