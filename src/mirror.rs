//! Mirrors: follow another node's stream by its IPNS name, keep what it
//! publishes, and serve it as the origin does.
//!
//! ```text
//! Naming::watch(name) --better record--> /ipfs/<site root>
//!   -> fetch the site (Bitswap, from any peer that has it) -> stream.json, playlists
//!   -> fetch every segment the playlists name that we lack, in order, pinned
//!   -> Streams::set_mirrored (/live/{stream}.m3u8, /watch/{stream}, /api/v1/streams)
//!   -> retention: segments past the age or byte limit unpinned, then GC
//! Announcements::follow(name) --each part, signed by the name's key-->
//!   parts::PartsFollower (its own task): fetch the part -> Streams::mirror_part
//!   (LL-HLS copy), pinned; segment closed: fetch its root -> Streams::mirror_segment,
//!   pinned -> held here, as a segment the record brought
//! ```
//!
//! The record drives the site, the archive and retention, once per
//! segment; the announcements keep the mirror's low-latency playlist a
//! part behind its origin rather than a segment. What retention lets go
//! leaves the low-latency copy too ([`Streams::mirror_forget`]).
//!
//! What the mirror pins it also provides on the DHTs (each segment, the
//! site and its archive playlist, through [`P2p::provide`]), and what it
//! lets go it stops providing: a replaced site and archive, and the
//! segments retention unpins.
//!
//! The record itself is the origin's, signed by it: the mirror keeps and
//! rebroadcasts it (pubsub forwarding, fetch answers) but never signs, so
//! `/ipns/<name>/` resolves and plays on the mirror too, also after the
//! origin is gone. The last record is kept in the data directory, so a
//! restarted mirror serves at once.

use crate::config::FollowConfig;
use crate::hls::streams::{Mirrored, SessionInfo, Streams};
use crate::ipns::record::Record;
use crate::ipns::Name;
use crate::p2p::bitswap::Bitswap;
use crate::p2p::naming::Naming;
use crate::p2p::parts::Announcements;
use crate::p2p::P2p;
use crate::store::pins::PinKind;
use crate::store::{BlockRead, Repo, StoreError};
use crate::unixfs::export;
use bytes::Bytes;
use cid::Cid;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::{Registry, Unit};
use serde::Deserialize;
use std::collections::{HashSet, VecDeque};
use std::path::PathBuf;
use std::sync::atomic::AtomicU64;
use std::time::{Duration, Instant};
use thiserror::Error;
use tokio_util::sync::CancellationToken;

mod parts;

/// Segments fetched at once per followed stream.
const PARALLEL_FETCHES: usize = 4;
/// The most blocks one segment may have (a 1 GiB segment in 1 MiB blocks).
const MAX_SEGMENT_BLOCKS: usize = 1024;
/// Media the parts follower pinned, waiting to be held.
const PARTS_HELD: usize = 64;
/// GC runs at most this often, after retention unpinned something.
const GC_INTERVAL: Duration = Duration::from_secs(60);

/// Why a site could not be mirrored.
#[derive(Debug, Error)]
pub enum MirrorError {
    /// A block could not be fetched.
    #[error("fetching {cid}: {source}")]
    Fetch {
        /// The block.
        cid: Cid,
        /// Why (boxed to keep the error small).
        source: Box<crate::p2p::bitswap::BitswapError>,
    },
    /// The record does not point to a site.
    #[error("the name points to {0:?}, not /ipfs/<cid>")]
    Value(String),
    /// The site is not what an origin publishes.
    #[error("not a stream site: {0}")]
    Site(String),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The stream.json of an origin's site.
#[derive(Debug, Clone, Deserialize)]
struct Doc {
    name: String,
    live: bool,
    session: String,
    started: String,
    #[serde(default)]
    archive_cid: String,
}

/// A segment we hold for a followed stream.
struct Held {
    cid: Cid,
    bytes: u64,
    at: Instant,
}

/// Mirror lag and counts, for metrics.
#[derive(Debug, Clone, Copy, Default)]
pub struct MirrorStats {
    /// Segments fetched and pinned.
    pub segments: u64,
    /// Bytes of those segments.
    pub bytes: u64,
    /// Time from receiving a record to serving what it names, last time.
    pub last_sync: Duration,
}

struct Follower {
    name: Name,
    config: FollowConfig,
    repo: Repo,
    bitswap: Bitswap,
    streams: Streams,
    p2p: P2p,
    state_file: PathBuf,
    stream: Option<String>,
    site: Option<Cid>,
    /// The archive playlist of `site`, as provided.
    archive: Option<Cid>,
    held: VecDeque<Held>,
    have: HashSet<Cid>,
    last_gc: Option<Instant>,
    /// Unpinned segments wait for the next collection.
    gc_pending: bool,
    stats: std::sync::Arc<std::sync::Mutex<MirrorStats>>,
    metrics: Option<FollowMetrics>,
}

/// What the mirror reports for `GET /metrics`, per followed name (the
/// label is the IPNS name as configured, so the set is the operator's).
#[derive(Debug, Clone)]
struct Metrics {
    lag: Family<FollowLabel, Gauge<f64, AtomicU64>>,
    sync: Family<FollowLabel, Gauge<f64, AtomicU64>>,
    segments: Family<FollowLabel, Counter>,
    bytes: Family<FollowLabel, Counter>,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FollowLabel {
    follow: String,
}

/// Counts one segment fetched and pinned (`bytes` long) for a followed
/// name, by the IPNS follower or the part task alike.
fn count_segment(
    stats: &std::sync::Mutex<MirrorStats>,
    metrics: Option<&FollowMetrics>,
    bytes: u64,
) {
    if let Ok(mut s) = stats.lock() {
        s.segments += 1;
        s.bytes += bytes;
    }
    if let Some(m) = metrics {
        m.segments.inc();
        m.bytes.inc_by(bytes);
    }
}

/// One followed name's metrics.
#[derive(Debug, Clone)]
struct FollowMetrics {
    lag: Gauge<f64, AtomicU64>,
    sync: Gauge<f64, AtomicU64>,
    segments: Counter,
    bytes: Counter,
}

impl Metrics {
    fn new(registry: &mut Registry) -> Self {
        let r = registry.sub_registry_with_prefix("mirror");
        let m = Self {
            lag: Family::default(),
            sync: Family::default(),
            segments: Family::default(),
            bytes: Family::default(),
        };
        r.register_with_unit(
            "lag",
            "How far the mirrored live edge was behind the wall clock when the mirror last caught up: the end of the origin's newest live segment (its program date-time plus duration) to now",
            Unit::Seconds,
            m.lag.clone(),
        );
        r.register_with_unit(
            "sync",
            "Time from a followed name's new record to serving what it names, last time",
            Unit::Seconds,
            m.sync.clone(),
        );
        r.register(
            "segments",
            "Segments fetched and pinned",
            m.segments.clone(),
        );
        r.register_with_unit(
            "fetched",
            "Bytes of the segments fetched and pinned",
            Unit::Bytes,
            m.bytes.clone(),
        );
        m
    }

    fn follow(&self, name: &Name) -> FollowMetrics {
        let l = FollowLabel {
            follow: name.to_string(),
        };
        FollowMetrics {
            lag: self.lag.get_or_create(&l).clone(),
            sync: self.sync.get_or_create(&l).clone(),
            segments: self.segments.get_or_create(&l).clone(),
            bytes: self.bytes.get_or_create(&l).clone(),
        }
    }
}

/// Where a live playlist's newest segment ends, in milliseconds since the
/// Unix epoch: its last `EXT-X-PROGRAM-DATE-TIME` plus the durations of the
/// segments from there on.
pub fn live_edge_ms(playlist: &str) -> Option<u64> {
    let mut edge: Option<f64> = None;
    for line in playlist.lines() {
        if let Some(t) = line.strip_prefix("#EXT-X-PROGRAM-DATE-TIME:") {
            let t = crate::ipns::rfc3339::parse(t.trim()).ok()?;
            edge = Some(t.duration_since(std::time::UNIX_EPOCH).ok()?.as_secs_f64() * 1000.0);
        } else if let Some(d) = line.strip_prefix("#EXTINF:") {
            let d: f64 = d.split(',').next()?.trim().parse().ok()?;
            if let Some(e) = edge.as_mut() {
                *e += d * 1000.0;
            }
        }
    }
    edge.map(|e| e as u64)
}

/// Starts following each configured name; with a `registry`, each one's
/// lag and fetches are reported in it.
// Each argument is a stage the followers hold a handle to; a struct that
// only bundles them for this one call would say less.
#[allow(clippy::too_many_arguments)]
pub async fn spawn(
    follows: &[FollowConfig],
    naming: Naming,
    announcements: Announcements,
    bitswap: Bitswap,
    streams: Streams,
    repo: Repo,
    p2p: P2p,
    registry: Option<&mut Registry>,
    shutdown: CancellationToken,
) -> Result<std::sync::Arc<std::sync::Mutex<MirrorStats>>, crate::ipns::NameError> {
    let metrics = registry.map(Metrics::new);
    let stats = std::sync::Arc::default();
    let dir = repo.dir().join("follow");
    if !follows.is_empty() {
        store_site_statics(&repo).await;
    }
    for f in follows {
        let name: Name = f.name.parse()?;
        let state_file = dir.join(format!("{name}.record"));
        // A restarted mirror serves the last record it had at once.
        if let Ok(bytes) = std::fs::read(&state_file) {
            if let Err(e) = naming.put(&name, &bytes).await {
                tracing::debug!(%name, "kept record not used: {e}");
            }
        }
        let follower = Follower {
            name,
            config: f.clone(),
            repo: repo.clone(),
            bitswap: bitswap.clone(),
            streams: streams.clone(),
            p2p: p2p.clone(),
            state_file,
            stream: None,
            site: None,
            archive: None,
            held: VecDeque::new(),
            have: HashSet::new(),
            last_gc: None,
            gc_pending: false,
            stats: std::sync::Arc::clone(&stats),
            metrics: metrics.as_ref().map(|m| m.follow(&name)),
        };
        tokio::spawn(follower.run(naming.clone(), announcements.clone(), shutdown.clone()));
    }
    Ok(stats)
}

/// Stores the blocks of the page and scripts every site holds (as this
/// version builds them), so that fetching a site from an origin of the same
/// version transfers only what is particular to it. Failing costs only
/// those bytes: they are fetched with the site.
async fn store_site_statics(repo: &Repo) {
    let repo = repo.clone();
    let stored = tokio::task::spawn_blocking(move || -> Result<usize, String> {
        let files = crate::hls::site::static_files();
        let blocks = crate::hls::site::static_blocks(&files).map_err(|e| e.to_string())?;
        let _guard = repo.writer().map_err(|e| e.to_string())?;
        crate::store::Blockstore::put_many(&*repo.blocks, &blocks).map_err(|e| e.to_string())?;
        Ok(blocks.len())
    })
    .await
    .map_err(|e| e.to_string())
    .and_then(|r| r);
    match stored {
        Ok(n) => tracing::debug!(blocks = n, "the sites' static files are held ahead"),
        Err(e) => tracing::warn!(
            "the sites' static files were not stored ahead (they are fetched with each site): {e}"
        ),
    }
}

impl Follower {
    async fn run(
        mut self,
        naming: Naming,
        announcements: Announcements,
        shutdown: CancellationToken,
    ) {
        tracing::info!(name = %self.name, "following");
        let mut rx = match naming.watch(&self.name).await {
            Ok(rx) => rx,
            Err(e) => {
                tracing::warn!(name = %self.name, "cannot follow: {e}");
                return;
            }
        };
        let (stream_tx, stream_rx) = tokio::sync::watch::channel(self.stream.clone());
        let (held_tx, mut held_rx) = tokio::sync::mpsc::channel(PARTS_HELD);
        match announcements.follow(&self.name).await {
            Ok(rx) => {
                let parts = parts::PartsFollower {
                    name: self.name,
                    rx,
                    repo: self.repo.clone(),
                    bitswap: self.bitswap.clone(),
                    streams: self.streams.clone(),
                    p2p: self.p2p.clone(),
                    stream: stream_rx,
                    held: held_tx,
                    stats: std::sync::Arc::clone(&self.stats),
                    metrics: self.metrics.clone(),
                };
                tokio::spawn(parts.run(shutdown.clone()));
            }
            // The record alone still drives the mirror, a segment behind.
            Err(e) => tracing::warn!(name = %self.name, "no part announcements: {e}"),
        }
        loop {
            let record = rx.borrow_and_update().clone();
            if let Some(record) = record {
                self.sync(&record, &shutdown).await;
                if *stream_tx.borrow() != self.stream {
                    stream_tx.send_replace(self.stream.clone());
                }
            }
            loop {
                let gc_at = self.last_gc.map_or_else(Instant::now, |t| t + GC_INTERVAL);
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    changed = rx.changed() => {
                        if changed.is_err() { return }
                        break;
                    }
                    Some(h) = held_rx.recv() => {
                        // Pinned by the parts follower: held for retention
                        // from now on, and not fetched again.
                        if self.have.insert(h.cid) {
                            self.held.push_back(h);
                        }
                    }
                    _ = tokio::time::sleep_until(gc_at.into()), if self.gc_pending => self.collect().await,
                }
            }
        }
    }

    /// Deletes the blocks no pin reaches any more.
    async fn collect(&mut self) {
        self.gc_pending = false;
        self.last_gc = Some(Instant::now());
        let repo = self.repo.clone();
        match tokio::task::spawn_blocking(move || repo.gc()).await {
            Ok(Ok(report)) => tracing::info!(name = %self.name, "retention: {report:?}"),
            Ok(Err(e)) => tracing::warn!(name = %self.name, "retention GC: {e}"),
            Err(e) => tracing::warn!(name = %self.name, "retention GC: {e}"),
        }
    }

    /// Brings the mirror up to `record`, retrying failed fetches until a
    /// newer record arrives or the node stops.
    async fn sync(&mut self, record: &Record, shutdown: &CancellationToken) {
        let started = Instant::now();
        let mut delay = Duration::from_millis(250);
        loop {
            match self.try_sync(record).await {
                Ok(()) => break,
                Err(e) => {
                    tracing::info!(name = %self.name, "mirroring {}: {e}; retrying", record.value());
                    tokio::select! {
                        _ = shutdown.cancelled() => return,
                        _ = tokio::time::sleep(delay) => {}
                    }
                    delay = (delay * 2).min(Duration::from_secs(10));
                    if delay == Duration::from_secs(10) {
                        if let Some(stream) = &self.stream {
                            self.streams.mirror_offline(stream);
                        }
                    }
                }
            }
        }
        if let Ok(mut s) = self.stats.lock() {
            s.last_sync = started.elapsed();
        }
        if let Some(m) = &self.metrics {
            m.sync.set(started.elapsed().as_secs_f64());
        }
        let bytes = record.to_bytes();
        let path = self.state_file.clone();
        let _ =
            tokio::task::spawn_blocking(move || crate::store::write_atomic(&path, &bytes)).await;
        // Collected now if none ran lately, else at most GC_INTERVAL later.
        if self.gc_pending && self.last_gc.is_none_or(|t| t.elapsed() >= GC_INTERVAL) {
            self.collect().await;
        }
    }

    async fn try_sync(&mut self, record: &Record) -> Result<(), MirrorError> {
        let value = record.value();
        let root = value
            .strip_prefix("/ipfs/")
            .and_then(|c| Cid::try_from(c.trim_end_matches('/')).ok())
            .ok_or_else(|| MirrorError::Value(value.to_owned()))?;
        if self.site == Some(root) {
            return Ok(());
        }
        // The site: a small directory; fetch all of it.
        self.fetch_dag(root, usize::MAX).await?;
        let read = |file: &'static str| {
            let repo = self.repo.clone();
            async move {
                tokio::task::spawn_blocking(move || -> Result<Vec<u8>, MirrorError> {
                    let r = export::resolve(&*repo.blocks, &root, &[file])
                        .map_err(|e| MirrorError::Site(format!("{file}: {e}")))?;
                    export::read_all(&*repo.blocks, &r.cid)
                        .map_err(|e| MirrorError::Site(format!("{file}: {e}")))
                })
                .await
                .map_err(|e| MirrorError::Site(e.to_string()))?
            }
        };
        let doc: Doc = serde_json::from_slice(&read("stream.json").await?)
            .map_err(|e| MirrorError::Site(format!("stream.json: {e}")))?;
        let live_text = String::from_utf8(read("live.m3u8").await?)
            .map_err(|_| MirrorError::Site("live.m3u8 is not UTF-8".into()))?;
        let archive_text = String::from_utf8(read("archive.m3u8").await?)
            .map_err(|_| MirrorError::Site("archive.m3u8 is not UTF-8".into()))?;
        if !crate::name::StreamName::is_valid(&doc.name) {
            return Err(MirrorError::Site(format!("bad stream name {:?}", doc.name)));
        }

        // Segments: the live window's first (a viewer needs them now), then
        // the rest of the archive, each once.
        let mut wanted = Vec::new();
        for text in [&live_text, &archive_text] {
            for cid in media_cids(text) {
                if !self.have.contains(&cid) && !wanted.contains(&cid) {
                    wanted.push(cid);
                }
            }
        }
        let mut fetched_bytes = std::collections::HashMap::new();
        for chunk in wanted.chunks(PARALLEL_FETCHES) {
            let fetched = futures::future::join_all(
                chunk
                    .iter()
                    .map(|cid| self.fetch_dag(*cid, MAX_SEGMENT_BLOCKS)),
            )
            .await;
            let mut pinned = Vec::new();
            for (cid, r) in chunk.iter().zip(fetched) {
                let bytes = r?;
                self.pin(cid).await?;
                pinned.push(*cid);
                self.have.insert(*cid);
                fetched_bytes.insert(*cid, bytes);
                count_segment(&self.stats, self.metrics.as_ref(), bytes);
            }
            self.provide(pinned).await;
        }
        // Held in media order (the archive's), oldest first, for retention.
        let now = Instant::now();
        for cid in media_cids(&archive_text)
            .into_iter()
            .chain(media_cids(&live_text))
        {
            if let Some(bytes) = fetched_bytes.remove(&cid) {
                self.held.push_back(Held {
                    cid,
                    bytes,
                    at: now,
                });
            }
        }
        // The site last, so what it names is all here when it is served.
        self.pin(&root).await?;
        let archive = Cid::try_from(doc.archive_cid.as_str()).ok();
        self.provide([Some(root), archive].into_iter().flatten().collect())
            .await;
        let mut gone = Vec::new();
        if let Some(old) = self.site.replace(root).filter(|o| *o != root) {
            let repo = self.repo.clone();
            let _ = tokio::task::spawn_blocking(move || repo.pins.remove(&old)).await;
            gone.push(old);
        }
        if let Some(old) =
            std::mem::replace(&mut self.archive, archive).filter(|o| Some(*o) != archive)
        {
            gone.push(old);
        }
        self.withdraw(gone).await;
        if self.stream.as_deref().is_some_and(|s| s != doc.name) {
            tracing::warn!(name = %self.name, "the followed stream changed its name to {}", doc.name);
        }
        let session = SessionInfo {
            id: doc.session.clone(),
            started: doc.started.clone(),
            duration_s: playlist_duration(&archive_text),
            gap_s: 0.0,
            gaps: 0,
            ended: archive_text.contains("#EXT-X-ENDLIST"),
            archive_cid: (!doc.archive_cid.is_empty()).then(|| doc.archive_cid.clone()),
            bytes: 0,
            media_end_ms: 0,
        };
        // Unpinned before the new state is served, so that what the API and
        // playlists no longer name is no longer kept.
        self.retain(&live_text).await;
        if let (Some(m), Some(edge)) = (&self.metrics, live_edge_ms(&live_text)) {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64);
            m.lag.set(now.saturating_sub(edge) as f64 / 1000.0);
        }
        let accepted = self.streams.set_mirrored(
            &doc.name,
            Mirrored {
                ipns: self.name.to_string(),
                site: root,
                live: doc.live,
                live_text,
                archive_text,
                session,
            },
        );
        if !accepted {
            return Err(MirrorError::Site(format!(
                "a stream named {} already exists here",
                doc.name
            )));
        }
        self.stream = Some(doc.name);
        Ok(())
    }

    async fn pin(&self, cid: &Cid) -> Result<(), MirrorError> {
        let repo = self.repo.clone();
        let cid = *cid;
        tokio::task::spawn_blocking(move || -> Result<(), StoreError> {
            let _guard = repo.writer()?;
            repo.pins.add(&cid, PinKind::Recursive)
        })
        .await
        .map_err(|e| MirrorError::Site(e.to_string()))??;
        Ok(())
    }

    /// Provides what was just pinned; a stopped node has nothing to tell.
    async fn provide(&self, cids: Vec<Cid>) {
        if !cids.is_empty() {
            let _ = self.p2p.provide(cids).await;
        }
    }

    /// Stops providing what was let go.
    async fn withdraw(&self, cids: Vec<Cid>) {
        if !cids.is_empty() {
            let _ = self.p2p.stop_providing(cids).await;
        }
    }

    async fn fetch_dag(&self, root: Cid, max_blocks: usize) -> Result<u64, MirrorError> {
        fetch_dag(&self.repo, &self.bitswap, root, max_blocks).await
    }

    /// Lets go of (unpins) the oldest segments beyond the limits, except
    /// those the live window about to be served (`live_text`) names; the
    /// next collection removes them.
    async fn retain(&mut self, live_text: &str) {
        let (age, bytes) = (self.config.retain, self.config.retain_bytes);
        if age.is_none() && bytes.is_none() {
            return;
        }
        let keep: HashSet<Cid> = media_cids(live_text).into_iter().collect();
        let mut total: u64 = self.held.iter().map(|h| h.bytes).sum();
        let mut drop = Vec::new();
        // Oldest first; what the live window names stays whatever the limits.
        self.held.retain(|h| {
            let too_old = age.is_some_and(|a| h.at.elapsed() > a);
            let too_big = bytes.is_some_and(|b| total > b);
            if (too_old || too_big) && !keep.contains(&h.cid) {
                total -= h.bytes;
                drop.push(h.cid);
                false
            } else {
                true
            }
        });
        if drop.is_empty() {
            return;
        }
        tracing::debug!(name = %self.name, "retention lets go of {} segments", drop.len());
        if let Some(stream) = &self.stream {
            self.streams
                .mirror_forget(stream, &drop.iter().copied().collect());
        }
        self.withdraw(drop.clone()).await;
        let repo = self.repo.clone();
        let r = tokio::task::spawn_blocking(move || -> Result<(), StoreError> {
            for cid in &drop {
                repo.pins.remove(cid)?;
            }
            Ok(())
        })
        .await;
        if let Ok(Err(e)) = r {
            tracing::warn!(name = %self.name, "retention: {e}");
        }
        self.gc_pending = true;
        let kept: HashSet<Cid> = self.held.iter().map(|h| h.cid).collect();
        self.have.retain(|c| kept.contains(c));
    }
}

/// Fetches a DAG that is missing locally (store first, then Bitswap),
/// a level at a time with every block of a level asked for at once (a
/// site's files, a large segment's leaves): round trips, not blocks, set
/// the time on a slow link. Returns the DAG's total block bytes.
pub async fn fetch_dag(
    repo: &Repo,
    bitswap: &Bitswap,
    root: Cid,
    max_blocks: usize,
) -> Result<u64, MirrorError> {
    let mut level = vec![root];
    let mut seen = HashSet::from([root]);
    let mut total = 0u64;
    while !level.is_empty() {
        let blocks =
            futures::future::join_all(level.iter().map(|cid| fetch_block(repo, bitswap, *cid)))
                .await;
        let mut next = Vec::new();
        for (cid, data) in level.iter().zip(blocks) {
            let data = data?;
            total += data.len() as u64;
            for link in crate::store::links(cid, &data)? {
                if seen.insert(link) {
                    next.push(link);
                }
            }
        }
        if seen.len() > max_blocks {
            return Err(MirrorError::Site(format!(
                "{root} has more than {max_blocks} blocks"
            )));
        }
        level = next;
    }
    Ok(total)
}

async fn fetch_block(repo: &Repo, bitswap: &Bitswap, cid: Cid) -> Result<Bytes, MirrorError> {
    let local = {
        let repo = repo.clone();
        tokio::task::spawn_blocking(move || repo.blocks.get(&cid))
            .await
            .map_err(|e| MirrorError::Site(e.to_string()))??
    };
    match local {
        Some(d) => Ok(d),
        None => bitswap.get(&cid).await.map_err(|e| MirrorError::Fetch {
            cid,
            source: Box::new(e),
        }),
    }
}

/// The CIDs of the media a playlist names (`/ipfs/<cid>?...` URIs, init
/// segments included).
pub fn media_cids(playlist: &str) -> Vec<Cid> {
    let mut out = Vec::new();
    for line in playlist.lines() {
        let uri = if let Some(rest) = line.strip_prefix("#EXT-X-MAP:") {
            rest.split("URI=\"")
                .nth(1)
                .and_then(|u| u.split('"').next())
        } else if line.starts_with('#') || line.trim().is_empty() {
            None
        } else {
            Some(line.trim())
        };
        let Some(uri) = uri else { continue };
        let Some(rest) = uri.strip_prefix("/ipfs/") else {
            continue;
        };
        let cid = rest.split(['?', '/', '#']).next().unwrap_or_default();
        if let Ok(cid) = Cid::try_from(cid) {
            if !out.contains(&cid) {
                out.push(cid);
            }
        }
    }
    out
}

/// The sum of a playlist's EXTINF durations, in seconds.
pub fn playlist_duration(playlist: &str) -> f64 {
    playlist
        .lines()
        .filter_map(|l| l.strip_prefix("#EXTINF:"))
        .filter_map(|l| l.split(',').next()?.trim().parse::<f64>().ok())
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_live_edge_is_the_last_date_plus_what_follows() {
        let p = "#EXTM3U\n#EXT-X-PROGRAM-DATE-TIME:2026-01-01T00:00:00.000Z\n#EXTINF:2.000,\na.m4s\n#EXT-X-PROGRAM-DATE-TIME:2026-01-01T00:00:10.000Z\n#EXTINF:2.000,\nb.m4s\n#EXTINF:1.500,\nc.m4s\n";
        let start = crate::ipns::rfc3339::parse("2026-01-01T00:00:10Z")
            .unwrap()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64;
        assert_eq!(live_edge_ms(p), Some(start + 3500));
        assert_eq!(live_edge_ms("#EXTM3U\n#EXTINF:2,\na.ts\n"), None);
    }

    #[test]
    fn playlist_media() {
        let p = "#EXTM3U\n#EXT-X-MAP:URI=\"/ipfs/bafkreigh2akiscaildcqabsyg3dfr6chu3fgpregiymsck7e7aqa4s52zy?filename=init-0.mp4\"\n#EXTINF:2.000,\n/ipfs/bafkreifzjut3te2nhyekklss27nh3k72ysco7y32koao5eei66wof36n5e?filename=000001.m4s\n#EXTINF:2.5,\n/ipfs/bafkreifzjut3te2nhyekklss27nh3k72ysco7y32koao5eei66wof36n5e?filename=000001.m4s\nhttp://elsewhere/x.ts\n";
        let cids = media_cids(p);
        assert_eq!(cids.len(), 2);
        assert_eq!(
            cids[0].to_string(),
            "bafkreigh2akiscaildcqabsyg3dfr6chu3fgpregiymsck7e7aqa4s52zy"
        );
        assert!((playlist_duration(p) - 4.5).abs() < 1e-9);
    }
}
