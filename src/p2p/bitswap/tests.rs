//! The service over real libp2p connections: small swarms on loopback TCP,
//! each with a stream behaviour, Bitswap and a memory store; and a hand-run
//! peer that speaks the wire format directly, to send what a well-behaved
//! node never would.

use super::message::{BlockData, Entry, Message, Presence, Protocol, WantType};
use super::{spawn, Bitswap, BitswapError, Config, Peers};
use crate::p2p::PeerEvent;
use crate::store::notify::Notifying;
use crate::store::{Block, BlockRead, Blockstore, MemStore, DAG_PB, RAW};
use futures::io::{AsyncReadExt, AsyncWriteExt};
use futures::StreamExt;
use libp2p::swarm::SwarmEvent;
use libp2p::{Multiaddr, PeerId, Stream, StreamProtocol};
use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{broadcast, mpsc};
use tokio_util::sync::CancellationToken;

/// A swarm's connections as [`Peers`].
#[derive(Clone)]
struct SwarmPeers {
    events: broadcast::Sender<PeerEvent>,
    connected: Arc<Mutex<HashSet<PeerId>>>,
}

impl Peers for SwarmPeers {
    fn peer_events(&self) -> broadcast::Receiver<PeerEvent> {
        self.events.subscribe()
    }
    fn connected_peers(&self) -> Vec<PeerId> {
        self.connected.lock().unwrap().iter().copied().collect()
    }
}

/// A libp2p node with only the stream behaviour, run by a task.
struct Swarm {
    id: PeerId,
    addr: Multiaddr,
    control: libp2p_stream::Control,
    peers: SwarmPeers,
    dial: mpsc::Sender<Multiaddr>,
    cancel: CancellationToken,
}

impl Swarm {
    async fn start() -> Self {
        let mut swarm = libp2p::SwarmBuilder::with_new_identity()
            .with_tokio()
            .with_tcp(
                libp2p::tcp::Config::default(),
                libp2p::noise::Config::new,
                libp2p::yamux::Config::default,
            )
            .unwrap()
            .with_behaviour(|_| libp2p_stream::Behaviour::new())
            .unwrap()
            .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(60)))
            .build();
        swarm
            .listen_on("/ip4/127.0.0.1/tcp/0".parse().unwrap())
            .unwrap();
        let addr = loop {
            if let SwarmEvent::NewListenAddr { address, .. } = swarm.select_next_some().await {
                break address;
            }
        };
        let peers = SwarmPeers {
            events: broadcast::Sender::new(64),
            connected: Arc::default(),
        };
        let (dial, mut dials) = mpsc::channel::<Multiaddr>(4);
        let cancel = CancellationToken::new();
        let (id, control) = (*swarm.local_peer_id(), swarm.behaviour().new_control());
        let (p, stop) = (peers.clone(), cancel.clone());
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    () = stop.cancelled() => break,
                    Some(addr) = dials.recv() => swarm.dial(addr).unwrap(),
                    ev = swarm.select_next_some() => match ev {
                        SwarmEvent::ConnectionEstablished { peer_id, num_established, .. }
                            if num_established.get() == 1 =>
                        {
                            p.connected.lock().unwrap().insert(peer_id);
                            let _ = p.events.send(PeerEvent::Connected(peer_id));
                        }
                        SwarmEvent::ConnectionClosed { peer_id, num_established: 0, .. } => {
                            p.connected.lock().unwrap().remove(&peer_id);
                            let _ = p.events.send(PeerEvent::Disconnected(peer_id));
                        }
                        _ => {}
                    },
                }
            }
        });
        Self {
            id,
            addr,
            control,
            peers,
            dial,
            cancel,
        }
    }

    /// Connects to `other` and waits until both sides see it.
    async fn connect(&self, other: &Swarm) {
        let addr = other
            .addr
            .clone()
            .with(libp2p::multiaddr::Protocol::P2p(other.id));
        self.dial.send(addr).await.unwrap();
        for _ in 0..200 {
            let here = self.peers.connected.lock().unwrap().contains(&other.id);
            let there = other.peers.connected.lock().unwrap().contains(&self.id);
            if here && there {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("no connection");
    }
}

impl Drop for Swarm {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

/// A node running Bitswap over a memory store.
struct Node {
    swarm: Swarm,
    store: Arc<Notifying<MemStore>>,
    bitswap: Bitswap,
}

impl Node {
    async fn start() -> Self {
        Self::with(Config::default()).await
    }

    async fn with(config: Config) -> Self {
        let swarm = Swarm::start().await;
        let store = Arc::new(Notifying::new(MemStore::new()));
        let (bitswap, _task) = spawn(
            config,
            store.clone(),
            store.subscribe(),
            swarm.control.clone(),
            swarm.peers.clone(),
            swarm.cancel.clone(),
        )
        .unwrap();
        Self {
            swarm,
            store,
            bitswap,
        }
    }

    async fn connect(&self, other: &Node) {
        self.swarm.connect(&other.swarm).await;
    }
}

fn block(tag: &str, len: usize) -> Block {
    let data: Vec<u8> = tag.bytes().cycle().take(len).collect();
    Block::new(cid::Version::V1, RAW, data)
}

/// Polls `f` until it holds, for at most five seconds.
async fn eventually(what: &str, f: impl Fn() -> bool) {
    for _ in 0..500 {
        if f() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("timed out waiting until {what}");
}

#[tokio::test]
async fn fetches_from_the_peer_that_has_the_block() {
    let (a, b, c) = tokio::join!(Node::start(), Node::start(), Node::start());
    let x = block("x", 300_000);
    a.store.put(&x).unwrap();
    b.connect(&a).await;
    b.connect(&c).await;
    let got = b.bitswap.get(&x.cid).await.unwrap();
    assert_eq!(got, x.data);
    assert!(b.store.has(&x.cid).unwrap());
    let s = b.bitswap.stats();
    assert_eq!((s.blocks_received, s.bytes_received), (1, 300_000));
    eventually("the want is done", || b.bitswap.stats().wants_pending == 0).await;
    eventually("a counted what it sent", || {
        a.bitswap.stats().bytes_sent == 300_000
    })
    .await;
    // c got the want and then its cancel: it remembers nothing.
    eventually("c forgot the want", || {
        c.bitswap.stats().peer_wants_pending == 0 && c.bitswap.stats().messages_received >= 2
    })
    .await;
    // A second get is answered from the store.
    assert_eq!(b.bitswap.get(&x.cid).await.unwrap(), x.data);
    assert_eq!(b.bitswap.stats().blocks_received, 1);
}

#[tokio::test]
async fn a_want_for_a_missing_block_is_served_when_the_block_is_stored() {
    let (a, b) = tokio::join!(Node::start(), Node::start());
    b.connect(&a).await;
    let seg = block("segment", 50_000);
    let waiting = {
        let (bs, cid) = (b.bitswap.clone(), seg.cid);
        tokio::spawn(async move { bs.get(&cid).await })
    };
    eventually("a remembers b's want", || {
        a.bitswap.stats().peer_wants_pending == 1
    })
    .await;
    // The segment is cut only now.
    a.store.put(&seg).unwrap();
    let got = tokio::time::timeout(Duration::from_secs(5), waiting)
        .await
        .expect("served promptly")
        .unwrap()
        .unwrap();
    assert_eq!(got, seg.data);
    eventually("a forgot the served want", || {
        a.bitswap.stats().peer_wants_pending == 0
    })
    .await;
}

#[tokio::test]
async fn concurrent_gets_share_one_want_and_late_peers_get_the_wantlist() {
    let (a, b) = tokio::join!(Node::start(), Node::start());
    let x = block("shared", 10);
    a.store.put(&x).unwrap();
    let gets: Vec<_> = (0..3)
        .map(|_| {
            let (bs, cid) = (b.bitswap.clone(), x.cid);
            tokio::spawn(async move { bs.get(&cid).await })
        })
        .collect();
    eventually("one want for three gets", || {
        b.bitswap.stats().wants_pending == 1
    })
    .await;
    // No peer yet: a connects afterwards and gets the want then.
    b.connect(&a).await;
    for g in gets {
        assert_eq!(g.await.unwrap().unwrap(), x.data);
    }
    assert_eq!(b.bitswap.stats().blocks_received, 1);
}

#[tokio::test]
async fn a_timed_out_get_cancels_its_want() {
    let (a, b) = tokio::join!(Node::start(), Node::start());
    b.connect(&a).await;
    let x = block("nowhere", 10);
    let err = b
        .bitswap
        .get_within(&x.cid, Duration::from_millis(300))
        .await
        .unwrap_err();
    assert!(
        matches!(err, BitswapError::Timeout { peers: 1, .. }),
        "{err}"
    );
    eventually("b dropped the want", || {
        b.bitswap.stats().wants_pending == 0
    })
    .await;
    eventually("a got the cancel", || {
        a.bitswap.stats().peer_wants_pending == 0
    })
    .await;
}

#[tokio::test]
async fn identity_and_unsupported_cids() {
    let b = Node::start().await;
    let id = cid::Cid::new_v1(
        RAW,
        crate::store::Multihash::wrap(crate::store::IDENTITY, b"inline").unwrap(),
    );
    assert_eq!(&b.bitswap.get(&id).await.unwrap()[..], b"inline");
    let blake3 = cid::Cid::new_v1(RAW, crate::store::Multihash::wrap(0x1e, &[0; 32]).unwrap());
    assert!(matches!(
        b.bitswap.get(&blake3).await,
        Err(BitswapError::UnsupportedHash { code: 0x1e, .. })
    ));
}

/// A peer driven by hand: accepts `protocol` and speaks raw messages.
struct RawPeer {
    swarm: Swarm,
    incoming: libp2p_stream::IncomingStreams,
}

impl RawPeer {
    async fn start(protocol: Protocol) -> Self {
        let swarm = Swarm::start().await;
        let incoming = swarm
            .control
            .clone()
            .accept(StreamProtocol::new(protocol.name()))
            .unwrap();
        Self { swarm, incoming }
    }

    /// The next message on the next inbound stream.
    async fn next_message(&mut self) -> (Stream, Message) {
        let (_, mut s) = self.incoming.next().await.unwrap();
        let msg = read_message(&mut s).await;
        (s, msg)
    }

    async fn send(&self, to: PeerId, protocol: Protocol, msg: &Message) -> Stream {
        let mut s = self
            .swarm
            .control
            .clone()
            .open_stream(to, StreamProtocol::new(protocol.name()))
            .await
            .unwrap();
        s.write_all(&msg.to_frame(protocol)).await.unwrap();
        s.flush().await.unwrap();
        s
    }
}

async fn read_message(s: &mut Stream) -> Message {
    let mut header = Vec::new();
    let len = loop {
        let mut byte = [0];
        s.read_exact(&mut byte).await.unwrap();
        header.push(byte[0]);
        if let Some((_, len)) = super::message::frame_header(&header).unwrap() {
            break len;
        }
    };
    let mut body = vec![0; len];
    s.read_exact(&mut body).await.unwrap();
    Message::decode(&body.into()).unwrap()
}

#[tokio::test]
async fn forged_blocks_are_dropped_and_counted() {
    let (mut evil, b) = tokio::join!(RawPeer::start(Protocol::V120), Node::start());
    b.swarm.connect(&evil.swarm).await;
    let x = block("genuine", 1000);
    let getting = {
        let (bs, cid) = (b.bitswap.clone(), x.cid);
        tokio::spawn(async move { bs.get_within(&cid, Duration::from_secs(2)).await })
    };
    // One peer: b asks it for the block itself.
    let (_s, want) = evil.next_message().await;
    assert_eq!(want.wantlist.len(), 1);
    assert_eq!(want.wantlist[0].cid, x.cid);
    assert_eq!(want.wantlist[0].want_type, WantType::Block);
    assert!(!want.wantlist[0].send_dont_have);
    // It answers with other bytes under the block's prefix.
    let forged = BlockData::new(&x.cid, bytes::Bytes::from_static(b"forged bytes"));
    let msg = Message {
        blocks: vec![forged],
        ..Message::default()
    };
    let _out = evil.send(b.swarm.id, Protocol::V120, &msg).await;
    eventually("the block was rejected", || {
        b.bitswap.stats().rejected_blocks == 1
    })
    .await;
    assert!(matches!(
        getting.await.unwrap(),
        Err(BitswapError::Timeout { .. })
    ));
    assert!(b.store.keys().unwrap().is_empty(), "nothing was stored");
    assert_eq!(b.bitswap.stats().blocks_received, 0);
}

#[tokio::test]
async fn speaks_bitswap_1_0_0_to_peers_that_only_know_it() {
    let (mut old, b) = tokio::join!(RawPeer::start(Protocol::V100), Node::start());
    b.swarm.connect(&old.swarm).await;
    let x = Block::new(cid::Version::V0, DAG_PB, vec![0x0a, 0x02, 0x08, 0x01]);
    let getting = {
        let (bs, cid) = (b.bitswap.clone(), x.cid);
        tokio::spawn(async move { bs.get(&cid).await })
    };
    // Our writer falls back to 1.0.0; the want reads as a want-block.
    let (_s, want) = old.next_message().await;
    assert_eq!(
        want.wantlist,
        vec![Entry::want(
            x.cid,
            want.wantlist[0].priority,
            WantType::Block,
            false
        )]
    );
    let msg = Message {
        blocks: vec![BlockData::new(&x.cid, x.data.clone())],
        ..Message::default()
    };
    let _out = old.send(b.swarm.id, Protocol::V100, &msg).await;
    assert_eq!(getting.await.unwrap().unwrap(), x.data);
}

#[tokio::test]
async fn serves_want_have_with_have_and_dont_have() {
    let (mut asker, a) = tokio::join!(RawPeer::start(Protocol::V120), Node::start());
    a.swarm.connect(&asker.swarm).await;
    let big = block("big", 5000);
    let tiny = block("tiny", 10);
    a.store.put_many(&[big.clone(), tiny.clone()]).unwrap();
    let missing = block("missing", 10);
    let msg = Message {
        wantlist: vec![
            Entry::want(big.cid, 1, WantType::Have, true),
            Entry::want(tiny.cid, 1, WantType::Have, true),
            Entry::want(missing.cid, 1, WantType::Have, true),
        ],
        ..Message::default()
    };
    let _out = asker.send(a.swarm.id, Protocol::V120, &msg).await;
    let (mut replies, reply) = asker.next_message().await;
    let mut presences = reply.presences.clone();
    presences.sort_by_key(|p| p.have);
    assert_eq!(
        presences,
        vec![
            Presence {
                cid: missing.cid,
                have: false
            },
            Presence {
                cid: big.cid,
                have: true
            },
        ]
    );
    // The tiny block comes inline instead of a HAVE.
    assert_eq!(reply.blocks, vec![BlockData::new(&tiny.cid, tiny.data)]);
    // A want-block then gets the block, on the same stream.
    let msg = Message {
        wantlist: vec![Entry::want(big.cid, 1, WantType::Block, false)],
        ..Message::default()
    };
    let _out2 = asker.send(a.swarm.id, Protocol::V120, &msg).await;
    let reply = read_message(&mut replies).await;
    assert_eq!(reply.blocks, vec![BlockData::new(&big.cid, big.data)]);
    assert_eq!(
        a.bitswap.stats().peer_wants_pending,
        1,
        "the missing block's want is kept"
    );
}
