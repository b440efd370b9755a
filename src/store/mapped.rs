//! Blocks handed out as memory maps of their files, so the gateway can send
//! them with sendfile(2).
//!
//! Serving a segment used to cost two copies of its bytes in our process:
//! read(2) from the page cache into a buffer, then write(2) from the buffer
//! into the socket. [`FsStore::get_for_send`](super::FsStore) instead maps
//! the block's file read-only and returns the mapping as [`Bytes`]; the
//! mapping is registered here, by address, with the open file behind it.
//! The HTTP connection (`http::conn`) asks [`MappedFiles::file_span`]
//! whether a buffer it is about to write lies in a live mapping, and if so
//! sends those bytes from the file with sendfile(2): the kernel hands page
//! cache pages to the socket and our process never touches them, so they
//! cost neither a copy nor resident memory. Anything that does read the
//! bytes (a content sniff, a CAR writer) reads them from the page cache
//! through the mapping.
//!
//! Written by hand because no crate joins the two halves: memmap2 maps, but
//! the lookup from a body buffer back to its file is specific to how hyper
//! hands our connection the body's own `Bytes` (vectored writes).
//!
//! Safety rests on block files being immutable: a block is written to
//! `tmp/`, made durable, renamed into place and afterwards only ever
//! unlinked (GC), never truncated or rewritten. An unlinked file keeps its
//! pages while a mapping of it lives. (A file truncated behind the store's
//! back would make touching the mapping fault, as with any mapped file.)
//!
//! The most recently sent mappings are kept ([`RECENT`] of them, by
//! multihash): every viewer of a live stream asks for the same few
//! segments, and a kept mapping answers them with no system call and no
//! trip to the blocking pool. A kept mapping costs an open file and address
//! space, not memory: its pages are the page cache's. A block deleted
//! through the store is dropped from it at once.
//!
//! The crate denies `unsafe`; this module is the one place allowed it:
//! mapping a file and unmapping it are the two calls, each with its
//! safety argument beside it.

#![allow(unsafe_code)]

use super::Multihash;
use bytes::Bytes;
use std::collections::{BTreeMap, VecDeque};
use std::fs::File;
use std::io::IoSlice;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};

/// Blocks at least this large are mapped; below it a read costs about as
/// much as the extra system calls, and the bytes are copied anyway.
pub const MAP_MIN: usize = 64 * 1024;

/// Mappings kept for reuse, most recently used first.
pub const RECENT: usize = 64;

/// Where some bytes of a mapped block are in its file.
#[derive(Debug, Clone)]
pub struct FileSpan {
    /// The block's file.
    pub file: Arc<File>,
    /// Where the bytes start in it.
    pub offset: u64,
    /// How many bytes.
    pub len: usize,
}

/// The live mappings, by start address.
#[derive(Debug, Default)]
pub struct MappedFiles {
    live: Mutex<BTreeMap<usize, (usize, Arc<File>)>>,
    recent: Mutex<VecDeque<(Multihash, Bytes)>>,
    sent: AtomicU64,
}

/// One mapping of a whole block file; unmapped (and forgotten) when the
/// last [`Bytes`] of it is dropped.
struct Mapping {
    ptr: *mut std::ffi::c_void,
    len: usize,
    registry: Weak<MappedFiles>,
}

// SAFETY: the mapping is read-only and immutable (see the module docs), so
// shared references to its bytes may cross threads like any `&[u8]`.
unsafe impl Send for Mapping {}
unsafe impl Sync for Mapping {}

impl AsRef<[u8]> for Mapping {
    fn as_ref(&self) -> &[u8] {
        // SAFETY: `ptr..ptr+len` is a live PROT_READ mapping until `drop`,
        // and its file is never written (module docs).
        unsafe { std::slice::from_raw_parts(self.ptr.cast::<u8>(), self.len) }
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // Forgotten first: once unmapped, the addresses may be reused.
        if let Some(registry) = self.registry.upgrade() {
            registry.lock().remove(&(self.ptr as usize));
        }
        // SAFETY: the mapping was made by `MappedFiles::map` with this
        // address and length, and no `Bytes` refers to it any more.
        let _ = unsafe { rustix::mm::munmap(self.ptr, self.len) };
    }
}

impl MappedFiles {
    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<usize, (usize, Arc<File>)>> {
        self.live.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn recent_lock(&self) -> std::sync::MutexGuard<'_, VecDeque<(Multihash, Bytes)>> {
        self.recent.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The kept mapping of a block, now the most recently used (no I/O).
    pub fn recent(&self, mh: &Multihash) -> Option<Bytes> {
        let mut recent = self.recent_lock();
        let i = recent.iter().position(|(m, _)| m == mh)?;
        let entry = recent.remove(i)?;
        let bytes = entry.1.clone();
        recent.push_front(entry);
        Some(bytes)
    }

    /// Keeps `bytes` (a mapping of the block `mh`) as the most recently
    /// used, dropping the least recently used beyond [`RECENT`].
    pub fn remember(&self, mh: Multihash, bytes: Bytes) {
        let dropped = {
            let mut recent = self.recent_lock();
            recent.retain(|(m, _)| *m != mh);
            recent.push_front((mh, bytes));
            let keep = recent.len().min(RECENT);
            recent.split_off(keep)
        };
        // Unmapped (maybe) outside the lock.
        drop(dropped);
    }

    /// Drops the kept mapping of a block (deleted from the store).
    pub fn forget(&self, mh: &Multihash) {
        let dropped = {
            let mut recent = self.recent_lock();
            recent
                .iter()
                .position(|(m, _)| m == mh)
                .and_then(|i| recent.remove(i))
        };
        drop(dropped);
    }

    /// Maps all `len` bytes of `file` (a block file: immutable) and
    /// remembers where they came from.
    pub fn map(self: &Arc<Self>, file: File, len: usize) -> std::io::Result<Bytes> {
        if len == 0 {
            return Ok(Bytes::new());
        }
        // SAFETY: a fresh private read-only mapping of a file that is never
        // written or truncated while mapped (module docs).
        let ptr = unsafe {
            rustix::mm::mmap(
                std::ptr::null_mut(),
                len,
                rustix::mm::ProtFlags::READ,
                rustix::mm::MapFlags::PRIVATE,
                &file,
                0,
            )
        }?;
        let mapping = Mapping {
            ptr,
            len,
            registry: Arc::downgrade(self),
        };
        self.lock().insert(ptr as usize, (len, Arc::new(file)));
        Ok(Bytes::from_owner(mapping))
    }

    /// For the first of `bufs` that lies in a live mapping: its index, and
    /// where its bytes are in the mapped file (as many as the mapping
    /// holds). The file holds the same bytes as the memory, so they may be
    /// sent from either.
    pub fn file_span(&self, bufs: &[IoSlice<'_>]) -> Option<(usize, FileSpan)> {
        let live = self.lock();
        if live.is_empty() {
            return None;
        }
        bufs.iter().enumerate().find_map(|(i, b)| {
            let addr = b.as_ptr() as usize;
            let (&start, (len, file)) = live.range(..=addr).next_back()?;
            let offset = addr - start;
            (offset < *len && !b.is_empty()).then(|| {
                (
                    i,
                    FileSpan {
                        file: file.clone(),
                        offset: offset as u64,
                        len: b.len().min(len - offset),
                    },
                )
            })
        })
    }

    /// Counts `n` bytes of mappings sent from their files.
    pub fn note_sent(&self, n: usize) {
        self.sent.fetch_add(n as u64, Ordering::Relaxed);
    }

    /// Bytes of mappings sent from their files so far.
    pub fn sent(&self) -> u64 {
        self.sent.load(Ordering::Relaxed)
    }

    /// Mappings alive.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether no mapping is alive.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn file_with(bytes: &[u8]) -> (tempfile::NamedTempFile, File) {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(bytes).unwrap();
        let file = File::open(f.path()).unwrap();
        (f, file)
    }

    fn file_bytes(span: &FileSpan) -> Vec<u8> {
        use std::os::unix::fs::FileExt;
        let mut buf = vec![0; span.len];
        span.file.read_exact_at(&mut buf, span.offset).unwrap();
        buf
    }

    #[test]
    fn maps_read_the_file_and_are_forgotten_when_dropped() {
        let data: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        let (_keep, file) = file_with(&data);
        let files = Arc::new(MappedFiles::default());
        let bytes = files.map(file, data.len()).unwrap();
        assert!(bytes == data);
        assert_eq!(files.len(), 1);

        let part = bytes.slice(1000..5000);
        let other = [0u8; 10];
        let bufs = [
            IoSlice::new(b"HTTP/1.1 200 OK\r\n\r\n"),
            IoSlice::new(&other),
            IoSlice::new(&part),
        ];
        let (i, span) = files.file_span(&bufs).unwrap();
        assert_eq!((i, span.offset, span.len), (2, 1000, 4000));
        assert_eq!(file_bytes(&span), &part[..]);
        // A copy elsewhere in memory is just memory.
        let copy = part.to_vec();
        assert!(files.file_span(&[IoSlice::new(&copy)]).is_none());

        drop(bytes);
        // A slice keeps the mapping alive.
        assert_eq!(files.len(), 1);
        assert!(part == data[1000..5000]);
        drop(part);
        assert!(files.is_empty());
    }

    #[test]
    fn recent_mappings_are_bounded_and_reused() {
        let files = Arc::new(MappedFiles::default());
        let mut keep = Vec::new();
        let mh = |i: u32| Multihash::wrap(0x12, &[i as u8; 32]).unwrap();
        for i in 0..RECENT as u32 + 10 {
            let (tmp, file) = file_with(&i.to_be_bytes().repeat(1000));
            keep.push(tmp);
            let bytes = files.map(file, 4000).unwrap();
            files.remember(mh(i), bytes);
            // Used again: stays.
            assert!(files.recent(&mh(0)).is_some());
        }
        assert_eq!(files.len(), RECENT);
        assert!(files.recent(&mh(1)).is_none());
        let last = RECENT as u32 + 9;
        assert_eq!(files.recent(&mh(last)).unwrap()[..4], last.to_be_bytes());
        files.forget(&mh(last));
        assert!(files.recent(&mh(last)).is_none());
        assert_eq!(files.len(), RECENT - 1);
    }

    #[test]
    fn an_empty_file_maps_to_nothing() {
        let (_keep, file) = file_with(b"");
        let files = Arc::new(MappedFiles::default());
        assert!(files.map(file, 0).unwrap().is_empty());
        assert!(files.is_empty());
    }

    #[test]
    fn a_mapping_outlives_its_registry_and_its_file_name() {
        let (keep, file) = file_with(&[7u8; 100_000]);
        let files = Arc::new(MappedFiles::default());
        let bytes = files.map(file, 100_000).unwrap();
        drop(keep); // unlinked, as GC does
        drop(files);
        assert!(bytes.iter().all(|&b| b == 7));
    }
}
