//! The running node: opens the repo, binds the HTTP gateway and the RTMP
//! ingest, owns shutdown.
//!
//! ```text
//! Config -> Node::bind (repo, streams, listeners) -> http + rtmp tasks -> Node::shutdown
//! ```
//!
//! Stopping is one [`CancellationToken`] tree: the HTTP and RTMP listeners
//! hold a child that [`Node::shutdown`] cancels first, so requests in flight
//! finish while the libp2p node, Bitswap, naming and mirrors still run; the
//! root, which stops those, is cancelled last.

use crate::config::{Config, ConfigError, StreamConfig};
use crate::hls::streams::{Streams, StreamsError};
use crate::http::{self, AppState};
use crate::p2p::bitswap::Bitswap;
use crate::p2p::P2p;
use crate::rtmp::server::StreamKeys;
use crate::store::{Repo, StoreError};
use prometheus_client::registry::Registry;
use std::net::SocketAddr;
use std::sync::Arc;
use thiserror::Error;
use tokio::task::JoinHandle;
use tokio_util::sync::{CancellationToken, DropGuard};

/// Why the node could not start or stopped badly.
#[derive(Debug, Error)]
pub enum NodeError {
    /// The data directory could not be opened (the error names it).
    #[error(transparent)]
    Repo(#[from] StoreError),
    /// The stream sessions could not be loaded.
    #[error("cannot load the streams: {0}")]
    Streams(#[from] Box<StreamsError>),
    /// The configuration is invalid (a stream's name or key).
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// An address could not be bound.
    #[error(
        "cannot listen on {addr}: {source}; is another process using it? (set --http / --rtmp)"
    )]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// The libp2p node could not start.
    #[error("p2p node: {0}")]
    P2p(#[from] crate::p2p::P2pError),
    /// The stream keys could not be opened.
    #[error("stream keys: {0}")]
    Keys(crate::ipns::KeyError),
    /// Bitswap could not start.
    #[error("bitswap: {0}")]
    Bitswap(crate::p2p::bitswap::BitswapError),
    /// Stream names could not be published.
    #[error("naming: {0}")]
    Naming(#[from] crate::p2p::naming::NamingError),
    /// A followed stream could not be mirrored (its name is not an IPNS
    /// name).
    #[error("stream config: follow: {0}")]
    Mirror(#[source] crate::ipns::NameError),
    /// The HTTP server failed.
    #[error("HTTP server failed: {0}")]
    Serve(#[source] std::io::Error),
}

/// A running node.
#[derive(Debug)]
pub struct Node {
    http_addr: SocketAddr,
    rtmp_addr: SocketAddr,
    repo: Repo,
    created_stream: Option<StreamConfig>,
    /// Each own stream's name and, with the p2p node on, its IPNS name.
    stream_names: Vec<(String, Option<crate::ipns::Name>)>,
    p2p: Option<P2p>,
    bitswap: Option<Bitswap>,
    mesh: crate::mesh::Mesh,
    /// Stops everything: the libp2p node and the tasks that use it.
    cancel: CancellationToken,
    /// A child of `cancel`: stops the listeners first, so that requests in
    /// flight can still fetch from peers while they finish. Also cancelled
    /// when the node is dropped without a shutdown.
    listeners: DropGuard,
    http: JoinHandle<std::io::Result<()>>,
    rtmp: JoinHandle<std::io::Result<()>>,
}

/// The file the node writes its gateway's address to, for the repo commands.
pub use crate::store::fetch::API_FILE;

/// The file, beside [`API_FILE`], that tells where the running node's RTMP
/// ingest listens (`IP:PORT`, as bound), so a publisher need not be told a
/// port the OS chose for `--rtmp 127.0.0.1:0`.
pub const RTMP_FILE: &str = "rtmp";

/// The file that keeps the key of the stream `serve` creates when none is
/// configured.
pub const DEFAULT_KEY_FILE: &str = "stream-key";

/// The configured streams (already validated), or stream `live` with a
/// random key kept in the data directory (created on first start). The
/// second value is that created stream, so the caller can show its OBS
/// settings.
fn streams_or_default(
    config: &Config,
) -> Result<(Vec<StreamConfig>, Option<StreamConfig>), NodeError> {
    if !config.streams.is_empty() {
        return Ok((config.streams.clone(), None));
    }
    let path = config.data_dir.join(DEFAULT_KEY_FILE);
    let key = match std::fs::read_to_string(&path) {
        Ok(k) if !k.trim().is_empty() => {
            // Kept by an older version readable by all: a secret all the same.
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
                .map_err(StoreError::io("restrict", &path))?;
            k.trim().to_owned()
        }
        _ => {
            use rand::distr::{Alphanumeric, SampleString};
            let k = Alphanumeric.sample_string(&mut rand::rng(), 24);
            // A secret, like node.key: readable by this user only.
            crate::store::write_secret(&path, format!("{k}\n").as_bytes())?;
            k
        }
    };
    let s = StreamConfig {
        name: "live".parse().expect("a valid stream name"),
        key,
        format: None,
        part_target: None,
        retain: None,
        retain_bytes: None,
    };
    Ok((vec![s.clone()], Some(s)))
}

/// Binds `addr`; `[::]` (the default, every address) falls back to
/// `0.0.0.0` on a host whose kernel has no IPv6, which still serves IPv4.
async fn bind(addr: SocketAddr) -> Result<tokio::net::TcpListener, NodeError> {
    let source = match tokio::net::TcpListener::bind(addr).await {
        Ok(listener) => return Ok(listener),
        Err(e) => e,
    };
    match ipv4_fallback(addr, &source) {
        Some(v4) => {
            tracing::warn!(%addr, "no IPv6 on this host; listening on {v4} instead");
            tokio::net::TcpListener::bind(v4)
                .await
                .map_err(|source| NodeError::Bind { addr: v4, source })
        }
        None => Err(NodeError::Bind { addr, source }),
    }
}

/// The IPv4 address to listen on instead of `addr` when binding it failed
/// with `err` because the kernel has no IPv6 at all.
fn ipv4_fallback(addr: SocketAddr, err: &std::io::Error) -> Option<SocketAddr> {
    let no_ipv6 = rustix::io::Errno::from_io_error(err) == Some(rustix::io::Errno::AFNOSUPPORT);
    (no_ipv6 && addr.is_ipv6() && addr.ip().is_unspecified())
        .then(|| SocketAddr::from(([0, 0, 0, 0], addr.port())))
}

/// Descriptors kept for the store (block files, kept mappings, the
/// repo's own files) besides those of RTMP and libp2p connections.
const STORE_FILES: u64 = 256;

/// `[http]` with `max_connections` lowered to what the open-file limit
/// leaves after a reserve for the store, RTMP and libp2p: a gateway that
/// runs out of descriptors fails accepts, block reads and peer dials alike.
/// Raises the soft limit to the hard one first (systemd starts services
/// at 1024).
fn http_config(config: &Config) -> crate::config::HttpConfig {
    let mut http = config.http.clone();
    let limit = match crate::admission::raise_nofile_limit() {
        Ok(limit) => limit,
        Err(e) => {
            tracing::warn!(error = %e, "could not raise the open-file limit");
            rustix::process::getrlimit(rustix::process::Resource::Nofile).current
        }
    };
    let Some(limit) = limit else {
        return http;
    };
    let p2p = if config.p2p.enabled {
        u64::from(config.p2p.max_connections)
    } else {
        0
    };
    // An evicted RTMP connection may linger a moment beside its successor.
    let reserve = STORE_FILES + 2 * config.rtmp.max_connections as u64 + p2p;
    let room = usize::try_from(limit.saturating_sub(reserve)).unwrap_or(usize::MAX);
    if room < http.max_connections {
        tracing::warn!(
            open_files = limit,
            reserve,
            max_connections = room.max(1),
            "http.max_connections lowered to fit the open-file limit"
        );
        http.max_connections = room.max(1);
    }
    http
}

impl Node {
    /// Opens the repo and starts serving.
    pub async fn bind(config: Config) -> Result<Self, NodeError> {
        let repo = Repo::open(&config.data_dir)?;
        config.validate()?;
        let (stream_configs, created_stream) = streams_or_default(&config)?;
        let streams =
            Streams::open(repo.clone(), config.live.clone(), &stream_configs).map_err(Box::new)?;
        let http_listener = bind(config.http.listen).await?;
        let rtmp_listener = bind(config.rtmp.listen).await?;
        let http_addr = http_listener.local_addr().map_err(NodeError::Serve)?;
        let rtmp_addr = rtmp_listener.local_addr().map_err(NodeError::Serve)?;
        let cancel = CancellationToken::new();
        // Each stage registers its own metrics; none is recorded when off.
        let mut registry = config
            .metrics
            .enabled
            .then(|| Registry::with_prefix("meshcast"));
        if let Some(r) = registry.as_mut() {
            streams.register_metrics(r);
            survey_store(
                repo.clone(),
                crate::store::metrics::Metrics::new(r),
                cancel.child_token(),
            );
        }
        let p2p = if config.p2p.enabled {
            Some(
                P2p::spawn(
                    &config.p2p,
                    &config.data_dir,
                    registry.as_mut(),
                    cancel.child_token(),
                )
                .await?,
            )
        } else {
            None
        };
        let mut state =
            AppState::new(repo.blocks.clone(), http_config(&config)).with_streams(streams.clone());
        let mut bitswap = None;
        let mut stream_names: Vec<(String, Option<crate::ipns::Name>)> = stream_configs
            .iter()
            .map(|s| (s.name.to_string(), None))
            .collect();
        if let Some(p2p) = &p2p {
            let keys = crate::ipns::KeyStore::open(&config.data_dir).map_err(NodeError::Keys)?;
            let announcements = crate::p2p::parts::Announcements::spawn(
                p2p.clone(),
                keys.clone(),
                Some(streams.announcements()),
                registry.as_mut(),
                cancel.child_token(),
            );
            let naming = crate::p2p::naming::Naming::spawn(
                p2p.clone(),
                keys,
                Some(site_feed(&streams, cancel.child_token())),
                (&config.ipns).into(),
                registry.as_mut(),
                cancel.child_token(),
            )
            .await?;
            for (stream, name) in &mut stream_names {
                *name = Some(naming.name_of(stream)?);
            }
            provide_feed(&streams, p2p.clone(), cancel.child_token());
            // Bitswap serves and fetches blocks; every block the repo
            // stores (ingest included) is announced to it, so a want that
            // arrived before its segment is answered the moment it exists.
            // The gateway fetches what the repo lacks through it too.
            let (swap, _) = crate::p2p::bitswap::spawn(
                crate::p2p::bitswap::Config::default(),
                repo.blocks.clone(),
                repo.blocks.subscribe(),
                p2p.stream_control(),
                p2p.clone(),
                cancel.child_token(),
            )
            .map_err(NodeError::Bitswap)?;
            if let Some(r) = registry.as_mut() {
                swap.register_metrics(r);
            }
            if !config.follow.is_empty() {
                crate::mirror::spawn(
                    &config.follow,
                    naming.clone(),
                    announcements,
                    swap.clone(),
                    streams.clone(),
                    repo.clone(),
                    p2p.clone(),
                    registry.as_mut(),
                    cancel.child_token(),
                )
                .await
                .map_err(NodeError::Mirror)?;
            }
            state = state
                .with_p2p(p2p.clone())
                .with_naming(naming)
                .with_bitswap(swap.clone());
            bitswap = Some(swap);
        }
        let peer_list = p2p.clone().map(|p2p| -> crate::mesh::PeerList {
            Arc::new(move || {
                let p2p = p2p.clone();
                Box::pin(async move {
                    p2p.info()
                        .await
                        .map(|info| {
                            info.peers
                                .into_iter()
                                .map(|p| (p.peer_id, p.addrs))
                                .collect()
                        })
                        .unwrap_or_default()
                })
            })
        });
        let mesh = crate::mesh::Mesh::spawn(&config.mesh, peer_list, cancel.child_token());
        state = state.with_mesh(mesh.clone());
        let listeners = cancel.child_token();
        let dashboard = config.dashboard.enabled.then(|| {
            // The dashboard shows the links as `GET /api/v1/mesh` does.
            let links = mesh.clone();
            let source: http::dashboard::MeshSource =
                Arc::new(move || serde_json::to_value(&*links.snapshot()).unwrap_or_default());
            // Event streams end with the listeners, so shutting down does
            // not wait for open dashboards.
            http::dashboard::Dashboard::new(
                &config.dashboard,
                Some(repo.clone()),
                Some(source),
                listeners.clone(),
            )
        });
        if let Some(mut r) = registry {
            mesh.register(&mut r);
            if let Some(d) = &dashboard {
                d.register(&mut r);
            }
            let m = http::metrics::Metrics::new(&mut r);
            m.serve_registry(r);
            state = state.with_metrics(m);
        }
        if let Some(dashboard) = dashboard {
            state = state.with_dashboard(dashboard.clone());
            dashboard.spawn(state.clone(), cancel.child_token());
        }
        let http = tokio::spawn(http::serve(
            http_listener,
            state,
            listeners.clone().cancelled_owned(),
        ));
        let rtmp = tokio::spawn(crate::rtmp::server::serve(
            rtmp_listener,
            config.rtmp.clone(),
            Arc::new(StreamKeys::new(&stream_configs)),
            Arc::new(streams),
            listeners.clone().cancelled_owned(),
        ));
        let listeners = listeners.drop_guard();
        let reach = match http_addr.ip() {
            ip if ip.is_unspecified() => SocketAddr::new(
                if ip.is_ipv4() {
                    std::net::Ipv4Addr::LOCALHOST.into()
                } else {
                    std::net::Ipv6Addr::LOCALHOST.into()
                },
                http_addr.port(),
            ),
            _ => http_addr,
        };
        crate::store::write_atomic(
            &config.data_dir.join(API_FILE),
            format!("http://{reach}\n").as_bytes(),
        )?;
        crate::store::write_atomic(
            &config.data_dir.join(RTMP_FILE),
            format!("{rtmp_addr}\n").as_bytes(),
        )?;
        Ok(Self {
            http_addr,
            rtmp_addr,
            repo,
            created_stream,
            stream_names,
            p2p,
            bitswap,
            mesh,
            cancel,
            listeners,
            http,
            rtmp,
        })
    }

    /// The address publishers connect to.
    pub fn rtmp_addr(&self) -> SocketAddr {
        self.rtmp_addr
    }

    /// The stream `bind` created because none was configured (its key is
    /// for the operator's eyes: show it once, never log it).
    pub fn created_stream(&self) -> Option<&StreamConfig> {
        self.created_stream.as_ref()
    }

    /// Each stream this node takes from publishers, with its IPNS name
    /// (`None` with the p2p node off).
    pub fn stream_names(&self) -> &[(String, Option<crate::ipns::Name>)] {
        &self.stream_names
    }

    /// The address the gateway listens on.
    pub fn http_addr(&self) -> SocketAddr {
        self.http_addr
    }

    /// The libp2p node, unless it is turned off.
    pub fn p2p(&self) -> Option<&P2p> {
        self.p2p.as_ref()
    }

    /// Bitswap, when the libp2p node runs (its [`Bitswap::stats`] are the
    /// exchange's counters).
    pub fn bitswap(&self) -> Option<&Bitswap> {
        self.bitswap.as_ref()
    }

    /// The mesh link telemetry (its [`crate::mesh::Mesh::register`] adds
    /// its metrics to a registry).
    pub fn mesh(&self) -> &crate::mesh::Mesh {
        &self.mesh
    }

    /// The repo this node serves.
    pub fn repo(&self) -> &Repo {
        &self.repo
    }

    /// Stops accepting, lets requests in flight finish, and returns.
    pub async fn shutdown(self) -> Result<(), NodeError> {
        self.listeners.disarm().cancel();
        let join = |r: Result<std::io::Result<()>, tokio::task::JoinError>| match r {
            Ok(r) => r.map_err(NodeError::Serve),
            Err(e) => Err(NodeError::Serve(std::io::Error::other(e))),
        };
        let rtmp = join(self.rtmp.await);
        let http = join(self.http.await);
        self.cancel.cancel();
        let _ = std::fs::remove_file(self.repo.dir().join(API_FILE));
        let _ = std::fs::remove_file(self.repo.dir().join(RTMP_FILE));
        http.and(rtmp)
    }
}

/// Surveys the repo for its metrics now and every
/// [`SURVEY_EVERY`](crate::store::metrics::SURVEY_EVERY), on the blocking pool.
fn survey_store(repo: Repo, metrics: crate::store::metrics::Metrics, cancel: CancellationToken) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(crate::store::metrics::SURVEY_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tick.tick() => {}
            }
            let (repo, metrics) = (repo.clone(), metrics.clone());
            match tokio::task::spawn_blocking(move || metrics.survey(&repo)).await {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => tracing::warn!("store survey for metrics: {e}"),
                Err(e) => tracing::warn!("store survey for metrics: {e}"),
            }
        }
    });
}

/// Site changes queued for IPNS publishing; past this the feed skips to each
/// stream's latest site.
const SITE_FEED: usize = 64;

/// Feeds naming from the HLS stage: every own stream's current site, then
/// each change. When naming falls behind the broadcast (a slow disk while
/// signing), only each stream's latest site is sent on, since only the
/// latest matters.
fn site_feed(streams: &Streams, cancel: CancellationToken) -> crate::p2p::naming::SiteFeed {
    let mut changes = streams.site_updates();
    let current = streams
        .sites()
        .into_iter()
        .map(|s| (s.stream, s.root))
        .collect();
    let (tx, updates) = tokio::sync::mpsc::channel(SITE_FEED);
    let streams = streams.clone();
    tokio::spawn(async move {
        loop {
            let sites = tokio::select! {
                _ = cancel.cancelled() => return,
                change = changes.recv() => match change {
                    Ok(site) => vec![site],
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => streams.sites(),
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                },
            };
            for site in sites {
                if tx.send((site.stream, site.root)).await.is_err() {
                    return;
                }
            }
        }
    });
    crate::p2p::naming::SiteFeed { current, updates }
}

/// Feeds the DHT provider records from the HLS stage. At start: every own
/// session's archive playlist, and each own stream's site and live window.
/// Then, on each site change: the new site root, archive playlist and the
/// live window's media (init segments included; those provided already are
/// not announced again), withdrawing the stream's previous site and the
/// session's previous archive (an ended session's last archive stays).
/// Segments stay provided after they leave the window, as the origin keeps
/// them, until the provider limit lets the oldest go.
fn provide_feed(streams: &Streams, p2p: P2p, cancel: CancellationToken) {
    let mut changes = streams.site_updates();
    let streams = streams.clone();
    tokio::spawn(async move {
        // The current session and its archive.
        let archive_of = |stream: &str| -> Option<(String, cid::Cid)> {
            let info = streams.list().into_iter().find(|s| s.name == stream)?;
            let session = info.sessions.last()?;
            let cid = session.archive_cid.as_deref()?.parse().ok()?;
            Some((session.id.clone(), cid))
        };
        let window = |stream: &str| {
            streams
                .live_playlist(stream)
                .map(|t| crate::mirror::media_cids(&t))
                .unwrap_or_default()
        };
        let archives: Vec<cid::Cid> = streams
            .list()
            .into_iter()
            .filter(|s| s.mirror_of.is_none())
            .flat_map(|s| s.sessions)
            .filter_map(|s| s.archive_cid?.parse().ok())
            .collect();
        if p2p.provide(archives).await.is_err() {
            return;
        }
        // Each own stream's site and session archive as last provided (one
        // entry per stream).
        type Provided = (cid::Cid, Option<(String, cid::Cid)>);
        let mut last: std::collections::HashMap<String, Provided> =
            std::collections::HashMap::new();
        let mut sites = streams.sites();
        loop {
            for site in sites {
                let archive = archive_of(&site.stream);
                let mut cids = vec![site.root];
                cids.extend(archive.as_ref().map(|a| a.1));
                cids.extend(window(&site.stream));
                if p2p.provide(cids).await.is_err() {
                    return;
                }
                if let Some((old_root, old_archive)) =
                    last.insert(site.stream.clone(), (site.root, archive.clone()))
                {
                    let same_session = |(id, cid): (String, cid::Cid)| {
                        archive
                            .as_ref()
                            .is_some_and(|(now, c)| *now == id && *c != cid)
                            .then_some(cid)
                    };
                    let gone: Vec<cid::Cid> = [
                        (old_root != site.root).then_some(old_root),
                        old_archive.and_then(same_session),
                    ]
                    .into_iter()
                    .flatten()
                    .collect();
                    if !gone.is_empty() && p2p.stop_providing(gone).await.is_err() {
                        return;
                    }
                }
            }
            sites = tokio::select! {
                _ = cancel.cancelled() => return,
                change = changes.recv() => match change {
                    Ok(site) => vec![site],
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => streams.sites(),
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                },
            };
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_every_ipv6_address_falls_back_to_ipv4_and_only_without_ipv6() {
        let no_ipv6 = std::io::Error::from(rustix::io::Errno::AFNOSUPPORT);
        let in_use = std::io::Error::from(std::io::ErrorKind::AddrInUse);
        let any: SocketAddr = "[::]:1935".parse().unwrap();
        assert_eq!(
            ipv4_fallback(any, &no_ipv6),
            Some("0.0.0.0:1935".parse().unwrap())
        );
        assert_eq!(ipv4_fallback(any, &in_use), None);
        for addr in [
            "[200::1]:1935",
            "[fc00::1]:1935",
            "[::1]:1935",
            "0.0.0.0:1935",
        ] {
            assert_eq!(
                ipv4_fallback(addr.parse().unwrap(), &no_ipv6),
                None,
                "{addr}"
            );
        }
    }
}
