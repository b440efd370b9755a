//! The on-disk [`Blockstore`]: one file per block.
//!
//! Layout: `blocks/<shard>/<KEY>` where `KEY` is the base32 (RFC 4648, no
//! padding) multihash and `<shard>` its next-to-last two characters, as
//! kubo's flatfs does, so a directory never holds more than ~1/1024 of the
//! blocks. A write goes to `tmp/` first and is renamed into place only after
//! its bytes are on disk, so a reader (or a crash) never sees a partial block.
//! Plain files instead of an embedded database: blocks are immutable and
//! large, the gateway can stream them straight from the page cache, and any
//! number of meshcast processes (a server and the CLI) can share one repo.

use super::mapped::{MappedFiles, MAP_MIN};
use super::{Block, BlockRead, Blockstore, Multihash, StoreError};
use bytes::Bytes;
use cid::Cid;
use std::fs::{self, File};
use std::io::{ErrorKind, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// The directory, inside the repo, that holds the block files.
pub const BLOCKS_DIR: &str = "blocks";

/// Block files under a directory.
#[derive(Debug)]
pub struct FsStore {
    blocks: PathBuf,
    tmp: PathBuf,
    counter: AtomicU64,
    mapped: Arc<MappedFiles>,
}

impl FsStore {
    /// Opens (creating if needed) a store with `blocks/` and `tmp/` in `dir`.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        let blocks = dir.join(BLOCKS_DIR);
        let tmp = dir.join("tmp");
        fs::create_dir_all(&blocks).map_err(StoreError::io("create", &blocks))?;
        fs::create_dir_all(&tmp).map_err(StoreError::io("create", &tmp))?;
        Ok(Self {
            blocks,
            tmp,
            counter: AtomicU64::new(0),
            mapped: Arc::default(),
        })
    }

    /// The file holding the block with multihash `mh`.
    pub fn path_of(&self, mh: &Multihash) -> PathBuf {
        let key = key_of(mh);
        let shard = &key[key.len() - 3..key.len() - 1];
        self.blocks.join(shard).join(key)
    }

    /// Removes temporary files left by writers that died (call when no
    /// writer runs, e.g. under the GC lock).
    pub fn clean_tmp(&self) -> Result<usize, StoreError> {
        let mut n = 0;
        for e in fs::read_dir(&self.tmp).map_err(StoreError::io("list", &self.tmp))? {
            let e = e.map_err(StoreError::io("list", &self.tmp))?;
            if fs::remove_file(e.path()).is_ok() {
                n += 1;
            }
        }
        Ok(n)
    }

    fn tmp_path(&self) -> PathBuf {
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        self.tmp.join(format!("{}-{}", std::process::id(), n))
    }
}

/// The store key of a multihash: unpadded RFC 4648 base32, upper case.
pub fn key_of(mh: &Multihash) -> String {
    data_encoding::BASE32_NOPAD.encode(&mh.to_bytes())
}

fn hash_of_key(key: &str) -> Option<Multihash> {
    let bytes = data_encoding::BASE32_NOPAD.decode(key.as_bytes()).ok()?;
    Multihash::from_bytes(&bytes).ok()
}

fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(StoreError::io("sync", dir))
}

impl BlockRead for FsStore {
    fn get_for_send(&self, cid: &Cid) -> Result<Option<Bytes>, StoreError> {
        if cid.hash().code() == super::IDENTITY {
            return self.get(cid);
        }
        if let Some(bytes) = self.mapped.recent(cid.hash()) {
            return Ok(Some(bytes));
        }
        let p = self.path_of(cid.hash());
        let file = match File::open(&p) {
            Ok(f) => f,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(StoreError::io("open", p)(e)),
        };
        let len = file.metadata().map_err(StoreError::io("stat", &p))?.len();
        let len = usize::try_from(len)
            .map_err(|_| StoreError::io("map", &p)(ErrorKind::FileTooLarge.into()))?;
        if len < MAP_MIN {
            // Small: read from the file already open, a copy costs less
            // than a mapping.
            let mut buf = Vec::with_capacity(len);
            (&file)
                .read_to_end(&mut buf)
                .map_err(StoreError::io("read", &p))?;
            return Ok(Some(Bytes::from(buf)));
        }
        let bytes = self
            .mapped
            .map(file, len)
            .map_err(StoreError::io("map", p))?;
        self.mapped.remember(*cid.hash(), bytes.clone());
        Ok(Some(bytes))
    }

    fn mapped_files(&self) -> Option<&Arc<MappedFiles>> {
        Some(&self.mapped)
    }

    fn get(&self, cid: &Cid) -> Result<Option<Bytes>, StoreError> {
        if cid.hash().code() == super::IDENTITY {
            return Ok(Some(Bytes::copy_from_slice(cid.hash().digest())));
        }
        self.get_by_hash(cid.hash())
    }

    fn has(&self, cid: &Cid) -> Result<bool, StoreError> {
        Ok(cid.hash().code() == super::IDENTITY || self.path_of(cid.hash()).exists())
    }

    fn size(&self, cid: &Cid) -> Result<Option<u64>, StoreError> {
        if cid.hash().code() == super::IDENTITY {
            return Ok(Some(cid.hash().digest().len() as u64));
        }
        let p = self.path_of(cid.hash());
        match fs::metadata(&p) {
            Ok(m) => Ok(Some(m.len())),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
            Err(e) => Err(StoreError::io("stat", p)(e)),
        }
    }
}

impl FsStore {
    /// Writes every new block to a temp file (each one pushed to `staged`
    /// as it is made, so the caller can remove them on failure), makes the
    /// files durable, then renames them into place and makes the
    /// directories durable, so a block's name never points at bytes that a
    /// crash could lose.
    fn put_staged(
        &self,
        blocks: &[Block],
        staged: &mut Vec<(File, PathBuf, PathBuf)>,
    ) -> Result<(), StoreError> {
        for b in blocks {
            if b.cid.hash().code() == super::IDENTITY {
                continue;
            }
            let dest = self.path_of(b.cid.hash());
            if dest.exists() {
                continue;
            }
            let tmp = self.tmp_path();
            let mut f = File::create(&tmp).map_err(StoreError::io("create", &tmp))?;
            let written = f.write_all(&b.data);
            staged.push((f, tmp, dest));
            let (_, tmp, _) = staged.last().expect("just pushed");
            written.map_err(StoreError::io("write", tmp))?;
        }
        if staged.is_empty() {
            return Ok(());
        }
        sync_concurrently(staged, |(f, tmp, _)| {
            f.sync_data().map_err(StoreError::io("sync", tmp))
        })?;
        let mut dirs: Vec<&Path> = Vec::new();
        let mut created = false;
        for (_, tmp, dest) in staged.iter() {
            let dir = dest.parent().expect("block path has a shard dir");
            if let Err(e) = fs::rename(tmp, dest) {
                if e.kind() != ErrorKind::NotFound {
                    return Err(StoreError::io("rename", tmp)(e));
                }
                fs::create_dir_all(dir).map_err(StoreError::io("create", dir))?;
                fs::rename(tmp, dest).map_err(StoreError::io("rename", tmp))?;
                created = true;
            }
            if !dirs.contains(&dir) {
                dirs.push(dir);
            }
        }
        if created {
            dirs.push(&self.blocks);
        }
        sync_concurrently(&dirs, |d| sync_dir(d))
    }
}

impl Blockstore for FsStore {
    fn put_many(&self, blocks: &[Block]) -> Result<(), StoreError> {
        let mut staged = Vec::with_capacity(blocks.len());
        let result = self.put_staged(blocks, &mut staged);
        if result.is_err() {
            // A full disk fails a write midway: what was staged is of no
            // use and would hold the space (and stay in tmp/ until a GC).
            for (_, tmp, _) in &staged {
                let _ = fs::remove_file(tmp);
            }
        }
        result
    }

    fn delete(&self, mh: &Multihash) -> Result<bool, StoreError> {
        self.mapped.forget(mh);
        let p = self.path_of(mh);
        match fs::remove_file(&p) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(false),
            Err(e) => Err(StoreError::io("remove", p)(e)),
        }
    }

    fn keys(&self) -> Result<Vec<Multihash>, StoreError> {
        let mut out = Vec::new();
        for shard in fs::read_dir(&self.blocks).map_err(StoreError::io("list", &self.blocks))? {
            let shard = shard.map_err(StoreError::io("list", &self.blocks))?.path();
            if !shard.is_dir() {
                continue;
            }
            for e in fs::read_dir(&shard).map_err(StoreError::io("list", &shard))? {
                let e = e.map_err(StoreError::io("list", &shard))?;
                let name = e.file_name();
                match name.to_str().and_then(hash_of_key) {
                    Some(mh) => out.push(mh),
                    None => {
                        return Err(StoreError::Corrupt {
                            path: e.path(),
                            reason: "file name is not a multihash key".into(),
                        })
                    }
                }
            }
        }
        Ok(out)
    }

    fn get_by_hash(&self, mh: &Multihash) -> Result<Option<Bytes>, StoreError> {
        let p = self.path_of(mh);
        match fs::read(&p) {
            Ok(b) => Ok(Some(Bytes::from(b))),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
            Err(e) => Err(StoreError::io("read", p)(e)),
        }
    }
}

/// Threads that sync at once: the filesystem folds concurrent syncs into one
/// journal commit, which makes syncing a batch of blocks far cheaper than
/// one sync after another, without `syncfs`, which would also wait for every
/// other process's unwritten data.
const SYNC_THREADS: usize = 8;

/// Runs `sync` on every item, spread over up to [`SYNC_THREADS`] threads.
fn sync_concurrently<T: Sync>(
    items: &[T],
    sync: impl Fn(&T) -> Result<(), StoreError> + Sync,
) -> Result<(), StoreError> {
    if items.len() <= 1 {
        return items.iter().try_for_each(&sync);
    }
    let per_thread = items.len().div_ceil(SYNC_THREADS);
    std::thread::scope(|scope| {
        let workers: Vec<_> = items
            .chunks(per_thread)
            .map(|chunk| scope.spawn(|| chunk.iter().try_for_each(&sync)))
            .collect();
        workers
            .into_iter()
            .try_for_each(|w| w.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
    })
}
