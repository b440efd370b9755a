//! UnixFS importer: bytes and directory trees in, blocks out, with the CIDs
//! kubo produces.
//!
//! Flow:
//!
//! ```text
//! bytes --FileImporter--> fixed-size chunks -> leaves -> balanced tree ----+
//!                                                                           |
//! (name, cid, size) entries --DirectoryBuilder--> basic dir | HAMT shards --+--> BlockSink
//!                                                                           |
//! filesystem path --import_path--> files, symlinks, directories, wrapper ---+
//! ```
//!
//! [`FileImporter`] and [`DirectoryBuilder`] do no I/O: they hash each block
//! as soon as it is complete and hand it to a [`BlockSink`], so memory stays
//! at one chunk plus one pending link per tree node whatever the file size.
//! [`import_path`] and [`import_reader`] are the edge that reads files.
//!
//! [`ImportOptions`] carries kubo's `add` parameters; [`Profile`] names the
//! presets of IPIP-0499 (`unixfs-v0-2015`, kubo's historical defaults, and
//! `unixfs-v1-2025`). Callers start from a profile (or `Default`, which is
//! kubo 0.22) and apply explicit flags on top.
//!
//! [`BlockSink`]: crate::store::BlockSink

mod dir;
mod file;
mod walk;

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use cid::Cid;
use thiserror::Error;

use crate::store::StoreError;
use crate::unixfs::hamt::{self, HamtError};

pub use dir::{DirEntry, DirectoryBuilder};
pub use file::FileImporter;
pub use walk::{import_path, import_reader, wrap, Added, EntryKind};

/// kubo's default chunk size (`size-262144`).
pub const DEFAULT_CHUNK_SIZE: usize = 256 * 1024;
/// The largest chunk kubo accepts (`chunker.ChunkSizeLimit`): a leaf must fit
/// in a bitswap block.
pub const MAX_CHUNK_SIZE: usize = 1024 * 1024;
/// kubo's default number of links per file node (`DefaultLinksPerBlock`).
pub const DEFAULT_MAX_LINKS: usize = 174;
/// The directory size past which kubo shards a directory (256 KiB).
pub const DEFAULT_HAMT_THRESHOLD: usize = 256 * 1024;

/// How a directory's size is estimated against the HAMT threshold
/// (IPIP-0499 "HAMTDirectory threshold").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SizeEstimation {
    /// `links-bytes`: the sum of each link's name length and binary CID
    /// length. kubo's historical estimate; it ignores Tsize and framing.
    LinkBytes,
    /// `block-bytes`: the exact size of the encoded basic directory block.
    BlockBytes,
}

/// A named preset of import parameters from IPIP-0499.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Profile {
    /// `unixfs-v0-2015`: CIDv0, 256 KiB chunks, 174 links per node, dag-pb
    /// leaves, HAMT past 256 KiB estimated by links-bytes.
    UnixfsV0_2015,
    /// `unixfs-v1-2025`: CIDv1, 1 MiB chunks, 1024 links per node, raw
    /// leaves, HAMT past 256 KiB estimated by block-bytes.
    UnixfsV1_2025,
}

impl Profile {
    /// The profile's name as IPIP-0499 spells it.
    pub fn name(self) -> &'static str {
        match self {
            Self::UnixfsV0_2015 => "unixfs-v0-2015",
            Self::UnixfsV1_2025 => "unixfs-v1-2025",
        }
    }
}

impl fmt::Display for Profile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Profile {
    type Err = ImportError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "unixfs-v0-2015" => Ok(Self::UnixfsV0_2015),
            "unixfs-v1-2025" => Ok(Self::UnixfsV1_2025),
            other => Err(ImportError::UnknownProfile(other.to_owned())),
        }
    }
}

/// Parameters of an import, with the meanings of kubo's `ipfs add` flags.
///
/// Profiles (IPIP-0499) exclude mode and mtime metadata, and so does this
/// importer: files, directories and symlinks never carry them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportOptions {
    /// CID version of dag-pb nodes (`--cid-version`). Under CIDv0, raw leaves
    /// still get CIDv1, as in kubo. Use [`ImportOptions::with_cid_version`]
    /// to get kubo's implied `--raw-leaves` for CIDv1.
    pub cid_version: cid::Version,
    /// Store file chunks as raw blocks (codec 0x55) instead of UnixFS File
    /// nodes (`--raw-leaves`).
    pub raw_leaves: bool,
    /// Bytes per leaf of the fixed-size chunker (`--chunker size-N`);
    /// see [`parse_chunker`].
    pub chunk_size: usize,
    /// Most links in one file node of the balanced layout; at least 2.
    pub max_links: usize,
    /// Directories whose estimated size exceeds this many bytes are sharded;
    /// 0 never shards.
    pub hamt_threshold: usize,
    /// Also shard a directory whose estimate equals `hamt_threshold`. kubo up
    /// to 0.39 compared with `>=`; IPIP-0499 fixed the rule to `>`, so both
    /// profiles leave this off and only kubo 0.22's [`Default`] sets it.
    pub hamt_shard_at_threshold: bool,
    /// How a directory's size is estimated against `hamt_threshold`.
    pub hamt_estimation: SizeEstimation,
    /// Slots per HAMT shard node: a power of two, multiple of 8, at most 1024.
    pub hamt_fanout: u64,
    /// Include files and directories whose name starts with `.` when walking
    /// a directory (`--hidden`); the path given is always included.
    pub hidden: bool,
    /// Wrap what was added in a directory that names it
    /// (`--wrap-with-directory`); the wrapper is reported last, unnamed.
    pub wrap_with_directory: bool,
    /// Helper threads that hash file leaves alongside the caller's thread
    /// (0: hash on the caller's thread only). Only speed depends on it, not
    /// the DAG. Defaults to one less than the available cores, at most 3.
    pub hash_threads: usize,
}

/// Helper threads for hashing: the other cores, up to three (SHA-256 of a
/// chunk is far slower than reading it, so more only add contention).
fn default_hash_threads() -> usize {
    std::thread::available_parallelism()
        .map_or(0, |n| n.get() - 1)
        .min(3)
}

impl Default for ImportOptions {
    /// kubo 0.22's defaults: the `unixfs-v0-2015` profile, except that a
    /// directory exactly at the HAMT threshold is sharded, as kubo 0.22 does.
    fn default() -> Self {
        Self {
            hamt_shard_at_threshold: true,
            ..Self::from_profile(Profile::UnixfsV0_2015)
        }
    }
}

impl ImportOptions {
    /// The parameters of an IPIP-0499 profile; `hidden` and
    /// `wrap_with_directory` are off, as in every profile.
    pub fn from_profile(profile: Profile) -> Self {
        match profile {
            Profile::UnixfsV0_2015 => Self {
                cid_version: cid::Version::V0,
                raw_leaves: false,
                chunk_size: DEFAULT_CHUNK_SIZE,
                max_links: DEFAULT_MAX_LINKS,
                hamt_threshold: DEFAULT_HAMT_THRESHOLD,
                hamt_estimation: SizeEstimation::LinkBytes,
                hamt_shard_at_threshold: false,
                hamt_fanout: hamt::DEFAULT_FANOUT,
                hidden: false,
                wrap_with_directory: false,
                hash_threads: default_hash_threads(),
            },
            Profile::UnixfsV1_2025 => Self {
                cid_version: cid::Version::V1,
                raw_leaves: true,
                chunk_size: 1024 * 1024,
                max_links: 1024,
                hamt_threshold: DEFAULT_HAMT_THRESHOLD,
                hamt_estimation: SizeEstimation::BlockBytes,
                hamt_shard_at_threshold: false,
                hamt_fanout: hamt::DEFAULT_FANOUT,
                hidden: false,
                wrap_with_directory: false,
                hash_threads: default_hash_threads(),
            },
        }
    }

    /// Sets the CID version the way kubo's `--cid-version` does: CIDv1 turns
    /// raw leaves on. An explicit `--raw-leaves=false` must be applied after.
    pub fn with_cid_version(mut self, version: cid::Version) -> Self {
        self.cid_version = version;
        if version == cid::Version::V1 {
            self.raw_leaves = true;
        }
        self
    }

    /// Checks that the parameters describe a DAG that can be built.
    pub fn validate(&self) -> Result<(), ImportError> {
        if self.chunk_size == 0 || self.chunk_size > MAX_CHUNK_SIZE {
            return Err(ImportError::BadOption(format!(
                "chunk size {} is outside 1..={MAX_CHUNK_SIZE}",
                self.chunk_size
            )));
        }
        if self.max_links < 2 {
            return Err(ImportError::BadOption(format!(
                "max links per node is {}; it must be at least 2",
                self.max_links
            )));
        }
        hamt::fanout_bits(self.hamt_fanout)?;
        Ok(())
    }
}

/// Parses kubo's `--chunker` value into a chunk size: `size-N` (fixed-size
/// chunks of N bytes, 1 <= N <= 1 MiB) or `default` (`size-262144`).
pub fn parse_chunker(spec: &str) -> Result<usize, ImportError> {
    let bad = |reason: &str| ImportError::BadChunker {
        spec: spec.to_owned(),
        reason: reason.to_owned(),
    };
    if spec.is_empty() || spec == "default" {
        return Ok(DEFAULT_CHUNK_SIZE);
    }
    let Some(n) = spec.strip_prefix("size-") else {
        return Err(bad("only fixed-size chunking is supported"));
    };
    let size: usize = n.parse().map_err(|_| bad("the size is not a number"))?;
    if size == 0 {
        return Err(bad("the size must be greater than 0"));
    }
    if size > MAX_CHUNK_SIZE {
        return Err(bad("the size exceeds the 1 MiB block limit"));
    }
    Ok(size)
}

/// The root of an imported file or directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Imported {
    /// CID of the root block.
    pub cid: Cid,
    /// Bytes of file content (0 for directories and symlinks).
    pub file_size: u64,
    /// Cumulative size of the DAG: every block's length summed. This is the
    /// Tsize a parent link carries and the `Size` kubo reports.
    pub dag_size: u64,
}

/// Why an import failed.
#[derive(Debug, Error)]
pub enum ImportError {
    /// A `--chunker` value that is not `size-N`.
    #[error("invalid chunker {spec:?}: {reason}; use size-N with 1 <= N <= 1048576")]
    BadChunker {
        /// The value given.
        spec: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A profile name IPIP-0499 does not define.
    #[error("unknown import profile {0:?}; use unixfs-v0-2015 or unixfs-v1-2025")]
    UnknownProfile(String),
    /// Options that cannot produce a DAG.
    #[error("invalid import options: {0}")]
    BadOption(String),
    /// Reading the input failed.
    #[error("reading {}: {source}", path.display())]
    Read {
        /// The file or directory being read (`-` for a reader).
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// A directory given without asking for a recursive add.
    #[error("{} is a directory; add it recursively (-r)", path.display())]
    IsDirectory {
        /// The directory.
        path: PathBuf,
    },
    /// A name that cannot be a UnixFS link name.
    #[error("{}: file name is not valid UTF-8; rename it to add it", path.display())]
    NonUtf8Name {
        /// The path with the bad name.
        path: PathBuf,
    },
    /// A socket, FIFO or device node.
    #[error("{}: unsupported file type; only files, directories and symlinks can be added", path.display())]
    UnsupportedFileType {
        /// The path.
        path: PathBuf,
    },
    /// A directory entry name that UnixFS cannot hold.
    #[error("invalid directory entry name {0:?}: names must be non-empty, not . or .., and contain no '/'")]
    BadEntryName(String),
    /// The same name added twice to one directory.
    #[error("duplicate directory entry {0:?}")]
    DuplicateEntry(String),
    /// A HAMT parameter or trie problem.
    #[error(transparent)]
    Hamt(#[from] HamtError),
    /// The sink refused a block.
    #[error("storing imported block: {0}")]
    Store(#[from] StoreError),
}

/// Deterministic test data (xorshift64), reproducible from Python or
/// JavaScript to get reference CIDs from kubo and Helia.
#[cfg(test)]
pub(crate) fn pattern(n: usize) -> Vec<u8> {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut out = Vec::with_capacity(n + 8);
    while out.len() < n {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(n);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pattern_is_the_shared_one() {
        assert_eq!(
            data_encoding::HEXLOWER.encode(&pattern(16)),
            "ad4df30bae771bdc76606e02b9eef064"
        );
    }

    #[test]
    fn chunker_strings() {
        assert_eq!(parse_chunker("size-262144").unwrap(), 262144);
        assert_eq!(parse_chunker("size-1").unwrap(), 1);
        assert_eq!(parse_chunker("size-1048576").unwrap(), 1048576);
        assert_eq!(parse_chunker("default").unwrap(), DEFAULT_CHUNK_SIZE);
        for bad in [
            "size-0",
            "size-1048577",
            "size-",
            "size-x",
            "rabin",
            "buzhash",
        ] {
            let e = parse_chunker(bad).unwrap_err();
            assert!(e.to_string().contains("size-N"), "{bad}: {e}");
        }
    }

    #[test]
    fn profiles() {
        let v0: Profile = "unixfs-v0-2015".parse().unwrap();
        let v1: Profile = "unixfs-v1-2025".parse().unwrap();
        assert_eq!(v0.to_string(), "unixfs-v0-2015");
        assert_eq!(v1.to_string(), "unixfs-v1-2025");
        assert!("unixfs-v1-2026".parse::<Profile>().is_err());
        // kubo 0.22 differs from the profile only at the exact threshold.
        let kubo = ImportOptions::default();
        assert!(kubo.hamt_shard_at_threshold);
        assert_eq!(
            ImportOptions {
                hamt_shard_at_threshold: false,
                ..kubo
            },
            ImportOptions::from_profile(v0)
        );
        let o = ImportOptions::from_profile(v1);
        assert_eq!(o.cid_version, cid::Version::V1);
        assert!(o.raw_leaves);
        assert_eq!((o.chunk_size, o.max_links), (1 << 20, 1024));
        assert_eq!(o.hamt_estimation, SizeEstimation::BlockBytes);
        o.validate().unwrap();
        ImportOptions::default().validate().unwrap();
    }

    #[test]
    fn cid_version_one_implies_raw_leaves() {
        let o = ImportOptions::default().with_cid_version(cid::Version::V1);
        assert!(o.raw_leaves);
        let o = ImportOptions::default().with_cid_version(cid::Version::V0);
        assert!(!o.raw_leaves);
    }

    #[test]
    fn validation() {
        let mut o = ImportOptions {
            max_links: 1,
            ..Default::default()
        };
        assert!(o.validate().is_err());
        o.max_links = 2;
        o.hamt_fanout = 100;
        assert!(o.validate().is_err());
        o.hamt_fanout = 256;
        o.chunk_size = 0;
        assert!(o.validate().is_err());
    }
}
