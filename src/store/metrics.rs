//! The repo's size for `GET /metrics`: blocks, their bytes, pins and the
//! free space of the data directory's file system.
//!
//! ```text
//! node.rs: every SURVEY_EVERY, on the blocking pool: Metrics::survey(repo)
//!     walk blocks/<shard>/ (file count and sizes), count pins, statvfs(data dir)
//!     --> gauges, read by each scrape
//! ```
//!
//! A walk of the block directory, not a count kept on every put and
//! delete: `repo gc` and other processes (`meshcast add` while a server
//! runs) change the repo too, and only the directory knows what is there.
//! The walk reads directory entries and their sizes only.

use super::{Repo, StoreError};
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::{Registry, Unit};
use std::path::Path;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

/// How often the node surveys its repo.
pub const SURVEY_EVERY: Duration = Duration::from_secs(30);

/// The store's gauges.
#[derive(Debug, Clone, Default)]
pub struct Metrics {
    blocks: Gauge,
    bytes: Gauge,
    pins: Gauge,
    free: Gauge<u64, AtomicU64>,
}

/// What one survey found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Survey {
    /// Blocks stored.
    pub blocks: u64,
    /// Their bytes.
    pub bytes: u64,
    /// Pins (recursive and direct).
    pub pins: u64,
    /// Bytes free for this user on the data directory's file system.
    pub free: u64,
}

impl Metrics {
    /// Registers the store's gauges in `registry` (under `store_`).
    pub fn new(registry: &mut Registry) -> Self {
        let m = Self::default();
        let r = registry.sub_registry_with_prefix("store");
        r.register("blocks", "Blocks in the store", m.blocks.clone());
        r.register_with_unit(
            "size",
            "Bytes of the blocks in the store",
            Unit::Bytes,
            m.bytes.clone(),
        );
        r.register(
            "pins",
            "Pinned roots (recursive and direct)",
            m.pins.clone(),
        );
        r.register_with_unit(
            "free",
            "Bytes free for meshcast on the data directory's file system",
            Unit::Bytes,
            m.free.clone(),
        );
        m
    }

    /// Surveys `repo` (blocking: walks its block directory) and sets the
    /// gauges.
    pub fn survey(&self, repo: &Repo) -> Result<Survey, StoreError> {
        let (blocks, bytes) = walk_blocks(&repo.dir().join("blocks"))?;
        let pins = repo.pins.list()?.len() as u64;
        let dir = repo.dir();
        let vfs = rustix::fs::statvfs(dir).map_err(|e| StoreError::Io {
            op: "statvfs",
            path: dir.to_path_buf(),
            source: e.into(),
        })?;
        let s = Survey {
            blocks,
            bytes,
            pins,
            free: vfs.f_bavail.saturating_mul(vfs.f_frsize),
        };
        self.blocks.set(s.blocks as i64);
        self.bytes.set(s.bytes as i64);
        self.pins.set(s.pins as i64);
        self.free.set(s.free);
        Ok(s)
    }
}

/// The number of block files under `blocks/<shard>/` and their bytes.
fn walk_blocks(blocks: &Path) -> Result<(u64, u64), StoreError> {
    let (mut n, mut bytes) = (0, 0);
    let shards = std::fs::read_dir(blocks).map_err(StoreError::io("list", blocks))?;
    for shard in shards.flatten() {
        let Ok(files) = std::fs::read_dir(shard.path()) else {
            continue;
        };
        for file in files.flatten() {
            // Gone since listed (GC): not there any more.
            if let Ok(meta) = file.metadata() {
                n += 1;
                bytes += meta.len();
            }
        }
    }
    Ok((n, bytes))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{Block, Blockstore};

    #[test]
    fn a_survey_counts_blocks_bytes_and_pins() {
        let dir = tempfile::tempdir().unwrap();
        let repo = Repo::open(dir.path()).unwrap();
        let mut registry = Registry::with_prefix("meshcast");
        let m = Metrics::new(&mut registry);
        let a = Block::new(cid::Version::V1, 0x55, &b"hello"[..]);
        let b = Block::new(cid::Version::V1, 0x55, &b"world!"[..]);
        repo.blocks.put_many(&[a.clone(), b]).unwrap();
        repo.pins
            .add(&a.cid, crate::store::pins::PinKind::Recursive)
            .unwrap();
        let s = m.survey(&repo).unwrap();
        assert_eq!((s.blocks, s.bytes, s.pins), (2, 11, 1));
        assert!(s.free > 0);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        for line in [
            "meshcast_store_blocks 2",
            "meshcast_store_size_bytes 11",
            "meshcast_store_pins 1",
        ] {
            assert!(text.contains(line), "{line} in {text}");
        }
        assert!(
            text.contains("# TYPE meshcast_store_free_bytes gauge"),
            "{text}"
        );
    }
}
