//! Typed RTMP messages: what a [`RawMessage`](super::RawMessage) payload means.
//!
//! Flow: the session decodes each reassembled message with
//! [`Message::decode`] and builds its answers as [`Message`]s, turned back
//! into payloads by [`Message::encode`]. Protocol control (types 1-6), user
//! control events (type 4), audio (8), video (9), AMF0 data (18) and
//! command (20) messages are typed; AMF3-flavoured data and commands (15,
//! 17) are accepted when their body is AMF0 behind the one-byte AMF3 prefix,
//! as Flash clients send them. Everything else is kept as raw bytes.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use thiserror::Error;

use super::amf::{self, Amf0Value, AmfError};

/// Message type ids (RTMP spec section 5.4 and 7.1).
pub mod types {
    /// Set Chunk Size.
    pub const SET_CHUNK_SIZE: u8 = 1;
    /// Abort Message.
    pub const ABORT: u8 = 2;
    /// Acknowledgement.
    pub const ACKNOWLEDGEMENT: u8 = 3;
    /// User Control Message.
    pub const USER_CONTROL: u8 = 4;
    /// Window Acknowledgement Size.
    pub const WINDOW_ACK_SIZE: u8 = 5;
    /// Set Peer Bandwidth.
    pub const SET_PEER_BANDWIDTH: u8 = 6;
    /// Audio data (an FLV audio tag body).
    pub const AUDIO: u8 = 8;
    /// Video data (an FLV video tag body).
    pub const VIDEO: u8 = 9;
    /// Data message, AMF3.
    pub const DATA_AMF3: u8 = 15;
    /// Command message, AMF3.
    pub const COMMAND_AMF3: u8 = 17;
    /// Data message, AMF0.
    pub const DATA_AMF0: u8 = 18;
    /// Command message, AMF0.
    pub const COMMAND_AMF0: u8 = 20;
    /// Aggregate message: FLV tags back to back.
    pub const AGGREGATE: u8 = 22;
}

/// Why a message payload could not be understood.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum MessageError {
    /// A control message with a payload of the wrong size.
    #[error("message type {type_id}: payload of {got} bytes, expected {expected}")]
    BadLength {
        /// Message type.
        type_id: u8,
        /// Bytes expected (at least).
        expected: usize,
        /// Bytes received.
        got: usize,
    },
    /// A command or data message whose AMF0 body is malformed.
    #[error("message type {type_id}: {source}")]
    Amf {
        /// Message type.
        type_id: u8,
        /// The AMF0 error.
        source: AmfError,
    },
    /// A command whose first value is not a string.
    #[error("command message without a command name")]
    NoCommandName,
    /// An AMF3 message whose body is real AMF3, which we do not decode.
    #[error("message type {0} carries AMF3 values; connect with objectEncoding 0")]
    Amf3(u8),
}

/// User Control Message events (RTMP spec section 7.1.7).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UserControl {
    /// A stream became functional.
    StreamBegin(u32),
    /// Playback of a stream ended.
    StreamEof(u32),
    /// A stream has no more data for now.
    StreamDry(u32),
    /// The client's buffer length for a stream.
    SetBufferLength {
        /// Message stream id.
        stream_id: u32,
        /// Buffer length in milliseconds.
        millis: u32,
    },
    /// A stream is a recorded one.
    StreamIsRecorded(u32),
    /// Liveness probe carrying a timestamp to be echoed.
    PingRequest(u32),
    /// Answer to a ping, echoing its timestamp.
    PingResponse(u32),
    /// An event type we do not interpret.
    Other {
        /// Event type.
        event: u16,
        /// Event data.
        data: Bytes,
    },
}

/// An AMF0 command: `name`, transaction id, command object, arguments.
#[derive(Debug, Clone, PartialEq)]
pub struct Command {
    /// Command name, e.g. `connect` or `publish`.
    pub name: String,
    /// Transaction id; 0 for commands that expect no answer.
    pub transaction_id: f64,
    /// The command object (`Null` for most commands after `connect`).
    pub object: Amf0Value,
    /// Remaining arguments.
    pub args: Vec<Amf0Value>,
}

impl Command {
    /// A command from its parts.
    pub fn new(name: &str, transaction_id: f64, object: Amf0Value, args: Vec<Amf0Value>) -> Self {
        Self {
            name: name.to_owned(),
            transaction_id,
            object,
            args,
        }
    }

    /// The `i`th argument as a string, if there is one.
    pub fn arg_str(&self, i: usize) -> Option<&str> {
        self.args.get(i).and_then(Amf0Value::as_str)
    }
}

/// A decoded RTMP message.
#[derive(Debug, Clone, PartialEq)]
pub enum Message {
    /// Set Chunk Size (already applied by the chunk decoder).
    SetChunkSize(u32),
    /// Abort the message in progress on a chunk stream.
    Abort {
        /// The chunk stream.
        csid: u32,
    },
    /// Acknowledgement of bytes received.
    Acknowledgement {
        /// Total bytes received so far (wrapping).
        sequence: u32,
    },
    /// A user control event.
    UserControl(UserControl),
    /// Window Acknowledgement Size: ack after this many bytes.
    WindowAckSize(u32),
    /// Set Peer Bandwidth.
    SetPeerBandwidth {
        /// Window size in bytes.
        size: u32,
        /// Limit type: 0 hard, 1 soft, 2 dynamic.
        limit: u8,
    },
    /// Audio data: an FLV audio tag body.
    Audio(Bytes),
    /// Video data: an FLV video tag body.
    Video(Bytes),
    /// An AMF0 command.
    Command(Command),
    /// An AMF0 data message (e.g. `@setDataFrame`).
    Data(Vec<Amf0Value>),
    /// An aggregate message (FLV tags back to back).
    Aggregate(Bytes),
    /// A message type we do not interpret (shared objects and the like).
    Other {
        /// Message type.
        type_id: u8,
        /// Payload.
        payload: Bytes,
    },
}

fn be_u32(type_id: u8, payload: &[u8]) -> Result<u32, MessageError> {
    let b: [u8; 4] =
        payload
            .get(..4)
            .and_then(|b| b.try_into().ok())
            .ok_or(MessageError::BadLength {
                type_id,
                expected: 4,
                got: payload.len(),
            })?;
    Ok(u32::from_be_bytes(b))
}

impl Message {
    /// Interprets the payload of a message of type `type_id`.
    pub fn decode(type_id: u8, payload: Bytes) -> Result<Self, MessageError> {
        use types::*;
        Ok(match type_id {
            SET_CHUNK_SIZE => Self::SetChunkSize(be_u32(type_id, &payload)? & 0x7FFF_FFFF),
            ABORT => Self::Abort {
                csid: be_u32(type_id, &payload)?,
            },
            ACKNOWLEDGEMENT => Self::Acknowledgement {
                sequence: be_u32(type_id, &payload)?,
            },
            WINDOW_ACK_SIZE => Self::WindowAckSize(be_u32(type_id, &payload)?),
            SET_PEER_BANDWIDTH => {
                let size = be_u32(type_id, &payload)?;
                // The limit type byte is missing from some old encoders.
                let limit = payload.get(4).copied().unwrap_or(2);
                Self::SetPeerBandwidth { size, limit }
            }
            USER_CONTROL => Self::UserControl(decode_user_control(payload)?),
            AUDIO => Self::Audio(payload),
            VIDEO => Self::Video(payload),
            AGGREGATE => Self::Aggregate(payload),
            DATA_AMF0 => Self::Data(decode_amf(type_id, &payload)?),
            COMMAND_AMF0 => Self::Command(decode_command(type_id, &payload)?),
            DATA_AMF3 | COMMAND_AMF3 => {
                // Flash puts a 0 byte (AMF3 "switch to AMF0" convention) in
                // front of AMF0 bodies; anything else is real AMF3.
                match payload.first() {
                    Some(0) => {
                        let body = &payload[1..];
                        if type_id == DATA_AMF3 {
                            Self::Data(decode_amf(type_id, body)?)
                        } else {
                            Self::Command(decode_command(type_id, body)?)
                        }
                    }
                    _ => return Err(MessageError::Amf3(type_id)),
                }
            }
            _ => Self::Other { type_id, payload },
        })
    }

    /// The message type id and payload to send.
    pub fn encode(&self) -> (u8, Bytes) {
        use types::*;
        let mut out = BytesMut::new();
        let type_id = match self {
            Self::SetChunkSize(size) => {
                out.put_u32(*size);
                SET_CHUNK_SIZE
            }
            Self::Abort { csid } => {
                out.put_u32(*csid);
                ABORT
            }
            Self::Acknowledgement { sequence } => {
                out.put_u32(*sequence);
                ACKNOWLEDGEMENT
            }
            Self::WindowAckSize(size) => {
                out.put_u32(*size);
                WINDOW_ACK_SIZE
            }
            Self::SetPeerBandwidth { size, limit } => {
                out.put_u32(*size);
                out.put_u8(*limit);
                SET_PEER_BANDWIDTH
            }
            Self::UserControl(event) => {
                encode_user_control(event, &mut out);
                USER_CONTROL
            }
            Self::Audio(p) => return (AUDIO, p.clone()),
            Self::Video(p) => return (VIDEO, p.clone()),
            Self::Aggregate(p) => return (AGGREGATE, p.clone()),
            Self::Other { type_id, payload } => return (*type_id, payload.clone()),
            Self::Data(values) => {
                amf::encode_all(values, &mut out);
                DATA_AMF0
            }
            Self::Command(c) => {
                Amf0Value::String(c.name.clone()).encode(&mut out);
                Amf0Value::Number(c.transaction_id).encode(&mut out);
                c.object.encode(&mut out);
                amf::encode_all(&c.args, &mut out);
                COMMAND_AMF0
            }
        };
        (type_id, out.freeze())
    }
}

fn decode_amf(type_id: u8, body: &[u8]) -> Result<Vec<Amf0Value>, MessageError> {
    amf::decode_all(body).map_err(|source| MessageError::Amf { type_id, source })
}

fn decode_command(type_id: u8, body: &[u8]) -> Result<Command, MessageError> {
    let mut values = decode_amf(type_id, body)?.into_iter();
    let Some(Amf0Value::String(name)) = values.next() else {
        return Err(MessageError::NoCommandName);
    };
    // Some clients leave out the transaction id or command object of
    // notifications; treat missing parts as 0 and null.
    let transaction_id = values.next().and_then(|v| v.as_number()).unwrap_or(0.0);
    let object = values.next().unwrap_or(Amf0Value::Null);
    Ok(Command {
        name,
        transaction_id,
        object,
        args: values.collect(),
    })
}

fn decode_user_control(mut payload: Bytes) -> Result<UserControl, MessageError> {
    let short = |expected: usize, got: usize| MessageError::BadLength {
        type_id: types::USER_CONTROL,
        expected,
        got,
    };
    if payload.len() < 2 {
        return Err(short(2, payload.len()));
    }
    let event = payload.get_u16();
    let needs = if event == 3 { 8 } else { 4 };
    if event <= 7 && event != 5 && payload.len() < needs {
        return Err(short(needs + 2, payload.len() + 2));
    }
    Ok(match event {
        0 => UserControl::StreamBegin(payload.get_u32()),
        1 => UserControl::StreamEof(payload.get_u32()),
        2 => UserControl::StreamDry(payload.get_u32()),
        3 => UserControl::SetBufferLength {
            stream_id: payload.get_u32(),
            millis: payload.get_u32(),
        },
        4 => UserControl::StreamIsRecorded(payload.get_u32()),
        6 => UserControl::PingRequest(payload.get_u32()),
        7 => UserControl::PingResponse(payload.get_u32()),
        event => UserControl::Other {
            event,
            data: payload,
        },
    })
}

fn encode_user_control(event: &UserControl, out: &mut BytesMut) {
    let (kind, a) = match event {
        UserControl::StreamBegin(id) => (0, *id),
        UserControl::StreamEof(id) => (1, *id),
        UserControl::StreamDry(id) => (2, *id),
        UserControl::SetBufferLength { stream_id, millis } => {
            out.put_u16(3);
            out.put_u32(*stream_id);
            out.put_u32(*millis);
            return;
        }
        UserControl::StreamIsRecorded(id) => (4, *id),
        UserControl::PingRequest(t) => (6, *t),
        UserControl::PingResponse(t) => (7, *t),
        UserControl::Other { event, data } => {
            out.put_u16(*event);
            out.put_slice(data);
            return;
        }
    };
    out.put_u16(kind);
    out.put_u32(a);
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn round_trip(msg: Message) {
        let (type_id, payload) = msg.encode();
        assert_eq!(Message::decode(type_id, payload).unwrap(), msg);
    }

    #[test]
    fn control_round_trips() {
        round_trip(Message::SetChunkSize(4096));
        round_trip(Message::Abort { csid: 5 });
        round_trip(Message::Acknowledgement { sequence: 7 });
        round_trip(Message::WindowAckSize(2_500_000));
        round_trip(Message::SetPeerBandwidth {
            size: 2_500_000,
            limit: 2,
        });
        for ev in [
            UserControl::StreamBegin(1),
            UserControl::SetBufferLength {
                stream_id: 1,
                millis: 3000,
            },
            UserControl::PingRequest(99),
            UserControl::PingResponse(99),
        ] {
            round_trip(Message::UserControl(ev));
        }
        round_trip(Message::Command(Command::new(
            "createStream",
            2.0,
            Amf0Value::Null,
            vec![],
        )));
    }

    #[test]
    fn literals() {
        // Ping request for timestamp 0x01020304.
        assert_eq!(
            Message::decode(4, Bytes::from_static(&[0, 6, 1, 2, 3, 4])).unwrap(),
            Message::UserControl(UserControl::PingRequest(0x0102_0304))
        );
        assert!(matches!(
            Message::decode(4, Bytes::from_static(&[0, 6, 1])),
            Err(MessageError::BadLength { .. })
        ));
        // AMF3 command with the AMF0 body behind a zero byte.
        let (_, body) =
            Message::Command(Command::new("play", 0.0, Amf0Value::Null, vec![])).encode();
        let mut amf3 = vec![0];
        amf3.extend_from_slice(&body);
        assert!(matches!(
            Message::decode(17, amf3.into()).unwrap(),
            Message::Command(Command { name, .. }) if name == "play"
        ));
        assert_eq!(
            Message::decode(20, Bytes::from_static(&[0x05])),
            Err(MessageError::NoCommandName)
        );
    }

    proptest! {
        #[test]
        fn decode_never_panics(type_id in any::<u8>(), bytes in prop::collection::vec(any::<u8>(), 0..64)) {
            let _ = Message::decode(type_id, bytes.into());
        }
    }
}
