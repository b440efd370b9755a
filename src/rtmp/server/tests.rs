//! The ingest server against real ffmpeg publishers and scripted raw TCP
//! clients, plus the pure parts (allowlist, keys, demux) with literals.
//! ffmpeg must be on PATH: without it these tests fail, as every interop
//! test does.

use std::process::Stdio;
use std::sync::Mutex;

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::*;
use crate::rtmp::chunk::{ChunkEncoder, RawMessage};
use crate::rtmp::handshake::PACKET_LEN;
use crate::rtmp::message::{Command, Message};

const KEY: &str = "s3cret-key-7f2a";
const NAME: &str = "cam";
/// Long enough for a loaded CI machine, short enough to fail fast.
const WAIT: Duration = Duration::from_secs(30);

/// Collects what the server hands the stream manager.
struct Fake {
    busy: bool,
    /// What `check_tracks` says of every track configuration, if not Ok.
    refuse_tracks: Option<String>,
    begins: Mutex<Vec<String>>,
    publishes: mpsc::Sender<mpsc::Receiver<IngestEvent>>,
    /// The storage state every publish watches.
    storage: watch::Sender<Option<String>>,
}

impl Publishers for Fake {
    fn begin(&self, stream: &str, _peer: SocketAddr) -> Result<PublishHandle, PublishRefused> {
        self.begins.lock().unwrap().push(stream.to_owned());
        if self.busy {
            return Err(PublishRefused::Busy(stream.to_owned()));
        }
        let (tx, rx) = mpsc::channel(64);
        self.publishes
            .try_send(rx)
            .map_err(|e| PublishRefused::Other(e.to_string()))?;
        Ok(PublishHandle {
            events: tx,
            storage: self.storage.subscribe(),
        })
    }

    fn check_tracks(&self, stream: &str, _tracks: &Tracks) -> Result<(), String> {
        assert_eq!(stream, NAME);
        self.refuse_tracks.clone().map_or(Ok(()), Err)
    }
}

struct Server {
    addr: SocketAddr,
    fake: Arc<Fake>,
    publishes: mpsc::Receiver<mpsc::Receiver<IngestEvent>>,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Server {
    async fn start(config: RtmpConfig, busy: bool) -> Self {
        Self::start_with(config, busy, None).await
    }

    async fn start_with(config: RtmpConfig, busy: bool, refuse_tracks: Option<String>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, publishes) = mpsc::channel(8);
        let fake = Arc::new(Fake {
            busy,
            refuse_tracks,
            begins: Mutex::default(),
            publishes: tx,
            storage: watch::Sender::default(),
        });
        let keys = Arc::new(StreamKeys::new(&[StreamConfig {
            name: NAME.parse().unwrap(),
            key: KEY.into(),
            format: None,
            part_target: None,
            retain: None,
            retain_bytes: None,
        }]));
        let stop = CancellationToken::new();
        let shutdown = stop.clone().cancelled_owned();
        let task = tokio::spawn(serve(listener, config, keys, fake.clone(), shutdown));
        Self {
            addr,
            fake,
            publishes,
            stop,
            task,
        }
    }

    fn begins(&self) -> Vec<String> {
        self.fake.begins.lock().unwrap().clone()
    }

    /// Events of the next accepted publish, up to and including its End.
    async fn next_publish(&mut self) -> Vec<IngestEvent> {
        let mut rx = tokio::time::timeout(WAIT, self.publishes.recv())
            .await
            .expect("a publish in time")
            .expect("server running");
        let mut events = Vec::new();
        loop {
            let event = tokio::time::timeout(WAIT, rx.recv())
                .await
                .expect("ingest events in time")
                .expect("an End before the channel closes");
            let end = matches!(event, IngestEvent::End(_));
            events.push(event);
            if end {
                break;
            }
        }
        assert!(rx.recv().await.is_none(), "nothing after End");
        events
    }

    async fn stop(self) {
        self.stop.cancel();
        self.task.await.unwrap().unwrap();
    }
}

fn ffmpeg(addr: SocketAddr, key: &str, video: &[&str]) -> tokio::process::Child {
    let url = format!("rtmp://{addr}/live/{key}");
    tokio::process::Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-nostdin"])
        .args(["-f", "lavfi", "-i", "testsrc2=size=320x240:rate=25"])
        .args(["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=44100"])
        .args(["-t", "3"])
        .args(video)
        .args(["-c:a", "aac", "-f", "flv", &url])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("ffmpeg on PATH")
}

const H264: &[&str] = &["-c:v", "libx264", "-preset", "ultrafast", "-g", "50"];

async fn ffmpeg_status(mut child: tokio::process::Child) -> std::process::ExitStatus {
    tokio::time::timeout(WAIT, child.wait())
        .await
        .expect("ffmpeg exits in time")
        .unwrap()
}

/// Where this thread's log lines go while a test captures them.
type Sink = Arc<Mutex<Vec<u8>>>;

thread_local! {
    static SINK: std::cell::RefCell<Option<Sink>> = const { std::cell::RefCell::new(None) };
}

/// Appends to the calling thread's sink, if it has one.
struct ThreadSink;

impl std::io::Write for ThreadSink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        SINK.with(|s| {
            if let Some(sink) = &*s.borrow() {
                sink.lock().unwrap().extend_from_slice(buf);
            }
        });
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Stops the thread's capture when dropped.
struct CaptureGuard;

impl Drop for CaptureGuard {
    fn drop(&mut self) {
        SINK.with(|s| s.borrow_mut().take());
    }
}

/// Logs written on this thread (where a current-thread test runtime runs
/// every task) while the returned guard lives.
///
/// One process-wide subscriber takes every line and hands it to the
/// writing thread's sink. Per-test subscribers (`set_default`) do not work
/// here: tracing caches per call site whether any subscriber wants it, and
/// with tests registering and dropping subscribers on several threads that
/// cache could say "nobody" to a test whose subscriber was live.
fn capture_logs() -> (Sink, CaptureGuard) {
    static GLOBAL: std::sync::Once = std::sync::Once::new();
    GLOBAL.call_once(|| {
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::INFO)
            .with_ansi(false)
            .with_writer(|| ThreadSink)
            .finish();
        tracing::subscriber::set_global_default(subscriber)
            .expect("no other global subscriber in the unit tests");
    });
    let logs = Sink::default();
    SINK.with(|s| *s.borrow_mut() = Some(logs.clone()));
    (logs, CaptureGuard)
}

fn text(logs: &Mutex<Vec<u8>>) -> String {
    String::from_utf8_lossy(&logs.lock().unwrap()).into_owned()
}

fn config() -> RtmpConfig {
    RtmpConfig {
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        ..RtmpConfig::default()
    }
}

/// Reads until the server closes the connection; panics if it does not.
async fn expect_closed(sock: &mut TcpStream, within: Duration) {
    let mut buf = [0u8; 4096];
    tokio::time::timeout(within, async {
        loop {
            match sock.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
    })
    .await
    .expect("server closes the connection");
}

/// A scripted publisher: handshake, connect, createStream, publish.
async fn raw_publish(addr: SocketAddr, key: &str) -> TcpStream {
    let mut sock = TcpStream::connect(addr).await.unwrap();
    let mut hello = vec![3u8];
    hello.extend_from_slice(&[0x22; PACKET_LEN]);
    sock.write_all(&hello).await.unwrap();
    let mut s0s1s2 = vec![0u8; 1 + 2 * PACKET_LEN];
    sock.read_exact(&mut s0s1s2).await.unwrap();
    // C2 echoes S1.
    sock.write_all(&s0s1s2[1..1 + PACKET_LEN]).await.unwrap();

    let mut encoder = ChunkEncoder::new();
    let mut out = BytesMut::new();
    let mut command = |stream_id: u32, name: &str, txid: f64, object, args| {
        let (type_id, payload) = Message::Command(Command::new(name, txid, object, args)).encode();
        let raw = RawMessage {
            csid: if stream_id == 0 { 3 } else { 8 },
            timestamp: 0,
            type_id,
            stream_id,
            payload,
        };
        encoder.encode(&raw, &mut out).unwrap();
    };
    let connect = Amf0Value::object([
        ("app", Amf0Value::string("live")),
        ("type", Amf0Value::string("nonprivate")),
    ]);
    command(0, "connect", 1.0, connect, vec![]);
    command(0, "createStream", 2.0, Amf0Value::Null, vec![]);
    command(
        1,
        "publish",
        3.0,
        Amf0Value::Null,
        vec![Amf0Value::string(key), Amf0Value::string("live")],
    );
    sock.write_all(&out).await.unwrap();
    sock
}

/// (1) H.264 + AAC from ffmpeg: Tracks first, then frames with keyframes,
/// then an End.
#[tokio::test]
async fn ffmpeg_h264_aac() {
    let mut server = Server::start(config(), false).await;
    let child = ffmpeg(server.addr, KEY, H264);
    let events = server.next_publish().await;
    assert!(ffmpeg_status(child).await.success(), "ffmpeg failed");
    assert_eq!(server.begins(), [NAME]);

    let IngestEvent::Tracks(tracks) = &events[0] else {
        panic!("first event is not Tracks: {:?}", events[0]);
    };
    assert!(matches!(tracks.video, Some(VideoConfig::Avc(_))));
    let audio = tracks.audio.as_ref().expect("an audio config");
    assert_eq!(audio.sample_rate, 44100);
    assert_eq!(
        events
            .iter()
            .filter(|e| matches!(e, IngestEvent::Tracks(_)))
            .count(),
        1,
        "tracks announced once"
    );

    let frames: Vec<&Frame> = events
        .iter()
        .filter_map(|e| match e {
            IngestEvent::Frame(f) => Some(f),
            _ => None,
        })
        .collect();
    let video: Vec<_> = frames
        .iter()
        .filter(|f| f.track == TrackKind::Video)
        .collect();
    let audio: Vec<_> = frames
        .iter()
        .filter(|f| f.track == TrackKind::Audio)
        .collect();
    assert_eq!(video.len(), 75, "3 s at 25 fps");
    assert!(audio.len() > 100, "3 s of AAC at 44.1 kHz: {}", audio.len());
    assert!(video[0].keyframe, "video starts at a keyframe");
    // -g 50: keyframes at frames 0 and 50.
    assert_eq!(video.iter().filter(|f| f.keyframe).count(), 2);
    assert!(audio.iter().all(|f| f.keyframe));
    assert!(video.windows(2).all(|w| w[0].dts_ms <= w[1].dts_ms));

    let end = events.last().unwrap();
    assert!(
        matches!(
            end,
            IngestEvent::End(EndReason::Unpublished | EndReason::Disconnected)
        ),
        "{end:?}"
    );
    server.stop().await;
}

/// (2) A wrong key: ffmpeg fails, the manager never hears of it, and the
/// key is in no log line.
#[tokio::test]
async fn wrong_key_is_refused_and_not_logged() {
    let (logs, _guard) = capture_logs();
    let server = Server::start(config(), false).await;
    let wrong = "wr0ng-key-91c3";
    let status = ffmpeg_status(ffmpeg(server.addr, wrong, H264)).await;
    assert!(!status.success());
    assert!(server.begins().is_empty());
    server.stop().await;
    let logs = text(&logs);
    assert!(logs.contains("unknown stream key"), "{logs}");
    assert!(!logs.contains(wrong), "the key was logged: {logs}");
}

/// A good key is not logged either, only the public name.
#[tokio::test]
async fn accepted_key_is_not_logged() {
    let (logs, _guard) = capture_logs();
    let mut server = Server::start(config(), false).await;
    let child = ffmpeg(server.addr, KEY, H264);
    server.next_publish().await;
    ffmpeg_status(child).await;
    server.stop().await;
    let logs = text(&logs);
    assert!(logs.contains("publish started"), "{logs}");
    assert!(logs.contains(NAME), "{logs}");
    assert!(!logs.contains(KEY), "the key was logged: {logs}");
}

/// (3) The manager refuses (the stream is busy): ffmpeg fails.
#[tokio::test]
async fn busy_stream_is_refused() {
    let server = Server::start(config(), true).await;
    let status = ffmpeg_status(ffmpeg(server.addr, KEY, H264)).await;
    assert!(!status.success());
    assert_eq!(server.begins(), [NAME]);
    server.stop().await;
}

/// (4) A peer outside `rtmp.allow` is closed at accept.
#[tokio::test]
async fn allowlist_refuses_other_networks() {
    let server = Server::start(
        RtmpConfig {
            allow: vec!["10.0.0.0/8".into(), "fd00::/8".into()],
            ..config()
        },
        false,
    )
    .await;
    let mut sock = TcpStream::connect(server.addr).await.unwrap();
    expect_closed(&mut sock, Duration::from_secs(5)).await;
    let status = ffmpeg_status(ffmpeg(server.addr, KEY, H264)).await;
    assert!(!status.success());
    assert!(server.begins().is_empty());
    server.stop().await;
}

#[tokio::test]
async fn invalid_allow_entry_fails_serve() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let fake = Arc::new(Fake {
        busy: false,
        refuse_tracks: None,
        begins: Mutex::default(),
        publishes: mpsc::channel(1).0,
        storage: watch::Sender::default(),
    });
    let err = serve(
        listener,
        RtmpConfig {
            allow: vec!["10.0.0.0/33".into()],
            ..config()
        },
        Arc::new(StreamKeys::new(&[])),
        fake,
        std::future::pending(),
    )
    .await
    .unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput);
    assert!(err.to_string().contains("10.0.0.0/33"), "{err}");
}

/// (5) A publisher that goes silent after `publish` ends with IdleTimeout
/// and is closed.
#[tokio::test]
async fn idle_publisher_times_out() {
    let mut server = Server::start(
        RtmpConfig {
            idle_timeout: Duration::from_millis(300),
            ..config()
        },
        false,
    )
    .await;
    let mut sock = raw_publish(server.addr, KEY).await;
    let events = server.next_publish().await;
    assert_eq!(events, [IngestEvent::End(EndReason::IdleTimeout)]);
    expect_closed(&mut sock, Duration::from_secs(5)).await;
    server.stop().await;
}

/// A silent publisher whose publish the manager ends (another publisher
/// took over) is closed at once, long before its idle timeout.
#[tokio::test]
async fn a_publish_the_manager_ends_is_closed() {
    let mut server = Server::start(config(), false).await;
    let mut sock = raw_publish(server.addr, KEY).await;
    let rx = tokio::time::timeout(WAIT, server.publishes.recv())
        .await
        .expect("a publish in time")
        .expect("server running");
    drop(rx);
    assert!(config().idle_timeout >= Duration::from_secs(5));
    expect_closed(&mut sock, Duration::from_secs(2)).await;
    server.stop().await;
}

/// Reads a server's messages as a client does, across reads.
struct StatusReader {
    decoder: crate::rtmp::chunk::ChunkDecoder,
    inbox: BytesMut,
}

impl StatusReader {
    fn new() -> Self {
        Self {
            decoder: crate::rtmp::chunk::ChunkDecoder::new(
                crate::rtmp::chunk::ChunkLimits::default(),
            ),
            inbox: BytesMut::new(),
        }
    }

    /// The levels and codes of the next `want` `onStatus` messages.
    async fn next(&mut self, sock: &mut TcpStream, want: usize) -> Vec<(String, String)> {
        let mut found = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            while let Some(raw) = self.decoder.decode(&mut self.inbox).unwrap() {
                if let Ok(Message::Command(c)) = Message::decode(raw.type_id, raw.payload) {
                    if c.name == "onStatus" {
                        let field = |k| {
                            let v = c.args[0].get(k).and_then(Amf0Value::as_str);
                            v.unwrap().to_owned()
                        };
                        found.push((field("level"), field("code")));
                    }
                }
                if found.len() == want {
                    return found;
                }
            }
            let n = tokio::time::timeout(WAIT, sock.read(&mut buf))
                .await
                .expect("statuses in time")
                .unwrap();
            assert!(n > 0, "closed after {found:?}");
            self.inbox.extend_from_slice(&buf[..n]);
        }
    }
}

/// The publisher hears when storing its stream starts failing (also when
/// it fails as the publish starts) and when it works again; a new error
/// text while it still fails is not news.
#[tokio::test]
async fn the_publisher_is_told_when_storing_fails_and_resumes() {
    let mut server = Server::start(config(), false).await;
    server.fake.storage.send_replace(Some("disk full".into()));
    let mut sock = raw_publish(server.addr, KEY).await;
    let _rx = tokio::time::timeout(WAIT, server.publishes.recv())
        .await
        .expect("a publish in time")
        .expect("server running");
    let status = |level: &str, code: &str| (level.to_owned(), code.to_owned());
    let mut reader = StatusReader::new();
    assert_eq!(
        reader.next(&mut sock, 2).await,
        [
            status("status", "NetStream.Publish.Start"),
            status("warning", "NetStream.Publish.StorageFailing"),
        ]
    );
    server.fake.storage.send_replace(Some("still full".into()));
    server.fake.storage.send_replace(None);
    assert_eq!(
        reader.next(&mut sock, 1).await,
        [status("status", "NetStream.Publish.StorageResumed")]
    );
    server.fake.storage.send_replace(Some("full again".into()));
    assert_eq!(
        reader.next(&mut sock, 1).await,
        [status("warning", "NetStream.Publish.StorageFailing")]
    );
    server.stop().await;
}

/// A client that never finishes the handshake is closed after
/// `handshake_timeout`.
#[tokio::test]
async fn silent_client_hits_handshake_timeout() {
    let server = Server::start(
        RtmpConfig {
            handshake_timeout: Duration::from_millis(200),
            ..config()
        },
        false,
    )
    .await;
    let mut sock = TcpStream::connect(server.addr).await.unwrap();
    expect_closed(&mut sock, Duration::from_secs(5)).await;
    assert!(server.begins().is_empty());
    server.stop().await;
}

/// (6) Beyond `max_connections` a connection is closed at once; the slot
/// comes back when the holder leaves.
#[tokio::test]
async fn max_connections_refuses_extra_connections() {
    let server = Server::start(
        RtmpConfig {
            max_connections: 1,
            ..config()
        },
        false,
    )
    .await;
    // A holder that has finished its handshake (one that had not would
    // give way to the newcomer) and is within its grace.
    let mut holder = TcpStream::connect(server.addr).await.unwrap();
    let mut hello = vec![3u8];
    hello.extend_from_slice(&[0x22; PACKET_LEN]);
    holder.write_all(&hello).await.unwrap();
    let mut s0s1s2 = vec![0u8; 1 + 2 * PACKET_LEN];
    holder.read_exact(&mut s0s1s2).await.unwrap();
    holder.write_all(&s0s1s2[1..1 + PACKET_LEN]).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut extra = TcpStream::connect(server.addr).await.unwrap();
    expect_closed(&mut extra, Duration::from_secs(2)).await;
    drop(holder);

    // The holder's task notices the close asynchronously: retry briefly.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let mut sock = TcpStream::connect(server.addr).await.unwrap();
        let mut hello = vec![3u8];
        hello.extend_from_slice(&[0x22; PACKET_LEN]);
        let mut s0 = [0u8; 1];
        let answered = sock.write_all(&hello).await.is_ok()
            && sock.read_exact(&mut s0).await.is_ok()
            && s0[0] == 3;
        if answered {
            break;
        }
        assert!(Instant::now() < deadline, "the slot never came back");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    server.stop().await;
}

/// ffmpeg publishing in real time (as an encoder does, so it is still
/// sending when our answer comes) with `args` for its codecs; returns its
/// exit status and what it printed.
async fn ffmpeg_realtime(addr: SocketAddr, args: &[&str]) -> (std::process::ExitStatus, String) {
    let url = format!("rtmp://{addr}/live/{KEY}");
    let child = tokio::process::Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-nostdin", "-re"])
        .args(["-f", "lavfi", "-i", "testsrc2=size=320x240:rate=25"])
        .args(["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=44100"])
        .args(["-t", "5"])
        .args(args)
        .args(["-f", "flv", &url])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("ffmpeg on PATH");
    let out = tokio::time::timeout(WAIT, child.wait_with_output())
        .await
        .expect("ffmpeg exits in time")
        .unwrap();
    (
        out.status,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Unsupported video (Sorenson H.263 via ffmpeg's `flv` encoder) or audio
/// (MP3) is refused after Publish.Start: ffmpeg is told why with an
/// `onStatus` error and fails, the log names the codec, and the manager
/// gets a Refused end (and no frame of that codec).
#[tokio::test]
async fn unsupported_codec_is_refused_with_an_error_status() {
    let (logs, _guard) = capture_logs();
    let mut server = Server::start(config(), false).await;
    let cases: [(&[&str], &str); 2] = [
        (
            &["-c:v", "flv", "-c:a", "aac"],
            "video codec Sorenson H.263 (FLV codec id 2) is not supported; \
             publish H.264, HEVC or AV1",
        ),
        (
            &[
                "-c:v",
                "libx264",
                "-preset",
                "ultrafast",
                "-c:a",
                "libmp3lame",
            ],
            "audio codec MP3 (FLV sound format 2) is not supported; publish AAC",
        ),
    ];
    for (args, why) in cases {
        let addr = server.addr;
        let (events, (status, stderr)) =
            tokio::join!(server.next_publish(), ffmpeg_realtime(addr, args));
        assert!(!status.success(), "ffmpeg succeeded");
        assert!(
            stderr.contains(&format!("Server error: {why}")),
            "ffmpeg said: {stderr}"
        );
        assert_eq!(
            events.last(),
            Some(&IngestEvent::End(EndReason::Refused(why.into()))),
            "{events:?}"
        );
        let frames = events
            .iter()
            .filter(|e| matches!(e, IngestEvent::Frame(_)))
            .count();
        assert!(frames <= 1, "{frames} frames before the refusal");
        let logs = text(&logs);
        assert!(
            logs.contains("refusing the publish") && logs.contains(why),
            "{logs}"
        );
    }
    server.stop().await;
}

/// Tracks the stream cannot carry (the manager says so) are refused before
/// the manager gets them.
#[tokio::test]
async fn tracks_the_stream_cannot_carry_are_refused() {
    let (logs, _guard) = capture_logs();
    let why = "AV1 cannot be carried in MPEG-TS segments; use fMP4 segments or publish H.264/HEVC";
    let mut server = Server::start_with(config(), false, Some(why.into())).await;
    let args = ["-c:v", "libx264", "-preset", "ultrafast", "-c:a", "aac"];
    let addr = server.addr;
    let (events, (status, stderr)) =
        tokio::join!(server.next_publish(), ffmpeg_realtime(addr, &args));
    assert!(!status.success());
    assert!(stderr.contains(why), "ffmpeg said: {stderr}");
    assert_eq!(events, [IngestEvent::End(EndReason::Refused(why.into()))]);
    server.stop().await;
    let logs = text(&logs);
    assert!(
        logs.contains("refusing the publish") && logs.contains(why),
        "{logs}"
    );
}

/// Shutdown ends a live publish with an error End.
#[tokio::test]
async fn shutdown_ends_live_publishes() {
    let mut server = Server::start(config(), false).await;
    let _sock = raw_publish(server.addr, KEY).await;
    let mut rx = tokio::time::timeout(WAIT, server.publishes.recv())
        .await
        .unwrap()
        .unwrap();
    server.stop().await;
    assert_eq!(
        rx.recv().await,
        Some(IngestEvent::End(EndReason::Error(
            "server shutting down".into()
        )))
    );
    assert_eq!(rx.recv().await, None);
}

#[test]
fn allowlist_matches_networks() {
    let list =
        Allowlist::parse(&["10.0.0.0/8".into(), "200::/7".into(), "192.0.2.7".into()]).unwrap();
    let ok = |s: &str| list.allows(s.parse().unwrap());
    assert!(ok("10.1.2.3"));
    assert!(ok("::ffff:10.1.2.3"), "IPv4-mapped");
    assert!(!ok("11.0.0.1"));
    assert!(ok("201:abcd::1"));
    assert!(!ok("fe80::1"));
    assert!(ok("192.0.2.7"));
    assert!(!ok("192.0.2.8"));
    assert!(Allowlist::parse(&[])
        .unwrap()
        .allows("8.8.8.8".parse().unwrap()));
    assert!(Allowlist::parse(&["0.0.0.0/0".into()])
        .unwrap()
        .allows("8.8.8.8".parse().unwrap()));

    for bad in ["10.0.0.0/33", "fe80::/129", "10.0.0/8", "x/8", "10.0.0.0/"] {
        let err = Allowlist::parse(&[bad.to_owned()]).unwrap_err();
        assert_eq!(err.value, bad);
    }
}

#[test]
fn stream_keys_debug_hides_keys() {
    let keys = StreamKeys::new(&[StreamConfig {
        name: NAME.parse().unwrap(),
        key: KEY.into(),
        format: None,
        part_target: None,
        retain: None,
        retain_bytes: None,
    }]);
    assert_eq!(keys.name_for(KEY), Some(NAME));
    assert_eq!(keys.name_for(NAME), None);
    let debug = format!("{keys:?}");
    assert!(debug.contains(NAME) && !debug.contains(KEY), "{debug}");
}

/// AVC sequence header: FLV video byte (keyframe, AVC), packet type 0,
/// composition 0, then a minimal AVCDecoderConfigurationRecord with one SPS
/// and one PPS.
fn avc_header() -> Bytes {
    Bytes::from_static(&[
        0x17, 0, 0, 0, 0, // FLV video header
        1, 0x42, 0, 0x1E, 0xFF, // version, profile, compat, level, 4-byte NALU lengths
        0xE1, 0, 2, 0x67, 0x42, // one SPS
        1, 0, 1, 0x68, // one PPS
    ])
}

fn avc_frame(key: bool) -> Bytes {
    let b0 = if key { 0x17 } else { 0x27 };
    Bytes::copy_from_slice(&[b0, 1, 0, 0, 40, 0, 0, 0, 1, 0x65])
}

/// AAC sequence header: AAC LC, 44.1 kHz, stereo.
fn aac_header() -> Bytes {
    Bytes::from_static(&[0xAF, 0, 0x12, 0x10])
}

fn aac_frame() -> Bytes {
    Bytes::from_static(&[0xAF, 1, 0x21, 0x10])
}

#[test]
fn demux_waits_for_announced_video() {
    let mut demux = Demux::default();
    demux.metadata(&Amf0Value::object([(
        "videocodecid",
        Amf0Value::Number(7.0),
    )]));
    let a = demux.media(MediaKind::Audio, 0, aac_header()).unwrap();
    assert_eq!(a, Demuxed::default());
    // Audio before the announced video's config is held back.
    let a = demux.media(MediaKind::Audio, 0, aac_frame()).unwrap();
    assert_eq!(a, Demuxed::default());
    assert_eq!(
        demux.media(MediaKind::Video, 0, avc_header()).unwrap(),
        Demuxed::default()
    );

    let first = demux.media(MediaKind::Video, 40, avc_frame(true)).unwrap();
    let tracks = first.tracks.expect("tracks before the first frame");
    assert!(tracks.video.is_some() && tracks.audio.is_some());
    let frame = first.frame.unwrap();
    assert_eq!(
        (
            frame.track,
            frame.dts_ms,
            frame.composition_ms,
            frame.keyframe
        ),
        (TrackKind::Video, 40, 40, true)
    );
    assert_eq!(&frame.data[..], &[0, 0, 0, 1, 0x65]);

    let next = demux.media(MediaKind::Video, 80, avc_frame(false)).unwrap();
    assert!(next.tracks.is_none() && !next.frame.unwrap().keyframe);
    let audio = demux.media(MediaKind::Audio, 81, aac_frame()).unwrap();
    assert!(audio.frame.unwrap().keyframe);

    // The same header again changes nothing; a new one is announced.
    let same = demux.media(MediaKind::Audio, 90, aac_header()).unwrap();
    assert_eq!(same, Demuxed::default());
    let mono = Bytes::from_static(&[0xAF, 0, 0x12, 0x08]);
    let changed = demux.media(MediaKind::Audio, 90, mono).unwrap();
    assert_eq!(changed.tracks.unwrap().audio.unwrap().channels, 1);
}

#[test]
fn demux_without_metadata_starts_at_first_frame() {
    let mut demux = Demux::default();
    // A frame of a track without its config is useless.
    assert_eq!(
        demux.media(MediaKind::Video, 0, avc_frame(true)).unwrap(),
        Demuxed::default()
    );
    demux.media(MediaKind::Audio, 0, aac_header()).unwrap();
    let first = demux.media(MediaKind::Audio, 0, aac_frame()).unwrap();
    let tracks = first.tracks.unwrap();
    assert!(tracks.video.is_none() && tracks.audio.is_some());
    // Video joining later is a configuration change.
    let video = demux.media(MediaKind::Video, 20, avc_header()).unwrap();
    assert!(video.tracks.unwrap().video.is_some());
}

#[test]
fn demux_rejects_unsupported_codecs() {
    let mut demux = Demux::default();
    // Sorenson H.263 (codec id 2), MP3 (sound format 2).
    let video = demux.media(MediaKind::Video, 0, Bytes::from_static(&[0x12, 0, 0]));
    assert!(matches!(
        video,
        Err(FlvError::UnsupportedVideoCodec { codec_id: 2, .. })
    ));
    let audio = demux.media(MediaKind::Audio, 0, Bytes::from_static(&[0x2F, 0]));
    assert!(matches!(
        audio,
        Err(FlvError::UnsupportedAudioCodec { format: 2, .. })
    ));
}

#[test]
fn session_limits_follow_config() {
    let config = RtmpConfig {
        max_chunk_size: 1024,
        max_message_size: 32 << 20,
        ..RtmpConfig::default()
    };
    let session = session_config(&config);
    assert_eq!(session.chunk_size, 1024);
    assert_eq!(session.chunk_limits.max_chunk_size, 1024);
    assert_eq!(session.chunk_limits.max_message_size, 32 << 20);
    assert!(session.chunk_limits.max_pending_bytes >= 32 << 20);
}
