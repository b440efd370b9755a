//! mDNS on a LAN: two `meshcast serve` with their defaults (mDNS on, no
//! `--peer`) in two network namespaces joined by a veth pair find each other
//! and connect. Each namespace also has a veth to the test's namespace, used
//! only to reach the gateway's API.

use crate::support::*;
use anyhow::{ensure, Context, Result};
use std::process::Command;
use std::time::Duration;

/// Namespaces and links made by the test, removed on drop.
struct Lan {
    names: Vec<String>,
}

fn ip(args: &[&str]) -> Result<()> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .context("run ip (Debian package iproute2)")?;
    check(&out, &format!("ip {}", args.join(" ")))
}

impl Lan {
    /// Namespaces `<tag>a` and `<tag>b`: LAN 10.94.0.0/24 between them,
    /// and 10.94.1.0/24 (a) and 10.94.2.0/24 (b) to the root namespace.
    fn up(tag: &str) -> Result<Self> {
        let (a, b) = (format!("{tag}a"), format!("{tag}b"));
        let lan = Self {
            names: vec![a.clone(), b.clone()],
        };
        ip(&["netns", "add", &a])?;
        ip(&["netns", "add", &b])?;
        ip(&[
            "link", "add", "lanA", "netns", &a, "type", "veth", "peer", "name", "lanB", "netns", &b,
        ])?;
        ip(&["-n", &a, "addr", "add", "10.94.0.1/24", "dev", "lanA"])?;
        ip(&["-n", &b, "addr", "add", "10.94.0.2/24", "dev", "lanB"])?;
        for (ns, dev, root_dev, net) in [
            (&a, "lanA", &format!("{tag}ma"), "1"),
            (&b, "lanB", &format!("{tag}mb"), "2"),
        ] {
            ip(&["-n", ns, "link", "set", dev, "up"])?;
            ip(&["-n", ns, "link", "set", "lo", "up"])?;
            ip(&[
                "link", "add", root_dev, "type", "veth", "peer", "name", "mgmt", "netns", ns,
            ])?;
            ip(&["addr", "add", &format!("10.94.{net}.1/24"), "dev", root_dev])?;
            ip(&["link", "set", root_dev, "up"])?;
            ip(&[
                "-n",
                ns,
                "addr",
                "add",
                &format!("10.94.{net}.2/24"),
                "dev",
                "mgmt",
            ])?;
            ip(&["-n", ns, "link", "set", "mgmt", "up"])?;
        }
        Ok(lan)
    }
}

impl Drop for Lan {
    fn drop(&mut self) {
        // Deleting a namespace deletes its veth ends, and so their peers.
        for n in &self.names {
            let _ = Command::new("ip").args(["netns", "del", n]).status();
        }
    }
}

#[test]
fn nodes_on_a_lan_find_each_other_with_mdns() -> Result<()> {
    let tag = format!("mc{}", std::process::id() % 100_000);
    let lan = Lan::up(&tag)?;
    let (repo_a, repo_b) = (Repo::new()?, Repo::new()?);
    let start = |repo: &Repo, ns: &str, mgmt: &str, lan_ip: &str| {
        Gateway::start_on(
            mgmt.parse()?,
            repo,
            // mDNS is on by default; only the listen address is chosen.
            &["--p2p", &format!("/ip4/{lan_ip}/tcp/0")],
            &["ip", "netns", "exec", ns],
        )
    };
    let a = start(&repo_a, &lan.names[0], "10.94.1.2", "10.94.0.1")?;
    let b = start(&repo_b, &lan.names[1], "10.94.2.2", "10.94.0.2")?;
    let id_b = node_info(&b)?["peer_id"].as_str().context("id")?.to_owned();
    let id_a = node_info(&a)?["peer_id"].as_str().context("id")?.to_owned();
    let seen = wait_peer(&a, &id_b, true, Duration::from_secs(20))?;
    ensure!(
        seen["addrs"].to_string().contains("10.94.0.2"),
        "A reached B on the LAN: {seen}"
    );
    wait_peer(&b, &id_a, true, Duration::from_secs(5))?;
    Ok(())
}
