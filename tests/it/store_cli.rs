//! The store commands end to end: add, cat, get, pin, repo gc, repo verify,
//! dag export/import, each through the `meshcast` binary on a temporary repo.

use crate::support::*;
use anyhow::{bail, ensure, Context, Result};
use cid::Cid;
use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

/// One entry of a directory tree on disk.
#[derive(Debug, PartialEq, Eq)]
enum Entry {
    Dir,
    File(Vec<u8>),
    Symlink(PathBuf),
}

/// Every entry under `root` by relative path, skipping dot files unless
/// `hidden`. Symlinks are entries of their own, as UnixFS keeps them.
fn listing(root: &Path, hidden: bool) -> Result<BTreeMap<String, Entry>> {
    fn walk(
        root: &Path,
        dir: &Path,
        hidden: bool,
        out: &mut BTreeMap<String, Entry>,
    ) -> Result<()> {
        for e in fs::read_dir(dir).with_context(|| format!("list {}", dir.display()))? {
            let e = e?;
            let name = e.file_name().to_string_lossy().into_owned();
            if !hidden && name.starts_with('.') {
                continue;
            }
            let rel = e.path().strip_prefix(root)?.to_string_lossy().into_owned();
            let t = e.file_type()?;
            if t.is_symlink() {
                out.insert(rel, Entry::Symlink(fs::read_link(e.path())?));
            } else if t.is_dir() {
                out.insert(rel, Entry::Dir);
                walk(root, &e.path(), hidden, out)?;
            } else {
                out.insert(rel, Entry::File(fs::read(e.path())?));
            }
        }
        Ok(())
    }
    let mut out = BTreeMap::new();
    walk(root, root, hidden, &mut out)?;
    Ok(out)
}

/// `pin ls` as CID -> kind.
fn pins(repo: &Repo) -> Result<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    for line in repo.run(["pin", "ls"])?.lines() {
        let mut parts = line.split_whitespace();
        match (parts.next(), parts.next(), parts.next()) {
            (Some(cid), Some(kind), None) => {
                out.insert(cid.to_string(), kind.to_string());
            }
            _ => bail!("pin ls printed {line:?}, not `<cid> <kind>`"),
        }
    }
    Ok(out)
}

#[test]
fn cat_returns_the_added_bytes() -> Result<()> {
    let repo = Repo::new()?;
    let mut files = fixtures().sized_files();
    files.push(fixtures().two_level());
    for profile in [
        &[][..],
        &["--profile", "unixfs-v1-2025"][..],
        &["--cid-version", "1"][..],
    ] {
        for f in &files {
            let mut args: Vec<&std::ffi::OsStr> = profile.iter().map(|s| s.as_ref()).collect();
            args.push(f.as_os_str());
            let cid = repo.add(args)?;
            let got = repo.cat(&cid)?;
            let want = fs::read(f)?;
            ensure!(
                got == want,
                "cat {cid} ({profile:?} {}) gave {} bytes, want {} (first difference at {:?})",
                f.display(),
                got.len(),
                want.len(),
                got.iter().zip(&want).position(|(a, b)| a != b)
            );
        }
    }
    Ok(())
}

#[test]
fn stored_add_gives_the_only_hash_cid() -> Result<()> {
    let repo = Repo::new()?;
    let tree = fixtures().tree();
    let f = fixtures().two_level();
    assert_eq!(repo.add([&f])?, only_hash([&f])?);
    let args = ["-r".as_ref(), "-H".as_ref(), tree.as_os_str()];
    assert_eq!(repo.add(args)?, only_hash(args)?);
    Ok(())
}

#[test]
fn get_writes_the_added_tree_and_file() -> Result<()> {
    let repo = Repo::new()?;
    let out = tempdir()?;
    let tree = fixtures().tree();

    for hidden in [false, true] {
        let mut args = vec!["-r".as_ref(), tree.as_os_str()];
        if hidden {
            args.insert(0, "-H".as_ref());
        }
        let cid = repo.add(args)?;
        let dest = out.path().join(format!("tree-{hidden}"));
        repo.run([
            "get".as_ref(),
            cid.as_ref(),
            "-o".as_ref(),
            dest.as_os_str(),
        ])?;
        assert_eq!(
            listing(&dest, true)?,
            listing(&tree, hidden)?,
            "get {cid} (added with hidden={hidden})"
        );
    }

    let f = fixtures().path().join(format!("random-{}", MIB + 1));
    let cid = repo.add([&f])?;
    let dest = out.path().join("file");
    repo.run([
        "get".as_ref(),
        cid.as_ref(),
        "-o".as_ref(),
        dest.as_os_str(),
    ])?;
    assert!(fs::read(&dest)? == fs::read(&f)?, "get {cid} -o file");
    Ok(())
}

#[test]
fn pins_follow_add_pin_add_and_pin_rm() -> Result<()> {
    let repo = Repo::new()?;
    let a = repo.add([fixtures().path().join("text-1")])?;
    let b = repo.add([
        "--pin=false".as_ref(),
        fixtures().path().join("random-1").as_os_str(),
    ])?;
    let c = repo.add([
        "--pin=true".as_ref(),
        fixtures().path().join(format!("text-{CHUNK}")).as_os_str(),
    ])?;
    let p = pins(&repo)?;
    assert_eq!(
        p.get(&a).map(String::as_str),
        Some("recursive"),
        "pin ls: {p:?}"
    );
    assert_eq!(
        p.get(&c).map(String::as_str),
        Some("recursive"),
        "pin ls: {p:?}"
    );
    assert!(!p.contains_key(&b), "--pin=false pinned {b}: {p:?}");

    repo.run(["pin", "rm", &a])?;
    assert!(!pins(&repo)?.contains_key(&a), "pin rm {a}");
    repo.run(["pin", "add", &b])?;
    assert_eq!(
        pins(&repo)?.get(&b).map(String::as_str),
        Some("recursive"),
        "pin add {b}"
    );

    // `pin ls CID` answers for one CID.
    let out = repo.run(["pin", "ls", &b])?;
    assert_eq!(out.trim_end(), format!("{b} recursive"));
    Ok(())
}

#[test]
fn gc_removes_unpinned_blocks_and_keeps_pinned_ones() -> Result<()> {
    let repo = Repo::new()?;
    let kept_file = fixtures().path().join(format!("random-{}", MIB + 1));
    let gone_file = fixtures().path().join(format!("text-{}", MIB + 1));
    let kept = repo.add([&kept_file])?;
    let before = repo.block_files()?.len();
    ensure!(before > 1, "add stored {before} block files");
    let gone = repo.add(["--pin=false".as_ref(), gone_file.as_os_str()])?;
    let with_unpinned = repo.block_files()?.len();
    ensure!(with_unpinned > before, "unpinned add stored no blocks");

    repo.run(["repo", "gc"])?;
    assert_eq!(
        repo.block_files()?.len(),
        before,
        "gc left other blocks than the pinned DAG's"
    );
    assert!(
        repo.cat(&kept)? == fs::read(&kept_file)?,
        "pinned {kept} changed"
    );
    assert!(repo.cat(&gone).is_err(), "cat {gone} works after gc");

    // Unpinning makes the rest collectable too.
    repo.run(["pin", "rm", &kept])?;
    repo.run(["repo", "gc"])?;
    assert_eq!(repo.block_files()?, Vec::<PathBuf>::new());
    Ok(())
}

#[test]
fn verify_names_a_corrupted_block() -> Result<()> {
    let repo = Repo::new()?;
    repo.add([fixtures().path().join(format!("random-{}", MIB + 1))])?;
    let out = repo.cmd(["repo", "verify"]).output()?;
    check(&out, "repo verify on a healthy repo")?;

    // Flip one byte in the middle of the largest block (a leaf).
    let files = repo.block_files()?;
    let victim = files
        .iter()
        .max_by_key(|p| fs::metadata(p).map(|m| m.len()).unwrap_or(0))
        .context("no block files")?
        .clone();
    let mut bytes = fs::read(&victim)?;
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x55;
    fs::write(&victim, &bytes)?;

    let out = repo.cmd(["repo", "verify"]).output()?;
    ensure!(
        !out.status.success(),
        "repo verify exits 0 with a corrupt block"
    );
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let key = victim.file_name().unwrap().to_string_lossy().into_owned();
    let named = text.to_lowercase().contains(&key.to_lowercase())
        || text.contains(&*victim.to_string_lossy())
        || text.split_whitespace().any(|w| {
            Cid::try_from(w.trim_matches(|c: char| !c.is_ascii_alphanumeric()))
                .map(|c| data_encoding::BASE32_NOPAD.encode(&c.hash().to_bytes()) == key)
                .unwrap_or(false)
        });
    ensure!(named, "repo verify does not name block {key}:\n{text}");
    Ok(())
}

#[test]
fn dag_export_import_round_trip() -> Result<()> {
    let src = Repo::new()?;
    let dst = Repo::new()?;
    let work = tempdir()?;
    let tree = fixtures().tree();
    let file = fixtures().two_level();
    for (args, name) in [
        (vec!["-r".as_ref(), "-H".as_ref(), tree.as_os_str()], "tree"),
        (vec![file.as_os_str()], "file"),
        (
            vec![
                "--profile".as_ref(),
                "unixfs-v1-2025".as_ref(),
                file.as_os_str(),
            ],
            "file-v1",
        ),
    ] {
        let root = src.add(args)?;
        let out = src.cmd(["dag", "export", &root]).output()?;
        check(&out, "dag export")?;
        let car = parse_car(&out.stdout).with_context(|| format!("dag export {root} ({name})"))?;
        assert_eq!(
            car.roots,
            vec![Cid::try_from(root.as_str())?],
            "CAR roots of {name}"
        );
        assert!(
            car.blocks.iter().any(|(c, _)| c.to_string() == root),
            "CAR of {name} lacks its root block"
        );
        let car_path = work.path().join(format!("{name}.car"));
        fs::write(&car_path, &out.stdout)?;

        let printed = dst.run(["dag".as_ref(), "import".as_ref(), car_path.as_os_str()])?;
        assert!(
            printed.contains(&root),
            "dag import printed {printed:?}, not {root}"
        );
        assert_eq!(
            pins(&dst)?.get(&root).map(String::as_str),
            Some("recursive"),
            "dag import pins {root}"
        );

        if name == "tree" {
            let dest = work.path().join("tree-out");
            dst.run([
                "get".as_ref(),
                root.as_ref(),
                "-o".as_ref(),
                dest.as_os_str(),
            ])?;
            assert_eq!(
                listing(&dest, true)?,
                listing(&tree, true)?,
                "tree after CAR round trip"
            );
        } else {
            assert!(
                dst.cat(&root)? == fs::read(&file)?,
                "{name} after CAR round trip"
            );
        }
    }
    // The imported blocks are whole.
    check(
        &dst.cmd(["repo", "verify"]).output()?,
        "repo verify after dag import",
    )?;
    Ok(())
}

#[test]
fn exported_car_root_is_kubos_cid() -> Result<()> {
    let repo = Repo::new()?;
    let f = fixtures().path().join(format!("text-{}", MIB + 1));
    let root = repo.add([&f])?;
    let out = repo.cmd(["dag", "export", &root]).output()?;
    check(&out, "dag export")?;
    let car = parse_car(&out.stdout)?;
    assert_eq!(car.roots.len(), 1);
    assert_eq!(
        car.roots[0].to_string(),
        kubo_hash(&f)?,
        "CAR root vs kubo add"
    );
    // kubo stores the same DAG: its repo and the CAR hold the same block set.
    // 1 MiB + 1 in 256 KiB chunks: 5 leaves and one root.
    assert_eq!(car.blocks.len(), 6, "blocks in the CAR");
    Ok(())
}

#[test]
fn kubo_reads_what_it_added_like_meshcast() -> Result<()> {
    // The same file added to kubo and to meshcast comes back identical from
    // both: kubo `Download` and meshcast `cat`.
    let work = tempdir()?;
    let kubo_repo = work.path().join("kubo");
    let f = fixtures().path().join(format!("random-{}", MIB + 1));
    let mut c = kubo_cmd();
    c.args(["add", "--repo"]).arg(&kubo_repo).arg(&f);
    let cid = one_cid(&stdout_of(c)?)?;
    let dest = work.path().join("from-kubo");
    let mut c = kubo_cmd();
    c.args(["download", "--repo"])
        .arg(&kubo_repo)
        .arg(&cid)
        .arg(&dest);
    stdout_of(c)?;
    let repo = Repo::new()?;
    assert_eq!(repo.add([&f])?, cid);
    assert!(fs::read(&dest)? == repo.cat(&cid)?);
    Ok(())
}

/// On a terminal, a large add shows a byte progress bar on stderr; piped, it
/// shows none. `script` (util-linux) gives the command a real pseudo-terminal.
#[test]
fn progress_bar_only_on_a_terminal() -> Result<()> {
    let repo = Repo::new()?;
    let dir = tempdir()?;
    let file = dir.path().join("big.bin");
    std::fs::write(&file, random_bytes(7, 48 << 20))?;
    let cmd = format!(
        "{} add --data {} {}",
        meshcast_bin().display(),
        repo.path().display(),
        file.display()
    );
    let out = std::process::Command::new("script")
        .args(["-qec", &cmd, "/dev/null"])
        .output()
        .context("running script(1) from util-linux")?;
    check(&out, "meshcast add under script")?;
    let screen = String::from_utf8_lossy(&out.stdout);
    assert!(
        screen.contains("MiB"),
        "no progress bar on a terminal: {screen:?}"
    );
    assert!(screen.contains("added "), "{screen:?}");

    // Piped: the same add prints only its result.
    let mut piped = repo.cmd(["add".as_ref(), file.as_os_str()]);
    let out = piped.output()?;
    check(&out, "meshcast add, piped")?;
    assert!(!String::from_utf8_lossy(&out.stderr).contains("MiB"));
    Ok(())
}

/// `repo gc` run while another process is adding waits for the add (the repo
/// lock), so none of the add's blocks are lost and the result is pinned.
#[test]
fn gc_during_add_keeps_the_new_blocks() -> Result<()> {
    let repo = Repo::new()?;
    let dir = tempdir()?;
    let file = dir.path().join("big.bin");
    let data = random_bytes(11, 96 << 20);
    std::fs::write(&file, &data)?;
    let add = repo
        .cmd(["add".as_ref(), "-Q".as_ref(), file.as_os_str()])
        .stdout(std::process::Stdio::piped())
        .spawn()?;
    // Let the add write some blocks first.
    for _ in 0..200 {
        if !repo.block_files()?.is_empty() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    ensure!(
        !repo.block_files()?.is_empty(),
        "the add wrote no block in 2 s"
    );
    let gc = repo.run(["repo", "gc"])?;
    let out = add.wait_with_output()?;
    ensure!(out.status.success(), "add failed: {out:?}");
    let cid = String::from_utf8(out.stdout)?.trim().to_string();
    ensure!(
        gc.lines().all(|l| !l.contains(&cid)),
        "gc removed the new root"
    );
    assert_eq!(repo.cat(&cid)?, data, "content lost to a concurrent gc");
    repo.run(["repo", "verify"])?;
    let pins = repo.run(["pin", "ls"])?;
    assert!(pins.contains(&cid), "{pins}");
    Ok(())
}

#[test]
fn a_reader_that_stops_early_is_no_error() -> Result<()> {
    let repo = Repo::new()?;
    let tmp = tempdir()?;
    for seed in 0..3 {
        let f = tmp.path().join(format!("f{seed}"));
        write_random_file(&f, seed, 1000)?;
        repo.add([&f])?;
    }
    // `meshcast pin ls | head -0`: the reading end is closed before
    // meshcast writes a byte, so its first write fails with EPIPE.
    let (reader, writer) = std::io::pipe()?;
    drop(reader);
    let out = repo
        .cmd(["pin", "ls"])
        .stdout(writer)
        .stderr(std::process::Stdio::piped())
        .output()?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    ensure!(
        out.status.success() && stderr.is_empty(),
        "pin ls into a closed pipe: {} {stderr}",
        out.status
    );
    Ok(())
}

/// `dag import` of a CAR that lacks some of its root's blocks fails, says
/// which root was not pinned, and pins nothing; one with garbage after its
/// blocks fails too but keeps and pins what it read, and says so.
#[test]
fn dag_import_fails_on_missing_blocks_and_keeps_what_it_read() -> Result<()> {
    use meshcast::store::car;
    let src = Repo::new()?;
    let work = tempdir()?;
    let root = src.add([fixtures().two_level()])?;
    let out = src.cmd(["dag", "export", &root]).output()?;
    check(&out, "dag export")?;
    let parsed = parse_car(&out.stdout)?;
    ensure!(
        parsed.blocks.len() > 2,
        "a two-level file has several blocks"
    );

    let mut partial = car::header(&parsed.roots);
    for (cid, data) in parsed.blocks.iter().take(parsed.blocks.len() - 1) {
        partial.extend_from_slice(&car::section(cid, data));
    }
    let partial_path = work.path().join("partial.car");
    fs::write(&partial_path, &partial)?;
    let dst = Repo::new()?;
    let out = dst
        .cmd(["dag".as_ref(), "import".as_ref(), partial_path.as_os_str()])
        .output()?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    ensure!(
        !out.status.success(),
        "dag import of a CAR missing a block exited {}:\n{stdout}\n{stderr}",
        out.status
    );
    ensure!(
        stdout.contains(&format!("pinned root {root} FAILED")) && stderr.contains(&root),
        "dag import names the unpinned root: {stdout} / {stderr}"
    );
    ensure!(
        !pins(&dst)?.contains_key(&root),
        "a partial root is not pinned"
    );

    let mut trailing = out_car(&parsed);
    trailing.extend_from_slice(&[0x05, 0xff, 0xff]);
    let trailing_path = work.path().join("trailing.car");
    fs::write(&trailing_path, &trailing)?;
    let dst = Repo::new()?;
    let out = dst
        .cmd(["dag".as_ref(), "import".as_ref(), trailing_path.as_os_str()])
        .output()?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    ensure!(
        !out.status.success(),
        "dag import of a CAR with trailing garbage exited {}",
        out.status
    );
    ensure!(
        stderr.contains(&format!("kept the {} blocks", parsed.blocks.len())),
        "dag import says what it kept: {stderr}"
    );
    ensure!(
        stdout.contains(&format!("pinned root {root} success")),
        "the complete root is pinned and reported: {stdout}"
    );
    assert_eq!(
        pins(&dst)?.get(&root).map(String::as_str),
        Some("recursive"),
        "the complete root is pinned"
    );
    ensure!(dst.cat(&root)? == fs::read(fixtures().two_level())?);
    Ok(())
}

/// A CAR holding every block of `car`.
fn out_car(car: &Car) -> Vec<u8> {
    let mut bytes = meshcast::store::car::header(&car.roots);
    for (cid, data) in &car.blocks {
        bytes.extend_from_slice(&meshcast::store::car::section(cid, data));
    }
    bytes
}
