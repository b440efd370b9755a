use super::*;
use crate::media::flv::{parse_audio_specific_config, parse_avc_config, Av1Config};
use crate::media::fmp4::testclip::{self, clip, cut_at_keyframes, cut_seconds, path_str, playlist};
use std::collections::BTreeMap;

/// One transport packet as the test reader sees it.
#[derive(Debug)]
struct Packet<'a> {
    pid: u16,
    unit_start: bool,
    counter: u8,
    random_access: bool,
    pcr: Option<u64>,
    payload: &'a [u8],
}

fn packets(ts: &[u8]) -> Vec<Packet<'_>> {
    assert_eq!(ts.len() % PACKET_SIZE, 0, "whole packets");
    ts.chunks(PACKET_SIZE)
        .map(|p| {
            assert_eq!(p[0], 0x47, "sync byte");
            let pid = u16::from_be_bytes([p[1] & 0x1F, p[2]]);
            let control = (p[3] >> 4) & 0x03;
            let mut pos = 4;
            let (mut random_access, mut pcr) = (false, None);
            if control & 0x02 != 0 {
                let len = usize::from(p[4]);
                if len > 0 {
                    random_access = p[5] & 0x40 != 0;
                    if p[5] & 0x10 != 0 {
                        let b = &p[6..12];
                        pcr = Some(
                            (u64::from(b[0]) << 25)
                                | (u64::from(b[1]) << 17)
                                | (u64::from(b[2]) << 9)
                                | (u64::from(b[3]) << 1)
                                | u64::from(b[4] >> 7),
                        );
                    }
                }
                pos += 1 + len;
            }
            assert!(control & 0x01 != 0, "every packet has payload");
            Packet {
                pid,
                unit_start: p[1] & 0x40 != 0,
                counter: p[3] & 0x0F,
                random_access,
                pcr,
                payload: &p[pos..],
            }
        })
        .collect()
}

/// A reassembled PES packet.
#[derive(Debug)]
struct Pes {
    pid: u16,
    pts: u64,
    dts: Option<u64>,
    random_access: bool,
    pcr: Option<u64>,
    data: Vec<u8>,
}

fn read_timestamp(b: &[u8]) -> u64 {
    (u64::from(b[0] >> 1 & 0x07) << 30)
        | (u64::from(b[1]) << 22)
        | (u64::from(b[2] >> 1) << 15)
        | (u64::from(b[3]) << 7)
        | u64::from(b[4] >> 1)
}

fn pes_packets(ts: &[u8]) -> Vec<Pes> {
    let mut out: Vec<Pes> = Vec::new();
    let mut raw: Vec<(u16, Vec<u8>, bool, Option<u64>)> = Vec::new();
    for p in packets(ts) {
        if p.pid == 0 || p.pid == PMT_PID {
            continue;
        }
        if p.unit_start {
            raw.push((p.pid, p.payload.to_vec(), p.random_access, p.pcr));
        } else {
            let open = raw
                .iter_mut()
                .rev()
                .find(|r| r.0 == p.pid)
                .expect("PES start");
            open.1.extend_from_slice(p.payload);
        }
    }
    for (pid, bytes, random_access, pcr) in raw {
        assert_eq!(&bytes[..3], &[0, 0, 1]);
        let len = usize::from(u16::from_be_bytes([bytes[4], bytes[5]]));
        if len != 0 {
            assert_eq!(len, bytes.len() - 6, "PES length");
        }
        let flags = bytes[7];
        let header_len = usize::from(bytes[8]);
        let pts = read_timestamp(&bytes[9..14]);
        let dts = (flags & 0x40 != 0).then(|| read_timestamp(&bytes[14..19]));
        out.push(Pes {
            pid,
            pts,
            dts,
            random_access,
            pcr,
            data: bytes[9 + header_len..].to_vec(),
        });
    }
    out
}

fn avc() -> VideoConfig {
    VideoConfig::Avc(
        parse_avc_config(Bytes::from_static(&[
            0x01, 0x64, 0x00, 0x0D, 0xFF, 0xE1, 0x00, 0x03, 0x67, 0x64, 0x00, 0x01, 0x00, 0x02,
            0x68, 0xEB,
        ]))
        .unwrap(),
    )
}

fn tracks() -> Tracks {
    Tracks {
        video: Some(avc()),
        audio: Some(parse_audio_specific_config(Bytes::from_static(&[0x12, 0x10])).unwrap()),
    }
}

fn frame(track: TrackKind, dts_ms: u64, composition_ms: i32, keyframe: bool, data: &[u8]) -> Frame {
    Frame {
        track,
        dts_ms,
        composition_ms,
        keyframe,
        data: Bytes::copy_from_slice(data),
    }
}

#[test]
fn crc_matches_the_standard_check_value() {
    assert_eq!(crc32_mpeg2(b"123456789"), 0x0376_E6E7);
}

#[test]
fn segment_opens_with_pat_and_pmt() {
    let mut muxer = Muxer::new(&tracks()).unwrap();
    let seg = muxer
        .segment(&[frame(
            TrackKind::Video,
            0,
            0,
            true,
            &[0, 0, 0, 2, 0x65, 0x88],
        )])
        .unwrap();
    let p = packets(&seg);
    assert_eq!((p[0].pid, p[1].pid), (0, PMT_PID));
    // PAT: program 1 on the PMT PID; the CRC over the section is zero
    // when it includes its own CRC.
    let pat = &p[0].payload[1..];
    assert_eq!(&pat[..3], &[0x00, 0xB0, 0x0D]);
    assert_eq!(u16::from_be_bytes([pat[10], pat[11]]) & 0x1FFF, PMT_PID);
    assert_eq!(crc32_mpeg2(&pat[..16]), 0);
    let pmt = &p[1].payload[1..];
    let section_len = usize::from(u16::from_be_bytes([pmt[1], pmt[2]]) & 0x0FFF);
    assert_eq!(crc32_mpeg2(&pmt[..3 + section_len]), 0);
    assert_eq!(
        u16::from_be_bytes([pmt[8], pmt[9]]) & 0x1FFF,
        VIDEO_PID,
        "PCR PID"
    );
    assert_eq!(&pmt[12..17], &[0x1B, 0xE1, 0x00, 0xF0, 0x00]);
    assert_eq!(&pmt[17..22], &[0x0F, 0xE1, 0x01, 0xF0, 0x00]);
}

#[test]
fn h264_access_units_become_annex_b() {
    let mut muxer = Muxer::new(&tracks()).unwrap();
    let seg = muxer
        .segment(&[
            // An existing AUD is replaced by ours.
            frame(
                TrackKind::Video,
                1000,
                80,
                true,
                &[0, 0, 0, 2, 0x09, 0x10, 0, 0, 0, 2, 0x65, 0x88],
            ),
            frame(
                TrackKind::Video,
                1040,
                -40,
                false,
                &[0, 0, 0, 3, 0x41, 0x9A, 0x01],
            ),
        ])
        .unwrap();
    let pes = pes_packets(&seg);
    assert_eq!(pes.len(), 2);
    assert_eq!(pes[0].pid, VIDEO_PID);
    assert_eq!(
        pes[0].data,
        [
            0, 0, 0, 1, 0x09, 0xF0, // AUD
            0, 0, 0, 1, 0x67, 0x64, 0x00, // SPS
            0, 0, 0, 1, 0x68, 0xEB, // PPS
            0, 0, 0, 1, 0x65, 0x88,
        ]
    );
    assert_eq!(
        pes[1].data,
        [0, 0, 0, 1, 0x09, 0xF0, 0, 0, 0, 1, 0x41, 0x9A, 0x01]
    );
    assert_eq!(pes[0].pts, 1080 * 90 + TIMESTAMP_OFFSET);
    assert_eq!(pes[0].dts, Some(1000 * 90 + TIMESTAMP_OFFSET));
    assert_eq!(pes[0].pcr, Some(1000 * 90));
    assert!(pes[0].random_access);
    assert!(!pes[1].random_access);
    assert_eq!(pes[1].pts, 1000 * 90 + TIMESTAMP_OFFSET);

    let bad = frame(TrackKind::Video, 0, 0, true, &[0, 0, 0, 9, 0x65]);
    assert_eq!(
        muxer.segment(&[bad]),
        Err(TsError::BadNalLength {
            dts_ms: 0,
            len: 9,
            left: 1
        })
    );
}

#[test]
fn aac_frames_get_adts_headers() {
    let mut muxer = Muxer::new(&tracks()).unwrap();
    let frames: Vec<Frame> = (0..6)
        .map(|i| frame(TrackKind::Audio, i * 23, 0, true, &[0x21, 0x10, i as u8]))
        .collect();
    let seg = muxer.segment(&frames).unwrap();
    let pes = pes_packets(&seg);
    assert_eq!(pes.len(), 2, "four frames, then the rest");
    assert_eq!(pes[0].pid, AUDIO_PID);
    assert_eq!(pes[0].dts, None);
    assert_eq!(pes[1].pts, 92 * 90 + TIMESTAMP_OFFSET);
    // AAC LC, 44.1 kHz (index 4), stereo, frame length 10.
    assert_eq!(
        &pes[0].data[..10],
        &[0xFF, 0xF1, 0x50, 0x80, 0x01, 0x5F, 0xFC, 0x21, 0x10, 0x00]
    );
    assert_eq!(pes[0].data.len(), 40);
    assert_eq!(pes[1].data.len(), 20);
    assert_eq!(pes[0].pcr, None, "the video PID has the PCR");
}

#[test]
fn counters_continue_across_segments() {
    let mut muxer = Muxer::new(&tracks()).unwrap();
    let big = vec![0u8; 1000];
    let mut data = (big.len() as u32).to_be_bytes().to_vec();
    data.extend_from_slice(&big);
    let mut all = Vec::new();
    for i in 0..20u64 {
        let seg = muxer
            .segment(&[
                frame(TrackKind::Video, i * 40, 0, i % 5 == 0, &data),
                frame(TrackKind::Audio, i * 40, 0, true, &[1; 300]),
            ])
            .unwrap();
        all.extend_from_slice(&seg);
    }
    let mut last: BTreeMap<u16, u8> = BTreeMap::new();
    for p in packets(&all) {
        if let Some(prev) = last.insert(p.pid, p.counter) {
            assert_eq!(p.counter, (prev + 1) & 0x0F, "PID {:#x}", p.pid);
        }
    }
    assert_eq!(last.len(), 4);
}

#[test]
fn stuffing_fills_every_length() {
    // Payload lengths around the packet boundaries, with and without an
    // adaptation field in the first packet.
    for len in 150..400 {
        for (pcr, random_access) in [(None, false), (Some(90_000), true)] {
            let pes = vec![0xAB; len];
            let mut out = Vec::new();
            let mut counter = 0;
            packetize(&mut out, VIDEO_PID, &mut counter, &pes, pcr, random_access);
            let p = packets(&out);
            let payload: Vec<u8> = p.iter().flat_map(|p| p.payload.iter().copied()).collect();
            assert_eq!(payload, pes, "length {len}");
            assert_eq!(p[0].pcr, pcr);
            assert_eq!(p[0].random_access, random_access);
        }
    }
}

#[test]
fn audio_only_puts_the_pcr_on_audio() {
    let audio_only = Tracks {
        video: None,
        audio: tracks().audio,
    };
    let mut muxer = Muxer::new(&audio_only).unwrap();
    let seg = muxer
        .segment(&[frame(TrackKind::Audio, 500, 0, true, &[1, 2])])
        .unwrap();
    let pmt = &packets(&seg)[1].payload[1..];
    assert_eq!(u16::from_be_bytes([pmt[8], pmt[9]]) & 0x1FFF, AUDIO_PID);
    assert_eq!(pes_packets(&seg)[0].pcr, Some(500 * 90));
    let err = muxer
        .segment(&[frame(TrackKind::Video, 0, 0, true, &[])])
        .unwrap_err();
    assert!(matches!(err, TsError::MissingTrack { .. }));
}

#[test]
fn unsupported_configurations() {
    let none = Tracks {
        video: None,
        audio: None,
    };
    assert!(matches!(Muxer::new(&none), Err(TsError::NoTracks)));
    let av1 = Tracks {
        video: Some(VideoConfig::Av1(Av1Config {
            profile: 0,
            level: 0,
            raw: Bytes::from_static(&[0x81, 0, 0, 0]),
        })),
        audio: None,
    };
    let err = Muxer::new(&av1).unwrap_err();
    assert!(err.to_string().contains("use fMP4"), "{err}");
    // Explicit 32 kHz (index 15) and channel configuration 0.
    for asc in [&[0x17, 0x80, 0x3E, 0x80, 0x10][..], &[0x12, 0x00]] {
        let tracks = Tracks {
            video: None,
            audio: Some(parse_audio_specific_config(Bytes::copy_from_slice(asc)).unwrap()),
        };
        assert!(matches!(
            Muxer::new(&tracks),
            Err(TsError::UnsupportedAudio { .. })
        ));
    }
    let mut muxer = Muxer::new(&tracks()).unwrap();
    assert_eq!(muxer.segment(&[]), Err(TsError::Empty));
    let huge = frame(TrackKind::Audio, 0, 0, true, &[0; 8185]);
    assert!(matches!(
        muxer.segment(&[huge]),
        Err(TsError::AudioFrameTooLarge { len: 8185, .. })
    ));
}

/// Muxes the ffmpeg clip into TS segments cut at keyframes, and has ffprobe
/// and ffmpeg read each segment and the playlist.
#[test]
fn ffmpeg_reads_ts_segments() {
    let clip = clip();
    let dir = tempfile::tempdir().unwrap();
    let mut muxer = Muxer::new(&clip.tracks).unwrap();
    let cuts = cut_at_keyframes(&clip.frames);
    assert!(cuts.len() >= 2);
    let mut entries = Vec::new();
    let mut whole = Vec::new();
    for (i, cut) in cuts.iter().enumerate() {
        let seg = muxer.segment(cut.frames).unwrap();
        let name = format!("seg{i}.ts");
        let path = dir.path().join(&name);
        std::fs::write(&path, &seg).unwrap();
        whole.extend_from_slice(&seg);
        let probe = testclip::ffprobe(&["-show_streams"], &path);
        check_streams(&probe);
        entries.push((name, cut_seconds(cut, 40)));
    }
    let m3u8 = dir.path().join("playlist.m3u8");
    std::fs::write(&m3u8, playlist(None, &entries)).unwrap();
    let errors = testclip::run(
        "ffmpeg",
        &["-v", "error", "-i", path_str(&m3u8), "-f", "null", "-"],
    );
    assert!(errors.is_empty(), "ffmpeg: {errors}");
    let probe = testclip::ffprobe(&["-show_streams", "-show_format"], &m3u8);
    check_streams(&probe);
    let duration: f64 = probe["format"]["duration"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        (duration - 4.0).abs() <= 0.1,
        "playlist duration {duration}"
    );

    // Decoding the whole stream gives every frame, and B-frame timing
    // survives: pts - dts of each packet is the composition offset.
    let whole_path = dir.path().join("whole.ts");
    std::fs::write(&whole_path, &whole).unwrap();
    let frames = testclip::ffprobe(
        &[
            "-select_streams",
            "v",
            "-count_frames",
            "-show_entries",
            "stream=nb_read_frames",
        ],
        &whole_path,
    );
    let video: Vec<&Frame> = clip
        .frames
        .iter()
        .filter(|f| f.track == TrackKind::Video)
        .collect();
    assert_eq!(
        frames["streams"][0]["nb_read_frames"].as_str().unwrap(),
        video.len().to_string()
    );
    let packets = testclip::ffprobe(
        &[
            "-select_streams",
            "v",
            "-show_entries",
            "packet=pts,dts,flags",
        ],
        &whole_path,
    );
    let packets = packets["packets"].as_array().unwrap();
    assert_eq!(packets.len(), video.len());
    for (packet, frame) in packets.iter().zip(&video) {
        let pts = packet["pts"].as_i64().unwrap();
        let dts = packet["dts"].as_i64().unwrap();
        assert_eq!(dts, frame.dts_ms as i64 * 90 + TIMESTAMP_OFFSET as i64);
        assert_eq!(pts - dts, i64::from(frame.composition_ms) * 90);
        assert_eq!(
            packet["flags"].as_str().unwrap().starts_with('K'),
            frame.keyframe
        );
    }
    let audio = testclip::ffprobe(
        &[
            "-select_streams",
            "a",
            "-count_frames",
            "-show_entries",
            "stream=nb_read_frames",
        ],
        &whole_path,
    );
    let audio_frames = clip
        .frames
        .iter()
        .filter(|f| f.track == TrackKind::Audio)
        .count();
    assert_eq!(
        audio["streams"][0]["nb_read_frames"].as_str().unwrap(),
        audio_frames.to_string()
    );
}

fn check_streams(probe: &serde_json::Value) {
    let streams = probe["streams"].as_array().unwrap();
    let by_type: BTreeMap<&str, &serde_json::Value> = streams
        .iter()
        .map(|s| (s["codec_type"].as_str().unwrap(), s))
        .collect();
    let video = by_type["video"];
    assert_eq!(video["codec_name"], "h264");
    assert_eq!(
        (video["width"].as_u64(), video["height"].as_u64()),
        (Some(320), Some(240))
    );
    let audio = by_type["audio"];
    assert_eq!(audio["codec_name"], "aac");
    assert_eq!(audio["sample_rate"], "44100");
}

/// HEVC video alone: stream type 0x24, VPS/SPS/PPS before keyframes.
#[test]
fn ffmpeg_reads_hevc_ts() {
    let clip = testclip::hevc_clip();
    let dir = tempfile::tempdir().unwrap();
    let mut muxer = Muxer::new(&clip.tracks).unwrap();
    let cuts = cut_at_keyframes(&clip.frames);
    let mut entries = Vec::new();
    for (i, cut) in cuts.iter().enumerate() {
        let name = format!("seg{i}.ts");
        let path = dir.path().join(&name);
        std::fs::write(&path, muxer.segment(cut.frames).unwrap()).unwrap();
        // Each segment decodes on its own: it starts with parameter sets.
        let errors = testclip::run(
            "ffmpeg",
            &["-v", "error", "-i", path_str(&path), "-f", "null", "-"],
        );
        assert!(errors.is_empty(), "ffmpeg on {name}: {errors}");
        let probe = testclip::ffprobe(&["-count_frames", "-show_streams"], &path);
        let stream = &probe["streams"][0];
        assert_eq!(stream["codec_name"], "hevc");
        assert_eq!(
            (stream["width"].as_u64(), stream["height"].as_u64()),
            (Some(320), Some(240))
        );
        assert_eq!(stream["nb_read_frames"], "25");
        entries.push((name, cut_seconds(cut, 40)));
    }
    let m3u8 = dir.path().join("playlist.m3u8");
    std::fs::write(&m3u8, playlist(None, &entries)).unwrap();
    let probe = testclip::ffprobe(&["-show_format"], &m3u8);
    let duration: f64 = probe["format"]["duration"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        (duration - 2.0).abs() <= 0.1,
        "playlist duration {duration}"
    );
}
