//! The segmenter: decides where HLS segments begin and end. Pure: frames and
//! the caller's wall clock in, finished segments out.
//!
//! Flow: the caller gives the stream's decoder configuration with
//! [`Segmenter::set_tracks`], then feeds every [`Frame`] in arrival order
//! (video and audio interleaved as RTMP delivers them) with
//! [`Segmenter::push`], and after every call drains
//! [`Segmenter::poll_segment`] for [`SegmentReady`]s to mux and store. At a
//! publisher reconnect it calls [`Segmenter::discontinuity`]; at unpublish,
//! [`Segmenter::finish`]; when a publish is refused, [`Segmenter::discard`].
//!
//! Where segments are cut:
//!
//! * With video, at the first video keyframe whose dts is at or after the
//!   segment's start plus [`SegmenterConfig::target`], or whose pts is at
//!   or after the segment's first pts plus the target: with B-frames the
//!   reordering delay of a GOP's keyframe may change (x265 gives the first
//!   a smaller one than later ones), so a keyframe a target later in
//!   presentation can decode a frame earlier than a target later, and
//!   looking at dts alone would double that segment. Audio-only streams cut
//!   at the first audio frame at or after that point.
//! * Audio belongs to segments by dts, not by arrival: RTMP interleaves audio
//!   a few frames ahead of or behind video, so audio that arrived before the
//!   cutting keyframe but lies after it moves to the new segment, and a
//!   closed segment waits (at most [`SegmenterConfig::max_interleave`] of
//!   video time) for audio that lies before the cut but has not arrived yet.
//! * A segment never grows past [`SegmenterConfig::max_duration`] or
//!   [`SegmenterConfig::max_bytes`]: reaching either forces a cut even
//!   without a keyframe. Such a segment does not start with a keyframe, so
//!   [`SegmentReady::independent`] is false for it (players joining there
//!   show nothing until the next keyframe). Durations are also held below
//!   `max_duration` plus 499 ms, so that
//!   [`SegmenterConfig::target_duration_secs`] is an `EXT-X-TARGETDURATION`
//!   that every segment satisfies: HLS requires each rounded `EXTINF` to be
//!   at most the target duration, and the target duration never to change.
//! * A timestamp jump on the leading track (video, or audio without video) —
//!   a step back beyond [`SegmenterConfig::backward_tolerance`], a step
//!   forward beyond [`SegmenterConfig::max_forward_gap`], or a gap that would
//!   stretch the segment past its bound — closes the segment at its last
//!   frame and starts the next on the new timeline, marked as a
//!   discontinuity. So does a change of [`Tracks`] (the caller makes a new
//!   init segment) and a call to [`Segmenter::discontinuity`].
//!
//! Durations come from media timestamps: a segment lasts from its first
//! leading-track dts to the next segment's. A segment closed without a
//! successor (at `finish`, a discontinuity or a track change) ends one frame
//! duration after its last leading-track frame. Program date-times are
//! anchored to the caller's clock at the first frame of each discontinuity
//! run and advance by media time from there, so they agree with the
//! durations.
//!
//! Frames that cannot be used are dropped and counted
//! ([`Segmenter::dropped_frames`]): frames before the first [`Tracks`] or of
//! a track the tracks lack, video before the first keyframe of a run, and
//! audio that precedes the first keyframe.

use std::collections::VecDeque;
use std::time::Duration;

use thiserror::Error;

use super::{Frame, TrackKind, Tracks};

/// How far past [`SegmenterConfig::max_duration`] a segment may run: less
/// than half a second, so its rounded duration stays within
/// [`SegmenterConfig::target_duration_secs`].
const OVERSHOOT_MS: u64 = 499;
/// Frame duration assumed for video when the stream has shown none yet.
const DEFAULT_VIDEO_FRAME_MS: u64 = 33;
/// Steps between leading-track frames above this are gaps, not frame
/// durations.
const MAX_FRAME_STEP_MS: u64 = 1000;
/// Samples per AAC frame (AAC-LC; what RTMP encoders send).
const AAC_FRAME_SAMPLES: u64 = 1024;

/// Tunables of a [`Segmenter`]. `Default` suits live HLS with 2 s segments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmenterConfig {
    /// The duration segments aim for: a segment is cut at the first keyframe
    /// at or after its start plus this.
    pub target: Duration,
    /// Longest segment: reaching it forces a cut even without a keyframe, to
    /// bound memory and latency when a publisher sends long GOPs.
    pub max_duration: Duration,
    /// Largest segment in frame bytes: reaching it forces a cut.
    pub max_bytes: usize,
    /// A forward step in the leading track's dts beyond this is a timestamp
    /// jump (a discontinuity), not a pause.
    pub max_forward_gap: Duration,
    /// A backward step in the leading track's dts beyond this is a timestamp
    /// jump; smaller steps (some encoders' rounding) are accepted as they
    /// are.
    pub backward_tolerance: Duration,
    /// How far (in video time) audio may trail the video it belongs with: a
    /// closed segment waits this long for late audio before it is emitted.
    pub max_interleave: Duration,
}

impl Default for SegmenterConfig {
    fn default() -> Self {
        Self {
            target: Duration::from_secs(2),
            max_duration: Duration::from_secs(6),
            max_bytes: 32 * 1024 * 1024,
            max_forward_gap: Duration::from_secs(10),
            backward_tolerance: Duration::from_millis(100),
            max_interleave: Duration::from_secs(1),
        }
    }
}

impl SegmenterConfig {
    /// The `EXT-X-TARGETDURATION` (whole seconds) that every segment from a
    /// segmenter with this configuration satisfies: `max_duration` rounded
    /// up. Fixed for a session, as HLS requires.
    pub fn target_duration_secs(&self) -> u64 {
        millis(self.max_duration).div_ceil(1000).max(1)
    }
}

/// Why a [`SegmenterConfig`] was refused.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum ConfigError {
    /// The target duration is below one millisecond.
    #[error("segment target duration {0:?} is too short; use at least 1 ms (2 s is usual)")]
    TargetTooShort(Duration),
    /// The maximum segment duration is below the target.
    #[error(
        "maximum segment duration {max:?} is shorter than the target {target:?}; \
         set it to at least the target (3 times is usual)"
    )]
    MaxBelowTarget {
        /// The configured maximum.
        max: Duration,
        /// The configured target.
        target: Duration,
    },
    /// The maximum segment size is zero.
    #[error("maximum segment size is 0 bytes; allow at least one frame (32 MiB is usual)")]
    ZeroMaxBytes,
    /// The forward gap threshold is zero, so every frame would be a jump.
    #[error(
        "maximum forward timestamp gap is 0; use at least the longest frame gap (10 s is usual)"
    )]
    ZeroForwardGap,
}

/// A finished segment: the frames to mux, and what the playlist needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentReady {
    /// Sequence number, from 0 for the first segment of the segmenter and
    /// counting up across discontinuities.
    pub seq: u64,
    /// The frames, in arrival order (so in dts order per track).
    pub frames: Vec<Frame>,
    /// The decoder configuration the frames were coded with: the init
    /// segment they need.
    pub tracks: Tracks,
    /// Where the segment starts on the stream's timeline: its first
    /// leading-track dts (the keyframe that opened it).
    pub start_dts_ms: u64,
    /// Its duration from media timestamps (see the module docs).
    pub duration_ms: u64,
    /// Whether a discontinuity precedes this segment (`EXT-X-DISCONTINUITY`).
    pub discontinuity: bool,
    /// Whether decoding can start here: it opens with a video keyframe (or
    /// the stream is audio-only). False only after a forced cut.
    pub independent: bool,
    /// Wall-clock time of the segment's start, in milliseconds since the
    /// Unix epoch (`EXT-X-PROGRAM-DATE-TIME`).
    pub program_date_time_ms: u64,
}

/// Segmenter limits in milliseconds.
#[derive(Debug, Clone, Copy)]
struct Limits {
    target: u64,
    max: u64,
    max_bytes: usize,
    forward_gap: u64,
    backward_tolerance: u64,
    interleave: u64,
}

/// The segment being filled.
#[derive(Debug)]
struct Open {
    seq: u64,
    start_ms: u64,
    /// Presentation time of the first frame.
    start_pts_ms: i128,
    frames: Vec<Frame>,
    bytes: usize,
    discontinuity: bool,
    independent: bool,
    program_date_time_ms: u64,
}

impl Open {
    fn push(&mut self, frame: Frame) {
        self.bytes += frame.data.len();
        self.frames.push(frame);
    }
}

/// A segment whose end is known, still taking late audio.
#[derive(Debug)]
struct Closing {
    seg: Open,
    end_ms: u64,
    late: Late,
    /// Leading-track dts at which late audio is no longer waited for.
    release_ms: u64,
}

/// Which audio frames belong to a closed segment rather than the next.
#[derive(Debug, Clone, Copy)]
enum Late {
    /// Those before the cut.
    Before(u64),
    /// Across a timestamp jump: those nearer the old timeline's last dts
    /// than the new timeline's first.
    Nearer { old: u64, new: u64 },
}

impl Late {
    fn belongs(self, dts: u64) -> bool {
        match self {
            Late::Before(cut) => dts < cut,
            Late::Nearer { old, new } => dts.abs_diff(old) <= dts.abs_diff(new),
        }
    }
}

/// Cuts a stream of frames into HLS segments; see the module docs.
///
/// Bounds: the open segment, the closed segment waiting for late audio and
/// the audio held before the first keyframe are each capped by
/// [`SegmenterConfig::max_duration`] and [`SegmenterConfig::max_bytes`].
/// Every call produces at most three segments, so a caller that drains
/// [`Segmenter::poll_segment`] after each call holds at most that many.
#[derive(Debug)]
pub struct Segmenter {
    limits: Limits,
    tracks: Option<Tracks>,
    next_seq: u64,
    discontinuity_pending: bool,
    /// (dts, wall clock ms) at the start of the current discontinuity run.
    anchor: Option<(u64, u64)>,
    /// Audio that came before the first keyframe of a run.
    preroll: VecDeque<Frame>,
    preroll_bytes: usize,
    open: Option<Open>,
    closing: Option<Closing>,
    /// The first keyframe's dts of a run that has not jumped: audio before
    /// it is dropped.
    run_start: Option<u64>,
    /// Last leading-track dts of the current run.
    last_lead: Option<u64>,
    /// Last step between leading-track frames, a frame duration estimate.
    lead_step: Option<u64>,
    ready: VecDeque<SegmentReady>,
    dropped: u64,
}

impl Segmenter {
    /// A segmenter with the given tunables, waiting for
    /// [`Segmenter::set_tracks`].
    pub fn new(config: &SegmenterConfig) -> Result<Self, ConfigError> {
        let limits = Limits {
            target: millis(config.target),
            max: millis(config.max_duration),
            max_bytes: config.max_bytes,
            forward_gap: millis(config.max_forward_gap),
            backward_tolerance: millis(config.backward_tolerance),
            interleave: millis(config.max_interleave),
        };
        if limits.target == 0 {
            return Err(ConfigError::TargetTooShort(config.target));
        }
        if limits.max < limits.target {
            return Err(ConfigError::MaxBelowTarget {
                max: config.max_duration,
                target: config.target,
            });
        }
        if limits.max_bytes == 0 {
            return Err(ConfigError::ZeroMaxBytes);
        }
        if limits.forward_gap == 0 {
            return Err(ConfigError::ZeroForwardGap);
        }
        Ok(Self {
            limits,
            tracks: None,
            next_seq: 0,
            discontinuity_pending: false,
            anchor: None,
            preroll: VecDeque::new(),
            preroll_bytes: 0,
            open: None,
            closing: None,
            run_start: None,
            last_lead: None,
            lead_step: None,
            ready: VecDeque::new(),
            dropped: 0,
        })
    }

    /// Sets the stream's decoder configuration. A configuration different
    /// from the current one closes the segment in progress and marks the
    /// next as a discontinuity (once any segment was emitted); the same
    /// configuration again, as some encoders resend it, changes nothing.
    pub fn set_tracks(&mut self, tracks: Tracks) {
        if self.tracks.as_ref() == Some(&tracks) {
            return;
        }
        self.flush();
        self.tracks = Some(tracks);
    }

    /// The current decoder configuration.
    pub fn tracks(&self) -> Option<&Tracks> {
        self.tracks.as_ref()
    }

    /// Takes the next frame in arrival order; `now_ms` is the caller's wall
    /// clock (milliseconds since the Unix epoch) when it arrived.
    pub fn push(&mut self, frame: Frame, now_ms: u64) {
        let Some(lead) = self.lead() else {
            self.dropped += 1;
            return;
        };
        if !self.has_track(frame.track) {
            self.dropped += 1;
            return;
        }
        if frame.track == lead {
            self.push_lead(frame, now_ms, lead);
        } else {
            self.push_follower(frame, now_ms);
        }
    }

    /// Ends the current timeline (a publisher reconnected): closes the
    /// segment in progress and marks the next as a discontinuity. The
    /// sequence numbers continue.
    pub fn discontinuity(&mut self) {
        self.flush();
    }

    /// Closes the segment in progress (at unpublish). Frames pushed later
    /// start a new timeline, after a discontinuity.
    pub fn finish(&mut self) {
        self.flush();
    }

    /// Drops the segment in progress and the audio held before a keyframe
    /// (the publish was refused, and what it sent is not to be kept), then
    /// ends the timeline as [`Segmenter::finish`] does. A closed segment
    /// still waiting for late audio is complete and is emitted. The dropped
    /// segment's sequence number is given to the next one, so numbers stay
    /// contiguous.
    pub fn discard(&mut self) {
        self.emit_closing();
        if let Some(seg) = self.open.take() {
            self.dropped += seg.frames.len() as u64;
            self.next_seq = seg.seq;
        }
        self.end_timeline();
    }

    /// Continues a session another segmenter recorded `segments` segments
    /// of (the node restarted within a publisher's reconnect window): the
    /// numbers go on from there, and the first segment opens a new
    /// timeline after a discontinuity.
    pub fn resume_after(&mut self, segments: u64) {
        self.next_seq = self.next_seq.max(segments);
        self.end_timeline();
    }

    /// The next finished segment, oldest first.
    pub fn poll_segment(&mut self) -> Option<SegmentReady> {
        self.ready.pop_front()
    }

    /// How many frames were dropped as unusable (see the module docs).
    pub fn dropped_frames(&self) -> u64 {
        self.dropped
    }

    /// The track that decides cuts: video when the stream has it.
    fn lead(&self) -> Option<TrackKind> {
        let tracks = self.tracks.as_ref()?;
        if tracks.video.is_some() {
            Some(TrackKind::Video)
        } else if tracks.audio.is_some() {
            Some(TrackKind::Audio)
        } else {
            None
        }
    }

    fn has_track(&self, kind: TrackKind) -> bool {
        self.tracks.as_ref().is_some_and(|t| match kind {
            TrackKind::Video => t.video.is_some(),
            TrackKind::Audio => t.audio.is_some(),
        })
    }

    fn push_lead(&mut self, frame: Frame, now_ms: u64, lead: TrackKind) {
        let dts = frame.dts_ms;
        let starts = lead == TrackKind::Audio || frame.keyframe;
        if self.closing.as_ref().is_some_and(|c| dts >= c.release_ms) {
            self.emit_closing();
        }
        let Some(open) = &mut self.open else {
            if !starts {
                // Nothing can decode a run that does not open with a
                // keyframe.
                self.dropped += 1;
                return;
            }
            let carried = self.take_preroll(dts);
            self.run_start = Some(dts);
            self.last_lead = Some(dts);
            self.lead_step = None;
            self.start_segment(frame, now_ms, true, carried);
            return;
        };
        let start = open.start_ms;
        let last = self.last_lead.unwrap_or(dts);
        let l = self.limits;
        let bound = start.saturating_add(l.max).saturating_add(OVERSHOOT_MS);
        let jumped = dts.saturating_add(l.backward_tolerance) < last
            || dts > last.saturating_add(l.forward_gap)
            || dts > bound;
        if jumped {
            let end = self.estimated_end(start);
            let carried = self.cut(
                end,
                Late::Nearer {
                    old: last,
                    new: dts,
                },
                dts,
                true,
            );
            self.anchor = None;
            self.run_start = None;
            self.last_lead = Some(dts);
            self.lead_step = None;
            self.start_segment(frame, now_ms, starts, carried);
            return;
        }
        if dts > last && dts - last <= MAX_FRAME_STEP_MS {
            self.lead_step = Some(dts - last);
        }
        self.last_lead = Some(dts);
        let due = starts
            && (dts >= start.saturating_add(l.target)
                || pts(&frame) >= open.start_pts_ms + i128::from(l.target));
        let forced = dts >= start.saturating_add(l.max)
            || (open.bytes + frame.data.len() > l.max_bytes && dts > start);
        if due || forced {
            let carried = self.cut(dts, Late::Before(dts), dts, false);
            self.start_segment(frame, now_ms, starts, carried);
        } else {
            open.push(frame);
        }
    }

    fn push_follower(&mut self, frame: Frame, now_ms: u64) {
        let dts = frame.dts_ms;
        if self.run_start.is_some_and(|r| dts < r) {
            // Audio from before the run's first keyframe, arriving late.
            self.dropped += 1;
            return;
        }
        if let Some(closing) = &mut self.closing {
            if closing.late.belongs(dts) {
                closing.seg.push(frame);
                return;
            }
            // Audio arrives in dts order: nothing later belongs there either.
            self.emit_closing();
        }
        let l = self.limits;
        let Some(open) = &mut self.open else {
            self.preroll_bytes += frame.data.len();
            self.preroll.push_back(frame);
            self.bound_preroll();
            return;
        };
        let start = open.start_ms;
        // Audio far past the segment's bound means the leading track
        // stopped, unless it is also far past the leading track: then the
        // stream's timestamps jumped, which the leading track will show.
        let stalled = dts >= start.saturating_add(l.max).saturating_add(l.interleave)
            && self
                .last_lead
                .is_some_and(|last| dts <= last.saturating_add(l.forward_gap));
        let full = open.bytes + frame.data.len() > l.max_bytes && dts > start;
        if stalled || full {
            // Cut here so the segment stays bounded; past the duration bound
            // the timeline has a hole, which is a discontinuity.
            let bound = start.saturating_add(l.max).saturating_add(OVERSHOOT_MS);
            let carried = self.cut(dts.min(bound), Late::Before(dts), dts, dts > bound);
            if stalled {
                // The audio carries the timeline until the leading track
                // comes back.
                self.last_lead = Some(dts);
            }
            self.start_segment(frame, now_ms, false, carried);
        } else {
            open.push(frame);
        }
    }

    /// Closes the open segment at `end_ms` and returns the audio that
    /// arrived in it but belongs to the next one. The closed segment waits
    /// for late audio while the stream has audio beside video.
    fn cut(&mut self, end_ms: u64, late: Late, lead_dts: u64, discontinuity: bool) -> Vec<Frame> {
        self.emit_closing();
        let Some(mut seg) = self.open.take() else {
            return Vec::new();
        };
        let carried = self.split_carried(&mut seg, late);
        if discontinuity {
            self.discontinuity_pending = true;
        }
        let has_audio_beside_video = self
            .tracks
            .as_ref()
            .is_some_and(|t| t.video.is_some() && t.audio.is_some());
        if has_audio_beside_video {
            self.closing = Some(Closing {
                seg,
                end_ms,
                late,
                release_ms: lead_dts.saturating_add(self.limits.interleave),
            });
        } else {
            self.emit(seg, end_ms);
        }
        carried
    }

    /// Removes from `seg` the trailing audio that belongs after the cut.
    fn split_carried(&self, seg: &mut Open, late: Late) -> Vec<Frame> {
        let Some(lead) = self.lead() else {
            return Vec::new();
        };
        let last_kept = seg
            .frames
            .iter()
            .rposition(|f| f.track != lead && late.belongs(f.dts_ms));
        let from = last_kept.map_or(0, |i| i + 1);
        if !seg.frames[from..].iter().any(|f| f.track != lead) {
            return Vec::new();
        }
        let tail = seg.frames.split_off(from);
        let mut carried = Vec::new();
        for f in tail {
            if f.track == lead {
                seg.frames.push(f);
            } else {
                seg.bytes -= f.data.len();
                carried.push(f);
            }
        }
        carried
    }

    fn start_segment(&mut self, first: Frame, now_ms: u64, independent: bool, carried: Vec<Frame>) {
        let dts = first.dts_ms;
        let (anchor_dts, anchor_wall) = *self.anchor.get_or_insert((dts, now_ms));
        let pdt = i128::from(anchor_wall) + i128::from(dts) - i128::from(anchor_dts);
        let seq = self.next_seq;
        self.next_seq += 1;
        let mut seg = Open {
            seq,
            start_ms: dts,
            start_pts_ms: pts(&first),
            frames: Vec::with_capacity(carried.len() + 64),
            bytes: 0,
            discontinuity: std::mem::take(&mut self.discontinuity_pending),
            independent,
            program_date_time_ms: u64::try_from(pdt.max(0)).unwrap_or(u64::MAX),
        };
        for f in carried {
            seg.push(f);
        }
        seg.push(first);
        self.open = Some(seg);
    }

    /// Audio held before the first keyframe: what lies at or after it joins
    /// the first segment, the rest cannot be presented and is dropped.
    fn take_preroll(&mut self, keyframe_dts: u64) -> Vec<Frame> {
        let mut carried = Vec::new();
        for f in self.preroll.drain(..) {
            if f.dts_ms >= keyframe_dts {
                carried.push(f);
            } else {
                self.dropped += 1;
            }
        }
        self.preroll_bytes = 0;
        carried
    }

    fn bound_preroll(&mut self) {
        while let (Some(first), Some(last)) = (self.preroll.front(), self.preroll.back()) {
            let too_long = last.dts_ms.saturating_sub(first.dts_ms) > self.limits.max;
            if !too_long && self.preroll_bytes <= self.limits.max_bytes {
                break;
            }
            if let Some(f) = self.preroll.pop_front() {
                self.preroll_bytes -= f.data.len();
                self.dropped += 1;
            }
        }
    }

    /// Where a segment without a successor ends: one frame after its last
    /// leading-track frame, within the duration bound.
    fn estimated_end(&self, start: u64) -> u64 {
        let Some(last) = self.last_lead else {
            return start.saturating_add(1);
        };
        let aac = self
            .tracks
            .as_ref()
            .filter(|t| t.video.is_none())
            .and_then(|t| t.audio.as_ref())
            .filter(|a| a.sample_rate > 0)
            .map(|a| (AAC_FRAME_SAMPLES * 1000).div_ceil(u64::from(a.sample_rate)));
        let step = self.lead_step.or(aac).unwrap_or(DEFAULT_VIDEO_FRAME_MS);
        let bound = start
            .saturating_add(self.limits.max)
            .saturating_add(OVERSHOOT_MS);
        last.saturating_add(step)
            .clamp(start.saturating_add(1), bound)
    }

    /// Emits everything held and ends the timeline.
    fn flush(&mut self) {
        self.emit_closing();
        if let Some(seg) = self.open.take() {
            let end = self.estimated_end(seg.start_ms);
            self.emit(seg, end);
        }
        self.end_timeline();
    }

    /// Forgets the timeline: what follows starts a new run, after a
    /// discontinuity once any segment was emitted.
    fn end_timeline(&mut self) {
        self.dropped += self.preroll.len() as u64;
        self.preroll.clear();
        self.preroll_bytes = 0;
        self.last_lead = None;
        self.lead_step = None;
        self.anchor = None;
        self.run_start = None;
        if self.next_seq > 0 {
            self.discontinuity_pending = true;
        }
    }

    fn emit_closing(&mut self) {
        if let Some(c) = self.closing.take() {
            self.emit(c.seg, c.end_ms);
        }
    }

    fn emit(&mut self, seg: Open, end_ms: u64) {
        self.ready.push_back(SegmentReady {
            seq: seg.seq,
            frames: seg.frames,
            tracks: self.tracks.clone().unwrap_or(Tracks {
                video: None,
                audio: None,
            }),
            start_dts_ms: seg.start_ms,
            duration_ms: end_ms.saturating_sub(seg.start_ms),
            discontinuity: seg.discontinuity,
            independent: seg.independent,
            program_date_time_ms: seg.program_date_time_ms,
        });
    }
}

/// A frame's presentation time in milliseconds.
fn pts(frame: &Frame) -> i128 {
    i128::from(frame.dts_ms) + i128::from(frame.composition_ms)
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests;
