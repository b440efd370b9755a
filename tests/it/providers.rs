//! Provider records: DHT clients that are not connected to meshcast find it
//! as the provider of what it holds, and stop finding it once it lets go.
//!
//! The topology, all on loopback: an origin `a` that ffmpeg publishes to,
//! and a second meshcast `b` that dials it (`--peer`), so each is the
//! other's only DHT peer and `a` announces its provider records to `b`. The
//! clients connect to `b` only (and `b` holds no segment), so what they
//! learn of `a` comes from the record `b` keeps.
//!
//! - Helia with `@libp2p/kad-dht` (a client on kubo's LAN protocol) asks for
//!   the providers of a live segment and of the site root: `b`'s answer
//!   names `a`, with addresses to dial.
//! - kubo with `Routing.Type = "dhtclient"`, connected to `b` only, downloads
//!   a segment: its Bitswap session looks the segment up in the DHT, gets to
//!   `a` and fetches from it. On a network this small kubo's lookup also
//!   walks to `a` as the peer closest to the key, and Bitswap then asks every
//!   connected peer, so this passes even without `a`'s record; the Helia
//!   tests are the ones that check the records a DHT server holds.
//! - kubo as the DHT server between them (`Routing.Type = "dhtserver"`):
//!   meshcast announces to it, and Helia, connected to kubo only, learns
//!   from kubo's answer that `a` provides a live segment. kubo keeps only
//!   provider records that carry addresses: meshcast's listen addresses are
//!   its confirmed external ones for that.
//! - A mirror that retains about one segment's bytes stops providing what
//!   retention unpins: asked directly over the DHT, it names itself for a
//!   segment of its live window and not for the oldest segment. (Peers it
//!   announced to keep their copy until it expires.)

use crate::support::*;
use anyhow::{ensure, Context, Result};
use std::time::{Duration, Instant};

const KEY: &str = "providekey-0123456789";

/// The CID of a `/ipfs/<cid>?filename=...` URI.
fn cid_of(uri: &str) -> Result<String> {
    uri.strip_prefix("/ipfs/")
        .and_then(|u| u.split('?').next())
        .map(str::to_owned)
        .with_context(|| format!("not an /ipfs/ URI: {uri}"))
}

fn peer_id(g: &Gateway) -> Result<String> {
    Ok(node_info(g)?["peer_id"]
        .as_str()
        .context("peer id")?
        .to_owned())
}

/// Asks Helia's DHT for the providers of `cid` until `from` answers naming
/// `provider` (with an address); fails after `timeout`.
fn wait_named(
    helia: &Helia,
    cid: &str,
    from: &str,
    provider: &str,
    timeout: Duration,
) -> Result<()> {
    let start = Instant::now();
    loop {
        let answers = helia.dht_providers(cid, Duration::from_secs(10))?;
        let named = answers.iter().filter(|(f, _)| f == from).any(|(_, ps)| {
            ps.iter()
                .any(|(id, addrs)| id == provider && addrs.iter().any(|a| a.contains("/tcp/")))
        });
        if named {
            return Ok(());
        }
        ensure!(
            start.elapsed() < timeout,
            "{from} never named {provider} as a provider of {cid}: {answers:?}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// An origin with stream `cam` and a second node that dials it.
fn origin_and_dht_peer() -> Result<(Repo, Gateway, Repo, Gateway)> {
    let a_repo = Repo::new()?;
    let a = Gateway::start(&a_repo, &["--stream", &format!("cam={KEY}")])?;
    let b_repo = Repo::new()?;
    let b = Gateway::start(&b_repo, &["--peer", &tcp_addr(&a)?])?;
    wait_peer(&b, &peer_id(&a)?, true, Duration::from_secs(20))?;
    Ok((a_repo, a, b_repo, b))
}

#[test]
fn helia_finds_the_origin_of_a_live_segment_and_its_site_over_the_dht() -> Result<()> {
    let (_a_repo, a, _b_repo, b) = origin_and_dht_peer()?;
    let a_id = peer_id(&a)?;
    let b_id = peer_id(&b)?;
    let helia = Helia::start_dht()?;
    helia.dial(&tcp_addr(&b)?)?;

    let mut publisher = publish_cmd(rtmp_addr(&a)?, KEY, &clip(20)?, true).spawn()?;
    let live = wait_live_segments(&a, "cam", 2, Duration::from_secs(25))?;
    let (_, segments) = uris(&live);
    let segment = cid_of(segments.last().context("no segment")?)?;
    let site = ipns_site(&a, "cam")?;
    wait_named(&helia, &segment, &b_id, &a_id, Duration::from_secs(20))?;
    wait_named(&helia, &site, &b_id, &a_id, Duration::from_secs(20))?;
    let status = publisher.wait()?;
    ensure!(status.success(), "ffmpeg: {status}");
    Ok(())
}

#[test]
fn kubo_as_a_dht_client_downloads_a_segment_from_an_origin_it_was_not_told() -> Result<()> {
    let (_a_repo, a, _b_repo, b) = origin_and_dht_peer()?;
    let a_id = peer_id(&a)?;
    publish_clip(&a, KEY)?;
    wait_ended(&a, "cam")?;
    let archive = get_text(&a, "/live/cam/archive.m3u8")?;
    let (_, segments) = uris(&archive);
    let segment = cid_of(&segments[0])?;

    let kubo = Kubo::start_dht_client()?;
    kubo.connect(&tcp_addr(&b)?)?;
    ensure!(
        !kubo.peers()?.contains(&a_id),
        "kubo is connected to the origin before looking anything up"
    );
    let dir = tempdir()?;
    let dest = dir.path().join("segment.m4s");
    kubo.download(&segment, &dest, Duration::from_secs(60))?;
    let want = a.get(&format!("/ipfs/{segment}"), &[])?.body;
    ensure!(
        std::fs::read(&dest)? == want,
        "kubo downloaded other bytes for {segment}"
    );
    ensure!(
        kubo.peers()?.contains(&a_id),
        "kubo got the segment without connecting to the origin"
    );
    Ok(())
}

#[test]
fn a_mirror_stops_providing_what_retention_lets_go() -> Result<()> {
    let origin_repo = Repo::new()?;
    let origin = Gateway::start(&origin_repo, &["--stream", &format!("cam={KEY}")])?;
    let name = ipns_name(&origin, "cam")?;
    let mirror_repo = Repo::new()?;
    let mirror = Gateway::start_config(
        &mirror_repo,
        &format!(
            "[[follow]]\nname = \"{name}\"\nretain_bytes = 1\n\n{LOOPBACK_RTMP}\n{LOOPBACK_P2P}peers = [\"{}\"]\n",
            tcp_addr(&origin)?
        ),
    )?;
    let mirror_id = peer_id(&mirror)?;
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
    let kept = cid_of(window.last().context("no segment in the window")?)?;
    let oldest = cid_of(&all[0])?;
    let start = Instant::now();
    while mirror_repo.run(["pin", "ls"])?.contains(&oldest) {
        ensure!(
            start.elapsed() < Duration::from_secs(20),
            "retention never let {oldest} go"
        );
        std::thread::sleep(Duration::from_millis(200));
    }

    let helia = Helia::start_dht()?;
    helia.dial(&tcp_addr(&mirror)?)?;
    wait_named(
        &helia,
        &kept,
        &mirror_id,
        &mirror_id,
        Duration::from_secs(20),
    )?;
    let answers = helia.dht_providers(&oldest, Duration::from_secs(10))?;
    ensure!(
        answers.iter().any(|(from, _)| *from == mirror_id),
        "the mirror did not answer: {answers:?}"
    );
    for (from, providers) in &answers {
        ensure!(
            from != &mirror_id || providers.iter().all(|(id, _)| *id != mirror_id),
            "the mirror still provides {oldest}: {answers:?}"
        );
    }
    Ok(())
}

#[test]
fn a_kubo_dht_server_keeps_the_origins_records_for_helia() -> Result<()> {
    let kubo = Kubo::start_dht_server()?;
    let kubo_addr = kubo.tcp_addr()?.to_owned();
    let kubo_id = kubo_addr
        .rsplit("/p2p/")
        .next()
        .context("kubo's address has no peer id")?
        .to_owned();
    let a_repo = Repo::new()?;
    let a = Gateway::start(
        &a_repo,
        &["--stream", &format!("cam={KEY}"), "--peer", &kubo_addr],
    )?;
    let a_id = peer_id(&a)?;
    kubo.wait_peer(&a_id, Duration::from_secs(20))?;
    let helia = Helia::start_dht()?;
    helia.dial(&kubo_addr)?;

    let mut publisher = publish_cmd(rtmp_addr(&a)?, KEY, &clip(20)?, true).spawn()?;
    let live = wait_live_segments(&a, "cam", 2, Duration::from_secs(25))?;
    let (_, segments) = uris(&live);
    let segment = cid_of(segments.last().context("no segment")?)?;
    wait_named(&helia, &segment, &kubo_id, &a_id, Duration::from_secs(30))?;
    let status = publisher.wait()?;
    ensure!(status.success(), "ffmpeg: {status}");
    Ok(())
}
