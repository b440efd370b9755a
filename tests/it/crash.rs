//! Crash safety: `meshcast add` killed with SIGKILL at random moments must
//! leave a repo where `repo verify` finds no corrupt block and a new add of
//! the same file succeeds and reads back byte for byte.
//!
//! The moments are random fractions of the time one whole add takes on this
//! machine; the seed is printed and `MESHCAST_CRASH_SEED` replays a run.

use crate::support::*;
use anyhow::{ensure, Context, Result};
use std::process::Stdio;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const FILE_LEN: u64 = 200 * MIB as u64;
const KILLS: usize = 5;

/// `meshcast cat CID` hashed as it streams, so 200 MB never sit in memory.
fn cat_sha256(repo: &Repo, cid: &str) -> Result<[u8; 32]> {
    let mut child = repo
        .cmd(["cat", cid])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("start meshcast cat")?;
    let digest = sha256_reader(child.stdout.as_mut().expect("piped stdout"))?;
    let out = child.wait_with_output()?;
    check(&out, "meshcast cat")?;
    Ok(digest)
}

#[test]
fn killed_adds_leave_a_consistent_repo() -> Result<()> {
    let work = tempdir()?;
    let file = work.path().join("big.bin");
    write_random_file(&file, 200, FILE_LEN)?;
    let want_digest = sha256_file(&file)?;

    // How long a whole add takes here, and the CID it gives.
    let reference = Repo::new()?;
    let start = Instant::now();
    let want_cid = reference.add([&file])?;
    let full = start.elapsed();
    drop(reference);

    let seed = match std::env::var("MESHCAST_CRASH_SEED") {
        Ok(s) => s.parse().context("MESHCAST_CRASH_SEED is not a number")?,
        Err(_) => SystemTime::now().duration_since(UNIX_EPOCH)?.as_nanos() as u64,
    };
    eprintln!("crash test: seed {seed} (MESHCAST_CRASH_SEED replays), whole add {full:?}");
    let mut rng = Rng::new(seed);

    let repo = Repo::new()?;
    let mut finished = 0;
    for i in 0..KILLS {
        // Anywhere from just after start to just before the end.
        let frac = 0.02 + 0.96 * (rng.below(10_000) as f64 / 10_000.0);
        let delay = full.mul_f64(frac);
        let mut child = repo
            .cmd(["add", "-Q"])
            .arg(&file)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("start meshcast add")?;
        std::thread::sleep(delay);
        if child.try_wait()?.is_some() {
            finished += 1;
        }
        // SIGKILL: no destructor, no flush, no unlock runs.
        let _ = child.kill();
        child.wait()?;
        eprintln!("crash test: kill {i} after {delay:?}");

        let out = repo.cmd(["repo", "verify"]).output()?;
        check(
            &out,
            &format!("repo verify after kill {i} at {delay:?} (seed {seed})"),
        )?;
    }
    ensure!(
        finished < KILLS,
        "every add finished before its kill: nothing was tested"
    );

    assert_eq!(repo.add([&file])?, want_cid, "add after the kills");
    ensure!(
        cat_sha256(&repo, &want_cid)? == want_digest,
        "cat after the kills differs from the file"
    );
    check(
        &repo.cmd(["repo", "verify"]).output()?,
        "repo verify after the final add",
    )?;

    // GC sweeps what the killed adds left unpinned, and nothing else.
    repo.run(["repo", "gc"])?;
    check(
        &repo.cmd(["repo", "verify"]).output()?,
        "repo verify after gc",
    )?;
    ensure!(
        cat_sha256(&repo, &want_cid)? == want_digest,
        "cat after gc differs from the file"
    );
    Ok(())
}

#[test]
fn killed_add_then_gc_then_add() -> Result<()> {
    // A kill early in an add, a GC right after (it must not trip over the
    // dead writer's lock or temporary files), then a whole add.
    let work = tempdir()?;
    let file = work.path().join("mid.bin");
    write_random_file(&file, 201, 40 * MIB as u64)?;
    let repo = Repo::new()?;
    let mut child = repo
        .cmd(["add", "-Q"])
        .arg(&file)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    std::thread::sleep(Duration::from_millis(150));
    let _ = child.kill();
    child.wait()?;
    repo.run(["repo", "gc"])?;
    check(
        &repo.cmd(["repo", "verify"]).output()?,
        "repo verify after kill and gc",
    )?;
    let cid = repo.add([&file])?;
    ensure!(
        cat_sha256(&repo, &cid)? == sha256_file(&file)?,
        "cat after kill, gc, add"
    );
    Ok(())
}

/// A node killed while a publisher sends, restarted at once: the encoder
/// reconnecting within the reconnect window continues the session after a
/// discontinuity, as it would had only its connection dropped.
#[test]
fn a_publisher_back_after_a_node_crash_continues_its_session() -> Result<()> {
    let repo = Repo::new()?;
    let args = ["--stream".to_owned(), format!("cam={KEY}")];
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut publisher;
    {
        let gw = Gateway::start(&repo, &args)?;
        publisher = KillOnDrop::new(
            publish_cmd(rtmp_addr(&gw)?, KEY, &clip(8)?, true)
                .stderr(Stdio::null())
                .spawn()?,
        );
        wait_live_segments(&gw, "cam", 2, Duration::from_secs(20))?;
        // Dropped: SIGKILL, no shutdown runs.
    }
    let _ = publisher.kill();
    publisher.wait()?;
    let gw = Gateway::start(&repo, &args)?;
    let before = streams_json(&gw)?;
    ensure!(
        before["streams"][0]["sessions"][0]["ended"] == false,
        "the crashed session ended at once: {before}"
    );
    let out = publish_cmd(rtmp_addr(&gw)?, KEY, &clip(4)?, false).output()?;
    check(&out, "ffmpeg publishing after the restart")?;
    let stream = wait_ended(&gw, "cam")?;
    assert_eq!(
        stream["sessions"].as_array().map(Vec::len),
        Some(1),
        "the publisher back after the restart started a new session: {stream}"
    );
    let archive = get_text(&gw, "/live/cam/archive.m3u8")?;
    ensure!(
        archive.matches("#EXT-X-DISCONTINUITY\n").count() == 1,
        "{archive}"
    );
    let (_, segments) = uris(&archive);
    for uri in &segments {
        fetch_verified(&gw, uri)?;
    }
    // At least two segments before the crash, then the whole 4 s clip.
    let got = decode_clean(&format!("{}/live/cam/archive.m3u8", gw.base))?;
    ensure!((7.0..=14.0).contains(&got), "archive lasts {got} s");
    Ok(())
}
