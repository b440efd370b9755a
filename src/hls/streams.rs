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
//! This module holds the handle ([`Streams`]) and what the API and the
//! playlist routes read; `publish` is a publish task, from the first ingest
//! event to the end of the session; `session` is what is kept of each
//! session on disk and stored for it.
//!
//! One publisher per stream at a time. A publisher that drops (socket closed,
//! idle) and comes back within [`RECONNECT_GRACE`] continues the same session
//! after an `EXT-X-DISCONTINUITY`; one that unpublishes, or does not come
//! back in time, ends it: the archive gets `EXT-X-ENDLIST` and becomes a VOD.
//! An encoder whose link died without a word reconnects while its old
//! connection still looks open: a new publisher with the stream's key takes
//! over from one that has sent nothing for [`LiveConfig::takeover_after`]
//! (ended as [`EndReason::Replaced`](crate::rtmp::server::EndReason::Replaced)), instead of being refused until the
//! old one's idle timeout.
//!
//! Before a publish's tracks reach us, the server asks
//! [`Publishers::check_tracks`](crate::rtmp::server::Publishers::check_tracks) whether the stream's segment format can
//! carry them (AV1 has no MPEG-TS mapping), so a codec we cannot carry is
//! refused at ingest rather than failing every segment. A refused publish
//! ([`EndReason::Refused`](crate::rtmp::server::EndReason::Refused)) leaves nothing of its own behind: frames not yet
//! in a segment are dropped. A session that ends without a segment (refused,
//! or no media at all) is not recorded: no session file, playlist or site,
//! and the API does not list it.
//!
//! Storing can fail (a full disk): a segment that could not be stored stays
//! in the playlists as an `EXT-X-GAP`, [`StorageState`] tells the API (and
//! the metrics), and what the API names (archive, site) is only replaced
//! once the new version is stored, pinned and persisted. A run of failures
//! is logged once as it starts and once as it ends, and the publisher
//! hears of both through the watch in its
//! [`PublishHandle`](crate::rtmp::server::PublishHandle) (the RTMP server
//! sends an `onStatus`). `retention` lets old media of the node's own
//! streams go by each stream's `retain` / `retain_bytes` and the data
//! directory's free space, the oldest first across streams.

use crate::config::{LiveConfig, StreamConfig};
use crate::media::SegmentFormat;
use crate::store::{Repo, StoreError};
use crate::unixfs::import::ImportError;
use cid::Cid;
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use thiserror::Error;

/// How long a dropped publisher has to come back and continue its session.
pub const RECONNECT_GRACE: Duration = Duration::from_secs(30);
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

/// Part announcements buffered for a slow announcer (which then skips the
/// oldest; a mirror that misses one waits for the next segment).
const ANNOUNCEMENTS: usize = 256;

/// A session as the API lists it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SessionInfo {
    /// The session id (its start time, UTC).
    pub id: String,
    /// Start time, RFC 3339 with milliseconds.
    pub started: String,
    /// Media duration so far, in seconds: stored media only, every
    /// second of it fetchable (gaps are not counted).
    pub duration_s: f64,
    /// Time the playlists mark as `EXT-X-GAP`: segments cut but not stored
    /// (the disk was full), in seconds.
    pub gap_s: f64,
    /// How many segments are gaps.
    pub gaps: u64,
    /// Whether the archive is final (`EXT-X-ENDLIST`).
    pub ended: bool,
    /// The CID of the latest archive playlist, if one was stored.
    pub archive_cid: Option<String>,
    /// Bytes of its stored media (segments, not counting init segments).
    pub bytes: u64,
    /// When its media ends, in milliseconds since the Unix epoch (what
    /// retention by age goes by; `started` and `duration_s` tell it too).
    #[serde(skip)]
    pub media_end_ms: u64,
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
    /// The keyframe interval of the current (or last) publisher as
    /// measured (between its last two keyframes), in seconds; absent until
    /// two arrived.
    pub keyframe_interval_s: Option<f64>,
    /// What the publisher should change, in words for its user (a keyframe
    /// interval longer than the segment target, say).
    pub warnings: Vec<String>,
    /// Storing this stream's media: whether it works now, and what failed.
    pub storage: StorageState,
}

/// Keyframe intervals up to this much past the segment target are what
/// encoders give when set to it (frame timing, rounding).
const KEYFRAME_SLACK: Duration = Duration::from_millis(100);

/// The warning for a keyframe interval of `interval` with segments aiming
/// for `target`: segments start at keyframes, so a longer interval makes
/// longer segments, and viewers wait that much more.
pub fn keyframe_warning(interval: Duration, target: Duration) -> Option<String> {
    (interval > target + KEYFRAME_SLACK).then(|| {
        format!(
            "keyframe interval is {:.1} s, longer than the {:.0} s segment target: segments \
             last {:.1} s and viewers wait longer; set the encoder's keyframe interval to 1-2 s \
             (OBS: Settings > Output > Keyframe Interval)",
            interval.as_secs_f64(),
            target.as_secs_f64(),
            interval.as_secs_f64()
        )
    })
}

/// How storing a stream's segments and playlists goes, for operators (the
/// API) and metrics: plain counters since the node started.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct StorageState {
    /// Whether storing fails now (the stream's media or playlists are not
    /// being kept): from a failure until a segment, or with the publisher
    /// gone a final archive, is stored again.
    pub failing: bool,
    /// The last storage error, while `failing`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Segments cut but not stored (each a gap in its playlists).
    pub segments_dropped: u64,
    /// Playlist versions (and session files) that could not be stored; the
    /// API keeps naming the last version that was.
    pub playlists_failed: u64,
}

#[derive(Default)]
struct StreamState {
    format: SegmentFormat,
    /// LL-HLS part target (zero: plain HLS).
    part_target: Duration,
    /// The current session's low-latency view, while it has parts.
    ll: Option<Arc<tokio::sync::watch::Sender<Arc<LlView>>>>,
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
    /// A mirrored stream's low-latency copy, from its origin's part
    /// announcements.
    mirror_ll: Option<mirrored::MirrorLl>,
    /// Ingest and segmenter figures, for the dashboard.
    ingest: IngestStats,
    /// The keyframe interval of the current (or last) publisher, once
    /// measured; kept after it stops, so that its user can still read the
    /// warning, and forgotten when the next one starts.
    keyframe_interval_ms: Option<u64>,
    storage: StorageState,
    /// While storing fails: since when, and the figures before the run of
    /// failures (for the line that ends it).
    failing_since: Option<(std::time::Instant, StorageState)>,
    /// The storage error while storing fails, for the publisher (see
    /// [`crate::rtmp::server::PublishHandle::storage`]).
    storage_tx: tokio::sync::watch::Sender<Option<String>>,
    /// Retention limits (`[[streams]]` `retain`, `retain_bytes`).
    retain: Option<Duration>,
    retain_bytes: Option<u64>,
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
    /// Set once, before the first publish, when metrics are on.
    metrics: std::sync::OnceLock<metrics::Metrics>,
    /// Requests held for low-latency playlists and parts, at most
    /// [`lowlatency::MAX_HELD`].
    held: std::sync::atomic::AtomicUsize,
    /// Taken while retention plans and lets go (see `retention`).
    retention: tokio::sync::Mutex<()>,
    /// Own streams' parts and closed segments, for part announcements.
    announcements: tokio::sync::broadcast::Sender<(String, crate::ipns::announce::Media)>,
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

impl Streams {
    /// Opens the streams of `repo`: the configured ones, and every stream
    /// with sessions on disk. Sessions left open by a crash are ended, or,
    /// when the crash was less than [`RECONNECT_GRACE`] ago, wait that
    /// long for their publisher to return (this needs a tokio runtime;
    /// without one they are ended at once).
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
            metrics: std::sync::OnceLock::new(),
            held: std::sync::atomic::AtomicUsize::new(0),
            retention: tokio::sync::Mutex::new(()),
            announcements: tokio::sync::broadcast::channel(ANNOUNCEMENTS).0,
        });
        let this = Self { inner };
        let mut map = BTreeMap::new();
        let mut resumed = Vec::new();
        for s in streams {
            map.insert(
                s.name.to_string(),
                StreamState {
                    format: s.format.unwrap_or(this.inner.live.format),
                    part_target: s.part_target.unwrap_or(this.inner.live.part_target),
                    retain: s.retain,
                    retain_bytes: s.retain_bytes,
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
                part_target: this.inner.live.part_target,
                ..StreamState::default()
            });
            if let Some(r) = this.load_sessions(&name, &entry.path(), state)? {
                resumed.push((name, r));
            }
        }
        *this.lock() = map;
        for (name, (pipeline, wait)) in resumed {
            tokio::spawn(this.clone().end_unclaimed(name, pipeline, wait));
        }
        Ok(this)
    }

    /// Records ingest and segments in `registry` from now on (call before
    /// publishers connect; a second call is ignored).
    pub fn register_metrics(&self, registry: &mut prometheus_client::registry::Registry) {
        if self.inner.metrics.get().is_none() {
            let _ = self
                .inner
                .metrics
                .set(metrics::Metrics::new(registry, self));
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, StreamState>> {
        self.inner.streams.lock().unwrap_or_else(|e| e.into_inner())
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

    /// Whether `root` is an own stream's latest site (not a mirrored
    /// one's: that is the origin's content).
    pub fn is_own_site(&self, root: &Cid) -> bool {
        self.lock()
            .values()
            .any(|s| s.mirror_of.is_none() && s.site.as_ref() == Some(root))
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
        if let Some(ll) = &mut s.mirror_ll {
            if ll.backfill(Some(&m.live_text), Some(&m.session.id)) {
                ll.render(name);
            }
            // Else the plain playlist, until the copy lists its newest.
            s.ll = ll.serves(Some(&m.live_text)).then(|| ll.view.clone());
        }
        s.live_text = Some(m.live_text);
        s.archive_text = Some(m.archive_text);
        s.site = Some(m.site);
        if m.session.ended {
            self.mirror_ll_end(s, name, &m.session.id);
        }
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
                keyframe_interval_s: s.keyframe_interval_ms.map(|ms| ms as f64 / 1000.0),
                warnings: s
                    .keyframe_interval_ms
                    .and_then(|ms| {
                        keyframe_warning(Duration::from_millis(ms), self.inner.live.segment_target)
                    })
                    .into_iter()
                    .collect(),
                storage: s.storage.clone(),
            })
            .collect()
    }

    /// Each stream's ingest and segmenter figures.
    pub fn ingest_stats(&self) -> Vec<(String, IngestStats)> {
        self.lock()
            .iter()
            .map(|(name, s)| {
                // One measurement of the keyframe interval: the segmenter's,
                // which the API and its warning show too.
                let mut ingest = s.ingest.clone();
                ingest.keyframe_interval_s = s.keyframe_interval_ms.map(|ms| ms as f64 / 1000.0);
                (name.clone(), ingest)
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
}

mod ingest;
mod lowlatency;
pub mod metrics;
mod mirrored;
mod publish;
mod retention;
mod session;

pub use ingest::IngestStats;
pub use lowlatency::{hint_uri, HeldSlot, LlView, MAX_HELD};

use publish::{Pipeline, Publisher};

#[cfg(test)]
mod tests;
