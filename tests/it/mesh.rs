//! Mesh links (`GET /api/v1/mesh`) read from the real daemons' admin
//! interfaces.
//!
//! Yggdrasil: two `yggdrasil` daemons (Debian package), each in a network
//! namespace with its TUN and an admin socket, peered over a veth; a
//! meshcast beside each, the second dialling the first by its Yggdrasil
//! address. The origin's API shows the peering (address, key, remote,
//! bytes), the mirror's libp2p peer id behind it, bytes moving when the
//! mirror fetches a file over the link, and the daemon gone once it is
//! killed (logged once).
//!
//! cjdns is not packaged for Debian: `tests/interop/cjdns-admin.py` answers
//! as cjdroute's admin interface does (bencode over UDP, cookie and
//! password hash, peer stats six to a page, `Core_nodeInfo`), with peers of
//! real cjdns keys.

use crate::support::*;
use crate::yggdrasil::Mesh;
use anyhow::{bail, ensure, Context, Result};
use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::net::Ipv6Addr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// `g`'s mesh snapshot.
fn mesh_json(g: &Gateway) -> Result<Value> {
    let text = get_text(g, "/api/v1/mesh")?;
    serde_json::from_str(&text).with_context(|| format!("/api/v1/mesh: {text}"))
}

/// Polls `g`'s mesh snapshot until `done` accepts one (returned).
fn wait_mesh(g: &Gateway, timeout: Duration, done: impl Fn(&Value) -> bool) -> Result<Value> {
    let start = Instant::now();
    loop {
        let m = mesh_json(g)?;
        if done(&m) {
            return Ok(m);
        }
        if start.elapsed() > timeout {
            bail!(
                "/api/v1/mesh never as wanted after {timeout:?}: {m:#}\n{}",
                g.log_tail()
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The link of `m` whose mesh address is `addr`.
fn link_to<'a>(m: &'a Value, kind: &str, addr: Ipv6Addr) -> Option<&'a Value> {
    m["links"].as_array()?.iter().find(|l| {
        l["kind"] == kind
            && l["address"]
                .as_str()
                .and_then(|a| a.parse::<Ipv6Addr>().ok())
                == Some(addr)
    })
}

fn count(v: &Value) -> u64 {
    v.as_u64().unwrap_or(0)
}

/// The mesh config a test node uses: fast polls, only the daemons named.
fn mesh_toml(yggdrasil: &str, cjdns: &str, password: &str) -> String {
    format!(
        "[mesh]\nyggdrasil_admin = \"{yggdrasil}\"\ncjdns_admin = \"{cjdns}\"\n\
         cjdns_password = \"{password}\"\npoll_interval = \"500ms\"\ntimeout = \"1s\"\n"
    )
}

#[test]
fn yggdrasil_links_show_their_peers_and_traffic() -> Result<()> {
    let tag = std::process::id() % 100_000;
    let (a, b) = (format!("mcmsA{tag}"), format!("mcmsB{tag}"));
    let mut mesh = Mesh::new()?;
    mesh.namespace(&a)?;
    mesh.namespace(&b)?;
    mesh.veth(Some(&a), "10.95.0.1/24", &b, "10.95.0.2/24")?;
    mesh.veth(None, "10.95.1.1/24", &a, "10.95.1.2/24")?;
    mesh.veth(None, "10.95.2.1/24", &b, "10.95.2.2/24")?;
    // A's daemon answers on a Unix socket, B's on TCP (inside B's
    // namespace): both endpoint kinds against a real daemon.
    let sockets = tempdir()?;
    let admin_a = format!("unix://{}", sockets.path().join("a.sock").display());
    let admin_b = format!("tcp://127.0.0.1:{}", free_port()?);
    let ygg_a = mesh.yggdrasil(&a, Some("10.95.0.1"), &[], Some(&admin_a))?;
    let ygg_b = mesh.yggdrasil(&b, None, &["10.95.0.1"], Some(&admin_b))?;

    let dir = tempdir()?;
    let config = |name: &str, admin: &str| -> Result<String> {
        let path = dir.path().join(name);
        let toml = mesh_toml(admin, "", "");
        write(&path, toml.as_bytes())?;
        Ok(path.to_str().context("UTF-8 path")?.to_owned())
    };
    let (config_a, config_b) = (config("a.toml", &admin_a)?, config("b.toml", &admin_b)?);
    let origin_repo = Repo::new()?;
    let p2p_port = free_port()?;
    let origin = Gateway::start_on(
        "10.95.1.2".parse()?,
        &origin_repo,
        &[
            "--config",
            &config_a,
            "--rtmp",
            "127.0.0.1:0",
            "--p2p",
            &format!("/ip6/::/tcp/{p2p_port}"),
            "--no-mdns",
        ],
        &["ip", "netns", "exec", a.as_str()],
    )?;
    let origin_id = node_info(&origin)?["peer_id"]
        .as_str()
        .context("peer id")?
        .to_owned();
    let mirror_repo = Repo::new()?;
    let mirror = Gateway::start_on(
        "10.95.2.2".parse()?,
        &mirror_repo,
        &[
            "--config",
            &config_b,
            "--rtmp",
            "127.0.0.1:0",
            "--p2p",
            "/ip6/::/tcp/0",
            "--no-mdns",
            "--peer",
            &format!("/ip6/{ygg_a}/tcp/{p2p_port}/p2p/{origin_id}"),
        ],
        &["ip", "netns", "exec", b.as_str()],
    )?;
    let mirror_id = node_info(&mirror)?["peer_id"]
        .as_str()
        .context("peer id")?
        .to_owned();
    wait_peer(&mirror, &origin_id, true, Duration::from_secs(20))?;

    // The origin sees its peering with the mirror's daemon, and the mirror
    // behind it, reached at that daemon's address.
    let m = wait_mesh(&origin, Duration::from_secs(20), |m| {
        link_to(m, "yggdrasil", ygg_b).is_some_and(|l| {
            l["peers"]
                .as_array()
                .is_some_and(|p| p.iter().any(|p| p["peer_id"] == mirror_id.as_str()))
        })
    })?;
    ensure!(m["daemons"]["yggdrasil"]["state"] == "up", "{m:#}");
    ensure!(m["daemons"]["cjdns"]["state"] == "off", "{m:#}");
    ensure!(
        m["self"]["yggdrasil"]["address"]
            .as_str()
            .and_then(|a| a.parse().ok())
            == Some(ygg_a),
        "self is not {ygg_a}: {m:#}"
    );
    let link = link_to(&m, "yggdrasil", ygg_b).context("link")?;
    ensure!(link["state"] == "up", "{link:#}");
    ensure!(
        link["remote"]
            .as_str()
            .is_some_and(|r| r.contains("10.95.0.2")),
        "{link:#}"
    );
    ensure!(
        link["key"].as_str().is_some_and(|k| k.len() == 64),
        "{link:#}"
    );
    ensure!(
        link["uptime_s"].as_f64().is_some_and(|u| u > 0.0),
        "{link:#}"
    );
    let behind = &link["peers"][0];
    ensure!(behind["by"] == "address", "{behind}");
    ensure!(
        behind["addr"]
            .as_str()
            .is_some_and(|a| a.starts_with(&format!("/ip6/{ygg_b}/"))),
        "{behind}"
    );
    let (in_before, out_before) = (count(&link["bytes_in"]), count(&link["bytes_out"]));

    // Traffic over the link: the mirror fetches 2 MiB from the origin by
    // Bitswap, and the origin's link counts them going out.
    let file = dir.path().join("payload");
    let payload: Vec<u8> = (0..2u32 << 20)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    write(&file, &payload)?;
    let cid = one_cid(&origin_repo.add([file.as_os_str()])?)?;
    let got = mirror.expect(&format!("/ipfs/{cid}"), &[], 200)?;
    ensure!(got.body == payload, "the mirror fetched other bytes");
    let m = wait_mesh(&origin, Duration::from_secs(10), |m| {
        link_to(m, "yggdrasil", ygg_b)
            .is_some_and(|l| count(&l["bytes_out"]) >= out_before + (2 << 20))
    })?;
    let link = link_to(&m, "yggdrasil", ygg_b).context("link")?;
    ensure!(count(&link["bytes_in"]) > in_before, "{link:#}");
    ensure!(link["rate_out"].as_u64().is_some(), "no rate: {link:#}");
    let theirs = wait_mesh(&mirror, Duration::from_secs(10), |m| {
        link_to(m, "yggdrasil", ygg_a).is_some_and(|l| count(&l["bytes_in"]) >= 2 << 20)
    })?;
    ensure!(
        theirs["daemons"]["yggdrasil"]["state"] == "up"
            && theirs["daemons"]["yggdrasil"]["endpoint"] == admin_b.as_str(),
        "{theirs:#}"
    );
    ensure!(
        theirs["self"]["yggdrasil"]["address"]
            .as_str()
            .and_then(|a| a.parse().ok())
            == Some(ygg_b),
        "the mirror (tcp:// admin) is not {ygg_b}: {theirs:#}"
    );

    // The origin's daemon goes away: shown as absent, said once.
    mesh.daemons.remove(0);
    let m = wait_mesh(&origin, Duration::from_secs(10), |m| {
        m["daemons"]["yggdrasil"]["state"] == "absent"
    })?;
    ensure!(
        m["links"].as_array().is_some_and(Vec::is_empty),
        "links of a daemon gone: {m:#}"
    );
    std::thread::sleep(Duration::from_secs(2));
    let log = std::fs::read_to_string(&origin.log)?;
    let gone = log
        .lines()
        .filter(|l| l.contains("mesh daemon gone"))
        .count();
    ensure!(
        gone == 1,
        "the daemon's absence was logged {gone} times:\n{log}"
    );
    drop((mirror, origin));
    drop(mesh);
    Ok(())
}

/// `tests/interop/cjdns-admin.py` with `peers` peers (and `password`): its
/// port, each peer's (addr, IPv6 address) and its own.
struct Cjdroute {
    child: KillOnDrop,
    port: u16,
    peers: Vec<(String, Ipv6Addr)>,
    me: (String, Ipv6Addr),
}

impl Cjdroute {
    fn start(peers: usize, password: Option<&str>) -> Result<Self> {
        let mut cmd =
            Command::new(std::env::var("MESHCAST_PYTHON").unwrap_or_else(|_| "python3".into()));
        cmd.arg(interop_dir().join("cjdns-admin.py"))
            .arg(peers.to_string())
            .args(password)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = KillOnDrop::new(cmd.spawn().context("start python3 cjdns-admin.py")?);
        let mut found = Vec::new();
        let mut me = None;
        let err = BufReader::new(child.stderr.take().context("stderr")?);
        for line in err.lines().take(peers + 1) {
            let line = line?;
            let mut parts = line.split_whitespace();
            let (what, addr, ip) = (parts.next(), parts.next(), parts.next());
            let entry = (addr.context("addr")?.to_owned(), ip.context("ip")?.parse()?);
            match what {
                Some("peer") => found.push(entry),
                Some("self") => me = Some(entry),
                _ => bail!("cjdns-admin.py said {line:?}"),
            }
        }
        let mut port = String::new();
        BufReader::new(child.stdout.take().context("stdout")?).read_line(&mut port)?;
        Ok(Self {
            child,
            port: port
                .trim()
                .parse()
                .with_context(|| format!("port {port:?}"))?,
            peers: found,
            me: me.context("cjdns-admin.py named no self")?,
        })
    }
}

#[test]
fn cjdns_peer_stats_are_read_page_by_page() -> Result<()> {
    // Eight peers: two pages. The daemon wants a password for peer stats,
    // so the node falls back from the plain call to the cookie handshake.
    let mut cjdroute = Cjdroute::start(8, Some("s3cret-admin"))?;
    let endpoint = format!("127.0.0.1:{}", cjdroute.port);
    let repo = Repo::new()?;
    let node = Gateway::start_config(
        &repo,
        &format!(
            "{LOOPBACK_RTMP}{LOOPBACK_P2P}{}",
            mesh_toml("", &endpoint, "s3cret-admin")
        ),
    )?;
    let m = wait_mesh(&node, Duration::from_secs(10), |m| {
        m["links"].as_array().is_some_and(|l| l.len() == 8)
    })?;
    ensure!(m["daemons"]["cjdns"]["state"] == "up", "{m:#}");
    ensure!(m["daemons"]["yggdrasil"]["state"] == "off", "{m:#}");
    // This node as Core_nodeInfo describes it (no password needed).
    let me = &m["self"]["cjdns"];
    ensure!(me["addr"] == cjdroute.me.0.as_str(), "{m:#}");
    ensure!(
        me["address"]
            .as_str()
            .and_then(|a| a.parse::<Ipv6Addr>().ok())
            == Some(cjdroute.me.1),
        "self is not {}: {m:#}",
        cjdroute.me.1
    );
    ensure!(
        me["key"]
            .as_str()
            .is_some_and(|k| cjdroute.me.0.ends_with(k))
            && me["version"] == 21,
        "{m:#}"
    );
    for (i, (addr, ip)) in cjdroute.peers.iter().enumerate() {
        let link = link_to(&m, "cjdns", *ip).with_context(|| format!("no link to {ip}: {m:#}"))?;
        ensure!(link["cjdns_addr"] == addr.as_str(), "{link:#}");
        ensure!(link["state"] == "ESTABLISHED", "{link:#}");
        ensure!(
            link["remote"] == format!("10.66.0.{}:11234", i + 2),
            "{link:#}"
        );
        ensure!(link["inbound"] == (i % 2 == 1), "{link:#}");
        ensure!(
            link["rate_in"] == 100_000 && link["rate_out"] == 60_000,
            "{link:#}"
        );
        let loss = link["loss"].as_f64().context("loss")?;
        let want = if i == 0 { 0.05 } else { 0.0 };
        ensure!(
            (loss - want).abs() < 0.002,
            "loss {loss}, not {want}: {link:#}"
        );
        ensure!(link["packets"]["received"].as_u64().is_some(), "{link:#}");
    }
    // Bytes move from poll to poll.
    let first = count(&link_to(&m, "cjdns", cjdroute.peers[0].1).context("link")?["bytes_in"]);
    wait_mesh(&node, Duration::from_secs(5), |m| {
        link_to(m, "cjdns", cjdroute.peers[0].1).is_some_and(|l| count(&l["bytes_in"]) > first)
    })?;

    // Without the password the daemon refuses, and says why.
    let repo2 = Repo::new()?;
    let home = tempdir()?;
    let toml = format!(
        "{LOOPBACK_RTMP}{LOOPBACK_P2P}{}",
        mesh_toml("", &endpoint, "")
    );
    let config = home.path().join("meshcast.toml");
    write(&config, toml.as_bytes())?;
    let refused = Gateway::start_wrapped(
        &repo2,
        &["--config", config.to_str().context("UTF-8 path")?],
        &["env", &format!("HOME={}", home.path().display())],
    )?;
    let m = wait_mesh(&refused, Duration::from_secs(10), |m| {
        m["daemons"]["cjdns"]["state"] == "failing"
    })?;
    ensure!(
        m["daemons"]["cjdns"]["error"]
            .as_str()
            .is_some_and(|e| e.contains("Auth failed") && e.contains("cjdns_password")),
        "{m:#}"
    );
    // The password in ~/.cjdnsadmin, as cjdns' tools keep it, is used.
    write(
        &home.path().join(".cjdnsadmin"),
        format!(
            r#"{{"addr": "127.0.0.1", "port": {}, "password": "s3cret-admin"}}"#,
            cjdroute.port
        )
        .as_bytes(),
    )?;
    wait_mesh(&refused, Duration::from_secs(10), |m| {
        m["daemons"]["cjdns"]["state"] == "up"
            && m["links"].as_array().is_some_and(|l| l.len() == 8)
    })?;

    // The daemon goes away.
    cjdroute.child.kill()?;
    let m = wait_mesh(&node, Duration::from_secs(10), |m| {
        m["daemons"]["cjdns"]["state"] == "absent"
    })?;
    ensure!(m["links"].as_array().is_some_and(Vec::is_empty), "{m:#}");
    ensure!(m["self"]["cjdns"].is_null(), "{m:#}");
    Ok(())
}
