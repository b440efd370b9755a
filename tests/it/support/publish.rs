//! Publishing, as encoders do: the clips (made once per run by Debian's
//! ffmpeg or by ffmpeg 9, the only one here with Enhanced RTMP), the
//! publishers that send them to a node's RTMP address, and the checks of
//! what a publish stored: every segment a playlist lists fetched back
//! hashing to its CID, probed, and the archive decoded whole.
//!
//! ```text
//! clip(8) -> publish_cmd(rtmp_addr(&gw), KEY, clip) -> wait_ended -> check_archive
//! ```

use super::{
    check, get_text, parse_car, rtmp_addr, stdout_of, tempdir, Gateway, Repo, LOOPBACK_P2P,
    LOOPBACK_RTMP,
};
use anyhow::{ensure, Context, Result};
use cid::Cid;
use sha2::{Digest, Sha256};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, OnceLock};
use tempfile::TempDir;

/// The stream key the live tests and the shared setups use.
pub const KEY: &str = "camkey-0123456789";

/// The FourCCs OBS announces in `connect` (`fourCcList`).
const FOURCCS: &str = "av01,vp09,hvc1";

/// The ffmpeg 9 that the PyPI wheel `imageio-ffmpeg` ships (static, with
/// libx265, libsvtav1 and libaom), which `scripts/test` installs: the only
/// ffmpeg here that publishes Enhanced RTMP (HEVC and AV1 with FourCCs, as
/// OBS 29.1+ does); Debian's 5.1 cannot. Found through `MESHCAST_PYTHON`'s
/// module path; missing, it panics, so the tests that need it fail.
pub fn ffmpeg9() -> &'static Path {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        let python = std::env::var("MESHCAST_PYTHON").unwrap_or_else(|_| "python3".into());
        let script = "import importlib.util, os\n\
             spec = importlib.util.find_spec('imageio_ffmpeg')\n\
             print(os.path.join(list(spec.submodule_search_locations)[0], 'binaries', \
             'ffmpeg-linux-x86_64-v9.0.2') if spec else '')";
        let out = Command::new(&python)
            .args(["-c", script])
            .output()
            .unwrap_or_else(|e| panic!("running {python} to find imageio-ffmpeg: {e}"));
        let path = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        assert!(
            out.status.success() && path.is_file(),
            "ffmpeg 9 from the PyPI package imageio-ffmpeg is missing \
             (scripts/test installs it: pip install --no-deps imageio-ffmpeg); {python} said: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        path
    })
}

/// `name` in a directory shared by the whole run, written by `make` (to
/// the path it is given) the first time it is asked for. Tests run in
/// parallel: one makes it, the others wait for it; a half-made file is
/// never seen under `name`.
fn made_once(name: &str, make: impl FnOnce(&Path) -> Result<()>) -> Result<PathBuf> {
    static DIR: OnceLock<TempDir> = OnceLock::new();
    static MAKING: Mutex<()> = Mutex::new(());
    let dir = DIR.get_or_init(|| tempdir().expect("temp dir"));
    let path = dir.path().join(name);
    let _making = MAKING.lock().unwrap_or_else(|e| e.into_inner());
    if !path.exists() {
        let tmp = dir.path().join(format!("tmp-{name}"));
        make(&tmp)?;
        std::fs::rename(&tmp, &path)?;
    }
    Ok(path)
}

/// x264 at `preset` with a keyframe every 2 s (50 frames at 25 fps) and
/// no others, so segments cut at 2 s.
fn x264_2s_gops(preset: &str) -> Vec<&str> {
    vec![
        "-c:v",
        "libx264",
        "-preset",
        preset,
        "-g",
        "50",
        "-keyint_min",
        "50",
        "-sc_threshold",
        "0",
    ]
}

/// `ffmpeg` (a path or Debian's on PATH) encoding testsrc2 + a 440 Hz sine
/// for `seconds`, the video with `video` options and the audio as AAC,
/// into the FLV file `path`.
fn encode_clip(ffmpeg: &Path, video: &[&str], seconds: u32, path: &Path) -> Command {
    encode_clip_tone(ffmpeg, video, seconds, 440, path)
}

/// [`encode_clip`] with a tone of `hz`.
fn encode_clip_tone(ffmpeg: &Path, video: &[&str], seconds: u32, hz: u32, path: &Path) -> Command {
    let mut cmd = Command::new(ffmpeg);
    cmd.args(["-v", "error", "-nostdin", "-y", "-f", "lavfi", "-i"])
        .arg("testsrc2=size=640x360:rate=25")
        .args(["-f", "lavfi", "-i"])
        .arg(format!("sine=frequency={hz}:sample_rate=44100"))
        .args(video)
        .args(["-c:a", "aac", "-t", &seconds.to_string(), "-f", "flv"])
        .arg(path);
    cmd
}

/// A clip as the issue describes it: testsrc2 + sine, H.264 with 2 s GOPs
/// and AAC, in FLV; made once per test run.
pub fn clip(seconds: u32) -> Result<PathBuf> {
    made_once(&format!("clip-{seconds}.flv"), |path| {
        let out = encode_clip("ffmpeg".as_ref(), &x264_2s_gops("veryfast"), seconds, path)
            .output()
            .context("running ffmpeg (Debian package ffmpeg) to make the test clip")?;
        check(&out, "ffmpeg making the clip")
    })
}

/// A clip with OBS's default keyframe interval: 30 fps, one keyframe every
/// 250 frames (8.3 s), as `ffmpeg -g 250 -r 30` gives; made once per run.
pub fn clip_obs_gop(seconds: u32) -> Result<PathBuf> {
    made_once(&format!("obs-gop-{seconds}.flv"), |path| {
        let mut cmd = Command::new("ffmpeg");
        cmd.args(["-v", "error", "-nostdin", "-y", "-f", "lavfi", "-i"])
            .arg("testsrc2=size=320x240:rate=30")
            .args(["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=44100"])
            .args(["-c:v", "libx264", "-preset", "ultrafast", "-r", "30"])
            // No scene-cut keyframes, so the interval is exactly 250 frames.
            .args(["-g", "250", "-keyint_min", "250", "-sc_threshold", "0"])
            .args(["-c:a", "aac", "-t", &seconds.to_string(), "-f", "flv"])
            .arg(path);
        let out = cmd
            .output()
            .context("running ffmpeg to make the long-GOP clip")?;
        check(&out, "ffmpeg making the long-GOP clip")
    })
}

/// A 3 Mbit/s constant-bitrate H.264 + AAC clip with 2 s GOPs.
pub fn clip_3mbit(seconds: u32) -> Result<PathBuf> {
    clip_3mbit_tone(seconds, 440)
}

/// [`clip_3mbit`] with a tone of `hz`: clips of different tones have the
/// same init segment (the encoders' settings) and different segments.
pub fn clip_3mbit_tone(seconds: u32, hz: u32) -> Result<PathBuf> {
    let name = if hz == 440 {
        format!("3mbit-{seconds}.flv")
    } else {
        format!("3mbit-{seconds}-{hz}hz.flv")
    };
    made_once(&name, |path| {
        let mut video = x264_2s_gops("ultrafast");
        video.extend([
            "-b:v",
            "3M",
            "-minrate",
            "3M",
            "-maxrate",
            "3M",
            "-bufsize",
            "1M",
            "-x264-params",
            "nal-hrd=cbr:force-cfr=1",
        ]);
        let out = encode_clip_tone("ffmpeg".as_ref(), &video, seconds, hz, path).output()?;
        check(&out, "ffmpeg making the 3 Mbit/s clip")
    })
}

/// A clip made by ffmpeg 9: testsrc2 + sine, `video` with 2 s GOPs and
/// AAC, in (Enhanced) FLV; made once per test run.
pub fn clip9(video: &str, seconds: u32) -> Result<PathBuf> {
    // Settings fast enough for two shared cores.
    let codec: Vec<&str> = match video {
        "hevc" => vec![
            "-c:v",
            "libx265",
            "-preset",
            "ultrafast",
            "-x265-params",
            "keyint=50:min-keyint=50:scenecut=0:log-level=error",
        ],
        "av1" => vec![
            "-c:v",
            "libsvtav1",
            "-preset",
            "10",
            "-g",
            "50",
            "-svtav1-params",
            "keyint=50:scd=0",
        ],
        "h264" => x264_2s_gops("veryfast"),
        other => panic!("no clip recipe for {other}"),
    };
    made_once(&format!("clip-{video}-{seconds}.flv"), |path| {
        let out = encode_clip(ffmpeg9(), &codec, seconds, path)
            // SVT-AV1 prints its settings unless told otherwise.
            .env("SVT_LOG", "1")
            .output()
            .context("running ffmpeg 9 to make a clip")?;
        check(&out, &format!("ffmpeg 9 making the {video} clip"))
    })
}

/// A 12 s, 320x240 H.264 + AAC HLS VOD in 2 s fMP4 segments under `dir`.
pub fn make_vod(dir: &Path) -> Result<()> {
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

/// Debian's ffmpeg publishing `clip` as it is (`-c copy`), in real time or
/// as fast as it goes.
pub fn publish_cmd(addr: SocketAddr, key: &str, clip: &Path, realtime: bool) -> Command {
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

/// ffmpeg 9 publishing `clip` as it is (`-c copy`), in real time or as
/// fast as it goes, announcing Enhanced RTMP FourCCs in `connect`.
pub fn publish9(addr: SocketAddr, key: &str, clip: &Path, realtime: bool) -> Command {
    let mut cmd = Command::new(ffmpeg9());
    cmd.args(["-v", "error", "-nostdin"]);
    if realtime {
        cmd.arg("-re");
    }
    cmd.arg("-i")
        .arg(clip)
        .args(["-c", "copy", "-rtmp_enhanced_codecs", FOURCCS, "-f", "flv"])
        .arg(format!("rtmp://{addr}/live/{key}"));
    cmd
}

/// A real-time publisher of a test pattern and tone with `codecs`, as an
/// encoder sends live (still sending when our refusal arrives).
pub fn live_source(program: &Path, addr: SocketAddr, key: &str, codecs: &[&str]) -> Command {
    let mut cmd = Command::new(program);
    cmd.args(["-v", "error", "-nostdin", "-re", "-f", "lavfi", "-i"])
        .arg("testsrc2=size=320x240:rate=25")
        .args([
            "-re",
            "-f",
            "lavfi",
            "-i",
            "sine=frequency=440:sample_rate=48000",
        ])
        .args(["-t", "5"])
        .args(codecs)
        .args(["-f", "flv"])
        .arg(format!("rtmp://{addr}/live/{key}"));
    cmd
}

/// Publishes the 4 s clip to `g` with `key` and waits for ffmpeg to finish.
pub fn publish_clip(g: &Gateway, key: &str) -> Result<()> {
    let clip = clip(4)?;
    let out = publish_cmd(rtmp_addr(g)?, key, &clip, false).output()?;
    check(&out, "ffmpeg publishing")?;
    Ok(())
}

/// A server with one MPEG-TS stream, `tv` (key [`KEY`]), all on loopback.
pub fn ts_stream_server(repo: &Repo) -> Result<Gateway> {
    Gateway::start_config(
        repo,
        &format!(
            "[[streams]]\nname = \"tv\"\nkey = \"{KEY}\"\nformat = \"ts\"\n\n{LOOPBACK_RTMP}{LOOPBACK_P2P}"
        ),
    )
}

/// The URIs a playlist names: `EXT-X-MAP` init segments and media segments.
pub fn uris(playlist: &str) -> (Vec<String>, Vec<String>) {
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
pub fn fetch_verified(gw: &Gateway, uri: &str) -> Result<Vec<u8>> {
    let cid_str = uri
        .strip_prefix("/ipfs/")
        .and_then(|r| r.split('?').next())
        .with_context(|| format!("{uri} is not an /ipfs/ path"))?;
    let cid: Cid = cid_str.parse()?;
    let r = gw.get(uri, &[])?;
    ensure!(r.status == 200, "GET {uri}: {}", r.status);
    if cid.codec() == 0x70 {
        // A segment made of LL-HLS parts: a UnixFS file whose raw leaves
        // are the parts. Its CAR (every block checked against its CID) must
        // start at the root and hold the body's bytes as its leaves.
        let car = parse_car(&gw.get(&format!("/ipfs/{cid}?format=car"), &[])?.body)?;
        ensure!(
            car.blocks.first().map(|b| b.0) == Some(cid),
            "{uri}: CAR root"
        );
        let leaves: Vec<u8> = car
            .blocks
            .iter()
            .filter(|(c, _)| c.codec() == 0x55)
            .flat_map(|(_, b)| b.iter().copied())
            .collect();
        ensure!(leaves == r.body, "{uri} is not the leaves of its CID");
        return Ok(r.body);
    }
    ensure!(
        Sha256::digest(&r.body).as_slice() == cid.hash().digest(),
        "{uri} does not hash to its CID"
    );
    Ok(r.body)
}

/// `ffprobe` of a file must print nothing on stderr; the codecs it lists.
fn ffprobe_ok(path: &Path) -> Result<String> {
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

/// `ffmpeg -i URL -f null -` by `ffmpeg` (called `name` in errors) must
/// print nothing.
fn decode_quietly(ffmpeg: &Path, name: &str, url: &str) -> Result<()> {
    let out = Command::new(ffmpeg)
        .args(["-v", "error", "-nostdin", "-i", url, "-f", "null", "-"])
        .output()
        .with_context(|| format!("running {name}"))?;
    check(&out, &format!("{name} decoding the archive"))?;
    ensure!(
        out.stderr.is_empty(),
        "{name} reported errors decoding {url}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

/// ffmpeg 9's decoders must take the archive without a word too.
pub fn decode_clean9(url: &str) -> Result<()> {
    decode_quietly(ffmpeg9(), "ffmpeg 9", url)
}

/// Debian's ffmpeg must decode `url` without a word; returns the duration.
pub fn decode_clean(url: &str) -> Result<f64> {
    decode_quietly("ffmpeg".as_ref(), "ffmpeg", url)?;
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
pub fn check_archive(gw: &Gateway, name: &str, want_secs: f64, fmp4: bool) -> Result<String> {
    check_archive_of(gw, name, want_secs, fmp4, "h264")
}

/// [`check_archive`] for video in `video_codec` (as ffprobe names it).
pub fn check_archive_of(
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
        // A segment up to 1 MiB is one raw block: its CID is a bafkrei… raw
        // CID; an fMP4 segment of LL-HLS parts is a UnixFS file (bafybei…)
        // whose leaves are the parts (checked by fetch_verified).
        ensure!(
            uri.starts_with("/ipfs/bafkrei") || (fmp4 && uri.starts_with("/ipfs/bafybei")),
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
