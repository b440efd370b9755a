//! The bodies of the fuzz targets: what each parser of untrusted bytes is
//! given and which properties must hold, whatever the input.
//!
//! ```text
//! fuzz/fuzz_targets/<name>.rs (cargo fuzz, libFuzzer) --bytes--> fuzzing::<name>
//! fuzzing::tests (cargo test, stable) --fuzz/corpus/<name>/* + mutations--> fuzzing::<name>
//! ```
//!
//! One body per target, so that the corpus the fuzzers grew is replayed by
//! the plain test suite on every change (with a short bounded run of
//! mutations of it), without libFuzzer or a nightly compiler. A body
//! returns on input its parser refuses and panics only when a property
//! fails.

use crate::http::gateway::parsers;
use crate::ipns::record::Record;
use crate::ipns::Name;
use crate::p2p::bitswap::message::{Message, Protocol};
use crate::rtmp::chunk::{ChunkDecoder, ChunkLimits};
use crate::rtmp::{amf, Event, Session, SessionConfig};
use crate::store::car::{CarReader, MAX_BLOCK};
use bytes::{Bytes, BytesMut};

/// A target: its name (a directory of `fuzz/corpus`) and its body.
pub type Target = (&'static str, fn(&[u8]));

/// Every target.
pub const TARGETS: &[Target] = &[
    ("chunk", chunk),
    ("amf0", amf0),
    ("flv", flv),
    ("session", session),
    ("range", range),
    ("car", car),
    ("bitswap", bitswap),
    ("ipns", ipns),
    ("playlist", playlist),
    ("announce", announce),
];

/// The chunk decoder on arbitrary bytes, fed in two reads split where the
/// first byte says, with small limits so the bounds are exercised too.
pub fn chunk(data: &[u8]) {
    let Some((&split, data)) = data.split_first() else {
        return;
    };
    let split = usize::from(split).min(data.len());
    let mut decoder = ChunkDecoder::new(ChunkLimits {
        max_chunk_size: 1 << 16,
        max_message_size: 1 << 16,
        max_chunk_streams: 8,
        max_pending_bytes: 1 << 17,
    });
    let mut input = BytesMut::new();
    for piece in [&data[..split], &data[split..]] {
        input.extend_from_slice(piece);
        loop {
            match decoder.decode(&mut input) {
                Ok(Some(msg)) => assert!(msg.payload.len() <= 1 << 16),
                Ok(None) => break,
                Err(_) => return,
            }
        }
    }
}

/// AMF0: whatever decodes re-encodes to bytes that decode and re-encode
/// identically (compared as bytes: NaN never equals itself).
pub fn amf0(data: &[u8]) {
    let Ok(values) = amf::decode_all(data) else {
        return;
    };
    let mut first = Vec::new();
    amf::encode_all(&values, &mut first);
    let again = amf::decode_all(&first).expect("our own encoding decodes");
    let mut second = Vec::new();
    amf::encode_all(&again, &mut second);
    assert_eq!(first, second);
}

/// The FLV audio and video tag parsers.
pub fn flv(data: &[u8]) {
    let data = Bytes::copy_from_slice(data);
    let _ = crate::media::flv::parse_video(&data);
    let _ = crate::media::flv::parse_audio(&data);
    let _ = crate::media::flv::parse_audio_specific_config(data);
}

/// A whole RTMP server session: a plain handshake, then the bytes as the
/// chunk stream, accepting any publish request it raises.
pub fn session(data: &[u8]) {
    let mut session = Session::new(SessionConfig::default(), [0; 1536]);
    let mut hello = vec![3u8; 1 + 2 * 1536];
    hello[1..1 + 1536].fill(0);
    if session.handle_input(&hello).is_err() {
        return;
    }
    for piece in data.chunks(512) {
        if session.handle_input(piece).is_err() {
            return;
        }
        while let Some(event) = session.poll_event() {
            if let Event::PublishRequest { .. } = event {
                let _ = session.accept_publish();
            }
        }
        while session.poll_transmit().is_some() {}
    }
}

/// The gateway's `Range` parser: the first eight bytes are the file's size
/// (little endian), the rest the header value. A range it picks lies
/// within the file and is not empty.
pub fn range(data: &[u8]) {
    if data.len() < 8 {
        return;
    }
    let (size, value) = data.split_at(8);
    let size = u64::from_le_bytes(size.try_into().expect("eight bytes"));
    if let Some(Ok((start, end))) = parsers::byte_range(value, size) {
        assert!(start < end && end <= size, "{start}..{end} of {size}");
    }
}

/// The CAR reader (`dag import`, and CARs peers send): every block it
/// yields is within the size bound and hashes to its CID; it stops at the
/// first error.
pub fn car(data: &[u8]) {
    let Ok(mut reader) = CarReader::new(data) else {
        return;
    };
    let _ = reader.roots();
    while let Ok(Some(block)) = reader.next_block() {
        assert!(block.data.len() <= MAX_BLOCK);
        assert!(
            crate::store::verify_bytes(&block.cid, &block.data).is_ok(),
            "{} does not match its bytes",
            block.cid
        );
    }
}

/// A Bitswap message body from a peer: what decodes encodes (as 1.2.0)
/// to a message that decodes to the same bytes again.
pub fn bitswap(data: &[u8]) {
    let Ok(msg) = Message::decode(&Bytes::copy_from_slice(data)) else {
        return;
    };
    let first = msg.encode(Protocol::V120);
    let again = Message::decode(&Bytes::from(first.clone())).expect("our own encoding decodes");
    assert_eq!(again.encode(Protocol::V120), first);
}

/// The key the `ipns` target's corpus records are signed with.
pub fn ipns_key() -> libp2p::identity::Keypair {
    libp2p::identity::Keypair::ed25519_from_bytes([7; 32]).expect("32 bytes are an Ed25519 key")
}

/// An IPNS record for [`ipns_key`]'s name (a peer could send anything on
/// the name's topic): one that verifies re-encodes to bytes that verify
/// to the same record.
pub fn ipns(data: &[u8]) {
    static NAME: std::sync::LazyLock<Name> =
        std::sync::LazyLock::new(|| Name::from_peer_id(ipns_key().public().to_peer_id()));
    let Ok(record) = Record::verify(&NAME, data) else {
        return;
    };
    let _ = (record.value(), record.sequence(), record.ttl());
    let again = Record::verify(&NAME, &record.to_bytes()).expect("a verified record verifies");
    assert_eq!(again.to_bytes(), record.to_bytes());
}

/// A part announcement on a followed name's topic, where any peer may
/// publish: taken as it came, and, so that mutations reach the payload's
/// parser past the signature, as a payload signed with the name's key
/// ([`ipns_key`]). What decodes re-encodes to bytes that decode the same.
pub fn announce(data: &[u8]) {
    use crate::ipns::announce::{AnnounceError, Announcement, DOMAIN};
    static KEY: std::sync::LazyLock<libp2p::identity::Keypair> = std::sync::LazyLock::new(ipns_key);
    static NAME: std::sync::LazyLock<Name> =
        std::sync::LazyLock::new(|| Name::from_peer_id(KEY.public().to_peer_id()));
    let mut signed = data.to_vec();
    let signature = KEY
        .sign(&[DOMAIN, data].concat())
        .expect("Ed25519 signs anything");
    signed.extend_from_slice(&signature);
    for bytes in [data, &signed[..]] {
        let Ok(a) = Announcement::decode(&NAME, bytes) else {
            continue;
        };
        match a.encode(&KEY) {
            Ok(again) => assert_eq!(
                Announcement::decode(&NAME, &again).expect("our own announcement decodes"),
                a
            ),
            // Escapes the input left out can make the canonical JSON longer.
            Err(AnnounceError::TooLong(_)) => {}
            Err(e) => panic!("a decoded announcement does not encode: {e}"),
        }
    }
}

/// What a playlist hands to the gateway and to a mirror: each line is
/// taken as a request target (`/ipfs/<cid>?filename=...`, as segment URIs
/// are), and the whole text as a followed stream's playlist is read.
pub fn playlist(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    for line in text.lines().take(64) {
        let _ = parsers::request_target(line);
    }
    let cids = crate::mirror::media_cids(text);
    assert!(cids.len() <= text.lines().count());
    let secs = crate::mirror::playlist_duration(text);
    assert!(!secs.is_nan() || text.contains("NaN") || text.contains("nan"));
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;
    use std::time::{Duration, Instant};

    /// How long each target's mutations run: the suite's share of fuzzing
    /// on every change (the corpus itself is always replayed whole).
    const MUTATE_FOR: Duration = Duration::from_millis(1500);

    fn corpus(target: &str) -> Vec<Vec<u8>> {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("fuzz/corpus")
            .join(target);
        let mut out: Vec<Vec<u8>> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|e| std::fs::read(e.unwrap().path()).unwrap())
            .collect();
        out.sort();
        out
    }

    /// xorshift64*: reproducible mutations without a dependency.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }
        fn below(&mut self, n: usize) -> usize {
            (self.next() % n.max(1) as u64) as usize
        }
    }

    /// One of libFuzzer's simpler mutations of `input` (with `other` for
    /// splices): flip, set, insert, remove, duplicate or splice bytes.
    fn mutate(rng: &mut Rng, input: &[u8], other: &[u8]) -> Vec<u8> {
        let mut out = input.to_vec();
        for _ in 0..1 + rng.below(4) {
            let at = rng.below(out.len() + 1);
            match rng.below(6) {
                0 if !out.is_empty() => {
                    let i = at.min(out.len() - 1);
                    out[i] ^= 1 << rng.below(8);
                }
                1 if !out.is_empty() => {
                    let i = at.min(out.len() - 1);
                    out[i] = [0, 0xff, 0x7f, 0x80, b'0', b'-'][rng.below(6)];
                }
                2 => out.insert(at, rng.next() as u8),
                3 if !out.is_empty() => {
                    let n = rng.below(8).min(out.len() - at.min(out.len()));
                    out.drain(at.min(out.len())..at.min(out.len()) + n);
                }
                4 if !out.is_empty() && out.len() < 1 << 16 => {
                    let from = rng.below(out.len());
                    let n = rng.below(32).min(out.len() - from);
                    let piece: Vec<u8> = out[from..from + n].to_vec();
                    out.splice(at..at, piece);
                }
                _ if !other.is_empty() => {
                    let from = rng.below(other.len());
                    out.truncate(at);
                    out.extend_from_slice(&other[from..]);
                }
                _ => {}
            }
        }
        out
    }

    /// Valid inputs for every target, written to `fuzz/corpus/<target>/seed-*`
    /// (run with `--ignored` after a format changes; the fuzzers grow the
    /// corpus from these).
    #[test]
    #[ignore]
    fn write_seed_corpus() {
        use crate::p2p::bitswap::message::{BlockData, Entry, Presence, WantType};
        use crate::rtmp::{Amf0Value, ChunkEncoder, RawMessage};
        use crate::store::{car, Block, RAW};
        let block = Block::new(cid::Version::V1, RAW, Bytes::from_static(b"hello fuzz"));
        let connect = {
            let mut payload = Vec::new();
            amf::encode_all(
                &[
                    Amf0Value::String("connect".into()),
                    Amf0Value::Number(1.0),
                    Amf0Value::Object(vec![("app".into(), Amf0Value::String("live".into()))]),
                    Amf0Value::Null,
                ],
                &mut payload,
            );
            payload
        };
        let chunked = |type_id: u8, payload: &[u8]| {
            let mut out = BytesMut::new();
            ChunkEncoder::new()
                .encode(
                    &RawMessage {
                        csid: 3,
                        timestamp: 0,
                        type_id,
                        stream_id: 0,
                        payload: Bytes::copy_from_slice(payload),
                    },
                    &mut out,
                )
                .unwrap();
            out.to_vec()
        };
        let sized = |size: u64, v: &str| [&size.to_le_bytes()[..], v.as_bytes()].concat();
        let mut car_bytes = car::header(&[block.cid]);
        car_bytes.extend(car::section(&block.cid, &block.data));
        let record = Record::sign(
            &ipns_key(),
            &format!("/ipfs/{}", block.cid),
            7,
            std::time::UNIX_EPOCH + Duration::from_secs(4_000_000_000),
            Duration::from_secs(60),
        )
        .unwrap();
        let message = Message {
            full: true,
            wantlist: vec![
                Entry::want(block.cid, 5, WantType::Have, true),
                Entry::cancel(block.cid),
            ],
            blocks: vec![BlockData::new(&block.cid, block.data.clone())],
            presences: vec![Presence {
                cid: block.cid,
                have: false,
            }],
            pending_bytes: 3,
        };
        let playlist = format!(
            "#EXTM3U\n#EXT-X-VERSION:7\n#EXT-X-TARGETDURATION:2\n#EXT-X-MEDIA-SEQUENCE:3\n\
             #EXT-X-MAP:URI=\"/ipfs/{c}?filename=init-0.mp4\"\n\
             #EXT-X-PROGRAM-DATE-TIME:2026-01-01T00:00:00.000Z\n#EXTINF:2.000,\n\
             /ipfs/{c}?filename=000001.m4s\n#EXT-X-GAP\n#EXTINF:1.960,\n\
             /ipfs/bafkqaaa?filename=gap-000002.m4s\n#EXT-X-DISCONTINUITY\n#EXTINF:2.5,\n\
             /ipfs/{c}/a/b?format=car&dag-scope=entity&entity-bytes=0-10\n#EXT-X-ENDLIST\n",
            c = block.cid
        );
        // Part announcements as sent (signed) and as payloads (the target
        // signs its input too).
        let announcements: Vec<Vec<u8>> = [Some(0), Some(3), None]
            .into_iter()
            .enumerate()
            .flat_map(|(i, part)| {
                use crate::ipns::announce::{Announcement, Media};
                let key = ipns_key();
                let a = Announcement {
                    name: Name::from_peer_id(key.public().to_peer_id()),
                    sequence: 1_700_000_000_000_000 + i as u64,
                    timestamp_ms: 1_700_000_000_000,
                    media: Media {
                        session: "20261203T120000Z".into(),
                        msn: 7,
                        part,
                        cid: block.cid,
                        duration_ms: 300,
                        independent: i == 0,
                        discontinuity: i == 2,
                        program_date_time_ms: 1_700_000_000_000,
                        init: Some(block.cid),
                        target_duration_secs: 2,
                        part_target_ms: 300,
                    },
                };
                let signed = a.encode(&key).unwrap();
                let payload = signed[..signed.len() - 64].to_vec();
                [signed, payload]
            })
            .chain([b"{\"v\":1}".to_vec()])
            .collect();
        let seeds: Vec<(&str, Vec<Vec<u8>>)> = vec![
            ("chunk", vec![[&[7u8][..], &chunked(20, &connect)].concat()]),
            ("amf0", vec![connect.clone()]),
            (
                "flv",
                vec![
                    vec![0x17, 0, 0, 0, 0, 1, 0x64, 0, 0x1f, 0xff, 0xe1, 0, 0],
                    vec![0xaf, 0, 0x12, 0x10],
                ],
            ),
            (
                "session",
                vec![chunked(20, &connect), chunked(1, &[0, 0, 0x10, 0])],
            ),
            (
                "range",
                vec![
                    sized(1000, "bytes=0-99"),
                    sized(1000, "bytes=-5"),
                    sized(1000, "bytes=990-"),
                    sized(1000, "bytes=0-18446744073709551616"),
                    sized(0, "bytes=0-0,5-6"),
                ],
            ),
            ("car", vec![car_bytes]),
            (
                "bitswap",
                vec![
                    message.encode(Protocol::V120),
                    message.encode(Protocol::V110),
                    message.encode(Protocol::V100),
                ],
            ),
            ("ipns", vec![record.to_bytes().to_vec()]),
            ("playlist", vec![playlist.into_bytes()]),
            ("announce", announcements),
        ];
        for (name, inputs) in seeds {
            let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("fuzz/corpus")
                .join(name);
            std::fs::create_dir_all(&dir).unwrap();
            for (i, input) in inputs.iter().enumerate() {
                let body = TARGETS.iter().find(|(n, _)| *n == name).unwrap().1;
                body(input);
                std::fs::write(dir.join(format!("seed-{i}")), input).unwrap();
            }
        }
    }

    #[test]
    fn every_target_has_a_corpus_and_a_fuzz_binary() {
        let manifest =
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/fuzz/Cargo.toml"))
                .unwrap();
        for (name, _) in TARGETS {
            assert!(!corpus(name).is_empty(), "fuzz/corpus/{name} is empty");
            assert!(
                manifest.contains(&format!("path = \"fuzz_targets/{name}.rs\"")),
                "fuzz/Cargo.toml has no target {name}"
            );
        }
    }

    #[test]
    fn the_announce_corpus_holds_announcements_that_verify() {
        use crate::ipns::announce::Announcement;
        let name = Name::from_peer_id(ipns_key().public().to_peer_id());
        let valid = corpus("announce")
            .iter()
            .filter(|input| Announcement::decode(&name, input).is_ok())
            .count();
        assert!(valid >= 3, "{valid} signed announcements in the corpus");
    }

    #[test]
    fn the_corpus_replays_and_mutations_of_it_hold() {
        let seed = match std::env::var("MESHCAST_FUZZ_SEED") {
            Ok(s) => s.parse().expect("MESHCAST_FUZZ_SEED is a number"),
            Err(_) => {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_nanos() as u64
                    | 1
            }
        };
        for (name, body) in TARGETS {
            let inputs = corpus(name);
            for input in &inputs {
                body(input);
            }
            let mut rng = Rng(seed);
            let start = Instant::now();
            let mut runs = 0u64;
            while start.elapsed() < MUTATE_FOR {
                let a = &inputs[rng.below(inputs.len())];
                let b = &inputs[rng.below(inputs.len())];
                let input = mutate(&mut rng, a, b);
                let caught = std::panic::catch_unwind(|| body(&input));
                if caught.is_err() {
                    panic!(
                        "fuzz target {name} failed on a mutation (seed {seed}, \
                         MESHCAST_FUZZ_SEED replays); input: {input:02x?}"
                    );
                }
                runs += 1;
            }
            eprintln!(
                "fuzz {name}: {} corpus inputs, {runs} mutations",
                inputs.len()
            );
        }
    }
}
