//! The HTTP gateway against clients that hold connections without using
//! them: slowloris (a request head trickled a byte at a time), many idle
//! connections from one address, and clients that ask for a large file and
//! never read it. A plain client must still be served at once, stalled
//! ones must be timed out, and what stalled readers cost must stay bounded.
//! The attackers connect from other loopback addresses than the plain
//! client, as the server counts connections by address.

use crate::support::*;
use anyhow::{ensure, Context, Result};
use std::io::{ErrorKind, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

/// 12 MB: 48 blocks of 256 KiB, a multi-block file.
const FILE_LEN: u64 = 12_000_000;

fn gateway_addr(gw: &Gateway) -> Result<SocketAddr> {
    gw.base
        .trim_start_matches("http://")
        .parse()
        .context("gateway address")
}

/// A repo holding a 12 MB file; its CID.
fn repo_with_file() -> Result<(Repo, String)> {
    let repo = Repo::new()?;
    let dir = tempdir()?;
    let file = dir.path().join("big.bin");
    write_random_file(&file, 77, FILE_LEN)?;
    let cid = repo.add([&file])?;
    Ok((repo, cid))
}

/// Sends a GET of `path` and reads nothing.
fn stalled_reader(from: IpAddr, to: SocketAddr, path: &str) -> Result<TcpStream> {
    let mut s = connect_from(from, to, Some(16 * 1024))?;
    write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n")?;
    Ok(s)
}

#[test]
fn slowloris_and_idle_connections_do_not_starve_a_plain_client() -> Result<()> {
    let repo = Repo::new()?;
    let toml = format!(
        "{LOOPBACK_RTMP}{LOOPBACK_P2P}[http]\nmax_connections = 200\nheader_timeout = \"2s\"\n"
    );
    let gw = Gateway::start_config(&repo, &toml)?;
    let addr = gateway_addr(&gw)?;
    // 300 connections from one address that start a request and stop: more
    // than max_connections.
    let mut idle = Vec::new();
    for _ in 0..300 {
        let Ok(mut s) = connect_from([127, 0, 0, 2].into(), addr, None) else {
            continue;
        };
        let _ = s.write_all(b"GET / HTTP/1.1\r\nHo");
        idle.push(s);
    }
    // One from another address that trickles its head a byte at a time.
    let mut loris = connect_from([127, 0, 0, 3].into(), addr, None)?;
    loris.set_read_timeout(Some(Duration::from_millis(200)))?;
    let start = Instant::now();
    let plain = gw.expect("/api/v1/streams", &[], 200);
    let took = start.elapsed();
    plain?;
    ensure!(
        took < Duration::from_secs(1),
        "a plain request took {took:?} beside 300 idle connections"
    );
    // The trickler is closed once its head took longer than header_timeout.
    let head = b"GET /api/v1/streams HTTP/1.1\r\nHost: x\r\nX-Slow: aaaaaaaaaaaaaaaaaaaa";
    let mut closed_after = None;
    let mut buf = [0u8; 256];
    for byte in head.iter().cycle().take(60) {
        if loris.write_all(std::slice::from_ref(byte)).is_err() {
            closed_after = Some(start.elapsed());
            break;
        }
        match loris.read(&mut buf) {
            Ok(_) => {
                closed_after = Some(start.elapsed());
                break;
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => {
                closed_after = Some(start.elapsed());
                break;
            }
        }
    }
    let closed_after = closed_after.context("a head trickled for 12 s was never cut off")?;
    ensure!(
        closed_after < Duration::from_secs(5),
        "the trickled head was cut off only after {closed_after:?}"
    );
    drop(idle);
    Ok(())
}

#[test]
fn a_client_that_never_reads_the_body_is_cut_off() -> Result<()> {
    let (repo, cid) = repo_with_file()?;
    let toml = format!("{LOOPBACK_RTMP}{LOOPBACK_P2P}[http]\nwrite_timeout = \"2s\"\n");
    let gw = Gateway::start_config(&repo, &toml)?;
    let addr = gateway_addr(&gw)?;
    let mut s = stalled_reader([127, 0, 0, 2].into(), addr, &format!("/ipfs/{cid}"))?;
    std::thread::sleep(Duration::from_secs(5));
    // Now read what there is: the server must have given up, so the body
    // ends (closed or reset) short of the file.
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut got = 0u64;
    let mut buf = vec![0u8; 1 << 16];
    loop {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => got += n as u64,
            Err(e) if e.kind() == ErrorKind::ConnectionReset => break,
            Err(e) => return Err(e).context("the connection stayed open after the write timeout"),
        }
    }
    ensure!(
        got < FILE_LEN,
        "the stalled client got the whole file ({got} bytes): it was never timed out"
    );
    Ok(())
}

#[test]
fn stalled_readers_of_a_large_file_hold_bounded_memory() -> Result<()> {
    let (repo, cid) = repo_with_file()?;
    let toml = format!("{LOOPBACK_RTMP}{LOOPBACK_P2P}[http]\nwrite_timeout = \"1m\"\n");
    let gw = Gateway::start_config(&repo, &toml)?;
    let addr = gateway_addr(&gw)?;
    let path = format!("/ipfs/{cid}");
    // Once, so what the first read maps and caches is in the baseline.
    gw.expect(&path, &[], 200)?;
    let before = gw.memory_kib("VmRSS")? / 1024;
    // 120 readers from 12 addresses (within the per-address share).
    let readers: Vec<TcpStream> = (0..120u8)
        .map(|i| stalled_reader([127, 0, 1, 1 + i / 10].into(), addr, &path))
        .collect::<Result<_>>()?;
    std::thread::sleep(Duration::from_secs(3));
    let after = gw.memory_kib("VmRSS")? / 1024;
    let grew = after.saturating_sub(before);
    // The budget (8 MiB) and each connection's buffers and task; before
    // it, each reader held 2 MB.
    ensure!(
        grew < 48,
        "RSS grew by {grew} MiB ({before} -> {after}) with 120 stalled readers"
    );
    // Others are still served (from the budget the stalled ones left).
    let small = gw.expect("/api/v1/streams", &[], 200);
    drop(readers);
    small?;
    Ok(())
}

#[test]
fn slowloris_from_many_addresses_gives_way_to_a_plain_client() -> Result<()> {
    let (repo, cid) = repo_with_file()?;
    // A header timeout longer than the test: only eviction can make room.
    let toml = format!(
        "{LOOPBACK_RTMP}{LOOPBACK_P2P}[http]\nmax_connections = 100\n\
         max_connections_per_address = 10\nheader_timeout = \"1m\"\nwrite_timeout = \"1m\"\n"
    );
    let gw = Gateway::start_config(&repo, &toml)?;
    let addr = gateway_addr(&gw)?;
    // A download in flight before the attack, read slowly: busy, so it
    // must never be the one evicted.
    let mut download = stalled_reader([127, 0, 0, 2].into(), addr, &format!("/ipfs/{cid}"))?;
    download.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut got = vec![0u8; 1 << 16];
    let mut downloaded = download.read(&mut got)? as u64;
    // 300 slowloris connections from 30 addresses, each within its
    // address's share: together three times max_connections.
    let mut loris = Vec::new();
    for i in 0..300u32 {
        let from = IpAddr::from([127, 0, 2, 1 + (i % 30) as u8]);
        let mut s = connect_from(from, addr, None)?;
        s.write_all(b"GET /api/v1/streams HTTP/1.1\r\nHo")?;
        loris.push(s);
    }
    std::thread::sleep(Duration::from_millis(500));
    let mut took = Vec::new();
    for _ in 0..5 {
        let start = Instant::now();
        gw.expect("/api/v1/streams", &[], 200)?;
        took.push(start.elapsed());
    }
    took.sort();
    ensure!(
        took[2] < Duration::from_millis(500),
        "a plain request beside 300 slowloris connections from 30 addresses took {took:?}"
    );
    // Most of the slowloris connections were closed for newcomers.
    let mut closed = 0;
    for s in &mut loris {
        s.set_read_timeout(Some(Duration::from_millis(20)))?;
        let mut b = [0u8; 64];
        match s.read(&mut b) {
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            _ => closed += 1,
        }
    }
    ensure!(
        closed >= 150,
        "only {closed} of 300 slowloris connections were closed"
    );
    // The download was never evicted: it runs to its end.
    loop {
        match download.read(&mut got) {
            Ok(0) => break,
            Ok(n) => downloaded += n as u64,
            Err(e) => return Err(e).context("the download in flight was cut off"),
        }
        if downloaded > FILE_LEN {
            break;
        }
    }
    ensure!(
        downloaded > FILE_LEN,
        "the download in flight ended after {downloaded} bytes (head and body exceed {FILE_LEN})"
    );
    Ok(())
}
