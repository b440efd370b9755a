//! The node's identity on disk: the node key, and the key and sequence
//! numbers that sign its pubsub messages.
//!
//! Flow: [`node_key`] reads `node.key` from the data directory or creates it
//! (Ed25519) on first start; [`pubsub_author`] picks the pubsub signer (the
//! node key until a start finds the clock behind the last message sent, then
//! a fresh key, kept in `pubsub.key`) and returns the [`PubsubSeqno`] the
//! swarm task records every publish in.

use super::P2pError;
use crate::store::StoreError;
use libp2p::identity::{KeyType, Keypair};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

/// The file that keeps the node's identity in the data directory.
const NODE_KEY_FILE: &str = "node.key";
/// The key that signs pubsub messages, and the highest message sequence
/// number it may have used (see [`pubsub_author`]).
const PUBSUB_KEY_FILE: &str = "pubsub.key";
const PUBSUB_SEQNO_FILE: &str = "pubsub.seqno";

/// Reads the node key from `dir`, or creates one (Ed25519) on first start.
pub fn node_key(dir: &Path) -> Result<Keypair, P2pError> {
    load_or_create_key(&dir.join(NODE_KEY_FILE))
}

fn load_or_create_key(path: &Path) -> Result<Keypair, P2pError> {
    match std::fs::read(path) {
        Ok(bytes) => {
            let bad = |reason: String| P2pError::BadKey {
                path: path.to_owned(),
                reason,
            };
            let key = Keypair::from_protobuf_encoding(&bytes).map_err(|e| bad(e.to_string()))?;
            // libp2p reads every key type (peers have them), but ours stay
            // Ed25519: a peer id that inlines the key, and small signatures.
            if key.key_type() != KeyType::Ed25519 {
                return Err(bad(format!("the key is {}", key.key_type())));
            }
            Ok(key)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let key = Keypair::generate_ed25519();
            let bytes = key
                .to_protobuf_encoding()
                .expect("an Ed25519 key always encodes");
            crate::store::write_secret(path, &bytes)?;
            Ok(key)
        }
        Err(e) => Err(StoreError::io("read", path)(e).into()),
    }
}

/// The key that signs our pubsub messages.
///
/// gossipsub numbers a signer's messages from the wall clock at start
/// (nanoseconds), and kubo drops a message whose number is not above the
/// last it saw from that signer, remembering it across restarts. A node
/// whose clock went backwards (no NTP on an offline mesh) would be muted
/// until the clock caught up. So the highest number this signer may have
/// used is kept in the data directory, and when the clock is behind it the
/// node signs with a fresh key: every signer's numbers only grow. The
/// pubsub signer need not be the node's identity; IPNS records carry
/// their own signature.
pub(super) fn pubsub_author(
    dir: &Path,
    node: &Keypair,
) -> Result<(Keypair, PubsubSeqno), P2pError> {
    let seq_path = dir.join(PUBSUB_SEQNO_FILE);
    let key_path = dir.join(PUBSUB_KEY_FILE);
    let high: u64 = std::fs::read_to_string(&seq_path)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0);
    let now = unix_nanos(SystemTime::now());
    let key = if now <= high {
        tracing::warn!(
            "the clock is behind the last pubsub message this node sent; signing pubsub with a new key"
        );
        let key = Keypair::generate_ed25519();
        let bytes = key.to_protobuf_encoding().expect("Ed25519 encodes");
        crate::store::write_secret(&key_path, &bytes)?;
        key
    } else if key_path.exists() {
        load_or_create_key(&key_path)?
    } else {
        node.clone()
    };
    Ok((
        key,
        PubsubSeqno {
            path: seq_path,
            start: now,
            sent: 0,
        },
    ))
}

/// Tracks the highest pubsub sequence number used, as gossipsub assigns
/// them (start time in nanoseconds, then one more per message).
pub(super) struct PubsubSeqno {
    path: PathBuf,
    start: u64,
    sent: u64,
}

impl PubsubSeqno {
    pub(super) fn record_publish(&mut self) {
        self.sent += 1;
        let high = self.start.saturating_add(self.sent);
        // Not fsynced: losing the last few numbers in a crash only matters
        // if the clock also went backwards by less than that.
        if let Err(e) = std::fs::write(&self.path, format!("{high}\n")) {
            tracing::warn!("cannot record the pubsub sequence number: {e}");
        }
    }
}

fn unix_nanos(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_nanos().min(u64::MAX as u128) as u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_key_persists() {
        let dir = tempfile::tempdir().unwrap();
        let a = node_key(dir.path()).unwrap();
        let b = node_key(dir.path()).unwrap();
        assert_eq!(a.public(), b.public());
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join(NODE_KEY_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "the key is readable by its owner only");
        std::fs::write(dir.path().join(NODE_KEY_FILE), b"junk").unwrap();
        assert!(matches!(node_key(dir.path()), Err(P2pError::BadKey { .. })));
        let ecdsa = Keypair::generate_ecdsa().to_protobuf_encoding().unwrap();
        std::fs::write(dir.path().join(NODE_KEY_FILE), ecdsa).unwrap();
        assert!(matches!(node_key(dir.path()), Err(P2pError::BadKey { .. })));
    }

    #[test]
    fn pubsub_signer_changes_only_when_the_clock_went_back() {
        let dir = tempfile::tempdir().unwrap();
        let node = node_key(dir.path()).unwrap();
        // First start: the node's own key, numbering from now.
        let (author, mut seq) = pubsub_author(dir.path(), &node).unwrap();
        assert_eq!(author.public(), node.public());
        seq.record_publish();
        // Clock fine: same signer.
        let (author, _) = pubsub_author(dir.path(), &node).unwrap();
        assert_eq!(author.public(), node.public());
        // The last number used lies in the future (the clock went back):
        // a new signer, kept for later starts.
        let future = unix_nanos(SystemTime::now()) + 3 * 86_400 * 1_000_000_000;
        std::fs::write(dir.path().join(PUBSUB_SEQNO_FILE), format!("{future}\n")).unwrap();
        let (fresh, _) = pubsub_author(dir.path(), &node).unwrap();
        assert_ne!(fresh.public(), node.public());
        std::fs::write(dir.path().join(PUBSUB_SEQNO_FILE), "1\n").unwrap();
        let (again, _) = pubsub_author(dir.path(), &node).unwrap();
        assert_eq!(again.public(), fresh.public());
    }
}
