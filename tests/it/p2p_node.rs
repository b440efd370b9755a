//! The libp2p node through the real binary: two `meshcast serve` on
//! loopback, one told to keep the other connected with `--peer`.
//!
//! Checks `GET /api/v1/node` (peer id, full multiaddrs, connected peers with
//! identify's agent), that the node key persists across restarts, and that
//! a configured peer that goes away is redialled when it comes back. Peers
//! of the test's own with each key type libp2p defines (RSA, secp256k1,
//! ECDSA, Ed25519) connect, are identified, and the IPNS records they sign
//! and publish over gossipsub for their own names resolve.

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

/// A libp2p peer of the test's own, with identify and gossipsub.
#[derive(libp2p::swarm::NetworkBehaviour)]
struct KeyedPeer {
    identify: libp2p::identify::Behaviour,
    gossipsub: libp2p::gossipsub::Behaviour,
}

#[test]
fn peers_with_every_key_type_connect_and_their_names_resolve() -> Result<()> {
    use futures::StreamExt;
    use libp2p::gossipsub;
    use libp2p::identity::Keypair;
    use meshcast::ipns::{Name, Record};

    let repo = Repo::new()?;
    let gw = Gateway::start(&repo, &[])?;
    let addr: libp2p::Multiaddr = tcp_addr(&gw)?.parse()?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let _in_rt = rt.enter();
    // libp2p cannot make RSA keys: a fixture made with openssl.
    let mut pkcs8 = std::fs::read(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/rsa-2048.pk8"),
    )?;
    let keys = [
        Keypair::rsa_from_pkcs8(&mut pkcs8)?,
        Keypair::generate_secp256k1(),
        Keypair::generate_ecdsa(),
        Keypair::generate_ed25519(),
    ];
    for key in keys {
        let kind = key.key_type();
        let agent = format!("meshcast-test/{kind}");
        let name = Name::from_public_key(&key.public());
        let record = Record::sign(
            &key,
            "/ipfs/bafkqaddwgevxmmraojswg33smq",
            1,
            std::time::SystemTime::now() + Duration::from_secs(3600),
            Duration::from_secs(60),
        )?;
        let mut swarm = libp2p::SwarmBuilder::with_existing_identity(key)
            .with_tokio()
            .with_tcp(
                libp2p::tcp::Config::default(),
                libp2p::noise::Config::new,
                libp2p::yamux::Config::default,
            )?
            .with_behaviour(|key| {
                Ok(KeyedPeer {
                    identify: libp2p::identify::Behaviour::new(
                        libp2p::identify::Config::new("/ipfs/id/1.0.0".into(), key.public())
                            .with_agent_version(agent.clone()),
                    ),
                    gossipsub: gossipsub::Behaviour::new(
                        gossipsub::MessageAuthenticity::Signed(key.clone()),
                        gossipsub::Config::default(),
                    )?,
                })
            })?
            .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(60)))
            .build();
        let peer = swarm.local_peer_id().to_string();
        swarm.dial(addr.clone())?;
        // The record goes out on the name's topic, signed by this peer, as
        // soon as meshcast subscribes to it.
        let topic = gossipsub::IdentTopic::new(name.pubsub_topic());
        let data = record.to_bytes().to_vec();
        let task = rt.spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(200));
            loop {
                tokio::select! {
                    _ = swarm.select_next_some() => {}
                    _ = tick.tick() => {
                        let _ = swarm.behaviour_mut().gossipsub.publish(topic.clone(), data.clone());
                    }
                }
            }
        });

        // identify has run both ways when meshcast knows the agent.
        let start = Instant::now();
        loop {
            let p = wait_peer(&gw, &peer, true, Duration::from_secs(20))?;
            if p["agent"] == agent.as_str() {
                break;
            }
            ensure!(
                start.elapsed() < Duration::from_secs(20),
                "{kind}: no identify: {p}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        // Resolving subscribes to the topic, and the peer's record arrives.
        let start = Instant::now();
        loop {
            let r = gw.get(&format!("/routing/v1/ipns/{name}"), &[])?;
            if r.status == 200 {
                ensure!(r.body == record.to_bytes(), "{kind}: another record");
                break;
            }
            ensure!(
                start.elapsed() < Duration::from_secs(30),
                "{kind}: /routing/v1/ipns/{name}: {} {}",
                r.status,
                String::from_utf8_lossy(&r.body)
            );
        }
        task.abort();
    }
    Ok(())
}
