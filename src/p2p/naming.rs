//! IPNS over pubsub: each stream's signed name, published the moment its
//! site changes, and names of other nodes resolved in well under a second,
//! with no DHT and no second node needed.
//!
//! ```text
//! SiteFeed (stream, site root) --> publish: KeyStore::sign_next (sequence persisted)
//!     -> best-record table -> gossipsub topic /record/<base64url(/ipns/<mh>)>
//!                          -> both DHTs when they have peers (never waited for)
//! gossipsub message -> verify (signature, name, expiry) -> better than ours?
//!     -> table + watchers (mirrors, resolvers); Accept / Ignore / Reject
//! /libp2p/fetch/0.0.1 <- peers joining a topic ask for the current record
//! resolve(name): table, else subscribe + fetch from peers + wait
//! ```
//!
//! The records' validity is long (a year by default) so that nodes whose
//! clocks are days off still accept them; freshness comes from sequence
//! numbers, which only grow (kept in the data directory), and from the
//! short TTL.

use super::{P2p, PubsubEvent, Verdict};
use crate::ipns::keys::KeyStore;
use crate::ipns::record::Record;
use crate::ipns::Name;
use cid::Cid;
use futures::{AsyncReadExt, AsyncWriteExt};
use libp2p::{PeerId, StreamProtocol};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};
use thiserror::Error;
use tokio::sync::{broadcast, mpsc, watch};
use tokio_util::sync::CancellationToken;

/// The fetch protocol peers use to ask for a topic's current record.
pub const FETCH: StreamProtocol = StreamProtocol::new("/libp2p/fetch/0.0.1");
/// Names whose records are kept at most (own and followed ones first).
const MAX_NAMES: usize = 4096;
/// Largest fetch request or response read.
const MAX_FETCH_MESSAGE: usize = 16 << 10;
/// Fetch streams served at once.
const MAX_FETCH_SERVING: usize = 32;
/// A fetch that takes longer than this is given up.
const FETCH_TIMEOUT: Duration = Duration::from_secs(5);

/// Naming settings (from `[ipns]` in the config).
#[derive(Debug, Clone)]
pub struct NamingConfig {
    /// How long a record stays valid.
    pub validity: Duration,
    /// How long others may cache a record.
    pub ttl: Duration,
    /// Records of our own names are published again this often.
    pub republish: Duration,
    /// How long a resolve waits for a record we do not hold.
    pub resolve_timeout: Duration,
}

impl From<&crate::config::IpnsConfig> for NamingConfig {
    fn from(c: &crate::config::IpnsConfig) -> Self {
        Self {
            validity: c.validity,
            ttl: c.ttl,
            republish: c.republish,
            resolve_timeout: c.resolve_timeout,
        }
    }
}

/// Why a name could not be resolved or published.
#[derive(Debug, Error)]
pub enum NamingError {
    /// No valid record arrived in time.
    #[error("no record for {name} within {timeout:?}: is a node that publishes it connected?")]
    NotFound {
        /// The name.
        name: String,
        /// How long we waited.
        timeout: Duration,
    },
    /// Signing or keeping the record failed.
    #[error("signing the record of stream {stream}: {reason}")]
    Sign {
        /// The stream.
        stream: String,
        /// Why.
        reason: String,
    },
    /// A record offered to us is not valid for the name.
    #[error("invalid record: {0}")]
    Invalid(#[from] crate::ipns::RecordError),
    /// A record offered to us has expired.
    #[error("the record expired; sign a new one")]
    Expired,
    /// The p2p node stopped.
    #[error(transparent)]
    P2p(#[from] super::P2pError),
}

#[derive(Default)]
struct Table {
    /// The best valid record seen per name.
    records: HashMap<Name, Record>,
    /// Our own names: stream -> name.
    own: HashMap<String, Name>,
    /// Readers waiting for updates of a name.
    watchers: HashMap<Name, watch::Sender<Option<Record>>>,
    /// When we last answered a new subscriber on a topic by republishing.
    answered: HashMap<String, Instant>,
}

/// The naming service. Cheap to clone.
#[derive(Clone)]
pub struct Naming {
    inner: Arc<Inner>,
}

struct Inner {
    p2p: P2p,
    keys: KeyStore,
    config: NamingConfig,
    table: Mutex<Table>,
    metrics: Option<Metrics>,
}

/// What naming counts for `GET /metrics`, per own stream (the label is the
/// stream's name, from the config; never the IPNS name of a peer's stream).
#[derive(Debug, Clone)]
struct Metrics {
    publishes: Family<StreamLabel, Counter>,
    sequence: Family<StreamLabel, Gauge<u64, std::sync::atomic::AtomicU64>>,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StreamLabel {
    stream: String,
}

impl Metrics {
    fn new(registry: &mut Registry) -> Self {
        let r = registry.sub_registry_with_prefix("ipns");
        let m = Self {
            publishes: Family::default(),
            sequence: Family::default(),
        };
        r.register(
            "publishes",
            "IPNS records of own streams sent (pubsub and DHT), republishes included",
            m.publishes.clone(),
        );
        r.register(
            "sequence",
            "Sequence number of each own stream's latest IPNS record",
            m.sequence.clone(),
        );
        m
    }
}

impl std::fmt::Debug for Naming {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Naming").finish_non_exhaustive()
    }
}

/// What [`Naming`] publishes: this node's streams, each as `(stream, site
/// root)`. `node.rs` feeds it from the HLS stage, so naming knows nothing of
/// how sites are made.
#[derive(Debug)]
pub struct SiteFeed {
    /// Every stream's latest site at start, published before
    /// [`Naming::spawn`] returns.
    pub current: Vec<(String, Cid)>,
    /// Each change after, in order. The sender keeps it bounded: when it
    /// falls behind it sends only each stream's latest site, since only the
    /// latest matters.
    pub updates: mpsc::Receiver<(String, Cid)>,
}

impl Naming {
    /// Starts naming: publishes each stream's current site, then every
    /// change; answers fetches; validates what pubsub brings. With a
    /// `registry`, own records sent are counted in it.
    pub async fn spawn(
        p2p: P2p,
        keys: KeyStore,
        sites: Option<SiteFeed>,
        config: NamingConfig,
        registry: Option<&mut Registry>,
        shutdown: CancellationToken,
    ) -> Result<Self, NamingError> {
        let this = Self {
            inner: Arc::new(Inner {
                p2p: p2p.clone(),
                keys,
                config,
                table: Mutex::new(Table::default()),
                metrics: registry.map(Metrics::new),
            }),
        };
        // Listen before anything is published or subscribed.
        let events = p2p.pubsub_events();
        tokio::spawn(this.clone().run_pubsub(events, shutdown.clone()));
        tokio::spawn(this.clone().serve_fetch(shutdown.clone()));
        if let Some(SiteFeed { current, updates }) = sites {
            for (stream, root) in current {
                this.publish_site(&stream, &root).await?;
            }
            tokio::spawn(this.clone().run_publisher(updates, shutdown.clone()));
        }
        tokio::spawn(this.clone().run_republish(shutdown));
        Ok(this)
    }

    fn table(&self) -> std::sync::MutexGuard<'_, Table> {
        self.inner.table.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// How long a resolve waits by default.
    pub fn resolve_timeout(&self) -> Duration {
        self.inner.config.resolve_timeout
    }

    /// The IPNS name of one of our streams, if it has been published.
    pub fn own_name(&self, stream: &str) -> Option<Name> {
        self.table().own.get(stream).cloned()
    }

    /// Whether `name` is one of our streams' published names.
    pub fn is_own(&self, name: &Name) -> bool {
        self.table().own.values().any(|n| n == name)
    }

    /// The name of a stream's key (created if needed), published or not.
    pub fn name_of(&self, stream: &str) -> Result<Name, NamingError> {
        let key = self
            .inner
            .keys
            .get_or_create(stream)
            .map_err(|e| NamingError::Sign {
                stream: stream.to_owned(),
                reason: e.to_string(),
            })?;
        Ok(Name::from_public_key(&key.public()))
    }

    /// The best record we hold for `name`, without asking anyone.
    pub fn cached(&self, name: &Name) -> Option<Record> {
        self.table().records.get(name).cloned()
    }

    /// Follows a name: subscribes to its topic, asks connected peers for
    /// the current record, and returns a receiver that sees every better
    /// record from now on.
    pub async fn watch(&self, name: &Name) -> Result<watch::Receiver<Option<Record>>, NamingError> {
        let (rx, new) = {
            let mut t = self.table();
            let current = t.records.get(name).cloned();
            match t.watchers.get(name) {
                Some(tx) => (tx.subscribe(), false),
                None => {
                    let (tx, rx) = watch::channel(current);
                    t.watchers.insert(*name, tx);
                    (rx, true)
                }
            }
        };
        if new {
            self.inner.p2p.subscribe(&name.pubsub_topic()).await?;
        }
        tokio::spawn(self.clone().fetch_from_peers(*name));
        Ok(rx)
    }

    /// Resolves a name to its best valid record: at once when we hold one,
    /// else from pubsub or a peer's fetch answer within `timeout`.
    pub async fn resolve(&self, name: &Name, timeout: Duration) -> Result<Record, NamingError> {
        if let Some(r) = self.cached(name) {
            return Ok(r);
        }
        let mut rx = self.watch(name).await?;
        let found = tokio::time::timeout(timeout, async {
            loop {
                if let Some(r) = rx.borrow_and_update().clone() {
                    return Some(r);
                }
                if rx.changed().await.is_err() {
                    return None;
                }
            }
        })
        .await;
        match found {
            Ok(Some(r)) => Ok(r),
            _ => Err(NamingError::NotFound {
                name: name.to_string(),
                timeout,
            }),
        }
    }

    /// Takes a record from elsewhere (the delegated routing PUT): kept and
    /// passed on when it is valid and better than ours.
    pub async fn put(&self, name: &Name, bytes: &[u8]) -> Result<bool, NamingError> {
        let record = Record::verify(name, bytes)?;
        if record.is_expired(SystemTime::now()) {
            return Err(NamingError::Expired);
        }
        let better = self.offer(name, &record);
        if better {
            let _ = self
                .inner
                .p2p
                .publish(&name.pubsub_topic(), record.to_bytes().to_vec())
                .await;
        }
        Ok(better)
    }

    /// Keeps `record` if it beats what we hold; tells watchers.
    fn offer(&self, name: &Name, record: &Record) -> bool {
        let mut t = self.table();
        if let Some(cur) = t.records.get(name) {
            if !record.better(cur) {
                return false;
            }
        } else if t.records.len() >= MAX_NAMES && !t.watchers.contains_key(name) {
            // Full: only names someone follows are still taken.
            return false;
        }
        t.records.insert(*name, record.clone());
        if let Some(tx) = t.watchers.get(name) {
            tx.send_replace(Some(record.clone()));
        }
        true
    }

    /// Signs and publishes a record pointing the stream's name at its site.
    async fn publish_site(&self, stream: &str, root: &Cid) -> Result<(), NamingError> {
        let value = format!("/ipfs/{root}");
        let keys = self.inner.keys.clone();
        let owned = stream.to_owned();
        let validity = SystemTime::now() + self.inner.config.validity;
        let ttl = self.inner.config.ttl;
        let sign_err = |reason: String| NamingError::Sign {
            stream: stream.to_owned(),
            reason,
        };
        let (record, name) = tokio::task::spawn_blocking(move || {
            // After a restart the last record may already say this: send it
            // again rather than spend a sequence number.
            let key = keys.get_or_create(&owned).map_err(|e| e.to_string())?;
            let name = Name::from_public_key(&key.public());
            if let Ok(Some(last)) = keys.last_record(&owned) {
                if last.value() == value && !last.is_expired(SystemTime::now()) {
                    return Ok((last, name));
                }
            }
            keys.sign_next(&owned, &value, validity, ttl)
                .map(|r| (r, name))
                .map_err(|e| e.to_string())
        })
        .await
        .map_err(|e| sign_err(e.to_string()))?
        .map_err(sign_err)?;
        let first = {
            let mut t = self.table();
            t.own.insert(stream.to_owned(), name).is_none()
        };
        if first {
            // Subscribed to our own topic, peers that follow the name find
            // us in its mesh (and fetch from us).
            self.inner.p2p.subscribe(&name.pubsub_topic()).await?;
        }
        self.offer(&name, &record);
        self.send(&name, &record).await
    }

    async fn send(&self, name: &Name, record: &Record) -> Result<(), NamingError> {
        let bytes = record.to_bytes().to_vec();
        self.inner
            .p2p
            .publish(&name.pubsub_topic(), bytes.clone())
            .await?;
        self.inner.p2p.put_record(name.routing_key(), bytes).await?;
        tracing::debug!(%name, seq = record.sequence(), value = record.value(), "published");
        if let Some(m) = &self.inner.metrics {
            let stream = self
                .table()
                .own
                .iter()
                .find(|(_, n)| *n == name)
                .map(|(s, _)| s.clone());
            if let Some(stream) = stream {
                let label = StreamLabel { stream };
                m.publishes.get_or_create(&label).inc();
                m.sequence.get_or_create(&label).set(record.sequence());
            }
        }
        Ok(())
    }

    async fn run_publisher(
        self,
        mut updates: mpsc::Receiver<(String, Cid)>,
        shutdown: CancellationToken,
    ) {
        loop {
            let (stream, root) = tokio::select! {
                _ = shutdown.cancelled() => return,
                u = updates.recv() => match u {
                    Some(u) => u,
                    None => return,
                },
            };
            if let Err(e) = self.publish_site(&stream, &root).await {
                tracing::warn!(%stream, "IPNS publish failed: {e}");
            }
        }
    }

    async fn run_republish(self, shutdown: CancellationToken) {
        let mut tick = tokio::time::interval(self.inner.config.republish);
        tick.tick().await;
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tick.tick() => {}
            }
            let own: Vec<(Name, Record)> = {
                let t = self.table();
                t.own
                    .values()
                    .filter_map(|n| t.records.get(n).map(|r| (*n, r.clone())))
                    .collect()
            };
            for (name, record) in own {
                if let Err(e) = self.send(&name, &record).await {
                    tracing::debug!(%name, "republish: {e}");
                }
            }
        }
    }

    async fn run_pubsub(
        self,
        mut events: broadcast::Receiver<PubsubEvent>,
        shutdown: CancellationToken,
    ) {
        loop {
            let ev = tokio::select! {
                _ = shutdown.cancelled() => return,
                ev = events.recv() => ev,
            };
            match ev {
                Ok(PubsubEvent::Message {
                    topic,
                    data,
                    propagation_source,
                    id,
                }) => {
                    // Not an IPNS topic (part announcements): its own
                    // service judges it.
                    let Some(name) = topic_name(&topic) else {
                        continue;
                    };
                    let verdict = self.on_record(&name, &data);
                    let _ = self
                        .inner
                        .p2p
                        .validate(id, propagation_source, verdict)
                        .await;
                }
                Ok(PubsubEvent::Subscribed { peer, topic }) => {
                    self.on_subscribed(peer, &topic).await
                }
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    tracing::debug!("naming skipped {n} pubsub events");
                }
                Err(broadcast::error::RecvError::Closed) => return,
            }
        }
    }

    fn on_record(&self, name: &Name, data: &[u8]) -> Verdict {
        match Record::verify(name, data) {
            Ok(r) if r.is_expired(SystemTime::now()) => Verdict::Reject,
            Ok(r) => {
                if self.offer(name, &r) {
                    tracing::debug!(%name, seq = r.sequence(), "record received");
                    Verdict::Accept
                } else {
                    Verdict::Ignore
                }
            }
            Err(e) => {
                tracing::debug!(%name, "invalid record on pubsub: {e}");
                Verdict::Reject
            }
        }
    }

    /// A peer joined a topic we hold a record for: send it again, so
    /// subscribers that do not fetch (and are not yet in the mesh) get it.
    async fn on_subscribed(&self, peer: PeerId, topic: &str) {
        let Some(name) = topic_name(topic) else {
            return;
        };
        let record = {
            let mut t = self.table();
            let Some(r) = t.records.get(&name).cloned() else {
                return;
            };
            let now = Instant::now();
            if t.answered
                .get(topic)
                .is_some_and(|at| now.duration_since(*at) < Duration::from_secs(1))
            {
                return;
            }
            if t.answered.len() >= MAX_NAMES {
                t.answered.clear();
            }
            t.answered.insert(topic.to_owned(), now);
            r
        };
        tracing::debug!(%peer, %name, "new subscriber: sending the current record");
        // Give the subscription a moment to reach the mesh.
        let this = self.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(200)).await;
            let _ = this
                .inner
                .p2p
                .publish(&name.pubsub_topic(), record.to_bytes().to_vec())
                .await;
        });
    }

    async fn serve_fetch(self, shutdown: CancellationToken) {
        let mut control = self.inner.p2p.stream_control();
        let mut incoming = match control.accept(FETCH) {
            Ok(i) => i,
            Err(e) => {
                tracing::warn!("cannot serve {FETCH}: {e}");
                return;
            }
        };
        let permits = Arc::new(tokio::sync::Semaphore::new(MAX_FETCH_SERVING));
        loop {
            let next = tokio::select! {
                _ = shutdown.cancelled() => return,
                n = futures::StreamExt::next(&mut incoming) => n,
            };
            let Some((peer, mut stream)) = next else {
                return;
            };
            let Ok(permit) = permits.clone().try_acquire_owned() else {
                tracing::debug!(%peer, "too many fetches; refusing one");
                continue;
            };
            let this = self.clone();
            tokio::spawn(async move {
                let _permit = permit;
                let answer = async {
                    let req = read_message(&mut stream).await?;
                    let key = fetch::decode_request(&req)?;
                    let response = match Name::from_routing_key(&key) {
                        Ok(name) => match this.cached(&name) {
                            Some(r) => fetch::encode_response(fetch::Status::Ok, &r.to_bytes()),
                            None => fetch::encode_response(fetch::Status::NotFound, &[]),
                        },
                        Err(_) => fetch::encode_response(fetch::Status::NotFound, &[]),
                    };
                    write_message(&mut stream, &response).await?;
                    stream.close().await
                };
                if let Err(e) = tokio::time::timeout(FETCH_TIMEOUT, answer)
                    .await
                    .unwrap_or_else(|_| Err(std::io::ErrorKind::TimedOut.into()))
                {
                    tracing::debug!(%peer, "fetch: {e}");
                }
            });
        }
    }

    /// Asks every connected peer for the name's current record.
    async fn fetch_from_peers(self, name: Name) {
        let peers = self.inner.p2p.connected_peers();
        let tasks = peers.into_iter().take(32).map(|peer| {
            let this = self.clone();
            async move {
                match tokio::time::timeout(FETCH_TIMEOUT, this.fetch_one(peer, &name)).await {
                    Ok(Ok(Some(bytes))) => {
                        if this.on_record(&name, &bytes) == Verdict::Reject {
                            tracing::debug!(%peer, %name, "peer answered fetch with an invalid record");
                        }
                    }
                    Ok(Ok(None)) => {}
                    Ok(Err(e)) => tracing::trace!(%peer, "fetch: {e}"),
                    Err(_) => tracing::trace!(%peer, "fetch timed out"),
                }
            }
        });
        futures::future::join_all(tasks).await;
    }

    async fn fetch_one(&self, peer: PeerId, name: &Name) -> std::io::Result<Option<Vec<u8>>> {
        let mut control = self.inner.p2p.stream_control();
        let mut stream = control
            .open_stream(peer, FETCH)
            .await
            .map_err(std::io::Error::other)?;
        write_message(&mut stream, &fetch::encode_request(&name.routing_key())).await?;
        let resp = read_message(&mut stream).await?;
        let (status, data) = fetch::decode_response(&resp)?;
        Ok((status == fetch::Status::Ok).then_some(data))
    }
}

/// The name an IPNS-over-pubsub topic is about.
pub fn topic_name(topic: &str) -> Option<Name> {
    let b64 = topic.strip_prefix("/record/")?;
    let key = data_encoding::BASE64URL_NOPAD.decode(b64.as_bytes()).ok()?;
    Name::from_routing_key(&key).ok()
}

async fn read_message(s: &mut libp2p::Stream) -> std::io::Result<Vec<u8>> {
    let len = unsigned_varint::aio::read_usize(&mut *s)
        .await
        .map_err(|e| -> std::io::Error { e.into() })?;
    if len > MAX_FETCH_MESSAGE {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("fetch message longer than {MAX_FETCH_MESSAGE} bytes"),
        ));
    }
    let mut buf = vec![0; len];
    s.read_exact(&mut buf).await?;
    Ok(buf)
}

async fn write_message(s: &mut libp2p::Stream, msg: &[u8]) -> std::io::Result<()> {
    let mut buf = unsigned_varint::encode::usize_buffer();
    let mut out = unsigned_varint::encode::usize(msg.len(), &mut buf).to_vec();
    out.extend_from_slice(msg);
    s.write_all(&out).await?;
    s.flush().await
}

/// The fetch protocol's two messages (libp2p specs `fetch/README.md`):
/// `FetchRequest { string identifier = 1; }` and `FetchResponse { StatusCode
/// status = 1; bytes data = 2; }`, each sent varint-length-prefixed. The
/// identifier of an IPNS record is its routing key, raw bytes. Coded with
/// quick-protobuf's reader and writer, as Bitswap and IPNS records are.
pub mod fetch {
    use quick_protobuf::{BytesReader, Writer};
    use std::io::{Error, ErrorKind};

    /// A fetch answer's status.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub enum Status {
        /// Here is the value.
        Ok,
        /// No value for that key.
        NotFound,
        /// The peer failed.
        Error,
    }

    // Field numbers of `FetchRequest` and `FetchResponse`.
    const REQUEST_IDENTIFIER: u32 = 1;
    const RESPONSE_STATUS: u32 = 1;
    const RESPONSE_DATA: u32 = 2;

    const VARINT: u32 = 0;
    const LEN: u32 = 2;

    const fn tag(field: u32, wire: u32) -> u32 {
        (field << 3) | wire
    }

    fn bad(what: impl std::fmt::Display) -> Error {
        Error::new(
            ErrorKind::InvalidData,
            format!("malformed fetch message: {what}"),
        )
    }

    /// Encodes a request for `key`.
    pub fn encode_request(key: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(key.len() + 4);
        Writer::new(&mut out)
            .write_with_tag(tag(REQUEST_IDENTIFIER, LEN), |w| w.write_bytes(key))
            .expect("writing to a Vec cannot fail");
        out
    }

    /// The key a request asks for (the first identifier, if repeated).
    pub fn decode_request(b: &[u8]) -> Result<Vec<u8>, Error> {
        let mut r = BytesReader::from_bytes(b);
        let mut key = None;
        while !r.is_eof() {
            let t = r.next_tag(b).map_err(bad)?;
            match (t >> 3, t & 7) {
                (REQUEST_IDENTIFIER, LEN) => {
                    let id = r.read_bytes(b).map_err(bad)?;
                    key.get_or_insert(id);
                }
                (_, VARINT | LEN) => r.read_unknown(b, t).map_err(bad)?,
                _ => return Err(bad("wire type")),
            }
        }
        key.map(<[u8]>::to_vec).ok_or_else(|| bad("no identifier"))
    }

    /// Encodes a response.
    pub fn encode_response(status: Status, data: &[u8]) -> Vec<u8> {
        let code = match status {
            Status::Ok => 0,
            Status::NotFound => 1,
            Status::Error => 2,
        };
        let mut out = Vec::with_capacity(data.len() + 8);
        let mut w = Writer::new(&mut out);
        // Proto3 leaves out default values: OK and empty data.
        if code != 0 {
            w.write_with_tag(tag(RESPONSE_STATUS, VARINT), |w| w.write_enum(code))
                .expect("writing to a Vec cannot fail");
        }
        if !data.is_empty() {
            w.write_with_tag(tag(RESPONSE_DATA, LEN), |w| w.write_bytes(data))
                .expect("writing to a Vec cannot fail");
        }
        out
    }

    /// A response's status and data.
    pub fn decode_response(b: &[u8]) -> Result<(Status, Vec<u8>), Error> {
        let mut r = BytesReader::from_bytes(b);
        let mut status = Status::Ok;
        let mut data: &[u8] = &[];
        while !r.is_eof() {
            let t = r.next_tag(b).map_err(bad)?;
            match (t >> 3, t & 7) {
                (RESPONSE_STATUS, VARINT) => {
                    status = match r.read_varint64(b).map_err(bad)? {
                        0 => Status::Ok,
                        1 => Status::NotFound,
                        _ => Status::Error,
                    }
                }
                (RESPONSE_DATA, LEN) => data = r.read_bytes(b).map_err(bad)?,
                (_, VARINT | LEN) => r.read_unknown(b, t).map_err(bad)?,
                _ => return Err(bad("wire type")),
            }
        }
        Ok((status, data.to_vec()))
    }

    #[cfg(test)]
    mod tests {
        use super::*;
        use proptest::prelude::*;

        #[test]
        fn known_bytes() {
            assert_eq!(encode_request(b"/ipns/x"), b"\x0a\x07/ipns/x");
            assert_eq!(encode_response(Status::Ok, b"rec"), b"\x12\x03rec");
            assert_eq!(encode_response(Status::NotFound, b""), b"\x08\x01");
        }

        proptest! {
            #[test]
            fn round_trip(key in proptest::collection::vec(any::<u8>(), 0..300),
                          data in proptest::collection::vec(any::<u8>(), 0..3000)) {
                prop_assert_eq!(decode_request(&encode_request(&key)).unwrap(), key);
                let (s, d) = decode_response(&encode_response(Status::Ok, &data)).unwrap();
                prop_assert_eq!(s, Status::Ok);
                prop_assert_eq!(d, data);
            }

            #[test]
            fn never_panics(b in proptest::collection::vec(any::<u8>(), 0..64)) {
                let _ = decode_request(&b);
                let _ = decode_response(&b);
            }
        }
    }
}
