//! The libp2p node through the real binary: two `meshcast serve` on
//! loopback, one told to keep the other connected with `--peer`.
//!
//! Checks `GET /api/v1/node` (peer id, full multiaddrs, connected peers with
//! identify's agent), that the node key persists across restarts, and that
//! a configured peer that goes away is redialled when it comes back.

use crate::support::*;
use anyhow::{ensure, Context, Result};
use std::time::{Duration, Instant};

#[test]
fn node_api_peers_and_redial() -> Result<()> {
    let repo_a = Repo::new()?;
    let repo_b = Repo::new()?;
    // A listens on a fixed port so that it can come back on the same address.
    let port = free_port()?;
    let listen = format!("/ip4/127.0.0.1/tcp/{port}");
    let a = Gateway::start(&repo_a, &["--p2p", &listen, "--no-mdns"])?;
    let info_a = node_info(&a)?;
    let id_a = info_a["peer_id"].as_str().context("peer_id")?.to_owned();
    ensure!(id_a.starts_with("12D3Koo"), "an Ed25519 peer id: {id_a}");
    let addr_a = tcp_addr(&a)?;
    ensure!(
        addr_a == format!("{listen}/p2p/{id_a}"),
        "A's address {addr_a} is its listen address with /p2p"
    );

    let b = Gateway::start(&repo_b, &["--peer", &addr_a])?;
    let id_b = node_info(&b)?["peer_id"].as_str().context("id")?.to_owned();
    ensure!(id_a != id_b, "two repos, two identities");
    let seen = wait_peer(&b, &id_a, true, Duration::from_secs(10))?;
    ensure!(
        seen["configured"] == true,
        "A is a configured peer of B: {seen}"
    );
    let seen_by_a = wait_peer(&a, &id_b, true, Duration::from_secs(10))?;
    // identify has run when the agent is known.
    let start = Instant::now();
    loop {
        let p = wait_peer(&a, &id_b, true, Duration::from_secs(5))?;
        if let Some(agent) = p["agent"].as_str() {
            ensure!(agent.starts_with("meshcast/"), "agent {agent}");
            break;
        }
        ensure!(
            start.elapsed() < Duration::from_secs(10),
            "no identify: {seen_by_a}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    // A goes away: B notices; A comes back with the same key and address:
    // B redials it without being told.
    drop(a);
    wait_peer(&b, &id_a, false, Duration::from_secs(15))?;
    let a = Gateway::start(&repo_a, &["--p2p", &listen, "--no-mdns"])?;
    ensure!(
        node_info(&a)?["peer_id"] == id_a.as_str(),
        "the node key persists in the data directory"
    );
    wait_peer(&b, &id_a, true, Duration::from_secs(20))?;
    Ok(())
}

#[test]
fn no_p2p_turns_the_node_off() -> Result<()> {
    let repo = Repo::new()?;
    let g = Gateway::start(&repo, &["--no-p2p"])?;
    let r = g.get("/api/v1/node", &[])?;
    ensure!(r.status == 503, "node API with the node off: {}", r.status);
    Ok(())
}

#[test]
fn peers_connect_over_quic() -> Result<()> {
    let repo_a = Repo::new()?;
    let repo_b = Repo::new()?;
    let udp = std::net::UdpSocket::bind("127.0.0.1:0")?;
    let port = udp.local_addr()?.port();
    drop(udp);
    let listen = format!("/ip4/127.0.0.1/udp/{port}/quic-v1");
    let a = Gateway::start(&repo_a, &["--p2p", &listen, "--no-mdns"])?;
    let info = node_info(&a)?;
    let id_a = info["peer_id"].as_str().context("peer_id")?.to_owned();
    let quic = format!("{listen}/p2p/{id_a}");
    ensure!(
        info["addrs"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|a| a == quic.as_str()),
        "A lists its QUIC address: {info}"
    );
    let b = Gateway::start(&repo_b, &["--peer", &quic])?;
    let seen = wait_peer(&b, &id_a, true, Duration::from_secs(10))?;
    ensure!(
        seen["addrs"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|a| a.as_str().is_some_and(|a| a.contains("/quic-v1"))),
        "B reached A over QUIC: {seen}"
    );
    Ok(())
}
