//! The web player in a real browser: an HLS fMP4 VOD made by ffmpeg, added
//! with `meshcast add -r`, served by `meshcast serve` and played from
//! `/watch/{name}?src=/ipfs/<cid>/index.m3u8` in headless Chromium through
//! `tests/interop/play.mjs`, which checks that the video advances without
//! errors; and a live stream that ffmpeg publishes, played live and then,
//! once it ends, as an archive from its start. Needs ffmpeg, Node with `tests/interop/node_modules` and
//! `/usr/bin/chromium`; `scripts/test` installs them, and a missing one
//! fails these tests.

use crate::support::*;
use anyhow::{ensure, Context, Result};
use std::ffi::OsStr;

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
