//! Live ingest end to end: real ffmpeg publishes RTMP to `meshcast serve`
//! as OBS does; every segment the playlists list must come back through the
//! gateway hashing to its CID, ffprobe must accept each one, and ffmpeg must
//! decode the whole archive with the right duration. Also: a wrong key is
//! refused, a dropped publisher that returns continues its session after a
//! discontinuity, and sessions survive a restart.

use crate::gateway_e2e::{log_tail, Gateway};
use crate::support::*;
use anyhow::{bail, ensure, Context, Result};
use cid::Cid;
use sha2::{Digest, Sha256};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

pub(crate) const KEY: &str = "camkey-0123456789";

/// A clip as the issue describes it: testsrc2 + sine, H.264 with 2 s GOPs
/// and AAC, in FLV; made once per test run.
pub(crate) fn clip(seconds: u32) -> Result<PathBuf> {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    static MAKING: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let dir = DIR.get_or_init(|| tempdir().expect("temp dir"));
    let path = dir.path().join(format!("clip-{seconds}.flv"));
    // Tests run in parallel: one makes the clip, the others wait for it.
    let _making = MAKING.lock().unwrap_or_else(|e| e.into_inner());
    if !path.exists() {
        let tmp = dir.path().join(format!("clip-{seconds}.tmp.flv"));
        let out = Command::new("ffmpeg")
            .args(["-v", "error", "-y", "-f", "lavfi", "-i"])
            .arg("testsrc2=size=640x360:rate=25")
            .args(["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=44100"])
            .args(["-c:v", "libx264", "-preset", "veryfast", "-g", "50"])
            .args(["-keyint_min", "50", "-sc_threshold", "0"])
            .args(["-c:a", "aac", "-t", &seconds.to_string(), "-f", "flv"])
            .arg(&tmp)
            .output()
            .context("running ffmpeg (Debian package ffmpeg) to make the test clip")?;
        check(&out, "ffmpeg making the clip")?;
        std::fs::rename(&tmp, &path)?;
    }
    Ok(path)
}

/// A server with one MPEG-TS stream, `tv` (key [`KEY`]), all on loopback;
/// the directory holds its config file.
pub(crate) fn ts_stream_server(repo: &Repo) -> Result<(Gateway, tempfile::TempDir)> {
    let work = tempdir()?;
    let config = work.path().join("meshcast.toml");
    std::fs::write(
        &config,
        format!(
            "[[streams]]\nname = \"tv\"\nkey = \"{KEY}\"\nformat = \"ts\"\n\n\
             [rtmp]\nlisten = \"127.0.0.1:0\"\n{}",
            crate::gateway_e2e::LOOPBACK_P2P
        ),
    )?;
    let gw = Gateway::start(repo, &["--config", config.to_str().context("utf-8 path")?])?;
    Ok((gw, work))
}

/// The RTMP address the server logged.
pub(crate) fn rtmp_addr(gw: &Gateway) -> Result<SocketAddr> {
    let start = Instant::now();
    loop {
        let text = std::fs::read_to_string(&gw.log).unwrap_or_default();
        // Whole lines only: a half-written line may hold a truncated port.
        let text = &text[..text.rfind('\n').map_or(0, |i| i + 1)];
        if let Some(line) = text.lines().find(|l| l.contains("RTMP ingest listening")) {
            if let Some(i) = line.find("127.0.0.1:") {
                let digits: String = line[i + 10..]
                    .chars()
                    .take_while(char::is_ascii_digit)
                    .collect();
                return Ok(SocketAddr::from(([127, 0, 0, 1], digits.parse()?)));
            }
        }
        ensure!(
            start.elapsed() < Duration::from_secs(10),
            "no RTMP address in the log\n{}",
            log_tail(&gw.log)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

pub(crate) fn publish_cmd(addr: SocketAddr, key: &str, clip: &Path, realtime: bool) -> Command {
    let mut cmd = Command::new("ffmpeg");
    cmd.args(["-v", "error", "-nostdin"]);
    if realtime {
        cmd.arg("-re");
    }
    cmd.arg("-i")
        .arg(clip)
        .args(["-c", "copy", "-f", "flv"])
        .arg(format!("rtmp://{addr}/live/{key}"));
    cmd
}

pub(crate) fn get_text(gw: &Gateway, path: &str) -> Result<String> {
    let r = gw.get(path, &[])?;
    ensure!(r.status == 200, "GET {path}: {}", r.status);
    Ok(String::from_utf8(r.body)?)
}

pub(crate) fn streams_json(gw: &Gateway) -> Result<serde_json::Value> {
    Ok(serde_json::from_str(&get_text(gw, "/api/v1/streams")?)?)
}

/// Waits until the stream's last session is ended.
pub(crate) fn wait_ended(gw: &Gateway, name: &str) -> Result<serde_json::Value> {
    let start = Instant::now();
    loop {
        let json = streams_json(gw)?;
        let stream = json["streams"]
            .as_array()
            .and_then(|a| a.iter().find(|s| s["name"] == name))
            .cloned();
        if let Some(s) = stream {
            if s["sessions"]
                .as_array()
                .and_then(|a| a.last())
                .is_some_and(|l| l["ended"] == true)
            {
                return Ok(s);
            }
        }
        ensure!(
            start.elapsed() < Duration::from_secs(20),
            "session of {name} never ended: {json}\n{}",
            log_tail(&gw.log)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The URIs a playlist names: `EXT-X-MAP` init segments and media segments.
pub(crate) fn uris(playlist: &str) -> (Vec<String>, Vec<String>) {
    let mut inits = Vec::new();
    let mut segments = Vec::new();
    for line in playlist.lines() {
        if let Some(rest) = line.strip_prefix("#EXT-X-MAP:URI=\"") {
            inits.push(rest.trim_end_matches('"').to_owned());
        } else if !line.starts_with('#') && !line.is_empty() {
            segments.push(line.to_owned());
        }
    }
    (inits, segments)
}

/// Fetches `uri` (`/ipfs/<cid>?filename=...`) and checks it hashes to its CID.
pub(crate) fn fetch_verified(gw: &Gateway, uri: &str) -> Result<Vec<u8>> {
    let cid_str = uri
        .strip_prefix("/ipfs/")
        .and_then(|r| r.split('?').next())
        .with_context(|| format!("{uri} is not an /ipfs/ path"))?;
    let cid: Cid = cid_str.parse()?;
    let r = gw.get(uri, &[])?;
    ensure!(r.status == 200, "GET {uri}: {}", r.status);
    ensure!(
        Sha256::digest(&r.body).as_slice() == cid.hash().digest(),
        "{uri} does not hash to its CID"
    );
    Ok(r.body)
}

pub(crate) fn ffprobe_ok(path: &Path) -> Result<String> {
    let out = Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-show_entries",
            "stream=codec_name",
            "-of",
            "csv=p=0",
        ])
        .arg(path)
        .output()
        .context("running ffprobe")?;
    check(&out, "ffprobe")?;
    ensure!(
        out.stderr.is_empty(),
        "ffprobe complained: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// `ffmpeg -i URL -f null -` must print nothing; returns the duration.
pub(crate) fn decode_clean(url: &str) -> Result<f64> {
    let out = Command::new("ffmpeg")
        .args(["-v", "error", "-nostdin", "-i", url, "-f", "null", "-"])
        .output()
        .context("running ffmpeg")?;
    check(&out, "ffmpeg decoding the archive")?;
    ensure!(
        out.stderr.is_empty(),
        "ffmpeg reported errors decoding {url}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-show_entries",
            "format=duration",
            "-of",
            "csv=p=0",
            url,
        ])
        .output()?;
    check(&out, "ffprobe duration")?;
    Ok(String::from_utf8_lossy(&out.stdout).trim().parse()?)
}

/// Checks every segment of `name`'s archive (H.264 and AAC) and decodes
/// it; returns the archive text.
pub(crate) fn check_archive(
    gw: &Gateway,
    name: &str,
    want_secs: f64,
    fmp4: bool,
) -> Result<String> {
    check_archive_of(gw, name, want_secs, fmp4, "h264")
}

/// [`check_archive`] for video in `video_codec` (as ffprobe names it).
pub(crate) fn check_archive_of(
    gw: &Gateway,
    name: &str,
    want_secs: f64,
    fmp4: bool,
    video_codec: &str,
) -> Result<String> {
    let archive = get_text(gw, &format!("/live/{name}/archive.m3u8"))?;
    ensure!(archive.contains("#EXT-X-PLAYLIST-TYPE:EVENT"), "{archive}");
    ensure!(archive.contains("#EXT-X-ENDLIST"), "{archive}");
    let target: f64 = archive
        .lines()
        .find_map(|l| l.strip_prefix("#EXT-X-TARGETDURATION:"))
        .context("no target duration")?
        .parse()?;
    for l in archive.lines() {
        if let Some(d) = l.strip_prefix("#EXTINF:") {
            let d: f64 = d.trim_end_matches(',').parse()?;
            ensure!(
                d.round() <= target,
                "EXTINF {d} exceeds the target {target}"
            );
        }
    }
    let (inits, segments) = uris(&archive);
    ensure!(segments.len() >= 2, "too few segments: {archive}");
    let has_map = !inits.is_empty();
    ensure!(fmp4 == has_map, "EXT-X-MAP presence wrong: {archive}");
    let dir = tempdir()?;
    let init = match inits.first() {
        Some(u) => fetch_verified(gw, u)?,
        None => Vec::new(),
    };
    for (i, uri) in segments.iter().enumerate() {
        let body = fetch_verified(gw, uri)?;
        // A segment up to 1 MiB is one raw block: its CID is a bafkrei… raw CID.
        ensure!(
            uri.starts_with("/ipfs/bafkrei"),
            "{uri} is not a single raw block"
        );
        let file = dir
            .path()
            .join(format!("{i}.{}", if fmp4 { "mp4" } else { "ts" }));
        let mut bytes = init.clone();
        bytes.extend_from_slice(&body);
        std::fs::write(&file, bytes)?;
        let streams = ffprobe_ok(&file)?;
        // A transport stream lists its streams under its program too.
        let mut codecs: Vec<&str> = streams.lines().filter(|l| !l.is_empty()).collect();
        codecs.sort_unstable();
        codecs.dedup();
        let mut want = [video_codec, "aac"];
        want.sort_unstable();
        ensure!(codecs == want, "{uri}: {streams}");
    }
    let secs = decode_clean(&format!("{}/live/{name}/archive.m3u8", gw.base))?;
    ensure!(
        (secs - want_secs).abs() < 0.3,
        "archive lasts {secs} s, want {want_secs} s"
    );
    Ok(archive)
}

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
    let (gw, _config) = ts_stream_server(&repo)?;
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
    let mut first = KillOnDrop(
        publish_cmd(addr, KEY, &clip(8)?, true)
            .stderr(Stdio::null())
            .spawn()?,
    );
    std::thread::sleep(Duration::from_millis(4500));
    let pid = first.0.id().to_string();
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
    let status = first.0.wait()?;
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
        // The OBS settings are shown once at start (printed just after the
        // listeners are up, so wait a little for them).
        let start = Instant::now();
        loop {
            let log = std::fs::read_to_string(&gw.log)?;
            if log.contains(&format!("OBS Stream Key: {key}")) {
                break;
            }
            ensure!(
                start.elapsed() < Duration::from_secs(10),
                "no OBS settings printed:\n{log}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
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
