//! Low-latency HLS against real peers: ffmpeg publishes in real time;
//! the LL-HLS playlist lists parts that hash to their CIDs, blocking
//! reloads return as the part completes, preload hints give the part's
//! bytes, the 400/503 rules and delta playlists hold; ffmpeg (no low
//! latency) and hls.js without low-latency mode play the same playlist,
//! and Chromium's hls.js plays `/watch/NAME` in low-latency mode near the
//! edge; a closed segment's CAR
//! is its parts as leaves, and kubo fetches the segment over Bitswap with
//! exactly the parts' bytes.

use crate::support::*;
use anyhow::{ensure, Context, Result};
use cid::Cid;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The default part target.
pub(crate) const PART_MS: u64 = 300;

/// The preload hint's (msn, index) and URI.
pub(crate) fn hint(text: &str) -> Result<(u64, u32, String)> {
    let uri = text
        .lines()
        .find_map(|l| l.strip_prefix("#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\""))
        .map(|u| u.trim_end_matches('"').to_owned())
        .with_context(|| format!("no preload hint in {text}"))?;
    let part = uri.rsplit('/').next().unwrap_or_default();
    let (msn, index) = part
        .strip_suffix(".m4s")
        .and_then(|p| p.split_once('.'))
        .with_context(|| format!("hint {uri}"))?;
    Ok((msn.parse()?, index.parse()?, uri))
}

/// Closed segments with their listed parts: (segment URI, part URIs).
pub(crate) fn segments_with_parts(text: &str) -> Vec<(String, Vec<String>)> {
    let mut out = Vec::new();
    let mut parts = Vec::new();
    let mut lines = text.lines();
    while let Some(line) = lines.next() {
        if let Some(rest) = line.strip_prefix("#EXT-X-PART:") {
            let uri = rest
                .split("URI=\"")
                .nth(1)
                .and_then(|u| u.split('"').next());
            parts.extend(uri.map(str::to_owned));
        } else if line.starts_with("#EXTINF") {
            let uri = lines.next().unwrap_or_default().to_owned();
            out.push((uri, std::mem::take(&mut parts)));
        }
    }
    out
}

fn cid_of(uri: &str) -> Result<Cid> {
    let s = uri
        .strip_prefix("/ipfs/")
        .and_then(|r| r.split('?').next())
        .with_context(|| format!("{uri} is not /ipfs/"))?;
    Ok(s.parse()?)
}

/// What the page of `page_states` saw: no player error, and a median
/// glass-to-glass latency (after its first 5 s) of at most 2.5 s; the
/// median, printed with the samples.
pub(crate) fn played_near_the_edge(page: KillOnDrop, on: &str) -> Result<f64> {
    let states = page_states(page)?;
    ensure!(
        states.errors.is_empty(),
        "player errors on {on}: {:?}",
        states.errors
    );
    let lat: Vec<f64> = states
        .samples
        .iter()
        .filter(|s| s.t >= 5.0)
        .filter_map(|s| s.value.as_ref()?.as_f64())
        .collect();
    ensure!(
        !lat.is_empty(),
        "hls.js never played on {on}: {:?}",
        states.samples
    );
    let lat_median = median(lat.clone());
    eprintln!(
        "hls.js low-latency on {on}, glass-to-glass latency (s): median {lat_median:.2}, {lat:?}"
    );
    ensure!(
        lat_median <= 2.5,
        "hls.js played {lat_median:.2} s behind on {on}: {lat:?}"
    );
    Ok(lat_median)
}

pub(crate) fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

#[test]
fn ll_hls_parts_blocking_reload_and_players() -> Result<()> {
    let repo = Repo::new()?;
    let gw = Gateway::start(&repo, &["--stream", &format!("cam={KEY}")])?;
    let clip = clip(30)?;
    let publisher = KillOnDrop::new(
        publish_cmd(rtmp_addr(&gw)?, KEY, &clip, true)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()?,
    );
    let text = wait_live_segments(&gw, "cam", 1, Duration::from_secs(20))?;
    for tag in [
        "#EXT-X-VERSION:9\n",
        "#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,CAN-SKIP-UNTIL=",
        ",PART-HOLD-BACK=0.900\n",
        "#EXT-X-PART-INF:PART-TARGET=0.300\n",
        "#EXT-X-PART:DURATION=",
        ",INDEPENDENT=YES",
    ] {
        ensure!(text.contains(tag), "no {tag:?} in {text}");
    }
    // Chromium in low-latency mode, while the stream goes on.
    let latency = "(() => { const h = window.meshcastPlayer && window.meshcastPlayer.hls; \
        return h && h.playingDate ? (Date.now() - h.playingDate.getTime()) / 1000 : null; })()";
    let page = watch_page_with(&format!("{}/watch/cam", gw.base), 10, &["--eval", latency])?;
    // And hls.js without low-latency mode plays the same playlist: the
    // player's page given it as `src` plays it as it plays archives.
    let plain = format!("{}/watch/cam?src=/live/cam.m3u8", gw.base);
    let plain = std::thread::spawn(move || play(&plain));

    // The 400 rules.
    gw.expect("/live/cam.m3u8?_HLS_part=1", &[], 400)?;
    let (msn, _, _) = hint(&text)?;
    gw.expect(&format!("/live/cam.m3u8?_HLS_msn={}", msn + 2), &[], 400)?;

    // Blocking reloads: each asks for the part the last playlist hints at
    // and returns once it is listed, a part target after the previous.
    let mut text = text;
    let mut waits = Vec::new();
    let (mut served, mut never) = (0, 0);
    for _ in 0..8 {
        let (msn, index, uri) = hint(&text)?;
        let started = Instant::now();
        let r = gw.get(
            &format!("/live/cam.m3u8?_HLS_msn={msn}&_HLS_part={index}"),
            &[],
        )?;
        waits.push(started.elapsed().as_secs_f64());
        ensure!(r.status == 200, "blocking reload: {}", r.status);
        text = String::from_utf8(r.body)?;
        let (next_msn, next_index, _) = hint(&text)?;
        ensure!(
            (next_msn, next_index) > (msn, index),
            "part {msn}.{index} not listed: {text}"
        );
        // The hint of that part gives its bytes, those of its /ipfs/ URL;
        // unless its segment closed before it (the keyframe came first), so
        // the part never was: then it is 404, as a hint that comes to
        // nothing is.
        let hinted = gw.get(&uri, &[])?;
        if hinted.status == 404 && next_msn > msn {
            never += 1;
            continue;
        }
        ensure!(hinted.status == 200, "GET {uri}: {}", hinted.status);
        served += 1;
        // Still in the open segment, the part is the last one listed.
        if (next_msn, next_index) == (msn, index + 1) {
            let listed = text
                .lines()
                .rev()
                .filter(|l| l.starts_with("#EXT-X-PART:"))
                .find_map(|l| l.split("URI=\"").nth(1)?.split('"').next())
                .context("no part listed")?;
            ensure!(
                fetch_verified(&gw, listed)? == hinted.body,
                "hint and part differ"
            );
        }
    }
    // A segment ends without its hinted part at most once in a segment's
    // worth of parts.
    ensure!(
        served >= 6 && never <= 2,
        "hinted parts served {served}, never made {never}"
    );
    let typical = median(waits[1..].to_vec());
    eprintln!("blocking reload waits: {waits:?}");
    ensure!(
        typical <= (PART_MS + 100) as f64 / 1000.0,
        "blocking reloads took {typical:.3} s (median) for {PART_MS} ms parts: {waits:?}"
    );

    // A delta playlist.
    let delta = get_text(&gw, "/live/cam.m3u8?_HLS_skip=YES")?;
    ensure!(delta.contains("#EXT-X-SKIP:SKIPPED-SEGMENTS="), "{delta}");

    // ffmpeg, which knows nothing of parts, plays the same playlist.
    let out = Command::new("ffmpeg")
        .args(["-v", "error", "-nostdin", "-i"])
        .arg(format!("{}/live/cam.m3u8", gw.base))
        .args(["-t", "3", "-f", "null", "-"])
        .output()?;
    check(&out, "ffmpeg playing the LL-HLS playlist")?;
    ensure!(
        out.stderr.is_empty(),
        "ffmpeg: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    played_near_the_edge(page, "the origin")?;

    let played = plain.join().expect("play thread")?;
    ensure!(
        played.engine.as_deref() == Some("hls.js"),
        "played by {:?}",
        played.engine
    );
    let out = publisher.wait_with_output()?;
    check(&out, "ffmpeg publishing")?;
    wait_ended(&gw, "cam")?;

    // Closed segments are their parts: bytes, and the DAG's leaves.
    let text = get_text(&gw, "/live/cam.m3u8")?;
    ensure!(text.ends_with("#EXT-X-ENDLIST\n"), "{text}");
    let closed: Vec<(String, Vec<String>)> = segments_with_parts(&text)
        .into_iter()
        .filter(|(_, parts)| parts.len() > 1)
        .collect();
    ensure!(!closed.is_empty(), "no segment lists its parts: {text}");
    let kubo = Kubo::start()?;
    kubo.connect(&tcp_addr(&gw)?)?;
    let dir = tempdir()?;
    for (seg, parts) in &closed {
        let mut joined = Vec::new();
        for p in parts {
            joined.extend(fetch_verified(&gw, p)?);
        }
        let root = cid_of(seg)?;
        let body = gw.get(seg, &[])?;
        ensure!(
            body.status == 200 && body.body == joined,
            "{seg} is not its parts"
        );
        let car = parse_car(&gw.get(&format!("/ipfs/{root}?format=car"), &[])?.body)?;
        let leaves: Vec<Cid> = car.blocks.iter().skip(1).map(|(c, _)| *c).collect();
        let want: Vec<Cid> = parts.iter().map(|p| cid_of(p)).collect::<Result<_>>()?;
        ensure!(
            car.blocks[0].0 == root && leaves == want,
            "{seg}: CAR leaves {leaves:?}, parts {want:?}"
        );
        let dest = dir.path().join(format!("{root}.m4s"));
        kubo.download(&root.to_string(), &dest, Duration::from_secs(30))?;
        ensure!(
            std::fs::read(&dest)? == joined,
            "kubo's copy of {seg} differs"
        );
    }
    Ok(())
}

#[test]
fn held_reloads_time_out_and_an_ending_publisher_releases_them() -> Result<()> {
    let repo = Repo::new()?;
    let gw = Gateway::start(&repo, &["--stream", &format!("cam={KEY}")])?;
    let clip = clip(20)?;
    let mut publisher = KillOnDrop::new(
        publish_cmd(rtmp_addr(&gw)?, KEY, &clip, true)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?,
    );
    let text = wait_live_segments(&gw, "cam", 1, Duration::from_secs(20))?;
    // The publisher's link dies: the session waits for it, nothing comes.
    publisher.kill()?;
    publisher.wait()?;
    std::thread::sleep(Duration::from_millis(500));
    let (msn, _, _) = hint(&get_text(&gw, "/live/cam.m3u8")?)?;
    let target: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix("#EXT-X-TARGETDURATION:"))
        .context("target duration")?
        .parse()?;
    let started = Instant::now();
    gw.expect(&format!("/live/cam.m3u8?_HLS_msn={}", msn + 1), &[], 503)?;
    let held = started.elapsed();
    ensure!(
        held >= Duration::from_secs(3 * target - 1) && held < Duration::from_secs(3 * target + 5),
        "held {held:?}, want three target durations ({target} s each)"
    );
    // A held request, then a publisher that comes back and unpublishes:
    // the request is answered, at the latest with the ended playlist.
    let url = format!(
        "{}/live/cam.m3u8?_HLS_msn={}&_HLS_part=40",
        gw.base,
        msn + 1
    );
    let waiter = std::thread::spawn(move || -> Result<(u16, String, Duration)> {
        let t = Instant::now();
        let out = Command::new("curl")
            .args(["-s", "-w", "\n%{http_code}", &url])
            .output()?;
        let text = String::from_utf8(out.stdout)?;
        let (body, code) = text.rsplit_once('\n').context("curl output")?;
        Ok((code.parse()?, body.to_owned(), t.elapsed()))
    });
    std::thread::sleep(Duration::from_millis(300));
    publish_clip(&gw, KEY)?;
    let (code, body, took) = waiter.join().expect("waiter")?;
    ensure!(code == 200, "held request: {code} {body}");
    ensure!(took < Duration::from_secs(3 * target), "held {took:?}");
    wait_ended(&gw, "cam")?;
    let ended = get_text(&gw, &format!("/live/cam.m3u8?_HLS_msn={}", msn + 50))
        .err()
        .is_some();
    ensure!(ended, "an msn far ahead is refused even after the end");
    let text = get_text(&gw, &format!("/live/cam.m3u8?_HLS_msn={}", msn + 1))?;
    ensure!(text.ends_with("#EXT-X-ENDLIST\n"), "{text}");
    Ok(())
}
