//! Segmenter tests: hand-built streams for each rule, and property tests
//! over random GOP patterns, jitter and audio/video interleavings.

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use bytes::Bytes;
use proptest::prelude::*;

use super::*;
use crate::media::flv::{AudioSpecificConfig, AvcConfig, VideoConfig};

const T0: u64 = 1_700_000_000_000;

fn avc(level: u8) -> VideoConfig {
    VideoConfig::Avc(AvcConfig {
        profile: 100,
        compatibility: 0,
        level,
        nalu_length_size: 4,
        sps: vec![],
        pps: vec![],
        raw: Bytes::new(),
    })
}

fn aac() -> AudioSpecificConfig {
    AudioSpecificConfig {
        object_type: 2,
        sample_rate_index: 3,
        sample_rate: 48000,
        channels: 2,
        raw: Bytes::from_static(&[0x11, 0x90]),
    }
}

fn av_tracks() -> Tracks {
    Tracks {
        video: Some(avc(31)),
        audio: Some(aac()),
    }
}

fn video_tracks() -> Tracks {
    Tracks {
        video: Some(avc(31)),
        audio: None,
    }
}

fn audio_tracks() -> Tracks {
    Tracks {
        video: None,
        audio: Some(aac()),
    }
}

/// A frame whose payload is a unique id, so tests can follow it.
fn frame(track: TrackKind, dts_ms: u64, keyframe: bool, id: u32) -> Frame {
    Frame {
        track,
        dts_ms,
        composition_ms: 0,
        keyframe,
        data: Bytes::copy_from_slice(&id.to_be_bytes()),
    }
}

fn v(dts: u64, key: bool) -> Frame {
    frame(TrackKind::Video, dts, key, dts as u32)
}

fn a(dts: u64) -> Frame {
    frame(TrackKind::Audio, dts, true, 1_000_000 + dts as u32)
}

fn segmenter(tracks: Tracks) -> Segmenter {
    let mut s = Segmenter::new(&SegmenterConfig::default()).unwrap();
    s.set_tracks(tracks);
    s
}

fn drain(s: &mut Segmenter) -> Vec<SegmentReady> {
    std::iter::from_fn(|| s.poll_segment()).collect()
}

/// Feeds frames with the wall clock following their dts from `T0`.
fn feed(s: &mut Segmenter, frames: impl IntoIterator<Item = Frame>) -> Vec<SegmentReady> {
    let mut out = Vec::new();
    for f in frames {
        let now = T0 + f.dts_ms;
        s.push(f, now);
        out.extend(drain(s));
    }
    out
}

fn dts_of(seg: &SegmentReady, track: TrackKind) -> Vec<u64> {
    seg.frames
        .iter()
        .filter(|f| f.track == track)
        .map(|f| f.dts_ms)
        .collect()
}

/// 30 fps video (33 ms steps) with a keyframe every `gop` frames.
fn video(frames: u64, gop: u64) -> Vec<Frame> {
    (0..frames).map(|i| v(i * 33, i % gop == 0)).collect()
}

#[test]
fn cuts_at_first_keyframe_after_target() {
    let mut s = segmenter(video_tracks());
    // Keyframes at 0, 990, 1980, 2970, 3960, 4950: the first at or after
    // 2000 is 2970; then the first at or after 4970 is 5940.
    let segs = feed(&mut s, video(200, 30));
    assert_eq!(segs.len(), 2);
    assert_eq!(
        (segs[0].seq, segs[0].start_dts_ms, segs[0].duration_ms),
        (0, 0, 2970)
    );
    assert_eq!(
        (segs[1].seq, segs[1].start_dts_ms, segs[1].duration_ms),
        (1, 2970, 2970)
    );
    assert!(segs.iter().all(|s| s.independent && !s.discontinuity));
    assert_eq!(segs[0].frames.len(), 90);
    assert!(segs[1].frames[0].keyframe);
    assert_eq!(segs[0].program_date_time_ms, T0);
    assert_eq!(segs[1].program_date_time_ms, T0 + 2970);
    assert_eq!(segs[0].tracks, video_tracks());
}

#[test]
fn cuts_where_presentation_reaches_the_target() {
    // As x265 in ffmpeg 9's FLV: 25 fps with B-frames, 2 s GOPs; the
    // first keyframe's composition offset is 80 ms, later ones' 120 ms, so
    // the second decodes at 1960 but shows at 2080, two seconds after the
    // first (shown at 80).
    let mut s = segmenter(video_tracks());
    let frames = (0..150u64).map(|i| {
        let mut f = v(i * 40, [0, 49, 99].contains(&i));
        f.composition_ms = if i == 0 { 80 } else { 120 };
        f
    });
    let mut segs = feed(&mut s, frames);
    s.finish();
    segs.extend(drain(&mut s));
    let starts: Vec<_> = segs.iter().map(|s| s.start_dts_ms).collect();
    assert_eq!(starts, [0, 1960, 3960], "cut at every keyframe");
    // A keyframe short of the target in both clocks does not cut.
    let mut s = segmenter(video_tracks());
    let frames = (0..100u64).map(|i| {
        let mut f = v(i * 40, i % 49 == 0);
        f.composition_ms = 80;
        f
    });
    let segs = feed(&mut s, frames);
    assert_eq!(segs.len(), 1);
    assert_eq!(segs[0].duration_ms, 98 * 40);
}

#[test]
fn finish_flushes_with_one_frame_duration() {
    let mut s = segmenter(video_tracks());
    let mut segs = feed(&mut s, video(100, 30));
    s.finish();
    segs.extend(drain(&mut s));
    assert_eq!(segs.len(), 2);
    // Last frame at 99 * 33 = 3267, plus one 33 ms frame.
    assert_eq!(segs[1].start_dts_ms, 2970);
    assert_eq!(segs[1].duration_ms, 3267 + 33 - 2970);
    assert_eq!(segs.iter().map(|s| s.frames.len()).sum::<usize>(), 100);
    // Later frames start a new run after a discontinuity.
    s.push(v(10_000, true), T0 + 50_000);
    s.finish();
    let seg = s.poll_segment().unwrap();
    assert!(seg.discontinuity);
    assert_eq!(seg.seq, 2);
    assert_eq!(seg.program_date_time_ms, T0 + 50_000);
}

#[test]
fn audio_only_cuts_on_audio() {
    let mut s = segmenter(audio_tracks());
    // AAC at 48 kHz: 21.33 ms per frame; RTMP rounds to whole ms.
    let frames: Vec<_> = (0..300u64).map(|i| a(i * 64 / 3)).collect();
    let mut segs = feed(&mut s, frames);
    s.finish();
    segs.extend(drain(&mut s));
    // First audio dts at or after 2000: 94 * 64 / 3 = 2005.
    assert_eq!(segs[0].duration_ms, 2005);
    assert_eq!(segs[1].start_dts_ms, 2005);
    assert!(segs.iter().all(|s| s.independent));
    let last = segs.last().unwrap();
    // The last frame (299 * 64 / 3 = 6378) plus its 21 ms step.
    assert_eq!(last.start_dts_ms + last.duration_ms, 6378 + 21);
}

#[test]
fn leading_audio_moves_to_the_segment_its_dts_is_in() {
    let mut s = segmenter(av_tracks());
    // Audio arrives 100 ms ahead of the video with the same dts.
    let mut frames = Vec::new();
    let mut audio = (0..).map(|i| i * 20);
    let mut next_audio = audio.next().unwrap();
    for f in video(150, 30) {
        while next_audio <= f.dts_ms + 100 {
            frames.push(a(next_audio));
            next_audio = audio.next().unwrap();
        }
        frames.push(f);
    }
    let mut segs = feed(&mut s, frames);
    s.finish();
    segs.extend(drain(&mut s));
    assert_eq!(segs[0].duration_ms, 2970);
    let audio0 = dts_of(&segs[0], TrackKind::Audio);
    let audio1 = dts_of(&segs[1], TrackKind::Audio);
    assert_eq!(*audio0.last().unwrap(), 2960);
    assert_eq!(audio1[0], 2980);
    // The carried audio precedes the keyframe in the new segment, as it
    // arrived before it.
    assert_eq!(segs[1].frames[0].track, TrackKind::Audio);
    assert!(
        segs[1]
            .frames
            .iter()
            .find(|f| f.track == TrackKind::Video)
            .unwrap()
            .keyframe
    );
}

#[test]
fn closed_segment_waits_for_late_audio() {
    let mut s = segmenter(av_tracks());
    // Audio arrives 200 ms behind the video with the same dts.
    let mut frames = Vec::new();
    let mut next_audio = 0;
    for f in video(150, 30) {
        while next_audio + 200 <= f.dts_ms {
            frames.push(a(next_audio));
            next_audio += 20;
        }
        frames.push(f);
    }
    let mut emitted_at = None;
    for f in frames {
        let (track, dts) = (f.track, f.dts_ms);
        s.push(f, T0 + dts);
        if let Some(seg) = s.poll_segment() {
            emitted_at.get_or_insert((track, dts, seg));
        }
    }
    let (track, dts, seg) = emitted_at.unwrap();
    // Emitted by the first audio frame at or after the cut at 2970.
    assert_eq!((track, dts), (TrackKind::Audio, 2980));
    assert_eq!(*dts_of(&seg, TrackKind::Audio).last().unwrap(), 2960);
    assert_eq!(seg.duration_ms, 2970);
}

#[test]
fn video_without_audio_frames_releases_after_interleave() {
    let mut s = segmenter(av_tracks());
    let mut first = None;
    for f in video(200, 30) {
        let dts = f.dts_ms;
        s.push(f, T0 + dts);
        if let Some(seg) = s.poll_segment() {
            first.get_or_insert((dts, seg.duration_ms));
        }
    }
    // The cut at 2970 waits for audio until 1 s of video later.
    assert_eq!(first, Some((3993, 2970)));
}

#[test]
fn frames_before_the_first_keyframe_are_dropped() {
    let mut s = segmenter(av_tracks());
    let segs = feed(
        &mut s,
        [
            a(0),
            v(10, false),
            a(20),
            v(43, true),
            a(40),
            a(60),
            v(76, false),
        ],
    );
    assert!(segs.is_empty());
    s.finish();
    let seg = s.poll_segment().unwrap();
    // Video before the keyframe and audio before its dts are dropped.
    assert_eq!(s.dropped_frames(), 4);
    assert_eq!(dts_of(&seg, TrackKind::Video), vec![43, 76]);
    assert_eq!(dts_of(&seg, TrackKind::Audio), vec![60]);
    assert_eq!(seg.start_dts_ms, 43);
}

#[test]
fn forward_jump_is_a_discontinuity() {
    let mut s = segmenter(video_tracks());
    let mut frames = video(50, 30);
    // 11 s later, mid-GOP.
    frames.extend((0..100).map(|i| v(20_000 + i * 33, i % 30 == 0)));
    let mut segs = feed(&mut s, frames);
    s.finish();
    segs.extend(drain(&mut s));
    assert_eq!(segs[0].start_dts_ms, 0);
    // Closed one frame after its last frame (49 * 33 = 1617).
    assert_eq!(segs[0].duration_ms, 1617 + 33);
    assert!(segs[1].discontinuity);
    assert_eq!(segs[1].start_dts_ms, 20_000);
    // The wall clock is re-anchored at the jump.
    assert_eq!(segs[1].program_date_time_ms, T0 + 20_000);
    assert!(!segs[2].discontinuity);
    assert_eq!(segs[2].start_dts_ms, 20_000 + 90 * 33);
}

#[test]
fn backward_jump_is_a_discontinuity_small_steps_are_not() {
    let mut s = segmenter(video_tracks());
    let frames = [
        v(0, true),
        v(40, false),
        v(80, false),
        v(60, false), // 20 ms back: within tolerance
        v(100, false),
        v(5, true), // a reset: back 95 ms... within tolerance too
        v(0, true), // back 5 ms more
    ];
    let segs = feed(&mut s, frames);
    assert!(segs.is_empty());
    s.push(v(2000, true), T0 + 2000);
    let segs = drain(&mut s);
    assert_eq!(segs.len(), 1);
    assert!(!segs[0].discontinuity);
    s.push(v(500, true), T0 + 2040);
    let segs = drain(&mut s);
    assert_eq!(segs.len(), 1);
    // Closed one frame after its only frame: the last step that was no
    // repeat, from 60 (moved to 81) to 100.
    assert_eq!((segs[0].start_dts_ms, segs[0].duration_ms), (2000, 19));
    s.finish();
    let seg = s.poll_segment().unwrap();
    assert!(seg.discontinuity);
    assert_eq!(seg.start_dts_ms, 500);
    assert_eq!(seg.program_date_time_ms, T0 + 2040);
}

#[test]
fn track_change_is_a_discontinuity_same_tracks_are_not() {
    let mut s = segmenter(video_tracks());
    feed(&mut s, video(40, 30));
    s.set_tracks(video_tracks());
    assert!(s.poll_segment().is_none());
    let changed = Tracks {
        video: Some(avc(40)),
        audio: None,
    };
    s.set_tracks(changed.clone());
    let old = s.poll_segment().unwrap();
    assert_eq!(old.tracks, video_tracks());
    assert!(!old.discontinuity);
    s.push(v(1320, true), T0 + 1320);
    s.finish();
    let new = s.poll_segment().unwrap();
    assert_eq!(new.tracks, changed);
    assert!(new.discontinuity);
    assert_eq!(new.seq, 1);
}

#[test]
fn reconnect_marks_the_next_segment() {
    let mut s = segmenter(av_tracks());
    feed(&mut s, [v(0, true), a(0), v(33, false), a(21)]);
    s.discontinuity();
    let old = s.poll_segment().unwrap();
    assert_eq!(old.frames.len(), 4);
    // The new publisher starts its timestamps at 0 again.
    let segs = feed(&mut s, [a(0), v(0, true)]);
    assert!(segs.is_empty());
    s.finish();
    let new = s.poll_segment().unwrap();
    assert!(new.discontinuity);
    assert_eq!(new.seq, 1);
    assert_eq!(new.frames.len(), 2);
}

#[test]
fn discard_drops_the_open_segment_and_reuses_its_number() {
    let mut s = segmenter(video_tracks());
    let mut segs = feed(&mut s, video(100, 30));
    assert_eq!(segs.len(), 1, "one segment cut at 2970, frames 90-99 open");
    s.discard();
    assert!(s.poll_segment().is_none(), "the open segment is dropped");
    assert_eq!(s.dropped_frames(), 10);
    // The next run takes the dropped segment's number, after a
    // discontinuity.
    segs.extend(feed(&mut s, [v(20_000, true), v(20_033, false)]));
    s.finish();
    segs.extend(drain(&mut s));
    assert_eq!(segs.len(), 2);
    assert_eq!(segs[1].seq, 1);
    assert!(segs[1].discontinuity);
    assert_eq!(segs[1].start_dts_ms, 20_000);

    // Audio held before the first keyframe goes too; before any segment
    // nothing is marked a discontinuity.
    let mut s = segmenter(av_tracks());
    feed(&mut s, [a(0), a(21), v(40, true), v(73, false)]);
    s.discard();
    assert!(s.poll_segment().is_none());
    feed(&mut s, [a(5000), a(5021)]);
    s.discard();
    assert_eq!(s.dropped_frames(), 6);
    feed(&mut s, [v(9000, true)]);
    s.finish();
    let seg = s.poll_segment().unwrap();
    assert_eq!((seg.seq, seg.discontinuity), (0, false));

    // A closed segment waiting for late audio is complete: it stays.
    let mut s = segmenter(av_tracks());
    let early = feed(&mut s, [v(0, true), a(0), v(2000, true)]);
    assert!(early.is_empty(), "the first segment waits for late audio");
    s.discard();
    let kept = drain(&mut s);
    assert_eq!(kept.len(), 1);
    assert_eq!((kept[0].seq, kept[0].frames.len()), (0, 2));
}

#[test]
fn long_gop_forces_a_bounded_cut() {
    let mut s = segmenter(video_tracks());
    // One keyframe every 10 s.
    let mut segs = feed(&mut s, video(700, 300));
    s.finish();
    segs.extend(drain(&mut s));
    let config = SegmenterConfig::default();
    for seg in &segs {
        assert!(seg.duration_ms <= 6499, "{}", seg.duration_ms);
        assert!((seg.duration_ms + 500) / 1000 <= config.target_duration_secs());
    }
    // 6 s is reached at frame 182 (6006 ms), without a keyframe.
    assert_eq!(segs[1].start_dts_ms, 182 * 33);
    assert!(!segs[1].independent);
    assert!(!segs[1].discontinuity);
    // The keyframe at 9900 cuts as usual once 2 s have passed.
    assert_eq!(segs[2].start_dts_ms, 9900);
    assert!(segs[2].independent);
}

#[test]
fn size_limit_forces_a_cut() {
    let config = SegmenterConfig {
        max_bytes: 40,
        ..SegmenterConfig::default()
    };
    let mut s = Segmenter::new(&config).unwrap();
    s.set_tracks(video_tracks());
    // 4-byte frames: ten fit.
    let segs = feed(&mut s, video(25, 100));
    assert_eq!(segs.len(), 2);
    assert_eq!(segs[0].frames.len(), 10);
    assert_eq!(segs[1].start_dts_ms, 330);
}

#[test]
fn a_gap_past_the_bound_is_a_discontinuity() {
    let mut s = segmenter(video_tracks());
    // 5 s of video, then a 3 s pause (below the 10 s jump threshold, but
    // the segment would last 8 s).
    let mut frames = video(150, 300);
    frames.push(v(8000, false));
    let segs = feed(&mut s, frames);
    assert_eq!(segs.len(), 1);
    assert_eq!(segs[0].duration_ms, 149 * 33 + 33);
    s.finish();
    let next = s.poll_segment().unwrap();
    assert!(next.discontinuity && !next.independent);
}

#[test]
fn config_is_checked() {
    let bad = |c: SegmenterConfig| Segmenter::new(&c).unwrap_err();
    let d = SegmenterConfig::default();
    assert_eq!(
        bad(SegmenterConfig {
            target: Duration::ZERO,
            ..d.clone()
        }),
        ConfigError::TargetTooShort(Duration::ZERO)
    );
    assert!(matches!(
        bad(SegmenterConfig {
            max_duration: Duration::from_secs(1),
            ..d.clone()
        }),
        ConfigError::MaxBelowTarget { .. }
    ));
    assert_eq!(
        bad(SegmenterConfig {
            max_bytes: 0,
            ..d.clone()
        }),
        ConfigError::ZeroMaxBytes
    );
    assert_eq!(d.target_duration_secs(), 6);
    let odd = SegmenterConfig {
        max_duration: Duration::from_millis(6001),
        ..d
    };
    assert_eq!(odd.target_duration_secs(), 7);
}

#[test]
fn frames_without_tracks_are_dropped() {
    let mut s = Segmenter::new(&SegmenterConfig::default()).unwrap();
    s.push(v(0, true), T0);
    s.set_tracks(video_tracks());
    s.push(a(0), T0);
    assert_eq!(s.dropped_frames(), 2);
    s.finish();
    assert!(s.poll_segment().is_none());
}

/// A generated stream: frames in arrival order, and what to expect.
#[derive(Debug, Clone)]
struct Stream {
    frames: Vec<(Frame, u64)>,
    /// Video keyframe dts, in order.
    keyframes: Vec<u64>,
    /// Last video dts and the step before it.
    last_video: (u64, u64),
    first_keyframe: u64,
}

/// Video with the given GOP lengths (in frames) and per-frame steps, plus
/// optional audio shifted in arrival by `lag` ms with per-frame jitter.
fn build_stream(
    gops: &[u64],
    steps: &[u64],
    audio: Option<(u64, i64, &[u64])>,
    start: u64,
) -> Stream {
    let mut video = Vec::new();
    let mut keyframes = Vec::new();
    let mut dts = start;
    let mut last_video = (start, DEFAULT_VIDEO_FRAME_MS);
    let mut id = 0u32;
    for &gop in gops {
        for i in 0..gop {
            if i == 0 {
                keyframes.push(dts);
            }
            video.push((frame(TrackKind::Video, dts, i == 0, id), dts as i64));
            if id > 0 {
                last_video = (dts, dts - last_video.0);
            }
            id += 1;
            dts += steps[id as usize % steps.len()];
        }
    }
    let mut all = video;
    if let Some((step, lag, jitter)) = audio {
        // Audio from 200 ms before the first keyframe to the end.
        let mut adts = start.saturating_sub(200);
        let mut key = i64::MIN;
        let mut j = 0;
        while adts <= last_video.0 {
            key = key.max(adts as i64 + lag + jitter[j % jitter.len()] as i64);
            all.push((frame(TrackKind::Audio, adts, true, 1 << 20 | id), key));
            id += 1;
            j += 1;
            adts += step;
        }
    }
    // Stable: per-track order is kept, keys are monotonic per track.
    all.sort_by_key(|(_, key)| *key);
    Stream {
        frames: all
            .into_iter()
            .map(|(f, key)| (f, T0.saturating_add_signed(key)))
            .collect(),
        keyframes,
        last_video,
        first_keyframe: start,
    }
}

fn run(s: &mut Segmenter, stream: &Stream) -> Vec<SegmentReady> {
    let mut out = Vec::new();
    for (f, now) in &stream.frames {
        s.push(f.clone(), *now);
        out.extend(drain(s));
    }
    s.finish();
    out.extend(drain(s));
    out
}

fn gop_strategy() -> impl Strategy<Value = Vec<u64>> {
    // Up to 75 frames of at most 53 ms: a segment (2 s plus at most one
    // GOP) stays below the 6 s bound.
    prop::collection::vec(1u64..=75, 1..12)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn segments_follow_the_rules(
        gops in gop_strategy(),
        base_step in 20u64..=50,
        jitter in prop::collection::vec(0u64..=3, 1..16),
        with_audio in any::<bool>(),
        audio_step in 20u64..=24,
        lag in -300i64..=300,
        audio_jitter in prop::collection::vec(0u64..=50, 1..16),
        start in 0u64..100_000,
    ) {
        let steps: Vec<u64> = jitter.iter().map(|j| base_step + j).collect();
        let audio = with_audio.then_some((audio_step, lag, audio_jitter.as_slice()));
        let stream = build_stream(&gops, &steps, audio, start);
        let mut s = segmenter(if with_audio { av_tracks() } else { video_tracks() });
        let segs = run(&mut s, &stream);

        // Every frame exactly once, except audio before the first keyframe.
        let expected: HashSet<Bytes> = stream
            .frames
            .iter()
            .filter(|(f, _)| f.track == TrackKind::Video || f.dts_ms >= stream.first_keyframe)
            .map(|(f, _)| f.data.clone())
            .collect();
        let got: Vec<Bytes> = segs.iter().flat_map(|s| s.frames.iter().map(|f| f.data.clone())).collect();
        prop_assert_eq!(got.len(), expected.len());
        prop_assert_eq!(got.into_iter().collect::<HashSet<_>>(), expected.clone());
        prop_assert_eq!(s.dropped_frames() as usize, stream.frames.len() - expected.len());

        // Dts order per track, across segments.
        for track in [TrackKind::Video, TrackKind::Audio] {
            let dts: Vec<u64> = segs.iter().flat_map(|s| dts_of(s, track)).collect();
            prop_assert!(dts.windows(2).all(|w| w[0] <= w[1]));
        }

        let mut sum = 0;
        let target = s.target_duration_secs().unwrap();
        for (i, seg) in segs.iter().enumerate() {
            prop_assert_eq!(seg.seq, i as u64);
            prop_assert!(!seg.discontinuity);
            prop_assert!((seg.duration_ms + 500) / 1000 <= target, "{} > {}", seg.duration_ms, target);
            let first_video = seg.frames.iter().find(|f| f.track == TrackKind::Video).unwrap();
            prop_assert_eq!(first_video.keyframe, seg.independent);
            prop_assert_eq!(first_video.dts_ms, seg.start_dts_ms);
            prop_assert_eq!(seg.program_date_time_ms, T0 + seg.start_dts_ms);
            let end = seg.start_dts_ms + seg.duration_ms;
            if let Some(next) = segs.get(i + 1) {
                prop_assert_eq!(end, next.start_dts_ms);
                // The cut is the first keyframe at or after the target, or,
                // when that would overrun the session's target duration
                // (fixed by the first segment), a forced one before it.
                let due = stream.keyframes.iter().find(|&&k| k >= seg.start_dts_ms + 2000);
                if next.independent && seg.independent {
                    prop_assert_eq!(due, Some(&next.start_dts_ms));
                } else if next.independent {
                    // After a forced cut, presentation times (which the cut
                    // also follows) start off a keyframe's.
                    prop_assert!(stream.keyframes.contains(&next.start_dts_ms));
                } else {
                    prop_assert!(i > 0, "the first segment sets the target");
                    prop_assert!(due.is_none_or(|&k| k > next.start_dts_ms));
                    prop_assert!(seg.duration_ms + 600 >= target * 1000, "{}", seg.duration_ms);
                }
            } else {
                prop_assert_eq!(end, stream.last_video.0 + stream.last_video.1);
            }
            // Audio is in the segment its dts falls in.
            for dts in dts_of(seg, TrackKind::Audio) {
                prop_assert!(dts >= seg.start_dts_ms && dts < end, "{} not in {}..{}", dts, seg.start_dts_ms, end);
            }
            sum += seg.duration_ms;
        }
        prop_assert_eq!(sum, stream.last_video.0 + stream.last_video.1 - stream.first_keyframe);
    }

    #[test]
    fn audio_only_cuts_at_target(steps in prop::collection::vec(20u64..=24, 1..8), n in 1usize..600) {
        let mut s = segmenter(audio_tracks());
        let mut dts = 0;
        let mut frames = Vec::new();
        for i in 0..n {
            frames.push(a(dts));
            dts += steps[i % steps.len()];
        }
        let all: Vec<u64> = frames.iter().map(|f| f.dts_ms).collect();
        let mut segs = feed(&mut s, frames);
        s.finish();
        segs.extend(drain(&mut s));
        prop_assert_eq!(segs.iter().map(|s| s.frames.len()).sum::<usize>(), n);
        for pair in segs.windows(2) {
            let due = all.iter().find(|&&d| d >= pair[0].start_dts_ms + 2000);
            prop_assert_eq!(due, Some(&pair[1].start_dts_ms));
            prop_assert_eq!(pair[0].start_dts_ms + pair[0].duration_ms, pair[1].start_dts_ms);
        }
    }

    /// Timestamp jumps, long GOPs and interleaving together: nothing is lost
    /// or duplicated, every segment fits the target duration, and each jump
    /// is one discontinuity.
    #[test]
    fn jumps_and_long_gops_stay_bounded(
        parts in prop::collection::vec((prop::collection::vec(1u64..=400, 1..4), 0u64..200_000), 1..5),
        lag in -200i64..=200,
        with_audio in any::<bool>(),
    ) {
        let mut s = segmenter(if with_audio { av_tracks() } else { video_tracks() });
        let config = SegmenterConfig::default();
        let mut segs = Vec::new();
        let mut sent = HashSet::new();
        let mut prev_end: Option<u64> = None;
        let mut jumps = 0;
        for (k, (gops, start)) in parts.iter().enumerate() {
            let stream = build_stream(gops, &[33, 34], with_audio.then_some((21, lag, &[0][..])), *start);
            if let Some(end) = prev_end {
                let back = stream.first_keyframe + 100 < end;
                let forward = stream.first_keyframe > end + 10_000;
                jumps += usize::from(back || forward);
                if !(back || forward) {
                    // Not a jump by the thresholds: leave it out.
                    continue;
                }
            }
            for (f, now) in &stream.frames {
                // Tag frames with their part so ids stay unique.
                let mut f = f.clone();
                let mut data = f.data.to_vec();
                data.push(k as u8);
                f.data = data.into();
                sent.insert(f.data.clone());
                s.push(f, *now);
                segs.extend(drain(&mut s));
            }
            prev_end = Some(stream.last_video.0);
        }
        s.finish();
        segs.extend(drain(&mut s));
        let got: Vec<Bytes> = segs.iter().flat_map(|s| s.frames.iter().map(|f| f.data.clone())).collect();
        prop_assert_eq!(got.len() + s.dropped_frames() as usize, sent.len());
        let got: HashSet<Bytes> = got.into_iter().collect();
        prop_assert!(got.is_subset(&sent));
        for (i, seg) in segs.iter().enumerate() {
            prop_assert_eq!(seg.seq, i as u64);
            prop_assert!(seg.duration_ms > 0);
            prop_assert!((seg.duration_ms + 500) / 1000 <= config.target_duration_secs(), "{}", seg.duration_ms);
        }
        // A jump also ends a stretched segment early, so there may be more
        // discontinuities than jumps, never fewer.
        let discontinuities = segs.iter().filter(|s| s.discontinuity).count();
        prop_assert!(discontinuities >= jumps);
        // Segment starts and frames agree within each run.
        let mut by_run: BTreeMap<usize, Vec<&SegmentReady>> = BTreeMap::new();
        let mut run_no = 0;
        for seg in &segs {
            run_no += usize::from(seg.discontinuity);
            by_run.entry(run_no).or_default().push(seg);
        }
        for run in by_run.values() {
            for pair in run.windows(2) {
                prop_assert_eq!(pair[0].start_dts_ms + pair[0].duration_ms, pair[1].start_dts_ms);
            }
        }
    }
}

/// The segmenter as the publish pipeline configures it: room for OBS's
/// default keyframe interval.
fn obs_ready(tracks: Tracks) -> Segmenter {
    let mut s = Segmenter::new(&SegmenterConfig {
        max_duration: Duration::from_secs(12),
        ..SegmenterConfig::default()
    })
    .unwrap();
    s.set_tracks(tracks);
    s
}

#[test]
fn obs_keyframe_interval_gives_whole_gop_segments() {
    let mut s = obs_ready(video_tracks());
    // A keyframe every 250 frames, 8.25 s at 33 ms.
    let mut segs = feed(&mut s, video(800, 250));
    assert_eq!(s.keyframe_interval_ms(), Some(8250));
    s.finish();
    segs.extend(drain(&mut s));
    assert_eq!(segs.len(), 4);
    assert!(segs.iter().all(|s| s.independent && !s.discontinuity));
    assert_eq!(segs[1].start_dts_ms, 250 * 33);
    assert_eq!(segs[0].duration_ms, 8250);
    assert_eq!(s.target_duration_secs(), Some(9));
}

#[test]
fn the_first_segment_fixes_the_target_duration() {
    let mut s = obs_ready(video_tracks());
    assert_eq!(s.target_duration_secs(), None);
    // A keyframe after 2013 ms, then one every 9.9 s.
    let frames = (0..1000).map(|i| v(i * 33, i == 0 || (i >= 61 && (i - 61) % 300 == 0)));
    let mut segs = feed(&mut s, frames);
    assert_eq!(s.keyframe_interval_ms(), Some(9900));
    s.finish();
    segs.extend(drain(&mut s));
    assert_eq!(segs[0].duration_ms, 2013);
    assert_eq!(s.target_duration_secs(), Some(2));
    for seg in &segs {
        assert!(seg.duration_ms <= 2499, "{}", seg.duration_ms);
    }
    // The long GOPs no longer fit: cut without keyframes, and said so.
    assert!(segs.iter().any(|s| !s.independent));
}

#[test]
fn two_second_keyframes_stamped_at_29_97_fps_give_2() {
    let mut s = segmenter(video_tracks());
    // 60 frames at 29.97 fps: 2002 ms.
    let frames = (0..200).map(|i| v(i * 1001 / 30, i % 60 == 0));
    let segs = feed(&mut s, frames);
    assert_eq!(segs[0].duration_ms, 2002);
    assert_eq!(s.target_duration_secs(), Some(2));
    // A short first segment (a publisher that stops at once) gives the
    // target's.
    let mut short = segmenter(video_tracks());
    feed(&mut short, video(10, 60));
    short.finish();
    assert_eq!(drain(&mut short).len(), 1);
    assert_eq!(short.target_duration_secs(), Some(2));
}

#[test]
fn bunched_timestamps_make_increasing_decode_times() {
    let mut s = segmenter(av_tracks());
    let mut frames = Vec::new();
    // GStreamer's start: 34, 163, 209, 233, 233, 256, 279, 279, then even.
    let bunched = [34, 163, 209, 233, 233, 256, 279, 279];
    for (i, t) in bunched
        .into_iter()
        .chain((1..120).map(|i| 279 + i * 33))
        .enumerate()
    {
        frames.push(v(t, i % 60 == 0));
        frames.push(a(t));
        frames.push(a(t));
    }
    let mut segs = feed(&mut s, frames);
    s.finish();
    segs.extend(drain(&mut s));
    let video: Vec<u64> = segs
        .iter()
        .flat_map(|s| dts_of(s, TrackKind::Video))
        .collect();
    // Spread evenly over the first segment: no step is a bunch.
    assert_eq!(video[0], 34);
    assert!(video.windows(2).all(|w| w[1] - w[0] >= 16), "{video:?}");
    for track in [TrackKind::Video, TrackKind::Audio] {
        let all: Vec<u64> = segs.iter().flat_map(|s| dts_of(s, track)).collect();
        assert!(all.windows(2).all(|w| w[0] < w[1]), "{track:?}: {all:?}");
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    /// Whatever the publisher's clock does (repeats, steps back, bunches,
    /// gaps, jumps back of both tracks), decode times within a run only go
    /// forward on each track, and every segment fits the session's target
    /// duration.
    #[test]
    fn decode_times_strictly_increase(
        steps in prop::collection::vec(
            (prop_oneof![8 => -40i64..=150, 1 => Just(-5000)], any::<bool>(), 0u8..4),
            1..400,
        ),
    ) {
        let mut s = segmenter(av_tracks());
        let mut t: i64 = 1_000_000;
        let mut segs = Vec::new();
        for (i, (step, key, audio)) in steps.iter().enumerate() {
            t = (t + step).max(0);
            s.push(v(t as u64, *key || i == 0), T0 + i as u64 * 33);
            for k in 0..*audio {
                s.push(a(t as u64 + u64::from(k)), T0 + i as u64 * 33);
            }
            segs.extend(drain(&mut s));
        }
        s.finish();
        segs.extend(drain(&mut s));
        let mut last: BTreeMap<bool, u64> = BTreeMap::new();
        for seg in &segs {
            if seg.discontinuity {
                last.clear();
            }
            prop_assert!(seg.duration_ms > 0);
            if let Some(target) = s.target_duration_secs() {
                prop_assert!((seg.duration_ms + 500) / 1000 <= target, "{} > {target}", seg.duration_ms);
            }
            for f in &seg.frames {
                let is_video = f.track == TrackKind::Video;
                if let Some(&prev) = last.get(&is_video) {
                    prop_assert!(f.dts_ms > prev, "{:?} {} after {}", f.track, f.dts_ms, prev);
                }
                last.insert(is_video, f.dts_ms);
            }
        }
    }
}

fn part_segmenter(tracks: Tracks, part_ms: u64) -> Segmenter {
    let mut s = Segmenter::new(&SegmenterConfig {
        part_target: Duration::from_millis(part_ms),
        ..SegmenterConfig::default()
    })
    .unwrap();
    s.set_tracks(tracks);
    s
}

#[test]
fn no_parts_without_a_part_target() {
    let mut s = segmenter(video_tracks());
    let segs = feed(&mut s, video(200, 30));
    assert_eq!(segs.len(), 2);
    assert_eq!(s.poll_part(), None);
}

#[test]
fn parts_split_a_segment_at_the_part_target() {
    let mut s = part_segmenter(video_tracks(), 300);
    let mut parts = Vec::new();
    let mut segs = Vec::new();
    for f in video(200, 30) {
        let now = T0 + f.dts_ms;
        s.push(f, now);
        parts.extend(std::iter::from_fn(|| s.poll_part()));
        segs.extend(drain(&mut s));
    }
    // 2970 ms segments of 33 ms frames: nine frames (297 ms) a part, the
    // tenth would pass 300 ms; the keyframes at 990 and 1980 fall inside
    // parts, so only the first part is independent.
    let first: Vec<&PartReady> = parts.iter().filter(|p| p.seq == 0).collect();
    assert_eq!(first.len(), 10);
    assert!(first
        .iter()
        .take(9)
        .all(|p| p.duration_ms == 297 && p.frames.len() == 9));
    assert_eq!((first[9].duration_ms, first[9].frames.len()), (297, 9));
    assert!(first[9].last);
    let independent: Vec<u32> = first
        .iter()
        .filter(|p| p.independent)
        .map(|p| p.index)
        .collect();
    assert_eq!(independent, vec![0]);
    let frames: Vec<Frame> = first.iter().flat_map(|p| p.frames.clone()).collect();
    assert_eq!(frames, segs[0].frames);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    /// Parts tile their segments: a segment's frames are its parts' frames
    /// in order, indexes count from 0, durations sum to the segment's and
    /// none passes the part target.
    #[test]
    fn parts_tile_segments(
        gops in gop_strategy(),
        base_step in 20u64..=50,
        jitter in prop::collection::vec(0u64..=3, 1..16),
        with_audio in any::<bool>(),
        lag in -300i64..=300,
        part_ms in 200u64..=500,
    ) {
        let steps: Vec<u64> = jitter.iter().map(|j| base_step + j).collect();
        let audio = with_audio.then_some((21, lag, &[0u64, 7, 30][..]));
        let stream = build_stream(&gops, &steps, audio, 1000);
        let mut s = part_segmenter(if with_audio { av_tracks() } else { video_tracks() }, part_ms);
        let mut parts: Vec<PartReady> = Vec::new();
        let mut segs = Vec::new();
        let step = |s: &mut Segmenter, parts: &mut Vec<PartReady>, segs: &mut Vec<SegmentReady>| {
            parts.extend(std::iter::from_fn(|| s.poll_part()));
            for seg in std::iter::from_fn(|| s.poll_segment()) {
                // Every part of a segment is out before it.
                assert!(parts.iter().any(|p| p.seq == seg.seq));
                segs.push(seg);
            }
        };
        for (f, now) in &stream.frames {
            s.push(f.clone(), *now);
            step(&mut s, &mut parts, &mut segs);
        }
        s.finish();
        step(&mut s, &mut parts, &mut segs);
        for seg in &segs {
            let mine: Vec<&PartReady> = parts.iter().filter(|p| p.seq == seg.seq).collect();
            let idx: Vec<u32> = mine.iter().map(|p| p.index).collect();
            prop_assert_eq!(idx, (0..mine.len() as u32).collect::<Vec<_>>());
            let frames: Vec<Frame> = mine.iter().flat_map(|p| p.frames.clone()).collect();
            prop_assert_eq!(&frames, &seg.frames);
            prop_assert_eq!(mine.iter().map(|p| p.duration_ms).sum::<u64>(), seg.duration_ms);
            prop_assert_eq!(mine[0].start_dts_ms, seg.start_dts_ms);
            prop_assert_eq!(mine[0].independent, seg.independent);
            prop_assert!(mine.last().unwrap().last);
            for p in &mine {
                // Frame steps vary by up to 3 ms here; the cut guesses the
                // next from the last.
                prop_assert!(p.duration_ms <= part_ms + 3, "{} > {}", p.duration_ms, part_ms);
                let opens = p.frames.iter().find(|f| f.track == TrackKind::Video).unwrap();
                prop_assert_eq!(p.independent, opens.keyframe);
            }
        }
    }
}
