//! `@helia/verified-fetch`, the library web apps fetch IPFS content with,
//! against meshcast (`tests/interop/verified-fetch.mjs`), each fetch bounded
//! in time, the bytes compared with the file added:
//!
//! - an HTTP-only Helia with meshcast as its delegated router and its
//!   trustless gateway;
//! - an HTTP-only Helia with meshcast as its delegated router only: the
//!   gateway it fetches from comes from meshcast's provider records
//!   (`transport-ipfs-gateway-http`), over HTTP, each block verified;
//! - `createVerifiedFetch` configured as the README says (meshcast as gateway
//!   and router), with its libp2p node and no other peer: it used to wait
//!   on its libp2p routing forever, since the gateways it is given are only
//!   tried after every other router has finished, and a DHT with no peers
//!   does not finish. The provider record names the gateway at once.

use crate::support::*;
use anyhow::{ensure, Context, Result};
use serde_json::Value;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

/// How long one fetch may take before it counts as never returning.
const FETCH_TIMEOUT: Duration = Duration::from_secs(60);

/// Runs `verified-fetch.mjs --setup SETUP` for `cid` from `gw`, killing it
/// after [`FETCH_TIMEOUT`]; its report and the bytes it fetched.
fn verified_fetch(setup: &str, gw: &Gateway, cid: &str, out: &Path) -> Result<(Value, Vec<u8>)> {
    let mut cmd = nodejs();
    cmd.arg(interop_dir().join("verified-fetch.mjs"))
        .args(["--setup", setup, "--url", &gw.base, "--cid", cid, "--out"])
        .arg(out)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = KillOnDrop::new(cmd.spawn().context("run verified-fetch.mjs")?);
    let start = Instant::now();
    while child.try_wait()?.is_none() {
        ensure!(
            start.elapsed() < FETCH_TIMEOUT,
            "verified-fetch ({setup}) did not return within {FETCH_TIMEOUT:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let output = child.wait_with_output()?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let report: Value = serde_json::from_str(stdout.lines().last().unwrap_or_default())
        .with_context(|| {
            format!(
                "verified-fetch ({setup}) printed {stdout:?}; stderr: {}",
                String::from_utf8_lossy(&output.stderr)
            )
        })?;
    ensure!(report["ok"] == true, "verified-fetch ({setup}): {report}");
    eprintln!(
        "verified-fetch ({setup}) in {:?}: {report}",
        start.elapsed()
    );
    Ok((report, std::fs::read(out)?))
}

#[test]
fn verified_fetch_gets_and_checks_content_from_meshcast_over_http() -> Result<()> {
    let repo = Repo::new()?;
    let gw = Gateway::start(&repo, &[])?;
    let dir = tempdir()?;
    // Several blocks, so the DAG is walked and each block checked.
    let file = dir.path().join("content.bin");
    write_random_file(&file, 84, 1_500_000)?;
    let cid = repo.add([&file])?;
    let want = std::fs::read(&file)?;
    let port = gw.base.rsplit(':').next().context("port")?;
    let gateway = format!("/ip4/127.0.0.1/tcp/{port}/http");

    // The gateway record: asked for by its transport name (IPIP-484).
    let r = gw.expect(
        &format!("/routing/v1/providers/{cid}?filter-protocols=transport-ipfs-gateway-http"),
        &[],
        200,
    )?;
    let v: Value = serde_json::from_slice(&r.body)?;
    let providers = v["Providers"].as_array().context("Providers")?;
    ensure!(
        providers.len() == 1
            && providers[0]["Protocols"][0] == "transport-ipfs-gateway-http"
            && providers[0]["Addrs"][0] == gateway.as_str()
            && providers[0]["ID"] == node_info(&gw)?["peer_id"],
        "{v}"
    );

    for setup in ["http-both", "http-router", "default"] {
        let out = dir.path().join(format!("{setup}.out"));
        let (report, got) = verified_fetch(setup, &gw, &cid, &out)?;
        ensure!(report["status"] == 200, "{setup}: {report}");
        ensure!(
            got == want,
            "{setup}: other bytes ({} of {})",
            got.len(),
            want.len()
        );
        if setup == "http-router" {
            // No gateway configured and no libp2p: the record led it to
            // meshcast's gateway.
            ensure!(
                report["http"] == serde_json::json!([gateway])
                    && report["http_blocks"].as_u64() > Some(0),
                "{report}"
            );
        }
    }
    Ok(())
}
