//! LL-HLS playlist tests: exact renderings of parts, hints and delta
//! playlists, and the blocking-reload positions.

use super::*;
use crate::hls::playlist::{PlaylistConfig, SegmentEntry};
use crate::media::SegmentFormat;

const BASE: u64 = 1_700_000_000_000;

fn session(window: usize) -> Session {
    Session::new(PlaylistConfig {
        format: SegmentFormat::Fmp4,
        target_duration_secs: 2,
        live_window: window,
        max_segments: 1000,
    })
    .unwrap()
}

fn part(msn: u64, i: u32) -> PartEntry {
    PartEntry {
        uri: format!("/ipfs/p{msn}.{i}"),
        duration_ms: 500,
        independent: i == 0,
    }
}

fn hint(msn: u64, i: u32) -> String {
    format!("/live/cam/parts/{msn}.{i}.m4s")
}

/// `n` closed segments of four 500 ms parts, and `open` parts of the next.
fn stream(n: u64, open: u32, window: usize) -> (Session, Parts) {
    let mut s = session(window);
    let mut parts = Parts::new(500);
    for msn in 0..=n {
        let count = if msn == n { open } else { 4 };
        for i in 0..count {
            assert!(parts.push(
                msn,
                i,
                false,
                Some("/ipfs/init".into()),
                BASE + msn * 2000,
                part(msn, i)
            ));
        }
        if msn < n {
            s.push(SegmentEntry {
                uri: format!("/ipfs/s{msn}"),
                duration_ms: 2000,
                discontinuity: false,
                program_date_time_ms: BASE + msn * 2000,
                init_uri: Some("/ipfs/init".into()),
                bytes: 100,
                independent: true,
                gap: false,
            })
            .unwrap();
        }
    }
    (s, parts)
}

#[test]
fn renders_parts_and_a_hint() {
    let (s, parts) = stream(2, 2, 6);
    let text = parts.render(&s, &hint, false);
    assert_eq!(
        text,
        "#EXTM3U\n#EXT-X-VERSION:9\n#EXT-X-TARGETDURATION:2\n#EXT-X-INDEPENDENT-SEGMENTS\n\
#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,CAN-SKIP-UNTIL=12.0,PART-HOLD-BACK=1.500\n\
#EXT-X-PART-INF:PART-TARGET=0.500\n#EXT-X-MEDIA-SEQUENCE:0\n#EXT-X-DISCONTINUITY-SEQUENCE:0\n\
#EXT-X-MAP:URI=\"/ipfs/init\"\n#EXT-X-PROGRAM-DATE-TIME:2023-11-14T22:13:20.000Z\n\
#EXT-X-PART:DURATION=0.500,URI=\"/ipfs/p0.0\",INDEPENDENT=YES\n\
#EXT-X-PART:DURATION=0.500,URI=\"/ipfs/p0.1\"\n#EXT-X-PART:DURATION=0.500,URI=\"/ipfs/p0.2\"\n\
#EXT-X-PART:DURATION=0.500,URI=\"/ipfs/p0.3\"\n#EXTINF:2.000,\n/ipfs/s0\n\
#EXT-X-PART:DURATION=0.500,URI=\"/ipfs/p1.0\",INDEPENDENT=YES\n\
#EXT-X-PART:DURATION=0.500,URI=\"/ipfs/p1.1\"\n#EXT-X-PART:DURATION=0.500,URI=\"/ipfs/p1.2\"\n\
#EXT-X-PART:DURATION=0.500,URI=\"/ipfs/p1.3\"\n#EXTINF:2.000,\n/ipfs/s1\n\
#EXT-X-PART:DURATION=0.500,URI=\"/ipfs/p2.0\",INDEPENDENT=YES\n\
#EXT-X-PART:DURATION=0.500,URI=\"/ipfs/p2.1\"\n\
#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"/live/cam/parts/2.2.m4s\"\n"
    );
    assert_eq!(
        parts.position(&s),
        Position {
            next_msn: 2,
            parts: 2
        }
    );
}

#[test]
fn lists_parts_only_near_the_end() {
    let (s, parts) = stream(8, 0, 8);
    let text = parts.render(&s, &hint, false);
    // Segments 5, 6, 7 are kept; 5 starts 6 s (three target durations)
    // before the end, 4 is no longer kept.
    assert!(!text.contains("/ipfs/p4."));
    for msn in 5..8 {
        assert!(text.contains(&format!("/ipfs/p{msn}.3\"")), "{text}");
    }
    assert!(text.ends_with(
        "#EXTINF:2.000,\n/ipfs/s7\n#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"/live/cam/parts/8.0.m4s\"\n"
    ));
}

#[test]
fn delta_playlists_skip_old_segments() {
    let (s, parts) = stream(10, 1, 10);
    let full = parts.render(&s, &hint, false);
    let delta = parts.render(&s, &hint, true);
    // 20 s listed, CAN-SKIP-UNTIL 12 s: the first four end 12 s or more
    // before the end.
    assert!(
        delta.contains("#EXT-X-SKIP:SKIPPED-SEGMENTS=4\n"),
        "{delta}"
    );
    assert!(!delta.contains("/ipfs/s3\n") && delta.contains("/ipfs/s4\n"));
    assert!(full.contains("/ipfs/s0\n") && !full.contains("EXT-X-SKIP"));
    // The rest is the same, after the first kept segment's MAP and date.
    let tail = |t: &str| t[t.find("/ipfs/s4\n").unwrap()..].to_owned();
    assert_eq!(tail(&full), tail(&delta));
    assert!(delta.contains("#EXT-X-MAP:URI=\"/ipfs/init\"\n#EXT-X-PROGRAM-DATE-TIME:2023-11-14T22:13:28.000Z\n#EXTINF:2.000,\n/ipfs/s4\n"));
}

#[test]
fn blocking_positions() {
    let p = Position {
        next_msn: 5,
        parts: 2,
    };
    assert!(p.reached(4, None) && p.reached(4, Some(9)));
    assert!(p.reached(5, Some(1)) && !p.reached(5, Some(2)));
    assert!(!p.reached(5, None) && !p.reached(6, Some(0)));
}

#[test]
fn parts_out_of_order_drop_the_segment_and_part_zero_restarts() {
    let mut parts = Parts::new(300);
    assert!(parts.push(3, 0, false, None, BASE, part(3, 0)));
    assert!(!parts.push(3, 2, false, None, BASE, part(3, 2)));
    assert_eq!(parts.of(3), None);
    assert!(parts.push(3, 0, false, None, BASE, part(3, 0)));
    assert!(parts.push(3, 1, false, None, BASE, part(3, 1)));
    assert_eq!(parts.of(3).map(<[_]>::len), Some(2));
}

#[test]
fn an_ended_session_has_no_hint() {
    let (mut s, parts) = stream(2, 0, 6);
    s.end();
    let text = parts.render(&s, &hint, false);
    assert!(text.ends_with("/ipfs/s1\n#EXT-X-ENDLIST\n"));
}
