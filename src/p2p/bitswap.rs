//! Bitswap 1.2.0 (and 1.1.0, 1.0.0): blocks to and from connected peers
//! (ipfs/specs `bitswap-protocol.md`; kubo's behaviour is boxo's
//! `bitswap/`).
//!
//! ```text
//!  peers --inbound streams--> [reader] frames -> message::Message -> hash blocks,
//!                                      look up wanted sizes -> engine::Incoming
//!                                                      |
//!  Bitswap::get ---Command::Get--> [service actor] -> engine::Engine (pure):
//!  store::notify --Added---------> (one task owns     wants, ledgers, outboxes
//!  p2p node --PeerEvent----------> all the state)          |
//!                                         | Action::Store -> store.put (blocking pool)
//!                                         | Batch per peer
//!                                         v
//!                                  [writer per peer] loads blocks, one long-lived
//!                                  outbound stream (1.2.0, else 1.1.0, 1.0.0) --> peers
//! ```
//!
//! As a server it answers want-have with HAVE (or the block itself when it
//! is tiny), want-block with the block, and DONT_HAVE when asked to; a want
//! for a block it lacks is remembered (bounded per peer and in total) and
//! served the moment the block is stored, whoever stores it, because
//! [`crate::store::notify`] announces every put: a live segment is wanted as
//! soon as a playlist names it, before it exists.
//!
//! As a client, [`Bitswap::get`] asks every connected peer (want-block to
//! a few, want-have to the rest; see [`engine`]), hashes every block
//! received (a block is identified by its hash, so forged bytes name
//! another CID and are dropped, the sender penalised), stores it, cancels the
//! want everywhere and hands it to every caller waiting for it. Peers that
//! connect later get the current wantlist.
//!
//! The service is one tokio task that owns its state, takes commands over a
//! bounded channel and stops on a cancellation token; stream readers and
//! writers are tasks of their own, bounded per peer and in total.

pub mod engine;
pub mod message;
mod metrics;
mod service;

pub use engine::Limits;
pub use service::spawn;

use super::{P2p, PeerEvent};
use crate::store::fetch::{FetchError, Fetcher};
use crate::store::{Blockstore, IDENTITY, SHA2_256};
use bytes::Bytes;
use cid::Cid;
use futures::future::BoxFuture;
use libp2p::PeerId;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use thiserror::Error;
use tokio::sync::{broadcast, mpsc, oneshot};

/// Bitswap settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// How long [`Bitswap::get`] waits for a block.
    pub timeout: Duration,
    /// What peers and callers can make the service hold.
    pub limits: Limits,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(30),
            limits: Limits::default(),
        }
    }
}

/// The node's connections, as Bitswap needs to see them.
pub trait Peers: Send + Sync + 'static {
    /// Connection changes from now on.
    fn peer_events(&self) -> broadcast::Receiver<PeerEvent>;
    /// The peers connected now (read after subscribing, and again when
    /// events were missed).
    fn connected_peers(&self) -> Vec<PeerId>;
}

impl Peers for P2p {
    fn peer_events(&self) -> broadcast::Receiver<PeerEvent> {
        P2p::peer_events(self)
    }
    fn connected_peers(&self) -> Vec<PeerId> {
        P2p::connected_peers(self)
    }
}

/// Why a block could not be fetched, or the service not started.
#[derive(Debug, Clone, Error, PartialEq, Eq)]
pub enum BitswapError {
    /// No peer sent the block in time.
    #[error("block {cid} was not received from any of {peers} connected peers within {}", humantime::format_duration(*.timeout))]
    Timeout {
        /// The block.
        cid: Cid,
        /// How long was waited.
        timeout: Duration,
        /// Peers connected when the wait ended.
        peers: usize,
    },
    /// Too many blocks are being fetched at once.
    #[error("{limit} blocks are being fetched already; retry shortly")]
    TooManyWants {
        /// The limit reached.
        limit: usize,
    },
    /// A CID whose hash meshcast cannot check, so no peer's bytes could be
    /// trusted for it.
    #[error("block {cid} uses hash function 0x{code:x}; meshcast fetches only SHA2-256 blocks")]
    UnsupportedHash {
        /// The CID.
        cid: Cid,
        /// Its multihash code.
        code: u64,
    },
    /// The block store failed.
    #[error("block store: {reason}")]
    Store {
        /// What the store said.
        reason: String,
    },
    /// The service is not running (the node is shutting down).
    #[error("Bitswap has stopped")]
    Stopped,
    /// Another Bitswap service already accepts the protocol on this node.
    #[error("cannot accept {protocol} streams: another handler is registered for it")]
    AlreadyRegistered {
        /// The protocol name.
        protocol: &'static str,
    },
}

/// Counters and gauges, for metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Stats {
    /// Blocks sent to peers.
    pub blocks_sent: u64,
    /// Bytes of blocks sent to peers.
    pub bytes_sent: u64,
    /// Wanted blocks received (and stored).
    pub blocks_received: u64,
    /// Bytes of wanted blocks received.
    pub bytes_received: u64,
    /// Blocks received again after another peer's copy.
    pub duplicate_blocks: u64,
    /// Blocks received unasked, or that did not hash: dropped.
    pub rejected_blocks: u64,
    /// Peer wants dropped for being over a limit.
    pub dropped_wants: u64,
    /// Messages received.
    pub messages_received: u64,
    /// Messages sent.
    pub messages_sent: u64,
    /// Our wants not yet satisfied.
    pub wants_pending: u64,
    /// Peers' wants remembered for blocks we lack.
    pub peer_wants_pending: u64,
    /// Peers exchanged with.
    pub peers: u64,
}

/// [`Stats`] shared between the service's tasks.
#[derive(Debug, Default)]
struct SharedStats {
    blocks_sent: AtomicU64,
    bytes_sent: AtomicU64,
    blocks_received: AtomicU64,
    bytes_received: AtomicU64,
    duplicate_blocks: AtomicU64,
    rejected_blocks: AtomicU64,
    dropped_wants: AtomicU64,
    messages_received: AtomicU64,
    messages_sent: AtomicU64,
    wants_pending: AtomicU64,
    peer_wants_pending: AtomicU64,
    peers: AtomicU64,
    traffic: std::sync::Mutex<Traffic>,
}

/// Peers whose traffic is kept; past this the least recently active goes.
const MAX_TRAFFIC_PEERS: usize = 256;
/// Blocks remembered per peer as the last it was sent.
const RECENT_BLOCKS: usize = 8;

/// What one peer exchanged with us, for the dashboard.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct PeerTraffic {
    /// Blocks sent to it.
    pub blocks_sent: u64,
    /// Bytes of blocks sent to it.
    pub bytes_sent: u64,
    /// Blocks it sent us (duplicates included).
    pub blocks_received: u64,
    /// Bytes of blocks it sent us.
    pub bytes_received: u64,
    /// The last blocks sent to it, newest first.
    pub recent_sent: Vec<String>,
    /// Sequence number of its last exchange, to find the least recent.
    #[serde(skip)]
    touched: u64,
}

/// Per-peer traffic, bounded to [`MAX_TRAFFIC_PEERS`].
#[derive(Debug, Default)]
struct Traffic {
    peers: std::collections::HashMap<PeerId, PeerTraffic>,
    clock: u64,
}

impl Traffic {
    fn entry(&mut self, peer: PeerId) -> &mut PeerTraffic {
        self.clock += 1;
        if !self.peers.contains_key(&peer) && self.peers.len() >= MAX_TRAFFIC_PEERS {
            let oldest = self
                .peers
                .iter()
                .min_by_key(|(_, t)| t.touched)
                .map(|(p, _)| *p);
            if let Some(oldest) = oldest {
                self.peers.remove(&oldest);
            }
        }
        let t = self.peers.entry(peer).or_default();
        t.touched = self.clock;
        t
    }

    fn sent(&mut self, peer: PeerId, cids: &[Cid], bytes: u64) {
        let t = self.entry(peer);
        t.blocks_sent += cids.len() as u64;
        t.bytes_sent += bytes;
        for cid in cids.iter().rev().take(RECENT_BLOCKS) {
            let cid = cid.to_string();
            t.recent_sent.retain(|c| *c != cid);
            t.recent_sent.insert(0, cid);
        }
        t.recent_sent.truncate(RECENT_BLOCKS);
    }

    fn received(&mut self, peer: PeerId, blocks: u64, bytes: u64) {
        let t = self.entry(peer);
        t.blocks_received += blocks;
        t.bytes_received += bytes;
    }
}

impl SharedStats {
    fn traffic(&self) -> std::sync::MutexGuard<'_, Traffic> {
        self.traffic.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn snapshot(&self) -> Stats {
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        Stats {
            blocks_sent: get(&self.blocks_sent),
            bytes_sent: get(&self.bytes_sent),
            blocks_received: get(&self.blocks_received),
            bytes_received: get(&self.bytes_received),
            duplicate_blocks: get(&self.duplicate_blocks),
            rejected_blocks: get(&self.rejected_blocks),
            dropped_wants: get(&self.dropped_wants),
            messages_received: get(&self.messages_received),
            messages_sent: get(&self.messages_sent),
            wants_pending: get(&self.wants_pending),
            peer_wants_pending: get(&self.peer_wants_pending),
            peers: get(&self.peers),
        }
    }
}

/// A handle to the running service. Cheap to clone.
#[derive(Clone)]
pub struct Bitswap {
    commands: mpsc::Sender<service::Command>,
    store: Arc<dyn Blockstore>,
    stats: Arc<SharedStats>,
    timeout: Duration,
}

impl std::fmt::Debug for Bitswap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bitswap")
            .field("timeout", &self.timeout)
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

impl Bitswap {
    /// The block `cid`: from the store if it is there, else from peers,
    /// waiting at most the configured timeout. Concurrent calls for the
    /// same block share one want.
    pub async fn get(&self, cid: &Cid) -> Result<Bytes, BitswapError> {
        self.get_within(cid, self.timeout).await
    }

    /// [`Bitswap::get`] with its own timeout.
    pub async fn get_within(&self, cid: &Cid, timeout: Duration) -> Result<Bytes, BitswapError> {
        match cid.hash().code() {
            IDENTITY => return Ok(Bytes::copy_from_slice(cid.hash().digest())),
            SHA2_256 => {}
            code => return Err(BitswapError::UnsupportedHash { cid: *cid, code }),
        }
        let store = self.store.clone();
        let c = *cid;
        let local = tokio::task::spawn_blocking(move || store.get(&c))
            .await
            .map_err(|e| BitswapError::Store {
                reason: e.to_string(),
            })?
            .map_err(|e| BitswapError::Store {
                reason: e.to_string(),
            })?;
        if let Some(data) = local {
            return Ok(data);
        }
        let (reply, answer) = oneshot::channel();
        self.commands
            .send(service::Command::Get { cid: *cid, reply })
            .await
            .map_err(|_| BitswapError::Stopped)?;
        match tokio::time::timeout(timeout, answer).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(BitswapError::Stopped),
            Err(_) => {
                // The service also notices the dropped receiver on its next
                // tick; this only makes the cancel prompt.
                let _ = self.commands.try_send(service::Command::Forget(*cid));
                Err(BitswapError::Timeout {
                    cid: *cid,
                    timeout,
                    peers: self.stats.peers.load(Ordering::Relaxed) as usize,
                })
            }
        }
    }

    /// The counters so far.
    pub fn stats(&self) -> Stats {
        self.stats.snapshot()
    }

    /// Reports [`Bitswap::stats`] in `registry` (under `bitswap_`), read
    /// when scraped.
    pub fn register_metrics(&self, registry: &mut prometheus_client::registry::Registry) {
        registry
            .sub_registry_with_prefix("bitswap")
            .register_collector(Box::new(metrics::StatsCollector(self.stats.clone())));
    }

    /// What each recently active peer exchanged with us (at most 256
    /// peers, the least recently active forgotten first).
    pub fn peer_traffic(&self) -> Vec<(PeerId, PeerTraffic)> {
        let t = self.stats.traffic();
        t.peers.iter().map(|(p, t)| (*p, t.clone())).collect()
    }
}

/// The gateway's fetcher: a block fetched is a block stored.
impl Fetcher for Bitswap {
    fn fetch(&self, cid: Cid, timeout: Duration) -> BoxFuture<'static, Result<(), FetchError>> {
        let this = self.clone();
        Box::pin(async move {
            match this.get_within(&cid, timeout).await {
                Ok(_) => Ok(()),
                Err(BitswapError::Timeout { cid, timeout, .. }) => {
                    Err(FetchError::Timeout { cid, timeout })
                }
                Err(e @ BitswapError::TooManyWants { .. }) => Err(FetchError::Busy(e.to_string())),
                Err(e) => Err(FetchError::Failed {
                    cid,
                    source: Box::new(e),
                }),
            }
        })
    }
}

#[cfg(test)]
mod tests;
