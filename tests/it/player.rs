//! The web player in a real browser: an HLS fMP4 VOD made by ffmpeg, added
//! with `meshcast add -r`, served by `meshcast serve` and played from
//! `/watch/{name}?src=/ipfs/<cid>/index.m3u8` in headless Chromium through
//! `tests/interop/play.mjs`, which checks that the video advances without
//! errors; and a live stream that ffmpeg publishes, played live and then,
//! once it ends, as an archive from its start. Needs ffmpeg, Node with `tests/interop/node_modules` and
//! `/usr/bin/chromium`; `scripts/test` installs them, and a missing one
//! fails these tests.

use crate::gateway_e2e::Gateway;
use crate::support::*;
use anyhow::{ensure, Context, Result};
use std::ffi::OsStr;
use std::path::Path;
use std::process::Command;

/// What `play.mjs` prints.
#[derive(Debug, serde::Deserialize)]
pub(crate) struct Played {
    ok: bool,
    /// `currentTime` once the video had data to show.
    start: Option<f64>,
    /// Seconds of media played past `start`.
    advanced: f64,
    errors: Vec<String>,
    /// `hls.js` or `native`.
    engine: Option<String>,
}

/// A 12 s, 320x240 H.264 + AAC HLS VOD in 2 s fMP4 segments under `dir`.
fn make_vod(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir)?;
    let mut c = Command::new("ffmpeg");
    c.args(["-hide_banner", "-loglevel", "error", "-nostdin"])
        .args(["-f", "lavfi", "-i", "testsrc2=size=320x240:rate=25"])
        .args(["-f", "lavfi", "-i", "sine"])
        .args(["-c:v", "libx264", "-g", "50", "-c:a", "aac", "-t", "12"])
        .args(["-f", "hls", "-hls_time", "2", "-hls_segment_type", "fmp4"])
        .args(["-hls_playlist_type", "vod"])
        .arg(dir.join("index.m3u8"));
    stdout_of(c).context("ffmpeg (install it with scripts/test)")?;
    Ok(())
}

/// `node play.mjs URL --min-advance 5`, requiring success.
pub(crate) fn play(url: &str) -> Result<Played> {
    let out = node()
        .arg(interop_dir().join("play.mjs"))
        .arg(url)
        .args(["--min-advance", "5", "--timeout", "40"])
        .output()
        .context("run node tests/interop/play.mjs (install with scripts/test)")?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let report = || {
        format!(
            "play.mjs {url} exited with {}\nstdout: {stdout}\nstderr: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        )
    };
    let played: Played = serde_json::from_str(stdout.trim()).with_context(report)?;
    ensure!(
        out.status.success() && played.ok && played.errors.is_empty(),
        "{}",
        report()
    );
    ensure!(played.advanced >= 5.0, "{}", report());
    Ok(played)
}

#[test]
fn chromium_plays_an_archive_from_ipfs() -> Result<()> {
    let tmp = tempdir()?;
    let vod = tmp.path().join("vod");
    make_vod(&vod)?;
    let repo = Repo::new()?;
    let cid = repo.add([OsStr::new("-r"), vod.as_os_str()])?;
    let gw = Gateway::start(&repo, &[])?;
    let url = format!("{}/watch/test?src=/ipfs/{cid}/index.m3u8", gw.base);

    let played = play(&url)?;
    // Chromium has Media Source Extensions: the embedded hls.js plays.
    assert_eq!(played.engine.as_deref(), Some("hls.js"), "{played:?}");
    let start = played.start.context("no start position")?;
    assert!(start < 2.0, "an archive plays from the start: {played:?}");

    // A shared moment starts where it says.
    let played = play(&format!("{url}&from=6"))?;
    let start = played.start.context("no start position")?;
    assert!(start >= 6.0, "from=6 started at {start}: {played:?}");
    Ok(())
}

#[test]
fn chromium_plays_a_live_stream_then_its_archive() -> Result<()> {
    use crate::live::{clip, get_text, publish_cmd, rtmp_addr, wait_ended, KEY};
    let repo = Repo::new()?;
    let gw = Gateway::start(&repo, &["--stream", &format!("cam={KEY}")])?;
    let addr = rtmp_addr(&gw)?;
    // Real time, as OBS sends it, long enough to watch 5 s live.
    let mut publisher = publish_cmd(addr, KEY, &clip(30)?, true).spawn()?;
    let start = std::time::Instant::now();
    loop {
        let live = gw.get("/live/cam.m3u8", &[])?;
        let segments = String::from_utf8_lossy(&live.body)
            .matches("#EXTINF")
            .count();
        // Join once the session is ~10 s old, so the live edge is well past 0.
        if live.status == 200 && segments >= 5 {
            break;
        }
        ensure!(
            start.elapsed() < std::time::Duration::from_secs(25),
            "fewer than 5 live segments after 25 s"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    let live = play(&format!("{}/watch/cam", gw.base))?;
    // Near the live edge, not from the start of the session.
    ensure!(
        live.start.unwrap_or(0.0) >= 4.0,
        "live playback started at the beginning: {live:?}"
    );
    let status = publisher.wait()?;
    ensure!(status.success(), "ffmpeg publishing failed: {status}");
    let stream = wait_ended(&gw, "cam")?;
    let id = stream["sessions"][0]["id"].as_str().context("session id")?;
    ensure!(get_text(&gw, "/live/cam/archive.m3u8")?.contains("#EXT-X-ENDLIST"));
    let archive = play(&format!("{}/watch/cam?session={id}", gw.base))?;
    ensure!(
        archive.start.unwrap_or(99.0) < 1.0,
        "the archive did not play from its start: {archive:?}"
    );
    Ok(())
}
