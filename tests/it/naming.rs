//! Stream names over IPNS through the real binary: ffmpeg publishes to one
//! `meshcast serve`; its name resolves on that node alone (no peer), and on
//! a second node that only knows the first as a peer, also when that node's
//! clock is three days behind (libfaketime).
//!
//! Checks `/ipns/{name}/` (the site: player page, playlists, stream.json),
//! `?format=ipns-record`, Delegated Routing V1 (`GET`/`PUT
//! /routing/v1/ipns/{name}`, `GET /routing/v1/providers/{cid}`), and that
//! sequence numbers grow across a restart.

use crate::support::*;
use anyhow::{ensure, Result};
use meshcast::ipns::{Name, Record};
use serde_json::Value;
use std::time::{Duration, Instant, SystemTime};

/// Runs a command with the wall clock three days behind (Debian
/// `faketime`); monotonic time is left alone so timers behave.
pub const FAKETIME_3_DAYS_AGO: [&str; 3] = ["faketime", "-f", "-3d"];

const KEY: &str = "namekey-0123456789";

#[test]
fn a_stream_name_resolves_alone_and_on_a_peer_with_a_skewed_clock() -> Result<()> {
    let origin_repo = Repo::new()?;
    let stream = format!("cam={KEY}");
    let origin = Gateway::start(&origin_repo, &["--stream", &stream])?;
    let name = ipns_name(&origin, "cam")?;
    ensure!(name.starts_with("k51"), "a base36 libp2p-key CID: {name}");
    publish_clip(&origin, KEY)?;

    // Alone: no peer at all.
    ensure!(
        node_info(&origin)?["peers"]
            .as_array()
            .is_some_and(Vec::is_empty),
        "the origin has no peer"
    );
    let (doc, _) = wait_resolved(&origin, &name, Duration::from_secs(10))?;
    ensure!(doc["name"] == "cam", "{doc}");
    let index = get_text(&origin, &format!("/ipns/{name}/"))?;
    ensure!(index.contains("player.js"), "the site's page: {index}");
    let archive = get_text(&origin, &format!("/ipns/{name}/archive.m3u8"))?;
    ensure!(archive.contains("#EXT-X-ENDLIST"), "{archive}");
    // Without the slash: redirected under the name, not to /ipfs.
    let r = origin.get(&format!("/ipns/{name}"), &[])?;
    ensure!(r.status == 301, "{}", r.status);
    ensure!(
        r.header("location") == Some(&format!("/ipns/{name}/")),
        "{:?}",
        r.header("location")
    );

    // The record, as the gateway and delegated routing give it.
    let rec = origin.get(&format!("/ipns/{name}?format=ipns-record"), &[])?;
    ensure!(rec.status == 200, "{}", rec.status);
    ensure!(rec.header("content-type") == Some("application/vnd.ipfs.ipns-record"));
    let routed = origin.get(&format!("/routing/v1/ipns/{name}"), &[])?;
    ensure!(
        routed.status == 200 && routed.body == rec.body,
        "routing GET"
    );
    let parsed: Name = name.parse()?;
    let site = ipns_site(&origin, "cam")?;
    let record = Record::verify(&parsed, &rec.body)?;
    ensure!(
        record.value() == format!("/ipfs/{site}"),
        "the record points at the site: {}",
        record.value()
    );
    let seq_before = record.sequence();
    ensure!(
        record.validity() > SystemTime::now() + Duration::from_secs(300 * 86_400),
        "a long validity"
    );
    // Providers: the origin holds the site.
    let p = origin.get(&format!("/routing/v1/providers/{site}"), &[])?;
    ensure!(p.status == 200, "{}", p.status);
    let pv: Value = serde_json::from_slice(&p.body)?;
    ensure!(
        pv["Providers"][0]["ID"] == node_info(&origin)?["peer_id"],
        "{pv}"
    );

    // A second node, three days behind, told only the origin's address.
    let peer_repo = Repo::new()?;
    let addr = tcp_addr(&origin)?;
    let peer = Gateway::start_wrapped(&peer_repo, &["--peer", &addr], &FAKETIME_3_DAYS_AGO)?;
    wait_peer(
        &peer,
        node_info(&origin)?["peer_id"].as_str().unwrap(),
        true,
        Duration::from_secs(10),
    )?;
    let (doc, took) = wait_resolved(&peer, &name, Duration::from_secs(10))?;
    ensure!(doc["name"] == "cam");
    eprintln!("name resolved on a peer (clock -3 days) in {took:?}");
    // Delegated routing PUT of the same record: accepted (not newer).
    let put = peer.put(&format!("/routing/v1/ipns/{name}"), &rec.body)?;
    ensure!(put == 200, "PUT of a valid record: {put}");
    let mut bad = rec.body.clone();
    let n = bad.len();
    bad[n / 2] ^= 1;
    let put = peer.put(&format!("/routing/v1/ipns/{name}"), &bad)?;
    ensure!(put == 400, "PUT of a tampered record: {put}");

    // Restart the origin and publish again: the sequence number grows.
    drop(peer);
    drop(origin);
    let origin = Gateway::start(&origin_repo, &["--stream", &stream])?;
    publish_clip(&origin, KEY)?;
    let start = Instant::now();
    loop {
        let rec = origin.get(&format!("/ipns/{name}?format=ipns-record"), &[])?;
        let record = Record::verify(&parsed, &rec.body)?;
        let seq = record.sequence();
        if seq > seq_before && record.value() == format!("/ipfs/{}", ipns_site(&origin, "cam")?) {
            break;
        }
        ensure!(
            start.elapsed() < Duration::from_secs(10),
            "sequence {seq} after restart, before {seq_before}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(())
}
