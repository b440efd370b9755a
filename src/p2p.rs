//! The libp2p node: one swarm that carries Bitswap, IPNS over pubsub and
//! mirrors to other nodes (kubo, Helia, other meshcasts).
//!
//! ```text
//! TCP + Noise + Yamux ┐                 ┌ identify, ping
//! QUIC-v1             ┴─> Swarm task ───┼ mDNS (dial what it finds), Kademlia (WAN + LAN DHT)
//!   ^   commands (bounded)    │         ├ gossipsub (IPNS records)   -> PubsubEvent broadcast
//!   │                         │         └ libp2p-stream (Bitswap, fetch) -> stream_control()
//!  P2p handle <── PeerEvent broadcast ──┘
//! ```
//!
//! The swarm lives in one task that owns it; everything else talks to it
//! through the [`P2p`] handle: bounded commands in, broadcasts out. Protocols
//! that are plain request/response over a stream (Bitswap, `/libp2p/fetch`)
//! do not go through the task at all: they open and accept streams with the
//! [`libp2p_stream::Control`] from [`P2p::stream_control`].
//!
//! The DHTs keep this node's IPNS records ([`P2p::put_record`]) and answer
//! provider lookups ([`P2p::providers`]): provider records peers announced
//! here, then a `get_providers` query per DHT with peers.

pub mod bitswap;
pub mod mirror;
pub mod naming;

use crate::config::P2pConfig;
use crate::store::StoreError;
use libp2p::core::ConnectedPoint;
use libp2p::futures::StreamExt;
use libp2p::identity::Keypair;
use libp2p::kad::store::MemoryStore;
use libp2p::multiaddr::Protocol;
use libp2p::swarm::behaviour::toggle::Toggle;
use libp2p::swarm::{NetworkBehaviour, SwarmEvent};
use libp2p::{
    connection_limits, gossipsub, identify, kad, mdns, memory_connection_limits, noise, ping,
    yamux, Multiaddr, PeerId, StreamProtocol, Swarm,
};
use serde::Serialize;
use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};
use thiserror::Error;
use tokio::sync::{broadcast, mpsc, oneshot};
use tokio_util::sync::CancellationToken;

/// The agent string other peers see in identify.
pub const AGENT: &str = concat!("meshcast/", env!("CARGO_PKG_VERSION"));
/// The Amino (public) DHT protocol.
pub const KAD_WAN: StreamProtocol = StreamProtocol::new("/ipfs/kad/1.0.0");
/// kubo's LAN DHT protocol.
pub const KAD_LAN: StreamProtocol = StreamProtocol::new("/ipfs/lan/kad/1.0.0");

/// The file that keeps the node's identity in the data directory.
const NODE_KEY_FILE: &str = "node.key";
/// The key that signs pubsub messages, and the highest message sequence
/// number it may have used (see [`pubsub_author`]).
const PUBSUB_KEY_FILE: &str = "pubsub.key";
const PUBSUB_SEQNO_FILE: &str = "pubsub.seqno";

/// Commands queued to the swarm task at most.
const COMMAND_QUEUE: usize = 256;
/// Peer and pubsub events buffered for each listener; a listener that falls
/// further behind skips the oldest.
const EVENT_BUFFER: usize = 1024;
/// Longest wait between redials of a configured peer.
const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// What went wrong in the node.
#[derive(Debug, Error)]
pub enum P2pError {
    /// The node key could not be read or written.
    #[error("node key: {0}")]
    Key(#[from] StoreError),
    /// The node key file is not a libp2p key.
    #[error(
        "{path} is not a libp2p private key ({source}); move it away to create a new identity"
    )]
    BadKey {
        /// The file.
        path: PathBuf,
        /// What the decoder said.
        source: libp2p::identity::DecodingError,
    },
    /// A transport could not be set up.
    #[error("cannot set up the {what} transport: {reason}")]
    Transport {
        /// Which transport.
        what: &'static str,
        /// Why.
        reason: String,
    },
    /// A listen address could not be bound.
    #[error("cannot listen on {addr}: {reason}; is another node using it? (set --p2p)")]
    Listen {
        /// The address.
        addr: Multiaddr,
        /// Why.
        reason: String,
    },
    /// A configured peer address has no `/p2p/<peer id>`.
    #[error("peer address {0} must end in /p2p/<peer id>")]
    PeerAddr(Multiaddr),
    /// A pubsub publish failed for a reason other than having no peers.
    #[error("pubsub publish: {0}")]
    Publish(String),
    /// The node has stopped.
    #[error("the p2p node has stopped")]
    Stopped,
}

/// A peer connected or went away (its last connection closed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerEvent {
    /// The first connection to this peer is up.
    Connected(PeerId),
    /// The last connection to this peer closed.
    Disconnected(PeerId),
}

/// Something seen on pubsub.
#[derive(Debug, Clone)]
pub enum PubsubEvent {
    /// A message on a topic this node subscribed to. It is neither
    /// forwarded nor dropped until someone calls [`P2p::validate`].
    Message {
        /// The topic.
        topic: String,
        /// The payload.
        data: bytes::Bytes,
        /// The peer that sent it to us.
        propagation_source: PeerId,
        /// The id to validate it with.
        id: gossipsub::MessageId,
    },
    /// A peer subscribed to a topic.
    Subscribed {
        /// The peer.
        peer: PeerId,
        /// The topic.
        topic: String,
    },
}

/// What a received pubsub message deserves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Valid and new: forward it.
    Accept,
    /// Valid but not news: drop it quietly.
    Ignore,
    /// Invalid: drop it and lower the sender's score.
    Reject,
}

/// A snapshot of the node for the API and dashboard.
#[derive(Debug, Clone, Serialize)]
pub struct NodeInfo {
    /// This node's peer id.
    pub peer_id: String,
    /// Full multiaddrs others can dial, with `/p2p/<peer_id>`.
    pub addrs: Vec<String>,
    /// Connected peers.
    pub peers: Vec<PeerInfo>,
}

/// A peer that provides some content, by the DHT.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Provider {
    /// Its peer id.
    pub peer_id: PeerId,
    /// Addresses it can be dialled at, as far as this node knows.
    pub addrs: Vec<Multiaddr>,
}

/// One connected peer.
#[derive(Debug, Clone, Serialize)]
pub struct PeerInfo {
    /// Its peer id.
    pub peer_id: String,
    /// The addresses of our connections to it.
    pub addrs: Vec<String>,
    /// What it says it runs (identify), when it said.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub agent: Option<String>,
    /// Round-trip time of the last ping, in milliseconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rtt_ms: Option<f64>,
    /// Whether this peer is one we keep connected (configured).
    pub configured: bool,
}

enum Command {
    Dial(Multiaddr),
    Subscribe(String),
    Publish {
        topic: String,
        data: Vec<u8>,
        reply: oneshot::Sender<Result<(), P2pError>>,
    },
    Validate {
        id: gossipsub::MessageId,
        source: PeerId,
        verdict: Verdict,
    },
    PutRecord {
        key: Vec<u8>,
        value: Vec<u8>,
    },
    Info(oneshot::Sender<NodeInfo>),
    /// Providers of a DHT key, each sent on `reply` as found; the channel
    /// closes when the lookups are done.
    Providers {
        key: Vec<u8>,
        reply: mpsc::Sender<Provider>,
    },
    TopicPeers {
        topic: String,
        reply: oneshot::Sender<Vec<PeerId>>,
    },
}

/// The handle to the running node. Cheap to clone.
#[derive(Clone)]
pub struct P2p {
    peer_id: PeerId,
    commands: mpsc::Sender<Command>,
    peers: broadcast::Sender<PeerEvent>,
    pubsub: broadcast::Sender<PubsubEvent>,
    control: libp2p_stream::Control,
    connected: std::sync::Arc<std::sync::Mutex<BTreeSet<PeerId>>>,
}

impl std::fmt::Debug for P2p {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("P2p")
            .field("peer_id", &self.peer_id)
            .finish()
    }
}

#[derive(NetworkBehaviour)]
struct Behaviour {
    limits: connection_limits::Behaviour,
    memory: memory_connection_limits::Behaviour,
    identify: identify::Behaviour,
    ping: ping::Behaviour,
    mdns: Toggle<mdns::tokio::Behaviour>,
    kad: kad::Behaviour<MemoryStore>,
    lan_kad: kad::Behaviour<MemoryStore>,
    gossipsub: gossipsub::Behaviour,
    stream: libp2p_stream::Behaviour,
}

impl ProviderLookup {
    /// Sends `p` unless it was sent already; a caller that stopped
    /// listening (or is slow) misses it.
    fn offer(&self, p: Provider) {
        let new = self.seen.lock().is_ok_and(|mut s| s.insert(p.peer_id));
        if new {
            let _ = self.reply.try_send(p);
        }
    }
}

/// Reads the node key from `dir`, or creates one (Ed25519) on first start.
pub fn node_key(dir: &Path) -> Result<Keypair, P2pError> {
    load_or_create_key(&dir.join(NODE_KEY_FILE))
}

fn load_or_create_key(path: &Path) -> Result<Keypair, P2pError> {
    match std::fs::read(path) {
        Ok(bytes) => Keypair::from_protobuf_encoding(&bytes).map_err(|source| P2pError::BadKey {
            path: path.to_owned(),
            source,
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let key = Keypair::generate_ed25519();
            let bytes = key
                .to_protobuf_encoding()
                .expect("an Ed25519 key always encodes");
            crate::store::write_secret(path, &bytes)?;
            Ok(key)
        }
        Err(e) => Err(StoreError::io("read", path)(e).into()),
    }
}

/// The key that signs our pubsub messages.
///
/// gossipsub numbers a signer's messages from the wall clock at start
/// (nanoseconds), and kubo drops a message whose number is not above the
/// last it saw from that signer, remembering it across restarts. A node
/// whose clock went backwards (no NTP on an offline mesh) would be muted
/// until the clock caught up. So the highest number this signer may have
/// used is kept in the data directory, and when the clock is behind it the
/// node signs with a fresh key: every signer's numbers only grow. The
/// pubsub signer need not be the node's identity; IPNS records carry
/// their own signature.
fn pubsub_author(dir: &Path, node: &Keypair) -> Result<(Keypair, PubsubSeqno), P2pError> {
    let seq_path = dir.join(PUBSUB_SEQNO_FILE);
    let key_path = dir.join(PUBSUB_KEY_FILE);
    let high: u64 = std::fs::read_to_string(&seq_path)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0);
    let now = unix_nanos(SystemTime::now());
    let key = if now <= high {
        tracing::warn!(
            "the clock is behind the last pubsub message this node sent; signing pubsub with a new key"
        );
        let key = Keypair::generate_ed25519();
        let bytes = key.to_protobuf_encoding().expect("Ed25519 encodes");
        crate::store::write_secret(&key_path, &bytes)?;
        key
    } else if key_path.exists() {
        load_or_create_key(&key_path)?
    } else {
        node.clone()
    };
    Ok((
        key,
        PubsubSeqno {
            path: seq_path,
            start: now,
            sent: 0,
        },
    ))
}

/// Tracks the highest pubsub sequence number used, as gossipsub assigns
/// them (start time in nanoseconds, then one more per message).
struct PubsubSeqno {
    path: PathBuf,
    start: u64,
    sent: u64,
}

impl PubsubSeqno {
    fn record_publish(&mut self) {
        self.sent += 1;
        let high = self.start.saturating_add(self.sent);
        // Not fsynced: losing the last few numbers in a crash only matters
        // if the clock also went backwards by less than that.
        if let Err(e) = std::fs::write(&self.path, format!("{high}\n")) {
            tracing::warn!("cannot record the pubsub sequence number: {e}");
        }
    }
}

fn unix_nanos(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_nanos().min(u64::MAX as u128) as u64)
        .unwrap_or(0)
}

fn transport_err(what: &'static str) -> impl Fn(String) -> P2pError {
    move |reason| P2pError::Transport { what, reason }
}

/// A configured peer we keep connected.
struct KeptPeer {
    addr: Multiaddr,
    next_dial: Instant,
    backoff: Duration,
}

struct Task {
    swarm: Swarm<Behaviour>,
    commands: mpsc::Receiver<Command>,
    peers: broadcast::Sender<PeerEvent>,
    pubsub: broadcast::Sender<PubsubEvent>,
    connected: std::sync::Arc<std::sync::Mutex<BTreeSet<PeerId>>>,
    kept: HashMap<PeerId, KeptPeer>,
    listen_addrs: BTreeSet<Multiaddr>,
    agents: HashMap<PeerId, String>,
    rtts: HashMap<PeerId, Duration>,
    remote_addrs: HashMap<PeerId, Vec<Multiaddr>>,
    /// The listen addresses peers told us in identify (bounded per peer).
    identified_addrs: HashMap<PeerId, Vec<Multiaddr>>,
    /// Provider lookups under way: each DHT query's lookup.
    provider_queries: HashMap<kad::QueryId, ProviderLookup>,
    seqno: PubsubSeqno,
}

/// One provider lookup, over one query per DHT.
struct ProviderLookup {
    reply: mpsc::Sender<Provider>,
    /// Shared by the lookup's queries: the channel closes with the last.
    seen: std::sync::Arc<std::sync::Mutex<BTreeSet<PeerId>>>,
}

impl P2p {
    /// Starts the node: binds the listen addresses (returning once each has
    /// an address), then dials the configured peers in the background.
    pub async fn spawn(
        config: &P2pConfig,
        data_dir: &Path,
        shutdown: CancellationToken,
    ) -> Result<Self, P2pError> {
        let key = node_key(data_dir)?;
        let (author, seqno) = pubsub_author(data_dir, &key)?;
        let peer_id = key.public().to_peer_id();
        let mut kept = HashMap::new();
        for addr in &config.peers {
            let Some(Protocol::P2p(id)) = addr.iter().last() else {
                return Err(P2pError::PeerAddr(addr.clone()));
            };
            if id != peer_id {
                kept.insert(
                    id,
                    KeptPeer {
                        addr: addr.clone(),
                        next_dial: Instant::now(),
                        backoff: Duration::from_secs(1),
                    },
                );
            }
        }
        let mdns_on = config.mdns;
        let limits = connection_limits::ConnectionLimits::default()
            .with_max_established(Some(config.max_connections))
            .with_max_pending_incoming(Some(config.max_pending_connections))
            .with_max_pending_outgoing(Some(config.max_pending_connections))
            .with_max_established_per_peer(Some(config.max_connections_per_peer));
        let max_memory = config.max_memory;
        let mut swarm = libp2p::SwarmBuilder::with_existing_identity(key)
            .with_tokio()
            .with_tcp(
                libp2p::tcp::Config::default().nodelay(true),
                noise::Config::new,
                yamux::Config::default,
            )
            .map_err(|e| transport_err("TCP")(e.to_string()))?
            .with_quic()
            .with_behaviour(|key| {
                let peer_id = key.public().to_peer_id();
                let mdns = if mdns_on {
                    Some(mdns::tokio::Behaviour::new(
                        mdns::Config::default(),
                        peer_id,
                    )?)
                } else {
                    None
                };
                let kad_with = |protocol: StreamProtocol| {
                    let mut cfg = kad::Config::new(protocol);
                    cfg.set_query_timeout(Duration::from_secs(30));
                    let mut k =
                        kad::Behaviour::with_config(peer_id, MemoryStore::new(peer_id), cfg);
                    // Mesh nodes rarely have a confirmed public address, yet
                    // should still answer DHT queries from their neighbours.
                    k.set_mode(Some(kad::Mode::Server));
                    k
                };
                let gossip_cfg = gossipsub::ConfigBuilder::default()
                    .validation_mode(gossipsub::ValidationMode::Strict)
                    .validate_messages()
                    .max_transmit_size(64 << 10)
                    .build()
                    .map_err(|e| e.to_string())?;
                let gossipsub = gossipsub::Behaviour::new(
                    gossipsub::MessageAuthenticity::Signed(author),
                    gossip_cfg,
                )?;
                Ok(Behaviour {
                    limits: connection_limits::Behaviour::new(limits),
                    memory: memory_connection_limits::Behaviour::with_max_bytes(max_memory),
                    identify: identify::Behaviour::new(
                        identify::Config::new("ipfs/0.1.0".into(), key.public())
                            .with_agent_version(AGENT.into())
                            .with_push_listen_addr_updates(true),
                    ),
                    ping: ping::Behaviour::new(ping::Config::new()),
                    mdns: mdns.into(),
                    kad: kad_with(KAD_WAN),
                    lan_kad: kad_with(KAD_LAN),
                    gossipsub,
                    stream: libp2p_stream::Behaviour::new(),
                })
            })
            .map_err(|e| transport_err("behaviour")(e.to_string()))?
            .with_swarm_config(|c| c.with_idle_connection_timeout(config.idle_timeout))
            .build();

        let mut listeners = Vec::new();
        for addr in &config.listen {
            let id = swarm
                .listen_on(addr.clone())
                .map_err(|e| P2pError::Listen {
                    addr: addr.clone(),
                    reason: e.to_string(),
                })?;
            listeners.push((id, addr.clone()));
        }
        // Wait until every listener has its address, so that what the node
        // reports (API, logs) is complete from the start.
        let mut listen_addrs = BTreeSet::new();
        let mut pending: HashMap<_, _> = listeners.into_iter().collect();
        let deadline = tokio::time::sleep(Duration::from_secs(5));
        tokio::pin!(deadline);
        while !pending.is_empty() {
            tokio::select! {
                ev = swarm.select_next_some() => match ev {
                    SwarmEvent::NewListenAddr { listener_id, address } => {
                        pending.remove(&listener_id);
                        listen_addrs.insert(address);
                    }
                    SwarmEvent::ListenerClosed { listener_id, reason, .. } => {
                        if let Some(addr) = pending.remove(&listener_id) {
                            let reason = match reason {
                                Err(e) => e.to_string(),
                                Ok(()) => "closed".into(),
                            };
                            return Err(P2pError::Listen { addr, reason });
                        }
                    }
                    SwarmEvent::ListenerError { listener_id, error } => {
                        if let Some(addr) = pending.remove(&listener_id) {
                            return Err(P2pError::Listen { addr, reason: error.to_string() });
                        }
                    }
                    _ => {}
                },
                _ = &mut deadline => break,
            }
        }

        let control = swarm.behaviour().stream.new_control();
        let (tx, rx) = mpsc::channel(COMMAND_QUEUE);
        let (peers, _) = broadcast::channel(EVENT_BUFFER);
        let (pubsub, _) = broadcast::channel(EVENT_BUFFER);
        let connected = std::sync::Arc::default();
        let task = Task {
            swarm,
            commands: rx,
            peers: peers.clone(),
            pubsub: pubsub.clone(),
            connected: std::sync::Arc::clone(&connected),
            kept,
            listen_addrs,
            agents: HashMap::new(),
            rtts: HashMap::new(),
            remote_addrs: HashMap::new(),
            identified_addrs: HashMap::new(),
            provider_queries: HashMap::new(),
            seqno,
        };
        tokio::spawn(task.run(shutdown));
        Ok(Self {
            peer_id,
            commands: tx,
            peers,
            pubsub,
            control,
            connected,
        })
    }

    /// This node's peer id.
    pub fn peer_id(&self) -> PeerId {
        self.peer_id
    }

    /// Opens and accepts protocol streams (Bitswap, fetch).
    pub fn stream_control(&self) -> libp2p_stream::Control {
        self.control.clone()
    }

    /// Peers connecting and leaving, from now on.
    pub fn peer_events(&self) -> broadcast::Receiver<PeerEvent> {
        self.peers.subscribe()
    }

    /// Pubsub messages and subscriptions, from now on.
    pub fn pubsub_events(&self) -> broadcast::Receiver<PubsubEvent> {
        self.pubsub.subscribe()
    }

    /// The peers connected now.
    pub fn connected_peers(&self) -> Vec<PeerId> {
        self.connected
            .lock()
            .map(|c| c.iter().copied().collect())
            .unwrap_or_default()
    }

    async fn send(&self, c: Command) -> Result<(), P2pError> {
        self.commands.send(c).await.map_err(|_| P2pError::Stopped)
    }

    /// Dials an address (once; configured peers are redialled by the node).
    pub async fn dial(&self, addr: Multiaddr) -> Result<(), P2pError> {
        self.send(Command::Dial(addr)).await
    }

    /// Joins a pubsub topic: its messages come out of [`Self::pubsub_events`].
    pub async fn subscribe(&self, topic: &str) -> Result<(), P2pError> {
        self.send(Command::Subscribe(topic.to_owned())).await
    }

    /// Publishes on a topic. Having no peer on the topic is not an error:
    /// a node alone still publishes (and later peers fetch the record).
    pub async fn publish(&self, topic: &str, data: Vec<u8>) -> Result<(), P2pError> {
        let (reply, rx) = oneshot::channel();
        self.send(Command::Publish {
            topic: topic.to_owned(),
            data,
            reply,
        })
        .await?;
        rx.await.map_err(|_| P2pError::Stopped)?
    }

    /// Tells gossipsub what a received message deserves.
    pub async fn validate(
        &self,
        id: gossipsub::MessageId,
        source: PeerId,
        verdict: Verdict,
    ) -> Result<(), P2pError> {
        self.send(Command::Validate {
            id,
            source,
            verdict,
        })
        .await
    }

    /// Puts a record to both DHTs when they have peers; never waits for it.
    pub async fn put_record(&self, key: Vec<u8>, value: Vec<u8>) -> Result<(), P2pError> {
        self.send(Command::PutRecord { key, value }).await
    }

    /// The peers we know to be on a topic.
    pub async fn topic_peers(&self, topic: &str) -> Result<Vec<PeerId>, P2pError> {
        let (reply, rx) = oneshot::channel();
        self.send(Command::TopicPeers {
            topic: topic.to_owned(),
            reply,
        })
        .await?;
        rx.await.map_err(|_| P2pError::Stopped)
    }

    /// Looks `key` (a multihash's bytes) up in both DHTs: the provider
    /// records this node keeps and those its DHT peers know. Providers come
    /// on the returned channel as they are found (each once); it closes
    /// when the lookups are done.
    pub async fn providers(&self, key: Vec<u8>) -> Result<mpsc::Receiver<Provider>, P2pError> {
        let (reply, rx) = mpsc::channel(64);
        self.send(Command::Providers { key, reply }).await?;
        Ok(rx)
    }

    /// A snapshot for the API.
    pub async fn info(&self) -> Result<NodeInfo, P2pError> {
        let (reply, rx) = oneshot::channel();
        self.send(Command::Info(reply)).await?;
        rx.await.map_err(|_| P2pError::Stopped)
    }
}

impl Task {
    async fn run(mut self, shutdown: CancellationToken) {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                ev = self.swarm.select_next_some() => self.on_swarm_event(ev),
                cmd = self.commands.recv() => match cmd {
                    Some(cmd) => self.on_command(cmd),
                    None => break,
                },
                _ = tick.tick() => self.redial(),
            }
        }
    }

    fn redial(&mut self) {
        let now = Instant::now();
        for (peer, kept) in &mut self.kept {
            if self.swarm.is_connected(peer) || kept.next_dial > now {
                continue;
            }
            tracing::debug!(%peer, addr = %kept.addr, "dialling configured peer");
            if let Err(e) = self.swarm.dial(kept.addr.clone()) {
                tracing::debug!(%peer, "dial: {e}");
            }
            kept.next_dial = now + kept.backoff;
            kept.backoff = (kept.backoff * 2).min(MAX_BACKOFF);
        }
    }

    fn on_command(&mut self, cmd: Command) {
        match cmd {
            Command::Dial(addr) => {
                if let Err(e) = self.swarm.dial(addr.clone()) {
                    tracing::info!(%addr, "dial: {e}");
                }
            }
            Command::Subscribe(topic) => {
                let topic = gossipsub::IdentTopic::new(topic);
                if let Err(e) = self.swarm.behaviour_mut().gossipsub.subscribe(&topic) {
                    tracing::warn!(%topic, "pubsub subscribe: {e}");
                }
            }
            Command::Publish { topic, data, reply } => {
                let topic = gossipsub::IdentTopic::new(topic);
                let r = match self.swarm.behaviour_mut().gossipsub.publish(topic, data) {
                    Ok(_) => {
                        self.seqno.record_publish();
                        Ok(())
                    }
                    // Alone on the topic: the message was still numbered.
                    Err(gossipsub::PublishError::NoPeersSubscribedToTopic) => {
                        self.seqno.record_publish();
                        Ok(())
                    }
                    Err(gossipsub::PublishError::Duplicate) => Ok(()),
                    Err(e) => Err(P2pError::Publish(e.to_string())),
                };
                let _ = reply.send(r);
            }
            Command::Validate {
                id,
                source,
                verdict,
            } => {
                let acceptance = match verdict {
                    Verdict::Accept => gossipsub::MessageAcceptance::Accept,
                    Verdict::Ignore => gossipsub::MessageAcceptance::Ignore,
                    Verdict::Reject => gossipsub::MessageAcceptance::Reject,
                };
                let _ = self
                    .swarm
                    .behaviour_mut()
                    .gossipsub
                    .report_message_validation_result(&id, &source, acceptance);
            }
            Command::PutRecord { key, value } => {
                let record = kad::Record::new(key, value);
                let b = self.swarm.behaviour_mut();
                for k in [&mut b.kad, &mut b.lan_kad] {
                    // Kept here whatever happens, so a DHT client that asks
                    // this node (a browser's or Helia's, say) gets it.
                    if let Err(e) = kad::store::RecordStore::put(k.store_mut(), record.clone()) {
                        tracing::debug!("DHT store: {e}");
                    }
                    // No peers: nothing to put to, and the record is
                    // published over pubsub anyway.
                    if k.kbuckets().any(|b| b.num_entries() > 0) {
                        if let Err(e) = k.put_record(record.clone(), kad::Quorum::One) {
                            tracing::debug!("DHT put: {e}");
                        }
                    }
                }
            }
            Command::Info(reply) => {
                let _ = reply.send(self.info());
            }
            Command::Providers { key, reply } => self.find_providers(key, reply),
            Command::TopicPeers { topic, reply } => {
                let hash = gossipsub::IdentTopic::new(topic).hash();
                let peers = self
                    .swarm
                    .behaviour()
                    .gossipsub
                    .all_peers()
                    .filter(|(_, topics)| topics.contains(&&hash))
                    .map(|(p, _)| *p)
                    .collect();
                let _ = reply.send(peers);
            }
        }
    }

    fn find_providers(&mut self, key: Vec<u8>, reply: mpsc::Sender<Provider>) {
        let key = kad::RecordKey::new(&key);
        let seen = std::sync::Arc::new(std::sync::Mutex::new(BTreeSet::new()));
        let b = self.swarm.behaviour_mut();
        let mut local = Vec::new();
        let mut queries = Vec::new();
        for k in [&mut b.kad, &mut b.lan_kad] {
            // What peers announced to this node, with the addresses they
            // gave.
            local.extend(
                kad::store::RecordStore::providers(k.store_mut(), &key)
                    .into_iter()
                    .map(|r| Provider {
                        peer_id: r.provider,
                        addrs: r.addresses,
                    }),
            );
            if k.kbuckets().any(|b| b.num_entries() > 0) {
                queries.push(k.get_providers(key.clone()));
            }
        }
        let lookup = ProviderLookup { reply, seen };
        for p in local {
            lookup.offer(p);
        }
        // With no query, dropping `lookup` closes the channel now.
        for q in queries {
            self.provider_queries.insert(
                q,
                ProviderLookup {
                    reply: lookup.reply.clone(),
                    seen: lookup.seen.clone(),
                },
            );
        }
    }

    /// The addresses to give for a provider found by a DHT query.
    fn addrs_of(&self, peer: &PeerId) -> Vec<Multiaddr> {
        self.identified_addrs.get(peer).cloned().unwrap_or_default()
    }

    fn info(&self) -> NodeInfo {
        let me = *self.swarm.local_peer_id();
        let mut addrs: BTreeSet<Multiaddr> = self.listen_addrs.clone();
        addrs.extend(self.swarm.external_addresses().cloned());
        let peers = self
            .swarm
            .connected_peers()
            .map(|p| PeerInfo {
                peer_id: p.to_string(),
                addrs: self
                    .remote_addrs
                    .get(p)
                    .map(|a| a.iter().map(|a| a.to_string()).collect())
                    .unwrap_or_default(),
                agent: self.agents.get(p).cloned(),
                rtt_ms: self.rtts.get(p).map(|d| d.as_secs_f64() * 1000.0),
                configured: self.kept.contains_key(p),
            })
            .collect();
        NodeInfo {
            peer_id: me.to_string(),
            addrs: addrs
                .into_iter()
                .map(|a| a.with(Protocol::P2p(me)).to_string())
                .collect(),
            peers,
        }
    }

    fn on_swarm_event(&mut self, ev: SwarmEvent<BehaviourEvent>) {
        match ev {
            SwarmEvent::NewListenAddr { address, .. } => {
                tracing::info!("p2p listening on {address}");
                self.listen_addrs.insert(address);
            }
            SwarmEvent::ExpiredListenAddr { address, .. } => {
                self.listen_addrs.remove(&address);
            }
            SwarmEvent::ConnectionEstablished {
                peer_id,
                endpoint,
                num_established,
                ..
            } => {
                let addr = match &endpoint {
                    ConnectedPoint::Dialer { address, .. } => address.clone(),
                    ConnectedPoint::Listener { send_back_addr, .. } => send_back_addr.clone(),
                };
                let addrs = self.remote_addrs.entry(peer_id).or_default();
                if !addrs.contains(&addr) {
                    addrs.push(addr);
                }
                if let Some(kept) = self.kept.get_mut(&peer_id) {
                    kept.backoff = Duration::from_secs(1);
                }
                if num_established.get() == 1 {
                    tracing::info!(peer = %peer_id, "peer connected");
                    if let Ok(mut c) = self.connected.lock() {
                        c.insert(peer_id);
                    }
                    let _ = self.peers.send(PeerEvent::Connected(peer_id));
                }
            }
            SwarmEvent::ConnectionClosed {
                peer_id,
                endpoint,
                num_established,
                ..
            } => {
                let addr = match &endpoint {
                    ConnectedPoint::Dialer { address, .. } => address,
                    ConnectedPoint::Listener { send_back_addr, .. } => send_back_addr,
                };
                if let Some(addrs) = self.remote_addrs.get_mut(&peer_id) {
                    addrs.retain(|a| a != addr);
                }
                if num_established == 0 {
                    tracing::info!(peer = %peer_id, "peer disconnected");
                    self.remote_addrs.remove(&peer_id);
                    self.agents.remove(&peer_id);
                    self.identified_addrs.remove(&peer_id);
                    self.rtts.remove(&peer_id);
                    if let Ok(mut c) = self.connected.lock() {
                        c.remove(&peer_id);
                    }
                    let _ = self.peers.send(PeerEvent::Disconnected(peer_id));
                    if let Some(kept) = self.kept.get_mut(&peer_id) {
                        kept.next_dial = Instant::now() + kept.backoff;
                    }
                }
            }
            SwarmEvent::OutgoingConnectionError {
                peer_id: Some(peer),
                error,
                ..
            } => {
                tracing::debug!(%peer, "outgoing connection failed: {error}");
            }
            SwarmEvent::Behaviour(ev) => self.on_behaviour_event(ev),
            _ => {}
        }
    }

    fn on_behaviour_event(&mut self, ev: BehaviourEvent) {
        match ev {
            BehaviourEvent::Identify(
                identify::Event::Received { peer_id, info, .. }
                | identify::Event::Pushed { peer_id, info, .. },
            ) => {
                tracing::debug!(peer = %peer_id, agent = info.agent_version, protocols = ?info.protocols, "identified");
                // Bounded: a peer can claim any number of addresses.
                let addrs: Vec<Multiaddr> = info.listen_addrs.into_iter().take(16).collect();
                let b = self.swarm.behaviour_mut();
                for (proto, k) in [(KAD_WAN, &mut b.kad), (KAD_LAN, &mut b.lan_kad)] {
                    if info.protocols.contains(&proto) {
                        for addr in &addrs {
                            k.add_address(&peer_id, addr.clone());
                        }
                    }
                }
                self.identified_addrs.insert(peer_id, addrs);
                self.agents.insert(peer_id, info.agent_version);
            }
            BehaviourEvent::Ping(ping::Event {
                peer,
                result: Ok(rtt),
                ..
            }) => {
                self.rtts.insert(peer, rtt);
            }
            BehaviourEvent::Mdns(mdns::Event::Discovered(found)) => {
                for (peer, addr) in found {
                    if !self.swarm.is_connected(&peer) {
                        tracing::debug!(%peer, %addr, "found on the LAN (mDNS)");
                        let _ = self.swarm.dial(addr.with(Protocol::P2p(peer)));
                    }
                }
            }
            BehaviourEvent::Gossipsub(gossipsub::Event::Message {
                propagation_source,
                message_id,
                message,
            }) => {
                let _ = self.pubsub.send(PubsubEvent::Message {
                    topic: message.topic.into_string(),
                    data: message.data.into(),
                    propagation_source,
                    id: message_id,
                });
            }
            BehaviourEvent::Gossipsub(gossipsub::Event::Subscribed { peer_id, topic }) => {
                let _ = self.pubsub.send(PubsubEvent::Subscribed {
                    peer: peer_id,
                    topic: topic.into_string(),
                });
            }
            BehaviourEvent::Kad(kad::Event::OutboundQueryProgressed {
                result: kad::QueryResult::PutRecord(r),
                ..
            })
            | BehaviourEvent::LanKad(kad::Event::OutboundQueryProgressed {
                result: kad::QueryResult::PutRecord(r),
                ..
            }) => match r {
                Ok(_) => tracing::debug!("DHT put done"),
                Err(e) => tracing::debug!("DHT put: {e:?}"),
            },
            BehaviourEvent::Kad(kad::Event::OutboundQueryProgressed {
                id,
                result: kad::QueryResult::GetProviders(r),
                step,
                ..
            })
            | BehaviourEvent::LanKad(kad::Event::OutboundQueryProgressed {
                id,
                result: kad::QueryResult::GetProviders(r),
                step,
                ..
            }) => {
                if let Ok(kad::GetProvidersOk::FoundProviders { providers, .. }) = r {
                    let found: Vec<Provider> = providers
                        .into_iter()
                        .map(|p| Provider {
                            peer_id: p,
                            addrs: self.addrs_of(&p),
                        })
                        .collect();
                    if let Some(lookup) = self.provider_queries.get(&id) {
                        for p in found {
                            lookup.offer(p);
                        }
                    }
                }
                if step.last {
                    self.provider_queries.remove(&id);
                }
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_key_persists() {
        let dir = tempfile::tempdir().unwrap();
        let a = node_key(dir.path()).unwrap();
        let b = node_key(dir.path()).unwrap();
        assert_eq!(a.public(), b.public());
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join(NODE_KEY_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "the key is readable by its owner only");
        std::fs::write(dir.path().join(NODE_KEY_FILE), b"junk").unwrap();
        assert!(matches!(node_key(dir.path()), Err(P2pError::BadKey { .. })));
    }

    #[test]
    fn pubsub_signer_changes_only_when_the_clock_went_back() {
        let dir = tempfile::tempdir().unwrap();
        let node = node_key(dir.path()).unwrap();
        // First start: the node's own key, numbering from now.
        let (author, mut seq) = pubsub_author(dir.path(), &node).unwrap();
        assert_eq!(author.public(), node.public());
        seq.record_publish();
        // Clock fine: same signer.
        let (author, _) = pubsub_author(dir.path(), &node).unwrap();
        assert_eq!(author.public(), node.public());
        // The last number used lies in the future (the clock went back):
        // a new signer, kept for later starts.
        let future = unix_nanos(SystemTime::now()) + 3 * 86_400 * 1_000_000_000;
        std::fs::write(dir.path().join(PUBSUB_SEQNO_FILE), format!("{future}\n")).unwrap();
        let (fresh, _) = pubsub_author(dir.path(), &node).unwrap();
        assert_ne!(fresh.public(), node.public());
        std::fs::write(dir.path().join(PUBSUB_SEQNO_FILE), "1\n").unwrap();
        let (again, _) = pubsub_author(dir.path(), &node).unwrap();
        assert_eq!(again.public(), fresh.public());
    }
}
