//! Mirrors through the real binary: ffmpeg publishes to an origin in real
//! time; a second `meshcast serve --follow NAME --peer ORIGIN` fetches every
//! segment by Bitswap, pins it, and serves the stream as the origin does.
//!
//! Checks: the mirror lists the stream live, Chromium plays it from the
//! mirror, every segment of the origin's archive ends up pinned on the
//! mirror, and once the origin is killed the mirror alone still serves a
//! complete, verified, decodable archive, under `/live/...` and `/ipns/<name>/`.

use crate::support::*;
use anyhow::{ensure, Context, Result};
use std::time::Duration;

const KEY: &str = "mirrorkey-0123456789";

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
    play(&format!("{}/watch/cam", mirror.base))?;
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

#[test]
fn retention_lets_old_segments_go() -> Result<()> {
    let origin_repo = Repo::new()?;
    let origin = Gateway::start(&origin_repo, &["--stream", &format!("cam={KEY}")])?;
    let name = ipns_name(&origin, "cam")?;
    let mirror_repo = Repo::new()?;
    // Keep about one segment's bytes: everything older than the live
    // window goes once the window moves on.
    let mirror = Gateway::start_config(
        &mirror_repo,
        &format!(
            "[[follow]]\nname = \"{name}\"\nretain_bytes = 1\n\n{LOOPBACK_RTMP}\n{LOOPBACK_P2P}peers = [\"{}\"]\n",
            tcp_addr(&origin)?
        ),
    )?;
    // 20 s in 2 s segments: more than the 6-segment live window.
    let out = publish_cmd(rtmp_addr(&origin)?, KEY, &clip(20)?, false).output()?;
    check(&out, "ffmpeg publishing")?;
    wait_ended(&origin, "cam")?;
    wait_ended(&mirror, "cam")?;
    let archive = get_text(&origin, "/live/cam/archive.m3u8")?;
    let live = get_text(&mirror, "/live/cam.m3u8")?;
    let (_, all) = uris(&archive);
    let (_, window) = uris(&live);
    ensure!(all.len() > window.len(), "the archive outgrew the window");
    let pins = mirror_repo.run(["pin", "ls"])?;
    let cid = |u: &String| {
        u.trim_start_matches("/ipfs/")
            .split('?')
            .next()
            .unwrap_or("")
            .to_owned()
    };
    for u in &window {
        ensure!(pins.contains(&cid(u)), "{u} of the live window is kept");
    }
    let oldest = cid(&all[0]);
    ensure!(
        !pins.contains(&oldest),
        "the oldest segment {oldest} is still pinned"
    );
    // Collected (the mirror collects at most once a minute; the operator's
    // `repo gc` does it now): the mirror no longer has it, though the origin
    // does.
    mirror_repo.run(["repo", "gc"])?;
    let r = mirror.get(
        &format!("/ipfs/{oldest}"),
        &[("cache-control", "only-if-cached")],
    )?;
    ensure!(
        r.status == 412,
        "the oldest segment is still stored: {}",
        r.status
    );
    Ok(())
}
