//! Codecs at ingest, with real publishers. ffmpeg 9 (the `imageio-ffmpeg`
//! wheel's; Debian's 5.1 cannot) publishes HEVC, AV1 and H.264 with AAC
//! over Enhanced RTMP, announcing its FourCCs in `connect` as OBS 29.1+
//! does: every listed segment must hash to its CID, ffprobe must take each
//! one as that codec and AAC, and ffmpeg must decode the whole archive with
//! the right duration. What we cannot carry (Sorenson H.263, VP9, MP3,
//! Opus; AV1 into MPEG-TS segments) is refused with an RTMP error status
//! that the publisher prints, a log line naming the codec, and no session
//! left behind, while other publishers go on.

use crate::support::*;
use anyhow::{ensure, Context, Result};
use std::path::Path;
use std::process::{Command, Output, Stdio};

const OTHER_KEY: &str = "otherkey-0123456789";
/// Publishes with `cmd`, which must succeed without a word, and waits for
/// the session to end.
fn publish_ok(gw: &Gateway, mut cmd: Command, name: &str) -> Result<()> {
    let out = cmd.output().context("running the publisher")?;
    check(&out, "publishing")?;
    let said = String::from_utf8_lossy(&out.stderr);
    ensure!(said.trim().is_empty(), "the publisher reported: {said}");
    wait_ended(gw, name)?;
    Ok(())
}

/// The segment durations an archive lists.
fn extinfs(archive: &str) -> Vec<f64> {
    archive
        .lines()
        .filter_map(|l| l.strip_prefix("#EXTINF:"))
        .filter_map(|d| d.trim_end_matches(',').parse().ok())
        .collect()
}

/// HEVC and AV1 over Enhanced RTMP, then H.264 from the same ffmpeg, each
/// to a stream of its own on one server: verified, probed, decoded; 2 s
/// GOPs give 2 s segments.
#[test]
fn ffmpeg9_publishes_hevc_av1_and_h264_over_enhanced_rtmp() -> Result<()> {
    let repo = Repo::new()?;
    let gw = Gateway::start(
        &repo,
        &[
            "--stream",
            "hevc=hevc-key-0123456789",
            "--stream",
            "av1=av1-key-0123456789",
            "--stream",
            "h264=h264-key-0123456789",
        ],
    )?;
    let addr = rtmp_addr(&gw)?;
    for codec in ["hevc", "av1", "h264"] {
        let key = format!("{codec}-key-0123456789");
        publish_ok(&gw, publish9(addr, &key, &clip9(codec, 8)?, false), codec)
            .with_context(|| format!("{codec}\n{}", gw.log_tail()))?;
        let archive = check_archive_of(&gw, codec, 8.0, true, codec)
            .with_context(|| format!("{codec}\n{}", gw.log_tail()))?;
        let durations = extinfs(&archive);
        ensure!(
            durations.len() == 4 && durations.iter().all(|d| (d - 2.0).abs() < 0.1),
            "{codec}: 2 s GOPs should give four 2 s segments: {archive}"
        );
        decode_clean9(&format!("{}/live/{codec}/archive.m3u8", gw.base))?;
    }
    // AV1 samples leave out the temporal delimiter every RTMP frame opens
    // with: the first segment's first sample opens with the sequence header.
    let archive = get_text(&gw, "/live/av1/archive.m3u8")?;
    let (_, segments) = uris(&archive);
    let first = fetch_verified(&gw, &segments[0])?;
    let mdat = first
        .windows(4)
        .position(|w| w == b"mdat")
        .context("no mdat")?;
    ensure!(
        first[mdat + 4] >> 3 & 0x0F == 1,
        "the first AV1 sample opens with OBU type {}",
        first[mdat + 4] >> 3 & 0x0F
    );
    Ok(())
}

/// A stream with MPEG-TS segments: AV1 is refused with an error status (no
/// mapping into TS), then HEVC from the same ffmpeg is taken, and the
/// archive has the HEVC session only.
#[test]
fn mpeg_ts_takes_hevc_and_refuses_av1() -> Result<()> {
    let repo = Repo::new()?;
    let gw = ts_stream_server(&repo)?;
    let addr = rtmp_addr(&gw)?;

    // In real time, as an encoder sends: still sending when refused.
    let av1 = publish9(addr, KEY, &clip9("av1", 8)?, true);
    let why = "AV1 cannot be carried in MPEG-TS segments; use fMP4 segments or publish H.264/HEVC";
    expect_refused(&gw, av1, why)?;
    let json = streams_json(&gw)?;
    ensure!(
        json["streams"][0]["sessions"].as_array().map(Vec::len) == Some(0),
        "the refused publish left a session: {json}"
    );

    publish_ok(&gw, publish9(addr, KEY, &clip9("hevc", 8)?, false), "tv")?;
    check_archive_of(&gw, "tv", 8.0, false, "hevc")?;
    let json = streams_json(&gw)?;
    ensure!(
        json["streams"][0]["sessions"].as_array().map(Vec::len) == Some(1),
        "{json}"
    );
    Ok(())
}

/// Runs a publisher that must be refused: it fails, prints our `why`
/// (ffmpeg: `Server error: <description>`), and the server log names it.
fn expect_refused(gw: &Gateway, mut cmd: Command, why: &str) -> Result<Output> {
    let out = cmd
        .stdout(Stdio::null())
        .output()
        .context("running the publisher")?;
    let said = String::from_utf8_lossy(&out.stderr);
    ensure!(
        !out.status.success(),
        "the publisher succeeded; it said: {said}"
    );
    ensure!(
        said.contains(&format!("Server error: {why}")),
        "the publisher did not show the reason; it said: {said}"
    );
    let log = std::fs::read_to_string(&gw.log)?;
    ensure!(
        log.lines()
            .any(|l| l.contains("refusing the publish") && l.contains(why)),
        "no log line names the refusal: {}",
        gw.log_tail()
    );
    Ok(out)
}

/// Sorenson H.263 and MP3 (Debian's ffmpeg), VP9 and Opus (ffmpeg 9's
/// Enhanced RTMP) are refused with an error status naming the codec;
/// the stream shows no session and no playlist; meanwhile another
/// publisher goes on, and its archive is whole.
#[test]
fn codecs_we_cannot_carry_are_refused_while_others_go_on() -> Result<()> {
    let repo = Repo::new()?;
    let gw = Gateway::start(
        &repo,
        &[
            "--stream",
            &format!("cam={KEY}"),
            "--stream",
            &format!("other={OTHER_KEY}"),
        ],
    )?;
    let addr = rtmp_addr(&gw)?;
    // The other publisher sends in real time through all the refusals.
    let other = publish_cmd(addr, OTHER_KEY, &clip(8)?, true)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()?;
    let other = KillOnDrop::new(other);

    let debian = Path::new("ffmpeg");
    let h264 = ["-c:v", "libx264", "-preset", "ultrafast"];
    let cases: [(&Path, Vec<&str>, &str); 4] = [
        (
            debian,
            vec!["-c:v", "flv", "-c:a", "aac"],
            "video codec Sorenson H.263 (FLV codec id 2) is not supported; \
             publish H.264, HEVC or AV1",
        ),
        (
            debian,
            [&h264[..], &["-c:a", "libmp3lame"][..]].concat(),
            "audio codec MP3 (FLV sound format 2) is not supported; publish AAC",
        ),
        (
            ffmpeg9(),
            vec![
                "-c:v",
                "libvpx-vp9",
                "-deadline",
                "realtime",
                "-cpu-used",
                "8",
                "-c:a",
                "aac",
            ],
            "video codec vp09 is not supported; publish H.264, HEVC or AV1",
        ),
        (
            ffmpeg9(),
            [&h264[..], &["-c:a", "libopus"][..]].concat(),
            "audio codec Opus is not supported; publish AAC",
        ),
    ];
    for (program, codecs, why) in &cases {
        expect_refused(&gw, live_source(program, addr, KEY, codecs), why)
            .with_context(|| format!("{} {codecs:?}", program.display()))?;
    }

    let out = other.wait_with_output()?;
    ensure!(
        out.status.success() && out.stderr.is_empty(),
        "the other publisher failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    wait_ended(&gw, "other")?;
    check_archive(&gw, "other", 8.0, true)?;

    let json = streams_json(&gw)?;
    let cam = json["streams"]
        .as_array()
        .and_then(|a| a.iter().find(|s| s["name"] == "cam"))
        .context("cam is listed")?;
    ensure!(cam["live"] == false, "{json}");
    ensure!(
        cam["sessions"].as_array().map(Vec::len) == Some(0),
        "a refused publish left a session: {json}"
    );
    ensure!(cam["site_cid"].is_null(), "{json}");
    for path in ["/live/cam.m3u8", "/live/cam/archive.m3u8"] {
        let status = gw.get(path, &[])?.status;
        ensure!(status == 404, "GET {path}: {status}");
    }
    // The other stream's archive decodes from its own playlist alone.
    let secs = decode_clean(&format!("{}/live/other/archive.m3u8", gw.base))?;
    ensure!((secs - 8.0).abs() < 0.3, "other lasts {secs} s");
    Ok(())
}
