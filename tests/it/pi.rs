//! The Raspberry Pi builds: meshcast cross-built for 64-bit ARM
//! (`aarch64-unknown-linux-gnu`, Raspberry Pi OS 64-bit) and 32-bit ARM
//! (`armv7-unknown-linux-gnueabihf`, Raspberry Pi OS), run under qemu-user
//! as a Pi would run it.
//!
//! ```text
//! cargo build --profile cross --target T --bin meshcast   (Cross::repo)
//!   -> qemu-ARCH -L /usr/GNU-TRIPLE meshcast add -n ...   the same lines
//!      as the x86 binary on the CID vectors, kubo's CIDs where known
//!   -> qemu-ARCH ... meshcast serve <- ffmpeg publishes a clip in real
//!      time -> every segment of the archive fetched back hashes to its
//!      CID, probes and decodes, and has the CID the x86 binary gives it
//! ```
//!
//! `scripts/test` installs the cross toolchains (the rustup targets,
//! Debian's cross gcc and libc, qemu-user) and builds both binaries before
//! the suite; the build here then only checks that they are up to date.

use crate::support::*;
use anyhow::{ensure, Context, Result};
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;

/// A target a Pi runs, and how this machine runs its binaries.
struct Cross {
    /// The Rust target.
    triple: &'static str,
    /// The qemu-user emulator (Debian package qemu-user).
    qemu: &'static str,
    /// The target's libc, where the emulator finds the dynamic loader
    /// (Debian packages libc6-dev-arm64-cross, libc6-dev-armhf-cross).
    sysroot: &'static str,
    /// The ELF machine the binary must be built for.
    elf_machine: u16,
}

const AARCH64: Cross = Cross {
    triple: "aarch64-unknown-linux-gnu",
    qemu: "qemu-aarch64",
    sysroot: "/usr/aarch64-linux-gnu",
    elf_machine: 183,
};

const ARMV7: Cross = Cross {
    triple: "armv7-unknown-linux-gnueabihf",
    qemu: "qemu-arm",
    sysroot: "/usr/arm-linux-gnueabihf",
    elf_machine: 40,
};

impl Cross {
    /// Builds meshcast for the target with the `cross` profile (nothing
    /// to do when `scripts/test` already did) and returns the binary.
    fn bin(&self) -> Result<PathBuf> {
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let mut cmd = Command::new(cargo);
        // What `cargo test` sets for this package: build scripts (ring's)
        // rerun when it changes, which would rebuild what scripts/test
        // just built.
        for (k, _) in std::env::vars_os() {
            let k = k.to_string_lossy();
            if [
                "CARGO_PKG_",
                "CARGO_MANIFEST_",
                "CARGO_BIN_",
                "CARGO_CRATE_",
            ]
            .iter()
            .any(|p| k.starts_with(p))
                || ["OUT_DIR", "CARGO_PRIMARY_PACKAGE", "CARGO_TARGET_TMPDIR"].contains(&&*k)
            {
                cmd.env_remove(&*k);
            }
        }
        let out = cmd
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .args([
                "build",
                "--locked",
                "--profile",
                "cross",
                "--bin",
                "meshcast",
            ])
            .args(["--message-format", "json", "--target", self.triple])
            .output()
            .context("run cargo")?;
        check(&out, &format!("cargo build --target {}", self.triple))
            .context("scripts/test installs the cross toolchains and qemu-user")?;
        let bin = String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|m| m["reason"] == "compiler-artifact" && m["target"]["name"] == "meshcast")
            .find_map(|m| m["executable"].as_str().map(PathBuf::from))
            .with_context(|| format!("cargo named no meshcast binary for {}", self.triple))?;
        let machine = elf_machine(&bin)?;
        ensure!(
            machine == self.elf_machine,
            "{} is built for ELF machine {machine}, not {} ({})",
            bin.display(),
            self.elf_machine,
            self.triple
        );
        Ok(bin)
    }

    /// A new repo whose `meshcast` commands run the cross-built binary
    /// under qemu-user.
    fn repo(&self) -> Result<Repo> {
        let bin = self.bin()?;
        ensure!(
            Path::new(self.sysroot).join("lib").is_dir(),
            "{} is missing: install Debian's cross libc (scripts/test does)",
            self.sysroot
        );
        let qemu = Command::new(self.qemu).arg("--version").output();
        ensure!(
            qemu.is_ok_and(|o| o.status.success()),
            "{} does not run: install Debian's qemu-user (scripts/test does)",
            self.qemu
        );
        Repo::run_by(vec![
            self.qemu.into(),
            "-L".into(),
            self.sysroot.into(),
            bin.into(),
        ])
    }
}

/// The `e_machine` field of an ELF file's header.
fn elf_machine(path: &Path) -> Result<u16> {
    let bytes = std::fs::read(path).with_context(|| format!("read {}", path.display()))?;
    ensure!(
        bytes.len() > 20 && bytes.starts_with(b"\x7fELF"),
        "{} is not an ELF file",
        path.display()
    );
    // Both targets are little-endian.
    Ok(u16::from_le_bytes([bytes[18], bytes[19]]))
}

/// Every `meshcast add -n` case the CID vectors run, as arguments.
fn add_cases(dir: &Path) -> Result<Vec<Vec<OsString>>> {
    let fixtures = fixtures();
    // Over the 256 KiB links threshold: a HAMT-sharded directory, whose
    // murmur3 bucket hashes are where word size and endianness would show.
    let sharded = dir.join("sharded");
    std::fs::create_dir_all(&sharded)?;
    for i in 0..5000 {
        std::fs::write(sharded.join(format!("{i:040}")), format!("file {i}\n"))?;
    }
    let all = fixtures.path().as_os_str().to_owned();
    let tree = fixtures.tree().into_os_string();
    let sharded = sharded.into_os_string();
    let case = |flags: &[&str], path: &OsString| {
        let mut args: Vec<OsString> = flags.iter().map(OsString::from).collect();
        args.push(path.clone());
        args
    };
    Ok(vec![
        // Files of every size, the two-level DAG and the tree, in kubo's
        // layout and in the two profiles.
        case(&["-r", "-H"], &all),
        case(&["-r", "-H", "--cid-version", "1"], &all),
        case(&["-r", "-H", "--raw-leaves"], &tree),
        case(&["-r", "-H", "--profile", "unixfs-v1-2025"], &all),
        case(&["-r", "--chunker", "size-1024"], &tree),
        case(&["-r", "-w"], &tree),
        case(&["-r"], &sharded),
        case(&["-r", "--profile", "unixfs-v1-2025"], &sharded),
    ])
}

/// `meshcast add -n` by the cross build prints what the x86 build prints
/// on every CID vector, and kubo's CIDs where kubo has them.
fn add_matches_x86(target: &Cross) -> Result<()> {
    let arm = target.repo()?;
    let x86 = Repo::new()?;
    let dir = tempdir()?;
    let mut bad = Vec::new();
    for args in add_cases(dir.path())? {
        let mut cmd: Vec<OsString> = vec!["add".into(), "-n".into()];
        cmd.extend(args);
        let want = x86.run(&cmd)?;
        let got = arm.run(&cmd)?;
        if got != want {
            bad.push(format!("{cmd:?}:\n{}:\n{got}\nx86:\n{want}", target.triple));
        }
    }
    ensure!(
        bad.is_empty(),
        "add -n differs from x86:\n{}",
        bad.join("\n")
    );

    let hello = dir.path().join("hello");
    write(&hello, b"hello world")?;
    let arm_hash = |flags: &[&str], path: &Path| -> Result<String> {
        let mut c = arm.cmd(["add", "-Q", "-n"]);
        c.args(flags).arg(path);
        one_cid(&stdout_of(c)?)
    };
    assert_eq!(
        arm_hash(&[], &hello)?,
        "Qmf412jQZiuVUtdgnB36FXFX7xg5V6KEbSJ4dpQuhkLyfD"
    );
    assert_eq!(
        arm_hash(&["--profile", "unixfs-v1-2025"], &hello)?,
        "bafkreifzjut3te2nhyekklss27nh3k72ysco7y32koao5eei66wof36n5e"
    );
    let tree = fixtures().tree();
    assert_eq!(arm_hash(&["-r", "-H"], &tree)?, kubo_hash(&tree)?, "tree");
    let big = fixtures().two_level();
    assert_eq!(arm_hash(&[], &big)?, kubo_hash(&big)?, "two-level DAG");
    Ok(())
}

/// The media segments `repo`'s node cut from `clip`, published in real
/// time, each checked against its CID; their CIDs.
fn ingest(repo: &Repo, clip: &Path) -> Result<Vec<String>> {
    let gw = Gateway::start(repo, &["--stream", &format!("cam={KEY}")])?;
    let out = publish_cmd(rtmp_addr(&gw)?, KEY, clip, true).output()?;
    check(&out, "ffmpeg publishing").with_context(|| gw.log_tail())?;
    wait_ended(&gw, "cam")?;
    let archive = check_archive(&gw, "cam", 4.0, true)?;
    Ok(uris(&archive).1)
}

/// A live ingest by the cross build: ffmpeg publishes, every segment comes
/// back hashing to its CID, and the segments are the ones the x86 build
/// cuts from the same clip.
fn ingest_matches_x86(target: &Cross) -> Result<()> {
    let clip = clip(4)?;
    let got = ingest(&target.repo()?, &clip)?;
    let want = ingest(&Repo::new()?, &clip)?;
    assert_eq!(got, want, "{} segments vs x86", target.triple);
    Ok(())
}

#[test]
fn aarch64_add_matches_x86() -> Result<()> {
    add_matches_x86(&AARCH64)
}

#[test]
fn aarch64_ingest_matches_x86() -> Result<()> {
    ingest_matches_x86(&AARCH64)
}

#[test]
fn armv7_add_matches_x86() -> Result<()> {
    add_matches_x86(&ARMV7)
}

#[test]
fn armv7_ingest_matches_x86() -> Result<()> {
    ingest_matches_x86(&ARMV7)
}
