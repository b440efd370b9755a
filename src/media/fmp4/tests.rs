use super::testclip::{self, clip, cut_at_keyframes, cut_seconds, path_str, playlist};
use super::*;
use crate::media::flv::{parse_audio_specific_config, parse_avc_config};
use std::collections::BTreeMap;

/// A box as the walker found it: type, payload and children.
#[derive(Debug)]
struct Mp4Box<'a> {
    kind: [u8; 4],
    payload: &'a [u8],
    children: Vec<Mp4Box<'a>>,
}

/// Bytes to skip at the start of a container's payload before its child
/// boxes (full-box headers, entry counts, sample entry fields).
fn child_offset(kind: &[u8; 4]) -> Option<usize> {
    match kind {
        b"moov" | b"trak" | b"mdia" | b"minf" | b"dinf" | b"stbl" | b"mvex" | b"moof" | b"traf" => {
            Some(0)
        }
        b"stsd" | b"dref" => Some(8),
        b"avc1" | b"hvc1" | b"av01" => Some(78),
        b"mp4a" => Some(28),
        _ => None,
    }
}

/// Parses a sequence of boxes, checking that their sizes tile `buf`.
fn walk(buf: &[u8]) -> Vec<Mp4Box<'_>> {
    let mut boxes = Vec::new();
    let mut pos = 0;
    while pos < buf.len() {
        let size = u32::from_be_bytes(buf[pos..pos + 4].try_into().unwrap()) as usize;
        assert!(
            size >= 8 && pos + size <= buf.len(),
            "bad box size {size} at {pos}"
        );
        let kind: [u8; 4] = buf[pos + 4..pos + 8].try_into().unwrap();
        let payload = &buf[pos + 8..pos + size];
        let children = child_offset(&kind).map_or_else(Vec::new, |skip| walk(&payload[skip..]));
        boxes.push(Mp4Box {
            kind,
            payload,
            children,
        });
        pos += size;
    }
    boxes
}

/// Every box along a `/`-separated path of types, e.g. `moov/trak/tkhd`.
fn find<'a, 'b>(boxes: &'b [Mp4Box<'a>], path: &str) -> Vec<&'b Mp4Box<'a>> {
    let (head, rest) = path.split_once('/').unwrap_or((path, ""));
    let hits = boxes.iter().filter(|b| &b.kind[..] == head.as_bytes());
    if rest.is_empty() {
        hits.collect()
    } else {
        hits.flat_map(|b| find(&b.children, rest)).collect()
    }
}

fn u32_at(buf: &[u8], at: usize) -> u32 {
    u32::from_be_bytes(buf[at..at + 4].try_into().unwrap())
}

fn tracks() -> Tracks {
    let avc = parse_avc_config(Bytes::from_static(&[
        0x01, 0x64, 0x00, 0x0D, 0xFF, 0xE1, 0x00, 0x19, 0x67, 0x64, 0x00, 0x0D, 0xAC, 0xD9, 0x41,
        0x41, 0xFB, 0x01, 0x10, 0x00, 0x00, 0x03, 0x00, 0x10, 0x00, 0x00, 0x03, 0x03, 0x20, 0xF1,
        0x42, 0x99, 0x60, 0x01, 0x00, 0x04, 0x68, 0xEB, 0xE3, 0xCB,
    ]))
    .unwrap();
    Tracks {
        video: Some(VideoConfig::Avc(avc)),
        audio: Some(parse_audio_specific_config(Bytes::from_static(&[0x12, 0x10])).unwrap()),
    }
}

fn frame(
    track: TrackKind,
    dts_ms: u64,
    composition_ms: i32,
    keyframe: bool,
    data: &'static [u8],
) -> Frame {
    Frame {
        track,
        dts_ms,
        composition_ms,
        keyframe,
        data: Bytes::from_static(data),
    }
}

#[test]
fn init_segment_structure() {
    let tracks = tracks();
    let init = init_segment(&tracks).unwrap();
    let boxes = walk(&init);
    let kinds: Vec<_> = boxes.iter().map(|b| b.kind).collect();
    assert_eq!(kinds, [*b"ftyp", *b"moov"]);
    assert_eq!(&boxes[0].payload[..4], b"iso6");
    assert!(boxes[0].payload.chunks(4).any(|b| b == b"cmfc"));

    let traks = find(&boxes, "moov/trak");
    assert_eq!(traks.len(), 2);
    let tkhd = find(&boxes, "moov/trak/tkhd");
    assert_eq!(u32_at(tkhd[0].payload, 12), VIDEO_TRACK_ID);
    assert_eq!(u32_at(tkhd[0].payload, 76), 320 << 16);
    assert_eq!(u32_at(tkhd[0].payload, 80), 240 << 16);
    assert_eq!(u32_at(tkhd[1].payload, 12), AUDIO_TRACK_ID);

    let mdhd = find(&boxes, "moov/trak/mdia/mdhd");
    assert_eq!(u32_at(mdhd[0].payload, 12), 90_000);
    assert_eq!(u32_at(mdhd[1].payload, 12), 44_100);
    let hdlr = find(&boxes, "moov/trak/mdia/hdlr");
    assert_eq!(&hdlr[0].payload[8..12], b"vide");
    assert_eq!(&hdlr[1].payload[8..12], b"soun");
    assert_eq!(find(&boxes, "moov/trak/mdia/minf/vmhd").len(), 1);
    assert_eq!(find(&boxes, "moov/trak/mdia/minf/smhd").len(), 1);
    assert_eq!(find(&boxes, "moov/trak/mdia/minf/dinf/dref/url ").len(), 2);

    let avc1 = find(&boxes, "moov/trak/mdia/minf/stbl/stsd/avc1");
    assert_eq!(avc1.len(), 1);
    assert_eq!(&avc1[0].payload[24..28], &[0x01, 0x40, 0x00, 0xF0]);
    let avcc = find(&boxes, "moov/trak/mdia/minf/stbl/stsd/avc1/avcC");
    let Some(VideoConfig::Avc(avc)) = &tracks.video else {
        unreachable!()
    };
    assert_eq!(avcc[0].payload, &avc.raw[..]);
    let esds = find(&boxes, "moov/trak/mdia/minf/stbl/stsd/mp4a/esds");
    let esds = esds[0].payload;
    // Full-box header, then the ES_Descriptor; the ASC ends the DSI.
    assert_eq!(esds[4], 0x03);
    assert_eq!(usize::from(esds[5]), esds.len() - 6);
    let dsi = esds.windows(4).position(|w| w == [0x05, 0x02, 0x12, 0x10]);
    assert!(dsi.is_some(), "AudioSpecificConfig in esds: {esds:02x?}");
    for table in ["stts", "stsc", "stco", "stsz"] {
        let path = format!("moov/trak/mdia/minf/stbl/{table}");
        assert_eq!(find(&boxes, &path).len(), 2, "{table}");
    }
    let trex = find(&boxes, "moov/mvex/trex");
    assert_eq!(
        trex.iter()
            .map(|t| u32_at(t.payload, 4))
            .collect::<Vec<_>>(),
        [1, 2]
    );
}

#[test]
fn audio_only_and_no_tracks() {
    let audio_only = Tracks {
        video: None,
        audio: tracks().audio,
    };
    let boxes_bytes = init_segment(&audio_only).unwrap();
    let boxes = walk(&boxes_bytes);
    assert_eq!(find(&boxes, "moov/trak").len(), 1);
    assert_eq!(find(&boxes, "moov/mvex/trex").len(), 1);
    let none = Tracks {
        video: None,
        audio: None,
    };
    assert_eq!(init_segment(&none), Err(MuxError::NoTracks));
    assert!(Muxer::new(&none).is_err());
}

/// The `trun` of a `traf`: (base decode time, data offset, samples of
/// (duration, size, flags, composition offset)).
type Trun = (u64, u32, Vec<(u32, u32, Option<u32>, Option<i32>)>);

fn read_traf(traf: &Mp4Box<'_>) -> Trun {
    let tfdt = find(&traf.children, "tfdt")[0].payload;
    assert_eq!(tfdt[0], 1);
    let base = u64::from_be_bytes(tfdt[4..12].try_into().unwrap());
    let trun = find(&traf.children, "trun")[0].payload;
    assert_eq!(trun[0], 1, "trun version 1");
    let flags = u32_at(trun, 0) & 0xFF_FFFF;
    let count = u32_at(trun, 4) as usize;
    let offset = u32_at(trun, 8);
    let mut pos = 12;
    let mut samples = Vec::new();
    for _ in 0..count {
        let duration = u32_at(trun, pos);
        let size = u32_at(trun, pos + 4);
        pos += 8;
        let sample_flags = (flags & 0x400 != 0).then(|| {
            pos += 4;
            u32_at(trun, pos - 4)
        });
        let cts = (flags & 0x800 != 0).then(|| {
            pos += 4;
            u32_at(trun, pos - 4) as i32
        });
        samples.push((duration, size, sample_flags, cts));
    }
    assert_eq!(pos, trun.len());
    (base, offset, samples)
}

#[test]
fn media_segment_structure() {
    let frames = [
        frame(TrackKind::Video, 1000, 80, true, b"KEY"),
        frame(TrackKind::Audio, 1000, 0, true, b"a0"),
        frame(TrackKind::Video, 1040, -40, false, b"P1"),
        frame(TrackKind::Audio, 1023, 0, true, b"a1"),
        frame(TrackKind::Video, 1080, 0, false, b"B2"),
    ];
    let next = NextDts {
        video_ms: Some(1120),
        audio_ms: None,
    };
    let seg = media_segment(7, &frames, &tracks(), next).unwrap();
    let boxes = walk(&seg);
    let kinds: Vec<_> = boxes.iter().map(|b| b.kind).collect();
    assert_eq!(kinds, [*b"moof", *b"mdat"]);
    assert_eq!(u32_at(find(&boxes, "moof/mfhd")[0].payload, 4), 7);
    let trafs = find(&boxes, "moof/traf");
    assert_eq!(trafs.len(), 2);
    // tfhd: default-base-is-moof, the track id.
    let tfhd = find(&trafs[0].children, "tfhd")[0].payload;
    assert_eq!(u32_at(tfhd, 0), 0x02_0000);
    assert_eq!(u32_at(tfhd, 4), VIDEO_TRACK_ID);

    let (base, offset, samples) = read_traf(trafs[0]);
    assert_eq!(base, 90_000);
    assert_eq!(
        samples,
        [
            (3600, 3, Some(SYNC_SAMPLE), Some(7200)),
            (3600, 2, Some(NON_SYNC_SAMPLE), Some(-3600)),
            (3600, 2, Some(NON_SYNC_SAMPLE), Some(0)),
        ]
    );
    let moof_len = boxes[0].payload.len() + 8;
    assert_eq!(&seg[offset as usize..offset as usize + 7], b"KEYP1B2");
    assert_eq!(offset as usize, moof_len + 8);

    let (base, offset, samples) = read_traf(trafs[1]);
    assert_eq!(base, 44_100, "1000 ms at 44.1 kHz");
    assert_eq!(samples, [(1024, 2, None, None), (1024, 2, None, None)]);
    assert_eq!(&seg[offset as usize..offset as usize + 4], b"a0a1");
    assert_eq!(offset as usize + 4, seg.len());
}

#[test]
fn last_duration_without_next() {
    let frames = [
        frame(TrackKind::Video, 0, 0, true, b"a"),
        frame(TrackKind::Video, 33, 0, false, b"b"),
    ];
    let seg = media_segment(1, &frames, &tracks(), NextDts::default()).unwrap();
    let (_, _, samples) = read_traf(find(&walk(&seg), "moof/traf")[0]);
    assert_eq!(samples[1].0, 33 * 90, "repeats the previous duration");

    // A lone frame takes the duration the muxer carried from before.
    let mut muxer = Muxer::new(&tracks()).unwrap();
    muxer.segment(&frames, NextDts::default()).unwrap();
    let seg = muxer
        .segment(
            &[frame(TrackKind::Video, 66, 0, true, b"c")],
            NextDts::default(),
        )
        .unwrap();
    let boxes = walk(&seg);
    assert_eq!(u32_at(find(&boxes, "moof/mfhd")[0].payload, 4), 2);
    let (base, _, samples) = read_traf(find(&boxes, "moof/traf")[0]);
    assert_eq!((base, samples[0].0), (66 * 90, 33 * 90));
}

/// AAC frames at 44.1 kHz last 23.22 ms; RTMP rounds them to whole
/// milliseconds. The sample clock must not follow the rounding, within a
/// segment or across segments.
#[test]
fn audio_clock_is_sample_exact() {
    let dts: Vec<u64> = (0..200u64).map(|i| i * 1024 * 1000 / 44_100).collect();
    let frames: Vec<Frame> = dts
        .iter()
        .map(|&ms| frame(TrackKind::Audio, ms, 0, true, b"x"))
        .collect();
    let mut muxer = Muxer::new(&tracks()).unwrap();
    let mut expected_base = 0;
    for chunk in frames.chunks(37) {
        let seg = muxer.segment(chunk, NextDts::default()).unwrap();
        let (base, _, samples) = read_traf(find(&walk(&seg), "moof/traf")[0]);
        assert_eq!(base, expected_base);
        assert!(samples.iter().all(|s| s.0 == 1024), "{samples:?}");
        expected_base += 1024 * chunk.len() as u64;
    }
    // The stateless function re-anchors each segment to milliseconds.
    let seg = media_segment(1, &frames[37..], &tracks(), NextDts::default()).unwrap();
    let (base, _, _) = read_traf(find(&walk(&seg), "moof/traf")[0]);
    assert_eq!(base, ms_to_samples(dts[37], 44_100));
    assert_ne!(base, 37 * 1024);

    // A gap of several frames re-anchors to the millisecond clock.
    let gap = [
        frame(TrackKind::Audio, 10_000, 0, true, b"x"),
        frame(TrackKind::Audio, 10_023, 0, true, b"x"),
        frame(TrackKind::Audio, 10_500, 0, true, b"x"),
    ];
    let seg = muxer.segment(&gap, NextDts::default()).unwrap();
    let (base, _, samples) = read_traf(find(&walk(&seg), "moof/traf")[0]);
    assert_eq!(base, 441_000);
    assert_eq!(samples[0].0, 1024);
    assert_eq!(
        samples[1].0,
        ms_to_samples(10_500, 44_100) as u32 - 441_000 - 1024
    );
}

/// Publishers bunch audio up (GStreamer's live pipelines stamp several
/// frames a millisecond apart): no sample may become empty or tiny, and the
/// next segment must not start before this one ended.
#[test]
fn bunched_audio_keeps_sane_durations() {
    let bunched: Vec<Frame> = [1000, 1001, 1002, 1003, 1050, 1073]
        .into_iter()
        .map(|ms| frame(TrackKind::Audio, ms, 0, true, b"x"))
        .collect();
    let mut muxer = Muxer::new(&tracks()).unwrap();
    let seg = muxer.segment(&bunched, NextDts::default()).unwrap();
    let (base, _, samples) = read_traf(find(&walk(&seg), "moof/traf")[0]);
    assert_eq!(base, 44_100);
    assert!(samples.iter().all(|s| s.0 >= 512), "{samples:?}");
    let end = base + samples.iter().map(|s| u64::from(s.0)).sum::<u64>();
    // The next segment's first frame is stamped before where this one ended.
    let next = [frame(TrackKind::Audio, 1096, 0, true, b"y")];
    let seg = muxer.segment(&next, NextDts::default()).unwrap();
    let (next_base, _, _) = read_traf(find(&walk(&seg), "moof/traf")[0]);
    assert!(ms_to_samples(1096, 44_100) < end);
    assert_eq!(next_base, end);
    // A clock more than a second back is a new timeline: it starts there.
    let restart = [frame(TrackKind::Audio, 10, 0, true, b"z")];
    let seg = muxer.segment(&restart, NextDts::default()).unwrap();
    let (restart_base, _, _) = read_traf(find(&walk(&seg), "moof/traf")[0]);
    assert_eq!(restart_base, ms_to_samples(10, 44_100));
}

#[test]
fn segment_errors() {
    let t = tracks();
    assert_eq!(
        media_segment(1, &[], &t, NextDts::default()),
        Err(MuxError::Empty)
    );
    let back = [
        frame(TrackKind::Video, 100, 0, true, b"a"),
        frame(TrackKind::Video, 90, 0, false, b"b"),
    ];
    assert_eq!(
        media_segment(1, &back, &t, NextDts::default()),
        Err(MuxError::TimeWentBack {
            track: TrackKind::Video,
            previous_ms: 100,
            dts_ms: 90
        })
    );
    let audio_only = Tracks {
        video: None,
        audio: t.audio.clone(),
    };
    let err = media_segment(1, &back[..1], &audio_only, NextDts::default()).unwrap_err();
    assert!(matches!(
        err,
        MuxError::MissingTrack {
            track: TrackKind::Video,
            ..
        }
    ));
    assert!(err.to_string().contains("sequence header"));
    let next_before = NextDts {
        video_ms: Some(50),
        audio_ms: None,
    };
    assert!(matches!(
        media_segment(1, &back[..1], &t, next_before),
        Err(MuxError::TimeWentBack { .. })
    ));
}

/// Muxes the ffmpeg clip into an init segment and media segments cut at
/// keyframes, and has ffprobe and ffmpeg read them back.
#[test]
fn ffmpeg_reads_fmp4_segments() {
    let clip = clip();
    let tracks = &clip.tracks;
    let dir = tempfile::tempdir().unwrap();
    let mut muxer = Muxer::new(tracks).unwrap();
    let init = muxer.init_segment().unwrap();
    std::fs::write(dir.path().join("init.mp4"), &init).unwrap();
    let cuts = cut_at_keyframes(&clip.frames);
    assert!(cuts.len() >= 2, "the clip has a keyframe every 2 s");
    let mut entries = Vec::new();
    let mut whole = init.to_vec();
    for (i, cut) in cuts.iter().enumerate() {
        let next = NextDts {
            video_ms: cut.next_video_ms,
            audio_ms: None,
        };
        let seg = muxer.segment(cut.frames, next).unwrap();
        let name = format!("seg{i}.m4s");
        std::fs::write(dir.path().join(&name), &seg).unwrap();
        whole.extend_from_slice(&seg);

        // Each segment alone behind the init segment is a valid file.
        let single = dir.path().join(format!("single{i}.mp4"));
        std::fs::write(&single, [&init[..], &seg[..]].concat()).unwrap();
        let probe = testclip::ffprobe(&["-show_streams"], &single);
        assert_eq!(probe["streams"].as_array().unwrap().len(), 2);
        entries.push((name, cut_seconds(cut, 40)));
    }
    let m3u8 = dir.path().join("playlist.m3u8");
    std::fs::write(&m3u8, playlist(Some("init.mp4"), &entries)).unwrap();
    let whole_path = dir.path().join("whole.mp4");
    std::fs::write(&whole_path, &whole).unwrap();

    let probe = testclip::ffprobe(&["-show_streams", "-show_format"], &whole_path);
    check_streams(&probe);
    let duration: f64 = probe["format"]["duration"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((duration - 4.0).abs() <= 0.1, "duration {duration}");

    // The playlist plays through without a complaint.
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

    // B-frames: every packet's pts - dts is the composition offset it had.
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
    let video: Vec<&Frame> = clip
        .frames
        .iter()
        .filter(|f| f.track == TrackKind::Video)
        .collect();
    assert_eq!(packets.len(), video.len());
    assert!(
        video.iter().any(|f| f.composition_ms != 40),
        "the clip has B-frames"
    );
    let mut pts_sorted = Vec::new();
    for (packet, frame) in packets.iter().zip(&video) {
        let pts = packet["pts"].as_i64().unwrap();
        let dts = packet["dts"].as_i64().unwrap();
        assert_eq!(dts, frame.dts_ms as i64 * 90);
        assert_eq!(pts - dts, i64::from(frame.composition_ms) * 90);
        assert_eq!(
            packet["flags"].as_str().unwrap().starts_with('K'),
            frame.keyframe
        );
        pts_sorted.push(pts);
    }
    pts_sorted.sort_unstable();
    assert!(
        pts_sorted.windows(2).all(|w| w[1] - w[0] == 3600),
        "40 ms apart in presentation order"
    );

    // Audio decode times are 1024 samples apart across segment boundaries.
    let audio = testclip::ffprobe(
        &[
            "-select_streams",
            "a",
            "-show_entries",
            "packet=dts,duration",
        ],
        &whole_path,
    );
    let audio = audio["packets"].as_array().unwrap();
    let audio_frames = clip
        .frames
        .iter()
        .filter(|f| f.track == TrackKind::Audio)
        .count();
    assert_eq!(audio.len(), audio_frames);
    let dts: Vec<i64> = audio.iter().map(|p| p["dts"].as_i64().unwrap()).collect();
    assert!(dts.windows(2).all(|w| w[1] - w[0] == 1024), "{dts:?}");
}

/// h264 320x240 and AAC 44.1 kHz stereo or mono, as the clip has.
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

/// HEVC and AV1 video alone: `hvc1` + `hvcC`, `av01` + `av1C`, and
/// video-only init segments.
#[test]
fn ffmpeg_reads_hevc_and_av1_fmp4() {
    for (clip, codec, tag) in [
        (testclip::hevc_clip(), "hevc", "hvc1"),
        (testclip::av1_clip(), "av1", "av01"),
    ] {
        assert_eq!(clip.frames.len(), 50, "{codec}");
        let dir = tempfile::tempdir().unwrap();
        let mut muxer = Muxer::new(&clip.tracks).unwrap();
        let mut whole = muxer.init_segment().unwrap().to_vec();
        let cuts = cut_at_keyframes(&clip.frames);
        assert_eq!(cuts.len(), 2, "{codec}");
        for cut in &cuts {
            let next = NextDts {
                video_ms: cut.next_video_ms,
                audio_ms: None,
            };
            whole.extend_from_slice(&muxer.segment(cut.frames, next).unwrap());
        }
        // What RTMP carries and MP4 wants differently: hvcC parameter set
        // arrays marked complete; AV1 samples without temporal delimiters,
        // so the first opens with the sequence header.
        let boxes = walk(&whole);
        let entry = &find(&boxes, "moov/trak/mdia/minf/stbl/stsd")[0].children[0];
        let record = entry.children[0].payload;
        if codec == "hevc" {
            assert_eq!(&entry.children[0].kind, b"hvcC");
            assert_eq!(
                (record[23], record[23 + 3 + 2 + usize::from(record[27])]),
                (0x80 | 32, 0x80 | 33),
                "VPS and SPS arrays complete"
            );
        }
        let mdat = find(&boxes, "mdat")[0].payload;
        if codec == "av1" {
            assert_eq!(
                clip.frames[0].data[0] >> 3 & 0x0F,
                2,
                "the clip has delimiters"
            );
            assert_eq!(
                mdat[0] >> 3 & 0x0F,
                1,
                "the sample opens with the sequence header"
            );
        }
        let path = dir.path().join("video.mp4");
        std::fs::write(&path, &whole).unwrap();
        let errors = testclip::run(
            "ffmpeg",
            &["-v", "error", "-i", path_str(&path), "-f", "null", "-"],
        );
        assert!(errors.is_empty(), "ffmpeg on {codec}: {errors}");
        let probe = testclip::ffprobe(&["-count_frames", "-show_streams", "-show_format"], &path);
        let stream = &probe["streams"][0];
        assert_eq!(stream["codec_name"], codec);
        assert_eq!(stream["codec_tag_string"], tag);
        assert_eq!(
            (stream["width"].as_u64(), stream["height"].as_u64()),
            (Some(320), Some(240)),
            "{codec}"
        );
        assert_eq!(stream["nb_read_frames"], "50", "{codec}");
        let duration: f64 = probe["format"]["duration"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!((duration - 2.0).abs() <= 0.1, "{codec} duration {duration}");
    }
}

#[test]
fn av1_samples_leave_out_delimiters_and_padding() {
    // Temporal delimiter, sequence header (2 bytes), frame (3 bytes): the
    // sample is the rest, without a copy.
    let data = Bytes::from_static(&[0x12, 0x00, 0x0A, 0x02, 0xAA, 0xBB, 0x32, 0x03, 1, 2, 3]);
    let sample = av1_sample(&data);
    assert_eq!(&sample[..], &data[2..]);
    assert_eq!(sample.as_ptr(), data[2..].as_ptr());
    // Padding (type 15) and a redundant frame header (type 7) in between;
    // a delimiter with an extension byte; a last OBU without a size field.
    let data = Bytes::from_static(&[
        0x16, 0x08, 0x00, // delimiter, extension byte, size 0
        0x0A, 0x01, 0xAA, // sequence header
        0x7A, 0x02, 0x00, 0x00, // padding
        0x3A, 0x01, 0xBB, // redundant frame header
        0x30, 0xCC, 0xDD, // frame, no size field: to the end
    ]);
    assert_eq!(
        &av1_sample(&data)[..],
        &[0x0A, 0x01, 0xAA, 0x30, 0xCC, 0xDD]
    );
    // Nothing to leave out: the same bytes.
    let data = Bytes::from_static(&[0x32, 0x01, 0xCC]);
    assert_eq!(av1_sample(&data).as_ptr(), data.as_ptr());
    // What does not parse is left alone: a size past the end, an
    // unterminated size.
    for bad in [
        &[0x12, 0x00, 0x32, 0x05, 0xCC][..],
        &[0x12, 0x00, 0x32, 0x80],
    ] {
        let data = Bytes::from_static(bad);
        assert_eq!(av1_sample(&data), data);
    }
}

#[test]
fn hvc1_records_mark_parameter_sets_complete() {
    let mut raw = vec![1, 0x01, 0x60, 0, 0, 0, 0x90, 0, 0, 0, 0, 0, 93];
    raw.extend_from_slice(&[0xF0, 0x00, 0xFC, 0xFD, 0xF8, 0xF8, 0, 0, 0x0F]);
    raw.push(4);
    for (kind, unit) in [
        (32u8, &[0x40, 0x01][..]),
        (33, &[0x42, 0x01, 0x01]),
        (34, &[0x44, 0x01]),
        (39, &[0x4E, 0x01, 0x05]),
    ] {
        raw.push(kind);
        raw.extend_from_slice(&1u16.to_be_bytes());
        raw.extend_from_slice(&(unit.len() as u16).to_be_bytes());
        raw.extend_from_slice(unit);
    }
    let record = hvc1_record(&raw);
    let kinds: Vec<u8> = [23, 30, 38, 45].iter().map(|&i| record[i]).collect();
    assert_eq!(kinds, [0xA0, 0xA1, 0xA2, 39], "SEI keeps its flag");
    let mut expected = raw.clone();
    for i in [23, 30, 38] {
        expected[i] |= 0x80;
    }
    assert_eq!(&record[..], &expected[..]);
    // A truncated record is copied as far as it goes.
    assert_eq!(&hvc1_record(&raw[..25])[..], &expected[..25]);
}

proptest::proptest! {
    #[test]
    fn av1_sample_never_panics(bytes in proptest::collection::vec(proptest::arbitrary::any::<u8>(), 0..64)) {
        let data = Bytes::from(bytes);
        proptest::prop_assert!(av1_sample(&data).len() <= data.len());
    }
}
