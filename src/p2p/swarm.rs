//! The swarm task: the one owner of the libp2p [`Swarm`] and its
//! [`Behaviour`].
//!
//! Flow: [`spawn`] builds the transports (TCP + Noise + Yamux, QUIC) and the
//! behaviours, binds the listen addresses and waits until each has its
//! address, then starts [`Task::run`], which selects on the shutdown token,
//! swarm events, commands from the [`P2p`] handle and a one-second tick that
//! redials configured peers with backoff. Swarm events become [`PeerEvent`]
//! and [`PubsubEvent`] broadcasts and the state the handle's snapshot reads;
//! DHT provider queries answer their [`Command::Providers`] as they progress.
//! Keys to provide go through the [`Announcer`], drained after each
//! [`Command::Provide`] and on the tick, within its budget; a DHT that gets
//! its first peer has every provided key announced to it again.

use super::identity::PubsubSeqno;
use super::provide::{Announcer, MAX_PROVIDED};
use super::{
    Command, NodeInfo, P2p, P2pError, PeerEvent, PeerInfo, Provider, PubsubEvent, Verdict, AGENT,
    KAD_LAN, KAD_WAN,
};
use crate::config::P2pConfig;
use libp2p::core::ConnectedPoint;
use libp2p::futures::StreamExt;
use libp2p::identity::Keypair;
use libp2p::kad::store::{MemoryStore, MemoryStoreConfig};
use libp2p::multiaddr::Protocol;
use libp2p::swarm::behaviour::toggle::Toggle;
use libp2p::swarm::{NetworkBehaviour, SwarmEvent};
use libp2p::{
    connection_limits, gossipsub, identify, kad, mdns, memory_connection_limits, noise, ping,
    yamux, Multiaddr, PeerId, StreamProtocol, Swarm,
};
use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};
use tokio::sync::{broadcast, mpsc};
use tokio_util::sync::CancellationToken;

/// Commands queued to the swarm task at most.
const COMMAND_QUEUE: usize = 256;
/// Peer and pubsub events buffered for each listener; a listener that falls
/// further behind skips the oldest.
const EVENT_BUFFER: usize = 1024;
/// Longest wait between redials of a configured peer.
const MAX_BACKOFF: Duration = Duration::from_secs(60);
/// How often the DHTs refresh their routing tables (kad's own default).
const BOOTSTRAP_EVERY: Duration = Duration::from_secs(5 * 60);
/// How long after start a node with no DHT peer says so: time for mDNS and
/// the configured peers to connect.
const ALONE_AFTER: Duration = Duration::from_secs(10);

#[derive(NetworkBehaviour)]
pub(super) struct Behaviour {
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

/// One provider lookup, over one query per DHT.
struct ProviderLookup {
    reply: mpsc::Sender<Provider>,
    /// Shared by the lookup's queries: the channel closes with the last.
    seen: std::sync::Arc<std::sync::Mutex<BTreeSet<PeerId>>>,
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
    /// This node's own provider records.
    announcer: Announcer,
    seqno: PubsubSeqno,
    /// When the DHTs next refresh their routing tables.
    next_bootstrap: Instant,
    /// Whether the node said it has no peers yet (it says so once).
    said_alone: bool,
    metrics: Option<super::metrics::Metrics>,
}

/// Builds the swarm with `key` (pubsub signed by `author`), binds the
/// listen addresses (returning once each has an address) and starts the
/// task; configured peers are dialled from there.
pub(super) async fn spawn(
    config: &P2pConfig,
    key: Keypair,
    author: Keypair,
    seqno: PubsubSeqno,
    metrics: Option<super::metrics::Metrics>,
    shutdown: CancellationToken,
) -> Result<P2p, P2pError> {
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
                let store = MemoryStore::with_config(
                    peer_id,
                    MemoryStoreConfig {
                        max_provided_keys: MAX_PROVIDED,
                        ..MemoryStoreConfig::default()
                    },
                );
                // kad's own periodic refresh warns "No known peers" every
                // few minutes on a node that is alone, which is a normal
                // state here; the task refreshes instead (`Task::bootstrap`).
                // A refresh on the first peers stays kad's.
                cfg.set_periodic_bootstrap_interval(None);
                let mut k = kad::Behaviour::with_config(peer_id, store, cfg);
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
                reason: error_chain(&e),
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
                    cancel_lone_bootstrap(swarm.behaviour_mut());
                    confirm_listen_addr(&mut swarm, &address);
                    listen_addrs.insert(address);
                }
                SwarmEvent::ListenerClosed { listener_id, reason, .. } => {
                    if let Some(addr) = pending.remove(&listener_id) {
                        let reason = match reason {
                            Err(e) => error_chain(&e),
                            Ok(()) => "closed".into(),
                        };
                        return Err(P2pError::Listen { addr, reason });
                    }
                }
                SwarmEvent::ListenerError { listener_id, error } => {
                    if let Some(addr) = pending.remove(&listener_id) {
                        return Err(P2pError::Listen { addr, reason: error_chain(&error) });
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
        announcer: Announcer::new(Instant::now()),
        seqno,
        next_bootstrap: Instant::now() + ALONE_AFTER,
        said_alone: false,
        metrics,
    };
    tokio::spawn(task.run(shutdown));
    Ok(P2p {
        peer_id,
        commands: tx,
        peers,
        pubsub,
        control,
        connected,
    })
}

impl Task {
    async fn run(mut self, shutdown: CancellationToken) {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                ev = self.swarm.select_next_some() => {
                    if let Some(m) = &self.metrics {
                        m.record(&ev, || self.swarm.connected_peers().count());
                    }
                    self.on_swarm_event(ev);
                }
                cmd = self.commands.recv() => match cmd {
                    Some(cmd) => self.on_command(cmd),
                    None => break,
                },
                _ = tick.tick() => {
                    self.redial();
                    self.announce();
                    self.bootstrap();
                }
            }
        }
    }

    /// Refreshes the routing table of each DHT that has peers, every
    /// [`BOOTSTRAP_EVERY`]; a node with none says so once, at info.
    fn bootstrap(&mut self) {
        let now = Instant::now();
        if now < self.next_bootstrap {
            return;
        }
        self.next_bootstrap = now + BOOTSTRAP_EVERY;
        let b = self.swarm.behaviour_mut();
        let mut alone = true;
        for k in [&mut b.kad, &mut b.lan_kad] {
            if routing_entries(k) > 0 {
                alone = false;
                // Fails only with no known peers, ruled out above.
                let _ = k.bootstrap();
            }
        }
        if alone && !self.said_alone {
            self.said_alone = true;
            tracing::info!(
                "no peers yet: serving alone until one connects (over mDNS on the LAN, or give one with --peer)"
            );
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
            Command::Provide(cids) => {
                for cid in cids {
                    self.announcer
                        .want(kad::RecordKey::new(&cid.hash().to_bytes()));
                }
                self.announce();
            }
            Command::StopProviding(cids) => {
                for cid in cids {
                    let key = kad::RecordKey::new(&cid.hash().to_bytes());
                    if self.announcer.forget(&key) {
                        let b = self.swarm.behaviour_mut();
                        b.kad.stop_providing(&key);
                        b.lan_kad.stop_providing(&key);
                    }
                }
            }
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

    /// Starts what the announcer's budget allows. A DHT without peers only
    /// keeps the record (for clients that ask this node); its query ends at
    /// once.
    fn announce(&mut self) {
        let now = Instant::now();
        while let Some(a) = self.announcer.next(now) {
            let b = self.swarm.behaviour_mut();
            let mut stored = true;
            for k in [&mut b.kad, &mut b.lan_kad] {
                if let Some(old) = &a.evict {
                    k.stop_providing(old);
                }
                // The store is full of peers' records: nothing to do
                // but leave this key out.
                if let Err(e) = k.start_providing(a.key.clone()) {
                    tracing::debug!("DHT provide: {e}");
                    stored = false;
                }
            }
            if !stored {
                self.announcer.forget(&a.key);
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
                cancel_lone_bootstrap(self.swarm.behaviour_mut());
                confirm_listen_addr(&mut self.swarm, &address);
                self.listen_addrs.insert(address);
            }
            SwarmEvent::ExpiredListenAddr { address, .. } => {
                self.swarm.remove_external_address(&address);
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
            BehaviourEvent::Kad(kad::Event::RoutingUpdated {
                is_new_peer: true, ..
            }) if routing_entries(&mut self.swarm.behaviour_mut().kad) == 1 => {
                self.announcer.reannounce();
            }
            BehaviourEvent::LanKad(kad::Event::RoutingUpdated {
                is_new_peer: true, ..
            }) if routing_entries(&mut self.swarm.behaviour_mut().lan_kad) == 1 => {
                self.announcer.reannounce();
            }
            BehaviourEvent::Kad(kad::Event::OutboundQueryProgressed {
                result: kad::QueryResult::StartProviding(r) | kad::QueryResult::RepublishProvider(r),
                ..
            })
            | BehaviourEvent::LanKad(kad::Event::OutboundQueryProgressed {
                result: kad::QueryResult::StartProviding(r) | kad::QueryResult::RepublishProvider(r),
                ..
            }) => {
                if let Err(e) = r {
                    tracing::debug!("DHT provide: {e:?}");
                }
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

/// Peers in a DHT's routing table.
/// Kademlia schedules a routing table refresh on each new listen address
/// while it has no connected peer; with no peer in its table that refresh can
/// only fail, and kad warns "Failed to trigger bootstrap: No known peers"
/// for each. Asking for a refresh now fails quietly and clears the one kad
/// scheduled (`bootstrap` resets its timers when it has no peers), so a node
/// alone says so once, in [`Task::bootstrap`], instead.
fn cancel_lone_bootstrap(b: &mut Behaviour) {
    for k in [&mut b.kad, &mut b.lan_kad] {
        if routing_entries(k) == 0 {
            let _ = k.bootstrap();
        }
    }
}

/// An error and its sources in one line. libp2p's transport errors say
/// nothing themselves (`TransportError::Other` displays as an empty string)
/// and leave the OS error to their source.
fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = String::new();
    let mut next = Some(e);
    while let Some(e) = next {
        let text = e.to_string();
        if !text.is_empty() && !out.contains(&text) {
            if !out.is_empty() {
                out.push_str(": ");
            }
            out.push_str(&text);
        }
        next = e.source();
    }
    if out.is_empty() {
        out.push_str("unknown error");
    }
    out
}

fn routing_entries(k: &mut kad::Behaviour<MemoryStore>) -> usize {
    k.kbuckets().map(|b| b.num_entries()).sum()
}

/// Takes a listen address as one peers can reach us at. On a mesh or a LAN
/// there is no NAT to discover: the interface addresses (a Yggdrasil 200::/7
/// or cjdns fc00::/8 one too) are where peers dial. Kademlia puts only
/// confirmed addresses in our provider records, and kubo's DHT servers drop
/// a provider record that carries none.
fn confirm_listen_addr(swarm: &mut Swarm<Behaviour>, address: &Multiaddr) {
    swarm.add_external_address(address.clone());
}
