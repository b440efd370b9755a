//! Streaming over a real Yggdrasil mesh: three network namespaces, each with
//! its own `yggdrasil` daemon (Debian package) and TUN, peered over veth
//! pairs that carry nothing but the peering.
//!
//! ```text
//!            root namespace (the test: HTTP to A and B, Chromium, the refused ffmpeg)
//!              | 10.93.1.0/24                  | 10.93.2.0/24      (veth, no ygg)
//!   A: yggdrasil, origin ==10.93.0.0/24== B: yggdrasil, mirror ==10.93.3.0/24== C: yggdrasil, ffmpeg
//!      200::/7 on ygg0, fc00::/8 on lo       200::/7 on ygg0                   200::/7 on ygg0
//! ```
//!
//! The origin listens for libp2p on `/ip6/::` only, so the mirror can reach
//! it only through its 200::/7 address, the one `--peer` names. ffmpeg in C
//! publishes to the origin's default RTMP listener (`[::]:1935`) at its
//! Yggdrasil address (routed C -> B -> A) and is let in by `rtmp.allow = ["200::/7"]`; ffmpeg in the root namespace,
//! coming over a veth's IPv4 address, is refused. Checks: the origin
//! announces its 200::/7 and fc00::/8 addresses, the mirror's connection to
//! the origin is over Yggdrasil, the mirror lists every segment the origin
//! lists a few seconds at most after it, and Chromium plays from the
//! mirror.

use crate::support::*;
use anyhow::{bail, ensure, Context, Result};
use std::collections::BTreeMap;
use std::ffi::OsString;
use std::net::{Ipv6Addr, SocketAddr};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use tempfile::TempDir;

const KEY: &str = "yggkey-0123456789";
const SECONDS: u32 = 24;
/// The port every daemon listens on for Yggdrasil peerings (each on its own
/// veth address).
const YGG_PORT: u16 = 12_345;
/// A cjdns-style address the origin holds besides its Yggdrasil one.
const CJDNS_ADDR: &str = "fc00::93";

/// Runs `args` (an iproute2 command line), which must succeed.
pub(crate) fn ip(args: &[&str]) -> Result<()> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .context("run ip (Debian package iproute2, installed by scripts/test)")?;
    ensure!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

/// `cmd` run inside network namespace `ns` by `ip netns exec`, which execs
/// it (so killing the child kills the command itself).
pub(crate) fn in_ns(ns: &str, cmd: &Command) -> Command {
    let mut wrapped = Command::new("ip");
    wrapped
        .args(["netns", "exec", ns])
        .arg(cmd.get_program())
        .args(cmd.get_args());
    wrapped
}

/// The namespaces, veth pairs and Yggdrasil daemons; on drop the daemons
/// are killed and the links and namespaces removed. The dashboard and
/// mesh tests build their pairs with it too.
pub(crate) struct Mesh {
    pub(crate) daemons: Vec<KillOnDrop>,
    namespaces: Vec<String>,
    root_links: Vec<String>,
    dir: TempDir,
}

impl Drop for Mesh {
    fn drop(&mut self) {
        self.daemons.clear();
        // A deleted namespace can outlive its name in the kernel, and with
        // it a veth whose address the next run wants: delete those first.
        for link in &self.root_links {
            let _ = Command::new("ip")
                .args(["link", "del", link])
                .stderr(Stdio::null())
                .status();
        }
        for ns in &self.namespaces {
            let _ = Command::new("ip")
                .args(["netns", "del", ns])
                .stderr(Stdio::null())
                .status();
        }
    }
}

impl Mesh {
    pub(crate) fn new() -> Result<Self> {
        ensure!(
            Path::new("/dev/net/tun").exists() || {
                let _ = std::fs::create_dir_all("/dev/net");
                Command::new("mknod")
                    .args(["/dev/net/tun", "c", "10", "200"])
                    .status()
                    .is_ok_and(|s| s.success())
            },
            "no /dev/net/tun, and mknod could not make it (Yggdrasil needs TUN; run as root)"
        );
        Ok(Self {
            daemons: Vec::new(),
            namespaces: Vec::new(),
            root_links: Vec::new(),
            dir: tempdir()?,
        })
    }

    pub(crate) fn namespace(&mut self, name: &str) -> Result<()> {
        ip(&["netns", "add", name])?;
        self.namespaces.push(name.to_owned());
        ip(&["-n", name, "link", "set", "lo", "up"])
    }

    /// A veth pair from `a` (a namespace, or the root one when `None`) to
    /// namespace `b`, with `a_addr` and `b_addr` (CIDR) on its ends.
    pub(crate) fn veth(
        &mut self,
        a: Option<&str>,
        a_addr: &str,
        b: &str,
        b_addr: &str,
    ) -> Result<()> {
        let tag = std::process::id() % 100_000;
        // Unique in this process: the tests that make meshes run at once.
        static VETHS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = VETHS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let (a_if, b_if) = (format!("ym{tag}a{n}"), format!("ym{tag}b{n}"));
        ip(&["link", "add", &a_if, "type", "veth", "peer", "name", &b_if])?;
        // Named now: removed on drop even if a step below fails.
        self.root_links.push(a_if.clone());
        ip(&["link", "set", &b_if, "netns", b])?;
        ip(&["-n", b, "addr", "add", b_addr, "dev", &b_if])?;
        ip(&["-n", b, "link", "set", &b_if, "up"])?;
        match a {
            Some(ns) => {
                ip(&["link", "set", &a_if, "netns", ns])?;
                ip(&["-n", ns, "addr", "add", a_addr, "dev", &a_if])?;
                ip(&["-n", ns, "link", "set", &a_if, "up"])
            }
            None => {
                ip(&["addr", "add", a_addr, "dev", &a_if])?;
                ip(&["link", "set", &a_if, "up"])
            }
        }
    }

    /// Starts `yggdrasil` in `ns`, listening for peerings on `listen` (an
    /// IPv4 address) when given and peering with `peers`; its address.
    /// An admin socket only at `admin` (its `AdminListen`: `unix:///path` or
    /// `tcp://127.0.0.1:PORT`, inside `ns`) when given, and
    /// no multicast discovery: the peerings are the veths the test made.
    pub(crate) fn yggdrasil(
        &mut self,
        ns: &str,
        listen: Option<&str>,
        peers: &[&str],
        admin: Option<&str>,
    ) -> Result<Ipv6Addr> {
        let out = Command::new("yggdrasil")
            .args(["-genconf", "-json"])
            .output()
            .context("run yggdrasil (Debian package yggdrasil, installed by scripts/test)")?;
        ensure!(out.status.success(), "yggdrasil -genconf failed");
        let mut conf: serde_json::Value = serde_json::from_slice(&out.stdout)?;
        let tcp = |a: &str| format!("tcp://{a}:{YGG_PORT}");
        conf["Listen"] = listen.map(tcp).into_iter().collect();
        conf["Peers"] = peers.iter().map(|a| tcp(a)).collect();
        conf["AdminListen"] = admin.unwrap_or("none").into();
        conf["MulticastInterfaces"] = serde_json::json!([]);
        conf["IfName"] = "ygg0".into();
        let file = self.dir.path().join(format!("{ns}.json"));
        write(&file, &serde_json::to_vec(&conf)?)?;
        let log = self.dir.path().join(format!("{ns}.log"));
        let mut cmd = Command::new("yggdrasil");
        cmd.arg("-useconffile").arg(&file).arg("-logto").arg(&log);
        let child = in_ns(ns, &cmd)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("start yggdrasil")?;
        self.daemons.push(KillOnDrop::new(child));
        let out = Command::new("yggdrasil")
            .arg("-useconffile")
            .arg(&file)
            .arg("-address")
            .output()?;
        let addr: Ipv6Addr = String::from_utf8(out.stdout)?
            .trim()
            .parse()
            .context("yggdrasil -address")?;
        // Up once its TUN holds the address.
        let start = Instant::now();
        loop {
            let shown = Command::new("ip")
                .args(["-n", ns, "-6", "addr", "show", "dev", "ygg0"])
                .output()?;
            if String::from_utf8_lossy(&shown.stdout).contains(&addr.to_string()) {
                return Ok(addr);
            }
            ensure!(
                start.elapsed() < Duration::from_secs(10),
                "yggdrasil in {ns} never brought up ygg0 with {addr}\n{}",
                log_tail("yggdrasil", &log)
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// Waits until a TCP connection from namespace `ns` to `addr` succeeds
/// (the mesh has found a route).
pub(crate) fn wait_reachable(ns: &str, addr: SocketAddr, timeout: Duration) -> Result<()> {
    let start = Instant::now();
    let probe = format!("exec 3<>/dev/tcp/{}/{}", addr.ip(), addr.port());
    loop {
        let mut bash = Command::new("timeout");
        bash.args(["3", "bash", "-c", &probe]);
        let ok = in_ns(ns, &bash).stderr(Stdio::null()).status()?.success();
        if ok {
            return Ok(());
        }
        ensure!(
            start.elapsed() < timeout,
            "{addr} unreachable from {ns} after {timeout:?}"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}

#[test]
fn a_mirror_follows_an_origin_over_yggdrasil() -> Result<()> {
    let clip = clip(SECONDS)?;
    let tag = std::process::id() % 100_000;
    let (a, b, c) = (
        format!("mcygA{tag}"),
        format!("mcygB{tag}"),
        format!("mcygC{tag}"),
    );
    let mut mesh = Mesh::new()?;
    for ns in [&a, &b, &c] {
        mesh.namespace(ns)?;
    }
    mesh.veth(Some(&a), "10.93.0.1/24", &b, "10.93.0.2/24")?;
    mesh.veth(Some(&b), "10.93.3.1/24", &c, "10.93.3.2/24")?;
    mesh.veth(None, "10.93.1.1/24", &a, "10.93.1.2/24")?;
    mesh.veth(None, "10.93.2.1/24", &b, "10.93.2.2/24")?;
    // What a cjdns TUN would hold.
    ip(&[
        "-n",
        &a,
        "addr",
        "add",
        &format!("{CJDNS_ADDR}/8"),
        "dev",
        "lo",
        "nodad",
    ])?;
    let ygg_a = mesh.yggdrasil(&a, Some("10.93.0.1"), &[], None)?;
    let ygg_b = mesh.yggdrasil(&b, Some("10.93.3.1"), &["10.93.0.1"], None)?;
    let ygg_c = mesh.yggdrasil(&c, None, &["10.93.3.1"], None)?;
    eprintln!("yggdrasil: origin {ygg_a}, mirror {ygg_b}, publisher {ygg_c}");

    let dir = tempdir()?;
    let config = dir.path().join("meshcast.toml");
    // Ingest on its default address (every one, port 1935: the namespace
    // is the test's alone), open to Yggdrasil only.
    write(&config, b"[rtmp]\nallow = [\"200::/7\"]\n")?;
    let origin_repo = Repo::new()?;
    let p2p_port = free_port()?;
    let netns_a = ["ip", "netns", "exec", a.as_str()];
    let origin = Gateway::start_on(
        "10.93.1.2".parse()?,
        &origin_repo,
        &[
            "--config",
            config.to_str().context("UTF-8 path")?,
            "--stream",
            &format!("cam={KEY}"),
            "--p2p",
            &format!("/ip6/::/tcp/{p2p_port}"),
            "--no-mdns",
        ],
        &netns_a,
    )?;
    let info = node_info(&origin)?;
    let origin_id = info["peer_id"].as_str().context("peer id")?.to_owned();
    let ygg_peer = format!("/ip6/{ygg_a}/tcp/{p2p_port}/p2p/{origin_id}");
    let cjdns_peer = format!("/ip6/{CJDNS_ADDR}/tcp/{p2p_port}/p2p/{origin_id}");
    let announced: Vec<&str> = info["addrs"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(serde_json::Value::as_str)
        .collect();
    ensure!(
        announced.contains(&ygg_peer.as_str()) && announced.contains(&cjdns_peer.as_str()),
        "the origin announces {announced:?}, not {ygg_peer} and {cjdns_peer}"
    );
    let name = ipns_name(&origin, "cam")?;

    let mirror_repo = Repo::new()?;
    let netns_b = ["ip", "netns", "exec", b.as_str()];
    // HTTP on every address (the mesh's too), reached from here over the
    // veth's IPv4 address.
    let mirror = Gateway::start_at("10.93.2.2".parse()?, &mirror_repo, &netns_b, |addr| {
        let args = [
            "--http".to_owned(),
            format!("[::]:{}", addr.port()),
            "--peer".to_owned(),
            ygg_peer.clone(),
            "--follow".to_owned(),
            name.clone(),
            "--p2p".to_owned(),
            "/ip6/::/tcp/0".to_owned(),
            "--no-mdns".to_owned(),
        ];
        Ok(args.into_iter().map(OsString::from).collect())
    })?;
    let seen = wait_peer(&mirror, &origin_id, true, Duration::from_secs(20))?;
    ensure!(
        seen["addrs"].as_array().into_iter().flatten().all(|a| a
            .as_str()
            .is_some_and(|a| a.starts_with(&format!("/ip6/{ygg_a}/")))),
        "the mirror reaches the origin other than through Yggdrasil: {seen}"
    );

    let rtmp_port = rtmp_addr(&origin)?.port();

    // Outside the allowlist: the root namespace, over a veth's IPv4 address.
    let refused = publish_cmd(
        SocketAddr::from(([10, 93, 1, 2], rtmp_port)),
        KEY,
        &clip,
        false,
    )
    .stderr(Stdio::null())
    .status()?;
    ensure!(!refused.success(), "a publisher outside rtmp.allow got in");
    origin.wait_log_line(
        |l| l.contains("not in rtmp.allow") && l.contains("10.93.1.1"),
        Duration::from_secs(5),
    )?;

    let origin_rtmp = SocketAddr::from((ygg_a, rtmp_port));
    wait_reachable(&c, origin_rtmp, Duration::from_secs(20))?;
    let mut publisher = KillOnDrop::new(
        in_ns(&c, &publish_cmd(origin_rtmp, KEY, &clip, true))
            .spawn()
            .context("start ffmpeg")?,
    );
    wait_live_segments(&mirror, "cam", 2, Duration::from_secs(20))?;
    let watch = format!("{}/watch/cam", mirror.base);
    let player = std::thread::spawn(move || play(&watch));

    let (mut at_origin, mut at_mirror) = (BTreeMap::new(), BTreeMap::new());
    let deadline = Instant::now() + Duration::from_secs(u64::from(SECONDS) + 30);
    loop {
        note_segments(&origin, &mut at_origin)?;
        note_segments(&mirror, &mut at_mirror)?;
        let published = publisher.try_wait()?.is_some();
        if published && !at_origin.is_empty() && at_origin.keys().all(|s| at_mirror.contains_key(s))
        {
            break;
        }
        if Instant::now() > deadline {
            bail!(
                "the mirror fell behind: origin has {:?}, mirror {:?}\n{}",
                at_origin.keys().collect::<Vec<_>>(),
                at_mirror.keys().collect::<Vec<_>>(),
                mirror.log_tail()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let status = publisher.wait()?;
    ensure!(
        status.success(),
        "ffmpeg publishing over Yggdrasil: {status}"
    );
    match player.join() {
        Ok(played) => {
            played?;
        }
        Err(_) => bail!("the player thread panicked"),
    }

    // Keeping up: the mirror lists each segment a few seconds at most after
    // the origin does (segments are 2 s; the first ones include connecting).
    let lags: Vec<f64> = at_origin
        .iter()
        .filter_map(|(s, t)| {
            at_mirror
                .get(s)
                .map(|m| m.saturating_duration_since(*t).as_secs_f64())
        })
        .collect();
    eprintln!("mirror lag per segment over yggdrasil: {lags:?}");
    ensure!(
        lags.len() >= (SECONDS as usize) / 3,
        "too few segments: {lags:?}"
    );
    let tail: f64 = lags[lags.len() - 3..].iter().sum::<f64>() / 3.0;
    ensure!(tail < 4.0, "the mirror lags behind: {lags:?}");

    drop((mirror, origin));
    drop(mesh);
    Ok(())
}
