//! Scripted sessions: a client built from our own encoder plays the part of
//! ffmpeg, and the server's answers are decoded and checked.

use super::*;
use crate::rtmp::chunk::ChunkDecoder;
use crate::rtmp::handshake::{client_c1, DigestScheme};
use proptest::prelude::*;

/// The client side of a scripted exchange.
struct Client {
    encoder: ChunkEncoder,
    decoder: ChunkDecoder,
    /// Server output not yet decoded.
    inbox: BytesMut,
    session: Session,
}

impl Client {
    /// Connects through the handshake; the digest variant when `scheme`.
    fn new(config: SessionConfig, scheme: Option<DigestScheme>) -> Self {
        let mut session = Session::new(config, [0x5A; PACKET_LEN]);
        let c1 = match scheme {
            Some(scheme) => client_c1(scheme, 0x11),
            None => [0x22; PACKET_LEN],
        };
        let mut hello = vec![3];
        hello.extend_from_slice(&c1);
        session.handle_input(&hello).unwrap();
        let s0s1s2 = session.poll_transmit().unwrap();
        assert_eq!(s0s1s2.len(), 1 + 2 * PACKET_LEN);
        if scheme.is_none() {
            assert_eq!(&s0s1s2[1 + PACKET_LEN..], &c1[..]);
        }
        // C2 echoes S1.
        session.handle_input(&s0s1s2[1..1 + PACKET_LEN]).unwrap();
        assert_eq!(session.poll_transmit(), None);
        Self {
            encoder: ChunkEncoder::new(),
            decoder: ChunkDecoder::new(ChunkLimits::default()),
            inbox: BytesMut::new(),
            session,
        }
    }

    fn send(&mut self, csid: u32, stream_id: u32, timestamp: u32, msg: &Message) {
        let (type_id, payload) = msg.encode();
        let mut out = BytesMut::new();
        self.encoder
            .encode(
                &RawMessage {
                    csid,
                    timestamp,
                    type_id,
                    stream_id,
                    payload,
                },
                &mut out,
            )
            .unwrap();
        self.session.handle_input(&out).unwrap();
    }

    fn command(
        &mut self,
        stream_id: u32,
        name: &str,
        txid: f64,
        object: Amf0Value,
        args: Vec<Amf0Value>,
    ) {
        let csid = if stream_id == 0 { 3 } else { 8 };
        self.send(
            csid,
            stream_id,
            0,
            &Message::Command(Command::new(name, txid, object, args)),
        );
    }

    /// Everything the server has sent since the last call.
    fn received(&mut self) -> Vec<(u32, Message)> {
        while let Some(b) = self.session.poll_transmit() {
            self.inbox.extend_from_slice(&b);
        }
        let mut msgs = Vec::new();
        while let Some(raw) = self.decoder.decode(&mut self.inbox).unwrap() {
            msgs.push((
                raw.stream_id,
                Message::decode(raw.type_id, raw.payload).unwrap(),
            ));
        }
        msgs
    }

    fn events(&mut self) -> Vec<Event> {
        std::iter::from_fn(|| self.session.poll_event()).collect()
    }

    /// connect + releaseStream + FCPublish + createStream + publish, as
    /// ffmpeg sends them; returns after the publish request.
    fn publish(&mut self, key: &str) {
        let mut out = BytesMut::new();
        self.encoder
            .set_chunk_size(4096, 1 << 24, &mut out)
            .unwrap();
        self.session.handle_input(&out).unwrap();
        self.command(0, "connect", 1.0, ffmpeg_connect_object(), vec![]);
        self.command(
            0,
            "releaseStream",
            2.0,
            Amf0Value::Null,
            vec![Amf0Value::string(key)],
        );
        self.command(
            0,
            "FCPublish",
            3.0,
            Amf0Value::Null,
            vec![Amf0Value::string(key)],
        );
        self.command(0, "createStream", 4.0, Amf0Value::Null, vec![]);
        self.command(
            1,
            "publish",
            5.0,
            Amf0Value::Null,
            vec![Amf0Value::string(key), Amf0Value::string("live")],
        );
    }
}

fn ffmpeg_connect_object() -> Amf0Value {
    Amf0Value::object([
        ("app", Amf0Value::string("live")),
        ("type", Amf0Value::string("nonprivate")),
        (
            "flashVer",
            Amf0Value::string("FMLE/3.0 (compatible; Lavf61.7.100)"),
        ),
        ("tcUrl", Amf0Value::string("rtmp://127.0.0.1:1935/live")),
    ])
}

fn command_of(msg: &Message) -> &Command {
    match msg {
        Message::Command(c) => c,
        other => panic!("expected a command, got {other:?}"),
    }
}

fn status_code(msg: &Message) -> &str {
    command_of(msg).args[0]
        .get("code")
        .and_then(Amf0Value::as_str)
        .unwrap()
}

#[test]
fn full_publish() {
    for scheme in [
        None,
        Some(DigestScheme::Scheme0),
        Some(DigestScheme::Scheme1),
    ] {
        let mut c = Client::new(SessionConfig::default(), scheme);
        c.publish("key?token=1");

        let out = c.received();
        assert_eq!(out[0], (0, Message::WindowAckSize(2_500_000)));
        assert_eq!(
            out[1],
            (
                0,
                Message::SetPeerBandwidth {
                    size: 2_500_000,
                    limit: 2
                }
            )
        );
        assert_eq!(out[2], (0, Message::SetChunkSize(4096)));
        let connect = command_of(&out[3].1);
        assert_eq!(
            (connect.name.as_str(), connect.transaction_id),
            ("_result", 1.0)
        );
        assert_eq!(status_code(&out[3].1), "NetConnection.Connect.Success");
        assert_eq!(command_of(&out[4].1).name, "_result"); // releaseStream
        assert_eq!(command_of(&out[5].1).name, "onFCPublish");
        assert_eq!(command_of(&out[6].1).transaction_id, 3.0); // FCPublish
        let created = command_of(&out[7].1);
        assert_eq!(created.transaction_id, 4.0);
        assert_eq!(created.args, vec![Amf0Value::Number(1.0)]);
        assert_eq!(out.len(), 8);

        assert_eq!(
            c.events(),
            vec![
                Event::Connect {
                    app: "live".into(),
                    tc_url: Some("rtmp://127.0.0.1:1935/live".into()),
                    flash_ver: Some("FMLE/3.0 (compatible; Lavf61.7.100)".into()),
                },
                Event::PublishRequest {
                    app: "live".into(),
                    key: "key?token=1".into(),
                    stream_id: 1
                },
            ]
        );

        // Media before the verdict is not delivered.
        c.send(
            6,
            1,
            0,
            &Message::Video(Bytes::from_static(&[0x17, 0, 0, 0, 0])),
        );
        assert!(c.events().is_empty());

        c.session.accept_publish().unwrap();
        let out = c.received();
        assert_eq!(
            out[0],
            (0, Message::UserControl(UserControl::StreamBegin(1)))
        );
        assert_eq!(out[1].0, 1);
        assert_eq!(status_code(&out[1].1), "NetStream.Publish.Start");
        assert_eq!(c.session.published_key(), Some("key?token=1"));

        let metadata = Amf0Value::EcmaArray(vec![
            ("width".into(), Amf0Value::Number(1280.0)),
            ("videocodecid".into(), Amf0Value::Number(7.0)),
        ]);
        c.send(
            4,
            1,
            0,
            &Message::Data(vec![
                Amf0Value::string("@setDataFrame"),
                Amf0Value::string("onMetaData"),
                metadata.clone(),
            ]),
        );
        let video = Bytes::from(vec![0x17; 10_000]);
        c.send(6, 1, 40, &Message::Video(video.clone()));
        c.send(
            4,
            1,
            23,
            &Message::Audio(Bytes::from_static(&[0xAF, 1, 0x21])),
        );
        c.command(
            0,
            "FCUnpublish",
            6.0,
            Amf0Value::Null,
            vec![Amf0Value::string("key?token=1")],
        );
        c.command(
            0,
            "deleteStream",
            7.0,
            Amf0Value::Null,
            vec![Amf0Value::Number(1.0)],
        );

        assert_eq!(
            c.events(),
            vec![
                Event::Metadata { metadata },
                Event::Media {
                    kind: MediaKind::Video,
                    timestamp: 40,
                    payload: video
                },
                Event::Media {
                    kind: MediaKind::Audio,
                    timestamp: 23,
                    payload: Bytes::from_static(&[0xAF, 1, 0x21])
                },
                Event::Unpublish {
                    key: "key?token=1".into()
                },
            ]
        );
    }
}

#[test]
fn reject_publish_sends_error_status() {
    let mut c = Client::new(SessionConfig::default(), None);
    c.publish("wrong");
    c.received();
    c.events();
    c.session
        .reject_publish("NetStream.Publish.BadName", "unknown stream key")
        .unwrap();
    let out = c.received();
    assert_eq!(out.len(), 1);
    let cmd = command_of(&out[0].1);
    assert_eq!(cmd.name, "onStatus");
    assert_eq!(
        cmd.args[0].get("level").and_then(Amf0Value::as_str),
        Some("error")
    );
    assert_eq!(status_code(&out[0].1), "NetStream.Publish.BadName");
    assert!(matches!(
        c.session.accept_publish(),
        Err(SessionError::NoPendingPublish)
    ));
}

/// The AMF0 body of `onStatus(0, null, {level: "error", code, description})`,
/// written out by hand.
fn error_status_body(code: &str, description: &str) -> Vec<u8> {
    status_body("error", code, description)
}

/// The AMF0 body of `onStatus(0, null, {level, code, description})`,
/// written out by hand.
fn status_body(level: &str, code: &str, description: &str) -> Vec<u8> {
    fn string(out: &mut Vec<u8>, s: &str) {
        out.extend_from_slice(&(s.len() as u16).to_be_bytes());
        out.extend_from_slice(s.as_bytes());
    }
    let mut b = vec![0x02];
    string(&mut b, "onStatus");
    b.push(0x00);
    b.extend_from_slice(&0f64.to_be_bytes());
    b.push(0x05); // null command object
    b.push(0x03); // info object
    for (key, value) in [
        ("level", level),
        ("code", code),
        ("description", description),
    ] {
        string(&mut b, key);
        b.push(0x02);
        string(&mut b, value);
    }
    b.extend_from_slice(&[0x00, 0x00, 0x09]);
    b
}

#[test]
fn fail_publish_sends_error_status_and_drops_what_follows() {
    let mut c = Client::new(SessionConfig::default(), None);
    c.publish("key");
    c.session.accept_publish().unwrap();
    c.received();
    c.events();
    c.send(6, 1, 0, &Message::Video(Bytes::from_static(&[0x12, 0, 0])));
    assert_eq!(c.events().len(), 1, "media of the accepted publish");

    let why = "video codec Sorenson H.263 (FLV codec id 2) is not supported; \
               publish H.264, HEVC or AV1";
    c.session.fail_publish("NetStream.Failed", why).unwrap();
    let mut wire = BytesMut::new();
    while let Some(b) = c.session.poll_transmit() {
        wire.extend_from_slice(&b);
    }
    // One message on chunk stream 5 of message stream 1, whose header
    // repeats only what changed since Publish.Start on the same chunk
    // stream: type 1, timestamp delta 0, the new length, type 20.
    let body = error_status_body("NetStream.Failed", why);
    assert!(body.len() < 4096, "fits one chunk");
    let len = (body.len() as u32).to_be_bytes();
    let mut want = vec![0x45, 0, 0, 0, len[1], len[2], len[3], 20];
    want.extend_from_slice(&body);
    assert_eq!(&wire[..], &want[..]);
    c.inbox.extend_from_slice(&wire);
    let out = c.received();
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].0, 1, "on the publish's message stream");
    assert_eq!(status_code(&out[0].1), "NetStream.Failed");

    // What the publisher sends before it reads the status goes nowhere,
    // and its goodbye is not an Unpublish of a live publish.
    c.send(6, 1, 40, &Message::Video(Bytes::from_static(&[0x12, 0, 0])));
    c.command(
        0,
        "FCUnpublish",
        6.0,
        Amf0Value::Null,
        vec![Amf0Value::string("key")],
    );
    c.command(
        0,
        "deleteStream",
        7.0,
        Amf0Value::Null,
        vec![Amf0Value::Number(1.0)],
    );
    assert!(c.events().is_empty());
    assert_eq!(c.session.published_key(), None);
    assert!(matches!(
        c.session.fail_publish("NetStream.Failed", why),
        Err(SessionError::NotPublishing)
    ));
}

/// The bytes of one status message on chunk stream 5 of message stream 1
/// after another one there: a type 1 header (timestamp delta 0, the new
/// length, type 20) and the body in one chunk.
fn status_after_status(body: &[u8]) -> Vec<u8> {
    assert!(body.len() < 4096, "fits one chunk");
    let len = (body.len() as u32).to_be_bytes();
    let mut want = vec![0x45, 0, 0, 0, len[1], len[2], len[3], 20];
    want.extend_from_slice(body);
    want
}

fn wire(session: &mut Session) -> BytesMut {
    let mut wire = BytesMut::new();
    while let Some(b) = session.poll_transmit() {
        wire.extend_from_slice(&b);
    }
    wire
}

#[test]
fn storage_status_warns_the_publisher_and_says_when_storing_resumes() {
    let mut c = Client::new(SessionConfig::default(), None);
    c.publish("key");
    assert!(matches!(
        c.session.storage_status(Some("disk full")),
        Err(SessionError::NotPublishing)
    ));
    c.session.accept_publish().unwrap();
    c.received();
    c.events();

    let error = "writing block bafkrei...: No space left on device (os error 28)";
    c.session.storage_status(Some(error)).unwrap();
    let failing = wire(&mut c.session);
    let description = format!(
        "storing the stream failed: {error}; what cannot be stored is marked as a gap \
         until storing works again"
    );
    let body = status_body("warning", "NetStream.Publish.StorageFailing", &description);
    assert_eq!(&failing[..], &status_after_status(&body)[..]);

    // A warning: the publish goes on.
    c.send(6, 1, 0, &Message::Video(Bytes::from_static(&[0x12, 0, 0])));
    assert_eq!(c.events().len(), 1, "media after the warning");
    assert_eq!(c.session.published_key(), Some("key"));

    c.session.storage_status(None).unwrap();
    let resumed = wire(&mut c.session);
    let body = status_body(
        "status",
        "NetStream.Publish.StorageResumed",
        "storing the stream works again",
    );
    assert_eq!(&resumed[..], &status_after_status(&body)[..]);

    c.inbox.extend_from_slice(&failing);
    c.inbox.extend_from_slice(&resumed);
    let out = c.received();
    assert_eq!(out.len(), 2);
    assert!(out.iter().all(|(stream, _)| *stream == 1));
    assert_eq!(status_code(&out[0].1), "NetStream.Publish.StorageFailing");
    assert_eq!(status_code(&out[1].1), "NetStream.Publish.StorageResumed");

    c.session.fail_publish("NetStream.Failed", "no").unwrap();
    assert!(matches!(
        c.session.storage_status(None),
        Err(SessionError::NotPublishing)
    ));
}

#[test]
fn fail_publish_needs_an_accepted_publish() {
    let mut c = Client::new(SessionConfig::default(), None);
    c.publish("key");
    // Pending, not accepted: refuse it with reject_publish instead.
    assert!(matches!(
        c.session.fail_publish("NetStream.Failed", "no"),
        Err(SessionError::NotPublishing)
    ));
    c.session.accept_publish().unwrap();
    c.session.fail_publish("NetStream.Failed", "no").unwrap();
}

#[test]
fn unknown_commands_and_ping() {
    let mut c = Client::new(SessionConfig::default(), None);
    c.command(0, "connect", 1.0, ffmpeg_connect_object(), vec![]);
    c.received();
    c.command(0, "getStreamLength", 9.0, Amf0Value::Null, vec![]);
    c.command(0, "someNotice", 0.0, Amf0Value::Null, vec![]);
    c.send(
        2,
        0,
        0,
        &Message::UserControl(UserControl::PingRequest(1234)),
    );
    let out = c.received();
    assert_eq!(out.len(), 2);
    let err = command_of(&out[0].1);
    assert_eq!((err.name.as_str(), err.transaction_id), ("_error", 9.0));
    assert_eq!(status_code(&out[0].1), "NetConnection.Call.Failed");
    assert_eq!(
        out[1].1,
        Message::UserControl(UserControl::PingResponse(1234))
    );
}

#[test]
fn command_before_connect_is_an_error() {
    let mut c = Client::new(SessionConfig::default(), None);
    let (type_id, payload) =
        Message::Command(Command::new("createStream", 2.0, Amf0Value::Null, vec![])).encode();
    let mut out = BytesMut::new();
    c.encoder
        .encode(
            &RawMessage {
                csid: 3,
                timestamp: 0,
                type_id,
                stream_id: 0,
                payload,
            },
            &mut out,
        )
        .unwrap();
    assert!(matches!(
        c.session.handle_input(&out),
        Err(SessionError::OutOfOrder { .. })
    ));
}

/// Feeds `cmd` on the connection's command stream, returning the session's
/// verdict instead of unwrapping it.
fn try_command(c: &mut Client, cmd: Command) -> Result<(), SessionError> {
    let (type_id, payload) = Message::Command(cmd).encode();
    let mut out = BytesMut::new();
    c.encoder
        .encode(
            &RawMessage {
                csid: 3,
                timestamp: 0,
                type_id,
                stream_id: 0,
                payload,
            },
            &mut out,
        )
        .unwrap();
    c.session.handle_input(&out)
}

#[test]
fn an_application_name_past_the_limit_is_refused_and_kept_out_of_errors() {
    let mut c = Client::new(SessionConfig::default(), None);
    let app = "a".repeat(100_000);
    let object = Amf0Value::object([("app", Amf0Value::string(app.clone()))]);
    let err = try_command(&mut c, Command::new("connect", 1.0, object, vec![])).unwrap_err();
    assert!(matches!(
        err,
        SessionError::AppTooLong {
            len: 100_000,
            limit: 256
        }
    ));
    assert!(!err.to_string().contains(&app[..300]));
    assert_eq!(c.session.app(), None);
    assert!(c.events().is_empty(), "no Connect event");
    // The client is told, with the code encoders report.
    let answers = c.received();
    let [(0, Message::Command(answer))] = &answers[..] else {
        panic!("one _error answer, got {answers:?}");
    };
    assert_eq!(answer.name, "_error");
    let info = answer.args.first().unwrap();
    assert_eq!(
        info.get("code").and_then(Amf0Value::as_str),
        Some("NetConnection.Connect.Rejected")
    );

    // At the limit it is fine.
    let mut c = Client::new(SessionConfig::default(), None);
    let object = Amf0Value::object([("app", Amf0Value::string("b".repeat(256)))]);
    try_command(&mut c, Command::new("connect", 1.0, object, vec![])).unwrap();
    assert_eq!(c.session.app().map(str::len), Some(256));
}

#[test]
fn an_out_of_order_command_name_is_clipped_in_the_error() {
    let mut c = Client::new(SessionConfig::default(), None);
    let name = "é".repeat(50_000);
    let cmd = Command::new(&name, 2.0, Amf0Value::Null, vec![]);
    let err = try_command(&mut c, cmd).unwrap_err();
    let SessionError::OutOfOrder { name: logged, .. } = &err else {
        panic!("expected OutOfOrder, got {err:?}");
    };
    assert!(
        logged.len() <= MAX_LOGGED_NAME + 3,
        "{} bytes",
        logged.len()
    );
    assert!(logged.starts_with("éé"));
}

#[test]
fn acknowledges_each_window() {
    let mut c = Client::new(SessionConfig::default(), None);
    c.publish("k");
    c.send(2, 0, 0, &Message::WindowAckSize(10_000));
    c.session.accept_publish().unwrap();
    c.received();
    for i in 0..5 {
        c.send(6, 1, i * 10, &Message::Video(Bytes::from(vec![0x27; 3000])));
    }
    let acks: Vec<_> = c
        .received()
        .into_iter()
        .filter_map(|(_, m)| match m {
            Message::Acknowledgement { sequence } => Some(sequence),
            _ => None,
        })
        .collect();
    // 3073 handshake bytes + commands + 15 KB of video: at least one ack,
    // each reporting the total received at that point.
    assert!(!acks.is_empty());
    assert!(acks.windows(2).all(|w| w[1] - w[0] >= 10_000));
    assert!(u64::from(*acks.last().unwrap()) <= c.session.bytes_received());
}

#[test]
fn timestamps_extend_past_wrap() {
    let mut c = Client::new(SessionConfig::default(), None);
    c.publish("k");
    c.session.accept_publish().unwrap();
    c.events();
    for ts in [u32::MAX - 40, u32::MAX - 5, 30, 20, 2000] {
        c.send(6, 1, ts, &Message::Video(Bytes::from_static(&[0x27])));
    }
    let stamps: Vec<_> = c
        .events()
        .into_iter()
        .map(|e| match e {
            Event::Media { timestamp, .. } => timestamp,
            other => panic!("unexpected {other:?}"),
        })
        .collect();
    let wrap = 1u64 << 32;
    assert_eq!(
        stamps,
        vec![wrap - 41, wrap - 6, wrap + 30, wrap + 20, wrap + 2000]
    );
}

#[test]
fn event_queue_is_bounded() {
    let mut c = Client::new(
        SessionConfig {
            max_pending_events: 3,
            ..SessionConfig::default()
        },
        None,
    );
    c.publish("k");
    c.session.accept_publish().unwrap();
    // Connect and PublishRequest are still queued: one more fits.
    c.send(6, 1, 0, &Message::Video(Bytes::from_static(&[0x27])));
    let (type_id, payload) = Message::Video(Bytes::from_static(&[0x27])).encode();
    let mut out = BytesMut::new();
    c.encoder
        .encode(
            &RawMessage {
                csid: 6,
                timestamp: 1,
                type_id,
                stream_id: 1,
                payload,
            },
            &mut out,
        )
        .unwrap();
    assert!(matches!(
        c.session.handle_input(&out),
        Err(SessionError::EventQueueFull { limit: 3 })
    ));
}

#[test]
fn aggregate_messages_are_split() {
    let mut c = Client::new(SessionConfig::default(), None);
    c.publish("k");
    c.session.accept_publish().unwrap();
    c.events();
    let mut agg = Vec::new();
    for (tag_type, ts, body) in [(9u8, 1000u32, &[0x17u8, 1][..]), (8, 1020, &[0xAF, 1])] {
        agg.push(tag_type);
        agg.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
        agg.extend_from_slice(&ts.to_be_bytes()[1..]);
        agg.push((ts >> 24) as u8);
        agg.extend_from_slice(&[0, 0, 0]);
        agg.extend_from_slice(body);
        agg.extend_from_slice(&(11 + body.len() as u32).to_be_bytes());
    }
    c.send(6, 1, 500, &Message::Aggregate(agg.into()));
    let got: Vec<_> = c
        .events()
        .into_iter()
        .map(|e| match e {
            Event::Media {
                kind, timestamp, ..
            } => (kind, timestamp),
            other => panic!("unexpected {other:?}"),
        })
        .collect();
    assert_eq!(got, vec![(MediaKind::Video, 500), (MediaKind::Audio, 520)]);
}

/// A real ffmpeg publishes H.264 + AAC through a minimal blocking loop
/// around a [`Session`] (`scripts/test` installs ffmpeg; without it this
/// test fails, as every interop test does).
#[test]
fn ffmpeg_publish() {
    ffmpeg_publish_with(&[], 0);
}

/// As [`ffmpeg_publish`], starting just below 2^24 ms so that timestamps
/// cross into extended timestamps mid-stream, which ffmpeg then repeats
/// after every type-3 chunk header.
#[test]
fn ffmpeg_publish_extended_timestamps() {
    ffmpeg_publish_with(&["-output_ts_offset", "16777"], 16_777_000);
}

fn ffmpeg_publish_with(extra_args: &[&str], start_ms: u64) {
    use crate::media::flv::{self, AudioPacket, VideoConfig, VideoPacket, VideoTag};
    use std::io::{Read, Write};
    use std::net::TcpListener;
    use std::time::Duration;

    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("rtmp://{}/live/key", listener.local_addr().unwrap());
    let mut ffmpeg = std::process::Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-nostdin"])
        .args(["-f", "lavfi", "-i", "testsrc2=size=320x240:rate=25"])
        .args(["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=44100"])
        .args([
            "-t",
            "4",
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            "-g",
            "25",
        ])
        .args(["-bf", "2", "-c:a", "aac"])
        .args(extra_args)
        .args(["-f", "flv", &url])
        .spawn()
        .expect("ffmpeg on PATH");
    let (mut sock, _) = listener.accept().unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();

    let mut session = Session::new(SessionConfig::default(), rand::random());
    let mut events = Vec::new();
    let mut buf = vec![0; 64 * 1024];
    loop {
        // ffmpeg closes right after deleteStream without reading our last
        // answers, so its kernel may reset rather than close: both mean
        // the end of the stream.
        let n = match sock.read(&mut buf) {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => 0,
            Err(e) => panic!("read: {e}"),
        };
        if n == 0 {
            break;
        }
        session.handle_input(&buf[..n]).unwrap();
        while let Some(event) = session.poll_event() {
            if let Event::PublishRequest { .. } = event {
                session.accept_publish().unwrap();
            }
            events.push(event);
        }
        while let Some(out) = session.poll_transmit() {
            if let Err(e) = sock.write_all(&out) {
                assert_eq!(e.kind(), std::io::ErrorKind::BrokenPipe, "write: {e}");
            }
        }
    }
    assert!(ffmpeg.wait().unwrap().success(), "ffmpeg failed");
    // Keyframes span several chunks, so continuation chunks (and, past
    // 2^24 ms, their repeated extended timestamps) were exercised.
    let chunk_size = session.decoder.chunk_size() as usize;
    assert!(events
        .iter()
        .any(|e| matches!(e, Event::Media { payload, .. } if payload.len() > 2 * chunk_size)));

    assert!(matches!(&events[0], Event::Connect { app, .. } if app == "live"));
    assert!(
        matches!(&events[1], Event::PublishRequest { app, key, .. } if app == "live" && key == "key")
    );
    assert!(events
        .iter()
        .any(|e| matches!(e, Event::Metadata { metadata }
        if metadata.get("width").and_then(Amf0Value::as_number) == Some(320.0))));
    assert!(matches!(events.last(), Some(Event::Unpublish { key }) if key == "key"));

    let (mut frames, mut keyframes, mut audio_frames, mut negative_cts) = (0, 0, 0, false);
    let (mut avc, mut asc) = (None, None);
    // B-frames put the first decoding timestamp a little before the start.
    let mut last_video_ts = start_ms.saturating_sub(200);
    for event in &events {
        let Event::Media {
            kind,
            timestamp,
            payload,
        } = event
        else {
            continue;
        };
        match kind {
            MediaKind::Video => match flv::parse_video(payload).unwrap() {
                VideoTag::Frame {
                    frame_type, packet, ..
                } => match packet {
                    VideoPacket::SequenceStart(VideoConfig::Avc(cfg)) => avc = Some(cfg),
                    VideoPacket::CodedFrames {
                        composition_time,
                        data,
                    } => {
                        assert!(!data.is_empty());
                        assert!(*timestamp >= last_video_ts, "DTS went backwards");
                        last_video_ts = *timestamp;
                        negative_cts |= composition_time < 0;
                        frames += 1;
                        keyframes += usize::from(frame_type == flv::FrameType::Key);
                    }
                    _ => {}
                },
                VideoTag::Command => {}
            },
            MediaKind::Audio => match flv::parse_audio(payload).unwrap().packet {
                AudioPacket::SequenceStart(cfg) => asc = Some(cfg),
                AudioPacket::Raw(_) => audio_frames += 1,
                AudioPacket::SequenceEnd => {}
            },
        }
    }
    let avc = avc.expect("AVC sequence header");
    assert_eq!(avc.nalu_length_size, 4);
    assert_eq!((avc.sps.len(), avc.pps.len()), (1, 1));
    let asc = asc.expect("AAC sequence header");
    assert_eq!(
        (asc.object_type, asc.sample_rate, asc.channels),
        (2, 44100, 1)
    );
    assert_eq!(frames, 100, "4 s at 25 fps");
    assert_eq!(keyframes, 4, "one keyframe per 25 frames");
    // 4 s of 1024-sample frames at 44.1 kHz, give or take priming.
    assert!(
        (170..=176).contains(&audio_frames),
        "{audio_frames} AAC frames"
    );
    assert!(
        !negative_cts,
        "B-frames give non-negative offsets with DTS shifted"
    );
    assert!(
        last_video_ts >= start_ms + 3800,
        "last video timestamp {last_video_ts}"
    );
}

proptest! {
    /// Whatever follows a good handshake and connect, the session answers
    /// or fails with an error, never a panic.
    #[test]
    fn arbitrary_input_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..4096)) {
        let mut c = Client::new(SessionConfig::default(), None);
        c.command(0, "connect", 1.0, ffmpeg_connect_object(), vec![]);
        let _ = c.session.handle_input(&bytes);
        while c.session.poll_event().is_some() {}
        while c.session.poll_transmit().is_some() {}
    }
}
