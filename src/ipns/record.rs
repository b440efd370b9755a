//! IPNS records: signing and verification, byte-compatible with kubo (boxo
//! `ipns`) and the JS `ipns` package.
//!
//! A record is a protobuf `IpnsEntry`:
//!
//! ```text
//! 1 value        bytes   V1 copy of data.Value
//! 2 signatureV1  bytes   sign(value || validity || "EOL"), for old readers only
//! 3 validityType enum    V1 copy of data.ValidityType (0 = EOL)
//! 4 validity     bytes   V1 copy of data.Validity
//! 5 sequence     uint64  V1 copy of data.Sequence
//! 6 ttl          uint64  V1 copy of data.TTL
//! 7 pubKey       bytes   only when the name cannot inline the key (RSA, ECDSA)
//! 8 signatureV2  bytes   sign("ipns-signature:" || data)
//! 9 data         bytes   DAG-CBOR {TTL, Value, Sequence, Validity, ValidityType}
//! ```
//!
//! `sign` signs with the name's key: Ed25519 for meshcast's names, any of
//! libp2p's key types (RSA, secp256k1, ECDSA too) for the names of others.
//! [`Record::sign`] writes all of them (the V1 copies let readers from
//! before 2021 resolve our names, as kubo still does by default).
//! [`Record::verify`] trusts only `signatureV2` over `data`: it never checks
//! `signatureV1`, and requires the V1 copies, when present, to equal the
//! signed data. Whether a record is still valid at some instant is a
//! separate question, [`Record::is_expired`], because callers decide what
//! to do with skewed clocks.

use super::rfc3339;
use super::Name;
use bytes::Bytes;
use libp2p::identity::{Keypair, PublicKey};
use quick_protobuf::{BytesReader, Writer};
use serde::{Deserialize, Serialize};
use std::time::{Duration, SystemTime};
use thiserror::Error;

/// The largest serialized record any implementation must accept, and the
/// largest we accept or produce.
pub const MAX_RECORD_SIZE: usize = 10 * 1024;

/// The TTL the spec suggests: how long resolvers may cache a record.
pub const DEFAULT_TTL: Duration = Duration::from_secs(5 * 60);

/// What the V2 signature covers, before the DAG-CBOR data.
const SIGNATURE_V2_PREFIX: &[u8] = b"ipns-signature:";

/// `ValidityType` EOL: the record is valid until `Validity`.
const VALIDITY_EOL: u64 = 0;

/// The name of validity type EOL, as V1 signatures spell it.
const VALIDITY_EOL_NAME: &[u8] = b"EOL";

/// kubo reads the sequence and TTL as signed 64-bit integers (TTL as a Go
/// `time.Duration`); larger values would be records it cannot read.
const MAX_INT: u64 = i64::MAX as u64;

/// Why a record could not be created or was rejected.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum RecordError {
    /// The serialized record is over [`MAX_RECORD_SIZE`].
    #[error("the record is {size} bytes; IPNS records are at most {MAX_RECORD_SIZE} bytes")]
    TooLarge {
        /// Its size.
        size: usize,
    },
    /// The bytes are not an `IpnsEntry` protobuf.
    #[error("the record is not an IpnsEntry protobuf: {0}")]
    Protobuf(String),
    /// `signatureV2` is absent or empty (e.g. a V1-only record, which no
    /// current implementation accepts).
    #[error("the record has no signatureV2 (records signed only with the legacy V1 signature are not accepted)")]
    MissingSignature,
    /// `data` is absent or empty.
    #[error("the record has no data field")]
    MissingData,
    /// `pubKey` is present but is not a public key we can read.
    #[error("the record's pubKey field is not a supported public key: {0}")]
    PublicKey(String),
    /// `pubKey` is present but belongs to another name.
    #[error("the record's public key is not the key of {name}")]
    PublicKeyMismatch {
        /// The name the record was checked against.
        name: Name,
    },
    /// The name hashes its key and the record does not carry it.
    #[error("{name} does not contain its public key and the record carries none, so the record cannot be checked")]
    NoPublicKey {
        /// The name the record was checked against.
        name: Name,
    },
    /// `signatureV2` does not verify.
    #[error("the record's signature does not verify with the key of {name}")]
    BadSignature {
        /// The name the record was checked against.
        name: Name,
    },
    /// `data` is not the DAG-CBOR map the spec requires.
    #[error("the record's data is not the expected DAG-CBOR map: {0}")]
    Data(String),
    /// A validity type other than 0 (EOL), the only one defined.
    #[error("validity type {0} is not supported (only 0, EOL, is defined)")]
    UnsupportedValidityType(u64),
    /// `Validity` is not an RFC 3339 timestamp.
    #[error("the record's validity {text:?} is not a timestamp: {reason}")]
    Validity {
        /// The field as text (lossy).
        text: String,
        /// What is wrong with it.
        reason: rfc3339::Rfc3339Error,
    },
    /// `Value` is not UTF-8 text.
    #[error("the record's value is not UTF-8 text, so it is not a content path")]
    ValueNotText,
    /// A legacy V1 field differs from the signed data.
    #[error("the record's V1 field {0} does not match its signed data")]
    V1Mismatch(&'static str),
    /// The value to sign is not a content path.
    #[error("cannot sign value {0:?}: use a content path such as /ipfs/<cid> or /ipns/<name>")]
    InvalidValue(String),
    /// A field to sign is out of the range other implementations read.
    #[error("cannot sign: {0}")]
    OutOfRange(&'static str),
    /// The key could not sign.
    #[error("the key could not sign the record: {0}")]
    Signing(String),
}

/// A verified (or freshly signed) IPNS record and its serialized bytes.
///
/// Equality is byte equality.
#[derive(Clone, PartialEq, Eq)]
pub struct Record {
    bytes: Bytes,
    value: String,
    validity: SystemTime,
    sequence: u64,
    ttl: Duration,
}

impl std::fmt::Debug for Record {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Record")
            .field("value", &self.value)
            .field("sequence", &self.sequence)
            .field("validity", &rfc3339::format(self.validity).ok())
            .field("ttl", &self.ttl)
            .field("len", &self.bytes.len())
            .finish()
    }
}

/// Bytes that DAG-CBOR writes as a byte string (major type 2), not as an
/// array of numbers as serde would write a `Vec<u8>`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct CborBytes(Vec<u8>);

impl Serialize for CborBytes {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(&self.0)
    }
}

impl<'de> Deserialize<'de> for CborBytes {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = CborBytes;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a byte string")
            }
            fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<CborBytes, E> {
                Ok(CborBytes(v.to_vec()))
            }
            fn visit_byte_buf<E: serde::de::Error>(self, v: Vec<u8>) -> Result<CborBytes, E> {
                Ok(CborBytes(v))
            }
        }
        d.deserialize_bytes(Visitor)
    }
}

/// The signed `data` map. Unknown keys (extensions) are ignored, as the spec
/// requires; the DAG-CBOR encoder writes keys in canonical order (length,
/// then bytes: TTL, Value, Sequence, Validity, ValidityType).
#[derive(Debug, Serialize, Deserialize)]
struct SignedData {
    #[serde(rename = "Value")]
    value: CborBytes,
    #[serde(rename = "Validity")]
    validity: CborBytes,
    #[serde(rename = "ValidityType")]
    validity_type: u64,
    #[serde(rename = "Sequence")]
    sequence: u64,
    #[serde(rename = "TTL")]
    ttl: u64,
}

/// The fields of an `IpnsEntry` as they appear on the wire (the last
/// occurrence of a repeated field wins, as in every protobuf decoder).
#[derive(Debug, Default)]
struct Entry<'a> {
    value: Option<&'a [u8]>,
    signature_v1: Option<&'a [u8]>,
    validity_type: Option<u64>,
    validity: Option<&'a [u8]>,
    sequence: Option<u64>,
    ttl: Option<u64>,
    pub_key: Option<&'a [u8]>,
    signature_v2: Option<&'a [u8]>,
    data: Option<&'a [u8]>,
}

// Field numbers of `IpnsEntry`.
const ENTRY_VALUE: u32 = 1;
const ENTRY_SIGNATURE_V1: u32 = 2;
const ENTRY_VALIDITY_TYPE: u32 = 3;
const ENTRY_VALIDITY: u32 = 4;
const ENTRY_SEQUENCE: u32 = 5;
const ENTRY_TTL: u32 = 6;
const ENTRY_PUB_KEY: u32 = 7;
const ENTRY_SIGNATURE_V2: u32 = 8;
const ENTRY_DATA: u32 = 9;

const VARINT: u32 = 0;
const LEN: u32 = 2;

const fn tag(field: u32, wire: u32) -> u32 {
    (field << 3) | wire
}

impl<'a> Entry<'a> {
    fn decode(buf: &'a [u8]) -> Result<Self, RecordError> {
        let err = |e: quick_protobuf::Error| RecordError::Protobuf(e.to_string());
        let mut r = BytesReader::from_bytes(buf);
        let mut e = Entry::default();
        while !r.is_eof() {
            let t = r.next_tag(buf).map_err(err)?;
            match (t >> 3, t & 7) {
                (ENTRY_VALUE, LEN) => e.value = Some(r.read_bytes(buf).map_err(err)?),
                (ENTRY_SIGNATURE_V1, LEN) => e.signature_v1 = Some(r.read_bytes(buf).map_err(err)?),
                (ENTRY_VALIDITY_TYPE, VARINT) => {
                    e.validity_type = Some(r.read_varint64(buf).map_err(err)?)
                }
                (ENTRY_VALIDITY, LEN) => e.validity = Some(r.read_bytes(buf).map_err(err)?),
                (ENTRY_SEQUENCE, VARINT) => e.sequence = Some(r.read_varint64(buf).map_err(err)?),
                (ENTRY_TTL, VARINT) => e.ttl = Some(r.read_varint64(buf).map_err(err)?),
                (ENTRY_PUB_KEY, LEN) => e.pub_key = Some(r.read_bytes(buf).map_err(err)?),
                (ENTRY_SIGNATURE_V2, LEN) => e.signature_v2 = Some(r.read_bytes(buf).map_err(err)?),
                (ENTRY_DATA, LEN) => e.data = Some(r.read_bytes(buf).map_err(err)?),
                (field @ ENTRY_VALUE..=ENTRY_DATA, wire) => {
                    return Err(RecordError::Protobuf(format!(
                        "field {field} has wire type {wire}"
                    )))
                }
                // Fields a later version may add.
                _ => r.read_unknown(buf, t).map_err(err)?,
            }
        }
        Ok(e)
    }

    /// Encodes in field-number order, as Go's and JS's encoders do.
    fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(
            [
                self.value,
                self.signature_v1,
                self.validity,
                self.pub_key,
                self.signature_v2,
                self.data,
            ]
            .iter()
            .flatten()
            .map(|b| b.len() + 3)
            .sum::<usize>()
                + 32,
        );
        let mut w = Writer::new(&mut out);
        let bytes = |w: &mut Writer<&mut Vec<u8>>, field: u32, b: Option<&[u8]>| {
            if let Some(b) = b {
                w.write_with_tag(tag(field, LEN), |w| w.write_bytes(b))
                    .expect("writing to a Vec cannot fail");
            }
        };
        let varint = |w: &mut Writer<&mut Vec<u8>>, field: u32, v: Option<u64>| {
            if let Some(v) = v {
                w.write_with_tag(tag(field, VARINT), |w| w.write_uint64(v))
                    .expect("writing to a Vec cannot fail");
            }
        };
        bytes(&mut w, ENTRY_VALUE, self.value);
        bytes(&mut w, ENTRY_SIGNATURE_V1, self.signature_v1);
        varint(&mut w, ENTRY_VALIDITY_TYPE, self.validity_type);
        bytes(&mut w, ENTRY_VALIDITY, self.validity);
        varint(&mut w, ENTRY_SEQUENCE, self.sequence);
        varint(&mut w, ENTRY_TTL, self.ttl);
        bytes(&mut w, ENTRY_PUB_KEY, self.pub_key);
        bytes(&mut w, ENTRY_SIGNATURE_V2, self.signature_v2);
        bytes(&mut w, ENTRY_DATA, self.data);
        out
    }
}

fn signature_v2_input(data: &[u8]) -> Vec<u8> {
    [SIGNATURE_V2_PREFIX, data].concat()
}

impl Record {
    /// Signs a record pointing the name of `key` at `value` (a content path such
    /// as `/ipfs/<cid>`), valid until `validity`, with V1 compatibility
    /// fields. `pubKey` is written only when the key's PeerId does not
    /// inline the key (never for Ed25519).
    pub fn sign(
        key: &Keypair,
        value: &str,
        sequence: u64,
        validity: SystemTime,
        ttl: Duration,
    ) -> Result<Self, RecordError> {
        if !value.starts_with('/') || value.len() < 2 {
            return Err(RecordError::InvalidValue(value.to_owned()));
        }
        if sequence > MAX_INT {
            return Err(RecordError::OutOfRange(
                "the sequence is above 2^63-1, which kubo cannot read",
            ));
        }
        let ttl_ns = u64::try_from(ttl.as_nanos())
            .ok()
            .filter(|n| *n <= MAX_INT)
            .ok_or(RecordError::OutOfRange(
                "the TTL is above 2^63-1 nanoseconds (292 years), which kubo cannot read",
            ))?;
        let validity_text = rfc3339::format(validity)
            .map_err(|_| RecordError::OutOfRange("the validity must lie in years 0000 to 9999"))?;
        let data = serde_ipld_dagcbor::to_vec(&SignedData {
            value: CborBytes(value.as_bytes().to_vec()),
            validity: CborBytes(validity_text.as_bytes().to_vec()),
            validity_type: VALIDITY_EOL,
            sequence,
            ttl: ttl_ns,
        })
        .map_err(|e| RecordError::Data(e.to_string()))?;
        let sign = |msg: &[u8]| {
            key.sign(msg)
                .map_err(|e| RecordError::Signing(e.to_string()))
        };
        let signature_v2 = sign(&signature_v2_input(&data))?;
        let signature_v1 = sign(
            &[
                value.as_bytes(),
                validity_text.as_bytes(),
                VALIDITY_EOL_NAME,
            ]
            .concat(),
        )?;
        let public = key.public();
        let pub_key = Name::from_public_key(&public)
            .inlined_public_key()
            .is_none()
            .then(|| public.encode_protobuf());
        let bytes = Entry {
            value: Some(value.as_bytes()),
            signature_v1: Some(&signature_v1),
            validity_type: Some(VALIDITY_EOL),
            validity: Some(validity_text.as_bytes()),
            sequence: Some(sequence),
            ttl: Some(ttl_ns),
            pub_key: pub_key.as_deref(),
            signature_v2: Some(&signature_v2),
            data: Some(&data),
        }
        .encode();
        if bytes.len() > MAX_RECORD_SIZE {
            return Err(RecordError::TooLarge { size: bytes.len() });
        }
        Ok(Self {
            bytes: bytes.into(),
            value: value.to_owned(),
            validity,
            sequence,
            ttl: Duration::from_nanos(ttl_ns),
        })
    }

    /// Checks a serialized record for `name`, following the spec's record
    /// verification: size, signatureV2 over data with the name's key (from
    /// the record's `pubKey` if it has one, which must then hash to the
    /// name, else inlined in the name), data well formed, V1 copies equal to
    /// the signed data. Does not check expiry: see [`Record::is_expired`].
    pub fn verify(name: &Name, bytes: &[u8]) -> Result<Self, RecordError> {
        if bytes.len() > MAX_RECORD_SIZE {
            return Err(RecordError::TooLarge { size: bytes.len() });
        }
        let entry = Entry::decode(bytes)?;
        let signature = entry
            .signature_v2
            .filter(|s| !s.is_empty())
            .ok_or(RecordError::MissingSignature)?;
        let data = entry
            .data
            .filter(|d| !d.is_empty())
            .ok_or(RecordError::MissingData)?;
        let key = public_key_for(name, entry.pub_key)?;
        if !key.verify(&signature_v2_input(data), signature) {
            return Err(RecordError::BadSignature { name: *name });
        }
        let signed: SignedData =
            serde_ipld_dagcbor::from_slice(data).map_err(|e| RecordError::Data(e.to_string()))?;
        // Like kubo: the V1 copies are checked as soon as any V1 field that
        // a reader could use is there, missing ones counting as empty / 0.
        let has_v1 = [entry.value, entry.signature_v1]
            .iter()
            .flatten()
            .any(|b| !b.is_empty());
        if has_v1 {
            let checks: [(&'static str, bool); 5] = [
                ("value", entry.value.unwrap_or_default() == signed.value.0),
                (
                    "validity",
                    entry.validity.unwrap_or_default() == signed.validity.0,
                ),
                (
                    "validityType",
                    entry.validity_type.unwrap_or_default() == signed.validity_type,
                ),
                (
                    "sequence",
                    entry.sequence.unwrap_or_default() == signed.sequence,
                ),
                ("ttl", entry.ttl.unwrap_or_default() == signed.ttl),
            ];
            if let Some((field, _)) = checks.iter().find(|(_, ok)| !ok) {
                return Err(RecordError::V1Mismatch(field));
            }
        }
        if signed.validity_type != VALIDITY_EOL {
            return Err(RecordError::UnsupportedValidityType(signed.validity_type));
        }
        let validity_text =
            std::str::from_utf8(&signed.validity.0).map_err(|_| RecordError::Validity {
                text: String::from_utf8_lossy(&signed.validity.0).into_owned(),
                reason: rfc3339::Rfc3339Error::Syntax("ASCII text"),
            })?;
        let validity = rfc3339::parse(validity_text).map_err(|reason| RecordError::Validity {
            text: validity_text.to_owned(),
            reason,
        })?;
        let value = String::from_utf8(signed.value.0).map_err(|_| RecordError::ValueNotText)?;
        Ok(Self {
            bytes: Bytes::copy_from_slice(bytes),
            value,
            validity,
            sequence: signed.sequence,
            ttl: Duration::from_nanos(signed.ttl),
        })
    }

    /// The serialized `IpnsEntry`, as signed or as received.
    pub fn to_bytes(&self) -> Bytes {
        self.bytes.clone()
    }

    /// The content path the name points at, e.g. `/ipfs/bafy...`.
    pub fn value(&self) -> &str {
        &self.value
    }

    /// The record's version; a higher sequence supersedes a lower one.
    pub fn sequence(&self) -> u64 {
        self.sequence
    }

    /// The instant after which the record is no longer valid.
    pub fn validity(&self) -> SystemTime {
        self.validity
    }

    /// How long resolvers may cache the record.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// Whether the record's validity has passed at `now` (valid up to and
    /// including its validity instant, as in kubo).
    pub fn is_expired(&self, now: SystemTime) -> bool {
        now > self.validity
    }

    /// Whether `self` should replace `other` (both verified for the same
    /// name): the higher sequence wins, then the later validity, then, so
    /// every peer picks the same one, the larger serialized bytes (kubo's
    /// tie-break).
    pub fn better(&self, other: &Record) -> bool {
        (self.sequence, self.validity, &self.bytes[..])
            > (other.sequence, other.validity, &other.bytes[..])
    }
}

/// The key that must have signed a record for `name`.
fn public_key_for(name: &Name, embedded: Option<&[u8]>) -> Result<PublicKey, RecordError> {
    match embedded.filter(|k| !k.is_empty()) {
        Some(bytes) => {
            let key = PublicKey::try_decode_protobuf(bytes)
                .map_err(|e| RecordError::PublicKey(e.to_string()))?;
            if Name::from_public_key(&key) != *name {
                return Err(RecordError::PublicKeyMismatch { name: *name });
            }
            Ok(key)
        }
        None => name
            .inlined_public_key()
            .ok_or(RecordError::NoPublicKey { name: *name }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use libp2p::identity::KeyType;
    use proptest::prelude::*;
    use std::time::UNIX_EPOCH;

    const CID_PATH: &str = "/ipfs/bafkqaddwgevxmmraojswg33smq";

    /// A fixed key, so failures reproduce.
    fn key(seed: u8) -> Keypair {
        Keypair::ed25519_from_bytes([seed; 32]).unwrap()
    }

    fn name(k: &Keypair) -> Name {
        Name::from_public_key(&k.public())
    }

    fn at(secs: u64, nanos: u32) -> SystemTime {
        UNIX_EPOCH + Duration::new(secs, nanos)
    }

    fn sample() -> (Keypair, Record) {
        let k = key(7);
        let r = Record::sign(&k, CID_PATH, 3, at(2_000_000_000, 5), DEFAULT_TTL).unwrap();
        (k, r)
    }

    #[test]
    fn signed_data_is_canonical_dag_cbor() {
        let data = serde_ipld_dagcbor::to_vec(&SignedData {
            value: CborBytes(b"/ipfs/x".to_vec()),
            validity: CborBytes(b"2033-05-18T03:33:20Z".to_vec()),
            validity_type: 0,
            sequence: 1,
            ttl: 300_000_000_000,
        })
        .unwrap();
        let mut want = vec![0xa5];
        want.extend(b"\x63TTL\x1b\x00\x00\x00\x45\xd9\x64\xb8\x00");
        want.extend(b"\x65Value\x47/ipfs/x");
        want.extend(b"\x68Sequence\x01");
        want.extend(b"\x68Validity\x54\x32\x30\x33\x33-05-18T03:33:20Z");
        want.extend(b"\x6cValidityType\x00");
        assert_eq!(data, want);
    }

    #[test]
    fn sign_then_verify() {
        let (k, r) = sample();
        let v = Record::verify(&name(&k), &r.to_bytes()).unwrap();
        assert_eq!(v, r);
        assert_eq!(v.value(), CID_PATH);
        assert_eq!(v.sequence(), 3);
        assert_eq!(v.validity(), at(2_000_000_000, 5));
        assert_eq!(v.ttl(), DEFAULT_TTL);
    }

    #[test]
    fn writes_v1_fields_equal_to_data_and_no_pubkey_for_ed25519() {
        let (k, r) = sample();
        let bytes = r.to_bytes();
        let e = Entry::decode(&bytes).unwrap();
        assert_eq!(e.value, Some(CID_PATH.as_bytes()));
        assert_eq!(e.validity, Some(&b"2033-05-18T03:33:20.000000005Z"[..]));
        assert_eq!(e.validity_type, Some(0));
        assert_eq!(e.sequence, Some(3));
        assert_eq!(e.ttl, Some(300_000_000_000));
        assert_eq!(e.pub_key, None);
        // The legacy signature is what V1 readers check.
        let v1 = [CID_PATH.as_bytes(), e.validity.unwrap(), b"EOL"].concat();
        assert!(k.public().verify(&v1, e.signature_v1.unwrap()));
        // Fields in number order, as Go's and JS's encoders write them.
        let tags: Vec<u8> = {
            let mut r = BytesReader::from_bytes(&bytes);
            let mut tags = Vec::new();
            while !r.is_eof() {
                let t = r.next_tag(&bytes).unwrap();
                tags.push((t >> 3) as u8);
                r.read_unknown(&bytes, t).unwrap();
            }
            tags
        };
        assert_eq!(tags, [1, 2, 3, 4, 5, 6, 8, 9]);
    }

    #[test]
    fn wrong_name_is_rejected() {
        let (_, r) = sample();
        let other = name(&key(8));
        assert_eq!(
            Record::verify(&other, &r.to_bytes()),
            Err(RecordError::BadSignature { name: other })
        );
    }

    /// The sample record's bytes.
    fn base() -> Bytes {
        sample().1.to_bytes()
    }

    /// Rewrites the fields of `record` and re-encodes it.
    fn rewrite<'a>(record: &'a [u8], f: impl FnOnce(&mut Entry<'a>)) -> Vec<u8> {
        let mut e = Entry::decode(record).unwrap();
        f(&mut e);
        e.encode()
    }

    #[test]
    fn v2_only_records_verify() {
        let base = base();
        let (k, _) = sample();
        let bytes = rewrite(&base, |e| {
            *e = Entry {
                signature_v2: e.signature_v2,
                data: e.data,
                ..Entry::default()
            }
        });
        let r = Record::verify(&name(&k), &bytes).unwrap();
        assert_eq!((r.value(), r.sequence()), (CID_PATH, 3));
    }

    #[test]
    fn v1_fields_must_match_data() {
        let base = base();
        let (k, _) = sample();
        let n = name(&k);
        let cases: [(&str, Vec<u8>); 5] = [
            ("value", rewrite(&base, |e| e.value = Some(b"/ipfs/other"))),
            (
                "validity",
                rewrite(&base, |e| e.validity = Some(b"2099-01-01T00:00:00Z")),
            ),
            (
                "validityType",
                rewrite(&base, |e| e.validity_type = Some(1)),
            ),
            ("sequence", rewrite(&base, |e| e.sequence = Some(4))),
            ("ttl", rewrite(&base, |e| e.ttl = None)),
        ];
        for (field, bytes) in cases {
            assert_eq!(
                Record::verify(&n, &bytes),
                Err(RecordError::V1Mismatch(field)),
                "{field}"
            );
        }
        // A V1 signature with no V1 copies is checked too (all must be there).
        let bytes = rewrite(&base, |e| e.value = None);
        assert_eq!(
            Record::verify(&n, &bytes),
            Err(RecordError::V1Mismatch("value"))
        );
    }

    #[test]
    fn v1_only_records_are_rejected() {
        let base = base();
        let (k, _) = sample();
        let n = name(&k);
        let bytes = rewrite(&base, |e| e.signature_v2 = None);
        assert_eq!(
            Record::verify(&n, &bytes),
            Err(RecordError::MissingSignature)
        );
        let bytes = rewrite(&base, |e| e.data = Some(b""));
        assert_eq!(Record::verify(&n, &bytes), Err(RecordError::MissingData));
    }

    #[test]
    fn embedded_public_key_must_be_the_names() {
        let base = base();
        let (k, _) = sample();
        let n = name(&k);
        let own = k.public().encode_protobuf();
        let bytes = rewrite(&base, |e| e.pub_key = Some(&own));
        assert!(Record::verify(&n, &bytes).is_ok());
        let other = key(9).public().encode_protobuf();
        let bytes = rewrite(&base, |e| e.pub_key = Some(&other));
        assert_eq!(
            Record::verify(&n, &bytes),
            Err(RecordError::PublicKeyMismatch { name: n })
        );
        let bytes = rewrite(&base, |e| e.pub_key = Some(b"\x08\x01\x12\x01x"));
        assert!(matches!(
            Record::verify(&n, &bytes),
            Err(RecordError::PublicKey(_))
        ));
    }

    #[test]
    fn hashed_name_without_key_cannot_be_checked() {
        let (_, r) = sample();
        // The name of an RSA key: a SHA-256 multihash, no key inside.
        let n: Name = "QmYyQSo1c1Ym7orWxLYvCrM2EmxFTANf8wXmmE7DWjhx5N"
            .parse()
            .unwrap();
        assert_eq!(
            Record::verify(&n, &r.to_bytes()),
            Err(RecordError::NoPublicKey { name: n })
        );
    }

    /// A fixed key of each other type libp2p defines: RSA (2048 bits, a
    /// fixture: libp2p cannot make RSA keys), secp256k1 and ECDSA P-256.
    fn other_keys() -> [Keypair; 3] {
        let mut pkcs8 = include_bytes!("../../tests/data/rsa-2048.pk8").to_vec();
        let rsa = Keypair::rsa_from_pkcs8(&mut pkcs8).unwrap();
        let secp = libp2p::identity::secp256k1::SecretKey::try_from_bytes([5; 32]).unwrap();
        let ecdsa = libp2p::identity::ecdsa::SecretKey::try_from_bytes([6; 32]).unwrap();
        [
            rsa,
            libp2p::identity::secp256k1::Keypair::from(secp).into(),
            libp2p::identity::ecdsa::Keypair::from(ecdsa).into(),
        ]
    }

    #[test]
    fn records_of_rsa_secp256k1_and_ecdsa_keys_verify() {
        for k in other_keys() {
            let n = name(&k);
            let r = Record::sign(&k, CID_PATH, 4, at(2_000_000_000, 0), DEFAULT_TTL).unwrap();
            let v = Record::verify(&n, &r.to_bytes()).unwrap();
            assert_eq!(
                (v.value(), v.sequence()),
                (CID_PATH, 4),
                "{:?}",
                k.key_type()
            );
            // Only a secp256k1 key is small enough to be inlined in its name;
            // the others' names hash the key, and their records carry it.
            let inlined = n.inlined_public_key();
            let embedded = Entry::decode(&r.to_bytes())
                .unwrap()
                .pub_key
                .map(<[u8]>::to_vec);
            match k.key_type() {
                KeyType::Secp256k1 => {
                    assert!(n.peer_id().to_base58().starts_with("16Uiu2"), "{n:?}");
                    assert_eq!(inlined, Some(k.public()));
                    assert_eq!(embedded, None);
                }
                t => {
                    assert!(n.peer_id().to_base58().starts_with("Qm"), "{t:?} {n:?}");
                    assert_eq!(inlined, None, "{t:?}");
                    assert_eq!(embedded, Some(k.public().encode_protobuf()), "{t:?}");
                    let bare = rewrite(&r.to_bytes(), |e| e.pub_key = None);
                    assert_eq!(
                        Record::verify(&n, &bare),
                        Err(RecordError::NoPublicKey { name: n })
                    );
                }
            }
            // Another key's signature does not pass for this name.
            let forged =
                Record::sign(&key(9), CID_PATH, 4, at(2_000_000_000, 0), DEFAULT_TTL).unwrap();
            let own = k.public().encode_protobuf();
            let forged = rewrite(&forged.to_bytes(), |e| e.pub_key = Some(&own));
            assert_eq!(
                Record::verify(&n, &forged),
                Err(RecordError::BadSignature { name: n })
            );
        }
    }

    #[test]
    fn an_rsa_name_is_a_sha256_peer_id() {
        let [rsa, ..] = other_keys();
        let n = name(&rsa);
        // As kubo prints an RSA identity and its IPNS name.
        assert!(n.peer_id().to_base58().starts_with("Qm"), "{}", n.peer_id());
        assert!(n.to_string().starts_with("k2k4r8"), "{n}");
        assert_eq!(n.to_string().parse::<Name>(), Ok(n));
        assert_eq!(n.peer_id().to_base58().parse::<Name>(), Ok(n));
        assert_eq!(Name::from_routing_key(&n.routing_key()), Ok(n));
    }

    #[test]
    fn oversized_records() {
        let (k, _) = sample();
        let long = format!("/ipfs/{}", "a".repeat(MAX_RECORD_SIZE));
        assert!(matches!(
            Record::sign(&k, &long, 0, at(0, 0), DEFAULT_TTL),
            Err(RecordError::TooLarge { .. })
        ));
        let big = vec![0u8; MAX_RECORD_SIZE + 1];
        assert_eq!(
            Record::verify(&name(&k), &big),
            Err(RecordError::TooLarge {
                size: MAX_RECORD_SIZE + 1
            })
        );
    }

    #[test]
    fn sign_refuses_what_others_cannot_read() {
        let k = key(1);
        let t = at(2_000_000_000, 0);
        for bad in ["", "/", "ipfs/x", "bafy"] {
            assert_eq!(
                Record::sign(&k, bad, 0, t, DEFAULT_TTL),
                Err(RecordError::InvalidValue(bad.into()))
            );
        }
        assert!(matches!(
            Record::sign(&k, CID_PATH, MAX_INT + 1, t, DEFAULT_TTL),
            Err(RecordError::OutOfRange(_))
        ));
        assert!(Record::sign(&k, CID_PATH, MAX_INT, t, DEFAULT_TTL).is_ok());
        assert!(matches!(
            Record::sign(
                &k,
                CID_PATH,
                0,
                t,
                Duration::from_nanos(MAX_INT) + Duration::from_nanos(1)
            ),
            Err(RecordError::OutOfRange(_))
        ));
        assert!(matches!(
            Record::sign(&k, CID_PATH, 0, at(253_402_300_800, 0), DEFAULT_TTL),
            Err(RecordError::OutOfRange(_))
        ));
    }

    #[test]
    fn expiry_is_inclusive() {
        let (_, r) = sample();
        let v = r.validity();
        assert!(!r.is_expired(v));
        assert!(r.is_expired(v + Duration::from_nanos(1)));
        assert!(!r.is_expired(UNIX_EPOCH));
    }

    #[test]
    fn best_record() {
        let k = key(3);
        let t = at(2_000_000_000, 0);
        let sign = |seq, t| Record::sign(&k, CID_PATH, seq, t, DEFAULT_TTL).unwrap();
        let (a, b) = (sign(1, t), sign(2, t - Duration::from_secs(3600)));
        assert!(b.better(&a) && !a.better(&b), "higher sequence wins");
        let c = sign(2, t);
        assert!(c.better(&b) && !b.better(&c), "then later validity");
        let d = Record::sign(&k, "/ipfs/other", 2, t, DEFAULT_TTL).unwrap();
        assert!(c.better(&d) != d.better(&c), "then a fixed order");
        assert!(!c.better(&c));
    }

    #[test]
    fn unknown_data_keys_and_fields_are_ignored() {
        let k = key(4);
        #[derive(Serialize)]
        struct Extended {
            #[serde(rename = "Value")]
            value: CborBytes,
            #[serde(rename = "Validity")]
            validity: CborBytes,
            #[serde(rename = "ValidityType")]
            validity_type: u64,
            #[serde(rename = "Sequence")]
            sequence: u64,
            #[serde(rename = "TTL")]
            ttl: u64,
            #[serde(rename = "_meshcast")]
            extra: Vec<String>,
        }
        let data = serde_ipld_dagcbor::to_vec(&Extended {
            value: CborBytes(CID_PATH.into()),
            validity: CborBytes(b"2033-05-18T03:33:20Z".to_vec()),
            validity_type: 0,
            sequence: 9,
            ttl: 1,
            extra: vec!["x".into()],
        })
        .unwrap();
        let sig = k.sign(&signature_v2_input(&data)).unwrap();
        let mut bytes = Entry {
            signature_v2: Some(&sig),
            data: Some(&data),
            ..Entry::default()
        }
        .encode();
        // Field 15, length-delimited: a field from a future version.
        bytes.extend([0x7a, 0x01, 0xff]);
        let r = Record::verify(&name(&k), &bytes).unwrap();
        assert_eq!((r.sequence(), r.ttl()), (9, Duration::from_nanos(1)));
    }

    #[test]
    fn bad_data_is_rejected_after_the_signature() {
        let k = key(5);
        let n = name(&k);
        let signed = |data: &[u8]| {
            let sig = k.sign(&signature_v2_input(data)).unwrap();
            Entry {
                signature_v2: Some(&sig),
                data: Some(data),
                ..Entry::default()
            }
            .encode()
        };
        let data = |validity: &[u8], validity_type: u64| {
            serde_ipld_dagcbor::to_vec(&SignedData {
                value: CborBytes(CID_PATH.into()),
                validity: CborBytes(validity.to_vec()),
                validity_type,
                sequence: 0,
                ttl: 0,
            })
            .unwrap()
        };
        assert_eq!(
            Record::verify(&n, &signed(&data(b"2033-05-18T03:33:20Z", 1))),
            Err(RecordError::UnsupportedValidityType(1))
        );
        assert!(matches!(
            Record::verify(&n, &signed(&data(b"tomorrow", 0))),
            Err(RecordError::Validity { .. })
        ));
        assert!(matches!(
            Record::verify(&n, &signed(b"\xa0")),
            Err(RecordError::Data(_))
        ));
        assert!(matches!(
            Record::verify(&n, &signed(b"not cbor")),
            Err(RecordError::Data(_))
        ));
    }

    fn any_validity() -> impl Strategy<Value = SystemTime> {
        // Years 0000 to 9999.
        (-62_167_219_200i64..=253_402_300_799, 0u32..1_000_000_000).prop_map(|(s, n)| {
            let whole = Duration::from_secs(s.unsigned_abs());
            let t = if s >= 0 {
                UNIX_EPOCH + whole
            } else {
                UNIX_EPOCH - whole
            };
            t + Duration::from_nanos(u64::from(n))
        })
    }

    proptest! {
        #[test]
        fn round_trip(
            seed in any::<u8>(),
            path in "[a-zA-Z0-9/._-]{1,300}",
            sequence in 0..=MAX_INT,
            validity in any_validity(),
            ttl_ns in 0..=MAX_INT,
        ) {
            let k = key(seed);
            let value = format!("/ipns/{path}");
            let ttl = Duration::from_nanos(ttl_ns);
            let r = Record::sign(&k, &value, sequence, validity, ttl).unwrap();
            let v = Record::verify(&name(&k), &r.to_bytes()).unwrap();
            prop_assert_eq!(v.value(), value.as_str());
            prop_assert_eq!(v.sequence(), sequence);
            prop_assert_eq!(v.validity(), validity);
            prop_assert_eq!(v.ttl(), ttl);
            prop_assert_eq!(&v, &r);
        }

        /// No single changed byte makes a record say something else: either
        /// it no longer verifies, or it verifies with the same contents (a
        /// changed legacy signature, which nobody checks).
        #[test]
        fn tampering_never_changes_meaning(index in any::<prop::sample::Index>(), flip in 1u8..=255) {
            let (k, r) = sample();
            let mut bytes = r.to_bytes().to_vec();
            let i = index.index(bytes.len());
            bytes[i] ^= flip;
            if let Ok(t) = Record::verify(&name(&k), &bytes) {
                prop_assert_eq!(t.value(), r.value());
                prop_assert_eq!(t.sequence(), r.sequence());
                prop_assert_eq!(t.validity(), r.validity());
                prop_assert_eq!(t.ttl(), r.ttl());
            }
        }

        #[test]
        fn verify_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..600)) {
            let _ = Record::verify(&name(&key(1)), &bytes);
        }

        /// Well-formed protobuf around arbitrary field contents, so the
        /// CBOR and key decoders see garbage too.
        #[test]
        fn verify_never_panics_on_structured_garbage(
            data in prop::collection::vec(any::<u8>(), 1..300),
            sig in prop::collection::vec(any::<u8>(), 1..80),
            pub_key in prop::option::of(prop::collection::vec(any::<u8>(), 0..80)),
            value in prop::option::of(prop::collection::vec(any::<u8>(), 0..40)),
        ) {
            let bytes = Entry {
                value: value.as_deref(),
                pub_key: pub_key.as_deref(),
                signature_v2: Some(&sig),
                data: Some(&data),
                ..Entry::default()
            }
            .encode();
            let _ = Record::verify(&name(&key(1)), &bytes);
        }
    }
}
