//! A full disk: the data directory on a 60 MB tmpfs the test mounts (as
//! root), a 3 Mbit/s publisher. With the disk filled by a ballast file,
//! segments that cannot be stored become `EXT-X-GAP`s, the API and the
//! metrics say so, the publisher is told (RTMP `onStatus`) when storing
//! fails and when it works again, the log says each once, the session
//! still ends cleanly, and whatever the API names stays pinned through a
//! `repo gc` and fetchable, and plays across its gap; nothing is left in
//! `tmp/`. With retention on, the node lets old media go and the disk
//! never fills, the oldest first across its streams.

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
    stream(json, "cam")
}

fn stream(json: &Value, name: &str) -> Result<Value> {
    json["streams"]
        .as_array()
        .and_then(|a| a.iter().find(|s| s["name"] == name))
        .cloned()
        .with_context(|| format!("no stream {name}: {json}"))
}

/// The value of the metric `series` (name and labels) in `GET /metrics`.
fn metric(gw: &Gateway, series: &str) -> Result<f64> {
    let r = gw.expect("/metrics", &[], 200)?;
    let text = String::from_utf8_lossy(&r.body).into_owned();
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
        .with_context(|| format!("no {series} in\n{text}"))
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
    all_named_is_kept_of(gw, repo, "cam")
}

/// [`all_named_is_kept`] for stream `name`.
fn all_named_is_kept_of(gw: &Gateway, repo: &Repo, name: &str) -> Result<String> {
    repo.run(["repo", "gc"])?;
    let stream = self::stream(&streams_json(gw)?, name)?;
    let site = stream["site_cid"].as_str().context("site_cid")?;
    let archive_cid = stream["sessions"]
        .as_array()
        .and_then(|a| a.last())
        .and_then(|s| s["archive_cid"].as_str())
        .context("archive_cid")?;
    let archive = get_text(gw, &format!("/ipfs/{archive_cid}"))?;
    ensure!(
        archive == get_text(gw, &format!("/live/{name}/archive.m3u8"))?,
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
    let failing = "meshcast_hls_storage_failing{stream=\"cam\"}";
    let dropped = "meshcast_hls_segments_dropped_total{stream=\"cam\"}";
    ensure!(metric(&gw, failing)? == 0.0 && metric(&gw, dropped)? == 0.0);
    // Room for a few seconds of 3 Mbit/s (375 kB/s), then full.
    let ballast = ballast(&fs, 1_500_000)?;
    let mut publisher = RtmpPublisher::start(rtmp_addr(&gw)?, KEY, &clip_3mbit(20)?)?;
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
    // The publisher is told, with the error; the operator sees it.
    let warning =
        publisher.wait_status("NetStream.Publish.StorageFailing", Duration::from_secs(5))?;
    ensure!(warning.level == "warning", "{warning:?}");
    ensure!(
        warning.description.contains("No space left on device"),
        "{warning:?}"
    );
    ensure!(metric(&gw, failing)? == 1.0, "the failing gauge");
    let dropped_then = metric(&gw, dropped)?;
    ensure!(dropped_then >= 2.0, "{dropped_then} segments dropped");
    // The live playlist goes on, marking the hole.
    let live = wait_live_segments(&gw, "cam", 1, Duration::from_secs(5))?;
    ensure!(live.contains("#EXT-X-GAP\n"), "{live}");
    // Space returns.
    std::fs::remove_file(&ballast)?;
    let resumed =
        publisher.wait_status("NetStream.Publish.StorageResumed", Duration::from_secs(10))?;
    ensure!(resumed.level == "status", "{resumed:?}");
    ensure!(metric(&gw, failing)? == 0.0, "the failing gauge after");
    ensure!(
        metric(&gw, dropped)? >= dropped_then,
        "a counter never goes down"
    );
    publisher.finish()?;
    let told: Vec<String> = publisher
        .statuses()
        .iter()
        .map(|s| s.code.clone())
        .collect();
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
    let gap_end = plays_across_the_gap(&gw, &archive)?;
    // hls.js in Chromium, through the node's player page, plays past it.
    let id = session["id"].as_str().context("session id")?;
    let played = play_for(
        &format!("{}/watch/cam?session={id}", gw.base),
        gap_end + 2.0,
        60,
    )?;
    ensure!(played.engine.as_deref() == Some("hls.js"), "{played:?}");
    let tmp: Vec<_> = std::fs::read_dir(repo.path().join("tmp"))?.collect();
    ensure!(tmp.is_empty(), "{} files left in tmp/", tmp.len());
    // Once when storing starts failing, once when it works again, as the
    // publisher was told; not a line per segment, and the small playlists
    // of a gap, which fit where no segment does, do not make it flap.
    let log = std::fs::read_to_string(&gw.log)?;
    let failed = log.matches("storing the stream failed").count();
    let works = log.matches("storing the stream works again").count();
    let warned = told
        .iter()
        .filter(|c| *c == "NetStream.Publish.StorageFailing")
        .count();
    ensure!(
        (failed, works, warned) == (1, 1, 1),
        "{failed} WARN and {works} INFO lines; the publisher heard {told:?}\n{log}"
    );
    ensure!(
        !log.contains("marked as a gap in the playlists: "),
        "a log line per dropped segment:\n{log}"
    );
    ensure!(log.contains("segments_dropped="), "{log}");
    Ok(())
}

/// ffmpeg plays `archive` (as the node serves it) across its gap: it exits
/// 0, and it decodes video before the gap and after it, the hole no
/// longer than the gap. Returns where the gap ends, in seconds.
fn plays_across_the_gap(gw: &Gateway, archive: &str) -> Result<f64> {
    // Where the first gap starts and ends in the archive's timeline.
    let (mut t, mut gap) = (0.0, None::<(f64, f64)>);
    let mut next_is_gap = false;
    for line in archive.lines() {
        if line == "#EXT-X-GAP" {
            next_is_gap = true;
        } else if let Some(d) = line.strip_prefix("#EXTINF:") {
            let d: f64 = d.split(',').next().unwrap_or("0").parse()?;
            if next_is_gap {
                gap = Some(match gap {
                    Some((start, end)) if (end - t).abs() < 1e-6 => (start, t + d),
                    Some(g) => g,
                    None => (t, t + d),
                });
            }
            next_is_gap = false;
            t += d;
        }
    }
    let (gap_start, gap_end) = gap.context("no gap in the archive")?;
    let url = format!("{}/live/cam/archive.m3u8", gw.base);
    let out = Command::new("ffmpeg")
        .args(["-v", "error", "-nostdin", "-i", &url, "-map", "0:v"])
        .args(["-f", "framemd5", "-"])
        .output()?;
    check(&out, "ffmpeg playing the archive with its gap")?;
    // framemd5: stream, dts, pts, duration, size, md5 (in 1/timebase).
    let text = String::from_utf8_lossy(&out.stdout);
    let timebase: f64 = text
        .lines()
        .find_map(|l| l.strip_prefix("#tb 0: 1/"))
        .context("no time base")?
        .trim()
        .parse()?;
    let pts: Vec<f64> = text
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split(',').nth(2)?.trim().parse::<f64>().ok())
        .map(|p| p / timebase)
        .collect();
    ensure!(pts.len() > 25, "{} frames decoded", pts.len());
    let first = pts.iter().copied().fold(f64::INFINITY, f64::min);
    let (before, after): (Vec<f64>, Vec<f64>) = pts
        .iter()
        .map(|p| p - first)
        .partition(|p| *p < gap_start + 0.5);
    let last_before = before.iter().copied().fold(0.0, f64::max);
    let first_after = after.iter().copied().fold(f64::INFINITY, f64::min);
    ensure!(
        last_before > gap_start - 1.0 && !after.is_empty(),
        "decoded up to {last_before} s before the gap at {gap_start}-{gap_end} s, {} frames after",
        after.len()
    );
    ensure!(
        first_after < gap_end + 1.0 && after.iter().any(|p| *p > gap_end + 1.5),
        "after the gap at {gap_start}-{gap_end} s, frames from {first_after} s"
    );
    Ok(gap_end)
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

/// Publishes `clip` to `key` in real time with ffmpeg, and waits for the
/// session of `name` to end; returns its id.
fn publish_session(gw: &Gateway, key: &str, name: &str, clip: &Path) -> Result<String> {
    let out = publish_cmd(rtmp_addr(gw)?, key, clip, true).output()?;
    check(&out, &format!("ffmpeg publishing {name}"))?;
    let stream = wait_ended(gw, name)?;
    stream["sessions"]
        .as_array()
        .and_then(|a| a.last())
        .and_then(|s| s["id"].as_str())
        .map(str::to_owned)
        .with_context(|| format!("no session of {name}: {stream}"))
}

fn session_ids(gw: &Gateway, name: &str) -> Result<Vec<String>> {
    let stream = stream(&streams_json(gw)?, name)?;
    Ok(stream["sessions"]
        .as_array()
        .context("sessions")?
        .iter()
        .filter_map(|s| s["id"].as_str().map(str::to_owned))
        .collect())
}

#[test]
fn low_space_lets_the_oldest_session_of_any_stream_go_first() -> Result<()> {
    const OLD: &str = "oldkey-0123456789";
    const NEW: &str = "newkey-0123456789";
    const WATERMARK: u64 = 20_000_000;
    let repo = Repo::new()?;
    let fs = Tmpfs::mount(&repo.path(), "60m")?;
    let config = format!(
        "{LOOPBACK_RTMP}{LOOPBACK_P2P}[live]\nmin_free_bytes = {WATERMARK}\n\n\
         [[streams]]\nname = \"old\"\nkey = \"{OLD}\"\n\n\
         [[streams]]\nname = \"new\"\nkey = \"{NEW}\"\n"
    );
    let gw = Gateway::start_config(&repo, &config)?;
    // Stream `old` (after `new` in the node's order of names) has the
    // oldest media: two 3 Mbit/s sessions of the same encoder, which share
    // their init segment (their tones differ, and so their segments). Then
    // `new` has a past session of its own.
    let o1 = publish_session(&gw, OLD, "old", &clip_3mbit_tone(6, 330)?)?;
    let o2 = publish_session(&gw, OLD, "old", &clip_3mbit_tone(6, 550)?)?;
    let n1 = publish_session(&gw, NEW, "new", &clip(4)?)?;
    ensure!(fs.free()? > WATERMARK + 5_000_000, "{} free", fs.free()?);
    // Just above the watermark: `new`'s next session takes the disk below
    // it by far less than `old`'s first session holds (2.2 MB).
    let _ballast = ballast(&fs, WATERMARK + 100_000)?;
    let n2 = publish_session(&gw, NEW, "new", &clip(6)?)?;
    ensure!(
        session_ids(&gw, "old")? == [o2.clone()],
        "old: {:?}, wanted only {o2} (of {o1}, {o2})",
        session_ids(&gw, "old")?
    );
    ensure!(
        session_ids(&gw, "new")? == [n1.clone(), n2.clone()],
        "new: {:?}, wanted {n1} and {n2} kept\n{}",
        session_ids(&gw, "new")?,
        gw.log_tail()
    );
    ensure!(
        !repo
            .path()
            .join("live/old")
            .join(format!("{o1}.json"))
            .exists(),
        "the dropped session's file is still there"
    );
    let log = std::fs::read_to_string(&gw.log)?;
    ensure!(log.contains("retention lets old media go"), "{log}");
    // What both streams name is whole after a GC: the kept session of
    // `old` still has the init segment it shared with the one that went.
    let old = all_named_is_kept_of(&gw, &repo, "old")?;
    ensure!(old.contains("#EXT-X-MAP:"), "{old}");
    all_named_is_kept_of(&gw, &repo, "new")?;
    let url = format!("{}/live/old/archive.m3u8", gw.base);
    let secs = decode_clean(&url)?;
    ensure!(secs > 5.0, "the kept session of old plays {secs} s");
    Ok(())
}
