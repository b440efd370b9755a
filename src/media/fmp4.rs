//! CMAF / fragmented MP4 muxing for HLS: [`init_segment`] once per track
//! configuration, then one `moof` + `mdat` per media segment.
//!
//! Flow: the segmenter collects [`Frame`]s up to a cut (a video keyframe)
//! and hands them to [`Muxer::segment`] (or the stateless
//! [`media_segment`]) along with what it knows of the next segment's first
//! decoding times ([`NextDts`]), which gives the last sample of each track
//! its exact duration. The init segment (`ftyp` + `moov`) carries the
//! decoder configuration records as received (`avcC`, `hvcC`, `av1C`) and an
//! `esds` built around the AudioSpecificConfig; its sample tables are empty
//! and `mvex` announces fragments.
//!
//! Two codec rules of MP4 that what RTMP carries does not follow: an
//! `hvc1` sample entry needs its parameter set arrays marked complete
//! (`array_completeness`), which ffmpeg's FLV muxer leaves at 0, so the
//! `hvcC` is written with those bits set; and AV1 samples should hold no
//! temporal delimiter, padding or redundant frame header OBUs (AV1-ISOBMFF
//! 2.4), which encoders put in every RTMP frame, so they are left out.
//!
//! Timelines: video uses a 90 kHz timescale (milliseconds times 90, exact);
//! audio uses the sample rate, and every AAC frame lasts 1024 samples. RTMP
//! timestamps are whole milliseconds, so audio decode times are counted in
//! samples from the first frame and only re-anchored to the millisecond
//! clock when the two disagree by more than half a frame (a gap or a
//! publisher restart). [`Muxer`] carries that sample clock from one segment
//! to the next so segment boundaries neither gap nor overlap. Publishers'
//! clocks bunch frames up (several AAC frames a millisecond apart), so the
//! clock is pulled back towards the millisecond clock by at most half a
//! frame per frame: every sample lasts at least 512 samples, and a segment
//! starts before where the last one ended only when the millisecond clock
//! went back more than a second (the timeline restarted).
//!
//! Boxes are written by hand (ISO/IEC 14496-12 and -14, CMAF 23000-19)
//! rather than with `mp4-atom`: that crate needs a newer Rust than ours,
//! brings `num`, `derive_more` and a second `thiserror`, and its model is a
//! full decoder/encoder of every box, while a live muxer writes the same
//! twenty fixed-layout boxes every time.

mod dimensions;
#[cfg(test)]
pub(crate) mod testclip;

pub use dimensions::dimensions;

use super::flv::{AudioSpecificConfig, VideoConfig};
use super::{Frame, TrackKind, Tracks};
use bytes::Bytes;
use thiserror::Error;

/// Timescale of the video track: the 90 kHz clock of MPEG systems, in
/// which millisecond timestamps are exact.
pub const VIDEO_TIMESCALE: u32 = 90_000;
/// `track_ID` of the video track.
pub const VIDEO_TRACK_ID: u32 = 1;
/// `track_ID` of the audio track.
pub const AUDIO_TRACK_ID: u32 = 2;
/// Samples in one AAC frame (AAC LC and the core of HE-AAC).
pub const AAC_FRAME_SAMPLES: u64 = 1024;
/// Duration given to a lone video frame when nothing tells its length: one
/// frame at 30 fps.
const DEFAULT_VIDEO_DURATION: u32 = VIDEO_TIMESCALE / 30;

/// Why a segment could not be muxed.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum MuxError {
    /// Neither a video nor an audio configuration.
    #[error("the stream has no tracks: wait for a video or audio sequence header")]
    NoTracks,
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
    /// Decoding times of a track went backwards.
    #[error("{track:?} decoding time went back from {previous_ms} ms to {dts_ms} ms")]
    TimeWentBack {
        /// The track.
        track: TrackKind,
        /// The earlier frame's decoding time.
        previous_ms: u64,
        /// The later frame's decoding time.
        dts_ms: u64,
    },
    /// A sample duration or composition offset past 32 bits.
    #[error("{track:?} frame at {dts_ms} ms: {what} does not fit in 32 bits")]
    TimeOutOfRange {
        /// The track.
        track: TrackKind,
        /// The frame's decoding time.
        dts_ms: u64,
        /// Which value.
        what: &'static str,
    },
    /// A parameter set or sequence header we could not read the picture
    /// size from.
    #[error("malformed {what}: {why}")]
    BadParameterSet {
        /// Which structure.
        what: &'static str,
        /// What was wrong.
        why: &'static str,
    },
    /// An AudioSpecificConfig too large for its descriptor.
    #[error("AudioSpecificConfig of {len} bytes is too long for an esds descriptor")]
    AudioConfigTooLong {
        /// Its length.
        len: usize,
    },
    /// No frames to mux.
    #[error("a media segment needs at least one frame")]
    Empty,
    /// More sample data than a 32-bit box size holds.
    #[error("segment of {size} bytes is over what an MP4 box can hold; cut shorter segments")]
    TooLarge {
        /// The size it would have had.
        size: u64,
    },
}

/// What the caller knows of the next segment: the decoding time of each
/// track's first frame there. It fixes the duration of this segment's last
/// sample of that track; without it the last video sample repeats the
/// previous duration and the last audio sample lasts one AAC frame.
///
/// A segmenter that cuts when the next keyframe arrives knows
/// `video_ms` (that keyframe's `dts_ms`) and should pass it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NextDts {
    /// The next video frame's `dts_ms`.
    pub video_ms: Option<u64>,
    /// The next audio frame's `dts_ms`.
    pub audio_ms: Option<u64>,
}

/// A fragmenter with the state that spans segments: the sequence number,
/// the audio sample clock and the last video duration.
#[derive(Debug, Clone)]
pub struct Muxer {
    tracks: Tracks,
    sequence: u32,
    carry: Carry,
}

/// What one segment leaves for the next.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Carry {
    /// Decode time in samples where the next audio frame is expected.
    audio_next: Option<u64>,
    /// Duration of the last video sample, in 90 kHz units.
    video_duration: Option<u32>,
}

impl Muxer {
    /// A muxer for one track configuration; a new configuration needs a new
    /// muxer and init segment.
    pub fn new(tracks: &Tracks) -> Result<Self, MuxError> {
        if tracks.video.is_none() && tracks.audio.is_none() {
            return Err(MuxError::NoTracks);
        }
        Ok(Self {
            tracks: tracks.clone(),
            sequence: 1,
            carry: Carry::default(),
        })
    }

    /// The track configuration.
    pub fn tracks(&self) -> &Tracks {
        &self.tracks
    }

    /// The init segment (`ftyp` + `moov`).
    pub fn init_segment(&self) -> Result<Bytes, MuxError> {
        init_segment(&self.tracks)
    }

    /// The next media segment (`moof` + `mdat`) of `frames` in decoding
    /// order, numbered from 1.
    pub fn segment(&mut self, frames: &[Frame], next: NextDts) -> Result<Bytes, MuxError> {
        let (bytes, carry) = mux_segment(self.sequence, frames, &self.tracks, next, self.carry)?;
        self.sequence = self.sequence.wrapping_add(1);
        self.carry = carry;
        Ok(bytes)
    }
}

/// Writes the init segment for `tracks`: `ftyp` and a `moov` with one
/// `trak` per track (video is track 1, audio track 2) and `mvex`.
pub fn init_segment(tracks: &Tracks) -> Result<Bytes, MuxError> {
    if tracks.video.is_none() && tracks.audio.is_none() {
        return Err(MuxError::NoTracks);
    }
    let mut w = Writer::default();
    w.boxed(b"ftyp", |w| {
        w.bytes(b"iso6");
        w.u32(0);
        for brand in [b"iso6", b"cmfc", b"iso5", b"mp41"] {
            w.bytes(brand);
        }
    });
    let video = match &tracks.video {
        Some(config) => Some((config, dimensions(config)?)),
        None => None,
    };
    let esds = match &tracks.audio {
        Some(asc) => Some(esds_payload(asc)?),
        None => None,
    };
    w.boxed(b"moov", |w| {
        w.full(b"mvhd", 0, 0, |w| {
            w.u32(0); // creation_time
            w.u32(0); // modification_time
            w.u32(1000); // timescale
            w.u32(0); // duration: unknown, fragmented
            w.u32(0x0001_0000); // rate 1.0
            w.u16(0x0100); // volume 1.0
            w.zeros(10);
            w.matrix();
            w.zeros(24); // pre_defined
            w.u32(AUDIO_TRACK_ID + 1); // next_track_ID
        });
        if let Some((config, (width, height))) = video {
            w.trak(VIDEO_TRACK_ID, Handler::Video { width, height }, |w| {
                video_sample_entry(w, config, width, height);
            });
        }
        if let (Some(asc), Some(esds)) = (&tracks.audio, &esds) {
            w.trak(AUDIO_TRACK_ID, Handler::Audio(asc.sample_rate), |w| {
                audio_sample_entry(w, asc, esds);
            });
        }
        w.boxed(b"mvex", |w| {
            let ids = [
                tracks.video.as_ref().map(|_| VIDEO_TRACK_ID),
                tracks.audio.as_ref().map(|_| AUDIO_TRACK_ID),
            ];
            for id in ids.into_iter().flatten() {
                w.full(b"trex", 0, 0, |w| {
                    w.u32(id);
                    w.u32(1); // default_sample_description_index
                    w.u32(0); // default_sample_duration
                    w.u32(0); // default_sample_size
                    w.u32(0); // default_sample_flags
                });
            }
        });
    });
    Ok(w.finish())
}

/// Writes one media segment without state from earlier segments: `frames`
/// in decoding order become a `moof` numbered `sequence` (one `traf` per
/// track present in `frames`) and an `mdat` with the video samples then the
/// audio samples.
///
/// The audio decode time starts from the first audio frame's `dts_ms`
/// rounded to the sample rate, so consecutive segments may be a fraction of
/// a millisecond apart; [`Muxer`] avoids that.
pub fn media_segment(
    sequence: u32,
    frames: &[Frame],
    tracks: &Tracks,
    next: NextDts,
) -> Result<Bytes, MuxError> {
    mux_segment(sequence, frames, tracks, next, Carry::default()).map(|(bytes, _)| bytes)
}

/// One track's samples as they go into a `trun`.
struct Run<'a> {
    track_id: u32,
    base_decode_time: u64,
    frames: Vec<&'a Frame>,
    durations: Vec<u32>,
    composition: Vec<i32>,
}

fn mux_segment(
    sequence: u32,
    frames: &[Frame],
    tracks: &Tracks,
    next: NextDts,
    carry: Carry,
) -> Result<(Bytes, Carry), MuxError> {
    if frames.is_empty() {
        return Err(MuxError::Empty);
    }
    let av1_samples: Vec<Frame>;
    let frames = if matches!(tracks.video, Some(VideoConfig::Av1(_))) {
        av1_samples = frames
            .iter()
            .map(|f| match f.track {
                TrackKind::Video => Frame {
                    data: av1_sample(&f.data),
                    ..f.clone()
                },
                TrackKind::Audio => f.clone(),
            })
            .collect();
        &av1_samples[..]
    } else {
        frames
    };
    let mut video_frames = Vec::new();
    let mut audio_frames = Vec::new();
    for frame in frames {
        let (present, list) = match frame.track {
            TrackKind::Video => (tracks.video.is_some(), &mut video_frames),
            TrackKind::Audio => (tracks.audio.is_some(), &mut audio_frames),
        };
        if !present {
            return Err(MuxError::MissingTrack {
                track: frame.track,
                dts_ms: frame.dts_ms,
            });
        }
        if let Some(prev) = list.last().map(|f: &&Frame| f.dts_ms) {
            if frame.dts_ms < prev {
                return Err(MuxError::TimeWentBack {
                    track: frame.track,
                    previous_ms: prev,
                    dts_ms: frame.dts_ms,
                });
            }
        }
        list.push(frame);
    }
    let mut out_carry = carry;
    let mut runs = Vec::new();
    if !video_frames.is_empty() {
        let run = video_run(video_frames, next.video_ms, carry.video_duration)?;
        out_carry.video_duration = run.durations.last().copied();
        runs.push(run);
    }
    if let (false, Some(asc)) = (audio_frames.is_empty(), &tracks.audio) {
        let (run, end) = audio_run(audio_frames, asc.sample_rate, next.audio_ms, carry)?;
        out_carry.audio_next = Some(end);
        runs.push(run);
    }

    let data_len: u64 = runs
        .iter()
        .flat_map(|r| &r.frames)
        .map(|f| f.data.len() as u64)
        .sum();
    let mdat_size = data_len + 8;
    if mdat_size > u64::from(u32::MAX) {
        return Err(MuxError::TooLarge { size: mdat_size });
    }

    let mut w = Writer::default();
    let mut offset_fields = Vec::new();
    let moof = w.begin(b"moof");
    // Numbered from 1 after each init segment and up by one per segment,
    // so a player that reads a playlist as one stream (VLC) sees
    // contiguous fragments. VLC still notes "Fragment sequence
    // discontinuity detected N != 0" once when it joins: it expects 0 after
    // a `moov`, whatever fragment it starts at. mpv's "Found duplicated MOOV
    // Atom" on live playlists is ffmpeg's HLS reader feeding the init
    // segment again after each reload (it keeps a new copy of `EXT-X-MAP`
    // per parse); media segments carry no `moov`.
    w.full(b"mfhd", 0, 0, |w| w.u32(sequence));
    for run in &runs {
        offset_fields.push(write_traf(&mut w, run));
    }
    w.end(moof);
    // Data offsets count from the start of the moof (default-base-is-moof).
    let mut data_offset = w.buf.len() as u64 + 8;
    for (run, field) in runs.iter().zip(offset_fields) {
        let offset =
            u32::try_from(data_offset).map_err(|_| MuxError::TooLarge { size: data_offset })?;
        w.buf[field..field + 4].copy_from_slice(&offset.to_be_bytes());
        data_offset += run.frames.iter().map(|f| f.data.len() as u64).sum::<u64>();
    }
    // Checked against u32::MAX above.
    w.u32(mdat_size as u32);
    w.bytes(b"mdat");
    for frame in runs.iter().flat_map(|r| &r.frames) {
        w.bytes(&frame.data);
    }
    Ok((w.finish(), out_carry))
}

fn ms_to_90k(ms: u64) -> u64 {
    ms.saturating_mul(90)
}

fn video_run<'a>(
    frames: Vec<&'a Frame>,
    next_ms: Option<u64>,
    carried: Option<u32>,
) -> Result<Run<'a>, MuxError> {
    let out_of_range = |frame: &Frame, what| MuxError::TimeOutOfRange {
        track: TrackKind::Video,
        dts_ms: frame.dts_ms,
        what,
    };
    let mut durations = Vec::with_capacity(frames.len());
    for pair in frames.windows(2) {
        let d = ms_to_90k(pair[1].dts_ms - pair[0].dts_ms);
        durations.push(u32::try_from(d).map_err(|_| out_of_range(pair[0], "sample duration"))?);
    }
    let last = frames[frames.len() - 1];
    let last_duration = match next_ms {
        Some(next) if next >= last.dts_ms => u32::try_from(ms_to_90k(next - last.dts_ms))
            .map_err(|_| out_of_range(last, "sample duration"))?,
        Some(next) => {
            return Err(MuxError::TimeWentBack {
                track: TrackKind::Video,
                previous_ms: last.dts_ms,
                dts_ms: next,
            })
        }
        None => durations
            .last()
            .copied()
            .or(carried)
            .unwrap_or(DEFAULT_VIDEO_DURATION),
    };
    durations.push(last_duration);
    let composition = frames
        .iter()
        .map(|f| {
            f.composition_ms
                .checked_mul(90)
                .ok_or_else(|| out_of_range(f, "composition offset"))
        })
        .collect::<Result<_, _>>()?;
    Ok(Run {
        track_id: VIDEO_TRACK_ID,
        base_decode_time: ms_to_90k(frames[0].dts_ms),
        frames,
        durations,
        composition,
    })
}

/// Milliseconds to samples, rounded to nearest.
fn ms_to_samples(ms: u64, rate: u32) -> u64 {
    let samples = (u128::from(ms) * u128::from(rate) + 500) / 1000;
    u64::try_from(samples).unwrap_or(u64::MAX)
}

/// Keeps the sample clock where the millisecond clock agrees with it
/// (within half a frame), and jumps to the millisecond clock otherwise.
fn snap(expected: u64, actual: u64) -> u64 {
    if expected.abs_diff(actual) <= AAC_FRAME_SAMPLES / 2 {
        expected
    } else {
        actual
    }
}

/// The audio run and the decode time at its end, in samples.
fn audio_run<'a>(
    frames: Vec<&'a Frame>,
    rate: u32,
    next_ms: Option<u64>,
    carry: Carry,
) -> Result<(Run<'a>, u64), MuxError> {
    let first = ms_to_samples(frames[0].dts_ms, rate);
    let mut time = carry.audio_next.map_or(first, |expected| {
        let restarted = first.saturating_add(u64::from(rate)) < expected;
        if restarted {
            first
        } else {
            snap(expected, first).max(expected)
        }
    });
    let base_decode_time = time;
    let mut durations = Vec::with_capacity(frames.len());
    for (i, frame) in frames.iter().enumerate() {
        let next = match frames.get(i + 1).map(|f| f.dts_ms).or(next_ms) {
            // Never shorter than half a frame, so decode times increase.
            Some(ms) => snap(time + AAC_FRAME_SAMPLES, ms_to_samples(ms, rate))
                .max(time + AAC_FRAME_SAMPLES / 2),
            None => time + AAC_FRAME_SAMPLES,
        };
        let duration = u32::try_from(next - time).map_err(|_| MuxError::TimeOutOfRange {
            track: TrackKind::Audio,
            dts_ms: frame.dts_ms,
            what: "sample duration",
        })?;
        durations.push(duration);
        time = next;
    }
    let composition = vec![0; frames.len()];
    let run = Run {
        track_id: AUDIO_TRACK_ID,
        base_decode_time,
        frames,
        durations,
        composition,
    };
    Ok((run, time))
}

/// Sample flags (ISO/IEC 14496-12 8.8.3.1): a sync sample depends on no
/// other; others depend on earlier ones and are marked non-sync.
const SYNC_SAMPLE: u32 = 0x0200_0000;
const NON_SYNC_SAMPLE: u32 = 0x0101_0000;

/// Writes a `traf`; returns the position of the `trun` data offset to fill
/// in once the `moof` size is known.
fn write_traf(w: &mut Writer, run: &Run<'_>) -> usize {
    let video = run.track_id == VIDEO_TRACK_ID;
    let traf = w.begin(b"traf");
    // default-base-is-moof, and for audio every sample is a sync sample.
    let tfhd_flags = if video { 0x02_0000 } else { 0x02_0020 };
    w.full(b"tfhd", 0, tfhd_flags, |w| {
        w.u32(run.track_id);
        if !video {
            w.u32(SYNC_SAMPLE);
        }
    });
    w.full(b"tfdt", 1, 0, |w| w.u64(run.base_decode_time));
    // data-offset, duration, size; video adds flags and composition offsets.
    let trun_flags = if video { 0x0F01 } else { 0x0301 };
    let trun = w.begin(b"trun");
    w.u8(1); // version 1: signed composition offsets
    w.u24(trun_flags);
    // Sample counts are bounded by the segment size checked before.
    w.u32(run.frames.len() as u32);
    let offset_field = w.buf.len();
    w.u32(0);
    for ((frame, &duration), &cts) in run.frames.iter().zip(&run.durations).zip(&run.composition) {
        w.u32(duration);
        w.u32(frame.data.len() as u32);
        if video {
            w.u32(if frame.keyframe {
                SYNC_SAMPLE
            } else {
                NON_SYNC_SAMPLE
            });
            w.bytes(&cts.to_be_bytes());
        }
    }
    w.end(trun);
    w.end(traf);
    offset_field
}

enum Handler {
    Video { width: u32, height: u32 },
    Audio(u32),
}

/// OBU types an AV1 sample should not hold (AV1-ISOBMFF 2.4): temporal
/// delimiter, redundant frame header, padding.
const AV1_OBUS_LEFT_OUT: [u8; 3] = [2, 7, 15];

/// An AV1 temporal unit as an MP4 sample: its OBUs without those of
/// [`AV1_OBUS_LEFT_OUT`]. Data that does not parse as OBUs is left as it
/// is (the decoder's to judge). Without a copy when only a prefix goes, as
/// the temporal delimiter that opens every unit does.
fn av1_sample(data: &Bytes) -> Bytes {
    let mut keep: Vec<std::ops::Range<usize>> = Vec::new();
    let mut pos = 0;
    while pos < data.len() {
        let header = data[pos];
        let obu_type = (header >> 3) & 0x0F;
        let mut at = pos + 1 + usize::from(header & 0x04 != 0);
        let end = if header & 0x02 != 0 {
            // obu_size: leb128, at most 8 bytes.
            let mut size = 0u64;
            let mut done = false;
            for i in 0..8 {
                let Some(&b) = data.get(at) else { break };
                at += 1;
                size |= u64::from(b & 0x7F) << (7 * i);
                if b & 0x80 == 0 {
                    done = true;
                    break;
                }
            }
            match usize::try_from(size).ok().and_then(|s| at.checked_add(s)) {
                Some(end) if done && end <= data.len() => end,
                _ => return data.clone(),
            }
        } else {
            // Without a size field the OBU runs to the end.
            data.len()
        };
        if at > end {
            return data.clone();
        }
        if !AV1_OBUS_LEFT_OUT.contains(&obu_type) {
            match keep.last_mut() {
                Some(last) if last.end == pos => last.end = end,
                _ => keep.push(pos..end),
            }
        }
        pos = end;
    }
    match keep.as_slice() {
        [] => Bytes::new(),
        [one] => data.slice(one.clone()),
        many => {
            let mut out = Vec::with_capacity(many.iter().map(|r| r.len()).sum());
            for r in many {
                out.extend_from_slice(&data[r.clone()]);
            }
            Bytes::from(out)
        }
    }
}

/// An HEVCDecoderConfigurationRecord as an `hvc1` sample entry needs it:
/// the VPS, SPS and PPS arrays marked complete (ISO/IEC 14496-15 8.4.1:
/// for `hvc1` their `array_completeness` is 1), as ffmpeg's MP4 muxer
/// writes it. Other arrays (SEI) keep theirs.
fn hvc1_record(raw: &[u8]) -> Bytes {
    let mut record = raw.to_vec();
    let Some(&arrays) = record.get(22) else {
        return Bytes::from(record);
    };
    let mut pos = 23;
    for _ in 0..arrays {
        let Some(&kind) = record.get(pos) else { break };
        if matches!(kind & 0x3F, 32..=34) {
            record[pos] = kind | 0x80;
        }
        let Some(count) = record.get(pos + 1..pos + 3) else {
            break;
        };
        let count = u16::from_be_bytes([count[0], count[1]]);
        pos += 3;
        for _ in 0..count {
            let Some(len) = record.get(pos..pos + 2) else {
                break;
            };
            pos += 2 + usize::from(u16::from_be_bytes([len[0], len[1]]));
        }
    }
    Bytes::from(record)
}

fn video_sample_entry(w: &mut Writer, config: &VideoConfig, width: u32, height: u32) {
    let (entry, record_box, record) = match config {
        VideoConfig::Avc(c) => (b"avc1", b"avcC", c.raw.clone()),
        VideoConfig::Hevc(c) => (b"hvc1", b"hvcC", hvc1_record(&c.raw)),
        VideoConfig::Av1(c) => (b"av01", b"av1C", c.raw.clone()),
    };
    w.boxed(entry, |w| {
        w.zeros(6);
        w.u16(1); // data_reference_index
        w.zeros(16); // pre_defined, reserved
                     // The sample entry holds 16 bits; sizes past that are not video.
        w.u16(width.min(0xFFFF) as u16);
        w.u16(height.min(0xFFFF) as u16);
        w.u32(0x0048_0000); // 72 dpi
        w.u32(0x0048_0000);
        w.u32(0);
        w.u16(1); // frame_count
        w.zeros(32); // compressorname
        w.u16(0x0018); // depth
        w.u16(0xFFFF); // pre_defined = -1
        w.boxed(record_box, |w| w.bytes(&record));
    });
}

/// The `esds` payload: an ES_Descriptor holding a DecoderConfigDescriptor
/// (MPEG-4 audio) with the AudioSpecificConfig, and the SL config.
fn esds_payload(asc: &AudioSpecificConfig) -> Result<Vec<u8>, MuxError> {
    // Single-byte descriptor lengths keep the layout simple; a config is
    // a handful of bytes.
    if asc.raw.len() > 100 {
        return Err(MuxError::AudioConfigTooLong { len: asc.raw.len() });
    }
    let dsi_len = asc.raw.len() as u8;
    let dcd_len = 13 + 2 + dsi_len;
    let es_len = 3 + 2 + dcd_len + 3;
    let mut d = vec![0x03, es_len, 0x00, 0x01, 0x00]; // ES_ID 1, no flags
    d.extend_from_slice(&[0x04, dcd_len, 0x40, 0x15]); // MPEG-4 audio, audio stream
    d.extend_from_slice(&[0, 0, 0]); // bufferSizeDB
    d.extend_from_slice(&0u32.to_be_bytes()); // maxBitrate
    d.extend_from_slice(&0u32.to_be_bytes()); // avgBitrate
    d.extend_from_slice(&[0x05, dsi_len]);
    d.extend_from_slice(&asc.raw);
    d.extend_from_slice(&[0x06, 0x01, 0x02]); // SLConfigDescriptor: MP4
    Ok(d)
}

fn audio_sample_entry(w: &mut Writer, asc: &AudioSpecificConfig, esds: &[u8]) {
    w.boxed(b"mp4a", |w| {
        w.zeros(6);
        w.u16(1); // data_reference_index
        w.zeros(8);
        w.u16(u16::from(asc.channels.max(1)).min(2)); // channelcount: 1 or 2 by the spec
        w.u16(16); // samplesize
        w.zeros(4);
        // 16.16 fixed point; rates past 65535 Hz do not fit and the
        // decoder takes the rate from the AudioSpecificConfig anyway.
        w.u32(asc.sample_rate.min(0xFFFF) << 16);
        w.full(b"esds", 0, 0, |w| w.bytes(esds));
    });
}

/// A box writer: boxes are opened with a placeholder size that is patched
/// when they close.
#[derive(Default)]
struct Writer {
    buf: Vec<u8>,
}

impl Writer {
    fn u8(&mut self, v: u8) {
        self.buf.push(v);
    }
    fn u16(&mut self, v: u16) {
        self.buf.extend_from_slice(&v.to_be_bytes());
    }
    fn u24(&mut self, v: u32) {
        self.buf.extend_from_slice(&v.to_be_bytes()[1..]);
    }
    fn u32(&mut self, v: u32) {
        self.buf.extend_from_slice(&v.to_be_bytes());
    }
    fn u64(&mut self, v: u64) {
        self.buf.extend_from_slice(&v.to_be_bytes());
    }
    fn bytes(&mut self, v: &[u8]) {
        self.buf.extend_from_slice(v);
    }
    fn zeros(&mut self, n: usize) {
        self.buf.resize(self.buf.len() + n, 0);
    }

    /// The unity transformation matrix of `mvhd` and `tkhd`.
    fn matrix(&mut self) {
        for v in [0x0001_0000, 0, 0, 0, 0x0001_0000, 0, 0, 0, 0x4000_0000] {
            self.u32(v);
        }
    }

    fn begin(&mut self, fourcc: &[u8; 4]) -> usize {
        let start = self.buf.len();
        self.u32(0);
        self.bytes(fourcc);
        start
    }

    fn end(&mut self, start: usize) {
        // Boxes other than mdat are small: moov and moof stay far below 4 GiB.
        let size = (self.buf.len() - start) as u32;
        self.buf[start..start + 4].copy_from_slice(&size.to_be_bytes());
    }

    fn boxed(&mut self, fourcc: &[u8; 4], body: impl FnOnce(&mut Self)) {
        let start = self.begin(fourcc);
        body(self);
        self.end(start);
    }

    fn full(&mut self, fourcc: &[u8; 4], version: u8, flags: u32, body: impl FnOnce(&mut Self)) {
        self.boxed(fourcc, |w| {
            w.u8(version);
            w.u24(flags);
            body(w);
        });
    }

    fn trak(&mut self, id: u32, handler: Handler, sample_entry: impl FnOnce(&mut Self)) {
        let (timescale, hdlr, name, volume, (width, height)) = match handler {
            Handler::Video { width, height } => {
                (VIDEO_TIMESCALE, b"vide", "VideoHandler", 0, (width, height))
            }
            Handler::Audio(rate) => (rate, b"soun", "SoundHandler", 0x0100, (0, 0)),
        };
        self.boxed(b"trak", |w| {
            // Flags: track enabled, in movie.
            w.full(b"tkhd", 0, 0x03, |w| {
                w.u32(0);
                w.u32(0);
                w.u32(id);
                w.u32(0);
                w.u32(0); // duration
                w.zeros(8);
                w.u16(0); // layer
                w.u16(0); // alternate_group
                w.u16(volume);
                w.u16(0);
                w.matrix();
                w.u32(width.min(0xFFFF) << 16);
                w.u32(height.min(0xFFFF) << 16);
            });
            w.boxed(b"mdia", |w| {
                w.full(b"mdhd", 0, 0, |w| {
                    w.u32(0);
                    w.u32(0);
                    w.u32(timescale);
                    w.u32(0);
                    w.u16(0x55C4); // language "und"
                    w.u16(0);
                });
                w.full(b"hdlr", 0, 0, |w| {
                    w.u32(0);
                    w.bytes(hdlr);
                    w.zeros(12);
                    w.bytes(name.as_bytes());
                    w.u8(0);
                });
                w.boxed(b"minf", |w| {
                    if volume == 0 {
                        w.full(b"vmhd", 0, 1, |w| w.zeros(8));
                    } else {
                        w.full(b"smhd", 0, 0, |w| w.zeros(4));
                    }
                    w.boxed(b"dinf", |w| {
                        w.full(b"dref", 0, 0, |w| {
                            w.u32(1);
                            // Flag 1: the media is in this file.
                            w.full(b"url ", 0, 1, |_| {});
                        });
                    });
                    w.boxed(b"stbl", |w| {
                        w.full(b"stsd", 0, 0, |w| {
                            w.u32(1);
                            sample_entry(w);
                        });
                        for table in [b"stts", b"stsc", b"stco"] {
                            w.full(table, 0, 0, |w| w.u32(0));
                        }
                        w.full(b"stsz", 0, 0, |w| {
                            w.u32(0);
                            w.u32(0);
                        });
                    });
                });
            });
        });
    }

    fn finish(self) -> Bytes {
        Bytes::from(self.buf)
    }
}

#[cfg(test)]
mod tests;
