//! The reference-node harnesses themselves (`support::Kubo`, `support::Helia`),
//! so tests built on them fail for their own reasons: nodes start, keep
//! their identity in a given repo, connect to each other, exchange blocks,
//! and kubo's pubsub delivers messages with their author and sequence
//! number.

use crate::support::*;
use anyhow::{ensure, Context, Result};
use std::time::Duration;

#[test]
fn kubo_nodes_connect_and_exchange_pubsub_messages() -> Result<()> {
    let dir = tempdir()?;
    let a = Kubo::start_in(&dir.path().join("a"))?;
    let id_a = a.peer_id.clone();
    let b = Kubo::start()?;
    b.connect(a.tcp_addr()?)?;
    a.wait_peer(&b.peer_id, Duration::from_secs(10))?;
    let sub = b.subscribe("meshcast-harness")?;
    // Gossipsub needs a heartbeat or two to graft the new subscription.
    let start = std::time::Instant::now();
    let msg = loop {
        a.publish("meshcast-harness", b"\x00hello\xff")?;
        if let Some(m) = b.next_message(sub, Duration::from_secs(2))? {
            break m;
        }
        ensure!(
            start.elapsed() < Duration::from_secs(30),
            "no pubsub message arrived"
        );
    };
    ensure!(msg.data == b"\x00hello\xff", "data {:?}", msg.data);
    ensure!(msg.from == id_a, "from {} (want {id_a})", msg.from);
    ensure!(msg.topic.as_deref() == Some("meshcast-harness"));
    ensure!(msg.seqno.is_some(), "kubo signs a sequence number");
    drop(a);
    // The repo keeps the identity.
    let again = Kubo::start_in(&dir.path().join("a"))?;
    ensure!(again.peer_id == id_a, "same repo, same peer id");
    Ok(())
}

#[test]
fn helia_and_kubo_exchange_files() -> Result<()> {
    let work = tempdir()?;
    let file = work.path().join("f.bin");
    write_random_file(&file, 5, 300_000)?;
    let kubo = Kubo::start()?;
    let helia = Helia::start()?;
    ensure!(
        helia.peer_id.starts_with("12D3Koo") && helia.tcp_addr()?.contains("/ip4/127.0.0.1/"),
        "Helia listens on loopback: {:?}",
        helia.addrs
    );
    helia.dial(kubo.tcp_addr()?)?;
    let cid = kubo.add(&file)?;
    let dest = work.path().join("via-helia.bin");
    let n = helia.cat(&cid, &dest, Duration::from_secs(30))?;
    ensure!(n == 300_000 && std::fs::read(&dest)? == std::fs::read(&file)?);
    let cid = helia.add(&file)?;
    let dest = work.path().join("via-kubo.bin");
    kubo.download(&cid, &dest, Duration::from_secs(30))?;
    ensure!(std::fs::read(&dest)? == std::fs::read(&file)?);
    ensure!(
        helia.peers()?.contains(&kubo.peer_id),
        "{:?}",
        helia.peers().context("peers")?
    );
    Ok(())
}
