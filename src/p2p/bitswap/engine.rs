//! The Bitswap decisions, without I/O: what to send each peer, which
//! received blocks to keep, whom to ask for what.
//!
//! The [`Engine`] holds both sides of the exchange:
//!
//! - server: each peer's wants of blocks we lack (a live segment is wanted
//!   before it exists), remembered within [`Limits`] and served as soon as
//!   [`Engine::block_added`] reports the block;
//! - client: our own wants, each sent to every peer: want-block to the first
//!   [`Limits::want_block_peers`] peers, want-have to the rest; a HAVE gets a
//!   want-block when fewer are outstanding, a DONT_HAVE or a stale
//!   want-block moves the want-block on to the next peer that said HAVE, and
//!   a want nobody answered is sent again (messages get lost); received
//!   blocks that we want are handed out to be stored, others count as
//!   duplicates (recently wanted) or strikes against the sender.
//!
//! What to send each peer collects in its [`Outbox`], coalesced (a cancel
//! replaces the want it cancels); the I/O side takes one [`Batch`] at a time
//! per peer with [`Engine::take_batches`] and reports back with
//! [`Engine::batch_done`]. Time comes in as arguments.

use super::message::{Entry, Presence, WantType, MAX_BLOCK_SIZE};
use crate::store::{Block, Multihash};
use cid::Cid;
use libp2p::PeerId;
use std::cmp::Reverse;
use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::time::{Duration, Instant};

/// Bounds on what peers (and our callers) can make the engine hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Peers tracked at once; more are not served.
    pub max_peers: usize,
    /// Wants one peer may have queued or remembered with us (kubo's
    /// default is 1024); more are ignored until some are served.
    pub max_peer_wants: usize,
    /// Remembered wants (blocks we lack) across all peers.
    pub max_remembered_wants: usize,
    /// Blocks we fetch at once.
    pub max_wants: usize,
    /// A want-have of a block at most this large is answered with the block
    /// itself, which costs less than a HAVE and the round trip after it.
    pub max_inline_have: u64,
    /// Peers sent a want-block at once for one of our wants; the others are
    /// sent want-have.
    pub want_block_peers: usize,
    /// The longest a want waits unanswered before it moves on to the next
    /// peer that said HAVE, or is sent again. The wait is four times the
    /// slowest answer time seen from the peers asked, within
    /// [`Limits::retry_min`] and this.
    pub retry_after: Duration,
    /// The shortest such wait.
    pub retry_min: Duration,
    /// Ask peers to say DONT_HAVE when they lack a block. Off by default:
    /// kubo and Helia send every answer on a stream of its own, and
    /// libp2p-stream drops an inbound stream that arrives while it still
    /// holds the previous one, so the fewer peers answer at the same moment
    /// the fewer answers are lost. Without DONT_HAVE a want-block moves on
    /// when it goes unanswered.
    pub ask_dont_have: bool,
    /// Unwanted blocks a peer may send before its messages are ignored.
    pub max_strikes: u32,
    /// Block bytes per message (at least one block is always sent).
    pub batch_bytes: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_peers: 1024,
            max_peer_wants: 1024,
            max_remembered_wants: 64 * 1024,
            max_wants: 4096,
            max_inline_have: 1024,
            want_block_peers: 3,
            retry_after: Duration::from_secs(5),
            retry_min: Duration::from_secs(1),
            ask_dont_have: false,
            max_strikes: 16,
            batch_bytes: 1 << 20,
        }
    }
}

/// A peer's message, made ready by the stream reader: blocks hashed to
/// their CIDs and each want annotated with the size of our copy.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Incoming {
    /// The wantlist replaces the peer's earlier one.
    pub full: bool,
    /// Wants and cancels, each with the size of the block in our store
    /// (`None`: we lack it; always `None` for cancels).
    pub wants: Vec<(Entry, Option<u64>)>,
    /// Blocks, with the CIDs their bytes hash to.
    pub blocks: Vec<Block>,
    /// Blocks whose prefix could not be hashed.
    pub bad_blocks: usize,
    /// HAVE / DONT_HAVE answers.
    pub presences: Vec<Presence>,
}

/// Work for the I/O side.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// A wanted block arrived: store it, then call [`Engine::block_stored`].
    Store(Block),
    /// Look these up in the store again and report the ones found with
    /// [`Engine::block_added`]: they were found missing just before being
    /// remembered, and a put in between would otherwise go unnoticed.
    Recheck(Vec<Cid>),
    /// One of our wants is in the store now (put by someone else): read it
    /// and hand it to whoever waits.
    Resolve(Cid),
}

/// One message's worth of what to send a peer.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Batch {
    /// `wantlist` is our whole wantlist.
    pub full: bool,
    /// Our wants and cancels.
    pub wantlist: Vec<Entry>,
    /// HAVE / DONT_HAVE answers.
    pub presences: Vec<Presence>,
    /// Blocks to load and send, under the CIDs the peer asked with.
    pub blocks: Vec<Cid>,
}

/// Counters the engine keeps (the service publishes them).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    /// Blocks received that we had just got from someone else.
    pub duplicate_blocks: u64,
    /// Blocks received that we never wanted, or that did not hash.
    pub rejected_blocks: u64,
    /// Peer wants dropped for being over a limit.
    pub dropped_wants: u64,
}

/// The most wantlist entries or presences in one message.
const MAX_ENTRIES: usize = 8192;
/// Recently received blocks remembered to tell duplicates from junk.
const RECENT: usize = 1024;

/// What we queue for one peer.
#[derive(Debug, Default)]
pub struct Outbox {
    full: bool,
    wants: HashMap<Cid, Entry>,
    presences: HashMap<Cid, bool>,
    /// Highest priority first, then first come.
    blocks: BTreeMap<(Reverse<i32>, u64), (Cid, u64)>,
    block_keys: HashMap<Multihash, (Reverse<i32>, u64)>,
    seq: u64,
}

impl Outbox {
    /// Whether there is nothing to send.
    pub fn is_empty(&self) -> bool {
        !self.full && self.wants.is_empty() && self.presences.is_empty() && self.blocks.is_empty()
    }

    /// Answers and blocks queued (what counts against the peer's limit).
    fn served(&self) -> usize {
        self.presences.len() + self.blocks.len()
    }

    fn want(&mut self, e: Entry) {
        self.wants.insert(e.cid, e);
    }

    fn cancel(&mut self, cid: Cid) {
        if self.full {
            // A full wantlist that leaves a CID out cancels it.
            self.wants.remove(&cid);
        } else {
            self.wants.insert(cid, Entry::cancel(cid));
        }
    }

    fn presence(&mut self, cid: Cid, have: bool) {
        self.presences.insert(cid, have);
    }

    fn block(&mut self, cid: Cid, size: u64, priority: i32) {
        if self.block_keys.contains_key(cid.hash()) {
            return;
        }
        self.presences.remove(&cid);
        let key = (Reverse(priority), self.seq);
        self.seq += 1;
        self.blocks.insert(key, (cid, size));
        self.block_keys.insert(*cid.hash(), key);
    }

    /// Drops answers and blocks for `cid` (the peer no longer wants it).
    fn unqueue(&mut self, cid: &Cid) {
        self.presences.remove(cid);
        if let Some(key) = self.block_keys.remove(cid.hash()) {
            self.blocks.remove(&key);
        }
    }

    /// Keeps answers and blocks only for CIDs in `keep`.
    fn retain(&mut self, keep: &HashSet<Multihash>) {
        self.presences.retain(|c, _| keep.contains(c.hash()));
        self.blocks.retain(|_, (c, _)| keep.contains(c.hash()));
        self.block_keys.retain(|mh, _| keep.contains(mh));
    }

    /// Takes one message's worth: every want change (all of them when the
    /// list is full), presences, and blocks up to `max_bytes`.
    fn take(&mut self, max_bytes: u64) -> Batch {
        let mut batch = Batch {
            full: std::mem::take(&mut self.full),
            ..Batch::default()
        };
        let n = if batch.full {
            self.wants.len()
        } else {
            self.wants.len().min(MAX_ENTRIES)
        };
        let cids: Vec<Cid> = self.wants.keys().take(n).copied().collect();
        for c in cids {
            batch.wantlist.extend(self.wants.remove(&c));
        }
        let cids: Vec<Cid> = self.presences.keys().take(MAX_ENTRIES).copied().collect();
        for c in cids {
            if let Some(have) = self.presences.remove(&c) {
                batch.presences.push(Presence { cid: c, have });
            }
        }
        let mut bytes = 0;
        while let Some(entry) = self.blocks.first_entry() {
            let (cid, size) = *entry.get();
            if !batch.blocks.is_empty() && bytes + size > max_bytes {
                break;
            }
            entry.remove();
            self.block_keys.remove(cid.hash());
            bytes += size;
            batch.blocks.push(cid);
        }
        batch
    }
}

/// A want of a peer's for a block we lack.
#[derive(Debug, Clone, Copy)]
struct Remembered {
    /// The CID as the peer wrote it.
    cid: Cid,
    priority: i32,
    want_type: WantType,
}

#[derive(Debug, Default)]
struct Peer {
    /// Their wants of blocks we lack, by multihash.
    ledger: HashMap<Multihash, Remembered>,
    outbox: Outbox,
    /// A batch is being sent.
    busy: bool,
    strikes: u32,
    ignored: bool,
    /// How long the peer takes to answer a want (moving average).
    answer_time: Option<Duration>,
    /// When bytes of a message from the peer last arrived while the rest
    /// was still on its way.
    arriving: Option<Instant>,
}

/// The answer time assumed for a peer not measured yet.
const FIRST_ANSWER_TIME: Duration = Duration::from_millis(500);

/// The longest a want-block waits without being asked again while the
/// peer asked keeps sending us a message: a large block on a slow link
/// takes long to arrive, but a peer that is busy sending other blocks must
/// not hold a lost want forever.
const MAX_ARRIVING_WAIT: Duration = Duration::from_secs(30);

impl Peer {
    fn answered_after(&mut self, took: Duration) {
        self.answer_time = Some(match self.answer_time {
            Some(t) => (t * 3 + took) / 4,
            None => took,
        });
    }
}

/// One of our wants.
#[derive(Debug)]
struct Want {
    cid: Cid,
    priority: i32,
    /// Peers sent this want, so they get the cancel.
    sent_to: HashSet<PeerId>,
    /// Sent want-block, no answer yet.
    asked_block: HashSet<PeerId>,
    /// Said HAVE and not yet asked for the block, oldest first.
    haves: VecDeque<PeerId>,
    /// Said DONT_HAVE (and have not said HAVE since).
    dont_haves: HashSet<PeerId>,
    /// Being stored.
    storing: bool,
    /// When a want-block was last sent.
    last_ask: Instant,
}

/// The Bitswap state of one node.
#[derive(Debug)]
pub struct Engine {
    limits: Limits,
    peers: HashMap<PeerId, Peer>,
    wants: HashMap<Multihash, Want>,
    recent: VecDeque<Multihash>,
    recent_set: HashSet<Multihash>,
    remembered: usize,
    next_priority: i32,
    dirty: HashSet<PeerId>,
    counters: Counters,
}

impl Engine {
    /// An engine with no peers and no wants.
    pub fn new(limits: Limits) -> Self {
        Self {
            limits,
            peers: HashMap::new(),
            wants: HashMap::new(),
            recent: VecDeque::new(),
            recent_set: HashSet::new(),
            remembered: 0,
            next_priority: i32::MAX,
            dirty: HashSet::new(),
            counters: Counters::default(),
        }
    }

    /// The limits in force.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// The counters so far.
    pub fn counters(&self) -> Counters {
        self.counters
    }

    /// Our wants not yet satisfied.
    pub fn wants_len(&self) -> usize {
        self.wants.len()
    }

    /// Whether we want `cid` (by multihash).
    pub fn wants(&self, cid: &Cid) -> bool {
        self.wants.contains_key(cid.hash())
    }

    /// Peers' wants we remember for blocks we lack.
    pub fn remembered_len(&self) -> usize {
        self.remembered
    }

    /// Whether `peer` waits for `cid` from us.
    pub fn peer_wants(&self, peer: &PeerId, cid: &Cid) -> bool {
        self.peers
            .get(peer)
            .is_some_and(|p| p.ledger.contains_key(cid.hash()))
    }

    /// Every CID something waits for: our wants and the wants we remember
    /// for peers (to look up again after missed store notices).
    pub fn waited_for(&self) -> Vec<Cid> {
        let ours = self.wants.values().map(|w| w.cid);
        let theirs = self
            .peers
            .values()
            .flat_map(|p| p.ledger.values().map(|r| r.cid));
        ours.chain(theirs).collect()
    }

    /// Peers we exchange with.
    pub fn peers(&self) -> impl Iterator<Item = &PeerId> {
        self.peers
            .iter()
            .filter(|(_, p)| !p.ignored)
            .map(|(id, _)| id)
    }

    /// Whether `peer` is tracked.
    pub fn is_connected(&self, peer: &PeerId) -> bool {
        self.peers.contains_key(peer)
    }

    fn outbox(&mut self, peer: &PeerId) -> Option<&mut Outbox> {
        let p = self.peers.get_mut(peer).filter(|p| !p.ignored)?;
        self.dirty.insert(*peer);
        Some(&mut p.outbox)
    }

    /// Sends our want `mh` to `peer`: want-block while fewer than
    /// `want_block_peers` are outstanding, want-have otherwise.
    fn send_want(&mut self, mh: &Multihash, peer: PeerId, now: Instant) {
        let sdh = self.limits.ask_dont_have;
        let max = self.limits.want_block_peers;
        let Some(w) = self.wants.get_mut(mh) else {
            return;
        };
        let want_type = if w.asked_block.len() < max {
            w.asked_block.insert(peer);
            w.last_ask = now;
            WantType::Block
        } else {
            WantType::Have
        };
        w.sent_to.insert(peer);
        let entry = Entry::want(w.cid, w.priority, want_type, sdh);
        if let Some(o) = self.outbox(&peer) {
            o.want(entry);
        }
        self.squeeze(&peer);
    }

    /// Replaces a peer's queued want changes with our full wantlist when
    /// they pile up (a slow peer, many short-lived wants).
    fn squeeze(&mut self, peer: &PeerId) {
        let piled = self
            .peers
            .get(peer)
            .is_some_and(|p| p.outbox.wants.len() > MAX_ENTRIES);
        if piled {
            self.resync(peer);
        }
    }

    /// Queues our whole wantlist for `peer`, as a full list.
    fn resync(&mut self, peer: &PeerId) {
        let sdh = self.limits.ask_dont_have;
        let entries: Vec<Entry> = self
            .wants
            .values()
            .filter(|w| w.sent_to.contains(peer))
            .map(|w| {
                let t = if w.asked_block.contains(peer) {
                    WantType::Block
                } else {
                    WantType::Have
                };
                Entry::want(w.cid, w.priority, t, sdh)
            })
            .collect();
        if let Some(o) = self.outbox(peer) {
            o.wants.clear();
            o.full = true;
            for e in entries {
                o.want(e);
            }
        }
    }

    /// A peer connected: it gets our wantlist. `false` when the peer limit
    /// is reached (the peer is then neither served nor asked).
    pub fn peer_connected(&mut self, peer: PeerId, now: Instant) -> bool {
        if self.peers.contains_key(&peer) {
            return true;
        }
        if self.peers.len() >= self.limits.max_peers {
            return false;
        }
        self.peers.insert(peer, Peer::default());
        let mhs: Vec<Multihash> = self.wants.keys().copied().collect();
        if !mhs.is_empty() {
            if let Some(o) = self.outbox(&peer) {
                o.full = true;
            }
        }
        for mh in mhs {
            self.send_want(&mh, peer, now);
        }
        true
    }

    /// A peer disconnected: its wants are forgotten, and our want-blocks it
    /// held move on.
    pub fn peer_disconnected(&mut self, peer: &PeerId, now: Instant) {
        let Some(p) = self.peers.remove(peer) else {
            return;
        };
        self.remembered -= p.ledger.len();
        self.dirty.remove(peer);
        let mut orphaned = Vec::new();
        for (mh, w) in &mut self.wants {
            w.sent_to.remove(peer);
            w.dont_haves.remove(peer);
            w.haves.retain(|h| h != peer);
            if w.asked_block.remove(peer) {
                orphaned.push(*mh);
            }
        }
        for mh in orphaned {
            self.ask_next_have(&mh, now);
        }
    }

    /// Sends want-block for `mh` to the longest-waiting peer that said HAVE.
    fn ask_next_have(&mut self, mh: &Multihash, now: Instant) {
        let sdh = self.limits.ask_dont_have;
        let Some(w) = self.wants.get_mut(mh) else {
            return;
        };
        let Some(peer) = w.haves.pop_front() else {
            return;
        };
        w.asked_block.insert(peer);
        w.last_ask = now;
        let entry = Entry::want(w.cid, w.priority, WantType::Block, sdh);
        if let Some(o) = self.outbox(&peer) {
            o.want(entry);
        }
    }

    /// We want a block: ask every peer. `Err` with the limit when too many
    /// wants are open; `Ok(false)` if it was already wanted (the want is
    /// shared). A new want comes with [`Action::Recheck`] of `cid`, as the
    /// caller looked in the store before asking.
    pub fn want(&mut self, cid: Cid, now: Instant) -> Result<Vec<Action>, usize> {
        let mh = *cid.hash();
        if self.wants.contains_key(&mh) {
            return Ok(Vec::new());
        }
        if self.wants.len() >= self.limits.max_wants {
            return Err(self.limits.max_wants);
        }
        // Earlier wants first.
        let priority = self.next_priority;
        self.next_priority = self.next_priority.saturating_sub(1).max(1);
        self.wants.insert(
            mh,
            Want {
                cid,
                priority,
                sent_to: HashSet::new(),
                asked_block: HashSet::new(),
                haves: VecDeque::new(),
                dont_haves: HashSet::new(),
                storing: false,
                last_ask: now,
            },
        );
        let peers: Vec<PeerId> = self.peers().copied().collect();
        for p in peers {
            self.send_want(&mh, p, now);
        }
        Ok(vec![Action::Recheck(vec![cid])])
    }

    /// We no longer want `cid` (nobody waits, or it failed): peers asked get
    /// a cancel. A copy still on its way counts as a duplicate, not against
    /// its sender.
    pub fn unwant(&mut self, cid: &Cid) {
        if let Some(w) = self.wants.remove(cid.hash()) {
            self.remember_recent(*cid.hash());
            self.cancel_at(&w);
        }
    }

    fn cancel_at(&mut self, w: &Want) {
        for p in &w.sent_to {
            if let Some(o) = self.outbox(p) {
                o.cancel(w.cid);
            }
        }
    }

    fn remember_recent(&mut self, mh: Multihash) {
        if self.recent_set.insert(mh) {
            self.recent.push_back(mh);
            if self.recent.len() > RECENT {
                if let Some(old) = self.recent.pop_front() {
                    self.recent_set.remove(&old);
                }
            }
        }
    }

    /// A wanted block is in the store now (after [`Action::Store`]): the
    /// want is done and cancelled everywhere. Returns the CID callers asked
    /// with, if it was still wanted.
    pub fn block_stored(&mut self, cid: &Cid) -> Option<Cid> {
        let w = self.wants.remove(cid.hash())?;
        self.remember_recent(*cid.hash());
        self.cancel_at(&w);
        Some(w.cid)
    }

    /// Storing a received block failed: it may be received again.
    pub fn store_failed(&mut self, cid: &Cid) {
        if let Some(w) = self.wants.get_mut(cid.hash()) {
            w.storing = false;
        }
    }

    /// A block is in the store (put by anyone): peers waiting for it are
    /// served, and one of our wants it satisfies is resolved.
    pub fn block_added(&mut self, cid: &Cid, size: u64) -> Vec<Action> {
        let mh = *cid.hash();
        let mut actions = Vec::new();
        if size <= MAX_BLOCK_SIZE as u64 {
            let inline = self.limits.max_inline_have;
            let mut served = Vec::new();
            for (id, p) in &mut self.peers {
                if let Some(r) = p.ledger.remove(&mh) {
                    served.push(*id);
                    if r.want_type == WantType::Block || size <= inline {
                        p.outbox.block(r.cid, size, r.priority);
                    } else {
                        p.outbox.presence(r.cid, true);
                    }
                }
            }
            self.remembered -= served.len();
            self.dirty.extend(served);
        }
        if self.wants.get(&mh).is_some_and(|w| !w.storing) {
            if let Some(asked) = self.block_stored(cid) {
                actions.push(Action::Resolve(asked));
            }
        }
        actions
    }

    fn strike(&mut self, peer: &PeerId) {
        self.counters.rejected_blocks += 1;
        let max = self.limits.max_strikes;
        let Some(p) = self.peers.get_mut(peer) else {
            return;
        };
        p.strikes += 1;
        if p.strikes >= max && !p.ignored {
            tracing::warn!(%peer, strikes = p.strikes, "peer sent too many unwanted or bad blocks; ignoring it");
            p.ignored = true;
            self.remembered -= p.ledger.len();
            p.ledger.clear();
            p.outbox = Outbox::default();
            self.dirty.remove(peer);
        }
    }

    /// Whether a peer's messages are being ignored.
    pub fn is_ignored(&self, peer: &PeerId) -> bool {
        self.peers.get(peer).is_some_and(|p| p.ignored)
    }

    /// A message from `peer`.
    pub fn receive(&mut self, peer: PeerId, msg: Incoming, now: Instant) -> Vec<Action> {
        if !self.peer_connected(peer, now) || self.is_ignored(&peer) {
            return Vec::new();
        }
        let mut actions = Vec::new();
        let recheck = self.receive_wants(&peer, msg.full, msg.wants);
        if !recheck.is_empty() {
            actions.push(Action::Recheck(recheck));
        }
        for _ in 0..msg.bad_blocks {
            self.strike(&peer);
        }
        for block in msg.blocks {
            let mh = *block.cid.hash();
            match self.wants.get_mut(&mh) {
                Some(w) if !w.storing => {
                    w.storing = true;
                    let took = now.saturating_duration_since(w.last_ask);
                    if let Some(p) = self.peers.get_mut(&peer) {
                        p.answered_after(took);
                    }
                    actions.push(Action::Store(block));
                }
                Some(_) => self.counters.duplicate_blocks += 1,
                None if self.recent_set.contains(&mh) => self.counters.duplicate_blocks += 1,
                None => {
                    tracing::debug!(%peer, cid = %block.cid, "unwanted block");
                    self.strike(&peer);
                }
            }
        }
        for p in msg.presences {
            self.receive_presence(&peer, p, now);
        }
        actions
    }

    /// Applies a peer's wantlist; returns the CIDs newly remembered as
    /// missing.
    fn receive_wants(
        &mut self,
        peer: &PeerId,
        full: bool,
        wants: Vec<(Entry, Option<u64>)>,
    ) -> Vec<Cid> {
        let limits = self.limits.clone();
        let Some(p) = self.peers.get_mut(peer) else {
            return Vec::new();
        };
        if full {
            let keep: HashSet<Multihash> = wants
                .iter()
                .filter(|(e, _)| !e.cancel)
                .map(|(e, _)| *e.cid.hash())
                .collect();
            let before = p.ledger.len();
            p.ledger.retain(|mh, _| keep.contains(mh));
            self.remembered -= before - p.ledger.len();
            p.outbox.retain(&keep);
        }
        let mut new = Vec::new();
        for (e, size) in wants {
            let mh = *e.cid.hash();
            if e.cancel {
                if p.ledger.remove(&mh).is_some() {
                    self.remembered -= 1;
                }
                p.outbox.unqueue(&e.cid);
                continue;
            }
            // Every remembered want, queued answer and queued block takes
            // one of the peer's slots.
            let room = limits
                .max_peer_wants
                .saturating_sub(p.ledger.len() + p.outbox.served());
            let in_ledger = p.ledger.contains_key(&mh);
            let answered = p.outbox.presences.contains_key(&e.cid);
            match size {
                Some(size) if size <= MAX_BLOCK_SIZE as u64 => {
                    let queued = answered || p.outbox.block_keys.contains_key(&mh);
                    if room == 0 && !queued && !in_ledger {
                        self.counters.dropped_wants += 1;
                        continue;
                    }
                    if p.ledger.remove(&mh).is_some() {
                        self.remembered -= 1;
                    }
                    if e.want_type == WantType::Block || size <= limits.max_inline_have {
                        p.outbox.block(e.cid, size, e.priority);
                    } else {
                        p.outbox.presence(e.cid, true);
                    }
                }
                // Missing, or too large to send: the same to the peer.
                size => {
                    let dont_have = e.send_dont_have && !answered;
                    let missing = size.is_none();
                    let remember =
                        missing && !in_ledger && self.remembered < limits.max_remembered_wants;
                    if usize::from(dont_have) + usize::from(remember) > room {
                        self.counters.dropped_wants += 1;
                        continue;
                    }
                    if e.send_dont_have {
                        p.outbox.presence(e.cid, false);
                    }
                    let r = Remembered {
                        cid: e.cid,
                        priority: e.priority,
                        want_type: e.want_type,
                    };
                    if remember {
                        p.ledger.insert(mh, r);
                        self.remembered += 1;
                        new.push(e.cid);
                    } else if let Some(old) = p.ledger.get_mut(&mh) {
                        // A want-block outranks a want-have of the same block.
                        if old.want_type == WantType::Have {
                            *old = r;
                        }
                    } else if missing {
                        // Answered, but not remembered: over the total.
                        self.counters.dropped_wants += 1;
                    }
                }
            }
        }
        if !p.outbox.is_empty() {
            self.dirty.insert(*peer);
        }
        new
    }

    fn receive_presence(&mut self, peer: &PeerId, p: Presence, now: Instant) {
        let sdh = self.limits.ask_dont_have;
        let max = self.limits.want_block_peers;
        let mh = *p.cid.hash();
        let Some(w) = self.wants.get_mut(&mh) else {
            return;
        };
        let took = now.saturating_duration_since(w.last_ask);
        if let Some(p) = self.peers.get_mut(peer) {
            p.answered_after(took);
        }
        if p.have {
            w.dont_haves.remove(peer);
            if w.asked_block.contains(peer) || w.haves.contains(peer) {
                return;
            }
            if w.asked_block.len() < max {
                w.asked_block.insert(*peer);
                w.last_ask = now;
                let entry = Entry::want(w.cid, w.priority, WantType::Block, sdh);
                if let Some(o) = self.outbox(peer) {
                    o.want(entry);
                }
            } else {
                w.haves.push_back(*peer);
            }
        } else {
            w.dont_haves.insert(*peer);
            w.haves.retain(|h| h != peer);
            if w.asked_block.remove(peer) {
                self.ask_next_have(&mh, now);
            }
        }
    }

    /// Bytes of a message from `peer` arrived and more are on the way: the
    /// peer is answering, so wants it was asked for the block of are not
    /// asked again while this goes on. Asking again would only make it send
    /// the same block twice over a link already too slow for it once.
    pub fn arriving(&mut self, peer: &PeerId, now: Instant) {
        if let Some(p) = self.peers.get_mut(peer) {
            p.arriving = Some(now);
        }
    }

    /// Wants unanswered for [`Limits::retry_after`]: the want-block moves
    /// on to another peer that said HAVE; with none, the want goes again to
    /// every peer that has not answered it. A message can be lost on the way
    /// (libp2p-stream drops inbound streams it cannot hand over at once, and
    /// kubo answers on a new stream each time), and a server forgets a
    /// want once it has answered.
    pub fn tick(&mut self, now: Instant) {
        let stale: Vec<Multihash> = self
            .wants
            .iter()
            .filter(|(_, w)| !w.storing && self.quiet_for(w, now) >= self.patience(w))
            .map(|(mh, _)| *mh)
            .collect();
        for mh in stale {
            if self.wants.get(&mh).is_some_and(|w| !w.haves.is_empty()) {
                self.ask_next_have(&mh, now);
            } else {
                self.ask_again(&mh, now);
            }
        }
    }

    /// How long `w` has gone unanswered: since it was last asked, or since
    /// a peer asked for the block last sent us part of a message, within
    /// [`MAX_ARRIVING_WAIT`] of the asking.
    fn quiet_for(&self, w: &Want, now: Instant) -> Duration {
        let since_ask = now.saturating_duration_since(w.last_ask);
        if since_ask >= MAX_ARRIVING_WAIT {
            return since_ask;
        }
        w.asked_block
            .iter()
            .filter_map(|p| self.peers.get(p)?.arriving)
            .filter(|t| *t > w.last_ask)
            .map(|t| now.saturating_duration_since(t))
            .min()
            .unwrap_or(since_ask)
    }

    /// How long `w` may go unanswered: four times the slowest answer time
    /// of the peers still expected to answer, within the limits.
    fn patience(&self, w: &Want) -> Duration {
        let slowest = w
            .sent_to
            .iter()
            .filter(|p| !w.dont_haves.contains(*p))
            .filter_map(|p| self.peers.get(p))
            .map(|p| p.answer_time.unwrap_or(FIRST_ANSWER_TIME))
            .max()
            .unwrap_or(FIRST_ANSWER_TIME);
        (slowest * 4).clamp(self.limits.retry_min, self.limits.retry_after)
    }

    /// Sends want `mh` again to the peers that have not answered it.
    fn ask_again(&mut self, mh: &Multihash, now: Instant) {
        let sdh = self.limits.ask_dont_have;
        let Some(w) = self.wants.get_mut(mh) else {
            return;
        };
        w.last_ask = now;
        let entries: Vec<(PeerId, Entry)> = w
            .sent_to
            .iter()
            .filter(|p| !w.dont_haves.contains(*p))
            .map(|p| {
                let t = if w.asked_block.contains(p) {
                    WantType::Block
                } else {
                    WantType::Have
                };
                (*p, Entry::want(w.cid, w.priority, t, sdh))
            })
            .collect();
        for (p, e) in entries {
            if let Some(o) = self.outbox(&p) {
                o.want(e);
            }
        }
    }

    /// One batch for each peer that has something to send and is not
    /// sending already; each peer is busy until [`Engine::batch_done`].
    pub fn take_batches(&mut self) -> Vec<(PeerId, Batch)> {
        let bytes = self.limits.batch_bytes;
        let mut out = Vec::new();
        for id in std::mem::take(&mut self.dirty) {
            let Some(p) = self.peers.get_mut(&id) else {
                continue;
            };
            if p.ignored || p.outbox.is_empty() {
                continue;
            }
            if p.busy {
                // Asked again when the batch in flight is done.
                continue;
            }
            p.busy = true;
            out.push((id, p.outbox.take(bytes)));
        }
        out
    }

    /// The batch in flight to `peer` was sent (`ok`) or lost; after a loss
    /// our wantlist is sent again in full.
    pub fn batch_done(&mut self, peer: &PeerId, ok: bool) {
        let Some(p) = self.peers.get_mut(peer) else {
            return;
        };
        p.busy = false;
        if !ok {
            self.resync(peer);
        }
        if self.peers.get(peer).is_some_and(|p| !p.outbox.is_empty()) {
            self.dirty.insert(*peer);
        }
    }
}

#[cfg(test)]
mod tests;
