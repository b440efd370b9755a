//! The tokio side of Bitswap: the actor that owns the [`Engine`], the
//! stream readers and writers, the store I/O on the blocking pool.
//!
//! ```text
//! accept task: inbound stream -> reader task (bounded per peer and in total)
//! reader: frame -> Message -> Incoming (hash blocks, look up sizes) -> Command::Incoming
//!         (while a large body arrives: Command::Arriving, so its want waits)
//! actor: select { cancel, Command, PeerEvent, store Added, tick }
//!        -> Engine -> Actions (store / recheck / resolve, spawned)
//!        -> Engine::take_batches -> writer of each peer (one batch in flight)
//! writer: Batch -> load blocks -> Message -> frame on its outbound stream
//!         -> Command::Sent
//! ```

use super::engine::{Action, Batch, Engine, Incoming};
use super::message::{BlockData, Message, MessageError, Protocol, MAX_MESSAGE_SIZE};
use super::{Bitswap, BitswapError, Config, Peers, SharedStats};
use crate::p2p::PeerEvent;
use crate::store::notify::Added;
use crate::store::{Block, Blockstore, Multihash, StoreError};
use bytes::Bytes;
use cid::Cid;
use futures::io::{AsyncReadExt, AsyncWriteExt};
use futures::StreamExt;
use libp2p::{PeerId, Stream, StreamProtocol};
use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::{broadcast, mpsc, oneshot, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

/// Commands queued for the actor.
const COMMANDS: usize = 256;
/// Inbound streams read at once from one peer (kubo and Helia open one per
/// message they send).
const STREAMS_PER_PEER: usize = 32;
/// Inbound streams read at once in total.
const STREAMS_TOTAL: usize = 1024;
/// Callers waiting for blocks, per allowed want.
const WAITERS_PER_WANT: usize = 4;
/// How often stale want-blocks move on and abandoned gets are cancelled.
const TICK: Duration = Duration::from_secs(1);
/// Ticks between lookups of everything waited for: blocks put by another
/// process (`meshcast add` while serving) are not announced.
const RECHECK_TICKS: u32 = 10;
/// CIDs looked up per such pass at most.
const RECHECK_MAX: usize = 4096;
/// Opening a stream to a connected peer.
const OPEN_TIMEOUT: Duration = Duration::from_secs(10);

/// What the actor is asked to do.
#[derive(Debug)]
pub(super) enum Command {
    /// A caller wants a block.
    Get {
        cid: Cid,
        reply: oneshot::Sender<Result<Bytes, BitswapError>>,
    },
    /// A caller stopped waiting for `cid`.
    Forget(Cid),
    /// A peer's message, ready for the engine.
    Incoming { peer: PeerId, msg: Incoming },
    /// Part of a message from a peer arrived; the rest is on its way.
    Arriving { peer: PeerId },
    /// A peer's stream carried something that is not Bitswap.
    Garbled { peer: PeerId },
    /// A received block was stored (or not).
    Stored {
        block: Block,
        result: Result<(), String>,
    },
    /// Blocks found in the store on a recheck.
    Found(Vec<Added>),
    /// A wanted block read from the store after someone else put it.
    Loaded {
        cid: Cid,
        result: Result<Option<Bytes>, String>,
    },
    /// A writer finished a batch.
    Sent {
        peer: PeerId,
        ok: bool,
        blocks: Vec<Cid>,
        bytes: u64,
    },
}

/// Starts Bitswap on a libp2p node: registers the protocols with `control`
/// (so streams are accepted from now on), follows `peers`' connections and
/// `added` blocks, and runs until `cancel` fires. The returned handle ends
/// with the service.
pub fn spawn<P: Peers>(
    config: Config,
    store: Arc<dyn Blockstore>,
    added: broadcast::Receiver<Added>,
    mut control: libp2p_stream::Control,
    peers: P,
    cancel: CancellationToken,
) -> Result<(Bitswap, JoinHandle<()>), BitswapError> {
    let mut incoming = Vec::new();
    let names = Protocol::ALL
        .iter()
        .map(|p| p.name())
        .chain([Protocol::UNVERSIONED]);
    for name in names {
        let streams = control
            .accept(StreamProtocol::new(name))
            .map_err(|_| BitswapError::AlreadyRegistered { protocol: name })?;
        incoming.push(streams);
    }
    let (commands, rx) = mpsc::channel(COMMANDS);
    let stats = Arc::new(SharedStats::default());
    let handle = Bitswap {
        commands: commands.clone(),
        store: store.clone(),
        stats: stats.clone(),
        timeout: config.timeout,
    };
    tokio::spawn(
        accept(
            futures::stream::select_all(incoming),
            store.clone(),
            commands.clone(),
            cancel.clone(),
        )
        .in_current_span(),
    );
    // Subscribe before listing, so no connection falls in between.
    let events = peers.peer_events();
    let connected = peers.connected_peers();
    let mut actor = Actor {
        waiters_limit: config.limits.max_wants * WAITERS_PER_WANT,
        engine: Engine::new(config.limits.clone()),
        store,
        commands,
        waiters: HashMap::new(),
        waiting: 0,
        writers: HashMap::new(),
        control,
        stats,
        cancel: cancel.clone(),
        ticks: 0,
    };
    let now = Instant::now();
    for p in connected {
        actor.engine.peer_connected(p, now);
    }
    let task = tokio::spawn(
        actor
            .run(rx, events, peers, added)
            .instrument(tracing::info_span!("bitswap")),
    );
    Ok((handle, task))
}

type Waiter = oneshot::Sender<Result<Bytes, BitswapError>>;

struct Actor {
    engine: Engine,
    store: Arc<dyn Blockstore>,
    /// For tasks the actor spawns to report back.
    commands: mpsc::Sender<Command>,
    /// Callers waiting, by multihash, with the CID they asked for.
    waiters: HashMap<Multihash, (Cid, Vec<Waiter>)>,
    waiting: usize,
    waiters_limit: usize,
    /// One batch in flight per peer.
    writers: HashMap<PeerId, mpsc::Sender<Batch>>,
    control: libp2p_stream::Control,
    stats: Arc<SharedStats>,
    cancel: CancellationToken,
    ticks: u32,
}

impl Actor {
    async fn run<P: Peers>(
        mut self,
        mut rx: mpsc::Receiver<Command>,
        mut events: broadcast::Receiver<PeerEvent>,
        peers: P,
        mut added: broadcast::Receiver<Added>,
    ) {
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let (mut events_open, mut added_open) = (true, true);
        loop {
            tokio::select! {
                biased;
                () = self.cancel.cancelled() => break,
                cmd = rx.recv() => match cmd {
                    Some(cmd) => self.command(cmd),
                    // Unreachable while the actor holds a sender.
                    None => break,
                },
                ev = events.recv(), if events_open => match ev {
                    Ok(PeerEvent::Connected(p)) => {
                        self.engine.peer_connected(p, Instant::now());
                    }
                    Ok(PeerEvent::Disconnected(p)) => self.disconnected(&p),
                    Err(RecvError::Lagged(n)) => {
                        tracing::debug!(missed = n, "peer events lagged; listing peers again");
                        self.resync_peers(peers.connected_peers());
                    }
                    Err(RecvError::Closed) => events_open = false,
                },
                a = added.recv(), if added_open => match a {
                    Ok(a) => self.added(a),
                    Err(RecvError::Lagged(n)) => {
                        tracing::debug!(missed = n, "store notices lagged; looking again");
                        self.recheck_everything();
                    }
                    Err(RecvError::Closed) => added_open = false,
                },
                _ = tick.tick() => self.tick(),
            }
            self.flush();
            self.publish();
        }
        for (_, (_, ws)) in self.waiters.drain() {
            for w in ws {
                let _ = w.send(Err(BitswapError::Stopped));
            }
        }
        tracing::debug!("Bitswap stopped");
    }

    fn command(&mut self, cmd: Command) {
        match cmd {
            Command::Get { cid, reply } => self.get(cid, reply),
            Command::Forget(cid) => self.prune(Some(*cid.hash())),
            Command::Incoming { peer, msg } => {
                self.stats.messages_received.fetch_add(1, Ordering::Relaxed);
                if !msg.blocks.is_empty() {
                    let bytes = msg.blocks.iter().map(|b| b.data.len() as u64).sum();
                    self.stats
                        .traffic()
                        .received(peer, msg.blocks.len() as u64, bytes);
                }
                let actions = self.engine.receive(peer, msg, Instant::now());
                self.run_actions(actions);
            }
            Command::Arriving { peer } => self.engine.arriving(&peer, Instant::now()),
            Command::Garbled { peer } => {
                // As bad as a forged block: counts towards ignoring the peer.
                let msg = Incoming {
                    bad_blocks: 1,
                    ..Incoming::default()
                };
                self.engine.receive(peer, msg, Instant::now());
            }
            Command::Stored { block, result } => match result {
                Ok(()) => {
                    self.stats.blocks_received.fetch_add(1, Ordering::Relaxed);
                    self.stats
                        .bytes_received
                        .fetch_add(block.data.len() as u64, Ordering::Relaxed);
                    self.engine.block_stored(&block.cid);
                    self.resolve(block.cid.hash(), Ok(block.data));
                }
                Err(reason) => {
                    tracing::error!(cid = %block.cid, %reason, "storing a received block failed");
                    self.engine.unwant(&block.cid);
                    self.resolve(block.cid.hash(), Err(BitswapError::Store { reason }));
                }
            },
            Command::Found(found) => {
                for a in found {
                    self.added(a);
                }
            }
            Command::Loaded { cid, result } => {
                let r = match result {
                    Ok(Some(data)) => Ok(data),
                    Ok(None) => Err(BitswapError::Store {
                        reason: format!("block {cid} was removed right after it was stored"),
                    }),
                    Err(reason) => Err(BitswapError::Store { reason }),
                };
                self.resolve(cid.hash(), r);
            }
            Command::Sent {
                peer,
                ok,
                blocks,
                bytes,
            } => {
                if ok {
                    self.stats.messages_sent.fetch_add(1, Ordering::Relaxed);
                    self.stats
                        .blocks_sent
                        .fetch_add(blocks.len() as u64, Ordering::Relaxed);
                    self.stats.bytes_sent.fetch_add(bytes, Ordering::Relaxed);
                    if !blocks.is_empty() {
                        self.stats.traffic().sent(peer, &blocks, bytes);
                    }
                }
                self.engine.batch_done(&peer, ok);
            }
        }
    }

    fn get(&mut self, cid: Cid, reply: Waiter) {
        let mh = *cid.hash();
        if self.waiting >= self.waiters_limit {
            self.prune(None);
        }
        if self.waiting >= self.waiters_limit {
            let _ = reply.send(Err(BitswapError::TooManyWants {
                limit: self.waiters_limit,
            }));
            return;
        }
        match self.engine.want(cid, Instant::now()) {
            Ok(actions) => {
                self.waiters
                    .entry(mh)
                    .or_insert_with(|| (cid, Vec::new()))
                    .1
                    .push(reply);
                self.waiting += 1;
                self.run_actions(actions);
            }
            Err(limit) => {
                let _ = reply.send(Err(BitswapError::TooManyWants { limit }));
            }
        }
    }

    /// Drops callers that gave up (all, or those for `only`), and the wants
    /// nobody waits for any more.
    fn prune(&mut self, only: Option<Multihash>) {
        let mut abandoned = Vec::new();
        for (mh, (cid, ws)) in &mut self.waiters {
            if only.is_some_and(|o| o != *mh) {
                continue;
            }
            let before = ws.len();
            ws.retain(|w| !w.is_closed());
            self.waiting -= before - ws.len();
            if ws.is_empty() {
                abandoned.push((*mh, *cid));
            }
        }
        for (mh, cid) in abandoned {
            self.waiters.remove(&mh);
            self.engine.unwant(&cid);
        }
    }

    fn resolve(&mut self, mh: &Multihash, result: Result<Bytes, BitswapError>) {
        if let Some((_, ws)) = self.waiters.remove(mh) {
            self.waiting -= ws.len();
            for w in ws {
                let _ = w.send(result.clone());
            }
        }
    }

    fn added(&mut self, a: Added) {
        let actions = self.engine.block_added(&a.cid, a.size);
        self.run_actions(actions);
    }

    fn disconnected(&mut self, peer: &PeerId) {
        self.engine.peer_disconnected(peer, Instant::now());
        // Dropping the sender ends the writer after its batch.
        self.writers.remove(peer);
    }

    fn resync_peers(&mut self, now_connected: Vec<PeerId>) {
        let now = Instant::now();
        let gone: Vec<PeerId> = self
            .engine
            .peers()
            .filter(|p| !now_connected.contains(p))
            .copied()
            .collect();
        for p in gone {
            self.disconnected(&p);
        }
        for p in now_connected {
            self.engine.peer_connected(p, now);
        }
    }

    /// After missed store notices: every CID someone waits for is looked up
    /// again.
    fn recheck_everything(&mut self) {
        let cids = self.engine.waited_for();
        if !cids.is_empty() {
            self.run_actions(vec![Action::Recheck(cids)]);
        }
    }

    fn tick(&mut self) {
        self.prune(None);
        self.engine.tick(Instant::now());
        self.ticks = self.ticks.wrapping_add(1);
        if self.ticks % RECHECK_TICKS == 0 {
            let mut cids = self.engine.waited_for();
            if !cids.is_empty() {
                // A different slice each pass when there are many.
                let n = cids.len();
                cids.rotate_left((self.ticks / RECHECK_TICKS) as usize * RECHECK_MAX % n);
                cids.truncate(RECHECK_MAX);
                self.run_actions(vec![Action::Recheck(cids)]);
            }
        }
    }

    fn run_actions(&mut self, actions: Vec<Action>) {
        for action in actions {
            let (store, tx) = (self.store.clone(), self.commands.clone());
            match action {
                Action::Store(block) => {
                    tokio::spawn(async move {
                        let b = block.clone();
                        let result = tokio::task::spawn_blocking(move || store.put(&b))
                            .await
                            .map_err(|e| e.to_string())
                            .and_then(|r| r.map_err(|e| e.to_string()));
                        let _ = tx.send(Command::Stored { block, result }).await;
                    });
                }
                Action::Recheck(cids) => {
                    tokio::spawn(async move {
                        let found = tokio::task::spawn_blocking(move || {
                            cids.into_iter()
                                .filter_map(|cid| match store.size(&cid) {
                                    Ok(Some(size)) => Some(Added { cid, size }),
                                    Ok(None) => None,
                                    Err(e) => {
                                        tracing::warn!(%cid, error = %e, "block lookup failed");
                                        None
                                    }
                                })
                                .collect::<Vec<_>>()
                        })
                        .await
                        .unwrap_or_default();
                        if !found.is_empty() {
                            let _ = tx.send(Command::Found(found)).await;
                        }
                    });
                }
                Action::Resolve(cid) => {
                    tokio::spawn(async move {
                        let result = tokio::task::spawn_blocking(move || store.get(&cid))
                            .await
                            .map_err(|e| e.to_string())
                            .and_then(|r| r.map_err(|e| e.to_string()));
                        let _ = tx.send(Command::Loaded { cid, result }).await;
                    });
                }
            }
        }
    }

    /// Hands each peer with something to send its next batch.
    fn flush(&mut self) {
        for (peer, batch) in self.engine.take_batches() {
            let writer = match self.writers.get(&peer) {
                Some(w) if !w.is_closed() => w,
                _ => {
                    let w = self.spawn_writer(peer);
                    self.writers.entry(peer).insert_entry(w).into_mut()
                }
            };
            // Capacity one and one batch in flight: only a writer that died
            // refuses.
            if writer.try_send(batch).is_err() {
                self.writers.remove(&peer);
                self.engine.batch_done(&peer, false);
            }
        }
    }

    fn spawn_writer(&self, peer: PeerId) -> mpsc::Sender<Batch> {
        let (tx, rx) = mpsc::channel(1);
        let writer = Writer {
            peer,
            control: self.control.clone(),
            store: self.store.clone(),
            commands: self.commands.clone(),
            stream: None,
        };
        tokio::spawn(
            writer
                .run(rx, self.cancel.clone())
                .instrument(tracing::debug_span!("bitswap-writer", %peer)),
        );
        tx
    }

    fn publish(&self) {
        let s = &self.stats;
        let c = self.engine.counters();
        s.duplicate_blocks
            .store(c.duplicate_blocks, Ordering::Relaxed);
        s.rejected_blocks
            .store(c.rejected_blocks, Ordering::Relaxed);
        s.dropped_wants.store(c.dropped_wants, Ordering::Relaxed);
        s.wants_pending
            .store(self.engine.wants_len() as u64, Ordering::Relaxed);
        s.peer_wants_pending
            .store(self.engine.remembered_len() as u64, Ordering::Relaxed);
        s.peers
            .store(self.engine.peers().count() as u64, Ordering::Relaxed);
    }
}

/// How long sending `len` bytes may take: as boxo, a floor plus the time at
/// 100 kbit/s, capped.
fn send_timeout(len: usize) -> Duration {
    let at_min_rate = Duration::from_millis(len as u64 * 8 / 100);
    (Duration::from_secs(10) + at_min_rate).min(Duration::from_secs(120))
}

/// Sends one peer its batches over one long-lived outbound stream.
struct Writer {
    peer: PeerId,
    control: libp2p_stream::Control,
    store: Arc<dyn Blockstore>,
    commands: mpsc::Sender<Command>,
    stream: Option<(Stream, Protocol)>,
}

impl Writer {
    async fn run(mut self, mut rx: mpsc::Receiver<Batch>, cancel: CancellationToken) {
        loop {
            let batch = tokio::select! {
                () = cancel.cancelled() => break,
                b = rx.recv() => match b {
                    Some(b) => b,
                    None => break,
                },
            };
            let (msg, blocks, bytes) = Self::load(self.store.clone(), batch).await;
            let ok = self.send(&msg).await;
            let sent = Command::Sent {
                peer: self.peer,
                ok,
                blocks,
                bytes,
            };
            if self.commands.send(sent).await.is_err() {
                break;
            }
        }
        if let Some((mut s, _)) = self.stream.take() {
            let _ = s.close().await;
        }
    }

    /// The batch as a message, with its blocks read from the store.
    async fn load(store: Arc<dyn Blockstore>, batch: Batch) -> (Message, Vec<Cid>, u64) {
        let cids = batch.blocks;
        let blocks = tokio::task::spawn_blocking(move || {
            cids.iter()
                .filter_map(|cid| match store.get(cid) {
                    Ok(Some(data)) => Some((*cid, BlockData::new(cid, data))),
                    // Deleted since it was queued (a GC): nothing to send.
                    Ok(None) => None,
                    Err(e) => {
                        tracing::warn!(%cid, error = %e, "reading a block to send failed");
                        None
                    }
                })
                .collect::<Vec<_>>()
        })
        .await
        .unwrap_or_default();
        let bytes = blocks.iter().map(|(_, b)| b.data.len() as u64).sum();
        let (sent, blocks) = blocks.into_iter().unzip();
        let msg = Message {
            full: batch.full,
            wantlist: batch.wantlist,
            blocks,
            presences: batch.presences,
            pending_bytes: 0,
        };
        (msg, sent, bytes)
    }

    /// Writes `msg`, opening (or reopening, once) the stream as needed.
    async fn send(&mut self, msg: &Message) -> bool {
        for attempt in 0..2 {
            if self.stream.is_none() {
                match self.open().await {
                    Ok(s) => self.stream = Some(s),
                    Err(e) => {
                        tracing::debug!(error = %e, "cannot open a Bitswap stream");
                        return false;
                    }
                }
            }
            let Some((stream, protocol)) = self.stream.as_mut() else {
                return false;
            };
            let frame = msg.to_frame(*protocol);
            let write = async {
                stream.write_all(&frame).await?;
                stream.flush().await
            };
            match tokio::time::timeout(send_timeout(frame.len()), write).await {
                Ok(Ok(())) => return true,
                Ok(Err(e)) => tracing::debug!(attempt, error = %e, "Bitswap write failed"),
                Err(_) => tracing::debug!(attempt, "Bitswap write timed out"),
            }
            self.stream = None;
        }
        false
    }

    /// A stream in the newest version the peer speaks.
    async fn open(&mut self) -> Result<(Stream, Protocol), String> {
        let mut last = String::from("no Bitswap version offered");
        for protocol in Protocol::ALL {
            let opening = self
                .control
                .open_stream(self.peer, StreamProtocol::new(protocol.name()));
            match tokio::time::timeout(OPEN_TIMEOUT, opening).await {
                Ok(Ok(s)) => return Ok((s, protocol)),
                Ok(Err(libp2p_stream::OpenStreamError::UnsupportedProtocol(p))) => {
                    last = format!("peer does not speak {p}");
                }
                Ok(Err(e)) => return Err(e.to_string()),
                Err(_) => return Err(format!("no stream within {OPEN_TIMEOUT:?}")),
            }
        }
        Err(last)
    }
}

/// Accepts inbound streams and starts a reader for each, within the
/// per-peer and total limits (streams beyond them are dropped, which
/// resets them).
async fn accept(
    mut incoming: futures::stream::SelectAll<libp2p_stream::IncomingStreams>,
    store: Arc<dyn Blockstore>,
    commands: mpsc::Sender<Command>,
    cancel: CancellationToken,
) {
    let total = Arc::new(Semaphore::new(STREAMS_TOTAL));
    let mut per_peer: HashMap<PeerId, Arc<Semaphore>> = HashMap::new();
    loop {
        let (peer, stream) = tokio::select! {
            () = cancel.cancelled() => break,
            s = incoming.next() => match s {
                Some(s) => s,
                None => break,
            },
        };
        if per_peer.len() >= STREAMS_TOTAL {
            // Forget peers with no stream open.
            per_peer.retain(|_, s| s.available_permits() < STREAMS_PER_PEER);
        }
        let mine = per_peer
            .entry(peer)
            .or_insert_with(|| Arc::new(Semaphore::new(STREAMS_PER_PEER)))
            .clone();
        let (Ok(a), Ok(b)) = (total.clone().try_acquire_owned(), mine.try_acquire_owned()) else {
            tracing::debug!(%peer, "too many Bitswap streams; dropping one");
            continue;
        };
        let reader = Reader {
            peer,
            store: store.clone(),
            commands: commands.clone(),
            _permits: (a, b),
        };
        tokio::spawn(
            reader
                .run(stream, cancel.clone())
                .instrument(tracing::debug_span!("bitswap-reader", %peer)),
        );
    }
}

/// Reads one inbound stream's messages and hands them to the actor.
struct Reader {
    peer: PeerId,
    store: Arc<dyn Blockstore>,
    commands: mpsc::Sender<Command>,
    _permits: (OwnedSemaphorePermit, OwnedSemaphorePermit),
}

/// Why a stream stopped being read.
#[derive(Debug, thiserror::Error)]
enum ReadError {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("{0}")]
    Message(#[from] MessageError),
    #[error("message body not received within {0:?}")]
    Slow(Duration),
}

impl Reader {
    async fn run(self, mut stream: Stream, cancel: CancellationToken) {
        loop {
            let peer = self.peer;
            let commands = &self.commands;
            // Lost when the actor is busy: the next report will do.
            let mut progress = || {
                let _ = commands.try_send(Command::Arriving { peer });
            };
            let frame = tokio::select! {
                () = cancel.cancelled() => return,
                f = read_frame(&mut stream, &mut progress) => f,
            };
            let body = match frame {
                Ok(Some(body)) => body,
                Ok(None) => return,
                Err(e) => {
                    tracing::debug!(error = %e, "Bitswap stream ended badly");
                    if matches!(e, ReadError::Message(_)) {
                        let _ = self
                            .commands
                            .send(Command::Garbled { peer: self.peer })
                            .await;
                    }
                    return;
                }
            };
            let msg = match Message::decode(&body) {
                Ok(m) => m,
                Err(e) => {
                    tracing::debug!(error = %e, "undecodable Bitswap message");
                    let _ = self
                        .commands
                        .send(Command::Garbled { peer: self.peer })
                        .await;
                    return;
                }
            };
            let store = self.store.clone();
            let Ok(incoming) = tokio::task::spawn_blocking(move || prepare(msg, &*store)).await
            else {
                return;
            };
            let cmd = Command::Incoming {
                peer: self.peer,
                msg: incoming,
            };
            if self.commands.send(cmd).await.is_err() {
                return;
            }
        }
    }
}

/// How often a message that is arriving is reported as such.
const PROGRESS_EVERY: Duration = Duration::from_millis(200);

/// Reads one frame: `Ok(None)` at a clean end of stream. While a body is
/// arriving, `progress` is called at most every [`PROGRESS_EVERY`].
async fn read_frame(
    stream: &mut Stream,
    progress: &mut (dyn FnMut() + Send),
) -> Result<Option<Bytes>, ReadError> {
    let mut header = [0u8; 10];
    let mut n = 0;
    let len = loop {
        let got = stream.read(&mut header[n..n + 1]).await?;
        if got == 0 {
            if n == 0 {
                return Ok(None);
            }
            return Err(std::io::Error::from(std::io::ErrorKind::UnexpectedEof).into());
        }
        n += 1;
        if let Some((_, len)) = super::message::frame_header(&header[..n])? {
            break len;
        }
    };
    debug_assert!(len <= MAX_MESSAGE_SIZE);
    let mut body = vec![0u8; len];
    let limit = send_timeout(len);
    let read_body = async {
        let mut got = 0;
        let mut reported: Option<tokio::time::Instant> = None;
        while got < len {
            let n = stream.read(&mut body[got..]).await?;
            if n == 0 {
                return Err(std::io::Error::from(std::io::ErrorKind::UnexpectedEof));
            }
            got += n;
            let now = tokio::time::Instant::now();
            if got < len && reported.is_none_or(|t| now - t >= PROGRESS_EVERY) {
                reported = Some(now);
                progress();
            }
        }
        Ok(())
    };
    tokio::time::timeout(limit, read_body)
        .await
        .map_err(|_| ReadError::Slow(limit))??;
    Ok(Some(Bytes::from(body)))
}

/// Hashes the message's blocks and looks up the size of every wanted
/// block in `store` (blocking).
fn prepare(msg: Message, store: &dyn Blockstore) -> Incoming {
    let mut incoming = Incoming {
        full: msg.full,
        presences: msg.presences,
        ..Incoming::default()
    };
    for b in msg.blocks {
        match b.prefix.cid_of(&b.data) {
            Ok(cid) => incoming.blocks.push(Block { cid, data: b.data }),
            Err(e) => {
                tracing::debug!(error = %e, "received block cannot be checked");
                incoming.bad_blocks += 1;
            }
        }
    }
    for e in msg.wantlist {
        let size = if e.cancel {
            None
        } else {
            match store.size(&e.cid) {
                Ok(s) => s,
                Err(err) => {
                    tracing::warn!(cid = %e.cid, error = %err, "block lookup failed");
                    None
                }
            }
        };
        incoming.wants.push((e, size));
    }
    incoming
}

impl From<StoreError> for BitswapError {
    fn from(e: StoreError) -> Self {
        Self::Store {
            reason: e.to_string(),
        }
    }
}
