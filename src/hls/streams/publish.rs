//! A publish: ingest events through the segmenter and muxer to stored
//! segments, then the playlists, the session file and the site.
//!
//! ```text
//! Publishers::begin -> [publish task] run_publish: IngestEvent -> Segmenter
//!     -> fmp4 / ts muxer -> publish_segment (unixfs import, pinned)
//!     -> store_playlists (live + archive, added; archive pinned) -> session file, site
//! end_session: ENDLIST once the publisher is gone for good
//! ```
//!
//! The task owns the stream's [`Pipeline`] while it publishes; a publisher
//! that takes over waits for the old task to let go of it first.

use super::lowlatency::{uri_cid, LowLatency};
use super::session::{info_of, live_for_site, session_id, SessionRecord};
use super::{now_ms, SiteUpdate, StreamState, Streams, StreamsError, RECONNECT_GRACE};
use crate::hls::playlist::{PlaylistConfig, SegmentEntry, Session};
use crate::ipns::announce::Media;
use crate::media::segmenter::{SegmentReady, Segmenter, SegmenterConfig};
use crate::media::{fmp4, ts, SegmentFormat};
use crate::rtmp::server::{EndReason, IngestEvent, PublishHandle, PublishRefused, Publishers};
use cid::Cid;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

/// Ingest events buffered per publisher before the server waits for us.
pub(super) const EVENT_QUEUE: usize = 512;

/// A session being recorded (live, or waiting for its publisher to return).
pub(super) struct Pipeline {
    pub(super) record: SessionRecord,
    pub(super) segmenter: Segmenter,
    pub(super) fmp4: Option<fmp4::Muxer>,
    pub(super) ts: Option<ts::Muxer>,
    pub(super) init_uri: Option<String>,
    /// Parts and the LL-HLS playlist, when the stream has parts.
    pub(super) ll: Option<LowLatency>,
    /// Bumped by every publish; a grace timer only ends the session if no
    /// publisher took it over since.
    pub(super) generation: u64,
}

/// The publish task of a stream's current publisher, as others see it.
pub(super) struct Publisher {
    pub(super) id: u64,
    /// When its last ingest event arrived ([`mono_ms`]).
    pub(super) heard: Arc<AtomicU64>,
    /// Ends the publish (a new publisher takes over).
    pub(super) kick: CancellationToken,
    /// Turns true when the task is done with the pipeline.
    pub(super) done: watch::Receiver<bool>,
    /// Its events channel, to see whether events wait in it (a weak
    /// sender, which does not keep the channel open).
    pub(super) events: mpsc::WeakSender<IngestEvent>,
}

/// What a publish task holds of its own [`Publisher`].
pub(super) struct PublishTask {
    pub(super) id: u64,
    pub(super) heard: Arc<AtomicU64>,
    pub(super) kick: CancellationToken,
    pub(super) done: watch::Sender<bool>,
    /// The publisher it takes over from, to let finish first.
    pub(super) after: Option<watch::Receiver<bool>>,
}

/// Milliseconds on a monotonic clock, for times shared between tasks.
pub(super) fn mono_ms() -> u64 {
    static START: OnceLock<std::time::Instant> = OnceLock::new();
    START
        .get_or_init(std::time::Instant::now)
        .elapsed()
        .as_millis() as u64
}

/// A segment's URI: a plain path-gateway URL, with the `filename` parameter
/// (path gateway spec) giving it a media extension, without which players
/// such as ffmpeg refuse a segment URL, and the gateway a content type.
pub(super) fn media_uri(cid: &Cid, filename: &str) -> String {
    format!("/ipfs/{cid}?filename={filename}")
}

impl Streams {
    pub(super) fn segmenter_config(&self, part_target: Duration) -> SegmenterConfig {
        let target = self.inner.live.segment_target;
        SegmenterConfig {
            target,
            // Long enough for OBS's default keyframe interval (250 frames:
            // 8.3 s at 30 fps, 10.4 s at 24), so that its segments still
            // open with keyframes; short enough to bound latency and memory.
            max_duration: (target * 3).max(Duration::from_secs(12)),
            part_target,
            ..SegmenterConfig::default()
        }
    }

    pub(super) fn new_pipeline(
        &self,
        format: SegmentFormat,
        part_target: Duration,
    ) -> Result<Pipeline, StreamsError> {
        // MPEG-TS keeps plain HLS: parts are CMAF fragments.
        let part_target = match format {
            SegmentFormat::Fmp4 => part_target,
            SegmentFormat::Ts => Duration::ZERO,
        };
        let seg = self.segmenter_config(part_target);
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
            ll: (!part_target.is_zero()).then(|| {
                LowLatency::new(part_target.as_millis() as u64, seg.target_duration_secs())
            }),
            generation: 0,
        })
    }

    /// The pipeline of a session the node stopped in the middle of (a
    /// crash, less than [`RECONNECT_GRACE`] ago): a returning publisher
    /// continues it after a discontinuity, with a new init segment.
    pub(super) fn resumed_pipeline(
        &self,
        record: SessionRecord,
        format: SegmentFormat,
        part_target: Duration,
    ) -> Result<Pipeline, StreamsError> {
        let mut p = self.new_pipeline(format, part_target)?;
        p.segmenter
            .resume_after(record.playlist.segments().len() as u64);
        p.record = record;
        Ok(p)
    }

    /// Ends a session resumed at open (see [`Streams::resumed_pipeline`])
    /// when no publisher took it up by `deadline`, as the grace timer of
    /// the publish that crashed would have.
    pub(super) async fn end_unclaimed(
        self,
        name: String,
        pipeline: Arc<tokio::sync::Mutex<Pipeline>>,
        wait: Duration,
    ) {
        tokio::time::sleep(wait).await;
        let unclaimed = pipeline.lock().await.generation == 0;
        let idle = !self.lock().get(&name).is_some_and(|s| s.publishing);
        if unclaimed && idle {
            tracing::info!(
                stream = %name,
                "no publisher returned after the restart within {}s; session ended",
                RECONNECT_GRACE.as_secs()
            );
            self.end_session(&name, &pipeline).await;
        }
    }

    pub(super) async fn run_publish(
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
        let counters = self.inner.metrics.get().map(|m| m.stream(&name));
        let mut end = EndReason::Disconnected;
        // The keyframe interval of this publish is logged once, when first
        // measured; the API shows the latest.
        let mut interval_logged = false;
        let mut interval_shown = None;
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
                IngestEvent::Frame(f) => {
                    if let Some(c) = &counters {
                        c.frame(&f);
                    }
                    p.segmenter.push(f, now_ms())
                }
                IngestEvent::End(reason) => {
                    if matches!(reason, EndReason::Refused(_)) {
                        p.segmenter.discard();
                    } else {
                        p.segmenter.finish();
                    }
                    end = reason;
                }
            }
            let interval = p.segmenter.keyframe_interval_ms();
            if interval != interval_shown {
                interval_shown = interval;
                self.note_keyframe_interval(&name, task.id, interval, &mut interval_logged);
            }
            self.drain_ready(&name, &mut p, counters.as_ref()).await;
        }
        let segments = {
            let mut p = pipeline.lock().await;
            if !matches!(end, EndReason::Refused(_)) {
                p.segmenter.finish();
            }
            self.drain_ready(&name, &mut p, counters.as_ref()).await;
            p.record.playlist.segments().len()
        };
        // The server sees the channel closed and drops a replaced publisher.
        drop(events);
        if let Some(s) = self.lock().get_mut(&name) {
            if s.publisher.as_ref().is_some_and(|p| p.id == task.id) {
                s.publishing = false;
                s.publisher = None;
                s.ingest.publisher = None;
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
                    tracing::info!(
                        stream = %name,
                        "publisher did not return within {}s; session ended",
                        RECONNECT_GRACE.as_secs()
                    );
                    self.end_session(&name, &pipeline).await;
                }
            }
        }
    }

    /// Shows the publisher's keyframe interval in the API and logs it once
    /// per publish, with what to change when it is too long for the segment
    /// target (OBS defaults to 250 frames, 8.3 s at 30 fps).
    fn note_keyframe_interval(
        &self,
        name: &str,
        task: u64,
        interval_ms: Option<u64>,
        logged: &mut bool,
    ) {
        // None is a timeline not measured yet (the publisher stopped, or
        // its timestamps jumped): the last measure stands until then.
        let Some(ms) = interval_ms else {
            return;
        };
        if let Some(s) = self.lock().get_mut(name) {
            if s.publisher.as_ref().is_some_and(|p| p.id == task) {
                s.keyframe_interval_ms = Some(ms);
            }
        }
        if std::mem::replace(logged, true) {
            return;
        }
        let interval = Duration::from_millis(ms);
        let seconds = interval.as_secs_f64();
        match super::keyframe_warning(interval, self.inner.live.segment_target) {
            Some(warning) => {
                tracing::warn!(stream = %name, keyframe_interval_s = seconds, "{warning}")
            }
            None => {
                tracing::info!(stream = %name, keyframe_interval_s = seconds, "keyframe interval measured")
            }
        }
    }

    /// Ends the session with `EXT-X-ENDLIST`; one without a segment is
    /// dropped instead, as if it had never begun (nothing of it was stored).
    pub(super) async fn end_session(
        &self,
        name: &str,
        pipeline: &Arc<tokio::sync::Mutex<Pipeline>>,
    ) {
        let mut p = pipeline.lock().await;
        if p.record.playlist.segments().is_empty() {
            tracing::info!(stream = %name, session = %p.record.id, "no media recorded; session dropped");
        } else {
            p.record.playlist.end();
            let stored = self.store_playlists(name, &mut p).await;
            if stored.is_ok() {
                self.storage_works(name);
            }
            if let Err(e) = stored {
                // The session is over all the same: the API and the
                // playlists served say so at once, the archive CID named
                // stays the last one stored (and pinned), and the final one
                // is stored once there is room again.
                tracing::error!(
                    stream = %name,
                    session = %p.record.id,
                    "storing the final archive failed: {e}; the session is ended, the \
                     archive named stays the last one stored, retrying every {}s",
                    FINAL_RETRY.as_secs()
                );
                tokio::spawn(self.clone().retry_final(
                    name.to_owned(),
                    pipeline.clone(),
                    p.record.id.clone(),
                ));
            }
            self.publish_ll(name, &mut p);
        }
        if let Some(s) = self.lock().get_mut(name) {
            if s.current.as_ref().is_some_and(|c| Arc::ptr_eq(c, pipeline)) {
                s.current = None;
            }
        }
    }

    /// [`Streams::publish_or_gap`], counted in `counters` once listed;
    /// then old media goes if the stream is over its retention limits or
    /// the disk is low on space.
    pub(super) async fn publish_counted(
        &self,
        name: &str,
        p: &mut Pipeline,
        seg: SegmentReady,
        counters: Option<&super::metrics::StreamCounters>,
    ) {
        let (duration_ms, end_ms) = (seg.duration_ms, seg.program_date_time_ms + seg.duration_ms);
        if self.publish_or_gap(name, p, seg).await {
            if let Some(c) = counters {
                c.segment(duration_ms, now_ms().saturating_sub(end_ms));
            }
        }
        self.enforce_retention(name, p).await;
    }

    /// Stores an ended session's final playlists once storing works again,
    /// while the session is still the stream's last (a later one owns the
    /// stream's playlists and site; at the next start the session file is
    /// ended anyway).
    async fn retry_final(
        self,
        name: String,
        pipeline: Arc<tokio::sync::Mutex<Pipeline>>,
        id: String,
    ) {
        for _ in 0..FINAL_RETRIES {
            tokio::time::sleep(FINAL_RETRY).await;
            let mut p = pipeline.lock().await;
            let last = self
                .lock()
                .get(&name)
                .and_then(|s| s.sessions.last().map(|l| l.id == id));
            if last != Some(true) {
                return;
            }
            if self.store_playlists(&name, &mut p).await.is_ok() {
                self.storage_works(&name);
                tracing::info!(stream = %name, session = %id, "final archive stored");
                return;
            }
        }
        tracing::error!(stream = %name, session = %id, "gave up storing the final archive");
    }

    /// Publishes a segment; one that cannot be stored (a full disk) is
    /// logged, counted and kept in the playlists as a gap. True when it
    /// was stored and listed.
    async fn publish_or_gap(&self, name: &str, p: &mut Pipeline, seg: SegmentReady) -> bool {
        let before = p.record.playlist.segments().len();
        let gap = SegmentEntry::gap(&seg, String::new(), None);
        let seq = seg.seq;
        let Err(e) = self.publish_segment(name, p, seg).await else {
            self.storage_works(name);
            return true;
        };
        let stored = p.record.playlist.segments().len() > before;
        // One line per segment only at debug: a full disk fails them all,
        // and `storage_failed` says so once.
        tracing::debug!(
            stream = %name,
            seq,
            "{}: {e}",
            if stored {
                "segment stored, playlists not updated"
            } else {
                "segment not stored; marked as a gap in the playlists"
            }
        );
        self.storage_failed(name, &e, !stored);
        if stored {
            return true;
        }
        let format = p.record.playlist.config().format;
        let init = match format {
            // Before any init segment was stored there is nothing to play
            // yet: the session just starts later.
            SegmentFormat::Fmp4 => match p.init_uri.clone() {
                Some(init) => Some(init),
                None => return false,
            },
            SegmentFormat::Ts => None,
        };
        let uri = media_uri(&empty_cid(), &format!("gap-{seq:06}.{}", ext(format)));
        let gap = SegmentEntry {
            uri,
            init_uri: init,
            ..gap
        };
        if let Err(e) = p.record.playlist.push(gap) {
            tracing::warn!(stream = %name, seq, "marking the gap: {e}");
            return false;
        }
        // Failing too, most likely; the next success stores it. The
        // low-latency playlist, kept in memory, lists the gap at once.
        let _ = self.store_playlists(name, p).await;
        self.publish_ll(name, p);
        false
    }

    /// Muxes, stores and pins one segment, then updates the playlists.
    pub(super) async fn publish_segment(
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
        if let Some(secs) = p.segmenter.target_duration_secs() {
            // Before the first segment only: the playlist's target duration
            // is fixed from then on.
            p.record.playlist.set_target_duration_secs(secs);
        }
        if let Some((cid, len)) = self.segment_from_parts(p, &seg).await? {
            let uri = media_uri(&cid, &format!("{:06}.m4s", seg.seq));
            let entry = SegmentEntry::new(&seg, uri, p.init_uri.clone(), len);
            let msn = p.record.playlist.next_msn();
            let media = Media {
                session: p.record.id.clone(),
                msn,
                part: None,
                cid,
                duration_ms: entry.duration_ms,
                independent: entry.independent,
                discontinuity: entry.discontinuity,
                program_date_time_ms: entry.program_date_time_ms,
                init: p.init_uri.as_deref().and_then(uri_cid),
                target_duration_secs: 0,
                part_target_ms: 0,
            };
            p.record.playlist.push(entry)?;
            self.announce(name, p, media);
            self.note_ingest(name, &seg, &cid);
            let stored = self.store_playlists(name, p).await;
            self.publish_ll(name, p);
            return stored;
        }
        let bytes = match format {
            SegmentFormat::Fmp4 => {
                self.ensure_fmp4_muxer(p, &seg.tracks, seg.seq).await?;
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
        let uri = media_uri(&cid, &format!("{:06}.{}", seg.seq, ext(format)));
        let entry = SegmentEntry::new(&seg, uri, init, len);
        p.record.playlist.push(entry)?;
        self.note_ingest(name, &seg, &cid);
        let stored = self.store_playlists(name, p).await;
        // A low-latency segment whose parts were not all stored lists no
        // parts, but its blocking reloads still wait for it.
        self.publish_ll(name, p);
        stored
    }

    /// Makes the fMP4 muxer for `tracks` and stores its init segment,
    /// unless the current muxer is for them already.
    pub(super) async fn ensure_fmp4_muxer(
        &self,
        p: &mut Pipeline,
        tracks: &crate::media::Tracks,
        seq: u64,
    ) -> Result<(), StreamsError> {
        if p.fmp4.as_ref().map(fmp4::Muxer::tracks) == Some(tracks) {
            return Ok(());
        }
        let mux_err = |e: &dyn std::fmt::Display| StreamsError::Mux {
            seq,
            reason: e.to_string(),
        };
        let m = fmp4::Muxer::new(tracks).map_err(|e| mux_err(&e))?;
        let init = m.init_segment().map_err(|e| mux_err(&e))?;
        let cid = self.inner.clone().add_async(init, true).await?;
        p.init_uri = Some(media_uri(&cid, &format!("init-{seq}.mp4")));
        p.fmp4 = Some(m);
        Ok(())
    }

    /// Notes a listed segment in the stream's ingest figures.
    fn note_ingest(&self, name: &str, seg: &SegmentReady, cid: &Cid) {
        if let Some(s) = self.lock().get_mut(name) {
            s.ingest.segment(seg);
            let end = seg.program_date_time_ms + seg.duration_ms;
            s.ingest.stored(end, now_ms(), cid.to_string());
        }
    }

    /// Renders both playlists, adds them to the store (the archive pinned),
    /// builds and pins the site, persists the session, and only then lets
    /// the previous archive and site go: what the API names is always
    /// pinned. What HTTP readers get (playlists, the session's state) is
    /// updated from memory even when storing fails, so a full disk never
    /// freezes the live playlist; the archive and site CIDs stay the last
    /// stored ones then.
    pub(super) async fn store_playlists(
        &self,
        name: &str,
        p: &mut Pipeline,
    ) -> Result<(), StreamsError> {
        let live = p.record.playlist.live();
        let archive = p.record.playlist.archive();
        let stored = self.store_version(name, p, &live, &archive).await;
        let site = match &stored {
            Ok(site) => {
                let _ = self.inner.sites.send(SiteUpdate {
                    stream: name.to_owned(),
                    root: *site,
                });
                Some(*site)
            }
            Err(_) => None,
        };
        let info = info_of(&p.record);
        if let Some(s) = self.lock().get_mut(name) {
            s.live_text = Some(live);
            s.archive_text = Some(archive);
            if let Some(site) = site {
                s.site = Some(site);
            }
            match s.sessions.last_mut() {
                Some(last) if last.id == info.id => *last = info,
                _ => s.sessions.push(info),
            }
        }
        stored.map(drop)
    }

    /// Notes that storing `name`'s media failed (a segment, `dropped` when
    /// it became a gap, or a playlist version): counted and shown in the
    /// API; the first failure of a run is logged, once, and the publisher
    /// told (RTMP `onStatus`).
    pub(super) fn storage_failed(&self, name: &str, e: &StreamsError, dropped: bool) {
        let started = {
            let mut map = self.lock();
            let Some(s) = map.get_mut(name) else { return };
            let started = !s.storage.failing;
            if started {
                s.failing_since = Some((std::time::Instant::now(), s.storage.clone()));
            }
            s.storage.failing = true;
            s.storage.error = Some(e.to_string());
            if dropped {
                s.storage.segments_dropped += 1;
            } else {
                s.storage.playlists_failed += 1;
            }
            if started {
                s.storage_tx.send_replace(Some(e.to_string()));
            }
            started
        };
        if started {
            tracing::warn!(
                stream = %name,
                "storing the stream failed: {e}; segments that cannot be stored are \
                 marked as gaps in the playlists, and the API keeps naming what was \
                 stored, until storing works again"
            );
        }
    }

    /// Notes that storing works for `name`: a segment and the playlists
    /// naming it were stored, or (the publisher gone) a final archive. A
    /// run of failures ends, with one log line that counts what it cost,
    /// and the publisher is told. A playlist version alone does not end
    /// it: on a full disk the small playlists of a gap often fit where the
    /// next segment does not, and the run would flap.
    pub(super) fn storage_works(&self, name: &str) {
        let ended = {
            let mut map = self.lock();
            let Some(s) = map.get_mut(name) else { return };
            if !s.storage.failing {
                return;
            }
            s.storage.failing = false;
            s.storage.error = None;
            s.storage_tx.send_replace(None);
            s.failing_since.take().map(|(since, before)| {
                (
                    since.elapsed(),
                    s.storage.segments_dropped - before.segments_dropped,
                    s.storage.playlists_failed - before.playlists_failed,
                )
            })
        };
        let (failed_for, dropped, playlists) = ended.unwrap_or_default();
        tracing::info!(
            stream = %name,
            segments_dropped = dropped,
            playlists_failed = playlists,
            failed_for_s = failed_for.as_secs(),
            "storing the stream works again; {dropped} segments could not be stored and \
             are marked as gaps"
        );
    }

    /// Stores one version of the session's playlists and site (see
    /// [`Streams::store_playlists`]); on failure whatever it pinned is
    /// unpinned again and `p.record` keeps naming the previous version.
    async fn store_version(
        &self,
        name: &str,
        p: &mut Pipeline,
        live: &str,
        archive: &str,
    ) -> Result<Cid, StreamsError> {
        let unpin = |cid: Cid| {
            if let Err(e) = self.inner.repo.pins.remove(&cid) {
                tracing::warn!(stream = %name, %cid, "unpinning: {e}");
            }
        };
        let old_archive = p
            .record
            .archive_cid
            .as_deref()
            .and_then(|c| Cid::try_from(c).ok());
        let old_site = p
            .record
            .site_cid
            .as_deref()
            .and_then(|c| Cid::try_from(c).ok());
        self.inner
            .clone()
            .add_async(live.to_owned().into_bytes().into(), false)
            .await?;
        let archive_cid = self
            .inner
            .clone()
            .add_async(archive.to_owned().into_bytes().into(), true)
            .await?;
        let mut record = p.record.clone();
        record.archive_cid = Some(archive_cid.to_string());
        let inner = self.inner.clone();
        let owned = name.to_owned();
        let stored = tokio::task::spawn_blocking(move || {
            let site = inner.store_site(&owned, &record, live_for_site(&record), None)?;
            record.site_cid = Some(site.to_string());
            if let Err(e) = inner.persist(&owned, &record) {
                if old_site != Some(site) {
                    let _ = inner.repo.pins.remove(&site);
                }
                return Err(e);
            }
            Ok(record)
        })
        .await
        .map_err(|e| StreamsError::Task(e.to_string()))?;
        let record = match stored {
            Ok(record) => record,
            Err(e) => {
                if old_archive != Some(archive_cid) {
                    unpin(archive_cid);
                }
                return Err(e);
            }
        };
        let site = record
            .site_cid
            .as_deref()
            .and_then(|c| Cid::try_from(c).ok())
            .expect("set above");
        if let Some(old) = old_archive.filter(|o| *o != archive_cid) {
            unpin(old);
        }
        if let Some(old) = old_site.filter(|o| *o != site) {
            unpin(old);
        }
        p.record = record;
        Ok(site)
    }
}

/// The file name extension of a segment in `format`.
fn ext(format: SegmentFormat) -> &'static str {
    match format {
        SegmentFormat::Fmp4 => "m4s",
        SegmentFormat::Ts => "ts",
    }
}

/// The CID of no bytes at all, inlined (identity multihash): what a gap's
/// URI names, so that even a player that loads it anyway gets an answer
/// (empty) from any gateway, and nothing needs storing.
fn empty_cid() -> Cid {
    let mh =
        crate::store::Multihash::wrap(crate::store::IDENTITY, &[]).expect("an empty digest fits");
    Cid::new_v1(crate::store::RAW, mh)
}

/// How often, and how many times, a session's final archive is stored
/// again after storing it failed (20 minutes).
const FINAL_RETRY: Duration = Duration::from_secs(10);
const FINAL_RETRIES: u32 = 120;

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

    fn metadata(&self, stream: &str, metadata: &crate::rtmp::amf::Amf0Value) {
        if let Some(s) = self.lock().get_mut(stream) {
            s.ingest.metadata(metadata);
        }
    }

    fn begin(
        &self,
        stream: &str,
        peer: std::net::SocketAddr,
    ) -> Result<PublishHandle, PublishRefused> {
        let mut map = self.lock();
        let format = self.inner.live.format;
        let part_target = self.inner.live.part_target;
        let state = map.entry(stream.to_owned()).or_insert_with(|| StreamState {
            format,
            part_target,
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
                    .new_pipeline(state.format, state.part_target)
                    .map_err(|e| PublishRefused::Other(e.to_string()))?;
                state.ll = p.ll.as_ref().map(|ll| ll.view.clone());
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
        state.ingest.begin(peer);
        state.publishing = true;
        state.keyframe_interval_ms = None;
        state.publisher = Some(Publisher {
            id: task.id,
            heard: task.heard.clone(),
            kick: task.kick.clone(),
            done: done_rx,
            events: tx.downgrade(),
        });
        let storage = state.storage_tx.subscribe();
        tokio::spawn(
            self.clone()
                .run_publish(stream.to_owned(), pipeline, rx, task),
        );
        Ok(PublishHandle {
            events: tx,
            storage,
        })
    }
}
