//! What the dashboard shows of a stream's ingest and segmenter: measured
//! from each segment as it is cut (frames, bytes, keyframes, media
//! duration) and from the publisher's `onMetaData` (the resolution it
//! announces), so the publish path pays one update per segment, not per
//! frame.

use crate::media::flv::{AudioSpecificConfig, VideoConfig};
use crate::media::segmenter::SegmentReady;
use crate::media::{TrackKind, Tracks};
use crate::rtmp::amf::Amf0Value;
use serde::Serialize;

/// A stream's ingest and segmenter figures, as the dashboard reads them.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct IngestStats {
    /// The publisher's address, while one publishes.
    pub publisher: Option<String>,
    /// The video codec, e.g. `H.264 High 3.1`.
    pub video_codec: Option<String>,
    /// The audio codec, e.g. `AAC-LC 48 kHz 2 ch`.
    pub audio_codec: Option<String>,
    /// Width the publisher announced (`onMetaData`).
    pub width: Option<u32>,
    /// Height the publisher announced.
    pub height: Option<u32>,
    /// Video frames per second, measured over the last segment.
    pub fps: Option<f64>,
    /// Media bits per second, measured over the last segment.
    pub bitrate_bps: Option<f64>,
    /// The time between the publisher's last two video keyframes, seconds,
    /// as the segmenter measured it (the API's `keyframe_interval_s`).
    pub keyframe_interval_s: Option<f64>,
    /// Segments cut since the node started.
    pub segments: u64,
    /// Media bytes (frames) taken in since the node started.
    pub ingest_bytes: u64,
    /// The last segment's duration, seconds.
    pub last_duration_s: Option<f64>,
    /// How long after the segment's last media (its wall-clock end) it was
    /// stored and in the playlist, milliseconds.
    pub lag_ms: Option<u64>,
    /// The last segment's CID.
    pub last_segment: Option<String>,
    /// The last segment's sequence number.
    pub last_seq: Option<u64>,
}

impl IngestStats {
    /// Takes the figures of a segment just cut.
    pub(super) fn segment(&mut self, seg: &SegmentReady) {
        let (mut video, mut bytes) = (0u64, 0u64);
        for f in &seg.frames {
            bytes += f.data.len() as u64;
            video += u64::from(f.track == TrackKind::Video);
        }
        let secs = seg.duration_ms as f64 / 1000.0;
        self.segments += 1;
        self.ingest_bytes += bytes;
        self.last_seq = Some(seg.seq);
        self.last_duration_s = Some(secs);
        self.set_tracks(&seg.tracks);
        if secs > 0.0 {
            self.bitrate_bps = Some(bytes as f64 * 8.0 / secs);
            self.fps = (video > 0).then(|| video as f64 / secs);
        }
    }

    /// Notes the segment stored as `cid` at `now_ms` (wall clock).
    pub(super) fn stored(&mut self, seg_end_ms: u64, now_ms: u64, cid: String) {
        self.lag_ms = Some(now_ms.saturating_sub(seg_end_ms));
        self.last_segment = Some(cid);
    }

    fn set_tracks(&mut self, tracks: &Tracks) {
        self.video_codec = tracks.video.as_ref().map(video_codec);
        self.audio_codec = tracks.audio.as_ref().map(audio_codec);
    }

    /// Takes what `onMetaData` announces: width and height.
    pub(super) fn metadata(&mut self, metadata: &Amf0Value) {
        let dim = |k| {
            metadata
                .get(k)
                .and_then(Amf0Value::as_number)
                .filter(|n| n.is_finite() && *n >= 1.0 && *n <= 65_535.0)
                .map(|n| n as u32)
        };
        self.width = dim("width");
        self.height = dim("height");
    }

    /// A new publisher: its address; the previous one's figures go.
    pub(super) fn begin(&mut self, peer: std::net::SocketAddr) {
        *self = Self {
            publisher: Some(peer.to_string()),
            segments: self.segments,
            ingest_bytes: self.ingest_bytes,
            ..Self::default()
        };
    }
}

fn video_codec(v: &VideoConfig) -> String {
    match v {
        VideoConfig::Avc(c) => {
            let profile = match c.profile {
                66 => "Baseline",
                77 => "Main",
                88 => "Extended",
                100 => "High",
                110 => "High 10",
                122 => "High 4:2:2",
                244 => "High 4:4:4",
                _ => "",
            };
            let level = format!("{}.{}", c.level / 10, c.level % 10);
            format!("H.264 {profile} {level}").replace("  ", " ")
        }
        VideoConfig::Hevc(c) => {
            let profile = match c.profile {
                1 => "Main",
                2 => "Main 10",
                _ => "",
            };
            // general_level_idc is 30 times the level.
            let level = f64::from(c.level) / 30.0;
            format!("HEVC {profile} {level:.1}").replace("  ", " ")
        }
        VideoConfig::Av1(c) => format!("AV1 profile {} level {}", c.profile, c.level),
    }
}

fn audio_codec(a: &AudioSpecificConfig) -> String {
    let kind = match a.object_type {
        2 => "AAC-LC".to_owned(),
        5 => "HE-AAC".to_owned(),
        29 => "HE-AACv2".to_owned(),
        n => format!("AAC ({n})"),
    };
    format!(
        "{kind} {} kHz {} ch",
        f64::from(a.sample_rate) / 1000.0,
        a.channels
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::Frame;
    use bytes::Bytes;

    fn frame(track: TrackKind, dts_ms: u64, keyframe: bool, len: usize) -> Frame {
        Frame {
            track,
            dts_ms,
            composition_ms: 0,
            keyframe,
            data: Bytes::from(vec![0; len]),
        }
    }

    #[test]
    fn a_segment_gives_fps_and_bitrate() {
        // Two seconds of 25 fps video with a keyframe each second, 1000
        // bytes a frame, and 50 audio frames of 100 bytes.
        let mut frames: Vec<Frame> = (0..50)
            .map(|i| frame(TrackKind::Video, i * 40, i % 25 == 0, 1000))
            .collect();
        frames.extend((0..50).map(|i| frame(TrackKind::Audio, i * 40, true, 100)));
        let seg = SegmentReady {
            seq: 7,
            frames,
            tracks: Tracks {
                video: None,
                audio: None,
            },
            start_dts_ms: 0,
            duration_ms: 2000,
            discontinuity: false,
            independent: true,
            program_date_time_ms: 1_000_000,
        };
        let mut s = IngestStats::default();
        s.begin("192.0.2.1:5000".parse().unwrap());
        s.segment(&seg);
        s.stored(1_002_000, 1_002_150, "bafy".into());
        assert_eq!(s.publisher.as_deref(), Some("192.0.2.1:5000"));
        assert_eq!(s.fps, Some(25.0));
        assert_eq!(s.bitrate_bps, Some(55_000.0 * 8.0 / 2.0));
        assert_eq!(
            (s.segments, s.ingest_bytes, s.last_seq),
            (1, 55_000, Some(7))
        );
        assert_eq!(s.lag_ms, Some(150));
        // A new publisher keeps the counters, not the last one's figures.
        s.begin("192.0.2.2:5000".parse().unwrap());
        assert_eq!((s.segments, s.fps), (1, None));
    }

    #[test]
    fn metadata_dimensions_are_taken_only_when_sane() {
        let mut s = IngestStats::default();
        s.metadata(&Amf0Value::object([
            ("width", Amf0Value::Number(1280.0)),
            ("height", Amf0Value::Number(720.0)),
        ]));
        assert_eq!((s.width, s.height), (Some(1280), Some(720)));
        s.metadata(&Amf0Value::object([
            ("width", Amf0Value::Number(f64::NAN)),
            ("height", Amf0Value::Number(-3.0)),
        ]));
        assert_eq!((s.width, s.height), (None, None));
    }
}
