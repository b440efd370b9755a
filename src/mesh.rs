//! Mesh links: what the Yggdrasil and cjdns daemons on this host say about
//! their peerings, and which libp2p peers sit behind each.
//!
//! ```text
//! [mesh] config --> poll task, every poll_interval, each call under `timeout`:
//!   Yggdrasil admin socket (unix:// or tcp://): getSelf, getPeers (JSON)   mesh::yggdrasil (pure)
//!   cjdroute UDP admin: InterfaceController_peerStats, page 0, 1, ... (bencode)  mesh::cjdns (pure)
//!   p2p: the connected peers, matched to links by address
//!     --> Snapshot (GET /api/v1/mesh, the dashboard)  + metrics (mesh::metrics)
//! ```
//!
//! A daemon that is not configured is `off`; one whose socket is missing,
//! that refuses the connection or does not answer in time is `absent`; one
//! that answers nonsense is `failing`. Each change of state is logged once,
//! so a daemon that never runs costs one line, not one a poll.
//!
//! A libp2p peer is behind a link when its connection's IP is the link's
//! mesh address (the neighbour's Yggdrasil or cjdns address: `by` is
//! `address`) or the host at the link's other end (`by` is `remote`).

mod cjdns;
mod metrics;
mod yggdrasil;

pub use cjdns::CjdnsSelf;

use crate::config::MeshConfig;
use serde::Serialize;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};
use thiserror::Error;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

/// Links read from one daemon at most; the rest are left out.
const MAX_LINKS: usize = 1024;
/// The largest admin reply read (Yggdrasil's JSON for [`MAX_LINKS`] peers
/// fits many times).
const MAX_REPLY: u64 = 4 << 20;
/// cjdns peer stats pages asked for per poll at most (six peers a page).
const MAX_PAGES: u64 = MAX_LINKS as u64 / 6;

/// Which mesh a link belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LinkKind {
    /// A Yggdrasil peering.
    Yggdrasil,
    /// A cjdns peering.
    Cjdns,
}

impl LinkKind {
    /// The name used in the API and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Yggdrasil => "yggdrasil",
            Self::Cjdns => "cjdns",
        }
    }
}

impl std::fmt::Display for LinkKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Yggdrasil => "Yggdrasil",
            Self::Cjdns => "cjdns",
        })
    }
}

/// Why a daemon could not be read.
#[derive(Debug, Error)]
pub enum MeshError {
    /// The configured endpoint is not of a form we know.
    #[error("{kind} admin endpoint {endpoint:?}: {reason}")]
    Endpoint {
        /// Which daemon.
        kind: LinkKind,
        /// As configured.
        endpoint: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// Nothing listens there, or it did not answer in time.
    #[error("{kind} admin at {endpoint}: {reason}")]
    Absent {
        /// Which daemon.
        kind: LinkKind,
        /// Where it was asked.
        endpoint: String,
        /// What happened (the OS error, or the timeout).
        reason: String,
    },
    /// The admin socket is not ours to open.
    #[error(
        "{kind} admin at {endpoint}: permission denied; run meshcast in the daemon's group \
         (Debian: yggdrasil) or point [mesh] at an admin endpoint it may use"
    )]
    Denied {
        /// Which daemon.
        kind: LinkKind,
        /// Where it was asked.
        endpoint: String,
    },
    /// Talking to it failed midway.
    #[error("{kind} admin at {endpoint}: {source}")]
    Io {
        /// Which daemon.
        kind: LinkKind,
        /// Where it was asked.
        endpoint: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// Its reply is not what the protocol says.
    #[error("{kind} admin reply: {reason}")]
    Reply {
        /// Which daemon.
        kind: LinkKind,
        /// What was wrong.
        reason: String,
    },
    /// It answered with an error.
    #[error("{kind} admin refused the call: {reason}")]
    Refused {
        /// Which daemon.
        kind: LinkKind,
        /// Its error message.
        reason: String,
    },
}

/// cjdns' packet counters of a link.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Packets {
    /// Packets received.
    pub received: Option<u64>,
    /// Packets that never arrived (gaps in the sequence).
    pub lost: Option<u64>,
    /// Packets that arrived twice.
    pub duplicates: Option<u64>,
    /// Packets too far out of order to be taken.
    pub out_of_range: Option<u64>,
}

/// A libp2p peer connected through a link.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PeerBehind {
    /// Its peer id.
    pub peer_id: String,
    /// The multiaddr of our connection to it.
    pub addr: String,
    /// `address`: the connection goes to the link's mesh address; `remote`:
    /// to the host at the link's other end.
    pub by: &'static str,
}

/// One peering of a mesh daemon. Fields a daemon does not report are null.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Link {
    /// Yggdrasil or cjdns.
    pub kind: LinkKind,
    /// The neighbour's mesh address (200::/7 or fc00::/8).
    pub address: Option<String>,
    /// The neighbour's public key (hex for Yggdrasil, base32 `.k` for cjdns).
    pub key: Option<String>,
    /// The other end of the link: Yggdrasil's peer URI
    /// (`tcp://10.0.0.2:12345`), cjdns' link-layer address.
    pub remote: Option<String>,
    /// `up` or `down` (Yggdrasil), cjdns' peer state (`ESTABLISHED`,
    /// `UNRESPONSIVE`, `HANDSHAKE`...).
    pub state: String,
    /// Whether the neighbour dialled us.
    pub inbound: Option<bool>,
    /// Yggdrasil's switch port of the peering.
    pub port: Option<u64>,
    /// Bytes received over the link.
    pub bytes_in: u64,
    /// Bytes sent over the link.
    pub bytes_out: u64,
    /// Bytes a second received: the daemon's figure, or measured between
    /// two polls.
    pub rate_in: Option<u64>,
    /// Bytes a second sent, likewise.
    pub rate_out: Option<u64>,
    /// Round-trip latency (Yggdrasil 0.5).
    pub latency_ms: Option<f64>,
    /// Lost packets over packets due (cjdns).
    pub loss: Option<f64>,
    /// How long the peering is up (Yggdrasil).
    pub uptime_s: Option<f64>,
    /// Why the peering last failed (Yggdrasil 0.5).
    pub last_error: Option<String>,
    /// The neighbour's tree coordinates (Yggdrasil 0.4).
    pub coords: Option<Vec<u64>>,
    /// Packet counters (cjdns).
    pub packets: Option<Packets>,
    /// When cjdns last heard from the neighbour (Unix milliseconds).
    pub last_message_unix_ms: Option<u64>,
    /// The cjdns peering's user name (authorized password's name).
    pub user: Option<String>,
    /// cjdns' own peer address: `v<version>.<switch label>.<key>`.
    pub cjdns_addr: Option<String>,
    /// Connected libp2p peers reached through this link.
    pub peers: Vec<PeerBehind>,
}

impl Link {
    /// A link of `kind` with nothing known yet.
    pub fn new(kind: LinkKind) -> Self {
        Self {
            kind,
            address: None,
            key: None,
            remote: None,
            state: String::new(),
            inbound: None,
            port: None,
            bytes_in: 0,
            bytes_out: 0,
            rate_in: None,
            rate_out: None,
            latency_ms: None,
            loss: None,
            uptime_s: None,
            last_error: None,
            coords: None,
            packets: None,
            last_message_unix_ms: None,
            user: None,
            cjdns_addr: None,
            peers: Vec::new(),
        }
    }

    /// Whether the daemon calls the link up.
    pub fn is_up(&self) -> bool {
        self.state == "up" || self.state == "ESTABLISHED"
    }

    /// What tells this link from the daemon's others across polls.
    fn id(&self) -> String {
        let parts = [&self.key, &self.address, &self.remote];
        parts
            .iter()
            .map(|p| p.as_deref().unwrap_or(""))
            .collect::<Vec<_>>()
            .join("|")
    }

    /// The IP of the host at the link's other end, when `remote` names one
    /// (`tcp://10.0.0.2:12345`, `tls://[::1]:1?key=..`, `10.0.0.2:11234`).
    fn remote_ip(&self) -> Option<IpAddr> {
        let remote = self.remote.as_deref()?;
        let rest = remote.split_once("://").map_or(remote, |(_, r)| r);
        let hostport = rest.split(['/', '?']).next()?;
        hostport
            .parse::<SocketAddr>()
            .map(|s| s.ip())
            .or_else(|_| hostport.parse::<IpAddr>())
            .ok()
    }
}

/// This node as its Yggdrasil daemon describes it.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct YggdrasilSelf {
    /// Its 200::/7 address.
    pub address: Option<String>,
    /// Its public key (hex).
    pub key: Option<String>,
    /// The 300::/64 subnet it routes.
    pub subnet: Option<String>,
    /// The daemon's version.
    pub build_version: Option<String>,
    /// Its tree coordinates (0.4).
    pub coords: Option<Vec<u64>>,
}

/// This node on each mesh.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct SelfInfo {
    /// As Yggdrasil's `getSelf` says, when the daemon answers.
    pub yggdrasil: Option<YggdrasilSelf>,
    /// As cjdroute's `Core_nodeInfo` says, when the daemon answers.
    pub cjdns: Option<cjdns::CjdnsSelf>,
}

/// How a daemon answers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DaemonState {
    /// Not configured (its endpoint is "").
    #[default]
    Off,
    /// Nothing there, or no answer in time.
    Absent,
    /// It answers, but not as the protocol says, or refuses.
    Failing,
    /// It answers.
    Up,
}

/// One daemon's state.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Daemon {
    /// Where it is asked, as configured.
    pub endpoint: String,
    /// How it answers.
    pub state: DaemonState,
    /// Why it is absent or failing.
    pub error: Option<String>,
}

/// Both daemons.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Daemons {
    /// The Yggdrasil daemon.
    pub yggdrasil: Daemon,
    /// cjdroute.
    pub cjdns: Daemon,
}

/// Everything known about the mesh links, as of the last poll: the body of
/// `GET /api/v1/mesh`.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Snapshot {
    /// Every daemon's links, Yggdrasil's first.
    pub links: Vec<Link>,
    /// This node on each mesh.
    #[serde(rename = "self")]
    pub self_info: SelfInfo,
    /// Whether each daemon answers.
    pub daemons: Daemons,
    /// When the poll finished (Unix milliseconds; 0 before the first).
    pub updated_unix_ms: u64,
}

/// What the poll task asks for the connected libp2p peers: `(peer id,
/// connection multiaddrs)`. `node.rs` hands one in, so this stage needs no
/// more of the p2p node than that.
pub type PeerList =
    Arc<dyn Fn() -> futures::future::BoxFuture<'static, Vec<(String, Vec<String>)>> + Send + Sync>;

/// The handle to the mesh telemetry. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Mesh {
    snapshot: Arc<RwLock<Arc<Snapshot>>>,
    metrics: metrics::Metrics,
}

impl Mesh {
    /// Starts polling the daemons `config` names until `cancel`; `peers`
    /// lists the connected libp2p peers (none when the p2p node is off).
    pub fn spawn(config: &MeshConfig, peers: Option<PeerList>, cancel: CancellationToken) -> Self {
        let mesh = Self {
            snapshot: Arc::default(),
            metrics: metrics::Metrics::default(),
        };
        let poller = Poller {
            config: config.clone(),
            peers,
            mesh: mesh.clone(),
            tracker: metrics::Tracker::default(),
            logged: [None, None],
        };
        tokio::spawn(poller.run(cancel));
        mesh
    }

    /// The latest snapshot (shared; no copy, no I/O).
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.snapshot
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Registers the mesh metrics (`mesh_*`, labelled by link kind) in
    /// `registry`; the node's registry prefixes them with `meshcast_`.
    pub fn register(&self, registry: &mut prometheus_client::registry::Registry) {
        self.metrics.register(registry);
    }
}

/// Where a Yggdrasil admin socket is.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Endpoint {
    Unix(PathBuf),
    Tcp(String),
}

impl Endpoint {
    fn parse(text: &str) -> Result<Self, MeshError> {
        let bad = |reason| MeshError::Endpoint {
            kind: LinkKind::Yggdrasil,
            endpoint: text.to_owned(),
            reason,
        };
        if let Some(path) = text.strip_prefix("unix://") {
            if path.is_empty() {
                return Err(bad("no socket path after unix://"));
            }
            Ok(Self::Unix(path.into()))
        } else if let Some(hostport) = text.strip_prefix("tcp://") {
            if !hostport.contains(':') {
                return Err(bad("expected tcp://host:port"));
            }
            Ok(Self::Tcp(hostport.trim_end_matches('/').to_owned()))
        } else {
            Err(bad("expected unix:///path or tcp://host:port"))
        }
    }
}

/// An OS error that means nothing listens there.
fn absent_error(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(
        e.kind(),
        NotFound | ConnectionRefused | AddrNotAvailable | HostUnreachable | NetworkUnreachable
    )
}

/// One Yggdrasil admin call: connect, send the request, read the reply to
/// the end (the daemon closes the connection).
async fn yggdrasil_call(endpoint: &Endpoint, text: &str, name: &str) -> Result<Vec<u8>, MeshError> {
    let io = |source: std::io::Error| {
        if absent_error(&source) {
            MeshError::Absent {
                kind: LinkKind::Yggdrasil,
                endpoint: text.to_owned(),
                reason: source.to_string(),
            }
        } else if source.kind() == std::io::ErrorKind::PermissionDenied {
            MeshError::Denied {
                kind: LinkKind::Yggdrasil,
                endpoint: text.to_owned(),
            }
        } else {
            MeshError::Io {
                kind: LinkKind::Yggdrasil,
                endpoint: text.to_owned(),
                source,
            }
        }
    };
    async fn exchange<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(
        mut s: S,
        request: &[u8],
    ) -> std::io::Result<Vec<u8>> {
        s.write_all(request).await?;
        let mut reply = Vec::new();
        (&mut s).take(MAX_REPLY).read_to_end(&mut reply).await?;
        Ok(reply)
    }
    let request = yggdrasil::request(name);
    match endpoint {
        Endpoint::Unix(path) => {
            let s = tokio::net::UnixStream::connect(path).await.map_err(io)?;
            exchange(s, &request).await.map_err(io)
        }
        Endpoint::Tcp(hostport) => {
            let s = tokio::net::TcpStream::connect(hostport.as_str())
                .await
                .map_err(io)?;
            exchange(s, &request).await.map_err(io)
        }
    }
}

/// A cjdns admin conversation: one UDP socket, one datagram each way per
/// call, each reply matched by its `txid`.
struct CjdnsSocket {
    socket: tokio::net::UdpSocket,
    endpoint: String,
    next_txid: u64,
}

impl CjdnsSocket {
    async fn open(endpoint: &str) -> Result<Self, MeshError> {
        let io = |source: std::io::Error| MeshError::Absent {
            kind: LinkKind::Cjdns,
            endpoint: endpoint.to_owned(),
            reason: source.to_string(),
        };
        let target = tokio::net::lookup_host(endpoint)
            .await
            .map_err(io)?
            .next()
            .ok_or_else(|| MeshError::Endpoint {
                kind: LinkKind::Cjdns,
                endpoint: endpoint.to_owned(),
                reason: "resolves to no address",
            })?;
        let local: SocketAddr = if target.is_ipv4() {
            ([0, 0, 0, 0], 0).into()
        } else {
            (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
        };
        let socket = tokio::net::UdpSocket::bind(local).await.map_err(io)?;
        socket.connect(target).await.map_err(io)?;
        Ok(Self {
            socket,
            endpoint: endpoint.to_owned(),
            next_txid: rand::random::<u32>().into(),
        })
    }

    fn txid(&mut self) -> String {
        self.next_txid += 1;
        format!("{:016x}", self.next_txid)
    }

    /// Sends `request` and waits for the datagram that answers `txid`
    /// (older replies, to calls that timed out, are passed over).
    async fn call(&self, request: &[u8], txid: &str) -> Result<Vec<u8>, MeshError> {
        let io = |source: std::io::Error| {
            if absent_error(&source) {
                MeshError::Absent {
                    kind: LinkKind::Cjdns,
                    endpoint: self.endpoint.clone(),
                    reason: source.to_string(),
                }
            } else {
                MeshError::Io {
                    kind: LinkKind::Cjdns,
                    endpoint: self.endpoint.clone(),
                    source,
                }
            }
        };
        self.socket.send(request).await.map_err(io)?;
        // cjdroute's admin replies fit its 1 KiB buffer; room to spare.
        let mut buf = vec![0; 64 << 10];
        loop {
            let n = self.socket.recv(&mut buf).await.map_err(io)?;
            let reply = &buf[..n];
            let needle = format!("4:txid{}:{txid}", txid.len());
            if reply.windows(needle.len()).any(|w| w == needle.as_bytes()) {
                return Ok(reply.to_vec());
            }
        }
    }

    /// The node's own description (`Core_nodeInfo`, no password needed).
    async fn node_info(&mut self) -> Result<cjdns::CjdnsSelf, MeshError> {
        let txid = self.txid();
        let reply = self
            .call(&cjdns::request_no_args(cjdns::NODE_INFO, &txid), &txid)
            .await?;
        cjdns::parse_node_info(&reply, &txid)
    }

    /// Every page of the peer stats; with `password`, each call is
    /// authenticated with a fresh cookie.
    async fn peer_stats(&mut self, password: Option<&str>) -> Result<Vec<Link>, MeshError> {
        let mut links = Vec::new();
        for page in 0..MAX_PAGES {
            let txid = self.txid();
            let request = match password {
                None => cjdns::request(cjdns::PEER_STATS, page, &txid),
                Some(password) => {
                    let cookie_txid = self.txid();
                    let reply = self
                        .call(&cjdns::cookie_request(&cookie_txid), &cookie_txid)
                        .await?;
                    let cookie = cjdns::parse_cookie(&reply, &cookie_txid)?;
                    cjdns::auth_request(cjdns::PEER_STATS, page, password, &cookie, &txid)
                }
            };
            let reply = self.call(&request, &txid).await?;
            let (mut found, more) = cjdns::parse_page(&reply, &txid)?;
            links.append(&mut found);
            if !more || links.len() >= MAX_LINKS {
                break;
            }
        }
        links.truncate(MAX_LINKS);
        Ok(links)
    }
}

/// The cjdns admin password: the configured one, else `~/.cjdnsadmin`'s.
fn cjdns_password(config: &MeshConfig) -> Option<String> {
    if !config.cjdns_password.is_empty() {
        return Some(config.cjdns_password.clone());
    }
    let home = std::env::var_os("HOME")?;
    let text = std::fs::read_to_string(PathBuf::from(home).join(".cjdnsadmin")).ok()?;
    cjdns::password_from_file(&text)
}

/// The poll task's state.
struct Poller {
    config: MeshConfig,
    peers: Option<PeerList>,
    mesh: Mesh,
    tracker: metrics::Tracker,
    /// Each daemon's last logged state and error, so each change is logged
    /// once.
    logged: [Option<(DaemonState, Option<String>)>; 2],
}

/// The daemon state an error means.
fn state_of(e: &MeshError) -> DaemonState {
    match e {
        MeshError::Absent { .. } => DaemonState::Absent,
        _ => DaemonState::Failing,
    }
}

impl Poller {
    async fn run(mut self, cancel: CancellationToken) {
        let mut tick =
            tokio::time::interval(self.config.poll_interval.max(Duration::from_millis(100)));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                () = cancel.cancelled() => return,
            }
            let snapshot = tokio::select! {
                s = self.poll() => s,
                () = cancel.cancelled() => return,
            };
            metrics::set_gauges(&self.mesh.metrics, &snapshot);
            *self
                .mesh
                .snapshot
                .write()
                .unwrap_or_else(|e| e.into_inner()) = Arc::new(snapshot);
        }
    }

    /// Runs `call` under the configured timeout; running out of time means
    /// the daemon is absent.
    async fn timed<T>(
        &self,
        kind: LinkKind,
        endpoint: &str,
        call: impl std::future::Future<Output = Result<T, MeshError>>,
    ) -> Result<T, MeshError> {
        tokio::time::timeout(self.config.timeout, call)
            .await
            .unwrap_or_else(|_| {
                Err(MeshError::Absent {
                    kind,
                    endpoint: endpoint.to_owned(),
                    reason: format!("no answer in {:?}", self.config.timeout),
                })
            })
    }

    async fn poll(&mut self) -> Snapshot {
        let mut snapshot = Snapshot::default();
        let ygg = self.config.yggdrasil_admin.clone();
        snapshot.daemons.yggdrasil.endpoint = ygg.clone();
        if !ygg.is_empty() {
            let read = async {
                let endpoint = Endpoint::parse(&ygg)?;
                let me = yggdrasil::parse_self(&yggdrasil_call(&endpoint, &ygg, "getSelf").await?)?;
                let reply = yggdrasil_call(&endpoint, &ygg, "getPeers").await?;
                Ok((me, yggdrasil::parse_peers(&reply, MAX_LINKS)?))
            };
            match self.timed(LinkKind::Yggdrasil, &ygg, read).await {
                Ok((me, mut links)) => {
                    snapshot.daemons.yggdrasil.state = DaemonState::Up;
                    snapshot.self_info.yggdrasil = Some(me);
                    self.tracker.observe(
                        LinkKind::Yggdrasil,
                        &mut links,
                        Instant::now(),
                        &self.mesh.metrics,
                    );
                    snapshot.links.append(&mut links);
                }
                Err(e) => {
                    snapshot.daemons.yggdrasil.state = state_of(&e);
                    snapshot.daemons.yggdrasil.error = Some(e.to_string());
                    self.tracker.forget(LinkKind::Yggdrasil);
                }
            }
        }
        let cj = self.config.cjdns_admin.clone();
        snapshot.daemons.cjdns.endpoint = cj.clone();
        if !cj.is_empty() {
            let read = async {
                let mut socket = CjdnsSocket::open(&cj).await?;
                let links = match socket.peer_stats(None).await {
                    // A daemon that wants a password for it: ask again with
                    // one, or say where one goes.
                    Err(MeshError::Refused { kind, reason }) => match cjdns_password(&self.config) {
                        Some(password) => socket.peer_stats(Some(&password)).await,
                        None => Err(MeshError::Refused {
                            kind,
                            reason: format!(
                                "{reason} (set [mesh] cjdns_password, or the password in ~/.cjdnsadmin)"
                            ),
                        }),
                    },
                    r => r,
                }?;
                // A daemon whose peers answer but not this (an older
                // cjdroute) still shows its links.
                let me = socket.node_info().await.ok();
                Ok((links, me))
            };
            match self.timed(LinkKind::Cjdns, &cj, read).await {
                Ok((mut links, me)) => {
                    snapshot.daemons.cjdns.state = DaemonState::Up;
                    snapshot.self_info.cjdns = me;
                    self.tracker.observe(
                        LinkKind::Cjdns,
                        &mut links,
                        Instant::now(),
                        &self.mesh.metrics,
                    );
                    snapshot.links.append(&mut links);
                }
                Err(e) => {
                    snapshot.daemons.cjdns.state = state_of(&e);
                    snapshot.daemons.cjdns.error = Some(e.to_string());
                    self.tracker.forget(LinkKind::Cjdns);
                }
            }
        }
        self.log_changes(&snapshot.daemons);
        if let Some(peers) = &self.peers {
            if !snapshot.links.is_empty() {
                if let Ok(list) = tokio::time::timeout(self.config.timeout, peers()).await {
                    match_peers(&mut snapshot.links, &list);
                }
            }
        }
        snapshot.updated_unix_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        snapshot
    }

    fn log_changes(&mut self, daemons: &Daemons) {
        for (i, (kind, d)) in [
            (LinkKind::Yggdrasil, &daemons.yggdrasil),
            (LinkKind::Cjdns, &daemons.cjdns),
        ]
        .into_iter()
        .enumerate()
        {
            let now = Some((d.state, d.error.clone()));
            if self.logged[i] == now {
                continue;
            }
            // The first poll of a daemon that is simply not there is not
            // news when it is asked at the default endpoint, as on every
            // host; one configured elsewhere was expected.
            let default = MeshConfig::default();
            let quiet = self.logged[i].is_none() && (*endpoint_of(&default, kind) == d.endpoint);
            self.logged[i] = now;
            let endpoint = &d.endpoint;
            match d.state {
                DaemonState::Off => {}
                DaemonState::Up => tracing::info!(%kind, %endpoint, "mesh daemon answers"),
                DaemonState::Absent if quiet => {
                    tracing::debug!(%kind, %endpoint, error = d.error.as_deref(), "no mesh daemon")
                }
                DaemonState::Absent => {
                    tracing::info!(%kind, %endpoint, error = d.error.as_deref(), "mesh daemon gone")
                }
                DaemonState::Failing => {
                    tracing::warn!(%kind, %endpoint, error = d.error.as_deref(), "mesh daemon answers badly")
                }
            }
        }
    }
}

/// The endpoint `config` gives the daemon of `kind`.
fn endpoint_of(config: &MeshConfig, kind: LinkKind) -> &String {
    match kind {
        LinkKind::Yggdrasil => &config.yggdrasil_admin,
        LinkKind::Cjdns => &config.cjdns_admin,
    }
}

/// The IP a multiaddr dials (`/ip4/..` or `/ip6/..` first).
fn multiaddr_ip(addr: &str) -> Option<IpAddr> {
    let mut parts = addr.split('/').skip(1);
    match (parts.next()?, parts.next()?) {
        ("ip4" | "ip6", ip) => ip.parse().ok(),
        _ => None,
    }
}

/// Notes on each link the connected peers reached through it.
fn match_peers(links: &mut [Link], peers: &[(String, Vec<String>)]) {
    for link in links.iter_mut() {
        let address = link
            .address
            .as_deref()
            .and_then(|a| a.parse::<IpAddr>().ok());
        let remote = link.remote_ip();
        for (peer_id, addrs) in peers {
            for addr in addrs {
                let Some(ip) = multiaddr_ip(addr) else {
                    continue;
                };
                let by = if Some(ip) == address {
                    "address"
                } else if Some(ip) == remote {
                    "remote"
                } else {
                    continue;
                };
                link.peers.push(PeerBehind {
                    peer_id: peer_id.clone(),
                    addr: addr.clone(),
                    by,
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_parse() {
        assert_eq!(
            Endpoint::parse("unix:///var/run/yggdrasil/yggdrasil.sock").unwrap(),
            Endpoint::Unix("/var/run/yggdrasil/yggdrasil.sock".into())
        );
        assert_eq!(
            Endpoint::parse("tcp://localhost:9001").unwrap(),
            Endpoint::Tcp("localhost:9001".into())
        );
        assert!(Endpoint::parse("/var/run/x.sock").is_err());
        assert!(Endpoint::parse("tcp://nohost").is_err());
    }

    #[test]
    fn peers_are_matched_by_mesh_address_or_remote_host() {
        let mut a = Link::new(LinkKind::Yggdrasil);
        a.address = Some("200:1::1".into());
        a.remote = Some("tcp://10.0.0.2:12345".into());
        let mut b = Link::new(LinkKind::Cjdns);
        b.address = Some("fc00::2".into());
        b.remote = Some("192.168.1.9:11234".into());
        let mut links = [a, b];
        let peers = vec![
            ("P1".to_owned(), vec!["/ip6/200:1::1/tcp/4001".to_owned()]),
            (
                "P2".to_owned(),
                vec!["/ip4/10.0.0.2/udp/4001/quic-v1".to_owned()],
            ),
            (
                "P3".to_owned(),
                vec!["/ip4/10.9.9.9/tcp/1".to_owned(), "/dns/x/tcp/1".to_owned()],
            ),
        ];
        match_peers(&mut links, &peers);
        let seen: Vec<_> = links[0]
            .peers
            .iter()
            .map(|p| (p.peer_id.as_str(), p.by))
            .collect();
        assert_eq!(seen, [("P1", "address"), ("P2", "remote")]);
        assert!(links[1].peers.is_empty());
    }

    #[test]
    fn snapshots_serialize_in_the_api_shape() {
        let mut s = Snapshot::default();
        s.links.push(Link::new(LinkKind::Cjdns));
        let v = serde_json::to_value(&s).unwrap();
        assert_eq!(v["links"][0]["kind"], "cjdns");
        for key in [
            "address",
            "remote",
            "state",
            "bytes_in",
            "bytes_out",
            "rate_in",
            "rate_out",
            "latency_ms",
            "loss",
            "uptime_s",
        ] {
            assert!(v["links"][0].get(key).is_some(), "{key}");
        }
        assert!(v.get("self").is_some());
        assert_eq!(v["daemons"]["yggdrasil"]["state"], "off");
    }

    #[tokio::test]
    async fn absent_daemons_show_as_absent() {
        let dir = tempfile::tempdir().unwrap();
        let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let port = udp.local_addr().unwrap().port();
        // Nothing reads this socket once dropped: cjdns is absent there.
        drop(udp);
        let config = MeshConfig {
            yggdrasil_admin: format!("unix://{}/none.sock", dir.path().display()),
            cjdns_admin: format!("127.0.0.1:{port}"),
            cjdns_password: String::new(),
            poll_interval: Duration::from_millis(100),
            timeout: Duration::from_millis(500),
        };
        let cancel = CancellationToken::new();
        let mesh = Mesh::spawn(&config, None, cancel.clone());
        let deadline = Instant::now() + Duration::from_secs(5);
        while mesh.snapshot().updated_unix_ms == 0 {
            assert!(Instant::now() < deadline, "no poll");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let s = mesh.snapshot();
        assert_eq!(s.daemons.yggdrasil.state, DaemonState::Absent, "{s:?}");
        assert_eq!(s.daemons.cjdns.state, DaemonState::Absent, "{s:?}");
        assert!(s.links.is_empty());
        cancel.cancel();
    }
}
