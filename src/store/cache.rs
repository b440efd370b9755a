//! A bounded in-memory cache of block bytes in front of a [`Blockstore`].
//!
//! Flow: the repo's store is `Notifying<Cached<FsStore>>`. Every block put
//! through it (a live segment, a playlist, a block fetched from a peer) is
//! kept in memory as it reaches the disk, so the segments viewers are about
//! to ask for are hot before the first request; every block read from the
//! disk is kept too. When the cache holds more than its capacity, the least
//! recently used blocks are dropped. A hit hands out the same [`Bytes`] to
//! every reader (a reference count, no copy), and [`BlockCache::get`]
//! answers without any I/O, so the gateway serves a hot segment without a
//! trip to the blocking pool.
//!
//! The cache also keeps open the file of each large block it holds (when
//! the store keeps one file per block, [`BlockFiles`]) and can say, for an
//! address inside a cached block's memory, which file and offset hold the
//! same bytes ([`BlockCache::file_span`]): the gateway's connections send
//! those bytes with sendfile(2) instead of copying them out of memory.
//!
//! Blocks are immutable, so a cached block never goes stale; a block deleted
//! through the store leaves the cache too. (One deleted by another process,
//! `meshcast repo gc` while serving, is still served from memory until it is
//! evicted: the bytes are the right ones, only no longer on disk.)

use super::{Block, Blockstore, FsStore, MemStore, Multihash, StoreError, IDENTITY};
use bytes::Bytes;
use cid::Cid;
use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::{IoSlice, Read};
use std::sync::{Arc, Mutex};

/// Bytes charged per cached block besides its data (map entries, the
/// `Bytes` handle, an open file), so that many tiny blocks cannot grow the
/// maps without bound.
const ENTRY_OVERHEAD: usize = 192;

/// Blocks at least this large keep their file open for sendfile(2); below
/// it a copy costs about as much as the extra system call. It also bounds
/// the files kept open to `capacity / SENDFILE_MIN`.
pub const SENDFILE_MIN: usize = 64 * 1024;

/// Stores that keep each block in a file of its own, which the cache can
/// keep open for sendfile(2).
pub trait BlockFiles {
    /// The open file holding the block; `None` if it is not stored (or the
    /// store has no files).
    fn open_block(&self, mh: &Multihash) -> Result<Option<File>, StoreError>;

    /// The block's bytes, read through the file it returns with them (so
    /// both are the same bytes); `None` as for [`BlockFiles::open_block`].
    fn read_block(&self, mh: &Multihash) -> Result<Option<(Bytes, File)>, StoreError>;
}

impl BlockFiles for FsStore {
    fn open_block(&self, mh: &Multihash) -> Result<Option<File>, StoreError> {
        let p = self.path_of(mh);
        match File::open(&p) {
            Ok(f) => Ok(Some(f)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(StoreError::io("open", p)(e)),
        }
    }

    fn read_block(&self, mh: &Multihash) -> Result<Option<(Bytes, File)>, StoreError> {
        let Some(mut file) = self.open_block(mh)? else {
            return Ok(None);
        };
        let p = self.path_of(mh);
        let len = file.metadata().map_err(StoreError::io("stat", &p))?.len();
        let mut buf = Vec::with_capacity(usize::try_from(len).unwrap_or(0));
        file.read_to_end(&mut buf)
            .map_err(StoreError::io("read", p))?;
        Ok(Some((Bytes::from(buf), file)))
    }
}

impl BlockFiles for MemStore {
    fn open_block(&self, _mh: &Multihash) -> Result<Option<File>, StoreError> {
        Ok(None)
    }

    fn read_block(&self, _mh: &Multihash) -> Result<Option<(Bytes, File)>, StoreError> {
        Ok(None)
    }
}

/// Where some bytes of a cached block are in its file.
#[derive(Debug, Clone)]
pub struct FileSpan {
    /// The block's file.
    pub file: Arc<File>,
    /// Where the bytes start in it.
    pub offset: u64,
    /// How many bytes.
    pub len: usize,
}

/// The least recently used blocks, by multihash, holding at most `capacity`
/// bytes (data plus a fixed overhead per block).
#[derive(Debug)]
pub struct BlockCache {
    capacity: usize,
    lru: Mutex<Lru>,
}

#[derive(Debug, Default)]
struct Lru {
    entries: HashMap<Multihash, Entry>,
    /// Use order: the smallest tick is the least recently used.
    order: BTreeMap<u64, Multihash>,
    /// The blocks with an open file, by the address of their bytes.
    by_addr: BTreeMap<usize, Multihash>,
    tick: u64,
    bytes: usize,
}

#[derive(Debug)]
struct Entry {
    data: Bytes,
    file: Option<Arc<File>>,
    tick: u64,
}

fn charge(data: &Bytes) -> usize {
    data.len() + ENTRY_OVERHEAD
}

impl Lru {
    fn touch(&mut self, mh: &Multihash) -> Option<Bytes> {
        let tick = self.tick + 1;
        let e = self.entries.get_mut(mh)?;
        self.order.remove(&e.tick);
        e.tick = tick;
        self.order.insert(tick, *mh);
        self.tick = tick;
        Some(e.data.clone())
    }

    fn remove(&mut self, mh: &Multihash) {
        if let Some(e) = self.entries.remove(mh) {
            self.order.remove(&e.tick);
            self.forget(&e);
        }
    }

    fn evict_oldest(&mut self) -> bool {
        let Some((_, oldest)) = self.order.pop_first() else {
            return false;
        };
        if let Some(e) = self.entries.remove(&oldest) {
            self.forget(&e);
        }
        true
    }

    /// Drops the bookkeeping of a removed entry. Its address leaves
    /// `by_addr` with it: once the last `Bytes` of it is gone, the memory
    /// may hold something else.
    fn forget(&mut self, e: &Entry) {
        if e.file.is_some() {
            self.by_addr.remove(&(e.data.as_ptr() as usize));
        }
        self.bytes -= charge(&e.data);
    }

    fn file_span(&self, addr: usize, len: usize) -> Option<FileSpan> {
        let (&start, mh) = self.by_addr.range(..=addr).next_back()?;
        let e = self.entries.get(mh)?;
        let offset = addr - start;
        if offset >= e.data.len() {
            return None;
        }
        Some(FileSpan {
            file: e.file.clone()?,
            offset: offset as u64,
            len: len.min(e.data.len() - offset),
        })
    }
}

impl BlockCache {
    /// A cache holding at most `capacity` bytes; 0 caches nothing.
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity,
            lru: Mutex::default(),
        }
    }

    /// Its capacity in bytes.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// The largest block kept: a quarter of the capacity, so one block never
    /// empties the cache of the others.
    pub fn max_block(&self) -> usize {
        (self.capacity / 4).saturating_sub(ENTRY_OVERHEAD)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Lru> {
        self.lru.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The block's bytes if cached (and now the most recently used).
    pub fn get(&self, mh: &Multihash) -> Option<Bytes> {
        if self.capacity == 0 {
            return None;
        }
        self.lock().touch(mh)
    }

    /// Whether the block is cached (its recency is left alone).
    pub fn contains(&self, mh: &Multihash) -> bool {
        self.capacity > 0 && self.lock().entries.contains_key(mh)
    }

    /// Keeps `data` as the most recently used block, dropping the least
    /// recently used ones to make room. Blocks above
    /// [`BlockCache::max_block`] are not kept. `file`, if given, must hold
    /// exactly `data`; it is kept open for blocks of [`SENDFILE_MIN`] bytes
    /// or more.
    pub fn insert(&self, mh: Multihash, data: Bytes, file: Option<File>) {
        if data.len() > self.max_block() {
            return;
        }
        let file = file.filter(|_| data.len() >= SENDFILE_MIN).map(Arc::new);
        let mut lru = self.lock();
        if lru.touch(&mh).is_some() {
            return;
        }
        let need = charge(&data);
        while lru.bytes + need > self.capacity && lru.evict_oldest() {}
        lru.tick += 1;
        let tick = lru.tick;
        lru.order.insert(tick, mh);
        if file.is_some() {
            lru.by_addr.insert(data.as_ptr() as usize, mh);
        }
        lru.entries.insert(mh, Entry { data, file, tick });
        lru.bytes += need;
    }

    /// Drops a block.
    pub fn remove(&self, mh: &Multihash) {
        if self.capacity > 0 {
            self.lock().remove(mh);
        }
    }

    /// For the first of `bufs` that lies in the memory of a cached block
    /// with an open file: its index, and where its bytes are in that file
    /// (as many of them as the block holds). The file holds the same bytes
    /// as the memory, so they may be sent from either.
    pub fn file_span(&self, bufs: &[IoSlice<'_>]) -> Option<(usize, FileSpan)> {
        if self.capacity == 0 {
            return None;
        }
        let lru = self.lock();
        if lru.by_addr.is_empty() {
            return None;
        }
        bufs.iter().enumerate().find_map(|(i, b)| {
            let span = lru.file_span(b.as_ptr() as usize, b.len())?;
            Some((i, span))
        })
    }

    /// Blocks cached.
    pub fn len(&self) -> usize {
        self.lock().entries.len()
    }

    /// Whether nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes charged against the capacity.
    pub fn bytes(&self) -> usize {
        self.lock().bytes
    }

    /// Files kept open.
    pub fn files(&self) -> usize {
        self.lock().by_addr.len()
    }
}

/// `S` with a [`BlockCache`] in front: puts and reads fill it, deletes
/// empty it.
#[derive(Debug)]
pub struct Cached<S> {
    inner: S,
    cache: Arc<BlockCache>,
}

impl<S> Cached<S> {
    /// Wraps `inner` with a cache of `capacity` bytes (0: no cache).
    pub fn new(inner: S, capacity: usize) -> Self {
        Self {
            inner,
            cache: Arc::new(BlockCache::new(capacity)),
        }
    }

    /// The wrapped store (reads through it leave the cache alone).
    pub fn inner(&self) -> &S {
        &self.inner
    }
}

impl<S: Blockstore + BlockFiles> Blockstore for Cached<S> {
    fn get(&self, cid: &Cid) -> Result<Option<Bytes>, StoreError> {
        let mh = cid.hash();
        if mh.code() == IDENTITY || self.cache.capacity() == 0 {
            return self.inner.get(cid);
        }
        if let Some(data) = self.cache.get(mh) {
            return Ok(Some(data));
        }
        // Through the block's file, so the cache can keep it with the bytes.
        let (data, file) = match self.inner.read_block(mh)? {
            Some((data, file)) => (data, Some(file)),
            // Not stored, or a store without files.
            None => match self.inner.get(cid)? {
                Some(data) => (data, None),
                None => return Ok(None),
            },
        };
        self.cache.insert(*mh, data.clone(), file);
        Ok(Some(data))
    }

    fn has(&self, cid: &Cid) -> Result<bool, StoreError> {
        if self.cache.contains(cid.hash()) {
            return Ok(true);
        }
        self.inner.has(cid)
    }

    fn size(&self, cid: &Cid) -> Result<Option<u64>, StoreError> {
        if let Some(data) = self.cache.get(cid.hash()) {
            return Ok(Some(data.len() as u64));
        }
        self.inner.size(cid)
    }

    fn put_many(&self, blocks: &[Block]) -> Result<(), StoreError> {
        self.inner.put_many(blocks)?;
        for b in blocks {
            let mh = b.cid.hash();
            if mh.code() == IDENTITY
                || b.data.len() > self.cache.max_block()
                // Put again (a site's unchanged files): now recently used.
                || self.cache.get(mh).is_some()
            {
                continue;
            }
            let file = if b.data.len() >= SENDFILE_MIN {
                self.inner.open_block(mh)?
            } else {
                None
            };
            // A copy: the caller's bytes may be a slice of a larger buffer,
            // which the cache would otherwise keep alive without counting.
            self.cache
                .insert(*mh, Bytes::copy_from_slice(&b.data), file);
        }
        Ok(())
    }

    fn delete(&self, mh: &Multihash) -> Result<bool, StoreError> {
        // Out of the cache first, so no reader finds it there once the
        // file is gone.
        self.cache.remove(mh);
        self.inner.delete(mh)
    }

    fn keys(&self) -> Result<Vec<Multihash>, StoreError> {
        self.inner.keys()
    }

    fn get_by_hash(&self, mh: &Multihash) -> Result<Option<Bytes>, StoreError> {
        // What is on disk, not what is remembered: `repo verify` checks it.
        self.inner.get_by_hash(mh)
    }

    fn block_cache(&self) -> Option<&Arc<BlockCache>> {
        Some(&self.cache)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::RAW;

    fn block(i: u32, len: usize) -> Block {
        let mut data = vec![i as u8; len];
        data[..4].copy_from_slice(&i.to_be_bytes());
        Block::new(cid::Version::V1, RAW, data)
    }

    fn mh(b: &Block) -> Multihash {
        *b.cid.hash()
    }

    #[test]
    fn stays_within_capacity_and_drops_the_least_recently_used() {
        let cap = 4 * (1000 + ENTRY_OVERHEAD);
        let cache = BlockCache::new(cap);
        let blocks: Vec<Block> = (0..6).map(|i| block(i, 1000)).collect();
        for b in &blocks[..4] {
            cache.insert(mh(b), b.data.clone(), None);
        }
        assert_eq!(cache.len(), 4);
        assert_eq!(cache.bytes(), cap);
        // Block 0 is used again, so 1 is now the least recently used.
        assert_eq!(cache.get(&mh(&blocks[0])), Some(blocks[0].data.clone()));
        cache.insert(mh(&blocks[4]), blocks[4].data.clone(), None);
        assert_eq!(cache.len(), 4);
        assert!(cache.get(&mh(&blocks[1])).is_none());
        for i in [0, 2, 3, 4] {
            assert_eq!(cache.get(&mh(&blocks[i])), Some(blocks[i].data.clone()));
        }
        // Now 0 is the oldest again.
        cache.insert(mh(&blocks[5]), blocks[5].data.clone(), None);
        assert!(!cache.contains(&mh(&blocks[0])));
        assert!(cache.bytes() <= cap);
    }

    #[test]
    fn many_small_blocks_are_bounded_too() {
        let cache = BlockCache::new(64 * 1024);
        for i in 0..100_000 {
            let b = block(i, 4);
            cache.insert(mh(&b), b.data.clone(), None);
        }
        assert!(cache.bytes() <= 64 * 1024);
        assert_eq!(cache.len(), 64 * 1024 / (4 + ENTRY_OVERHEAD));
    }

    #[test]
    fn large_blocks_and_zero_capacity_are_not_kept() {
        let cache = BlockCache::new(40_000);
        let big = block(1, 40_000 / 4);
        cache.insert(mh(&big), big.data.clone(), None);
        assert!(cache.is_empty());
        let fits = block(2, cache.max_block());
        cache.insert(mh(&fits), fits.data.clone(), None);
        assert_eq!(cache.len(), 1);

        let off = BlockCache::new(0);
        let b = block(3, 10);
        off.insert(mh(&b), b.data.clone(), None);
        assert!(off.is_empty());
        assert!(off.get(&mh(&b)).is_none());
    }

    #[test]
    fn inserting_again_does_not_double_count() {
        let cache = BlockCache::new(100_000);
        let b = block(1, 1000);
        cache.insert(mh(&b), b.data.clone(), None);
        cache.insert(mh(&b), b.data.clone(), None);
        assert_eq!(cache.len(), 1);
        assert_eq!(cache.bytes(), 1000 + ENTRY_OVERHEAD);
        cache.remove(&mh(&b));
        assert_eq!(cache.bytes(), 0);
        assert!(cache.is_empty());
    }

    #[test]
    fn store_contract_holds_with_a_cache() {
        crate::store::tests::exercise(&Cached::new(MemStore::new(), 1 << 20));
        crate::store::tests::exercise(&Cached::new(MemStore::new(), 0));
        let dir = tempfile::tempdir().unwrap();
        crate::store::tests::exercise(&Cached::new(FsStore::open(dir.path()).unwrap(), 1 << 20));
    }

    #[test]
    fn puts_and_reads_fill_it_and_deletes_empty_it() {
        let dir = tempfile::tempdir().unwrap();
        let store = Cached::new(FsStore::open(dir.path()).unwrap(), 1 << 20);
        let cache = store.block_cache().unwrap().clone();
        let put = block(1, 5000);
        store.put(&put).unwrap();
        // Hot before anyone asked, and the very bytes that were put.
        assert_eq!(cache.get(put.cid.hash()), Some(put.data.clone()));

        // Put behind the cache's back: the first read fills it.
        let read = block(2, 5000);
        store.inner().put(&read).unwrap();
        assert_eq!(cache.get(read.cid.hash()), None);
        assert_eq!(store.get(&read.cid).unwrap(), Some(read.data.clone()));
        assert_eq!(cache.get(read.cid.hash()), Some(read.data.clone()));
        assert_eq!(store.size(&read.cid).unwrap(), Some(5000));

        assert!(store.delete(put.cid.hash()).unwrap());
        assert_eq!(cache.get(put.cid.hash()), None);
        assert_eq!(store.get(&put.cid).unwrap(), None);
        assert!(!store.has(&put.cid).unwrap());
        assert_eq!(cache.get(put.cid.hash()), None);
    }

    #[test]
    fn cached_bytes_do_not_keep_the_callers_buffer() {
        let store = Cached::new(MemStore::new(), 1 << 20);
        let whole = Bytes::from(vec![7u8; 100_000]);
        let b = Block::new(cid::Version::V1, RAW, whole.slice(..1000));
        store.put(&b).unwrap();
        let cached = store.block_cache().unwrap().get(b.cid.hash()).unwrap();
        assert_eq!(cached, b.data);
        assert_ne!(cached.as_ptr(), whole.as_ptr());
    }

    #[test]
    fn verification_reads_the_disk() {
        let dir = tempfile::tempdir().unwrap();
        let store = Cached::new(FsStore::open(dir.path()).unwrap(), 1 << 20);
        let b = block(1, 1000);
        store.put(&b).unwrap();
        std::fs::write(store.inner().path_of(b.cid.hash()), b"BAD").unwrap();
        assert_eq!(
            store.get_by_hash(b.cid.hash()).unwrap().as_deref(),
            Some(&b"BAD"[..])
        );
    }

    /// The bytes of `span` as its file holds them.
    fn file_bytes(span: &FileSpan) -> Vec<u8> {
        use std::os::unix::fs::FileExt;
        let mut buf = vec![0; span.len];
        span.file.read_exact_at(&mut buf, span.offset).unwrap();
        buf
    }

    #[test]
    fn file_spans_name_the_same_bytes_as_memory() {
        let dir = tempfile::tempdir().unwrap();
        let store = Cached::new(FsStore::open(dir.path()).unwrap(), 4 << 20);
        let cache = store.block_cache().unwrap().clone();
        let (put, read, small) = (
            block(1, 300_000),
            block(2, 200_000),
            block(3, SENDFILE_MIN - 1),
        );
        store.put_many(&[put.clone(), small.clone()]).unwrap();
        store.inner().put(&read).unwrap();
        let read_data = store.get(&read.cid).unwrap().unwrap();
        assert_eq!(cache.files(), 2);

        let put_data = cache.get(put.cid.hash()).unwrap();
        let part = put_data.slice(1000..5000);
        let other = vec![0u8; 10];
        let bufs = [
            IoSlice::new(b"HTTP/1.1 200 OK\r\n\r\n"),
            IoSlice::new(&other),
            IoSlice::new(&part),
        ];
        let (i, span) = cache.file_span(&bufs).unwrap();
        assert_eq!((i, span.offset, span.len), (2, 1000, 4000));
        assert_eq!(file_bytes(&span), &part[..]);

        let whole = [IoSlice::new(&read_data)];
        let (_, span) = cache.file_span(&whole).unwrap();
        assert_eq!(file_bytes(&span), &read.data[..]);

        // Small blocks are copied, and a copy of cached bytes elsewhere in
        // memory is just memory.
        let small_data = cache.get(small.cid.hash()).unwrap();
        let copy = put_data.to_vec();
        assert!(cache
            .file_span(&[IoSlice::new(&small_data), IoSlice::new(&copy)])
            .is_none());

        // Evicted or deleted blocks are no longer known by address.
        store.delete(put.cid.hash()).unwrap();
        assert!(cache.file_span(&[IoSlice::new(&part)]).is_none());
        assert_eq!(cache.files(), 1);
    }

    #[test]
    fn open_files_are_bounded_by_the_capacity() {
        let dir = tempfile::tempdir().unwrap();
        let cap = 1 << 20;
        let store = Cached::new(FsStore::open(dir.path()).unwrap(), cap);
        for i in 0..100 {
            store.put(&block(i, SENDFILE_MIN)).unwrap();
        }
        let cache = store.block_cache().unwrap();
        assert!(cache.files() <= cap / SENDFILE_MIN);
        assert_eq!(cache.files(), cache.len());
        assert!(cache.bytes() <= cap);
    }
}
