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

#[test]
fn chromium_plays_a_stream_site_and_only_own_sites_run_script() -> Result<()> {
    let repo = Repo::new()?;
    let gw = Gateway::start(&repo, &["--stream", &format!("cam={KEY}")])?;
    let out = publish_cmd(rtmp_addr(&gw)?, KEY, &clip(8)?, false).output()?;
    check(&out, "ffmpeg publishing")?;
    let stream = wait_ended(&gw, "cam")?;
    let name = ipns_name(&gw, "cam")?;
    let (doc, _) = wait_resolved(&gw, &name, std::time::Duration::from_secs(10))?;
    let site = ipns_site(&gw, "cam")?;
    // The node's own site runs its player; what else the store holds, the
    // archive playlist included, is sandboxed.
    for own in [format!("/ipns/{name}/"), format!("/ipfs/{site}/")] {
        let r = gw.expect(&own, &[], 200)?;
        ensure!(
            r.header("content-security-policy").is_none(),
            "{own} is sandboxed: {:?}",
            r.headers
        );
    }
    let archive = doc["archive_cid"].as_str().context("archive_cid")?;
    let r = gw.expect(&format!("/ipfs/{archive}?filename=x.html"), &[], 200)?;
    ensure!(r.header("content-security-policy") == Some("sandbox"));
    ensure!(stream["sessions"][0]["archive_cid"] == archive);

    let played = play(&format!("{}/ipns/{name}/", gw.base))?;
    assert_eq!(played.engine.as_deref(), Some("hls.js"), "{played:?}");
    Ok(())
}

/// The number of segments the archive of `stream`'s session lists.
fn archive_segments(gw: &Gateway, stream: &str) -> Result<usize> {
    let r = gw.get(&format!("/live/{stream}/archive.m3u8"), &[])?;
    Ok(if r.status == 200 {
        String::from_utf8_lossy(&r.body).matches("#EXTINF").count()
    } else {
        0
    })
}

#[test]
fn a_session_still_live_replays_from_its_start() -> Result<()> {
    let repo = Repo::new()?;
    let gw = Gateway::start(&repo, &["--stream", &format!("cam={KEY}")])?;
    let mut publisher =
        KillOnDrop::new(publish_cmd(rtmp_addr(&gw)?, KEY, &clip(60)?, true).spawn()?);
    // 24 s in: the live edge is far past the latency at which a live
    // player jumps ahead (14 s behind it).
    let start = std::time::Instant::now();
    while archive_segments(&gw, "cam")? < 12 {
        ensure!(
            start.elapsed() < std::time::Duration::from_secs(45),
            "fewer than 12 segments after 45 s"
        );
        if let Some(status) = publisher.try_wait()? {
            anyhow::bail!("ffmpeg stopped early: {status}");
        }
        std::thread::sleep(std::time::Duration::from_millis(250));
    }
    let stream = streams_json(&gw)?["streams"][0].clone();
    let session = &stream["sessions"][0];
    ensure!(
        session["ended"] == false,
        "the session is still live: {stream}"
    );
    let id = session["id"].as_str().context("session id")?;
    let watcher = watch_page(&format!("{}/watch/cam?session={id}", gw.base), 10)?;
    let states = page_states(watcher)?;
    let times: Vec<f64> = states.samples.iter().filter_map(|s| s.time).collect();
    let last = times.last().copied().unwrap_or(0.0);
    let max = times.iter().copied().fold(0.0, f64::max);
    ensure!(last > 1.0, "the replay did not play: {states:?}");
    // From 0, 10 s of watching reach at most ~10 s; a jump to the edge
    // would be past 18 s.
    ensure!(max < 11.0, "the replay jumped ahead to {max}: {states:?}");
    ensure!(states.errors.is_empty(), "{states:?}");
    Ok(())
}

#[test]
fn watch_says_offline_then_picks_the_stream_up_when_it_goes_live() -> Result<()> {
    let repo = Repo::new()?;
    let gw = Gateway::start(&repo, &["--stream", &format!("cam={KEY}")])?;
    publish_clip(&gw, KEY)?;
    let stream = wait_ended(&gw, "cam")?;
    let id = stream["sessions"][0]["id"]
        .as_str()
        .context("session id")?
        .to_owned();
    let watcher = watch_page(&format!("{}/watch/cam", gw.base), 30)?;
    std::thread::sleep(std::time::Duration::from_secs(6));
    let mut publisher =
        KillOnDrop::new(publish_cmd(rtmp_addr(&gw)?, KEY, &clip(30)?, true).spawn()?);
    let states = page_states(watcher)?;
    publisher.kill()?;

    // Before the page picks the new publish up (how soon after it starts
    // depends on Chromium's start-up and the target duration, so not a
    // fixed time).
    // The page's first moments, before its first answer, say "Connecting".
    let early: Vec<_> = states
        .samples
        .iter()
        .skip_while(|s| s.offline != Some(true))
        .take_while(|s| s.offline != Some(false))
        .collect();
    ensure!(!early.is_empty(), "{states:?}");
    let offline = early.last().unwrap();
    ensure!(
        offline.offline == Some(true) && offline.status.starts_with("Offline"),
        "an ended stream is not shown as offline: {states:?}"
    );
    ensure!(
        offline.replay.as_deref() == Some(&format!("/watch/cam?session={id}")[..]),
        "no replay of the last session: {states:?}"
    );
    ensure!(
        offline.time.unwrap_or(0.0) == 0.0,
        "an offline stream plays something: {states:?}"
    );
    // Live again: it starts by itself and plays on.
    let live: Vec<_> = states
        .samples
        .iter()
        .filter(|s| s.offline == Some(false) && s.time.unwrap_or(0.0) > 0.0)
        .collect();
    ensure!(live.len() >= 2, "the stream was not picked up: {states:?}");
    let (first, last) = (live[0], live[live.len() - 1]);
    ensure!(
        last.time.unwrap() - first.time.unwrap() >= 3.0
            && last.time.unwrap() - first.time.unwrap() >= 0.5 * (last.t - first.t)
            && last.status == "Live",
        "the live stream did not play on: {states:?}"
    );
    ensure!(states.errors.is_empty(), "{states:?}");
    Ok(())
}

#[test]
fn the_home_page_lists_sessions_newest_first_and_fits_a_phone() -> Result<()> {
    let repo = Repo::new()?;
    let gw = Gateway::start(&repo, &["--stream", &format!("cam={KEY}")])?;
    let start = std::time::Instant::now();
    let mut stream = serde_json::Value::Null;
    for n in 1..=2 {
        publish_clip(&gw, KEY)?;
        // Until the new session's first segment is stored, the last one
        // listed is the previous, ended one.
        loop {
            stream = wait_ended(&gw, "cam")?;
            if stream["sessions"].as_array().map(Vec::len) == Some(n) {
                break;
            }
            ensure!(
                start.elapsed() < std::time::Duration::from_secs(40),
                "{stream}"
            );
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    }
    let sessions = stream["sessions"].as_array().context("sessions")?;
    let cids: Vec<&str> = sessions
        .iter()
        .map(|s| s["archive_cid"].as_str().context("archive CID"))
        .collect::<Result<_>>()?;
    let shot = repo.path().join("home.png");
    // Each row's archive CID as listed, and how tall its box is against a
    // line of the table's text.
    let probe = "[...document.querySelectorAll('.stream table .cid')].map(c => ({cid: c.title, \
                 height: c.getBoundingClientRect().height, \
                 line: c.closest('td').querySelector('a').getBoundingClientRect().height}))";
    let watcher = watch_page_with(
        &format!("{}/", gw.base),
        3,
        &[
            "--viewport",
            "390x844",
            "--eval",
            probe,
            "--screenshot",
            shot.to_str().context("path")?,
        ],
    )?;
    let states = page_states(watcher)?;
    let rows = states
        .samples
        .last()
        .and_then(|s| s.value.clone())
        .context("no sample")?;
    let rows = rows.as_array().context("rows")?;
    let listed: Vec<&str> = rows.iter().filter_map(|r| r["cid"].as_str()).collect();
    ensure!(
        listed == [cids[1], cids[0]],
        "sessions not listed newest first: {listed:?} vs {cids:?}"
    );
    for r in rows {
        let (h, line) = (r["height"].as_f64(), r["line"].as_f64());
        ensure!(
            matches!((h, line), (Some(h), Some(l)) if h > 0.0 && h <= l * 1.5),
            "a CID wraps on a phone: {r}"
        );
    }
    ensure!(shot.exists(), "no screenshot");
    Ok(())
}
