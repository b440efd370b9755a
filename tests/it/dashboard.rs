//! The dashboard in Chromium while the data flows: ffmpeg publishes to an
//! origin, a second meshcast mirrors it over a real Yggdrasil pair (two
//! network namespaces, a daemon and TUN in each, peered over a veth), and a
//! player on the origin reports its latency.
//!
//! ```text
//!   root namespace: the test, Chromium (dashboard, player)
//!     | 10.96.1.0/24                      | 10.96.2.0/24   (veth, no ygg)
//!   A: yggdrasil, origin, ffmpeg ==10.96.0.0/24== B: yggdrasil, mirror (--peer at A's 200::/7)
//! ```
//!
//! The dashboard must show the stream with its codec and live numbers that
//! change, the mirror by its peer id, reached over Yggdrasil, with the
//! segments it fetched from us, and the player's report; no page errors.
//! Screenshots at a projector's and a phone's width are kept in the temp
//! directory to look at.

use crate::support::*;
use crate::yggdrasil::{in_ns, ip, Mesh};
use anyhow::{ensure, Context, Result};
use serde_json::Value;
use std::ffi::OsString;
use std::process::Stdio;
use std::time::Duration;

const KEY: &str = "dashkey-0123456789";
const SECONDS: u32 = 60;

/// What the test reads of the page each sample: the last snapshot's key
/// figures and the text the tables show.
const PROBE: &str = r##"(() => {
  const d = window.meshcastDashboard;
  const s = d && d.last;
  if (!s) return null;
  const cam = (s.streams || []).find((x) => x.name === "cam") || {};
  const text = (sel) => (document.querySelector(sel) || {}).innerText || "";
  return {
    snapshots: d.snapshots,
    errors: d.errors,
    live: !!cam.live,
    segments: cam.ingest ? cam.ingest.segments : null,
    ipns_seq: cam.ipns ? cam.ipns.sequence : null,
    peers: (s.peers || []).map((p) => ({
      id: p.peer_id, transport: p.transport, sent: p.bytes_sent,
      fetched: (p.fetched || []).map((f) => f.label),
    })),
    viewers: s.viewers ? s.viewers.count : null,
    publisher: text("#publisher dl"),
    segmenter: text("#segmenter dl"),
    peers_table: text("#t-peers tbody"),
    viewers_table: text("#t-viewers tbody"),
  };
})()"##;

#[test]
fn the_dashboard_shows_the_flow_live() -> Result<()> {
    let clip = clip(SECONDS)?;
    let tag = std::process::id() % 100_000;
    let (a, b) = (format!("mcdbA{tag}"), format!("mcdbB{tag}"));
    let mut mesh = Mesh::new()?;
    mesh.namespace(&a)?;
    mesh.namespace(&b)?;
    mesh.veth(Some(&a), "10.96.0.1/24", &b, "10.96.0.2/24")?;
    mesh.veth(None, "10.96.1.1/24", &a, "10.96.1.2/24")?;
    mesh.veth(None, "10.96.2.1/24", &b, "10.96.2.2/24")?;
    ip(&["-n", &a, "link", "set", "lo", "up"])?;
    let ygg_a = mesh.yggdrasil(&a, Some("10.96.0.1"), &[], None)?;
    mesh.yggdrasil(&b, None, &["10.96.0.1"], None)?;

    let origin_repo = Repo::new()?;
    let p2p_port = free_port()?;
    let origin = Gateway::start_on(
        "10.96.1.2".parse()?,
        &origin_repo,
        &[
            "--stream",
            &format!("cam={KEY}"),
            "--p2p",
            &format!("/ip6/::/tcp/{p2p_port}"),
            "--no-mdns",
        ],
        &["ip", "netns", "exec", a.as_str()],
    )?;
    let origin_id = node_info(&origin)?["peer_id"]
        .as_str()
        .context("peer id")?
        .to_owned();
    let name = ipns_name(&origin, "cam")?;
    let ygg_peer = format!("/ip6/{ygg_a}/tcp/{p2p_port}/p2p/{origin_id}");
    let mirror_repo = Repo::new()?;
    let mirror = Gateway::start_at(
        "10.96.2.2".parse()?,
        &mirror_repo,
        &["ip", "netns", "exec", b.as_str()],
        |addr| {
            let args = [
                "--http".to_owned(),
                addr.to_string(),
                "--peer".to_owned(),
                ygg_peer.clone(),
                "--follow".to_owned(),
                name.clone(),
                "--p2p".to_owned(),
                "/ip6/::/tcp/0".to_owned(),
                "--no-mdns".to_owned(),
            ];
            Ok(args.into_iter().map(OsString::from).collect())
        },
    )?;
    let mirror_id = node_info(&mirror)?["peer_id"]
        .as_str()
        .context("peer id")?
        .to_owned();
    wait_peer(&origin, &mirror_id, true, Duration::from_secs(20))?;

    // The origin's ingest listens on its namespace's loopback.
    let rtmp = rtmp_addr(&origin)?;
    let publisher = KillOnDrop::new(
        in_ns(&a, &publish_cmd(rtmp, KEY, &clip, true))
            .stderr(Stdio::null())
            .spawn()
            .context("start ffmpeg")?,
    );
    wait_live_segments(&origin, "cam", 2, Duration::from_secs(20))
        .with_context(|| origin.log_tail())?;
    wait_live_segments(&mirror, "cam", 1, Duration::from_secs(20))?;

    // A player on the origin, which reports every 10 s.
    let player = watch_page(&format!("{}/watch/cam", origin.base), 26)?;
    let shots = std::env::temp_dir();
    let (wide, phone) = (
        shots.join("meshcast-dashboard-wide.png"),
        shots.join("meshcast-dashboard-phone.png"),
    );
    let url = format!("{}/dashboard", origin.base);
    let desk = watch_page_with(
        &url,
        24,
        &[
            "--viewport",
            "1600x1000",
            "--eval",
            PROBE,
            "--screenshot",
            wide.to_str().context("UTF-8 path")?,
        ],
    )?;
    let small = watch_page_with(
        &url,
        24,
        &[
            "--viewport",
            "390x844",
            "--eval",
            PROBE,
            "--screenshot",
            phone.to_str().context("UTF-8 path")?,
        ],
    )?;
    let desk = page_states(desk)?;
    let small = page_states(small)?;
    page_states(player)?;
    eprintln!(
        "dashboard screenshots: {} {}",
        wide.display(),
        phone.display()
    );

    let seen: Vec<&Value> = desk
        .samples
        .iter()
        .filter_map(|s| s.value.as_ref().filter(|v| !v.is_null()))
        .collect();
    let last = *seen.last().context("the dashboard never got a snapshot")?;
    let dump = || serde_json::to_string_pretty(last).unwrap_or_default();
    ensure!(
        last["snapshots"].as_u64() >= Some(8),
        "too few snapshots in 24 s: {}",
        dump()
    );
    ensure!(
        last["errors"].as_array().is_some_and(Vec::is_empty),
        "{}",
        dump()
    );
    ensure!(
        last["live"] == true,
        "the stream is not shown live: {}",
        dump()
    );
    let stage = last["publisher"].as_str().unwrap_or_default();
    for want in ["cam", "H.264", "fps", "bit/s", "127.0.0.1"] {
        ensure!(
            stage.contains(want),
            "publisher stage lacks {want}: {stage}"
        );
    }
    // Live numbers that change: segments cut go up while the page is open.
    let segments: Vec<u64> = seen.iter().filter_map(|v| v["segments"].as_u64()).collect();
    ensure!(
        segments.last() > segments.first().map(|f| f + 3).as_ref(),
        "the segment count did not move: {segments:?}"
    );
    ensure!(last["ipns_seq"].as_u64() > Some(1), "{}", dump());
    // The mirror, by peer id, over Yggdrasil, fetching our segments.
    let peer = last["peers"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|p| p["id"] == mirror_id.as_str())
        .with_context(|| format!("the mirror {mirror_id} is not listed: {}", dump()))?;
    ensure!(
        peer["transport"]
            .as_array()
            .is_some_and(|t| t.iter().any(|t| t == "yggdrasil")),
        "the mirror is not shown over Yggdrasil: {peer}"
    );
    ensure!(peer["sent"].as_u64() > Some(100_000), "{peer}");
    ensure!(
        peer["fetched"].as_array().is_some_and(|f| f
            .iter()
            .any(|l| l.as_str().is_some_and(|l| l.starts_with("cam ")))),
        "no segment of ours shown as fetched by the mirror: {peer}"
    );
    let table = last["peers_table"].as_str().unwrap_or_default();
    ensure!(
        table.contains(&mirror_id[..6]) && table.contains("yggdrasil"),
        "the peers table lacks the mirror: {table}"
    );
    // The player's report (every 10 s) reached the dashboard.
    ensure!(
        seen.iter().any(|v| v["viewers"].as_u64() >= Some(1)),
        "no player report shown: {}",
        dump()
    );
    let small_last = small
        .samples
        .iter()
        .filter_map(|s| s.value.as_ref())
        .next_back()
        .context("no sample at phone width")?;
    ensure!(small_last["live"] == true, "phone width: {small_last}");

    drop(publisher);
    drop((mirror, origin));
    drop(mesh);
    Ok(())
}
