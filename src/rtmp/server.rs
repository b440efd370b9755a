//! The RTMP ingest server: the I/O around [`Session`], one task per
//! publisher connection.
//!
//! Flow:
//!
//! ```text
//! serve: accept -> allowlist (rtmp.allow)
//!        -> connection slot (crate::admission): at most
//!           max_connections_per_address unpublished ones per address; when
//!           all max_connections are taken the oldest connection still in
//!           the handshake is closed for the newcomer (else the oldest
//!           unpublished one past a grace), so connections that never
//!           finish the handshake cannot lock a publisher out
//!        -> spawn a connection task; on shutdown stop accepting, cancel the
//!           tasks and wait (bounded) for them to send their End
//!        refusals, evictions and connections that close before publishing
//!        are counted and logged once per interval, not once each
//! connection task:
//!   socket bytes -> Session -> events
//!     PublishRequest(key) -> StreamKeys: key -> public name (unknown: BadName)
//!                         -> Publishers::begin(name) (refused: BadName/Denied)
//!                         -> accept_publish; from here on the task owns a
//!                            PublishHandle: a bounded Sender<IngestEvent> and
//!                            a watch of the stream's storage
//!     storage starts failing / works again (the watch) -> onStatus warning
//!                            NetStream.Publish.StorageFailing naming the
//!                            error / status NetStream.Publish.StorageResumed
//!     Metadata, Media     -> Demux (media::flv) -> Tracks, Frame -> Sender
//!                            (new Tracks: Publishers::check_tracks)
//!       codec we cannot carry -> fail_publish: onStatus(error, NetStream.Failed,
//!                                what to publish instead) -> End(Refused) -> close
//!     Unpublish / EOF / idle_timeout / error  -> End(reason) -> close
//!       (a session error writes what the session answered first, e.g. the
//!        `_error` of a connect whose app name is too long, then lingers)
//!     the manager closes the channel (a new publisher took over) -> close
//! ```
//!
//! Handshake, `connect` and `publish` must complete within
//! `handshake_timeout`, and until a publish is accepted a connection may
//! send only small messages (`max_message_size_before_publish`); after
//! that, a publisher that sends no media for
//! `idle_timeout` is dropped. A connection publishes once: after the
//! publisher unpublishes it is closed, which is what OBS and ffmpeg do
//! anyway. Every accepted publish gets exactly one [`IngestEvent::End`],
//! unless the stream manager dropped its receiver first.
//!
//! Stream keys are secrets: no log line carries one (nor the `tcUrl`, which
//! some encoders put a key into). Log lines name the public stream name.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use ipnet::IpNet;
use thiserror::Error;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch, Semaphore};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::amf::Amf0Value;
use super::chunk::ChunkLimits;
use super::session::{Event, MediaKind, Session, SessionConfig};
use crate::admission::{Eviction, Refusal, Refusals, Slots, Source, Ticket};
use crate::config::{RtmpConfig, StreamConfig};
use crate::media::flv::{
    self, AudioPacket, AudioSpecificConfig, FlvError, FrameType, VideoConfig, VideoPacket, VideoTag,
};
use crate::media::{Frame, TrackKind, Tracks};

/// How long shutdown waits for connection tasks to hand in their End.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// How long a refused publisher gets to read our `onStatus`, and a finished
/// one to send its last commands, before we close.
const REJECT_LINGER: Duration = Duration::from_secs(1);
/// Bytes read from a socket at once; the session expects sane-sized reads.
const READ_SIZE: usize = 64 * 1024;
/// How long a new connection keeps its slot before a newer one may evict
/// it (when all are taken and it has not published yet): encoders publish
/// within a few round trips.
const EVICT_AFTER: Duration = Duration::from_secs(1);
/// How often refusals are summed up in one WARN line.
const REFUSAL_LOG_INTERVAL: Duration = Duration::from_secs(10);
/// Why connections were turned away or closed early, as [`Refusals`]
/// counts them (indices below).
const REFUSAL_REASONS: &[&str] = &[
    "not in rtmp.allow",
    "over max_connections_per_address",
    "max_connections reached by publishers",
    "evicted before publishing for a newer connection",
    "closed before publishing (handshake, timeout, bad input)",
    "unknown stream key",
];
const NOT_ALLOWED: usize = 0;
const PER_ADDRESS: usize = 1;
const FULL: usize = 2;
const EVICTED: usize = 3;
const FAILED_EARLY: usize = 4;
const UNKNOWN_KEY: usize = 5;

/// What a publisher's connection sends to the stream manager, in order:
/// [`IngestEvent::Tracks`] before the first frame and whenever the codec
/// configuration changes, frames, and exactly one [`IngestEvent::End`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IngestEvent {
    /// The decoder configuration of the tracks that follow.
    Tracks(Tracks),
    /// One coded frame.
    Frame(Frame),
    /// The publish is over; nothing follows.
    End(EndReason),
}

/// Why a publish ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EndReason {
    /// The publisher stopped publishing (`FCUnpublish`, `deleteStream`).
    Unpublished,
    /// The connection closed or was reset without an unpublish.
    Disconnected,
    /// No media arrived for `idle_timeout`.
    IdleTimeout,
    /// Another publisher with the stream's key took over from this one,
    /// which had gone silent.
    Replaced,
    /// A protocol error or the server shutting down.
    Error(String),
    /// The publisher's media was refused (a codec the stream cannot carry,
    /// or media that does not parse) and the publisher was told why with an
    /// error status. What this publish sent that is not in a finished
    /// segment yet is not to be kept.
    Refused(String),
}

/// Why the manager refused a publish (e.g. the stream already has a
/// publisher).
#[derive(Debug, Error)]
pub enum PublishRefused {
    /// The stream already has a publisher.
    #[error("stream {0} already has a publisher")]
    Busy(String),
    /// Any other reason, shown to the publisher.
    #[error("{0}")]
    Other(String),
}

/// What the stream manager hands the connection of an accepted publish.
#[derive(Debug)]
pub struct PublishHandle {
    /// Where the publish's events go (bounded; the server awaits `send`,
    /// which slows a publisher the manager cannot keep up with).
    pub events: mpsc::Sender<IngestEvent>,
    /// How storing the stream's media goes: the error while it fails,
    /// `None` while it works. The publisher is told when it starts failing
    /// (also when it already fails as the publish starts) and when it
    /// works again.
    pub storage: watch::Receiver<Option<String>>,
}

/// Implemented by the stream manager.
pub trait Publishers: Send + Sync + 'static {
    /// A publisher with a valid key wants to publish `stream` (its public
    /// name). Ok: the publish's events go to the returned handle.
    fn begin(&self, stream: &str, peer: SocketAddr) -> Result<PublishHandle, PublishRefused>;

    /// Whether `stream` can carry `tracks`: the codecs we parse are not all
    /// carried by every segment format. Asked before each
    /// [`IngestEvent::Tracks`] of a publish; Err is said to the publisher
    /// (and logged), so it names the codec and what to publish instead.
    fn check_tracks(&self, stream: &str, tracks: &Tracks) -> Result<(), String> {
        let _ = (stream, tracks);
        Ok(())
    }

    /// The publisher of `stream` described its stream (`onMetaData`); only
    /// informational (the dashboard shows the resolution it announces).
    fn metadata(&self, stream: &str, metadata: &Amf0Value) {
        let _ = (stream, metadata);
    }
}

/// Stream keys and the public names they publish to.
pub struct StreamKeys {
    by_key: HashMap<String, String>,
}

impl StreamKeys {
    /// The keys of `streams`. Should two streams share a key (config
    /// validation's job to prevent), the first wins.
    pub fn new(streams: &[StreamConfig]) -> Self {
        let mut by_key = HashMap::with_capacity(streams.len());
        for s in streams {
            by_key
                .entry(s.key.clone())
                .or_insert_with(|| s.name.to_string());
        }
        Self { by_key }
    }

    /// The public name `key` publishes to, if it is a known key.
    pub fn name_for(&self, key: &str) -> Option<&str> {
        self.by_key.get(key).map(String::as_str)
    }
}

impl fmt::Debug for StreamKeys {
    // Keys are secrets: show only the names.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut names: Vec<&str> = self.by_key.values().map(String::as_str).collect();
        names.sort_unstable();
        f.debug_struct("StreamKeys")
            .field("streams", &names)
            .finish()
    }
}

/// A `rtmp.allow` entry that is not a CIDR network.
#[derive(Debug, Error, PartialEq, Eq)]
#[error(
    "invalid network {value:?} in rtmp.allow: {why}; write it like \"10.0.0.0/8\" or \"200::/7\""
)]
pub struct CidrError {
    /// The entry as written.
    pub value: String,
    /// What was wrong.
    pub why: &'static str,
}

/// Parses `addr/prefix`; a bare address is a single host.
fn parse_net(value: &str) -> Result<IpNet, CidrError> {
    let err = |why| CidrError {
        value: value.to_owned(),
        why,
    };
    let (addr, prefix) = match value.trim().split_once('/') {
        Some((a, p)) => (a, Some(p)),
        None => (value.trim(), None),
    };
    let addr: IpAddr = addr.parse().map_err(|_| err("not an IP address"))?;
    let Some(prefix) = prefix else {
        return Ok(IpNet::from(addr));
    };
    prefix
        .parse::<u8>()
        .ok()
        .and_then(|p| IpNet::new(addr, p).ok())
        .ok_or_else(|| err("prefix length out of range"))
}

/// The networks publishers may connect from (`rtmp.allow`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Allowlist {
    nets: Vec<IpNet>,
}

impl Allowlist {
    /// Parses CIDR entries like `10.0.0.0/8` or `200::/7`; an empty list
    /// allows every address.
    pub fn parse(entries: &[String]) -> Result<Self, CidrError> {
        let nets = entries
            .iter()
            .map(|e| parse_net(e))
            .collect::<Result<_, _>>()?;
        Ok(Self { nets })
    }

    /// Whether `ip` may connect. IPv4-mapped IPv6 addresses (a dual-stack
    /// listener's view of IPv4 peers) match IPv4 networks.
    pub fn allows(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.nets.is_empty() || self.nets.iter().any(|n| n.contains(&ip))
    }
}

/// What every connection task needs.
struct Shared {
    config: RtmpConfig,
    session: SessionConfig,
    keys: Arc<StreamKeys>,
    publishers: Arc<dyn Publishers>,
    /// Who holds a connection slot; an unpublished connection's token
    /// closes it when a newcomer evicts it.
    slots: std::sync::Mutex<Slots<CancellationToken>>,
    refusals: Refusals,
}

impl Shared {
    fn slots(&self) -> std::sync::MutexGuard<'_, Slots<CancellationToken>> {
        self.slots.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn session_config(config: &RtmpConfig) -> SessionConfig {
    let defaults = SessionConfig::default();
    let chunk_defaults = ChunkLimits::default();
    SessionConfig {
        // We may not send bigger chunks than we accept.
        chunk_size: defaults.chunk_size.min(config.max_chunk_size.max(1)),
        chunk_limits: ChunkLimits {
            max_chunk_size: config.max_chunk_size,
            max_message_size: config.max_message_size,
            // Room for one message of the largest size in flight.
            max_pending_bytes: chunk_defaults
                .max_pending_bytes
                .max(config.max_message_size as usize),
            ..chunk_defaults
        },
        chunk_limits_before_publish: ChunkLimits {
            max_chunk_size: config.max_chunk_size,
            ..chunk_defaults
        }
        .before_publish(config.max_message_size_before_publish),
        ..defaults
    }
}

/// Serves RTMP publishers on `listener` until `shutdown` completes, then
/// stops accepting, ends every publish with `End(Error("server shutting
/// down"))` and returns once the connection tasks are done (or after a
/// grace period).
///
/// Fails at once if `config.allow` holds an entry that is not a network.
pub async fn serve(
    listener: TcpListener,
    config: RtmpConfig,
    keys: Arc<StreamKeys>,
    publishers: Arc<dyn Publishers>,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let allow = Allowlist::parse(&config.allow)
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    // Semaphore permits are counted in u32 when taken back all at once.
    let slots = config.max_connections.clamp(1, u32::MAX as usize / 2);
    // Slots decides who is served; this bounds the tasks, which an evicted
    // connection keeps for the moment it takes to see its token.
    let tasks = slots * 2;
    let connections = Arc::new(Semaphore::new(tasks));
    let cancel = CancellationToken::new();
    let shared = Arc::new(Shared {
        session: session_config(&config),
        slots: std::sync::Mutex::new(Slots::new(
            slots,
            config.max_connections_per_address,
            Eviction::WaitingThenUnprovenAfter(EVICT_AFTER),
        )),
        refusals: Refusals::new("RTMP connections", REFUSAL_REASONS, REFUSAL_LOG_INTERVAL),
        config,
        keys,
        publishers,
    });
    tokio::pin!(shutdown);
    tracing::info!(addr = ?listener.local_addr()?, "RTMP ingest listening");
    loop {
        let (stream, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(conn) => conn,
                Err(e) => {
                    // Out of file descriptors and the like: back off rather
                    // than spin; the listener itself stays usable.
                    tracing::warn!(error = %e, "RTMP accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let now = std::time::Instant::now();
        if !allow.allows(peer.ip()) {
            tracing::debug!(%peer, "refusing RTMP connection: address not in rtmp.allow");
            // The summary names the latest address refused, so that an
            // operator sees whom the allowlist keeps out.
            let from = format!("from {peer}");
            shared.refusals.note_why(NOT_ALLOWED, Some(&from), now);
            continue;
        }
        // Unlike HTTP, a publisher waiting in the backlog would only time
        // out in its encoder: refuse at once so it can report why.
        let Ok(permit) = connections.clone().try_acquire_owned() else {
            shared.refusals.note(FULL, now);
            continue;
        };
        // Not a child of `cancel`: at shutdown a publish ends as shutting
        // down, not as evicted.
        let evict = CancellationToken::new();
        let admitted = shared
            .slots()
            .admit(Source::of(peer.ip()), evict.clone(), now);
        let ticket = match admitted {
            Ok(admitted) => {
                if let Some(evicted) = admitted.evicted {
                    evicted.cancel();
                    shared.refusals.note(EVICTED, now);
                }
                admitted.ticket
            }
            Err(refusal) => {
                tracing::debug!(%peer, ?refusal, "refusing RTMP connection");
                let reason = match refusal {
                    Refusal::PerSource => PER_ADDRESS,
                    Refusal::Full => FULL,
                };
                shared.refusals.note(reason, now);
                continue;
            }
        };
        let shared = shared.clone();
        let cancel = cancel.clone();
        tokio::spawn(
            async move {
                connection(stream, peer, &shared, ticket, &evict, &cancel).await;
                shared.slots().closed(ticket);
                drop(permit);
            }
            .instrument(tracing::info_span!("rtmp", %peer, stream = tracing::field::Empty)),
        );
    }
    drop(listener);
    cancel.cancel();
    // Every task holds a permit until it is done, so getting all of them
    // back means every publish has had its End sent.
    let all = u32::try_from(tasks).unwrap_or(u32::MAX);
    if tokio::time::timeout(SHUTDOWN_GRACE, connections.acquire_many(all))
        .await
        .is_err()
    {
        tracing::warn!("RTMP connections still busy after the shutdown grace period");
    }
    Ok(())
}

/// The publish a connection is feeding.
struct Live {
    /// The stream's public name.
    name: String,
    tx: mpsc::Sender<IngestEvent>,
    demux: Demux,
    /// The stream's storage, and whether the publisher was last told that
    /// it fails.
    storage: watch::Receiver<Option<String>>,
    told_failing: bool,
}

/// What the stream manager did to a live publish.
enum ManagerSignal {
    /// It stopped taking the publish's events (another publisher took
    /// over).
    Done,
    /// Storing the stream's media started failing or works again.
    Storage,
}

/// Whether the event loop goes on.
enum Flow {
    Continue,
    /// Close the connection; for a live publish, send `End(reason)`.
    Close(EndReason),
    /// A publish or its media was refused: let the client read our
    /// answer, then close with `reason`.
    Refused(EndReason),
}

/// One publisher connection, from accept to close.
struct Connection<'a> {
    socket: TcpStream,
    peer: SocketAddr,
    shared: &'a Shared,
    session: Session,
    live: Option<Live>,
    /// Handshake deadline until the publish is accepted, then the idle
    /// deadline.
    deadline: Instant,
    ticket: Ticket,
}

async fn connection(
    socket: TcpStream,
    peer: SocketAddr,
    shared: &Shared,
    ticket: Ticket,
    evict: &CancellationToken,
    cancel: &CancellationToken,
) {
    // Nagle would hold back our small control answers behind delayed ACKs.
    let _ = socket.set_nodelay(true);
    let mut conn = Connection {
        socket,
        peer,
        shared,
        session: Session::new(shared.session.clone(), rand::random()),
        live: None,
        deadline: Instant::now() + shared.config.handshake_timeout,
        ticket,
    };
    let reason = tokio::select! {
        reason = conn.run(cancel) => reason,
        // Only an unpublished connection is ever evicted.
        () = evict.cancelled() => {
            EndReason::Error("evicted for a newer connection".into())
        }
    };
    match &reason {
        // Anyone can make these, as often as they like: counted and
        // summed up, not logged one by one.
        _ if conn.session.published_key().is_none() && conn.live.is_none() => {
            tracing::debug!(?reason, "RTMP connection closed before publishing");
            if !evict.is_cancelled() {
                let why = match &reason {
                    EndReason::Error(e) | EndReason::Refused(e) => Some(e.as_str()),
                    _ => None,
                };
                shared
                    .refusals
                    .note_why(FAILED_EARLY, why, std::time::Instant::now());
            }
        }
        EndReason::Error(e) | EndReason::Refused(e) => {
            tracing::warn!(error = %e, "RTMP connection closed")
        }
        reason => tracing::info!(?reason, "RTMP connection closed"),
    }
    if let Some(live) = conn.live.take() {
        // Bounded even at shutdown: a manager that stopped reading must
        // not keep this task (and its connection slot) alive.
        let send = live.tx.send(IngestEvent::End(reason));
        if tokio::time::timeout(SHUTDOWN_GRACE, send).await.is_err() {
            tracing::warn!("stream manager did not take the end of the publish");
        }
    }
}

/// Resolves when the stream manager stops taking this publish's events
/// (another publisher took over) or the stream's storage changes between
/// failing and working; never without a publish.
async fn manager_signal(live: &mut Option<Live>) -> ManagerSignal {
    let Some(live) = live else {
        return std::future::pending().await;
    };
    loop {
        tokio::select! {
            () = live.tx.closed() => return ManagerSignal::Done,
            changed = live.storage.changed() => {
                if changed.is_err() {
                    // The manager dropped the watch: nothing more to tell.
                    live.tx.closed().await;
                    return ManagerSignal::Done;
                }
                let failing = live.storage.borrow_and_update().is_some();
                if failing != live.told_failing {
                    return ManagerSignal::Storage;
                }
            }
        }
    }
}

impl Connection<'_> {
    /// Runs the connection until it should close, and says why.
    async fn run(&mut self, cancel: &CancellationToken) -> EndReason {
        let mut buf = vec![0u8; READ_SIZE];
        loop {
            let read = tokio::select! {
                () = cancel.cancelled() => return shutting_down(),
                () = tokio::time::sleep_until(self.deadline) => return self.timed_out(),
                signal = manager_signal(&mut self.live) => match signal {
                    ManagerSignal::Done => return EndReason::Replaced,
                    ManagerSignal::Storage => {
                        if let Err(reason) = self.tell_storage(cancel).await {
                            return reason;
                        }
                        continue;
                    }
                },
                r = self.socket.read(&mut buf) => r,
            };
            let n = match read {
                Ok(0) => return EndReason::Disconnected,
                Ok(n) => n,
                Err(e) if is_disconnect(&e) => return EndReason::Disconnected,
                Err(e) => return EndReason::Error(format!("reading from the publisher: {e}")),
            };
            let handshaking = !self.session.handshake_done();
            let handled = self.session.handle_input(&buf[..n]);
            if handshaking && self.session.handshake_done() {
                // No longer a mere slot holder: evicted last, see Slots.
                self.shared.slots().progressed(self.ticket);
            }
            if let Err(e) = handled {
                // A session that failed may have said why first (a refused
                // connect does): let the client read it, briefly.
                let answered = tokio::time::timeout(REJECT_LINGER, self.flush()).await;
                if matches!(answered, Ok(Ok(true))) {
                    self.linger().await;
                }
                return EndReason::Error(e.to_string());
            }
            let mut flow = Flow::Continue;
            while let Some(event) = self.session.poll_event() {
                flow = self.on_event(event, cancel).await;
                if !matches!(flow, Flow::Continue) {
                    break;
                }
            }
            let flushed = tokio::select! {
                () = cancel.cancelled() => return shutting_down(),
                () = tokio::time::sleep_until(self.deadline) => return self.timed_out(),
                r = self.flush() => r,
            };
            match (flow, flushed) {
                (Flow::Close(EndReason::Unpublished), Ok(_)) => {
                    self.close_after_unpublish().await;
                    return EndReason::Unpublished;
                }
                (Flow::Close(reason), _) => return reason,
                (Flow::Refused(reason), flushed) => {
                    if flushed.is_ok() {
                        self.linger().await;
                    }
                    return reason;
                }
                (_, Err(e)) if is_disconnect(&e) => return EndReason::Disconnected,
                (_, Err(e)) => return EndReason::Error(format!("writing to the publisher: {e}")),
                (Flow::Continue, Ok(_)) => {}
            }
        }
    }

    /// Tells the publisher that storing its stream fails, or works again,
    /// as the manager's watch says now.
    async fn tell_storage(&mut self, cancel: &CancellationToken) -> Result<(), EndReason> {
        let Some(live) = &mut self.live else {
            return Ok(());
        };
        let error = live.storage.borrow().clone();
        live.told_failing = error.is_some();
        match &error {
            Some(e) => tracing::debug!(error = %e, "telling the publisher that storing fails"),
            None => tracing::debug!("telling the publisher that storing works again"),
        }
        if let Err(e) = self.session.storage_status(error.as_deref()) {
            return Err(EndReason::Error(e.to_string()));
        }
        let flushed = tokio::select! {
            () = cancel.cancelled() => return Err(shutting_down()),
            () = tokio::time::sleep_until(self.deadline) => return Err(self.timed_out()),
            r = self.flush() => r,
        };
        match flushed {
            Ok(_) => Ok(()),
            Err(e) if is_disconnect(&e) => Err(EndReason::Disconnected),
            Err(e) => Err(EndReason::Error(format!("writing to the publisher: {e}"))),
        }
    }

    fn timed_out(&self) -> EndReason {
        if self.live.is_some() {
            EndReason::IdleTimeout
        } else {
            EndReason::Error(format!(
                "handshake, connect and publish took longer than {:?}",
                self.shared.config.handshake_timeout
            ))
        }
    }

    /// Writes what the session has to send; says whether there was any.
    async fn flush(&mut self) -> std::io::Result<bool> {
        let mut wrote = false;
        while let Some(out) = self.session.poll_transmit() {
            self.socket.write_all(&out).await?;
            wrote = true;
        }
        Ok(wrote)
    }

    /// Half-closes and waits a moment for the client to close, so that it
    /// reads our refusal instead of a reset (closing with unread input
    /// makes the kernel send RST, which may discard what we wrote).
    async fn linger(&mut self) {
        if self.socket.shutdown().await.is_err() {
            return;
        }
        let mut sink = [0u8; 4096];
        let drain = async { while matches!(self.socket.read(&mut sink).await, Ok(n) if n > 0) {} };
        let _ = tokio::time::timeout(REJECT_LINGER, drain).await;
    }

    /// After an unpublish, keeps answering until the publisher hangs up
    /// (briefly): encoders send `FCUnpublish`, then `deleteStream`, then
    /// close, and one whose last commands hit a closed socket reports a
    /// broken pipe to its user although the stream ended normally.
    async fn close_after_unpublish(&mut self) {
        let mut buf = vec![0u8; 4096];
        let polite = async {
            loop {
                match self.socket.read(&mut buf).await {
                    Ok(n) if n > 0 => {
                        if self.session.handle_input(&buf[..n]).is_err() {
                            return;
                        }
                        // Media after the unpublish has nowhere to go.
                        while self.session.poll_event().is_some() {}
                        if self.flush().await.is_err() {
                            return;
                        }
                    }
                    _ => return,
                }
            }
        };
        let _ = tokio::time::timeout(REJECT_LINGER, polite).await;
    }

    async fn on_event(&mut self, event: Event, cancel: &CancellationToken) -> Flow {
        match event {
            Event::Connect { app, flash_ver, .. } => {
                tracing::debug!(app, flash_ver, "RTMP connect");
                Flow::Continue
            }
            Event::PublishRequest { app, key, .. } => self.on_publish(&app, &key),
            Event::Metadata { metadata } => {
                if let Some(live) = &mut self.live {
                    live.demux.metadata(&metadata);
                    self.shared.publishers.metadata(&live.name, &metadata);
                }
                Flow::Continue
            }
            Event::Media {
                kind,
                timestamp,
                payload,
            } => {
                self.deadline = Instant::now() + self.shared.config.idle_timeout;
                let Some(live) = &mut self.live else {
                    return Flow::Continue;
                };
                let out = match live.demux.media(kind, timestamp, payload) {
                    Ok(out) => out,
                    Err(e) => return self.refuse_media(e.to_string()),
                };
                if let Some(tracks) = &out.tracks {
                    if let Err(why) = self.shared.publishers.check_tracks(&live.name, tracks) {
                        return self.refuse_media(why);
                    }
                }
                let Some(live) = &mut self.live else {
                    return Flow::Continue;
                };
                let events = out.tracks.map(IngestEvent::Tracks).into_iter();
                for event in events.chain(out.frame.map(IngestEvent::Frame)) {
                    // Not under the idle deadline: waiting on a slow
                    // manager is not the publisher's silence.
                    let sent = tokio::select! {
                        () = cancel.cancelled() => return Flow::Close(shutting_down()),
                        r = live.tx.send(event) => r,
                    };
                    if sent.is_err() {
                        break;
                    }
                }
                if live.tx.is_closed() {
                    // Nobody to send an End to any more.
                    tracing::info!("stream manager ended the publish; closing");
                    self.live = None;
                    return Flow::Close(EndReason::Error("stream manager gone".into()));
                }
                Flow::Continue
            }
            Event::Unpublish { .. } => Flow::Close(EndReason::Unpublished),
        }
    }

    /// Answers a publish request. `key` is never logged.
    fn on_publish(&mut self, app: &str, key: &str) -> Flow {
        // Some encoders append `?query` parameters to the stream name.
        let bare = key.split_once('?').map_or(key, |(k, _)| k);
        let Some(name) = self.shared.keys.name_for(bare) else {
            tracing::debug!(app, "refusing publish: unknown stream key");
            self.shared
                .refusals
                .note(UNKNOWN_KEY, std::time::Instant::now());
            return self.reject("NetStream.Publish.BadName", "unknown stream key");
        };
        tracing::Span::current().record("stream", name);
        let handle = match self.shared.publishers.begin(name, self.peer) {
            Ok(handle) => handle,
            Err(e) => {
                tracing::warn!(error = %e, "refusing publish");
                let code = match e {
                    PublishRefused::Busy(_) => "NetStream.Publish.BadName",
                    PublishRefused::Other(_) => "NetStream.Publish.Denied",
                };
                return self.reject(code, &e.to_string());
            }
        };
        // From here the manager expects an End, which `connection` sends
        // whatever happens next.
        let mut storage = handle.storage;
        if storage.borrow().is_some() {
            // Already failing: the publisher hears of it right away.
            storage.mark_changed();
        }
        self.live = Some(Live {
            name: name.to_owned(),
            tx: handle.events,
            demux: Demux::default(),
            storage,
            told_failing: false,
        });
        if let Err(e) = self.session.accept_publish() {
            return Flow::Close(EndReason::Error(e.to_string()));
        }
        self.shared.slots().proven(self.ticket);
        self.deadline = Instant::now() + self.shared.config.idle_timeout;
        tracing::info!(app, "publish started");
        Flow::Continue
    }

    fn reject(&mut self, code: &str, description: &str) -> Flow {
        match self.session.reject_publish(code, description) {
            Ok(()) => Flow::Refused(EndReason::Error("publish refused".into())),
            Err(e) => Flow::Close(EndReason::Error(e.to_string())),
        }
    }

    /// Ends an accepted publish whose media we cannot use, telling the
    /// publisher `why` (which names the codec and what to publish instead)
    /// with `NetStream.Failed`: ffmpeg prints the description, and
    /// librtmp-based encoders close on that code.
    fn refuse_media(&mut self, why: String) -> Flow {
        tracing::warn!(reason = %why, "refusing the publish: media this stream cannot carry");
        match self.session.fail_publish("NetStream.Failed", &why) {
            Ok(()) => Flow::Refused(EndReason::Refused(why)),
            Err(e) => Flow::Close(EndReason::Error(e.to_string())),
        }
    }
}

fn shutting_down() -> EndReason {
    EndReason::Error("server shutting down".into())
}

/// Whether an I/O error just means the peer went away. ffmpeg, for one,
/// closes right after `deleteStream` without reading our answers, so its
/// kernel may reset the connection instead of closing it.
fn is_disconnect(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(
        e.kind(),
        ConnectionReset | ConnectionAborted | BrokenPipe | UnexpectedEof
    )
}

/// What one media message turned into.
#[derive(Debug, Default, PartialEq, Eq)]
struct Demuxed {
    /// New track configuration, to send before `frame`.
    tracks: Option<Tracks>,
    frame: Option<Frame>,
}

/// Turns FLV tag bodies into [`Tracks`] and [`Frame`]s.
///
/// Tracks are announced at the first coded frame of a configured track,
/// with every configuration known by then, and again whenever a sequence
/// header changes one. Should the metadata announce video, frames are
/// dropped until the video configuration arrives, so the stream does not
/// start as audio-only only because audio's header came first. Frames of a
/// track without a configuration cannot be decoded and are dropped.
#[derive(Debug, Default)]
struct Demux {
    video: Option<VideoConfig>,
    audio: Option<AudioSpecificConfig>,
    expect_video: bool,
    announced: Option<Tracks>,
}

impl Demux {
    fn metadata(&mut self, metadata: &Amf0Value) {
        self.expect_video = match metadata.get("videocodecid") {
            Some(Amf0Value::Number(n)) => *n != 0.0,
            Some(Amf0Value::String(s)) => !s.is_empty(),
            Some(_) => true,
            None => metadata.get("width").is_some(),
        };
    }

    fn current(&self) -> Tracks {
        Tracks {
            video: self.video.clone(),
            audio: self.audio.clone(),
        }
    }

    /// Announces the configuration again if it changed after the start.
    fn refresh(&mut self) -> Option<Tracks> {
        let current = self.current();
        let announced = self.announced.as_mut()?;
        (*announced != current).then(|| {
            *announced = current.clone();
            current
        })
    }

    fn frame(&mut self, frame: Frame) -> Demuxed {
        let configured = match frame.track {
            TrackKind::Video => self.video.is_some(),
            TrackKind::Audio => self.audio.is_some(),
        };
        if !configured {
            tracing::debug!(track = ?frame.track, "dropping a frame before its sequence header");
            return Demuxed::default();
        }
        let mut tracks = None;
        if self.announced.is_none() {
            if self.expect_video && self.video.is_none() {
                return Demuxed::default();
            }
            let current = self.current();
            self.announced = Some(current.clone());
            tracks = Some(current);
        }
        Demuxed {
            tracks,
            frame: Some(frame),
        }
    }

    fn media(
        &mut self,
        kind: MediaKind,
        timestamp: u64,
        payload: Bytes,
    ) -> Result<Demuxed, FlvError> {
        match kind {
            MediaKind::Video => match flv::parse_video(&payload)? {
                VideoTag::Command => Ok(Demuxed::default()),
                VideoTag::Frame {
                    frame_type, packet, ..
                } => match packet {
                    VideoPacket::SequenceStart(config) => {
                        self.video = Some(config);
                        Ok(Demuxed {
                            tracks: self.refresh(),
                            frame: None,
                        })
                    }
                    VideoPacket::CodedFrames {
                        composition_time,
                        data,
                    } => Ok(self.frame(Frame {
                        track: TrackKind::Video,
                        dts_ms: timestamp,
                        composition_ms: composition_time,
                        keyframe: frame_type == FrameType::Key,
                        data,
                    })),
                    VideoPacket::SequenceEnd | VideoPacket::Metadata(_) => Ok(Demuxed::default()),
                },
            },
            MediaKind::Audio => match flv::parse_audio(&payload)?.packet {
                AudioPacket::SequenceStart(config) => {
                    self.audio = Some(config);
                    Ok(Demuxed {
                        tracks: self.refresh(),
                        frame: None,
                    })
                }
                AudioPacket::Raw(data) => Ok(self.frame(Frame {
                    track: TrackKind::Audio,
                    dts_ms: timestamp,
                    composition_ms: 0,
                    keyframe: true,
                    data,
                })),
                AudioPacket::SequenceEnd => Ok(Demuxed::default()),
            },
        }
    }
}

#[cfg(test)]
mod tests;
