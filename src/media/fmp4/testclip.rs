//! Test support shared by the muxers' interop tests: a real H.264/AAC clip
//! made by ffmpeg at test time, read from its FLV file into [`Frame`]s the
//! way the RTMP path would deliver them, and helpers to run ffmpeg and
//! ffprobe. A missing ffmpeg fails the tests, it does not skip them.

use crate::media::flv::{self, AudioPacket, FrameType, VideoPacket, VideoTag};
use crate::media::{Frame, TrackKind, Tracks};
use bytes::Bytes;
use std::path::Path;
use std::process::Command;
use std::sync::OnceLock;

/// The clip: its decoder configuration and frames in file (decoding) order.
pub(crate) struct Clip {
    pub(crate) tracks: Tracks,
    pub(crate) frames: Vec<Frame>,
    /// Keep the directory alive while the clip is in use.
    _dir: tempfile::TempDir,
}

/// The 4 s clip of the brief: 320x240 at 25 fps, H.264 with a keyframe
/// every 50 frames and B-frames, 44.1 kHz AAC; made once per test process.
pub(crate) fn clip() -> &'static Clip {
    static CLIP: OnceLock<Clip> = OnceLock::new();
    CLIP.get_or_init(|| {
        let dir = tempfile::tempdir().expect("temp dir");
        let flv = dir.path().join("clip.flv");
        let out = run(
            "ffmpeg",
            &[
                "-v",
                "error",
                "-f",
                "lavfi",
                "-i",
                "testsrc2=size=320x240:rate=25",
                "-f",
                "lavfi",
                "-i",
                "sine=frequency=440:sample_rate=44100",
                "-c:v",
                "libx264",
                "-g",
                "50",
                "-bf",
                "2",
                "-c:a",
                "aac",
                "-t",
                "4",
                "-f",
                "flv",
                path_str(&flv),
            ],
        );
        assert!(out.is_empty(), "ffmpeg complained: {out}");
        let bytes = std::fs::read(&flv).expect("read clip.flv");
        let (tracks, frames) = read_flv_file(&bytes);
        Clip {
            tracks,
            frames,
            _dir: dir,
        }
    })
}

/// Runs `program args...` and returns its stderr; panics when the program
/// is missing or fails.
pub(crate) fn run(program: &str, args: &[&str]) -> String {
    let output = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| {
            panic!("{program} is required for this test (apt-get install ffmpeg): {e}")
        });
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(
        output.status.success(),
        "{program} {args:?} failed: {stderr}"
    );
    stderr
}

/// A path as a command argument (temp paths are UTF-8).
pub(crate) fn path_str(path: &Path) -> &str {
    path.to_str().expect("UTF-8 temp path")
}

/// Runs ffprobe with JSON output on `path`.
pub(crate) fn ffprobe(args: &[&str], path: &Path) -> serde_json::Value {
    let output = Command::new("ffprobe")
        .args(["-v", "error", "-of", "json"])
        .args(args)
        .arg(path)
        .output()
        .unwrap_or_else(|e| {
            panic!("ffprobe is required for this test (apt-get install ffmpeg): {e}")
        });
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success() && stderr.is_empty(),
        "ffprobe {args:?} {} failed: {stderr}",
        path.display()
    );
    serde_json::from_slice(&output.stdout).expect("ffprobe JSON")
}

/// Reads an FLV file: a 9-byte header, then tags of an 11-byte header
/// (type, body size, timestamp with its extension byte, stream id), the
/// body and the 4-byte size of the previous tag.
pub(crate) fn read_flv_file(file: &[u8]) -> (Tracks, Vec<Frame>) {
    assert_eq!(&file[..3], b"FLV", "not an FLV file");
    let header_len = u32::from_be_bytes(file[5..9].try_into().unwrap()) as usize;
    let mut pos = header_len + 4;
    let mut tracks = Tracks {
        video: None,
        audio: None,
    };
    let mut frames = Vec::new();
    while pos + 11 <= file.len() {
        let h = &file[pos..pos + 11];
        let tag_type = h[0] & 0x1F;
        let size = u32::from_be_bytes([0, h[1], h[2], h[3]]) as usize;
        let dts_ms = u64::from(u32::from_be_bytes([h[7], h[4], h[5], h[6]]));
        let body = Bytes::copy_from_slice(&file[pos + 11..pos + 11 + size]);
        pos += 11 + size + 4;
        match tag_type {
            9 => match flv::parse_video(&body).expect("video tag") {
                VideoTag::Frame {
                    frame_type, packet, ..
                } => match packet {
                    VideoPacket::SequenceStart(config) => tracks.video = Some(config),
                    VideoPacket::CodedFrames {
                        composition_time,
                        data,
                    } => frames.push(Frame {
                        track: TrackKind::Video,
                        dts_ms,
                        composition_ms: composition_time,
                        keyframe: frame_type == FrameType::Key,
                        data,
                    }),
                    VideoPacket::SequenceEnd | VideoPacket::Metadata(_) => {}
                },
                VideoTag::Command => {}
            },
            8 => match flv::parse_audio(&body).expect("audio tag").packet {
                AudioPacket::SequenceStart(asc) => tracks.audio = Some(asc),
                AudioPacket::Raw(data) => frames.push(Frame {
                    track: TrackKind::Audio,
                    dts_ms,
                    composition_ms: 0,
                    keyframe: true,
                    data,
                }),
                AudioPacket::SequenceEnd => {}
            },
            _ => {}
        }
    }
    (tracks, frames)
}

/// A segment cut at video keyframes: its frames and the next segment's
/// first video decoding time.
pub(crate) struct Cut<'a> {
    pub(crate) frames: &'a [Frame],
    pub(crate) next_video_ms: Option<u64>,
}

/// Cuts `frames` before every video keyframe after the first frame.
pub(crate) fn cut_at_keyframes(frames: &[Frame]) -> Vec<Cut<'_>> {
    let starts: Vec<usize> = frames
        .iter()
        .enumerate()
        .filter(|(i, f)| *i > 0 && f.track == TrackKind::Video && f.keyframe)
        .map(|(i, _)| i)
        .collect();
    let mut cuts = Vec::new();
    let mut from = 0;
    for &start in &starts {
        cuts.push(Cut {
            frames: &frames[from..start],
            next_video_ms: Some(frames[start].dts_ms),
        });
        from = start;
    }
    cuts.push(Cut {
        frames: &frames[from..],
        next_video_ms: None,
    });
    cuts
}

/// Seconds from the first frame to the end of the last video frame of a
/// cut, for `#EXTINF`.
pub(crate) fn cut_seconds(cut: &Cut<'_>, frame_ms: u64) -> f64 {
    let first = cut.frames[0].dts_ms;
    let end = cut.next_video_ms.unwrap_or_else(|| {
        cut.frames
            .iter()
            .filter(|f| f.track == TrackKind::Video)
            .map(|f| f.dts_ms + frame_ms)
            .max()
            .unwrap_or(first)
    });
    (end - first) as f64 / 1000.0
}

/// An HLS media playlist for `segments` of (URI, seconds), with `map` as
/// the `#EXT-X-MAP` init segment if given.
pub(crate) fn playlist(map: Option<&str>, segments: &[(String, f64)]) -> String {
    let target = segments
        .iter()
        .map(|(_, s)| s.ceil() as u64)
        .max()
        .unwrap_or(1);
    let mut m3u8 = format!("#EXTM3U\n#EXT-X-VERSION:7\n#EXT-X-TARGETDURATION:{target}\n");
    m3u8.push_str("#EXT-X-MEDIA-SEQUENCE:0\n#EXT-X-PLAYLIST-TYPE:VOD\n");
    if let Some(map) = map {
        m3u8.push_str(&format!("#EXT-X-MAP:URI=\"{map}\"\n"));
    }
    for (uri, seconds) in segments {
        m3u8.push_str(&format!("#EXTINF:{seconds:.3},\n{uri}\n"));
    }
    m3u8.push_str("#EXT-X-ENDLIST\n");
    m3u8
}

/// A 2 s HEVC clip (320x240, 25 fps, a keyframe every second, no
/// B-frames), video only. ffmpeg 5's FLV muxer cannot write HEVC, so the
/// clip is an Annex B stream from libx265, cut into access units at its
/// delimiters, with an HEVCDecoderConfigurationRecord built from its
/// parameter sets as ffmpeg 9's FLV muxer writes it (arrays not marked
/// complete).
pub(crate) fn hevc_clip() -> &'static Clip {
    static CLIP: OnceLock<Clip> = OnceLock::new();
    CLIP.get_or_init(|| {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("clip.hevc");
        let out = run(
            "ffmpeg",
            &[
                "-v",
                "error",
                "-f",
                "lavfi",
                "-i",
                "testsrc2=size=320x240:rate=25",
                "-t",
                "2",
                "-c:v",
                "libx265",
                "-x265-params",
                "log-level=error:keyint=25:bframes=0:aud=1",
                "-f",
                "hevc",
                path_str(&path),
            ],
        );
        assert!(out.is_empty(), "ffmpeg complained: {out}");
        let stream = std::fs::read(&path).expect("read clip.hevc");
        let (tracks, frames) = hevc_frames(&stream);
        Clip {
            tracks,
            frames,
            _dir: dir,
        }
    })
}

/// Splits Annex B data at start codes.
fn annex_b_units(stream: &[u8]) -> Vec<&[u8]> {
    let mut starts = Vec::new();
    let mut i = 0;
    while i + 3 <= stream.len() {
        if stream[i..i + 3] == [0, 0, 1] {
            starts.push(i + 3);
            i += 3;
        } else {
            i += 1;
        }
    }
    starts
        .iter()
        .enumerate()
        .map(|(n, &s)| {
            let end = starts.get(n + 1).map_or(stream.len(), |&next| next - 3);
            // A four-byte start code leaves a zero byte behind.
            let mut unit = &stream[s..end];
            while unit.last() == Some(&0) {
                unit = &unit[..unit.len() - 1];
            }
            unit
        })
        .collect()
}

fn hevc_frames(stream: &[u8]) -> (Tracks, Vec<Frame>) {
    let mut sets: Vec<(u8, &[u8])> = Vec::new();
    let mut frames = Vec::new();
    let mut current: Option<(Vec<u8>, bool)> = None;
    let push = |unit: Option<(Vec<u8>, bool)>, frames: &mut Vec<Frame>| {
        if let Some((data, keyframe)) = unit.filter(|(d, _)| !d.is_empty()) {
            frames.push(Frame {
                track: TrackKind::Video,
                dts_ms: frames.len() as u64 * 40,
                composition_ms: 0,
                keyframe,
                data: Bytes::from(data),
            });
        }
    };
    for nal in annex_b_units(stream) {
        let nal_type = (nal[0] >> 1) & 0x3F;
        match nal_type {
            35 => push(current.replace((Vec::new(), false)), &mut frames),
            32..=34 => {
                if !sets.iter().any(|(t, _)| *t == nal_type) {
                    sets.push((nal_type, nal));
                }
            }
            _ => {
                let (data, keyframe) = current.get_or_insert_with(|| (Vec::new(), false));
                *keyframe |= (16..=23).contains(&nal_type);
                data.extend_from_slice(&(nal.len() as u32).to_be_bytes());
                data.extend_from_slice(nal);
            }
        }
    }
    push(current.take(), &mut frames);

    // The record's profile, tier and level are the SPS's general
    // profile_tier_level, after the two-byte NAL header and one byte of ids.
    let sps = sets.iter().find(|(t, _)| *t == 33).expect("SPS").1;
    let mut rbsp = Vec::new();
    let mut zeros = 0;
    for &b in sps {
        if zeros >= 2 && b == 3 {
            zeros = 0;
            continue;
        }
        zeros = if b == 0 { zeros + 1 } else { 0 };
        rbsp.push(b);
    }
    let mut record = vec![1];
    record.extend_from_slice(&rbsp[3..15]);
    // No segmentation limit, 4:2:0, 8-bit, 4-byte NAL lengths.
    record.extend_from_slice(&[0xF0, 0x00, 0xFC, 0xFD, 0xF8, 0xF8, 0x00, 0x00, 0x0F]);
    record.push(sets.len() as u8);
    sets.sort_by_key(|(t, _)| *t);
    // array_completeness 0, as ffmpeg's FLV muxer writes it.
    for (nal_type, nal) in &sets {
        record.push(*nal_type);
        record.extend_from_slice(&1u16.to_be_bytes());
        record.extend_from_slice(&(nal.len() as u16).to_be_bytes());
        record.extend_from_slice(nal);
    }
    let config = flv::parse_hevc_config(Bytes::from(record)).expect("hvcC");
    let tracks = Tracks {
        video: Some(flv::VideoConfig::Hevc(config)),
        audio: None,
    };
    (tracks, frames)
}

/// A 2 s AV1 clip (320x240, 25 fps, a keyframe every second), video only:
/// libaom's low-overhead OBU stream cut into temporal units, each opening
/// with its temporal delimiter as in Enhanced RTMP from ffmpeg 9 (MP4
/// samples leave it out), with an av1C record around the sequence header.
/// A temporal unit that repeats the sequence header is a keyframe.
pub(crate) fn av1_clip() -> &'static Clip {
    static CLIP: OnceLock<Clip> = OnceLock::new();
    CLIP.get_or_init(|| {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("clip.obu");
        let out = run(
            "ffmpeg",
            &[
                "-v",
                "error",
                "-f",
                "lavfi",
                "-i",
                "testsrc2=size=320x240:rate=25",
                "-t",
                "2",
                "-c:v",
                "libaom-av1",
                "-cpu-used",
                "8",
                "-g",
                "25",
                "-f",
                "obu",
                path_str(&path),
            ],
        );
        assert!(out.is_empty(), "ffmpeg complained: {out}");
        let stream = std::fs::read(&path).expect("read clip.obu");
        let mut sequence_header = None;
        let mut units: Vec<(Vec<u8>, bool)> = Vec::new();
        let mut pos = 0;
        while pos < stream.len() {
            let header = stream[pos];
            let obu_type = (header >> 3) & 0x0F;
            let mut at = pos + 1 + usize::from(header & 0x04 != 0);
            let mut size = 0usize;
            for shift in (0..).step_by(7) {
                let b = stream[at];
                at += 1;
                size |= usize::from(b & 0x7F) << shift;
                if b & 0x80 == 0 {
                    break;
                }
            }
            let obu = &stream[pos..at + size];
            pos = at + size;
            match obu_type {
                2 => units.push((obu.to_vec(), false)),
                _ => {
                    let unit = units.last_mut().expect("a temporal delimiter first");
                    if obu_type == 1 {
                        sequence_header.get_or_insert_with(|| obu.to_vec());
                        unit.1 = true;
                    }
                    unit.0.extend_from_slice(obu);
                }
            }
        }
        let sequence_header = sequence_header.expect("a sequence header");
        // Main profile, 8-bit 4:2:0; the level is the decoder's business.
        let mut record = vec![0x81, 0x00, 0x0C, 0x00];
        record.extend_from_slice(&sequence_header);
        let config = flv::parse_av1_config(Bytes::from(record)).expect("av1C");
        let frames = units
            .into_iter()
            .enumerate()
            .map(|(i, (data, keyframe))| Frame {
                track: TrackKind::Video,
                dts_ms: i as u64 * 40,
                composition_ms: 0,
                keyframe,
                data: Bytes::from(data),
            })
            .collect();
        let tracks = Tracks {
            video: Some(flv::VideoConfig::Av1(config)),
            audio: None,
        };
        Clip {
            tracks,
            frames,
            _dir: dir,
        }
    })
}
