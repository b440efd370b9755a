//! RTMP ingest: the protocol, pure (bytes in, bytes and events out, no
//! sockets), and the server that puts it on sockets.
//!
//! A publisher (OBS, ffmpeg, a hardware encoder) talks to us like this:
//!
//! ```text
//! client                                server ([`Session`])
//!   C0 C1            ---------------->  handshake::ServerHandshake
//!                    <----------------  S0 S1 S2
//!   C2               ---------------->  (handshake done; chunk stream from here)
//!   connect(app)     ---------------->  Event::Connect
//!                    <----------------  Window Ack Size, Set Peer Bandwidth,
//!                                       Set Chunk Size, _result(Connect.Success)
//!   releaseStream, FCPublish(key) ---->  _result, onFCPublish
//!   createStream     ---------------->  _result(stream id)
//!   publish(key)     ---------------->  Event::PublishRequest { app, key }
//!                                       caller: Session::accept_publish / reject_publish
//!                    <----------------  Stream Begin, onStatus(NetStream.Publish.Start)
//!   @setDataFrame    ---------------->  Event::Metadata
//!   audio / video    ---------------->  Event::Media { kind, timestamp, payload }
//!                                       (media the caller cannot carry:
//!                                       Session::fail_publish)
//!                    <----------------  onStatus(error, NetStream.Failed, why)
//!   FCUnpublish, deleteStream -------->  Event::Unpublish
//! ```
//!
//! Layers, bottom up: [`handshake`] (C0-C2/S0-S2, plain and digest),
//! [`chunk`] (chunk stream framing and message reassembly), [`amf`] (AMF0
//! values), [`message`] (typed protocol control, user control, command and
//! data messages) and [`session`] (the server-side state machine that ties
//! them together). [`server`] is the I/O edge: it owns the sockets, drives
//! a [`Session`] per connection with `handle_input`, `poll_transmit` and
//! `poll_event`, and hands demuxed frames to the stream manager.
//!
//! Written by hand rather than on `scuffle-rtmp`: its session owns a tokio
//! stream and drives the exchange itself, so it cannot be tested with byte
//! literals or driven from our own task; its AMF0 and FLV crates pull in a
//! workspace-hack crate and codec parsers we do not need. The wire format is
//! small and well documented, so owning it costs little.

pub mod amf;
pub mod chunk;
pub mod handshake;
pub mod message;
pub mod server;
pub mod session;

pub use amf::{Amf0Value, AmfError};
pub use chunk::{ChunkDecoder, ChunkEncoder, ChunkError, RawMessage};
pub use handshake::{HandshakeError, HandshakeStatus, ServerHandshake};
pub use message::{Command, Message, MessageError, UserControl};
pub use session::{Event, MediaKind, Session, SessionConfig, SessionError};
