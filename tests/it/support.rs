//! Test support as a library: everything the test modules share, so each
//! of them says only what it checks.
//!
//! - here: the binary under test, temporary repos and `meshcast` commands
//!   run on them (by that binary or another, e.g. a cross build under
//!   qemu-user), running commands and reading their output and logs;
//! - [`node`]: a running `meshcast serve` (free ports, readiness, its
//!   HTTP, RTMP and libp2p addresses, its log, stop and kill) and what its
//!   API answers;
//! - [`publish`]: clips, the ffmpeg and ffmpeg 9 publishers, and the
//!   checks of what a publish stored;
//! - [`peers`]: the reference peers (kubo, Helia, Chromium);
//! - [`rtmp`]: a publisher of our own that reads what the server tells it;
//! - [`data`]: deterministic test data, hashing and CAR parsing.
//!
//! A reference tool that is missing or fails is an error, never a skip:
//! `scripts/test` installs them.

pub mod data;
pub mod node;
pub mod peers;
pub mod publish;
pub mod rtmp;

pub use data::*;
pub use node::*;
pub use peers::*;
pub use publish::*;
pub use rtmp::RtmpPublisher;

use anyhow::{anyhow, bail, ensure, Context, Result};
use cid::Cid;
use std::ffi::{OsStr, OsString};
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use tempfile::TempDir;

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

/// A meshcast data directory in a temporary directory, removed on drop,
/// and the command that runs meshcast on it.
pub struct Repo {
    dir: TempDir,
    program: Vec<OsString>,
}

impl Repo {
    /// A new, empty repo (meshcast creates it on first use).
    pub fn new() -> Result<Self> {
        Self::run_by(vec![meshcast_bin().into()])
    }

    /// A new, empty repo whose commands run `program` (a command and its
    /// arguments, e.g. `qemu-aarch64 -L SYSROOT BIN` for a cross-built
    /// binary) instead of the binary under test.
    pub fn run_by(program: Vec<OsString>) -> Result<Self> {
        ensure!(!program.is_empty(), "no program to run meshcast with");
        Ok(Self {
            dir: tempdir()?,
            program,
        })
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
        let mut c = Command::new(&self.program[0]);
        c.args(&self.program[1..])
            .arg("--data")
            .arg(self.path())
            .args(args);
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

/// A child process killed (SIGKILL) and reaped on drop, unless waited for
/// with [`KillOnDrop::wait_with_output`].
pub struct KillOnDrop(Option<Child>);

impl KillOnDrop {
    /// Takes charge of `child`.
    pub fn new(child: Child) -> Self {
        Self(Some(child))
    }

    /// Waits for the child to exit and collects what it piped.
    pub fn wait_with_output(mut self) -> std::io::Result<Output> {
        self.0
            .take()
            .expect("a child until waited for")
            .wait_with_output()
    }
}

impl std::ops::Deref for KillOnDrop {
    type Target = Child;
    fn deref(&self) -> &Child {
        self.0.as_ref().expect("a child until waited for")
    }
}

impl std::ops::DerefMut for KillOnDrop {
    fn deref_mut(&mut self) -> &mut Child {
        self.0.as_mut().expect("a child until waited for")
    }
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Some(child) = &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The end of a process's log file (about 3000 bytes) under a heading
/// naming it, for error messages.
pub fn log_tail(name: &str, log: &Path) -> String {
    let text = fs::read_to_string(log).unwrap_or_default();
    let start = text.len().saturating_sub(3000);
    let start = (start..text.len())
        .find(|&i| text.is_char_boundary(i))
        .unwrap_or(text.len());
    format!("--- {name} log ---\n{}", &text[start..])
}
