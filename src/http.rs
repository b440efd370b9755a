//! The HTTP gateway: `router(state) -> Router` and the server around it.
//!
//! Flow of a request: [`serve`] accepts a connection (at most
//! `max_connections` at once; when all are taken, the one that has waited
//! longest with no request in flight is closed for the newcomer, and when
//! every one is busy, more wait in the listen backlog; beyond
//! `max_connections_per_address` from one address it is closed at once)
//! and hands it to hyper, which closes it when a request head takes longer
//! than `header_timeout` (slowloris) and when a response makes no progress
//! for `write_timeout` (a client that stopped reading, see `conn.rs`); the
//! layers added in [`router`] trace it, refuse it with 503 when
//! `max_concurrent_requests` are already in flight, and answer 408 when no
//! response is ready within `request_timeout`; the gateway routes
//! (`gateway.rs`) resolve `/ipfs/{cid}/{path}` with the UnixFS exporter and
//! stream file bytes, raw blocks or CARs, reading blocks only through
//! [`AppState::read`], which fetches blocks the store lacks from peers
//! (504 when that takes longer than `fetch_timeout`); the web UI (`ui.rs`:
//! stream list, player, embedded assets) is served from the binary.
//! Streamed bodies read ahead of their clients from one budget
//! (`body_buffer`), so stalled readers cannot hold more memory than it.

mod api;
mod conn;
pub mod dashboard;
mod error;
pub(crate) mod gateway;
mod html;
mod ipns;
mod live;
pub mod metrics;
mod sniff;
mod ui;
pub mod viewers;

pub use error::GatewayError;

use crate::admission::{Admitted, Eviction, Refusal, Refusals, Slots, Source, Ticket};
use crate::config::HttpConfig;
use crate::store::fetch::{FetchError, Fetcher};
use crate::store::{BlockRead, StoreError};
use axum::body::Body;
use axum::extract::{Request, State};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::Router;
use bytes::Bytes;
use cid::Cid;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::{Notify, Semaphore};
use tokio_util::sync::CancellationToken;
use tower_http::trace::TraceLayer;
use tracing::Instrument;

/// What every handler shares. Cheap to clone.
///
/// Handlers read blocks only through [`AppState::read`], which also fetches
/// the blocks the store lacks when a [`Fetcher`] is set.
#[derive(Clone)]
pub struct AppState {
    store: Arc<dyn BlockRead>,
    fetcher: Option<Arc<dyn Fetcher>>,
    bitswap: Option<crate::p2p::bitswap::Bitswap>,
    config: HttpConfig,
    /// Bytes of body read-ahead, in KiB permits, over all responses.
    body_budget: Arc<Semaphore>,
    streams: Option<crate::hls::streams::Streams>,
    p2p: Option<crate::p2p::P2p>,
    naming: Option<crate::p2p::naming::Naming>,
    mesh: Option<crate::mesh::Mesh>,
    metrics: Option<metrics::Metrics>,
    dashboard: Option<dashboard::Dashboard>,
    /// Bytes written to HTTP connections, counted once by `conn::Conn`
    /// (the metrics' `http_sent_bytes` when they are on).
    http_sent: prometheus_client::metrics::counter::Counter,
    /// Files of raw leaves served lately (closed LL-HLS segments), which
    /// the hot path answers like one-block segments.
    flat_files: Arc<gateway::FlatFiles>,
}

/// Blocks one [`AppState::read`] may fetch before it gives up and answers
/// with what it has (the request timeout bounds it too).
const MAX_FETCHES_PER_READ: usize = 10_000;

/// The store as read closures see it: notes the blocks that were asked for
/// and missing, so they can be fetched before the closure runs again.
struct Recording {
    store: Arc<dyn BlockRead>,
    missing: std::sync::Mutex<Vec<Cid>>,
}

impl Recording {
    /// Missing blocks noted per run at most.
    const MAX_MISSING: usize = 64;

    fn note(&self, cid: &Cid) {
        if cid.hash().code() == crate::store::IDENTITY {
            return;
        }
        let mut m = self.missing.lock().unwrap_or_else(|e| e.into_inner());
        if m.len() < Self::MAX_MISSING && !m.contains(cid) {
            m.push(*cid);
        }
    }

    fn missing(self) -> Vec<Cid> {
        self.missing.into_inner().unwrap_or_else(|e| e.into_inner())
    }
}

impl BlockRead for Recording {
    fn get(&self, cid: &Cid) -> Result<Option<Bytes>, StoreError> {
        let r = self.store.get(cid)?;
        if r.is_none() {
            self.note(cid);
        }
        Ok(r)
    }
    fn has(&self, cid: &Cid) -> Result<bool, StoreError> {
        let r = self.store.has(cid)?;
        if !r {
            self.note(cid);
        }
        Ok(r)
    }
    fn size(&self, cid: &Cid) -> Result<Option<u64>, StoreError> {
        let r = self.store.size(cid)?;
        if r.is_none() {
            self.note(cid);
        }
        Ok(r)
    }
    fn get_for_send(&self, cid: &Cid) -> Result<Option<Bytes>, StoreError> {
        let r = self.store.get_for_send(cid)?;
        if r.is_none() {
            self.note(cid);
        }
        Ok(r)
    }
}

impl AppState {
    /// State serving the blocks of `store` with the limits of `config`.
    pub fn new(store: Arc<dyn BlockRead>, config: HttpConfig) -> Self {
        Self {
            store,
            fetcher: None,
            bitswap: None,
            body_budget: Arc::new(Semaphore::new(
                (config.body_buffer / 1024)
                    .clamp(2 * gateway::CHUNK_MAX as usize, Semaphore::MAX_PERMITS),
            )),
            config,
            streams: None,
            p2p: None,
            naming: None,
            mesh: None,
            metrics: None,
            dashboard: None,
            flat_files: Arc::default(),
            http_sent: Default::default(),
        }
    }

    /// Serves the dashboard, its events and viewer reports.
    pub fn with_dashboard(mut self, dashboard: dashboard::Dashboard) -> Self {
        self.dashboard = Some(dashboard);
        self
    }

    /// Bytes written to HTTP connections so far (heads and bodies, the
    /// sendfile path included).
    pub fn http_bytes_sent(&self) -> u64 {
        self.http_sent.get()
    }

    /// Counts requests and bytes served in `metrics`, and serves
    /// `GET /metrics`.
    pub fn with_metrics(mut self, metrics: metrics::Metrics) -> Self {
        self.http_sent = metrics.sent.clone();
        self.metrics = Some(metrics);
        self
    }

    /// Fetches blocks the store lacks with `fetcher` (waiting at most
    /// `fetch_timeout` for each).
    pub fn with_fetcher(mut self, fetcher: Arc<dyn Fetcher>) -> Self {
        self.fetcher = Some(fetcher);
        self
    }

    /// Fetches blocks the store lacks with Bitswap, and reports its
    /// counters at `/api/v1/bitswap`.
    pub fn with_bitswap(mut self, bitswap: crate::p2p::bitswap::Bitswap) -> Self {
        self.fetcher = Some(Arc::new(bitswap.clone()));
        self.bitswap = Some(bitswap);
        self
    }

    /// Bitswap, when the node runs it.
    pub fn bitswap(&self) -> Option<&crate::p2p::bitswap::Bitswap> {
        self.bitswap.as_ref()
    }

    /// The same state without fetching: only what the store holds (for
    /// `Cache-Control: only-if-cached`).
    pub fn local_only(&self) -> Self {
        Self {
            fetcher: None,
            ..self.clone()
        }
    }

    /// Serves the playlists and list of `streams` too.
    pub fn with_streams(mut self, streams: crate::hls::streams::Streams) -> Self {
        self.streams = Some(streams);
        self
    }

    /// Adds the libp2p node (for the node API and fetching from peers).
    pub fn with_p2p(mut self, p2p: crate::p2p::P2p) -> Self {
        self.p2p = Some(p2p);
        self
    }

    /// Adds naming (for `/ipns` and delegated routing).
    pub fn with_naming(mut self, naming: crate::p2p::naming::Naming) -> Self {
        self.naming = Some(naming);
        self
    }

    /// Adds the mesh link telemetry (for `/api/v1/mesh`).
    pub fn with_mesh(mut self, mesh: crate::mesh::Mesh) -> Self {
        self.mesh = Some(mesh);
        self
    }

    /// The mesh link telemetry, if the node runs it.
    pub fn mesh(&self) -> Option<&crate::mesh::Mesh> {
        self.mesh.as_ref()
    }

    /// Naming, if the libp2p node runs.
    pub fn naming(&self) -> Option<&crate::p2p::naming::Naming> {
        self.naming.as_ref()
    }

    /// The libp2p node, if it runs.
    pub fn p2p(&self) -> Option<&crate::p2p::P2p> {
        self.p2p.as_ref()
    }

    /// The node's streams, if it runs any.
    pub fn streams(&self) -> Option<&crate::hls::streams::Streams> {
        self.streams.as_ref()
    }

    /// The HTTP configuration.
    pub fn config(&self) -> &HttpConfig {
        &self.config
    }

    /// Runs blocking exporter code against the store on the blocking pool.
    /// When it found blocks missing and a fetcher is set, they are fetched
    /// and `f` runs again, until nothing is missing (or a fetch fails:
    /// 504 on timeout).
    pub async fn read<T, F>(&self, f: F) -> Result<T, GatewayError>
    where
        T: Send + 'static,
        F: Fn(&dyn BlockRead) -> T + Send + Sync + 'static,
    {
        let f = Arc::new(f);
        let mut fetched = 0;
        loop {
            let store = Recording {
                store: self.store.clone(),
                missing: Default::default(),
            };
            let run = f.clone();
            let (out, missing) = tokio::task::spawn_blocking(move || {
                let out = run(&store);
                (out, store.missing())
            })
            .await
            .map_err(|e| GatewayError::internal("block read task", e))?;
            if missing.is_empty() || self.fetcher.is_none() || fetched >= MAX_FETCHES_PER_READ {
                return Ok(out);
            }
            fetched += missing.len();
            futures::future::try_join_all(missing.into_iter().map(|cid| self.fetch(cid))).await?;
        }
    }

    /// Runs blocking code once, without fetching (for stepping a body
    /// producer, which fetches with [`AppState::fetch`] itself).
    pub(crate) async fn read_once<T: Send + 'static>(
        &self,
        f: impl FnOnce(&dyn BlockRead) -> T + Send + 'static,
    ) -> Result<T, GatewayError> {
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || f(&*store))
            .await
            .map_err(|e| GatewayError::internal("block read task", e))
    }

    /// A block's bytes for sending, when the store has them at hand (a
    /// recently sent mapping): no I/O, so no trip to the blocking pool.
    pub fn at_hand(&self, cid: &Cid) -> Option<Bytes> {
        self.store.mapped_files()?.recent(cid.hash())
    }

    /// A block's bytes for sending as a body ([`BlockRead::get_for_send`]:
    /// sent from its file when mapped), at hand or read (and fetched when
    /// missing, as [`AppState::read`] does).
    pub async fn block_for_send(&self, cid: Cid) -> Result<Bytes, GatewayError> {
        if let Some(data) = self.at_hand(&cid) {
            return Ok(data);
        }
        self.read(move |s| s.get_for_send(&cid))
            .await?
            .map_err(|e| GatewayError::internal("block store", e))?
            .ok_or(GatewayError::BlockNotFound { cid })
    }

    /// Whether missing blocks are fetched.
    pub fn fetches(&self) -> bool {
        self.fetcher.is_some()
    }

    /// Fetches one missing block into the store.
    pub async fn fetch(&self, cid: Cid) -> Result<(), GatewayError> {
        let Some(fetcher) = &self.fetcher else {
            return Err(GatewayError::BlockNotFound { cid });
        };
        match fetcher.fetch(cid, self.config.fetch_timeout).await {
            Ok(()) => Ok(()),
            Err(e @ FetchError::Timeout { .. }) => Err(GatewayError::FetchTimeout(e)),
            Err(FetchError::Busy(reason)) => {
                tracing::warn!(%reason, "fetching refused");
                Err(GatewayError::Overloaded)
            }
            Err(e @ FetchError::Failed { .. }) => Err(GatewayError::FetchFailed(e)),
        }
    }

    /// Whether a block is held locally, without fetching it from anywhere
    /// (for `Cache-Control: only-if-cached`).
    pub async fn has_local(&self, cid: Cid) -> Result<bool, GatewayError> {
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || store.has(&cid))
            .await
            .map_err(|e| GatewayError::internal("block read task", e))?
            .map_err(|e| GatewayError::internal("block store", e))
    }
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// The whole HTTP surface with its limits, timeout and tracing layers.
pub fn router(state: AppState) -> Router {
    let limits = Limits {
        permits: Arc::new(Semaphore::new(state.config.max_concurrent_requests.max(1))),
        timeout: state.config.request_timeout,
    };
    let metrics = state.metrics.clone();
    let mut routes = Router::new()
        .merge(ui::routes())
        .merge(gateway::routes())
        .merge(live::routes())
        .merge(api::routes())
        .merge(ipns::routes())
        .merge(dashboard::routes());
    if metrics.is_some() {
        routes = routes.route("/metrics", axum::routing::get(metrics::metrics));
    }
    let app = routes
        .fallback(|| async { GatewayError::NoRoute })
        .with_state(state)
        // Layers run outside-in: trace everything, then refuse or time out.
        // Requests are counted in `Front`, outside them all (so 503 and 408
        // are counted too, and the hot path alike).
        .layer(middleware::from_fn_with_state(limits, limit));
    app.layer(TraceLayer::new_for_http().on_failure(log_failure))
}

/// Logs a failed request. Only a 500 (this node failed) and a body that
/// broke off are errors; the other 5xx answers say that peers did not send
/// a block in time (504) or sent none usable (502), or that the node is busy
/// or has no p2p node (503): the client is told why, and a node that has
/// no peer with some block is working as it should.
fn log_failure(
    class: tower_http::classify::ServerErrorsFailureClass,
    latency: Duration,
    _span: &tracing::Span,
) {
    use tower_http::classify::ServerErrorsFailureClass as Class;
    let latency_ms = latency.as_millis();
    match class {
        Class::StatusCode(status) if status != axum::http::StatusCode::INTERNAL_SERVER_ERROR => {
            tracing::debug!(%status, latency_ms, "request answered with an error status")
        }
        Class::StatusCode(status) => tracing::error!(%status, latency_ms, "request failed"),
        Class::Error(error) => tracing::error!(%error, latency_ms, "response failed"),
    }
}

/// Request limits shared by every request of one router.
#[derive(Clone)]
struct Limits {
    permits: Arc<Semaphore>,
    timeout: Duration,
}

/// Refuses requests beyond the concurrency limit with 503 and answers 408
/// when the response is not ready in time. A request counts against the
/// limit until its body is sent, since streaming a large file is work too;
/// the timeout covers only the wait for the response head, so large
/// downloads are not cut off.
async fn limit(State(limits): State<Limits>, req: Request, next: Next) -> Response {
    let Ok(permit) = limits.permits.clone().try_acquire_owned() else {
        return GatewayError::Overloaded.into_response();
    };
    match tokio::time::timeout(limits.timeout, next.run(req)).await {
        Ok(resp) => resp.map(|body| {
            Body::new(Holding {
                body,
                _guard: permit,
            })
        }),
        Err(_) => GatewayError::Timeout.into_response(),
    }
}

/// A response body that holds `G` (a concurrency permit, a connection's
/// [`Busy`] guard) until it is dropped: sent, or given up.
struct Holding<G> {
    body: Body,
    _guard: G,
}

impl<G: Send + Unpin + 'static> http_body::Body for Holding<G> {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

/// One connection's slot in [`serve`]'s [`Slots`]: busy while a request
/// is in flight, waiting (the first to be evicted for a newcomer when all
/// slots are taken) otherwise.
#[derive(Clone)]
struct Slot {
    slots: Arc<std::sync::Mutex<Slots<CancellationToken>>>,
    ticket: Ticket,
    /// Told when a slot may have become free or evictable.
    room: Arc<Notify>,
}

impl Slot {
    fn slots(&self) -> std::sync::MutexGuard<'_, Slots<CancellationToken>> {
        self.slots.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A request head arrived: busy until the returned guard (held by the
    /// response body) is dropped.
    fn busy(&self) -> Busy {
        self.slots().progressed(self.ticket);
        Busy(self.clone())
    }
}

/// Held by a response body: its connection is busy until it is dropped
/// (sent, or given up), then waits for its next request.
struct Busy(Slot);

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.slots().waiting(self.0.ticket);
        self.0.room.notify_one();
    }
}

pin_project_lite::pin_project! {
    /// A response on its way: counts it by route class and status when its
    /// head is ready, and hands the connection's [`Busy`] guard to its body.
    struct Served<F> {
        #[pin]
        inner: F,
        route: Option<(Arc<metrics::Metrics>, metrics::RouteClass)>,
        busy: Option<Busy>,
    }
}

impl<F> Future for Served<F>
where
    F: Future<Output = Result<Response, std::convert::Infallible>>,
{
    type Output = Result<Response, std::convert::Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let Ok(resp) = std::task::ready!(this.inner.poll(cx));
        if let Some((m, route)) = this.route.take() {
            m.request(route, resp.status());
        }
        let resp = match this.busy.take() {
            Some(busy) => resp.map(|body| Body::new(Holding { body, _guard: busy })),
            None => resp,
        };
        Poll::Ready(Ok(resp))
    }
}

/// What hyper calls for each request: the gateway's hot path
/// ([`gateway::hot_block`]), else the router; counts every request (the
/// router's 503 and 408 too) and marks its connection busy.
#[derive(Clone)]
struct Front {
    state: AppState,
    app: TowerToHyperService<Router>,
    peer: std::net::SocketAddr,
    slot: Option<Slot>,
    /// The state's metrics, one reference to clone per request.
    metrics: Option<Arc<metrics::Metrics>>,
}

type RouterFuture = <TowerToHyperService<Router> as hyper::service::Service<
    hyper::Request<hyper::body::Incoming>,
>>::Future;

impl hyper::service::Service<hyper::Request<hyper::body::Incoming>> for Front {
    type Response = Response;
    type Error = std::convert::Infallible;
    type Future = Served<
        futures::future::Either<std::future::Ready<Result<Response, Self::Error>>, RouterFuture>,
    >;

    fn call(&self, mut req: hyper::Request<hyper::body::Incoming>) -> Self::Future {
        let busy = self.slot.as_ref().map(Slot::busy);
        let route = self
            .metrics
            .as_ref()
            .map(|m| (m.clone(), metrics::RouteClass::of(req.uri().path())));
        req.extensions_mut()
            .insert(dashboard::ClientAddr(self.peer));
        let inner = match gateway::hot_block(&self.state, &req) {
            Some(resp) => futures::future::Either::Left(std::future::ready(Ok(resp))),
            None => futures::future::Either::Right(self.app.call(req)),
        };
        Served { inner, route, busy }
    }
}

/// Why [`serve`] closed a connection at once, or closed a waiting one.
const REFUSAL_REASONS: &[&str] = &[
    "over max_connections_per_address",
    "waiting connections evicted for newcomers",
];
const REFUSED_PER_ADDRESS: usize = 0;
const REFUSED_EVICTED: usize = 1;

/// Serves [`router`] on `listener` until `shutdown` completes, then stops
/// accepting, lets in-flight requests finish (for at most `request_timeout`)
/// and returns.
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let header_timeout = state.config.header_timeout;
    let write_timeout = state.config.write_timeout;
    let grace = state.config.request_timeout;
    let mapped = state.store.mapped_files().cloned();
    let sendfile = state.metrics.as_ref().map(|m| m.sendfile.clone());
    let request_metrics = state.metrics.clone().map(Arc::new);
    let max = state.config.max_connections.max(1);
    // Every connection counts against its address's share; when all slots
    // are taken, a newcomer evicts the one waiting longest without a
    // request in flight (slowloris, idle keep-alives), see `Slots`.
    let slots = Arc::new(std::sync::Mutex::new(Slots::<CancellationToken>::new(
        max,
        state.config.max_connections_per_address,
        Eviction::Waiting,
    )));
    let room = Arc::new(Notify::new());
    // Bounds the tasks: an evicted connection's lives on for the moment it
    // takes to see its token.
    let tasks = Arc::new(Semaphore::new(max.saturating_mul(2)));
    let refusals = Refusals::new("HTTP connections", REFUSAL_REASONS, Duration::from_secs(10));
    let app = router(state.clone());
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);
    tracing::info!(addr = ?listener.local_addr()?, "HTTP gateway listening");
    'accept: loop {
        let task = tokio::select! {
            p = tasks.clone().acquire_owned() => p.expect("the semaphore is never closed"),
            () = &mut shutdown => break,
        };
        // Accept only when a newcomer would get a slot, so connections
        // beyond the limit, while every one is busy, wait in the kernel's
        // backlog instead of in our memory.
        loop {
            let notified = room.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let has_room = slots
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .has_room(std::time::Instant::now());
            if has_room {
                break;
            }
            tokio::select! {
                () = notified => {}
                () = &mut shutdown => break 'accept,
            }
        }
        let (stream, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(conn) => conn,
                Err(e) => {
                    // Out of file descriptors and the like: back off rather
                    // than spin; the listener itself stays usable.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let cancel = CancellationToken::new();
        let ticket = loop {
            let notified = room.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let now = std::time::Instant::now();
            let admitted = slots.lock().unwrap_or_else(|e| e.into_inner()).admit(
                Source::of(peer.ip()),
                cancel.clone(),
                now,
            );
            match admitted {
                Ok(Admitted { ticket, evicted }) => {
                    if let Some(evicted) = evicted {
                        evicted.cancel();
                        refusals.note(REFUSED_EVICTED, now);
                    }
                    break ticket;
                }
                // Closed at once: the client learns at once, and its slot
                // goes back to others.
                Err(Refusal::PerSource) => {
                    refusals.note(REFUSED_PER_ADDRESS, now);
                    continue 'accept;
                }
                // The one that was waiting got a request since the check
                // above: this one waits for the next slot, as it would
                // have in the backlog (the only one held so).
                Err(Refusal::Full) => tokio::select! {
                    () = notified => {}
                    () = &mut shutdown => break 'accept,
                },
            }
        };
        let slot = Slot {
            slots: slots.clone(),
            ticket,
            room: room.clone(),
        };
        // The header timeout also runs while a kept-alive connection waits
        // for its next request, so idle clients give their slot back.
        // Vectored writes hand each body's `Bytes` to the stream as it is,
        // which is what lets `Conn` send mapped blocks from their files.
        let conn = hyper::server::conn::http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(header_timeout)
            .writev(true)
            .serve_connection(
                TokioIo::new(conn::Conn::new(
                    stream,
                    mapped.clone(),
                    state.http_sent.clone(),
                    sendfile.clone(),
                    write_timeout,
                )),
                Front {
                    state: state.clone(),
                    app: TowerToHyperService::new(app.clone()),
                    peer,
                    slot: Some(slot.clone()),
                    metrics: request_metrics.clone(),
                },
            );
        let conn = graceful.watch(conn);
        tokio::spawn(
            async move {
                tokio::select! {
                    r = conn => if let Err(e) = r {
                        tracing::debug!(error = %e, "connection ended with an error");
                    },
                    // Evicted: it had no request in flight, so dropping it
                    // only closes the socket.
                    () = cancel.cancelled() => tracing::debug!("evicted for a newcomer"),
                }
                slot.slots().closed(slot.ticket);
                slot.room.notify_one();
                drop(task);
            }
            .instrument(tracing::debug_span!("http", %peer)),
        );
    }
    drop(listener);
    if tokio::time::timeout(grace, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("closing HTTP connections still busy after the shutdown grace period");
    }
    Ok(())
}

#[cfg(test)]
mod tests;
