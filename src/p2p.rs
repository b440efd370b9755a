//! The libp2p node: one swarm that carries Bitswap, IPNS over pubsub and
//! mirrors to other nodes (kubo, Helia, other meshcasts).
//!
//! ```text
//! TCP + Noise + Yamux ┐                 ┌ identify, ping
//! QUIC-v1             ┴─> Swarm task ───┼ mDNS (dial what it finds), Kademlia (WAN + LAN DHT)
//!   ^   commands (bounded)    │         ├ gossipsub (IPNS records, part announcements) -> PubsubEvent broadcast
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
//! here, then a `get_providers` query per DHT with peers. They also carry
//! this node's own provider records: [`P2p::provide`] announces what it
//! holds (segments, sites, archives), within a budget, and
//! [`P2p::stop_providing`] withdraws what it let go (see `provide`).
//!
//! This file holds the handle, its commands and the public types; `identity`
//! the keys and pubsub sequence numbers kept in the data directory;
//! `provide` which provider records to announce when; `swarm` the task that
//! owns the swarm.

pub mod bitswap;
mod identity;
pub mod metrics;
pub mod naming;
pub mod parts;
pub mod provide;
mod swarm;

pub use identity::node_key;

use crate::config::P2pConfig;
use crate::store::StoreError;
use cid::Cid;
use libp2p::{gossipsub, Multiaddr, PeerId, StreamProtocol};
use serde::Serialize;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use thiserror::Error;
use tokio::sync::{broadcast, mpsc, oneshot};
use tokio_util::sync::CancellationToken;

/// The agent string other peers see in identify.
pub const AGENT: &str = concat!("meshcast/", env!("CARGO_PKG_VERSION"));
/// The Amino (public) DHT protocol.
pub const KAD_WAN: StreamProtocol = StreamProtocol::new("/ipfs/kad/1.0.0");
/// kubo's LAN DHT protocol.
pub const KAD_LAN: StreamProtocol = StreamProtocol::new("/ipfs/lan/kad/1.0.0");

/// What went wrong in the node.
#[derive(Debug, Error)]
pub enum P2pError {
    /// The node key could not be read or written.
    #[error("node key: {0}")]
    Key(#[from] StoreError),
    /// The node key file is not a libp2p Ed25519 key.
    #[error(
        "{path} is not a libp2p Ed25519 private key ({reason}); move it away to create a new identity"
    )]
    BadKey {
        /// The file.
        path: PathBuf,
        /// What the decoder said, or which other key type it holds.
        reason: String,
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
    Provide(Vec<Cid>),
    StopProviding(Vec<Cid>),
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

impl P2p {
    /// Starts the node: binds the listen addresses (returning once each has
    /// an address), then dials the configured peers in the background.
    /// With a `registry`, the swarm's events are recorded in it.
    pub async fn spawn(
        config: &P2pConfig,
        data_dir: &Path,
        registry: Option<&mut prometheus_client::registry::Registry>,
        shutdown: CancellationToken,
    ) -> Result<Self, P2pError> {
        let key = node_key(data_dir)?;
        let (author, seqno) = identity::pubsub_author(data_dir, &key)?;
        let metrics = registry.map(metrics::Metrics::new);
        swarm::spawn(config, key, author, seqno, metrics, shutdown).await
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

    /// Announces on both DHTs that this node provides `cids` (keyed by
    /// multihash, as kubo and Helia look them up). Queued and announced
    /// within a budget (see [`provide`]); what is provided already is not
    /// announced again, Kademlia republishes it.
    pub async fn provide(&self, cids: Vec<Cid>) -> Result<(), P2pError> {
        self.send(Command::Provide(cids)).await
    }

    /// Stops providing `cids`: no longer answered or republished here;
    /// the records peers hold expire.
    pub async fn stop_providing(&self, cids: Vec<Cid>) -> Result<(), P2pError> {
        self.send(Command::StopProviding(cids)).await
    }

    /// A snapshot for the API.
    pub async fn info(&self) -> Result<NodeInfo, P2pError> {
        let (reply, rx) = oneshot::channel();
        self.send(Command::Info(reply)).await?;
        rx.await.map_err(|_| P2pError::Stopped)
    }
}
