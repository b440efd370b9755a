//! The server side of the RTMP handshake.
//!
//! ```text
//! client                      server
//!   C0 (version 3) C1 (1536) ->
//!                           <- S0 S1 S2
//!   C2 (1536)               ->  done; any bytes after C2 are chunk stream
//! ```
//!
//! Two flavours exist. The plain one (the RTMP spec) only echoes: S2 is a
//! copy of C1. The digest one (Flash Player 9 "complex" handshake, which
//! ffmpeg and librtmp-based encoders send when C1 carries a non-zero version)
//! hides an HMAC-SHA256 digest in C1 at an offset derived from C1 itself,
//! under one of two schemes; such clients check that S1 and S2 carry digests
//! keyed with the Flash Media Server key. We detect the digest, answer in the
//! same scheme, and fall back to the plain answer when there is none. C2 is
//! not checked: clients fill it inconsistently, and it proves nothing we use.
//!
//! Encrypted RTMPE (C0 = 6 or 8) is refused.

use bytes::{BufMut, Bytes, BytesMut};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use thiserror::Error;

/// Size of C1, C2, S1 and S2.
pub const PACKET_LEN: usize = 1536;
/// The only RTMP version we speak (unencrypted).
pub const RTMP_VERSION: u8 = 3;

const DIGEST_LEN: usize = 32;
/// The version field we write into S1, as Flash Media Server 3 does; digest
/// clients look for a non-zero value here.
const SERVER_VERSION: [u8; 4] = [0x0D, 0x0E, 0x0A, 0x0D];

/// "Genuine Adobe Flash Player 001" followed by 32 constant bytes.
const FP_KEY: [u8; 62] = *b"Genuine Adobe Flash Player 001\
\xF0\xEE\xC2\x4A\x80\x68\xBE\xE8\x2E\x00\xD0\xD1\x02\x9E\x7E\x57\
\x6E\xEC\x5D\x2D\x29\x80\x6F\xAB\x93\xB8\xE6\x36\xCF\xEB\x31\xAE";
/// "Genuine Adobe Flash Media Server 001" followed by the same 32 bytes.
const FMS_KEY: [u8; 68] = *b"Genuine Adobe Flash Media Server 001\
\xF0\xEE\xC2\x4A\x80\x68\xBE\xE8\x2E\x00\xD0\xD1\x02\x9E\x7E\x57\
\x6E\xEC\x5D\x2D\x29\x80\x6F\xAB\x93\xB8\xE6\x36\xCF\xEB\x31\xAE";
/// C1 digests are keyed with the text part of the player key only.
const FP_KEY_TEXT_LEN: usize = 30;
/// S1 digests are keyed with the text part of the server key only.
const FMS_KEY_TEXT_LEN: usize = 36;

/// Why the handshake failed.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum HandshakeError {
    /// C0 asked for a version other than 3 (6 and 8 are encrypted RTMPE).
    #[error("client asked for RTMP version {0}; only plain RTMP (3) is supported, not RTMPE")]
    UnsupportedVersion(u8),
    /// `feed` was called after the handshake completed.
    #[error("handshake already complete")]
    AlreadyDone,
}

/// Where the handshake stands after a `feed`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HandshakeStatus {
    /// More bytes from the client are needed.
    InProgress,
    /// C2 arrived. `leftover` holds bytes after C2: the start of the chunk
    /// stream, which encoders send without waiting.
    Done {
        /// Bytes that followed C2.
        leftover: Bytes,
    },
}

/// Which digest layout a C1 used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DigestScheme {
    /// Digest offset from bytes 8..12, digest in the first half.
    Scheme0,
    /// Digest offset from bytes 772..776, digest in the second half.
    Scheme1,
}

impl DigestScheme {
    /// The digest's offset within a 1536-byte packet.
    fn offset(self, packet: &[u8]) -> usize {
        let (base, add) = match self {
            Self::Scheme0 => (8, 12),
            Self::Scheme1 => (772, 776),
        };
        let sum: usize = packet[base..base + 4].iter().map(|&b| usize::from(b)).sum();
        sum % 728 + add
    }
}

#[derive(Debug)]
enum State {
    /// Waiting for C0 and C1.
    C0C1,
    /// S0-S2 are out; waiting for C2.
    C2,
    Done,
}

/// Server handshake state machine: feed client bytes, send what it writes.
#[derive(Debug)]
pub struct ServerHandshake {
    state: State,
    /// Bytes of C0+C1 or C2 received so far; never more than 1537.
    buf: BytesMut,
    random: Box<[u8; PACKET_LEN]>,
    scheme: Option<DigestScheme>,
}

impl ServerHandshake {
    /// A handshake whose S1 and S2 are filled from `random` (the caller's
    /// RNG; the bytes need not be secret, only unpredictable enough that a
    /// client cannot tell us from an echo).
    pub fn new(random: [u8; PACKET_LEN]) -> Self {
        Self {
            state: State::C0C1,
            buf: BytesMut::with_capacity(PACKET_LEN + 1),
            random: Box::new(random),
            scheme: None,
        }
    }

    /// The digest scheme the client used, once C1 has been read; `None` for
    /// a plain handshake.
    pub fn scheme(&self) -> Option<DigestScheme> {
        self.scheme
    }

    /// Feeds bytes from the client, appending anything to send to `out`.
    pub fn feed(
        &mut self,
        mut input: &[u8],
        out: &mut BytesMut,
    ) -> Result<HandshakeStatus, HandshakeError> {
        loop {
            match self.state {
                State::C0C1 => {
                    if let (0, Some(&version)) = (self.buf.len(), input.first()) {
                        if version != RTMP_VERSION {
                            return Err(HandshakeError::UnsupportedVersion(version));
                        }
                    }
                    input = self.fill(input, 1 + PACKET_LEN);
                    if self.buf.len() < 1 + PACKET_LEN {
                        return Ok(HandshakeStatus::InProgress);
                    }
                    let c1 = self.buf.split().freeze();
                    self.respond(&c1[1..], out);
                    self.state = State::C2;
                }
                State::C2 => {
                    input = self.fill(input, PACKET_LEN);
                    if self.buf.len() < PACKET_LEN {
                        return Ok(HandshakeStatus::InProgress);
                    }
                    self.buf = BytesMut::new();
                    self.state = State::Done;
                    return Ok(HandshakeStatus::Done {
                        leftover: Bytes::copy_from_slice(input),
                    });
                }
                State::Done => return Err(HandshakeError::AlreadyDone),
            }
        }
    }

    /// Moves bytes from `input` into the buffer up to `want`; returns the
    /// rest.
    fn fill<'a>(&mut self, input: &'a [u8], want: usize) -> &'a [u8] {
        let n = (want - self.buf.len()).min(input.len());
        self.buf.extend_from_slice(&input[..n]);
        &input[n..]
    }

    fn respond(&mut self, c1: &[u8], out: &mut BytesMut) {
        out.reserve(1 + 2 * PACKET_LEN);
        out.put_u8(RTMP_VERSION);
        let client_digest = [DigestScheme::Scheme0, DigestScheme::Scheme1]
            .into_iter()
            .find_map(|scheme| {
                let offset = scheme.offset(c1);
                let expected = digest(&FP_KEY[..FP_KEY_TEXT_LEN], c1, offset);
                (c1[offset..offset + DIGEST_LEN] == expected).then_some((scheme, expected))
            });
        let Some((scheme, client_digest)) = client_digest else {
            // Plain: S1 is time 0, zero, random; S2 echoes C1.
            let mut s1 = *self.random;
            s1[..8].fill(0);
            out.put_slice(&s1);
            out.put_slice(c1);
            return;
        };
        self.scheme = Some(scheme);

        let mut s1 = *self.random;
        s1[..4].fill(0);
        s1[4..8].copy_from_slice(&SERVER_VERSION);
        let offset = scheme.offset(&s1);
        let d = digest(&FMS_KEY[..FMS_KEY_TEXT_LEN], &s1, offset);
        s1[offset..offset + DIGEST_LEN].copy_from_slice(&d);
        out.put_slice(&s1);

        // S2: random bytes whose last 32 are an HMAC keyed with an HMAC of
        // the client's digest, proving we saw C1.
        let mut s2 = *self.random;
        s2.reverse();
        let key = hmac(&FMS_KEY, &[&client_digest]);
        let sig = hmac(&key, &[&s2[..PACKET_LEN - DIGEST_LEN]]);
        s2[PACKET_LEN - DIGEST_LEN..].copy_from_slice(&sig);
        out.put_slice(&s2);
    }
}

fn hmac(key: &[u8], parts: &[&[u8]]) -> [u8; DIGEST_LEN] {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes keys of any length");
    for part in parts {
        mac.update(part);
    }
    mac.finalize().into_bytes().into()
}

/// The digest of `packet` without the 32 bytes at `offset`.
fn digest(key: &[u8], packet: &[u8], offset: usize) -> [u8; DIGEST_LEN] {
    hmac(key, &[&packet[..offset], &packet[offset + DIGEST_LEN..]])
}

/// Builds a digest-bearing C1 the way ffmpeg does, for tests.
#[cfg(test)]
pub(crate) fn client_c1(scheme: DigestScheme, fill: u8) -> [u8; PACKET_LEN] {
    let mut c1 = [fill; PACKET_LEN];
    c1[..4].fill(0);
    c1[4..8].copy_from_slice(&[9, 0, 124, 2]);
    let offset = scheme.offset(&c1);
    let d = digest(&FP_KEY[..FP_KEY_TEXT_LEN], &c1, offset);
    c1[offset..offset + DIGEST_LEN].copy_from_slice(&d);
    c1
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(c1: &[u8; PACKET_LEN], split: usize) -> (ServerHandshake, BytesMut, Bytes) {
        let mut client = vec![RTMP_VERSION];
        client.extend_from_slice(c1);
        client.extend_from_slice(&[0x55; PACKET_LEN]);
        client.extend_from_slice(b"chunk");
        let mut hs = ServerHandshake::new([0xA5; PACKET_LEN]);
        let mut out = BytesMut::new();
        let mut pieces = client.chunks(split);
        for piece in pieces.by_ref() {
            if let HandshakeStatus::Done { leftover } = hs.feed(piece, &mut out).unwrap() {
                // Bytes after C2 belong to the chunk stream, whichever read
                // they arrived in.
                let rest: Vec<u8> = leftover
                    .iter()
                    .copied()
                    .chain(pieces.flatten().copied())
                    .collect();
                return (hs, out, rest.into());
            }
        }
        panic!("handshake did not finish");
    }

    #[test]
    fn plain_echoes_c1() {
        let c1 = [7u8; PACKET_LEN];
        for split in [1, 100, 5000] {
            let (hs, out, leftover) = run(&c1, split);
            assert_eq!(hs.scheme(), None);
            assert_eq!(out.len(), 1 + 2 * PACKET_LEN);
            assert_eq!(out[0], 3);
            assert_eq!(&out[1 + PACKET_LEN..], &c1[..]);
            assert_eq!(&leftover[..], b"chunk");
        }
    }

    #[test]
    fn digest_schemes_answered_with_digests() {
        for scheme in [DigestScheme::Scheme0, DigestScheme::Scheme1] {
            let c1 = client_c1(scheme, 0x42);
            let (hs, out, _) = run(&c1, 700);
            assert_eq!(hs.scheme(), Some(scheme));
            // Verify S1 and S2 as a digest client (ffmpeg) does.
            let s1 = &out[1..1 + PACKET_LEN];
            let offset = scheme.offset(s1);
            assert_eq!(
                s1[offset..offset + DIGEST_LEN],
                digest(&FMS_KEY[..FMS_KEY_TEXT_LEN], s1, offset)
            );
            let s2 = &out[1 + PACKET_LEN..];
            let client_offset = scheme.offset(&c1);
            let key = hmac(&FMS_KEY, &[&c1[client_offset..client_offset + DIGEST_LEN]]);
            assert_eq!(
                s2[PACKET_LEN - DIGEST_LEN..],
                hmac(&key, &[&s2[..PACKET_LEN - DIGEST_LEN]])
            );
        }
    }

    #[test]
    fn refuses_rtmpe_and_reuse() {
        let mut hs = ServerHandshake::new([0; PACKET_LEN]);
        assert_eq!(
            hs.feed(&[6], &mut BytesMut::new()),
            Err(HandshakeError::UnsupportedVersion(6))
        );
        let (mut hs, _, _) = run(&[1; PACKET_LEN], 4000);
        assert_eq!(
            hs.feed(&[0], &mut BytesMut::new()),
            Err(HandshakeError::AlreadyDone)
        );
    }
}
