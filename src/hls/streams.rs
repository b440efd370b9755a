//! Publishing: each stream's pipeline from ingest events to stored,
//! content-addressed segments and playlists.
//!
//! ```text
//! rtmp::server --IngestEvent--> [publish task] segmenter -> fmp4/ts muxer
//!     -> unixfs import (unixfs-v1-2025) -> store + pin -> playlist Session
//!     -> live.m3u8 / archive.m3u8 (rendered, added to the store, archive pinned)
//!     -> live/<name>/<session>.json (so archives survive restarts)
//!     -> the stream's site (hls::site; pinned) -> SiteUpdate broadcast (IPNS publishing)
//! ```
//!
//! One publisher per stream at a time. A publisher that drops (socket closed,
//! idle) and comes back within [`RECONNECT_GRACE`] continues the same session
//! after an `EXT-X-DISCONTINUITY`; one that unpublishes, or does not come
//! back in time, ends it: the archive gets `EXT-X-ENDLIST` and becomes a VOD.
//! An encoder whose link died without a word reconnects while its old
//! connection still looks open: a new publisher with the stream's key takes
//! over from one that has sent nothing for [`LiveConfig::takeover_after`]
//! (ended as [`EndReason::Replaced`]), instead of being refused until the
//! old one's idle timeout.
//!
//! Before a publish's tracks reach us, the server asks
//! [`Publishers::check_tracks`] whether the stream's segment format can
//! carry them (AV1 has no MPEG-TS mapping), so a codec we cannot carry is
//! refused at ingest rather than failing every segment. A refused publish
//! ([`EndReason::Refused`]) leaves nothing of its own behind: frames not yet
//! in a segment are dropped. A session that ends without a segment (refused,
//! or no media at all) is not recorded: no session file, playlist or site,
//! and the API does not list it.

use crate::config::{LiveConfig, SegmentFormat, StreamConfig};
use crate::hls::playlist::{PlaylistConfig, SegmentEntry, Session};
use crate::media::segmenter::{SegmentReady, Segmenter, SegmenterConfig};
use crate::media::{fmp4, ts};
use crate::rtmp::server::{EndReason, IngestEvent, PublishRefused, Publishers};
use crate::store::pins::PinKind;
use crate::store::{Block, Blockstore, Repo, StoreError};
use crate::unixfs::import::{FileImporter, ImportError, ImportOptions, Profile};
use cid::Cid;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use thiserror::Error;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

/// How long a dropped publisher has to come back and continue its session.
pub const RECONNECT_GRACE: Duration = Duration::from_secs(30);
/// Ingest events buffered per publisher before the server waits for us.
const EVENT_QUEUE: usize = 512;

/// Errors of the publishing pipeline.
#[derive(Debug, Error)]
pub enum StreamsError {
    /// The block store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Importing a segment or playlist failed.
    #[error(transparent)]
    Import(#[from] ImportError),
    /// A session file could not be read or written.
    #[error("session file {path}: {source}")]
    SessionFile {
        /// The file.
        path: PathBuf,
        /// What went wrong (encoding errors too, as the JSON encoder
        /// reports them).
        source: std::io::Error,
    },
    /// The muxer refused a segment.
    #[error("muxing segment {seq}: {reason}")]
    Mux {
        /// The segment's sequence number.
        seq: u64,
        /// The muxer's error.
        reason: String,
    },
    /// The playlist refused a segment.
    #[error("playlist: {0}")]
    Playlist(#[from] crate::hls::playlist::PlaylistError),
    /// A blocking task panicked or was cancelled.
    #[error("background task failed: {0}")]
    Task(String),
}

/// What is persisted of a session, as `live/<stream>/<id>.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct SessionRecord {
    id: String,
    started_ms: u64,
    archive_cid: Option<String>,
    /// The site built from this version of the playlists.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    site_cid: Option<String>,
    playlist: Session,
}

/// A stream's site changed: its IPNS name should now point to `root`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SiteUpdate {
    /// The stream's public name.
    pub stream: String,
    /// The site's root directory.
    pub root: Cid,
}

/// Site updates buffered for a slow listener (which then skips to the
/// latest; only the latest matters).
const SITE_UPDATES: usize = 64;

/// A session as the API lists it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SessionInfo {
    /// The session id (its start time, UTC).
    pub id: String,
    /// Start time, RFC 3339 with milliseconds.
    pub started: String,
    /// Media duration so far, in seconds.
    pub duration_s: f64,
    /// Whether the archive is final (`EXT-X-ENDLIST`).
    pub ended: bool,
    /// The CID of the latest archive playlist, if one was stored.
    pub archive_cid: Option<String>,
}

/// A stream as the API lists it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StreamInfo {
    /// The public name.
    pub name: String,
    /// Whether a publisher is sending now.
    pub live: bool,
    /// The segment packaging.
    pub format: SegmentFormat,
    /// The live playlist's path.
    pub live_playlist: String,
    /// The current (or last) session's archive playlist path.
    pub archive_playlist: String,
    /// Sessions, oldest first.
    pub sessions: Vec<SessionInfo>,
    /// The CID of the stream's site (player page and playlists), which its
    /// IPNS name points to.
    pub site_cid: Option<String>,
    /// For a followed stream, the IPNS name it is mirrored from.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mirror_of: Option<String>,
}

/// A session being recorded (live, or waiting for its publisher to return).
struct Pipeline {
    record: SessionRecord,
    segmenter: Segmenter,
    fmp4: Option<fmp4::Muxer>,
    ts: Option<ts::Muxer>,
    init_uri: Option<String>,
    /// Bumped by every publish; a grace timer only ends the session if no
    /// publisher took it over since.
    generation: u64,
}

/// The publish task of a stream's current publisher, as others see it.
struct Publisher {
    id: u64,
    /// When its last ingest event arrived ([`mono_ms`]).
    heard: Arc<AtomicU64>,
    /// Ends the publish (a new publisher takes over).
    kick: CancellationToken,
    /// Turns true when the task is done with the pipeline.
    done: watch::Receiver<bool>,
    /// Its events channel, to see whether events wait in it (a weak
    /// sender, which does not keep the channel open).
    events: mpsc::WeakSender<IngestEvent>,
}

/// What a publish task holds of its own [`Publisher`].
struct PublishTask {
    id: u64,
    heard: Arc<AtomicU64>,
    kick: CancellationToken,
    done: watch::Sender<bool>,
    /// The publisher it takes over from, to let finish first.
    after: Option<watch::Receiver<bool>>,
}

/// Milliseconds on a monotonic clock, for times shared between tasks.
fn mono_ms() -> u64 {
    static START: OnceLock<std::time::Instant> = OnceLock::new();
    START
        .get_or_init(std::time::Instant::now)
        .elapsed()
        .as_millis() as u64
}

#[derive(Default)]
struct StreamState {
    format: SegmentFormat,
    publishing: bool,
    /// Our own publisher while `publishing` (a mirrored stream has none).
    publisher: Option<Publisher>,
    current: Option<Arc<tokio::sync::Mutex<Pipeline>>>,
    /// Every session, oldest first (the current one last).
    sessions: Vec<SessionInfo>,
    live_text: Option<String>,
    archive_text: Option<String>,
    /// The latest site root.
    site: Option<Cid>,
    /// The IPNS name this stream is mirrored from (not ours to publish).
    mirror_of: Option<String>,
}

/// What a mirror knows of a followed stream, from the origin's site.
#[derive(Debug, Clone)]
pub struct Mirrored {
    /// The IPNS name followed.
    pub ipns: String,
    /// The site root the state comes from.
    pub site: Cid,
    /// Whether the origin says it is live.
    pub live: bool,
    /// The origin's live playlist.
    pub live_text: String,
    /// The origin's archive playlist.
    pub archive_text: String,
    /// The session, as the origin's stream.json and archive describe it.
    pub session: SessionInfo,
}

struct Inner {
    repo: Repo,
    live: LiveConfig,
    dir: PathBuf,
    streams: Mutex<BTreeMap<String, StreamState>>,
    sites: tokio::sync::broadcast::Sender<SiteUpdate>,
    site_files: Vec<(&'static str, bytes::Bytes)>,
}

/// The streams of a node: publishing pipelines, sessions and playlists.
#[derive(Clone)]
pub struct Streams {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Streams {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Streams")
            .field("dir", &self.inner.dir)
            .finish_non_exhaustive()
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn rfc3339_ms(ms: u64) -> String {
    humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_millis(ms)).to_string()
}

/// A session id from its start time: `20261123T221500123Z`.
fn session_id(ms: u64) -> String {
    rfc3339_ms(ms)
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .collect()
}

/// A segment's URI: a plain path-gateway URL, with the `filename` parameter
/// (path gateway spec) giving it a media extension, without which players
/// such as ffmpeg refuse a segment URL, and the gateway a content type.
fn media_uri(cid: &Cid, filename: &str) -> String {
    format!("/ipfs/{cid}?filename={filename}")
}

fn info_of(record: &SessionRecord) -> SessionInfo {
    let ms: u64 = record
        .playlist
        .segments()
        .iter()
        .map(|s| s.duration_ms)
        .sum();
    SessionInfo {
        id: record.id.clone(),
        started: rfc3339_ms(record.started_ms),
        duration_s: ms as f64 / 1000.0,
        ended: record.playlist.is_ended(),
        archive_cid: record.archive_cid.clone(),
    }
}

impl Streams {
    /// Opens the streams of `repo`: the configured ones, and every stream
    /// with sessions on disk. Sessions left open by a crash are ended.
    pub fn open(
        repo: Repo,
        live: LiveConfig,
        streams: &[StreamConfig],
    ) -> Result<Self, StreamsError> {
        let dir = repo.dir().join("live");
        std::fs::create_dir_all(&dir).map_err(StoreError::io("create", &dir))?;
        let inner = Arc::new(Inner {
            repo,
            live,
            dir,
            streams: Mutex::new(BTreeMap::new()),
            sites: tokio::sync::broadcast::channel(SITE_UPDATES).0,
            site_files: crate::hls::site::static_files(),
        });
        let this = Self { inner };
        let mut map = BTreeMap::new();
        for s in streams {
            map.insert(
                s.name.clone(),
                StreamState {
                    format: s.format.unwrap_or(this.inner.live.format),
                    ..StreamState::default()
                },
            );
        }
        for entry in std::fs::read_dir(&this.inner.dir)
            .map_err(StoreError::io("list", &this.inner.dir))?
            .flatten()
        {
            let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
                continue;
            };
            if !entry.path().is_dir() {
                continue;
            }
            let state = map.entry(name.clone()).or_insert_with(|| StreamState {
                format: this.inner.live.format,
                ..StreamState::default()
            });
            this.load_sessions(&name, &entry.path(), state)?;
        }
        *this.lock() = map;
        Ok(this)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, StreamState>> {
        self.inner.streams.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn load_sessions(
        &self,
        name: &str,
        dir: &Path,
        state: &mut StreamState,
    ) -> Result<(), StreamsError> {
        let mut records = Vec::new();
        for e in std::fs::read_dir(dir)
            .map_err(StoreError::io("list", dir))?
            .flatten()
        {
            let path = e.path();
            if path.extension().and_then(|x| x.to_str()) != Some("json") {
                continue;
            }
            let text = std::fs::read(&path).map_err(StoreError::io("read", &path))?;
            match serde_json::from_slice::<SessionRecord>(&text) {
                Ok(r) => records.push(r),
                Err(e) => {
                    tracing::warn!(path = %path.display(), "skipping unreadable session: {e}")
                }
            }
        }
        // A session without a segment recorded nothing (older versions kept
        // those of refused publishes): not worth listing.
        records.retain(|r| !r.playlist.segments().is_empty());
        records.sort_by_key(|r| r.started_ms);
        let last = records.len().saturating_sub(1);
        for (i, mut r) in records.into_iter().enumerate() {
            if !r.playlist.is_ended() {
                // The node stopped while this session was live.
                r.playlist.end();
                let archive = r.playlist.archive();
                r.archive_cid = Some(self.inner.add_pinned(archive.as_bytes())?.to_string());
                r.site_cid = None;
            }
            if i == last && r.site_cid.is_none() {
                let old = state.site.take();
                r.site_cid = Some(self.inner.store_site(name, &r, false, old)?.to_string());
            }
            if i == last {
                state.site = r.site_cid.as_deref().and_then(|c| Cid::try_from(c).ok());
            }
            self.inner.persist(name, &r)?;
            state.live_text = Some(r.playlist.live());
            state.archive_text = Some(r.playlist.archive());
            state.sessions.push(info_of(&r));
        }
        Ok(())
    }

    /// Site updates from now on, one per playlist change of any stream.
    pub fn site_updates(&self) -> tokio::sync::broadcast::Receiver<SiteUpdate> {
        self.inner.sites.subscribe()
    }

    /// Every own stream's latest site root (mirrored streams are the
    /// origin's to publish).
    pub fn sites(&self) -> Vec<SiteUpdate> {
        self.lock()
            .iter()
            .filter(|(_, s)| s.mirror_of.is_none())
            .filter_map(|(name, s)| {
                s.site.map(|root| SiteUpdate {
                    stream: name.clone(),
                    root,
                })
            })
            .collect()
    }

    /// Serves a followed stream as its origin does: its playlists, state
    /// and sessions. Refused (false) when an own stream has that name.
    pub fn set_mirrored(&self, name: &str, m: Mirrored) -> bool {
        let mut map = self.lock();
        let s = map.entry(name.to_owned()).or_insert_with(|| StreamState {
            mirror_of: Some(m.ipns.clone()),
            ..StreamState::default()
        });
        if s.mirror_of.as_deref() != Some(m.ipns.as_str()) {
            return false;
        }
        s.publishing = m.live;
        s.live_text = Some(m.live_text);
        s.archive_text = Some(m.archive_text);
        s.site = Some(m.site);
        match s.sessions.iter_mut().find(|x| x.id == m.session.id) {
            Some(x) => *x = m.session,
            None => {
                // A new session ends the previous ones.
                for x in &mut s.sessions {
                    x.ended = true;
                }
                s.sessions.push(m.session);
            }
        }
        true
    }

    /// Marks a followed stream offline (its origin went away).
    pub fn mirror_offline(&self, name: &str) {
        if let Some(s) = self.lock().get_mut(name) {
            if s.mirror_of.is_some() {
                s.publishing = false;
            }
        }
    }

    /// Every stream with its state and sessions.
    pub fn list(&self) -> Vec<StreamInfo> {
        self.lock()
            .iter()
            .map(|(name, s)| StreamInfo {
                name: name.clone(),
                live: s.publishing,
                format: s.format,
                live_playlist: format!("/live/{name}.m3u8"),
                archive_playlist: format!("/live/{name}/archive.m3u8"),
                sessions: s.sessions.clone(),
                site_cid: s.site.map(|c| c.to_string()),
                mirror_of: s.mirror_of.clone(),
            })
            .collect()
    }

    /// The live playlist of the current (or last) session.
    pub fn live_playlist(&self, name: &str) -> Option<String> {
        self.lock().get(name).and_then(|s| s.live_text.clone())
    }

    /// The archive playlist of the current (or last) session, and whether
    /// it is final.
    pub fn archive_playlist(&self, name: &str) -> Option<(String, bool)> {
        self.lock().get(name).and_then(|s| {
            let ended = s.sessions.last().is_some_and(|i| i.ended);
            s.archive_text.clone().map(|t| (t, ended))
        })
    }

    fn segmenter_config(&self) -> SegmenterConfig {
        let target = self.inner.live.segment_target;
        SegmenterConfig {
            target,
            // Long enough for encoders whose keyframe interval is a little
            // above the target, short enough to bound latency and memory.
            max_duration: (target * 3).max(Duration::from_secs(6)),
            ..SegmenterConfig::default()
        }
    }

    fn new_pipeline(&self, format: SegmentFormat) -> Result<Pipeline, StreamsError> {
        let seg = self.segmenter_config();
        let segmenter = Segmenter::new(&seg).map_err(|e| StreamsError::Mux {
            seq: 0,
            reason: e.to_string(),
        })?;
        let playlist = Session::new(PlaylistConfig {
            format,
            target_duration_secs: seg.target_duration_secs(),
            live_window: self.inner.live.window.max(1),
            ..PlaylistConfig::default()
        })?;
        let started_ms = now_ms();
        Ok(Pipeline {
            record: SessionRecord {
                id: session_id(started_ms),
                started_ms,
                archive_cid: None,
                site_cid: None,
                playlist,
            },
            segmenter,
            fmp4: None,
            ts: None,
            init_uri: None,
            generation: 0,
        })
    }

    async fn run_publish(
        self,
        name: String,
        pipeline: Arc<tokio::sync::Mutex<Pipeline>>,
        mut events: mpsc::Receiver<IngestEvent>,
        mut task: PublishTask,
    ) {
        if let Some(after) = task.after.as_mut() {
            // Its last frames close the timeline ours continues after a
            // discontinuity. An error means it is gone: as good as done.
            let _ = after.wait_for(|done| *done).await;
        }
        let generation = {
            let mut p = pipeline.lock().await;
            p.generation += 1;
            p.generation
        };
        let mut end = EndReason::Disconnected;
        loop {
            // Replaced only while nothing waits in the channel (see
            // `begin`): what comes after the kick is the old publisher
            // waking up, and is dropped.
            let event = tokio::select! {
                biased;
                () = task.kick.cancelled() => {
                    end = EndReason::Replaced;
                    break;
                }
                e = events.recv() => match e {
                    Some(e) => e,
                    None => break,
                },
            };
            // When the pipeline took it in; events still waiting count
            // as heard too (see `begin`).
            task.heard.store(mono_ms(), Ordering::Relaxed);
            let mut p = pipeline.lock().await;
            match event {
                IngestEvent::Tracks(t) => p.segmenter.set_tracks(t),
                IngestEvent::Frame(f) => p.segmenter.push(f, now_ms()),
                IngestEvent::End(reason) => {
                    if matches!(reason, EndReason::Refused(_)) {
                        p.segmenter.discard();
                    } else {
                        p.segmenter.finish();
                    }
                    end = reason;
                }
            }
            while let Some(seg) = p.segmenter.poll_segment() {
                let seq = seg.seq;
                if let Err(e) = self.publish_segment(&name, &mut p, seg).await {
                    tracing::warn!(stream = %name, seq, "segment dropped: {e}");
                }
            }
        }
        let segments = {
            let mut p = pipeline.lock().await;
            if !matches!(end, EndReason::Refused(_)) {
                p.segmenter.finish();
            }
            while let Some(seg) = p.segmenter.poll_segment() {
                if let Err(e) = self.publish_segment(&name, &mut p, seg).await {
                    tracing::warn!(stream = %name, "segment dropped: {e}");
                }
            }
            p.record.playlist.segments().len()
        };
        // The server sees the channel closed and drops a replaced publisher.
        drop(events);
        if let Some(s) = self.lock().get_mut(&name) {
            if s.publisher.as_ref().is_some_and(|p| p.id == task.id) {
                s.publishing = false;
                s.publisher = None;
            }
        }
        let _ = task.done.send(true);
        match end {
            EndReason::Replaced => {
                tracing::info!(stream = %name, "publisher replaced; the session continues");
            }
            EndReason::Unpublished | EndReason::Error(_) => {
                tracing::info!(stream = %name, "publisher stopped; session ended");
                self.end_session(&name, &pipeline).await;
            }
            EndReason::Refused(_) if segments == 0 => {
                self.end_session(&name, &pipeline).await;
            }
            EndReason::Refused(_) | EndReason::Disconnected | EndReason::IdleTimeout => {
                tracing::info!(
                    stream = %name,
                    "publisher gone; the session continues if it returns within {}s",
                    RECONNECT_GRACE.as_secs()
                );
                tokio::time::sleep(RECONNECT_GRACE).await;
                let still_ours = pipeline.lock().await.generation == generation;
                let idle = !self.lock().get(&name).is_some_and(|s| s.publishing);
                if still_ours && idle {
                    self.end_session(&name, &pipeline).await;
                }
            }
        }
    }

    /// Ends the session with `EXT-X-ENDLIST`; one without a segment is
    /// dropped instead, as if it had never begun (nothing of it was stored).
    async fn end_session(&self, name: &str, pipeline: &Arc<tokio::sync::Mutex<Pipeline>>) {
        let mut p = pipeline.lock().await;
        if p.record.playlist.segments().is_empty() {
            tracing::info!(stream = %name, session = %p.record.id, "no media recorded; session dropped");
        } else {
            p.record.playlist.end();
            if let Err(e) = self.store_playlists(name, &mut p).await {
                tracing::warn!(stream = %name, "storing the final archive failed: {e}");
            }
        }
        if let Some(s) = self.lock().get_mut(name) {
            if s.current.as_ref().is_some_and(|c| Arc::ptr_eq(c, pipeline)) {
                s.current = None;
            }
        }
    }

    /// Muxes, stores and pins one segment, then updates the playlists.
    async fn publish_segment(
        &self,
        name: &str,
        p: &mut Pipeline,
        seg: SegmentReady,
    ) -> Result<(), StreamsError> {
        let mux_err = |e: &dyn std::fmt::Display| StreamsError::Mux {
            seq: seg.seq,
            reason: e.to_string(),
        };
        let format = p.record.playlist.config().format;
        let bytes = match format {
            SegmentFormat::Fmp4 => {
                if p.fmp4.as_ref().map(fmp4::Muxer::tracks) != Some(&seg.tracks) {
                    let m = fmp4::Muxer::new(&seg.tracks).map_err(|e| mux_err(&e))?;
                    let init = m.init_segment().map_err(|e| mux_err(&e))?;
                    let cid = self.inner.clone().add_async(init, true).await?;
                    p.init_uri = Some(media_uri(&cid, &format!("init-{}.mp4", seg.seq)));
                    p.fmp4 = Some(m);
                }
                let next = fmp4::NextDts {
                    video_ms: Some(seg.start_dts_ms + seg.duration_ms),
                    audio_ms: None,
                };
                let m = p.fmp4.as_mut().expect("muxer set above");
                m.segment(&seg.frames, next).map_err(|e| mux_err(&e))?
            }
            SegmentFormat::Ts => {
                let stale = p.ts.is_none() || seg.discontinuity;
                if stale {
                    p.ts = Some(ts::Muxer::new(&seg.tracks).map_err(|e| mux_err(&e))?);
                }
                let m = p.ts.as_mut().expect("muxer set above");
                m.segment(&seg.frames).map_err(|e| mux_err(&e))?
            }
        };
        let len = bytes.len() as u64;
        let cid = self.inner.clone().add_async(bytes, true).await?;
        let init = match format {
            SegmentFormat::Fmp4 => p.init_uri.clone(),
            SegmentFormat::Ts => None,
        };
        let ext = match format {
            SegmentFormat::Fmp4 => "m4s",
            SegmentFormat::Ts => "ts",
        };
        let uri = media_uri(&cid, &format!("{:06}.{ext}", seg.seq));
        let entry = SegmentEntry::new(&seg, uri, init, len);
        p.record.playlist.push(entry)?;
        self.store_playlists(name, p).await
    }

    /// Renders both playlists, adds them to the store (the archive pinned,
    /// replacing the previous version's pin), persists the session and
    /// publishes the texts to HTTP readers.
    async fn store_playlists(&self, name: &str, p: &mut Pipeline) -> Result<(), StreamsError> {
        let live = p.record.playlist.live();
        let archive = p.record.playlist.archive();
        self.inner
            .clone()
            .add_async(live.clone().into_bytes().into(), false)
            .await?;
        let archive_cid = self
            .inner
            .clone()
            .add_async(archive.clone().into_bytes().into(), true)
            .await?;
        if let Some(old) = p.record.archive_cid.replace(archive_cid.to_string()) {
            if old != archive_cid.to_string() {
                if let Ok(old) = Cid::try_from(old.as_str()) {
                    self.inner.repo.pins.remove(&old)?;
                }
            }
        }
        let old_site = p
            .record
            .site_cid
            .as_deref()
            .and_then(|c| Cid::try_from(c).ok());
        let record = p.record.clone();
        let inner = self.inner.clone();
        let owned = name.to_owned();
        let site = tokio::task::spawn_blocking(move || -> Result<Cid, StreamsError> {
            let site = inner.store_site(&owned, &record, live_for_site(&record), old_site)?;
            let mut record = record;
            record.site_cid = Some(site.to_string());
            inner.persist(&owned, &record)?;
            Ok(site)
        })
        .await
        .map_err(|e| StreamsError::Task(e.to_string()))??;
        p.record.site_cid = Some(site.to_string());
        let _ = self.inner.sites.send(SiteUpdate {
            stream: name.to_owned(),
            root: site,
        });
        let info = info_of(&p.record);
        if let Some(s) = self.lock().get_mut(name) {
            s.live_text = Some(live);
            s.archive_text = Some(archive);
            s.site = Some(site);
            match s.sessions.last_mut() {
                Some(last) if last.id == info.id => *last = info,
                _ => s.sessions.push(info),
            }
        }
        Ok(())
    }
}

/// Whether the site of this record should say "live".
fn live_for_site(record: &SessionRecord) -> bool {
    !record.playlist.is_ended()
}

impl Inner {
    /// Builds the stream's site for this version of the session, stores and
    /// pins it, and unpins the previous version (`old`).
    fn store_site(
        &self,
        name: &str,
        record: &SessionRecord,
        live: bool,
        old: Option<Cid>,
    ) -> Result<Cid, StreamsError> {
        let doc = crate::hls::site::StreamDoc {
            name: name.to_owned(),
            live,
            session: record.id.clone(),
            started: rfc3339_ms(record.started_ms),
            archive_cid: record.archive_cid.clone().unwrap_or_default(),
        };
        let mut blocks = crate::hls::site::Blocks::default();
        let root = crate::hls::site::build(
            &self.site_files,
            &record.playlist.live(),
            &record.playlist.archive(),
            &doc,
            &mut blocks,
        )?;
        let _guard = self.repo.writer()?;
        self.repo.blocks.put_many(&blocks.0)?;
        self.repo.pins.add(&root, PinKind::Recursive)?;
        if let Some(old) = old.filter(|o| *o != root) {
            self.repo.pins.remove(&old)?;
        }
        Ok(root)
    }

    /// Adds bytes as a UnixFS file with the `unixfs-v1-2025` profile (a
    /// segment up to 1 MiB is one raw block a browser can check with one
    /// SHA-256), optionally pinned.
    fn add_pinned_opt(&self, bytes: &[u8], pin: bool) -> Result<Cid, StreamsError> {
        let mut opts = ImportOptions::from_profile(Profile::UnixfsV1_2025);
        // Segments are small: spawning hash threads would cost more than it saves.
        opts.hash_threads = 0;
        let mut blocks: Vec<Block> = Vec::new();
        let _guard = self.repo.writer()?;
        let mut file = FileImporter::new(&opts, &mut blocks)?;
        file.write(bytes)?;
        let root = file.finish()?;
        self.repo.blocks.put_many(&blocks)?;
        if pin {
            self.repo.pins.add(&root.cid, PinKind::Recursive)?;
        }
        Ok(root.cid)
    }

    fn add_pinned(&self, bytes: &[u8]) -> Result<Cid, StreamsError> {
        self.add_pinned_opt(bytes, true)
    }

    async fn add_async(
        self: Arc<Self>,
        bytes: bytes::Bytes,
        pin: bool,
    ) -> Result<Cid, StreamsError> {
        tokio::task::spawn_blocking(move || self.add_pinned_opt(&bytes, pin))
            .await
            .map_err(|e| StreamsError::Task(e.to_string()))?
    }

    /// Writes the session record atomically (temp file, fsync, rename).
    fn persist(&self, name: &str, record: &SessionRecord) -> Result<(), StreamsError> {
        let dir = self.dir.join(name);
        std::fs::create_dir_all(&dir).map_err(StoreError::io("create", &dir))?;
        let path = dir.join(format!("{}.json", record.id));
        let tmp = dir.join(format!(".{}.json.tmp", record.id));
        let text = serde_json::to_vec(record).map_err(|e| StreamsError::SessionFile {
            path: path.clone(),
            source: e.into(),
        })?;
        let write = || -> std::io::Result<()> {
            use std::io::Write;
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(&text)?;
            f.sync_data()?;
            std::fs::rename(&tmp, &path)
        };
        write().map_err(|source| StreamsError::SessionFile {
            path: path.clone(),
            source,
        })
    }
}

impl Publishers for Streams {
    fn check_tracks(&self, stream: &str, tracks: &crate::media::Tracks) -> Result<(), String> {
        let format = self
            .lock()
            .get(stream)
            .map_or(self.inner.live.format, |s| s.format);
        // The muxers refuse what their format cannot express; the init
        // segment and a TS muxer are cheap to make once per track change.
        match format {
            SegmentFormat::Fmp4 => fmp4::init_segment(tracks)
                .map(drop)
                .map_err(|e| e.to_string()),
            SegmentFormat::Ts => ts::Muxer::new(tracks).map(drop).map_err(|e| e.to_string()),
        }
    }

    fn begin(
        &self,
        stream: &str,
        peer: std::net::SocketAddr,
    ) -> Result<mpsc::Sender<IngestEvent>, PublishRefused> {
        let mut map = self.lock();
        let format = self.inner.live.format;
        let state = map.entry(stream.to_owned()).or_insert_with(|| StreamState {
            format,
            ..StreamState::default()
        });
        let mut after = None;
        if state.publishing {
            let takeover = self.inner.live.takeover_after;
            let Some(old) = state.publisher.as_ref() else {
                // Mirrored from elsewhere: never ours to publish.
                return Err(PublishRefused::Busy(stream.to_owned()));
            };
            let silent = mono_ms().saturating_sub(old.heard.load(Ordering::Relaxed));
            // Events waiting for a busy pipeline are not silence.
            let queued = old
                .events
                .upgrade()
                .is_some_and(|tx| tx.capacity() < tx.max_capacity());
            if takeover.is_zero() || queued || u128::from(silent) < takeover.as_millis() {
                return Err(PublishRefused::Busy(stream.to_owned()));
            }
            tracing::info!(
                stream,
                %peer,
                silent_ms = silent,
                "the publisher has sent nothing for a while; the new one takes over"
            );
            old.kick.cancel();
            after = Some(old.done.clone());
        }
        let pipeline = match &state.current {
            Some(p) => {
                // The last publish ended with `Segmenter::finish`, so the
                // frames that follow open a new timeline after a
                // discontinuity.
                tracing::info!(stream, %peer, "publisher returned; continuing the session");
                p.clone()
            }
            None => {
                let p = self
                    .new_pipeline(state.format)
                    .map_err(|e| PublishRefused::Other(e.to_string()))?;
                tracing::info!(stream, %peer, session = %p.record.id, "publishing started");
                let p = Arc::new(tokio::sync::Mutex::new(p));
                state.current = Some(p.clone());
                p
            }
        };
        static IDS: AtomicU64 = AtomicU64::new(0);
        let (done_tx, done_rx) = watch::channel(false);
        let task = PublishTask {
            id: IDS.fetch_add(1, Ordering::Relaxed),
            heard: Arc::new(AtomicU64::new(mono_ms())),
            kick: CancellationToken::new(),
            done: done_tx,
            after,
        };
        let (tx, rx) = mpsc::channel(EVENT_QUEUE);
        state.publishing = true;
        state.publisher = Some(Publisher {
            id: task.id,
            heard: task.heard.clone(),
            kick: task.kick.clone(),
            done: done_rx,
            events: tx.downgrade(),
        });
        tokio::spawn(
            self.clone()
                .run_publish(stream.to_owned(), pipeline, rx, task),
        );
        Ok(tx)
    }
}

#[cfg(test)]
mod tests;
