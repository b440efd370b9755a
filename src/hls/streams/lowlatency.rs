//! Low-latency HLS of a publish: parts stored as they are cut, the
//! segment made of them, and the LL-HLS live playlist that blocking
//! reloads wait on.
//!
//! ```text
//! Segmenter --PartReady--> fmp4 moof+mdat --> one raw block (CIDv1), pinned
//!     --> playlist::ll::Parts --> LlView (watch) --> http::live (blocking reload, hints)
//! Segmenter --SegmentReady--> UnixFS file over the parts' blocks (balanced,
//!     raw leaves; only the root is new) pinned, the parts' own pins dropped
//! ```
//!
//! A segment's bytes are stored once: its file's leaves are exactly its
//! parts' blocks, in order, so a peer that fetched the parts lacks only the
//! root. The view is a `tokio::sync::watch` value: a held request is one
//! waiter on it, and every change (a part, a segment, the end) wakes them.

use super::publish::{media_uri, Pipeline};
use super::{Inner, Streams, StreamsError};
use crate::hls::playlist::ll::{PartEntry, Parts, Position};
use crate::hls::playlist::Session;
use crate::ipns::announce::Media;
use crate::media::fmp4;
use crate::media::segmenter::{PartReady, SegmentReady};
use crate::store::pins::PinKind;
use crate::store::{Block, Blockstore, RAW};
use crate::unixfs::import::{FileImporter, ImportOptions, Profile};
use bytes::Bytes;
use cid::Cid;
use std::collections::VecDeque;
use std::sync::Arc;
use tokio::sync::watch;

/// Parts whose bytes the view keeps for preload hints: a hint asks for the
/// next part, so a few cover a client a little behind.
pub(super) const RECENT_PARTS: usize = 8;

/// What HTTP serves of a low-latency stream, replaced at every change.
#[derive(Debug, Clone)]
pub struct LlView {
    /// Where the playlist stands.
    pub position: Position,
    /// Whether the session ended (no part will come).
    pub ended: bool,
    /// `EXT-X-TARGETDURATION` in seconds.
    pub target_duration_secs: u64,
    /// The part target in milliseconds.
    pub part_target_ms: u64,
    /// The full playlist.
    pub text: Arc<str>,
    /// The delta playlist (`_HLS_skip=YES`).
    pub delta: Arc<str>,
    /// The newest parts' bytes: (media sequence number, index, bytes).
    pub recent: VecDeque<(u64, u32, Bytes)>,
}

impl LlView {
    /// Nothing listed yet.
    pub(super) fn empty() -> Self {
        Self {
            position: Position {
                next_msn: 0,
                parts: 0,
            },
            ended: false,
            target_duration_secs: 1,
            part_target_ms: 1,
            text: Arc::from(""),
            delta: Arc::from(""),
            recent: VecDeque::new(),
        }
    }
}

/// A pipeline's low-latency state.
pub(super) struct LowLatency {
    parts: Parts,
    /// The open segment's stored parts: (segmenter seq, CID, length).
    open: Vec<(u64, Cid, u64)>,
    recent: VecDeque<(u64, u32, Bytes)>,
    pub(super) view: Arc<watch::Sender<Arc<LlView>>>,
}

impl LowLatency {
    pub(super) fn new(part_target_ms: u64, target_duration_secs: u64) -> Self {
        let view = LlView {
            position: Position {
                next_msn: 0,
                parts: 0,
            },
            ended: false,
            target_duration_secs,
            part_target_ms,
            text: Arc::from(""),
            delta: Arc::from(""),
            recent: VecDeque::new(),
        };
        Self {
            parts: Parts::new(part_target_ms),
            open: Vec::new(),
            recent: VecDeque::with_capacity(RECENT_PARTS),
            view: Arc::new(watch::channel(Arc::new(view)).0),
        }
    }
}

impl Inner {
    /// Stores a part as one raw block, pinned until its segment's file
    /// holds it.
    fn put_part(&self, bytes: Bytes) -> Result<Cid, StreamsError> {
        let block = Block::new(cid::Version::V1, RAW, bytes);
        let _guard = self.repo.writer()?;
        self.repo.blocks.put(&block)?;
        self.repo.pins.add(&block.cid, PinKind::Direct)?;
        Ok(block.cid)
    }

    /// Makes a closed segment's file from its stored parts: the balanced
    /// layout of `unixfs-v1-2025` with the parts as its leaves. Pins the
    /// file and drops the parts' own pins.
    fn close_parts(&self, leaves: &[(Cid, u64)]) -> Result<Cid, StreamsError> {
        let opts = ImportOptions::from_profile(Profile::UnixfsV1_2025);
        let mut blocks: Vec<Block> = Vec::new();
        let _guard = self.repo.writer()?;
        let mut file = FileImporter::new(&opts, &mut blocks)?;
        for (cid, len) in leaves {
            file.link_leaf(*cid, *len)?;
        }
        let root = file.finish()?;
        self.repo.blocks.put_many(&blocks)?;
        self.repo.pins.add(&root.cid, PinKind::Recursive)?;
        for (cid, _) in leaves {
            if *cid != root.cid {
                self.repo.pins.remove(cid)?;
            }
        }
        Ok(root.cid)
    }

    fn unpin_parts(&self, parts: &[(u64, Cid, u64)]) -> Result<(), StreamsError> {
        for (_, cid, _) in parts {
            self.repo.pins.remove(cid)?;
        }
        Ok(())
    }
}

/// The view of `session` with `parts`: what an origin's pipeline and a
/// mirror's copy both serve.
pub(super) fn render_view(
    name: &str,
    session: &Session,
    parts: &Parts,
    recent: &VecDeque<(u64, u32, Bytes)>,
) -> LlView {
    let hint = |msn, index| hint_uri(name, msn, index);
    LlView {
        position: parts.position(session),
        ended: session.is_ended(),
        target_duration_secs: session.target_duration_secs(),
        part_target_ms: parts.part_target_ms(),
        text: parts.render(session, &hint, false).into(),
        delta: parts.render(session, &hint, true).into(),
        recent: recent.clone(),
    }
}

/// The CID of a `/ipfs/<cid>?...` URI.
pub(super) fn uri_cid(uri: &str) -> Option<Cid> {
    let rest = uri.strip_prefix("/ipfs/")?;
    Cid::try_from(rest.split(['?', '/']).next()?).ok()
}

/// Where a preload hint points: a node-local URL that answers once the part
/// exists (see `http::live`).
pub fn hint_uri(stream: &str, msn: u64, index: u32) -> String {
    format!("/live/{stream}/parts/{msn}.{index}.m4s")
}

impl Streams {
    /// Publishes what the segmenter finished, in stream order: each
    /// segment's parts, then the segment.
    pub(super) async fn drain_ready(
        &self,
        name: &str,
        p: &mut Pipeline,
        counters: Option<&super::metrics::StreamCounters>,
    ) {
        let mut parts: VecDeque<PartReady> =
            std::iter::from_fn(|| p.segmenter.poll_part()).collect();
        let mut segments: VecDeque<SegmentReady> =
            std::iter::from_fn(|| p.segmenter.poll_segment()).collect();
        loop {
            let part_first = match (parts.front(), segments.front()) {
                (Some(part), Some(seg)) => part.seq <= seg.seq,
                (Some(_), None) => true,
                (None, Some(_)) => false,
                (None, None) => break,
            };
            if part_first {
                let part = parts.pop_front().expect("a part is there");
                let (seq, index) = (part.seq, part.index);
                match self.publish_part(name, p, part).await {
                    Ok(true) => {
                        if let Some(c) = counters {
                            c.part();
                        }
                    }
                    Ok(false) => {}
                    Err(e) => tracing::warn!(stream = %name, seq, index, "part dropped: {e}"),
                }
            } else {
                let seg = segments.pop_front().expect("a segment is there");
                self.publish_counted(name, p, seg, counters).await;
            }
        }
    }

    /// Muxes and stores one part and lists it; false when the stream has
    /// no low-latency playlist.
    async fn publish_part(
        &self,
        name: &str,
        p: &mut Pipeline,
        part: PartReady,
    ) -> Result<bool, StreamsError> {
        if p.ll.is_none() {
            return Ok(false);
        }
        let mux_err = |e: &dyn std::fmt::Display| StreamsError::Mux {
            seq: part.seq,
            reason: e.to_string(),
        };
        self.ensure_fmp4_muxer(p, &part.tracks, part.seq).await?;
        let next = fmp4::NextDts {
            video_ms: part.next_video_ms,
            audio_ms: part.next_audio_ms,
        };
        let m = p.fmp4.as_mut().expect("muxer set above");
        let bytes = m.segment(&part.frames, next).map_err(|e| mux_err(&e))?;
        let len = bytes.len() as u64;
        let inner = self.inner.clone();
        let stored = bytes.clone();
        let cid = tokio::task::spawn_blocking(move || inner.put_part(stored))
            .await
            .map_err(|e| StreamsError::Task(e.to_string()))??;
        let msn = p.record.playlist.next_msn();
        let init = p.init_uri.clone();
        let ll = p.ll.as_mut().expect("checked above");
        if part.index == 0 && !ll.open.is_empty() {
            // Parts of a segment that never closed (a refused publish).
            let stale = std::mem::take(&mut ll.open);
            let inner = self.inner.clone();
            tokio::task::spawn_blocking(move || inner.unpin_parts(&stale))
                .await
                .map_err(|e| StreamsError::Task(e.to_string()))??;
        }
        ll.open.push((part.seq, cid, len));
        let entry = PartEntry {
            uri: media_uri(&cid, &format!("{:06}.{}.m4s", part.seq, part.index)),
            duration_ms: part.duration_ms,
            independent: part.independent,
        };
        let listed = ll.parts.push(
            msn,
            part.index,
            part.discontinuity,
            init.clone(),
            part.program_date_time_ms,
            entry,
        );
        if listed {
            self.announce(
                name,
                p,
                Media {
                    session: p.record.id.clone(),
                    msn,
                    part: Some(part.index),
                    cid,
                    duration_ms: part.duration_ms,
                    independent: part.independent,
                    discontinuity: part.discontinuity,
                    program_date_time_ms: part.program_date_time_ms,
                    init: init.as_deref().and_then(uri_cid),
                    target_duration_secs: 0,
                    part_target_ms: 0,
                },
            );
        }
        let ll = p.ll.as_mut().expect("checked above");
        if ll.recent.len() == RECENT_PARTS {
            ll.recent.pop_front();
        }
        ll.recent.push_back((msn, part.index, bytes));
        self.publish_ll(name, p);
        Ok(true)
    }

    /// Tells the followers of a stream's name of `media` (part and target
    /// durations filled in from the pipeline). A full queue drops the
    /// oldest; a mirror that misses one takes the segment from the IPNS
    /// record as before.
    pub(super) fn announce(&self, name: &str, p: &Pipeline, mut media: Media) {
        let Some(ll) = p.ll.as_ref() else { return };
        media.target_duration_secs = p.record.playlist.target_duration_secs();
        media.part_target_ms = ll.parts.part_target_ms();
        let _ = self.inner.announcements.send((name.to_owned(), media));
    }

    /// Each own low-latency stream's parts and closed segments from now
    /// on, as `(stream, media)`, for part announcements.
    pub fn announcements(&self) -> tokio::sync::broadcast::Receiver<(String, Media)> {
        self.inner.announcements.subscribe()
    }

    /// For a low-latency pipeline whose parts of `seg` are all stored:
    /// the segment's file over them, its URI and size.
    pub(super) async fn segment_from_parts(
        &self,
        p: &mut Pipeline,
        seg: &SegmentReady,
    ) -> Result<Option<(Cid, u64)>, StreamsError> {
        let msn = p.record.playlist.next_msn();
        let Some(ll) = p.ll.as_mut() else {
            return Ok(None);
        };
        let open = std::mem::take(&mut ll.open);
        let complete = !open.is_empty()
            && open.iter().all(|(seq, _, _)| *seq == seg.seq)
            && ll
                .parts
                .of(msn)
                .is_some_and(|listed| listed.len() == open.len());
        let inner = self.inner.clone();
        if !complete {
            tokio::task::spawn_blocking(move || inner.unpin_parts(&open))
                .await
                .map_err(|e| StreamsError::Task(e.to_string()))??;
            return Ok(None);
        }
        let leaves: Vec<(Cid, u64)> = open.iter().map(|(_, c, l)| (*c, *l)).collect();
        let len = leaves.iter().map(|(_, l)| l).sum();
        let root = tokio::task::spawn_blocking(move || inner.close_parts(&leaves))
            .await
            .map_err(|e| StreamsError::Task(e.to_string()))??;
        Ok(Some((root, len)))
    }

    /// Renders the low-latency playlists and wakes the requests held for
    /// them.
    pub(super) fn publish_ll(&self, name: &str, p: &mut Pipeline) {
        let session = &p.record.playlist;
        let Some(ll) = p.ll.as_mut() else {
            return;
        };
        ll.view
            .send_replace(Arc::new(render_view(name, session, &ll.parts, &ll.recent)));
    }

    /// The low-latency view of a stream's current session, when it has
    /// parts.
    pub fn ll_view(&self, name: &str) -> Option<watch::Receiver<Arc<LlView>>> {
        self.lock()
            .get(name)
            .and_then(|s| s.ll.as_ref())
            .map(|tx| tx.subscribe())
    }

    /// Takes one of the bounded slots for a held (blocking) request; `None`
    /// when all are taken.
    pub fn hold(&self) -> Option<HeldSlot> {
        let held = &self.inner.held;
        let mut n = held.load(std::sync::atomic::Ordering::Relaxed);
        loop {
            if n >= MAX_HELD {
                return None;
            }
            match held.compare_exchange_weak(
                n,
                n + 1,
                std::sync::atomic::Ordering::AcqRel,
                std::sync::atomic::Ordering::Relaxed,
            ) {
                Ok(_) => return Some(HeldSlot(self.inner.clone())),
                Err(now) => n = now,
            }
        }
    }
}

/// Requests held for a playlist change or a part at once, across streams;
/// more are answered 503 at once.
pub const MAX_HELD: usize = 4096;

/// A slot for one held request, given back on drop.
pub struct HeldSlot(Arc<Inner>);

impl Drop for HeldSlot {
    fn drop(&mut self) {
        self.0
            .held
            .fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
    }
}

impl std::fmt::Debug for HeldSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("HeldSlot")
    }
}
