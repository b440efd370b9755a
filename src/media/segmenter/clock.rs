//! Decode times that only go forward, whatever the publisher's clock does.
//!
//! Live encoders stamp frames as they leave the encoder, not as they were
//! captured: GStreamer's `x264enc ! flvmux` pipelines send bunched and
//! repeated video times at start (FLV ms 34, 163, 209, 233, 233, 256, 279,
//! 279), and millisecond rounding makes equal neighbours at high frame
//! rates. A repeated or slightly earlier decode time becomes a zero or
//! negative sample duration in the muxed segment, which players and ffmpeg
//! reject (`non monotonically increasing dts`).
//!
//! As ffmpeg does for such input (a non-increasing dts becomes the previous
//! one plus one tick), a frame whose decode time is not after the last one
//! handed out on its track is moved to one millisecond after it; its
//! presentation time is kept where it can be (the composition offset
//! shrinks, never below zero). Steps are judged on the publisher's own
//! times, so that moved frames do not add up to a jump: a step back from the
//! publisher's previous time by more than the tolerance is a timestamp jump
//! and passes unchanged, so the segmenter sees it and starts a new
//! timeline.

//!
//! That keeps decode times increasing, but a bunch of frames a millisecond
//! apart still plays wrong: ffmpeg's decoders, at the stream's frame rate,
//! see several frames on one tick. So when a closed segment's video steps
//! are uneven (one below half its average), [`even_out`] spreads its frames
//! evenly between the segment's start and end, as a constant-rate encoder
//! would have stamped them: segments of regular frames are left alone.

use crate::media::{Frame, TrackKind};

/// Per track, the publisher's last decode time and the last one handed
/// out.
#[derive(Debug, Default, Clone)]
pub(super) struct Clock {
    video: Option<(u64, u64)>,
    audio: Option<(u64, u64)>,
}

impl Clock {
    /// Makes `frame`'s decode time strictly later than its track's last one,
    /// unless it stepped back more than `tolerance_ms` (a jump); returns
    /// whether it moved the frame.
    pub(super) fn fix(&mut self, frame: &mut Frame, tolerance_ms: u64) -> bool {
        let last = match frame.track {
            TrackKind::Video => &mut self.video,
            TrackKind::Audio => &mut self.audio,
        };
        let raw = frame.dts_ms;
        let mut moved = false;
        if let Some((prev_raw, prev)) = *last {
            let dts = frame.dts_ms;
            let jumped = dts.saturating_add(tolerance_ms) < prev_raw;
            if dts <= prev && !jumped {
                let fixed = prev + 1;
                moved = true;
                let pts = i128::from(dts) + i128::from(frame.composition_ms);
                let composition = (pts - i128::from(fixed)).max(0);
                frame.composition_ms = i32::try_from(composition).unwrap_or(i32::MAX);
                frame.dts_ms = fixed;
            }
        }
        *last = Some((raw, frame.dts_ms));
        moved
    }

    /// Forgets both tracks (a new timeline begins).
    pub(super) fn reset(&mut self) {
        *self = Self::default();
    }
}

/// Spreads the video frames of a segment from `start_ms` to `end_ms`
/// evenly when their steps are uneven (see the module docs); composition
/// offsets are kept, so frame order is.
pub(super) fn even_out(frames: &mut [Frame], start_ms: u64, end_ms: u64) {
    let video: Vec<usize> = (0..frames.len())
        .filter(|&i| frames[i].track == TrackKind::Video)
        .collect();
    let n = video.len() as u64;
    if n < 2 || end_ms <= start_ms || frames[video[0]].dts_ms != start_ms {
        return;
    }
    let span = end_ms - start_ms;
    // A step below half the average, in integers: step * 2 * n < span.
    let uneven = video.windows(2).any(|w| {
        let step = frames[w[1]].dts_ms.saturating_sub(frames[w[0]].dts_ms);
        step.saturating_mul(2 * n) < span
    });
    if !uneven {
        return;
    }
    for (k, &i) in video.iter().enumerate() {
        frames[i].dts_ms = start_ms + (span * k as u64 + n / 2) / n;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use proptest::prelude::*;

    fn fixed(c: &mut Clock, mut f: Frame) -> Frame {
        c.fix(&mut f, 100);
        f
    }

    fn frame(track: TrackKind, dts_ms: u64, composition_ms: i32) -> Frame {
        Frame {
            track,
            dts_ms,
            composition_ms,
            keyframe: false,
            data: Bytes::new(),
        }
    }

    #[test]
    fn bunched_gstreamer_times_become_increasing() {
        let mut c = Clock::default();
        let out: Vec<u64> = [34, 163, 209, 233, 233, 256, 279, 279]
            .into_iter()
            .map(|t| fixed(&mut c, frame(TrackKind::Video, t, 0)).dts_ms)
            .collect();
        assert_eq!(out, [34, 163, 209, 233, 234, 256, 279, 280]);
    }

    #[test]
    fn presentation_time_is_kept_and_tracks_are_apart() {
        let mut c = Clock::default();
        fixed(&mut c, frame(TrackKind::Video, 100, 0));
        let b = fixed(&mut c, frame(TrackKind::Video, 100, 66));
        assert_eq!((b.dts_ms, b.composition_ms), (101, 65));
        let late = fixed(&mut c, frame(TrackKind::Video, 95, 0));
        assert_eq!((late.dts_ms, late.composition_ms), (102, 0));
        // Audio has a clock of its own.
        assert_eq!(fixed(&mut c, frame(TrackKind::Audio, 50, 0)).dts_ms, 50);
    }

    #[test]
    fn a_jump_back_passes_and_restarts_the_track() {
        let mut c = Clock::default();
        fixed(&mut c, frame(TrackKind::Video, 5000, 0));
        // Steps back within the tolerance of the publisher's previous time
        // never add up to a jump.
        for t in (4000..5000).rev().step_by(50) {
            assert!(fixed(&mut c, frame(TrackKind::Video, t, 0)).dts_ms > 5000);
        }
        c.reset();
        fixed(&mut c, frame(TrackKind::Video, 5000, 0));
        assert_eq!(fixed(&mut c, frame(TrackKind::Video, 10, 0)).dts_ms, 10);
        assert_eq!(fixed(&mut c, frame(TrackKind::Video, 10, 0)).dts_ms, 11);
        c.reset();
        assert_eq!(fixed(&mut c, frame(TrackKind::Video, 3, 0)).dts_ms, 3);
    }

    #[test]
    fn uneven_segments_are_spread_regular_ones_kept() {
        let v = |t| frame(TrackKind::Video, t, 0);
        let a = |t| frame(TrackKind::Audio, t, 0);
        let mut frames = vec![v(46), a(46), v(93), v(162), v(232), v(233), v(234), a(250)];
        even_out(&mut frames, 46, 279);
        let video: Vec<u64> = frames
            .iter()
            .filter(|f| f.track == TrackKind::Video)
            .map(|f| f.dts_ms)
            .collect();
        assert_eq!(video, [46, 85, 124, 163, 201, 240]);
        assert_eq!(frames[1].dts_ms, 46, "audio is not moved");
        let mut regular: Vec<Frame> = (0..60).map(|i| v(i * 1000 / 30)).collect();
        let before = regular.clone();
        even_out(&mut regular, 0, 2000);
        assert_eq!(regular, before);
    }

    proptest! {
        #[test]
        fn decode_times_increase_unless_they_jump(times in prop::collection::vec(0u64..2000, 1..200)) {
            let mut c = Clock::default();
            let mut prev: Option<(u64, u64)> = None;
            for t in times {
                let f = fixed(&mut c, frame(TrackKind::Video, t, 0));
                if let Some((p_raw, p)) = prev {
                    let jumped = t + 100 < p_raw;
                    prop_assert!(f.dts_ms > p || (jumped && f.dts_ms == t), "{p} then {t} gave {}", f.dts_ms);
                }
                prop_assert!(f.dts_ms >= t && f.composition_ms >= 0);
                prev = Some((t, f.dts_ms));
            }
        }
    }
}
