//! Stream keys, and the last IPNS record signed with each.
//!
//! On disk, under the data directory:
//!
//! ```text
//! keys/<stream>          the stream's Ed25519 keypair, libp2p protobuf `PrivateKey`
//!                        (what kubo's and js-libp2p's keystores hold), mode 0600
//! ipns/<stream>.record   the last record signed with it (a serialized IpnsEntry)
//! ipns/<stream>.lock     locked (flock) while the next record is signed
//! ```
//!
//! Key names are stream names ([`StreamName::is_valid`]), so
//! they are safe as file names. Files are written to a temporary name,
//! synced and moved into place, so a crash leaves the old file or the new
//! one, never a torn one. A key is moved into place with a hard link, which
//! fails rather than replace a key another process created a moment
//! earlier: whoever comes second uses the first one's key.
//!
//! [`KeyStore::sign_next`] numbers records from the stored last record, not
//! from the clock, and stores the new one before returning it, so sequence
//! numbers only grow, across restarts and clock jumps alike.

use super::record::{Record, RecordError};
use super::Name;
use crate::name::{StreamName, MAX_STREAM_NAME_LEN};
use libp2p::identity::{KeyType, Keypair};
use std::fs::{self, File};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};
use thiserror::Error;

/// Why a key or record could not be read, created or stored.
#[derive(Debug, Error)]
pub enum KeyError {
    /// The key name is not a stream name.
    #[error("key name {0:?} is not a stream name: use 1 to {MAX_STREAM_NAME_LEN} letters, digits, '-' or '_'")]
    InvalidName(String),
    /// A file operation failed.
    #[error("cannot {action} {path}: {source}")]
    Io {
        /// What was being done.
        action: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// A key file does not hold an Ed25519 keypair.
    #[error("key file {path} is not a libp2p Ed25519 private key ({reason}); restore it from a backup, or move it away to make a new key (and a new name)")]
    KeyFile {
        /// The file.
        path: PathBuf,
        /// What the decoder said, or which other key type it holds.
        reason: String,
    },
    /// The stored last record does not verify with its key.
    #[error("the last record in {path} is unusable ({source}); signing again from sequence 0 could lose to it on the network, so restore or remove it deliberately")]
    RecordFile {
        /// The file.
        path: PathBuf,
        /// Why it does not verify.
        source: RecordError,
    },
    /// A record is stored for a key that does not exist.
    #[error("{path} holds a record for key {name:?}, which does not exist")]
    NoKey {
        /// The key name.
        name: String,
        /// The record file.
        path: PathBuf,
    },
    /// The record could not be signed.
    #[error("cannot sign the next record for key {name:?}: {source}")]
    Sign {
        /// The key name.
        name: String,
        /// Why.
        source: RecordError,
    },
}

impl KeyError {
    fn io(action: &'static str, path: &Path) -> impl FnOnce(io::Error) -> Self {
        let path = path.to_path_buf();
        move |source| Self::Io {
            action,
            path,
            source,
        }
    }
}

/// The directory, inside the data directory, that holds the keys.
pub const KEYS_DIR: &str = "keys";

/// The keys of a data directory and the last record of each.
#[derive(Debug, Clone)]
pub struct KeyStore {
    keys: PathBuf,
    records: PathBuf,
}

/// Makes temporary file names unique within the process (the pid makes
/// them unique between processes).
static TMP_COUNTER: AtomicU64 = AtomicU64::new(0);

impl KeyStore {
    /// Opens the store in the data directory `data_dir`, creating `keys/`
    /// (mode 0700) and `ipns/` if needed.
    pub fn open(data_dir: &Path) -> Result<Self, KeyError> {
        let keys = data_dir.join(KEYS_DIR);
        let records = data_dir.join("ipns");
        fs::create_dir_all(&records).map_err(KeyError::io("create", &records))?;
        match fs::DirBuilder::new().mode(0o700).create(&keys) {
            Err(e) if e.kind() != io::ErrorKind::AlreadyExists => {
                return Err(KeyError::io("create", &keys)(e))
            }
            _ => {}
        }
        Ok(Self { keys, records })
    }

    /// The key named `name`, if it exists.
    pub fn get(&self, name: &str) -> Result<Option<Keypair>, KeyError> {
        let path = self.key_path(name)?;
        match fs::read(&path) {
            Ok(bytes) => decode_key(&path, &bytes).map(Some),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(KeyError::io("read", &path)(e)),
        }
    }

    /// The key named `name`, created (Ed25519) if it does not exist yet.
    pub fn get_or_create(&self, name: &str) -> Result<Keypair, KeyError> {
        if let Some(key) = self.get(name)? {
            return Ok(key);
        }
        let path = self.key_path(name)?;
        let key = Keypair::generate_ed25519();
        let bytes = key.to_protobuf_encoding().map_err(|e| KeyError::KeyFile {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        let tmp = tmp_path(&self.keys, name);
        write_synced(&tmp, &bytes, 0o600)?;
        let linked = fs::hard_link(&tmp, &path);
        let _ = fs::remove_file(&tmp);
        match linked {
            Ok(()) => {
                sync_dir(&self.keys)?;
                Ok(key)
            }
            // Another writer won the race: its key is the key.
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                let bytes = fs::read(&path).map_err(KeyError::io("read", &path))?;
                decode_key(&path, &bytes)
            }
            Err(e) => Err(KeyError::io("create", &path)(e)),
        }
    }

    /// Every key as `(key name, IPNS name)`, sorted by key name. Secrets
    /// never leave the store this way.
    pub fn list(&self) -> Result<Vec<(String, Name)>, KeyError> {
        let mut out = Vec::new();
        let entries = fs::read_dir(&self.keys).map_err(KeyError::io("list", &self.keys))?;
        for entry in entries {
            let entry = entry.map_err(KeyError::io("list", &self.keys))?;
            let Some(file) = entry.file_name().to_str().map(str::to_owned) else {
                continue;
            };
            // Temporary files start with '.', which no key name does.
            if !StreamName::is_valid(&file) {
                continue;
            }
            let path = entry.path();
            let bytes = match fs::read(&path) {
                Ok(b) => b,
                // Not a file (a directory someone made), or removed meanwhile.
                Err(e)
                    if e.kind() == io::ErrorKind::NotFound
                        || e.kind() == io::ErrorKind::IsADirectory =>
                {
                    continue
                }
                Err(e) => return Err(KeyError::io("read", &path)(e)),
            };
            let key = decode_key(&path, &bytes)?;
            out.push((file, Name::from_public_key(&key.public())));
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(out)
    }

    /// The last record signed with key `name`, checked against the key.
    pub fn last_record(&self, name: &str) -> Result<Option<Record>, KeyError> {
        let path = self.record_path(name)?;
        let bytes = match fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(KeyError::io("read", &path)(e)),
        };
        let key = self.get(name)?.ok_or_else(|| KeyError::NoKey {
            name: name.to_owned(),
            path: path.clone(),
        })?;
        Record::verify(&Name::from_public_key(&key.public()), &bytes)
            .map(Some)
            .map_err(|source| KeyError::RecordFile { path, source })
    }

    /// Signs the next record for key `name` (creating the key if needed):
    /// sequence 0 for the first, the last one's plus 1 after that. The
    /// record is stored as the last record before it is returned; signers
    /// in this and other processes take turns.
    pub fn sign_next(
        &self,
        name: &str,
        value: &str,
        validity: SystemTime,
        ttl: Duration,
    ) -> Result<Record, KeyError> {
        let key = self.get_or_create(name)?;
        let lock_path = self.records.join(format!("{name}.lock"));
        let lock = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(KeyError::io("open", &lock_path))?;
        rustix::fs::flock(&lock, rustix::fs::FlockOperation::LockExclusive)
            .map_err(|e| KeyError::io("lock", &lock_path)(e.into()))?;
        // At the top of the range, `sign` refuses the sequence.
        let sequence = self
            .last_record(name)?
            .map_or(0, |r| r.sequence().saturating_add(1));
        let record = Record::sign(&key, value, sequence, validity, ttl).map_err(|source| {
            KeyError::Sign {
                name: name.to_owned(),
                source,
            }
        })?;
        let path = self.record_path(name)?;
        let tmp = tmp_path(&self.records, name);
        write_synced(&tmp, &record.to_bytes(), 0o644)?;
        fs::rename(&tmp, &path).map_err(KeyError::io("rename", &tmp))?;
        sync_dir(&self.records)?;
        drop(lock);
        Ok(record)
    }

    fn key_path(&self, name: &str) -> Result<PathBuf, KeyError> {
        check_name(name)?;
        Ok(self.keys.join(name))
    }

    fn record_path(&self, name: &str) -> Result<PathBuf, KeyError> {
        check_name(name)?;
        Ok(self.records.join(format!("{name}.record")))
    }
}

fn check_name(name: &str) -> Result<(), KeyError> {
    if StreamName::is_valid(name) {
        Ok(())
    } else {
        Err(KeyError::InvalidName(name.to_owned()))
    }
}

/// Reads a stream key. libp2p reads other key types too (for peers), but a
/// stream's key is Ed25519, so its name inlines the key.
fn decode_key(path: &Path, bytes: &[u8]) -> Result<Keypair, KeyError> {
    let bad = |reason: String| KeyError::KeyFile {
        path: path.to_path_buf(),
        reason,
    };
    let key = Keypair::from_protobuf_encoding(bytes).map_err(|e| bad(e.to_string()))?;
    if key.key_type() != KeyType::Ed25519 {
        return Err(bad(format!("the key is {}", key.key_type())));
    }
    Ok(key)
}

fn tmp_path(dir: &Path, name: &str) -> PathBuf {
    let n = TMP_COUNTER.fetch_add(1, Ordering::Relaxed);
    dir.join(format!(".{name}.{}.{n}.tmp", std::process::id()))
}

/// Creates `path` (which must not exist) with `mode`, writes `bytes` and
/// syncs them.
fn write_synced(path: &Path, bytes: &[u8], mode: u32) -> Result<(), KeyError> {
    let write = || -> io::Result<()> {
        let mut f = File::options()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(path)?;
        f.write_all(bytes)?;
        f.sync_all()
    };
    write().map_err(|e| {
        let _ = fs::remove_file(path);
        KeyError::io("write", path)(e)
    })
}

/// Makes a rename or link in `dir` durable.
fn sync_dir(dir: &Path) -> Result<(), KeyError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(KeyError::io("sync", dir))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;
    use std::time::UNIX_EPOCH;

    const VALUE: &str = "/ipfs/bafkqaddwgevxmmraojswg33smq";

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    fn mode(p: &Path) -> u32 {
        fs::metadata(p).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn keys_are_created_once_and_private() {
        let dir = tempfile::tempdir().unwrap();
        let store = KeyStore::open(dir.path()).unwrap();
        assert!(store.get("live").unwrap().is_none());
        let k = store.get_or_create("live").unwrap();
        assert_eq!(store.get_or_create("live").unwrap().public(), k.public());
        let reopened = KeyStore::open(dir.path()).unwrap();
        assert_eq!(reopened.get("live").unwrap().unwrap().public(), k.public());
        assert_eq!(mode(&dir.path().join("keys/live")), 0o600);
        assert_eq!(mode(&dir.path().join("keys")), 0o700);
        // The file is the libp2p protobuf other keystores read.
        let bytes = fs::read(dir.path().join("keys/live")).unwrap();
        assert_eq!(&bytes[..4], &[0x08, 0x01, 0x12, 0x40]);
    }

    #[test]
    fn list_names_keys_sorted_and_skips_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let store = KeyStore::open(dir.path()).unwrap();
        let b = store.get_or_create("b-stream").unwrap();
        let a = store.get_or_create("a_stream").unwrap();
        fs::write(dir.path().join("keys/.b-stream.1.2.tmp"), b"partial").unwrap();
        fs::create_dir(dir.path().join("keys/subdir")).unwrap();
        let list = store.list().unwrap();
        assert_eq!(
            list,
            vec![
                ("a_stream".into(), Name::from_public_key(&a.public())),
                ("b-stream".into(), Name::from_public_key(&b.public())),
            ]
        );
    }

    #[test]
    fn names_must_be_stream_names() {
        let dir = tempfile::tempdir().unwrap();
        let store = KeyStore::open(dir.path()).unwrap();
        for bad in ["", "..", "../x", "a/b", ".hidden", "x.record", "a b"] {
            assert!(
                matches!(store.get_or_create(bad), Err(KeyError::InvalidName(_))),
                "{bad:?}"
            );
            assert!(matches!(
                store.sign_next(bad, VALUE, at(1), Duration::ZERO),
                Err(KeyError::InvalidName(_))
            ));
        }
    }

    #[test]
    fn corrupt_key_file_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let store = KeyStore::open(dir.path()).unwrap();
        fs::write(dir.path().join("keys/live"), b"garbage").unwrap();
        assert!(matches!(
            store.get_or_create("live"),
            Err(KeyError::KeyFile { .. })
        ));
        assert!(matches!(store.list(), Err(KeyError::KeyFile { .. })));
        // A key libp2p reads, but not of the type stream keys have.
        let secp = Keypair::generate_secp256k1()
            .to_protobuf_encoding()
            .unwrap();
        fs::write(dir.path().join("keys/live"), secp).unwrap();
        assert!(matches!(
            store.get_or_create("live"),
            Err(KeyError::KeyFile { .. })
        ));
    }

    #[test]
    fn sequences_grow_across_restarts_and_clock_jumps() {
        let dir = tempfile::tempdir().unwrap();
        let store = KeyStore::open(dir.path()).unwrap();
        assert!(store.last_record("live").unwrap().is_none());
        let ttl = Duration::from_secs(60);
        let r0 = store
            .sign_next("live", VALUE, at(2_000_000_000), ttl)
            .unwrap();
        assert_eq!(r0.sequence(), 0);
        assert_eq!(store.last_record("live").unwrap(), Some(r0.clone()));
        let store = KeyStore::open(dir.path()).unwrap();
        // The clock went back a day: the sequence still grows.
        let r1 = store
            .sign_next("live", "/ipfs/other", at(2_000_000_000 - 86_400), ttl)
            .unwrap();
        assert_eq!(r1.sequence(), 1);
        assert!(r1.better(&r0));
        let last = store.last_record("live").unwrap().unwrap();
        assert_eq!((last.value(), last.sequence()), ("/ipfs/other", 1));
        let key = store.get("live").unwrap().unwrap();
        assert!(Record::verify(&Name::from_public_key(&key.public()), &last.to_bytes()).is_ok());
        // A failed signing stores nothing.
        assert!(matches!(
            store.sign_next("live", "not a path", at(2_000_000_000), ttl),
            Err(KeyError::Sign { .. })
        ));
        assert_eq!(store.last_record("live").unwrap().unwrap().sequence(), 1);
        assert_eq!(
            fs::read_dir(dir.path().join("ipns"))
                .unwrap()
                .filter(|e| e
                    .as_ref()
                    .unwrap()
                    .file_name()
                    .to_string_lossy()
                    .ends_with(".tmp"))
                .count(),
            0
        );
    }

    #[test]
    fn unusable_last_record_stops_signing() {
        let dir = tempfile::tempdir().unwrap();
        let store = KeyStore::open(dir.path()).unwrap();
        store
            .sign_next("live", VALUE, at(2_000_000_000), Duration::ZERO)
            .unwrap();
        let path = dir.path().join("ipns/live.record");
        let mut bytes = fs::read(&path).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        fs::write(&path, &bytes).unwrap();
        assert!(matches!(
            store.sign_next("live", VALUE, at(2_000_000_000), Duration::ZERO),
            Err(KeyError::RecordFile { .. })
        ));
        // A record of another key is just as unusable.
        let other = KeyStore::open(tempfile::tempdir().unwrap().path())
            .unwrap()
            .sign_next("live", VALUE, at(2_000_000_000), Duration::ZERO)
            .unwrap();
        fs::write(&path, other.to_bytes()).unwrap();
        assert!(matches!(
            store.last_record("live"),
            Err(KeyError::RecordFile { .. })
        ));
        // And a record without its key.
        fs::remove_file(dir.path().join("keys/live")).unwrap();
        assert!(matches!(
            store.last_record("live"),
            Err(KeyError::NoKey { .. })
        ));
    }

    #[test]
    fn concurrent_creators_agree_on_one_key() {
        let dir = tempfile::tempdir().unwrap();
        let keys: Vec<_> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..8)
                .map(|_| {
                    s.spawn(|| {
                        let store = KeyStore::open(dir.path()).unwrap();
                        store.get_or_create("race").unwrap().public()
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        assert!(keys.windows(2).all(|w| w[0] == w[1]));
    }

    #[test]
    fn concurrent_signers_take_turns() {
        let dir = tempfile::tempdir().unwrap();
        let mut seqs: Vec<u64> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..4)
                .map(|_| {
                    s.spawn(|| {
                        let store = KeyStore::open(dir.path()).unwrap();
                        (0..3)
                            .map(|_| {
                                store
                                    .sign_next("live", VALUE, at(2_000_000_000), Duration::ZERO)
                                    .unwrap()
                                    .sequence()
                            })
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            handles
                .into_iter()
                .flat_map(|h| h.join().unwrap())
                .collect()
        });
        seqs.sort_unstable();
        assert_eq!(seqs, (0..12).collect::<Vec<_>>());
    }
}
