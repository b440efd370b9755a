//! The HTTP gateway end to end: `meshcast serve` on a loopback port over a
//! repo filled by `meshcast add`, fetched with a plain HTTP client.
//!
//! Checks the path gateway (`/ipfs/{cid}[/path]`, ranges) and the trustless
//! gateway responses (`?format=raw` must hash to the CID, `?format=car` must
//! parse and verify), and the status codes for bad (400), missing (404,
//! without the libp2p node) and missing-with-`only-if-cached` (412) CIDs.
//! Also: where it listens (the config file, port 0 and its log line), and
//! that `<data>/rtmp` holds ingest's bound address while it runs.

use crate::support::*;
use anyhow::{bail, ensure, Context, Result};
use cid::Cid;
use sha2::{Digest, Sha256};
use std::net::SocketAddr;
use std::time::Duration;

/// A CID for bytes no repo holds.
fn absent_cid() -> String {
    let digest = Sha256::digest(b"meshcast: nobody added this");
    let mh = multihash::Multihash::<64>::wrap(0x12, &digest).unwrap();
    Cid::new_v1(0x55, mh).to_string()
}

#[test]
fn serves_files_and_ranges() -> Result<()> {
    let repo = Repo::new()?;
    let file = fixtures().path().join(format!("random-{}", MIB + 1));
    let bytes = std::fs::read(&file)?;
    let v0 = repo.add([&file])?;
    let v1 = repo.add([
        "--profile".as_ref(),
        "unixfs-v1-2025".as_ref(),
        file.as_os_str(),
    ])?;
    let gw = Gateway::start(&repo, &[])?;

    for cid in [&v0, &v1] {
        let r = gw.expect(&format!("/ipfs/{cid}"), &[], 200)?;
        ensure!(
            r.body == bytes,
            "GET /ipfs/{cid}: {} bytes differ from the file",
            r.body.len()
        );

        // Ranges: the start, across a 256 KiB chunk boundary, the open end,
        // and a suffix.
        let n = bytes.len();
        for (range, from, to) in [
            ("bytes=0-99".to_string(), 0, 99),
            (
                format!("bytes={}-{}", CHUNK - 10, CHUNK + 9),
                CHUNK - 10,
                CHUNK + 9,
            ),
            (format!("bytes={}-", n - 5), n - 5, n - 1),
            ("bytes=-7".to_string(), n - 7, n - 1),
        ] {
            let r = gw.expect(&format!("/ipfs/{cid}"), &[("Range", &range)], 206)?;
            ensure!(r.body == bytes[from..=to], "{range} of {cid}: wrong bytes");
            assert_eq!(
                r.header("content-range"),
                Some(format!("bytes {from}-{to}/{n}").as_str()),
                "Content-Range for {range}"
            );
        }
        let r = gw.get(
            &format!("/ipfs/{cid}"),
            &[("Range", &format!("bytes={}-", n + 10))],
        )?;
        assert_eq!(r.status, 416, "a range past the end");
    }

    // HEAD-less clients rely on Content-Length for the whole body.
    let r = gw.expect(&format!("/ipfs/{v0}"), &[], 200)?;
    if let Some(len) = r.header("content-length") {
        assert_eq!(len, bytes.len().to_string());
    }
    Ok(())
}

#[test]
fn serves_paths_in_directories() -> Result<()> {
    let repo = Repo::new()?;
    let tree = fixtures().tree();
    let root = repo.add(["-r".as_ref(), tree.as_os_str()])?;
    let gw = Gateway::start(&repo, &[])?;
    let r = gw.expect(&format!("/ipfs/{root}/sub/deeper/two.txt"), &[], 200)?;
    assert_eq!(r.body, b"two\n");
    let r = gw.expect(&format!("/ipfs/{root}/big.bin"), &[], 200)?;
    ensure!(
        r.body == std::fs::read(tree.join("big.bin"))?,
        "big.bin differs"
    );
    gw.expect(&format!("/ipfs/{root}/no-such-file"), &[], 404)?;
    Ok(())
}

#[test]
fn trustless_raw_and_car_responses_verify() -> Result<()> {
    let repo = Repo::new()?;
    let file = fixtures().path().join(format!("text-{}", MIB + 1));
    let tree = fixtures().tree();
    let file_cid = repo.add([&file])?;
    let tree_cid = repo.add(["-r".as_ref(), "-H".as_ref(), tree.as_os_str()])?;
    let small_cid = repo.add([fixtures().path().join("random-1")])?;
    let gw = Gateway::start(&repo, &[])?;

    for cid in [&file_cid, &tree_cid, &small_cid] {
        let parsed = Cid::try_from(cid.as_str())?;
        // The raw block, by query and by Accept header.
        for (q, h) in [
            ("?format=raw", None),
            ("", Some(("Accept", "application/vnd.ipld.raw"))),
        ] {
            let headers: Vec<(&str, &str)> = h.into_iter().collect();
            let r = gw.expect(&format!("/ipfs/{cid}{q}"), &headers, 200)?;
            verify_block(&parsed, &r.body).with_context(|| format!("raw block of {cid}"))?;
            assert_eq!(r.header("content-type"), Some("application/vnd.ipld.raw"));
        }
        // The whole DAG as a CAR.
        for (q, h) in [
            ("?format=car", None),
            ("", Some(("Accept", "application/vnd.ipld.car"))),
        ] {
            let headers: Vec<(&str, &str)> = h.into_iter().collect();
            let r = gw.expect(&format!("/ipfs/{cid}{q}"), &headers, 200)?;
            ensure!(
                r.header("content-type")
                    .unwrap_or("")
                    .starts_with("application/vnd.ipld.car"),
                "CAR content type {:?}",
                r.header("content-type")
            );
            let car = parse_car(&r.body).with_context(|| format!("CAR of {cid}"))?;
            assert_eq!(car.roots, vec![parsed], "CAR roots");
            ensure!(
                car.blocks.first().map(|b| b.0) == Some(parsed),
                "CAR of {cid} does not start with its root"
            );
        }
    }

    // The file's CAR holds every block: exported and re-imported, it reads back.
    let r = gw.expect(&format!("/ipfs/{file_cid}?format=car"), &[], 200)?;
    let work = tempdir()?;
    let car_path = work.path().join("f.car");
    std::fs::write(&car_path, &r.body)?;
    let other = Repo::new()?;
    other.run(["dag".as_ref(), "import".as_ref(), car_path.as_os_str()])?;
    ensure!(
        other.cat(&file_cid)? == std::fs::read(&file)?,
        "CAR from the gateway is incomplete"
    );
    Ok(())
}

#[test]
fn error_statuses() -> Result<()> {
    let repo = Repo::new()?;
    // Without the libp2p node a missing block is simply not here (404);
    // with it, the gateway asks peers first (504 when none has it, see
    // bitswap_interop).
    let gw = Gateway::start(&repo, &["--no-p2p"])?;
    gw.expect("/ipfs/not-a-cid", &[], 400)?;
    gw.expect("/ipfs/bafyinvalid", &[], 400)?;
    let absent = absent_cid();
    gw.expect(&format!("/ipfs/{absent}"), &[], 404)?;
    gw.expect(
        &format!("/ipfs/{absent}"),
        &[("Cache-Control", "only-if-cached")],
        412,
    )?;
    gw.expect(
        &format!("/ipfs/{absent}?format=raw"),
        &[("Cache-Control", "only-if-cached")],
        412,
    )?;
    Ok(())
}

#[test]
fn only_if_cached_serves_what_is_there() -> Result<()> {
    let repo = Repo::new()?;
    let cid = repo.add([fixtures().path().join("text-1")])?;
    let gw = Gateway::start(&repo, &[])?;
    let r = gw.expect(
        &format!("/ipfs/{cid}"),
        &[("Cache-Control", "only-if-cached")],
        200,
    )?;
    assert_eq!(r.body, std::fs::read(fixtures().path().join("text-1"))?);
    Ok(())
}

#[test]
fn serves_what_is_added_while_it_runs() -> Result<()> {
    // The server and the CLI share the repo.
    let repo = Repo::new()?;
    let gw = Gateway::start(&repo, &[])?;
    let file = fixtures().path().join(format!("text-{CHUNK}"));
    let cid = repo.add([&file])?;
    let r = gw.expect(&format!("/ipfs/{cid}"), &[], 200)?;
    ensure!(r.body == std::fs::read(&file)?, "late-added file differs");
    Ok(())
}

#[test]
fn listens_where_the_config_file_says() -> Result<()> {
    let repo = Repo::new()?;
    let cid = repo.add([fixtures().path().join("text-1")])?;
    let work = tempdir()?;
    let config = work.path().join("meshcast.toml");
    let gw = Gateway::start_at([127, 0, 0, 1].into(), &repo, &[], |addr| {
        std::fs::write(
            &config,
            format!("[http]\nlisten = \"{addr}\"\n{LOOPBACK_RTMP}{LOOPBACK_P2P}"),
        )?;
        Ok(vec!["--config".into(), config.clone().into()])
    })?;
    gw.expect(&format!("/ipfs/{cid}"), &[], 200)?;
    Ok(())
}

#[test]
fn port_zero_binds_a_free_port_and_logs_it() -> Result<()> {
    let repo = Repo::new()?;
    let cid = repo.add([fixtures().path().join("text-1")])?;
    let mut serve = Spawned::new(&repo, &["--http".as_ref(), "127.0.0.1:0".as_ref()], &[])?;
    let log = serve.log.clone();
    let start = std::time::Instant::now();
    let addr = loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        // Only whole lines: a line caught half written could end in a
        // truncated port number that belongs to some other listener.
        let text = &text[..text.rfind('\n').map_or(0, |i| i + 1)];
        // The gateway's own line: the RTMP listener may log first.
        let found = text
            .lines()
            .filter(|l| l.contains("HTTP gateway listening"))
            .flat_map(|l| l.match_indices("127.0.0.1:").map(move |(i, m)| (l, i, m)))
            .find_map(|(text, i, m)| {
                let digits: String = text[i + m.len()..]
                    .chars()
                    .take_while(char::is_ascii_digit)
                    .collect();
                digits
                    .parse::<u16>()
                    .ok()
                    .filter(|&p| p != 0)
                    .map(|p| SocketAddr::from(([127, 0, 0, 1], p)))
            });
        if let Some(addr) = found {
            break addr;
        }
        if let Some(status) = serve.exited()? {
            bail!("serve exited with {status}\n{}", log_tail("server", &log));
        }
        ensure!(
            start.elapsed() < Duration::from_secs(20),
            "serve --http 127.0.0.1:0 logged no listening address\n{}",
            log_tail("server", &log)
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let gw = serve.listening(addr)?;
    gw.expect(&format!("/ipfs/{cid}"), &[], 200)?;
    Ok(())
}

#[test]
fn config_default_is_the_example_file() -> Result<()> {
    let repo = Repo::new()?;
    let printed: toml::Value =
        toml::from_str(&repo.run(["config", "default"])?).context("config default is not TOML")?;
    let example = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/meshcast.example.toml"
    ))?;
    let example: toml::Value = toml::from_str(&example)?;
    assert_eq!(printed, example);
    Ok(())
}

#[test]
fn the_bound_rtmp_address_is_written_beside_api() -> Result<()> {
    let repo = Repo::new()?;
    let mut gw = Gateway::start(&repo, &["--rtmp", "127.0.0.1:0"])?;
    let file = repo.path().join("rtmp");
    // `rtmp_addr` reads the file.
    let addr = rtmp_addr(&gw)?;
    ensure!(
        std::fs::read_to_string(&file)? == format!("{addr}\n"),
        "{} holds one address a line",
        file.display()
    );
    ensure!(
        addr.ip() == std::net::Ipv4Addr::LOCALHOST && addr.port() != 0,
        "{addr} is not the bound loopback address"
    );
    // The address the RTMP server itself reports, and it takes connections.
    let reported = format!("addr={addr}");
    gw.wait_log_line(
        |l| l.contains("RTMP ingest listening") && l.contains(&reported),
        Duration::from_secs(10),
    )
    .with_context(|| format!("the RTMP server did not report listening on {addr}"))?;
    std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(5))
        .with_context(|| format!("connect to the RTMP address {addr}"))?;
    // A clean stop removes it with `api`.
    let status = gw.stop()?;
    ensure!(status.success(), "serve stopped with {status}");
    ensure!(!file.exists(), "{} outlives the node", file.display());
    ensure!(!repo.path().join("api").exists(), "api outlives the node");
    Ok(())
}

#[test]
fn gateway_sandboxes_store_content_and_clamps_huge_ranges() -> Result<()> {
    let repo = Repo::new()?;
    let tmp = tempdir()?;
    let page = tmp.path().join("page");
    let html = b"<!DOCTYPE html><script>fetch('/api/v1/streams')</script>";
    write(&page, html)?;
    let cid = repo.add([&page])?;
    let gw = Gateway::start(&repo, &[])?;

    // Typed as HTML by the query, on the node's own origin: the browser
    // must not run its script as the node's.
    let r = gw.expect(&format!("/ipfs/{cid}?filename=x.html"), &[], 200)?;
    ensure!(r.header("content-type") == Some("text/html; charset=utf-8"));
    ensure!(
        r.header("content-security-policy") == Some("sandbox"),
        "no sandbox: {:?}",
        r.headers
    );

    // A last position past u64 is still a last position past the end.
    let len = html.len();
    let r = gw.expect(
        &format!("/ipfs/{cid}"),
        &[("range", "bytes=0-18446744073709551616")],
        206,
    )?;
    ensure!(r.header("content-range") == Some(format!("bytes 0-{}/{len}", len - 1).as_str()));
    ensure!(r.body == html);
    let r = gw.expect(
        &format!("/ipfs/{cid}"),
        &[("range", "bytes=18446744073709551616-")],
        416,
    )?;
    ensure!(r.header("content-range") == Some(format!("bytes */{len}").as_str()));
    Ok(())
}
