//! The pipeline against the events the RTMP server sends: what a refused
//! publish and a publish without media leave behind (nothing), and which
//! tracks each segment format takes.

use super::*;
use crate::media::fmp4::testclip;
use crate::media::Tracks;
use crate::rtmp::server::{EndReason, IngestEvent, PublishRefused, Publishers};
use std::path::Path;
use tokio::sync::mpsc;

const PEER: ([u8; 4], u16) = ([127, 0, 0, 1], 40_000);

fn streams(dir: &Path, format: Option<SegmentFormat>) -> Streams {
    streams_with(dir, format, LiveConfig::default())
}

fn streams_with(dir: &Path, format: Option<SegmentFormat>, live: LiveConfig) -> Streams {
    let repo = Repo::open(dir).unwrap();
    let config = StreamConfig {
        name: "cam".parse().unwrap(),
        key: "camkey-0123456789".into(),
        format,
        part_target: None,
        retain: None,
        retain_bytes: None,
    };
    Streams::open(repo, live, &[config]).unwrap()
}

fn cam(streams: &Streams) -> StreamInfo {
    streams
        .list()
        .into_iter()
        .find(|s| s.name == "cam")
        .unwrap()
}

/// Sends `events` as one publish and waits until the stream is idle again
/// and the pipeline has had time to end the session.
async fn publish(streams: &Streams, events: Vec<IngestEvent>) {
    let tx = streams.begin("cam", PEER.into()).unwrap().events;
    assert!(cam(streams).live);
    for e in events {
        tx.send(e).await.unwrap();
    }
    drop(tx);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while cam(streams).live {
        assert!(tokio::time::Instant::now() < deadline, "still live");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Ending a session stores playlists on blocking threads.
    tokio::time::sleep(Duration::from_millis(500)).await;
}

fn session_files(dir: &Path) -> usize {
    std::fs::read_dir(dir.join("live/cam"))
        .map(|d| d.flatten().count())
        .unwrap_or(0)
}

/// The first second of the test clip: less than a segment.
fn first_second() -> Vec<IngestEvent> {
    let clip = testclip::clip();
    let mut events = vec![IngestEvent::Tracks(clip.tracks.clone())];
    events.extend(
        clip.frames
            .iter()
            .filter(|f| f.dts_ms < 1000)
            .cloned()
            .map(IngestEvent::Frame),
    );
    events
}

/// Streams whose publishers give way after `takeover_after` of silence.
fn takeover_streams(dir: &Path, takeover_after: Duration) -> Streams {
    let live = LiveConfig {
        takeover_after,
        ..LiveConfig::default()
    };
    streams_with(dir, None, live)
}

/// Sends the clip's tracks, then `frames`.
async fn send_media<'a>(
    tx: &mpsc::Sender<IngestEvent>,
    frames: impl IntoIterator<Item = &'a crate::media::Frame>,
) {
    let tracks = testclip::clip().tracks.clone();
    tx.send(IngestEvent::Tracks(tracks)).await.unwrap();
    for f in frames {
        tx.send(IngestEvent::Frame(f.clone())).await.unwrap();
    }
}

fn assert_busy(streams: &Streams) {
    assert!(matches!(
        streams.begin("cam", PEER.into()),
        Err(PublishRefused::Busy(_))
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_publish_leaves_nothing_behind() {
    let dir = tempfile::tempdir().unwrap();
    let streams = streams(dir.path(), None);
    let mut events = first_second();
    events.push(IngestEvent::End(EndReason::Refused(
        "audio codec MP3 (FLV sound format 2) is not supported; publish AAC".into(),
    )));
    publish(&streams, events).await;
    let info = cam(&streams);
    assert!(info.sessions.is_empty(), "{info:?}");
    assert_eq!(info.site_cid, None);
    assert_eq!(streams.live_playlist("cam"), None);
    assert_eq!(streams.archive_playlist("cam"), None);
    assert_eq!(session_files(dir.path()), 0);

    // The next publisher starts a session of its own, which records only
    // its own media.
    let clip = testclip::clip();
    let mut events = vec![IngestEvent::Tracks(clip.tracks.clone())];
    events.extend(clip.frames.iter().cloned().map(IngestEvent::Frame));
    events.push(IngestEvent::End(EndReason::Unpublished));
    publish(&streams, events).await;
    let info = cam(&streams);
    assert_eq!(info.sessions.len(), 1, "{info:?}");
    assert!(info.sessions[0].ended);
    assert!((info.sessions[0].duration_s - 4.0).abs() < 0.1, "{info:?}");
    assert_eq!(session_files(dir.path()), 1);

    // Reopened, the store lists the same.
    drop(streams);
    let streams = super::tests::streams(dir.path(), None);
    assert_eq!(cam(&streams).sessions, info.sessions);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publish_without_media_is_not_recorded() {
    let dir = tempfile::tempdir().unwrap();
    let streams = streams(dir.path(), None);
    publish(&streams, vec![IngestEvent::End(EndReason::Unpublished)]).await;
    let tracks_only = vec![
        IngestEvent::Tracks(testclip::clip().tracks.clone()),
        IngestEvent::End(EndReason::Error("protocol error".into())),
    ];
    publish(&streams, tracks_only).await;
    assert!(cam(&streams).sessions.is_empty());
    assert_eq!(streams.archive_playlist("cam"), None);
    assert_eq!(session_files(dir.path()), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_publisher_takes_over_from_a_silent_one() {
    let dir = tempfile::tempdir().unwrap();
    let streams = takeover_streams(dir.path(), Duration::from_millis(300));
    let clip = testclip::clip();
    // The first publisher sends the first three seconds, then nothing: its
    // link died without closing.
    let old = streams.begin("cam", PEER.into()).unwrap().events;
    send_media(&old, clip.frames.iter().filter(|f| f.dts_ms < 3000)).await;
    // While it was heard from lately, a second is refused.
    assert_busy(&streams);
    // Silence counts from the last event the pipeline took in.
    while old.capacity() < old.max_capacity() {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tokio::time::sleep(Duration::from_millis(400)).await;
    let new = streams.begin("cam", PEER.into()).unwrap().events;
    assert!(cam(&streams).live);
    // The old publish is ended: its connection sees the channel closed.
    tokio::time::timeout(Duration::from_secs(5), old.closed())
        .await
        .expect("the silent publisher is let go");
    // The new one continues the session after a discontinuity.
    send_media(&new, &clip.frames).await;
    // And is not replaced while it publishes.
    assert_busy(&streams);
    new.send(IngestEvent::End(EndReason::Unpublished))
        .await
        .unwrap();
    drop((old, new));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while cam(&streams).live || !cam(&streams).sessions.iter().all(|s| s.ended) {
        assert!(tokio::time::Instant::now() < deadline, "still live");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let info = cam(&streams);
    assert_eq!(info.sessions.len(), 1, "{info:?}");
    // 3 s of the first (its last second closed as a short segment) and the
    // 4 s clip again.
    assert!((info.sessions[0].duration_s - 7.0).abs() < 0.2, "{info:?}");
    let (archive, ended) = streams.archive_playlist("cam").unwrap();
    assert!(ended);
    assert_eq!(
        archive.matches("#EXT-X-DISCONTINUITY\n").count(),
        1,
        "{archive}"
    );
    assert!(archive.contains("#EXT-X-ENDLIST"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publisher_whose_events_wait_for_a_busy_pipeline_is_not_silent() {
    let dir = tempfile::tempdir().unwrap();
    let streams = takeover_streams(dir.path(), Duration::from_millis(300));
    let clip = testclip::clip();
    let old = streams.begin("cam", PEER.into()).unwrap().events;
    // The pipeline is held up (a slow disk, say) while frames keep coming.
    let pipeline = streams.lock()["cam"].current.clone().unwrap();
    let held = pipeline.lock().await;
    send_media(&old, clip.frames.iter().take(10)).await;
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_busy(&streams);
    drop(held);
    assert!(!old.is_closed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn takeover_can_be_turned_off() {
    let dir = tempfile::tempdir().unwrap();
    let streams = takeover_streams(dir.path(), Duration::ZERO);
    // Silent longer than the other test's takeover_after.
    let _old = streams.begin("cam", PEER.into()).unwrap().events;
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_busy(&streams);
}

#[test]
fn each_format_takes_the_tracks_it_can_carry() {
    let dir = tempfile::tempdir().unwrap();
    let h264 = testclip::clip().tracks.clone();
    let av1 = Tracks {
        video: testclip::av1_clip().tracks.video.clone(),
        audio: h264.audio.clone(),
    };
    let fmp4 = streams(&dir.path().join("fmp4"), Some(SegmentFormat::Fmp4));
    assert_eq!(fmp4.check_tracks("cam", &h264), Ok(()));
    assert_eq!(fmp4.check_tracks("cam", &av1), Ok(()));
    // A stream the config does not name gets the default format.
    assert_eq!(fmp4.check_tracks("other", &av1), Ok(()));

    let ts = streams(&dir.path().join("ts"), Some(SegmentFormat::Ts));
    assert_eq!(ts.check_tracks("cam", &h264), Ok(()));
    let why = ts.check_tracks("cam", &av1).unwrap_err();
    assert_eq!(
        why,
        "AV1 cannot be carried in MPEG-TS segments; use fMP4 segments or publish H.264/HEVC"
    );
}

#[test]
fn held_requests_are_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let streams = streams_with(dir.path(), None, LiveConfig::default());
    let mut held: Vec<_> = (0..MAX_HELD).map(|_| streams.hold().unwrap()).collect();
    assert!(streams.hold().is_none(), "one past the bound");
    held.pop();
    assert!(streams.hold().is_some(), "a slot given back is taken again");
}
