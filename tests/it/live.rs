//! Live ingest end to end: real ffmpeg publishes RTMP to `meshcast serve`
//! as OBS does; every segment the playlists list must come back through the
//! gateway hashing to its CID, ffprobe must accept each one, and ffmpeg must
//! decode the whole archive with the right duration. Also: a wrong key is
//! refused, a dropped publisher that returns continues its session after a
//! discontinuity, and sessions survive a restart.

use crate::support::*;
use anyhow::{bail, ensure, Context, Result};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[test]
fn ffmpeg_publish_gives_verified_decodable_segments() -> Result<()> {
    let repo = Repo::new()?;
    let gw = Gateway::start(&repo, &["--stream", &format!("cam={KEY}")])?;
    let addr = rtmp_addr(&gw)?;
    let out = publish_cmd(addr, KEY, &clip(8)?, false).output()?;
    check(&out, "ffmpeg publishing")?;
    // The server lets the encoder finish its goodbye (deleteStream) before
    // closing, so a normal stop reports no error to its user.
    let said = String::from_utf8_lossy(&out.stderr);
    ensure!(said.trim().is_empty(), "ffmpeg reported: {said}");
    let stream = wait_ended(&gw, "cam")?;
    assert_eq!(stream["sessions"].as_array().map(Vec::len), Some(1));
    check_archive(&gw, "cam", 8.0, true)?;

    // The live playlist is served uncached and ends too.
    let r = gw.get("/live/cam.m3u8", &[])?;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("content-type"),
        Some("application/vnd.apple.mpegurl")
    );
    assert!(r.header("cache-control").unwrap_or("").contains("no-cache"));

    // The archive's CID is the playlist's, stored and served by the gateway.
    let cid = stream["sessions"][0]["archive_cid"]
        .as_str()
        .context("archive_cid")?;
    let stored = get_text(&gw, &format!("/ipfs/{cid}"))?;
    assert_eq!(stored, get_text(&gw, "/live/cam/archive.m3u8")?);

    // The stream's site: the same playlists and the player page, relative.
    let site = stream["site_cid"].as_str().context("site_cid")?;
    assert_eq!(
        get_text(&gw, &format!("/ipfs/{site}/archive.m3u8"))?,
        stored
    );
    let doc: serde_json::Value =
        serde_json::from_str(&get_text(&gw, &format!("/ipfs/{site}/stream.json"))?)?;
    assert_eq!(doc["name"], "cam");
    assert_eq!(doc["live"], false, "the session ended: {doc}");
    assert_eq!(doc["archive_cid"], cid);
    let index = get_text(&gw, &format!("/ipfs/{site}/"))?;
    assert!(index.contains("src=\"player.js\""), "{index}");

    // The key is a secret: not in the API, not in the log.
    assert!(!streams_json(&gw)?.to_string().contains(KEY));
    let log = std::fs::read_to_string(&gw.log)?;
    assert!(!log.contains(KEY), "the stream key leaked into the log");
    Ok(())
}

#[test]
fn mpeg_ts_streams_decode_too() -> Result<()> {
    let repo = Repo::new()?;
    let gw = ts_stream_server(&repo)?;
    let addr = rtmp_addr(&gw)?;
    let out = publish_cmd(addr, KEY, &clip(8)?, false).output()?;
    check(&out, "ffmpeg publishing")?;
    wait_ended(&gw, "tv")?;
    check_archive(&gw, "tv", 8.0, false)?;
    Ok(())
}

#[test]
fn wrong_key_is_refused() -> Result<()> {
    let repo = Repo::new()?;
    let gw = Gateway::start(&repo, &["--stream", &format!("cam={KEY}")])?;
    let addr = rtmp_addr(&gw)?;
    let out = publish_cmd(addr, "not-the-key", &clip(8)?, false)
        .stdout(Stdio::null())
        .output()?;
    ensure!(!out.status.success(), "a wrong key was accepted");
    let json = streams_json(&gw)?;
    let cam = &json["streams"][0];
    assert_eq!(cam["name"], "cam");
    assert_eq!(cam["sessions"].as_array().map(Vec::len), Some(0), "{json}");
    assert_eq!(gw.get("/live/cam.m3u8", &[])?.status, 404);
    Ok(())
}

#[test]
fn a_returning_publisher_continues_the_session() -> Result<()> {
    let repo = Repo::new()?;
    let gw = Gateway::start(&repo, &["--stream", &format!("cam={KEY}")])?;
    let addr = rtmp_addr(&gw)?;
    // Publish in real time and drop the connection mid-stream, as a crashed
    // encoder or a broken link would.
    let mut first = publish_cmd(addr, KEY, &clip(8)?, true)
        .stderr(Stdio::null())
        .spawn()?;
    std::thread::sleep(Duration::from_millis(5500));
    first.kill()?;
    first.wait()?;
    // Come back once the server has seen the old connection go (one
    // publisher per stream: until then a new one is refused, and an
    // encoder retries, as OBS does), and finish normally.
    let start = Instant::now();
    loop {
        let json = streams_json(&gw)?;
        let live = json["streams"]
            .as_array()
            .and_then(|a| a.iter().find(|s| s["name"] == "cam"))
            .is_some_and(|s| s["live"] == true);
        if !live {
            break;
        }
        ensure!(
            start.elapsed() < Duration::from_secs(15),
            "the dropped publisher still counts as live: {json}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = publish_cmd(addr, KEY, &clip(8)?, false).output()?;
    check(&out, "ffmpeg publishing again")?;
    // About 4-5.5 s before the drop (less on a loaded machine, where ffmpeg
    // starts late), then the whole 8 s clip.
    let archive = one_continued_session(&gw, "the reconnect", 10.0..=14.0)?;
    ensure!(archive.contains("#EXT-X-DISCONTINUITY\n"), "{archive}");
    Ok(())
}

/// Once `cam`'s publishing has ended: `what` (a second publisher) continued
/// the one session, whose segments all hash to their CIDs and whose archive
/// decodes cleanly, lasting `secs`. Returns the archive playlist.
fn one_continued_session(
    gw: &Gateway,
    what: &str,
    secs: std::ops::RangeInclusive<f64>,
) -> Result<String> {
    let stream = wait_ended(gw, "cam")?;
    assert_eq!(
        stream["sessions"].as_array().map(Vec::len),
        Some(1),
        "{what} started a new session: {stream}"
    );
    let archive = get_text(gw, "/live/cam/archive.m3u8")?;
    let (_, segments) = uris(&archive);
    for uri in &segments {
        fetch_verified(gw, uri)?;
    }
    let got = decode_clean(&format!("{}/live/cam/archive.m3u8", gw.base))?;
    ensure!(secs.contains(&got), "archive lasts {got} s");
    Ok(archive)
}

#[test]
fn a_frozen_publisher_gives_way_to_a_new_one() -> Result<()> {
    let repo = Repo::new()?;
    let gw = Gateway::start(&repo, &["--stream", &format!("cam={KEY}")])?;
    let addr = rtmp_addr(&gw)?;
    // An encoder whose link dies without a word: its connection stays open
    // (the stopped process's kernel still answers) but nothing comes.
    // Killed (stopped or not) whatever happens.
    let mut first = KillOnDrop::new(
        publish_cmd(addr, KEY, &clip(8)?, true)
            .stderr(Stdio::null())
            .spawn()?,
    );
    std::thread::sleep(Duration::from_millis(4500));
    let pid = first.id().to_string();
    let signal = |sig: &str| Command::new("kill").args([sig, &pid]).status();
    ensure!(signal("-STOP")?.success(), "kill -STOP");
    // It reconnects 2.5 s later, as OBS does after a second or two: long
    // before the old connection's idle timeout (10 s), and it is let in.
    std::thread::sleep(Duration::from_millis(2500));
    let out = publish_cmd(addr, KEY, &clip(8)?, false).output()?;
    check(&out, "ffmpeg publishing while the old publisher is frozen")?;
    let log = std::fs::read_to_string(&gw.log)?;
    ensure!(log.contains("the new one takes over"), "{log}");
    // The frozen one was let go: woken, it finds its connection closed.
    ensure!(signal("-CONT")?.success(), "kill -CONT");
    let status = first.wait()?;
    ensure!(
        !status.success(),
        "the replaced publisher went on: {status}"
    );
    // About 3.5-4.5 s before the freeze, then the whole 8 s clip.
    let archive = one_continued_session(&gw, "the takeover", 10.0..=13.5)?;
    ensure!(
        archive.matches("#EXT-X-DISCONTINUITY\n").count() == 1,
        "{archive}"
    );
    Ok(())
}

#[test]
fn sessions_survive_a_restart() -> Result<()> {
    let repo = Repo::new()?;
    let cid = {
        let gw = Gateway::start(&repo, &["--stream", &format!("cam={KEY}")])?;
        let addr = rtmp_addr(&gw)?;
        let out = publish_cmd(addr, KEY, &clip(8)?, false).output()?;
        check(&out, "ffmpeg publishing")?;
        let stream = wait_ended(&gw, "cam")?;
        stream["sessions"][0]["archive_cid"]
            .as_str()
            .context("archive_cid")?
            .to_owned()
    };
    let gw = Gateway::start(&repo, &["--stream", &format!("cam={KEY}")])?;
    let json = streams_json(&gw)?;
    let s = &json["streams"][0]["sessions"][0];
    assert_eq!(s["archive_cid"], cid.as_str(), "{json}");
    assert_eq!(s["ended"], true);
    // The archive plays from its CID alone, as on any path gateway.
    let secs = decode_clean(&format!("{}/ipfs/{cid}?filename=archive.m3u8", gw.base))?;
    ensure!((secs - 8.0).abs() < 0.3, "archive lasts {secs} s");
    if get_text(&gw, "/live/cam/archive.m3u8")? != get_text(&gw, &format!("/ipfs/{cid}"))? {
        bail!("the restored archive differs from the stored one");
    }
    Ok(())
}

#[test]
fn with_no_stream_configured_serve_creates_live_with_a_kept_key() -> Result<()> {
    let repo = Repo::new()?;
    let key = {
        let gw = Gateway::start(&repo, &[])?;
        let key = std::fs::read_to_string(repo.path().join("stream-key"))?
            .trim()
            .to_owned();
        ensure!(key.len() >= 16, "weak key {key:?}");
        // Where to publish is shown at start (printed just after the
        // listeners are up, so wait a little for them): the key's file,
        // never the secret itself.
        let file = repo.path().join("stream-key");
        let file = file.display().to_string();
        gw.wait_log_line(
            |l| l.contains("publish:") && l.contains(&file),
            Duration::from_secs(10),
        )
        .context("no publish settings printed")?;
        let log = std::fs::read_to_string(&gw.log)?;
        ensure!(!log.contains(&key), "the stream key was printed:\n{log}");
        let addr = rtmp_addr(&gw)?;
        let out = publish_cmd(addr, &key, &clip(8)?, false).output()?;
        check(&out, "ffmpeg publishing with the created key")?;
        wait_ended(&gw, "live")?;
        key
    };
    // The key is kept: a restart uses the same one.
    let _gw = Gateway::start(&repo, &[])?;
    let again = std::fs::read_to_string(repo.path().join("stream-key"))?;
    assert_eq!(again.trim(), key);
    Ok(())
}

#[test]
fn a_session_whose_publisher_never_returns_ends_with_a_log_line() -> Result<()> {
    let repo = Repo::new()?;
    let gw = Gateway::start(&repo, &["--stream", &format!("cam={KEY}")])?;
    // An encoder that vanishes without unpublishing (as librtmp's rtmpsink
    // ends, or a crash): the session waits out the reconnect grace.
    let mut publisher = publish_cmd(rtmp_addr(&gw)?, KEY, &clip(8)?, true)
        .stderr(Stdio::null())
        .spawn()?;
    wait_live_segments(&gw, "cam", 1, Duration::from_secs(20))?;
    publisher.kill()?;
    publisher.wait()?;
    let gone = gw.wait_log_line(|l| l.contains("publisher gone"), Duration::from_secs(15))?;
    let ended = gw.wait_log_line(
        |l| l.contains("publisher did not return within 30s; session ended"),
        Duration::from_secs(45),
    )?;
    ensure!(ended.contains("stream=cam"), "{gone}\n{ended}");
    let stream = wait_ended(&gw, "cam")?;
    ensure!(stream["sessions"][0]["ended"] == true, "{stream}");
    Ok(())
}

#[test]
fn the_created_stream_key_is_readable_by_its_owner_only() -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let repo = Repo::new()?;
    let mut gw = Gateway::start(&repo, &[])?;
    gw.stop()?;
    let path = repo.path().join("stream-key");
    let mode = std::fs::metadata(&path)?.permissions().mode() & 0o777;
    ensure!(mode == 0o600, "{} has mode {mode:o}", path.display());
    // One kept by an older version readable by all is restricted at start.
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644))?;
    let mut gw = Gateway::start(&repo, &[])?;
    gw.stop()?;
    let mode = std::fs::metadata(&path)?.permissions().mode() & 0o777;
    ensure!(mode == 0o600, "{} kept mode {mode:o}", path.display());
    Ok(())
}

#[test]
fn listen_flags_take_host_names() -> Result<()> {
    use std::net::ToSocketAddrs;
    let repo = Repo::new()?;
    // Where `localhost` leads here (::1 or 127.0.0.1, as the resolver
    // orders them): the node listens on the first.
    let ip = ("localhost", 0)
        .to_socket_addrs()?
        .next()
        .context("localhost resolves to nothing")?
        .ip();
    let gw = Gateway::start_at(ip, &repo, &[], |addr| {
        Ok(vec![
            "--http".into(),
            format!("localhost:{}", addr.port()).into(),
            "--rtmp".into(),
            "localhost:0".into(),
        ])
    })
    .context("serve --http localhost:PORT")?;
    let r = gw.get("/api/v1/streams", &[])?;
    ensure!(r.status == 200, "{}", r.status);
    Ok(())
}
