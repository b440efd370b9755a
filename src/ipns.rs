//! IPNS: a stable name per stream that points at its latest content.
//!
//! Flow:
//!
//! 1. Each stream has an Ed25519 key in [`keys::KeyStore`]
//!    (`<data>/keys/<stream>`). Its [`Name`] is the key's PeerId, printed as
//!    kubo prints IPNS names: a CIDv1 (multicodec `libp2p-key`) in base36,
//!    `k51...`.
//! 2. To point the name at new content, [`keys::KeyStore::sign_next`] signs
//!    a [`Record`] with the next sequence number and keeps it in
//!    `<data>/ipns/<stream>.record` before handing it out, so sequences only
//!    grow, across restarts too.
//! 3. A router spreads the record's bytes under [`Name::routing_key`] (the
//!    DHT key) or on topic [`Name::pubsub_topic`] (IPNS over PubSub).
//! 4. A receiver checks it with [`Record::verify`] against the name it asked
//!    for, compares [`Record::is_expired`] with its own clock, and keeps it
//!    if it is [`Record::better`] than the one it has.
//!
//! Names and records are pure (bytes and times in, values out); only
//! [`keys`] touches the disk.

pub mod announce;
pub mod keys;
pub mod record;
pub(crate) mod rfc3339;

pub use keys::{KeyError, KeyStore, KEYS_DIR};
pub use record::{Record, RecordError};
pub use rfc3339::Rfc3339Error;

use cid::multibase::Base;
use cid::Cid;
use libp2p::identity::{PeerId, PublicKey};
use std::fmt;
use std::str::FromStr;
use thiserror::Error;

/// Multicodec `libp2p-key`: the CID codec of IPNS names.
pub const LIBP2P_KEY: u64 = 0x72;

/// The prefix of an IPNS routing key (and of IPNS paths).
const IPNS_PREFIX: &[u8] = b"/ipns/";

/// Multicodec of the identity multihash, which inlines small keys.
const IDENTITY: u64 = 0x00;

/// Why text or bytes are not an IPNS name.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum NameError {
    /// Nothing to parse.
    #[error("empty IPNS name: give a k51... name or a PeerId")]
    Empty,
    /// Neither a CID nor a base58 PeerId.
    #[error("{input:?} is not an IPNS name (a k51... CID or a 12D3Koo.../Qm... PeerId): {reason}")]
    Syntax {
        /// The text given.
        input: String,
        /// What the decoder said.
        reason: String,
    },
    /// A CID, but of content rather than of a key.
    #[error("{input:?} is a CID with codec 0x{codec:x}, not an IPNS name (codec libp2p-key, 0x72); use /ipfs/ for content")]
    Codec {
        /// The text given.
        input: String,
        /// The CID's codec.
        codec: u64,
    },
    /// The multihash is neither an inlined key nor a SHA-256 of one.
    #[error("multihash 0x{code:x} is not a PeerId (identity with a key of at most 42 bytes, or sha2-256)")]
    Multihash {
        /// The multihash code.
        code: u64,
    },
    /// A routing key without the `/ipns/` prefix.
    #[error("an IPNS routing key starts with /ipns/")]
    RoutingKey,
}

/// An IPNS name: the PeerId of the key that signs its records.
///
/// meshcast's own names are Ed25519 keys, inlined in the PeerId. Names of
/// other keys parse too: a secp256k1 key is inlined as well (`16Uiu2...`),
/// an RSA or ECDSA key is hashed (`Qm...`, `k2k4r8...` in base36), and
/// records for such a name must then carry the key.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Name(PeerId);

impl Name {
    /// The name of a public key.
    pub fn from_public_key(key: &PublicKey) -> Self {
        Self(PeerId::from_public_key(key))
    }

    /// The name of a PeerId.
    pub fn from_peer_id(peer: PeerId) -> Self {
        Self(peer)
    }

    /// The PeerId (base58 `12D3Koo...` in its own `Display`).
    pub fn peer_id(&self) -> PeerId {
        self.0
    }

    /// The public key, when the name inlines it (identity multihash, as
    /// for Ed25519).
    pub fn inlined_public_key(&self) -> Option<PublicKey> {
        let mh = self.0.as_ref();
        if mh.code() != IDENTITY {
            return None;
        }
        PublicKey::try_decode_protobuf(mh.digest()).ok()
    }

    /// The name as a CIDv1 with codec `libp2p-key`.
    pub fn to_cid(&self) -> Cid {
        Cid::new_v1(LIBP2P_KEY, *self.0.as_ref())
    }

    /// The key records are stored and looked up under: `/ipns/` followed
    /// by the binary multihash of the PeerId.
    pub fn routing_key(&self) -> Vec<u8> {
        [IPNS_PREFIX, &self.0.to_bytes()].concat()
    }

    /// The name whose [`Name::routing_key`] is `key`.
    pub fn from_routing_key(key: &[u8]) -> Result<Self, NameError> {
        let mh = key.strip_prefix(IPNS_PREFIX).ok_or(NameError::RoutingKey)?;
        let mh = multihash::Multihash::<64>::from_bytes(mh).map_err(|e| NameError::Syntax {
            input: String::from_utf8_lossy(key).into_owned(),
            reason: e.to_string(),
        })?;
        Self::from_multihash(mh)
    }

    /// The IPNS-over-PubSub topic: `/record/` followed by the unpadded
    /// base64url of the routing key.
    pub fn pubsub_topic(&self) -> String {
        format!(
            "/record/{}",
            data_encoding::BASE64URL_NOPAD.encode(&self.routing_key())
        )
    }

    fn from_multihash(mh: multihash::Multihash<64>) -> Result<Self, NameError> {
        PeerId::from_multihash(mh)
            .map(Self)
            .map_err(|mh| NameError::Multihash { code: mh.code() })
    }
}

impl From<PeerId> for Name {
    fn from(peer: PeerId) -> Self {
        Self(peer)
    }
}

impl fmt::Display for Name {
    /// Base36 CIDv1, `k51...`, as kubo prints names.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = self
            .to_cid()
            .to_string_of_base(Base::Base36Lower)
            .map_err(|_| fmt::Error)?;
        f.write_str(&text)
    }
}

impl fmt::Debug for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Name({self})")
    }
}

impl FromStr for Name {
    type Err = NameError;

    /// Accepts `k51...` (or any multibase CIDv1 with codec `libp2p-key`,
    /// such as base32 `bafz...`), a base58 PeerId (`12D3Koo...`, `Qm...`),
    /// and any of them after `/ipns/`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let text = s.strip_prefix("/ipns/").unwrap_or(s);
        if text.is_empty() {
            return Err(NameError::Empty);
        }
        let syntax = |reason: String| NameError::Syntax {
            input: s.to_owned(),
            reason,
        };
        // A base58 PeerId starts with 1 (inlined key) or Qm (SHA-256); no
        // multibase CIDv1 does (kubo decides the same way).
        if text.starts_with('1') || text.starts_with("Qm") {
            return PeerId::from_str(text)
                .map(Self)
                .map_err(|e| syntax(e.to_string()));
        }
        let cid = Cid::try_from(text).map_err(|e| syntax(e.to_string()))?;
        if cid.codec() != LIBP2P_KEY {
            return Err(NameError::Codec {
                input: s.to_owned(),
                codec: cid.codec(),
            });
        }
        Self::from_multihash(*cid.hash())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use libp2p::identity::Keypair;
    use proptest::prelude::*;

    fn name(seed: u8) -> Name {
        let k = Keypair::ed25519_from_bytes([seed; 32]).unwrap();
        Name::from_public_key(&k.public())
    }

    #[test]
    fn display_is_base36_cid() {
        let n = name(0);
        let text = n.to_string();
        assert!(text.starts_with("k51qzi5uqu5d"), "{text}");
        assert_eq!(text, text.to_lowercase());
        assert_eq!(text.parse::<Name>().unwrap(), n);
        assert!(n.peer_id().to_base58().starts_with("12D3KooW"));
    }

    #[test]
    fn parses_every_spelling() {
        let n = name(1);
        let spellings = [
            n.to_string(),
            n.to_cid().to_string_of_base(Base::Base32Lower).unwrap(),
            n.peer_id().to_base58(),
            format!("/ipns/{n}"),
            format!("/ipns/{}", n.peer_id()),
        ];
        assert!(spellings[1].starts_with("bafz"), "{}", spellings[1]);
        for s in spellings {
            assert_eq!(s.parse::<Name>(), Ok(n), "{s}");
        }
        let rsa: Name = "QmYyQSo1c1Ym7orWxLYvCrM2EmxFTANf8wXmmE7DWjhx5N"
            .parse()
            .unwrap();
        assert!(rsa.inlined_public_key().is_none());
        assert_eq!(rsa.to_string().parse::<Name>(), Ok(rsa));
    }

    #[test]
    fn rejects_what_is_not_a_name() {
        assert_eq!("".parse::<Name>(), Err(NameError::Empty));
        assert_eq!("/ipns/".parse::<Name>(), Err(NameError::Empty));
        assert!(matches!(
            "bafkqaddwgevxmmraojswg33smq".parse::<Name>(),
            Err(NameError::Codec { codec: 0x55, .. })
        ));
        assert!(matches!(
            "k51-not-base36".parse::<Name>(),
            Err(NameError::Syntax { .. })
        ));
        assert!(matches!(
            "12D3KooWnot".parse::<Name>(),
            Err(NameError::Syntax { .. })
        ));
        // A libp2p-key CID over a multihash that is no PeerId (sha2-512).
        let mh = multihash::Multihash::<64>::wrap(0x13, &[0; 64]).unwrap();
        let cid = Cid::new_v1(LIBP2P_KEY, mh).to_string();
        assert_eq!(
            cid.parse::<Name>(),
            Err(NameError::Multihash { code: 0x13 })
        );
    }

    #[test]
    fn routing_key_and_topic() {
        let n = name(2);
        let key = n.routing_key();
        assert_eq!(&key[..6], b"/ipns/");
        // Identity multihash of the 36-byte protobuf key: 0x00 0x24 0x08 0x01 0x12 0x20 ...
        assert_eq!(&key[6..12], &[0x00, 0x24, 0x08, 0x01, 0x12, 0x20]);
        assert_eq!(key.len(), 6 + 2 + 36);
        assert_eq!(Name::from_routing_key(&key), Ok(n));
        assert_eq!(
            Name::from_routing_key(b"/pk/abc"),
            Err(NameError::RoutingKey)
        );
        let topic = n.pubsub_topic();
        let b64 = topic.strip_prefix("/record/").unwrap();
        assert!(!b64.contains(['=', '+', '/']), "{topic}");
        assert_eq!(
            data_encoding::BASE64URL_NOPAD
                .decode(b64.as_bytes())
                .unwrap(),
            key
        );
        // "/ipns/" is L2lwbnMv in base64url.
        assert!(b64.starts_with("L2lwbnMv"), "{topic}");
    }

    #[test]
    fn inlined_key_is_the_key() {
        let k = Keypair::ed25519_from_bytes([3; 32]).unwrap();
        let n = Name::from_public_key(&k.public());
        assert_eq!(n.inlined_public_key(), Some(k.public()));
    }

    proptest! {
        #[test]
        fn parse_never_panics(text in "\\PC{0,80}") {
            let _ = text.parse::<Name>();
        }

        #[test]
        fn routing_key_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..80)) {
            let mut key = b"/ipns/".to_vec();
            key.extend(&bytes);
            let _ = Name::from_routing_key(&key);
        }

        #[test]
        fn display_parse_round_trip(seed in any::<u8>()) {
            let n = name(seed);
            prop_assert_eq!(n.to_string().parse::<Name>(), Ok(n));
            prop_assert_eq!(Name::from_routing_key(&n.routing_key()), Ok(n));
        }
    }
}
