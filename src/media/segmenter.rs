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
//! * Long keyframe intervals make long segments, each still opening with a
//!   keyframe (HLS wants every segment to start with one, and
//!   `EXT-X-INDEPENDENT-SEGMENTS` says so): OBS's default of one keyframe
//!   every 250 frames gives 8.3 s segments at 30 fps, not 6 s + 2.3 s cut
//!   mid-GOP. The session's `EXT-X-TARGETDURATION`
//!   ([`Segmenter::target_duration_secs`]) is fixed by its first segment:
//!   the smallest whole number of seconds that segment lasts (with 100 ms
//!   of slack for timestamp rounding), and at least the target's, so 2 s
//!   keyframe intervals give 2. HLS requires each rounded `EXTINF` to be at
//!   most the target duration and the target duration never to change, so
//!   from then on a segment that would run past it plus 499 ms is cut
//!   without a keyframe.
//! * A segment never grows past [`SegmenterConfig::max_duration`] or
//!   [`SegmenterConfig::max_bytes`]: reaching either forces a cut even
//!   without a keyframe. Such a segment does not start with a keyframe, so
//!   [`SegmentReady::independent`] is false for it (players joining there
//!   show nothing until the next keyframe). Durations are held below
//!   `max_duration` plus 499 ms, so that
//!   [`SegmenterConfig::target_duration_secs`] bounds every session's
//!   target duration.
//! * Decode times only go forward on each track (`clock`): a repeated or
//!   slightly earlier timestamp, as live encoders send, is moved one
//!   millisecond past the previous frame's, and a segment whose video
//!   frames came bunched up has them spread evenly over its duration.
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
//! Parts (LL-HLS): with [`SegmenterConfig::part_target`] set, the open
//! segment is also cut into parts as frames arrive, drained with
//! [`Segmenter::poll_part`]. A part ends before the leading-track frame
//! that would take it past the part target, so parts last at most the
//! target (but for gaps in the media); it holds the leading-track frames
//! before that frame and the audio before it in time, while audio that
//! arrived early stays for the next part. A segment is exactly its parts in
//! order: its last part is what remains when it closes, emitted just before
//! its [`SegmentReady`]. A part that opens with a keyframe (or of an
//! audio-only stream) is [`PartReady::independent`].
//!
//! Frames that cannot be used are dropped and counted
//! ([`Segmenter::dropped_frames`]): frames before the first [`Tracks`] or of
//! a track the tracks lack, video before the first keyframe of a run,
//! audio that precedes the first keyframe, and audio beside video whose
//! timestamps jumped back while the video's went on.

use std::collections::VecDeque;
use std::time::Duration;

use thiserror::Error;

use super::{Frame, TrackKind, Tracks};

mod clock;

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
/// How far past a whole second a session's first segment may last and
/// still count as that second when the target duration is fixed: keyframe
/// intervals of 2 s stamped in whole milliseconds (29.97 fps gives 2.002 s)
/// should give a target duration of 2, not 3.
const TARGET_SLACK_MS: u64 = 100;

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
    /// The duration LL-HLS parts aim at and never exceed (but for gaps in
    /// the media); zero cuts no parts.
    pub part_target: Duration,
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
            part_target: Duration::ZERO,
        }
    }
}

impl SegmenterConfig {
    /// The `EXT-X-TARGETDURATION` (whole seconds) that every segment from a
    /// segmenter with this configuration satisfies: `max_duration` rounded
    /// up. Fixed for a session, as HLS requires.
    pub fn target_duration_secs(&self) -> u64 {
        millis_to_target(millis(self.max_duration))
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

/// A finished part of the open segment (LL-HLS): the frames to mux as one
/// `moof` + `mdat`, and what the playlist needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartReady {
    /// The segment's sequence number ([`SegmentReady::seq`]).
    pub seq: u64,
    /// The part's index in its segment, from 0.
    pub index: u32,
    /// The frames, in arrival order (so in dts order per track).
    pub frames: Vec<Frame>,
    /// The decoder configuration the frames were coded with.
    pub tracks: Tracks,
    /// Its first leading-track dts.
    pub start_dts_ms: u64,
    /// Its duration, to the next part's (or segment's) first
    /// leading-track dts.
    pub duration_ms: u64,
    /// Whether decoding can start here (`INDEPENDENT=YES`).
    pub independent: bool,
    /// Whether it is its segment's last part.
    pub last: bool,
    /// Whether a discontinuity precedes its segment.
    pub discontinuity: bool,
    /// Wall-clock time of its segment's start, as in
    /// [`SegmentReady::program_date_time_ms`].
    pub program_date_time_ms: u64,
    /// The first video dts after this part, when known (the muxer's
    /// `NextDts`).
    pub next_video_ms: Option<u64>,
    /// The first audio dts after this part, when known.
    pub next_audio_ms: Option<u64>,
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
    part: u64,
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
    /// Frames `..parted` went out in parts already.
    parted: usize,
    /// The next part's index and first leading-track dts, and whether it
    /// opens with a keyframe.
    part_index: u32,
    part_start_ms: u64,
    part_independent: bool,
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
    /// Last video keyframe's dts in this run, and the interval measured
    /// between the last two.
    last_keyframe: Option<u64>,
    keyframe_interval: Option<u64>,
    /// The session's `EXT-X-TARGETDURATION`, fixed by its first segment.
    session_target: Option<u64>,
    clock: clock::Clock,
    /// The last audio dts taken beside video in this run: audio that steps
    /// back past it while the video's timeline goes on cannot be muxed.
    follower_last: Option<u64>,
    ready: VecDeque<SegmentReady>,
    parts: VecDeque<PartReady>,
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
            part: millis(config.part_target),
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
            last_keyframe: None,
            keyframe_interval: None,
            session_target: None,
            clock: clock::Clock::default(),
            follower_last: None,
            ready: VecDeque::new(),
            parts: VecDeque::new(),
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
        let mut frame = frame;
        let moved = self.clock.fix(&mut frame, self.limits.backward_tolerance);
        if frame.track == lead {
            self.push_lead(frame, now_ms, lead, moved);
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

    /// The next finished part, oldest first. Drain parts before segments:
    /// a segment's parts are all queued before its [`SegmentReady`], the
    /// next segment's after them.
    pub fn poll_part(&mut self) -> Option<PartReady> {
        self.parts.pop_front()
    }

    /// How many frames were dropped as unusable (see the module docs).
    pub fn dropped_frames(&self) -> u64 {
        self.dropped
    }

    /// The session's `EXT-X-TARGETDURATION` in seconds, once its first
    /// segment is closed (see the module docs); it never changes after.
    pub fn target_duration_secs(&self) -> Option<u64> {
        self.session_target
    }

    /// The interval between the last two video keyframes of the current
    /// timeline, in milliseconds: what the publisher's keyframe interval
    /// setting gives.
    pub fn keyframe_interval_ms(&self) -> Option<u64> {
        self.keyframe_interval
    }

    /// The longest a segment may last from its first leading-track dts.
    fn bound_ms(&self) -> u64 {
        let max = self.limits.max.saturating_add(OVERSHOOT_MS);
        self.session_target
            .map_or(max, |t| max.min(t.saturating_mul(1000) + OVERSHOOT_MS))
    }

    /// A segment reaching this long without a keyframe is cut: two frames
    /// before its bound (frame steps jitter), so that it ends within it.
    fn cut_after_ms(&self) -> u64 {
        match self.session_target {
            None => self.limits.max,
            Some(_) => {
                let step = self.lead_step.unwrap_or(DEFAULT_VIDEO_FRAME_MS);
                self.bound_ms()
                    .saturating_sub(2 * step)
                    .max(self.limits.target)
                    .min(self.limits.max)
            }
        }
    }

    /// Fixes the session's target duration from its first segment, or from
    /// the segments the keyframe interval makes when that one was closed
    /// early (a jump, or the publisher stopped).
    fn fix_target(&mut self, duration_ms: u64) {
        if self.session_target.is_some() {
            return;
        }
        let secs = |ms: u64| (ms + 999 - TARGET_SLACK_MS) / 1000;
        let natural = self
            .keyframe_interval
            .map_or(0, |k| self.limits.target.div_ceil(k).saturating_mul(k));
        let from_target = secs(self.limits.target.max(natural));
        let from_first = secs(duration_ms);
        let most = millis_to_target(self.limits.max);
        self.session_target = Some(from_first.max(from_target).clamp(1, most));
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

    /// `moved`: the clock moved the frame, so its step from the last one is
    /// no frame duration.
    fn push_lead(&mut self, frame: Frame, now_ms: u64, lead: TrackKind, moved: bool) {
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
            self.note_keyframe(&frame);
            self.start_segment(frame, now_ms, true, carried);
            return;
        };
        let start = open.start_ms;
        let last = self.last_lead.unwrap_or(dts);
        let l = self.limits;
        let bound = start.saturating_add(self.bound_ms());
        let cut_after = self.cut_after_ms();
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
            self.last_keyframe = None;
            self.follower_last = None;
            self.note_keyframe(&frame);
            self.start_segment(frame, now_ms, starts, carried);
            return;
        }
        if !moved && dts > last && dts - last <= MAX_FRAME_STEP_MS {
            self.lead_step = Some(dts - last);
        }
        self.last_lead = Some(dts);
        self.note_keyframe(&frame);
        let Some(open) = &mut self.open else {
            return;
        };
        let due = starts
            && (dts >= start.saturating_add(l.target)
                || pts(&frame) >= open.start_pts_ms + i128::from(l.target));
        let forced = dts >= start.saturating_add(cut_after)
            || (open.bytes + frame.data.len() > l.max_bytes && dts > start);
        if due || forced {
            let carried = self.cut(dts, Late::Before(dts), dts, false);
            self.start_segment(frame, now_ms, starts, carried);
        } else {
            // One millisecond more than the last step: RTMP rounds frame
            // times to milliseconds (33, 34, 33 at 30 fps), and a part
            // must not pass its target.
            let step = self.lead_step.unwrap_or(DEFAULT_VIDEO_FRAME_MS) + 1;
            let part_due = l.part > 0
                && dts > open.part_start_ms
                && dts.saturating_add(step) > open.part_start_ms.saturating_add(l.part);
            if part_due {
                self.cut_part(dts, starts);
            }
            if let Some(open) = &mut self.open {
                open.push(frame);
            }
        }
    }

    /// Measures the keyframe interval on video keyframes.
    fn note_keyframe(&mut self, frame: &Frame) {
        if frame.track != TrackKind::Video || !frame.keyframe {
            return;
        }
        if let Some(prev) = self.last_keyframe.filter(|&p| frame.dts_ms > p) {
            self.keyframe_interval = Some(frame.dts_ms - prev);
        }
        self.last_keyframe = Some(frame.dts_ms);
    }

    /// Ends the open segment's current part before the leading-track frame
    /// at `dts` (not yet pushed), which opens the next part.
    fn cut_part(&mut self, dts: u64, next_independent: bool) {
        // The previous segment's last part goes first; audio still late
        // for it then joins this segment, which muxes it all the same.
        self.emit_closing();
        let Some(lead) = self.lead() else {
            return;
        };
        let tracks = self.tracks.clone();
        let Some(open) = &mut self.open else {
            return;
        };
        let rest = open.frames.split_off(open.parted);
        let (mut part, early): (Vec<Frame>, Vec<Frame>) = rest
            .into_iter()
            .partition(|f| f.track == lead || f.dts_ms < dts);
        if part.is_empty() {
            open.frames.extend(early);
            return;
        }
        let next_audio_ms = early.first().map(|f| f.dts_ms);
        open.frames.extend(part.iter().cloned());
        open.parted = open.frames.len();
        open.frames.extend(early);
        let video_lead = lead == TrackKind::Video;
        let ready = PartReady {
            seq: open.seq,
            index: open.part_index,
            frames: std::mem::take(&mut part),
            tracks: tracks.unwrap_or(Tracks {
                video: None,
                audio: None,
            }),
            start_dts_ms: open.part_start_ms,
            duration_ms: dts - open.part_start_ms,
            independent: open.part_independent,
            last: false,
            discontinuity: open.discontinuity,
            program_date_time_ms: open.program_date_time_ms,
            next_video_ms: video_lead.then_some(dts),
            next_audio_ms: if video_lead { next_audio_ms } else { Some(dts) },
        };
        open.part_index += 1;
        open.part_start_ms = dts;
        open.part_independent = next_independent;
        self.parts.push_back(ready);
    }

    fn push_follower(&mut self, frame: Frame, now_ms: u64) {
        let dts = frame.dts_ms;
        if self.follower_last.is_some_and(|last| dts <= last) {
            // Its clock jumped back alone (the video's did not): decode
            // times must only go forward within a timeline.
            self.dropped += 1;
            return;
        }
        self.follower_last = Some(dts);
        if self.run_start.is_some_and(|r| dts < r) {
            // Audio from before the run's first keyframe, arriving late.
            self.dropped += 1;
            return;
        }
        if let Some(closing) = &mut self.closing {
            // Across a small jump back, audio nearer the old timeline may
            // still lie before audio the closed segment holds: it belongs to
            // the new one then, as decode times only go forward.
            let after_held = closing
                .seg
                .frames
                .iter()
                .rev()
                .find(|f| f.track == frame.track)
                .is_none_or(|f| f.dts_ms < dts);
            if after_held && closing.late.belongs(dts) {
                closing.seg.push(frame);
                return;
            }
            // Audio arrives in dts order: nothing later belongs there either.
            self.emit_closing();
        }
        let l = self.limits;
        let bound_ms = self.bound_ms();
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
        let stalled = dts >= start.saturating_add(bound_ms).saturating_add(l.interleave)
            && self
                .last_lead
                .is_some_and(|last| dts <= last.saturating_add(l.forward_gap));
        let full = open.bytes + frame.data.len() > l.max_bytes && dts > start;
        if stalled || full {
            // Cut here so the segment stays bounded; past the duration bound
            // the timeline has a hole, which is a discontinuity.
            let bound = start.saturating_add(bound_ms);
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
        self.fix_target(end_ms.saturating_sub(seg.start_ms));
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
            parted: 0,
            part_index: 0,
            part_start_ms: dts,
            part_independent: independent,
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
        let bound = start.saturating_add(self.bound_ms());
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
        self.last_keyframe = None;
        self.keyframe_interval = None;
        self.follower_last = None;
        self.clock.reset();
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

    fn emit(&mut self, mut seg: Open, end_ms: u64) {
        self.fix_target(end_ms.saturating_sub(seg.start_ms));
        if self.limits.part > 0 && seg.parted < seg.frames.len() {
            let video_lead = self.lead() == Some(TrackKind::Video);
            self.parts.push_back(PartReady {
                seq: seg.seq,
                index: seg.part_index,
                frames: seg.frames[seg.parted..].to_vec(),
                tracks: self.tracks.clone().unwrap_or(Tracks {
                    video: None,
                    audio: None,
                }),
                start_dts_ms: seg.part_start_ms,
                duration_ms: end_ms.saturating_sub(seg.part_start_ms),
                independent: seg.part_independent,
                last: true,
                discontinuity: seg.discontinuity,
                program_date_time_ms: seg.program_date_time_ms,
                next_video_ms: video_lead.then_some(end_ms),
                next_audio_ms: (!video_lead).then_some(end_ms),
            });
        } else if self.limits.part == 0 && self.lead() == Some(TrackKind::Video) {
            // Parts went out as the frames came, with the times they had;
            // only a segment muxed whole can still have its steps evened.
            clock::even_out(&mut seg.frames, seg.start_ms, end_ms);
        }
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

/// The target duration that a bound of `max_ms` (plus [`OVERSHOOT_MS`])
/// satisfies: `max_ms` rounded up to whole seconds.
fn millis_to_target(max_ms: u64) -> u64 {
    max_ms.div_ceil(1000).max(1)
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests;
