//! Bitswap between `meshcast serve` and real peers: kubo 0.22 (`kubo.py
//! daemon`) and Helia (`helia-node.mjs`), all on loopback.
//!
//! Checks that kubo and Helia fetch files only meshcast has (meshcast as
//! server), that meshcast's gateway serves files only they have (meshcast
//! as client; `only-if-cached` still answers 412 and fetches nothing), that
//! a want for a block meshcast gets only later is answered when the block
//! arrives (kubo asks meshcast, meshcast then fetches it from Helia), and
//! that a peer sending bytes that do not match the wanted CID gets nothing
//! stored and the request a 504.

use crate::support::*;
use anyhow::{bail, ensure, Context, Result};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// `GET /api/v1/bitswap` as JSON.
fn stats(g: &Gateway) -> Result<Value> {
    let r = g.get("/api/v1/bitswap", &[])?;
    ensure!(r.status == 200, "GET /api/v1/bitswap: {}", r.status);
    Ok(serde_json::from_slice(&r.body)?)
}

fn stat(g: &Gateway, name: &str) -> Result<u64> {
    stats(g)?[name]
        .as_u64()
        .with_context(|| format!("no {name} in /api/v1/bitswap"))
}

/// Waits until a counter reaches `at_least`.
fn wait_stat(g: &Gateway, name: &str, at_least: u64, timeout: Duration) -> Result<()> {
    let start = Instant::now();
    loop {
        if stat(g, name)? >= at_least {
            return Ok(());
        }
        ensure!(
            start.elapsed() < timeout,
            "{name} stayed below {at_least} for {timeout:?}: {}",
            stats(g)?
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A random file of `len` bytes in `dir`.
fn random_file(dir: &Path, name: &str, seed: u64, len: u64) -> Result<PathBuf> {
    let path = dir.join(name);
    write_random_file(&path, seed, len)?;
    Ok(path)
}

/// Requires `got` to hold the same bytes as the file `want`.
fn same_file(got: &Path, want: &Path) -> Result<()> {
    let (a, b) = (
        std::fs::metadata(got)?.len(),
        std::fs::metadata(want)?.len(),
    );
    ensure!(a == b, "{} has {a} bytes, want {b}", got.display());
    ensure!(
        sha256_file(got)? == sha256_file(want)?,
        "{} differs from {}",
        got.display(),
        want.display()
    );
    Ok(())
}

/// `meshcast serve` with a short fetch timeout (and the libp2p node on
/// loopback, no mDNS), configured by file.
fn serve_with_fetch_timeout(repo: &Repo, timeout: &str) -> Result<Gateway> {
    Gateway::start_config(
        repo,
        &format!("[http]\nfetch_timeout = \"{timeout}\"\n{LOOPBACK_RTMP}{LOOPBACK_P2P}"),
    )
}

#[test]
fn kubo_fetches_what_only_meshcast_has() -> Result<()> {
    let work = tempdir()?;
    let file = random_file(work.path(), "big.bin", 11, 3 * MIB as u64 + 1234)?;
    let small = random_file(work.path(), "small.bin", 12, 100)?;
    let repo = Repo::new()?;
    let cid = repo.add([&file])?;
    let small_cid = repo.add([&small])?;
    let gw = Gateway::start(&repo, &[])?;
    let kubo = Kubo::start()?;
    kubo.connect(&tcp_addr(&gw)?)?;

    let dest = work.path().join("from-meshcast.bin");
    kubo.download(&cid, &dest, Duration::from_secs(60))?;
    same_file(&dest, &file)?;
    let dest = work.path().join("small-from-meshcast.bin");
    kubo.download(&small_cid, &dest, Duration::from_secs(30))?;
    same_file(&dest, &small)?;
    // 13 chunks of 256 KiB and their parent, and the small file.
    let s = stats(&gw)?;
    ensure!(
        s["blocks_sent"].as_u64() >= Some(15),
        "meshcast counted what it sent: {s}"
    );
    ensure!(
        s["bytes_sent"].as_u64() >= Some(3 * MIB as u64 + 1334),
        "{s}"
    );
    Ok(())
}

#[test]
fn meshcast_serves_what_only_kubo_has() -> Result<()> {
    let work = tempdir()?;
    let file = random_file(work.path(), "kubo.bin", 21, 2 * MIB as u64 + 77)?;
    let kubo = Kubo::start()?;
    let cid = kubo.add(&file)?;
    let repo = Repo::new()?;
    let gw = Gateway::start(&repo, &["--peer", kubo.tcp_addr()?])?;
    wait_peer(&gw, &kubo.peer_id, true, Duration::from_secs(20))?;

    let cached = [("Cache-Control", "only-if-cached")];
    let r = gw.get(&format!("/ipfs/{cid}"), &cached)?;
    ensure!(r.status == 412, "not cached yet: {}", r.status);
    ensure!(
        stat(&gw, "wants_pending")? == 0,
        "only-if-cached fetches nothing"
    );

    let r = gw.get(&format!("/ipfs/{cid}"), &[])?;
    ensure!(r.status == 200, "GET /ipfs/{cid}: {}", r.status);
    ensure!(
        r.body == std::fs::read(&file)?,
        "the gateway served other bytes"
    );
    // Now it is here: a trustless CAR of it verifies block by block.
    let r = gw.get(&format!("/ipfs/{cid}"), &cached)?;
    ensure!(r.status == 200, "cached now: {}", r.status);
    let car = parse_car(&gw.get(&format!("/ipfs/{cid}?format=car"), &cached)?.body)?;
    ensure!(
        car.blocks.len() == 10,
        "9 chunks and a root: {}",
        car.blocks.len()
    );
    let s = stats(&gw)?;
    ensure!(s["blocks_received"] == 10, "{s}");
    ensure!(s["rejected_blocks"] == 0, "{s}");

    // `meshcast cat` on the node's data directory fetches through the
    // running node what the repo lacks (here: a second kubo-only file).
    let other = random_file(work.path(), "kubo2.bin", 22, MIB as u64 + 5)?;
    let cid2 = kubo.add(&other)?;
    let out = repo.cmd(["cat", &cid2]).output()?;
    check(&out, "meshcast cat of a block only kubo has")?;
    ensure!(out.stdout == std::fs::read(&other)?, "cat gave other bytes");
    Ok(())
}

#[test]
fn helia_and_meshcast_fetch_from_each_other() -> Result<()> {
    let work = tempdir()?;
    let ours = random_file(work.path(), "ours.bin", 31, 1_500_000)?;
    let theirs = random_file(work.path(), "theirs.bin", 32, 2_500_000)?;
    let repo = Repo::new()?;
    let our_cid = repo.add([
        std::ffi::OsStr::new("--cid-version"),
        "1".as_ref(),
        ours.as_os_str(),
    ])?;
    let gw = Gateway::start(&repo, &[])?;
    let helia = Helia::start()?;
    let their_cid = helia.add(&theirs)?;
    helia.dial(&tcp_addr(&gw)?)?;
    wait_peer(&gw, &helia.peer_id, true, Duration::from_secs(20))?;

    // Helia reads meshcast's file.
    let dest = work.path().join("helia-got.bin");
    let n = helia.cat(&our_cid, &dest, Duration::from_secs(60))?;
    ensure!(n == 1_500_000, "Helia read {n} bytes");
    same_file(&dest, &ours)?;

    // meshcast's gateway reads Helia's.
    let r = gw.get(&format!("/ipfs/{their_cid}"), &[])?;
    ensure!(r.status == 200, "GET /ipfs/{their_cid}: {}", r.status);
    ensure!(r.body == std::fs::read(&theirs)?, "other bytes from Helia");
    Ok(())
}

#[test]
fn a_want_for_a_block_meshcast_gets_later_is_answered_when_it_arrives() -> Result<()> {
    let work = tempdir()?;
    let file = random_file(work.path(), "later.bin", 41, 700_000)?;
    let helia = Helia::start()?;
    let cid = helia.add(&file)?;
    let repo = Repo::new()?;
    let gw = Gateway::start(&repo, &[])?;
    let kubo = std::sync::Arc::new(Kubo::start()?);
    kubo.connect(&tcp_addr(&gw)?)?;

    // kubo asks meshcast, its only peer, for a file meshcast lacks.
    let dest = work.path().join("kubo-got.bin");
    let download = {
        let (kubo, cid, dest) = (kubo.clone(), cid.clone(), dest.clone());
        std::thread::spawn(move || kubo.download(&cid, &dest, Duration::from_secs(90)))
    };
    wait_stat(&gw, "peer_wants_pending", 1, Duration::from_secs(30))?;
    ensure!(!download.is_finished(), "kubo cannot have it yet");

    // meshcast gets the file from Helia (through its gateway); each block
    // stored answers kubo's waiting wants.
    helia.dial(&tcp_addr(&gw)?)?;
    wait_peer(&gw, &helia.peer_id, true, Duration::from_secs(20))?;
    let r = gw.get(&format!("/ipfs/{cid}"), &[])?;
    ensure!(
        r.status == 200,
        "meshcast fetching from Helia: {}",
        r.status
    );
    let started = Instant::now();
    match download.join() {
        Ok(r) => r.context("kubo's download")?,
        Err(_) => bail!("the download thread panicked"),
    }
    let lag = started.elapsed();
    same_file(&dest, &file)?;
    ensure!(
        !kubo.peers()?.contains(&helia.peer_id),
        "kubo must have got the blocks from meshcast, not from Helia directly"
    );
    // Answered as the blocks arrived, not on kubo's next rebroadcast of its
    // wantlist (which would also get there, tens of seconds later).
    ensure!(
        lag < Duration::from_secs(10),
        "kubo's download ended {lag:?} after meshcast had the file"
    );
    eprintln!("kubo's download finished {lag:?} after meshcast had the file");
    Ok(())
}

/// A peer that answers meshcast's want with other bytes under the wanted
/// block's prefix: a libp2p node of the test's own, speaking Bitswap 1.2.0
/// by hand.
#[test]
fn a_block_that_does_not_match_its_cid_is_not_stored() -> Result<()> {
    use futures::io::{AsyncReadExt, AsyncWriteExt};
    use futures::StreamExt;
    use libp2p::StreamProtocol;
    use meshcast::p2p::bitswap::message::{self, BlockData, Message, Protocol, WantType};

    let repo = Repo::new()?;
    let gw = serve_with_fetch_timeout(&repo, "4s")?;
    let wanted = meshcast::store::Block::new(
        cid::Version::V1,
        meshcast::store::RAW,
        b"the genuine block".to_vec(),
    );

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let _in_rt = rt.enter();
    let mut swarm = libp2p::SwarmBuilder::with_new_identity()
        .with_tokio()
        .with_tcp(
            libp2p::tcp::Config::default(),
            libp2p::noise::Config::new,
            libp2p::yamux::Config::default,
        )?
        .with_behaviour(|_| libp2p_stream::Behaviour::new())?
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(60)))
        .build();
    let mut control = swarm.behaviour().new_control();
    let mut incoming = control.accept(StreamProtocol::new(Protocol::V120.name()))?;
    let forger = swarm.local_peer_id().to_string();
    swarm.dial(tcp_addr(&gw)?.parse::<libp2p::Multiaddr>()?)?;
    rt.spawn(async move {
        loop {
            swarm.select_next_some().await;
        }
    });
    wait_peer(&gw, &forger, true, Duration::from_secs(20))?;

    std::thread::scope(|scope| {
        // The gateway asks for the block; meshcast wants it from its only
        // peer.
        let get = scope.spawn(|| gw.get(&format!("/ipfs/{}", wanted.cid), &[]));
        let _streams = rt.block_on(async {
            let (peer, mut s) = tokio::time::timeout(Duration::from_secs(10), incoming.next())
                .await?
                .context("no Bitswap stream from meshcast")?;
            let mut header = Vec::new();
            let len = loop {
                let mut b = [0];
                s.read_exact(&mut b).await?;
                header.push(b[0]);
                if let Some((_, len)) = message::frame_header(&header)? {
                    break len;
                }
            };
            let mut body = vec![0; len];
            s.read_exact(&mut body).await?;
            let want = Message::decode(&body.into())?;
            ensure!(
                want.wantlist
                    .iter()
                    .any(|e| e.cid == wanted.cid && e.want_type == WantType::Block),
                "meshcast asks its only peer for the block itself: {want:?}"
            );
            // Other bytes under the wanted block's prefix.
            let msg = Message {
                blocks: vec![BlockData::new(
                    &wanted.cid,
                    bytes::Bytes::from_static(b"forged bytes"),
                )],
                ..Message::default()
            };
            let mut out = control
                .open_stream(peer, StreamProtocol::new(Protocol::V120.name()))
                .await?;
            out.write_all(&msg.to_frame(Protocol::V120)).await?;
            out.flush().await?;
            Ok::<_, anyhow::Error>((s, out))
        })?;
        let r = get.join().map_err(|_| anyhow::anyhow!("GET panicked"))??;
        ensure!(
            r.status == 504,
            "nobody sent the real block: {} {}",
            r.status,
            String::from_utf8_lossy(&r.body)
        );
        Ok(())
    })?;
    wait_stat(&gw, "rejected_blocks", 1, Duration::from_secs(5))?;
    ensure!(stat(&gw, "blocks_received")? == 0);
    ensure!(
        repo.block_files()?.is_empty(),
        "nothing stored: {:?}",
        repo.block_files()?
    );
    Ok(())
}
