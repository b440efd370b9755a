//! The live dashboard: one page (`GET /dashboard`) that draws the data flow
//! as it happens, fed by Server-Sent Events (`GET /api/v1/events`), and the
//! players' reports (`POST /api/v1/viewers`, see [`super::viewers`]).
//!
//! ```text
//! [sampler task] every 2 s: streams (ingest, segmenter), store (every 10 s,
//!   on the blocking pool), naming (IPNS), p2p node (peers), Bitswap (per-peer
//!   traffic), HTTP bytes out, viewer reports, mesh links
//!     -> one JSON snapshot, serialized once --watch--> each event stream
//! ```
//!
//! The snapshot goes out through a `watch` channel: each client holds only
//! the latest, so a slow client skips snapshots instead of queueing them,
//! and the JSON is built once per tick whatever the number of clients
//! (at most `max_clients`; more get 503). The sampler keeps the last five
//! minutes of a few series for the charts, so a page opened late draws them
//! at once. Every number comes from the stages' own cheap counters; what no
//! stage knows is `null`, which the page shows as "—".

use super::viewers::{Report, Viewers, MAX_REPORT_BYTES};
use super::{AppState, GatewayError};
use crate::assets::{DASHBOARD_CSS, DASHBOARD_HTML, DASHBOARD_JS};
use crate::config::DashboardConfig;
use crate::store::Repo;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use serde::Serialize;
use serde_json::{json, Value};
use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::{watch, Semaphore};
use tokio_util::sync::CancellationToken;

/// What the mesh links are, as JSON (`{"links": [...], "self": ...}`, the
/// shape of `GET /api/v1/mesh`); handed in by `node.rs`.
pub type MeshSource = Arc<dyn Fn() -> Value + Send + Sync>;

/// How often a snapshot is taken.
const TICK: Duration = Duration::from_secs(2);
/// The store is walked every this many ticks (it stats every block).
const STORE_EVERY: u32 = 5;
/// Points kept per chart series: five minutes of ticks.
const HISTORY: usize = 150;
/// Media CIDs remembered with their stream and file name after they left
/// the live window, so a peer's fetches still read as segments.
const LABELS: usize = 512;

/// The dashboard's shared state. Cheap to clone.
#[derive(Clone)]
pub struct Dashboard {
    inner: Arc<Inner>,
}

struct Inner {
    clients: Arc<Semaphore>,
    snapshot: watch::Sender<Arc<str>>,
    viewers: Arc<Viewers>,
    repo: Option<Repo>,
    mesh: MeshSource,
    /// Cancelled when the node shuts down: event streams end, so the
    /// server's graceful shutdown need not wait for them.
    closing: CancellationToken,
}

impl std::fmt::Debug for Dashboard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dashboard").finish_non_exhaustive()
    }
}

fn empty_mesh() -> Value {
    json!({ "links": [], "self": null })
}

impl Dashboard {
    /// A dashboard for the node's `repo` (its blocks, pins and disk), with
    /// mesh links from `mesh` (none when absent); event streams end when
    /// `closing` is cancelled.
    pub fn new(
        config: &DashboardConfig,
        repo: Option<Repo>,
        mesh: Option<MeshSource>,
        closing: CancellationToken,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                clients: Arc::new(Semaphore::new(config.max_clients.max(1))),
                snapshot: watch::channel(Arc::from("{}")).0,
                viewers: Arc::new(Viewers::new(config.max_viewers)),
                repo,
                mesh: mesh.unwrap_or_else(|| Arc::new(empty_mesh)),
                closing,
            }),
        }
    }

    /// Starts the sampler for `state` (which should hold this dashboard),
    /// until `cancel`.
    pub fn spawn(&self, state: AppState, cancel: CancellationToken) {
        let this = self.clone();
        tokio::spawn(async move {
            let mut sampler = Sampler::default();
            let mut tick = tokio::time::interval(TICK);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            loop {
                tokio::select! {
                    () = cancel.cancelled() => return,
                    _ = tick.tick() => {}
                }
                let snap = sampler.sample(&this, &state).await;
                match serde_json::to_string(&snap) {
                    Ok(text) => {
                        this.inner.snapshot.send_replace(Arc::from(text));
                    }
                    Err(e) => tracing::warn!(error = %e, "dashboard snapshot"),
                }
            }
        });
    }

    /// Adds the viewer metrics (see [`super::viewers::Metrics`]) to
    /// `registry`.
    pub fn register(&self, registry: &mut prometheus_client::registry::Registry) {
        super::viewers::Metrics(self.inner.viewers.clone()).register(registry);
    }

    /// The latest snapshot, as sent to event streams.
    pub fn latest(&self) -> Arc<str> {
        self.inner.snapshot.borrow().clone()
    }
}

/// The store's figures, sampled every [`STORE_EVERY`] ticks. Directory
/// listings and one statvfs only: no block is opened or stat'ed, so a
/// large store costs a listing, not a syscall per block.
#[derive(Debug, Clone, Default, Serialize)]
struct StoreStats {
    blocks: usize,
    pins: usize,
    disk_free: Option<u64>,
    disk_total: Option<u64>,
}

impl StoreStats {
    fn read(repo: &Repo) -> Self {
        use crate::store::Blockstore;
        let fs = rustix::fs::statvfs(repo.dir()).ok();
        Self {
            blocks: repo.blocks.keys().map_or(0, |k| k.len()),
            pins: repo.pins.list().map_or(0, |l| l.len()),
            disk_free: fs.as_ref().map(|s| s.f_bavail * s.f_frsize),
            disk_total: fs.as_ref().map(|s| s.f_blocks * s.f_frsize),
        }
    }
}

/// The chart series, oldest first.
#[derive(Debug, Default, Serialize)]
struct History {
    t: VecDeque<u64>,
    ingest_bps: VecDeque<f64>,
    viewers: VecDeque<usize>,
    http_bps: VecDeque<f64>,
    bitswap_bps: VecDeque<f64>,
}

impl History {
    fn push(&mut self, t: u64, ingest: f64, viewers: usize, http: f64, bitswap: f64) {
        if self.t.len() >= HISTORY {
            self.t.pop_front();
            self.ingest_bps.pop_front();
            self.viewers.pop_front();
            self.http_bps.pop_front();
            self.bitswap_bps.pop_front();
        }
        self.t.push_back(t);
        self.ingest_bps.push_back(ingest);
        self.viewers.push_back(viewers);
        self.http_bps.push_back(http);
        self.bitswap_bps.push_back(bitswap);
    }
}

/// What the sampler carries from tick to tick.
#[derive(Default)]
struct Sampler {
    ticks: u32,
    store: Option<StoreStats>,
    /// Counters at the last tick: ingest, HTTP out, Bitswap out (bytes).
    last: Option<(Instant, u64, u64, u64)>,
    /// Per own stream: the IPNS sequence last seen and when it was first
    /// seen (so the "last publish" time is ours to within a tick).
    ipns: HashMap<String, (u64, u64)>,
    history: History,
    /// `(cid, "stream file")` of media seen in live playlists, oldest
    /// first, at most [`LABELS`].
    labels: VecDeque<(String, String)>,
    labelled: HashMap<String, String>,
}

impl Sampler {
    fn label(&mut self, cid: &str, label: String) {
        if self.labelled.contains_key(cid) {
            return;
        }
        if self.labels.len() >= LABELS {
            if let Some((old, _)) = self.labels.pop_front() {
                self.labelled.remove(&old);
            }
        }
        self.labels.push_back((cid.to_owned(), label.clone()));
        self.labelled.insert(cid.to_owned(), label);
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// How a connection's multiaddr travels: the mesh a 200::/7 (Yggdrasil) or
/// fc00::/8 (cjdns) address belongs to, else the transport.
pub fn transport_of(addr: &str) -> &'static str {
    let mut parts = addr.split('/').skip(1);
    let (proto, host) = (parts.next(), parts.next());
    if proto == Some("ip6") {
        if let Some(ip) = host.and_then(|h| h.parse::<std::net::Ipv6Addr>().ok()) {
            match ip.octets()[0] {
                0x02 | 0x03 => return "yggdrasil",
                0xfc => return "cjdns",
                _ => {}
            }
        }
    }
    if addr.contains("/p2p-circuit") {
        "relay"
    } else if addr.contains("/quic") {
        "quic"
    } else if addr.contains("/webrtc") {
        "webrtc"
    } else if addr.contains("/ws") {
        "websocket"
    } else if addr.contains("/tcp/") {
        "tcp"
    } else {
        "other"
    }
}

/// The media a live playlist names, by CID: `(cid, filename)`.
fn playlist_media(text: &str) -> impl Iterator<Item = (&str, &str)> {
    text.split(['\n', '"'])
        .filter_map(|l| l.trim().strip_prefix("/ipfs/"))
        .filter_map(|rest| rest.split_once("?filename="))
}

impl Sampler {
    async fn sample(&mut self, d: &Dashboard, state: &AppState) -> Value {
        let now = Instant::now();
        let t = now_ms();
        if self.ticks % STORE_EVERY == 0 {
            if let Some(repo) = d.inner.repo.clone() {
                self.store = tokio::task::spawn_blocking(move || StoreStats::read(&repo))
                    .await
                    .ok();
            }
        }
        self.ticks = self.ticks.wrapping_add(1);

        // Streams: ingest and segmenter, IPNS, and which CIDs are whose.
        let mut streams = Vec::new();
        let mut ingest_total = 0;
        if let Some(s) = state.streams() {
            let ingest: HashMap<String, crate::hls::streams::IngestStats> =
                s.ingest_stats().into_iter().collect();
            for info in s.list() {
                if let Some(text) = s.live_playlist(&info.name) {
                    for (cid, file) in playlist_media(&text) {
                        self.label(cid, format!("{} {file}", info.name));
                    }
                }
                // A low-latency segment's blocks are its parts: peers fetch
                // those, listed in the LL-HLS playlist.
                if let Some(view) = s.ll_view(&info.name) {
                    let text = view.borrow().text.clone();
                    for (cid, file) in playlist_media(&text) {
                        self.label(cid, format!("{} {file}", info.name));
                    }
                }
                if let Some(site) = &info.site_cid {
                    self.label(site, format!("{} site", info.name));
                }
                let stats = ingest.get(&info.name).cloned().unwrap_or_default();
                ingest_total += stats.ingest_bytes;
                let ipns = state.naming().and_then(|n| {
                    let name = n.own_name(&info.name)?;
                    let seq = n.cached(&name).map(|r| r.sequence());
                    let published = seq.map(|seq| {
                        let e = self.ipns.entry(info.name.clone()).or_insert((seq, t));
                        if e.0 != seq {
                            *e = (seq, t);
                        }
                        e.1
                    });
                    Some(json!({
                        "name": name.to_string(),
                        "sequence": seq,
                        "published_ms": published,
                    }))
                });
                let session = info.sessions.last();
                streams.push(json!({
                    "name": info.name,
                    "live": info.live,
                    "format": info.format,
                    "mirror_of": info.mirror_of,
                    "site_cid": info.site_cid,
                    "warnings": info.warnings,
                    "session": session.map(|s| json!({"id": s.id, "duration_s": s.duration_s})),
                    "ingest": stats,
                    "ipns": ipns,
                }));
            }
        }

        // Peers and what Bitswap exchanged with each.
        let info = match state.p2p() {
            Some(p) => p.info().await.ok(),
            None => None,
        };
        let traffic: HashMap<String, crate::p2p::bitswap::PeerTraffic> = state
            .bitswap()
            .map(|b| {
                b.peer_traffic()
                    .into_iter()
                    .map(|(p, t)| (p.to_string(), t))
                    .collect()
            })
            .unwrap_or_default();
        let peers: Vec<Value> = info
            .as_ref()
            .map(|i| i.peers.as_slice())
            .unwrap_or_default()
            .iter()
            .map(|p| {
                let t = traffic.get(&p.peer_id).cloned().unwrap_or_default();
                let transports: Vec<&str> = {
                    let mut v: Vec<&str> = p.addrs.iter().map(|a| transport_of(a)).collect();
                    v.sort_unstable();
                    v.dedup();
                    v
                };
                let fetched: Vec<Value> = t
                    .recent_sent
                    .iter()
                    .map(|c| json!({"cid": c, "label": self.labelled.get(c)}))
                    .collect();
                json!({
                    "peer_id": p.peer_id,
                    "agent": p.agent,
                    "addrs": p.addrs,
                    "transport": transports,
                    "rtt_ms": p.rtt_ms,
                    "configured": p.configured,
                    "bytes_sent": t.bytes_sent,
                    "bytes_received": t.bytes_received,
                    "blocks_sent": t.blocks_sent,
                    "blocks_received": t.blocks_received,
                    "fetched": fetched,
                })
            })
            .collect();

        let bitswap = state.bitswap().map(|b| b.stats());
        let http_sent = state.http_sent.get();
        let bitswap_sent = bitswap.map_or(0, |b| b.bytes_sent);
        let viewers = d.inner.viewers.summary(now);
        let rate = |now_v: u64, then_v: u64, secs: f64| {
            if secs > 0.0 {
                now_v.saturating_sub(then_v) as f64 / secs
            } else {
                0.0
            }
        };
        let (ingest_bps, http_bps, bitswap_bps) = match self.last {
            Some((at, i, h, b)) => {
                let secs = now.duration_since(at).as_secs_f64();
                (
                    rate(ingest_total, i, secs) * 8.0,
                    rate(http_sent, h, secs) * 8.0,
                    rate(bitswap_sent, b, secs) * 8.0,
                )
            }
            None => (0.0, 0.0, 0.0),
        };
        self.last = Some((now, ingest_total, http_sent, bitswap_sent));
        self.history
            .push(t, ingest_bps, viewers.count, http_bps, bitswap_bps);

        json!({
            "t": t,
            "version": env!("CARGO_PKG_VERSION"),
            "node": info.as_ref().map(|i| json!({"peer_id": i.peer_id, "addrs": i.addrs})),
            "streams": streams,
            "store": self.store,
            "peers": peers,
            "bitswap": bitswap,
            "http": {"bytes_sent": http_sent, "bps": http_bps},
            "rates": {"ingest_bps": ingest_bps, "bitswap_bps": bitswap_bps},
            "viewers": viewers,
            "mesh": (d.inner.mesh)(),
            "history": self.history,
        })
    }
}

/// The dashboard's routes (404 when it is off).
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/dashboard", get(page))
        .route("/assets/dashboard.js", get(script))
        .route("/assets/dashboard.css", get(style))
        .route("/api/v1/events", get(events))
        .route("/api/v1/viewers", post(report))
}

fn dashboard(state: &AppState) -> Result<&Dashboard, GatewayError> {
    state.dashboard.as_ref().ok_or(GatewayError::NoRoute)
}

async fn page(State(state): State<AppState>) -> Result<Response, GatewayError> {
    dashboard(&state)?;
    Ok(super::ui::page(
        DASHBOARD_HTML.replace("{{version}}", env!("CARGO_PKG_VERSION")),
    ))
}

async fn script(State(state): State<AppState>) -> Result<Response, GatewayError> {
    dashboard(&state)?;
    Ok(super::ui::asset(
        super::ui::JS,
        super::ui::REVALIDATE,
        DASHBOARD_JS,
    ))
}

async fn style(State(state): State<AppState>) -> Result<Response, GatewayError> {
    dashboard(&state)?;
    Ok(super::ui::asset(
        "text/css; charset=utf-8",
        super::ui::REVALIDATE,
        DASHBOARD_CSS,
    ))
}

/// `GET /api/v1/events`: a `snapshot` event now and after every tick.
async fn events(State(state): State<AppState>) -> Result<Response, GatewayError> {
    let d = dashboard(&state)?;
    let permit = d
        .inner
        .clients
        .clone()
        .try_acquire_owned()
        .map_err(|_| GatewayError::Overloaded)?;
    let rx = d.inner.snapshot.subscribe();
    let closing = d.inner.closing.clone();
    let stream = futures::stream::unfold(
        (rx, permit, closing, true),
        |(mut rx, permit, closing, first)| async move {
            if !first {
                tokio::select! {
                    () = closing.cancelled() => return None,
                    r = rx.changed() => r.ok()?,
                }
            }
            let data = rx.borrow_and_update().clone();
            let event = Event::default().event("snapshot").data(&*data);
            Some((
                Ok::<_, std::convert::Infallible>(event),
                (rx, permit, closing, false),
            ))
        },
    );
    let mut resp = Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response();
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, "no-store".parse().expect("a header"));
    Ok(resp)
}

/// The client's address, which `serve` puts in every request's extensions.
#[derive(Debug, Clone, Copy)]
pub(super) struct ClientAddr(pub(super) SocketAddr);

/// `POST /api/v1/viewers`: a player's report (JSON, at most 1 KiB).
async fn report(
    State(state): State<AppState>,
    addr: Option<axum::Extension<ClientAddr>>,
    body: Bytes,
) -> Result<Response, GatewayError> {
    let d = dashboard(&state)?;
    if body.len() > MAX_REPORT_BYTES {
        return Ok((
            StatusCode::PAYLOAD_TOO_LARGE,
            "a viewer report is at most 1 KiB",
        )
            .into_response());
    }
    let Ok(report) = serde_json::from_slice::<Report>(&body) else {
        return Err(GatewayError::BadRequest(
            "a viewer report is a JSON object with an id".into(),
        ));
    };
    let from = addr.map_or(IpAddr::from([0, 0, 0, 0]), |a| a.0 .0.ip());
    match d.inner.viewers.report(from, report, Instant::now()) {
        Ok(()) => Ok(StatusCode::NO_CONTENT.into_response()),
        Err(e @ super::viewers::Refused::Invalid) => Err(GatewayError::BadRequest(e.to_string())),
        Err(e @ super::viewers::Refused::TooMany) => Ok((
            StatusCode::TOO_MANY_REQUESTS,
            [(header::RETRY_AFTER, "10")],
            e.to_string(),
        )
            .into_response()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::HttpConfig;
    use crate::store::MemStore;
    use axum::body::Body;
    use axum::http::Request;
    use tower::ServiceExt;

    fn app(config: &DashboardConfig) -> Router {
        let state = AppState::new(Arc::new(MemStore::new()), HttpConfig::default());
        let state = if config.enabled {
            state.with_dashboard(Dashboard::new(config, None, None, CancellationToken::new()))
        } else {
            state
        };
        super::super::router(state)
    }

    async fn status(app: &Router, req: Request<Body>) -> (StatusCode, axum::http::HeaderMap) {
        let resp = app.clone().oneshot(req).await.unwrap();
        (resp.status(), resp.headers().clone())
    }

    fn post(body: &str) -> Request<Body> {
        Request::post("/api/v1/viewers")
            .header("content-type", "application/json")
            .body(Body::from(body.to_owned()))
            .unwrap()
    }

    #[tokio::test]
    async fn event_streams_are_bounded_in_number() {
        let config = DashboardConfig {
            max_clients: 2,
            ..DashboardConfig::default()
        };
        let app = app(&config);
        let events = || Request::get("/api/v1/events").body(Body::empty()).unwrap();
        let first = app.clone().oneshot(events()).await.unwrap();
        assert_eq!(first.status(), StatusCode::OK);
        assert_eq!(first.headers()[header::CONTENT_TYPE], "text/event-stream");
        let second = app.clone().oneshot(events()).await.unwrap();
        assert_eq!(second.status(), StatusCode::OK);
        let (third, _) = status(&app, events()).await;
        assert_eq!(third, StatusCode::SERVICE_UNAVAILABLE);
        // A closed stream gives its place back.
        drop(first);
        let (again, _) = status(&app, events()).await;
        assert_eq!(again, StatusCode::OK);
        drop(second);
    }

    #[tokio::test]
    async fn viewer_reports_are_checked() {
        let app = app(&DashboardConfig::default());
        let ok = r#"{"id":"abc123","stream":"live","latency_ms":4200,"stalls":1}"#;
        assert_eq!(status(&app, post(ok)).await.0, StatusCode::NO_CONTENT);
        for bad in [
            "{}",
            "not json",
            r#"{"id":"a b"}"#,
            r#"{"id":"x","extra":1}"#,
        ] {
            assert_eq!(
                status(&app, post(bad)).await.0,
                StatusCode::BAD_REQUEST,
                "{bad}"
            );
        }
        let big = format!(
            r#"{{"id":"x","stream":"{}"}}"#,
            "a".repeat(MAX_REPORT_BYTES)
        );
        assert_eq!(
            status(&app, post(&big)).await.0,
            StatusCode::PAYLOAD_TOO_LARGE
        );
        // One address (here every report has none: the unspecified one)
        // runs out of reports.
        let mut limited = None;
        for i in 0..100 {
            let (s, h) = status(&app, post(&format!(r#"{{"id":"p{i}"}}"#))).await;
            if s == StatusCode::TOO_MANY_REQUESTS {
                limited = Some(h);
                break;
            }
        }
        assert_eq!(limited.expect("rate limited")[header::RETRY_AFTER], "10");
    }

    #[tokio::test]
    async fn off_means_not_there() {
        let app = app(&DashboardConfig {
            enabled: false,
            ..DashboardConfig::default()
        });
        for uri in ["/dashboard", "/api/v1/events", "/assets/dashboard.js"] {
            let (s, _) = status(&app, Request::get(uri).body(Body::empty()).unwrap()).await;
            assert_eq!(s, StatusCode::NOT_FOUND, "{uri}");
        }
        assert_eq!(
            status(&app, post(r#"{"id":"x"}"#)).await.0,
            StatusCode::NOT_FOUND
        );
    }

    #[tokio::test]
    async fn the_page_links_its_assets_and_writes_no_html() {
        let app = app(&DashboardConfig::default());
        let resp = app
            .oneshot(Request::get("/dashboard").body(Body::empty()).unwrap())
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        assert!(resp.headers()[header::CONTENT_SECURITY_POLICY]
            .to_str()
            .unwrap()
            .contains("script-src 'self'"));
        let body = http_body_util::BodyExt::collect(resp.into_body())
            .await
            .unwrap()
            .to_bytes();
        let body = String::from_utf8(body.to_vec()).unwrap();
        assert!(body.contains(r#"<script src="/assets/dashboard.js""#));
        assert!(!body.contains("{{"));
        assert!(DASHBOARD_JS.contains("/api/v1/events"));
        assert!(!DASHBOARD_JS.contains("innerHTML"));
        for page in [crate::assets::INDEX_HTML, crate::assets::WATCH_HTML] {
            assert!(page.contains(r#"href="/dashboard""#));
        }
    }

    #[test]
    fn transports_and_meshes_by_address() {
        assert_eq!(transport_of("/ip4/127.0.0.1/tcp/4001"), "tcp");
        assert_eq!(transport_of("/ip4/127.0.0.1/udp/4001/quic-v1"), "quic");
        assert_eq!(transport_of("/ip6/200:1234::1/tcp/4001"), "yggdrasil");
        assert_eq!(transport_of("/ip6/302:1::1/udp/1/quic-v1"), "yggdrasil");
        assert_eq!(transport_of("/ip6/fc12::1/tcp/4001"), "cjdns");
        assert_eq!(transport_of("/ip6/::1/tcp/4001"), "tcp");
    }

    #[test]
    fn playlist_media_finds_segments_and_init() {
        let text = "#EXTM3U\n#EXT-X-MAP:URI=\"/ipfs/bafyinit?filename=init-0.mp4\"\n\
                    #EXTINF:2.0,\n/ipfs/bafyseg?filename=000003.m4s\n";
        let got: Vec<_> = playlist_media(text).collect();
        assert_eq!(got, [("bafyinit", "init-0.mp4"), ("bafyseg", "000003.m4s")]);
    }

    #[test]
    fn history_keeps_five_minutes() {
        let mut h = History::default();
        for i in 0..(HISTORY as u64 + 10) {
            h.push(i, 1.0, 2, 3.0, 4.0);
        }
        assert_eq!(h.t.len(), HISTORY);
        assert_eq!(h.t.front(), Some(&10));
        assert_eq!(h.viewers.len(), HISTORY);
    }
}
