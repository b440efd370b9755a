//! Media handling between ingest and HLS, pure: parsed structures in, bytes
//! out, no I/O.
//!
//! Flow: the RTMP session hands out FLV tag bodies
//! ([`crate::rtmp::Event::Media`]); [`flv`] parses them into codec
//! configuration (SPS/PPS, AudioSpecificConfig) and coded frames with their
//! composition offsets, which the muxer and segmenter turn into HLS segments.

pub mod flv;
