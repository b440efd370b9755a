//! Media timing as real publishers send it and real players read it: OBS's
//! default keyframe interval (ffmpeg `-g 250 -r 30`), 2 s keyframes, and
//! GStreamer live pipelines (`rtmp2sink` and librtmp's `rtmpsink`), whose
//! timestamps arrive bunched up. Segments must open with keyframes, every
//! `EXTINF` stay within a target duration that suits the stream, decode
//! times only go forward, and mpv read the archive without a word about
//! repeated `moov` boxes.

use crate::support::*;
use anyhow::{ensure, Context, Result};
use serde_json::Value;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

/// The top-level boxes of an MP4 byte string: (type, body).
fn boxes(mut buf: &[u8]) -> Result<Vec<([u8; 4], &[u8])>> {
    let mut out = Vec::new();
    while !buf.is_empty() {
        ensure!(buf.len() >= 8, "truncated box header");
        let size = u32::from_be_bytes(buf[..4].try_into()?) as usize;
        ensure!(
            size >= 8 && size <= buf.len(),
            "box size {size} out of range"
        );
        out.push((buf[4..8].try_into()?, &buf[8..size]));
        buf = &buf[size..];
    }
    Ok(out)
}

/// A media segment's `mfhd` sequence numbers, one per fragment (a
/// low-latency segment is its parts, a fragment each); it must hold no
/// `moov` or `ftyp` (those are the init segment's, once).
fn moof_sequences(segment: &[u8]) -> Result<Vec<u32>> {
    let top = boxes(segment)?;
    let kinds: Vec<&[u8]> = top.iter().map(|(k, _)| &k[..]).collect();
    ensure!(
        !kinds.contains(&&b"moov"[..]) && !kinds.contains(&&b"ftyp"[..]),
        "a media segment repeats the init segment's boxes: {kinds:?}"
    );
    let mut out = Vec::new();
    for (_, moof) in top.iter().filter(|(k, _)| k == b"moof") {
        let mfhd = boxes(moof)?
            .into_iter()
            .find(|(k, _)| k == b"mfhd")
            .context("no mfhd")?
            .1;
        ensure!(mfhd.len() >= 8, "short mfhd");
        out.push(u32::from_be_bytes(mfhd[4..8].try_into()?));
    }
    ensure!(!out.is_empty(), "no moof");
    Ok(out)
}

/// Per stream, the packets' decode times as ffprobe reads `file`.
fn packets(file: &Path) -> Result<Vec<Vec<i64>>> {
    let out = Command::new("ffprobe")
        .args(["-v", "error", "-show_entries", "packet=stream_index,dts"])
        .args(["-of", "compact=p=0"])
        .arg(file)
        .output()
        .context("running ffprobe")?;
    check(&out, "ffprobe packets")?;
    let mut streams: Vec<Vec<i64>> = Vec::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let field = |name: &str| -> Result<i64> {
            let value = line
                .split('|')
                .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
                .with_context(|| format!("no {name} in ffprobe's {line}"))?;
            value
                .parse()
                .with_context(|| format!("{name} in ffprobe's {line}"))
        };
        let index = usize::try_from(field("stream_index")?)?;
        if streams.len() <= index {
            streams.resize(index + 1, Vec::new());
        }
        streams[index].push(field("dts")?);
    }
    Ok(streams)
}

/// Writes the init segment and every media segment of `playlist` (one
/// timeline: no discontinuity) into one file; checks the `mfhd` numbers
/// count up by one.
fn concatenated(gw: &Gateway, playlist: &str, file: &Path) -> Result<usize> {
    let (inits, segments) = uris(playlist);
    ensure!(inits.len() == 1, "one init segment expected: {playlist}");
    let mut bytes = fetch_verified(gw, &inits[0])?;
    let mut last = None;
    for uri in &segments {
        let body = fetch_verified(gw, uri)?;
        for seq in moof_sequences(&body)? {
            if let Some(prev) = last {
                ensure!(seq == prev + 1, "mfhd {seq} follows {prev}: {playlist}");
            }
            last = Some(seq);
        }
        bytes.extend_from_slice(&body);
    }
    std::fs::write(file, bytes)?;
    Ok(segments.len())
}

/// `EXT-X-TARGETDURATION` and the `EXTINF`s of `playlist`.
fn durations(playlist: &str) -> Result<(f64, Vec<f64>)> {
    let target = playlist
        .lines()
        .find_map(|l| l.strip_prefix("#EXT-X-TARGETDURATION:"))
        .context("no target duration")?
        .parse()?;
    let extinf = playlist
        .lines()
        .filter_map(|l| l.strip_prefix("#EXTINF:"))
        .map(|d| d.trim_end_matches(',').parse())
        .collect::<Result<_, _>>()?;
    Ok((target, extinf))
}

/// The stream `name` in `/api/v1/streams`.
fn stream(gw: &Gateway, name: &str) -> Result<Value> {
    let json = streams_json(gw)?;
    json["streams"]
        .as_array()
        .and_then(|a| a.iter().find(|s| s["name"] == name))
        .cloned()
        .with_context(|| format!("no stream {name}: {json}"))
}

/// Whether the first video frame of `init` + `segment` is a keyframe.
fn opens_with_keyframe(init: &[u8], segment: &[u8], dir: &Path) -> Result<bool> {
    let file = dir.join("one.mp4");
    std::fs::write(&file, [init, segment].concat())?;
    let out = Command::new("ffprobe")
        .args(["-v", "error", "-select_streams", "v:0"])
        .args(["-show_entries", "packet=flags", "-of", "csv=p=0"])
        .arg(&file)
        .output()?;
    check(&out, "ffprobe keyframe flags")?;
    let text = String::from_utf8_lossy(&out.stdout);
    Ok(text.lines().next().is_some_and(|f| f.starts_with('K')))
}

#[test]
fn obs_default_keyframe_interval_gives_whole_gop_segments_and_a_warning() -> Result<()> {
    let repo = Repo::new()?;
    let gw = Gateway::start(&repo, &["--stream", &format!("cam={KEY}")])?;
    // Keyframes at 0, 8.333 and 16.667 s.
    let out = publish_cmd(rtmp_addr(&gw)?, KEY, &clip_obs_gop(18)?, false).output()?;
    check(&out, "ffmpeg publishing")?;
    let s = wait_ended(&gw, "cam")?;

    let archive = get_text(&gw, "/live/cam/archive.m3u8")?;
    let (target, extinf) = durations(&archive)?;
    ensure!(extinf.len() == 3, "three GOPs, three segments: {archive}");
    ensure!(
        target == 9.0,
        "8.3 s segments need a target of 9: {archive}"
    );
    // Not just rounded: GStreamer's player warns about any EXTINF above it.
    ensure!(extinf.iter().all(|&d| d <= target), "{archive}");
    ensure!((extinf[0] - 8.333).abs() < 0.01, "{archive}");
    ensure!(
        archive.contains("#EXT-X-INDEPENDENT-SEGMENTS"),
        "every segment opens with a keyframe: {archive}"
    );
    let (inits, segments) = uris(&archive);
    let init = fetch_verified(&gw, &inits[0])?;
    let dir = tempdir()?;
    for uri in &segments {
        let body = fetch_verified(&gw, uri)?;
        ensure!(
            opens_with_keyframe(&init, &body, dir.path())?,
            "{uri} does not open with a keyframe"
        );
    }
    check_archive(&gw, "cam", 18.0, true)?;

    // The user is told, in the API and once in the log.
    let interval = s["keyframe_interval_s"]
        .as_f64()
        .context("keyframe_interval_s")?;
    ensure!((interval - 8.333).abs() < 0.01, "{s}");
    let warning = s["warnings"][0].as_str().context("a warning")?;
    ensure!(
        warning.contains("1-2 s") && warning.contains("8.3 s"),
        "{s}"
    );
    let log = std::fs::read_to_string(&gw.log)?;
    ensure!(
        log.matches("keyframe interval is 8.3 s").count() == 1,
        "{}",
        gw.log_tail()
    );
    Ok(())
}

#[test]
fn two_second_keyframes_give_a_target_duration_of_2() -> Result<()> {
    let repo = Repo::new()?;
    let gw = Gateway::start(&repo, &["--stream", &format!("cam={KEY}")])?;
    publish_clip(&gw, KEY)?;
    let s = wait_ended(&gw, "cam")?;
    let archive = get_text(&gw, "/live/cam/archive.m3u8")?;
    let (target, extinf) = durations(&archive)?;
    ensure!(target == 2.0, "{archive}");
    ensure!(extinf.iter().all(|&d| d <= target), "{archive}");
    ensure!(archive.contains("#EXT-X-INDEPENDENT-SEGMENTS"), "{archive}");
    ensure!(s["keyframe_interval_s"] == 2.0, "{s}");
    ensure!(s["warnings"] == serde_json::json!([]), "{s}");

    // mpv (through ffmpeg's HLS and MP4 readers) plays the archive without
    // a word: one moov, fragments numbered in order.
    let url = format!("{}/live/cam/archive.m3u8", gw.base);
    let out = Command::new("mpv")
        .args(["--no-config", "--vo=null", "--ao=null", "--untimed"])
        .args(["--msg-level=all=warn", "--length=10"])
        .arg(&url)
        .output()
        .context("running mpv (Debian package mpv; scripts/test installs it)")?;
    check(&out, "mpv playing the archive")?;
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    ensure!(!said.contains("MOOV"), "mpv: {said}");
    ensure!(!said.to_lowercase().contains("error"), "mpv: {said}");
    let dir = tempdir()?;
    concatenated(&gw, &archive, &dir.path().join("all.mp4"))?;
    Ok(())
}

/// Publishes 5 s of a GStreamer live pipeline through `sink` (`rtmp2sink`
/// or `rtmpsink`) and checks that what was stored decodes with decode
/// times that only go forward.
fn gstreamer_publish(sink: &str) -> Result<()> {
    let repo = Repo::new()?;
    let gw = Gateway::start(&repo, &["--stream", &format!("cam={KEY}")])?;
    let location = format!("rtmp://{}/live/{KEY}", rtmp_addr(&gw)?);
    let pipeline = format!(
        "videotestsrc is-live=true num-buffers=150 ! video/x-raw,width=320,height=240,framerate=30/1 \
         ! x264enc tune=zerolatency key-int-max=30 ! h264parse ! flvmux name=mux streamable=true \
         ! {sink} location={location} \
         audiotestsrc is-live=true num-buffers=215 ! audio/x-raw,rate=44100 ! voaacenc ! mux."
    );
    let out = Command::new("gst-launch-1.0")
        .arg("-e")
        .args(pipeline.split_whitespace())
        .output()
        .context("running gst-launch-1.0 (gstreamer1.0-tools; scripts/test installs it)")?;
    check(&out, &format!("GStreamer publishing with {sink}"))?;
    // librtmp ends with a plain disconnect, so the session stays open;
    // what was sent is in segments once the publisher is seen gone.
    let start = Instant::now();
    while stream(&gw, "cam")?["live"] != false {
        ensure!(
            start.elapsed() < Duration::from_secs(10),
            "{}",
            gw.log_tail()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let archive = get_text(&gw, "/live/cam/archive.m3u8")?;
    let (target, extinf) = durations(&archive)?;
    ensure!(extinf.len() >= 2, "{archive}");
    ensure!(extinf.iter().all(|&d| d.round() <= target), "{archive}");
    let dir = tempdir()?;
    let file = dir.path().join("all.mp4");
    concatenated(&gw, &archive, &file)?;
    let streams = packets(&file)?;
    ensure!(streams.len() == 2, "video and audio: {streams:?}");
    for (i, packets) in streams.iter().enumerate() {
        ensure!(packets.len() > 20, "stream {i}: {packets:?}");
        // Strictly: a repeated decode time is a zero-length sample.
        for pair in packets.windows(2) {
            ensure!(
                pair[1] > pair[0],
                "stream {i}: dts {} then {}",
                pair[0],
                pair[1]
            );
        }
    }
    // What ffmpeg's muxers check of decode times, on every packet as
    // stored (a decoder at the stream's nominal 30 fps would also see the
    // publisher's own surplus of frames in its first second, which the FLV
    // it sent shows as well).
    let out = Command::new("ffmpeg")
        .args(["-v", "warning", "-nostdin", "-i"])
        .arg(&file)
        .args(["-c", "copy", "-f", "null", "-"])
        .output()?;
    check(&out, "ffmpeg reading")?;
    let said = String::from_utf8_lossy(&out.stderr);
    ensure!(!said.contains("monoton"), "ffmpeg: {said}\n{archive}");
    Ok(())
}

#[test]
fn gstreamer_rtmp2sink_timestamps_give_increasing_decode_times() -> Result<()> {
    gstreamer_publish("rtmp2sink")
}

#[test]
fn gstreamer_rtmpsink_timestamps_give_increasing_decode_times() -> Result<()> {
    gstreamer_publish("rtmpsink")
}
