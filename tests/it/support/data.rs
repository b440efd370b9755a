//! Deterministic test data and what checks it: seeded bytes and text
//! (splitmix64, so a failure reproduces on any machine), the shared
//! fixtures generated once per run (files of every interesting size, a
//! two-level DAG's worth, a directory tree importers disagree on), SHA-256
//! of files and streams, and CARv1 parsing with every block checked
//! against its CID.

use super::tempdir;
use anyhow::{anyhow, bail, ensure, Context, Result};
use cid::Cid;
use sha2::{Digest, Sha256};
use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use tempfile::TempDir;

/// 256 KiB, kubo's default chunk size.
pub const CHUNK: usize = 256 * 1024;
/// 1 MiB, the unixfs-v1-2025 chunk size.
pub const MIB: usize = 1024 * 1024;

/// A fast deterministic generator (splitmix64): the same seed gives the same
/// bytes on every machine, so failures reproduce.
pub struct Rng(u64);

impl Rng {
    /// A generator from a seed.
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `0..n`.
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    /// Fills `buf` with random bytes.
    pub fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            let v = self.next_u64().to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
    }
}

/// `len` pseudo-random bytes from `seed`.
pub fn random_bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut v = vec![0; len];
    Rng::new(seed).fill(&mut v);
    v
}

/// `len` bytes of English-looking text (words, spaces, newlines) from `seed`.
pub fn text_bytes(seed: u64, len: usize) -> Vec<u8> {
    const WORDS: &[&str] = &[
        "stream", "segment", "peer", "block", "content", "address", "video", "the", "of", "and",
        "a", "playlist", "keyframe", "gateway", "merkle", "chunk", "node", "link", "to", "in",
    ];
    let mut rng = Rng::new(seed);
    let mut v = Vec::with_capacity(len + 16);
    while v.len() < len {
        v.extend_from_slice(WORDS[rng.below(WORDS.len() as u64) as usize].as_bytes());
        v.push(if rng.below(12) == 0 { b'\n' } else { b' ' });
    }
    v.truncate(len);
    v
}

/// Writes `len` pseudo-random bytes from `seed` to `path` without holding
/// them all in memory.
pub fn write_random_file(path: &Path, seed: u64, len: u64) -> Result<()> {
    let mut f = std::io::BufWriter::new(
        fs::File::create(path).with_context(|| format!("create {}", path.display()))?,
    );
    let mut rng = Rng::new(seed);
    let mut buf = vec![0u8; MIB];
    let mut left = len;
    while left > 0 {
        let n = left.min(buf.len() as u64) as usize;
        rng.fill(&mut buf[..n]);
        f.write_all(&buf[..n])?;
        left -= n as u64;
    }
    f.flush()?;
    Ok(())
}

/// Writes `bytes` to `path`, creating parent directories.
pub fn write(path: &Path, bytes: &[u8]) -> Result<()> {
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).with_context(|| format!("create {}", parent.display()))?;
    }
    fs::write(path, bytes).with_context(|| format!("write {}", path.display()))
}

/// SHA-256 of a file, streamed.
pub fn sha256_file(path: &Path) -> Result<[u8; 32]> {
    let mut f = fs::File::open(path).with_context(|| format!("open {}", path.display()))?;
    sha256_reader(&mut f)
}

/// SHA-256 of everything a reader yields.
pub fn sha256_reader(r: &mut impl Read) -> Result<[u8; 32]> {
    let mut h = Sha256::new();
    let mut buf = vec![0u8; MIB];
    loop {
        let n = r.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(h.finalize().into())
}

/// Checks that `bytes` hash to `cid` (sha2-256 or identity multihash).
pub fn verify_block(cid: &Cid, bytes: &[u8]) -> Result<()> {
    let mh = cid.hash();
    match mh.code() {
        0x12 => ensure!(
            mh.digest() == Sha256::digest(bytes).as_slice(),
            "block {cid} does not hash to its CID"
        ),
        0x00 => ensure!(mh.digest() == bytes, "identity block {cid} differs"),
        other => bail!("block {cid} uses unexpected multihash 0x{other:x}"),
    }
    Ok(())
}

/// A parsed CARv1: header roots and blocks in file order.
#[derive(Debug)]
pub struct Car {
    /// The header's roots.
    pub roots: Vec<Cid>,
    /// `(cid, bytes)` of every block.
    pub blocks: Vec<(Cid, Vec<u8>)>,
}

#[derive(serde::Deserialize)]
struct CarHeader {
    version: u64,
    roots: Vec<Cid>,
}

/// Parses a CARv1 and checks every block against its CID.
pub fn parse_car(bytes: &[u8]) -> Result<Car> {
    let (hlen, mut rest) =
        unsigned_varint::decode::usize(bytes).map_err(|e| anyhow!("CAR header length: {e}"))?;
    ensure!(rest.len() >= hlen, "CAR header truncated");
    let header: CarHeader = serde_ipld_dagcbor::from_slice(&rest[..hlen])
        .map_err(|e| anyhow!("CAR header is not the expected DAG-CBOR: {e}"))?;
    ensure!(
        header.version == 1,
        "CAR version {} is not 1",
        header.version
    );
    rest = &rest[hlen..];
    let mut blocks = Vec::new();
    while !rest.is_empty() {
        let (len, r) =
            unsigned_varint::decode::usize(rest).map_err(|e| anyhow!("CAR section length: {e}"))?;
        ensure!(r.len() >= len, "CAR section truncated");
        let mut section = &r[..len];
        let cid = Cid::read_bytes(&mut section).context("CAR section CID")?;
        verify_block(&cid, section)?;
        blocks.push((cid, section.to_vec()));
        rest = &r[len..];
    }
    Ok(Car {
        roots: header.roots,
        blocks,
    })
}

/// Generated data shared by all tests of one run, made once.
pub struct Fixtures {
    dir: TempDir,
}

static FIXTURES: OnceLock<Fixtures> = OnceLock::new();

/// The shared fixtures (generated on first use).
pub fn fixtures() -> &'static Fixtures {
    FIXTURES.get_or_init(|| Fixtures::generate().expect("generate test fixtures"))
}

/// The file sizes every importer test covers: empty, one byte, around one
/// 256 KiB chunk and around 1 MiB (the unixfs-v1-2025 chunk).
pub const SIZES: &[usize] = &[0, 1, CHUNK - 1, CHUNK, CHUNK + 1, MIB - 1, MIB, MIB + 1];

/// Bytes of [`Fixtures::two_level`]: 176 chunks of 256 KiB (one more than
/// the 174 links a node holds, so the DAG needs two levels), ~46 MB.
pub const TWO_LEVEL_LEN: u64 = 175 * CHUNK as u64 + 1;

impl Fixtures {
    fn generate() -> Result<Self> {
        let dir = tempdir()?;
        let root = dir.path();
        for (i, &n) in SIZES.iter().enumerate() {
            write(
                &root.join(format!("random-{n}")),
                &random_bytes(i as u64, n),
            )?;
            write(
                &root.join(format!("text-{n}")),
                &text_bytes(100 + i as u64, n),
            )?;
        }
        write_random_file(&root.join("two-level"), 7, TWO_LEVEL_LEN)?;
        tree(&root.join("tree"))?;
        Ok(Self { dir })
    }

    /// The fixture directory.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Random and text files of every size in [`SIZES`].
    pub fn sized_files(&self) -> Vec<PathBuf> {
        SIZES
            .iter()
            .flat_map(|n| {
                [
                    self.path().join(format!("random-{n}")),
                    self.path().join(format!("text-{n}")),
                ]
            })
            .collect()
    }

    /// A random file whose balanced DAG has two levels of 256 KiB chunks.
    pub fn two_level(&self) -> PathBuf {
        self.path().join("two-level")
    }

    /// The directory tree made by [`tree`].
    pub fn tree(&self) -> PathBuf {
        self.path().join("tree")
    }
}

/// A directory tree with what importers disagree on: nesting, hidden files
/// and directories, an empty directory, a symlink, a multi-chunk file, names
/// that sort differently as bytes and as text, and a non-ASCII name.
pub fn tree(root: &Path) -> Result<()> {
    write(&root.join("README.md"), b"# tree\n\nA fixture.\n")?;
    write(&root.join("a.txt"), &text_bytes(1, 5000))?;
    write(&root.join("B.txt"), b"upper case sorts first as bytes\n")?;
    write(&root.join("big.bin"), &random_bytes(2, 3 * CHUNK + 17))?;
    write(&root.join("empty.txt"), b"")?;
    write(&root.join("sub/one.txt"), b"one\n")?;
    write(&root.join("sub/deeper/two.txt"), b"two\n")?;
    write(
        &root.join("sub/deeper/deepest/three.bin"),
        &random_bytes(3, 1000),
    )?;
    write(&root.join("sub/.hidden-in-sub"), b"hidden\n")?;
    write(&root.join(".hidden"), b"secret\n")?;
    write(
        &root.join(".hidden-dir/inside.txt"),
        b"inside a hidden dir\n",
    )?;
    write(&root.join("caf\u{e9}.txt"), "café\n".as_bytes())?;
    fs::create_dir_all(root.join("empty-dir"))?;
    std::os::unix::fs::symlink("sub/one.txt", root.join("link-to-one"))?;
    Ok(())
}
