//! A full disk: the data directory on a 60 MB tmpfs the test mounts (as
//! root), a 3 Mbit/s ffmpeg publisher. With the disk filled by a ballast
//! file, segments that cannot be stored become `EXT-X-GAP`s, the API says
//! so, the session still ends cleanly, and whatever the API names stays
//! pinned through a `repo gc` and fetchable; nothing is left in `tmp/`.
//! With retention on, the node lets old media go and the disk never fills.

use crate::support::*;
use anyhow::{ensure, Context, Result};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// A tmpfs of `size` mounted on `dir` while it lives.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(dir: &Path, size: &str) -> Result<Self> {
        std::fs::create_dir_all(dir)?;
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .output()
            .context("running mount (the full-disk tests run as root)")?;
        check(&out, "mount -t tmpfs")?;
        Ok(Self(dir.to_owned()))
    }

    /// Bytes free on it.
    fn free(&self) -> Result<u64> {
        let st = rustix::fs::statvfs(&self.0)?;
        Ok(st.f_bavail * st.f_frsize)
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Fills the filesystem of `dir` until `leave` bytes are free.
fn ballast(fs: &Tmpfs, leave: u64) -> Result<PathBuf> {
    let path = fs.0.join("ballast");
    let n = fs.free()?.saturating_sub(leave);
    std::fs::write(&path, vec![0x5a; n as usize])?;
    Ok(path)
}

fn cam(json: &Value) -> Result<Value> {
    json["streams"]
        .as_array()
        .and_then(|a| a.iter().find(|s| s["name"] == "cam"))
        .cloned()
        .with_context(|| format!("no stream cam: {json}"))
}

fn config(min_free: u64) -> String {
    format!(
        "{LOOPBACK_RTMP}{LOOPBACK_P2P}[live]\nmin_free_bytes = {min_free}\n\n\
         [[streams]]\nname = \"cam\"\nkey = \"{KEY}\"\n"
    )
}

/// After a `repo gc`: the stream's site and archive, and every segment and
/// init segment the archive names, come back (hash-checked); the gaps'
/// URIs answer too (empty). Returns the archive.
fn all_named_is_kept(gw: &Gateway, repo: &Repo) -> Result<String> {
    repo.run(["repo", "gc"])?;
    let stream = cam(&streams_json(gw)?)?;
    let site = stream["site_cid"].as_str().context("site_cid")?;
    let archive_cid = stream["sessions"]
        .as_array()
        .and_then(|a| a.last())
        .and_then(|s| s["archive_cid"].as_str())
        .context("archive_cid")?;
    let archive = get_text(gw, &format!("/ipfs/{archive_cid}"))?;
    ensure!(
        archive == get_text(gw, "/live/cam/archive.m3u8")?,
        "the archive served differs from the one the API names"
    );
    get_text(gw, &format!("/ipfs/{site}/stream.json"))?;
    let (inits, segments) = uris(&archive);
    for uri in inits.iter().chain(&segments) {
        if uri.contains("?filename=gap-") {
            // Players skip a gap; one that loads it anyway gets no bytes.
            let r = gw.get(uri, &[])?;
            ensure!(r.status == 200 && r.body.is_empty(), "{uri}: {}", r.status);
            continue;
        }
        fetch_verified(gw, uri).with_context(|| format!("{uri} after repo gc"))?;
    }
    let pins = repo.run(["pin", "ls"])?;
    for cid in [site, archive_cid] {
        ensure!(pins.contains(cid), "{cid} named by the API is not pinned");
    }
    Ok(archive)
}

#[test]
fn a_full_disk_marks_gaps_and_keeps_what_the_api_names() -> Result<()> {
    let repo = Repo::new()?;
    let fs = Tmpfs::mount(&repo.path(), "60m")?;
    let gw = Gateway::start_config(&repo, &config(0))?;
    // Room for a few seconds of 3 Mbit/s (375 kB/s), then full.
    let ballast = ballast(&fs, 1_500_000)?;
    let publisher = KillOnDrop::new(
        publish_cmd(rtmp_addr(&gw)?, KEY, &clip_3mbit(20)?, true)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?,
    );
    let start = Instant::now();
    let full = loop {
        let stream = cam(&streams_json(&gw)?)?;
        if stream["storage"]["segments_dropped"].as_u64() >= Some(2) {
            break stream;
        }
        ensure!(
            start.elapsed() < Duration::from_secs(20),
            "no segment was dropped on a full disk: {stream}\n{}",
            gw.log_tail()
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    ensure!(full["storage"]["failing"] == true, "{full}");
    ensure!(full["live"] == true, "{full}");
    // The live playlist goes on, marking the hole.
    let live = wait_live_segments(&gw, "cam", 1, Duration::from_secs(5))?;
    ensure!(live.contains("#EXT-X-GAP\n"), "{live}");
    // Space returns.
    std::fs::remove_file(&ballast)?;
    let out = publisher.wait_with_output()?;
    check(&out, "ffmpeg publishing onto a full disk")?;
    let stream = wait_ended(&gw, "cam")?;
    let session = &stream["sessions"][0];
    ensure!(session["gaps"].as_u64() >= Some(2), "{stream}");
    ensure!(stream["storage"]["failing"] == false, "{stream}");
    let archive = all_named_is_kept(&gw, &repo)?;
    ensure!(archive.contains("#EXT-X-GAP\n"), "{archive}");
    ensure!(archive.ends_with("#EXT-X-ENDLIST\n"), "{archive}");
    // Media is on both sides of the gap, and the seconds the API lists
    // are stored ones.
    let (_, segments) = uris(&archive);
    let stored = segments
        .iter()
        .filter(|u| !u.contains("?filename=gap-"))
        .count();
    ensure!(stored >= 4, "{archive}");
    let listed = session["duration_s"].as_f64().context("duration_s")?;
    let gap = session["gap_s"].as_f64().context("gap_s")?;
    let secs = playlist_secs(&archive);
    ensure!(
        (listed + gap - secs).abs() < 0.01,
        "{listed} s + {gap} s of gaps, the archive lasts {secs} s"
    );
    let tmp: Vec<_> = std::fs::read_dir(repo.path().join("tmp"))?.collect();
    ensure!(tmp.is_empty(), "{} files left in tmp/", tmp.len());
    let log = std::fs::read_to_string(&gw.log)?;
    ensure!(log.contains("marked as a gap"), "{log}");
    Ok(())
}

/// The sum of a playlist's EXTINF durations.
fn playlist_secs(playlist: &str) -> f64 {
    playlist
        .lines()
        .filter_map(|l| l.strip_prefix("#EXTINF:"))
        .filter_map(|l| l.split(',').next()?.parse::<f64>().ok())
        .sum()
}

#[test]
fn retention_keeps_the_disk_from_filling() -> Result<()> {
    let repo = Repo::new()?;
    let fs = Tmpfs::mount(&repo.path(), "60m")?;
    let gw = Gateway::start_config(&repo, &config(5_000_000))?;
    // 12 MB free, of which 5 MB must stay free: room for the live window
    // (six 2 s segments, 4.5 MB) and a little more, so that after about
    // 18 s of the 30 s the oldest goes.
    let _ballast = ballast(&fs, 12_000_000)?;
    let publisher = KillOnDrop::new(
        publish_cmd(rtmp_addr(&gw)?, KEY, &clip_3mbit(30)?, true)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?,
    );
    let mut least = u64::MAX;
    let start = Instant::now();
    loop {
        least = least.min(fs.free()?);
        let stream = cam(&streams_json(&gw)?)?;
        if stream["sessions"][0]["ended"] == true {
            break;
        }
        ensure!(start.elapsed() < Duration::from_secs(45), "{stream}");
        std::thread::sleep(Duration::from_millis(50));
    }
    drop(publisher);
    let stream = cam(&streams_json(&gw)?)?;
    ensure!(
        stream["storage"]["segments_dropped"] == 0,
        "the disk filled: {stream}"
    );
    // A segment (at most ~1 MB at 3 Mbit/s) may be written below the
    // watermark before the oldest goes.
    ensure!(least > 3_000_000, "free space fell to {least} bytes");
    let archive = all_named_is_kept(&gw, &repo)?;
    ensure!(
        !archive.contains("#EXT-X-MEDIA-SEQUENCE:0\n"),
        "retention let nothing go: {archive}"
    );
    let log = std::fs::read_to_string(&gw.log)?;
    ensure!(log.contains("retention lets old media go"), "{log}");
    Ok(())
}
