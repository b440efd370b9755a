//! Mirrors through the real binary: ffmpeg publishes to an origin in real
//! time; a second `meshcast serve --follow NAME --peer ORIGIN` fetches every
//! segment by Bitswap, pins it, and serves the stream as the origin does.
//!
//! Checks: the mirror lists the stream live, Chromium plays it from the
//! mirror, every segment of the origin's archive ends up pinned on the
//! mirror, and once the origin is killed the mirror alone still serves a
//! complete, verified, decodable archive, under `/live/...` and `/ipns/<name>/`.

use crate::gateway_e2e::Gateway;
use crate::live::{check_archive, clip, get_text, publish_cmd, rtmp_addr, uris, wait_ended};
use crate::naming::ipns_name;
use crate::p2p_node::tcp_addr;
use crate::support::*;
use anyhow::{ensure, Context, Result};
use std::time::{Duration, Instant};

const KEY: &str = "mirrorkey-0123456789";

/// Waits until `g` serves `/live/{stream}.m3u8` with at least `n` segments.
pub fn wait_live_segments(
    g: &Gateway,
    stream: &str,
    n: usize,
    timeout: Duration,
) -> Result<String> {
    let start = Instant::now();
    loop {
        let r = g.get(&format!("/live/{stream}.m3u8"), &[])?;
        let text = String::from_utf8_lossy(&r.body).into_owned();
        if r.status == 200 && text.matches("#EXTINF").count() >= n {
            return Ok(text);
        }
        ensure!(
            start.elapsed() < timeout,
            "{} never listed {n} segments of {stream}: {} {text}",
            g.base,
            r.status
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_mirror_follows_plays_and_outlives_its_origin() -> Result<()> {
    let origin_repo = Repo::new()?;
    let origin = Gateway::start(&origin_repo, &["--stream", &format!("cam={KEY}")])?;
    let name = ipns_name(&origin, "cam")?;
    let mirror_repo = Repo::new()?;
    let mirror = Gateway::start(
        &mirror_repo,
        &["--peer", &tcp_addr(&origin)?, "--follow", &name],
    )?;

    let mut publisher = publish_cmd(rtmp_addr(&origin)?, KEY, &clip(20)?, true).spawn()?;
    // The mirror lists the stream live, and Chromium plays it from there.
    wait_live_segments(&mirror, "cam", 4, Duration::from_secs(25))?;
    // play() requires no player error and more than 5 s played.
    crate::player::play(&format!("{}/watch/cam", mirror.base))?;
    let status = publisher.wait()?;
    ensure!(status.success(), "ffmpeg: {status}");
    wait_ended(&origin, "cam")?;
    wait_ended(&mirror, "cam")?;

    // Every segment of the origin's archive is pinned on the mirror.
    let archive = get_text(&origin, "/live/cam/archive.m3u8")?;
    ensure!(
        get_text(&mirror, "/live/cam/archive.m3u8")? == archive,
        "the mirror serves the origin's archive"
    );
    let pins = mirror_repo.run(["pin", "ls"])?;
    let (inits, segments) = uris(&archive);
    for uri in inits.iter().chain(&segments) {
        let cid = uri
            .strip_prefix("/ipfs/")
            .and_then(|u| u.split('?').next())
            .context("segment URI")?;
        ensure!(
            pins.contains(cid),
            "{cid} is not pinned on the mirror:\n{pins}"
        );
    }

    // The origin goes away: the mirror alone serves everything.
    drop(origin);
    check_archive(&mirror, "cam", 20.0, true)?;
    let doc = get_text(&mirror, &format!("/ipns/{name}/stream.json"))?;
    ensure!(doc.contains("\"cam\""), "{doc}");
    let page = get_text(&mirror, &format!("/ipns/{name}/"))?;
    ensure!(page.contains("player.js"), "{page}");
    Ok(())
}
