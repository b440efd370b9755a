//! Media handling between ingest and HLS, pure: parsed structures in, bytes
//! out, no I/O.
//!
//! Flow: the RTMP session hands out FLV tag bodies
//! ([`crate::rtmp::Event::Media`]); [`flv`] parses them into codec
//! configuration (SPS/PPS, AudioSpecificConfig) and coded frames with their
//! composition offsets, which the muxer and segmenter turn into HLS segments.

pub mod flv;
pub mod fmp4;
pub mod segmenter;
pub mod ts;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

/// The container of a session's segments.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SegmentFormat {
    /// Fragmented MP4 (CMAF): each discontinuity run has an init segment.
    #[default]
    Fmp4,
    /// MPEG-2 transport stream: self-contained segments.
    Ts,
}

/// Which track a frame belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TrackKind {
    /// The video track.
    Video,
    /// The audio track.
    Audio,
}

/// The decoder configuration of a stream's tracks, fixed for a segment run:
/// a change starts a new init segment (and a discontinuity).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tracks {
    /// The video configuration, if the stream has video.
    pub video: Option<flv::VideoConfig>,
    /// The audio configuration, if the stream has audio.
    pub audio: Option<flv::AudioSpecificConfig>,
}

/// One coded frame, as the muxers and the segmenter take it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// The track.
    pub track: TrackKind,
    /// Decoding time in milliseconds on the stream's 64-bit timeline (RTMP
    /// timestamps, already extended past the 32-bit wrap).
    pub dts_ms: u64,
    /// Presentation minus decoding time in milliseconds (video B-frames).
    pub composition_ms: i32,
    /// Whether decoding can start here (video keyframes; every audio frame).
    pub keyframe: bool,
    /// Video: length-prefixed NAL units (AVC/HEVC, prefix size from the
    /// config) or OBUs (AV1). Audio: one raw AAC access unit.
    pub data: Bytes,
}
