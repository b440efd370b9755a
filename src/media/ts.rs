//! MPEG-2 transport stream muxing for HLS TS segments (ISO/IEC 13818-1,
//! and the HLS rules for it: every segment opens with a PAT and a PMT).
//!
//! Flow: [`Muxer::new`] takes the track configuration; [`Muxer::segment`]
//! takes the frames of one segment in decoding order and returns whole
//! 188-byte packets: PAT, PMT, then one PES packet per video frame and per
//! run of up to [`AUDIO_FRAMES_PER_PES`] audio frames. The muxer keeps the
//! continuity counters of every PID from one segment to the next, so the
//! segments of a playlist concatenate into one valid stream.
//!
//! Video: H.264 (stream type 0x1B) and HEVC (0x24). Length-prefixed NAL
//! units become Annex B (start codes); each access unit opens with an
//! access unit delimiter, and keyframes carry the parameter sets from the
//! decoder configuration so a player can start at any segment. A PES
//! packet opening a keyframe sets the random access indicator; every
//! video PES carries the PCR. Audio: AAC as ADTS (0x0F), the 7-byte header
//! built from the AudioSpecificConfig. Without video the PCR rides on the
//! audio PID. AV1 has no mapping into HLS transport streams: use fMP4.
//!
//! Clock: PTS and DTS are the stream's milliseconds at 90 kHz plus
//! [`TIMESTAMP_OFFSET`]; the PCR is the DTS less that offset, which gives
//! decoders that buffering time, and keeps B-frame PTS (which may sit before
//! their DTS after reordering) from going negative.
//!
//! Written by hand rather than with the `mpeg2ts` crate: that crate writes
//! single packets to an `io::Write` with its own error type, while the work
//! here, splitting PES packets into stuffed 188-byte packets, PCR placement
//! and continuity, is what a muxer on top of it would still have to do.

use super::flv::{AudioSpecificConfig, VideoConfig};
use super::{Frame, TrackKind, Tracks};
use bytes::Bytes;
use thiserror::Error;

/// Bytes in a transport stream packet.
pub const PACKET_SIZE: usize = 188;
/// PID of the program map table.
pub const PMT_PID: u16 = 0x1000;
/// PID of the video elementary stream.
pub const VIDEO_PID: u16 = 0x100;
/// PID of the audio elementary stream.
pub const AUDIO_PID: u16 = 0x101;
/// Added to every PTS and DTS (90 kHz units, 0.7 s) so that the PCR, the
/// unshifted DTS, runs ahead of decoding as the buffer model expects.
pub const TIMESTAMP_OFFSET: u64 = 63_000;
/// AAC frames gathered into one PES packet (about 100 ms at 48 kHz): one
/// PES per 20 ms frame would spend most of each 188-byte packet on headers
/// and stuffing.
pub const AUDIO_FRAMES_PER_PES: usize = 4;

const STREAM_TYPE_H264: u8 = 0x1B;
const STREAM_TYPE_HEVC: u8 = 0x24;
const STREAM_TYPE_AAC_ADTS: u8 = 0x0F;
/// Timestamps are 33-bit counters that wrap.
const TIMESTAMP_MASK: u64 = (1 << 33) - 1;
const ADTS_HEADER_LEN: usize = 7;
/// `frame_length` of an ADTS header is 13 bits, header included.
const MAX_ADTS_FRAME: usize = (1 << 13) - 1;

/// Why a segment could not be muxed.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum TsError {
    /// Neither a video nor an audio configuration.
    #[error("the stream has no tracks: wait for a video or audio sequence header")]
    NoTracks,
    /// A video codec with no transport stream mapping.
    #[error(
        "{codec} cannot be carried in MPEG-TS segments; use fMP4 segments or publish H.264/HEVC"
    )]
    UnsupportedVideo {
        /// The codec's name.
        codec: &'static str,
    },
    /// An AudioSpecificConfig an ADTS header cannot express.
    #[error("AAC configuration cannot be expressed as ADTS: {why}")]
    UnsupportedAudio {
        /// What ADTS cannot say.
        why: &'static str,
    },
    /// A frame of a track the configuration lacks.
    #[error(
        "{track:?} frame at {dts_ms} ms, but the stream has no {track:?} configuration; \
         the publisher must send a sequence header first"
    )]
    MissingTrack {
        /// The frame's track.
        track: TrackKind,
        /// Its decoding time.
        dts_ms: u64,
    },
    /// A NAL unit length prefix that runs past the frame.
    #[error(
        "video frame at {dts_ms} ms: NAL unit length {len} runs past the frame ({left} bytes left)"
    )]
    BadNalLength {
        /// The frame's decoding time.
        dts_ms: u64,
        /// The length read.
        len: usize,
        /// Bytes left in the frame.
        left: usize,
    },
    /// An AAC frame longer than an ADTS header can describe.
    #[error("AAC frame at {dts_ms} ms is {len} bytes, over the ADTS limit of 8184")]
    AudioFrameTooLarge {
        /// The frame's decoding time.
        dts_ms: u64,
        /// Its length.
        len: usize,
    },
    /// No frames to mux.
    #[error("a segment needs at least one frame")]
    Empty,
}

/// The video codec as the muxer writes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum VideoCodec {
    H264,
    Hevc,
}

impl VideoCodec {
    fn nal_type(self, header: u8) -> u8 {
        match self {
            Self::H264 => header & 0x1F,
            Self::Hevc => (header >> 1) & 0x3F,
        }
    }

    fn is_aud(self, nal_type: u8) -> bool {
        nal_type
            == match self {
                Self::H264 => 9,
                Self::Hevc => 35,
            }
    }

    fn is_parameter_set(self, nal_type: u8) -> bool {
        match self {
            Self::H264 => matches!(nal_type, 7 | 8),
            Self::Hevc => matches!(nal_type, 32..=34),
        }
    }

    /// An access unit delimiter that allows any picture type.
    fn aud(self) -> &'static [u8] {
        match self {
            Self::H264 => &[0, 0, 0, 1, 0x09, 0xF0],
            Self::Hevc => &[0, 0, 0, 1, 0x46, 0x01, 0x50],
        }
    }
}

#[derive(Debug, Clone)]
struct Video {
    codec: VideoCodec,
    nalu_length_size: usize,
    /// The parameter sets in Annex B form, sent before each keyframe.
    parameter_sets: Vec<u8>,
}

/// Continuity counters, 4 bits per PID.
#[derive(Debug, Clone, Copy, Default)]
struct Counters {
    pat: u8,
    pmt: u8,
    video: u8,
    audio: u8,
}

/// A transport stream muxer for one track configuration; it keeps the
/// continuity counters across the segments it writes.
#[derive(Debug, Clone)]
pub struct Muxer {
    video: Option<Video>,
    adts: Option<[u8; ADTS_HEADER_LEN]>,
    counters: Counters,
}

impl Muxer {
    /// Checks that the tracks fit a transport stream and prepares their
    /// headers; a new configuration needs a new muxer (and an
    /// `#EXT-X-DISCONTINUITY`).
    pub fn new(tracks: &Tracks) -> Result<Self, TsError> {
        if tracks.video.is_none() && tracks.audio.is_none() {
            return Err(TsError::NoTracks);
        }
        let video = tracks.video.as_ref().map(video_stream).transpose()?;
        let adts = tracks.audio.as_ref().map(adts_header).transpose()?;
        Ok(Self {
            video,
            adts,
            counters: Counters::default(),
        })
    }

    /// Writes one segment: PAT, PMT and the `frames` (decoding order).
    /// The caller starts video segments at keyframes.
    pub fn segment(&mut self, frames: &[Frame]) -> Result<Bytes, TsError> {
        if frames.is_empty() {
            return Err(TsError::Empty);
        }
        // Validate everything first so a failed call leaves the counters
        // as they were.
        for frame in frames {
            let present = match frame.track {
                TrackKind::Video => self.video.is_some(),
                TrackKind::Audio => self.adts.is_some(),
            };
            if !present {
                return Err(TsError::MissingTrack {
                    track: frame.track,
                    dts_ms: frame.dts_ms,
                });
            }
            if frame.track == TrackKind::Audio
                && frame.data.len() + ADTS_HEADER_LEN > MAX_ADTS_FRAME
            {
                return Err(TsError::AudioFrameTooLarge {
                    dts_ms: frame.dts_ms,
                    len: frame.data.len(),
                });
            }
        }
        let video_units = frames
            .iter()
            .filter(|f| f.track == TrackKind::Video)
            .map(|f| self.annex_b(f))
            .collect::<Result<Vec<_>, _>>()?;

        let payload_estimate: usize = frames.iter().map(|f| f.data.len() + 32).sum();
        let mut out = Vec::with_capacity(payload_estimate * 190 / 184 + 2 * PACKET_SIZE);
        self.write_psi(&mut out);
        let mut video_units = video_units.into_iter();
        let mut pending_audio: Vec<&Frame> = Vec::with_capacity(AUDIO_FRAMES_PER_PES);
        for frame in frames {
            match frame.track {
                TrackKind::Video => {
                    // One unit per video frame, built above in the same order.
                    let Some(unit) = video_units.next() else {
                        continue;
                    };
                    let dts = frame.dts_ms.saturating_mul(90);
                    let pts = presentation_time(frame);
                    let pes = pes_packet(0xE0, pts, dts, &unit);
                    let pcr = Some(dts);
                    packetize(
                        &mut out,
                        VIDEO_PID,
                        &mut self.counters.video,
                        &pes,
                        pcr,
                        frame.keyframe,
                    );
                }
                TrackKind::Audio => {
                    pending_audio.push(frame);
                    if pending_audio.len() == AUDIO_FRAMES_PER_PES {
                        self.write_audio(&mut out, &pending_audio);
                        pending_audio.clear();
                    }
                }
            }
        }
        if !pending_audio.is_empty() {
            self.write_audio(&mut out, &pending_audio);
        }
        Ok(Bytes::from(out))
    }

    fn write_psi(&mut self, out: &mut Vec<u8>) {
        // PAT: one program, number 1, with its PMT.
        let mut pat = vec![0x00, 0x01, 0xC1, 0x00, 0x00, 0x00, 0x01];
        pat.extend_from_slice(&(0xE000 | PMT_PID).to_be_bytes());
        psi_packet(out, 0, &mut self.counters.pat, 0x00, &pat);

        let pcr_pid = if self.video.is_some() {
            VIDEO_PID
        } else {
            AUDIO_PID
        };
        let mut pmt = vec![0x00, 0x01, 0xC1, 0x00, 0x00];
        pmt.extend_from_slice(&(0xE000 | pcr_pid).to_be_bytes());
        pmt.extend_from_slice(&[0xF0, 0x00]); // no program descriptors
        if let Some(video) = &self.video {
            let stream_type = match video.codec {
                VideoCodec::H264 => STREAM_TYPE_H264,
                VideoCodec::Hevc => STREAM_TYPE_HEVC,
            };
            pmt.push(stream_type);
            pmt.extend_from_slice(&(0xE000 | VIDEO_PID).to_be_bytes());
            pmt.extend_from_slice(&[0xF0, 0x00]);
        }
        if self.adts.is_some() {
            pmt.push(STREAM_TYPE_AAC_ADTS);
            pmt.extend_from_slice(&(0xE000 | AUDIO_PID).to_be_bytes());
            pmt.extend_from_slice(&[0xF0, 0x00]);
        }
        psi_packet(out, PMT_PID, &mut self.counters.pmt, 0x02, &pmt);
    }

    /// Converts a frame's length-prefixed NAL units to an Annex B access
    /// unit: our delimiter first (any in the frame is dropped), parameter
    /// sets before a keyframe unless it has its own, then the units.
    fn annex_b(&self, frame: &Frame) -> Result<Vec<u8>, TsError> {
        let Some(video) = &self.video else {
            return Err(TsError::MissingTrack {
                track: TrackKind::Video,
                dts_ms: frame.dts_ms,
            });
        };
        let mut nals = Vec::new();
        let mut rest = &frame.data[..];
        let size = video.nalu_length_size;
        while !rest.is_empty() {
            if rest.len() < size {
                return Err(TsError::BadNalLength {
                    dts_ms: frame.dts_ms,
                    len: size,
                    left: rest.len(),
                });
            }
            let len = rest[..size]
                .iter()
                .fold(0usize, |acc, &b| (acc << 8) | usize::from(b));
            rest = &rest[size..];
            if len > rest.len() {
                return Err(TsError::BadNalLength {
                    dts_ms: frame.dts_ms,
                    len,
                    left: rest.len(),
                });
            }
            let (nal, tail) = rest.split_at(len);
            rest = tail;
            if !nal.is_empty() {
                nals.push(nal);
            }
        }
        let codec = video.codec;
        let has_parameter_sets = nals
            .iter()
            .any(|nal| codec.is_parameter_set(codec.nal_type(nal[0])));
        let mut unit = Vec::with_capacity(frame.data.len() + video.parameter_sets.len() + 16);
        unit.extend_from_slice(codec.aud());
        if frame.keyframe && !has_parameter_sets {
            unit.extend_from_slice(&video.parameter_sets);
        }
        for nal in nals {
            if !codec.is_aud(codec.nal_type(nal[0])) {
                unit.extend_from_slice(&[0, 0, 0, 1]);
                unit.extend_from_slice(nal);
            }
        }
        Ok(unit)
    }

    fn write_audio(&mut self, out: &mut Vec<u8>, frames: &[&Frame]) {
        let Some(header) = self.adts else {
            return;
        };
        let mut data = Vec::with_capacity(frames.iter().map(|f| f.data.len() + 7).sum());
        for frame in frames {
            // Lengths were checked against the 13-bit field in `segment`.
            let len = frame.data.len() + ADTS_HEADER_LEN;
            let mut h = header;
            h[3] |= ((len >> 11) & 0x03) as u8;
            h[4] = ((len >> 3) & 0xFF) as u8;
            h[5] |= ((len & 0x07) as u8) << 5;
            data.extend_from_slice(&h);
            data.extend_from_slice(&frame.data);
        }
        let pts = presentation_time(frames[0]);
        let dts = frames[0].dts_ms.saturating_mul(90);
        let pes = pes_packet(0xC0, pts, dts, &data);
        // Without video the audio PID carries the PCR.
        let pcr = self.video.is_none().then_some(dts);
        packetize(out, AUDIO_PID, &mut self.counters.audio, &pes, pcr, false);
    }
}

fn video_stream(config: &VideoConfig) -> Result<Video, TsError> {
    let (codec, nalu_length_size, sets): (_, _, Vec<&Bytes>) = match config {
        VideoConfig::Avc(avc) => (
            VideoCodec::H264,
            avc.nalu_length_size,
            avc.sps.iter().chain(&avc.pps).collect(),
        ),
        VideoConfig::Hevc(hevc) => (
            VideoCodec::Hevc,
            hevc.nalu_length_size,
            hevc.arrays
                .iter()
                .filter(|(nal_type, _)| matches!(nal_type, 32..=34))
                .flat_map(|(_, units)| units)
                .collect(),
        ),
        VideoConfig::Av1(_) => return Err(TsError::UnsupportedVideo { codec: "AV1" }),
    };
    let mut parameter_sets = Vec::new();
    for set in sets {
        parameter_sets.extend_from_slice(&[0, 0, 0, 1]);
        parameter_sets.extend_from_slice(set);
    }
    Ok(Video {
        codec,
        nalu_length_size: usize::from(nalu_length_size),
        parameter_sets,
    })
}

/// The fixed part of the ADTS header (ISO/IEC 13818-7 6.2): MPEG-4, no
/// CRC, with `frame_length` left zero and the buffer fullness at "variable
/// rate".
fn adts_header(asc: &AudioSpecificConfig) -> Result<[u8; ADTS_HEADER_LEN], TsError> {
    // ADTS profiles are object types 1-4. HE-AAC (SBR 5, PS 29) signals its
    // AAC LC core, and decoders find the SBR/PS data in the stream.
    let profile = match asc.object_type {
        1..=4 => asc.object_type - 1,
        5 | 29 => 1,
        _ => {
            return Err(TsError::UnsupportedAudio {
                why: "only AAC Main, LC, SSR, LTP and HE-AAC have ADTS profiles",
            })
        }
    };
    if asc.sample_rate_index > 12 {
        return Err(TsError::UnsupportedAudio {
            why: "an explicit sampling frequency has no ADTS index",
        });
    }
    if !(1..=7).contains(&asc.channels) {
        return Err(TsError::UnsupportedAudio {
            why: "the channel layout is in a program config element; publish a standard layout",
        });
    }
    let (sf, ch) = (asc.sample_rate_index, asc.channels);
    Ok([
        0xFF,
        0xF1, // sync, MPEG-4, layer 0, protection absent
        (profile << 6) | (sf << 2) | (ch >> 2),
        (ch & 0x03) << 6,
        0x00,
        0x1F, // buffer fullness 0x7FF (high bits)
        0xFC, // buffer fullness (low bits), one raw data block
    ])
}

/// PTS of a frame in 90 kHz units, offset and wrapped.
fn presentation_time(frame: &Frame) -> u64 {
    let pts = i128::from(frame.dts_ms) * 90 + i128::from(frame.composition_ms) * 90;
    let pts = u64::try_from(pts.max(0)).unwrap_or(u64::MAX);
    pts.wrapping_add(TIMESTAMP_OFFSET) & TIMESTAMP_MASK
}

/// Encodes a 33-bit timestamp with its 4-bit prefix and marker bits.
fn timestamp(prefix: u8, ts: u64) -> [u8; 5] {
    [
        (prefix << 4) | (((ts >> 30) & 0x07) as u8) << 1 | 1,
        (ts >> 22) as u8,
        (((ts >> 15) & 0x7F) as u8) << 1 | 1,
        (ts >> 7) as u8,
        ((ts & 0x7F) as u8) << 1 | 1,
    ]
}

/// A PES packet: header with PTS (and, for video, DTS when it differs)
/// and `data`. `pts` is already shifted by [`TIMESTAMP_OFFSET`],
/// `dts_unshifted` is not. PES length 0 ("unbounded") when it does not fit,
/// which the standard allows for video.
fn pes_packet(stream_id: u8, pts: u64, dts_unshifted: u64, data: &[u8]) -> Vec<u8> {
    let dts = dts_unshifted.wrapping_add(TIMESTAMP_OFFSET) & TIMESTAMP_MASK;
    let with_dts = stream_id == 0xE0 && dts != pts;
    let header_data = if with_dts { 10 } else { 5 };
    let mut pes = Vec::with_capacity(9 + header_data + data.len());
    pes.extend_from_slice(&[0, 0, 1, stream_id]);
    let len = u16::try_from(3 + header_data + data.len()).unwrap_or(0);
    pes.extend_from_slice(&len.to_be_bytes());
    pes.push(0x84); // marker bits, data_alignment_indicator
    pes.push(if with_dts { 0xC0 } else { 0x80 });
    pes.push(header_data as u8);
    if with_dts {
        pes.extend_from_slice(&timestamp(0x3, pts));
        pes.extend_from_slice(&timestamp(0x1, dts));
    } else {
        pes.extend_from_slice(&timestamp(0x2, pts));
    }
    pes.extend_from_slice(data);
    pes
}

/// The 6-byte PCR field: 33-bit base, 6 reserved bits, 9-bit extension 0.
fn pcr_field(base: u64) -> [u8; 6] {
    let base = base & TIMESTAMP_MASK;
    [
        (base >> 25) as u8,
        (base >> 17) as u8,
        (base >> 9) as u8,
        (base >> 1) as u8,
        (((base & 1) as u8) << 7) | 0x7E,
        0x00,
    ]
}

fn next_counter(counter: &mut u8) -> u8 {
    let current = *counter;
    *counter = (current + 1) & 0x0F;
    current
}

/// Splits a PES packet into transport packets. The first one starts the
/// unit and carries the PCR and random access indicator in its adaptation
/// field; the last is padded with adaptation field stuffing.
fn packetize(
    out: &mut Vec<u8>,
    pid: u16,
    counter: &mut u8,
    pes: &[u8],
    pcr: Option<u64>,
    random_access: bool,
) {
    let mut pos = 0;
    let mut first = true;
    while pos < pes.len() {
        let mut adaptation: Option<Vec<u8>> = None;
        if first && (pcr.is_some() || random_access) {
            let mut field = vec![(u8::from(random_access) << 6) | (u8::from(pcr.is_some()) << 4)];
            if let Some(pcr) = pcr {
                field.extend_from_slice(&pcr_field(pcr));
            }
            adaptation = Some(field);
        }
        let room = 184 - adaptation.as_ref().map_or(0, |a| 1 + a.len());
        let take = (pes.len() - pos).min(room);
        let stuffing = room - take;
        if stuffing > 0 {
            match &mut adaptation {
                Some(field) => field.resize(field.len() + stuffing, 0xFF),
                // A lone length byte of 0 fills exactly one byte.
                None if stuffing == 1 => adaptation = Some(Vec::new()),
                None => {
                    let mut field = vec![0x00];
                    field.resize(stuffing - 1, 0xFF);
                    adaptation = Some(field);
                }
            }
        }
        let start = out.len();
        out.push(0x47);
        out.push((u8::from(first) << 6) | (pid >> 8) as u8);
        out.push(pid as u8);
        let control = if adaptation.is_some() { 0x30 } else { 0x10 };
        out.push(control | next_counter(counter));
        if let Some(field) = adaptation {
            // At most 183 bytes: the field never exceeds the packet.
            out.push(field.len() as u8);
            out.extend_from_slice(&field);
        }
        out.extend_from_slice(&pes[pos..pos + take]);
        debug_assert_eq!(out.len() - start, PACKET_SIZE);
        pos += take;
        first = false;
    }
}

/// Writes a PSI section (PAT or PMT) in one packet: pointer field,
/// `table_id`, section length, `body`, CRC-32, then 0xFF fill.
fn psi_packet(out: &mut Vec<u8>, pid: u16, counter: &mut u8, table_id: u8, body: &[u8]) {
    let mut section = vec![table_id];
    // Section syntax indicator, reserved bits, length after this field.
    let len = (body.len() + 4) as u16;
    section.extend_from_slice(&(0xB000 | len).to_be_bytes());
    section.extend_from_slice(body);
    let crc = crc32_mpeg2(&section);
    section.extend_from_slice(&crc.to_be_bytes());
    let start = out.len();
    out.extend_from_slice(&[0x47, 0x40 | (pid >> 8) as u8, pid as u8]);
    out.push(0x10 | next_counter(counter));
    out.push(0x00); // pointer_field
    out.extend_from_slice(&section);
    out.resize(start + PACKET_SIZE, 0xFF);
}

/// CRC-32/MPEG-2: polynomial 0x04C11DB7, initial value all ones, no
/// reflection, no final XOR.
fn crc32_mpeg2(data: &[u8]) -> u32 {
    let mut crc = 0xFFFF_FFFFu32;
    for &byte in data {
        crc ^= u32::from(byte) << 24;
        for _ in 0..8 {
            crc = if crc & 0x8000_0000 != 0 {
                (crc << 1) ^ 0x04C1_1DB7
            } else {
                crc << 1
            };
        }
    }
    crc
}

#[cfg(test)]
mod tests;
