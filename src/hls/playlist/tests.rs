//! Playlist tests: byte-exact renderings, window and sequence arithmetic,
//! `m3u8-rs` parsing the output back, persistence, and ffmpeg playing
//! playlists rendered for segments it made itself.

use std::path::Path;
use std::process::Command;

use proptest::prelude::*;

use super::*;

/// 2023-11-14T22:13:20.000Z.
const BASE: u64 = 1_700_000_000_000;

fn entry(i: usize, duration_ms: u64) -> SegmentEntry {
    SegmentEntry {
        uri: format!("/ipfs/s{i}"),
        duration_ms,
        discontinuity: false,
        program_date_time_ms: BASE + i as u64 * 2000 + 7,
        init_uri: Some("/ipfs/init0".into()),
        bytes: 1000 + i as u64,
        independent: true,
        gap: false,
    }
}

fn fmp4(target: u64, window: usize) -> Session {
    Session::new(PlaylistConfig {
        format: SegmentFormat::Fmp4,
        target_duration_secs: target,
        live_window: window,
        max_segments: 1000,
    })
    .unwrap()
}

/// Six segments over three runs (two discontinuities, three init
/// segments).
fn three_runs() -> Session {
    let mut s = fmp4(2, 3);
    let durations = [2000, 2000, 2002, 2000, 1500, 2000];
    for (i, d) in durations.into_iter().enumerate() {
        let mut e = entry(i, d);
        let run = match i {
            0 => 0,
            1..=3 => 1,
            _ => 2,
        };
        e.init_uri = Some(format!("/ipfs/init{run}"));
        e.discontinuity = i == 1 || i == 4;
        if i >= 4 {
            // The publisher came back a minute later.
            e.program_date_time_ms = BASE + 60_000 + (i as u64 - 4) * 1500;
        }
        assert_eq!(s.push(e).unwrap(), i as u64);
    }
    s
}

#[test]
fn live_playlist_bytes() {
    let s = three_runs();
    // A window of three would last 5.5 s, less than three target durations
    // (6 s), so it keeps one more segment.
    let expected = "\
#EXTM3U
#EXT-X-VERSION:7
#EXT-X-TARGETDURATION:2
#EXT-X-INDEPENDENT-SEGMENTS
#EXT-X-MEDIA-SEQUENCE:2
#EXT-X-DISCONTINUITY-SEQUENCE:1
#EXT-X-MAP:URI=\"/ipfs/init1\"
#EXT-X-PROGRAM-DATE-TIME:2023-11-14T22:13:24.007Z
#EXTINF:2.002,
/ipfs/s2
#EXTINF:2.000,
/ipfs/s3
#EXT-X-DISCONTINUITY
#EXT-X-MAP:URI=\"/ipfs/init2\"
#EXT-X-PROGRAM-DATE-TIME:2023-11-14T22:14:20.000Z
#EXTINF:1.500,
/ipfs/s4
#EXTINF:2.000,
/ipfs/s5
";
    assert_eq!(s.live(), expected);
}

#[test]
fn archive_playlist_bytes() {
    let mut s = three_runs();
    let expected_head = "\
#EXTM3U
#EXT-X-VERSION:7
#EXT-X-TARGETDURATION:2
#EXT-X-INDEPENDENT-SEGMENTS
#EXT-X-PLAYLIST-TYPE:EVENT
#EXT-X-MEDIA-SEQUENCE:0
#EXT-X-MAP:URI=\"/ipfs/init0\"
#EXT-X-PROGRAM-DATE-TIME:2023-11-14T22:13:20.007Z
#EXTINF:2.000,
/ipfs/s0
#EXT-X-DISCONTINUITY
#EXT-X-MAP:URI=\"/ipfs/init1\"
#EXT-X-PROGRAM-DATE-TIME:2023-11-14T22:13:22.007Z
#EXTINF:2.000,
/ipfs/s1
#EXTINF:2.002,
/ipfs/s2
";
    let archive = s.archive();
    assert!(archive.starts_with(expected_head), "{archive}");
    assert!(archive.ends_with("#EXTINF:2.000,\n/ipfs/s5\n"));
    s.end();
    assert!(s.archive().ends_with("/ipfs/s5\n#EXT-X-ENDLIST\n"));
    assert!(s.live().ends_with("/ipfs/s5\n#EXT-X-ENDLIST\n"));
    assert_eq!(s.push(entry(6, 2000)), Err(PlaylistError::Ended));
}

#[test]
fn ts_playlist_bytes() {
    let mut s = Session::new(PlaylistConfig {
        format: SegmentFormat::Ts,
        target_duration_secs: 6,
        live_window: 6,
        max_segments: 10,
    })
    .unwrap();
    for i in 0..2 {
        let mut e = entry(i, 2040 + i as u64);
        e.init_uri = None;
        e.independent = i == 0;
        s.push(e).unwrap();
    }
    s.end();
    assert_eq!(
        s.live(),
        "\
#EXTM3U
#EXT-X-VERSION:3
#EXT-X-TARGETDURATION:6
#EXT-X-MEDIA-SEQUENCE:0
#EXT-X-DISCONTINUITY-SEQUENCE:0
#EXT-X-PROGRAM-DATE-TIME:2023-11-14T22:13:20.007Z
#EXTINF:2.040,
/ipfs/s0
#EXTINF:2.041,
/ipfs/s1
#EXT-X-ENDLIST
"
    );
}

#[test]
fn window_slides_with_sequence_numbers() {
    let mut s = fmp4(2, 3);
    let mut flags = Vec::new();
    for i in 0..20 {
        let mut e = entry(i, 2000);
        e.discontinuity = i % 4 == 1;
        flags.push(e.discontinuity);
        s.push(e).unwrap();
        // Three 2 s segments are exactly three target durations.
        let start = (i + 1).saturating_sub(3);
        assert_eq!(s.media_sequence(), start as u64);
        let slid_out = flags[..start].iter().filter(|&&d| d).count() as u64;
        assert_eq!(s.discontinuity_sequence(), slid_out);
    }
    // With a target duration of 6 s the window must hold 18 s.
    let mut s = fmp4(6, 3);
    for i in 0..20 {
        s.push(entry(i, 2000)).unwrap();
    }
    assert_eq!(s.media_sequence(), 11);
}

#[test]
fn target_duration_grows_past_the_floor_and_never_shrinks() {
    let mut s = fmp4(2, 2);
    s.push(entry(0, 2499)).unwrap();
    assert_eq!(s.target_duration_secs(), 2);
    s.push(entry(1, 7500)).unwrap();
    assert_eq!(s.target_duration_secs(), 8);
    for i in 2..30 {
        s.push(entry(i, 1000)).unwrap();
    }
    // The long segment has left the window, not the session.
    assert!(!s.live().contains("/ipfs/s1\n"));
    assert!(s.live().contains("#EXT-X-TARGETDURATION:8\n"));
}

#[test]
fn bad_entries_are_refused() {
    let mut s = fmp4(2, 3);
    let mut e = entry(0, 2000);
    e.init_uri = None;
    assert!(matches!(s.push(e), Err(PlaylistError::MissingInit { .. })));
    for uri in ["", "#EXTINF:1,", "/ipfs/a\nb", "/ipfs/\"x"] {
        let mut e = entry(0, 2000);
        e.uri = uri.into();
        assert!(
            matches!(s.push(e), Err(PlaylistError::BadUri { .. })),
            "{uri:?}"
        );
    }
    let mut e = entry(0, 2000);
    e.init_uri = Some("a\"b".into());
    assert!(matches!(s.push(e), Err(PlaylistError::BadUri { .. })));
    let mut e = entry(0, 2000);
    e.program_date_time_ms = u64::MAX;
    assert!(matches!(
        s.push(e),
        Err(PlaylistError::DateOutOfRange { .. })
    ));
    let mut ts = Session::new(PlaylistConfig {
        format: SegmentFormat::Ts,
        max_segments: 1,
        ..PlaylistConfig::default()
    })
    .unwrap();
    assert!(matches!(
        ts.push(entry(0, 2000)),
        Err(PlaylistError::UnexpectedInit { .. })
    ));
    let mut e = entry(0, 2000);
    e.init_uri = None;
    ts.push(e.clone()).unwrap();
    assert_eq!(ts.push(e), Err(PlaylistError::Full { max: 1 }));
    assert!(Session::new(PlaylistConfig {
        live_window: 0,
        ..PlaylistConfig::default()
    })
    .is_err());
}

#[test]
fn session_json_round_trip() {
    let mut s = three_runs();
    let json = serde_json::to_string(&s).unwrap();
    let back: Session = serde_json::from_str(&json).unwrap();
    assert_eq!(back, s);
    assert_eq!(back.live(), s.live());
    s.end();
    let back: Session = serde_json::from_str(&serde_json::to_string(&s).unwrap()).unwrap();
    assert_eq!(back.archive(), s.archive());
    assert!(back.is_ended());

    // Restoring checks the data like pushing does.
    let mut value: serde_json::Value = serde_json::from_str(&json).unwrap();
    value["segments"][0]["init_uri"] = serde_json::Value::Null;
    let err = serde_json::from_value::<Session>(value).unwrap_err();
    assert!(err.to_string().contains("no init segment"), "{err}");
    let mut value: serde_json::Value = serde_json::from_str(&json).unwrap();
    value["live_start"] = 6.into();
    assert!(serde_json::from_value::<Session>(value).is_err());
}

fn parse(text: &str) -> m3u8_rs::MediaPlaylist {
    m3u8_rs::parse_media_playlist_res(text.as_bytes()).expect("m3u8-rs parses our playlist")
}

#[test]
fn m3u8_rs_reads_what_we_render() {
    let mut s = three_runs();
    s.end();
    let p = parse(&s.archive());
    assert_eq!(p.version, Some(7));
    assert_eq!(p.target_duration, 2);
    assert_eq!(p.playlist_type, Some(m3u8_rs::MediaPlaylistType::Event));
    assert!(p.end_list && p.independent_segments);
    assert_eq!(p.segments.len(), 6);
    for (parsed, ours) in p.segments.iter().zip(s.segments()) {
        assert_eq!(parsed.uri, ours.uri);
        assert_eq!(parsed.discontinuity, ours.discontinuity);
        assert!((f64::from(parsed.duration) * 1000.0 - ours.duration_ms as f64).abs() < 0.5);
    }
    let maps: Vec<_> = p
        .segments
        .iter()
        .map(|seg| seg.map.as_ref().map(|m| m.uri.as_str()))
        .collect();
    assert_eq!(
        maps,
        [
            Some("/ipfs/init0"),
            Some("/ipfs/init1"),
            None,
            None,
            Some("/ipfs/init2"),
            None
        ]
    );
    let pdt = p.segments[4].program_date_time.unwrap();
    assert_eq!(pdt.timestamp_millis() as u64, BASE + 60_000);
}

proptest! {
    /// After every segment the live playlist parses, states a target
    /// duration that covers every rounded EXTINF and never changes
    /// downwards, slides forward only, and numbers segments and
    /// discontinuities consistently.
    #[test]
    fn live_playlist_invariants(
        segs in prop::collection::vec((1u64..9000, any::<bool>()), 1..60),
        target in 1u64..7,
        window in 1usize..8,
    ) {
        let mut s = fmp4(target, window);
        let mut last_target = 0;
        let mut last_seq = 0;
        let mut last_disc = 0;
        for (i, &(ms, disc)) in segs.iter().enumerate() {
            let mut e = entry(i, ms);
            e.discontinuity = disc;
            s.push(e).unwrap();
            let p = parse(&s.live());
            prop_assert!(p.target_duration >= last_target);
            prop_assert!(p.media_sequence >= last_seq);
            prop_assert!(p.discontinuity_sequence >= last_disc);
            for seg in &segs[..=i] {
                prop_assert!((seg.0 + 500) / 1000 <= p.target_duration);
            }
            // The window is the newest segments.
            prop_assert_eq!(p.media_sequence as usize + p.segments.len(), i + 1);
            prop_assert!(p.segments.len() >= window.min(i + 1));
            if p.media_sequence > last_seq {
                // A segment only leaves while the rest lasts three target
                // durations.
                let window_ms: u64 = segs[p.media_sequence as usize..=i].iter().map(|s| s.0).sum();
                prop_assert!(window_ms >= 3000 * p.target_duration);
            }
            // Discontinuity numbers: sequence plus tags shown counts them all.
            let shown = p.segments.iter().filter(|s| s.discontinuity).count() as u64;
            let all = segs[..=i].iter().filter(|s| s.1).count() as u64;
            prop_assert_eq!(p.discontinuity_sequence + shown, all);
            // EXT-X-MAP and PROGRAM-DATE-TIME open the window.
            prop_assert!(p.segments[0].map.is_some());
            prop_assert!(p.segments[0].program_date_time.is_some());
            last_target = p.target_duration;
            last_seq = p.media_sequence;
            last_disc = p.discontinuity_sequence;
        }
    }
}

/// Runs a command; panics with its stderr when it fails. A missing tool is
/// a failure, not a skip (`scripts/test` installs ffmpeg).
fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| {
        panic!("running {cmd:?} (is ffmpeg installed? scripts/test installs it): {e}")
    });
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{cmd:?} failed: {stderr}");
    stderr + &String::from_utf8_lossy(&out.stdout)
}

/// Segments ffmpeg wrote: file names and durations (ms), and the init
/// segment's file name (fMP4).
type Run = (Vec<(String, u64)>, Option<String>);

/// Has ffmpeg write `seconds` of H.264/AAC as HLS segments into `dir` with
/// file names starting with `prefix`; returns its segments' file names and
/// durations (ms) and the init segment's name (fMP4).
fn ffmpeg_segments(
    dir: &Path,
    prefix: &str,
    format: SegmentFormat,
    seconds: u32,
    source: &str,
    offset_secs: u32,
) -> Run {
    let (kind, ext) = match format {
        SegmentFormat::Fmp4 => ("fmp4", "m4s"),
        SegmentFormat::Ts => ("mpegts", "ts"),
    };
    let init = format!("{prefix}init.mp4");
    let playlist = dir.join(format!("{prefix}ffmpeg.m3u8"));
    run(Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-nostdin"])
        .args([
            "-f",
            "lavfi",
            "-i",
            &format!("{source}=size=320x240:rate=25"),
        ])
        .args(["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000"])
        .args(["-t", &seconds.to_string()])
        .args(["-output_ts_offset", &offset_secs.to_string()])
        .args(["-c:v", "libx264", "-preset", "ultrafast", "-g", "25"])
        .args(["-c:a", "aac", "-f", "hls", "-hls_time", "2"])
        .args(["-hls_playlist_type", "vod", "-hls_segment_type", kind])
        .args(["-hls_fmp4_init_filename", &init])
        .arg("-hls_segment_filename")
        .arg(dir.join(format!("{prefix}%d.{ext}")))
        .arg(&playlist));
    let text = std::fs::read_to_string(&playlist).unwrap();
    let parsed = parse(&text);
    let segments: Vec<_> = parsed
        .segments
        .iter()
        .map(|s| {
            (
                s.uri.clone(),
                (f64::from(s.duration) * 1000.0).round() as u64,
            )
        })
        .collect();
    assert!(segments.len() >= 2, "{text}");
    let init = (format == SegmentFormat::Fmp4).then_some(init);
    (segments, init)
}

/// Decodes a playlist with ffmpeg (no error output allowed); returns the
/// duration ffprobe reports (the sum of EXTINF) in seconds and the number
/// of video frames it decoded, to see that the media behind it is there.
fn ffmpeg_play(playlist: &Path) -> (f64, u64) {
    let errors = run(Command::new("ffmpeg")
        .args(["-hide_banner", "-v", "error", "-nostdin"])
        .args(["-allowed_extensions", "ALL", "-i"])
        .arg(playlist)
        .args(["-f", "null", "-"]));
    assert!(errors.trim().is_empty(), "ffmpeg decoding errors: {errors}");
    let first_number = |out: String| {
        // HLS input lists a stream under each program too: take the first.
        let word = out.split_whitespace().next().unwrap_or_default().to_owned();
        word.parse::<f64>()
            .unwrap_or_else(|_| panic!("ffprobe said {out:?}"))
    };
    let duration = first_number(run(Command::new("ffprobe")
        .args(["-v", "error", "-allowed_extensions", "ALL"])
        .args(["-show_entries", "format=duration", "-of", "csv=p=0"])
        .arg(playlist)));
    let frames = first_number(run(Command::new("ffprobe")
        .args(["-v", "error", "-allowed_extensions", "ALL"])
        .args(["-select_streams", "v:0", "-count_frames"])
        .args(["-show_entries", "stream=nb_read_frames", "-of", "csv=p=0"])
        .arg(playlist)));
    (duration, frames as u64)
}

/// Asserts a playlist plays for `secs` seconds of 25 fps video.
fn assert_plays(playlist: &Path, secs: f64) {
    let (duration, frames) = ffmpeg_play(playlist);
    assert!((duration - secs).abs() < 0.1, "{duration} s, want {secs}");
    assert!(
        (frames as f64 / 25.0 - secs).abs() < 0.1,
        "decoded {frames} frames, want {secs} s"
    );
}

fn playlist_for(format: SegmentFormat, runs: &[Run]) -> Session {
    let mut s = Session::new(PlaylistConfig {
        format,
        // ffmpeg cuts at exactly 2 s (a keyframe every 25 frames).
        target_duration_secs: 2,
        live_window: 3,
        max_segments: 100,
    })
    .unwrap();
    let mut pdt = BASE;
    for (r, (segments, init)) in runs.iter().enumerate() {
        for (i, (uri, ms)) in segments.iter().enumerate() {
            s.push(SegmentEntry {
                uri: uri.clone(),
                duration_ms: *ms,
                discontinuity: r > 0 && i == 0,
                program_date_time_ms: pdt,
                init_uri: init.clone(),
                bytes: 0,
                independent: true,
                gap: false,
            })
            .unwrap();
            pdt += ms;
        }
    }
    s.end();
    s
}

fn total_secs(runs: &[Run]) -> f64 {
    runs.iter()
        .flat_map(|(segs, _)| segs.iter().map(|s| s.1))
        .sum::<u64>() as f64
        / 1000.0
}

/// ffmpeg plays our archive playlist over fMP4 segments it wrote, for the
/// whole duration.
#[test]
fn ffmpeg_plays_fmp4_archive() {
    let dir = tempfile::tempdir().unwrap();
    let runs = [ffmpeg_segments(
        dir.path(),
        "a",
        SegmentFormat::Fmp4,
        7,
        "testsrc2",
        0,
    )];
    let s = playlist_for(SegmentFormat::Fmp4, &runs);
    let path = dir.path().join("ours.m3u8");
    std::fs::write(&path, s.archive()).unwrap();
    assert!((total_secs(&runs) - 7.0).abs() < 0.1);
    assert_plays(&path, 7.0);
}

/// Two fMP4 runs with their own init segments (a reconnect), joined by a
/// discontinuity and a second EXT-X-MAP: decodes without error, with the
/// duration of both. The same source and settings in both, and no frame
/// count: ffmpeg's HLS demuxer keeps the first init segment's decoder
/// configuration (a resolution change fails there; browser players
/// re-initialise on EXT-X-MAP), and its MP4 reader skips a segment when
/// the timeline restarts, even with a single init segment and no
/// discontinuity tag. The MPEG-TS test below counts frames across a
/// discontinuity.
#[test]
fn ffmpeg_plays_fmp4_across_a_discontinuity() {
    let dir = tempfile::tempdir().unwrap();
    let runs = [
        ffmpeg_segments(dir.path(), "a", SegmentFormat::Fmp4, 5, "testsrc2", 0),
        ffmpeg_segments(dir.path(), "b", SegmentFormat::Fmp4, 5, "testsrc2", 0),
    ];
    let s = playlist_for(SegmentFormat::Fmp4, &runs);
    let text = s.archive();
    assert_eq!(text.matches("#EXT-X-MAP").count(), 2);
    assert_eq!(text.matches("#EXT-X-DISCONTINUITY\n").count(), 1);
    let path = dir.path().join("ours.m3u8");
    std::fs::write(&path, text).unwrap();
    let (duration, _) = ffmpeg_play(&path);
    assert!((duration - total_secs(&runs)).abs() < 0.1, "{duration}");
}

/// MPEG-TS segments from two runs joined by a discontinuity: the archive
/// plays in full, and the ended live playlist plays its window. The second
/// run's timestamps go on after the first's because ffmpeg's HLS demuxer
/// ignores discontinuities and its muxers refuse time going back.
#[test]
fn ffmpeg_plays_ts_archive_and_live_window() {
    let dir = tempfile::tempdir().unwrap();
    let runs = [
        ffmpeg_segments(dir.path(), "t", SegmentFormat::Ts, 9, "testsrc2", 0),
        ffmpeg_segments(dir.path(), "u", SegmentFormat::Ts, 5, "testsrc", 10),
    ];
    let s = playlist_for(SegmentFormat::Ts, &runs);
    let path = dir.path().join("archive.m3u8");
    std::fs::write(&path, s.archive()).unwrap();
    assert_plays(&path, 14.0);

    let path = dir.path().join("live.m3u8");
    let live = s.live();
    assert!(s.media_sequence() > 0, "{live}");
    std::fs::write(&path, live).unwrap();
    let window_ms: u64 = s.segments()[s.media_sequence() as usize..]
        .iter()
        .map(|e| e.duration_ms)
        .sum();
    assert_plays(&path, window_ms as f64 / 1000.0);
}

#[test]
fn a_gap_keeps_its_time_and_is_marked() {
    let mut s = fmp4(2, 3);
    s.push(entry(0, 2000)).unwrap();
    s.push(SegmentEntry {
        gap: true,
        bytes: 0,
        ..entry(1, 2000)
    })
    .unwrap();
    s.push(entry(2, 2000)).unwrap();
    let archive = s.archive();
    assert!(
        archive.contains("#EXT-X-GAP\n#EXTINF:2.000,\n/ipfs/s1\n"),
        "{archive}"
    );
    assert_eq!(archive.matches("#EXT-X-GAP").count(), 1, "{archive}");
    assert!(!archive.contains("DISCONTINUITY\n"), "{archive}");
    assert!(s.live().contains("#EXT-X-GAP\n"));
    let parsed = m3u8_rs::parse_media_playlist_res(archive.as_bytes()).unwrap();
    assert_eq!(parsed.segments.len(), 3);
    let back: Session = serde_json::from_str(&serde_json::to_string(&s).unwrap()).unwrap();
    assert_eq!(back, s);
}

#[test]
fn a_copy_joined_late_numbers_on_and_forgets_into_its_window() {
    let config = PlaylistConfig {
        format: SegmentFormat::Fmp4,
        target_duration_secs: 2,
        live_window: 3,
        max_segments: 1000,
    };
    let mut s = Session::starting_at(config, 40).unwrap();
    assert_eq!(s.next_msn(), 40);
    for i in 0..5 {
        s.push(entry(i, 2000)).unwrap();
    }
    assert_eq!(s.next_msn(), 45);
    assert!(
        s.live().contains("#EXT-X-MEDIA-SEQUENCE:42\n"),
        "{}",
        s.live()
    );
    // Into the window: the first listed goes, numbering stays.
    let gone = s.forget_front(3);
    assert_eq!(gone.len(), 3);
    assert_eq!(gone[2].uri, "/ipfs/s2");
    assert_eq!(s.next_msn(), 45);
    assert_eq!(s.media_sequence(), 43);
    assert_eq!(parse(&s.live()).segments.len(), 2);
    assert_eq!(s.forget_front(9).len(), 2);
    assert_eq!((s.next_msn(), s.segments().len()), (45, 0));
}

#[test]
fn trimming_the_head_keeps_the_live_window_and_counts_what_went() {
    let mut s = fmp4(2, 3);
    for i in 0..10 {
        let mut e = entry(i, 2000);
        e.discontinuity = i == 2;
        s.push(e).unwrap();
    }
    let live_before = s.live();
    let seq_before = s.media_sequence();
    let gone = s.trim_front(100);
    // Only what is before the live window goes.
    assert_eq!(gone.len() as u64, seq_before);
    assert_eq!(s.media_sequence(), seq_before);
    assert_eq!(s.live(), live_before);
    let archive = s.archive();
    assert!(!archive.contains("PLAYLIST-TYPE"), "{archive}");
    assert!(
        archive.contains(&format!("#EXT-X-MEDIA-SEQUENCE:{seq_before}\n")),
        "{archive}"
    );
    assert!(
        archive.contains("#EXT-X-DISCONTINUITY-SEQUENCE:1\n"),
        "{archive}"
    );
    assert_eq!(parse(&archive).segments.len(), 10 - gone.len());
    let back: Session = serde_json::from_str(&serde_json::to_string(&s).unwrap()).unwrap();
    assert_eq!(back, s);
}

#[test]
fn a_live_playlist_reads_back_as_its_window() {
    let mut s = fmp4(2, 4);
    let mut pdt = BASE;
    for i in 0..7 {
        let mut e = entry(i, 2000 - (i as u64 % 2) * 40);
        e.program_date_time_ms = pdt;
        e.bytes = 0;
        e.discontinuity = i == 5;
        e.gap = i == 3;
        if i >= 5 {
            e.init_uri = Some("/ipfs/init1".into());
        }
        pdt += e.duration_ms;
        s.push(e).unwrap();
    }
    let (first, read) = read_live(&s.live()).unwrap();
    assert_eq!(first, s.media_sequence());
    assert!(first > 0);
    assert_eq!(read, s.segments()[first as usize..]);
    // Not such a playlist: no media sequence, a bad number, no date.
    assert!(read_live("#EXTM3U\n#EXTINF:2.000,\n/ipfs/a\n").is_none());
    assert!(read_live("#EXTM3U\n#EXT-X-MEDIA-SEQUENCE:x\n").is_none());
    assert!(read_live("#EXTM3U\n#EXT-X-MEDIA-SEQUENCE:1\n#EXTINF:2.000,\n/ipfs/a\n").is_none());
}
