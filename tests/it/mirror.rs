//! Mirrors through the real binary: ffmpeg publishes to an origin in real
//! time; a second `meshcast serve --follow NAME --peer ORIGIN` fetches every
//! segment by Bitswap, pins it, and serves the stream as the origin does.
//!
//! Checks: the mirror lists the stream live, Chromium plays it from the
//! mirror, every segment of the origin's archive ends up pinned on the
//! mirror, and once the origin is killed the mirror alone still serves a
//! complete, verified, decodable archive, under `/live/...` and `/ipns/<name>/`.
//!
//! Low latency: the origin announces each part (signed with the stream's
//! key); the mirror fetches it by Bitswap and serves the same LL-HLS
//! playlist, its parts its own, its blocking reloads a moment after the
//! origin's, and Chromium plays it near the edge.

use crate::llhls::{hint, median, played_near_the_edge, segments_with_parts, PART_MS};
use crate::support::*;
use anyhow::{ensure, Context, Result};
use std::process::Stdio;
use std::time::{Duration, Instant};

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
    let mut media_bytes = 0;
    for uri in inits.iter().chain(&segments) {
        let cid = uri
            .strip_prefix("/ipfs/")
            .and_then(|u| u.split('?').next())
            .context("segment URI")?;
        ensure!(
            pins.contains(cid),
            "{cid} is not pinned on the mirror:\n{pins}"
        );
        media_bytes += mirror.expect(uri, &[], 200)?.body.len() as u64;
    }
    // What the mirror took over Bitswap is the media and the sites'
    // directories and playlists: a segment's bytes come once (as its
    // parts), and the page and scripts every site holds (hls.js alone is
    // 600 kB) are the mirror's own, the same blocks as the origin's.
    let bitswap: serde_json::Value = serde_json::from_str(&get_text(&mirror, "/api/v1/bitswap")?)?;
    let received = bitswap["bytes_received"]
        .as_u64()
        .context("bytes_received")?;
    eprintln!(
        "mirror: {received} bytes by Bitswap for {media_bytes} bytes of media ({:.3})",
        received as f64 / media_bytes as f64
    );
    ensure!(
        received <= media_bytes + media_bytes / 20 + 100_000,
        "the mirror received {received} bytes by Bitswap for {media_bytes} bytes of media"
    );

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

/// A blocking reload of `msn`.`index` on `gw`, from a thread: when it
/// returned (status, body).
fn held_reload(
    gw: &Gateway,
    msn: u64,
    index: u32,
) -> std::thread::JoinHandle<Result<(Instant, u16, String)>> {
    let url = format!("{}/live/cam.m3u8?_HLS_msn={msn}&_HLS_part={index}", gw.base);
    std::thread::spawn(move || {
        let out = std::process::Command::new("curl")
            .args(["-s", "-w", "\n%{http_code}", &url])
            .output()?;
        let at = Instant::now();
        let text = String::from_utf8(out.stdout)?;
        let (body, code) = text.rsplit_once('\n').context("curl output")?;
        Ok((at, code.parse()?, body.to_owned()))
    })
}

#[test]
fn a_mirror_stays_low_latency() -> Result<()> {
    let origin_repo = Repo::new()?;
    let origin = Gateway::start(&origin_repo, &["--stream", &format!("cam={KEY}")])?;
    let name = ipns_name(&origin, "cam")?;
    let mirror_repo = Repo::new()?;
    let mirror = Gateway::start(
        &mirror_repo,
        &["--peer", &tcp_addr(&origin)?, "--follow", &name],
    )?;
    let publisher = KillOnDrop::new(
        publish_cmd(rtmp_addr(&origin)?, KEY, &clip(40)?, true)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()?,
    );
    wait_live_segments(&mirror, "cam", 2, Duration::from_secs(30))?;
    let latency = "(() => { const h = window.meshcastPlayer && window.meshcastPlayer.hls; \
        return h && h.playingDate ? (Date.now() - h.playingDate.getTime()) / 1000 : null; })()";
    let page = watch_page_with(
        &format!("{}/watch/cam", mirror.base),
        12,
        &["--eval", latency],
    )?;

    // The mirror's playlist is low-latency, and its parts are its own.
    let text = get_text(&mirror, "/live/cam.m3u8")?;
    for tag in [
        "#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES",
        "#EXT-X-PART-INF:PART-TARGET=0.300\n",
        "#EXT-X-PART:DURATION=",
        "#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"/live/cam/parts/",
    ] {
        ensure!(text.contains(tag), "no {tag:?} on the mirror: {text}");
    }
    let parts: Vec<String> = text
        .lines()
        .filter(|l| l.starts_with("#EXT-X-PART:"))
        .filter_map(|l| Some(l.split("URI=\"").nth(1)?.split('"').next()?.to_owned()))
        .collect();
    ensure!(parts.len() >= 3, "{text}");
    for uri in &parts {
        let cached = mirror.get(uri, &[("cache-control", "only-if-cached")])?;
        ensure!(
            cached.status == 200,
            "{uri} is not held by the mirror: {}",
            cached.status
        );
        fetch_verified(&mirror, uri)?;
    }

    // Blocking reloads on both: the mirror lists each part a moment after
    // the origin does.
    let mut lags = Vec::new();
    let mut text = text;
    for _ in 0..10 {
        let (msn, index, _) = hint(&get_text(&origin, "/live/cam.m3u8")?)?;
        let on_origin = held_reload(&origin, msn, index);
        let on_mirror = held_reload(&mirror, msn, index);
        let (origin_at, origin_status, _) = on_origin.join().expect("origin reload")?;
        let (mirror_at, mirror_status, body) = on_mirror.join().expect("mirror reload")?;
        ensure!(
            (origin_status, mirror_status) == (200, 200),
            "blocking reloads: origin {origin_status}, mirror {mirror_status}"
        );
        let (next_msn, next_index, _) = hint(&body)?;
        ensure!(
            (next_msn, next_index) > (msn, index),
            "part {msn}.{index} not listed on the mirror: {body}"
        );
        lags.push(mirror_at.saturating_duration_since(origin_at).as_secs_f64());
        text = body;
    }
    eprintln!("mirror behind origin per part (s): {lags:?}");
    let typical = median(lags.clone());
    ensure!(
        typical <= 0.15,
        "the mirror listed parts {typical:.3} s (median) after the origin: {lags:?}"
    );
    // A busy machine's synced writes may hold one back now and then.
    let late = lags
        .iter()
        .filter(|l| **l > (PART_MS + 200) as f64 / 1000.0)
        .count();
    ensure!(
        late <= 2,
        "{late} parts came later than a part target + 0.2 s: {lags:?}"
    );
    // Closed segments on the mirror list their parts, as on the origin.
    ensure!(
        segments_with_parts(&text).iter().any(|(_, p)| p.len() > 1),
        "{text}"
    );

    played_near_the_edge(page, "the mirror")?;
    drop(publisher);
    Ok(())
}
