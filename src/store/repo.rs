//! A meshcast repo: the data directory with its block store, pins and the
//! lock that keeps garbage collection away from blocks being written.
//!
//! Writers (an add, a live segment) hold [`Repo::writer`] (a shared `flock`)
//! from their first block to their pin; `repo gc` holds it exclusively while
//! it marks the pinned DAGs and sweeps the rest, so it can never delete a
//! block that an add in this or another process is about to pin.

use super::notify::Notifying;
use super::pins::{PinKind, Pins};
use super::{links, BlockRead, Blockstore, FsStore, Multihash, StoreError};
use cid::Cid;
use std::collections::HashSet;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The data directory.
#[derive(Debug, Clone)]
pub struct Repo {
    dir: PathBuf,
    /// The block store; every put through it is announced to
    /// [`Notifying::subscribe`]rs.
    pub blocks: Arc<Notifying<FsStore>>,
    /// The pin set.
    pub pins: Pins,
}

/// Held while blocks are written and not yet pinned.
#[derive(Debug)]
pub struct WriteGuard(#[allow(dead_code)] File);

/// What `repo gc` did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct GcReport {
    /// Blocks deleted.
    pub removed: Vec<Multihash>,
    /// Blocks kept.
    pub kept: usize,
    /// Pinned blocks that are missing from the store.
    pub missing: Vec<Cid>,
}

/// What `repo verify` found.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct VerifyReport {
    /// Blocks checked.
    pub checked: usize,
    /// Blocks whose bytes do not match their hash, with their file.
    pub corrupt: Vec<(Multihash, PathBuf)>,
}

/// Whether `dir` holds a repo: its block directory exists. A path that is a
/// file, or that cannot be read, is an error of its own.
pub fn is_repo(dir: &Path) -> Result<bool, StoreError> {
    match std::fs::metadata(dir) {
        Ok(m) if !m.is_dir() => Err(StoreError::NotADirectory {
            path: dir.to_path_buf(),
        }),
        Ok(_) => Ok(dir.join(super::fs::BLOCKS_DIR).is_dir()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(StoreError::io("open", dir)(e)),
    }
}

impl Repo {
    /// Opens the repo in `dir`, creating it if needed.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        Self::open_or_create(dir).map_err(|e| match e {
            StoreError::Io { path, source, .. }
                if source.kind() == std::io::ErrorKind::PermissionDenied =>
            {
                StoreError::NotWritable { path }
            }
            e => e,
        })
    }

    fn open_or_create(dir: &Path) -> Result<Self, StoreError> {
        // Checked first: creating it would fail with "File exists", which
        // hides what is wrong.
        if std::fs::metadata(dir).is_ok_and(|m| !m.is_dir()) {
            return Err(StoreError::NotADirectory {
                path: dir.to_path_buf(),
            });
        }
        std::fs::create_dir_all(dir).map_err(StoreError::io("create", dir))?;
        Ok(Self {
            dir: dir.to_path_buf(),
            blocks: Arc::new(Notifying::new(FsStore::open(dir)?)),
            pins: Pins::open(dir)?,
        })
    }

    /// Opens the repo in `dir` only if one is there, creating nothing: for
    /// the commands that read (`cat`, `pin ls`...), which must not leave an
    /// empty repo behind in a directory where they were run by mistake.
    pub fn open_existing(dir: &Path) -> Result<Self, StoreError> {
        if !is_repo(dir)? {
            return Err(StoreError::NoRepo {
                path: dir.to_path_buf(),
            });
        }
        Self::open(dir)
    }

    /// The data directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn lock_file(&self) -> Result<File, StoreError> {
        let p = self.dir.join("repo.lock");
        File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&p)
            .map_err(StoreError::io("open", &p))
    }

    /// Takes the shared writer lock (waits while a GC runs).
    pub fn writer(&self) -> Result<WriteGuard, StoreError> {
        let f = self.lock_file()?;
        rustix::fs::flock(&f, rustix::fs::FlockOperation::LockShared)
            .map_err(|e| StoreError::io("lock", self.dir.join("repo.lock"))(e.into()))?;
        Ok(WriteGuard(f))
    }

    /// Every multihash reachable from the pins, and the pinned blocks missing.
    pub fn reachable(&self) -> Result<(HashSet<Multihash>, Vec<Cid>), StoreError> {
        let mut seen = HashSet::new();
        let mut missing = Vec::new();
        for (root, kind) in self.pins.list()? {
            let mut stack = vec![root];
            while let Some(cid) = stack.pop() {
                if !seen.insert(*cid.hash()) {
                    continue;
                }
                if kind == PinKind::Direct {
                    continue;
                }
                match self.blocks.get(&cid)? {
                    Some(data) => stack.extend(links(&cid, &data)?),
                    None => missing.push(cid),
                }
            }
        }
        Ok((seen, missing))
    }

    /// Deletes every block that no pin reaches.
    pub fn gc(&self) -> Result<GcReport, StoreError> {
        let f = self.lock_file()?;
        rustix::fs::flock(&f, rustix::fs::FlockOperation::LockExclusive)
            .map_err(|e| StoreError::io("lock", self.dir.join("repo.lock"))(e.into()))?;
        let (keep, missing) = self.reachable()?;
        let mut report = GcReport {
            missing,
            ..GcReport::default()
        };
        for mh in self.blocks.keys()? {
            if keep.contains(&mh) {
                report.kept += 1;
            } else if self.blocks.delete(&mh)? {
                report.removed.push(mh);
            }
        }
        // No writer holds the lock, so leftovers in tmp/ are from dead ones.
        self.blocks.inner().clean_tmp()?;
        Ok(report)
    }

    /// Re-hashes every block.
    pub fn verify(&self) -> Result<VerifyReport, StoreError> {
        let mut report = VerifyReport::default();
        for mh in self.blocks.keys()? {
            report.checked += 1;
            let Some(data) = self.blocks.get_by_hash(&mh)? else {
                continue; // deleted meanwhile
            };
            let cid = Cid::new_v1(super::RAW, mh);
            match super::verify_bytes(&cid, &data) {
                Ok(()) => {}
                Err(StoreError::HashMismatch { .. } | StoreError::UnsupportedHash { .. }) => {
                    report.corrupt.push((mh, self.blocks.inner().path_of(&mh)))
                }
                Err(e) => return Err(e),
            }
        }
        Ok(report)
    }
}
