//! Part announcements: a low-latency stream's publisher tells the peers
//! that follow its name of each part the moment it is stored, signed with
//! the stream's IPNS key, so that only the publisher can make one.
//!
//! ```text
//! origin: part stored --> Media --> Announcement { name, sequence, timestamp, media }
//!     --> encode: payload (JSON) || Ed25519 signature over DOMAIN || payload
//!     --> gossipsub topic /meshcast/parts/<base64url(/ipns/<mh>)>
//! mirror: bytes --> decode(name of the topic): size, signature by the name's
//!     key, the name inside --> Replay::check (sequences only grow) --> Media
//! ```
//!
//! An IPNS record says where the stream's site is, once per segment; an
//! announcement says which part (or closed segment) exists, once per part,
//! and carries nothing a mirror could not check: every CID it names is
//! fetched by Bitswap and hash-checked. The signature covers a domain
//! prefix, so no other message signed with the key (an IPNS record's
//! `ipns-signature:` data) is ever an announcement. Sequence numbers start
//! from the publisher's clock in microseconds and only grow within a run,
//! so a restarted publisher goes on above its last one; a receiver takes
//! only sequences above the last it took. Pure: bytes and keys in, values
//! out.

use super::Name;
use cid::Cid;
use libp2p::identity::{KeyType, Keypair};
use serde::{Deserialize, Serialize};
use thiserror::Error;

/// Largest announcement sent or taken, signature included.
pub const MAX_ANNOUNCEMENT: usize = 1024;
/// What every signature covers before the payload.
pub const DOMAIN: &[u8] = b"meshcast-part-announcement:";
/// An Ed25519 signature's length.
const SIGNATURE_LEN: usize = 64;
/// Longest session id taken (origins use a UTC time stamp).
const MAX_SESSION_LEN: usize = 64;
/// The payload's format version.
const VERSION: u32 = 1;

/// Why bytes are not a valid announcement for a name.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum AnnounceError {
    /// Longer than [`MAX_ANNOUNCEMENT`].
    #[error("announcement of {0} bytes is longer than {MAX_ANNOUNCEMENT}")]
    TooLong(usize),
    /// Too short to hold a signature.
    #[error("announcement of {0} bytes has no room for a signature")]
    TooShort(usize),
    /// The name does not inline an Ed25519 key.
    #[error("{0} is not the name of an Ed25519 key")]
    NotEd25519(Name),
    /// The signature is not the name's key's.
    #[error("the signature is not by the key of {0}")]
    BadSignature(Name),
    /// The payload does not parse.
    #[error("malformed announcement: {0}")]
    Malformed(String),
    /// Signed by the key, but about another name.
    #[error("the announcement is about {found}, not {expected}")]
    WrongName {
        /// The name asked for.
        expected: Name,
        /// The name inside.
        found: String,
    },
    /// Not newer than the last one taken.
    #[error("sequence {sequence} is not above the last one taken, {last}")]
    Replay {
        /// The announcement's.
        sequence: u64,
        /// The last taken.
        last: u64,
    },
    /// The key could not sign.
    #[error("the key could not sign: {0}")]
    Sign(String),
}

/// What an announcement tells: a part of a segment, or the segment closed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Media {
    /// The session (the origin's id).
    pub session: String,
    /// The segment's media sequence number.
    pub msn: u64,
    /// `Some(index)` for a part of segment `msn`; `None` when the segment
    /// closed, `cid` being its file.
    pub part: Option<u32>,
    /// The part's raw block, or the segment's file.
    pub cid: Cid,
    /// Its duration in milliseconds.
    pub duration_ms: u64,
    /// Whether it opens with a keyframe.
    pub independent: bool,
    /// Whether its segment follows a discontinuity.
    pub discontinuity: bool,
    /// Its segment's `EXT-X-PROGRAM-DATE-TIME`, milliseconds since the Unix
    /// epoch.
    pub program_date_time_ms: u64,
    /// The init segment its media needs.
    pub init: Option<Cid>,
    /// The stream's `EXT-X-TARGETDURATION`, seconds.
    pub target_duration_secs: u64,
    /// The stream's `PART-TARGET`, milliseconds.
    pub part_target_ms: u64,
}

/// A signed announcement's content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Announcement {
    /// The stream's IPNS name (whose key signs).
    pub name: Name,
    /// Grows with every announcement of the name.
    pub sequence: u64,
    /// When it was sent, milliseconds since the Unix epoch (the sender's
    /// clock; for lag figures only).
    pub timestamp_ms: u64,
    /// What it tells.
    pub media: Media,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Payload {
    v: u32,
    name: String,
    seq: u64,
    ts: u64,
    #[serde(flatten)]
    media: Media,
}

/// The gossipsub topic of a name's announcements: `/meshcast/parts/`
/// followed by the unpadded base64url of its routing key (as IPNS over
/// pubsub names its topics).
pub fn topic(name: &Name) -> String {
    format!(
        "{TOPIC_PREFIX}{}",
        data_encoding::BASE64URL_NOPAD.encode(&name.routing_key())
    )
}

/// What every announcement topic starts with.
pub const TOPIC_PREFIX: &str = "/meshcast/parts/";

/// The name an announcement topic is about.
pub fn topic_name(topic: &str) -> Option<Name> {
    let b64 = topic.strip_prefix(TOPIC_PREFIX)?;
    let key = data_encoding::BASE64URL_NOPAD.decode(b64.as_bytes()).ok()?;
    Name::from_routing_key(&key).ok()
}

impl Announcement {
    /// Signs and encodes it with `key`, which must be the name's.
    pub fn encode(&self, key: &Keypair) -> Result<Vec<u8>, AnnounceError> {
        if key.key_type() != KeyType::Ed25519 || Name::from_public_key(&key.public()) != self.name {
            return Err(AnnounceError::Sign(format!(
                "the key is not the Ed25519 key of {}",
                self.name
            )));
        }
        let payload = serde_json::to_vec(&Payload {
            v: VERSION,
            name: self.name.to_string(),
            seq: self.sequence,
            ts: self.timestamp_ms,
            media: self.media.clone(),
        })
        .map_err(|e| AnnounceError::Malformed(e.to_string()))?;
        let signature = key
            .sign(&[DOMAIN, &payload].concat())
            .map_err(|e| AnnounceError::Sign(e.to_string()))?;
        let mut out = payload;
        out.extend_from_slice(&signature);
        if out.len() > MAX_ANNOUNCEMENT {
            return Err(AnnounceError::TooLong(out.len()));
        }
        Ok(out)
    }

    /// Checks `bytes` as an announcement about `name`: size, the
    /// signature by the name's key, the name inside, the fields.
    pub fn decode(name: &Name, bytes: &[u8]) -> Result<Self, AnnounceError> {
        if bytes.len() > MAX_ANNOUNCEMENT {
            return Err(AnnounceError::TooLong(bytes.len()));
        }
        if bytes.len() <= SIGNATURE_LEN {
            return Err(AnnounceError::TooShort(bytes.len()));
        }
        let key = name
            .inlined_public_key()
            .filter(|k| k.key_type() == KeyType::Ed25519)
            .ok_or(AnnounceError::NotEd25519(*name))?;
        let (payload, signature) = bytes.split_at(bytes.len() - SIGNATURE_LEN);
        if !key.verify(&[DOMAIN, payload].concat(), signature) {
            return Err(AnnounceError::BadSignature(*name));
        }
        let p: Payload =
            serde_json::from_slice(payload).map_err(|e| AnnounceError::Malformed(e.to_string()))?;
        if p.v != VERSION {
            return Err(AnnounceError::Malformed(format!("version {}", p.v)));
        }
        if p.name != name.to_string() {
            return Err(AnnounceError::WrongName {
                expected: *name,
                found: p.name,
            });
        }
        if p.media.session.len() > MAX_SESSION_LEN {
            return Err(AnnounceError::Malformed("session id too long".into()));
        }
        Ok(Self {
            name: *name,
            sequence: p.seq,
            timestamp_ms: p.ts,
            media: p.media,
        })
    }
}

/// The last sequence taken for a name: each announcement must be above.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Replay {
    last: Option<u64>,
}

impl Replay {
    /// Takes `sequence` if it is above the last one taken.
    pub fn check(&mut self, sequence: u64) -> Result<(), AnnounceError> {
        if let Some(last) = self.last.filter(|l| sequence <= *l) {
            return Err(AnnounceError::Replay { sequence, last });
        }
        self.last = Some(sequence);
        Ok(())
    }
}

/// Numbers a publisher's announcements: above the last one and at least
/// the clock in microseconds, so a restarted publisher continues above.
#[derive(Debug, Clone, Copy, Default)]
pub struct Sequencer {
    last: u64,
}

impl Sequencer {
    /// The next sequence number at `now_us` (microseconds since the epoch).
    pub fn next(&mut self, now_us: u64) -> u64 {
        self.last = (self.last + 1).max(now_us);
        self.last
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(seed: u8) -> Keypair {
        Keypair::ed25519_from_bytes([seed; 32]).unwrap()
    }

    fn name(k: &Keypair) -> Name {
        Name::from_public_key(&k.public())
    }

    fn announcement(k: &Keypair, sequence: u64) -> Announcement {
        let cid: Cid = "bafkreigh2akiscaildcqabsyg3dfr6chu3fgpregiymsck7e7aqa4s52zy"
            .parse()
            .unwrap();
        Announcement {
            name: name(k),
            sequence,
            timestamp_ms: 1_764_000_000_000,
            media: Media {
                session: "20261203T114200Z".into(),
                msn: 41,
                part: Some(3),
                cid,
                duration_ms: 333,
                independent: false,
                discontinuity: false,
                program_date_time_ms: 1_764_000_000_000,
                init: Some(cid),
                target_duration_secs: 2,
                part_target_ms: 333,
            },
        }
    }

    #[test]
    fn round_trip_within_a_kib() {
        let k = key(1);
        let a = announcement(&k, 7);
        let bytes = a.encode(&k).unwrap();
        assert!(bytes.len() <= MAX_ANNOUNCEMENT, "{}", bytes.len());
        assert_eq!(Announcement::decode(&name(&k), &bytes).unwrap(), a);
        let mut closed = a.clone();
        closed.media.part = None;
        let bytes = closed.encode(&k).unwrap();
        assert_eq!(Announcement::decode(&name(&k), &bytes).unwrap(), closed);
    }

    #[test]
    fn a_forged_signature_is_refused() {
        let k = key(1);
        let mut bytes = announcement(&k, 7).encode(&k).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        assert_eq!(
            Announcement::decode(&name(&k), &bytes),
            Err(AnnounceError::BadSignature(name(&k)))
        );
        // A changed payload under the old signature.
        let mut bytes = announcement(&k, 7).encode(&k).unwrap();
        let at = bytes.iter().position(|b| *b == b'4').unwrap();
        bytes[at] = b'5';
        assert_eq!(
            Announcement::decode(&name(&k), &bytes),
            Err(AnnounceError::BadSignature(name(&k)))
        );
    }

    #[test]
    fn another_key_is_refused() {
        let (k, other) = (key(1), key(2));
        // Another key cannot sign for the name...
        assert!(matches!(
            announcement(&k, 7).encode(&other),
            Err(AnnounceError::Sign(_))
        ));
        // ...and what it signs for itself is not the name's.
        let forged = announcement(&other, 7).encode(&other).unwrap();
        assert_eq!(
            Announcement::decode(&name(&k), &forged),
            Err(AnnounceError::BadSignature(name(&k)))
        );
        // A name that is not an inlined Ed25519 key has none to check with.
        let hashed = Name::from_peer_id(libp2p::PeerId::random());
        assert!(matches!(
            Announcement::decode(&hashed, &forged),
            Err(AnnounceError::NotEd25519(_) | AnnounceError::BadSignature(_))
        ));
    }

    #[test]
    fn signed_for_another_name_is_refused() {
        // The same key's signature over a payload naming another stream:
        // made by hand, since encode refuses it.
        let (k, other) = (key(1), key(2));
        let mut a = announcement(&k, 7);
        a.name = name(&other);
        let payload = serde_json::to_vec(&Payload {
            v: VERSION,
            name: a.name.to_string(),
            seq: 7,
            ts: 0,
            media: a.media.clone(),
        })
        .unwrap();
        let sig = k.sign(&[DOMAIN, &payload].concat()).unwrap();
        let bytes = [payload, sig].concat();
        assert!(matches!(
            Announcement::decode(&name(&k), &bytes),
            Err(AnnounceError::WrongName { .. })
        ));
    }

    #[test]
    fn oversize_is_refused() {
        let k = key(1);
        let mut a = announcement(&k, 7);
        a.media.session = "x".repeat(MAX_ANNOUNCEMENT);
        assert!(matches!(a.encode(&k), Err(AnnounceError::TooLong(_))));
        let big = vec![b'{'; MAX_ANNOUNCEMENT + 1];
        assert_eq!(
            Announcement::decode(&name(&k), &big),
            Err(AnnounceError::TooLong(MAX_ANNOUNCEMENT + 1))
        );
        assert_eq!(
            Announcement::decode(&name(&k), &[0; 10]),
            Err(AnnounceError::TooShort(10))
        );
        // Within the size but with a session id no origin makes.
        a.media.session = "x".repeat(MAX_SESSION_LEN + 1);
        let bytes = a.encode(&k).unwrap();
        assert!(matches!(
            Announcement::decode(&name(&k), &bytes),
            Err(AnnounceError::Malformed(_))
        ));
    }

    #[test]
    fn replays_and_old_sequences_are_refused() {
        let mut r = Replay::default();
        r.check(10).unwrap();
        assert_eq!(
            r.check(10),
            Err(AnnounceError::Replay {
                sequence: 10,
                last: 10
            })
        );
        assert!(r.check(9).is_err());
        r.check(11).unwrap();
        assert!(r.check(10).is_err());
    }

    #[test]
    fn sequences_grow_with_and_without_the_clock() {
        let mut s = Sequencer::default();
        assert_eq!(s.next(100), 100);
        assert_eq!(s.next(100), 101);
        // The clock went back: still above.
        assert_eq!(s.next(50), 102);
        assert_eq!(s.next(500), 500);
    }

    #[test]
    fn topics_name_their_stream() {
        let n = name(&key(3));
        let t = topic(&n);
        assert!(t.starts_with(TOPIC_PREFIX));
        assert_eq!(topic_name(&t), Some(n));
        assert_eq!(topic_name(&n.pubsub_topic()), None);
        assert_ne!(t, n.pubsub_topic());
    }

    proptest::proptest! {
        #[test]
        fn decode_never_panics(b in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..1200)) {
            let _ = Announcement::decode(&name(&key(1)), &b);
        }
    }
}
