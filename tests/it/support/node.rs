//! A running `meshcast serve`, the one fixture every test that needs a node
//! starts it with, and what its API answers.
//!
//! ```text
//! Gateway::start(repo, args)
//!   -> Spawned::new: serve --http IP:<free port> [--rtmp 127.0.0.1:0]
//!        [--p2p /ip4/127.0.0.1/tcp/0 --no-mdns] ARGS, stdout+stderr to a log
//!   -> Spawned::listening: the gateway accepts (another port if it lost
//!      the race for this one)
//!   -> base, rtmp_addr (<data>/rtmp), tcp_addr (GET /api/v1/node), log
//!   -> stop (SIGTERM, a clean shutdown) or drop (SIGKILL)
//! ```
//!
//! Unless the arguments say otherwise, ingest and the libp2p node listen
//! on free loopback ports with mDNS off, so concurrent tests never meet.

use super::{log_tail, tempdir, write, KillOnDrop, Repo};
use anyhow::{bail, ensure, Context, Result};
use serde_json::Value;
use std::ffi::{OsStr, OsString};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus};
use std::time::{Duration, Instant};
use tempfile::TempDir;

/// The `[rtmp]` section tests with their own config file use: a free
/// loopback port.
pub const LOOPBACK_RTMP: &str = "[rtmp]\nlisten = \"127.0.0.1:0\"\n";

/// The `[p2p]` section tests with their own config file use: a free
/// loopback port, no mDNS.
pub const LOOPBACK_P2P: &str = "[p2p]\nlisten = [\"/ip4/127.0.0.1/tcp/0\"]\nmdns = false\n";

/// A port on 127.0.0.1 that was free a moment ago.
pub fn free_port() -> Result<u16> {
    let l = TcpListener::bind("127.0.0.1:0").context("bind a free port")?;
    Ok(l.local_addr()?.port())
}

/// Waits until something accepts TCP connections on `addr`, or `child` exits.
fn wait_for_port(addr: SocketAddr, child: &mut Child, timeout: Duration) -> Result<()> {
    let start = Instant::now();
    loop {
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return Ok(());
        }
        if let Some(status) = child.try_wait()? {
            bail!("server exited with {status} before listening on {addr}");
        }
        ensure!(
            start.elapsed() < timeout,
            "nothing listens on {addr} after {timeout:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// libfaketime (Debian package faketime), to preload.
fn libfaketime() -> Result<PathBuf> {
    [
        "/usr/lib/x86_64-linux-gnu/faketime",
        "/usr/lib/aarch64-linux-gnu/faketime",
        "/usr/lib/faketime",
    ]
    .iter()
    .map(|d| Path::new(d).join("libfaketime.so.1"))
    .find(|p| p.exists())
    .context("libfaketime.so.1 is missing: install the Debian package faketime (scripts/test does)")
}

/// A `meshcast serve` just started, not yet known to listen.
pub struct Spawned {
    child: KillOnDrop,
    /// Its log file: stdout and stderr.
    pub log: PathBuf,
    data: PathBuf,
    logdir: TempDir,
}

impl Spawned {
    /// Starts `meshcast serve` on `repo` with `args`, run by `wrapper` (a
    /// command and its arguments, e.g. `faketime -f -3d` or `ip netns exec
    /// NS`; none when empty), stdout and stderr to a log file in a new
    /// directory. Unless `args` name an RTMP address (or a config file),
    /// ingest listens on a free loopback port, never the shared 1935;
    /// likewise the libp2p node listens on a free loopback TCP port and
    /// mDNS is off.
    pub fn new(repo: &Repo, args: &[&OsStr], wrapper: &[&str]) -> Result<Self> {
        let logdir = tempdir()?;
        let log = logdir.path().join("serve.log");
        let out = std::fs::File::create(&log)?;
        // What an earlier node on this repo left when it was killed is not
        // this one's address.
        let rtmp_file = repo.path().join(meshcast::node::RTMP_FILE);
        match std::fs::remove_file(&rtmp_file) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(e).with_context(|| format!("remove {}", rtmp_file.display()))
            }
            _ => {}
        }
        let own_rtmp = args.iter().any(|a| *a == "--rtmp" || *a == "--config");
        let mut defaults: Vec<&str> = if own_rtmp {
            Vec::new()
        } else {
            vec!["--rtmp", "127.0.0.1:0"]
        };
        let own_p2p = args
            .iter()
            .any(|a| *a == "--p2p" || *a == "--config" || *a == "--no-p2p");
        if !own_p2p {
            defaults.extend(["--p2p", "/ip4/127.0.0.1/tcp/0", "--no-mdns"]);
        }
        let mut cmd = repo.cmd(["serve"]);
        match wrapper {
            // `faketime OFFSET`: libfaketime preloaded into the server itself
            // (the faketime program forks, and killing it would leave the
            // server running). Monotonic time is left alone so timers behave.
            ["faketime", "-f", offset] => {
                cmd.env("LD_PRELOAD", libfaketime()?)
                    .env("FAKETIME", offset)
                    .env("FAKETIME_DONT_FAKE_MONOTONIC", "1");
            }
            [prog, wargs @ ..] => {
                // The same command, run by a wrapper that execs it (e.g. `ip
                // netns exec`), so killing the child kills the server.
                let inner = cmd;
                cmd = Command::new(prog);
                cmd.args(wargs)
                    .arg(inner.get_program())
                    .args(inner.get_args());
                for (k, v) in inner.get_envs() {
                    match v {
                        Some(v) => cmd.env(k, v),
                        None => cmd.env_remove(k),
                    };
                }
            }
            [] => {}
        }
        let child = cmd
            .args(defaults)
            .args(args)
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()
            .context("start meshcast serve")?;
        Ok(Self {
            child: KillOnDrop::new(child),
            log,
            data: repo.path(),
            logdir,
        })
    }

    /// Its exit status, if it has exited.
    pub fn exited(&mut self) -> Result<Option<ExitStatus>> {
        Ok(self.child.try_wait()?)
    }

    /// Waits until its gateway accepts connections on `addr`.
    pub fn listening(mut self, addr: SocketAddr) -> Result<Gateway> {
        wait_for_port(addr, &mut self.child, Duration::from_secs(20))
            .with_context(|| log_tail("server", &self.log))?;
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .max_redirects(0)
            .timeout_global(Some(Duration::from_secs(60)))
            .build()
            .into();
        Ok(Gateway {
            child: self.child,
            base: format!("http://{addr}"),
            agent,
            log: self.log,
            data: self.data,
            _dirs: vec![self.logdir],
        })
    }
}

/// A running `meshcast serve`, killed on drop.
pub struct Gateway {
    child: KillOnDrop,
    /// `http://IP:PORT`.
    pub base: String,
    agent: ureq::Agent,
    /// The server's log file.
    pub log: PathBuf,
    data: PathBuf,
    _dirs: Vec<TempDir>,
}

/// A response: status, headers, whole body.
pub struct Reply {
    pub status: u16,
    pub headers: http::HeaderMap,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

impl Gateway {
    /// Starts `meshcast serve --data <repo> --http 127.0.0.1:<free port>`
    /// plus `extra` arguments, and waits until it accepts connections.
    pub fn start(repo: &Repo, extra: &[&str]) -> Result<Self> {
        Self::start_wrapped(repo, extra, &[])
    }

    /// [`Self::start`], with the server run by `wrapper` (a command and its
    /// arguments, e.g. `faketime -f -3d`).
    pub fn start_wrapped(repo: &Repo, extra: &[&str], wrapper: &[&str]) -> Result<Self> {
        Self::start_on([127, 0, 0, 1].into(), repo, extra, wrapper)
    }

    /// [`Self::start_wrapped`] with the gateway on `ip` (e.g. an address
    /// inside a network namespace the wrapper enters).
    pub fn start_on(ip: IpAddr, repo: &Repo, extra: &[&str], wrapper: &[&str]) -> Result<Self> {
        Self::start_at(ip, repo, wrapper, |addr| {
            let mut args: Vec<OsString> = vec!["--http".into(), addr.to_string().into()];
            args.extend(extra.iter().map(OsString::from));
            Ok(args)
        })
    }

    /// [`Self::start`] with the config file `toml` (kept as long as the
    /// server runs); [`LOOPBACK_RTMP`] and [`LOOPBACK_P2P`] are the
    /// sections that keep it to free loopback ports.
    pub fn start_config(repo: &Repo, toml: &str) -> Result<Self> {
        let dir = tempdir()?;
        let config = dir.path().join("meshcast.toml");
        write(&config, toml.as_bytes())?;
        let mut gw = Self::start(repo, &["--config", config.to_str().context("UTF-8 path")?])?;
        gw._dirs.push(dir);
        Ok(gw)
    }

    /// Starts `meshcast serve` with the arguments `args(addr)` gives for a
    /// free port `addr` on `ip` (they make the gateway listen there), and
    /// waits until it does. A free port can be taken by someone else before
    /// the server binds it: a few are tried.
    pub fn start_at(
        ip: IpAddr,
        repo: &Repo,
        wrapper: &[&str],
        args: impl Fn(SocketAddr) -> Result<Vec<OsString>>,
    ) -> Result<Self> {
        let mut last_err = None;
        for _ in 0..3 {
            let addr = SocketAddr::from((ip, free_port()?));
            let args = args(addr)?;
            let args: Vec<&OsStr> = args.iter().map(OsString::as_os_str).collect();
            match Spawned::new(repo, &args, wrapper)?.listening(addr) {
                Ok(gw) => return Ok(gw),
                Err(e) => last_err = Some(e),
            }
        }
        Err(last_err.expect("tried at least once"))
    }

    /// Stops the server as an operator does (SIGTERM) and waits for it to
    /// exit; its exit status.
    pub fn stop(&mut self) -> Result<ExitStatus> {
        let pid = self.child.id().to_string();
        let sent = Command::new("kill").args(["-TERM", &pid]).status()?;
        ensure!(sent.success(), "kill -TERM {pid}");
        Ok(self.child.wait()?)
    }

    /// Waits at most `timeout` for a whole line of the server's log that
    /// `wanted` accepts; that line.
    pub fn wait_log_line(
        &self,
        wanted: impl Fn(&str) -> bool,
        timeout: Duration,
    ) -> Result<String> {
        let start = Instant::now();
        loop {
            let text = std::fs::read_to_string(&self.log).unwrap_or_default();
            // A line caught half written is not there yet.
            let whole = &text[..text.rfind('\n').map_or(0, |i| i + 1)];
            if let Some(line) = whole.lines().find(|l| wanted(l)) {
                return Ok(line.to_owned());
            }
            ensure!(
                start.elapsed() < timeout,
                "no such line in the log after {timeout:?}\n{}",
                self.log_tail()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// A memory figure of the server from `/proc/PID/status`, in KiB:
    /// `VmRSS` (resident now) or `VmHWM` (the peak of it).
    pub fn memory_kib(&self, field: &str) -> Result<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()))?;
        status
            .lines()
            .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .with_context(|| format!("no {field} in /proc/{}/status", self.pid()))
    }

    /// The end of the server's log, for error messages.
    pub fn log_tail(&self) -> String {
        log_tail("server", &self.log)
    }

    /// GET `path` with extra request headers.
    pub fn get(&self, path: &str, headers: &[(&str, &str)]) -> Result<Reply> {
        let mut req = self.agent.get(format!("{}{path}", self.base));
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let mut resp = req.call().with_context(|| format!("GET {path}"))?;
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let body = resp
            .body_mut()
            .with_config()
            .limit(1 << 30)
            .read_to_vec()
            .with_context(|| format!("read body of GET {path}"))?;
        Ok(Reply {
            status,
            headers,
            body,
        })
    }

    /// PUT `body` to `path`; the status.
    pub fn put(&self, path: &str, body: &[u8]) -> Result<u16> {
        let resp = self
            .agent
            .put(format!("{}{path}", self.base))
            .send(body)
            .with_context(|| format!("PUT {path}"))?;
        Ok(resp.status().as_u16())
    }

    /// GET that must answer `status`.
    pub fn expect(&self, path: &str, headers: &[(&str, &str)], status: u16) -> Result<Reply> {
        let r = self.get(path, headers)?;
        if r.status != status {
            bail!(
                "GET {path} {headers:?}: status {} (want {status}), body {:?}\n{}",
                r.status,
                String::from_utf8_lossy(&r.body[..r.body.len().min(500)]),
                self.log_tail()
            );
        }
        Ok(r)
    }
}

/// A TCP connection to `to` from the loopback address `from` (any of
/// 127.0.0.0/8), so one test can be several clients as the server counts
/// them. `recv_buffer`, if set, is the receive buffer asked for before
/// connecting: a client that stops reading then holds back the server
/// after that many bytes rather than after the kernel's megabytes.
pub fn connect_from(from: IpAddr, to: SocketAddr, recv_buffer: Option<usize>) -> Result<TcpStream> {
    use rustix::net::{AddressFamily, SocketType};
    let fd = rustix::net::socket(AddressFamily::INET, SocketType::STREAM, None)?;
    if let Some(size) = recv_buffer {
        rustix::net::sockopt::set_socket_recv_buffer_size(&fd, size)?;
    }
    rustix::net::bind(&fd, &SocketAddr::new(from, 0))?;
    rustix::net::connect(&fd, &to).with_context(|| format!("connect {from} -> {to}"))?;
    Ok(TcpStream::from(fd))
}

/// The address its RTMP ingest listens on, from `<data>/rtmp` (written
/// once the listeners are up).
pub fn rtmp_addr(gw: &Gateway) -> Result<SocketAddr> {
    let file = gw.data.join(meshcast::node::RTMP_FILE);
    let start = Instant::now();
    loop {
        // Written atomically: there whole or not at all.
        if let Ok(text) = std::fs::read_to_string(&file) {
            return text
                .trim()
                .parse()
                .with_context(|| format!("{} holds {text:?}", file.display()));
        }
        ensure!(
            start.elapsed() < Duration::from_secs(10),
            "no {}\n{}",
            file.display(),
            gw.log_tail()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// GET `path`, which must answer 200 with text.
pub fn get_text(gw: &Gateway, path: &str) -> Result<String> {
    let r = gw.get(path, &[])?;
    ensure!(r.status == 200, "GET {path}: {}", r.status);
    Ok(String::from_utf8(r.body)?)
}

/// `GET /api/v1/streams` as JSON.
pub fn streams_json(gw: &Gateway) -> Result<Value> {
    Ok(serde_json::from_str(&get_text(gw, "/api/v1/streams")?)?)
}

/// A field of `stream` in `/api/v1/streams`, as text, and the whole answer.
fn stream_field(g: &Gateway, stream: &str, field: &str) -> Result<(Option<String>, Value)> {
    let r = g.get("/api/v1/streams", &[])?;
    let v: Value = serde_json::from_slice(&r.body)?;
    let found = v["streams"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|s| s["name"] == stream)
        .and_then(|s| s[field].as_str())
        .map(str::to_owned);
    Ok((found, v))
}

/// The IPNS name `/api/v1/streams` gives for `stream`.
pub fn ipns_name(g: &Gateway, stream: &str) -> Result<String> {
    let (name, v) = stream_field(g, stream, "ipns")?;
    name.with_context(|| format!("no IPNS name for {stream}: {v}"))
}

/// The stream's current site CID from `/api/v1/streams`.
pub fn ipns_site(g: &Gateway, stream: &str) -> Result<String> {
    stream_field(g, stream, "site_cid")?.0.context("site_cid")
}

/// Waits until the stream's last session is ended.
pub fn wait_ended(gw: &Gateway, name: &str) -> Result<Value> {
    let start = Instant::now();
    loop {
        let json = streams_json(gw)?;
        let stream = json["streams"]
            .as_array()
            .and_then(|a| a.iter().find(|s| s["name"] == name))
            .cloned();
        if let Some(s) = stream {
            if s["sessions"]
                .as_array()
                .and_then(|a| a.last())
                .is_some_and(|l| l["ended"] == true)
            {
                return Ok(s);
            }
        }
        ensure!(
            start.elapsed() < Duration::from_secs(20),
            "session of {name} never ended: {json}\n{}",
            gw.log_tail()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Waits until `g` serves `/live/{stream}.m3u8` with at least `n` segments.
pub fn wait_live_segments(
    g: &Gateway,
    stream: &str,
    n: usize,
    timeout: Duration,
) -> Result<String> {
    let start = Instant::now();
    loop {
        let r = g.get(&format!("/live/{stream}.m3u8"), &[])?;
        let text = String::from_utf8_lossy(&r.body).into_owned();
        if r.status == 200 && text.matches("#EXTINF").count() >= n {
            return Ok(text);
        }
        ensure!(
            start.elapsed() < timeout,
            "{} never listed {n} segments of {stream}: {} {text}",
            g.base,
            r.status
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Waits until `/ipns/{name}/stream.json` on `g` answers with a session
/// that has ended; returns the JSON and how long it took.
pub fn wait_resolved(g: &Gateway, name: &str, timeout: Duration) -> Result<(Value, Duration)> {
    let start = Instant::now();
    loop {
        let r = g.get(&format!("/ipns/{name}/stream.json"), &[])?;
        if r.status == 200 {
            let v: Value = serde_json::from_slice(&r.body)?;
            if v["live"] == false {
                return Ok((v, start.elapsed()));
            }
        }
        ensure!(
            start.elapsed() < timeout,
            "/ipns/{name} did not resolve on {} within {timeout:?}: {} {}",
            g.base,
            r.status,
            String::from_utf8_lossy(&r.body)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `GET /api/v1/node` as JSON.
pub fn node_info(g: &Gateway) -> Result<Value> {
    let r = g.get("/api/v1/node", &[])?;
    ensure!(r.status == 200, "GET /api/v1/node: {}", r.status);
    Ok(serde_json::from_slice(&r.body)?)
}

/// The node's first TCP multiaddr with `/p2p/<id>`.
pub fn tcp_addr(g: &Gateway) -> Result<String> {
    let info = node_info(g)?;
    info["addrs"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .find(|a| a.contains("/tcp/"))
        .map(str::to_owned)
        .context("no TCP address in /api/v1/node")
}

/// Waits until `g` lists `peer` as connected (or not, with `want = false`).
pub fn wait_peer(g: &Gateway, peer: &str, want: bool, timeout: Duration) -> Result<Value> {
    let start = Instant::now();
    loop {
        let info = node_info(g)?;
        let found = info["peers"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|p| p["peer_id"] == peer)
            .cloned();
        if found.is_some() == want {
            return Ok(found.unwrap_or(Value::Null));
        }
        ensure!(
            start.elapsed() < timeout,
            "peer {peer} {} after {timeout:?}: {info}",
            if want {
                "never connected"
            } else {
                "still connected"
            }
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// When each media sequence number first appeared in `g`'s live playlist
/// of `cam`, noted at each call (for judging whether a mirror keeps up).
pub fn note_segments(
    g: &Gateway,
    seen: &mut std::collections::BTreeMap<u64, Instant>,
) -> Result<()> {
    let r = g.get("/live/cam.m3u8", &[])?;
    if r.status != 200 {
        return Ok(());
    }
    let text = String::from_utf8_lossy(&r.body);
    let mut seq: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix("#EXT-X-MEDIA-SEQUENCE:"))
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0);
    let now = Instant::now();
    for l in text.lines() {
        if !l.starts_with('#') && !l.trim().is_empty() {
            seen.entry(seq).or_insert(now);
            seq += 1;
        }
    }
    Ok(())
}
