//! FLV audio and video tag bodies, as RTMP audio (8) and video (9) messages
//! carry them.
//!
//! Flow: [`parse_video`] and [`parse_audio`] take a message payload and
//! return what it holds: a codec configuration (sent once at the start and
//! whenever it changes), coded frames, or an end-of-sequence marker. Frame
//! data is a slice of the input [`Bytes`], not a copy.
//!
//! Video comes in two layouts. Legacy FLV: a byte of frame type and codec id
//! (7 = H.264; 12 = HEVC, the widespread unofficial extension some encoders
//! use), a packet type and a signed 24-bit composition time offset.
//! Enhanced RTMP (what OBS sends for HEVC and AV1): the high bit of the
//! first byte is set, its low nibble is a packet type, and a FourCC (`avc1`,
//! `hvc1`, `av01`) names the codec. Audio: AAC (sound format 10) with a
//! packet type byte, or Enhanced RTMP audio (sound format 9) with FourCC
//! `mp4a`.
//!
//! Everything else is an [`FlvError::UnsupportedVideoCodec`] (or audio
//! equivalent) that names the codec, so the server can tell the publisher
//! what to change. Written by hand rather than on `scuffle-flv`: that crate
//! brings full H.264/H.265/AV1 bitstream parsers and a workspace-hack crate
//! for the handful of header fields we need.

use bytes::{Buf, Bytes};
use thiserror::Error;

/// Why a tag body could not be used.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum FlvError {
    /// The body ended early.
    #[error("{what} truncated: need {need} bytes, have {have}")]
    Truncated {
        /// What was being read.
        what: &'static str,
        /// Bytes needed.
        need: usize,
        /// Bytes available.
        have: usize,
    },
    /// A legacy FLV video codec we do not handle.
    #[error(
        "video codec {name} (FLV codec id {codec_id}) is not supported; publish H.264, HEVC or AV1"
    )]
    UnsupportedVideoCodec {
        /// FLV codec id.
        codec_id: u8,
        /// Its usual name.
        name: &'static str,
    },
    /// An Enhanced RTMP video FourCC we do not handle.
    #[error("video codec {} is not supported; publish H.264, HEVC or AV1", fourcc_str(.0))]
    UnsupportedVideoFourCc([u8; 4]),
    /// A legacy FLV sound format we do not handle.
    #[error("audio codec {name} (FLV sound format {format}) is not supported; publish AAC")]
    UnsupportedAudioCodec {
        /// FLV sound format.
        format: u8,
        /// Its usual name.
        name: &'static str,
    },
    /// An Enhanced RTMP audio FourCC we do not handle.
    #[error("audio codec {} is not supported; publish AAC", fourcc_str(.0))]
    UnsupportedAudioFourCc([u8; 4]),
    /// A packet type we do not handle (multitrack, ModEx, MPEG-2 TS config).
    #[error("{kind} packet type {packet_type} is not supported")]
    UnsupportedPacketType {
        /// "video" or "audio".
        kind: &'static str,
        /// The packet type.
        packet_type: u8,
    },
    /// A codec configuration record that breaks its format.
    #[error("malformed {record}: {why}")]
    BadConfig {
        /// Which record.
        record: &'static str,
        /// What was wrong.
        why: &'static str,
    },
}

fn fourcc_str(f: &[u8; 4]) -> String {
    f.iter()
        .map(|&b| {
            if b.is_ascii_graphic() || b == b' ' {
                char::from(b)
            } else {
                '?'
            }
        })
        .collect::<String>()
        .escape_debug()
        .to_string()
}

/// FLV video frame types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameType {
    /// A keyframe (random access point).
    Key,
    /// An inter frame.
    Inter,
    /// A disposable inter frame (H.263 only).
    Disposable,
    /// A generated keyframe (server use).
    Generated,
    /// Something else (reserved values).
    Other(u8),
}

impl FrameType {
    fn from_bits(v: u8) -> Self {
        match v {
            1 => Self::Key,
            2 => Self::Inter,
            3 => Self::Disposable,
            4 => Self::Generated,
            v => Self::Other(v),
        }
    }
}

/// Video codecs we carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VideoCodec {
    /// H.264 / AVC.
    Avc,
    /// H.265 / HEVC.
    Hevc,
    /// AV1.
    Av1,
}

/// A parsed video tag body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VideoTag {
    /// A video info/command frame (frame type 5): no picture.
    Command,
    /// Configuration or pictures.
    Frame {
        /// Key or inter frame.
        frame_type: FrameType,
        /// The codec.
        codec: VideoCodec,
        /// What the frame carries.
        packet: VideoPacket,
    },
}

/// What a video frame carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VideoPacket {
    /// Decoder configuration (AVC packet type 0 / SequenceStart).
    SequenceStart(VideoConfig),
    /// Coded pictures: length-prefixed NAL units (AVC, HEVC) or OBUs (AV1).
    CodedFrames {
        /// Presentation minus decoding time, in milliseconds.
        composition_time: i32,
        /// The frame data.
        data: Bytes,
    },
    /// End of sequence.
    SequenceEnd,
    /// Enhanced RTMP metadata (AMF0, e.g. HDR colour info), left encoded.
    Metadata(Bytes),
}

/// A video decoder configuration record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VideoConfig {
    /// AVCDecoderConfigurationRecord.
    Avc(AvcConfig),
    /// HEVCDecoderConfigurationRecord.
    Hevc(HevcConfig),
    /// AV1CodecConfigurationRecord.
    Av1(Av1Config),
}

/// An AVCDecoderConfigurationRecord (ISO/IEC 14496-15 5.3.3.1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AvcConfig {
    /// `AVCProfileIndication` (66 baseline, 77 main, 100 high).
    pub profile: u8,
    /// `profile_compatibility` flags.
    pub compatibility: u8,
    /// `AVCLevelIndication` (31 = level 3.1).
    pub level: u8,
    /// Bytes in each NAL unit length prefix (1, 2 or 4).
    pub nalu_length_size: u8,
    /// Sequence parameter sets.
    pub sps: Vec<Bytes>,
    /// Picture parameter sets.
    pub pps: Vec<Bytes>,
    /// The record as received, for muxers that copy it (`avcC`).
    pub raw: Bytes,
}

/// An HEVCDecoderConfigurationRecord (ISO/IEC 14496-15 8.3.3.1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HevcConfig {
    /// `general_profile_idc` (1 main, 2 main 10).
    pub profile: u8,
    /// `general_tier_flag`.
    pub tier: bool,
    /// `general_level_idc` (level times 30).
    pub level: u8,
    /// Bytes in each NAL unit length prefix.
    pub nalu_length_size: u8,
    /// Parameter set arrays: NAL unit type (32 VPS, 33 SPS, 34 PPS) and units.
    pub arrays: Vec<(u8, Vec<Bytes>)>,
    /// The record as received (`hvcC`).
    pub raw: Bytes,
}

/// An AV1CodecConfigurationRecord (`av1C`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Av1Config {
    /// `seq_profile`.
    pub profile: u8,
    /// `seq_level_idx_0`.
    pub level: u8,
    /// The record as received (`av1C`), config OBUs included.
    pub raw: Bytes,
}

/// Audio codecs we carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AudioCodec {
    /// AAC.
    Aac,
}

/// A parsed audio tag body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AudioTag {
    /// The codec.
    pub codec: AudioCodec,
    /// What the tag carries.
    pub packet: AudioPacket,
}

/// What an audio tag carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AudioPacket {
    /// Decoder configuration (AAC packet type 0 / SequenceStart).
    SequenceStart(AudioSpecificConfig),
    /// One raw AAC frame (no ADTS header).
    Raw(Bytes),
    /// End of sequence (Enhanced RTMP only).
    SequenceEnd,
}

/// The fields of an MPEG-4 AudioSpecificConfig that muxers need.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AudioSpecificConfig {
    /// Audio object type (2 = AAC LC, 5 = SBR/HE-AAC, 29 = PS).
    pub object_type: u8,
    /// Sampling frequency index (0-12), or 15 with an explicit rate.
    pub sample_rate_index: u8,
    /// Sampling frequency in Hz.
    pub sample_rate: u32,
    /// Channel configuration (1 mono, 2 stereo, ...; 0 = in the stream).
    pub channels: u8,
    /// The config as received (for `esds` or to build ADTS headers).
    pub raw: Bytes,
}

const SAMPLE_RATES: [u32; 13] = [
    96000, 88200, 64000, 48000, 44100, 32000, 24000, 22050, 16000, 12000, 11025, 8000, 7350,
];

fn need(buf: &[u8], n: usize, what: &'static str) -> Result<(), FlvError> {
    if buf.len() < n {
        return Err(FlvError::Truncated {
            what,
            need: n,
            have: buf.len(),
        });
    }
    Ok(())
}

fn si24(b: &[u8]) -> i32 {
    // Sign-extend by placing the 24 bits at the top and shifting back.
    i32::from_be_bytes([b[0], b[1], b[2], 0]) >> 8
}

/// Parses the body of an RTMP video message (an FLV video tag body).
pub fn parse_video(payload: &Bytes) -> Result<VideoTag, FlvError> {
    need(payload, 1, "video tag header")?;
    let b0 = payload[0];
    if b0 & 0x80 != 0 {
        return parse_ex_video(payload);
    }
    let frame_type = b0 >> 4;
    if frame_type == 5 {
        return Ok(VideoTag::Command);
    }
    let codec = match b0 & 0x0F {
        7 => VideoCodec::Avc,
        12 => VideoCodec::Hevc,
        codec_id => {
            let name = match codec_id {
                2 => "Sorenson H.263",
                3 => "Screen video",
                4 => "On2 VP6",
                5 => "On2 VP6 with alpha",
                6 => "Screen video v2",
                _ => "unknown",
            };
            return Err(FlvError::UnsupportedVideoCodec { codec_id, name });
        }
    };
    need(payload, 5, "AVC video tag header")?;
    let composition_time = si24(&payload[2..5]);
    let body = payload.slice(5..);
    let packet = match payload[1] {
        0 => VideoPacket::SequenceStart(parse_config(codec, body)?),
        1 => VideoPacket::CodedFrames {
            composition_time,
            data: body,
        },
        2 => VideoPacket::SequenceEnd,
        packet_type => {
            return Err(FlvError::UnsupportedPacketType {
                kind: "video",
                packet_type,
            })
        }
    };
    Ok(VideoTag::Frame {
        frame_type: FrameType::from_bits(frame_type),
        codec,
        packet,
    })
}

fn parse_ex_video(payload: &Bytes) -> Result<VideoTag, FlvError> {
    let b0 = payload[0];
    let frame_type = (b0 >> 4) & 0x07;
    let packet_type = b0 & 0x0F;
    if frame_type == 5 {
        return Ok(VideoTag::Command);
    }
    // 4 Metadata, 5 MPEG2TSSequenceStart, 6 Multitrack, 7 ModEx: only
    // metadata is understood; the others change the layout that follows.
    if !matches!(packet_type, 0..=4) {
        return Err(FlvError::UnsupportedPacketType {
            kind: "video",
            packet_type,
        });
    }
    need(payload, 5, "enhanced video tag header")?;
    let fourcc: [u8; 4] = [payload[1], payload[2], payload[3], payload[4]];
    let codec = match &fourcc {
        b"avc1" => VideoCodec::Avc,
        b"hvc1" => VideoCodec::Hevc,
        b"av01" => VideoCodec::Av1,
        _ => return Err(FlvError::UnsupportedVideoFourCc(fourcc)),
    };
    let body = payload.slice(5..);
    let packet = match packet_type {
        0 => VideoPacket::SequenceStart(parse_config(codec, body)?),
        // CodedFrames: AVC and HEVC carry a composition time, AV1 does not.
        1 if codec != VideoCodec::Av1 => {
            need(&body, 3, "composition time")?;
            VideoPacket::CodedFrames {
                composition_time: si24(&body[..3]),
                data: body.slice(3..),
            }
        }
        1 | 3 => VideoPacket::CodedFrames {
            composition_time: 0,
            data: body,
        },
        2 => VideoPacket::SequenceEnd,
        _ => VideoPacket::Metadata(body),
    };
    Ok(VideoTag::Frame {
        frame_type: FrameType::from_bits(frame_type),
        codec,
        packet,
    })
}

fn parse_config(codec: VideoCodec, raw: Bytes) -> Result<VideoConfig, FlvError> {
    Ok(match codec {
        VideoCodec::Avc => VideoConfig::Avc(parse_avc_config(raw)?),
        VideoCodec::Hevc => VideoConfig::Hevc(parse_hevc_config(raw)?),
        VideoCodec::Av1 => VideoConfig::Av1(parse_av1_config(raw)?),
    })
}

/// Reads `count` units, each behind a 16-bit length.
fn nal_units(buf: &mut Bytes, count: usize, record: &'static str) -> Result<Vec<Bytes>, FlvError> {
    // The count comes from the wire; each unit takes at least two bytes.
    let mut units = Vec::with_capacity(count.min(buf.len() / 2));
    for _ in 0..count {
        need(buf, 2, record)?;
        let len = usize::from(buf.get_u16());
        need(buf, len, record)?;
        units.push(buf.split_to(len));
    }
    Ok(units)
}

/// Parses an AVCDecoderConfigurationRecord.
pub fn parse_avc_config(raw: Bytes) -> Result<AvcConfig, FlvError> {
    const RECORD: &str = "AVCDecoderConfigurationRecord";
    need(&raw, 6, RECORD)?;
    if raw[0] != 1 {
        return Err(FlvError::BadConfig {
            record: RECORD,
            why: "configurationVersion is not 1",
        });
    }
    let nalu_length_size = (raw[4] & 0x03) + 1;
    if nalu_length_size == 3 {
        return Err(FlvError::BadConfig {
            record: RECORD,
            why: "NAL unit length size of 3 bytes",
        });
    }
    let mut rest = raw.slice(5..);
    let sps_count = usize::from(rest.get_u8() & 0x1F);
    let sps = nal_units(&mut rest, sps_count, RECORD)?;
    need(&rest, 1, RECORD)?;
    let pps_count = usize::from(rest.get_u8());
    let pps = nal_units(&mut rest, pps_count, RECORD)?;
    // High-profile extension fields may follow; the raw record keeps them.
    Ok(AvcConfig {
        profile: raw[1],
        compatibility: raw[2],
        level: raw[3],
        nalu_length_size,
        sps,
        pps,
        raw,
    })
}

/// Parses an HEVCDecoderConfigurationRecord.
pub fn parse_hevc_config(raw: Bytes) -> Result<HevcConfig, FlvError> {
    const RECORD: &str = "HEVCDecoderConfigurationRecord";
    need(&raw, 23, RECORD)?;
    let mut rest = raw.slice(23..);
    let mut arrays = Vec::new();
    for _ in 0..raw[22] {
        need(&rest, 3, RECORD)?;
        let nal_type = rest.get_u8() & 0x3F;
        let count = usize::from(rest.get_u16());
        arrays.push((nal_type, nal_units(&mut rest, count, RECORD)?));
    }
    Ok(HevcConfig {
        profile: raw[1] & 0x1F,
        tier: raw[1] & 0x20 != 0,
        level: raw[12],
        nalu_length_size: (raw[21] & 0x03) + 1,
        arrays,
        raw,
    })
}

/// Parses the fixed part of an AV1CodecConfigurationRecord.
pub fn parse_av1_config(raw: Bytes) -> Result<Av1Config, FlvError> {
    const RECORD: &str = "AV1CodecConfigurationRecord";
    need(&raw, 4, RECORD)?;
    if raw[0] != 0x81 {
        return Err(FlvError::BadConfig {
            record: RECORD,
            why: "marker/version byte is not 0x81",
        });
    }
    Ok(Av1Config {
        profile: raw[1] >> 5,
        level: raw[1] & 0x1F,
        raw,
    })
}

/// Parses the body of an RTMP audio message (an FLV audio tag body).
pub fn parse_audio(payload: &Bytes) -> Result<AudioTag, FlvError> {
    need(payload, 1, "audio tag header")?;
    let format = payload[0] >> 4;
    match format {
        10 => {
            need(payload, 2, "AAC audio tag header")?;
            let body = payload.slice(2..);
            let packet = match payload[1] {
                0 => AudioPacket::SequenceStart(parse_audio_specific_config(body)?),
                1 => AudioPacket::Raw(body),
                packet_type => {
                    return Err(FlvError::UnsupportedPacketType {
                        kind: "audio",
                        packet_type,
                    })
                }
            };
            Ok(AudioTag {
                codec: AudioCodec::Aac,
                packet,
            })
        }
        9 => {
            let packet_type = payload[0] & 0x0F;
            // 4 MultichannelConfig, 5 Multitrack, 7 ModEx change the layout.
            if !matches!(packet_type, 0..=2) {
                return Err(FlvError::UnsupportedPacketType {
                    kind: "audio",
                    packet_type,
                });
            }
            need(payload, 5, "enhanced audio tag header")?;
            let fourcc = [payload[1], payload[2], payload[3], payload[4]];
            if &fourcc != b"mp4a" {
                return Err(FlvError::UnsupportedAudioFourCc(fourcc));
            }
            let body = payload.slice(5..);
            let packet = match packet_type {
                0 => AudioPacket::SequenceStart(parse_audio_specific_config(body)?),
                1 => AudioPacket::Raw(body),
                _ => AudioPacket::SequenceEnd,
            };
            Ok(AudioTag {
                codec: AudioCodec::Aac,
                packet,
            })
        }
        format => {
            let name = match format {
                0 => "Linear PCM (platform endian)",
                1 => "ADPCM",
                2 => "MP3",
                3 => "Linear PCM (little endian)",
                4..=6 => "Nellymoser",
                7 => "G.711 A-law",
                8 => "G.711 mu-law",
                11 => "Speex",
                14 => "MP3 8 kHz",
                15 => "device-specific",
                _ => "reserved",
            };
            Err(FlvError::UnsupportedAudioCodec { format, name })
        }
    }
}

/// Reads MSB-first bit fields.
struct Bits<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl Bits<'_> {
    fn read(&mut self, n: usize) -> Option<u32> {
        let mut v = 0u32;
        for _ in 0..n {
            let byte = *self.buf.get(self.pos / 8)?;
            v = (v << 1) | u32::from((byte >> (7 - self.pos % 8)) & 1);
            self.pos += 1;
        }
        Some(v)
    }
}

/// Parses the leading fields of an MPEG-4 AudioSpecificConfig (ISO/IEC
/// 14496-3 1.6.2.1).
pub fn parse_audio_specific_config(raw: Bytes) -> Result<AudioSpecificConfig, FlvError> {
    const RECORD: &str = "AudioSpecificConfig";
    let truncated = || FlvError::Truncated {
        what: RECORD,
        need: 2,
        have: raw.len(),
    };
    let mut bits = Bits { buf: &raw, pos: 0 };
    let mut object_type = bits.read(5).ok_or_else(truncated)?;
    if object_type == 31 {
        object_type = 32 + bits.read(6).ok_or_else(truncated)?;
    }
    let sample_rate_index = bits.read(4).ok_or_else(truncated)?;
    let sample_rate = match sample_rate_index {
        15 => bits.read(24).ok_or_else(truncated)?,
        i => *SAMPLE_RATES.get(i as usize).ok_or(FlvError::BadConfig {
            record: RECORD,
            why: "reserved sampling frequency index",
        })?,
    };
    let channels = bits.read(4).ok_or_else(truncated)?;
    Ok(AudioSpecificConfig {
        // At most 32 + 63 and 15: the casts cannot truncate.
        object_type: object_type as u8,
        sample_rate_index: sample_rate_index as u8,
        sample_rate,
        channels: channels as u8,
        raw,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// An AVC sequence header as x264 via ffmpeg sends it: High profile,
    /// level 3.1, 4-byte lengths, one SPS, one PPS.
    const AVC_SEQUENCE_HEADER: &[u8] = &[
        0x17, 0x00, 0x00, 0x00, 0x00, // key frame, AVC, sequence header, cts 0
        0x01, 0x64, 0x00, 0x1F, 0xFF, 0xE1, // version, profile, compat, level, 0xFF, 1 SPS
        0x00, 0x09, 0x67, 0x64, 0x00, 0x1F, 0xAC, 0xD9, 0x40, 0x50, 0x05, // SPS
        0x01, 0x00, 0x06, 0x68, 0xEB, 0xE3, 0xCB, 0x22, 0xC0, // 1 PPS
    ];

    #[test]
    fn avc_sequence_header() {
        let tag = parse_video(&Bytes::from_static(AVC_SEQUENCE_HEADER)).unwrap();
        let VideoTag::Frame {
            frame_type: FrameType::Key,
            codec: VideoCodec::Avc,
            packet: VideoPacket::SequenceStart(VideoConfig::Avc(cfg)),
        } = tag
        else {
            panic!("unexpected {tag:?}");
        };
        assert_eq!((cfg.profile, cfg.level, cfg.nalu_length_size), (100, 31, 4));
        assert_eq!(cfg.sps.len(), 1);
        assert_eq!(cfg.sps[0][0], 0x67);
        assert_eq!(&cfg.pps[0][..], &[0x68, 0xEB, 0xE3, 0xCB, 0x22, 0xC0]);
        assert_eq!(&cfg.raw[..], &AVC_SEQUENCE_HEADER[5..]);
    }

    #[test]
    fn avc_nalus_with_negative_composition_time() {
        let body = [0x27, 0x01, 0xFF, 0xFF, 0xDE, 0, 0, 0, 2, 0x41, 0x9A];
        let tag = parse_video(&Bytes::copy_from_slice(&body)).unwrap();
        assert_eq!(
            tag,
            VideoTag::Frame {
                frame_type: FrameType::Inter,
                codec: VideoCodec::Avc,
                packet: VideoPacket::CodedFrames {
                    composition_time: -34,
                    data: Bytes::from_static(&[0, 0, 0, 2, 0x41, 0x9A]),
                },
            }
        );
        let end = parse_video(&Bytes::from_static(&[0x17, 0x02, 0, 0, 0])).unwrap();
        assert!(matches!(
            end,
            VideoTag::Frame {
                packet: VideoPacket::SequenceEnd,
                ..
            }
        ));
        assert_eq!(
            parse_video(&Bytes::from_static(&[0x57, 0x00])).unwrap(),
            VideoTag::Command
        );
    }

    fn hevc_record() -> Vec<u8> {
        let mut r = vec![1, 0x01, 0x60, 0, 0, 0, 0x90, 0, 0, 0, 0, 0, 93];
        r.extend_from_slice(&[0xF0, 0x00, 0xFC, 0xFD, 0xF8, 0xF8, 0, 0, 0x0F]);
        r.push(2); // two arrays
        r.extend_from_slice(&[0xA0, 0, 1, 0, 2, 0x40, 0x01]); // VPS
        r.extend_from_slice(&[0xA1, 0, 1, 0, 2, 0x42, 0x01]); // SPS
        r
    }

    #[test]
    fn enhanced_hevc() {
        let mut seq = vec![0x90]; // ex header, key frame, SequenceStart
        seq.extend_from_slice(b"hvc1");
        seq.extend_from_slice(&hevc_record());
        let VideoTag::Frame {
            codec: VideoCodec::Hevc,
            packet: VideoPacket::SequenceStart(VideoConfig::Hevc(cfg)),
            ..
        } = parse_video(&seq.into()).unwrap()
        else {
            panic!("not an HEVC sequence start");
        };
        assert_eq!((cfg.profile, cfg.level, cfg.nalu_length_size), (1, 93, 4));
        assert_eq!(cfg.arrays.len(), 2);
        assert_eq!(cfg.arrays[1].0, 33);

        // CodedFrames carries a composition time; CodedFramesX does not.
        let mut frames = vec![0xA1];
        frames.extend_from_slice(b"hvc1");
        frames.extend_from_slice(&[0, 0, 40, 9, 9]);
        let mut frames_x = vec![0xA3];
        frames_x.extend_from_slice(b"hvc1");
        frames_x.extend_from_slice(&[9, 9]);
        for (bytes, cts) in [(frames, 40), (frames_x, 0)] {
            assert_eq!(
                parse_video(&bytes.into()).unwrap(),
                VideoTag::Frame {
                    frame_type: FrameType::Inter,
                    codec: VideoCodec::Hevc,
                    packet: VideoPacket::CodedFrames {
                        composition_time: cts,
                        data: Bytes::from_static(&[9, 9]),
                    },
                }
            );
        }
    }

    #[test]
    fn enhanced_av1_and_avc() {
        let mut seq = vec![0x90];
        seq.extend_from_slice(b"av01");
        seq.extend_from_slice(&[0x81, 0x08, 0x0C, 0x00, 0x0A, 0x0B]);
        let tag = parse_video(&seq.into()).unwrap();
        assert!(matches!(
            tag,
            VideoTag::Frame {
                codec: VideoCodec::Av1,
                packet: VideoPacket::SequenceStart(VideoConfig::Av1(Av1Config {
                    profile: 0,
                    level: 8,
                    ..
                })),
                ..
            }
        ));
        // AV1 CodedFrames has no composition time.
        let mut frames = vec![0x91];
        frames.extend_from_slice(b"av01");
        frames.extend_from_slice(&[0x12, 0x00]);
        assert!(matches!(
            parse_video(&frames.into()).unwrap(),
            VideoTag::Frame {
                packet: VideoPacket::CodedFrames { composition_time: 0, ref data },
                ..
            } if data[..] == [0x12, 0x00]
        ));
        let mut avc = vec![0x90];
        avc.extend_from_slice(b"avc1");
        avc.extend_from_slice(&AVC_SEQUENCE_HEADER[5..]);
        assert!(matches!(
            parse_video(&avc.into()).unwrap(),
            VideoTag::Frame {
                codec: VideoCodec::Avc,
                packet: VideoPacket::SequenceStart(VideoConfig::Avc(_)),
                ..
            }
        ));
    }

    #[test]
    fn unsupported_codecs_are_named() {
        let err = parse_video(&Bytes::from_static(&[0x12, 0, 0])).unwrap_err();
        assert_eq!(
            err,
            FlvError::UnsupportedVideoCodec {
                codec_id: 2,
                name: "Sorenson H.263"
            }
        );
        assert!(err.to_string().contains("publish H.264, HEVC or AV1"));
        let mut vp9 = vec![0x90];
        vp9.extend_from_slice(b"vp09");
        assert_eq!(
            parse_video(&vp9.into()).unwrap_err().to_string(),
            "video codec vp09 is not supported; publish H.264, HEVC or AV1"
        );
        assert!(matches!(
            parse_audio(&Bytes::from_static(&[0x2F, 0xFF])),
            Err(FlvError::UnsupportedAudioCodec {
                format: 2,
                name: "MP3"
            })
        ));
        let mut opus = vec![0x90];
        opus.extend_from_slice(b"Opus");
        assert_eq!(
            parse_audio(&opus.into()),
            Err(FlvError::UnsupportedAudioFourCc(*b"Opus"))
        );
        let mut multitrack = vec![0x96];
        multitrack.extend_from_slice(b"avc1");
        assert!(matches!(
            parse_video(&multitrack.into()),
            Err(FlvError::UnsupportedPacketType { packet_type: 6, .. })
        ));
    }

    #[test]
    fn aac() {
        // AAC LC, 44.1 kHz, stereo; then 48 kHz.
        let tag = parse_audio(&Bytes::from_static(&[0xAF, 0x00, 0x12, 0x10])).unwrap();
        let AudioPacket::SequenceStart(asc) = tag.packet else {
            panic!("not a sequence start");
        };
        assert_eq!(
            (
                asc.object_type,
                asc.sample_rate_index,
                asc.sample_rate,
                asc.channels
            ),
            (2, 4, 44100, 2)
        );
        let asc = parse_audio_specific_config(Bytes::from_static(&[0x11, 0x90])).unwrap();
        assert_eq!((asc.sample_rate, asc.channels), (48000, 2));
        // Explicit frequency (index 15) and escaped object type (31).
        let asc =
            parse_audio_specific_config(Bytes::from_static(&[0xF8, 0x1E, 0x00, 0xFA, 0x00, 0x40]))
                .unwrap();
        assert_eq!(asc.object_type, 32);
        assert_eq!(asc.sample_rate, 32000);
        assert_eq!(asc.channels, 2);

        assert_eq!(
            parse_audio(&Bytes::from_static(&[0xAF, 0x01, 0x21, 0x10])).unwrap(),
            AudioTag {
                codec: AudioCodec::Aac,
                packet: AudioPacket::Raw(Bytes::from_static(&[0x21, 0x10])),
            }
        );
        let mut ex = vec![0x90];
        ex.extend_from_slice(b"mp4a");
        ex.extend_from_slice(&[0x12, 0x10]);
        assert!(matches!(
            parse_audio(&ex.into()).unwrap().packet,
            AudioPacket::SequenceStart(AudioSpecificConfig {
                sample_rate: 44100,
                ..
            })
        ));
        assert!(matches!(
            parse_audio_specific_config(Bytes::from_static(&[0x16, 0x80])),
            Err(FlvError::BadConfig { .. })
        ));
        assert!(matches!(
            parse_audio_specific_config(Bytes::from_static(&[0x12])),
            Err(FlvError::Truncated { .. })
        ));
    }

    #[test]
    fn truncated_configs() {
        for len in 5..AVC_SEQUENCE_HEADER.len() {
            let r = parse_video(&Bytes::copy_from_slice(&AVC_SEQUENCE_HEADER[..len]));
            assert!(r.is_err(), "accepted {len} bytes");
        }
        let hevc = hevc_record();
        for len in 0..hevc.len() {
            assert!(parse_hevc_config(Bytes::copy_from_slice(&hevc[..len])).is_err());
        }
    }

    proptest! {
        #[test]
        fn parsers_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..64)) {
            let bytes = Bytes::from(bytes);
            let _ = parse_video(&bytes);
            let _ = parse_audio(&bytes);
            let _ = parse_avc_config(bytes.clone());
            let _ = parse_hevc_config(bytes.clone());
            let _ = parse_audio_specific_config(bytes);
        }

        #[test]
        fn header_prefixed_parsers_never_panic(
            b0 in prop::sample::select(vec![0x17u8, 0x27, 0x1C, 0x90, 0x91, 0xA3, 0xAF]),
            fourcc in prop::sample::select(vec![*b"avc1", *b"hvc1", *b"av01", *b"mp4a"]),
            tail in prop::collection::vec(any::<u8>(), 0..64),
        ) {
            let mut bytes = vec![b0];
            if b0 & 0x80 != 0 { bytes.extend_from_slice(&fourcc); }
            bytes.extend_from_slice(&tail);
            let bytes = Bytes::from(bytes);
            let _ = parse_video(&bytes);
            let _ = parse_audio(&bytes);
        }

        #[test]
        fn composition_time_sign_extends(cts in -(1i32 << 23)..(1 << 23)) {
            let b = cts.to_be_bytes();
            let body = Bytes::copy_from_slice(&[0x27, 1, b[1], b[2], b[3]]);
            let tag = parse_video(&body).unwrap();
            let VideoTag::Frame { packet: VideoPacket::CodedFrames { composition_time, .. }, .. } = tag else {
                panic!("not coded frames");
            };
            prop_assert_eq!(composition_time, cts);
        }
    }
}
