//! The server side of one RTMP connection, as a state machine.
//!
//! Flow: the connection task feeds every byte it reads to
//! [`Session::handle_input`], then drains [`Session::poll_transmit`] (bytes to
//! write) and [`Session::poll_event`] (what happened). A
//! [`Event::PublishRequest`] waits for the caller's verdict:
//! [`Session::accept_publish`] or [`Session::reject_publish`]. An accepted
//! publish whose media turns out unusable (a codec the caller cannot
//! carry, which only the media shows) is ended with an error status by
//! [`Session::fail_publish`]. While it publishes, [`Session::storage_status`]
//! tells the publisher that storing its media fails (a warning; the publish
//! goes on) and when it works again. The session never reads a clock or a socket;
//! the only outside input besides bytes is the randomness for the
//! handshake, given to [`Session::new`].
//!
//! The command exchange we answer is the one OBS, ffmpeg and hardware
//! encoders use to publish (see the module docs of [`crate::rtmp`]). Playing
//! is not supported: `play` is answered with `_error`, like any command we
//! do not know that asks for an answer.
//!
//! Bounds: chunk-level limits come from [`ChunkLimits`], small ones until a
//! publish is accepted (so a peer without a stream key can make us hold a
//! few KiB, not a 16 MiB message per connection); events and output
//! are capped by [`SessionConfig`], and exceeding a cap is an error, so a
//! caller that drains both after every `handle_input` and feeds reads of a
//! sane size (say 64 KiB) never sees one. After any error the connection
//! should be closed: the session's state is not meaningful any more.

use std::collections::VecDeque;

use bytes::{Buf, Bytes, BytesMut};
use thiserror::Error;

use super::amf::Amf0Value;
use super::chunk::{ChunkDecoder, ChunkEncoder, ChunkError, ChunkLimits, RawMessage};
use super::handshake::{HandshakeError, HandshakeStatus, ServerHandshake, PACKET_LEN};
use super::message::{types, Command, Message, MessageError, UserControl};

/// Chunk stream for protocol control and user control messages (fixed by
/// the spec).
const CSID_CONTROL: u32 = 2;
/// Chunk stream for connection-level command answers.
const CSID_COMMAND: u32 = 3;
/// Chunk stream for stream-level status messages.
const CSID_STREAM: u32 = 5;

/// Bytes of a peer's command name an error carries at most.
pub const MAX_LOGGED_NAME: usize = 64;

/// `name` cut to [`MAX_LOGGED_NAME`] bytes at a character boundary.
fn clip(mut name: String) -> String {
    if name.len() > MAX_LOGGED_NAME {
        let mut end = MAX_LOGGED_NAME;
        while !name.is_char_boundary(end) {
            end -= 1;
        }
        name.truncate(end);
        name.push_str("...");
    }
    name
}

/// Tunables of a session. `Default` is what OBS and ffmpeg work well with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionConfig {
    /// Chunk size we send with (announced with Set Chunk Size after
    /// `connect`).
    pub chunk_size: u32,
    /// Window Acknowledgement Size we announce: the peer acknowledges after
    /// this many bytes from us. Also how often we acknowledge until the
    /// peer tells us its own window.
    pub window_ack_size: u32,
    /// Set Peer Bandwidth we announce.
    pub peer_bandwidth: u32,
    /// Limits on the incoming chunk stream once a publish is accepted.
    pub chunk_limits: ChunkLimits,
    /// Limits on the incoming chunk stream until then: a peer that has not
    /// published with a valid key gets to send commands, not frames.
    pub chunk_limits_before_publish: ChunkLimits,
    /// Most message streams a peer may create (`createStream`).
    pub max_streams: u32,
    /// Most events waiting for [`Session::poll_event`].
    pub max_pending_events: usize,
    /// Most bytes waiting for [`Session::poll_transmit`].
    pub max_pending_output: usize,
    /// Longest application name `connect` may give, in bytes. The name
    /// reaches the log, so one the size of a message is refused.
    pub max_app_len: usize,
}

impl Default for SessionConfig {
    fn default() -> Self {
        Self {
            chunk_size: 4096,
            window_ack_size: 2_500_000,
            peer_bandwidth: 2_500_000,
            chunk_limits: ChunkLimits::default(),
            chunk_limits_before_publish: ChunkLimits::default().before_publish(256 * 1024),
            max_streams: 8,
            max_pending_events: 1024,
            max_pending_output: 4 * 1024 * 1024,
            // Encoders send `live` or a path of a few parts.
            max_app_len: 256,
        }
    }
}

/// Why a session failed. The connection should be closed.
#[derive(Debug, Error)]
pub enum SessionError {
    /// The handshake failed.
    #[error("RTMP handshake: {0}")]
    Handshake(#[from] HandshakeError),
    /// The chunk stream was malformed or broke a limit.
    #[error("RTMP chunk stream: {0}")]
    Chunk(#[from] ChunkError),
    /// A message could not be decoded.
    #[error("RTMP message on stream {stream_id}: {source}")]
    Message {
        /// Message stream id.
        stream_id: u32,
        /// What was wrong.
        source: MessageError,
    },
    /// A command other than `connect` before `connect`, or `connect` twice.
    #[error("command {name:?} out of order: {why}")]
    OutOfOrder {
        /// The command, cut to [`MAX_LOGGED_NAME`] bytes: it is the
        /// peer's and goes to the log.
        name: String,
        /// What was expected.
        why: &'static str,
    },
    /// `connect` named an application longer than
    /// [`SessionConfig::max_app_len`]; the client was answered `_error`
    /// (`NetConnection.Connect.Rejected`).
    #[error("connect with an application name of {len} bytes; at most {limit} are accepted")]
    AppTooLong {
        /// Bytes in the name.
        len: usize,
        /// The configured limit.
        limit: usize,
    },
    /// The caller let events pile up.
    #[error("more than {limit} RTMP events pending; drain poll_event after each handle_input")]
    EventQueueFull {
        /// The configured limit.
        limit: usize,
    },
    /// The caller let output pile up.
    #[error("more than {limit} bytes of RTMP output pending; drain poll_transmit")]
    OutputFull {
        /// The configured limit.
        limit: usize,
    },
    /// `accept_publish` or `reject_publish` without a pending request.
    #[error("no publish request is waiting for an answer")]
    NoPendingPublish,
    /// `fail_publish` or `storage_status` without an accepted publish.
    #[error("no accepted publish")]
    NotPublishing,
}

/// Which kind of media a [`Event::Media`] carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MediaKind {
    /// An FLV audio tag body (message type 8).
    Audio,
    /// An FLV video tag body (message type 9).
    Video,
}

/// What a session reports to its caller.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// The client connected to an application (already accepted).
    Connect {
        /// Application name from the connect command, without trailing
        /// slashes (e.g. `live`).
        app: String,
        /// The URL the client was given, if it said.
        tc_url: Option<String>,
        /// The client's software (`flashVer`), if it said.
        flash_ver: Option<String>,
    },
    /// The client wants to publish. Answer with
    /// [`Session::accept_publish`] or [`Session::reject_publish`].
    PublishRequest {
        /// Application name.
        app: String,
        /// Stream key as sent, including any `?query`.
        key: String,
        /// The message stream the media will arrive on.
        stream_id: u32,
    },
    /// Stream metadata (`@setDataFrame onMetaData` or `onMetaData`): an
    /// object or ECMA array of properties like `width`, `videocodecid`.
    Metadata {
        /// The properties.
        metadata: Amf0Value,
    },
    /// An audio or video message of the accepted publish.
    Media {
        /// Audio or video.
        kind: MediaKind,
        /// Milliseconds, extended past the 32-bit wrap of RTMP timestamps.
        timestamp: u64,
        /// The FLV tag body (see [`crate::media::flv`]).
        payload: Bytes,
    },
    /// The client stopped publishing (`FCUnpublish`, `deleteStream` or
    /// `closeStream`).
    Unpublish {
        /// The stream key that was published.
        key: String,
    },
}

#[derive(Debug)]
enum Phase {
    Handshake(Box<ServerHandshake>),
    Chunks,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Publish {
    Idle,
    Pending { stream_id: u32, key: String },
    Live { stream_id: u32, key: String },
}

/// Extends 32-bit wrapping timestamps to 64 bits by taking each new value
/// as the nearest one (within 2^31 ms either way) to the last.
#[derive(Debug, Default)]
struct Clock {
    last: Option<(u32, u64)>,
}

impl Clock {
    fn extend(&mut self, ts: u32) -> u64 {
        let ext = match self.last {
            None => u64::from(ts),
            Some((last32, last64)) => {
                let delta = i64::from(ts.wrapping_sub(last32) as i32);
                last64.saturating_add_signed(delta)
            }
        };
        self.last = Some((ts, ext));
        ext
    }
}

/// One server-side RTMP connection.
#[derive(Debug)]
pub struct Session {
    config: SessionConfig,
    phase: Phase,
    input: BytesMut,
    decoder: ChunkDecoder,
    encoder: ChunkEncoder,
    output: BytesMut,
    events: VecDeque<Event>,
    app: Option<String>,
    streams: Vec<u32>,
    next_stream_id: u32,
    publish: Publish,
    bytes_received: u64,
    last_ack: u64,
    peer_window: Option<u32>,
    clock: Clock,
}

impl Session {
    /// A session waiting for the client's C0/C1. `random` fills S1/S2.
    pub fn new(config: SessionConfig, random: [u8; PACKET_LEN]) -> Self {
        Self {
            decoder: ChunkDecoder::new(config.chunk_limits_before_publish),
            config,
            phase: Phase::Handshake(Box::new(ServerHandshake::new(random))),
            input: BytesMut::new(),
            encoder: ChunkEncoder::new(),
            output: BytesMut::new(),
            events: VecDeque::new(),
            app: None,
            streams: Vec::new(),
            next_stream_id: 1,
            publish: Publish::Idle,
            bytes_received: 0,
            last_ack: 0,
            peer_window: None,
            clock: Clock::default(),
        }
    }

    /// Processes bytes read from the client.
    pub fn handle_input(&mut self, bytes: &[u8]) -> Result<(), SessionError> {
        self.bytes_received += bytes.len() as u64;
        match &mut self.phase {
            Phase::Handshake(hs) => match hs.feed(bytes, &mut self.output)? {
                HandshakeStatus::InProgress => return Ok(()),
                HandshakeStatus::Done { leftover } => {
                    self.phase = Phase::Chunks;
                    self.input.extend_from_slice(&leftover);
                }
            },
            Phase::Chunks => self.input.extend_from_slice(bytes),
        }
        while let Some(raw) = self.decoder.decode(&mut self.input)? {
            self.handle_message(raw)?;
        }
        let window = self.peer_window.unwrap_or(self.config.window_ack_size);
        if window > 0 && self.bytes_received - self.last_ack >= u64::from(window) {
            self.last_ack = self.bytes_received;
            // The sequence number is the byte count mod 2^32 by definition.
            let sequence = self.bytes_received as u32;
            self.send(CSID_CONTROL, 0, &Message::Acknowledgement { sequence })?;
        }
        Ok(())
    }

    /// Bytes to write to the client, if any.
    pub fn poll_transmit(&mut self) -> Option<Bytes> {
        (!self.output.is_empty()).then(|| self.output.split().freeze())
    }

    /// The next event, if any.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// Accepts the pending publish request: the client gets Stream Begin and
    /// `NetStream.Publish.Start`, and media events follow.
    pub fn accept_publish(&mut self) -> Result<(), SessionError> {
        let Publish::Pending { stream_id, key } =
            std::mem::replace(&mut self.publish, Publish::Idle)
        else {
            return Err(SessionError::NoPendingPublish);
        };
        self.send(
            CSID_CONTROL,
            0,
            &Message::UserControl(UserControl::StreamBegin(stream_id)),
        )?;
        let description = format!("{key} is now published.");
        self.on_status(
            stream_id,
            "status",
            "NetStream.Publish.Start",
            &description,
            Some(&key),
        )?;
        self.publish = Publish::Live { stream_id, key };
        self.decoder.set_limits(self.config.chunk_limits);
        Ok(())
    }

    /// Refuses the pending publish request with an `onStatus` error, e.g.
    /// `NetStream.Publish.BadName` and a description the encoder may show.
    pub fn reject_publish(&mut self, code: &str, description: &str) -> Result<(), SessionError> {
        let Publish::Pending { stream_id, .. } = self.publish else {
            return Err(SessionError::NoPendingPublish);
        };
        self.publish = Publish::Idle;
        self.on_status(stream_id, "error", code, description, None)
    }

    /// Ends the accepted publish with an `onStatus` error, after
    /// `NetStream.Publish.Start`: for media the caller cannot use (a codec
    /// it cannot carry). `description` is what encoders show their user
    /// (ffmpeg prints it as `Server error: ...`); `code` is e.g.
    /// `NetStream.Failed`, on which librtmp-based encoders close. Media that
    /// follows is dropped and no [`Event::Unpublish`] is reported for this
    /// publish; the caller should close the connection once the status is
    /// written.
    pub fn fail_publish(&mut self, code: &str, description: &str) -> Result<(), SessionError> {
        let Publish::Live { stream_id, .. } = self.publish else {
            return Err(SessionError::NotPublishing);
        };
        self.publish = Publish::Idle;
        self.on_status(stream_id, "error", code, description, None)
    }

    /// Tells the publisher of the accepted publish how storing its media
    /// goes, with an `onStatus` on its stream. `Some(error)`: storing fails
    /// (`level: "warning"`, `NetStream.Publish.StorageFailing`, the
    /// description naming the error); the publish goes on, its segments
    /// kept as gaps meanwhile. `None`: storing works again (`level:
    /// "status"`, `NetStream.Publish.StorageResumed`). Encoders log such
    /// statuses (OBS, librtmp) or ignore them (ffmpeg): neither closes the
    /// connection on a warning.
    pub fn storage_status(&mut self, failing: Option<&str>) -> Result<(), SessionError> {
        let Publish::Live { stream_id, .. } = self.publish else {
            return Err(SessionError::NotPublishing);
        };
        match failing {
            Some(error) => {
                let description = format!(
                    "storing the stream failed: {error}; what cannot be stored is \
                     marked as a gap until storing works again"
                );
                let code = "NetStream.Publish.StorageFailing";
                self.on_status(stream_id, "warning", code, &description, None)
            }
            None => self.on_status(
                stream_id,
                "status",
                "NetStream.Publish.StorageResumed",
                "storing the stream works again",
                None,
            ),
        }
    }

    /// Queues a Ping Request; the client answers with the same timestamp.
    /// Does nothing before `connect`: during the handshake the client is
    /// not reading chunks yet.
    pub fn ping(&mut self, timestamp: u32) -> Result<(), SessionError> {
        if self.app.is_none() {
            return Ok(());
        }
        self.send(
            CSID_CONTROL,
            0,
            &Message::UserControl(UserControl::PingRequest(timestamp)),
        )
    }

    /// Whether the handshake is done (chunks are being read).
    pub fn handshake_done(&self) -> bool {
        matches!(self.phase, Phase::Chunks)
    }

    /// The application the client connected to, once it has.
    pub fn app(&self) -> Option<&str> {
        self.app.as_deref()
    }

    /// The stream key being published, once accepted.
    pub fn published_key(&self) -> Option<&str> {
        match &self.publish {
            Publish::Live { key, .. } => Some(key),
            _ => None,
        }
    }

    /// Total bytes received, handshake included.
    pub fn bytes_received(&self) -> u64 {
        self.bytes_received
    }

    fn push_event(&mut self, event: Event) -> Result<(), SessionError> {
        if self.events.len() >= self.config.max_pending_events {
            return Err(SessionError::EventQueueFull {
                limit: self.config.max_pending_events,
            });
        }
        self.events.push_back(event);
        Ok(())
    }

    fn send(&mut self, csid: u32, stream_id: u32, msg: &Message) -> Result<(), SessionError> {
        let (type_id, payload) = msg.encode();
        let raw = RawMessage {
            csid,
            timestamp: 0,
            type_id,
            stream_id,
            payload,
        };
        self.encoder.encode(&raw, &mut self.output)?;
        if self.output.len() > self.config.max_pending_output {
            return Err(SessionError::OutputFull {
                limit: self.config.max_pending_output,
            });
        }
        Ok(())
    }

    fn send_command(
        &mut self,
        csid: u32,
        stream_id: u32,
        name: &str,
        transaction_id: f64,
        object: Amf0Value,
        args: Vec<Amf0Value>,
    ) -> Result<(), SessionError> {
        let cmd = Command::new(name, transaction_id, object, args);
        self.send(csid, stream_id, &Message::Command(cmd))
    }

    fn on_status(
        &mut self,
        stream_id: u32,
        level: &str,
        code: &str,
        description: &str,
        details: Option<&str>,
    ) -> Result<(), SessionError> {
        let mut info = vec![
            ("level", Amf0Value::string(level)),
            ("code", Amf0Value::string(code)),
            ("description", Amf0Value::string(description)),
        ];
        if let Some(details) = details {
            info.push(("details", Amf0Value::string(details)));
        }
        self.send_command(
            CSID_STREAM,
            stream_id,
            "onStatus",
            0.0,
            Amf0Value::Null,
            vec![Amf0Value::object(info)],
        )
    }

    fn handle_message(&mut self, raw: RawMessage) -> Result<(), SessionError> {
        let stream_id = raw.stream_id;
        let msg = Message::decode(raw.type_id, raw.payload)
            .map_err(|source| SessionError::Message { stream_id, source });
        let msg = match msg {
            Ok(msg) => msg,
            // Metadata is informational: a malformed one costs the stream
            // nothing, so drop it rather than the connection.
            Err(err) if matches!(raw.type_id, types::DATA_AMF0 | types::DATA_AMF3) => {
                tracing::debug!(%err, "dropping malformed RTMP data message");
                return Ok(());
            }
            Err(err) => return Err(err),
        };
        match msg {
            Message::WindowAckSize(size) => self.peer_window = Some(size),
            Message::UserControl(UserControl::PingRequest(t)) => self.send(
                CSID_CONTROL,
                0,
                &Message::UserControl(UserControl::PingResponse(t)),
            )?,
            Message::Command(cmd) => self.handle_command(stream_id, cmd)?,
            Message::Data(values) => self.handle_data(values)?,
            Message::Audio(payload) => {
                self.handle_media(stream_id, MediaKind::Audio, raw.timestamp, payload)?
            }
            Message::Video(payload) => {
                self.handle_media(stream_id, MediaKind::Video, raw.timestamp, payload)?
            }
            Message::Aggregate(payload) => {
                self.handle_aggregate(stream_id, raw.timestamp, payload)?
            }
            // Set Chunk Size and Abort were applied by the decoder; the rest
            // needs no answer from an ingest server.
            _ => {}
        }
        Ok(())
    }

    fn handle_media(
        &mut self,
        stream_id: u32,
        kind: MediaKind,
        timestamp: u32,
        payload: Bytes,
    ) -> Result<(), SessionError> {
        match &self.publish {
            Publish::Live {
                stream_id: live, ..
            } if *live == stream_id => {}
            // Media before Publish.Start or on another stream is not part
            // of a publish we accepted.
            _ => {
                tracing::debug!(
                    stream_id,
                    ?kind,
                    "dropping media outside an accepted publish"
                );
                return Ok(());
            }
        }
        let timestamp = self.clock.extend(timestamp);
        self.push_event(Event::Media {
            kind,
            timestamp,
            payload,
        })
    }

    /// An aggregate message is FLV tags back to back (11-byte header, body,
    /// 4-byte back pointer); their timestamps are relative to the first
    /// tag's and rebased onto the message's.
    fn handle_aggregate(
        &mut self,
        stream_id: u32,
        timestamp: u32,
        mut payload: Bytes,
    ) -> Result<(), SessionError> {
        let mut base = None;
        while payload.len() >= 11 {
            let tag_type = payload[0];
            let size = u32::from_be_bytes([0, payload[1], payload[2], payload[3]]) as usize;
            let ts = u32::from_be_bytes([payload[7], payload[4], payload[5], payload[6]]);
            if payload.len() < 11 + size {
                break;
            }
            payload.advance(11);
            let body = payload.split_to(size);
            payload.advance(payload.len().min(4));
            let first = *base.get_or_insert(ts);
            let ts = timestamp.wrapping_add(ts.wrapping_sub(first));
            let kind = match tag_type {
                types::AUDIO => MediaKind::Audio,
                types::VIDEO => MediaKind::Video,
                _ => continue,
            };
            self.handle_media(stream_id, kind, ts, body)?;
        }
        Ok(())
    }

    fn handle_data(&mut self, values: Vec<Amf0Value>) -> Result<(), SessionError> {
        if matches!(self.publish, Publish::Idle) {
            return Ok(());
        }
        let mut values = values.into_iter();
        let mut name = values.next();
        if name.as_ref().and_then(Amf0Value::as_str) == Some("@setDataFrame") {
            name = values.next();
        }
        if name.as_ref().and_then(Amf0Value::as_str) != Some("onMetaData") {
            return Ok(());
        }
        match values.next() {
            Some(metadata @ (Amf0Value::Object(_) | Amf0Value::EcmaArray(_))) => {
                self.push_event(Event::Metadata { metadata })
            }
            _ => Ok(()),
        }
    }

    fn handle_command(&mut self, stream_id: u32, cmd: Command) -> Result<(), SessionError> {
        let txid = cmd.transaction_id;
        if cmd.name == "connect" {
            return self.handle_connect(cmd);
        }
        let Some(app) = self.app.clone() else {
            return Err(SessionError::OutOfOrder {
                name: clip(cmd.name),
                why: "expected connect first",
            });
        };
        match cmd.name.as_str() {
            "releaseStream" | "FCPublish" | "FCUnpublish" => {
                let key = cmd.arg_str(0).unwrap_or_default().to_owned();
                match cmd.name.as_str() {
                    "FCPublish" => self.send_command(
                        CSID_COMMAND,
                        0,
                        "onFCPublish",
                        0.0,
                        Amf0Value::Null,
                        vec![Amf0Value::object([
                            ("code", Amf0Value::string("NetStream.Publish.Start")),
                            ("description", Amf0Value::string(key.clone())),
                        ])],
                    )?,
                    "FCUnpublish" => self.unpublish(|p| p == &key)?,
                    _ => {}
                }
                if txid > 0.0 {
                    self.send_command(
                        CSID_COMMAND,
                        0,
                        "_result",
                        txid,
                        Amf0Value::Null,
                        vec![Amf0Value::Undefined],
                    )?;
                }
            }
            "createStream" => {
                if self.streams.len() >= self.config.max_streams as usize {
                    return self.send_error(txid, "NetConnection.Call.Failed", "too many streams");
                }
                let id = self.next_stream_id;
                // Stream id 0 is the connection itself; skip it on wrap.
                self.next_stream_id = self.next_stream_id.wrapping_add(1).max(1);
                self.streams.push(id);
                self.send_command(
                    CSID_COMMAND,
                    0,
                    "_result",
                    txid,
                    Amf0Value::Null,
                    vec![Amf0Value::Number(f64::from(id))],
                )?;
            }
            "publish" => {
                let key = cmd.arg_str(0).unwrap_or_default().to_owned();
                if !self.streams.contains(&stream_id) {
                    return self.on_status(
                        stream_id,
                        "error",
                        "NetStream.Publish.BadConnection",
                        "publish on a stream that was not created",
                        None,
                    );
                }
                if key.is_empty() || !matches!(self.publish, Publish::Idle) {
                    let why = if key.is_empty() {
                        "empty stream key"
                    } else {
                        "this connection is already publishing"
                    };
                    return self.on_status(
                        stream_id,
                        "error",
                        "NetStream.Publish.BadName",
                        why,
                        None,
                    );
                }
                self.publish = Publish::Pending {
                    stream_id,
                    key: key.clone(),
                };
                self.push_event(Event::PublishRequest {
                    app,
                    key,
                    stream_id,
                })?;
            }
            "deleteStream" => {
                let id = cmd
                    .args
                    .first()
                    .and_then(Amf0Value::as_number)
                    .unwrap_or(0.0) as u32;
                self.streams.retain(|&s| s != id);
                self.unpublish_stream(id)?;
            }
            "closeStream" => self.unpublish_stream(stream_id)?,
            // Answers to our own calls (none yet) and bandwidth notices.
            "_result" | "_error" | "onStatus" | "onBWDone" | "_checkbw" => {}
            _ if txid > 0.0 => {
                let description = format!("Method not found ({}).", cmd.name);
                self.send_error(txid, "NetConnection.Call.Failed", &description)?;
            }
            name => tracing::debug!(name, "ignoring RTMP command"),
        }
        Ok(())
    }

    fn handle_connect(&mut self, cmd: Command) -> Result<(), SessionError> {
        if self.app.is_some() {
            return Err(SessionError::OutOfOrder {
                name: clip(cmd.name),
                why: "connect was already received",
            });
        }
        let field = |name: &str| {
            cmd.object
                .get(name)
                .and_then(Amf0Value::as_str)
                .map(str::to_owned)
        };
        let app = field("app")
            .unwrap_or_default()
            .trim_end_matches('/')
            .to_owned();
        let limit = self.config.max_app_len;
        if app.len() > limit {
            let len = app.len();
            let description = format!("application name of {len} bytes; at most {limit}");
            self.send_error(
                cmd.transaction_id,
                "NetConnection.Connect.Rejected",
                &description,
            )?;
            return Err(SessionError::AppTooLong { len, limit });
        }
        let (tc_url, flash_ver) = (field("tcUrl"), field("flashVer"));
        self.app = Some(app.clone());

        self.send(
            CSID_CONTROL,
            0,
            &Message::WindowAckSize(self.config.window_ack_size),
        )?;
        self.send(
            CSID_CONTROL,
            0,
            &Message::SetPeerBandwidth {
                size: self.config.peer_bandwidth,
                limit: 2,
            },
        )?;
        self.encoder.set_chunk_size(
            self.config.chunk_size,
            self.config.chunk_limits.max_chunk_size,
            &mut self.output,
        )?;
        self.send_command(
            CSID_COMMAND,
            0,
            "_result",
            cmd.transaction_id,
            Amf0Value::object([
                ("fmsVer", Amf0Value::string("FMS/3,0,1,123")),
                ("capabilities", Amf0Value::Number(31.0)),
            ]),
            vec![Amf0Value::object([
                ("level", Amf0Value::string("status")),
                ("code", Amf0Value::string("NetConnection.Connect.Success")),
                ("description", Amf0Value::string("Connection succeeded.")),
                ("objectEncoding", Amf0Value::Number(0.0)),
            ])],
        )?;
        self.push_event(Event::Connect {
            app,
            tc_url,
            flash_ver,
        })
    }

    fn send_error(&mut self, txid: f64, code: &str, description: &str) -> Result<(), SessionError> {
        self.send_command(
            CSID_COMMAND,
            0,
            "_error",
            txid,
            Amf0Value::Null,
            vec![Amf0Value::object([
                ("level", Amf0Value::string("error")),
                ("code", Amf0Value::string(code)),
                ("description", Amf0Value::string(description)),
            ])],
        )
    }

    fn unpublish_stream(&mut self, id: u32) -> Result<(), SessionError> {
        match &self.publish {
            Publish::Live { stream_id, .. } | Publish::Pending { stream_id, .. }
                if *stream_id == id =>
            {
                self.unpublish(|_| true)
            }
            _ => Ok(()),
        }
    }

    /// Ends the publish if its key matches; an Unpublish event is only
    /// reported for a publish that was accepted.
    fn unpublish(&mut self, matches: impl Fn(&String) -> bool) -> Result<(), SessionError> {
        match std::mem::replace(&mut self.publish, Publish::Idle) {
            Publish::Live { key, .. } if matches(&key) => self.push_event(Event::Unpublish { key }),
            Publish::Pending { key, .. } if matches(&key) => Ok(()),
            other => {
                self.publish = other;
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests;
